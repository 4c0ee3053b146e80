//! Notify: tell the application and the control plane what the protocol results mean.
//!
//! Results are processed in protocol order, so per-connection notifications are in order.
//! The application is woken (and gets [`EventKind`]s on its context)
//! when data arrives, TX space is freed or the peer closes; the control plane gets the events
//! that move a connection's state: FIN received, FIN acknowledged, RST sent.

use std::sync::Arc;

use super::{Actions, ProtoResult};
use crate::flow::FlowId;
use crate::host::{ConnShared, EventKind};
use crate::pipeline::hooks::{Hook, HookCx, Results, Verdicts};
use crate::stats::StageStats;
use crate::time::Instant;

/// A connection event for the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlEvent {
    /// The flow.
    pub flow: FlowId,
    /// Which connection of the flow id: its incarnation
    /// ([`FlowIdentity::incarnation`](crate::flow::FlowIdentity::incarnation)), from the
    /// result's [`stamp`](crate::stages::ProtoResult::stamp); 0 for a result of no flow. The
    /// control plane ignores an event of an earlier connection whose id it has given to a
    /// new one.
    pub incarnation: u8,
    /// The result's `Actions`; one of `FIN_RX`, `FIN_ACKED`, `RST_TX`, `RST_RX`, `FIN_TX`,
    /// `TIMEOUT_RETRANSMIT`, `CHALLENGE_ACK` or `FROZEN` made it an event. An ACK of new
    /// data makes none: the timers see it in the flow's counters (`acked_bytes`,
    /// `last_ack_us`), which postprocess publishes once a run of results.
    pub actions: Actions,
    /// With `FROZEN`: where the connection stopped.
    pub frozen: Frozen,
}

/// Where a connection frozen for a splice stopped ([`ControlEvent::frozen`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frozen {
    /// SND.NXT.
    pub snd_nxt: u32,
    /// RCV.NXT.
    pub rcv_nxt: u32,
    /// The sequence space sent and not acknowledged.
    pub in_flight: u32,
    /// The peer's last timestamp value (TS.Recent; 0 without timestamps).
    pub ts_recent: u32,
    /// The window last offered to the peer from RCV.NXT, as the window field gives it
    /// (shifted right by the connection's receive scale, rounded up): the most the peer may
    /// send past RCV.NXT.
    pub window: u16,
    /// The connection holds data past RCV.NXT that it SACKed to the peer: a splice would
    /// drop it, and the peer, taking it as delivered, would send it again only after a
    /// timeout (RFC 2018 reneging). The control plane refuses the splice as not quiet.
    pub sacked: bool,
}

/// The notify stage.
#[derive(Default)]
pub struct Notify {
    flows: Vec<Option<Arc<ConnShared>>>,
    events: Vec<ControlEvent>,
    stats: StageStats,
}

/// The actions that make a result an event for the control plane. Not `ACKED`: an ACK of
/// new data is what nearly every result of a busy connection carries, and the timers read
/// it from the flow's counters when they look at the connection (an event each would cost
/// the data path a push and the control plane a visit per segment).
const CONTROL_BITS: u32 = Actions::FIN_RX
    | Actions::FIN_ACKED
    | Actions::RST_TX
    | Actions::FIN_TX
    | Actions::TIMEOUT_RETRANSMIT
    | Actions::RST_RX
    | Actions::CHALLENGE_ACK
    | Actions::FROZEN;

impl Notify {
    /// An empty notify stage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Install a flow's application side.
    pub fn install(&mut self, id: FlowId, conn: Arc<ConnShared>) {
        let i = id as usize;
        if self.flows.len() <= i {
            self.flows.resize(i + 1, None);
        }
        self.flows[i] = Some(conn);
    }

    /// Remove a flow.
    pub fn remove(&mut self, id: FlowId) {
        if let Some(f) = self.flows.get_mut(id as usize) {
            *f = None;
        }
    }

    /// Tell `flow`'s application what a run of its results did (`a`: their actions
    /// together): one wake-up and one event of each kind for the run, not one per result.
    fn notify(&mut self, flow: FlowId, a: Actions) {
        let Some(conn) = self.flows.get(flow as usize).and_then(Option::as_ref) else {
            return;
        };
        if a.any(Actions::FIN_RX) {
            // Posts readable and wakes the application.
            conn.set_rx_fin();
            if a.any(Actions::RELEASE_TX) {
                conn.post(EventKind::Writable);
            }
        } else {
            if a.any(Actions::PUBLISH_RX) {
                conn.post(EventKind::Readable);
            }
            if a.any(Actions::RELEASE_TX) {
                conn.post(EventKind::Writable);
            }
            conn.waiter.wake();
        }
        self.stats.items_out += 1;
    }
}

impl Notify {
    /// Process a burst without consuming it (the inline runtime's path).
    pub fn process_slice(
        &mut self,
        _now: Instant,
        items: &[ProtoResult],
        output: &mut Vec<ControlEvent>,
    ) {
        self.scan(items, Some(output));
    }

    /// Tell each flow's application what its results did; the control plane's events go
    /// to `output`, or (`None`) wait in the stage.
    fn scan(&mut self, items: &[ProtoResult], mut output: Option<&mut Vec<ControlEvent>>) {
        self.stats.bursts += 1;
        self.stats.items_in += items.len() as u64;
        // Consecutive results of one flow (a burst's segments) are told together, after
        // placement has published all of their data.
        let mut run: Option<(FlowId, Actions)> = None;
        for r in items {
            if r.actions.any(Actions::NOTIFY_APP) {
                match &mut run {
                    Some((flow, acc)) if *flow == r.flow => acc.0 |= r.actions.0,
                    _ => {
                        if let Some((flow, acc)) = run.take() {
                            self.notify(flow, acc);
                        }
                        run = Some((r.flow, r.actions));
                    }
                }
            }
            if r.actions.any(CONTROL_BITS) {
                let e = ControlEvent {
                    flow: r.flow,
                    incarnation: (r.stamp >> 24) as u8,
                    actions: r.actions,
                    frozen: Frozen {
                        snd_nxt: r.hdr.seq,
                        rcv_nxt: r.hdr.ack,
                        in_flight: r.in_flight,
                        ts_recent: r.hdr.ts_ecr,
                        window: r.hdr.win,
                        sacked: !r.hdr.sack.is_empty(),
                    },
                };
                match output.as_deref_mut() {
                    Some(out) => out.push(e),
                    None => self.events.push(e),
                }
            }
        }
        if let Some((flow, acc)) = run {
            self.notify(flow, acc);
        }
    }
}

/// Notify looks at the protocol stage's results through the same interface as a user stage
/// at the `results` hook point; the control plane's events wait in the stage until taken
/// ([`Notify::take_events`]).
impl Hook<Results> for Notify {
    fn name(&self) -> &'static str {
        "notify"
    }

    fn process(&mut self, _cx: &HookCx<'_>, items: &mut [ProtoResult], _v: &mut Verdicts) {
        // The events stay where they are (taking the vector out and putting it back costs
        // a stalled reload of it in every burst).
        self.scan(items, None);
    }
}

impl Notify {
    /// Move the control-plane events of the results processed so far to `out`.
    pub fn take_events(&mut self, out: &mut Vec<ControlEvent>) {
        out.append(&mut self.events);
    }

    /// Counters.
    pub fn stats(&self) -> &StageStats {
        &self.stats
    }
}
