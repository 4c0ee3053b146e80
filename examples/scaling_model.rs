//! A model of the threaded runtime for one connection, fed with service times measured in
//! the same run, checked against every layout that runs on this machine, then asked about
//! 4, 8 and 16 cores.
//!
//! ```text
//! cargo run --release --example scaling_model [-- --secs 0.5 --rounds 3]
//! ```
//!
//! The server runs against the trace-driven port (`backends::trace`, the client off the
//! CPUs), one connection, bulk and 64-byte RPCs with 16 outstanding. Each round measures,
//! in turn (the order alternating between rounds):
//!
//! 1. **Calibration**: the threaded runtime's task graph on the application's thread alone
//!    (caller-driven, two flow groups so that it does not map onto the inline engine). Each
//!    task's time per unit (`TaskReport::cpu`, its sampled run time, less the clock read
//!    each sample adds) is its service time; the thread's CPU time not spent in tasks is
//!    the application's. Ring hand-offs between tasks on one thread are part of the service
//!    times. The run also counts the items per unit on each edge (frames in and out,
//!    protocol results) and the application's reads and writes per unit.
//! 2. **Hand-off costs** (`support/hops.rs`): the real work items through `ring::spsc` in
//!    bursts of 32, on one thread and between two pinned threads; the difference, per item
//!    and edge, is what a ring between two cores adds (half to each end). A 256 KiB byte
//!    ring, on one thread and between two, in 64- and 1460-byte chunks: fitted to a cost per
//!    call and a cost per byte for each end, the difference is what placement's copies and
//!    the application's reads and writes add when they are on two cores.
//! 3. **The layouts it checks**: the calibration layout itself (fed with the previous
//!    round's inputs), and `Topology::auto(1)`'s task graph (on two cores: the five tasks on
//!    one worker, `Topology::single_thread`, the application on the other core; `auto(1)`
//!    itself runs the engine there as one task, `Topology::inline_worker`), and the
//!    calibration layout with a second place replica and replicated placement (gating only
//!    the predictions with replicated placement). `Topology::x86(2)` (three
//!    busy threads) needs a third core, and the inline
//!    engine is not a layout of the task graph (no rings, tags or reordering): it is measured
//!    in each round as the reference for the predictions.
//!
//! Every measurement on two cores (the `auto(1)` layout, the hand-offs and byte rings across
//! cores) is taken between two probes of the cross-core round trip of one cache line
//! (`hops::Watch`), and repeated, after a pause, while a probe reads more than three times
//! the usual one. On a virtual machine the host may run the two virtual CPUs far apart for
//! seconds to minutes (on the project's machine the round trip goes from about 60 ns to
//! about 330 ns): a run in that state, or partly in it, measures another machine than the
//! inputs it is checked against. A line at the end says how many measurements were repeated
//! and whether any was kept disturbed.
//!
//! The model: each thread's load per unit is the sum of its tasks' service times (a replica
//! takes its share of the items; a task that carries none of the connection's items, such as
//! the second flow group, costs nothing), plus what each ring to another thread adds, plus,
//! for the thread of the place replica and for the application's, what the byte rings
//! between them add when they are apart. The busiest thread sets the throughput:
//! `1 / max load`. Those byte rings are measured as placement writes the receive ring under
//! `auto(1)`: the writer wakes the reader after each write (the notify stage's full fence
//! per result, which waits for the copy's stores to reach the other core) and, between two
//! writes, spends what the other tasks took per payload-carrying segment in the calibration
//! run (with all five on one worker, as in `auto(1)`, that is the rest of its worker). The
//! transmit ring (the application writes, placement reads) and layouts that spread the
//! tasks over more workers reuse the same figures: an approximation there.
//!
//! It prints, per workload, the model's rate and the measured one for each checked layout
//! (medians, and min..max over rounds of the ratio), the median round's inputs beside what
//! each task of that round's `auto(1)` run took per unit (which shows the task a check's
//! error comes from), and, only where every check is within
//! ±15%, its prediction for 4, 8 and 16 cores: the application on one core and
//! `Topology::x86` over the rest, against the inline engine's measured rate, with the thread
//! that limits it; then, for replicated placement (`Topology::with_replicated_placement`),
//! layouts for one connection with several place replicas. Their inputs come from a one-core
//! run of the calibration layout with a second place replica lending to it: the owner's and
//! the other replica's time per unit (copies, the jobs' hand-offs, ordered publication). That
//! run is the check of those inputs (the previous round's against this one's), which gates
//! only these predictions; a parallel run needs a core per place replica. On more cores the
//! lent copies, and what a byte ring across cores adds to them, are shared among the other
//! replicas, and each job pays what a 48-byte item's hand-off across cores adds, both ways.
//! The model knows nothing about contention between the workers beyond the
//! rings (shared caches, memory bandwidth, the other threads' spinning), so a prediction is
//! an upper bound. Nor does it know what the tasks gain when the application leaves their
//! core: their service times come from the one-core calibration, where the application's
//! code and buffers share the caches with them; the `auto(1)` line shows the difference
//! (with small RPCs the tasks other than place take about a fifth less on two cores on the
//! project's machine, and the model's RPC figure for `auto(1)` comes out low by as much).

