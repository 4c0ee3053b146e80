//! The control plane: everything the data path punts, and everything that needs a timer.
//! One file per job:
//!
//! * `handshake`: active and passive opens with MSS (clamped to at least
//!   [`MIN_PEER_MSS`]), window scaling, timestamps and SACK-permitted; initial sequence
//!   numbers from a keyed hash (RFC 6528, [`secrets`]); listen backlogs and an engine-wide
//!   bound on half-open connections; rings made only once a handshake completes.
//! * `cookies`: SYN cookies (RFC 4987) when the half-open queue is full, keeping the MSS,
//!   window scale, SACK-permitted and timestamps.
//! * `punts`: dispatch of punted frames; RSTs for segments that match nothing and RFC 5961
//!   challenge ACKs, both rate-limited (section 7); re-injection of reviewed segments.
//! * `events`: the connection states around FIN in both directions, resets, orphans (the
//!   application closed the connection), flow removal from every stage.
//! * `timers`: RTT estimation and retransmission timeouts per RFC 6298 with Karn's backoff;
//!   probe timeouts (RFC 8985 tail-loss probes, and resending lost retransmissions in a
//!   recovery); the persist timer; keep-alives; the FIN-WAIT-2 timeout and retry limit of
//!   orphans; TIME-WAIT.
//! * `neighbours`: ARP answers, resolution and the cache (which SYNs do not teach).
//! * `icmp`: echo replies to pings (rate-limited); "fragmentation needed" (RFC 1191) handed
//!   to its connection's protocol stage; other destination unreachables and time exceeded
//!   end the handshake they name or become the error a connection's timeout reports
//!   (RFC 5461); other ICMP dropped and counted.
//! * [`congestion`]: the congestion-control policy the protocol stage consults.
//!
//! The control plane never writes TCP state. It reads the protocol stage's state (RST
//! acceptability) and the flows' counters, and it asks the data path to act through
//! [`ProtoWork`] items: `Retransmit`, `TailProbe`, `Probe`, `Ack`, `Rst`, `Reset`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use smoltcp::wire::{ArpOperation, ArpRepr, TcpControl, TcpRepr, TcpSeqNumber, TcpTimestampRepr};

use crate::buf::{Frame, FrameArena};
use crate::flow::{FlowCounters, FlowId, FlowIdentity};
use crate::host::{AppRequest, ConnShared, ConnStatus, HostShared, Stream};
use crate::stages::notify::ControlEvent;
use crate::stages::place::FlowRings;
use crate::stages::protocol::{TcpParams, TcpState};
use crate::stages::{Actions, ProtoWork, Punt, PuntReason};
use crate::stats::{DropCounters, DropReason};
use crate::time::Instant;

pub mod congestion;
mod cookies;
mod events;
mod handshake;
mod icmp;
mod neighbours;
mod punts;
pub mod rates;
pub mod secrets;
mod splice;
mod timers;

use crate::wire::{self, flags, Endpoints, FourTuple, MacAddr, Parsed, TcpSegment};
use handshake::{Embryo, Listening, PendingConnect};
pub use handshake::{MIN_PEER_MSS, OOW_ANSWER_GAP};
use neighbours::ArpWait;
pub use neighbours::NEIGHBOR_LIMIT;

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

/// ECN negotiation (RFC 3168).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ecn {
    /// Never: SYNs asking for ECN get a plain answer.
    Off,
    /// Accept when the peer asks, never ask (Linux's default, `tcp_ecn = 2`).
    #[default]
    Accept,
    /// Ask on active opens, accept on passive ones.
    Request,
}

