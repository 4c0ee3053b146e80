//! The I/O task's backlog of protocol work per flow group: what its ring to the group did not
//! take yet, bounded.
//!
//! A flow group that falls behind leaves work here. The backlog holds at most a fixed number
//! of items per group: past it, work that came from the network (a segment the control plane
//! re-injects, a RST or SYN it saw first, an ACK it asked for) is dropped and counted
//! (`queue-full`), as a full ring drops a frame, and the I/O task stops taking new work of
//! its own making (the application's doorbells, the control plane's timers) until the group
//! has caught up: that work waits where it is (a doorbell stays queued with its flag up, a
//! timer stays armed) and is not lost.

use super::*;
use crate::stats::{DropCounters, DropReason};

/// The per-group backlog.
pub(super) struct Backlog {
    queues: Vec<VecDeque<ProtoWork>>,
    /// Most items a group's queue holds before the I/O task holds back.
    cap: usize,
    /// Work from the network dropped past the bound.
    pub(super) dropped: DropCounters,
}

impl Backlog {
    /// A backlog for `groups` flow groups, `cap` items each at most (at least one).
    pub(super) fn new(groups: usize, cap: usize) -> Self {
        Backlog {
            queues: (0..groups.max(1)).map(|_| VecDeque::new()).collect(),
            cap: cap.max(1),
            dropped: DropCounters::default(),
        }
    }

    /// Queue `w` for group `g`; past the bound, work from the network is dropped and counted
    /// (a dropped segment's frame freed).
    pub(super) fn push(&mut self, g: usize, w: ProtoWork, arena: &FrameArena) {
        let Some(q) = self.queues.get_mut(g) else {
            return;
        };
        if q.len() >= self.cap {
            match w {
                ProtoWork::Rx(rx) => {
                    arena.free(rx.frame);
                    self.dropped.add(DropReason::QueueFull);
                    return;
                }
                ProtoWork::Rst { .. } | ProtoWork::Challenge { .. } | ProtoWork::Ack { .. } => {
                    self.dropped.add(DropReason::QueueFull);
                    return;
                }
                // The control plane's and the application's own work is kept: its sources
                // are held back while any queue is full (`takes_more`), so what still comes
                // (installs, events about a flow, a splice's freeze) is bounded by them.
                _ => {}
            }
        }
        q.push_back(w);
    }

    /// Whether the I/O task may take more work of its own making (doorbells, timers): no
    /// group's queue is at its bound.
    pub(super) fn takes_more(&self) -> bool {
        self.queues.iter().all(|q| q.len() < self.cap)
    }

    /// What was dropped, as a stage's statistics.
    pub(super) fn stats(&self) -> StageStats {
        let mut stats = StageStats::default();
        stats.drops.merge(&self.dropped);
        stats
    }

    /// Move what fits into the groups' rings, in order.
    pub(super) fn flush(&mut self, to_group: &mut [Producer<ProtoWork>]) {
        for (q, ring) in self.queues.iter_mut().zip(to_group.iter_mut()) {
            while let Some(w) = q.pop_front() {
                if let Err(back) = ring.push(w) {
                    q.push_front(back);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::spsc;
    use crate::stages::RxWork;

    fn rx(arena: &FrameArena) -> ProtoWork {
        let frame = arena.alloc().expect("frame");
        ProtoWork::Rx(RxWork {
            flow: 7,
            summary: Default::default(),
            frame,
        })
    }

    /// A group that does not keep up: past the bound, the network's work is dropped and
    /// counted (its frames freed), the control plane's and the application's is kept, and
    /// the I/O task holds back its own sources until the ring has taken the backlog.
    #[test]
    fn a_group_that_falls_behind_bounds_its_backlog() {
        let arena = FrameArena::new(64).expect("arena");
        let mut b = Backlog::new(2, 8);
        let (p0, mut c) = spsc::<ProtoWork>(4);
        let (p1, _c1) = spsc::<ProtoWork>(4);
        let mut rings = vec![p0, p1];
        for _ in 0..8 {
            b.push(0, ProtoWork::Retransmit { flow: 7 }, &arena);
        }
        assert!(!b.takes_more(), "group 0 is at its bound");
        for _ in 0..5 {
            b.push(0, rx(&arena), &arena);
        }
        b.push(
            0,
            ProtoWork::Rst {
                flow: 7,
                seq: 1,
                challenge: true,
                ingress: 0,
            },
            &arena,
        );
        b.push(0, ProtoWork::Challenge { flow: 7 }, &arena);
        b.push(0, ProtoWork::Ack { flow: 7 }, &arena);
        assert_eq!(b.dropped.get(DropReason::QueueFull), 8);
        assert_eq!(arena.in_use(), 0, "every dropped segment's frame freed");
        b.push(
            0,
            ProtoWork::App {
                flow: 7,
                positions: None,
                fin: true,
                closed: false,
            },
            &arena,
        );
        assert_eq!(b.queues[0].len(), 9, "the application's work is kept");
        // Group 1 is not behind and takes everything.
        b.push(1, rx(&arena), &arena);
        assert_eq!(b.queues[1].len(), 1);
        assert_eq!(arena.in_use(), 1);
        // The ring takes four; the rest waits, in order.
        b.flush(&mut rings);
        assert_eq!(b.queues[0].len(), 5);
        assert!(b.takes_more(), "below the bound again");
        let mut taken = 0;
        while let Some(w) = c.pop() {
            assert!(matches!(w, ProtoWork::Retransmit { flow: 7 }));
            taken += 1;
        }
        assert_eq!(taken, 4);
        b.flush(&mut rings);
        let mut rest = Vec::new();
        while let Some(w) = c.pop() {
            rest.push(w);
        }
        assert_eq!(rest.len(), 4);
        assert!(matches!(rest[3], ProtoWork::Retransmit { flow: 7 }));
        b.flush(&mut rings);
        assert!(matches!(c.pop(), Some(ProtoWork::App { fin: true, .. })));
    }
}
