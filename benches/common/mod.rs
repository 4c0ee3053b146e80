//! What the benchmarks that drive one engine (and one smoltcp interface) with hand-made
//! segments share: the addresses, the peer's segments, and a port that takes arena frames
//! in and hands what the engine sends to a sink.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use flextoe::backends::Port;
use flextoe::buf::{Frame, FrameArena};
use flextoe::time::Instant;
use flextoe::wire::{self, flags, Endpoints, MacAddr, Parsed};
use smoltcp::wire::{TcpControl, TcpRepr, TcpSeqNumber};

/// The stack under test.
pub const LOCAL_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
/// The scripted peer.
pub const PEER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
/// The stack under test.
pub const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 1);
/// The scripted peer.
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 2);
/// The stack under test listens here.
pub const PORT: u16 = 80;
/// The peer's port.
pub const PEER_PORT: u16 = 4000;
/// The peer's window scale (offered in its SYN).
pub const PEER_WSCALE: u8 = 7;

/// A segment from the peer into `buf` (ACK flag: `ack` is meaningful). A SYN offers `mss`
/// and [`PEER_WSCALE`]; no timestamps, no SACK.
pub fn peer_segment_into(buf: &mut Vec<u8>, fl: u8, seq: u32, ack: u32, payload: &[u8], mss: u16) {
    let syn = fl & flags::SYN != 0;
    let repr = TcpRepr {
        src_port: PEER_PORT,
        dst_port: PORT,
        control: if syn {
            TcpControl::Syn
        } else {
            TcpControl::None
        },
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: (fl & flags::ACK != 0).then_some(TcpSeqNumber(ack as i32)),
        window_len: 65535,
        window_scale: syn.then_some(PEER_WSCALE),
        max_seg_size: syn.then_some(mss),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    let ep = Endpoints {
        src_mac: PEER_MAC,
        dst_mac: LOCAL_MAC,
        src_ip: PEER_IP,
        dst_ip: LOCAL_IP,
    };
    buf.resize(2048, 0);
    let n = wire::emit_tcp(buf, &ep, &repr).expect("fits");
    buf.truncate(n);
}

/// [`peer_segment_into`] a new buffer.
pub fn peer_segment(fl: u8, seq: u32, ack: u32, payload: &[u8], mss: u16) -> Vec<u8> {
    let mut buf = Vec::new();
    peer_segment_into(&mut buf, fl, seq, ack, payload, mss);
    buf
}

/// The sequence number of the first SYN-ACK in `frames`.
pub fn syn_ack_seq(frames: &[Vec<u8>]) -> u32 {
    for f in frames {
        if let Ok(Parsed::Tcp(t)) = wire::parse_frame(f) {
            if t.summary.has(flags::SYN | flags::ACK) {
                return t.summary.seq;
            }
        }
    }
    panic!("no SYN-ACK");
}

/// What a [`ScriptPort`] does with each frame the engine sends (before freeing it).
pub trait Sink: Send {
    /// One frame.
    fn frame(&mut self, data: &[u8]);
}

impl Sink for () {
    fn frame(&mut self, _: &[u8]) {}
}

/// Frames in, frames out, nothing else. Received frames are already in the arena, as a NIC
/// (or AF_XDP) would have put them there; `pending` holds raw frames (the handshake), copied
/// in first. Sent frames go to the sink (and, while `captured` is set, are copied there).
pub struct ScriptPort<S: Sink = ()> {
    /// Arena frames to deliver.
    pub rx: VecDeque<Frame>,
    /// Raw frames to deliver first.
    pub pending: VecDeque<Vec<u8>>,
    /// Copies of sent frames, while set.
    pub captured: Option<Vec<Vec<u8>>>,
    /// Sees every sent frame.
    pub sink: S,
}

impl<S: Sink> ScriptPort<S> {
    /// A port that captures what is sent (for the handshake) and feeds `sink`.
    pub fn new(sink: S) -> Self {
        ScriptPort {
            rx: VecDeque::new(),
            pending: VecDeque::new(),
            captured: Some(Vec::new()),
            sink,
        }
    }
}

impl<S: Sink> Port for ScriptPort<S> {
    fn recv(
        &mut self,
        _now: Instant,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        let mut n = 0;
        while let Some(v) = self.pending.pop_front() {
            out.push(arena.alloc_copy(&v).expect("frame"));
            n += 1;
        }
        while n < max {
            let Some(f) = self.rx.pop_front() else { break };
            out.push(f);
            n += 1;
        }
        n
    }

    fn send(&mut self, _now: Instant, arena: &FrameArena, frames: &mut Vec<Frame>) -> usize {
        let n = frames.len();
        for f in frames.drain(..) {
            let data = arena.data(&f);
            if let Some(c) = &mut self.captured {
                c.push(data.to_vec());
            }
            self.sink.frame(data);
            arena.free(f);
        }
        n
    }
}
