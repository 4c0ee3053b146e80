//! Protocol: the only place where per-connection TCP state changes.
//!
//! Each handler is a pure function of (work item, segment summary, state) that mutates the
//! state and returns a [`ProtoResult`] whose [`Actions`] say what the downstream stages must
//! do. One protocol stage serves one flow group; nothing else writes its flows' state.
//!
//! Receive: ACK validation (including "future" ACKs after go-back-N), trimming to the receive
//! window, up to [`OOO_INTERVALS`] out-of-order intervals whose payload is placed straight into
//! the receive ring, duplicate-ACK counting, go-back-N on the third duplicate ACK, FIN.
//! Send: sequence ranges within the peer's window and the congestion window, which a
//! [`CongestionControl`] policy sets (by default [`NewReno`]), FIN once all data is out.

use super::{Actions, PayloadOp, ProtoResult, ProtoWork, Stage};
use crate::control::congestion::{AckSample, CongestionControl, Loss, LossKind, NewReno};
use crate::flow::FlowId;
use crate::stats::{DropReason, StageStats};
use crate::time::Instant;
use crate::wire::{flags, seq, SegmentSummary, TxHeader};

/// Out-of-order intervals kept per connection.
pub const OOO_INTERVALS: usize = 4;

/// When the receiver sends ACKs for in-order data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AckPolicy {
    /// One ACK for every data segment (FlexTOE's choice).
    EverySegment,
    /// One ACK per connection per burst; out-of-order data, FIN and window updates are still
    /// acknowledged at once.
    #[default]
    PerBurst,
}

const F_TXFIN: u16 = 1 << 0;
const F_FIN_SENT: u16 = 1 << 1;
const F_FIN_ACKED: u16 = 1 << 2;
const F_RXFIN: u16 = 1 << 3;
const F_TS: u16 = 1 << 4;
const F_RECOVERY: u16 = 1 << 5;
const F_RST: u16 = 1 << 6;

/// Per-connection TCP state, owned by one protocol stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpState {
    /// Oldest unacknowledged sequence number.
    pub snd_una: u32,
    /// Next sequence number to send.
    pub snd_nxt: u32,
    /// Highest sequence number sent so far (plus one).
    pub snd_max: u32,
    /// Peer's window in bytes (scaled).
    pub snd_wnd: u32,
    /// The largest window the peer has offered (RFC 5961 MAX.SND.WND).
    pub max_snd_wnd: u32,
    /// Segment sequence number of the last window update.
    pub snd_wl1: u32,
    /// Segment acknowledgment number of the last window update.
    pub snd_wl2: u32,
    /// TX ring position of `snd_una`.
    pub tx_una_pos: u64,
    /// TX ring position where the application's data ends.
    pub tx_app_end: u64,
    /// Congestion window in force (bytes), as the congestion-control policy last set it.
    pub cwnd: u32,
    /// Recovery point of the last go-back-N.
    pub recover: u32,
    /// Duplicate ACKs in a row.
    pub dupacks: u16,
    /// Payload bytes per segment.
    pub mss: u16,
    /// Shift for windows the peer advertises.
    pub snd_shift: u8,
    /// Shift for windows we advertise.
    pub rcv_shift: u8,
    flags: u16,
    /// Sequence number being timed for RTT (valid when `rtt_start` is non-zero).
    pub rtt_seq: u32,
    /// When the timed segment was sent (microseconds + 1; 0 = none).
    pub rtt_start: u64,
    /// Next sequence number expected.
    pub rcv_nxt: u32,
    /// RX ring position of `rcv_nxt`.
    pub rx_pos: u64,
    /// How far the application has read the RX ring (as last told).
    pub rx_tail: u64,
    /// RX ring size.
    pub rx_cap: u32,
    /// Right edge of the window we last advertised.
    pub rcv_adv: u32,
    /// Out-of-order intervals `(start, len)`; `len == 0` means unused.
    pub ooo: [(u32, u32); OOO_INTERVALS],
    /// Sequence number of a FIN seen beyond `rcv_nxt`.
    pub rx_fin_seq: Option<u32>,
    /// Timestamp to echo.
    pub ts_recent: u32,
    /// Added to our clock in the timestamps we send (RFC 7323 5.4).
    pub ts_offset: u32,
}

