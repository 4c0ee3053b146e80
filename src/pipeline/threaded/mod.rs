//! The threaded runtime: stage replicas and flow groups on worker threads, joined by SPSC
//! burst rings, with explicit sequencing.
//!
//! ```text
//!            +--> preprocess 0 --+                       +--> postprocess 0 --+
//! port -> io +--> preprocess 1 --+--> merge -> group g --+--> postprocess 1 --+--> reorder g -> io -> port
//!  (ingress numbers)   (per-group streams   (protocol, place,   (headers, checksums)   (egress numbers)
//!                       with advances)       scheduler, notify)
//! ```
//!
//! * **Ingress.** The I/O task numbers every received frame and hands bursts to the
//!   preprocess replicas round-robin (telling the others how far the numbering went). Each
//!   replica emits, per flow group, its items plus advances; each group merges the replicas'
//!   streams back into arrival order ([`Merge`]) before its protocol stage.
//! * **Egress.** A group's protocol stage numbers its results; postprocess replicas build
//!   headers and checksums in parallel and pass frames (or tombstones for results that send
//!   nothing) on; a [`Reorder`] per group releases them to the wire in protocol order, with
//!   the topology's [`Overflow`] policy.
//! * **Order of notifications.** Payload placement, ring publication and application
//!   notifications stay on the group's thread, in protocol order, so per-connection
//!   notifications are in order and data is visible before it is acknowledged.
//!
//! Each task is a loop body ([`Task::run`]); a worker thread runs its tasks in turn and backs
//! off (spin, yield, short sleep) when none had work. Statistics are published by every task
//! every few hundred polls and can be read while the runtime runs ([`Threaded::stats`]).

mod ingress;

use super::path;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
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
use crate::ring::{spsc, Consumer, Producer};
use crate::stages::notify::{ControlEvent, Notify};
use crate::stages::place::{FlowRings, Place};
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
    /// Publish statistics (called every few hundred polls).
    fn report(&mut self);
}

/// Statistics of one task, as last published.
#[derive(Clone, Debug, Default)]
pub struct TaskReport {
    /// Which task.
    pub task: Option<TaskRef>,
    /// Worker thread index.
    pub worker: usize,
    /// Polls so far.
    pub polls: u64,
    /// Polls that found work.
    pub busy_polls: u64,
    /// Stages this task runs, with their counters.
    pub stages: Vec<(&'static str, StageStats)>,
    /// Occupancy of the task's input rings: (name, items waiting, capacity).
    pub rings: Vec<(&'static str, usize, usize)>,
    /// Reorder counters (groups: ingress merge; I/O: egress reorder per group).
    pub reorder: Vec<crate::reorder::ReorderStats>,
    /// The user stages this task runs, with their counters.
    pub hooks: Vec<HookReport>,
}

impl TaskReport {
    /// Fraction of polls that found work.
    pub fn busy_fraction(&self) -> f64 {
        if self.polls == 0 {
            0.0
        } else {
            self.busy_polls as f64 / self.polls as f64
        }
    }
}

/// What the I/O task publishes about the connections.
#[derive(Clone, Debug, Default)]
pub struct IoSummary {
    /// Control-plane counters.
    pub control: ControlStats,
    /// Installed flows.
    pub flows: usize,
    /// Connections the control plane knows (handshakes included).
    pub connections: Vec<(FourTuple, TcpConnState)>,
    /// Retransmissions so far.
    pub retransmissions: RetransmitTotals,
    /// Frames received and sent.
    pub rx_frames: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Arena frames in use.
    pub frames_in_use: usize,
}

/// Statistics of a threaded engine, readable while it runs.
#[derive(Clone, Debug, Default)]
pub struct ThreadedStats {
    /// One report per task.
    pub tasks: Vec<TaskReport>,
    /// Connections and control plane.
    pub io: IoSummary,
}

impl ThreadedStats {
    /// Every user stage's counters, summed over the tasks that run an instance of it.
    pub fn hooks(&self) -> Vec<HookReport> {
        let mut v = Vec::new();
        for t in &self.tasks {
            HookReport::merge_into(&mut v, &t.hooks);
        }
        v
    }

    /// One user stage's counters, summed over its instances.
    pub fn hook(&self, name: &str) -> Option<HookReport> {
        self.hooks().into_iter().find(|h| h.name == name)
    }

    /// A built-in stage's counters, summed over its instances.
    pub fn stage(&self, name: &str) -> StageStats {
        let mut s = StageStats::default();
        for (_, x) in self
            .tasks
            .iter()
            .flat_map(|t| &t.stages)
            .filter(|(n, _)| *n == name)
        {
            s.items_in += x.items_in;
            s.items_out += x.items_out;
            s.bursts += x.bursts;
            s.drops.merge(&x.drops);
        }
        s
    }
}

impl std::fmt::Display for ThreadedStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "rx_frames={} tx_frames={} flows={} frames_in_use={} retransmissions fast={} timeout={}",
            self.io.rx_frames,
            self.io.tx_frames,
            self.io.flows,
            self.io.frames_in_use,
            self.io.retransmissions.fast,
            self.io.retransmissions.timeout
        )?;
        for t in &self.tasks {
            writeln!(
                f,
                "  worker {} {:?}: busy {:.0}% of {} polls",
                t.worker,
                t.task.unwrap_or(TaskRef::Io),
                100.0 * t.busy_fraction(),
                t.polls
            )?;
            for (name, s) in &t.stages {
                writeln!(f, "    {:<12} {}", name, s)?;
            }
            for (name, len, cap) in &t.rings {
                if *len > 0 {
                    writeln!(f, "    ring {:<10} {}/{}", name, len, cap)?;
                }
            }
        }
        for h in self.hooks() {
            writeln!(f, "  hook {}", h)?;
        }
        write!(
            f,
            "  control: established={} closed={} resets={} timeouts={} drops: {}",
            self.io.control.established,
            self.io.control.closed,
            self.io.control.resets,
            self.io.control.timeouts,
            self.io.control.drops
        )
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
        state: TcpState,
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
    },
    Remove(FlowId),
}

