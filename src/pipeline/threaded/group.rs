//! The flow groups: the ingress merge, then transport (the `rx_segment` stages, protocol,
//! the `results` stages, frame reservation, the scheduler) for the group's flows.

use super::*;

pub(super) struct GroupTask<C: CongestionControl, S: FlowScheduler> {
    pub(super) transport: path::Transport<C, S>,
    /// The place replica of each flow.
    pub(super) place_of: Vec<u16>,
    pub(super) views: Vec<Option<(RingObserver, RingObserver)>>,
    pub(super) ctl: Receiver<GroupCtl>,
    pub(super) from_pre: Vec<Consumer<Ingress<RxWork>>>,
    pub(super) merge: Merge<RxWork>,
    pub(super) from_io: Consumer<ProtoWork>,
    /// A peer's RSTs back from the control plane (of flows preprocess did not have yet),
    /// each with its arrival number: held until every segment that arrived before it has
    /// been released by the merge.
    pub(super) held: VecDeque<(u64, ProtoWork)>,
    pub(super) to_place: Vec<BurstProducer<ResultBurst>>,
    /// The burst being filled for each place replica (handed over at the end of a pass).
    pub(super) pending_out: Vec<ResultBurst>,
    pub(super) egress_seq: u64,
    pub(super) work: Vec<ProtoWork>,
    pub(super) results: Vec<ProtoResult>,
    pub(super) segs: Vec<RxWork>,
    pub(super) diverted: Diverted,
    pub(super) to_io: ToIo,
    pub(super) meta: Meta,
}

impl<C: CongestionControl, S: FlowScheduler> GroupTask<C, S> {
    fn flush(&mut self) -> bool {
        let mut all = true;
        for (p, q) in self.to_place.iter_mut().zip(self.pending_out.iter_mut()) {
            all &= p.push(q);
        }
        all
    }

    fn control(&mut self) {
        // An empty check first: cheaper than a receive on an idle pass.
        while !self.ctl.is_empty() {
            let Ok(m) = self.ctl.try_recv() else { break };
            match m {
                GroupCtl::Install {
                    id,
                    state,
                    views,
                    identity,
                    place,
                } => {
                    let i = id as usize;
                    self.transport.install(id, *state, &identity);
                    if self.views.len() <= i {
                        self.views.resize(i + 1, None);
                        self.place_of.resize(i + 1, 0);
                    }
                    self.views[i] = Some(views);
                    self.place_of[i] = place;
                }
                GroupCtl::Remove(id) => {
                    self.transport.remove(id);
                    if let Some(v) = self.views.get_mut(id as usize) {
                        *v = None;
                    }
                }
            }
        }
    }

    fn run_work(&mut self, now: Instant) {
        if self.work.is_empty() {
            return;
        }
        // Inputs were taken before the control messages were read, so every flow they
        // name is installed by now.
        self.control();
        for w in self.work.iter_mut() {
            if let ProtoWork::App {
                flow,
                positions: positions @ None,
                ..
            } = w
            {
                if let Some(Some((tx, rx))) = self.views.get(*flow as usize) {
                    *positions = Some((tx.head(), rx.tail()));
                }
            }
        }
        self.transport.run(now, &mut self.work, &mut self.results);
        let replicas = self.to_place.len();
        if replicas == 1 {
            // The first run of a pass leaves its results where the protocol stage wrote them
            // (the vector becomes the burst); a second run's are appended. The burst is
            // handed over whole at the end of the pass (`flush`).
            let out = &mut self.pending_out[0];
            let n = self.results.len() as u64;
            out.seqs.extend(self.egress_seq..self.egress_seq + n);
            self.egress_seq += n;
            if out.results.is_empty() {
                std::mem::swap(&mut out.results, &mut self.results);
            } else {
                out.results.append(&mut self.results);
            }
            return;
        }
        for r in self.results.drain(..) {
            let q = self.place_of.get(r.flow as usize).copied().unwrap_or(0) as usize % replicas;
            self.pending_out[q].push(self.egress_seq, r);
            self.egress_seq += 1;
        }
    }
}