/// Parameters to create the state of an established connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpParams {
    /// Our next sequence number (ISS + 1).
    pub snd_nxt: u32,
    /// Peer's next sequence number (IRS + 1).
    pub rcv_nxt: u32,
    /// Peer's window in bytes, already scaled.
    pub snd_wnd: u32,
    /// Payload bytes per segment.
    pub mss: u16,
    /// Shift for windows the peer advertises.
    pub snd_shift: u8,
    /// Shift for windows we advertise.
    pub rcv_shift: u8,
    /// RX ring size.
    pub rx_cap: u32,
    /// Timestamps negotiated.
    pub timestamps: bool,
    /// Peer's last timestamp value.
    pub ts_recent: u32,
    /// Offset of this connection's timestamp clock (RFC 7323 5.4).
    pub ts_offset: u32,
    /// Initial congestion window in segments.
    pub initial_cwnd_segments: u32,
}

impl TcpState {
    /// State of a freshly established connection.
    pub fn new(p: &TcpParams) -> Self {
        let mut st = TcpState {
            snd_una: p.snd_nxt,
            snd_nxt: p.snd_nxt,
            snd_max: p.snd_nxt,
            snd_wnd: p.snd_wnd,
            max_snd_wnd: p.snd_wnd,
            snd_wl1: p.rcv_nxt.wrapping_sub(1),
            snd_wl2: p.snd_nxt,
            cwnd: p
                .initial_cwnd_segments
                .max(1)
                .saturating_mul(p.mss.max(1) as u32),
            recover: p.snd_nxt,
            mss: p.mss.max(1),
            snd_shift: p.snd_shift,
            rcv_shift: p.rcv_shift,
            rcv_nxt: p.rcv_nxt,
            rx_cap: p.rx_cap,
            ts_recent: p.ts_recent,
            ts_offset: p.ts_offset,
            ..Default::default()
        };
        if p.timestamps {
            st.flags |= F_TS;
        }
        st.rcv_adv = st.rcv_nxt.wrapping_add(st.rcv_wnd());
        st
    }

    fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    /// Free receive space (the window we can offer).
    pub fn rcv_wnd(&self) -> u32 {
        (self.rx_cap as u64).saturating_sub(self.rx_pos - self.rx_tail) as u32
    }

    /// Sequence number just past the application's data.
    pub fn data_end_seq(&self) -> u32 {
        self.snd_una
            .wrapping_add((self.tx_app_end - self.tx_una_pos) as u32)
            .wrapping_sub(u32::from(self.has(F_FIN_ACKED)))
    }

    /// Sequence space in flight.
    pub fn in_flight(&self) -> u32 {
        self.snd_max.wrapping_sub(self.snd_una)
    }

    /// Application bytes not yet sent (from `snd_nxt`).
    pub fn unsent(&self) -> u32 {
        let end = self.data_end_seq();
        if seq::lt(self.snd_nxt, end) {
            end.wrapping_sub(self.snd_nxt)
        } else {
            0
        }
    }

    /// The peer's FIN has been consumed.
    pub fn rx_fin(&self) -> bool {
        self.has(F_RXFIN)
    }

    /// Our FIN has been acknowledged.
    pub fn fin_acked(&self) -> bool {
        self.has(F_FIN_ACKED)
    }

    /// The application asked to close its sending side.
    pub fn tx_fin_requested(&self) -> bool {
        self.has(F_TXFIN)
    }

    fn ring_pos(&self, s: u32) -> u64 {
        self.tx_una_pos + s.wrapping_sub(self.snd_una) as u64
    }

    /// Whether a TX grant would send something now.
    pub fn can_send(&self) -> bool {
        if self.has(F_RST) {
            return false;
        }
        (self.unsent() > 0 && self.usable() > 0) || self.fin_due()
    }

