//! The control plane: everything the data path punts, and everything that needs a timer.
//!
//! * Handshakes (active and passive open) with MSS, window scaling and timestamp negotiation
//!   and SACK-permitted understood (not offered); initial sequence numbers from a keyed hash
//!   (RFC 6528); listen backlogs.
//! * Teardown: the connection states around FIN in both directions, TIME-WAIT, flow removal
//!   from every stage.
//! * RST handling with RFC 5961 challenge ACKs; RSTs for segments that match nothing.
//! * Retransmission timeouts per RFC 6298 (RTT samples come from the data path's counters),
//!   go-back-N through the protocol stage; zero-window probes.
//! * ARP: answering, resolving, caching.
//!
//! The control plane never writes TCP state. It reads the protocol stage's state (RST
//! acceptability) and the flows' counters, and it asks the data path to act through
//! [`ProtoWork`] items: `Retransmit`, `Probe`, `Ack`, `Reset`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use smoltcp::wire::{ArpOperation, ArpRepr, TcpControl, TcpRepr, TcpSeqNumber, TcpTimestampRepr};

use crate::buf::{Frame, FrameArena};
use crate::flow::{flow_group, FlowCounters, FlowId, FlowIdentity};
use crate::host::{AppRequest, ConnShared, ConnStatus, HostShared, Stream};
use crate::stages::notify::ControlEvent;
use crate::stages::place::FlowRings;
use crate::stages::protocol::{TcpParams, TcpState};
use crate::stages::{Actions, ProtoWork, Punt, PuntReason};
use crate::stats::{DropCounters, DropReason};
use crate::time::Instant;

pub mod congestion;
pub mod secrets;
use crate::wire::{self, flags, Endpoints, FourTuple, MacAddr, Parsed, TcpSegment};

/// RFC 9293 connection states, as the control plane tracks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpConnState {
    /// A listener (see [`crate::pipeline::Engine::is_listening`]).
    Listen,
    /// SYN sent, waiting for SYN-ACK.
    SynSent,
    /// SYN received, SYN-ACK sent.
    SynReceived,
    /// Data transfer.
    Established,
    /// We closed; our FIN is not yet acknowledged.
    FinWait1,
    /// Our FIN is acknowledged; waiting for the peer's.
    FinWait2,
    /// Both sides closed at once; waiting for the ACK of our FIN.
    Closing,
    /// Both FINs done; waiting 2 MSL.
    TimeWait,
    /// The peer closed; we may still send.
    CloseWait,
    /// The peer closed, then we did; waiting for the ACK of our FIN.
    LastAck,
}

/// Control-plane settings.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// Our MAC address.
    pub mac: MacAddr,
    /// Our IPv4 address.
    pub ip: Ipv4Addr,
    /// IP MTU (the MSS we announce is this minus 40).
    pub mtu: u16,
    /// Offer and accept window scaling.
    pub window_scaling: bool,
    /// Offer and accept timestamps.
    pub timestamps: bool,
    /// Initial congestion window in segments.
    pub initial_cwnd_segments: u32,
    /// Lower bound of the retransmission timeout.
    pub rto_min: Duration,
    /// Retransmission timeout before any RTT sample (RFC 6298: 1 s).
    pub rto_initial: Duration,
    /// Upper bound of the retransmission timeout.
    pub rto_max: Duration,
    /// Timeouts in a row after which a connection is aborted.
    pub max_retransmissions: u32,
    /// SYN / SYN-ACK retransmissions before a handshake fails.
    pub syn_retries: u32,
    /// TIME-WAIT duration (2 MSL).
    pub time_wait: Duration,
    /// Static neighbour entries (IP -> MAC).
    pub neighbors: Vec<(Ipv4Addr, MacAddr)>,
    /// Most connections at once.
    pub max_flows: usize,
    /// Number of flow groups (power of two).
    pub flow_groups: u16,
    /// Key for initial sequence numbers (RFC 6528) and timestamp offsets (RFC 7323 5.4).
    /// [`EngineConfig::new`](crate::pipeline::EngineConfig::new) draws a fresh one from the
    /// operating system; keep it secret.
    pub isn_secret: [u64; 2],
}

/// What the control plane did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlStats {
    /// Frames punted to the control plane.
    pub punted: u64,
    /// Drops, by reason.
    pub drops: DropCounters,
    /// Connections established.
    pub established: u64,
    /// Connections closed in order.
    pub closed: u64,
    /// Connections reset (either side).
    pub resets: u64,
    /// RSTs sent.
    pub rst_sent: u64,
    /// Challenge ACKs sent (RFC 5961).
    pub challenge_acks: u64,
    /// Retransmission timeouts fired.
    pub timeouts: u64,
    /// Zero-window probes sent.
    pub probes: u64,
    /// SYN or SYN-ACK retransmissions.
    pub syn_retransmits: u64,
    /// ARP requests answered.
    pub arp_replies: u64,
    /// ARP requests sent.
    pub arp_requests: u64,
}