/// Control-plane settings: [`EngineConfig::new`](crate::pipeline::EngineConfig::new) makes
/// them (the engine's `control` field); adjust the public fields. The type is
/// `#[non_exhaustive]`, so a field added later breaks no caller.
#[derive(Clone, Debug)]
#[non_exhaustive]
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
    /// Offer and accept selective acknowledgments (RFC 2018).
    pub sack: bool,
    /// ECN negotiation (RFC 3168).
    pub ecn: Ecn,
    /// Initial congestion window in segments.
    pub initial_cwnd_segments: u32,
    /// Lower bound of the retransmission timeout.
    pub rto_min: Duration,
    /// Retransmission timeout before any RTT sample (RFC 6298: 1 s).
    pub rto_initial: Duration,
    /// Upper bound of the retransmission timeout.
    pub rto_max: Duration,
    /// Timeouts in a row after which a connection is aborted; also zero-window probes in a
    /// row that the peer left unanswered (one that answers, even with a zero window, may
    /// keep it shut as long as it likes, as in Linux).
    pub max_retransmissions: u32,
    /// SYN / SYN-ACK retransmissions before a handshake fails.
    pub syn_retries: u32,
    /// TIME-WAIT duration (2 MSL).
    pub time_wait: Duration,
    /// Static neighbour entries (IP -> MAC).
    pub neighbors: Vec<(Ipv4Addr, MacAddr)>,
    /// Most connections at once.
    pub max_flows: usize,
    /// Most splices at once, in force or being set up
    /// ([`Splicer`](crate::stages::ext::splice::Splicer)): a splice frees its connections'
    /// flows but keeps a table entry (and an outgoing side's ephemeral port) until it ends,
    /// so `max_flows` does not bound them. Beyond it a splice is refused
    /// ([`SpliceError::TableFull`](crate::stages::ext::splice::SpliceError::TableFull)).
    pub max_splices: usize,
    /// Most passive handshakes in progress at once (each listener also holds at most its
    /// backlog); beyond them SYNs are answered with cookies or dropped.
    pub max_half_open: usize,
    /// Answer SYNs with SYN cookies (RFC 4987) when the half-open queue is full, instead of
    /// dropping them.
    pub syn_cookies: bool,
    /// How long a connection the application has closed may wait in FIN-WAIT-2 for the
    /// peer's FIN (Linux's `tcp_fin_timeout`).
    pub fin_wait2_timeout: Duration,
    /// Retransmission timeouts or zero-window probes in a row after which a connection the
    /// application has closed is aborted (Linux's `tcp_orphan_retries`).
    pub orphan_retries: u32,
    /// Most connections the application has closed that may still be finishing; beyond it a
    /// newly closed connection is aborted with a RST.
    pub max_orphans: usize,
    /// Challenge ACKs a second across all flows (RFC 5961 section 7); more are not sent.
    /// Every flow sends at most one challenge ACK per 500 ms whatever this is (as Linux);
    /// this budget is a second limit, off by default ([`CHALLENGE_ACK_LIMIT`], `u32::MAX`):
    /// a budget shared by flows is a side channel, where a peer that spends it on its own
    /// connection learns whether its spoofed RSTs drew challenge ACKs on another, that is
    /// whether they fell in that connection's window (CVE-2016-5696; Linux turned its own
    /// off for this reason). Each protocol stage keeps this budget for its flows (RSTs and
    /// SYNs on synchronized connections), asked only past the flow's own limit: the
    /// engine's stage, or each flow group's on the threaded runtime, so there the engine
    /// may send the flow groups times this.
    ///
    /// [`CHALLENGE_ACK_LIMIT`]: crate::stages::protocol::CHALLENGE_ACK_LIMIT
    pub challenge_ack_limit: u32,
    /// RSTs a second sent in reply to segments that match no connection; more are not sent.
    pub rst_limit: u32,
    /// ICMP echo replies (answers to ping) a second; more requests are dropped, counted as
    /// [`RateLimited`](DropReason::RateLimited). 0: pings go unanswered; `u32::MAX`: no
    /// limit.
    pub icmp_echo_limit: u32,
    /// ICMP "fragmentation needed" messages handed to their connections a second (path MTU
    /// discovery, RFC 1191), a budget of their own (a ping flood does not starve it); more
    /// are dropped, counted as [`RateLimited`](DropReason::RateLimited): a flood of forged
    /// ones costs a bounded amount of work and cannot fill a flow group's queue. 0: path
    /// MTU discovery off; `u32::MAX`: no limit.
    pub path_mtu_limit: u32,
    /// Rates computed on the control plane at an interval from the flows' counters
    /// ([`rates`]); `None` (the default) leaves pacing to the data path's congestion control.
    pub rates: Option<rates::ControlRates>,
    /// Maps each new connection to a traffic class ([`FlowIdentity::class`]); `None`: every
    /// flow is class 0.
    pub classifier: Option<crate::flow::Classifier>,
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
    /// ICMP echo replies sent (answers to ping).
    pub icmp_echo_replies: u64,
    /// ICMP "fragmentation needed" messages about a segment near what is in flight handed to
    /// its connection (its protocol stage then checks the quoted sequence number against
    /// its own state again: see [`DropReason::IcmpStale`]).
    pub path_mtu_reports: u64,
    /// ICMP destination unreachables (other than "fragmentation needed") and time exceeded
    /// acted on: a handshake ended, or the error kept for a connection's timeout.
    pub icmp_unreachables: u64,
    /// Challenge ACKs sent (RFC 5961).
    pub challenge_acks: u64,
    /// Data-path events of a connection gone, whose flow id a new connection holds:
    /// ignored.
    pub stale_events: u64,
    /// Retransmission timeouts fired.
    pub timeouts: u64,
    /// Zero-window probes sent.
    pub probes: u64,
    /// Tail-loss probes asked for (RFC 8985).
    pub tail_probes: u64,
    /// Delayed ACKs the timer sent (no segment carried them in time).
    pub delayed_acks: u64,
    /// SYN or SYN-ACK retransmissions.
    pub syn_retransmits: u64,
    /// SYN-ACKs carrying a SYN cookie.
    pub cookies_sent: u64,
    /// Handshakes completed from a valid cookie.
    pub cookies_accepted: u64,
    /// Orphans freed after waiting too long in FIN-WAIT-2.
    pub fin_wait2_timeouts: u64,
    /// Orphans aborted: past `orphan_retries`, or beyond `max_orphans`.
    pub orphans_aborted: u64,
    /// Keep-alive probes sent.
    pub keepalive_probes: u64,
    /// Connections aborted after unanswered keep-alive probes.
    pub keepalive_timeouts: u64,
    /// Connection pairs spliced.
    pub spliced: u64,
    /// ARP requests answered.
    pub arp_replies: u64,
    /// ARP requests sent.
    pub arp_requests: u64,
    /// ARP senders not remembered: the neighbour cache held [`NEIGHBOR_LIMIT`] learned
    /// entries.
    pub arp_not_learned: u64,
    /// Looks the timers took at connections: every tick, only the connections with
    /// something to time; the others when their next deadline comes or something arms them.
    pub timer_visits: u64,
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

