//! Composition and runtimes.
//!
//! [`Pipeline::builder`] describes an engine: the built-in stages, user stages at the
//! [hook points](hooks), and the policies ([`CongestionControl`], [`FlowScheduler`],
//! [`Placement`]). The same description runs on either runtime:
//!
//! * [`PipelineBuilder::build`] gives an [`Engine`], the inline runtime: [`Engine::poll`]
//!   runs one pass on the caller's thread, every burst through all stages, run to
//!   completion. For blocking sockets, [`Runtime`] polls the same engine on a thread of its
//!   own.
//! * [`PipelineBuilder::threaded`] lays the same stages, hooks and policies out over worker
//!   threads by a [`Topology`] ([`Threaded`]).
//!
//! [`Engine::new`] is the short form of the default pipeline.
//!
//! ## The data path
//!
//! The order of the stages is defined once, in four segments cut where a runtime may put
//! rings; both runtimes call the same segments and neither orders stages itself:
//!
//! | segment | stages, in order | inline | threaded |
//! |---|---|---|---|
//! | ingress | `rx_frame` user stages, preprocess | in [`Engine::poll`] | preprocess replicas (or the `rx_frame` stages on a task of their own, [`Topology::with_rx_hooks_worker`]) |
//! | transport | `rx_segment` user stages, protocol (with the congestion control), `results` user stages, frame reservation for outgoing payload, scheduler | after ingress | flow groups |
//! | delivery | place (payload between frames and rings), notify | after transport | place replicas (with [`Topology::with_replicated_placement`], a connection's long copies run on every place replica and its owner publishes in order) |
//! | egress | postprocess (headers), checksums, `tx_frame` user stages | after delivery | postprocess replicas, then the egress reorder (or the `tx_frame` stages after the reorder, on a task of their own, [`Topology::with_tx_hooks_worker`]) |
//!
//! ## The control plane in a composed engine
//!
//! Every engine the builder makes has the built-in control plane: handshakes (active and
//! passive), ISNs, timers (retransmission, probes, TIME-WAIT), ARP, and the flow table that
//! it installs into every stage (and every replica) when a connection is established. It is
//! not a stage one wires; it is reached from three sides:
//!
//! * the application opens sockets through [`Host`] (`listen`, `connect`), as with any
//!   engine;
//! * user stages hand it frames with [`Verdict::Punt`], which it handles as if preprocess had
//!   punted them (ARP, SYN, RST; data of an established connection is dropped and counted);
//! * the policies it consults are the builder's: the congestion control runs beside the
//!   protocol stage, the scheduler beside it in the same flow group, and the placement when
//!   a connection is installed on the threaded runtime.
//!
//! The built-in stages are also usable alone (each is a plain struct with `new`; the benches
//! and fuzz targets drive them that way), but connections need the engine around them.
//!
//! [`CongestionControl`]: crate::control::congestion::CongestionControl
//! [`FlowScheduler`]: crate::stages::scheduler::FlowScheduler

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::backends::Port;
use crate::buf::{Frame, FrameArena};
use crate::control::congestion::{CongestionControl, NewReno};
use crate::control::{Control, ControlConfig, ControlOutput, ControlStats, TcpConnState};
use crate::flow::{FlowId, RetransmitTotals};
use crate::host::{Host, HostShared, PortAlloc};
use crate::stages::notify::ControlEvent;
use crate::stages::postprocess::{FlowView, Postprocess};
use crate::stages::preprocess::Preprocess;
use crate::stages::protocol::{AckPolicy, Protocol, TcpState};
use crate::stages::scheduler::{FlowScheduler, RoundRobin};
use crate::stages::{PreOut, ProtoResult, ProtoWork, Punt, PuntReason, RxWork, Stage, BURST};
use crate::stats::{DropReason, StageStats};
use crate::time::Instant;
use crate::wire::{FourTuple, MacAddr};

pub mod builder;
mod cores;
pub mod hooks;
mod inline;
mod path;
mod runtime;
mod sleep;
pub mod threaded;
pub mod topology;

pub use builder::{Pipeline, PipelineBuilder};
pub use hooks::{AttachCx, Hook, HookCx, HookReport, Hooks, RedirectRing, Verdict, Verdicts};
pub use inline::Engine;
pub use runtime::Runtime;
pub use sleep::RuntimeSleeps;
pub use threaded::{Threaded, ThreadedStats};
pub use topology::{ByFlowId, Placement, TaskRef, Topology, WorkerSpec};

use hooks::{Chain, Diverted};
use path::{Delivery, Egress, Ingress, Transport};

