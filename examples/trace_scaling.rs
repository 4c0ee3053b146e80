//! Data-path scaling with the client taken off the CPUs: one server engine against the
//! trace-driven port (`backends::trace`, which replays pre-built client frames for about 40 ns
//! each and absorbs what the engine sends), on the inline runtime and on the threaded runtime
//! laid out by `Topology::auto(1)` (the cores left after the application's thread), in
//! interleaved rounds.
//!
//! ```text
//! cargo run --release --example trace_scaling [-- --secs 1 --rounds 5 --workers 2,4,8]
//! ```
//!
//! `--workers` adds, for each count n, the threaded runtime laid out by
//! `Topology::x86(n)` (n worker threads), measured in the same interleaved rounds:
//! on a machine with many cores it shows how far one connection gains from more workers.
//! `inline` in the list adds `Topology::inline_worker()` (the whole engine as one task on
//! one worker thread, what `auto` picks with one free core).
//! `--layouts` adds layouts written out by hand (their tasks run as a task graph, with rings
//! between them, even where every task is on one worker): workers separated by `/`, each a
//! comma-separated list of tasks (`io`, `preN`, `groupN`, `placeN`, `postN`), layouts
//! separated by `;`. For example `io,pre0,post0/group0/place0` puts the I/O task with a
//! preprocess and a postprocess replica on one worker, the flow group and the place replica
//! on a worker each.
//!
//! For each workload and runtime it prints the throughput (median, min..max over the
//! rounds), the CPU time used per second of wall time (the application thread's thread CPU
//! clock, plus every worker thread's, which `ThreadedStats::worker_cpu` reports; spinning
//! counts), and the throughput per CPU-second; for the threaded runtime also the CPUs each
//! task kept busy (`TaskReport::cpu`: its worker's CPU time split by sampled run times), and
//! in brackets about how much of it went to runs that found work (`TaskReport::work`,
//! sampled wall time: an idle worker spins, and its spinning counts in the first figure). Workloads, one connection
//! each: bulk (1460-byte segments into a sink) and 64-byte RPCs with 16 outstanding (the
//! application echoes).
//! Closed loop: the port sends what the engine's window and the RPC depth allow.
//!
//! Runs with worker threads are taken between two probes of the cross-core round trip of
//! one cache line and repeated while a probe reads over three times the usual one (on a
//! virtual machine the host may run the virtual CPUs far apart for a while; see
//! `scaling_model`); the last line says how many were repeated. Only the first two cores the
//! process may use are probed, whatever cores a layout's workers run on.

#[path = "support/hops.rs"]
mod hops;
#[path = "support/trace_run.rs"]
mod trace_run;

use flextoe::pipeline::{TaskRef, Topology};
use trace_run::{arg, measure, workloads, Run, Runtime};

