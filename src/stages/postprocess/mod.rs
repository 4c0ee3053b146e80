//! Postprocess: headers from templates, ACK coalescing, per-flow counters.
//!
//! For every result that sends a segment, postprocess takes a frame from the arena and writes
//! the connection's header template with the protocol stage's snapshot (sequence and
//! acknowledgment numbers, window, timestamp echo, ECN echo). Under
//! [`AckPolicy::PerBurst`](super::protocol::AckPolicy) it keeps only the last coalescable ACK
//! of each flow in a burst. It also adds the result's figures to the flow's counters, which
//! the control plane reads for timeouts and RTT.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::protocol::AckPolicy;
use super::{Actions, ProtoResult};
use crate::buf::{FrameArena, FrameCache};
use crate::flow::{FlowCounters, FlowId, FlowIdentity};
use crate::pipeline::hooks::{Hook, HookCx, Results, Verdicts};
use crate::stats::{DropReason, StageStats};
use crate::time::Instant;

mod acks;
mod counters;

use acks::{AckState, LastTx};
use counters::Accumulator;

/// Actions whose counters are kept apart: loss, recovery and reordering.
const RARE: u32 = Actions::DUP_ACK
    | Actions::FAST_RETRANSMIT
    | Actions::RECOVERY_RETRANSMIT
    | Actions::TAIL_PROBE
    | Actions::TIMEOUT_RETRANSMIT
    | Actions::OOO;

/// What postprocess knows of a flow.
#[derive(Clone)]
pub struct FlowView {
    /// Read-only identity (template).
    pub identity: Arc<FlowIdentity>,
    /// Shared counters.
    pub counters: Arc<FlowCounters>,
}

/// The postprocess stage.
pub struct Postprocess {
    arena: Arc<FrameArena>,
    /// Frames for ACKs and other header-only segments, taken a burst at a time; frames of
    /// results that send nothing go back here.
    frames: FrameCache,
    policy: AckPolicy,
    flows: Vec<Option<FlowView>>,
    acks: Vec<AckState>,
    last: Vec<LastTx>,
    acc: Accumulator,
    stats: StageStats,
    /// The only replica that updates its flows' counters.
    sole: bool,
    /// Runs on the control plane's thread: arming the timers needs no fence.
    with_control: bool,
    /// Fills the checksums of the frames it builds (the port does not offload them).
    checksums: bool,
}

impl Postprocess {
    /// A postprocess stage. A delayed-ACK policy's delay is clamped to
    /// [`AckPolicy::MAX_DELAY`] however it was built (RFC 1122 4.2.3.2: less than 0.5 s).
    pub fn new(arena: Arc<FrameArena>, policy: AckPolicy) -> Self {
        let policy = match policy {
            AckPolicy::Delayed(d) => AckPolicy::delayed(d),
            p => p,
        };
        Postprocess {
            frames: FrameCache::new(arena.clone()),
            arena,
            policy,
            flows: Vec::new(),
            acks: Vec::new(),
            last: Vec::new(),
            acc: Accumulator::default(),
            stats: StageStats::default(),
            sole: false,
            with_control: false,
            checksums: false,
        }
    }

    /// Declare this replica the only writer of its flows' counters (the inline runtime's
    /// one postprocess): counter updates are then a load and a store instead of locked
    /// adds. Wrong (counts lost) if another replica or thread also updates the counters
    /// of these flows.
    pub fn sole_writer(mut self) -> Self {
        self.sole = true;
        self
    }

    /// Declare that this replica runs on the control plane's thread, between its calls (the
    /// inline runtime): the flows' timers then see its stores in program order.
    pub(crate) fn on_control_thread(mut self) -> Self {
        self.with_control = true;
        self
    }

    /// Fill the IPv4 and TCP checksums of the frames it builds, from the flow's header
    /// template ([`HeaderTemplate::fill_checksums`](crate::wire::HeaderTemplate::fill_checksums)):
    /// the payload is in the frame by then, and its sum when placement made one.
    pub(crate) fn filling_checksums(mut self, on: bool) -> Self {
        self.checksums = on;
        self
    }

