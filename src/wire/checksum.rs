//! The Internet checksum (RFC 1071) of IPv4 headers and TCP segments.
//!
//! The one's-complement sum does not depend on byte order (RFC 1071 section 2(B)), so the
//! data is summed as native-endian words and folded to 16 bits at the end: a run shorter
//! than 256 bytes (headers, small segments) as 64-bit words into 128-bit totals (an add and
//! an add-with-carry per 8 bytes, two carry chains side by side: the fewest instructions),
//! a longer one as 16-bit words into 32-bit totals (adds with no carry between them, which
//! the compiler runs in vector lanes: more instructions, less time; on x86-64 the lanes are
//! AVX2's where the CPU has them, chosen at run time). Transmit payload is summed as placement copies it into the frame, while it is in the
//! cache ([`PayloadOp::sum`](crate::stages::PayloadOp::sum)); the checksum of the frame then
//! reads only its headers ([`fill_checksums_with`](super::fill_checksums_with)).

use std::net::Ipv4Addr;

/// From this many bytes on, [`Sum::add_bytes`] sums in vector lanes.
const LANES_FROM: usize = 256;
/// The most bytes summed into one 32-bit total in lanes.
const LANE_BLOCK: usize = 1 << 16;

/// The 32-bit total of one block of [`Sum::add_lanes`] (at most [`LANE_BLOCK`] bytes, a
/// multiple of 4), as 16-bit words. Compiled twice on x86-64: for the baseline (SSE2 lanes)
/// and with AVX2 (lanes twice as wide), the second chosen at run time where the CPU has it,
/// which takes about 40% off a full-sized segment's sum (21 against 36 ns for 1448 bytes on
/// the project's machine).
#[multiversion::multiversion(targets("x86_64+avx2"), dispatcher = "direct")]
fn lane_block(block: &[u8]) -> u32 {
    lane_block_body(block)
}

/// What [`lane_block`] compiles for each target: inlined into each of its copies, built with
/// that copy's instructions.
#[inline(always)]
fn lane_block_body(block: &[u8]) -> u32 {
    let (words, _) = block.as_chunks::<4>();
    let mut total = 0u32;
    for w in words {
        total += u32::from(u16::from_ne_bytes([w[0], w[1]]));
        total += u32::from(u16::from_ne_bytes([w[2], w[3]]));
    }
    total
}

/// A running sum: add byte runs that start at even offsets of the checksummed data, then
/// [`fold`](Sum::fold).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sum(u64);

