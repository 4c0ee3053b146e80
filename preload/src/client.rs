//! The application's side of the engine service (`FLEXTOE_MODE=service`): one Unix socket
//! for requests (set-up only: listen, accept, connect), one for the service's events, and
//! per connection a shared memfd whose rings the application reads and writes directly.
//!
//! A thread of the library waits on the event socket and the application's wake-up socket
//! (the service sends on it when it moved data of this application) and wakes the application's
//! waiting calls. When the service goes away the event socket ends: every connection then
//! reads as reset, and blocked calls return within a wake-up.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use flextoe::host::ConnStatus;

use crate::shm::{self, op, Mapping, Msg};

/// Print `what` on stderr when `FLEXTOE_DEBUG` is set.
pub fn debug(what: &str) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("FLEXTOE_DEBUG").is_some()) {
        eprintln!("flextoe-preload[{}]: {what}", std::process::id());
    }
}

/// A connection to the service.
pub struct Client {
    /// The request socket (one request and its reply at a time).
    req: Mutex<OwnedFd>,
    /// The service page (its pump's sleep flag).
    page: Mapping,
    /// This program's eventfd for waking the service's pump.
    pump: OwnedFd,
    /// Queued connections per listener id, as the service last reported (see
    /// [`note_pending`]).
    pending: Mutex<HashMap<u32, Arc<AtomicU64>>>,
    /// The service is gone.
    pub dead: AtomicBool,
    /// The library's own descriptors (request and event sockets, the pump's kick, the
    /// wake-up socket).
    owned: [i32; 4],
}

