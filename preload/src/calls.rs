//! The intercepted set-up calls (bind, listen, accept, connect, close, shutdown, dup, fcntl,
//! ioctl; data calls are in [`crate::io`]). Each one asks first whether its descriptor is an engine
//! socket (one bit test); every other descriptor goes to the C library unchanged.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use flextoe::host::ConnStatus;
use libc::{c_int, c_ulong, sockaddr, socklen_t};

use crate::engine::{self, stack};
use crate::real::{self, fail};
use crate::sock::{self, Sock, State};

/// An IPv4 socket address from C.
///
/// # Safety
/// `addr` points to `len` readable bytes (or is null).
pub unsafe fn inet(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddrV4> {
    if addr.is_null() || (len as usize) < std::mem::size_of::<libc::sockaddr_in>() {
        return None;
    }
    // SAFETY: the caller's pointer, long enough for a sockaddr_in (checked above).
    let sin = unsafe { std::ptr::read_unaligned(addr.cast::<libc::sockaddr_in>()) };
    (sin.sin_family as c_int == libc::AF_INET).then(|| {
        SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
            u16::from_be(sin.sin_port),
        )
    })
}

/// Write `a` to a C socket address buffer (truncated to `*len`, which gets the full size).
///
/// # Safety
/// `addr` points to `*len` writable bytes, `len` to a writable length (either may be null).
pub unsafe fn put_inet(a: SocketAddrV4, addr: *mut sockaddr, len: *mut socklen_t) {
    if addr.is_null() || len.is_null() {
        return;
    }
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let full = std::mem::size_of::<libc::sockaddr_in>();
    // SAFETY: `len` is the caller's writable length.
    let room = unsafe { *len } as usize;
    // SAFETY: at most `room` bytes into the caller's buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&sin as *const libc::sockaddr_in).cast::<u8>(),
            addr.cast::<u8>(),
            room.min(full),
        );
        *len = full as socklen_t;
    }
}

/// Whether `fd` is a kernel TCP socket over IPv4 (what the engine may take over).
fn kernel_tcp4(fd: c_int) -> bool {
    let get = |opt| {
        let mut v: c_int = 0;
        let mut l = std::mem::size_of::<c_int>() as socklen_t;
        // SAFETY: an int-sized option into `v`.
        let r = unsafe {
            real::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut v as *mut c_int).cast(),
                &mut l,
            )
        };
        (r == 0).then_some(v)
    };
    get(libc::SO_DOMAIN) == Some(libc::AF_INET)
        && get(libc::SO_TYPE) == Some(libc::SOCK_STREAM)
        && get(libc::SO_PROTOCOL) == Some(libc::IPPROTO_TCP)
}

/// Whether the kernel descriptor `fd` has `O_NONBLOCK`.
fn kernel_nonblock(fd: c_int) -> bool {
    // SAFETY: F_GETFL takes no argument.
    let fl = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    fl >= 0 && fl & libc::O_NONBLOCK != 0
}

/// The errno for an I/O error of the engine's socket API.
pub fn errno_of(e: &io::Error) -> c_int {
    use io::ErrorKind as K;
    match e.kind() {
        K::WouldBlock => libc::EAGAIN,
        K::ConnectionReset => libc::ECONNRESET,
        K::ConnectionRefused => libc::ECONNREFUSED,
        K::BrokenPipe => libc::EPIPE,
        K::TimedOut => libc::ETIMEDOUT,
        K::HostUnreachable => libc::EHOSTUNREACH,
        K::AddrInUse => libc::EADDRINUSE,
        K::AddrNotAvailable => libc::EADDRNOTAVAIL,
        K::InvalidInput => libc::EINVAL,
        K::NotConnected => libc::ENOTCONN,
        _ => libc::EIO,
    }
}

/// The errno of a connection's failure, if it failed.
pub fn status_errno(st: ConnStatus) -> Option<c_int> {
    match st {
        ConnStatus::Reset => Some(libc::ECONNRESET),
        ConnStatus::Refused => Some(libc::ECONNREFUSED),
        ConnStatus::TimedOut => Some(libc::ETIMEDOUT),
        ConnStatus::Unreachable => Some(libc::EHOSTUNREACH),
        ConnStatus::TableFull | ConnStatus::TupleInUse => Some(libc::EADDRNOTAVAIL),
        _ => None,
    }
}

