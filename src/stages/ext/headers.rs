//! What the extensions look at in a raw frame: a bounds-checked peek at the Ethernet header
//! (with one 802.1Q tag), IPv4 and TCP or UDP ports, with no checksum verification and no
//! allocation. Any byte string gives `None` or a [`FrameInfo`], never a panic (a fuzz target
//! feeds it arbitrary bytes).

use crate::wire::checksum;
use std::net::Ipv4Addr;

/// 802.1Q's tag protocol identifier.
pub const TPID_8021Q: u16 = 0x8100;
/// The IPv4 EtherType.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// The header fields of a frame the extensions match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// The 802.1Q VLAN id, if the frame is tagged.
    pub vid: Option<u16>,
    /// The EtherType after any tag.
    pub ethertype: u16,
    /// IPv4 source (unspecified if not IPv4).
    pub src: Ipv4Addr,
    /// IPv4 destination.
    pub dst: Ipv4Addr,
    /// IP protocol (0 if not IPv4).
    pub proto: u8,
    /// DSCP (the six high bits of the IPv4 TOS byte).
    pub dscp: u8,
    /// Source port (TCP or UDP of a first fragment; 0 otherwise).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP flags (0 if not TCP).
    pub tcp_flags: u8,
    /// The whole frame's length in bytes.
    pub len: usize,
}

impl Default for FrameInfo {
    fn default() -> Self {
        FrameInfo {
            vid: None,
            ethertype: 0,
            src: Ipv4Addr::UNSPECIFIED,
            dst: Ipv4Addr::UNSPECIFIED,
            proto: 0,
            dscp: 0,
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            len: 0,
        }
    }
}

impl FrameInfo {
    /// Read the headers of `data`; `None` when it is too short for an Ethernet header (or for
    /// its tag). A frame that is not IPv4, or whose IPv4 or L4 header is cut short, gives
    /// what could be read (the rest zero).
    pub fn peek(data: &[u8]) -> Option<FrameInfo> {
        let be16 = |i: usize| -> Option<u16> {
            Some(u16::from_be_bytes([*data.get(i)?, *data.get(i + 1)?]))
        };
        let mut info = FrameInfo {
            len: data.len(),
            ..FrameInfo::default()
        };
        let mut off = 12;
        let mut ethertype = be16(off)?;
        if ethertype == TPID_8021Q {
            info.vid = Some(be16(off + 2)? & 0x0fff);
            off += 4;
            ethertype = be16(off)?;
        }
        info.ethertype = ethertype;
        let ip = off + 2;
        if ethertype != ETHERTYPE_IPV4 {
            return Some(info);
        }
        let Some(hdr) = data.get(ip..ip + 20) else {
            return Some(info);
        };
        if hdr[0] >> 4 != 4 {
            return Some(info);
        }
        info.dscp = hdr[1] >> 2;
        info.proto = hdr[9];
        info.src = Ipv4Addr::new(hdr[12], hdr[13], hdr[14], hdr[15]);
        info.dst = Ipv4Addr::new(hdr[16], hdr[17], hdr[18], hdr[19]);
        let ihl = usize::from(hdr[0] & 0x0f) * 4;
        let fragment_offset = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1fff;
        if ihl < 20 || fragment_offset != 0 {
            return Some(info);
        }
        let l4 = ip + ihl;
        match info.proto {
            PROTO_TCP => {
                if let Some(t) = data.get(l4..l4 + 20) {
                    info.sport = u16::from_be_bytes([t[0], t[1]]);
                    info.dport = u16::from_be_bytes([t[2], t[3]]);
                    info.tcp_flags = t[13];
                }
            }
            PROTO_UDP => {
                if let Some(u) = data.get(l4..l4 + 8) {
                    info.sport = u16::from_be_bytes([u[0], u[1]]);
                    info.dport = u16::from_be_bytes([u[2], u[3]]);
                }
            }
            _ => {}
        }
        Some(info)
    }

    /// Whether the frame is a TCP segment over IPv4 whose ports were read.
    pub fn is_tcp(&self) -> bool {
        self.proto == PROTO_TCP && self.ethertype == ETHERTYPE_IPV4
    }

    /// Whether `data` (the frame this was read from) is an unfragmented IPv4 TCP segment
    /// whose IPv4 header and TCP checksums are correct: for a stage that keeps state from a
    /// frame before preprocess has checked it.
    pub fn tcp_checksums_ok(&self, data: &[u8]) -> bool {
        if !self.is_tcp() {
            return false;
        }
        let ip = 14 + if self.vid.is_some() { 4 } else { 0 };
        let Some(hdr) = data.get(ip..ip + 20) else {
            return false;
        };
        let ihl = usize::from(hdr[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
        let more_or_offset = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x3fff;
        if ihl < 20 || total < ihl + 20 || more_or_offset != 0 {
            return false;
        }
        let Some(packet) = data.get(ip..ip + total) else {
            return false;
        };
        checksum::ipv4_header_ok(&packet[..ihl])
            && checksum::tcp_ok(self.src, self.dst, &packet[ihl..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_frame(tag: Option<u16>) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        if let Some(vid) = tag {
            f.extend_from_slice(&TPID_8021Q.to_be_bytes());
            f.extend_from_slice(&(0x2000 | vid).to_be_bytes());
        }
        f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[1] = 46 << 2;
        ip[9] = PROTO_TCP;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        f.extend_from_slice(&ip);
        let mut tcp = [0u8; 20];
        tcp[0..2].copy_from_slice(&1234u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[13] = 0x02;
        f.extend_from_slice(&tcp);
        f
    }

    #[test]
    fn reads_tagged_and_untagged_tcp() {
        for tag in [None, Some(42)] {
            let f = tcp_frame(tag);
            let i = FrameInfo::peek(&f).unwrap();
            assert_eq!(i.vid, tag);
            assert!(i.is_tcp());
            assert_eq!(
                (i.sport, i.dport, i.tcp_flags, i.dscp),
                (1234, 80, 0x02, 46)
            );
            assert_eq!(i.src, Ipv4Addr::new(10, 0, 0, 1));
            assert_eq!(i.len, f.len());
        }
    }

    #[test]
    fn every_truncation_is_safe() {
        let f = tcp_frame(Some(7));
        for n in 0..=f.len() {
            let i = FrameInfo::peek(&f[..n]);
            assert_eq!(i.is_none(), n < 18, "{n}");
            if n < f.len() {
                assert_eq!(
                    i.map_or(0, |i| i.tcp_flags),
                    0,
                    "{n}: flags only when whole"
                );
            }
        }
    }
}
