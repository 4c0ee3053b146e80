//! AF_PACKET backend through `pnet_datalink` (feature `af_packet`, Linux).
//!
//! A raw layer-2 socket bound to one interface, polled without blocking. The port creates the
//! socket itself so that it can size the kernel's buffers (a default receive buffer holds
//! fewer than a hundred full-size frames, and what overflows it is lost) and ask the kernel
//! not to loop our own transmissions back; `pnet_datalink` then binds it and moves frames.
//! For speed use AF_XDP; this backend is for any interface and for tests.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use pnet_datalink::{self, Channel, Config, DataLinkReceiver, DataLinkSender};

use super::Port;
use crate::buf::{Frame, FrameArena, FRAME_SIZE};
use crate::time::Instant;
use crate::wire::MacAddr;

/// Kernel socket buffer size asked for, each direction.
const SOCKET_BUFFER: i32 = 32 << 20;

/// Counters of an AF_PACKET port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AfPacketStats {
    /// Frames received.
    pub rx: u64,
    /// Frames sent.
    pub tx: u64,
    /// Own transmissions seen on receive and skipped (kernels without
    /// `PACKET_IGNORE_OUTGOING`).
    pub rx_own: u64,
    /// Frames longer than an arena frame, dropped.
    pub rx_oversize: u64,
    /// Frames the kernel dropped because the socket's receive buffer was full
    /// (`PACKET_STATISTICS`).
    pub rx_kernel_drops: u64,
    /// Frames read while another thread took the last free arena frame, dropped.
    pub rx_no_buffer: u64,
    /// Sends that failed.
    pub tx_errors: u64,
}

/// An AF_PACKET socket as a [`Port`].
pub struct AfPacketPort {
    tx: Box<dyn DataLinkSender>,
    rx: Box<dyn DataLinkReceiver>,
    fd: RawFd,
    mac: MacAddr,
    mtu: usize,
    stats: AfPacketStats,
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

impl AfPacketPort {
    /// Open interface `name` (in the calling thread's namespace); `mac` is the engine's MAC,
    /// used to skip our own frames where the kernel cannot.
    pub fn open(name: &str, mac: MacAddr) -> io::Result<Self> {
        let iface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == name)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no interface {name}"))
            })?;
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain socket(2) call; the result is checked below.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            // The forcing variant needs CAP_NET_ADMIN; without it the plain one is capped by
            // net.core.[rw]mem_max, which is still better than the default.
            if setsockopt_i32(fd, libc::SOL_SOCKET, force, SOCKET_BUFFER).is_err() {
                let _ = setsockopt_i32(fd, libc::SOL_SOCKET, plain, SOCKET_BUFFER);
            }
        }
        // Linux >= 4.20; older kernels loop our frames back and `recv` skips them by MAC.
        let _ = setsockopt_i32(fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1);
        let cfg = Config {
            read_timeout: Some(Duration::ZERO),
            write_buffer_size: 1 << 16,
            read_buffer_size: 1 << 16,
            socket_fd: Some(fd),
            ..Config::default()
        };
        // On error pnet closes the socket it was handed.
        match pnet_datalink::channel(&iface, cfg)? {
            Channel::Ethernet(tx, rx) => Ok(AfPacketPort {
                tx,
                rx,
                fd,
                mac,
                mtu: 1500,
                stats: AfPacketStats::default(),
            }),
            _ => Err(io::Error::other("not an Ethernet channel")),
        }
    }

    /// Counters. Reading them also collects the kernel's drop count since the last read.
    pub fn stats(&mut self) -> AfPacketStats {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `fd` stays open while `rx`/`tx` live; `st` and `len` are live locals of the
        // size the kernel is told.
        let r = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if r == 0 {
            self.stats.rx_kernel_drops += u64::from(st.tp_drops);
        }
        self.stats
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
        let mut n = 0;
        // Never take a frame off the socket without a place to put it: what stays in the
        // socket is read on a later poll, what is read and not stored is lost.
        let max = max.min(arena.free_frames());
        while n < max {
            let data = match self.rx.next() {
                Ok(d) => d,
                Err(_) => break,
            };
            if data.len() >= 12 && data[6..12] == self.mac.0 {
                self.stats.rx_own += 1;
                continue;
            }
            if data.len() > FRAME_SIZE - crate::buf::HEADROOM {
                self.stats.rx_oversize += 1;
                continue;
            }
            let Some(f) = arena.alloc_copy(data) else {
                self.stats.rx_no_buffer += 1;
                break;
            };
            out.push(f);
            n += 1;
        }
        self.stats.rx += n as u64;
        n
    }

    fn send(&mut self, _now: Instant, arena: &FrameArena, frames: &mut Vec<Frame>) -> usize {
        let mut sent = 0;
        for f in frames.drain(..) {
            match self.tx.send_to(arena.data(&f), None) {
                Some(Ok(())) => sent += 1,
                _ => self.stats.tx_errors += 1,
            }
            arena.free(f);
        }
        self.stats.tx += sent as u64;
        sent
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn wakeup_fds(&self) -> Vec<RawFd> {
        vec![self.fd]
    }
}
