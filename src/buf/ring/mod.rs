//! Byte rings: a connection's payload between the engine and the application.

#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

mod lease;

use lease::Leases;
pub use lease::{ReadLease, WriteLease};

/// Errors from byte-ring position checks.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum RingError {
    /// The access lies outside the region the caller owns.
    #[error("ring access out of bounds: position {pos}, length {len}")]
    OutOfBounds {
        /// Start position of the access.
        pos: u64,
        /// Length of the access.
        len: usize,
    },
}

struct RingShared {
    buf: Box<[UnsafeCell<u8>]>,
    mask: u64,
    /// Published by the writer: bytes in `[tail, head)` are readable.
    head: AtomicU64,
    /// Where the reader's tail must be for the writer's side to hear of a read (see
    /// [`RingObserver::set_read_bell`]); 0 (the start): every read.
    read_bell: AtomicU64,
    /// Released by the reader: bytes before `tail` may be overwritten.
    tail: AtomicU64,
    reader_closed: AtomicBool,
    writer_closed: AtomicBool,
    /// Ranges the writer lent out as [`WriteLease`]s (only the writer changes them).
    write_leases: Leases,
    /// Ranges the reader lent out as [`ReadLease`]s (only the reader changes them).
    read_leases: Leases,
    /// [`ReadLease`]s that exist (settled or not): once the reader is gone, the ranges its
    /// list still holds matter only while one does.
    read_leases_live: AtomicUsize,
}

// SAFETY: the writer only writes bytes in `[head, tail + cap)` and the reader only reads bytes
// in `[tail, head)`; those regions never overlap, and positions move forward through atomics
// with release/acquire ordering, which also publishes the bytes. A [`WriteLease`] writes a
// range of the writer's region that the writer has set aside: no other lease overlaps it, the
// writer neither writes it nor publishes past its start while it is out. A [`ReadLease`]
// reads a range of the reader's region that the reader does not release while it is out.
// Each end's lease list is touched by that end alone (see `Leases`), and the reader's is read
// by the writer's side only once the reader is gone.
unsafe impl Sync for RingShared {}
// SAFETY: as above; the cells are plain bytes, the lease lists plain vectors.
unsafe impl Send for RingShared {}

impl RingShared {
    fn cap(&self) -> u64 {
        self.mask + 1
    }

    /// The tail once the reader is gone (call only after seeing `reader_closed`): `head`, or
    /// the start of a range the reader lent that is still out (it may still be read).
    #[cold]
    fn closed_tail(&self, head: u64) -> u64 {
        // No read lease left (each one counts itself out when dropped, after its reads):
        // everything counts as read.
        if self.read_leases_live.load(Ordering::Acquire) == 0 {
            return head;
        }
        // The reader's lease list is only read here after the reader is gone: the acquire
        // load of `reader_closed` orders this after its last change (its drop stores it).
        head.min(self.read_leases.first_start())
    }

    /// Copy `data` into the ring at `pos` (caller proves ownership of that region).
    fn copy_in(&self, pos: u64, data: &[u8]) {
        let cap = self.cap() as usize;
        let start = (pos & self.mask) as usize;
        let first = data.len().min(cap - start);
        let base = self.buf.as_ptr() as *mut u8;
        // SAFETY: `start + first <= cap` and `data.len() - first <= cap - first`, so both
        // copies stay in the buffer; the caller owns this region (see RingShared's SAFETY).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(start), first);
            if first < data.len() {
                std::ptr::copy_nonoverlapping(data.as_ptr().add(first), base, data.len() - first);
            }
        }
    }

    fn copy_out(&self, pos: u64, out: &mut [u8]) {
        let cap = self.cap() as usize;
        let start = (pos & self.mask) as usize;
        let first = out.len().min(cap - start);
        let base = self.buf.as_ptr() as *const u8;
        // SAFETY: bounds as in `copy_in`; the region is readable by the caller.
        unsafe {
            std::ptr::copy_nonoverlapping(base.add(start), out.as_mut_ptr(), first);
            if first < out.len() {
                std::ptr::copy_nonoverlapping(base, out.as_mut_ptr().add(first), out.len() - first);
            }
        }
    }
}

