//! ICMP on the control plane: echo requests (ping) answered, within a rate limit;
//! "fragmentation needed" (RFC 1191 path MTU discovery) handed to the connection it names;
//! other destination unreachables and time exceeded end the handshake they name (RFC 5461)
//! or are kept as the error a connection reports if it times out; every other ICMP
//! message dropped and counted.

use super::*;
use crate::wire::icmp::{EchoRequest, FragmentationNeeded, Icmp, Unreachable, UnreachableKind};
use crate::wire::{IP_HDR, TCP_HDR};

impl Control {
    /// Handle an ICMP message the data path punted.
    pub(super) fn handle_icmp(&mut self, now: Instant, frame: Frame, out: &mut ControlOutput) {
        // The arena's own handle: the request borrows from it across `send_frame`.
        let arena = Arc::clone(&self.arena);
        match wire::icmp::parse_icmp(arena.data(&frame)) {
            Ok(Icmp::Echo(req)) => self.echo_reply(now, &req, out),
            Ok(Icmp::FragmentationNeeded(f)) => self.path_mtu(now, &f, out),
            Ok(Icmp::Unreachable(u)) => self.unreachable(&u),
            Err(r) => self.stats.drops.add(r),
        }
        arena.free(frame);
    }

    /// A router's "fragmentation needed" about one of our segments in flight: the
    /// connection's protocol stage checks the quoted sequence number again (against its own
    /// SND.UNA and SND.MAX, which the counters here may trail) and lowers its MSS to what
    /// the path takes (the next hop's MTU less the IPv4 and TCP headers and the
    /// connection's options), sending what was in flight again at once; the
    /// retransmission timer starts over from that resend, as Linux's does.
    fn path_mtu(&mut self, now: Instant, f: &FragmentationNeeded, out: &mut ControlOutput) {
        let Some(&id) = self.by_tuple.get(&f.tuple) else {
            self.stats.drops.add(DropReason::IcmpStale);
            return;
        };
        let frozen = self.splice_pending(id);
        let conn = self.conns.get_mut(id as usize).and_then(Option::as_mut);
        // Leniently (as much again above what is in flight: the counters may trail the
        // protocol stage, which checks exactly): a blind guess is dropped here, before it
        // spends the budget.
        let Some(c) = conn.filter(|c| c.in_flight_holds(f.seq, true)) else {
            self.stats.drops.add(DropReason::IcmpStale);
            return;
        };
        let options = if c.identity.timestamps {
            wire::TS_OPT_LEN as u16
        } else {
            0
        };
        if !self.path_mtu_limit.take(now) {
            self.stats.drops.add(DropReason::RateLimited);
            return;
        }
        // At least 552 - 40 - 12: never below a segment's worth.
        let mss = f.mtu.saturating_sub((IP_HDR + TCP_HDR) as u16 + options);
        self.stats.path_mtu_reports += 1;
        // The protocol stage goes back where the report is about data in flight (as the
        // counters say; they may trail it by a burst) and lowers the MSS: the resend starts
        // the retransmission timer over, and the control plane's own timing takes the new
        // size. Not for a flow frozen for a splice (its protocol stage ignores reports).
        if u32::from(mss) < c.mss && c.in_flight_holds(f.seq, false) && !frozen {
            c.mss = u32::from(mss);
            c.last_progress = c.last_progress.max(now);
        }
        out.work.push(ProtoWork::PathMtu {
            flow: id,
            incarnation: incarnation_of(&self.incarnations, id),
            mss,
            seq: f.seq,
        });
    }

    /// A destination unreachable or time exceeded about one of our segments (RFC 1122
    /// 4.2.3.9, RFC 5461), after Linux's rules (`tcp_v4_err`). It must quote a segment in
    /// flight (RFC 5927 section 4.1: a forged message must guess its sequence number): in
    /// a handshake the one that opened it (our ISS), on a connection one from SND.UNA to
    /// SND.MAX (Linux takes SND.NXT too: a report about a pure ACK, or on an idle
    /// connection). Any other is [`DropReason::IcmpStale`].
    ///
    /// - Our connect in its handshake ends at once: refused (a protocol or port
    ///   unreachable, [`ConnStatus::Refused`]) or unreachable (the rest,
    ///   [`ConnStatus::Unreachable`]), where it would otherwise send SYNs until it timed
    ///   out. Linux tells more apart (`ENETUNREACH`, `ENOPROTOOPT`, `EHOSTDOWN`, ...); here
    ///   every error but a refusal is `EHOSTUNREACH`.
    /// - A peer's half-open connection (SYN-ACK sent) is dropped when a router finds no
    ///   route to the peer (network or host unreachable, time exceeded; not on a refusal:
    ///   the peer asked for the connection), freeing its place in the listener's backlog.
    /// - An established connection goes on (a soft error, RFC 1122: routes come back); if
    ///   it then times out with no segment from the peer since, the application is told it
    ///   was unreachable or refused, not only that it timed out.
    fn unreachable(&mut self, u: &Unreachable) {
        let status = match u.kind {
            UnreachableKind::Refused => ConnStatus::Refused,
            UnreachableKind::NoRoute | UnreachableKind::Other => ConnStatus::Unreachable,
        };
        if let Some(e) = self.embryos.get(&u.tuple) {
            let taken = u.seq == e.iss && (e.active || u.kind == UnreachableKind::NoRoute);
            if !taken {
                self.stats.drops.add(DropReason::IcmpStale);
                return;
            }
            if let Some(e) = self.embryos.remove(&u.tuple) {
                self.stats.icmp_unreachables += 1;
                self.fail_embryo(&u.tuple, e, status);
            }
            return;
        }
        let conn = self
            .by_tuple
            .get(&u.tuple)
            .and_then(|&id| self.conns.get_mut(id as usize))
            .and_then(Option::as_mut);
        let Some(c) = conn.filter(|c| c.in_flight_holds(u.seq, false)) else {
            self.stats.drops.add(DropReason::IcmpStale);
            return;
        };
        self.stats.icmp_unreachables += 1;
        c.soft_error = Some((status, FlowCounters::get(&c.counters.rx_segments)));
    }

    /// Answer an ICMP echo request (RFC 792; RFC 1122 3.2.2.6: the reply carries the
    /// request's identifier, sequence number and data entire).
    fn echo_reply(&mut self, now: Instant, req: &EchoRequest<'_>, out: &mut ControlOutput) {
        // Preprocess punts only what is addressed to us (our MAC and IP address: an echo
        // request to a broadcast or multicast address may be dropped, RFC 1122 3.2.2.6).
        // One from an address no reply can go to is dropped.
        let drop = if self.martian(req.src_ip) {
            Some(DropReason::MartianSource)
        } else if !self.icmp_echo_limit.take(now) {
            Some(DropReason::RateLimited)
        } else {
            None
        };
        if let Some(r) = drop {
            self.stats.drops.add(r);
            return;
        }
        let ep = Endpoints {
            src_mac: self.cfg.mac,
            dst_mac: req.src_mac,
            src_ip: self.cfg.ip,
            dst_ip: req.src_ip,
        };
        if self.send_frame(out, |b| wire::icmp::emit_echo_reply(b, &ep, req)) {
            self.stats.icmp_echo_replies += 1;
        }
    }
}
