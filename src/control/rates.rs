//! Rates computed on the control plane, as FlexTOE splits congestion control: the data path
//! only counts (acknowledged bytes, ECN-marked bytes, fast retransmits, timeouts, RTT
//! samples, bytes in flight and waiting, in [`FlowCounters`](crate::flow::FlowCounters)), and
//! the control plane, once per `interval`, turns each flow's counts since the last interval
//! into a rate ([`RateAlgorithm`]) that it sends to the flow's scheduler
//! ([`ProtoWork::SetRate`](crate::stages::ProtoWork::SetRate)). The data path then needs no
//! per-ACK congestion arithmetic, and an algorithm may be as slow as it likes.
//!
//! The rate overrides the data path's congestion control for pacing, and an algorithm may
//! also cap the data path's window ([`RateAlgorithm::window`]); pair control-plane rates
//! with a data-path window that does not limit by itself (for example
//! [`FixedWindow`](super::congestion::FixedWindow) of the send buffer) and with a pacing
//! scheduler ([`Pacer`](crate::stages::pacer::Pacer)).
//!
//! ```
//! use std::time::Duration;
//! use flextoe::backends::mem::MemLink;
//! use flextoe::control::congestion::FixedWindow;
//! use flextoe::control::rates::{ControlRates, DctcpRate};
//! use flextoe::pipeline::{EngineConfig, Pipeline};
//! use flextoe::sim::Impairments;
//! use flextoe::stages::pacer::Pacer;
//! use flextoe::wire::MacAddr;
//!
//! let (port, _peer) = MemLink::pair(Impairments::none());
//! let mut cfg = EngineConfig::new(MacAddr([2, 0, 0, 0, 0, 1]), "10.0.0.1".parse().unwrap());
//! // DCTCP's rates, computed every 50 us from the flows' counters.
//! cfg.control.rates = Some(ControlRates::new(Duration::from_micros(50), DctcpRate::default()));
//! let engine = Pipeline::builder(cfg, port)
//!     .congestion(FixedWindow(1 << 20))
//!     .scheduler(Pacer::new(4))
//!     .build()
//!     .unwrap();
//! # drop(engine);
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::congestion::{Timely, TimelyFlow};
use crate::flow::FlowId;
use crate::time::Instant;

/// What a flow's counters say about one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct IntervalSample {
    /// The time.
    pub now: Instant,
    /// How long the interval was (since the flow's previous sample).
    pub interval: Duration,
    /// Payload bytes per segment.
    pub mss: u32,
    /// Bytes newly acknowledged.
    pub acked_bytes: u64,
    /// Of those, the bytes acknowledged with ECE.
    pub ecn_bytes: u64,
    /// Fast recoveries entered.
    pub fast_retransmits: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
    /// The mean RTT sample of the interval, microseconds (`None`: no sample).
    pub rtt_us: Option<u32>,
    /// Sequence space sent and not acknowledged, now.
    pub in_flight: u64,
    /// Bytes the application queued that are not sent yet, now.
    pub unsent: u64,
}

impl IntervalSample {
    /// Whether the flow had more to send than it sent (it was not limited by the
    /// application).
    pub fn backlogged(&self) -> bool {
        self.unsent > 0
    }

    /// The rate acknowledgements arrived at over the interval (bytes per second).
    pub fn acked_rate(&self) -> f64 {
        self.acked_bytes as f64 / self.interval.as_secs_f64().max(1e-9)
    }
}

/// A rate-based congestion control run on the control plane. The control plane keeps one
/// [`Flow`](Self::Flow) per connection and calls [`update`](Self::update) once per interval.
pub trait RateAlgorithm: Clone + Send + Sync + 'static {
    /// Per-flow state.
    type Flow: Send + 'static;
    /// Name in reports.
    fn name(&self) -> &'static str;
    /// The state of a new connection.
    fn open(&self, mss: u32) -> Self::Flow;
    /// The flow's rate, bytes per second.
    fn rate(&self, f: &Self::Flow) -> u64;
    /// The most bytes the flow may have in flight, if the algorithm bounds it (the data
    /// path's congestion window is capped by it); `None` (the default) leaves the data
    /// path's window alone.
    fn window(&self, _f: &Self::Flow) -> Option<u32> {
        None
    }
    /// Fold one interval's counts into the flow's state.
    fn update(&self, f: &mut Self::Flow, s: &IntervalSample);
}

/// The control plane's per-connection driver of a [`RateAlgorithm`] (object-safe, so the
/// control plane need not be generic over it).
pub(crate) trait RateDriver: Send {
    fn open(&mut self, id: FlowId, mss: u32) -> Setting;
    fn update(&mut self, id: FlowId, s: &IntervalSample) -> Option<Setting>;
    fn close(&mut self, id: FlowId);
}

