//! Writing frames: header templates, checksums, and segments and ARP packets built whole.

use super::*;

/// The variable fields of an outgoing segment built from a [`HeaderTemplate`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxHeader {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// TCP flags.
    pub flags: u8,
    /// Window field (already scaled down).
    pub win: u16,
    /// Our timestamp value.
    pub ts_val: u32,
    /// Timestamp echo.
    pub ts_ecr: u32,
    /// Payload length that follows the header.
    pub payload_len: u16,
    /// SACK blocks to carry; only segments without payload carry them (a data segment's
    /// payload is placed before its header is written, at a fixed offset).
    pub sack: SackBlocks,
    /// Mark the IP header ECN-capable, ECT(0) (RFC 3168: new data of an ECN connection).
    pub ect: bool,
}

/// A connection's constant header bytes: Ethernet, IPv4 (no options, DF, TTL 64) and TCP
/// (ports, data offset, and the NOP NOP TS block when timestamps are on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderTemplate {
    bytes: [u8; ETH_HDR + IP_HDR + TCP_HDR + TS_OPT_LEN],
    len: u8,
    ts: bool,
    /// The sum of the IPv4 header's bytes that [`write`](Self::write) never changes: all but
    /// the first four (version, TOS with the ECN field, total length) and the checksum.
    ip_sum: checksum::Sum,
    /// The sum of the TCP pseudo-header's and header's bytes that `write` never changes:
    /// addresses, protocol, ports, urgent pointer, the timestamp option's kind and length.
    tcp_sum: checksum::Sum,
}

impl HeaderTemplate {
    /// Build the template for a connection.
    pub fn new(local_mac: MacAddr, remote_mac: MacAddr, t: &FourTuple, timestamps: bool) -> Self {
        let mut bytes = [0u8; ETH_HDR + IP_HDR + TCP_HDR + TS_OPT_LEN];
        let tcp_len = TCP_HDR + if timestamps { TS_OPT_LEN } else { 0 };
        let len = ETH_HDR + IP_HDR + tcp_len;
        let mut eth = EthernetFrame::new_unchecked(&mut bytes[..]);
        EthernetRepr {
            src_addr: local_mac,
            dst_addr: remote_mac,
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut eth);
        let ipr = Ipv4Repr {
            src_addr: t.local_ip,
            dst_addr: t.remote_ip,
            next_header: IpProtocol::Tcp,
            payload_len: tcp_len,
            hop_limit: 64,
        };
        let mut ip = Ipv4Packet::new_unchecked(&mut bytes[ETH_HDR..ETH_HDR + IP_HDR]);
        ipr.emit(&mut ip, &ChecksumCapabilities::ignored());
        let mut tcp = TcpPacket::new_unchecked(&mut bytes[ETH_HDR + IP_HDR..len]);
        tcp.set_src_port(t.local_port);
        tcp.set_dst_port(t.remote_port);
        tcp.set_header_len(tcp_len as u8);
        if timestamps {
            let o = tcp.options_mut();
            o[0] = 1;
            o[1] = 1;
            o[2] = 8;
            o[3] = 10;
        }
        let ip = &bytes[ETH_HDR..ETH_HDR + IP_HDR];
        let ip_sum = checksum::Sum::default()
            .add_bytes(&ip[4..10])
            .add_bytes(&ip[12..IP_HDR]);
        let tcp = &bytes[ETH_HDR + IP_HDR..len];
        let mut tcp_sum = checksum::Sum::default()
            .pseudo_header(t.local_ip, t.remote_ip, 0)
            .add_bytes(&tcp[0..4])
            .add_bytes(&tcp[18..TCP_HDR]);
        if timestamps {
            tcp_sum = tcp_sum.add_bytes(&tcp[TCP_HDR..TCP_HDR + 4]);
        }
        HeaderTemplate {
            bytes,
            len: len as u8,
            ts: timestamps,
            ip_sum,
            tcp_sum,
        }
    }

    /// Header length (Ethernet through TCP options).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Never empty; present for API symmetry.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether the template carries the timestamp option.
    pub fn timestamps(&self) -> bool {
        self.ts
    }