/// A protocol result on its way to the wire: (flow group, egress number, result).
type Egress = (u16, u64, ProtoResult);

enum PostCtl {
    Install(FlowId, FlowView),
    Remove(FlowId),
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
// Preprocess replica
// ---------------------------------------------------------------------------------------

struct PreTask {
    ingress: path::Ingress,
    groups_of: Vec<u16>,
    ctl: Receiver<PreCtl>,
    input: Consumer<PreIn>,
    to_group: Vec<Producer<Ingress<RxWork>>>,
    pending: Vec<Vec<Ingress<RxWork>>>,
    /// Preprocess's punts and the user stages' diverted frames.
    to_io: ToIo,
    batch: Vec<PreIn>,
    frames: Vec<Frame>,
    seqs: Vec<u64>,
    diverted: Diverted,
    meta: Meta,
}

impl PreTask {
    fn flush(&mut self) -> bool {
        let mut all = true;
        for (g, p) in self.to_group.iter_mut().enumerate() {
            if !self.pending[g].is_empty() {
                p.push_burst(&mut self.pending[g]);
                all &= self.pending[g].is_empty();
            }
        }
        all & self.to_io.flush()
    }
}

impl Task for PreTask {
    fn run(&mut self, now: Instant) -> bool {
        self.meta.polls += 1;
        while let Ok(m) = self.ctl.try_recv() {
            match m {
                PreCtl::Install(t, id, g) => {
                    self.ingress.pre.install(t, id);
                    if self.groups_of.len() <= id as usize {
                        self.groups_of.resize(id as usize + 1, 0);
                    }
                    self.groups_of[id as usize] = g;
                }
                PreCtl::Remove(t) => self.ingress.pre.remove(&t),
            }
        }
        // Backpressure: nothing new until the last outputs are out.
        if !self.flush() {
            self.meta.busy += 1;
            return true;
        }
        self.batch.clear();
        if self.input.pop_burst(&mut self.batch, BURST) == 0 {
            return false;
        }
        self.meta.busy += 1;
        let mut last = 0;
        for m in self.batch.drain(..) {
            match m {
                PreIn::Advance(s) => last = last.max(s),
                PreIn::Frame(seq, f) => {
                    last = last.max(seq);
                    self.frames.push(f);
                    self.seqs.push(seq);
                }
            }
        }
        let (pending, groups_of) = (&mut self.pending, &self.groups_of);
        let punts = &mut self.to_io.punts.pending;
        self.ingress.run(
            now,
            &mut self.frames,
            &mut self.seqs,
            &mut self.diverted,
            |seq, out| match out {
                PreOut::Rx(w) => {
                    let g = groups_of.get(w.flow as usize).copied().unwrap_or(0) as usize;
                    let n = pending.len();
                    pending[g % n].push(Ingress::Item(seq, w));
                }
                PreOut::Punt(p) => punts.push(p),
            },
        );
        self.to_io.take(&mut self.diverted);
        for q in self.pending.iter_mut() {
            q.push(Ingress::Advance(last));
        }
        self.flush();
        true
    }

