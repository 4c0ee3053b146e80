//! Timers: RTT estimation (RFC 6298), tail-loss probes (RFC 8985), retransmission timeouts
//! with Karn's backoff, zero-window probes, TIME-WAIT; and the earliest deadline, for
//! simulations that skip idle time.

use super::rates::IntervalSample;
use super::*;

/// Added to twice the smoothed RTT for a probe timeout (Linux adds two timer ticks).
const TLP_MIN: Duration = Duration::from_millis(2);
/// Probe timeouts between two advances of `snd_una`, before the retransmission timeout: the
/// first is a tail-loss probe, later ones (in a recovery) resend lost retransmissions.
const MAX_PROBES: u32 = 3;
/// Added to the probe timeout when one segment is in flight, for the peer's delayed ACK (Linux
/// acknowledges a lone segment within its shortest delayed-ACK time, 40 ms, in quick-ACK mode).
const TLP_ACK_DELAY: Duration = Duration::from_millis(40);

/// Longest the timers leave a connection set aside without a look, whatever its deadlines
/// (a bound on how late a timer is if a word from the data path never came).
const PARK_MAX: Duration = Duration::from_millis(100);

/// Which connections the timers look at. Those with something to time (data in flight or
/// queued, a delayed ACK, a zero-window probe pending) are in the active list and
/// looked at every tick; the others are set aside in a timing wheel until their next
/// deadline (a keep-alive, the end of TIME-WAIT or of an orphan's FIN-WAIT-2, or
/// [`PARK_MAX`]), or until the data path arms them
/// ([`FlowCounters::arm_timers`](crate::flow::FlowCounters::arm_timers)), the application
/// rings their doorbell or an event of theirs arrives. A tick costs the active connections,
/// not all of them.
pub(super) struct TimerSets {
    active: Vec<FlowId>,
    wheel: crate::stages::wheel::TimingWheel<FlowId>,
    pub(super) wake_tx: crossbeam_channel::Sender<FlowId>,
    wake_rx: crossbeam_channel::Receiver<FlowId>,
    /// Scratch vectors, kept for their allocations.
    due: Vec<FlowId>,
    spare: Vec<FlowId>,
    /// Ticks run so far (a connection is visited at most once per tick).
    tick: u64,
    /// The engine's time at the last call of `poll_timers` (when a connection set aside is
    /// taken back, its data was sent no earlier).
    now: Instant,
}

impl Default for TimerSets {
    fn default() -> Self {
        let (wake_tx, wake_rx) = crossbeam_channel::unbounded();
        TimerSets {
            active: Vec::new(),
            wheel: Default::default(),
            wake_tx,
            wake_rx,
            due: Vec::new(),
            spare: Vec::new(),
            tick: 0,
            now: Instant::ZERO,
        }
    }
}

/// When the data path says something happened (its own timestamp), no later than `now`.
/// Called after a count was read: the data path stored the time before the count.
fn data_path_time(at: &std::sync::atomic::AtomicU64, now: Instant) -> Instant {
    std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
    Instant::from_micros(at.load(std::sync::atomic::Ordering::Relaxed)).min(now)
}

impl Conn {
    /// Whether the data path says there is something to time: data in flight or queued (a
    /// closed peer window matters only then), a delayed ACK.
    fn armed(&self) -> bool {
        let k = &self.counters;
        k.in_flight() > 0 || k.unsent() > 0 || FlowCounters::get(&k.ack_due) > 0
    }

    /// When the timers must look at this connection again if it may be set aside until
    /// then, or `None` when it must stay in the active list.
    fn park_deadline(&self, now: Instant, fin_wait2_timeout: Duration) -> Option<Instant> {
        let cap = now + PARK_MAX;
        if let Some(t) = self.time_wait_until {
            return Some(t.min(cap));
        }
        if self.armed() || self.persist_at.is_some() {
            return None;
        }
        let mut at = cap;
        if let Some(t) = self.keepalive_at(0) {
            at = at.min(t);
        }
        if self.orphan && self.state == TcpConnState::FinWait2 {
            at = at.min(self.fin_wait2_since.unwrap_or(now) + fin_wait2_timeout);
        }
        Some(at)
    }

