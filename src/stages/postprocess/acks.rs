//! Postprocess's ACK decisions: which coalescable ACK of a burst goes out, and the timers of
//! delayed ACKs ([`AckPolicy::Delayed`]; the protocol stage decides which ACK waits).

use super::*;

/// A flow's delayed-ACK timer state ([`AckPolicy::Delayed`]).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct AckState {
    /// In-order payload bytes received since the flow last sent a segment.
    pub(super) unacked: u32,
    /// When the pending ACK is due.
    pub(super) due: Option<Instant>,
}

/// Per flow in a burst: the last coalescable ACK and the last segment sent.
#[derive(Clone, Copy, Debug)]
pub(super) struct LastTx {
    pub(super) flow: FlowId,
    pub(super) ack: usize,
    pub(super) tx: usize,
}

impl Postprocess {
    /// Whether the coalescable ACK of item `i` goes out: it is the flow's last in the burst
    /// and no later segment of the flow carries it. (Under [`AckPolicy::Delayed`] the
    /// protocol stage has already left out the ACKs that wait.)
    pub(super) fn coalesced_ack_goes(&self, r: &ProtoResult, i: usize) -> bool {
        self.last
            .iter()
            .find(|l| l.flow == r.flow)
            .is_some_and(|l| l.ack == i && l.tx == i)
    }

    /// Set flow `flow`'s delayed-ACK due time to `due` and tell the control plane's timers,
    /// which send the ACK then.
    fn arm_delayed(&mut self, flow: FlowId, due: Instant) {
        if let Some(st) = self.acks.get_mut(flow as usize) {
            st.due = Some(due);
        }
        if let Some(v) = self.flows.get(flow as usize).and_then(Option::as_ref) {
            v.counters
                .ack_due
                .store(due.micros().saturating_add(1), Ordering::Relaxed);
            if self.with_control {
                v.counters.arm_timers_in_order();
            } else {
                v.counters.arm_timers();
            }
        }
    }

    /// Delayed-ACK bookkeeping for one item (under [`AckPolicy::Delayed`] only): data
    /// received raises the count; a segment that went out (`carried`) carries the ACK and
    /// clears it. An ACK still owed after the item always has a timer: at once where a
    /// segment that should have carried it (`wanted`) could not be built (no frame), else
    /// after the delay where none is set (the segments that would have carried it did not
    /// go).
    pub(super) fn track_delayed(
        &mut self,
        now: Instant,
        r: &ProtoResult,
        wanted: bool,
        carried: bool,
    ) {
        let AckPolicy::Delayed(delay) = self.policy else {
            return;
        };
        let Some(st) = self.acks.get_mut(r.flow as usize) else {
            return;
        };
        let bytes = r.in_order_bytes();
        if carried {
            let pending = st.due.take();
            st.unacked = 0;
            if let Some(due) = pending {
                // Clear only the due time this stage set.
                if let Some(v) = self.flows.get(r.flow as usize).and_then(Option::as_ref) {
                    let mine = due.micros().saturating_add(1);
                    let at = &v.counters.ack_due;
                    if self.with_control {
                        // The timers run on this thread, between this stage's calls: no
                        // store of theirs can come between the load and the store.
                        if at.load(Ordering::Relaxed) == mine {
                            at.store(0, Ordering::Relaxed);
                        }
                    } else {
                        let _ = at.compare_exchange(mine, 0, Ordering::Relaxed, Ordering::Relaxed);
                    }
                }
            }
            return;
        }
        st.unacked = st.unacked.saturating_add(bytes);
        if wanted {
            self.arm_delayed(r.flow, now);
        } else if st.unacked > 0 && st.due.is_none_or(|d| now >= d) {
            // None set, or one past whose ACK did not go (a stage dropped it, the flow was
            // frozen): armed again.
            self.arm_delayed(r.flow, now + delay);
        }
    }
}
