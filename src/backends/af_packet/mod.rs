//! AF_PACKET backend (feature `af_packet`, Linux).
//!
//! A raw layer-2 socket bound to one interface (found through `pnet_datalink`). The port
//! creates the socket itself so that it can size the kernel's buffers (a default receive
//! buffer holds fewer than a hundred full-size frames, and what overflows it is lost) and
//! ask the kernel not to loop our own transmissions back. By default the socket receives
//! into a ring shared with the kernel (`PACKET_RX_RING`, see [`ring`]): a poll makes no
//! system call to receive, and copies each frame from the ring into an arena frame. With
//! [`AfPacketConfig::rx_ring`] off, a `recvmmsg` per burst reads straight into arena
//! frames. Frames go out a burst per `sendmmsg`, from the arena frames. For speed use
//! AF_XDP; this backend is for any interface and for tests.
//!
//! [`AfPacketConfig::queues`] above one opens several sockets in one hashing fanout group
//! (`PACKET_FANOUT_HASH`): the kernel gives each connection's frames, both directions
//! hashed alike, to one socket, and the port serves the sockets as receive queues
//! ([`PortCaps::queues`](super::PortCaps::queues), [`Port::recv_queue`]): a threaded
//! runtime with as many preprocess replicas as the port has sockets feeds each replica from
//! a socket of its own. ([`any`](super::any) opens the default: one socket with a ring.)

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{Port, PortCaps};

pub mod ring;
use crate::buf::{Frame, FrameArena};
use crate::time::Instant;
use crate::wire::MacAddr;
use ring::RxRing;

/// Kernel socket buffer size asked for, each direction.
const SOCKET_BUFFER: i32 = 32 << 20;

/// Frames per `recvmmsg` or `sendmmsg` call at most (the headers live on the stack).
const BATCH: usize = 32;

/// Frames offered to a poll's first `recvmmsg`: most polls of a quiet or request-response
/// connection find at most one frame, and every frame offered is taken from the arena and
/// given back; the calls after a full one offer [`BATCH`].
const FIRST: usize = 4;

/// Counters of an AF_PACKET port, or of one of its sockets ([`AfPacketPort::queue_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AfPacketStats {
    /// Frames received.
    pub rx: u64,
    /// Frames sent.
    pub tx: u64,
    /// Frames skipped as the engine's own: outgoing frames the kernel loops back (kernels
    /// without `PACKET_IGNORE_OUTGOING`, where that includes the kernel's own), and frames
    /// from the wire whose source address is the engine's.
    pub rx_own: u64,
    /// Frames longer than an arena frame (or a ring's slot), dropped.
    pub rx_oversize: u64,
    /// Frames the kernel dropped because the socket's receive buffer (or its ring) was
    /// full (`PACKET_STATISTICS`).
    pub rx_kernel_drops: u64,
    /// Polls that found a frame waiting and no free arena frame to take it: the frame
    /// stays in the socket's buffer (or its ring) for a later poll (past that the kernel
    /// drops, counted in `rx_kernel_drops`).
    pub rx_no_buffer: u64,
    /// Receive calls that failed with something other than "nothing to read" (the
    /// interface gone down, say); for a socket with a receive ring, which makes no receive
    /// calls, errors the socket reported (read every [`ERROR_CHECK_EVERY`] empty polls).
    pub rx_errors: u64,
    /// Frames whose send failed, dropped (TCP sends their data again).
    pub tx_errors: u64,
    /// `recvmmsg` calls made (frames per call: `rx` over this); none with a receive ring.
    pub rx_calls: u64,
    /// `sendmmsg` calls made.
    pub tx_calls: u64,
}

impl AfPacketStats {
    /// Add `o`'s counts to these.
    fn add(&mut self, o: &AfPacketStats) {
        self.rx += o.rx;
        self.tx += o.tx;
        self.rx_own += o.rx_own;
        self.rx_oversize += o.rx_oversize;
        self.rx_kernel_drops += o.rx_kernel_drops;
        self.rx_no_buffer += o.rx_no_buffer;
        self.rx_errors += o.rx_errors;
        self.tx_errors += o.tx_errors;
        self.rx_calls += o.rx_calls;
        self.tx_calls += o.tx_calls;
    }
}

/// Most sockets one port opens (receive queues).
pub const MAX_QUEUES: u16 = 64;