#[path = "support/hops.rs"]
mod hops;
#[path = "support/trace_run.rs"]
mod trace_run;

use std::collections::HashMap;
use std::time::Duration;

use flextoe::backends::trace::Workload;
use flextoe::buf::FrameArena;
use flextoe::pipeline::topology::LEND_MIN;
use flextoe::pipeline::{TaskRef, Topology};
use trace_run::{arg, measure, workloads, Run, Runtime};

/// The edges of the task graph a connection's items cross, and the item type measured for
/// each (by its index in `hops::kinds()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Edge {
    /// I/O to preprocess: received frames (measured as `Sequenced<Frame>`).
    IoPre,
    /// Preprocess to the flow group: `Ingress<RxWork>`.
    PreGroup,
    /// Flow group to placement: `(u64, ProtoResult)` in bursts (`ring::burst_spsc`: a vector
    /// per burst crosses, the results are read where the producer wrote them).
    GroupPlace,
    /// Placement to postprocess: `(u16, u64, ProtoResult)` in bursts (measured as
    /// `(u64, ProtoResult)` in bursts).
    PlacePost,
    /// Postprocess to I/O: `Sequenced<Frame>`.
    PostIo,
}

impl Edge {
    const ALL: [Edge; 5] = [
        Edge::IoPre,
        Edge::PreGroup,
        Edge::GroupPlace,
        Edge::PlacePost,
        Edge::PostIo,
    ];

    /// Index of the measured item type in `hops::kinds()`.
    fn kind(self) -> usize {
        match self {
            Edge::IoPre | Edge::PostIo => 3,
            Edge::PreGroup => 1,
            Edge::GroupPlace | Edge::PlacePost => 4,
        }
    }

    /// Whether a task is this edge's producer or consumer.
    fn ends(self, t: TaskRef) -> (bool, bool) {
        use TaskRef::*;
        match self {
            Edge::IoPre => (t == Io, matches!(t, Preprocess(_))),
            Edge::PreGroup => (matches!(t, Preprocess(_)), t == Group(0)),
            Edge::GroupPlace => (t == Group(0), t == Place(0)),
            Edge::PlacePost => (t == Place(0), matches!(t, Postprocess(_))),
            Edge::PostIo => (matches!(t, Postprocess(_)), t == Io),
        }
    }
}

