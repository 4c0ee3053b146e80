//! A scripted peer: hand-made segments into an engine, the engine's segments out, virtual
//! time. For connection-state tests in the style of smoltcp's socket tests.

use std::io::Read;
use std::net::SocketAddrV4;
use std::time::Duration;

use flextoe::backends::mem::{MemLink, MemPort};
use flextoe::control::TcpConnState;
use flextoe::host::{Host, Listener, Stream};
use flextoe::pipeline::{Engine, EngineConfig, Threaded, Topology};
use flextoe::sim::{Impairments, VirtualClock};
use flextoe::time::{Clock, Instant};
use flextoe::wire::{self, flags, Endpoints, FourTuple, Parsed};
use smoltcp::wire::{TcpControl, TcpRepr, TcpSeqNumber, TcpTimestampRepr};

use super::{IP_A, IP_B, MAC_A, MAC_B};

/// The engine's port in these tests.
pub const LOCAL_PORT: u16 = 80;
/// The scripted peer's port.
pub const PEER_PORT: u16 = 4000;
/// The peer's initial sequence number.
pub const PEER_ISS: u32 = 10_000;

/// A segment the engine sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seg {
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub win: u16,
    pub payload: Vec<u8>,
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub ts: Option<(u32, u32)>,
    pub dst_port: u16,
    pub src_port: u16,
    pub sack_permitted: bool,
    pub sack: Vec<(u32, u32)>,
    /// The IP header's ECN field.
    pub ecn: u8,
}

impl Seg {
    pub fn has(&self, f: u8) -> bool {
        self.flags & f == f
    }
}

/// What a script drives: the inline engine, or the threaded runtime run on the caller's
/// thread.
pub trait Target {
    /// Most passes a script's `poll` makes while there is work.
    const PASSES: usize = 8;
    fn poll(&mut self, now: Instant) -> bool;
    fn host(&self) -> Host;
}

impl Target for Engine<MemPort> {
    fn poll(&mut self, now: Instant) -> bool {
        Engine::poll(self, now)
    }
    fn host(&self) -> Host {
        Engine::host(self)
    }
}

/// A caller-driven topology: every pass runs each task once, on the script's clock.
impl Target for Threaded {
    // Each task handles a burst per pass, and the tasks hand items on to each other.
    const PASSES: usize = 256;
    fn poll(&mut self, _now: Instant) -> bool {
        Threaded::poll(self)
    }
    fn host(&self) -> Host {
        Threaded::host(self)
    }
}

pub struct Script<E: Target = Engine<MemPort>> {
    pub engine: E,
    pub wire: MemPort,
    pub clock: VirtualClock,
    pub listener: Option<Listener>,
    pub stream: Option<Stream>,
    /// Sequence number the peer sends next.
    pub peer_seq: u32,
    /// The engine's next sequence number as the peer knows it.
    pub engine_seq: u32,
    pub peer_port: u16,
    pub local_port: u16,
}

pub fn config() -> EngineConfig {
    let mut c = EngineConfig::new(MAC_A, IP_A).neighbor(IP_B, MAC_B);
    c.arena_frames = 1024;
    c.rx_buffer = 64 * 1024;
    c.tx_buffer = 64 * 1024;
    // A fixed key: the engine's initial sequence numbers (and so every sequence number a
    // script computes, some in plain `u32` arithmetic) and its ephemeral ports are the same
    // in every run, not drawn afresh; the default connection (peer port 4000 to port 80)
    // starts at 0x8c91a7d7, mid-range, far from a wrap.
    c.control.isn_secret = [0x5c21_7e59, 0x0dd5_eed5];
    c
}

impl Script {
    pub fn new(cfg: EngineConfig) -> Self {
        let (a, b) = MemLink::pair(Impairments::none());
        Script::around(Engine::new(cfg, a).expect("engine"), b, VirtualClock::new())
    }

    pub fn state(&self) -> Option<TcpConnState> {
        self.engine.conn_state(&self.tuple())
    }

    /// A passive open all the way to ESTABLISHED, with the accepted stream kept.
    pub fn accept_established(&mut self) {
        self.accept_stream();
        assert_eq!(self.state(), Some(TcpConnState::Established));
    }

    /// An active open all the way to ESTABLISHED (the peer plays the server).
    pub fn connect_established(&mut self) {
        self.connect_stream();
        assert_eq!(self.state(), Some(TcpConnState::Established));
    }

    /// A timestamp option for hand-made segments.
    pub fn ts(val: u32, ecr: u32) -> Option<TcpTimestampRepr> {
        Some(TcpTimestampRepr::new(val, ecr))
    }
}

/// The caller-driven layout of two flow groups, two preprocess and two postprocess replicas
/// (`Topology::bluefield2` on the script's thread): a task graph, not the inline mapping.
pub fn two_groups_on_the_callers_thread() -> Topology {
    let mut t = Topology::bluefield2();
    for w in t.workers.iter_mut() {
        w.core = None;
    }
    t.caller_driven = true;
    t
}

