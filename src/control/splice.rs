//! The control plane's part of splicing ([`crate::stages::ext::splice`]): freeze both
//! connections in the protocol stage, check from their exact sequence numbers that nothing
//! is left in flight or unread, install the two directions' rewrites, forget the
//! connections (no FIN, no RST), and later remove the splice once it has ended.

use std::collections::HashSet;
use std::sync::Arc;

use super::*;
use crate::stages::ext::splice::{SpliceDir, SpliceError, SpliceRequest, SpliceState, SpliceTable};
use crate::stages::notify::Frozen;

/// How long a pending splice may wait for both connections to freeze.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an ended splice still relays (retransmitted FINs, the last ACKs).
const LINGER: Duration = Duration::from_secs(2);
/// How long a splice that relayed a RST in the window (not exact) relays on once quiet
/// (Linux's conntrack keeps such a connection 10 s).
const RST_LINGER: Duration = Duration::from_secs(10);
/// How often the splices in force are looked at (their deadlines are seconds apart; a
/// walk over every splice on each timer tick cost as much as the splices are many).
const SWEEP: Duration = Duration::from_millis(100);
/// A splice with no frame for this long is removed (Linux's established conntrack
/// timeout: well beyond the 2 hours of a keep-alive).
const IDLE: Duration = Duration::from_secs(5 * 24 * 3600);

struct Pending {
    req: SpliceRequest,
    ids: [FlowId; 2],
    /// The connections' incarnations when they were asked to freeze: a connection reset
    /// meanwhile may have given its id to another, which no thaw or splice may touch.
    incarnations: [u8; 2],
    frozen: [Option<Frozen>; 2],
    since: Instant,
}

impl Pending {
    /// Thaw both connections (the splice did not happen).
    fn thaw(&self, out: &mut ControlOutput) {
        for (&flow, &incarnation) in self.ids.iter().zip(&self.incarnations) {
            out.work.push(ProtoWork::Thaw { flow, incarnation });
        }
    }
}

struct Active {
    table: SpliceTable,
    keys: [(Ipv4Addr, u16, Ipv4Addr, u16); 2],
    tuples: [FourTuple; 2],
    /// Ephemeral ports to give back when the splice ends.
    ports: Vec<u16>,
    state: Arc<SpliceState>,
    started: Instant,
}

/// Splices being set up and in force.
#[derive(Default)]
pub(super) struct Splices {
    pending: Vec<Pending>,
    active: Vec<Active>,
    /// Tuples of spliced connections: segments of theirs that reach the control plane
    /// (in flight when the splice began) are dropped, never answered with a RST.
    tuples: HashSet<FourTuple>,
    /// When the splices in force are next looked at.
    next_sweep: Instant,
}

impl Splices {
    pub(super) fn is_spliced(&self, t: &FourTuple) -> bool {
        self.tuples.contains(t)
    }
}

impl Control {
    /// An application asked to splice two connections: freeze them.
    pub(super) fn start_splice(
        &mut self,
        now: Instant,
        req: SpliceRequest,
        out: &mut ControlOutput,
    ) {
        if self.splices.active.len() + self.splices.pending.len() >= self.cfg.max_splices {
            let _ = req.reply.send(Err(SpliceError::TableFull));
            return;
        }
        let mut ids = [0; 2];
        for (k, (conn, _, _)) in req.sides.iter().enumerate() {
            let ok = conn.flow().and_then(|id| {
                let c = self.conns.get(id as usize)?.as_ref()?;
                let busy = self.splice_pending(id);
                (Arc::ptr_eq(&c.conn, conn) && !busy).then_some((id, c))
            });
            let Some((id, c)) = ok else {
                let _ = req.reply.send(Err(SpliceError::NotConnected));
                return;
            };
            if c.state != TcpConnState::Established || c.orphan || c.fin_seen {
                let _ = req.reply.send(Err(SpliceError::NotQuiet));
                return;
            }
            ids[k] = id;
        }
        if ids[0] == ids[1] {
            let _ = req.reply.send(Err(SpliceError::NotConnected));
            return;
        }
        let (a, b) = match (&self.conns[ids[0] as usize], &self.conns[ids[1] as usize]) {
            (Some(a), Some(b)) => (a, b),
            _ => return,
        };
        // Each side's segments must fit the other: the options match, and what a peer may
        // send us (our MSS less its options) fits what we may send the other peer.
        let (ia, ib) = (&a.identity, &b.identity);
        let ts = |i: &FlowIdentity| {
            if i.timestamps {
                wire::TS_OPT_LEN as u16
            } else {
                0
            }
        };
        let ours = self.our_mss();
        let compatible = ia.timestamps == ib.timestamps
            && a.sack == b.sack
            && a.ecn == b.ecn
            && ib.mss >= ours.saturating_sub(ts(ia))
            && ia.mss >= ours.saturating_sub(ts(ib));
        if !compatible {
            let _ = req.reply.send(Err(SpliceError::Incompatible));
            return;
        }
        for id in ids {
            out.work.push(ProtoWork::Freeze {
                flow: id,
                incarnation: incarnation_of(&self.incarnations, id),
            });
        }
        self.splices.pending.push(Pending {
            req,
            ids,
            incarnations: ids.map(|id| incarnation_of(&self.incarnations, id)),
            frozen: [None; 2],
            since: now,
        });
    }

