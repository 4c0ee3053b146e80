//! Sequencing: tags, tombstones and reorder stages.
//!
//! Replicated stages finish work out of order. Whatever needs order back restores it here:
//!
//! * [`Reorder`] restores a *dense* sequence: every number is used exactly once, by an item
//!   or by a tombstone (a result that produced nothing, e.g. an ACK coalesced away). This is
//!   the egress side: the protocol worker numbers its results, replicas process them in any
//!   order, and the reorder stage before the wire releases frames in protocol order.
//! * [`Merge`] restores the order of *several ordered streams* that share one sequence space
//!   with gaps. This is the ingress side: frames get arrival numbers, preprocess replicas
//!   each see an increasing subset, and a flow group's protocol worker must see its frames in
//!   arrival order. Each stream reports how far it has got ([`Ingress::Advance`]), so gaps
//!   (frames of other groups, dropped frames) do not stall the merge.
//!
//! Both have a defined overflow policy ([`Overflow`]) and count what they did
//! ([`ReorderStats`]).

use std::collections::VecDeque;

/// What a reorder stage does with an item that is too far ahead of the next expected one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Refuse it: the caller keeps it (in its input ring) and offers it again later.
    Backpressure,
    /// Make room by giving up on the oldest missing numbers: items present in the skipped
    /// range are still released in order, missing ones count as skipped, and if they arrive
    /// later they are dropped and counted as late.
    SkipAhead,
}

/// An item with its sequence number; `item: None` is a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tagged<T> {
    /// Position in the sequence.
    pub seq: u64,
    /// The item, or `None` for a tombstone.
    pub item: Option<T>,
}

impl<T> Tagged<T> {
    /// An item.
    pub fn item(seq: u64, item: T) -> Self {
        Tagged {
            seq,
            item: Some(item),
        }
    }

    /// A tombstone.
    pub fn tombstone(seq: u64) -> Self {
        Tagged { seq, item: None }
    }
}

/// Counters of a reorder stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReorderStats {
    /// Items and tombstones accepted.
    pub accepted: u64,
    /// Items released in order.
    pub released: u64,
    /// Tombstones consumed.
    pub tombstones: u64,
    /// Offers refused under [`Overflow::Backpressure`].
    pub refused: u64,
    /// Sequence numbers given up under [`Overflow::SkipAhead`].
    pub skipped: u64,
    /// Items that arrived after their number was released or skipped (duplicates, late).
    pub late: u64,
    /// Largest number of items held at once (an item that comes in order with nothing
    /// held passes straight through and is never held).
    pub max_held: u64,
}

/// Reorder buffer for a dense sequence starting at 0.
pub struct Reorder<T> {
    next: u64,
    slots: Vec<Option<Option<T>>>,
    held: usize,
    policy: Overflow,
    stats: ReorderStats,
}

impl<T> Reorder<T> {
    /// A reorder stage with a window of `capacity` numbers (rounded up to a power of two).
    pub fn new(capacity: usize, policy: Overflow) -> Self {
        let cap = capacity.max(1).next_power_of_two();
        Reorder {
            next: 0,
            slots: (0..cap).map(|_| None).collect(),
            held: 0,
            policy,
            stats: ReorderStats::default(),
        }
    }

    fn cap(&self) -> u64 {
        self.slots.len() as u64
    }

    fn idx(&self, seq: u64) -> usize {
        (seq & (self.cap() - 1)) as usize
    }

    /// The next number to be released.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Items and tombstones held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Counters.
    pub fn stats(&self) -> ReorderStats {
        self.stats
    }

    /// Whether `seq` fits in the window now.
    pub fn fits(&self, seq: u64) -> bool {
        seq < self.next + self.cap()
    }