/// What the control plane sets for a flow: a rate (bytes per second) and perhaps a window.
pub(crate) type Setting = (u64, Option<u32>);

struct PerFlow<A: RateAlgorithm> {
    alg: A,
    flows: Vec<Option<A::Flow>>,
}

impl<A: RateAlgorithm> RateDriver for PerFlow<A> {
    fn open(&mut self, id: FlowId, mss: u32) -> Setting {
        let i = id as usize;
        if self.flows.len() <= i {
            self.flows.resize_with(i + 1, || None);
        }
        let f = self.alg.open(mss);
        let set = (self.alg.rate(&f).max(1), self.alg.window(&f));
        self.flows[i] = Some(f);
        set
    }

    fn update(&mut self, id: FlowId, s: &IntervalSample) -> Option<Setting> {
        let f = self.flows.get_mut(id as usize)?.as_mut()?;
        self.alg.update(f, s);
        // A rate of 0 would mean "unpaced" to the scheduler: the least is 1 byte/s.
        Some((self.alg.rate(f).max(1), self.alg.window(f)))
    }

    fn close(&mut self, id: FlowId) {
        if let Some(f) = self.flows.get_mut(id as usize) {
            *f = None;
        }
    }
}

/// Control-plane rates for an engine: a [`RateAlgorithm`] and the interval it runs at
/// (`ControlConfig::rates`). See the [module docs](self).
#[derive(Clone)]
pub struct ControlRates {
    interval: Duration,
    only_when_asked: bool,
    name: &'static str,
    make: Arc<dyn Fn() -> Box<dyn RateDriver> + Send + Sync>,
}

impl ControlRates {
    /// Run `alg` every `interval` (at least one microsecond).
    pub fn new<A: RateAlgorithm>(interval: Duration, alg: A) -> Self {
        ControlRates {
            interval: interval.max(Duration::from_micros(1)),
            only_when_asked: false,
            name: alg.name(),
            make: Arc::new(move || {
                Box::new(PerFlow {
                    alg: alg.clone(),
                    flows: Vec::new(),
                })
            }),
        }
    }

    /// The same rates for only the connections whose socket asked for them
    /// ([`Algorithm::Rates`](super::congestion::Algorithm::Rates), with the
    /// [`Selectable`](super::congestion::Selectable) policy); by default they apply to every
    /// connection.
    pub fn only_when_asked(mut self) -> Self {
        self.only_when_asked = true;
        self
    }

    /// Whether a connection whose socket asked for `choice` gets these rates.
    pub fn applies_to(&self, choice: super::congestion::Algorithm) -> bool {
        !self.only_when_asked || choice == super::congestion::Algorithm::Rates
    }

    /// The interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The algorithm's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub(crate) fn driver(&self) -> Box<dyn RateDriver> {
        (self.make)()
    }
}

impl fmt::Debug for ControlRates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlRates")
            .field("interval", &self.interval)
            .field("only_when_asked", &self.only_when_asked)
            .field("algorithm", &self.name)
            .finish()
    }
}

/// DCTCP on the control plane, enforced as a rate. Once per interval the flow's counters
/// update RFC 8257's state: `alpha` (the moving average of the fraction of acknowledged
/// bytes that carried ECE), and a congestion window that grows by the bytes acknowledged in
/// slow start and by one segment per window after it, shrinks by `alpha / 2` at most once
/// per round trip when marks arrive, halves on a fast retransmit and falls to one segment
/// on a timeout, and grows only while the flow used it (backlogged, or its window full). The flow is paced at the window
/// over the interval's mean RTT, and the window also caps what the data path keeps in
/// flight ([`RateAlgorithm::window`]): as a queue builds, the RTT grows and the rate falls,
/// as a window's ACK clock would make it, so the queue settles near the marking threshold
/// instead of swinging around it. (A rate that only grows additively between marks, with no
/// clock, overshoots the link for as long as the queue takes to reach the threshold and
/// then needs several cuts to drain it.) In slow start the rate is also held to twice the
/// rate acknowledgements came back at. A flow that is not backlogged keeps its rate within
/// `headroom` of what it achieved, so an idle flow builds up no credit to spend in a burst.
///
/// As with [`Dctcp`](super::congestion::Dctcp), the receiver must echo every CE mark on its
/// ACKs (DCTCP's receiver, `PRECISE_ECE`), and the switches must mark at a threshold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DctcpRate {
    /// Weight of the newest interval's marked fraction in `alpha`.
    pub g: f64,
    /// A new connection's window, in segments.
    pub initial_window: u32,
    /// The RTT assumed before the first sample (microseconds).
    pub initial_rtt_us: f64,
    /// The least rate (bytes per second).
    pub min_rate: f64,
    /// The most rate (bytes per second): the line rate.
    pub max_rate: f64,
    /// How far above its achieved rate an application-limited flow's rate may stay.
    pub headroom: f64,
}

