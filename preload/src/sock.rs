//! The table of engine sockets, keyed by the descriptor the application holds.
//!
//! An engine socket keeps the kernel socket the application created as a placeholder: it
//! holds the descriptor number (so engine and kernel descriptors share one number space),
//! answers `fstat`, and keeps the flags and options set on it. Its data never moves.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use flextoe::host::ConnStatus;

use crate::conn::{Bound, Conn, Listen};
use libc::c_int;

use crate::engine::Sleep;
use crate::signals;

/// What an engine socket is.
pub enum State {
    /// Bound to the engine's address, neither listening nor connected.
    Bound(SocketAddrV4),
    /// Listening.
    Listener(Listen),
    /// A connection (connecting, established, or ended).
    Stream(Conn),
}

/// One engine socket; descriptors made by `dup` share it.
pub struct Sock {
    /// What it is now.
    pub state: Mutex<State>,
    /// `O_NONBLOCK`.
    pub nonblock: AtomicBool,
    /// A failed nonblocking connect's error was reported (`SO_ERROR` or a call).
    pub error_taken: AtomicBool,
    /// A nonblocking connect is in progress or done, and no later `connect` reported its
    /// success yet (Linux answers that one with 0, later ones with `EISCONN`).
    pub connect_unreported: AtomicBool,
    /// Edge-triggered epoll: readiness bits already reported and not yet used up (a call
    /// that would block clears its bit).
    pub edge_seen: AtomicU32,
    /// Edge-triggered epoll: the bytes received when `EPOLLIN` was last reported (new data
    /// is a new edge, read or not).
    pub edge_arrived: AtomicU64,
    /// Edge-triggered epoll: the free send space when `EPOLLOUT` was last reported (more
    /// room since is a new edge, as acknowledgements free space).
    pub edge_room: AtomicU64,
    /// The local address of a listener.
    pub local: Mutex<Option<SocketAddrV4>>,
    /// `SO_RCVTIMEO` in microseconds (0: wait without end), for receives and accepts.
    pub rcv_timeout: AtomicU64,
    /// `SO_SNDTIMEO` in microseconds (0: wait without end), for sends.
    pub snd_timeout: AtomicU64,
    /// A keep-alive option was set on the socket (or on its placeholder before it became an
    /// engine socket): `connect` applies them and `accept` passes them on. Without one
    /// neither has anything to do (keep-alives start off).
    pub keepalive_opts: AtomicBool,
    /// `SO_LINGER` was on with a zero timeout when a descriptor of the socket closed
    /// ([`note_linger`](crate::opts::note_linger)): the connection ends with a RST and
    /// what is queued is discarded, as on Linux.
    pub abort_on_close: AtomicBool,
    /// The port `bind` took, held until the socket listens or connects from it.
    pub bound: Mutex<Option<Bound>>,
}

impl Sock {
    /// A socket in `state`.
    pub fn new(state: State, nonblock: bool) -> Arc<Sock> {
        let local = match &state {
            State::Bound(a) => Some(*a),
            _ => None,
        };
        Arc::new(Sock {
            state: Mutex::new(state),
            nonblock: AtomicBool::new(nonblock),
            error_taken: AtomicBool::new(false),
            connect_unreported: AtomicBool::new(false),
            edge_seen: AtomicU32::new(0),
            edge_arrived: AtomicU64::new(0),
            edge_room: AtomicU64::new(0),
            local: Mutex::new(local),
            rcv_timeout: AtomicU64::new(0),
            snd_timeout: AtomicU64::new(0),
            keepalive_opts: AtomicBool::new(false),
            abort_on_close: AtomicBool::new(false),
            bound: Mutex::new(None),
        })
    }

    /// When a blocking call that starts now gives up, for a timeout option (`rcv_timeout`
    /// or `snd_timeout`); `None` to wait without end.
    pub fn deadline(timeout: &AtomicU64) -> Option<Instant> {
        match timeout.load(Ordering::Relaxed) {
            0 => None,
            us => Instant::now().checked_add(std::time::Duration::from_micros(us)),
        }
    }