/// How to open an AF_PACKET port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AfPacketConfig {
    /// Sockets, each a receive queue (1 to [`MAX_QUEUES`]); with more than one they form a
    /// fanout group that hashes each frame's flow (symmetric in addresses and ports, so
    /// both directions of a connection land on one socket, and its frames stay in order).
    pub queues: u16,
    /// Receive through a ring shared with the kernel ([`ring`]: 1024 slots of 2 KiB per
    /// socket, 2 MiB of memory; frames longer than a slot holds, about 1980 bytes, are
    /// dropped as oversized, as they would be for want of room in an arena frame) rather
    /// than by `recvmmsg`. A poll then makes no system call; on this project's machine it
    /// took a burst of frames 5-10 times faster and looked at an empty socket 30 times
    /// faster (`examples/af_packet_rx`). Without it, failed receive calls are counted
    /// (`rx_errors`: the interface gone down, say); with it there are none to fail.
    pub rx_ring: bool,
}

impl Default for AfPacketConfig {
    /// One socket, with a receive ring.
    fn default() -> Self {
        AfPacketConfig {
            queues: 1,
            rx_ring: true,
        }
    }
}

/// One socket of a port: a receive queue.
struct Queue {
    /// The socket's receive ring, where it has one (declared before `fd`: unmapped before
    /// the socket closes).
    ring: Option<RxRing>,
    fd: OwnedFd,
    /// Polls of the ring that found it empty since the socket's error was last read.
    empty_polls: u32,
    stats: AfPacketStats,
}

/// Empty polls of a receive ring between two reads of the socket's error (`SO_ERROR`).
/// An error (the interface gone down) makes the socket readable for `poll` until it is
/// read, and nothing but a receive call or this read clears it: unread, a thread that
/// sleeps on the socket would return at once, again and again.
pub const ERROR_CHECK_EVERY: u32 = 1024;

/// AF_PACKET sockets on one interface as a [`Port`]: one, or several in a fanout group.
pub struct AfPacketPort {
    /// Receive queues; the first also sends.
    queues: Vec<Queue>,
    mac: MacAddr,
    mtu: usize,
    /// The queue a [`Port::recv`] over all queues starts at (turns, for fairness).
    next: usize,
    /// Frames taken from the arena for one `recvmmsg`; empty between calls.
    spare: Vec<Frame>,
}