    fn report(&mut self) {
        let pre = &self.ingress.pre;
        self.meta.publish(
            vec![(pre.name(), pre.stats().clone())],
            vec![("input", self.input.len(), self.input.capacity())],
            Vec::new(),
            self.ingress.hooks.reports(),
        );
    }
}

// ---------------------------------------------------------------------------------------
// Flow group
// ---------------------------------------------------------------------------------------

struct GroupTask<C: CongestionControl, S: FlowScheduler> {
    transport: path::Transport<C, S>,
    /// The place replica of each flow.
    place_of: Vec<u16>,
    views: Vec<Option<(RingObserver, RingObserver)>>,
    ctl: Receiver<GroupCtl>,
    from_pre: Vec<Consumer<Ingress<RxWork>>>,
    merge: Merge<RxWork>,
    from_io: Consumer<ProtoWork>,
    to_place: Vec<Producer<(u64, ProtoResult)>>,
    pending_out: Vec<Vec<(u64, ProtoResult)>>,
    egress_seq: u64,
    work: Vec<ProtoWork>,
    results: Vec<ProtoResult>,
    segs: Vec<RxWork>,
    diverted: Diverted,
    to_io: ToIo,
    meta: Meta,
}

impl<C: CongestionControl, S: FlowScheduler> GroupTask<C, S> {
    fn flush(&mut self) -> bool {
        let mut all = true;
        for (p, q) in self.to_place.iter_mut().zip(self.pending_out.iter_mut()) {
            if !q.is_empty() {
                p.push_burst(q);
                all &= q.is_empty();
            }
        }
        all
    }

    fn control(&mut self) {
        while let Ok(m) = self.ctl.try_recv() {
            match m {
                GroupCtl::Install {
                    id,
                    state,
                    views,
                    identity,
                    place,
                } => {
                    let i = id as usize;
                    self.transport.install(id, state, &identity);
                    if self.views.len() <= i {
                        self.views.resize(i + 1, None);
                        self.place_of.resize(i + 1, 0);
                    }
                    self.views[i] = Some(views);
                    self.place_of[i] = place;
                }
                GroupCtl::Remove(id) => {
                    self.transport.remove(id);
                    if let Some(v) = self.views.get_mut(id as usize) {
                        *v = None;
                    }
                }
            }
        }
    }

    fn run_work(&mut self, now: Instant) {
        if self.work.is_empty() {
            return;
        }
        // Inputs were taken before the control messages were read, so every flow they
        // name is installed by now.
        self.control();
        for w in self.work.iter_mut() {
            if let ProtoWork::App {
                flow,
                positions: positions @ None,
                ..
            } = w
            {
                if let Some(Some((tx, rx))) = self.views.get(*flow as usize) {
                    *positions = Some((tx.head(), rx.tail()));
                }
            }
        }
        self.transport.run(now, &mut self.work, &mut self.results);
        let replicas = self.to_place.len();
        for r in self.results.drain(..) {
            let q = self.place_of.get(r.flow as usize).copied().unwrap_or(0) as usize % replicas;
            self.pending_out[q].push((self.egress_seq, r));
            self.egress_seq += 1;
        }
    }
}

impl<C: CongestionControl, S: FlowScheduler> Task for GroupTask<C, S> {
    fn run(&mut self, now: Instant) -> bool {
        self.meta.polls += 1;
        if !(self.flush() & self.to_io.flush()) {
            self.meta.busy += 1;
            return true;
        }
        let mut busy = false;
        // Ingress: merge the replicas' streams back into arrival order.
        for _ in 0..BURST {
            for (i, c) in self.from_pre.iter_mut().enumerate() {
                while self.merge.wants(i) {
                    match c.pop() {
                        Some(m) => self.merge.push(i, m),
                        None => break,
                    }
                }
            }
            match self.merge.pop() {
                Some((_, w)) => self.segs.push(w),
                None => break,
            }
        }
        // Work from the I/O task (application updates, timers, control-plane requests,
        // re-injected segments).
        while self.work.len() + self.segs.len() < BURST {
            match self.from_io.pop() {
                Some(ProtoWork::Rx(w)) => self.segs.push(w),
                Some(w) => self.work.push(w),
                None => break,
            }
        }
        self.transport
            .take_segments(now, &mut self.segs, &mut self.work, &mut self.diverted);
        self.to_io.take(&mut self.diverted);
        if !self.work.is_empty() {
            busy = true;
            self.run_work(now);
        }
        if self.transport.sched.pending() > 0 {
            busy = true;
            self.transport.grant(now, BURST, &mut self.work);
            self.run_work(now);
        }
        self.flush();
        self.to_io.flush();
        if busy {
            self.meta.busy += 1;
        }
        busy
    }