    /// The last progress as the timers will see it at their next look: the data path
    /// publishes the time of the last ACK of new data in the counters, which the timers
    /// take when they visit the connection (`visit_conn`); a deadline computed
    /// before that look counts from it already (an earlier one would wake the runtime for
    /// nothing). Whether the counters show such an ACK, too: it stops the persist timer.
    /// Read without the fence of `data_path_time`: an ACK time older than the byte count
    /// makes an earlier deadline, a wake for nothing at worst, and the data path's clock
    /// (the one it stamps the time with) never runs ahead of the runtime's.
    fn progress_hint(&self) -> (Instant, bool) {
        let k = &self.counters;
        let acked = FlowCounters::get(&k.acked_bytes) != self.last_acked;
        let at = Instant::from_micros(k.last_ack_us.load(std::sync::atomic::Ordering::Relaxed));
        (
            if acked {
                self.last_progress.max(at)
            } else {
                self.last_progress
            },
            acked,
        )
    }

    /// When the next keep-alive probe (RFC 1122 4.2.3.6) is due: keep-alives on, the
    /// connection idle (synchronized, nothing in flight or queued), `idle` after the peer's
    /// last segment, then every `interval`.
    fn keepalive_at(&self, unsent: u64) -> Option<Instant> {
        if unsent > 0
            || !matches!(
                self.state,
                TcpConnState::Established | TcpConnState::CloseWait
            )
        {
            return None;
        }
        let k = self.conn.keepalive()?;
        Some(self.last_rx + k.idle + k.interval * self.keepalives_sent)
    }

    /// When the next probe timeout (RFC 8985) is due, if one may fire: an RTT estimate,
    /// fewer than [`MAX_PROBES`] since the last progress, and earlier than the
    /// retransmission timeout. The timeout is twice the smoothed RTT plus
    /// [`TLP_MIN`] (plus the peer's delayed-ACK allowance when one segment is in flight);
    /// the `k`-th probe fires `k` timeouts after the last progress (`fired`: the probes
    /// fired since; `srtt`: the smoothed RTT in microseconds).
    fn tail_probe_at(
        &self,
        since: Instant,
        fired: u32,
        srtt: Option<f64>,
        in_flight: u64,
        rto: Duration,
    ) -> Option<Instant> {
        if fired >= MAX_PROBES {
            return None;
        }
        let srtt = srtt?;
        let mut pto = Duration::from_micros((2.0 * srtt) as u64) + TLP_MIN;
        if in_flight <= self.mss as u64 {
            pto += TLP_ACK_DELAY;
        }
        let after = pto * (fired + 1);
        (after < rto).then(|| since + after)
    }
}

/// The RTT estimate with the samples the data path took since the timers' last look.
struct Estimate {
    srtt_us: f64,
    rttvar_us: f64,
    rto: Duration,
    /// The samples' mark to look from next time.
    mark: u64,
}

impl Conn {
    /// The estimate (RFC 6298 2.2 / 2.3) with the samples the data path took since the
    /// timers' last look, `None` if it took none.
    fn estimate(&self, rto_min: Duration, rto_max: Duration) -> Option<Estimate> {
        let ((sum, n), mark) = self.counters.rtt_since(self.last_rtt);
        if n == 0 {
            return None;
        }
        let r = sum as f64 / n as f64;
        let (srtt_us, rttvar_us) = match self.srtt_us {
            None => (r, r / 2.0),
            Some(s) => (
                0.875 * s + 0.125 * r,
                0.75 * self.rttvar_us + 0.25 * (s - r).abs(),
            ),
        };
        let rto_us = srtt_us + (4.0 * rttvar_us).max(1000.0);
        Some(Estimate {
            srtt_us,
            rttvar_us,
            rto: Duration::from_micros(rto_us as u64).clamp(rto_min, rto_max),
            mark,
        })
    }
}

