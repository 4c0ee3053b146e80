//! What an application and the engine service share: per connection one memfd holding a
//! header and two byte rings, mapped by both; and the messages of the Unix socket that sets
//! them up (descriptors pass with `SCM_RIGHTS`).
//!
//! The rings are single-producer, single-consumer: the service writes the receive ring and
//! reads the send ring, the application the other way round. Positions are byte counts
//! that only grow (a ring index is the count modulo the ring's size), published with
//! release stores and read with acquire loads, as the crate's own byte rings do.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Bytes of each ring.
pub const RING: usize = 256 * 1024;
/// Bytes of the header page.
pub const HEADER: usize = 4096;
/// Bytes of a connection's shared memory.
pub const SIZE: usize = HEADER + 2 * RING;

/// The receive ring (service to application).
pub const RX: usize = 0;
/// The send ring (application to service).
pub const TX: usize = 1;

/// The application shut its sending side down (`shutdown(SHUT_WR)`).
pub const APP_SHUT_WR: u32 = 1;
/// The application closed the connection (its last descriptor).
pub const APP_CLOSED: u32 = 2;
/// The application closed it with unread data: a RST.
pub const APP_ABORT: u32 = 4;

/// The start of a connection's shared memory.
#[repr(C)]
pub struct Header {
    /// The connection's status ([`flextoe::host::ConnStatus`] as a number), service-written.
    pub status: AtomicU32,
    /// The peer's FIN arrived and every byte before it is in the receive ring.
    pub peer_fin: AtomicU32,
    /// Bytes the service wrote into the receive ring.
    pub rx_head: AtomicU64,
    /// Bytes the service took from the send ring.
    pub tx_tail: AtomicU64,
    /// Bytes the application read from the receive ring.
    pub rx_tail: AtomicU64,
    /// Bytes the application wrote into the send ring.
    pub tx_head: AtomicU64,
    /// `APP_*` flags.
    pub app_flags: AtomicU32,
    /// Local and peer address, written before the memory is handed over.
    pub local_ip: AtomicU32,
    /// Local port.
    pub local_port: AtomicU32,
    /// Peer address.
    pub peer_ip: AtomicU32,
    /// Peer port.
    pub peer_port: AtomicU32,
    /// The connection failed (the status says how) and every byte the engine received
    /// before is in the receive ring: a read reports the error once the ring is empty.
    pub rx_final: AtomicU32,
    /// Bytes taken from the send ring that the engine holds unacknowledged (service-written,
    /// before `tx_tail` moves past them).
    pub tx_unacked: AtomicU64,
}

