//! The threaded runtime beyond the interop tests: several flow groups and replicas, the
//! egress reorder stage's overflow policies, and statistics read while it runs.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddrV4;
use std::time::Duration;

use common::*;
use flextoe::backends::mem::MemLink;
use flextoe::pipeline::topology::AUTO_MAX_WORKERS;
use flextoe::pipeline::{Engine, TaskRef, Threaded, Topology};
use flextoe::reorder::Overflow;
use flextoe::sim::{Impairments, VirtualClock};
use flextoe::time::Clock;

/// `conns` connections from an inline client to a threaded server, each sending `bytes`
/// that the server echoes; everything verified. Returns the server's final statistics.
/// Task reports a threaded engine laid out as `topology` publishes: one per task, or one
/// for the whole engine when it runs as the inline engine.
fn reports(topology: &Topology) -> usize {
    if topology.maps_inline() {
        1
    } else {
        topology.tasks().len()
    }
}

fn echo_many(topology: Topology, conns: usize, bytes: usize) -> flextoe::pipeline::ThreadedStats {
    echo_many_over(topology, conns, bytes, Impairments::none())
}

/// [`echo_many`] over a link with `impairments`.
fn echo_many_over(
    topology: Topology,
    conns: usize,
    bytes: usize,
    impairments: Impairments,
) -> flextoe::pipeline::ThreadedStats {
    let _serial = THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let (sp, cp) = MemLink::pair(impairments);
    let clock = VirtualClock::new();
    let mut scfg = engine_config(MAC_A, IP_A);
    scfg.control.rto_min = Duration::from_millis(20);
    scfg.control.rto_initial = Duration::from_millis(50);
    let secret = scfg.control.isn_secret;
    let server = Threaded::spawn(scfg, sp, topology.clone(), clock.clone()).unwrap();
    let mut ccfg = engine_config(MAC_B, IP_B);
    ccfg.control.rto_min = Duration::from_millis(5);
    let mut client = Engine::new(ccfg, cp).unwrap();
    let listener = server.host().listen(7, 128).unwrap();
    // Every flow group carries at least one connection (more than `conns` may be opened).
    let groups = topology.flow_groups as u16;
    let dst = SocketAddrV4::new(IP_A, 7);
    let mut clients = connect_over_groups(&client.host(), secret, dst, conns, groups, 1);
    let conns = clients.len();
    let payload: Vec<Vec<u8>> = (0..conns)
        .map(|c| (0..bytes).map(|i| (i * 7 + c * 13) as u8).collect())
        .collect();
    let mut sent = vec![0usize; conns];
    let mut back: Vec<Vec<u8>> = vec![Vec::new(); conns];
    let mut servers = Vec::new();
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 65536];
    let wall = std::time::Instant::now();
    let mut saw_running_stats = false;
    let topology = topology.clone();
    while back.iter().map(Vec::len).sum::<usize>() < conns * bytes {
        assert!(wall.elapsed() < Duration::from_secs(120), "stalled");
        clock.advance_to(flextoe::time::Instant::ZERO + wall.elapsed());
        client.poll(clock.now());
        // Runs the server here when its topology is caller-driven (a no-op otherwise).
        server.poll();
        while let Ok(Some(mut s)) = listener.try_accept() {
            s.set_nonblocking(true);
            servers.push(s);
            pending.push(Vec::new());
        }
        for (s, p) in servers.iter_mut().zip(pending.iter_mut()) {
            if !p.is_empty() {
                if let Ok(n) = s.write(p) {
                    p.drain(..n);
                }
                continue;
            }
            match s.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let w = s.write(&buf[..n]).unwrap_or(0);
                    p.extend_from_slice(&buf[w..n]);
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("server: {e}"),
            }
        }
        for c in 0..conns {
            if sent[c] < bytes {
                if let Ok(n) = clients[c].write(&payload[c][sent[c]..]) {
                    sent[c] += n;
                }
            }
            while let Ok(n) = clients[c].read(&mut buf) {
                if n == 0 {
                    break;
                }
                back[c].extend_from_slice(&buf[..n]);
            }
        }
        if !saw_running_stats && back.iter().any(|b| !b.is_empty()) {
            // Statistics are readable while the runtime runs.
            let st = server.stats();
            let proto_in: u64 = st
                .tasks
                .iter()
                .flat_map(|t| &t.stages)
                .filter(|(n, _)| *n == "protocol")
                .map(|(_, s)| s.items_in)
                .sum();
            if proto_in > 0 {
                saw_running_stats = true;
                assert_eq!(st.tasks.len(), reports(&topology));
                for t in &st.tasks {
                    assert!((0.0..=1.0).contains(&t.busy_fraction()));
                }
            }
        }
        std::thread::yield_now();
    }
    for c in 0..conns {
        assert!(back[c] == payload[c], "connection {c}: echo differs");
    }
    // The runtime is still running: its statistics must become readable.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while !saw_running_stats && std::time::Instant::now() < until {
        server.poll();
        let st = server.stats();
        saw_running_stats = st.tasks.len() == reports(&topology)
            && st
                .tasks
                .iter()
                .flat_map(|t| &t.stages)
                .any(|(n, s)| *n == "protocol" && s.items_in > 0);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(saw_running_stats, "no statistics while running");
    server.stop()
}