    /// Whether the port `bind` took is held for the socket.
    pub fn holds_binding(&self) -> bool {
        self.bound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Take the port `bind` held, to listen on or connect from.
    pub fn take_bound(&self) -> Option<Bound> {
        self.bound.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Lock the state.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `poll(2)` bits that hold now.
    pub fn readiness(&self) -> i16 {
        self.readiness_and_arrivals().0
    }

    /// [`readiness`](Self::readiness), the bytes received so far and the free send space
    /// (a stream's; 0 else): what an edge-triggered report compares.
    pub fn readiness_and_edges(&self) -> (i16, u64, u64) {
        let (bits, arrived) = self.readiness_and_arrivals();
        let room = match &*self.lock() {
            State::Stream(s) => s.writable_bytes() as u64,
            _ => 0,
        };
        (bits, arrived, room)
    }

    /// [`readiness`](Self::readiness), and the bytes received so far (a stream's; 0 else).
    pub fn readiness_and_arrivals(&self) -> (i16, u64) {
        let st = self.lock();
        let bits = match &*st {
            State::Bound(_) => libc::POLLOUT | libc::POLLHUP,
            State::Listener(l) => {
                if l.engine_gone() {
                    libc::POLLERR | libc::POLLHUP
                } else if l.pending() > 0 {
                    libc::POLLIN | libc::POLLRDNORM
                } else {
                    0
                }
            }
            // As Linux: the connection's error polls `POLLERR` until a call reports it.
            State::Stream(s) if self.error_taken.load(Ordering::Relaxed) => {
                stream_readiness(s) & !libc::POLLERR
            }
            State::Stream(s) => stream_readiness(s),
        };
        let arrived = match &*st {
            State::Stream(s) => s.received_total(),
            _ => 0,
        };
        (bits, arrived)
    }

    /// Forget edge-triggered reports of `bits` (the caller's call would block).
    pub fn used_up(&self, bits: i16) {
        self.edge_seen
            .fetch_and(!(bits as u16 as u32), Ordering::Relaxed);
    }

    /// A send took less than it was given (the send space ran out, or a `sendfile` stopped
    /// where the ring wraps): any room at the next look is a new edge-triggered `EPOLLOUT`
    /// (Linux, too, wakes a socket that ran out of space once space frees, though only once
    /// a good part of it has), even where the space then reaches what it was at the last
    /// report (the engine may have freed it all before anyone looks).
    pub fn ran_out_of_room(&self) {
        self.edge_room.store(0, Ordering::Relaxed);
    }

    /// Block until one of `mask`'s bits (or an error or hang-up) holds, or `deadline` (a
    /// timeout option of the socket's): `Ok` with the bits, 0 on timeout; `Err(EINTR)`
    /// where a signal handler ran and the call is to fail ([`signals::interrupts`]).
    pub fn wait(&self, mask: i16, deadline: Option<Instant>) -> Result<i16, c_int> {
        let want = mask | libc::POLLERR | libc::POLLHUP;
        let fd = crate::engine::thread_event_fd();
        // Without an eventfd of its own the thread sleeps on a condition variable, with its
        // signals let in (their handlers run; none ends the wait).
        let held = (fd >= 0).then(signals::Held::hold);
        loop {
            let sleep = Sleep::enter_fd(fd);
            let r = self.readiness() & want;
            if r != 0 {
                return Ok(r);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(0);
            }
            if sleep.moved() {
                continue;
            }
            let Some(held) = &held else {
                // No eventfd of its own (out of descriptors).
                sleep.wait(deadline);
                continue;
            };
            let (interrupted, woken) = held.sleep_on(fd, signals::slice(deadline));
            if woken {
                crate::engine::drain_event_fd(fd);
            }
            if interrupted && signals::interrupts(deadline.is_some()) {
                return Err(libc::EINTR);
            }
        }
    }
}

impl Drop for Sock {
    fn drop(&mut self) {
        let state = std::mem::replace(
            self.state.get_mut().unwrap_or_else(|p| p.into_inner()),
            State::Bound(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0)),
        );
        let abort = *self.abort_on_close.get_mut();
        match state {
            State::Stream(Conn::Local(s)) if abort => crate::linger::abort(s),
            State::Stream(Conn::Local(s)) => crate::linger::close(s),
            State::Stream(Conn::Remote(r)) if abort => r.abort(),
            _ => {}
        }
    }
}

/// A stream's `poll(2)` bits.
pub fn stream_readiness(s: &Conn) -> i16 {
    let st = s.status();
    match st {
        ConnStatus::Connecting => 0,
        ConnStatus::Reset
        | ConnStatus::Refused
        | ConnStatus::TimedOut
        | ConnStatus::Unreachable
        | ConnStatus::TableFull
        | ConnStatus::TupleInUse
        | ConnStatus::Spliced => {
            if s.rx_final() {
                libc::POLLIN | libc::POLLOUT | libc::POLLERR | libc::POLLHUP | libc::POLLRDHUP
            } else if s.readable_bytes() > 0 {
                // Bytes received before the failure are still on their way to the ring:
                // the error polls once they are in (a write fails at once).
                libc::POLLIN | libc::POLLRDNORM | libc::POLLOUT
            } else {
                libc::POLLOUT
            }
        }
        ConnStatus::Established | ConnStatus::Closed => {
            let mut r = 0;
            if s.is_readable() {
                r |= libc::POLLIN | libc::POLLRDNORM;
            }
            // As Linux: the peer's FIN or our own shutdown of reading.
            if s.peer_closed() || s.read_closed() {
                r |= libc::POLLRDHUP;
            }
            if !s.write_closed() && s.writable_bytes() > 0 && st == ConnStatus::Established {
                r |= libc::POLLOUT | libc::POLLWRNORM;
            }
            if st == ConnStatus::Closed || (s.peer_closed() && s.write_closed()) {
                r |= libc::POLLHUP;
            }
            r
        }
    }
}

/// Bits of descriptors below 65536 that are engine sockets: the test every intercepted
/// call makes first, without a lock.
static OWNED: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];
/// Engine sockets at or above 65536 (rare).
static HIGH: AtomicBool = AtomicBool::new(false);
static TABLE: RwLock<Option<HashMap<c_int, Arc<Sock>>>> = RwLock::new(None);

