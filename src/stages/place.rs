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
    /// Each installed flow's incarnation (0: results are not checked).
    incarnations: Vec<u8>,
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
            incarnations: Vec::new(),
            freed: Vec::new(),
            stats: StageStats::default(),
        }
    }

    /// Install a flow's rings, for the connection `incarnation`
    /// ([`FlowIdentity::incarnation`](crate::flow::FlowIdentity::incarnation)): a result
    /// whose [`stamp`](ProtoResult::stamp) names another one belongs to a previous
    /// connection of the id, which a runtime with queues between its stages may still
    /// deliver after the new one was installed; it is dropped (its frames freed, its actions
    /// cleared, counted as [`DropReason::StaleFlow`]). With 0, results are not checked.
    pub fn install(&mut self, id: FlowId, rings: FlowRings, incarnation: u8) {
        let i = id as usize;
        if self.flows.len() <= i {
            self.flows.resize_with(i + 1, || None);
            self.incarnations.resize(i + 1, 0);
        }
        self.flows[i] = Some(rings);
        self.incarnations[i] = incarnation;
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
        let inc = self.incarnations.get(r.flow as usize).copied().unwrap_or(0);
        if inc != 0 && (r.stamp >> 24) as u8 != inc {
            self.drop_stale(r);
            return;
        }
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

impl Place {
    /// A result of a previous connection of the flow id: nothing of it reaches this one.
    #[cold]
    fn drop_stale(&mut self, r: &mut ProtoResult) {
        self.stats.drops.add(DropReason::StaleFlow);
        if let Some(f) = r.rx_frame.take() {
            self.freed.push(f);
        }
        if let Some(f) = r.tx_frame.take() {
            self.arena.free(f);
        }
        r.actions = Actions::default();
        r.stamp = 0;
        r.acked = 0;
        r.rtt_us = 0;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::byte_ring;

    /// A result of the id's previous connection (another incarnation in its stamp) is
    /// dropped whole; one of the installed connection is placed.
    #[test]
    fn a_result_of_a_previous_connection_of_the_id_is_dropped() {
        let arena = Arc::new(FrameArena::new(8).unwrap());
        let mut place = Place::new(arena.clone());
        let (rx, mut app_rx) = byte_ring(1024);
        let (_app_tx, tx) = byte_ring(1024);
        place.install(3, FlowRings { rx, tx }, 2);
        let result = |arena: &FrameArena, incarnation: u32, byte: u8| {
            let mut f = arena.alloc().unwrap();
            arena.buf_mut(&mut f)[..4].fill(byte);
            f.set_len(4);
            let mut r = ProtoResult {
                flow: 3,
                stamp: incarnation << 24 | 9,
                rx_frame: Some(f),
                acked: 50,
                rtt_us: 7,
                rx_publish: 4,
                ..Default::default()
            };
            r.payload.len = 4;
            r.actions
                .set(Actions::PLACE_PAYLOAD | Actions::PUBLISH_RX | Actions::NOTIFY_APP);
            r
        };
        let free = arena.free_frames();
        let mut stale = [result(&arena, 1, 0xee)];
        place.process_in_place(Instant::ZERO, &mut stale);
        assert!(stale[0].actions.is_empty() && stale[0].stamp == 0);
        assert_eq!(
            (stale[0].acked, stale[0].rtt_us),
            (0, 0),
            "counted as progress"
        );
        assert_eq!(arena.free_frames(), free, "its frame was not given back");
        assert_eq!(place.stats().drops.get(DropReason::StaleFlow), 1);
        assert_eq!(
            app_rx.available(),
            0,
            "a stale result reached the new connection"
        );
        let mut live = [result(&arena, 2, 0x11)];
        place.process_in_place(Instant::ZERO, &mut live);
        let mut got = [0u8; 4];
        assert_eq!(app_rx.pop(&mut got), 4);
        assert_eq!(got, [0x11; 4]);
        assert_eq!(place.stats().drops.get(DropReason::StaleFlow), 1);
    }
}
