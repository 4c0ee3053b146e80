//! Loss recovery of a connection's sending side, over the SACK scoreboard
//! ([`super::super::recovery`]): when a loss is detected (duplicate ACKs, SACK evidence, an
//! answered tail-loss probe, a lost retransmission), what a fast recovery resends next
//! (RFC 6675 with SACK, RFC 6582 partial ACKs without), the RFC 6675 pipe, probe timeouts
//! (RFC 8985 tail-loss probes; in a recovery, resending lost retransmissions) and the
//! go-back-N of a retransmission timeout.

use super::*;

impl TcpState {
    /// An ACK carried ECE (RFC 3168 6.1.2): the congestion control reduces the window as for
    /// a loss, once per window of data, without retransmitting; the next new segment
    /// carries CWR.
    pub(super) fn on_ece<C: CongestionControl>(&mut self, cc: &C, cf: &mut C::Flow) {
        if !self.has(F_ECN)
            || self.has(F_RECOVERY)
            || self.has(F_ECN_CWR)
            || self.snd_max == self.snd_una
        {
            return;
        }
        cc.on_loss(
            cf,
            Loss {
                kind: LossKind::Ecn,
                flight: self.in_flight(),
                mss: self.mss as u32,
                repeated: false,
            },
        );
        self.cwnd = cc.cwnd(cf);
        self.recover = self.snd_max;
        self.flags |= F_ECN_CWR | F_CWR_SEND;
    }

    /// Sequence space the sender believes is still in the network (RFC 6675 "pipe"): in
    /// flight, less what the peer SACKed, less the holes below the highest SACKed byte not
    /// yet retransmitted. Without SACK each duplicate ACK stands for one segment that left.
    pub fn pipe(&self) -> u32 {
        let flight = self.in_flight();
        if self.has(F_SACK) {
            let from = if seq::gt(self.rxt_next, self.snd_una) {
                self.rxt_next
            } else {
                self.snd_una
            };
            let lost = match self.lost_below() {
                Some(high) => self.scoreboard.hole_bytes_below(from, high),
                None => 0,
            };
            flight
                .saturating_sub(self.scoreboard.sacked_bytes())
                .saturating_sub(lost)
        } else {
            flight.saturating_sub(self.dupacks as u32 * self.mss as u32)
        }
    }

    /// Where the bytes the peer is known to miss end: the highest SACKed byte, or, once a
    /// retransmission of this recovery was acknowledged, everything sent before it (the
    /// recovery point) if that is further.
    fn lost_below(&self) -> Option<u32> {
        let high = self.scoreboard.high();
        if self.has(F_RACK) {
            return Some(match high {
                Some(h) if seq::gt(h, self.recover) => h,
                _ => self.recover,
            });
        }
        high
    }

    /// The next range a fast recovery retransmits, at most one segment: the oldest
    /// unacknowledged byte first, then (with SACK) the holes below the highest SACKed byte,
    /// or below the recovery point once a retransmission came back.
    pub(super) fn next_retransmit(&self) -> Option<(u32, u32)> {
        if !self.has(F_FASTREC) {
            return None;
        }
        let limit = {
            let end = self.data_end_seq();
            if seq::lt(end, self.snd_max) {
                end
            } else {
                self.snd_max
            }
        };
        let (start, end) = if !seq::gt(self.rxt_next, self.snd_una) {
            let s = self.snd_una;
            let e = self.scoreboard.next_start(s).unwrap_or(limit);
            (s, e)
        } else if self.has(F_SACK) {
            self.scoreboard
                .next_hole_below(self.rxt_next, self.lost_below()?)?
        } else {
            return None;
        };
        let end = if seq::lt(limit, end) { limit } else { end };
        if !seq::lt(start, end) {
            return None;
        }
        let n = end.wrapping_sub(start).min(self.mss as u32);
        Some((start, start.wrapping_add(n)))
    }

    /// Whether a fast recovery may retransmit now: the segment at `snd_una` goes at once
    /// (when a recovery starts, on a partial ACK, and when a retransmission was lost); the
    /// other holes while the pipe is below the congestion window.
    #[inline(always)]
    pub(super) fn retransmit_due(&self) -> bool {
        // Outside a fast recovery (nearly always) without a call.
        self.has(F_FASTREC)
            && self.next_retransmit().is_some()
            && (!seq::gt(self.rxt_next, self.snd_una) || self.pipe() < self.window())
    }

