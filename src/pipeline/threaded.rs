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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::topology::{TaskRef, Topology};
use super::{EngineConfig, EngineError, Parts};
use crate::backends::Port;
use crate::buf::{Frame, FrameArena};
use crate::control::{Control, ControlOutput, ControlStats, TcpConnState};
use crate::flow::{FlowId, RetransmitTotals};
use crate::host::{ConnShared, Host, HostShared};
use crate::reorder::{Ingress, Merge, Overflow, Reorder, Tagged};
use crate::ring::{spsc, Consumer, Producer};
use crate::stages::notify::{ControlEvent, Notify};
use crate::stages::place::{FlowRings, Place};
use crate::stages::postprocess::{FlowView, Postprocess};
use crate::stages::preprocess::Preprocess;
use crate::stages::protocol::{Protocol, TcpState};
use crate::stages::scheduler::Scheduler;
use crate::stages::{Actions, PreOut, ProtoResult, ProtoWork, Punt, RxWork, Stage, BURST};
use crate::stats::StageStats;
use crate::time::{Clock, Instant};
use crate::wire::{self, FourTuple};

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
        rings: FlowRings,
        conn: Arc<ConnShared>,
        header_len: usize,
    },
    Remove(FlowId),
}

enum PostCtl {
    Install(FlowId, FlowView),
    Remove(FlowId),
}

// ---------------------------------------------------------------------------------------
// Preprocess replica
// ---------------------------------------------------------------------------------------

struct PreTask {
    pre: Preprocess,
    groups_of: Vec<u16>,
    ctl: Receiver<PreCtl>,
    input: Consumer<PreIn>,
    to_group: Vec<Producer<Ingress<RxWork>>>,
    pending: Vec<Vec<Ingress<RxWork>>>,
    punts: Producer<Punt>,
    pending_punts: Vec<Punt>,
    batch: Vec<PreIn>,
    polls: u64,
    busy: u64,
    report: Shared<TaskReport>,
    me: TaskRef,
    worker: usize,
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
        if !self.pending_punts.is_empty() {
            self.punts.push_burst(&mut self.pending_punts);
            all &= self.pending_punts.is_empty();
        }
        all
    }
}

impl Task for PreTask {
    fn run(&mut self, _now: Instant) -> bool {
        self.polls += 1;
        while let Ok(m) = self.ctl.try_recv() {
            match m {
                PreCtl::Install(t, id, g) => {
                    self.pre.install(t, id);
                    if self.groups_of.len() <= id as usize {
                        self.groups_of.resize(id as usize + 1, 0);
                    }
                    self.groups_of[id as usize] = g;
                }
                PreCtl::Remove(t) => self.pre.remove(&t),
            }
        }
        // Backpressure: nothing new until the last outputs are out.
        if !self.flush() {
            self.busy += 1;
            return true;
        }
        self.batch.clear();
        if self.input.pop_burst(&mut self.batch, BURST) == 0 {
            return false;
        }
        self.busy += 1;
        self.pre.note_burst();
        let mut last = 0;
        for m in self.batch.drain(..) {
            match m {
                PreIn::Advance(s) => last = last.max(s),
                PreIn::Frame(seq, f) => {
                    last = last.max(seq);
                    match self.pre.classify(f, false) {
                        Some(PreOut::Rx(w)) => {
                            let g =
                                self.groups_of.get(w.flow as usize).copied().unwrap_or(0) as usize;
                            self.pending[g % self.to_group.len()].push(Ingress::Item(seq, w));
                        }
                        Some(PreOut::Punt(p)) => self.pending_punts.push(p),
                        None => {}
                    }
                }
            }
        }
        for q in self.pending.iter_mut() {
            q.push(Ingress::Advance(last));
        }
        self.flush();
        true
    }

    fn report(&mut self) {
        publish(
            &self.report,
            &TaskReport {
                task: Some(self.me),
                worker: self.worker,
                polls: self.polls,
                busy_polls: self.busy,
                stages: vec![(self.pre.name(), self.pre.stats().clone())],
                rings: vec![("input", self.input.len(), self.input.capacity())],
                reorder: Vec::new(),
            },
        );
    }
}

// ---------------------------------------------------------------------------------------
// Flow group
// ---------------------------------------------------------------------------------------

