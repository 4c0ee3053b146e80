//! Property tests of the reorder stages: any interleaving of tagged items from N replicas is
//! released in the original per-group order, with nothing lost or duplicated.

use std::collections::VecDeque;

use flextoe::reorder::{merge_from_queues, Ingress, Merge, Overflow, Reorder, Sequenced, Tagged};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Egress: per-group dense numbering, replicas, tombstones, bounded window with
    /// backpressure.
    #[test]
    fn dense_reorder_restores_per_group_order(
        items in proptest::collection::vec((0u8..3, 0u8..4, any::<bool>()), 1..300),
        schedule in proptest::collection::vec(any::<u16>(), 1..2000),
        window in 1usize..64,
    ) {
        const GROUPS: usize = 3;
        const REPLICAS: usize = 4;
        // Number items per group; each goes to a replica; some are tombstones.
        let mut next = [0u64; GROUPS];
        let mut queues: Vec<Vec<VecDeque<Tagged<usize>>>> =
            (0..GROUPS).map(|_| (0..REPLICAS).map(|_| VecDeque::new()).collect()).collect();
        let mut expect: Vec<Vec<usize>> = vec![Vec::new(); GROUPS];
        for (i, (g, r, tomb)) in items.iter().enumerate() {
            let g = *g as usize;
            let seq = next[g];
            next[g] += 1;
            let t = if *tomb { Tagged::tombstone(seq) } else { expect[g].push(i); Tagged::item(seq, i) };
            queues[g][*r as usize].push_back(t);
        }
        let mut stages: Vec<Reorder<usize>> = (0..GROUPS).map(|_| Reorder::new(window, Overflow::Backpressure)).collect();
        let mut got: Vec<Vec<usize>> = vec![Vec::new(); GROUPS];
        prop_assert!(deliver(&mut queues, schedule, |g, t| stages[g].offer(t, &mut got[g])), "no progress");
        prop_assert_eq!(got, expect);
        for s in &stages {
            prop_assert_eq!(s.held(), 0);
            prop_assert_eq!(s.stats().late, 0);
        }
    }

    /// Egress with gaps: the same, each replica's consecutive tombstones handed over as one
    /// gap ([`Sequenced::push_tombstone`]), under backpressure with any window (gaps longer
    /// than the window included). The same items come out in order, every number is counted
    /// once as an item or a tombstone, and nothing is late or held.
    #[test]
    fn gaps_restore_per_group_order(
        items in proptest::collection::vec((0u8..2, 0u8..3, 0u8..4), 1..400),
        schedule in proptest::collection::vec(any::<u16>(), 1..2000),
        window in 1usize..40,
    ) {
        const GROUPS: usize = 2;
        const REPLICAS: usize = 3;
        let mut next = [0u64; GROUPS];
        let mut queues: Vec<Vec<Vec<Sequenced<usize>>>> =
            (0..GROUPS).map(|_| (0..REPLICAS).map(|_| Vec::new()).collect()).collect();
        let mut expect: Vec<Vec<usize>> = vec![Vec::new(); GROUPS];
        for (i, (g, r, kind)) in items.iter().enumerate() {
            let g = *g as usize;
            let seq = next[g];
            next[g] += 1;
            // Three in four are tombstones: long gaps.
            if *kind == 0 {
                expect[g].push(i);
                queues[g][*r as usize].push(Sequenced::item(seq, i));
            } else {
                Sequenced::push_tombstone(&mut queues[g][*r as usize], seq);
            }
        }
        let mut queues: Vec<Vec<VecDeque<Sequenced<usize>>>> = queues
            .into_iter()
            .map(|g| g.into_iter().map(VecDeque::from).collect())
            .collect();
        let mut stages: Vec<Reorder<usize>> = (0..GROUPS).map(|_| Reorder::new(window, Overflow::Backpressure)).collect();
        let mut got: Vec<Vec<usize>> = vec![Vec::new(); GROUPS];
        // `accepts` says beforehand what `offer_entry` does.
        let mut foretold = true;
        prop_assert!(deliver(&mut queues, schedule, |g, e| {
            let accepts = stages[g].accepts(&e);
            let r = stages[g].offer_entry(e, &mut got[g]);
            foretold &= accepts == r.is_ok();
            r
        }), "no progress");
        prop_assert!(foretold);
        prop_assert_eq!(&got, &expect);
        for (g, s) in stages.iter().enumerate() {
            prop_assert_eq!(s.held(), 0);
            prop_assert_eq!(s.stats().late, 0);
            prop_assert_eq!(s.next_seq(), next[g]);
            prop_assert_eq!(s.stats().tombstones + s.stats().released, next[g]);
        }
    }

    /// Ingress: one sequence space with gaps, split over ordered streams tagged per run,
    /// with advances, delivered in arbitrary chunks and released with any cap per call.
    #[test]
    fn merge_restores_arrival_order(
        frames in proptest::collection::vec((0u8..4, 0u8..4, 1u8..6), 1..150),
        schedule in proptest::collection::vec((0u8..4, 1u8..8, 1usize..6), 1..400),
    ) {
        let (mut queues, expect) = streams(&frames, None);
        close(&mut queues, expect.1);
        let mut m = Merge::new(STREAMS);
        let mut got = Vec::new();
        let mut partial: Vec<VecDeque<Ingress<u64>>> = (0..STREAMS).map(|_| VecDeque::new()).collect();
        for (s, n, cap) in schedule {
            let s = s as usize;
            for _ in 0..n {
                if let Some(x) = queues[s].pop_front() {
                    partial[s].push_back(x);
                }
            }
            while m.release(|i| partial[i].pop_front(), cap, |v| got.push(v)) > 0 {}
            // Whatever went out is a prefix of the arrival order.
            prop_assert_eq!(&got[..], &expect.0[..got.len()]);
        }
        for s in 0..STREAMS {
            partial[s].extend(queues[s].drain(..));
        }
        let mut out = Vec::new();
        merge_from_queues(&mut m, &mut partial, &mut out);
        got.extend(out);
        prop_assert_eq!(&got, &expect.0);
        prop_assert_eq!(m.stats().released, got.len() as u64);
        prop_assert_eq!(m.stats().late, 0);
    }

    /// Releasing below a limit (the frame numbered `limit` went out of band and must go
    /// first; the streams end their runs at it) lets out exactly the items numbered below
    /// it, in order, with any cap per call; `floor` then says the limit is reached, and a
    /// release without a limit lets out the rest.
    #[test]
    fn release_below_lets_out_exactly_the_items_below_the_limit(
        frames in proptest::collection::vec((0u8..4, 0u8..4, 1u8..6), 1..150),
        limit in 0u64..320,
        cap in 1usize..40,
    ) {
        let (mut queues, (expect, n)) = streams(&frames, Some(limit));
        close(&mut queues, n);
        let mut m = Merge::new(STREAMS);
        let mut got = Vec::new();
        while m.release_below(|i| queues[i].pop_front(), cap, limit, |v| got.push(v)) > 0 {}
        let below: Vec<u64> = expect.iter().copied().filter(|s| *s < limit).collect();
        prop_assert_eq!(&got, &below);
        prop_assert!(m.floor() >= limit.min(n), "floor {}", m.floor());
        while m.release(|i| queues[i].pop_front(), cap, |v| got.push(v)) > 0 {}
        prop_assert_eq!(got, expect);
    }

    /// Streams no well-behaved producer would send (runs out of order, repeated numbers,
    /// items outside a run, advances anywhere): no item goes out twice, and every item is
    /// let out, counted late, or still waiting in its stream.
    #[test]
    fn broken_streams_lose_nothing_uncounted(
        streams in proptest::collection::vec(
            proptest::collection::vec((0u8..3, 0u64..40), 0..40),
            STREAMS,
        ),
        caps in proptest::collection::vec(1usize..6, 1..20),
    ) {
        let mut total = 0;
        let mut queues: Vec<VecDeque<Ingress<u64>>> = streams
            .into_iter()
            .enumerate()
            .map(|(q, msgs)| {
                msgs.into_iter()
                    .enumerate()
                    .map(|(k, (kind, s))| match kind {
                        0 => Ingress::Run(s),
                        1 => Ingress::Advance(s),
                        // Each item's value names it (stream and place).
                        _ => {
                            total += 1;
                            Ingress::Item((q * 1000 + k) as u64)
                        }
                    })
                    .collect()
            })
            .collect();
        let mut m = Merge::new(STREAMS);
        let mut got = Vec::new();
        for cap in caps.into_iter().chain([usize::MAX]) {
            m.release(|i| queues[i].pop_front(), cap, |v| got.push(v));
        }
        let waiting = queues
            .iter()
            .flatten()
            .filter(|x| matches!(x, Ingress::Item(_)))
            .count() as u64;
        let mut seen = got.clone();
        seen.sort_unstable();
        seen.dedup();
        prop_assert_eq!(seen.len(), got.len(), "an item went out twice");
        prop_assert_eq!(m.stats().released, got.len() as u64);
        prop_assert_eq!(m.stats().released + m.stats().late + waiting, total);
    }
}

