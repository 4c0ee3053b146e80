//! Backends: where frames come from and go to.
//!
//! A backend is a [`Port`]: it fills a burst of arena frames with received frames and takes
//! a burst of frames to send. The engine calls it once per burst, so backends batch their
//! system calls (or make none).
//!
//! | backend | feature | status |
//! |---|---|---|
//! | [`mem`] | always | in-process link with seeded impairments; also a `smoltcp` device |
//! | [`arena_link`] | always | zero-copy in-process link: two engines share one arena and pass frame handles |
//! | [`pcap`] | always | wraps any port and writes its traffic to a pcap file |
//! | [`trace`] | always | plays the clients of TCP connections from pre-built frames, to measure a server engine alone |
//! | `tap` | `tap` | TAP device through `/dev/net/tun` |
//! | `af_packet` | `af_packet` | AF_PACKET socket: receives from a ring shared with the kernel (or a burst per `recvmmsg` into arena frames), sends a burst per `sendmmsg`; several in a fanout group as receive queues |
//! | `af_xdp` | `af_xdp` | AF_XDP sockets through `xdpilone` (one per queue), UMEM = the frame arena, own XDP program |
//! | `dpdk` | `dpdk` | any DPDK ethdev (queue pairs with RSS), the frame arena as the mempool's buffers |
//!
//! On Linux, [`wait`] lets a thread with nothing to do sleep until a port's descriptors
//! are readable or the application rings. With any Linux feature, `netns` opens ports
//! inside a network namespace and `any` picks a backend at run time.
#![allow(unsafe_code)]

#[cfg(feature = "af_packet")]
pub mod af_packet;
#[cfg(feature = "af_xdp")]
pub mod af_xdp;
#[cfg(any(
    feature = "tap",
    feature = "af_packet",
    feature = "af_xdp",
    feature = "dpdk"
))]
pub mod any;
pub mod arena_link;
#[cfg(feature = "dpdk")]
pub mod dpdk;
#[cfg(feature = "ebpf")]
pub mod ebpf;
pub mod mem;
#[cfg(any(
    feature = "tap",
    feature = "af_packet",
    feature = "af_xdp",
    feature = "dpdk"
))]
pub mod netns;
pub mod pcap;
#[cfg(feature = "tap")]
pub mod tap;
pub mod trace;
#[cfg(target_os = "linux")]
pub mod wait;

use std::sync::Arc;

use crate::buf::{Frame, FrameArena};
use crate::time::Instant;

/// What a port does for the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortCaps {
    /// The port (or its device) fills in IPv4 and TCP checksums of frames it sends: the
    /// engine leaves them unfilled.
    pub tx_checksum_offload: bool,
    /// Receive queues the port serves (each may feed one preprocess replica).
    pub queues: u16,
}

impl Default for PortCaps {
    /// No offloads, one queue.
    fn default() -> Self {
        PortCaps {
            tx_checksum_offload: false,
            queues: 1,
        }
    }
}

/// A network port: a source and sink of Ethernet frames.
pub trait Port: Send {
    /// Receive up to `max` frames into `out` (frames come from `arena`). Returns how many.
    fn recv(&mut self, now: Instant, arena: &FrameArena, out: &mut Vec<Frame>, max: usize)
        -> usize;

    /// Send every frame in `frames`, leaving it empty; the port gives the frames back to
    /// `arena` once they are on the wire. Returns how many were sent (the rest were dropped
    /// and counted by the port).
    fn send(&mut self, now: Instant, arena: &FrameArena, frames: &mut Vec<Frame>) -> usize;

    /// Receive up to `max` frames from receive queue `queue` only (see
    /// [`PortCaps::queues`]). The threaded runtime calls it when the port has one queue per
    /// preprocess replica, so that each replica gets the bursts of its own queue. The
    /// default serves single-queue ports: queue 0 is [`recv`](Self::recv), others are empty.
    fn recv_queue(
        &mut self,
        queue: u16,
        now: Instant,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        if queue == 0 {
            self.recv(now, arena, out, max)
        } else {
            0
        }
    }

    /// The IP MTU of the link.
    fn mtu(&self) -> usize {
        1500
    }

    /// What the port does for the engine (offloads, queues).
    fn capabilities(&self) -> PortCaps {
        PortCaps::default()
    }