struct GroupTask {
    arena: Arc<FrameArena>,
    proto: Protocol,
    place: Place,
    notify: Notify,
    sched: Scheduler,
    header_len: Vec<usize>,
    ctl: Receiver<GroupCtl>,
    from_pre: Vec<Consumer<Ingress<RxWork>>>,
    merge: Merge<RxWork>,
    from_io: Consumer<ProtoWork>,
    to_post: Vec<Producer<(u64, ProtoResult)>>,
    next_post: usize,
    pending_out: Vec<(u64, ProtoResult)>,
    events: Producer<ControlEvent>,
    pending_events: Vec<ControlEvent>,
    egress_seq: u64,
    work: Vec<ProtoWork>,
    results: Vec<ProtoResult>,
    ev: Vec<ControlEvent>,
    polls: u64,
    busy: u64,
    report: Shared<TaskReport>,
    me: TaskRef,
    worker: usize,
}

impl GroupTask {
    fn flush(&mut self) -> bool {
        if !self.pending_events.is_empty() {
            self.events.push_burst(&mut self.pending_events);
        }
        if self.pending_out.is_empty() {
            return self.pending_events.is_empty();
        }
        let n = self.to_post.len();
        for k in 0..n {
            let q = (self.next_post + k) % n;
            self.to_post[q].push_burst(&mut self.pending_out);
            if self.pending_out.is_empty() {
                self.next_post = (q + 1) % n;
                break;
            }
        }
        self.pending_out.is_empty() && self.pending_events.is_empty()
    }

    fn run_work(&mut self, now: Instant) {
        if self.work.is_empty() {
            return;
        }
        for w in self.work.iter_mut() {
            self.place.fill_positions(w);
        }
        self.proto.process(now, &mut self.work, &mut self.results);
        for r in self.results.iter_mut() {
            // Reserve the frame a data segment's payload goes into; postprocess writes the
            // header in front of it.
            if r.actions.any(Actions::FETCH_PAYLOAD) {
                match (self.arena.alloc(), self.header_len.get(r.flow as usize)) {
                    (Some(mut f), Some(&hl)) if hl > 0 => {
                        f.set_len(hl);
                        r.tx_frame = Some(f);
                    }
                    (Some(f), _) => self.arena.free(f),
                    (None, _) => {}
                }
            }
        }
        self.place.process_in_place(now, &mut self.results);
        for r in self.results.iter() {
            if r.actions.any(Actions::SCHED) {
                self.sched.activate(r.flow);
            }
        }
        self.notify.process_slice(now, &self.results, &mut self.ev);
        self.pending_events.append(&mut self.ev);
        for r in self.results.drain(..) {
            self.pending_out.push((self.egress_seq, r));
            self.egress_seq += 1;
        }
    }
}

impl Task for GroupTask {
    fn run(&mut self, now: Instant) -> bool {
        self.polls += 1;
        while let Ok(m) = self.ctl.try_recv() {
            match m {
                GroupCtl::Install {
                    id,
                    state,
                    rings,
                    conn,
                    header_len,
                } => {
                    self.proto.install(id, state);
                    self.place.install(id, rings);
                    self.notify.install(id, conn);
                    if self.header_len.len() <= id as usize {
                        self.header_len.resize(id as usize + 1, 0);
                    }
                    self.header_len[id as usize] = header_len;
                }
                GroupCtl::Remove(id) => {
                    self.proto.remove(id);
                    self.place.remove(id);
                    self.notify.remove(id);
                    self.sched.remove(id);
                    if let Some(h) = self.header_len.get_mut(id as usize) {
                        *h = 0;
                    }
                }
            }
        }
        if !self.flush() {
            self.busy += 1;
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
                Some((_, w)) => self.work.push(ProtoWork::Rx(w)),
                None => break,
            }
        }
        // Work from the I/O task (application updates, timers, control-plane requests).
        while self.work.len() < BURST {
            match self.from_io.pop() {
                Some(w) => self.work.push(w),
                None => break,
            }
        }
        if !self.work.is_empty() {
            busy = true;
            self.run_work(now);
        }
        if self.sched.pending() > 0 {
            busy = true;
            self.sched.grant(BURST, &mut self.work);
            self.run_work(now);
        }
        self.flush();
        if busy {
            self.busy += 1;
        }
        busy
    }

    fn report(&mut self) {
        let mut rings = vec![("from_io", self.from_io.len(), self.from_io.capacity())];
        for c in &self.from_pre {
            rings.push(("from_pre", c.len(), c.capacity()));
        }
        publish(
            &self.report,
            &TaskReport {
                task: Some(self.me),
                worker: self.worker,
                polls: self.polls,
                busy_polls: self.busy,
                stages: vec![
                    (self.proto.name(), self.proto.stats().clone()),
                    (self.place.name(), self.place.stats().clone()),
                    (self.notify.name(), self.notify.stats().clone()),
                    (self.sched.name(), self.sched.stats().clone()),
                ],
                rings,
                reorder: vec![self.merge.stats()],
            },
        );
    }
}

