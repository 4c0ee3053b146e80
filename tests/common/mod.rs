//! Test harness: engines and smoltcp peers over the in-memory link, driven by a virtual
//! clock in one thread, moving verified byte streams in both directions.
#![allow(dead_code)]

#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod echo;
mod side;

pub use side::*;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use flextoe::backends::mem::{MemLink, MemPort};
use flextoe::host::{Host, Listener, Stream};
use flextoe::pipeline::{Engine, EngineConfig, Threaded};
use flextoe::sim::{Impairments, Rng, VirtualClock};
use flextoe::time::{Clock, Instant};
use flextoe::wire::MacAddr;
use sha2::{Digest, Sha256};

pub const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
pub const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);
pub const IP_A: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
pub const IP_B: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
pub const SERVER_PORT: u16 = 5001;

/// Which TCP stack plays a role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Engine,
    Smoltcp,
    /// The engine on the threaded runtime, two workers (`Topology::x86(2)`).
    Threaded,
}

/// A deterministic byte stream and its running hash.
pub struct Source {
    rng: Rng,
    total: u64,
    produced: u64,
    buf: Vec<u8>,
    off: usize,
    hash: Sha256,
}

impl Source {
    pub fn new(seed: u64, total: u64) -> Self {
        Source {
            rng: Rng::new(seed),
            total,
            produced: 0,
            buf: Vec::new(),
            off: 0,
            hash: Sha256::new(),
        }
    }

    /// Bytes not yet accepted by the socket.
    pub fn pending(&mut self) -> &[u8] {
        if self.off == self.buf.len() && self.produced < self.total {
            let n = (self.total - self.produced).min(64 * 1024) as usize;
            self.buf.clear();
            while self.buf.len() < n {
                let w = self.rng.next_u64().to_le_bytes();
                let take = (n - self.buf.len()).min(8);
                self.buf.extend_from_slice(&w[..take]);
            }
            self.hash.update(&self.buf);
            self.produced += n as u64;
            self.off = 0;
        }
        &self.buf[self.off..]
    }

    pub fn consume(&mut self, n: usize) {
        self.off += n;
    }

    pub fn done(&self) -> bool {
        self.produced == self.total && self.off == self.buf.len()
    }

    pub fn digest(&self) -> Vec<u8> {
        self.hash.clone().finalize().to_vec()
    }
}

/// Received bytes, hashed.
#[derive(Default)]
pub struct Sink {
    pub received: u64,
    hash: Sha256,
    pub eof: bool,
}

impl Sink {
    pub fn take(&mut self, data: &[u8]) {
        self.received += data.len() as u64;
        self.hash.update(data);
    }
    pub fn digest(&self) -> Vec<u8> {
        self.hash.clone().finalize().to_vec()
    }
}

/// What a transfer produced.
pub struct Outcome {
    pub server: Side,
    pub client: Side,
    pub virtual_time: Duration,
    pub iterations: u64,
    pub lost_frames: u64,
}

/// Drive both sides until `done` or the bounds run out; advances virtual time by `step`
/// when busy and jumps to the next deadline when idle.
pub fn drive(
    a: &mut Side,
    b: &mut Side,
    clock: &VirtualClock,
    max_virtual: Duration,
    max_iters: u64,
    mut done: impl FnMut(&mut Side, &mut Side) -> bool,
) -> u64 {
    let real = a.is_threaded() || b.is_threaded();
    drive_mode(a, b, clock, max_virtual, max_iters, real, &mut done)
}