    /// Whether flow `id` belongs to a pending splice (frozen, or asked to freeze).
    pub(super) fn splice_pending(&self, id: FlowId) -> bool {
        self.splices.pending.iter().any(|p| p.ids.contains(&id))
    }

    /// A flow froze: when both of a splice have, splice them or thaw them. Returns whether
    /// the flow belongs to a pending splice.
    pub(super) fn splice_frozen(
        &mut self,
        now: Instant,
        id: FlowId,
        at: Frozen,
        out: &mut ControlOutput,
    ) -> bool {
        let Some(i) = self
            .splices
            .pending
            .iter()
            .position(|p| p.ids.contains(&id))
        else {
            return false;
        };
        let p = &mut self.splices.pending[i];
        let k = usize::from(p.ids[1] == id);
        p.frozen[k] = Some(at);
        if p.frozen.iter().any(Option::is_none) {
            return true;
        }
        let p = self.splices.pending.swap_remove(i);
        let quiet = (0..2).all(|k| {
            let f = p.frozen[k].unwrap_or_default();
            let (_, written, read) = &p.req.sides[k];
            let same = incarnation_of(&self.incarnations, p.ids[k]) == p.incarnations[k];
            self.conns[p.ids[k] as usize].as_ref().is_some_and(|c| {
                same && f.in_flight == 0
                    && !f.sacked
                    && f.snd_nxt == c.iss.wrapping_add(1).wrapping_add(*written as u32)
                    && f.rcv_nxt == c.irs.wrapping_add(1).wrapping_add(*read as u32)
            })
        });
        if !quiet {
            p.thaw(out);
            let _ = p.req.reply.send(Err(SpliceError::NotQuiet));
            return true;
        }
        self.install_splice(now, p, out);
        true
    }