    /// Install a flow.
    pub fn install(&mut self, id: FlowId, view: FlowView) {
        let i = id as usize;
        if self.flows.len() <= i {
            self.flows.resize_with(i + 1, || None);
        }
        self.flows[i] = Some(view);
        if self.acks.len() <= i {
            self.acks.resize(i + 1, AckState::default());
        }
        self.acks[i] = AckState::default();
    }

    /// Remove a flow.
    pub fn remove(&mut self, id: FlowId) {
        if self.acc.flow == Some(id) {
            self.acc = Accumulator::default();
        }
        if let Some(f) = self.flows.get_mut(id as usize) {
            *f = None;
        }
        if let Some(a) = self.acks.get_mut(id as usize) {
            *a = AckState::default();
        }
    }

    /// The ACK policy.
    pub fn policy(&self) -> AckPolicy {
        self.policy
    }

    /// Whether `r` is a result of its flow id's previous connection (its stamp's incarnation
    /// is not the installed connection's): one that passed placement before this connection
    /// was installed (the threaded runtime reuses a freed id at once). It must neither go out
    /// with this connection's headers nor count toward its state.
    #[inline]
    fn stale(&self, r: &ProtoResult) -> bool {
        r.stamp != 0
            && self
                .flows
                .get(r.flow as usize)
                .and_then(Option::as_ref)
                .is_some_and(|v| (r.stamp >> 24) as u8 != v.identity.incarnation)
    }

    /// Count `r` and, where `send`, build its segment. `stale`: [`stale`](Self::stale)'s
    /// answer for `r`, which is dropped.
    fn build(&mut self, now: Instant, r: &mut ProtoResult, send: bool, stale: bool) {
        let Some(view) = self.flows.get(r.flow as usize).and_then(Option::as_ref) else {
            if let Some(f) = r.tx_frame.take() {
                self.frames.free(f);
            }
            return;
        };
        if stale {
            self.stats.drops.add(DropReason::StaleFlow);
            if let Some(f) = r.tx_frame.take() {
                self.frames.free(f);
            }
            return;
        }
        if self.acc.flow != Some(r.flow) {
            self.acc
                .flush(&self.flows, now, self.sole, self.with_control);
            self.acc.flow = Some(r.flow);
        }
        let acc = &mut self.acc;
        let a = r.actions;
        if a.any(Actions::RECEIVED) {
            acc.rx_segments += 1;
        }
        if a.any(Actions::PUBLISH_RX) {
            acc.rx_bytes += r.payload.len as u64;
        }
        if r.acked > 0 {
            acc.acked += r.acked as u64;
            if a.any(Actions::ECN_ECHOED) {
                acc.rare = true;
                acc.ecn += r.acked as u64;
            }
        }
        if a.any(RARE) {
            acc.rare = true;
            acc.dup_acks += u64::from(a.any(Actions::DUP_ACK));
            acc.fast += u64::from(a.any(Actions::FAST_RETRANSMIT));
            acc.recovery += u64::from(a.any(Actions::RECOVERY_RETRANSMIT));
            acc.tlp += u64::from(a.any(Actions::TAIL_PROBE));
            acc.timeout += u64::from(a.any(Actions::TIMEOUT_RETRANSMIT));
            acc.ooo += u64::from(a.any(Actions::OOO));
        }
        if a.any(Actions::RTT_SAMPLE) {
            acc.rtt_sum += r.rtt_us as u64;
            acc.rtt_n += 1;
        }
        // A result of no flow state (placement dropped it as stale) says nothing of it.
        if r.stamp != 0 {
            acc.in_flight = r.in_flight;
            acc.unsent = r.unsent;
            acc.zero = a.any(Actions::PEER_WINDOW_ZERO);
            acc.stamp = r.stamp;
        }
        if !send {
            if let Some(f) = r.tx_frame.take() {
                self.frames.free(f);
            }
            return;
        }
        // A frame whose payload was already fetched (the threaded runtime places payload
        // before postprocess) only needs its header; otherwise start a new frame.
        let mut frame = match r.tx_frame.take() {
            Some(f) => f,
            None => match self.frames.alloc() {
                Some(f) => f,
                None => {
                    self.stats.drops.add(DropReason::NoFrame);
                    return;
                }
            },
        };
        let len = frame.len();
        let template = &view.identity.template;
        let hl = template.write(self.arena.buf_mut(&mut frame), &r.hdr);
        frame.set_len(len.max(hl));
        if self.checksums {
            // Placement summed the payload as it copied it in (the frame's last bytes).
            let p = r.payload;
            let known = (a.any(Actions::FETCH_PAYLOAD) && p.sum != [0, 0]).then_some(p.sum);
            template.fill_checksums(self.arena.data_mut(&mut frame), known);
        }
        acc.tx_segments += 1;
        acc.tx_bytes += r.hdr.payload_len as u64;
        r.tx_frame = Some(frame);
        self.stats.items_out += 1;
    }
}

