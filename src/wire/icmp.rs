//! ICMP echo (RFC 792) on the wire: tell an ICMP packet from the rest of what the TCP
//! parser turns away, validate an echo request, and build its reply.
//!
//! The IPv4 header is validated by [`parse_frame_into`] (lengths, checksum, fragments):
//! the TCP parser rejects an intact IPv4 packet of another protocol with
//! [`DropReason::NotTcp`], and only such a packet is looked at here.

use super::emit::emit_ipv4_header;
use super::*;

/// ICMP's IP protocol number.
const PROTO_ICMP: u8 = 1;
/// ICMP echo reply and echo request types (RFC 792).
const ECHO_REPLY: u8 = 0;
const ECHO_REQUEST: u8 = 8;
/// An echo message's header: type, code, checksum, identifier, sequence number.
const ECHO_HDR: usize = 8;

/// An ICMP echo request addressed to a host, as received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EchoRequest<'a> {
    /// Sender's MAC address.
    pub src_mac: MacAddr,
    /// Sender's IP address.
    pub src_ip: Ipv4Addr,
    /// Destination IP address.
    pub dst_ip: Ipv4Addr,
    /// The ICMP message (header and data, checksum verified), which the reply carries
    /// back with its type changed.
    pub message: &'a [u8],
}

impl EchoRequest<'_> {
    /// The request's identifier.
    pub fn ident(&self) -> u16 {
        u16::from_be_bytes([self.message[4], self.message[5]])
    }

    /// The request's sequence number.
    pub fn seq(&self) -> u16 {
        u16::from_be_bytes([self.message[6], self.message[7]])
    }

    /// The request's data, which the reply must carry entire (RFC 1122 3.2.2.6).
    pub fn data(&self) -> &[u8] {
        &self.message[ECHO_HDR..]
    }
}

/// Whether a frame the TCP parser rejected with `reason` is an ICMP packet: an intact
/// IPv4 packet (`reason` is [`DropReason::NotTcp`]) whose protocol is ICMP.
#[inline]
pub fn is_icmp(frame: &[u8], reason: DropReason) -> bool {
    reason == DropReason::NotTcp && frame.get(ETH_HDR + 9) == Some(&PROTO_ICMP)
}

/// Validate an ICMP echo request: the frame must be an intact IPv4 packet (as
/// [`parse_frame`] checks) carrying ICMP, at least an echo header long, with a correct ICMP
/// checksum ([`DropReason::BadIcmp`] otherwise), of type echo request and code 0
/// ([`DropReason::IcmpIgnored`] for any other ICMP message). Never panics on any input.
pub fn parse_echo_request(frame: &[u8]) -> Result<EchoRequest<'_>, DropReason> {
    let mut scratch = TcpSegment::EMPTY;
    match parse_frame_into(frame, &mut scratch) {
        Err(r) if is_icmp(frame, r) => {}
        Err(r) => return Err(r),
        // TCP or ARP: not ICMP (the caller mistook it).
        Ok(_) => return Err(DropReason::IcmpIgnored),
    }
    // The IPv4 header is intact: its lengths are within the frame.
    let ip = &frame[ETH_HDR..];
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let message = &ip[hl..total];
    if message.len() < ECHO_HDR || !checksum::Sum::default().add_bytes(message).verifies() {
        return Err(DropReason::BadIcmp);
    }
    if message[0] != ECHO_REQUEST || message[1] != 0 {
        return Err(DropReason::IcmpIgnored);
    }
    let addr = |i: usize| Ipv4Addr::new(ip[i], ip[i + 1], ip[i + 2], ip[i + 3]);
    Ok(EchoRequest {
        src_mac: MacAddr::from_bytes(&frame[6..12]),
        src_ip: addr(12),
        dst_ip: addr(16),
        message,
    })
}

/// Build the echo reply to `req` into `buf`, from `ep` (its source: this host, its
/// destination: the requester): the request's identifier, sequence number and data, in an
/// IPv4 header without options. Returns the frame's length, or `None` when `buf` is too
/// small.
pub fn emit_echo_reply(buf: &mut [u8], ep: &Endpoints, req: &EchoRequest<'_>) -> Option<usize> {
    let n = req.message.len();
    let at = emit_ipv4_header(buf, ep, IpProtocol::Icmp, n)?;
    let msg = &mut buf[at..at + n];
    msg.copy_from_slice(req.message);
    msg[0] = ECHO_REPLY;
    msg[2] = 0;
    msg[3] = 0;
    let c = checksum::Sum::default().add_bytes(msg).checksum();
    msg[2..4].copy_from_slice(&c);
    Some(at + n)
}

