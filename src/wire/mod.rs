//! Ethernet / IPv4 / TCP on the wire, through `smoltcp::wire`.
//!
//! * [`parse_frame`] validates a received frame (lengths, IPv4 and TCP checksums, fragments,
//!   options) and reduces a TCP segment to a compact [`SegmentSummary`] plus its
//!   [`FourTuple`]. Every rejection names a [`DropReason`].
//! * [`HeaderTemplate`] holds a connection's constant Ethernet/IPv4/TCP header bytes, so the
//!   data path builds a segment by copying the template and patching a handful of fields.
//! * [`fill_checksums`] completes a frame right before it leaves.
//! * [`emit_tcp`] and [`emit_arp`] build arbitrary segments and ARP packets for the control
//!   plane, tests and benches.
//! * [`icmp`] validates ICMP echo requests and builds their replies (the control plane
//!   answers pings).

use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress,
    IpProtocol, Ipv4Packet, Ipv4Repr, TcpOption, TcpPacket, TcpRepr,
};

pub use smoltcp::wire::EthernetAddress as MacAddr;

use crate::stats::DropReason;

pub mod checksum;
mod emit;
pub mod icmp;
mod parse;

#[cfg(test)]
pub(crate) use emit::test_syn;
pub use emit::{
    arp_request, emit_arp, emit_tcp, emit_tcp_with_flags, fill_checksums, fill_checksums_with,
    Endpoints, HeaderTemplate, TxHeader,
};
pub use parse::{
    parse_frame, parse_frame_into, parse_options, unicast_mac, Parsed, TcpOptions, TcpSegment,
};

/// Ethernet header length.
pub const ETH_HDR: usize = 14;
/// IPv4 header length without options.
pub const IP_HDR: usize = 20;
/// TCP header length without options.
pub const TCP_HDR: usize = 20;
/// Length of the timestamp option block as sent on data segments (NOP, NOP, TS).
pub const TS_OPT_LEN: usize = 12;

/// TCP flag bits (as in the header's flag byte).
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
}

/// Sequence-number arithmetic modulo 2^32 (RFC 9293 section 3.4).
pub mod seq {
    /// `a < b`.
    #[inline]
    pub fn lt(a: u32, b: u32) -> bool {
        (a.wrapping_sub(b) as i32) < 0
    }
    /// `a <= b`.
    #[inline]
    pub fn le(a: u32, b: u32) -> bool {
        (a.wrapping_sub(b) as i32) <= 0
    }
    /// `a > b`.
    #[inline]
    pub fn gt(a: u32, b: u32) -> bool {
        lt(b, a)
    }
    /// `a >= b`.
    #[inline]
    pub fn ge(a: u32, b: u32) -> bool {
        le(b, a)
    }
}

/// A TCP connection's addresses, seen from this engine: `local` is ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FourTuple {
    /// Our IPv4 address.
    pub local_ip: Ipv4Addr,
    /// Our port.
    pub local_port: u16,
    /// The peer's IPv4 address.
    pub remote_ip: Ipv4Addr,
    /// The peer's port.
    pub remote_port: u16,
}

impl Hash for FourTuple {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Two words instead of twelve bytes: flow-table lookups hash every segment.
        state.write_u64((u32::from(self.local_ip) as u64) << 32 | u32::from(self.remote_ip) as u64);
        state.write_u32((self.local_port as u32) << 16 | self.remote_port as u32);
    }
}

/// Up to three SACK blocks (RFC 2018), `[left, right)` in sequence space, as a segment
/// carried them or as an ACK will carry them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SackBlocks {
    blocks: [(u32, u32); SACK_BLOCKS],
    len: u8,
}

/// The most SACK blocks one segment carries: three fit beside the timestamp option.
pub const SACK_BLOCKS: usize = 3;

impl SackBlocks {
    /// No blocks.
    pub const EMPTY: SackBlocks = SackBlocks {
        blocks: [(0, 0); SACK_BLOCKS],
        len: 0,
    };

