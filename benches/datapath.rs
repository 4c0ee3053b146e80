//! Receive-path cost per segment: the engine's stages (preprocess, protocol, place,
//! postprocess, notify) plus the application's read into its buffer, against a smoltcp
//! socket fed the same segment stream in the same bench, also read into a buffer.
//!
//! ```text
//! cargo bench --bench datapath
//! ```
//!
//! Each iteration delivers a burst of 32 in-order data segments of an established connection
//! and lets the application read them; criterion reports time per burst and, through the
//! throughput setting, segments per second. Segments are built outside the timed region:
//! for the engine straight into arena frames (where a NIC or AF_XDP puts them), for smoltcp
//! into buffers its device lends out.
//! Both acknowledge the same way: delayed ACKs of 10 ms (smoltcp's default, the engine's
//! `AckPolicy::delayed`), an ACK at once when more than one full-sized segment (1460 bytes)
//! is unacknowledged. Both decide once per poll (smoltcp sends after taking in every frame
//! the device has; the engine coalesces a burst's ACKs into its last), so a burst of 32
//! draws one ACK on either side at 64 and at 1448 bytes, and bursts of one 64-byte segment
//! (`DATAPATH_COUNT`'s fourth field) one ACK per 23 segments. The fake clock moves 1 us per
//! burst, so the delay runs out only every 10,000 bursts. smoltcp's device builds its ACKs
//! in one reused buffer, the engine in arena frames: at one ACK per burst of 32 the
//! difference is in the noise.
//!
//! A second comparison prints what the hook points cost: the default pipeline against the
//! same pipeline with a do-nothing user stage at every hook point (`rx_frame`,
//! `rx_segment`, `results`, `tx_frame`), interleaved in one run.

use std::collections::VecDeque;
use std::io::Read;

use std::time::{Duration, Instant as StdInstant};

use criterion::{criterion_group, Criterion, Throughput};
use flextoe::buf::{Frame, FrameArena};
use flextoe::pipeline::hooks::{Hook, HookCx, Results, RxFrame, RxSegment, TxFrame};
use flextoe::pipeline::{Engine, EngineConfig, Pipeline, Verdicts};
use flextoe::stages::protocol::AckPolicy;
use flextoe::stages::{ProtoResult, RxWork};
use flextoe::time::Instant;
use flextoe::wire::{self, flags};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

mod common;

use common::*;

const BURST: usize = 32;
/// The MSS the peer offers.
const PEER_MSS: u16 = 1460;

/// The engine's port in this bench.
type BenchPort = ScriptPort;

fn segment(fl: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    peer_segment(fl, seq, ack, payload, PEER_MSS)
}

fn segment_into(buf: &mut Vec<u8>, fl: u8, seq: u32, ack: u32, payload: &[u8]) {
    peer_segment_into(buf, fl, seq, ack, payload, PEER_MSS)
}
/// The peer's side of the stream: builds the next burst of data segments.
struct Feeder {
    seq: u32,
    ack: u32,
    payload: Vec<u8>,
    /// Segments per burst ([`BURST`] but where `DATAPATH_COUNT` asks otherwise).
    per_burst: usize,
}

impl Feeder {
    /// Append the next burst to `rx`, reusing buffers from `pool`.
    fn burst(&mut self, pool: &mut Vec<Vec<u8>>, rx: &mut VecDeque<Vec<u8>>) {
        for _ in 0..self.per_burst {
            let mut b = pool.pop().unwrap_or_default();
            segment_into(&mut b, flags::ACK, self.seq, self.ack, &self.payload);
            self.seq = self.seq.wrapping_add(self.payload.len() as u32);
            rx.push_back(b);
        }
    }

    /// Append the next burst to `rx` as arena frames.
    fn burst_frames(
        &mut self,
        scratch: &mut Vec<u8>,
        arena: &FrameArena,
        rx: &mut VecDeque<Frame>,
    ) {
        for _ in 0..self.per_burst {
            segment_into(scratch, flags::ACK, self.seq, self.ack, &self.payload);
            self.seq = self.seq.wrapping_add(self.payload.len() as u32);
            rx.push_back(arena.alloc_copy(scratch).expect("frame"));
        }
    }
}

/// A user stage that looks at nothing and passes everything, for every hook point.
#[derive(Clone)]
struct Nop;

impl Hook<RxFrame> for Nop {
    fn name(&self) -> &'static str {
        "nop"
    }
    fn process(&mut self, _: &HookCx<'_>, _: &mut [Frame], _: &mut Verdicts) {}
}