impl<C: CongestionControl, S: FlowScheduler> Task for GroupTask<C, S> {
    fn run(&mut self, now: Instant) -> bool {
        self.meta.polls += 1;
        if !(self.flush() & self.to_io.flush()) {
            self.meta.busy += 1;
            return true;
        }
        let mut busy = false;
        // Work from the I/O task first (application updates, timers, control-plane requests,
        // re-injected segments): a segment re-injected after its flow's install arrived
        // before anything the replicas hand over for that flow now.
        while self.work.len() + self.segs.len() < BURST && self.held.len() < BURST {
            match self.from_io.pop() {
                Some(ProtoWork::Rx(w)) => self.segs.push(w),
                // (0: not numbered, nothing to wait for.)
                Some(w @ ProtoWork::Rst { ingress, .. }) if ingress > 0 => {
                    hold(&mut self.held, ingress, w)
                }
                Some(w) => self.work.push(w),
                None => break,
            }
        }
        // Ingress: merge the replicas' streams back into arrival order, a run at a time,
        // up to the earliest held RST.
        let (from_pre, segs) = (&mut self.from_pre, &mut self.segs);
        let limit = self.held.front().map_or(u64::MAX, |(s, _)| *s);
        self.merge
            .release_below(|i| from_pre[i].pop(), BURST, limit, |w| segs.push(w));
        // Input consumed counts as work even if user stages divert all of it.
        busy |= !self.segs.is_empty();
        self.transport
            .take_segments(now, &mut self.segs, &mut self.work, &mut self.diverted);
        self.to_io.take(&mut self.diverted);
        // A held RST goes once nothing that arrived before it can still come out of the
        // merge: after the segments released above.
        let floor = self.merge.floor();
        while self.held.front().is_some_and(|(s, _)| *s <= floor) {
            if let Some((_, w)) = self.held.pop_front() {
                self.work.push(w);
            }
        }
        if !self.work.is_empty() {
            busy = true;
            self.run_work(now);
        }
        if self.transport.sched.pending() > 0
            && self.transport.grant(now, BURST, &mut self.work) > 0
        {
            busy = true;
            self.run_work(now);
        }
        self.flush();
        self.to_io.flush();
        if busy {
            self.meta.busy += 1;
        }
        busy
    }

    fn report(&mut self) {
        let mut rings = vec![("from_io", self.from_io.len(), self.from_io.capacity())];
        for c in &self.from_pre {
            rings.push(("from_pre", c.len(), c.capacity()));
        }
        let mut hooks = self.transport.seg_hooks.reports();
        hooks.extend(self.transport.result_hooks.reports());
        self.meta.publish(
            self.transport.stats().into(),
            rings,
            vec![self.merge.stats()],
            hooks,
        );
    }
}

/// Holds `w`, numbered `n`, in `held` in arrival-number order. RSTs come back from the
/// control plane in the order the I/O task drained the preprocess replicas' punt rings (one
/// replica after another), not in arrival order; the merge limit and the release loop read
/// the front, so the front must be the earliest.
fn hold<T>(held: &mut VecDeque<(u64, T)>, n: u64, w: T) {
    let at = held.partition_point(|(s, _)| *s <= n);
    held.insert(at, (n, w));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_items_are_kept_in_arrival_order_whatever_order_they_come_back_in() {
        let mut held = VecDeque::new();
        for (n, w) in [(140, 'a'), (100, 'b'), (180, 'c'), (120, 'd'), (100, 'e')] {
            hold(&mut held, n, w);
        }
        let got: Vec<_> = held.into_iter().collect();
        assert_eq!(
            got,
            [(100, 'b'), (100, 'e'), (120, 'd'), (140, 'a'), (180, 'c')]
        );
    }
}
