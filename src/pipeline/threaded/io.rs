//! The I/O task: the port, ingress numbering, the control plane, application requests and
//! doorbells, timers, and the egress reorder.

use super::*;

pub(super) struct IoTask<P: Port> {
    pub(super) arena: Arc<FrameArena>,
    pub(super) port: P,
    /// Receive queues of the port: with one per preprocess replica, replica `q` gets the
    /// bursts of queue `q`.
    pub(super) queues: usize,
    pub(super) control: Control,
    pub(super) host: Arc<HostShared>,
    pub(super) cout: ControlOutput,
    /// A private preprocess for frames the control plane re-injects.
    pub(super) reinject: Preprocess,
    pub(super) groups: usize,
    pub(super) group_of: Vec<u16>,
    pub(super) next_seq: u64,
    /// To the preprocess replicas, or to the `rx_frame` stages' own task.
    pub(super) ingress: ingress::Dealer,
    pub(super) pre_ctl: Vec<Sender<PreCtl>>,
    pub(super) group_ctl: Vec<Sender<GroupCtl>>,
    pub(super) place_ctl: Vec<Sender<PlaceCtl>>,
    pub(super) post_ctl: Vec<Sender<PostCtl>>,
    pub(super) punts: Vec<Consumer<(u64, Punt)>>,
    pub(super) events: Vec<Consumer<ControlEvent>>,
    pub(super) to_group: Vec<Producer<ProtoWork>>,
    /// Work the groups' rings did not take yet, bounded (see [`backlog`]).
    pub(super) backlog: Backlog,
    pub(super) from_post: Vec<Vec<Consumer<Sequenced<Frame>>>>,
    pub(super) egress: Vec<Reorder<Frame>>,
    pub(super) rx: Vec<Frame>,
    pub(super) tx: Vec<Frame>,
    pub(super) batch: Vec<PreIn>,
    pub(super) rx_frames: u64,
    pub(super) rx_by_queue: Vec<u64>,
    pub(super) tx_frames: u64,
    pub(super) placement: Arc<dyn Placement>,
    pub(super) place_of: Vec<u16>,
    /// Frames the user stages sent back out, from preprocess replicas and groups.
    pub(super) raw_tx: Vec<Consumer<Frame>>,
    /// Control-plane and reflected frames, before the `tx_frame` hooks.
    pub(super) staged: Vec<Frame>,
    pub(super) tx_hooks: Chain<TxFrame>,
    /// With the `tx_frame` stages on a task of their own: every frame goes through it.
    pub(super) tx_task: Option<egress::ToTxHooks>,
    pub(super) rings: Vec<RedirectRing>,
    pub(super) instance: usize,
    pub(super) meta: Meta,
    pub(super) summary: Shared<IoSummary>,
    /// Reports made (see [`stats::publish_io`]).
    pub(super) reports: u64,
    /// Every worker's wakeup: installs and removals go to tasks that may sleep.
    pub(super) wakes: Vec<Arc<Wakeup>>,
}

impl<P: Port> IoTask<P> {
    fn route(&mut self, w: ProtoWork) {
        let g = self.group_of.get(w.flow() as usize).copied().unwrap_or(0) as usize % self.groups;
        self.backlog.push(g, w, &self.arena);
    }

