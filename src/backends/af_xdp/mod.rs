//! AF_XDP backend through `xdpilone` (feature `af_xdp`, Linux).
//!
//! The port owns the engine's [`FrameArena`] and registers it with the kernel as the socket's
//! UMEM: a frame index is a UMEM chunk, so a received frame is already in the arena and a
//! frame to send is handed to the kernel by its offset. The crate loads its own XDP program
//! (a few hand-assembled instructions, through the `bpf()` system call, no C toolchain): it
//! redirects IPv4 packets addressed to the engine and ARP packets asking for or answering the
//! engine's address to the socket and passes everything else to the kernel's stack, so the
//! host keeps working on the same interface. The program is attached with a BPF link, which
//! the kernel removes when the port is dropped (or the process dies).
//!
//! With [`XdpConfig::queues`] above one, the port opens one socket per device queue, all
//! sharing the arena as their UMEM (each with its own fill and completion rings), and the
//! program steers each packet to the socket of the queue it arrived on, so the device's RSS
//! spreads flows over the sockets. The port receives from each queue in turn, or from one
//! queue at a time through [`Port::recv_queue`] (the threaded runtime gives each
//! preprocess replica a queue that way), and sends each flow on one socket.
//!
//! Copy mode works on every driver (veth included); zero-copy is asked for with
//! [`XdpConfig::zero_copy`] where the driver offers it. The kernel is woken only when a
//! receive poll found nothing and the fill ring asks for it, and after transmissions when the
//! transmit ring asks for it.
//!
//! In copy mode the kernel writes a received frame 256 bytes into its chunk
//! (`XDP_PACKET_HEADROOM`); the port moves it to the chunk's start so that every frame handle
//! in the engine starts at offset zero.

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;

use xdpilone::xdp::XdpDesc;
use xdpilone::{DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig};

use super::Port;
use crate::buf::{Frame, FrameArena, FRAME_SIZE};
use crate::time::Instant;

/// Ring sizes (descriptors) of the fill, completion, RX and TX rings.
const RING: u32 = 2048;

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// Generic XDP (`XDP_FLAGS_SKB_MODE`): every driver, after the kernel built an skb.
    Generic,
    /// Native XDP in the driver (`XDP_FLAGS_DRV_MODE`), where the driver supports it.
    Native,
}

/// Settings of an AF_XDP port.
#[derive(Clone, Debug)]
pub struct XdpConfig {
    /// Interface name.
    pub ifname: String,
    /// The engine's IPv4 address: packets for it (and ARP about it) are redirected.
    pub ip: Ipv4Addr,
    /// First device queue to bind to.
    pub queue: u32,
    /// Device queues to serve, from `queue` on: one socket per queue, all sharing the
    /// arena as their UMEM; the XDP program steers each packet to the socket of the queue
    /// it arrived on (RSS decides which).
    pub queues: u32,
    /// Frames in the arena (the UMEM).
    pub frames: usize,
    /// Where the XDP program runs.
    pub mode: XdpMode,
    /// Ask for zero-copy (fails on drivers without it, such as veth).
    pub zero_copy: bool,
}

impl XdpConfig {
    /// Copy mode, generic XDP, queue 0, 16384 frames.
    pub fn new(ifname: &str, ip: Ipv4Addr) -> Self {
        XdpConfig {
            ifname: ifname.to_string(),
            ip,
            queue: 0,
            queues: 1,
            frames: 16384,
            mode: XdpMode::Generic,
            zero_copy: false,
        }
    }
}

/// Counters of an AF_XDP port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AfXdpStats {
    /// Frames received.
    pub rx: u64,
    /// Frames sent (handed to the TX ring).
    pub tx: u64,
    /// Transmissions the kernel reported complete.
    pub tx_completed: u64,
    /// Frames dropped because the TX ring stayed full.
    pub tx_ring_full: u64,
    /// Empty frames handed to `send`, dropped.
    pub tx_empty: u64,
    /// Descriptors naming a chunk the port did not hand to the kernel (never expected).
    pub bad_descriptors: u64,
    /// Wake-up system calls made for receiving.
    pub rx_wakeups: u64,
    /// Wake-up system calls made for transmitting.
    pub tx_wakeups: u64,
    /// Packets the kernel dropped for want of fill-ring frames or RX-ring room
    /// (`XDP_STATISTICS`, updated by [`AfXdpPort::stats`]).
    pub kernel_rx_dropped: u64,
    /// Times the kernel found the fill ring empty (`XDP_STATISTICS`).
    pub fill_ring_empty: u64,
    /// Invalid descriptors the kernel saw on RX or TX (`XDP_STATISTICS`).
    pub kernel_invalid: u64,
}