    /// The frame arena this port registered with the kernel, when it brings its own (an
    /// AF_XDP UMEM): the engine then places every frame in it instead of making one. Ports
    /// that copy frames in and out return `None` and get the engine's arena in every call.
    fn arena(&self) -> Option<Arc<FrameArena>> {
        None
    }

    /// The earliest time a frame will become receivable, when the port knows (simulated
    /// links with latency); lets simulations skip idle time.
    fn next_arrival(&self) -> Option<Instant> {
        None
    }

    /// Descriptors that become readable when frames arrive (sockets, a TAP device), for a
    /// thread with nothing to do to sleep on ([`wait::PortWait`] on Linux) rather than nap and
    /// look again. The descriptors stay open as long as the port. Empty (the default): the
    /// port has none, and an idle thread naps.
    #[cfg(target_os = "linux")]
    fn wakeup_fds(&self) -> Vec<std::os::fd::RawFd> {
        Vec::new()
    }
}

/// Receive from each of a multi-queue port's `queues` receive queues in turn, from queue
/// `start` on, until `max` frames: `recv(q, left)` takes up to `left` frames from queue `q`
/// and returns how many it took. Returns how many were taken in all. Callers move `start`
/// on by one each call, so that no queue is always served first.
#[cfg_attr(
    not(any(feature = "dpdk", feature = "af_xdp", feature = "af_packet")),
    allow(dead_code)
)]
pub(crate) fn recv_each_queue(
    queues: usize,
    start: usize,
    max: usize,
    mut recv: impl FnMut(usize, usize) -> usize,
) -> usize {
    let mut got = 0;
    for k in 0..queues {
        if got >= max {
            break;
        }
        got += recv((start + k) % queues, max - got);
    }
    got
}

/// The transmit queue, of `queues`, for a frame: by a symmetric hash of an IPv4/TCP frame's
/// addresses and ports (both directions of a connection give the same value), so each flow
/// keeps one queue and its segments stay in order; queue 0 for anything else.
#[cfg_attr(not(any(feature = "dpdk", feature = "af_xdp")), allow(dead_code))]
pub(crate) fn tx_queue_of(data: &[u8], queues: usize) -> usize {
    if queues <= 1 || data.len() < 38 || data[12..14] != [0x08, 0x00] {
        return 0;
    }
    let ihl = (data[14] & 0x0f) as usize * 4;
    if data[23] != 6 || ihl < 20 || data.len() < 14 + ihl + 4 {
        return 0;
    }
    let a = u32::from_be_bytes([data[26], data[27], data[28], data[29]])
        ^ u32::from_be_bytes([data[30], data[31], data[32], data[33]]);
    let p = &data[14 + ihl..];
    let b = (u16::from_be_bytes([p[0], p[1]]) ^ u16::from_be_bytes([p[2], p[3]])) as u32;
    let h = (a ^ b << 16 ^ b).wrapping_mul(0x9e37_79b9);
    (h ^ h >> 16) as usize % queues
}

#[cfg(test)]
mod tests {
    use super::tx_queue_of;

    fn frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 54];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 6;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn tx_queue_is_symmetric_in_range_and_spreads() {
        let mut used = [0usize; 4];
        for p in 0..256u16 {
            let a = frame([10, 0, 0, 1], [10, 0, 0, 2], 40000 + p, 80);
            let b = frame([10, 0, 0, 2], [10, 0, 0, 1], 80, 40000 + p);
            let q = tx_queue_of(&a, 4);
            assert_eq!(
                q,
                tx_queue_of(&b, 4),
                "both directions of a flow, one queue"
            );
            used[q] += 1;
        }
        assert!(used.iter().all(|&n| n > 30), "{used:?}");
        assert_eq!(tx_queue_of(&frame([1; 4], [2; 4], 1, 2), 1), 0);
    }

    #[test]
    fn tx_queue_of_any_bytes_is_in_range() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let mut b = bytes.clone();
            if b.len() > 24 {
                b[12] = 8;
                b[13] = 0;
                b[23] = 6;
            }
            for q in 1..5 {
                assert!(tx_queue_of(&bytes, q) < q);
                assert!(tx_queue_of(&b, q) < q);
            }
        }
    }
}
