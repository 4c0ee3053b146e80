//! Waiting on many descriptors: `poll`, `ppoll`, `select`, `pselect` and epoll, with engine
//! sockets and kernel descriptors in one set.
//!
//! Engine sockets' readiness is read from the engine's rings and states. The kernel
//! descriptors are waited on with the C library's own call, to which one eventfd is added
//! that the engine signals when an event comes while somebody sleeps (see
//! [`crate::engine`]). A wait sleeps in slices of at most 10 ms, so a wake-up lost in a race
//! between two waiters costs no more than that.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libc::{c_int, nfds_t, pollfd};

use crate::engine::{self, Sleep};
use crate::real::{self, fail};
use crate::sock::{self, Sock};

/// The longest kernel wait before engine sockets are looked at again.
const SLICE: Duration = Duration::from_millis(10);

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// How long the kernel part of a wait may sleep: not at all when something is ready, else
/// until the deadline, at most a slice.
fn kernel_wait(ready: bool, sleep: &Sleep, deadline: Option<Instant>) -> Duration {
    if ready || sleep.moved() {
        return Duration::ZERO;
    }
    match deadline {
        Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
        None => SLICE,
    }
}

/// The deadline a timespec sets (`None`: no timeout); `Err` for an invalid one.
///
/// # Safety
/// `ts` is null or points to a timespec.
unsafe fn deadline_of(ts: *const libc::timespec) -> Result<Option<Instant>, ()> {
    if ts.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's timespec.
    let t = unsafe { *ts };
    if t.tv_sec < 0 || !(0..1_000_000_000).contains(&t.tv_nsec) {
        return Err(());
    }
    // A timeout past what the clock can hold (`tv_sec` near `LONG_MAX`, a "forever" Linux
    // accepts) waits without a deadline.
    Ok(Instant::now().checked_add(Duration::new(t.tv_sec as u64, t.tv_nsec as u32)))
}

/// `poll` over `fds`, engine sockets among them; `-1` with errno on a kernel error.
fn poll_mixed(
    fds: &mut [pollfd],
    socks: &[Option<Arc<Sock>>],
    deadline: Option<Instant>,
    mask: *const libc::sigset_t,
) -> c_int {
    let mut kern: Vec<pollfd> = Vec::with_capacity(fds.len() + 1);
    let mut kidx = Vec::with_capacity(fds.len());
    for (i, p) in fds.iter().enumerate() {
        if socks[i].is_none() {
            kern.push(*p);
            kidx.push(i);
        }
    }
    let wake = engine::thread_event_fd();
    kern.push(pollfd {
        fd: wake,
        events: libc::POLLIN,
        revents: 0,
    });
    loop {
        let sleep = Sleep::enter_fd(wake);
        let mut n = 0;
        for (p, s) in fds.iter_mut().zip(socks) {
            if let Some(s) = s {
                p.revents = s.readiness() & (p.events | libc::POLLERR | libc::POLLHUP);
                n += usize::from(p.revents != 0);
            }
        }
        let ts = timespec(kernel_wait(n > 0, &sleep, deadline));
        for k in &mut kern {
            k.revents = 0;
        }
        // SAFETY: `kern` is ours, `mask` the caller's (or null).
        let k = unsafe { real::ppoll(kern.as_mut_ptr(), kern.len() as nfds_t, &ts, mask) };
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINTR);
        drop(sleep);
        if k < 0 {
            if n > 0 {
                // Engine sockets are ready: report them, the kernel descriptors as quiet.
                for &i in &kidx {
                    fds[i].revents = 0;
                }
                return n as c_int;
            }
            return fail(errno);
        }
        let last = kern.len() - 1;
        if kern[last].revents != 0 {
            engine::drain_event_fd(wake);
        }
        for (j, &i) in kidx.iter().enumerate() {
            fds[i].revents = kern[j].revents;
            n += usize::from(kern[j].revents != 0);
        }
        if n > 0 {
            return n as c_int;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return 0;
        }
    }
}

/// The engine sockets among `fds` (`None` when there are none).
fn engine_socks(fds: &[pollfd]) -> Option<Vec<Option<Arc<Sock>>>> {
    let socks: Vec<_> = fds.iter().map(|p| sock::get(p.fd)).collect();
    socks.iter().any(Option::is_some).then_some(socks)
}

