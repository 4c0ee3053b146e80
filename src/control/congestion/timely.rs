//! TIMELY (Mittal et al., SIGCOMM 2015): a rate-based congestion control driven by the
//! gradient of the round-trip time. Below `t_low` the rate grows additively; above `t_high`
//! it shrinks in proportion to how far the RTT is past it; in between it follows the
//! smoothed RTT gradient, normalised by the minimum RTT: a falling RTT adds `delta` (five
//! times `delta` after five falls in a row, "hyperactive increase"), a rising one takes off
//! `beta` times the gradient. The rate goes to the flow scheduler, which paces the flow
//! ([`Pacer`](crate::stages::pacer::Pacer)); the window only bounds what may be in flight.

use super::{AckSample, CongestionControl, Loss, LossKind};

/// TIMELY's parameters. [`Default`] suits a data center with tens of microseconds of base
/// RTT on 10-100 Gbit/s links.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timely {
    /// Below this RTT (microseconds) the rate grows by `delta`.
    pub t_low_us: f64,
    /// Above this RTT (microseconds) the rate shrinks.
    pub t_high_us: f64,
    /// Additive increase, bytes per second.
    pub delta: f64,
    /// Multiplicative decrease factor.
    pub beta: f64,
    /// Weight of the newest RTT difference in the smoothed gradient.
    pub alpha: f64,
    /// The rate a connection starts at, and the least it is given (bytes per second).
    pub initial_rate: f64,
    /// The least rate (bytes per second).
    pub min_rate: f64,
    /// The most rate (bytes per second): the line rate.
    pub max_rate: f64,
}

impl Default for Timely {
    fn default() -> Self {
        Timely {
            t_low_us: 30.0,
            t_high_us: 150.0,
            delta: 10e6 / 8.0,
            beta: 0.8,
            alpha: 0.875,
            initial_rate: 1e9 / 8.0,
            min_rate: 10e6 / 8.0,
            max_rate: 100e9 / 8.0,
        }
    }
}

/// [`Timely`]'s per-flow state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimelyFlow {
    /// The rate (bytes per second).
    pub rate: f64,
    /// The previous RTT sample (microseconds; 0 before the first).
    pub prev_rtt_us: f64,
    /// The smoothed RTT difference (microseconds).
    pub rtt_diff_us: f64,
    /// The least RTT seen (microseconds).
    pub min_rtt_us: f64,
    /// Falling gradients in a row.
    pub falls: u32,
    /// Payload bytes per segment.
    pub mss: u32,
}

impl Timely {
    /// A new connection's state.
    pub fn new_flow(&self, mss: u32) -> TimelyFlow {
        TimelyFlow {
            rate: self.initial_rate.max(self.min_rate).min(self.max_rate),
            prev_rtt_us: 0.0,
            rtt_diff_us: 0.0,
            min_rtt_us: f64::MAX,
            falls: 0,
            mss: mss.max(1),
        }
    }

    /// Fold an RTT sample (microseconds) into the flow's rate: the gradient rule.
    pub fn on_rtt(&self, f: &mut TimelyFlow, rtt_us: u32) {
        let rtt = f64::from(rtt_us.max(1));
        f.min_rtt_us = f.min_rtt_us.min(rtt);
        if f.prev_rtt_us == 0.0 {
            f.prev_rtt_us = rtt;
            return;
        }
        let diff = rtt - f.prev_rtt_us;
        f.prev_rtt_us = rtt;
        f.rtt_diff_us = (1.0 - self.alpha) * f.rtt_diff_us + self.alpha * diff;
        let gradient = f.rtt_diff_us / f.min_rtt_us;
        if rtt < self.t_low_us {
            f.rate += self.delta;
            f.falls = 0;
        } else if rtt > self.t_high_us {
            f.rate *= 1.0 - self.beta * (1.0 - self.t_high_us / rtt);
            f.falls = 0;
        } else if gradient <= 0.0 {
            f.falls += 1;
            let n = if f.falls >= 5 { 5.0 } else { 1.0 };
            f.rate += n * self.delta;
        } else {
            f.rate *= 1.0 - self.beta * gradient.min(1.0);
            f.falls = 0;
        }
        f.rate = f.rate.max(self.min_rate).min(self.max_rate);
    }

    /// A loss: back off as a rising RTT would (loss is rare where TIMELY runs).
    pub fn back_off(&self, f: &mut TimelyFlow) {
        f.rate = (f.rate * (1.0 - self.beta / 2.0)).max(self.min_rate);
    }
}

impl CongestionControl for Timely {
    type Flow = TimelyFlow;

    fn name(&self) -> &'static str {
        "timely"
    }

    fn init(&self, mss: u32, _initial_window: u32) -> TimelyFlow {
        self.new_flow(mss)
    }

    /// Enough window for the rate over twice `t_high`, at least four segments.
    fn cwnd(&self, f: &TimelyFlow) -> u32 {
        let w = f.rate * 2.0 * self.t_high_us / 1e6;
        (w as u32).max(4 * f.mss)
    }

    fn on_ack(&self, f: &mut TimelyFlow, a: &AckSample) {
        if let Some(rtt) = a.rtt_us {
            self.on_rtt(f, rtt);
        }
    }

    fn on_loss(&self, f: &mut TimelyFlow, l: Loss) {
        if l.kind != LossKind::Ecn {
            self.back_off(f);
        }
    }

    const PACED: bool = true;

    fn rate(&self, f: &TimelyFlow) -> Option<u64> {
        Some(f.rate as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Instant;

    fn sample(rtt_us: u32) -> AckSample {
        AckSample {
            acked: 1448,
            flight: 0,
            mss: 1448,
            in_recovery: false,
            ece: false,
            rtt_us: Some(rtt_us),
            now: Instant::ZERO,
        }
    }

    #[test]
    fn low_rtt_adds_high_rtt_cuts_and_the_gradient_decides_between() {
        let cc = Timely::default();
        let mut f = cc.init(1448, 0);
        let r0 = f.rate;
        cc.on_ack(&mut f, &sample(20));
        cc.on_ack(&mut f, &sample(20));
        assert_eq!(f.rate, r0 + cc.delta, "below t_low: + delta");
        cc.on_ack(&mut f, &sample(300));
        assert!(f.rate < r0 * 0.7, "above t_high: cut ({})", f.rate);
        // In the band, a rising RTT cuts and a falling one adds.
        let mut g = cc.init(1448, 0);
        cc.on_ack(&mut g, &sample(60));
        cc.on_ack(&mut g, &sample(80));
        assert!(g.rate < r0, "rising: {}", g.rate);
        let before = g.rate;
        for rtt in [78, 76, 74, 72, 70, 68] {
            cc.on_ack(&mut g, &sample(rtt));
        }
        assert!(
            g.rate > before + 5.0 * cc.delta,
            "falling, hyperactive after five"
        );
    }
}