    fn install_splice(&mut self, now: Instant, p: Pending, out: &mut ControlOutput) {
        let (Some(a), Some(b)) = (
            &self.conns[p.ids[0] as usize],
            &self.conns[p.ids[1] as usize],
        ) else {
            p.thaw(out);
            let _ = p.req.reply.send(Err(SpliceError::NotConnected));
            return;
        };
        // The application learns of the splice before the connections go: if it gave up
        // waiting (it claimed the request first, or its end of the channel is gone),
        // nothing happens and they thaw.
        if !p.req.take() || p.req.reply.send(Ok(())).is_err() {
            p.thaw(out);
            return;
        }
        let side = [a, b];
        let seqs = [
            p.frozen[0].unwrap_or_default(),
            p.frozen[1].unwrap_or_default(),
        ];
        // What each side may send before the other's first ACK through the splice: the
        // window the engine last offered it (a FIN or RST farther off is a spoofer's).
        let most = |k: usize| u32::from(seqs[k].window) << side[k].identity.rcv_wscale.min(14);
        let state = Arc::new(SpliceState::new(
            [seqs[0].rcv_nxt, seqs[1].rcv_nxt],
            [most(0), most(1)],
        ));
        for d in 0..2 {
            if side[d].identity.timestamps {
                // The timestamp shift of each direction is fixed now, from the peer's value
                // the engine echoes (TS.Recent: the last one, or one an ACK interval
                // older), not by the first frame relayed (a spoofer's, with a value
                // far ahead, would have made the other peer's PAWS drop every real one).
                let offset = self.secrets.ts_offset(&side[1 - d].identity.tuple);
                let ours = (now.millis() as u32).wrapping_add(offset);
                state.latch_ts(d, ours, seqs[d].ts_recent);
            }
        }
        let mut keys = [(Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::UNSPECIFIED, 0); 2];
        for d in 0..2 {
            let (from, to) = (&side[d].identity, &side[1 - d].identity);
            let (from_seq, to_seq) = (seqs[d], seqs[1 - d]);
            let ft = &from.tuple;
            keys[d] = (ft.remote_ip, ft.remote_port, ft.local_ip, ft.local_port);
            p.req.table.insert(
                keys[d],
                SpliceDir {
                    dir: d,
                    src_mac: to.local_mac,
                    dst_mac: to.remote_mac,
                    src_ip: to.tuple.local_ip,
                    dst_ip: to.tuple.remote_ip,
                    sport: to.tuple.local_port,
                    dport: to.tuple.remote_port,
                    // The peer's bytes continue the stream we were sending the other peer;
                    // its acknowledgements acknowledge what the other peer sent.
                    seq_delta: to_seq.snd_nxt.wrapping_sub(from_seq.rcv_nxt),
                    ack_delta: to_seq.rcv_nxt.wrapping_sub(from_seq.snd_nxt),
                    in_shift: from.snd_wscale,
                    out_shift: to.rcv_wscale,
                    out_ts_offset: self.secrets.ts_offset(&to.tuple),
                    state: state.clone(),
                },
            );
        }
        let tuples = [side[0].tuple, side[1].tuple];
        let mut ports = Vec::new();
        for id in p.ids {
            if let Some(c) = self.conns.get_mut(id as usize).and_then(Option::take) {
                self.by_tuple.remove(&c.tuple);
                self.free_ids.push(id);
                self.retired.add(&c.counters);
                if let Some(r) = self.rates.as_mut() {
                    r.driver.close(id);
                }
                if c.ephemeral {
                    ports.push(c.tuple.local_port);
                }
                c.conn.retire_doorbell();
                c.conn.set_status(ConnStatus::Spliced);
                out.removals.push((id, c.tuple));
            }
        }
        for t in tuples {
            self.splices.tuples.insert(t);
        }
        self.stats.spliced += 1;
        self.splices.active.push(Active {
            table: p.req.table.clone(),
            keys,
            tuples,
            ports,
            state,
            started: Instant::ZERO,
        });
    }

    /// Give up on splices whose connections did not freeze; remove splices that ended.
    pub(super) fn poll_splices(&mut self, now: Instant, out: &mut ControlOutput) {
        let mut i = 0;
        while i < self.splices.pending.len() {
            if now.saturating_since(self.splices.pending[i].since) < FREEZE_TIMEOUT {
                i += 1;
                continue;
            }
            let p = self.splices.pending.swap_remove(i);
            p.thaw(out);
            let _ = p.req.reply.send(Err(SpliceError::NoAnswer));
        }
        if now < self.splices.next_sweep {
            return;
        }
        self.splices.next_sweep = now + SWEEP;
        let now_ms = now.millis();
        let mut i = 0;
        while i < self.splices.active.len() {
            let a = &mut self.splices.active[i];
            if a.started == Instant::ZERO {
                a.started = now;
            }
            let last = a.state.last_ms.load(std::sync::atomic::Ordering::Relaxed);
            let quiet_for =
                Duration::from_millis(now_ms.saturating_sub(last.max(a.started.millis())));
            let done = (a.state.ended() && quiet_for >= LINGER)
                || (a.state.rst_seen() && quiet_for >= RST_LINGER)
                || quiet_for >= IDLE;
            if !done {
                i += 1;
                continue;
            }
            let a = self.splices.active.swap_remove(i);
            a.table.remove(&a.keys);
            for t in &a.tuples {
                self.splices.tuples.remove(t);
            }
            for port in a.ports {
                self.host.release_port(port);
            }
        }
    }

    /// The earliest time a splice needs the control plane.
    pub(super) fn splice_deadline(&self) -> Option<Instant> {
        let pending = self
            .splices
            .pending
            .iter()
            .map(|p| p.since + FREEZE_TIMEOUT);
        // Splices in force are looked at on the sweep's beat (not walked here, on every
        // question of the runtime's).
        let active = (!self.splices.active.is_empty()).then_some(self.splices.next_sweep);
        pending.chain(active).min()
    }
}