/// `poll`.
///
/// # Safety
/// As `poll(2)`.
#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    if fds.is_null() || n == 0 {
        // SAFETY: passed through.
        return unsafe { real::poll(fds, n, timeout) };
    }
    // SAFETY: the caller's `n` pollfds.
    let slice = unsafe { std::slice::from_raw_parts_mut(fds, n as usize) };
    let Some(socks) = engine_socks(slice) else {
        // SAFETY: passed through.
        return unsafe { real::poll(fds, n, timeout) };
    };
    let deadline = (timeout >= 0).then(|| Instant::now() + Duration::from_millis(timeout as u64));
    poll_mixed(slice, &socks, deadline, std::ptr::null())
}

/// `__poll_chk` (fortified `poll`).
///
/// # Safety
/// As `poll(2)`, with `fdslen` the array's size in bytes.
#[no_mangle]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut pollfd,
    n: nfds_t,
    timeout: c_int,
    fdslen: usize,
) -> c_int {
    if (n as usize).saturating_mul(std::mem::size_of::<pollfd>()) > fdslen {
        std::process::abort();
    }
    // SAFETY: as poll.
    unsafe { poll(fds, n, timeout) }
}

/// `ppoll`.
///
/// # Safety
/// As `ppoll(2)`.
#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    n: nfds_t,
    ts: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    if fds.is_null() || n == 0 {
        // SAFETY: passed through.
        return unsafe { real::ppoll(fds, n, ts, mask) };
    }
    // SAFETY: the caller's `n` pollfds.
    let slice = unsafe { std::slice::from_raw_parts_mut(fds, n as usize) };
    let Some(socks) = engine_socks(slice) else {
        // SAFETY: passed through.
        return unsafe { real::ppoll(fds, n, ts, mask) };
    };
    // SAFETY: the caller's timespec (or null).
    let Ok(deadline) = (unsafe { deadline_of(ts) }) else {
        return fail(libc::EINVAL);
    };
    poll_mixed(slice, &socks, deadline, mask)
}

/// `select` and `pselect` through [`poll_mixed`]: `-1` when no engine socket is in the
/// sets (the caller passes the call through).
///
/// # Safety
/// The sets are the caller's (or null), for descriptors below `n`.
unsafe fn select_mixed(
    n: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    deadline: Option<Instant>,
    mask: *const libc::sigset_t,
) -> Option<c_int> {
    let n = n.clamp(0, libc::FD_SETSIZE as c_int);
    // SAFETY: FD_ISSET on the caller's sets, for descriptors below FD_SETSIZE.
    let isset =
        |set: *mut libc::fd_set, fd: c_int| !set.is_null() && unsafe { libc::FD_ISSET(fd, set) };
    let mut fds = Vec::new();
    for fd in 0..n {
        let mut ev = 0;
        if isset(r, fd) {
            ev |= libc::POLLIN;
        }
        if isset(w, fd) {
            ev |= libc::POLLOUT;
        }
        if isset(e, fd) {
            ev |= libc::POLLPRI;
        }
        if ev != 0 {
            fds.push(pollfd {
                fd,
                events: ev,
                revents: 0,
            });
        }
    }
    let socks = engine_socks(&fds)?;
    let k = poll_mixed(&mut fds, &socks, deadline, mask);
    if k < 0 {
        return Some(-1);
    }
    for set in [r, w, e] {
        if !set.is_null() {
            // SAFETY: the caller's set.
            unsafe { libc::FD_ZERO(set) };
        }
    }
    let mut count = 0;
    for p in &fds {
        let marks = [
            (r, libc::POLLIN | libc::POLLHUP | libc::POLLERR),
            (w, libc::POLLOUT | libc::POLLERR),
            (e, libc::POLLPRI),
        ];
        for (set, bits) in marks {
            if !set.is_null()
                && p.revents & bits != 0
                && p.events & (bits & (libc::POLLIN | libc::POLLOUT | libc::POLLPRI)) != 0
            {
                // SAFETY: the caller's set, a descriptor below FD_SETSIZE.
                unsafe { libc::FD_SET(p.fd, set) };
                count += 1;
            }
        }
    }
    Some(count)
}

