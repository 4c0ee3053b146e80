//! The intercepted data calls: the `read`, `recv` and `write`, `send` families on engine
//! sockets, with their blocking, nonblocking and `MSG_*` behaviour.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use flextoe::host::ConnStatus;
use libc::{c_int, c_void, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use crate::calls::errno_of;
use crate::conn::Conn;
use crate::real::{self, fail};
use crate::sock::{self, Sock, State};

/// How a receive call goes.
#[derive(Clone, Copy)]
struct RecvFlags {
    /// Never wait (`O_NONBLOCK` or `MSG_DONTWAIT`).
    nonblock: bool,
    /// Leave the bytes in place (`MSG_PEEK`).
    peek: bool,
    /// Wait until every buffer is full, or the stream ends, fails or times out
    /// (`MSG_WAITALL`).
    waitall: bool,
}

impl RecvFlags {
    fn of(s: &Sock, flags: c_int) -> RecvFlags {
        RecvFlags {
            nonblock: nonblocking(s, flags),
            peek: flags & libc::MSG_PEEK != 0,
            waitall: flags & libc::MSG_WAITALL != 0 && flags & libc::MSG_PEEK == 0,
        }
    }
}

/// Read from an engine socket into `bufs`: what is there now, waiting (unless nonblocking)
/// while nothing is, until `SO_RCVTIMEO` runs out (then `EAGAIN`, as Linux). With
/// `MSG_WAITALL` it waits on until the buffers are full; the end of the stream, an error or
/// the timeout then return what was read so far. Buffers of no bytes at all wait in the same
/// way and return 0 once there is something to read (or the error), as Linux's `recv`
/// (`read` of no bytes returns 0 before any of this, as the kernel's socket file does).
fn recv_into(s: &Arc<Sock>, bufs: &mut [&mut [u8]], how: RecvFlags) -> isize {
    let want: usize = bufs.iter().map(|b| b.len()).sum();
    let deadline = Sock::deadline(&s.rcv_timeout);
    let mut total = 0usize;
    // A wait for no bytes on a connection being set up also ends when it is (Linux's single
    // wait ends at the state change).
    let mut also = 0;
    loop {
        {
            let mut state = s.lock();
            let State::Stream(stream) = &mut *state else {
                return fail(libc::ENOTCONN) as isize;
            };
            if want == 0 && stream.status() == ConnStatus::Connecting {
                also = libc::POLLOUT;
            }
            let before = total;
            let mut result: Option<io::Result<()>> = None;
            // Up to two slices: the readable bytes may wrap around the ring.
            for _ in 0..2 {
                let r = stream.read_with(|src| {
                    let mut off = 0usize;
                    let mut skip = total;
                    for b in bufs.iter_mut() {
                        if skip >= b.len() {
                            skip -= b.len();
                            continue;
                        }
                        let n = (b.len() - skip).min(src.len() - off);
                        b[skip..skip + n].copy_from_slice(&src[off..off + n]);
                        off += n;
                        skip = 0;
                        if off == src.len() {
                            break;
                        }
                    }
                    (if how.peek { 0 } else { off }, off)
                });
                match r {
                    Ok(0) => {
                        // The end of the stream (or nothing yet: that is WouldBlock).
                        result.get_or_insert(Ok(()));
                        break;
                    }
                    Ok(n) => {
                        total += n;
                        result = Some(Ok(()));
                        if total == want || how.peek {
                            break;
                        }
                    }
                    Err(e) => {
                        if total == before {
                            result = Some(Err(e));
                        }
                        break;
                    }
                }
            }
            match result {
                Some(Ok(())) if how.waitall && total < want && total > before => {}
                Some(Ok(())) => return total as isize,
                Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Some(Err(_)) if total > 0 => return total as isize,
                Some(Err(e)) => {
                    // As Linux: the connection's error is reported once (by this call,
                    // `SO_ERROR` or `connect`); after it, the end of the stream.
                    if s.error_taken.swap(true, Ordering::Relaxed) {
                        return 0;
                    }
                    return fail(errno_of(&e)) as isize;
                }
                None => return total as isize,
            }
        }
        if how.nonblock {
            if total > 0 {
                return total as isize;
            }
            s.used_up(libc::POLLIN);
            return fail(libc::EAGAIN) as isize;
        }
        if let Some(r) = wait_or_end(s, libc::POLLIN | libc::POLLRDHUP | also, deadline, total) {
            if want == 0 {
                // Linux's wait for no bytes ends the call whatever ended it (its loop runs
                // while bytes are wanted): 0 after the timeout or a signal as well.
                return 0;
            }
            return r;
        }
        if want == 0 {
            return 0;
        }
    }
}

/// Wait for `mask` on `s` in a blocking call that moved `total` bytes so far: `None` to
/// go on, or what the call returns where `SO_RCVTIMEO`/`SO_SNDTIMEO` ran out or a signal
/// ended it (the bytes moved, or the error: as Linux).
fn wait_or_end(s: &Sock, mask: i16, deadline: Option<Instant>, total: usize) -> Option<isize> {
    let e = match s.wait(mask, deadline) {
        Ok(0) => libc::EAGAIN,
        Ok(_) => return None,
        Err(e) => e,
    };
    Some(if total > 0 {
        total as isize
    } else {
        fail(e) as isize
    })
}

/// The errno of a failed send on `s`: as Linux, the connection's error is reported once,
/// `EPIPE` after it (`EPIPE` after our own shutdown reports no error); a reset that came
/// after the peer's FIN (`fin_first`) is `EPIPE` itself.
pub fn send_errno(s: &Sock, e: &io::Error, fin_first: bool) -> c_int {
    let errno = errno_of(e);
    if errno == libc::ECONNRESET && fin_first {
        s.error_taken.store(true, Ordering::Relaxed);
        return libc::EPIPE;
    }
    if errno != libc::EPIPE && s.error_taken.swap(true, Ordering::Relaxed) {
        return libc::EPIPE;
    }
    errno
}

/// Write `bufs` to an engine socket: all of it when blocking (until `SO_SNDTIMEO` runs out),
/// what fits when not.
fn send_from(s: &Arc<Sock>, bufs: &[&[u8]], nonblock: bool, nosignal: bool) -> isize {
    let want: usize = bufs.iter().map(|b| b.len()).sum();
    let deadline = Sock::deadline(&s.snd_timeout);
    let mut total = 0usize;
    loop {
        {
            let mut state = s.lock();
            let State::Stream(stream) = &mut *state else {
                // Not connected (bound or listening): `EPIPE`, as Linux's `tcp_sendmsg`.
                return raise_epipe(nosignal);
            };
            if stream.status() == ConnStatus::Connecting && nonblock && total == 0 {
                return fail(libc::EAGAIN) as isize;
            }
            // A send of no bytes still asks the connection's state (as Linux's: its error,
            // `EPIPE` once it can send no more, a wait while it connects).
            while total < want || want == 0 {
                // The first buffer with bytes left.
                let mut skip = total;
                let Some(b) = bufs.iter().find_map(|b| {
                    if skip >= b.len() {
                        skip -= b.len();
                        None
                    } else {
                        Some(&b[skip..])
                    }
                }) else {
                    if want == 0 {
                        if let Err(e) = stream.write(&[]) {
                            if e.kind() != io::ErrorKind::WouldBlock {
                                return send_failed(s, stream, &e, nosignal);
                            }
                        }
                    }
                    break;
                };
                match stream.write(b) {
                    Ok(0) => break,
                    Ok(n) => total += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        if total > 0 {
                            return total as isize;
                        }
                        return send_failed(s, stream, &e, nosignal);
                    }
                }
            }
            // A blocking send of no bytes waits for the connection, as Linux's.
            let wait_connect = want == 0 && !nonblock && stream.status() == ConnStatus::Connecting;
            if (total == want && !wait_connect) || (nonblock && total > 0) {
                if total < want {
                    s.ran_out_of_room();
                }
                return total as isize;
            }
        }
        if nonblock {
            s.used_up(libc::POLLOUT);
            return fail(libc::EAGAIN) as isize;
        }
        if let Some(r) = wait_or_end(s, libc::POLLOUT, deadline, total) {
            return r;
        }
    }
}

