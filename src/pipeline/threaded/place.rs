//! The place replicas: delivery (payload between frames and rings, notifications) for the
//! connections each owns.

use super::*;

pub(super) struct PlaceTask {
    pub(super) delivery: path::Delivery,
    pub(super) ctl: Receiver<PlaceCtl>,
    pub(super) from_group: Vec<Consumer<(u64, ProtoResult)>>,
    pub(super) to_post: Vec<Producer<Egress>>,
    pub(super) next_post: usize,
    pub(super) pending: Vec<Egress>,
    pub(super) events: Producer<ControlEvent>,
    pub(super) pending_events: Vec<ControlEvent>,
    pub(super) batch: Vec<(u64, ProtoResult)>,
    pub(super) results: Vec<ProtoResult>,
    pub(super) seqs: Vec<u64>,
    pub(super) meta: Meta,
}

impl PlaceTask {
    fn control(&mut self) {
        // An empty check first: cheaper than a receive on an idle pass.
        while !self.ctl.is_empty() {
            let Ok(m) = self.ctl.try_recv() else { break };
            match m {
                PlaceCtl::Install {
                    id,
                    rings,
                    conn,
                    incarnation,
                } => {
                    self.delivery.place.install(id, rings, incarnation);
                    self.delivery.notify.install(id, conn);
                }
                PlaceCtl::Remove(id) => {
                    self.delivery.place.remove(id);
                    self.delivery.notify.remove(id);
                }
            }
        }
    }

    fn flush(&mut self) -> bool {
        if !self.pending_events.is_empty() {
            self.events.push_burst(&mut self.pending_events);
        }
        let n = self.to_post.len();
        for k in 0..n {
            if self.pending.is_empty() {
                break;
            }
            let q = (self.next_post + k) % n;
            self.to_post[q].push_burst(&mut self.pending);
            if self.pending.is_empty() {
                self.next_post = (q + 1) % n;
            }
        }
        self.pending.is_empty() && self.pending_events.is_empty()
    }
}

impl Task for PlaceTask {
    fn run(&mut self, now: Instant) -> bool {
        self.meta.polls += 1;
        if !self.flush() {
            self.meta.busy += 1;
            return true;
        }
        let mut busy = false;
        for g in 0..self.from_group.len() {
            self.batch.clear();
            if self.from_group[g].pop_burst(&mut self.batch, BURST) == 0 {
                continue;
            }
            busy = true;
            // Taken inputs first, control messages second: every flow named is installed.
            self.control();
            self.seqs.clear();
            for (seq, r) in self.batch.drain(..) {
                self.seqs.push(seq);
                self.results.push(r);
            }
            self.delivery
                .run(now, &mut self.results, &mut self.pending_events);
            for (seq, r) in self.seqs.iter().copied().zip(self.results.drain(..)) {
                self.pending.push((g as u16, seq, r));
            }
            self.flush();
        }
        if busy {
            self.meta.busy += 1;
        }
        busy
    }

    fn report(&mut self) {
        self.meta.publish(
            self.delivery.stats().into(),
            self.from_group
                .iter()
                .map(|c| ("from_group", c.len(), c.capacity()))
                .collect(),
            Vec::new(),
            Vec::new(),
        );
    }
}