/// `select`.
///
/// # Safety
/// As `select(2)`.
#[no_mangle]
pub unsafe extern "C" fn select(
    n: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    tv: *mut libc::timeval,
) -> c_int {
    let deadline = if tv.is_null() {
        None
    } else {
        // SAFETY: the caller's timeval.
        let t = unsafe { *tv };
        if t.tv_sec < 0 || !(0..1_000_000).contains(&t.tv_usec) {
            return fail(libc::EINVAL);
        }
        // Past what the clock can hold: no deadline (see `deadline_of`).
        Instant::now().checked_add(Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000))
    };
    // SAFETY: the caller's sets.
    match unsafe { select_mixed(n, r, w, e, deadline, std::ptr::null()) } {
        Some(k) => {
            if let (false, Some(d)) = (tv.is_null(), deadline) {
                // Linux writes back the time left.
                let left = d.saturating_duration_since(Instant::now());
                // SAFETY: the caller's timeval.
                unsafe {
                    (*tv).tv_sec = left.as_secs() as libc::time_t;
                    (*tv).tv_usec = left.subsec_micros() as libc::suseconds_t;
                }
            }
            k
        }
        // SAFETY: passed through.
        None => unsafe { real::select(n, r, w, e, tv) },
    }
}

/// `pselect`.
///
/// # Safety
/// As `pselect(2)`.
#[no_mangle]
pub unsafe extern "C" fn pselect(
    n: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    ts: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    // SAFETY: the caller's timespec (or null).
    let Ok(deadline) = (unsafe { deadline_of(ts) }) else {
        return fail(libc::EINVAL);
    };
    // SAFETY: the caller's sets.
    match unsafe { select_mixed(n, r, w, e, deadline, mask) } {
        Some(k) => k,
        // SAFETY: passed through.
        None => unsafe { real::pselect(n, r, w, e, ts, mask) },
    }
}

/// An engine socket in an epoll set.
struct Interest {
    sock: Arc<Sock>,
    events: u32,
    data: u64,
    /// `EPOLLONESHOT` fired; off until `EPOLL_CTL_MOD`.
    off: bool,
}

/// The engine sockets of one epoll instance (its kernel descriptors stay in the kernel's).
struct EpollSet {
    ours: HashMap<c_int, Interest>,
    /// The set's eventfd, in the kernel's set: engine events make it readable while a
    /// thread waits on the set.
    wake: c_int,
    /// Where the next wait starts looking at `ours` (each wait goes on from the last
    /// socket it reported, so no ready socket is starved by others before it).
    cursor: usize,
    /// With `maxevents` 1: the kernel's descriptors go first on the next wait.
    kernel_first: bool,
}

impl Interest {
    /// The event this interest reports now, if any (an edge-triggered one only when it has a
    /// new edge; a one-shot one turns itself off).
    fn report(&mut self) -> Option<libc::epoll_event> {
        if self.off {
            return None;
        }
        let want = self.events
            & (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLPRI) as u32
            | (libc::EPOLLERR | libc::EPOLLHUP) as u32;
        let (bits, arrived, room) = self.sock.readiness_and_edges();
        let r = bits as u16 as u32 & want;
        if r == 0 {
            return None;
        }
        if self.events & libc::EPOLLET as u32 != 0 {
            // An edge: a bit that was not reported (or was used up since), or new data since
            // the last report of EPOLLIN.
            let seen = self.sock.edge_seen.fetch_or(r, Ordering::Relaxed);
            let mut new = r & !seen;
            if r & libc::EPOLLIN as u32 != 0
                && self.sock.edge_arrived.swap(arrived, Ordering::Relaxed) != arrived
            {
                new |= libc::EPOLLIN as u32;
            }
            if r & libc::EPOLLOUT as u32 != 0
                && self.sock.edge_room.swap(room, Ordering::Relaxed) < room
            {
                new |= libc::EPOLLOUT as u32;
            }
            if new == 0 {
                return None;
            }
        }
        if self.events & libc::EPOLLONESHOT as u32 != 0 {
            self.off = true;
        }
        Some(libc::epoll_event {
            events: r,
            u64: self.data,
        })
    }
}

impl EpollSet {
    /// Fill `out` (at most `cap` entries) with the engine sockets' events, going round from
    /// the cursor; returns how many.
    fn collect(&mut self, out: &mut [libc::epoll_event], cap: usize) -> usize {
        let len = self.ours.len();
        if len == 0 || cap == 0 {
            return 0;
        }
        let start = self.cursor % len;
        let mut n = 0;
        let mut next = start;
        let mut visit = |i: usize, it: &mut Interest| {
            if n < cap {
                if let Some(e) = it.report() {
                    out[n] = e;
                    n += 1;
                    next = i + 1;
                }
            }
        };
        for (i, it) in self.ours.values_mut().enumerate().skip(start) {
            visit(i, it);
        }
        for (i, it) in self.ours.values_mut().enumerate().take(start) {
            visit(i, it);
        }
        self.cursor = next;
        n
    }
}

