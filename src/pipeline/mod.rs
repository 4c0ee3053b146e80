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
use crate::stages::{
    Actions, PreOut, ProtoResult, ProtoWork, Punt, PuntReason, RxWork, Stage, BURST,
};
use crate::stats::{DropReason, StageStats};
use crate::time::{Clock, Instant};
use crate::wire::{self, FourTuple, MacAddr};

pub mod builder;
pub mod hooks;
pub mod threaded;
pub mod topology;

pub use builder::{Pipeline, PipelineBuilder};
pub use hooks::{Hook, HookCx, HookReport, Hooks, RedirectRing, Verdict, Verdicts};
pub use threaded::{Threaded, ThreadedStats};
pub use topology::{ByFlowId, Placement, TaskRef, Topology, WorkerSpec};

use hooks::Diverted;

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
/// scheduler (see [`Pipeline::builder`]).
pub struct Engine<P: Port, C: CongestionControl = NewReno, S: FlowScheduler = RoundRobin> {
    arena: Arc<FrameArena>,
    port: P,
    burst: usize,
    pre: Preprocess,
    proto: Protocol<C>,
    place: Place,
    post: Postprocess,
    notify: Notify,
    sched: S,
    hooks: Hooks,
    control: Control,
    host: Arc<HostShared>,
    segs: Vec<RxWork>,
    diverted: Diverted,
    /// The port fills in checksums.
    csum_offload: bool,
    // Scratch bursts, reused.
    rx: Vec<Frame>,
    pre_out: Vec<PreOut>,
    work: Vec<ProtoWork>,
    res_a: Vec<ProtoResult>,
    events: Vec<ControlEvent>,
    tx: Vec<Frame>,
    cout: ControlOutput,
    egress_stats: StageStats,
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
        Ok(Engine {
            pre: Preprocess::new(arena.clone(), cfg.mac, cfg.ip),
            proto: Protocol::with_congestion(cc),
            place: Place::new(arena.clone()),
            post: Postprocess::new(arena.clone(), cfg.ack_policy),
            notify: Notify::new(),
            sched,
            hooks,
            segs: Vec::with_capacity(cfg.burst),
            diverted: Diverted::default(),
            csum_offload: port.capabilities().tx_checksum_offload,
            control,
            host,
            arena,
            port,
            burst: cfg.burst,
            rx: Vec::with_capacity(cfg.burst),
            pre_out: Vec::with_capacity(cfg.burst),
            work: Vec::with_capacity(cfg.burst),
            res_a: Vec::with_capacity(cfg.burst),
            events: Vec::new(),
            tx: Vec::with_capacity(cfg.burst * 2),
            cout: ControlOutput::default(),
            egress_stats: StageStats::default(),
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
        self.pre.table().len()
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
        let id = self.pre.table().lookup(t)?;
        self.proto.state(id)
    }

    /// The congestion-control state of a flow (read-only).
    pub fn congestion_state(&self, t: &FourTuple) -> Option<&C::Flow> {
        let id = self.pre.table().lookup(t)?;
        self.proto.congestion_state(id)
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
        s.stages = vec![
            (self.pre.name(), self.pre.stats().clone()),
            (self.proto.name(), self.proto.stats().clone()),
            (self.place.name(), self.place.stats().clone()),
            (self.post.name(), self.post.stats().clone()),
            (self.notify.name(), self.notify.stats().clone()),
            (self.sched.name(), self.sched.stats()),
            ("egress", self.egress_stats.clone()),
        ];
        s.hooks = self.hooks.reports();
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
            if !self.hooks.rx_frame.is_empty() {
                let cx = hooks::HookCx {
                    now,
                    arena: &self.arena,
                    instance: 0,
                };
                self.hooks.rx_frame.run(
                    &cx,
                    &mut self.rx,
                    &mut Vec::<()>::new(),
                    &self.hooks.rings,
                    true,
                    &mut self.diverted,
                );
                self.apply_diverted(now);
            }
            self.pre.process(now, &mut self.rx, &mut self.pre_out);
            for item in self.pre_out.drain(..) {
                match item {
                    PreOut::Rx(w) => self.segs.push(w),
                    PreOut::Punt(p) => self.control.handle_punt(now, p, &mut self.cout),
                }
            }
            self.take_segments(now);
            self.run(now, true);
            busy |= self.apply_control(now);
        }

        busy |= self.drain_doorbells(now);

        self.control.poll_timers(now, &mut self.cout);
        busy |= self.apply_control(now);

        for _ in 0..8 {
            if self.sched.pending() == 0 {
                break;
            }
            let before = self.stats.grants;
            self.sched.grant(now, self.burst, &mut self.work);
            self.stats.grants = before + self.work.len() as u64;
            self.run(now, false);
            busy = true;
            if self.tx.len() >= self.burst {
                self.flush(now);
            }
        }
        busy |= self.apply_control(now);
        self.flush(now);
        busy
    }

