//! A data-center fabric under one virtual clock: N sender engines and one receiver behind a
//! [`Switch`], the switch's port towards the receiver the bottleneck (a link rate, a finite
//! queue, ECN marking at K, a propagation delay). Each sender runs one bulk connection with
//! its own congestion control ([`Scheme`]); flows may join and leave at set times and have
//! round trips of their own. A run samples every flow's throughput and RTT and the
//! bottleneck's queue at a fixed step, and sums up utilisation, fairness and the queue's
//! distribution ([`FabricReport`]). The same description replays bit for bit.
//!
//! ```
//! use std::time::Duration;
//! use flextoe::control::congestion::Algorithm;
//! use flextoe::sim::fabric::{Fabric, FlowSpec, Scheme};
//!
//! // Two DCTCP flows through a 1 Gbit/s port that marks above 30 KB.
//! let mut fabric = Fabric::data_center(1_000_000_000, 30_000);
//! fabric.flows = vec![FlowSpec::new(Scheme::Window(Algorithm::Dctcp)); 2];
//! fabric.warmup = Duration::from_millis(2);
//! fabric.duration = Duration::from_millis(6);
//! let report = fabric.run();
//! assert!(report.utilisation > 0.9, "{}", report.utilisation);
//! assert_eq!(report.overflowed, 0);
//! ```

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use super::{Impairments, Switch};
use crate::backends::mem::MemPort;
use crate::control::congestion::{Algorithm, CongestionControl, FixedWindow, Selectable};
use crate::control::rates::ControlRates;
use crate::control::Ecn;
use crate::host::{Host, Listener, Stream};
use crate::pipeline::{Engine, EngineConfig, Pipeline};
use crate::stages::pacer::Pacer;
use crate::stages::scheduler::FlowScheduler;
use crate::time::Instant;
use crate::wire::{FourTuple, MacAddr};

/// How a sender controls congestion.
#[derive(Clone, Debug)]
pub enum Scheme {
    /// A per-ACK algorithm in the data path ([`Selectable`] gives the connection `0`; TIMELY
    /// is paced by the sender's [`Pacer`]).
    Window(Algorithm),
    /// Rates computed on the control plane at an interval ([`ControlRates`]); the data
    /// path's window does not limit (the send buffer) and the [`Pacer`] spaces segments.
    Rates(ControlRates),
}

impl Scheme {
    /// A short name for reports.
    pub fn name(&self) -> String {
        match self {
            Scheme::Window(a) => match a {
                // A window sender has no control-plane rates: `Rates` gets the default.
                Algorithm::Default | Algorithm::NewReno | Algorithm::Rates => "newreno".into(),
                Algorithm::Cubic => "cubic".into(),
                Algorithm::Dctcp => "dctcp".into(),
                Algorithm::Timely => "timely".into(),
            },
            Scheme::Rates(r) => r.name().into(),
        }
    }

    /// The algorithm the receiver's end of the connection runs: DCTCP's receiver echoes
    /// every CE mark, so rate-based DCTCP needs it too.
    fn receiver(&self) -> Algorithm {
        match self {
            Scheme::Window(Algorithm::Default) => Algorithm::NewReno,
            Scheme::Window(a) => *a,
            Scheme::Rates(_) => Algorithm::Dctcp,
        }
    }
}

/// One sender and its connection.
#[derive(Clone, Debug)]
pub struct FlowSpec {
    /// Its congestion control.
    pub scheme: Scheme,
    /// When it connects and starts sending.
    pub start: Duration,
    /// When it stops sending and closes (`None`: it runs to the end).
    pub stop: Option<Duration>,
    /// One-way delay added to this sender's access link, each way (mixed RTTs).
    pub extra_latency: Duration,
}

impl FlowSpec {
    /// A flow that runs for the whole run.
    pub fn new(scheme: Scheme) -> Self {
        FlowSpec {
            scheme,
            start: Duration::ZERO,
            stop: None,
            extra_latency: Duration::ZERO,
        }
    }

