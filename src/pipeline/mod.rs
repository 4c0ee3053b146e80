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
//! | delivery | place (payload between frames and rings), notify | after transport | place replicas |
//! | egress | postprocess (headers), checksums, `tx_frame` user stages | after delivery | postprocess replicas, then the egress reorder |
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
use std::thread::JoinHandle;
use std::time::Duration;

use crate::backends::Port;
use crate::buf::{Frame, FrameArena};
use crate::control::congestion::{CongestionControl, NewReno};
use crate::control::{Control, ControlConfig, ControlOutput, ControlStats, TcpConnState};
use crate::flow::{FlowId, RetransmitTotals};
use crate::host::{Host, HostShared, PortAlloc};
use crate::stages::notify::{ControlEvent, Notify};
use crate::stages::place::Place;
use crate::stages::postprocess::{FlowView, Postprocess};
use crate::stages::preprocess::Preprocess;
use crate::stages::protocol::{AckPolicy, Protocol, TcpState};
use crate::stages::scheduler::{FlowScheduler, RoundRobin};
use crate::stages::{PreOut, ProtoResult, ProtoWork, Punt, PuntReason, RxWork, Stage, BURST};
use crate::stats::{DropReason, StageStats};
use crate::time::{Clock, Instant};
use crate::wire::{FourTuple, MacAddr};

pub mod builder;
pub mod hooks;
mod path;
pub mod threaded;
pub mod topology;

pub use builder::{Pipeline, PipelineBuilder};
pub use hooks::{Hook, HookCx, HookReport, Hooks, RedirectRing, Verdict, Verdicts};
pub use threaded::{Threaded, ThreadedStats};
pub use topology::{ByFlowId, Placement, TaskRef, Topology, WorkerSpec};

use hooks::{Chain, Diverted};
use path::{Delivery, Egress, Ingress, Transport};

/// Engine settings. Start from [`EngineConfig::new`] and adjust the public fields.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Our MAC address.
    pub mac: MacAddr,
    /// Our IPv4 address.
    pub ip: Ipv4Addr,
    /// Frames in the arena (ignored when the port brings its own, see [`Port::arena`]).
    pub arena_frames: usize,
    /// RX ring size per connection (bytes, power of two).
    pub rx_buffer: usize,
    /// TX ring size per connection (bytes, power of two).
    pub tx_buffer: usize,
    /// ACK policy of the receive path.
    pub ack_policy: AckPolicy,
    /// Frames per burst.
    pub burst: usize,
    /// Control-plane settings.
    pub control: ControlConfig,
}

impl EngineConfig {
    /// Defaults for an engine at `mac` / `ip`: 16384 frames, 256 KiB rings, ACK per burst,
    /// bursts of 32, MTU 1500, window scaling and timestamps on, initial window 10 segments,
    /// RTO 200 ms .. 60 s (1 s before the first sample), TIME-WAIT 1 s, 4096 flows.
    pub fn new(mac: MacAddr, ip: Ipv4Addr) -> Self {
        EngineConfig {
            mac,
            ip,
            arena_frames: 16384,
            rx_buffer: 256 * 1024,
            tx_buffer: 256 * 1024,
            ack_policy: AckPolicy::PerBurst,
            burst: BURST,
            control: ControlConfig {
                mac,
                ip,
                mtu: 1500,
                window_scaling: true,
                timestamps: true,
                initial_cwnd_segments: 10,
                rto_min: Duration::from_millis(200),
                rto_initial: Duration::from_secs(1),
                rto_max: Duration::from_secs(60),
                max_retransmissions: 15,
                syn_retries: 6,
                time_wait: Duration::from_secs(1),
                neighbors: Vec::new(),
                max_flows: 4096,
                flow_groups: 1,
                isn_secret: [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210],
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
    ) -> Result<Self, EngineError> {
        if cfg.burst == 0 {
            return Err(EngineError::Config("burst must be positive"));
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
            doorbells: crate::ring::Mpmc::new(cfg.control.max_flows),
            ports: std::sync::Mutex::new(PortAlloc::new()),
            rx_buf: cfg.rx_buffer.next_power_of_two(),
            tx_buf: cfg.tx_buffer.next_power_of_two(),
            engine_alive: AtomicBool::new(true),
        });
        let mut control_cfg = cfg.control.clone();
        control_cfg.mac = cfg.mac;
        control_cfg.ip = cfg.ip;
        // A frame holds the headroom, an Ethernet header, a VLAN tag and the IP packet.
        let max_mtu = crate::buf::FRAME_SIZE - crate::buf::HEADROOM - 18;
        control_cfg.mtu = control_cfg.mtu.min(mtu.min(max_mtu) as u16);
        let control = Control::new(control_cfg, arena.clone(), host.clone(), req_rx);
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
    /// Doorbells (application updates) handled.
    pub doorbells: u64,
    /// Scheduler grants.
    pub grants: u64,
    /// User stages at the hook points, in order.
    pub hooks: Vec<HookReport>,
}

impl EngineStats {
    /// The counters of the user stage `name` (at any hook point).
    pub fn hook(&self, name: &str) -> Option<&HookReport> {
        self.hooks.iter().find(|h| h.name == name)
    }
}

impl std::fmt::Display for EngineStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "polls={} rx_frames={} tx_frames={} doorbells={} grants={} flows={} frames_in_use={}",
            self.polls,
            self.rx_frames,
            self.tx_frames,
            self.doorbells,
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
            "  {:<12} punted={} established={} closed={} resets={} rst_sent={} challenge_acks={} timeouts={} probes={} syn_retx={} arp_req={} arp_replies={} drops: {}",
            "control",
            c.punted,
            c.established,
            c.closed,
            c.resets,
            c.rst_sent,
            c.challenge_acks,
            c.timeouts,
            c.probes,
            c.syn_retransmits,
            c.arp_requests,
            c.arp_replies,
            c.drops
        )
    }
}

