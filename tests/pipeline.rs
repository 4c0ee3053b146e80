//! Composed pipelines: user stages at every hook point on both runtimes, their verdicts and
//! counters, and replaced policies (congestion control, scheduler, placement).

mod common;

use std::io::{Read, Write};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use flextoe::backends::mem::{MemLink, MemPort};
use flextoe::buf::Frame;
use flextoe::control::congestion::FixedWindow;
use flextoe::flow::{FlowId, FlowIdentity};
use flextoe::pipeline::hooks::{Hook, HookCx, Results, RxFrame, RxSegment, TxFrame};
use flextoe::pipeline::{
    Engine, HookReport, Pipeline, PipelineBuilder, Placement, RedirectRing, TaskRef, Threaded,
    Topology, Verdict, Verdicts,
};
use flextoe::sim::{Impairments, VirtualClock};
use flextoe::stages::scheduler::{FlowScheduler, RoundRobin};
use flextoe::stages::{Actions, ProtoResult, ProtoWork, RxWork};
use flextoe::stats::{DropReason, StageStats};
use flextoe::time::{Clock, Instant};
use flextoe::wire::{self, seq, FourTuple, Parsed};

// ---------------------------------------------------------------------------------------
// User stages
// ---------------------------------------------------------------------------------------

/// What a [`Probe`] found, shared by all its instances.
#[derive(Default)]
struct ProbeLog {
    /// Segments at `rx_segment` whose timestamp (the sender's clock when it sent them) went
    /// backwards within their flow: the sender's order was not kept.
    seg_disorder: AtomicU64,
    /// Segments at `rx_segment` that carried a timestamp (what the order check can see).
    seg_timestamps: AtomicU64,
    /// Segments at `rx_segment` without their flow's incarnation (which the protocol stage
    /// checks them against).
    seg_unchecked: AtomicU64,
    /// Results whose acknowledgment number went backwards within their flow.
    result_disorder: AtomicU64,
    /// Results that carried a received segment.
    rx_results: AtomicU64,
    /// Largest `in_flight` any result reported.
    max_in_flight: AtomicU64,
}

/// One stage type for every hook point: looks at everything, passes everything, checks
/// per-flow order (per instance: each flow stays on one instance).
#[derive(Clone)]
struct Probe {
    log: Arc<ProbeLog>,
    last_seq: Vec<Option<u32>>,
    last_ack: Vec<Option<u32>>,
}

impl Probe {
    fn new() -> (Self, Arc<ProbeLog>) {
        let log = Arc::new(ProbeLog::default());
        let p = Probe {
            log: log.clone(),
            last_seq: Vec::new(),
            last_ack: Vec::new(),
        };
        (p, log)
    }
}

/// Record `v` for `flow` in `slots`; whether it went backwards.
fn backwards(slots: &mut Vec<Option<u32>>, flow: FlowId, v: u32) -> bool {
    let i = flow as usize;
    if slots.len() <= i {
        slots.resize(i + 1, None);
    }
    let back = slots[i].is_some_and(|last| seq::lt(v, last));
    slots[i] = Some(v);
    back
}

impl Hook<RxFrame> for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn process(&mut self, _cx: &HookCx<'_>, _items: &mut [Frame], _v: &mut Verdicts) {}
}

impl Hook<RxSegment> for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn process(&mut self, cx: &HookCx<'_>, items: &mut [RxWork], _v: &mut Verdicts) {
        for w in items.iter() {
            if w.summary.incarnation == 0 {
                self.log.seg_unchecked.fetch_add(1, Ordering::Relaxed);
            }
            let Some((val, _)) = w.summary.timestamps(cx.arena.data(&w.frame)) else {
                continue;
            };
            self.log.seg_timestamps.fetch_add(1, Ordering::Relaxed);
            if backwards(&mut self.last_seq, w.flow, val) {
                self.log.seg_disorder.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Hook<Results> for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn process(&mut self, _cx: &HookCx<'_>, items: &mut [ProtoResult], _v: &mut Verdicts) {
        for r in items.iter() {
            if r.rx_frame.is_some() {
                self.log.rx_results.fetch_add(1, Ordering::Relaxed);
            }
            if r.actions.any(Actions::TX) && backwards(&mut self.last_ack, r.flow, r.hdr.ack) {
                self.log.result_disorder.fetch_add(1, Ordering::Relaxed);
            }
            self.log
                .max_in_flight
                .fetch_max(r.in_flight as u64, Ordering::Relaxed);
        }
    }
}

impl Hook<TxFrame> for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn process(&mut self, _cx: &HookCx<'_>, _items: &mut [Frame], _v: &mut Verdicts) {}
}

/// Drops frames (at `rx_frame`) and segments (at `rx_segment`) to one destination port,
/// counted as "deny".
#[derive(Clone)]
struct PortFirewall {
    deny: u16,
}

impl Hook<RxFrame> for PortFirewall {
    fn name(&self) -> &'static str {
        "fw-frame"
    }
    fn drop_reasons(&self) -> &'static [&'static str] {
        &["deny"]
    }
    fn process(&mut self, cx: &HookCx<'_>, items: &mut [Frame], v: &mut Verdicts) {
        for (i, f) in items.iter().enumerate() {
            if let Ok(Parsed::Tcp(seg)) = wire::parse_frame(cx.arena.data(f)) {
                if seg.tuple.local_port == self.deny {
                    v.set(i, Verdict::Drop(0));
                }
            }
        }
    }
}

