//! Flows: the table that maps a 4-tuple to a flow id, and the per-flow state split by owner.
//!
//! | part | owner | who reads it |
//! |---|---|---|
//! | [`FlowIdentity`] (addresses, header template, window scales) | control plane, fixed at setup | preprocess, postprocess |
//! | `TcpState` (sequence space, windows, out-of-order intervals) | the protocol stage of the flow's group, alone | nobody else |
//! | [`FlowCounters`] (atomics) | postprocess adds | control plane (timeouts, RTT), statistics |
//!
//! The control plane installs a flow in every stage when a connection is established and
//! removes it from every stage when the connection ends: no table entry outlives its
//! connection.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::wire::{FourTuple, HeaderTemplate, MacAddr};

/// A flow's index in every per-flow table.
pub type FlowId = u32;

/// The flow group (and so the protocol core) an engine whose
/// [`ControlConfig::isn_secret`](crate::control::ControlConfig::isn_secret) is `key` gives the
/// connection `t` (as the engine sees it: local address first): a keyed hash of the tuple,
/// so that a peer choosing its ports cannot put its connections on one group.
/// `groups` must be a power of two.
pub fn flow_group(key: [u64; 2], t: &FourTuple, groups: u16) -> u16 {
    crate::control::secrets::Secrets::new(key).flow_group(t, groups)
}

/// A fast, non-cryptographic hasher for 4-tuples (multiply-rotate, as in FxHash), for
/// tables whose keys no peer chooses: a peer can pick keys that share a bucket (see
/// [`SeededTuples`], which tables of peers' keys use).
#[derive(Clone, Copy, Debug, Default)]
pub struct TupleHasher(u64);

impl Hasher for TupleHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.add(*b as u64);
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.add(v as u64);
    }
    fn write_u16(&mut self, v: u16) {
        self.add(v as u64);
    }
    fn write_u32(&mut self, v: u32) {
        self.add(v as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }
    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }
}

