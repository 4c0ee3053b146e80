//! The stage-to-stage rings against a `VecDeque` model (random operation sequences), and
//! under a two-thread stress test; byte rings with ranges lent out against a model.

use std::collections::VecDeque;

use flextoe::ring::{spsc, Mpmc};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Push(u32),
    PushBurst(Vec<u32>),
    Pop,
    PopBurst(usize),
    /// `push_from` of these items, asking for this many.
    PushFrom(Vec<u32>, usize),
    PopEach(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u32>().prop_map(Op::Push),
        proptest::collection::vec(any::<u32>(), 0..40).prop_map(Op::PushBurst),
        Just(Op::Pop),
        (0usize..40).prop_map(Op::PopBurst),
        (proptest::collection::vec(any::<u32>(), 0..40), 0usize..50)
            .prop_map(|(v, n)| Op::PushFrom(v, n)),
        (0usize..40).prop_map(Op::PopEach),
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
                Op::PushFrom(vs, ask) => {
                    // Moves what was asked for, what fits and what there is, the least of
                    // them, and takes no more from the iterator.
                    let mut it = vs.iter().copied();
                    let n = p.push_from(&mut it, ask);
                    let fit = ask.min(cap - model.len()).min(vs.len());
                    prop_assert_eq!(n, fit);
                    model.extend(&vs[..fit]);
                    prop_assert_eq!(it.collect::<Vec<_>>(), vs[fit..].to_vec());
                }
                Op::PopEach(max) => {
                    let mut out = Vec::new();
                    let n = c.pop_each(max, |v| out.push(v));
                    let want: Vec<u32> = (0..max.min(model.len())).filter_map(|_| model.pop_front()).collect();
                    prop_assert_eq!(n, want.len());
                    prop_assert_eq!(out, want);
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
                // The SPSC ring's in-place moves; the MPMC queue has none.
                Op::PushFrom(..) | Op::PopEach(_) => continue,
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

/// A byte ring between two threads: 8 MiB of a pattern in writes of 1 to 700 bytes through a
/// 4 KiB ring, read in pieces of 1 to 900: every byte arrives once, in order (the writer
/// checks its room against the reader's tail as it last read it).
#[test]
fn byte_ring_two_thread_stress_keeps_order() {
    use flextoe::buf::byte_ring;
    const N: u64 = 8 << 20;
    let byte = |i: u64| (i * 7 + i / 4099) as u8;
    let (mut w, mut r) = byte_ring(4096);
    let writer = std::thread::spawn(move || {
        let mut next = 0u64;
        let mut chunk = Vec::with_capacity(700);
        while next < N {
            let n = (1 + next % 700).min(N - next);
            chunk.clear();
            chunk.extend((next..next + n).map(byte));
            let mut done = 0;
            while done < chunk.len() {
                if w.has_free() {
                    done += w.push(&chunk[done..]);
                }
                std::hint::spin_loop();
            }
            next += n;
        }
    });
    let mut got = 0u64;
    let mut buf = vec![0u8; 900];
    while got < N {
        let want = 1 + (got % 900) as usize;
        let n = r.pop(&mut buf[..want]);
        for (i, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, byte(got + i as u64), "byte {}", got + i as u64);
        }
        got += n as u64;
        std::hint::spin_loop();
    }
    writer.join().unwrap();
    assert_eq!(r.pop(&mut buf), 0);
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

/// Operations on a byte ring whose ends lend ranges out.
#[derive(Clone, Debug)]
enum LeaseOp {
    WriteAt(u64, usize, u8),
    Lease(u64, usize),
    LeaseWrite(usize, u8),
    Settle(usize),
    Publish(u64),
    Push(usize, u8),
    Pop(usize),
    ReadLease(u64, usize),
    ReadLeaseRead(usize),
    SettleRead(usize),
    Release(u64),
    /// `has_free`, which reads the reader's tail only when the last one seen leaves no room.
    HasFree,
}

fn lease_op() -> impl Strategy<Value = LeaseOp> {
    prop_oneof![
        (0u64..80, 0usize..40, any::<u8>()).prop_map(|(o, n, v)| LeaseOp::WriteAt(o, n, v)),
        (0u64..80, 0usize..40).prop_map(|(o, n)| LeaseOp::Lease(o, n)),
        (0usize..4, any::<u8>()).prop_map(|(i, v)| LeaseOp::LeaseWrite(i, v)),
        (0usize..4).prop_map(LeaseOp::Settle),
        (0u64..80).prop_map(LeaseOp::Publish),
        (0usize..80, any::<u8>()).prop_map(|(n, v)| LeaseOp::Push(n, v)),
        (0usize..80).prop_map(LeaseOp::Pop),
        (0u64..80, 0usize..40).prop_map(|(o, n)| LeaseOp::ReadLease(o, n)),
        (0usize..4).prop_map(LeaseOp::ReadLeaseRead),
        (0usize..4).prop_map(LeaseOp::SettleRead),
        (0u64..80).prop_map(LeaseOp::Release),
        Just(LeaseOp::HasFree),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// A byte ring with ranges lent out at both ends, against a model of who may touch which
    /// bytes: every operation succeeds exactly when the model allows it (no write into a
    /// range lent out or published, no publication or release past a range lent out, no two
    /// write leases over one byte), and every byte read is the last one written there.
    #[test]
    fn byte_ring_leases_match_the_model(ops in proptest::collection::vec(lease_op(), 0..120)) {
        use flextoe::buf::byte_ring;
        use std::collections::HashMap;
        const CAP: u64 = 64;
        let (mut w, mut r) = byte_ring(CAP as usize);
        let (mut head, mut tail) = (0u64, 0u64);
        let mut bytes: HashMap<u64, u8> = HashMap::new();
        let mut wl = Vec::new();
        let mut rl = Vec::new();
        let first = |v: &[(u64, u64)]| v.iter().map(|x| x.0).min().unwrap_or(u64::MAX);
        let overlaps = |v: &[(u64, u64)], s: u64, e: u64| v.iter().any(|&(a, b)| s < b && a < e);
        for op in ops {
            let wranges: Vec<(u64, u64)> = wl.iter().map(|(s, e, _)| (*s, *e)).collect();
            let rranges: Vec<(u64, u64)> = rl.iter().map(|(s, e, _)| (*s, *e)).collect();
            match op {
                LeaseOp::WriteAt(o, n, v) => {
                    let (s, e) = (head + o, head + o + n as u64);
                    let ok = e <= tail + CAP && !overlaps(&wranges, s, e);
                    prop_assert_eq!(w.write_at(s, &vec![v; n]).is_ok(), ok);
                    if ok {
                        (s..e).for_each(|p| { bytes.insert(p, v); });
                    }
                }
                LeaseOp::Lease(o, n) => {
                    let (s, e) = (head + o, head + o + n as u64);
                    let ok = e <= tail + CAP && !overlaps(&wranges, s, e);
                    let got = w.lease(s, n);
                    prop_assert_eq!(got.is_ok(), ok);
                    if let Ok(l) = got {
                        wl.push((s, e, l));
                    }
                }
                LeaseOp::LeaseWrite(i, v) => {
                    if let Some((s, e, l)) = wl.get_mut(i) {
                        l.write(&vec![v; (*e - *s) as usize]).unwrap();
                        (*s..*e).for_each(|p| { bytes.insert(p, v); });
                    }
                }
                LeaseOp::Settle(i) => {
                    if i < wl.len() {
                        let (_, _, l) = wl.remove(i);
                        prop_assert!(w.settle(l).is_ok());
                    }
                }
                LeaseOp::Publish(o) => {
                    let to = head + o;
                    let ok = to <= tail + CAP && to <= first(&wranges);
                    prop_assert_eq!(w.publish(to).is_ok(), ok);
                    if ok {
                        head = to;
                    }
                }
                LeaseOp::HasFree => prop_assert_eq!(w.has_free(), head - tail < CAP),
                LeaseOp::Push(n, v) => {
                    let room = (tail + CAP - head).min(first(&wranges).saturating_sub(head));
                    let k = (n as u64).min(room);
                    prop_assert_eq!(w.push(&vec![v; n]) as u64, k);
                    (head..head + k).for_each(|p| { bytes.insert(p, v); });
                    head += k;
                }
                LeaseOp::Pop(n) => {
                    let k = (n as u64).min(head - tail).min(first(&rranges).saturating_sub(tail));
                    let mut out = vec![0u8; n];
                    prop_assert_eq!(r.pop(&mut out) as u64, k);
                    for (i, b) in out[..k as usize].iter().enumerate() {
                        if let Some(x) = bytes.get(&(tail + i as u64)) {
                            prop_assert_eq!(b, x);
                        }
                    }
                    tail += k;
                }
                LeaseOp::ReadLease(o, n) => {
                    let (s, e) = (tail + o, tail + o + n as u64);
                    let got = r.lease(s, n);
                    prop_assert_eq!(got.is_ok(), e <= head);
                    if let Ok(l) = got {
                        rl.push((s, e, l));
                    }
                }
                LeaseOp::ReadLeaseRead(i) => {
                    if let Some((s, e, l)) = rl.get(i) {
                        let mut out = vec![0u8; (*e - *s) as usize];
                        l.read(&mut out).unwrap();
                        for (k, b) in out.iter().enumerate() {
                            if let Some(x) = bytes.get(&(*s + k as u64)) {
                                prop_assert_eq!(b, x);
                            }
                        }
                    }
                }
                LeaseOp::SettleRead(i) => {
                    if i < rl.len() {
                        let (_, _, l) = rl.remove(i);
                        prop_assert!(r.settle(l).is_ok());
                    }
                }
                LeaseOp::Release(n) => {
                    let to = tail + n;
                    let ok = to <= head && to <= first(&rranges);
                    prop_assert_eq!(r.release(to).is_ok(), ok);
                    if ok {
                        tail = to;
                    }
                }
            }
            prop_assert_eq!((w.head(), r.tail()), (head, tail));
        }
    }
}
