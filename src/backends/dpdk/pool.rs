//! The frame arena as a DPDK mempool: one region, two owners, no copies.
//!
//! The arena's region is a DPDK memory zone, and the mempool is created over it with
//! pinned external buffers (`rte_pktmbuf_pool_create_extbuf`): mbuf `k`'s data buffer is an
//! arena frame, so an mbuf and a frame name the same bytes and each maps to the other in
//! O(1) (the mbuf's buffer address gives the frame index; a table gives the mbuf of a frame).
//!
//! Each frame is on one side at a time:
//!
//! * **the engine's side**: free in the arena or held by the engine as a `Frame`; its mbuf
//!   header is idle, kept by the pool's table;
//! * **DPDK's side**: free in the mempool (where a driver takes receive buffers from), or in
//!   a driver's queue; the arena counts it as in use and no `Frame` handle exists.
//!
//! Receiving moves a frame to the engine's side (the mbuf's frame becomes a handle, the data
//! stays where the driver wrote it); sending moves it to DPDK's side (the handle becomes the
//! mbuf, and the driver frees the mbuf into the mempool when it is on the wire).
//! [`FramePool::balance`] keeps about `target` free mbufs in the mempool by moving free
//! frames across in either direction.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::ffi;
use super::{eal, DpdkError, Eal};
use crate::buf::{Frame, FrameArena, FRAME_SIZE};

static NEXT_POOL: AtomicUsize = AtomicUsize::new(0);

/// `SOCKET_ID_ANY`.
const ANY_SOCKET: i32 = -1;

/// A frame arena whose frames are also the buffers of a DPDK mempool.
pub struct FramePool {
    arena: Arc<FrameArena>,
    mp: NonNull<ffi::rte_mempool>,
    /// The mbuf whose buffer is frame `i`.
    mbufs: Box<[NonNull<ffi::rte_mbuf>]>,
    base: usize,
    target: usize,
    name: String,
    moved_to_dpdk: AtomicU64,
    moved_to_engine: AtomicU64,
}

// SAFETY: the mempool is DPDK's thread-safe pool (a multi-producer, multi-consumer ring, no
// per-lcore cache); the mbuf table is written once in `new` and only read afterwards. Which
// thread may touch an mbuf's header is decided by the ownership rules in the module docs.
unsafe impl Send for FramePool {}
// SAFETY: as above: shared use only calls the pool's thread-safe operations.
unsafe impl Sync for FramePool {}

/// A snapshot of where a pool's frames are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounts {
    /// Frames in the arena (and mbufs in the mempool).
    pub frames: usize,
    /// Frames handed out by the arena (held by the engine, or on DPDK's side).
    pub arena_in_use: usize,
    /// mbufs taken from the mempool (on the engine's side, or in a driver's queue).
    pub mbufs_in_use: usize,
    /// Free mbufs in the mempool.
    pub mbufs_free: usize,
    /// Frames moved from the engine's side to the mempool so far.
    pub moved_to_dpdk: u64,
    /// Frames moved back from the mempool to the arena so far.
    pub moved_to_engine: u64,
}

impl PoolCounts {
    /// Frames that are neither free in the arena nor free in the mempool: held by the
    /// engine or in a driver's queue (or on a link between two ports). Zero once the
    /// engines are gone and the ports closed: nothing leaked.
    pub fn outstanding(&self) -> usize {
        (self.arena_in_use + self.mbufs_in_use).saturating_sub(self.frames)
    }
}

