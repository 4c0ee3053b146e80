//! Place: payload between frames and the connections' rings.
//!
//! RX: copy a received segment's payload into the connection's RX ring at the position the
//! protocol stage chose (also ahead of the in-order point), publish the new in-order end, and
//! free the frame. TX: copy payload from the TX ring into the outgoing frame (for the first
//! transmission and for retransmissions alike), and release ring space the peer acknowledged.
//! Payload is copied exactly once per direction.

use std::sync::Arc;

use super::{Actions, PayloadOp, ProtoResult};
use crate::buf::{Frame, FrameArena, ReadLease, RingReader, RingWriter, WriteLease};
use crate::flow::FlowId;
use crate::pipeline::hooks::{Hook, HookCx, Results, Verdicts};
use crate::stats::{DropReason, StageStats};
use crate::time::Instant;
use crate::wire::checksum::Sum;

/// The ring ends a connection's data path owns.
pub struct FlowRings {
    /// Producing end of the RX ring (the application reads the other end).
    pub rx: RingWriter,
    /// Consuming end of the TX ring (the application writes the other end).
    pub tx: RingReader,
}

/// Transmit payloads shorter than this are not summed as they are copied
/// ([`PayloadOp::sum`]): the checksum reads them with the headers, in the same few cache
/// lines, and one pass over the frame costs less than two.
const SUM_MIN: usize = 256;

