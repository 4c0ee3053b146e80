//! What the port gives the engine (`Port::recv`): handshakes, data, retransmissions, ACKs
//! and probes, copied from the pre-built frames.

use super::conn::{segment_start, Block, Rpc};
use super::stats::{ConnPhase, TraceStats};
use super::template::{self, Templates, PHASES};
use super::{Mode, TracePort};
use crate::buf::{Frame, FrameArena};
use crate::time::Instant;

/// A frame from the arena with `write` run on its buffer, pushed onto `out`; `false` (and
/// counted) when the arena is empty.
pub(super) fn push_frame(
    arena: &FrameArena,
    out: &mut Vec<Frame>,
    stats: &mut TraceStats,
    write: impl FnOnce(&mut [u8]) -> usize,
) -> bool {
    let Some(mut f) = arena.alloc() else {
        stats.alloc_failures += 1;
        return false;
    };
    let n = write(arena.buf_mut(&mut f));
    f.set_len(n);
    out.push(f);
    true
}

impl TracePort {
    /// SYNs, their retransmissions and the final ACKs; sets `started` once every connection
    /// is established with its final ACK out (in an earlier call) or reset.
    pub(super) fn handshake(
        &mut self,
        now: Instant,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        max: usize,
    ) {
        let first = out.len();
        let mut settled = true;
        let rto = self.cfg.rto;
        let paused = self.shared.paused();
        for c in self.conns.iter_mut() {
            let room = out.len() - first < max;
            match c.phase {
                ConnPhase::Idle | ConnPhase::SynSent => {
                    settled = false;
                    let retry = c.phase == ConnPhase::SynSent;
                    if !room
                        || (retry && now.saturating_since(c.syn_at) < rto)
                        || (!retry && paused)
                    {
                        continue;
                    }
                    let (addr, port, isn, mss) = (&self.addr, c.port, c.isn, self.cfg.mss);
                    let sent = push_frame(arena, out, &mut self.stats, |buf| {
                        template::emit_syn(addr, port, isn, mss, buf).unwrap_or(0)
                    });
                    if sent {
                        if retry {
                            self.stats.syn_retries += 1;
                        }
                        c.phase = ConnPhase::SynSent;
                        c.syn_at = now;
                        c.dirty = true;
                    }
                }
                ConnPhase::Established if c.ack_due => {
                    settled = false;
                    if !room {
                        continue;
                    }
                    let (tpl, port, seq, ack) = (&self.tpl, c.port, c.seq_of(c.nxt), c.rcv_nxt);
                    if push_frame(arena, out, &mut self.stats, |buf| {
                        tpl.write_ack(buf, port, seq, ack)
                    }) {
                        c.ack_due = false;
                        c.acked = ack;
                    }
                }
                ConnPhase::Established | ConnPhase::Reset => {}
            }
        }
        self.dirty = true;
        if settled {
            self.started = true;
            let (unit, seg) = Self::shape(&self.cfg, self.server_mss);
            if seg as u64 != self.tpl.seg() {
                // The server's MSS is smaller than the segments built: build them again,
                // once, before any data is sent.
                self.tpl = Templates::build(&self.addr, unit, seg);
            }
        }
    }

    /// Data, pure ACKs, timeouts and probes of every connection.
    pub(super) fn data(
        &mut self,
        now: Instant,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        room: usize,
    ) {
        let paused = self.shared.paused();
        let (budget, offered) = match self.cfg.mode {
            Mode::ClosedLoop => (room, None),
            Mode::OpenLoop { frames_per_recv } => {
                (frames_per_recv.min(room), Some(frames_per_recv))
            }
        };
        let first = out.len();
        let n = self.conns.len();
        let mut data_sent = 0;
        for j in 0..n {
            let mut i = self.rr + j;
            if i >= n {
                i -= n;
            }
            let left = room - (out.len() - first);
            data_sent += self.serve(i, now, arena, out, budget - data_sent, left, paused);
        }
        self.rr = if self.rr + 1 >= n { 0 } else { self.rr + 1 };
        if let Some(k) = offered {
            self.stats.offered += k as u64;
            self.stats.refused += (k - data_sent) as u64;
            self.dirty = true;
        }
    }

