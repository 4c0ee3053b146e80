//! Hook points: where an integrator's own stages go.
//!
//! Four named points, each an ordered chain of user stages ([`Hook`]s):
//!
//! | point | item | runs | where, threaded |
//! |---|---|---|---|
//! | [`RxFrame`] | the raw received [`Frame`], before preprocess (where an XDP program sits) | every frame | preprocess replicas |
//! | [`RxSegment`] | [`RxWork`]: flow id, segment summary, frame; after flow lookup, before protocol | every segment of an established flow (its RSTs included), in per-flow order | the flow's group |
//! | [`Results`] | the protocol stage's [`ProtoResult`] with its [`Actions`] flags | every result, in per-flow order | the flow's group |
//! | [`TxFrame`] | the finished [`Frame`] after headers and checksums, before the port | every frame sent, control-plane frames included | postprocess replicas (data path) and the I/O task (control plane); or a task of its own after the egress reorder |
//!
//! A stage gets a whole burst and [`Verdicts`], one per item, all [`Verdict::Pass`] until
//! the stage sets one. Items it does not pass leave the chain at once (later stages at the
//! point never see them):
//!
//! | verdict | [`RxFrame`], [`RxSegment`] | [`TxFrame`] | [`Results`] |
//! |---|---|---|---|
//! | `Pass` | on to the next stage | on to the next stage | on |
//! | `Drop(r)` | frame freed, counted under the stage's reason `r` | same | the segment this result would send is not sent (counted under `r`); the result itself goes on, since the TCP state has already moved. Under a coalescing ACK policy an in-order segment's ACK rides on the flow's next segment of the burst, so dropping the last one drops the ACK of the run |
//! | `Tx` | frame sent out of the port (reflected), through the [`TxFrame`] stages as every frame sent (threaded, frames from different preprocess replicas or groups keep no order among themselves) | on to the port | not supported: counted as `invalid`, treated as `Pass` |
//! | `Redirect(n)` | frame pushed to the `n`th [`RedirectRing`] given to the builder | same | not supported (`invalid`) |
//! | `Punt` | frame handed to the control plane, which handles it as if preprocess had punted it (ARP, SYN and RST are processed; a segment of an established connection is dropped, counted under [`DropReason::Extension`](crate::stats::DropReason::Extension)) | not supported (`invalid`), freed | not supported (`invalid`) |
//!
//! An [`RxSegment`] stage that changes a frame's bytes or headroom keeps its summary true:
//! the summary's offsets (`payload_off`, and `sack_at` and `ts_at` where the protocol stage
//! reads the segment's SACK blocks and timestamps) point into the frame as preprocess parsed
//! it. To filter SACK information, overwrite the blocks in the frame or set `sack_len` to 0.
//! (A `Punt` verdict on a segment of an established flow, a RST included, drops it.) The
//! summary's `incarnation` is the flow's as preprocess found it; on the threaded runtime a
//! stage may still see a segment of a closed connection under a flow id that a new one has
//! since been given (the protocol stage drops it as stale after the stage).
//!
//! Order: [`RxSegment`] and [`Results`] see each flow's items in the order the flow's group
//! processes them. On the threaded runtime that is arrival order, with one exception: a
//! segment that reaches a preprocess replica before the replica has learnt of its (just
//! established) flow goes through the control plane and is re-injected, possibly after
//! segments that arrived later; TCP's reassembly puts the bytes in order either way.
//!
//! Dispatch: a chain holds its stages boxed, so each stage costs one indirect call per burst,
//! never one per item; an empty point costs one branch. Each runtime instance of a chain owns
//! its own clones of the stages ([`Hook`] stages are `Clone`): one per preprocess replica for
//! [`RxFrame`], one per flow group for [`RxSegment`] and [`Results`] (so per-flow state needs
//! no lock), one per postprocess replica plus one on the I/O task for [`TxFrame`]. A
//! topology may instead give the [`RxFrame`] or [`TxFrame`] stages a worker of their own
//! ([`Topology::with_rx_hooks_worker`](super::Topology::with_rx_hooks_worker),
//! [`with_tx_hooks_worker`](super::Topology::with_tx_hooks_worker)): one instance there, with
//! the runtime's rings around it. Stages that want to share something across instances keep
//! it behind an `Arc`.
//!
//! ```
//! use flextoe::pipeline::hooks::{Hook, HookCx, RxFrame, Verdict, Verdicts};
//! use flextoe::buf::Frame;
//!
//! /// Drops every frame shorter than 60 bytes, counted as "runt".
//! #[derive(Clone)]
//! struct Runts;
//!
//! impl Hook<RxFrame> for Runts {
//!     fn name(&self) -> &'static str {
//!         "runts"
//!     }
//!     fn drop_reasons(&self) -> &'static [&'static str] {
//!         &["runt"]
//!     }
//!     fn process(&mut self, _cx: &HookCx<'_>, frames: &mut [Frame], verdicts: &mut Verdicts) {
//!         for (i, f) in frames.iter().enumerate() {
//!             if f.len() < 60 {
//!                 verdicts.set(i, Verdict::Drop(0));
//!             }
//!         }
//!     }
//! }
//! ```

