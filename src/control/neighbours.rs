//! Neighbours: ARP answers, resolution with retries, and the cache. The cache learns only
//! from ARP packets addressed to us or answering our own requests, never overwrites a
//! configured entry, and holds at most [`NEIGHBOR_LIMIT`] learned ones: a flood of ARP
//! requests from made-up addresses is answered but not remembered once it is full. A sender
//! address no neighbour can have (broadcast, multicast, loopback, reserved, our own) is
//! neither learned nor answered; a duplicate-address probe from 0.0.0.0 (RFC 5227) is
//! answered where it asks for our address, and never learned. The sender's hardware
//! address is taken as Linux's `arp_process` takes it, a group address included
//! (multicast-mode load balancers answer with one); the frame's own Ethernet source must
//! be a station's (see [`wire::unicast_mac`]).

use super::*;

const ARP_RETRY: Duration = Duration::from_millis(500);
const ARP_TRIES: u32 = 4;
/// The most neighbours the cache learns (Linux's default hard limit, `gc_thresh3`, is the
/// same); configured entries come on top.
pub const NEIGHBOR_LIMIT: usize = 1024;

pub(super) struct ArpWait {
    pub(super) conns: Vec<PendingConnect>,
    pub(super) tries: u32,
    pub(super) next: Instant,
}

impl Control {
    pub(super) fn arp_resolve(
        &mut self,
        now: Instant,
        pc: PendingConnect,
        out: &mut ControlOutput,
    ) {
        let ip = pc.tuple.remote_ip;
        let first = !self.arp_wait.contains_key(&ip);
        self.arp_wait
            .entry(ip)
            .or_insert(ArpWait {
                conns: Vec::new(),
                tries: 1,
                next: now + ARP_RETRY,
            })
            .conns
            .push(pc);
        if first {
            self.send_arp_request(ip, out);
        }
    }

    pub(super) fn send_arp_request(&mut self, ip: Ipv4Addr, out: &mut ControlOutput) {
        let req = wire::arp_request(self.cfg.mac, self.cfg.ip, ip);
        let mac = self.cfg.mac;
        self.stats.arp_requests += 1;
        self.send_frame(out, |b| wire::emit_arp(b, mac, MacAddr::BROADCAST, &req));
    }

    pub(super) fn handle_arp(&mut self, now: Instant, arp: ArpRepr, out: &mut ControlOutput) {
        let ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } = arp
        else {
            self.stats.drops.add(DropReason::BadArp);
            return;
        };
        if source_protocol_addr.is_unspecified() {
            // A duplicate-address probe (RFC 5227): one for our address is answered, as
            // Linux does; none is learned, and probes for other addresses (any host
            // taking an address by DHCP sends them) are none of ours.
            if operation == ArpOperation::Request && target_protocol_addr == self.cfg.ip {
                self.reply_arp(source_hardware_addr, source_protocol_addr, out);
            }
            return;
        }
        if self.martian(source_protocol_addr) {
            // No neighbour has such an address.
            self.stats.drops.add(DropReason::MartianSource);
            return;
        }
        if target_protocol_addr == self.cfg.ip || self.arp_wait.contains_key(&source_protocol_addr)
        {
            self.learn_neighbor(source_protocol_addr, source_hardware_addr);
        }
        if operation == ArpOperation::Request && target_protocol_addr == self.cfg.ip {
            self.reply_arp(source_hardware_addr, source_protocol_addr, out);
        }
        if let Some(w) = self.arp_wait.remove(&source_protocol_addr) {
            for pc in w.conns {
                self.start_connect(now, pc, source_hardware_addr, out);
            }
        }
    }

    /// Answer an ARP request for our address from `mac` at `ip`.
    fn reply_arp(&mut self, mac: MacAddr, ip: Ipv4Addr, out: &mut ControlOutput) {
        let reply = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: self.cfg.mac,
            source_protocol_addr: self.cfg.ip,
            target_hardware_addr: mac,
            target_protocol_addr: ip,
        };
        let ours = self.cfg.mac;
        self.stats.arp_replies += 1;
        self.send_frame(out, |b| wire::emit_arp(b, ours, mac, &reply));
    }

    /// Remember `ip` at `mac`, unless `ip` is configured (a static entry is not ARP's to
    /// change) or the cache is full. A full cache still makes room for the answer to one
    /// of our own requests (a connect waits for it), in place of another learned entry.
    fn learn_neighbor(&mut self, ip: Ipv4Addr, mac: MacAddr) {
        if self.cfg.neighbors.iter().any(|(n, _)| *n == ip) {
            return;
        }
        let learned = self.neighbors.len().saturating_sub(self.static_neighbors);
        if learned >= NEIGHBOR_LIMIT && !self.neighbors.contains_key(&ip) {
            let statics = &self.cfg.neighbors;
            let victim = self
                .neighbors
                .keys()
                .find(|n| !statics.iter().any(|(s, _)| s == *n))
                .copied();
            match victim {
                Some(v) if self.arp_wait.contains_key(&ip) => {
                    self.neighbors.remove(&v);
                }
                _ => {
                    self.stats.arp_not_learned += 1;
                    return;
                }
            }
        }
        self.neighbors.insert(ip, mac);
    }

    /// ARP retries that are due, and resolutions that gave up.
    pub(super) fn poll_arp(&mut self, now: Instant, out: &mut ControlOutput) {
        let due: Vec<Ipv4Addr> = self
            .arp_wait
            .iter()
            .filter(|(_, w)| now >= w.next)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            let mut w = self.arp_wait.remove(&ip).expect("present");
            if w.tries >= ARP_TRIES {
                for pc in w.conns {
                    self.host.release_port(pc.tuple.local_port);
                    pc.conn.set_status(ConnStatus::Unreachable);
                }
                continue;
            }
            w.tries += 1;
            w.next = now + ARP_RETRY;
            self.send_arp_request(ip, out);
            self.arp_wait.insert(ip, w);
        }
    }
}
