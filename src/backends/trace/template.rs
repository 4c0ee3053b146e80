//! The pre-built client frames of a [`TracePort`](super::TracePort) and the patch applied to
//! each copy.
//!
//! The payload byte at stream offset `o` is `(o % 251) as u8` ([`pattern_byte`]), so a
//! segment's bytes depend only on its length, its flags and the phase `o % 251`. A workload
//! cuts its stream into units (a bulk segment, or one RPC request) and each unit into
//! segments of at most the segment size: every segment is then either a full segment that
//! does not end its unit, or the last segment of its unit (which carries PSH). That is at
//! most 2 x 251 distinct frames, whatever the length of the run or the number of
//! connections, and only the source port, the sequence number and the acknowledgment number
//! differ between uses.
//!
//! They are not stored whole (2 x 251 frames of 1514 bytes would not stay in a core's
//! caches): a frame is gathered from its kind's 54-byte header and a window of one pattern
//! buffer of `251 + segment` bytes (the payload at phase `p` is the buffer from `p` on), as a
//! NIC gathers a header and a payload, so both sources stay in L1. What is computed once is
//! every frame's TCP checksum: each (kind, phase) keeps the one's-complement value
//! `~HC + ~m` of its checksum `HC` and the header words `m` it was built with (source port,
//! sequence and acknowledgment numbers), so that a copy is finished with RFC 1624's
//! incremental update `HC' = ~(~HC + ~m + m')`: five 16-bit additions and two folds,
//! independent of the payload length. The IPv4 header is the same in every use and keeps its
//! checksum.

use smoltcp::wire::{TcpControl, TcpRepr, TcpSeqNumber};

use crate::wire::{self, Endpoints, ETH_HDR, IP_HDR, TCP_HDR};

/// Period of the payload pattern (a prime, so that segment sizes rarely align with it).
pub(super) const PHASES: usize = 251;

/// Offset of the TCP header in a frame without IP options.
const TCP: usize = ETH_HDR + IP_HDR;
/// TCP source port.
const SRC_PORT: usize = TCP;
/// TCP sequence number.
const SEQ: usize = TCP + 4;
/// TCP acknowledgment number.
const ACK: usize = TCP + 8;
/// TCP checksum.
const CSUM: usize = TCP + 16;
/// Length of a frame without payload.
pub(super) const HEADERS: usize = ETH_HDR + IP_HDR + TCP_HDR;

/// The raw window field of every client segment: with the window scale 7 announced in the
/// SYN, about 8 MiB, so the server's responses are never limited by the client.
pub(super) const CLIENT_WINDOW: u16 = 65535;

/// The payload byte at stream offset `offset` of every connection of a trace.
pub fn pattern_byte(offset: u64) -> u8 {
    (offset % PHASES as u64) as u8
}

/// The addresses and ports every template is built with.
#[derive(Clone, Copy, Debug)]
pub(super) struct Addressing {
    /// MAC and IP addresses, client to server.
    pub ep: Endpoints,
    /// The client port the templates are built with (patched in every use).
    pub src_port: u16,
    /// The server's port.
    pub dst_port: u16,
}

/// One kind of segment: its headers, and its checksum at each of the 251 phases.
#[derive(Debug)]
struct Table {
    /// Ethernet, IPv4 and TCP headers (the checksum field is overwritten in every use).
    header: [u8; HEADERS],
    /// Payload bytes.
    payload: usize,
    /// `~HC + ~m`, per phase.
    base: Vec<u32>,
}

/// The two kinds of data segment, plus a pure ACK.
#[derive(Debug)]
pub(super) struct Templates {
    /// `pattern_byte(0..251 + seg)`: the payload at phase `p` starts at `p`.
    pattern: Vec<u8>,
    /// `[full segment that does not end its unit, last segment of a unit]`; the first is
    /// absent when a unit fits one segment.
    tables: [Option<Table>; 2],
    ack: [u8; HEADERS],
    ack_base: u32,
    /// Unit length in bytes.
    unit: u64,
    /// Most payload bytes of one segment.
    seg: u64,
}

/// Sum the 16-bit words `~m` of what a template holds in the patched fields.
fn complement_of_fields(frame: &[u8]) -> u32 {
    let w = |i: usize| u32::from(!u16::from_be_bytes([frame[i], frame[i + 1]]));
    w(SRC_PORT) + w(SEQ) + w(SEQ + 2) + w(ACK) + w(ACK + 2)
}

/// `~HC + ~m` of a finished template.
fn base_of(frame: &[u8]) -> u32 {
    let hc = u16::from_be_bytes([frame[CSUM], frame[CSUM + 1]]);
    u32::from(!hc) + complement_of_fields(frame)
}

