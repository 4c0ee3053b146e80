//! Hand-off costs between two pinned threads over `ring::spsc`, with the threaded runtime's
//! real work items, and the cost of payload through a connection's byte ring. Shared by
//! `handoff` and `scaling_model`.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flextoe::buf::{byte_ring, Frame, FrameArena};
use flextoe::host::Waiter;
use flextoe::pipeline::topology::usable_cores;
use flextoe::reorder::{Ingress, Sequenced};
use flextoe::ring::spsc;
use flextoe::ring::{Consumer, Producer};
use flextoe::stages::{ProtoResult, RxWork};
use flextoe::wire::SegmentSummary;

/// Items in circulation (a quarter of each ring, as a loaded stage ring holds).
pub const POOL: usize = 256;
/// Ring capacity (the runtime's default ring size).
const RING: usize = 1024;

/// Pin the calling thread to core `i` of those the process may use (when there are two or
/// more); whether it is pinned.
pub fn pin(i: usize) -> bool {
    let cores = usable_cores();
    cores.len() >= 2
        && core_affinity::set_for_current(core_affinity::CoreId {
            id: cores[i % cores.len()],
        })
}

/// Circulate `pool` between two pinned threads until `items` crossed the first ring, in
/// bursts of `burst`; returns the wall time.
pub fn circulate<T: Send + 'static>(
    pool: Vec<T>,
    items: u64,
    burst: usize,
    cross: bool,
) -> (Duration, Vec<T>) {
    circulate_touching(pool, items, burst, cross, |_| {}, |_| {})
}

