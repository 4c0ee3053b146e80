//! Sequencing: tags, tombstones and reorder stages.
//!
//! Replicated stages finish work out of order. Whatever needs order back restores it here:
//!
//! * [`Reorder`] restores a *dense* sequence: every number is used exactly once, by an item
//!   or by a tombstone (a result that produced nothing, e.g. an ACK coalesced away). This is
//!   the egress side: the protocol worker numbers its results, replicas process them in any
//!   order, and the reorder stage before the wire releases frames in protocol order. A
//!   replica hands over consecutive tombstones as one gap ([`Sequenced`]): a bulk receiver's
//!   burst, whose 32 results send one ACK, crosses to the reorder stage as two entries.
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
use std::num::NonZeroU32;

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

/// An entry of one replica's ordered output into a [`Reorder`]: one item, or tombstones for
/// a run of consecutive numbers in one entry.
///
/// A replica whose burst sent nothing for most of its results (a postprocess replica that
/// coalesced 31 ACKs of a burst of 32 into the last) hands over one gap and one frame, not
/// 31 tombstones and a frame: the ring between the replica and the reorder stage carries
/// two entries, and the reorder stage skips the gap in one step when nothing waits before it.
///
/// ```
/// use flextoe::reorder::{Overflow, Reorder, Sequenced};
///
/// let mut out = Vec::new();
/// Sequenced::push_tombstone(&mut out, 0);
/// Sequenced::push_tombstone(&mut out, 1);
/// Sequenced::push_tombstone(&mut out, 2);
/// out.push(Sequenced::item(3, 'a'));
/// assert_eq!(out.len(), 2, "three tombstones in one gap, then the item");
///
/// let mut r = Reorder::new(8, Overflow::Backpressure);
/// let mut released = Vec::new();
/// for e in out {
///     assert!(r.offer_entry(e, &mut released).is_ok());
/// }
/// assert_eq!((released, r.next_seq(), r.stats().tombstones), (vec!['a'], 4, 3));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequenced<T>(Entry<T>);

/// [`Sequenced`]'s two kinds. A gap keeps its first number as two 32-bit halves (low,
/// high): at 4-byte alignment the gap takes 12 bytes, which fit before a frame's niche (its
/// arena id, in its last two bytes), so a `Sequenced<Frame>` is 16 bytes like a
/// `Tagged<Frame>`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry<T> {
    Item(u64, T),
    Gap([u32; 2], NonZeroU32),
}

impl<T> Sequenced<T> {
    /// An item numbered `seq`.
    pub fn item(seq: u64, item: T) -> Self {
        Sequenced(Entry::Item(seq, item))
    }

    /// Tombstones for `count` consecutive numbers from `first` on.
    pub fn gap(first: u64, count: NonZeroU32) -> Self {
        Sequenced(Entry::Gap([first as u32, (first >> 32) as u32], count))
    }

    /// The entry's (first) number.
    pub fn seq(&self) -> u64 {
        match &self.0 {
            Entry::Item(s, _) => *s,
            Entry::Gap(h, _) => join(*h),
        }
    }

    /// How many numbers the entry covers: 1 for an item.
    pub fn count(&self) -> u32 {
        match &self.0 {
            Entry::Item(..) => 1,
            Entry::Gap(_, n) => n.get(),
        }
    }

    /// The item and its number, or `None` for a gap.
    pub fn into_item(self) -> Option<(u64, T)> {
        match self.0 {
            Entry::Item(s, t) => Some((s, t)),
            Entry::Gap(..) => None,
        }
    }

    /// Append a tombstone for `seq` to `entries`: the last entry grows where it is a gap that
    /// ends just below `seq`, a new gap starts otherwise.
    pub fn push_tombstone(entries: &mut Vec<Sequenced<T>>, seq: u64) {
        if let Some(Sequenced(Entry::Gap(h, count))) = entries.last_mut() {
            if join(*h).checked_add(u64::from(count.get())) == Some(seq) {
                if let Some(c) = count.checked_add(1) {
                    *count = c;
                    return;
                }
            }
        }
        entries.push(Sequenced::gap(seq, NonZeroU32::MIN));
    }
}

