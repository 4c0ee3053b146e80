//! The threaded runtime's sequencing, per item:
//!
//! - `merge`: a flow group's merge of its preprocess replicas' streams. Bursts of 32
//!   arrival numbers are dealt round-robin to the replicas, each replica's stream carries
//!   its burst's items and then an advance, and the replicas that did not get the burst are
//!   told of it (as the runtime's dealer does). `Merge::release` over streams tagged per run
//!   (one `Ingress::Run` per burst, as the runtime sends them) against the same merge with
//!   a number on every item (the way the runtime tagged them before): both let a run out
//!   at a time, the second compares every item's number with the bound.
//! - `reorder`: the egress reorder of postprocess replicas' frames: bursts of 32 results
//!   dealt round-robin, each replica's burst offered in turn (the replicas finishing in
//!   order), and with two replicas the second's burst offered before the first's.
//! - `reorder, ACK bursts`: the same for a bulk receiver's results, where 31 of a burst's 32
//!   send nothing (their ACKs coalesced into the last): a postprocess replica's output built
//!   and offered with a tombstone per number (`Tagged`, as the runtime did before) against
//!   consecutive tombstones as one gap (`Sequenced`, as it does now). Both build the
//!   replica's output and offer it in the timed loop.
//!
//! ```text
//! cargo bench --bench sequencing
//! ```

use std::collections::VecDeque;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use flextoe::reorder::{Ingress, Merge, Overflow, Reorder, Sequenced, Tagged};

const BURST: u64 = 32;
const BURSTS: u64 = 64;

/// The bursts' streams, tagged per run.
fn streams(replicas: usize) -> Vec<VecDeque<Ingress<u64>>> {
    let mut qs: Vec<VecDeque<Ingress<u64>>> = (0..replicas).map(|_| VecDeque::new()).collect();
    for b in 0..BURSTS {
        let first = b * BURST;
        let to = (b as usize) % replicas;
        qs[to].push_back(Ingress::Run(first));
        for s in first..first + BURST {
            qs[to].push_back(Ingress::Item(s));
        }
        for q in qs.iter_mut() {
            q.push_back(Ingress::Advance(first + BURST - 1));
        }
    }
    qs
}

fn by_runs(m: &mut Merge<u64>, qs: &mut [VecDeque<Ingress<u64>>]) -> u64 {
    let mut sum = 0;
    m.release(|i| qs[i].pop_front(), usize::MAX, |v| sum += v);
    sum
}

/// A message with a number on every item.
enum Numbered {
    Item(u64, u64),
    Advance(u64),
}

/// The same bursts' streams, a number on every item.
fn numbered_streams(replicas: usize) -> Vec<VecDeque<Numbered>> {
    let mut qs: Vec<VecDeque<Numbered>> = (0..replicas).map(|_| VecDeque::new()).collect();
    for b in 0..BURSTS {
        let first = b * BURST;
        let to = (b as usize) % replicas;
        for s in first..first + BURST {
            qs[to].push_back(Numbered::Item(s, s));
        }
        for q in qs.iter_mut() {
            q.push_back(Numbered::Advance(first + BURST - 1));
        }
    }
    qs
}

/// The merge over numbered items: the stream holding the lowest number lets its items out
/// up to the lowest number another stream may still deliver, each compared with it.
struct NumberedMerge {
    heads: Vec<Option<(u64, u64)>>,
    /// The lowest number each stream may still deliver, when it holds no item.
    next: Vec<u64>,
}

impl NumberedMerge {
    fn new(streams: usize) -> Self {
        NumberedMerge {
            heads: vec![None; streams],
            next: vec![0; streams],
        }
    }

    fn low(&self, i: usize) -> u64 {
        self.heads[i].map_or(self.next[i], |(s, _)| s)
    }

    fn fill(&mut self, i: usize, qs: &mut [VecDeque<Numbered>]) {
        while self.heads[i].is_none() {
            match qs[i].pop_front() {
                Some(Numbered::Item(s, v)) => self.heads[i] = Some((s, v)),
                Some(Numbered::Advance(s)) => self.next[i] = self.next[i].max(s + 1),
                None => break,
            }
        }
    }

    fn release(&mut self, qs: &mut [VecDeque<Numbered>], mut out: impl FnMut(u64)) {
        loop {
            for i in 0..self.heads.len() {
                self.fill(i, qs);
            }
            let Some((best, first)) = (0..self.heads.len())
                .filter_map(|i| self.heads[i].map(|(s, _)| (i, s)))
                .min_by_key(|(_, s)| *s)
            else {
                return;
            };
            let bound = (0..self.heads.len())
                .filter(|&j| j != best)
                .map(|j| self.low(j))
                .min()
                .unwrap_or(u64::MAX);
            if first > bound {
                return;
            }
            while let Some((s, v)) = self.heads[best] {
                if s > bound {
                    break;
                }
                self.heads[best] = None;
                self.next[best] = s + 1;
                out(v);
                self.fill(best, qs);
            }
        }
    }
}

fn by_numbers(m: &mut NumberedMerge, qs: &mut [VecDeque<Numbered>]) -> u64 {
    let mut sum = 0;
    m.release(qs, |v| sum += v);
    sum
}

