//! Socket options and addresses of engine sockets.
//!
//! Options go to the placeholder kernel socket as well, which keeps them: `getsockopt`
//! then reads back what was set (buffer sizes as Linux reports them, `TCP_NODELAY`, ...).
//! The engine acts on `SO_KEEPALIVE` with the timing of `TCP_KEEPIDLE`, `TCP_KEEPINTVL` and
//! `TCP_KEEPCNT` (Linux's defaults where unset; an accepted socket inherits its listener's, as
//! on Linux), blocking calls on `SO_RCVTIMEO`/`SO_SNDTIMEO`, and a close on `SO_LINGER` on
//! with a zero timeout (a RST; a nonzero timeout does not make `close` wait); it sends every
//! segment at once whatever `TCP_NODELAY` says.

use std::sync::atomic::Ordering;

use std::time::Duration;

use flextoe::host::{ConnStatus, Keepalive};
use libc::{c_int, c_void, sockaddr, socklen_t};

use crate::calls::{conn_errno, put_inet};
use crate::conn::Conn;
use crate::real::{self, fail};
use crate::sock::{self, Sock, State};

/// `setsockopt`.
///
/// # Safety
/// As `setsockopt(2)`.
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    // SAFETY: passed through (for an engine socket: its placeholder keeps the option).
    let r = unsafe { real::setsockopt(fd, level, name, val, len) };
    if let Some(s) = sock::get(fd) {
        if level == libc::SOL_SOCKET
            && (name == libc::SO_RCVTIMEO || name == libc::SO_SNDTIMEO)
            && r == 0
        {
            // The kernel accepted a timeval here; it reads back from the placeholder.
            // SAFETY: as above.
            let tv = unsafe { std::ptr::read_unaligned(val.cast::<libc::timeval>()) };
            let slot = if name == libc::SO_RCVTIMEO {
                &s.rcv_timeout
            } else {
                &s.snd_timeout
            };
            slot.store(timeout_us(&tv), Ordering::Relaxed);
        }
        let keepalive = (level == libc::SOL_SOCKET && name == libc::SO_KEEPALIVE)
            || (level == libc::IPPROTO_TCP
                && matches!(
                    name,
                    libc::TCP_KEEPIDLE | libc::TCP_KEEPINTVL | libc::TCP_KEEPCNT
                ));
        if keepalive && r == 0 {
            s.keepalive_opts.store(true, Ordering::Relaxed);
            if let State::Stream(st) = &*s.lock() {
                apply_keepalive(fd, st);
            }
        }
    }
    r
}

/// The keep-alive options the placeholder kernel socket `fd` holds (the kernel checked their
/// ranges when they were set, and reports its defaults for those never set): `None` when
/// `SO_KEEPALIVE` is off.
fn keepalive_of(fd: c_int) -> Option<Keepalive> {
    let get = |level: c_int, name: c_int| get_int(fd, level, name);
    if get(libc::SOL_SOCKET, libc::SO_KEEPALIVE)? == 0 {
        return None;
    }
    let d = Keepalive::default();
    let secs = |name, default: Duration| {
        get(libc::IPPROTO_TCP, name)
            .filter(|&v| v > 0)
            .map_or(default, |v| Duration::from_secs(v as u64))
    };
    Some(Keepalive {
        idle: secs(libc::TCP_KEEPIDLE, d.idle),
        interval: secs(libc::TCP_KEEPINTVL, d.interval),
        count: get(libc::IPPROTO_TCP, libc::TCP_KEEPCNT)
            .filter(|&v| v > 0)
            .map_or(d.count, |v| v as u32),
    })
}

/// Whether the kernel socket `fd`, becoming the engine socket `s`, had keep-alive options set
/// (on, or a timing other than Linux's defaults): noted in `s` for `connect` and `accept`.
pub fn keepalive_opts_from_kernel(fd: c_int, s: &Sock) {
    let d = Keepalive::default();
    let on = get_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE).is_some_and(|v| v != 0);
    // Off, a timing set now still counts once it is turned on.
    let timing = [
        (libc::TCP_KEEPIDLE, d.idle.as_secs() as c_int),
        (libc::TCP_KEEPINTVL, d.interval.as_secs() as c_int),
        (libc::TCP_KEEPCNT, d.count as c_int),
    ]
    .into_iter()
    .any(|(name, default)| get_int(fd, libc::IPPROTO_TCP, name).is_some_and(|v| v != default));
    if on || timing {
        s.keepalive_opts.store(true, Ordering::Relaxed);
    }
}

