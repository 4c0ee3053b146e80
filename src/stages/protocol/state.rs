//! The per-connection TCP state a protocol stage owns and its flag bits: how it is created,
//! read, and the helpers every handler shares (window offers, headers, the read bell); the
//! handlers for received segments, sends, loss and rare events live in the sibling modules.

use super::*;

pub(super) const F_TXFIN: u32 = 1 << 0;
pub(super) const F_FIN_SENT: u32 = 1 << 1;
pub(super) const F_FIN_ACKED: u32 = 1 << 2;
pub(super) const F_RXFIN: u32 = 1 << 3;
pub(super) const F_TS: u32 = 1 << 4;
pub(super) const F_RECOVERY: u32 = 1 << 5;
pub(super) const F_RST: u32 = 1 << 6;
pub(super) const F_SACK: u32 = 1 << 7;
pub(super) const F_FASTREC: u32 = 1 << 8;
pub(super) const F_TLP: u32 = 1 << 9;
pub(super) const F_RTO_AGAIN: u32 = 1 << 10;
pub(super) const F_APP_CLOSED: u32 = 1 << 11;
pub(super) const F_ECN: u32 = 1 << 12;
/// CE arrived: our ACKs carry ECE until the peer's CWR.
pub(super) const F_ECE: u32 = 1 << 13;
/// The next new data segment carries CWR.
pub(super) const F_CWR_SEND: u32 = 1 << 14;
/// The window was reduced for an ECE; no other reduction until `recover` is acknowledged.
pub(super) const F_ECN_CWR: u32 = 1 << 15;
/// In a fast recovery, a retransmission was acknowledged: every original segment still
/// missing below `recover` was sent before it and is lost (RACK's rule, RFC 8985 6.2).
pub(super) const F_RACK: u32 = 1 << 16;
/// Frozen for a splice: segments are dropped, nothing is sent.
pub(super) const F_FROZEN: u32 = 1 << 17;
/// Going back after a timeout, duplicate ACKs sent the sender back once more: the next such
/// go-back waits until `snd_nxt` is past `rxt_max` (where this one began), so that the
/// duplicate ACKs the go-back's own segments draw do not send it back again.
pub(super) const F_DUP_GOBACK: u32 = 1 << 18;
/// The override timer of sender-side silly-window avoidance went off (RFC 9293 3.8.6.2.1,
/// RFC 1122 4.2.3.4; here the persist timer, as Linux's probe timer): the next segment of
/// new data goes even where it is short. Cleared when new data is sent.
pub(super) const F_SWS_OVERRIDE: u32 = 1 << 19;

/// A `ts_recent` this old (24 days) no longer rejects segments (RFC 7323 section 5.5).
pub(super) const PAWS_IDLE_MS: u64 = 24 * 24 * 3600 * 1000;
/// The least time between two answers of a flow to unacceptable segments that carry
/// nothing, and between two of its challenge ACKs: the limit handshakes keep too
/// ([`OOW_ANSWER_GAP`](crate::control::OOW_ANSWER_GAP), 500 ms), in milliseconds.
pub(super) const OOW_ACK_INTERVAL_MS: u64 = crate::control::OOW_ANSWER_GAP.as_millis() as u64;

/// In a result being built by [`Protocol`]'s burst processing: the header of a coalescable
/// ACK (in-order data) may be left for the burst to write ([`burst`]). Never set on a result
/// that leaves the stage.
pub(super) const HEADER_OWED: u32 = 1 << 31;
const _: () = assert!(HEADER_OWED > Actions::GRANTED, "a bit no action uses");

