//! CUBIC (RFC 9438): after a loss the window drops to `beta` of what it was and then
//! follows a cubic function of the time since the loss, flat around the window where the
//! loss happened (`W_max`) and steep away from it, so that it regains a long path quickly
//! and probes gently near its last limit. In short round trips, where the cubic function
//! grows slower than Reno would, the window follows a Reno-friendly estimate instead (the
//! "Reno-friendly region").

use super::{AckSample, CongestionControl, Loss, LossKind};
use crate::time::Instant;

/// CUBIC's parameters; [`Default`] gives RFC 9438's (`C` = 0.4, `beta` = 0.7, fast
/// convergence on).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cubic {
    /// Aggressiveness of the cubic function (segments per second cubed).
    pub c: f64,
    /// Multiplicative decrease: the window keeps this fraction on a loss.
    pub beta: f64,
    /// Release bandwidth faster to new flows: a loss below the previous `W_max` lowers the
    /// next one further (RFC 9438 4.7).
    pub fast_convergence: bool,
}

impl Default for Cubic {
    fn default() -> Self {
        Cubic {
            c: 0.4,
            beta: 0.7,
            fast_convergence: true,
        }
    }
}

/// [`Cubic`]'s per-flow state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CubicFlow {
    /// Congestion window (bytes).
    pub cwnd: u32,
    /// Slow-start threshold (bytes).
    pub ssthresh: u32,
    /// The window before the last reduction (segments), `W_max`.
    pub w_max: f64,
    /// Seconds the cubic function takes to climb back to `w_max`, `K`.
    pub k: f64,
    /// Start of the current congestion-avoidance epoch.
    pub epoch: Option<Instant>,
    /// The Reno-friendly estimate of the window (segments), `W_est`.
    pub w_est: f64,
    /// Smoothed RTT from the ACKs' samples, microseconds (0 before the first).
    pub srtt_us: f64,
}

impl Cubic {
    /// Additive increase of the Reno-friendly estimate per window of ACKs while below
    /// `W_max` (RFC 9438 4.3): `3 (1 - beta) / (1 + beta)`.
    fn alpha(&self) -> f64 {
        3.0 * (1.0 - self.beta) / (1.0 + self.beta)
    }

    /// The cubic function: the window `t` seconds into the epoch (segments).
    fn w_cubic(&self, f: &CubicFlow, t: f64) -> f64 {
        self.c * (t - f.k).powi(3) + f.w_max
    }
}

impl CongestionControl for Cubic {
    type Flow = CubicFlow;