/// [`circulate`], where each end calls `send` on an item before it pushes it and `recv`
/// on an item it popped (to write and read what a descriptor stands for).
pub fn circulate_touching<T: Send + 'static>(
    pool: Vec<T>,
    items: u64,
    burst: usize,
    cross: bool,
    send: impl Fn(&mut T) + Send + Clone + 'static,
    recv: impl Fn(&T) + Send + Clone + 'static,
) -> (Duration, Vec<T>) {
    if !cross {
        return circulate_here(pool, items, burst, send, recv);
    }
    let (send_b, recv_b) = (send.clone(), recv.clone());
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
                    recv_b(&x);
                    send_b(&mut x);
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
                for x in &mut held {
                    recv_b(x);
                    send_b(x);
                }
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
            if let Some(mut x) = pool.pop() {
                send(&mut x);
                match to_b.push(x) {
                    Ok(()) => sent += 1,
                    Err(x) => pool.push(x),
                }
            }
            if let Some(x) = from_b.pop() {
                recv(&x);
                pool.push(x);
            }
        } else {
            let want = burst.min((items - sent) as usize).min(pool.len());
            if want > 0 {
                let mut chunk: Vec<T> = pool.drain(pool.len() - want..).collect();
                chunk.iter_mut().for_each(&send);
                let n = to_b.push_burst(&mut chunk);
                sent += n as u64;
                pool.append(&mut chunk);
            }
            from_b.pop_burst(&mut back, burst);
            back.iter().for_each(&recv);
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

/// [`circulate`] on one thread: `items` items cross the first ring and then the second, in
/// bursts of `burst`; the wall time covers both rings (two hops per item).
fn circulate_here<T: Send>(
    mut pool: Vec<T>,
    items: u64,
    burst: usize,
    send: impl Fn(&mut T),
    recv: impl Fn(&T),
) -> (Duration, Vec<T>) {
    let (mut p1, mut c1): (Producer<T>, Consumer<T>) = spsc(RING);
    let (mut p2, mut c2): (Producer<T>, Consumer<T>) = spsc(RING);
    let mut held: Vec<T> = Vec::with_capacity(RING);
    let mut moved = 0u64;
    let t0 = Instant::now();
    while moved < items {
        let want = burst.min((items - moved) as usize).min(pool.len());
        let mut chunk: Vec<T> = pool.drain(pool.len() - want..).collect();
        chunk.iter_mut().for_each(&send);
        p1.push_burst(&mut chunk);
        pool.append(&mut chunk);
        let n = c1.pop_burst(&mut held, burst);
        moved += n as u64;
        for x in &mut held {
            recv(x);
            send(x);
        }
        p2.push_burst(&mut held);
        let before = pool.len();
        c2.pop_burst(&mut pool, burst);
        pool[before..].iter().for_each(&recv);
    }
    let el = t0.elapsed();
    while let Some(x) = c2.pop() {
        pool.push(x);
    }
    (el, pool)
}

/// One item bounced between the two threads `trips` times; returns the one-way latency.
pub fn bounce<T: Send + 'static>(item: T, trips: u64) -> (Duration, T) {
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
pub struct Kind {
    /// The item type and the ring it crosses.
    pub name: &'static str,
    /// Its size in bytes.
    pub size: usize,
    /// Circulate `n` items in bursts of `b` between the two threads (or, when the flag is
    /// false, through both rings on one thread); the wall time.
    pub run: fn(&FrameArena, u64, usize, bool) -> Duration,
    /// One item bounced `t` times; the one-way latency.
    pub latency: fn(&FrameArena, u64) -> Duration,
}

fn frame(arena: &FrameArena) -> Frame {
    arena.alloc().expect("a frame")
}

pub fn kinds() -> Vec<Kind> {
    vec![
        Kind {
            name: "u64 (reference)",
            size: std::mem::size_of::<u64>(),
            run: |_, n, b, x| circulate((0..POOL as u64).collect(), n, b, x).0,
            latency: |_, t| bounce(7u64, t).0,
        },
        Kind {
            name: "Ingress<RxWork> (preprocess -> protocol)",
            size: std::mem::size_of::<Ingress<RxWork>>(),
            run: |a, n, b, x| {
                let pool = (0..POOL as u64)
                    .map(|i| {
                        Ingress::Item(RxWork {
                            flow: i as u32,
                            summary: summary(),
                            frame: frame(a),
                        })
                    })
                    .collect();
                let (el, pool) = circulate(pool, n, b, x);
                for it in pool {
                    if let Ingress::Item(w) = it {
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
                let (el, it) = bounce(Ingress::Item(w), t);
                if let Ingress::Item(w) = it {
                    a.free(w.frame);
                }
                el
            },
        },
        Kind {
            name: "(u64, ProtoResult), one per ring slot",
            size: std::mem::size_of::<(u64, ProtoResult)>(),
            run: |_, n, b, x| {
                let pool = (0..POOL as u64)
                    .map(|i| (i, ProtoResult::default()))
                    .collect();
                circulate(pool, n, b, x).0
            },
            latency: |_, t| bounce((1u64, ProtoResult::default()), t).0,
        },
        Kind {
            name: "Sequenced<Frame> (postprocess -> I/O)",
            size: std::mem::size_of::<Sequenced<Frame>>(),
            run: |a, n, b, x| {
                let pool = (0..POOL as u64)
                    .map(|i| Sequenced::item(i, frame(a)))
                    .collect();
                let (el, pool) = circulate(pool, n, b, x);
                for (_, f) in pool.into_iter().filter_map(Sequenced::into_item) {
                    a.free(f);
                }
                el
            },
            latency: |a, t| {
                let (el, it) = bounce(Sequenced::item(1, frame(a)), t);
                if let Some((_, f)) = it.into_item() {
                    a.free(f);
                }
                el
            },
        },
        Kind {
            name: "(u64, ProtoResult) in bursts (group -> place)",
            size: std::mem::size_of::<Vec<(u64, ProtoResult)>>(),
            // `ring::burst_spsc`'s way: `b` results to a vector, the vectors circulate one per
            // push, the results are written in place and read where they are (no copy into or
            // out of a ring slot). Per result.
            run: |_, n, b, x| {
                let pool = (0..POOL as u64)
                    .map(|i| {
                        (0..b as u64)
                            .map(|k| (i + k, ProtoResult::default()))
                            .collect()
                    })
                    .collect();
                let bursts = n.div_ceil(b as u64);
                circulate_touching(
                    pool,
                    bursts,
                    1,
                    x,
                    |v: &mut Vec<_>| write_results(v),
                    |v: &Vec<_>| read_results(v),
                )
                .0
            },
            latency: |_, t| bounce(vec![(1u64, ProtoResult::default())], t).0,
        },
        Kind {
            name: "u64 slot number, result in a slab",
            size: std::mem::size_of::<u64>(),
            run: |_, n, b, x| {
                let slab = Slab::new();
                let (w, r) = (slab.clone(), slab);
                let pool = (0..POOL as u64).collect();
                circulate_touching(
                    pool,
                    n,
                    b,
                    x,
                    move |i: &mut u64| w.write(*i),
                    move |i| r.read(*i),
                )
                .0
            },
            latency: |_, t| bounce(7u64, t).0,
        },
    ]
}

/// Write every result of a burst in place, as a protocol group builds them.
fn write_results(v: &mut [(u64, ProtoResult)]) {
    for (i, r) in v.iter_mut() {
        *i = i.wrapping_add(1);
        *r = ProtoResult {
            flow: *i as u32,
            acked: *i as u32,
            in_flight: 1,
            stamp: 2,
            cwnd: 3,
            snd_wnd: 4,
            rx_publish: *i,
            tx_release: *i,
            ..ProtoResult::default()
        };
    }
}

/// Read every result of a burst where it lies, as placement does.
fn read_results(v: &[(u64, ProtoResult)]) {
    let sum = v.iter().fold(0u64, |a, (i, r)| {
        a.wrapping_add(*i)
            .wrapping_add(u64::from(r.acked ^ r.cwnd ^ r.snd_wnd ^ r.hdr.seq))
            .wrapping_add(r.rx_publish ^ r.tx_release ^ r.payload.ring_pos)
    });
    std::hint::black_box(sum);
}

/// Words of a protocol result (its size, rounded up to whole words).
const RESULT_WORDS: usize = std::mem::size_of::<ProtoResult>().div_ceil(8);

/// One result's place in a [`Slab`], on cache lines of its own.
#[repr(align(64))]
struct Slot([AtomicU64; RESULT_WORDS]);

/// Results kept where both ends of a ring can reach them, the ring carrying only the slot
/// number (a descriptor of 8 bytes against 144): the producer writes a result's words into
/// its slot before it pushes the number, the consumer reads them after it pops it (relaxed
/// atomics, plain loads and stores here; the ring orders them).
#[derive(Clone)]
struct Slab(Arc<Vec<Slot>>);

impl Slab {
    fn new() -> Self {
        Slab(Arc::new(
            (0..POOL)
                .map(|_| Slot(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        ))
    }

    fn write(&self, i: u64) {
        for (k, w) in self.0[i as usize].0.iter().enumerate() {
            w.store(i ^ k as u64, Ordering::Relaxed);
        }
    }

    fn read(&self, i: u64) {
        let sum = self.0[i as usize]
            .0
            .iter()
            .fold(0u64, |a, w| a.wrapping_add(w.load(Ordering::Relaxed)));
        std::hint::black_box(sum);
    }
}

/// What [`payload`] measured: for each end, its busy time per call that moved bytes (ns)
/// and the bytes such a call moved on average.
#[derive(Clone, Copy, Debug, Default)]
pub struct PayloadCost {
    pub write_ns: f64,
    pub write_bytes: f64,
    pub read_ns: f64,
    pub read_bytes: f64,
}

/// Payload through a connection's byte ring (256 KiB, as `EngineConfig::rx_buffer`) in
/// chunks of `chunk` bytes, as placement writes a segment's payload and the application
/// reads it: the writer `push`es each chunk (copy and publish) and wakes the reader's
/// [`Waiter`] (as the engine's notify stage does for every result that publishes bytes: a
/// full fence, which waits for the copy's stores to leave the store buffer), the reader
/// `pop`s what is there into a 256 KiB buffer. Each end's calls that moved bytes are timed one by one, with
/// the two ends on two pinned threads (`cross`) or taking turns on one (a burst of 32
/// writes, then a read).
///
/// Across cores, `gap` is the time the writer's thread spends on other work between two
/// segments (the rest of the data path, when placement shares its worker): the writer spins
/// that long after each write, so that the reader, polling the ring, catches up and takes
/// each segment as the application does in the runtime. With no gap the writer runs free
/// and the two ends fight over the same lines.
pub fn payload(chunk: usize, bytes: u64, cross: bool, gap: Duration) -> PayloadCost {
    const BUF: usize = 256 * 1024;
    let (mut w, mut r) = byte_ring(BUF);
    let src = vec![7u8; chunk];
    let mut out = vec![0u8; BUF];
    let waiter = Waiter::default();
    let per = |busy: Duration, calls: u64, moved: u64| {
        let calls = calls.max(1) as f64;
        (busy.as_nanos() as f64 / calls, moved as f64 / calls)
    };
    if !cross {
        let (mut wt, mut rt) = (Duration::ZERO, Duration::ZERO);
        let (mut moved, mut writes, mut reads) = (0u64, 0u64, 0u64);
        while moved < bytes {
            // A burst's worth of segments, then the application's read.
            for _ in 0..32 {
                let t0 = Instant::now();
                let pushed = w.push(&src) > 0;
                if pushed {
                    waiter.wake();
                }
                wt += t0.elapsed();
                writes += u64::from(pushed);
            }
            let t1 = Instant::now();
            let n = r.pop(&mut out) as u64;
            rt += t1.elapsed();
            moved += n;
            reads += u64::from(n > 0);
        }
        let (write_ns, write_bytes) = per(wt, writes, moved);
        let (read_ns, read_bytes) = per(rt, reads, moved);
        return PayloadCost {
            write_ns,
            write_bytes,
            read_ns,
            read_bytes,
        };
    }
    let go = Arc::new(AtomicBool::new(false));
    let start = go.clone();
    let reader = std::thread::spawn(move || {
        pin(1);
        while !start.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        let (mut got, mut busy, mut calls) = (0u64, Duration::ZERO, 0u64);
        while got < bytes {
            let t0 = Instant::now();
            let n = r.pop(&mut out);
            if n > 0 {
                busy += t0.elapsed();
                got += n as u64;
                calls += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        (busy, calls, got)
    });
    pin(0);
    go.store(true, Ordering::Release);
    let (mut sent, mut busy, mut calls) = (0u64, Duration::ZERO, 0u64);
    while sent < bytes {
        let t0 = Instant::now();
        let n = w.push(&src);
        if n > 0 {
            waiter.wake();
        }
        let t1 = Instant::now();
        if n > 0 {
            busy += t1 - t0;
            sent += n as u64;
            calls += 1;
            while t1.elapsed() < gap {
                std::hint::spin_loop();
            }
        } else {
            std::hint::spin_loop();
        }
    }
    let (rb, rc, rg) = reader.join().expect("reader thread");
    let (write_ns, write_bytes) = per(busy, calls, sent);
    let (read_ns, read_bytes) = per(rb, rc, rg);
    PayloadCost {
        write_ns,
        write_bytes,
        read_ns,
        read_bytes,
    }
}

/// A value alone on its pair of cache lines.
#[repr(align(128))]
struct Own<T>(T);

impl<T> std::ops::Deref for Own<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The round trip of one cache line between two threads pinned to the first two cores
/// (each waits for the other's store, then stores): ns per round trip, over `trips`. A
/// direct reading of what moving a line between the two cores costs at this moment. NaN
/// where the two threads could not be pinned to two cores, or where the trips took over a
/// second (the two threads then take turns on one core).
pub fn line_round_trip(trips: u64) -> f64 {
    const DEADLINE: Duration = Duration::from_secs(1);
    if usable_cores().len() < 2 {
        return f64::NAN;
    }
    let line = Own(AtomicU64::new(0));
    // Set by the side that gives up; each side checks it every 4096 spins.
    let abort = Own(AtomicBool::new(false));
    // Wait until `line` holds `want`; false once the other side gave up.
    let wait = |want: u64| {
        let mut spins = 0u32;
        while line.load(Ordering::Acquire) != want {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) && abort.load(Ordering::Relaxed) {
                return false;
            }
        }
        true
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            if !pin(1) {
                abort.store(true, Ordering::Relaxed);
                return;
            }
            for i in 0..trips {
                if !wait(2 * i + 1) {
                    return;
                }
                line.store(2 * i + 2, Ordering::Release);
            }
        });
        // This side on a thread of its own too: pinning must not stick to the caller.
        s.spawn(|| {
            if !pin(0) {
                abort.store(true, Ordering::Relaxed);
                return f64::NAN;
            }
            let t0 = Instant::now();
            for i in 0..trips {
                line.store(2 * i + 1, Ordering::Release);
                if !wait(2 * i + 2) {
                    return f64::NAN;
                }
                if i % 1024 == 1023 && t0.elapsed() > DEADLINE {
                    abort.store(true, Ordering::Relaxed);
                    return f64::NAN;
                }
            }
            t0.elapsed().as_nanos() as f64 / trips.max(1) as f64
        })
        .join()
        .unwrap_or(f64::NAN)
    })
}

/// Round trips per probe of [`line_round_trip`] (about a millisecond and a half).
pub const PROBE_TRIPS: u64 = 20_000;
/// A measurement is repeated when a probe around it reads more than this times the usual
/// round trip.
const DISTURBED: f64 = 3.0;
/// Tries per measurement, at most.
const TRIES: usize = 8;
/// Time a program spends repeating measurements (the pauses and the runs thrown away): once
/// it is spent, a disturbed measurement is kept (and counted as such). The last repeat may
/// go past it by one pause and one run.
const REPEAT_BUDGET: Duration = Duration::from_secs(60);

/// Watches the cross-core round trip around measurements that span two cores. On a virtual
/// machine the host may, for seconds at a time, run the two virtual CPUs where a line takes
/// several times as long to cross (seen on the project's machine: 55-70 ns usually, 310-370
/// ns for seconds to minutes at a time; now and then 30 ns); a measurement taken then, or
/// half then, describes another machine than the rest. [`steady`](Self::steady) probes
/// before and after, and repeats the measurement, after a pause, while a probe reads more
/// than three times the usual round trip (the lowest probe so far), until a minute of
/// repeats has been spent. It probes the first two cores the process may use. With fewer
/// than two, or once a probe fails ([`line_round_trip`] gives NaN), it neither probes nor
/// repeats.
pub struct Watch {
    /// Whether there are two cores to probe between.
    on: bool,
    /// Whether a probe failed (and the watch stood aside from then on).
    failed: bool,
    /// Every probe read, ns.
    probes: Vec<f64>,
    /// Time spent on repeats so far.
    spent: Duration,
    /// Measurements repeated, runs thrown away, and the highest round trip that made one
    /// repeat.
    repeated: usize,
    discarded: usize,
    worst: f64,
    /// The higher probe around each measurement kept, to check against the final usual
    /// round trip.
    kept: Vec<f64>,
}

impl Watch {
    /// A watch whose usual round trip starts as the lowest of five probes 0.7 s apart.
    pub fn new() -> Self {
        let (probes, gap) = (5, Duration::from_millis(700));
        let on = usable_cores().len() >= 2;
        let mut w = Watch {
            on,
            failed: false,
            probes: Vec::new(),
            spent: Duration::ZERO,
            repeated: 0,
            discarded: 0,
            worst: 0.0,
            kept: Vec::new(),
        };
        for i in 0..if on { probes } else { 0 } {
            if i > 0 {
                std::thread::sleep(gap);
            }
            if w.probe().is_nan() {
                break;
            }
        }
        w
    }

    /// One probe; a failed one turns the watch off.
    fn probe(&mut self) -> f64 {
        let p = line_round_trip(PROBE_TRIPS);
        if p.is_nan() {
            self.on = false;
            self.failed = true;
        } else {
            self.probes.push(p);
        }
        p
    }

    /// The usual round trip: the lowest probe so far, ns.
    pub fn usual(&self) -> f64 {
        self.probes.iter().copied().fold(f64::INFINITY, f64::min)
    }

    /// Run `f` between two probes; repeat it (up to 8 tries in all, keeping the last; the
    /// pause before each repeat doubles from half a second up to 8 s) while a probe reads
    /// more than three times the usual round trip and the budget for repeats lasts.
    /// `two_cores` false: `f` runs on one core and is simply run.
    pub fn steady<R>(&mut self, two_cores: bool, mut f: impl FnMut() -> R) -> R {
        if !self.on || !two_cores {
            return f();
        }
        let mut tries = 0;
        loop {
            tries += 1;
            let start = Instant::now();
            let before = self.probe();
            let r = f();
            let after = self.probe();
            if !self.on {
                return r;
            }
            let high = before.max(after);
            if high <= self.usual() * DISTURBED || tries == TRIES || self.spent >= REPEAT_BUDGET {
                self.kept.push(high);
                self.repeated += usize::from(tries > 1);
                return r;
            }
            self.discarded += 1;
            self.worst = self.worst.max(high);
            std::thread::sleep(Duration::from_millis((500 << (tries - 1)).min(8000)));
            // The run thrown away and the pause count against the budget.
            self.spent += start.elapsed();
        }
    }

    /// Measurements kept although a probe around them read more than three times the final
    /// usual round trip.
    pub fn kept_disturbed(&self) -> usize {
        let limit = self.usual() * DISTURBED;
        self.kept.iter().filter(|&&h| h > limit).count()
    }

    /// One line for the record.
    pub fn summary(&self) -> String {
        if self.failed {
            return "cross-core line round trip: a probe could not pin two threads to two cores \
                    or ran past its deadline; nothing was watched from then on"
                .into();
        }
        if !self.on {
            return "cross-core line round trip: not probed (fewer than two cores)".into();
        }
        let mut s = format!(
            "cross-core line round trip: usual {:.0} ns (lowest of {} probes); {} of {} \
             measurement(s) on two cores repeated",
            self.usual(),
            self.probes.len(),
            self.repeated,
            self.kept.len()
        );
        if self.discarded > 0 {
            s += &format!(
                " ({} run(s) thrown away: a probe around them read up to {:.0} ns)",
                self.discarded, self.worst
            );
        }
        let k = self.kept_disturbed();
        if k > 0 {
            s += &format!(
                "; {k} kept with a probe above 3x the final usual round trip (the figures \
                 above include them)"
            );
        }
        s
    }
}
