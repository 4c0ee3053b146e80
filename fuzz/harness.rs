//! Fuzz harnesses, shared by the cargo-fuzz targets and by `tests/fuzz_corpus.rs`, which
//! replays every corpus file as an ordinary test.
//!
//! Each harness decodes its input bytes itself (no extra crates), so any byte string is a
//! valid input, and checks its property with `assert!`.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::Read;
use std::net::Ipv4Addr;
use std::sync::Arc;

use flextoe::backends::mem::{MemLink, MemPort};
use flextoe::buf::FrameArena;
use flextoe::pipeline::{Engine, EngineConfig};
use flextoe::reorder::{merge_from_queues, Ingress, Merge, Overflow, Reorder, Tagged};
use flextoe::sim::Impairments;
use flextoe::stages::preprocess::Preprocess;
use flextoe::stages::{PreOut, Stage};
use flextoe::time::Instant;
use flextoe::wire::{self, flags, Endpoints, FourTuple, MacAddr, Parsed};
use smoltcp::wire::{TcpControl, TcpRepr, TcpSeqNumber};

const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const PEER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const IP: Ipv4Addr = Ipv4Addr::new(10, 5, 0, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 5, 0, 2);

/// Reads little pieces off the input; yields zeros once it runs dry.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Frames into preprocess: never a panic; every frame is passed on or counted under exactly
/// one drop reason, and what is dropped for a wire reason the parser also rejects.
pub fn preprocess(data: &[u8]) {
    let arena = Arc::new(FrameArena::new(8).unwrap());
    let mut p = Preprocess::new(arena.clone(), MAC, IP);
    p.install(
        FourTuple {
            local_ip: IP,
            local_port: 80,
            remote_ip: PEER_IP,
            remote_port: 4000,
        },
        0,
    );
    let Some(frame) = arena.alloc_copy(data) else {
        return;
    };
    let mut input = vec![frame];
    let mut out = Vec::new();
    p.process(Instant::ZERO, &mut input, &mut out);
    let drops = p.stats().drops.total();
    assert_eq!(out.len() as u64 + drops, 1);
    if drops == 1 {
        let reason = p.stats().drops.nonzero().next().unwrap().0;
        if reason != flextoe::stats::DropReason::NotForUs {
            assert_eq!(
                wire::parse_frame(&data[..data.len().min(2048)]).err(),
                Some(reason)
            );
        }
    }
    for o in out {
        match o {
            PreOut::Rx(w) => arena.free(w.frame),
            PreOut::Punt(x) => arena.free(x.frame),
        }
    }
    assert_eq!(arena.in_use(), 0);
}

/// Reorder stages: tagged items of 3 groups from 4 replicas, delivered in the order the
/// input picks, come out in per-group order with nothing lost or duplicated; and the same
/// for the ordered-stream merge.
pub fn reorder_stage(data: &[u8]) {
    let mut b = Bytes(data);
    let window = 1 + (b.u8() as usize % 32);
    let n = b.u8() as usize + 1;
    let mut next = [0u64; 3];
    let mut queues: Vec<Vec<VecDeque<Tagged<usize>>>> = (0..3)
        .map(|_| (0..4).map(|_| VecDeque::new()).collect())
        .collect();
    let mut expect: Vec<Vec<usize>> = vec![Vec::new(); 3];
    for i in 0..n {
        let x = b.u8();
        let (g, r, tomb) = ((x % 3) as usize, ((x / 3) % 4) as usize, x >= 192);
        let seq = next[g];
        next[g] += 1;
        let t = if tomb {
            Tagged::tombstone(seq)
        } else {
            expect[g].push(i);
            Tagged::item(seq, i)
        };
        queues[g][r].push_back(t);
    }
    let mut stages: Vec<Reorder<usize>> = (0..3)
        .map(|_| Reorder::new(window, Overflow::Backpressure))
        .collect();
    let mut got: Vec<Vec<usize>> = vec![Vec::new(); 3];
    let mut rr = 0usize;
    while queues.iter().any(|g| g.iter().any(|q| !q.is_empty())) {
        let x = if b.is_empty() {
            rr += 1;
            rr
        } else {
            b.u8() as usize
        };
        let (g, r) = ((x / 4) % 3, x % 4);
        if let Some(t) = queues[g][r].pop_front() {
            if let Err(back) = stages[g].offer(t, &mut got[g]) {
                queues[g][r].push_front(back);
            }
        }
    }
    assert_eq!(got, expect);

    // The merge: one sequence space over 3 ordered streams.
    let mut streams: Vec<VecDeque<Ingress<u64>>> = (0..3).map(|_| VecDeque::new()).collect();
    let mut want = Vec::new();
    for seq in 0..n as u64 {
        let x = data.get(seq as usize).copied().unwrap_or(0);
        let s = (x % 3) as usize;
        if x & 8 == 0 {
            streams[s].push_back(Ingress::Item(seq, seq));
            want.push(seq);
        } else {
            streams[s].push_back(Ingress::Advance(seq));
        }
    }
    for q in streams.iter_mut() {
        q.push_back(Ingress::Advance(n as u64 - 1));
    }
    let mut m = Merge::new(3);
    let mut out = Vec::new();
    merge_from_queues(&mut m, &mut streams, &mut out);
    assert_eq!(out.into_iter().map(|(s, _)| s).collect::<Vec<_>>(), want);
}

