//! Data-path scaling with the client taken off the CPUs: one server engine against the
//! trace-driven port (`backends::trace`, which replays pre-built client frames for about 40 ns
//! each and absorbs what the engine sends), on the inline runtime and on the threaded runtime
//! laid out by `Topology::auto(1)` (the cores left after the application's thread), in
//! interleaved rounds.
//!
//! ```text
//! cargo run --release --example trace_scaling [-- --secs 1 --rounds 5]
//! ```
//!
//! For each workload and runtime it prints the throughput (median, min..max over the
//! rounds), the CPU time used per second of wall time (the application thread's thread CPU
//! clock, plus every worker thread's, which `ThreadedStats::worker_cpu` reports; spinning
//! counts), and the throughput per CPU-second; for the threaded runtime also the CPUs each
//! task kept busy (`TaskReport::cpu`: its worker's CPU time split by sampled run times). Workloads, one connection each: bulk (1460-byte
//! segments into a sink) and 64-byte RPCs with 16 outstanding (the application echoes).
//! Closed loop: the port sends what the engine's window and the RPC depth allow.

#[path = "support/trace_run.rs"]
mod trace_run;

use flextoe::pipeline::Topology;
use trace_run::{arg, measure, workloads, Run, Runtime};

fn main() {
    let secs: f64 = arg("--secs", 1.0);
    let rounds: usize = arg("--rounds", 5);
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
    let runtimes = [
        ("inline", Runtime::Inline),
        ("threaded", Runtime::Threaded(t)),
    ];
    for (name, workload, unit, scale) in workloads() {
        let mut results: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
        for round in 0..rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                results[i].push(measure(&runtimes[i].1, workload, secs));
            }
        }
        let mut medians = [0.0; 2];
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
                    .map(|(task, cpu, _)| format!("{task:?} {:.2}", cpu / med.wall))
                    .collect();
                println!(
                    "  {:<26} {:<9} CPUs per task (median round): {}",
                    "",
                    "",
                    tasks.join(", ")
                );
            }
        }
        println!(
            "  {name:<26} threaded / inline {:.2}",
            medians[1] / medians[0].max(1e-9)
        );
    }
}
