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
use flextoe::stages::protocol::AckPolicy;
use flextoe::stages::{PreOut, Stage};
use flextoe::time::Instant;
use flextoe::wire::{self, flags, Endpoints, FourTuple, MacAddr, Parsed};
use smoltcp::wire::{TcpControl, TcpRepr, TcpSeqNumber};

const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const PEER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const IP: Ipv4Addr = Ipv4Addr::new(10, 5, 0, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 5, 0, 2);

/// The peer's frames to the engine: its addresses.
fn peer_to_engine() -> Endpoints {
    Endpoints {
        src_mac: PEER_MAC,
        dst_mac: MAC,
        src_ip: PEER_IP,
        dst_ip: IP,
    }
}

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
        7,
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
            PreOut::Rx(w) => {
                // SACK blocks and timestamps are read from the frame where the summary
                // says: inside the TCP header, at most three blocks, and the timestamps the
                // full parse found.
                let s = w.summary;
                assert_eq!(s.incarnation, 7, "the flow's incarnation, as installed");
                let bytes = arena.data(&w.frame);
                let blocks = s.sack_blocks(bytes);
                assert_eq!(blocks.len(), usize::from(s.sack_len));
                assert!(
                    s.sack_len == 0
                        || usize::from(s.sack_at) + 8 * blocks.len() <= usize::from(s.payload_off)
                );
                let parsed = match wire::parse_frame(bytes) {
                    Ok(Parsed::Tcp(seg)) => seg.options.timestamp,
                    _ => panic!("preprocess passed on a frame the parser rejects"),
                };
                assert_eq!(s.timestamps(bytes), parsed);
                assert!(s.ts_at == 0 || usize::from(s.ts_at) + 8 <= usize::from(s.payload_off));
                arena.free(w.frame)
            }
            PreOut::Punt(x) => {
                let bytes = arena.data(&x.frame);
                if x.reason == flextoe::stages::PuntReason::Icmp {
                    // Only an intact IPv4 packet of ICMP; the control plane's parser
                    // takes whatever it holds.
                    let r = wire::parse_frame(bytes).err();
                    assert!(r.is_some_and(|r| wire::icmp::is_icmp(bytes, r)));
                    let _ = wire::icmp::parse_icmp(bytes);
                }
                arena.free(x.frame)
            }
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
    // Per stream, the last number of its open run: an item continues it only if every
    // number since the run's start was the stream's own.
    let mut open: [Option<u64>; 3] = [None; 3];
    for seq in 0..n as u64 {
        let x = data.get(seq as usize).copied().unwrap_or(0);
        let s = (x % 3) as usize;
        if x & 8 == 0 {
            if open[s].is_none_or(|l| l + 1 != seq) {
                streams[s].push_back(Ingress::Run(seq));
            }
            streams[s].push_back(Ingress::Item(seq));
            open[s] = Some(seq);
            want.push(seq);
        } else {
            streams[s].push_back(Ingress::Advance(seq));
            open[s] = None;
        }
    }
    for q in streams.iter_mut() {
        q.push_back(Ingress::Advance(n as u64 - 1));
    }
    let mut m = Merge::new(3);
    let mut out = Vec::new();
    merge_from_queues(&mut m, &mut streams, &mut out);
    assert_eq!(out, want);
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
    let ep = peer_to_engine();
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

/// The byte a peer sends at `offset` of its stream on connection `port`.
fn peer_byte(port: u16, offset: u32) -> u8 {
    (offset.wrapping_mul(2_654_435_761) >> 13) as u8 ^ port as u8
}

/// The peer's initial sequence number on its port `port` (fixed, so that every SYN and
/// every segment of one port speaks of the same stream).
fn peer_isn(port: u16) -> u32 {
    (port as u32).wrapping_mul(0x9e37_79b9)
}

/// The options of a peer segment: MSS, window scale, SACK-permitted, timestamps.
type PeerOpts = (Option<u16>, Option<u8>, bool, Option<(u32, u32)>);

