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
    pub(super) meta: Meta,
}

impl Task for PostTask {
    fn run(&mut self, now: Instant) -> bool {
        self.meta.polls += 1;
        let mut busy = false;
        for i in 0..self.from_place.len() {
            // An input whose outputs are full waits; the others go on. The egress reorder
            // may be waiting for a frame that only another input of this replica carries
            // (a slower place replica's), so stopping every input here could deadlock.
            let mut stuck = false;
            for (p, q) in self.to_io[i].iter_mut().zip(self.pending[i].iter_mut()) {
                if !q.is_empty() {
                    p.push_burst(q);
                    stuck |= !q.is_empty();
                }
            }
            if stuck {
                busy = true;
                continue;
            }
            self.tags.clear();
            self.items.clear();
            let (tags, items) = (&mut self.tags, &mut self.items);
            if self.from_place[i].pop_each(BURST, |(g, s, r)| {
                tags.push((g, s));
                items.push(r);
            }) == 0
            {
                continue;
            }
            busy = true;
            // Taken inputs first, control messages second: every flow named is installed.
            // An empty check first: cheaper than a receive on an idle pass.
            while !self.ctl.is_empty() {
                let Ok(PostCtl::Install(id, v)) = self.ctl.try_recv() else {
                    break;
                };
                self.egress.post.install(id, v);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::protocol::AckPolicy;

    /// A replica whose output for one place replica is full still takes the other place
    /// replica's results: the egress reorder may be waiting for exactly those.
    #[test]
    fn a_full_output_holds_back_only_its_own_input() {
        let arena = Arc::new(FrameArena::new(64).unwrap());
        let (_in0, from0) = spsc::<Egress>(8);
        let (mut in1, from1) = spsc::<Egress>(8);
        let (out0, mut io0) = spsc::<Tagged<Frame>>(2);
        let (out1, mut io1) = spsc::<Tagged<Frame>>(8);
        let mut reports = Vec::new();
        let (_ctl_tx, ctl) = crossbeam_channel::unbounded();
        let mut task = PostTask {
            egress: path::Egress::new(
                arena.clone(),
                Postprocess::new(arena.clone(), AckPolicy::PerBurst),
                Chain::default(),
                Vec::new(),
                0,
                false,
            ),
            ctl,
            from_place: vec![from0, from1],
            to_io: vec![vec![out0], vec![out1]],
            // Input 0's output ring (capacity 2) cannot take these three yet.
            pending: vec![
                vec![(10..13).map(Tagged::tombstone).collect()],
                vec![Vec::new()],
            ],
            tags: Vec::new(),
            items: Vec::new(),
            meta: Meta::new(TaskRef::Postprocess(0), 0, &mut reports),
        };
        // Input 1 carries result number 5 of group 0 (of a flow this replica does not know:
        // it becomes a tombstone, which keeps the egress order whole).
        let mut burst = vec![(0u16, 5u64, ProtoResult::default())];
        assert_eq!(in1.push_burst(&mut burst), 1);
        assert!(task.run(Instant::ZERO));
        let mut got = Vec::new();
        io1.pop_burst(&mut got, 8);
        assert_eq!(
            got.len(),
            1,
            "input 1 was held back by input 0's full output"
        );
        assert_eq!((got[0].seq, got[0].item.is_none()), (5, true));
        // Input 0's output drains once the I/O task takes from it.
        got.clear();
        io0.pop_burst(&mut got, 8);
        assert_eq!(got.len(), 2);
        task.run(Instant::ZERO);
        got.clear();
        io0.pop_burst(&mut got, 8);
        assert_eq!(got.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![12]);
    }
}
