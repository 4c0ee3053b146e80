//! A zero-copy in-process link: two ports over one frame arena, so sending a frame moves its
//! handle to the other end's receive queue.
//!
//! ```
//! use flextoe::backends::arena_link::ArenaLink;
//! use flextoe::pipeline::{Engine, EngineConfig};
//! use flextoe::wire::MacAddr;
//! use std::net::Ipv4Addr;
//!
//! let (a, b) = ArenaLink::pair(8192).unwrap();
//! let server = Engine::new(
//!     EngineConfig::new(MacAddr([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(192, 0, 2, 1)),
//!     a,
//! )
//! .unwrap();
//! let client = Engine::new(
//!     EngineConfig::new(MacAddr([2, 0, 0, 0, 0, 2]), Ipv4Addr::new(192, 0, 2, 2)),
//!     b,
//! )
//! .unwrap();
//! // Both engines allocate from, and free into, the link's arena.
//! assert!(Arc::ptr_eq(server.arena(), client.arena()));
//! # use std::sync::Arc;
//! ```
//!
//! Where [`MemLink`](super::mem::MemLink) copies every frame into the link and out again and
//! takes a lock per call (it simulates loss, delay, reordering and rate limits), this link
//! does no work beyond a single-producer, single-consumer queue push and pop per frame. Both
//! engines must then use the link's arena, which [`Port::arena`] gives them. A frame the
//! receiving queue has no room for is dropped and counted, as a full NIC ring drops it.
//! Checksums are still filled and verified in software: the link offers no offloads.

use std::sync::Arc;

use super::Port;
use crate::buf::{ArenaError, Frame, FrameArena};
use crate::time::Instant;

/// Counters of one end, kept by the end itself (plain adds: only its owner sends and
/// receives through it).
#[derive(Debug, Default)]
struct EndStats {
    sent: u64,
    received: u64,
    dropped: u64,
}

/// What an [`ArenaPort`] counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArenaLinkStats {
    /// Frames this end put on the link.
    pub sent: u64,
    /// Frames this end took off the link.
    pub received: u64,
    /// Frames this end sent that the other end's full queue refused.
    pub dropped: u64,
}

/// Constructor for zero-copy links.
pub struct ArenaLink;

impl ArenaLink {
    /// Two connected ports sharing a new arena of `frames` frames; each direction queues up
    /// to half of them.
    pub fn pair(frames: usize) -> Result<(ArenaPort, ArenaPort), ArenaError> {
        let arena = Arc::new(FrameArena::new(frames)?);
        let depth = (frames / 2).max(1);
        let (a_tx, b_rx) = rtrb::RingBuffer::new(depth);
        let (b_tx, a_rx) = rtrb::RingBuffer::new(depth);
        let end = |tx, rx| ArenaPort {
            arena: arena.clone(),
            tx,
            rx,
            stats: EndStats::default(),
        };
        Ok((end(a_tx, a_rx), end(b_tx, b_rx)))
    }
}

/// One end of an [`ArenaLink`].
pub struct ArenaPort {
    arena: Arc<FrameArena>,
    tx: rtrb::Producer<Frame>,
    rx: rtrb::Consumer<Frame>,
    stats: EndStats,
}

impl ArenaPort {
    /// This end's counters.
    pub fn stats(&self) -> ArenaLinkStats {
        ArenaLinkStats {
            sent: self.stats.sent,
            received: self.stats.received,
            dropped: self.stats.dropped,
        }
    }

    /// Frames waiting to be received at this end.
    pub fn rx_queued(&self) -> usize {
        self.rx.slots()
    }
}

impl Port for ArenaPort {
    fn recv(
        &mut self,
        _now: Instant,
        _arena: &FrameArena,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        let n = self.rx.slots().min(max);
        if n == 0 {
            return 0;
        }
        for _ in 0..n {
            match self.rx.pop() {
                Ok(f) => out.push(f),
                Err(_) => break,
            }
        }
        self.stats.received += n as u64;
        n
    }

    fn send(&mut self, _now: Instant, arena: &FrameArena, frames: &mut Vec<Frame>) -> usize {
        let mut sent = 0;
        if self.tx.is_abandoned() {
            // The other end is gone: nobody would take these off the link.
            self.stats.dropped += frames.len() as u64;
            arena.free_all(frames);
            return 0;
        }
        for f in frames.drain(..) {
            match self.tx.push(f) {
                Ok(()) => sent += 1,
                Err(rtrb::PushError::Full(f)) => {
                    self.stats.dropped += 1;
                    arena.free(f);
                }
            }
        }
        self.stats.sent += sent as u64;
        sent
    }

    fn arena(&self) -> Option<Arc<FrameArena>> {
        Some(self.arena.clone())
    }
}

impl Drop for ArenaPort {
    fn drop(&mut self) {
        // Frames sent to this end and never received go back to the arena (a frame the
        // other end pushes after this, before it sees this end gone, is lost to the arena).
        while let Ok(f) = self.rx.pop() {
            self.arena.free(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_move_without_copies_and_full_queues_drop() {
        let (mut a, mut b) = ArenaLink::pair(8).unwrap();
        let arena = a.arena().unwrap();
        let mut out = Vec::new();
        for i in 0..6u8 {
            out.push(arena.alloc_copy(&[i; 60]).unwrap());
        }
        let first = out[0].index();
        // Four fit in b's queue; two are dropped and freed.
        assert_eq!(a.send(Instant::ZERO, &arena, &mut out), 4);
        assert_eq!(a.stats().dropped, 2);
        assert_eq!(arena.in_use(), 4);
        let mut got = Vec::new();
        assert_eq!(b.recv(Instant::ZERO, &arena, &mut got, 32), 4);
        assert_eq!(got[0].index(), first, "the same frame, not a copy");
        assert_eq!(arena.data(&got[3]), &[3u8; 60][..]);
        arena.free_all(&mut got);
        assert_eq!(arena.in_use(), 0);
        // Frames left in a queue return to the arena when the port goes, and frames sent
        // to a gone port are freed.
        let mut more = vec![arena.alloc().unwrap()];
        b.send(Instant::ZERO, &arena, &mut more);
        drop(a);
        assert_eq!(arena.in_use(), 0);
        let mut late = vec![arena.alloc().unwrap(), arena.alloc().unwrap()];
        assert_eq!(b.send(Instant::ZERO, &arena, &mut late), 0);
        assert_eq!(arena.in_use(), 0);
        assert_eq!(b.stats().dropped, 2);
    }
}