/// The place stage.
pub struct Place {
    arena: Arc<FrameArena>,
    flows: Vec<Option<FlowRings>>,
    /// Each installed flow's incarnation (0: results are not checked).
    incarnations: Vec<u8>,
    /// Received frames whose payload is placed, given back together at the end of the
    /// burst: one compare-and-swap on the arena's free list per burst, not per frame, and
    /// no locked instruction waiting behind each payload copy's stores; or left for the
    /// runtime ([`leave_freed`](Self::leave_freed)).
    freed: Vec<Frame>,
    leave: bool,
    /// Whether transmit payload is summed as it is copied ([`PayloadOp::sum`]).
    sums: bool,
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
            leave: false,
            sums: true,
            stats: StageStats::default(),
        }
    }

    /// Whether to sum transmit payload as it is copied into frames, for the TCP checksum
    /// ([`PayloadOp::sum`]); on by default. A runtime whose port computes checksums itself
    /// turns it off.
    pub fn set_payload_sums(&mut self, on: bool) {
        self.sums = on;
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
        self.give_back();
    }

    /// Carry out one result's payload actions.
    pub fn apply(&mut self, r: &mut ProtoResult) {
        self.apply_deferred(r);
        self.give_back();
    }

    /// Leave the received frames the stage is done with in [`freed`](Self::freed), for the
    /// runtime to take after each call, instead of giving them back to the arena: the
    /// inline runtime gives them to the frame cache its next segments come from, so that a
    /// frame just read is the next one written, while its lines are still in the data
    /// cache.
    pub(crate) fn leave_freed(&mut self) {
        self.leave = true;
    }

    /// The received frames the stage is done with (empty unless
    /// [`leave_freed`](Self::leave_freed)).
    pub(crate) fn freed(&mut self) -> &mut Vec<Frame> {
        &mut self.freed
    }

    #[inline]
    fn give_back(&mut self) {
        if !self.leave {
            self.arena.free_all(&mut self.freed);
        }
    }

    /// [`apply`](Self::apply), leaving the received frame in `freed`.
    #[inline]
    fn apply_deferred(&mut self, r: &mut ProtoResult) {
        if !self.admit(r) {
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
            if a.any(Actions::PLACE_PAYLOAD) && !place_rx(&self.arena, &mut rings.rx, r, &frame) {
                // The protocol stage only places inside the window it computed from the
                // ring, so this means a state/ring mismatch; count it, never corrupt.
                self.stats.drops.add(DropReason::OutOfWindow);
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
                if !fetch_tx(&self.arena, &rings.tx, &mut r.payload, frame, self.sums) {
                    self.stats.drops.add(DropReason::OutOfWindow);
                    if let Some(f) = r.tx_frame.take() {
                        self.arena.free(f);
                    }
                }
            }
        }
    }

    /// Whether `r` belongs to the installed connection of its flow id; a result of a previous
    /// one is dropped here.
    #[inline]
    fn admit(&mut self, r: &mut ProtoResult) -> bool {
        let inc = self.incarnations.get(r.flow as usize).copied().unwrap_or(0);
        if inc != 0 && (r.stamp >> 24) as u8 != inc {
            self.drop_stale(r);
            return false;
        }
        true
    }

    /// The copies of result `r` for a runtime that lends them to other threads (replicated
    /// placement): the first copy of at least `min` bytes (a received segment's payload into
    /// the RX ring, or transmit payload from the TX ring into the frame to send) is not made
    /// here but returned as a [`CopyJob`] numbered `slot`, with the ring range it touches
    /// leased; it comes back through [`complete`](Self::complete). Shorter copies are made
    /// here. Nothing is published: [`publish`](Self::publish) does that, in result order,
    /// once every copy before has come back. Received frames whose payload is placed wait in
    /// `freed`.
    pub(crate) fn begin(&mut self, r: &mut ProtoResult, min: usize, slot: u64) -> Begin {
        if !self.admit(r) {
            return Begin::Done;
        }
        let a = r.actions;
        let Some(rings) = self.flows.get_mut(r.flow as usize).and_then(Option::as_mut) else {
            if let Some(f) = r.rx_frame.take() {
                self.freed.push(f);
            }
            return Begin::Done;
        };
        let (pos, len) = (r.payload.ring_pos, r.payload.len as usize);
        let mut job = None;
        if let Some(frame) = r.rx_frame.take() {
            if a.any(Actions::PLACE_PAYLOAD) {
                if rings.rx.is_leased(pos, len) {
                    // A copy still out holds part of the range (the segment arrived again
                    // while its first copy is being made): wait for it.
                    r.rx_frame = Some(frame);
                    return Begin::Wait;
                }
                let off = r.payload.frame_off;
                let fits = off as usize + len <= self.arena.data(&frame).len();
                if fits && len >= min {
                    match rings.rx.lease(pos, len) {
                        Ok(lease) => {
                            job = Some(CopyJob {
                                slot,
                                copy: Copy::Rx { lease, off },
                                frame,
                                ok: false,
                                sums: false,
                                sum: [0, 0],
                            });
                        }
                        Err(_) => {
                            self.stats.drops.add(DropReason::OutOfWindow);
                            self.freed.push(frame);
                        }
                    }
                } else {
                    if !place_rx(&self.arena, &mut rings.rx, r, &frame) {
                        self.stats.drops.add(DropReason::OutOfWindow);
                    }
                    self.freed.push(frame);
                }
            } else {
                self.freed.push(frame);
            }
        }
        if a.any(Actions::FETCH_PAYLOAD) {
            if job.is_none() && len >= min {
                if let Some(frame) = r.tx_frame.take() {
                    match rings.tx.lease(pos, len) {
                        Ok(lease) => {
                            job = Some(CopyJob {
                                slot,
                                copy: Copy::Tx { lease },
                                frame,
                                ok: false,
                                sums: self.sums,
                                sum: [0, 0],
                            });
                        }
                        Err(_) => {
                            self.stats.drops.add(DropReason::OutOfWindow);
                            self.arena.free(frame);
                        }
                    }
                }
            } else if let Some(frame) = r.tx_frame.as_mut() {
                if !fetch_tx(&self.arena, &rings.tx, &mut r.payload, frame, self.sums) {
                    self.stats.drops.add(DropReason::OutOfWindow);
                    if let Some(f) = r.tx_frame.take() {
                        self.arena.free(f);
                    }
                }
            }
        }
        match job {
            Some(j) => Begin::Lent(j),
            None => Begin::Done,
        }
    }

    /// A job [`begin`](Self::begin) lent, back after [`CopyJob::run`]: its lease is settled
    /// and its frame goes back to `r` (transmit) or is freed (received).
    pub(crate) fn complete(&mut self, job: CopyJob, r: &mut ProtoResult) {
        let CopyJob {
            copy,
            frame,
            ok,
            sum,
            ..
        } = job;
        let rings = self.flows.get_mut(r.flow as usize).and_then(Option::as_mut);
        match copy {
            Copy::Rx { lease, .. } => {
                if let Some(rings) = rings {
                    let _ = rings.rx.settle(lease);
                }
                if !ok {
                    self.stats.drops.add(DropReason::OutOfWindow);
                }
                self.freed.push(frame);
            }
            Copy::Tx { lease } => {
                if let Some(rings) = rings {
                    let _ = rings.tx.settle(lease);
                }
                if ok {
                    r.payload.sum = sum;
                    r.tx_frame = Some(frame);
                } else {
                    self.stats.drops.add(DropReason::OutOfWindow);
                    self.arena.free(frame);
                }
            }
        }
    }

    /// Publication, after every copy of `r` and of the results before it: the RX ring up to
    /// the in-order end, the TX ring released up to what the peer acknowledged. A result held
    /// while its flow id went to a new connection is dropped here (see
    /// [`install`](Self::install)).
    #[inline]
    pub(crate) fn publish(&mut self, r: &mut ProtoResult) {
        // Nothing to publish or notify (a result `begin` already dropped as stale among
        // them: counted once).
        if r.actions.is_empty() || !self.admit(r) {
            return;
        }
        let a = r.actions;
        if !a.any(Actions::PUBLISH_RX | Actions::RELEASE_TX) {
            return;
        }
        let Some(rings) = self.flows.get_mut(r.flow as usize).and_then(Option::as_mut) else {
            return;
        };
        // Either fails only on a state/ring mismatch: counted, never forced.
        if a.any(Actions::PUBLISH_RX) && rings.rx.publish(r.rx_publish).is_err() {
            self.stats.drops.add(DropReason::OutOfWindow);
        }
        if a.any(Actions::RELEASE_TX)
            && rings.tx.release(r.tx_release.min(rings.tx.head())).is_err()
        {
            self.stats.drops.add(DropReason::OutOfWindow);
        }
    }

    /// Give the received frames placed so far back to the arena (one compare-and-swap).
    pub(crate) fn free_placed(&mut self) {
        self.give_back();
    }

    /// Count a burst of `n` results (a runtime that calls [`begin`](Self::begin) itself).
    pub(crate) fn count(&mut self, n: usize) {
        self.stats.bursts += 1;
        self.stats.items_in += n as u64;
        self.stats.items_out += n as u64;
    }
}

