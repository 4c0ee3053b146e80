//! The doorbell queue: the flow ids of connections whose application changed something,
//! pushed by the application's threads and taken by the one runtime task that serves
//! doorbells.
//!
//! A bounded queue of many producers and one consumer. Each slot is one word holding a
//! stamp (which position of the queue it is ready for) and a flow id, so a push is one
//! compare-and-swap on the tail and one store, and a pop is two plain stores: the consumer
//! is alone, so it takes a slot without a compare-and-swap. (A multi-consumer queue pays a
//! locked instruction per pop, one per doorbell, where the engine serves each doorbell on
//! one thread.)

use std::sync::atomic::{AtomicU64, Ordering};

use crate::flow::FlowId;

/// A value on a cache line of its own (producers write the tail, the consumer the head).
#[repr(align(128))]
#[derive(Debug, Default)]
struct Padded(AtomicU64);

/// The largest capacity: stamps are 32 bits, and a slot's stamp is within a capacity of
/// any position compared with it, so distances fit an `i32`.
const MAX_CAPACITY: usize = 1 << 30;

/// A bounded multi-producer, single-consumer queue of flow ids. [`pop`](Self::pop) and
/// [`is_empty`](Self::is_empty) are the consumer's, and only one thread may be the consumer
/// at a time (another thread may take over once it is done, after something that orders
/// the two, as handing the engine to another thread does).
#[derive(Debug)]
pub(crate) struct Doorbells {
    /// Per slot: the stamp in the high half, the flow id in the low half. A slot is free
    /// for position `p` when its stamp is `p`, and holds position `p`'s value when it is
    /// `p + 1` (both modulo 2^32).
    slots: Box<[AtomicU64]>,
    mask: u64,
    /// The next position a producer takes.
    tail: Padded,
    /// The next position the consumer takes (only the consumer stores it).
    head: Padded,
}

impl Doorbells {
    /// A queue of at least `capacity` flow ids (rounded up to a power of two, at least 2:
    /// with one slot, a full slot's stamp would read as free for the next position; at
    /// most 2^30, so that with a flow limit past 2^29 the queue can fill, and a doorbell
    /// rung then waits for the connection's next change: see `HostShared::ring_doorbell`).
    pub(crate) fn new(capacity: usize) -> Self {
        let cap = capacity.clamp(2, MAX_CAPACITY).next_power_of_two();
        Doorbells {
            slots: (0..cap as u64).map(|p| AtomicU64::new(p << 32)).collect(),
            mask: cap as u64 - 1,
            tail: Padded::default(),
            head: Padded::default(),
        }
    }