impl Postprocess {
    /// Process a burst without moving it (the inline runtime's path).
    pub fn process_in_place(&mut self, now: Instant, items: &mut [ProtoResult]) {
        self.stats.bursts += 1;
        self.stats.items_in += items.len() as u64;
        // For each flow of the burst: its last coalescable ACK and its last segment sent.
        self.last.clear();
        if self.policy != AckPolicy::EverySegment {
            for (i, r) in items.iter().enumerate() {
                // A probe below SND.UNA carries no acknowledgment the peer reads; a result
                // of the id's previous connection is dropped.
                if !r.actions.any(Actions::TX)
                    || r.actions.any(Actions::WINDOW_PROBE)
                    || self.stale(r)
                {
                    continue;
                }
                let coalescable = !r.actions.any(Actions::ACK_NOW);
                match self.last.iter_mut().find(|l| l.flow == r.flow) {
                    Some(l) => {
                        l.tx = i;
                        if coalescable {
                            l.ack = i;
                        }
                    }
                    None => self.last.push(LastTx {
                        flow: r.flow,
                        ack: if coalescable { i } else { usize::MAX },
                        tx: i,
                    }),
                }
            }
        }
        for (i, r) in items.iter_mut().enumerate() {
            let a = r.actions;
            // A result of the id's previous connection neither sends nor counts toward the
            // new connection's ACK state (`build` drops it).
            let stale = self.stale(r);
            let send = !stale
                && a.any(Actions::TX)
                && (a.any(Actions::ACK_NOW)
                    || self.policy == AckPolicy::EverySegment
                    || self.coalesced_ack_goes(r, i));
            self.build(now, r, send, stale);
            if !stale {
                // Only a segment built carries the ACK (one dropped for want of a frame
                // leaves it owed); a probe below SND.UNA acknowledges nothing the peer reads.
                let probe = a.any(Actions::WINDOW_PROBE);
                self.track_delayed(now, r, send && !probe, r.tx_frame.is_some() && !probe);
            }
        }
        self.acc
            .flush(&self.flows, now, self.sole, self.with_control);
    }
}

/// Postprocess works in place on the protocol stage's results, through the same interface as
/// a user stage at the `results` hook point (it sets no verdicts).
impl Hook<Results> for Postprocess {
    fn name(&self) -> &'static str {
        "postprocess"
    }

    fn process(&mut self, cx: &HookCx<'_>, items: &mut [ProtoResult], _v: &mut Verdicts) {
        self.process_in_place(cx.now, items);
    }
}

impl Postprocess {
    /// Counters.
    pub fn stats(&self) -> &StageStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn post(policy: AckPolicy, flows: u32) -> Postprocess {
        let arena = Arc::new(FrameArena::new(64).unwrap());
        let mut p = Postprocess::new(arena, policy);
        for id in 0..flows {
            let identity = crate::flow::test_identity(id, 1448);
            p.install(
                id,
                FlowView {
                    identity,
                    counters: FlowCounters::new(),
                },
            );
        }
        p
    }

