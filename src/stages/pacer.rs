//! A pacing flow scheduler: flows whose congestion control sets a rate wait in a
//! hierarchical timing wheel ([`TimingWheel`]) until their next segment is due; the others
//! (window-limited flows) are served from a FIFO, unpaced, as by
//! [`RoundRobin`](super::scheduler::RoundRobin).
//!
//! Each flow keeps the time its next segment may leave, to the nanosecond. When its slot
//! comes round, a flow gets as many grants as that time allows (at most `max_burst`), and the
//! time moves on by one segment's worth (`mss / rate`) per grant. The average rate is then
//! exact however often the runtime polls, and a flow that
//! was idle starts afresh rather than catching up in a burst.
//!
//! Flows may belong to traffic classes ([`FlowIdentity::class`], set by the engine's
//! [`Classifier`](crate::flow::Classifier)); [`Pacer::with_classes`] shares grants between
//! the classes by strict priority or by weight ([`ClassPolicy`]).
//!
//! The wheel's ticks are about a microsecond; the time kept per flow makes up for that
//! granularity. It runs on the `now` the runtime passes, so the virtual clock drives it in
//! simulations.
//!
//! ```
//! use flextoe::control::congestion::ConstantRate;
//! use flextoe::pipeline::{EngineConfig, Pipeline};
//! use flextoe::backends::mem::MemLink;
//! use flextoe::sim::Impairments;
//! use flextoe::stages::pacer::Pacer;
//! use flextoe::wire::MacAddr;
//!
//! let (port, _peer) = MemLink::pair(Impairments::none());
//! let cfg = EngineConfig::new(MacAddr([2, 0, 0, 0, 0, 1]), "10.0.0.1".parse().unwrap());
//! // Every flow at 100 Mbit/s, at most 4 segments at a time.
//! let engine = Pipeline::builder(cfg, port)
//!     .congestion(ConstantRate { bytes_per_sec: 12_500_000, window: 1 << 20 })
//!     .scheduler(Pacer::new(4))
//!     .build()
//!     .unwrap();
//! # drop(engine);
//! ```

use std::collections::VecDeque;

use super::scheduler::FlowScheduler;
use super::wheel::TimingWheel;
use super::ProtoWork;
use crate::flow::{FlowId, FlowIdentity};
use crate::stats::StageStats;
use crate::time::Instant;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Where {
    #[default]
    Idle,
    Ready,
    Waiting,
}

#[derive(Clone, Debug, Default)]
struct Flow {
    /// Nanoseconds per segment (0: unpaced).
    interval_ns: u64,
    /// When the next segment may leave (nanoseconds of the engine's clock).
    next_ns: u64,
    mss: u32,
    at: Where,
    /// Its traffic class (an index into `ready`).
    class: u8,
}

/// How a [`Pacer`] shares grants between traffic classes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClassPolicy {
    /// `n` classes by strict priority: class 0 first; a class is served only while every
    /// class before it has nothing ready.
    Strict(u8),
    /// One class per weight, served in turn, each class `weight` segments per turn (deficit
    /// round robin over segments): backlogged classes share in proportion to their weights.
    /// An unpaced flow takes up to its class's turn (at most the pacer's `max_burst`) in one
    /// grant, so give the pacer a burst of at least the largest weight. The weights hold
    /// while the scheduler is what limits the classes (their flows have data and window
    /// for a whole turn); a flow with less wastes the rest of its turn's grants (they send
    /// nothing), so classes whose flows are held back by their windows share by flow.
    Weighted(Vec<u32>),
}

/// The pacing scheduler. See the [module docs](self).
#[derive(Clone)]
pub struct Pacer {
    flows: Vec<Flow>,
    /// Ready flows, one queue per class.
    ready: Vec<VecDeque<FlowId>>,
    policy: Option<ClassPolicy>,
    /// Segments each class may still take in its turn (weighted classes).
    credit: Vec<u32>,
    /// The class whose turn it is (weighted classes).
    turn: usize,
    /// Paced flows waiting for their time.
    wheel: TimingWheel<FlowId>,
    /// Flows waiting in the wheel (its entries for removed flows not counted).
    waiting: usize,
    max_burst: u32,
    stats: StageStats,
}