    /// Add a block; ignored when three are already there.
    pub fn push(&mut self, left: u32, right: u32) {
        if (self.len as usize) < SACK_BLOCKS {
            self.blocks[self.len as usize] = (left, right);
            self.len += 1;
        }
    }

    /// The blocks, in the order they were added (the first is the most recent).
    pub fn as_slice(&self) -> &[(u32, u32)] {
        &self.blocks[..self.len as usize]
    }

    /// Whether there is no block.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.len as usize
    }
}

/// The compact description of a received segment that stages pass on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful when `flags` has ACK).
    pub ack: u32,
    /// Raw (unscaled) window field.
    pub win: u16,
    /// Offset of the payload inside the frame.
    pub payload_off: u16,
    /// Payload length.
    pub payload_len: u16,
    /// Offset in the frame of the first SACK block (when `sack_len > 0`; at most
    /// 14 + 60 + 20 + 38). The blocks stay in the frame, which travels with the summary,
    /// and [`sack_blocks`](Self::sack_blocks) reads them where a stage needs them.
    pub sack_at: u8,
    /// TCP flags byte.
    pub flags: u8,
    /// The IP header carried ECN CE.
    pub ce: bool,
    /// Number of SACK blocks the segment carries (those of its last SACK option, at most
    /// [`SACK_BLOCKS`]; 0: none).
    pub sack_len: u8,
    /// Offset in the frame of the timestamp option's value and echo (8 bytes), 0 when the
    /// segment has none. Like the SACK blocks they stay in the frame:
    /// [`timestamps`](Self::timestamps) reads them. A summary is 20 bytes, and a segment's
    /// work item ([`RxWork`](crate::stages::RxWork)) with its flow and frame 32.
    pub ts_at: u8,
    /// Not from the wire: the incarnation of the flow preprocess found for the segment
    /// ([`FlowIdentity::incarnation`](crate::flow::FlowIdentity::incarnation)); 0 (the
    /// parser's) where no flow was looked up, or it was installed without one. The protocol
    /// stage drops a segment whose incarnation is not its flow's: one of an earlier
    /// connection that had the same flow id, still on its way when the id was reused.
    pub incarnation: u8,
}

const _: () = assert!(std::mem::size_of::<SegmentSummary>() == 20);

impl SegmentSummary {
    /// Whether all flags in `f` are set.
    pub fn has(&self, f: u8) -> bool {
        self.flags & f == f
    }

    /// Whether the segment carries a timestamp option.
    pub fn has_ts(&self) -> bool {
        self.ts_at != 0
    }

    /// The peer's timestamp value and echo (RFC 7323), read from `frame` (the bytes of the
    /// frame this summary was parsed from); `None` when the segment has no timestamp option
    /// (or `frame` is too short to hold it).
    #[inline]
    pub fn timestamps(&self, frame: &[u8]) -> Option<(u32, u32)> {
        if self.ts_at == 0 {
            return None;
        }
        let at = usize::from(self.ts_at);
        let b: &[u8; 8] = frame.get(at..at + 8)?.try_into().ok()?;
        Some((
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ))
    }

