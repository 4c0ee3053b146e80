//! The place replicas: delivery (payload between frames and rings, notifications) for the
//! connections each owns. With replicated placement ([`Topology::replicated_placement`]) a
//! replica lends its large payload copies to the other replicas and makes theirs: the copies
//! of one connection run in parallel, and each replica publishes its connections' rings and
//! notifies in result order, once every copy before has come back.

use std::collections::VecDeque;

use super::*;
use crate::stages::place::{Begin, CopyJob};

use crate::pipeline::topology::LEND_MIN;
/// Results a replica holds while copies are out: it takes no new input past this (and then
/// takes a whole burst from each group).
const HOLD_MAX: usize = 256;
/// Empty bursts a replica keeps for its next inputs, at most.
const SPARE_MAX: usize = 8;

/// A place replica's side of replicated placement.
pub(super) struct Lending {
    /// Jobs to each other replica, and the rings they come back on.
    pub(super) to: Vec<Producer<CopyJob>>,
    pub(super) back: Vec<Consumer<CopyJob>>,
    /// Jobs from each other replica, and the rings that take them back.
    pub(super) from: Vec<Consumer<CopyJob>>,
    pub(super) done: Vec<Producer<CopyJob>>,
    pub(super) next: usize,
    /// Results in order since the oldest not yet published: (group, egress number, result,
    /// whether a copy of it is out).
    pub(super) held: VecDeque<(u16, u64, ProtoResult, bool)>,
    /// The slot number of `held[0]`.
    pub(super) base: u64,
    /// Results taken but not begun (a copy would touch a range still lent out).
    pub(super) waiting: VecDeque<(u16, u64, ProtoResult)>,
    pub(super) ready: Vec<ProtoResult>,
    pub(super) ready_tags: Vec<(u16, u64)>,
    /// Jobs lent, and made for other replicas.
    pub(super) stats: StageStats,
}

impl Lending {
    pub(super) fn new(
        to: Vec<Producer<CopyJob>>,
        back: Vec<Consumer<CopyJob>>,
        from: Vec<Consumer<CopyJob>>,
        done: Vec<Producer<CopyJob>>,
    ) -> Self {
        Lending {
            to,
            back,
            from,
            done,
            next: 0,
            held: VecDeque::new(),
            base: 0,
            waiting: VecDeque::new(),
            ready: Vec::new(),
            ready_tags: Vec::new(),
            stats: StageStats::default(),
        }
    }
}

pub(super) struct PlaceTask {
    pub(super) delivery: path::Delivery,
    pub(super) ctl: Receiver<PlaceCtl>,
    pub(super) from_group: Vec<BurstConsumer<ResultBurst>>,
    pub(super) to_post: Vec<BurstProducer<ResultBurst>>,
    pub(super) next_post: usize,
    /// Bursts placed, in order, that no postprocess ring took yet.
    pub(super) pending: VecDeque<ResultBurst>,
    /// Empty bursts (what the postprocess rings gave back for bursts they took), for the
    /// next input.
    pub(super) spare: Vec<ResultBurst>,
    pub(super) events: Producer<ControlEvent>,
    pub(super) pending_events: Vec<ControlEvent>,
    /// The burst being taken from a flow group.
    pub(super) input: ResultBurst,
    pub(super) lending: Option<Lending>,
    /// Whether the outputs took everything at the start of this pass.
    pub(super) flushed: bool,
    pub(super) meta: Meta,
}

/// Install and remove flows as the control messages say.
fn control(ctl: &Receiver<PlaceCtl>, delivery: &mut path::Delivery) {
    // An empty check first: cheaper than a receive on an idle pass.
    while !ctl.is_empty() {
        let Ok(m) = ctl.try_recv() else { break };
        match m {
            PlaceCtl::Install {
                id,
                rings,
                conn,
                incarnation,
            } => {
                delivery.place.install(id, rings, incarnation);
                delivery.notify.install(id, conn);
            }
            PlaceCtl::Remove(id) => {
                delivery.place.remove(id);
                delivery.notify.remove(id);
            }
        }
    }
}

impl PlaceTask {
    fn flush(&mut self) -> bool {
        if !self.pending_events.is_empty() {
            self.events.push_burst(&mut self.pending_events);
        }
        let n = self.to_post.len();
        // Bursts go in order, each to the next postprocess replica with room.
        'bursts: while let Some(b) = self.pending.front_mut() {
            for k in 0..n {
                let q = (self.next_post + k) % n;
                if self.to_post[q].push(b) {
                    self.next_post = (q + 1) % n;
                    if let Some(empty) = self.pending.pop_front() {
                        if self.spare.len() < SPARE_MAX {
                            self.spare.push(empty);
                        }
                    }
                    continue 'bursts;
                }
            }
            break;
        }
        self.pending.is_empty() && self.pending_events.is_empty()
    }

    /// The burst just taken (`input`) moves on to `pending`, and an empty one takes its
    /// place for the next input.
    fn pass_on(&mut self) {
        let fresh = self.spare.pop().unwrap_or_default();
        self.pending
            .push_back(std::mem::replace(&mut self.input, fresh));
    }
}