impl Client {
    /// Attach to the service listening on the Unix socket `path`.
    pub fn attach(path: &str) -> io::Result<Arc<Client>> {
        // SAFETY: socket takes no pointers.
        let fd = unsafe {
            crate::real::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: our new descriptor.
        let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_un is valid.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let p = path.as_bytes();
        if p.len() >= addr.sun_path.len() {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        for (d, s) in addr.sun_path.iter_mut().zip(p) {
            *d = *s as libc::c_char;
        }
        // SAFETY: a sockaddr_un of the right size.
        let r = unsafe {
            crate::real::connect(
                fd,
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // The service greets with: its page, our eventfd for waking its pump, our socket for
        // its wake-ups, our event socket.
        let Some((hello, mut fds)) = shm::recv_msg(fd)? else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        if hello.err != 0 || fds.len() != 4 {
            return Err(io::Error::from_raw_os_error(hello.err.max(libc::EPROTO)));
        }
        let events = fds.pop().unwrap();
        let wake = fds.pop().unwrap();
        let pump = fds.pop().unwrap();
        let page_fd = fds.pop().unwrap();
        let page = Mapping::map_read_only(page_fd.as_raw_fd(), shm::PAGE)?;
        let owned = [
            sock.as_raw_fd(),
            pump.as_raw_fd(),
            events.as_raw_fd(),
            wake.as_raw_fd(),
        ];
        debug(&format!(
            "attached: request/pump/events/wake descriptors {owned:?}"
        ));
        let c = Arc::new(Client {
            req: Mutex::new(sock),
            page,
            pump,
            pending: Mutex::new(HashMap::new()),
            dead: AtomicBool::new(false),
            owned,
        });
        let c2 = c.clone();
        // The event thread takes none of the program's signals.
        crate::signals::quiet(|| {
            std::thread::Builder::new()
                .name("flextoe-events".into())
                .spawn(move || c2.event_loop(events, wake))
        })?;
        Ok(c)
    }

    /// Wait for the service's events and data wake-ups; wake the application's waiters.
    fn event_loop(&self, events: OwnedFd, wake: OwnedFd) {
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: events.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two pollfds of ours.
            let r = unsafe {
                crate::real::ppoll(fds.as_mut_ptr(), 2, std::ptr::null(), std::ptr::null())
            };
            if r < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            if fds[1].revents != 0 {
                shm::drain(wake.as_raw_fd());
            }
            if fds[0].revents != 0 {
                match shm::recv_msg(events.as_raw_fd()) {
                    Ok(Some((m, _))) if m.op == op::PENDING => {
                        if let Some(p) = self
                            .pending
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get(&m.a)
                        {
                            note_pending(p, m.seq, m.b);
                        }
                    }
                    Ok(Some(_)) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    r => {
                        debug(&format!(
                            "event socket ended: {:?}",
                            r.map(|o| o.map(|(m, _)| m))
                        ));
                        break;
                    }
                }
            }
            crate::engine::notify();
        }
        self.dead.store(true, Ordering::SeqCst);
        crate::engine::notify();
        // Their numbers stay the library's (`owns`) until the process ends: closing them
        // would let the program be refused a close of the same numbers handed out again.
        std::mem::forget(events);
        std::mem::forget(wake);
    }

    /// In a child after `fork`: close the child's copies of the library's descriptors (the
    /// child has no engine sockets; the parent's session goes on). Only system calls: the
    /// child's other threads are gone, and may have held any lock.
    pub fn leave_in_child(&self) {
        for fd in self.owned {
            // The system call itself: async-signal-safe, no symbol lookup and no lock.
            // SAFETY: the child's copy of one of our descriptors; nothing in the child uses
            // it any more (`started()` is `None` after a fork).
            unsafe { libc::syscall(libc::SYS_close, fd as libc::c_long) };
        }
    }

    /// Whether `fd` is one of the library's own descriptors.
    pub fn owns(&self, fd: i32) -> bool {
        self.owned.contains(&fd)
    }

    /// Tell the service's pump that a ring or flag moved (only when it sleeps).
    pub fn poke(&self) {
        // The ring position stored before must not pass this load (store-load order): the
        // pump sets the flag, then looks at the positions once more.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.page.word(shm::PAGE_PUMP_SLEEPS).load(Ordering::SeqCst) != 0 {
            shm::kick(self.pump.as_raw_fd());
        }
    }

    /// One request and its reply (with the descriptors that came with it); a reply that
    /// carries an error number is `Err` with it.
    fn request(&self, m: Msg, reply: bool) -> Result<(Msg, Vec<OwnedFd>), i32> {
        match self.exchange(m, reply)? {
            (r, fds) if r.err == 0 => Ok((r, fds)),
            (r, _) => Err(r.err),
        }
    }

    /// One request and its reply, whatever the reply says; `Err` only when the service is
    /// gone.
    fn exchange(&self, m: Msg, reply: bool) -> Result<(Msg, Vec<OwnedFd>), i32> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(libc::ECONNRESET);
        }
        let sock = self.req.lock().unwrap_or_else(|p| p.into_inner());
        // A signal handler without SA_RESTART interrupts these: they are tried again.
        loop {
            match shm::send_msg(sock.as_raw_fd(), &m, &[]) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug(&format!("request {m:?}: send failed: {e}"));
                    self.dead.store(true, Ordering::SeqCst);
                    return Err(libc::ECONNRESET);
                }
            }
        }
        if !reply {
            return Ok((Msg::default(), Vec::new()));
        }
        loop {
            match shm::recv_msg(sock.as_raw_fd()) {
                Ok(Some((r, fds))) => return Ok((r, fds)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => {
                    debug(&format!(
                        "request {m:?}: reply failed: {:?}",
                        r.map(|o| o.map(|(m, _)| m))
                    ));
                    self.dead.store(true, Ordering::SeqCst);
                    return Err(libc::ECONNRESET);
                }
            }
        }
    }

    /// Hold `port` (0: a free one) for a bound socket.
    pub fn bind(self: &Arc<Self>, port: u16) -> Result<RemoteBound, i32> {
        let (r, _) = self.request(
            Msg {
                op: op::BIND,
                a: port as u32,
                ..Msg::default()
            },
            true,
        )?;
        Ok(RemoteBound {
            client: self.clone(),
            id: r.a,
            port: r.b as u16,
        })
    }

    /// Listen on `port`, or on `bound`'s; returns the listener.
    pub fn listen(
        self: &Arc<Self>,
        port: u16,
        backlog: usize,
        bound: Option<RemoteBound>,
    ) -> Result<RemoteListener, i32> {
        // The queue table stays locked until the new listener is in it: the service's first
        // report of its queue may come before the reply is read here, and the event thread
        // waits for the entry instead of dropping the report. Only this call takes the
        // request lock while holding this one, and the event thread never takes the
        // request lock: no lock-order cycle.
        let mut table = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (r, _) = self.request(
            Msg {
                op: op::LISTEN,
                a: port as u32,
                b: backlog as u32,
                seq: bound.map_or(0, RemoteBound::hand_on),
                ..Msg::default()
            },
            true,
        )?;
        let pending = Arc::new(AtomicU64::new(0));
        table.insert(r.a, pending.clone());
        drop(table);
        Ok(RemoteListener {
            client: self.clone(),
            id: r.a,
            port: r.b as u16,
            pending,
        })
    }

    /// A connection from a reply that carries its memfd.
    fn conn(self: &Arc<Self>, r: Msg, mut fds: Vec<OwnedFd>) -> Result<Remote, i32> {
        let fd = fds.pop().ok_or(libc::EPROTO)?;
        let map = Mapping::map(fd.as_raw_fd(), shm::SIZE)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        Ok(Remote {
            client: self.clone(),
            id: r.a,
            map,
            rd_shut: false,
        })
    }

    /// Connect to `to`, from `bound`'s port if given.
    pub fn connect(
        self: &Arc<Self>,
        to: SocketAddrV4,
        bound: Option<RemoteBound>,
    ) -> Result<Remote, i32> {
        let (r, fds) = self.request(
            Msg {
                op: op::CONNECT,
                a: u32::from(*to.ip()),
                b: to.port() as u32,
                seq: bound.map_or(0, RemoteBound::hand_on),
                ..Msg::default()
            },
            true,
        )?;
        self.conn(r, fds)
    }
}