/// A peer segment with every field the input chooses.
#[allow(clippy::too_many_arguments)]
fn peer_segment(
    sport: u16,
    dport: u16,
    fl: u8,
    seq: u32,
    ack: u32,
    win: u16,
    opts: PeerOpts,
    sack: [Option<(u32, u32)>; 3],
    payload: &[u8],
) -> Option<Vec<u8>> {
    let control = if fl & flags::SYN != 0 {
        TcpControl::Syn
    } else if fl & flags::RST != 0 {
        TcpControl::Rst
    } else if fl & flags::FIN != 0 {
        TcpControl::Fin
    } else if fl & flags::PSH != 0 {
        TcpControl::Psh
    } else {
        TcpControl::None
    };
    let repr = TcpRepr {
        src_port: sport,
        dst_port: dport,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: (fl & flags::ACK != 0).then_some(TcpSeqNumber(ack as i32)),
        window_len: win,
        window_scale: opts.1,
        max_seg_size: opts.0,
        sack_permitted: opts.2,
        sack_ranges: sack,
        timestamp: opts
            .3
            .map(|(v, e)| smoltcp::wire::TcpTimestampRepr::new(v, e)),
        payload,
    };
    let ep = peer_to_engine();
    let mut buf = vec![0u8; 2048];
    let n = wire::emit_tcp(&mut buf, &ep, &repr)?;
    buf.truncate(n);
    if fl & flags::URG != 0 && buf.len() > 47 {
        // smoltcp has no URG control: set the flag and fix the checksum by re-emitting.
        buf[14 + 20 + 13] |= flags::URG;
        wire::fill_checksums(&mut buf);
    }
    Some(buf)
}