fn segment(fl: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let control = if fl & flags::SYN != 0 {
        TcpControl::Syn
    } else if fl & flags::FIN != 0 {
        TcpControl::Fin
    } else {
        TcpControl::Psh
    };
    let repr = TcpRepr {
        src_port: 4000,
        dst_port: 80,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: (fl & flags::ACK != 0).then_some(TcpSeqNumber(ack as i32)),
        window_len: 65535,
        window_scale: None,
        max_seg_size: (fl & flags::SYN != 0).then_some(1460),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
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

/// A byte stream cut into segments that arrive in any order, duplicated and overlapping,
/// with gaps filled later (the sender then retransmits everything in order, as go-back-N
/// does): the application reads exactly the bytes sent, and nothing panics.
pub fn segment_reorder(data: &[u8]) {
    let mut b = Bytes(data);
    let len = 1 + (b.u16() as usize % 20_000);
    let fin = b.u8() & 1 == 1;
    let stream: Vec<u8> = (0..len)
        .map(|i| (i * 131 + 7) as u8 ^ (i >> 8) as u8)
        .collect();

    let (port, wire_end) = MemLink::pair(Impairments::none());
    let mut cfg = EngineConfig::new(MAC, IP).neighbor(PEER_IP, PEER_MAC);
    cfg.arena_frames = 256;
    cfg.rx_buffer = 32 * 1024;
    let mut e: Engine<MemPort> = Engine::new(cfg, port).unwrap();
    let l = e.host().listen(80, 4).unwrap();
    let t = Instant::ZERO;
    e.poll(t);
    wire_end.send_bytes(t, &segment(flags::SYN, 999, 0, &[]));
    e.poll(t);
    let mut iss = None;
    while let Some(f) = wire_end.recv_bytes(t) {
        if let Ok(Parsed::Tcp(s)) = wire::parse_frame(&f) {
            if s.summary.has(flags::SYN | flags::ACK) {
                iss = Some(s.summary.seq);
            }
        }
    }
    let ack = iss.expect("SYN-ACK").wrapping_add(1);
    wire_end.send_bytes(t, &segment(flags::ACK, 1000, ack, &[]));
    e.poll(t);
    let mut s = l.try_accept().unwrap().expect("established");
    s.set_nonblocking(true);

    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut drain = |e: &mut Engine<MemPort>, s: &mut flextoe::Stream, got: &mut Vec<u8>| {
        e.poll(t);
        while let Some(_f) = wire_end.recv_bytes(t) {}
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
    };
    // Pieces in the input's order: (start, length), duplicates and overlaps welcome.
    while !b.is_empty() {
        let start = b.u16() as usize % len;
        let plen = 1 + b.u16() as usize % 1460;
        let end = (start + plen).min(len);
        let last = end == len && fin;
        let fl = flags::ACK | if last { flags::FIN } else { 0 };
        wire_end.send_bytes(
            t,
            &segment(fl, 1000 + start as u32, ack, &stream[start..end]),
        );
        drain(&mut e, &mut s, &mut got);
    }
    // Go-back-N: everything again, in order.
    for start in (0..len).step_by(1460) {
        let end = (start + 1460).min(len);
        let last = end == len && fin;
        let fl = flags::ACK | if last { flags::FIN } else { 0 };
        wire_end.send_bytes(
            t,
            &segment(fl, 1000 + start as u32, ack, &stream[start..end]),
        );
        drain(&mut e, &mut s, &mut got);
    }
    drain(&mut e, &mut s, &mut got);
    assert_eq!(got.len(), stream.len());
    assert!(got == stream, "bytes read differ from bytes sent");
    if fin {
        assert!(
            s.is_readable() && s.readable_bytes() == 0,
            "end of stream seen"
        );
    }
    assert_eq!(e.stats().frames_in_use, 0);
}