/// Build an echo request (for tests and tools): from `ep`, with `ident`, `seq` and `data`.
/// Returns the frame's length, or `None` when `buf` is too small.
pub fn emit_echo_request(
    buf: &mut [u8],
    ep: &Endpoints,
    ident: u16,
    seq: u16,
    data: &[u8],
) -> Option<usize> {
    let n = ECHO_HDR + data.len();
    let at = emit_ipv4_header(buf, ep, IpProtocol::Icmp, n)?;
    let msg = &mut buf[at..at + n];
    msg[..4].copy_from_slice(&[ECHO_REQUEST, 0, 0, 0]);
    msg[4..6].copy_from_slice(&ident.to_be_bytes());
    msg[6..8].copy_from_slice(&seq.to_be_bytes());
    msg[ECHO_HDR..].copy_from_slice(data);
    let c = checksum::Sum::default().add_bytes(msg).checksum();
    msg[2..4].copy_from_slice(&c);
    Some(at + n)
}

#[cfg(test)]
mod tests {
    use super::super::tests::ep;
    use super::*;

    fn request(data: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 2048];
        let n = emit_echo_request(&mut b, &ep(), 0x1234, 7, data).unwrap();
        b.truncate(n);
        b
    }

    #[test]
    fn a_request_parses_and_its_reply_carries_it_back() {
        let f = request(b"hello, ping");
        let req = parse_echo_request(&f).unwrap();
        assert_eq!((req.ident(), req.seq()), (0x1234, 7));
        assert_eq!(req.data(), b"hello, ping");
        assert_eq!(req.src_ip, ep().src_ip);
        assert_eq!(req.dst_ip, ep().dst_ip);
        assert_eq!(req.src_mac, ep().src_mac);
        let back = Endpoints {
            src_mac: ep().dst_mac,
            dst_mac: req.src_mac,
            src_ip: req.dst_ip,
            dst_ip: req.src_ip,
        };
        let mut b = vec![0u8; 2048];
        let n = emit_echo_reply(&mut b, &back, &req).unwrap();
        assert_eq!(n, f.len());
        // A reply is no request; its checksums hold and its fields are the request's.
        assert_eq!(parse_echo_request(&b[..n]), Err(DropReason::IcmpIgnored));
        assert!(checksum::ipv4_header_ok(&b[ETH_HDR..ETH_HDR + IP_HDR]));
        let msg = &b[ETH_HDR + IP_HDR..n];
        assert!(checksum::Sum::default().add_bytes(msg).verifies());
        assert_eq!(msg[0], ECHO_REPLY);
        assert_eq!(&msg[4..], &f[ETH_HDR + IP_HDR + 4..]);
        assert!(emit_echo_reply(&mut b[..n - 1], &back, &req).is_none());
    }

    #[test]
    fn bad_requests_are_told_apart() {
        let f = request(b"abcd");
        let mut bad = f.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(parse_echo_request(&bad), Err(DropReason::BadIcmp));
        // Shorter than an echo header (IPv4 length and checksum made consistent).
        let mut short = f[..ETH_HDR + IP_HDR + 6].to_vec();
        short[ETH_HDR + 2..ETH_HDR + 4].copy_from_slice(&26u16.to_be_bytes());
        checksum::fill_ipv4_header(&mut short[ETH_HDR..ETH_HDR + IP_HDR]);
        assert_eq!(parse_echo_request(&short), Err(DropReason::BadIcmp));
        // Another type (timestamp request, 13), checksum made right.
        let mut other = f.clone();
        other[ETH_HDR + IP_HDR] = 13;
        other[ETH_HDR + IP_HDR + 2..ETH_HDR + IP_HDR + 4].fill(0);
        let c = checksum::Sum::default()
            .add_bytes(&other[ETH_HDR + IP_HDR..])
            .checksum();
        other[ETH_HDR + IP_HDR + 2..ETH_HDR + IP_HDR + 4].copy_from_slice(&c);
        assert_eq!(parse_echo_request(&other), Err(DropReason::IcmpIgnored));
        // The IPv4 header's own faults are the TCP parser's.
        let mut ipbad = f.clone();
        ipbad[ETH_HDR + 10] ^= 1;
        assert_eq!(parse_echo_request(&ipbad), Err(DropReason::BadIpChecksum));
        assert_eq!(parse_echo_request(&f[..20]), Err(DropReason::Truncated));
        let syn = test_syn(ep().src_ip, 1, ep().dst_ip, 2);
        assert_eq!(parse_echo_request(&syn), Err(DropReason::IcmpIgnored));
        assert!(!is_icmp(&syn, DropReason::NotTcp));
    }
}
