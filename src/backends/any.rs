//! One port type for every Linux backend built into the crate, chosen at run time.
//!
//! Programs that take the backend from their command line (the examples do) open an
//! [`AnyPort`] from a [`PortSpec`] and run one engine type whatever the choice.

use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::Port;
use crate::buf::{Frame, FrameArena};
use crate::time::Instant;
use crate::wire::MacAddr;

/// A Linux backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// TAP device (feature `tap`).
    Tap,
    /// AF_PACKET socket (feature `af_packet`).
    AfPacket,
    /// AF_XDP socket with the crate's XDP program (feature `af_xdp`).
    AfXdp,
    /// A DPDK port (feature `dpdk`): `iface` is the port's name (`net_af_packet0`, a PCI
    /// address) or, with a comma, devargs to probe (`net_af_packet0,iface=veth0`).
    Dpdk,
}

/// What to open.
#[derive(Clone, Debug)]
pub struct PortSpec {
    /// Which backend.
    pub kind: BackendKind,
    /// Interface: the TAP device's name or the NIC / veth end.
    pub iface: String,
    /// Network namespace to open it in (`ip netns add` name); `None` for the caller's.
    pub netns: Option<String>,
    /// The engine's MAC address.
    pub mac: MacAddr,
    /// The engine's IPv4 address (the AF_XDP program redirects packets for it).
    pub ip: Ipv4Addr,
    /// DPDK's EAL arguments, whitespace-separated (DPDK only; the EAL starts once per
    /// process, on the first DPDK port).
    pub dpdk_args: String,
    /// Receive queues ([`PortCaps::queues`](super::PortCaps::queues)), at least 1:
    /// AF_PACKET sockets in a fanout group (at most
    /// [`af_packet::MAX_QUEUES`](super::af_packet::MAX_QUEUES), 64; the kernel hashes each
    /// flow to one of them); AF_XDP sockets on the device's queues 0 to `queues - 1` (at
    /// most 64; the device needs that many queues, and flows its RSS puts on a queue past
    /// them reach the kernel's stack, not the engine); DPDK queue pairs (at most the
    /// device's; DPDK's `net_af_packet` needs `qpairs=` as many in its devargs). A TAP device
    /// has exactly one. Whether several help depends on the runtime: the inline one reads
    /// them in turn; the threaded one gives each preprocess replica its own queue when the
    /// topology has as many replicas as the port has queues.
    pub queues: u16,
}

impl PortSpec {
    /// Backend `kind` on `iface` in the caller's namespace, for an engine at `mac` and `ip`:
    /// one queue, no DPDK arguments.
    pub fn new(kind: BackendKind, iface: impl Into<String>, mac: MacAddr, ip: Ipv4Addr) -> Self {
        PortSpec {
            kind,
            iface: iface.into(),
            netns: None,
            mac,
            ip,
            dpdk_args: String::new(),
            queues: 1,
        }
    }
}

/// A port of any built-in Linux backend.
// One port lives as long as its engine; the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum AnyPort {
    /// TAP device.
    #[cfg(feature = "tap")]
    Tap(super::tap::TapPort),
    /// AF_PACKET socket.
    #[cfg(feature = "af_packet")]
    AfPacket(super::af_packet::AfPacketPort),
    /// AF_XDP socket.
    #[cfg(feature = "af_xdp")]
    AfXdp(super::af_xdp::AfXdpPort),
    /// DPDK port.
    #[cfg(feature = "dpdk")]
    Dpdk(super::dpdk::DpdkPort),
}

fn not_built(feature: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("built without the `{feature}` feature"),
    )
}