fn bit(fd: c_int) -> Option<(usize, u64)> {
    let fd = usize::try_from(fd).ok()?;
    (fd < 65536).then_some((fd / 64, 1 << (fd % 64)))
}

/// The engine socket behind `fd`, if it is one.
pub fn get(fd: c_int) -> Option<Arc<Sock>> {
    match bit(fd) {
        Some((w, b)) if OWNED[w].load(Ordering::Acquire) & b == 0 => return None,
        None if fd < 0 || !HIGH.load(Ordering::Acquire) => return None,
        _ => {}
    }
    let t = TABLE.read().unwrap_or_else(|p| p.into_inner());
    t.as_ref()?.get(&fd).cloned()
}

/// Make `fd` an engine socket (replacing what it was).
pub fn insert(fd: c_int, sock: Arc<Sock>) {
    let mut t = TABLE.write().unwrap_or_else(|p| p.into_inner());
    t.get_or_insert_with(HashMap::new).insert(fd, sock);
    match bit(fd) {
        Some((w, b)) => {
            OWNED[w].fetch_or(b, Ordering::Release);
        }
        None => HIGH.store(true, Ordering::Release),
    }
}

/// `fd` is no engine socket any more; returns what it was.
pub fn remove(fd: c_int) -> Option<Arc<Sock>> {
    let mut t = TABLE.write().unwrap_or_else(|p| p.into_inner());
    if let Some((w, b)) = bit(fd) {
        OWNED[w].fetch_and(!b, Ordering::Release);
    }
    t.as_mut()?.remove(&fd)
}

/// The engine sockets numbered `first..=last`.
pub fn in_range(first: c_int, last: c_int) -> Vec<c_int> {
    keys_in(
        TABLE.read().unwrap_or_else(|p| p.into_inner()).as_ref(),
        first,
        last,
    )
}

/// The descriptors of `map` numbered `first..=last`.
pub fn keys_in<V>(map: Option<&HashMap<c_int, V>>, first: c_int, last: c_int) -> Vec<c_int> {
    map.map(|m| {
        m.keys()
            .copied()
            .filter(|fd| (first..=last).contains(fd))
            .collect()
    })
    .unwrap_or_default()
}

/// At exit: every engine socket still open, taken out of the table (the kernel closes a
/// process's descriptors when it exits; these are closed the same way by dropping them).
pub fn take_all() -> Vec<Arc<Sock>> {
    let mut t = TABLE.write().unwrap_or_else(|p| p.into_inner());
    for w in &OWNED {
        w.store(0, Ordering::Release);
    }
    HIGH.store(false, Ordering::Release);
    t.take()
        .map(|m| {
            m.into_iter()
                .map(|(fd, s)| {
                    // Closed at exit as by `close`: `SO_LINGER` at zero is a RST.
                    crate::opts::note_linger(fd, &s);
                    s
                })
                .collect()
        })
        .unwrap_or_default()
}

/// After `fork`, in the child: the engine (its threads) stayed in the parent, so the
/// child's engine sockets are let go of without a word to it; their descriptors stay the
/// kernel sockets they stand on, which fail every call as unconnected sockets do.
pub fn forget_all() {
    for w in &OWNED {
        w.store(0, Ordering::Release);
    }
    HIGH.store(false, Ordering::Release);
    // Another thread of the parent may have held the lock at the fork: then the table is
    // simply never looked at again.
    if let Ok(mut t) = TABLE.try_write() {
        if let Some(map) = t.take() {
            // Dropping would ring doorbells of an engine that does not run in this process.
            std::mem::forget(map);
        }
    }
}