/// A TCP offload engine on the inline runtime: stages, user stages, policies, control plane,
/// application interface and a port. `C` is the congestion control and `S` the flow
/// scheduler (see [`Pipeline::builder`]). The data path's four segments (see
/// [the module docs](self#the-data-path)) run one after another on the caller's thread.
pub struct Engine<P: Port, C: CongestionControl = NewReno, S: FlowScheduler = RoundRobin> {
    arena: Arc<FrameArena>,
    port: P,
    burst: usize,
    ingress: Ingress,
    transport: Transport<C, S>,
    delivery: Delivery,
    egress: Egress,
    /// The `tx_frame` stages' instance for frames that do not come through egress
    /// (control-plane frames, frames user stages sent back out).
    raw_tx_hooks: Chain<hooks::TxFrame>,
    rings: Vec<RedirectRing>,
    control: Control,
    host: Arc<HostShared>,
    // Scratch bursts, reused.
    rx: Vec<Frame>,
    no_seqs: Vec<u64>,
    segs: Vec<RxWork>,
    punts: Vec<Punt>,
    diverted: Diverted,
    raw: Vec<Frame>,
    work: Vec<ProtoWork>,
    results: Vec<ProtoResult>,
    events: Vec<ControlEvent>,
    tx: Vec<Frame>,
    cout: ControlOutput,
    stats: EngineStats,
}

impl<P: Port> Engine<P> {
    /// Build the default pipeline on `port`: the built-in stages, no user stages, the
    /// default policies. Short for `Pipeline::builder(cfg, port).build()`.
    pub fn new(cfg: EngineConfig, port: P) -> Result<Self, EngineError> {
        Pipeline::builder(cfg, port).build()
    }
}

impl<P: Port, C: CongestionControl, S: FlowScheduler> Engine<P, C, S> {
    pub(crate) fn assemble(
        cfg: EngineConfig,
        port: P,
        cc: C,
        sched: S,
        hooks: Hooks,
    ) -> Result<Self, EngineError> {
        let Parts {
            arena,
            host,
            control,
        } = Parts::new(&cfg, port.mtu(), port.arena())?;
        let Hooks {
            rx_frame,
            rx_segment,
            results,
            tx_frame,
            rings,
        } = hooks;
        Ok(Engine {
            ingress: Ingress {
                arena: arena.clone(),
                pre: Preprocess::new(arena.clone(), cfg.mac, cfg.ip),
                hooks: rx_frame,
                rings: rings.clone(),
                instance: 0,
            },
            transport: Transport::new(
                arena.clone(),
                Protocol::with_congestion(cc),
                sched,
                (rx_segment, results),
                rings.clone(),
                0,
            ),
            delivery: Delivery {
                place: Place::new(arena.clone()),
                notify: Notify::new(),
            },
            egress: Egress::new(
                arena.clone(),
                Postprocess::new(arena.clone(), cfg.ack_policy),
                tx_frame.clone(),
                rings.clone(),
                0,
                port.capabilities().tx_checksum_offload,
            ),
            raw_tx_hooks: tx_frame,
            rings,
            control,
            host,
            arena,
            port,
            burst: cfg.burst,
            rx: Vec::with_capacity(cfg.burst),
            no_seqs: Vec::new(),
            segs: Vec::with_capacity(cfg.burst),
            punts: Vec::new(),
            diverted: Diverted::default(),
            raw: Vec::new(),
            work: Vec::with_capacity(cfg.burst),
            results: Vec::with_capacity(cfg.burst),
            events: Vec::new(),
            tx: Vec::with_capacity(cfg.burst * 2),
            cout: ControlOutput::default(),
            stats: EngineStats::default(),
        })
    }

