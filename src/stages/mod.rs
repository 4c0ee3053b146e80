//! The data-path stages and the items that flow between them.
//!
//! ```text
//! RX:  port -> preprocess -> protocol -> place -> notify -> postprocess -> port
//!                 |                                  \-> app / control plane
//!                 \-> punt -> control plane
//! TX:  app doorbell / scheduler -> protocol -> place -> notify -> postprocess -> port
//! ```
//!
//! Stages come in two kinds, and neither reads a clock, sleeps, owns a socket or spawns a
//! thread (`now` is passed in):
//!
//! * stages that turn one kind of item into another implement [`Stage`] (a burst of inputs
//!   in, outputs appended): [`preprocess::Preprocess`] (frames into segments or punts),
//!   [`protocol::Protocol`] (work into results), [`scheduler::RoundRobin`] (flows into
//!   grants);
//! * stages that work in place on a burst implement the hook interface
//!   ([`Hook`](crate::pipeline::Hook), one call per burst, a verdict per item), exactly as an
//!   integrator's own stages do: [`place::Place`], [`postprocess::Postprocess`] and
//!   [`notify::Notify`] work on the protocol stage's results. The runtimes call them
//!   through it (statically; see [`pipeline`](crate::pipeline#the-data-path)).
//!
//! Only [`protocol::Protocol`] writes TCP state; it is a pure function of (work item, segment
//! summary, state) that returns a [`ProtoResult`] with [`Actions`] flags, and the stages
//! downstream carry the flags out: copy payload, build headers, notify.

pub mod ext;
pub mod notify;
pub mod pacer;
pub mod place;
pub mod postprocess;
pub mod preprocess;
pub mod protocol;
pub mod recovery;
pub mod scheduler;
pub mod wheel;

use crate::buf::Frame;
use crate::flow::FlowId;
use crate::stats::StageStats;
use crate::time::Instant;
use crate::wire::{SegmentSummary, TxHeader};

/// Default burst size.
pub const BURST: usize = 32;

/// A data-path stage that turns one kind of item into another: a burst of inputs in,
/// outputs appended. (Stages that work in place implement [`Hook`](crate::pipeline::Hook).)
///
/// Implementations drain `input` and push to `output`. They must not block. Stage objects are
/// `Send`, so a runtime may move each to its own thread.
pub trait Stage: Send {
    /// Item type taken.
    type In;
    /// Item type emitted.
    type Out;
    /// Name for statistics.
    fn name(&self) -> &'static str;
    /// Process one burst.
    fn process(&mut self, now: Instant, input: &mut Vec<Self::In>, output: &mut Vec<Self::Out>);
    /// Counters so far.
    fn stats(&self) -> &StageStats;
}

/// A received segment of a known flow, on its way to the protocol stage.
#[derive(Debug)]
pub struct RxWork {
    /// The flow.
    pub flow: FlowId,
    /// The segment, summarized.
    pub summary: SegmentSummary,
    /// The frame holding the payload.
    pub frame: Frame,
}

const _: () = assert!(std::mem::size_of::<RxWork>() == 32);
// In a preprocess replica's stream to a flow group, the run tags fit beside it.
const _: () = assert!(std::mem::size_of::<crate::reorder::Ingress<RxWork>>() == 32);

/// Why preprocess handed a frame to the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PuntReason {
    /// ARP.
    Arp,
    /// SYN flag.
    Syn,
    /// RST flag, for a connection the data path does not have (the control plane's: in
    /// its handshake, or not yet installed on the data path).
    Rst,
    /// No flow for the 4-tuple.
    UnknownFlow,
    /// A user stage at a hook point asked for it ([`Verdict::Punt`](crate::pipeline::Verdict::Punt)).
    Extension,
    /// An ICMP packet for this engine (the control plane answers echo requests).
    Icmp,
}

/// A frame the data path does not handle.
#[derive(Debug)]
pub struct Punt {
    /// The frame.
    pub frame: Frame,
    /// Why.
    pub reason: PuntReason,
}

