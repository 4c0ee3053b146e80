//! An in-process link between two ports, with optional seeded impairments.
//!
//! ```
//! use flextoe::backends::mem::MemLink;
//! use flextoe::sim::Impairments;
//! let (a, b) = MemLink::pair(Impairments::lossy(0.01, 0.01, 0.005, 42));
//! # drop((a, b));
//! ```
//!
//! Each direction is a queue ordered by delivery time. A sent frame is copied once into the
//! link (as a wire would), then lost, duplicated, delayed or held back for reordering as the
//! [`Impairments`] of that direction say. Delivery times come from the sender's clock, so
//! with latency, rate limits or reordering both ends must read the same clock; a perfect link
//! delivers at once. Both ends are [`Port`]s; a [`MemPort`] is also a
//! `smoltcp::phy::Device`, so a smoltcp interface can sit on the other end.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};

use super::Port;
use crate::buf::{Frame, FrameArena};
use crate::sim::{Impairments, Rng};
use crate::time::Instant;
use crate::wire;

/// Counters of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaneStats {
    /// Frames offered to the link.
    pub sent: u64,
    /// Frames delivered to the receiver.
    pub delivered: u64,
    /// Frames lost.
    pub lost: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Frames held back for reordering.
    pub reordered: u64,
    /// Frames dropped because the receiver's arena was full (they stay queued instead).
    pub rx_no_frame: u64,
    /// Frames dropped because the rate-limited queue was full.
    pub overflowed: u64,
    /// Frames marked CE at the queue's ECN threshold.
    pub ce_marked: u64,
    /// The most bytes the rate-limited queue held.
    pub max_queue: u64,
}

/// Bytes per bucket of the queue-length histogram.
const QUEUE_BUCKET: u64 = 1024;

struct Lane {
    queue: BinaryHeap<Reverse<(u64, u64, Vec<u8>)>>,
    imp: Impairments,
    rng: Rng,
    serial: u64,
    /// When the link finishes sending what it holds (nanoseconds).
    busy_until: u64,
    stats: LaneStats,
    pool: Vec<Vec<u8>>,
    /// Queue length each frame found on arrival, in [`QUEUE_BUCKET`] buckets.
    queue_hist: Vec<u64>,
}

impl Lane {
    fn new(imp: Impairments) -> Self {
        Lane {
            queue: BinaryHeap::new(),
            rng: Rng::new(imp.seed),
            imp,
            serial: 0,
            busy_until: 0,
            stats: LaneStats::default(),
            pool: Vec::new(),
            queue_hist: Vec::new(),
        }
    }

    fn buffer(&mut self, data: &[u8]) -> Vec<u8> {
        let mut v = self.pool.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(data);
        v
    }

    fn push_at(&mut self, at: u64, v: Vec<u8>) {
        self.serial += 1;
        self.queue.push(Reverse((at, self.serial, v)));
    }

    /// Bytes waiting for the rate-limited link at `now`.
    fn queued(&self, now: Instant) -> u64 {
        let now_ns = now.micros() * 1000;
        (self.busy_until.saturating_sub(now_ns) as u128 * u128::from(self.imp.rate_bps)
            / 8_000_000_000) as u64
    }