    /// A handle for opening sockets on this engine.
    pub fn host(&self) -> Host {
        Host {
            shared: self.host.clone(),
        }
    }

    /// The frame arena.
    pub fn arena(&self) -> &Arc<FrameArena> {
        &self.arena
    }

    /// The port.
    pub fn port(&self) -> &P {
        &self.port
    }

    /// The port, mutably.
    pub fn port_mut(&mut self) -> &mut P {
        &mut self.port
    }

    /// Entries in the data path's flow table.
    pub fn flow_count(&self) -> usize {
        self.ingress.pre.table().len()
    }

    /// Connection state of a tuple (handshakes included).
    pub fn conn_state(&self, t: &FourTuple) -> Option<TcpConnState> {
        self.control.conn_state(t)
    }

    /// Every connection the control plane knows.
    pub fn connections(&self) -> Vec<FourTuple> {
        self.control.tuples()
    }

    /// Whether a listener is open on `port`.
    pub fn is_listening(&self, port: u16) -> bool {
        self.control.is_listening(port)
    }

    /// The protocol stage's state of a flow (read-only).
    pub fn tcp_state(&self, t: &FourTuple) -> Option<&TcpState> {
        let id = self.ingress.pre.table().lookup(t)?;
        self.transport.proto.state(id)
    }

    /// The congestion-control state of a flow (read-only).
    pub fn congestion_state(&self, t: &FourTuple) -> Option<&C::Flow> {
        let id = self.ingress.pre.table().lookup(t)?;
        self.transport.proto.congestion_state(id)
    }

    /// Retransmissions over the engine's lifetime (go-back-N after duplicate ACKs and after
    /// timeouts).
    pub fn retransmissions(&self) -> RetransmitTotals {
        self.control.retransmissions()
    }

