//! Leases: ranges of a byte ring lent by one of its ends to another thread, and the list
//! each end keeps of them.

#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{RingError, RingShared};

/// Ranges `[start, end)` lent out by one end of a ring. They live with the ring's shared
/// state (the ends stay two words each), but only their end touches them: it reads them
/// through `&self` and changes them through `&mut self`, so the borrow rules of that end keep
/// every access exclusive or shared-read-only.
#[derive(Default)]
pub(super) struct Leases(UnsafeCell<LeaseList>);

#[derive(Default)]
struct LeaseList {
    /// In the order lent; usually also in the order of their starts (and given back in it).
    ranges: std::collections::VecDeque<(u64, u64)>,
    /// The lowest start among `ranges` (`u64::MAX` when none).
    first: u64,
    /// At least the highest end among `ranges`: a range starting there overlaps none.
    max_end: u64,
    /// Whether `ranges` are in the order of their starts.
    sorted: bool,
}

impl Leases {
    fn get(&self) -> &LeaseList {
        // SAFETY: only the end that owns this list calls `get` (from `&self` or `&mut self`
        // methods) and `get_mut` (from `&mut self` methods only), so no `&mut` exists while a
        // shared reference does.
        unsafe { &*self.0.get() }
    }

    /// Call only from a `&mut self` method of the end that owns the list.
    #[allow(clippy::mut_from_ref)]
    fn get_mut(&self) -> &mut LeaseList {
        // SAFETY: as in `get`: the owning end holds `&mut` to itself, so nothing else reads
        // or writes the list meanwhile.
        unsafe { &mut *self.0.get() }
    }

    pub(super) fn out(&self) -> usize {
        self.get().ranges.len()
    }

    /// Whether `[start, end)` overlaps a range lent out.
    #[inline(always)]
    pub(super) fn overlap(&self, start: u64, end: u64) -> bool {
        let l = self.get();
        !l.ranges.is_empty()
            && start < l.max_end
            && end > l.first
            && l.ranges.iter().any(|&(s, e)| start < e && s < end)
    }

    /// The lowest start of a range lent out (`u64::MAX` when none).
    #[inline(always)]
    pub(super) fn first_start(&self) -> u64 {
        let l = self.get();
        if l.ranges.is_empty() {
            u64::MAX
        } else {
            l.first
        }
    }

    /// Record `[start, end)` as lent out. Call only from a `&mut self` method of the end
    /// that owns the list (see [`get_mut`](Self::get_mut)).
    pub(super) fn add(&self, start: u64, end: u64) {
        let l = self.get_mut();
        if l.ranges.is_empty() {
            l.first = start;
            l.max_end = end;
            l.sorted = true;
        } else {
            l.sorted &= l.ranges.back().is_some_and(|b| b.0 <= start);
            l.first = l.first.min(start);
            l.max_end = l.max_end.max(end);
        }
        l.ranges.push_back((start, end));
    }

    /// Take back the lease of `[pos, pos + len)`; `same`: it is a lease of this ring. Call
    /// only from a `&mut self` method of the end that owns the list (see
    /// [`get_mut`](Self::get_mut)).
    pub(super) fn settle(&self, same: bool, pos: u64, len: usize) -> Result<(), RingError> {
        let l = self.get_mut();
        match l.ranges.iter().position(|&r| r == (pos, pos + len as u64)) {
            Some(i) if same => {
                l.ranges.remove(i);
                if l.ranges.is_empty() {
                    l.first = u64::MAX;
                    l.max_end = 0;
                } else if pos == l.first {
                    l.first = match (l.sorted, l.ranges.front()) {
                        (true, Some(f)) => f.0,
                        _ => l.ranges.iter().map(|r| r.0).min().unwrap_or(u64::MAX),
                    };
                }
                Ok(())
            }
            _ => Err(RingError::OutOfBounds { pos, len }),
        }
    }
}

/// A range of a ring's writable region set aside by
/// [`RingWriter::lease`](super::RingWriter::lease), for another thread to fill; it goes back
/// through [`RingWriter::settle`](super::RingWriter::settle).
pub struct WriteLease {
    pub(super) shared: Arc<RingShared>,
    pub(super) pos: u64,
    pub(super) len: usize,
}

impl WriteLease {
    /// Where the range starts.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// The range's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Write `data` at the start of the range; it must fit.
    pub fn write(&mut self, data: &[u8]) -> Result<(), RingError> {
        if data.len() > self.len {
            return Err(RingError::OutOfBounds {
                pos: self.pos,
                len: data.len(),
            });
        }
        self.shared.copy_in(self.pos, data);
        Ok(())
    }
}

/// A range of a ring's readable region lent by
/// [`RingReader::lease`](super::RingReader::lease), for another thread to read; it goes back
/// through [`RingReader::settle`](super::RingReader::settle).
pub struct ReadLease {
    pub(super) shared: Arc<RingShared>,
    pub(super) pos: u64,
    pub(super) len: usize,
}

impl Drop for ReadLease {
    fn drop(&mut self) {
        // Release: its reads come before a closed ring's writer sees it gone.
        self.shared.read_leases_live.fetch_sub(1, Ordering::Release);
    }
}

impl ReadLease {
    /// Where the range starts.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// The range's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copy the start of the range into `out`, which must not be longer than the range.
    pub fn read(&self, out: &mut [u8]) -> Result<(), RingError> {
        if out.len() > self.len {
            return Err(RingError::OutOfBounds {
                pos: self.pos,
                len: out.len(),
            });
        }
        self.shared.copy_out(self.pos, out);
        Ok(())
    }
}
