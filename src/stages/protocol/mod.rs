//! Protocol: the only place where per-connection TCP state changes.
//!
//! Each handler is a pure function of (work item, segment summary, state) that mutates the
//! state and returns a [`ProtoResult`] whose [`Actions`] say what the downstream stages must
//! do. One protocol stage serves one flow group; nothing else writes its flows' state.
//!
//! Receive: ACK validation (including "future" ACKs after go-back-N), trimming to the receive
//! window, up to [`OOO_INTERVALS`] out-of-order intervals whose payload is placed straight into
//! the receive ring and which pure ACKs report as SACK blocks, FIN.
//! Send: sequence ranges within the peer's window and the congestion window, which a
//! [`CongestionControl`] policy sets (by default [`NewReno`]), FIN once all data is out.
//! Loss recovery: limited transmit (RFC 3042); fast recovery on three duplicate ACKs or SACK
//! evidence, retransmitting the holes of the peer's SACK scoreboard ([`super::recovery`],
//! RFC 6675) or, with a peer that does not SACK, one segment per partial ACK (RFC 6582);
//! tail-loss probes (RFC 8985) on the control plane's request; go-back-N after a
//! retransmission timeout, skipping what the peer SACKed.

use std::sync::Arc;
use std::time::Duration;

use super::recovery::Scoreboard;
use super::{Actions, PayloadOp, ProtoResult, ProtoWork, RxWork, Stage};
use crate::buf::{FrameArena, RingObserver};
use crate::control::congestion::{
    AckSample, Algorithm, CongestionControl, Loss, LossKind, NewReno,
};
use crate::flow::FlowId;
use crate::limit::RateLimit;
use crate::stats::{DropReason, StageStats};
use crate::time::Instant;
use crate::wire::{flags, seq, SackBlocks, SegmentSummary, TxHeader};

mod burst;
mod delack;
mod loss;
mod rare;
mod receive;
mod send;
mod state;

use rare::{frozen, frozen_segment, peer_rst, rare};
use state::*;
pub use state::{FrozenApp, TcpParams, TcpState};

/// Out-of-order intervals kept per connection.
pub const OOO_INTERVALS: usize = 16;

/// When the receiver sends ACKs for in-order data.
///
/// Under every policy, out-of-order data, a FIN, window updates and challenge ACKs are
/// acknowledged at once, and a pure ACK that a later segment of the same flow in the same
/// burst would carry anyway (response data, a retransmission) is left out: the ACK rides on
/// that segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AckPolicy {
    /// One ACK for every data segment (FlexTOE's choice).
    EverySegment,
    /// One ACK per connection per burst.
    #[default]
    PerBurst,
    /// Delayed ACKs (RFC 1122 4.2.3.2, RFC 9293 3.8.6.3): in-order data is acknowledged
    /// when more than one full-sized segment of it arrived since the last segment sent (at
    /// the second full-sized segment, or after enough small ones, counted in bytes as Linux
    /// and smoltcp count; a full-sized segment is the connection's MSS, or the largest
    /// in-order payload seen if larger), when a segment of the flow goes out anyway (a
    /// response carries the ACK), or when the delay runs out, whichever comes first. The
    /// decision is taken at the last segment of each run of the flow's segments in a burst,
    /// like [`PerBurst`](Self::PerBurst)'s: a burst of many full-sized segments draws one
    /// ACK, on its last (a stretch ACK, as smoltcp sends one
    /// per poll and Linux one per coalesced receive). Build it with [`AckPolicy::delayed`],
    /// which bounds the delay (postprocess clamps one built by hand alike). The protocol stage decides which ACK waits (it writes no
    /// header for one), postprocess arms the flow's timer for it. A threaded topology with
    /// more than one postprocess replica acknowledges per burst instead (a flow's
    /// delayed-ACK timer is kept by postprocess).
    Delayed(Duration),
}

impl AckPolicy {
    /// The longest delay [`AckPolicy::delayed`] allows (RFC 1122 allows 500 ms; 200 ms is
    /// the customary bound).
    pub const MAX_DELAY: Duration = Duration::from_millis(200);

    /// Delayed ACKs with at most `delay` (clamped to [`MAX_DELAY`](Self::MAX_DELAY)). Keep
    /// it below the peer's tail-loss-probe allowance for a delayed ACK (Linux: 40 ms, this
    /// crate's control plane: 40 ms); 10 ms is smoltcp's default.
    pub fn delayed(delay: Duration) -> Self {
        AckPolicy::Delayed(delay.min(Self::MAX_DELAY))
    }
}