    /// The earliest time the engine has something to do without new input.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.control.next_deadline(), self.port.next_arrival()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        let mut s = self.stats.clone();
        let pre = &self.ingress.pre;
        let [proto, sched] = self.transport.stats();
        let [place, notify] = self.delivery.stats();
        let [post, egress] = self.egress.stats();
        s.stages = vec![
            (pre.name(), pre.stats().clone()),
            proto,
            place,
            post,
            notify,
            sched,
            egress,
        ];
        let mut hooks = self.ingress.hooks.reports();
        hooks.extend(self.transport.seg_hooks.reports());
        hooks.extend(self.transport.result_hooks.reports());
        HookReport::merge_into(&mut hooks, &self.egress.hooks.reports());
        HookReport::merge_into(&mut hooks, &self.raw_tx_hooks.reports());
        s.hooks = hooks;
        s.control = self.control.stats().clone();
        s.frames_in_use = self.arena.in_use();
        s.flows = self.flow_count();
        s
    }

    /// One pass of the inline runtime: receive and process up to a few bursts, apply the
    /// application's updates, run the timers, send what the windows allow. Returns whether
    /// anything happened.
    pub fn poll(&mut self, now: Instant) -> bool {
        self.stats.polls += 1;
        let mut busy = false;
        self.control.poll_requests(now, &mut self.cout);
        busy |= self.apply_control(now);

        for _ in 0..4 {
            let n = self.port.recv(now, &self.arena, &mut self.rx, self.burst);
            if n == 0 {
                break;
            }
            busy = true;
            self.stats.rx_frames += n as u64;
            let (segs, punts) = (&mut self.segs, &mut self.punts);
            self.ingress.run(
                now,
                &mut self.rx,
                &mut self.no_seqs,
                &mut self.diverted,
                |_, out| match out {
                    PreOut::Rx(w) => segs.push(w),
                    PreOut::Punt(p) => punts.push(p),
                },
            );
            for p in self.punts.drain(..) {
                self.control.handle_punt(now, p, &mut self.cout);
            }
            self.take_segments(now);
            self.run(now);
            busy |= self.apply_control(now);
        }

        busy |= self.drain_doorbells(now);

        self.control.poll_timers(now, &mut self.cout);
        busy |= self.apply_control(now);

        for _ in 0..8 {
            if self.transport.sched.pending() == 0 {
                break;
            }
            self.stats.grants += self.transport.grant(now, self.burst, &mut self.work) as u64;
            self.run(now);
            busy = true;
            if self.tx.len() >= self.burst {
                self.flush(now);
            }
        }
        busy |= self.apply_control(now);
        self.flush(now);
        busy
    }

    /// Segments of established flows through the transport's `rx_segment` stages into the
    /// work queue.
    fn take_segments(&mut self, now: Instant) {
        self.transport
            .take_segments(now, &mut self.segs, &mut self.work, &mut self.diverted);
        self.apply_diverted(now);
    }

    /// Frames user stages sent back out or punted.
    fn apply_diverted(&mut self, now: Instant) {
        if self.diverted.is_empty() {
            return;
        }
        self.raw.append(&mut self.diverted.tx);
        self.send_raw(now);
        for frame in self.diverted.punt.drain(..) {
            let p = Punt {
                frame,
                reason: PuntReason::Extension,
            };
            self.control.handle_punt(now, p, &mut self.cout);
        }
    }

    /// Frames that did not come through egress (control plane, sent back by a user stage):
    /// through their own instance of the `tx_frame` stages, then out.
    fn send_raw(&mut self, now: Instant) {
        if self.raw.is_empty() {
            return;
        }
        if !self.raw_tx_hooks.is_empty() {
            let cx = hooks::HookCx {
                now,
                arena: &self.arena,
                instance: 1,
            };
            // Nothing is punted or sent back at `tx_frame`: `diverted` stays empty.
            self.raw_tx_hooks.run(
                &cx,
                &mut self.raw,
                &mut Vec::<()>::new(),
                &self.rings,
                false,
                &mut self.diverted,
            );
        }
        self.tx.append(&mut self.raw);
    }

    fn flush(&mut self, now: Instant) {
        if !self.tx.is_empty() {
            self.stats.tx_frames += self.tx.len() as u64;
            self.port.send(now, &self.arena, &mut self.tx);
        }
    }

    fn drain_doorbells(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(flow) = self.host.doorbells.pop() {
            any = true;
            self.stats.doorbells += 1;
            if let Some(mut w) = self.control.app_update(flow, &mut self.cout) {
                self.delivery.place.fill_positions(&mut w);
                self.work.push(w);
            }
            if self.work.len() >= self.burst {
                self.run(now);
            }
        }
        self.run(now);
        any |= self.apply_control(now);
        any
    }

    /// Run the queued work through transport, delivery and egress.
    fn run(&mut self, now: Instant) {
        if self.work.is_empty() {
            return;
        }
        self.transport.run(now, &mut self.work, &mut self.results);
        self.delivery.run(now, &mut self.results, &mut self.events);
        let tx = &mut self.tx;
        self.egress.run(now, &mut self.results, |_, f| {
            if let Some(f) = f {
                tx.push(f);
            }
        });
        self.results.clear();
        for ev in self.events.drain(..) {
            self.control.handle_event(now, ev, &mut self.cout);
        }
        if self.tx.len() >= self.burst {
            self.flush(now);
        }
    }

    /// Carry out what the control plane asked for. Returns whether there was anything.
    fn apply_control(&mut self, now: Instant) -> bool {
        let mut any = false;
        // Loop: installing and running work can produce more control output.
        for _ in 0..4 {
            let c = &mut self.cout;
            if c.installs.is_empty()
                && c.removals.is_empty()
                && c.work.is_empty()
                && c.tx.is_empty()
                && c.reinject.is_empty()
            {
                break;
            }
            any = true;
            self.raw.append(&mut self.cout.tx);
            self.send_raw(now);
            let installs = std::mem::take(&mut self.cout.installs);
            for ins in installs {
                let id = ins.identity.id;
                self.ingress.pre.install(ins.identity.tuple, id);
                self.transport.install(id, ins.state, &ins.identity);
                self.egress.post.install(
                    id,
                    FlowView {
                        identity: ins.identity.clone(),
                        counters: ins.counters,
                    },
                );
                self.delivery.place.install(id, ins.rings);
                self.delivery.notify.install(id, ins.conn.clone());
                ins.conn.set_flow(id);
                ins.conn.set_status(crate::host::ConnStatus::Established);
                // Pick up anything the application did before the flow existed.
                if let Some(mut w) = self.control.app_update(id, &mut self.cout) {
                    self.delivery.place.fill_positions(&mut w);
                    self.cout.work.push(w);
                }
            }
            let mut reinject = std::mem::take(&mut self.cout.reinject);
            for f in reinject.drain(..) {
                match self.ingress.pre.classify(f, true) {
                    Some(PreOut::Rx(w)) => self.segs.push(w),
                    Some(PreOut::Punt(p)) => {
                        self.transport.proto.count_drop(DropReason::StaleFlow);
                        self.arena.free(p.frame);
                    }
                    None => {}
                }
            }
            self.take_segments(now);
            self.work.append(&mut self.cout.work);
            self.run(now);
            let removals = std::mem::take(&mut self.cout.removals);
            for (id, tuple) in removals {
                self.remove_flow(id, &tuple);
            }
        }
        any
    }

    fn remove_flow(&mut self, id: FlowId, tuple: &FourTuple) {
        self.ingress.pre.remove(tuple);
        self.transport.remove(id);
        self.delivery.place.remove(id);
        self.delivery.notify.remove(id);
        self.egress.post.remove(id);
    }
}