    /// Write the header for `h` into `buf`; returns the header length. The payload goes right
    /// after it; checksums are filled later by [`fill_checksums`]. A segment without payload
    /// carries `h.sack` in a SACK option after the template's options.
    pub fn write(&self, buf: &mut [u8], h: &TxHeader) -> usize {
        let mut len = self.len as usize;
        buf[..len].copy_from_slice(&self.bytes[..len]);
        if h.payload_len == 0 && !h.sack.is_empty() {
            let blocks = h.sack.as_slice();
            let opt = 4 + 8 * blocks.len();
            if buf.len() >= len + opt {
                let o = &mut buf[len..len + opt];
                o[0] = 1;
                o[1] = 1;
                o[2] = 5;
                o[3] = (2 + 8 * blocks.len()) as u8;
                for (i, (l, r)) in blocks.iter().enumerate() {
                    o[4 + 8 * i..8 + 8 * i].copy_from_slice(&l.to_be_bytes());
                    o[8 + 8 * i..12 + 8 * i].copy_from_slice(&r.to_be_bytes());
                }
                len += opt;
                let doff = ((len - ETH_HDR - IP_HDR) / 4) as u8;
                buf[ETH_HDR + IP_HDR + 12] = doff << 4;
            }
        }
        if h.ect {
            buf[ETH_HDR + 1] = (buf[ETH_HDR + 1] & !3) | 2;
        }
        let ip_total = (len - ETH_HDR) as u16 + h.payload_len;
        buf[ETH_HDR + 2..ETH_HDR + 4].copy_from_slice(&ip_total.to_be_bytes());
        let t = &mut buf[ETH_HDR + IP_HDR..len];
        t[4..8].copy_from_slice(&h.seq.to_be_bytes());
        t[8..12].copy_from_slice(&h.ack.to_be_bytes());
        t[13] = h.flags;
        t[14..16].copy_from_slice(&h.win.to_be_bytes());
        if self.ts {
            t[TCP_HDR + 4..TCP_HDR + 8].copy_from_slice(&h.ts_val.to_be_bytes());
            t[TCP_HDR + 8..TCP_HDR + 12].copy_from_slice(&h.ts_ecr.to_be_bytes());
        }
        len
    }
}

impl HeaderTemplate {
    /// Fill the IPv4 and TCP checksums of `frame`, whose header [`write`](Self::write)
    /// wrote, with its payload right after the header, from the template's sums of the bytes
    /// `write` never changes: only the fields it sets and the payload are read. `payload`: the
    /// payload's folded sum when known ([`PayloadOp::sum`](crate::stages::PayloadOp::sum)),
    /// else the payload is summed here. A frame laid out otherwise (a SACK option, an IP
    /// length that is not the frame's) is checksummed from scratch ([`fill_checksums`]).
    pub fn fill_checksums(&self, frame: &mut [u8], payload: Option<[u8; 2]>) {
        let hl = self.len as usize;
        let doff = ETH_HDR + IP_HDR + 12;
        let laid_out = frame.len() >= hl
            && frame[doff] == self.bytes[doff]
            && usize::from(u16::from_be_bytes([frame[ETH_HDR + 2], frame[ETH_HDR + 3]]))
                == frame.len() - ETH_HDR;
        if !laid_out {
            fill_checksums(frame);
            return;
        }
        let (ip, tcp) = frame[ETH_HDR..].split_at_mut(IP_HDR);
        let ip_c = self
            .ip_sum
            .add_word([ip[0], ip[1], ip[2], ip[3]])
            .checksum();
        ip[10..12].copy_from_slice(&ip_c);
        // The pseudo-header's TCP length, then sequence and acknowledgment numbers, data
        // offset and flags, window.
        let l = (tcp.len() as u16).to_be_bytes();
        let mut s = self.tcp_sum.add_word([0, 0, l[0], l[1]]);
        for w in tcp[4..16].chunks_exact(4) {
            s = s.add_word([w[0], w[1], w[2], w[3]]);
        }
        let thl = hl - ETH_HDR - IP_HDR;
        if self.ts {
            for w in tcp[TCP_HDR + 4..thl].chunks_exact(4) {
                s = s.add_word([w[0], w[1], w[2], w[3]]);
            }
        }
        s = match payload {
            Some(sum) => s.add_folded(sum),
            None if tcp.len() > thl => s.add_bytes(&tcp[thl..]),
            None => s,
        };
        tcp[16..18].copy_from_slice(&s.checksum());
    }
}