impl FramePool {
    /// Make a pool of `frames` frames (each [`FRAME_SIZE`] bytes) in DPDK memory, keeping
    /// about `target` of them free in the mempool for drivers to receive into.
    pub fn new(_eal: &Eal, frames: usize, target: usize) -> Result<Arc<FramePool>, DpdkError> {
        if frames < 64 || frames > u32::MAX as usize || target >= frames {
            return Err(DpdkError::Config(format!(
                "a pool needs at least 64 frames and fewer receive buffers than frames \
                 (got {frames} frames, {target} receive buffers)"
            )));
        }
        let id = NEXT_POOL.fetch_add(1, Ordering::Relaxed);
        let name = format!("ftoe{}_{id}", std::process::id() % 100_000);
        let len = frames * FRAME_SIZE;
        let mz_name = CString::new(format!("{name}_mz")).expect("no NUL");
        // SAFETY: the name is a live NUL-terminated string; DPDK copies it.
        let mut mz = unsafe {
            ffi::rte_memzone_reserve_aligned(
                mz_name.as_ptr(),
                len,
                ANY_SOCKET,
                ffi::RTE_MEMZONE_IOVA_CONTIG,
                4096,
            )
        };
        // SAFETY: plain C call.
        let iova_va = unsafe { ffi::rte_eal_iova_mode() } == ffi::RTE_IOVA_VA;
        if mz.is_null() && iova_va {
            // Not IO-contiguous: with IO addresses = virtual addresses the region is still
            // one DMA window (and drivers that do not DMA do not care). With physical
            // addresses it would not be: every mbuf past the first page would get a wrong
            // IO address, so that case is an error.
            // SAFETY: as above.
            mz = unsafe {
                ffi::rte_memzone_reserve_aligned(mz_name.as_ptr(), len, ANY_SOCKET, 0, 4096)
            };
        }
        if mz.is_null() {
            return Err(DpdkError::rte("rte_memzone_reserve_aligned", eal::errno()));
        }
        // SAFETY: `mz` is a live memzone descriptor DPDK returned; its address and length
        // describe `len` bytes of DPDK memory that nobody else uses.
        let (addr, iova) = unsafe { ((*mz).__bindgen_anon_1.addr as *mut u8, (*mz).iova) };
        let base = NonNull::new(addr).ok_or_else(|| DpdkError::Config("memzone at NULL".into()))?;
        let mz_addr = mz as usize;
        let release: Box<dyn FnOnce() + Send> = Box::new(move || {
            // SAFETY: the memzone was reserved above and is freed once, when the arena (the
            // last user of its memory) is dropped.
            unsafe {
                ffi::rte_memzone_free(mz_addr as *const ffi::rte_memzone);
            }
        });
        // SAFETY: the memzone is page-aligned (align 4096), `len` bytes long, and only the
        // arena and the mempool built over it (whose drivers it is lent to) use it; the
        // memzone is released when the arena goes.
        let arena = Arc::new(
            unsafe { FrameArena::from_raw(base, len, Some(release)) }
                .map_err(|e| DpdkError::Config(e.to_string()))?,
        );
        let ext = ffi::rte_pktmbuf_extmem {
            buf_ptr: addr.cast(),
            buf_iova: iova,
            buf_len: len,
            elt_size: FRAME_SIZE as u16,
        };
        let mp_name = CString::new(format!("{name}_mp")).expect("no NUL");
        // SAFETY: `ext` describes the memzone above, which outlives the mempool (the pool
        // holds the arena); the name is copied.
        let mp = unsafe {
            ffi::rte_pktmbuf_pool_create_extbuf(
                mp_name.as_ptr(),
                frames as u32,
                0,
                0,
                FRAME_SIZE as u16,
                ANY_SOCKET,
                &ext,
                1,
            )
        };
        let mp = NonNull::new(mp)
            .ok_or_else(|| DpdkError::rte("rte_pktmbuf_pool_create_extbuf", eal::errno()))?;
        // Learn which mbuf owns which frame: take every mbuf once. All frames then start on
        // the engine's side (free in the arena), and `balance` lends `target` of them.
        let mut table: Vec<Option<NonNull<ffi::rte_mbuf>>> = vec![None; frames];
        let mut seen = 0;
        loop {
            // SAFETY: `mp` is a live mempool.
            let m = unsafe { ffi::rte_pktmbuf_alloc(mp.as_ptr()) };
            let Some(m) = NonNull::new(m) else { break };
            // SAFETY: `m` is a live mbuf just allocated.
            let (addr, buf_len) =
                unsafe { ((*m.as_ptr()).buf_addr as usize, (*m.as_ptr()).buf_len) };
            let off = addr.wrapping_sub(base.as_ptr() as usize);
            let i = off / FRAME_SIZE;
            if !off.is_multiple_of(FRAME_SIZE)
                || i >= frames
                || buf_len as usize != FRAME_SIZE
                || table[i].is_some()
            {
                // SAFETY: mempool teardown before any mbuf was handed out.
                unsafe { ffi::rte_mempool_free(mp.as_ptr()) };
                return Err(DpdkError::Config(format!(
                    "mbuf buffer at offset {off} (length {buf_len}) is not a frame of the arena"
                )));
            }
            table[i] = Some(m);
            seen += 1;
        }
        if seen != frames {
            // SAFETY: as above.
            unsafe { ffi::rte_mempool_free(mp.as_ptr()) };
            return Err(DpdkError::Config(format!(
                "mempool gave {seen} of {frames} mbufs"
            )));
        }
        let pool = FramePool {
            base: base.as_ptr() as usize,
            arena,
            mp,
            mbufs: table
                .into_iter()
                .map(|m| m.expect("every frame seen"))
                .collect(),
            target,
            name,
            moved_to_dpdk: AtomicU64::new(0),
            moved_to_engine: AtomicU64::new(0),
        };
        pool.balance();
        Ok(Arc::new(pool))
    }

