//! The sending side of a connection's state: segments for the scheduler's grants, the
//! application's updates, and the loss recovery that chooses what goes again (fast recovery
//! over the SACK scoreboard or NewReno partial ACKs, tail-loss probes, go-back-N after a
//! timeout), plus the control plane's requests (probes, ACKs, aborts).

use super::*;

impl TcpState {
    /// New data that the peer's window and the congestion window allow from `snd_nxt`.
    pub(super) fn usable(&self) -> u32 {
        let edge = self.snd_edge();
        let window_room = if seq::gt(edge, self.snd_nxt) {
            edge.wrapping_sub(self.snd_nxt)
        } else {
            0
        };
        let budget = if self.has(F_FASTREC) {
            self.window().saturating_sub(self.pipe())
        } else {
            let flight = self.snd_nxt.wrapping_sub(self.snd_una);
            // Limited transmit (RFC 3042): each of the first two duplicate ACKs lets one
            // new segment out beyond the congestion window.
            let extra = if !self.has(F_RECOVERY) && self.dupacks <= 2 {
                self.dupacks as u32 * self.mss as u32
            } else {
                0
            };
            self.window().saturating_add(extra).saturating_sub(flight)
        };
        window_room.min(budget)
    }

    /// Bytes the next grant sends from `snd_nxt`: at most an MSS within both windows.
    /// Going back after a timeout, up to the next block the peer SACKed. New data avoids
    /// silly windows (RFC 9293 3.8.6.2.1): a short segment waits unless it is all that is
    /// queued or at least half the largest window the peer offered; with nothing in flight
    /// (no ACK to come) the persist timer's override sends it after a while
    /// ([`window_holds_back`](Self::window_holds_back)).
    // Always in line, with the work out of line: compiled as one function, the registers
    // the work needs were saved and restored around the common early return too.
    #[inline(always)]
    pub(super) fn next_len(&self) -> u32 {
        // Nothing queued (the common case once a response is out): nothing to work out.
        let unsent = self.unsent();
        if unsent == 0 {
            return 0;
        }
        self.next_len_of(unsent)
    }

    /// [`next_len`](Self::next_len) with `unsent` bytes queued.
    #[inline(never)]
    pub(super) fn next_len_of(&self, unsent: u32) -> u32 {
        let mut n = unsent.min(self.usable()).min(self.mss as u32);
        if seq::lt(self.snd_nxt, self.snd_max) {
            if let Some(next) = self.scoreboard.next_start(self.snd_nxt) {
                n = n.min(next.wrapping_sub(self.snd_nxt));
            }
        } else if n < self.mss as u32
            && n < unsent
            && n < self.max_snd_wnd / 2
            && !self.has(F_SWS_OVERRIDE)
        {
            n = 0;
        }
        n
    }

    /// Whether the peer's window holds the queue back with nothing in flight: `unsent`
    /// bytes queued, none sent unacknowledged, and the window too small for a segment
    /// (silly-window avoidance, or zero). No ACK will come to open it; the control plane's
    /// persist timer runs ([`Actions::PEER_WINDOW_ZERO`]) and, where the window is not
    /// zero, its probe overrides the avoidance ([`on_probe`](Self::on_probe)).
    #[inline]
    pub(super) fn window_holds_back(&self, unsent: u32) -> bool {
        unsent > 0 && self.snd_max == self.snd_una && self.next_len_of(unsent) == 0
    }

    /// Send `[start, end)` again (a retransmission chosen by recovery or a probe).
    pub(super) fn retransmit(
        &mut self,
        now: Instant,
        start: u32,
        end: u32,
        fin: bool,
        r: &mut ProtoResult,
    ) {
        let n = end.wrapping_sub(start);
        let mut fl = flags::ACK;
        if n > 0 {
            fl |= flags::PSH;
        }
        if fin {
            fl |= flags::FIN;
        }
        self.header_into(now, fl, start, n as u16, &mut r.hdr);
        r.payload = PayloadOp {
            ring_pos: self.ring_pos(start),
            frame_off: 0,
            len: n as u16,
            sum: [0, 0],
        };
        r.actions.set(Actions::TX | Actions::ACK_NOW);
        if n > 0 {
            r.actions.set(Actions::FETCH_PAYLOAD);
        }
    }