/// A flow to install in every stage.
pub struct FlowInstall {
    /// Identity (also carries the id and tuple).
    pub identity: Arc<FlowIdentity>,
    /// Counters.
    pub counters: Arc<FlowCounters>,
    /// Initial TCP state.
    pub state: TcpState,
    /// Engine ends of the rings.
    pub rings: FlowRings,
    /// Application side.
    pub conn: Arc<ConnShared>,
}

/// What the engine must carry out after a control-plane call.
#[derive(Default)]
pub struct ControlOutput {
    /// Flows to install.
    pub installs: Vec<FlowInstall>,
    /// Flows to remove from every stage.
    pub removals: Vec<(FlowId, FourTuple)>,
    /// Work for the protocol stage.
    pub work: Vec<ProtoWork>,
    /// Frames to send.
    pub tx: Vec<Frame>,
    /// Frames to run through preprocess again, options accepted.
    pub reinject: Vec<Frame>,
}

struct Listening {
    backlog: usize,
    accept_tx: Sender<Stream>,
    pending: usize,
}

struct Embryo {
    state: TcpConnState,
    iss: u32,
    irs: u32,
    remote_mac: MacAddr,
    peer_mss: u16,
    peer_wscale: Option<u8>,
    peer_ts: Option<u32>,
    timestamps: bool,
    conn: Arc<ConnShared>,
    rings: Option<FlowRings>,
    active: bool,
    retries: u32,
    next_retx: Instant,
}

struct Conn {
    tuple: FourTuple,
    state: TcpConnState,
    conn: Arc<ConnShared>,
    counters: Arc<FlowCounters>,
    ephemeral: bool,
    fin_seen: bool,
    abort_seen: bool,
    srtt_us: Option<f64>,
    rttvar_us: f64,
    rto: Duration,
    backoff: u32,
    retries: u32,
    last_acked: u64,
    last_rtt: (u64, u64),
    last_progress: Instant,
    persist_at: Option<Instant>,
    time_wait_until: Option<Instant>,
}

struct PendingConnect {
    tuple: FourTuple,
    conn: Arc<ConnShared>,
    rings: FlowRings,
}

struct ArpWait {
    conns: Vec<PendingConnect>,
    tries: u32,
    next: Instant,
}

/// The control plane.
pub struct Control {
    cfg: ControlConfig,
    arena: Arc<FrameArena>,
    host: Arc<HostShared>,
    requests: Receiver<AppRequest>,
    listeners: HashMap<u16, Listening>,
    embryos: HashMap<FourTuple, Embryo>,
    conns: Vec<Option<Conn>>,
    by_tuple: HashMap<FourTuple, FlowId>,
    free_ids: Vec<FlowId>,
    neighbors: HashMap<Ipv4Addr, MacAddr>,
    arp_wait: HashMap<Ipv4Addr, ArpWait>,
    secrets: secrets::Secrets,
    stats: ControlStats,
    retired: crate::flow::RetransmitTotals,
}

const ARP_RETRY: Duration = Duration::from_millis(500);
/// Smallest MSS a peer may announce (as Linux clamps it): anything below is raised to this.
pub const MIN_PEER_MSS: u16 = 88;
/// What a peer that announces no MSS gets (RFC 9293 3.7.1).
const DEFAULT_PEER_MSS: u16 = 536;

/// The peer's MSS option, clamped: no option means 536, a tiny one means [`MIN_PEER_MSS`].
fn peer_mss(announced: Option<u16>) -> u16 {
    announced.unwrap_or(DEFAULT_PEER_MSS).max(MIN_PEER_MSS)
}
const ARP_TRIES: u32 = 4;

