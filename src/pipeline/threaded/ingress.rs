//! Ingress of the threaded runtime: dealing numbered bursts of received frames to the
//! preprocess replicas, and the task that runs the `rx_frame` user stages on a worker of
//! their own when the topology asks for it.

use std::sync::Arc;

use super::{Meta, PreIn, Task, ToIo};
use crate::buf::{Frame, FrameArena};
use crate::pipeline::hooks::{Chain, Diverted, HookCx, RedirectRing, RxFrame};
use crate::ring::{Consumer, Producer};
use crate::stages::BURST;
use crate::time::Instant;

/// Split a burst of numbered frames and advances into `frames` and their numbers; returns
/// how far the numbering went.
pub(super) fn unpack(batch: &mut Vec<PreIn>, frames: &mut Vec<Frame>, seqs: &mut Vec<u64>) -> u64 {
    let mut last = 0;
    for m in batch.drain(..) {
        match m {
            PreIn::Advance(s) => last = last.max(s),
            PreIn::Frame(seq, f) => {
                last = last.max(seq);
                frames.push(f);
                seqs.push(seq);
            }
        }
    }
    last
}

/// Deals bursts of numbered frames round-robin to the next stage's replicas, and tells the
/// replicas that did not get a burst how far the numbering went (so that the groups' merges
/// can move on).
pub(super) struct Dealer {
    outs: Vec<Producer<PreIn>>,
    next: usize,
    advance_due: Vec<Option<u64>>,
}

impl Dealer {
    pub(super) fn new(outs: Vec<Producer<PreIn>>) -> Self {
        let n = outs.len();
        Dealer {
            outs,
            next: 0,
            advance_due: vec![None; n],
        }
    }

    /// Whether the next replica has room for a whole burst.
    pub(super) fn ready(&self) -> bool {
        self.outs[self.next].free() >= BURST
    }

    /// Hand `batch` (numbered up to `last`) to the next replica; the others learn `last`.
    /// An empty batch (everything was dropped) only advances every replica. Call only when
    /// [`ready`](Self::ready).
    pub(super) fn deal(&mut self, batch: &mut Vec<PreIn>, last: u64) {
        let target = self.next;
        if self.deal_to(target, batch, last) {
            self.next = (target + 1) % self.outs.len();
        }
    }

    /// Replicas fed by this dealer.
    pub(super) fn outputs(&self) -> usize {
        self.outs.len()
    }

    /// Whether replica `target` has room for a whole burst.
    pub(super) fn ready_for(&self, target: usize) -> bool {
        self.outs[target].free() >= BURST
    }

    /// Hand `batch` (numbered up to `last`) to replica `target` (the one fed by the
    /// receive queue it came from); the others learn `last`. Returns whether anything was
    /// handed over. Call only when [`ready_for`](Self::ready_for) `target`.
    pub(super) fn deal_to(&mut self, target: usize, batch: &mut Vec<PreIn>, last: u64) -> bool {
        if batch.is_empty() {
            for a in self.advance_due.iter_mut() {
                *a = Some(last);
            }
            return false;
        }
        let n = batch.len();
        let moved = self.outs[target].push_burst(batch);
        debug_assert_eq!(moved, n);
        for (i, a) in self.advance_due.iter_mut().enumerate() {
            if i != target {
                *a = Some(last);
            }
        }
        true
    }

    /// Deliver pending advances (the latest replaces an undelivered older one; each is
    /// retried until its ring has room).
    pub(super) fn advances(&mut self) {
        for (p, a) in self.outs.iter_mut().zip(self.advance_due.iter_mut()) {
            if let Some(s) = *a {
                if p.push(PreIn::Advance(s)).is_ok() {
                    *a = None;
                }
            }
        }
    }

    /// Occupancy of the output rings: (items waiting, capacity).
    pub(super) fn rings(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.outs.iter().map(|p| (p.len(), p.capacity()))
    }
}

/// The `rx_frame` user stages on a task of their own, between the I/O task and the
/// preprocess replicas ([`TaskRef::RxHooks`](crate::pipeline::TaskRef::RxHooks)).
pub(super) struct RxHookTask {
    pub(super) arena: Arc<FrameArena>,
    pub(super) input: Consumer<PreIn>,
    pub(super) dealer: Dealer,
    pub(super) hooks: Chain<RxFrame>,
    pub(super) rings: Vec<RedirectRing>,
    pub(super) to_io: ToIo,
    pub(super) diverted: Diverted,
    pub(super) batch: Vec<PreIn>,
    pub(super) frames: Vec<Frame>,
    pub(super) seqs: Vec<u64>,
    pub(super) meta: Meta,
}

impl Task for RxHookTask {
    fn run(&mut self, now: Instant) -> bool {
        self.meta.polls += 1;
        self.dealer.advances();
        if !self.to_io.flush() || !self.dealer.ready() {
            self.meta.busy += 1;
            return true;
        }
        self.batch.clear();
        if self.input.pop_burst(&mut self.batch, BURST) == 0 {
            return false;
        }
        self.meta.busy += 1;
        let last = unpack(&mut self.batch, &mut self.frames, &mut self.seqs);
        let cx = HookCx {
            now,
            arena: &self.arena,
            instance: 0,
        };
        self.hooks.run(
            &cx,
            &mut self.frames,
            &mut self.seqs,
            &self.rings,
            true,
            &mut self.diverted,
        );
        self.to_io.take(&mut self.diverted);
        self.batch.extend(
            self.seqs
                .drain(..)
                .zip(self.frames.drain(..))
                .map(|(s, f)| PreIn::Frame(s, f)),
        );
        self.dealer.deal(&mut self.batch, last);
        self.dealer.advances();
        self.to_io.flush();
        true
    }

    fn report(&mut self) {
        self.meta.publish(
            Vec::new(),
            vec![("input", self.input.len(), self.input.capacity())],
            Vec::new(),
            self.hooks.reports(),
        );
    }
}
