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
//!   arrival order. A stream tags its items per run, not per item ([`Ingress::Run`]: a
//!   replica's burst is a run), and reports how far it has got ([`Ingress::Advance`]), so
//!   gaps (frames of other groups, dropped frames) do not stall the merge.
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
///
/// A stream carries its items in runs: a [`Run`](Ingress::Run) tag numbers the run that
/// follows, up to the stream's next `Run` or `Advance`. Numbers are tagged per run, not per
/// item: a burst a preprocess replica handled is one run (or a few, where it punted a frame
/// or its burst held numbers another replica had).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ingress<T> {
    /// The items that follow arrived as one run, the first of them numbered this: no other
    /// stream delivers a number from this one up to the run's last item, and the stream's
    /// next run starts above it.
    Run(u64),
    /// An item of the current run.
    Item(T),
    /// The stream has handled every number up to and including this one; it ends the
    /// current run.
    Advance(u64),
}

/// Where a stream of a [`Merge`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Head {
    /// No run pending: the next message is still to be read.
    Idle,
    /// A run starting at this number, waiting for the streams that may deliver lower ones.
    Run(u64),
    /// A run starting at this number, being let out: every item up to the stream's next
    /// tag goes out as it comes.
    Open(u64),
    /// A run out of the stream's promised order: its items are dropped, counted late.
    Skip,
}

/// K-way merge of ordered streams sharing one sequence space with gaps.
///
/// Stream `i` promises increasing numbers, tagged per run ([`Ingress`]). A run that starts
/// at `s` goes out, whole and in stream order, once no stream can still deliver a smaller
/// number: every other stream has a run pending above `s` or has advanced to `s` or
/// beyond. The merge compares numbers once per run; its items go out without a look at the
/// other streams.
pub struct Merge<T> {
    heads: Vec<Head>,
    /// Every number up to this one has been handled by the stream.
    frontier: Vec<u64>,
    started: Vec<bool>,
    /// The stream whose run is being let out.
    open: Option<usize>,
    stats: ReorderStats,
    _items: std::marker::PhantomData<fn(T)>,
}

impl<T> Merge<T> {
    /// A merge of `streams` streams.
    pub fn new(streams: usize) -> Self {
        Merge {
            heads: vec![Head::Idle; streams],
            frontier: vec![0; streams],
            started: vec![false; streams],
            open: None,
            stats: ReorderStats::default(),
            _items: std::marker::PhantomData,
        }
    }

    /// Number of streams.
    pub fn streams(&self) -> usize {
        self.heads.len()
    }

    /// Counters: `accepted` and `released` count items let out, `late` items dropped
    /// because their run broke the stream's promised order (or came without a run).
    pub fn stats(&self) -> ReorderStats {
        self.stats
    }

    /// Take stream `i`'s tag `m` (a `Run` or an `Advance`) where no run is open on it.
    fn tag(&mut self, i: usize, m: Ingress<T>) {
        match m {
            Ingress::Advance(s) => {
                if !self.started[i] || s > self.frontier[i] {
                    self.frontier[i] = s;
                    self.started[i] = true;
                }
                self.heads[i] = Head::Idle;
            }
            Ingress::Run(s) => {
                self.heads[i] = if self.started[i] && s <= self.frontier[i] {
                    // Out of the stream's promised order: a duplicate or a broken producer.
                    Head::Skip
                } else {
                    Head::Run(s)
                };
            }
            Ingress::Item(_) => {
                // Outside a run (or in one out of order): nothing says where it goes.
                self.stats.late += 1;
            }
        }
    }

    /// The smallest number stream `i` may still deliver.
    fn low(&self, i: usize) -> u64 {
        match self.heads[i] {
            Head::Run(s) | Head::Open(s) => s,
            Head::Idle | Head::Skip if self.started[i] => self.frontier[i].saturating_add(1),
            Head::Idle | Head::Skip => 0,
        }
    }

    /// Release, in order, every item that is safe to release now, pulling stream `i`'s
    /// next messages from `next(i)` as the merge needs them; at most `max` items, each given
    /// to `out`. Returns how many went out. A run cut short by `max` goes on at the next
    /// call, before anything else.
    pub fn release(
        &mut self,
        next: impl FnMut(usize) -> Option<Ingress<T>>,
        max: usize,
        out: impl FnMut(T),
    ) -> usize {
        self.release_below(next, max, u64::MAX, out)
    }