use std::fmt;
use std::sync::Arc;

use crate::buf::{Frame, FrameArena};
use crate::flow::FlowId;
use crate::ring::Mpmc;
use crate::stages::{Actions, ProtoResult, RxWork};
use crate::time::Instant;

/// A named place in the pipeline where user stages run.
pub trait HookPoint: 'static {
    /// What the stages at this point get.
    type Item: Send;
    /// The point's name in statistics.
    const NAME: &'static str;
    /// Whether [`Verdict::Tx`] just passes the item on (the point is on the way out).
    const TX_IS_PASS: bool = false;
}

/// The raw received frame, before preprocess.
#[derive(Debug)]
pub enum RxFrame {}
/// A segment of an established flow after flow lookup, before the protocol stage.
#[derive(Debug)]
pub enum RxSegment {}
/// The protocol stage's results, with their action flags.
#[derive(Debug)]
pub enum Results {}
/// The finished frame, after headers and checksums, before the port.
#[derive(Debug)]
pub enum TxFrame {}

impl HookPoint for RxFrame {
    type Item = Frame;
    const NAME: &'static str = "rx_frame";
}
impl HookPoint for RxSegment {
    type Item = RxWork;
    const NAME: &'static str = "rx_segment";
}
impl HookPoint for Results {
    type Item = ProtoResult;
    const NAME: &'static str = "results";
}
impl HookPoint for TxFrame {
    type Item = Frame;
    const NAME: &'static str = "tx_frame";
    const TX_IS_PASS: bool = true;
}

/// What a stage decides about one item (after XDP's actions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verdict {
    /// On to the next stage.
    #[default]
    Pass,
    /// Drop, counted under the stage's reason with this index in
    /// [`Hook::drop_reasons`] (an index past the list counts as `invalid`).
    Drop(u8),
    /// Send the frame out of the port as it is.
    Tx,
    /// Push the frame to the redirect ring with this index (in the order the rings were given
    /// to the builder).
    Redirect(u8),
    /// Hand the frame to the control plane.
    Punt,
}

/// One [`Verdict`] per item of a burst, all [`Verdict::Pass`] until a stage sets one.
///
/// The runtime looks at them only when a stage set any, so a stage that passes everything
/// costs its call and nothing per item.
#[derive(Debug, Default)]
pub struct Verdicts {
    /// Invariant: every entry is `Pass` between bursts.
    v: Vec<Verdict>,
    len: usize,
    dirty: bool,
}

impl Verdicts {
    /// Number of items in the burst.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the burst is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Decide about item `i` (an index past the burst is ignored).
    #[inline]
    pub fn set(&mut self, i: usize, v: Verdict) {
        if i < self.len {
            self.v[i] = v;
            self.dirty |= v != Verdict::Pass;
        }
    }

    /// Verdicts for a burst of `n` items, all [`Verdict::Pass`]: for running a stage
    /// outside a pipeline (its unit tests, a fuzz harness).
    pub fn new(n: usize) -> Self {
        let mut v = Verdicts::default();
        v.start(n);
        v
    }

    /// The verdict on item `i` so far (`Pass` past the burst).
    pub fn get(&self, i: usize) -> Verdict {
        if i < self.len {
            self.v[i]
        } else {
            Verdict::Pass
        }
    }

