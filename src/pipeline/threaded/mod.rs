//! The threaded runtime: the data path's segments (see
//! [the pipeline docs](crate::pipeline#the-data-path)) on tasks of their own, replicated
//! where they hold no per-flow state, joined by SPSC burst rings, with explicit sequencing.
//!
//! ```text
//!            +--> preprocess 0 --+                      +--> place 0 --+--> postprocess 0 --+
//! port -> io +--> preprocess 1 --+--> merge -> group g --+--> place 1 --+--> postprocess 1 --+--> reorder g -> io -> port
//!  (ingress numbers)  (ingress:       (transport: rx_segment   (delivery:        (egress: headers,      (egress numbers)
//!                     rx_frame         stages, protocol,       payload, rings,   checksums, tx_frame
//!                     stages,          results stages,         notifications)    stages)
//!                     preprocess)      scheduler)
//! ```
//!
//! * **Ingress.** The I/O task numbers every received frame and hands bursts to the
//!   preprocess replicas round-robin (telling the others how far the numbering went). Each
//!   replica emits, per flow group, its items in runs (one number per run, not per item:
//!   a burst is a run, cut where the numbers skip and after a punt) plus advances; each
//!   group merges the replicas' streams back into arrival order ([`Merge`]) before its
//!   protocol stage.
//! * **Delivery.** Each place replica owns the rings of its share of the connections (chosen
//!   by the [`Placement`] policy), so a connection's payload, ring publication and
//!   notifications stay in protocol order, and data is visible before it is acknowledged.
//! * **Egress.** A group's protocol stage numbers its results; postprocess replicas build
//!   headers and checksums in parallel and pass frames on, and for results that send
//!   nothing tombstones, consecutive ones as one gap ([`Sequenced`]); a [`Reorder`] per group
//!   releases them to the wire in protocol order, with the topology's
//!   [`Overflow`](crate::reorder::Overflow) policy.
//! * **User stages on workers of their own.** With [`Topology::with_rx_hooks_worker`] the
//!   `rx_frame` stages run between the I/O task and the preprocess replicas; with
//!   [`Topology::with_tx_hooks_worker`] the `tx_frame` stages run after the egress reorder.
//!
//! Each task is a loop body ([`Task::run`]); a worker thread runs its tasks in turn and backs
//! off (spin, yield, short sleep) when none had work. Statistics are published by every task
//! every millisecond and can be read while the runtime runs ([`Threaded::stats`]).

mod assemble;
mod backlog;
mod egress;
mod fused;
mod group;
mod ingress;
mod io;
mod place;
mod post;
mod pre;
mod stats;
mod worker;

use backlog::Backlog;
use group::GroupTask;
use io::IoTask;
use place::PlaceTask;
use post::PostTask;
use pre::PreTask;
pub use stats::{IoSummary, TaskReport, ThreadedStats};

use super::path;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::hooks::{Chain, Diverted, HookCx, HookReport, Hooks, RedirectRing, TxFrame};
use super::topology::{Placement, TaskRef, Topology};
use super::{EngineConfig, EngineError, Parts, Pipeline};
use crate::backends::Port;
use crate::buf::{Frame, FrameArena, RingObserver};
use crate::control::congestion::CongestionControl;
use crate::control::{Control, ControlOutput, ControlStats, TcpConnState};
use crate::flow::{FlowId, FlowIdentity, RetransmitTotals};
use crate::host::{ConnShared, Host, HostShared};
use crate::reorder::{Ingress, Merge, Reorder, Sequenced};
use crate::ring::{
    burst_spsc, spsc, Burst, BurstConsumer, BurstProducer, Consumer, Idle, Producer, Wakeup,
    PORT_SPIN,
};
use crate::stages::notify::ControlEvent;
use crate::stages::place::{CopyJob, FlowRings};
use crate::stages::postprocess::{FlowView, Postprocess};
use crate::stages::preprocess::Preprocess;
use crate::stages::protocol::{Protocol, TcpState};
use crate::stages::scheduler::FlowScheduler;
use crate::stages::{PreOut, ProtoResult, ProtoWork, Punt, PuntReason, RxWork, Stage, BURST};
use crate::stats::StageStats;
use crate::time::{Clock, Instant};
use crate::wire::FourTuple;