impl Control {
    /// A control plane.
    pub(crate) fn new(
        cfg: ControlConfig,
        arena: Arc<FrameArena>,
        host: Arc<HostShared>,
        requests: Receiver<AppRequest>,
    ) -> Self {
        let neighbors = cfg.neighbors.iter().copied().collect();
        let secrets = secrets::Secrets::new(cfg.isn_secret);
        Control {
            secrets,
            cfg,
            arena,
            host,
            requests,
            listeners: HashMap::new(),
            embryos: HashMap::new(),
            conns: Vec::new(),
            by_tuple: HashMap::new(),
            free_ids: Vec::new(),
            neighbors,
            arp_wait: HashMap::new(),
            stats: ControlStats::default(),
            retired: crate::flow::RetransmitTotals::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &ControlStats {
        &self.stats
    }

    /// Connections with installed flows.
    pub fn connection_count(&self) -> usize {
        self.by_tuple.len()
    }

    /// Handshakes in progress.
    pub fn embryonic_count(&self) -> usize {
        self.embryos.len()
    }

    /// The state of the connection with this tuple.
    pub fn conn_state(&self, t: &FourTuple) -> Option<TcpConnState> {
        if let Some(e) = self.embryos.get(t) {
            return Some(e.state);
        }
        let id = self.by_tuple.get(t)?;
        self.conns[*id as usize].as_ref().map(|c| c.state)
    }

    /// Tuples of every connection the control plane knows (handshakes included).
    pub fn tuples(&self) -> Vec<FourTuple> {
        self.embryos
            .keys()
            .chain(self.by_tuple.keys())
            .copied()
            .collect()
    }

    /// Whether a listener is open on `port`.
    pub fn is_listening(&self, port: u16) -> bool {
        self.listeners.contains_key(&port)
    }

    /// Retransmissions over the engine's lifetime (closed connections included).
    pub fn retransmissions(&self) -> crate::flow::RetransmitTotals {
        let mut t = self.retired;
        for c in self.conns.iter().flatten() {
            t.fast += FlowCounters::get(&c.counters.fast_retransmits);
            t.timeout += FlowCounters::get(&c.counters.timeout_retransmits);
        }
        t
    }

    fn isn(&self, t: &FourTuple, now: Instant) -> u32 {
        self.secrets.isn(t, now)
    }

    /// Our timestamp clock for connection `t`: milliseconds plus the connection's offset.
    fn ts_val(&self, t: &FourTuple, now: Instant) -> u32 {
        (now.millis() as u32).wrapping_add(self.secrets.ts_offset(t))
    }

    fn our_mss(&self) -> u16 {
        self.cfg.mtu.saturating_sub(40).max(64)
    }

    fn our_wscale(&self) -> u8 {
        let mut s = 0u8;
        while (self.host.rx_buf >> s) > 65535 && s < 14 {
            s += 1;
        }
        s
    }

    fn alloc_id(&mut self) -> Option<FlowId> {
        if let Some(id) = self.free_ids.pop() {
            return Some(id);
        }
        if self.conns.len() >= self.cfg.max_flows {
            return None;
        }
        self.conns.push(None);
        Some(self.conns.len() as FlowId - 1)
    }

    fn send_frame(
        &mut self,
        out: &mut ControlOutput,
        build: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) {
        let Some(mut f) = self.arena.alloc() else {
            self.stats.drops.add(DropReason::NoFrame);
            return;
        };
        match build(self.arena.buf_mut(&mut f)) {
            Some(n) => {
                f.set_len(n);
                out.tx.push(f);
            }
            None => self.arena.free(f),
        }
    }

    fn send_tcp(&mut self, out: &mut ControlOutput, ep: Endpoints, repr: TcpRepr<'_>) {
        self.send_frame(out, |b| wire::emit_tcp(b, &ep, &repr));
    }

    fn endpoints(&self, t: &FourTuple, remote_mac: MacAddr) -> Endpoints {
        Endpoints {
            src_mac: self.cfg.mac,
            dst_mac: remote_mac,
            src_ip: t.local_ip,
            dst_ip: t.remote_ip,
        }
    }

    // -----------------------------------------------------------------------------------
    // Application requests
    // -----------------------------------------------------------------------------------

    /// Take the application's requests.
    pub(crate) fn poll_requests(&mut self, now: Instant, out: &mut ControlOutput) {
        while let Ok(req) = self.requests.try_recv() {
            match req {
                AppRequest::Listen {
                    port,
                    backlog,
                    accept_tx,
                } => {
                    self.listeners.insert(
                        port,
                        Listening {
                            backlog,
                            accept_tx,
                            pending: 0,
                        },
                    );
                }
                AppRequest::Unlisten { port } => {
                    self.listeners.remove(&port);
                    self.host.release_port(port);
                }
                AppRequest::Connect {
                    remote,
                    local_port,
                    conn,
                    rings,
                } => {
                    let tuple = FourTuple {
                        local_ip: self.cfg.ip,
                        local_port,
                        remote_ip: *remote.ip(),
                        remote_port: remote.port(),
                    };
                    let pc = PendingConnect { tuple, conn, rings };
                    match self.neighbors.get(remote.ip()).copied() {
                        Some(mac) => self.start_connect(now, pc, mac, out),
                        None => self.arp_resolve(now, pc, out),
                    }
                }
            }
        }
    }

    fn arp_resolve(&mut self, now: Instant, pc: PendingConnect, out: &mut ControlOutput) {
        let ip = pc.tuple.remote_ip;
        let first = !self.arp_wait.contains_key(&ip);
        self.arp_wait
            .entry(ip)
            .or_insert(ArpWait {
                conns: Vec::new(),
                tries: 1,
                next: now + ARP_RETRY,
            })
            .conns
            .push(pc);
        if first {
            self.send_arp_request(ip, out);
        }
    }

    fn send_arp_request(&mut self, ip: Ipv4Addr, out: &mut ControlOutput) {
        let req = wire::arp_request(self.cfg.mac, self.cfg.ip, ip);
        let mac = self.cfg.mac;
        self.stats.arp_requests += 1;
        self.send_frame(out, |b| wire::emit_arp(b, mac, MacAddr::BROADCAST, &req));
    }

    fn start_connect(
        &mut self,
        now: Instant,
        pc: PendingConnect,
        mac: MacAddr,
        out: &mut ControlOutput,
    ) {
        let iss = self.isn(&pc.tuple, now);
        let e = Embryo {
            state: TcpConnState::SynSent,
            iss,
            irs: 0,
            remote_mac: mac,
            peer_mss: 536,
            peer_wscale: None,
            peer_ts: None,
            timestamps: self.cfg.timestamps,
            conn: pc.conn,
            rings: Some(pc.rings),
            active: true,
            retries: 0,
            next_retx: now + self.cfg.rto_initial,
        };
        self.send_syn(now, &pc.tuple, &e, out);
        self.embryos.insert(pc.tuple, e);
    }

    fn syn_repr(&self, now: Instant, t: &FourTuple, e: &Embryo) -> TcpRepr<'static> {
        let syn_ack = e.state == TcpConnState::SynReceived;
        let ws_ok = self.cfg.window_scaling && (!syn_ack || e.peer_wscale.is_some());
        let ts = if syn_ack {
            e.peer_ts
                .filter(|_| e.timestamps)
                .map(|v| TcpTimestampRepr::new(self.ts_val(t, now), v))
        } else if e.timestamps {
            Some(TcpTimestampRepr::new(self.ts_val(t, now), 0))
        } else {
            None
        };
        TcpRepr {
            src_port: t.local_port,
            dst_port: t.remote_port,
            control: TcpControl::Syn,
            seq_number: TcpSeqNumber(e.iss as i32),
            ack_number: syn_ack.then_some(TcpSeqNumber(e.irs.wrapping_add(1) as i32)),
            window_len: self.host.rx_buf.min(65535) as u16,
            window_scale: ws_ok.then_some(self.our_wscale()),
            max_seg_size: Some(self.our_mss()),
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: ts,
            payload: &[],
        }
    }

    fn send_syn(&mut self, now: Instant, t: &FourTuple, e: &Embryo, out: &mut ControlOutput) {
        let repr = self.syn_repr(now, t, e);
        let ep = self.endpoints(t, e.remote_mac);
        self.send_tcp(out, ep, repr);
    }

    // -----------------------------------------------------------------------------------
    // Punted frames
    // -----------------------------------------------------------------------------------

    /// Handle a frame the data path punted.
    pub(crate) fn handle_punt(&mut self, now: Instant, p: Punt, out: &mut ControlOutput) {
        self.stats.punted += 1;
        let parsed = wire::parse_frame(self.arena.data(&p.frame));
        let seg = match parsed {
            Ok(Parsed::Arp(arp)) => {
                self.arena.free(p.frame);
                self.handle_arp(now, arp, out);
                return;
            }
            Ok(Parsed::Tcp(seg)) => seg,
            Err(r) => {
                self.stats.drops.add(r);
                self.arena.free(p.frame);
                return;
            }
        };
        if let Some(&id) = self.by_tuple.get(&seg.tuple) {
            self.punt_for_flow(id, seg, p, out);
            return;
        }
        if self.embryos.contains_key(&seg.tuple) {
            self.punt_for_embryo(now, seg, p.frame, out);
            return;
        }
        let s = &seg.summary;
        if s.has(flags::SYN)
            && !s.has(flags::ACK)
            && self.listeners.contains_key(&seg.tuple.local_port)
        {
            self.arena.free(p.frame);
            self.passive_open(now, seg, out);
            return;
        }
        self.arena.free(p.frame);
        self.stats.drops.add(DropReason::NoConnection);
        if !s.has(flags::RST) {
            self.reply_rst(&seg, out);
        }
    }

    fn reply_rst(&mut self, seg: &TcpSegment, out: &mut ControlOutput) {
        let s = &seg.summary;
        let seg_len =
            s.payload_len as u32 + u32::from(s.has(flags::SYN)) + u32::from(s.has(flags::FIN));
        let (seq_no, ack, control) = if s.has(flags::ACK) {
            (s.ack, None, TcpControl::Rst)
        } else {
            (0, Some(s.seq.wrapping_add(seg_len)), TcpControl::Rst)
        };
        let repr = TcpRepr {
            src_port: seg.tuple.local_port,
            dst_port: seg.tuple.remote_port,
            control,
            seq_number: TcpSeqNumber(seq_no as i32),
            ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
            window_len: 0,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let ep = self.endpoints(&seg.tuple, seg.src_mac);
        self.stats.rst_sent += 1;
        self.send_tcp(out, ep, repr);
    }

    fn punt_for_flow(&mut self, id: FlowId, seg: TcpSegment, p: Punt, out: &mut ControlOutput) {
        let s = seg.summary;
        match p.reason {
            PuntReason::Syn => {
                // RFC 5961 4.2: a SYN on a synchronized connection gets a challenge ACK.
                self.arena.free(p.frame);
                self.stats.challenge_acks += 1;
                out.work.push(ProtoWork::Ack { flow: id });
            }
            PuntReason::Rst => {
                // The protocol stage owns rcv_nxt and the window: it decides.
                self.arena.free(p.frame);
                out.work.push(ProtoWork::Rst {
                    flow: id,
                    seq: s.seq,
                });
            }
            PuntReason::UnexpectedOptions | PuntReason::Urgent | PuntReason::UnknownFlow => {
                // Unknown options are ignored (RFC 9293 3.1); urgent data is delivered inline.
                out.reinject.push(p.frame);
            }
            PuntReason::Arp => self.arena.free(p.frame),
            PuntReason::Extension => {
                // The data path's business, which a user stage took away from it.
                self.stats.drops.add(DropReason::Extension);
                self.arena.free(p.frame);
            }
        }
    }

    fn passive_open(&mut self, now: Instant, seg: TcpSegment, out: &mut ControlOutput) {
        let Some(l) = self.listeners.get_mut(&seg.tuple.local_port) else {
            return;
        };
        if l.pending + l.accept_tx.len() >= l.backlog {
            self.stats.drops.add(DropReason::BacklogFull);
            return;
        }
        // Every connection in the table or in its handshake will need a flow: refuse the
        // SYN now rather than complete a handshake that cannot be installed.
        let flows = self.conns.len().saturating_sub(self.free_ids.len()) + self.embryos.len();
        if flows >= self.cfg.max_flows {
            self.stats.drops.add(DropReason::FlowTableFull);
            self.reply_rst(&seg, out);
            return;
        }
        let Some(l) = self.listeners.get_mut(&seg.tuple.local_port) else {
            return;
        };
        l.pending += 1;
        // The handshake answers the SYN's source MAC (kept in the embryo); the neighbour
        // cache does not learn from SYNs, which anyone can send (poisoning, unbounded growth).
        let iss = self.isn(&seg.tuple, now);
        let local = SocketAddrV4::new(seg.tuple.local_ip, seg.tuple.local_port);
        let remote = SocketAddrV4::new(seg.tuple.remote_ip, seg.tuple.remote_port);
        // No rings until the handshake completes: a SYN costs an embryo, not 512 KiB.
        let e = Embryo {
            state: TcpConnState::SynReceived,
            iss,
            irs: seg.summary.seq,
            remote_mac: seg.src_mac,
            peer_mss: peer_mss(seg.options.mss),
            peer_wscale: seg.options.window_scale,
            peer_ts: seg.options.timestamp.map(|t| t.0),
            timestamps: self.cfg.timestamps && seg.options.timestamp.is_some(),
            conn: ConnShared::new(local, remote),
            rings: None,
            active: false,
            retries: 0,
            next_retx: now + self.cfg.rto_initial,
        };
        self.send_syn(now, &seg.tuple, &e, out);
        self.embryos.insert(seg.tuple, e);
    }

    fn punt_for_embryo(
        &mut self,
        now: Instant,
        seg: TcpSegment,
        frame: Frame,
        out: &mut ControlOutput,
    ) {
        let s = seg.summary;
        let t = seg.tuple;
        let Some(e) = self.embryos.get_mut(&t) else {
            self.arena.free(frame);
            return;
        };
        match e.state {
            TcpConnState::SynSent => {
                self.arena.free(frame);
                if s.has(flags::ACK) && s.ack != e.iss.wrapping_add(1) {
                    if !s.has(flags::RST) {
                        self.stats.drops.add(DropReason::BadHandshake);
                        self.reply_rst(&seg, out);
                    }
                    return;
                }
                if s.has(flags::RST) {
                    if s.has(flags::ACK) {
                        let e = self.embryos.remove(&t).expect("present");
                        self.fail_embryo(&t, e, ConnStatus::Refused);
                    } else {
                        self.stats.drops.add(DropReason::BadRst);
                    }
                    return;
                }
                if !s.has(flags::SYN) {
                    self.stats.drops.add(DropReason::BadHandshake);
                    return;
                }
                e.irs = s.seq;
                e.peer_mss = peer_mss(seg.options.mss);
                e.peer_wscale = seg.options.window_scale;
                e.peer_ts = seg.options.timestamp.map(|x| x.0);
                e.timestamps = e.timestamps && seg.options.timestamp.is_some();
                if s.has(flags::ACK) {
                    let e = self.embryos.remove(&t).expect("present");
                    // Windows in SYN segments are never scaled.
                    self.establish(now, t, e, s.win as u32, out);
                } else {
                    // Simultaneous open: answer with SYN-ACK.
                    e.state = TcpConnState::SynReceived;
                    let e = self.embryos.remove(&t).expect("present");
                    self.send_syn(now, &t, &e, out);
                    self.embryos.insert(t, e);
                }
            }
            TcpConnState::SynReceived => {
                if s.has(flags::RST) {
                    self.arena.free(frame);
                    if s.seq == e.irs.wrapping_add(1) {
                        let e = self.embryos.remove(&t).expect("present");
                        self.fail_embryo(&t, e, ConnStatus::Reset);
                    } else {
                        self.stats.drops.add(DropReason::BadRst);
                    }
                    return;
                }
                if s.has(flags::SYN) {
                    // Retransmitted SYN: our SYN-ACK was lost.
                    self.arena.free(frame);
                    if s.seq == e.irs {
                        let e = self.embryos.remove(&t).expect("present");
                        self.send_syn(now, &t, &e, out);
                        self.embryos.insert(t, e);
                    } else {
                        self.stats.drops.add(DropReason::BadHandshake);
                    }
                    return;
                }
                // Any acceptable segment that acknowledges our SYN completes the handshake
                // (RFC 9293 3.10.7.4); with parallel preprocessing, data that followed the
                // final ACK may be punted before it.
                let in_window = s.seq.wrapping_sub(e.irs.wrapping_add(1)) < self.host.rx_buf as u32;
                if !s.has(flags::ACK) || s.ack != e.iss.wrapping_add(1) || !in_window {
                    self.arena.free(frame);
                    self.stats.drops.add(DropReason::BadHandshake);
                    if s.has(flags::ACK) && s.ack != e.iss.wrapping_add(1) {
                        self.reply_rst(&seg, out);
                    }
                    return;
                }
                let e = self.embryos.remove(&t).expect("present");
                let shift = if self.cfg.window_scaling && e.peer_wscale.is_some() {
                    e.peer_wscale.unwrap_or(0)
                } else {
                    0
                };
                if self.establish(now, t, e, (s.win as u32) << shift, out)
                    && (s.payload_len > 0 || s.has(flags::FIN))
                {
                    out.reinject.push(frame);
                } else {
                    self.arena.free(frame);
                }
            }
            _ => self.arena.free(frame),
        }
    }

    fn fail_embryo(&mut self, t: &FourTuple, e: Embryo, status: ConnStatus) {
        if e.active {
            self.host.release_port(t.local_port);
        } else if let Some(l) = self.listeners.get_mut(&t.local_port) {
            l.pending = l.pending.saturating_sub(1);
        }
        if status == ConnStatus::Reset {
            self.stats.resets += 1;
        }
        e.conn.set_status(status);
    }

    /// Install a handshaken connection. Returns false if it could not be installed.
    fn establish(
        &mut self,
        now: Instant,
        t: FourTuple,
        mut e: Embryo,
        snd_wnd: u32,
        out: &mut ControlOutput,
    ) -> bool {
        let Some(id) = self.alloc_id() else {
            self.stats.drops.add(DropReason::QueueFull);
            self.fail_embryo(&t, e, ConnStatus::Reset);
            return false;
        };
        let ws = self.cfg.window_scaling && e.peer_wscale.is_some();
        let (snd_shift, rcv_shift) = if ws {
            (e.peer_wscale.unwrap_or(0), self.our_wscale())
        } else {
            (0, 0)
        };
        let ts = e.timestamps && e.peer_ts.is_some();
        // Room for payload once the timestamp option is in every segment (both sides are at
        // least MIN_PEER_MSS, so this stays positive).
        let ts_len = if ts { wire::TS_OPT_LEN as u16 } else { 0 };
        let mss = e.peer_mss.min(self.our_mss()).saturating_sub(ts_len).max(1);
        let identity = Arc::new(FlowIdentity {
            id,
            tuple: t,
            local_mac: self.cfg.mac,
            remote_mac: e.remote_mac,
            group: flow_group(&t, self.cfg.flow_groups),
            template: wire::HeaderTemplate::new(self.cfg.mac, e.remote_mac, &t, ts),
            timestamps: ts,
            rcv_wscale: rcv_shift,
            snd_wscale: snd_shift,
            mss,
        });
        // An active open brought its rings; a passive one gets them now.
        let (rings, app_rings) = match e.rings.take() {
            Some(r) => (r, None),
            None => {
                let (r, rx, tx) = self.host.make_rings();
                (r, Some((rx, tx)))
            }
        };
        let state = TcpState::new(&TcpParams {
            snd_nxt: e.iss.wrapping_add(1),
            rcv_nxt: e.irs.wrapping_add(1),
            snd_wnd,
            mss,
            snd_shift,
            rcv_shift,
            rx_cap: rings.rx.capacity() as u32,
            timestamps: ts,
            ts_recent: e.peer_ts.unwrap_or(0),
            ts_offset: self.secrets.ts_offset(&t),
            initial_cwnd_segments: self.cfg.initial_cwnd_segments,
        });
        let counters = FlowCounters::new();
        self.conns[id as usize] = Some(Conn {
            tuple: t,
            state: TcpConnState::Established,
            conn: e.conn.clone(),
            counters: counters.clone(),
            ephemeral: e.active,
            fin_seen: false,
            abort_seen: false,
            srtt_us: None,
            rttvar_us: 0.0,
            rto: self.cfg.rto_initial,
            backoff: 1,
            retries: 0,
            last_acked: 0,
            last_rtt: (0, 0),
            last_progress: now,
            persist_at: None,
            time_wait_until: None,
        });
        self.by_tuple.insert(t, id);
        out.installs.push(FlowInstall {
            identity,
            counters,
            state,
            rings,
            conn: e.conn.clone(),
        });
        self.stats.established += 1;
        if e.active {
            // Complete the handshake with an ACK built by the data path.
            out.work.push(ProtoWork::Ack { flow: id });
        } else {
            if let Some(l) = self.listeners.get_mut(&t.local_port) {
                l.pending = l.pending.saturating_sub(1);
            }
            let stream =
                app_rings.map(|(rx, tx)| Stream::new(e.conn.clone(), rx, tx, self.host.clone()));
            let delivered = match (self.listeners.get(&t.local_port), stream) {
                (Some(l), Some(s)) => l.accept_tx.try_send(s).is_ok(),
                _ => false,
            };
            if !delivered {
                // The listener is gone or full: abort what we just installed.
                self.stats.drops.add(DropReason::BacklogFull);
                out.work.push(ProtoWork::Reset { flow: id });
            }
        }
        true
    }

    fn handle_arp(&mut self, now: Instant, arp: ArpRepr, out: &mut ControlOutput) {
        let ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } = arp
        else {
            self.stats.drops.add(DropReason::BadArp);
            return;
        };
        if target_protocol_addr == self.cfg.ip || self.arp_wait.contains_key(&source_protocol_addr)
        {
            self.neighbors
                .insert(source_protocol_addr, source_hardware_addr);
        }
        if operation == ArpOperation::Request && target_protocol_addr == self.cfg.ip {
            let reply = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: self.cfg.mac,
                source_protocol_addr: self.cfg.ip,
                target_hardware_addr: source_hardware_addr,
                target_protocol_addr: source_protocol_addr,
            };
            let mac = self.cfg.mac;
            self.stats.arp_replies += 1;
            self.send_frame(out, |b| {
                wire::emit_arp(b, mac, source_hardware_addr, &reply)
            });
        }
        if let Some(w) = self.arp_wait.remove(&source_protocol_addr) {
            for pc in w.conns {
                self.start_connect(now, pc, source_hardware_addr, out);
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Data-path events, application doorbells, timers
    // -----------------------------------------------------------------------------------

    /// The application changed a connection: returns the work item for the protocol stage,
    /// or `None` when the flow is gone. Handles close and abort requests.
    pub(crate) fn app_update(&mut self, id: FlowId, out: &mut ControlOutput) -> Option<ProtoWork> {
        let c = self.conns.get_mut(id as usize)?.as_mut()?;
        c.conn.clear_doorbell();
        if c.conn.abort_requested() {
            if !c.abort_seen {
                c.abort_seen = true;
                out.work.push(ProtoWork::Reset { flow: id });
            }
            return None;
        }
        let fin = c.conn.tx_fin();
        if fin && !c.fin_seen {
            c.fin_seen = true;
            c.state = match c.state {
                TcpConnState::Established => TcpConnState::FinWait1,
                TcpConnState::CloseWait => TcpConnState::LastAck,
                s => s,
            };
        }
        Some(ProtoWork::App {
            flow: id,
            positions: None,
            fin,
        })
    }

    /// Apply data-path events.
    pub(crate) fn handle_event(&mut self, now: Instant, ev: ControlEvent, out: &mut ControlOutput) {
        let id = ev.flow;
        let a = ev.actions;
        let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        if a.any(Actions::CHALLENGE_ACK) {
            self.stats.challenge_acks += 1;
        }
        if a.any(Actions::RST_TX | Actions::RST_RX) {
            self.stats.resets += 1;
            self.finish_conn(id, ConnStatus::Reset, out);
            return;
        }
        if a.any(Actions::ACKED) {
            c.last_progress = now;
            c.backoff = 1;
            c.retries = 0;
            c.persist_at = None;
        }
        let mut st = c.state;
        if a.any(Actions::FIN_RX) {
            st = match st {
                TcpConnState::Established => TcpConnState::CloseWait,
                TcpConnState::FinWait1 if a.any(Actions::FIN_ACKED) => TcpConnState::TimeWait,
                TcpConnState::FinWait1 => TcpConnState::Closing,
                TcpConnState::FinWait2 => TcpConnState::TimeWait,
                s => s,
            };
        }
        if a.any(Actions::FIN_ACKED) {
            st = match st {
                TcpConnState::FinWait1 => TcpConnState::FinWait2,
                TcpConnState::Closing => TcpConnState::TimeWait,
                TcpConnState::LastAck => {
                    c.state = st;
                    self.stats.closed += 1;
                    self.finish_conn(id, ConnStatus::Closed, out);
                    return;
                }
                s => s,
            };
        }
        if st == TcpConnState::TimeWait && c.state != TcpConnState::TimeWait {
            c.time_wait_until = Some(now + self.cfg.time_wait);
            c.conn.set_status(ConnStatus::Closed);
            self.stats.closed += 1;
        }
        c.state = st;
    }

    /// Remove a connection from every stage.
    fn finish_conn(&mut self, id: FlowId, status: ConnStatus, out: &mut ControlOutput) {
        let Some(c) = self.conns.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        self.by_tuple.remove(&c.tuple);
        self.free_ids.push(id);
        self.retired.fast += FlowCounters::get(&c.counters.fast_retransmits);
        self.retired.timeout += FlowCounters::get(&c.counters.timeout_retransmits);
        if c.ephemeral {
            self.host.release_port(c.tuple.local_port);
        }
        if matches!(
            c.conn.status(),
            ConnStatus::Connecting | ConnStatus::Established
        ) {
            c.conn.set_status(status);
        }
        out.removals.push((id, c.tuple));
    }

    fn update_rtt(&mut self, id: FlowId) {
        let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        let sum = FlowCounters::get(&c.counters.rtt_sum_us);
        let n = FlowCounters::get(&c.counters.rtt_samples);
        if n == c.last_rtt.1 {
            return;
        }
        let r = (sum - c.last_rtt.0) as f64 / (n - c.last_rtt.1) as f64;
        c.last_rtt = (sum, n);
        // RFC 6298 2.2 / 2.3.
        match c.srtt_us {
            None => {
                c.srtt_us = Some(r);
                c.rttvar_us = r / 2.0;
            }
            Some(s) => {
                c.rttvar_us = 0.75 * c.rttvar_us + 0.25 * (s - r).abs();
                c.srtt_us = Some(0.875 * s + 0.125 * r);
            }
        }
        let rto_us = c.srtt_us.unwrap_or(0.0) + (4.0 * c.rttvar_us).max(1000.0);
        c.rto = Duration::from_micros(rto_us as u64).clamp(self.cfg.rto_min, self.cfg.rto_max);
    }

    /// Run the timers: retransmission timeouts, zero-window probes, TIME-WAIT, handshakes,
    /// ARP.
    pub(crate) fn poll_timers(&mut self, now: Instant, out: &mut ControlOutput) {
        for id in 0..self.conns.len() as FlowId {
            self.update_rtt(id);
            let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
                continue;
            };
            if let Some(t) = c.time_wait_until {
                if now >= t {
                    self.finish_conn(id, ConnStatus::Closed, out);
                }
                continue;
            }
            let acked = FlowCounters::get(&c.counters.acked_bytes);
            if acked != c.last_acked {
                c.last_acked = acked;
                c.last_progress = now;
                c.backoff = 1;
                c.retries = 0;
            }
            let in_flight = FlowCounters::get(&c.counters.in_flight);
            let unsent = FlowCounters::get(&c.counters.unsent);
            let zero = c
                .counters
                .peer_window_zero
                .load(std::sync::atomic::Ordering::Relaxed);
            let rto = (c.rto * c.backoff).min(self.cfg.rto_max);
            if in_flight == 0 {
                c.last_progress = now;
                if zero && unsent > 0 {
                    match c.persist_at {
                        None => c.persist_at = Some(now + rto),
                        Some(t) if now >= t => {
                            self.stats.probes += 1;
                            out.work.push(ProtoWork::Probe { flow: id });
                            c.backoff = (c.backoff * 2).min(64);
                            c.persist_at = Some(now + (c.rto * c.backoff).min(self.cfg.rto_max));
                        }
                        _ => {}
                    }
                } else {
                    c.persist_at = None;
                }
                continue;
            }
            if now.saturating_since(c.last_progress) >= rto {
                c.retries += 1;
                if c.retries > self.cfg.max_retransmissions {
                    out.work.push(ProtoWork::Reset { flow: id });
                    c.conn.set_status(ConnStatus::TimedOut);
                    continue;
                }
                self.stats.timeouts += 1;
                c.backoff = (c.backoff * 2).min(64);
                c.last_progress = now;
                out.work.push(ProtoWork::Retransmit { flow: id });
            }
        }
        // Handshake retransmissions.
        let due: Vec<FourTuple> = self
            .embryos
            .iter()
            .filter(|(_, e)| now >= e.next_retx)
            .map(|(t, _)| *t)
            .collect();
        for t in due {
            let mut e = self.embryos.remove(&t).expect("present");
            e.retries += 1;
            if e.retries > self.cfg.syn_retries {
                self.fail_embryo(&t, e, ConnStatus::TimedOut);
                continue;
            }
            self.stats.syn_retransmits += 1;
            e.next_retx =
                now + (self.cfg.rto_initial * (1 << e.retries.min(6))).min(self.cfg.rto_max);
            self.send_syn(now, &t, &e, out);
            self.embryos.insert(t, e);
        }
        // ARP retries.
        let due: Vec<Ipv4Addr> = self
            .arp_wait
            .iter()
            .filter(|(_, w)| now >= w.next)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            let mut w = self.arp_wait.remove(&ip).expect("present");
            if w.tries >= ARP_TRIES {
                for pc in w.conns {
                    self.host.release_port(pc.tuple.local_port);
                    pc.conn.set_status(ConnStatus::Unreachable);
                }
                continue;
            }
            w.tries += 1;
            w.next = now + ARP_RETRY;
            self.send_arp_request(ip, out);
            self.arp_wait.insert(ip, w);
        }
    }

    /// The earliest time a timer may fire (for simulations that skip idle time).
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut best: Option<Instant> = None;
        let mut take = |t: Instant| best = Some(best.map_or(t, |b| b.min(t)));
        for c in self.conns.iter().flatten() {
            if let Some(t) = c.time_wait_until {
                take(t);
                continue;
            }
            if let Some(t) = c.persist_at {
                take(t);
            }
            let in_flight = FlowCounters::get(&c.counters.in_flight);
            if in_flight > 0 {
                take(c.last_progress + (c.rto * c.backoff).min(self.cfg.rto_max));
            }
        }
        for e in self.embryos.values() {
            take(e.next_retx);
        }
        for w in self.arp_wait.values() {
            take(w.next);
        }
        best
    }
}
