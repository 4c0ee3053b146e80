//! The data path, defined once: which stages (built-in and user) run in which order, cut
//! into four segments at the places where a runtime may put rings.
//!
//! ```text
//! Ingress:   rx_frame stages -> preprocess                        (segments | punts)
//! Transport: rx_segment stages -> protocol -> results stages -> TX frame reservation,
//!            scheduler activation
//! Delivery:  place (payload between frames and rings) -> notify (application, control plane)
//! Egress:    postprocess (headers) -> checksums -> tx_frame stages       (frames)
//! ```
//!
//! Stages that work in place on the results (place, notify, postprocess) implement the same
//! [`Hook`] interface user stages do, and are called through it (statically).
//!
//! The inline runtime ([`Engine`](super::Engine)) runs the four segments one after another
//! on one thread. The threaded runtime ([`Threaded`](super::Threaded)) runs each on tasks of
//! its own (preprocess replicas, flow groups, place replicas, postprocess replicas) with
//! rings between them. Both call these functions; neither orders the stages itself.

use std::sync::Arc;

use super::hooks::{
    Chain, Diverted, Hook, HookCx, RedirectRing, Results, RxFrame, RxSegment, TxFrame, Verdicts,
};
use crate::buf::{Frame, FrameArena, FrameCache};
use crate::control::congestion::CongestionControl;
use crate::flow::{FlowId, FlowIdentity};
use crate::stages::notify::{ControlEvent, Notify};
use crate::stages::place::Place;
use crate::stages::postprocess::Postprocess;
use crate::stages::preprocess::Preprocess;
use crate::stages::protocol::{Protocol, TcpState};
use crate::stages::scheduler::FlowScheduler;
use crate::stages::{Actions, PreOut, ProtoResult, ProtoWork, RxWork, Stage};
use crate::stats::{DropReason, StageStats};
use crate::time::Instant;

/// Ingress: the `rx_frame` stages, then preprocess.
pub(crate) struct Ingress {
    pub(crate) arena: Arc<FrameArena>,
    pub(crate) pre: Preprocess,
    pub(crate) hooks: Chain<RxFrame>,
    pub(crate) rings: Vec<RedirectRing>,
    pub(crate) instance: usize,
}

impl Ingress {
    /// Run `frames` (numbered by `seqs` when the runtime numbers them; otherwise `seqs` is
    /// empty and every number is 0) through the `rx_frame` stages and preprocess, leaving
    /// both empty. What comes out goes to `out` in order; frames the stages send back out or
    /// punt go to `diverted`.
    pub(crate) fn run(
        &mut self,
        now: Instant,
        frames: &mut Vec<Frame>,
        seqs: &mut Vec<u64>,
        diverted: &mut Diverted,
        mut out: impl FnMut(u64, PreOut),
    ) {
        if frames.is_empty() {
            return;
        }
        if !self.hooks.is_empty() {
            let cx = HookCx {
                now,
                arena: &self.arena,
                instance: self.instance,
            };
            self.hooks
                .run(&cx, frames, seqs, &self.rings, true, diverted);
        }
        // Frame by frame into `out`, not through the stage's output vector: a segment's
        // descriptor is written once on its way to the protocol stage.
        self.pre.begin_burst();
        for (i, frame) in frames.drain(..).enumerate() {
            if let Some(o) = self.pre.classify(frame) {
                out(seqs.get(i).copied().unwrap_or(0), o);
            }
        }
        seqs.clear();
    }
}

/// Transport: the `rx_segment` stages, the protocol stage with its congestion control, the
/// `results` stages, frames reserved for outgoing payload, and the flow scheduler. One per
/// flow group; the only writer of its flows' TCP state.
pub(crate) struct Transport<C: CongestionControl, S: FlowScheduler> {
    pub(crate) arena: Arc<FrameArena>,
    pub(crate) proto: Protocol<C>,
    pub(crate) sched: S,
    pub(crate) seg_hooks: Chain<RxSegment>,
    pub(crate) result_hooks: Chain<Results>,
    pub(crate) rings: Vec<RedirectRing>,
    pub(crate) instance: usize,
    /// Header length of each flow's segments (where payload goes in a reserved frame).
    header_len: Vec<usize>,
    /// Payload bytes per segment, per flow (for the scheduler's segment counts).
    mss: Vec<u32>,
    /// The rate each flow's congestion control last set (paced algorithms only).
    rates: Vec<Option<u64>>,
    /// Per flow, the number of the last burst in which its requests were settled
    /// (`settle_requests`).
    settled: Vec<u64>,
    /// Bursts of two or more results settled so far.
    runs: u64,
    /// Frames for the segments it sends, taken from the arena a burst at a time.
    frames: FrameCache,
    /// How many application updates the runtime lets send their first segment themselves
    /// in the next run, where the scheduler allows it ([`Protocol::set_direct_sends`]);
    /// set before each run.
    pub(crate) direct_send: usize,
    /// How many did in the last run.
    pub(crate) direct_sent: usize,
}