/// A whole engine (a listener on port 80 and a client connecting out) against a scripted
/// peer whose segments, options (MSS 0 included, window scale, SACK blocks, timestamps),
/// flags (URG, RST, FIN, SYN), sequence and ACK numbers, windows, and time steps the input
/// chooses, mixed with application reads, writes and closes. Properties: no panic; the flow
/// table and the half-open count stay within their bounds; everything an application reads
/// is the peer's stream at the right offset (delivered data is never contradicted); and once
/// the applications are gone and time has passed, every arena frame is back.
pub fn engine(data: &[u8]) {
    let mut b = Bytes(data);
    let (port, wire_end) = MemLink::pair(Impairments::none());
    let mut cfg = EngineConfig::new(MAC, IP).neighbor(PEER_IP, PEER_MAC);
    cfg.arena_frames = 256;
    cfg.rx_buffer = 8 * 1024;
    cfg.tx_buffer = 8 * 1024;
    cfg.control.max_flows = 6;
    cfg.control.max_half_open = 3;
    // The ACK policy, from the input's length (no byte of it is spent on the choice).
    cfg.ack_policy = match data.len() % 3 {
        0 => AckPolicy::PerBurst,
        1 => AckPolicy::delayed(std::time::Duration::from_millis(5)),
        _ => AckPolicy::EverySegment,
    };
    let (max_flows, max_half_open) = (cfg.control.max_flows, cfg.control.max_half_open);
    let mut e: Engine<MemPort> = Engine::new(cfg, port).unwrap();
    let host = e.host();
    let listener = host.listen(80, 2).unwrap();
    let mut now = Instant::ZERO;
    e.poll(now);
    let mut client = host
        .connect(std::net::SocketAddrV4::new(PEER_IP, 5000))
        .ok();
    if let Some(c) = client.as_mut() {
        c.set_nonblocking(true);
    }
    // What the peer learned of the engine's side, per peer port: our ISN and highest ACK.
    let mut engine_isn: std::collections::HashMap<u16, u32> = Default::default();
    // Accepted streams and how far each has been read.
    let mut streams: Vec<(flextoe::Stream, u32)> = Vec::new();
    // The ICMP messages sent to the engine, each the reply it may draw.
    let mut pings: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut steps = 0;
    while !b.is_empty() && steps < 400 {
        steps += 1;
        let op = b.u8();
        match op % 8 {
            // A segment from the peer to the listener or to the client's port.
            0..=3 => {
                let sport = 4000 + u16::from(b.u8() % 4);
                let to_client = op & 0x10 != 0;
                let (sport, dport) = match (&client, to_client) {
                    (Some(c), true) => (5000, c.local_addr().port()),
                    _ => (sport, 80),
                };
                let mut fl = b.u8()
                    & (flags::FIN | flags::SYN | flags::RST | flags::PSH | flags::ACK | flags::URG);
                if op & 0x20 == 0 {
                    fl |= flags::ACK;
                    fl &= !(flags::SYN | flags::RST);
                }
                let isn = peer_isn(sport);
                let off = u32::from(b.u16()) % 20_000;
                let seq = if fl & flags::SYN != 0 {
                    isn
                } else if op & 0x40 != 0 {
                    u32::from_le_bytes([b.u8(), b.u8(), b.u8(), b.u8()])
                } else {
                    isn.wrapping_add(1).wrapping_add(off)
                };
                let our = engine_isn.get(&sport).copied().unwrap_or(0);
                let ack = if op & 0x80 != 0 {
                    u32::from_le_bytes([b.u8(), b.u8(), b.u8(), b.u8()])
                } else {
                    our.wrapping_add(1)
                        .wrapping_add(u32::from(b.u16()) % 20_000)
                };
                let win = b.u16();
                let o = b.u8();
                let mss = (o & 1 != 0).then(|| u16::from(b.u8()) * 8);
                let ws = (o & 2 != 0).then(|| b.u8() % 20);
                let sack_ok = o & 4 != 0;
                let ts =
                    (o & 8 != 0).then(|| (u32::from(b.u16()), our.wrapping_add(u32::from(b.u8()))));
                let mut sack = [None; 3];
                for s in sack.iter_mut().take(usize::from(o >> 6)) {
                    let l = our.wrapping_add(u32::from(b.u16()));
                    *s = Some((l, l.wrapping_add(u32::from(b.u16() % 3000))));
                }
                let len = if fl & flags::SYN != 0 {
                    0
                } else {
                    usize::from(b.u16() % 1500)
                };
                // The payload is the peer's stream at this offset, whatever the sequence.
                let start = seq.wrapping_sub(isn.wrapping_add(1));
                let payload: Vec<u8> = (0..len as u32)
                    .map(|i| peer_byte(sport, start.wrapping_add(i)))
                    .collect();
                if let Some(f) = peer_segment(
                    sport,
                    dport,
                    fl,
                    seq,
                    ack,
                    win,
                    (mss, ws, sack_ok, ts),
                    sack,
                    &payload,
                ) {
                    wire_end.send_bytes(now, &f);
                }
            }
            // Time passes: microseconds to minutes.
            4 => {
                let v = u64::from(b.u16());
                let d = match b.u8() % 3 {
                    0 => std::time::Duration::from_micros(v),
                    1 => std::time::Duration::from_millis(v),
                    _ => std::time::Duration::from_secs(v % 300),
                };
                now += d;
            }
            // Applications: accept, read (and check), write, close.
            5 => {
                while let Ok(Some(mut s)) = listener.try_accept() {
                    s.set_nonblocking(true);
                    streams.push((s, 0));
                }
                for (s, read) in streams.iter_mut() {
                    let p = s.peer_addr().port();
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        for (i, byte) in buf[..n].iter().enumerate() {
                            assert_eq!(
                                *byte,
                                peer_byte(p, *read + i as u32),
                                "delivered data contradicts the stream"
                            );
                        }
                        *read += n as u32;
                    }
                }
            }
            6 => {
                let n = usize::from(b.u16() % 9000);
                let data = vec![0x5a; n];
                for (s, _) in streams.iter_mut() {
                    let _ = std::io::Write::write(s, &data);
                }
                if let Some(c) = client.as_mut() {
                    let _ = std::io::Write::write(c, &data);
                }
            }
            _ => {
                let which = b.u8();
                if which & 1 == 0 && !streams.is_empty() {
                    let i = usize::from(which >> 1) % streams.len();
                    streams.swap_remove(i);
                } else if which & 2 != 0 {
                    client = None;
                } else if which & 12 == 12 {
                    // An ICMP error about a segment of a connection with the peer, the
                    // listener's or the client's (by the input, its handshake's, in
                    // flight or not): a router's "fragmentation needed" of any MTU,
                    // another destination unreachable (any code, assigned or not), a time
                    // exceeded.
                    let (sport, dport) = match (&client, which & 16 != 0) {
                        (Some(c), true) => (5000, c.local_addr().port()),
                        _ => (4000 + u16::from(b.u8() % 4), 80),
                    };
                    let our = engine_isn.get(&sport).copied().unwrap_or(0);
                    let seq = our.wrapping_add(u32::from(b.u16()));
                    let mut quoted = [0u8; 28];
                    quoted[0] = 0x45;
                    quoted[2..4].copy_from_slice(&1500u16.to_be_bytes());
                    quoted[9] = 6;
                    quoted[12..16].copy_from_slice(&IP.octets());
                    quoted[16..20].copy_from_slice(&PEER_IP.octets());
                    quoted[20..22].copy_from_slice(&dport.to_be_bytes());
                    quoted[22..24].copy_from_slice(&sport.to_be_bytes());
                    quoted[24..28].copy_from_slice(&seq.to_be_bytes());
                    let mut f = vec![0u8; 128];
                    let ep = peer_to_engine();
                    let kind = b.u8();
                    let len = match kind % 3 {
                        0 => wire::icmp::emit_frag_needed(&mut f, &ep, b.u16(), &quoted),
                        1 => wire::icmp::emit_icmp_error(&mut f, &ep, (3, kind >> 2), &quoted),
                        _ => wire::icmp::emit_icmp_error(&mut f, &ep, (11, kind >> 6), &quoted),
                    };
                    if let Some(len) = len {
                        wire_end.send_bytes(now, &f[..len]);
                    }
                } else if which & 4 != 0 {
                    // An ICMP message: an echo request, or (by the input) another type, a
                    // wrong checksum, a length cut short.
                    let n = usize::from(b.u16() % 1600);
                    let salt = b.u8();
                    let data: Vec<u8> = (0..n).map(|i| (i as u8) ^ salt).collect();
                    let ep = peer_to_engine();
                    let mut f = vec![0u8; 2048];
                    if let Some(len) =
                        wire::icmp::emit_echo_request(&mut f, &ep, b.u16(), b.u16(), &data)
                    {
                        f.truncate(len);
                        let how = b.u8();
                        if how & 1 != 0 {
                            f[wire::ETH_HDR + wire::IP_HDR] = how >> 4;
                        }
                        if how & 2 != 0 {
                            f[wire::ETH_HDR + wire::IP_HDR + 2] ^= b.u8() | 1;
                        }
                        if how & 4 != 0 {
                            f.truncate(len - usize::from(b.u8()).min(len));
                        }
                        wire_end.send_bytes(now, &f);
                        pings.push(f);
                    }
                } else {
                    // Garbage on the wire.
                    let n = usize::from(b.u8());
                    let junk: Vec<u8> = (0..n).map(|_| b.u8()).collect();
                    wire_end.send_bytes(now, &junk);
                    // It may be an echo request, answered.
                    pings.push(junk);
                }
            }
        }
        for _ in 0..4 {
            if !e.poll(now) {
                break;
            }
        }
        // The peer reads what the engine sent: it learns our ISNs from SYN-ACKs and SYNs.
        while let Some(f) = wire_end.recv_bytes(now) {
            match wire::parse_frame(&f) {
                Ok(Parsed::Tcp(s)) if s.summary.has(flags::SYN) => {
                    engine_isn.insert(s.tuple.local_port, s.summary.seq);
                }
                Err(r) if wire::icmp::is_icmp(&f, r) => assert_echo_reply(&f, &pings),
                _ => {}
            }
        }
        let st = e.stats();
        assert!(st.flows <= max_flows, "flows {}", st.flows);
        assert!(
            st.handshakes <= max_half_open + 1,
            "handshakes {}",
            st.handshakes
        );
    }
    // Everyone leaves; time runs out every timer.
    drop(streams);
    drop(client);
    drop(listener);
    for _ in 0..200 {
        now += std::time::Duration::from_secs(10);
        e.poll(now);
        while wire_end.recv_bytes(now).is_some() {}
    }
    assert_eq!(e.stats().frames_in_use, 0, "every frame back in the arena");
}