/// A shared mapping (unmapped on drop).
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; every access through it goes through atomics
// (the header) or through the ring discipline (one writer and one reader per ring, each
// only touching bytes the positions give it).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// A new memfd of `len` bytes, mapped.
    pub fn create(name: &str, len: usize) -> io::Result<(OwnedFd, Mapping)> {
        let cname = std::ffi::CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: a NUL-terminated name.
        let fd = unsafe {
            libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just made and own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate on our memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let m = Mapping::map(fd.as_raw_fd(), len)?;
        // Its size is fixed: a process that shares it cannot shrink it under the other's
        // mapping (a SIGBUS there).
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
        // SAFETY: F_ADD_SEALS on our memfd.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((fd, m))
    }

    /// Seal `fd` against writes through new mappings or `write` (mappings made before keep
    /// writing): what the service does to its page before handing it out.
    pub fn seal_writes(fd: RawFd) -> io::Result<()> {
        // SAFETY: F_ADD_SEALS on a memfd of ours.
        if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_FUTURE_WRITE) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Map `len` bytes of the shared memory `fd`, read-only.
    pub fn map_read_only(fd: RawFd, len: usize) -> io::Result<Mapping> {
        Self::map_with(fd, len, libc::PROT_READ)
    }

    /// Map `len` bytes of the shared memory `fd`.
    pub fn map(fd: RawFd, len: usize) -> io::Result<Mapping> {
        Self::map_with(fd, len, libc::PROT_READ | libc::PROT_WRITE)
    }

    fn map_with(fd: RawFd, len: usize, prot: libc::c_int) -> io::Result<Mapping> {
        // SAFETY: a fresh shared mapping of the descriptor; the kernel checks `fd`.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: p.cast(), len })
    }

    /// The header of a connection's memory.
    pub fn header(&self) -> &Header {
        debug_assert!(self.len >= SIZE);
        // SAFETY: the mapping is at least a page, page-aligned, and `Header` is atomics only
        // (any bit pattern is valid, and zero-filled memory is its initial state).
        unsafe { &*(self.ptr as *const Header) }
    }

    /// Word `i` of a mapping (the service page's flags, see [`PAGE_PUMP_SLEEPS`]).
    pub fn word(&self, i: usize) -> &AtomicU32 {
        assert!((i + 1) * 4 <= self.len);
        // SAFETY: in bounds (checked), 4-aligned, atomics only.
        unsafe { &*(self.ptr.add(i * 4) as *const AtomicU32) }
    }

    fn ring(&self, which: usize) -> *mut u8 {
        debug_assert!(self.len >= SIZE && which < 2);
        // SAFETY: the rings lie inside the mapping (SIZE bytes).
        unsafe { self.ptr.add(HEADER + which * RING) }
    }

    /// Copy out of ring `which` from position `tail` up to `head` (at most `out.len()`);
    /// returns how many. The caller is the ring's reader.
    pub fn read(&self, which: usize, head: u64, tail: u64, out: &mut [u8]) -> usize {
        let n = ((head - tail) as usize).min(out.len());
        let at = (tail % RING as u64) as usize;
        let first = n.min(RING - at);
        let base = self.ring(which);
        // SAFETY: bytes [tail, tail + n) of the ring are published by the writer and not
        // written again until the reader moves past them; `out` holds n bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(base.add(at), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(base, out.as_mut_ptr().add(first), n - first);
        }
        n
    }

    /// Copy `data` into ring `which` at position `head` (as much as fits before `tail` comes
    /// round); returns how many. The caller is the ring's writer.
    pub fn write(&self, which: usize, head: u64, tail: u64, data: &[u8]) -> usize {
        let free = RING - (head - tail) as usize;
        let n = free.min(data.len());
        let at = (head % RING as u64) as usize;
        let first = n.min(RING - at);
        let base = self.ring(which);
        // SAFETY: bytes [head, head + n) are free (the reader is past them) and only the
        // writer touches them until it publishes.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(at), first);
            std::ptr::copy_nonoverlapping(data.as_ptr().add(first), base, n - first);
        }
        n
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Word of the service page: the service's pump sleeps (an application that moves a ring
/// then writes the pump's eventfd).
pub const PAGE_PUMP_SLEEPS: usize = 0;
/// Bytes of the service page.
pub const PAGE: usize = 4096;

/// Request operations (application to service).
pub mod op {
    /// Listen: `a` port, `b` backlog, `seq` a binding of [`BIND`]'s to listen on (its
    /// port; 0: none). Reply: `a` listener id, `b` the port.
    pub const LISTEN: u32 = 1;
    /// Stop listening: `a` listener id. No reply.
    pub const UNLISTEN: u32 = 2;
    /// Take a queued connection of listener `a`. Reply: `a` connection id, with its memfd.
    pub const ACCEPT: u32 = 3;
    /// Connect: `a` address, `b` port, `seq` a binding of [`BIND`]'s to connect from (0:
    /// none, an ephemeral port). Reply: `a` connection id, with its memfd.
    pub const CONNECT: u32 = 4;
    /// Keep-alives on or off for connection `a`, with their timing in `b` and `seq`
    /// ([`keepalive_to_msg`](super::keepalive_to_msg)). No reply.
    pub const KEEPALIVE: u32 = 5;
    /// Hold a port for a bound socket: `a` port (0: a free one). Reply: `a` binding id, `b`
    /// the port. [`LISTEN`] or [`CONNECT`] with the binding takes it.
    pub const BIND: u32 = 6;
    /// Give back binding `a`'s port (a bound socket closed). No reply.
    pub const UNBIND: u32 = 7;
    /// Event (service to application): listener `a` has `b` connections queued.
    pub const PENDING: u32 = 100;
}

