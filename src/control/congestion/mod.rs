//! Congestion control: the policy the protocol stage consults for its congestion window.
//!
//! A [`CongestionControl`] is one object per protocol stage (per flow group) plus a state of
//! its own per flow ([`CongestionControl::Flow`]), kept by the protocol stage beside the
//! flow's TCP state; only that stage's thread touches it. The protocol stage calls it on
//! every ACK that advances `snd_una` (with ECN echo and RTT sample), on loss (three duplicate
//! ACKs, timeout) and when a recovery ends, and sends no more than [`cwnd`] bytes in flight.
//! The calls are static: the pipeline is generic over the policy.
//!
//! [`NewReno`] is the default and behaves as the engine always has: byte-counting slow start
//! (RFC 3465), congestion avoidance, halving on loss (RFC 5681). [`Cubic`] is RFC 9438's
//! CUBIC, for paths with long round trips; [`Dctcp`] is RFC 8257's DCTCP for data centers
//! whose switches mark ECN; [`Timely`] sets a rate from the RTT's gradient. [`FixedWindow`] keeps a constant window (tests,
//! and links whose capacity is known); [`ConstantRate`] paces at a set rate.
//!
//! ```
//! use flextoe::control::congestion::{AckSample, CongestionControl, Loss};
//!
//! /// Halves on loss, never grows: a policy for a link one knows is shared.
//! #[derive(Clone)]
//! struct Timid;
//!
//! impl CongestionControl for Timid {
//!     type Flow = u32;
//!     fn name(&self) -> &'static str { "timid" }
//!     fn init(&self, _mss: u32, initial_window: u32) -> u32 { initial_window }
//!     fn cwnd(&self, f: &u32) -> u32 { *f }
//!     fn on_ack(&self, _f: &mut u32, _ack: &AckSample) {}
//!     fn on_loss(&self, f: &mut u32, loss: Loss) { *f = (*f / 2).max(loss.mss) }
//! }
//! ```
//!
//! [`cwnd`]: CongestionControl::cwnd

use crate::time::Instant;

mod cubic;
mod dctcp;
mod select;
mod timely;
pub use cubic::{Cubic, CubicFlow};
pub use dctcp::{Dctcp, DctcpFlow};
pub use select::{Algorithm, Selectable, SelectableFlow};
pub use timely::{Timely, TimelyFlow};

/// An ACK that acknowledged new data, as the congestion control sees it.
#[derive(Clone, Copy, Debug)]
pub struct AckSample {
    /// Bytes newly acknowledged.
    pub acked: u32,
    /// Bytes in flight before this ACK.
    pub flight: u32,
    /// Payload bytes per segment.
    pub mss: u32,
    /// The connection is recovering from a loss (the ACK is below the recovery point).
    pub in_recovery: bool,
    /// The peer echoed congestion (ECE).
    pub ece: bool,
    /// An RTT sample, microseconds.
    pub rtt_us: Option<u32>,
    /// The time.
    pub now: Instant,
}

/// A loss event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loss {
    /// What found it.
    pub kind: LossKind,
    /// Bytes in flight when it was found.
    pub flight: u32,
    /// Payload bytes per segment.
    pub mss: u32,
    /// A timeout that follows a timeout with nothing acknowledged in between: RFC 6298 5.5
    /// keeps the slow-start threshold of the first one.
    pub repeated: bool,
}

/// How a loss was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    /// Duplicate ACKs or SACK blocks (fast recovery).
    DupAcks,
    /// Retransmission timeout.
    Timeout,
    /// The peer echoed congestion (ECE, RFC 3168): the window shrinks as for a loss, and
    /// nothing is retransmitted.
    Ecn,
}

/// A congestion-control algorithm. See the [module docs](self).
pub trait CongestionControl: Clone + Send + 'static {
    /// Per-flow state, kept beside the flow's TCP state.
    type Flow: Clone + Send + std::fmt::Debug + 'static;
    /// Name in statistics and reports.
    fn name(&self) -> &'static str;
    /// The state of a new connection whose initial window is `initial_window` bytes.
    fn init(&self, mss: u32, initial_window: u32) -> Self::Flow;
    /// The state of a new connection whose socket asked for `choice`; policies that offer no
    /// choice ignore it (the default).
    fn init_with(&self, mss: u32, initial_window: u32, _choice: Algorithm) -> Self::Flow {
        self.init(mss, initial_window)
    }
    /// The congestion window in force (bytes); the protocol stage keeps no more in flight.
    fn cwnd(&self, f: &Self::Flow) -> u32;
    /// New data was acknowledged.
    fn on_ack(&self, f: &mut Self::Flow, ack: &AckSample);
    /// A loss was found; the protocol stage goes back to the oldest unacknowledged byte.
    fn on_loss(&self, f: &mut Self::Flow, loss: Loss);
    /// The data outstanding at the last loss has all been acknowledged.
    fn on_recovery_end(&self, _f: &mut Self::Flow) {}
    /// Whether the algorithm sets a rate ([`rate`](Self::rate)); when `false` (the default)
    /// the runtimes never ask for one, at no cost.
    const PACED: bool = false;
    /// Whether the receiving side echoes each segment's CE mark on its ACKs, acknowledging at
    /// once when the mark changes (DCTCP, RFC 8257 3.2), instead of holding ECE until the
    /// sender's CWR (RFC 3168). Both ends of a connection should agree.
    const PRECISE_ECE: bool = false;
    /// Whether this flow echoes CE precisely; by default [`PRECISE_ECE`](Self::PRECISE_ECE)
    /// for every flow (a policy that chooses per flow answers per flow).
    fn precise_ece(&self, _f: &Self::Flow) -> bool {
        Self::PRECISE_ECE
    }
    /// The rate the flow may send at, in bytes per second, if the algorithm sets one. The
    /// protocol stage's flow group hands it to its scheduler
    /// ([`FlowScheduler::set_rate`](crate::stages::scheduler::FlowScheduler::set_rate))
    /// whenever it changes; a pacing scheduler spaces the flow's segments by it.
    fn rate(&self, _f: &Self::Flow) -> Option<u64> {
        None
    }
}