#[test]
fn two_groups_with_preprocess_place_and_postprocess_replicas() {
    // BlueField-2's shape (8 tasks) on whatever cores this machine has.
    let t = Topology::bluefield2();
    assert_eq!(t.flow_groups, 2);
    let mut t = t;
    for w in t.workers.iter_mut() {
        w.core = None;
    }
    let st = echo_many(t, 8, 200_000);
    // Both groups carried connections.
    let groups_busy = st
        .tasks
        .iter()
        .filter(|r| matches!(r.task, Some(TaskRef::Group(_))))
        .filter(|r| {
            r.stages
                .iter()
                .any(|(n, s)| *n == "protocol" && s.items_in > 0)
        })
        .count();
    assert_eq!(groups_busy, 2, "{st}");
    let pre_busy = st
        .tasks
        .iter()
        .filter(|r| matches!(r.task, Some(TaskRef::Preprocess(_))))
        .filter(|r| r.stages.iter().any(|(_, s)| s.items_in > 0))
        .count();
    assert_eq!(pre_busy, 2, "every preprocess replica got frames: {st}");
    let place_busy = st
        .tasks
        .iter()
        .filter(|r| matches!(r.task, Some(TaskRef::Place(_))))
        .filter(|r| {
            r.stages
                .iter()
                .any(|(n, s)| *n == "place" && s.items_in > 0)
        })
        .count();
    assert_eq!(
        place_busy, 2,
        "every place replica carried connections: {st}"
    );
}

#[test]
fn egress_reorder_skip_ahead_policy_is_recovered_by_tcp() {
    // A tiny egress window that skips ahead: frames can be given up (counted), TCP recovers.
    let mut t = Topology::with_counts(2, 1, 2, 3, 2, false);
    t.reorder_window = 2;
    t.overflow = Overflow::SkipAhead;
    let st = echo_many(t, 4, 100_000);
    let io = st
        .tasks
        .iter()
        .find(|r| r.task == Some(TaskRef::Io))
        .unwrap();
    let r = io.reorder[0];
    assert!(r.released > 0);
    assert_eq!(r.refused, 0, "skip-ahead never refuses");
    eprintln!("egress reorder: {r:?}");
}

#[test]
fn egress_reorder_backpressure_policy_loses_nothing() {
    let mut t = Topology::with_counts(2, 1, 2, 3, 2, false);
    t.reorder_window = 2;
    t.overflow = Overflow::Backpressure;
    let st = echo_many(t, 4, 100_000);
    let io = st
        .tasks
        .iter()
        .find(|r| r.task == Some(TaskRef::Io))
        .unwrap();
    let r = io.reorder[0];
    // Backpressure never gives a frame up: nothing skipped, nothing late.
    assert_eq!((r.skipped, r.late), (0, 0), "{r:?}");
    assert!(r.released > 0);
}