/// A send that moved nothing failed with `e`: its errno (and `SIGPIPE` for `EPIPE`, unless
/// `MSG_NOSIGNAL`), as Linux's.
fn send_failed(s: &Sock, stream: &Conn, e: &io::Error, nosignal: bool) -> isize {
    let fin_first = stream.peer_closed() && !stream.write_closed();
    let errno = send_errno(s, e, fin_first);
    if errno == libc::EPIPE {
        return raise_epipe(nosignal);
    }
    fail(errno) as isize
}

/// `EPIPE`, and `SIGPIPE` unless `MSG_NOSIGNAL`.
fn raise_epipe(nosignal: bool) -> isize {
    if !nosignal {
        // SAFETY: raising a signal in our own process, as the kernel would.
        unsafe { libc::raise(libc::SIGPIPE) };
    }
    fail(libc::EPIPE) as isize
}

/// The iovecs of a call as `(base, len)`, empty ones left out; `None` for a bad count.
///
/// # Safety
/// `iov` points to `n` iovecs. Errors: `EINVAL` for a bad count or a total past `isize`,
/// `EFAULT` for a missing array or buffer.
unsafe fn iovec_parts(iov: *const libc::iovec, n: c_int) -> Result<Vec<(*mut u8, usize)>, c_int> {
    if !(0..=libc::UIO_MAXIOV).contains(&n) {
        return Err(libc::EINVAL);
    }
    if n > 0 && iov.is_null() {
        return Err(libc::EFAULT);
    }
    let mut v = Vec::with_capacity(n as usize);
    let mut total = 0usize;
    for i in 0..n as usize {
        // SAFETY: within the caller's `n` iovecs.
        let e = unsafe { *iov.add(i) };
        if e.iov_len > 0 {
            if e.iov_base.is_null() {
                return Err(libc::EFAULT);
            }
            total = total.saturating_add(e.iov_len);
            if total > isize::MAX as usize {
                return Err(libc::EINVAL);
            }
            v.push((e.iov_base.cast::<u8>(), e.iov_len));
        }
    }
    Ok(v)
}

