//! Scheduler: which flows may send next.
//!
//! Flows become active when the protocol stage reports that they have something to send
//! (`SCHED`). Each grant is one [`ProtoWork::Tx`], i.e. at most one segment; a flow that still
//! has data after its grant is re-activated by the protocol result. The runtimes call a
//! [`FlowScheduler`] policy (statically: the pipeline is generic over it); [`RoundRobin`] is
//! the default. Grants take `now`, so a pacing scheduler fits the same interface.
//!
//! ```
//! use flextoe::flow::{FlowId, FlowIdentity};
//! use flextoe::stages::scheduler::{FlowScheduler, RoundRobin};
//! use flextoe::stages::ProtoWork;
//! use flextoe::stats::StageStats;
//! use flextoe::time::Instant;
//!
//! /// Serves flows to port 80 before all others.
//! #[derive(Clone, Default)]
//! struct WebFirst {
//!     web: RoundRobin,
//!     rest: RoundRobin,
//!     is_web: Vec<bool>,
//! }
//!
//! impl FlowScheduler for WebFirst {
//!     fn name(&self) -> &'static str { "web-first" }
//!     fn install(&mut self, id: FlowId, f: &FlowIdentity) {
//!         let i = id as usize;
//!         if self.is_web.len() <= i { self.is_web.resize(i + 1, false); }
//!         self.is_web[i] = f.tuple.local_port == 80;
//!     }
//!     fn activate(&mut self, id: FlowId, now: Instant) {
//!         if self.is_web.get(id as usize).copied().unwrap_or(false) {
//!             self.web.activate(id, now)
//!         } else {
//!             self.rest.activate(id, now)
//!         }
//!     }
//!     fn remove(&mut self, id: FlowId) { self.web.remove(id); self.rest.remove(id); }
//!     fn pending(&self) -> usize { self.web.pending() + self.rest.pending() }
//!     fn grant(&mut self, now: Instant, max: usize, out: &mut Vec<ProtoWork>) {
//!         if self.web.pending() > 0 {
//!             self.web.grant(now, max, out);
//!         } else {
//!             self.rest.grant(now, max, out);
//!         }
//!     }
//!     fn stats(&self) -> StageStats { self.web.stats().clone() }
//! }
//! ```

use std::collections::VecDeque;

use super::{ProtoWork, Stage};
use crate::flow::{FlowId, FlowIdentity};
use crate::stats::StageStats;
use crate::time::Instant;

/// A flow-scheduling policy: decides which active flow sends its next segment.
///
/// One instance per flow group (the threaded runtime clones it per group); only that
/// group's thread calls it.
pub trait FlowScheduler: Clone + Send + 'static {
    /// Name in statistics.
    fn name(&self) -> &'static str;
    /// A flow was set up (its identity: addresses, ports, MSS).
    fn install(&mut self, _id: FlowId, _identity: &FlowIdentity) {}
    /// The flow's congestion control set a rate (bytes per second), or cleared it (`None`).
    /// Called whenever it changes, before the flow's next activation; a pacing scheduler
    /// spaces the flow's grants by it. The default ignores it.
    fn set_rate(&mut self, _id: FlowId, _bytes_per_sec: Option<u64>, _now: Instant) {}
    /// The flow has something to send.
    fn activate(&mut self, id: FlowId, now: Instant);

    /// Make flow `id` active with `segments` segments ready to go (what its window and queued
    /// data allow right now, at least 1); a later call for an active flow replaces the count.
    /// A scheduler may then grant it several segments in one burst. The default ignores
    /// the count: one grant per activation.
    fn activate_with(&mut self, id: FlowId, segments: u32, now: Instant) {
        let _ = segments;
        self.activate(id, now);
    }
    /// Forget a flow.
    fn remove(&mut self, id: FlowId);
    /// Flows waiting for a grant.
    fn pending(&self) -> usize;
    /// Whether a flow whose application update made data ready may send its first segment
    /// at once, in that update's own result, when no flow waits for a grant (`pending` is
    /// 0) and the congestion control does not pace: true only for a scheduler that would
    /// grant it at once anyway (work-conserving, unpaced, nothing to order it behind). The
    /// rest of what the flow has ready is activated as usual. The default is `false`: every
    /// segment waits for a grant.
    fn direct(&self) -> bool {
        false
    }
    /// Emit up to `max` grants ([`ProtoWork::Tx`]) into `out`.
    fn grant(&mut self, now: Instant, max: usize, out: &mut Vec<ProtoWork>);
    /// When the next grant becomes due although none is due now (pacing); `None` when
    /// grants are due whenever flows are pending.
    fn next_deadline(&self) -> Option<Instant> {
        None
    }
    /// Counters.
    fn stats(&self) -> StageStats;
}

