//! The inline runtime: [`Engine`] runs the data path's segments one after another on the
//! caller's thread ([`Engine::poll`]); [`Runtime`](super::Runtime) polls an engine on a
//! thread of its own.

use super::*;

/// A TCP offload engine on the inline runtime: stages, user stages, policies, control plane,
/// application interface and a port. `C` is the congestion control and `S` the flow
/// scheduler (see [`Pipeline::builder`]). The data path's four segments (see
/// [the pipeline docs](crate::pipeline#the-data-path)) run one after another on the caller's thread.
pub struct Engine<P: Port, C: CongestionControl = NewReno, S: FlowScheduler = RoundRobin> {
    arena: Arc<FrameArena>,
    port: P,
    burst: usize,
    budget: usize,
    ingress: Ingress,
    transport: Transport<C, S>,
    delivery: Delivery,
    egress: Egress,
    /// The `tx_frame` stages' instance for frames that do not come through egress
    /// (control-plane frames, frames user stages sent back out).
    raw_tx_hooks: Chain<hooks::TxFrame>,
    rings: Vec<RedirectRing>,
    control: Control,
    host: Arc<HostShared>,
    // Scratch bursts, reused.
    rx: Vec<Frame>,
    no_seqs: Vec<u64>,
    segs: Vec<RxWork>,
    punts: Vec<Punt>,
    diverted: Diverted,
    raw: Vec<Frame>,
    work: Vec<ProtoWork>,
    results: Vec<ProtoResult>,
    events: Vec<ControlEvent>,
    tx: Vec<Frame>,
    cout: ControlOutput,
    stats: EngineStats,
    /// Transmissions granted in this `poll` (at most [`EngineConfig::poll_budget`]).
    granted: usize,
}

impl<P: Port> Engine<P> {
    /// Build the default pipeline on `port`: the built-in stages, no user stages, the
    /// default policies. Short for `Pipeline::builder(cfg, port).build()`.
    pub fn new(cfg: EngineConfig, port: P) -> Result<Self, EngineError> {
        Pipeline::builder(cfg, port).build()
    }
}

impl<P: Port, C: CongestionControl, S: FlowScheduler> Engine<P, C, S> {
    pub(crate) fn assemble(
        cfg: EngineConfig,
        port: P,
        cc: C,
        sched: S,
        mut hooks: Hooks,
    ) -> Result<Self, EngineError> {
        let Parts {
            arena,
            host,
            control,
        } = Parts::new(&cfg, port.mtu(), port.arena(), &mut hooks)?;
        let Hooks {
            rx_frame,
            rx_segment,
            results,
            tx_frame,
            rings,
        } = hooks;
        Ok(Engine {
            ingress: Ingress {
                arena: arena.clone(),
                pre: Preprocess::new(arena.clone(), cfg.mac, cfg.ip),
                hooks: rx_frame,
                rings: rings.clone(),
                instance: 0,
            },
            transport: Transport::new(
                arena.clone(),
                Protocol::with_congestion(cc, arena.clone())
                    .with_ack_policy(cfg.ack_policy)
                    .with_challenge_ack_limit(cfg.control.challenge_ack_limit),
                sched,
                (rx_segment, results),
                rings.clone(),
                0,
            ),
            delivery: {
                let mut d =
                    Delivery::new(arena.clone(), 0, !port.capabilities().tx_checksum_offload);
                // Its received frames go to the transport's cache (`run_work`).
                d.place.leave_freed();
                d
            },
            egress: Egress::new(
                arena.clone(),
                Postprocess::new(arena.clone(), cfg.ack_policy)
                    .sole_writer()
                    .on_control_thread(),
                tx_frame.clone(),
                rings.clone(),
                0,
                port.capabilities().tx_checksum_offload,
            ),
            raw_tx_hooks: tx_frame,
            rings,
            control,
            host,
            arena,
            port,
            burst: cfg.burst,
            budget: cfg.poll_budget,
            rx: Vec::with_capacity(cfg.burst),
            no_seqs: Vec::new(),
            segs: Vec::with_capacity(cfg.burst),
            punts: Vec::new(),
            diverted: Diverted::default(),
            raw: Vec::new(),
            work: Vec::with_capacity(cfg.burst),
            results: Vec::with_capacity(cfg.burst),
            events: Vec::new(),
            tx: Vec::with_capacity(cfg.burst * 2),
            cout: ControlOutput::default(),
            stats: EngineStats::default(),
            granted: 0,
        })
    }

    /// A handle for opening sockets on this engine.
    pub fn host(&self) -> Host {
        Host {
            shared: self.host.clone(),
        }
    }

    /// The wakeup a thread that polls this engine sleeps on: the application's doorbells
    /// and requests wake it.
    pub(super) fn engine_wake(&self) -> Arc<crate::ring::Wakeup> {
        self.host.engine_wake()
    }