/// The iovec count of a `msghdr` (Linux refuses more than `UIO_MAXIOV` with `EMSGSIZE`).
fn msg_iovlen(m: &msghdr) -> Result<c_int, c_int> {
    c_int::try_from(m.msg_iovlen)
        .ok()
        .filter(|n| *n <= libc::UIO_MAXIOV)
        .ok_or(libc::EMSGSIZE)
}

/// The iovecs of a write as slices (shared: they may overlap).
///
/// # Safety
/// `iov` points to `n` iovecs of readable memory.
unsafe fn iovecs<'a>(iov: *const libc::iovec, n: c_int) -> Result<Vec<&'a [u8]>, c_int> {
    // SAFETY: the caller's iovecs, each readable for its length.
    let parts = unsafe { iovec_parts(iov, n) }?;
    Ok(parts
        .into_iter()
        // SAFETY: the caller's buffer of `len` bytes.
        .map(|(p, len)| unsafe { std::slice::from_raw_parts(p.cast_const(), len) })
        .collect())
}

/// Receive into the iovecs of a read. Buffers that overlap (legal, if odd: the kernel fills
/// them in turn) cannot be slices at once; the bytes then go through one buffer and are
/// copied out in order.
///
/// # Safety
/// `iov` points to `n` iovecs of writable memory.
unsafe fn recv_iovecs(s: &Arc<Sock>, iov: *const libc::iovec, n: c_int, how: RecvFlags) -> isize {
    // SAFETY: the caller's iovecs.
    let parts = match unsafe { iovec_parts(iov, n) } {
        Ok(p) => p,
        Err(e) => return fail(e) as isize,
    };
    let mut spans: Vec<(usize, usize)> = parts
        .iter()
        .map(|&(p, len)| (p as usize, (p as usize).saturating_add(len)))
        .collect();
    spans.sort_unstable();
    if spans.windows(2).all(|w| w[0].1 <= w[1].0) {
        let mut bufs: Vec<&mut [u8]> = parts
            .into_iter()
            // SAFETY: the caller's buffers, writable for their lengths and (checked above)
            // disjoint.
            .map(|(p, len)| unsafe { std::slice::from_raw_parts_mut(p, len) })
            .collect();
        return recv_into(s, &mut bufs, how);
    }
    let total = parts
        .iter()
        .map(|p| p.1)
        .fold(0usize, usize::saturating_add);
    let mut tmp = vec![0u8; total.min(1 << 20)];
    let got = recv_into(s, &mut [&mut tmp[..]], how);
    if got > 0 {
        let mut off = 0;
        for (p, len) in parts {
            let k = len.min(got as usize - off);
            // SAFETY: `k` bytes into the caller's buffer `p` (writable for `len` >= `k`),
            // from our own buffer.
            unsafe { std::ptr::copy_nonoverlapping(tmp.as_ptr().add(off), p, k) };
            off += k;
            if off == got as usize {
                break;
            }
        }
    }
    got
}

