//! Capture: a [`Port`] wrapper that writes every frame received and sent to a pcap file.
//!
//! The file is the classic libpcap format (microsecond timestamps, Ethernet link type), so
//! tcpdump, tshark and Wireshark read it. Timestamps are the engine's `now` of the burst.
//! Frames are written in the order the engine saw them: received ones after `recv`
//! returns, sent ones before they are handed to the inner port.
//!
//! ```
//! use flextoe::backends::mem::MemLink;
//! use flextoe::backends::pcap::PcapPort;
//! use flextoe::sim::Impairments;
//!
//! let (a, _b) = MemLink::pair(Impairments::none());
//! let path = std::env::temp_dir().join("flextoe-doc-example.pcap");
//! let port = PcapPort::create(a, &path).unwrap();
//! // Build an engine on `port` as on any other port.
//! # drop(port);
//! # std::fs::remove_file(path).unwrap();
//! ```

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use super::Port;
use crate::buf::{Frame, FrameArena};
use crate::time::Instant;

const LINKTYPE_ETHERNET: u32 = 1;
const SNAPLEN: u32 = 65535;

/// A port whose traffic is written to a pcap stream.
pub struct PcapPort<P: Port, W: Write + Send = BufWriter<File>> {
    inner: P,
    /// `None`: capture off, the port only forwards.
    out: Option<W>,
    /// Frames written.
    frames: u64,
    /// The first write error, after which capture stops (traffic goes on).
    error: Option<io::Error>,
}

impl<P: Port> PcapPort<P> {
    /// Wrap `inner`, capturing into a new file at `path`.
    pub fn create(inner: P, path: impl AsRef<Path>) -> io::Result<Self> {
        PcapPort::with_writer(inner, BufWriter::new(File::create(path)?))
    }

    /// Wrap `inner`, capturing into `path` when it is given and forwarding only when not
    /// (so that a program has one port type either way).
    pub fn maybe(inner: P, path: Option<&Path>) -> io::Result<Self> {
        match path {
            Some(p) => PcapPort::create(inner, p),
            None => Ok(PcapPort {
                inner,
                out: None,
                frames: 0,
                error: None,
            }),
        }
    }
}

impl<P: Port, W: Write + Send> PcapPort<P, W> {
    /// Wrap `inner`, capturing into `out` (the pcap header is written at once).
    pub fn with_writer(inner: P, mut out: W) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&SNAPLEN.to_le_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapPort {
            inner,
            out: Some(out),
            frames: 0,
            error: None,
        })
    }

    /// Frames captured so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The write error that stopped the capture, if one did.
    pub fn error(&self) -> Option<&io::Error> {
        self.error.as_ref()
    }

    /// The wrapped port.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The wrapped port, mutably.
    pub fn inner_mut(&mut self) -> &mut P {
        &mut self.inner
    }

    /// Write buffered records out.
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }

    fn record(&mut self, now: Instant, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let Some(out) = &mut self.out else {
            return;
        };
        let us = now.micros();
        let len = data.len() as u32;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&((us / 1_000_000) as u32).to_le_bytes());
        h[4..8].copy_from_slice(&((us % 1_000_000) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&len.min(SNAPLEN).to_le_bytes());
        h[12..16].copy_from_slice(&len.to_le_bytes());
        let r = out
            .write_all(&h)
            .and_then(|_| out.write_all(&data[..data.len().min(SNAPLEN as usize)]));
        match r {
            Ok(()) => self.frames += 1,
            Err(e) => self.error = Some(e),
        }
    }
}

impl<P: Port, W: Write + Send> PcapPort<P, W> {
    fn record_all(&mut self, now: Instant, arena: &FrameArena, frames: &[Frame]) {
        for f in frames {
            self.record(now, arena.data(f));
        }
    }
}

impl<P: Port, W: Write + Send> Port for PcapPort<P, W> {
    fn recv(
        &mut self,
        now: Instant,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        let start = out.len();
        let n = self.inner.recv(now, arena, out, max);
        self.record_all(now, arena, &out[start..]);
        n
    }

    fn recv_queue(
        &mut self,
        queue: u16,
        now: Instant,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        let start = out.len();
        let n = self.inner.recv_queue(queue, now, arena, out, max);
        self.record_all(now, arena, &out[start..]);
        n
    }

    fn send(&mut self, now: Instant, arena: &FrameArena, frames: &mut Vec<Frame>) -> usize {
        self.record_all(now, arena, frames);
        self.inner.send(now, arena, frames)
    }

    fn mtu(&self) -> usize {
        self.inner.mtu()
    }

    fn arena(&self) -> Option<Arc<FrameArena>> {
        self.inner.arena()
    }

    fn capabilities(&self) -> super::PortCaps {
        self.inner.capabilities()
    }

    fn next_arrival(&self) -> Option<Instant> {
        self.inner.next_arrival()
    }

    #[cfg(target_os = "linux")]
    fn wakeup_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.inner.wakeup_fds()
    }
}

impl<P: Port, W: Write + Send> Drop for PcapPort<P, W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}