    /// The SACK blocks the segment carries, read from `frame` (the bytes of the frame this
    /// summary was parsed from). Unvalidated: the protocol stage checks them against what
    /// it sent. Blocks that would lie outside `frame` are left out.
    pub fn sack_blocks(&self, frame: &[u8]) -> SackBlocks {
        let mut out = SackBlocks::EMPTY;
        let start = usize::from(self.sack_at);
        for i in 0..usize::from(self.sack_len).min(SACK_BLOCKS) {
            let Some(b) = frame.get(start + 8 * i..start + 8 * i + 8) else {
                break;
            };
            out.push(
                u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{TcpControl, TcpSeqNumber, TcpTimestampRepr};

    /// An ACK from 10.0.0.1:1000 to 10.0.0.2:80 with the TCP option bytes `opts` (a
    /// multiple of 4 long), checksums filled.
    fn with_options(opts: &[u8]) -> Vec<u8> {
        let tcp_len = TCP_HDR + opts.len();
        let mut f = vec![0u8; ETH_HDR + IP_HDR + tcp_len];
        // A station's source address (a group or zero one is dropped first).
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[ETH_HDR..ETH_HDR + IP_HDR];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((IP_HDR + tcp_len) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let t = &mut f[ETH_HDR + IP_HDR..];
        t[0..2].copy_from_slice(&1000u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[12] = ((tcp_len / 4) as u8) << 4;
        t[13] = flags::ACK;
        t[14..16].copy_from_slice(&1000u16.to_be_bytes());
        t[TCP_HDR..].copy_from_slice(opts);
        fill_checksums(&mut f);
        f
    }

    proptest::proptest! {
        /// A TCP checksum filled from the payload's sum made beforehand (as placement makes
        /// it while copying) equals the one that reads the payload; a claimed length past the
        /// segment is ignored, not trusted.
        #[test]
        fn checksum_from_a_known_payload_sum_is_the_full_one(
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1600),
            opts in 0usize..3,
        ) {
            let mut f = with_options(&vec![1u8; 4 * opts]);
            f.extend_from_slice(&payload);
            let ip_len = (f.len() - ETH_HDR) as u16;
            f[ETH_HDR + 2..ETH_HDR + 4].copy_from_slice(&ip_len.to_be_bytes());
            let mut full = f.clone();
            fill_checksums(&mut full);
            let sum = checksum::Sum::default().add_bytes(&payload).fold();
            let mut known = f.clone();
            fill_checksums_with(&mut known, Some((payload.len(), sum)));
            proptest::prop_assert_eq!(&known, &full);
            let mut past = f.clone();
            fill_checksums_with(&mut past, Some((f.len(), sum)));
            proptest::prop_assert_eq!(&past, &full);
        }
    }

    fn sack_option(blocks: &[(u32, u32)]) -> Vec<u8> {
        let mut o = vec![5, (2 + 8 * blocks.len()) as u8];
        for (l, r) in blocks {
            o.extend_from_slice(&l.to_be_bytes());
            o.extend_from_slice(&r.to_be_bytes());
        }
        o
    }

    /// Timestamps are read from the frame where the summary says, on the fast path (NOP NOP
    /// TS) and on the general one: with IP options, and with two timestamp options, of which
    /// the last counts as in the full parse. (The frames are in the preprocess fuzz corpus,
    /// whose target checks the same for every frame preprocess passes on.)
    #[test]
    fn timestamps_are_read_where_the_summary_says() {
        let cases: [(&[u8], (u32, u32), usize); 2] = [
            (
                include_bytes!(
                    "../../fuzz/corpus/preprocess/eabb8de0821a421e40bbfd3e58b318429c9fbc3e"
                ),
                (0x1122_3344, 0x5566_7788),
                ETH_HDR + IP_HDR + TCP_HDR + 4,
            ),
            (
                include_bytes!(
                    "../../fuzz/corpus/preprocess/5cbbf0a1d3709437bb36b44deb7c478b28f688fe"
                ),
                (0xA1B2_C3D4, 0x0102_0304),
                ETH_HDR + IP_HDR + 4 + TCP_HDR + 14,
            ),
        ];
        for (f, want, at) in cases {
            let Ok(Parsed::Tcp(seg)) = parse_frame(f) else {
                panic!("not parsed: {f:?}");
            };
            assert_eq!(seg.options.timestamp, Some(want));
            assert_eq!(seg.summary.timestamps(f), Some(want));
            assert_eq!(usize::from(seg.summary.ts_at), at);
            assert!(!seg.options.unexpected);
        }
    }

    /// `parse_frame_into` leaves its output as it was when a frame's options are malformed,
    /// after a frame with timestamps and one with SACK blocks.
    #[test]
    fn a_failed_parse_into_leaves_the_output_as_it_was() {
        let ts = [1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7];
        let sack = [vec![1, 1], sack_option(&[(1, 2)])].concat();
        for opts in [&ts[..], &sack[..]] {
            let mut out = TcpSegment::EMPTY;
            assert!(parse_frame_into(&with_options(opts), &mut out).is_ok());
            let before = out;
            // An MSS option whose length byte says 1.
            let bad = with_options(&[2, 1, 1, 1]);
            assert_eq!(
                parse_frame_into(&bad, &mut out),
                Err(crate::stats::DropReason::BadTcpOptions)
            );
            assert_eq!(out, before, "{opts:?}");
        }
    }

    /// SACK layouts other than the usual timestamps-then-SACK: four blocks (the first three
    /// are kept), SACK before the timestamps, and two SACK options (the last one counts).
    #[test]
    fn sack_blocks_are_found_in_any_option_layout() {
        let b = [(1u32, 2u32), (3, 4), (5, 6), (7, 8)];
        let ts = [8, 10, 0, 0, 0, 9, 0, 0, 0, 7];
        // (option bytes, the blocks expected, timestamps present)
        type Case<'a> = (Vec<u8>, &'a [(u32, u32)], bool);
        let cases: Vec<Case> = vec![
            ([sack_option(&b), vec![1, 1]].concat(), &b[..3], false),
            ([sack_option(&b[..1]), ts.to_vec()].concat(), &b[..1], true),
            (
                [
                    sack_option(&b[..1]),
                    sack_option(&b[1..2]),
                    vec![1, 1, 1, 1],
                ]
                .concat(),
                &b[1..2],
                false,
            ),
            (
                [vec![1, 1], ts.to_vec(), sack_option(&b[2..4]), vec![1, 1]].concat(),
                &b[2..4],
                true,
            ),
        ];
        for (opts, want, has_ts) in cases {
            let f = with_options(&opts);
            let Ok(Parsed::Tcp(seg)) = parse_frame(&f) else {
                panic!("not parsed: {opts:?}");
            };
            let s = seg.summary;
            assert_eq!(s.sack_blocks(&f).as_slice(), want, "{opts:?}");
            assert_eq!(usize::from(s.sack_len), want.len());
            assert_eq!(s.has_ts(), has_ts);
            // Read from the frame at the offset the summary keeps, as parsed.
            assert_eq!(s.timestamps(&f), seg.options.timestamp, "{opts:?}");
            assert!(usize::from(s.sack_at) + 8 * want.len() <= usize::from(s.payload_off));
            assert!(!seg.options.unexpected);
        }
    }

    /// Addresses for frames the unit tests of the wire modules build.
    pub(super) fn ep() -> Endpoints {
        Endpoints {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
        }
    }

    fn repr(payload: &[u8]) -> TcpRepr<'_> {
        TcpRepr {
            src_port: 1000,
            dst_port: 2000,
            control: TcpControl::Psh,
            seq_number: TcpSeqNumber(7),
            ack_number: Some(TcpSeqNumber(9)),
            window_len: 100,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: Some(TcpTimestampRepr::new(5, 6)),
            payload,
        }
    }

    #[test]
    fn emit_parse_round_trip() {
        let mut buf = [0u8; 200];
        let n = emit_tcp(&mut buf, &ep(), &repr(b"hello")).unwrap();
        let Parsed::Tcp(seg) = parse_frame(&buf[..n]).unwrap() else {
            panic!("not tcp")
        };
        assert_eq!(seg.tuple.local_port, 2000);
        assert_eq!(seg.tuple.remote_ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(seg.summary.seq, 7);
        assert_eq!(seg.summary.ack, 9);
        assert_eq!(seg.summary.timestamps(&buf[..n]), Some((5, 6)));
        assert_eq!(seg.summary.payload_len, 5);
        let off = seg.summary.payload_off as usize;
        assert_eq!(&buf[off..off + 5], b"hello");
        // Corrupt one payload byte: the TCP checksum catches it.
        buf[off] ^= 1;
        assert_eq!(parse_frame(&buf[..n]), Err(DropReason::BadTcpChecksum));
        buf[off] ^= 1;
        buf[ETH_HDR + 8] ^= 1; // TTL: IP checksum.
        assert_eq!(parse_frame(&buf[..n]), Err(DropReason::BadIpChecksum));
        assert_eq!(parse_frame(&buf[..20]), Err(DropReason::Truncated));
    }

    #[test]
    fn template_matches_smoltcp_emitter() {
        let e = ep();
        let t = FourTuple {
            local_ip: e.src_ip,
            local_port: 1000,
            remote_ip: e.dst_ip,
            remote_port: 2000,
        };
        let tpl = HeaderTemplate::new(e.src_mac, e.dst_mac, &t, true);
        let mut a = [0u8; 200];
        let hl = tpl.write(
            &mut a,
            &TxHeader {
                seq: 7,
                ack: 9,
                flags: flags::ACK | flags::PSH,
                win: 100,
                ts_val: 5,
                ts_ecr: 6,
                payload_len: 5,
                sack: SackBlocks::EMPTY,
                ect: false,
            },
        );
        a[hl..hl + 5].copy_from_slice(b"hello");
        fill_checksums(&mut a[..hl + 5]);
        let Parsed::Tcp(seg) = parse_frame(&a[..hl + 5]).unwrap() else {
            panic!()
        };
        assert_eq!(seg.summary.flags, flags::ACK | flags::PSH);
        assert_eq!(seg.summary.win, 100);
        assert_eq!(seg.summary.timestamps(&a[..hl + 5]), Some((5, 6)));
        assert_eq!(seg.summary.payload_len, 5);
    }

    #[test]
    fn pure_ack_carries_sack_blocks_both_with_and_without_timestamps() {
        let e = ep();
        let t = FourTuple {
            local_ip: e.src_ip,
            local_port: 1000,
            remote_ip: e.dst_ip,
            remote_port: 2000,
        };
        for ts in [true, false] {
            let tpl = HeaderTemplate::new(e.src_mac, e.dst_mac, &t, ts);
            let mut sack = SackBlocks::EMPTY;
            sack.push(100, 200);
            sack.push(300, 400);
            sack.push(u32::MAX - 5, 10);
            sack.push(1, 2); // a fourth is ignored
            let mut a = [0u8; 200];
            let h = TxHeader {
                seq: 7,
                ack: 9,
                flags: flags::ACK,
                win: 100,
                ts_val: 5,
                ts_ecr: 6,
                payload_len: 0,
                sack,
                ect: false,
            };
            let hl = tpl.write(&mut a, &h);
            assert_eq!(hl, tpl.len() + 28);
            fill_checksums(&mut a[..hl]);
            let Parsed::Tcp(seg) = parse_frame(&a[..hl]).unwrap() else {
                panic!()
            };
            assert_eq!(seg.summary.payload_len, 0);
            assert_eq!(
                seg.summary.sack_blocks(&a[..hl]).as_slice(),
                &[(100, 200), (300, 400), (u32::MAX - 5, 10)]
            );
            assert!(!seg.options.unexpected);
            assert_eq!(seg.summary.has_ts(), ts);
            // With payload the blocks are left out: the payload sits right after the template.
            let hl = tpl.write(
                &mut a,
                &TxHeader {
                    payload_len: 3,
                    ..h
                },
            );
            assert_eq!(hl, tpl.len());
        }
    }

    #[test]
    fn seq_compare_wraps() {
        assert!(seq::lt(u32::MAX, 0));
        assert!(seq::gt(5, u32::MAX - 5));
        assert!(seq::le(3, 3) && seq::ge(3, 3));
    }

    #[test]
    fn bad_option_lengths_rejected() {
        assert!(parse_options(&[2, 0], true).is_err());
        assert!(parse_options(&[8, 1, 0], true).is_err());
        let o = parse_options(&[1, 1, 3, 3, 7, 4, 2], true).unwrap();
        assert_eq!(o.window_scale, Some(7));
        assert!(o.sack_permitted);
        let o = parse_options(&[30, 3, 0], false).unwrap();
        assert!(o.unexpected);
    }
}