    fn apply_control(&mut self) -> bool {
        if self.cout.is_empty() {
            return false;
        }
        self.staged.append(&mut self.cout.tx);
        // Removals before installs: an id freed in this output may be given to a
        // connection installed in it, and the flow's tasks must see the removal first.
        for (id, t) in std::mem::take(&mut self.cout.removals) {
            self.reinject.remove(&t);
            for c in &self.pre_ctl {
                let _ = c.send(PreCtl::Remove(t));
            }
            // Postprocess keeps a removed flow's view until its id is installed again: the
            // control plane removes a flow as soon as placement reports its reset, which
            // may be before a replica on another worker has built that RST (or the flow's
            // last segments), and they must still go out with the flow's headers.
            let g = self.group_of.get(id as usize).copied().unwrap_or(0) as usize % self.groups;
            let _ = self.group_ctl[g].send(GroupCtl::Remove(id));
            let place = self.place_of.get(id as usize).copied().unwrap_or(0) as usize;
            let _ = self.place_ctl[place % self.place_ctl.len()].send(PlaceCtl::Remove(id));
        }
        for ins in std::mem::take(&mut self.cout.installs) {
            let id = ins.identity.id;
            let t = ins.identity.tuple;
            let g = ins.identity.group;
            let replicas = self.place_ctl.len();
            let place = self.placement.place(id, &t, replicas) % replicas;
            if self.group_of.len() <= id as usize {
                self.group_of.resize(id as usize + 1, 0);
                self.place_of.resize(id as usize + 1, 0);
            }
            self.group_of[id as usize] = g;
            self.place_of[id as usize] = place as u16;
            self.reinject.install(t, id, ins.identity.incarnation);
            let view = FlowView {
                identity: ins.identity.clone(),
                counters: ins.counters,
            };
            for c in &self.post_ctl {
                let _ = c.send(PostCtl::Install(id, view.clone()));
            }
            // Place first, group second, preprocess last: a result for this flow can only
            // exist after the group has its state, and by then the place replica's message
            // is in its channel; a segment (or a RST) can only reach the group after
            // preprocess has the flow, and by then the group's message is in its channel.
            let views = (ins.rings.tx.observer(), ins.rings.rx.observer());
            let _ = self.place_ctl[place].send(PlaceCtl::Install {
                id,
                rings: ins.rings,
                conn: ins.conn.clone(),
                incarnation: ins.identity.incarnation,
            });
            let _ = self.group_ctl[g as usize % self.groups].send(GroupCtl::Install {
                id,
                state: Box::new(ins.state),
                views,
                identity: ins.identity.clone(),
                place: place as u16,
            });
            for c in &self.pre_ctl {
                let _ = c.send(PreCtl::Install(t, id, g, ins.identity.incarnation));
            }
            ins.conn.set_flow(id);
            ins.conn.fence_after_install();
            ins.conn.set_status(crate::host::ConnStatus::Established);
            if let Some(u) = self.control.app_update(id, &mut self.cout) {
                self.route(u.work(id, None));
            }
        }
        for f in std::mem::take(&mut self.cout.reinject) {
            match self.reinject.classify(f) {
                Some(PreOut::Rx(w)) => self.route(ProtoWork::Rx(w)),
                Some(PreOut::Punt(p)) => self.arena.free(p.frame),
                None => {}
            }
        }
        for w in std::mem::take(&mut self.cout.work) {
            self.route(w);
        }
        for w in &self.wakes {
            w.notify();
        }
        true
    }

    /// Number a received burst (in `rx`) into `batch`.
    fn number_rx(&mut self, n: usize) {
        self.rx_frames += n as u64;
        self.batch.clear();
        for f in self.rx.drain(..) {
            self.batch.push(PreIn::Frame(self.next_seq, f));
            self.next_seq += 1;
        }
    }

    fn publish_summary(&mut self, full: bool) {
        let c = &self.control;
        let base = IoSummary {
            control: c.stats().clone(),
            flows: c.connection_count(),
            rx_frames: self.rx_frames,
            rx_by_queue: self.rx_by_queue.clone(),
            tx_frames: self.tx_frames,
            frames_in_use: self.arena.in_use(),
            ..IoSummary::default()
        };
        let count = c.connection_count() + c.embryonic_count();
        stats::publish_io(&self.summary, &mut self.reports, full, count, base, || {
            (c.connection_states(), c.retransmissions())
        });
    }
}