/// Note in `s` whether its placeholder `fd` has `SO_LINGER` on with a zero timeout, for a
/// close of `fd` (the placeholder holds the option, and so does every copy of `fd`).
pub fn note_linger(fd: c_int, s: &Sock) {
    let mut l = libc::linger {
        l_onoff: 0,
        l_linger: 0,
    };
    let mut len = std::mem::size_of::<libc::linger>() as socklen_t;
    // SAFETY: a `linger` and its length, ours.
    let r = unsafe {
        real::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&mut l as *mut libc::linger).cast(),
            &mut len,
        )
    };
    let abort = r == 0 && l.l_onoff != 0 && l.l_linger == 0;
    s.abort_on_close.store(abort, Ordering::Relaxed);
}

/// An accepted socket's `SO_LINGER` is its listener's, as on Linux: copied from the
/// listener's placeholder `from` onto the new one `to`.
pub fn inherit_linger(from: c_int, to: c_int) {
    let mut l = libc::linger {
        l_onoff: 0,
        l_linger: 0,
    };
    let mut len = std::mem::size_of::<libc::linger>() as socklen_t;
    let p = (&mut l as *mut libc::linger).cast();
    // SAFETY: a `linger` and its length, ours; both descriptors are the library's.
    unsafe {
        if real::getsockopt(from, libc::SOL_SOCKET, libc::SO_LINGER, p, &mut len) == 0
            && l.l_onoff != 0
        {
            real::setsockopt(to, libc::SOL_SOCKET, libc::SO_LINGER, p, len);
        }
    }
}

/// An int option of the kernel socket `fd`.
fn get_int(fd: c_int, level: c_int, name: c_int) -> Option<c_int> {
    let mut v: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as socklen_t;
    // SAFETY: an int and its length, ours.
    let r = unsafe { real::getsockopt(fd, level, name, (&mut v as *mut c_int).cast(), &mut len) };
    (r == 0).then_some(v)
}

/// Give the engine connection `conn` the keep-alive settings its placeholder `fd` holds.
pub fn apply_keepalive(fd: c_int, conn: &Conn) {
    conn.set_keepalive(keepalive_of(fd));
}

/// An accepted socket's keep-alive options are its listener's, as on Linux: copied from the
/// listener's placeholder `from` onto the new one `to`.
pub fn inherit_keepalive(from: c_int, to: c_int) {
    for (level, name) in [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
    ] {
        let mut v: c_int = 0;
        let mut len = std::mem::size_of::<c_int>() as socklen_t;
        // SAFETY: an int and its length, ours; both descriptors are the library's.
        unsafe {
            if real::getsockopt(from, level, name, (&mut v as *mut c_int).cast(), &mut len) == 0 {
                real::setsockopt(to, level, name, (&v as *const c_int).cast(), len);
            }
        }
    }
}

/// A timeout option's value as [`Sock`]'s fields keep it: 0 waits without end (as Linux reads
/// a zero timeval), a negative one does not wait at all (1 us).
fn timeout_us(tv: &libc::timeval) -> u64 {
    if tv.tv_sec < 0 {
        return 1;
    }
    (tv.tv_sec as u64)
        .saturating_mul(1_000_000)
        .saturating_add(tv.tv_usec.max(0) as u64)
}

/// Give `s` the receive and send timeouts that the kernel socket `fd` holds (set before it
/// became an engine socket, or inherited).
pub fn timeouts_from_kernel(fd: c_int, s: &Sock) {
    for (name, slot) in [
        (libc::SO_RCVTIMEO, &s.rcv_timeout),
        (libc::SO_SNDTIMEO, &s.snd_timeout),
    ] {
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        let mut len = std::mem::size_of::<libc::timeval>() as socklen_t;
        // SAFETY: a timeval and its length, ours.
        let r = unsafe {
            real::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&mut tv as *mut libc::timeval).cast(),
                &mut len,
            )
        };
        if r == 0 {
            slot.store(timeout_us(&tv), Ordering::Relaxed);
        }
    }
}

