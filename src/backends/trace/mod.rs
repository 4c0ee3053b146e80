//! A trace-driven port: it plays the client of one or more TCP connections to a server engine
//! from pre-built frames, so that the engine's server side can be measured with no client
//! stack on the CPUs.
//!
//! ```
//! use std::io::Read;
//! use std::net::Ipv4Addr;
//! use flextoe::backends::trace::{TraceConfig, TracePort, Workload};
//! use flextoe::pipeline::{Engine, EngineConfig};
//! use flextoe::time::Instant;
//! use flextoe::wire::MacAddr;
//!
//! let (server_mac, server_ip) = (MacAddr([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(10, 0, 0, 1));
//! let (client_mac, client_ip) = (MacAddr([2, 0, 0, 0, 0, 2]), Ipv4Addr::new(10, 0, 0, 2));
//! let port = TracePort::new(TraceConfig {
//!     workload: Workload::Bulk { segment: 1460 },
//!     ..TraceConfig::new(client_mac, client_ip, server_mac, server_ip, 80)
//! })
//! .unwrap();
//! let stats = port.stats_handle();
//! // The port answers no ARP: the engine must know the client as a static neighbour.
//! let cfg = EngineConfig::new(server_mac, server_ip).neighbor(client_ip, client_mac);
//! let mut engine = Engine::new(cfg, port).unwrap();
//! let listener = engine.host().listen(80, 16).unwrap();
//! let (mut streams, mut buf, mut read) = (Vec::new(), vec![0u8; 1 << 16], 0);
//! for t in 0..10_000u64 {
//!     engine.poll(Instant::from_micros(t));
//!     while let Ok(Some(mut s)) = listener.try_accept() {
//!         s.set_nonblocking(true);
//!         streams.push(s);
//!     }
//!     for s in &mut streams {
//!         while let Ok(n @ 1..) = s.read(&mut buf) {
//!             read += n;
//!         }
//!     }
//!     if read >= 1 << 20 {
//!         break;
//!     }
//! }
//! assert!(read >= 1 << 20);
//! assert!(stats.snapshot().bytes_delivered >= read as u64);
//! ```
//!
//! # What it does
//!
//! [`TracePort`] is a [`Port`]: the engine pulls frames from it in `recv` and hands it
//! frames in `send`. On the first `recv` calls it opens its connections (one SYN each,
//! client ports `client_port_base + i`, MSS from the configuration, window scale 7, no
//! timestamps, no SACK, so that data segments carry no options), learns each server ISN,
//! window scale and MSS from the SYN-ACKs the engine sends, and sends the final ACKs. Once
//! every connection is established (or was reset), it replays the [`Workload`]:
//!
//! * [`Workload::Bulk`] streams segments of a fixed size; the server application just
//!   reads.
//! * [`Workload::Rpc`] sends requests of a fixed size, at most `depth` awaiting their
//!   responses per connection (closed loop); the server application answers each with
//!   `response` bytes, which the port counts and acknowledges.
//!
//! The payload byte at stream offset `o` of every connection is [`pattern_byte`]`(o)`
//! (`o % 251`), so a test can check what the application reads.
//!
//! The engine must be configured with the client as a static neighbour
//! (`EngineConfig::neighbor(client_ip, client_mac)`): the port answers no ARP request (it
//! counts it as unexpected).
//!
//! # Cost per frame
//!
//! All headers, payloads and checksums are computed when the port is made, for at most
//! 2 x 251 distinct frames (a full segment and the last segment of a unit, for each phase of
//! the payload pattern), shared by all connections whatever the length of the run; they
//! take a few KiB (headers, a pattern buffer the payloads are windows of, a checksum per
//! frame), so they stay in L1. Injecting a segment is one arena allocation, one copy of the
//! pre-built bytes into the frame (54 header bytes and the payload, as a NIC's DMA would
//! write them), the source port, sequence and acknowledgment numbers written and the TCP
//! checksum updated incrementally (RFC 1624: five 16-bit additions), a handful of integer
//! updates of the connection's stream offsets, and no division on the way. Absorbing
//! a frame the engine sends reads the fixed-offset header fields it needs (ports, flags,
//! sequence and acknowledgment numbers, window, lengths) without verifying checksums or
//! parsing options, and frees the frame; only SYN, RST and FIN segments take the full
//! [`parse_frame`](crate::wire::parse_frame) path. Counters are plain integers, copied into the atomics of the
//! [`TraceStatsHandle`] once per `recv` or `send` call that changed them.
//!
//! # Flow control and recovery
//!
//! The port never sends beyond the receive window the server last advertised (read from
//! the ACKs the engine sends), so nothing it injects is dropped for being out of window. In
//! [`Mode::ClosedLoop`] each `recv` call sends what the windows (and, for RPC, the depth)
//! allow, up to the engine's burst; in [`Mode::OpenLoop`] each call offers a fixed number of
//! segments and counts how many the windows let in (`offered`, `refused`). Should the engine
//! drop a segment anyway (a full arena, a user stage), the port recovers as NewReno would
//! (RFC 6582, with no congestion window): after three duplicate ACKs it sends the first
//! unacknowledged segment again, and the next one on each partial ACK; after `rto` without
//! progress it sends everything from the first unacknowledged segment again (go-back-N).
//! Every segment can be rebuilt from the pre-built frames at any offset, so nothing is kept
//! for retransmission. A window that stays closed for `rto` is probed, and a SYN without
//! answer is sent again after `rto`. RSTs, frames it cannot parse and frames for no
//! connection of its own are counted, never a panic.
//!
//! The port never closes its connections.
//!
//! # Starting and pausing
//!
//! [`TraceStatsHandle::pause`] stops new load: no SYN goes out and no new data is started
//! while paused. A connection whose SYN the server refuses (a RST, because nothing listens
//! yet) stays reset, so with a runtime that starts polling on its own (the threaded one),
//! pause the port before handing it over and resume once the listener exists.
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use super::Port;
use crate::buf::{Frame, FrameArena};
use crate::time::Instant;
use crate::wire::{Endpoints, MacAddr};