impl Hook<RxSegment> for PortFirewall {
    fn name(&self) -> &'static str {
        "fw-segment"
    }
    fn drop_reasons(&self) -> &'static [&'static str] {
        &["deny"]
    }
    fn process(&mut self, cx: &HookCx<'_>, items: &mut [RxWork], v: &mut Verdicts) {
        for (i, w) in items.iter().enumerate() {
            if let Ok(Parsed::Tcp(seg)) = wire::parse_frame(cx.arena.data(&w.frame)) {
                if seg.tuple.local_port == self.deny && w.summary.payload_len > 0 {
                    v.set(i, Verdict::Drop(0));
                }
            }
        }
    }
}

const ETH_REFLECT: [u8; 2] = [0x88, 0xb5];
const ETH_REDIRECT: [u8; 2] = [0x88, 0xb6];
const ETH_PUNT: [u8; 2] = [0x88, 0xb7];

/// Acts on frames by their (experimental) EtherType: reflects, redirects or punts them.
#[derive(Clone)]
struct Marks;

impl Hook<RxFrame> for Marks {
    fn name(&self) -> &'static str {
        "marks"
    }
    fn process(&mut self, cx: &HookCx<'_>, items: &mut [Frame], v: &mut Verdicts) {
        for (i, f) in items.iter_mut().enumerate() {
            let data = cx.arena.data_mut(f);
            if data.len() < 14 {
                continue;
            }
            match [data[12], data[13]] {
                ETH_REFLECT => {
                    let (dst, src) = data.split_at_mut(6);
                    dst.swap_with_slice(&mut src[..6]);
                    v.set(i, Verdict::Tx);
                }
                ETH_REDIRECT => v.set(i, Verdict::Redirect(0)),
                ETH_PUNT => v.set(i, Verdict::Punt),
                _ => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Runtimes
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rt {
    Inline,
    Threaded,
    /// Threaded, with the `rx_frame` and the `tx_frame` stages on workers of their own.
    ThreadedOwnWorker,
}

/// Two groups, two replicas of every stage, on two threads.
fn wide() -> Topology {
    Topology::with_counts(2, 2, 2, 2, 2, false)
}

fn side(b: PipelineBuilder<MemPort>, rt: Rt, clock: &VirtualClock) -> Side {
    match rt {
        Rt::Inline => Side::from_engine(b.build().unwrap()),
        Rt::Threaded => Side::from_threaded(b.threaded(wide(), clock.clone()).unwrap()),
        Rt::ThreadedOwnWorker => {
            let t = wide().with_rx_hooks_worker(None).with_tx_hooks_worker(None);
            Side::from_threaded(b.threaded(t, clock.clone()).unwrap())
        }
    }
}

/// On a threaded side: which tasks ran an instance of the stage `name` at `point`.
fn tasks_running(st: &flextoe::pipeline::ThreadedStats, point: &str, name: &str) -> Vec<TaskRef> {
    st.tasks
        .iter()
        .filter(|t| {
            t.hooks
                .iter()
                .any(|h| h.point == point && h.name == name && h.stats.items_in > 0)
        })
        .filter_map(|t| t.task)
        .collect()
}

/// The tasks that ran the `rx_frame` stage `name` are the ones the topology put it on.
fn check_rx_frame_placement(st: &flextoe::pipeline::ThreadedStats, name: &str) {
    let own = st.tasks.iter().any(|t| t.task == Some(TaskRef::RxHooks));
    let on = tasks_running(st, "rx_frame", name);
    if own {
        assert_eq!(
            on,
            [TaskRef::RxHooks],
            "rx_frame stages on their own worker"
        );
    } else {
        assert!(!on.is_empty());
        assert!(
            on.iter().all(|t| matches!(t, TaskRef::Preprocess(_))),
            "{on:?}"
        );
    }
}

/// The tasks that ran the `tx_frame` stage `name` are the ones the topology put it on.
fn check_tx_frame_placement(st: &flextoe::pipeline::ThreadedStats, name: &str) {
    let own = st.tasks.iter().any(|t| t.task == Some(TaskRef::TxHooks));
    let on = tasks_running(st, "tx_frame", name);
    if own {
        assert_eq!(
            on,
            [TaskRef::TxHooks],
            "tx_frame stages on their own worker"
        );
    } else {
        let data_path = |t: &TaskRef| matches!(t, TaskRef::Postprocess(_));
        assert!(on.iter().any(data_path), "{on:?}");
        assert!(
            on.iter().all(|t| data_path(t) || *t == TaskRef::Io),
            "{on:?}"
        );
    }
}

fn server_cfg(rt: Rt) -> flextoe::EngineConfig {
    match rt {
        Rt::Inline => engine_config(MAC_A, IP_A),
        Rt::Threaded | Rt::ThreadedOwnWorker => threaded_config(MAC_A, IP_A),
    }
}

/// Final counters of a side: (hook reports, rx frames, tx frames, protocol stage).
fn final_counters(s: &mut Side) -> (Vec<HookReport>, u64, u64, StageStats) {
    match s {
        Side::Engine { engine, .. } => {
            let st = engine.stats();
            let proto = st
                .stages
                .iter()
                .find(|(n, _)| *n == "protocol")
                .unwrap()
                .1
                .clone();
            (st.hooks, st.rx_frames, st.tx_frames, proto)
        }
        Side::Threaded { rt, .. } => {
            let st = rt.take().unwrap().stop();
            let first = st.hooks().into_iter().find(|h| h.point == "rx_frame");
            check_rx_frame_placement(&st, first.expect("an rx_frame stage").name);
            if let Some(t) = st.hooks().into_iter().find(|h| h.point == "tx_frame") {
                check_tx_frame_placement(&st, t.name);
            }
            (
                st.hooks(),
                st.io.rx_frames,
                st.io.tx_frames,
                st.stage("protocol"),
            )
        }
        Side::Smol { .. } => unreachable!(),
    }
}

fn report<'a>(hooks: &'a [HookReport], point: &str, name: &str) -> &'a HookReport {
    hooks
        .iter()
        .find(|h| h.point == point && h.name == name)
        .unwrap_or_else(|| panic!("no stage {name} at {point}: {hooks:?}"))
}

// ---------------------------------------------------------------------------------------
// Hook points
// ---------------------------------------------------------------------------------------

/// The same stage type at every point, over a transfer with smoltcp: every frame and segment
/// is seen once, the counts match the engine's own counters, and per-flow order holds.
fn probe_everywhere(rt: Rt) {
    let _serial = THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let (pa, pb) = MemLink::pair(Impairments::none());
    let probe_link = LinkProbe::new(&pa);
    let clock = VirtualClock::new();
    let (probe, log) = Probe::new();
    let b = Pipeline::builder(server_cfg(rt), pa)
        .on_rx_frame(probe.clone())
        .on_rx_frame(PortFirewall { deny: 9 })
        .on_rx_segment(probe.clone())
        .on_results(probe.clone())
        .on_tx_frame(probe);
    let srv = side(b, rt, &clock);
    let cli = Side::smoltcp(pb, MAC_B, IP_B, true);
    let bytes = 4 << 20;
    let mut o = transfer_sides(srv, cli, &clock, probe_link, bytes);
    let (hooks, rx_frames, tx_frames, proto) = final_counters(&mut o.server);
    let at = |p| report(&hooks, p, "probe").stats.clone();
    let (rxf, seg, res, txf) = (
        at("rx_frame"),
        at("rx_segment"),
        at("results"),
        at("tx_frame"),
    );
    eprintln!("{rt:?}: rx_frames={rx_frames} tx_frames={tx_frames} protocol={proto}");
    for h in &hooks {
        eprintln!("  {h}");
    }
    assert!(rx_frames > 1000 && tx_frames > 1000);
    assert_eq!(
        rxf.items_in, rx_frames,
        "rx_frame sees every received frame"
    );
    assert_eq!(rxf.passed, rx_frames);
    assert_eq!(txf.items_in, tx_frames, "tx_frame sees every frame sent");
    assert_eq!(
        res.items_in, proto.items_out,
        "results sees every protocol result"
    );
    assert_eq!(
        seg.passed,
        log.rx_results.load(Ordering::Relaxed),
        "every segment rx_segment passed reached the protocol stage"
    );
    assert!(
        seg.items_in * 2 > rx_frames,
        "most frames are data segments"
    );
    assert!(log.seg_timestamps.load(Ordering::Relaxed) > 0);
    assert_eq!(
        log.seg_unchecked.load(Ordering::Relaxed),
        0,
        "segments carry their flow's incarnation"
    );
    assert_eq!(
        log.seg_disorder.load(Ordering::Relaxed),
        0,
        "rx_segment order"
    );
    assert_eq!(
        log.result_disorder.load(Ordering::Relaxed),
        0,
        "results order"
    );
    let fw = report(&hooks, "rx_frame", "fw-frame");
    assert_eq!(
        fw.stats.items_in, rx_frames,
        "the second stage sees what the first passed"
    );
    assert_eq!(fw.drops_total(), 0);
}

#[test]
fn probe_at_every_point_inline() {
    probe_everywhere(Rt::Inline);
}

#[test]
fn probe_at_every_point_threaded() {
    probe_everywhere(Rt::Threaded);
}

#[test]
fn probe_at_every_point_threaded_frame_stages_on_their_own_workers() {
    probe_everywhere(Rt::ThreadedOwnWorker);
}

/// Per-flow order at `rx_segment` and `results` with several flows spread over two flow
/// groups, two preprocess, two place and two postprocess replicas.
#[test]
fn per_flow_order_with_groups_and_replicas() {
    let _serial = THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let (sp, cp) = MemLink::pair(Impairments::none());
    let clock = VirtualClock::new();
    let (probe, log) = Probe::new();
    let server = Pipeline::builder(threaded_config(MAC_A, IP_A), sp)
        .on_rx_segment(probe.clone())
        .on_results(probe)
        .threaded(wide(), clock.clone())
        .unwrap();
    let mut ccfg = engine_config(MAC_B, IP_B);
    ccfg.control.rto_min = Duration::from_secs(2);
    let mut client = Engine::new(ccfg, cp).unwrap();
    let listener = server.host().listen(7, 64).unwrap();
    let conns = 8;
    let bytes = 256 * 1024;
    let mut clients: Vec<_> = (0..conns)
        .map(|_| {
            let mut s = client.host().connect(SocketAddrV4::new(IP_A, 7)).unwrap();
            s.set_nonblocking(true);
            s
        })
        .collect();
    let payload: Vec<u8> = (0..bytes).map(|i| (i * 31 % 251) as u8).collect();
    let mut sent = vec![0usize; conns];
    let mut got = vec![0usize; conns];
    let mut servers = Vec::new();
    let mut buf = vec![0u8; 65536];
    let wall = std::time::Instant::now();
    while got.iter().sum::<usize>() < conns * bytes {
        assert!(
            wall.elapsed() < Duration::from_secs(120),
            "stalled: {got:?}"
        );
        clock.advance_to(Instant::ZERO + wall.elapsed());
        client.poll(clock.now());
        while let Ok(Some(mut s)) = listener.try_accept() {
            s.set_nonblocking(true);
            servers.push(s);
        }
        // Data only once every connection is accepted: segments that reach a preprocess
        // replica before it knows their flow are re-injected by the control plane, which
        // keeps no order with later segments (see `pipeline::hooks`).
        for (c, s) in clients.iter_mut().zip(sent.iter_mut()) {
            if *s < bytes && servers.len() == conns {
                if let Ok(n) = c.write(&payload[*s..]) {
                    *s += n;
                }
            }
        }
        for s in servers.iter_mut() {
            if let Ok(n) = s.read(&mut buf) {
                let _ = s.write_all(&buf[..n]);
            }
        }
        for (c, g) in clients.iter_mut().zip(got.iter_mut()) {
            if let Ok(n) = c.read(&mut buf) {
                assert_eq!(&buf[..n], &payload[*g..*g + n], "echo content");
                *g += n;
            }
        }
    }
    let st = server.stop();
    let groups_busy = st
        .tasks
        .iter()
        .filter(|t| matches!(t.task, Some(TaskRef::Group(_))))
        .filter(|t| t.hooks.iter().any(|h| h.stats.items_in > 0))
        .count();
    assert_eq!(groups_busy, 2, "both flow groups ran their own instance");
    let seg = st.hook("probe").unwrap();
    assert!(seg.stats.items_in > 0);
    assert!(log.seg_timestamps.load(Ordering::Relaxed) > 0);
    assert_eq!(
        log.seg_disorder.load(Ordering::Relaxed),
        0,
        "rx_segment order"
    );
    assert_eq!(
        log.result_disorder.load(Ordering::Relaxed),
        0,
        "results order"
    );
}

/// A drop verdict drops and counts under the stage's reason, at `rx_frame` (SYNs to port 10
/// never reach the control plane) and at `rx_segment` (data to port 9 never reaches the
/// application), while another port works.
fn drops(rt: Rt) {
    let _serial = THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let (sp, cp) = MemLink::pair(Impairments::none());
    let clock = VirtualClock::new();
    let b = Pipeline::builder(server_cfg(rt), sp)
        .on_rx_frame(PortFirewall { deny: 10 })
        .on_rx_segment(PortFirewall { deny: 9 });
    let mut srv = side(b, rt, &clock);
    let host = match &srv {
        Side::Engine { engine, .. } => engine.host(),
        Side::Threaded { host, .. } => host.clone(),
        Side::Smol { .. } => unreachable!(),
    };
    let l9 = host.listen(9, 4).unwrap();
    let l10 = host.listen(10, 4).unwrap();
    let l11 = host.listen(11, 4).unwrap();
    let mut client = Engine::new(engine_config(MAC_B, IP_B), cp).unwrap();
    let mut c9 = client.host().connect(SocketAddrV4::new(IP_A, 9)).unwrap();
    let c10 = client.host().connect(SocketAddrV4::new(IP_A, 10)).unwrap();
    let mut c11 = client.host().connect(SocketAddrV4::new(IP_A, 11)).unwrap();
    for c in [&mut c9, &mut c11] {
        c.set_nonblocking(true);
        c.write_all(b"ping").unwrap();
    }
    let (mut s9, mut s11) = (None, None);
    let mut got11 = Vec::new();
    let mut buf = [0u8; 64];
    let wall = std::time::Instant::now();
    // Long enough for several retransmissions of the denied data and SYN.
    while wall.elapsed() < Duration::from_millis(2500) || got11.len() < 4 {
        assert!(wall.elapsed() < Duration::from_secs(60), "stalled");
        clock.advance_to(Instant::ZERO + wall.elapsed() * 2);
        client.poll(clock.now());
        if let Side::Engine { engine, .. } = &mut srv {
            engine.poll(clock.now());
        }
        if s9.is_none() {
            s9 = l9.try_accept().unwrap();
        }
        if s11.is_none() {
            s11 = l11.try_accept().unwrap();
        }
        assert!(
            l10.try_accept().unwrap().is_none(),
            "SYNs to port 10 are dropped"
        );
        if let Some(s) = s9.as_mut() {
            s.set_nonblocking(true);
            assert!(s.read(&mut buf).is_err(), "data to port 9 is dropped");
        }
        if let Some(s) = s11.as_mut() {
            s.set_nonblocking(true);
            if let Ok(n) = s.read(&mut buf) {
                got11.extend_from_slice(&buf[..n]);
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(got11, b"ping");
    assert!(
        s9.is_some(),
        "the handshake to port 9 went through (only data is denied)"
    );
    drop(c10);
    let (hooks, ..) = final_counters(&mut srv);
    let f = report(&hooks, "rx_frame", "fw-frame");
    let s = report(&hooks, "rx_segment", "fw-segment");
    eprintln!("{rt:?}: {f}\n{s}");
    assert!(f.drops("deny") >= 2, "SYN and its retransmissions: {f}");
    assert!(s.drops("deny") >= 2, "data and its retransmissions: {s}");
    assert_eq!(f.stats.items_in, f.stats.passed + f.drops("deny"));
    assert_eq!(s.stats.items_in, s.stats.passed + s.drops("deny"));
}

#[test]
fn drop_verdict_counts_under_the_stage_reason_inline() {
    drops(Rt::Inline);
}

#[test]
fn drop_verdict_counts_under_the_stage_reason_threaded() {
    drops(Rt::Threaded);
}

#[test]
fn drop_verdict_counts_under_the_stage_reason_own_worker() {
    drops(Rt::ThreadedOwnWorker);
}

/// Transmit reflects, redirect arrives on the user's ring, punt reaches the control plane.
fn tx_redirect_punt(rt: Rt) {
    let _serial = THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let (sp, cp) = MemLink::pair(Impairments::none());
    let clock = VirtualClock::new();
    let ring = RedirectRing::new(64);
    let b = Pipeline::builder(server_cfg(rt), sp)
        .on_rx_frame(Marks)
        .redirect_to(ring.clone());
    let mut srv = side(b, rt, &clock);
    let n = 10;
    for i in 0..n {
        for ty in [ETH_REFLECT, ETH_REDIRECT, ETH_PUNT] {
            let mut f = vec![0u8; 64];
            f[..6].copy_from_slice(&MAC_A.0);
            f[6..12].copy_from_slice(&MAC_B.0);
            f[12..14].copy_from_slice(&ty);
            f[14] = i as u8;
            cp.send_bytes(clock.now(), &f);
        }
    }
    let mut back = Vec::new();
    let wall = std::time::Instant::now();
    while back.len() < n || ring.len() < n {
        assert!(
            wall.elapsed() < Duration::from_secs(30),
            "reflected {} redirected {}",
            back.len(),
            ring.len()
        );
        if let Side::Engine { engine, .. } = &mut srv {
            engine.poll(clock.now());
        }
        while let Some(f) = cp.recv_bytes(clock.now()) {
            back.push(f);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    for f in &back {
        assert_eq!(&f[..6], &MAC_B.0, "reflected to the sender");
        assert_eq!(&f[6..12], &MAC_A.0);
        assert_eq!([f[12], f[13]], ETH_REFLECT);
    }
    let mut order: Vec<u8> = back.iter().map(|f| f[14]).collect();
    if rt == Rt::Inline {
        assert_eq!(order, (0..n as u8).collect::<Vec<_>>(), "in order");
    }
    // Threaded: reflected frames from different preprocess replicas keep no order.
    order.sort_unstable();
    assert_eq!(order, (0..n as u8).collect::<Vec<_>>(), "each frame once");
    let arena = match &srv {
        Side::Engine { engine, .. } => engine.arena().clone(),
        Side::Threaded { rt, .. } => rt.as_ref().unwrap().arena().clone(),
        Side::Smol { .. } => unreachable!(),
    };
    let mut seen = Vec::new();
    while let Some(r) = ring.pop() {
        assert_eq!(r.point, "rx_frame");
        assert_eq!(r.flow, None);
        let d = arena.data(&r.frame);
        assert_eq!([d[12], d[13]], ETH_REDIRECT);
        seen.push(d[14]);
        arena.free(r.frame);
    }
    if rt == Rt::Inline {
        assert_eq!(seen, (0..n as u8).collect::<Vec<_>>(), "in order");
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..n as u8).collect::<Vec<_>>(), "each frame once");
    let (hooks, control_drops) = match &mut srv {
        Side::Engine { engine, .. } => {
            let st = engine.stats();
            (
                st.hooks.clone(),
                st.control.drops.get(DropReason::UnsupportedEthertype),
            )
        }
        Side::Threaded { rt, .. } => {
            let st = rt.take().unwrap().stop();
            check_rx_frame_placement(&st, "marks");
            (
                st.hooks(),
                st.io.control.drops.get(DropReason::UnsupportedEthertype),
            )
        }
        Side::Smol { .. } => unreachable!(),
    };
    let m = report(&hooks, "rx_frame", "marks");
    eprintln!("{rt:?}: {m}");
    assert_eq!(m.stats.tx, n as u64);
    assert_eq!(m.stats.redirected, n as u64);
    assert_eq!(m.stats.punted, n as u64);
    assert_eq!(
        control_drops, n as u64,
        "the control plane parsed each punted frame and dropped it"
    );
    assert_eq!(arena.in_use(), 0, "no frame leaked");
}

#[test]
fn transmit_redirect_and_punt_verdicts_inline() {
    tx_redirect_punt(Rt::Inline);
}

#[test]
fn transmit_redirect_and_punt_verdicts_threaded() {
    tx_redirect_punt(Rt::Threaded);
}

#[test]
fn transmit_redirect_and_punt_verdicts_own_worker() {
    tx_redirect_punt(Rt::ThreadedOwnWorker);
}

// ---------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------

/// Send `bytes` from a client built by `client` to an inline echo-less sink; returns the
/// largest in-flight figure the client's results reported.
fn bulk_in_flight<C, S>(
    client: PipelineBuilder<MemPort, C, S>,
    server: MemPort,
    bytes: usize,
) -> u64
where
    C: flextoe::control::congestion::CongestionControl,
    S: FlowScheduler,
{
    let (probe, log) = Probe::new();
    let mut client = client.on_results(probe).build().unwrap();
    let mut server = Engine::new(engine_config(MAC_A, IP_A), server).unwrap();
    let l = server.host().listen(7, 4).unwrap();
    let mut c = client.host().connect(SocketAddrV4::new(IP_A, 7)).unwrap();
    c.set_nonblocking(true);
    let clock = VirtualClock::new();
    let data = vec![7u8; bytes];
    let (mut sent, mut got) = (0, 0);
    let mut s = None;
    let mut buf = vec![0u8; 65536];
    for _ in 0..10_000_000 {
        client.poll(clock.now());
        server.poll(clock.now());
        if sent < bytes {
            if let Ok(n) = c.write(&data[sent..]) {
                sent += n;
            }
        }
        if s.is_none() {
            s = l.try_accept().unwrap();
        }
        if let Some(s) = s.as_mut() {
            s.set_nonblocking(true);
            while let Ok(n) = s.read(&mut buf) {
                got += n;
            }
        }
        if got == bytes {
            return log.max_in_flight.load(Ordering::Relaxed);
        }
        clock.advance(Duration::from_micros(20));
    }
    panic!("transfer did not finish: {got} of {bytes}");
}

/// A fixed-window congestion control: in flight never exceeds the window.
#[test]
fn fixed_window_congestion_control_caps_in_flight() {
    let window = 12_000;
    let bytes = 4 << 20;
    // 1 ms each way: the window, not the link, limits what is in flight.
    let imp = Impairments {
        latency: Duration::from_millis(1),
        ..Impairments::none()
    };
    let (cp, sp) = MemLink::pair(imp.clone());
    let fixed = Pipeline::builder(engine_config(MAC_B, IP_B), cp).congestion(FixedWindow(window));
    let max_fixed = bulk_in_flight(fixed, sp, bytes);
    let (cp, sp) = MemLink::pair(imp);
    let default = Pipeline::builder(engine_config(MAC_B, IP_B), cp);
    let max_default = bulk_in_flight(default, sp, bytes);
    eprintln!("max in flight: fixed window {max_fixed}, default {max_default}");
    assert!(
        max_fixed <= window as u64,
        "in flight {max_fixed} > window {window}"
    );
    assert!(max_fixed > window as u64 / 2, "the window was the limit");
    assert!(max_default > window as u64 * 4, "the default grows past it");
}

/// Strict priority by local or remote port: flows whose port is `high` are granted first.
#[derive(Clone, Default)]
struct StrictPriority {
    high_port: u16,
    high: RoundRobin,
    low: RoundRobin,
    is_high: Vec<bool>,
}

impl FlowScheduler for StrictPriority {
    fn name(&self) -> &'static str {
        "strict-priority"
    }
    fn install(&mut self, id: FlowId, f: &FlowIdentity) {
        let i = id as usize;
        if self.is_high.len() <= i {
            self.is_high.resize(i + 1, false);
        }
        self.is_high[i] =
            f.tuple.remote_port == self.high_port || f.tuple.local_port == self.high_port;
    }
    fn activate(&mut self, id: FlowId, now: Instant) {
        if self.is_high.get(id as usize).copied().unwrap_or(false) {
            self.high.activate(id, now);
        } else {
            self.low.activate(id, now);
        }
    }
    fn remove(&mut self, id: FlowId) {
        self.high.remove(id);
        self.low.remove(id);
    }
    fn pending(&self) -> usize {
        self.high.pending() + self.low.pending()
    }
    fn grant(&mut self, now: Instant, max: usize, out: &mut Vec<ProtoWork>) {
        // A flow is re-activated only after its grant was processed: while any high flow
        // is pending, low flows get nothing.
        if self.high.pending() > 0 {
            self.high.grant(now, max, out);
        } else {
            self.low.grant(now, max, out);
        }
    }
    fn stats(&self) -> StageStats {
        let mut s = self.high.stats().clone();
        s.items_out += self.low.stats().items_out;
        s
    }
}

/// Two flows from one sender contend for its egress: the windows never limit them (a large
/// fixed congestion window and rings), so each poll's grants are the bottleneck. Returns how
/// much of its data the low-priority flow had delivered when the high-priority one finished.
fn contention<S: FlowScheduler>(sched: S) -> f64 {
    let imp = Impairments {
        latency: Duration::from_millis(2),
        ..Impairments::none()
    };
    let (cp, sp) = MemLink::pair(imp);
    let big = |mut cfg: flextoe::EngineConfig| {
        cfg.rx_buffer = 4 << 20;
        cfg.tx_buffer = 4 << 20;
        // One burst of segments per poll: the sender's share of the link per poll.
        cfg.poll_budget = cfg.burst;
        cfg
    };
    let mut client = Pipeline::builder(big(engine_config(MAC_B, IP_B)), cp)
        .congestion(FixedWindow(16 << 20))
        .scheduler(sched)
        .build()
        .unwrap();
    let mut server = Engine::new(big(engine_config(MAC_A, IP_A)), sp).unwrap();
    let (low_port, high_port) = (5001, 5002);
    let ls = [
        server.host().listen(low_port, 4).unwrap(),
        server.host().listen(high_port, 4).unwrap(),
    ];
    let mut cs: Vec<_> = [low_port, high_port]
        .iter()
        .map(|p| {
            let mut c = client.host().connect(SocketAddrV4::new(IP_A, *p)).unwrap();
            c.set_nonblocking(true);
            c
        })
        .collect();
    let clock = VirtualClock::new();
    let bytes = 2 << 20;
    let data = vec![1u8; bytes];
    let mut ss: Vec<Option<flextoe::Stream>> = vec![None, None];
    let mut sent = [0usize; 2];
    let mut got = [0usize; 2];
    let mut buf = vec![0u8; 65536];
    let mut established = false;
    for _ in 0..20_000_000 {
        client.poll(clock.now());
        server.poll(clock.now());
        for i in 0..2 {
            if ss[i].is_none() {
                ss[i] = ls[i].try_accept().unwrap();
                if let Some(s) = ss[i].as_mut() {
                    s.set_nonblocking(true);
                }
            }
        }
        // Start both at once, when both are connected.
        established |= ss.iter().all(Option::is_some);
        if established {
            for i in 0..2 {
                if sent[i] < bytes {
                    if let Ok(n) = cs[i].write(&data[sent[i]..]) {
                        sent[i] += n;
                    }
                }
            }
        }
        for i in 0..2 {
            if let Some(s) = ss[i].as_mut() {
                while let Ok(n) = s.read(&mut buf) {
                    got[i] += n;
                }
            }
        }
        if got[1] == bytes {
            return got[0] as f64 / bytes as f64;
        }
        clock.advance(Duration::from_micros(500));
    }
    panic!("no finish: {got:?}");
}

#[test]
fn strict_priority_scheduler_finishes_the_high_priority_flow_first() {
    let rr = contention(RoundRobin::new());
    let prio = contention(StrictPriority {
        high_port: 5002,
        ..Default::default()
    });
    eprintln!(
        "low-priority flow done when the high one finished: round-robin {rr:.2}, strict {prio:.2}"
    );
    assert!(rr > 0.8, "round-robin shares the link: {rr}");
    assert!(
        prio < 0.5,
        "strict priority serves the high flow first: {prio}"
    );
}

/// A placement policy decides which place replica owns a flow's rings.
#[derive(Clone)]
struct AllOnOne(Arc<AtomicU64>);

impl Placement for AllOnOne {
    fn place(&self, _id: FlowId, _t: &FourTuple, _replicas: usize) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed);
        1
    }
}

#[test]
fn placement_policy_chooses_the_place_replica() {
    let _serial = THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let (pa, pb) = MemLink::pair(Impairments::none());
    let probe_link = LinkProbe::new(&pa);
    let clock = VirtualClock::new();
    let calls = Arc::new(AtomicU64::new(0));
    let rt = Pipeline::builder(threaded_config(MAC_A, IP_A), pa)
        .placement(AllOnOne(calls.clone()))
        .threaded(wide(), clock.clone())
        .unwrap();
    let srv = Side::from_threaded(rt);
    let cli = Side::smoltcp(pb, MAC_B, IP_B, true);
    let mut o = transfer_sides(srv, cli, &clock, probe_link, 1 << 20);
    let Side::Threaded { rt, .. } = &mut o.server else {
        unreachable!()
    };
    let st = rt.take().unwrap().stop();
    let place_in = |n| {
        st.tasks
            .iter()
            .filter(|t| t.task == Some(TaskRef::Place(n)))
            .flat_map(|t| &t.stages)
            .filter(|(name, _)| *name == "place")
            .map(|(_, s)| s.items_in)
            .sum::<u64>()
    };
    assert_eq!(calls.load(Ordering::Relaxed), 1, "asked once per flow");
    assert_eq!(place_in(0), 0, "replica 0 owns nothing");
    assert!(place_in(1) > 100, "replica 1 owns the flow");
}

#[test]
fn hook_chains_have_names_and_reports_before_running() {
    let (pa, _pb) = MemLink::pair(Impairments::none());
    let b = Pipeline::builder(engine_config(MAC_A, IP_A), pa)
        .on_rx_frame(PortFirewall { deny: 1 })
        .on_rx_segment(PortFirewall { deny: 1 });
    assert_eq!(b.hooks().rx_frame.len(), 1);
    let e = b.build().unwrap();
    let names: Vec<_> = e.stats().hooks.iter().map(|h| (h.point, h.name)).collect();
    assert_eq!(
        names,
        [("rx_frame", "fw-frame"), ("rx_segment", "fw-segment")]
    );
    let _unused: Option<Threaded> = None;
}

/// A port that claims checksum offload, counts the frames that came without valid checksums
/// and fills them in, as a NIC would.
struct OffloadPort {
    inner: MemPort,
    unfilled: Arc<AtomicU64>,
}

impl flextoe::backends::Port for OffloadPort {
    fn recv(
        &mut self,
        now: Instant,
        arena: &flextoe::buf::FrameArena,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        self.inner.recv(now, arena, out, max)
    }

    fn send(
        &mut self,
        now: Instant,
        arena: &flextoe::buf::FrameArena,
        frames: &mut Vec<Frame>,
    ) -> usize {
        for f in frames.iter_mut() {
            if wire::parse_frame(arena.data(f)).is_err() {
                self.unfilled.fetch_add(1, Ordering::Relaxed);
            }
            wire::fill_checksums(arena.data_mut(f));
        }
        self.inner.send(now, arena, frames)
    }

    fn capabilities(&self) -> flextoe::backends::PortCaps {
        flextoe::backends::PortCaps {
            tx_checksum_offload: true,
            ..Default::default()
        }
    }
}

/// A port with checksum offload gets the data path's frames without checksums, on both
/// runtimes, and the transfer is intact once the port fills them in.
#[test]
fn checksum_offload_is_left_to_the_port() {
    for rt in [Rt::Inline, Rt::Threaded] {
        let _serial = THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
        let (pa, pb) = MemLink::pair(Impairments::none());
        let unfilled = Arc::new(AtomicU64::new(0));
        let port = OffloadPort {
            inner: pa,
            unfilled: unfilled.clone(),
        };
        let clock = VirtualClock::new();
        let b = Pipeline::builder(server_cfg(rt), port);
        let (mut inline, threaded) = match rt {
            Rt::Inline => (Some(b.build().unwrap()), None),
            Rt::Threaded | Rt::ThreadedOwnWorker => {
                (None, Some(b.threaded(wide(), clock.clone()).unwrap()))
            }
        };
        let host = match (&inline, &threaded) {
            (Some(e), _) => e.host(),
            (_, Some(t)) => t.host(),
            _ => unreachable!(),
        };
        let l = host.listen(7, 4).unwrap();
        let mut client = Engine::new(engine_config(MAC_B, IP_B), pb).unwrap();
        let mut c = client.host().connect(SocketAddrV4::new(IP_A, 7)).unwrap();
        c.set_nonblocking(true);
        let bytes = 1 << 20;
        let data: Vec<u8> = (0..bytes).map(|i| (i % 253) as u8).collect();
        let (mut sent, mut got) = (0, Vec::new());
        let mut s = None;
        let mut buf = vec![0u8; 65536];
        let wall = std::time::Instant::now();
        while got.len() < bytes {
            assert!(wall.elapsed() < Duration::from_secs(60), "stalled");
            clock.advance_to(Instant::ZERO + wall.elapsed());
            client.poll(clock.now());
            if let Some(e) = inline.as_mut() {
                e.poll(clock.now());
            }
            if s.is_none() {
                s = l.try_accept().unwrap();
            }
            if let Some(s) = s.as_mut() {
                s.set_nonblocking(true);
                if let Ok(n) = s.read(&mut buf) {
                    got.extend_from_slice(&buf[..n]);
                }
            }
            if sent < bytes {
                if let Ok(n) = c.write(&data[sent..]) {
                    sent += n;
                }
            }
        }
        assert_eq!(got, data);
        let client_drops = client.stats().stages[0]
            .1
            .drops
            .get(DropReason::BadTcpChecksum);
        assert_eq!(client_drops, 0, "the port filled every checksum");
        let n = unfilled.load(Ordering::Relaxed);
        eprintln!("{rt:?}: {n} frames reached the port without checksums");
        assert!(n > 10, "the engine left checksums to the port ({rt:?})");
        drop(threaded);
    }
}

/// Rates a scheduler was given, per flow.
type Rates = Arc<std::sync::Mutex<Vec<(FlowId, Option<u64>)>>>;

/// Records the rates the congestion control hands to the scheduler; grants round-robin.
#[derive(Clone, Default)]
struct RateLog {
    inner: RoundRobin,
    seen: Rates,
}

impl FlowScheduler for RateLog {
    fn name(&self) -> &'static str {
        "rate-log"
    }
    fn set_rate(&mut self, id: FlowId, rate: Option<u64>, _now: Instant) {
        self.seen.lock().unwrap().push((id, rate));
    }
    fn activate(&mut self, id: FlowId, now: Instant) {
        self.inner.activate(id, now)
    }
    fn remove(&mut self, id: FlowId) {
        self.inner.remove(id)
    }
    fn pending(&self) -> usize {
        self.inner.pending()
    }
    fn grant(&mut self, now: Instant, max: usize, out: &mut Vec<ProtoWork>) {
        self.inner.grant(now, max, out)
    }
    fn stats(&self) -> StageStats {
        self.inner.stats().clone()
    }
}

/// A rate-setting congestion control's rate reaches the scheduler once per flow (it never
/// changes), on both runtimes; the default congestion control sets none.
#[test]
fn congestion_control_rate_reaches_the_scheduler() {
    use flextoe::control::congestion::ConstantRate;
    let cc = ConstantRate {
        bytes_per_sec: 125_000_000,
        window: 64 * 1024,
    };
    for rt in [Rt::Inline, Rt::Threaded] {
        let _serial = THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
        let sched = RateLog::default();
        let seen = sched.seen.clone();
        let (pa, pb) = MemLink::pair(Impairments::none());
        let clock = VirtualClock::new();
        let b = Pipeline::builder(server_cfg(rt), pa)
            .congestion(cc)
            .scheduler(sched);
        let (mut inline, threaded) = match rt {
            Rt::Inline => (Some(b.build().unwrap()), None),
            _ => (None, Some(b.threaded(wide(), clock.clone()).unwrap())),
        };
        let host = match (&inline, &threaded) {
            (Some(e), _) => e.host(),
            (_, Some(t)) => t.host(),
            _ => unreachable!(),
        };
        let l = host.listen(7, 8).unwrap();
        let mut client = Engine::new(engine_config(MAC_B, IP_B), pb).unwrap();
        let conns: Vec<_> = (0..3)
            .map(|_| client.host().connect(SocketAddrV4::new(IP_A, 7)).unwrap())
            .collect();
        let mut servers = Vec::new();
        let wall = std::time::Instant::now();
        // Each server sends a little, so its flow's ACKs reach the congestion control.
        while seen.lock().unwrap().len() < 3 {
            assert!(
                wall.elapsed() < Duration::from_secs(30),
                "{:?}",
                seen.lock().unwrap()
            );
            clock.advance_to(Instant::ZERO + wall.elapsed());
            client.poll(clock.now());
            if let Some(e) = inline.as_mut() {
                e.poll(clock.now());
            }
            while let Ok(Some(mut s)) = l.try_accept() {
                s.set_nonblocking(true);
                s.write_all(b"hello").unwrap();
                servers.push(s);
            }
        }
        drop(threaded);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "once per flow: {seen:?}");
        assert!(
            seen.iter().all(|(_, r)| *r == Some(125_000_000)),
            "{seen:?}"
        );
        drop(conns);
    }
    // The default congestion control sets no rate: the scheduler hears nothing.
    let sched = RateLog::default();
    let seen = sched.seen.clone();
    let (pa, pb) = MemLink::pair(Impairments::none());
    let imp_free = bulk_in_flight(
        Pipeline::builder(engine_config(MAC_B, IP_B), pb).scheduler(sched),
        pa,
        64 * 1024,
    );
    assert!(imp_free > 0);
    assert!(seen.lock().unwrap().is_empty());
}