    /// Offer an item or tombstone. In-order items are released into `out` right away (with
    /// anything they unblock). Under backpressure an item too far ahead is given back.
    pub fn offer(&mut self, t: Tagged<T>, out: &mut Vec<T>) -> Result<(), Tagged<T>> {
        if t.seq < self.next {
            self.stats.late += 1;
            return Ok(());
        }
        if t.seq == self.next && self.held == 0 {
            // In order with nothing held: straight through, the slots untouched (a run
            // from one replica never waits).
            self.stats.accepted += 1;
            self.next += 1;
            match t.item {
                Some(item) => {
                    self.stats.released += 1;
                    out.push(item);
                }
                None => self.stats.tombstones += 1,
            }
            return Ok(());
        }
        if !self.fits(t.seq) {
            match self.policy {
                Overflow::Backpressure => {
                    self.stats.refused += 1;
                    return Err(t);
                }
                Overflow::SkipAhead => {
                    let new_next = t.seq + 1 - self.cap();
                    while self.next < new_next {
                        let i = self.idx(self.next);
                        match self.slots[i].take() {
                            Some(v) => self.emit(v, out),
                            None => self.stats.skipped += 1,
                        }
                        self.next += 1;
                    }
                }
            }
        }
        let i = self.idx(t.seq);
        if self.slots[i].is_some() {
            self.stats.late += 1;
            return Ok(());
        }
        self.slots[i] = Some(t.item);
        self.held += 1;
        self.stats.accepted += 1;
        self.stats.max_held = self.stats.max_held.max(self.held as u64);
        self.release(out);
        Ok(())
    }

    fn emit(&mut self, v: Option<T>, out: &mut Vec<T>) {
        self.held -= 1;
        match v {
            Some(item) => {
                self.stats.released += 1;
                out.push(item);
            }
            None => self.stats.tombstones += 1,
        }
    }

    /// Release everything that is now in order.
    pub fn release(&mut self, out: &mut Vec<T>) -> usize {
        let before = out.len();
        loop {
            let i = self.idx(self.next);
            match self.slots[i].take() {
                Some(v) => {
                    self.emit(v, out);
                    self.next += 1;
                }
                None => break,
            }
        }
        out.len() - before
    }
}

/// A message of one ordered input stream of a [`Merge`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ingress<T> {
    /// An item with its arrival number.
    Item(u64, T),
    /// The stream has handled every number up to and including this one.
    Advance(u64),
}

/// K-way merge of ordered streams sharing one sequence space with gaps.
///
/// Stream `i` promises increasing numbers. An item numbered `s` is released once no stream
/// can still deliver a smaller number: every other stream has a pending item numbered above
/// `s` or has advanced to `s` or beyond.
pub struct Merge<T> {
    heads: Vec<Option<(u64, T)>>,
    /// Every number up to this one has been handled by the stream.
    frontier: Vec<u64>,
    started: Vec<bool>,
    stats: ReorderStats,
}

impl<T> Merge<T> {
    /// A merge of `streams` streams.
    pub fn new(streams: usize) -> Self {
        Merge {
            heads: (0..streams).map(|_| None).collect(),
            frontier: vec![0; streams],
            started: vec![false; streams],
            stats: ReorderStats::default(),
        }
    }

    /// Number of streams.
    pub fn streams(&self) -> usize {
        self.heads.len()
    }

    /// Counters.
    pub fn stats(&self) -> ReorderStats {
        self.stats
    }

    /// Whether stream `i` needs its next message.
    pub fn wants(&self, i: usize) -> bool {
        self.heads[i].is_none()
    }

    /// Give stream `i`'s next message. Only call when [`wants`](Self::wants) is true for
    /// items (advances are always taken).
    pub fn push(&mut self, i: usize, m: Ingress<T>) {
        match m {
            Ingress::Advance(s) => {
                if !self.started[i] || s > self.frontier[i] {
                    self.frontier[i] = s;
                    self.started[i] = true;
                }
            }
            Ingress::Item(s, v) => {
                debug_assert!(self.heads[i].is_none());
                if self.started[i] && s <= self.frontier[i] {
                    // Out of the stream's promised order: a duplicate or a broken producer.
                    self.stats.late += 1;
                    return;
                }
                self.stats.accepted += 1;
                self.heads[i] = Some((s, v));
            }
        }
    }

    /// The smallest number stream `i` may still deliver.
    fn low(&self, i: usize) -> u64 {
        match &self.heads[i] {
            Some((s, _)) => *s,
            None if self.started[i] => self.frontier[i] + 1,
            None => 0,
        }
    }

