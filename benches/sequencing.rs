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
//!
//! ```text
//! cargo bench --bench sequencing
//! ```

use std::collections::VecDeque;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use flextoe::reorder::{Ingress, Merge, Overflow, Reorder, Tagged};

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

criterion_group!(benches, merge, reorder);
criterion_main!(benches);