/// The errno of a connection's error, if it failed: as [`status_errno`], but a reset after
/// the peer's FIN, with ours not sent, is `EPIPE`, as Linux's (a reset in CLOSE-WAIT).
pub fn conn_errno(c: &crate::conn::Conn) -> Option<c_int> {
    match c.status() {
        ConnStatus::Reset if c.peer_closed() && !c.write_closed() => Some(libc::EPIPE),
        st => status_errno(st),
    }
}

/// `bind`: an IPv4 TCP socket bound to the engine's address (or to any) becomes an engine
/// socket.
///
/// # Safety
/// As `bind(2)`.
#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // A child of vfork binds its own descriptor: no port of the parent's engine is taken.
    if engine::configured() && !(engine::started().is_some() && engine::in_vfork_child()) {
        // SAFETY: the caller's address.
        if let Some(a) = unsafe { inet(addr, len) } {
            if sock::get(fd).is_some() {
                return fail(libc::EINVAL);
            }
            if kernel_tcp4(fd) {
                if let Some(st) = stack().filter(|st| st.cfg.binds(*a.ip())) {
                    // The port is taken now (a free one for port 0), as the kernel's bind
                    // does: `getsockname` reads it, and a second bind to it fails.
                    let bound = match st.bind(a.port()) {
                        Ok(b) => b,
                        Err(e) => return fail(e),
                    };
                    let local = SocketAddrV4::new(st.cfg.ip, bound.port());
                    let s = Sock::new(State::Bound(local), kernel_nonblock(fd));
                    *s.bound.lock().unwrap_or_else(|p| p.into_inner()) = Some(bound);
                    crate::opts::timeouts_from_kernel(fd, &s);
                    crate::opts::keepalive_opts_from_kernel(fd, &s);
                    sock::insert(fd, s.clone());
                    crate::adopt::take_over(fd, &s);
                    return 0;
                }
            }
        }
    }
    // SAFETY: passed through.
    unsafe { real::bind(fd, addr, len) }
}

/// `listen`.
///
/// # Safety
/// As `listen(2)`.
#[no_mangle]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    let Some(s) = sock::get(fd) else {
        // SAFETY: passed through.
        return unsafe { real::listen(fd, backlog) };
    };
    let Some(st) = engine::started() else {
        return fail(libc::EBADF);
    };
    let mut state = s.lock();
    let local = match &*state {
        State::Listener(_) => return 0,
        State::Stream(_) => return fail(libc::EINVAL),
        State::Bound(a) => *a,
    };
    let backlog = usize::try_from(backlog).unwrap_or(0).clamp(1, 4096);
    match st.listen(s.take_bound(), local.port(), backlog, fd as u64) {
        Ok(l) => {
            *s.local.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(SocketAddrV4::new(st.cfg.ip, l.port()));
            *state = State::Listener(l);
            0
        }
        Err(e) => {
            rebind(st, &s, local.port());
            fail(e)
        }
    }
}

/// A listen or a connect from the socket's port failed, or its listener stopped: the port
/// (given back meanwhile) is taken for it again, since its bind stands (as on Linux).
fn rebind(st: &engine::Stack, s: &Sock, port: u16) {
    if port != 0 {
        *s.bound.lock().unwrap_or_else(|p| p.into_inner()) = st.bind(port).ok();
    }
}

/// `accept`.
///
/// # Safety
/// As `accept(2)`.
#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: as accept4 with no flags.
    unsafe { accept4(fd, addr, len, 0) }
}

