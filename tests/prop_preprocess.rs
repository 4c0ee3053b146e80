//! Property tests: arbitrary and mutated frames into preprocess never panic, and every frame
//! that is not passed on is counted under exactly one drop reason.

use std::net::Ipv4Addr;
use std::sync::Arc;

use flextoe::buf::FrameArena;
use flextoe::stages::preprocess::Preprocess;
use flextoe::stages::{PreOut, Stage};
use flextoe::stats::DropReason;
use flextoe::time::Instant;
use flextoe::wire::{self, Endpoints, FourTuple, MacAddr};
use proptest::prelude::*;
use smoltcp::wire::{TcpControl, TcpRepr, TcpSeqNumber, TcpTimestampRepr};

const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const PEER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

fn stage() -> (Arc<FrameArena>, Preprocess) {
    let arena = Arc::new(FrameArena::new(64).unwrap());
    let mut p = Preprocess::new(arena.clone(), MAC, IP);
    p.install(
        FourTuple {
            local_ip: IP,
            local_port: 80,
            remote_ip: PEER_IP,
            remote_port: 4000,
        },
        0,
        7,
    );
    (arena, p)
}

/// Push one frame through; returns (passed on, drop reason if dropped).
fn run(bytes: &[u8]) -> (bool, Option<DropReason>) {
    let (arena, mut p) = stage();
    let mut input = vec![arena.alloc_copy(bytes).unwrap()];
    let mut out = Vec::new();
    p.process(Instant::ZERO, &mut input, &mut out);
    let drops: Vec<(DropReason, u64)> = p.stats().drops.nonzero().collect();
    let passed = out.len();
    for o in out {
        match o {
            PreOut::Rx(w) => arena.free(w.frame),
            PreOut::Punt(x) => arena.free(x.frame),
        }
    }
    assert_eq!(arena.in_use(), 0, "frame leaked");
    assert_eq!(
        passed + drops.iter().map(|d| d.1 as usize).sum::<usize>(),
        1
    );
    (passed == 1, drops.first().map(|d| d.0))
}

fn valid_frame(seq: u32, ack: u32, flags: u8, payload: &[u8], ts: bool) -> Vec<u8> {
    sack_frame(seq, ack, flags, payload, ts, &[])
}

/// A segment carrying SACK blocks `sack` (at most three).
fn sack_frame(
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
    ts: bool,
    sack: &[(u32, u32)],
) -> Vec<u8> {
    let mut sack_ranges = [None; 3];
    for (slot, b) in sack_ranges.iter_mut().zip(sack) {
        *slot = Some(*b);
    }
    let control = match flags % 4 {
        0 => TcpControl::None,
        1 => TcpControl::Psh,
        2 => TcpControl::Fin,
        _ => TcpControl::Syn,
    };
    let repr = TcpRepr {
        src_port: 4000,
        dst_port: 80,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: Some(TcpSeqNumber(ack as i32)),
        window_len: 1000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges,
        timestamp: ts.then(|| TcpTimestampRepr::new(1, 2)),
        payload,
    };
    let ep = Endpoints {
        src_mac: PEER_MAC,
        dst_mac: MAC,
        src_ip: PEER_IP,
        dst_ip: IP,
    };
    let mut buf = vec![0u8; 2048];
    let n = wire::emit_tcp(&mut buf, &ep, &repr).unwrap();
    buf.truncate(n);
    buf
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let (_, reason) = run(&bytes);
        if let Some(r) = reason {
            // Whatever was dropped for a wire reason is also rejected by the parser.
            if !matches!(r, DropReason::NotForUs) {
                prop_assert_eq!(wire::parse_frame(&bytes).err(), Some(r));
            }
        }
    }

    #[test]
    fn valid_frames_pass(seq in any::<u32>(), ack in any::<u32>(), flags in any::<u8>(),
                         payload in proptest::collection::vec(any::<u8>(), 0..1400), ts in any::<bool>()) {
        let f = valid_frame(seq, ack, flags, &payload, ts);
        let (passed, reason) = run(&f);
        prop_assert!(passed, "dropped: {:?}", reason);
    }

    /// The SACK blocks stay in the frame; the summary says where, and reading them there
    /// gives back what the peer sent, inside the TCP header.
    #[test]
    fn sack_blocks_are_read_from_the_frame(
        seq in any::<u32>(),
        ack in any::<u32>(),
        blocks in proptest::collection::vec((any::<u32>(), any::<u32>()), 0..=3),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        ts in any::<bool>(),
    ) {
        let f = sack_frame(seq, ack, 0, &payload, ts, &blocks);
        let (arena, mut p) = stage();
        let mut input = vec![arena.alloc_copy(&f).unwrap()];
        let mut out = Vec::new();
        p.process(Instant::ZERO, &mut input, &mut out);
        prop_assert_eq!(out.len(), 1);
        let Some(PreOut::Rx(w)) = out.pop() else {
            panic!("not passed to the protocol stage");
        };
        let s = w.summary;
        // The flow's incarnation, as installed.
        prop_assert_eq!(s.incarnation, 7);
        let got = s.sack_blocks(arena.data(&w.frame));
        prop_assert_eq!(got.as_slice(), &blocks[..]);
        prop_assert_eq!(usize::from(s.sack_len), blocks.len());
        if s.sack_len > 0 {
            prop_assert!(usize::from(s.sack_at) + 8 * blocks.len() <= usize::from(s.payload_off));
        }
        arena.free(w.frame);
    }

    #[test]
    fn mutated_frames_are_passed_or_counted(
        seq in any::<u32>(),
        payload in proptest::collection::vec(any::<u8>(), 0..600),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut f = valid_frame(seq, 1, 1, &payload, true);
        for (pos, x) in flips {
            let i = pos % f.len();
            f[i] ^= x | 1;
        }
        if let Some(c) = cut {
            let keep = c % f.len();
            f.truncate(keep);
        }
        let (passed, reason) = run(&f);
        match wire::parse_frame(&f) {
            Ok(_) => {
                // Parsed frames are passed on or refused as not addressed to us.
                prop_assert!(passed || reason == Some(DropReason::NotForUs), "{:?}", reason);
            }
            Err(r) => {
                prop_assert!(!passed);
                prop_assert_eq!(reason, Some(r));
            }
        }
    }
}

