//! A kernel socket that becomes an engine socket (at `bind` or `connect`) takes over its
//! epoll registrations.
//!
//! A program may register a socket with epoll before it connects it (before the library
//! knows it as an engine socket): the registration went to the kernel's set, which then
//! reported the kernel's placeholder socket (unconnected: `EPOLLOUT | EPOLLHUP`) and never
//! the connection. Where a socket becomes an engine socket, each epoll set that the kernel
//! says holds it (`/proc/self/fdinfo` of the set: `tfd`, `events`, `data`, `ino`) gives it
//! up, and the library's part of that set takes it with the same events and data.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use libc::c_int;

use crate::real;

/// Epoll descriptors below 65536 that the kernel added a descriptor to (hints: the kernel's
/// own record is what counts).
static ADDED_TO: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];
/// Those at or above 65536.
static ADDED_TO_HIGH: Mutex<Vec<c_int>> = Mutex::new(Vec::new());
/// Descriptors below 65536 that the kernel was asked to add to an epoll set since they last
/// became engine sockets: only these are looked up (a program that registers its sockets
/// after connecting them costs nothing here).
static ADDED: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];
/// Whether any descriptor at or above 65536 was.
static ADDED_HIGH: AtomicBool = AtomicBool::new(false);

/// Mark `fd` in `bits`; `false` where it is 65536 or above (negative ones are no
/// descriptor: `true`, nothing marked).
fn mark(bits: &[AtomicU64; 1024], fd: c_int) -> bool {
    match usize::try_from(fd) {
        Ok(f) if f < 65536 => {
            bits[f / 64].fetch_or(1 << (f % 64), Ordering::Relaxed);
            true
        }
        Ok(_) => false,
        Err(_) => true,
    }
}

/// A successful `epoll_ctl(ep, EPOLL_CTL_ADD, fd, ..)` of a descriptor that is not an
/// engine socket.
pub fn note_kernel_add(ep: c_int, fd: c_int) {
    if !mark(&ADDED_TO, ep) {
        let mut high = ADDED_TO_HIGH.lock().unwrap_or_else(|p| p.into_inner());
        if !high.contains(&ep) {
            high.push(ep);
        }
    }
    if !mark(&ADDED, fd) {
        ADDED_HIGH.store(true, Ordering::Relaxed);
    }
}

/// Whether `fd` may be in a kernel epoll set; forgets it (a hint taken once).
fn take_added(fd: c_int) -> bool {
    match usize::try_from(fd).ok().filter(|f| *f < 65536) {
        Some(f) => {
            let bit = 1 << (f % 64);
            ADDED[f / 64].fetch_and(!bit, Ordering::Relaxed) & bit != 0
        }
        None => fd >= 0 && ADDED_HIGH.load(Ordering::Relaxed),
    }
}

/// The epoll descriptors to look at.
fn candidates() -> Vec<c_int> {
    let mut out = Vec::new();
    for (i, w) in ADDED_TO.iter().enumerate() {
        let mut bits = w.load(Ordering::Relaxed);
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            out.push((i * 64 + b) as c_int);
        }
    }
    out.extend(
        ADDED_TO_HIGH
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter(),
    );
    out
}

/// The events and data of `fd`'s registration in the set `ep`, from the kernel's record
/// (`info`, the set's `/proc/self/fdinfo` text), where the registered file is inode `ino`.
pub fn registration(info: &str, fd: c_int, ino: u64) -> Option<(u32, u64)> {
    info.lines().find_map(|line| {
        let mut t = line.split_whitespace();
        if t.next()? != "tfd:" || t.next()?.parse::<c_int>().ok()? != fd {
            return None;
        }
        let (mut events, mut data, mut inode) = (None, None, None);
        while let Some(k) = t.next() {
            match k {
                "events:" => events = u32::from_str_radix(t.next()?, 16).ok(),
                "data:" => data = u64::from_str_radix(t.next()?, 16).ok(),
                _ => {
                    if let Some(v) = k.strip_prefix("ino:") {
                        inode = u64::from_str_radix(v, 16).ok();
                    }
                }
            }
        }
        (inode? == ino).then_some((events?, data?))
    })
}

/// `fd` just became the engine socket `s`: the epoll sets that hold it in the kernel give
/// it to the library's part of the set, with the same events and data.
pub fn take_over(fd: c_int, s: &std::sync::Arc<crate::sock::Sock>) {
    // A vfork child shares the parent's descriptors and sets: it changes none of them.
    if !take_added(fd) || crate::engine::in_vfork_child() {
        return;
    }
    let sets = candidates();
    if sets.is_empty() {
        return;
    }
    // SAFETY: a zeroed stat buffer, filled by fstat on the caller's descriptor.
    let ino = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return;
        }
        st.st_ino
    };
    for ep in sets {
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{ep}")) else {
            continue;
        };
        let Some((events, data)) = registration(&info, fd, ino) else {
            continue;
        };
        // Into the library's part first: where that fails (no descriptor left for the
        // set's eventfd), the kernel's registration stays rather than none.
        if crate::events::adopt(ep, fd, s.clone(), events, data) {
            // SAFETY: the caller's descriptors; the kernel's set lets the placeholder go.
            unsafe { real::epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's record of a set's registrations (`fs/eventpoll.c`, `ep_show_fdinfo`):
    /// the one for the descriptor and inode asked about, none for another inode (the
    /// number reused by another file) or another descriptor.
    #[test]
    fn registrations_are_read_from_the_kernels_record() {
        let info = "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\n\
                    tfd:        5 events:       19 data:                5  pos:0 ino:7d sdev:8\n\
                    tfd:        7 events: 80000004 data:     1234abcd5678  pos:0 ino:2f3 sdev:8\n";
        assert_eq!(registration(info, 5, 0x7d), Some((0x19, 5)));
        assert_eq!(
            registration(info, 7, 0x2f3),
            Some((0x8000_0004, 0x1234_abcd_5678))
        );
        assert_eq!(registration(info, 7, 0x2f4), None);
        assert_eq!(registration(info, 6, 0x7d), None);
        assert_eq!(registration("tfd: x events: 1", 5, 1), None);
    }
}
