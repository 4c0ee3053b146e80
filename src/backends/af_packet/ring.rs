//! The receive ring of an AF_PACKET socket (`PACKET_RX_RING`, `TPACKET_V2`).
//!
//! The kernel writes each received frame into the next slot of a ring of fixed-size slots
//! that the socket shares with the process (`mmap`), and hands the slot over by setting
//! `TP_STATUS_USER` in the slot's header; the process reads the frame and gives the slot
//! back by setting `TP_STATUS_KERNEL`. A poll that finds nothing makes no system call, and
//! one that finds frames makes none either: the frames are copied out of the slots into
//! arena frames (the kernel copied them in). A slot must go back before the kernel can use
//! it again, so frames are copied out, never held in the ring.

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes of one slot: the slot's header (`tpacket2_hdr`, the link-layer address) and a
/// full-sized Ethernet frame after it, aligned as the kernel places it.
pub(super) const SLOT: usize = 2048;
/// The least block (the kernel allocates the ring in blocks of whole pages: a block is the
/// page size where that is larger, 64 KiB on some arm64 and ppc64 kernels).
const MIN_BLOCK: usize = 16 << 10;
/// Slots in a ring: frames the kernel can hold for the process (2 MiB of memory).
pub(super) const SLOTS: usize = 1024;

/// Offset of the `sockaddr_ll` after a slot's header.
const ADDR_AT: usize = (std::mem::size_of::<libc::tpacket2_hdr>() + libc::TPACKET_ALIGNMENT - 1)
    & !(libc::TPACKET_ALIGNMENT - 1);

/// A frame waiting in the ring's next slot.
pub(super) struct Waiting<'a> {
    /// The bytes the slot holds (all of the frame unless it was longer than the slot).
    pub data: &'a [u8],
    /// The frame's length on the wire: longer than `data` where the slot cut it short.
    pub wire_len: usize,
    /// The link-layer packet type (`PACKET_OUTGOING` for our own, looped back).
    pub pkttype: u8,
}

/// A socket's receive ring, mapped into the process.
pub(super) struct RxRing {
    base: NonNull<u8>,
    /// The slot the next frame lands in.
    head: usize,
}

// SAFETY: the ring is mapped shared with the kernel only; in this process this struct
// holds the one pointer to it and is its only reader and writer (the kernel writes slots it
// owns and the status words); moving it to another thread moves that access with it.
unsafe impl Send for RxRing {}

impl RxRing {
    /// Set socket `fd` to `TPACKET_V2`, give it a receive ring of [`SLOTS`] slots and map
    /// the ring. Call before the socket is bound, so that the first frames land in it.
    pub(super) fn map(fd: RawFd) -> io::Result<Self> {
        super::setsockopt_i32(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            libc::tpacket_versions::TPACKET_V2 as i32,
        )?;
        // SAFETY: sysconf reads a constant of the system; a failure (-1) is handled below.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        // Powers of two (pages of 4 KiB to 64 KiB): the larger is a multiple of both, and
        // divides the ring's 2 MiB.
        let block = usize::try_from(page).unwrap_or(4096).max(MIN_BLOCK);
        if !block.is_multiple_of(SLOT) || !(SLOT * SLOTS).is_multiple_of(block) {
            return Err(io::Error::other(format!(
                "page size {page}: no ring layout"
            )));
        }
        let req = libc::tpacket_req {
            tp_block_size: block as u32,
            tp_block_nr: (SLOT * SLOTS / block) as u32,
            tp_frame_size: SLOT as u32,
            tp_frame_nr: SLOTS as u32,
        };
        // SAFETY: `req` is a live `tpacket_req` whose size is passed with it.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_RX_RING,
                (&req as *const libc::tpacket_req).cast(),
                std::mem::size_of::<libc::tpacket_req>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: maps the ring the kernel just made for `fd` (its size is the request's),
        // shared, at an address the kernel picks; the result is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SLOT * SLOTS,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(RxRing { base, head: 0 })
    }

    /// The status word of slot `i` (below [`SLOTS`]).
    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: slot `i` lies inside the mapping (`i < SLOTS`), its first four bytes are
        // the header's `tp_status`, aligned (slots are 2048 bytes apart from a page), and the
        // kernel only ever accesses that word atomically as well; the mapping lives as long
        // as `self`.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(i * SLOT).cast::<u32>()) }
    }

    /// Frames waiting from the head on, counted up to `max`.
    pub(super) fn waiting(&self, max: usize) -> usize {
        let mut n = 0;
        while n < max.min(SLOTS)
            && self.status((self.head + n) % SLOTS).load(Ordering::Acquire) & libc::TP_STATUS_USER
                != 0
        {
            n += 1;
        }
        n
    }

    /// The frame in the head slot, if the kernel has handed it over.
    pub(super) fn peek(&self) -> Option<Waiting<'_>> {
        if self.status(self.head).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
            return None;
        }
        // SAFETY: the head slot lies inside the mapping; the kernel handed it over (the
        // acquire load above saw `TP_STATUS_USER`) and writes it no more until `release`
        // gives it back, so its header and bytes are stable for the borrow of `self`.
        let slot =
            unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(self.head * SLOT), SLOT) };
        // SAFETY: the slot begins with a `tpacket2_hdr` (read unaligned: it is plain data).
        let hdr = unsafe { std::ptr::read_unaligned(slot.as_ptr().cast::<libc::tpacket2_hdr>()) };
        let at = usize::from(hdr.tp_mac);
        let snap = hdr.tp_snaplen as usize;
        // The kernel keeps the frame inside the slot; a header that says otherwise gives an
        // empty frame rather than a read outside it.
        let data = slot.get(at..at.saturating_add(snap)).unwrap_or(&[]);
        // `sll_pkttype` of the `sockaddr_ll` after the header (family 2 bytes, protocol 2,
        // ifindex 4, hatype 2, then pkttype).
        let pkttype = slot[ADDR_AT + 10];
        Some(Waiting {
            data,
            wire_len: hdr.tp_len as usize,
            pkttype,
        })
    }

    /// Give the head slot back to the kernel and move on to the next.
    pub(super) fn release(&mut self) {
        self.status(self.head)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.head = (self.head + 1) % SLOTS;
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` made; nothing borrows it any more
        // (`Waiting` borrows `self`).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), SLOT * SLOTS);
        }
    }
}