impl PlaceTask {
    /// One pass with replicated placement: make the other replicas' copies, take back the
    /// copies lent, begin new results, publish in order what is complete.
    fn run_lending(&mut self, now: Instant) -> bool {
        let Some(l) = self.lending.as_mut() else {
            return false;
        };
        let arena = &self.delivery.arena;
        let place = &mut self.delivery.place;
        let mut busy = false;
        // Copies for the other replicas (as many as their return rings take).
        for (input, out) in l.from.iter_mut().zip(l.done.iter_mut()) {
            let room = out.free();
            for _ in 0..room.min(BURST) {
                let Some(mut job) = input.pop() else { break };
                job.run(arena);
                l.stats.items_in += 1;
                // Room was checked; a full ring cannot happen here.
                let _ = out.push(job);
                busy = true;
            }
        }
        // Copies lent, back.
        for input in l.back.iter_mut() {
            while let Some(job) = input.pop() {
                busy = true;
                let i = (job.slot - l.base) as usize;
                let (_, _, r, out) = &mut l.held[i];
                place.complete(job, r);
                *out = false;
            }
        }
        // The copies above go on while the outputs are full: another replica's results may be
        // waiting for them, and the outputs for those results.
        if !self.flushed {
            return busy;
        }
        // New results.
        if l.waiting.is_empty() && l.held.len() < HOLD_MAX {
            let mut got = false;
            for (g, c) in self.from_group.iter_mut().enumerate() {
                if c.pop(&mut self.input) {
                    got = true;
                    let input = &mut self.input;
                    let taken = input.seqs.drain(..).zip(input.results.drain(..));
                    l.waiting.extend(taken.map(|(s, r)| (g as u16, s, r)));
                }
            }
            if got {
                busy = true;
                // Taken inputs first, control messages second: every flow named is
                // installed.
                control(&self.ctl, &mut self.delivery);
            }
        }
        let arena = &self.delivery.arena;
        let place = &mut self.delivery.place;
        let mut begun = 0;
        while let Some((g, s, mut r)) = l.waiting.pop_front() {
            let slot = l.base + l.held.len() as u64;
            match place.begin(&mut r, LEND_MIN, slot) {
                Begin::Done => l.held.push_back((g, s, r, false)),
                Begin::Lent(job) => {
                    let n = l.to.len();
                    let mut job = Some(job);
                    for k in 0..n {
                        let q = (l.next + k) % n;
                        let Some(j) = job.take() else { break };
                        match l.to[q].push(j) {
                            Ok(()) => {
                                l.next = (q + 1) % n;
                                l.stats.items_out += 1;
                            }
                            Err(j) => job = Some(j),
                        }
                    }
                    match job {
                        None => l.held.push_back((g, s, r, true)),
                        Some(mut job) => {
                            // Every other replica's ring is full: the copy is made here.
                            job.run(arena);
                            place.complete(job, &mut r);
                            l.held.push_back((g, s, r, false));
                        }
                    }
                }
                Begin::Wait => {
                    l.waiting.push_front((g, s, r));
                    break;
                }
            }
            begun += 1;
        }
        if begun > 0 {
            place.count(begun);
        }
        place.free_placed();
        // Publication in order.
        while l.held.front().is_some_and(|h| !h.3) {
            let Some((g, s, mut r, _)) = l.held.pop_front() else {
                break;
            };
            l.base += 1;
            place.publish(&mut r);
            l.ready_tags.push((g, s));
            l.ready.push(r);
        }
        if !l.ready.is_empty() {
            busy = true;
            self.delivery
                .notify_only(now, &mut l.ready, &mut self.pending_events);
            // Into bursts of one group each, in order.
            for ((g, s), r) in l.ready_tags.drain(..).zip(l.ready.drain(..)) {
                match self.pending.back_mut() {
                    Some(b) if b.group == g => b.push(s, r),
                    _ => {
                        let mut b = self.spare.pop().unwrap_or_default();
                        b.group = g;
                        b.push(s, r);
                        self.pending.push_back(b);
                    }
                }
            }
            self.flush();
        }
        busy
    }
}

impl Task for PlaceTask {
    fn run(&mut self, now: Instant) -> bool {
        self.meta.polls += 1;
        if self.lending.is_some() {
            self.flushed = self.flush();
            let busy = self.run_lending(now) || !self.flushed;
            if busy {
                self.meta.busy += 1;
            }
            return busy;
        }
        if !self.flush() {
            self.meta.busy += 1;
            return true;
        }
        let mut busy = false;
        for g in 0..self.from_group.len() {
            // The group's burst is placed where it lies and goes on whole to a postprocess
            // replica.
            if !self.from_group[g].pop(&mut self.input) {
                continue;
            }
            busy = true;
            self.input.group = g as u16;
            // Taken inputs first, control messages second: every flow named is installed.
            control(&self.ctl, &mut self.delivery);
            self.delivery
                .run(now, &mut self.input.results, &mut self.pending_events);
            self.pass_on();
            self.flush();
        }
        if busy {
            self.meta.busy += 1;
        }
        busy
    }

    fn report(&mut self) {
        let mut stages: Vec<(&'static str, StageStats)> = self.delivery.stats().into();
        if let Some(l) = &self.lending {
            stages.push(("copies (made, lent)", l.stats.clone()));
        }
        self.meta.publish(
            stages,
            self.from_group
                .iter()
                .map(|c| ("from_group", c.len(), c.capacity()))
                .collect(),
            Vec::new(),
            Vec::new(),
        );
    }
}