/// The protocol stage of one flow group, with its congestion-control policy `C`.
pub struct Protocol<C: CongestionControl = NewReno> {
    cc: C,
    flows: Vec<Option<(TcpState, C::Flow)>>,
    stats: StageStats,
    /// The arena of the received frames: a segment's SACK blocks are read from its frame
    /// (its summary only says where they are).
    arena: Arc<FrameArena>,
    /// Whether coalescable ACK headers are written only where one can be sent
    /// ([`with_ack_coalescing`](Self::with_ack_coalescing)).
    coalesce: bool,
    /// Whether the stage takes delayed ACKs ([`with_delayed_acks`](Self::with_delayed_acks)).
    delayed: bool,
    /// How many more application updates that make data ready may send their first
    /// segment themselves ([`set_direct_sends`](Self::set_direct_sends)).
    direct: usize,
    /// Challenge ACKs a peer's RSTs may still draw
    /// ([`with_challenge_ack_limit`](Self::with_challenge_ack_limit)).
    challenge: RateLimit,
}

/// Challenge ACKs a second a protocol stage sends across its flows in reply to RSTs,
/// unless told otherwise ([`Protocol::with_challenge_ack_limit`]): `u32::MAX`, no budget
/// across flows (each flow still sends at most one challenge ACK per 500 ms). A shared
/// budget tells a peer that spends it whether its spoofed RSTs drew challenge ACKs on
/// another connection (CVE-2016-5696).
pub const CHALLENGE_ACK_LIMIT: u32 = u32::MAX;

impl Protocol {
    /// An empty protocol stage with the default congestion control ([`NewReno`]), for
    /// segments received into frames of `arena`.
    pub fn new(arena: Arc<FrameArena>) -> Self {
        Self::with_congestion(NewReno, arena)
    }
}

impl<C: CongestionControl> Protocol<C> {
    /// An empty protocol stage whose flows follow the congestion control `cc`, for segments
    /// received into frames of `arena`.
    pub fn with_congestion(cc: C, arena: Arc<FrameArena>) -> Self {
        Protocol {
            cc,
            flows: Vec::new(),
            stats: StageStats::default(),
            arena,
            coalesce: false,
            delayed: false,
            direct: 0,
            challenge: RateLimit::new(CHALLENGE_ACK_LIMIT),
        }
    }

    /// Write ACK headers as the postprocess stage after it acknowledges under `policy`:
    /// only where one can be sent unless every segment is acknowledged
    /// ([`with_ack_coalescing`](Self::with_ack_coalescing)), and with the stage deciding
    /// which ACK waits under [`AckPolicy::Delayed`]
    /// ([`with_delayed_acks`](Self::with_delayed_acks)). The engines set it from
    /// [`EngineConfig::ack_policy`](crate::pipeline::EngineConfig::ack_policy).
    pub fn with_ack_policy(self, policy: AckPolicy) -> Self {
        self.with_ack_coalescing(policy != AckPolicy::EverySegment)
            .with_delayed_acks(matches!(policy, AckPolicy::Delayed(_)))
    }

    /// At most `per_sec` challenge ACKs a second across the stage's flows in reply to RSTs
    /// in the window but not exact (RFC 5961 section 7; default [`CHALLENGE_ACK_LIMIT`]:
    /// none, `u32::MAX`), besides each flow's own limit of one per 500 ms; RSTs beyond
    /// either are dropped without one and counted as [`DropReason::RateLimited`].
    pub fn with_challenge_ack_limit(mut self, per_sec: u32) -> Self {
        self.challenge = RateLimit::new(per_sec);
        self
    }

    /// The congestion-control policy.
    pub fn congestion(&self) -> &C {
        &self.cc
    }

    /// Install a flow's state; the congestion control starts from its initial window.
    pub fn install(&mut self, id: FlowId, mut st: TcpState) {
        let i = id as usize;
        if self.flows.len() <= i {
            self.flows.resize(i + 1, None);
        }
        let cf = self.cc.init_with(st.mss as u32, st.cwnd, st.congestion);
        st.cwnd = self.cc.cwnd(&cf);
        self.flows[i] = Some((st, cf));
    }

    /// Remove a flow.
    pub fn remove(&mut self, id: FlowId) -> Option<TcpState> {
        self.flows
            .get_mut(id as usize)
            .and_then(Option::take)
            .map(|(st, _)| st)
    }

    /// Read a flow's state (control plane and tests).
    pub fn state(&self, id: FlowId) -> Option<&TcpState> {
        self.flows
            .get(id as usize)
            .and_then(Option::as_ref)
            .map(|(st, _)| st)
    }

    /// The rate a flow is paced at (bytes per second), if any: the control plane's
    /// ([`ProtoWork::SetRate`]) when it set one, else the congestion control's.
    pub fn rate(&self, id: FlowId) -> Option<u64> {
        let (st, cf) = self.flows.get(id as usize)?.as_ref()?;
        st.control_rate.or_else(|| self.cc.rate(cf))
    }

