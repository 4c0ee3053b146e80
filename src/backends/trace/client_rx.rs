//! What the port takes from the engine (`Port::send`): the few header fields it needs, read
//! at fixed offsets; SYN, RST and FIN segments fully parsed.

use super::conn::segment_start;
use super::stats::ConnPhase;
use super::TracePort;
use crate::time::Instant;
use crate::wire::{flags, parse_frame, Parsed, ETH_HDR, IP_HDR, TCP_HDR};

impl TracePort {
    /// Read what a frame from the engine says.
    pub(super) fn absorb(&mut self, now: Instant, d: &[u8]) {
        if d.len() < ETH_HDR + IP_HDR + TCP_HDR || d[12..14] != [0x08, 0x00] || d[23] != 6 {
            self.stats.unexpected += 1;
            return;
        }
        let be16 = |i: usize| u16::from_be_bytes([d[i], d[i + 1]]);
        let be32 = |i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
        let ihl = usize::from(d[ETH_HDR] & 0x0f) * 4;
        let total = usize::from(be16(ETH_HDR + 2));
        if ihl < IP_HDR || total < ihl + TCP_HDR || d.len() < ETH_HDR + total {
            self.stats.unexpected += 1;
            return;
        }
        let t = ETH_HDR + ihl;
        let i = usize::from(be16(t + 2).wrapping_sub(self.cfg.client_port_base));
        if i >= self.conns.len()
            || be16(t) != self.cfg.server_port
            || d[ETH_HDR + 16..ETH_HDR + 20] != self.cfg.client_ip.octets()
        {
            self.stats.unexpected += 1;
            return;
        }
        let fl = d[t + 13];
        let thl = usize::from(d[t + 12] >> 4) * 4;
        if fl & (flags::SYN | flags::RST | flags::FIN) != 0 || thl < TCP_HDR || ihl + thl > total {
            self.slow(i, now, d);
            return;
        }
        if self.conns[i].phase != ConnPhase::Established || fl & flags::ACK == 0 {
            self.stats.unexpected += 1;
            return;
        }
        let payload = (total - ihl - thl) as u32;
        self.on_ack(i, now, be32(t + 8), be16(t + 14), payload == 0);
        if payload > 0 {
            self.on_data(i, be32(t + 4), payload);
        }
    }

    /// SYN, RST and FIN segments, and anything malformed: fully parsed and verified.
    pub(super) fn slow(&mut self, i: usize, now: Instant, d: &[u8]) {
        let Ok(Parsed::Tcp(t)) = parse_frame(d) else {
            self.stats.unexpected += 1;
            return;
        };
        let s = t.summary;
        let c = &mut self.conns[i];
        if s.has(flags::RST) {
            let valid = match c.phase {
                ConnPhase::Established => true,
                ConnPhase::SynSent => s.has(flags::ACK) && s.ack == c.isn.wrapping_add(1),
                ConnPhase::Idle | ConnPhase::Reset => false,
            };
            if valid {
                c.phase = ConnPhase::Reset;
                c.dirty = true;
                self.stats.resets += 1;
            } else {
                self.stats.unexpected += 1;
            }
            return;
        }
        if s.has(flags::SYN) {
            let acks_syn = s.has(flags::ACK) && s.ack == c.isn.wrapping_add(1);
            match c.phase {
                ConnPhase::SynSent if acks_syn => {
                    c.irs = s.seq;
                    c.rcv_nxt = s.seq.wrapping_add(1);
                    c.acked = c.rcv_nxt;
                    c.ack_due = true;
                    c.shift = t.options.window_scale.unwrap_or(0).min(14);
                    // Windows in SYN segments are never scaled.
                    c.right = u64::from(s.win);
                    c.progress_at = now;
                    c.phase = ConnPhase::Established;
                    c.dirty = true;
                    self.server_mss = self.server_mss.min(t.options.mss.unwrap_or(536).max(64));
                    self.stats.handshakes_done += 1;
                }
                // Our final ACK went missing: the server sent its SYN-ACK again.
                ConnPhase::Established if acks_syn && s.seq == c.irs => c.ack_due = true,
                _ => self.stats.unexpected += 1,
            }
            return;
        }
        if c.phase != ConnPhase::Established || !s.has(flags::ACK) {
            self.stats.unexpected += 1;
            return;
        }
        let len = u32::from(s.payload_len);
        self.on_ack(i, now, s.ack, s.win, false);
        if len > 0 {
            self.on_data(i, s.seq, len);
        }
        if s.has(flags::FIN) {
            self.stats.fins += 1;
            let c = &mut self.conns[i];
            if s.seq.wrapping_add(len) == c.rcv_nxt {
                c.rcv_nxt = c.rcv_nxt.wrapping_add(1);
            }
            c.ack_due = true;
        }
    }

    /// An ACK with window `win` (raw).
    pub(super) fn on_ack(&mut self, i: usize, now: Instant, ack: u32, win: u16, pure: bool) {
        let c = &mut self.conns[i];
        let d = ack.wrapping_sub(c.seq_of(c.una));
        if d >= 1 << 31 {
            // Older than what was already acknowledged (reordered): nothing new.
            return;
        }
        let d = u64::from(d);
        if d > c.max - c.una {
            self.stats.unexpected += 1;
            return;
        }
        let right = c.una + d + (u64::from(win) << c.shift);
        if d > 0 {
            c.una += d;
            c.bytes_delivered += d;
            self.stats.bytes_delivered += d;
            c.dup = 0;
            c.progress_at = now;
            c.dirty = true;
            if c.nxt < c.una {
                // A go-back-N resend was overtaken by ACKs of the first transmission.
                c.seek(c.una, &self.tpl);
            }
            if c.una < c.recover {
                if c.rexmit.is_some() || c.nxt < c.max {
                    // Still sending the recovery's first retransmission, or going back N.
                } else {
                    // A partial ACK: the next hole.
                    c.rexmit = Some(segment_start(c.una, &self.tpl));
                    self.stats.retransmits += 1;
                }
            }
        } else if pure && c.una < c.max && right == c.right {
            self.stats.dup_acks += 1;
            if c.una >= c.recover {
                c.dup += 1;
            }
            if c.dup == 3 {
                c.fast_retransmit(&self.tpl);
                c.progress_at = now;
                self.stats.retransmits += 1;
            }
        }
        if right != c.right {
            if right > c.right {
                c.progress_at = now;
            }
            c.right = right;
        }
    }

    /// `len` bytes of server data at `seq`.
    pub(super) fn on_data(&mut self, i: usize, seq: u32, len: u32) {
        let c = &mut self.conns[i];
        let behind = c.rcv_nxt.wrapping_sub(seq);
        if behind >= len {
            // A duplicate (behind < 2^31) or beyond a gap: ACK what we have.
            self.stats.out_of_order += 1;
            c.ack_due = true;
            return;
        }
        let new = u64::from(len - behind);
        c.rcv_nxt = c.rcv_nxt.wrapping_add(len - behind);
        c.rcv_bytes += new;
        c.dirty = true;
        self.stats.response_bytes += new;
        if let Some(r) = self.rpc {
            let done = c.rcv_bytes / r.response;
            self.stats.responses += done - c.responses;
            c.responses = done;
        }
    }
}
