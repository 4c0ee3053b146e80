//! Data-path parallelism, measured: the same server engine on the inline runtime (one core)
//! and on the threaded runtime laid out by `Topology::auto(2)` (the cores left after the
//! server's application thread and the client's thread; with none left, every task runs
//! on the application's thread through `Threaded::poll`), in one run, against the same
//! client (an inline engine with a load generator on its own thread, pinned to the last core;
//! the server application thread is pinned to the first), over the zero-copy
//! in-memory link. Prints throughput and the threaded / inline ratio (taken in each round
//! against that round's inline run, which ran just before or after it: median and min..max
//! over the rounds) for:
//!
//! * one connection, RPC: 64-byte requests and responses, 64 outstanding;
//! * one connection, bulk: the client streams, the server reads;
//! * the same two with 64 connections.
//!
//! ```text
//! cargo run --release --example parallel [-- --secs 1 --rounds 5 --workers 4,8]
//! ```
//!
//! `--workers` adds, for each count n, the threaded runtime laid out by `Topology::x86(n)`
//! (n worker threads), measured in the same interleaved rounds; `inline` in the list adds
//! `Topology::inline_worker()` (the whole engine as one task on one worker thread, what
//! `auto` picks with one free core).

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flextoe::backends::arena_link::{ArenaLink, ArenaPort};
use flextoe::host::{Context, Host, Listener, Stream};
use flextoe::pipeline::{Engine, EngineConfig, Threaded, Topology};
use flextoe::time::{Clock, SystemClock};
use flextoe::wire::MacAddr;

const SERVER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
const CLIENT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const PORT: u16 = 9000;
const MSG: usize = 64;
const OUTSTANDING: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Workload {
    Rpc,
    Bulk,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Inline,
    /// `None`: [`topology`]; `Some(layout)`: one of `--workers`.
    Threaded(Option<Extra>),
}

/// A layout `--workers` asks for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Extra {
    /// `Topology::x86(n)`.
    X86(usize),
    /// `Topology::inline_worker()`.
    InlineWorker,
}

impl Extra {
    fn topology(self) -> Topology {
        match self {
            Extra::X86(n) => Topology::x86(n),
            Extra::InlineWorker => Topology::inline_worker(),
        }
    }

    fn name(self) -> String {
        match self {
            Extra::X86(n) => format!("{n} workers"),
            Extra::InlineWorker => "inline worker".to_string(),
        }
    }
}

fn config(mac: MacAddr, ip: Ipv4Addr) -> EngineConfig {
    let mut c = EngineConfig::new(mac, ip);
    c.control.max_flows = 256;
    c
}

/// The server application: echo (RPC) or sink (bulk) on every accepted stream.
struct ServerApp {
    listener: Listener,
    streams: Vec<(Stream, Vec<u8>)>,
    ctx: Context,
    workload: Workload,
    buf: Vec<u8>,
    received: Arc<AtomicU64>,
}