/// Output of preprocess.
///
/// With an explicit tag: left to the compiler, the tag went into a niche of [`RxWork`], and
/// the inline engine's test of it mispredicted once per segment (cachegrind's branch
/// simulation; 3-5 ns a segment on the receive bench).
#[derive(Debug)]
#[repr(u8)]
pub enum PreOut {
    /// For the protocol stage.
    Rx(RxWork),
    /// For the control plane.
    Punt(Punt),
}

/// Work for the protocol stage.
///
/// Work the control plane or the application makes for a connection names it by its flow
/// id and the id's incarnation
/// ([`FlowIdentity::incarnation`](crate::flow::FlowIdentity::incarnation)): a runtime may
/// deliver it after the connection is gone and its id given to another (the threaded
/// runtime's installs and removals travel apart from this work), and the protocol stage
/// drops work of another incarnation than the flow's connection's, as it drops such
/// segments (`DropReason::StaleFlow`). 0 is not checked.
#[derive(Debug)]
pub enum ProtoWork {
    /// A received segment.
    Rx(RxWork),
    /// The scheduler grants one segment's worth of transmission.
    Tx {
        /// The flow.
        flow: FlowId,
    },
    /// The application moved its ring positions (sent data, read data, closed).
    App {
        /// The flow.
        flow: FlowId,
        /// (end of the data the application queued for sending = TX ring head, how far the
        /// application has read = RX ring tail). `None` until the stage that owns the
        /// flow's rings fills it in ([`place::Place::fill_positions`]).
        positions: Option<(u64, u64)>,
        /// The application will send no more.
        fin: bool,
        /// The application closed the connection (the stream, or both its halves): it will
        /// read no more, and new data from the peer is answered with a RST.
        closed: bool,
        /// The connection this is for (see [`ProtoWork`]).
        incarnation: u8,
    },
    /// A RST the control plane saw first (preprocess punted it: its flow was not on the
    /// data path yet); the protocol stage checks it against the window (RFC 5961 3.2):
    /// exact match resets, in-window draws a challenge ACK. (A RST of a flow on the data
    /// path comes as [`ProtoWork::Rx`], in order among the flow's segments.)
    Rst {
        /// The flow.
        flow: FlowId,
        /// The RST's sequence number.
        seq: u32,
        /// Whether a challenge ACK may answer it (the control plane sets it; the flow's own
        /// limit and the stage's budget across flows apply besides).
        challenge: bool,
        /// The RST frame's arrival number in the threaded runtime (0 on the inline engine,
        /// which handles it in order anyway): its flow group holds it until every segment
        /// numbered below it has been through the protocol stage.
        ingress: u64,
        /// The connection this is for (see [`ProtoWork`]).
        incarnation: u8,
    },
    /// Retransmission timeout: go back to the oldest unacknowledged byte.
    Retransmit {
        /// The flow.
        flow: FlowId,
        /// The connection this is for (see [`ProtoWork`]).
        incarnation: u8,
    },
    /// Zero-window probe.
    Probe {
        /// The flow.
        flow: FlowId,
        /// The connection this is for (see [`ProtoWork`]).
        incarnation: u8,
    },
    /// Tail-loss probe (RFC 8985): the ACKs stopped with data in flight.
    TailProbe {
        /// The flow.
        flow: FlowId,
        /// The connection this is for (see [`ProtoWork`]).
        incarnation: u8,
    },
    /// Send an ACK now (keep the peer informed).
    Ack {
        /// The flow.
        flow: FlowId,
        /// The connection this is for (see [`ProtoWork`]).
        incarnation: u8,
    },
    /// A SYN arrived on the synchronized connection (RFC 5961 4.2): a challenge ACK, unless
    /// the flow sent one (or answered an unacceptable segment) in the last 500 ms.
    Challenge {
        /// The flow.
        flow: FlowId,
        /// The connection this is for (see [`ProtoWork`]).
        incarnation: u8,
    },
    /// Send a RST and stop.
    Reset {
        /// The flow.
        flow: FlowId,
        /// The connection this is for (see [`ProtoWork`]).
        incarnation: u8,
    },
    /// Freeze the flow for a splice: from now on it drops segments, sends nothing and
    /// ignores the application; the result (`Actions::FROZEN`) reports its sequence numbers.
    Freeze {
        /// The flow.
        flow: FlowId,
        /// The connection this is for (see [`ProtoWork`]).
        incarnation: u8,
    },
    /// Undo [`ProtoWork::Freeze`] (the splice did not happen).
    Thaw {
        /// The flow.
        flow: FlowId,
        /// The connection this is for (see [`ProtoWork`]).
        incarnation: u8,
    },
    /// A router could not forward one of the flow's segments unfragmented (ICMP
    /// "fragmentation needed", RFC 1191): segments from now on carry at most `mss` bytes
    /// (less options), if that is smaller, and what is in flight goes again at that size.
    PathMtu {
        /// The flow.
        flow: FlowId,
        /// The largest segment payload (options included) the path takes.
        mss: u16,
        /// The quoted segment's sequence number: it must be in flight.
        seq: u32,
        /// The connection this is for (see [`ProtoWork`]).
        incarnation: u8,
    },
    /// The control plane computed a rate for the flow, and perhaps a window
    /// ([`ControlRates`](crate::control::rates::ControlRates)): the rate overrides the
    /// congestion control's own and goes to the flow scheduler; the window caps the
    /// congestion control's.
    SetRate {
        /// The flow.
        flow: FlowId,
        /// Bytes per second (`None` clears it).
        bytes_per_sec: Option<u64>,
        /// Most bytes in flight (`None`: no cap).
        window: Option<u32>,
        /// The connection this is for (see [`ProtoWork`]).
        incarnation: u8,
    },
}

