//! ICMP (RFC 792) on the wire: tell an ICMP packet from the rest of what the TCP parser
//! turns away, validate an echo request and build its reply, and read the errors about a
//! segment we sent: "fragmentation needed" (RFC 1191 path MTU discovery), the other
//! destination unreachables and time exceeded (RFC 1122 4.2.3.9, RFC 5461).
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
/// Destination unreachable, and its code "fragmentation needed and DF set" (RFC 792,
/// RFC 1191).
const UNREACHABLE: u8 = 3;
const FRAG_NEEDED: u8 = 4;
/// Destination unreachable's codes "network unreachable" and "host unreachable": no route
/// to the host.
const NET_UNREACHABLE: u8 = 0;
const HOST_UNREACHABLE: u8 = 1;
/// Destination unreachable's codes "protocol unreachable" and "port unreachable": the far
/// host itself has nothing there (RFC 1122 4.2.3.9's hard errors).
const PROTO_UNREACHABLE: u8 = 2;
const PORT_UNREACHABLE: u8 = 3;
/// The highest destination unreachable code assigned (RFC 1812 5.2.7.1: 15, precedence
/// cutoff in effect).
const LAST_UNREACHABLE_CODE: u8 = 15;
/// Time exceeded (RFC 792): in transit (0), or in fragment reassembly (1).
const TIME_EXCEEDED: u8 = 11;
/// An echo message's header: type, code, checksum, identifier, sequence number.
const ECHO_HDR: usize = 8;
/// The smallest path MTU taken from a "fragmentation needed" message (Linux's
/// `min_pmtu`): a forged message cannot shrink segments below this (RFC 5927 section 5.2).
pub const MIN_PATH_MTU: u16 = 552;
/// RFC 1191's table of MTU plateaus, for a router that reports no next-hop MTU (the MTU
/// is taken as the plateau below the length of the packet it quotes).
const PLATEAUS: [u16; 9] = [32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296];

/// An ICMP message for this host that the engine acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmp<'a> {
    /// An echo request (ping).
    Echo(EchoRequest<'a>),
    /// A router could not forward one of our TCP segments without fragmenting it.
    FragmentationNeeded(FragmentationNeeded),
    /// One of our TCP segments could not be delivered: any other destination unreachable,
    /// or time exceeded.
    Unreachable(Unreachable),
}

/// A destination unreachable (other than "fragmentation needed") or a time exceeded about
/// a TCP segment this host sent: the connection it names, the segment's sequence number,
/// and what it says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreachable {
    /// The connection of the quoted segment, from our side.
    pub tuple: FourTuple,
    /// The quoted segment's sequence number (RFC 5927: a forged message must guess it).
    pub seq: u32,
    /// What the message says.
    pub kind: UnreachableKind,
}

/// What a destination unreachable or time exceeded says of a segment's way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnreachableKind {
    /// Protocol or port unreachable (codes 2 and 3): the destination host answered that
    /// nothing there takes the segment (RFC 1122 4.2.3.9's hard errors).
    Refused,
    /// Network or host unreachable (codes 0 and 1), or time exceeded: a router found no
    /// way to the host (the errors on which Linux also drops a peer's half-open
    /// connection).
    NoRoute,
    /// The other codes (5 to 15): a failed source route, a network or host unknown or
    /// isolated, a filter that prohibits it, a type of service or precedence refused.
    Other,
}

/// "Fragmentation needed and DF set" about a TCP segment this host sent (RFC 1191): the
/// connection it names, the segment's sequence number, and the next hop's MTU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentationNeeded {
    /// The connection of the quoted segment, from our side.
    pub tuple: FourTuple,
    /// The quoted segment's sequence number (RFC 5927: it must be in flight).
    pub seq: u32,
    /// The next hop's MTU: as the router reported it, or, when it reported none (before
    /// RFC 1191), the plateau below the quoted packet's length; at least [`MIN_PATH_MTU`].
    pub mtu: u16,
}

/// An ICMP echo request addressed to a host, as received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EchoRequest<'a> {
    /// Sender's MAC address.
    pub src_mac: MacAddr,
    /// Sender's IP address.
    pub src_ip: Ipv4Addr,
    /// Destination IP address.
    pub dst_ip: Ipv4Addr,
    /// The ICMP message (header and data, checksum verified, at least a header long),
    /// which the reply carries back with its type changed.
    message: &'a [u8],
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