/// A task of the threaded runtime: one pass over its inputs.
pub trait Task: Send {
    /// Do a bounded amount of work; return whether there was any.
    fn run(&mut self, now: Instant) -> bool;
    /// Publish statistics (called about once a millisecond).
    fn report(&mut self);
    /// Publish statistics in full, where [`report`](Self::report) may leave a costly part
    /// as last published: when the runtime stops, and when a caller-driven runtime's
    /// statistics are asked for.
    fn report_full(&mut self) {
        self.report();
    }
}

type Shared<T> = Arc<Mutex<T>>;

fn publish<T: Clone>(slot: &Shared<T>, v: &T) {
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = v.clone();
}

/// What every task keeps for its statistics: who it is, where it runs, how often it found
/// work, and the slot its reports go to.
struct Meta {
    task: TaskRef,
    worker: usize,
    polls: u64,
    busy: u64,
    slot: Shared<TaskReport>,
}

impl Meta {
    /// A task's bookkeeping; its report slot joins `reports`.
    fn new(task: TaskRef, worker: usize, reports: &mut Vec<Shared<TaskReport>>) -> Self {
        let slot = Arc::new(Mutex::new(TaskReport::default()));
        reports.push(slot.clone());
        Meta {
            task,
            worker,
            polls: 0,
            busy: 0,
            slot,
        }
    }

