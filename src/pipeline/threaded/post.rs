//! The postprocess replicas: egress (headers, checksums, the `tx_frame` stages), frames
//! and tombstones tagged for the egress reorder.

use super::*;

pub(super) struct PostTask {
    pub(super) egress: path::Egress,
    pub(super) ctl: Receiver<PostCtl>,
    pub(super) from_place: Vec<Consumer<Egress>>,
    /// Output rings per (place replica, flow group): frames of one group that came through
    /// one place replica stay in increasing order, which the egress reorder relies on.
    pub(super) to_io: Vec<Vec<Producer<Tagged<Frame>>>>,
    pub(super) pending: Vec<Vec<Vec<Tagged<Frame>>>>,
    pub(super) tags: Vec<(u16, u64)>,
    pub(super) items: Vec<ProtoResult>,
    pub(super) batch: Vec<Egress>,
    pub(super) meta: Meta,
}

impl Task for PostTask {
    fn run(&mut self, now: Instant) -> bool {
        self.meta.polls += 1;
        let mut busy = false;
        let mut stuck = false;
        for (outs, pend) in self.to_io.iter_mut().zip(self.pending.iter_mut()) {
            for (p, q) in outs.iter_mut().zip(pend.iter_mut()) {
                if !q.is_empty() {
                    p.push_burst(q);
                    stuck |= !q.is_empty();
                }
            }
        }
        if stuck {
            self.meta.busy += 1;
            return true;
        }
        for i in 0..self.from_place.len() {
            self.batch.clear();
            if self.from_place[i].pop_burst(&mut self.batch, BURST) == 0 {
                continue;
            }
            busy = true;
            // Taken inputs first, control messages second: every flow named is installed.
            // An empty check first: cheaper than a receive on an idle pass.
            while !self.ctl.is_empty() {
                let Ok(m) = self.ctl.try_recv() else { break };
                match m {
                    PostCtl::Install(id, v) => self.egress.post.install(id, v),
                    PostCtl::Remove(id) => self.egress.post.remove(id),
                }
            }
            self.tags.clear();
            self.items.clear();
            for (g, s, r) in self.batch.drain(..) {
                self.tags.push((g, s));
                self.items.push(r);
            }
            let pend = &mut self.pending[i];
            let tags = &self.tags;
            // A result that sends nothing (or whose frame a user stage took) becomes a
            // tombstone: the egress order stays whole.
            self.egress.run(now, &mut self.items, |k, f| {
                let (g, s) = tags[k];
                let g = g as usize % pend.len();
                pend[g].push(match f {
                    Some(f) => Tagged::item(s, f),
                    None => Tagged::tombstone(s),
                });
            });
            for (p, q) in self.to_io[i].iter_mut().zip(pend.iter_mut()) {
                if !q.is_empty() {
                    p.push_burst(q);
                }
            }
        }
        if busy {
            self.meta.busy += 1;
        }
        busy
    }

    fn report(&mut self) {
        self.meta.publish(
            self.egress.stats().into(),
            self.from_place
                .iter()
                .map(|c| ("from_place", c.len(), c.capacity()))
                .collect(),
            Vec::new(),
            self.egress.hooks.reports(),
        );
    }
}
