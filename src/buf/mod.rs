//! Buffers: the frame arena that holds every packet, and the byte rings that hold every
//! connection's payload.
//!
//! * [`FrameArena`] is one page-aligned region cut into [`FRAME_SIZE`]-byte frames. Its layout
//!   is exactly an AF_XDP UMEM, so a kernel-bypass backend can register it as is. Frames are
//!   named by 8-byte [`Frame`] handles that move through the pipeline; a handle is the only way
//!   to reach a frame's bytes, so owning the handle means owning the bytes.
//! * [`byte_ring`] makes a single-producer / single-consumer byte ring with free-running
//!   64-bit positions. The engine places received payload straight into a connection's RX ring
//!   (also ahead of the in-order point, for out-of-order segments) and copies transmit payload
//!   out of the TX ring (again, for retransmissions) until it is acknowledged.
//!
//! This module and `backends` are the only places with `unsafe` code.
#![allow(unsafe_code)]

mod cache;
mod ring;

pub use cache::FrameCache;
pub use ring::{byte_ring, ReadLease, RingError, RingObserver, RingReader, RingWriter, WriteLease};

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::num::NonZeroU16;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Size of one frame in the arena (bytes). Enough for a 1514-byte Ethernet frame plus headroom.
pub const FRAME_SIZE: usize = 2048;

/// Headroom of a freshly allocated frame: its data starts this many bytes into the frame's
/// buffer, so a stage can push a header (a VLAN tag, an encapsulation) in front of it in O(1).
pub const HEADROOM: usize = 64;

/// Largest data offset a frame handle can hold.
pub const MAX_HEADROOM: usize = 255;

/// Largest arena: frame indices take 24 bits of a handle.
pub const MAX_FRAMES: usize = 1 << 24;

const INDEX_MASK: u32 = (1 << 24) - 1;

const PAGE: usize = 4096;

static NEXT_ARENA_ID: AtomicU16 = AtomicU16::new(1);

/// A new arena's id: never zero (which gives `Option<Frame>` a niche: 8 bytes, not 12).
/// Ids wrap after 65,535 arenas; frames of arenas that far apart do not meet.
fn next_arena_id() -> NonZeroU16 {
    loop {
        if let Some(id) = NonZeroU16::new(NEXT_ARENA_ID.fetch_add(1, Ordering::Relaxed)) {
            return id;
        }
    }
}

/// A handle to one frame of a [`FrameArena`]: 8 bytes, movable, neither `Copy` nor `Clone`.
///
/// The handle carries the frame's index, where its data starts in the frame's buffer (the
/// headroom), the length of valid data and the id of its arena. Whoever holds the handle may
/// read and write the frame; it must give the handle back with [`FrameArena::free`] (or hand
/// it to a port, which does so).
///
/// Headers are pushed and stripped in O(1) by moving the start of the data:
///
/// ```
/// use flextoe::buf::{FrameArena, HEADROOM};
///
/// let arena = FrameArena::new(4).unwrap();
/// let mut f = arena.alloc_copy(b"payload").unwrap();
/// assert_eq!(f.headroom(), HEADROOM);
/// assert!(f.push_header(4));
/// arena.data_mut(&mut f)[..4].copy_from_slice(b"hdr:");
/// assert_eq!(arena.data(&f), b"hdr:payload");
/// assert!(f.pull_header(4));
/// assert_eq!(arena.data(&f), b"payload");
/// arena.free(f);
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// Index (low 24 bits) and data offset (high 8 bits).
    slot: u32,
    len: u16,
    arena: NonZeroU16,
}

const _: () = assert!(std::mem::size_of::<Frame>() == 8);
const _: () = assert!(std::mem::size_of::<Option<Frame>>() == 8);