    /// Start a burst of `n` items (all `Pass`).
    pub(crate) fn start(&mut self, n: usize) {
        if self.v.len() < n {
            self.v.resize(n, Verdict::Pass);
        }
        self.len = n;
        self.dirty = false;
    }

    /// The burst's verdicts, read once and reset to `Pass`.
    fn take(&mut self) -> impl Iterator<Item = Verdict> + '_ {
        self.v[..self.len]
            .iter_mut()
            .map(|v| std::mem::replace(v, Verdict::Pass))
    }
}

/// What a stage may look at besides its items.
pub struct HookCx<'a> {
    /// The runtime's time for this burst.
    pub now: Instant,
    /// The frame arena: read and write a frame's bytes with [`FrameArena::data`] and
    /// [`FrameArena::data_mut`].
    pub arena: &'a FrameArena,
    /// Which instance of the chain runs (preprocess replica, flow group, postprocess
    /// replica; the inline runtime and the threaded I/O task have their own numbers, see the
    /// module docs). Always 0 on the inline runtime.
    pub instance: usize,
}

/// The engine a stage joins, given to [`Hook::attach`] once, as the engine is built.
pub struct AttachCx {
    pub(crate) host: std::sync::Weak<crate::host::HostShared>,
}

/// A user stage at hook point `H`: one call per burst.
///
/// Stages are `Clone`: every runtime instance of the point (see the module docs) gets its
/// own copy, so a stage keeps per-instance state without locks.
pub trait Hook<H: HookPoint>: Send + 'static {
    /// Name in statistics.
    fn name(&self) -> &'static str;
    /// Names of the stage's drop reasons, indexed by [`Verdict::Drop`].
    fn drop_reasons(&self) -> &'static [&'static str] {
        &[]
    }
    /// Look at (and possibly change) a burst; set a verdict for any item that should not
    /// simply pass. `verdicts` has one entry per item, all [`Verdict::Pass`] on entry.
    fn process(&mut self, cx: &HookCx<'_>, items: &mut [H::Item], verdicts: &mut Verdicts);
    /// Called once as the engine is built, before its runtime copies the stage: the
    /// engine it joins (a stage that an application-side handle must find by its engine
    /// registers here, as the splice stage does). Nothing by default.
    fn attach(&mut self, engine: &AttachCx) {
        let _ = engine;
    }
}

/// A stage with the means to copy itself, as the chains keep them.
trait DynHook<H: HookPoint>: Hook<H> {
    fn clone_box(&self) -> Box<dyn DynHook<H>>;
}

impl<H: HookPoint, T: Hook<H> + Clone> DynHook<H> for T {
    fn clone_box(&self) -> Box<dyn DynHook<H>> {
        Box::new(self.clone())
    }
}

/// Counters of one user stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookStats {
    /// Bursts processed.
    pub bursts: u64,
    /// Items taken.
    pub items_in: u64,
    /// Items passed on.
    pub passed: u64,
    /// Drops, one counter per name in [`Hook::drop_reasons`].
    pub drops: Vec<u64>,
    /// Frames sent back out ([`Verdict::Tx`]).
    pub tx: u64,
    /// Frames pushed to a redirect ring.
    pub redirected: u64,
    /// Frames that a redirect ring had no room for (freed).
    pub redirect_full: u64,
    /// Frames handed to the control plane.
    pub punted: u64,
    /// Verdicts the point does not support, or drop reasons / rings out of range.
    pub invalid: u64,
}

impl HookStats {
    fn merge(&mut self, o: &HookStats) {
        self.bursts += o.bursts;
        self.items_in += o.items_in;
        self.passed += o.passed;
        if self.drops.len() < o.drops.len() {
            self.drops.resize(o.drops.len(), 0);
        }
        for (a, b) in self.drops.iter_mut().zip(&o.drops) {
            *a += b;
        }
        self.tx += o.tx;
        self.redirected += o.redirected;
        self.redirect_full += o.redirect_full;
        self.punted += o.punted;
        self.invalid += o.invalid;
    }

    fn drop(&mut self, reason: u8) {
        match self.drops.get_mut(reason as usize) {
            Some(n) => *n += 1,
            None => self.invalid += 1,
        }
    }
}

