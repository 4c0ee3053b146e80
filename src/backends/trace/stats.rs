//! Counters of a [`TracePort`](super::TracePort), and the handle that reads them from another
//! thread.
//!
//! The port counts into plain integers while it works and copies them into atomics once at
//! the end of a `recv` or `send` call that changed any of them, so the per-frame cost of
//! counting is an integer increment and a reader never slows the port down.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

macro_rules! counters {
    ($(#[$sm:meta])* pub struct $name:ident / $shared:ident {
        $($(#[$m:meta])* $field:ident,)*
    }) => {
        $(#[$sm])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            $($(#[$m])* pub $field: u64,)*
        }

        /// The atomic mirror of the counters.
        #[derive(Debug, Default)]
        struct $shared {
            $($field: AtomicU64,)*
        }

        impl $shared {
            fn store(&self, s: &$name) {
                $(self.$field.store(s.$field, Ordering::Relaxed);)*
            }

            fn load(&self) -> $name {
                $name { $($field: self.$field.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// What a [`TracePort`](super::TracePort) counted, over all its connections.
    pub struct TraceStats / SharedTotals {
        /// Frames the port gave the engine (SYNs, ACKs, data segments, probes).
        frames_in,
        /// Frames the engine sent to the port.
        frames_out,
        /// Data segments the port gave the engine, retransmissions included.
        data_frames,
        /// Client payload bytes the port gave the engine, retransmissions included.
        bytes_sent,
        /// Of `bytes_sent`, bytes sent again (`bytes_sent - bytes_retransmitted -
        /// bytes_delivered` are in flight).
        bytes_retransmitted,
        /// Client payload bytes the server acknowledged.
        bytes_delivered,
        /// Server payload bytes received in order (RPC responses).
        response_bytes,
        /// RPC responses received complete.
        responses,
        /// RPC requests sent complete (first transmissions).
        requests,
        /// Connections whose handshake completed.
        handshakes_done,
        /// Connections the server reset.
        resets,
        /// Data segments offered by the open-loop load ([`Mode::OpenLoop`](super::Mode)).
        offered,
        /// Offered data segments that were not injected: the window, the RPC depth or the
        /// engine's burst size had no room for them (`offered - refused` were injected).
        refused,
        /// Times a connection ran into the server's receive window with data to send.
        window_stalls,
        /// Times an RPC connection ran into its depth (requests awaiting responses).
        depth_stalls,
        /// Go-back-N retransmissions (after three duplicate ACKs or a timeout).
        retransmits,
        /// Duplicate ACKs received.
        dup_acks,
        /// Window probes sent (the window stayed closed for a timeout).
        probes,
        /// Pure ACKs sent (handshake, server data, probes excluded).
        pure_acks,
        /// SYNs sent again after a timeout.
        syn_retries,
        /// Server segments whose data was not the next expected (duplicates, gaps).
        out_of_order,
        /// FINs the server sent.
        fins,
        /// Frames the port did not expect: not IPv4/TCP, not for one of its connections,
        /// malformed, acknowledging data never sent, a SYN out of place.
        unexpected,
        /// Frames the port could not allocate from the engine's arena.
        alloc_failures,
    }
}

/// Where a connection of a [`TracePort`](super::TracePort) stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConnPhase {
    /// No SYN sent yet.
    #[default]
    Idle,
    /// SYN sent, no SYN-ACK yet.
    SynSent,
    /// SYN-ACK received: the connection is (or, once the final ACK is out, will be)
    /// established.
    Established,
    /// The server reset the connection; it sends nothing more.
    Reset,
}

impl ConnPhase {
    fn to_u8(self) -> u8 {
        match self {
            ConnPhase::Idle => 0,
            ConnPhase::SynSent => 1,
            ConnPhase::Established => 2,
            ConnPhase::Reset => 3,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => ConnPhase::SynSent,
            2 => ConnPhase::Established,
            3 => ConnPhase::Reset,
            _ => ConnPhase::Idle,
        }
    }
}

/// What one connection of a [`TracePort`](super::TracePort) counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnTrace {
    /// The client's (the port's) TCP port of this connection.
    pub client_port: u16,
    /// Where the connection stands.
    pub phase: ConnPhase,
    /// Client payload bytes the server acknowledged.
    pub bytes_delivered: u64,
    /// Server payload bytes received in order.
    pub response_bytes: u64,
    /// RPC responses received complete.
    pub responses: u64,
}

#[derive(Debug, Default)]
struct SharedConn {
    phase: AtomicU8,
    bytes_delivered: AtomicU64,
    response_bytes: AtomicU64,
    responses: AtomicU64,
}

#[derive(Debug)]
pub(super) struct Shared {
    totals: SharedTotals,
    conns: Vec<(u16, SharedConn)>,
    paused: AtomicBool,
}

impl Shared {
    pub(super) fn new(ports: impl Iterator<Item = u16>) -> Self {
        Shared {
            totals: SharedTotals::default(),
            conns: ports.map(|p| (p, SharedConn::default())).collect(),
            paused: AtomicBool::new(false),
        }
    }

    pub(super) fn store_totals(&self, s: &TraceStats) {
        self.totals.store(s);
    }

    pub(super) fn store_conn(&self, i: usize, c: &ConnTrace) {
        if let Some((_, s)) = self.conns.get(i) {
            s.phase.store(c.phase.to_u8(), Ordering::Relaxed);
            s.bytes_delivered
                .store(c.bytes_delivered, Ordering::Relaxed);
            s.response_bytes.store(c.response_bytes, Ordering::Relaxed);
            s.responses.store(c.responses, Ordering::Relaxed);
        }
    }

    pub(super) fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }
}

/// Reads a [`TracePort`](super::TracePort)'s counters and pauses its load from any thread,
/// while an engine (inline or threaded) owns the port. Cheap to clone.
///
/// The port publishes its counters at the end of every `recv` or `send` call that changed
/// them; a snapshot is a consistent view of each counter, not of all of them at one instant.
#[derive(Clone, Debug)]
pub struct TraceStatsHandle {
    pub(super) shared: Arc<Shared>,
}

impl TraceStatsHandle {
    /// The totals as last published.
    pub fn snapshot(&self) -> TraceStats {
        self.shared.totals.load()
    }

    /// Each connection's counters as last published, in connection order.
    pub fn connections(&self) -> Vec<ConnTrace> {
        self.shared
            .conns
            .iter()
            .map(|(port, s)| ConnTrace {
                client_port: *port,
                phase: ConnPhase::from_u8(s.phase.load(Ordering::Relaxed)),
                bytes_delivered: s.bytes_delivered.load(Ordering::Relaxed),
                response_bytes: s.response_bytes.load(Ordering::Relaxed),
                responses: s.responses.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Stop offering new load: connections not yet opened send no SYN, open ones finish
    /// the RPC request they are in the middle of, still retransmit, acknowledge and answer,
    /// but start nothing new. Lets a measurement drain to a quiet state (every request
    /// answered) before it compares counters, or hold the port until a listener exists.
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::Relaxed);
    }

    /// Offer data again after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::Relaxed);
    }

    /// Whether the load is paused.
    pub fn is_paused(&self) -> bool {
        self.shared.paused()
    }
}