/// Counters of one device queue of an AF_XDP port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpQueueStats {
    /// Frames received on this queue.
    pub rx: u64,
    /// Frames sent through this queue's socket.
    pub tx: u64,
}

/// One socket: the rings of one device queue.
struct XskQueue {
    id: u32,
    rx: RingRx,
    tx: RingTx,
    device: DeviceQueue,
    /// Frames in this queue's fill ring.
    filled: usize,
    stats: XdpQueueStats,
}

/// How the kernel holds a lent chunk: on queue `q`'s fill ring (it comes back on that
/// queue's RX ring) or in its TX ring (it comes back on that queue's completion ring).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lend {
    Fill(usize),
    Tx(usize),
}

/// Take back chunk `i` from `lent` if it was lent as `how`; a descriptor naming a chunk
/// lent otherwise (a TX chunk still in flight on an RX ring, a fill chunk on a completion
/// ring, another queue's) or not lent leaves it where it is (`None`).
fn take_lent(lent: &mut [Option<(Frame, Lend)>], i: usize, how: Lend) -> Option<Frame> {
    let slot = lent.get_mut(i)?;
    if slot.as_ref().is_some_and(|(_, l)| *l == how) {
        slot.take().map(|(f, _)| f)
    } else {
        None
    }
}

/// AF_XDP sockets, one per device queue, as one [`Port`].
pub struct AfXdpPort {
    // Field order is drop order: the link detaches the program before the sockets close,
    // and the rings and UMEM go before the arena they map.
    _prog: bpf::XdpProgram,
    queues: Vec<XskQueue>,
    _umem: Umem,
    /// Chunks the kernel holds (fill ring or TX in flight), by frame index, with how and
    /// for which queue. They are not given back to the arena when the port is dropped: the
    /// kernel may write into a fill ring chunk until the socket is closed, and the arena
    /// goes with the engine anyway.
    lent: Vec<Option<(Frame, Lend)>>,
    arena: Arc<FrameArena>,
    mtu: usize,
    stats: AfXdpStats,
    next_rx: usize,
    /// Frames to send, sorted by queue.
    tx_parts: Vec<Vec<Frame>>,
}

// SAFETY: the UMEM and ring handles hold raw pointers into mappings that are valid for the
// whole process, not tied to a thread; the port is their only user and `&mut self` methods
// give one thread at a time access, which is what moving the port between threads needs.
unsafe impl Send for AfXdpPort {}

fn errno(e: xdpilone::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.get_raw())
}

/// An error of a set-up step for device queue `queue`, with the step named.
fn at(e: xdpilone::Errno, step: &str, queue: u32) -> io::Error {
    let e = errno(e);
    io::Error::new(e.kind(), format!("AF_XDP {step} for queue {queue}: {e}"))
}

impl AfXdpPort {
    /// Open an AF_XDP socket on `cfg.ifname` (in the calling thread's namespace), make its
    /// arena, and load and attach the XDP program.
    ///
    /// The kernel releases a closed socket's hold on its device queue a moment later (from
    /// a work queue), so a queue found busy is tried again for up to a second before the
    /// `EBUSY` error is returned.
    pub fn open(cfg: &XdpConfig) -> io::Result<Self> {
        let mut tries = 0;
        loop {
            match Self::open_once(cfg) {
                Err(e) if e.kind() == io::ErrorKind::ResourceBusy && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => return r,
            }
        }
    }

