//! The stage-to-stage rings against a `VecDeque` model (random operation sequences), and
//! under a two-thread stress test.

use std::collections::VecDeque;

use flextoe::ring::{spsc, Mpmc};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Push(u32),
    PushBurst(Vec<u32>),
    Pop,
    PopBurst(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u32>().prop_map(Op::Push),
        proptest::collection::vec(any::<u32>(), 0..40).prop_map(Op::PushBurst),
        Just(Op::Pop),
        (0usize..40).prop_map(Op::PopBurst),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn spsc_matches_vecdeque(cap in 1usize..64, ops in proptest::collection::vec(op(), 0..200)) {
        let (mut p, mut c) = spsc::<u32>(cap);
        let mut model: VecDeque<u32> = VecDeque::new();
        for o in ops {
            match o {
                Op::Push(v) => {
                    let r = p.push(v);
                    if model.len() < cap {
                        prop_assert!(r.is_ok());
                        model.push_back(v);
                    } else {
                        prop_assert_eq!(r, Err(v));
                    }
                }
                Op::PushBurst(mut vs) => {
                    let orig = vs.clone();
                    let n = p.push_burst(&mut vs);
                    let fit = orig.len().min(cap - model.len());
                    prop_assert_eq!(n, fit);
                    model.extend(&orig[..fit]);
                    prop_assert_eq!(&vs[..], &orig[fit..]);
                }
                Op::Pop => prop_assert_eq!(c.pop(), model.pop_front()),
                Op::PopBurst(max) => {
                    let mut out = Vec::new();
                    let n = c.pop_burst(&mut out, max);
                    let want: Vec<u32> = (0..n.min(model.len())).filter_map(|_| model.pop_front()).collect();
                    prop_assert_eq!(n, want.len());
                    prop_assert_eq!(out, want);
                    prop_assert!(n == max || model.is_empty());
                }
            }
            prop_assert_eq!(c.len(), model.len());
            prop_assert_eq!(p.free(), cap - model.len());
            prop_assert_eq!(c.peek().copied(), model.front().copied());
        }
    }

    #[test]
    fn mpmc_matches_vecdeque(cap in 1usize..64, ops in proptest::collection::vec(op(), 0..200)) {
        let q = Mpmc::<u32>::new(cap);
        let mut model: VecDeque<u32> = VecDeque::new();
        for o in ops {
            match o {
                Op::Push(v) => {
                    let r = q.push(v);
                    if model.len() < cap { prop_assert!(r.is_ok()); model.push_back(v); } else { prop_assert_eq!(r, Err(v)); }
                }
                Op::PushBurst(mut vs) => {
                    let orig = vs.clone();
                    let n = q.push_burst(&mut vs);
                    let fit = orig.len().min(cap - model.len());
                    prop_assert_eq!(n, fit);
                    model.extend(&orig[..fit]);
                    prop_assert_eq!(&vs[..], &orig[fit..]);
                }
                Op::Pop => prop_assert_eq!(q.pop(), model.pop_front()),
                Op::PopBurst(max) => {
                    let mut out = Vec::new();
                    let n = q.pop_burst(&mut out, max);
                    let want: Vec<u32> = (0..n).filter_map(|_| model.pop_front()).collect();
                    prop_assert_eq!(out, want);
                    prop_assert!(n == max || model.is_empty());
                }
            }
            prop_assert_eq!(q.len(), model.len());
        }
    }
}

#[test]
fn spsc_two_thread_stress_keeps_order() {
    const N: u64 = 2_000_000;
    let (mut p, mut c) = spsc::<u64>(256);
    let producer = std::thread::spawn(move || {
        let mut next = 0u64;
        let mut burst = Vec::with_capacity(32);
        while next < N {
            // Alternate single pushes and bursts of varying size.
            if next.is_multiple_of(3) {
                if p.push(next).is_ok() {
                    next += 1;
                }
            } else {
                while burst.len() < 1 + (next % 32) as usize && next + (burst.len() as u64) < N {
                    burst.push(next + burst.len() as u64);
                }
                let n = p.push_burst(&mut burst);
                next += n as u64;
                burst.clear();
            }
            std::hint::spin_loop();
        }
    });
    let mut expect = 0u64;
    let mut out = Vec::with_capacity(64);
    while expect < N {
        out.clear();
        if expect.is_multiple_of(2) {
            if let Some(v) = c.pop() {
                out.push(v);
            }
        } else {
            c.pop_burst(&mut out, 64);
        }
        for v in &out {
            assert_eq!(*v, expect, "lost, duplicated or reordered");
            expect += 1;
        }
        std::hint::spin_loop();
    }
    producer.join().unwrap();
    assert!(c.pop().is_none());
}

#[test]
fn mpmc_two_producers_lose_nothing() {
    const N: u64 = 200_000;
    let q = std::sync::Arc::new(Mpmc::<u64>::new(128));
    let producers: Vec<_> = (0..2u64)
        .map(|t| {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..N {
                    let mut v = i * 2 + t;
                    loop {
                        match q.push(v) {
                            Ok(()) => break,
                            Err(back) => {
                                v = back;
                                std::hint::spin_loop();
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let mut last = [None::<u64>; 2];
    let mut count = 0;
    while count < 2 * N {
        if let Some(v) = q.pop() {
            let t = (v % 2) as usize;
            // Per producer, order is kept.
            assert!(last[t].is_none_or(|l| v > l));
            last[t] = Some(v);
            count += 1;
        }
    }
    for p in producers {
        p.join().unwrap();
    }
}