    /// The frame arena.
    pub fn arena(&self) -> &Arc<FrameArena> {
        &self.arena
    }

    /// The port.
    pub fn port(&self) -> &P {
        &self.port
    }

    /// The port, mutably.
    pub fn port_mut(&mut self) -> &mut P {
        &mut self.port
    }

    /// Entries in the data path's flow table.
    pub fn flow_count(&self) -> usize {
        self.ingress.pre.table().len()
    }

    /// Connection state of a tuple (handshakes included).
    pub fn conn_state(&self, t: &FourTuple) -> Option<TcpConnState> {
        self.control.conn_state(t)
    }

    /// Every connection the control plane knows.
    pub fn connections(&self) -> Vec<FourTuple> {
        self.control.tuples()
    }

    /// Every connection the control plane knows, with its state.
    pub fn connection_states(&self) -> Vec<(FourTuple, TcpConnState)> {
        self.control.connection_states()
    }

    /// The smoothed round-trip time of a connection (RFC 6298), once sampled.
    pub fn srtt(&self, t: &FourTuple) -> Option<Duration> {
        self.control.srtt(t)
    }

    /// Whether a listener is open on `port`.
    pub fn is_listening(&self, port: u16) -> bool {
        self.control.is_listening(port)
    }

    /// The protocol stage's state of a flow (read-only).
    pub fn tcp_state(&self, t: &FourTuple) -> Option<&TcpState> {
        let id = self.ingress.pre.table().lookup(t)?;
        self.transport.proto.state(id)
    }

    /// The congestion-control state of a flow (read-only).
    pub fn congestion_state(&self, t: &FourTuple) -> Option<&C::Flow> {
        let id = self.ingress.pre.table().lookup(t)?;
        self.transport.proto.congestion_state(id)
    }

    /// Retransmissions over the engine's lifetime, by kind: fast recoveries and the segments
    /// they resent, tail-loss probes, timeouts.
    pub fn retransmissions(&self) -> RetransmitTotals {
        self.control.retransmissions()
    }