/// One user stage's counters, with where it sits and what its drop reasons are called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookReport {
    /// Hook point ([`HookPoint::NAME`]).
    pub point: &'static str,
    /// Stage name ([`Hook::name`]).
    pub name: &'static str,
    /// Drop reason names.
    pub reasons: &'static [&'static str],
    /// Counters (summed over every instance).
    pub stats: HookStats,
}

impl HookReport {
    /// Drops counted under the reason called `reason` (0 if there is none by that name).
    pub fn drops(&self, reason: &str) -> u64 {
        self.reasons
            .iter()
            .position(|r| *r == reason)
            .and_then(|i| self.stats.drops.get(i).copied())
            .unwrap_or(0)
    }

    /// Every drop, whatever the reason.
    pub fn drops_total(&self) -> u64 {
        self.stats.drops.iter().sum()
    }

    /// Add the counters of reports with the same point and name; others are appended.
    pub fn merge_into(list: &mut Vec<HookReport>, more: &[HookReport]) {
        for r in more {
            match list
                .iter_mut()
                .find(|x| x.point == r.point && x.name == r.name)
            {
                Some(x) => x.stats.merge(&r.stats),
                None => list.push(r.clone()),
            }
        }
    }
}

impl fmt::Display for HookReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        write!(
            f,
            "{}@{} in={} out={} bursts={} tx={} redirected={} punted={} drops:",
            self.name, self.point, s.items_in, s.passed, s.bursts, s.tx, s.redirected, s.punted
        )?;
        let mut any = false;
        for (name, n) in self.reasons.iter().zip(&s.drops) {
            if *n > 0 {
                write!(f, " {name}={n}")?;
                any = true;
            }
        }
        if s.redirect_full > 0 {
            write!(f, " redirect-full={}", s.redirect_full)?;
            any = true;
        }
        if s.invalid > 0 {
            write!(f, " invalid={}", s.invalid)?;
            any = true;
        }
        if !any {
            f.write_str(" none")?;
        }
        Ok(())
    }
}

/// A frame a stage redirected.
#[derive(Debug)]
pub struct Redirected {
    /// The frame; give it back to the engine's arena ([`FrameArena::free`]) when done.
    pub frame: Frame,
    /// The hook point it was redirected from.
    pub point: &'static str,
    /// The flow, where the point knows it ([`RxSegment`]).
    pub flow: Option<FlowId>,
}

/// A bounded queue that stages redirect frames to ([`Verdict::Redirect`]); any thread may
/// read it. When it is full, a redirected frame is freed and counted (`redirect_full`).
#[derive(Clone)]
pub struct RedirectRing {
    q: Arc<Mpmc<Redirected>>,
}

impl RedirectRing {
    /// A ring of `capacity` frames.
    pub fn new(capacity: usize) -> Self {
        RedirectRing {
            q: Arc::new(Mpmc::new(capacity)),
        }
    }

    /// Take one redirected frame.
    pub fn pop(&self) -> Option<Redirected> {
        self.q.pop()
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Whether no frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Take every waiting frame and free it into `arena`; returns how many.
    pub fn drain_into(&self, arena: &FrameArena) -> usize {
        let mut n = 0;
        while let Some(r) = self.pop() {
            arena.free(r.frame);
            n += 1;
        }
        n
    }
}

/// Items that carry a frame and can leave the chain.
pub trait FrameItem {
    /// The frame and, where known, its flow.
    fn into_parts(self) -> (Frame, Option<FlowId>);
}

impl FrameItem for Frame {
    fn into_parts(self) -> (Frame, Option<FlowId>) {
        (self, None)
    }
}

impl FrameItem for RxWork {
    fn into_parts(self) -> (Frame, Option<FlowId>) {
        (self.frame, Some(self.flow))
    }
}

struct Slot<H: HookPoint> {
    hook: Box<dyn DynHook<H>>,
    stats: HookStats,
}

/// The ordered stages at one hook point, with their counters.
pub struct Chain<H: HookPoint> {
    slots: Vec<Slot<H>>,
    verdicts: Verdicts,
    scratch: Vec<H::Item>,
    keep: Vec<Verdict>,
}

impl<H: HookPoint> Default for Chain<H> {
    fn default() -> Self {
        Chain {
            slots: Vec::new(),
            verdicts: Verdicts::default(),
            scratch: Vec::new(),
            keep: Vec::new(),
        }
    }
}

impl<H: HookPoint> Clone for Chain<H> {
    /// A fresh instance for another replica: copies of the stages, counters at zero.
    fn clone(&self) -> Self {
        Chain {
            slots: self
                .slots
                .iter()
                .map(|s| Slot {
                    hook: s.hook.clone_box(),
                    stats: HookStats {
                        drops: vec![0; s.hook.drop_reasons().len()],
                        ..Default::default()
                    },
                })
                .collect(),
            verdicts: Verdicts::default(),
            scratch: Vec::new(),
            keep: Vec::new(),
        }
    }
}

impl<H: HookPoint> Chain<H> {
    /// Tell every stage the engine it joins ([`Hook::attach`]).
    pub(crate) fn attach(&mut self, engine: &AttachCx) {
        for s in &mut self.slots {
            s.hook.attach(engine);
        }
    }