impl Control {
    pub(super) fn update_rtt(&mut self, id: FlowId) {
        let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(e) = c.estimate(self.cfg.rto_min, self.cfg.rto_max) else {
            return;
        };
        c.last_rtt = e.mark;
        // Karn: a valid sample ends the timeout's backoff.
        c.backoff = 1;
        c.srtt_us = Some(e.srtt_us);
        c.rttvar_us = e.rttvar_us;
        c.rto = e.rto;
    }

    /// Run the timers: retransmission timeouts, probe timeouts, zero-window probes,
    /// keep-alives, the FIN-WAIT-2 timeout of orphans, TIME-WAIT, handshakes, ARP. Returns
    /// whether they ran (a tick was due), so whether `out` may have more.
    #[inline(always)]
    pub(crate) fn poll_timers(&mut self, now: Instant, out: &mut ControlOutput) -> bool {
        self.timers.now = self.timers.now.max(now);
        if now < self.next_tick {
            return false;
        }
        self.tick(now, out);
        true
    }

    /// One timer tick (every [`TIMER_TICK`]): kept out of line, since most polls do not
    /// reach it.
    #[inline(never)]
    fn tick(&mut self, now: Instant, out: &mut ControlOutput) {
        self.next_tick = now + TIMER_TICK;
        self.poll_rates(now, out);
        self.run_connection_timers(now, out);
        self.poll_handshakes(now, out);
        self.poll_arp(now, out);
        self.poll_splices(now, out);
    }