// ---------------------------------------------------------------------------------------
// Postprocess replica
// ---------------------------------------------------------------------------------------

struct PostTask {
    arena: Arc<FrameArena>,
    post: Postprocess,
    ctl: Receiver<PostCtl>,
    from_group: Vec<Consumer<(u64, ProtoResult)>>,
    to_io: Vec<Producer<Tagged<Frame>>>,
    pending: Vec<Vec<Tagged<Frame>>>,
    seqs: Vec<u64>,
    items: Vec<ProtoResult>,
    batch: Vec<(u64, ProtoResult)>,
    polls: u64,
    busy: u64,
    report: Shared<TaskReport>,
    me: TaskRef,
    worker: usize,
}

impl Task for PostTask {
    fn run(&mut self, now: Instant) -> bool {
        self.polls += 1;
        while let Ok(m) = self.ctl.try_recv() {
            match m {
                PostCtl::Install(id, v) => self.post.install(id, v),
                PostCtl::Remove(id) => self.post.remove(id),
            }
        }
        let mut busy = false;
        for g in 0..self.from_group.len() {
            if !self.pending[g].is_empty() {
                self.to_io[g].push_burst(&mut self.pending[g]);
                if !self.pending[g].is_empty() {
                    busy = true;
                    continue;
                }
            }
            self.batch.clear();
            if self.from_group[g].pop_burst(&mut self.batch, BURST) == 0 {
                continue;
            }
            busy = true;
            self.seqs.clear();
            self.items.clear();
            for (s, r) in self.batch.drain(..) {
                self.seqs.push(s);
                self.items.push(r);
            }
            self.post.process_in_place(now, &mut self.items);
            for (s, mut r) in self.seqs.iter().copied().zip(self.items.drain(..)) {
                if let Some(f) = r.rx_frame.take() {
                    self.arena.free(f);
                }
                match r.tx_frame.take() {
                    Some(mut f) => {
                        wire::fill_checksums(self.arena.data_mut(&mut f));
                        self.pending[g].push(Tagged::item(s, f));
                    }
                    None => self.pending[g].push(Tagged::tombstone(s)),
                }
            }
            self.to_io[g].push_burst(&mut self.pending[g]);
        }
        if busy {
            self.busy += 1;
        }
        busy
    }