    /// Append a stage.
    pub(crate) fn push<T: Hook<H> + Clone>(&mut self, hook: T) {
        let drops = vec![0; hook.drop_reasons().len()];
        self.slots.push(Slot {
            hook: Box::new(hook),
            stats: HookStats {
                drops,
                ..Default::default()
            },
        });
    }

    /// Whether the point has no stage.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Number of stages.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Every stage's counters.
    pub fn reports(&self) -> Vec<HookReport> {
        self.slots
            .iter()
            .map(|s| HookReport {
                point: H::NAME,
                name: s.hook.name(),
                reasons: s.hook.drop_reasons(),
                stats: s.stats.clone(),
            })
            .collect()
    }

    /// Run stage `i`; whether it passed everything. Otherwise its verdicts wait in
    /// `self.verdicts` to be taken.
    fn call(&mut self, i: usize, cx: &HookCx<'_>, items: &mut [H::Item]) -> bool {
        let n = items.len();
        self.verdicts.start(n);
        let slot = &mut self.slots[i];
        slot.stats.bursts += 1;
        slot.stats.items_in += n as u64;
        slot.hook.process(cx, items, &mut self.verdicts);
        let all_pass = !self.verdicts.dirty;
        if all_pass {
            slot.stats.passed += n as u64;
        }
        all_pass
    }
}

/// Where the frames that stages send out or punt go: the runtime carries them out.
#[derive(Default)]
pub struct Diverted {
    /// Frames to send out of the port as they are.
    pub tx: Vec<Frame>,
    /// Frames for the control plane.
    pub punt: Vec<Frame>,
}

impl Diverted {
    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty() && self.punt.is_empty()
    }
}

impl<H: HookPoint> Chain<H>
where
    H::Item: FrameItem,
{
    /// Run every stage on `items`. Items a stage does not pass leave `items` (the rest keep
    /// their order): dropped and redirected frames are handled here, frames to send or to
    /// punt go to `out`. `tags`, when not empty, is a parallel list (sequence numbers) that
    /// loses the same entries. `punt_ok`: whether the point supports [`Verdict::Punt`].
    pub(crate) fn run<T>(
        &mut self,
        cx: &HookCx<'_>,
        items: &mut Vec<H::Item>,
        tags: &mut Vec<T>,
        rings: &[RedirectRing],
        punt_ok: bool,
        out: &mut Diverted,
    ) {
        debug_assert!(tags.is_empty() || tags.len() == items.len());
        for i in 0..self.slots.len() {
            if items.is_empty() {
                return;
            }
            if self.call(i, cx, items) {
                continue;
            }
            // The verdicts, read once (and reset for the next burst).
            self.keep.clear();
            self.keep.extend(self.verdicts.take().map(|v| match v {
                Verdict::Tx if H::TX_IS_PASS => Verdict::Pass,
                v => v,
            }));
            if !tags.is_empty() {
                let mut k = self.keep.iter();
                tags.retain(|_| k.next() == Some(&Verdict::Pass));
            }
            std::mem::swap(items, &mut self.scratch);
            let stats = &mut self.slots[i].stats;
            for (item, v) in self.scratch.drain(..).zip(self.keep.iter().copied()) {
                if v == Verdict::Pass {
                    stats.passed += 1;
                    items.push(item);
                    continue;
                }
                let (frame, flow) = item.into_parts();
                match v {
                    Verdict::Pass => unreachable!("handled above"),
                    Verdict::Drop(r) => {
                        stats.drop(r);
                        cx.arena.free(frame);
                    }
                    Verdict::Tx => {
                        stats.tx += 1;
                        out.tx.push(frame);
                    }
                    Verdict::Redirect(r) => match rings.get(r as usize) {
                        Some(ring) => {
                            let item = Redirected {
                                frame,
                                point: H::NAME,
                                flow,
                            };
                            match ring.q.push(item) {
                                Ok(()) => stats.redirected += 1,
                                Err(back) => {
                                    stats.redirect_full += 1;
                                    cx.arena.free(back.frame);
                                }
                            }
                        }
                        None => {
                            stats.invalid += 1;
                            cx.arena.free(frame);
                        }
                    },
                    Verdict::Punt if punt_ok => {
                        stats.punted += 1;
                        out.punt.push(frame);
                    }
                    Verdict::Punt => {
                        stats.invalid += 1;
                        cx.arena.free(frame);
                    }
                }
            }
        }
    }
}