impl Script<Threaded> {
    /// The threaded runtime on `topology`, which must be caller-driven: the script runs its
    /// tasks on the test's thread, so what happens within a pass is the same every run.
    pub fn threaded(cfg: EngineConfig, topology: Topology) -> Self {
        assert!(topology.caller_driven, "a script drives the runtime itself");
        let (a, b) = MemLink::pair(Impairments::none());
        let clock = VirtualClock::new();
        let rt = Threaded::spawn(cfg, a, topology, clock.clone()).expect("threaded");
        Script::around(rt, b, clock)
    }
}

impl<E: Target> Script<E> {
    fn around(engine: E, wire: MemPort, clock: VirtualClock) -> Self {
        Script {
            engine,
            wire,
            clock,
            listener: None,
            stream: None,
            peer_seq: PEER_ISS,
            engine_seq: 0,
            peer_port: PEER_PORT,
            local_port: LOCAL_PORT,
        }
    }

    pub fn tuple(&self) -> FourTuple {
        FourTuple {
            local_ip: IP_A,
            local_port: self.local_port,
            remote_ip: IP_B,
            remote_port: self.peer_port,
        }
    }

    pub fn poll(&mut self) {
        for _ in 0..E::PASSES {
            if !self.engine.poll(self.clock.now()) {
                break;
            }
        }
    }

    pub fn advance(&mut self, d: Duration) {
        // Step in small slices so timers fire at their time.
        let end = self.clock.now() + d;
        while self.clock.now() < end {
            let step = Duration::from_millis(10).min(end - self.clock.now());
            self.clock.advance(step);
            self.poll();
        }
    }

