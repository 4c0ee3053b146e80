//! One server engine against the trace-driven port (`backends::trace`): the application,
//! and one timed run of it on a given runtime. Shared by `trace_scaling` and
//! `scaling_model`.

#![allow(dead_code)]

use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::{Duration, Instant as WallInstant};

use cpu_time::ThreadTime;
use flextoe::backends::trace::{Mode, TraceConfig, TracePort, TraceStats, Workload};
use flextoe::pipeline::{
    Engine, EngineConfig, Pipeline, TaskRef, Threaded, ThreadedStats, Topology,
};
use flextoe::time::{Clock, SystemClock};
use flextoe::wire::MacAddr;
use flextoe::{Listener, Stream};

const SERVER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const CLIENT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const PORT: u16 = 5001;

/// The value after `name` on the command line, or `default`.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The workloads, one connection each: bulk (1460-byte segments into a sink) and 64-byte
/// RPCs with 16 outstanding (the application echoes). Name, workload, unit, scale from
/// units per second to that unit.
pub fn workloads() -> [(&'static str, Workload, &'static str, f64); 2] {
    [
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
    ]
}

/// The runtime a run uses.
#[derive(Clone, Debug)]
pub enum Runtime {
    /// The inline engine, polled by the application's thread.
    Inline,
    /// The threaded runtime with this layout (caller-driven ones polled by the
    /// application's thread).
    Threaded(Topology),
}

/// The server application: reads into a sink, or echoes.
struct App {
    listener: Listener,
    streams: Vec<(Stream, Vec<u8>)>,
    buf: Vec<u8>,
    echo: bool,
    /// Calls that moved bytes: reads, writes.
    calls: Rc<Cell<(u64, u64)>>,
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
                        count(&self.calls, 0, n);
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
                    count(&self.calls, n, 0);
                    if self.echo {
                        let w = match s.write(&self.buf[..n]) {
                            Ok(w) => {
                                count(&self.calls, 0, w);
                                w
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
                            Err(e) => panic!("server write: {e}"),
                        };
                        pending.extend_from_slice(&self.buf[w..n]);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("server write: {e}"),
            }
        }
        busy
    }
}

/// Count a read and a write call that moved bytes.
fn count(calls: &Cell<(u64, u64)>, read: usize, written: usize) {
    let (r, w) = calls.get();
    calls.set((r + u64::from(read > 0), w + u64::from(written > 0)));
}

/// What one timed run measured.
pub struct Run {
    /// Units (bytes delivered for bulk, responses for RPC) per second of wall time.
    pub rate: f64,
    /// Units counted.
    pub units: f64,
    /// Wall time of the timed part, seconds.
    pub wall: f64,
    /// CPU seconds per wall second: the application thread's CPU clock plus the workers'.
    pub cpus: f64,
    /// The application thread's CPU time, seconds (it also runs a caller-driven engine).
    pub app_cpu: f64,
    /// Threaded runtime only: each task's CPU time in the timed part (`TaskReport::cpu`,
    /// seconds) and how many times it ran.
    pub tasks: Vec<(TaskRef, f64, u64)>,
    /// Threaded runtime only, one per entry of `tasks`: the time of its runs that found work
    /// in the timed part (`TaskReport::work`, seconds).
    pub work: Vec<f64>,
    /// Trace port counters over the timed part.
    pub trace: TraceStats,
    /// Threaded runtime only: the statistics at the end (for its stage counters).
    pub stats: Option<ThreadedStats>,
    /// Protocol results over the timed part (threaded runtime only).
    pub results: f64,
    /// The application's read and write calls that moved bytes, over the timed part.
    pub app_reads: f64,
    pub app_writes: f64,
}

fn delta(a: &TraceStats, b: &TraceStats) -> TraceStats {
    TraceStats {
        frames_in: b.frames_in - a.frames_in,
        frames_out: b.frames_out - a.frames_out,
        data_frames: b.data_frames - a.data_frames,
        bytes_sent: b.bytes_sent - a.bytes_sent,
        bytes_delivered: b.bytes_delivered - a.bytes_delivered,
        responses: b.responses - a.responses,
        requests: b.requests - a.requests,
        ..*b
    }
}

