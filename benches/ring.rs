//! The SPSC burst ring against crossbeam-channel, two threads, 8-byte items, in one run:
//! single items, and bursts / arrays of 32.
//!
//! ```text
//! cargo bench --bench ring
//! ```

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flextoe::ring::spsc;

const CAP: usize = 1024;

fn spsc_single(items: u64) -> Duration {
    let (mut p, mut c) = spsc::<u64>(CAP);
    let t = std::thread::spawn(move || {
        let mut n = 0;
        while n < items {
            if c.pop().is_some() {
                n += 1;
            } else {
                std::hint::spin_loop();
            }
        }
    });
    let start = Instant::now();
    let mut i = 0;
    while i < items {
        if p.push(i).is_ok() {
            i += 1;
        } else {
            std::hint::spin_loop();
        }
    }
    t.join().unwrap();
    start.elapsed()
}

fn spsc_burst(items: u64) -> Duration {
    let (mut p, mut c) = spsc::<u64>(CAP);
    let t = std::thread::spawn(move || {
        let mut n = 0u64;
        let mut out = Vec::with_capacity(32);
        while n < items {
            out.clear();
            let k = c.pop_burst(&mut out, 32);
            if k == 0 {
                std::hint::spin_loop();
            }
            n += k as u64;
        }
    });
    let start = Instant::now();
    let mut i = 0;
    let mut burst = Vec::with_capacity(32);
    while i < items {
        while burst.len() < 32 && i + (burst.len() as u64) < items {
            burst.push(i + burst.len() as u64);
        }
        let k = p.push_burst(&mut burst);
        if k == 0 {
            std::hint::spin_loop();
        }
        i += k as u64;
    }
    t.join().unwrap();
    start.elapsed()
}

fn channel_single(items: u64) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<u64>(CAP);
    let t = std::thread::spawn(move || {
        for _ in 0..items {
            rx.recv().unwrap();
        }
    });
    let start = Instant::now();
    for i in 0..items {
        tx.send(i).unwrap();
    }
    t.join().unwrap();
    start.elapsed()
}

fn channel_array(items: u64) -> Duration {
    let msgs = items.div_ceil(32);
    let (tx, rx) = crossbeam_channel::bounded::<[u64; 32]>(CAP / 32);
    let t = std::thread::spawn(move || {
        for _ in 0..msgs {
            rx.recv().unwrap();
        }
    });
    let start = Instant::now();
    for m in 0..msgs {
        let mut a = [0u64; 32];
        for (k, v) in a.iter_mut().enumerate() {
            *v = m * 32 + k as u64;
        }
        tx.send(a).unwrap();
    }
    t.join().unwrap();
    start.elapsed()
}

fn rings(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_8B_items");
    const ITEMS: u64 = 1 << 20;
    g.throughput(Throughput::Elements(ITEMS));
    g.sample_size(10);
    g.bench_function("flextoe_spsc/single", |b| {
        b.iter_custom(|n| (0..n).map(|_| spsc_single(ITEMS)).sum())
    });
    g.bench_function("crossbeam_channel/single", |b| {
        b.iter_custom(|n| (0..n).map(|_| channel_single(ITEMS)).sum())
    });
    g.bench_function("flextoe_spsc/burst32", |b| {
        b.iter_custom(|n| (0..n).map(|_| spsc_burst(ITEMS)).sum())
    });
    g.bench_function("crossbeam_channel/array32", |b| {
        b.iter_custom(|n| (0..n).map(|_| channel_array(ITEMS)).sum())
    });
    g.finish();
}

criterion_group!(benches, rings);
criterion_main!(benches);