    /// Grant one segment's transmission: in a fast recovery the next hole first, then new
    /// data. The result is marked [`Actions::GRANTED`]: its `SCHED` says what is left.
    pub fn on_tx(&mut self, now: Instant, r: &mut ProtoResult) {
        r.actions.set(Actions::GRANTED);
        if self.has(F_RST) {
            return;
        }
        if self.retransmit_due() {
            if let Some((start, end)) = self.next_retransmit() {
                self.rxt_next = end;
                self.rxt_max = self.snd_max;
                self.retransmit(now, start, end, false, r);
                r.actions.set(Actions::RECOVERY_RETRANSMIT);
                if self.can_send() {
                    r.actions.set(Actions::SCHED);
                }
                self.finish(r);
                return;
            }
        }
        // Going back after a timeout: what the peer SACKed is not sent again.
        while seq::lt(self.snd_nxt, self.snd_max) {
            match self.scoreboard.skip(self.snd_nxt) {
                Some(end) => self.snd_nxt = end,
                None => break,
            }
        }
        let n = self.next_len();
        let seq_no = self.snd_nxt;
        let pos = self.ring_pos(seq_no);
        let mut fl = flags::ACK;
        if n > 0 {
            fl |= flags::PSH;
            self.flags &= !F_SWS_OVERRIDE;
            if seq_no == self.snd_max && self.rtt_start == 0 {
                self.rtt_seq = seq_no;
                self.rtt_start = now.micros() + 1;
            }
            self.snd_nxt = self.snd_nxt.wrapping_add(n);
        }
        let fin = self.fin_due();
        if fin {
            fl |= flags::FIN;
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            if !self.has(F_FIN_SENT) {
                self.flags |= F_FIN_SENT;
                r.actions.set(Actions::FIN_TX);
            }
        }
        if n == 0 && !fin {
            self.finish(r);
            return;
        }
        // New data (not a resend after a timeout) of an ECN connection is ECN-capable, and
        // the first after a reduction says so with CWR (RFC 3168 6.1.2, 6.1.5).
        let new_data = n > 0 && seq_no == self.snd_max && self.has(F_ECN);
        if new_data && self.has(F_CWR_SEND) {
            fl |= flags::CWR;
            self.flags &= !F_CWR_SEND;
        }
        if seq::gt(self.snd_nxt, self.snd_max) {
            self.snd_max = self.snd_nxt;
        }
        self.header_into(now, fl, seq_no, n as u16, &mut r.hdr);
        r.hdr.ect = new_data;
        r.payload = PayloadOp {
            ring_pos: pos,
            frame_off: 0,
            len: n as u16,
            sum: [0, 0],
        };
        r.actions.set(Actions::TX | Actions::ACK_NOW);
        if n > 0 {
            r.actions.set(Actions::FETCH_PAYLOAD);
        }
        if self.can_send() {
            r.actions.set(Actions::SCHED);
        }
        self.finish(r);
    }

    /// The application closed its reading side: new data will be answered with a RST
    /// (RFC 9293 3.10.7.4, RFC 1122 4.2.2.13).
    pub fn app_closed(&mut self) {
        self.flags |= F_APP_CLOSED;
    }

    /// The application moved its ring positions.
    pub fn on_app(
        &mut self,
        now: Instant,
        tx_head: u64,
        rx_tail: u64,
        fin: bool,
        r: &mut ProtoResult,
    ) {
        self.take_app(now, tx_head, rx_tail, fin, r);
        self.finish(r);
    }