/// Make a byte ring of `capacity` bytes (rounded up to a power of two, at least 64).
pub fn byte_ring(capacity: usize) -> (RingWriter, RingReader) {
    let cap = capacity.max(64).next_power_of_two();
    // Zeroed memory from the allocator (calloc: pages the ring never reaches are never
    // touched), not a byte-by-byte fill.
    let zeroed: Box<[u8]> = vec![0u8; cap].into_boxed_slice();
    // SAFETY: `UnsafeCell<u8>` has the layout of `u8` (repr(transparent)), so the boxed
    // slice's allocation and length carry over unchanged.
    let buf: Box<[UnsafeCell<u8>]> =
        unsafe { Box::from_raw(Box::into_raw(zeroed) as *mut [UnsafeCell<u8>]) };
    let shared = Arc::new(RingShared {
        buf,
        mask: cap as u64 - 1,
        head: AtomicU64::new(0),
        read_bell: AtomicU64::new(0),
        tail: AtomicU64::new(0),
        reader_closed: AtomicBool::new(false),
        writer_closed: AtomicBool::new(false),
        write_leases: Leases::default(),
        read_leases: Leases::default(),
        read_leases_live: AtomicUsize::new(0),
    });
    (
        RingWriter {
            shared: shared.clone(),
            head: 0,
            seen_tail: 0,
        },
        RingReader { shared, tail: 0 },
    )
}

/// A read-only view of a ring's positions, for a stage that must know how far the
/// application has written or read without touching the bytes.
#[derive(Clone)]
pub struct RingObserver {
    shared: Arc<RingShared>,
}

impl RingObserver {
    /// The writer's published end.
    pub fn head(&self) -> u64 {
        self.shared.head.load(Ordering::Acquire)
    }

    /// The reader's released position (the published end once the reader is gone).
    pub fn tail(&self) -> u64 {
        if self.shared.reader_closed.load(Ordering::Acquire) {
            self.shared.closed_tail(self.head())
        } else {
            self.shared.tail.load(Ordering::Acquire)
        }
    }

    /// The reader's released position as it last stored it: [`tail`](Self::tail) without
    /// the check for a reader that is gone (one load, for a hot path that hears of the
    /// reader's end otherwise).
    #[inline]
    pub fn reader_tail(&self) -> u64 {
        self.shared.tail.load(Ordering::Acquire)
    }

    /// Ask the reader to say so ([`RingReader::read_bell_due`]) once a read takes its tail
    /// to `pos` or past it; returns the tail read after the request is visible. A reader
    /// whose tail was already at `pos` before may have missed the request: when the
    /// returned tail is at `pos` or past it, the caller acts on that read itself.
    ///
    /// The request and the reader's check pair up as two fenced flags: either the reader
    /// sees the request, or this side sees the reader's tail (or both). A later request
    /// replaces an earlier one, so a caller asks only for positions that stay due (the
    /// protocol stage asks for the tail at which a window update becomes due, which only
    /// grows as its advertised edge does).
    pub fn set_read_bell(&self, pos: u64) -> u64 {
        self.shared.read_bell.store(pos, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::SeqCst);
        self.reader_tail()
    }
}

impl RingObserver {
    /// [`set_read_bell`](Self::set_read_bell) for a position past the published end, for a
    /// caller that publishes (or has the writer publish) the bytes up to it only after this
    /// call: the reader loads that end before it can read up to `pos`, and with it sees the
    /// request. No fence, and no tail to return.
    #[inline]
    pub fn set_read_bell_ahead(&self, pos: u64) {
        self.shared.read_bell.store(pos, Ordering::Release);
    }
}

impl PartialEq for RingObserver {
    /// Two views of one ring.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Eq for RingObserver {}

impl std::fmt::Debug for RingObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingObserver")
            .field("head", &self.head())
            .field("tail", &self.tail())
            .finish()
    }
}

/// The producing end of a byte ring. It may write anywhere in `[head, tail + capacity)`, and
/// makes bytes readable by moving `head` forward with [`publish`](Self::publish).
pub struct RingWriter {
    shared: Arc<RingShared>,
    head: u64,
    /// The reader's tail as last read: never past the real one (a reader's tail only moves
    /// forward, and once the reader is gone the tail counted is at least its last, since it
    /// never released past a range it lent), so the room it leaves is room the writer has.
    /// Read again only when it leaves too little, so that a writer with room does not touch
    /// the line the reader writes.
    seen_tail: u64,
}

impl RingWriter {
    /// Ring size in bytes.
    pub fn capacity(&self) -> usize {
        self.shared.cap() as usize
    }

    /// A read-only view of this ring's positions.
    pub fn observer(&self) -> RingObserver {
        RingObserver {
            shared: self.shared.clone(),
        }
    }