    /// The same flow, active from `start` until `stop`.
    pub fn between(mut self, start: Duration, stop: Option<Duration>) -> Self {
        self.start = start;
        self.stop = stop;
        self
    }

    /// The same flow with `d` more one-way delay each way.
    pub fn with_extra_latency(mut self, d: Duration) -> Self {
        self.extra_latency = d;
        self
    }
}

/// A fabric and what runs on it. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Fabric {
    /// The senders.
    pub flows: Vec<FlowSpec>,
    /// The switch's link towards the receiver: the bottleneck.
    pub bottleneck: Impairments,
    /// Every other link (senders to the switch and back, the receiver to the switch).
    pub access: Impairments,
    /// How long the run lasts (virtual time).
    pub duration: Duration,
    /// When the measurement behind the summary begins.
    pub warmup: Duration,
    /// The sampling step of the time series.
    pub step: Duration,
    /// Send and receive buffers of every connection (bytes).
    pub buffer: usize,
    /// Seeds the links and the engines' keys: another seed, another (repeatable) run.
    pub seed: u64,
}

impl Fabric {
    /// A data-center fabric: a bottleneck of `rate_bps` marking at `k` bytes with a queue of
    /// `4k`, 5 us of delay on each link (a base RTT of 20 us), no flows yet; a run of 20 ms
    /// measured from 5 ms, sampled every 100 us.
    pub fn data_center(rate_bps: u64, k: usize) -> Self {
        let hop = Duration::from_micros(5);
        Fabric {
            flows: Vec::new(),
            bottleneck: Impairments {
                rate_bps,
                latency: hop,
                ecn_threshold: k,
                queue_limit: 4 * k,
                ..Impairments::default()
            },
            access: Impairments {
                latency: hop,
                ..Impairments::default()
            },
            duration: Duration::from_millis(20),
            warmup: Duration::from_millis(5),
            step: Duration::from_micros(100),
            buffer: 4 << 20,
            seed: 1,
        }
    }

    /// A wide-area path: a bottleneck of `rate_bps` with `rtt` of round trip and a drop-tail
    /// queue of one bandwidth-delay product, no ECN; 10 s measured from 2 s, sampled every
    /// 50 ms.
    pub fn wide_area(rate_bps: u64, rtt: Duration) -> Self {
        let quarter = rtt / 4;
        let bdp = (rate_bps as f64 / 8.0 * rtt.as_secs_f64()) as usize;
        Fabric {
            flows: Vec::new(),
            bottleneck: Impairments {
                rate_bps,
                latency: quarter,
                queue_limit: bdp.max(64 * 1024),
                ..Impairments::default()
            },
            access: Impairments {
                latency: quarter,
                ..Impairments::default()
            },
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            step: Duration::from_millis(50),
            buffer: 8 << 20,
            seed: 1,
        }
    }

    /// Run it.
    pub fn run(&self) -> FabricReport {
        Run::new(self).go()
    }
}

/// One flow's part of a [`FabricReport`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlowSeries {
    /// Its scheme's name.
    pub name: String,
    /// Goodput in each step (bits per second; payload delivered to the receiver).
    pub throughput_bps: Vec<f64>,
    /// The sender's smoothed RTT at the end of each step (microseconds; 0 before a sample).
    pub rtt_us: Vec<f64>,
    /// Payload bytes delivered in each step.
    pub bytes: Vec<u64>,
    /// When the flow was active (from its start to its stop).
    pub active: (Duration, Option<Duration>),
}

impl FlowSeries {
    /// Payload bytes delivered between `from` and `to` (whole steps).
    pub fn bytes_between(&self, step: Duration, from: Duration, to: Duration) -> u64 {
        let (a, b) = step_range(step, from, to);
        self.bytes[a.min(self.bytes.len())..b.min(self.bytes.len())]
            .iter()
            .sum()
    }