    fn name(&self) -> &'static str {
        "cubic"
    }

    fn init(&self, mss: u32, initial_window: u32) -> CubicFlow {
        CubicFlow {
            cwnd: initial_window.max(mss.max(1)),
            ssthresh: u32::MAX / 2,
            w_max: 0.0,
            k: 0.0,
            epoch: None,
            w_est: 0.0,
            srtt_us: 0.0,
        }
    }

    fn cwnd(&self, f: &CubicFlow) -> u32 {
        f.cwnd
    }

    fn on_ack(&self, f: &mut CubicFlow, a: &AckSample) {
        if let Some(rtt) = a.rtt_us {
            let rtt = f64::from(rtt);
            f.srtt_us = if f.srtt_us == 0.0 {
                rtt
            } else {
                0.875 * f.srtt_us + 0.125 * rtt
            };
        }
        if a.in_recovery || a.acked == 0 {
            return;
        }
        if f.cwnd < f.ssthresh {
            // Slow start, counting bytes (RFC 3465), as NewReno.
            f.cwnd = f.cwnd.saturating_add(a.acked).min(f.ssthresh.max(f.cwnd));
            return;
        }
        let mss = f64::from(a.mss.max(1));
        let cwnd = f64::from(f.cwnd) / mss;
        let epoch = match f.epoch {
            Some(e) => e,
            None => {
                // A new congestion-avoidance epoch (RFC 9438 4.2).
                if cwnd < f.w_max {
                    f.k = ((f.w_max - cwnd) / self.c).cbrt();
                } else {
                    f.k = 0.0;
                    f.w_max = cwnd;
                }
                f.w_est = cwnd;
                f.epoch = Some(a.now);
                a.now
            }
        };
        let t = a.now.saturating_since(epoch).as_secs_f64() + f.srtt_us / 1e6;
        let acked = f64::from(a.acked) / mss;
        let alpha = if f.w_est < f.w_max { self.alpha() } else { 1.0 };
        f.w_est += alpha * acked / cwnd;
        let w_cubic = self.w_cubic(f, t);
        let next = if w_cubic < f.w_est {
            // Reno-friendly region.
            f.w_est
        } else {
            let target = w_cubic.clamp(cwnd, 1.5 * cwnd);
            cwnd + (target - cwnd) / cwnd * acked
        };
        f.cwnd = ((next * mss) as u32).max(a.mss.max(1)).max(f.cwnd);
    }

    fn on_loss(&self, f: &mut CubicFlow, l: Loss) {
        let mss = l.mss.max(1);
        f.epoch = None;
        if l.repeated {
            // RFC 6298 5.5: a timeout after a timeout keeps the first one's threshold.
            f.cwnd = mss;
            return;
        }
        let cwnd = f64::from(f.cwnd) / f64::from(mss);
        f.w_max = if self.fast_convergence && cwnd < f.w_max {
            cwnd * (1.0 + self.beta) / 2.0
        } else {
            cwnd
        };
        f.ssthresh = ((f64::from(l.flight) * self.beta) as u32).max(2 * mss);
        f.cwnd = match l.kind {
            LossKind::DupAcks | LossKind::Ecn => f.ssthresh,
            LossKind::Timeout => mss,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MSS: u32 = 1000;

    fn ack(acked: u32, now: Instant, rtt_us: u32) -> AckSample {
        AckSample {
            acked,
            flight: 0,
            mss: MSS,
            in_recovery: false,
            ece: false,
            rtt_us: Some(rtt_us),
            now,
        }
    }

    fn loss(flight: u32) -> Loss {
        Loss {
            kind: LossKind::DupAcks,
            flight,
            mss: MSS,
            repeated: false,
        }
    }

    /// One window of ACKs per round trip of `rtt` for `rounds` rounds; the window after each.
    fn rounds(
        cc: &Cubic,
        f: &mut CubicFlow,
        now: &mut Instant,
        rtt: Duration,
        n: usize,
    ) -> Vec<u32> {
        (0..n)
            .map(|_| {
                *now += rtt;
                let w = f.cwnd;
                // Acknowledged segment by segment, as a receiver acknowledging each would.
                for _ in 0..w / MSS {
                    cc.on_ack(f, &ack(MSS, *now, rtt.as_micros() as u32));
                }
                f.cwnd
            })
            .collect()
    }

    #[test]
    fn a_loss_keeps_beta_and_the_window_climbs_back_to_w_max_in_k_seconds() {
        let cc = Cubic::default();
        let mut f = cc.init(MSS, 100 * MSS);
        f.ssthresh = 0;
        cc.on_loss(&mut f, loss(100 * MSS));
        assert_eq!(f.cwnd, 70 * MSS, "beta 0.7");
        assert_eq!(f.w_max, 100.0);
        // K = cbrt(30 / 0.4) = 4.2 s; with a 100 ms RTT that is 42 rounds.
        let mut now = Instant::from_micros(1_000_000);
        let w = rounds(&cc, &mut f, &mut now, Duration::from_millis(100), 60);
        let at_k = w[41] as f64 / MSS as f64;
        assert!((95.0..=102.0).contains(&at_k), "{at_k} segments at K");
        // Concave before K, convex after: the plateau is around W_max.
        let early = w[5] - w[0];
        let near = w[40] - w[35];
        let late = w[59] - w[54];
        assert!(early > near && late > near, "{early} {near} {late}");
        assert!(w[59] > 100 * MSS);
    }

    #[test]
    fn short_round_trips_follow_the_reno_friendly_estimate() {
        // With a 100 us RTT the cubic function barely moves in a round; the window follows
        // the Reno-friendly estimate: alpha (0.53) segments a round below W_max, which with
        // beta 0.7 gives Reno's average throughput, then one a round.
        let cc = Cubic::default();
        let mut f = cc.init(MSS, 20 * MSS);
        f.ssthresh = 0;
        cc.on_loss(&mut f, loss(20 * MSS));
        let start = f.cwnd;
        let mut now = Instant::from_micros(1_000_000);
        // Below W_max (20 segments, reached after about 11 rounds) alpha applies; above it,
        // one segment a round as Reno.
        let w = rounds(&cc, &mut f, &mut now, Duration::from_micros(100), 30);
        let below = (w[9] - start) as f64 / 10.0 / MSS as f64;
        assert!(
            (0.45..=0.6).contains(&below),
            "{below} segments a round below W_max"
        );
        let above = (w[29] - w[19]) as f64 / 10.0 / MSS as f64;
        assert!(
            (0.9..=1.1).contains(&above),
            "{above} segments a round above W_max"
        );
    }

    #[test]
    fn fast_convergence_lowers_w_max_after_a_loss_below_it() {
        let cc = Cubic::default();
        let mut f = cc.init(MSS, 100 * MSS);
        cc.on_loss(&mut f, loss(100 * MSS));
        f.cwnd = 80 * MSS;
        cc.on_loss(&mut f, loss(80 * MSS));
        assert!((f.w_max - 68.0).abs() < 1e-9, "{}", f.w_max);
        let slow = Cubic {
            fast_convergence: false,
            ..Cubic::default()
        };
        let mut g = slow.init(MSS, 100 * MSS);
        slow.on_loss(&mut g, loss(100 * MSS));
        g.cwnd = 80 * MSS;
        slow.on_loss(&mut g, loss(80 * MSS));
        assert_eq!(g.w_max, 80.0);
    }

    #[test]
    fn timeouts_drop_to_one_segment_and_a_repeated_one_keeps_the_threshold() {
        let cc = Cubic::default();
        let mut f = cc.init(MSS, 50 * MSS);
        cc.on_loss(
            &mut f,
            Loss {
                kind: LossKind::Timeout,
                flight: 50 * MSS,
                mss: MSS,
                repeated: false,
            },
        );
        assert_eq!((f.cwnd, f.ssthresh), (MSS, 35 * MSS));
        cc.on_loss(
            &mut f,
            Loss {
                kind: LossKind::Timeout,
                flight: MSS,
                mss: MSS,
                repeated: true,
            },
        );
        assert_eq!((f.cwnd, f.ssthresh), (MSS, 35 * MSS));
        // Slow start back up to the threshold.
        cc.on_ack(&mut f, &ack(10 * MSS, Instant::ZERO, 1000));
        assert_eq!(f.cwnd, 11 * MSS);
    }
}
