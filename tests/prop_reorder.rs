//! Property tests of the reorder stages: any interleaving of tagged items from N replicas is
//! released in the original per-group order, with nothing lost or duplicated.

#[path = "common/pops.rs"]
mod pops;

use std::collections::VecDeque;

use flextoe::reorder::{merge_from_queues, Ingress, Merge, Overflow, Reorder, Tagged};
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
        // Arbitrary interleaving first, then round-robin until everything is delivered.
        let mut steps = schedule.into_iter().map(|x| x as usize).chain(0..);
        let mut guard = 0;
        while queues.iter().any(|g| g.iter().any(|q| !q.is_empty())) {
            guard += 1;
            prop_assert!(guard < 1_000_000, "no progress");
            let x = steps.next().unwrap();
            let (g, r) = ((x / REPLICAS) % GROUPS, x % REPLICAS);
            if let Some(t) = queues[g][r].pop_front() {
                if let Err(back) = stages[g].offer(t, &mut got[g]) {
                    queues[g][r].push_front(back);
                }
            }
        }
        prop_assert_eq!(got, expect);
        for s in &stages {
            prop_assert_eq!(s.held(), 0);
            prop_assert_eq!(s.stats().late, 0);
        }
    }

    /// Ingress: one sequence space with gaps, split over ordered streams with advances.
    #[test]
    fn merge_restores_arrival_order(
        frames in proptest::collection::vec((0u8..4, 0u8..4), 1..300),
        schedule in proptest::collection::vec((0u8..4, 1u8..8), 1..400),
    ) {
        let (mut queues, expect) = streams(&frames);
        close(&mut queues, frames.len());
        // Deliver the streams in arbitrary chunks.
        let mut m = Merge::new(STREAMS);
        let mut got = Vec::new();
        let mut partial: Vec<VecDeque<Ingress<u64>>> = (0..STREAMS).map(|_| VecDeque::new()).collect();
        for (s, n) in schedule {
            let s = s as usize;
            for _ in 0..n {
                if let Some(x) = queues[s].pop_front() {
                    partial[s].push_back(x);
                }
            }
            let mut out = Vec::new();
            merge_from_queues(&mut m, &mut partial, &mut out);
            got.extend(out.into_iter().map(|(seq, v)| { assert_eq!(seq, v); v }));
        }
        for s in 0..STREAMS {
            partial[s].extend(queues[s].drain(..));
        }
        let mut out = Vec::new();
        merge_from_queues(&mut m, &mut partial, &mut out);
        got.extend(out.into_iter().map(|(_, v)| v));
        prop_assert_eq!(got, expect);
    }
}

const STREAMS: usize = 4;

/// The replicas' streams of arrival numbers `0..frames.len()` (`frames[n]`: the stream
/// number `n` went to, and 0 for a frame it dropped, odd for one the distributor also
/// announced to the other streams), and the numbers that carry items, in order.
fn streams(frames: &[(u8, u8)]) -> (Vec<VecDeque<Ingress<u64>>>, Vec<u64>) {
    let mut queues: Vec<VecDeque<Ingress<u64>>> = (0..STREAMS).map(|_| VecDeque::new()).collect();
    let mut expect = Vec::new();
    for (seq, (stream, kind)) in frames.iter().enumerate() {
        let seq = seq as u64;
        let s = *stream as usize;
        if *kind == 0 {
            // Dropped by the replica (or for another group): only an advance.
            queues[s].push_back(Ingress::Advance(seq));
        } else {
            queues[s].push_back(Ingress::Item(seq, seq));
            expect.push(seq);
        }
        // The distributor tells the others that this number is not theirs (sometimes late).
        if kind % 2 == 1 {
            for (o, q) in queues.iter_mut().enumerate() {
                if o != s {
                    q.push_back(Ingress::Advance(seq));
                }
            }
        }
    }
    (queues, expect)
}