impl Hook<RxSegment> for Nop {
    fn name(&self) -> &'static str {
        "nop"
    }
    fn process(&mut self, _: &HookCx<'_>, _: &mut [RxWork], _: &mut Verdicts) {}
}

impl Hook<Results> for Nop {
    fn name(&self) -> &'static str {
        "nop"
    }
    fn process(&mut self, _: &HookCx<'_>, _: &mut [ProtoResult], _: &mut Verdicts) {}
}

impl Hook<TxFrame> for Nop {
    fn name(&self) -> &'static str {
        "nop"
    }
    fn process(&mut self, _: &HookCx<'_>, _: &mut [Frame], _: &mut Verdicts) {}
}

fn engine_setup(payload: usize) -> (Engine<BenchPort>, flextoe::Stream, Feeder) {
    engine_setup_with(payload, false)
}

/// The default pipeline, or (`hooks`) the same with a [`Nop`] stage at every hook point.
fn engine_setup_with(payload: usize, hooks: bool) -> (Engine<BenchPort>, flextoe::Stream, Feeder) {
    let mut cfg = EngineConfig::new(LOCAL_MAC, LOCAL_IP).neighbor(PEER_IP, PEER_MAC);
    cfg.control.timestamps = false;
    // smoltcp's ACK policy (see the top of this file).
    cfg.ack_policy = AckPolicy::delayed(Duration::from_millis(10));
    let port = BenchPort::new(());
    let mut b = Pipeline::builder(cfg, port);
    if hooks {
        b = b
            .on_rx_frame(Nop)
            .on_rx_segment(Nop)
            .on_results(Nop)
            .on_tx_frame(Nop);
    }
    let mut e = b.build().unwrap();
    let l = e.host().listen(PORT, 4).unwrap();
    e.poll(Instant::ZERO);
    e.port_mut()
        .pending
        .push_back(segment(flags::SYN, 1000, 0, &[]));
    e.poll(Instant::ZERO);
    let iss = syn_ack_seq(e.port().captured.as_ref().expect("capturing"));
    e.port_mut()
        .pending
        .push_back(segment(flags::ACK, 1001, iss.wrapping_add(1), &[]));
    e.poll(Instant::ZERO);
    let mut s = l.try_accept().unwrap().expect("established");
    s.set_nonblocking(true);
    e.port_mut().captured = None;
    let feeder = Feeder {
        seq: 1001,
        ack: iss.wrapping_add(1),
        payload: vec![0x5a; payload],
        per_burst: BURST,
    };
    (e, s, feeder)
}

/// smoltcp device with the same shape as `BenchPort`.
#[derive(Default)]
struct BenchDev {
    rx: VecDeque<Vec<u8>>,
    pool: std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>>,
    tx: Vec<Vec<u8>>,
    scratch: Vec<u8>,
    capture: bool,
    /// Frames smoltcp sent.
    sent: u64,
}

struct Rx(Vec<u8>, std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>>);
struct Tx<'a>(&'a mut BenchDev);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.0);
        self.1.borrow_mut().push(self.0);
        r
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = std::mem::take(&mut self.0.scratch);
        b.resize(len, 0);
        let r = f(&mut b);
        self.0.sent += 1;
        if self.0.capture {
            self.0.tx.push(b.clone());
        }
        self.0.scratch = b;
        r
    }
}