    /// [`on_app`](Self::on_app) without the result's report of the flow's counters: the
    /// caller may send in the same result first, and one report covers both.
    pub(super) fn take_app(
        &mut self,
        now: Instant,
        tx_head: u64,
        rx_tail: u64,
        fin: bool,
        r: &mut ProtoResult,
    ) {
        if tx_head > self.tx_app_end && !self.has(F_TXFIN) {
            self.tx_app_end = tx_head;
        }
        if fin {
            self.flags |= F_TXFIN;
        }
        if self.take_rx_tail(rx_tail) {
            self.ack_now_header(now, &mut r.hdr);
            r.actions.set(Actions::TX | Actions::ACK_NOW);
        }
        if self.can_send() {
            r.actions.set(Actions::SCHED);
        }
    }

    /// The application read up to `rx_tail`: take it, and say whether the window opened
    /// enough to tell the peer at once (it was under half the ring, and grows by two
    /// segments, or half the ring where that is less: RFC 1122 4.2.3.3).
    fn take_rx_tail(&mut self, rx_tail: u64) -> bool {
        let old_adv = self.offered();
        if rx_tail > self.rx_tail && rx_tail <= self.rx_pos {
            self.rx_tail = rx_tail;
        }
        let new_wnd = (self.rcv_wnd() >> self.rcv_shift) << self.rcv_shift;
        let threshold = self.update_threshold();
        old_adv < self.rx_cap / 2 && new_wnd >= old_adv.saturating_add(threshold)
    }

    /// [`on_app`](Self::on_app) for an update that only moved the receive ring's tail (the
    /// application read), applied only where its result would do nothing: no new data
    /// (`tx_head` no further than the state knows), no window update due, nothing to send,
    /// the flow neither frozen nor reset. Returns whether it was applied; `false` leaves the
    /// state as it was, for the caller to make the work item. Applied, it changes only
    /// `rx_tail`, which no report to the control plane carries, so the last result's report
    /// still holds.
    pub fn on_app_quiet(&mut self, tx_head: u64, rx_tail: u64) -> bool {
        if self.has(F_FROZEN | F_RST) || (tx_head > self.tx_app_end && !self.has(F_TXFIN)) {
            return false;
        }
        let before = self.rx_tail;
        if self.take_rx_tail(rx_tail) || self.can_send() {
            self.rx_tail = before;
            return false;
        }
        true
    }

    /// Zero-window probe: an ACK with an old sequence number, which makes the peer answer
    /// with its current window. Where the window is open but too small for silly-window
    /// avoidance and nothing is in flight, the probe is the avoidance's override instead:
    /// the flow is scheduled, and its next grant sends what the window takes (as Linux's
    /// probe timer does).
    pub fn on_probe(&mut self, now: Instant, r: &mut ProtoResult) {
        if self.has(F_RST) {
            return;
        }
        let unsent = self.unsent();
        if self.window_holds_back(unsent) && self.usable() > 0 {
            self.flags |= F_SWS_OVERRIDE;
            r.actions.set(Actions::SCHED);
            self.finish(r);
            return;
        }
        // The window shut again since an override: the next short segment waits anew.
        self.flags &= !F_SWS_OVERRIDE;
        let s = self.snd_una.wrapping_sub(1);
        self.header_into(now, flags::ACK, s, 0, &mut r.hdr);
        r.actions
            .set(Actions::TX | Actions::ACK_NOW | Actions::WINDOW_PROBE);
        self.finish(r);
    }

    /// An ACK on request.
    pub fn on_ack_request(&mut self, now: Instant, r: &mut ProtoResult) {
        if self.has(F_RST) {
            return;
        }
        self.ack_now_header(now, &mut r.hdr);
        r.actions.set(Actions::TX | Actions::ACK_NOW);
        self.finish(r);
    }

    /// Abort: a RST at `snd_nxt`; the flow sends nothing afterwards.
    pub fn on_reset(&mut self, now: Instant, r: &mut ProtoResult) {
        if self.has(F_RST) {
            return;
        }
        self.flags |= F_RST;
        let s = self.snd_max;
        self.header_into(now, flags::RST | flags::ACK, s, 0, &mut r.hdr);
        r.actions
            .set(Actions::TX | Actions::ACK_NOW | Actions::RST_TX);
    }
}