impl Sum {
    /// Add `data`. It must start at an even offset of the checksummed data (every run but
    /// the last must have even length). One copy of the loop serves every caller (headers
    /// and segments, sent and received): its code stays in the instruction cache.
    #[inline(never)]
    pub fn add_bytes(self, data: &[u8]) -> Sum {
        if data.len() < 32 {
            return self.add_short(data);
        }
        if data.len() >= LANES_FROM {
            return self.add_lanes(data);
        }
        // 64-bit words summed into 128-bit totals (an add and an add-with-carry per word);
        // 2^64 is 1 in one's complement arithmetic modulo 0xffff, so a high half adds in as
        // it is.
        let mut chunks = data.chunks_exact(32);
        // Two totals, for even and odd words: two carry chains that run side by side.
        let mut wide = [0u128; 2];
        for c in &mut chunks {
            for i in 0..4 {
                wide[i & 1] += u128::from(u64::from_ne_bytes([
                    c[8 * i],
                    c[8 * i + 1],
                    c[8 * i + 2],
                    c[8 * i + 3],
                    c[8 * i + 4],
                    c[8 * i + 5],
                    c[8 * i + 6],
                    c[8 * i + 7],
                ]));
            }
        }
        // What is left: 8-byte words, then a 4-byte word, then 0..3 bytes (their offsets keep
        // their parity: a run starts at an even offset), into one total.
        let mut total = wide[0] + wide[1];
        let mut words = chunks.remainder().chunks_exact(8);
        for w in &mut words {
            total += u128::from(u64::from_ne_bytes([
                w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7],
            ]));
        }
        let mut rest = words.remainder();
        if rest.len() >= 4 {
            total += u128::from(u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]));
            rest = &rest[4..];
        }
        if !rest.is_empty() {
            let mut b = [0u8; 4];
            b[..rest.len()].copy_from_slice(rest);
            total += u128::from(u32::from_ne_bytes(b));
        }
        let (lo, hi) = (total as u64, (total >> 64) as u64);
        let acc = self.0 + hi + (lo & 0xffff_ffff) + (lo >> 32);
        Sum(acc)
    }

    /// [`add_bytes`](Self::add_bytes) for a long run (a full-sized segment's payload):
    /// 16-bit words into a 32-bit total, adds with no carry from one to the next, which the
    /// compiler spreads over vector lanes. More instructions than the carry chains, less
    /// time once the run is long. A block of at most 64 KiB (32 Ki words of at most 0xffff)
    /// cannot overflow the total. Not inlined: [`add_bytes`](Self::add_bytes) reaches it by a
    /// tail call and stays a leaf function (no registers saved) for the short runs of
    /// headers and small segments.
    #[inline(never)]
    fn add_lanes(self, data: &[u8]) -> Sum {
        let mut acc = self.0;
        let mut rest = data;
        while rest.len() >= 4 {
            let (block, tail) = rest.split_at(rest.len().min(LANE_BLOCK) & !3);
            acc += u64::from(lane_block(block));
            rest = tail;
        }
        // 0..3 bytes left; the run started at an even offset, so they do too.
        if let [a, b, ..] = rest {
            acc += u64::from(u16::from_ne_bytes([*a, *b]));
            rest = &rest[2..];
        }
        if let [a] = rest {
            acc += u64::from(u16::from_ne_bytes([*a, 0]));
        }
        Sum(acc)
    }

    /// [`add_bytes`](Self::add_bytes) for a run of fewer than 32 bytes (a header): 4-byte
    /// words, then 0..3 bytes, with none of the long loop's setup.
    #[inline(always)]
    fn add_short(self, data: &[u8]) -> Sum {
        let mut acc = self.0;
        let mut words = data.chunks_exact(4);
        for w in &mut words {
            acc += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 4];
            b[..rest.len()].copy_from_slice(rest);
            acc += u64::from(u32::from_ne_bytes(b));
        }
        Sum(acc)
    }

    /// Add four bytes that start at an even offset of the checksummed data.
    #[inline(always)]
    pub fn add_word(self, bytes: [u8; 4]) -> Sum {
        Sum(self.0 + u64::from(u32::from_ne_bytes(bytes)))
    }

    /// Add the folded sum ([`fold`](Sum::fold)) of a run that starts at an even offset of
    /// the checksummed data, as if its bytes were added.
    #[inline]
    pub fn add_folded(self, folded: [u8; 2]) -> Sum {
        Sum(self.0 + u64::from(u16::from_ne_bytes(folded)))
    }

    /// Add the TCP pseudo-header (RFC 9293 section 3.1) for a segment of `tcp_len` bytes.
    #[inline]
    pub fn pseudo_header(self, src: Ipv4Addr, dst: Ipv4Addr, tcp_len: u16) -> Sum {
        let l = tcp_len.to_be_bytes();
        let mut acc = self.0;
        acc += u64::from(u32::from_ne_bytes(src.octets()));
        acc += u64::from(u32::from_ne_bytes(dst.octets()));
        acc += u64::from(u32::from_ne_bytes([0, 6, l[0], l[1]]));
        Sum(acc)
    }

    /// The 16-bit one's-complement sum, as the bytes it has on the wire.
    #[inline]
    pub fn fold(self) -> [u8; 2] {
        // The high half of `x + rotate(x, half)` is the one's-complement sum of x's two
        // halves: the carry out of the low half's sum lands in it (end-around carry).
        let s = self.0;
        let s32 = (s.wrapping_add(s.rotate_right(32)) >> 32) as u32;
        let s16 = (s32.wrapping_add(s32.rotate_right(16)) >> 16) as u16;
        s16.to_ne_bytes()
    }

    /// The checksum field value for the summed data (its complement), as wire bytes.
    #[inline]
    pub fn checksum(self) -> [u8; 2] {
        let [a, b] = self.fold();
        [!a, !b]
    }

    /// Whether data that includes its own checksum field sums correctly.
    #[inline]
    pub fn verifies(self) -> bool {
        self.fold() == [0xff, 0xff]
    }
}

