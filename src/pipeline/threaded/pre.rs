//! The preprocess replicas: ingress (the `rx_frame` stages and preprocess) on their share of
//! the received bursts, per-group streams with advances to the flow groups.

use super::ingress::unpack;
use super::*;

pub(super) struct PreTask {
    pub(super) ingress: path::Ingress,
    pub(super) groups_of: Vec<u16>,
    pub(super) ctl: Receiver<PreCtl>,
    pub(super) input: Consumer<PreIn>,
    pub(super) to_group: Vec<Producer<Ingress<RxWork>>>,
    pub(super) pending: Vec<Vec<Ingress<RxWork>>>,
    /// Preprocess's punts and the user stages' diverted frames.
    pub(super) to_io: ToIo,
    pub(super) batch: Vec<PreIn>,
    pub(super) frames: Vec<Frame>,
    pub(super) seqs: Vec<u64>,
    pub(super) diverted: Diverted,
    pub(super) runs: Runs,
    pub(super) meta: Meta,
}

/// Where a preprocess replica's runs begin and end, per flow group.
#[derive(Default)]
pub(super) struct Runs {
    /// The current run; every number the replica handles from the run's start on, up to
    /// `last`, is its own.
    run: u64,
    last: u64,
    /// The run each group's stream is in.
    of_group: Vec<u64>,
}

impl Runs {
    /// A new burst: every group's first item starts a run (the burst's `Advance` ended
    /// the last).
    pub(super) fn start_burst(&mut self, groups: usize) {
        self.of_group.resize(groups, 0);
        self.run += 1;
        self.last = u64::MAX;
    }

    /// An item numbered `seq` for group `g`: whether its stream needs a `Run` tag first.
    pub(super) fn item(&mut self, g: usize, seq: u64) -> bool {
        if self.last == u64::MAX || seq > self.last.saturating_add(1) {
            self.run += 1;
        }
        self.last = seq;
        std::mem::replace(&mut self.of_group[g], self.run) != self.run
    }

    /// A frame numbered `seq` went to the control plane: the run ends at it.
    pub(super) fn punt(&mut self, seq: u64) {
        self.run += 1;
        self.last = seq;
    }
}

impl PreTask {
    fn flush(&mut self) -> bool {
        let mut all = true;
        for (g, p) in self.to_group.iter_mut().enumerate() {
            if !self.pending[g].is_empty() {
                p.push_burst(&mut self.pending[g]);
                all &= self.pending[g].is_empty();
            }
        }
        all & self.to_io.flush()
    }
}

impl Task for PreTask {
    fn run(&mut self, now: Instant) -> bool {
        self.meta.polls += 1;
        // An empty check first: cheaper than a receive on an idle pass.
        while !self.ctl.is_empty() {
            let Ok(m) = self.ctl.try_recv() else { break };
            match m {
                PreCtl::Install(t, id, g, incarnation) => {
                    self.ingress.pre.install(t, id, incarnation);
                    if self.groups_of.len() <= id as usize {
                        self.groups_of.resize(id as usize + 1, 0);
                    }
                    self.groups_of[id as usize] = g;
                }
                PreCtl::Remove(t) => self.ingress.pre.remove(&t),
            }
        }
        // Backpressure: nothing new until the last outputs are out.
        if !self.flush() {
            self.meta.busy += 1;
            return true;
        }
        self.batch.clear();
        if self.input.pop_burst(&mut self.batch, BURST) == 0 {
            return false;
        }
        self.meta.busy += 1;
        let last = unpack(&mut self.batch, &mut self.frames, &mut self.seqs);
        let (pending, groups_of) = (&mut self.pending, &self.groups_of);
        let punts = &mut self.to_io.punts.pending;
        // Numbers are tagged per run: a group's stream gets a `Run` tag before its first
        // item of each run. A run ends where the numbers skip (another replica may hold the
        // ones between) and after a punt (a RST the control plane hands back waits in the
        // group for everything numbered below it, and nothing above).
        let runs = &mut self.runs;
        runs.start_burst(pending.len());
        self.ingress.run(
            now,
            &mut self.frames,
            &mut self.seqs,
            &mut self.diverted,
            |seq, out| match out {
                PreOut::Rx(w) => {
                    let g = groups_of.get(w.flow as usize).copied().unwrap_or(0) as usize;
                    let g = g % pending.len();
                    if runs.item(g, seq) {
                        pending[g].push(Ingress::Run(seq));
                    }
                    pending[g].push(Ingress::Item(w));
                }
                PreOut::Punt(p) => {
                    runs.punt(seq);
                    punts.push((seq, p));
                }
            },
        );
        self.to_io.take(&mut self.diverted);
        for q in self.pending.iter_mut() {
            q.push(Ingress::Advance(last));
        }
        self.flush();
        true
    }

    fn report(&mut self) {
        let pre = &self.ingress.pre;
        self.meta.publish(
            vec![(pre.name(), pre.stats().clone())],
            vec![("input", self.input.len(), self.input.capacity())],
            Vec::new(),
            self.ingress.hooks.reports(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::Runs;

    /// A group's stream gets a `Run` tag at its first item of a burst, where the replica's
    /// numbers skip, and after a punt; not for the next number of the replica's own, even
    /// where it went to another group.
    #[test]
    fn runs_end_where_numbers_skip_and_after_a_punt() {
        let mut r = Runs::default();
        r.start_burst(2);
        let mut tags = Vec::new();
        for (g, seq) in [(0, 5), (0, 6), (1, 7), (0, 8), (0, 10), (1, 11)] {
            tags.push((seq, r.item(g, seq)));
        }
        r.punt(12);
        tags.push((13, r.item(0, 13)));
        tags.push((14, r.item(0, 14)));
        r.start_burst(2);
        tags.push((15, r.item(0, 15)));
        let want = [
            (5, true),
            (6, false),
            (7, true),
            (8, false),
            (10, true),
            (11, true),
            (13, true),
            (14, false),
            (15, true),
        ];
        assert_eq!(tags, want);
    }
}
