//! Reading frames: validation and the segment summary (never a panic on any input).

use super::*;

/// The TCP options the engine understands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOptions {
    /// Maximum segment size.
    pub mss: Option<u16>,
    /// Window scale shift (clamped to 14).
    pub window_scale: Option<u8>,
    /// SACK permitted.
    pub sack_permitted: bool,
    /// Timestamps (value, echo).
    pub timestamp: Option<(u32, u32)>,
    /// Number of SACK blocks (of the last SACK option; at most three are counted).
    pub sack_len: u8,
    /// Offset of the last SACK option's first block in the option block.
    pub sack_at: u8,
    /// Offset of the (last) timestamp option's value in the option block (when
    /// `timestamp` is set).
    pub ts_at: u8,
    /// Options that data segments should not carry (MSS, window scale or SACK-permitted
    /// outside SYN, unknown kinds) were present.
    pub unexpected: bool,
}

/// A received TCP segment, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSegment {
    /// The connection, from our side.
    pub tuple: FourTuple,
    /// Sender's MAC address.
    pub src_mac: MacAddr,
    /// The summary stages pass on.
    pub summary: SegmentSummary,
    /// Parsed options.
    pub options: TcpOptions,
}

impl TcpSegment {
    /// A placeholder to parse into ([`parse_frame_into`]): all addresses and fields zero.
    pub const EMPTY: TcpSegment = TcpSegment {
        tuple: FourTuple {
            local_ip: Ipv4Addr::UNSPECIFIED,
            local_port: 0,
            remote_ip: Ipv4Addr::UNSPECIFIED,
            remote_port: 0,
        },
        src_mac: MacAddr([0; 6]),
        summary: SegmentSummary {
            seq: 0,
            ack: 0,
            win: 0,
            payload_off: 0,
            payload_len: 0,
            sack_at: 0,
            flags: 0,
            ce: false,
            sack_len: 0,
            ts_at: 0,
            incarnation: 0,
        },
        options: TcpOptions {
            mss: None,
            window_scale: None,
            sack_permitted: false,
            timestamp: None,
            sack_len: 0,
            sack_at: 0,
            ts_at: 0,
            unexpected: false,
        },
    };
}

/// A validated received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A TCP segment.
    Tcp(TcpSegment),
    /// An ARP packet.
    Arp(ArpRepr),
}

/// Validate a frame and summarize it. Checks lengths, the IPv4 header checksum, the TCP
/// checksum, fragments and options; never panics on any input.
#[inline(always)]
pub fn parse_frame(data: &[u8]) -> Result<Parsed, DropReason> {
    let mut seg = TcpSegment::EMPTY;
    match parse_frame_into(data, &mut seg)? {
        None => Ok(Parsed::Tcp(seg)),
        Some(arp) => Ok(Parsed::Arp(arp)),
    }
}

/// [`parse_frame`], writing a TCP segment's fields into `out` (a stage's own, reused from
/// frame to frame) instead of returning them: `Ok(None)` for a TCP segment (now in `out`),
/// `Ok(Some(_))` for an ARP packet. On an error, and for ARP, `out` is left as it was.
#[inline(always)]
pub fn parse_frame_into(data: &[u8], out: &mut TcpSegment) -> Result<Option<ArpRepr>, DropReason> {
    let eth = EthernetFrame::new_checked(data).map_err(|_| DropReason::Truncated)?;
    if !unicast_mac(eth.src_addr()) {
        return Err(DropReason::BadSourceMac);
    }
    match eth.ethertype() {
        EthernetProtocol::Arp => {
            let pkt = ArpPacket::new_checked(eth.payload()).map_err(|_| DropReason::BadArp)?;
            let repr = ArpRepr::parse(&pkt).map_err(|_| DropReason::BadArp)?;
            Ok(Some(repr))
        }
        EthernetProtocol::Ipv4 => {
            parse_ipv4(eth.src_addr(), eth.payload(), out)?;
            Ok(None)
        }
        _ => Err(DropReason::UnsupportedEthertype),
    }
}

/// Whether `mac` can be a station's own address: not a group address (the first octet's
/// lowest bit: broadcast, multicast) and not all zero.
#[inline(always)]
pub fn unicast_mac(mac: MacAddr) -> bool {
    mac.0[0] & 1 == 0 && mac.0 != [0; 6]
}