/// What the model is fed with, in nanoseconds per unit of work as the trace port counts it
/// (a byte delivered for bulk, a response for RPC).
#[derive(Clone, Debug, Default)]
struct Inputs {
    /// Service time per unit of each task kind, from the calibration: Io, Preprocess,
    /// Group(0), Place(0), Postprocess (replicas summed).
    service: HashMap<&'static str, f64>,
    /// The application's time per unit.
    app: f64,
    /// Items per unit on each edge.
    items: HashMap<Edge, f64>,
    /// Hand-off cost per item on one thread (push and pop), per measured item type.
    hop_here: Vec<f64>,
    /// Hand-off cost per item between two cores, per measured item type.
    hop_cross: Vec<f64>,
    /// Payload bytes per unit into the application (placement writes) and out of it
    /// (placement reads).
    rx_bytes: f64,
    tx_bytes: f64,
    /// What a byte ring's two ends on two cores add: (per call, per byte), in ns, for the
    /// writer and for the reader.
    cross_write: (f64, f64),
    cross_read: (f64, f64),
    /// Calls per unit: placement's copies into the RX ring (payload-carrying segments in)
    /// and out of the TX ring (the application's writes stand in for them), the
    /// application's reads and writes.
    place_writes: f64,
    place_reads: f64,
    app_reads: f64,
    app_writes: f64,
    /// What the same byte-ring writes and reads cost on one thread: (per call, per byte).
    here_write: (f64, f64),
    here_read: (f64, f64),
    /// Whether the received and the sent payload copies are long enough to be lent
    /// (`topology::LEND_MIN`) under replicated placement.
    lend_rx: bool,
    lend_tx: bool,
    /// Under replicated placement, from the one-core run with a second place replica
    /// lending to it: the owner's place replica's and the other one's service time per unit
    /// (the copies, the jobs' hand-offs on one thread, the ordered publication).
    lend_home: f64,
    lend_helper: f64,
}

impl Inputs {
    /// What the byte rings add to the place replica, per unit, with the application on
    /// another core.
    fn place_across(&self) -> f64 {
        self.place_writes * self.cross_write.0
            + self.rx_bytes * self.cross_write.1
            + self.place_reads * self.cross_read.0
            + self.tx_bytes * self.cross_read.1
    }

    /// Under replicated placement: (copies lent per unit, what they cost on one thread, what
    /// a byte ring across cores adds to them), ns per unit.
    fn lent(&self) -> (f64, f64, f64) {
        let (mut n, mut here, mut cross) = (0.0, 0.0, 0.0);
        if self.lend_rx {
            n += self.place_writes;
            here += self.place_writes * self.here_write.0 + self.rx_bytes * self.here_write.1;
            cross += self.place_writes * self.cross_write.0 + self.rx_bytes * self.cross_write.1;
        }
        if self.lend_tx {
            n += self.place_reads;
            here += self.place_reads * self.here_read.0 + self.tx_bytes * self.here_read.1;
            cross += self.place_reads * self.cross_read.0 + self.tx_bytes * self.cross_read.1;
        }
        (n, here, cross)
    }
}

fn kind_of(t: TaskRef) -> Option<&'static str> {
    match t {
        TaskRef::Io => Some("io"),
        TaskRef::Preprocess(_) => Some("pre"),
        TaskRef::Group(0) => Some("group"),
        TaskRef::Place(0) => Some("place"),
        TaskRef::Postprocess(_) => Some("post"),
        // Other groups and place replicas carry none of the connection's items.
        _ => None,
    }
}

/// How much of a task kind's items one instance takes in `t`.
fn share(t: &Topology, task: TaskRef) -> f64 {
    match task {
        TaskRef::Preprocess(_) => 1.0 / t.preprocess as f64,
        TaskRef::Postprocess(_) => 1.0 / t.postprocess as f64,
        TaskRef::Group(0) | TaskRef::Place(0) | TaskRef::Io => 1.0,
        _ => 0.0,
    }
}

impl Inputs {
    /// Units per second of layout `t` with its workers on cores of their own and the
    /// application on another.
    fn predict(&self, t: &Topology) -> f64 {
        self.predict_with_bottleneck(t).0
    }

