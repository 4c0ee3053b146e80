//! The receiving side of a connection's state: acceptability, the ACK field (which feeds
//! the sender's congestion control, duplicate-ACK counting and SACK scoreboard), payload in
//! order and out of order, the SACK blocks we report, FIN and RST.

use super::*;

impl TcpState {
    /// SACK blocks for an ACK (RFC 2018): the interval holding the segment received last
    /// first, then the others in turn.
    pub(super) fn sack_blocks(&mut self) -> SackBlocks {
        let mut out = SackBlocks::EMPTY;
        if !self.has(F_SACK) {
            return out;
        }
        let last = self.ooo_last;
        let first = self
            .ooo
            .iter()
            .position(|&(s, l)| l != 0 && seq::ge(last, s) && seq::lt(last, s.wrapping_add(l)));
        if let Some(i) = first {
            let (s, l) = self.ooo[i];
            out.push(s, s.wrapping_add(l));
        }
        let turn = self.sack_turn as usize;
        for k in 0..OOO_INTERVALS {
            let j = (turn + k) % OOO_INTERVALS;
            let (s, l) = self.ooo[j];
            if l != 0 && Some(j) != first {
                out.push(s, s.wrapping_add(l));
            }
        }
        self.sack_turn = self.sack_turn.wrapping_add(1) % OOO_INTERVALS as u8;
        out
    }

    /// A pure ACK. Its sequence number is `snd_max`, not `snd_nxt`: after go-back-N the peer
    /// may already hold everything up to `snd_max`, and an ACK numbered below its `rcv_nxt`
    /// would be unacceptable to it (and its ACK field ignored).
    pub(super) fn ack_header(&mut self, now: Instant, h: &mut TxHeader) {
        let s = self.snd_max;
        self.header_into(now, flags::ACK, s, 0, h);
        if self.ooo_used && self.ooo.iter().any(|iv| iv.1 != 0) {
            h.sack = self.sack_blocks();
        }
    }