    /// The arena the engine uses (give it to the engine through the port).
    pub fn arena(&self) -> &Arc<FrameArena> {
        &self.arena
    }

    /// The pool's name (its memzone and mempool names start with it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the frames are now.
    pub fn counts(&self) -> PoolCounts {
        // SAFETY: `mp` is live for the pool's life.
        let (free, used) = unsafe {
            (
                ffi::rte_mempool_avail_count(self.mp.as_ptr()) as usize,
                ffi::rte_mempool_in_use_count(self.mp.as_ptr()) as usize,
            )
        };
        PoolCounts {
            frames: self.mbufs.len(),
            arena_in_use: self.arena.in_use(),
            mbufs_in_use: used,
            mbufs_free: free,
            moved_to_dpdk: self.moved_to_dpdk.load(Ordering::Relaxed),
            moved_to_engine: self.moved_to_engine.load(Ordering::Relaxed),
        }
    }

    /// Keep the mempool's free mbufs near `target`: lend free arena frames when it runs
    /// below half, take frames back when it holds more than twice as many.
    pub fn balance(&self) {
        // SAFETY: `mp` is live.
        let free = unsafe { ffi::rte_mempool_avail_count(self.mp.as_ptr()) } as usize;
        if free < self.target / 2 {
            self.lend(self.target - free);
        } else if free > self.target * 2 {
            self.take_back(free - self.target);
        }
    }

    /// Move frames until exactly `target` mbufs are free in the mempool, as far as free
    /// frames allow (tests use it to compare counts before and after).
    pub fn settle(&self) {
        // SAFETY: `mp` is live.
        let free = unsafe { ffi::rte_mempool_avail_count(self.mp.as_ptr()) } as usize;
        if free < self.target {
            self.lend(self.target - free);
        } else {
            self.take_back(free - self.target);
        }
    }

    /// Move up to `n` free arena frames into the mempool.
    pub(super) fn lend(&self, n: usize) {
        let mut moved = 0;
        for _ in 0..n {
            let Some(f) = self.arena.alloc() else { break };
            let i = self.arena.lend(f) as usize;
            // SAFETY: the frame was on the engine's side, so its mbuf header is idle and
            // nobody else refers to it; freeing it makes the frame DPDK's.
            unsafe { ffi::rte_pktmbuf_free(self.mbufs[i].as_ptr()) };
            moved += 1;
        }
        self.moved_to_dpdk.fetch_add(moved, Ordering::Relaxed);
    }

