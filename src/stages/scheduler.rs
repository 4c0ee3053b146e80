//! Scheduler: which flows may send next.
//!
//! Flows become active when the protocol stage reports that they have something to send
//! (`SCHED`). Each grant is one [`ProtoWork::Tx`], i.e. at most one segment; a flow that still
//! has data after its grant is re-activated by the protocol result, so flows are served
//! round-robin. This scheduler is unpaced; a rate-pacing scheduler slots in at the same place
//! (the grant is the unit a pacer releases over time).

use std::collections::VecDeque;

use super::{ProtoWork, Stage};
use crate::flow::FlowId;
use crate::stats::StageStats;
use crate::time::Instant;

/// The round-robin scheduler.
#[derive(Default)]
pub struct Scheduler {
    queue: VecDeque<FlowId>,
    active: Vec<bool>,
    stats: StageStats,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Mark a flow as having something to send.
    pub fn activate(&mut self, id: FlowId) {
        let i = id as usize;
        if self.active.len() <= i {
            self.active.resize(i + 1, false);
        }
        if !self.active[i] {
            self.active[i] = true;
            self.queue.push_back(id);
        }
    }

    /// Forget a flow.
    pub fn remove(&mut self, id: FlowId) {
        if let Some(a) = self.active.get_mut(id as usize) {
            if *a {
                *a = false;
                self.queue.retain(|f| *f != id);
            }
        }
    }

    /// Flows waiting for a grant.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Emit up to `max` grants.
    pub fn grant(&mut self, max: usize, out: &mut Vec<ProtoWork>) {
        let n = max.min(self.queue.len());
        for _ in 0..n {
            if let Some(flow) = self.queue.pop_front() {
                self.active[flow as usize] = false;
                out.push(ProtoWork::Tx { flow });
            }
        }
        self.stats.items_out += n as u64;
    }
}

impl Stage for Scheduler {
    type In = FlowId;
    type Out = ProtoWork;

    fn name(&self) -> &'static str {
        "scheduler"
    }

    /// Activate the flows in `input`, then grant up to one burst.
    fn process(&mut self, _now: Instant, input: &mut Vec<FlowId>, output: &mut Vec<ProtoWork>) {
        self.stats.bursts += 1;
        self.stats.items_in += input.len() as u64;
        for f in input.drain(..) {
            self.activate(f);
        }
        self.grant(super::BURST, output);
    }

    fn stats(&self) -> &StageStats {
        &self.stats
    }
}