    /// [`release`](Self::release), but only runs that start below `limit`: the rest wait
    /// (for an item that arrived out of band, numbered `limit`, to go first). The producer
    /// ends a run before such a number, so that no run holds numbers on both sides of it.
    pub fn release_below(
        &mut self,
        mut next: impl FnMut(usize) -> Option<Ingress<T>>,
        max: usize,
        limit: u64,
        mut out: impl FnMut(T),
    ) -> usize {
        let mut n = 0;
        while n < max {
            if let Some(i) = self.open {
                // A run being let out: its items go as they come, up to its end.
                match next(i) {
                    Some(Ingress::Item(v)) => {
                        self.stats.accepted += 1;
                        self.stats.released += 1;
                        out(v);
                        n += 1;
                    }
                    Some(m) => {
                        self.open = None;
                        self.heads[i] = Head::Idle;
                        self.tag(i, m);
                    }
                    // Nothing may go before the rest of this run.
                    None => break,
                }
                continue;
            }
            for i in 0..self.heads.len() {
                self.fill(i, &mut next);
            }
            let Some((best, first)) = self.lowest_run() else {
                break;
            };
            if first >= limit {
                break;
            }
            if (0..self.heads.len()).any(|j| j != best && self.low(j) < first) {
                break;
            }
            self.heads[best] = Head::Open(first);
            self.frontier[best] = first;
            self.started[best] = true;
            self.open = Some(best);
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

    /// Pull stream `i`'s messages until it has a run pending or has none left; the items
    /// of a run out of order are dropped on the way.
    fn fill(&mut self, i: usize, next: &mut impl FnMut(usize) -> Option<Ingress<T>>) {
        while matches!(self.heads[i], Head::Idle | Head::Skip) {
            match next(i) {
                Some(Ingress::Item(_)) if self.heads[i] == Head::Skip => self.stats.late += 1,
                Some(m) => self.tag(i, m),
                None => break,
            }
        }
    }

    /// The stream with the lowest pending run, and that run's number (the lowest-numbered
    /// stream first among equal numbers).
    fn lowest_run(&self) -> Option<(usize, u64)> {
        self.heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| match h {
                Head::Run(s) => Some((i, *s)),
                _ => None,
            })
            .min_by_key(|(_, s)| *s)
    }
}

/// Feed ordered per-stream queues into a merge and collect everything it releases
/// ([`Merge::release`]). Queues are `VecDeque`s here; the threaded runtime does the same
/// over rings.
pub fn merge_from_queues<T>(
    m: &mut Merge<T>,
    queues: &mut [VecDeque<Ingress<T>>],
    out: &mut Vec<T>,
) {
    m.release(|i| queues[i].pop_front(), usize::MAX, |v| out.push(v));
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
        let mut q = [
            VecDeque::from([Ingress::Run(3), Ingress::Item("c"), Ingress::Item("d")]),
            VecDeque::new(),
        ];
        let mut out = Vec::new();
        m.release(|i| q[i].pop_front(), usize::MAX, |v| out.push(v));
        assert!(out.is_empty(), "stream 1 may still deliver 0..=2");
        q[1].extend([Ingress::Run(1), Ingress::Item("a")]);
        m.release(|i| q[i].pop_front(), usize::MAX, |v| out.push(v));
        assert_eq!(out, ["a"], "stream 1's run may go on up to 2");
        q[1].push_back(Ingress::Advance(2));
        m.release(|i| q[i].pop_front(), usize::MAX, |v| out.push(v));
        assert_eq!(out, ["a", "c", "d"]);
    }

    #[test]
    fn a_run_cut_short_goes_on_first_and_a_late_run_is_dropped() {
        let mut m = Merge::new(2);
        let mut q = [
            VecDeque::from([
                Ingress::Run(1),
                Ingress::Item(1),
                Ingress::Item(2),
                Ingress::Advance(2),
            ]),
            VecDeque::from([Ingress::Run(3), Ingress::Item(3)]),
        ];
        let mut out = Vec::new();
        assert_eq!(m.release(|i| q[i].pop_front(), 1, |v| out.push(v)), 1);
        assert_eq!(m.floor(), 1, "stream 0's run is open");
        assert_eq!(m.release(|i| q[i].pop_front(), 8, |v| out.push(v)), 2);
        assert_eq!(out, [1, 2, 3]);
        // A run at or below the stream's frontier: its items are late.
        q[0].extend([Ingress::Run(2), Ingress::Item(9), Ingress::Item(9)]);
        q[0].push_back(Ingress::Advance(9));
        q[1].push_back(Ingress::Advance(9));
        m.release(|i| q[i].pop_front(), 8, |v| out.push(v));
        assert_eq!(out, [1, 2, 3]);
        assert_eq!((m.stats().released, m.stats().late), (3, 2));
    }

    #[test]
    fn release_below_stops_at_the_limit_and_floor_says_when_it_is_reached() {
        let mut m = Merge::new(2);
        let mut q = [
            VecDeque::from([
                Ingress::Run(1),
                Ingress::Item('a'),
                Ingress::Run(4),
                Ingress::Item('d'),
            ]),
            VecDeque::from([Ingress::Run(2), Ingress::Item('b'), Ingress::Advance(3)]),
        ];
        assert_eq!(m.floor(), 0, "no stream has spoken");
        let mut out = Vec::new();
        // Number 3 came out of band: no run numbered 3 or more goes before it.
        m.release_below(|i| q[i].pop_front(), usize::MAX, 3, |v| out.push(v));
        assert_eq!(out, vec!['a', 'b']);
        assert_eq!(m.floor(), 4, "everything below 4 is out, 4 is held");
        m.release(|i| q[i].pop_front(), usize::MAX, |v| out.push(v));
        assert_eq!(out.last(), Some(&'d'));
        // Below the floor: a run held at the limit stays held.
        let mut m = Merge::new(1);
        let mut q = VecDeque::from([Ingress::Run(7), Ingress::Item('x')]);
        let n = m.release_below(|_| q.pop_front(), usize::MAX, 7, |_| {});
        assert_eq!((n, m.floor()), (0, 7));
    }
}