/// Engine settings. Start from [`EngineConfig::new`] and adjust the public fields; the type
/// is `#[non_exhaustive]`, so a field added later breaks no caller.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Our MAC address.
    pub mac: MacAddr,
    /// Our IPv4 address.
    pub ip: Ipv4Addr,
    /// Frames in the arena (ignored when the port brings its own, see [`Port::arena`]).
    pub arena_frames: usize,
    /// RX ring size per connection (bytes, power of two). It bounds the receive window: one
    /// connection receives at most this much per round trip, the time the application
    /// takes to read included. Linux grows a socket's receive buffer up to the maximum of
    /// `net.ipv4.tcp_rmem` (6 MiB unless configured), so bulk transfers that should match it
    /// need a ring of that order (`examples/vs_linux.rs` measures both).
    pub rx_buffer: usize,
    /// TX ring size per connection (bytes, power of two).
    pub tx_buffer: usize,
    /// ACK policy of the receive path.
    pub ack_policy: AckPolicy,
    /// Frames per burst.
    pub burst: usize,
    /// Most frames one [`Engine::poll`] receives, and most segments it sends, before it
    /// returns (a NAPI-style budget: it bounds how long a flood can keep the caller's thread,
    /// never how much ready work a call leaves behind in normal operation). A poll otherwise
    /// receives until the port has nothing more and sends until no flow can.
    pub poll_budget: usize,
    /// Control-plane settings.
    pub control: ControlConfig,
}

impl EngineConfig {
    /// Defaults for an engine at `mac` / `ip`: 16384 frames, 256 KiB rings, ACK per burst,
    /// bursts of 32, a poll budget of 4096 frames each way, MTU 1500, window scaling and timestamps on, initial window 10 segments,
    /// RTO 200 ms .. 60 s (1 s before the first sample), TIME-WAIT 1 s, 4096 flows, and a
    /// fresh random key for ISNs and timestamp offsets.
    pub fn new(mac: MacAddr, ip: Ipv4Addr) -> Self {
        EngineConfig {
            mac,
            ip,
            arena_frames: 16384,
            rx_buffer: 256 * 1024,
            tx_buffer: 256 * 1024,
            ack_policy: AckPolicy::PerBurst,
            burst: BURST,
            poll_budget: 4096,
            control: ControlConfig {
                mac,
                ip,
                mtu: 1500,
                window_scaling: true,
                timestamps: true,
                sack: true,
                ecn: crate::control::Ecn::default(),
                initial_cwnd_segments: 10,
                rto_min: Duration::from_millis(200),
                rto_initial: Duration::from_secs(1),
                rto_max: Duration::from_secs(60),
                max_retransmissions: 15,
                syn_retries: 6,
                time_wait: Duration::from_secs(1),
                neighbors: Vec::new(),
                max_flows: 4096,
                max_splices: 4096,
                max_half_open: 256,
                syn_cookies: true,
                fin_wait2_timeout: Duration::from_secs(60),
                orphan_retries: 8,
                max_orphans: 4096,
                challenge_ack_limit: crate::stages::protocol::CHALLENGE_ACK_LIMIT,
                rst_limit: 1000,
                icmp_echo_limit: 1000,
                path_mtu_limit: 1000,
                rates: None,
                classifier: None,
                flow_groups: 1,
                isn_secret: crate::control::secrets::os_random(),
            },
        }
    }

    /// Add a static neighbour (no ARP needed for it).
    pub fn neighbor(mut self, ip: Ipv4Addr, mac: MacAddr) -> Self {
        self.control.neighbors.push((ip, mac));
        self
    }
}

/// Errors from building an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The frame arena could not be made.
    #[error(transparent)]
    Arena(#[from] crate::buf::ArenaError),
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
}

/// What every runtime builds from an [`EngineConfig`]: the arena, the application interface
/// and the control plane.
pub(crate) struct Parts {
    pub(crate) arena: Arc<FrameArena>,
    pub(crate) host: Arc<HostShared>,
    pub(crate) control: Control,
}