/// `accept4`.
///
/// # Safety
/// As `accept4(2)`.
#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    let Some(s) = sock::get(fd) else {
        // SAFETY: passed through.
        return unsafe { real::accept4(fd, addr, len, flags) };
    };
    let Some(st) = engine::started() else {
        return fail(libc::EBADF);
    };
    let deadline = Sock::deadline(&s.rcv_timeout);
    // The new descriptor stands on a fresh kernel socket of its own.
    let ty = libc::SOCK_STREAM | (flags & (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC));
    let (mut stream, nfd) = loop {
        {
            let state = s.lock();
            let State::Listener(l) = &*state else {
                return fail(libc::EINVAL);
            };
            // A listener through the service learns of new connections on another thread,
            // in no fixed order with the calls that made them: it always asks.
            if l.pending() > 0 || l.engine_gone() || l.remote() {
                // The descriptor before the connection: with the descriptor table full
                // (errno set) the connection stays queued for a later accept, as on Linux.
                // SAFETY: socket takes no pointers.
                let nfd = unsafe { real::socket(libc::AF_INET, ty, 0) };
                if nfd < 0 {
                    return -1;
                }
                match l.try_accept() {
                    Ok(Some(conn)) => break (conn, nfd),
                    Ok(None) => {
                        // SAFETY: our own descriptor, just opened.
                        unsafe { real::close(nfd) };
                    }
                    Err(e) => {
                        // SAFETY: as above.
                        unsafe { real::close(nfd) };
                        return fail(e);
                    }
                }
            }
        }
        if s.nonblock.load(Ordering::Relaxed) {
            s.used_up(libc::POLLIN);
            return fail(libc::EAGAIN);
        }
        match s.wait(libc::POLLIN, deadline) {
            // SO_RCVTIMEO ran out.
            Ok(0) => return fail(libc::EAGAIN),
            Ok(_) => {}
            Err(e) => return fail(e),
        }
    };
    if let Err(e) = st.adopt(&mut stream, nfd as u64) {
        // SAFETY: our own descriptor.
        unsafe { real::close(nfd) };
        return fail(e);
    }
    // SAFETY: the caller's buffers.
    unsafe { put_inet(stream.peer_addr(), addr, len) };
    let ns = Sock::new(State::Stream(stream), flags & libc::SOCK_NONBLOCK != 0);
    crate::opts::inherit_timeouts(&s, nfd, &ns);
    crate::opts::inherit_linger(fd, nfd);
    if s.keepalive_opts.load(Ordering::Relaxed) {
        crate::opts::inherit_keepalive(fd, nfd);
        ns.keepalive_opts.store(true, Ordering::Relaxed);
        if let State::Stream(c) = &*ns.lock() {
            crate::opts::apply_keepalive(nfd, c);
        }
    }
    sock::insert(nfd, ns);
    crate::client::debug(&format!("accept({fd}) = {nfd}"));
    nfd
}