/// A port the service holds for a bound socket ([`Client::bind`]); dropped, it is given
/// back.
pub struct RemoteBound {
    client: Arc<Client>,
    /// The binding's id; 0 once handed on to a listen or a connect.
    id: u32,
    /// The port.
    pub port: u16,
}

impl RemoteBound {
    /// The binding's id, for a request that takes it (the service forgets the binding
    /// then, whether the request succeeds or not).
    fn hand_on(mut self) -> u32 {
        std::mem::take(&mut self.id)
    }
}

impl Drop for RemoteBound {
    fn drop(&mut self) {
        if self.id != 0 {
            let _ = self.client.request(
                Msg {
                    op: op::UNBIND,
                    a: self.id,
                    ..Msg::default()
                },
                false,
            );
        }
    }
}

/// A listener of the service.
pub struct RemoteListener {
    client: Arc<Client>,
    id: u32,
    /// The port.
    pub port: u16,
    pending: Arc<AtomicU64>,
}

/// Keep `count` as a listener's queue count (packed with its report number `seq` in `p`)
/// unless a later report is kept already: the accept replies and the events come on two
/// sockets, read by two threads, in either order.
fn note_pending(p: &AtomicU64, seq: u32, count: u32) {
    if seq == 0 {
        // No report (a reply about no listener); the service numbers from 1 and skips 0.
        return;
    }
    let _ = p.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
        let newer = seq.wrapping_sub((old >> 32) as u32) as i32 > 0;
        newer.then_some((u64::from(seq) << 32) | u64::from(count))
    });
}

impl RemoteListener {
    /// Connections queued, as the service last said.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire) as u32 as usize
    }

    /// Whether the service is gone.
    pub fn dead(&self) -> bool {
        self.client.dead.load(Ordering::SeqCst)
    }

    /// Take a queued connection; `Err(EAGAIN)` when none is.
    pub fn try_accept(&self) -> Result<Remote, i32> {
        let (r, fds) = self.client.exchange(
            Msg {
                op: op::ACCEPT,
                a: self.id,
                ..Msg::default()
            },
            true,
        )?;
        // The reply says how many are still queued (the service counts from there when it
        // tells of new ones).
        note_pending(&self.pending, r.seq, r.b);
        if r.err != 0 {
            return Err(r.err);
        }
        self.client.conn(r, fds)
    }
}

impl Drop for RemoteListener {
    fn drop(&mut self) {
        self.client
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        let _ = self.client.request(
            Msg {
                op: op::UNLISTEN,
                a: self.id,
                ..Msg::default()
            },
            false,
        );
    }
}

/// A connection of the service, read and written through shared memory.
pub struct Remote {
    client: Arc<Client>,
    id: u32,
    map: Mapping,
    rd_shut: bool,
}

impl Remote {
    fn h(&self) -> &shm::Header {
        self.map.header()
    }

