//! AF_PACKET backend through `pnet_datalink` (feature `af_packet`, Linux).
//!
//! A raw layer-2 socket bound to one interface, polled without blocking. Frames the socket
//! sees leaving the interface (our own transmissions) are skipped. For speed use AF_XDP; this
//! backend is for any interface and for tests.

use std::io;
use std::time::Duration;

use pnet_datalink::{self, Channel, Config, DataLinkReceiver, DataLinkSender};

use super::Port;
use crate::buf::{Frame, FrameArena, FRAME_SIZE};
use crate::time::Instant;
use crate::wire::MacAddr;

/// Counters of an AF_PACKET port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AfPacketStats {
    /// Frames received.
    pub rx: u64,
    /// Frames sent.
    pub tx: u64,
    /// Own transmissions seen on receive and skipped.
    pub rx_own: u64,
    /// Frames longer than an arena frame, dropped.
    pub rx_oversize: u64,
    /// Sends that failed.
    pub tx_errors: u64,
}

/// An AF_PACKET socket as a [`Port`].
pub struct AfPacketPort {
    tx: Box<dyn DataLinkSender>,
    rx: Box<dyn DataLinkReceiver>,
    mac: MacAddr,
    mtu: usize,
    stats: AfPacketStats,
}

impl AfPacketPort {
    /// Open interface `name` (in the calling thread's namespace); `mac` is the engine's MAC,
    /// used to skip our own frames.
    pub fn open(name: &str, mac: MacAddr) -> io::Result<Self> {
        let iface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == name)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no interface {name}"))
            })?;
        let cfg = Config {
            read_timeout: Some(Duration::ZERO),
            write_buffer_size: 1 << 16,
            read_buffer_size: 1 << 16,
            ..Config::default()
        };
        match pnet_datalink::channel(&iface, cfg)? {
            Channel::Ethernet(tx, rx) => Ok(AfPacketPort {
                tx,
                rx,
                mac,
                mtu: 1500,
                stats: AfPacketStats::default(),
            }),
            _ => Err(io::Error::other("not an Ethernet channel")),
        }
    }

    /// Counters.
    pub fn stats(&self) -> AfPacketStats {
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
        while n < max {
            let data = match self.rx.next() {
                Ok(d) => d,
                Err(_) => break,
            };
            if data.len() >= 12 && data[6..12] == self.mac.0 {
                self.stats.rx_own += 1;
                continue;
            }
            if data.len() > FRAME_SIZE {
                self.stats.rx_oversize += 1;
                continue;
            }
            let Some(f) = arena.alloc_copy(data) else {
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
}