/// [`drive`], choosing whether virtual time follows real time (needed while engine threads
/// and the harness exchange data) or may jump (fine while only timers are pending).
pub fn drive_mode(
    a: &mut Side,
    b: &mut Side,
    clock: &VirtualClock,
    max_virtual: Duration,
    max_iters: u64,
    real: bool,
    done: &mut dyn FnMut(&mut Side, &mut Side) -> bool,
) -> u64 {
    let mut iters = 0;
    let start = clock.now();
    let threaded = a.is_threaded() || b.is_threaded();
    let wall = std::time::Instant::now();
    while iters < max_iters {
        iters += 1;
        if real {
            // Engine threads read this clock too: let it follow real time.
            clock.advance_to(start + wall.elapsed());
        }
        let now = clock.now();
        let busy = a.poll(now) | b.poll(now);
        if done(a, b) {
            return iters;
        }
        assert!(
            clock.now().saturating_since(start) < max_virtual,
            "virtual time limit reached after {iters} iterations\n{}\n{}",
            a.debug_state(),
            b.debug_state()
        );
        if real {
            if !busy {
                std::thread::yield_now();
            }
        } else if threaded {
            // Timers only: hop ahead, give the engine threads a moment to look.
            clock.advance(Duration::from_millis(2));
            std::thread::sleep(Duration::from_micros(200));
        } else if busy {
            clock.advance(Duration::from_micros(5));
        } else {
            let next = [a.next_deadline(now), b.next_deadline(now)]
                .into_iter()
                .flatten()
                .filter(|t| *t > now)
                .min();
            match next {
                Some(t) => clock.advance_to(t.min(now + Duration::from_millis(100))),
                None => clock.advance(Duration::from_millis(1)),
            }
        }
    }
    panic!("iteration limit reached");
}

/// Full-duplex transfer of `bytes` each way, then an orderly close by both sides, then wait
/// until no state is left. Panics on any mismatch.
/// Threaded runs hold this so that at most one of them (with its worker threads) competes
/// for the cores at a time.
pub static THREADED_RUNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn transfer(server: Kind, client: Kind, imp: Impairments, bytes: u64) -> Outcome {
    let _serial = (server == Kind::Threaded || client == Kind::Threaded)
        .then(|| THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner()));
    let (pa, pb) = MemLink::pair(imp);
    // Both ends may be threaded: keep a handle on the link's counters.
    let lost_probe = LinkProbe(pa.stats_handle());
    let clock = VirtualClock::new();
    let srv = match server {
        Kind::Engine => Side::engine(pa, MAC_A, IP_A, None),
        Kind::Smoltcp => Side::smoltcp(pa, MAC_A, IP_A, true),
        Kind::Threaded => Side::threaded(pa, MAC_A, IP_A, &clock),
    };
    let cli = match client {
        Kind::Engine => Side::engine(pb, MAC_B, IP_B, None),
        Kind::Smoltcp => Side::smoltcp(pb, MAC_B, IP_B, true),
        Kind::Threaded => Side::threaded(pb, MAC_B, IP_B, &clock),
    };
    transfer_sides(srv, cli, &clock, lost_probe, bytes)
}

/// [`transfer`] between two sides already built on the two ends of one link (server on the
/// `IP_A` end); `clock` is the one threaded sides read.
pub fn transfer_sides(
    mut srv: Side,
    mut cli: Side,
    clock: &VirtualClock,
    lost_probe: LinkProbe,
    bytes: u64,
) -> Outcome {
    srv.listen(SERVER_PORT);
    cli.connect(IP_A, SERVER_PORT);
    let mut up = Source::new(11, bytes);
    let mut down = Source::new(22, bytes);
    let mut at_srv = Sink::default();
    let mut at_cli = Sink::default();
    let (mut srv_closed_w, mut cli_closed_w) = (false, false);
    let iters = drive(
        &mut srv,
        &mut cli,
        clock,
        Duration::from_secs(3600),
        200_000_000,
        |s, c| {
            if !c.connected() {
                return false;
            }
            c.write(&mut up);
            s.write(&mut down);
            s.read(&mut at_srv);
            c.read(&mut at_cli);
            if up.done() && !cli_closed_w {
                c.close_write();
                cli_closed_w = true;
            }
            if down.done() && !srv_closed_w && s.connected() {
                s.close_write();
                srv_closed_w = true;
            }
            at_srv.eof && at_cli.eof && s.closed() && c.closed()
        },
    );
    assert_eq!(at_srv.received, bytes, "bytes at server");
    assert_eq!(at_cli.received, bytes, "bytes at client");
    assert_eq!(at_srv.digest(), up.digest(), "client -> server content");
    assert_eq!(at_cli.digest(), down.digest(), "server -> client content");
    // Wait out TIME-WAIT on whichever side has it.
    let more = drive_mode(
        &mut srv,
        &mut cli,
        clock,
        Duration::from_secs(120),
        10_000_000,
        false,
        &mut |s, c| s.fully_gone() && c.fully_gone(),
    );
    let lost = match &srv {
        Side::Engine { engine, .. } => {
            let p = engine.port();
            p.tx_stats().lost + p.rx_stats().lost
        }
        Side::Smol { dev, .. } => dev.tx_stats().lost + dev.rx_stats().lost,
        Side::Threaded { .. } => match &cli {
            Side::Engine { engine, .. } => {
                let p = engine.port();
                p.tx_stats().lost + p.rx_stats().lost
            }
            Side::Smol { dev, .. } => dev.tx_stats().lost + dev.rx_stats().lost,
            Side::Threaded { .. } => lost_probe.lost(),
        },
    };
    for side in [&srv, &cli] {
        if let Some(e) = side.engine_ref() {
            assert_eq!(e.flow_count(), 0, "flow table entries left");
            assert_eq!(e.arena().in_use(), 0, "frames leaked");
        }
        if let Some(st) = side.threaded_stats() {
            assert_eq!(st.io.flows, 0, "flow table entries left");
        }
    }
    Outcome {
        server: srv,
        client: cli,
        virtual_time: clock.now().saturating_since(Instant::ZERO),
        iterations: iters + more,
        lost_frames: lost,
    }
}