    fn offer(&mut self, now: Instant, data: &[u8]) {
        self.stats.sent += 1;
        if self.imp.is_perfect() {
            // Deliverable at once, whatever the receiver's clock says (the two ends may use
            // clocks with different origins).
            let v = self.buffer(data);
            self.push_at(0, v);
            return;
        }
        if self.rng.chance(self.imp.loss) {
            self.stats.lost += 1;
            return;
        }
        let mut at = now.micros();
        let mut marked = None;
        if self.imp.rate_bps > 0 {
            // What waits for the link ahead of this frame (the link keeps nanoseconds, so
            // that fast links are not rounded to whole microseconds per frame).
            let now_ns = at * 1000;
            let queued = self.queued(now);
            let b = (queued / QUEUE_BUCKET) as usize;
            if self.queue_hist.len() <= b {
                self.queue_hist.resize(b + 1, 0);
            }
            self.queue_hist[b] += 1;
            self.stats.max_queue = self.stats.max_queue.max(queued);
            if self.imp.queue_limit > 0 && queued as usize + data.len() > self.imp.queue_limit {
                self.stats.overflowed += 1;
                return;
            }
            let ect = data.len() > 15
                && data[12..14] == [0x08, 0x00]
                && matches!(data[wire::ETH_HDR + 1] & 3, 1 | 2);
            if self.imp.ecn_threshold > 0 && queued as usize > self.imp.ecn_threshold && ect {
                let mut v = data.to_vec();
                v[wire::ETH_HDR + 1] |= 3;
                wire::fill_checksums(&mut v);
                self.stats.ce_marked += 1;
                marked = Some(v);
            }
            let tx_ns = (data.len() as u64 * 8 * 1_000_000_000).div_ceil(self.imp.rate_bps);
            self.busy_until = self.busy_until.max(now_ns) + tx_ns;
            at = self.busy_until.div_ceil(1000);
        }
        let data = marked.as_deref().unwrap_or(data);
        at += self.imp.latency.as_micros() as u64;
        let copies = if self.rng.chance(self.imp.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut t = at;
            if self.rng.chance(self.imp.reorder) {
                self.stats.reordered += 1;
                t += self.imp.reorder_delay.as_micros() as u64;
            }
            let v = self.buffer(data);
            self.push_at(t, v);
        }
    }

    fn take_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        match self.queue.peek() {
            Some(Reverse((at, _, _))) if *at <= now.micros() => {
                self.stats.delivered += 1;
                self.queue.pop().map(|Reverse((_, _, v))| v)
            }
            _ => None,
        }
    }

    fn next_at(&self) -> Option<Instant> {
        self.queue
            .peek()
            .map(|Reverse((at, _, _))| Instant::from_micros(*at))
    }
}

struct Link {
    lanes: [Lane; 2],
}

/// Constructors for in-memory links.
pub struct MemLink;

impl MemLink {
    /// Two connected ports; both directions get `imp` (the second direction's seed is
    /// offset so the directions differ).
    pub fn pair(imp: Impairments) -> (MemPort, MemPort) {
        let mut back = imp.clone();
        back.seed = imp.seed.wrapping_add(0x5151);
        Self::pair_asymmetric(imp, back)
    }

    /// Two connected ports with separate impairments for `a -> b` and `b -> a`.
    pub fn pair_asymmetric(a_to_b: Impairments, b_to_a: Impairments) -> (MemPort, MemPort) {
        let link = Arc::new(Mutex::new(Link {
            lanes: [Lane::new(a_to_b), Lane::new(b_to_a)],
        }));
        (
            MemPort {
                link: link.clone(),
                side: 0,
            },
            MemPort { link, side: 1 },
        )
    }
}

/// A handle on a link's counters that outlives the ports being moved elsewhere.
#[derive(Clone)]
pub struct LinkStatsHandle {
    link: Arc<Mutex<Link>>,
}

impl LinkStatsHandle {
    /// Counters of both directions (a -> b, b -> a).
    pub fn stats(&self) -> (LaneStats, LaneStats) {
        let g = self.link.lock().unwrap_or_else(|p| p.into_inner());
        (g.lanes[0].stats, g.lanes[1].stats)
    }
}

/// One end of an in-memory link.
pub struct MemPort {
    link: Arc<Mutex<Link>>,
    side: usize,
}

