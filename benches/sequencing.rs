//! The threaded runtime's sequencing, per item:
//!
//! - `merge`: a flow group's merge of its preprocess replicas' streams, one `Merge::pop`
//!   after every message (the way the group task ran before) against `Merge::release`,
//!   which lets a run out at a time. Bursts of 32 arrival numbers are dealt round-robin to
//!   the replicas, each replica's stream carries its burst's items and then an advance, and
//!   the replicas that did not get the burst are told of it (as the runtime's dealer does).
//! - `reorder`: the egress reorder of postprocess replicas' frames: bursts of 32 results
//!   dealt round-robin, each replica's burst offered in turn (the replicas finishing in
//!   order), and with two replicas the second's burst offered before the first's.
//!
//! ```text
//! cargo bench --bench sequencing
//! ```

#[path = "../tests/common/pops.rs"]
mod pops;

use std::collections::VecDeque;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use flextoe::reorder::{Ingress, Merge, Overflow, Reorder, Tagged};

const BURST: u64 = 32;
const BURSTS: u64 = 64;

fn streams(replicas: usize) -> Vec<VecDeque<Ingress<u64>>> {
    let mut qs: Vec<VecDeque<Ingress<u64>>> = (0..replicas).map(|_| VecDeque::new()).collect();
    for b in 0..BURSTS {
        let first = b * BURST;
        let to = (b as usize) % replicas;
        for s in first..first + BURST {
            qs[to].push_back(Ingress::Item(s, s));
        }
        for q in qs.iter_mut() {
            q.push_back(Ingress::Advance(first + BURST - 1));
        }
    }
    qs
}

fn by_pops(m: &mut Merge<u64>, qs: &mut [VecDeque<Ingress<u64>>]) -> u64 {
    let mut sum = 0;
    pops::merge_by_pops(m, qs, |_, v| sum += v);
    sum
}

fn by_runs(m: &mut Merge<u64>, qs: &mut [VecDeque<Ingress<u64>>]) -> u64 {
    let mut sum = 0;
    m.release(|i| qs[i].pop_front(), usize::MAX, |_, v| sum += v);
    sum
}

fn merge(c: &mut Criterion) {
    let want: u64 = (0..BURST * BURSTS).sum();
    let mut g = c.benchmark_group("merge");
    g.throughput(Throughput::Elements(BURST * BURSTS));
    for replicas in [1, 2, 4] {
        for (name, f) in [
            ("pop per item", by_pops as fn(&mut _, &mut _) -> u64),
            ("release runs", by_runs),
        ] {
            g.bench_function(format!("{replicas} replicas, {name}"), |b| {
                b.iter_batched_ref(
                    || (Merge::new(replicas), streams(replicas)),
                    |(m, qs)| assert_eq!(f(m, qs), want),
                    BatchSize::SmallInput,
                )
            });
        }
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