/// NewReno-style window: byte-counting slow start, congestion avoidance, halving on loss.
/// The default policy.
#[derive(Clone, Copy, Debug, Default)]
pub struct NewReno;

/// [`NewReno`]'s per-flow state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenoFlow {
    /// Congestion window (bytes).
    pub cwnd: u32,
    /// Slow-start threshold (bytes).
    pub ssthresh: u32,
    /// Congestion avoidance's remainder, carried to the next ACK ([`avoidance`]).
    pub avoid_rest: u32,
}

/// Congestion avoidance (RFC 5681 3.1, bytes counted as in RFC 3465): `acked` bytes
/// acknowledged grow `cwnd` by `mss * acked / cwnd`, about one MSS per window of data,
/// and the division's remainder (`rest`) is kept for the next ACK. No ACK grows the window
/// by a minimum of its own: a peer that splits its ACKs (ACK division, a byte each) gains
/// nothing over one that does not.
pub fn avoidance(cwnd: &mut u32, rest: &mut u32, mss: u32, acked: u32) {
    let c = u64::from((*cwnd).max(1));
    let total = u64::from(mss) * u64::from(acked) + u64::from(*rest);
    // Below `c`, itself at most `u32::MAX`.
    *rest = (total % c) as u32;
    let inc = (total / c).min(u64::from(u32::MAX)) as u32;
    *cwnd = cwnd.saturating_add(inc);
}

impl CongestionControl for NewReno {
    type Flow = RenoFlow;

    fn name(&self) -> &'static str {
        "newreno"
    }

    fn init(&self, mss: u32, initial_window: u32) -> RenoFlow {
        RenoFlow {
            cwnd: initial_window.max(mss.max(1)),
            ssthresh: u32::MAX / 2,
            avoid_rest: 0,
        }
    }

    fn cwnd(&self, f: &RenoFlow) -> u32 {
        f.cwnd
    }

    fn on_ack(&self, f: &mut RenoFlow, a: &AckSample) {
        if a.in_recovery {
            return;
        }
        if f.cwnd < f.ssthresh {
            // Slow start counts acknowledged bytes (RFC 3465): ACKs that cover a whole burst
            // (the receiver's per-burst policy) grow the window as much as one ACK per
            // segment would.
            f.cwnd = f.cwnd.saturating_add(a.acked).min(f.ssthresh.max(f.cwnd));
        } else {
            avoidance(&mut f.cwnd, &mut f.avoid_rest, a.mss, a.acked);
        }
    }

    fn on_loss(&self, f: &mut RenoFlow, l: Loss) {
        if !l.repeated {
            f.ssthresh = (l.flight / 2).max(2 * l.mss);
        }
        f.cwnd = match l.kind {
            LossKind::DupAcks | LossKind::Ecn => f.ssthresh,
            LossKind::Timeout => l.mss.max(1),
        };
        f.avoid_rest = 0;
    }

    fn on_recovery_end(&self, f: &mut RenoFlow) {
        f.cwnd = f.ssthresh;
    }
}

/// A constant congestion window of `bytes` (at least one segment), whatever happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedWindow(pub u32);

impl CongestionControl for FixedWindow {
    type Flow = u32;

    fn name(&self) -> &'static str {
        "fixed-window"
    }

    fn init(&self, mss: u32, _initial_window: u32) -> u32 {
        self.0.max(mss.max(1))
    }

    fn cwnd(&self, f: &u32) -> u32 {
        *f
    }

    fn on_ack(&self, _f: &mut u32, _a: &AckSample) {}

    fn on_loss(&self, _f: &mut u32, _l: Loss) {}
}

/// A constant rate of `bytes_per_sec` with a constant window of `window` bytes (at least one
/// segment): the window bounds what is in flight, the rate what the scheduler grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConstantRate {
    /// Bytes per second.
    pub bytes_per_sec: u64,
    /// Congestion window (bytes).
    pub window: u32,
}