/// Per place replica: (copies made for the other replicas, copies lent to them).
fn copies(st: &flextoe::pipeline::ThreadedStats) -> Vec<(u64, u64)> {
    st.tasks
        .iter()
        .filter(|t| matches!(t.task, Some(TaskRef::Place(_))))
        .map(|t| {
            t.stages
                .iter()
                .find(|(n, _)| n.starts_with("copies"))
                .map_or((0, 0), |(_, s)| (s.items_in, s.items_out))
        })
        .collect()
}

/// One connection's payload copies go to every place replica, not only to the one that
/// owns its rings, and the echo comes back whole and in order.
#[test]
fn replicated_placement_spreads_one_connections_copies() {
    let t = Topology::with_counts(1, 1, 3, 1, 3, false).with_replicated_placement();
    let st = echo_many(t, 1, 2_000_000);
    let c = copies(&st);
    eprintln!("copies (made, lent) per place replica: {c:?}");
    assert_eq!(c.len(), 3);
    let lent: u64 = c.iter().map(|x| x.1).sum();
    let made: u64 = c.iter().map(|x| x.0).sum();
    assert_eq!(made, lent, "every copy lent was made once");
    // One replica owns the connection and lends; both others make its copies.
    assert_eq!(c.iter().filter(|x| x.1 > 0).count(), 1, "{c:?}");
    assert_eq!(c.iter().filter(|x| x.0 > 0).count(), 2, "{c:?}");
    // Without it, nothing is lent.
    let st = echo_many(Topology::with_counts(1, 1, 3, 1, 3, false), 1, 200_000);
    assert!(copies(&st).iter().all(|&x| x == (0, 0)));
}

/// With loss, reordering and duplicates, segments land out of order and twice while copies
/// of the same ranges are out on other replicas: nothing is lost, duplicated or
/// corrupted.
#[test]
fn replicated_placement_survives_loss_reordering_and_duplicates() {
    let t = Topology::with_counts(1, 1, 2, 1, 2, false).with_replicated_placement();
    let imp = Impairments {
        loss: 0.01,
        reorder: 0.03,
        duplicate: 0.03,
        seed: 7,
        ..Impairments::none()
    };
    let st = echo_many_over(t, 2, 600_000, imp);
    let c = copies(&st);
    eprintln!("copies (made, lent) per place replica: {c:?}");
    assert!(c.iter().map(|x| x.1).sum::<u64>() > 0, "nothing was lent");
    let r = st.io.retransmissions;
    assert!(
        r.fast + r.recovery + r.tail_probes + r.timeout > 0,
        "the link lost nothing the server sent: {r:?}"
    );
}

#[test]
fn single_thread_topology_works() {
    let st = echo_many(Topology::single_thread(), 2, 100_000);
    assert_eq!(st.tasks.len(), 5);
}

/// A threaded server configured as `scfg` and laid out as `topology`, and a threaded client
/// on one thread, joined by an in-memory link, on the system clock.
fn threaded_pair(
    scfg: flextoe::pipeline::EngineConfig,
    topology: Topology,
) -> (Threaded, Threaded) {
    let (sp, cp) = MemLink::pair(Impairments::none());
    let clock = flextoe::time::SystemClock::new();
    let server = Threaded::spawn(scfg, sp, topology, clock).unwrap();
    let client = Threaded::spawn(
        engine_config(MAC_B, IP_B),
        cp,
        Topology::single_thread(),
        clock,
    )
    .unwrap();
    (server, client)
}

