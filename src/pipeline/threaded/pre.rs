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
    pub(super) meta: Meta,
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
                PreCtl::Install(t, id, g) => {
                    self.ingress.pre.install(t, id);
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
        self.ingress.run(
            now,
            &mut self.frames,
            &mut self.seqs,
            &mut self.diverted,
            |seq, out| match out {
                PreOut::Rx(w) => {
                    let g = groups_of.get(w.flow as usize).copied().unwrap_or(0) as usize;
                    let n = pending.len();
                    pending[g % n].push(Ingress::Item(seq, w));
                }
                PreOut::Punt(p) => punts.push((seq, p)),
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
