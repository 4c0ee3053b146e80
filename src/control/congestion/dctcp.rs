//! DCTCP (RFC 8257), window-based: the sender estimates the fraction of its bytes that met
//! congestion (`alpha`, a moving average over windows of data of the fraction acknowledged
//! with ECE) and, once per window in which marks arrive, shrinks the window by `alpha / 2`
//! rather than by half. Loss is handled as NewReno does. Both ends must run it: the
//! receiver echoes each segment's CE mark on its ACKs ([`CongestionControl::PRECISE_ECE`])
//! instead of holding ECE until CWR, and the switches must mark CE above a queue threshold.

use super::{AckSample, CongestionControl, Loss, LossKind};

/// DCTCP's parameters; [`Default`] gives RFC 8257's (`g` = 1/16, `alpha` starting at 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dctcp {
    /// Weight of the newest window's marked fraction in `alpha`.
    pub g: f64,
    /// `alpha` of a new connection (1: react as Reno until measured).
    pub initial_alpha: f64,
}

impl Default for Dctcp {
    fn default() -> Self {
        Dctcp {
            g: 1.0 / 16.0,
            initial_alpha: 1.0,
        }
    }
}

/// [`Dctcp`]'s per-flow state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DctcpFlow {
    /// Congestion window (bytes).
    pub cwnd: u32,
    /// Slow-start threshold (bytes).
    pub ssthresh: u32,
    /// Estimated fraction of bytes that met congestion.
    pub alpha: f64,
    /// Bytes acknowledged in the current observation window, and those with ECE.
    pub acked: u64,
    /// Of `acked`, the bytes acknowledged with ECE.
    pub marked: u64,
    /// Bytes that close the current observation window (about one window of data).
    pub window_end: u64,
    /// Congestion avoidance's remainder, carried to the next ACK
    /// ([`avoidance`](super::avoidance)).
    pub avoid_rest: u32,
}

impl CongestionControl for Dctcp {
    type Flow = DctcpFlow;

    fn name(&self) -> &'static str {
        "dctcp"
    }

    fn init(&self, mss: u32, initial_window: u32) -> DctcpFlow {
        let cwnd = initial_window.max(mss.max(1));
        DctcpFlow {
            cwnd,
            ssthresh: u32::MAX / 2,
            alpha: self.initial_alpha.clamp(0.0, 1.0),
            acked: 0,
            marked: 0,
            window_end: u64::from(cwnd),
            avoid_rest: 0,
        }
    }

    fn cwnd(&self, f: &DctcpFlow) -> u32 {
        f.cwnd
    }

    fn on_ack(&self, f: &mut DctcpFlow, a: &AckSample) {
        f.acked += u64::from(a.acked);
        if a.ece {
            f.marked += u64::from(a.acked);
        }
        if f.acked >= f.window_end {
            // One window observed (RFC 8257 3.3): fold its marked fraction into alpha.
            let fraction = f.marked as f64 / f.acked.max(1) as f64;
            f.alpha = (1.0 - self.g) * f.alpha + self.g * fraction;
            f.acked = 0;
            f.marked = 0;
            f.window_end = u64::from(f.cwnd.max(a.mss));
        }
        if a.in_recovery {
            return;
        }
        if f.cwnd < f.ssthresh {
            f.cwnd = f.cwnd.saturating_add(a.acked).min(f.ssthresh.max(f.cwnd));
        } else {
            super::avoidance(&mut f.cwnd, &mut f.avoid_rest, a.mss, a.acked);
        }
    }

    fn on_loss(&self, f: &mut DctcpFlow, l: Loss) {
        let mss = l.mss.max(1);
        f.avoid_rest = 0;
        match l.kind {
            LossKind::Ecn => {
                // RFC 8257 3.3: cwnd = cwnd * (1 - alpha / 2), once per window of data.
                let cut = (f64::from(f.cwnd) * (1.0 - f.alpha / 2.0)) as u32;
                f.cwnd = cut.max(2 * mss);
                f.ssthresh = f.cwnd;
            }
            LossKind::DupAcks | LossKind::Timeout => {
                if !l.repeated {
                    f.ssthresh = (l.flight / 2).max(2 * mss);
                }
                f.cwnd = if l.kind == LossKind::Timeout {
                    mss
                } else {
                    f.ssthresh
                };
            }
        }
    }

    const PRECISE_ECE: bool = true;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Instant;

    const MSS: u32 = 1000;

    fn ack(acked: u32, ece: bool) -> AckSample {
        AckSample {
            acked,
            flight: 0,
            mss: MSS,
            in_recovery: false,
            ece,
            rtt_us: None,
            now: Instant::ZERO,
        }
    }

    /// Windows of 10 segments in which `marked` of them come back with ECE.
    fn windows(cc: &Dctcp, f: &mut DctcpFlow, n: usize, marked: usize) {
        for _ in 0..n {
            f.cwnd = 10 * MSS;
            f.window_end = u64::from(10 * MSS);
            f.acked = 0;
            f.marked = 0;
            for i in 0..10 {
                cc.on_ack(f, &ack(MSS, i < marked));
            }
        }
    }

    #[test]
    fn alpha_tracks_the_marked_fraction() {
        let cc = Dctcp::default();
        let mut f = cc.init(MSS, 10 * MSS);
        f.ssthresh = 0;
        assert_eq!(f.alpha, 1.0);
        windows(&cc, &mut f, 200, 1);
        assert!((f.alpha - 0.1).abs() < 0.01, "{}", f.alpha);
        windows(&cc, &mut f, 200, 0);
        assert!(f.alpha < 0.001, "{}", f.alpha);
    }

    #[test]
    fn an_ece_cuts_by_half_alpha_and_a_loss_halves() {
        let cc = Dctcp::default();
        let mut f = cc.init(MSS, 10 * MSS);
        f.ssthresh = 0;
        windows(&cc, &mut f, 200, 1);
        f.cwnd = 100 * MSS;
        let ecn = Loss {
            kind: LossKind::Ecn,
            flight: 100 * MSS,
            mss: MSS,
            repeated: false,
        };
        cc.on_loss(&mut f, ecn);
        let cut = 100.0 - f64::from(f.cwnd) / f64::from(MSS);
        assert!(
            (4.0..=6.0).contains(&cut),
            "{cut} segments cut with alpha 0.1"
        );
        cc.on_loss(
            &mut f,
            Loss {
                kind: LossKind::DupAcks,
                ..ecn
            },
        );
        assert_eq!(f.cwnd, 50 * MSS, "a loss halves the flight, as NewReno");
    }
}
