//! The preprocess replicas: ingress (the `rx_frame` stages and preprocess) on their share of
//! the received bursts, per-group streams with advances to the flow groups.

use super::ingress::unpack;
use super::*;
use crate::stats::{DropCounters, DropReason};

pub(super) struct PreTask {
    pub(super) ingress: path::Ingress,
    pub(super) groups_of: Vec<u16>,
    pub(super) ctl: Receiver<PreCtl>,
    pub(super) input: Consumer<PreIn>,
    pub(super) to_group: Vec<Producer<Ingress<RxWork>>>,
    pub(super) pending: Vec<Vec<Ingress<RxWork>>>,
    /// Preprocess's punts and the user stages' diverted frames.
    pub(super) to_io: ToIo,
    /// Punts dropped because the ring to the control plane was full.
    pub(super) dropped: DropCounters,
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
    /// Push what is pending; whether everything went. Punts that do not fit the ring to the
    /// control plane are dropped and counted (`QueueFull`), not kept: the control plane is
    /// behind (a SYN flood, say), and holding them would stop this replica, and so the
    /// established connections' segments behind them, until it caught up. A dropped punt is
    /// a lost frame the peer sends again; no flow group waits for its number.
    fn flush(&mut self) -> bool {
        let mut all = true;
        for (g, p) in self.to_group.iter_mut().enumerate() {
            if !self.pending[g].is_empty() {
                p.push_burst(&mut self.pending[g]);
                all &= self.pending[g].is_empty();
            }
        }
        let punts = &mut self.to_io.punts;
        if !punts.flush() {
            for (_, p) in punts.pending.drain(..) {
                self.dropped.add(DropReason::QueueFull);
                self.ingress.arena.free(p.frame);
            }
        }
        all & self.to_io.tx.flush()
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
        let mut stats = pre.stats().clone();
        stats.drops.merge(&self.dropped);
        self.meta.publish(
            vec![(pre.name(), stats)],
            vec![("input", self.input.len(), self.input.capacity())],
            Vec::new(),
            self.ingress.hooks.reports(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, MacAddr};
    use std::net::Ipv4Addr;

    /// A SYN to this engine from port `port` (no flow: preprocess punts it).
    fn syn(arena: &FrameArena, port: u16) -> Frame {
        let (peer, us) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1));
        let bytes = wire::test_syn(peer, port, us, 80);
        arena.alloc_copy(&bytes).expect("a frame")
    }

    /// A punt ring the control plane does not drain in time: what does not fit is dropped
    /// and counted, its frames freed, and the replica goes on taking its input (it once
    /// kept the punts and took nothing more until the ring had room: a SYN flood stopped
    /// the established connections' segments behind it).
    #[test]
    fn punts_past_a_full_ring_are_dropped_and_counted() {
        let arena = Arc::new(FrameArena::new(256).expect("arena"));
        let (mut feed, input) = spsc::<PreIn>(64);
        let (punt_p, mut punt_c) = spsc::<(u64, Punt)>(4);
        let (raw_p, _raw_c) = spsc::<Frame>(64);
        let (to_group, _from_pre) = spsc::<Ingress<RxWork>>(256);
        let (_ctl_tx, ctl) = crossbeam_channel::unbounded();
        let mut reports = Vec::new();
        let mut task = PreTask {
            ingress: path::Ingress {
                arena: arena.clone(),
                pre: Preprocess::new(
                    arena.clone(),
                    MacAddr([2, 0, 0, 0, 0, 1]),
                    Ipv4Addr::new(10, 0, 0, 1),
                ),
                hooks: Chain::default(),
                rings: Vec::new(),
                instance: 0,
            },
            groups_of: Vec::new(),
            ctl,
            input,
            to_group: vec![to_group],
            pending: vec![Vec::new()],
            to_io: ToIo {
                tx: Outbox::new(raw_p),
                punts: Outbox::new(punt_p),
            },
            dropped: DropCounters::default(),
            batch: Vec::new(),
            frames: Vec::new(),
            seqs: Vec::new(),
            diverted: Diverted::default(),
            runs: Runs::default(),
            meta: Meta::new(TaskRef::Preprocess(0), 0, &mut reports),
        };
        for i in 0..20u16 {
            assert!(feed
                .push(PreIn::Frame(u64::from(i) + 1, syn(&arena, 1000 + i)))
                .is_ok());
        }
        assert!(task.run(Instant::ZERO));
        let cap = punt_c.len();
        assert_eq!(cap, 4, "the ring is full");
        assert_eq!(task.dropped.get(DropReason::QueueFull), 20 - cap as u64);
        assert_eq!(arena.in_use(), cap, "every dropped punt's frame freed");
        // Nobody drained the ring: the next frames are still taken (and dropped).
        assert!(feed.push(PreIn::Frame(21, syn(&arena, 2000))).is_ok());
        assert!(task.run(Instant::ZERO));
        assert!(
            task.input.is_empty(),
            "the replica stopped at the full ring"
        );
        assert_eq!(task.dropped.get(DropReason::QueueFull), 21 - cap as u64);
        task.report();
        let published = reports[0].lock().expect("report").clone();
        let pre = &published.stages[0].1;
        assert_eq!(pre.drops.get(DropReason::QueueFull), 21 - cap as u64);
        while let Some((_, p)) = punt_c.pop() {
            arena.free(p.frame);
        }
        assert_eq!(arena.in_use(), 0);
    }

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