impl TupleHasher {
    #[inline]
    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Builds hashers for tables whose keys any peer inserts at will (a firewall's or a
/// classifier's connection table, filled by frames of no connection), keyed by two secret
/// words drawn from the operating system for each builder: every word written is mixed in
/// by a folded multiply (the high and low halves of the 128-bit product, XORed) by the
/// secret odd multiplier, and the total goes through MurmurHash3's finalizer. A peer who
/// does not know the seed cannot pick keys that share a bucket, as it can against the plain
/// [`TupleHasher`]: there the bucket (the low bits) is a function of the last field's low
/// bits, and a flipped top bit of one word (`x ^ 2^63 = x + 2^63`, times an odd constant,
/// rotated) cancels against a flipped bit of the next whatever the starting state.
#[derive(Clone, Copy, Debug)]
pub struct SeededTuples([u64; 2]);

impl SeededTuples {
    /// A builder with fresh random keys.
    pub fn new() -> Self {
        let [a, b] = crate::control::secrets::os_random();
        SeededTuples([a, b | 1])
    }
}

impl Default for SeededTuples {
    /// [`SeededTuples::new`]: every table its own keys.
    fn default() -> Self {
        Self::new()
    }
}

impl BuildHasher for SeededTuples {
    type Hasher = SeededTupleHasher;
    fn build_hasher(&self) -> SeededTupleHasher {
        SeededTupleHasher {
            h: self.0[0],
            mul: self.0[1],
        }
    }
}

/// The hasher of [`SeededTuples`].
#[derive(Clone, Copy, Debug)]
pub struct SeededTupleHasher {
    h: u64,
    mul: u64,
}

impl SeededTupleHasher {
    #[inline]
    fn step(&mut self, v: u64) {
        let p = u128::from(self.h ^ v) * u128::from(self.mul);
        self.h = (p as u64) ^ ((p >> 64) as u64);
    }
}

impl Hasher for SeededTupleHasher {
    fn finish(&self) -> u64 {
        let mut h = self.h;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        // Eight bytes a word; the length tells a short last word from zeroes.
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.step(u64::from_le_bytes(w) ^ ((c.len() as u64) << 56));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.step(u64::from(v));
    }
    fn write_u16(&mut self, v: u16) {
        self.step(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.step(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.step(v);
    }
    fn write_usize(&mut self, v: usize) {
        self.step(v as u64);
    }
}

/// 4-tuple -> flow id, hashed with keys of its own ([`SeededTuples`]): a peer opens
/// connections from ports of its choosing, and under the plain [`TupleHasher`] it could put
/// them all in one bucket, so that every lookup of the data path (its own segments', other
/// flows', stray ones') walked their chain. The keyed hash costs about 1.5 ns a lookup more
/// (measured on 4096 flows, release build).
#[derive(Clone, Debug, Default)]
pub struct FlowTable {
    map: HashMap<FourTuple, FlowId, SeededTuples>,
}

impl FlowTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace an entry.
    pub fn insert(&mut self, t: FourTuple, id: FlowId) {
        self.map.insert(t, id);
    }

    /// Find a flow.
    pub fn lookup(&self, t: &FourTuple) -> Option<FlowId> {
        self.map.get(t).copied()
    }

    /// Remove an entry; returns the id it had.
    pub fn remove(&mut self, t: &FourTuple) -> Option<FlowId> {
        self.map.remove(t)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Read-only facts about a flow, fixed when it is installed.
#[derive(Clone, Debug)]
pub struct FlowIdentity {
    /// The flow id.
    pub id: FlowId,
    /// Addresses and ports.
    pub tuple: FourTuple,
    /// Our MAC.
    pub local_mac: MacAddr,
    /// The peer's (or next hop's) MAC.
    pub remote_mac: MacAddr,
    /// Flow group.
    pub group: u16,
    /// Header template for data segments and ACKs.
    pub template: HeaderTemplate,
    /// Timestamps negotiated.
    pub timestamps: bool,
    /// Shift applied to windows we advertise.
    pub rcv_wscale: u8,
    /// Shift applied to windows the peer advertises.
    pub snd_wscale: u8,
    /// Payload bytes per segment we send.
    pub mss: u16,
    /// The flow's traffic class, from the engine's [`Classifier`] (0 without one): a
    /// scheduler may weight or prioritise by it
    /// ([`Pacer::with_classes`](crate::stages::pacer::Pacer::with_classes)).
    pub class: u8,
    /// Which use of the flow id this is (1 to 255, one more each time the control plane
    /// gives the id to a new connection, wrapping past 0). The protocol stage's results
    /// carry it ([`ProtoResult::stamp`](crate::stages::ProtoResult::stamp)), so a stage
    /// downstream that runs behind (the threaded runtime's placement) recognizes a result of
    /// the id's previous connection and drops it instead of applying it to this one; and
    /// preprocess puts it in each segment's summary
    /// ([`SegmentSummary::incarnation`](crate::wire::SegmentSummary::incarnation)), so the
    /// protocol stage drops a segment of the previous connection still on its way.
    pub incarnation: u8,
}

/// Maps a new connection to a traffic class (`ControlConfig::classifier`), read by the
/// schedulers when the flow is installed.
///
/// ```
/// use flextoe::flow::Classifier;
/// use flextoe::wire::FourTuple;
///
/// // Class 0 for the key-value port, class 1 for everything else.
/// let c = Classifier::new(|t: &FourTuple| u8::from(t.local_port != 11211));
/// let t = FourTuple {
///     local_ip: "10.0.0.1".parse().unwrap(),
///     local_port: 11211,
///     remote_ip: "10.0.0.2".parse().unwrap(),
///     remote_port: 40000,
/// };
/// assert_eq!(c.class(&t), 0);
/// ```
#[derive(Clone)]
pub struct Classifier(Arc<dyn Fn(&FourTuple) -> u8 + Send + Sync>);

impl Classifier {
    /// A classifier from a function of the connection's addresses and ports.
    pub fn new(f: impl Fn(&FourTuple) -> u8 + Send + Sync + 'static) -> Self {
        Classifier(Arc::new(f))
    }

    /// The class of a connection.
    pub fn class(&self, t: &FourTuple) -> u8 {
        (self.0)(t)
    }
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Classifier(..)")
    }
}

/// Bits of [`FlowCounters::rtt`] that hold the sum.
const RTT_SUM_BITS: u32 = 48;
const RTT_SUM_MASK: u64 = (1 << RTT_SUM_BITS) - 1;

/// Per-flow counters, written by the data path with relaxed atomics and read by the control
/// plane (timeouts, RTT) and by statistics.
#[derive(Debug, Default)]
pub struct FlowCounters {
    /// Segments received on the data path.
    pub rx_segments: AtomicU64,
    /// Payload bytes delivered in order to the application ring.
    pub rx_bytes: AtomicU64,
    /// Segments sent (data and ACKs).
    pub tx_segments: AtomicU64,
    /// Payload bytes sent (retransmissions included).
    pub tx_bytes: AtomicU64,
    /// Bytes newly acknowledged by the peer.
    pub acked_bytes: AtomicU64,
    /// Acknowledged bytes on ACKs carrying ECE.
    pub ecn_bytes: AtomicU64,
    /// Duplicate ACKs seen.
    pub dup_acks: AtomicU64,
    /// Fast recoveries entered (duplicate ACKs, SACK evidence, an answered tail probe).
    pub fast_retransmits: AtomicU64,
    /// Segments a fast recovery retransmitted (SACK holes, partial ACKs).
    pub recovery_retransmits: AtomicU64,
    /// Tail-loss probes sent.
    pub tail_probes: AtomicU64,
    /// Go-back-N after a retransmission timeout.
    pub timeout_retransmits: AtomicU64,
    /// Out-of-order segments kept.
    pub ooo_segments: AtomicU64,
    /// RTT samples, count and sum in one word so that a reader never sees a count without
    /// its sum: `count << 48 | sum_us`, both wrapping (see [`add_rtt`](Self::add_rtt) and
    /// [`rtt_since`](Self::rtt_since)).
    pub rtt: AtomicU64,
    /// The flow's send state after the last result published: `stamp << 32 | in_flight`
    /// (see [`in_flight`](Self::in_flight) and [`publish_send_state`](Self::publish_send_state)).
    flight: AtomicU64,
    /// `stamp << 32 | zero_window << 31 | unsent`.
    queued: AtomicU64,
    /// When a delayed ACK is due ([`AckPolicy::Delayed`](crate::stages::protocol::AckPolicy)):
    /// microseconds of the engine's clock plus one, 0 when none is pending. Postprocess sets
    /// and clears it; the control plane's timers send the ACK when it is due.
    pub ack_due: AtomicU64,
    /// When the data path last counted newly acknowledged bytes (microseconds of the
    /// engine's clock).
    pub last_ack_us: AtomicU64,
    /// When the data path last counted a received segment (microseconds).
    pub last_rx_us: AtomicU64,
    /// The control plane's timers have set this flow aside: nothing was in flight, queued
    /// or due at their last look, and they look again only when told
    /// ([`arm_timers`](Self::arm_timers)) or at the flow's next deadline.
    timer_parked: AtomicBool,
    /// Where [`arm_timers`](Self::arm_timers) tells them, set once by the control plane.
    timer_wake: std::sync::OnceLock<(FlowId, crossbeam_channel::Sender<FlowId>)>,
}

/// The `unsent` bits of [`FlowCounters`]' send-state word.
const UNSENT_MASK: u64 = (1 << 31) - 1;
/// The zero-window bit of that word.
const ZERO_WINDOW: u64 = 1 << 31;

impl FlowCounters {
    /// A fresh set of counters, shared.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Connect the flow to the control plane's timers (once; later calls do nothing).
    pub(crate) fn set_timer_wake(&self, id: FlowId, tx: crossbeam_channel::Sender<FlowId>) {
        let _ = self.timer_wake.set((id, tx));
    }

    /// The timers set the flow aside (`true`) or take it back (`false`). After setting it
    /// aside they must look at the counters once more: a data path that armed the flow
    /// meanwhile either sees the flag or has its counters seen (both sides fence).
    pub(crate) fn park_timers(&self, parked: bool) -> bool {
        let was = self.timer_parked.swap(parked, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        was
    }

    /// The data path published state a timer must watch (data in flight or queued, a
    /// delayed ACK): wake the control plane's timers for this flow if
    /// they had set it aside. Call after storing the counters.
    #[inline]
    pub fn arm_timers(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.arm_timers_in_order();
    }

    /// [`arm_timers`](Self::arm_timers) for a data path that runs on the control plane's
    /// thread (the inline runtime): its stores and the timers' look at them are in program
    /// order, so no fence is needed.
    #[inline(always)]
    pub(crate) fn arm_timers_in_order(&self) {
        // Timers not set aside (nearly always): one load, in line.
        if self.timer_parked.load(Ordering::Relaxed) {
            self.wake_timers();
        }
    }

    /// The timers were set aside: take them back, and wake the control plane for them.
    #[cold]
    #[inline(never)]
    fn wake_timers(&self) {
        if self.timer_parked.swap(false, Ordering::SeqCst) {
            if let Some((id, tx)) = self.timer_wake.get() {
                // The receiver lives as long as the control plane; after it is gone
                // nobody times anything.
                let _ = tx.send(*id);
            }
        }
    }

    /// Sequence space sent but not acknowledged after the last result published (bytes, a
    /// FIN counts one).
    #[inline]
    pub fn in_flight(&self) -> u64 {
        self.flight.load(Ordering::Relaxed) & u64::from(u32::MAX)
    }

    /// Bytes the application has queued that were not yet sent, after the last result
    /// published.
    #[inline]
    pub fn unsent(&self) -> u64 {
        self.queued.load(Ordering::Relaxed) & UNSENT_MASK
    }

    /// Whether the peer advertised a zero window, after the last result published, or a
    /// window too small to send into with nothing in flight (silly-window avoidance holds
    /// the queue back): the persist timer's case.
    #[inline]
    pub fn peer_window_zero(&self) -> bool {
        self.queued.load(Ordering::Relaxed) & ZERO_WINDOW != 0
    }

    /// Publish a flow's send state as of the protocol stage's result numbered `stamp`
    /// ([`ProtoResult::stamp`](crate::stages::ProtoResult::stamp)). With `ordered` (the
    /// caller is the flow's one writer and sees its results in order) the words are
    /// stored; otherwise, as for postprocess replicas that take a flow's bursts in turn and
    /// may finish them out of order, each word is replaced only by a newer stamp (wrapping
    /// order), so an older state never overwrites a newer one. Stamp 0 publishes nothing.
    /// `unsent` saturates at 2^31 - 1.
    #[inline]
    pub fn publish_send_state(
        &self,
        stamp: u32,
        in_flight: u32,
        unsent: u32,
        zero: bool,
        ordered: bool,
    ) {
        if stamp == 0 {
            return;
        }
        let hi = u64::from(stamp) << 32;
        let flight = hi | u64::from(in_flight);
        let queued = hi | u64::from(unsent).min(UNSENT_MASK) | if zero { ZERO_WINDOW } else { 0 };
        if ordered {
            self.flight.store(flight, Ordering::Relaxed);
            self.queued.store(queued, Ordering::Relaxed);
            return;
        }
        for (word, v) in [(&self.flight, flight), (&self.queued, queued)] {
            let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                // Result numbers are the stamps' low 24 bits (one connection's stamps share
                // their high byte).
                let newer = (stamp.wrapping_sub((old >> 32) as u32) << 8) as i32 > 0;
                (newer || old >> 32 == 0).then_some(v)
            });
        }
    }

    /// Relaxed add.
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Add for a counter with one writer (a load and a store, no locked instruction);
    /// readers still see whole values.
    #[inline]
    pub(crate) fn add_sole(c: &AtomicU64, n: u64) {
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Relaxed load.
    #[inline]
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Add `n` RTT samples summing to `sum_us` (once per burst and flow): one atomic add.
    #[inline]
    pub fn add_rtt(&self, sum_us: u64, n: u64) {
        self.rtt
            .fetch_add(Self::rtt_word(sum_us, n), Ordering::Relaxed);
    }

    /// [`add_rtt`](Self::add_rtt) for the counters' one writer ([`add_sole`](Self::add_sole)).
    #[inline]
    pub(crate) fn add_rtt_sole(&self, sum_us: u64, n: u64) {
        Self::add_sole(&self.rtt, Self::rtt_word(sum_us, n));
    }

    #[inline]
    fn rtt_word(sum_us: u64, n: u64) -> u64 {
        (n << RTT_SUM_BITS).wrapping_add(sum_us & RTT_SUM_MASK)
    }

    /// The RTT word now, to pass to [`rtt_since`](Self::rtt_since) later.
    #[inline]
    pub fn rtt_mark(&self) -> u64 {
        self.rtt.load(Ordering::Relaxed)
    }

    /// The samples added since `mark` (an earlier [`rtt_mark`](Self::rtt_mark)): (sum in
    /// microseconds, count), and the new mark. Exact while fewer than 65,536 samples and
    /// less than 2^48 us of RTT arrive between two reads.
    #[inline]
    pub fn rtt_since(&self, mark: u64) -> ((u64, u64), u64) {
        let now = self.rtt_mark();
        let d = now.wrapping_sub(mark);
        ((d & RTT_SUM_MASK, d >> RTT_SUM_BITS), now)
    }
}

/// Retransmission totals over all flows, summed by the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetransmitTotals {
    /// Fast recoveries entered (duplicate ACKs, SACK evidence, an answered tail probe).
    pub fast: u64,
    /// Segments fast recoveries retransmitted (SACK holes, partial ACKs).
    pub recovery: u64,
    /// Tail-loss probes sent (RFC 8985).
    pub tail_probes: u64,
    /// Go-back-N after a retransmission timeout.
    pub timeout: u64,
}

impl RetransmitTotals {
    /// Add a flow's counters.
    pub fn add(&mut self, c: &FlowCounters) {
        self.fast += FlowCounters::get(&c.fast_retransmits);
        self.recovery += FlowCounters::get(&c.recovery_retransmits);
        self.tail_probes += FlowCounters::get(&c.tail_probes);
        self.timeout += FlowCounters::get(&c.timeout_retransmits);
    }
}

/// A flow identity for unit tests: 10.0.0.1:80 to 10.0.0.2:(1000 + id), no timestamps.
#[cfg(test)]
pub(crate) fn test_identity(id: FlowId, mss: u16) -> Arc<FlowIdentity> {
    let t = FourTuple {
        local_ip: std::net::Ipv4Addr::new(10, 0, 0, 1),
        local_port: 80,
        remote_ip: std::net::Ipv4Addr::new(10, 0, 0, 2),
        remote_port: 1000 + id as u16,
    };
    let mac = MacAddr([2, 0, 0, 0, 0, 1]);
    Arc::new(FlowIdentity {
        id,
        tuple: t,
        local_mac: mac,
        remote_mac: mac,
        group: 0,
        template: HeaderTemplate::new(mac, mac, &t, false),
        timestamps: false,
        rcv_wscale: 0,
        snd_wscale: 0,
        mss,
        class: 0,
        incarnation: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasherDefault;
    use std::net::Ipv4Addr;

    #[test]
    fn table_insert_lookup_remove() {
        let t = FourTuple {
            local_ip: Ipv4Addr::new(1, 2, 3, 4),
            local_port: 80,
            remote_ip: Ipv4Addr::new(5, 6, 7, 8),
            remote_port: 5000,
        };
        let mut ft = FlowTable::new();
        ft.insert(t, 3);
        assert_eq!(ft.lookup(&t), Some(3));
        assert_eq!(ft.remove(&t), Some(3));
        assert!(ft.is_empty());
    }

    /// Keys a peer picks so that the plain hasher puts them all in one bucket of a
    /// 4096-bucket table (a port found by trial for each source, a firewall's key) spread
    /// over the buckets under a seeded builder, as random keys would.
    #[test]
    fn keys_that_share_a_bucket_under_the_plain_hasher_spread_under_a_seeded_one() {
        type Key = (Ipv4Addr, u16, Ipv4Addr, u16);
        const MASK: u64 = 4095;
        let plain = BuildHasherDefault::<TupleHasher>::default();
        let dst = Ipv4Addr::new(10, 0, 0, 1);
        let mut keys: Vec<Key> = Vec::new();
        for i in 0..600u32 {
            let src = Ipv4Addr::from(0xc000_0200 + i);
            let port = (0..=u16::MAX)
                .find(|&p| plain.hash_one((src, 4000u16, dst, p)) & MASK == 7)
                .expect("a port lands in bucket 7");
            keys.push((src, 4000, dst, port));
        }
        let buckets = |b: &dyn Fn(&Key) -> u64| {
            let mut seen: Vec<u64> = keys.iter().map(|k| b(k) & MASK).collect();
            seen.sort_unstable();
            seen.dedup();
            seen.len()
        };
        assert_eq!(buckets(&|k| plain.hash_one(k)), 1);
        for _ in 0..2 {
            let seeded = SeededTuples::new();
            // 600 random keys over 4096 buckets: about 560 distinct.
            let n = buckets(&|k| seeded.hash_one(k));
            assert!(n > 500, "{n} buckets");
        }
        // Each builder its own seed: what one table's hashes reveal says nothing of another's.
        let k = keys[0];
        assert_ne!(
            SeededTuples::new().hash_one(k),
            SeededTuples::new().hash_one(k)
        );
    }

    /// The flow table's keys are a peer's choice (its ports): connections whose tuples
    /// share a bucket under the plain hasher (one remote address, ports whose low 12 bits
    /// agree) spread over the table's buckets, under keys of the table's own.
    #[test]
    fn the_flow_table_spreads_ports_that_share_a_bucket_under_the_plain_hasher() {
        const MASK: u64 = 4095;
        let plain = BuildHasherDefault::<TupleHasher>::default();
        let keys: Vec<FourTuple> = (0..15u16)
            .map(|i| FourTuple {
                local_ip: Ipv4Addr::new(10, 0, 0, 1),
                local_port: 80,
                remote_ip: Ipv4Addr::new(192, 0, 2, 7),
                remote_port: 7 + (i << 12),
            })
            .collect();
        let buckets = |h: &dyn Fn(&FourTuple) -> u64| {
            let mut b: Vec<u64> = keys.iter().map(|k| h(k) & MASK).collect();
            b.sort_unstable();
            b.dedup();
            b.len()
        };
        assert_eq!(buckets(&|k| plain.hash_one(k)), 1, "one bucket there");
        let ft = FlowTable::new();
        // 15 random keys over 4096 buckets: all apart, bar a rare pair.
        assert!(buckets(&|k| ft.map.hasher().hash_one(k)) >= 13);
    }

    /// A connection's tuple with the top bit of its local address and bit 4 of its remote
    /// port flipped: under a multiply-rotate step the two flips cancel whatever the starting
    /// state (the same full hash under every seed); the seeded hasher tells them apart.
    #[test]
    fn flips_that_cancel_under_multiply_rotate_do_not_under_the_seeded_hasher() {
        let a = FourTuple {
            local_ip: Ipv4Addr::new(10, 0, 0, 1),
            local_port: 80,
            remote_ip: Ipv4Addr::new(192, 0, 2, 7),
            remote_port: 4000,
        };
        let b = FourTuple {
            local_ip: Ipv4Addr::from(u32::from(a.local_ip) ^ 0x8000_0000),
            remote_port: a.remote_port ^ 16,
            ..a
        };
        let plain = BuildHasherDefault::<TupleHasher>::default();
        assert_eq!(plain.hash_one(a), plain.hash_one(b), "they cancel there");
        for _ in 0..4 {
            let seeded = SeededTuples::new();
            assert_ne!(seeded.hash_one(a), seeded.hash_one(b));
        }
    }
}