    pub fn repr<'a>(&self, fl: u8, seq: u32, ack: Option<u32>, payload: &'a [u8]) -> TcpRepr<'a> {
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
        TcpRepr {
            src_port: self.peer_port,
            dst_port: self.local_port,
            control,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
            window_len: 65535,
            window_scale: None,
            max_seg_size: if fl & flags::SYN != 0 {
                Some(1460)
            } else {
                None
            },
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload,
        }
    }

    /// The frame the peer would put on the wire for `repr`.
    pub fn frame(&self, repr: &TcpRepr<'_>) -> Vec<u8> {
        let ep = Endpoints {
            src_mac: MAC_B,
            dst_mac: MAC_A,
            src_ip: IP_B,
            dst_ip: IP_A,
        };
        let mut buf = vec![0u8; 2048];
        let n = wire::emit_tcp(&mut buf, &ep, repr).expect("fits");
        buf.truncate(n);
        buf
    }

    /// The start of one of the engine's segments of this connection (or of the one to
    /// `remote_port` where given) at `seq`, as an ICMP error quotes it: its IPv4 header and
    /// the first 8 bytes of TCP.
    pub fn quoted(&self, remote_port: Option<u16>, seq: u32) -> Vec<u8> {
        let ours = Endpoints {
            src_mac: MAC_A,
            dst_mac: MAC_B,
            src_ip: IP_A,
            dst_ip: IP_B,
        };
        let repr = TcpRepr {
            src_port: self.local_port,
            dst_port: remote_port.unwrap_or(self.peer_port),
            ..self.repr(0, seq, None, &[])
        };
        let mut seg = vec![0u8; 128];
        let n = wire::emit_tcp(&mut seg, &ours, &repr).expect("fits");
        seg[wire::ETH_HDR..n][..wire::IP_HDR + 8].to_vec()
    }

    /// Put a frame on the wire towards the engine without polling it (to build bursts).
    pub fn inject(&mut self, frame: &[u8]) {
        self.wire.send_bytes(self.clock.now(), frame);
    }

    pub fn send_repr(&mut self, repr: &TcpRepr<'_>) {
        let f = self.frame(repr);
        self.inject(&f);
        self.poll();
    }

    /// Send a segment with `flags` (ACK implied by `ack`), then poll the engine.
    pub fn send(&mut self, fl: u8, seq: u32, ack: Option<u32>, payload: &[u8]) {
        let r = self.repr(fl, seq, ack, payload);
        self.send_repr(&r);
    }

    /// Send in-sequence data from the peer and advance `peer_seq`.
    pub fn send_data(&mut self, payload: &[u8]) {
        let (s, a) = (self.peer_seq, self.engine_seq);
        self.send(flags::PSH | flags::ACK, s, Some(a), payload);
        self.peer_seq = self.peer_seq.wrapping_add(payload.len() as u32);
    }

    /// Send a pure ACK of everything the engine sent.
    pub fn send_ack(&mut self) {
        let (s, a) = (self.peer_seq, self.engine_seq);
        self.send(flags::ACK, s, Some(a), &[]);
    }

    /// Every segment the engine has put on the wire so far.
    pub fn recv(&mut self) -> Vec<Seg> {
        self.poll();
        let mut out = Vec::new();
        while let Some(f) = self.wire.recv_bytes(self.clock.now()) {
            match wire::parse_frame(&f).expect("engine sent a valid frame") {
                Parsed::Tcp(t) => {
                    let s = t.summary;
                    let off = s.payload_off as usize;
                    out.push(Seg {
                        flags: s.flags,
                        seq: s.seq,
                        ack: s.ack,
                        win: s.win,
                        payload: f[off..off + s.payload_len as usize].to_vec(),
                        mss: t.options.mss,
                        wscale: t.options.window_scale,
                        ts: t.options.timestamp,
                        dst_port: t.tuple.local_port,
                        src_port: t.tuple.remote_port,
                        sack_permitted: t.options.sack_permitted,
                        sack: s.sack_blocks(&f).as_slice().to_vec(),
                        ecn: f[wire::ETH_HDR + 1] & 3,
                    });
                }
                Parsed::Arp(_) => {}
            }
        }
        out
    }

    /// Exactly one segment.
    pub fn recv_one(&mut self) -> Seg {
        let v = self.recv();
        assert_eq!(v.len(), 1, "expected one segment, got {v:#?}");
        v.into_iter().next().unwrap()
    }

    /// Nothing on the wire.
    pub fn recv_none(&mut self) {
        let v = self.recv();
        assert!(v.is_empty(), "expected silence, got {v:#?}");
    }

    /// Listen on the local port.
    pub fn listen(&mut self, backlog: usize) {
        self.listener = Some(
            self.engine
                .host()
                .listen(self.local_port, backlog)
                .expect("listen"),
        );
        self.poll();
    }

    /// LISTEN -> SYN-RECEIVED: send a SYN, return the SYN-ACK.
    pub fn syn(&mut self) -> Seg {
        let s = self.peer_seq;
        self.send(flags::SYN, s, None, &[]);
        let sa = self.recv_one();
        assert!(sa.has(flags::SYN | flags::ACK), "{sa:?}");
        assert_eq!(sa.ack, PEER_ISS + 1);
        self.peer_seq = PEER_ISS + 1;
        self.engine_seq = sa.seq.wrapping_add(1);
        sa
    }

    /// A passive open: SYN, SYN-ACK, ACK, with the accepted stream kept.
    pub fn accept_stream(&mut self) {
        self.listen(8);
        self.syn();
        self.send_ack();
        let mut s = self
            .listener
            .as_ref()
            .unwrap()
            .try_accept()
            .expect("accept")
            .expect("a connection");
        s.set_nonblocking(true);
        self.stream = Some(s);
    }

    /// A passive open whose SYN is `syn` (sequence number `PEER_ISS`), completed by an ACK
    /// that echoes the SYN-ACK's timestamp if it has one; keeps the accepted stream and
    /// returns the SYN-ACK.
    pub fn accept_with(&mut self, syn: &TcpRepr<'_>) -> Seg {
        self.listen(8);
        self.send_repr(syn);
        let sa = self.recv_one();
        assert!(sa.has(flags::SYN | flags::ACK), "{sa:?}");
        self.peer_seq = PEER_ISS + 1;
        self.engine_seq = sa.seq.wrapping_add(1);
        let ack = TcpRepr {
            timestamp: sa.ts.map(|(v, _)| TcpTimestampRepr::new(1001, v)),
            ..self.repr(flags::ACK, self.peer_seq, Some(self.engine_seq), &[])
        };
        self.send_repr(&ack);
        let mut s = self
            .listener
            .as_ref()
            .unwrap()
            .try_accept()
            .expect("accept")
            .expect("a connection");
        s.set_nonblocking(true);
        self.stream = Some(s);
        sa
    }

    /// Open a connection to the peer: returns the engine's SYN (the stream is kept,
    /// nonblocking).
    pub fn start_connect(&mut self) -> Seg {
        let mut s = self
            .engine
            .host()
            .connect(SocketAddrV4::new(IP_B, PEER_PORT))
            .expect("connect");
        s.set_nonblocking(true);
        self.stream = Some(s);
        self.recv_one()
    }

    /// An active open: SYN, SYN-ACK, ACK (the peer plays the server).
    pub fn connect_stream(&mut self) {
        let syn = self.start_connect();
        assert!(syn.has(flags::SYN) && !syn.has(flags::ACK));
        self.local_port = syn.src_port;
        self.engine_seq = syn.seq.wrapping_add(1);
        let r = TcpRepr {
            ack_number: Some(TcpSeqNumber(self.engine_seq as i32)),
            ..self.repr(flags::SYN | flags::ACK, PEER_ISS, None, &[])
        };
        self.send_repr(&r);
        self.peer_seq = PEER_ISS + 1;
        let ack = self.recv_one();
        assert!(ack.has(flags::ACK) && !ack.has(flags::SYN));
        assert_eq!(ack.ack, self.peer_seq);
    }

    pub fn stream(&mut self) -> &mut Stream {
        self.stream.as_mut().expect("stream")
    }

    /// Read what the application can read now.
    pub fn app_read(&mut self) -> Vec<u8> {
        let mut buf = vec![0u8; 256 * 1024];
        match self.stream().read(&mut buf) {
            Ok(n) => buf[..n].to_vec(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Vec::new(),
            Err(e) => panic!("read: {e}"),
        }
    }
}