impl Pacer {
    /// A pacer that grants a paced flow at most `max_burst` segments at once (at least 1).
    pub fn new(max_burst: u32) -> Self {
        Pacer {
            flows: Vec::new(),
            ready: vec![VecDeque::new()],
            policy: None,
            credit: vec![0],
            turn: 0,
            wheel: TimingWheel::default(),
            waiting: 0,
            max_burst: max_burst.max(1),
            stats: StageStats::default(),
        }
    }

    /// The same pacer sharing grants between traffic classes by `policy`. A flow whose
    /// class is beyond the policy's last counts as the last.
    ///
    /// ```
    /// use flextoe::stages::pacer::{ClassPolicy, Pacer};
    ///
    /// // Class 0 gets three segments for every one of class 1 while both are backlogged.
    /// let pacer = Pacer::new(4).with_classes(ClassPolicy::Weighted(vec![3, 1]));
    /// # drop(pacer);
    /// ```
    pub fn with_classes(mut self, policy: ClassPolicy) -> Self {
        let n = match &policy {
            ClassPolicy::Strict(n) => usize::from(*n).max(1),
            ClassPolicy::Weighted(w) => w.len().max(1),
        };
        self.ready = vec![VecDeque::new(); n];
        self.credit = vec![0; n];
        self.turn = 0;
        self.policy = Some(policy);
        self
    }

    /// The class whose ready flow goes next, if any flow is ready.
    fn pick(&mut self) -> Option<usize> {
        match &self.policy {
            None => (!self.ready[0].is_empty()).then_some(0),
            Some(ClassPolicy::Strict(_)) => self.ready.iter().position(|q| !q.is_empty()),
            Some(ClassPolicy::Weighted(w)) => {
                let n = self.ready.len();
                for _ in 0..2 {
                    for i in 0..n {
                        let c = (self.turn + i) % n;
                        if !self.ready[c].is_empty() && self.credit[c] > 0 {
                            self.turn = c;
                            return Some(c);
                        }
                    }
                    if self.ready.iter().all(VecDeque::is_empty) {
                        return None;
                    }
                    // Every ready class spent its turn: a new round.
                    for (c, credit) in self.credit.iter_mut().enumerate() {
                        *credit = w.get(c).copied().unwrap_or(1).max(1);
                    }
                }
                None
            }
        }
    }

    fn flow(&mut self, id: FlowId) -> &mut Flow {
        let i = id as usize;
        if self.flows.len() <= i {
            self.flows.resize(i + 1, Flow::default());
        }
        &mut self.flows[i]
    }

    /// Flows whose time has come move to the ready queue.
    fn advance(&mut self, now_ns: u64) {
        let (flows, ready, waiting) = (&mut self.flows, &mut self.ready, &mut self.waiting);
        self.wheel.advance(now_ns, |id| {
            let f = &mut flows[id as usize];
            if f.at == Where::Waiting && f.next_ns <= now_ns {
                f.at = Where::Ready;
                *waiting -= 1;
                ready[usize::from(f.class)].push_back(id);
            }
        });
    }
}

impl Default for Pacer {
    /// One segment per grant.
    fn default() -> Self {
        Self::new(1)
    }
}