    fn report(&mut self) {
        let mut rings = vec![("from_io", self.from_io.len(), self.from_io.capacity())];
        for c in &self.from_pre {
            rings.push(("from_pre", c.len(), c.capacity()));
        }
        let mut hooks = self.transport.seg_hooks.reports();
        hooks.extend(self.transport.result_hooks.reports());
        self.meta.publish(
            self.transport.stats().into(),
            rings,
            vec![self.merge.stats()],
            hooks,
        );
    }
}

// ---------------------------------------------------------------------------------------
// Place replica
// ---------------------------------------------------------------------------------------

struct PlaceTask {
    delivery: path::Delivery,
    ctl: Receiver<PlaceCtl>,
    from_group: Vec<Consumer<(u64, ProtoResult)>>,
    to_post: Vec<Producer<Egress>>,
    next_post: usize,
    pending: Vec<Egress>,
    events: Producer<ControlEvent>,
    pending_events: Vec<ControlEvent>,
    batch: Vec<(u64, ProtoResult)>,
    results: Vec<ProtoResult>,
    seqs: Vec<u64>,
    meta: Meta,
}

impl PlaceTask {
    fn control(&mut self) {
        while let Ok(m) = self.ctl.try_recv() {
            match m {
                PlaceCtl::Install { id, rings, conn } => {
                    self.delivery.place.install(id, rings);
                    self.delivery.notify.install(id, conn);
                }
                PlaceCtl::Remove(id) => {
                    self.delivery.place.remove(id);
                    self.delivery.notify.remove(id);
                }
            }
        }
    }

    fn flush(&mut self) -> bool {
        if !self.pending_events.is_empty() {
            self.events.push_burst(&mut self.pending_events);
        }
        let n = self.to_post.len();
        for k in 0..n {
            if self.pending.is_empty() {
                break;
            }
            let q = (self.next_post + k) % n;
            self.to_post[q].push_burst(&mut self.pending);
            if self.pending.is_empty() {
                self.next_post = (q + 1) % n;
            }
        }
        self.pending.is_empty() && self.pending_events.is_empty()
    }
}

impl Task for PlaceTask {
    fn run(&mut self, now: Instant) -> bool {
        self.meta.polls += 1;
        if !self.flush() {
            self.meta.busy += 1;
            return true;
        }
        let mut busy = false;
        for g in 0..self.from_group.len() {
            self.batch.clear();
            if self.from_group[g].pop_burst(&mut self.batch, BURST) == 0 {
                continue;
            }
            busy = true;
            // Taken inputs first, control messages second: every flow named is installed.
            self.control();
            self.seqs.clear();
            for (seq, r) in self.batch.drain(..) {
                self.seqs.push(seq);
                self.results.push(r);
            }
            self.delivery
                .run(now, &mut self.results, &mut self.pending_events);
            for (seq, r) in self.seqs.iter().copied().zip(self.results.drain(..)) {
                self.pending.push((g as u16, seq, r));
            }
            self.flush();
        }
        if busy {
            self.meta.busy += 1;
        }
        busy
    }

    fn report(&mut self) {
        self.meta.publish(
            self.delivery.stats().into(),
            self.from_group
                .iter()
                .map(|c| ("from_group", c.len(), c.capacity()))
                .collect(),
            Vec::new(),
            Vec::new(),
        );
    }
}

// ---------------------------------------------------------------------------------------
// Postprocess replica
// ---------------------------------------------------------------------------------------

struct PostTask {
    egress: path::Egress,
    ctl: Receiver<PostCtl>,
    from_place: Vec<Consumer<Egress>>,
    /// Output rings per (place replica, flow group): frames of one group that came through
    /// one place replica stay in increasing order, which the egress reorder relies on.
    to_io: Vec<Vec<Producer<Tagged<Frame>>>>,
    pending: Vec<Vec<Vec<Tagged<Frame>>>>,
    tags: Vec<(u16, u64)>,
    items: Vec<ProtoResult>,
    batch: Vec<Egress>,
    meta: Meta,
}

impl Task for PostTask {
    fn run(&mut self, now: Instant) -> bool {
        self.meta.polls += 1;
        let mut busy = false;
        let mut stuck = false;
        for (outs, pend) in self.to_io.iter_mut().zip(self.pending.iter_mut()) {
            for (p, q) in outs.iter_mut().zip(pend.iter_mut()) {
                if !q.is_empty() {
                    p.push_burst(q);
                    stuck |= !q.is_empty();
                }
            }
        }
        if stuck {
            self.meta.busy += 1;
            return true;
        }
        for i in 0..self.from_place.len() {
            self.batch.clear();
            if self.from_place[i].pop_burst(&mut self.batch, BURST) == 0 {
                continue;
            }
            busy = true;
            // Taken inputs first, control messages second: every flow named is installed.
            while let Ok(m) = self.ctl.try_recv() {
                match m {
                    PostCtl::Install(id, v) => self.egress.post.install(id, v),
                    PostCtl::Remove(id) => self.egress.post.remove(id),
                }
            }
            self.tags.clear();
            self.items.clear();
            for (g, s, r) in self.batch.drain(..) {
                self.tags.push((g, s));
                self.items.push(r);
            }
            let pend = &mut self.pending[i];
            let tags = &self.tags;
            // A result that sends nothing (or whose frame a user stage took) becomes a
            // tombstone: the egress order stays whole.
            self.egress.run(now, &mut self.items, |k, f| {
                let (g, s) = tags[k];
                let g = g as usize % pend.len();
                pend[g].push(match f {
                    Some(f) => Tagged::item(s, f),
                    None => Tagged::tombstone(s),
                });
            });
            for (p, q) in self.to_io[i].iter_mut().zip(pend.iter_mut()) {
                if !q.is_empty() {
                    p.push_burst(q);
                }
            }
        }
        if busy {
            self.meta.busy += 1;
        }
        busy
    }