    /// Release, in order, every item that is safe to release now, pulling stream `i`'s
    /// next messages from `next(i)` as the merge needs them; at most `max` items, each given
    /// to `out` with its number. Returns how many went out.
    ///
    /// Works over runs: once a stream holds the lowest number, its following items go out
    /// up to the lowest number any other stream may still deliver, without looking at the
    /// other streams again (a burst a replica handled goes out in one run). The items and
    /// their order are those of calling [`pop`](Self::pop) after every message.
    pub fn release(
        &mut self,
        next: impl FnMut(usize) -> Option<Ingress<T>>,
        max: usize,
        out: impl FnMut(u64, T),
    ) -> usize {
        self.release_below(next, max, u64::MAX, out)
    }

    /// [`release`](Self::release), but only items numbered below `limit`: the rest wait
    /// (for an item that arrived out of band, numbered `limit`, to go first).
    pub fn release_below(
        &mut self,
        mut next: impl FnMut(usize) -> Option<Ingress<T>>,
        max: usize,
        limit: u64,
        mut out: impl FnMut(u64, T),
    ) -> usize {
        let mut n = 0;
        while n < max {
            for i in 0..self.heads.len() {
                self.fill(i, &mut next);
            }
            let Some((best, first)) = self.lowest_head() else {
                break;
            };
            // The lowest number another stream may still deliver: the run's end. An item
            // numbered the same as another stream's held item (a producer that broke the
            // one-number-one-item rule) goes after it if that stream comes first, as with
            // `pop`.
            let bound = (0..self.heads.len())
                .filter(|&j| j != best)
                .map(|j| self.low(j))
                .min()
                .unwrap_or(u64::MAX);
            if first >= limit {
                break;
            }
            let yields_at_bound = self.heads[..best]
                .iter()
                .any(|h| h.as_ref().is_some_and(|(s, _)| *s == bound));
            if first > bound {
                break;
            }
            while n < max {
                match self.heads[best].take() {
                    Some((s, v))
                        if (s < bound || (s == bound && !yields_at_bound)) && s < limit =>
                    {
                        self.frontier[best] = s;
                        self.started[best] = true;
                        self.stats.released += 1;
                        out(s, v);
                        n += 1;
                    }
                    head => {
                        self.heads[best] = head;
                        break;
                    }
                }
                self.fill(best, &mut next);
            }
        }
        n
    }

    /// Every number below this one has been released, or will never be delivered: no
    /// stream can still deliver a smaller one. 0 until every stream has spoken.
    pub fn floor(&self) -> u64 {
        (0..self.heads.len())
            .map(|i| self.low(i))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Pull stream `i`'s messages until it holds an item or has none left.
    fn fill(&mut self, i: usize, next: &mut impl FnMut(usize) -> Option<Ingress<T>>) {
        while self.wants(i) {
            match next(i) {
                Some(m) => self.push(i, m),
                None => break,
            }
        }
    }

    /// The stream holding the lowest-numbered item, and that number.
    fn lowest_head(&self) -> Option<(usize, u64)> {
        self.heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.as_ref().map(|(s, _)| (i, *s)))
            .min_by_key(|(_, s)| *s)
    }

    /// Release the next item if it is safe to; returns it with its number.
    pub fn pop(&mut self) -> Option<(u64, T)> {
        let (best, s) = self.lowest_head()?;
        for j in 0..self.heads.len() {
            if j != best && self.low(j) < s {
                return None;
            }
        }
        let item = self.heads[best].take();
        self.frontier[best] = s;
        self.started[best] = true;
        self.stats.released += 1;
        item
    }
}