impl<C: CongestionControl, S: FlowScheduler> Transport<C, S> {
    /// Take `frames` (free, leaving it empty) into the cache the segments it sends come
    /// from.
    pub(crate) fn recycle(&mut self, frames: &mut Vec<Frame>) {
        self.frames.free_all(frames);
    }

    pub(crate) fn new(
        arena: Arc<FrameArena>,
        proto: Protocol<C>,
        sched: S,
        hooks: (Chain<RxSegment>, Chain<Results>),
        rings: Vec<RedirectRing>,
        instance: usize,
    ) -> Self {
        Transport {
            frames: FrameCache::new(arena.clone()),
            arena,
            proto,
            sched,
            seg_hooks: hooks.0,
            result_hooks: hooks.1,
            rings,
            instance,
            header_len: Vec::new(),
            mss: Vec::new(),
            rates: Vec::new(),
            settled: Vec::new(),
            runs: 0,
            direct_send: 0,
            direct_sent: 0,
        }
    }

    /// Set up a flow.
    pub(crate) fn install(&mut self, id: FlowId, state: TcpState, identity: &FlowIdentity) {
        let i = id as usize;
        self.proto.install(id, state);
        self.sched.install(id, identity);
        if self.header_len.len() <= i {
            self.header_len.resize(i + 1, 0);
            self.mss.resize(i + 1, 1);
            self.rates.resize(i + 1, None);
            self.settled.resize(i + 1, 0);
        }
        self.header_len[i] = identity.template.len();
        self.mss[i] = u32::from(identity.mss).max(1);
        self.rates[i] = None;
    }

    /// Forget a flow.
    pub(crate) fn remove(&mut self, id: FlowId) {
        self.proto.remove(id);
        self.sched.remove(id);
        if let Some(h) = self.header_len.get_mut(id as usize) {
            *h = 0;
        }
    }

    /// Segments through the `rx_segment` stages, appended to `work` (leaving `segs` empty).
    pub(crate) fn take_segments(
        &mut self,
        now: Instant,
        segs: &mut Vec<RxWork>,
        work: &mut Vec<ProtoWork>,
        diverted: &mut Diverted,
    ) {
        if segs.is_empty() {
            return;
        }
        if !self.seg_hooks.is_empty() {
            let cx = HookCx {
                now,
                arena: &self.arena,
                instance: self.instance,
            };
            self.seg_hooks.run(
                &cx,
                segs,
                &mut Vec::<()>::new(),
                &self.rings,
                true,
                diverted,
            );
        }
        work.extend(segs.drain(..).map(ProtoWork::Rx));
    }

    /// Grant up to `max` transmissions into `work`; returns how many.
    pub(crate) fn grant(&mut self, now: Instant, max: usize, work: &mut Vec<ProtoWork>) -> usize {
        let before = work.len();
        self.sched.grant(now, max, work);
        work.len() - before
    }