    /// Whether the flow was active over all of `[from, to)`.
    pub fn active_over(&self, from: Duration, to: Duration) -> bool {
        self.active.0 <= from && self.active.1.is_none_or(|s| s >= to)
    }
}

fn step_range(step: Duration, from: Duration, to: Duration) -> (usize, usize) {
    let s = step.as_nanos().max(1);
    ((from.as_nanos() / s) as usize, (to.as_nanos() / s) as usize)
}

/// The seconds the whole steps of `[from, to)` cover (what byte counts over them divide by).
fn step_secs(step: Duration, from: Duration, to: Duration) -> f64 {
    let (a, b) = step_range(step, from, to);
    (b.saturating_sub(a) as f64 * step.as_secs_f64()).max(1e-9)
}

/// What a [`Fabric`] run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FabricReport {
    /// The sampling step.
    pub step: Duration,
    /// The end of each step (seconds).
    pub times: Vec<f64>,
    /// Per flow, in the order of [`Fabric::flows`].
    pub flows: Vec<FlowSeries>,
    /// The bottleneck queue at the end of each step (bytes).
    pub queue_bytes: Vec<u64>,
    /// The bottleneck's link rate (bits per second).
    pub rate_bps: u64,
    /// Its ECN threshold (bytes; 0 = none).
    pub k: usize,
    /// Goodput of all flows over the measurement, as a fraction of the link rate (counted
    /// in frames on the wire: payload plus 66 bytes of headers per full segment).
    pub utilisation: f64,
    /// Jain's fairness index of the goodputs of the flows active over the whole measurement.
    pub jain: f64,
    /// Median and 99th percentile of the queue that frames found at the bottleneck after the
    /// warm-up (bytes, to 1 KiB).
    pub queue_p50: u64,
    /// See `queue_p50`.
    pub queue_p99: u64,
    /// The largest queue over the whole run (bytes).
    pub queue_max: u64,
    /// Frames the bottleneck dropped over the whole run (its queue was full).
    pub overflowed: u64,
    /// Frames the bottleneck marked CE.
    pub ce_marked: u64,
    /// Retransmissions of all senders (fast, recovery, tail probes, timeouts).
    pub retransmissions: u64,
    /// When the measurement began and ended.
    pub measured: (Duration, Duration),
}

impl FabricReport {
    /// Jain's fairness index of `x`: 1 when all are equal, `1/n` when one takes all.
    pub fn jain_index(x: &[f64]) -> f64 {
        let s: f64 = x.iter().sum();
        let sq: f64 = x.iter().map(|v| v * v).sum();
        if sq == 0.0 {
            return 0.0;
        }
        s * s / (x.len() as f64 * sq)
    }

    /// Goodput (bits per second) of each flow active over all of `[from, to)`.
    pub fn goodputs(&self, from: Duration, to: Duration) -> Vec<f64> {
        let secs = step_secs(self.step, from, to);
        self.flows
            .iter()
            .filter(|f| f.active_over(from, to))
            .map(|f| f.bytes_between(self.step, from, to) as f64 * 8.0 / secs)
            .collect()
    }

    /// Mean of the sampled RTTs (microseconds) of all flows over `[from, to)`.
    pub fn mean_rtt_us(&self, from: Duration, to: Duration) -> f64 {
        let (a, b) = step_range(self.step, from, to);
        let v: Vec<f64> = self
            .flows
            .iter()
            .flat_map(|f| f.rtt_us[a.min(f.rtt_us.len())..b.min(f.rtt_us.len())].iter())
            .copied()
            .filter(|r| *r > 0.0)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }

    /// A digest of every sample: equal for runs that replayed bit for bit.
    pub fn digest(&self) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut eat = |v: u64| {
            for b in v.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
        };
        for f in &self.flows {
            f.bytes.iter().for_each(|b| eat(*b));
            f.rtt_us.iter().for_each(|r| eat(r.to_bits()));
        }
        self.queue_bytes.iter().for_each(|q| eat(*q));
        h
    }
}