impl Parts {
    pub(crate) fn new(
        cfg: &EngineConfig,
        mtu: usize,
        port_arena: Option<Arc<FrameArena>>,
        hooks: &mut Hooks,
    ) -> Result<Self, EngineError> {
        if cfg.burst == 0 {
            return Err(EngineError::Config("burst must be positive"));
        }
        if cfg.poll_budget < cfg.burst {
            return Err(EngineError::Config(
                "poll_budget must be at least one burst",
            ));
        }
        if !cfg.control.flow_groups.is_power_of_two() {
            return Err(EngineError::Config("flow groups must be a power of two"));
        }
        let ring_ok = |n: usize| (1024..=1 << 30).contains(&n);
        if !ring_ok(cfg.rx_buffer) || !ring_ok(cfg.tx_buffer) {
            return Err(EngineError::Config(
                "ring sizes must be between 1 KiB and 1 GiB",
            ));
        }
        if cfg.control.max_flows == 0 {
            return Err(EngineError::Config("max_flows must be positive"));
        }
        let arena = match port_arena {
            Some(a) => a,
            None => Arc::new(FrameArena::new(cfg.arena_frames)?),
        };
        let (req_tx, req_rx) = crossbeam_channel::unbounded();
        let host = Arc::new(HostShared {
            ip: cfg.ip,
            requests: req_tx,
            requests_pending: Default::default(),
            // One entry per flow, and room for as many again: an entry a connection's
            // stream queued as the connection left reaches the next connection on its flow
            // id, whose flag it clears early (one more push of that connection).
            doorbells: crate::host::Doorbells::new(cfg.control.max_flows.saturating_mul(2)),
            ports: std::sync::Mutex::new(PortAlloc::new(cfg.control.isn_secret)),
            rx_buf: cfg.rx_buffer.next_power_of_two(),
            tx_buf: cfg.tx_buffer.next_power_of_two(),
            engine_alive: AtomicBool::new(true),
            rings_made: Default::default(),
            engine_wake: Default::default(),
        });
        let mut control_cfg = cfg.control.clone();
        control_cfg.mac = cfg.mac;
        control_cfg.ip = cfg.ip;
        // A frame holds the headroom, an Ethernet header, a VLAN tag and the IP packet.
        let max_mtu = crate::buf::FRAME_SIZE - crate::buf::HEADROOM - 18;
        control_cfg.mtu = control_cfg.mtu.min(mtu.min(max_mtu) as u16);
        let control = Control::new(control_cfg, arena.clone(), host.clone(), req_rx);
        hooks.attach(&hooks::AttachCx {
            host: Arc::downgrade(&host),
        });
        Ok(Parts {
            arena,
            host,
            control,
        })
    }
}

/// Counters of a running engine.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    /// Calls to `poll`.
    pub polls: u64,
    /// Frames received from the port.
    pub rx_frames: u64,
    /// Frames handed to the port.
    pub tx_frames: u64,
    /// Per stage: (name, stats).
    pub stages: Vec<(&'static str, StageStats)>,
    /// Control plane.
    pub control: ControlStats,
    /// Arena frames in use.
    pub frames_in_use: usize,
    /// Installed flows.
    pub flows: usize,
    /// Handshakes in progress (SYN sent or received, no flow yet).
    pub handshakes: usize,
    /// Doorbells (application updates) handled.
    pub doorbells: u64,
    /// Of those, updates that only said the application read, applied to the protocol
    /// stage's state without a pass through the stages (the inline runtime, where the
    /// result would have done nothing: no window update due, nothing to send).
    pub quiet_reads: u64,
    /// Scheduler grants.
    pub grants: u64,
    /// User stages at the hook points, in order.
    pub hooks: Vec<HookReport>,
}

impl EngineStats {
    /// Drops for `reason`, summed over the built-in stages and the control plane.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.stages
            .iter()
            .map(|(_, s)| s.drops.get(reason))
            .sum::<u64>()
            + self.control.drops.get(reason)
    }

    /// The counters of the user stage `name` (at any hook point).
    pub fn hook(&self, name: &str) -> Option<&HookReport> {
        self.hooks.iter().find(|h| h.name == name)
    }
}

impl std::fmt::Display for EngineStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "polls={} rx_frames={} tx_frames={} doorbells={} quiet_reads={} grants={} flows={} \
             frames_in_use={}",
            self.polls,
            self.rx_frames,
            self.tx_frames,
            self.doorbells,
            self.quiet_reads,
            self.grants,
            self.flows,
            self.frames_in_use
        )?;
        for (name, s) in &self.stages {
            writeln!(f, "  {:<12} {}", name, s)?;
        }
        for h in &self.hooks {
            writeln!(f, "  hook {}", h)?;
        }
        let c = &self.control;
        write!(
            f,
            "  {:<12} punted={} established={} closed={} resets={} rst_sent={} challenge_acks={} stale_events={} timeouts={} probes={} tail_probes={} syn_retx={} cookies={}/{} arp_req={} arp_replies={} arp_not_learned={} icmp_echo_replies={} path_mtu_reports={} icmp_unreachables={} timer_visits={} drops: {}",
            "control",
            c.punted,
            c.established,
            c.closed,
            c.resets,
            c.rst_sent,
            c.challenge_acks,
            c.stale_events,
            c.timeouts,
            c.probes,
            c.tail_probes,
            c.syn_retransmits,
            c.cookies_accepted,
            c.cookies_sent,
            c.arp_requests,
            c.arp_replies,
            c.arp_not_learned,
            c.icmp_echo_replies,
            c.path_mtu_reports,
            c.icmp_unreachables,
            c.timer_visits,
            c.drops
        )
    }
}