impl Drop for EpollSet {
    fn drop(&mut self) {
        // SAFETY: the set's own eventfd, closed once.
        unsafe { real::close(self.wake) };
    }
}

/// The `data` the engine's eventfd carries in a kernel epoll set.
const WAKE_TOKEN: u64 = u64::MAX - 0x666c_6578;
/// The most kernel events an `epoll_pwait` over a mixed set collects at once.
const KERNEL_EVENTS: usize = 1024;

static EPOLLS: Mutex<Option<HashMap<c_int, Arc<Mutex<EpollSet>>>>> = Mutex::new(None);
static ANY_EPOLL: AtomicBool = AtomicBool::new(false);
/// Bits of the epoll descriptors below 65536 that have a set here.
static SETS: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];
/// A set's descriptor is 65536 or above (then every close looks).
static SETS_HIGH: AtomicBool = AtomicBool::new(false);

fn mark_set(fd: c_int, on: bool) {
    match usize::try_from(fd).ok().filter(|f| *f < 65536) {
        Some(f) if on => {
            SETS[f / 64].fetch_or(1 << (f % 64), Ordering::Release);
        }
        Some(f) => {
            SETS[f / 64].fetch_and(!(1 << (f % 64)), Ordering::Release);
        }
        None if on => SETS_HIGH.store(true, Ordering::Release),
        None => {}
    }
}

fn is_set(fd: c_int) -> bool {
    match usize::try_from(fd).ok().filter(|f| *f < 65536) {
        Some(f) => SETS[f / 64].load(Ordering::Acquire) & (1 << (f % 64)) != 0,
        None => fd >= 0 && SETS_HIGH.load(Ordering::Acquire),
    }
}

/// In a child after `fork`: the sets' engine sockets stayed with the parent. The sets are
/// forgotten (leaked: another parent thread may have held their locks at the fork).
pub fn forget_all() {
    ANY_EPOLL.store(false, Ordering::Release);
    for w in &SETS {
        w.store(0, Ordering::Release);
    }
    if let Ok(mut g) = EPOLLS.try_lock() {
        if let Some(map) = g.take() {
            std::mem::forget(map);
        }
    }
}

fn epolls() -> std::sync::MutexGuard<'static, Option<HashMap<c_int, Arc<Mutex<EpollSet>>>>> {
    EPOLLS.lock().unwrap_or_else(|p| p.into_inner())
}

fn set_of(ep: c_int) -> Option<Arc<Mutex<EpollSet>>> {
    if !ANY_EPOLL.load(Ordering::Acquire) || !is_set(ep) {
        return None;
    }
    epolls().as_ref()?.get(&ep).cloned()
}

/// `fd` was closed: out of every epoll set (as the kernel does), and gone as a set itself.
pub fn forget_fd(fd: c_int) {
    if !ANY_EPOLL.load(Ordering::Acquire) {
        return;
    }
    // Only an engine socket or one of our epoll sets has anything here: any other close
    // (the library's own descriptors included) takes no lock.
    if sock::get(fd).is_none() && !is_set(fd) {
        return;
    }
    mark_set(fd, false);
    let mut g = epolls();
    if let Some(map) = g.as_mut() {
        drop(map.remove(&fd));
        for set in map.values() {
            set.lock()
                .unwrap_or_else(|p| p.into_inner())
                .ours
                .remove(&fd);
        }
    }
}

/// The epoll sets of this library numbered `first..=last`.
pub fn sets_in_range(first: c_int, last: c_int) -> Vec<c_int> {
    if !ANY_EPOLL.load(Ordering::Acquire) {
        return Vec::new();
    }
    sock::keys_in(epolls().as_ref(), first, last)
}