mod client_rx;
mod client_tx;
mod conn;
mod stats;
mod template;

pub use stats::{ConnPhase, ConnTrace, TraceStats, TraceStatsHandle};
pub use template::pattern_byte;

use conn::{Conn, Rpc};
use stats::Shared;
use template::{Addressing, Templates};

/// The largest MSS the port announces (an MTU of 1500).
pub const MAX_MSS: u16 = 1460;

/// What the client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// A stream of `segment`-byte segments (clamped to the MSS; 0 means the MSS); the
    /// server application reads and discards.
    Bulk {
        /// Payload bytes per segment.
        segment: usize,
    },
    /// Requests of `request` bytes (split into MSS-sized segments, the last with PSH), each
    /// answered by `response` bytes from the server application; in the closed loop at most
    /// `depth` requests per connection await their responses.
    Rpc {
        /// Request bytes.
        request: usize,
        /// Response bytes the server application writes per request.
        response: usize,
        /// Requests in flight per connection (closed loop).
        depth: usize,
    },
}

/// How the load is offered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Each `recv` call sends what the server's receive windows and, for RPC, the depth
    /// allow, up to the engine's burst size.
    #[default]
    ClosedLoop,
    /// Each `recv` call offers `frames_per_recv` data segments, spread over the
    /// connections; those the windows (or the engine's burst size) have no room for are
    /// counted as refused and not sent. The RPC depth does not apply: requests go out
    /// whether or not responses came back.
    OpenLoop {
        /// Data segments offered per `recv` call.
        frames_per_recv: usize,
    },
}

