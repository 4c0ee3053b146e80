//! Composed pipelines: user stages at every hook point on both runtimes, their verdicts and
//! counters, and the hook chains' names and reports (the replaced policies are in
//! `tests/policies.rs`).

mod common;
mod pipeline_support;

use std::io::{Read, Write};
use std::net::SocketAddrV4;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use flextoe::backends::mem::MemLink;
use flextoe::pipeline::{Engine, HookReport, Pipeline, RedirectRing, TaskRef};
use flextoe::sim::{Impairments, VirtualClock};
use flextoe::stats::{DropReason, StageStats};
use flextoe::time::{Clock, Instant};

use pipeline_support::*;

// ---------------------------------------------------------------------------------------
// Runtimes
// ---------------------------------------------------------------------------------------

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
    let scfg = threaded_config(MAC_A, IP_A);
    let secret = scfg.control.isn_secret;
    let server = Pipeline::builder(scfg, sp)
        .on_rx_segment(probe.clone())
        .on_results(probe)
        .threaded(wide(), clock.clone())
        .unwrap();
    let mut ccfg = engine_config(MAC_B, IP_B);
    ccfg.control.rto_min = Duration::from_secs(2);
    let mut client = Engine::new(ccfg, cp).unwrap();
    let listener = server.host().listen(7, 64).unwrap();
    let bytes = 256 * 1024;
    let mut clients =
        connect_over_groups(&client.host(), secret, SocketAddrV4::new(IP_A, 7), 8, 2, 2);
    let conns = clients.len();
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

/// The builder names its hook chains, and the engine reports them, before anything ran.
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
}