    /// One connection's share of a `recv` call: at most `budget` data segments and `room`
    /// frames in all. Returns the data segments sent.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn serve(
        &mut self,
        i: usize,
        now: Instant,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        budget: usize,
        room: usize,
        paused: bool,
    ) -> usize {
        let tpl = &self.tpl;
        let stats = &mut self.stats;
        let c = &mut self.conns[i];
        if c.phase != ConnPhase::Established || room == 0 {
            return 0;
        }
        let rto = self.cfg.rto;
        if c.una < c.max && now.saturating_since(c.progress_at) >= rto {
            // Data unacknowledged for a timeout: go back to the first unacknowledged segment.
            c.go_back(tpl);
            c.progress_at = now;
            stats.retransmits += 1;
            self.dirty = true;
        }
        let mut limit = c.right;
        let mut why = Block::Window;
        if c.una == 0 {
            // One segment until the server acknowledges data: in a parallel engine, data
            // right behind the final ACK can reach the flow before it is installed and come
            // back out of order.
            let first = tpl.segment_at(0).0;
            if first < limit {
                limit = first;
                why = Block::FirstAck;
            }
        }
        if let Some(Rpc {
            depth: Some(depth), ..
        }) = self.rpc
        {
            let d = (c.responses + depth) * tpl.unit();
            if d < limit {
                limit = d;
                why = Block::Depth;
            }
        }
        if paused {
            // Finish the request under way (and anything to retransmit), start nothing.
            let r = c.max % tpl.unit();
            let end = if r == 0 {
                c.max
            } else {
                c.max + tpl.unit() - r
            };
            if end < limit {
                limit = end;
                why = Block::Paused;
            }
        }
        let rpc = self.rpc.is_some();
        let mut sent = 0;
        if let Some(off) = c.rexmit.filter(|_| budget > 0) {
            c.rexmit = None;
            // Rare: the divisions here are off the common path.
            let (len, last) = tpl.segment_at(off % tpl.unit());
            if off + len > c.right {
                // Not reached unless the server shrank its window: wait for it to reopen
                // (or for the timeout, which sends everything again).
                c.rexmit = Some(off);
            } else if off >= segment_start(c.una, tpl) && off < c.max {
                let phase = (off % PHASES as u64) as usize;
                let (port, seq, ack) = (c.port, c.seq_of(off), c.rcv_nxt);
                if push_frame(arena, out, stats, |buf| {
                    tpl.write(last, phase, buf, port, seq, ack)
                }) {
                    stats.bytes_sent += len;
                    stats.bytes_retransmitted += len;
                    sent += 1;
                } else {
                    c.rexmit = Some(off);
                }
                self.dirty = true;
            }
        }
        let mut hit = false;
        while sent < budget && sent < room {
            let (len, last) = tpl.segment_at(c.nxt_q);
            if c.nxt + len > limit {
                // A new stall when the connection sent since it last stalled, or stalls
                // for another reason.
                if sent > 0 || c.blocked != why {
                    match why {
                        Block::Window => stats.window_stalls += 1,
                        Block::Depth => stats.depth_stalls += 1,
                        Block::Paused | Block::FirstAck | Block::None => {}
                    }
                    self.dirty = true;
                }
                c.blocked = why;
                hit = true;
                break;
            }
            let (port, seq, ack, phase) = (c.port, c.seq_of(c.nxt), c.rcv_nxt, c.nxt_phase);
            if !push_frame(arena, out, stats, |buf| {
                tpl.write(last, phase, buf, port, seq, ack)
            }) {
                self.dirty = true;
                break;
            }
            if c.nxt < c.max {
                // Segments start at fixed offsets, so this one was sent whole before.
                stats.bytes_retransmitted += len;
            } else if rpc && last {
                stats.requests += 1;
            }
            c.nxt += len;
            c.nxt_q = if last { 0 } else { c.nxt_q + len };
            c.nxt_phase = (c.nxt_phase + len as usize) % PHASES;
            if c.nxt > c.max {
                c.max = c.nxt;
            }
            stats.bytes_sent += len;
            sent += 1;
        }
        if sent > 0 {
            stats.data_frames += sent as u64;
            c.acked = c.rcv_nxt;
            c.ack_due = false;
            if !hit {
                c.blocked = Block::None;
            }
            return sent;
        }
        let (port, ack) = (c.port, c.rcv_nxt);
        if c.ack_due || c.acked != c.rcv_nxt {
            let seq = c.seq_of(c.nxt);
            if push_frame(arena, out, stats, |buf| tpl.write_ack(buf, port, seq, ack)) {
                stats.pure_acks += 1;
                c.ack_due = false;
                c.acked = ack;
            }
            self.dirty = true;
        } else if c.blocked == Block::Window
            && c.una == c.max
            && now.saturating_since(c.progress_at) >= rto
        {
            // The window stayed closed for a timeout: an ACK with an old sequence number
            // makes the server answer with its current window.
            let seq = c.seq_of(c.nxt).wrapping_sub(1);
            if push_frame(arena, out, stats, |buf| tpl.write_ack(buf, port, seq, ack)) {
                stats.probes += 1;
            }
            c.progress_at = now;
            self.dirty = true;
        }
        0
    }
}