/// What a [`TracePort`] plays. Start from [`TraceConfig::new`] and adjust the fields.
#[derive(Clone, Debug)]
pub struct TraceConfig {
    /// The client's MAC address (the engine's static neighbour).
    pub client_mac: MacAddr,
    /// The client's IPv4 address.
    pub client_ip: Ipv4Addr,
    /// The engine's MAC address.
    pub server_mac: MacAddr,
    /// The engine's IPv4 address.
    pub server_ip: Ipv4Addr,
    /// The port the server listens on.
    pub server_port: u16,
    /// Connections to open (at least 1).
    pub connections: usize,
    /// What the client sends.
    pub workload: Workload,
    /// How the load is offered.
    pub mode: Mode,
    /// The client port of connection 0; connection `i` uses `client_port_base + i`.
    pub client_port_base: u16,
    /// The ISN of connection 0; connection `i` uses `client_isn + i * 0x1000_0000`
    /// (wrapping). The default puts the wrap of the sequence space 64 KiB into the stream.
    pub client_isn: u32,
    /// The MSS announced in the SYNs, and the largest segment the port sends (at most
    /// [`MAX_MSS`]); the server's MSS also bounds segments.
    pub mss: u16,
    /// How long without progress before a SYN is sent again, unacknowledged data is sent
    /// again, or a closed window is probed.
    pub rto: Duration,
}

impl TraceConfig {
    /// One connection from `client_ip` to `server_ip:server_port`, bulk segments of 1460
    /// bytes, closed loop, client ports from 40000, MSS 1460, a timeout of 200 ms.
    pub fn new(
        client_mac: MacAddr,
        client_ip: Ipv4Addr,
        server_mac: MacAddr,
        server_ip: Ipv4Addr,
        server_port: u16,
    ) -> Self {
        TraceConfig {
            client_mac,
            client_ip,
            server_mac,
            server_ip,
            server_port,
            connections: 1,
            workload: Workload::Bulk { segment: 1460 },
            mode: Mode::ClosedLoop,
            client_port_base: 40000,
            client_isn: 0xffff_0000,
            mss: MAX_MSS,
            rto: Duration::from_millis(200),
        }
    }
}

/// A configuration a [`TracePort`] cannot play.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// The configuration is invalid; the text says why.
    #[error("invalid trace configuration: {0}")]
    Config(&'static str),
}

/// A port that plays the client side of TCP connections from pre-built frames (see the
/// [module documentation](self)).
#[derive(Debug)]
pub struct TracePort {
    cfg: TraceConfig,
    addr: Addressing,
    tpl: Templates,
    conns: Vec<Conn>,
    rpc: Option<Rpc>,
    /// First connection served by the next `recv` call.
    rr: usize,
    /// Every handshake settled: data flows.
    started: bool,
    /// Smallest MSS the server announced.
    server_mss: u16,
    stats: TraceStats,
    dirty: bool,
    shared: Arc<Shared>,
}