/// `epoll_ctl`: engine sockets are kept here, everything else in the kernel's set.
///
/// # Safety
/// As `epoll_ctl(2)`.
#[no_mangle]
pub unsafe extern "C" fn epoll_ctl(
    ep: c_int,
    op: c_int,
    fd: c_int,
    ev: *mut libc::epoll_event,
) -> c_int {
    let Some(s) = sock::get(fd) else {
        // SAFETY: passed through.
        let r = unsafe { real::epoll_ctl(ep, op, fd, ev) };
        if r == 0 && op == libc::EPOLL_CTL_ADD {
            // It may become an engine socket later (`bind`, `connect`).
            crate::adopt::note_kernel_add(ep, fd);
        }
        return r;
    };
    // SAFETY: the caller's event, as `epoll_ctl(2)`.
    unsafe { ctl_engine(ep, op, fd, s, ev, false) }
}

/// A registration of the engine socket `fd` (`s`) that the kernel's set `ep` held for it
/// before it became one ([`crate::adopt`]), with its events and data: into the library's
/// part of the set, off where it was a one-shot that had fired. `false` if it could not be.
pub fn adopt(ep: c_int, fd: c_int, s: Arc<Sock>, events: u32, data: u64) -> bool {
    let mut ev = libc::epoll_event { events, u64: data };
    // The kernel keeps `EPOLLERR | EPOLLHUP` in every live registration and clears them
    // with the rest when a one-shot fires.
    let fired = events & libc::EPOLLONESHOT as u32 != 0
        && events & (libc::EPOLLERR | libc::EPOLLHUP) as u32 == 0;
    // SAFETY: our own event.
    unsafe { ctl_engine(ep, libc::EPOLL_CTL_ADD, fd, s, &mut ev, fired) == 0 }
}