    /// The connection's status (reset once the service is gone).
    pub fn status(&self) -> ConnStatus {
        if self.client.dead.load(Ordering::SeqCst) {
            return ConnStatus::Reset;
        }
        match self.h().status.load(Ordering::Acquire) {
            0 => ConnStatus::Connecting,
            1 => ConnStatus::Established,
            2 => ConnStatus::Closed,
            4 => ConnStatus::Refused,
            5 => ConnStatus::TimedOut,
            6 => ConnStatus::Unreachable,
            8 => ConnStatus::TableFull,
            9 => ConnStatus::TupleInUse,
            _ => ConnStatus::Reset,
        }
    }

    /// End the connection with a RST: the service resets it and discards what is queued.
    pub fn abort(self) {
        // Dropping adds its own flag; the service looks at this one first.
        self.h()
            .app_flags
            .fetch_or(shm::APP_ABORT, Ordering::Release);
    }

    /// Bytes ready to read.
    pub fn readable_bytes(&self) -> usize {
        (shm::load(&self.h().rx_head) - self.h().rx_tail.load(Ordering::Relaxed)) as usize
    }

    /// Bytes written and not yet acknowledged by the peer: in the send ring, or taken by
    /// the service and held by the engine.
    pub fn unacked_bytes(&self) -> usize {
        let h = self.h();
        // The tail first: bytes leave the ring only once the engine's count has them.
        let tail = shm::load(&h.tx_tail);
        let head = h.tx_head.load(Ordering::Relaxed);
        let engine = h.tx_unacked.load(Ordering::Acquire);
        head.saturating_sub(tail).saturating_add(engine) as usize
    }

    /// Free space in the send ring.
    pub fn writable_bytes(&self) -> usize {
        shm::RING
            - (self.h().tx_head.load(Ordering::Relaxed) - shm::load(&self.h().tx_tail)) as usize
    }

    /// Whether the peer's FIN arrived.
    pub fn peer_closed(&self) -> bool {
        self.h().peer_fin.load(Ordering::Acquire) != 0
    }

    /// Whether writing was shut down.
    pub fn write_closed(&self) -> bool {
        self.h().app_flags.load(Ordering::Relaxed) & shm::APP_SHUT_WR != 0
    }

    /// Bytes received so far.
    pub fn received_total(&self) -> u64 {
        shm::load(&self.h().rx_head)
    }

    /// Local address.
    pub fn local_addr(&self) -> SocketAddrV4 {
        let h = self.h();
        SocketAddrV4::new(
            Ipv4Addr::from(h.local_ip.load(Ordering::Relaxed)),
            h.local_port.load(Ordering::Relaxed) as u16,
        )
    }

    /// Peer address.
    pub fn peer_addr(&self) -> SocketAddrV4 {
        let h = self.h();
        SocketAddrV4::new(
            Ipv4Addr::from(h.peer_ip.load(Ordering::Relaxed)),
            h.peer_port.load(Ordering::Relaxed) as u16,
        )
    }

    fn error(&self) -> Option<io::Error> {
        let kind = match self.status() {
            ConnStatus::Reset | ConnStatus::Spliced => io::ErrorKind::ConnectionReset,
            ConnStatus::Refused => io::ErrorKind::ConnectionRefused,
            ConnStatus::TimedOut => io::ErrorKind::TimedOut,
            ConnStatus::Unreachable => io::ErrorKind::HostUnreachable,
            ConnStatus::TableFull | ConnStatus::TupleInUse => io::ErrorKind::AddrNotAvailable,
            _ => return None,
        };
        Some(kind.into())
    }

    /// Read in place, as [`flextoe::Stream::read_with`] does in nonblocking mode.
    pub fn read_with<R>(&mut self, f: impl FnOnce(&[u8]) -> (usize, R)) -> io::Result<R> {
        let head = shm::load(&self.h().rx_head);
        let tail = self.h().rx_tail.load(Ordering::Relaxed);
        if head == tail && self.rd_shut {
            // Reading shut down: what was received is still read first (as Linux), then
            // the connection's error (a reset before the peer's FIN), then the end.
            if !self.peer_closed() {
                if let Some(e) = self.error() {
                    return self.error_after_data(e, tail, f);
                }
            }
            return Ok(f(&[]).1);
        }
        if head == tail {
            // The end of the stream is the FIN flag only: the status can say closed while
            // the pump still has bytes to move into the ring. After the FIN, reads end
            // there, a later reset or not (Linux's reads do once the FIN is in).
            if !self.peer_closed() {
                if let Some(e) = self.error() {
                    return self.error_after_data(e, tail, f);
                }
                return Err(io::ErrorKind::WouldBlock.into());
            }
            // The FIN is published after the data: look again.
            if shm::load(&self.h().rx_head) == tail {
                return Ok(f(&[]).1);
            }
            return self.read_with(f);
        }
        let mut buf = [0u8; 16384];
        let n = self.map.read(shm::RX, head, tail, &mut buf);
        let (used, r) = f(&buf[..n]);
        let used = used.min(n);
        if used > 0 {
            self.h()
                .rx_tail
                .store(tail + used as u64, Ordering::Release);
            self.client.poke();
        }
        Ok(r)
    }