impl TracePort {
    /// A port playing `cfg`. Computes every frame it will send.
    pub fn new(cfg: TraceConfig) -> Result<Self, TraceError> {
        if cfg.connections == 0 {
            return Err(TraceError::Config("no connections"));
        }
        if cfg.client_port_base == 0 || usize::from(cfg.client_port_base) + cfg.connections > 65536
        {
            return Err(TraceError::Config("client ports out of range"));
        }
        if !(64..=MAX_MSS).contains(&cfg.mss) {
            return Err(TraceError::Config("mss outside 64..=1460"));
        }
        if cfg.server_port == 0 {
            return Err(TraceError::Config("server port 0"));
        }
        let rpc = match cfg.workload {
            Workload::Bulk { .. } => None,
            Workload::Rpc {
                request,
                response,
                depth,
            } => {
                if request == 0 || response == 0 || depth == 0 {
                    return Err(TraceError::Config("rpc sizes and depth must be positive"));
                }
                Some(Rpc {
                    response: response as u64,
                    depth: matches!(cfg.mode, Mode::ClosedLoop).then_some(depth as u64),
                })
            }
        };
        if let Mode::OpenLoop { frames_per_recv: 0 } = cfg.mode {
            return Err(TraceError::Config("open loop offers no frames"));
        }
        let addr = Addressing {
            ep: Endpoints {
                src_mac: cfg.client_mac,
                dst_mac: cfg.server_mac,
                src_ip: cfg.client_ip,
                dst_ip: cfg.server_ip,
            },
            src_port: cfg.client_port_base,
            dst_port: cfg.server_port,
        };
        let (unit, seg) = Self::shape(&cfg, cfg.mss);
        let tpl = Templates::build(&addr, unit, seg);
        let conns = (0..cfg.connections)
            .map(|i| {
                let isn = cfg
                    .client_isn
                    .wrapping_add((i as u32).wrapping_mul(0x1000_0000));
                Conn::new(cfg.client_port_base + i as u16, isn)
            })
            .collect::<Vec<_>>();
        let shared = Arc::new(Shared::new(conns.iter().map(|c| c.port)));
        let mut port = TracePort {
            server_mss: cfg.mss,
            cfg,
            addr,
            tpl,
            conns,
            rpc,
            rr: 0,
            started: false,
            stats: TraceStats::default(),
            dirty: true,
            shared,
        };
        port.publish();
        Ok(port)
    }

    /// Unit and segment lengths of a workload with segments of at most `mss` bytes.
    fn shape(cfg: &TraceConfig, mss: u16) -> (usize, usize) {
        let mss = usize::from(mss.min(cfg.mss).max(1));
        match cfg.workload {
            Workload::Bulk { segment } => {
                let seg = if segment == 0 { mss } else { segment.min(mss) };
                (seg, seg)
            }
            Workload::Rpc { request, .. } => (request, mss),
        }
    }

    /// A handle that reads the counters and pauses the load from any thread.
    pub fn stats_handle(&self) -> TraceStatsHandle {
        TraceStatsHandle {
            shared: self.shared.clone(),
        }
    }

    /// The counters, exact as of the last call.
    pub fn stats(&self) -> TraceStats {
        self.stats
    }

    /// Each connection's counters, exact as of the last call.
    pub fn connections(&self) -> Vec<ConnTrace> {
        self.conns.iter().map(Conn::trace).collect()
    }

    /// The configuration being played.
    pub fn config(&self) -> &TraceConfig {
        &self.cfg
    }

    /// Whether every handshake has settled (established or reset), so data flows.
    pub fn handshakes_settled(&self) -> bool {
        self.started
    }

    /// Payload bytes of the data segments being sent (the configured size, bounded by
    /// both MSSs).
    pub fn segment_size(&self) -> usize {
        self.tpl.seg() as usize
    }

    fn publish(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.shared.store_totals(&self.stats);
        for (i, c) in self.conns.iter_mut().enumerate() {
            if c.dirty {
                c.dirty = false;
                self.shared.store_conn(i, &c.trace());
            }
        }
    }
}

impl Port for TracePort {
    fn recv(
        &mut self,
        now: Instant,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        let first = out.len();
        if !self.started {
            self.handshake(now, arena, out, max);
        }
        if self.started {
            let room = max.saturating_sub(out.len() - first);
            self.data(now, arena, out, room);
        }
        let n = out.len() - first;
        if n > 0 {
            self.stats.frames_in += n as u64;
            self.dirty = true;
        }
        self.publish();
        n
    }

    fn send(&mut self, now: Instant, arena: &FrameArena, frames: &mut Vec<Frame>) -> usize {
        let n = frames.len();
        for f in frames.drain(..) {
            self.absorb(now, arena.data(&f));
            arena.free(f);
        }
        if n > 0 {
            self.stats.frames_out += n as u64;
            self.dirty = true;
        }
        self.publish();
        n
    }
}

#[cfg(test)]
mod tests;