/// Feed ordered per-stream queues into a merge and collect everything it releases
/// ([`Merge::release`]). Queues are `VecDeque`s here; the threaded runtime does the same
/// over rings.
pub fn merge_from_queues<T>(
    m: &mut Merge<T>,
    queues: &mut [VecDeque<Ingress<T>>],
    out: &mut Vec<(u64, T)>,
) {
    m.release(
        |i| queues[i].pop_front(),
        usize::MAX,
        |s, v| out.push((s, v)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reorder_releases_in_order_and_consumes_tombstones() {
        let mut r = Reorder::new(8, Overflow::Backpressure);
        let mut out = Vec::new();
        r.offer(Tagged::item(2, 'c'), &mut out).unwrap();
        r.offer(Tagged::tombstone(1), &mut out).unwrap();
        assert!(out.is_empty());
        r.offer(Tagged::item(0, 'a'), &mut out).unwrap();
        assert_eq!(out, vec!['a', 'c']);
        assert_eq!(r.stats().tombstones, 1);
        assert_eq!(r.next_seq(), 3);
        r.offer(Tagged::item(0, 'z'), &mut out).unwrap();
        assert_eq!(r.stats().late, 1);
    }

    #[test]
    fn backpressure_refuses_beyond_window() {
        let mut r = Reorder::new(4, Overflow::Backpressure);
        let mut out = Vec::new();
        let back = r.offer(Tagged::item(4, 4), &mut out).unwrap_err();
        assert_eq!(back.seq, 4);
        assert_eq!(r.stats().refused, 1);
        for s in 0..4 {
            r.offer(Tagged::item(s, s), &mut out).unwrap();
        }
        r.offer(back, &mut out).unwrap();
        assert_eq!(out, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn skip_ahead_releases_present_items_and_counts_missing() {
        let mut r = Reorder::new(4, Overflow::SkipAhead);
        let mut out = Vec::new();
        r.offer(Tagged::item(1, 1), &mut out).unwrap();
        r.offer(Tagged::item(2, 2), &mut out).unwrap();
        // 0 is missing; 5 forces the window to move to 2..=5.
        r.offer(Tagged::item(5, 5), &mut out).unwrap();
        assert_eq!(out, vec![1, 2]);
        assert_eq!(r.stats().skipped, 1);
        r.offer(Tagged::item(0, 0), &mut out).unwrap();
        assert_eq!(r.stats().late, 1);
        r.offer(Tagged::item(3, 3), &mut out).unwrap();
        r.offer(Tagged::item(4, 4), &mut out).unwrap();
        assert_eq!(out, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn merge_waits_for_slow_stream_then_releases() {
        let mut m = Merge::new(2);
        m.push(0, Ingress::Item(3, "c"));
        assert!(m.pop().is_none(), "stream 1 may still deliver 0..=2");
        m.push(1, Ingress::Item(1, "a"));
        assert_eq!(m.pop(), Some((1, "a")));
        assert!(m.pop().is_none(), "stream 1 may still deliver 2");
        m.push(1, Ingress::Advance(2));
        assert_eq!(m.pop(), Some((3, "c")));
    }

    #[test]
    fn release_below_stops_at_the_limit_and_floor_says_when_it_is_reached() {
        let mut m = Merge::new(2);
        let mut q = [
            VecDeque::from([Ingress::Item(1, 'a'), Ingress::Item(4, 'd')]),
            VecDeque::from([Ingress::Item(2, 'b'), Ingress::Advance(3)]),
        ];
        assert_eq!(m.floor(), 0, "no stream has spoken");
        let mut out = Vec::new();
        // Number 3 came out of band: nothing numbered 3 or more goes before it.
        m.release_below(|i| q[i].pop_front(), usize::MAX, 3, |s, v| out.push((s, v)));
        assert_eq!(out, vec![(1, 'a'), (2, 'b')]);
        assert_eq!(m.floor(), 4, "everything below 4 is out, 4 is held");
        m.release(|i| q[i].pop_front(), usize::MAX, |s, v| out.push((s, v)));
        assert_eq!(out.last(), Some(&(4, 'd')));
        // Below the floor: an item held at the limit stays held.
        let mut m = Merge::new(1);
        let mut q = VecDeque::from([Ingress::Item(7, 'x')]);
        let n = m.release_below(|_| q.pop_front(), usize::MAX, 7, |_, _| {});
        assert_eq!((n, m.floor()), (0, 7));
    }
}