/// Whether a call with `flags` must not wait.
fn nonblocking(s: &Sock, flags: c_int) -> bool {
    s.nonblock.load(Ordering::Relaxed) || flags & libc::MSG_DONTWAIT != 0
}

/// `read`.
///
/// # Safety
/// As `read(2)`.
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    match sock::get(fd) {
        // As the kernel's socket file: a read of no bytes is 0 at once, whatever the state.
        Some(_) if n == 0 => 0,
        // SAFETY: as recv with no flags.
        Some(_) => unsafe { recv(fd, buf, n, 0) },
        // SAFETY: passed through.
        None => unsafe { real::read(fd, buf, n) },
    }
}

/// `__read_chk` (fortified `read`).
///
/// # Safety
/// As `read(2)`, with `buflen` the buffer's size.
#[no_mangle]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
) -> ssize_t {
    if n > buflen {
        std::process::abort();
    }
    // SAFETY: as read.
    unsafe { read(fd, buf, n) }
}

/// `recv`.
///
/// # Safety
/// As `recv(2)`.
#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
    // SAFETY: as recvfrom without an address.
    unsafe {
        recvfrom(
            fd,
            buf,
            n,
            flags,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    }
}

/// `__recv_chk` (fortified `recv`).
///
/// # Safety
/// As `recv(2)`, with `buflen` the buffer's size.
#[no_mangle]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
) -> ssize_t {
    if n > buflen {
        std::process::abort();
    }
    // SAFETY: as recv.
    unsafe { recv(fd, buf, n, flags) }
}

/// `recvfrom`.
///
/// # Safety
/// As `recvfrom(2)`.
#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    let Some(s) = sock::get(fd) else {
        // SAFETY: passed through.
        return unsafe { real::recvfrom(fd, buf, n, flags, addr, len) };
    };
    if n > 0 && buf.is_null() {
        return fail(libc::EFAULT) as isize;
    }
    let mut slice: &mut [u8] = if n == 0 {
        &mut []
    } else {
        // SAFETY: the caller's buffer of `n` bytes.
        unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), n) }
    };
    let r = recv_into(
        &s,
        std::slice::from_mut(&mut slice),
        RecvFlags::of(&s, flags),
    );
    if r >= 0 && !addr.is_null() && !len.is_null() {
        // A connected TCP socket reports no source address.
        // SAFETY: the caller's length.
        unsafe { *len = 0 };
    }
    r
}

/// `__recvfrom_chk` (fortified `recvfrom`).
///
/// # Safety
/// As `recvfrom(2)`, with `buflen` the buffer's size.
#[no_mangle]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    if n > buflen {
        std::process::abort();
    }
    // SAFETY: as recvfrom.
    unsafe { recvfrom(fd, buf, n, flags, addr, len) }
}