/// `connect`: to an address in the engine's subnet, through the engine.
///
/// # Safety
/// As `connect(2)`.
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let existing = sock::get(fd);
    // SAFETY: the caller's address.
    let to = unsafe { inet(addr, len) };
    let s = match (existing, to) {
        (Some(s), _) => s,
        (None, Some(to)) if engine::configured() && kernel_tcp4(fd) => {
            match stack().filter(|st| st.cfg.routes(to)) {
                Some(_) => {
                    let s = Sock::new(
                        State::Bound(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
                        kernel_nonblock(fd),
                    );
                    crate::opts::timeouts_from_kernel(fd, &s);
                    crate::opts::keepalive_opts_from_kernel(fd, &s);
                    sock::insert(fd, s.clone());
                    crate::adopt::take_over(fd, &s);
                    s
                }
                // SAFETY: passed through.
                None => return unsafe { real::connect(fd, addr, len) },
            }
        }
        // SAFETY: passed through.
        _ => return unsafe { real::connect(fd, addr, len) },
    };
    let Some(st) = engine::started() else {
        return fail(libc::EBADF);
    };
    {
        let mut state = s.lock();
        match &*state {
            State::Listener(_) => return fail(libc::EISCONN),
            State::Stream(stream) => {
                return match stream.status() {
                    ConnStatus::Connecting => fail(libc::EALREADY),
                    ConnStatus::Established | ConnStatus::Closed => {
                        if s.connect_unreported.swap(false, Ordering::Relaxed) {
                            0
                        } else {
                            fail(libc::EISCONN)
                        }
                    }
                    // As Linux: a socket whose `connect` said it connected stays so
                    // (`EISCONN`); one whose nonblocking connect ended before a `connect`
                    // said so reports the error (`ECONNABORTED` once it was reported) and
                    // is unconnected again, its bind standing: the next `connect` starts
                    // a new connection.
                    _ => {
                        if !s.connect_unreported.swap(false, Ordering::Relaxed) {
                            fail(libc::EISCONN)
                        } else {
                            let errno = if s.error_taken.load(Ordering::Relaxed) {
                                libc::ECONNABORTED
                            } else {
                                conn_errno(stream).unwrap_or(libc::ECONNRESET)
                            };
                            unconnect(st, &s, &mut state);
                            fail(errno)
                        }
                    }
                };
            }
            State::Bound(_) => {}
        }
        let Some(to) = to else {
            return fail(libc::EAFNOSUPPORT);
        };
        if !st.cfg.routes(to) {
            return fail(libc::ENETUNREACH);
        }
        // A socket bound to a port whose binding is not held (a failed connection still had
        // it when the socket was unconnected) takes it now: it connects from its port. The
        // failed connection lets it go within moments; the socket's lock is not held while
        // this waits for that.
        let wanted = match &*state {
            State::Bound(a) if a.port() != 0 && !s.holds_binding() => Some(a.port()),
            _ => None,
        };
        let bound = match wanted {
            None => s.take_bound(),
            Some(port) => {
                drop(state);
                let b = bind_when_free(st, port);
                state = s.lock();
                if !matches!(&*state, State::Bound(_)) {
                    // Another thread's connect or listen came first.
                    return fail(libc::EALREADY);
                }
                match b {
                    Ok(b) => Some(b),
                    Err(e) => return fail(e),
                }
            }
        };
        match st.connect(bound, to, fd as u64) {
            Ok(conn) => {
                // Keep-alive options set before connect, on the placeholder.
                if s.keepalive_opts.load(Ordering::Relaxed) {
                    crate::opts::apply_keepalive(fd, &conn);
                }
                *state = State::Stream(conn);
            }
            Err(e) => {
                if let State::Bound(a) = &*state {
                    rebind(st, &s, a.port());
                }
                return fail(e);
            }
        }
    }
    if s.nonblock.load(Ordering::Relaxed) {
        s.connect_unreported.store(true, Ordering::Relaxed);
        return fail(libc::EINPROGRESS);
    }
    match s.wait(libc::POLLOUT, Sock::deadline(&s.snd_timeout)) {
        Ok(0) => {
            // SO_SNDTIMEO ran out: the connection goes on, as a nonblocking one would.
            s.connect_unreported.store(true, Ordering::Relaxed);
            return fail(libc::EINPROGRESS);
        }
        Ok(_) => {}
        Err(e) => {
            // A signal: the connection goes on too, as on Linux.
            s.connect_unreported.store(true, Ordering::Relaxed);
            return fail(e);
        }
    }
    let mut state = s.lock();
    let errno = match &*state {
        State::Stream(stream) => conn_errno(stream),
        // Another thread's connect unconnected it meanwhile.
        _ => return fail(libc::ECONNABORTED),
    };
    match errno {
        Some(e) => {
            // As Linux: the socket is unconnected again (its bind standing).
            unconnect(st, &s, &mut state);
            fail(e)
        }
        None => 0,
    }
}

/// Take `port`, waiting up to 100 ms while it is in use (by a connection of the socket's
/// that failed and is on its way out).
fn bind_when_free(st: &engine::Stack, port: u16) -> Result<crate::conn::Bound, c_int> {
    let mut tries = 0;
    loop {
        match st.bind(port) {
            Err(libc::EADDRINUSE) if tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            r => return r,
        }
    }
}

/// A connect failed and its error is reported: the socket is unconnected again, as a
/// socket only bound (to the port it was bound to, taken again), its error state fresh.
fn unconnect(st: &engine::Stack, s: &Sock, state: &mut State) {
    let local = s
        .local
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    *state = State::Bound(local);
    s.error_taken.store(false, Ordering::Relaxed);
    s.connect_unreported.store(false, Ordering::Relaxed);
    // Edge-triggered epoll: what was reported was the old connection's (as a new
    // registration would, the next connection's readiness is new).
    s.edge_seen.store(0, Ordering::Relaxed);
    s.edge_arrived.store(u64::MAX, Ordering::Relaxed);
    s.edge_room.store(0, Ordering::Relaxed);
    // The failed connection may still hold the port for a moment (a timeout is reported
    // before the engine lets the connection go): then the next `connect` takes it.
    rebind(st, s, local.port());
}

