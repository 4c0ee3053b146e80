//! The postprocess replicas: egress (headers, checksums, the `tx_frame` stages), frames
//! and gaps (runs of tombstones) numbered for the egress reorder.

use super::*;

// An entry of the ring to the I/O task is as small as a frame and its number.
const _: () = assert!(std::mem::size_of::<Sequenced<Frame>>() == 16);

pub(super) struct PostTask {
    pub(super) egress: path::Egress,
    pub(super) ctl: Receiver<PostCtl>,
    pub(super) from_place: Vec<BurstConsumer<ResultBurst>>,
    /// Output rings per (place replica, flow group): frames of one group that came through
    /// one place replica stay in increasing order, which the egress reorder relies on.
    pub(super) to_io: Vec<Vec<Producer<Sequenced<Frame>>>>,
    pub(super) pending: Vec<Vec<Vec<Sequenced<Frame>>>>,
    /// The burst being sent.
    pub(super) input: ResultBurst,
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
            // The last burst's results are done (their frames went out or were freed).
            self.input.clear();
            if !self.from_place[i].pop(&mut self.input) {
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
            let ResultBurst {
                group,
                seqs,
                results,
            } = &mut self.input;
            let g = *group as usize % pend.len();
            // A result that sends nothing (or whose frame a user stage took) becomes a
            // tombstone, and consecutive tombstones one gap: the egress order stays whole.
            self.egress.run(now, results, |k, f| {
                let s = seqs[k];
                match f {
                    Some(f) => pend[g].push(Sequenced::item(s, f)),
                    None => Sequenced::push_tombstone(&mut pend[g], s),
                }
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
    use std::num::NonZeroU32;

    /// One tombstone.
    fn gap1(first: u64) -> Sequenced<Frame> {
        Sequenced::gap(first, NonZeroU32::MIN)
    }

    /// A replica whose output for one place replica is full still takes the other place
    /// replica's results: the egress reorder may be waiting for exactly those.
    #[test]
    fn a_full_output_holds_back_only_its_own_input() {
        let arena = Arc::new(FrameArena::new(64).unwrap());
        let (_in0, from0) = burst_spsc::<ResultBurst>(8, 4);
        let (mut in1, from1) = burst_spsc::<ResultBurst>(8, 4);
        let (out0, mut io0) = spsc::<Sequenced<Frame>>(2);
        let (out1, mut io1) = spsc::<Sequenced<Frame>>(8);
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
            pending: vec![vec![(10..13).map(gap1).collect()], vec![Vec::new()]],
            input: ResultBurst::default(),
            meta: Meta::new(TaskRef::Postprocess(0), 0, &mut reports),
        };
        // Input 1 carries results 5, 6, 7 and 9 of group 0 (of a flow this replica does not
        // know: they become tombstones, which keep the egress order whole; the consecutive
        // ones one gap).
        let mut burst = ResultBurst::default();
        for s in [5u64, 6, 7, 9] {
            burst.push(s, ProtoResult::default());
        }
        assert!(in1.push(&mut burst));
        assert!(task.run(Instant::ZERO));
        let mut got = Vec::new();
        io1.pop_burst(&mut got, 8);
        assert_eq!(
            got,
            vec![Sequenced::gap(5, NonZeroU32::new(3).unwrap()), gap1(9)],
            "input 1 was held back by input 0's full output"
        );
        // Input 0's output drains once the I/O task takes from it.
        got.clear();
        io0.pop_burst(&mut got, 8);
        assert_eq!(got.len(), 2);
        task.run(Instant::ZERO);
        got.clear();
        io0.pop_burst(&mut got, 8);
        assert_eq!(got, vec![gap1(12)]);
    }
}