    /// The published end: bytes before it are readable.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// The reader's released position. Once the reader is gone everything counts as read,
    /// but for ranges it lent that are still out.
    pub fn tail(&self) -> u64 {
        if self.shared.reader_closed.load(Ordering::Acquire) {
            self.shared.closed_tail(self.head)
        } else {
            self.shared.tail.load(Ordering::Acquire)
        }
    }

    /// Free space behind `head`.
    pub fn free(&self) -> usize {
        (self.shared.cap() - (self.head - self.tail())) as usize
    }

    /// Whether the reader has been dropped.
    pub fn reader_closed(&self) -> bool {
        self.shared.reader_closed.load(Ordering::Acquire)
    }

    /// Write `data` at `pos`, which must lie in `[head, tail + capacity)`.
    #[inline]
    pub fn write_at(&mut self, pos: u64, data: &[u8]) -> Result<(), RingError> {
        let end = pos.checked_add(data.len() as u64);
        match end {
            Some(end)
                if pos >= self.head
                    && self.tail_allows(end)
                    && !self.shared.write_leases.overlap(pos, end) =>
            {
                self.shared.copy_in(pos, data);
                Ok(())
            }
            _ => Err(RingError::OutOfBounds {
                pos,
                len: data.len(),
            }),
        }
    }

    /// Make every byte before `new_head` readable. `new_head` must lie in
    /// `[head, tail + capacity]`, and not past the start of a [`WriteLease`] still out.
    #[inline]
    pub fn publish(&mut self, new_head: u64) -> Result<(), RingError> {
        if new_head < self.head
            || !self.tail_allows(new_head)
            || new_head > self.shared.write_leases.first_start()
        {
            return Err(RingError::OutOfBounds {
                pos: new_head,
                len: 0,
            });
        }
        self.head = new_head;
        self.shared.head.store(new_head, Ordering::Release);
        Ok(())
    }

    /// The free space after `head` up to the end of the buffer or the reader's tail,
    /// whichever comes first, to fill in place; [`commit`](Self::commit) then publishes
    /// what was written. Empty when the ring is full.
    pub fn writable_slice(&mut self) -> &mut [u8] {
        let cap = self.shared.cap() as usize;
        let start = (self.head & self.shared.mask) as usize;
        // Up to the end of the buffer at most: the tail is read again only when the one last
        // seen leaves less than that.
        let len = self.room_for(cap - start).min(cap - start);
        let base = self.shared.buf.as_ptr() as *mut u8;
        // SAFETY: `start + len <= cap`; bytes in `[head, tail + cap)` belong to the writer
        // alone (see RingShared's SAFETY), and `&mut self` keeps `head` (hence the region)
        // fixed while the slice lives.
        unsafe { std::slice::from_raw_parts_mut(base.add(start), len) }
    }

    /// Publish the first `n` bytes of what [`writable_slice`](Self::writable_slice) lent.
    pub fn commit(&mut self, n: usize) -> Result<(), RingError> {
        self.publish(self.head + n as u64)
    }

    /// Append as much of `data` as fits and publish it; returns the bytes written.
    #[inline]
    pub fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.room_for(data.len()));
        if n == 0 {
            return 0;
        }
        let head = self.head;
        // `room_for` bounds `[head, head + n)` by the reader's tail and the first lease out: the
        // writer's own region, which no lease holds (the checks of `write_at` and `publish`,
        // made once).
        self.shared.copy_in(head, &data[..n]);
        self.head = head + n as u64;
        self.shared.head.store(self.head, Ordering::Release);
        n
    }
}

impl RingWriter {
    /// Whether any space behind `head` is free (`free() > 0`), reading the reader's tail
    /// only when the one last seen leaves none.
    #[inline]
    pub fn has_free(&mut self) -> bool {
        let cap = self.shared.cap();
        self.head - self.seen_tail < cap || self.head - self.read_tail() < cap
    }

    /// Whether `end <= tail + capacity`: checked against the tail last seen, and only when
    /// that fails against the tail read now.
    #[inline]
    fn tail_allows(&mut self, end: u64) -> bool {
        let cap = self.shared.cap();
        end <= self.seen_tail + cap || end <= self.read_tail() + cap
    }

    /// The reader's tail, read now and kept as the one last seen.
    #[cold]
    #[inline(never)]
    fn read_tail(&mut self) -> u64 {
        self.seen_tail = self.tail();
        self.seen_tail
    }