    /// A full-sized segment (1448 bytes, the test flows' MSS) of in-order data acknowledged
    /// by a coalescable ACK.
    fn data(flow: FlowId) -> ProtoResult {
        data_of(flow, 1448)
    }

    /// `len` bytes of in-order data acknowledged by a coalescable ACK.
    fn data_of(flow: FlowId, len: u16) -> ProtoResult {
        let mut r = ProtoResult {
            flow,
            ..Default::default()
        };
        r.payload.len = len;
        r.actions
            .set(Actions::TX | Actions::RECEIVED | Actions::PUBLISH_RX);
        r
    }

    /// A segment that goes out whatever the policy (data, or an urgent ACK).
    fn urgent(flow: FlowId) -> ProtoResult {
        let mut r = ProtoResult {
            flow,
            ..Default::default()
        };
        r.actions.set(Actions::TX | Actions::ACK_NOW);
        r
    }

    fn sent(items: &[ProtoResult]) -> Vec<usize> {
        items
            .iter()
            .enumerate()
            .filter(|(_, r)| r.tx_frame.is_some())
            .map(|(i, _)| i)
            .collect()
    }

    /// Counters add up over bursts and flow runs, whether updated with locked adds or, by
    /// a sole writer, with a load and a store.
    #[test]
    fn counters_add_up_over_bursts_with_either_kind_of_update() {
        for sole in [false, true] {
            let mut p = post(AckPolicy::PerBurst, 2);
            if sole {
                p = p.sole_writer();
            }
            for burst in 0..5u16 {
                let mut items: Vec<ProtoResult> = [0, 0, 1, 0]
                    .into_iter()
                    .map(|f| {
                        let mut r = data(f);
                        r.payload.len = 100 + burst;
                        r.actions.set(Actions::RTT_SAMPLE);
                        r.rtt_us = 10;
                        r
                    })
                    .collect();
                p.process_in_place(Instant::ZERO, &mut items);
                for r in &mut items {
                    if let Some(f) = r.tx_frame.take() {
                        p.frames.free(f);
                    }
                }
            }
            let c = &p.flows[0].as_ref().unwrap().counters;
            // Flow 0: three segments a burst, in two runs (the third is after flow 1's).
            assert_eq!(FlowCounters::get(&c.rx_segments), 15, "sole {sole}");
            let bytes: u64 = (0..5).map(|b| 3 * (100 + b)).sum();
            assert_eq!(FlowCounters::get(&c.rx_bytes), bytes, "sole {sole}");
            assert_eq!(c.rtt_since(0).0, (150, 15), "sole {sole}");
            let c1 = &p.flows[1].as_ref().unwrap().counters;
            assert_eq!(FlowCounters::get(&c1.rx_segments), 5, "sole {sole}");
        }
    }