    /// Read a flow's congestion-control state.
    pub fn congestion_state(&self, id: FlowId) -> Option<&C::Flow> {
        self.flows
            .get(id as usize)
            .and_then(Option::as_ref)
            .map(|(_, cf)| cf)
    }

    /// Number of installed flows.
    pub fn len(&self) -> usize {
        self.flows.iter().filter(|f| f.is_some()).count()
    }

    /// Count a drop that happened to one of this stage's results downstream of it (a
    /// transmission with no frame for it).
    pub fn count_drop(&mut self, reason: DropReason) {
        self.stats.drops.add(reason);
    }

    /// Whether no flow is installed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An application update of `flow` that only moved its receive ring's tail, applied to
    /// the flow's state without a work item where its result would do nothing (see
    /// [`TcpState::on_app_quiet`]): a runtime's shortcut for the doorbell of a read, which
    /// then needs no pass through the stages. `false` (state unchanged) where the update
    /// needs its work item, or the flow is not here.
    pub fn app_quiet(&mut self, flow: FlowId, tx_head: u64, rx_tail: u64) -> bool {
        match self.flows.get_mut(flow as usize).and_then(Option::as_mut) {
            Some((st, _)) => st.on_app_quiet(tx_head, rx_tail),
            None => false,
        }
    }

    /// From now on, up to `max` application updates that make data ready each send their
    /// flow's first segment in their own result, as a grant ([`ProtoWork::Tx`]) would,
    /// instead of asking for one (`Actions::SCHED`, which then stands only for what is
    /// left). Not an update whose result already sends a window update (that ACK goes on
    /// its own, with its SACK blocks). For a runtime whose scheduler would grant the flow
    /// at once anyway ([`FlowScheduler::direct`](crate::stages::scheduler::FlowScheduler::direct),
    /// no flow waiting, no pacing), within what its budget of grants has left: one result
    /// and one pass instead of two. `0` (the default) turns it off.
    pub fn set_direct_sends(&mut self, max: usize) {
        self.direct = max;
    }

    /// How many of the direct sends [`set_direct_sends`](Self::set_direct_sends) allowed
    /// are left (the rest were sent).
    pub fn direct_sends_left(&self) -> usize {
        self.direct
    }

    /// Handle one work item.
    pub fn handle(&mut self, now: Instant, work: ProtoWork) -> ProtoResult {
        let mut r = ProtoResult {
            flow: work.flow(),
            ..Default::default()
        };
        self.handle_into(now, work, &mut r);
        r
    }

    /// Handle one work item into `r`, which must be a default result for the item's flow
    /// (what [`handle`](Self::handle) starts from): the burst's results are built where
    /// they stay, not moved there.
    fn handle_into(&mut self, now: Instant, work: ProtoWork, r: &mut ProtoResult) {
        match work {
            ProtoWork::Rx(w) => {
                self.handle_rx(now, &w, r);
                r.rx_frame = Some(w.frame);
            }
            other => self.handle_other(now, other, r),
        }
    }

    /// [`handle_into`](Self::handle_into) for a received segment, read where it lies (the
    /// burst's input): everything but handing its frame on, which the caller does
    /// (`r.rx_frame`, whatever became of the segment).
    #[inline]
    fn handle_rx(&mut self, now: Instant, w: &RxWork, r: &mut ProtoResult) {
        let Some(Some((st, cf))) = self.flows.get_mut(r.flow as usize) else {
            self.stats.drops.add(DropReason::StaleFlow);
            return;
        };
        if st.has(F_FROZEN) && !w.summary.has(flags::RST) {
            // A frozen flow (on its way into a splice) drops segments; a peer's RST goes
            // through.
            frozen_segment(st, &mut self.stats, r);
        } else if stale_work(st, w.summary.incarnation) {
            // A segment of an earlier connection with this flow id (which preprocess
            // looked up before the id went to this one) is not this connection's.
            self.stats.drops.add(DropReason::StaleFlow);
        } else if w.summary.has(flags::RST) {
            peer_rst(st, &mut self.challenge, &mut self.stats, now, &w.summary, r);
        } else {
            // The options a summary only locates are read from the frame. (Most segments
            // carry no SACK blocks: they borrow the constant empty set rather than copy
            // one onto the stack.)
            let read;
            let (sack, ts) = if w.summary.sack_len > 0 || w.summary.ts_at != 0 {
                let data = self.arena.data(&w.frame);
                read = w.summary.sack_blocks(data);
                (&read, w.summary.timestamps(data))
            } else {
                (&SackBlocks::EMPTY, None)
            };
            if let Some(reason) = st.on_segment(&self.cc, cf, &w.summary, sack, ts, now, r) {
                self.stats.drops.add(reason);
            }
            r.actions.set(Actions::RECEIVED);
        }
        // Every result reports the flow's counters (see `dispatch`).
        if r.stamp == 0 {
            st.finish(r);
        }
    }