    /// A read that found the ring empty at `tail` on a failed connection: the error `e`
    /// once the service has moved every byte received before it (`WouldBlock` until then),
    /// and those bytes first.
    fn error_after_data<R>(
        &mut self,
        e: io::Error,
        tail: u64,
        f: impl FnOnce(&[u8]) -> (usize, R),
    ) -> io::Result<R> {
        if !self.rx_final() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // The FIN may have come before the failure, its flag set after this read's look.
        if shm::load(&self.h().rx_head) != tail || self.peer_closed() {
            return self.read_with(f);
        }
        Err(e)
    }

    /// Whether every byte received before the connection failed is in the receive ring
    /// (so a read that finds it empty reports the error); at once where the service is gone.
    pub fn rx_final(&self) -> bool {
        self.client.dead.load(Ordering::SeqCst) || self.h().rx_final.load(Ordering::Acquire) != 0
    }

    /// Write what fits, as `io::Write::write` does on a nonblocking stream.
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(e) = self.error() {
            return Err(e);
        }
        if self.write_closed() || self.status() == ConnStatus::Closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let head = self.h().tx_head.load(Ordering::Relaxed);
        let tail = shm::load(&self.h().tx_tail);
        let n = self.map.write(shm::TX, head, tail, data);
        if n == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.h().tx_head.store(head + n as u64, Ordering::Release);
        self.client.poke();
        Ok(n)
    }

    /// Whether reading was shut down here: reads return what is left, then 0.
    pub fn read_closed(&self) -> bool {
        self.rd_shut
    }

    /// Shut one or both directions down.
    pub fn shutdown(&mut self, how: std::net::Shutdown) {
        use std::net::Shutdown;
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            self.rd_shut = true;
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.h()
                .app_flags
                .fetch_or(shm::APP_SHUT_WR, Ordering::Release);
            self.client.poke();
        }
    }

    /// Keep-alives on with `k`'s timing, or off.
    pub fn set_keepalive(&self, k: Option<flextoe::host::Keepalive>) {
        let (b, seq) = shm::keepalive_to_msg(k);
        let _ = self.client.request(
            Msg {
                op: op::KEEPALIVE,
                a: self.id,
                b,
                seq,
                ..Msg::default()
            },
            false,
        );
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // The service finishes the connection (FIN after the queued data, or a RST when
        // unread data is left, as Linux does).
        let flag = if self.readable_bytes() > 0 {
            shm::APP_ABORT
        } else {
            shm::APP_CLOSED
        };
        self.h().app_flags.fetch_or(flag, Ordering::Release);
        self.client.poke();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(p: &AtomicU64) -> u32 {
        p.load(Ordering::Acquire) as u32
    }

    #[test]
    fn a_queue_count_reported_earlier_never_replaces_a_later_one() {
        let p = AtomicU64::new(0);
        // The pump's event (report 2: one queued) is read before the accept reply
        // (report 1: none left) that was sent before it.
        note_pending(&p, 2, 1);
        note_pending(&p, 1, 0);
        assert_eq!(count(&p), 1);
        note_pending(&p, 3, 0);
        assert_eq!(count(&p), 0);
        // Report 0 (a reply for no listener) says nothing.
        note_pending(&p, 0, 5);
        assert_eq!(count(&p), 0);
    }

    #[test]
    fn report_numbers_compare_across_the_wrap() {
        let p = AtomicU64::new(0);
        note_pending(&p, u32::MAX - 1, 4);
        note_pending(&p, u32::MAX, 3);
        note_pending(&p, 1, 2);
        assert_eq!(count(&p), 2);
        note_pending(&p, u32::MAX, 9);
        assert_eq!(count(&p), 2);
    }
}