impl Frame {
    /// Number of valid bytes in the frame.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the frame holds no data.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Set the number of valid bytes (clamped to the room after the headroom).
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(FRAME_SIZE - self.headroom()) as u16;
    }

    /// The frame's index inside its arena (its buffer starts `index * FRAME_SIZE` bytes into
    /// the region, its data [`headroom`](Self::headroom) bytes later).
    pub fn index(&self) -> u32 {
        self.slot & INDEX_MASK
    }

    /// Bytes in front of the data: room to push headers, and the data's offset in the
    /// frame's buffer.
    pub fn headroom(&self) -> usize {
        (self.slot >> 24) as usize
    }

    /// Start the data `offset` bytes into the frame's buffer without moving any byte (for
    /// ports that learn where a received frame begins); the length is clamped to what fits.
    /// Returns `false`, changing nothing, when `offset` exceeds [`MAX_HEADROOM`].
    pub fn set_headroom(&mut self, offset: usize) -> bool {
        if offset > MAX_HEADROOM {
            return false;
        }
        self.slot = self.index() | (offset as u32) << 24;
        self.set_len(self.len as usize);
        true
    }

    /// Grow the data by `n` bytes at the front (to write a header there). Returns `false`,
    /// changing nothing, when the headroom is smaller than `n`.
    pub fn push_header(&mut self, n: usize) -> bool {
        let h = self.headroom();
        if n > h {
            return false;
        }
        self.slot = self.index() | ((h - n) as u32) << 24;
        self.len += n as u16;
        true
    }

    /// Drop `n` bytes from the front of the data (a header). Returns `false`, changing
    /// nothing, when the data is shorter or the offset would exceed [`MAX_HEADROOM`].
    pub fn pull_header(&mut self, n: usize) -> bool {
        let h = self.headroom() + n;
        if n > self.len() || h > MAX_HEADROOM {
            return false;
        }
        self.slot = self.index() | (h as u32) << 24;
        self.len -= n as u16;
        true
    }
}

/// Errors from creating an arena.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArenaError {
    /// Zero frames, or more than fit in the address space.
    #[error("invalid arena size: {0} frames")]
    InvalidSize(usize),
    /// The allocator could not provide the region.
    #[error("out of memory allocating {0} bytes for the frame arena")]
    OutOfMemory(usize),
}

/// One page-aligned region of fixed-size frames with a lock-free free list.
///
/// The free list is a LIFO stack (a Treiber stack whose head carries a modification tag
/// against ABA), so the most recently freed, cache-warm frame is handed out next. Allocation
/// and release are one compare-and-swap each: no lock and no system call per packet.
pub struct FrameArena {
    base: NonNull<u8>,
    memory: Memory,
    frames: u32,
    id: NonZeroU16,
    free: FreeStack,
    alloc_failures: AtomicUsize,
    /// Frames each [`FrameCache`] of this arena holds (written by its cache only).
    caches: std::sync::Mutex<Vec<std::sync::Weak<AtomicUsize>>>,
}

const NIL: u32 = u32::MAX;

/// Who owns an arena's region.
enum Memory {
    /// Allocated by [`FrameArena::new`] with this layout.
    Own(Layout),
    /// Lent by a backend ([`FrameArena::from_raw`]): its size, and what gives it back.
    Lent {
        len: usize,
        release: Option<Box<dyn FnOnce() + Send>>,
    },
}

/// Lock-free stack of frame indices. The head packs (tag << 32 | index).
struct FreeStack {
    head: AtomicU64,
    next: Box<[AtomicU32]>,
    len: AtomicUsize,
}

impl FreeStack {
    fn new(n: u32) -> Self {
        // Initially 0 -> 1 -> ... -> n-1.
        let next: Box<[AtomicU32]> = (0..n)
            .map(|i| AtomicU32::new(if i + 1 < n { i + 1 } else { NIL }))
            .collect();
        FreeStack {
            head: AtomicU64::new(if n > 0 { 0 } else { NIL as u64 }),
            next,
            len: AtomicUsize::new(n as usize),
        }
    }