impl Device for BenchDev {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;
    fn receive(&mut self, _t: smoltcp::time::Instant) -> Option<(Rx, Tx<'_>)> {
        let v = self.rx.pop_front()?;
        Some((Rx(v, self.pool.clone()), Tx(self)))
    }
    fn transmit(&mut self, _t: smoltcp::time::Instant) -> Option<Tx<'_>> {
        Some(Tx(self))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

struct Smol {
    iface: Interface,
    dev: BenchDev,
    sockets: SocketSet<'static>,
    h: SocketHandle,
}

fn smol_setup(payload: usize) -> (Smol, Feeder) {
    let mut dev = BenchDev {
        capture: true,
        ..Default::default()
    };
    let mut iface = Interface::new(
        Config::new(HardwareAddress::Ethernet(LOCAL_MAC)),
        &mut dev,
        smoltcp::time::Instant::from_micros(0),
    );
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::Ipv4(LOCAL_IP), 24)).unwrap();
    });
    let mut sock = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 256 * 1024]),
        tcp::SocketBuffer::new(vec![0; 256 * 1024]),
    );
    sock.listen(PORT).unwrap();
    let mut sockets = SocketSet::new(vec![]);
    let h = sockets.add(sock);
    let t0 = smoltcp::time::Instant::from_micros(0);
    dev.rx.push_back(segment(flags::SYN, 1000, 0, &[]));
    iface.poll(t0, &mut dev, &mut sockets);
    // smoltcp asks for the peer's MAC first; answer it.
    let reply = smoltcp::wire::ArpRepr::EthernetIpv4 {
        operation: smoltcp::wire::ArpOperation::Reply,
        source_hardware_addr: PEER_MAC,
        source_protocol_addr: PEER_IP,
        target_hardware_addr: LOCAL_MAC,
        target_protocol_addr: LOCAL_IP,
    };
    let mut arp = vec![0u8; 64];
    let n = wire::emit_arp(&mut arp, PEER_MAC, LOCAL_MAC, &reply).expect("fits");
    arp.truncate(n);
    dev.rx.push_back(arp);
    iface.poll(t0, &mut dev, &mut sockets);
    let iss = syn_ack_seq(&dev.tx);
    dev.rx
        .push_back(segment(flags::ACK, 1001, iss.wrapping_add(1), &[]));
    iface.poll(t0, &mut dev, &mut sockets);
    assert_eq!(
        sockets.get::<tcp::Socket>(h).state(),
        tcp::State::Established
    );
    dev.capture = false;
    (
        Smol {
            iface,
            dev,
            sockets,
            h,
        },
        Feeder {
            seq: 1001,
            ack: iss.wrapping_add(1),
            payload: vec![0x5a; payload],
            per_burst: BURST,
        },
    )
}

fn rx_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("rx_path");
    for payload in [64usize, 1448] {
        g.throughput(Throughput::Elements(BURST as u64));
        {
            let (mut e, mut s, mut feed) = engine_setup(payload);
            let mut buf = vec![0u8; 256 * 1024];
            let mut scratch = Vec::new();
            let arena = e.arena().clone();
            let mut t = 1u64;
            g.bench_function(format!("{payload}B/flextoe"), |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        feed.burst_frames(&mut scratch, &arena, &mut e.port_mut().rx);
                        let start = StdInstant::now();
                        t += 1;
                        e.poll(Instant::from_micros(t));
                        let mut got = 0;
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            got += n;
                        }
                        spent += start.elapsed();
                        assert_eq!(got, BURST * payload);
                    }
                    spent
                })
            });
        }
        {
            let (mut sm, mut feed) = smol_setup(payload);
            let mut buf = vec![0u8; 256 * 1024];
            let mut t = 1i64;
            g.bench_function(format!("{payload}B/smoltcp"), |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let pool = sm.dev.pool.clone();
                        feed.burst(&mut pool.borrow_mut(), &mut sm.dev.rx);
                        let start = StdInstant::now();
                        t += 1;
                        let now = smoltcp::time::Instant::from_micros(t);
                        sm.iface.poll(now, &mut sm.dev, &mut sm.sockets);
                        let sock = sm.sockets.get_mut::<tcp::Socket>(sm.h);
                        let mut got = 0;
                        while let Ok(n) = sock.recv_slice(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            got += n;
                        }
                        spent += start.elapsed();
                        assert_eq!(got, BURST * payload);
                    }
                    spent
                })
            });
        }
    }
    g.finish();
}

/// One engine poll at `t` microseconds, then the application reads until the stream is
/// empty; returns the bytes read. (Never inlined, like `smol_poll_read`: a name for
/// `--toggle-collect`.)
#[inline(never)]
fn engine_poll_read(
    e: &mut Engine<BenchPort>,
    s: &mut flextoe::Stream,
    buf: &mut [u8],
    t: u64,
) -> usize {
    e.poll(Instant::from_micros(t));
    let mut got = 0;
    while let Ok(n) = s.read(buf) {
        if n == 0 {
            break;
        }
        got += n;
    }
    got
}

/// The same for smoltcp: one `Interface::poll`, then `recv_slice` until the socket is empty.
#[inline(never)]
fn smol_poll_read(sm: &mut Smol, buf: &mut [u8], t: i64) -> usize {
    let now = smoltcp::time::Instant::from_micros(t);
    sm.iface.poll(now, &mut sm.dev, &mut sm.sockets);
    let sock = sm.sockets.get_mut::<tcp::Socket>(sm.h);
    let mut got = 0;
    while let Ok(n) = sock.recv_slice(buf) {
        if n == 0 {
            break;
        }
        got += n;
    }
    got
}