    fn open_once(cfg: &XdpConfig) -> io::Result<Self> {
        if cfg.frames < 128 * cfg.queues.max(1) as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} frames are too few for {} queues (at least 128 per queue)",
                    cfg.frames, cfg.queues
                ),
            ));
        }
        let arena = Arc::new(
            FrameArena::new(cfg.frames)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?,
        );
        let region = std::ptr::slice_from_raw_parts_mut(arena.base_ptr(), arena.region_len());
        let region = NonNull::new(region).expect("arena region is not null");
        let umem_cfg = UmemConfig {
            fill_size: RING,
            complete_size: RING,
            frame_size: FRAME_SIZE as u32,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: the region is the arena's page-aligned allocation; `arena` is kept in the
        // port and outlives the UMEM, the rings and the socket (field order). The kernel
        // writes only into chunks the port put on the fill ring, whose frame handles the
        // port holds (`lent`) so that nothing else reads or writes them meanwhile.
        let umem = unsafe { Umem::new(umem_cfg, region) }.map_err(errno)?;
        let name = CString::new(cfg.ifname.as_str())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"))?;
        let mut info = IfInfo::invalid();
        info.from_name(&name).map_err(errno)?;
        let ifindex = info.ifindex();
        let mut queues = Vec::new();
        for id in cfg.queue..cfg.queue + cfg.queues.max(1) {
            info.set_queue(id);
            // The first queue's socket is the UMEM's own; the others share it.
            let sock = if queues.is_empty() {
                Socket::with_shared(&info, &umem)
            } else {
                Socket::new(&info)
            }
            .map_err(|e| at(e, "socket", id))?;
            // The socket must not live on in child processes: a child holding it would keep
            // the device queue bound after the port is gone.
            // SAFETY: F_SETFD on a descriptor this port owns; no memory is passed.
            let r = unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
            let device = umem
                .fq_cq(&sock)
                .map_err(|e| at(e, "fill and completion rings", id))?;
            // Sockets sharing the first one's UMEM take its mode: the kernel refuses mode
            // flags on them.
            let bind_flags = if !queues.is_empty() {
                0
            } else if cfg.zero_copy {
                SocketConfig::XDP_BIND_NEED_WAKEUP | SocketConfig::XDP_BIND_ZEROCOPY
            } else {
                SocketConfig::XDP_BIND_NEED_WAKEUP | SocketConfig::XDP_BIND_COPY
            };
            let user = umem
                .rx_tx(
                    &sock,
                    &SocketConfig {
                        rx_size: NonZeroU32::new(RING),
                        tx_size: NonZeroU32::new(RING),
                        bind_flags,
                    },
                )
                .map_err(|e| at(e, "RX and TX rings", id))?;
            let rx = user.map_rx().map_err(errno)?;
            let tx = user.map_tx().map_err(errno)?;
            umem.bind(&user).map_err(|e| at(e, "bind", id))?;
            queues.push(XskQueue {
                id,
                rx,
                tx,
                device,
                filled: 0,
                stats: XdpQueueStats::default(),
            });
        }
        let sockets: Vec<(u32, RawFd)> = queues.iter().map(|q| (q.id, q.rx.as_raw_fd())).collect();
        let prog = bpf::XdpProgram::load(cfg.ip, ifindex, &sockets, cfg.mode)?;
        let nq = queues.len();
        let mut port = AfXdpPort {
            _prog: prog,
            queues,
            _umem: umem,
            lent: (0..arena.capacity()).map(|_| None).collect(),
            arena,
            mtu: 1500,
            stats: AfXdpStats::default(),
            next_rx: 0,
            tx_parts: (0..nq).map(|_| Vec::new()).collect(),
        };
        for q in 0..nq {
            port.refill(q);
        }
        Ok(port)
    }

    /// Counters; reading them also fetches the kernel's socket statistics.
    pub fn stats(&mut self) -> AfXdpStats {
        let (mut dropped, mut empty, mut invalid) = (0, 0, 0);
        for q in &self.queues {
            if let Ok(s) = q.device.statistics_v2() {
                dropped += s.rx_dropped + s.rx_ring_full;
                empty += s.rx_fill_ring_empty_descs;
                invalid += s.rx_invalid_descs + s.tx_invalid_descs;
            }
        }
        self.stats.kernel_rx_dropped = dropped;
        self.stats.fill_ring_empty = empty;
        self.stats.kernel_invalid = invalid;
        self.stats
    }

    /// Counters of each device queue, by queue id.
    pub fn queue_stats(&self) -> Vec<(u32, XdpQueueStats)> {
        self.queues.iter().map(|q| (q.id, q.stats)).collect()
    }

    /// Put free arena frames on queue `q`'s fill ring, up to its size.
    fn refill(&mut self, q: usize) {
        // At most half of the arena waits in the fill rings; the rest is the engine's.
        let target = (RING as usize).min(self.arena.capacity() / (2 * self.queues.len()));
        let queue = &mut self.queues[q];
        let want = target.saturating_sub(queue.filled);
        let free = self.arena.free_frames();
        let want = want.min(free);
        if want == 0 {
            return;
        }
        let mut w = queue.device.fill(want as u32);
        let room = w.capacity() as usize;
        let mut placed = 0;
        while placed < room {
            let Some(f) = self.arena.alloc() else { break };
            if !w.insert_once(f.index() as u64 * FRAME_SIZE as u64) {
                self.arena.free(f);
                break;
            }
            let i = f.index() as usize;
            self.lent[i] = Some((f, Lend::Fill(q)));
            placed += 1;
        }
        w.commit();
        queue.filled += placed;
    }

    /// Take back the frames of finished transmissions of queue `q`.
    fn reap_completions(&mut self, q: usize) {
        let mut r = self.queues[q].device.complete(RING);
        let mut n = 0;
        while let Some(addr) = r.read() {
            let i = (addr / FRAME_SIZE as u64) as usize;
            match take_lent(&mut self.lent, i, Lend::Tx(q)) {
                Some(f) => self.arena.free(f),
                None => self.stats.bad_descriptors += 1,
            }
            n += 1;
        }
        r.release();
        self.stats.tx_completed += n;
    }

    /// Receive up to `max` frames from queue `q`.
    fn recv_from(&mut self, q: usize, out: &mut Vec<Frame>, max: usize) -> usize {
        self.reap_completions(q);
        let mut n = 0;
        {
            let queue = &mut self.queues[q];
            let mut r = queue.rx.receive(max as u32);
            while let Some(d) = r.read() {
                let i = (d.addr / FRAME_SIZE as u64) as usize;
                let off = (d.addr % FRAME_SIZE as u64) as usize;
                let Some(mut f) = take_lent(&mut self.lent, i, Lend::Fill(q)) else {
                    self.stats.bad_descriptors += 1;
                    continue;
                };
                queue.filled = queue.filled.saturating_sub(1);
                let len = (d.len as usize).min(FRAME_SIZE - off);
                // The kernel wrote at `off` into the frame: start the data there (no copy);
                // an offset too large for a handle is moved to the front instead.
                f.set_len(0);
                if !f.set_headroom(off) {
                    f.set_headroom(0);
                    self.arena.buf_mut(&mut f).copy_within(off..off + len, 0);
                }
                f.set_len(len);
                out.push(f);
                n += 1;
            }
            r.release();
        }
        self.refill(q);
        let queue = &mut self.queues[q];
        // Transmissions a bounded wake-up budget left in the ring go out now.
        if queue.tx.pending() > 0 && queue.tx.needs_wakeup() {
            queue.tx.wake();
            self.stats.tx_wakeups += 1;
        }
        if n == 0 && queue.device.needs_wakeup() {
            queue.device.wake();
            self.stats.rx_wakeups += 1;
        }
        queue.stats.rx += n as u64;
        self.stats.rx += n as u64;
        n
    }

    /// Send the frames sorted to queue `q`.
    fn send_on(&mut self, q: usize) -> usize {
        let mut sent = 0;
        let mut rounds = 0;
        let mut frames = std::mem::take(&mut self.tx_parts[q]);
        let mut queue = frames.drain(..).peekable();
        while queue.peek().is_some() {
            self.reap_completions(q);
            let xsk = &mut self.queues[q];
            let mut w = xsk.tx.transmit(RING);
            let mut placed = 0;
            while let Some(f) = queue.next_if(|_| placed < w.capacity()) {
                if f.is_empty() {
                    // The kernel drops empty descriptors without completing them.
                    self.stats.tx_empty += 1;
                    self.arena.free(f);
                    continue;
                }
                let desc = XdpDesc {
                    addr: f.index() as u64 * FRAME_SIZE as u64 + f.headroom() as u64,
                    len: f.len() as u32,
                    options: 0,
                };
                if !w.insert_once(desc) {
                    self.stats.tx_ring_full += 1;
                    self.arena.free(f);
                    continue;
                }
                let i = f.index() as usize;
                self.lent[i] = Some((f, Lend::Tx(q)));
                placed += 1;
            }
            w.commit();
            drop(w);
            sent += placed as usize;
            // In copy mode each wake-up transmits a bounded batch (32 frames on current
            // kernels): wake while the kernel has descriptors left, within a bound.
            let mut budget = placed / 16 + 2;
            while budget > 0 && xsk.tx.pending() > 0 && xsk.tx.needs_wakeup() {
                xsk.tx.wake();
                self.stats.tx_wakeups += 1;
                budget -= 1;
            }
            rounds += 1;
            if rounds == 8 {
                // The kernel is not taking frames: what is left is dropped and counted.
                for f in queue.by_ref() {
                    self.stats.tx_ring_full += 1;
                    self.arena.free(f);
                }
            }
        }
        drop(queue);
        self.tx_parts[q] = frames;
        self.queues[q].stats.tx += sent as u64;
        sent
    }
}

