//! Postprocess's counter updates: gathered per flow over a run of results and written to the
//! flow's shared counters once.

use super::*;

/// Counter updates of one flow, gathered over a run of results and written to the shared
/// atomics once.
#[derive(Default)]
pub(super) struct Accumulator {
    pub(super) flow: Option<FlowId>,
    /// Whether any of the counters of loss, recovery and ECN moved (most runs move none).
    pub(super) rare: bool,
    pub(super) rx_segments: u64,
    pub(super) rx_bytes: u64,
    pub(super) acked: u64,
    pub(super) ecn: u64,
    pub(super) dup_acks: u64,
    pub(super) fast: u64,
    pub(super) recovery: u64,
    pub(super) tlp: u64,
    pub(super) timeout: u64,
    pub(super) ooo: u64,
    pub(super) rtt_sum: u64,
    pub(super) rtt_n: u64,
    pub(super) tx_segments: u64,
    pub(super) tx_bytes: u64,
    pub(super) in_flight: u32,
    pub(super) unsent: u32,
    pub(super) zero: bool,
    pub(super) stamp: u32,
}

impl Accumulator {
    /// Publish what the run of results of one flow moved (nothing when no run is open).
    #[inline(always)]
    pub(super) fn flush(
        &mut self,
        flows: &[Option<FlowView>],
        now: Instant,
        sole: bool,
        with_control: bool,
    ) {
        if let Some(flow) = self.flow.take() {
            self.flush_flow(flow, flows, now, sole, with_control);
        }
    }

    #[inline(never)]
    fn flush_flow(
        &mut self,
        flow: FlowId,
        flows: &[Option<FlowView>],
        now: Instant,
        sole: bool,
        with_control: bool,
    ) {
        if let Some(v) = flows.get(flow as usize).and_then(Option::as_ref) {
            let c = &v.counters;
            // When it happened, for the control plane's timers (which look at the counters
            // only every timer tick): stored before the counts, and published with them
            // (the control plane fences after reading a count).
            // Replicas whose clocks were read at different moments may finish a flow's
            // bursts in either order: the later time stays.
            for (at, happened) in [
                (&c.last_ack_us, self.acked > 0),
                (&c.last_rx_us, self.rx_segments > 0),
            ] {
                if !happened {
                    continue;
                }
                if sole {
                    at.store(now.micros(), Ordering::Relaxed);
                } else {
                    at.fetch_max(now.micros(), Ordering::Relaxed);
                }
            }
            std::sync::atomic::fence(Ordering::Release);
            let add = |counter: &AtomicU64, n: u64| {
                if n > 0 {
                    if sole {
                        FlowCounters::add_sole(counter, n);
                    } else {
                        FlowCounters::add(counter, n);
                    }
                }
            };
            add(&c.rx_segments, self.rx_segments);
            add(&c.rx_bytes, self.rx_bytes);
            add(&c.acked_bytes, self.acked);
            add(&c.tx_segments, self.tx_segments);
            add(&c.tx_bytes, self.tx_bytes);
            if self.rare {
                self.flush_rare(c, sole);
            }
            if self.rtt_n > 0 {
                if sole {
                    c.add_rtt_sole(self.rtt_sum, self.rtt_n);
                } else {
                    c.add_rtt(self.rtt_sum, self.rtt_n);
                }
            }

            c.publish_send_state(self.stamp, self.in_flight, self.unsent, self.zero, sole);
            if self.in_flight > 0 || self.unsent > 0 {
                if with_control {
                    c.arm_timers_in_order();
                } else {
                    c.arm_timers();
                }
            }
        }
        *self = Accumulator::default();
    }

    /// The loss, recovery and ECN counters (out of line: most runs move none).
    #[cold]
    #[inline(never)]
    fn flush_rare(&self, c: &FlowCounters, sole: bool) {
        for (counter, n) in [
            (&c.ecn_bytes, self.ecn),
            (&c.dup_acks, self.dup_acks),
            (&c.fast_retransmits, self.fast),
            (&c.recovery_retransmits, self.recovery),
            (&c.tail_probes, self.tlp),
            (&c.timeout_retransmits, self.timeout),
            (&c.ooo_segments, self.ooo),
        ] {
            if n > 0 {
                if sole {
                    FlowCounters::add_sole(counter, n);
                } else {
                    FlowCounters::add(counter, n);
                }
            }
        }
    }
}