impl Default for DctcpRate {
    fn default() -> Self {
        DctcpRate {
            g: 1.0 / 16.0,
            initial_window: 10,
            initial_rtt_us: 100.0,
            min_rate: 1e6 / 8.0,
            max_rate: 100e9 / 8.0,
            headroom: 1.2,
        }
    }
}

/// [`DctcpRate`]'s per-flow state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DctcpRateFlow {
    /// The rate (bytes per second).
    pub rate: f64,
    /// The congestion window (bytes).
    pub cwnd: f64,
    /// Slow-start threshold (bytes).
    pub ssthresh: f64,
    /// Estimated fraction of bytes that met congestion.
    pub alpha: f64,
    /// The latest interval's mean RTT (microseconds).
    pub rtt_us: f64,
    /// Payload bytes per segment.
    pub mss: f64,
    /// No further cut for marks before this time (a round trip after the last cut).
    pub hold_until: Instant,
}

impl RateAlgorithm for DctcpRate {
    type Flow = DctcpRateFlow;

    fn name(&self) -> &'static str {
        "dctcp-rate"
    }

    fn open(&self, mss: u32) -> DctcpRateFlow {
        let mss = f64::from(mss.max(1));
        let cwnd = f64::from(self.initial_window.max(1)) * mss;
        let rtt_us = self.initial_rtt_us.max(1.0);
        DctcpRateFlow {
            rate: (cwnd / rtt_us * 1e6).max(self.min_rate).min(self.max_rate),
            cwnd,
            ssthresh: f64::MAX,
            alpha: 1.0,
            rtt_us,
            mss,
            hold_until: Instant::ZERO,
        }
    }

    fn rate(&self, f: &DctcpRateFlow) -> u64 {
        f.rate as u64
    }

    /// The window bounds what is in flight, as the ACK clock of a window-based sender
    /// would: pacing spreads it, the window keeps slow start and a loss from flooding the
    /// queue.
    fn window(&self, f: &DctcpRateFlow) -> Option<u32> {
        Some(f.cwnd.min(f64::from(u32::MAX)) as u32)
    }

    fn update(&self, f: &mut DctcpRateFlow, s: &IntervalSample) {
        if let Some(rtt) = s.rtt_us {
            f.rtt_us = f64::from(rtt.max(1));
        }
        if s.acked_bytes == 0 && s.fast_retransmits == 0 && s.timeouts == 0 {
            // Nothing was learnt (idle, or nothing came back yet).
            return;
        }
        let acked = s.acked_bytes as f64;
        let fraction = s.ecn_bytes.min(s.acked_bytes) as f64 / acked.max(1.0);
        f.alpha = (1.0 - self.g) * f.alpha + self.g * fraction;
        let round_trip = Duration::from_nanos((f.rtt_us * 1000.0) as u64);
        let floor = 2.0 * f.mss;
        if s.fast_retransmits > 0 || s.timeouts > 0 {
            f.ssthresh = (f.cwnd / 2.0).max(floor);
            f.cwnd = if s.timeouts > 0 { f.mss } else { f.ssthresh };
            f.hold_until = s.now + round_trip;
        } else if s.ecn_bytes > 0 {
            if s.now >= f.hold_until {
                f.cwnd = (f.cwnd * (1.0 - f.alpha / 2.0)).max(floor);
                f.hold_until = s.now + round_trip;
            }
            f.ssthresh = f.cwnd;
        } else if !s.backlogged() && (s.in_flight as f64) + f.mss < f.cwnd {
            // Application-limited: the window did not limit, so nothing says a larger one
            // would fit (RFC 7661); it stays.
        } else if f.cwnd < f.ssthresh {
            f.cwnd += acked;
        } else {
            f.cwnd += f.mss * acked / f.cwnd;
        }
        f.rate = f.cwnd / f.rtt_us * 1e6;
        if f.cwnd < f.ssthresh {
            // Slow start has no ACK clock to hold it back: no more than twice what came
            // back, so that the first marks, a round trip late, find at most twice the
            // link's rate.
            f.rate = f.rate.min(2.0 * s.acked_rate());
        }
        if !s.backlogged() {
            f.rate = f.rate.min(self.headroom * s.acked_rate());
        }
        f.rate = f.rate.max(self.min_rate).min(self.max_rate);
    }
}