fn getsockopt_i32(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value = 0i32;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: `fd` is a socket this port opened; `value` and `len` are live locals of the
    // size the kernel is told.
    let r = unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut i32).cast(), &mut len) };
    if r == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn setsockopt_i32(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `fd` is a socket this port opened; the option value is a live `i32` whose size
    // is passed with it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A message header for `recvmmsg`/`sendmmsg` with one buffer and no address or control
/// data.
fn one_buffer(iov: *mut libc::iovec) -> libc::mmsghdr {
    // SAFETY: `mmsghdr` is plain old data: all zeroes is a valid value (null pointers, zero
    // lengths).
    let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
    h.msg_hdr.msg_iov = iov;
    h.msg_hdr.msg_iovlen = 1;
    h
}

impl AfPacketPort {
    /// Open interface `name` (in the calling thread's namespace) with one socket and its
    /// receive ring ([`AfPacketConfig::default`]); `mac` is the engine's MAC: frames that
    /// arrive with it as their source are our own, looped back, and skipped.
    pub fn open(name: &str, mac: MacAddr) -> io::Result<Self> {
        Self::open_with(name, mac, &AfPacketConfig::default())
    }

    /// Open interface `name` as `cfg` says. With `cfg.queues` sockets the port reports as
    /// many receive queues; queue `q` is socket `q`, and frames go out through the first.
    /// With one socket no fanout group is made.
    pub fn open_with(name: &str, mac: MacAddr, cfg: &AfPacketConfig) -> io::Result<Self> {
        let queues = cfg.queues;
        if queues == 0 || queues > MAX_QUEUES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{queues} queues: 1 to {MAX_QUEUES}"),
            ));
        }
        let iface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == name)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no interface {name}"))
            })?;
        let ifindex = i32::try_from(iface.index)
            .map_err(|_| io::Error::other(format!("interface index {} too large", iface.index)))?;
        let mut socks = Vec::with_capacity(queues as usize);
        for i in 0..queues {
            let (fd, ring) = Self::socket(ifindex, cfg.rx_ring, i == 0)?;
            socks.push(Queue {
                ring,
                fd,
                empty_polls: 0,
                stats: AfPacketStats::default(),
            });
        }
        if queues > 1 {
            Self::fanout(&socks)?;
            // Each socket received on its own from its bind to its join: what it holds
            // from then may be another socket's too, or belong to another socket's flows.
            for q in &mut socks {
                q.discard_queued();
            }
        }
        Ok(AfPacketPort {
            queues: socks,
            mac,
            mtu: 1500,
            next: 0,
            spare: Vec::with_capacity(BATCH),
        })
    }

    /// Join `socks` in a new hashing fanout group: the first asks the kernel for an unused
    /// group id, the others join it by that id.
    fn fanout(socks: &[Queue]) -> io::Result<()> {
        let hash = libc::PACKET_FANOUT_HASH;
        // Outgoing frames skipped by the group as a whole: the sockets' own
        // `PACKET_IGNORE_OUTGOING` does not apply to a group's frames. Linux >= 6.2; older
        // kernels take the flag and ignore it, and `recv` skips our frames.
        let flags = libc::PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
        let Some(first) = socks.first().map(|q| q.fd.as_raw_fd()) else {
            return Ok(());
        };
        let v = (hash | flags | libc::PACKET_FANOUT_FLAG_UNIQUEID) << 16;
        setsockopt_i32(first, libc::SOL_PACKET, libc::PACKET_FANOUT, v as i32)?;
        // The group's id in the low 16 bits.
        let id = getsockopt_i32(first, libc::SOL_PACKET, libc::PACKET_FANOUT)? as u32 & 0xffff;
        for q in socks.iter().skip(1) {
            let v = id | (hash | flags) << 16;
            setsockopt_i32(
                q.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_FANOUT,
                v as i32,
            )?;
        }
        Ok(())
    }

    /// One socket bound to interface `ifindex`, its buffers sized (the send buffer only
    /// for the socket that `sends`, the receive buffer only without a ring), promiscuous;
    /// with its receive ring mapped if `ring`.
    fn socket(ifindex: i32, ring: bool, sends: bool) -> io::Result<(OwnedFd, Option<RxRing>)> {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // Protocol 0: the socket receives nothing until it is bound to its interface below
        // (with `ETH_P_ALL` here it would queue every interface's frames until then).
        // SAFETY: plain socket(2) call; the result is checked below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor just opened and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sizes = [
            (!ring, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (sends, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ];
        for (_, force, plain) in sizes.into_iter().filter(|s| s.0) {
            // The forcing variant needs CAP_NET_ADMIN; without it the plain one is capped by
            // net.core.[rw]mem_max, which is still better than the default.
            if setsockopt_i32(raw, libc::SOL_SOCKET, force, SOCKET_BUFFER).is_err() {
                let _ = setsockopt_i32(raw, libc::SOL_SOCKET, plain, SOCKET_BUFFER);
            }
        }
        // Linux >= 4.20; older kernels loop our frames back and `recv` skips them.
        let _ = setsockopt_i32(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1);
        // Before the bind: the first frames land in the ring.
        let ring = if ring { Some(RxRing::map(raw)?) } else { None };
        // SAFETY: `sockaddr_ll` is plain old data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex;
        // SAFETY: `addr` is a live `sockaddr_ll` whose size is passed with it.
        let r = unsafe {
            libc::bind(
                raw,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // Promiscuous while the socket is open (the kernel undoes it at close): the engine's
        // MAC need not be the interface's, and a NIC filters unicast frames to other MACs.
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        // SAFETY: `mreq` is a live `packet_mreq` whose size is passed with it.
        let r = unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&mreq as *const libc::packet_mreq).cast(),
                std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((fd, ring))
    }

    /// One `recvmmsg` on socket `q` into up to `want` (at most [`BATCH`]) arena frames;
    /// returns how many frames it took off the socket, those it dropped included (0 when
    /// nothing waits or the arena is out of frames).
    fn recv_batch(
        &mut self,
        q: usize,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        want: usize,
    ) -> usize {
        let Some(queue) = self.queues.get_mut(q) else {
            return 0;
        };
        // (Empty unless a panic left frames here: give them back rather than misuse them.)
        arena.free_all(&mut self.spare);
        let want = want.min(BATCH).min(arena.free_frames());
        let got = if want == 0 {
            0
        } else {
            arena.alloc_burst(want, &mut self.spare)
        };
        if got == 0 {
            if frame_waits(&queue.fd) {
                queue.stats.rx_no_buffer += 1;
            }
            return 0;
        }
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        for (v, f) in iov.iter_mut().zip(self.spare.iter_mut()) {
            let buf = arena.buf_mut(f);
            v.iov_base = buf.as_mut_ptr().cast();
            v.iov_len = buf.len();
        }
        // SAFETY: `sockaddr_ll` is plain old data; all zeroes is a valid value.
        let mut from: [libc::sockaddr_ll; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] =
            std::array::from_fn(|i| one_buffer(&mut iov[i] as *mut libc::iovec));
        for (h, a) in hdrs.iter_mut().zip(from.iter_mut()) {
            h.msg_hdr.msg_name = (a as *mut libc::sockaddr_ll).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        }
        queue.stats.rx_calls += 1;
        // SAFETY: the first `got` headers each name one live buffer: the writable rest of a
        // frame this call took from the arena (no one else holds those frames, and the
        // arena's region does not move), and a live `sockaddr_ll` with its size; the kernel
        // writes no more than those lengths and returns how many headers it filled.
        let r = unsafe {
            libc::recvmmsg(
                queue.fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                got as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let filled = match usize::try_from(r) {
            Ok(filled) => filled.min(got),
            Err(_) => {
                if io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
                    queue.stats.rx_errors += 1;
                }
                0
            }
        };
        let mut n = 0;
        for (i, mut f) in self.spare.drain(..filled).enumerate() {
            let h = &hdrs[i];
            let own = from[i].sll_pkttype == libc::PACKET_OUTGOING;
            let len = h.msg_len as usize;
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > iov[i].iov_len {
                queue.stats.rx_oversize += 1;
                arena.free(f);
                continue;
            }
            f.set_len(len);
            if own || (len >= 12 && arena.data(&f)[6..12] == self.mac.0) {
                queue.stats.rx_own += 1;
                arena.free(f);
                continue;
            }
            out.push(f);
            n += 1;
        }
        arena.free_all(&mut self.spare);
        queue.stats.rx += n as u64;
        filled
    }

    /// Counters of the whole port (every socket's summed). Reading them also collects the
    /// kernel's drop counts since the last read.
    pub fn stats(&mut self) -> AfPacketStats {
        let mut sum = AfPacketStats::default();
        for s in self.queue_stats() {
            sum.add(&s);
        }
        sum
    }

    /// Counters of each socket, by receive queue (sends count on queue 0). Reading them
    /// also collects the kernel's drop counts since the last read.
    pub fn queue_stats(&mut self) -> Vec<AfPacketStats> {
        self.queues
            .iter_mut()
            .map(|q| {
                q.collect_drops();
                q.stats
            })
            .collect()
    }

    /// Receive on queue `q` until `max` frames or the socket is empty; returns how many
    /// frames it appended to `out`.
    fn recv_from(
        &mut self,
        q: usize,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        if self.queues.get(q).is_some_and(|s| s.ring.is_some()) {
            return self.recv_ring(q, arena, out, max);
        }
        let before = out.len();
        // Never take a frame off the socket without a place to put it: what stays in the
        // socket is read on a later poll.
        let (mut left, mut offer) = (max, FIRST);
        while left > 0 {
            let want = left.min(offer);
            let read = self.recv_batch(q, arena, out, want);
            // Fewer than offered: the socket is empty (or the arena short) for now.
            if read < want {
                break;
            }
            left -= read;
            offer = BATCH;
        }
        out.len() - before
    }
}

impl AfPacketPort {
    /// Take up to `max` frames off queue `q`'s receive ring (those dropped included),
    /// copying the others into arena frames; returns how many frames it appended to `out`.
    /// Frames stay in the ring while the arena has no frame for them.
    fn recv_ring(
        &mut self,
        q: usize,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        let Some(Queue {
            ring: Some(ring),
            fd,
            empty_polls,
            stats,
        }) = self.queues.get_mut(q)
        else {
            return 0;
        };
        // (Empty unless a panic left frames here: give them back rather than misuse them.)
        arena.free_all(&mut self.spare);
        let before = out.len();
        let mut left = max;
        while left > 0 {
            let ready = ring.waiting(left.min(BATCH));
            if ready == 0 {
                if out.len() == before {
                    *empty_polls += 1;
                    if *empty_polls >= ERROR_CHECK_EVERY {
                        *empty_polls = 0;
                        if getsockopt_i32(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_ERROR)
                            .is_ok_and(|e| e != 0)
                        {
                            stats.rx_errors += 1;
                        }
                    }
                }
                break;
            }
            let got = arena.alloc_burst(ready.min(arena.free_frames()), &mut self.spare);
            if got == 0 {
                stats.rx_no_buffer += 1;
                break;
            }
            for mut f in self.spare.drain(..) {
                let Some(w) = ring.peek() else {
                    arena.free(f);
                    continue;
                };
                let buf = arena.buf_mut(&mut f);
                let len = w.data.len();
                if len < w.wire_len || len > buf.len() {
                    stats.rx_oversize += 1;
                    arena.free(f);
                } else if w.pkttype == libc::PACKET_OUTGOING
                    || (len >= 12 && w.data[6..12] == self.mac.0)
                {
                    stats.rx_own += 1;
                    arena.free(f);
                } else {
                    buf[..len].copy_from_slice(w.data);
                    f.set_len(len);
                    out.push(f);
                    stats.rx += 1;
                }
                ring.release();
            }
            left -= got;
            if got < ready {
                break;
            }
        }
        out.len() - before
    }
}

/// Whether a frame waits in socket `fd` (a peek that takes nothing off it).
fn frame_waits(fd: &OwnedFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: one writable byte, a live local; `MSG_PEEK` leaves the frame queued.
    let r = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    };
    r >= 0
}

impl Queue {
    /// Throw away every frame waiting in the socket (or its ring).
    fn discard_queued(&mut self) {
        if let Some(ring) = self.ring.as_mut() {
            // At most a ring's worth: the kernel may be filling it meanwhile.
            for _ in 0..ring::SLOTS {
                if ring.peek().is_none() {
                    break;
                }
                ring.release();
            }
            return;
        }
        let mut byte = 0u8;
        // A bounded number: the kernel may be queueing more meanwhile.
        for _ in 0..(1 << 16) {
            // SAFETY: one writable byte, a live local; the frame is taken off the socket
            // (and cut to that byte).
            let r = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    (&mut byte as *mut u8).cast(),
                    1,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            if r < 0 {
                break;
            }
        }
    }

    /// Add the kernel's drop count since the last read to the counters.
    fn collect_drops(&mut self) {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `fd` is this port's open socket; `st` and `len` are live locals of the size
        // the kernel is told.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if r == 0 {
            self.stats.rx_kernel_drops += u64::from(st.tp_drops);
        }
    }
}