impl ProtoWork {
    /// The flow this item is for.
    pub fn flow(&self) -> FlowId {
        match self {
            ProtoWork::Rx(w) => w.flow,
            ProtoWork::Tx { flow }
            | ProtoWork::App { flow, .. }
            | ProtoWork::Rst { flow, .. }
            | ProtoWork::Retransmit { flow, .. }
            | ProtoWork::Probe { flow, .. }
            | ProtoWork::TailProbe { flow, .. }
            | ProtoWork::Ack { flow, .. }
            | ProtoWork::Challenge { flow, .. }
            | ProtoWork::Reset { flow, .. }
            | ProtoWork::Freeze { flow, .. }
            | ProtoWork::Thaw { flow, .. }
            | ProtoWork::SetRate { flow, .. }
            | ProtoWork::PathMtu { flow, .. } => *flow,
        }
    }

    /// The incarnation of the flow id this item is for (see [`ProtoWork`]), 0 where not
    /// checked: a segment's is in its summary and checked with it, a grant is made for
    /// the flow's connection as it is.
    #[inline]
    pub fn incarnation(&self) -> u8 {
        match self {
            ProtoWork::Rx(_) | ProtoWork::Tx { .. } => 0,
            ProtoWork::App { incarnation, .. }
            | ProtoWork::Rst { incarnation, .. }
            | ProtoWork::Retransmit { incarnation, .. }
            | ProtoWork::Probe { incarnation, .. }
            | ProtoWork::TailProbe { incarnation, .. }
            | ProtoWork::Ack { incarnation, .. }
            | ProtoWork::Challenge { incarnation, .. }
            | ProtoWork::Reset { incarnation, .. }
            | ProtoWork::Freeze { incarnation, .. }
            | ProtoWork::Thaw { incarnation, .. }
            | ProtoWork::SetRate { incarnation, .. }
            | ProtoWork::PathMtu { incarnation, .. } => *incarnation,
        }
    }
}

/// What the protocol stage asks the downstream stages to do (FlexTOE's `WORK_RESULT_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actions(pub u32);