/// One message: an operation, an error number (replies), and arguments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Msg {
    /// What (see [`op`]).
    pub op: u32,
    /// 0, or the errno of a failed request.
    pub err: i32,
    /// First argument.
    pub a: u32,
    /// Second argument.
    pub b: u32,
    /// A listener's queue-count report number (events and accept replies): the application
    /// keeps the count of the highest, whichever order the two sockets deliver them in.
    pub seq: u32,
}

/// Keep-alive settings as a [`op::KEEPALIVE`] message's `b` and `seq`: `b` is 0 (off) or
/// the probe count (at least 1, at most 65535); `seq` the idle time and the interval in
/// seconds, 16 bits each (Linux takes at most 32767 for either).
pub fn keepalive_to_msg(k: Option<flextoe::host::Keepalive>) -> (u32, u32) {
    let Some(k) = k else { return (0, 0) };
    let secs = |d: std::time::Duration| d.as_secs().clamp(1, u64::from(u16::MAX)) as u32;
    (
        k.count.clamp(1, u32::from(u16::MAX)),
        secs(k.idle) << 16 | secs(k.interval),
    )
}

/// The keep-alive settings a [`op::KEEPALIVE`] message carries (what the application sent:
/// any values within the fields' ranges are taken, 0 seconds as 1).
pub fn keepalive_from_msg(b: u32, seq: u32) -> Option<flextoe::host::Keepalive> {
    if b == 0 {
        return None;
    }
    let secs = |v: u32| std::time::Duration::from_secs(u64::from(v.max(1)));
    Some(flextoe::host::Keepalive {
        idle: secs(seq >> 16),
        interval: secs(seq & 0xffff),
        count: b.min(u32::from(u16::MAX)),
    })
}

/// Bytes of a [`Msg`] on the wire.
pub const MSG_LEN: usize = 20;

impl Msg {
    /// The message as bytes.
    pub fn bytes(&self) -> [u8; MSG_LEN] {
        let mut b = [0u8; MSG_LEN];
        b[0..4].copy_from_slice(&self.op.to_le_bytes());
        b[4..8].copy_from_slice(&self.err.to_le_bytes());
        b[8..12].copy_from_slice(&self.a.to_le_bytes());
        b[12..16].copy_from_slice(&self.b.to_le_bytes());
        b[16..20].copy_from_slice(&self.seq.to_le_bytes());
        b
    }

    /// A message from bytes (`None` unless exactly [`MSG_LEN`]).
    pub fn parse(b: &[u8]) -> Option<Msg> {
        if b.len() != MSG_LEN {
            return None;
        }
        let w = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        Some(Msg {
            op: w(0),
            err: w(4) as i32,
            a: w(8),
            b: w(12),
            seq: w(16),
        })
    }
}