/// Run the server on `rt` against the trace port in closed loop, warm up for 200 ms, then
/// time `secs` seconds.
pub fn measure(rt: &Runtime, workload: Workload, secs: f64) -> Run {
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
        Runtime::Threaded(t) => (
            None,
            Some(
                Pipeline::builder(cfg, port)
                    .threaded(t.clone(), clock)
                    .expect("threaded engine"),
            ),
        ),
    };
    let host = match (&engine, &threaded) {
        (Some(e), _) => e.host(),
        (_, Some(t)) => t.host(),
        _ => unreachable!("one runtime"),
    };
    let calls = Rc::new(Cell::new((0u64, 0u64)));
    let mut app = App {
        listener: host.listen(PORT, 4).expect("listen"),
        streams: Vec::new(),
        buf: vec![0u8; 256 * 1024],
        echo,
        calls: calls.clone(),
    };
    handle.resume();
    let count = |s: &TraceStats| {
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
    while count(&handle.snapshot()) == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "no traffic");
        step(&mut engine);
    }
    let run = |engine: &mut Option<Engine<TracePort>>,
               step: &mut dyn FnMut(&mut Option<Engine<TracePort>>) -> bool,
               d: Duration| {
        // The clock is read once per 16 steps: a read costs about as much as a step that
        // finds nothing to do.
        let t0 = WallInstant::now();
        while t0.elapsed() < d {
            for _ in 0..16 {
                step(engine);
            }
        }
    };
    run(&mut engine, &mut step, Duration::from_millis(200));
    let snap = |t: &Option<Threaded>| t.as_ref().map(Threaded::stats);
    let workers_cpu = |s: &Option<ThreadedStats>| -> Duration {
        s.as_ref()
            .map_or(Duration::ZERO, |s| s.worker_cpu.iter().sum())
    };
    let results =
        |s: &Option<ThreadedStats>| s.as_ref().map_or(0, |s| s.stage("protocol").items_out) as f64;
    let c0 = calls.get();
    let (s0, st0, cpu0, t0) = (
        handle.snapshot(),
        snap(&threaded),
        ThreadTime::now(),
        WallInstant::now(),
    );
    run(&mut engine, &mut step, Duration::from_secs_f64(secs));
    let (app_cpu, wall) = (cpu0.elapsed(), t0.elapsed().as_secs_f64());
    let (s1, st1, c1) = (handle.snapshot(), snap(&threaded), calls.get());
    let cpu = (app_cpu + workers_cpu(&st1).saturating_sub(workers_cpu(&st0))).as_secs_f64() / wall;
    let tasks = match (&st0, &st1) {
        (Some(a), Some(b)) => b
            .tasks
            .iter()
            .zip(&a.tasks)
            .map(|(y, x)| {
                (
                    y.task.unwrap_or(TaskRef::Io),
                    y.cpu.saturating_sub(x.cpu).as_secs_f64(),
                    y.polls - x.polls,
                )
            })
            .collect(),
        _ => Vec::new(),
    };
    let work = match (&st0, &st1) {
        (Some(a), Some(b)) => b
            .tasks
            .iter()
            .zip(&a.tasks)
            .map(|(y, x)| y.work.saturating_sub(x.work).as_secs_f64())
            .collect(),
        _ => Vec::new(),
    };
    let trace = delta(&s0, &s1);
    let units = count(&trace) as f64;
    Run {
        rate: units / wall,
        units,
        wall,
        cpus: cpu,
        app_cpu: app_cpu.as_secs_f64(),
        tasks,
        work,
        results: results(&st1) - results(&st0),
        app_reads: (c1.0 - c0.0) as f64,
        app_writes: (c1.1 - c0.1) as f64,
        trace,
        stats: st1,
    }
}