impl FlowScheduler for Pacer {
    fn name(&self) -> &'static str {
        "pacer"
    }

    fn install(&mut self, id: FlowId, identity: &FlowIdentity) {
        let last = self.ready.len() - 1;
        let f = self.flow(id);
        *f = Flow {
            mss: u32::from(identity.mss).max(1),
            class: usize::from(identity.class).min(last) as u8,
            ..Flow::default()
        };
    }

    fn set_rate(&mut self, id: FlowId, bytes_per_sec: Option<u64>, now: Instant) {
        let now_ns = now.micros() * 1000;
        self.flow(id);
        let f = &mut self.flows[id as usize];
        let old = f.interval_ns;
        f.interval_ns = match bytes_per_sec {
            Some(r) if r > 0 => (u64::from(f.mss.max(1)) * 1_000_000_000).div_ceil(r),
            _ => 0,
        };
        // A faster rate takes effect at once: a flow waiting for a slot booked at the old
        // rate moves up to one interval of the new one from now (its old wheel entry is
        // skipped when it comes round).
        if f.interval_ns < old || (old > 0 && f.interval_ns == 0) {
            let sooner = now_ns + f.interval_ns;
            if f.next_ns > sooner {
                f.next_ns = sooner;
                if f.at == Where::Waiting {
                    if f.interval_ns == 0 {
                        f.at = Where::Ready;
                        let class = usize::from(f.class);
                        self.waiting -= 1;
                        self.ready[class].push_back(id);
                    } else {
                        self.wheel.insert(sooner, id);
                    }
                }
            }
        }
    }

    fn activate(&mut self, id: FlowId, now: Instant) {
        let now_ns = now.micros() * 1000;
        self.flow(id);
        let f = &mut self.flows[id as usize];
        if f.at != Where::Idle {
            return;
        }
        if f.interval_ns == 0 || f.next_ns <= now_ns {
            f.at = Where::Ready;
            self.ready[usize::from(f.class)].push_back(id);
        } else {
            f.at = Where::Waiting;
            let due = f.next_ns;
            self.waiting += 1;
            self.wheel.insert(due, id);
        }
        self.stats.items_in += 1;
    }

    fn remove(&mut self, id: FlowId) {
        let Some(f) = self.flows.get_mut(id as usize) else {
            return;
        };
        match std::mem::take(&mut f.at) {
            Where::Ready => self.ready[usize::from(f.class)].retain(|x| *x != id),
            // Its wheel entry no longer matches a waiting flow and is skipped.
            Where::Waiting => self.waiting -= 1,
            Where::Idle => {}
        }
        *f = Flow::default();
    }

    fn pending(&self) -> usize {
        self.ready.iter().map(VecDeque::len).sum::<usize>() + self.waiting
    }

    fn grant(&mut self, now: Instant, max: usize, out: &mut Vec<ProtoWork>) {
        let now_ns = now.micros() * 1000;
        self.advance(now_ns);
        let mut n = 0;
        while n < max {
            let Some(class) = self.pick() else {
                break;
            };
            let Some(flow) = self.ready[class].pop_front() else {
                break;
            };
            let f = &mut self.flows[flow as usize];
            f.at = Where::Idle;
            let k = if f.interval_ns == 0 {
                // An unpaced flow of a weighted class takes its class's turn at once (up to a
                // burst; grants beyond what the flow has to send are no-ops): between two
                // grants it is not ready, so one segment per pass would share the classes
                // by flows, not by weight.
                match (&self.policy, self.credit.get(class)) {
                    (Some(ClassPolicy::Weighted(_)), Some(&c)) => (c as usize)
                        .min(self.max_burst as usize)
                        .min(max - n)
                        .max(1),
                    _ => 1,
                }
            } else {
                // A flow idle for longer than a burst starts afresh, not with a backlog.
                let earliest = now_ns
                    .saturating_sub(u64::from(self.max_burst - 1).saturating_mul(f.interval_ns));
                f.next_ns = f.next_ns.max(earliest);
                let due = (now_ns.saturating_sub(f.next_ns) / f.interval_ns + 1)
                    .min(u64::from(self.max_burst))
                    .min((max - n) as u64);
                f.next_ns += due * f.interval_ns;
                due as usize
            };
            if let Some(c) = self.credit.get_mut(class) {
                *c = c.saturating_sub(k as u32);
            }
            for _ in 0..k {
                out.push(ProtoWork::Tx { flow });
            }
            n += k;
        }
        self.stats.bursts += u64::from(n > 0);
        self.stats.items_out += n as u64;
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.ready.iter().any(|q| !q.is_empty()) || self.waiting == 0 {
            return None;
        }
        self.wheel
            .next_ns()
            .map(|ns| Instant::from_micros(ns.div_ceil(1000)))
    }

    fn stats(&self) -> StageStats {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::flow::test_identity as identity;

    /// A flow that always has data, served for `secs` of virtual time with the runtime
    /// polling every `poll_us`: the achieved rate, in bytes per second.
    fn achieved(rate: u64, secs: f64, poll_us: u64, burst: u32) -> f64 {
        let mut p = Pacer::new(burst);
        p.install(0, &identity(0, 1448));
        p.set_rate(0, Some(rate), Instant::ZERO);
        let mut out = Vec::new();
        let mut now = Instant::from_micros(1);
        p.activate(0, now);
        let end = Instant::from_micros((secs * 1e6) as u64);
        let mut sent = 0u64;
        let mut times = Vec::new();
        while now < end {
            out.clear();
            p.grant(now, 64, &mut out);
            sent += out.len() as u64;
            times.extend(std::iter::repeat_n(now.micros(), out.len()));
            if !out.is_empty() {
                // The flow has more: the protocol stage re-activates it.
                p.activate(0, now);
            }
            now += std::time::Duration::from_micros(poll_us);
        }
        // Inter-departure jitter: the spread of the gaps between grants around the ideal.
        let ideal_us = 1448.0 / rate as f64 * 1e6;
        let gaps: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
        let var =
            gaps.iter().map(|g| (g - ideal_us).powi(2)).sum::<f64>() / gaps.len().max(1) as f64;
        eprintln!(
            "rate {:.0} Mbit/s: gap {ideal_us:.3} us ideal, jitter (rms) {:.3} us",
            rate as f64 * 8.0 / 1e6,
            var.sqrt()
        );
        sent as f64 * 1448.0 / secs
    }

    #[test]
    fn rates_from_1_mbit_to_40_gbit_are_within_two_percent() {
        for (mbit, secs, poll_us, burst) in [
            (1u64, 20.0, 50, 1),
            (10, 5.0, 20, 1),
            (100, 1.0, 5, 2),
            (1_000, 0.2, 5, 4),
            (10_000, 0.05, 5, 16),
            (40_000, 0.02, 5, 64),
        ] {
            let rate = mbit * 1_000_000 / 8;
            let got = achieved(rate, secs, poll_us, burst);
            let err = (got - rate as f64).abs() / rate as f64;
            assert!(
                err < 0.02,
                "{mbit} Mbit/s: got {:.1} Mbit/s",
                got * 8.0 / 1e6
            );
        }
    }

    #[test]
    fn unpaced_flows_go_first_come_first_served() {
        let mut p = Pacer::default();
        for id in 0..3 {
            p.install(id, &identity(id, 1000));
        }
        p.set_rate(1, Some(1_000), Instant::ZERO);
        let now = Instant::from_micros(10);
        for id in [2, 0] {
            p.activate(id, now);
        }
        let mut out = Vec::new();
        p.grant(now, 8, &mut out);
        let flows = |out: &Vec<ProtoWork>| out.iter().map(ProtoWork::flow).collect::<Vec<_>>();
        assert_eq!(flows(&out), vec![2, 0]);
        // The paced flow: one segment now, the next a second later.
        p.activate(1, now);
        out.clear();
        p.grant(now, 8, &mut out);
        assert_eq!(flows(&out), vec![1]);
        p.activate(1, now);
        out.clear();
        p.grant(Instant::from_micros(900_000), 8, &mut out);
        assert!(out.is_empty());
        // Due 1 s after the first grant, at the wheel's next tick (1.024 us ticks).
        assert_eq!(p.next_deadline(), Some(Instant::from_micros(1_000_011)));
        p.grant(Instant::from_micros(1_000_011), 8, &mut out);
        assert_eq!(flows(&out), vec![1]);
    }

    fn classed(id: FlowId, class: u8) -> Arc<FlowIdentity> {
        let mut i = (*identity(id, 1000)).clone();
        i.class = class;
        Arc::new(i)
    }

    /// Grants to always-backlogged flows (re-activated after each grant), counted by flow.
    fn share(p: &mut Pacer, flows: &[FlowId], grants: usize) -> Vec<usize> {
        let mut got = vec![0; flows.len()];
        let now = Instant::from_micros(1);
        for id in flows {
            p.activate(*id, now);
        }
        let mut out = Vec::new();
        for _ in 0..grants {
            out.clear();
            p.grant(now, 1, &mut out);
            for w in &out {
                let i = flows.iter().position(|f| *f == w.flow()).unwrap();
                got[i] += 1;
                p.activate(w.flow(), now);
            }
        }
        got
    }

    #[test]
    fn weighted_classes_share_in_proportion() {
        let mut p = Pacer::default().with_classes(ClassPolicy::Weighted(vec![3, 1]));
        // Two flows of class 0, one of class 1, one beyond the last class (counts as 1).
        for (id, class) in [(0, 0), (1, 0), (2, 1), (3, 7)] {
            p.install(id, &classed(id, class));
        }
        let got = share(&mut p, &[0, 1, 2, 3], 800);
        assert_eq!(
            got,
            vec![300, 300, 100, 100],
            "3:1 between the classes, even within"
        );
        // A class with nothing ready leaves its share to the others.
        let mut q = Pacer::default().with_classes(ClassPolicy::Weighted(vec![3, 1]));
        q.install(0, &classed(0, 1));
        assert_eq!(share(&mut q, &[0], 50), vec![50]);
    }

    #[test]
    fn strict_classes_serve_the_first_ready_class() {
        let mut p = Pacer::default().with_classes(ClassPolicy::Strict(2));
        p.install(0, &classed(0, 1));
        p.install(1, &classed(1, 0));
        assert_eq!(share(&mut p, &[0, 1], 100), vec![0, 100]);
        // Class 1 goes once class 0 has nothing ready.
        let mut out = Vec::new();
        p.grant(Instant::from_micros(2), 8, &mut out);
        let flows: Vec<_> = out.iter().map(ProtoWork::flow).collect();
        assert_eq!(flows, vec![1, 0]);
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn a_paced_flow_keeps_its_rate_inside_a_class() {
        // Bursts of up to 4 make up for the wheel's ticks (about a microsecond) by which a
        // grant may come late.
        let mut p = Pacer::new(4).with_classes(ClassPolicy::Strict(2));
        p.install(0, &classed(0, 0));
        p.install(1, &classed(1, 1));
        // Class 0 paced at 1000 B per 10 us; class 1 unpaced takes the gaps.
        p.set_rate(0, Some(100_000_000), Instant::ZERO);
        let (mut paced, mut other) = (0, 0);
        let mut out = Vec::new();
        for us in 1..=1000u64 {
            let now = Instant::from_micros(us);
            p.activate(0, now);
            p.activate(1, now);
            out.clear();
            p.grant(now, 1, &mut out);
            for w in &out {
                if w.flow() == 0 {
                    paced += 1;
                } else {
                    other += 1;
                }
            }
        }
        assert!(
            (99..=101).contains(&paced),
            "{paced} segments of class 0 in 1 ms"
        );
        assert_eq!(
            paced + other,
            1000,
            "the other class fills every other slot"
        );
    }

    #[test]
    fn a_faster_rate_takes_effect_at_once() {
        let mut p = Pacer::new(1);
        p.install(0, &identity(0, 1000));
        // 1000 B per 8 ms.
        p.set_rate(0, Some(125_000), Instant::ZERO);
        let mut out = Vec::new();
        p.activate(0, Instant::from_micros(1));
        p.grant(Instant::from_micros(1), 8, &mut out);
        assert_eq!(out.len(), 1);
        p.activate(0, Instant::from_micros(2));
        let us = |t: Option<Instant>| t.map(|t| t.micros());
        // (The wheel's ticks are 1.024 us: deadlines round up by a microsecond or two.)
        assert!(matches!(us(p.next_deadline()), Some(8001..=8003)));
        // 1000 B per 8 us from 100 us on: the next segment may go at 108 us, not 8 ms.
        p.set_rate(0, Some(125_000_000), Instant::from_micros(100));
        let due = us(p.next_deadline());
        assert!(matches!(due, Some(108..=110)), "{due:?}");
        out.clear();
        p.grant(Instant::from_micros(due.unwrap()), 8, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(p.pending(), 0, "the old slot is forgotten");
        // Unpaced: at once.
        p.activate(0, Instant::from_micros(109));
        p.set_rate(0, None, Instant::from_micros(110));
        out.clear();
        p.grant(Instant::from_micros(110), 8, &mut out);
        assert_eq!(out.len(), 1);
        // The stale wheel entries fire harmlessly.
        out.clear();
        p.grant(Instant::from_micros(9000), 8, &mut out);
        assert!(out.is_empty());
        assert_eq!(p.pending(), 0);
    }
}