    /// Retransmission timeout: go back to `snd_una` (what the peer SACKed is skipped).
    pub(super) fn go_back_n<C: CongestionControl>(&mut self, cc: &C, cf: &mut C::Flow) {
        let flight = self.snd_max.wrapping_sub(self.snd_una);
        let repeated = self.has(F_RTO_AGAIN);
        cc.on_loss(
            cf,
            Loss {
                kind: LossKind::Timeout,
                flight,
                mss: self.mss as u32,
                repeated,
            },
        );
        if repeated {
            // A second timeout with no progress: the peer may have reneged on its SACKs.
            self.scoreboard.clear();
        }
        self.cwnd = cc.cwnd(cf);
        self.snd_nxt = self.snd_una;
        self.recover = self.snd_max;
        self.dupacks = 0;
        self.rtt_start = 0;
        // A timeout ends an ECN reduction too: the window starts over from one segment.
        self.flags &= !(F_FASTREC | F_TLP | F_ECN_CWR | F_DUP_GOBACK);
        self.flags |= F_RECOVERY | F_RTO_AGAIN;
    }

    /// Enter fast recovery (RFC 6675 / RFC 6582): the congestion control reduces the window,
    /// and the oldest unacknowledged segment goes first.
    pub(super) fn enter_fast_recovery<C: CongestionControl>(
        &mut self,
        cc: &C,
        cf: &mut C::Flow,
        now: Instant,
    ) {
        // An ECE already cut the window in this window of data: cut once (RFC 3168 6.1.2).
        if !self.has(F_ECN_CWR) {
            cc.on_loss(
                cf,
                Loss {
                    kind: LossKind::DupAcks,
                    flight: self.in_flight(),
                    mss: self.mss as u32,
                    repeated: false,
                },
            );
            self.cwnd = cc.cwnd(cf);
        }
        self.recover = self.snd_max;
        self.rxt_next = self.snd_una;
        self.rxt_max = self.snd_max;
        self.recover_ts = (now.millis() as u32).wrapping_add(self.ts_offset);
        self.flags &= !F_RACK;
        self.rtt_start = 0;
        self.flags &= !F_TLP;
        self.flags |= F_RECOVERY | F_FASTREC;
    }

    /// Retransmission timeout: go back to `snd_una`; the congestion control sets the window
    /// (one segment for [`NewReno`]).
    pub fn on_timeout<C: CongestionControl>(
        &mut self,
        cc: &C,
        cf: &mut C::Flow,
        now: Instant,
        r: &mut ProtoResult,
    ) {
        if self.snd_max == self.snd_una || self.has(F_RST) {
            return;
        }
        self.go_back_n(cc, cf);
        self.recover_ts = (now.millis() as u32).wrapping_add(self.ts_offset);
        r.actions.set(Actions::TIMEOUT_RETRANSMIT | Actions::SCHED);
        self.finish(r);
    }

    /// ICMP "fragmentation needed" (RFC 1191) for the segment at `seq`: the path takes
    /// segments of at most `mss` bytes. Checked against what is in flight (RFC 5927 section
    /// 4.1: a forged message must guess a sequence number there); the MSS only goes down.
    /// The segments in flight went out too large for the path, which dropped them: they are
    /// lost, as at a retransmission timeout, and go again from `snd_una` at the new size
    /// (what the peer SACKed skipped), in a recovery or not, with the congestion control's
    /// response to a timeout (Linux spares the window here, `tcp_simple_retransmit`; the
    /// engine takes the loss path it has). It is no timeout: the SACK scoreboard is kept,
    /// and a real timeout after it counts as a first one or a repeated one as before.
    pub fn on_path_mtu<C: CongestionControl>(
        &mut self,
        cc: &C,
        cf: &mut C::Flow,
        now: Instant,
        (mss, seq): (u16, u32),
        r: &mut ProtoResult,
    ) -> Option<DropReason> {
        if self.has(F_RST) {
            return None;
        }
        if !(seq::ge(seq, self.snd_una) && seq::lt(seq, self.snd_max)) {
            return Some(DropReason::IcmpStale);
        }
        if mss >= self.mss {
            return None;
        }
        self.mss = mss;
        // Not a timeout: the go-back sees no repeated one (which would clear the SACK
        // scoreboard), and a timeout after it sees the state as it was before.
        let again = self.flags & F_RTO_AGAIN;
        self.flags &= !F_RTO_AGAIN;
        self.go_back_n(cc, cf);
        self.flags = (self.flags & !F_RTO_AGAIN) | again;
        self.recover_ts = (now.millis() as u32).wrapping_add(self.ts_offset);
        r.actions.set(Actions::SCHED);
        self.finish(r);
        None
    }