impl AnyPort {
    /// Open the port `spec` describes.
    pub fn open(spec: &PortSpec) -> io::Result<AnyPort> {
        if spec.queues == 0 || (spec.kind == BackendKind::Tap && spec.queues > 1) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} receive queues asked for {:?} (at least 1; a TAP device has one)",
                    spec.queues, spec.kind
                ),
            ));
        }
        let spec2 = spec.clone();
        let open = move || -> io::Result<AnyPort> {
            let spec = spec2;
            match spec.kind {
                #[cfg(feature = "tap")]
                BackendKind::Tap => super::tap::TapPort::open(&spec.iface).map(AnyPort::Tap),
                #[cfg(feature = "af_packet")]
                BackendKind::AfPacket => {
                    let cfg = super::af_packet::AfPacketConfig {
                        queues: spec.queues,
                        ..Default::default()
                    };
                    super::af_packet::AfPacketPort::open_with(&spec.iface, spec.mac, &cfg)
                        .map(AnyPort::AfPacket)
                }
                #[cfg(feature = "af_xdp")]
                BackendKind::AfXdp => {
                    let mut cfg = super::af_xdp::XdpConfig::new(&spec.iface, spec.ip);
                    cfg.queues = u32::from(spec.queues);
                    super::af_xdp::AfXdpPort::open(&cfg).map(AnyPort::AfXdp)
                }
                #[cfg(feature = "dpdk")]
                BackendKind::Dpdk => {
                    use super::dpdk::{Device, DpdkConfig, DpdkPort, Eal, FramePool};
                    let args: Vec<&str> = spec.dpdk_args.split_whitespace().collect();
                    let eal = Eal::init(&args)?;
                    let device = if spec.iface.contains(',') {
                        Device::Probe(spec.iface.clone())
                    } else {
                        Device::Named(spec.iface.clone())
                    };
                    let mut cfg = DpdkConfig::new(device);
                    cfg.queues = spec.queues;
                    // The drivers hold a ring of receive buffers per queue: each queue past
                    // the first gets twice its ring's worth more frames, so the engine keeps
                    // what one queue left it.
                    let ring = usize::from(cfg.rx_desc);
                    let nq = usize::from(spec.queues);
                    let pool =
                        FramePool::new(eal, 16384 + 2 * ring * nq.saturating_sub(1), ring * nq)?;
                    Ok(AnyPort::Dpdk(DpdkPort::open(&pool, &cfg)?))
                }
                #[allow(unreachable_patterns)]
                k => Err(not_built(match k {
                    BackendKind::Tap => "tap",
                    BackendKind::AfPacket => "af_packet",
                    BackendKind::AfXdp => "af_xdp",
                    BackendKind::Dpdk => "dpdk",
                })),
            }
        };
        match &spec.netns {
            Some(ns) => super::netns::in_netns(ns, open),
            None => open(),
        }
    }

    /// The port's own counters, as one line.
    pub fn stats_line(&mut self) -> String {
        match self {
            #[cfg(feature = "tap")]
            AnyPort::Tap(p) => format!("{:?}", p.stats()),
            #[cfg(feature = "af_packet")]
            AnyPort::AfPacket(p) => format!("{:?}", p.stats()),
            #[cfg(feature = "af_xdp")]
            AnyPort::AfXdp(p) => format!("{:?}", p.stats()),
            #[cfg(feature = "dpdk")]
            AnyPort::Dpdk(p) => format!("{:?} per queue {:?}", p.stats(), p.queue_stats()),
            #[allow(unreachable_patterns)]
            _ => String::new(),
        }
    }
}

macro_rules! each {
    ($self:expr, $p:ident => $e:expr) => {
        match $self {
            #[cfg(feature = "tap")]
            AnyPort::Tap($p) => $e,
            #[cfg(feature = "af_packet")]
            AnyPort::AfPacket($p) => $e,
            #[cfg(feature = "af_xdp")]
            AnyPort::AfXdp($p) => $e,
            #[cfg(feature = "dpdk")]
            AnyPort::Dpdk($p) => $e,
            #[allow(unreachable_patterns)]
            _ => unreachable!("AnyPort has no variant without a backend feature"),
        }
    };
}

impl Port for AnyPort {
    fn recv(
        &mut self,
        now: Instant,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        each!(self, p => p.recv(now, arena, out, max))
    }

    fn recv_queue(
        &mut self,
        queue: u16,
        now: Instant,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        each!(self, p => p.recv_queue(queue, now, arena, out, max))
    }

    fn send(&mut self, now: Instant, arena: &FrameArena, frames: &mut Vec<Frame>) -> usize {
        each!(self, p => p.send(now, arena, frames))
    }

    fn mtu(&self) -> usize {
        each!(self, p => p.mtu())
    }

    fn arena(&self) -> Option<Arc<FrameArena>> {
        each!(self, p => p.arena())
    }

    fn capabilities(&self) -> super::PortCaps {
        each!(self, p => p.capabilities())
    }

    #[cfg(target_os = "linux")]
    fn wakeup_fds(&self) -> Vec<std::os::fd::RawFd> {
        each!(self, p => p.wakeup_fds())
    }
}