fn main() {
    let secs: f64 = arg("--secs", 1.0);
    let rounds: usize = arg("--rounds", 5);
    let extra: String = arg("--workers", String::new());
    let extra: Vec<(String, Topology)> = extra
        .split(',')
        .filter(|w| !w.is_empty())
        .map(|w| match (w.trim(), w.trim().parse()) {
            ("inline", _) => ("inline worker".to_string(), Topology::inline_worker()),
            (_, Ok(n)) if n > 0 => (format!("{n} workers"), Topology::x86(n)),
            _ => panic!("--workers: a list of counts above zero or `inline`, as 2,4,8,inline"),
        })
        .collect();
    let t = Topology::auto(1);
    println!(
        "server engine against the trace port; threaded: Topology::auto(1) = {}; {} cores on this machine",
        if t.caller_driven {
            if t.maps_inline() {
                "the inline mapping (the whole engine as one task) on the application's thread"
                    .to_string()
            } else {
                "every task on the application's thread".to_string()
            }
        } else if t.maps_inline() {
            "the inline mapping (the whole engine as one task) on 1 worker thread".to_string()
        } else {
            format!(
                "{} worker thread(s) {:?}",
                t.workers.len(),
                t.workers.iter().map(|w| w.tasks.clone()).collect::<Vec<_>>()
            )
        },
        flextoe::pipeline::topology::usable_cores().len()
    );
    println!("{rounds} interleaved rounds of {secs} s; median (min..max)");
    // Runs with worker threads are watched: see `hops::Watch`.
    let mut watch = hops::Watch::new();
    let mut runtimes = vec![
        ("inline".to_string(), Runtime::Inline),
        ("threaded".to_string(), Runtime::Threaded(t)),
    ];
    for (name, t) in extra {
        runtimes.push((name, Runtime::Threaded(t)));
    }
    let layouts: String = arg("--layouts", String::new());
    for spec in layouts.split(';').filter(|l| !l.is_empty()) {
        runtimes.push((spec.to_string(), Runtime::Threaded(layout(spec))));
    }
    for (name, workload, unit, scale) in workloads() {
        let mut results: Vec<Vec<Run>> = runtimes.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            // Alternate the order of the runtimes from round to round.
            let mut order: Vec<usize> = (0..runtimes.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let rt = &runtimes[i].1;
                let workers = matches!(rt, Runtime::Threaded(t) if !t.caller_driven);
                results[i].push(watch.steady(workers, || measure(rt, workload, secs)));
            }
        }
        let mut medians = vec![0.0; runtimes.len()];
        for (i, (rt, _)) in runtimes.iter().enumerate() {
            let r = &mut results[i];
            r.sort_by(|a, b| a.rate.total_cmp(&b.rate));
            let (lo, med, hi) = (&r[0], &r[r.len() / 2], &r[r.len() - 1]);
            medians[i] = med.rate;
            println!(
                "  {name:<26} {rt:<9} {:>8.3} ({:.3}..{:.3}) {unit}, {:.2} CPUs busy, {:.3} {unit} per CPU",
                med.rate * scale,
                lo.rate * scale,
                hi.rate * scale,
                med.cpus,
                med.rate * scale / med.cpus.max(1e-9),
            );
            if !med.tasks.is_empty() {
                let tasks: Vec<String> = med
                    .tasks
                    .iter()
                    .zip(&med.work)
                    .map(|((task, cpu, _), work)| {
                        // The inline mapping's one task is the whole engine.
                        let name = if med.tasks.len() == 1 {
                            "whole engine".to_string()
                        } else {
                            format!("{task:?}")
                        };
                        format!("{name} {:.2} ({:.2})", cpu / med.wall, work / med.wall)
                    })
                    .collect();
                println!(
                    "  {:<26} {:<9} CPUs per task, in brackets the part spent in runs that found work (median round): {}",
                    "",
                    "",
                    tasks.join(", ")
                );
            }
        }
        for (i, (rt, _)) in runtimes.iter().enumerate().skip(1) {
            println!(
                "  {name:<26} {rt} / inline {:.2}",
                medians[i] / medians[0].max(1e-9)
            );
        }
    }
    println!("{}", watch.summary());
}

/// A layout written out by hand (see the module's docs): `io,pre0,post0/group0/place0`.
fn layout(spec: &str) -> Topology {
    let workers: Vec<Vec<TaskRef>> = spec
        .split('/')
        .map(|w| {
            w.split(',')
                .map(|t| {
                    let t = t.trim();
                    let digits = t.trim_start_matches(|c: char| c.is_ascii_alphabetic());
                    let n: Option<usize> = (!digits.is_empty()).then(|| {
                        digits.parse().unwrap_or_else(|_| {
                            panic!("--layouts {spec:?}: {t:?} is not a task and its number")
                        })
                    });
                    match (&t[..t.len() - digits.len()], n) {
                        ("io", None) => TaskRef::Io,
                        ("pre", Some(n)) => TaskRef::Preprocess(n),
                        ("group", Some(n)) => TaskRef::Group(n),
                        ("place", Some(n)) => TaskRef::Place(n),
                        ("post", Some(n)) => TaskRef::Postprocess(n),
                        _ => panic!(
                            "--layouts {spec:?}: unknown task {t:?} (io, preN, groupN, placeN, postN)"
                        ),
                    }
                })
                .collect()
        })
        .collect();
    // Replicas of a kind: one more than the highest number a task of it has.
    let count = |kind: fn(usize) -> TaskRef| {
        let all: Vec<TaskRef> = workers.iter().flatten().copied().collect();
        (0..256)
            .rev()
            .find(|&n| all.contains(&kind(n)))
            .map_or(0, |n| n + 1)
    };
    let mut t = Topology::with_counts(
        count(TaskRef::Preprocess),
        count(TaskRef::Group),
        count(TaskRef::Place),
        count(TaskRef::Postprocess),
        workers.len(),
        false,
    );
    for (w, tasks) in t.workers.iter_mut().zip(workers) {
        w.tasks = tasks;
    }
    if let Err(e) = t.validate() {
        panic!("--layouts {spec:?}: {e:?}");
    }
    t
}
