//! [`FrameCache`]: a stage's own stock of free frames, taken from and given back to the
//! arena a burst at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Frame, FrameArena, HEADROOM};

/// Free frames held by one stage, so that taking a frame and giving one back cost no atomic
/// operation: it refills from the arena and spills back to it a burst at a time (one
/// compare-and-swap each). Frames in a cache count as free in
/// [`FrameArena::in_use`]; dropping the cache gives them back.
pub struct FrameCache {
    arena: Arc<FrameArena>,
    frames: Vec<Frame>,
    /// The surplus on its way back to the arena from [`free`](Self::free) (kept, so that
    /// spilling allocates nothing).
    spill: Vec<Frame>,
    /// Frames per refill: [`CACHE_BURST`], or a 64th of a small arena.
    burst: usize,
    /// `frames.len()`, for [`FrameArena::in_use`].
    held: Arc<AtomicUsize>,
}

/// Frames a cache takes from its arena at once (and gives back when it holds twice that),
/// at most: a smaller arena gets smaller bursts, a 64th of it, so that caches never hold
/// more than a few percent of it.
const CACHE_BURST: usize = 32;

impl FrameCache {
    /// An empty cache over `arena`.
    pub fn new(arena: Arc<FrameArena>) -> Self {
        let held = Arc::new(AtomicUsize::new(0));
        let mut caches = arena.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.retain(|w| w.strong_count() > 0);
        caches.push(Arc::downgrade(&held));
        drop(caches);
        let burst = CACHE_BURST.min(arena.capacity() / 64).max(1);
        FrameCache {
            arena,
            frames: Vec::with_capacity(2 * burst),
            spill: Vec::with_capacity(burst),
            burst,
            held,
        }
    }

    /// The arena the frames come from.
    pub fn arena(&self) -> &Arc<FrameArena> {
        &self.arena
    }

    /// Take a free frame (as [`FrameArena::alloc`] makes it), or `None` when the arena has
    /// none left.
    #[inline]
    pub fn alloc(&mut self) -> Option<Frame> {
        if self.frames.is_empty() && !self.refill() {
            return None;
        }
        let mut f = self.frames.pop();
        if let Some(f) = f.as_mut() {
            // A frame given back may have moved its data start or length.
            f.slot = f.index() | (HEADROOM as u32) << 24;
            f.len = 0;
        }
        self.held.store(self.frames.len(), Ordering::Relaxed);
        f
    }