    /// Probe timeout: the ACKs stopped with data in flight.
    ///
    /// Outside a recovery this is a tail-loss probe (RFC 8985 section 7): one new segment if
    /// the peer's window allows, otherwise the last segment again; the ACK it draws (with
    /// SACK) starts a fast recovery instead of waiting for the retransmission timeout.
    /// In a fast recovery, the retransmissions themselves were lost (RACK's reordering
    /// timer, RFC 8985 section 6.2, by sequence rather than per-segment times): the holes
    /// are sent again from `snd_una`. Going back after a timeout, the same: from `snd_una`
    /// again, the window unchanged.
    pub fn on_tail_probe(&mut self, now: Instant, r: &mut ProtoResult) {
        if self.snd_max == self.snd_una || self.has(F_RST) {
            return;
        }
        if self.has(F_FASTREC) {
            self.rxt_next = self.snd_una;
            self.rxt_max = self.snd_max;
            r.actions.set(Actions::TAIL_PROBE | Actions::SCHED);
            return;
        }
        if self.has(F_RECOVERY) {
            self.snd_nxt = self.snd_una;
            self.rtt_start = 0;
            r.actions.set(Actions::TAIL_PROBE | Actions::SCHED);
            return;
        }
        self.flags |= F_TLP;
        let edge = self.snd_edge();
        let room = if seq::gt(edge, self.snd_nxt) {
            edge.wrapping_sub(self.snd_nxt)
        } else {
            0
        };
        let n = self.unsent().min(room).min(self.mss as u32);
        if n > 0 && self.snd_nxt == self.snd_max {
            let start = self.snd_nxt;
            self.snd_nxt = start.wrapping_add(n);
            self.snd_max = self.snd_nxt;
            self.retransmit(now, start, self.snd_nxt, false, r);
        } else {
            let fin = self.has(F_FIN_SENT) && !self.has(F_FIN_ACKED);
            let end = self.snd_max.wrapping_sub(u32::from(fin));
            let back = end.wrapping_sub(self.snd_una).min(self.mss as u32);
            if seq::ge(self.rtt_seq, end.wrapping_sub(back)) {
                // Karn: the timed segment goes again; its ACK would time the probe timeout.
                self.rtt_start = 0;
            }
            self.retransmit(now, end.wrapping_sub(back), end, fin, r);
        }
        r.actions.set(Actions::TAIL_PROBE);
        self.finish(r);
    }

    /// Take the SACK blocks of an ACK (acknowledging `ack`) into the scoreboard. Returns
    /// whether any was valid.
    pub(super) fn take_sack(&mut self, ack: u32, sack: &SackBlocks) -> bool {
        let mut any = false;
        // Blocks are checked against the ACK's own cumulative point too: a block at or
        // below it is a D-SACK (RFC 2883), which reports a duplicate and marks nothing.
        let una = if seq::gt(ack, self.snd_una) {
            ack
        } else {
            self.snd_una
        };
        for &(l, r) in sack.as_slice() {
            any |= self.scoreboard.add(l, r, una, self.snd_max);
        }
        any
    }

    /// Loss detection on an ACK: lost retransmissions in a fast recovery (data sent after
    /// the last one was SACKed) or after a timeout (three more duplicate ACKs); a new fast
    /// recovery on three duplicate ACKs, more than two segments SACKed, or a SACK that
    /// answers a tail-loss probe.
    pub(super) fn detect_loss<C: CongestionControl>(
        &mut self,
        cc: &C,
        cf: &mut C::Flow,
        sack_news: bool,
        now: Instant,
        r: &mut ProtoResult,
    ) {
        if self.has(F_FASTREC)
            && seq::gt(self.rxt_next, self.snd_una)
            && self
                .scoreboard
                .high()
                .is_some_and(|h| seq::gt(h, self.rxt_max))
            && self
                .scoreboard
                .next_hole(self.snd_una)
                .is_some_and(|(s, _)| seq::lt(s, self.rxt_next))
        {
            // Data sent after the last retransmission arrived, a retransmitted hole did not:
            // that retransmission was lost too. Go over the holes again.
            self.rxt_next = self.snd_una;
        }
        if self.has(F_RECOVERY)
            && !self.has(F_FASTREC)
            && self.dupacks >= 3
            && seq::gt(self.snd_nxt, self.snd_una)
            && (!self.has(F_DUP_GOBACK) || seq::gt(self.snd_nxt, self.rxt_max))
        {
            // Going back after a timeout, and the peer still misses `snd_una` while later
            // data arrives: the retransmission was lost. Go back again (the window stays),
            // once for what was sent before: the segments this go-back sends again draw
            // duplicate ACKs of their own (and a peer could send three at will), which
            // would send the window again and again. (A retransmission of `snd_una` lost
            // once more before `snd_nxt` passes the mark waits for the timeout.)
            self.rxt_max = self.snd_nxt;
            self.snd_nxt = self.snd_una;
            self.dupacks = 0;
            // Karn: the timed segment may go again.
            self.rtt_start = 0;
            self.flags |= F_DUP_GOBACK;
        }
        if !self.has(F_RECOVERY) && self.snd_max != self.snd_una {
            let sack_evidence =
                self.has(F_SACK) && self.scoreboard.sacked_bytes() > 2 * self.mss as u32;
            let probe_answered = self.has(F_TLP) && sack_news;
            if self.dupacks >= 3 || sack_evidence || probe_answered {
                self.enter_fast_recovery(cc, cf, now);
                r.actions.set(Actions::FAST_RETRANSMIT);
            }
        }
    }
}