/// Bytes per direction for the interop tests (override with FLEXTOE_TEST_BYTES).
pub fn test_bytes() -> u64 {
    std::env::var("FLEXTOE_TEST_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64 * 1024 * 1024)
}

/// Retransmissions of every engine in the outcome.
pub fn engine_retransmissions(o: &Outcome) -> u64 {
    let inline: u64 = [&o.server, &o.client]
        .iter()
        .filter_map(|s| s.engine_ref())
        .map(|e| {
            let r = e.retransmissions();
            r.fast + r.timeout
        })
        .sum();
    let threaded: u64 = [&o.server, &o.client]
        .iter()
        .filter_map(|s| s.threaded_stats())
        .map(|st| st.io.retransmissions.fast + st.io.retransmissions.timeout)
        .sum();
    inline + threaded
}

/// Link counters that stay readable while both ends belong to engine threads.
pub struct LinkProbe(flextoe::backends::mem::LinkStatsHandle);

impl LinkProbe {
    pub fn new(port: &MemPort) -> Self {
        LinkProbe(port.stats_handle())
    }

    pub fn lost(&self) -> u64 {
        let (a, b) = self.0.stats();
        a.lost + b.lost
    }
}

pub fn describe(o: &Outcome) -> String {
    let mut s = format!(
        "virtual {:?}, {} iterations, {} frames lost on the link",
        o.virtual_time, o.iterations, o.lost_frames
    );
    for (name, side) in [("server", &o.server), ("client", &o.client)] {
        if let Some(st) = side.threaded_stats() {
            s.push_str(&format!("\n{name} threaded engine:\n{st}"));
        }
        if let Some(e) = side.engine_ref() {
            s.push_str(&format!("\n{name} engine:\n{}", e.stats()));
            let r = e.retransmissions();
            s.push_str(&format!(
                "\n  retransmissions: fast={} recovery={} tail_probes={} timeout={}",
                r.fast, r.recovery, r.tail_probes, r.timeout
            ));
        }
    }
    s
}

#[allow(unused)]
pub fn read_all_blocking(s: &mut Stream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).expect("read");
    v
}

#[allow(unused)]
pub fn write_all_blocking(s: &mut Stream, data: &[u8]) {
    s.write_all(data).expect("write");
}
/// Move a virtual clock on after a round of polls: by `step` while anything was busy,
/// otherwise to the earliest of `deadlines` still ahead (at most `max_jump` away).
pub fn next_time<const N: usize>(
    now: Instant,
    busy: bool,
    deadlines: [Option<Instant>; N],
    step: Duration,
    max_jump: Duration,
) -> Instant {
    if busy {
        return now + step;
    }
    let next = deadlines.into_iter().flatten().filter(|t| *t > now).min();
    next.map_or(now + step, |t| t.min(now + max_jump))
}

pub mod bottleneck;
pub mod lab;
pub mod script;
