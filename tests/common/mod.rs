//! Test harness: engines and smoltcp peers over the in-memory link, driven by a virtual
//! clock in one thread, moving verified byte streams in both directions.
#![allow(dead_code)]

#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod echo;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use flextoe::backends::mem::{MemLink, MemPort};
use flextoe::flow::flow_group;
use flextoe::host::{ConnStatus, Host, Listener, Stream};
use flextoe::pipeline::{Engine, EngineConfig, Threaded, Topology};
use flextoe::sim::{Impairments, Rng, VirtualClock};
use flextoe::time::{Clock, Instant};
use flextoe::wire::{FourTuple, MacAddr};
use sha2::{Digest, Sha256};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

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

static TS_MS: AtomicU32 = AtomicU32::new(1);
fn smol_tsval() -> u32 {
    TS_MS.load(Ordering::Relaxed)
}

/// One side of a transfer.
pub enum Side {
    Engine {
        engine: Box<Engine<MemPort>>,
        listener: Option<Listener>,
        stream: Option<Stream>,
    },
    Smol {
        iface: Box<Interface>,
        dev: MemPort,
        sockets: SocketSet<'static>,
        handle: SocketHandle,
    },
    Threaded {
        rt: Option<Threaded>,
        host: flextoe::Host,
        listener: Option<Listener>,
        stream: Option<Stream>,
    },
}

/// Opens at least `n` non-blocking connections from `host` to `dst`, and more where needed
/// until each of the server's `groups` flow groups holds at least `per_group` of them.
/// Ephemeral ports are random, so a few connections may all hash to one group; a test that
/// needs every group busy must not depend on that luck.
pub fn connect_over_groups(
    host: &Host,
    dst: SocketAddrV4,
    n: usize,
    groups: u16,
    per_group: usize,
) -> Vec<Stream> {
    let mut count = vec![0usize; groups as usize];
    let mut streams = Vec::new();
    while streams.len() < n || count.iter().any(|&c| c < per_group) {
        assert!(
            streams.len() < n + 64 * groups as usize * per_group,
            "no spread over the flow groups"
        );
        let mut s = host.connect(dst).unwrap();
        s.set_nonblocking(true);
        let at_server = FourTuple {
            local_ip: *dst.ip(),
            local_port: dst.port(),
            remote_ip: *s.local_addr().ip(),
            remote_port: s.local_addr().port(),
        };
        count[flow_group(&at_server, groups) as usize] += 1;
        streams.push(s);
    }
    streams
}

pub fn engine_config(mac: MacAddr, ip: Ipv4Addr) -> EngineConfig {
    let mut cfg = EngineConfig::new(mac, ip);
    cfg.arena_frames = 4096;
    cfg
}

/// Settings for an engine on the threaded runtime in these tests.
pub fn threaded_config(mac: MacAddr, ip: Ipv4Addr) -> EngineConfig {
    let mut cfg = engine_config(mac, ip);
    // Real time passes in these runs: keep retransmission timeouts short.
    cfg.control.rto_min = Duration::from_millis(10);
    cfg.control.rto_initial = Duration::from_millis(50);
    cfg.control.time_wait = Duration::from_millis(100);
    // Worker threads share two cores with the harness and other tests: a stall of a few
    // seconds is the scheduler, not the network, so allow more timeouts in a row.
    cfg.control.max_retransmissions = 40;
    cfg
}

impl Side {
    pub fn engine(port: MemPort, mac: MacAddr, ip: Ipv4Addr, cfg: Option<EngineConfig>) -> Side {
        let cfg = cfg.unwrap_or_else(|| engine_config(mac, ip));
        Side::Engine {
            engine: Box::new(Engine::new(cfg, port).expect("engine")),
            listener: None,
            stream: None,
        }
    }

    pub fn threaded(port: MemPort, mac: MacAddr, ip: Ipv4Addr, clock: &VirtualClock) -> Side {
        let cfg = threaded_config(mac, ip);
        let rt = Threaded::spawn(cfg, port, Topology::x86(2), clock.clone()).expect("threaded");
        Side::from_threaded(rt)
    }

    /// A side around an engine built elsewhere (for example with `Pipeline::builder`).
    pub fn from_engine(engine: Engine<MemPort>) -> Side {
        Side::Engine {
            engine: Box::new(engine),
            listener: None,
            stream: None,
        }
    }

    /// A side around a threaded engine built elsewhere.
    pub fn from_threaded(rt: Threaded) -> Side {
        Side::Threaded {
            host: rt.host(),
            rt: Some(rt),
            listener: None,
            stream: None,
        }
    }