    fn publish(
        &self,
        stages: Vec<(&'static str, StageStats)>,
        rings: Vec<(&'static str, usize, usize)>,
        reorder: Vec<crate::reorder::ReorderStats>,
        hooks: Vec<HookReport>,
    ) {
        publish(
            &self.slot,
            &TaskReport {
                task: Some(self.task),
                worker: self.worker,
                polls: self.polls,
                busy_polls: self.busy,
                stages,
                rings,
                reorder,
                hooks,
                cpu: Duration::ZERO,
                work: Duration::ZERO,
            },
        );
    }
}

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

/// Input of a preprocess replica.
enum PreIn {
    Frame(u64, Frame),
    Advance(u64),
}

enum PreCtl {
    /// A flow's tuple, id, group and incarnation.
    Install(FourTuple, FlowId, u16, u8),
    Remove(FourTuple),
}

enum GroupCtl {
    Install {
        id: FlowId,
        state: Box<TcpState>,
        /// (TX ring, RX ring) positions, for application updates.
        views: (RingObserver, RingObserver),
        identity: Arc<FlowIdentity>,
        /// The place replica that owns the flow's rings.
        place: u16,
    },
    Remove(FlowId),
}

enum PlaceCtl {
    Install {
        id: FlowId,
        rings: FlowRings,
        conn: Arc<ConnShared>,
        incarnation: u8,
    },
    Remove(FlowId),
}

/// Protocol results of one flow group on their way to the wire, a burst at a time: from the
/// group to its place replica and on to a postprocess replica (the links are [`burst_spsc`]
/// rings). With one place replica and no lending, a result stays where the protocol stage
/// wrote it; with several, the group sorts results into one burst per replica, and a
/// lending replica takes them out into its queue and packs what it publishes anew.
#[derive(Debug, Default)]
struct ResultBurst {
    /// The flow group (set by placement, which knows the ring the burst came on).
    group: u16,
    /// Each result's egress number, in step with `results`.
    seqs: Vec<u64>,
    results: Vec<ProtoResult>,
}

impl Burst for ResultBurst {
    fn is_empty(&self) -> bool {
        debug_assert_eq!(self.seqs.len(), self.results.len());
        self.results.is_empty()
    }
}

impl ResultBurst {
    fn push(&mut self, seq: u64, r: ProtoResult) {
        self.seqs.push(seq);
        self.results.push(r);
    }

    /// Forget what the burst held (results whose frames have been taken or freed).
    fn clear(&mut self) {
        self.seqs.clear();
        self.results.clear();
    }
}

enum PostCtl {
    Install(FlowId, FlowView),
}

/// A ring and what did not fit into it yet (kept in order, retried first).
struct Outbox<T> {
    ring: Producer<T>,
    pending: Vec<T>,
}

impl<T: Send> Outbox<T> {
    fn new(ring: Producer<T>) -> Self {
        Outbox {
            ring,
            pending: Vec::new(),
        }
    }

    /// Push what is pending; whether everything went.
    fn flush(&mut self) -> bool {
        if !self.pending.is_empty() {
            self.ring.push_burst(&mut self.pending);
        }
        self.pending.is_empty()
    }
}

/// Frames user stages diverted, on their way to the I/O task (to the port, or to the
/// control plane).
struct ToIo {
    tx: Outbox<Frame>,
    /// With the frame's arrival number where the task knows it (preprocess), else 0.
    punts: Outbox<(u64, Punt)>,
}

impl ToIo {
    fn take(&mut self, d: &mut Diverted) {
        self.tx.pending.append(&mut d.tx);
        self.punts.pending.extend(d.punt.drain(..).map(|frame| {
            (
                0,
                Punt {
                    frame,
                    reason: PuntReason::Extension,
                },
            )
        }));
    }

    fn flush(&mut self) -> bool {
        self.tx.flush() & self.punts.flush()
    }
}

// ---------------------------------------------------------------------------------------
// The runtime
// ---------------------------------------------------------------------------------------

/// The I/O task's backlog per flow group, in rings' worth of work ([`backlog`]).
const BACKLOG_RINGS: usize = 8;

/// A worker times each of its tasks' runs on one pass in this many (two clock reads per task
/// on every pass would cost more than the shortest runs).
const SAMPLE_EVERY: u64 = 16;
/// How often a worker publishes its tasks' reports (real time, looked at every 64 passes):
/// reports allocate and take a lock, so a busy worker must not make them every few passes.
const REPORT_EVERY: Duration = Duration::from_millis(1);
/// Longest sleep of the worker that runs the I/O task (it polls the port and the timers).
const IO_NAP: Duration = Duration::from_micros(50);
/// Longest sleep of the other workers: producers wake them, but a pacing scheduler's next
/// grant is a deadline no producer signals.
const IDLE_NAP: Duration = Duration::from_micros(50);

/// A threaded engine: the stages of a [`Topology`] on worker threads.
pub struct Threaded {
    host: Host,
    arena: Arc<FrameArena>,
    stop: Arc<AtomicBool>,
    wakes: Vec<Arc<Wakeup>>,
    workers: Vec<JoinHandle<()>>,
    /// The tasks, when the application's thread runs them ([`Topology::caller_driven`]).
    driven: Option<Box<Mutex<Driven>>>,
    /// Each worker thread's CPU accounting.
    cpu: Vec<WorkerCpu>,
    reports: Vec<Shared<TaskReport>>,
    summary: Shared<IoSummary>,
}

/// One worker thread's CPU accounting, as of its last report: its thread CPU clock, and the
/// sampled run times of each of its tasks.
struct WorkerCpu {
    thread_ns: Arc<AtomicU64>,
    tasks: Vec<TaskTimes>,
    /// How the worker slept while idle.
    sleeps: Arc<crate::pipeline::sleep::SleepCounters>,
}

impl WorkerCpu {
    /// The accounting of a worker that runs `tasks`, nothing published yet.
    fn new(tasks: impl IntoIterator<Item = TaskRef>) -> Self {
        WorkerCpu {
            sleeps: Arc::default(),
            thread_ns: Arc::new(AtomicU64::new(0)),
            tasks: tasks
                .into_iter()
                .map(|task| TaskTimes {
                    task,
                    all: Arc::new(AtomicU64::new(0)),
                    work: Arc::new(AtomicU64::new(0)),
                })
                .collect(),
        }
    }
}

/// A task's sampled run times as its worker last published them, in nanoseconds.
struct TaskTimes {
    task: TaskRef,
    /// Every run.
    all: Arc<AtomicU64>,
    /// The runs that found work.
    work: Arc<AtomicU64>,
}

/// The run times of a thread's tasks, sampled on one pass in [`SAMPLE_EVERY`] and scaled
/// up (ns): every run, and the runs that found work.
struct RunTimes {
    all: Vec<u64>,
    work: Vec<u64>,
}

impl RunTimes {
    fn new(tasks: usize) -> Self {
        RunTimes {
            all: vec![0; tasks],
            work: vec![0; tasks],
        }
    }

    /// Run each task once at `now`, timing each run; returns whether any found work.
    fn run_timed(&mut self, tasks: &mut [Box<dyn Task>], now: Instant) -> bool {
        let mut busy = false;
        let mut t0 = std::time::Instant::now();
        for ((t, all), work) in tasks.iter_mut().zip(&mut self.all).zip(&mut self.work) {
            let found = t.run(now);
            let t1 = std::time::Instant::now();
            let ns = (t1 - t0).as_nanos() as u64 * SAMPLE_EVERY;
            *all += ns;
            if found {
                *work += ns;
            }
            busy |= found;
            t0 = t1;
        }
        busy
    }
}

/// The tasks of a caller-driven engine and its clock.
struct Driven {
    tasks: Vec<Box<dyn Task>>,
    /// Which task each of `tasks` is, when it is one of the topology's (not for the inline
    /// mapping's single task).
    refs: Vec<TaskRef>,
    /// Sampled run times of each task in `refs`.
    times: RunTimes,
    now: Box<dyn FnMut() -> Instant + Send>,
    polls: u64,
    /// When the tasks last published their reports.
    reported: std::time::Instant,
}

impl Driven {
    fn new<K: Clock + 'static>(
        tasks: Vec<Box<dyn Task>>,
        refs: Vec<TaskRef>,
        clock: K,
    ) -> Box<Mutex<Driven>> {
        Box::new(Mutex::new(Driven {
            times: RunTimes::new(refs.len()),
            refs,
            tasks,
            now: Box::new(move || clock.now()),
            polls: 0,
            reported: std::time::Instant::now(),
        }))
    }
}

/// The policies and user stages a threaded engine is assembled with.
pub(crate) struct Policies<C, S> {
    pub(crate) cc: C,
    pub(crate) sched: S,
    pub(crate) placement: Arc<dyn Placement>,
    pub(crate) hooks: Hooks,
}

impl Threaded {
    /// Build the default pipeline described by `cfg` on `port`, lay it out as `topology`,
    /// and start its worker threads, which read time from `clock`. Short for
    /// `Pipeline::builder(cfg, port).threaded(topology, clock)`.
    pub fn spawn<P, K>(
        cfg: EngineConfig,
        port: P,
        topology: Topology,
        clock: K,
    ) -> Result<Self, EngineError>
    where
        P: Port + 'static,
        K: Clock + Clone + 'static,
    {
        Pipeline::builder(cfg, port).threaded(topology, clock)
    }