#[test]
fn blocking_sockets_on_threaded_runtime() {
    let _serial = THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let (server, client) = threaded_pair(engine_config(MAC_A, IP_A), Topology::x86(2));
    let l = server.host().listen(80, 4).unwrap();
    let t = std::thread::spawn(move || {
        let mut s = l.accept().unwrap();
        let mut v = Vec::new();
        s.read_to_end(&mut v).unwrap();
        s.write_all(&(v.len() as u64).to_le_bytes()).unwrap();
    });
    let mut c = client
        .host()
        .connect_blocking(SocketAddrV4::new(IP_A, 80), Duration::from_secs(30))
        .unwrap();
    c.write_all(&vec![9u8; 3 << 20]).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut r = Vec::new();
    c.read_to_end(&mut r).unwrap();
    assert_eq!(u64::from_le_bytes(r[..8].try_into().unwrap()), 3 << 20);
    t.join().unwrap();
}

/// Reads tell the engine nothing until one opens the window enough for an update (the
/// receive ring's read bell): a reader on its own thread that reads a 4 KiB ring in odd-sized
/// pieces, pausing now and then so that the window shuts, still gets every byte of 4 MiB, in
/// order, on the threaded runtime (protocol stage on a worker of its own, and all on one
/// thread). A read that passed the bell before it could see it would leave the window shut
/// with nobody to open it: the transfer would stall.
#[test]
fn a_small_ring_read_in_odd_pieces_on_another_thread_never_stalls() {
    const BYTES: usize = 4 << 20;
    let _serial = THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    for topology in [Topology::x86(2), Topology::single_thread()] {
        let mut scfg = engine_config(MAC_A, IP_A);
        scfg.rx_buffer = 4096;
        let (server, client) = threaded_pair(scfg, topology);
        let l = server.host().listen(81, 4).unwrap();
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut s = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let (mut total, mut i) = (0usize, 0usize);
            loop {
                let want = 1 + (i * 389) % 700;
                i += 1;
                let n = s.read(&mut buf[..want]).unwrap();
                if n == 0 {
                    break;
                }
                for (k, b) in buf[..n].iter().enumerate() {
                    assert_eq!(*b, ((total + k) % 251) as u8, "byte {}", total + k);
                }
                total += n;
                if i % 97 == 0 {
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
            let _ = done_tx.send(total);
        });
        let host = client.host();
        std::thread::spawn(move || {
            let mut c = host
                .connect_blocking(SocketAddrV4::new(IP_A, 81), Duration::from_secs(30))
                .unwrap();
            let data: Vec<u8> = (0..BYTES).map(|k| (k % 251) as u8).collect();
            c.write_all(&data).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            // Hold the connection until the reader is done.
            let mut rest = Vec::new();
            let _ = c.read_to_end(&mut rest);
        });
        let got = done
            .recv_timeout(Duration::from_secs(120))
            .expect("the transfer stalled (or the reader failed)");
        assert_eq!(got, BYTES);
        server.stop();
        client.stop();
    }
}

#[test]
fn fused_topology_runs_every_task_on_the_callers_thread() {
    let t = Topology::fused();
    assert!(t.caller_driven);
    assert_eq!(t.validate(), Ok(()));
    let stats = echo_many(t, 4, 256 * 1024);
    // One worker's worth of tasks, all of which ran.
    assert!(stats.tasks.iter().all(|r| r.worker == 0), "{stats:?}");
    assert!(stats.tasks.iter().all(|r| r.busy_polls > 0), "{stats:?}");
}