impl ControlOutput {
    /// Whether there is nothing to carry out.
    #[inline]
    pub fn is_empty(&self) -> bool {
        // One test of all the lengths together, not one branch each (a poll asks often).
        (self.installs.len()
            | self.removals.len()
            | self.work.len()
            | self.tx.len()
            | self.reinject.len())
            == 0
    }
}

struct Conn {
    tuple: FourTuple,
    state: TcpConnState,
    conn: Arc<ConnShared>,
    counters: Arc<FlowCounters>,
    ephemeral: bool,
    fin_seen: bool,
    abort_seen: bool,
    /// The application closed the connection (it will neither read nor write).
    orphan: bool,
    /// When an orphan reached FIN-WAIT-2.
    fin_wait2_since: Option<Instant>,
    /// The peer's segments as last counted, and when that count last moved.
    last_rx_segments: u64,
    last_rx: Instant,
    keepalives_sent: u32,
    /// Zero-window probes since the window closed.
    persist_probes: u32,
    /// Zero-window probes in a row with no segment from the peer between them.
    persist_silent: u32,
    srtt_us: Option<f64>,
    rttvar_us: f64,
    rto: Duration,
    backoff: u32,
    probe_backoff: u32,
    retries: u32,
    mss: u32,
    probes_fired: u32,
    last_acked: u64,
    /// The RTT word last read ([`FlowCounters::rtt_mark`]).
    last_rtt: u64,
    last_progress: Instant,
    persist_at: Option<Instant>,
    time_wait_until: Option<Instant>,
    /// The control-plane rates drive this connection.
    rated: bool,
    /// Our initial sequence number and the peer's (for splicing).
    iss: u32,
    irs: u32,
    /// SACK negotiated.
    sack: bool,
    /// ECN negotiated.
    ecn: bool,
    /// The flow's identity as installed.
    identity: Arc<FlowIdentity>,
    /// The counters at the last control-plane rate update, and the rate sent.
    rate_snap: RateSnap,
    /// In the timers' active list (looked at every tick).
    timer_active: bool,
    /// Set aside by the timers until this time (its entry in their wheel), or until the
    /// data path arms it.
    parked_until: Option<Instant>,
    /// The timers' tick at its last visit.
    timer_tick: u64,
    /// When the timers took it back after setting it aside (not yet visited since).
    resumed_at: Option<Instant>,
    /// What the last ICMP error said of the path (refused or unreachable), and the count
    /// of the peer's segments then: the status a timeout reports in place of
    /// [`ConnStatus::TimedOut`] if no segment came since (Linux's `sk_err_soft`, which any
    /// acknowledgement clears).
    soft_error: Option<(ConnStatus, u64)>,
}

