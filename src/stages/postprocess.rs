//! Postprocess: headers from templates, ACK coalescing, per-flow counters.
//!
//! For every result that sends a segment, postprocess takes a frame from the arena and writes
//! the connection's header template with the protocol stage's snapshot (sequence and
//! acknowledgment numbers, window, timestamp echo, ECN echo). Under
//! [`AckPolicy::PerBurst`](super::protocol::AckPolicy) it keeps only the last coalescable ACK
//! of each flow in a burst. It also adds the result's figures to the flow's counters, which
//! the control plane reads for timeouts and RTT.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::protocol::AckPolicy;
use super::{Actions, ProtoResult};
use crate::buf::FrameArena;
use crate::flow::{FlowCounters, FlowId, FlowIdentity};
use crate::pipeline::hooks::{Hook, HookCx, Results, Verdicts};
use crate::stats::{DropReason, StageStats};
use crate::time::Instant;

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
    policy: AckPolicy,
    flows: Vec<Option<FlowView>>,
    last_ack: Vec<(FlowId, usize)>,
    acc: Accumulator,
    stats: StageStats,
}

impl Postprocess {
    /// A postprocess stage.
    pub fn new(arena: Arc<FrameArena>, policy: AckPolicy) -> Self {
        Postprocess {
            arena,
            policy,
            flows: Vec::new(),
            last_ack: Vec::new(),
            acc: Accumulator::default(),
            stats: StageStats::default(),
        }
    }

    /// Install a flow.
    pub fn install(&mut self, id: FlowId, view: FlowView) {
        let i = id as usize;
        if self.flows.len() <= i {
            self.flows.resize_with(i + 1, || None);
        }
        self.flows[i] = Some(view);
    }

    /// Remove a flow.
    pub fn remove(&mut self, id: FlowId) {
        if self.acc.flow == Some(id) {
            self.acc = Accumulator::default();
        }
        if let Some(f) = self.flows.get_mut(id as usize) {
            *f = None;
        }
    }

    /// The ACK policy.
    pub fn policy(&self) -> AckPolicy {
        self.policy
    }

    fn build(&mut self, r: &mut ProtoResult, send: bool) {
        let Some(view) = self.flows.get(r.flow as usize).and_then(Option::as_ref) else {
            if let Some(f) = r.tx_frame.take() {
                self.arena.free(f);
            }
            return;
        };
        if self.acc.flow != Some(r.flow) {
            self.acc.flush(&self.flows);
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
                acc.ecn += r.acked as u64;
            }
        }
        acc.dup_acks += u64::from(a.any(Actions::DUP_ACK));
        acc.fast += u64::from(a.any(Actions::FAST_RETRANSMIT));
        acc.recovery += u64::from(a.any(Actions::RECOVERY_RETRANSMIT));
        acc.tlp += u64::from(a.any(Actions::TAIL_PROBE));
        acc.timeout += u64::from(a.any(Actions::TIMEOUT_RETRANSMIT));
        acc.ooo += u64::from(a.any(Actions::OOO));
        if a.any(Actions::RTT_SAMPLE) {
            acc.rtt_sum += r.rtt_us as u64;
            acc.rtt_n += 1;
        }
        acc.in_flight = r.in_flight;
        acc.unsent = r.unsent;
        acc.zero = r.peer_window_zero;
        if !send {
            if let Some(f) = r.tx_frame.take() {
                self.arena.free(f);
            }
            return;
        }
        // A frame whose payload was already fetched (the threaded runtime places payload
        // before postprocess) only needs its header; otherwise start a new frame.
        let mut frame = match r.tx_frame.take() {
            Some(f) => f,
            None => match self.arena.alloc() {
                Some(f) => f,
                None => {
                    self.stats.drops.add(DropReason::NoFrame);
                    return;
                }
            },
        };
        let len = frame.len();
        let hl = view
            .identity
            .template
            .write(self.arena.buf_mut(&mut frame), &r.hdr);
        frame.set_len(len.max(hl));
        acc.tx_segments += 1;
        acc.tx_bytes += r.hdr.payload_len as u64;
        r.tx_frame = Some(frame);
        self.stats.items_out += 1;
    }
}

impl Postprocess {
    /// Process a burst without moving it (the inline runtime's path).
    pub fn process_in_place(&mut self, _now: Instant, items: &mut [ProtoResult]) {
        self.stats.bursts += 1;
        self.stats.items_in += items.len() as u64;
        // Find the last coalescable ACK of each flow in this burst.
        self.last_ack.clear();
        if self.policy == AckPolicy::PerBurst {
            for (i, r) in items.iter().enumerate() {
                if r.actions.any(Actions::TX) && !r.actions.any(Actions::ACK_NOW) {
                    match self.last_ack.iter_mut().find(|(f, _)| *f == r.flow) {
                        Some(e) => e.1 = i,
                        None => self.last_ack.push((r.flow, i)),
                    }
                }
            }
        }
        for (i, r) in items.iter_mut().enumerate() {
            let a = r.actions;
            let send = a.any(Actions::TX)
                && (a.any(Actions::ACK_NOW)
                    || self.policy == AckPolicy::EverySegment
                    || self.last_ack.iter().any(|&(f, j)| f == r.flow && j == i));
            self.build(r, send);
        }
        self.acc.flush(&self.flows);
    }
}

/// Counter updates of one flow, gathered over a run of results and written to the shared
/// atomics once.
#[derive(Default)]
struct Accumulator {
    flow: Option<FlowId>,
    rx_segments: u64,
    rx_bytes: u64,
    acked: u64,
    ecn: u64,
    dup_acks: u64,
    fast: u64,
    recovery: u64,
    tlp: u64,
    timeout: u64,
    ooo: u64,
    rtt_sum: u64,
    rtt_n: u64,
    tx_segments: u64,
    tx_bytes: u64,
    in_flight: u32,
    unsent: u32,
    zero: bool,
}

impl Accumulator {
    fn flush(&mut self, flows: &[Option<FlowView>]) {
        let Some(flow) = self.flow.take() else {
            return;
        };
        if let Some(v) = flows.get(flow as usize).and_then(Option::as_ref) {
            let c = &v.counters;
            for (counter, n) in [
                (&c.rx_segments, self.rx_segments),
                (&c.rx_bytes, self.rx_bytes),
                (&c.acked_bytes, self.acked),
                (&c.ecn_bytes, self.ecn),
                (&c.dup_acks, self.dup_acks),
                (&c.fast_retransmits, self.fast),
                (&c.recovery_retransmits, self.recovery),
                (&c.tail_probes, self.tlp),
                (&c.timeout_retransmits, self.timeout),
                (&c.ooo_segments, self.ooo),
                (&c.tx_segments, self.tx_segments),
                (&c.tx_bytes, self.tx_bytes),
            ] {
                if n > 0 {
                    FlowCounters::add(counter, n);
                }
            }
            if self.rtt_n > 0 {
                c.add_rtt(self.rtt_sum, self.rtt_n);
            }
            c.in_flight.store(self.in_flight as u64, Ordering::Relaxed);
            c.unsent.store(self.unsent as u64, Ordering::Relaxed);
            c.peer_window_zero.store(self.zero, Ordering::Relaxed);
        }
        *self = Accumulator::default();
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