impl MemPort {
    fn with<R>(&self, f: impl FnOnce(&mut Link) -> R) -> R {
        let mut g = self.link.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// A handle on both directions' counters.
    pub fn stats_handle(&self) -> LinkStatsHandle {
        LinkStatsHandle {
            link: self.link.clone(),
        }
    }

    /// The queue length (bytes, to 1 KiB) that fraction `q` of the frames sent from this
    /// end found on arrival at the rate-limited queue (`q` = 0.5: the median).
    pub fn tx_queue_quantile(&self, q: f64) -> u64 {
        self.with(|l| {
            let h = &l.lanes[self.side].queue_hist;
            let total: u64 = h.iter().sum();
            let want = (total as f64 * q).ceil() as u64;
            let mut seen = 0;
            for (i, n) in h.iter().enumerate() {
                seen += n;
                if seen >= want.max(1) {
                    return i as u64 * QUEUE_BUCKET;
                }
            }
            0
        })
    }

    /// Bytes waiting at `now` in the rate-limited queue of the direction this port sends on.
    pub fn tx_queue_bytes(&self, now: Instant) -> u64 {
        self.with(|l| l.lanes[self.side].queued(now))
    }

    /// Forget the queue lengths recorded so far for [`tx_queue_quantile`](Self::tx_queue_quantile)
    /// (to measure after a warm-up).
    pub fn clear_tx_queue_history(&self) {
        self.with(|l| l.lanes[self.side].queue_hist.clear());
    }

    /// Counters of the direction this port sends on.
    pub fn tx_stats(&self) -> LaneStats {
        self.with(|l| l.lanes[self.side].stats)
    }

    /// Counters of the direction this port receives on.
    pub fn rx_stats(&self) -> LaneStats {
        self.with(|l| l.lanes[1 - self.side].stats)
    }

    /// Put a frame on the wire towards this port, bypassing impairments (tests, benches).
    pub fn inject(&self, now: Instant, data: &[u8]) {
        self.with(|l| {
            let lane = &mut l.lanes[1 - self.side];
            let v = lane.buffer(data);
            lane.push_at(now.micros(), v);
        });
    }

    /// Send a frame from this port through the link's impairments.
    pub fn send_bytes(&self, now: Instant, data: &[u8]) {
        self.with(|l| l.lanes[self.side].offer(now, data));
    }

    /// Take one frame that has arrived at this port.
    pub fn recv_bytes(&self, now: Instant) -> Option<Vec<u8>> {
        self.with(|l| l.lanes[1 - self.side].take_due(now))
    }

    /// Frames in flight towards this port.
    pub fn rx_queued(&self) -> usize {
        self.with(|l| l.lanes[1 - self.side].queue.len())
    }
}

impl Port for MemPort {
    fn recv(
        &mut self,
        now: Instant,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        let mut g = self.link.lock().unwrap_or_else(|p| p.into_inner());
        let lane = &mut g.lanes[1 - self.side];
        let mut n = 0;
        while n < max {
            match lane.queue.peek() {
                Some(Reverse((at, _, _))) if *at <= now.micros() => {}
                _ => break,
            }
            let Some(mut f) = arena.alloc() else {
                lane.stats.rx_no_frame += 1;
                break;
            };
            let Some(Reverse((_, _, v))) = lane.queue.pop() else {
                arena.free(f);
                break;
            };
            let buf = arena.buf_mut(&mut f);
            let len = v.len().min(buf.len());
            buf[..len].copy_from_slice(&v[..len]);
            f.set_len(len);
            lane.stats.delivered += 1;
            lane.pool.push(v);
            out.push(f);
            n += 1;
        }
        n
    }

    fn send(&mut self, now: Instant, arena: &FrameArena, frames: &mut Vec<Frame>) -> usize {
        let n = frames.len();
        let mut g = self.link.lock().unwrap_or_else(|p| p.into_inner());
        let lane = &mut g.lanes[self.side];
        for f in frames.drain(..) {
            lane.offer(now, arena.data(&f));
            arena.free(f);
        }
        n
    }

    fn next_arrival(&self) -> Option<Instant> {
        self.with(|l| l.lanes[1 - self.side].next_at())
    }
}

fn to_instant(t: smoltcp::time::Instant) -> Instant {
    Instant::from_micros(t.total_micros().max(0) as u64)
}

/// Receive token for the smoltcp device.
pub struct MemRxToken(Vec<u8>);

/// Transmit token for the smoltcp device.
pub struct MemTxToken<'a> {
    port: &'a MemPort,
    now: Instant,
}

impl phy::RxToken for MemRxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for MemTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.port.send_bytes(self.now, &buf);
        r
    }
}

impl Device for MemPort {
    type RxToken<'a> = MemRxToken;
    type TxToken<'a> = MemTxToken<'a>;

    fn receive(
        &mut self,
        timestamp: smoltcp::time::Instant,
    ) -> Option<(MemRxToken, MemTxToken<'_>)> {
        let now = to_instant(timestamp);
        let data = self.recv_bytes(now)?;
        Some((MemRxToken(data), MemTxToken { port: self, now }))
    }

    fn transmit(&mut self, timestamp: smoltcp::time::Instant) -> Option<MemTxToken<'_>> {
        Some(MemTxToken {
            port: self,
            now: to_instant(timestamp),
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c.max_burst_size = Some(32);
        c
    }
}