/// Send `m` on the SOCK_SEQPACKET socket `sock`, with `fds` attached.
pub fn send_msg(sock: RawFd, m: &Msg, fds: &[RawFd]) -> io::Result<()> {
    let bytes = m.bytes();
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_iov = &mut iov;
    h.msg_iovlen = 1;
    if !fds.is_empty() {
        assert!(fds.len() <= 4);
        let len = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(len) } as usize;
        h.msg_control = cbuf.as_mut_ptr().cast();
        h.msg_controllen = space;
        // SAFETY: the control buffer holds `space` bytes (at most 64 for four descriptors).
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&h);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(len) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    // SAFETY: `h` points at our buffers, valid for the call.
    let r = unsafe { crate::real::sendmsg(sock, &h, libc::MSG_NOSIGNAL) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receive one message from `sock` (blocking), with the descriptors attached to it.
/// `Ok(None)` at the end of the stream.
pub fn recv_msg(sock: RawFd) -> io::Result<Option<(Msg, Vec<OwnedFd>)>> {
    // One byte more than a message: a longer one is seen (MSG_TRUNC cuts it) and refused.
    let mut bytes = [0u8; MSG_LEN + 1];
    let mut iov = libc::iovec {
        iov_base: bytes.as_mut_ptr().cast(),
        iov_len: bytes.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_iov = &mut iov;
    h.msg_iovlen = 1;
    h.msg_control = cbuf.as_mut_ptr().cast();
    h.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: `h` points at our buffers, valid for the call.
    let n = unsafe { crate::real::recvmsg(sock, &mut h, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Ok(None);
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into our buffer.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                let p = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(p.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&h, c);
        }
    }
    match Msg::parse(&bytes[..n as usize]) {
        Some(m) => Ok(Some((m, fds))),
        None => Err(io::ErrorKind::InvalidData.into()),
    }
}

/// Write 1 to the eventfd `fd`.
pub fn kick(fd: RawFd) {
    let one = 1u64;
    // SAFETY: an 8-byte write to an eventfd.
    unsafe { crate::real::write(fd, (&one as *const u64).cast(), 8) };
}

/// A wake-up on the socket `fd`: one byte, never blocking (a full socket is readable
/// already) and never raising `SIGPIPE` (the other end may be gone), whatever the flags of
/// the socket's open file.
pub fn nudge(fd: RawFd) {
    let one = 1u8;
    // SAFETY: a one-byte send from a live local.
    unsafe {
        crate::real::sendto(
            fd,
            (&one as *const u8).cast(),
            1,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            std::ptr::null(),
            0,
        )
    };
}

/// One receive from socket `fd` into `buf` that never waits (`MSG_DONTWAIT`): its length,
/// or below 0.
fn recv_now(fd: RawFd, buf: &mut [u8]) -> isize {
    // SAFETY: a receive into a live buffer of its length.
    unsafe {
        crate::real::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    }
}

/// Take the wake-ups waiting on the stream socket `fd`, never blocking: 64 at a receive,
/// which a short one empties, in at most 64 receives (what is left keeps it readable for
/// the next wait).
pub fn drain(fd: RawFd) {
    let mut buf = [0u8; 64];
    for _ in 0..64 {
        let r = recv_now(fd, &mut buf);
        if r < buf.len() as isize {
            break;
        }
    }
}

/// Take the kicks waiting on `fd`, never blocking: an eventfd a program shares (read with
/// `RWF_NOWAIT`, whatever the program did to the `O_NONBLOCK` of the open file they share),
/// or, where `datagrams`, the service's end of a datagram socket pair (at most 64 at a
/// time; what is left keeps it readable).
pub fn take_kicks(fd: RawFd, datagrams: bool) {
    if datagrams {
        let mut buf = [0u8; 8];
        for _ in 0..64 {
            let r = recv_now(fd, &mut buf);
            if r < 0 {
                break;
            }
        }
        return;
    }
    let mut v = 0u64;
    let iov = libc::iovec {
        iov_base: (&mut v as *mut u64).cast(),
        iov_len: 8,
    };
    // SAFETY: one iovec over a live local of its length; offset -1: the file's own.
    unsafe { libc::preadv2(fd, &iov, 1, -1, libc::RWF_NOWAIT) };
}

/// Whether this kernel reads an eventfd with `RWF_NOWAIT` (5.12 on): a blocking eventfd
/// with nothing in it answers `EAGAIN` at once.
pub fn eventfd_reads_without_waiting() -> bool {
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    let mut v = 0u64;
    let iov = libc::iovec {
        iov_base: (&mut v as *mut u64).cast(),
        iov_len: 8,
    };
    // SAFETY: as in `take_kicks`; the eventfd is empty, so a read that could wait would.
    let r = unsafe { libc::preadv2(fd, &iov, 1, -1, libc::RWF_NOWAIT) };
    let again = r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN);
    // SAFETY: our descriptor, closed once.
    unsafe { crate::real::close(fd) };
    again
}

/// Read an atomic position (acquire).
pub fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use flextoe::host::Keepalive;
    use std::time::Duration;

    /// The pump's read of a program's kick never waits: not on an empty eventfd whose
    /// `O_NONBLOCK` is cleared (a program can clear it on the open file it shares), nor on
    /// the datagram socket used where the kernel has no `RWF_NOWAIT` for eventfds.
    #[test]
    fn taking_kicks_never_waits() {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let wait_free = |fd: std::os::fd::RawFd, datagrams: bool| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                super::take_kicks(fd, datagrams);
                let _ = tx.send(());
            });
            rx.recv_timeout(Duration::from_secs(2)).is_ok()
        };
        if super::eventfd_reads_without_waiting() {
            // SAFETY: eventfd takes no pointers; the descriptor is ours.
            let fd = unsafe { OwnedFd::from_raw_fd(libc::eventfd(0, libc::EFD_CLOEXEC)) };
            assert!(
                wait_free(fd.as_raw_fd(), false),
                "waited on an empty eventfd"
            );
            std::mem::forget(fd);
        } else {
            eprintln!(
                "this kernel reads no eventfd with RWF_NOWAIT: the service kicks in datagrams"
            );
        }
        let mut ends = [0; 2];
        // SAFETY: `ends` has room for two descriptors.
        let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, ends.as_mut_ptr()) };
        assert_eq!(r, 0);
        assert!(
            wait_free(ends[0], true),
            "waited on an empty blocking socket"
        );
        super::kick(ends[1]);
        assert!(wait_free(ends[0], true));
        // SAFETY: our descriptors, closed once (no thread holds them now).
        unsafe {
            libc::close(ends[0]);
            libc::close(ends[1]);
        }
    }

    /// Keep-alive settings survive the trip through a message; off stays off.
    #[test]
    fn keepalive_settings_round_trip_through_a_message() {
        assert_eq!(super::keepalive_from_msg(0, 0), None);
        let (b, seq) = super::keepalive_to_msg(None);
        assert_eq!(super::keepalive_from_msg(b, seq), None);
        for k in [
            Keepalive::default(),
            Keepalive {
                idle: Duration::from_secs(1),
                interval: Duration::from_secs(32767),
                count: 127,
            },
        ] {
            let (b, seq) = super::keepalive_to_msg(Some(k));
            assert_eq!(super::keepalive_from_msg(b, seq), Some(k));
        }
        // What an application sends is not trusted: any pair of words gives a timing in the
        // fields' ranges (at least 1 s, at most 65535 s; at most 65535 probes), never a panic.
        for (b, seq) in [
            (1, 0),
            (u32::MAX, u32::MAX),
            (7, 0xffff_0000),
            (2, 0x0000_ffff),
        ] {
            let k = super::keepalive_from_msg(b, seq).unwrap();
            for d in [k.idle, k.interval] {
                assert!((1..=65535).contains(&d.as_secs()), "{k:?}");
            }
            assert!((1..=65535).contains(&k.count), "{k:?}");
        }
        // Out-of-range settings on the way in are clamped, not wrapped.
        let (b, seq) = super::keepalive_to_msg(Some(Keepalive {
            idle: Duration::from_secs(1 << 40),
            interval: Duration::ZERO,
            count: u32::MAX,
        }));
        let k = super::keepalive_from_msg(b, seq).unwrap();
        assert_eq!(
            (k.idle.as_secs(), k.interval.as_secs(), k.count),
            (65535, 1, 65535)
        );
    }

    use super::*;

    #[test]
    fn messages_round_trip_and_other_lengths_are_refused() {
        let m = Msg {
            op: op::PENDING,
            err: -3,
            a: 7,
            b: u32::MAX,
            seq: 0x8000_0001,
        };
        assert_eq!(Msg::parse(&m.bytes()), Some(m));
        let b = m.bytes();
        for len in [0, 1, 16, MSG_LEN - 1] {
            assert_eq!(Msg::parse(&b[..len]), None, "{len} bytes");
        }
        let mut long = b.to_vec();
        long.push(0);
        assert_eq!(Msg::parse(&long), None);
    }
}