    /// Move up to `n` free mbufs from the mempool back to the arena.
    fn take_back(&self, n: usize) {
        let mut moved = 0;
        for _ in 0..n {
            // SAFETY: `mp` is live; the mbuf returned is ours until freed.
            let m = unsafe { ffi::rte_pktmbuf_alloc(self.mp.as_ptr()) };
            let Some(m) = NonNull::new(m) else { break };
            let i = self.index_of(m).expect("the pool's own mbuf");
            // SAFETY: the frame was on DPDK's side (free in the mempool, just taken), so no
            // handle to it exists.
            let f = unsafe { self.arena.reclaim(i, 0) };
            self.arena.free(f);
            moved += 1;
        }
        self.moved_to_engine.fetch_add(moved, Ordering::Relaxed);
    }

    /// The frame whose buffer `m` is, when `m` is one of this pool's mbufs.
    pub(super) fn index_of(&self, m: NonNull<ffi::rte_mbuf>) -> Option<u32> {
        // SAFETY: `m` is a live mbuf handed to us by DPDK; only its buffer address is read.
        let addr = unsafe { (*m.as_ptr()).buf_addr } as usize;
        let off = addr.wrapping_sub(self.base);
        let i = off / FRAME_SIZE;
        (off.is_multiple_of(FRAME_SIZE) && i < self.mbufs.len() && self.mbufs[i] == m)
            .then_some(i as u32)
    }

    /// Turn a received mbuf of this pool into the frame handle of its buffer, data where
    /// the driver put it. The mbuf must be a single segment the caller owns.
    ///
    /// # Safety
    ///
    /// `m` must be this pool's mbuf (`index_of` gave `i`), handed over by a driver (so on
    /// DPDK's side) and not used by the caller afterwards.
    pub(super) unsafe fn frame_of(&self, m: NonNull<ffi::rte_mbuf>, i: u32) -> Frame {
        let (off, len) = (
            (*m.as_ptr()).data_off as usize,
            (*m.as_ptr()).data_len as usize,
        );
        let mut f = self.arena.reclaim(i, 0);
        if f.set_headroom(off) {
            f.set_len(len);
        } else {
            // An offset a handle cannot hold (drivers use 128): move the data to the front.
            // The caller checked that the data lies inside the buffer.
            self.arena
                .whole_buf_mut(&mut f)
                .copy_within(off..off + len, 0);
            f.set_len(len);
        }
        f
    }

    /// Turn a frame into its mbuf, ready to send (`data_off`, lengths set; the caller adds
    /// offload flags). The frame moves to DPDK's side.
    pub(super) fn mbuf_of(&self, f: Frame) -> NonNull<ffi::rte_mbuf> {
        let (off, len) = (f.headroom() as u16, f.len() as u16);
        let i = self.arena.lend(f) as usize;
        let m = self.mbufs[i];
        // SAFETY: the frame was the caller's, so its mbuf header was idle; reset it and
        // describe the frame's data (inside the 2048-byte buffer by the frame's invariants).
        unsafe {
            ffi::rte_pktmbuf_reset(m.as_ptr());
            let mb = &mut *m.as_ptr();
            mb.data_off = off;
            mb.data_len = len;
            mb.pkt_len = len as u32;
        }
        m
    }

    /// Give back a frame the driver did not take (`mbuf_of` was called on it).
    pub(super) fn unsent(&self, m: NonNull<ffi::rte_mbuf>) {
        let i = self.index_of(m).expect("the pool's own mbuf");
        // SAFETY: the driver refused the mbuf, so it is the caller's again and no handle
        // to its frame exists.
        let f = unsafe { self.arena.reclaim(i, 0) };
        self.arena.free(f);
    }

    /// The mempool, for queue set-up.
    pub(super) fn mempool(&self) -> *mut ffi::rte_mempool {
        self.mp.as_ptr()
    }
}

impl Drop for FramePool {
    fn drop(&mut self) {
        // Ports hold the pool, so no driver uses its mbufs any more. Frames free in the
        // mempool go back to the arena, which may live on in an engine; the memory zone
        // goes with the arena.
        self.take_back(usize::MAX);
        // SAFETY: the mempool was created in `new` and is freed once.
        unsafe { ffi::rte_mempool_free(self.mp.as_ptr()) };
    }
}
