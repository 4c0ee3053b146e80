//! Data-path events and application doorbells: the connection states around FIN in both
//! directions, resets, and the removal of a finished connection from every stage.

use super::*;

/// What the application did to a connection, for the protocol stage. Two flags, returned
/// in registers: the caller builds the work item where it stays.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AppUpdate {
    /// The application will send no more.
    pub(crate) fin: bool,
    /// The application closed the connection: both its halves.
    pub(crate) closed: bool,
    /// The connection's incarnation (see [`ProtoWork`]).
    pub(crate) incarnation: u8,
}

impl AppUpdate {
    /// The protocol stage's work item for flow `flow`, with the application's ring
    /// positions when the caller owns the rings (else place fills them in).
    #[inline]
    pub(crate) fn work(self, flow: FlowId, positions: Option<(u64, u64)>) -> ProtoWork {
        ProtoWork::App {
            flow,
            positions,
            fin: self.fin,
            closed: self.closed,
            incarnation: self.incarnation,
        }
    }
}

impl Control {
    /// The application changed a connection: returns what the protocol stage's work item
    /// says ([`AppUpdate::work`]), or `None` when the flow is gone. Handles close and abort
    /// requests.
    pub(crate) fn app_update(&mut self, id: FlowId, out: &mut ControlOutput) -> Option<AppUpdate> {
        // Whatever the application did, the timers look at the connection again.
        self.activate_timers(id);
        let c = self.conns.get_mut(id as usize)?.as_mut()?;
        c.conn.clear_doorbell();
        if c.conn.abort_requested() {
            if !c.abort_seen {
                c.abort_seen = true;
                out.work.push(ProtoWork::Reset {
                    flow: id,
                    incarnation: incarnation_of(&self.incarnations, id),
                });
            }
            return None;
        }
        let fin = c.conn.tx_fin();
        if fin && !c.fin_seen {
            c.fin_seen = true;
            c.state = match c.state {
                TcpConnState::Established => TcpConnState::FinWait1,
                TcpConnState::CloseWait => TcpConnState::LastAck,
                s => s,
            };
        }
        // Closed: both halves. A dropped `ReadHalf` alone arms no RST for the peer's data
        // while the write half may still send (its queued data would go with the RST).
        let closed = c.conn.rx_closed() && fin;
        if closed && c.fin_seen && !c.orphan {
            // Nobody holds the connection any more: an orphan, which timers bound.
            c.orphan = true;
            self.orphans += 1;
            if self.orphans > self.cfg.max_orphans {
                // Reset at once: no FIN (nor data still queued) goes out before the RST.
                self.stats.orphans_aborted += 1;
                out.work.push(ProtoWork::Reset {
                    flow: id,
                    incarnation: incarnation_of(&self.incarnations, id),
                });
                return None;
            }
        }
        Some(AppUpdate {
            fin,
            closed,
            incarnation: incarnation_of(&self.incarnations, id),
        })
    }

    /// Apply data-path events.
    pub(crate) fn handle_event(&mut self, now: Instant, ev: ControlEvent, out: &mut ControlOutput) {
        let id = ev.flow;
        // An event of the id's previous connection, still on its way from the data path
        // (the threaded runtime's stages run behind the control plane) when the id was
        // freed and given to a new one: it says nothing of the new connection.
        if ev.incarnation != 0 && self.incarnations.get(id as usize) != Some(&ev.incarnation) {
            self.stats.stale_events += 1;
            return;
        }
        let a = ev.actions;
        if a.any(Actions::FROZEN) && self.splice_frozen(now, id, ev.frozen, out) {
            return;
        }
        self.activate_timers(id);
        let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        if a.any(Actions::CHALLENGE_ACK) {
            self.stats.challenge_acks += 1;
        }
        if a.any(Actions::RST_TX | Actions::RST_RX) {
            self.stats.resets += 1;
            self.finish_conn(id, ConnStatus::Reset, out);
            return;
        }
        let mut st = c.state;
        if a.any(Actions::FIN_RX) {
            st = match st {
                TcpConnState::Established => TcpConnState::CloseWait,
                TcpConnState::FinWait1 if a.any(Actions::FIN_ACKED) => TcpConnState::TimeWait,
                TcpConnState::FinWait1 => TcpConnState::Closing,
                TcpConnState::FinWait2 => TcpConnState::TimeWait,
                s => s,
            };
        }
        if a.any(Actions::FIN_ACKED) {
            st = match st {
                TcpConnState::FinWait1 => TcpConnState::FinWait2,
                TcpConnState::Closing => TcpConnState::TimeWait,
                TcpConnState::LastAck => {
                    c.state = st;
                    self.stats.closed += 1;
                    self.finish_conn(id, ConnStatus::Closed, out);
                    return;
                }
                s => s,
            };
        }
        if st == TcpConnState::TimeWait && c.state != TcpConnState::TimeWait {
            c.time_wait_until = Some(now + self.cfg.time_wait);
            c.conn.set_status(ConnStatus::Closed);
            self.stats.closed += 1;
        }
        c.state = st;
    }

    /// Remove a connection from every stage.
    pub(super) fn finish_conn(&mut self, id: FlowId, status: ConnStatus, out: &mut ControlOutput) {
        let Some(c) = self.conns.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        self.by_tuple.remove(&c.tuple);
        self.free_ids.push(id);
        if c.orphan {
            self.orphans -= 1;
        }
        self.retired.add(&c.counters);
        if let Some(r) = self.rates.as_mut() {
            r.driver.close(id);
        }
        if c.ephemeral {
            self.host.release_port(c.tuple.local_port);
        }
        c.conn.retire_doorbell();
        if matches!(
            c.conn.status(),
            ConnStatus::Connecting | ConnStatus::Established
        ) {
            c.conn.set_status(status);
        }
        out.removals.push((id, c.tuple));
    }
}