fn merge(c: &mut Criterion) {
    let want: u64 = (0..BURST * BURSTS).sum();
    let mut g = c.benchmark_group("merge");
    g.throughput(Throughput::Elements(BURST * BURSTS));
    for replicas in [1, 2, 4] {
        g.bench_function(format!("{replicas} replicas, a number per item"), |b| {
            b.iter_batched_ref(
                || (NumberedMerge::new(replicas), numbered_streams(replicas)),
                |(m, qs)| assert_eq!(by_numbers(m, qs), want),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("{replicas} replicas, a number per run"), |b| {
            b.iter_batched_ref(
                || (Merge::new(replicas), streams(replicas)),
                |(m, qs)| assert_eq!(by_runs(m, qs), want),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// Offer `BURSTS` bursts to a reorder stage; with `swap`, each pair of bursts arrives
/// second first.
fn reorder_bursts(r: &mut Reorder<u64>, out: &mut Vec<u64>, swap: bool) -> u64 {
    let mut sum = 0;
    for pair in 0..BURSTS / 2 {
        let (a, b) = (pair * 2 * BURST, (pair * 2 + 1) * BURST);
        let order = if swap { [b, a] } else { [a, b] };
        for first in order {
            for s in first..first + BURST {
                r.offer(Tagged::item(s, s), out)
                    .unwrap_or_else(|_| unreachable!("the window holds two bursts"));
            }
        }
        sum += out.drain(..).sum::<u64>();
    }
    sum
}

fn reorder(c: &mut Criterion) {
    let want: u64 = (0..BURST * BURSTS).sum();
    let mut g = c.benchmark_group("reorder");
    g.throughput(Throughput::Elements(BURST * BURSTS));
    for (name, swap) in [("in order", false), ("bursts swapped in pairs", true)] {
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || {
                    (
                        Reorder::new(4 * BURST as usize, Overflow::Backpressure),
                        Vec::with_capacity(2 * BURST as usize),
                    )
                },
                |(r, out)| assert_eq!(reorder_bursts(r, out, swap), want),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// The numbers of `BURSTS` bursts, in pairs, the second of each pair first with `swap`.
fn burst_order(swap: bool) -> impl Iterator<Item = u64> {
    (0..BURSTS / 2).flat_map(move |pair| {
        let (a, b) = (pair * 2 * BURST, (pair * 2 + 1) * BURST);
        if swap {
            [b, a]
        } else {
            [a, b]
        }
    })
}

/// Whether result `s` sends a frame: the last of each burst (the burst's one ACK).
fn sends(s: u64) -> bool {
    s % BURST == BURST - 1
}

/// A bulk receiver's bursts, a tombstone per number.
fn acks_tagged(
    r: &mut Reorder<u64>,
    out: &mut Vec<u64>,
    swap: bool,
    buf: &mut Vec<Tagged<u64>>,
) -> u64 {
    let mut sum = 0;
    for first in burst_order(swap) {
        buf.extend((first..first + BURST).map(|s| {
            if sends(s) {
                Tagged::item(s, s)
            } else {
                Tagged::tombstone(s)
            }
        }));
        for t in buf.drain(..) {
            r.offer(t, out)
                .unwrap_or_else(|_| unreachable!("the window holds two bursts"));
        }
        sum += out.drain(..).sum::<u64>();
    }
    sum
}

/// The same bursts, consecutive tombstones as one gap.
fn acks_gaps(
    r: &mut Reorder<u64>,
    out: &mut Vec<u64>,
    swap: bool,
    buf: &mut Vec<Sequenced<u64>>,
) -> u64 {
    let mut sum = 0;
    for first in burst_order(swap) {
        for s in first..first + BURST {
            if sends(s) {
                buf.push(Sequenced::item(s, s));
            } else {
                Sequenced::push_tombstone(buf, s);
            }
        }
        for e in buf.drain(..) {
            r.offer_entry(e, out)
                .unwrap_or_else(|_| unreachable!("the window holds two bursts"));
        }
        sum += out.drain(..).sum::<u64>();
    }
    sum
}

fn reorder_acks(c: &mut Criterion) {
    let want: u64 = (0..BURST * BURSTS).filter(|&s| sends(s)).sum();
    let mut g = c.benchmark_group("reorder, ACK bursts");
    g.throughput(Throughput::Elements(BURST * BURSTS));
    let stage = || Reorder::new(4 * BURST as usize, Overflow::Backpressure);
    for (order, swap) in [("in order", false), ("bursts swapped in pairs", true)] {
        g.bench_function(format!("{order}, a tombstone per number"), |b| {
            b.iter_batched_ref(
                || (stage(), Vec::new(), Vec::with_capacity(BURST as usize)),
                |(r, out, buf)| assert_eq!(acks_tagged(r, out, swap, buf), want),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("{order}, gaps"), |b| {
            b.iter_batched_ref(
                || (stage(), Vec::new(), Vec::with_capacity(BURST as usize)),
                |(r, out, buf)| assert_eq!(acks_gaps(r, out, swap, buf), want),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, merge, reorder, reorder_acks);
criterion_main!(benches);