    /// A socket handle for the engine.
    pub fn host(&self) -> Host {
        self.host.clone()
    }

    /// Run every task once on the caller's thread, when the topology is caller-driven
    /// ([`Topology::fused`], or [`Topology::auto`] with no core to spare); returns whether
    /// there was work. With worker threads it does nothing and returns `false`, so an
    /// application written against [`Topology::auto`] may call it in its loop either way.
    pub fn poll(&self) -> bool {
        let Some(d) = &self.driven else {
            return false;
        };
        let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
        let now = (d.now)();
        let mut busy = false;
        let d = &mut *d;
        if d.polls.is_multiple_of(SAMPLE_EVERY) && d.times.all.len() == d.tasks.len() {
            busy = d.times.run_timed(&mut d.tasks, now);
        } else {
            for t in d.tasks.iter_mut() {
                busy |= t.run(now);
            }
        }
        d.polls += 1;
        if d.polls.is_multiple_of(64) && d.reported.elapsed() >= REPORT_EVERY {
            d.reported = std::time::Instant::now();
            for t in d.tasks.iter_mut() {
                t.report();
            }
        }
        busy
    }

    /// For each worker, how many times a producer woke it from a park (spin-then-park:
    /// an idle worker sleeps until a ring, a doorbell or a request wakes it).
    pub fn wakeups(&self) -> Vec<u64> {
        self.wakes.iter().map(|w| w.wakes()).collect()
    }

