//! A token bucket for replies the engine rate-limits (RFC 5961 challenge ACKs, RSTs to
//! segments that match nothing).

use crate::time::Instant;

/// A token bucket: at most `per_sec` events a second, in bursts of up to `per_sec`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RateLimit {
    per_sec: u32,
    tokens: u32,
    last: Instant,
}

impl RateLimit {
    pub(crate) fn new(per_sec: u32) -> Self {
        RateLimit {
            per_sec,
            tokens: per_sec,
            last: Instant::ZERO,
        }
    }

    fn refill(&mut self, now: Instant) {
        let us = now.saturating_since(self.last).as_micros() as u64;
        let add = us.saturating_mul(u64::from(self.per_sec)) / 1_000_000;
        if add > 0 {
            // Below `per_sec`, a u32.
            self.tokens = (u64::from(self.tokens) + add).min(u64::from(self.per_sec)) as u32;
            self.last = now;
        }
    }

    /// Spend a token if there is one (always, with `per_sec` of `u32::MAX`: no limit).
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        if self.per_sec == u32::MAX {
            return true;
        }
        self.refill(now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}