/// In a result being built by [`Protocol`]'s burst processing under delayed ACKs: the
/// segment ends its flow's run of data segments in the burst, and takes the delayed-ACK
/// decision for the run ([`delack`](super::delack)). Still set when the segment is done, it
/// says the run's ACK waits. Never set on a result that leaves the stage.
pub(super) const ACK_DECIDES: u32 = 1 << 30;
const _: () = assert!(ACK_DECIDES > Actions::GRANTED, "a bit no action uses");

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
    /// Recovery point of the last loss recovery (`snd_max` when it began).
    pub recover: u32,
    /// In a fast recovery, where the next retransmission may start (RFC 6675 HighRxt + 1).
    pub rxt_next: u32,
    /// `snd_max` when a fast recovery last retransmitted: once the peer SACKs data beyond it,
    /// every retransmission before it should have arrived, and a hole still open below
    /// `rxt_next` means a retransmission was lost too. Going back after a timeout: where
    /// the last go-back on duplicate ACKs began.
    pub rxt_max: u32,
    /// What the peer has SACKed above `snd_una`.
    pub scoreboard: Scoreboard,
    /// Our timestamp clock when the fast recovery (or a timeout's go-back-N) began: an ACK
    /// echoing a later value was drawn by a segment sent in the recovery (a
    /// retransmission), not by a late original.
    pub recover_ts: u32,
    /// The congestion control the socket asked for (read when the flow is installed).
    pub congestion: Algorithm,
    /// The rate the control plane set (bytes per second), which overrides the congestion
    /// control's.
    pub control_rate: Option<u64>,
    /// The window the control plane set (bytes; 0 = none), which caps the congestion
    /// control's.
    pub control_window: u32,
    /// The application's latest update while the flow was frozen, applied when it thaws.
    pub frozen_app: Option<FrozenApp>,
    /// Duplicate ACKs in a row.
    pub dupacks: u16,
    /// Payload bytes per segment.
    pub mss: u16,
    /// Shift for windows the peer advertises.
    pub snd_shift: u8,
    /// Shift for windows we advertise.
    pub rcv_shift: u8,
    pub(super) flags: u32,
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
    /// Some interval of `ooo` may be in use (set when one is added, cleared when a merge
    /// empties them): in-order segments skip the scans while it is false.
    pub(super) ooo_used: bool,
    /// Start of the out-of-order segment received last (its interval is the first SACK
    /// block, RFC 2018).
    pub ooo_last: u32,
    /// Rotates the other intervals through the remaining SACK blocks.
    pub sack_turn: u8,
    /// Sequence number of a FIN seen beyond `rcv_nxt`.
    pub rx_fin_seq: Option<u32>,
    /// Timestamp to echo.
    pub ts_recent: u32,
    /// When `ts_recent` was last updated (milliseconds of the engine's clock).
    pub ts_recent_ms: u64,
    /// Added to our clock in the timestamps we send (RFC 7323 5.4).
    pub ts_offset: u32,
    /// When the flow last answered an unacceptable segment that carried nothing, or sent a
    /// challenge ACK (milliseconds of the engine's clock), for the rate limit on those
    /// answers ([`oow_limited`](Self::oow_limited)).
    pub(super) oow_ack_ms: Option<u64>,
    /// The stamp of the flow's last result ([`ProtoResult::stamp`]): its incarnation in the
    /// high byte, the result number in the low 24 bits.
    pub stamp: u32,
    /// The application's end of the receive ring, where the state reads how far it has
    /// read ([`watch_rx`](Self::watch_rx)); none: only its updates say.
    rx_view: Option<RingObserver>,
    /// The advertised right edge (`rcv_adv`) for which `rx_view`'s read bell was last set.
    bell_edge: u32,
    /// `rcv_nxt` as the last segment of ours that this stage sent on acknowledged it: the
    /// data after it counts as unacknowledged for the delayed-ACK decision
    /// ([`AckPolicy::Delayed`](super::AckPolicy::Delayed)). (Postprocess may still fail to
    /// build that segment for want of a frame; it then arms the flow's ACK timer at once.)
    pub(super) delack_seq: u32,
    /// `rcv_nxt` as the last header this stage wrote acknowledged it (RFC 7323's
    /// Last.ACK.sent): a segment that starts after it gives no new `ts_recent`, so that the
    /// timestamp echoed is that of the earliest segment an ACK covers and the peer's round
    /// trip includes the time the ACK waited (section 4.3).
    pub(super) last_ack_sent: u32,
    /// A full-sized segment's payload for that decision: the MSS (at least 1), following
    /// the in-order payloads accepted from one segment (as Linux's receive-MSS estimate):
    /// raised by a larger one at once (a peer whose segments are larger than what this
    /// side sends still gets an ACK every second one), lowered by two in a row of one
    /// smaller size of at least [`DEFAULT_MSS`](super::delack::DEFAULT_MSS) bytes (a peer whose path MTU fell still
    /// gets an ACK every second segment, not every seventh).
    pub(super) delack_full: u32,
    /// The payload of the last in-order segment, for `delack_full`.
    pub(super) delack_last: u32,
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
    /// SACK negotiated (RFC 2018): both sides offered SACK-permitted.
    pub sack: bool,
    /// ECN negotiated (RFC 3168).
    pub ecn: bool,
    /// The congestion control the socket asked for.
    pub congestion: Algorithm,
    /// The flow id's incarnation ([`FlowIdentity::incarnation`](crate::flow::FlowIdentity::incarnation)).
    pub incarnation: u8,
}