/// Fill the IPv4 header checksum and the TCP checksum of an Ethernet/IPv4/TCP frame. Frames
/// of any other kind are left alone.
pub fn fill_checksums(frame: &mut [u8]) {
    fill_checksums_with(frame, None);
}

/// [`fill_checksums`], with the folded sum ([`Sum::fold`](checksum::Sum::fold)) of the
/// frame's last `n` bytes already known (`Some((n, sum))`, `n` even or the whole TCP
/// payload): the TCP checksum reads only the headers. Placement sums transmit payload as it
/// copies it into the frame, while the bytes are in the cache
/// ([`PayloadOp::sum`](crate::stages::PayloadOp::sum)).
pub fn fill_checksums_with(frame: &mut [u8], payload: Option<(usize, [u8; 2])>) {
    if frame.len() < ETH_HDR + IP_HDR || frame[12..14] != [0x08, 0x00] {
        return;
    }
    let frame_len = frame.len();
    let ip_bytes = &mut frame[ETH_HDR..];
    let hl = ((ip_bytes[0] & 0x0f) as usize) * 4;
    let total = u16::from_be_bytes([ip_bytes[2], ip_bytes[3]]) as usize;
    if hl < IP_HDR || total < hl + TCP_HDR || total > ip_bytes.len() {
        return;
    }
    checksum::fill_ipv4_header(&mut ip_bytes[..hl]);
    if ip_bytes[9] != 6 {
        return;
    }
    let src = Ipv4Addr::new(ip_bytes[12], ip_bytes[13], ip_bytes[14], ip_bytes[15]);
    let dst = Ipv4Addr::new(ip_bytes[16], ip_bytes[17], ip_bytes[18], ip_bytes[19]);
    let payload = payload.filter(|&(n, _)| ETH_HDR + total == frame_len && n <= total - hl);
    checksum::fill_tcp_with(src, dst, &mut ip_bytes[hl..total], payload);
}

/// Addresses for [`emit_tcp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// Source MAC.
    pub src_mac: MacAddr,
    /// Destination MAC.
    pub dst_mac: MacAddr,
    /// Source IP.
    pub src_ip: Ipv4Addr,
    /// Destination IP.
    pub dst_ip: Ipv4Addr,
}

/// [`emit_tcp`], with `extra` TCP flags (ECE, CWR) added to the header.
pub fn emit_tcp_with_flags(
    buf: &mut [u8],
    ep: &Endpoints,
    repr: &TcpRepr<'_>,
    extra: u8,
) -> Option<usize> {
    let n = emit_tcp(buf, ep, repr)?;
    if extra != 0 {
        buf[ETH_HDR + IP_HDR + 13] |= extra;
        fill_checksums(&mut buf[..n]);
    }
    Some(n)
}

/// Build a complete Ethernet/IPv4/TCP frame (checksums filled) into `buf`; returns its length,
/// or `None` when `buf` is too small or the options do not fit in a TCP header. See
/// [`emit_tcp_with_flags`] for ECE and CWR, which `TcpRepr` does not carry.
pub fn emit_tcp(buf: &mut [u8], ep: &Endpoints, repr: &TcpRepr<'_>) -> Option<usize> {
    if repr.header_len() > 60 {
        // More options than a TCP header holds.
        return None;
    }
    let tcp_len = repr.buffer_len();
    let at = emit_ipv4_header(buf, ep, IpProtocol::Tcp, tcp_len)?;
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut buf[at..at + tcp_len]),
        &IpAddress::Ipv4(ep.src_ip),
        &IpAddress::Ipv4(ep.dst_ip),
        &ChecksumCapabilities::default(),
    );
    Some(at + tcp_len)
}

/// Write the Ethernet and IPv4 headers (no options, checksum filled, TTL 64) of a packet
/// of `proto` with `payload_len` bytes into `buf`; returns where the payload starts, or
/// `None` when `buf` cannot hold the whole frame.
pub(super) fn emit_ipv4_header(
    buf: &mut [u8],
    ep: &Endpoints,
    proto: IpProtocol,
    payload_len: usize,
) -> Option<usize> {
    if buf.len() < ETH_HDR + IP_HDR + payload_len || IP_HDR + payload_len > usize::from(u16::MAX) {
        return None;
    }
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..ETH_HDR]);
    EthernetRepr {
        src_addr: ep.src_mac,
        dst_addr: ep.dst_mac,
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut eth);
    Ipv4Repr {
        src_addr: ep.src_ip,
        dst_addr: ep.dst_ip,
        next_header: proto,
        payload_len,
        hop_limit: 64,
    }
    .emit(
        &mut Ipv4Packet::new_unchecked(&mut buf[ETH_HDR..ETH_HDR + IP_HDR]),
        &ChecksumCapabilities::default(),
    );
    Some(ETH_HDR + IP_HDR)
}