/// An engine of whatever policies, as the run drives it.
trait Node {
    fn poll(&mut self, now: Instant) -> bool;
    fn next_deadline(&self) -> Option<Instant>;
    fn host(&self) -> Host;
    fn srtt(&self, t: &FourTuple) -> Option<Duration>;
    fn retransmissions(&self) -> u64;
}

impl<C: CongestionControl, S: FlowScheduler> Node for Engine<MemPort, C, S> {
    fn poll(&mut self, now: Instant) -> bool {
        Engine::poll(self, now)
    }
    fn next_deadline(&self) -> Option<Instant> {
        Engine::next_deadline(self)
    }
    fn host(&self) -> Host {
        Engine::host(self)
    }
    fn srtt(&self, t: &FourTuple) -> Option<Duration> {
        Engine::srtt(self, t)
    }
    fn retransmissions(&self) -> u64 {
        let r = Engine::retransmissions(self);
        r.fast + r.recovery + r.tail_probes + r.timeout
    }
}

const BASE_PORT: u16 = 5000;

fn addr(i: usize) -> (Ipv4Addr, MacAddr) {
    let i = i as u16;
    let (hi, lo) = ((i >> 8) as u8, i as u8);
    (Ipv4Addr::new(10, 9, hi, lo), MacAddr([2, 0, 0, 9, hi, lo]))
}

struct Sender {
    node: Box<dyn Node>,
    stream: Option<Stream>,
    tuple: Option<FourTuple>,
    done: bool,
}

struct Run<'a> {
    fab: &'a Fabric,
    sw: Switch,
    senders: Vec<Sender>,
    receiver: Box<dyn Node>,
    listeners: Vec<(Algorithm, Listener)>,
    /// Accepted streams and the sender each belongs to (by its address).
    accepted: Vec<(SocketAddrV4, Stream)>,
    got: Vec<u64>,
}