    /// How each worker thread slept while idle, in the order of the topology's workers
    /// (empty for a caller-driven topology). The worker of the I/O task sleeps on the port's
    /// descriptors where it has some, once idle for a millisecond, for at most a nap (50
    /// us) at a time: a frame ends its sleep.
    pub fn sleeps(&self) -> Vec<crate::pipeline::RuntimeSleeps> {
        self.cpu.iter().map(|c| c.sleeps.get()).collect()
    }

    /// Whether the application's thread runs the engine ([`poll`](Self::poll)).
    pub fn is_caller_driven(&self) -> bool {
        self.driven.is_some()
    }

    /// The frame arena (to read and free frames a user stage redirected).
    pub fn arena(&self) -> &Arc<FrameArena> {
        &self.arena
    }

    /// Statistics as last published by the tasks (about once a millisecond); on a
    /// caller-driven topology the tasks publish first, so the figures are current.
    pub fn stats(&self) -> ThreadedStats {
        if let Some(d) = &self.driven {
            let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
            for t in d.tasks.iter_mut() {
                t.report_full();
            }
        }
        let worker_cpu: Vec<Duration> = self
            .cpu
            .iter()
            .map(|c| Duration::from_nanos(c.thread_ns.load(Ordering::Relaxed)))
            .collect();
        let mut tasks: Vec<TaskReport> = self
            .reports
            .iter()
            .map(|r| r.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect();
        // Each worker's CPU time, split among its tasks by their sampled run times.
        for r in &mut tasks {
            let Some(task) = r.task else { continue };
            let Some(w) = self.cpu.get(r.worker) else {
                continue;
            };
            let all: u64 = w.tasks.iter().map(|t| t.all.load(Ordering::Relaxed)).sum();
            let Some(mine) = w.tasks.iter().find(|t| t.task == task) else {
                continue;
            };
            if all > 0 {
                let share = mine.all.load(Ordering::Relaxed) as f64 / all as f64;
                r.cpu = worker_cpu[r.worker].mul_f64(share);
            }
            r.work = Duration::from_nanos(mine.work.load(Ordering::Relaxed));
        }
        // Caller-driven: the sampled run times themselves (the application's thread also
        // runs the application, so its CPU clock says nothing about the tasks).
        if let Some(d) = &self.driven {
            let d = d.lock().unwrap_or_else(|p| p.into_inner());
            for r in &mut tasks {
                let Some(task) = r.task else { continue };
                if let Some(i) = d.refs.iter().position(|t| *t == task) {
                    r.cpu = Duration::from_nanos(d.times.all[i]);
                    r.work = Duration::from_nanos(d.times.work[i]);
                }
            }
        }
        ThreadedStats {
            tasks,
            io: self
                .summary
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            worker_cpu,
        }
    }

    /// Stop the workers and return the final statistics.
    pub fn stop(mut self) -> ThreadedStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in &self.wakes {
            w.force();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(d) = &self.driven {
            for t in d.lock().unwrap_or_else(|p| p.into_inner()).tasks.iter_mut() {
                t.report_full();
            }
        }
        self.host
            .shared
            .engine_alive
            .store(false, Ordering::Release);
    }
}

impl Drop for Threaded {
    fn drop(&mut self) {
        self.shutdown();
    }
}
