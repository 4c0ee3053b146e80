//! A burst's ACK headers, written only where one can be sent.
//!
//! Under a coalescing ACK policy ([`AckPolicy::PerBurst`], [`AckPolicy::Delayed`]),
//! postprocess sends a flow's coalescable ACK only when it is the flow's last segment to send
//! in the burst; the headers of the others are never read. An in-order data segment followed
//! in the burst by another data (or FIN) segment of the same flow leaves its ACK header owed,
//! and the next segment settles it:
//!
//! - if that segment sends anything (an ACK of its own, coalescable or not), the earlier
//!   result no longer sends: postprocess would have left it out, since a later segment of the
//!   flow carries the ACK;
//! - if it sends nothing (a segment without ACK flag; one of an earlier incarnation of the
//!   flow id, or for a frozen or reset flow; an RST with data or FIN that is taken, or that
//!   finds no challenge ACK left), the owed header is written from the state as it is (under
//!   delayed ACKs, where the run's ACK goes: the owed result then ends the run and takes the
//!   decision). The state is the owed result's, or one an RST reset.
//!
//! A result that leaves the stage with [`Actions::TX`] always has its header written, and
//! an owed header's window is still computed (it moves the edge the next window starts
//! from): under [`AckPolicy::PerBurst`], postprocess sends the same segments, bit for bit
//! but for the timestamp echo, as from a stage that writes every header, when it gets the
//! stage's bursts whole. (The stage takes a header it writes for an ACK sent, RFC 7323's
//! Last.ACK.sent: a segment after it gives no new echo. Where it writes only the headers
//! that go, the ACK of a run echoes the run's first segment's timestamp, as the RFC asks;
//! where it writes one postprocess leaves out, the later segments' echo moves on.) Where
//! it does not (the threaded runtime splits a burst between postprocess replicas or
//! bursts), a flow sends fewer ACKs: the one for its last segment of the protocol stage's
//! burst. A [`Results`](crate::pipeline::Results)
//! stage that drops the result carrying a flow's ACK drops the ACK of the flow's whole run of
//! segments.
//!
//! Under delayed ACKs ([`with_delayed_acks`](Protocol::with_delayed_acks)) the last data
//! segment of a flow's run leaves its header to this loop, which takes the delayed-ACK
//! decision ([`delack`](super::delack)): where the ACK waits, neither it nor the run's
//! earlier ACKs go, and no header is written for it.

use super::*;

impl<C: CongestionControl> Protocol<C> {
    /// Write a coalescable ACK's header only where it can be sent: for the last such result
    /// of a flow in a burst, and only when no later result of the flow sends a segment
    /// (which then carries the ACK). Only for a postprocess that coalesces ACKs
    /// ([`AckPolicy::PerBurst`], [`AckPolicy::Delayed`]); under
    /// [`AckPolicy::EverySegment`] every ACK is sent and needs its header. Affects
    /// [`Stage::process`] only; [`handle`](Self::handle) writes every header. The engines
    /// turn it on for those policies. A results stage that drops a flow's last result that
    /// sends drops the burst's ACK of that flow with it.
    pub fn with_ack_coalescing(mut self, on: bool) -> Self {
        self.coalesce = on;
        self
    }

    /// Whether ACK headers are written only where they can be sent.
    pub fn ack_coalescing(&self) -> bool {
        self.coalesce
    }

    /// [`Stage::process`]'s loop, with owed ACK headers when coalescing (see the module's
    /// documentation). A data segment's header is left owed only when the next item is a
    /// data segment of the same flow (the burst's segments of a flow come in runs), so at
    /// most one header is owed at a time, and the next item settles it.
    pub(super) fn process_burst(
        &mut self,
        now: Instant,
        input: &mut Vec<ProtoWork>,
        output: &mut Vec<ProtoResult>,
    ) {
        const NONE: usize = usize::MAX;
        // The output index of the result whose header is owed.
        let mut owed = NONE;
        // Delayed ACKs coalesce ACK headers: a run's ACK that waits takes only the owed one
        // with it.
        let (coalesce, delayed) = (self.coalesce || self.delayed, self.delayed);
        let mut items = input.drain(..);
        // Each item is read where it lies and only then taken (a segment's frame, another
        // item whole): moving a whole item out first costs a stalled reload of it.
        while let [w, rest @ ..] = items.as_slice() {
            let flow = w.flow();
            let rx = matches!(w, ProtoWork::Rx(_));
            // The next item is a data (or FIN) segment of the same flow: this one's ACK
            // would ride on the next one's.
            let next_data = rx
                && matches!(rest.first(), Some(ProtoWork::Rx(x))
                    if x.flow == flow
                        && (x.summary.payload_len > 0 || x.summary.flags & flags::FIN != 0));
            let marks = if next_data {
                if coalesce {
                    HEADER_OWED
                } else {
                    0
                }
            } else if delayed && rx {
                ACK_DECIDES
            } else {
                0
            };
            let i = output.len();
            output.push(ProtoResult {
                flow,
                actions: Actions(marks),
                ..Default::default()
            });
            let r = output.last_mut().expect("just pushed");
            if let ProtoWork::Rx(rx) = w {
                self.handle_rx(now, rx, r);
                if let Some(ProtoWork::Rx(rx)) = items.next() {
                    r.rx_frame = Some(rx.frame);
                }
            } else if let Some(w) = items.next() {
                self.handle_into(now, w, r);
            }
            let a = r.actions;
            r.actions.clear(HEADER_OWED | ACK_DECIDES);
            if owed != NONE {
                // This item is a data segment of the owed result's flow.
                if a.any(Actions::TX) {
                    // It sends a segment, which carries the ACK.
                    output[owed].actions.clear(Actions::TX);
                } else if delayed
                    && a.0 & (ACK_DECIDES | Actions::PUBLISH_RX)
                        == ACK_DECIDES | Actions::PUBLISH_RX
                {
                    // It ends the run and its ACK waits: so does the owed one.
                    output[owed].actions.clear(Actions::TX);
                } else {
                    // A data segment that sends nothing and is not held (see the
                    // module's documentation): the owed result's ACK is written now.
                    self.write_owed(now, &mut output[owed]);
                }
                owed = NONE;
            }
            if a.0 & (Actions::TX | Actions::ACK_NOW | HEADER_OWED) == Actions::TX | HEADER_OWED {
                owed = i;
            }
        }
        debug_assert_eq!(owed, NONE, "the last item owes nothing");
    }

    /// Write the owed ACK header of `r` from its flow's state as it is now. Under delayed
    /// ACKs `r` ends its flow's run (the segment after it sent nothing and took nothing in)
    /// and takes the run's decision: where the ACK waits, `r` sends nothing. (Rare: see the
    /// module's documentation for the segments that get here.)
    #[cold]
    #[inline(never)]
    fn write_owed(&mut self, now: Instant, r: &mut ProtoResult) {
        match self.flows.get_mut(r.flow as usize) {
            Some(Some((st, _))) if self.delayed => {
                st.delayed_ack_decided(now, r);
            }
            Some(Some((st, _))) => st.ack_header(now, &mut r.hdr),
            _ => debug_assert!(false, "a result owes a header only for a flow installed"),
        }
    }
}

#[cfg(test)]
pub(super) mod tests;