/// `close`: the last descriptor of an engine socket closes it (FIN, or RST when unread
/// data remains, as Linux does).
///
/// # Safety
/// As `close(2)`.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if let Some(crate::engine::Stack {
        mode: crate::engine::Mode::Service(c),
        ..
    }) = engine::started()
    {
        if c.owns(fd) {
            // The program closes a number it does not hold (a double close): the library's
            // descriptor stays, as if that number had been closed already.
            crate::client::debug(&format!(
                "close({fd}) of the library's own descriptor refused"
            ));
            return fail(libc::EBADF);
        }
    }
    if sock::get(fd).is_some() && engine::in_vfork_child() {
        // A child of vfork closes its own descriptor; the parent's engine socket stays.
        // SAFETY: passed through.
        return unsafe { real::close(fd) };
    }
    // Out of our epoll sets (or gone as one of them).
    crate::events::forget_fd(fd);
    if sock::get(fd).is_some() {
        crate::client::debug(&format!("close({fd}) of an engine socket"));
        close_engine_socket(fd);
    }
    // SAFETY: passed through (for an engine socket: its placeholder).
    unsafe { real::close(fd) }
}

/// Forget the engine socket `fd` (its placeholder still open), which ends it where `fd`
/// was its last descriptor: reading `SO_LINGER` first.
fn close_engine_socket(fd: c_int) {
    if let Some(s) = sock::remove(fd) {
        crate::opts::note_linger(fd, &s);
    }
}

/// `close_range`: the engine sockets and epoll sets in the range are closed as `close`
/// closes them, then the kernel closes the range. With `CLOSE_RANGE_CLOEXEC` nothing closes
/// now, and with `CLOSE_RANGE_UNSHARE` only the caller's private copy of the descriptor
/// table does; unknown flags are the kernel's to refuse. A child of `vfork` shares the
/// parent's memory, and its closes are its own: the parent's engine sockets stay. The
/// library's own descriptors get no protection here: a program that closes every
/// descriptor it did not open (a child before `exec` does) has no engine to talk to anyway.
///
/// # Safety
/// As `close_range(2)`.
#[no_mangle]
pub unsafe extern "C" fn close_range(
    first: libc::c_uint,
    last: libc::c_uint,
    flags: c_int,
) -> c_int {
    // Only a plain close closes now: CLOEXEC closes nothing yet, UNSHARE closes a private
    // copy of the table, and unknown flags are the kernel's to refuse.
    if flags == 0 && first <= last && engine::started().is_some() && !engine::in_vfork_child() {
        let lo = c_int::try_from(first).unwrap_or(c_int::MAX);
        let hi = c_int::try_from(last).unwrap_or(c_int::MAX);
        let mut fds = sock::in_range(lo, hi);
        fds.extend(crate::events::sets_in_range(lo, hi));
        for fd in fds {
            crate::events::forget_fd(fd);
            close_engine_socket(fd);
        }
    }
    // SAFETY: passed through.
    unsafe { real::close_range(first, last, flags) }
}

/// `shutdown`.
///
/// # Safety
/// As `shutdown(2)`.
#[no_mangle]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    let Some(s) = sock::get(fd) else {
        // SAFETY: passed through.
        return unsafe { real::shutdown(fd, how) };
    };
    let how = match how {
        libc::SHUT_RD => std::net::Shutdown::Read,
        libc::SHUT_WR => std::net::Shutdown::Write,
        libc::SHUT_RDWR => std::net::Shutdown::Both,
        _ => return fail(libc::EINVAL),
    };
    let mut state = s.lock();
    let r = match &mut *state {
        State::Stream(stream) if stream.status() != ConnStatus::Connecting => {
            match stream.shutdown(how) {
                Ok(()) => 0,
                Err(e) => fail(errno_of(&e)),
            }
        }
        // As Linux: shutting a listener's reading down stops it (its queued connections
        // go, and accept fails with EINVAL from then on); shutting its writing does nothing.
        State::Listener(_) if how == std::net::Shutdown::Write => 0,
        State::Listener(_) => {
            let local = s
                .local
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .unwrap_or(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0));
            drop(std::mem::replace(&mut *state, State::Bound(local)));
            if let Some(st) = engine::started() {
                rebind(st, &s, local.port());
            }
            0
        }
        _ => fail(libc::ENOTCONN),
    };
    drop(state);
    if r == 0 && how != std::net::Shutdown::Write {
        // Reading shut down is readable: a new edge for edge-triggered epoll.
        s.used_up(libc::POLLIN | libc::POLLRDHUP);
    }
    // Threads blocked on the socket (a read, an accept) look at it again.
    crate::engine::notify();
    r
}

