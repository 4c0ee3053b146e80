//! Counters: why frames were dropped, and what each stage did.

use std::fmt;

macro_rules! drop_reasons {
    ($($(#[$m:meta])* $name:ident => $label:literal,)*) => {
        /// Why the data path (or the control plane) dropped a frame or a work item.
        ///
        /// Every drop is counted under exactly one reason; nothing is dropped silently.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason { $($(#[$m])* $name,)* }

        impl DropReason {
            /// All reasons, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            /// Number of reasons.
            pub const COUNT: usize = [$(DropReason::$name,)*].len();
            /// Short stable name for reports.
            pub fn label(self) -> &'static str {
                match self { $(DropReason::$name => $label,)* }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than the headers it claims.
    Truncated => "truncated",
    /// Neither IPv4 nor ARP.
    UnsupportedEthertype => "unsupported-ethertype",
    /// Not addressed to this engine's MAC or IP address.
    NotForUs => "not-for-us",
    /// IPv4 header malformed (version, header length, total length).
    BadIpHeader => "bad-ip-header",
    /// IPv4 header checksum wrong.
    BadIpChecksum => "bad-ip-checksum",
    /// IPv4 fragment (the engine does not reassemble).
    Fragment => "ip-fragment",
    /// IPv4 but neither TCP nor ICMP.
    NotTcp => "not-tcp",
    /// TCP header malformed (data offset, ports, flag combination).
    BadTcpHeader => "bad-tcp-header",
    /// TCP checksum wrong.
    BadTcpChecksum => "bad-tcp-checksum",
    /// TCP options malformed.
    BadTcpOptions => "bad-tcp-options",
    /// ARP packet malformed or not Ethernet/IPv4.
    BadArp => "bad-arp",
    /// Segment for a flow that the data path no longer knows, or of an earlier connection
    /// whose flow id another one has now (its incarnation is not the flow's).
    StaleFlow => "stale-flow",
    /// Segment without the ACK flag on an established connection.
    NoAck => "no-ack",
    /// Segment outside the receive window (answered with an ACK).
    OutOfWindow => "out-of-window",
    /// Segment whose data the receiver already has, all of it below RCV.NXT (a
    /// retransmission; answered with an ACK).
    Duplicate => "duplicate",
    /// ACK for data never sent (answered with an ACK).
    AckTooNew => "ack-too-new",
    /// ACK older than the oldest data the peer could still be acknowledging (below
    /// SND.UNA - MAX.SND.WND, RFC 5961 section 5): dropped with its data, answered with an
    /// ACK.
    AckTooOld => "ack-too-old",
    /// Out-of-order segment that did not fit the out-of-order intervals.
    OooNoRoom => "ooo-no-room",
    /// Data after the peer's FIN.
    DataAfterFin => "data-after-fin",
    /// Data after the application closed the connection: answered with a RST.
    DataAfterClose => "data-after-close",
    /// A timestamp older than the last in-order one (PAWS, RFC 7323 section 5.3): an old
    /// duplicate, answered with an ACK.
    Paws => "paws",
    /// A FIN at another place than the first FIN of the connection (ignored).
    FinMismatch => "fin-mismatch",
    /// A RST reply, a challenge ACK or an answer to an unacceptable segment that carried
    /// nothing not sent: over the rate limit (RFC 5961 section 7).
    RateLimited => "rate-limited",
    /// No free frame in the arena.
    NoFrame => "no-frame",
    /// A queue was full.
    QueueFull => "queue-full",
    /// Control plane: segment for no connection and no listener (answered with RST).
    NoConnection => "no-connection",
    /// Control plane: SYN for a listener whose backlog is full.
    BacklogFull => "backlog-full",
    /// Control plane: SYN refused (with a RST) because every flow of the table is taken,
    /// counting handshakes in progress.
    FlowTableFull => "flow-table-full",
    /// Control plane: RST that did not match the expected sequence number.
    BadRst => "bad-rst",
    /// Control plane: segment that is invalid in the connection's handshake state.
    BadHandshake => "bad-handshake",
    /// Control plane: a segment of no connection, or an ICMP echo request, from a source
    /// address no connection can have (broadcast, multicast, unspecified, loopback,
    /// reserved: RFC 1122 section 3.2.1.3; our own address), dropped unanswered.
    MartianSource => "martian-source",
    /// Control plane: a user stage punted a segment of an established connection, which the
    /// control plane does not process (see the stage's own counters).
    Extension => "extension",
    /// A segment of a connection frozen while it is handed to a splice (its sender
    /// retransmits it, and the splice relays it).
    Frozen => "frozen",
    /// Control plane: an ICMP message shorter than its header, or with a wrong checksum.
    BadIcmp => "bad-icmp",
    /// Control plane: an ICMP message other than an echo request without IP options, a
    /// destination unreachable (codes 0 to 15) or a time exceeded (codes 0 and 1) (the
    /// engine answers pings, lowers a connection's MSS to its path's MTU, ends a handshake
    /// the path cannot carry, and acts on nothing else of ICMP).
    IcmpIgnored => "icmp-ignored",
    /// An ICMP error about no connection of ours, or about a segment that is not in flight
    /// (in a handshake: not the one with our ISS; RFC 5927 section 4.1: it may be forged),
    /// or one the connection does not act on (about a peer's half-open connection, any but
    /// network or host unreachable and time exceeded), ignored.
    IcmpStale => "icmp-stale",
    /// A frame whose Ethernet source address (or an ARP packet whose sender hardware
    /// address) is a group (broadcast, multicast) or all-zero address: no station sends
    /// from one, and answers to it would go to every station of the link.
    BadSourceMac => "bad-source-mac",
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Drop counters, one per [`DropReason`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::COUNT]);

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters([0; DropReason::COUNT])
    }
}

impl DropCounters {
    /// Count one drop.
    pub fn add(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }

    /// Drops counted for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Add another set of counters to this one.
    pub fn merge(&mut self, other: &DropCounters) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    /// The non-zero counters.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (*r, self.get(*r)))
            .filter(|(_, n)| *n > 0)
    }
}

impl fmt::Display for DropCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (r, n) in self.nonzero() {
            if !first {
                f.write_str(" ")?;
            }
            write!(f, "{}={}", r, n)?;
            first = false;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// What a stage did: items in, items out, drops by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageStats {
    /// Items taken.
    pub items_in: u64,
    /// Items emitted.
    pub items_out: u64,
    /// Bursts processed.
    pub bursts: u64,
    /// Items dropped, by reason.
    pub drops: DropCounters,
}

impl fmt::Display for StageStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "in={} out={} bursts={} drops: {}",
            self.items_in, self.items_out, self.bursts, self.drops
        )
    }
}