    /// [`predict`](Self::predict), and which thread limits the rate.
    fn predict_with_bottleneck(&self, t: &Topology) -> (f64, String) {
        let worker_of = |task: TaskRef| t.workers.iter().position(|w| w.tasks.contains(&task));
        let mut load = vec![0.0; t.workers.len()];
        for (w, spec) in t.workers.iter().enumerate() {
            for &task in &spec.tasks {
                let Some(kind) = kind_of(task) else { continue };
                let part = share(t, task);
                load[w] += self.service[kind] * part;
                // Rings to other threads: half of what crossing adds, per item, to each end.
                for e in Edge::ALL {
                    let (prod, cons) = e.ends(task);
                    if !(prod || cons) {
                        continue;
                    }
                    let extra = (self.hop_cross[e.kind()] - self.hop_here[e.kind()]).max(0.0);
                    for &other in t.workers.iter().flat_map(|s| &s.tasks) {
                        let (op, oc) = e.ends(other);
                        let linked = (prod && oc) || (cons && op);
                        if !linked || worker_of(other) == Some(w) || kind_of(other).is_none() {
                            continue;
                        }
                        // This pair's items: the edge's items split over the replicas at
                        // both ends.
                        let pair = self.items[&e] * part * share(t, other);
                        load[w] += pair * extra / 2.0;
                    }
                }
                if task == TaskRef::Place(0) {
                    load[w] += self.place_across();
                }
            }
        }
        // Replicated placement: the owner's place replica costs what it did in the one-core
        // lending run, the other one's work is shared among the other replicas, and what a
        // byte ring across cores adds to the lent copies moves with them; each job (56
        // bytes) crosses to its helper and back, costed each way as the nearest item
        // measured across cores, `Ingress<RxWork>` (40 bytes).
        let helpers = t.place.saturating_sub(1);
        if t.replicated_placement && helpers > 0 {
            let (n, _, cross) = self.lent();
            let hop = (self.hop_cross[1] - self.hop_here[1]).max(0.0);
            if let Some(w) = worker_of(TaskRef::Place(0)) {
                load[w] += self.lend_home - self.service["place"] - cross + n * 2.0 * hop;
            }
            for d in 1..t.place {
                if let Some(w) = worker_of(TaskRef::Place(d)) {
                    load[w] += (self.lend_helper + cross + n * 2.0 * hop) / helpers as f64;
                }
            }
        }
        let app = self.app
            + self.app_reads * self.cross_read.0
            + self.rx_bytes * self.cross_read.1
            + self.app_writes * self.cross_write.0
            + self.tx_bytes * self.cross_write.1;
        let (mut busiest, mut name) = (app, "the application's thread".to_string());
        for (w, l) in load.into_iter().enumerate() {
            if l > busiest {
                busiest = l;
                name = format!("the worker with {:?}", t.workers[w].tasks);
            }
        }
        (1e9 / busiest.max(1e-9), name)
    }
}

impl Inputs {
    /// Units per second of the calibration layout: everything on one thread.
    fn predict_task_graph(&self) -> f64 {
        1e9 / (self.service.values().sum::<f64>() + self.app).max(1e-9)
    }

    /// The same with a second place replica making the lent copies, on the same thread.
    fn predict_task_graph_lending(&self) -> f64 {
        let others = self.service.values().sum::<f64>() - self.service["place"];
        1e9 / (others + self.lend_home + self.lend_helper + self.app).max(1e-9)
    }
}

/// The calibration layout with two place replicas and replicated placement: the second one
/// makes the copies the first lends, on the same thread.
fn lending_calibration_layout() -> Topology {
    let mut t = Topology::with_counts(1, 2, 2, 1, 1, false).with_replicated_placement();
    t.caller_driven = true;
    t
}

/// The calibration layout: every task on the application's thread, two flow groups (one
/// idle), so the runtime runs its task graph rather than the inline mapping.
fn calibration_layout() -> Topology {
    let mut t = Topology::with_counts(1, 2, 1, 1, 1, false);
    t.caller_driven = true;
    t
}

/// One entry of `Run::tasks` (CPU seconds, runs) in ns per unit of `run`, less the clock
/// read each timed run adds (each timed run also timed one clock read, scaled up with it).
fn entry_per_unit(run: &Run, cpu: f64, polls: u64, clock_read: f64) -> f64 {
    (cpu - polls as f64 * clock_read * 1e-9).max(0.0) * 1e9 / run.units
}

/// A task's time per unit in a run (ns), as [`entry_per_unit`].
fn task_per_unit(run: &Run, task: TaskRef, clock_read: f64) -> f64 {
    run.tasks
        .iter()
        .filter(|t| t.0 == task)
        .map(|&(_, cpu, polls)| entry_per_unit(run, cpu, polls, clock_read))
        .sum()
}

/// What a run of a layout did per unit, by task kind (ns, as the model's service times), and
/// the application's reads and writes: set beside the calibration's, it shows which task
/// a check's error comes from.
#[derive(Clone, Debug, Default)]
struct Seen {
    service: HashMap<&'static str, f64>,
    app_reads: f64,
    app_writes: f64,
}