    /// Run `work` through the protocol stage and the `results` stages into `results`
    /// (leaving `work` empty); reserve the frame each data segment's payload goes into (the
    /// header comes in front of it at egress) and activate flows that have more to send.
    pub(crate) fn run(
        &mut self,
        now: Instant,
        work: &mut Vec<ProtoWork>,
        results: &mut Vec<ProtoResult>,
    ) {
        if work.is_empty() {
            return;
        }
        let first = results.len();
        let direct = if !C::PACED && self.sched.direct() && self.sched.pending() == 0 {
            self.direct_send
        } else {
            0
        };
        self.proto.set_direct_sends(direct);
        self.proto.process(now, work, results);
        self.direct_sent = direct - self.proto.direct_sends_left();
        let burst = &mut results[first..];
        if !self.result_hooks.is_empty() {
            let cx = HookCx {
                now,
                arena: &self.arena,
                instance: self.instance,
            };
            self.result_hooks.run_results(&cx, burst);
        }
        self.settle_requests(burst);
        for r in burst.iter_mut() {
            if r.actions.any(Actions::FETCH_PAYLOAD) {
                let hl = self.header_len.get(r.flow as usize).copied().unwrap_or(0);
                match self.frames.alloc() {
                    Some(mut f) if hl > 0 => {
                        f.set_len(hl);
                        r.tx_frame = Some(f);
                    }
                    other => {
                        // No frame (or a flow being removed): the segment is not sent, as
                        // if lost; the retransmission timer recovers it.
                        if let Some(f) = other {
                            self.frames.free(f);
                        }
                        r.actions.0 &= !(Actions::TX | Actions::FETCH_PAYLOAD);
                        self.proto.count_drop(DropReason::NoFrame);
                    }
                }
            }
            if C::PACED || r.actions.any(Actions::RATE) {
                let rate = self.proto.rate(r.flow);
                if let Some(last) = self.rates.get_mut(r.flow as usize) {
                    if *last != rate {
                        *last = rate;
                        self.sched.set_rate(r.flow, rate, now);
                    }
                }
            }
            if r.actions.any(Actions::SCHED) {
                // What the flow can send now: its queued data within both windows.
                let room = r.cwnd.min(r.snd_wnd).saturating_sub(r.in_flight);
                let mss = self.mss.get(r.flow as usize).copied().unwrap_or(1);
                let segments = r.unsent.min(room).div_ceil(mss).max(1);
                self.sched.activate_with(r.flow, segments, now);
            }
        }
    }

    /// Read each flow's results in `burst` from its last back: the first that asks for a
    /// grant (`SCHED`) or answers one (`GRANTED`) says what the flow has ready (results
    /// with neither change nothing it could send), and an earlier request of the flow is
    /// settled by it (its `SCHED` cleared): the grants it asked for are the ones the burst
    /// carried after it, and activating from it would grant segments that are no longer
    /// there. A flow therefore joins the scheduler's queue at its last request of the
    /// burst, not its first.
    fn settle_requests(&mut self, burst: &mut [ProtoResult]) {
        if burst.len() < 2 {
            return;
        }
        self.runs += 1;
        for r in burst.iter_mut().rev() {
            if !r.actions.any(Actions::SCHED | Actions::GRANTED) {
                continue;
            }
            if let Some(s) = self.settled.get_mut(r.flow as usize) {
                if *s == self.runs {
                    r.actions.clear(Actions::SCHED);
                } else {
                    *s = self.runs;
                }
            }
        }
    }

    /// The built-in stages' counters.
    pub(crate) fn stats(&self) -> [(&'static str, StageStats); 2] {
        [
            (self.proto.name(), self.proto.stats().clone()),
            (self.sched.name(), self.sched.stats()),
        ]
    }
}

/// Delivery: payload between frames and the connections' rings, then notifications. Both
/// stages work in place, through the [`Hook`] interface user stages have.
pub(crate) struct Delivery {
    pub(crate) arena: Arc<FrameArena>,
    pub(crate) place: Place,
    pub(crate) notify: Notify,
    pub(crate) instance: usize,
    verdicts: Verdicts,
}

impl Delivery {
    /// `sums`: placement sums transmit payload for the checksum (the port does not).
    pub(crate) fn new(arena: Arc<FrameArena>, instance: usize, sums: bool) -> Self {
        let mut place = Place::new(arena.clone());
        place.set_payload_sums(sums);
        Delivery {
            place,
            notify: Notify::new(),
            arena,
            instance,
            verdicts: Verdicts::default(),
        }
    }

    /// Carry out the payload actions of `results`, then notify the application and (through
    /// `events`) the control plane.
    pub(crate) fn run(
        &mut self,
        now: Instant,
        results: &mut [ProtoResult],
        events: &mut Vec<ControlEvent>,
    ) {
        let cx = HookCx {
            now,
            arena: &self.arena,
            instance: self.instance,
        };
        self.verdicts.start(results.len());
        self.place.process(&cx, results, &mut self.verdicts);
        // Placement sets no verdicts: the burst's stay as they were started.
        self.notify.process(&cx, results, &mut self.verdicts);
        self.notify.take_events(events);
    }

