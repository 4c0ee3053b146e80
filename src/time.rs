//! Engine time: a monotonic microsecond clock that is always passed in, never read by stages.
//!
//! Stages are sans-IO: they receive `now` as an [`Instant`]. Who produces it is up to the
//! runtime: [`SystemClock`] for real traffic, [`crate::sim::VirtualClock`] for deterministic
//! tests and simulations.

use std::ops::{Add, AddAssign, Sub};
use std::time::Duration;

/// A point in engine time, in microseconds since an arbitrary origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The origin of engine time.
    pub const ZERO: Instant = Instant(0);

    /// An instant `us` microseconds after the origin.
    pub const fn from_micros(us: u64) -> Self {
        Instant(us)
    }

    /// An instant `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms * 1000)
    }

    /// Microseconds since the origin.
    pub const fn micros(self) -> u64 {
        self.0
    }

    /// Milliseconds since the origin (truncated).
    pub const fn millis(self) -> u64 {
        self.0 / 1000
    }

    /// The time from `earlier` to `self`, or zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(
            self.0
                .saturating_add(d.as_micros().min(u64::MAX as u128) as u64),
        )
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}

/// Something that tells the time. Runtimes own a clock; stages never do.
pub trait Clock: Send {
    /// The current time.
    fn now(&self) -> Instant;
}

/// Wall-clock time from [`std::time::Instant`], counted from the clock's creation.
#[derive(Clone, Copy, Debug)]
pub struct SystemClock {
    origin: std::time::Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        SystemClock {
            origin: std::time::Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant(self.origin.elapsed().as_micros() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let a = Instant::from_millis(5);
        assert_eq!(a.micros(), 5000);
        assert_eq!((a + Duration::from_micros(7)).micros(), 5007);
        assert_eq!(Instant::ZERO - a, Duration::ZERO);
        assert_eq!(a - Instant::ZERO, Duration::from_millis(5));
    }
}