    /// The connections' timers: those the data path or the application woke, those whose
    /// time to be looked at again has come, and every connection in the active list.
    fn run_connection_timers(&mut self, now: Instant, out: &mut ControlOutput) {
        while let Ok(id) = self.timers.wake_rx.try_recv() {
            self.activate_timers(id);
        }
        let mut due = std::mem::take(&mut self.timers.due);
        self.timers
            .wheel
            .advance(now.micros().saturating_mul(1000), |id| due.push(id));
        for id in due.drain(..) {
            let ready = self
                .conns
                .get(id as usize)
                .and_then(Option::as_ref)
                .is_some_and(|c| !c.timer_active && c.parked_until.is_some_and(|t| t <= now));
            if ready {
                self.activate_timers(id);
            }
        }
        self.timers.due = due;
        let list = std::mem::take(&mut self.timers.active);
        let mut keep = std::mem::take(&mut self.timers.spare);
        self.timers.tick += 1;
        let tick = self.timers.tick;
        for id in list.iter().copied() {
            let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
                continue;
            };
            // Once per tick: a finished connection's id may be reused and listed again
            // before the tick.
            if c.timer_tick == tick {
                continue;
            }
            c.timer_tick = tick;
            self.stats.timer_visits += 1;
            self.visit_conn(id, now, out);
            let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
                continue;
            };
            let Some(until) = c.park_deadline(now, self.cfg.fin_wait2_timeout) else {
                keep.push(id);
                continue;
            };
            // Set it aside, then look once more: a data path that armed it meanwhile
            // either saw the flag (and wakes the timers) or is seen here.
            c.counters.park_timers(true);
            if c.armed() {
                c.counters.park_timers(false);
                keep.push(id);
                continue;
            }
            c.timer_active = false;
            c.parked_until = Some(until);
            self.timers
                .wheel
                .insert(until.micros().saturating_mul(1000), id);
        }
        // Connections activated during the visits come after the ones kept.
        keep.append(&mut self.timers.active);
        self.timers.active = keep;
        let mut list = list;
        list.clear();
        self.timers.spare = list;
    }

    /// Put a connection in the timers' active list (looked at every tick).
    pub(super) fn activate_timers(&mut self, id: FlowId) {
        let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        if c.timer_active {
            return;
        }
        c.timer_active = true;
        if c.parked_until.take().is_some() {
            c.resumed_at = Some(self.timers.now);
        }
        c.counters.park_timers(false);
        self.timers.active.push(id);
    }

    /// One connection's timers, at a tick.
    fn visit_conn(&mut self, id: FlowId, now: Instant, out: &mut ControlOutput) {
        self.update_rtt(id);
        let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        if let Some(t) = c.time_wait_until {
            if now >= t {
                self.finish_conn(id, ConnStatus::Closed, out);
            }
            return;
        }
        // A delayed ACK that nothing carried in time (postprocess clears it when a
        // segment of the flow goes out first).
        let due = c
            .counters
            .ack_due
            .load(std::sync::atomic::Ordering::Relaxed);
        if due != 0
            && now.micros() + 1 >= due
            && c.counters
                .ack_due
                .compare_exchange(
                    due,
                    0,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_ok()
        {
            self.stats.delayed_acks += 1;
            out.work.push(ProtoWork::Ack {
                flow: id,
                incarnation: incarnation_of(&self.incarnations, id),
            });
        }
        let rx = FlowCounters::get(&c.counters.rx_segments);
        if rx != c.last_rx_segments {
            c.last_rx_segments = rx;
            c.last_rx = data_path_time(&c.counters.last_rx_us, now);
            c.keepalives_sent = 0;
            c.persist_silent = 0;
        }
        if c.orphan && c.state == TcpConnState::FinWait2 {
            // Our FIN is acknowledged and nobody will read: the peer's FIN has a while
            // to come (the peer may otherwise hold the connection forever).
            let since = *c.fin_wait2_since.get_or_insert(now);
            if now.saturating_since(since) >= self.cfg.fin_wait2_timeout {
                self.stats.fin_wait2_timeouts += 1;
                self.finish_conn(id, ConnStatus::Closed, out);
                return;
            }
        }
        let acked = FlowCounters::get(&c.counters.acked_bytes);
        if acked != c.last_acked {
            // An ACK of new data (the data path makes no event of it). The timeout's
            // backoff stays until a new RTT sample (Karn's algorithm; see `update_rtt`):
            // an ACK for a retransmitted segment says nothing of the RTT.
            c.last_acked = acked;
            c.last_progress = c
                .last_progress
                .max(data_path_time(&c.counters.last_ack_us, now));
            c.retries = 0;
            c.probes_fired = 0;
            // Progress: the persist timer starts afresh (its probes, an override of
            // silly-window avoidance among them, got data through; as Linux clears its
            // probe backoff when a probe puts data in flight).
            c.persist_at = None;
            c.probe_backoff = 1;
            c.persist_probes = 0;
        }
        if let Some(t) = c.resumed_at.take() {
            // Back from being set aside: the timers did not watch it meanwhile, so whatever
            // is in flight now was sent after it was taken back (or acknowledged later).
            c.last_progress = c.last_progress.max(t);
        }
        let in_flight = c.counters.in_flight();
        let unsent = c.counters.unsent();
        let zero = c.counters.peer_window_zero();
        let rto = (c.rto * c.backoff).min(self.cfg.rto_max);
        if zero && (in_flight > 0 || unsent > 0) {
            // The peer's window is closed: the persist timer probes it (RFC 9293
            // 3.8.6.1), with a backoff of its own; no retransmission timeout runs, and
            // probes answered with a zero window never abort the connection. A peer that
            // answers none (gone, or holding the connection at our expense) is given up
            // after as many probes as timeouts in a row.
            c.last_progress = now;
            match c.persist_at {
                None => c.persist_at = Some(now + rto),
                Some(t) if now >= t => {
                    c.persist_probes += 1;
                    c.persist_silent += 1;
                    if c.persist_silent > self.cfg.max_retransmissions {
                        out.work.push(ProtoWork::Reset {
                            flow: id,
                            incarnation: incarnation_of(&self.incarnations, id),
                        });
                        c.conn.set_status(c.timed_out());
                        return;
                    }
                    if c.orphan && c.persist_probes > self.cfg.orphan_retries {
                        // Nobody will write or read: the peer may not hold the window
                        // shut forever at our expense.
                        self.stats.orphans_aborted += 1;
                        out.work.push(ProtoWork::Reset {
                            flow: id,
                            incarnation: incarnation_of(&self.incarnations, id),
                        });
                        c.conn.set_status(c.timed_out());
                        return;
                    }
                    self.stats.probes += 1;
                    out.work.push(ProtoWork::Probe {
                        flow: id,
                        incarnation: incarnation_of(&self.incarnations, id),
                    });
                    c.probe_backoff = (c.probe_backoff * 2).min(64);
                    c.persist_at = Some(now + (c.rto * c.probe_backoff).min(self.cfg.rto_max));
                }
                _ => {}
            }
            return;
        }
        c.persist_at = None;
        c.probe_backoff = 1;
        c.persist_probes = 0;
        c.persist_silent = 0;
        if in_flight == 0 {
            c.last_progress = now;
            if let Some(due) = c.keepalive_at(unsent) {
                if now >= due {
                    let count = c.conn.keepalive().map_or(0, |k| k.count);
                    if c.keepalives_sent >= count {
                        self.stats.keepalive_timeouts += 1;
                        out.work.push(ProtoWork::Reset {
                            flow: id,
                            incarnation: incarnation_of(&self.incarnations, id),
                        });
                        c.conn.set_status(c.timed_out());
                        return;
                    }
                    // A segment the peer must answer (sequence number below SND.UNA).
                    c.keepalives_sent += 1;
                    self.stats.keepalive_probes += 1;
                    out.work.push(ProtoWork::Probe {
                        flow: id,
                        incarnation: incarnation_of(&self.incarnations, id),
                    });
                }
            }
            return;
        }
        if let Some(t) = c.tail_probe_at(c.last_progress, c.probes_fired, c.srtt_us, in_flight, rto)
        {
            if now >= t {
                c.probes_fired += 1;
                self.stats.tail_probes += 1;
                out.work.push(ProtoWork::TailProbe {
                    flow: id,
                    incarnation: incarnation_of(&self.incarnations, id),
                });
            }
        }
        if now.saturating_since(c.last_progress) >= rto {
            c.retries += 1;
            let max = if c.orphan {
                self.cfg.orphan_retries.min(self.cfg.max_retransmissions)
            } else {
                self.cfg.max_retransmissions
            };
            if c.retries > max {
                out.work.push(ProtoWork::Reset {
                    flow: id,
                    incarnation: incarnation_of(&self.incarnations, id),
                });
                c.conn.set_status(c.timed_out());
                return;
            }
            self.stats.timeouts += 1;
            c.backoff = (c.backoff * 2).min(64);
            c.last_progress = now;
            out.work.push(ProtoWork::Retransmit {
                flow: id,
                incarnation: incarnation_of(&self.incarnations, id),
            });
        }
    }

    /// Once per interval, each connection's counters since the last one become an
    /// [`IntervalSample`](super::rates::IntervalSample) for the control-plane rate algorithm;
    /// a rate that changed goes to the data path.
    fn poll_rates(&mut self, now: Instant, out: &mut ControlOutput) {
        let Some(r) = self.rates.as_mut() else {
            return;
        };
        if now < r.next {
            return;
        }
        r.next = now + r.interval;
        for (id, c) in self.conns.iter_mut().enumerate() {
            let Some(c) = c
                .as_mut()
                .filter(|c| c.rated && c.time_wait_until.is_none())
            else {
                continue;
            };
            let k = &c.counters;
            let ((rtt_sum, samples), rtt_mark) = k.rtt_since(c.rate_snap.rtt);
            let snap = RateSnap {
                at: now,
                acked: FlowCounters::get(&k.acked_bytes),
                ecn: FlowCounters::get(&k.ecn_bytes),
                fast: FlowCounters::get(&k.fast_retransmits),
                timeouts: FlowCounters::get(&k.timeout_retransmits),
                rtt: rtt_mark,
                set: c.rate_snap.set,
            };
            let last = &c.rate_snap;
            let sample = IntervalSample {
                now,
                interval: now.saturating_since(last.at),
                mss: c.mss,
                acked_bytes: snap.acked.saturating_sub(last.acked),
                ecn_bytes: snap.ecn.saturating_sub(last.ecn),
                fast_retransmits: snap.fast.saturating_sub(last.fast),
                timeouts: snap.timeouts.saturating_sub(last.timeouts),
                rtt_us: (samples > 0).then(|| (rtt_sum / samples) as u32),
                in_flight: k.in_flight(),
                unsent: k.unsent(),
            };
            c.rate_snap = snap;
            if let Some(set) = r.driver.update(id as FlowId, &sample) {
                if set != c.rate_snap.set {
                    c.rate_snap.set = set;
                    out.work.push(ProtoWork::SetRate {
                        flow: id as FlowId,
                        incarnation: incarnation_of(&self.incarnations, id as FlowId),
                        bytes_per_sec: Some(set.0),
                        window: set.1,
                    });
                }
            }
        }
    }

    /// The earliest time a timer may fire (for simulations that skip idle time): the
    /// earliest deadline, or the next timer tick when that comes later.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.earliest_deadline().map(|t| t.max(self.next_tick))
    }

    fn earliest_deadline(&self) -> Option<Instant> {
        let mut best: Option<Instant> = None;
        let mut take = |t: Instant| best = Some(best.map_or(t, |b| b.min(t)));
        // Set aside: the wheel's next entry; woken and not taken back yet: now.
        if let Some(ns) = self.timers.wheel.next_ns() {
            take(Instant::from_micros(ns.div_ceil(1000)));
        }
        if !self.timers.wake_rx.is_empty() {
            take(Instant::ZERO);
        }
        let active = self
            .timers
            .active
            .iter()
            .filter_map(|&id| self.conns.get(id as usize).and_then(Option::as_ref));
        for c in active {
            if let Some(t) = c.time_wait_until {
                take(t);
                continue;
            }
            let (progress, acked) = c.progress_hint();
            if let Some(t) = c.persist_at.filter(|_| !acked) {
                take(t);
            }
            let due = c
                .counters
                .ack_due
                .load(std::sync::atomic::Ordering::Relaxed);
            if due != 0 {
                take(Instant::from_micros(due - 1));
            }
            if c.orphan && c.state == TcpConnState::FinWait2 {
                take(c.fin_wait2_since.unwrap_or(c.last_progress) + self.cfg.fin_wait2_timeout);
            }
            let in_flight = c.counters.in_flight();
            if in_flight == 0 {
                let unsent = c.counters.unsent();
                if let Some(t) = c.keepalive_at(unsent) {
                    take(t);
                }
            }
            if in_flight > 0 {
                // RTT samples the timers have not taken yet: the estimate their look will
                // make, and the end of the timeout's backoff (Karn's algorithm,
                // `update_rtt`).
                let (rto, srtt) = match c.estimate(self.cfg.rto_min, self.cfg.rto_max) {
                    Some(e) => (e.rto, Some(e.srtt_us)),
                    None => ((c.rto * c.backoff).min(self.cfg.rto_max), c.srtt_us),
                };
                take(progress + rto);
                // An ACK the timers have not taken yet starts the probes over.
                let fired = if acked { 0 } else { c.probes_fired };
                if let Some(t) = c.tail_probe_at(progress, fired, srtt, in_flight, rto) {
                    take(t);
                }
            }
        }
        if let Some(r) = self.rates.as_ref() {
            // Only while a connection the rates drive has something to send or in flight.
            let busy = self.conns.iter().flatten().any(|c| {
                c.rated
                    && c.time_wait_until.is_none()
                    && (c.counters.in_flight() > 0 || c.counters.unsent() > 0)
            });
            if busy {
                take(r.next);
            }
        }
        for e in self.embryos.values() {
            take(e.next_retx);
        }
        if let Some(t) = self.splice_deadline() {
            take(t);
        }
        for w in self.arp_wait.values() {
            take(w.next);
        }
        best
    }
}