/// What [`Place::begin`] did with a result.
pub(crate) enum Begin {
    /// Its copies are made: it may be published once the results before it are.
    Done,
    /// One copy is lent out as this job.
    Lent(CopyJob),
    /// Nothing was done: a copy would touch a ring range still lent out. Try again once the
    /// jobs out have come back.
    Wait,
}

/// One payload copy, run by a thread other than the one that owns the flow's rings: the
/// range of the ring it touches is leased, the frame moves with the job.
pub(crate) struct CopyJob {
    /// The lender's number for the result this copy belongs to.
    pub(crate) slot: u64,
    copy: Copy,
    frame: Frame,
    ok: bool,
    /// Whether to sum transmit payload, and its sum ([`PayloadOp::sum`]).
    sums: bool,
    sum: [u8; 2],
}

// What crosses the rings between place replicas per lent copy.
const _: () = assert!(std::mem::size_of::<CopyJob>() == 56);

enum Copy {
    /// Received payload at `off` in the frame into the RX ring.
    Rx { lease: WriteLease, off: u16 },
    /// Transmit payload from the TX ring after the frame's headers.
    Tx { lease: ReadLease },
}

impl CopyJob {
    /// Make the copy.
    pub(crate) fn run(&mut self, arena: &FrameArena) {
        self.ok = match &mut self.copy {
            Copy::Rx { lease, off } => {
                let data = arena.data(&self.frame);
                let off = *off as usize;
                let end = off + lease.len();
                end <= data.len() && lease.write(&data[off..end]).is_ok()
            }
            Copy::Tx { lease } => {
                let hl = self.frame.len();
                let len = lease.len();
                let buf = arena.buf_mut(&mut self.frame);
                let ok = hl + len <= buf.len() && lease.read(&mut buf[hl..hl + len]).is_ok();
                if ok {
                    if self.sums && len >= SUM_MIN {
                        self.sum = Sum::default().add_bytes(&buf[hl..hl + len]).fold();
                    }
                    self.frame.set_len(hl + len);
                }
                ok
            }
        };
    }
}