    /// How many flow ids the queue holds at most.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn slot(&self, pos: u64) -> &AtomicU64 {
        &self.slots[(pos & self.mask) as usize]
    }

    /// Producer: queue `flow`; gives it back when the queue is full.
    pub(crate) fn push(&self, flow: FlowId) -> Result<(), FlowId> {
        let mut pos = self.tail.0.load(Ordering::Relaxed);
        loop {
            let slot = self.slot(pos);
            let stamp = (slot.load(Ordering::Acquire) >> 32) as u32;
            // How far the slot's stamp is from this position: 0 free for it, negative
            // still holding the value of the lap before (full), positive taken by
            // another producer already (the tail moved on).
            let distance = stamp.wrapping_sub(pos as u32) as i32;
            if distance == 0 {
                match self.tail.0.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        let ready = u64::from((pos as u32).wrapping_add(1)) << 32;
                        slot.store(ready | u64::from(flow), Ordering::Release);
                        return Ok(());
                    }
                    Err(now) => pos = now,
                }
            } else if distance < 0 {
                return Err(flow);
            } else {
                pos = self.tail.0.load(Ordering::Relaxed);
            }
        }
    }

    /// Consumer: the next flow id, if one is ready. A producer that has taken a position
    /// and not yet stored its flow id holds back this one and the ones after it, for the
    /// few instructions between the two.
    pub(crate) fn pop(&self) -> Option<FlowId> {
        let pos = self.head.0.load(Ordering::Relaxed);
        let slot = self.slot(pos);
        let word = slot.load(Ordering::Acquire);
        if (word >> 32) as u32 != (pos as u32).wrapping_add(1) {
            return None;
        }
        // Free for the position one lap on.
        let next_lap = (pos as u32).wrapping_add(self.slots.len() as u32);
        slot.store(u64::from(next_lap) << 32, Ordering::Release);
        self.head.0.store(pos + 1, Ordering::Relaxed);
        Some(word as u32)
    }

    /// Consumer: whether [`pop`](Self::pop) would find nothing.
    pub(crate) fn is_empty(&self) -> bool {
        let pos = self.head.0.load(Ordering::Relaxed);
        (self.slot(pos).load(Ordering::Acquire) >> 32) as u32 != (pos as u32).wrapping_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::sync::Arc;

    proptest! {
        /// Pushes and pops on one thread do what a bounded FIFO of the queue's capacity
        /// does, over many laps (a push when full gives its value back).
        #[test]
        fn behaves_as_a_bounded_fifo(
            capacity in 1usize..9,
            ops in proptest::collection::vec(any::<Option<u32>>(), 1..400),
        ) {
            let q = Doorbells::new(capacity);
            let cap = q.capacity();
            prop_assert!(cap >= capacity && cap.is_power_of_two());
            let mut model = VecDeque::new();
            for op in ops {
                match op {
                    Some(v) => {
                        let r = q.push(v);
                        if model.len() < cap {
                            prop_assert_eq!(r, Ok(()));
                            model.push_back(v);
                        } else {
                            prop_assert_eq!(r, Err(v));
                        }
                    }
                    None => prop_assert_eq!(q.pop(), model.pop_front()),
                }
                prop_assert_eq!(q.is_empty(), model.is_empty());
            }
        }
    }

    /// Stamps are 32 bits: positions past 2^32 (set up by starting the queue there) keep
    /// the queue's order and its full and empty answers.
    #[test]
    fn positions_past_two_to_the_32_wrap_the_stamps() {
        let q = Doorbells::new(4);
        let start = (1u64 << 32) - 6;
        for (p, s) in q.slots.iter().enumerate() {
            // Slot p is free for the first position at or after `start` that maps to it.
            let pos = start + ((p as u64).wrapping_sub(start) & 3);
            s.store(u64::from(pos as u32) << 32, Ordering::Relaxed);
        }
        q.tail.0.store(start, Ordering::Relaxed);
        q.head.0.store(start, Ordering::Relaxed);
        let mut next = 0u32;
        let mut expect = 0u32;
        for _ in 0..10 {
            for _ in 0..4 {
                assert_eq!(q.push(next), Ok(()));
                next += 1;
            }
            assert_eq!(q.push(99), Err(99));
            for _ in 0..4 {
                assert_eq!(q.pop(), Some(expect));
                expect += 1;
            }
            assert!(q.is_empty());
            assert_eq!(q.pop(), None);
        }
        assert!(q.head.0.load(Ordering::Relaxed) > 1 << 32);
    }

    /// Four threads push 20,000 flow ids each while one pops: every id arrives exactly
    /// once, and each thread's in the order it pushed them.
    #[test]
    fn many_producers_one_consumer_lose_and_repeat_nothing() {
        const PER: u32 = 20_000;
        let q = Arc::new(Doorbells::new(64));
        let producers: Vec<_> = (0..4u32)
            .map(|t| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..PER {
                        let mut v = t << 24 | i;
                        while let Err(back) = q.push(v) {
                            v = back;
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut next = [0u32; 4];
        let mut got = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while got < 4 * PER {
            assert!(std::time::Instant::now() < deadline, "stalled at {got}");
            match q.pop() {
                Some(v) => {
                    let t = (v >> 24) as usize;
                    assert_eq!(v & 0xff_ffff, next[t], "thread {t}'s ids in order, once");
                    next[t] += 1;
                    got += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        for p in producers {
            p.join().expect("producer");
        }
        assert_eq!(next, [PER; 4]);
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
    }
}