impl Chain<TxFrame> {
    /// Run the stages on frames on their way to the port (nothing is sent back or punted at
    /// this point); `tags`, when not empty, loses the entries of the frames taken.
    pub(crate) fn run_out<T>(
        &mut self,
        cx: &HookCx<'_>,
        frames: &mut Vec<Frame>,
        tags: &mut Vec<T>,
        rings: &[RedirectRing],
    ) {
        let mut none = Diverted::default();
        self.run(cx, frames, tags, rings, false, &mut none);
        debug_assert!(none.is_empty());
    }
}

impl Chain<Results> {
    /// Run every stage on a burst of results. A result a stage does not pass stays in the
    /// burst (the TCP state has moved), but sends nothing: see the module docs.
    pub(crate) fn run_results(&mut self, cx: &HookCx<'_>, items: &mut [ProtoResult]) {
        for i in 0..self.slots.len() {
            if self.call(i, cx, items) {
                continue;
            }
            let stats = &mut self.slots[i].stats;
            for (r, v) in items.iter_mut().zip(self.verdicts.take()) {
                match v {
                    Verdict::Pass => stats.passed += 1,
                    Verdict::Drop(reason) => {
                        stats.drop(reason);
                        r.actions.0 &= !(Actions::TX | Actions::ACK_NOW | Actions::FETCH_PAYLOAD);
                        stats.passed += 1;
                    }
                    Verdict::Tx | Verdict::Redirect(_) | Verdict::Punt => {
                        stats.invalid += 1;
                        stats.passed += 1;
                    }
                }
            }
        }
    }
}

/// The user stages at every hook point, and the redirect rings they may use.
#[derive(Default, Clone)]
pub struct Hooks {
    /// Stages at [`RxFrame`].
    pub rx_frame: Chain<RxFrame>,
    /// Stages at [`RxSegment`].
    pub rx_segment: Chain<RxSegment>,
    /// Stages at [`Results`].
    pub results: Chain<Results>,
    /// Stages at [`TxFrame`].
    pub tx_frame: Chain<TxFrame>,
    /// Redirect rings, indexed by [`Verdict::Redirect`].
    pub rings: Vec<RedirectRing>,
}

impl Hooks {
    /// Tell every stage the engine it joins ([`Hook::attach`]).
    pub(crate) fn attach(&mut self, engine: &AttachCx) {
        self.rx_frame.attach(engine);
        self.rx_segment.attach(engine);
        self.results.attach(engine);
        self.tx_frame.attach(engine);
    }

    /// Whether no point has a stage.
    pub fn is_empty(&self) -> bool {
        self.rx_frame.is_empty()
            && self.rx_segment.is_empty()
            && self.results.is_empty()
            && self.tx_frame.is_empty()
    }

    /// Every stage's counters, point by point.
    pub fn reports(&self) -> Vec<HookReport> {
        let mut v = self.rx_frame.reports();
        v.extend(self.rx_segment.reports());
        v.extend(self.results.reports());
        v.extend(self.tx_frame.reports());
        v
    }
}