    fn pop(&self) -> Option<u32> {
        let mut cur = self.head.load(Ordering::Acquire);
        loop {
            let idx = cur as u32;
            if idx == NIL {
                return None;
            }
            let next = self.next[idx as usize].load(Ordering::Relaxed);
            let new = ((cur >> 32).wrapping_add(1) << 32) | next as u64;
            match self
                .head
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    return Some(idx);
                }
                Err(actual) => cur = actual,
            }
        }
    }

    fn push(&self, idx: u32) {
        // Count the frame before it can be popped again, so that a concurrent pop's
        // decrement never takes the count below zero.
        self.len.fetch_add(1, Ordering::Relaxed);
        let mut cur = self.head.load(Ordering::Acquire);
        loop {
            self.next[idx as usize].store(cur as u32, Ordering::Relaxed);
            let new = ((cur >> 32).wrapping_add(1) << 32) | idx as u64;
            match self
                .head
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Push `idx` (already linked to each other through `next`, first to last) with one
    /// compare-and-swap: `first` becomes the head and `last` links to the old head.
    fn push_chain(&self, first: u32, last: u32, n: usize) {
        self.len.fetch_add(n, Ordering::Relaxed);
        let mut cur = self.head.load(Ordering::Acquire);
        loop {
            self.next[last as usize].store(cur as u32, Ordering::Relaxed);
            let new = ((cur >> 32).wrapping_add(1) << 32) | first as u64;
            match self
                .head
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Pop up to `max` indices with one compare-and-swap, appending them to `out`. The walk
    /// along `next` may read links another thread is rewriting, but the tagged head only
    /// matches if nobody popped or pushed since it was read, and then the walked links were
    /// those of the stack.
    fn pop_chain<T>(&self, max: usize, out: &mut Vec<T>, make: impl Fn(u32) -> T) -> usize {
        let start = out.len();
        let mut cur = self.head.load(Ordering::Acquire);
        loop {
            out.truncate(start);
            let mut idx = cur as u32;
            while idx != NIL && out.len() - start < max {
                out.push(make(idx));
                idx = self.next[idx as usize].load(Ordering::Relaxed);
            }
            let n = out.len() - start;
            if n == 0 {
                return 0;
            }
            let new = ((cur >> 32).wrapping_add(1) << 32) | idx as u64;
            match self
                .head
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.len.fetch_sub(n, Ordering::Relaxed);
                    return n;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

// SAFETY: the region is only reached through `Frame` handles. Each index is owned by at most
// one handle at a time (the free list hands out each index once until it is freed), and the
// accessors borrow the handle (shared for reads, exclusive for writes), so no two threads can
// touch the same frame's bytes through safe code at the same time.
unsafe impl Send for FrameArena {}
// SAFETY: see above; shared access to the arena only yields access to frames one owns.
unsafe impl Sync for FrameArena {}

impl FrameArena {
    /// Allocate an arena of `frames` frames of [`FRAME_SIZE`] bytes, zeroed and page-aligned.
    pub fn new(frames: usize) -> Result<Self, ArenaError> {
        if frames == 0 || frames > MAX_FRAMES {
            return Err(ArenaError::InvalidSize(frames));
        }
        let bytes = frames * FRAME_SIZE;
        let layout =
            Layout::from_size_align(bytes, PAGE).map_err(|_| ArenaError::InvalidSize(frames))?;
        // SAFETY: the layout has non-zero size (frames > 0) and a valid power-of-two alignment.
        let ptr = unsafe { alloc_zeroed(layout) };
        let base = NonNull::new(ptr).ok_or(ArenaError::OutOfMemory(bytes))?;
        let free = FreeStack::new(frames as u32);
        Ok(FrameArena {
            base,
            memory: Memory::Own(layout),
            frames: frames as u32,
            id: next_arena_id(),
            free,
            alloc_failures: AtomicUsize::new(0),
            caches: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// An arena over memory a backend provides (a DPDK mempool's region, hugepages, a
    /// device's DMA window): `len / FRAME_SIZE` frames starting at `base`. `release` runs
    /// when the arena is dropped, to give the memory back.
    ///
    /// # Safety
    ///
    /// `base` must be aligned to 4096 bytes and point to `len` bytes that are valid for reads
    /// and writes, and that nothing but this arena (and the devices its frames are handed to)
    /// reads or writes until `release` runs, or until the end of the program when there is no
    /// `release`.
    pub unsafe fn from_raw(
        base: NonNull<u8>,
        len: usize,
        release: Option<Box<dyn FnOnce() + Send>>,
    ) -> Result<Self, ArenaError> {
        let frames = len / FRAME_SIZE;
        if frames == 0 || frames > MAX_FRAMES || !(base.as_ptr() as usize).is_multiple_of(PAGE) {
            return Err(ArenaError::InvalidSize(frames));
        }
        Ok(FrameArena {
            base,
            memory: Memory::Lent {
                len: frames * FRAME_SIZE,
                release,
            },
            frames: frames as u32,
            id: next_arena_id(),
            free: FreeStack::new(frames as u32),
            alloc_failures: AtomicUsize::new(0),
            caches: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Total number of frames.
    pub fn capacity(&self) -> usize {
        self.frames as usize
    }

    /// Frames currently handed out (frames held by a [`FrameCache`] count as free). Exact
    /// while no cache moves frames; a reading taken while caches refill or spill may be off
    /// by up to a burst per cache, either way (it reads the caches and the free list one
    /// after the other).
    pub fn in_use(&self) -> usize {
        let cached: usize = self
            .caches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .map(|n| n.load(Ordering::Relaxed))
            .sum();
        (self.frames as usize - self.free.len()).saturating_sub(cached)
    }

    /// Frames [`alloc`](Self::alloc) can hand out now: the free list's length. Frames held
    /// by [`FrameCache`]s count as free in [`in_use`](Self::in_use) but not here.
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// How often [`alloc`](Self::alloc) found no free frame.
    pub fn alloc_failures(&self) -> usize {
        self.alloc_failures.load(Ordering::Relaxed)
    }

    /// Start of the region (for registering it as an AF_XDP UMEM or DMA area).
    pub fn base_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Size of the region in bytes.
    pub fn region_len(&self) -> usize {
        match &self.memory {
            Memory::Own(l) => l.size(),
            Memory::Lent { len, .. } => *len,
        }
    }

    /// Take a free frame (length 0, [`HEADROOM`] bytes of headroom), or `None` when all
    /// frames are in use.
    pub fn alloc(&self) -> Option<Frame> {
        match self.free.pop() {
            Some(index) => Some(Frame {
                slot: index | (HEADROOM as u32) << 24,
                len: 0,
                arena: self.id,
            }),
            None => {
                self.alloc_failures.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Give a frame back.
    pub fn free(&self, frame: Frame) {
        assert_eq!(frame.arena, self.id, "frame freed into a foreign arena");
        self.free.push(frame.index());
    }

    /// Hand a frame to a device's own buffer pool (a DPDK mempool) without freeing it: the
    /// frame stays in use, and its index is all that is left of the handle. Get the handle
    /// back with [`reclaim`](Self::reclaim).
    #[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
    pub(crate) fn lend(&self, frame: Frame) -> u32 {
        assert_eq!(frame.arena, self.id, "frame lent from a foreign arena");
        frame.index()
    }

    /// The handle of a frame lent with [`lend`](Self::lend), data empty at `headroom`.
    ///
    /// # Safety
    ///
    /// `index` must have been lent and not reclaimed since: one handle per frame at a time.
    #[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
    pub(crate) unsafe fn reclaim(&self, index: u32, headroom: usize) -> Frame {
        debug_assert!(index < self.frames);
        Frame {
            slot: index | (headroom.min(MAX_HEADROOM) as u32) << 24,
            len: 0,
            arena: self.id,
        }
    }

    /// Give back every frame of a burst, leaving it empty: one compare-and-swap for the
    /// whole burst, however long.
    pub fn free_all(&self, frames: &mut Vec<Frame>) {
        let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
            return;
        };
        let (first, last) = (first.index(), last.index());
        let mut prev: Option<u32> = None;
        for f in frames.iter() {
            assert_eq!(f.arena, self.id, "frame freed into a foreign arena");
            if let Some(p) = prev {
                self.free.next[p as usize].store(f.index(), Ordering::Relaxed);
            }
            prev = Some(f.index());
        }
        self.free.push_chain(first, last, frames.len());
        frames.clear();
    }

    /// Take up to `n` free frames with one compare-and-swap (each like [`alloc`](Self::alloc)
    /// makes them), appending them to `out`; returns how many. Fewer than `n` (possibly none)
    /// when the arena runs short; a short burst counts as one allocation failure.
    pub fn alloc_burst(&self, n: usize, out: &mut Vec<Frame>) -> usize {
        let id = self.id;
        let got = self.free.pop_chain(n, out, |index| Frame {
            slot: index | (HEADROOM as u32) << 24,
            len: 0,
            arena: id,
        });
        if got < n {
            self.alloc_failures.fetch_add(1, Ordering::Relaxed);
        }
        got
    }

    /// Where the frame's data starts.
    fn frame_ptr(&self, frame: &Frame) -> *mut u8 {
        assert_eq!(frame.arena, self.id, "frame used with a foreign arena");
        debug_assert!(frame.index() < self.frames);
        // SAFETY: index < frames (handles are only made by `alloc` from this arena's free
        // list) and headroom <= MAX_HEADROOM < FRAME_SIZE, so the offset stays inside the
        // allocation.
        unsafe {
            self.base
                .as_ptr()
                .add(frame.index() as usize * FRAME_SIZE + frame.headroom())
        }
    }

    /// The frame's valid bytes.
    pub fn data<'a>(&'a self, frame: &'a Frame) -> &'a [u8] {
        let p = self.frame_ptr(frame);
        // SAFETY: the data lies inside the frame (headroom + len <= FRAME_SIZE, kept by every
        // method that changes either), and the returned slice keeps the unique handle
        // borrowed, which excludes writers while it lives.
        unsafe { std::slice::from_raw_parts(p, frame.len as usize) }
    }

    /// The frame's buffer from the start of its data to the end of the frame
    /// (`FRAME_SIZE - headroom` bytes), for writing.
    pub fn buf_mut<'a>(&'a self, frame: &'a mut Frame) -> &'a mut [u8] {
        let p = self.frame_ptr(frame);
        let room = FRAME_SIZE - frame.headroom();
        // SAFETY: the range lies inside the frame, and the returned slice keeps the unique
        // handle exclusively borrowed, so no other reference to these bytes can exist.
        unsafe { std::slice::from_raw_parts_mut(p, room) }
    }

    /// The frame's whole buffer (`FRAME_SIZE` bytes, headroom included: the data starts
    /// [`Frame::headroom`] bytes in), for writing; for programs that may move the data's
    /// start back into the headroom (an XDP program's `bpf_xdp_adjust_head`).
    pub fn whole_buf_mut<'a>(&'a self, frame: &'a mut Frame) -> &'a mut [u8] {
        let h = frame.headroom();
        // SAFETY: the start of the data minus its headroom is the start of the frame's own
        // `FRAME_SIZE`-byte slot in the arena (see `frame_ptr`); the returned slice keeps the
        // unique handle exclusively borrowed, so no other reference to these bytes can exist.
        unsafe { std::slice::from_raw_parts_mut(self.frame_ptr(frame).sub(h), FRAME_SIZE) }
    }

    /// The frame's valid bytes, for writing.
    pub fn data_mut<'a>(&'a self, frame: &'a mut Frame) -> &'a mut [u8] {
        let len = frame.len as usize;
        &mut self.buf_mut(frame)[..len]
    }

    /// Allocate a frame and copy `bytes` into it (truncated to the room after the headroom).
    pub fn alloc_copy(&self, bytes: &[u8]) -> Option<Frame> {
        let mut f = self.alloc()?;
        let buf = self.buf_mut(&mut f);
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        f.set_len(n);
        Some(f)
    }
}

impl Drop for FrameArena {
    fn drop(&mut self) {
        match &mut self.memory {
            // SAFETY: `base` was allocated in `new` with exactly this layout.
            Memory::Own(l) => unsafe { dealloc(self.base.as_ptr(), *l) },
            Memory::Lent { release, .. } => {
                if let Some(r) = release.take() {
                    r();
                }
            }
        }
    }
}

impl std::fmt::Debug for FrameArena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameArena")
            .field("frames", &self.frames)
            .field("in_use", &self.in_use())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn arena_over_lent_memory_gives_it_back() {
        use std::sync::atomic::AtomicBool;
        let layout = Layout::from_size_align(8 * FRAME_SIZE, PAGE).unwrap();
        // SAFETY: non-zero size, valid alignment.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) }).unwrap();
        let released = Arc::new(AtomicBool::new(false));
        let r = released.clone();
        let addr = ptr.as_ptr() as usize;
        let release = Box::new(move || {
            r.store(true, Ordering::SeqCst);
            // SAFETY: allocated above with this layout; the arena is gone.
            unsafe { dealloc(addr as *mut u8, layout) }
        });
        // SAFETY: the region is ours, page-aligned, 8 frames long, and only the arena uses it.
        let arena = unsafe { FrameArena::from_raw(ptr, 8 * FRAME_SIZE + 100, Some(release)) };
        let arena = arena.unwrap();
        assert_eq!(arena.capacity(), 8);
        assert_eq!(arena.region_len(), 8 * FRAME_SIZE);
        assert_eq!(arena.base_ptr() as usize, addr);
        let f = arena.alloc_copy(b"lent").unwrap();
        assert_eq!(arena.data(&f), b"lent");
        arena.free(f);
        drop(arena);
        assert!(released.load(Ordering::SeqCst));
        // Misaligned or too small regions are refused.
        // SAFETY: refused before any access.
        let bad = unsafe { FrameArena::from_raw(NonNull::dangling(), 100, None) };
        assert!(bad.is_err());
    }

    #[test]
    fn headroom_bounds() {
        let arena = FrameArena::new(2).unwrap();
        let mut f = arena.alloc().unwrap();
        assert_eq!(f.headroom(), HEADROOM);
        assert_eq!(arena.buf_mut(&mut f).len(), FRAME_SIZE - HEADROOM);
        f.set_len(FRAME_SIZE);
        assert_eq!(f.len(), FRAME_SIZE - HEADROOM, "length clamped to the room");
        assert!(!f.push_header(HEADROOM + 1));
        assert!(f.push_header(HEADROOM));
        assert_eq!((f.headroom(), f.len()), (0, FRAME_SIZE));
        assert!(!f.pull_header(MAX_HEADROOM + 1));
        assert!(f.pull_header(MAX_HEADROOM));
        assert_eq!(f.headroom(), MAX_HEADROOM);
        assert!(!f.set_headroom(MAX_HEADROOM + 1));
        assert!(f.set_headroom(0));
        assert_eq!(f.len(), FRAME_SIZE - MAX_HEADROOM);
        assert_eq!(f.index() as usize, f.index() as usize % 2);
        arena.free(f);
    }

    #[test]
    fn arena_alloc_free_and_bounds() {
        let a = FrameArena::new(4).unwrap();
        assert_eq!(a.base_ptr() as usize % PAGE, 0);
        let mut fs: Vec<Frame> = (0..4).map(|_| a.alloc().unwrap()).collect();
        assert!(a.alloc().is_none());
        assert_eq!(a.alloc_failures(), 1);
        a.buf_mut(&mut fs[1])[..3].copy_from_slice(b"abc");
        fs[1].set_len(3);
        assert_eq!(a.data(&fs[1]), b"abc");
        assert_eq!(a.in_use(), 4);
        a.free_all(&mut fs);
        assert_eq!(a.in_use(), 0);
        assert!(FrameArena::new(0).is_err());
    }

    #[test]
    fn arena_is_lifo_and_thread_safe() {
        let a = Arc::new(FrameArena::new(256).unwrap());
        let f = a.alloc().unwrap();
        let i = f.index();
        a.free(f);
        assert_eq!(
            a.alloc().map(|f| f.index()),
            Some(i),
            "last freed comes first"
        );
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let a = a.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let fs: Vec<Frame> = (0..8).filter_map(|_| a.alloc()).collect();
                        let mut seen = std::collections::HashSet::new();
                        for f in &fs {
                            assert!(seen.insert(f.index()), "index handed out twice");
                        }
                        for f in fs {
                            a.free(f);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(a.in_use(), 1);
    }

    #[test]
    fn burst_alloc_and_free_hand_out_each_frame_once() {
        use std::sync::atomic::AtomicBool;
        let a = Arc::new(FrameArena::new(96).unwrap());
        let mut got = Vec::new();
        assert_eq!(a.alloc_burst(40, &mut got), 40);
        assert_eq!(a.in_use(), 40);
        assert_eq!(
            a.alloc_burst(100, &mut got),
            56,
            "a short burst takes what is left"
        );
        assert_eq!(a.alloc_failures(), 1);
        assert_eq!(a.alloc_burst(1, &mut got), 0);
        let distinct: std::collections::HashSet<u32> = got.iter().map(Frame::index).collect();
        assert_eq!(distinct.len(), 96);
        a.free_all(&mut got);
        assert!(got.is_empty());
        assert_eq!(a.in_use(), 0);
        // Threads mixing single and burst operations: a frame is never held twice.
        let held: Arc<Vec<AtomicBool>> =
            Arc::new((0..96).map(|_| AtomicBool::new(false)).collect());
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let (a, held) = (a.clone(), held.clone());
                std::thread::spawn(move || {
                    let mut fs = Vec::new();
                    for round in 0..20_000usize {
                        if (round + t) % 3 == 0 {
                            fs.extend(a.alloc());
                        } else {
                            a.alloc_burst(1 + round % 9, &mut fs);
                        }
                        for f in &fs {
                            let was = held[f.index() as usize].swap(true, Ordering::AcqRel);
                            assert!(!was, "frame {} handed out twice", f.index());
                        }
                        for f in &fs {
                            held[f.index() as usize].store(false, Ordering::Release);
                        }
                        if round % 2 == 0 {
                            a.free_all(&mut fs);
                        } else {
                            for f in fs.drain(..) {
                                a.free(f);
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(a.in_use(), 0);
    }

    #[test]
    #[should_panic]
    fn foreign_frame_is_refused() {
        let a = FrameArena::new(1).unwrap();
        let b = FrameArena::new(1).unwrap();
        let f = a.alloc().unwrap();
        b.free(f);
    }
}