/// An accepted socket's timeouts are its listener's (as Linux copies them): onto the new
/// engine socket and its placeholder `fd`, where `getsockopt` reads them.
pub fn inherit_timeouts(from: &Sock, fd: c_int, to: &Sock) {
    for (name, src, dst) in [
        (libc::SO_RCVTIMEO, &from.rcv_timeout, &to.rcv_timeout),
        (libc::SO_SNDTIMEO, &from.snd_timeout, &to.snd_timeout),
    ] {
        let us = src.load(Ordering::Relaxed);
        if us == 0 {
            continue;
        }
        dst.store(us, Ordering::Relaxed);
        let tv = libc::timeval {
            tv_sec: (us / 1_000_000) as libc::time_t,
            tv_usec: (us % 1_000_000) as libc::suseconds_t,
        };
        // SAFETY: a timeval of ours, for the placeholder.
        unsafe {
            real::setsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as socklen_t,
            )
        };
    }
}

/// `getsockopt`: `SO_ERROR` and `SO_ACCEPTCONN` from the engine, the rest from the
/// placeholder.
///
/// # Safety
/// As `getsockopt(2)`.
#[no_mangle]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    if let Some(s) = sock::get(fd) {
        if level == libc::SOL_SOCKET && (name == libc::SO_ERROR || name == libc::SO_ACCEPTCONN) {
            if val.is_null() || len.is_null() {
                return fail(libc::EFAULT);
            }
            // SAFETY: the caller's length.
            if (unsafe { *len } as usize) < std::mem::size_of::<c_int>() {
                return fail(libc::EINVAL);
            }
            let v = match (&*s.lock(), name) {
                (State::Listener(_), libc::SO_ACCEPTCONN) => 1,
                (_, libc::SO_ACCEPTCONN) => 0,
                (State::Stream(st), _) => match conn_errno(st) {
                    Some(e) if !s.error_taken.swap(true, Ordering::Relaxed) => e,
                    _ => 0,
                },
                _ => 0,
            };
            // SAFETY: an int into the caller's buffer (its size checked above).
            unsafe {
                std::ptr::write_unaligned(val.cast::<c_int>(), v);
                *len = std::mem::size_of::<c_int>() as socklen_t;
            }
            return 0;
        }
    }
    // SAFETY: passed through.
    unsafe { real::getsockopt(fd, level, name, val, len) }
}

/// `getsockname`.
///
/// # Safety
/// As `getsockname(2)`.
#[no_mangle]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let Some(s) = sock::get(fd) else {
        // SAFETY: passed through.
        return unsafe { real::getsockname(fd, addr, len) };
    };
    if addr.is_null() || len.is_null() {
        return fail(libc::EFAULT);
    }
    let a = match &*s.lock() {
        State::Stream(st) => st.local_addr(),
        State::Bound(a) => *a,
        State::Listener(_) => s.local.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or(
            std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
        ),
    };
    // SAFETY: the caller's buffers.
    unsafe { put_inet(a, addr, len) };
    0
}

/// `getpeername`.
///
/// # Safety
/// As `getpeername(2)`.
#[no_mangle]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let Some(s) = sock::get(fd) else {
        // SAFETY: passed through.
        return unsafe { real::getpeername(fd, addr, len) };
    };
    if addr.is_null() || len.is_null() {
        return fail(libc::EFAULT);
    }
    let peer = match &*s.lock() {
        State::Stream(st)
            if matches!(st.status(), ConnStatus::Established | ConnStatus::Closed) =>
        {
            Some(st.peer_addr())
        }
        _ => None,
    };
    match peer {
        Some(p) => {
            // SAFETY: the caller's buffers.
            unsafe { put_inet(p, addr, len) };
            0
        }
        None => fail(libc::ENOTCONN),
    }
}