    /// Right edge of the peer's window: the window counts from the acknowledgment number
    /// of the segment that carried it (`snd_wl2`), not from today's `snd_una`. Counting
    /// from `snd_una` would slide a stale window forward with every ACK that does not update
    /// it and send past what the peer offered.
    fn snd_edge(&self) -> u32 {
        self.snd_wl2.wrapping_add(self.snd_wnd)
    }

    /// New data that the peer's window and the congestion window allow from `snd_nxt`.
    fn usable(&self) -> u32 {
        let edge = self.snd_edge();
        let window_room = if seq::gt(edge, self.snd_nxt) {
            edge.wrapping_sub(self.snd_nxt)
        } else {
            0
        };
        let flight = self.snd_nxt.wrapping_sub(self.snd_una);
        window_room.min(self.cwnd.saturating_sub(flight))
    }

    fn fin_due(&self) -> bool {
        self.has(F_TXFIN) && !self.has(F_FIN_ACKED) && self.snd_nxt == self.data_end_seq()
    }

    /// Window field to advertise, and remember the right edge.
    fn advertise(&mut self) -> u16 {
        let w = (self.rcv_wnd() >> self.rcv_shift).min(u16::MAX as u32);
        let edge = self.rcv_nxt.wrapping_add(w << self.rcv_shift);
        if seq::gt(edge, self.rcv_adv) {
            self.rcv_adv = edge;
        }
        w as u16
    }

    fn header(&mut self, now: Instant, fl: u8, seq_no: u32, payload_len: u16) -> TxHeader {
        let win = self.advertise();
        TxHeader {
            seq: seq_no,
            ack: self.rcv_nxt,
            flags: fl,
            win,
            ts_val: (now.millis() as u32).wrapping_add(self.ts_offset),
            ts_ecr: self.ts_recent,
            payload_len,
        }
    }

    /// A pure ACK. Its sequence number is `snd_max`, not `snd_nxt`: after go-back-N the peer
    /// may already hold everything up to `snd_max`, and an ACK numbered below its `rcv_nxt`
    /// would be unacceptable to it (and its ACK field ignored).
    fn ack_header(&mut self, now: Instant) -> TxHeader {
        let s = self.snd_max;
        self.header(now, flags::ACK, s, 0)
    }

    fn finish(&self, r: &mut ProtoResult) {
        r.in_flight = self.in_flight();
        r.unsent = self.unsent();
        r.peer_window_zero = !seq::gt(self.snd_edge(), self.snd_una);
    }

    fn go_back_n<C: CongestionControl>(&mut self, cc: &C, cf: &mut C::Flow, kind: LossKind) {
        let flight = self.snd_max.wrapping_sub(self.snd_una);
        cc.on_loss(
            cf,
            Loss {
                kind,
                flight,
                mss: self.mss as u32,
            },
        );
        self.cwnd = cc.cwnd(cf);
        self.snd_nxt = self.snd_una;
        self.recover = self.snd_max;
        self.dupacks = 0;
        self.rtt_start = 0;
        self.flags |= F_RECOVERY;
    }