    /// Process an acceptable ACK field: advance `snd_una`, feed the congestion control,
    /// keep the SACK scoreboard, count duplicate ACKs and detect losses. `ts_ecr`: the
    /// timestamp echo the segment carries, if any.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_ack<C: CongestionControl>(
        &mut self,
        cc: &C,
        cf: &mut C::Flow,
        s: &SegmentSummary,
        sack: &SackBlocks,
        ts_ecr: Option<u32>,
        now: Instant,
        r: &mut ProtoResult,
    ) {
        let ack = s.ack;
        // Whether the segment's SACK blocks marked anything new (most ACKs carry none).
        let sack_news = self.has(F_SACK) && !sack.is_empty() && {
            let sacked_before = self.scoreboard.sacked_bytes();
            self.take_sack(s.ack, sack);
            self.scoreboard.sacked_bytes() != sacked_before
        };
        if seq::gt(ack, self.snd_una) {
            let flight = self.in_flight();
            let acked = ack.wrapping_sub(self.snd_una);
            let data_end = self.data_end_seq();
            let fin_acked =
                self.has(F_FIN_SENT) && !self.has(F_FIN_ACKED) && seq::gt(ack, data_end);
            let data_acked = acked - u32::from(fin_acked);
            self.snd_una = ack;
            self.tx_una_pos += data_acked as u64;
            self.scoreboard.advance(ack);
            if seq::lt(self.snd_nxt, ack) {
                // A "future" ACK after go-back-N: the peer had the data already.
                self.snd_nxt = ack;
            }
            if fin_acked {
                self.flags |= F_FIN_ACKED;
                r.actions.set(Actions::FIN_ACKED | Actions::NOTIFY_APP);
            }
            self.dupacks = 0;
            self.flags &= !(F_TLP | F_RTO_AGAIN);
            let mut rtt_us = None;
            if self.rtt_start != 0 && seq::gt(ack, self.rtt_seq) {
                // At most a minute, as the timestamps' samples: a peer that held the
                // window shut with the timed segment unacknowledged (no timeout runs then)
                // made a sample of the whole wait, which wrapped past 71 minutes.
                let us = (now.micros() + 1).saturating_sub(self.rtt_start);
                rtt_us = u32::try_from(us).ok().filter(|&us| us < 60_000_000);
                self.rtt_start = 0;
            } else if let Some(ecr) = ts_ecr.filter(|e| {
                *e != 0 && self.has(F_RECOVERY) && self.has(F_TS) && !seq::lt(*e, self.recover_ts)
            }) {
                // While recovering, Karn's rule leaves no segment to time: the echoed
                // timestamp still measures the round trip (RFC 7323 section 4). An ACK that
                // moves `snd_una` in a recovery covers a retransmission, sent since the
                // recovery began: an echo from before it is no such segment's (a peer's
                // choice, which made samples of up to a minute).
                // An echo of this millisecond says only that the round trip is under a
                // millisecond: no sample (taken as 0 us, it made each ACK of a recovery
                // a sample of nothing, and a rate control's least RTT 0).
                let ours = (now.millis() as u32).wrapping_add(self.ts_offset);
                let ms = ours.wrapping_sub(ecr);
                if (1..60_000).contains(&ms) {
                    rtt_us = Some(ms * 1000);
                }
            }
            if let Some(us) = rtt_us {
                r.rtt_us = us;
                r.actions.set(Actions::RTT_SAMPLE);
            }
            let reducing = self.has(F_RECOVERY) || self.has(F_ECN_CWR);
            let before_recover = seq::lt(ack, self.recover);
            // A fast recovery or an ECN reduction holds the window until `recover` is
            // acknowledged. After a timeout the window starts over at one segment; with
            // SACK it grows by slow start (RFC 5681 3.1) while going back, which skips what
            // the peer SACKed (held, it went back over a window of losses at one segment a
            // round trip, then jumped to `ssthresh` in one burst). Without SACK it stays
            // held: the sender cannot tell which segments the peer holds, and a growing
            // window would send them again, whose duplicate ACKs look like a new loss.
            let holding = self.has(F_FASTREC)
                || self.has(F_ECN_CWR)
                || (self.has(F_RECOVERY) && !self.has(F_SACK));
            let in_recovery = holding && before_recover;
            cc.on_ack(
                cf,
                &AckSample {
                    acked: data_acked,
                    flight,
                    mss: self.mss as u32,
                    in_recovery,
                    ece: s.has(flags::ECE),
                    rtt_us,
                    now,
                },
            );
            if reducing && !before_recover {
                self.flags &= !(F_RECOVERY | F_FASTREC | F_ECN_CWR | F_RACK | F_DUP_GOBACK);
                if holding {
                    cc.on_recovery_end(cf);
                }
            } else if self.has(F_FASTREC)
                && !(self.has(F_TS) && ts_ecr.is_some_and(|e| seq::lt(e, self.recover_ts)))
            {
                // A retransmission of this recovery is acknowledged (with timestamps: the
                // echo is from a segment sent in the recovery, not a late original): what
                // was sent before it and is still missing is lost (RACK, by sequence).
                self.flags |= F_RACK;
            }
            self.cwnd = cc.cwnd(cf);
            r.acked = data_acked;
            if data_acked > 0 {
                r.tx_release = self.tx_una_pos;
                r.actions
                    .set(Actions::RELEASE_TX | Actions::NOTIFY_APP | Actions::ACKED);
            } else {
                r.actions.set(Actions::ACKED);
            }
            if s.has(flags::ECE) {
                r.actions.set(Actions::ECN_ECHOED);
            }
        } else if ack == self.snd_una
            && self.snd_max != self.snd_una
            && if self.has(F_SACK) {
                // RFC 6675 section 2: with SACK, a duplicate ACK is one that SACKs bytes
                // not SACKed before, data or a window change in it or not; one that repeats
                // the blocks (or reports a D-SACK, or has none) says nothing was lost. (An
                // ACK that moves SND.UNA is not counted, unlike section 5's DupAcks; the
                // SACKed bytes count towards a recovery through the scoreboard.)
                sack_news
            } else {
                s.payload_len == 0
                    && s.flags & flags::FIN == 0
                    && ((s.win as u32) << self.snd_shift) == self.snd_wnd
            }
        {
            self.dupacks = self.dupacks.saturating_add(1);
            r.actions.set(Actions::DUP_ACK);
        }
        self.detect_loss(cc, cf, sack_news, now, r);
        if s.has(flags::ECE) {
            self.on_ece(cc, cf);
        }
        if self.can_send() {
            r.actions.set(Actions::SCHED);
        }
    }

    /// Handle a received segment of this connection, with the SACK blocks it carries
    /// ([`SegmentSummary::sack_blocks`]; empty when it carries none) and its timestamp
    /// value and echo ([`SegmentSummary::timestamps`]).
    #[allow(clippy::too_many_arguments)]
    pub fn on_segment<C: CongestionControl>(
        &mut self,
        cc: &C,
        cf: &mut C::Flow,
        s: &SegmentSummary,
        sack: &SackBlocks,
        ts: Option<(u32, u32)>,
        now: Instant,
        r: &mut ProtoResult,
    ) -> Option<DropReason> {
        if self.has(F_RST) {
            return Some(DropReason::StaleFlow);
        }
        if s.flags & flags::ACK == 0 {
            return Some(DropReason::NoAck);
        }
        // PAWS (RFC 7323 section 5.3): a timestamp older than the last one in order marks an
        // old duplicate (unless that one is 24 days old, past the clock's half range).
        if self.has(F_TS)
            && ts.is_some_and(|(val, _)| seq::lt(val, self.ts_recent))
            && now.millis().saturating_sub(self.ts_recent_ms) < PAWS_IDLE_MS
        {
            return self.answer_and_drop(now, s, r, DropReason::Paws);
        }
        let fin = s.flags & flags::FIN != 0;
        let seg_len = s.payload_len as u32 + u32::from(fin);
        let mut wnd = self.rcv_wnd();
        if !seq::lt(s.seq.wrapping_add(seg_len), self.rcv_nxt.wrapping_add(wnd)) {
            // The segment reaches the edge of the window as the state knows it: count what
            // the application read since it last said (the window only grows with it, so
            // a segment inside the known window is judged the same either way).
            self.look_at_rx();
            wnd = self.rcv_wnd();
        }
        let in_wnd =
            |x: u32| seq::ge(x, self.rcv_nxt) && seq::lt(x, self.rcv_nxt.wrapping_add(wnd));
        let acceptable = if seg_len == 0 {
            if wnd == 0 {
                s.seq == self.rcv_nxt
            } else {
                in_wnd(s.seq)
            }
        } else {
            wnd > 0 && (in_wnd(s.seq) || in_wnd(s.seq.wrapping_add(seg_len - 1)))
        };
        let ack_ok = acceptable || (wnd == 0 && s.seq == self.rcv_nxt);
        if !ack_ok {
            let old = seg_len > 0 && seq::le(s.seq.wrapping_add(seg_len), self.rcv_nxt);
            let reason = if old {
                DropReason::Duplicate
            } else {
                DropReason::OutOfWindow
            };
            return self.answer_and_drop(now, s, r, reason);
        }
        if self.has(F_ECN) {
            self.on_ecn_marks(cc, cf, s, r);
        }
        if seq::gt(s.ack, self.snd_max) {
            return self.answer_and_drop(now, s, r, DropReason::AckTooNew);
        }
        // RFC 5961 section 5: an ACK below SND.UNA - MAX.SND.WND acknowledges nothing the
        // peer can have seen; the segment (data included) is dropped and answered.
        if seq::lt(s.ack, self.snd_una.wrapping_sub(self.max_snd_wnd.max(1))) {
            return self.answer_and_drop(now, s, r, DropReason::AckTooOld);
        }
        // RFC 7323 section 4.3: only a segment that starts at or before the last ACK sent
        // gives the echo (later ones wait for an ACK that covers them from the earliest).
        if let Some((val, _)) = ts.filter(|_| self.has(F_TS) && seq::le(s.seq, self.last_ack_sent))
        {
            self.ts_recent = val;
            self.ts_recent_ms = now.millis();
        }
        if seq::ge(s.ack, self.snd_una) {
            let advanced = seq::gt(s.ack, self.snd_una);
            if advanced
                || self.snd_max != self.snd_una
                || !sack.is_empty()
                || s.has(flags::ECE)
                || full_ack_processing()
            {
                self.on_ack(cc, cf, s, sack, ts.map(|t| t.1), now, r);
            } else if self.can_send() {
                // Nothing in flight, nothing acknowledged, no SACK blocks, no congestion
                // echoed (a receiver's segments): the only thing `on_ack` would do.
                r.actions.set(Actions::SCHED);
            }
            // Window update (RFC 9293 3.10.7.4). An ACK that moves `snd_una` also carries a
            // newer window even when its sequence number is older than `snd_wl1` (a
            // retransmission from a peer whose pure ACKs ran ahead), as in Linux.
            if advanced
                || seq::lt(self.snd_wl1, s.seq)
                || (self.snd_wl1 == s.seq && seq::le(self.snd_wl2, s.ack))
            {
                let old_edge = self.snd_edge();
                self.snd_wnd = (s.win as u32) << self.snd_shift;
                self.max_snd_wnd = self.max_snd_wnd.max(self.snd_wnd);
                self.snd_wl1 = s.seq;
                self.snd_wl2 = s.ack;
                if seq::gt(self.snd_edge(), old_edge) && self.can_send() {
                    r.actions.set(Actions::SCHED);
                }
            }
        }
        let mut drop = None;
        if !acceptable {
            // Not acceptable but its ACK was (our window is zero): the probe or bare FIN
            // still gets an ACK (RFC 9293 3.10.7.4), which tells the peer the window.
            r.actions.set(Actions::TX | Actions::ACK_NOW);
            drop = Some(DropReason::OutOfWindow);
        } else if s.payload_len > 0
            && self.has(F_APP_CLOSED)
            && seq::gt(s.seq.wrapping_add(s.payload_len as u32), self.rcv_nxt)
        {
            // New data nobody will read: abort (RFC 9293 3.10.7.4, RFC 1122 4.2.2.13). Data
            // we had already (a retransmission that carries the FIN, acceptable for it) is
            // no reason to.
            self.on_reset(now, r);
            self.finish(r);
            return Some(DropReason::DataAfterClose);
        }
        // The window's right edge as the segment found it (taking its data moves
        // `rcv_nxt`, not the edge): a FIN past it was trimmed away with the data; one right
        // at it (after data that filled the window) is taken, as Linux takes it.
        let fin_edge = self.rcv_nxt.wrapping_add(wnd);
        if acceptable && s.payload_len > 0 {
            if self.has(F_RXFIN) {
                drop = Some(DropReason::DataAfterFin);
                r.actions.set(Actions::TX | Actions::ACK_NOW);
            } else {
                drop = self.on_data(s, wnd, r);
            }
        }
        if acceptable && fin && !self.has(F_RXFIN) {
            let mismatch = self.on_fin_segment(s, fin_edge, r);
            drop = drop.or(mismatch);
        }
        self.try_consume_fin(r);
        if r.actions.any(Actions::TX) {
            if r.actions.any(Actions::ACK_NOW) {
                self.ack_now_header(now, &mut r.hdr);
            } else {
                self.coalescable_ack(now, r);
            }
        }
        self.finish(r);
        drop
    }

    /// A segment dropped with an ACK in answer (RFC 9293 3.10.7.4, RFC 5961, RFC 7323),
    /// or without one where it carried nothing and the flow answered such a segment less
    /// than `OOW_ACK_INTERVAL_MS` ago (counted as rate-limited). Out of line: the
    /// per-segment code stays together.
    #[cold]
    #[inline(never)]
    fn answer_and_drop(
        &mut self,
        now: Instant,
        s: &SegmentSummary,
        r: &mut ProtoResult,
        reason: DropReason,
    ) -> Option<DropReason> {
        if s.payload_len == 0 && s.flags & (flags::SYN | flags::FIN) == 0 {
            // An unacceptable segment that carries nothing is what two ends in an ACK loop
            // send each other (after an injected segment, each finds the other's ACK
            // unacceptable): at most one answer per flow per `OOW_ACK_INTERVAL_MS` (as
            // Linux, RFC 5961 section 7). Segments with data are always answered.
            if self.oow_limited(now) {
                // Nothing goes, not even an ACK an ECN mark asked for (no header is written).
                r.actions.clear(Actions::TX | Actions::ACK_NOW);
                return Some(DropReason::RateLimited);
            }
        }
        self.ack_now_header(now, &mut r.hdr);
        r.actions.set(Actions::TX | Actions::ACK_NOW);
        self.finish(r);
        Some(reason)
    }

    /// ECN marks of an acceptable segment on an ECN connection.
    #[inline(never)]
    fn on_ecn_marks<C: CongestionControl>(
        &mut self,
        cc: &C,
        cf: &mut C::Flow,
        s: &SegmentSummary,
        r: &mut ProtoResult,
    ) {
        if cc.precise_ece(cf) {
            // DCTCP (RFC 8257 3.2): ECE says whether this data was marked; a change is
            // acknowledged at once, so the sender counts marked bytes exactly.
            if s.payload_len > 0 && s.ce != self.has(F_ECE) {
                self.flags ^= F_ECE;
                r.actions.set(Actions::TX | Actions::ACK_NOW);
            }
        } else {
            // RFC 3168 6.1.3: CWR ends our echo; CE (again) starts it, with an ACK at once.
            if s.has(flags::CWR) {
                self.flags &= !F_ECE;
            }
            if s.ce && !self.has(F_ECE) {
                self.flags |= F_ECE;
                r.actions.set(Actions::TX | Actions::ACK_NOW);
            }
        }
    }

    /// An acceptable segment with FIN, before the stream's end was taken: where the stream
    /// ends, if that is inside the window the segment found or right at its edge
    /// (`fin_edge`). A FIN somewhere else than the first one said is a drop reason.
    #[cold]
    #[inline(never)]
    fn on_fin_segment(
        &mut self,
        s: &SegmentSummary,
        fin_edge: u32,
        r: &mut ProtoResult,
    ) -> Option<DropReason> {
        let fin_seq = s.seq.wrapping_add(s.payload_len as u32);
        let mut drop = None;
        match self.rx_fin_seq {
            // The stream ends where the first FIN said; a FIN elsewhere is ignored.
            Some(f) if f != fin_seq => drop = Some(DropReason::FinMismatch),
            _ => {
                if seq::le(fin_seq, fin_edge) && seq::ge(fin_seq, self.rcv_nxt) {
                    self.rx_fin_seq = Some(fin_seq);
                    self.trim_ooo(fin_seq);
                }
            }
        }
        r.actions.set(Actions::TX | Actions::ACK_NOW);
        drop
    }

    pub(super) fn try_consume_fin(&mut self, r: &mut ProtoResult) {
        if let Some(f) = self.rx_fin_seq {
            if f == self.rcv_nxt && !self.has(F_RXFIN) {
                self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
                self.flags |= F_RXFIN;
                self.rx_fin_seq = None;
                r.actions
                    .set(Actions::FIN_RX | Actions::NOTIFY_APP | Actions::TX | Actions::ACK_NOW);
            }
        }
    }

    pub(super) fn on_data(
        &mut self,
        s: &SegmentSummary,
        wnd: u32,
        r: &mut ProtoResult,
    ) -> Option<DropReason> {
        let mut start = s.seq;
        let mut end = s.seq.wrapping_add(s.payload_len as u32);
        if seq::lt(start, self.rcv_nxt) {
            start = self.rcv_nxt;
        }
        let wnd_end = self.rcv_nxt.wrapping_add(wnd);
        if seq::gt(end, wnd_end) {
            end = wnd_end;
        }
        // Nothing lies past a FIN already seen.
        if let Some(f) = self.rx_fin_seq {
            if seq::gt(end, f) {
                end = f;
                if !seq::lt(start, end) {
                    r.actions.set(Actions::TX | Actions::ACK_NOW);
                    return Some(DropReason::DataAfterFin);
                }
            }
        }
        if seq::ge(start, end) {
            r.actions.set(Actions::TX | Actions::ACK_NOW);
            let old = seq::le(s.seq.wrapping_add(s.payload_len as u32), self.rcv_nxt);
            return Some(if old {
                DropReason::Duplicate
            } else {
                DropReason::OutOfWindow
            });
        }
        let len = end.wrapping_sub(start);
        let frame_off = s.payload_off + start.wrapping_sub(s.seq) as u16;
        let ring_pos = self.rx_pos + start.wrapping_sub(self.rcv_nxt) as u64;
        if start == self.rcv_nxt {
            r.payload = PayloadOp {
                ring_pos,
                frame_off,
                len: len as u16,
                sum: [0, 0],
            };
            self.rcv_nxt = end;
            self.rx_pos += len as u64;
            self.note_segment_size(len);
            let merged = self.merge_ooo();
            r.rx_publish = self.rx_pos;
            r.actions.set(
                Actions::PLACE_PAYLOAD | Actions::PUBLISH_RX | Actions::NOTIFY_APP | Actions::TX,
            );
            // A segment that reached out-of-order data, or filled the front of a gap with
            // more still queued, is acknowledged at once (RFC 5681 4.2), with its SACK blocks.
            if merged || (self.ooo_used && self.ooo.iter().any(|iv| iv.1 != 0)) {
                r.actions.set(Actions::ACK_NOW);
            }
            None
        } else {
            r.actions.set(Actions::TX | Actions::ACK_NOW);
            self.ooo_last = start;
            if !self.add_ooo(start, len) {
                return Some(DropReason::OooNoRoom);
            }
            r.payload = PayloadOp {
                ring_pos,
                frame_off,
                len: len as u16,
                sum: [0, 0],
            };
            r.actions.set(Actions::PLACE_PAYLOAD | Actions::OOO);
            None
        }
    }

    /// Add `[start, start+len)` to the intervals, merging overlaps. False when there is no room.
    pub(super) fn add_ooo(&mut self, start: u32, len: u32) -> bool {
        let mut s = start;
        let mut e = start.wrapping_add(len);
        // Absorb every interval that overlaps or touches [s, e).
        for iv in self.ooo.iter_mut() {
            if iv.1 == 0 {
                continue;
            }
            let (is, ie) = (iv.0, iv.0.wrapping_add(iv.1));
            if seq::le(is, e) && seq::ge(ie, s) {
                if seq::lt(is, s) {
                    s = is;
                }
                if seq::gt(ie, e) {
                    e = ie;
                }
                *iv = (0, 0);
            }
        }
        match self.ooo.iter_mut().find(|iv| iv.1 == 0) {
            Some(slot) => {
                *slot = (s, e.wrapping_sub(s));
                self.ooo_used = true;
                true
            }
            None => false,
        }
    }

    /// Cut the out-of-order intervals at the FIN at `fin`: nothing past it is data.
    fn trim_ooo(&mut self, fin: u32) {
        for iv in self.ooo.iter_mut().filter(|iv| iv.1 != 0) {
            if !seq::lt(iv.0, fin) {
                *iv = (0, 0);
            } else if seq::gt(iv.0.wrapping_add(iv.1), fin) {
                iv.1 = fin.wrapping_sub(iv.0);
            }
        }
    }

    /// Merge intervals that `rcv_nxt` reached. Returns whether anything merged.
    pub(super) fn merge_ooo(&mut self) -> bool {
        if !self.ooo_used {
            return false;
        }
        let mut merged = false;
        loop {
            let mut progress = false;
            for iv in self.ooo.iter_mut() {
                if iv.1 == 0 {
                    continue;
                }
                let end = iv.0.wrapping_add(iv.1);
                if seq::le(iv.0, self.rcv_nxt) {
                    if seq::gt(end, self.rcv_nxt) {
                        self.rx_pos += end.wrapping_sub(self.rcv_nxt) as u64;
                        self.rcv_nxt = end;
                    }
                    *iv = (0, 0);
                    progress = true;
                    merged = true;
                }
            }
            if !progress {
                self.ooo_used = self.ooo.iter().any(|iv| iv.1 != 0);
                return merged;
            }
        }
    }

    /// A peer's RST (RFC 5961 3.2): reset when it is exactly at `rcv_nxt`, answer with a
    /// challenge ACK when it is elsewhere in the window, the flow sent no challenge ACK
    /// (and answered no unacceptable segment) in the last `OOW_ACK_INTERVAL_MS`, and
    /// `challenge()` (asked only then: a budget across flows, if any) allows one; ignore it
    /// otherwise (a challenge ACK not sent is counted as rate-limited).
    pub fn on_rst(
        &mut self,
        now: Instant,
        seq_no: u32,
        challenge: impl FnOnce() -> bool,
        r: &mut ProtoResult,
    ) -> Option<DropReason> {
        if self.has(F_RST) {
            return Some(DropReason::StaleFlow);
        }
        self.look_at_rx();
        let wnd = self.rcv_wnd().max(1);
        if seq_no == self.rcv_nxt {
            self.flags |= F_RST;
            r.actions.set(Actions::RST_RX | Actions::NOTIFY_APP);
            None
        } else if seq::gt(seq_no, self.rcv_nxt) && seq::lt(seq_no, self.rcv_nxt.wrapping_add(wnd)) {
            self.challenge_ack(now, challenge, r)
                .or(Some(DropReason::BadRst))
        } else {
            Some(DropReason::BadRst)
        }
    }

    /// A challenge ACK (RFC 5961 3.2 and 4.2) unless the flow's limit
    /// ([`oow_limited`](Self::oow_limited)) or `budget()` (asked only past it) refuses one:
    /// then `Some(RateLimited)`.
    pub(super) fn challenge_ack(
        &mut self,
        now: Instant,
        budget: impl FnOnce() -> bool,
        r: &mut ProtoResult,
    ) -> Option<DropReason> {
        if self.has(F_RST) || self.oow_limited(now) || !budget() {
            return Some(DropReason::RateLimited);
        }
        if self.has(F_FROZEN) {
            self.frozen_ack_header(now, &mut r.hdr);
        } else {
            self.ack_now_header(now, &mut r.hdr);
        }
        r.actions
            .set(Actions::TX | Actions::ACK_NOW | Actions::CHALLENGE_ACK);
        self.finish(r);
        None
    }
}

/// Whether every acceptable ACK goes through `on_ack`, the receiver's shortcut past it off:
/// never outside tests; a differential test turns it on for its thread
/// (`FULL_ACK_PROCESSING`).
#[inline(always)]
fn full_ack_processing() -> bool {
    #[cfg(test)]
    return FULL_ACK_PROCESSING.with(std::cell::Cell::get);
    #[cfg(not(test))]
    false
}

#[cfg(test)]
thread_local! {
    /// See [`full_ack_processing`].
    pub(super) static FULL_ACK_PROCESSING: std::cell::Cell<bool> =
        const { std::cell::Cell::new(false) };
}