    fn report(&mut self) {
        self.meta.publish(
            self.egress.stats().into(),
            self.from_place
                .iter()
                .map(|c| ("from_place", c.len(), c.capacity()))
                .collect(),
            Vec::new(),
            self.egress.hooks.reports(),
        );
    }
}

// ---------------------------------------------------------------------------------------
// I/O and control plane
// ---------------------------------------------------------------------------------------

struct IoTask<P: Port> {
    arena: Arc<FrameArena>,
    port: P,
    control: Control,
    host: Arc<HostShared>,
    cout: ControlOutput,
    /// A private preprocess for frames the control plane re-injects.
    reinject: Preprocess,
    groups: usize,
    group_of: Vec<u16>,
    next_seq: u64,
    /// To the preprocess replicas, or to the `rx_frame` stages' own task.
    ingress: ingress::Dealer,
    pre_ctl: Vec<Sender<PreCtl>>,
    group_ctl: Vec<Sender<GroupCtl>>,
    place_ctl: Vec<Sender<PlaceCtl>>,
    post_ctl: Vec<Sender<PostCtl>>,
    punts: Vec<Consumer<Punt>>,
    events: Vec<Consumer<ControlEvent>>,
    to_group: Vec<Producer<ProtoWork>>,
    pending_work: Vec<VecDeque<ProtoWork>>,
    from_post: Vec<Vec<Consumer<Tagged<Frame>>>>,
    egress: Vec<Reorder<Frame>>,
    overflow: Overflow,
    rx: Vec<Frame>,
    tx: Vec<Frame>,
    batch: Vec<PreIn>,
    rx_frames: u64,
    tx_frames: u64,
    placement: Arc<dyn Placement>,
    place_of: Vec<u16>,
    /// Frames the user stages sent back out, from preprocess replicas and groups.
    raw_tx: Vec<Consumer<Frame>>,
    /// Control-plane and reflected frames, before the `tx_frame` hooks.
    staged: Vec<Frame>,
    tx_hooks: Chain<TxFrame>,
    rings: Vec<RedirectRing>,
    diverted: Diverted,
    instance: usize,
    meta: Meta,
    summary: Shared<IoSummary>,
}

impl<P: Port> IoTask<P> {
    fn route(&mut self, w: ProtoWork) {
        let g = self.group_of.get(w.flow() as usize).copied().unwrap_or(0) as usize % self.groups;
        self.pending_work[g].push_back(w);
    }