impl Actions {
    /// Send a segment with header `hdr` (data when `FETCH_PAYLOAD`, else an ACK/control
    /// segment). May be coalesced with later ACKs of the same flow in the burst.
    pub const TX: u32 = 1 << 0;
    /// Send the ACK now, never coalesce it (out-of-order data, FIN, window update).
    pub const ACK_NOW: u32 = 1 << 1;
    /// Copy the received payload into the RX ring.
    pub const PLACE_PAYLOAD: u32 = 1 << 2;
    /// Copy payload from the TX ring into the outgoing frame.
    pub const FETCH_PAYLOAD: u32 = 1 << 3;
    /// Publish the RX ring up to `rx_publish`.
    pub const PUBLISH_RX: u32 = 1 << 4;
    /// Release the TX ring up to `tx_release` (the peer acknowledged it).
    pub const RELEASE_TX: u32 = 1 << 5;
    /// Tell the application something changed.
    pub const NOTIFY_APP: u32 = 1 << 6;
    /// A fast recovery began (duplicate ACKs, SACK evidence, an answered tail-loss probe).
    pub const FAST_RETRANSMIT: u32 = 1 << 7;
    /// Go-back-N after a timeout.
    pub const TIMEOUT_RETRANSMIT: u32 = 1 << 8;
    /// The peer's FIN was consumed in order.
    pub const FIN_RX: u32 = 1 << 9;
    /// Our FIN was acknowledged.
    pub const FIN_ACKED: u32 = 1 << 10;
    /// We sent our FIN (first time).
    pub const FIN_TX: u32 = 1 << 11;
    /// The flow may have more to send: (re)activate it in the scheduler. After the
    /// `results` stages ran, the runtime clears it on a result that a later result of the
    /// same flow in the burst settles (see [`GRANTED`](Self::GRANTED)): the scheduler is
    /// activated from a flow's last request or grant of the burst only.
    pub const SCHED: u32 = 1 << 12;
    /// Received CE: echo ECE.
    pub const ECE: u32 = 1 << 13;
    /// The peer echoed ECE.
    pub const ECN_ECHOED: u32 = 1 << 14;
    /// An RTT sample is in `rtt_us`.
    pub const RTT_SAMPLE: u32 = 1 << 15;
    /// A RST was sent; the flow is finished.
    pub const RST_TX: u32 = 1 << 16;
    /// A duplicate ACK was counted.
    pub const DUP_ACK: u32 = 1 << 17;
    /// An out-of-order segment was kept.
    pub const OOO: u32 = 1 << 18;
    /// The ACK advanced `snd_una`.
    pub const ACKED: u32 = 1 << 19;
    /// An acceptable RST arrived; the flow is finished.
    pub const RST_RX: u32 = 1 << 20;
    /// A challenge ACK was sent (RFC 5961).
    pub const CHALLENGE_ACK: u32 = 1 << 21;
    /// A fast recovery retransmitted a segment (a SACK hole or, without SACK, the segment a
    /// partial ACK points at).
    pub const RECOVERY_RETRANSMIT: u32 = 1 << 22;
    /// A tail-loss probe was sent.
    pub const TAIL_PROBE: u32 = 1 << 23;
    /// The result is a received segment's (counted as received even when it is dropped).
    pub const RECEIVED: u32 = 1 << 24;
    /// The flow's rate changed (the control plane set one): the scheduler hears of it.
    pub const RATE: u32 = 1 << 25;
    /// The flow froze for a splice: the result's `hdr.seq` is SND.NXT, `hdr.ack` RCV.NXT,
    /// `in_flight` what is not acknowledged.
    pub const FROZEN: u32 = 1 << 26;
    /// The segment to send lies below SND.UNA (a zero-window probe or a keep-alive): the
    /// peer answers it without reading its ACK field, so it carries no acknowledgment for
    /// postprocess's ACK coalescing.
    pub const WINDOW_PROBE: u32 = 1 << 27;
    /// The peer's window is zero after this item (its right edge is not beyond SND.UNA),
    /// or too small for silly-window avoidance to send into with nothing in flight: either
    /// way the control plane's persist timer runs.
    pub const PEER_WINDOW_ZERO: u32 = 1 << 28;
    /// The result answers a transmission grant ([`ProtoWork::Tx`]), or is an application
    /// update that sent the flow's first segment itself (see
    /// [`Protocol::set_direct_sends`](crate::stages::protocol::Protocol::set_direct_sends)): its `SCHED` says
    /// whether the flow still has something to send after it, so an earlier result of the
    /// same flow in the burst that asked for a grant is settled by it (the grants it asked
    /// for may be the very ones in flight).
    pub const GRANTED: u32 = 1 << 29;