/// TIMELY on the control plane: the interval's mean RTT drives the same gradient rule as
/// the per-ACK [`Timely`] ([`Timely::on_rtt`]), once per interval (so `delta` is added per
/// interval, not per RTT sample: choose the interval near the RTT); a loss backs off. It
/// sets no window: what is in flight stays bounded by the data path's.
impl RateAlgorithm for Timely {
    type Flow = TimelyFlow;

    fn name(&self) -> &'static str {
        "timely-rate"
    }

    fn open(&self, mss: u32) -> TimelyFlow {
        self.new_flow(mss)
    }

    fn rate(&self, f: &TimelyFlow) -> u64 {
        f.rate as u64
    }

    fn update(&self, f: &mut TimelyFlow, s: &IntervalSample) {
        if s.fast_retransmits > 0 || s.timeouts > 0 {
            self.back_off(f);
        } else if let Some(rtt) = s.rtt_us {
            self.on_rtt(f, rtt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(acked: u64, ecn: u64) -> IntervalSample {
        IntervalSample {
            interval: Duration::from_micros(100),
            mss: 1000,
            acked_bytes: acked,
            ecn_bytes: ecn,
            unsent: 1,
            ..IntervalSample::default()
        }
    }

    #[test]
    fn dctcp_rate_paces_its_window_over_the_rtt() {
        let a = DctcpRate::default();
        let mut f = a.open(1000);
        assert_eq!(
            f.rate,
            10_000.0 / 100e-6,
            "initial window over the assumed RTT"
        );
        // Short intervals: slow start's cap (twice the acknowledged rate) does not bind.
        let rtt = |us| IntervalSample {
            rtt_us: Some(us),
            interval: Duration::from_micros(10),
            ..sample(10_000, 0)
        };
        a.update(&mut f, &rtt(50));
        assert_eq!(f.cwnd, 20_000.0, "slow start adds what was acknowledged");
        assert_eq!(f.rate, 20_000.0 / 50e-6);
        a.update(&mut f, &rtt(100));
        assert_eq!(
            f.rate,
            30_000.0 / 100e-6,
            "a longer round trip, a lower rate"
        );
        a.update(&mut f, &sample(0, 0));
        assert_eq!(f.cwnd, 30_000.0, "an empty interval changes nothing");
        // All marked: alpha moves towards 1 and the window shrinks by alpha / 2, then holds
        // for a round trip.
        let at = |us| Instant::from_micros(us);
        a.update(
            &mut f,
            &IntervalSample {
                now: at(1000),
                ..sample(10_000, 10_000)
            },
        );
        let cut = 30_000.0 * (1.0 - f.alpha / 2.0);
        assert!((f.cwnd - cut).abs() < 1e-6, "{} against {cut}", f.cwnd);
        a.update(
            &mut f,
            &IntervalSample {
                now: at(1050),
                ..sample(10_000, 10_000)
            },
        );
        assert!(
            (f.cwnd - cut).abs() < 1e-6,
            "no second cut within a round trip"
        );
        a.update(
            &mut f,
            &IntervalSample {
                now: at(1200),
                ..sample(10_000, 0)
            },
        );
        assert!(
            (f.cwnd - cut - 1000.0 * 10_000.0 / cut).abs() < 1e-6,
            "a segment per window"
        );
        let before = f.cwnd;
        a.update(
            &mut f,
            &IntervalSample {
                fast_retransmits: 1,
                now: at(5000),
                ..sample(10_000, 0)
            },
        );
        assert_eq!(f.cwnd, before / 2.0, "a loss halves");
    }

    #[test]
    fn an_application_limited_flow_keeps_near_what_it_achieves() {
        let a = DctcpRate::default();
        let mut f = a.open(1000);
        f.cwnd = 1e6;
        // 10 KB in 100 us = 100 MB/s.
        a.update(
            &mut f,
            &IntervalSample {
                unsent: 0,
                ..sample(10_000, 0)
            },
        );
        assert!((f.rate - 1.2e8).abs() < 1.0, "{}", f.rate);
    }

    #[test]
    fn control_rates_drive_one_state_per_flow() {
        let cr = ControlRates::new(Duration::from_micros(10), DctcpRate::default());
        let mut d = cr.driver();
        let r = d.open(3, 1000);
        assert_eq!(r, (100_000_000, Some(10_000)));
        // Slow start: the window grew by 1000, the rate is held to twice the 10 MB/s that
        // came back.
        assert_eq!(
            d.update(3, &sample(1000, 0)),
            Some((20_000_000, Some(11_000)))
        );
        assert_eq!(d.update(2, &sample(1000, 0)), None, "no such flow");
        d.close(3);
        assert_eq!(d.update(3, &sample(1000, 0)), None);
        assert!(format!("{cr:?}").contains("dctcp-rate"));
    }
}