    /// The engine's connections and their TCP state, for failure messages.
    pub fn debug_state(&self) -> String {
        match self {
            Side::Engine { engine, .. } => {
                let mut out = format!("{}\n", engine.stats());
                for t in engine.connections() {
                    out += &format!(
                        "{t:?} {:?}\n{:?}\n{:?}\n",
                        engine.conn_state(&t),
                        engine.tcp_state(&t),
                        engine.congestion_state(&t)
                    );
                }
                out
            }
            Side::Smol {
                sockets, handle, ..
            } => {
                let s = sockets.get::<tcp::Socket>(*handle);
                format!(
                    "smoltcp {:?} send_queue {} recv_queue {}",
                    s.state(),
                    s.send_queue(),
                    s.recv_queue()
                )
            }
            Side::Threaded { rt, .. } => rt
                .as_ref()
                .map(|r| format!("{}", r.stats()))
                .unwrap_or_default(),
        }
    }

    pub fn is_threaded(&self) -> bool {
        matches!(self, Side::Threaded { .. })
    }

    pub fn threaded_stats(&self) -> Option<flextoe::pipeline::ThreadedStats> {
        match self {
            Side::Threaded { rt: Some(rt), .. } => Some(rt.stats()),
            _ => None,
        }
    }

    pub fn smoltcp(mut dev: MemPort, mac: MacAddr, ip: Ipv4Addr, timestamps: bool) -> Side {
        let cfg = Config::new(HardwareAddress::Ethernet(mac));
        let mut iface = Interface::new(cfg, &mut dev, smoltcp::time::Instant::from_micros(0));
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(ip), 24)).unwrap();
        });
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
        );
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        if timestamps {
            sock.set_tsval_generator(Some(smol_tsval));
        }
        let mut sockets = SocketSet::new(vec![]);
        let handle = sockets.add(sock);
        Side::Smol {
            iface: Box::new(iface),
            dev,
            sockets,
            handle,
        }
    }

    pub fn listen(&mut self, port: u16) {
        match self {
            Side::Engine {
                engine, listener, ..
            } => {
                *listener = Some(engine.host().listen(port, 16).expect("listen"));
            }
            Side::Smol {
                sockets, handle, ..
            } => {
                sockets
                    .get_mut::<tcp::Socket>(*handle)
                    .listen(port)
                    .expect("listen");
            }
            Side::Threaded { host, listener, .. } => {
                *listener = Some(host.listen(port, 16).expect("listen"));
            }
        }
    }

    pub fn connect(&mut self, ip: Ipv4Addr, port: u16) {
        match self {
            Side::Engine { engine, stream, .. } => {
                let mut s = engine
                    .host()
                    .connect(SocketAddrV4::new(ip, port))
                    .expect("connect");
                s.set_nonblocking(true);
                *stream = Some(s);
            }
            Side::Threaded { host, stream, .. } => {
                let mut s = host.connect(SocketAddrV4::new(ip, port)).expect("connect");
                s.set_nonblocking(true);
                *stream = Some(s);
            }
            Side::Smol {
                iface,
                sockets,
                handle,
                ..
            } => {
                sockets
                    .get_mut::<tcp::Socket>(*handle)
                    .connect(iface.context(), (IpAddress::Ipv4(ip), port), 40000)
                    .expect("connect");
            }
        }
    }

    pub fn poll(&mut self, now: Instant) -> bool {
        match self {
            Side::Engine {
                engine,
                listener,
                stream,
            } => {
                let busy = engine.poll(now);
                if stream.is_none() {
                    if let Some(l) = listener.as_ref() {
                        if let Some(mut s) = l.try_accept().expect("accept") {
                            s.set_nonblocking(true);
                            *stream = Some(s);
                        }
                    }
                }
                busy
            }
            Side::Threaded {
                listener, stream, ..
            } => {
                if stream.is_none() {
                    if let Some(l) = listener.as_ref() {
                        if let Some(mut s) = l.try_accept().expect("accept") {
                            s.set_nonblocking(true);
                            *stream = Some(s);
                        }
                    }
                }
                false
            }
            Side::Smol {
                iface,
                dev,
                sockets,
                ..
            } => {
                // One timestamp clock for every smoltcp side of this test binary (smoltcp takes
                // a plain function): tests run in parallel on clocks of their own, so it
                // only ever moves forward, as a timestamp clock must (PAWS).
                TS_MS.fetch_max((now.millis() as u32).max(1), Ordering::Relaxed);
                let t = smoltcp::time::Instant::from_micros(now.micros() as i64);
                iface.poll(t, dev, sockets) != smoltcp::iface::PollResult::None
            }
        }
    }

    pub fn next_deadline(&mut self, now: Instant) -> Option<Instant> {
        match self {
            Side::Engine { engine, .. } => engine.next_deadline(),
            Side::Threaded { .. } => None,
            Side::Smol {
                iface,
                sockets,
                dev,
                ..
            } => {
                let t = smoltcp::time::Instant::from_micros(now.micros() as i64);
                let a = iface
                    .poll_at(t, sockets)
                    .map(|x| Instant::from_micros(x.total_micros().max(0) as u64));
                use flextoe::backends::Port;
                match (a, dev.next_arrival()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    /// Write from `src`; returns bytes accepted.
    pub fn write(&mut self, src: &mut Source) -> usize {
        let mut total = 0;
        loop {
            let data = src.pending();
            if data.is_empty() {
                return total;
            }
            let n = match self {
                Side::Engine { stream, .. } | Side::Threaded { stream, .. } => {
                    match stream.as_mut() {
                        Some(s) => match s.write(data) {
                            Ok(n) => n,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
                            Err(e) => panic!("write: {e}"),
                        },
                        None => 0,
                    }
                }
                Side::Smol {
                    sockets, handle, ..
                } => {
                    let s = sockets.get_mut::<tcp::Socket>(*handle);
                    if s.can_send() {
                        s.send_slice(data).expect("send")
                    } else {
                        0
                    }
                }
            };
            if n == 0 {
                return total;
            }
            src.consume(n);
            total += n;
        }
    }

    /// Read into `sink`; returns bytes read.
    pub fn read(&mut self, sink: &mut Sink) -> usize {
        let mut total = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match self {
                Side::Engine { stream, .. } | Side::Threaded { stream, .. } => {
                    match stream.as_mut() {
                        Some(s) => match s.read(&mut buf) {
                            Ok(0) => {
                                sink.eof = true;
                                return total;
                            }
                            Ok(n) => n,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => return total,
                            Err(e) => panic!("read: {e}"),
                        },
                        None => return total,
                    }
                }
                Side::Smol {
                    sockets, handle, ..
                } => {
                    let s = sockets.get_mut::<tcp::Socket>(*handle);
                    match s.recv_slice(&mut buf) {
                        Ok(n) => n,
                        Err(tcp::RecvError::Finished) => {
                            sink.eof = true;
                            return total;
                        }
                        Err(tcp::RecvError::InvalidState) => return total,
                    }
                }
            };
            if n == 0 {
                return total;
            }
            sink.take(&buf[..n]);
            total += n;
        }
    }

    pub fn close_write(&mut self) {
        match self {
            Side::Engine { stream, .. } | Side::Threaded { stream, .. } => {
                if let Some(s) = stream.as_mut() {
                    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
                }
            }
            Side::Smol {
                sockets, handle, ..
            } => sockets.get_mut::<tcp::Socket>(*handle).close(),
        }
    }

    pub fn connected(&mut self) -> bool {
        match self {
            Side::Engine { stream, .. } | Side::Threaded { stream, .. } => stream
                .as_ref()
                .is_some_and(|s| s.status() != ConnStatus::Connecting),
            Side::Smol {
                sockets, handle, ..
            } => {
                sockets.get_mut::<tcp::Socket>(*handle).state() != tcp::State::SynSent
                    && sockets.get_mut::<tcp::Socket>(*handle).state() != tcp::State::Listen
                    && sockets.get_mut::<tcp::Socket>(*handle).state() != tcp::State::SynReceived
            }
        }
    }

    /// Closed as far as the application can tell (both FINs done).
    pub fn closed(&mut self) -> bool {
        match self {
            Side::Engine { stream, .. } | Side::Threaded { stream, .. } => stream
                .as_ref()
                .is_some_and(|s| s.status() == ConnStatus::Closed),
            Side::Smol {
                sockets, handle, ..
            } => matches!(
                sockets.get_mut::<tcp::Socket>(*handle).state(),
                tcp::State::Closed | tcp::State::TimeWait
            ),
        }
    }

    /// Nothing left: no flow-table entry, no connection state.
    pub fn fully_gone(&mut self) -> bool {
        match self {
            Side::Engine { engine, .. } => {
                engine.flow_count() == 0 && engine.connections().is_empty()
            }
            Side::Threaded { rt, .. } => {
                let st = rt.as_ref().expect("running").stats();
                st.io.flows == 0 && st.io.connections.is_empty()
            }
            Side::Smol {
                sockets, handle, ..
            } => sockets.get_mut::<tcp::Socket>(*handle).state() == tcp::State::Closed,
        }
    }

    pub fn engine_ref(&self) -> Option<&Engine<MemPort>> {
        match self {
            Side::Engine { engine, .. } => Some(engine),
            _ => None,
        }
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