impl Conn {
    /// The status a connection that timed out reports: [`ConnStatus::TimedOut`], or what an
    /// ICMP error said with no segment from the peer since.
    fn timed_out(&self) -> ConnStatus {
        match self.soft_error {
            Some((status, rx)) if rx == FlowCounters::get(&self.counters.rx_segments) => status,
            _ => ConnStatus::TimedOut,
        }
    }

    /// Whether sequence number `seq` is in flight as the data path last published it: from
    /// SND.UNA (our ISS, plus one for the SYN, plus the data bytes acknowledged since) on,
    /// as many as are in flight (RFC 5927 section 4.1's range for an ICMP error about one
    /// of our segments; Linux's `between(seq, snd_una, snd_nxt)` takes SND.NXT too). With
    /// `slack`, as many again above: the counters only ever trail the protocol stage, and
    /// on the threaded runtime the acknowledged bytes of one replica may not be counted yet
    /// where the bytes in flight of another are, which shifts the range down.
    fn in_flight_holds(&self, seq: u32, slack: bool) -> bool {
        let acked = FlowCounters::get(&self.counters.acked_bytes);
        let flight = self.counters.in_flight();
        let una = self.iss.wrapping_add(1).wrapping_add(acked as u32);
        let window = if slack { flight * 2 } else { flight };
        u64::from(seq.wrapping_sub(una)) < window
    }
}

/// A flow's counters as the control-plane rates last read them.
#[derive(Clone, Copy, Debug, Default)]
struct RateSnap {
    at: Instant,
    acked: u64,
    ecn: u64,
    fast: u64,
    timeouts: u64,
    rtt: u64,
    set: rates::Setting,
}

/// The control plane's rate computation: the driver, the interval, the next run.
struct RateLoop {
    cfg: rates::ControlRates,
    driver: Box<dyn rates::RateDriver>,
    interval: Duration,
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
    /// Each flow id's current incarnation ([`FlowIdentity::incarnation`]).
    incarnations: Vec<u8>,
    neighbors: HashMap<Ipv4Addr, MacAddr>,
    /// How many of `neighbors` are configured (distinct addresses; they never leave).
    static_neighbors: usize,
    arp_wait: HashMap<Ipv4Addr, ArpWait>,
    secrets: secrets::Secrets,
    stats: ControlStats,
    retired: crate::flow::RetransmitTotals,
    /// Connections the application has closed that are not finished yet.
    orphans: usize,
    /// RFC 5961 section 7: RSTs in reply to segments that match nothing (challenge ACKs
    /// are limited where they are made, in the protocol stages).
    rst_limit: crate::limit::RateLimit,
    /// ICMP echo replies ([`ControlConfig::icmp_echo_limit`]).
    icmp_echo_limit: crate::limit::RateLimit,
    /// "Fragmentation needed" handed over ([`ControlConfig::path_mtu_limit`]).
    path_mtu_limit: crate::limit::RateLimit,
    rates: Option<RateLoop>,
    splices: splice::Splices,
    /// When the timers next look at the connections (every [`TIMER_TICK`]).
    next_tick: Instant,
    /// Which connections the timers look at.
    timers: timers::TimerSets,
}