/// A gap's first number from its halves (low, high).
fn join(h: [u32; 2]) -> u64 {
    u64::from(h[0]) | u64::from(h[1]) << 32
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
        let seq = t.seq;
        self.offer_one(seq, t.item, out)
            .map_err(|item| Tagged { seq, item })
    }

    /// Whether [`offer_entry`](Self::offer_entry) takes `e` now: always under
    /// [`Overflow::SkipAhead`]; under backpressure, where its last number fits in the window
    /// or (a gap) it starts at or below the next number to be released.
    pub fn accepts(&self, e: &Sequenced<T>) -> bool {
        match &e.0 {
            _ if self.policy == Overflow::SkipAhead => true,
            Entry::Item(s, _) => self.fits(*s),
            Entry::Gap(h, count) => {
                let first = join(*h);
                first <= self.next || self.fits(first.saturating_add(u64::from(count.get()) - 1))
            }
        }
    }

    /// Offer an item or a gap ([`Sequenced`]). An item goes as through
    /// [`offer`](Self::offer). A gap counts as a tombstone for each of its numbers: one that
    /// starts at the next number to be released moves past all of them at once (one step when
    /// nothing is held); one further ahead is held number by number (under skip-ahead, a gap
    /// longer than the window gives up the missing numbers below it and then moves past all
    /// of its own at once). Numbers already released
    /// or skipped count as late, as do numbers a held item already took. Under backpressure
    /// an entry whose last number is beyond the window, and that does not start at or below
    /// the next number, is given back whole ([`accepts`](Self::accepts) says so beforehand).
    pub fn offer_entry(&mut self, e: Sequenced<T>, out: &mut Vec<T>) -> Result<(), Sequenced<T>> {
        match e.0 {
            Entry::Item(seq, item) => match self.offer_one(seq, Some(item), out) {
                Ok(()) => Ok(()),
                Err(Some(item)) => Err(Sequenced::item(seq, item)),
                // `offer_one` gives back what it was given, an item here.
                Err(None) => Ok(()),
            },
            Entry::Gap(h, count) => {
                if self.offer_gap(join(h), count, out) {
                    Ok(())
                } else {
                    Err(Sequenced(Entry::Gap(h, count)))
                }
            }
        }
    }

    /// One number: `Some` an item, `None` a tombstone; gives `item` back when refused.
    fn offer_one(&mut self, seq: u64, item: Option<T>, out: &mut Vec<T>) -> Result<(), Option<T>> {
        if seq < self.next {
            self.stats.late += 1;
            return Ok(());
        }
        if seq == self.next && self.held == 0 {
            // In order with nothing held: straight through, the slots untouched (a run
            // from one replica never waits).
            self.stats.accepted += 1;
            self.next += 1;
            match item {
                Some(item) => {
                    self.stats.released += 1;
                    out.push(item);
                }
                None => self.stats.tombstones += 1,
            }
            return Ok(());
        }
        if !self.make_room(seq, seq, out) {
            return Err(item);
        }
        self.hold(seq, item);
        self.release(out);
        Ok(())
    }

    /// Tombstones for `count` numbers from `first` on; `false` when refused (backpressure).
    fn offer_gap(&mut self, first: u64, count: NonZeroU32, out: &mut Vec<T>) -> bool {
        let end = first.saturating_add(u64::from(count.get()));
        if end <= self.next {
            self.stats.late += u64::from(count.get());
            return true;
        }
        let mut from = first;
        if from < self.next {
            self.stats.late += self.next - from;
            from = self.next;
        }
        // Skipping ahead gives up missing numbers below the gap only: a gap longer than the
        // window then starts at the next number, and moves past the rest at once.
        if from > self.next && !self.make_room(end - 1, from, out) {
            return false;
        }
        if from == self.next {
            if self.held > 0 {
                // In a dense numbering whatever is held lies past the gap. A number given
                // twice (an item held, then a gap over it) must not stay in its slot, where a
                // later number of the same slot would meet it: walk the part of the gap inside
                // the window (where every held number lies). A number a held item already took
                // keeps its item (it came first); the gap's tombstone for it is the late one.
                let walk_end = end.min(self.next + self.cap());
                while self.next < walk_end {
                    let i = self.idx(self.next);
                    match self.slots[i].take() {
                        Some(v) => {
                            self.emit(v, out);
                            self.stats.late += 1;
                        }
                        None => {
                            self.stats.accepted += 1;
                            self.stats.tombstones += 1;
                        }
                    }
                    self.next += 1;
                }
            }
            // Nothing is held below `end` now: the rest of the gap goes in one step.
            let n = end - self.next;
            self.stats.accepted += n;
            self.stats.tombstones += n;
            self.next = end;
            self.release(out);
            return true;
        }
        for s in from..end {
            self.hold(s, None);
        }
        self.release(out);
        true
    }

    /// Whether the caller may go on with numbers up to `last`: they fit in the window, or
    /// the policy skips ahead (to no further than `stop`, where the caller's own numbers
    /// start); `false` (counted as refused) under backpressure when they do not fit.
    fn make_room(&mut self, last: u64, stop: u64, out: &mut Vec<T>) -> bool {
        if self.fits(last) {
            return true;
        }
        match self.policy {
            Overflow::Backpressure => {
                self.stats.refused += 1;
                false
            }
            Overflow::SkipAhead => {
                let new_next = (last + 1 - self.cap()).min(stop);
                while self.next < new_next {
                    let i = self.idx(self.next);
                    match self.slots[i].take() {
                        Some(v) => self.emit(v, out),
                        None => self.stats.skipped += 1,
                    }
                    self.next += 1;
                }
                true
            }
        }
    }

    /// Put `item` (`None`: a tombstone) in `seq`'s slot, which fits in the window; a
    /// number already taken counts the newcomer as late.
    fn hold(&mut self, seq: u64, item: Option<T>) {
        let i = self.idx(seq);
        if self.slots[i].is_some() {
            self.stats.late += 1;
            return;
        }
        self.slots[i] = Some(item);
        self.held += 1;
        self.stats.accepted += 1;
        self.stats.max_held = self.stats.max_held.max(self.held as u64);
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
mod tests;
