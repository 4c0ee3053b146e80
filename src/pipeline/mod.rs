//! Composition and runtimes.
//!
//! [`Engine`] joins the stages, the control plane, the application interface and a
//! [`Port`] into a TCP offload engine. [`Engine::poll`] runs one pass of the inline runtime
//! on the caller's thread: every burst goes through all stages, run to completion. For
//! blocking sockets, [`Runtime`] runs the same engine on a thread of its own.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::backends::Port;
use crate::buf::{Frame, FrameArena};
use crate::control::{Control, ControlConfig, ControlOutput, ControlStats, TcpConnState};
use crate::flow::{FlowId, RetransmitTotals};
use crate::host::{Host, HostShared, PortAlloc};
use crate::stages::notify::{ControlEvent, Notify};
use crate::stages::place::Place;
use crate::stages::postprocess::{FlowView, Postprocess};
use crate::stages::preprocess::Preprocess;
use crate::stages::protocol::{AckPolicy, Protocol, TcpState};
use crate::stages::scheduler::Scheduler;
use crate::stages::{Actions, PreOut, ProtoResult, ProtoWork, Stage, BURST};
use crate::stats::{DropReason, StageStats};
use crate::time::{Clock, Instant};
use crate::wire::{self, FourTuple, MacAddr};

pub mod threaded;
pub mod topology;

pub use threaded::{Threaded, ThreadedStats};
pub use topology::{TaskRef, Topology, WorkerSpec};

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
        control_cfg.mtu = control_cfg.mtu.min(mtu as u16);
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

/// A TCP offload engine: stages, control plane, application interface and a port.
pub struct Engine<P: Port> {
    arena: Arc<FrameArena>,
    port: P,
    burst: usize,
    pre: Preprocess,
    proto: Protocol,
    place: Place,
    post: Postprocess,
    notify: Notify,
    sched: Scheduler,
    control: Control,
    host: Arc<HostShared>,
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
    /// Build an engine on `port`.
    pub fn new(cfg: EngineConfig, port: P) -> Result<Self, EngineError> {
        let Parts {
            arena,
            host,
            control,
        } = Parts::new(&cfg, port.mtu(), port.arena())?;
        Ok(Engine {
            pre: Preprocess::new(arena.clone(), cfg.mac, cfg.ip),
            proto: Protocol::new(),
            place: Place::new(arena.clone()),
            post: Postprocess::new(arena.clone(), cfg.ack_policy),
            notify: Notify::new(),
            sched: Scheduler::new(),
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
            (self.sched.name(), self.sched.stats().clone()),
            ("egress", self.egress_stats.clone()),
        ];
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
            self.pre.process(now, &mut self.rx, &mut self.pre_out);
            for item in self.pre_out.drain(..) {
                match item {
                    PreOut::Rx(w) => self.work.push(ProtoWork::Rx(w)),
                    PreOut::Punt(p) => self.control.handle_punt(now, p, &mut self.cout),
                }
            }
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
            self.sched.grant(self.burst, &mut self.work);
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
                wire::fill_checksums(self.arena.data_mut(&mut f));
                self.egress_stats.items_out += 1;
                self.tx.push(f);
            }
            if r.actions.any(Actions::SCHED) {
                self.sched.activate(r.flow);
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
                    Some(PreOut::Rx(w)) => self.work.push(ProtoWork::Rx(w)),
                    Some(PreOut::Punt(p)) => {
                        self.egress_stats.drops.add(DropReason::StaleFlow);
                        self.arena.free(p.frame);
                    }
                    None => {}
                }
            }
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

impl<P: Port> Drop for Engine<P> {
    fn drop(&mut self) {
        self.host.engine_alive.store(false, Ordering::Release);
        for f in self.rx.drain(..).chain(self.tx.drain(..)) {
            self.arena.free(f);
        }
    }
}

/// Runs an engine on its own thread, polling it with a clock, until stopped. Blocking
/// socket calls work against a running runtime.
pub struct Runtime<P: Port + 'static> {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Engine<P>>>,
    host: Host,
}

impl<P: Port + 'static> Runtime<P> {
    /// Start polling `engine` on a new thread with `clock`.
    pub fn spawn(mut engine: Engine<P>, clock: impl Clock + 'static) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let host = engine.host();
        let s = stop.clone();
        let handle = std::thread::Builder::new()
            .name("flextoe-engine".into())
            .spawn(move || {
                let mut idle = 0u32;
                while !s.load(Ordering::Relaxed) {
                    if engine.poll(clock.now()) {
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
        })
    }

    /// A socket handle for the engine.
    pub fn host(&self) -> Host {
        self.host.clone()
    }

    /// Stop the thread and get the engine back.
    pub fn stop(mut self) -> Engine<P> {
        self.stop.store(true, Ordering::Relaxed);
        let h = self.handle.take().expect("runtime joined once");
        match h.join() {
            Ok(e) => e,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

impl<P: Port + 'static> Drop for Runtime<P> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