    /// Two replicas that take one flow's bursts in turn: the one that finishes last holds the
    /// older burst, and the flow's send state stays the newer one's. A sole writer, which
    /// sees its flow's results in order, stores what it has.
    #[test]
    fn replicas_finishing_out_of_order_leave_the_newest_send_state() {
        let counters = FlowCounters::new();
        let replica = || {
            let arena = Arc::new(FrameArena::new(64).unwrap());
            let mut p = Postprocess::new(arena, AckPolicy::PerBurst);
            p.install(
                0,
                FlowView {
                    identity: crate::flow::test_identity(0, 1448),
                    counters: counters.clone(),
                },
            );
            p
        };
        let result = |stamp: u32, in_flight: u32, unsent: u32, zero: bool| {
            let mut r = urgent(0);
            r.stamp = stamp;
            r.in_flight = in_flight;
            r.unsent = unsent;
            if zero {
                r.actions.set(Actions::PEER_WINDOW_ZERO);
            }
            vec![r]
        };
        let (mut a, mut b) = (replica(), replica());
        // Burst 1 (5,000 in flight, a zero window) went to a, burst 2 (all acknowledged) to b;
        // b finishes first.
        // The result numbers wrap in the stamps' low 24 bits; the high byte is the
        // connection's incarnation.
        let mut older = result(1 << 24 | 0xff_ffff, 5000, 700, true);
        let mut newer = result(1 << 24 | 1, 0, 0, false);
        b.process_in_place(Instant::ZERO, &mut newer);
        a.process_in_place(Instant::ZERO, &mut older);
        assert_eq!(counters.in_flight(), 0, "a stale in-flight count won");
        assert_eq!(counters.unsent(), 0);
        assert!(!counters.peer_window_zero());
        // In order, the newer state replaces the older (the stamps wrap).
        let mut next = result(1 << 24 | 2, 1448, 1u32 << 31, false);
        a.process_in_place(Instant::ZERO, &mut next);
        assert_eq!(
            (counters.in_flight(), counters.unsent()),
            (1448, (1 << 31) - 1),
            "unsent saturates"
        );
        // A result of no flow's state (stamp 0) publishes nothing.
        let mut none = result(0, 9, 9, true);
        b.process_in_place(Instant::ZERO, &mut none);
        assert_eq!(counters.in_flight(), 1448);
        // Times of progress stay the latest a replica saw.
        let acked = |p: &mut Postprocess, at: u64| {
            let mut r = result(0, 0, 0, false);
            r[0].acked = 10;
            r[0].actions.set(Actions::RECEIVED);
            p.process_in_place(Instant::ZERO + Duration::from_micros(at), &mut r);
        };
        acked(&mut b, 20);
        acked(&mut a, 15);
        assert_eq!(FlowCounters::get(&counters.last_ack_us), 20);
        assert_eq!(FlowCounters::get(&counters.last_rx_us), 20);
        // A result of the id's previous connection (incarnation 9; the view's is 1) sends
        // nothing and leaves the state alone.
        let mut stale = result(9 << 24 | 3, 777, 0, false);
        stale[0].acked = 100;
        a.process_in_place(Instant::ZERO + Duration::from_micros(50), &mut stale);
        assert!(stale[0].tx_frame.is_none());
        assert_eq!(a.stats().drops.get(DropReason::StaleFlow), 1);
        assert_eq!(counters.in_flight(), 1448);
        assert_eq!(FlowCounters::get(&counters.acked_bytes), 20);
        assert_eq!(FlowCounters::get(&counters.last_ack_us), 20);
        // The sole writer stores.
        let mut sole = replica().sole_writer();
        let mut r = result(1 << 24 | 1, 10, 20, true);
        sole.process_in_place(Instant::ZERO, &mut r);
        assert_eq!(counters.in_flight(), 10);
        assert!(counters.peer_window_zero());
    }

    #[test]
    fn per_burst_keeps_each_flows_last_ack() {
        let mut p = post(AckPolicy::PerBurst, 2);
        let mut items = vec![data(0), data(1), data(0), data(1), data(0)];
        p.process_in_place(Instant::ZERO, &mut items);
        assert_eq!(sent(&items), vec![3, 4]);
    }

    #[test]
    fn an_ack_rides_on_a_later_segment_of_its_flow() {
        for policy in [
            AckPolicy::PerBurst,
            AckPolicy::delayed(Duration::from_millis(5)),
        ] {
            let mut p = post(policy, 2);
            let mut items = vec![data(0), data(1), data(0), urgent(0)];
            p.process_in_place(Instant::ZERO, &mut items);
            // Flow 0's ACK goes on its urgent segment; flow 1's own (under delayed ACKs the
            // protocol stage has left out the ACKs that wait: what reaches postprocess goes).
            assert_eq!(sent(&items), vec![1, 3], "{policy:?}");
        }
    }

