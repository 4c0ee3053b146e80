//! The cost of handing the threaded runtime's real work items from one pinned thread to
//! another over `ring::spsc`, the ring that joins its tasks.
//!
//! ```text
//! cargo run --release --example handoff [-- --items 2000000 --rounds 5]
//! ```
//!
//! For each item type that crosses a stage boundary (a preprocess replica's
//! `Ingress<RxWork>` to a protocol group, a group's `(u64, ProtoResult)` to placement,
//! postprocess's `Tagged<Frame>` to the I/O task), and a plain `u64` for reference, a fixed
//! set of items circulates between two threads pinned to two cores: thread A pushes them into
//! one ring, thread B pops them and pushes them back through a second ring. Items carry real
//! frames of a `FrameArena` and are never dropped or rebuilt inside the loop, so what is timed
//! is the hand-off alone: the copy into the ring slot, the index updates, and the cache lines
//! that move between the cores.
//!
//! It prints, per type and burst size (1 = `push`/`pop`, 32 = `push_burst`/`pop_burst`), the
//! time per item and hop (the median and min..max of interleaved rounds; both rings run at
//! once, so this is wall time over the items that crossed one ring), and the one-way latency
//! of a single item bounced back and forth (half the round trip). These are the service
//! times of a hand-off that a model of the threaded runtime takes as input.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flextoe::buf::{Frame, FrameArena};
use flextoe::pipeline::topology::usable_cores;
use flextoe::reorder::{Ingress, Tagged};
use flextoe::ring::spsc;
use flextoe::stages::{ProtoResult, RxWork};
use flextoe::wire::SegmentSummary;

/// Items in circulation (a quarter of each ring, as a loaded stage ring holds).
const POOL: usize = 256;
/// Ring capacity (the runtime's default ring size).
const RING: usize = 1024;

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

/// Pin the calling thread to core `i` of those the process may use (when there are two or
/// more).
fn pin(i: usize) {
    let cores = usable_cores();
    if cores.len() >= 2 {
        core_affinity::set_for_current(core_affinity::CoreId {
            id: cores[i % cores.len()],
        });
    }
}

/// Circulate `pool` between two pinned threads until `items` crossed the first ring, in
/// bursts of `burst`; returns the wall time.
fn circulate<T: Send + 'static>(pool: Vec<T>, items: u64, burst: usize) -> (Duration, Vec<T>) {
    let (mut to_b, mut from_a) = spsc::<T>(RING);
    let (mut to_a, mut from_b) = spsc::<T>(RING);
    let start_flag = Arc::new(AtomicBool::new(false));
    let go = start_flag.clone();
    let b = std::thread::spawn(move || {
        pin(1);
        while !go.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        let mut held: Vec<T> = Vec::with_capacity(RING);
        let mut moved = 0u64;
        while moved < items {
            if burst == 1 {
                if let Some(x) = from_a.pop() {
                    moved += 1;
                    let mut x = x;
                    while let Err(back) = to_a.push(x) {
                        x = back;
                        std::hint::spin_loop();
                    }
                } else {
                    std::hint::spin_loop();
                }
            } else {
                let n = from_a.pop_burst(&mut held, burst);
                if n == 0 {
                    std::hint::spin_loop();
                    continue;
                }
                moved += n as u64;
                while !held.is_empty() {
                    if to_a.push_burst(&mut held) == 0 {
                        std::hint::spin_loop();
                    }
                }
            }
        }
    });
    pin(0);
    let mut pool = pool;
    let total = pool.len();
    let t0 = Instant::now();
    start_flag.store(true, Ordering::Release);
    let mut sent = 0u64;
    let mut back: Vec<T> = Vec::with_capacity(RING);
    // Thread A: push what it holds (up to the count), take back what B returned.
    while sent < items {
        if burst == 1 {
            if let Some(x) = pool.pop() {
                match to_b.push(x) {
                    Ok(()) => sent += 1,
                    Err(x) => pool.push(x),
                }
            }
            if let Some(x) = from_b.pop() {
                pool.push(x);
            }
        } else {
            let want = burst.min((items - sent) as usize).min(pool.len());
            if want > 0 {
                let mut chunk: Vec<T> = pool.drain(pool.len() - want..).collect();
                let n = to_b.push_burst(&mut chunk);
                sent += n as u64;
                pool.append(&mut chunk);
            }
            from_b.pop_burst(&mut back, burst);
            pool.append(&mut back);
        }
    }
    b.join().expect("thread B");
    let el = t0.elapsed();
    // Everything comes home: nothing was lost or duplicated on the way.
    while pool.len() < total {
        if let Some(x) = from_b.pop() {
            pool.push(x);
        }
    }
    (el, pool)
}