/// An application update that arrived while the flow was frozen: ring positions (TX head,
/// RX tail), FIN, closed.
pub type FrozenApp = (Option<(u64, u64)>, bool, bool);

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
            stamp: u32::from(p.incarnation) << 24,
            delack_seq: p.rcv_nxt,
            last_ack_sent: p.rcv_nxt,
            delack_full: u32::from(p.mss.max(1)),
            ..Default::default()
        };
        if p.timestamps {
            st.flags |= F_TS;
        }
        if p.sack {
            st.flags |= F_SACK;
        }
        if p.ecn {
            st.flags |= F_ECN;
        }
        st.congestion = p.congestion;
        st.rcv_adv = st.rcv_nxt.wrapping_add(st.rcv_wnd());
        st
    }

    /// The congestion window in force: the congestion control's, capped by the control
    /// plane's when it set one.
    pub fn window(&self) -> u32 {
        if self.control_window == 0 {
            self.cwnd
        } else {
            self.cwnd.min(self.control_window)
        }
    }

    pub(super) fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    /// Whether the flow answered an unacceptable segment or sent a challenge ACK less than
    /// `OOW_ACK_INTERVAL_MS` before `now` (the answer due now is then not sent); if not,
    /// `now` becomes the time of its last answer. One limit per flow for both kinds, as
    /// Linux's `tcp_oow_rate_limited`: a budget shared by several flows would tell a peer
    /// how many answers the others drew (RFC 5961 section 10, CVE-2016-5696).
    pub(super) fn oow_limited(&mut self, now: Instant) -> bool {
        let now_ms = now.millis();
        if self
            .oow_ack_ms
            .is_some_and(|at| now_ms.saturating_sub(at) < OOW_ACK_INTERVAL_MS)
        {
            return true;
        }
        self.oow_ack_ms = Some(now_ms);
        false
    }

    /// Read how far the application has read from `view`, the receive ring's view, rather
    /// than only from its updates: every window the state advertises counts what was read
    /// up to then, and the application's reads tell the engine only when a window update
    /// becomes due (the ring's read bell, [`RingObserver::set_read_bell`], set to the tail
    /// at which [`on_app`](Self::on_app) would send one). The control plane does this for
    /// every connection it installs.
    pub fn watch_rx(&mut self, view: RingObserver) {
        self.rx_view = Some(view);
        // Not the edge now: the next window advertised sets the bell.
        self.bell_edge = self.rcv_adv.wrapping_sub(1);
    }

    /// Take the application's read position from the ring's view, where there is one.
    #[inline]
    pub(super) fn look_at_rx(&mut self) {
        if let Some(v) = &self.rx_view {
            // The application's end of the ring tells the engine when it goes.
            let t = v.reader_tail();
            if t > self.rx_tail && t <= self.rx_pos {
                self.rx_tail = t;
            }
        }
    }

    /// Set the ring's read bell to the tail at which a read opens the window enough for an
    /// update ([`take_rx_tail`](Self::take_rx_tail)'s test, without its rounding to the
    /// window scale, so it rings early rather than late). Returns `true` where the
    /// application's tail was there already (it may have read before it could see the
    /// bell): the state has taken it and the caller offers the window again.
    #[inline(always)]
    fn ask_read_bell(&mut self) -> bool {
        // Usually the edge did not move: the bell stands. (Where data beyond the edge was
        // taken, the tail due moved up with it; the bell standing lower rings early, which
        // costs a doorbell and loses nothing.)
        if self.rcv_adv == self.bell_edge || self.rx_view.is_none() {
            return false;
        }
        self.bell_edge = self.rcv_adv;
        let offered = self.offered();
        let threshold = self.update_threshold();
        // One byte early: a FIN taken later moves `rcv_nxt` one past `rx_pos` while the
        // edge stands, which lowers the tail due by one.
        let due = (self.rx_pos + u64::from(offered) + u64::from(threshold))
            .saturating_sub(u64::from(self.rx_cap) + 1);
        self.set_read_bell(due)
    }

    #[inline(never)]
    fn set_read_bell(&mut self, due: u64) -> bool {
        let Some(v) = &self.rx_view else {
            return false;
        };
        if due > self.rx_pos {
            // The reader gets there only through bytes published after this store (place
            // publishes what this stage accepted, afterwards), and so sees it: no fence.
            v.set_read_bell_ahead(due);
            return false;
        }
        let t = v.set_read_bell(due);
        if t >= due && t > self.rx_tail && t <= self.rx_pos {
            self.rx_tail = t;
            return true;
        }
        false
    }

    /// The window last advertised, counted from `rcv_nxt` (0 where data reached its edge).
    #[inline]
    pub(super) fn offered(&self) -> u32 {
        if seq::gt(self.rcv_adv, self.rcv_nxt) {
            self.rcv_adv.wrapping_sub(self.rcv_nxt)
        } else {
            0
        }
    }

    /// How far reads must open the window beyond what was advertised for an update of its
    /// own: two segments, or half the ring where that is less (RFC 1122 4.2.3.3).
    #[inline]
    pub(super) fn update_threshold(&self) -> u32 {
        (2 * u32::from(self.mss)).min(self.rx_cap / 2)
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

    pub(super) fn ring_pos(&self, s: u32) -> u64 {
        self.tx_una_pos + s.wrapping_sub(self.snd_una) as u64
    }

    /// Whether a TX grant would send something now.
    #[inline]
    pub fn can_send(&self) -> bool {
        // Nothing queued, no FIN to send, no recovery (most calls): answered in line.
        let unsent = self.unsent();
        if self.has(F_RST) || (unsent == 0 && !self.has(F_TXFIN | F_FASTREC)) {
            return false;
        }
        self.can_send_with(unsent)
    }

    /// [`can_send`](Self::can_send) with `unsent` bytes queued, or a FIN or a recovery
    /// under way.
    #[inline(never)]
    fn can_send_with(&self, unsent: u32) -> bool {
        (unsent > 0 && self.next_len_of(unsent) > 0) || self.fin_due() || self.retransmit_due()
    }

    /// Whether SACK was negotiated.
    pub fn sack(&self) -> bool {
        self.has(F_SACK)
    }

    /// Whether ECN was negotiated.
    pub fn ecn(&self) -> bool {
        self.has(F_ECN)
    }

    /// Whether a fast recovery is under way.
    pub fn in_fast_recovery(&self) -> bool {
        self.has(F_FASTREC)
    }

    /// Right edge of the peer's window: the window counts from the acknowledgment number
    /// of the segment that carried it (`snd_wl2`), not from today's `snd_una`. Counting
    /// from `snd_una` would slide a stale window forward with every ACK that does not update
    /// it and send past what the peer offered.
    pub(super) fn snd_edge(&self) -> u32 {
        self.snd_wl2.wrapping_add(self.snd_wnd)
    }

    pub(super) fn fin_due(&self) -> bool {
        self.has(F_TXFIN) && !self.has(F_FIN_ACKED) && self.snd_nxt == self.data_end_seq()
    }

    /// Window field to advertise, and remember the right edge. The window opens only by a
    /// useful amount: by at least an MSS or half the buffer (receiver-side silly-window
    /// avoidance, RFC 9293 3.8.6.2.2), or by less than a scale unit where the edge already
    /// offered is rounded up to the scale (as Linux aligns it). It does not shrink where the
    /// ring has room for that rounded-up edge; where it has not (the application left the
    /// ring full up to the edge), the scale's rounding down moves the edge left by less than
    /// a scale unit (RFC 7323 2.4), rather than offering room the ring does not have.
    #[inline]
    pub(super) fn advertise(&mut self) -> u16 {
        self.look_at_rx();
        let w = self.offer();
        if self.ask_read_bell() {
            self.offer_again()
        } else {
            w
        }
    }

    /// [`advertise`](Self::advertise) once more, and again while the application's reads
    /// are past each new read bell (each pass moves the edge by at least a step, and the
    /// reads cannot pass what was received: it ends).
    #[cold]
    #[inline(never)]
    fn offer_again(&mut self) -> u16 {
        loop {
            let w = self.offer();
            if !self.ask_read_bell() {
                return w;
            }
        }
    }

    /// [`advertise`](Self::advertise) with what the state knows of the ring.
    #[inline]
    fn offer(&mut self) -> u16 {
        let free = self.rcv_wnd();
        let offered = self.offered().min(free);
        let step = (self.rx_cap / 2).min(self.mss as u32).max(1);
        let target = if free >= offered.saturating_add(step) {
            free
        } else {
            offered
        };
        let mut w = target >> self.rcv_shift;
        if (w << self.rcv_shift) < offered {
            // The edge already offered, rounded down to the scale, would move left: rounded
            // up where the ring has room for it.
            let up = (offered >> self.rcv_shift) + 1;
            if up << self.rcv_shift <= free {
                w = up;
            }
        }
        let w = w.min(u16::MAX as u32);
        let edge = self.rcv_nxt.wrapping_add(w << self.rcv_shift);
        if seq::gt(edge, self.rcv_adv) {
            self.rcv_adv = edge;
        }
        w as u16
    }

    /// Fill `h` with the header of a segment of ours: `fl` (plus ECE while congestion is to
    /// be echoed), sequence number `seq_no`, our ACK, window and timestamps. Written field
    /// by field where it stays (a result's header), not built aside and copied there.
    /// Leaves no SACK blocks.
    #[inline]
    pub(super) fn header_into(
        &mut self,
        now: Instant,
        mut fl: u8,
        seq_no: u32,
        payload_len: u16,
        h: &mut TxHeader,
    ) {
        let win = self.advertise();
        if self.has(F_ECE) && fl & flags::RST == 0 {
            // Congestion was experienced: say so until the peer says it reacted (CWR).
            fl |= flags::ECE;
        }
        h.seq = seq_no;
        h.ack = self.rcv_nxt;
        self.last_ack_sent = self.rcv_nxt;
        h.flags = fl;
        h.win = win;
        h.ts_val = (now.millis() as u32).wrapping_add(self.ts_offset);
        h.ts_ecr = self.ts_recent;
        h.payload_len = payload_len;
        if payload_len > 0 || fl & (flags::SYN | flags::FIN) != 0 {
            // A segment with data, a SYN or a FIN goes: it acknowledges everything.
            self.delack_seq = self.rcv_nxt;
        }
        if !h.sack.is_empty() {
            h.sack = SackBlocks::EMPTY;
        }
        h.ect = false;
    }

    pub(super) fn report_frozen(&mut self, r: &mut ProtoResult) {
        r.actions.set(Actions::FROZEN);
        r.hdr.seq = self.snd_nxt;
        r.hdr.ack = self.rcv_nxt;
        r.hdr.ts_ecr = self.ts_recent;
        // The window last offered, as its field gives it: what the peer may still send.
        let unit = 1u32 << self.rcv_shift.min(14);
        r.hdr.win = self.offered().div_ceil(unit).min(u32::from(u16::MAX)) as u16;
        // Data held past RCV.NXT and SACKed to the peer: a splice would drop it.
        r.hdr.sack = if self.ooo_used && self.ooo.iter().any(|iv| iv.1 != 0) {
            self.sack_blocks()
        } else {
            SackBlocks::EMPTY
        };
    }

    /// [`ack_now_header`](Self::ack_now_header) for a flow frozen for a splice: it offers no
    /// more than it reported at the freeze (the splice takes the peer to send within that
    /// until the other side's first ACK), and leaves the ring's read bell where it was (an
    /// application's read the freeze's window asked for still rings, and its update waits
    /// for the thaw).
    pub(super) fn frozen_ack_header(&mut self, now: Instant, h: &mut TxHeader) {
        let (edge, view) = (self.rcv_adv, self.rx_view.take());
        self.ack_now_header(now, h);
        self.rx_view = view;
        self.rcv_adv = edge;
        // Rounded down, as `offer` rounds where the ring has no room past the edge (the
        // freeze's report rounds up: a bound).
        h.win = (self.offered() >> self.rcv_shift.min(14)).min(u32::from(u16::MAX)) as u16;
    }

    pub(super) fn finish(&mut self, r: &mut ProtoResult) {
        r.in_flight = self.in_flight();
        r.unsent = self.unsent();
        if seq::gt(self.snd_edge(), self.snd_una) && !self.window_holds_back(r.unsent) {
            r.actions.clear(Actions::PEER_WINDOW_ZERO);
        } else {
            r.actions.set(Actions::PEER_WINDOW_ZERO);
        }
        const NUMBER: u32 = (1 << 24) - 1;
        let n = (self.stamp.wrapping_add(1) & NUMBER).max(1);
        self.stamp = self.stamp & !NUMBER | n;
        r.stamp = self.stamp;
        r.cwnd = self.window();
        r.snd_wnd = self.snd_wnd;
    }
}
