//! The cost of handing the threaded runtime's real work items from one pinned thread to
//! another over `ring::spsc`, the ring that joins its tasks.
//!
//! ```text
//! cargo run --release --example handoff [-- --items 2000000 --rounds 5]
//! ```
//!
//! For each item type that crosses a stage boundary (a preprocess replica's
//! `Ingress<RxWork>` to a protocol group, a group's `(u64, ProtoResult)` to placement in
//! bursts of `ring::burst_spsc`, postprocess's `Sequenced<Frame>` to the I/O task), a plain
//! `u64` for reference, and two other ways to move protocol results: one per ring slot (as
//! the runtime did before its result links moved bursts), and a `u64` slot number whose
//! result waits in a shared slab (each end writes or reads the result's words in the slot), a fixed
//! set of items circulates between two threads pinned to two cores: thread A pushes them into
//! one ring, thread B pops them and pushes them back through a second ring. Items carry real
//! frames of a `FrameArena` and are never dropped or rebuilt inside the loop, so what is timed
//! is the hand-off alone: the copy into the ring slot, the index updates, and the cache lines
//! that move between the cores.
//!
//! It prints, per type and burst size (1 = `push`/`pop`, 32 = `push_burst`/`pop_burst`; for
//! results in bursts, the results per vector, one vector per push), the
//! time per item and hop (the median and min..max of interleaved rounds; both rings run at
//! once, so this is wall time over the items that crossed one ring), and the one-way latency
//! of a single item bounced back and forth (half the round trip). These are the service
//! times of a hand-off that a model of the threaded runtime takes as input.
//!
//! Then a connection's byte ring (256 KiB) with its two ends on the two pinned threads, as
//! placement writes segments' payload and the application reads it (the writer running
//! free, waking the reader after each write): each end's time per
//! call that moved bytes, for 64- and 1460-byte chunks, next to the cross-core round trip of
//! one cache line read before each round (on a virtual machine it changes with where the
//! host runs the two virtual CPUs, and every figure with it).

#[path = "support/hops.rs"]
mod hops;

use flextoe::buf::FrameArena;
use flextoe::pipeline::topology::usable_cores;
use std::time::Duration;

use hops::{kinds, line_round_trip, payload, POOL, PROBE_TRIPS};

struct Args {
    items: u64,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args {
        items: 2_000_000,
        rounds: 5,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).map(String::as_str).unwrap_or("");
        match v[i].as_str() {
            "--items" => a.items = val.parse().expect("--items N"),
            "--rounds" => a.rounds = val.parse().expect("--rounds N"),
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other} (--items N, --rounds N)"),
        }
        i += 2;
    }
    a
}

fn median_min_max(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let a = args();
    let arena = FrameArena::new(4 * POOL).expect("frame arena");
    let cores = usable_cores().len();
    println!(
        "hand-off over ring::spsc between two pinned threads ({cores} cores here), {} items per run, {} rounds",
        a.items, a.rounds
    );
    println!(
        "{:<44} {:>6} {:>6} {:>22} {:>14}",
        "item", "bytes", "burst", "ns/item/hop", "one-way ns"
    );
    let kinds = kinds();
    for k in &kinds {
        for burst in [1usize, 32] {
            // Interleaved with the other burst size of the same type, rounds alternating.
            let mut ns = Vec::new();
            for _ in 0..a.rounds {
                let el = (k.run)(&arena, a.items, burst, true);
                ns.push(el.as_nanos() as f64 / a.items as f64);
            }
            let (med, lo, hi) = median_min_max(ns);
            let lat = if burst == 1 {
                let mut l: Vec<f64> = (0..a.rounds)
                    .map(|_| (k.latency)(&arena, 100_000).as_nanos() as f64)
                    .collect();
                l.sort_by(|a, b| a.total_cmp(b));
                format!("{:.0}", l[l.len() / 2])
            } else {
                "-".into()
            };
            println!(
                "{:<44} {:>6} {:>6} {:>8.1} ({:.1}..{:.1}) {:>14}",
                k.name, k.size, burst, med, lo, hi, lat
            );
        }
    }
    // Every frame came home and went back to the arena.
    assert_eq!(arena.in_use(), 0, "a frame was lost in circulation");
    byte_ring_costs(a.rounds);
}

/// A connection's byte ring (`hops::payload`), the two ends on two pinned threads: each
/// end's time per call that moved bytes, for 64- and 1460-byte chunks (median and min..max
/// of the rounds), with the cross-core round trip of one cache line read before each round
/// (`hops::line_round_trip`: the machine's state when the round ran).
fn byte_ring_costs(rounds: usize) {
    println!(
        "\nbyte ring (256 KiB) between two pinned threads: ns per call that moved bytes, {rounds} rounds"
    );
    println!(
        "{:<8} {:>26} {:>26} {:>18}",
        "chunk", "writer", "reader", "line round trip"
    );
    for (chunk, bytes) in [(64usize, 32u64 << 20), (1460, 256 << 20)] {
        let (mut w, mut r, mut rt) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            rt.push(line_round_trip(PROBE_TRIPS));
            let c = std::thread::spawn(move || payload(chunk, bytes, true, Duration::ZERO))
                .join()
                .expect("byte ring run");
            w.push(c.write_ns);
            r.push(c.read_ns);
        }
        let show = |v: Vec<f64>| {
            let (m, lo, hi) = median_min_max(v);
            format!("{m:.1} ({lo:.1}..{hi:.1})")
        };
        println!(
            "{:<8} {:>26} {:>26} {:>18}",
            chunk,
            show(w),
            show(r),
            show(rt)
        );
    }
}
