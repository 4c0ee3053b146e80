//! The I/O task's backlog of protocol work per flow group: what its ring to the group did not
//! take yet, bounded.
//!
//! A flow group that falls behind leaves work here. Work that came from the network (a
//! segment the control plane re-injects, a RST or a SYN it saw first) is dropped and counted
//! (`queue-full`) once a group's queue holds half its bound, as a full ring drops a frame.
//! At the bound, the I/O task stops taking work of its own sources (the application's
//! doorbells, the control plane's timers) until the group has caught up: that work waits
//! where it is (a doorbell stays queued with its flag up, a timer stays armed) and is not
//! lost. Segments, RSTs and SYNs alone cannot fill a queue to the bound, so a flood of them
//! on one connection does not hold back the doorbells and timers of the others. What else
//! comes (an update for each connection installed, the application's requests, events from
//! the data path, a splice's freeze, one timer pass's work) is kept, bounded by the
//! connection table and the application, not by this queue.

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
    /// A backlog for `groups` flow groups, bounded at `cap` items each (at least two).
    pub(super) fn new(groups: usize, cap: usize) -> Self {
        Backlog {
            queues: (0..groups.max(1)).map(|_| VecDeque::new()).collect(),
            cap: cap.max(2),
            dropped: DropCounters::default(),
        }
    }

    /// Queue `w` for group `g`; from half the bound on, work from the network is dropped and
    /// counted (a dropped segment's frame freed).
    pub(super) fn push(&mut self, g: usize, w: ProtoWork, arena: &FrameArena) {
        let Some(q) = self.queues.get_mut(g) else {
            return;
        };
        if q.len() >= self.cap / 2 {
            match w {
                ProtoWork::Rx(rx) => {
                    arena.free(rx.frame);
                    self.dropped.add(DropReason::QueueFull);
                    return;
                }
                ProtoWork::Rst { .. } | ProtoWork::Challenge { .. } => {
                    self.dropped.add(DropReason::QueueFull);
                    return;
                }
                // The control plane's and the application's own work is kept (an `Ack` is
                // the delayed-ACK timer's, already disarmed, or a handshake's last): its
                // sources are held back at the bound (`takes_more`).
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

    /// A group that does not keep up: from half the bound on, the network's work is dropped
    /// and counted (its frames freed), and it alone does not hold back the I/O task; the
    /// control plane's and the application's work is kept, and at the bound the I/O task
    /// holds back its own sources until the ring has taken the backlog, in order.
    #[test]
    fn a_group_that_falls_behind_bounds_its_backlog() {
        let arena = FrameArena::new(64).expect("arena");
        let mut b = Backlog::new(2, 8);
        let (p0, mut c) = spsc::<ProtoWork>(4);
        let (p1, _c1) = spsc::<ProtoWork>(4);
        let mut rings = vec![p0, p1];
        for _ in 0..6 {
            b.push(0, rx(&arena), &arena);
        }
        b.push(
            0,
            ProtoWork::Rst {
                flow: 7,
                seq: 1,
                challenge: true,
                ingress: 0,
                incarnation: 0,
            },
            &arena,
        );
        b.push(
            0,
            ProtoWork::Challenge {
                flow: 7,
                incarnation: 0,
            },
            &arena,
        );
        assert_eq!(b.queues[0].len(), 4, "half the bound");
        assert_eq!(b.dropped.get(DropReason::QueueFull), 4);
        assert_eq!(arena.in_use(), 4, "every dropped segment's frame freed");
        assert!(
            b.takes_more(),
            "the network alone does not hold the I/O task back"
        );
        for _ in 0..4 {
            b.push(
                0,
                ProtoWork::Retransmit {
                    flow: 7,
                    incarnation: 0,
                },
                &arena,
            );
        }
        assert!(!b.takes_more(), "group 0 is at its bound");
        b.push(
            0,
            ProtoWork::Ack {
                flow: 7,
                incarnation: 0,
            },
            &arena,
        );
        b.push(
            0,
            ProtoWork::App {
                flow: 7,
                positions: None,
                fin: true,
                closed: false,
                incarnation: 0,
            },
            &arena,
        );
        assert_eq!(
            b.queues[0].len(),
            10,
            "the timers' and the application's work is kept"
        );
        assert_eq!(b.dropped.get(DropReason::QueueFull), 4);
        // Group 1 is not behind and takes everything.
        b.push(1, rx(&arena), &arena);
        assert_eq!(b.queues[1].len(), 1);
        // The ring takes four; the rest waits, in order.
        b.flush(&mut rings);
        assert_eq!(b.queues[0].len(), 6);
        assert!(b.takes_more(), "below the bound again");
        let mut taken = Vec::new();
        while let Some(w) = c.pop() {
            taken.push(w);
        }
        assert_eq!(taken.len(), 4);
        for w in taken {
            let ProtoWork::Rx(rx) = w else {
                panic!("out of order: {w:?}");
            };
            arena.free(rx.frame);
        }
        b.flush(&mut rings);
        for _ in 0..4 {
            assert!(matches!(
                c.pop(),
                Some(ProtoWork::Retransmit { flow: 7, .. })
            ));
        }
        b.flush(&mut rings);
        assert!(matches!(c.pop(), Some(ProtoWork::Ack { flow: 7, .. })));
        assert!(matches!(c.pop(), Some(ProtoWork::App { fin: true, .. })));
        assert!(c.pop().is_none());
    }
}
