//! A hierarchical timing wheel (Varghese and Lauck): three levels of 256 slots whose ticks
//! are 1.024 us, 262 us and 67 ms, and an overflow list beyond 17 s. Inserting is O(1);
//! advancing costs O(1) per tick that holds entries, and skips empty stretches a level at a
//! time. Entries come out at the first tick at or after their time, never before.

/// Nanoseconds per level-0 tick: 2^10.
const TICK_SHIFT: u32 = 10;
const SLOT_BITS: u32 = 8;
const SLOTS: u64 = 1 << SLOT_BITS;

/// A timing wheel of `T` values. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct TimingWheel<T> {
    /// Per level: slots of (expiry tick, value).
    levels: [Vec<Vec<(u64, T)>>; 3],
    counts: [usize; 3],
    overflow: Vec<(u64, T)>,
    /// The tick the wheel has been run to.
    cur: u64,
}

impl<T> Default for TimingWheel<T> {
    fn default() -> Self {
        TimingWheel {
            levels: std::array::from_fn(|_| (0..SLOTS).map(|_| Vec::new()).collect()),
            counts: [0; 3],
            overflow: Vec::new(),
            cur: 0,
        }
    }
}

impl<T> TimingWheel<T> {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.counts.iter().sum::<usize>() + self.overflow.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn place(&mut self, tick: u64, v: T) {
        let delta = tick.saturating_sub(self.cur);
        for level in 0..3 {
            let span = SLOTS << (SLOT_BITS * level as u32);
            if delta < span {
                let slot = ((tick >> (SLOT_BITS * level as u32)) % SLOTS) as usize;
                self.levels[level][slot].push((tick, v));
                self.counts[level] += 1;
                return;
            }
        }
        self.overflow.push((tick, v));
    }

    /// Hold `v` until `at_ns` (nanoseconds; a time already past comes out at the next
    /// advance).
    pub fn insert(&mut self, at_ns: u64, v: T) {
        let tick = at_ns.div_ceil(1 << TICK_SHIFT).max(self.cur + 1);
        self.place(tick, v);
    }

    /// Run the wheel to `now_ns`, handing every entry whose time has come to `due`.
    pub fn advance(&mut self, now_ns: u64, mut due: impl FnMut(T)) {
        let target = now_ns >> TICK_SHIFT;
        while self.cur < target {
            if self.is_empty() {
                self.cur = target;
                return;
            }
            // Skip ticks while the lower levels hold nothing: to the next boundary where
            // an upper level's slot comes down (or to the target).
            let mut next = self.cur + 1;
            if self.counts[0] == 0 {
                let shift = if self.counts[1] > 0 {
                    SLOT_BITS
                } else if self.counts[2] > 0 {
                    2 * SLOT_BITS
                } else {
                    3 * SLOT_BITS
                };
                next = (((self.cur >> shift) + 1) << shift).min(target);
            }
            self.cur = next;
            let t = self.cur;
            // Cascade: at a level's boundary its current slot comes down, highest first.
            if t.is_multiple_of(1 << (3 * SLOT_BITS)) {
                for (tick, v) in std::mem::take(&mut self.overflow) {
                    self.place(tick, v);
                }
            }
            for level in (1..3).rev() {
                let shift = SLOT_BITS * level as u32;
                if t.is_multiple_of(1 << shift) {
                    let slot = ((t >> shift) % SLOTS) as usize;
                    let entries = std::mem::take(&mut self.levels[level][slot]);
                    self.counts[level] -= entries.len();
                    for (tick, v) in entries {
                        if tick <= t {
                            due(v);
                        } else {
                            self.place(tick, v);
                        }
                    }
                }
            }
            let slot = (t % SLOTS) as usize;
            if !self.levels[0][slot].is_empty() {
                let entries = std::mem::take(&mut self.levels[0][slot]);
                self.counts[0] -= entries.len();
                for (tick, v) in entries {
                    if tick <= t {
                        due(v);
                    } else {
                        self.place(tick, v);
                    }
                }
            }
        }
    }

    /// The earliest time (nanoseconds) an entry comes out, if any.
    pub fn next_ns(&self) -> Option<u64> {
        let level = self
            .levels
            .iter()
            .flatten()
            .flatten()
            .chain(self.overflow.iter())
            .map(|(tick, _)| *tick)
            .min()?;
        Some(level << TICK_SHIFT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries at many distances come out at their tick: never early, and no later than
    /// the first advance after it, whatever the steps of `advance`.
    #[test]
    fn entries_come_out_on_time_at_every_level() {
        for step_ns in [300u64, 1024, 50_000, 7_000_000, 900_000_000] {
            let mut w = TimingWheel::default();
            let mut want = Vec::new();
            let mut x = 12345u64;
            for i in 0..2000u64 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // From a microsecond to about 30 s ahead.
                let at = 1 + (x >> 20) % (30_000_000_000 >> (i % 5 * 6));
                w.insert(at, i);
                want.push(at);
            }
            let mut now = 0u64;
            let mut got = vec![None; want.len()];
            while !w.is_empty() {
                now += step_ns;
                assert!(now < 40_000_000_000, "entries left after 40 s");
                w.advance(now, |i| got[i as usize] = Some(now));
            }
            for (i, at) in want.iter().enumerate() {
                let out = got[i].expect("came out");
                assert!(out >= *at, "early: {out} < {at}");
                assert!(
                    out < at + step_ns + 1024,
                    "late: {out} for {at} (step {step_ns})"
                );
            }
        }
    }

    #[test]
    fn next_ns_is_the_earliest_tick() {
        let mut w = TimingWheel::default();
        w.insert(5_000_000, 'a');
        w.insert(3_000, 'b');
        w.insert(90_000_000_000, 'c');
        assert_eq!(w.next_ns(), Some(3_000u64.div_ceil(1024) * 1024));
        let mut out = Vec::new();
        w.advance(4_096, |v| out.push(v));
        assert_eq!(out, ['b']);
        w.advance(5_000_000 + 1024, |v| out.push(v));
        assert_eq!(out, ['b', 'a']);
        w.advance(100_000_000_000, |v| out.push(v));
        assert_eq!(out, ['b', 'a', 'c']);
    }
}