    /// The earliest time the engine has something to do without new input.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.control.next_deadline(),
            self.port.next_arrival(),
            self.transport.sched.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        let mut s = self.stats.clone();
        let pre = &self.ingress.pre;
        let [proto, sched] = self.transport.stats();
        let [place, notify] = self.delivery.stats();
        let [post, egress] = self.egress.stats();
        s.stages = vec![
            (pre.name(), pre.stats().clone()),
            proto,
            place,
            post,
            notify,
            sched,
            egress,
        ];
        let mut hooks = self.ingress.hooks.reports();
        hooks.extend(self.transport.seg_hooks.reports());
        hooks.extend(self.transport.result_hooks.reports());
        HookReport::merge_into(&mut hooks, &self.egress.hooks.reports());
        HookReport::merge_into(&mut hooks, &self.raw_tx_hooks.reports());
        s.hooks = hooks;
        s.control = self.control.stats().clone();
        s.frames_in_use = self.arena.in_use();
        s.flows = self.flow_count();
        s.handshakes = self.control.embryonic_count();
        s
    }

    /// One pass of the inline runtime: receive and process what the port has, apply the
    /// application's updates, run the timers, send what the windows allow. Returns whether
    /// anything happened. [`EngineConfig::poll_budget`] bounds the frames received and the
    /// segments sent in one call.
    pub fn poll(&mut self, now: Instant) -> bool {
        self.stats.polls += 1;
        self.granted = 0;
        let mut busy = false;
        // Control-plane output is carried out after each step that may have made some; the
        // last step of the poll carries out anything left.
        if self.control.poll_requests(now, &mut self.cout) {
            busy |= self.apply_control(now);
        }

        let mut received = 0;
        while received < self.budget {
            let n = self.port.recv(now, &self.arena, &mut self.rx, self.burst);
            if n == 0 {
                break;
            }
            received += n;
            busy = true;
            self.stats.rx_frames += n as u64;
            // Without `rx_segment` stages a segment goes straight to the protocol's work.
            let direct = self.transport.seg_hooks.is_empty();
            let (segs, work, punts) = (&mut self.segs, &mut self.work, &mut self.punts);
            self.ingress.run(
                now,
                &mut self.rx,
                &mut self.no_seqs,
                &mut self.diverted,
                |_, out| match out {
                    PreOut::Rx(w) if direct => work.push(ProtoWork::Rx(w)),
                    PreOut::Rx(w) => segs.push(w),
                    PreOut::Punt(p) => punts.push(p),
                },
            );
            for p in self.punts.drain(..) {
                self.control.handle_punt(now, 0, p, &mut self.cout);
            }
            self.take_segments(now);
            self.run(now);
            busy |= self.apply_control(now);
        }

        busy |= self.drain_doorbells(now);

        if self.control.poll_timers(now, &mut self.cout) {
            busy |= self.apply_control(now);
        }

        while self.transport.sched.pending() > 0 {
            // A pacing scheduler may hold pending flows whose time has not come.
            if self.grant(now) == 0 {
                break;
            }
            self.run(now);
            busy = true;
            if self.tx.len() >= self.burst {
                self.flush(now);
            }
        }
        busy |= self.apply_control(now);
        self.flush(now);
        busy
    }

    /// Segments of established flows through the transport's `rx_segment` stages into the
    /// work queue.
    #[inline]
    fn take_segments(&mut self, now: Instant) {
        self.transport
            .take_segments(now, &mut self.segs, &mut self.work, &mut self.diverted);
        self.apply_diverted(now);
    }

    /// Frames user stages sent back out or punted.
    #[inline(always)]
    fn apply_diverted(&mut self, now: Instant) {
        if !self.diverted.is_empty() {
            self.apply_diverted_frames(now);
        }
    }

    #[inline(never)]
    fn apply_diverted_frames(&mut self, now: Instant) {
        self.raw.append(&mut self.diverted.tx);
        self.send_raw(now);
        for frame in self.diverted.punt.drain(..) {
            let p = Punt {
                frame,
                reason: PuntReason::Extension,
            };
            self.control.handle_punt(now, 0, p, &mut self.cout);
        }
    }

    /// Frames that did not come through egress (control plane, sent back by a user stage):
    /// through their own instance of the `tx_frame` stages, then out.
    fn send_raw(&mut self, now: Instant) {
        if self.raw.is_empty() {
            return;
        }
        if !self.raw_tx_hooks.is_empty() {
            let cx = hooks::HookCx {
                now,
                arena: &self.arena,
                instance: 1,
            };
            self.raw_tx_hooks
                .run_out(&cx, &mut self.raw, &mut Vec::<()>::new(), &self.rings);
        }
        self.tx.append(&mut self.raw);
    }

    fn flush(&mut self, now: Instant) {
        if !self.tx.is_empty() {
            self.stats.tx_frames += self.tx.len() as u64;
            self.port.send(now, &self.arena, &mut self.tx);
        }
    }

    fn drain_doorbells(&mut self, now: Instant) -> bool {
        if self.host.doorbells.is_empty() && self.work.is_empty() && self.cout.is_empty() {
            return false;
        }
        let mut any = false;
        // Emptiness first: a pop that finds the queue empty costs a full fence, one per
        // poll; a doorbell rung after the test waits for the next poll.
        while !self.host.doorbells.is_empty() {
            let Some(flow) = self.host.doorbells.pop() else {
                break;
            };
            any = true;
            self.stats.doorbells += 1;
            if let Some(u) = self.control.app_update(flow, &mut self.cout) {
                let positions = self.delivery.place.app_positions(flow);
                if !u.fin && !u.closed && self.quiet_update(flow, positions) {
                    self.stats.quiet_reads += 1;
                } else {
                    self.work.push(u.work(flow, positions));
                }
            }
            if self.work.len() >= self.burst {
                self.run(now);
            }
        }
        self.run(now);
        any |= self.apply_control(now);
        any
    }

    /// A doorbell (with neither FIN nor close) that only says the application read,
    /// applied to the protocol stage's state at once where its result would do nothing
    /// ([`Protocol::app_quiet`]: no window update due, nothing to send): no pass through
    /// the stages for it. Not with user stages at the `results` hook point (they see every
    /// result), nor ahead of queued work of the same flow (its order would change).
    #[inline]
    fn quiet_update(&mut self, flow: FlowId, positions: Option<(u64, u64)>) -> bool {
        let Some((tx_head, rx_tail)) = positions else {
            return false;
        };
        self.transport.result_hooks.is_empty()
            && !self.work.iter().any(|w| w.flow() == flow)
            && self.transport.proto.app_quiet(flow, tx_head, rx_tail)
    }

    /// Grant up to a burst of transmissions into the work queue, within what is left of
    /// the poll's budget; returns how many.
    fn grant(&mut self, now: Instant) -> usize {
        let max = self.burst.min(self.budget.saturating_sub(self.granted));
        if max == 0 {
            return 0;
        }
        let granted = self.transport.grant(now, max, &mut self.work);
        self.granted += granted;
        self.stats.grants += granted as u64;
        granted
    }

    /// Run the queued work through transport, delivery and egress. The transmissions the
    /// work made ready (data the application wrote, window an ACK opened) are granted at
    /// once and go through delivery and egress with it: one pass, not two.
    #[inline(always)]
    fn run(&mut self, now: Instant) {
        // Often nothing (a poll whose doorbells were all quiet reads): answered in line.
        if !self.work.is_empty() {
            self.run_work(now);
        }
    }

    #[inline(never)]
    fn run_work(&mut self, now: Instant) {
        // An application's write sends its first segment in its own result where the
        // scheduler would grant it at once; not ahead of control-plane work (below), and
        // within the poll's budget, which those segments count against like grants.
        self.transport.direct_send = if self.cout.work.is_empty() {
            self.budget.saturating_sub(self.granted)
        } else {
            0
        };
        self.transport.run(now, &mut self.work, &mut self.results);
        self.granted += self.transport.direct_sent;
        // Not while the control plane has work queued (a reset the application's close
        // asked for): that goes first, and the poll's grants follow it.
        if self.cout.work.is_empty() && self.transport.sched.pending() > 0 && self.grant(now) > 0 {
            self.transport.run(now, &mut self.work, &mut self.results);
        }
        self.delivery.run(now, &mut self.results, &mut self.events);
        // The received frames placement is done with are the next segments' frames.
        self.transport.recycle(self.delivery.place.freed());
        let tx = &mut self.tx;
        self.egress.run(now, &mut self.results, |_, f| {
            if let Some(f) = f {
                tx.push(f);
            }
        });
        self.results.clear();
        for ev in self.events.drain(..) {
            self.control.handle_event(now, ev, &mut self.cout);
        }
        if self.tx.len() >= self.burst {
            self.flush(now);
        }
    }

    /// Carry out what the control plane produced; whether there was anything. The check
    /// for nothing is inlined: a poll makes it several times and usually finds nothing.
    #[inline(always)]
    fn apply_control(&mut self, now: Instant) -> bool {
        if self.cout.is_empty() {
            return false;
        }
        self.apply_control_output(now)
    }

    #[inline(never)]
    fn apply_control_output(&mut self, now: Instant) -> bool {
        let mut any = false;
        // Loop: installing and running work can produce more control output.
        for _ in 0..4 {
            if self.cout.is_empty() {
                break;
            }
            any = true;
            self.raw.append(&mut self.cout.tx);
            self.send_raw(now);
            let installs = std::mem::take(&mut self.cout.installs);
            for ins in installs {
                let id = ins.identity.id;
                self.ingress
                    .pre
                    .install(ins.identity.tuple, id, ins.identity.incarnation);
                self.transport.install(id, ins.state, &ins.identity);
                self.egress.post.install(
                    id,
                    FlowView {
                        identity: ins.identity.clone(),
                        counters: ins.counters,
                    },
                );
                self.delivery
                    .place
                    .install(id, ins.rings, ins.identity.incarnation);
                self.delivery.notify.install(id, ins.conn.clone());
                ins.conn.set_flow(id);
                ins.conn.fence_after_install();
                ins.conn.set_status(crate::host::ConnStatus::Established);
                // Pick up anything the application did before the flow existed.
                if let Some(u) = self.control.app_update(id, &mut self.cout) {
                    let positions = self.delivery.place.app_positions(id);
                    self.cout.work.push(u.work(id, positions));
                }
            }
            let mut reinject = std::mem::take(&mut self.cout.reinject);
            for f in reinject.drain(..) {
                match self.ingress.pre.classify(f) {
                    Some(PreOut::Rx(w)) => self.segs.push(w),
                    Some(PreOut::Punt(p)) => {
                        self.transport.proto.count_drop(DropReason::StaleFlow);
                        self.arena.free(p.frame);
                    }
                    None => {}
                }
            }
            self.take_segments(now);
            self.work.append(&mut self.cout.work);
            self.run(now);
            let removals = std::mem::take(&mut self.cout.removals);
            for (id, tuple) in removals {
                self.remove_flow(id, &tuple);
            }
        }
        any
    }

    fn remove_flow(&mut self, id: FlowId, tuple: &FourTuple) {
        self.ingress.pre.remove(tuple);
        self.transport.remove(id);
        self.delivery.place.remove(id);
        self.delivery.notify.remove(id);
        self.egress.post.remove(id);
    }
}

impl<P: Port, C: CongestionControl, S: FlowScheduler> Drop for Engine<P, C, S> {
    fn drop(&mut self) {
        self.host.engine_alive.store(false, Ordering::Release);
        let d = &mut self.diverted;
        let held = self
            .rx
            .drain(..)
            .chain(self.tx.drain(..))
            .chain(self.raw.drain(..))
            .chain(self.segs.drain(..).map(|w| w.frame))
            .chain(self.punts.drain(..).map(|p| p.frame))
            .chain(d.tx.drain(..))
            .chain(d.punt.drain(..));
        for f in held {
            self.arena.free(f);
        }
    }
}

#[cfg(test)]
mod tests;
