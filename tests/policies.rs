//! Replaced policies in composed pipelines: congestion control, flow scheduler, placement,
//! checksum offload, and the congestion control's rate reaching the scheduler.

mod common;
mod pipeline_support;

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
use flextoe::pipeline::{Engine, Pipeline, PipelineBuilder, Placement, TaskRef};
use flextoe::sim::{Impairments, VirtualClock};
use flextoe::stages::scheduler::{FlowScheduler, RoundRobin};
use flextoe::stages::ProtoWork;
use flextoe::stats::{DropReason, StageStats};
use flextoe::time::{Clock, Instant};
use flextoe::wire::{self, FourTuple};

use pipeline_support::*;

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