impl Port for AfXdpPort {
    fn recv(
        &mut self,
        _now: Instant,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        debug_assert!(std::ptr::eq(arena, &*self.arena), "the port's own arena");
        let nq = self.queues.len();
        let got = super::recv_each_queue(nq, self.next_rx, max, |q, left| {
            self.recv_from(q, out, left)
        });
        self.next_rx = (self.next_rx + 1) % nq;
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
        debug_assert!(std::ptr::eq(arena, &*self.arena), "the port's own arena");
        if queue as usize >= self.queues.len() {
            return 0;
        }
        self.recv_from(queue as usize, out, max)
    }

    fn send(&mut self, _now: Instant, arena: &FrameArena, frames: &mut Vec<Frame>) -> usize {
        debug_assert!(std::ptr::eq(arena, &*self.arena), "the port's own arena");
        let nq = self.queues.len();
        for f in frames.drain(..) {
            let q = super::tx_queue_of(self.arena.data(&f), nq);
            self.tx_parts[q].push(f);
        }
        let mut sent = 0;
        for q in 0..nq {
            if !self.tx_parts[q].is_empty() {
                sent += self.send_on(q);
            } else {
                // A queue whose receive side was not polled still gets its transmissions
                // kicked.
                let xsk = &mut self.queues[q];
                if xsk.tx.pending() > 0 && xsk.tx.needs_wakeup() {
                    xsk.tx.wake();
                    self.stats.tx_wakeups += 1;
                }
            }
        }
        self.stats.tx += sent as u64;
        sent
    }