/// `f` is an echo reply, checksums right, to one of the intact echo requests in `sent`:
/// addresses swapped, its identifier, sequence number and data the request's.
fn assert_echo_reply(f: &[u8], sent: &[Vec<u8>]) {
    let (ip, icmp) = (wire::ETH_HDR, wire::ETH_HDR + wire::IP_HDR);
    assert!(wire::checksum::ipv4_header_ok(&f[ip..icmp]));
    assert!(wire::checksum::Sum::default()
        .add_bytes(&f[icmp..])
        .verifies());
    assert_eq!((f[icmp], f[icmp + 1]), (0, 0), "only echo replies");
    assert_eq!(
        (&f[ip + 12..ip + 16], &f[ip + 16..ip + 20]),
        (&IP.octets()[..], &PEER_IP.octets()[..])
    );
    let answers = |r: &Vec<u8>| {
        wire::icmp::parse_echo_request(r).is_ok()
            && r.len() == f.len()
            && r[icmp + 4..] == f[icmp + 4..]
    };
    assert!(sent.iter().any(answers), "a reply to no request sent");
}

/// Arbitrary frames through the extensions' stages (header peek, VLAN strip, firewall,
/// classification, capture with a filter) and arbitrary text through the filter parser:
/// never a panic, a stripped frame is the tagged one without its tag, and every frame goes
/// back to the arena.
pub fn extensions(data: &[u8]) {
    use flextoe::pipeline::hooks::{Hook, HookCx, RxFrame, Verdict, Verdicts};
    use flextoe::stages::ext::capture::{Capture, CaptureFormat};
    use flextoe::stages::ext::classify::{ClassRule, Classification};
    use flextoe::stages::ext::filter::Filter;
    use flextoe::stages::ext::firewall::{Action, Firewall, Rule};
    use flextoe::stages::ext::headers::FrameInfo;
    use flextoe::stages::ext::vlan::VlanStrip;

    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<Filter>();
    }
    let info = FrameInfo::peek(data);
    if let Some(i) = info {
        assert_eq!(i.len, data.len());
        if i.vid.is_some() {
            assert_eq!(&data[12..14], &[0x81, 0x00]);
        }
        if i.tcp_checksums_ok(data) {
            assert!(i.is_tcp());
        }
    } else {
        assert!(data.len() < 18);
    }
    let arena = FrameArena::new(8).unwrap();
    let cx = HookCx {
        now: Instant::ZERO,
        arena: &arena,
        instance: 0,
    };
    let fw = Firewall::with_capacity(Action::Allow, 4);
    fw.set_rules(vec![
        Rule::deny().dst_port(23).syn(),
        Rule::deny().src("10.0.0.0/8".parse().unwrap()),
    ]);
    let classes = Classification::new(vec![ClassRule::to_class(2).dscp(46)], 1);
    let filter: Filter = "tcp and (syn or len > 100) or vlan 5 or arp"
        .parse()
        .unwrap();
    let capture = Capture::new(std::io::sink(), CaptureFormat::PcapNg, filter).unwrap();
    let Some(frame) = arena.alloc_copy(data) else {
        return;
    };
    // (A frame longer than the arena's room is cut to it.)
    let data = arena.data(&frame).to_vec();
    let mut frames = vec![frame];
    let mut v = Verdicts::new(1);
    Hook::<RxFrame>::process(&mut classes.stage(), &cx, &mut frames, &mut v);
    Hook::<RxFrame>::process(&mut capture.rx_stage(), &cx, &mut frames, &mut v);
    Hook::<RxFrame>::process(&mut fw.stage(), &cx, &mut frames, &mut v);
    let mut v = Verdicts::new(1);
    Hook::<RxFrame>::process(&mut VlanStrip::any(), &cx, &mut frames, &mut v);
    let info = FrameInfo::peek(&data);
    if v.get(0) == Verdict::Pass && info.is_some_and(|i| i.vid.is_some()) {
        let out = arena.data(&frames[0]);
        assert_eq!(&out[..12], &data[..12]);
        assert_eq!(&out[12..], &data[16..]);
    }
    for f in frames {
        arena.free(f);
    }
    assert_eq!(arena.in_use(), 0);
}

/// Arbitrary bytes as an eBPF object: the loader refuses them or loads them, never a panic;
/// a program that loads runs on a fixed frame in the interpreter, which stops it if it
/// strays (an error, never a crash), and leaves the frame inside its buffer.
#[cfg(feature = "ebpf")]
pub fn ebpf_loader(data: &[u8]) {
    use flextoe::backends::ebpf::{Exec, XdpObject};
    let Ok(obj) = XdpObject::parse(data) else {
        return;
    };
    let frame: Vec<u8> = (0..80u8).collect();
    for p in &obj.spec().programs {
        let Ok(prog) = obj.program(&p.name, Exec::Interpreter) else {
            continue;
        };
        let Ok(mut vm) = prog.vm() else { continue };
        let mut buf = vec![0u8; 2048];
        buf[64..144].copy_from_slice(&frame);
        vm.burst(0, |one| {
            if let Ok(o) = one(&mut buf, 64..144, 0) {
                assert!(o.data.start <= o.data.end && o.data.end <= 2048);
            }
        });
    }
}