    /// Process an acceptable ACK field. Returns newly acknowledged data bytes.
    fn on_ack<C: CongestionControl>(
        &mut self,
        cc: &C,
        cf: &mut C::Flow,
        s: &SegmentSummary,
        now: Instant,
        r: &mut ProtoResult,
    ) {
        let ack = s.ack;
        if seq::gt(ack, self.snd_una) {
            let flight = self.in_flight();
            let acked = ack.wrapping_sub(self.snd_una);
            let data_end = self.data_end_seq();
            let fin_acked =
                self.has(F_FIN_SENT) && !self.has(F_FIN_ACKED) && seq::gt(ack, data_end);
            let data_acked = acked - u32::from(fin_acked);
            self.snd_una = ack;
            self.tx_una_pos += data_acked as u64;
            if seq::lt(self.snd_nxt, ack) {
                // A "future" ACK after go-back-N: the peer had the data already.
                self.snd_nxt = ack;
            }
            if fin_acked {
                self.flags |= F_FIN_ACKED;
                r.actions.set(Actions::FIN_ACKED | Actions::NOTIFY_APP);
            }
            self.dupacks = 0;
            let mut rtt_us = None;
            if self.rtt_start != 0 && seq::gt(ack, self.rtt_seq) {
                r.rtt_us = (now.micros() + 1).saturating_sub(self.rtt_start) as u32;
                r.actions.set(Actions::RTT_SAMPLE);
                rtt_us = Some(r.rtt_us);
                self.rtt_start = 0;
            }
            let in_recovery = self.has(F_RECOVERY) && seq::lt(ack, self.recover);
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
            if self.has(F_RECOVERY) && !in_recovery {
                self.flags &= !F_RECOVERY;
                cc.on_recovery_end(cf);
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
            if self.can_send() {
                r.actions.set(Actions::SCHED);
            }
        } else if ack == self.snd_una
            && s.payload_len == 0
            && s.flags & flags::FIN == 0
            && self.snd_max != self.snd_una
            && ((s.win as u32) << self.snd_shift) == self.snd_wnd
        {
            self.dupacks = self.dupacks.saturating_add(1);
            r.actions.set(Actions::DUP_ACK);
            if self.dupacks == 3 && (!self.has(F_RECOVERY) || seq::gt(self.snd_una, self.recover)) {
                self.go_back_n(cc, cf, LossKind::DupAcks);
                r.actions.set(Actions::FAST_RETRANSMIT | Actions::SCHED);
            }
        }
    }

    /// Handle a received segment of this connection.
    pub fn on_segment<C: CongestionControl>(
        &mut self,
        cc: &C,
        cf: &mut C::Flow,
        s: &SegmentSummary,
        now: Instant,
        r: &mut ProtoResult,
    ) -> Option<DropReason> {
        if self.has(F_RST) {
            return Some(DropReason::StaleFlow);
        }
        if s.flags & flags::ACK == 0 {
            return Some(DropReason::NoAck);
        }
        let wnd = self.rcv_wnd();
        let fin = s.flags & flags::FIN != 0;
        let seg_len = s.payload_len as u32 + u32::from(fin);
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
            r.hdr = self.ack_header(now);
            r.actions.set(Actions::TX | Actions::ACK_NOW);
            self.finish(r);
            return Some(DropReason::OutOfWindow);
        }
        if seq::gt(s.ack, self.snd_max) {
            r.hdr = self.ack_header(now);
            r.actions.set(Actions::TX | Actions::ACK_NOW);
            self.finish(r);
            return Some(DropReason::AckTooNew);
        }
        // RFC 5961 section 5: an ACK below SND.UNA - MAX.SND.WND acknowledges nothing the
        // peer can have seen; the segment (data included) is dropped and answered.
        if seq::lt(s.ack, self.snd_una.wrapping_sub(self.max_snd_wnd.max(1))) {
            r.hdr = self.ack_header(now);
            r.actions.set(Actions::TX | Actions::ACK_NOW);
            self.finish(r);
            return Some(DropReason::AckTooOld);
        }
        if self.has(F_TS) && s.has_ts && seq::le(s.seq, self.rcv_nxt) {
            self.ts_recent = s.ts_val;
        }
        if seq::ge(s.ack, self.snd_una) {
            let advanced = seq::gt(s.ack, self.snd_una);
            self.on_ack(cc, cf, s, now, r);
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
        if acceptable && s.payload_len > 0 {
            if self.has(F_RXFIN) {
                drop = Some(DropReason::DataAfterFin);
                r.actions.set(Actions::TX | Actions::ACK_NOW);
            } else {
                drop = self.on_data(s, wnd, r);
            }
        }
        if acceptable && fin && !self.has(F_RXFIN) {
            let fin_seq = s.seq.wrapping_add(s.payload_len as u32);
            if seq::lt(fin_seq, self.rcv_nxt.wrapping_add(wnd.max(1))) {
                self.rx_fin_seq = Some(fin_seq);
            }
            r.actions.set(Actions::TX | Actions::ACK_NOW);
        }
        self.try_consume_fin(r);
        if s.ce && r.actions.any(Actions::TX) {
            r.actions.set(Actions::ECE);
        }
        if r.actions.any(Actions::TX) {
            let mut h = self.ack_header(now);
            if r.actions.any(Actions::ECE) {
                h.flags |= flags::ECE;
            }
            r.hdr = h;
        }
        self.finish(r);
        drop
    }

    fn try_consume_fin(&mut self, r: &mut ProtoResult) {
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

    fn on_data(&mut self, s: &SegmentSummary, wnd: u32, r: &mut ProtoResult) -> Option<DropReason> {
        let mut start = s.seq;
        let mut end = s.seq.wrapping_add(s.payload_len as u32);
        if seq::lt(start, self.rcv_nxt) {
            start = self.rcv_nxt;
        }
        let wnd_end = self.rcv_nxt.wrapping_add(wnd);
        if seq::gt(end, wnd_end) {
            end = wnd_end;
        }
        if seq::ge(start, end) {
            r.actions.set(Actions::TX | Actions::ACK_NOW);
            return Some(DropReason::OutOfWindow);
        }
        let len = end.wrapping_sub(start);
        let frame_off = s.payload_off + start.wrapping_sub(s.seq) as u16;
        let ring_pos = self.rx_pos + start.wrapping_sub(self.rcv_nxt) as u64;
        if start == self.rcv_nxt {
            r.payload = PayloadOp {
                ring_pos,
                frame_off,
                len: len as u16,
            };
            self.rcv_nxt = end;
            self.rx_pos += len as u64;
            let merged = self.merge_ooo();
            r.rx_publish = self.rx_pos;
            r.actions.set(
                Actions::PLACE_PAYLOAD | Actions::PUBLISH_RX | Actions::NOTIFY_APP | Actions::TX,
            );
            if merged {
                r.actions.set(Actions::ACK_NOW);
            }
            None
        } else {
            r.actions.set(Actions::TX | Actions::ACK_NOW);
            if !self.add_ooo(start, len) {
                return Some(DropReason::OooNoRoom);
            }
            r.payload = PayloadOp {
                ring_pos,
                frame_off,
                len: len as u16,
            };
            r.actions.set(Actions::PLACE_PAYLOAD | Actions::OOO);
            None
        }
    }

    /// Add `[start, start+len)` to the intervals, merging overlaps. False when there is no room.
    fn add_ooo(&mut self, start: u32, len: u32) -> bool {
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
                true
            }
            None => false,
        }
    }