/// Interleaved rounds of both stacks in one process; medians and their ratio. Less exposed
/// to machine noise than two separate criterion runs.
fn interleaved_ratio() {
    const ROUNDS: usize = 31;
    const BURSTS: usize = 500;
    println!("\ninterleaved comparison ({ROUNDS} rounds of {BURSTS} bursts of {BURST} segments, the side that goes first alternating; median ns per segment):");
    for payload in [64usize, 1448] {
        let (mut e, mut s, mut fe) = engine_setup(payload);
        let arena = e.arena().clone();
        let (mut sm, mut fs) = smol_setup(payload);
        let (mut buf_e, mut buf_s) = (vec![0u8; 256 * 1024], vec![0u8; 256 * 1024]);
        let mut scratch = Vec::new();
        let (mut te, mut ts) = (1u64, 1i64);
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let mut run_ours = || {
            let mut spent = Duration::ZERO;
            for _ in 0..BURSTS {
                fe.burst_frames(&mut scratch, &arena, &mut e.port_mut().rx);
                let start = StdInstant::now();
                te += 1;
                engine_poll_read(&mut e, &mut s, &mut buf_e, te);
                spent += start.elapsed();
            }
            spent.as_nanos() as f64 / (BURSTS * BURST) as f64
        };
        let mut run_theirs = || {
            let mut spent = Duration::ZERO;
            for _ in 0..BURSTS {
                let pool = sm.dev.pool.clone();
                fs.burst(&mut pool.borrow_mut(), &mut sm.dev.rx);
                let start = StdInstant::now();
                ts += 1;
                smol_poll_read(&mut sm, &mut buf_s, ts);
                spent += start.elapsed();
            }
            spent.as_nanos() as f64 / (BURSTS * BURST) as f64
        };
        // The side that goes first alternates from round to round.
        for round in 0..ROUNDS {
            if round % 2 == 0 {
                ours.push(run_ours());
                theirs.push(run_theirs());
            } else {
                theirs.push(run_theirs());
                ours.push(run_ours());
            }
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let (a, b) = (med(&mut ours), med(&mut theirs));
        println!(
            "  {payload:>5} B payload: flextoe {a:7.1} ns/segment, smoltcp {b:7.1} ns/segment, smoltcp/flextoe time ratio {:.2}",
            b / a
        );
    }
}

/// Interleaved rounds of the default pipeline and the same with a do-nothing stage at every
/// hook point; medians and the overhead.
fn hook_overhead() {
    const ROUNDS: usize = 41;
    const BURSTS: usize = 500;
    println!("\nhook overhead ({ROUNDS} rounds of {BURSTS} bursts of {BURST} segments, median ns per segment):");
    for payload in [64usize, 1448] {
        let mut sides: Vec<_> = [false, true]
            .into_iter()
            .map(|h| {
                let (e, s, f) = engine_setup_with(payload, h);
                (e, s, f, 1u64, Vec::new())
            })
            .collect();
        let mut buf = vec![0u8; 256 * 1024];
        let mut scratch = Vec::new();
        for round in 0..ROUNDS {
            // Alternate which side goes first.
            for k in 0..2 {
                let (e, s, feed, t, times) = &mut sides[(k + round) % 2];
                let arena = e.arena().clone();
                let mut spent = Duration::ZERO;
                for _ in 0..BURSTS {
                    feed.burst_frames(&mut scratch, &arena, &mut e.port_mut().rx);
                    let start = StdInstant::now();
                    *t += 1;
                    e.poll(Instant::from_micros(*t));
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                    }
                    spent += start.elapsed();
                }
                times.push(spent.as_nanos() as f64 / (BURSTS * BURST) as f64);
            }
        }
        let hooks = &sides[1].0.stats().hooks;
        assert_eq!(hooks.len(), 4, "a stage at every point");
        assert!(
            hooks.iter().all(|h| h.stats.items_in > 0),
            "every point ran"
        );
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let a = med(&mut sides[0].4);
        let b = med(&mut sides[1].4);
        println!(
            "  {payload:>5} B payload: no hooks {a:7.1} ns/segment, a stage at every point {b:7.1} ns/segment, overhead {:+.1}%",
            (b / a - 1.0) * 100.0
        );
    }
}

criterion_group!(benches, rx_path);