    /// Notify the application and (through `events`) the control plane of `results`, whose
    /// payload actions are done (replicated placement makes and publishes them itself).
    pub(crate) fn notify_only(
        &mut self,
        now: Instant,
        results: &mut [ProtoResult],
        events: &mut Vec<ControlEvent>,
    ) {
        let cx = HookCx {
            now,
            arena: &self.arena,
            instance: self.instance,
        };
        self.verdicts.start(results.len());
        self.notify.process(&cx, results, &mut self.verdicts);
        self.notify.take_events(events);
    }

    /// The built-in stages' counters.
    pub(crate) fn stats(&self) -> [(&'static str, StageStats); 2] {
        [
            (Hook::name(&self.place), self.place.stats().clone()),
            (Hook::name(&self.notify), self.notify.stats().clone()),
        ]
    }
}

/// The frame result `r` sends (postprocess filled its checksums unless the port offloads
/// them); frees the frame it received if placement left it there.
#[inline]
fn take_frame(arena: &FrameArena, r: &mut ProtoResult) -> Option<Frame> {
    if let Some(f) = r.rx_frame.take() {
        arena.free(f);
    }
    r.tx_frame.take()
}

/// Egress: headers, checksums (unless the port offloads them), then the `tx_frame` stages.
pub(crate) struct Egress {
    pub(crate) arena: Arc<FrameArena>,
    pub(crate) post: Postprocess,
    pub(crate) hooks: Chain<TxFrame>,
    pub(crate) rings: Vec<RedirectRing>,
    pub(crate) instance: usize,
    stats: StageStats,
    frames: Vec<Frame>,
    at: Vec<usize>,
    out: Vec<Option<Frame>>,
    verdicts: Verdicts,
}

impl Egress {
    pub(crate) fn new(
        arena: Arc<FrameArena>,
        post: Postprocess,
        hooks: Chain<TxFrame>,
        rings: Vec<RedirectRing>,
        instance: usize,
        csum_offload: bool,
    ) -> Self {
        Egress {
            arena,
            post: post.filling_checksums(!csum_offload),
            hooks,
            rings,
            instance,
            stats: StageStats::default(),
            frames: Vec::new(),
            at: Vec::new(),
            out: Vec::new(),
            verdicts: Verdicts::default(),
        }
    }

    /// Build the frames `results` send. `emit(i, frame)` is called once for every result,
    /// in order: with the frame result `i` sends, or with `None` when it sends nothing (or a
    /// `tx_frame` stage took its frame), so that a runtime restoring order can count it.
    pub(crate) fn run(
        &mut self,
        now: Instant,
        results: &mut [ProtoResult],
        mut emit: impl FnMut(usize, Option<Frame>),
    ) {
        let cx = HookCx {
            now,
            arena: &self.arena,
            instance: self.instance,
        };
        self.verdicts.start(results.len());
        self.post.process(&cx, results, &mut self.verdicts);
        self.stats.bursts += 1;
        self.stats.items_in += results.len() as u64;
        if self.hooks.is_empty() {
            // No `tx_frame` stage can take a frame: each result's frame goes out in order.
            for (i, r) in results.iter_mut().enumerate() {
                let f = take_frame(&self.arena, r);
                self.stats.items_out += u64::from(f.is_some());
                emit(i, f);
            }
            return;
        }
        self.out.clear();
        for (i, r) in results.iter_mut().enumerate() {
            if let Some(f) = take_frame(&self.arena, r) {
                self.frames.push(f);
                self.at.push(i);
            }
            self.out.push(None);
        }
        self.hooks
            .run_out(&cx, &mut self.frames, &mut self.at, &self.rings);
        self.stats.items_out += self.frames.len() as u64;
        for (f, i) in self.frames.drain(..).zip(self.at.drain(..)) {
            self.out[i] = Some(f);
        }
        for (i, f) in self.out.drain(..).enumerate() {
            emit(i, f);
        }
    }

    /// The built-in stages' counters.
    pub(crate) fn stats(&self) -> [(&'static str, StageStats); 2] {
        [
            (Hook::name(&self.post), self.post.stats().clone()),
            ("egress", self.stats.clone()),
        ]
    }
}
