//! ICMP on the control plane: echo requests (ping) answered, within a rate limit; every
//! other ICMP message dropped and counted.

use super::*;

impl Control {
    /// Answer an ICMP echo request the data path punted (RFC 792; RFC 1122 3.2.2.6: the
    /// reply carries the request's identifier, sequence number and data entire).
    pub(super) fn handle_icmp(&mut self, now: Instant, frame: Frame, out: &mut ControlOutput) {
        // The arena's own handle: the request borrows from it across `send_frame`.
        let arena = Arc::clone(&self.arena);
        let req = match wire::icmp::parse_echo_request(arena.data(&frame)) {
            Ok(r) => r,
            Err(r) => {
                self.stats.drops.add(r);
                arena.free(frame);
                return;
            }
        };
        // Preprocess punts only what is addressed to us (our MAC and IP address: an echo
        // request to a broadcast or multicast address may be dropped, RFC 1122 3.2.2.6).
        // One from an address no reply can go to is dropped.
        let drop = if self.martian(req.src_ip) {
            Some(DropReason::MartianSource)
        } else if !self.icmp_limit.take(now) {
            Some(DropReason::RateLimited)
        } else {
            None
        };
        if let Some(r) = drop {
            self.stats.drops.add(r);
            arena.free(frame);
            return;
        }
        let ep = Endpoints {
            src_mac: self.cfg.mac,
            dst_mac: req.src_mac,
            src_ip: self.cfg.ip,
            dst_ip: req.src_ip,
        };
        if self.send_frame(out, |b| wire::icmp::emit_echo_reply(b, &ep, &req)) {
            self.stats.icmp_echo_replies += 1;
        }
        arena.free(frame);
    }
}