/// One item bounced between the two threads `trips` times; returns the one-way latency.
fn bounce<T: Send + 'static>(item: T, trips: u64) -> (Duration, T) {
    let (mut to_b, mut from_a) = spsc::<T>(RING);
    let (mut to_a, mut from_b) = spsc::<T>(RING);
    let b = std::thread::spawn(move || {
        pin(1);
        for _ in 0..trips {
            let x = loop {
                if let Some(x) = from_a.pop() {
                    break x;
                }
                std::hint::spin_loop();
            };
            if to_a.push(x).is_err() {
                unreachable!("one item in a ring of {RING}");
            }
        }
    });
    pin(0);
    let mut x = item;
    let t0 = Instant::now();
    for _ in 0..trips {
        if to_b.push(x).is_err() {
            unreachable!("one item in a ring of {RING}");
        }
        x = loop {
            if let Some(x) = from_b.pop() {
                break x;
            }
            std::hint::spin_loop();
        };
    }
    let el = t0.elapsed();
    b.join().expect("thread B");
    (el / (2 * trips as u32).max(1), x)
}

fn summary() -> SegmentSummary {
    SegmentSummary {
        payload_len: 64,
        ..SegmentSummary::default()
    }
}

/// How one item type is made (from a frame of the arena) and named.
struct Kind {
    name: &'static str,
    size: usize,
    run: fn(&FrameArena, u64, usize) -> Duration,
    latency: fn(&FrameArena, u64) -> Duration,
}

fn frame(arena: &FrameArena) -> Frame {
    arena.alloc().expect("a frame")
}

fn kinds() -> Vec<Kind> {
    vec![
        Kind {
            name: "u64 (reference)",
            size: std::mem::size_of::<u64>(),
            run: |_, n, b| circulate((0..POOL as u64).collect(), n, b).0,
            latency: |_, t| bounce(7u64, t).0,
        },
        Kind {
            name: "Ingress<RxWork> (preprocess -> protocol)",
            size: std::mem::size_of::<Ingress<RxWork>>(),
            run: |a, n, b| {
                let pool = (0..POOL as u64)
                    .map(|i| {
                        Ingress::Item(
                            i,
                            RxWork {
                                flow: i as u32,
                                summary: summary(),
                                frame: frame(a),
                            },
                        )
                    })
                    .collect();
                let (el, pool) = circulate(pool, n, b);
                for it in pool {
                    if let Ingress::Item(_, w) = it {
                        a.free(w.frame);
                    }
                }
                el
            },
            latency: |a, t| {
                let w = RxWork {
                    flow: 1,
                    summary: summary(),
                    frame: frame(a),
                };
                let (el, it) = bounce(Ingress::Item(1, w), t);
                if let Ingress::Item(_, w) = it {
                    a.free(w.frame);
                }
                el
            },
        },
        Kind {
            name: "(u64, ProtoResult) (protocol -> placement)",
            size: std::mem::size_of::<(u64, ProtoResult)>(),
            run: |_, n, b| {
                let pool = (0..POOL as u64)
                    .map(|i| (i, ProtoResult::default()))
                    .collect();
                circulate(pool, n, b).0
            },
            latency: |_, t| bounce((1u64, ProtoResult::default()), t).0,
        },
        Kind {
            name: "Tagged<Frame> (postprocess -> I/O)",
            size: std::mem::size_of::<Tagged<Frame>>(),
            run: |a, n, b| {
                let pool = (0..POOL as u64)
                    .map(|i| Tagged::item(i, frame(a)))
                    .collect();
                let (el, pool) = circulate(pool, n, b);
                for f in pool.into_iter().filter_map(|t| t.item) {
                    a.free(f);
                }
                el
            },
            latency: |a, t| {
                let (el, it) = bounce(Tagged::item(1, frame(a)), t);
                if let Some(f) = it.item {
                    a.free(f);
                }
                el
            },
        },
    ]
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
                let el = (k.run)(&arena, a.items, burst);
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
}