/// Build an Ethernet/ARP frame into `buf`; returns its length, or `None` when too small.
pub fn emit_arp(
    buf: &mut [u8],
    src_mac: MacAddr,
    dst_mac: MacAddr,
    repr: &ArpRepr,
) -> Option<usize> {
    let len = ETH_HDR + repr.buffer_len();
    if buf.len() < len {
        return None;
    }
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..len]);
    EthernetRepr {
        src_addr: src_mac,
        dst_addr: dst_mac,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut eth);
    repr.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
    Some(len)
}

/// Build an ARP request asking who has `target`.
pub fn arp_request(src_mac: MacAddr, src_ip: Ipv4Addr, target: Ipv4Addr) -> ArpRepr {
    ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: src_mac,
        source_protocol_addr: src_ip,
        target_hardware_addr: MacAddr([0; 6]),
        target_protocol_addr: target,
    }
}

/// A SYN (MSS 1460, window 1000, sequence number 1) from `src`:`sport` to `dst`:`dport`,
/// checksums filled, for unit tests of stages that look at opening segments.
#[cfg(test)]
pub(crate) fn test_syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let ep = Endpoints {
        src_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        dst_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        src_ip: src,
        dst_ip: dst,
    };
    let repr = TcpRepr {
        src_port: sport,
        dst_port: dport,
        control: smoltcp::wire::TcpControl::Syn,
        seq_number: smoltcp::wire::TcpSeqNumber(1),
        ack_number: None,
        window_len: 1000,
        window_scale: None,
        max_seg_size: Some(1460),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let mut buf = vec![0u8; 128];
    let n = emit_tcp(&mut buf, &ep, &repr).unwrap_or(0);
    buf.truncate(n);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Checksums filled from the template's sums are those of a frame summed from
        /// scratch, for any header fields, payload, known payload sum or not, and a SACK
        /// option (which falls back).
        #[test]
        fn template_checksums_match_from_scratch(
            ips in any::<([u8; 4], [u8; 4], u16, u16)>(),
            ts in any::<bool>(),
            (seq, ack, flags, win, ts_val, ts_ecr) in any::<(u32, u32, u8, u16, u32, u32)>(),
            ect in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..1600),
            known in any::<bool>(),
            sack in proptest::collection::vec(any::<(u32, u32)>(), 0..=3),
        ) {
            let t = FourTuple {
                local_ip: Ipv4Addr::from(ips.0),
                local_port: ips.2,
                remote_ip: Ipv4Addr::from(ips.1),
                remote_port: ips.3,
            };
            let tpl = HeaderTemplate::new(MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]), &t, ts);
            let mut h = TxHeader {
                seq,
                ack,
                flags,
                win,
                ts_val,
                ts_ecr,
                payload_len: payload.len() as u16,
                ect,
                ..Default::default()
            };
            if payload.is_empty() {
                for &(l, r) in &sack {
                    h.sack.push(l, r);
                }
            }
            let mut buf = vec![0u8; 2048];
            let hl = tpl.write(&mut buf, &h);
            buf.truncate(hl);
            buf.extend_from_slice(&payload);
            let mut scratch = buf.clone();
            fill_checksums(&mut scratch);
            let sum = (known && !payload.is_empty())
                .then(|| checksum::Sum::default().add_bytes(&payload).fold());
            tpl.fill_checksums(&mut buf, sum);
            prop_assert_eq!(&buf, &scratch);
            // And the result verifies as a receiver checks it.
            let tcp = &buf[ETH_HDR + IP_HDR..];
            prop_assert!(checksum::tcp_ok(t.local_ip, t.remote_ip, tcp));
            prop_assert!(checksum::ipv4_header_ok(&buf[ETH_HDR..ETH_HDR + IP_HDR]));
        }
    }
}
