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

use std::io::{ErrorKind, Read, Write};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant as WallInstant};

use cpu_time::ThreadTime;
use flextoe::backends::trace::{Mode, TraceConfig, TracePort, TraceStatsHandle, Workload};
use flextoe::pipeline::{Engine, EngineConfig, Pipeline, TaskRef, Threaded, Topology};
use flextoe::time::{Clock, SystemClock};
use flextoe::wire::MacAddr;
use flextoe::{Listener, Stream};

const SERVER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const CLIENT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const PORT: u16 = 5001;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runtime {
    Inline,
    Threaded,
}

/// The server application: reads into a sink, or echoes.
struct App {
    listener: Listener,
    streams: Vec<(Stream, Vec<u8>)>,
    buf: Vec<u8>,
    echo: bool,
}

impl App {
    fn step(&mut self) -> bool {
        let mut busy = false;
        while let Ok(Some(mut s)) = self.listener.try_accept() {
            s.set_nonblocking(true);
            self.streams.push((s, Vec::new()));
        }
        for (s, pending) in self.streams.iter_mut() {
            if !pending.is_empty() {
                match s.write(pending) {
                    Ok(n) => {
                        pending.drain(..n);
                        busy = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("server write: {e}"),
                }
                if !pending.is_empty() {
                    continue;
                }
            }
            match s.read(&mut self.buf) {
                Ok(0) => {}
                Ok(n) => {
                    busy = true;
                    if self.echo {
                        let w = match s.write(&self.buf[..n]) {
                            Ok(w) => w,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
                            Err(e) => panic!("server write: {e}"),
                        };
                        pending.extend_from_slice(&self.buf[w..n]);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("server read: {e}"),
            }
        }
        busy
    }
}

/// One measurement: (units per second, CPU seconds per wall second).
/// One round: (units per second, CPUs busy, per task of the threaded runtime: its name and
/// the CPUs it kept busy, from `TaskReport::cpu`).
type Sample = (f64, f64, Vec<(String, f64)>);

fn measure(rt: Runtime, workload: Workload, secs: f64) -> Sample {
    let cfg = EngineConfig::new(SERVER_MAC, SERVER_IP).neighbor(CLIENT_IP, CLIENT_MAC);
    let trace = TraceConfig {
        workload,
        connections: 1,
        mode: Mode::ClosedLoop,
        ..TraceConfig::new(CLIENT_MAC, CLIENT_IP, SERVER_MAC, SERVER_IP, PORT)
    };
    let port = TracePort::new(trace).expect("trace port");
    let handle = port.stats_handle();
    // No SYN before the listener exists.
    handle.pause();
    let clock = SystemClock::new();
    let echo = matches!(workload, Workload::Rpc { .. });
    let (mut engine, threaded): (Option<Engine<TracePort>>, Option<Threaded>) = match rt {
        Runtime::Inline => (Some(Engine::new(cfg, port).expect("engine")), None),
        Runtime::Threaded => (
            None,
            Some(
                Pipeline::builder(cfg, port)
                    .threaded(Topology::auto(1), clock)
                    .expect("threaded engine"),
            ),
        ),
    };
    let host = match (&engine, &threaded) {
        (Some(e), _) => e.host(),
        (_, Some(t)) => t.host(),
        _ => unreachable!("one runtime"),
    };
    let mut app = App {
        listener: host.listen(PORT, 4).expect("listen"),
        streams: Vec::new(),
        buf: vec![0u8; 256 * 1024],
        echo,
    };
    handle.resume();
    let count = |h: &TraceStatsHandle| {
        let s = h.snapshot();
        if echo {
            s.responses
        } else {
            s.bytes_delivered
        }
    };
    let mut step = |engine: &mut Option<Engine<TracePort>>| {
        match engine {
            Some(e) => {
                e.poll(clock.now());
            }
            None => {
                threaded.as_ref().map(Threaded::poll);
            }
        }
        app.step()
    };
    // Warm up until the connection moves data.
    let start = WallInstant::now();
    while count(&handle) == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "no traffic");
        step(&mut engine);
    }
    let run = |engine: &mut Option<Engine<TracePort>>,
               step: &mut dyn FnMut(&mut Option<Engine<TracePort>>) -> bool,
               d: Duration| {
        let t0 = WallInstant::now();
        while t0.elapsed() < d {
            step(engine);
        }
    };
    run(&mut engine, &mut step, Duration::from_millis(200));
    let workers_cpu = |t: &Option<Threaded>| -> Duration {
        t.as_ref()
            .map_or(Duration::ZERO, |t| t.stats().worker_cpu.iter().sum())
    };
    let tasks_cpu = |t: &Option<Threaded>| -> Vec<(String, Duration)> {
        t.as_ref().map_or(Vec::new(), |t| {
            t.stats()
                .tasks
                .iter()
                .map(|r| (format!("{:?}", r.task.unwrap_or(TaskRef::Io)), r.cpu))
                .collect()
        })
    };
    let (c0, cpu0, w0, k0, t0) = (
        count(&handle),
        ThreadTime::now(),
        workers_cpu(&threaded),
        tasks_cpu(&threaded),
        WallInstant::now(),
    );
    run(&mut engine, &mut step, Duration::from_secs_f64(secs));
    let (c1, app_cpu, w1, k1, wall) = (
        count(&handle),
        cpu0.elapsed(),
        workers_cpu(&threaded),
        tasks_cpu(&threaded),
        t0.elapsed().as_secs_f64(),
    );
    let cpu = (app_cpu + w1.saturating_sub(w0)).as_secs_f64() / wall;
    let tasks = k1
        .into_iter()
        .zip(k0)
        .map(|((name, b), (_, a))| (name, b.saturating_sub(a).as_secs_f64() / wall))
        .collect();
    ((c1 - c0) as f64 / wall, cpu, tasks)
}

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

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
    for (name, workload, unit, scale) in [
        (
            "bulk, 1 connection",
            Workload::Bulk { segment: 1460 },
            "Gbit/s",
            8e-9,
        ),
        (
            "64 B RPC, 16 outstanding",
            Workload::Rpc {
                request: 64,
                response: 64,
                depth: 16,
            },
            "M RPC/s",
            1e-6,
        ),
    ] {
        let mut results: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
        for round in 0..rounds {
            let order = if round % 2 == 0 {
                [Runtime::Inline, Runtime::Threaded]
            } else {
                [Runtime::Threaded, Runtime::Inline]
            };
            for rt in order {
                results[rt as usize].push(measure(rt, workload, secs));
            }
        }
        let mut medians = [0.0; 2];
        for (i, rt) in [Runtime::Inline, Runtime::Threaded].into_iter().enumerate() {
            let r = &mut results[i];
            r.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (lo, med, hi) = (&r[0], &r[r.len() / 2], &r[r.len() - 1]);
            medians[i] = med.0;
            println!(
                "  {name:<26} {:<9} {:>8.3} ({:.3}..{:.3}) {unit}, {:.2} CPUs busy, {:.3} {unit} per CPU",
                format!("{rt:?}").to_lowercase(),
                med.0 * scale,
                lo.0 * scale,
                hi.0 * scale,
                med.1,
                med.0 * scale / med.1.max(1e-9),
            );
            if !med.2.is_empty() {
                let tasks: Vec<String> = med
                    .2
                    .iter()
                    .map(|(name, cpus)| format!("{name} {cpus:.2}"))
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