#[test]
fn a_caller_driven_layout_with_two_groups_runs_its_task_graph() {
    // Two flow groups do not map onto the inline engine: the tasks and their rings run on
    // the caller's thread, one report per task.
    let t = common::script::two_groups_on_the_callers_thread();
    assert!(!t.maps_inline());
    let stats = echo_many(t.clone(), 4, 128 * 1024);
    assert_eq!(stats.tasks.len(), t.tasks().len());
    assert!(stats.worker_cpu.is_empty(), "no worker threads");
    // Each task's time on the caller's thread is sampled: the tasks that carried the echo
    // report some.
    for task in [TaskRef::Io, TaskRef::Place(0)] {
        let r = stats.tasks.iter().find(|r| r.task == Some(task)).unwrap();
        assert!(r.cpu > Duration::ZERO, "{task:?} reports no time: {stats}");
        // The runs that found work are some of the sampled runs, not more.
        assert!(
            r.work > Duration::ZERO && r.work <= r.cpu,
            "{task:?}: work {:?} of {:?}",
            r.work,
            r.cpu
        );
    }
    // Some runs find nothing (the loop polls until the echo is back): work is not all.
    let (cpu, work): (Duration, Duration) = stats
        .tasks
        .iter()
        .fold((Duration::ZERO, Duration::ZERO), |(c, w), r| {
            (c + r.cpu, w + r.work)
        });
    assert!(work < cpu, "work {work:?} of {cpu:?}");
}

#[test]
fn the_fused_layout_runs_as_the_inline_engine() {
    let t = Topology::fused();
    assert!(t.maps_inline());
    let stats = echo_many(t, 4, 128 * 1024);
    assert_eq!(stats.tasks.len(), 1, "{stats}");
    // The one report carries the whole engine's stages.
    for stage in ["preprocess", "protocol", "place", "postprocess"] {
        assert!(stats.stage(stage).items_in > 0, "{stage}: {stats}");
    }
}

/// One worker that runs the whole engine as one task (`Topology::inline_worker`, what `auto`
/// picks with one free core): the echo arrives whole, the one report carries every stage, the
/// worker's CPU time is accounted to it, and an application on its own thread that blocks on
/// a read is woken. The worker parks between the rounds, and the application's doorbells
/// wake it: the count of wakes moves. (It also wakes every 50 us on its own, the in-memory
/// port having no descriptors to sleep on, so a doorbell finds it parked only part of the
/// time; the test asks for at least one.)
#[test]
fn the_inline_worker_runs_the_engine_on_one_worker_and_doorbells_wake_it() {
    let t = Topology::inline_worker();
    assert!(t.maps_inline() && !t.caller_driven);
    let stats = echo_many(t.clone(), 4, 256 * 1024);
    assert_eq!(stats.tasks.len(), 1, "{stats}");
    for stage in ["preprocess", "protocol", "place", "postprocess"] {
        assert!(stats.stage(stage).items_in > 0, "{stage}: {stats}");
    }
    assert_eq!(stats.worker_cpu.len(), 1, "{stats}");
    assert!(stats.worker_cpu[0] > Duration::ZERO, "{stats}");
    assert_eq!(stats.tasks[0].cpu, stats.worker_cpu[0], "{stats}");
    // User stages at a frame hook point on a thread of their own keep the task graph.
    assert!(!t.clone().with_rx_hooks_worker(None).maps_inline());

    let _serial = THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let (before, after, server) = echo_after_pauses(t);
    assert!(!server.is_caller_driven());
    assert!(!server.poll(), "the worker runs the engine, not the caller");
    eprintln!("inline worker wakeups: before {before:?}, after {after:?}");
    assert_eq!(after.len(), 1);
    assert!(after[0] > before[0], "{before:?} -> {after:?}");
    let st = server.stop();
    assert!(st.stage("protocol").items_in > 0, "{st}");
}

#[test]
fn auto_topology_never_has_more_workers_than_free_cores() {
    assert!(Topology::for_free_cores(0).caller_driven);
    let one = Topology::for_free_cores(1);
    assert!(!one.caller_driven);
    assert_eq!(one.workers.len(), 1);
    assert!(
        one.maps_inline(),
        "one free core: the engine as one task on it"
    );
    assert_eq!(one, Topology::inline_worker());
    // The task graph on one worker stays what `single_thread` asks for.
    assert!(!Topology::single_thread().maps_inline());
    for free in 2..=16 {
        let t = Topology::for_free_cores(free);
        assert!(!t.caller_driven);
        assert!(t.workers.len() <= free, "{free}: {t:?}");
        assert_eq!(t.validate(), Ok(()), "{free}");
        // Past the cap, more free cores add no worker: one I/O task feeds them all.
        assert_eq!(t, Topology::x86(free.min(AUTO_MAX_WORKERS)), "{free}");
    }
    assert_eq!(Topology::for_free_cores(15).workers.len(), AUTO_MAX_WORKERS);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t = Topology::auto(1);
    assert_eq!(t, Topology::for_free_cores(cores - 1));
}