#[test]
fn bad_checksums_are_counted() {
    let mut f = valid_frame(1, 1, 1, b"payload", false);
    let last = f.len() - 1;
    f[last] ^= 0xff;
    assert_eq!(run(&f), (false, Some(DropReason::BadTcpChecksum)));
    let mut f = valid_frame(1, 1, 1, b"payload", false);
    f[wire::ETH_HDR + 8] ^= 1;
    assert_eq!(run(&f), (false, Some(DropReason::BadIpChecksum)));
    let f = valid_frame(1, 1, 1, b"payload", false);
    assert_eq!(run(&f[..30]), (false, Some(DropReason::Truncated)));
}

/// A data segment from `src_ip:src_port` to our `dst_port`.
fn frame_between(src_ip: Ipv4Addr, src_port: u16, dst_port: u16, seq: u32) -> Vec<u8> {
    let repr = TcpRepr {
        src_port,
        dst_port,
        control: TcpControl::None,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: Some(TcpSeqNumber(1)),
        window_len: 1000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: b"data",
    };
    let ep = Endpoints {
        src_mac: PEER_MAC,
        dst_mac: MAC,
        src_ip,
        dst_ip: IP,
    };
    let mut buf = vec![0u8; 256];
    let n = wire::emit_tcp(&mut buf, &ep, &repr).unwrap();
    buf.truncate(n);
    buf
}

/// Segments of two flows and of tuples that differ from one of them in a single field,
/// interleaved in one burst: each goes to its own flow with its incarnation and sequence
/// number, and none is taken for the flow looked up just before it.
#[test]
fn interleaved_flows_and_near_misses_are_told_apart() {
    let (arena, mut p) = stage();
    p.install(
        FourTuple {
            local_ip: IP,
            local_port: 80,
            remote_ip: PEER_IP,
            remote_port: 4001,
        },
        1,
        9,
    );
    let other_peer = Ipv4Addr::new(10, 1, 0, 3);
    // (source address, source port, our port, the flow and incarnation expected).
    type Step = (Ipv4Addr, u16, u16, Option<(u32, u8)>);
    let script: [Step; 8] = [
        (PEER_IP, 4000, 80, Some((0, 7))),
        (PEER_IP, 4000, 80, Some((0, 7))),
        (PEER_IP, 4001, 80, Some((1, 9))),
        (PEER_IP, 4000, 81, None),
        (PEER_IP, 4001, 80, Some((1, 9))),
        (other_peer, 4001, 80, None),
        (PEER_IP, 4002, 80, None),
        (PEER_IP, 4000, 80, Some((0, 7))),
    ];
    let mut input: Vec<_> = script
        .iter()
        .enumerate()
        .map(|(i, (ip, sp, dp, _))| {
            arena
                .alloc_copy(&frame_between(*ip, *sp, *dp, 1000 + i as u32))
                .unwrap()
        })
        .collect();
    let mut out = Vec::new();
    p.process(Instant::ZERO, &mut input, &mut out);
    assert_eq!(out.len(), script.len());
    for (i, (o, (_, _, _, want))) in out.into_iter().zip(&script).enumerate() {
        match (o, want) {
            (PreOut::Rx(w), Some((flow, inc))) => {
                assert_eq!((w.flow, w.summary.incarnation), (*flow, *inc), "item {i}");
                assert_eq!(w.summary.seq, 1000 + i as u32, "item {i}");
                assert_eq!(w.summary.payload_len, 4, "item {i}");
                arena.free(w.frame);
            }
            (PreOut::Punt(x), None) => arena.free(x.frame),
            (PreOut::Rx(w), None) => panic!("item {i} went to flow {}", w.flow),
            (PreOut::Punt(x), Some(_)) => panic!("item {i} was punted: {:?}", x.reason),
        }
    }
    assert_eq!(arena.in_use(), 0);
}