    /// Merge intervals that `rcv_nxt` reached. Returns whether anything merged.
    fn merge_ooo(&mut self) -> bool {
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
                return merged;
            }
        }
    }

    /// Grant one segment's transmission.
    pub fn on_tx(&mut self, now: Instant, r: &mut ProtoResult) {
        if self.has(F_RST) {
            return;
        }
        let n = self.unsent().min(self.usable()).min(self.mss as u32);
        let seq_no = self.snd_nxt;
        let pos = self.ring_pos(seq_no);
        let mut fl = flags::ACK;
        if n > 0 {
            fl |= flags::PSH;
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
        if seq::gt(self.snd_nxt, self.snd_max) {
            self.snd_max = self.snd_nxt;
        }
        r.hdr = self.header(now, fl, seq_no, n as u16);
        r.payload = PayloadOp {
            ring_pos: pos,
            frame_off: 0,
            len: n as u16,
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

    /// The application moved its ring positions.
    pub fn on_app(
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
        let old_adv = self.rcv_adv.wrapping_sub(self.rcv_nxt);
        if rx_tail > self.rx_tail && rx_tail <= self.rx_pos {
            self.rx_tail = rx_tail;
        }
        let new_wnd = (self.rcv_wnd() >> self.rcv_shift) << self.rcv_shift;
        let threshold = (2 * self.mss as u32).min(self.rx_cap / 2);
        if old_adv < self.rx_cap / 2 && new_wnd >= old_adv.saturating_add(threshold) {
            r.hdr = self.ack_header(now);
            r.actions.set(Actions::TX | Actions::ACK_NOW);
        }
        if self.can_send() {
            r.actions.set(Actions::SCHED);
        }
        self.finish(r);
    }

    /// Retransmission timeout: go back to `snd_una`; the congestion control sets the window
    /// (one segment for [`NewReno`]).
    pub fn on_timeout<C: CongestionControl>(
        &mut self,
        cc: &C,
        cf: &mut C::Flow,
        r: &mut ProtoResult,
    ) {
        if self.snd_max == self.snd_una || self.has(F_RST) {
            return;
        }
        self.go_back_n(cc, cf, LossKind::Timeout);
        r.actions.set(Actions::TIMEOUT_RETRANSMIT | Actions::SCHED);
        self.finish(r);
    }

    /// Zero-window probe: an ACK with an old sequence number, which makes the peer answer
    /// with its current window.
    pub fn on_probe(&mut self, now: Instant, r: &mut ProtoResult) {
        if self.has(F_RST) {
            return;
        }
        let s = self.snd_una.wrapping_sub(1);
        r.hdr = self.header(now, flags::ACK, s, 0);
        r.actions.set(Actions::TX | Actions::ACK_NOW);
        self.finish(r);
    }

    /// A punted RST (RFC 5961 3.2): reset when it is exactly at `rcv_nxt`, answer with a
    /// challenge ACK when it is elsewhere in the window, ignore it otherwise.
    pub fn on_rst(&mut self, now: Instant, seq_no: u32, r: &mut ProtoResult) -> Option<DropReason> {
        if self.has(F_RST) {
            return Some(DropReason::StaleFlow);
        }
        let wnd = self.rcv_wnd().max(1);
        if seq_no == self.rcv_nxt {
            self.flags |= F_RST;
            r.actions.set(Actions::RST_RX | Actions::NOTIFY_APP);
            None
        } else if seq::gt(seq_no, self.rcv_nxt) && seq::lt(seq_no, self.rcv_nxt.wrapping_add(wnd)) {
            r.hdr = self.ack_header(now);
            r.actions
                .set(Actions::TX | Actions::ACK_NOW | Actions::CHALLENGE_ACK);
            self.finish(r);
            Some(DropReason::BadRst)
        } else {
            Some(DropReason::BadRst)
        }
    }

    /// An ACK on request.
    pub fn on_ack_request(&mut self, now: Instant, r: &mut ProtoResult) {
        if self.has(F_RST) {
            return;
        }
        r.hdr = self.ack_header(now);
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
        r.hdr = self.header(now, flags::RST | flags::ACK, s, 0);
        r.actions
            .set(Actions::TX | Actions::ACK_NOW | Actions::RST_TX);
    }
}

/// The protocol stage of one flow group, with its congestion-control policy `C`.
pub struct Protocol<C: CongestionControl = NewReno> {
    cc: C,
    flows: Vec<Option<(TcpState, C::Flow)>>,
    stats: StageStats,
}

impl Protocol {
    /// An empty protocol stage with the default congestion control ([`NewReno`]).
    pub fn new() -> Self {
        Self::with_congestion(NewReno)
    }
}

impl<C: CongestionControl> Protocol<C> {
    /// An empty protocol stage whose flows follow the congestion control `cc`.
    pub fn with_congestion(cc: C) -> Self {
        Protocol {
            cc,
            flows: Vec::new(),
            stats: StageStats::default(),
        }
    }

    /// The congestion-control policy.
    pub fn congestion(&self) -> &C {
        &self.cc
    }

    /// Install a flow's state; the congestion control starts from its initial window.
    pub fn install(&mut self, id: FlowId, mut st: TcpState) {
        let i = id as usize;
        if self.flows.len() <= i {
            self.flows.resize(i + 1, None);
        }
        let cf = self.cc.init(st.mss as u32, st.cwnd);
        st.cwnd = self.cc.cwnd(&cf);
        self.flows[i] = Some((st, cf));
    }

    /// Remove a flow.
    pub fn remove(&mut self, id: FlowId) -> Option<TcpState> {
        self.flows
            .get_mut(id as usize)
            .and_then(Option::take)
            .map(|(st, _)| st)
    }

    /// Read a flow's state (control plane and tests).
    pub fn state(&self, id: FlowId) -> Option<&TcpState> {
        self.flows
            .get(id as usize)
            .and_then(Option::as_ref)
            .map(|(st, _)| st)
    }

    /// The rate the congestion control sets for a flow (bytes per second), if any.
    pub fn rate(&self, id: FlowId) -> Option<u64> {
        let (_, cf) = self.flows.get(id as usize)?.as_ref()?;
        self.cc.rate(cf)
    }

    /// Read a flow's congestion-control state.
    pub fn congestion_state(&self, id: FlowId) -> Option<&C::Flow> {
        self.flows
            .get(id as usize)
            .and_then(Option::as_ref)
            .map(|(_, cf)| cf)
    }

    /// Number of installed flows.
    pub fn len(&self) -> usize {
        self.flows.iter().filter(|f| f.is_some()).count()
    }

    /// Count a drop that happened to one of this stage's results downstream of it (a
    /// transmission with no frame for it).
    pub fn count_drop(&mut self, reason: DropReason) {
        self.stats.drops.add(reason);
    }

    /// Whether no flow is installed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Handle one work item.
    pub fn handle(&mut self, now: Instant, work: ProtoWork) -> ProtoResult {
        let flow = work.flow();
        let mut r = ProtoResult {
            flow,
            ..Default::default()
        };
        let (st, cf) = match self.flows.get_mut(flow as usize).and_then(Option::as_mut) {
            Some((st, cf)) => (st, cf),
            None => {
                if let ProtoWork::Rx(w) = work {
                    r.rx_frame = Some(w.frame);
                    self.stats.drops.add(DropReason::StaleFlow);
                }
                return r;
            }
        };
        let cc = &self.cc;
        match work {
            ProtoWork::Rx(w) => {
                if let Some(reason) = st.on_segment(cc, cf, &w.summary, now, &mut r) {
                    self.stats.drops.add(reason);
                }
                r.rx_frame = Some(w.frame);
            }
            ProtoWork::Tx { .. } => st.on_tx(now, &mut r),
            ProtoWork::App { positions, fin, .. } => {
                let (tx_head, rx_tail) = positions.unwrap_or((st.tx_app_end, st.rx_tail));
                st.on_app(now, tx_head, rx_tail, fin, &mut r)
            }
            ProtoWork::Rst { seq, .. } => {
                if let Some(reason) = st.on_rst(now, seq, &mut r) {
                    self.stats.drops.add(reason);
                }
            }
            ProtoWork::Retransmit { .. } => st.on_timeout(cc, cf, &mut r),
            ProtoWork::Probe { .. } => st.on_probe(now, &mut r),
            ProtoWork::Ack { .. } => st.on_ack_request(now, &mut r),
            ProtoWork::Reset { .. } => st.on_reset(now, &mut r),
        }
        r
    }
}

impl Default for Protocol {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: CongestionControl> Stage for Protocol<C> {
    type In = ProtoWork;
    type Out = ProtoResult;

    fn name(&self) -> &'static str {
        "protocol"
    }

    fn process(&mut self, now: Instant, input: &mut Vec<ProtoWork>, output: &mut Vec<ProtoResult>) {
        self.stats.bursts += 1;
        self.stats.items_in += input.len() as u64;
        self.stats.items_out += input.len() as u64;
        for w in input.drain(..) {
            let r = self.handle(now, w);
            output.push(r);
        }
    }

    fn stats(&self) -> &StageStats {
        &self.stats
    }
}