impl ServerApp {
    fn step(&mut self) -> bool {
        let mut busy = false;
        while let Ok(Some(mut s)) = self.listener.try_accept() {
            s.set_nonblocking(true);
            let _ = s.register(&self.ctx, self.streams.len() as u64);
            self.streams.push((s, Vec::new()));
            busy = true;
        }
        for (s, pending) in self.streams.iter_mut() {
            if !pending.is_empty() {
                match s.write(pending) {
                    Ok(n) => {
                        pending.drain(..n);
                        busy = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                    Err(_) => continue,
                }
                if !pending.is_empty() {
                    continue;
                }
            }
            loop {
                match s.read(&mut self.buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        busy = true;
                        self.received.fetch_add(n as u64, Ordering::Relaxed);
                        if self.workload == Workload::Rpc {
                            match s.write(&self.buf[..n]) {
                                Ok(w) if w == n => {}
                                Ok(w) => {
                                    pending.extend_from_slice(&self.buf[w..n]);
                                    break;
                                }
                                Err(_) => {
                                    pending.extend_from_slice(&self.buf[..n]);
                                    break;
                                }
                            }
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        busy
    }
}

/// The client: an inline engine and a load generator; counts completed RPCs.
fn client_thread(
    mut engine: Engine<ArenaPort>,
    conns: usize,
    workload: Workload,
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicU64>,
    clock: SystemClock,
) {
    let host = engine.host();
    let mut streams: Vec<(Stream, usize, usize)> = (0..conns)
        .map(|_| {
            let mut s = host
                .connect(SocketAddrV4::new(SERVER_IP, PORT))
                .expect("connect");
            s.set_nonblocking(true);
            (s, 0, 0)
        })
        .collect();
    let req = [0x5au8; MSG];
    let bulk = vec![0xa5u8; 64 * 1024];
    let mut buf = vec![0u8; 256 * 1024];
    while !stop.load(Ordering::Relaxed) {
        engine.poll(clock.now());
        for (s, outstanding, partial) in streams.iter_mut() {
            match workload {
                Workload::Rpc => {
                    while *outstanding < OUTSTANDING {
                        match s.write(&req) {
                            Ok(MSG) => *outstanding += 1,
                            _ => break,
                        }
                    }
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        *partial += n;
                        let done = *partial / MSG;
                        *partial %= MSG;
                        *outstanding -= done;
                        completed.fetch_add(done as u64, Ordering::Relaxed);
                    }
                }
                Workload::Bulk => {
                    while let Ok(n) = s.write(&bulk) {
                        if n == 0 {
                            break;
                        }
                    }
                }
            }
        }
    }
}

fn measure(mode: Mode, workload: Workload, conns: usize, secs: f64) -> f64 {
    let clock = SystemClock::new();
    let (sp, cp) = ArenaLink::pair(64 * 1024).expect("link");
    let client = Engine::new(config(CLIENT_MAC, CLIENT_IP), cp).expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));

    let server_stop = stop.clone();
    let server_received = received.clone();
    let server: std::thread::JoinHandle<()> = match mode {
        Mode::Inline => {
            let mut engine = Engine::new(config(SERVER_MAC, SERVER_IP), sp).expect("server");
            let listener = engine.host().listen(PORT, 128).expect("listen");
            std::thread::spawn(move || {
                pin(0, false);
                let mut app = ServerApp {
                    listener,
                    streams: Vec::new(),
                    ctx: Context::new(4096),
                    workload,
                    buf: vec![0u8; 256 * 1024],
                    received: server_received,
                };
                while !server_stop.load(Ordering::Relaxed) {
                    engine.poll(clock.now());
                    app.step();
                }
            })
        }
        Mode::Threaded(workers) => {
            let t = workers.map_or_else(topology, Extra::topology);
            let rt = Threaded::spawn(config(SERVER_MAC, SERVER_IP), sp, t, clock)
                .expect("threaded server");
            let host: Host = rt.host();
            let listener = host.listen(PORT, 128).expect("listen");
            std::thread::spawn(move || {
                // With no core to spare the engine runs here: on the server's core.
                if rt.is_caller_driven() {
                    pin(0, false);
                }
                let mut app = ServerApp {
                    listener,
                    streams: Vec::new(),
                    ctx: Context::new(4096),
                    workload,
                    buf: vec![0u8; 256 * 1024],
                    received: server_received,
                };
                let mut events = Vec::new();
                while !server_stop.load(Ordering::Relaxed) {
                    // Runs the engine here when no core was left for it (a no-op otherwise).
                    let engine_busy = rt.poll();
                    if !app.step() && !engine_busy && !rt.is_caller_driven() {
                        app.ctx.wait(Some(Duration::from_micros(200)));
                        events.clear();
                        app.ctx.poll(&mut events);
                    }
                }
                drop(app);
                drop(rt);
            })
        }
    };
    let (cstop, ccompleted) = (stop.clone(), completed.clone());
    let client = std::thread::spawn(move || {
        pin(0, true);
        client_thread(client, conns, workload, cstop, ccompleted, clock)
    });

    std::thread::sleep(Duration::from_millis(500));
    let (c0, r0, t0) = (
        completed.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (c1, r1, el) = (
        completed.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
    );
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client thread");
    server.join().expect("server thread");
    match workload {
        Workload::Rpc => (c1 - c0) as f64 / el,
        Workload::Bulk => (r1 - r0) as f64 * 8.0 / el / 1e9,
    }
}

/// Pin the calling thread to core `i` of this machine (counted from the end when
/// `from_end`), so that the client and the server application never share a core.
fn pin(i: usize, from_end: bool) {
    let cores = flextoe::pipeline::topology::usable_cores();
    if cores.len() >= 2 {
        let id = if from_end {
            cores[cores.len() - 1 - i]
        } else {
            cores[i]
        };
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
}

/// The threaded server's layout: the cores left after the server's application thread and
/// the client's thread.
fn topology() -> Topology {
    Topology::auto(2)
}

fn main() {
    let secs: f64 = std::env::args()
        .skip_while(|a| a != "--secs")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let t = topology();
    println!(
        "server data path: inline runtime vs threaded runtime with Topology::auto(2): {} ({:?}); client: inline engine on its own thread; {} cores on this machine",
        if t.maps_inline() && t.caller_driven {
            "no core to spare, the inline mapping (the whole engine as one task) on the application's thread".to_string()
        } else if t.maps_inline() {
            "one core to spare, the inline mapping (the whole engine as one task) on 1 worker thread".to_string()
        } else if t.caller_driven {
            "no core to spare, every task on the application's thread".to_string()
        } else {
            format!("{} worker threads", t.workers.len())
        },
        t.workers.iter().map(|w| w.tasks.clone()).collect::<Vec<_>>(),
        flextoe::pipeline::topology::usable_cores().len()
    );
    let rounds: usize = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let workers: String = std::env::args()
        .skip_while(|a| a != "--workers")
        .nth(1)
        .unwrap_or_default();
    let mut modes = vec![Mode::Inline, Mode::Threaded(None)];
    modes.extend(workers.split(',').filter(|w| !w.is_empty()).map(|w| {
        match (w.trim(), w.trim().parse()) {
            ("inline", _) => Mode::Threaded(Some(Extra::InlineWorker)),
            (_, Ok(n)) if n > 0 => Mode::Threaded(Some(Extra::X86(n))),
            _ => panic!("--workers: counts above zero or `inline`, as 4,8,inline"),
        }
    }));
    println!("{rounds} interleaved rounds of {secs} s per mode (the order alternates); median (min..max); each ratio is taken per round, against that round's inline run");
    for (workload, conns) in [
        (Workload::Rpc, 1),
        (Workload::Bulk, 1),
        (Workload::Rpc, 64),
        (Workload::Bulk, 64),
    ] {
        let mut results: Vec<Vec<f64>> = modes.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            // Alternate the order of the modes from round to round.
            let mut order: Vec<usize> = (0..modes.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                results[i].push(measure(modes[i], workload, conns, secs));
            }
        }
        let unit = match workload {
            Workload::Rpc => "RPC/s",
            Workload::Bulk => "Gbit/s",
        };
        let fmt = |v: &[f64]| {
            let (med, lo, hi) = median_min_max(v);
            let f = |x: f64| match workload {
                Workload::Rpc => format!("{:.0}", x),
                Workload::Bulk => format!("{:.2}", x),
            };
            format!("{} ({}..{}) {unit}", f(med), f(lo), f(hi))
        };
        // Each round's ratio against that round's inline run (the two ran back to back, so
        // a slow stretch of the machine moves both): median (min..max) over the rounds.
        let ratio = |r: &[f64]| {
            let per_round: Vec<f64> = r
                .iter()
                .zip(&results[0])
                .map(|(x, i)| x / i.max(1e-9))
                .collect();
            let (med, lo, hi) = median_min_max(&per_round);
            format!("{med:.2} ({lo:.2}..{hi:.2})")
        };
        let mut line = format!(
            "{:<5} {:>2} conn: inline {:<36} threaded {:<36} threaded/inline {}",
            format!("{workload:?}").to_lowercase(),
            conns,
            fmt(&results[0]),
            fmt(&results[1]),
            ratio(&results[1])
        );
        for (mode, r) in modes.iter().zip(results.iter()).skip(2) {
            let Mode::Threaded(Some(x)) = mode else {
                continue;
            };
            line += &format!("; {} {}, /inline {}", x.name(), fmt(r), ratio(r));
        }
        println!("{line}");
    }
}

/// Median, min and max of `v` (not empty).
fn median_min_max(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    (s[s.len() / 2], s[0], s[s.len() - 1])
}