    /// Free space after `head` that no lease holds, up to the first lease still out; the
    /// reader's tail is read again only when the one last seen leaves less than `want`.
    #[inline]
    fn room_for(&mut self, want: usize) -> usize {
        let cap = self.shared.cap();
        // `head` never runs past `seen_tail + cap`: `publish` checks against it, and `push`
        // moves it by what this leaves.
        let mut free = cap - (self.head - self.seen_tail);
        if free < want as u64 {
            free = cap - (self.head - self.read_tail());
        }
        free.min(
            self.shared
                .write_leases
                .first_start()
                .saturating_sub(self.head),
        ) as usize
    }

    /// Set aside `[pos, pos + len)`, which must lie in `[head, tail + capacity)` and overlap
    /// no lease still out, for another thread to write through the returned lease. Until it
    /// comes back through [`settle`](Self::settle), this writer does not write there and
    /// does not publish past `pos`.
    pub fn lease(&mut self, pos: u64, len: usize) -> Result<WriteLease, RingError> {
        match pos.checked_add(len as u64) {
            Some(end)
                if pos >= self.head
                    && self.tail_allows(end)
                    && !self.shared.write_leases.overlap(pos, end) =>
            {
                self.shared.write_leases.add(pos, end);
                Ok(WriteLease {
                    shared: self.shared.clone(),
                    pos,
                    len,
                })
            }
            _ => Err(RingError::OutOfBounds { pos, len }),
        }
    }

    /// Take a lease back: its range may be published again. A lease of another ring is
    /// refused (and stays out there).
    pub fn settle(&mut self, lease: WriteLease) -> Result<(), RingError> {
        let same = Arc::ptr_eq(&self.shared, &lease.shared);
        self.shared.write_leases.settle(same, lease.pos, lease.len)
    }

    /// Leases still out.
    pub fn leases_out(&self) -> usize {
        self.shared.write_leases.out()
    }

    /// Whether a lease still out holds part of `[pos, pos + len)`.
    pub fn is_leased(&self, pos: u64, len: usize) -> bool {
        self.shared
            .write_leases
            .overlap(pos, pos.saturating_add(len as u64))
    }
}

impl Drop for RingWriter {
    fn drop(&mut self) {
        self.shared.writer_closed.store(true, Ordering::Release);
    }
}

/// The consuming end of a byte ring. It may read anywhere in `[tail, head)` (several times,
/// as a retransmitting sender does) and frees space with [`release`](Self::release).
pub struct RingReader {
    shared: Arc<RingShared>,
    tail: u64,
}

impl RingReader {
    /// Ring size in bytes.
    pub fn capacity(&self) -> usize {
        self.shared.cap() as usize
    }

    /// The writer's published end.
    pub fn head(&self) -> u64 {
        self.shared.head.load(Ordering::Acquire)
    }

    /// A read-only view of this ring's positions.
    pub fn observer(&self) -> RingObserver {
        RingObserver {
            shared: self.shared.clone(),
        }
    }

    /// The released position: bytes before it are gone.
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Readable bytes.
    pub fn available(&self) -> usize {
        (self.head() - self.tail) as usize
    }

    /// Whether the writer's side asked to hear of reads that reach this tail
    /// ([`RingObserver::set_read_bell`]). Call after a read released bytes: `true` says
    /// tell it (a ring that nobody asked about says `true` after every read).
    #[inline]
    pub fn read_bell_due(&self) -> bool {
        // Pairs with the fence of `set_read_bell`: the tail stored above is visible to that
        // side, or its request is visible here.
        std::sync::atomic::fence(Ordering::SeqCst);
        self.tail >= self.shared.read_bell.load(Ordering::Relaxed)
    }

    /// Whether the writer has been dropped.
    pub fn writer_closed(&self) -> bool {
        self.shared.writer_closed.load(Ordering::Acquire)
    }

    /// Copy `out.len()` bytes starting at `pos`, which must lie in `[tail, head)`.
    pub fn read_at(&self, pos: u64, out: &mut [u8]) -> Result<(), RingError> {
        let end = pos.checked_add(out.len() as u64);
        match end {
            Some(end) if pos >= self.tail && end <= self.head() => {
                self.shared.copy_out(pos, out);
                Ok(())
            }
            _ => Err(RingError::OutOfBounds {
                pos,
                len: out.len(),
            }),
        }
    }