/// How often the timers look at the connections: every timer may fire up to this much late,
/// and a poll between two ticks costs no walk over the connections.
pub const TIMER_TICK: std::time::Duration = std::time::Duration::from_micros(100);

impl Drop for Control {
    /// The engine stopped: every connection it had, or was opening, is reset (status
    /// [`ConnStatus::Reset`], its waiters woken), so that a thread blocked in a read, a
    /// write or a wait on it returns an error instead of waiting for good.
    fn drop(&mut self) {
        let live = |c: &Arc<ConnShared>| {
            if matches!(c.status(), ConnStatus::Connecting | ConnStatus::Established) {
                c.set_status(ConnStatus::Reset);
            }
        };
        self.conns.iter().flatten().for_each(|c| live(&c.conn));
        self.embryos.values().for_each(|e| live(&e.conn));
        self.arp_wait
            .values()
            .flat_map(|w| w.conns.iter())
            .for_each(|p| live(&p.conn));
    }
}

impl Control {
    /// A control plane.
    pub(crate) fn new(
        cfg: ControlConfig,
        arena: Arc<FrameArena>,
        host: Arc<HostShared>,
        requests: Receiver<AppRequest>,
    ) -> Self {
        let neighbors: HashMap<Ipv4Addr, MacAddr> = cfg.neighbors.iter().copied().collect();
        let static_neighbors = neighbors.len();
        let secrets = secrets::Secrets::new(cfg.isn_secret);
        let rst_per_sec = cfg.rst_limit;
        let icmp_per_sec = cfg.icmp_echo_limit;
        let path_mtu_per_sec = cfg.path_mtu_limit;
        let rates = cfg.rates.as_ref().map(|r| RateLoop {
            cfg: r.clone(),
            driver: r.driver(),
            interval: r.interval(),
            next: Instant::ZERO,
        });
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
            incarnations: Vec::new(),
            neighbors,
            static_neighbors,
            arp_wait: HashMap::new(),
            stats: ControlStats::default(),
            retired: crate::flow::RetransmitTotals::default(),
            orphans: 0,
            rst_limit: crate::limit::RateLimit::new(rst_per_sec),
            icmp_echo_limit: crate::limit::RateLimit::new(icmp_per_sec),
            path_mtu_limit: crate::limit::RateLimit::new(path_mtu_per_sec),
            rates,
            splices: splice::Splices::default(),
            next_tick: Instant::ZERO,
            timers: timers::TimerSets::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &ControlStats {
        &self.stats
    }

    /// The smoothed round-trip time of an established connection (RFC 6298), once sampled.
    pub fn srtt(&self, t: &FourTuple) -> Option<Duration> {
        let id = *self.by_tuple.get(t)?;
        let us = self.conns.get(id as usize)?.as_ref()?.srtt_us?;
        Some(Duration::from_nanos((us * 1000.0) as u64))
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

    /// Every connection the control plane knows, with its state.
    pub fn connection_states(&self) -> Vec<(FourTuple, TcpConnState)> {
        self.tuples()
            .into_iter()
            .filter_map(|t| self.conn_state(&t).map(|s| (t, s)))
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
            t.add(&c.counters);
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

    /// The next incarnation of flow id `id` (1 to 255, wrapping past 0): see
    /// [`incarnation_of`].
    fn next_incarnation(&mut self, id: FlowId) -> u8 {
        let i = id as usize;
        if self.incarnations.len() <= i {
            self.incarnations.resize(i + 1, 0);
        }
        let n = self.incarnations[i].wrapping_add(1).max(1);
        self.incarnations[i] = n;
        n
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

    /// Build a frame with `build` (its length, or `None` if it does not fit) and queue it
    /// to send; whether it was queued.
    fn send_frame(
        &mut self,
        out: &mut ControlOutput,
        build: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        let Some(mut f) = self.arena.alloc() else {
            self.stats.drops.add(DropReason::NoFrame);
            return false;
        };
        match build(self.arena.buf_mut(&mut f)) {
            Some(n) => {
                f.set_len(n);
                out.tx.push(f);
                true
            }
            None => {
                self.arena.free(f);
                false
            }
        }
    }

    fn send_tcp(&mut self, out: &mut ControlOutput, ep: Endpoints, repr: TcpRepr<'_>) {
        self.send_frame(out, |b| wire::emit_tcp(b, &ep, &repr));
    }

    /// Whether no connection and no reply can have `src` as its peer: broadcast,
    /// multicast, unspecified, loopback, reserved (RFC 1122 3.2.1.3), or our own address
    /// (a LAND attack).
    fn martian(&self, src: Ipv4Addr) -> bool {
        src.is_broadcast()
            || src.is_multicast()
            || src.is_unspecified()
            || src.is_loopback()
            || src.octets()[0] >= 240
            || src == self.cfg.ip
    }

    /// [`send_tcp`](Self::send_tcp) with ECE / CWR added.
    fn send_tcp_flags(
        &mut self,
        out: &mut ControlOutput,
        ep: Endpoints,
        repr: TcpRepr<'_>,
        extra: u8,
    ) {
        self.send_frame(out, |b| wire::emit_tcp_with_flags(b, &ep, &repr, extra));
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

    /// Take the application's requests; whether there were any (so whether `out` may have more).
    pub(crate) fn poll_requests(&mut self, now: Instant, out: &mut ControlOutput) -> bool {
        let mut any = false;
        // One counter first: cheaper than the channel on an idle poll. A request counted but
        // not yet in the channel is taken on a later poll.
        while self.host.requests_pending.load(Ordering::Acquire) > 0 {
            let Ok(req) = self.requests.try_recv() else {
                break;
            };
            self.host.requests_pending.fetch_sub(1, Ordering::Relaxed);
            any = true;
            match req {
                AppRequest::Listen {
                    port,
                    backlog,
                    accept_tx,
                    congestion,
                    ctx,
                } => {
                    self.listeners.insert(
                        port,
                        Listening {
                            backlog,
                            accept_tx,
                            pending: 0,
                            cookie_sent: None,
                            congestion,
                            ctx,
                        },
                    );
                }
                AppRequest::Splice(req) => self.start_splice(now, req, out),
                AppRequest::Unlisten { port } => self.unlisten(port),
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
                    if self.flows_committed() >= self.cfg.max_flows {
                        // Refused before a SYN goes out: the handshake could not be
                        // installed (it used to end in a RST, as `ConnectionReset`).
                        self.stats.drops.add(DropReason::FlowTableFull);
                        self.host.release_port(local_port);
                        conn.set_status(ConnStatus::TableFull);
                        continue;
                    }
                    if self.by_tuple.contains_key(&tuple)
                        || self.embryos.contains_key(&tuple)
                        || self.splices.is_spliced(&tuple)
                    {
                        // From a bound port to where a connection of that port goes
                        // already (an accepted one that outlived its listener): it would
                        // take that connection's place.
                        self.host.release_port(local_port);
                        conn.set_status(ConnStatus::TupleInUse);
                        continue;
                    }
                    let pc = PendingConnect { tuple, conn, rings };
                    match self.neighbors.get(remote.ip()).copied() {
                        Some(mac) => self.start_connect(now, pc, mac, out),
                        None => self.arp_resolve(now, pc, out),
                    }
                }
            }
        }
        any
    }
}

/// Flow id `id`'s current incarnation (0: it never had a connection), which the work the
/// control plane makes for the id's connection carries ([`ProtoWork`]): such work may reach
/// the protocol stage after the connection is gone and the id given to another, which must
/// not take it.
fn incarnation_of(incarnations: &[u8], id: FlowId) -> u8 {
    incarnations.get(id as usize).copied().unwrap_or(0)
}