/// `epoll_ctl` of the engine socket `fd` (`s`); an added or changed registration is `off`
/// (a one-shot that fired) where asked.
///
/// # Safety
/// `ev` as `epoll_ctl(2)`'s.
unsafe fn ctl_engine(
    ep: c_int,
    op: c_int,
    fd: c_int,
    s: Arc<Sock>,
    ev: *mut libc::epoll_event,
    off: bool,
) -> c_int {
    let set = {
        let mut g = epolls();
        let map = g.get_or_insert_with(HashMap::new);
        match map.get(&ep) {
            Some(set) => set.clone(),
            None => {
                // The set's eventfd goes into the kernel's set; that also tells whether
                // `ep` is an epoll descriptor at all (the kernel's errno if not).
                let wake = engine::new_event_fd();
                if wake < 0 {
                    return -1;
                }
                let mut w = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: WAKE_TOKEN,
                };
                // SAFETY: our eventfd into the caller's epoll set.
                if unsafe { real::epoll_ctl(ep, libc::EPOLL_CTL_ADD, wake, &mut w) } < 0 {
                    let e = std::io::Error::last_os_error();
                    // SAFETY: our own eventfd.
                    unsafe { real::close(wake) };
                    return fail(e.raw_os_error().unwrap_or(libc::EINVAL));
                }
                let set = Arc::new(Mutex::new(EpollSet {
                    ours: HashMap::new(),
                    wake,
                    cursor: 0,
                    kernel_first: false,
                }));
                map.insert(ep, set.clone());
                mark_set(ep, true);
                ANY_EPOLL.store(true, Ordering::Release);
                set
            }
        }
    };
    let mut set = set.lock().unwrap_or_else(|p| p.into_inner());
    let r = match op {
        libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD => {
            if ev.is_null() {
                return fail(libc::EFAULT);
            }
            // SAFETY: the caller's event.
            let e = unsafe { std::ptr::read_unaligned(ev) };
            let exists = set.ours.contains_key(&fd);
            if op == libc::EPOLL_CTL_ADD && exists {
                Err(libc::EEXIST)
            } else if op == libc::EPOLL_CTL_MOD && !exists {
                Err(libc::ENOENT)
            } else {
                s.edge_seen.store(0, Ordering::Relaxed);
                s.edge_arrived.store(u64::MAX, Ordering::Relaxed);
                s.edge_room.store(0, Ordering::Relaxed);
                set.ours.insert(
                    fd,
                    Interest {
                        sock: s,
                        events: e.events,
                        data: e.u64,
                        off,
                    },
                );
                Ok(())
            }
        }
        libc::EPOLL_CTL_DEL => set.ours.remove(&fd).map(|_| ()).ok_or(libc::ENOENT),
        _ => Err(libc::EINVAL),
    };
    match r {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// `epoll_wait`.
///
/// # Safety
/// As `epoll_wait(2)`.
#[no_mangle]
pub unsafe extern "C" fn epoll_wait(
    ep: c_int,
    evs: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    // SAFETY: as epoll_pwait without a mask.
    unsafe { epoll_pwait(ep, evs, max, timeout, std::ptr::null()) }
}

/// `epoll_pwait`.
///
/// # Safety
/// As `epoll_pwait(2)`.
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    ep: c_int,
    evs: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const libc::sigset_t,
) -> c_int {
    let Some(set) = set_of(ep) else {
        // SAFETY: passed through.
        return unsafe { real::epoll_pwait(ep, evs, max, timeout, mask) };
    };
    // Linux's bound (`EP_MAX_EVENTS`).
    let most = i32::MAX as usize / std::mem::size_of::<libc::epoll_event>();
    if max <= 0 || max as usize > most || evs.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: the caller's array of `max` events.
    let out = unsafe { std::slice::from_raw_parts_mut(evs, max as usize) };
    let deadline = (timeout >= 0).then(|| Instant::now() + Duration::from_millis(timeout as u64));
    // The kernel's descriptors are collected at most `KERNEL_EVENTS` at a time (a caller's
    // `max` of millions asks for no buffer of that size here; fewer events than `max` is
    // what any wait may return).
    let mut kbuf = vec![libc::epoll_event { events: 0, u64: 0 }; (max as usize).min(KERNEL_EVENTS)];
    let wake = set.lock().unwrap_or_else(|p| p.into_inner()).wake;
    loop {
        let sleep = Sleep::enter_fd(wake);
        let mut n = {
            let mut set = set.lock().unwrap_or_else(|p| p.into_inner());
            // One slot stays for the kernel's descriptors, so that ready engine sockets do
            // not starve them; with a single slot the kernel's go first every other wait.
            if out.len() == 1 {
                set.kernel_first = !set.kernel_first;
                if set.kernel_first {
                    // SAFETY: `kbuf` is ours, with room for one event.
                    let k = unsafe { real::epoll_pwait(ep, kbuf.as_mut_ptr(), 1, 0, mask) };
                    if k == 1 {
                        if kbuf[0].u64 != WAKE_TOKEN {
                            out[0] = kbuf[0];
                            return 1;
                        }
                        engine::drain_event_fd(wake);
                    }
                }
            }
            let cap = out.len().saturating_sub(1).max(1);
            set.collect(out, cap)
        };
        if n == out.len() {
            return n as c_int;
        }
        let wait = kernel_wait(n > 0, &sleep, deadline);
        let room = (out.len() - n).min(kbuf.len());
        let ms = wait.as_micros().div_ceil(1000) as c_int;
        // SAFETY: `kbuf` is ours, with room for `room` events.
        let k = unsafe { real::epoll_pwait(ep, kbuf.as_mut_ptr(), room as c_int, ms, mask) };
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINTR);
        drop(sleep);
        if k < 0 {
            return if n > 0 { n as c_int } else { fail(errno) };
        }
        for e in &kbuf[..k as usize] {
            let data = e.u64;
            if data == WAKE_TOKEN {
                engine::drain_event_fd(wake);
            } else if n < out.len() {
                out[n] = *e;
                n += 1;
            }
        }
        if n > 0 {
            return n as c_int;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return 0;
        }
    }
}

/// `epoll_pwait2`: as [`epoll_pwait`], its timeout rounded up to whole milliseconds when the
/// set holds engine sockets.
///
/// # Safety
/// As `epoll_pwait2(2)`.
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait2(
    ep: c_int,
    evs: *mut libc::epoll_event,
    max: c_int,
    timeout: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    if set_of(ep).is_none() {
        // SAFETY: passed through.
        return unsafe { real::epoll_pwait2(ep, evs, max, timeout, mask) };
    }
    let ms = if timeout.is_null() {
        -1
    } else {
        // SAFETY: the caller's timespec.
        let t = unsafe { std::ptr::read_unaligned(timeout) };
        if t.tv_sec < 0 || !(0..1_000_000_000).contains(&t.tv_nsec) {
            return fail(libc::EINVAL);
        }
        let ms = (t.tv_sec as u64)
            .saturating_mul(1000)
            .saturating_add((t.tv_nsec as u64).div_ceil(1_000_000));
        ms.min(c_int::MAX as u64) as c_int
    };
    // SAFETY: the caller's arguments, as epoll_pwait takes them.
    unsafe { epoll_pwait(ep, evs, max, ms, mask) }
}