/// The default scheduler: active flows served round-robin, one segment each, unpaced.
#[derive(Clone, Default)]
pub struct RoundRobin {
    queue: VecDeque<FlowId>,
    active: Vec<bool>,
    /// Segments each active flow has ready (see [`FlowScheduler::activate_with`]).
    credit: Vec<u32>,
    stats: StageStats,
}

/// Most segments [`RoundRobin`] grants one flow before it serves the next.
pub const ROUND_ROBIN_QUANTUM: u32 = 16;

impl RoundRobin {
    /// An empty scheduler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters.
    pub fn stats(&self) -> &StageStats {
        &self.stats
    }
}

impl FlowScheduler for RoundRobin {
    fn name(&self) -> &'static str {
        "scheduler"
    }

    /// With no flow waiting, round-robin grants the next active flow at once.
    fn direct(&self) -> bool {
        true
    }

    fn activate(&mut self, id: FlowId, now: Instant) {
        self.activate_with(id, 1, now);
    }

    fn activate_with(&mut self, id: FlowId, segments: u32, _now: Instant) {
        let i = id as usize;
        if self.active.len() <= i {
            self.active.resize(i + 1, false);
            self.credit.resize(i + 1, 0);
        }
        self.credit[i] = segments.max(1);
        if !self.active[i] {
            self.active[i] = true;
            self.stats.items_in += 1;
            self.queue.push_back(id);
        }
    }

    fn remove(&mut self, id: FlowId) {
        if let Some(a) = self.active.get_mut(id as usize) {
            if *a {
                *a = false;
                self.credit[id as usize] = 0;
                self.queue.retain(|f| *f != id);
            }
        }
    }

    fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Up to `max` segments: each flow in turn gets what it has ready, at most
    /// [`ROUND_ROBIN_QUANTUM`] per turn; a flow with more goes to the back of the queue.
    fn grant(&mut self, _now: Instant, max: usize, out: &mut Vec<ProtoWork>) {
        let mut n = 0;
        while n < max {
            let Some(flow) = self.queue.pop_front() else {
                break;
            };
            let i = flow as usize;
            let k = self.credit[i]
                .min(ROUND_ROBIN_QUANTUM)
                .min((max - n) as u32);
            for _ in 0..k {
                out.push(ProtoWork::Tx { flow });
            }
            n += k as usize;
            self.credit[i] -= k;
            if self.credit[i] > 0 {
                self.queue.push_back(flow);
            } else {
                self.active[i] = false;
            }
        }
        self.stats.bursts += u64::from(n > 0);
        self.stats.items_out += n as u64;
    }

    fn stats(&self) -> StageStats {
        self.stats.clone()
    }
}

impl Stage for RoundRobin {
    type In = FlowId;
    type Out = ProtoWork;

    fn name(&self) -> &'static str {
        "scheduler"
    }

    /// Activate the flows in `input`, then grant up to one burst.
    fn process(&mut self, now: Instant, input: &mut Vec<FlowId>, output: &mut Vec<ProtoWork>) {
        for f in input.drain(..) {
            self.activate(f, now);
        }
        self.grant(now, super::BURST, output);
    }

    fn stats(&self) -> &StageStats {
        &self.stats
    }
}