/// Whether an IPv4 header (with its options) carries a correct checksum.
#[inline]
pub fn ipv4_header_ok(header: &[u8]) -> bool {
    // The usual header without options: five words, summed here without a loop.
    if let Ok(h) = <&[u8; 20]>::try_from(header) {
        let w = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
        return Sum(w(0) + w(4) + w(8) + w(12) + w(16)).verifies();
    }
    Sum::default().add_bytes(header).verifies()
}

/// Whether a TCP segment (header and payload) carries a correct checksum.
#[inline]
pub fn tcp_ok(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> bool {
    if segment.len() > usize::from(u16::MAX) {
        return false;
    }
    Sum::default()
        .pseudo_header(src, dst, segment.len() as u16)
        .add_bytes(segment)
        .verifies()
}

/// Fill the checksum of an IPv4 header (bytes 10..12).
#[inline]
pub fn fill_ipv4_header(header: &mut [u8]) {
    header[10] = 0;
    header[11] = 0;
    let c = Sum::default().add_bytes(header).checksum();
    header[10..12].copy_from_slice(&c);
}

/// Fill the checksum of a TCP segment (bytes 16..18 of its header).
#[inline]
pub fn fill_tcp(src: Ipv4Addr, dst: Ipv4Addr, segment: &mut [u8]) {
    fill_tcp_with(src, dst, segment, None);
}

/// [`fill_tcp`], with the folded sum of the segment's last `n` bytes already known
/// (`Some((n, sum))`, `n` even or the whole payload): only the bytes before them are read.
#[inline]
pub fn fill_tcp_with(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    segment: &mut [u8],
    payload: Option<(usize, [u8; 2])>,
) {
    segment[16] = 0;
    segment[17] = 0;
    let s = Sum::default().pseudo_header(src, dst, segment.len() as u16);
    let c = match payload {
        Some((n, sum)) if n <= segment.len() && (segment.len() - n).is_multiple_of(2) => s
            .add_bytes(&segment[..segment.len() - n])
            .add_folded(sum)
            .checksum(),
        _ => s.add_bytes(segment).checksum(),
    };
    segment[16..18].copy_from_slice(&c);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket};

    /// RFC 1071's reference: 16-bit big-endian words, end-around carry.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            s += u32::from(w);
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    /// Folding by repeated end-around carries, one step at a time.
    fn reference_fold(mut s: u64) -> u16 {
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn folding_edges() {
        for s in [
            0,
            1,
            0xffff,
            0x1_0000,
            0xffff_ffff,
            0x1_0000_0000,
            // Halves that sum to exactly 2^32 and to 2^32 - 1.
            0x8000_0000_8000_0000,
            0x0000_0001_ffff_fffe,
            u64::MAX,
            u64::MAX - 1,
        ] {
            assert_eq!(
                u16::from_ne_bytes(Sum(s).fold()),
                reference_fold(s),
                "{s:#x}"
            );
        }
    }

    /// Runs on either side of where the sum moves to vector lanes, and of a lane block's
    /// end, all ones (the largest totals) and a pattern, from even offsets.
    #[test]
    fn both_loops_and_their_edges_match_the_reference() {
        let pattern: Vec<u8> = (0..2 * LANE_BLOCK + 10)
            .map(|i| (i * 37 + 11) as u8)
            .collect();
        let ones = vec![0xffu8; pattern.len()];
        let edges = (LANES_FROM - 5..LANES_FROM + 6).chain(LANE_BLOCK - 3..LANE_BLOCK + 6);
        for len in edges.chain([2 * LANE_BLOCK, 2 * LANE_BLOCK + 7]) {
            for (data, start) in [(&pattern, 0), (&pattern, 2), (&ones, 0)] {
                let run = &data[start..start + len];
                let c = Sum::default().add_bytes(run).checksum();
                assert_eq!(
                    u16::from_be_bytes(c),
                    reference(run),
                    "{len} bytes from {start}"
                );
            }
        }
    }

    /// Both builds of the lane loop, the one the CPU's features pick (AVX2 where there is
    /// AVX2, as on the project's machines) and the baseline one the other tests do not reach
    /// there, give a plain loop's total, on lengths around a vector's width and a block's end.
    #[test]
    fn both_builds_of_the_lane_loop_give_the_plain_total() {
        let pattern: Vec<u8> = (0..LANE_BLOCK + 64).map(|i| (i * 91 + 7) as u8).collect();
        let ones = vec![0xffu8; LANE_BLOCK];
        let plain = |d: &[u8]| -> u32 {
            d.chunks(2)
                .map(|w| u32::from(u16::from_ne_bytes([w[0], w[1]])))
                .sum()
        };
        for len in (0..200)
            .chain(LANE_BLOCK - 100..LANE_BLOCK + 1)
            .filter(|l| l % 4 == 0)
        {
            for data in [&pattern[..len], &pattern[2..2 + len], &ones[..len]] {
                let want = plain(data);
                assert_eq!(lane_block(data), want, "chosen, {len} bytes");
                assert_eq!(lane_block_body(data), want, "baseline, {len} bytes");
            }
        }
    }

    proptest! {
        /// Any total folds to what one end-around carry at a time gives.
        #[test]
        fn folds_as_the_reference(s: u64, shift in 0u32..64) {
            for s in [s, s >> shift] {
                prop_assert_eq!(u16::from_ne_bytes(Sum(s).fold()), reference_fold(s));
            }
        }

        #[test]
        fn matches_the_reference(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let c = Sum::default().add_bytes(&data).checksum();
            prop_assert_eq!(u16::from_be_bytes(c), reference(&data));
        }

        /// Long runs (past 64 KiB, where the totals' high halves are not zero for data of
        /// all ones) and every tail length.
        #[test]
        fn long_runs_match_the_reference(len in 60_000usize..140_000, fill in any::<u8>(), ones: bool) {
            let data: Vec<u8> = (0..len)
                .map(|i| if ones { 0xff } else { fill.wrapping_add((i * 31 / 7) as u8) })
                .collect();
            let c = Sum::default().add_bytes(&data).checksum();
            prop_assert_eq!(u16::from_be_bytes(c), reference(&data));
        }

        #[test]
        fn runs_add_up(data in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..300) {
            let cut = (cut.min(data.len())) & !1;
            let whole = Sum::default().add_bytes(&data).fold();
            let split = Sum::default().add_bytes(&data[..cut]).add_bytes(&data[cut..]).fold();
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn tcp_matches_smoltcp(payload in proptest::collection::vec(any::<u8>(), 20..1600), a: u32, b: u32) {
            let (src, dst) = (Ipv4Addr::from(a), Ipv4Addr::from(b));
            let mut seg = payload.clone();
            seg[12] = 5 << 4;
            fill_tcp(src, dst, &mut seg);
            let p = TcpPacket::new_unchecked(&seg[..]);
            prop_assert!(p.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst)));
            prop_assert!(tcp_ok(src, dst, &seg));
            let mid = seg.len() / 2;
            seg[mid] ^= 0x10;
            prop_assert!(!tcp_ok(src, dst, &seg));
        }

        #[test]
        fn ipv4_matches_smoltcp(mut h in proptest::collection::vec(any::<u8>(), 20..21)) {
            fill_ipv4_header(&mut h);
            h[0] = (h[0] & 0xf0) | 5;
            fill_ipv4_header(&mut h);
            prop_assert!(Ipv4Packet::new_unchecked(&h[..]).verify_checksum());
            prop_assert!(ipv4_header_ok(&h));
        }
    }
}