const STREAMS: usize = 4;

/// One queue of messages per stream.
type Streams = Vec<VecDeque<Ingress<u64>>>;

/// The replicas' streams of arrival numbers `0..n`, the way the preprocess replicas send
/// them, and the numbers that carry items, in order, with `n`. `frames[k]`: a stream, a kind
/// and a count of consecutive numbers that go to that stream with that kind:
///
/// - 0: dropped by the replica, which advances its stream past it;
/// - 1: an item, and the distributor tells the other streams the number is not theirs;
/// - 2: an item;
/// - 3: dropped by the replica without a word, and the distributor tells the others.
///
/// A stream's item continues its run where every number since the run's start is the
/// stream's own (nothing in between was advanced past or punted); anywhere else it starts a
/// run. The number `punt` (if any) goes out of band: its stream's run ends there.
fn streams(frames: &[(u8, u8, u8)], punt: Option<u64>) -> (Streams, (Vec<u64>, u64)) {
    let mut queues: Vec<VecDeque<Ingress<u64>>> = (0..STREAMS).map(|_| VecDeque::new()).collect();
    // Per stream: the last number of its open run.
    let mut open: Vec<Option<u64>> = vec![None; STREAMS];
    let mut expect = Vec::new();
    let mut seq = 0u64;
    for &(stream, kind, count) in frames {
        let s = stream as usize;
        for _ in 0..count {
            if Some(seq) == punt {
                open[s] = None;
            } else {
                let continues = open[s].is_some_and(|l| l + 1 == seq);
                match kind {
                    0 => {
                        queues[s].push_back(Ingress::Advance(seq));
                        open[s] = None;
                    }
                    3 => open[s] = open[s].filter(|_| continues).map(|_| seq),
                    _ => {
                        if !continues {
                            queues[s].push_back(Ingress::Run(seq));
                        }
                        queues[s].push_back(Ingress::Item(seq));
                        open[s] = Some(seq);
                        expect.push(seq);
                    }
                }
                if kind % 2 == 1 {
                    for (o, q) in queues.iter_mut().enumerate() {
                        if o != s {
                            q.push_back(Ingress::Advance(seq));
                            open[o] = None;
                        }
                    }
                }
            }
            seq += 1;
        }
    }
    (queues, (expect, seq))
}