/// Validate an ICMP echo request ([`parse_icmp`]; any other ICMP message is
/// [`DropReason::IcmpIgnored`]).
pub fn parse_echo_request(frame: &[u8]) -> Result<EchoRequest<'_>, DropReason> {
    match parse_icmp(frame)? {
        Icmp::Echo(e) => Ok(e),
        Icmp::FragmentationNeeded(_) | Icmp::Unreachable(_) => Err(DropReason::IcmpIgnored),
    }
}

/// Validate an ICMP message the engine acts on. The frame must be an intact IPv4 packet
/// (as [`parse_frame`] checks) carrying ICMP, at least an ICMP header long, with a correct
/// ICMP checksum ([`DropReason::BadIcmp`] otherwise). An echo request (code 0, no IP
/// options) is taken whole; a destination unreachable (codes 0 to 15) or time exceeded
/// (codes 0 and 1) must quote an IPv4 header and the first 8 bytes of a TCP segment from
/// the packet's destination ([`DropReason::BadIcmp`] otherwise); any other ICMP message is
/// [`DropReason::IcmpIgnored`]. Never panics on any input.
pub fn parse_icmp(frame: &[u8]) -> Result<Icmp<'_>, DropReason> {
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
    let addr = |b: &[u8], i: usize| Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]);
    match (message[0], message[1]) {
        // Options would have to go back in the reply, a source route reversed (RFC 1122
        // 3.2.2.6): a request with any is not answered.
        (ECHO_REQUEST, 0) if hl > IP_HDR => Err(DropReason::IcmpIgnored),
        (ECHO_REQUEST, 0) => Ok(Icmp::Echo(EchoRequest {
            src_mac: MacAddr::from_bytes(&frame[6..12]),
            src_ip: addr(ip, 12),
            dst_ip: addr(ip, 16),
            message,
        })),
        (UNREACHABLE, FRAG_NEEDED) => {
            let (us, next_hop) = (addr(ip, 16), u16::from_be_bytes([message[6], message[7]]));
            let q = quoted_segment(&message[ECHO_HDR..], us)?;
            let mtu = if next_hop != 0 {
                next_hop
            } else {
                PLATEAUS.into_iter().find(|&p| p < q.len).unwrap_or(0)
            };
            Ok(Icmp::FragmentationNeeded(FragmentationNeeded {
                tuple: q.tuple,
                seq: q.seq,
                mtu: mtu.max(MIN_PATH_MTU),
            }))
        }
        (UNREACHABLE, code @ 0..=LAST_UNREACHABLE_CODE) | (TIME_EXCEEDED, code @ 0..=1) => {
            let q = quoted_segment(&message[ECHO_HDR..], addr(ip, 16))?;
            let kind = match (message[0], code) {
                (TIME_EXCEEDED, _) => UnreachableKind::NoRoute,
                (_, NET_UNREACHABLE | HOST_UNREACHABLE) => UnreachableKind::NoRoute,
                (_, PROTO_UNREACHABLE | PORT_UNREACHABLE) => UnreachableKind::Refused,
                _ => UnreachableKind::Other,
            };
            Ok(Icmp::Unreachable(Unreachable {
                tuple: q.tuple,
                seq: q.seq,
                kind,
            }))
        }
        _ => Err(DropReason::IcmpIgnored),
    }
}

/// What an ICMP error quotes of one of our TCP segments.
struct Quoted {
    tuple: FourTuple,
    seq: u32,
    /// The quoted packet's IPv4 total length.
    len: u16,
}