    /// Free every byte before `new_tail`, which must lie in `[tail, head]`, and not past the
    /// start of a [`ReadLease`] still out.
    #[inline]
    pub fn release(&mut self, new_tail: u64) -> Result<(), RingError> {
        if new_tail < self.tail
            || new_tail > self.head()
            || new_tail > self.shared.read_leases.first_start()
        {
            return Err(RingError::OutOfBounds {
                pos: new_tail,
                len: 0,
            });
        }
        self.tail = new_tail;
        self.shared.tail.store(new_tail, Ordering::Release);
        Ok(())
    }

    /// The readable bytes from `tail` up to `head` or the end of the buffer, whichever comes
    /// first, to read in place; [`consume`](Self::consume) then releases what was used.
    pub fn readable_slice(&self) -> &[u8] {
        let cap = self.shared.cap() as usize;
        let start = (self.tail & self.shared.mask) as usize;
        let len = self.available().min(cap - start);
        let base = self.shared.buf.as_ptr() as *const u8;
        // SAFETY: `start + len <= cap`; bytes in `[tail, head)` are published (acquire load
        // of `head`) and the writer does not touch them until `tail` moves past them, which
        // needs `&mut self`.
        unsafe { std::slice::from_raw_parts(base.add(start), len) }
    }

    /// Release the first `n` bytes of what [`readable_slice`](Self::readable_slice) showed.
    pub fn consume(&mut self, n: usize) -> Result<(), RingError> {
        self.release(self.tail + n as u64)
    }

    /// Read and release up to `out.len()` bytes; returns how many.
    pub fn pop(&mut self, out: &mut [u8]) -> usize {
        let held = self
            .shared
            .read_leases
            .first_start()
            .saturating_sub(self.tail);
        let n = out.len().min(self.available()).min(held as usize);
        if n == 0 {
            return 0;
        }
        let tail = self.tail;
        // `[tail, tail + n)` is published and before every lease out: the checks of
        // `read_at` and `release`, made once.
        self.shared.copy_out(tail, &mut out[..n]);
        self.tail = tail + n as u64;
        self.shared.tail.store(self.tail, Ordering::Release);
        n
    }
}

impl RingReader {
    /// Lend `[pos, pos + len)`, which must lie in `[tail, head)`, for another thread to read
    /// through the returned lease. Until it comes back through [`settle`](Self::settle),
    /// this reader does not release past `pos`.
    pub fn lease(&mut self, pos: u64, len: usize) -> Result<ReadLease, RingError> {
        match pos.checked_add(len as u64) {
            Some(end) if pos >= self.tail && end <= self.head() => {
                self.shared.read_leases.add(pos, end);
                self.shared.read_leases_live.fetch_add(1, Ordering::Relaxed);
                Ok(ReadLease {
                    shared: self.shared.clone(),
                    pos,
                    len,
                })
            }
            _ => Err(RingError::OutOfBounds { pos, len }),
        }
    }

    /// Take a lease back. A lease of another ring is refused (and stays out there).
    pub fn settle(&mut self, lease: ReadLease) -> Result<(), RingError> {
        let same = Arc::ptr_eq(&self.shared, &lease.shared);
        self.shared.read_leases.settle(same, lease.pos, lease.len)
    }

    /// Leases still out.
    pub fn leases_out(&self) -> usize {
        self.shared.read_leases.out()
    }
}