/// Build one segment (sequence and acknowledgment numbers 0) into `buf`; returns its length.
fn emit(addr: &Addressing, payload: &[u8], psh: bool, buf: &mut [u8]) -> Option<usize> {
    let repr = TcpRepr {
        src_port: addr.src_port,
        dst_port: addr.dst_port,
        control: if psh {
            TcpControl::Psh
        } else {
            TcpControl::None
        },
        seq_number: TcpSeqNumber(0),
        ack_number: Some(TcpSeqNumber(0)),
        window_len: CLIENT_WINDOW,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    wire::emit_tcp(buf, &addr.ep, &repr)
}

impl Templates {
    /// Every segment of a stream cut into `unit`-byte units and those into segments of at
    /// most `seg` bytes (`unit`, `seg` > 0, `seg` at most 1460).
    pub(super) fn build(addr: &Addressing, unit: usize, seg: usize) -> Self {
        debug_assert!(unit > 0 && seg > 0);
        let last = (unit - 1) % seg + 1;
        let kinds = [(unit > seg).then_some(seg), Some(last)];
        let pattern: Vec<u8> = (0..PHASES + seg).map(|o| pattern_byte(o as u64)).collect();
        let mut frame = vec![0u8; HEADERS + seg];
        let mut tables: [Option<Table>; 2] = [None, None];
        for (k, len) in kinds.into_iter().enumerate() {
            let Some(len) = len else { continue };
            let mut header = [0u8; HEADERS];
            let mut base = Vec::with_capacity(PHASES);
            for phase in 0..PHASES {
                let n = emit(addr, &pattern[phase..phase + len], k == 1, &mut frame);
                debug_assert_eq!(n, Some(HEADERS + len));
                base.push(base_of(&frame));
                if phase == 0 {
                    header.copy_from_slice(&frame[..HEADERS]);
                }
                // Every phase has the same headers but for the checksum.
                debug_assert_eq!(frame[..CSUM], header[..CSUM]);
                debug_assert_eq!(frame[CSUM + 2..HEADERS], header[CSUM + 2..]);
            }
            tables[k] = Some(Table {
                header,
                payload: len,
                base,
            });
        }
        let mut ack = [0u8; HEADERS];
        let n = emit(addr, &[], false, &mut ack);
        debug_assert_eq!(n, Some(HEADERS));
        let ack_base = base_of(&ack);
        Templates {
            pattern,
            tables,
            ack,
            ack_base,
            unit: unit as u64,
            seg: seg as u64,
        }
    }

    /// Unit length in bytes.
    pub(super) fn unit(&self) -> u64 {
        self.unit
    }

    /// Most payload bytes of one segment.
    pub(super) fn seg(&self) -> u64 {
        self.seg
    }

    /// Payload length of the segment that starts `q` bytes into its unit, and whether it is
    /// the last of the unit.
    #[inline]
    pub(super) fn segment_at(&self, q: u64) -> (u64, bool) {
        let len = self.seg.min(self.unit - q);
        (len, q + len == self.unit)
    }

    /// Write the segment of kind `last` at `phase` (stream offset modulo 251) into `buf`
    /// (its headers, then its payload, then the patch); returns the frame length. `buf`
    /// must hold at least 1514 bytes.
    #[inline]
    pub(super) fn write(
        &self,
        last: bool,
        phase: usize,
        buf: &mut [u8],
        port: u16,
        seq: u32,
        ack: u32,
    ) -> usize {
        let Some(t) = &self.tables[usize::from(last)] else {
            // Not reached: `segment_at` only names kinds that were built.
            return 0;
        };
        let n = HEADERS + t.payload;
        buf[..HEADERS].copy_from_slice(&t.header);
        buf[HEADERS..n].copy_from_slice(&self.pattern[phase..phase + t.payload]);
        patch(&mut buf[..HEADERS], t.base[phase], port, seq, ack);
        n
    }

    /// Payload bytes of the segments of kind `last` (0 when that kind does not exist).
    #[cfg(test)]
    pub(super) fn payload_len(&self, last: bool) -> usize {
        self.tables[usize::from(last)]
            .as_ref()
            .map_or(0, |t| t.payload)
    }

    /// Copy a pure ACK into `buf` with its fields set; returns the frame length.
    #[inline]
    pub(super) fn write_ack(&self, buf: &mut [u8], port: u16, seq: u32, ack: u32) -> usize {
        buf[..HEADERS].copy_from_slice(&self.ack);
        patch(&mut buf[..HEADERS], self.ack_base, port, seq, ack);
        HEADERS
    }
}

/// Set the source port, sequence and acknowledgment numbers of a copied template and update
/// its TCP checksum incrementally (RFC 1624, eqn. 3), from `base = ~HC + ~m`.
#[inline]
fn patch(frame: &mut [u8], base: u32, port: u16, seq: u32, ack: u32) {
    frame[SRC_PORT..SRC_PORT + 2].copy_from_slice(&port.to_be_bytes());
    frame[SEQ..SEQ + 4].copy_from_slice(&seq.to_be_bytes());
    frame[ACK..ACK + 4].copy_from_slice(&ack.to_be_bytes());
    // At most 11 terms of 16 bits: no overflow of 32 bits.
    let mut s =
        base + u32::from(port) + (seq >> 16) + (seq & 0xffff) + (ack >> 16) + (ack & 0xffff);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    frame[CSUM..CSUM + 2].copy_from_slice(&(!(s as u16)).to_be_bytes());
}

/// A SYN from `port` with `isn`, announcing `mss` and window scale 7, no timestamps and no
/// SACK, into `buf`; returns its length.
pub(super) fn emit_syn(
    addr: &Addressing,
    port: u16,
    isn: u32,
    mss: u16,
    buf: &mut [u8],
) -> Option<usize> {
    let repr = TcpRepr {
        src_port: port,
        dst_port: addr.dst_port,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(isn as i32),
        ack_number: None,
        window_len: CLIENT_WINDOW,
        window_scale: Some(7),
        max_seg_size: Some(mss),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    wire::emit_tcp(buf, &addr.ep, &repr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{parse_frame, Parsed};
    use std::net::Ipv4Addr;

    /// Whether `frame` (Ethernet/IPv4/TCP) carries correct checksums.
    fn checksums_ok(frame: &[u8]) -> bool {
        let ip = &frame[ETH_HDR..];
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        wire::checksum::ipv4_header_ok(&ip[..IP_HDR])
            && wire::checksum::tcp_ok(src, dst, &ip[IP_HDR..])
    }

    /// The addressing of the unit tests.
    fn example_addressing() -> Addressing {
        Addressing {
            ep: Endpoints {
                src_mac: crate::wire::MacAddr([2, 0, 0, 0, 0, 2]),
                dst_mac: crate::wire::MacAddr([2, 0, 0, 0, 0, 1]),
                src_ip: Ipv4Addr::new(10, 0, 0, 2),
                dst_ip: Ipv4Addr::new(10, 0, 0, 1),
            },
            src_port: 40000,
            dst_port: 80,
        }
    }

    #[test]
    fn patched_copies_verify_and_carry_the_pattern() {
        let addr = example_addressing();
        let t = Templates::build(&addr, 3000, 1460);
        assert_eq!(t.payload_len(false), 1460);
        assert_eq!(t.payload_len(true), 80);
        let mut buf = vec![0u8; 2048];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..2000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (seq, ack, port) = (x as u32, (x >> 32) as u32, (x >> 17) as u16 | 1);
            let last = i % 3 == 0;
            let phase = (x % PHASES as u64) as usize;
            let n = t.write(last, phase, &mut buf, port, seq, ack);
            assert!(
                checksums_ok(&buf[..n]),
                "seq {seq:#x} ack {ack:#x} port {port}"
            );
            let Ok(Parsed::Tcp(s)) = parse_frame(&buf[..n]) else {
                panic!("does not parse")
            };
            assert_eq!((s.summary.seq, s.summary.ack), (seq, ack));
            assert_eq!(s.tuple.remote_port, port);
            let p = &buf[usize::from(s.summary.payload_off)..n];
            assert_eq!(p.len(), if last { 80 } else { 1460 });
            assert!(p
                .iter()
                .enumerate()
                .all(|(j, &b)| b == pattern_byte((phase + j) as u64)));
            let n = t.write_ack(&mut buf, port, seq, ack);
            assert!(checksums_ok(&buf[..n]));
        }
        // Extremes of the one's-complement arithmetic.
        for &(seq, ack, port) in &[
            (0u32, 0u32, 1u16),
            (u32::MAX, u32::MAX, u16::MAX),
            (0xffff_0000, 0x0000_ffff, 0x8000),
        ] {
            for phase in [0, 1, 250] {
                let n = t.write(true, phase, &mut buf, port, seq, ack);
                assert!(checksums_ok(&buf[..n]));
            }
        }
    }

    #[test]
    fn one_kind_when_a_unit_fits_a_segment() {
        let t = Templates::build(&example_addressing(), 64, 1460);
        assert_eq!(t.payload_len(false), 0);
        assert_eq!(t.payload_len(true), 64);
        assert_eq!(t.segment_at(0), (64, true));
        let t = Templates::build(&example_addressing(), 2920, 1460);
        assert_eq!(t.segment_at(0), (1460, false));
        assert_eq!(t.segment_at(1460), (1460, true));
    }
}