impl<'a> Run<'a> {
    fn new(fab: &'a Fabric) -> Self {
        let n = fab.flows.len();
        let everyone: Vec<_> = (1..=n + 1).map(addr).collect();
        let config = |i: usize| {
            let (ip, mac) = addr(i);
            let mut cfg = EngineConfig::new(mac, ip);
            cfg.control.ecn = Ecn::Request;
            cfg.control.isn_secret = [fab.seed, i as u64];
            cfg.arena_frames = 16384;
            cfg.tx_buffer = fab.buffer;
            cfg.rx_buffer = fab.buffer;
            for (ip, mac) in &everyone {
                cfg = cfg.neighbor(*ip, *mac);
            }
            cfg
        };
        let seeded = |imp: &Impairments, k: u64| Impairments {
            seed: imp.seed ^ fab.seed.wrapping_mul(0x9E37_79B9) ^ k,
            ..imp.clone()
        };
        let mut sw = Switch::new();
        let rport = sw.attach(seeded(&fab.bottleneck, 0), seeded(&fab.access, 1));
        let receiver: Box<dyn Node> = Box::new(
            Pipeline::builder(config(n + 1), rport)
                .congestion(Selectable::default())
                .build()
                .expect("receiver engine"),
        );
        let mut listeners: Vec<(Algorithm, Listener)> = Vec::new();
        let senders = fab
            .flows
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let want = f.scheme.receiver();
                if !listeners.iter().any(|(a, _)| *a == want) {
                    let l = receiver
                        .host()
                        .listen_with(BASE_PORT + want as u16, 256, want)
                        .expect("listener");
                    listeners.push((want, l));
                }
                let mut access = seeded(&fab.access, 2 + i as u64);
                access.latency += f.extra_latency;
                let port = sw.attach(access.clone(), access);
                let mut cfg = config(i + 1);
                let node: Box<dyn Node> = match &f.scheme {
                    Scheme::Window(_) => Box::new(
                        Pipeline::builder(cfg, port)
                            .congestion(Selectable::default())
                            .scheduler(Pacer::new(4))
                            .build()
                            .expect("sender engine"),
                    ),
                    Scheme::Rates(r) => {
                        cfg.control.rates = Some(r.clone());
                        Box::new(
                            Pipeline::builder(cfg, port)
                                .congestion(FixedWindow(fab.buffer as u32))
                                .scheduler(Pacer::new(4))
                                .build()
                                .expect("sender engine"),
                        )
                    }
                };
                Sender {
                    node,
                    stream: None,
                    tuple: None,
                    done: false,
                }
            })
            .collect();
        Run {
            fab,
            sw,
            senders,
            receiver,
            listeners,
            accepted: Vec::new(),
            got: vec![0; n],
        }
    }

    /// Start and stop flows whose time has come; keep every started one's buffer full.
    fn drive_senders(&mut self, now: Instant, chunk: &[u8]) {
        let dst_ip = addr(self.fab.flows.len() + 1).0;
        for (s, f) in self.senders.iter_mut().zip(&self.fab.flows) {
            let at = Instant::ZERO + f.start;
            if s.stream.is_none() && !s.done && now >= at {
                let want = f.scheme.receiver();
                let algo = match &f.scheme {
                    Scheme::Window(a) => *a,
                    Scheme::Rates(_) => Algorithm::Default,
                };
                let dst = SocketAddrV4::new(dst_ip, BASE_PORT + want as u16);
                if let Ok(mut c) = s.node.host().connect_with(dst, algo) {
                    c.set_nonblocking(true);
                    s.tuple = Some(FourTuple {
                        local_ip: *c.local_addr().ip(),
                        local_port: c.local_addr().port(),
                        remote_ip: dst_ip,
                        remote_port: dst.port(),
                    });
                    s.stream = Some(c);
                }
            }
            if let Some(stop) = f.stop {
                if now >= Instant::ZERO + stop && s.stream.is_some() {
                    // Dropping the stream closes it; what it queued is still delivered.
                    s.stream = None;
                    s.done = true;
                }
            }
            if let Some(c) = s.stream.as_mut() {
                let _ = c.write(chunk);
            }
        }
    }

    fn drain_receiver(&mut self, buf: &mut [u8]) {
        for (_, l) in &self.listeners {
            while let Ok(Some(mut s)) = l.try_accept() {
                s.set_nonblocking(true);
                self.accepted.push((s.peer_addr(), s));
            }
        }
        for (peer, s) in self.accepted.iter_mut() {
            let Some(i) = self.senders.iter().position(|x| {
                x.tuple
                    .is_some_and(|t| t.local_ip == *peer.ip() && t.local_port == peer.port())
            }) else {
                continue;
            };
            while let Ok(k) = s.read(buf) {
                if k == 0 {
                    break;
                }
                self.got[i] += k as u64;
            }
        }
    }

    fn go(mut self) -> FabricReport {
        let fab = self.fab;
        let chunk = vec![0x5a_u8; 256 * 1024];
        let mut buf = vec![0u8; 1 << 20];
        let step = fab.step.max(Duration::from_micros(1));
        let steps = (fab.duration.as_nanos() / step.as_nanos()) as usize;
        let mut report = FabricReport {
            step,
            rate_bps: fab.bottleneck.rate_bps,
            k: fab.bottleneck.ecn_threshold,
            measured: (fab.warmup, fab.duration),
            flows: fab
                .flows
                .iter()
                .map(|f| FlowSeries {
                    name: f.scheme.name(),
                    active: (f.start, f.stop),
                    ..FlowSeries::default()
                })
                .collect(),
            ..FabricReport::default()
        };
        let mut last_got = vec![0u64; self.got.len()];
        let mut now = Instant::ZERO;
        let mut cleared = false;
        for k in 1..=steps {
            let end = Instant::ZERO + step * k as u32;
            while now < end {
                let mut busy = self.receiver.poll(now);
                for s in self.senders.iter_mut() {
                    busy |= s.node.poll(now);
                }
                busy |= self.sw.poll(now);
                self.drive_senders(now, &chunk);
                self.drain_receiver(&mut buf);
                let next = self
                    .senders
                    .iter()
                    .map(|s| s.node.next_deadline())
                    .chain([self.receiver.next_deadline(), self.sw.next_deadline()])
                    .flatten()
                    .chain(
                        fab.flows
                            .iter()
                            .flat_map(|f| [Some(f.start), f.stop])
                            .flatten()
                            .map(|d| Instant::ZERO + d),
                    )
                    .filter(|t| *t > now)
                    .min();
                now = if busy {
                    now + Duration::from_micros(1)
                } else {
                    next.map_or(end, |t| t.min(end))
                };
            }
            if !cleared && now >= Instant::ZERO + fab.warmup {
                // The queue's distribution is measured after the warm-up.
                self.sw.port(0).clear_tx_queue_history();
                cleared = true;
            }
            report.times.push((step * k as u32).as_secs_f64());
            report.queue_bytes.push(self.sw.port(0).tx_queue_bytes(now));
            for (i, s) in self.senders.iter().enumerate() {
                let d = self.got[i] - last_got[i];
                let fs = &mut report.flows[i];
                fs.bytes.push(d);
                fs.throughput_bps.push(d as f64 * 8.0 / step.as_secs_f64());
                let rtt = s.tuple.and_then(|t| s.node.srtt(&t));
                fs.rtt_us
                    .push(rtt.map_or(0.0, |r| r.as_nanos() as f64 / 1000.0));
            }
            last_got.clone_from(&self.got);
        }
        let (from, to) = (fab.warmup, fab.duration);
        let total: u64 = report
            .flows
            .iter()
            .map(|f| f.bytes_between(step, from, to))
            .sum();
        let secs = step_secs(step, from, to);
        // Full segments: 1448 payload bytes in 1514 on the wire (timestamps on).
        let wire = total as f64 * 1514.0 / 1448.0 * 8.0;
        report.utilisation = if fab.bottleneck.rate_bps > 0 {
            wire / secs / fab.bottleneck.rate_bps as f64
        } else {
            0.0
        };
        report.jain = FabricReport::jain_index(&report.goodputs(from, to));
        let port = self.sw.port(0);
        report.queue_p50 = port.tx_queue_quantile(0.5);
        report.queue_p99 = port.tx_queue_quantile(0.99);
        let st = port.tx_stats();
        report.queue_max = st.max_queue;
        report.overflowed = st.overflowed;
        report.ce_marked = st.ce_marked;
        report.retransmissions = self.senders.iter().map(|s| s.node.retransmissions()).sum();
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_index_bounds() {
        assert!((FabricReport::jain_index(&[1.0, 1.0, 1.0]) - 1.0).abs() < 1e-12);
        assert!((FabricReport::jain_index(&[1.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-12);
        assert_eq!(FabricReport::jain_index(&[]), 0.0);
    }

    #[test]
    fn step_ranges_and_activity() {
        let f = FlowSeries {
            bytes: vec![1, 2, 3, 4],
            active: (Duration::from_millis(1), Some(Duration::from_millis(3))),
            ..FlowSeries::default()
        };
        let ms = Duration::from_millis(1);
        assert_eq!(f.bytes_between(ms, ms, 3 * ms), 2 + 3);
        assert_eq!(f.bytes_between(ms, 3 * ms, 10 * ms), 4);
        assert!(f.active_over(ms, 3 * ms));
        assert!(!f.active_over(Duration::ZERO, 3 * ms));
        assert!(!f.active_over(ms, 4 * ms));
    }
}