    /// Take a burst of frames from the arena (the cache is empty); `false` when the arena
    /// has none left (counted as an allocation failure).
    #[inline(never)]
    fn refill(&mut self) -> bool {
        let id = self.arena.id;
        let got = self
            .arena
            .free
            .pop_chain(self.burst, &mut self.frames, |index| Frame {
                slot: index | (HEADROOM as u32) << 24,
                len: 0,
                arena: id,
            });
        if got == 0 {
            self.arena.alloc_failures.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Give a frame back (to the cache; past twice a burst, a burst goes to the arena).
    pub fn free(&mut self, frame: Frame) {
        assert_eq!(
            frame.arena, self.arena.id,
            "frame freed into a foreign arena"
        );
        self.frames.push(frame);
        if self.frames.len() >= 2 * self.burst {
            // The spill path with nothing of its own to give: the cache's surplus goes,
            // through the kept vector (no allocation).
            let mut surplus = std::mem::take(&mut self.spill);
            self.spill_all(&mut surplus);
            self.spill = surplus;
        } else {
            self.held.store(self.frames.len(), Ordering::Relaxed);
        }
    }

    /// Give back every frame of `frames`, leaving it empty: to the cache, with no atomic
    /// operation, while it holds less than two bursts; past that, the cache keeps one burst
    /// (topped up with the last frames of `frames`) and the rest goes back to the arena in
    /// one compare-and-swap, linked where it lies (a burst of received frames is not
    /// copied into the cache only to be copied out again).
    pub fn free_all(&mut self, frames: &mut Vec<Frame>) {
        for f in frames.iter() {
            assert_eq!(f.arena, self.arena.id, "frame freed into a foreign arena");
        }
        if self.frames.len() + frames.len() < 2 * self.burst {
            // One by one: most calls give back a frame or two, which `append` would copy
            // through a call to `memcpy`.
            for f in frames.drain(..) {
                self.frames.push(f);
            }
            self.held.store(self.frames.len(), Ordering::Relaxed);
        } else {
            self.spill_all(frames);
        }
    }

    /// [`free_all`](Self::free_all) and [`free`](Self::free) past two bursts (out of line:
    /// a burst of received frames takes it once, a stream of single frames once every
    /// burst).
    #[inline(never)]
    fn spill_all(&mut self, frames: &mut Vec<Frame>) {
        let keep = self
            .burst
            .saturating_sub(self.frames.len())
            .min(frames.len());
        let at = frames.len() - keep;
        self.frames.extend(frames.drain(at..));
        if self.frames.len() > self.burst {
            frames.extend(self.frames.drain(self.burst..));
        }
        // Counted out of the cache before they are free (see `FrameArena::in_use` on
        // readings taken while frames move).
        self.held.store(self.frames.len(), Ordering::Relaxed);
        self.arena.free_all(frames);
        self.held.store(self.frames.len(), Ordering::Relaxed);
    }

    /// Give every cached frame back to the arena.
    pub fn flush(&mut self) {
        self.held.store(0, Ordering::Relaxed);
        self.arena.free_all(&mut self.frames);
    }
}

impl Drop for FrameCache {
    fn drop(&mut self) {
        self.flush();
    }
}

impl std::fmt::Debug for FrameCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameCache")
            .field("held", &self.frames.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_caches_take_and_give_back_in_bursts() {
        let a = Arc::new(FrameArena::new(4096).unwrap());
        let mut c = FrameCache::new(a.clone());
        let f = c.alloc().unwrap();
        // One frame out; the other 31 of the burst wait in the cache, free.
        assert_eq!(a.in_use(), 1);
        assert_eq!(a.free.len(), 4096 - CACHE_BURST);
        c.free(f);
        assert_eq!(a.in_use(), 0);
        // Many frames out and back: the cache spills past two bursts.
        let mut out: Vec<Frame> = (0..100).map(|_| c.alloc().unwrap()).collect();
        assert_eq!(a.in_use(), 100);
        for f in out.drain(..) {
            c.free(f);
        }
        assert_eq!(a.in_use(), 0);
        assert!(a.free.len() >= 4096 - 2 * CACHE_BURST);
        // A frame given back with its data moved comes out fresh.
        let mut f = c.alloc().unwrap();
        f.set_len(100);
        assert!(f.pull_header(14));
        c.free(f);
        let g = c.alloc().unwrap();
        assert_eq!((g.len(), g.headroom()), (0, HEADROOM));
        c.free(g);
        // Two threads, a cache each, over one arena: no frame twice, none lost.
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let a = a.clone();
                std::thread::spawn(move || {
                    let mut c = FrameCache::new(a);
                    let mut seen = std::collections::HashSet::new();
                    for round in 0..2_000usize {
                        let fs: Vec<Frame> =
                            (0..1 + round % 70).filter_map(|_| c.alloc()).collect();
                        seen.clear();
                        for f in &fs {
                            assert!(seen.insert(f.index()), "index handed out twice");
                        }
                        for f in fs {
                            c.free(f);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(c);
        assert_eq!(a.in_use(), 0);
        assert_eq!(a.free.len(), 4096, "dropped caches gave every frame back");
        // A small arena gets small bursts: 128 frames, 2 at a time.
        let small = Arc::new(FrameArena::new(128).unwrap());
        let mut c = FrameCache::new(small.clone());
        let f = c.alloc().unwrap();
        assert_eq!(small.free_frames(), 126);
        c.free(f);
        drop(c);
        assert_eq!(small.free_frames(), 128);
        // An arena with no frame left: the cache says so.
        let small = Arc::new(FrameArena::new(1).unwrap());
        let mut c = FrameCache::new(small.clone());
        let only = c.alloc().unwrap();
        assert!(c.alloc().is_none());
        assert_eq!(small.alloc_failures(), 1);
        c.free(only);
    }

    #[test]
    fn a_burst_given_back_stays_in_the_cache_up_to_two_bursts() {
        let a = Arc::new(FrameArena::new(4096).unwrap());
        let mut c = FrameCache::new(a.clone());
        let mut out: Vec<Frame> = (0..40).map(|_| a.alloc().unwrap()).collect();
        let free = a.free.len();
        c.free_all(&mut out);
        assert!(out.is_empty());
        // Below two bursts: all 40 kept, counted free, none back on the arena's list.
        assert_eq!((a.in_use(), a.free.len()), (0, free));
        // Past two bursts, one burst stays and the rest goes back in one push.
        let mut more: Vec<Frame> = (0..30).map(|_| a.alloc().unwrap()).collect();
        c.free_all(&mut more);
        assert_eq!(a.in_use(), 0);
        assert_eq!(a.free.len(), free - 30 + 70 - CACHE_BURST);
        // The kept frames are handed out again, each once.
        let again: Vec<Frame> = (0..CACHE_BURST).map(|_| c.alloc().unwrap()).collect();
        let mut seen = std::collections::HashSet::new();
        assert!(again.iter().all(|f| seen.insert(f.index())));
        assert_eq!(a.free.len(), free - 30 + 70 - CACHE_BURST, "no refill yet");
        let mut again = again;
        c.free_all(&mut again);
        drop(c);
        assert_eq!((a.in_use(), a.free.len()), (0, 4096));
    }

    #[test]
    #[should_panic(expected = "foreign arena")]
    fn a_frame_of_another_arena_is_refused() {
        let a = Arc::new(FrameArena::new(64).unwrap());
        let b = FrameArena::new(64).unwrap();
        let mut c = FrameCache::new(a);
        c.free_all(&mut vec![b.alloc().unwrap()]);
    }
}