    #[test]
    fn a_probe_below_snd_una_carries_no_ack() {
        for policy in [
            AckPolicy::PerBurst,
            AckPolicy::delayed(Duration::from_millis(5)),
        ] {
            let mut p = post(policy, 1);
            let mut probe = urgent(0);
            probe.actions.set(Actions::WINDOW_PROBE);
            let mut items = vec![data(0), data(0), probe];
            p.process_in_place(Instant::ZERO, &mut items);
            // The ACK of the data goes out on its own, beside the probe.
            assert_eq!(sent(&items), vec![1, 2], "{policy:?}");
        }
    }

    /// Delayed ACKs' timers: in-order data whose ACK waits (the protocol stage left its
    /// result without a segment) arms the flow's timer, after the delay, once; a segment
    /// that carries the ACK clears it, under both ways of clearing: a compare-and-swap, or
    /// on the control plane's thread a load and a store. A due time this stage did not set
    /// (another replica's) stays.
    #[test]
    fn delayed_ack_timers_are_armed_for_waiting_acks_and_cleared_by_a_segment() {
        for on_control in [false, true] {
            let mut p = post(AckPolicy::delayed(Duration::from_millis(5)), 1);
            if on_control {
                p = p.on_control_thread();
            }
            let counters = p.flows[0].as_ref().unwrap().counters.clone();
            let waits = || {
                let mut r = data(0);
                r.actions.clear(Actions::TX);
                r
            };
            for i in 0..6u64 {
                let mut items = vec![if i % 2 == 0 { waits() } else { data(0) }];
                p.process_in_place(Instant::from_micros(i), &mut items);
                assert_eq!(items[0].tx_frame.is_some(), i % 2 == 1, "{on_control}");
                let due = counters.ack_due.load(Ordering::Relaxed);
                if i % 2 == 0 {
                    assert_eq!(due, 5_000 + i + 1, "{on_control}");
                } else {
                    assert_eq!(due, 0, "{on_control}");
                }
                if let Some(f) = items[0].tx_frame.take() {
                    p.arena.free(f);
                }
            }
            // A second waiting ACK keeps the first one's due time.
            let mut items = vec![waits()];
            p.process_in_place(Instant::from_micros(10), &mut items);
            let mut items = vec![waits()];
            p.process_in_place(Instant::from_micros(12), &mut items);
            assert_eq!(
                counters.ack_due.load(Ordering::Relaxed),
                5_010 + 1,
                "{on_control}"
            );
            // Past that due time with the ACK not gone (its timer's ACK was dropped): armed
            // again.
            let mut items = vec![waits()];
            p.process_in_place(Instant::from_micros(6_000), &mut items);
            assert_eq!(
                counters.ack_due.load(Ordering::Relaxed),
                11_000 + 1,
                "{on_control}"
            );
            counters.ack_due.store(77, Ordering::Relaxed);
            let mut items2 = vec![data(0)];
            p.process_in_place(Instant::from_micros(13), &mut items2);
            assert!(items2[0].tx_frame.is_some(), "{on_control}");
            assert_eq!(counters.ack_due.load(Ordering::Relaxed), 77, "{on_control}");
            if let Some(f) = items2[0].tx_frame.take() {
                p.arena.free(f);
            }
        }
    }