impl Drop for RingReader {
    fn drop(&mut self) {
        self.shared.reader_closed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The read bell: every read says so until the writer's side asks for a tail; then
    /// only reads that reach it do, and a request for a tail already passed says so to the
    /// side that asked.
    #[test]
    fn the_read_bell_rings_only_at_the_tail_asked_for() {
        let (mut w, mut r) = byte_ring(256);
        let view = w.observer();
        assert_eq!(w.push(&[1; 200]), 200);
        let mut out = [0u8; 10];
        assert_eq!(r.pop(&mut out), 10);
        assert!(r.read_bell_due(), "nobody asked: every read");
        assert_eq!(view.set_read_bell(50), 10, "the tail, not yet there");
        assert_eq!(r.pop(&mut out), 10);
        assert!(!r.read_bell_due(), "tail 20 of 50");
        let mut more = [0u8; 30];
        assert_eq!(r.pop(&mut more), 30);
        assert!(r.read_bell_due(), "tail 50 of 50");
        assert_eq!(
            view.set_read_bell(40),
            50,
            "already past: the asker learns it"
        );
        view.set_read_bell_ahead(300);
        assert_eq!(r.pop(&mut more), 30);
        assert!(!r.read_bell_due(), "tail 80 of 300");
    }

    #[test]
    fn ring_wraps_and_checks_bounds() {
        let (mut w, mut r) = byte_ring(64);
        let data: Vec<u8> = (0..50u8).collect();
        assert_eq!(w.push(&data), 50);
        let mut out = [0u8; 40];
        assert_eq!(r.pop(&mut out), 40);
        assert_eq!(&out[..], &data[..40]);
        // 10 left, 54 free; this write wraps around the end.
        let more: Vec<u8> = (100..150u8).collect();
        assert_eq!(w.push(&more), 50);
        let mut all = vec![0u8; 60];
        assert_eq!(r.pop(&mut all), 60);
        assert_eq!(&all[..10], &data[40..]);
        assert_eq!(&all[10..], &more[..]);
        // Out-of-order placement ahead of head, then publish.
        w.write_at(w.head() + 4, b"xy").unwrap();
        w.write_at(w.head(), b"abcd").unwrap();
        let h = w.head();
        w.publish(h + 6).unwrap();
        let mut six = [0u8; 6];
        r.read_at(r.tail(), &mut six).unwrap();
        assert_eq!(&six, b"abcdxy");
        assert!(w.write_at(w.head() + 64, b"z").is_err());
        assert!(r.read_at(r.tail() + 5, &mut [0u8; 2]).is_err());
        assert!(w.publish(0).is_err());
        drop(r);
        assert!(w.reader_closed());
        assert_eq!(w.free(), 64);
    }

    /// A leased range is the lessee's alone until it is settled: the writer neither writes
    /// it, nor publishes past its start, nor lends it twice; the reader does not release
    /// past a range it lent. Settled, both go on as before.
    #[test]
    fn leases_hold_their_range_until_settled() {
        let (mut w, mut r) = byte_ring(64);
        let mut a = w.lease(4, 4).unwrap();
        assert!(w.lease(6, 4).is_err(), "overlapping lease");
        assert!(w.write_at(7, b"zz").is_err(), "write into a lease");
        w.write_at(0, b"abcd").unwrap();
        assert!(w.publish(5).is_err(), "publish past a lease's start");
        w.publish(4).unwrap();
        assert_eq!(w.push(b"more"), 0, "push runs into the lease");
        assert!(w.writable_slice().is_empty());
        assert!(a.write(b"12345").is_err(), "longer than the lease");
        a.write(b"efgh").unwrap();
        let (mut w2, _r2) = byte_ring(64);
        let other = w2.lease(4, 4).unwrap();
        assert!(w.settle(other).is_err(), "a lease of another ring");
        assert_eq!(w.leases_out(), 1);
        w.settle(a).unwrap();
        assert_eq!(w.leases_out(), 0);
        w.publish(8).unwrap();
        let mut out = [0u8; 8];
        r.read_at(0, &mut out).unwrap();
        assert_eq!(&out, b"abcdefgh");

        let l = r.lease(2, 4).unwrap();
        assert!(r.lease(6, 4).is_err(), "past head");
        assert!(r.release(3).is_err(), "release past a lent range");
        r.release(2).unwrap();
        let mut two = [0u8; 8];
        assert_eq!(r.pop(&mut two), 0, "pop would release the lent range");
        let mut got = [0u8; 4];
        l.read(&mut got).unwrap();
        assert_eq!(&got, b"cdef");
        r.settle(l).unwrap();
        assert_eq!(r.pop(&mut two), 6);
        assert_eq!(&two[..6], b"cdefgh");
    }

    /// A range the reader lent stays out of the writer's reach after the reader is gone:
    /// the lease may still be reading it.
    #[test]
    fn a_range_lent_by_a_dropped_reader_stays_unwritable() {
        let (mut w, mut r) = byte_ring(64);
        assert_eq!(w.push(&[7; 64]), 64);
        let l = r.lease(16, 8).unwrap();
        drop(r);
        assert_eq!(w.tail(), 16);
        assert_eq!(w.free(), 16);
        assert_eq!(w.push(&[1; 64]), 16);
        let mut got = [0u8; 8];
        l.read(&mut got).unwrap();
        assert_eq!(got, [7; 8]);
        assert_eq!(w.observer().tail(), 16);
        // The lease gone (nobody can settle it now), the ring is the writer's again.
        drop(l);
        assert_eq!(w.tail(), w.head());
        assert_eq!(w.free(), 64);
    }
}