impl Seen {
    fn of(run: &Run, clock_read: f64) -> Seen {
        let mut service: HashMap<&'static str, f64> = HashMap::new();
        for &(task, cpu, polls) in &run.tasks {
            if let Some(kind) = kind_of(task) {
                *service.entry(kind).or_default() += entry_per_unit(run, cpu, polls, clock_read);
            }
        }
        Seen {
            service,
            app_reads: run.app_reads / run.units,
            app_writes: run.app_writes / run.units,
        }
    }
}

/// One round's inputs: the calibration run and the micro-measurements.
fn inputs(
    cal: &Run,
    lending: Option<&Run>,
    workload: Workload,
    arena: &FrameArena,
    clock_read: f64,
    watch: &mut hops::Watch,
) -> Inputs {
    let per_unit = |run: &Run, task: TaskRef| task_per_unit(run, task, clock_read);
    let service = Seen::of(cal, clock_read).service;
    // Every task's time, those that carry none of the connection's items too.
    let in_tasks: f64 = cal
        .tasks
        .iter()
        .map(|&(_, cpu, polls)| entry_per_unit(cal, cpu, polls, clock_read))
        .sum();
    let app = (cal.app_cpu * 1e9 / cal.units - in_tasks).max(0.0);
    let frames_in = cal.trace.frames_in as f64 / cal.units;
    let frames_out = cal.trace.frames_out as f64 / cal.units;
    let results = cal.results / cal.units;
    let items: HashMap<Edge, f64> = [
        (Edge::IoPre, frames_in),
        (Edge::PreGroup, frames_in),
        (Edge::GroupPlace, results),
        (Edge::PlacePost, results),
        // Frames, and gaps of tombstones between them (up to one gap per frame, plus one):
        // counted as the frames.
        (Edge::PostIo, frames_out),
    ]
    .into_iter()
    .collect();
    // Units: bytes for bulk (so payload is one byte per unit), responses for RPC.
    let (rx_bytes, tx_bytes) = match workload {
        Workload::Bulk { .. } => (1.0, 0.0),
        Workload::Rpc {
            request, response, ..
        } => (request as f64, response as f64),
    };
    // The micro-measurements on threads of their own: pinning must not stick to the
    // application's thread. Two chunk sizes give each end's cost per call and per byte.
    // Those across two cores are watched (`hops::Watch`). Across cores the writer spends,
    // between two writes, what the rest of the worker's tasks take per payload-carrying
    // segment in the calibration run, as placement does when it shares its worker with them.
    let place_writes = cal.trace.data_frames as f64 / cal.units;
    let others = service.values().sum::<f64>() - service.get("place").copied().unwrap_or(0.0);
    // (None where the calibration placed no payload; at most 10 µs, which bounds the run.)
    let gap = if place_writes > 0.0 {
        Duration::from_nanos((others / place_writes).clamp(0.0, 1e4) as u64)
    } else {
        Duration::ZERO
    };
    let mut fit = |cross: bool| {
        let small = watch.steady(cross, || {
            on_own_thread(move || hops::payload(64, 32 << 20, cross, gap))
        });
        let large = watch.steady(cross, || {
            on_own_thread(move || hops::payload(1460, 256 << 20, cross, gap))
        });
        let line = |(n1, b1): (f64, f64), (n2, b2): (f64, f64)| {
            let per_byte = ((n2 - n1) / (b2 - b1).max(1.0)).max(0.0);
            ((n1 - per_byte * b1).max(0.0), per_byte)
        };
        (
            line(
                (small.write_ns, small.write_bytes),
                (large.write_ns, large.write_bytes),
            ),
            line(
                (small.read_ns, small.read_bytes),
                (large.read_ns, large.read_bytes),
            ),
        )
    };
    let (here_w, here_r) = fit(false);
    let (cross_w, cross_r) = fit(true);
    let extra = |x: (f64, f64), h: (f64, f64)| ((x.0 - h.0).max(0.0), (x.1 - h.1).max(0.0));
    let items_per_run = 1_000_000;
    let mut hop = |cross: bool| -> Vec<f64> {
        hops::kinds()
            .iter()
            .map(|k| {
                let el = watch.steady(cross, || {
                    on_own_thread(|| (k.run)(arena, items_per_run, 32, cross))
                });
                let hops = if cross { 1.0 } else { 2.0 };
                el.as_nanos() as f64 / (items_per_run as f64 * hops)
            })
            .collect()
    };
    Inputs {
        service,
        app,
        items,
        hop_here: hop(false),
        hop_cross: hop(true),
        rx_bytes,
        tx_bytes,
        cross_write: extra(cross_w, here_w),
        cross_read: extra(cross_r, here_r),
        place_writes,
        place_reads: if tx_bytes > 0.0 {
            cal.app_writes / cal.units
        } else {
            0.0
        },
        app_reads: cal.app_reads / cal.units,
        app_writes: cal.app_writes / cal.units,
        here_write: here_w,
        here_read: here_r,
        lend_rx: match workload {
            Workload::Bulk { segment } => segment >= LEND_MIN,
            Workload::Rpc { request, .. } => request >= LEND_MIN,
        },
        lend_tx: match workload {
            Workload::Bulk { .. } => false,
            Workload::Rpc { response, .. } => response >= LEND_MIN,
        },
        // The placement policy picks the owner; it does the more work of the two.
        lend_home: lending.map_or(0.0, |l| {
            per_unit(l, TaskRef::Place(0)).max(per_unit(l, TaskRef::Place(1)))
        }),
        lend_helper: lending.map_or(0.0, |l| {
            per_unit(l, TaskRef::Place(0)).min(per_unit(l, TaskRef::Place(1)))
        }),
    }
}