    fn report(&mut self) {
        publish(
            &self.report,
            &TaskReport {
                task: Some(self.me),
                worker: self.worker,
                polls: self.polls,
                busy_polls: self.busy,
                stages: vec![(self.post.name(), self.post.stats().clone())],
                rings: self
                    .from_group
                    .iter()
                    .map(|c| ("from_group", c.len(), c.capacity()))
                    .collect(),
                reorder: Vec::new(),
            },
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
    next_pre: usize,
    advance_due: Vec<Option<u64>>,
    to_pre: Vec<Producer<PreIn>>,
    pre_ctl: Vec<Sender<PreCtl>>,
    group_ctl: Vec<Sender<GroupCtl>>,
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
    polls: u64,
    busy: u64,
    report: Shared<TaskReport>,
    summary: Shared<IoSummary>,
    worker: usize,
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
        self.tx.append(&mut self.cout.tx);
        for ins in std::mem::take(&mut self.cout.installs) {
            let id = ins.identity.id;
            let t = ins.identity.tuple;
            let g = ins.identity.group;
            if self.group_of.len() <= id as usize {
                self.group_of.resize(id as usize + 1, 0);
            }
            self.group_of[id as usize] = g;
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
            let _ = self.group_ctl[g as usize % self.groups].send(GroupCtl::Install {
                id,
                state: ins.state,
                rings: ins.rings,
                conn: ins.conn.clone(),
                header_len: ins.identity.template.len(),
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
        self.polls += 1;
        let mut busy = false;
        self.control.poll_requests(now, &mut self.cout);
        // Ingress: number frames and deal bursts to the preprocess replicas.
        let replicas = self.to_pre.len();
        for _ in 0..4 {
            let target = self.next_pre;
            if self.to_pre[target].free() < BURST {
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
            let last = self.next_seq - 1;
            let moved = self.to_pre[target].push_burst(&mut self.batch);
            debug_assert_eq!(moved, n);
            for (i, a) in self.advance_due.iter_mut().enumerate() {
                if i != target {
                    *a = Some(last);
                }
            }
            self.next_pre = (target + 1) % replicas;
        }
        // Tell the other replicas how far the numbering went (the latest advance replaces an
        // undelivered older one; it is retried until its ring has room).
        for (p, a) in self.to_pre.iter_mut().zip(self.advance_due.iter_mut()) {
            if let Some(s) = *a {
                if p.push(PreIn::Advance(s)).is_ok() {
                    *a = None;
                }
            }
        }
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
            self.busy += 1;
        }
        busy
    }

    fn report(&mut self) {
        let mut rings = Vec::new();
        for p in &self.to_pre {
            rings.push(("to_pre", p.len(), p.capacity()));
        }
        for g in &self.from_post {
            for c in g {
                rings.push(("from_post", c.len(), c.capacity()));
            }
        }
        publish(
            &self.report,
            &TaskReport {
                task: Some(TaskRef::Io),
                worker: self.worker,
                polls: self.polls,
                busy_polls: self.busy,
                stages: vec![("reinject", self.reinject.stats().clone())],
                rings,
                reorder: self.egress.iter().map(|r| r.stats()).collect(),
            },
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
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    reports: Vec<Shared<TaskReport>>,
    summary: Shared<IoSummary>,
}

impl Threaded {
    /// Build the engine described by `cfg` on `port`, lay it out as `topology`, and start
    /// its worker threads, which read time from `clock`.
    pub fn spawn<P, C>(
        mut cfg: EngineConfig,
        port: P,
        topology: Topology,
        clock: C,
    ) -> Result<Self, EngineError>
    where
        P: Port + 'static,
        C: Clock + Clone + 'static,
    {
        topology
            .validate()
            .map_err(|_| EngineError::Config("invalid topology"))?;
        cfg.control.flow_groups = topology.flow_groups as u16;
        let Parts {
            arena,
            host,
            control,
        } = Parts::new(&cfg, port.mtu())?;
        let (np, ng, nq) = (
            topology.preprocess,
            topology.flow_groups,
            topology.postprocess,
        );
        let rs = topology.ring_size;
        let report = || Arc::new(Mutex::new(TaskReport::default()));
        let mut reports = Vec::new();

        // Rings.
        let (to_pre, pre_in): (Vec<_>, Vec<_>) = (0..np).map(|_| spsc::<PreIn>(rs)).unzip();
        let mut pre_to_group: Vec<Vec<Option<Producer<Ingress<RxWork>>>>> = Vec::new();
        let mut group_from_pre: Vec<Vec<Option<Consumer<Ingress<RxWork>>>>> =
            (0..ng).map(|_| (0..np).map(|_| None).collect()).collect();
        for r in 0..np {
            let mut row = Vec::new();
            for col in group_from_pre.iter_mut() {
                let (p, c) = spsc(rs);
                row.push(Some(p));
                col[r] = Some(c);
            }
            pre_to_group.push(row);
        }
        let (punt_p, punt_c): (Vec<_>, Vec<_>) = (0..np).map(|_| spsc::<Punt>(rs)).unzip();
        let (ev_p, ev_c): (Vec<_>, Vec<_>) = (0..ng).map(|_| spsc::<ControlEvent>(rs)).unzip();
        let (work_p, work_c): (Vec<_>, Vec<_>) = (0..ng).map(|_| spsc::<ProtoWork>(rs)).unzip();
        let mut group_to_post: Vec<Vec<Producer<(u64, ProtoResult)>>> =
            (0..ng).map(|_| Vec::new()).collect();
        let mut post_from_group: Vec<Vec<Consumer<(u64, ProtoResult)>>> =
            (0..nq).map(|_| Vec::new()).collect();
        let mut post_to_io: Vec<Vec<Producer<Tagged<Frame>>>> =
            (0..nq).map(|_| Vec::new()).collect();
        let mut io_from_post: Vec<Vec<Consumer<Tagged<Frame>>>> =
            (0..ng).map(|_| Vec::new()).collect();
        for g in 0..ng {
            for q in 0..nq {
                let (p, c) = spsc(rs);
                group_to_post[g].push(p);
                post_from_group[q].push(c);
                let (p, c) = spsc(rs);
                post_to_io[q].push(p);
                io_from_post[g].push(c);
            }
        }
        let (pre_ctl_tx, pre_ctl_rx): (Vec<_>, Vec<_>) =
            (0..np).map(|_| crossbeam_channel::unbounded()).unzip();
        let (group_ctl_tx, group_ctl_rx): (Vec<_>, Vec<_>) =
            (0..ng).map(|_| crossbeam_channel::unbounded()).unzip();
        let (post_ctl_tx, post_ctl_rx): (Vec<_>, Vec<_>) =
            (0..nq).map(|_| crossbeam_channel::unbounded()).unzip();

        let worker_of = |t: TaskRef| {
            topology
                .workers
                .iter()
                .position(|w| w.tasks.contains(&t))
                .unwrap_or(0)
        };

        // Tasks.
        let mut tasks: Vec<(TaskRef, Box<dyn Task>)> = Vec::new();
        let summary = Arc::new(Mutex::new(IoSummary::default()));
        let io_report = report();
        reports.push(io_report.clone());
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
                next_pre: 0,
                advance_due: vec![None; np],
                to_pre,
                pre_ctl: pre_ctl_tx,
                group_ctl: group_ctl_tx,
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
                polls: 0,
                busy: 0,
                report: io_report,
                summary: summary.clone(),
                worker: worker_of(TaskRef::Io),
            }),
        ));
        for (r, ((input, outs), (punts, ctl))) in pre_in
            .into_iter()
            .zip(pre_to_group)
            .zip(punt_p.into_iter().zip(pre_ctl_rx))
            .enumerate()
        {
            let rep = report();
            reports.push(rep.clone());
            let me = TaskRef::Preprocess(r);
            tasks.push((
                me,
                Box::new(PreTask {
                    pre: Preprocess::new(arena.clone(), cfg.mac, cfg.ip),
                    groups_of: Vec::new(),
                    ctl,
                    input,
                    to_group: outs.into_iter().map(|p| p.expect("ring")).collect(),
                    pending: (0..ng).map(|_| Vec::new()).collect(),
                    punts,
                    pending_punts: Vec::new(),
                    batch: Vec::with_capacity(BURST),
                    polls: 0,
                    busy: 0,
                    report: rep,
                    me,
                    worker: worker_of(me),
                }),
            ));
        }
        for (g, (((from_pre, from_io), (events, ctl)), to_post)) in group_from_pre
            .into_iter()
            .zip(work_c)
            .zip(ev_p.into_iter().zip(group_ctl_rx))
            .zip(group_to_post)
            .enumerate()
        {
            let rep = report();
            reports.push(rep.clone());
            let me = TaskRef::Group(g);
            tasks.push((
                me,
                Box::new(GroupTask {
                    arena: arena.clone(),
                    proto: Protocol::new(),
                    place: Place::new(arena.clone()),
                    notify: Notify::new(),
                    sched: Scheduler::new(),
                    header_len: Vec::new(),
                    ctl,
                    merge: Merge::new(np),
                    from_pre: from_pre.into_iter().map(|c| c.expect("ring")).collect(),
                    from_io,
                    to_post,
                    next_post: 0,
                    pending_out: Vec::new(),
                    events,
                    pending_events: Vec::new(),
                    egress_seq: 0,
                    work: Vec::with_capacity(BURST),
                    results: Vec::with_capacity(BURST),
                    ev: Vec::new(),
                    polls: 0,
                    busy: 0,
                    report: rep,
                    me,
                    worker: worker_of(me),
                }),
            ));
        }
        for (q, ((from_group, to_io), ctl)) in post_from_group
            .into_iter()
            .zip(post_to_io)
            .zip(post_ctl_rx)
            .enumerate()
        {
            let rep = report();
            reports.push(rep.clone());
            let me = TaskRef::Postprocess(q);
            tasks.push((
                me,
                Box::new(PostTask {
                    arena: arena.clone(),
                    post: Postprocess::new(arena.clone(), cfg.ack_policy),
                    ctl,
                    pending: (0..ng).map(|_| Vec::new()).collect(),
                    from_group,
                    to_io,
                    seqs: Vec::with_capacity(BURST),
                    items: Vec::with_capacity(BURST),
                    batch: Vec::with_capacity(BURST),
                    polls: 0,
                    busy: 0,
                    report: rep,
                    me,
                    worker: worker_of(me),
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
