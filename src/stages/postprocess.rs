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
use super::{Actions, ProtoResult, Stage};
use crate::buf::FrameArena;
use crate::flow::{FlowCounters, FlowId, FlowIdentity};
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
            return;
        };
        let c = &view.counters;
        let a = r.actions;
        if r.rx_frame.is_some() || a.any(Actions::PLACE_PAYLOAD) {
            FlowCounters::add(&c.rx_segments, 1);
        }
        if a.any(Actions::PUBLISH_RX) {
            FlowCounters::add(&c.rx_bytes, r.payload.len as u64);
        }
        if r.acked > 0 {
            FlowCounters::add(&c.acked_bytes, r.acked as u64);
            if a.any(Actions::ECN_ECHOED) {
                FlowCounters::add(&c.ecn_bytes, r.acked as u64);
            }
        }
        if a.any(Actions::DUP_ACK) {
            FlowCounters::add(&c.dup_acks, 1);
        }
        if a.any(Actions::FAST_RETRANSMIT) {
            FlowCounters::add(&c.fast_retransmits, 1);
        }
        if a.any(Actions::TIMEOUT_RETRANSMIT) {
            FlowCounters::add(&c.timeout_retransmits, 1);
        }
        if a.any(Actions::OOO) {
            FlowCounters::add(&c.ooo_segments, 1);
        }
        if a.any(Actions::RTT_SAMPLE) {
            FlowCounters::add(&c.rtt_sum_us, r.rtt_us as u64);
            FlowCounters::add(&c.rtt_samples, 1);
        }
        c.in_flight.store(r.in_flight as u64, Ordering::Relaxed);
        c.unsent.store(r.unsent as u64, Ordering::Relaxed);
        c.peer_window_zero
            .store(r.peer_window_zero, Ordering::Relaxed);
        if !send {
            return;
        }
        let Some(mut frame) = self.arena.alloc() else {
            self.stats.drops.add(DropReason::NoFrame);
            return;
        };
        let hl = view
            .identity
            .template
            .write(self.arena.buf_mut(&mut frame), &r.hdr);
        frame.set_len(hl);
        FlowCounters::add(&c.tx_segments, 1);
        FlowCounters::add(&c.tx_bytes, r.hdr.payload_len as u64);
        r.tx_frame = Some(frame);
        self.stats.items_out += 1;
    }
}

impl Stage for Postprocess {
    type In = ProtoResult;
    type Out = ProtoResult;

    fn name(&self) -> &'static str {
        "postprocess"
    }

    fn process(
        &mut self,
        _now: Instant,
        input: &mut Vec<ProtoResult>,
        output: &mut Vec<ProtoResult>,
    ) {
        self.stats.bursts += 1;
        self.stats.items_in += input.len() as u64;
        // Find the last coalescable ACK of each flow in this burst.
        self.last_ack.clear();
        if self.policy == AckPolicy::PerBurst {
            for (i, r) in input.iter().enumerate() {
                if r.actions.any(Actions::TX) && !r.actions.any(Actions::ACK_NOW) {
                    match self.last_ack.iter_mut().find(|(f, _)| *f == r.flow) {
                        Some(e) => e.1 = i,
                        None => self.last_ack.push((r.flow, i)),
                    }
                }
            }
        }
        for (i, mut r) in input.drain(..).enumerate() {
            let a = r.actions;
            let send = a.any(Actions::TX)
                && (a.any(Actions::ACK_NOW)
                    || self.policy == AckPolicy::EverySegment
                    || self.last_ack.iter().any(|&(f, j)| f == r.flow && j == i));
            self.build(&mut r, send);
            output.push(r);
        }
    }

    fn stats(&self) -> &StageStats {
        &self.stats
    }
}
