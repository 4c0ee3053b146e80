//! Frames the data path punts: dispatch to the handshake or the connection, RSTs for
//! segments that match nothing, RFC 5961 challenge ACKs, re-injection of reviewed segments.

use super::*;

impl Control {
    /// Handle a frame the data path punted; `ingress` is its arrival number (0 where the
    /// runtime does not number frames).
    pub(crate) fn handle_punt(
        &mut self,
        now: Instant,
        ingress: u64,
        p: Punt,
        out: &mut ControlOutput,
    ) {
        self.stats.punted += 1;
        if p.reason == PuntReason::Icmp {
            self.handle_icmp(now, p.frame, out);
            return;
        }
        let parsed = wire::parse_frame(self.arena.data(&p.frame));
        let seg = match parsed {
            Ok(Parsed::Arp(arp)) => {
                self.arena.free(p.frame);
                self.handle_arp(now, arp, out);
                return;
            }
            Ok(Parsed::Tcp(seg)) => seg,
            Err(r) => {
                self.stats.drops.add(r);
                self.arena.free(p.frame);
                return;
            }
        };
        if let Some(&id) = self.by_tuple.get(&seg.tuple) {
            self.punt_for_flow(ingress, id, seg, p, out);
            return;
        }
        if self.splices.is_spliced(&seg.tuple) {
            // In flight when its connection went into a splice: the sender retransmits it.
            self.arena.free(p.frame);
            self.stats.drops.add(DropReason::Frozen);
            return;
        }
        if self.embryos.contains_key(&seg.tuple) {
            self.punt_for_embryo(now, seg, p.frame, out);
            return;
        }
        if self.martian(seg.tuple.remote_ip) {
            // No connection can have such a source (RFC 1122 3.2.1.3; our own address: a
            // LAND attack): no handshake, no cookie, no RST, which would go to every host
            // of a network, nowhere, or back to us.
            self.arena.free(p.frame);
            self.stats.drops.add(DropReason::MartianSource);
            return;
        }
        let s = &seg.summary;
        if s.has(flags::SYN)
            && !s.has(flags::ACK)
            && self.listeners.contains_key(&seg.tuple.local_port)
        {
            self.arena.free(p.frame);
            self.passive_open(now, seg, out);
            return;
        }
        if s.has(flags::ACK)
            && !s.has(flags::RST)
            && self.cfg.syn_cookies
            && self.listeners.contains_key(&seg.tuple.local_port)
        {
            if let Some(e) = self.cookie_embryo(now, &seg) {
                if self
                    .listeners
                    .get(&seg.tuple.local_port)
                    .is_some_and(|l| l.accept_tx.len() >= l.backlog)
                {
                    // Connections wait for the application: this one is not made (nor
                    // installed and reset); the peer sends again (as Linux).
                    self.arena.free(p.frame);
                    self.stats.drops.add(DropReason::BacklogFull);
                    return;
                }
                if self.flows_committed() >= self.cfg.max_flows {
                    // The flows left are promised (connections in their handshakes or
                    // waiting for ARP): refused, as a SYN would be now, not installed in a
                    // flow one of them then finds taken.
                    self.arena.free(p.frame);
                    self.stats.drops.add(DropReason::FlowTableFull);
                    self.reply_rst(now, &seg, out);
                    return;
                }
                self.stats.cookies_accepted += 1;
                let shift = e
                    .peer_wscale
                    .filter(|_| self.cfg.window_scaling)
                    .unwrap_or(0);
                let data = s.payload_len > 0 || s.has(flags::FIN);
                if self.establish(now, seg.tuple, e, (s.win as u32) << shift, out) && data {
                    out.reinject.push(p.frame);
                } else {
                    self.arena.free(p.frame);
                }
                return;
            }
        }
        self.arena.free(p.frame);
        self.stats.drops.add(DropReason::NoConnection);
        // While cookies are out, a listener's segment with data that is no valid cookie
        // may be a cookie connection's later segment that came before its first (the
        // threaded runtime's preprocess replicas punt in parallel, and networks reorder):
        // it gets no RST, which would be exact for the peer (`seq` = its ACK) and reset
        // the connection its first segment is about to make. The peer sends it again.
        let early = s.payload_len > 0
            && self.listeners.contains_key(&seg.tuple.local_port)
            && self.cfg.syn_cookies
            && self.cookies_recent(seg.tuple.local_port, now);
        if !s.has(flags::RST) && !early {
            self.reply_rst(now, &seg, out);
        }
    }

    /// Answer `seg` with a RST (RFC 9293 3.10.7.1), within the rate limit.
    pub(super) fn reply_rst(&mut self, now: Instant, seg: &TcpSegment, out: &mut ControlOutput) {
        if !self.rst_limit.take(now) {
            self.stats.drops.add(DropReason::RateLimited);
            return;
        }
        let s = &seg.summary;
        let seg_len =
            s.payload_len as u32 + u32::from(s.has(flags::SYN)) + u32::from(s.has(flags::FIN));
        let (seq_no, ack, control) = if s.has(flags::ACK) {
            (s.ack, None, TcpControl::Rst)
        } else {
            (0, Some(s.seq.wrapping_add(seg_len)), TcpControl::Rst)
        };
        let repr = TcpRepr {
            src_port: seg.tuple.local_port,
            dst_port: seg.tuple.remote_port,
            control,
            seq_number: TcpSeqNumber(seq_no as i32),
            ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
            window_len: 0,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let ep = self.endpoints(&seg.tuple, seg.src_mac);
        self.stats.rst_sent += 1;
        self.send_tcp(out, ep, repr);
    }

    pub(super) fn punt_for_flow(
        &mut self,
        ingress: u64,
        id: FlowId,
        seg: TcpSegment,
        p: Punt,
        out: &mut ControlOutput,
    ) {
        let s = seg.summary;
        match p.reason {
            PuntReason::Syn => {
                // RFC 5961 4.2: a SYN on a synchronized connection gets a challenge ACK,
                // within the rate limits (section 7): the flow's own, then the protocol
                // stage's budget across flows if one is set, both applied by the stage
                // (which counts a refusal, and a challenge ACK it sends).
                self.arena.free(p.frame);
                out.work.push(ProtoWork::Challenge {
                    flow: id,
                    incarnation: incarnation_of(&self.incarnations, id),
                });
            }
            PuntReason::Rst => {
                // The protocol stage owns rcv_nxt and the window: it decides.
                self.arena.free(p.frame);
                // The challenge ACK it may draw is within the flow's own limit, then the
                // stage's budget across flows if one is set: both applied by the stage,
                // which counts a refusal.
                out.work.push(ProtoWork::Rst {
                    flow: id,
                    incarnation: incarnation_of(&self.incarnations, id),
                    seq: s.seq,
                    challenge: true,
                    ingress,
                });
            }
            PuntReason::UnknownFlow => {
                // Installed since preprocess looked it up: the data path's now.
                out.reinject.push(p.frame);
            }
            // Not TCP: not a flow's (handled before this).
            PuntReason::Arp | PuntReason::Icmp => self.arena.free(p.frame),
            PuntReason::Extension => {
                // The data path's business, which a user stage took away from it.
                self.stats.drops.add(DropReason::Extension);
                self.arena.free(p.frame);
            }
        }
    }
}
