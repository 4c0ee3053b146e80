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
//!   replica emits, per flow group, its items plus advances; each group merges the replicas'
//!   streams back into arrival order ([`Merge`]) before its protocol stage.
//! * **Delivery.** Each place replica owns the rings of its share of the connections (chosen
//!   by the [`Placement`] policy), so a connection's payload, ring publication and
//!   notifications stay in protocol order, and data is visible before it is acknowledged.
//! * **Egress.** A group's protocol stage numbers its results; postprocess replicas build
//!   headers and checksums in parallel and pass frames (or tombstones for results that send
//!   nothing) on; a [`Reorder`] per group releases them to the wire in protocol order, with
//!   the topology's [`Overflow`] policy.
//! * **User stages on workers of their own.** With [`Topology::with_rx_hooks_worker`] the
//!   `rx_frame` stages run between the I/O task and the preprocess replicas; with
//!   [`Topology::with_tx_hooks_worker`] the `tx_frame` stages run after the egress reorder.
//!
//! Each task is a loop body ([`Task::run`]); a worker thread runs its tasks in turn and backs
//! off (spin, yield, short sleep) when none had work. Statistics are published by every task
//! every millisecond and can be read while the runtime runs ([`Threaded::stats`]).

mod egress;
mod fused;
mod group;
mod ingress;
mod io;
mod place;
mod post;
mod pre;
mod stats;

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
use crate::reorder::{Ingress, Merge, Overflow, Reorder, Tagged};
use crate::ring::{spsc, Consumer, Producer, Wakeup};
use crate::stages::notify::ControlEvent;
use crate::stages::place::FlowRings;
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
    /// Publish statistics (called about once a millisecond, and when the runtime stops).
    fn report(&mut self);
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
    Install(FourTuple, FlowId, u16),
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

/// A protocol result on its way to the wire: (flow group, egress number, result).
type Egress = (u16, u64, ProtoResult);

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
    punts: Outbox<Punt>,
}

impl ToIo {
    fn take(&mut self, d: &mut Diverted) {
        self.tx.pending.append(&mut d.tx);
        self.punts
            .pending
            .extend(d.punt.drain(..).map(|frame| Punt {
                frame,
                reason: PuntReason::Extension,
            }));
    }

    fn flush(&mut self) -> bool {
        self.tx.flush() & self.punts.flush()
    }
}

// ---------------------------------------------------------------------------------------
// The runtime
// ---------------------------------------------------------------------------------------

/// Idle passes a worker spins before it parks.
const SPIN_PASSES: u32 = 256;
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
/// sampled run time of each of its tasks, in nanoseconds.
struct WorkerCpu {
    thread_ns: Arc<AtomicU64>,
    tasks: Vec<(TaskRef, Arc<AtomicU64>)>,
}

/// The tasks of a caller-driven engine and its clock.
struct Driven {
    tasks: Vec<Box<dyn Task>>,
    /// Which task each of `tasks` is, when it is one of the topology's (not for the inline
    /// mapping's single task).
    refs: Vec<TaskRef>,
    /// Sampled run time of each task in `refs` (ns, scaled up by the sampling rate).
    times: Vec<u64>,
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
            times: vec![0; refs.len()],
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

