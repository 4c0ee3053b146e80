//! Delayed ACKs ([`AckPolicy::Delayed`]): which coalescable ACK of in-order data goes now
//! and which waits.
//!
//! The protocol stage counts, per flow, the in-order payload received since a segment of
//! its own last acknowledged it, and takes the decision at the last data segment of each of
//! the flow's runs in a burst (the one whose ACK would carry the run's): the ACK goes once
//! more than one full-sized segment is unacknowledged (the second full-sized segment, or
//! enough small ones, counted in bytes as Linux and smoltcp count), and its header is written
//! only then. Otherwise the result sends nothing, the run's earlier ACKs go neither, and
//! postprocess arms the flow's delayed-ACK timer, whose ACK the control plane asks for when
//! the delay runs out. Any segment of the flow that goes out anyway (a response, a
//! retransmission, an ACK sent at once) acknowledges everything and clears the count.
//!
//! No window is computed for the ACK that decides to wait (the run's earlier, owed ones
//! still compute theirs, as under every coalescing policy; so has an owed one that takes the
//! decision because the segment after it sent nothing).

use super::*;

/// The least segment size every peer takes (RFC 9293 3.7.1, without an MSS option): a
/// smaller run of segments does not lower the full-sized segment of the delayed ACK.
pub(super) const DEFAULT_MSS: u32 = 536;

impl TcpState {
    /// The header of a coalescable ACK (one not sent at once) for received segment's result
    /// `r`. Left owed when the burst asked for that (a later segment of the flow settles
    /// it): its window is still computed, so that the edge the next one starts from is the
    /// same as if the header had been written. Under delayed ACKs the segment that ends its
    /// flow's run in the burst ([`ACK_DECIDES`]) writes the header only where the ACK goes
    /// now; where it waits, the result sends nothing and keeps the mark, which tells the
    /// burst loop.
    #[inline]
    pub(super) fn coalescable_ack(&mut self, now: Instant, r: &mut ProtoResult) {
        if r.actions.any(HEADER_OWED) {
            self.advertise();
        } else if !r.actions.any(ACK_DECIDES) {
            self.ack_header(now, &mut r.hdr);
        } else if self.delayed_ack_decided(now, r) {
            r.actions.clear(ACK_DECIDES);
        }
    }

    /// The delayed-ACK decision for `r`, the result ending its flow's run: where the ACK
    /// goes (`true`), its header is written; where it waits, `r` sends nothing.
    #[inline]
    pub(super) fn delayed_ack_decided(&mut self, now: Instant, r: &mut ProtoResult) -> bool {
        if self.delayed_ack_goes(r.in_order_bytes()) {
            self.ack_header(now, &mut r.hdr);
            self.delack_seq = self.rcv_nxt;
            true
        } else {
            r.actions.clear(Actions::TX);
            false
        }
    }

    /// Follow the peer's segment size with an in-order segment of `len` bytes (see
    /// `delack_full`): smaller segments lower it only from [`DEFAULT_MSS`] bytes on (the
    /// ends of an application's writes are smaller, and tiny ones would ACK every few
    /// bytes).
    #[inline]
    pub(super) fn note_segment_size(&mut self, len: u32) {
        if len >= self.delack_full || (len >= DEFAULT_MSS && len == self.delack_last) {
            self.delack_full = len;
        }
        // Only sizes that could lower it count as the last (a short segment between two of
        // one size does not break their run).
        if len >= DEFAULT_MSS {
            self.delack_last = len;
        }
    }

    /// Whether an ACK for in-order data whose last segment brought `bytes` goes now: more
    /// than one full-sized segment is unacknowledged (or the segment brought none).
    #[inline]
    fn delayed_ack_goes(&self, bytes: u32) -> bool {
        bytes == 0 || self.rcv_nxt.wrapping_sub(self.delack_seq) > self.delack_full
    }

    /// [`ack_header`](Self::ack_header) for an ACK sent at once: it acknowledges everything
    /// received. (A segment with data, a SYN or a FIN does too:
    /// [`header_into`](Self::header_into) notes it.)
    #[inline]
    pub(super) fn ack_now_header(&mut self, now: Instant, h: &mut TxHeader) {
        self.ack_header(now, h);
        self.delack_seq = self.rcv_nxt;
    }
}

impl<C: CongestionControl> Protocol<C> {
    /// Take delayed ACKs ([`AckPolicy::Delayed`]): the stage decides which coalescable ACK
    /// of in-order data goes now (see the module's documentation) and leaves the others
    /// unsent, without writing their headers; postprocess arms the delayed-ACK timers of
    /// the flows whose ACK waits. The engines turn it on for that policy. Affects
    /// [`Stage::process`] only, which then also coalesces ACK headers
    /// ([`with_ack_coalescing`](Self::with_ack_coalescing)).
    pub fn with_delayed_acks(mut self, on: bool) -> Self {
        self.delayed = on;
        self
    }

    /// Whether the stage takes delayed ACKs.
    pub fn delayed_acks(&self) -> bool {
        self.delayed
    }
}

#[cfg(test)]
mod tests;