    /// [`handle_into`](Self::handle_into) for work other than a received segment.
    #[inline]
    fn handle_other(&mut self, now: Instant, work: ProtoWork, r: &mut ProtoResult) {
        match self.flows.get(r.flow as usize) {
            Some(Some((st, _))) if st.has(F_FROZEN) => self.handle_frozen(now, work, r),
            Some(Some(_)) => self.dispatch(now, work, r),
            _ => {}
        }
    }

    /// Work for a frozen flow: application updates wait for the thaw, a reset goes
    /// through (see [`frozen`]). Kept out of the hot code.
    #[cold]
    #[inline(never)]
    fn handle_frozen(&mut self, now: Instant, work: ProtoWork, r: &mut ProtoResult) {
        let Some(Some((st, _))) = self.flows.get_mut(r.flow as usize) else {
            return;
        };
        if stale_work(st, work.incarnation()) {
            // Made for an earlier connection with this flow id (see `ProtoWork`).
            self.stats.drops.add(DropReason::StaleFlow);
            st.finish(r);
            return;
        }
        if let Some(w) = frozen(st, now, work, r) {
            self.dispatch(now, w, r);
        }
    }

    /// Work for an installed flow, frozen or not (a segment goes on to
    /// [`handle_rx`](Self::handle_rx)).
    #[inline]
    fn dispatch(&mut self, now: Instant, work: ProtoWork, r: &mut ProtoResult) {
        let Some(Some((st, cf))) = self.flows.get_mut(r.flow as usize) else {
            debug_assert!(false, "dispatch runs for an installed flow");
            return;
        };
        let cc = &self.cc;
        // The data path's other two kinds here; the rest (control-plane work, kept out of
        // the hot code) in `rare`.
        match work {
            ProtoWork::Rx(w) => {
                self.handle_rx(now, &w, r);
                r.rx_frame = Some(w.frame);
                return;
            }
            ProtoWork::Tx { .. } => st.on_tx(now, r),
            // Made for an earlier connection with this flow id (see `ProtoWork`): dropped,
            // counted, the result reports the flow's counters only (as a stale segment's:
            // placement takes it as the flow's, and counts no second drop).
            ProtoWork::App { incarnation, .. } if stale_work(st, incarnation) => {
                self.stats.drops.add(DropReason::StaleFlow);
            }
            ProtoWork::App {
                positions,
                fin,
                closed,
                ..
            } => {
                let (tx_head, rx_tail) = positions.unwrap_or((st.tx_app_end, st.rx_tail));
                if closed {
                    st.app_closed();
                }
                st.take_app(now, tx_head, rx_tail, fin, r);
                // Sent at once where the scheduler would grant it: `on_tx` reports for both.
                if self.direct > 0 && r.actions.0 & (Actions::SCHED | Actions::TX) == Actions::SCHED
                {
                    r.actions.clear(Actions::SCHED);
                    st.on_tx(now, r);
                    if r.actions.any(Actions::TX) {
                        self.direct -= 1;
                    }
                }
            }
            other => rare(
                st,
                cc,
                cf,
                &mut self.stats,
                &mut self.challenge,
                now,
                other,
                r,
            ),
        }
        // Every result reports the flow's counters, even one that did nothing: the control
        // plane's timers read them from the last result. Most handlers end with the report
        // (a result's stamp is never 0 once reported); they change no state after it.
        if r.stamp == 0 {
            st.finish(r);
        }
    }
}

/// Whether work made for incarnation `inc` of the flow id is not for `st`'s connection (0
/// on either side: not checked).
#[inline(always)]
fn stale_work(st: &TcpState, inc: u8) -> bool {
    let ours = (st.stamp >> 24) as u8;
    (inc != ours) & (inc != 0) & (ours != 0)
}

impl<C: CongestionControl> Stage for Protocol<C> {
    type In = ProtoWork;
    type Out = ProtoResult;

    fn name(&self) -> &'static str {
        "protocol"
    }

    fn process(&mut self, now: Instant, input: &mut Vec<ProtoWork>, output: &mut Vec<ProtoResult>) {
        self.stats.bursts += 1;
        self.stats.items_in += input.len() as u64;
        self.stats.items_out += input.len() as u64;
        output.reserve(input.len());
        self.process_burst(now, input, output);
    }

    fn stats(&self) -> &StageStats {
        &self.stats
    }
}