/// `DATAPATH_PROFILE=<payload>[:smoltcp]`: run only one side's receive path, the engine's
/// (or smoltcp's, fed the same stream), for a few seconds (for `perf record`), then exit.
/// The feeder runs in both: compare the stacks' shares against its `emit_tcp`.
fn profile_only(spec: &str) {
    let (payload, smol) = match spec.strip_suffix(":smoltcp") {
        Some(p) => (p, true),
        None => (spec, false),
    };
    let payload: usize = payload
        .parse()
        .expect("DATAPATH_PROFILE=<payload bytes>[:smoltcp]");
    let mut buf = vec![0u8; 256 * 1024];
    let start = StdInstant::now();
    let mut t = 1u64;
    if smol {
        let (mut sm, mut feed) = smol_setup(payload);
        while start.elapsed() < Duration::from_secs(3) {
            for _ in 0..1000 {
                let pool = sm.dev.pool.clone();
                feed.burst(&mut pool.borrow_mut(), &mut sm.dev.rx);
                t += 1;
                smol_poll_read(&mut sm, &mut buf, t as i64);
            }
        }
        return;
    }
    let (mut e, mut s, mut feed) = engine_setup(payload);
    let arena = e.arena().clone();
    let mut scratch = Vec::new();
    while start.elapsed() < Duration::from_secs(3) {
        for _ in 0..1000 {
            feed.burst_frames(&mut scratch, &arena, &mut e.port_mut().rx);
            t += 1;
            engine_poll_read(&mut e, &mut s, &mut buf, t);
        }
    }
}

/// `DATAPATH_COUNT=<flextoe|smoltcp>:<payload>:<bursts>[:<segments per burst>]`: feed one
/// side that many bursts of segments of that payload (32 a burst unless told; 1 to 64),
/// untimed, and exit; for counting instructions under `valgrind --tool=callgrind` (the
/// inclusive costs of `Engine::poll` and the stream's reads, against smoltcp's
/// `Interface::poll` and `recv_slice`, leave the feeder out). Bursts of one segment against
/// bursts of 32 show what a burst costs whatever its size (a one-segment burst is what a
/// request at depth 1 gets).
fn count_only(spec: &str) {
    let parts: Vec<&str> = spec.split(':').collect();
    let (side, payload, bursts, per_burst) = match parts[..] {
        [side, payload, bursts] => (side, payload, bursts, BURST),
        [side, payload, bursts, n] => (side, payload, bursts, n.parse().expect("per burst")),
        _ => panic!(
            "DATAPATH_COUNT=<flextoe|smoltcp>:<payload>:<bursts>[:<segments per burst>], not {spec}"
        ),
    };
    // A burst must fit the receive ring (256 KiB) and a poll's budget: 64 segments of
    // the largest payload do.
    assert!(
        (1..=64).contains(&per_burst),
        "1 to 64 segments per burst, not {per_burst}"
    );
    let payload: usize = payload.parse().expect("payload");
    let bursts: usize = bursts.parse().expect("bursts");
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0usize;
    let sent = match side {
        "flextoe" => {
            let (mut e, mut s, mut feed) = engine_setup(payload);
            feed.per_burst = per_burst;
            let arena = e.arena().clone();
            let mut scratch = Vec::new();
            let before = e.stats().tx_frames;
            for t in 1..=bursts as u64 {
                feed.burst_frames(&mut scratch, &arena, &mut e.port_mut().rx);
                got += engine_poll_read(&mut e, &mut s, &mut buf, t);
            }
            e.stats().tx_frames - before
        }
        "smoltcp" => {
            let (mut sm, mut feed) = smol_setup(payload);
            feed.per_burst = per_burst;
            let before = sm.dev.sent;
            for t in 1..=bursts as i64 {
                let pool = sm.dev.pool.clone();
                feed.burst(&mut pool.borrow_mut(), &mut sm.dev.rx);
                got += smol_poll_read(&mut sm, &mut buf, t);
            }
            sm.dev.sent - before
        }
        other => panic!("DATAPATH_COUNT side: flextoe or smoltcp, not {other}"),
    };
    eprintln!(
        "{side}: {} segments of {payload} B in bursts of {per_burst}, {sent} frames (ACKs) sent",
        bursts * per_burst
    );
    assert_eq!(
        got,
        bursts * per_burst * payload,
        "{side}: every byte read once"
    );
}

fn main() {
    if let Ok(spec) = std::env::var("DATAPATH_COUNT") {
        count_only(&spec);
        return;
    }
    if let Ok(p) = std::env::var("DATAPATH_PROFILE") {
        profile_only(&p);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    interleaved_ratio();
    hook_overhead();
}