/// The quoted packet of an ICMP error (its IPv4 header and at least 8 bytes of what
/// followed): one of our TCP segments (from `us`), or [`DropReason::BadIcmp`].
fn quoted_segment(quoted: &[u8], us: Ipv4Addr) -> Result<Quoted, DropReason> {
    let Some(&first) = quoted.first() else {
        return Err(DropReason::BadIcmp);
    };
    let hl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || hl < IP_HDR || quoted.len() < hl + 8 || quoted[9] != 6 {
        return Err(DropReason::BadIcmp);
    }
    let b = |i: usize| quoted[i];
    let src = Ipv4Addr::new(b(12), b(13), b(14), b(15));
    if src != us {
        return Err(DropReason::BadIcmp);
    }
    let tcp = &quoted[hl..];
    Ok(Quoted {
        tuple: FourTuple {
            local_ip: us,
            local_port: u16::from_be_bytes([tcp[0], tcp[1]]),
            remote_ip: Ipv4Addr::new(b(16), b(17), b(18), b(19)),
            remote_port: u16::from_be_bytes([tcp[2], tcp[3]]),
        },
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        len: u16::from_be_bytes([quoted[2], quoted[3]]),
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
    let [a, b] = ident.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    emit_icmp(buf, ep, (ECHO_REQUEST, 0), [a, b, c, d], data)
}

/// Build a "fragmentation needed" (for tests and tools): from `ep` (a router), with the
/// next hop's `mtu`, quoting `quoted` (the start of the IPv4 packet that did not fit).
/// Returns the frame's length, or `None` when `buf` is too small.
pub fn emit_frag_needed(buf: &mut [u8], ep: &Endpoints, mtu: u16, quoted: &[u8]) -> Option<usize> {
    let [a, b] = mtu.to_be_bytes();
    emit_icmp(buf, ep, (UNREACHABLE, FRAG_NEEDED), [0, 0, a, b], quoted)
}

/// Build an ICMP error (for tests and tools): from `ep` (a router or the far host), of
/// type `ty` and `code` (destination unreachable is 3, time exceeded 11), quoting `quoted`
/// (the start of the IPv4 packet it is about). Returns the frame's length, or `None` when
/// `buf` is too small.
pub fn emit_icmp_error(
    buf: &mut [u8],
    ep: &Endpoints,
    (ty, code): (u8, u8),
    quoted: &[u8],
) -> Option<usize> {
    emit_icmp(buf, ep, (ty, code), [0; 4], quoted)
}

/// Build an ICMP message of `(type, code)` with the header's last four bytes `rest` and
/// `body`, checksum filled.
fn emit_icmp(
    buf: &mut [u8],
    ep: &Endpoints,
    (ty, code): (u8, u8),
    rest: [u8; 4],
    body: &[u8],
) -> Option<usize> {
    let n = ECHO_HDR + body.len();
    let at = emit_ipv4_header(buf, ep, IpProtocol::Icmp, n)?;
    let msg = &mut buf[at..at + n];
    msg[..4].copy_from_slice(&[ty, code, 0, 0]);
    msg[4..ECHO_HDR].copy_from_slice(&rest);
    msg[ECHO_HDR..].copy_from_slice(body);
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

    /// The connection of `test_syn(ep().dst_ip, 80, ep().src_ip, 4000)`, from our side.
    fn our_tuple() -> FourTuple {
        FourTuple {
            local_ip: ep().dst_ip,
            local_port: 80,
            remote_ip: ep().src_ip,
            remote_port: 4000,
        }
    }

    #[test]
    fn fragmentation_needed_names_our_segment() {
        // One of our segments (from 10.0.0.2, `back`'s source), quoted by a router.
        let ours = test_syn(ep().dst_ip, 80, ep().src_ip, 4000);
        let quoted = &ours[ETH_HDR..ETH_HDR + IP_HDR + 8];
        let router = ep();
        let frag = |mtu: u16, quoted: &[u8]| {
            let mut b = vec![0u8; 256];
            let n = emit_frag_needed(&mut b, &router, mtu, quoted).unwrap();
            b.truncate(n);
            parse_icmp(&b).map(|m| match m {
                Icmp::FragmentationNeeded(f) => Some(f),
                _ => None,
            })
        };
        let want = |mtu: u16| {
            Ok(Some(FragmentationNeeded {
                tuple: our_tuple(),
                seq: 1,
                mtu,
            }))
        };
        assert_eq!(frag(1400, quoted), want(1400));
        // Below the floor: the floor.
        assert_eq!(frag(68, quoted), want(MIN_PATH_MTU));
        // No next-hop MTU (before RFC 1191): the plateau below the quoted packet's length
        // (a SYN of 44 bytes: none, so the floor; 1500 bytes: 1492).
        assert_eq!(u16::from_be_bytes([quoted[2], quoted[3]]), 44);
        assert_eq!(frag(0, quoted), want(MIN_PATH_MTU));
        let mut big = quoted.to_vec();
        big[2..4].copy_from_slice(&1500u16.to_be_bytes());
        assert_eq!(frag(0, &big), want(1492));
        // Quoting less than a header and 8 bytes, another protocol, another source, not
        // IPv4: damaged.
        assert_eq!(frag(1400, &quoted[..27]), Err(DropReason::BadIcmp));
        assert_eq!(frag(1400, &[]), Err(DropReason::BadIcmp));
        let mut udp = quoted.to_vec();
        udp[9] = 17;
        assert_eq!(frag(1400, &udp), Err(DropReason::BadIcmp));
        let mut theirs = quoted.to_vec();
        theirs[12] ^= 1;
        assert_eq!(frag(1400, &theirs), Err(DropReason::BadIcmp));
        let mut v6 = quoted.to_vec();
        v6[0] = 0x65;
        assert_eq!(frag(1400, &v6), Err(DropReason::BadIcmp));
        // An echo request is not this, nor this an echo request.
        let mut b = vec![0u8; 256];
        let n = emit_frag_needed(&mut b, &router, 1400, quoted).unwrap();
        assert_eq!(parse_echo_request(&b[..n]), Err(DropReason::IcmpIgnored));
    }

    #[test]
    fn unreachables_name_our_segment_and_tell_refusals_apart() {
        let ours = test_syn(ep().dst_ip, 80, ep().src_ip, 4000);
        let quoted = &ours[ETH_HDR..ETH_HDR + IP_HDR + 8];
        let error = |ty: u8, code: u8, quoted: &[u8]| {
            let mut b = vec![0u8; 256];
            let n = emit_icmp_error(&mut b, &ep(), (ty, code), quoted).unwrap();
            b.truncate(n);
            parse_icmp(&b).map(|m| match m {
                Icmp::Unreachable(u) => Some(u),
                _ => None,
            })
        };
        let want = |kind: UnreachableKind| {
            Ok(Some(Unreachable {
                tuple: our_tuple(),
                seq: 1,
                kind,
            }))
        };
        // Network and host unreachable and time exceeded: no route; protocol and port
        // unreachable: refused; the rest (fragmentation needed aside): other.
        use UnreachableKind::*;
        for code in 0..=15u8 {
            let kind = match code {
                FRAG_NEEDED => {
                    // Its own message.
                    assert_eq!(error(UNREACHABLE, code, quoted), Ok(None));
                    continue;
                }
                0 | 1 => NoRoute,
                2 | 3 => Refused,
                _ => Other,
            };
            assert_eq!(error(UNREACHABLE, code, quoted), want(kind), "code {code}");
        }
        assert_eq!(error(TIME_EXCEEDED, 0, quoted), want(NoRoute));
        assert_eq!(error(TIME_EXCEEDED, 1, quoted), want(NoRoute));
        // Codes nobody assigned, other types: not acted on.
        assert_eq!(error(UNREACHABLE, 16, quoted), Err(DropReason::IcmpIgnored));
        assert_eq!(
            error(TIME_EXCEEDED, 2, quoted),
            Err(DropReason::IcmpIgnored)
        );
        assert_eq!(error(12, 0, quoted), Err(DropReason::IcmpIgnored));
        assert_eq!(error(5, 1, quoted), Err(DropReason::IcmpIgnored));
        // A quote too short, of another protocol or source: damaged, as for fragmentation
        // needed.
        assert_eq!(
            error(UNREACHABLE, 3, &quoted[..27]),
            Err(DropReason::BadIcmp)
        );
        let mut theirs = quoted.to_vec();
        theirs[13] ^= 1;
        assert_eq!(error(TIME_EXCEEDED, 0, &theirs), Err(DropReason::BadIcmp));
        let mut udp = quoted.to_vec();
        udp[9] = 17;
        assert_eq!(error(UNREACHABLE, 1, &udp), Err(DropReason::BadIcmp));
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
