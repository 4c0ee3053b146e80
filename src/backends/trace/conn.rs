//! One client connection of a [`TracePort`](super::TracePort): its state as stream offsets
//! and its recovery.

use super::stats::{ConnPhase, ConnTrace};
use super::template::{Templates, PHASES};
use crate::time::Instant;

/// Why a connection stopped sending in the last `recv` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Block {
    /// Not blocked.
    None,
    /// The server's receive window.
    Window,
    /// RPC requests awaiting responses.
    Depth,
    /// The load is paused.
    Paused,
    /// One segment until the server acknowledges data.
    FirstAck,
}

/// One client connection.
#[derive(Debug)]
pub(super) struct Conn {
    /// The client's TCP port.
    pub(super) port: u16,
    /// The client's initial sequence number.
    pub(super) isn: u32,
    /// Where the connection stands.
    pub(super) phase: ConnPhase,
    /// When the last SYN went out.
    pub(super) syn_at: Instant,
    /// A pure ACK is owed (final handshake ACK, duplicate or out-of-order server data).
    pub(super) ack_due: bool,
    /// The server's initial sequence number.
    pub(super) irs: u32,
    /// The server's window scale.
    pub(super) shift: u8,
    // Send side, as stream offsets (offset 0 is sequence number `isn + 1`).
    /// The first byte not acknowledged.
    pub(super) una: u64,
    /// The next byte to send.
    pub(super) nxt: u64,
    /// One past the highest byte ever sent (a segment boundary).
    pub(super) max: u64,
    /// Right edge of the server's receive window.
    pub(super) right: u64,
    /// `nxt` modulo the unit length, and modulo 251.
    pub(super) nxt_q: u64,
    pub(super) nxt_phase: usize,
    /// Duplicate ACKs in a row.
    pub(super) dup: u8,
    /// A recovery is under way until `una` reaches this offset.
    pub(super) recover: u64,
    /// A segment to send again before new data (fast retransmit).
    pub(super) rexmit: Option<u64>,
    /// Last time the send side moved (ACK, window change, timeout handled).
    pub(super) progress_at: Instant,
    /// What stopped the last `recv` call's sending (a new stall is counted on a change).
    pub(super) blocked: Block,
    // Receive side.
    /// The next server sequence number expected.
    pub(super) rcv_nxt: u32,
    /// The acknowledgment number last sent.
    pub(super) acked: u32,
    /// Server payload bytes received in order.
    pub(super) rcv_bytes: u64,
    /// RPC responses received complete.
    pub(super) responses: u64,
    /// Client payload bytes the server acknowledged.
    pub(super) bytes_delivered: u64,
    /// Counters changed since the last publication.
    pub(super) dirty: bool,
}

impl Conn {
    /// A connection from client port `port` with initial sequence number `isn`.
    pub(super) fn new(port: u16, isn: u32) -> Self {
        Conn {
            port,
            isn,
            phase: ConnPhase::Idle,
            syn_at: Instant::ZERO,
            ack_due: false,
            irs: 0,
            shift: 0,
            una: 0,
            nxt: 0,
            max: 0,
            right: 0,
            nxt_q: 0,
            nxt_phase: 0,
            dup: 0,
            recover: 0,
            rexmit: None,
            progress_at: Instant::ZERO,
            blocked: Block::None,
            rcv_nxt: 0,
            acked: 0,
            rcv_bytes: 0,
            responses: 0,
            bytes_delivered: 0,
            dirty: true,
        }
    }

    /// The sequence number of stream offset `off`.
    pub(super) fn seq_of(&self, off: u64) -> u32 {
        self.isn.wrapping_add(1).wrapping_add(off as u32)
    }

    /// After a timeout: send everything from the first unacknowledged segment again
    /// (go-back-N). Duplicate ACKs are not counted until the server acknowledged all that
    /// was outstanding, so the duplicates this resend provokes start no recovery.
    pub(super) fn go_back(&mut self, tpl: &Templates) {
        self.recover = self.max;
        self.rexmit = None;
        self.seek(self.una, tpl);
    }

    /// After three duplicate ACKs: send the first unacknowledged segment again, and the
    /// next one on each partial ACK until everything outstanding now is acknowledged
    /// (NewReno's recovery, RFC 6582, with no congestion window).
    pub(super) fn fast_retransmit(&mut self, tpl: &Templates) {
        self.recover = self.max;
        self.rexmit = Some(segment_start(self.una, tpl));
        self.dup = 0;
    }

    /// Continue sending from the segment boundary at or before `off`.
    pub(super) fn seek(&mut self, off: u64, tpl: &Templates) {
        let q = off % tpl.unit();
        let start = q / tpl.seg() * tpl.seg();
        self.nxt = off - q + start;
        self.nxt_q = start;
        self.nxt_phase = (self.nxt % PHASES as u64) as usize;
        self.dup = 0;
    }

    /// The connection's counters.
    pub(super) fn trace(&self) -> ConnTrace {
        ConnTrace {
            client_port: self.port,
            phase: self.phase,
            bytes_delivered: self.bytes_delivered,
            response_bytes: self.rcv_bytes,
            responses: self.responses,
        }
    }
}

/// The start of the segment that holds stream offset `off`.
pub(super) fn segment_start(off: u64, tpl: &Templates) -> u64 {
    let q = off % tpl.unit();
    off - q % tpl.seg()
}

/// The RPC parameters, when the workload is RPC.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rpc {
    /// Response bytes per request.
    pub(super) response: u64,
    /// `Some(depth)` in the closed loop.
    pub(super) depth: Option<u64>,
}