/// Give `to` the engine socket of `from` (after the kernel duplicated the placeholder).
fn dup_entry(s: Arc<Sock>, to: c_int) -> c_int {
    if to >= 0 {
        sock::insert(to, s);
    }
    to
}

/// `dup`.
///
/// # Safety
/// As `dup(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: passed through; the new descriptor shares the engine socket.
    let to = unsafe { real::dup(fd) };
    match sock::get(fd) {
        Some(s) => dup_entry(s, to),
        None => to,
    }
}

/// `dup2`.
///
/// # Safety
/// As `dup2(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup2(fd: c_int, to: c_int) -> c_int {
    if fd == to {
        // SAFETY: F_GETFD takes no argument; dup2 to itself only checks `fd`.
        return if unsafe { real::fcntl(fd, libc::F_GETFD, 0) } < 0 {
            -1
        } else {
            to
        };
    }
    // SAFETY: as dup3 with no flags (different descriptors).
    unsafe { dup3(fd, to, 0) }
}

/// `dup3`.
///
/// # Safety
/// As `dup3(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int {
    let from = sock::get(fd);
    if fd != to {
        if let Some(old) = sock::get(to) {
            // `to` closes in the kernel's dup3: its `SO_LINGER` is read while it is open.
            crate::opts::note_linger(to, &old);
        }
    }
    // SAFETY: passed through.
    let r = unsafe { real::dup3(fd, to, flags) };
    if r >= 0 && (from.is_some() || sock::get(to).is_some()) && !engine::in_vfork_child() {
        // `to` was closed by the kernel: so is whatever engine socket it was.
        if sock::get(to).is_some() {
            crate::events::forget_fd(to);
            drop(sock::remove(to));
        }
        if let Some(s) = from {
            dup_entry(s, r);
        }
    }
    r
}

/// `fcntl` (declared with one argument: what every command takes, passed as the C
/// library passes variadic integers and pointers).
///
/// # Safety
/// As `fcntl(2)`.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: as fcntl.
    unsafe { fcntl_impl(fd, cmd, arg) }
}

/// `fcntl64` (the same, under glibc's large-file name).
///
/// # Safety
/// As `fcntl(2)`.
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: as fcntl.
    unsafe { fcntl_impl(fd, cmd, arg) }
}

unsafe fn fcntl_impl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: passed through (an engine socket's placeholder keeps its flags).
    let r = unsafe { real::fcntl(fd, cmd, arg) };
    if r < 0 {
        return r;
    }
    if let Some(s) = sock::get(fd) {
        match cmd {
            libc::F_SETFL => s
                .nonblock
                .store(arg as c_int & libc::O_NONBLOCK != 0, Ordering::Relaxed),
            libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
                dup_entry(s, r);
            }
            _ => {}
        }
    }
    r
}

/// `ioctl`: `FIONREAD` (`SIOCINQ`), `SIOCOUTQ` and `FIONBIO` on engine sockets.
///
/// # Safety
/// As `ioctl(2)`.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, req: c_ulong, arg: c_ulong) -> c_int {
    if let Some(s) = sock::get(fd) {
        match req {
            // `FIONREAD` (`SIOCINQ`): the bytes ready to read; `SIOCOUTQ`: those written and
            // not yet acknowledged (a program may wait for 0 before it closes).
            libc::FIONREAD | libc::TIOCOUTQ => {
                let n = match &*s.lock() {
                    State::Stream(st) if req == libc::FIONREAD => st.readable_bytes(),
                    State::Stream(st) => st.unacked_bytes(),
                    // As Linux: nothing either way on a socket not connected, and no
                    // answer from a listener.
                    State::Bound(_) => 0,
                    State::Listener(_) => return fail(libc::EINVAL),
                };
                if arg == 0 {
                    return fail(libc::EFAULT);
                }
                // SAFETY: both requests' argument is an int pointer.
                unsafe { *(arg as *mut c_int) = n.min(c_int::MAX as usize) as c_int };
                return 0;
            }
            libc::FIONBIO => {
                if arg == 0 {
                    return fail(libc::EFAULT);
                }
                // SAFETY: FIONBIO's argument is an int pointer.
                let on = unsafe { *(arg as *const c_int) } != 0;
                s.nonblock.store(on, Ordering::Relaxed);
            }
            _ => {}
        }
    }
    // SAFETY: passed through.
    unsafe { real::ioctl(fd, req, arg) }
}