impl<P: Port> Task for IoTask<P> {
    fn run(&mut self, now: Instant) -> bool {
        self.meta.polls += 1;
        let mut busy = false;
        let _ = self.control.poll_requests(now, &mut self.cout);
        // Ingress: number frames and deal bursts to the preprocess replicas (or to the
        // `rx_frame` stages' task, which deals them on).
        if self.queues > 1 && self.queues == self.ingress.outputs() {
            for q in 0..self.queues {
                if !self.ingress.ready_for(q) {
                    continue;
                }
                let n = self
                    .port
                    .recv_queue(q as u16, now, &self.arena, &mut self.rx, BURST);
                if n > 0 {
                    busy = true;
                    if self.rx_by_queue.len() < self.queues {
                        self.rx_by_queue.resize(self.queues, 0);
                    }
                    self.rx_by_queue[q] += n as u64;
                    self.number_rx(n);
                    self.ingress.deal_to(q, &mut self.batch, self.next_seq - 1);
                }
            }
        } else {
            for _ in 0..4 {
                if !self.ingress.ready() {
                    break;
                }
                let n = self.port.recv(now, &self.arena, &mut self.rx, BURST);
                if n == 0 {
                    break;
                }
                busy = true;
                self.number_rx(n);
                self.ingress.deal(&mut self.batch, self.next_seq - 1);
            }
        }
        self.ingress.advances();
        // Punted frames.
        for i in 0..self.punts.len() {
            while let Some((ingress, p)) = self.punts[i].pop() {
                busy = true;
                self.control.handle_punt(now, ingress, p, &mut self.cout);
            }
        }
        // Data-path events.
        for i in 0..self.events.len() {
            while let Some(ev) = self.events[i].pop() {
                busy = true;
                self.control.handle_event(now, ev, &mut self.cout);
            }
        }
        // Application doorbells and timers: left queued and armed while a group is behind
        // (see `backlog`).
        while self.backlog.takes_more() {
            let Some(flow) = self.host.doorbells.pop() else {
                break;
            };
            busy = true;
            if let Some(u) = self.control.app_update(flow, &mut self.cout) {
                self.route(u.work(flow, None));
            }
        }
        if self.backlog.takes_more() {
            let _ = self.control.poll_timers(now, &mut self.cout);
        }
        busy |= self.apply_control();
        self.backlog.flush(&mut self.to_group);
        // Control-plane frames and frames user stages reflected: through the `tx_frame`
        // hooks (the data path's frames went through them on the postprocess replicas).
        for c in self.raw_tx.iter_mut() {
            while let Some(f) = c.pop() {
                self.staged.push(f);
            }
        }
        if !self.staged.is_empty() {
            busy = true;
            if !self.tx_hooks.is_empty() {
                let cx = HookCx {
                    now,
                    arena: &self.arena,
                    instance: self.instance,
                };
                self.tx_hooks
                    .run_out(&cx, &mut self.staged, &mut Vec::<()>::new(), &self.rings);
            }
            self.tx.append(&mut self.staged);
        }
        // Egress: per group, frames back into protocol order, then to the wire (through the
        // `tx_frame` stages' task, when there is one and it keeps up).
        let room = self.tx_task.as_ref().is_none_or(|t| t.has_room());
        for g in (0..self.groups).filter(|_| room) {
            for q in 0..self.from_post[g].len() {
                // Backpressure: an entry too far ahead stays in its ring until the missing
                // numbers (from other replicas) have gone out.
                while let Some(true) = self.from_post[g][q]
                    .peek()
                    .map(|e| self.egress[g].accepts(e))
                {
                    let Some(e) = self.from_post[g][q].pop() else {
                        break;
                    };
                    busy = true;
                    if let Err(back) = self.egress[g].offer_entry(e, &mut self.tx) {
                        // Not reached: `accepts` was checked; never lose a frame regardless.
                        if let Some((_, f)) = back.into_item() {
                            self.arena.free(f);
                        }
                    }
                }
            }
        }
        if let Some(t) = self.tx_task.as_mut() {
            busy |= t.exchange(&mut self.tx);
        }
        if !self.tx.is_empty() {
            self.tx_frames += self.tx.len() as u64;
            self.port.send(now, &self.arena, &mut self.tx);
        }
        if busy {
            self.meta.busy += 1;
        }
        busy
    }

    fn report(&mut self) {
        self.report_with(false);
    }

    fn report_full(&mut self) {
        self.report_with(true);
    }
}

impl<P: Port> IoTask<P> {
    fn report_with(&mut self, full: bool) {
        let mut rings = Vec::new();
        for (len, cap) in self.ingress.rings() {
            rings.push(("ingress", len, cap));
        }
        for g in &self.from_post {
            for c in g {
                rings.push(("from_post", c.len(), c.capacity()));
            }
        }
        self.meta.publish(
            vec![
                ("reinject", self.reinject.stats().clone()),
                ("backlog", self.backlog.stats()),
            ],
            rings,
            self.egress.iter().map(|r| r.stats()).collect(),
            self.tx_hooks.reports(),
        );
        self.publish_summary(full);
    }
}