    /// Segments of established flows through the `rx_segment` hooks, on to protocol.
    fn take_segments(&mut self, now: Instant) {
        if self.segs.is_empty() {
            return;
        }
        if !self.hooks.rx_segment.is_empty() {
            let cx = hooks::HookCx {
                now,
                arena: &self.arena,
                instance: 0,
            };
            self.hooks.rx_segment.run(
                &cx,
                &mut self.segs,
                &mut Vec::<()>::new(),
                &self.hooks.rings,
                true,
                &mut self.diverted,
            );
            self.apply_diverted(now);
        }
        self.work.extend(self.segs.drain(..).map(ProtoWork::Rx));
    }

    /// Frames user stages sent back out or punted.
    fn apply_diverted(&mut self, now: Instant) {
        self.tx.append(&mut self.diverted.tx);
        for frame in self.diverted.punt.drain(..) {
            let p = Punt {
                frame,
                reason: PuntReason::Extension,
            };
            self.control.handle_punt(now, p, &mut self.cout);
        }
    }

    fn flush(&mut self, now: Instant) {
        if !self.hooks.tx_frame.is_empty() && !self.tx.is_empty() {
            let cx = hooks::HookCx {
                now,
                arena: &self.arena,
                instance: 0,
            };
            self.hooks.tx_frame.run(
                &cx,
                &mut self.tx,
                &mut Vec::<()>::new(),
                &self.hooks.rings,
                false,
                &mut self.diverted,
            );
        }
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
                self.place.fill_positions(&mut w);
                self.work.push(w);
            }
            if self.work.len() >= self.burst {
                self.run(now, false);
            }
        }
        if !self.work.is_empty() {
            self.run(now, false);
        }
        any |= self.apply_control(now);
        any
    }

    /// Run the queued work through protocol and the stages after it. `rx` selects the
    /// receive order (place before postprocess, so payload is placed before the ACK leaves).
    fn run(&mut self, now: Instant, rx: bool) {
        if self.work.is_empty() {
            return;
        }
        self.proto.process(now, &mut self.work, &mut self.res_a);
        if !self.hooks.results.is_empty() {
            let cx = hooks::HookCx {
                now,
                arena: &self.arena,
                instance: 0,
            };
            self.hooks.results.run_results(&cx, &mut self.res_a);
        }
        if rx {
            self.place.process_in_place(now, &mut self.res_a);
            self.post.process_in_place(now, &mut self.res_a);
        } else {
            self.post.process_in_place(now, &mut self.res_a);
            self.place.process_in_place(now, &mut self.res_a);
        }
        // Egress: checksums, scheduler activations.
        self.egress_stats.bursts += 1;
        for r in self.res_a.iter_mut() {
            self.egress_stats.items_in += 1;
            if let Some(mut f) = r.tx_frame.take() {
                if !self.csum_offload {
                    wire::fill_checksums(self.arena.data_mut(&mut f));
                }
                self.egress_stats.items_out += 1;
                self.tx.push(f);
            }
            if r.actions.any(Actions::SCHED) {
                self.sched.activate(r.flow, now);
            }
        }
        self.notify
            .process_slice(now, &self.res_a, &mut self.events);
        self.res_a.clear();
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
            self.tx.append(&mut self.cout.tx);
            let installs = std::mem::take(&mut self.cout.installs);
            for ins in installs {
                let id = ins.identity.id;
                self.pre.install(ins.identity.tuple, id);
                self.proto.install(id, ins.state);
                self.post.install(
                    id,
                    FlowView {
                        identity: ins.identity.clone(),
                        counters: ins.counters,
                    },
                );
                self.sched.install(id, &ins.identity);
                self.place.install(id, ins.rings);
                self.notify.install(id, ins.conn.clone());
                ins.conn.set_flow(id);
                ins.conn.set_status(crate::host::ConnStatus::Established);
                // Pick up anything the application did before the flow existed.
                if let Some(mut w) = self.control.app_update(id, &mut self.cout) {
                    self.place.fill_positions(&mut w);
                    self.cout.work.push(w);
                }
            }
            let mut reinject = std::mem::take(&mut self.cout.reinject);
            for f in reinject.drain(..) {
                match self.pre.classify(f, true) {
                    Some(PreOut::Rx(w)) => self.segs.push(w),
                    Some(PreOut::Punt(p)) => {
                        self.egress_stats.drops.add(DropReason::StaleFlow);
                        self.arena.free(p.frame);
                    }
                    None => {}
                }
            }
            self.take_segments(now);
            self.run(now, true);
            self.work.append(&mut self.cout.work);
            self.run(now, false);
            let removals = std::mem::take(&mut self.cout.removals);
            for (id, tuple) in removals {
                self.remove_flow(id, &tuple);
            }
        }
        any
    }

    fn remove_flow(&mut self, id: FlowId, tuple: &FourTuple) {
        self.pre.remove(tuple);
        self.proto.remove(id);
        self.place.remove(id);
        self.post.remove(id);
        self.notify.remove(id);
        self.sched.remove(id);
    }
}

impl<P: Port, C: CongestionControl, S: FlowScheduler> Drop for Engine<P, C, S> {
    fn drop(&mut self) {
        self.host.engine_alive.store(false, Ordering::Release);
        let d = &mut self.diverted;
        let segs = self.segs.drain(..).map(|w| w.frame);
        for f in self.rx.drain(..).chain(self.tx.drain(..)).chain(segs) {
            self.arena.free(f);
        }
        for f in d.tx.drain(..).chain(d.punt.drain(..)) {
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