impl Port for AfPacketPort {
    fn recv(
        &mut self,
        _now: Instant,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        let n = self.queues.len();
        let got = super::recv_each_queue(n, self.next, max, |q, left| {
            self.recv_from(q, arena, out, left)
        });
        self.next = (self.next + 1) % n.max(1);
        got
    }

    fn recv_queue(
        &mut self,
        queue: u16,
        _now: Instant,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        self.recv_from(queue as usize, arena, out, max)
    }

    fn send(&mut self, _now: Instant, arena: &FrameArena, frames: &mut Vec<Frame>) -> usize {
        let Some(queue) = self.queues.first_mut() else {
            arena.free_all(frames);
            return 0;
        };
        let mut sent = 0;
        let mut at = 0;
        while at < frames.len() {
            let k = (frames.len() - at).min(BATCH);
            let mut iov = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; BATCH];
            for (v, f) in iov.iter_mut().zip(&frames[at..at + k]) {
                let d = arena.data(f);
                v.iov_base = d.as_ptr().cast_mut().cast();
                v.iov_len = d.len();
            }
            let mut hdrs: [libc::mmsghdr; BATCH] =
                std::array::from_fn(|i| one_buffer(&mut iov[i] as *mut libc::iovec));
            queue.stats.tx_calls += 1;
            // SAFETY: the first `k` headers each name one live buffer, the data of a frame
            // in `frames`, which this call holds borrowed (the kernel only reads them), and
            // no address (the socket is bound to its interface).
            let r = unsafe {
                libc::sendmmsg(
                    queue.fd.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    k as libc::c_uint,
                    0,
                )
            };
            match usize::try_from(r) {
                Ok(done) if done > 0 => {
                    let done = done.min(k);
                    sent += done;
                    at += done;
                }
                // The first frame of the batch failed: drop it (TCP sends it again) and go
                // on with the next, so that the loop always moves.
                _ => {
                    queue.stats.tx_errors += 1;
                    at += 1;
                }
            }
        }
        arena.free_all(frames);
        queue.stats.tx += sent as u64;
        sent
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn capabilities(&self) -> PortCaps {
        PortCaps {
            queues: self.queues.len() as u16,
            ..PortCaps::default()
        }
    }

    fn wakeup_fds(&self) -> Vec<RawFd> {
        self.queues.iter().map(|q| q.fd.as_raw_fd()).collect()
    }
}