    /// A segment that cannot be built (no frame left) does not count as carrying the ACK:
    /// the ACK stays owed and goes with the next segment that is built.
    #[test]
    fn an_ack_dropped_for_want_of_a_frame_stays_owed() {
        let arena = Arc::new(FrameArena::new(64).unwrap());
        let mut p = Postprocess::new(arena.clone(), AckPolicy::delayed(Duration::from_millis(5)));
        let counters = FlowCounters::new();
        p.install(
            0,
            FlowView {
                identity: crate::flow::test_identity(0, 1448),
                counters: counters.clone(),
            },
        );
        // Every frame taken before the stage's cache first fills from the arena.
        let mut held = Vec::new();
        while let Some(f) = arena.alloc() {
            held.push(f);
        }
        // Two full segments: the ACK is due, but no frame can be had.
        let mut items = vec![data(0), data(0)];
        p.process_in_place(Instant::from_micros(7), &mut items);
        assert!(sent(&items).is_empty(), "no frame: nothing built");
        assert_eq!(p.stats().drops.get(DropReason::NoFrame), 1);
        // The control plane's timer is asked to send it at once (7 us, stored plus one).
        assert_eq!(counters.ack_due.load(Ordering::Relaxed), 7 + 1);
        // Frames again: the next result that sends (here a small segment's ACK, as the
        // protocol stage would send it on the timer's request) carries the owed ACK.
        for f in held {
            arena.free(f);
        }
        let mut items = vec![data_of(0, 10)];
        p.process_in_place(Instant::from_micros(9), &mut items);
        assert_eq!(sent(&items), [0]);
        assert_eq!(counters.ack_due.load(Ordering::Relaxed), 0);
    }

    /// In-order data whose result sends nothing (its ACK was left to a segment that then
    /// did not go): the ACK is owed, and the delay's timer is armed for it.
    #[test]
    fn data_left_without_a_segment_arms_the_delayed_ack_timer() {
        let mut p = post(AckPolicy::delayed(Duration::from_millis(5)), 1);
        let counters = p.flows[0].as_ref().unwrap().counters.clone();
        let mut quiet = data(0);
        quiet.actions.clear(Actions::TX);
        let mut items = vec![quiet];
        p.process_in_place(Instant::from_micros(3), &mut items);
        assert!(sent(&items).is_empty());
        assert_eq!(counters.ack_due.load(Ordering::Relaxed), 5_003 + 1);
    }

    /// A delayed-ACK policy built by hand with a delay past the bound waits at most
    /// [`AckPolicy::MAX_DELAY`] (it waited the 2 s it was given).
    #[test]
    fn a_delay_built_by_hand_is_clamped() {
        let mut p = post(AckPolicy::Delayed(Duration::from_secs(2)), 1);
        assert_eq!(p.policy(), AckPolicy::Delayed(AckPolicy::MAX_DELAY));
        let counters = p.flows[0].as_ref().unwrap().counters.clone();
        let mut quiet = data(0);
        quiet.actions.clear(Actions::TX);
        let mut items = vec![quiet];
        p.process_in_place(Instant::from_micros(3), &mut items);
        assert_eq!(counters.ack_due.load(Ordering::Relaxed), 200_003 + 1);
    }

    /// A result of the flow id's previous connection (its stamp's incarnation is not the
    /// installed one's) neither sends nor counts toward the new connection's delayed ACK.
    #[test]
    fn a_stale_result_leaves_the_delayed_ack_state_alone() {
        let mut p = post(AckPolicy::delayed(Duration::from_millis(5)), 1);
        let counters = p.flows[0].as_ref().unwrap().counters.clone();
        // The installed connection is incarnation 1; these results are of incarnation 9:
        // one whose ACK waits, one that would carry the ACK.
        for tx in [false, true] {
            let mut stale = data(0);
            stale.stamp = 9 << 24 | 1;
            if !tx {
                stale.actions.clear(Actions::TX);
            }
            let mut items = vec![stale];
            p.process_in_place(Instant::ZERO, &mut items);
            assert!(sent(&items).is_empty());
        }
        assert_eq!(p.stats().drops.get(DropReason::StaleFlow), 2);
        assert_eq!(
            counters.ack_due.load(Ordering::Relaxed),
            0,
            "no timer armed"
        );
        assert_eq!(p.acks[0].unacked, 0, "the stale bytes did not count");
        // The connection's own data whose ACK waits arms the timer.
        let mut own = data(0);
        own.stamp = 1 << 24 | 1;
        own.actions.clear(Actions::TX);
        let mut items = vec![own];
        p.process_in_place(Instant::from_micros(1), &mut items);
        assert_eq!(counters.ack_due.load(Ordering::Relaxed), 5_001 + 1);
        assert_eq!(p.acks[0].unacked, 1448);
    }
}