/// Every stream announces the last number.
fn close(queues: &mut [VecDeque<Ingress<u64>>], n: u64) {
    for q in queues.iter_mut() {
        q.push_back(Ingress::Advance(n - 1));
    }
}

/// Hand every entry of `queues[group][replica]` to `offer(group, entry)`, the queues picked
/// by `schedule` (an arbitrary interleaving), then round-robin, until all are empty; an entry
/// given back goes back to the front of its queue. `false` when a million steps did not do.
fn deliver<E>(
    queues: &mut [Vec<VecDeque<E>>],
    schedule: Vec<u16>,
    mut offer: impl FnMut(usize, E) -> Result<(), E>,
) -> bool {
    let (groups, replicas) = (queues.len(), queues[0].len());
    let mut steps = schedule.into_iter().map(|x| x as usize).chain(0..);
    for _ in 0..1_000_000 {
        if queues.iter().all(|g| g.iter().all(VecDeque::is_empty)) {
            return true;
        }
        let x = steps.next().unwrap();
        let (g, r) = ((x / replicas) % groups, x % replicas);
        if let Some(e) = queues[g][r].pop_front() {
            if let Err(back) = offer(g, e) {
                queues[g][r].push_front(back);
            }
        }
    }
    false
}

#[test]
fn skip_ahead_policy_bounds_memory_and_counts() {
    let mut r = Reorder::new(8, Overflow::SkipAhead);
    let mut out = Vec::new();
    // Number 0 never arrives; 1..100 do.
    for s in 1..100u64 {
        r.offer(Tagged::item(s, s), &mut out).unwrap();
        assert!(r.held() <= 8);
    }
    assert_eq!(r.stats().skipped, 1);
    assert_eq!(out, (1..100).collect::<Vec<_>>());
    r.offer(Tagged::item(0, 0), &mut out).unwrap();
    assert_eq!(r.stats().late, 1);
}