/// Every stream announces the last number.
fn close(queues: &mut [VecDeque<Ingress<u64>>], n: usize) {
    for q in queues.iter_mut() {
        q.push_back(Ingress::Advance(n as u64 - 1));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Releasing a run at a time (`Merge::release`, with any cap per call) lets out the
    /// same items, in the same order, as one `pop` after every message, after every
    /// delivery of messages, and counts the same.
    #[test]
    fn runs_release_what_pops_release(
        frames in proptest::collection::vec((0u8..4, 0u8..4), 1..300),
        schedule in proptest::collection::vec((0u8..4, 1u8..8, 1usize..6), 1..400),
    ) {
        let (mut queues, expect) = streams(&frames);
        close(&mut queues, frames.len());
        let got = runs_against_pops(queues, &schedule);
        prop_assert_eq!(got, expect);
    }

    /// Releasing below a limit (an item numbered `limit` came out of band and must go
    /// first) lets out exactly the items numbered below it, in order, with any cap per
    /// call; `floor` then says the limit is reached, and a release without a limit lets out
    /// the rest.
    #[test]
    fn release_below_lets_out_exactly_the_items_below_the_limit(
        frames in proptest::collection::vec((0u8..4, 0u8..4), 1..300),
        limit in 0u64..320,
        cap in 1usize..40,
    ) {
        let (mut queues, expect) = streams(&frames);
        close(&mut queues, frames.len());
        let mut m = Merge::new(STREAMS);
        let mut got = Vec::new();
        while m.release_below(|i| queues[i].pop_front(), cap, limit, |_, v| got.push(v)) > 0 {}
        let below: Vec<u64> = expect.iter().copied().filter(|s| *s < limit).collect();
        prop_assert_eq!(&got, &below);
        prop_assert!(m.floor() >= limit.min(frames.len() as u64), "floor {}", m.floor());
        while m.release(|i| queues[i].pop_front(), cap, |_, v| got.push(v)) > 0 {}
        prop_assert_eq!(got, expect);
    }

    /// The same with streams no well-behaved producer would send: numbers out of order,
    /// repeated within a stream and across streams (late items, ties), advances anywhere.
    #[test]
    fn runs_release_what_pops_release_from_broken_streams(
        streams in proptest::collection::vec(
            proptest::collection::vec((any::<bool>(), 0u64..40), 0..40),
            STREAMS,
        ),
        schedule in proptest::collection::vec((0u8..4, 1u8..8, 1usize..6), 1..100),
    ) {
        // Each item's value names it (stream and place), so that the order of two items
        // of one number shows.
        let queues = streams
            .into_iter()
            .enumerate()
            .map(|(q, msgs)| {
                msgs.into_iter()
                    .enumerate()
                    .map(|(k, (item, s))| {
                        if item {
                            Ingress::Item(s, (q * 1000 + k) as u64)
                        } else {
                            Ingress::Advance(s)
                        }
                    })
                    .collect()
            })
            .collect();
        runs_against_pops(queues, &schedule);
    }
}

/// Deliver `queues` to two merges in the chunks `schedule` gives (stream, messages, cap),
/// then the rest: one releases runs (first a call capped at `cap`, which must let out as
/// many items as pops would, up to the cap; then calls until nothing more goes out), the
/// other pops after every message. After every delivery both have let out the same items
/// in the same order and count the same. Returns what they let out.
fn runs_against_pops(
    mut queues: Vec<VecDeque<Ingress<u64>>>,
    schedule: &[(u8, u8, usize)],
) -> Vec<u64> {
    let (mut runs, mut pops) = (Merge::new(STREAMS), Merge::new(STREAMS));
    let mut by_runs: Vec<VecDeque<Ingress<u64>>> = (0..STREAMS).map(|_| VecDeque::new()).collect();
    let mut by_pops = by_runs.clone();
    let (mut got_runs, mut got_pops) = (Vec::new(), Vec::new());
    let mut step = |s: usize, n: usize, cap: usize, queues: &mut [VecDeque<Ingress<u64>>]| {
        for _ in 0..n {
            if let Some(x) = queues[s].pop_front() {
                by_runs[s].push_back(x.clone());
                by_pops[s].push_back(x);
            }
        }
        let before = got_pops.len();
        pops::merge_by_pops(&mut pops, &mut by_pops, |_, v| got_pops.push(v));
        let popped = got_pops.len() - before;
        let first = runs.release(|i| by_runs[i].pop_front(), cap, |_, v| got_runs.push(v));
        assert_eq!(first, popped.min(cap), "a capped call lets out what it may");
        while runs.release(|i| by_runs[i].pop_front(), cap, |_, v| got_runs.push(v)) > 0 {}
        assert_eq!(&got_runs, &got_pops);
        assert_eq!(runs.stats(), pops.stats());
    };
    for &(s, n, cap) in schedule {
        step(s as usize % STREAMS, n as usize, cap, &mut queues);
    }
    for s in 0..STREAMS {
        let n = queues[s].len();
        step(s, n, 3, &mut queues);
    }
    got_runs
}

/// Two streams holding the same number (a broken producer): the lower-numbered stream's
/// item goes first, by runs as by pops.
#[test]
fn runs_break_ties_as_pops_do() {
    let streams = || {
        vec![
            VecDeque::from([Ingress::Item(5, 'a')]),
            VecDeque::from([Ingress::Item(3, 'b'), Ingress::Item(5, 'c')]),
        ]
    };
    let mut by_runs = Vec::new();
    merge_from_queues(&mut Merge::new(2), &mut streams(), &mut by_runs);
    assert_eq!(by_runs, vec![(3, 'b'), (5, 'a'), (5, 'c')]);
    let mut by_pops = Vec::new();
    pops::merge_by_pops(&mut Merge::new(2), &mut streams(), |s, v| {
        by_pops.push((s, v))
    });
    assert_eq!(by_pops, by_runs);
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
