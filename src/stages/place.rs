//! Place: payload between frames and the connections' rings.
//!
//! RX: copy a received segment's payload into the connection's RX ring at the position the
//! protocol stage chose (also ahead of the in-order point), publish the new in-order end, and
//! free the frame. TX: copy payload from the TX ring into the outgoing frame (for the first
//! transmission and for retransmissions alike), and release ring space the peer acknowledged.
//! Payload is copied exactly once per direction.

use std::sync::Arc;

use super::{Actions, ProtoResult};
use crate::buf::{Frame, FrameArena, RingReader, RingWriter};
use crate::flow::FlowId;
use crate::pipeline::hooks::{Hook, HookCx, Results, Verdicts};
use crate::stats::{DropReason, StageStats};
use crate::time::Instant;

/// The ring ends a connection's data path owns.
pub struct FlowRings {
    /// Producing end of the RX ring (the application reads the other end).
    pub rx: RingWriter,
    /// Consuming end of the TX ring (the application writes the other end).
    pub tx: RingReader,
}

/// The place stage.
pub struct Place {
    arena: Arc<FrameArena>,
    flows: Vec<Option<FlowRings>>,
    /// Received frames whose payload is placed, given back together at the end of the
    /// burst: one compare-and-swap on the arena's free list per burst, not per frame, and
    /// no locked instruction waiting behind each payload copy's stores.
    freed: Vec<Frame>,
    stats: StageStats,
}

impl Place {
    /// A place stage over `arena`.
    pub fn new(arena: Arc<FrameArena>) -> Self {
        Place {
            arena,
            flows: Vec::new(),
            freed: Vec::new(),
            stats: StageStats::default(),
        }
    }

    /// Install a flow's rings.
    pub fn install(&mut self, id: FlowId, rings: FlowRings) {
        let i = id as usize;
        if self.flows.len() <= i {
            self.flows.resize_with(i + 1, || None);
        }
        self.flows[i] = Some(rings);
    }

    /// Remove a flow's rings.
    pub fn remove(&mut self, id: FlowId) -> Option<FlowRings> {
        self.flows.get_mut(id as usize).and_then(Option::take)
    }

    /// The application's positions: (TX ring head, RX ring tail).
    pub fn app_positions(&self, id: FlowId) -> Option<(u64, u64)> {
        let r = self.flows.get(id as usize)?.as_ref()?;
        Some((r.tx.head(), r.rx.tail()))
    }

    /// Fill in the application's ring positions of an `App` work item.
    pub fn fill_positions(&self, w: &mut super::ProtoWork) {
        if let super::ProtoWork::App {
            flow, positions, ..
        } = w
        {
            if positions.is_none() {
                *positions = self.app_positions(*flow);
            }
        }
    }

    /// The ring ends of a flow.
    pub fn rings(&self, id: FlowId) -> Option<&FlowRings> {
        self.flows.get(id as usize)?.as_ref()
    }

    /// Process a burst without moving it (the inline runtime's path).
    pub fn process_in_place(&mut self, _now: Instant, items: &mut [ProtoResult]) {
        self.stats.bursts += 1;
        self.stats.items_in += items.len() as u64;
        self.stats.items_out += items.len() as u64;
        for r in items.iter_mut() {
            self.apply_deferred(r);
        }
        self.arena.free_all(&mut self.freed);
    }

    /// Carry out one result's payload actions.
    pub fn apply(&mut self, r: &mut ProtoResult) {
        self.apply_deferred(r);
        self.arena.free_all(&mut self.freed);
    }

    /// [`apply`](Self::apply), leaving the received frame in `freed`.
    fn apply_deferred(&mut self, r: &mut ProtoResult) {
        let a = r.actions;
        let Some(rings) = self.flows.get_mut(r.flow as usize).and_then(Option::as_mut) else {
            if let Some(f) = r.rx_frame.take() {
                self.freed.push(f);
            }
            return;
        };
        if let Some(frame) = r.rx_frame.take() {
            if a.any(Actions::PLACE_PAYLOAD) {
                let data = self.arena.data(&frame);
                let off = r.payload.frame_off as usize;
                let end = off + r.payload.len as usize;
                let ok = end <= data.len()
                    && rings
                        .rx
                        .write_at(r.payload.ring_pos, &data[off..end])
                        .is_ok();
                if !ok {
                    // The protocol stage only places inside the window it computed from the
                    // ring, so this means a state/ring mismatch; count it, never corrupt.
                    self.stats.drops.add(DropReason::OutOfWindow);
                }
            }
            self.freed.push(frame);
        }
        if a.any(Actions::PUBLISH_RX) {
            let _ = rings.rx.publish(r.rx_publish);
        }
        if a.any(Actions::RELEASE_TX) {
            let _ = rings.tx.release(r.tx_release.min(rings.tx.head()));
        }
        if a.any(Actions::FETCH_PAYLOAD) {
            if let Some(frame) = r.tx_frame.as_mut() {
                let hl = frame.len();
                let len = r.payload.len as usize;
                let buf = self.arena.buf_mut(frame);
                if hl + len <= buf.len()
                    && rings
                        .tx
                        .read_at(r.payload.ring_pos, &mut buf[hl..hl + len])
                        .is_ok()
                {
                    frame.set_len(hl + len);
                } else {
                    self.stats.drops.add(DropReason::OutOfWindow);
                    if let Some(f) = r.tx_frame.take() {
                        self.arena.free(f);
                    }
                }
            }
        }
    }
}

/// Place works in place on the protocol stage's results, through the same interface as a
/// user stage at the `results` hook point (it sets no verdicts).
impl Hook<Results> for Place {
    fn name(&self) -> &'static str {
        "place"
    }

    fn process(&mut self, cx: &HookCx<'_>, items: &mut [ProtoResult], _v: &mut Verdicts) {
        self.process_in_place(cx.now, items);
    }
}

impl Place {
    /// Counters.
    pub fn stats(&self) -> &StageStats {
        &self.stats
    }
}