    fn apply_control(&mut self) -> bool {
        let c = &mut self.cout;
        if c.installs.is_empty()
            && c.removals.is_empty()
            && c.work.is_empty()
            && c.tx.is_empty()
            && c.reinject.is_empty()
        {
            return false;
        }
        self.staged.append(&mut self.cout.tx);
        for ins in std::mem::take(&mut self.cout.installs) {
            let id = ins.identity.id;
            let t = ins.identity.tuple;
            let g = ins.identity.group;
            let replicas = self.place_ctl.len();
            let place = self.placement.place(id, &t, replicas) % replicas;
            if self.group_of.len() <= id as usize {
                self.group_of.resize(id as usize + 1, 0);
                self.place_of.resize(id as usize + 1, 0);
            }
            self.group_of[id as usize] = g;
            self.place_of[id as usize] = place as u16;
            self.reinject.install(t, id);
            for c in &self.pre_ctl {
                let _ = c.send(PreCtl::Install(t, id, g));
            }
            let view = FlowView {
                identity: ins.identity.clone(),
                counters: ins.counters,
            };
            for c in &self.post_ctl {
                let _ = c.send(PostCtl::Install(id, view.clone()));
            }
            // Place first, group second: a result for this flow can only exist after the
            // group has its state, and by then the place replica's message is in its channel.
            let views = (ins.rings.tx.observer(), ins.rings.rx.observer());
            let _ = self.place_ctl[place].send(PlaceCtl::Install {
                id,
                rings: ins.rings,
                conn: ins.conn.clone(),
            });
            let _ = self.group_ctl[g as usize % self.groups].send(GroupCtl::Install {
                id,
                state: ins.state,
                views,
                identity: ins.identity.clone(),
                place: place as u16,
            });
            ins.conn.set_flow(id);
            ins.conn.set_status(crate::host::ConnStatus::Established);
            if let Some(w) = self.control.app_update(id, &mut self.cout) {
                self.route(w);
            }
        }
        for f in std::mem::take(&mut self.cout.reinject) {
            match self.reinject.classify(f, true) {
                Some(PreOut::Rx(w)) => self.route(ProtoWork::Rx(w)),
                Some(PreOut::Punt(p)) => self.arena.free(p.frame),
                None => {}
            }
        }
        for w in std::mem::take(&mut self.cout.work) {
            self.route(w);
        }
        for (id, t) in std::mem::take(&mut self.cout.removals) {
            self.reinject.remove(&t);
            for c in &self.pre_ctl {
                let _ = c.send(PreCtl::Remove(t));
            }
            for c in &self.post_ctl {
                let _ = c.send(PostCtl::Remove(id));
            }
            let g = self.group_of.get(id as usize).copied().unwrap_or(0) as usize % self.groups;
            let _ = self.group_ctl[g].send(GroupCtl::Remove(id));
            let place = self.place_of.get(id as usize).copied().unwrap_or(0) as usize;
            let _ = self.place_ctl[place % self.place_ctl.len()].send(PlaceCtl::Remove(id));
        }
        true
    }

    fn summary(&self) -> IoSummary {
        IoSummary {
            control: self.control.stats().clone(),
            flows: self.control.connection_count(),
            connections: self
                .control
                .tuples()
                .into_iter()
                .filter_map(|t| self.control.conn_state(&t).map(|s| (t, s)))
                .collect(),
            retransmissions: self.control.retransmissions(),
            rx_frames: self.rx_frames,
            tx_frames: self.tx_frames,
            frames_in_use: self.arena.in_use(),
        }
    }
}

impl<P: Port> Task for IoTask<P> {
    fn run(&mut self, now: Instant) -> bool {
        self.meta.polls += 1;
        let mut busy = false;
        self.control.poll_requests(now, &mut self.cout);
        // Ingress: number frames and deal bursts to the preprocess replicas (or to the
        // `rx_frame` stages' task, which deals them on).
        for _ in 0..4 {
            if !self.ingress.ready() {
                break;
            }
            let n = self.port.recv(now, &self.arena, &mut self.rx, BURST);
            if n == 0 {
                break;
            }
            busy = true;
            self.rx_frames += n as u64;
            self.batch.clear();
            for f in self.rx.drain(..) {
                self.batch.push(PreIn::Frame(self.next_seq, f));
                self.next_seq += 1;
            }
            self.ingress.deal(&mut self.batch, self.next_seq - 1);
        }
        self.ingress.advances();
        // Punted frames.
        for i in 0..self.punts.len() {
            while let Some(p) = self.punts[i].pop() {
                busy = true;
                self.control.handle_punt(now, p, &mut self.cout);
            }
        }
        // Data-path events.
        for i in 0..self.events.len() {
            while let Some(ev) = self.events[i].pop() {
                busy = true;
                self.control.handle_event(now, ev, &mut self.cout);
            }
        }
        // Application doorbells.
        while let Some(flow) = self.host.doorbells.pop() {
            busy = true;
            if let Some(w) = self.control.app_update(flow, &mut self.cout) {
                self.route(w);
            }
        }
        self.control.poll_timers(now, &mut self.cout);
        busy |= self.apply_control();
        for g in 0..self.groups {
            while let Some(w) = self.pending_work[g].pop_front() {
                if let Err(back) = self.to_group[g].push(w) {
                    self.pending_work[g].push_front(back);
                    break;
                }
            }
        }
        // Control-plane frames and frames user stages reflected: through the `tx_frame`
        // hooks (the data path's frames went through them on the postprocess replicas).
        for c in self.raw_tx.iter_mut() {
            while let Some(f) = c.pop() {
                self.staged.push(f);
            }
        }
        if !self.staged.is_empty() {
            busy = true;
            if !self.tx_hooks.is_empty() {
                let cx = HookCx {
                    now,
                    arena: &self.arena,
                    instance: self.instance,
                };
                self.tx_hooks.run(
                    &cx,
                    &mut self.staged,
                    &mut Vec::<()>::new(),
                    &self.rings,
                    false,
                    &mut self.diverted,
                );
            }
            self.tx.append(&mut self.staged);
        }
        // Egress: per group, frames back into protocol order, then to the wire.
        for g in 0..self.groups {
            for q in 0..self.from_post[g].len() {
                while let Some(seq) = self.from_post[g][q].peek().map(|t| t.seq) {
                    // Backpressure: a frame too far ahead stays in its ring until the
                    // missing ones (from other replicas) have gone out.
                    if self.overflow == Overflow::Backpressure && !self.egress[g].fits(seq) {
                        break;
                    }
                    let Some(t) = self.from_post[g][q].pop() else {
                        break;
                    };
                    busy = true;
                    if let Err(back) = self.egress[g].offer(t, &mut self.tx) {
                        // Not reached: `fits` was checked; never lose a frame regardless.
                        if let Some(f) = back.item {
                            self.arena.free(f);
                        }
                    }
                }
            }
        }
        if !self.tx.is_empty() {
            self.tx_frames += self.tx.len() as u64;
            self.port.send(now, &self.arena, &mut self.tx);
        }
        if busy {
            self.meta.busy += 1;
        }
        busy
    }