    fn capabilities(&self) -> super::PortCaps {
        super::PortCaps {
            tx_checksum_offload: false,
            queues: self.queues.len() as u16,
        }
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn arena(&self) -> Option<Arc<FrameArena>> {
        Some(self.arena.clone())
    }

    fn wakeup_fds(&self) -> Vec<RawFd> {
        self.queues.iter().map(|q| q.rx.as_raw_fd()).collect()
    }
}

// `struct bpf_insn` packs the destination register in the low nibble of its second byte
// as the instructions below are written: the little-endian layout.
#[cfg(target_endian = "big")]
compile_error!("the AF_XDP backend's XDP program is encoded for little-endian hosts");

mod bpf;

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel descriptor takes back only a chunk lent its way and to its queue: a TX
    /// chunk still in flight named on an RX ring (or a fill chunk on a completion ring)
    /// stays lent and is counted as bad, rather than handed to the engine while the kernel
    /// may still read or write it.
    #[test]
    fn a_descriptor_takes_back_only_a_chunk_lent_its_way() {
        let arena = FrameArena::new(8).unwrap();
        let f = arena.alloc().unwrap();
        let i = f.index() as usize;
        let mut lent: Vec<Option<(Frame, Lend)>> = (0..8).map(|_| None).collect();
        lent[i] = Some((f, Lend::Tx(0)));
        assert!(take_lent(&mut lent, i, Lend::Fill(0)).is_none());
        assert!(take_lent(&mut lent, i, Lend::Tx(1)).is_none());
        assert!(take_lent(&mut lent, 99, Lend::Tx(0)).is_none());
        let f = take_lent(&mut lent, i, Lend::Tx(0)).expect("lent for TX on queue 0");
        assert!(take_lent(&mut lent, i, Lend::Tx(0)).is_none(), "taken once");
        arena.free(f);
        assert_eq!(arena.in_use(), 0);
    }
}