    /// Whether any bit of `bits` is set.
    #[inline]
    pub fn any(self, bits: u32) -> bool {
        self.0 & bits != 0
    }

    /// Set bits.
    ///
    /// (`set` and `clear` write the whole word. With constant bits the compiler would
    /// otherwise write just the byte they fall in, and the next read of the word, often a
    /// few instructions later, would wait for that store to reach the cache: a CPU forwards
    /// a store in flight only to a load it covers.)
    #[inline]
    pub fn set(&mut self, bits: u32) {
        self.0 |= std::hint::black_box(bits);
    }

    /// Clear bits.
    #[inline]
    pub fn clear(&mut self, bits: u32) {
        self.0 &= !std::hint::black_box(bits);
    }

    /// Whether nothing is to be done.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

const _: () = assert!(std::mem::size_of::<ProtoResult>() == 136);

/// Where payload moves: between `frame_off` in a frame and `ring_pos` in a connection ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PayloadOp {
    /// Position in the ring (free-running).
    pub ring_pos: u64,
    /// Offset in the frame.
    pub frame_off: u16,
    /// Bytes.
    pub len: u16,
    /// The folded one's-complement sum ([`Sum::fold`](crate::wire::checksum::Sum::fold)) of
    /// transmit payload, which placement computes as it copies the payload into the frame
    /// (the bytes are in the cache then), so that the TCP checksum reads only the headers.
    /// `[0, 0]`: not known (the checksum reads the payload). Nothing may change the
    /// payload of a frame between placement and its checksum.
    pub sum: [u8; 2],
}

/// The protocol stage's verdict on one work item; carries everything downstream stages need.
#[derive(Debug, Default)]
pub struct ProtoResult {
    /// The flow.
    pub flow: FlowId,
    /// What to do.
    pub actions: Actions,
    /// The received frame (freed by place).
    pub rx_frame: Option<Frame>,
    /// The frame to send (allocated by postprocess).
    pub tx_frame: Option<Frame>,
    /// Header snapshot for the segment to send.
    pub hdr: TxHeader,
    /// Payload movement.
    pub payload: PayloadOp,
    /// New RX ring head (with `PUBLISH_RX`).
    pub rx_publish: u64,
    /// New TX ring tail (with `RELEASE_TX`).
    pub tx_release: u64,
    /// Bytes newly acknowledged.
    pub acked: u32,
    /// RTT sample (with `RTT_SAMPLE`), microseconds.
    pub rtt_us: u32,
    /// Sequence space in flight after this item.
    pub in_flight: u32,
    /// Application bytes queued but not sent after this item.
    pub unsent: u32,
    /// Which connection and which of its results this is: the flow id's incarnation
    /// ([`FlowIdentity::incarnation`](crate::flow::FlowIdentity::incarnation)) in bits 31-24,
    /// and in bits 23-0 a number one more than the flow's previous result's (wrapping past
    /// 0 to 1). 0 for a result of no flow. Placement drops a result of another incarnation
    /// (the id's previous connection), and postprocess replicas that finish a flow's
    /// results out of order publish its send state only from a newer one
    /// ([`FlowCounters::publish_send_state`](crate::flow::FlowCounters::publish_send_state)).
    pub stamp: u32,
    /// The congestion window in force after this item (bytes).
    pub cwnd: u32,
    /// The peer's window after this item (bytes, scaled).
    pub snd_wnd: u32,
}

impl ProtoResult {
    /// The in-order payload the result delivered, for the delayed-ACK count: its placed
    /// bytes when it published the receive ring (at least 1), else 0.
    #[inline]
    pub(crate) fn in_order_bytes(&self) -> u32 {
        if self.actions.any(Actions::PUBLISH_RX) {
            u32::from(self.payload.len).max(1)
        } else {
            0
        }
    }
}