    fn report(&mut self) {
        let mut rings = Vec::new();
        for (len, cap) in self.ingress.rings() {
            rings.push(("ingress", len, cap));
        }
        for g in &self.from_post {
            for c in g {
                rings.push(("from_post", c.len(), c.capacity()));
            }
        }
        self.meta.publish(
            vec![("reinject", self.reinject.stats().clone())],
            rings,
            self.egress.iter().map(|r| r.stats()).collect(),
            self.tx_hooks.reports(),
        );
        publish(&self.summary, &self.summary());
    }
}

// ---------------------------------------------------------------------------------------
// The runtime
// ---------------------------------------------------------------------------------------

/// A threaded engine: the stages of a [`Topology`] on worker threads.
pub struct Threaded {
    host: Host,
    arena: Arc<FrameArena>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    reports: Vec<Shared<TaskReport>>,
    summary: Shared<IoSummary>,
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
        let csum_offload = port.capabilities().tx_checksum_offload;
        let mut reports = Vec::new();

        // Rings: io -> pre; pre -> group (every pair); pre -> io (punts); io -> group (work);
        // group -> place (every pair); place -> post (every pair); place -> io (events);
        // post -> io (every pair, per group).
        let (to_pre, pre_in): (Vec<_>, Vec<_>) = (0..np).map(|_| spsc::<PreIn>(rs)).unzip();
        let mut pre_to_group: Vec<Vec<Producer<Ingress<RxWork>>>> =
            (0..np).map(|_| Vec::new()).collect();
        let mut group_from_pre: Vec<Vec<Consumer<Ingress<RxWork>>>> =
            (0..ng).map(|_| Vec::new()).collect();
        for outs in pre_to_group.iter_mut() {
            for ins in group_from_pre.iter_mut() {
                let (p, c) = spsc(rs);
                outs.push(p);
                ins.push(c);
            }
        }
        // Punts and reflected frames to the I/O task: one ring each per preprocess replica,
        // per group and for the `rx_frame` stages' own task.
        let (mut punt_p, punt_c): (Vec<_>, Vec<_>) =
            (0..np + ng + 1).map(|_| spsc::<Punt>(rs)).unzip();
        let (mut raw_p, raw_c): (Vec<_>, Vec<_>) =
            (0..np + ng + 1).map(|_| spsc::<Frame>(rs)).unzip();
        let (hook_punts, hook_raw) = (punt_p.pop(), raw_p.pop());
        let group_punts = punt_p.split_off(np);
        let group_raw = raw_p.split_off(np);
        let (work_p, work_c): (Vec<_>, Vec<_>) = (0..ng).map(|_| spsc::<ProtoWork>(rs)).unzip();
        let mut group_to_place: Vec<Vec<Producer<(u64, ProtoResult)>>> =
            (0..ng).map(|_| Vec::new()).collect();
        let mut place_from_group: Vec<Vec<Consumer<(u64, ProtoResult)>>> =
            (0..nd).map(|_| Vec::new()).collect();
        for outs in group_to_place.iter_mut() {
            for ins in place_from_group.iter_mut() {
                let (p, c) = spsc(rs);
                outs.push(p);
                ins.push(c);
            }
        }
        let mut place_to_post: Vec<Vec<Producer<Egress>>> = (0..nd).map(|_| Vec::new()).collect();
        let mut post_from_place: Vec<Vec<Consumer<Egress>>> = (0..nq).map(|_| Vec::new()).collect();
        for outs in place_to_post.iter_mut() {
            for ins in post_from_place.iter_mut() {
                let (p, c) = spsc(rs);
                outs.push(p);
                ins.push(c);
            }
        }
        let (ev_p, ev_c): (Vec<_>, Vec<_>) = (0..nd).map(|_| spsc::<ControlEvent>(rs)).unzip();
        // post -> io: one ring per (post replica, place replica, group).
        let mut post_to_io: Vec<Vec<Vec<Producer<Tagged<Frame>>>>> = (0..nq)
            .map(|_| (0..nd).map(|_| Vec::new()).collect())
            .collect();
        let mut io_from_post: Vec<Vec<Consumer<Tagged<Frame>>>> =
            (0..ng).map(|_| Vec::new()).collect();
        for per_post in post_to_io.iter_mut() {
            for outs in per_post.iter_mut() {
                for ins in io_from_post.iter_mut() {
                    let (p, c) = spsc(rs);
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

        let worker_of = |t: TaskRef| {
            topology
                .workers
                .iter()
                .position(|w| w.tasks.contains(&t))
                .unwrap_or(0)
        };

        // With an `rx_frame` task, the I/O task deals to it and it deals to the replicas.
        let rx_hooks_task = topology.rx_hooks;
        let (io_ingress, rx_hook_task) = if rx_hooks_task {
            let (p, c) = spsc::<PreIn>(rs);
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
        // Tasks.
        let mut tasks: Vec<(TaskRef, Box<dyn Task>)> = Vec::new();
        if let Some(t) = rx_hook_task {
            tasks.push((TaskRef::RxHooks, Box::new(t)));
        }
        let summary = Arc::new(Mutex::new(IoSummary::default()));
        tasks.push((
            TaskRef::Io,
            Box::new(IoTask {
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
                tx_frames: 0,
                placement: pol.placement.clone(),
                place_of: Vec::new(),
                raw_tx: raw_c,
                staged: Vec::new(),
                tx_hooks: pol.hooks.tx_frame.clone(),
                rings: pol.hooks.rings.clone(),
                diverted: Diverted::default(),
                instance: nq,
                meta: Meta::new(TaskRef::Io, worker_of(TaskRef::Io), &mut reports),
                summary: summary.clone(),
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
                        Protocol::with_congestion(pol.cc.clone()),
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
                    delivery: path::Delivery {
                        place: Place::new(arena.clone()),
                        notify: Notify::new(),
                    },
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
                        Postprocess::new(arena.clone(), cfg.ack_policy),
                        pol.hooks.tx_frame.clone(),
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
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let mut per_worker: Vec<Vec<Box<dyn Task>>> =
            topology.workers.iter().map(|_| Vec::new()).collect();
        for (t, task) in tasks {
            per_worker[worker_of(t)].push(task);
        }
        let mut workers = Vec::new();
        // With fewer cores than threads that want to run (workers plus applications),
        // busy workers yield regularly instead of holding their core for a whole time slice.
        let share_core = topology.workers.len() >= cores.len().max(1);
        for (i, (spec, mut tasks)) in topology.workers.iter().zip(per_worker).enumerate() {
            let stop = stop.clone();
            let clock = clock.clone();
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
                    while !stop.load(Ordering::Relaxed) {
                        let now = clock.now();
                        let mut busy = false;
                        for t in tasks.iter_mut() {
                            busy |= t.run(now);
                        }
                        polls += 1;
                        if polls.is_multiple_of(64) {
                            for t in tasks.iter_mut() {
                                t.report();
                            }
                        }
                        if busy {
                            idle = 0;
                            // Share the core now and then: applications and other workers
                            // may have been placed on it too.
                            if share_core && polls.is_multiple_of(16) {
                                std::thread::yield_now();
                            }
                        } else {
                            idle = idle.saturating_add(1);
                            if idle > 1024 {
                                std::thread::sleep(Duration::from_micros(20));
                            } else if idle > 32 {
                                std::thread::yield_now();
                            } else {
                                std::hint::spin_loop();
                            }
                        }
                    }
                    for t in tasks.iter_mut() {
                        t.report();
                    }
                })
                .map_err(|_| EngineError::Config("could not spawn a worker thread"))?;
            workers.push(handle);
        }
        Ok(Threaded {
            arena,
            host: Host { shared: host },
            stop,
            workers,
            reports,
            summary,
        })
    }

    /// A socket handle for the engine.
    pub fn host(&self) -> Host {
        self.host.clone()
    }

    /// The frame arena (to read and free frames a user stage redirected).
    pub fn arena(&self) -> &Arc<FrameArena> {
        &self.arena
    }

    /// Statistics as last published by the tasks (every few hundred polls).
    pub fn stats(&self) -> ThreadedStats {
        ThreadedStats {
            tasks: self
                .reports
                .iter()
                .map(|r| r.lock().unwrap_or_else(|p| p.into_inner()).clone())
                .collect(),
            io: self
                .summary
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Stop the workers and return the final statistics.
    pub fn stop(mut self) -> ThreadedStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
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
