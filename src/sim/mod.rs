//! Deterministic simulation: a virtual clock, a seeded random generator, the link
//! impairments the in-memory backend applies (loss, reordering, duplication, delay, rate, a
//! finite queue with ECN marking), a [`Switch`] that joins many engines into a fabric, and
//! [`fabric`]: scenarios of many senders through one bottleneck, measured over time.

pub mod fabric;
mod switch;
pub use switch::Switch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::time::{Clock, Instant};

/// A clock that moves only when told to. Clones share the same time.
#[derive(Clone, Debug, Default)]
pub struct VirtualClock {
    us: Arc<AtomicU64>,
}

impl VirtualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Move forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.us.fetch_add(d.as_micros() as u64, Ordering::SeqCst);
    }

    /// Jump to `t` if it is later than now.
    pub fn advance_to(&self, t: Instant) {
        self.us.fetch_max(t.micros(), Ordering::SeqCst);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Instant {
        Instant::from_micros(self.us.load(Ordering::SeqCst))
    }
}

/// A small, fast, seeded generator (SplitMix64). Not for cryptography.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }

    /// A value in `[0, n)` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// What a link does to frames, per direction.
#[derive(Clone, Debug, PartialEq)]
pub struct Impairments {
    /// Probability that a frame is lost.
    pub loss: f64,
    /// Probability that a frame is held back by `reorder_delay` (so later frames pass it).
    pub reorder: f64,
    /// Extra delay of a reordered frame.
    pub reorder_delay: Duration,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// One-way latency.
    pub latency: Duration,
    /// Link rate in bits per second (0 = unlimited). Frames wait in a FIFO queue for the link.
    pub rate_bps: u64,
    /// With a rate: the queue's size in bytes; a frame that does not fit is dropped (tail
    /// drop). 0 = unlimited.
    pub queue_limit: usize,
    /// With a rate: ECN-capable frames (ECT) that arrive with more than this many bytes
    /// queued are marked CE, as a data-center switch marks at threshold K. 0 = never.
    pub ecn_threshold: usize,
    /// Seed of the generator.
    pub seed: u64,
}

impl Default for Impairments {
    fn default() -> Self {
        Impairments {
            loss: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_micros(50),
            duplicate: 0.0,
            latency: Duration::ZERO,
            rate_bps: 0,
            queue_limit: 0,
            ecn_threshold: 0,
            seed: 1,
        }
    }
}

impl Impairments {
    /// A perfect link.
    pub fn none() -> Self {
        Self::default()
    }

    /// A lossy link: `loss`, `reorder` and `duplicate` probabilities with a seed.
    pub fn lossy(loss: f64, reorder: f64, duplicate: f64, seed: u64) -> Self {
        Impairments {
            loss,
            reorder,
            duplicate,
            seed,
            ..Self::default()
        }
    }

    /// Whether the link alters anything.
    pub fn is_perfect(&self) -> bool {
        self.loss == 0.0
            && self.reorder == 0.0
            && self.duplicate == 0.0
            && self.latency.is_zero()
            && self.rate_bps == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_seeded_and_roughly_uniform() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let hits = (0..100_000).filter(|_| a.chance(0.01)).count();
        assert!((700..1300).contains(&hits), "{hits}");
    }

    #[test]
    fn virtual_clock_is_shared() {
        let c = VirtualClock::new();
        let d = c.clone();
        c.advance(Duration::from_millis(3));
        assert_eq!(d.now(), Instant::from_millis(3));
        d.advance_to(Instant::from_millis(2));
        assert_eq!(c.now(), Instant::from_millis(3));
    }
}