/// A server laid out as `topology` and a client on its own runtime thread, over an
/// in-memory link; 20 rounds of a 64-byte echo between blocking streams, each after a pause
/// long enough for every idle worker to park (a wake counts only where its worker had
/// parked), and the server's application pausing as long again before it answers (so that
/// its doorbell finds the worker parked, not still spinning after the delivery). Returns
/// the server's wakeups per worker before and after the rounds, and the server.
fn echo_after_pauses(topology: Topology) -> (Vec<u64>, Vec<u64>, Threaded) {
    let (sp, cp) = MemLink::pair(Impairments::none());
    let clock = flextoe::time::SystemClock::new();
    let server = Threaded::spawn(engine_config(MAC_A, IP_A), sp, topology, clock).unwrap();
    let client = flextoe::pipeline::Runtime::spawn(
        Engine::new(engine_config(MAC_B, IP_B), cp).unwrap(),
        clock,
    )
    .unwrap();
    let listener = server.host().listen(7, 4).unwrap();
    let mut c = client
        .host()
        .connect_blocking(SocketAddrV4::new(IP_A, 7), Duration::from_secs(30))
        .unwrap();
    let mut s = listener
        .accept_timeout(Duration::from_secs(30))
        .unwrap()
        .unwrap();
    let before = server.wakeups();
    let mut buf = [0u8; 64];
    for round in 0..20u8 {
        std::thread::sleep(Duration::from_millis(20));
        c.write_all(&[round; 64]).unwrap();
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [round; 64]);
        std::thread::sleep(Duration::from_millis(2));
        s.write_all(&buf).unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [round; 64]);
    }
    let after = server.wakeups();
    drop(s);
    drop(c);
    let _ = client.stop();
    (before, after, server)
}

#[test]
fn idle_workers_park_and_producers_wake_them() {
    let _serial = THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    // Two workers: the I/O task on one, the flow group and replicas on the other, which
    // only producers wake.
    let (before, after, _server) = echo_after_pauses(Topology::x86(2));
    eprintln!("wakeups per worker: before {before:?}, after {after:?}");
    assert!(after[1] >= before[1] + 5, "{before:?} -> {after:?}");
}

#[test]
fn each_task_reports_the_cpu_time_it_used() {
    let mut t = Topology::x86(2);
    for w in t.workers.iter_mut() {
        w.core = None;
    }
    let st = echo_many(t, 4, 400_000);
    assert_eq!(st.worker_cpu.len(), 2, "{st}");
    for (w, cpu) in st.worker_cpu.iter().enumerate() {
        assert!(*cpu > Duration::ZERO, "worker {w} used no CPU");
        // Every task of the worker reports (no user stages here), and their shares add up
        // to the thread's CPU time.
        let sum: Duration = st
            .tasks
            .iter()
            .filter(|r| r.worker == w)
            .map(|r| r.cpu)
            .sum();
        let ratio = sum.as_secs_f64() / cpu.as_secs_f64();
        assert!(
            (0.98..=1.0001).contains(&ratio),
            "worker {w}: {sum:?} of {cpu:?}"
        );
    }
    // The tasks that carried the echo spent time on it.
    for task in [TaskRef::Io, TaskRef::Group(0), TaskRef::Place(0)] {
        let r = st.tasks.iter().find(|r| r.task == Some(task)).unwrap();
        assert!(r.cpu > Duration::ZERO, "{task:?} reports no CPU time: {st}");
        // And some of it in runs that found work.
        assert!(r.work > Duration::ZERO, "{task:?} reports no work: {st}");
    }
}