impl CongestionControl for ConstantRate {
    type Flow = u32;

    fn name(&self) -> &'static str {
        "constant-rate"
    }

    fn init(&self, mss: u32, _initial_window: u32) -> u32 {
        self.window.max(mss.max(1))
    }

    fn cwnd(&self, f: &u32) -> u32 {
        *f
    }

    fn on_ack(&self, _f: &mut u32, _a: &AckSample) {}

    fn on_loss(&self, _f: &mut u32, _l: Loss) {}

    const PACED: bool = true;

    fn rate(&self, _f: &u32) -> Option<u64> {
        Some(self.bytes_per_sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(acked: u32, in_recovery: bool) -> AckSample {
        AckSample {
            acked,
            flight: 0,
            mss: 1000,
            in_recovery,
            ece: false,
            rtt_us: None,
            now: Instant::ZERO,
        }
    }

    #[test]
    fn newreno_slow_start_avoidance_and_loss() {
        let cc = NewReno;
        let mut f = cc.init(1000, 10_000);
        cc.on_ack(&mut f, &ack(5000, false));
        assert_eq!(cc.cwnd(&f), 15_000, "slow start counts bytes");
        cc.on_ack(&mut f, &ack(5000, true));
        assert_eq!(cc.cwnd(&f), 15_000, "no growth in recovery");
        cc.on_loss(
            &mut f,
            Loss {
                kind: LossKind::DupAcks,
                flight: 15_000,
                mss: 1000,
                repeated: false,
            },
        );
        assert_eq!((f.cwnd, f.ssthresh), (7500, 7500));
        cc.on_ack(&mut f, &ack(7500, false));
        assert_eq!(
            cc.cwnd(&f),
            8500,
            "congestion avoidance: one MSS per window"
        );
        cc.on_loss(
            &mut f,
            Loss {
                kind: LossKind::Timeout,
                flight: 3000,
                mss: 1000,
                repeated: false,
            },
        );
        assert_eq!((f.cwnd, f.ssthresh), (1000, 2000));
        cc.on_loss(
            &mut f,
            Loss {
                kind: LossKind::Timeout,
                flight: 1000,
                mss: 1000,
                repeated: true,
            },
        );
        assert_eq!(
            (f.cwnd, f.ssthresh),
            (1000, 2000),
            "RFC 6298 5.5: a repeated timeout keeps ssthresh"
        );
        cc.on_recovery_end(&mut f);
        assert_eq!(f.cwnd, 2000);
    }

    /// ACK division: a segment acknowledged a byte at a time grows the window in
    /// congestion avoidance as one ACK of the segment does (each ACK used to add at least a
    /// byte: 1000 one-byte ACKs added 1000 bytes where the segment's ACK adds 10).
    #[test]
    fn split_acks_grow_the_window_as_one_ack_does() {
        let cc = NewReno;
        let mut one = cc.init(1000, 100_000);
        let mut split = cc.init(1000, 100_000);
        one.ssthresh = 50_000;
        split.ssthresh = 50_000;
        for _ in 0..10 {
            cc.on_ack(&mut one, &ack(1000, false));
            for _ in 0..1000 {
                cc.on_ack(&mut split, &ack(1, false));
            }
        }
        assert_eq!(cc.cwnd(&one), 100_099);
        assert!(cc.cwnd(&split).abs_diff(cc.cwnd(&one)) <= 1, "{split:?}");
    }

    /// RFC 5681 ACK counting under the per-burst ACK policy: a receiver that acknowledges a
    /// burst of eight segments with one ACK grows the window as eight ACKs would (bytes are
    /// counted, RFC 3465), in slow start and in congestion avoidance.
    #[test]
    fn one_ack_per_burst_grows_the_window_as_one_per_segment() {
        let cc = NewReno;
        for ssthresh in [u32::MAX / 2, 10_000] {
            let mut one = cc.init(1000, 10_000);
            let mut each = cc.init(1000, 10_000);
            one.ssthresh = ssthresh;
            each.ssthresh = ssthresh;
            cc.on_ack(&mut one, &ack(8000, false));
            for _ in 0..8 {
                cc.on_ack(&mut each, &ack(1000, false));
            }
            let (a, b) = (cc.cwnd(&one), cc.cwnd(&each));
            assert!(
                a.abs_diff(b) <= 1000 / 10,
                "ssthresh {ssthresh}: {a} against {b}"
            );
            assert!(a > 10_000);
        }
    }

    #[test]
    fn fixed_window_never_moves() {
        let cc = FixedWindow(4000);
        let mut f = cc.init(1000, 10_000);
        cc.on_ack(&mut f, &ack(50_000, false));
        cc.on_loss(
            &mut f,
            Loss {
                kind: LossKind::Timeout,
                flight: 4000,
                mss: 1000,
                repeated: false,
            },
        );
        assert_eq!(cc.cwnd(&f), 4000);
        assert_eq!(FixedWindow(10).init(1460, 0), 1460, "at least one segment");
    }
}