/// What one `Instant::now()` costs here (ns): the run times the runtime samples include one.
fn clock_read_ns() -> f64 {
    let n = 1_000_000u32;
    let t0 = std::time::Instant::now();
    let mut last = t0;
    for _ in 0..n {
        last = std::hint::black_box(std::time::Instant::now());
    }
    (last - t0).as_nanos() as f64 / n as f64
}

/// Run `f` on a thread of its own (scoped, so it may borrow), so that pinning inside it
/// does not stick to the calling thread.
fn on_own_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| s.spawn(f).join().expect("measurement thread"))
}

fn median_min_max(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// A layout for one connection with replicated placement on `cores` cores (one for the
/// application): the I/O task, one flow group, a third of the other workers (at least 2) as
/// place replicas, the rest split between preprocess and postprocess.
fn one_flow_layout(cores: usize) -> Topology {
    let workers = cores.saturating_sub(1).max(1);
    let place = (workers / 3).max(2);
    let rest = workers.saturating_sub(2 + place);
    let pre = rest.div_ceil(2).max(1);
    let post = rest.saturating_sub(pre).max(1);
    Topology::with_counts(pre, 1, place, post, workers, false).with_replicated_placement()
}

/// The layout `Topology::auto(1)` builds on a machine with `cores` cores.
fn auto_on(cores: usize) -> Topology {
    Topology::for_free_cores(cores.saturating_sub(1))
}

fn main() {
    let secs: f64 = arg("--secs", 0.5);
    let rounds: usize = arg("--rounds", 3);
    let cores = flextoe::pipeline::topology::usable_cores().len();
    let arena = FrameArena::new(4 * hops::POOL).expect("frame arena");
    // The layout checked here: `Topology::auto(1)`, but with one free core `auto` runs the
    // engine as one task on the worker (`Topology::inline_worker`), which is not a layout of
    // the task graph: the task graph on that one worker (`single_thread`) is checked instead.
    let auto = match Topology::auto(1) {
        t if t.maps_inline() && !t.caller_driven => Topology::single_thread(),
        t => t,
    };
    let clock_read = clock_read_ns();
    let mut watch = hops::Watch::new();
    println!(
        "model of the threaded runtime, one connection against the trace port; {cores} cores here; \
         {rounds} rounds of {secs} s per layout, interleaved"
    );
    let mut all_ok = true;
    for (name, workload, unit, scale) in workloads() {
        // Per round: the inputs, and (model, measured) per checked layout.
        let mut fed: Vec<Inputs> = Vec::new();
        let mut inline_rate = Vec::new();
        // Per round, what the `auto(1)` run did per task.
        let mut seen_auto: Vec<Seen> = Vec::new();
        let mut checks: Vec<(String, Vec<(f64, f64)>)> = vec![(
            "the calibration layout, 1 core (previous round's inputs)".into(),
            Vec::new(),
        )];
        let threaded_check = !auto.caller_driven;
        if threaded_check {
            checks.push((
                format!(
                    "Topology::auto(1)'s task graph: {} worker(s) + the application",
                    auto.workers.len()
                ),
                Vec::new(),
            ));
        }
        // Replicated placement changes nothing where no copy is long enough to lend.
        let lends = match workload {
            Workload::Bulk { segment } => segment >= LEND_MIN,
            Workload::Rpc {
                request, response, ..
            } => request.max(response) >= LEND_MIN,
        };
        let lend_check = checks.len();
        if lends {
            checks.push((
                "the same with a second place replica lending, 1 core (previous round's)".into(),
                Vec::new(),
            ));
        }
        for round in 0..rounds {
            let mut layouts: Vec<(usize, Runtime)> = vec![
                (0, Runtime::Inline),
                (1, Runtime::Threaded(calibration_layout())),
            ];
            if threaded_check {
                layouts.push((2, Runtime::Threaded(auto.clone())));
            }
            if lends {
                layouts.push((3, Runtime::Threaded(lending_calibration_layout())));
            }
            if round % 2 == 1 {
                layouts.reverse();
            }
            let mut measured = [0.0; 4];
            let (mut cal, mut lending) = (None, None);
            for (i, rt) in layouts {
                // The layout on two cores is watched; the others run on one.
                let run = watch.steady(i == 2, || measure(&rt, workload, secs));
                measured[i] = run.rate;
                if i == 2 {
                    seen_auto.push(Seen::of(&run, clock_read));
                }
                if i == 1 {
                    cal = Some(run);
                } else if i == 3 {
                    lending = Some(run);
                }
            }
            let cal = cal.expect("the calibration ran");
            let inp = inputs(
                &cal,
                lending.as_ref(),
                workload,
                &arena,
                clock_read,
                &mut watch,
            );
            // The calibration layout is checked against the model fed with the previous
            // round's inputs (the first round against its own, which only checks the sums).
            let prev = fed.last().unwrap_or(&inp);
            checks[0].1.push((prev.predict_task_graph(), measured[1]));
            if threaded_check {
                checks[1].1.push((inp.predict(&auto), measured[2]));
            }
            if lends {
                checks[lend_check]
                    .1
                    .push((prev.predict_task_graph_lending(), measured[3]));
            }
            inline_rate.push(measured[0]);
            fed.push(inp);
        }
        println!("\n{name} ({unit}): model against measurement, median (min..max) over rounds");
        println!(
            "  {:<58} {:>10} {:>10} {:>22}",
            "layout", "model", "measured", "model / measured"
        );
        let (mut ok, mut lend_ok) = (true, true);
        for (k, (layout, pairs)) in checks.iter().enumerate() {
            let (pm, _, _) = median_min_max(pairs.iter().map(|p| p.0).collect());
            let (mm, _, _) = median_min_max(pairs.iter().map(|p| p.1).collect());
            let (r, lo, hi) = median_min_max(pairs.iter().map(|p| p.0 / p.1).collect());
            let within = (0.85..=1.15).contains(&r);
            if k == lend_check {
                lend_ok = within;
            } else {
                ok &= within;
            }
            println!(
                "  {layout:<58} {:>10.3} {:>10.3} {:>8.2} ({:.2}..{:.2}) {}",
                pm * scale,
                mm * scale,
                r,
                lo,
                hi,
                if within {
                    "within 15%"
                } else {
                    "OFF BY MORE THAN 15%"
                }
            );
        }
        // The inputs of the median round, for the record.
        let mid = &fed[fed.len() / 2];
        let per = |v: f64| {
            v * if matches!(workload, Workload::Bulk { .. }) {
                1460.0
            } else {
                1.0
            }
        };
        let per_name = if matches!(workload, Workload::Bulk { .. }) {
            "per 1460-byte segment"
        } else {
            "per RPC"
        };
        let mut svc: Vec<String> = ["io", "pre", "group", "place", "post"]
            .iter()
            .map(|k| format!("{k} {:.0}", per(mid.service.get(k).copied().unwrap_or(0.0))))
            .collect();
        svc.push(format!("application {:.0}", per(mid.app)));
        if lends {
            svc.push(format!(
                "lending: owner's place {:.0}, other place {:.0}",
                per(mid.lend_home),
                per(mid.lend_helper)
            ));
        }
        println!("  inputs, ns {per_name}: {}", svc.join(", "));
        println!(
            "  hand-off ns/item (one thread / two cores): Ingress<RxWork> {:.1}/{:.1}, (u64, ProtoResult) in bursts {:.1}/{:.1}, Sequenced<Frame> {:.1}/{:.1}; \
             a byte ring across cores adds {:.0} ns/call + {:.3} ns/byte to the writer, {:.0} ns/call + {:.3} ns/byte to the reader",
            mid.hop_here[Edge::PreGroup.kind()],
            mid.hop_cross[Edge::PreGroup.kind()],
            mid.hop_here[Edge::GroupPlace.kind()],
            mid.hop_cross[Edge::GroupPlace.kind()],
            mid.hop_here[Edge::PostIo.kind()],
            mid.hop_cross[Edge::PostIo.kind()],
            mid.cross_write.0,
            mid.cross_write.1,
            mid.cross_read.0,
            mid.cross_read.1
        );
        if let Some(seen) = seen_auto.get(fed.len() / 2) {
            let tasks: Vec<String> = ["io", "pre", "group", "place", "post"]
                .iter()
                .map(|k| {
                    let get = |m: &HashMap<&str, f64>| per(m.get(k).copied().unwrap_or(0.0));
                    format!("{k} {:.0} -> {:.0}", get(&mid.service), get(&seen.service))
                })
                .collect();
            println!(
                "  the same round's Topology::auto(1) run, ns {per_name} (calibration -> two cores): {}; \
                 the model adds {:.0} to place for the byte rings across cores; the application's reads {per_name} {:.2} -> {:.2}, writes {:.2} -> {:.2}",
                tasks.join(", "),
                per(mid.place_across()),
                per(mid.app_reads),
                per(seen.app_reads),
                per(mid.app_writes),
                per(seen.app_writes),
            );
        }
        all_ok &= ok;
        let (inline, _, _) = median_min_max(inline_rate);
        if !ok {
            println!("  no prediction: a check is off by more than 15%");
            continue;
        }
        let preds: Vec<String> = [4usize, 8, 16]
            .iter()
            .map(|&n| {
                let t = auto_on(n);
                let (p, _, _) = median_min_max(fed.iter().map(|i| i.predict(&t)).collect());
                let (_, limit) = fed[fed.len() / 2].predict_with_bottleneck(&t);
                format!(
                    "    {n:>2} cores ({:>2} workers): {:.3} {unit}, {:.2}x inline, limited by {limit}",
                    t.workers.len(),
                    p * scale,
                    p / inline
                )
            })
            .collect();
        println!(
            "  prediction (the application on one core, Topology::x86 on the rest; inline measured {:.3} {unit}):\n{}",
            inline * scale,
            preds.join("\n")
        );
        if !lends {
            println!("  replicated placement: no copy of this workload is long enough to lend");
            continue;
        }
        if !lend_ok {
            println!("  no prediction with replicated placement: its one-core check is off by more than 15%");
            continue;
        }
        let preds: Vec<String> = [4usize, 8, 16]
            .iter()
            .map(|&n| {
                let t = one_flow_layout(n);
                let (p, _, _) = median_min_max(fed.iter().map(|i| i.predict(&t)).collect());
                let (_, limit) = fed[fed.len() / 2].predict_with_bottleneck(&t);
                format!(
                    "    {n:>2} cores ({:>2} workers, {} place replicas): {:.3} {unit}, {:.2}x inline, limited by {limit}",
                    t.workers.len(),
                    t.place,
                    p * scale,
                    p / inline
                )
            })
            .collect();
        println!(
            "  with replicated placement, laid out for one connection (the application on one core; the I/O task, one flow group, a third of the rest as place replicas and the others split between preprocess and postprocess, one task per worker where there are enough; checked on one core only):\n{}",
            preds.join("\n")
        );
    }
    println!("\n{}", watch.summary());
    if !all_ok {
        println!("\nthe model is not validated on this machine");
    }
}