    pub(crate) fn assemble<P, K, C, S>(
        mut cfg: EngineConfig,
        port: P,
        topology: Topology,
        clock: K,
        pol: Policies<C, S>,
    ) -> Result<Self, EngineError>
    where
        P: Port + 'static,
        K: Clock + Clone + 'static,
        C: CongestionControl,
        S: FlowScheduler,
    {
        topology
            .validate()
            .map_err(|_| EngineError::Config("invalid topology"))?;
        if topology.maps_inline() {
            return Self::inline_mapping(cfg, port, clock, pol);
        }
        cfg.control.flow_groups = topology.flow_groups as u16;
        let Parts {
            arena,
            host,
            control,
        } = Parts::new(&cfg, port.mtu(), port.arena())?;
        let (np, ng, nd, nq) = (
            topology.preprocess,
            topology.flow_groups,
            topology.place,
            topology.postprocess,
        );
        let rs = topology.ring_size;
        // A flow's delayed-ACK state lives in postprocess; with several replicas its bursts
        // alternate between them, so they acknowledge per burst instead.
        let post_policy = match cfg.ack_policy {
            crate::stages::protocol::AckPolicy::Delayed(_) if topology.postprocess > 1 => {
                crate::stages::protocol::AckPolicy::PerBurst
            }
            p => p,
        };
        let csum_offload = port.capabilities().tx_checksum_offload;
        let port_queues = port.capabilities().queues.max(1) as usize;
        let mut reports = Vec::new();
        let worker_of = |t: TaskRef| {
            topology
                .workers
                .iter()
                .position(|w| w.tasks.contains(&t))
                .unwrap_or(0)
        };

        // One wakeup per worker: a producer on another worker wakes the consumer's.
        // The I/O task's worker sleeps on the engine's own wakeup, which the application's
        // doorbells and requests ring.
        let io_worker = worker_of(TaskRef::Io);
        let wakes: Vec<Arc<Wakeup>> = (0..topology.workers.len())
            .map(|i| {
                if i == io_worker {
                    host.engine_wake()
                } else {
                    Wakeup::new()
                }
            })
            .collect();
        let wire = |from: TaskRef, to: TaskRef| {
            let (a, b) = (worker_of(from), worker_of(to));
            (a != b).then(|| wakes[b].clone())
        };

        // Rings: io -> pre; pre -> group (every pair); pre -> io (punts); io -> group (work);
        // group -> place (every pair); place -> post (every pair); place -> io (events);
        // post -> io (every pair, per group).
        // The replicas' input comes from the I/O task, or from the `rx_frame` task.
        let pre_source = if topology.rx_hooks {
            TaskRef::RxHooks
        } else {
            TaskRef::Io
        };
        let (to_pre, pre_in): (Vec<_>, Vec<_>) = (0..np)
            .map(|i| {
                let (mut p, c) = spsc::<PreIn>(rs);
                if let Some(w) = wire(pre_source, TaskRef::Preprocess(i)) {
                    p.wake_on_push(w);
                }
                (p, c)
            })
            .unzip();
        let mut pre_to_group: Vec<Vec<Producer<Ingress<RxWork>>>> =
            (0..np).map(|_| Vec::new()).collect();
        let mut group_from_pre: Vec<Vec<Consumer<Ingress<RxWork>>>> =
            (0..ng).map(|_| Vec::new()).collect();
        for (pi, outs) in pre_to_group.iter_mut().enumerate() {
            for (g, ins) in group_from_pre.iter_mut().enumerate() {
                let (mut p, c) = spsc(rs);
                if let Some(w) = wire(TaskRef::Preprocess(pi), TaskRef::Group(g)) {
                    p.wake_on_push(w);
                }
                outs.push(p);
                ins.push(c);
            }
        }
        // Punts and reflected frames to the I/O task: one ring each per preprocess replica,
        // per group and for the `rx_frame` stages' own task.
        let source = |i: usize| {
            if i < np {
                TaskRef::Preprocess(i)
            } else if i < np + ng {
                TaskRef::Group(i - np)
            } else {
                TaskRef::RxHooks
            }
        };
        let (mut punt_p, punt_c): (Vec<_>, Vec<_>) = (0..np + ng + 1)
            .map(|i| {
                let (mut p, c) = spsc::<Punt>(rs);
                if let Some(w) = wire(source(i), TaskRef::Io) {
                    p.wake_on_push(w);
                }
                (p, c)
            })
            .unzip();
        let (mut raw_p, raw_c): (Vec<_>, Vec<_>) = (0..np + ng + 1)
            .map(|i| {
                let (mut p, c) = spsc::<Frame>(rs);
                if let Some(w) = wire(source(i), TaskRef::Io) {
                    p.wake_on_push(w);
                }
                (p, c)
            })
            .unzip();
        let (hook_punts, hook_raw) = (punt_p.pop(), raw_p.pop());
        let group_punts = punt_p.split_off(np);
        let group_raw = raw_p.split_off(np);
        let (work_p, work_c): (Vec<_>, Vec<_>) = (0..ng)
            .map(|g| {
                let (mut p, c) = spsc::<ProtoWork>(rs);
                if let Some(w) = wire(TaskRef::Io, TaskRef::Group(g)) {
                    p.wake_on_push(w);
                }
                (p, c)
            })
            .unzip();
        let mut group_to_place: Vec<Vec<Producer<(u64, ProtoResult)>>> =
            (0..ng).map(|_| Vec::new()).collect();
        let mut place_from_group: Vec<Vec<Consumer<(u64, ProtoResult)>>> =
            (0..nd).map(|_| Vec::new()).collect();
        for (g, outs) in group_to_place.iter_mut().enumerate() {
            for (d, ins) in place_from_group.iter_mut().enumerate() {
                let (mut p, c) = spsc(rs);
                if let Some(w) = wire(TaskRef::Group(g), TaskRef::Place(d)) {
                    p.wake_on_push(w);
                }
                outs.push(p);
                ins.push(c);
            }
        }
        let mut place_to_post: Vec<Vec<Producer<Egress>>> = (0..nd).map(|_| Vec::new()).collect();
        let mut post_from_place: Vec<Vec<Consumer<Egress>>> = (0..nq).map(|_| Vec::new()).collect();
        for (d, outs) in place_to_post.iter_mut().enumerate() {
            for (q, ins) in post_from_place.iter_mut().enumerate() {
                let (mut p, c) = spsc(rs);
                if let Some(w) = wire(TaskRef::Place(d), TaskRef::Postprocess(q)) {
                    p.wake_on_push(w);
                }
                outs.push(p);
                ins.push(c);
            }
        }
        let (ev_p, ev_c): (Vec<_>, Vec<_>) = (0..nd)
            .map(|d| {
                let (mut p, c) = spsc::<ControlEvent>(rs);
                if let Some(w) = wire(TaskRef::Place(d), TaskRef::Io) {
                    p.wake_on_push(w);
                }
                (p, c)
            })
            .unzip();
        // post -> io: one ring per (post replica, place replica, group).
        let mut post_to_io: Vec<Vec<Vec<Producer<Tagged<Frame>>>>> = (0..nq)
            .map(|_| (0..nd).map(|_| Vec::new()).collect())
            .collect();
        let mut io_from_post: Vec<Vec<Consumer<Tagged<Frame>>>> =
            (0..ng).map(|_| Vec::new()).collect();
        for (q, per_post) in post_to_io.iter_mut().enumerate() {
            for outs in per_post.iter_mut() {
                for ins in io_from_post.iter_mut() {
                    let (mut p, c) = spsc(rs);
                    if let Some(w) = wire(TaskRef::Postprocess(q), TaskRef::Io) {
                        p.wake_on_push(w);
                    }
                    outs.push(p);
                    ins.push(c);
                }
            }
        }
        let (pre_ctl_tx, pre_ctl_rx): (Vec<_>, Vec<_>) =
            (0..np).map(|_| crossbeam_channel::unbounded()).unzip();
        let (group_ctl_tx, group_ctl_rx): (Vec<_>, Vec<_>) =
            (0..ng).map(|_| crossbeam_channel::unbounded()).unzip();
        let (place_ctl_tx, place_ctl_rx): (Vec<_>, Vec<_>) =
            (0..nd).map(|_| crossbeam_channel::unbounded()).unzip();
        let (post_ctl_tx, post_ctl_rx): (Vec<_>, Vec<_>) =
            (0..nq).map(|_| crossbeam_channel::unbounded()).unzip();

        // With an `rx_frame` task, the I/O task deals to it and it deals to the replicas.
        let rx_hooks_task = topology.rx_hooks;
        let (io_ingress, rx_hook_task) = if rx_hooks_task {
            let (mut p, c) = spsc::<PreIn>(rs);
            if let Some(w) = wire(TaskRef::Io, TaskRef::RxHooks) {
                p.wake_on_push(w);
            }
            let me = TaskRef::RxHooks;
            let task = ingress::RxHookTask {
                arena: arena.clone(),
                input: c,
                dealer: ingress::Dealer::new(to_pre),
                hooks: pol.hooks.rx_frame.clone(),
                rings: pol.hooks.rings.clone(),
                to_io: ToIo {
                    tx: Outbox::new(hook_raw.expect("ring made above")),
                    punts: Outbox::new(hook_punts.expect("ring made above")),
                },
                diverted: Diverted::default(),
                batch: Vec::with_capacity(BURST),
                frames: Vec::with_capacity(BURST),
                seqs: Vec::with_capacity(BURST),
                meta: Meta::new(me, worker_of(me), &mut reports),
            };
            (ingress::Dealer::new(vec![p]), Some(task))
        } else {
            (ingress::Dealer::new(to_pre), None)
        };
        // The replicas run the `rx_frame` stages unless they have a task of their own.
        let pre_hooks = if rx_hooks_task {
            Chain::default()
        } else {
            pol.hooks.rx_frame.clone()
        };
        // With a `tx_frame` task, every frame the I/O task sends goes through it, and the
        // postprocess replicas and the I/O task run no `tx_frame` stages themselves.
        let (tx_task, tx_hook_task, local_tx_hooks) = if topology.tx_hooks {
            let (mut to_p, to_c) = spsc::<Frame>(rs);
            let (mut back_p, back_c) = spsc::<Frame>(rs);
            if let Some(w) = wire(TaskRef::Io, TaskRef::TxHooks) {
                to_p.wake_on_push(w);
            }
            if let Some(w) = wire(TaskRef::TxHooks, TaskRef::Io) {
                back_p.wake_on_push(w);
            }
            let me = TaskRef::TxHooks;
            let task = egress::TxHookTask {
                arena: arena.clone(),
                input: to_c,
                output: Outbox::new(back_p),
                hooks: pol.hooks.tx_frame.clone(),
                rings: pol.hooks.rings.clone(),
                batch: Vec::with_capacity(BURST),
                meta: Meta::new(me, worker_of(me), &mut reports),
            };
            let io_side = egress::ToTxHooks {
                out: Outbox::new(to_p),
                back: back_c,
            };
            (Some(io_side), Some(task), Chain::default())
        } else {
            (None, None, pol.hooks.tx_frame.clone())
        };

        // Tasks.
        let mut tasks: Vec<(TaskRef, Box<dyn Task>)> = Vec::new();
        if let Some(t) = tx_hook_task {
            tasks.push((TaskRef::TxHooks, Box::new(t)));
        }
        if let Some(t) = rx_hook_task {
            tasks.push((TaskRef::RxHooks, Box::new(t)));
        }
        let summary = Arc::new(Mutex::new(IoSummary::default()));
        tasks.push((
            TaskRef::Io,
            Box::new(IoTask {
                queues: port_queues,
                reinject: Preprocess::new(arena.clone(), cfg.mac, cfg.ip),
                arena: arena.clone(),
                port,
                control,
                host: host.clone(),
                cout: ControlOutput::default(),
                groups: ng,
                group_of: Vec::new(),
                next_seq: 0,
                ingress: io_ingress,
                pre_ctl: pre_ctl_tx,
                group_ctl: group_ctl_tx,
                place_ctl: place_ctl_tx,
                post_ctl: post_ctl_tx,
                punts: punt_c,
                events: ev_c,
                to_group: work_p,
                pending_work: (0..ng).map(|_| VecDeque::new()).collect(),
                from_post: io_from_post,
                egress: (0..ng)
                    .map(|_| Reorder::new(topology.reorder_window, topology.overflow))
                    .collect(),
                overflow: topology.overflow,
                rx: Vec::with_capacity(BURST),
                tx: Vec::with_capacity(4 * BURST),
                batch: Vec::with_capacity(BURST),
                rx_frames: 0,
                rx_by_queue: Vec::new(),
                tx_frames: 0,
                placement: pol.placement.clone(),
                place_of: Vec::new(),
                raw_tx: raw_c,
                staged: Vec::new(),
                tx_hooks: local_tx_hooks.clone(),
                tx_task,
                rings: pol.hooks.rings.clone(),
                instance: nq,
                meta: Meta::new(TaskRef::Io, worker_of(TaskRef::Io), &mut reports),
                summary: summary.clone(),
                wakes: wakes.clone(),
            }),
        ));
        for (r, (((input, to_group), (punts, ctl)), raw)) in pre_in
            .into_iter()
            .zip(pre_to_group)
            .zip(punt_p.into_iter().zip(pre_ctl_rx))
            .zip(raw_p)
            .enumerate()
        {
            let me = TaskRef::Preprocess(r);
            tasks.push((
                me,
                Box::new(PreTask {
                    ingress: path::Ingress {
                        arena: arena.clone(),
                        pre: Preprocess::new(arena.clone(), cfg.mac, cfg.ip),
                        hooks: pre_hooks.clone(),
                        rings: pol.hooks.rings.clone(),
                        instance: r,
                    },
                    groups_of: Vec::new(),
                    ctl,
                    input,
                    to_group,
                    pending: (0..ng).map(|_| Vec::new()).collect(),
                    to_io: ToIo {
                        tx: Outbox::new(raw),
                        punts: Outbox::new(punts),
                    },
                    batch: Vec::with_capacity(BURST),
                    frames: Vec::with_capacity(BURST),
                    seqs: Vec::with_capacity(BURST),
                    diverted: Diverted::default(),
                    meta: Meta::new(me, worker_of(me), &mut reports),
                }),
            ));
        }
        for (g, (((((from_pre, from_io), ctl), to_place), punts), raw)) in group_from_pre
            .into_iter()
            .zip(work_c)
            .zip(group_ctl_rx)
            .zip(group_to_place)
            .zip(group_punts)
            .zip(group_raw)
            .enumerate()
        {
            let me = TaskRef::Group(g);
            tasks.push((
                me,
                Box::new(GroupTask {
                    transport: path::Transport::new(
                        arena.clone(),
                        Protocol::with_congestion(pol.cc.clone(), arena.clone()),
                        pol.sched.clone(),
                        (pol.hooks.rx_segment.clone(), pol.hooks.results.clone()),
                        pol.hooks.rings.clone(),
                        g,
                    ),
                    place_of: Vec::new(),
                    segs: Vec::with_capacity(BURST),
                    diverted: Diverted::default(),
                    to_io: ToIo {
                        tx: Outbox::new(raw),
                        punts: Outbox::new(punts),
                    },
                    views: Vec::new(),
                    ctl,
                    merge: Merge::new(np),
                    from_pre,
                    from_io,
                    pending_out: (0..nd).map(|_| Vec::new()).collect(),
                    to_place,
                    egress_seq: 0,
                    work: Vec::with_capacity(BURST),
                    results: Vec::with_capacity(BURST),
                    meta: Meta::new(me, worker_of(me), &mut reports),
                }),
            ));
        }
        for (d, (((from_group, to_post), events), ctl)) in place_from_group
            .into_iter()
            .zip(place_to_post)
            .zip(ev_p)
            .zip(place_ctl_rx)
            .enumerate()
        {
            let me = TaskRef::Place(d);
            tasks.push((
                me,
                Box::new(PlaceTask {
                    delivery: path::Delivery::new(arena.clone(), d),
                    ctl,
                    from_group,
                    to_post,
                    next_post: 0,
                    pending: Vec::new(),
                    events,
                    pending_events: Vec::new(),
                    batch: Vec::with_capacity(BURST),
                    results: Vec::with_capacity(BURST),
                    seqs: Vec::with_capacity(BURST),
                    meta: Meta::new(me, worker_of(me), &mut reports),
                }),
            ));
        }
        for (q, ((from_place, to_io), ctl)) in post_from_place
            .into_iter()
            .zip(post_to_io)
            .zip(post_ctl_rx)
            .enumerate()
        {
            let me = TaskRef::Postprocess(q);
            tasks.push((
                me,
                Box::new(PostTask {
                    egress: path::Egress::new(
                        arena.clone(),
                        Postprocess::new(arena.clone(), post_policy),
                        local_tx_hooks.clone(),
                        pol.hooks.rings.clone(),
                        q,
                        csum_offload,
                    ),
                    ctl,
                    pending: (0..nd)
                        .map(|_| (0..ng).map(|_| Vec::new()).collect())
                        .collect(),
                    from_place,
                    to_io,
                    tags: Vec::with_capacity(BURST),
                    items: Vec::with_capacity(BURST),
                    batch: Vec::with_capacity(BURST),
                    meta: Meta::new(me, worker_of(me), &mut reports),
                }),
            ));
        }

        // Threads.
        let stop = Arc::new(AtomicBool::new(false));
        // The process's cores, not the calling thread's: a caller pinned to one core would
        // otherwise confine every worker to it.
        let cores: Vec<core_affinity::CoreId> = super::topology::usable_cores()
            .iter()
            .map(|&id| core_affinity::CoreId { id })
            .collect();
        let mut per_worker: Vec<Vec<Box<dyn Task>>> =
            topology.workers.iter().map(|_| Vec::new()).collect();
        let mut cpu_of: Vec<WorkerCpu> = topology
            .workers
            .iter()
            .map(|_| WorkerCpu {
                thread_ns: Arc::new(AtomicU64::new(0)),
                tasks: Vec::new(),
            })
            .collect();
        for (t, task) in tasks {
            per_worker[worker_of(t)].push(task);
            cpu_of[worker_of(t)]
                .tasks
                .push((t, Arc::new(AtomicU64::new(0))));
        }
        let mut workers = Vec::new();
        // With fewer cores than threads that want to run (workers plus applications),
        // busy workers yield regularly instead of holding their core for a whole time slice.
        let share_core = topology.workers.len() >= super::topology::core_budget().max(1);
        if topology.caller_driven {
            // The application's thread runs everything (`Threaded::poll`).
            let tasks: Vec<Box<dyn Task>> = per_worker.into_iter().flatten().collect();
            let refs: Vec<TaskRef> = cpu_of
                .iter()
                .flat_map(|w| w.tasks.iter().map(|(t, _)| *t))
                .collect();
            return Ok(Threaded {
                arena,
                host: Host { shared: host },
                stop,
                wakes,
                workers,
                driven: Some(Driven::new(tasks, refs, clock.clone())),
                cpu: Vec::new(),
                reports,
                summary,
            });
        }
        for (i, (spec, mut tasks)) in topology.workers.iter().zip(per_worker).enumerate() {
            let task_ns: Vec<Arc<AtomicU64>> =
                cpu_of[i].tasks.iter().map(|(_, ns)| ns.clone()).collect();
            let stop = stop.clone();
            let clock = clock.clone();
            let wake = wakes[i].clone();
            let cpu = cpu_of[i].thread_ns.clone();
            // The port has no interrupt and the timers no thread of their own: the I/O
            // task's worker sleeps briefly; the others sleep until a producer wakes them.
            let nap = if i == io_worker { IO_NAP } else { IDLE_NAP };
            let core = spec
                .core
                .and_then(|c| cores.get(c % cores.len().max(1)).copied());
            let handle = std::thread::Builder::new()
                .name(format!("flextoe-w{i}"))
                .spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    let mut idle = 0u32;
                    let mut polls = 0u64;
                    // Sampled run time per task (ns, scaled up by the sampling rate).
                    let mut times = vec![0u64; tasks.len()];
                    let mut reported = std::time::Instant::now();
                    let run_all = |tasks: &mut Vec<Box<dyn Task>>| {
                        let now = clock.now();
                        let mut busy = false;
                        for t in tasks.iter_mut() {
                            busy |= t.run(now);
                        }
                        busy
                    };
                    let run_timed = |tasks: &mut Vec<Box<dyn Task>>, times: &mut [u64]| {
                        let now = clock.now();
                        let mut busy = false;
                        let mut t0 = std::time::Instant::now();
                        for (t, spent) in tasks.iter_mut().zip(times.iter_mut()) {
                            busy |= t.run(now);
                            let t1 = std::time::Instant::now();
                            *spent += (t1 - t0).as_nanos() as u64 * SAMPLE_EVERY;
                            t0 = t1;
                        }
                        busy
                    };
                    let publish = |tasks: &mut Vec<Box<dyn Task>>, times: &[u64]| {
                        for ((t, ns), total) in tasks.iter_mut().zip(&task_ns).zip(times) {
                            ns.store(*total, Ordering::Relaxed);
                            t.report();
                        }
                        if let Ok(t) = cpu_time::ThreadTime::try_now() {
                            cpu.store(t.as_duration().as_nanos() as u64, Ordering::Relaxed);
                        }
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let busy = if polls.is_multiple_of(SAMPLE_EVERY) {
                            run_timed(&mut tasks, &mut times)
                        } else {
                            run_all(&mut tasks)
                        };
                        polls += 1;
                        if polls.is_multiple_of(64) && reported.elapsed() >= REPORT_EVERY {
                            reported = std::time::Instant::now();
                            publish(&mut tasks, &times);
                        }
                        if busy {
                            idle = 0;
                            // Share the core now and then: applications and other workers
                            // may have been placed on it too.
                            if share_core && polls.is_multiple_of(16) {
                                std::thread::yield_now();
                            }
                            continue;
                        }
                        idle = idle.saturating_add(1);
                        if idle < SPIN_PASSES {
                            std::hint::spin_loop();
                            continue;
                        }
                        // Spin, then park: announce it, look once more, sleep until a
                        // producer wakes this worker.
                        wake.prepare();
                        if run_all(&mut tasks) || stop.load(Ordering::Relaxed) {
                            wake.cancel();
                            idle = 0;
                            continue;
                        }
                        wake.park(Some(nap));
                    }
                    publish(&mut tasks, &times);
                })
                .map_err(|_| EngineError::Config("could not spawn a worker thread"))?;
            workers.push(handle);
        }
        Ok(Threaded {
            arena,
            host: Host { shared: host },
            stop,
            wakes,
            workers,
            driven: None,
            cpu: cpu_of,
            reports,
            summary,
        })
    }

    /// The inline mapping ([`fused`]): the whole engine as one task on the caller's thread.
    fn inline_mapping<P, K, C, S>(
        cfg: EngineConfig,
        port: P,
        clock: K,
        pol: Policies<C, S>,
    ) -> Result<Self, EngineError>
    where
        P: Port + 'static,
        K: Clock + Clone + 'static,
        C: CongestionControl,
        S: FlowScheduler,
    {
        let engine = crate::pipeline::Engine::assemble(cfg, port, pol.cc, pol.sched, pol.hooks)?;
        let (arena, host) = (engine.arena().clone(), engine.host());
        let mut reports = Vec::new();
        let summary: Shared<IoSummary> = Arc::new(Mutex::new(IoSummary::default()));
        let mut task = fused::Fused::new(engine, &mut reports, summary.clone());
        task.report();
        Ok(Threaded {
            arena,
            host,
            stop: Arc::new(AtomicBool::new(false)),
            wakes: Vec::new(),
            workers: Vec::new(),
            driven: Some(Driven::new(vec![Box::new(task)], Vec::new(), clock)),
            cpu: Vec::new(),
            reports,
            summary,
        })
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
        if d.polls.is_multiple_of(SAMPLE_EVERY) && d.times.len() == d.tasks.len() {
            let mut t0 = std::time::Instant::now();
            for (t, spent) in d.tasks.iter_mut().zip(d.times.iter_mut()) {
                busy |= t.run(now);
                let t1 = std::time::Instant::now();
                *spent += (t1 - t0).as_nanos() as u64 * SAMPLE_EVERY;
                t0 = t1;
            }
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

    /// Whether the application's thread runs the engine ([`poll`](Self::poll)).
    pub fn is_caller_driven(&self) -> bool {
        self.driven.is_some()
    }

    /// The frame arena (to read and free frames a user stage redirected).
    pub fn arena(&self) -> &Arc<FrameArena> {
        &self.arena
    }

    /// Statistics as last published by the tasks (about once a millisecond).
    pub fn stats(&self) -> ThreadedStats {
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
            let all: u64 = w
                .tasks
                .iter()
                .map(|(_, ns)| ns.load(Ordering::Relaxed))
                .sum();
            let Some((_, ns)) = w.tasks.iter().find(|(t, _)| *t == task) else {
                continue;
            };
            if all > 0 {
                let mine = ns.load(Ordering::Relaxed);
                r.cpu = worker_cpu[r.worker].mul_f64(mine as f64 / all as f64);
            }
        }
        // Caller-driven: the sampled run times themselves (the application's thread also
        // runs the application, so its CPU clock says nothing about the tasks).
        if let Some(d) = &self.driven {
            let d = d.lock().unwrap_or_else(|p| p.into_inner());
            for r in &mut tasks {
                let Some(task) = r.task else { continue };
                if let Some(i) = d.refs.iter().position(|t| *t == task) {
                    r.cpu = Duration::from_nanos(d.times[i]);
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
                t.report();
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