#[inline(always)]
fn parse_ipv4(src_mac: MacAddr, data: &[u8], out: &mut TcpSegment) -> Result<(), DropReason> {
    if data.len() < IP_HDR {
        return Err(DropReason::Truncated);
    }
    if data[0] >> 4 != 4 {
        return Err(DropReason::BadIpHeader);
    }
    let hl = usize::from(data[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([data[2], data[3]]));
    if hl < IP_HDR || total < hl {
        return Err(DropReason::BadIpHeader);
    }
    if data.len() < total {
        return Err(DropReason::Truncated);
    }
    if !checksum::ipv4_header_ok(&data[..hl]) {
        return Err(DropReason::BadIpChecksum);
    }
    // More-fragments flag or a fragment offset.
    if u16::from_be_bytes([data[6], data[7]]) & 0x3fff != 0 {
        return Err(DropReason::Fragment);
    }
    if data[9] != 6 {
        return Err(DropReason::NotTcp);
    }
    let ce = data[1] & 3 == 3;
    // Whole-word loads: the flow lookup reads these back as words right away.
    let src = Ipv4Addr::from(u32::from_be_bytes([data[12], data[13], data[14], data[15]]));
    let dst = Ipv4Addr::from(u32::from_be_bytes([data[16], data[17], data[18], data[19]]));
    let tcp_bytes = &data[hl..total];
    if tcp_bytes.len() < TCP_HDR {
        return Err(DropReason::BadTcpHeader);
    }
    let thl = usize::from(tcp_bytes[12] >> 4) * 4;
    if thl < TCP_HDR || thl > tcp_bytes.len() {
        return Err(DropReason::BadTcpHeader);
    }
    let be16 = |i: usize| u16::from_be_bytes([tcp_bytes[i], tcp_bytes[i + 1]]);
    let be32 = |i: usize| {
        u32::from_be_bytes([
            tcp_bytes[i],
            tcp_bytes[i + 1],
            tcp_bytes[i + 2],
            tcp_bytes[i + 3],
        ])
    };
    let (src_port, dst_port) = (be16(0), be16(2));
    if src_port == 0 || dst_port == 0 {
        return Err(DropReason::BadTcpHeader);
    }
    if !checksum::tcp_ok(src, dst, tcp_bytes) {
        return Err(DropReason::BadTcpChecksum);
    }
    let flag_byte = tcp_bytes[13];
    if flag_byte & flags::SYN != 0 && flag_byte & (flags::FIN | flags::RST) != 0 {
        return Err(DropReason::BadTcpHeader);
    }
    let syn = flag_byte & flags::SYN != 0;
    // Parsed in place: the options of a segment cost no copy.
    parse_options_into(&tcp_bytes[TCP_HDR..thl], syn, &mut out.options)?;
    let options = &out.options;
    let payload_len = tcp_bytes.len() - thl;
    out.summary = SegmentSummary {
        seq: be32(4),
        ack: be32(8),
        win: be16(14),
        payload_off: (ETH_HDR + hl + thl) as u16,
        payload_len: payload_len as u16,
        // At most 14 + 60 + 20 + 38: fits a byte.
        sack_at: if options.sack_len > 0 {
            (ETH_HDR + hl + TCP_HDR + usize::from(options.sack_at)) as u8
        } else {
            0
        },
        flags: flag_byte,
        ce,
        sack_len: options.sack_len,
        // At most 14 + 60 + 20 + 32: fits a byte, and is never 0 for an option.
        ts_at: if options.timestamp.is_some() {
            (ETH_HDR + hl + TCP_HDR + usize::from(options.ts_at)) as u8
        } else {
            0
        },
        incarnation: 0,
    };
    out.tuple = FourTuple {
        local_ip: dst,
        local_port: dst_port,
        remote_ip: src,
        remote_port: src_port,
    };
    out.src_mac = src_mac;
    Ok(())
}

/// Parse a TCP option block. Malformed blocks are an error; unknown kinds are skipped by
/// length and flagged as unexpected.
#[inline(always)]
pub fn parse_options(mut opts: &[u8], syn: bool) -> Result<TcpOptions, DropReason> {
    let mut out = TcpOptions::default();
    if parse_common_options(opts, &mut out) {
        return Ok(out);
    }
    let block_len = opts.len();
    while !opts.is_empty() {
        // Lengths of 0 or 1 for multi-byte options would loop or mislead; reject them.
        if opts[0] > 1 && opts.get(1).is_some_and(|l| *l < 2) {
            return Err(DropReason::BadTcpOptions);
        }
        let (rest, opt) = TcpOption::parse(opts).map_err(|_| DropReason::BadTcpOptions)?;
        match opt {
            TcpOption::EndOfList => break,
            TcpOption::NoOperation => {}
            TcpOption::MaxSegmentSize(m) => {
                out.mss = Some(m);
                out.unexpected |= !syn;
            }
            TcpOption::WindowScale(s) => {
                out.window_scale = Some(s.min(14));
                out.unexpected |= !syn;
            }
            TcpOption::SackPermitted => {
                out.sack_permitted = true;
                out.unexpected |= !syn;
            }
            TcpOption::TimeStamp { tsval, tsecr } => {
                out.timestamp = Some((tsval, tsecr));
                // `opts` is a suffix of the block (at most 40 bytes) still holding this
                // 10-byte option: at most 32.
                out.ts_at = (block_len - opts.len() + 2) as u8;
            }
            TcpOption::SackRange(_) => {
                // Its length was checked (8n + 2, n >= 1); the blocks stay where they are.
                let n = opts
                    .get(1)
                    .map_or(0, |l| usize::from(*l).saturating_sub(2) / 8);
                out.sack_len = n.min(SACK_BLOCKS) as u8;
                out.sack_at = (block_len - opts.len() + 2) as u8;
            }
            TcpOption::Unknown { .. } => out.unexpected = true,
        }
        opts = rest;
    }
    Ok(out)
}

/// [`parse_options`] into `out`, left as it was on an error. The blocks of established
/// segments (none, or NOP NOP TS) are written in place: no copy of the options per segment.
#[inline(always)]
fn parse_options_into(opts: &[u8], syn: bool, out: &mut TcpOptions) -> Result<(), DropReason> {
    if !parse_common_options(opts, out) {
        *out = parse_options(opts, syn)?;
    }
    Ok(())
}

/// The blocks of established segments: none, or NOP NOP TS (RFC 7323 appendix A), written
/// into `out` whole; `false` (nothing written) for any other block.
#[inline(always)]
fn parse_common_options(opts: &[u8], out: &mut TcpOptions) -> bool {
    match opts {
        [] => *out = TcpOptions::default(),
        [1, 1, 8, 10, v @ ..] if v.len() == 8 => {
            let tsval = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
            let tsecr = u32::from_be_bytes([v[4], v[5], v[6], v[7]]);
            *out = TcpOptions {
                timestamp: Some((tsval, tsecr)),
                ts_at: 4,
                ..TcpOptions::default()
            };
        }
        _ => return false,
    }
    true
}