/// Copy the payload of received segment `r` from `frame` into the RX ring.
#[inline]
fn place_rx(arena: &FrameArena, rx: &mut RingWriter, r: &ProtoResult, frame: &Frame) -> bool {
    let data = arena.data(frame);
    let off = r.payload.frame_off as usize;
    let end = off + r.payload.len as usize;
    end <= data.len() && rx.write_at(r.payload.ring_pos, &data[off..end]).is_ok()
}

/// Copy `op`'s transmit payload from the TX ring into `frame`, after its headers.
#[inline]
fn fetch_tx(
    arena: &FrameArena,
    tx: &RingReader,
    op: &mut PayloadOp,
    frame: &mut Frame,
    sums: bool,
) -> bool {
    let hl = frame.len();
    let len = op.len as usize;
    let buf = arena.buf_mut(frame);
    let ok = hl + len <= buf.len() && tx.read_at(op.ring_pos, &mut buf[hl..hl + len]).is_ok();
    if ok {
        if sums && len >= SUM_MIN {
            op.sum = Sum::default().add_bytes(&buf[hl..hl + len]).fold();
        }
        frame.set_len(hl + len);
    }
    ok
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

impl Drop for Place {
    fn drop(&mut self) {
        // Frames left for a runtime that did not take them.
        self.arena.free_all(&mut self.freed);
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
        let used = arena.in_use();
        let mut stale = [result(&arena, 1, 0xee)];
        place.process_in_place(Instant::ZERO, &mut stale);
        assert!(stale[0].actions.is_empty() && stale[0].stamp == 0);
        assert_eq!(
            (stale[0].acked, stale[0].rtt_us),
            (0, 0),
            "counted as progress"
        );
        assert_eq!(arena.in_use(), used, "its frame was not given back");
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

    /// Received frames go back to the arena, or, once told to leave them, stay in
    /// `freed` for the runtime; a place stage dropped gives back what it still holds.
    #[test]
    fn placed_frames_are_given_back_or_left_for_the_runtime() {
        let arena = Arc::new(FrameArena::new(8).unwrap());
        for leave in [false, true] {
            let mut place = Place::new(arena.clone());
            if leave {
                place.leave_freed();
            }
            let (rx, mut app_rx) = byte_ring(1024);
            let (_app_tx, tx) = byte_ring(1024);
            place.install(3, FlowRings { rx, tx }, 0);
            let mut f = arena.alloc().unwrap();
            arena.buf_mut(&mut f)[..4].fill(7);
            f.set_len(4);
            let mut r = ProtoResult {
                flow: 3,
                rx_frame: Some(f),
                rx_publish: 4,
                ..Default::default()
            };
            r.payload.len = 4;
            r.actions.set(Actions::PLACE_PAYLOAD | Actions::PUBLISH_RX);
            place.process_in_place(Instant::ZERO, std::slice::from_mut(&mut r));
            let mut got = [0u8; 4];
            assert_eq!((app_rx.pop(&mut got), got), (4, [7; 4]), "{leave}");
            assert_eq!(place.freed().len(), usize::from(leave));
            // Given back, it is free; left, it is in use until taken.
            assert_eq!(arena.in_use(), usize::from(leave), "{leave}");
            drop(place);
            assert_eq!(arena.in_use(), 0, "{leave}");
        }
    }

    /// A copy lent out holds its ring range: a second segment for the same bytes waits (it
    /// is not written over the range while the lent copy is being made, nor dropped), and
    /// once the job is back and published, it is placed; the application reads the bytes
    /// once, in order.
    #[test]
    fn a_segment_for_a_range_lent_out_waits_for_the_copy() {
        let arena = Arc::new(FrameArena::new(8).unwrap());
        let mut place = Place::new(arena.clone());
        let (rx, mut app_rx) = byte_ring(4096);
        let (_app_tx, tx) = byte_ring(4096);
        place.install(1, FlowRings { rx, tx }, 0);
        let segment = |arena: &FrameArena, pos: u64, len: usize, publish: u64| {
            let mut f = arena.alloc().unwrap();
            for (i, b) in arena.buf_mut(&mut f)[..len].iter_mut().enumerate() {
                *b = (pos as usize + i) as u8;
            }
            f.set_len(len);
            let mut r = ProtoResult {
                flow: 1,
                rx_frame: Some(f),
                rx_publish: publish,
                ..Default::default()
            };
            r.payload = PayloadOp {
                ring_pos: pos,
                frame_off: 0,
                len: len as u16,
                sum: [0, 0],
            };
            r.actions.set(Actions::PLACE_PAYLOAD | Actions::PUBLISH_RX);
            r
        };
        // Bytes 512..1024 arrive first (out of order) and their copy is lent.
        let mut ahead = segment(&arena, 512, 512, 0);
        let Begin::Lent(mut job) = place.begin(&mut ahead, 256, 7) else {
            panic!("a 512-byte copy is lent");
        };
        assert_eq!(job.slot, 7);
        // The same bytes again, before the job is back: nothing done, frame kept.
        let mut again = segment(&arena, 512, 512, 0);
        assert!(matches!(place.begin(&mut again, 256, 8), Begin::Wait));
        assert!(again.rx_frame.is_some());
        // So does a part of them too short to lend (it would be copied here).
        let mut part = segment(&arena, 600, 100, 0);
        assert!(matches!(place.begin(&mut part, 256, 9), Begin::Wait));
        // A small copy elsewhere is made at once.
        let mut first = segment(&arena, 0, 100, 100);
        assert!(matches!(place.begin(&mut first, 256, 9), Begin::Done));
        place.publish(&mut first);
        // The hole is filled, but the ring cannot publish into the lent range yet.
        let mut whole = segment(&arena, 100, 412, 1024);
        assert!(matches!(place.begin(&mut whole, 1024, 10), Begin::Done));
        place.publish(&mut whole);
        assert_eq!(app_rx.available(), 100);
        assert_eq!(
            place.stats().drops.get(DropReason::OutOfWindow),
            1,
            "a refused publication is counted"
        );
        job.run(&arena);
        place.complete(job, &mut ahead);
        // The duplicate goes on now (lent again, as a job of its own).
        let Begin::Lent(mut dup) = place.begin(&mut again, 256, 8) else {
            panic!("the duplicate is lent once the range is free");
        };
        dup.run(&arena);
        place.complete(dup, &mut again);
        assert!(matches!(place.begin(&mut part, 256, 9), Begin::Done));
        place.publish(&mut whole);
        place.free_placed();
        let mut got = vec![0u8; 2048];
        assert_eq!(app_rx.pop(&mut got), 1024);
        for (i, b) in got[..1024].iter().enumerate() {
            assert_eq!(*b, i as u8, "byte {i}");
        }
        assert_eq!(place.stats().drops.total(), 1);
    }

    /// A result held behind a copy while its flow id went to a new connection is dropped at
    /// publication: it neither publishes into nor releases the new connection's rings.
    #[test]
    fn a_held_result_of_a_replaced_connection_is_not_published() {
        let arena = Arc::new(FrameArena::new(8).unwrap());
        let mut place = Place::new(arena.clone());
        let (rx, _app_rx) = byte_ring(4096);
        let (_app_tx, tx) = byte_ring(4096);
        place.install(1, FlowRings { rx, tx }, 1);
        let mut f = arena.alloc().unwrap();
        f.set_len(100);
        let mut old = ProtoResult {
            flow: 1,
            stamp: 1 << 24,
            rx_frame: Some(f),
            rx_publish: 100,
            ..Default::default()
        };
        old.payload.len = 100;
        old.actions
            .set(Actions::PLACE_PAYLOAD | Actions::PUBLISH_RX | Actions::NOTIFY_APP);
        assert!(matches!(place.begin(&mut old, 1024, 0), Begin::Done));
        place.free_placed();
        // The connection goes; a new one gets the id before the result is published.
        place.remove(1);
        let (rx, new_app_rx) = byte_ring(4096);
        let (_new_app_tx, tx) = byte_ring(4096);
        place.install(1, FlowRings { rx, tx }, 2);
        place.publish(&mut old);
        assert_eq!(
            new_app_rx.available(),
            0,
            "published into the new connection"
        );
        assert!(old.actions.is_empty(), "still notifies");
        assert_eq!(place.stats().drops.get(DropReason::StaleFlow), 1);
        // A result `begin` already dropped as stale is not counted again at publication.
        place.publish(&mut old);
        assert_eq!(place.stats().drops.get(DropReason::StaleFlow), 1);
    }
}