/// `readv`.
///
/// # Safety
/// As `readv(2)`.
#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t {
    let Some(s) = sock::get(fd) else {
        // SAFETY: passed through.
        return unsafe { real::readv(fd, iov, n) };
    };
    // SAFETY: the caller's iovecs.
    match unsafe { iovec_parts(iov, n) } {
        Err(e) => return fail(e) as isize,
        // As `read`: no bytes asked for is 0 at once.
        Ok(parts) if parts.is_empty() => return 0,
        Ok(_) => {}
    }
    let how = RecvFlags::of(&s, 0);
    // SAFETY: the caller's iovecs.
    unsafe { recv_iovecs(&s, iov, n, how) }
}

/// `recvmsg` (no ancillary data on a TCP socket of the engine).
///
/// # Safety
/// As `recvmsg(2)`.
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    let Some(s) = sock::get(fd) else {
        // SAFETY: passed through.
        return unsafe { real::recvmsg(fd, msg, flags) };
    };
    if msg.is_null() {
        return fail(libc::EFAULT) as isize;
    }
    // SAFETY: the caller's msghdr.
    let m = unsafe { &mut *msg };
    m.msg_namelen = 0;
    m.msg_controllen = 0;
    m.msg_flags = 0;
    let n = match msg_iovlen(m) {
        Ok(n) => n,
        Err(e) => return fail(e) as isize,
    };
    let iov = m.msg_iov;
    let how = RecvFlags::of(&s, flags);
    // SAFETY: the caller's iovecs.
    unsafe { recv_iovecs(&s, iov, n, how) }
}

/// `write`.
///
/// # Safety
/// As `write(2)`.
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    match sock::get(fd) {
        // SAFETY: as send with no flags.
        Some(_) => unsafe { send(fd, buf, n, 0) },
        // SAFETY: passed through.
        None => unsafe { real::write(fd, buf, n) },
    }
}

/// `send`.
///
/// # Safety
/// As `send(2)`.
#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t {
    // SAFETY: as sendto without an address.
    unsafe { sendto(fd, buf, n, flags, std::ptr::null(), 0) }
}

/// `sendto` (the address is ignored on a connected socket, as Linux does for TCP).
///
/// # Safety
/// As `sendto(2)`.
#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> ssize_t {
    let Some(s) = sock::get(fd) else {
        // SAFETY: passed through.
        return unsafe { real::sendto(fd, buf, n, flags, addr, len) };
    };
    if n > 0 && buf.is_null() {
        return fail(libc::EFAULT) as isize;
    }
    let slice: &[u8] = if n == 0 {
        &[]
    } else {
        // SAFETY: the caller's buffer of `n` bytes.
        unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), n) }
    };
    send_from(
        &s,
        &[slice],
        nonblocking(&s, flags),
        flags & libc::MSG_NOSIGNAL != 0,
    )
}

/// `writev`.
///
/// # Safety
/// As `writev(2)`.
#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t {
    let Some(s) = sock::get(fd) else {
        // SAFETY: passed through.
        return unsafe { real::writev(fd, iov, n) };
    };
    // SAFETY: the caller's iovecs.
    let bufs = match unsafe { iovecs(iov, n) } {
        Ok(b) => b,
        Err(e) => return fail(e) as isize,
    };
    send_from(&s, &bufs, nonblocking(&s, 0), false)
}

/// `sendmsg` (no ancillary data).
///
/// # Safety
/// As `sendmsg(2)`.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    let Some(s) = sock::get(fd) else {
        // SAFETY: passed through.
        return unsafe { real::sendmsg(fd, msg, flags) };
    };
    if msg.is_null() {
        return fail(libc::EFAULT) as isize;
    }
    // SAFETY: the caller's msghdr.
    let m = unsafe { &*msg };
    // SAFETY: the caller's iovecs.
    let bufs = match msg_iovlen(m).and_then(|n| unsafe { iovecs(m.msg_iov, n) }) {
        Ok(b) => b,
        Err(e) => return fail(e) as isize,
    };
    send_from(
        &s,
        &bufs,
        nonblocking(&s, flags),
        flags & libc::MSG_NOSIGNAL != 0,
    )
}