impl<P: Port, C: CongestionControl, S: FlowScheduler> Drop for Engine<P, C, S> {
    fn drop(&mut self) {
        self.host.engine_alive.store(false, Ordering::Release);
        let d = &mut self.diverted;
        let held = self
            .rx
            .drain(..)
            .chain(self.tx.drain(..))
            .chain(self.raw.drain(..))
            .chain(self.segs.drain(..).map(|w| w.frame))
            .chain(self.punts.drain(..).map(|p| p.frame))
            .chain(d.tx.drain(..))
            .chain(d.punt.drain(..));
        for f in held {
            self.arena.free(f);
        }
    }
}

/// How often a [`Runtime`] publishes its engine's counters.
const STATS_EVERY: Duration = Duration::from_millis(100);

/// Runs an engine on its own thread, polling it with a clock, until stopped. Blocking
/// socket calls work against a running runtime.
pub struct Runtime<P: Port + 'static, C: CongestionControl = NewReno, S: FlowScheduler = RoundRobin>
{
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Engine<P, C, S>>>,
    host: Host,
    stats: Arc<std::sync::Mutex<EngineStats>>,
}

impl<P: Port + 'static, C: CongestionControl, S: FlowScheduler> Runtime<P, C, S> {
    /// Start polling `engine` on a new thread with `clock`.
    pub fn spawn(
        mut engine: Engine<P, C, S>,
        clock: impl Clock + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let host = engine.host();
        let s = stop.clone();
        let stats = Arc::new(std::sync::Mutex::new(engine.stats()));
        let slot = stats.clone();
        let handle = std::thread::Builder::new()
            .name("flextoe-engine".into())
            .spawn(move || {
                let mut idle = 0u32;
                let mut published = clock.now();
                while !s.load(Ordering::Relaxed) {
                    let now = clock.now();
                    if now.saturating_since(published) >= STATS_EVERY {
                        published = now;
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = engine.stats();
                    }
                    if engine.poll(now) {
                        idle = 0;
                    } else {
                        idle = idle.saturating_add(1);
                        if idle > 256 {
                            std::thread::sleep(Duration::from_micros(50));
                        } else if idle > 16 {
                            std::thread::yield_now();
                        }
                    }
                }
                engine
            })?;
        Ok(Runtime {
            stop,
            handle: Some(handle),
            host,
            stats,
        })
    }

    /// The engine's counters as last published (every 100 ms of the runtime's clock).
    pub fn stats(&self) -> EngineStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A socket handle for the engine.
    pub fn host(&self) -> Host {
        self.host.clone()
    }

    /// Stop the thread and get the engine back.
    pub fn stop(mut self) -> Engine<P, C, S> {
        self.stop.store(true, Ordering::Relaxed);
        let h = self.handle.take().expect("runtime joined once");
        match h.join() {
            Ok(e) => e,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

impl<P: Port + 'static, C: CongestionControl, S: FlowScheduler> Drop for Runtime<P, C, S> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
