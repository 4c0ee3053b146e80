//! Transmit-path cost: the application writes into an established connection and frames
//! leave the port, for the engine and for a smoltcp socket driven on the same ACK stream in
//! the same process, interleaved.
//!
//! ```text
//! cargo bench --bench tx_path
//! ```
//!
//! Three cases, each run for 31 rounds of 5000 bursts per side:
//!
//! - **64 B writes**: the application makes 32 writes of 64 bytes, then the stack is polled.
//!   A stack may coalesce the 2048 bytes into fewer, larger segments (both do: one
//!   1448-byte segment and one of 600 bytes). Reported per 64-byte write and per byte.
//! - **the same in a batch**: the engine's application makes its 32 writes through
//!   `Stream::batch`, which tells the engine once instead of on every write (smoltcp's
//!   socket needs no telling: the stack looks at it on its next poll). The smoltcp side is
//!   the same as in the first case.
//! - **bulk**: the application writes 32 x 1448 bytes in one call, then the stack is polled;
//!   32 full segments leave (smoltcp now and then sends one more, shorter, where its send
//!   buffer wraps around). Reported per 1448-byte segment and per byte.
//!
//! After the writes the stack is polled until everything written is on the wire. One poll
//! does it on both sides; the `polls/burst` row shows it, since a stack that needed more
//! would be paying for them here.
//!
//! Both sides:
//!
//! - the engine is the default pipeline ([`Engine::poll`], inline runtime) on a port that
//!   counts and frees the frames it is given; smoltcp is an `Interface` with one
//!   `tcp::Socket` (256 KiB buffers, Nagle off since the engine has no Nagle) on a device
//!   whose transmit token builds each frame into the next of 32 buffers used in turn (a
//!   NIC's transmit ring: the engine's frames, too, are distinct buffers that stay put until
//!   the port has them) and counts it;
//! - the connection is set up by a scripted handshake with a peer that offers MSS 1448,
//!   window scale 7 and no timestamps or SACK, so both send 1448-byte segments;
//! - after every burst the peer's pure ACK of everything sent so far, with an 8 MiB window,
//!   is built outside the timed region (for the engine straight into an arena frame, as a
//!   NIC would put it there, for smoltcp into a buffer its device lends out) and taken in
//!   by the next burst's first poll;
//! - the timed region is the writes and the polls that follow them, ACK processing
//!   included. The data is copied from the application's buffer into the stack (the
//!   engine's TX ring, smoltcp's socket buffer) and from there into the frame; IPv4 and TCP
//!   checksums are computed in software on transmit, and verified in software on the ACKs
//!   received;
//! - ACK policy: the engine ACKs once per connection per burst, smoltcp delays ACKs (10 ms);
//!   neither receives data here, so neither sends an ACK;
//! - congestion control: NewReno in the engine (in slow start throughout, since every
//!   segment is acknowledged at once); smoltcp 0.14 has none by default. A warm-up before
//!   the rounds opens the engine's window.
//!
//! Each round runs the two sides one after the other, alternating which goes first; the
//! medians over the rounds are compared as smoltcp's time over the engine's (above 1: the
//! engine is faster). Every write must be taken whole (the window never closes), and at the
//! end, outside timing, both sides are checked: every byte written reached the wire once,
//! in sequence order (no loss, no duplicate, no retransmission).

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant as StdInstant};

use flextoe::pipeline::{Engine, EngineConfig, Pipeline};
use flextoe::time::Instant;
use flextoe::wire::{self, flags};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

mod common;

use common::*;

/// Writes per poll (64 B case) and segments per write (bulk case).
const BURST: usize = 32;
/// Buffers in the smoltcp device's transmit ring (one burst's frames).
const TX_RING: usize = 32;
/// Interleaved rounds.
const ROUNDS: usize = 31;
/// Bursts per side per round.
const BURSTS: usize = 5000;
/// Polls per burst at most, waiting for the burst's data to leave.
const MAX_POLLS: usize = 64;
/// Untimed bursts before the first round.
const WARMUP: usize = 200;
/// The MSS the peer offers, and so the size of every full segment.
const MSS: usize = 1448;
/// The peer's initial sequence number.
const PEER_ISS: u32 = 1000;

/// What the application does in each burst.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    /// Bytes per write call.
    write: usize,
    /// Write calls per poll.
    writes: usize,
    /// Bytes per reported unit (64 for a write, 1448 for a segment).
    unit_bytes: usize,
    unit: &'static str,
    /// The engine's application writes through `Stream::batch` (one doorbell for the
    /// burst's writes, as smoltcp's socket is looked at on the next poll anyway); the
    /// smoltcp side is the same in both cases.
    batch: bool,
}

impl Case {
    fn burst_bytes(&self) -> usize {
        self.write * self.writes
    }
}

const CASES: [Case; 3] = [
    Case {
        name: "64 B writes, 32 per poll",
        write: 64,
        writes: BURST,
        unit_bytes: 64,
        unit: "ns/write",
        batch: false,
    },
    Case {
        name: "same, in a Stream::batch",
        write: 64,
        writes: BURST,
        unit_bytes: 64,
        unit: "ns/write",
        batch: true,
    },
    Case {
        name: "bulk, 32 x 1448 B per write",
        write: BURST * MSS,
        writes: 1,
        unit_bytes: MSS,
        unit: "ns/segment",
        batch: false,
    },
];

/// What one side put on the wire: frames, bytes, and whether the payload came out in
/// sequence order, each byte once.
struct Wire {
    frames: u64,
    bytes: u64,
    /// TCP payload bytes.
    payload: u64,
    /// The sequence number the next payload byte must carry (everything before it was sent).
    next_seq: u32,
    /// Data segments that did not start at `next_seq` (a gap, a duplicate or a resend).
    out_of_order: u64,
    /// Frames that were not IPv4.
    other: u64,
    /// Frames whose IPv4 or TCP checksum was checked (one in [`CHECK_EVERY`]), and those
    /// found wrong.
    checked: u64,
    bad_checksum: u64,
}

/// One frame in this many has its checksums verified as it is recorded (both sides alike).
const CHECK_EVERY: u64 = 16;

impl Wire {
    fn new(next_seq: u32) -> Self {
        Wire {
            frames: 0,
            bytes: 0,
            payload: 0,
            next_seq,
            out_of_order: 0,
            other: 0,
            checked: 0,
            bad_checksum: 0,
        }
    }

    /// Count one Ethernet/IPv4/TCP frame.
    #[inline]
    fn record(&mut self, f: &[u8]) {
        self.frames += 1;
        self.bytes += f.len() as u64;
        if f[12..14] != [0x08, 0x00] {
            self.other += 1;
            return;
        }
        let ip = &f[wire::ETH_HDR..];
        let ihl = (ip[0] & 0x0f) as usize * 4;
        let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
        let tcp = &ip[ihl..];
        let thl = (tcp[12] >> 4) as usize * 4;
        let len = total - ihl - thl;
        if len == 0 {
            return;
        }
        if self.frames.is_multiple_of(CHECK_EVERY) {
            self.checked += 1;
            let src = std::net::Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = std::net::Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            if !wire::checksum::ipv4_header_ok(&ip[..ihl])
                || !wire::checksum::tcp_ok(src, dst, &ip[ihl..total])
            {
                self.bad_checksum += 1;
            }
        }
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        if seq != self.next_seq {
            self.out_of_order += 1;
        }
        self.next_seq = seq.wrapping_add(len as u32);
        self.payload += len as u64;
    }
}

/// A segment from the peer (no payload: ACKs and the handshake).
fn segment_into(buf: &mut Vec<u8>, fl: u8, seq: u32, ack: u32) {
    peer_segment_into(buf, fl, seq, ack, &[], MSS as u16)
}

fn segment(fl: u8, seq: u32, ack: u32) -> Vec<u8> {
    peer_segment(fl, seq, ack, &[], MSS as u16)
}

/// One stack under test: an established connection the application writes into.
trait Side {
    const NAME: &'static str;
    /// Run `bursts` bursts of `case`: the writes, polls until all of it is on the wire, then
    /// (untimed) the peer's ACK of everything sent, for the next burst's first poll. Returns
    /// the time spent in the writes and polls.
    fn run(&mut self, case: &Case, app: &[u8], bursts: usize) -> Duration;
    /// Bytes the application's writes were given and accepted.
    fn offered_accepted(&self) -> (u64, u64);
    /// Calls to the stack's poll so far.
    fn polls(&self) -> u64;
    /// What went out on the wire.
    fn wire(&self) -> &Wire;
}

// ---------------------------------------------------------------------------------------
// The engine.

impl Sink for Wire {
    fn frame(&mut self, data: &[u8]) {
        self.record(data);
    }
}

/// The engine's port: sent frames are counted (and, during the handshake, captured).
type TxPort = ScriptPort<Wire>;

struct EngineSide {
    engine: Engine<TxPort>,
    stream: flextoe::Stream,
    clock: u64,
    scratch: Vec<u8>,
    offered: u64,
    accepted: u64,
    polls: u64,
}

impl EngineSide {
    fn new() -> Self {
        let mut cfg = EngineConfig::new(LOCAL_MAC, LOCAL_IP).neighbor(PEER_IP, PEER_MAC);
        cfg.control.timestamps = false;
        let port = TxPort::new(Wire::new(0));
        let mut e = Pipeline::builder(cfg, port).build().expect("engine");
        let listener = e.host().listen(PORT, 4).expect("listen");
        e.poll(Instant::ZERO);
        e.port_mut()
            .pending
            .push_back(segment(flags::SYN, PEER_ISS, 0));
        e.poll(Instant::ZERO);
        let iss = syn_ack_seq(e.port().captured.as_ref().expect("capturing"));
        e.port_mut()
            .pending
            .push_back(segment(flags::ACK, PEER_ISS + 1, iss.wrapping_add(1)));
        e.poll(Instant::ZERO);
        let mut stream = listener.try_accept().expect("accept").expect("established");
        stream.set_nonblocking(true);
        let port = e.port_mut();
        port.captured = None;
        port.sink = Wire::new(iss.wrapping_add(1));
        EngineSide {
            engine: e,
            stream,
            clock: 0,
            scratch: Vec::new(),
            offered: 0,
            accepted: 0,
            polls: 0,
        }
    }

    /// The peer acknowledges everything sent so far, in an arena frame for the next poll.
    fn feed_ack(&mut self) {
        let ack = self.engine.port().sink.next_seq;
        segment_into(&mut self.scratch, flags::ACK, PEER_ISS + 1, ack);
        let frame = self
            .engine
            .arena()
            .alloc_copy(&self.scratch)
            .expect("frame");
        self.engine.port_mut().rx.push_back(frame);
    }
}

impl Side for EngineSide {
    const NAME: &'static str = "flextoe";
    fn run(&mut self, case: &Case, app: &[u8], bursts: usize) -> Duration {
        let data = &app[..case.write];
        let mut spent = Duration::ZERO;
        for _ in 0..bursts {
            let start = StdInstant::now();
            if case.batch {
                let mut b = self.stream.batch();
                for _ in 0..case.writes {
                    match b.write(data) {
                        Ok(n) => self.accepted += n as u64,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => panic!("write: {e}"),
                    }
                }
            } else {
                for _ in 0..case.writes {
                    match self.stream.write(data) {
                        Ok(n) => self.accepted += n as u64,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => panic!("write: {e}"),
                    }
                }
            }
            for _ in 0..MAX_POLLS {
                self.clock += 1;
                self.polls += 1;
                self.engine.poll(Instant::from_micros(self.clock));
                if self.engine.port().sink.payload >= self.accepted {
                    break;
                }
            }
            spent += start.elapsed();
            self.offered += case.burst_bytes() as u64;
            self.feed_ack();
        }
        spent
    }

    fn offered_accepted(&self) -> (u64, u64) {
        (self.offered, self.accepted)
    }

    fn polls(&self) -> u64 {
        self.polls
    }

    fn wire(&self) -> &Wire {
        &self.engine.port().sink
    }
}

// ---------------------------------------------------------------------------------------
// smoltcp.

/// A smoltcp device of the same shape as [`TxPort`]: received frames wait in buffers the
/// device lends out, and every transmitted frame is built into one reused buffer, counted,
/// and dropped.
struct TxDev {
    rx: VecDeque<Vec<u8>>,
    pool: Vec<Vec<u8>>,
    /// The transmit ring: [`TX_RING`] buffers as long as the largest frame, filled in turn,
    /// as a NIC's transmit descriptors are (a frame stays put until the NIC has sent it; the
    /// engine's frames are distinct arena frames too).
    frames: Vec<Vec<u8>>,
    /// The buffer the next frame goes into.
    next: usize,
    /// Copies of sent frames, during the handshake only.
    captured: Option<Vec<Vec<u8>>>,
    wire: Wire,
}

struct Rx<'a> {
    buf: Vec<u8>,
    pool: &'a mut Vec<Vec<u8>>,
}

struct Tx<'a> {
    frames: &'a mut [Vec<u8>],
    next: &'a mut usize,
    captured: &'a mut Option<Vec<Vec<u8>>>,
    wire: &'a mut Wire,
}

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.buf);
        self.pool.push(self.buf);
        r
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let i = *self.next;
        *self.next = (i + 1) % self.frames.len();
        let buf = &mut self.frames[i][..len];
        let r = f(buf);
        if let Some(c) = self.captured {
            c.push(buf.to_vec());
        }
        self.wire.record(buf);
        r
    }
}

impl Device for TxDev {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _t: smoltcp::time::Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let buf = self.rx.pop_front()?;
        Some((
            Rx {
                buf,
                pool: &mut self.pool,
            },
            Tx {
                frames: &mut self.frames,
                next: &mut self.next,
                captured: &mut self.captured,
                wire: &mut self.wire,
            },
        ))
    }

    fn transmit(&mut self, _t: smoltcp::time::Instant) -> Option<Tx<'_>> {
        Some(Tx {
            frames: &mut self.frames,
            next: &mut self.next,
            captured: &mut self.captured,
            wire: &mut self.wire,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

struct SmolSide {
    iface: Interface,
    dev: TxDev,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    clock: i64,
    offered: u64,
    accepted: u64,
    polls: u64,
}

impl SmolSide {
    fn new() -> Self {
        let mut dev = TxDev {
            rx: VecDeque::new(),
            pool: Vec::new(),
            frames: vec![vec![0; 1514]; TX_RING],
            next: 0,
            captured: Some(Vec::new()),
            wire: Wire::new(0),
        };
        let t0 = smoltcp::time::Instant::from_micros(0);
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ethernet(LOCAL_MAC)),
            &mut dev,
            t0,
        );
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(LOCAL_IP), 24)).unwrap();
        });
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
        );
        sock.set_nagle_enabled(false);
        sock.listen(PORT).unwrap();
        let mut sockets = SocketSet::new(vec![]);
        let handle = sockets.add(sock);
        dev.rx.push_back(segment(flags::SYN, PEER_ISS, 0));
        iface.poll(t0, &mut dev, &mut sockets);
        // smoltcp asks for the peer's MAC before it answers; reply.
        let reply = smoltcp::wire::ArpRepr::EthernetIpv4 {
            operation: smoltcp::wire::ArpOperation::Reply,
            source_hardware_addr: PEER_MAC,
            source_protocol_addr: PEER_IP,
            target_hardware_addr: LOCAL_MAC,
            target_protocol_addr: LOCAL_IP,
        };
        let mut arp = vec![0u8; 64];
        let n = wire::emit_arp(&mut arp, PEER_MAC, LOCAL_MAC, &reply).expect("fits");
        arp.truncate(n);
        dev.rx.push_back(arp);
        iface.poll(t0, &mut dev, &mut sockets);
        let iss = syn_ack_seq(dev.captured.as_ref().expect("capturing"));
        dev.rx
            .push_back(segment(flags::ACK, PEER_ISS + 1, iss.wrapping_add(1)));
        iface.poll(t0, &mut dev, &mut sockets);
        assert_eq!(
            sockets.get::<tcp::Socket>(handle).state(),
            tcp::State::Established
        );
        dev.captured = None;
        dev.wire = Wire::new(iss.wrapping_add(1));
        SmolSide {
            iface,
            dev,
            sockets,
            handle,
            clock: 0,
            offered: 0,
            accepted: 0,
            polls: 0,
        }
    }

    /// The peer acknowledges everything sent so far, in a device buffer for the next poll.
    fn feed_ack(&mut self) {
        let mut buf = self.dev.pool.pop().unwrap_or_default();
        segment_into(&mut buf, flags::ACK, PEER_ISS + 1, self.dev.wire.next_seq);
        self.dev.rx.push_back(buf);
    }
}

impl Side for SmolSide {
    const NAME: &'static str = "smoltcp";
    fn run(&mut self, case: &Case, app: &[u8], bursts: usize) -> Duration {
        let data = &app[..case.write];
        let mut spent = Duration::ZERO;
        for _ in 0..bursts {
            let start = StdInstant::now();
            let sock = self.sockets.get_mut::<tcp::Socket>(self.handle);
            for _ in 0..case.writes {
                self.accepted += sock.send_slice(data).expect("send") as u64;
            }
            for _ in 0..MAX_POLLS {
                self.clock += 1;
                self.polls += 1;
                let now = smoltcp::time::Instant::from_micros(self.clock);
                self.iface.poll(now, &mut self.dev, &mut self.sockets);
                if self.dev.wire.payload >= self.accepted {
                    break;
                }
            }
            spent += start.elapsed();
            self.offered += case.burst_bytes() as u64;
            self.feed_ack();
        }
        spent
    }

    fn offered_accepted(&self) -> (u64, u64) {
        (self.offered, self.accepted)
    }

    fn polls(&self) -> u64 {
        self.polls
    }

    fn wire(&self) -> &Wire {
        &self.dev.wire
    }
}

// ---------------------------------------------------------------------------------------
// The comparison.

/// Per-round figures of one side.
#[derive(Default)]
struct Rounds {
    /// ns per unit (write or segment).
    per_unit: Vec<f64>,
    /// ns per application byte.
    per_byte: Vec<f64>,
    /// Frames, and their bytes, sent per burst.
    frames: Vec<f64>,
    wire_bytes: Vec<f64>,
    /// Polls per burst.
    polls: Vec<f64>,
}

fn run_round<S: Side>(side: &mut S, case: &Case, app: &[u8], out: &mut Rounds) {
    let (offered, accepted) = side.offered_accepted();
    let (frames, wire_bytes) = (side.wire().frames, side.wire().bytes);
    let polls = side.polls();
    let spent = side.run(case, app, BURSTS).as_nanos() as f64;
    let (offered2, accepted2) = side.offered_accepted();
    assert_eq!(
        accepted2 - accepted,
        offered2 - offered,
        "{}: a write was refused: the window or the send buffer closed",
        S::NAME
    );
    let bytes = (accepted2 - accepted) as f64;
    out.per_unit.push(spent / (bytes / case.unit_bytes as f64));
    out.per_byte.push(spent / bytes);
    out.frames
        .push((side.wire().frames - frames) as f64 / BURSTS as f64);
    out.wire_bytes
        .push((side.wire().bytes - wire_bytes) as f64 / BURSTS as f64);
    out.polls
        .push((side.polls() - polls) as f64 / BURSTS as f64);
}

/// Median, min and max.
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

fn fmt(v: &[f64], prec: usize) -> String {
    let (m, lo, hi) = stats(v);
    format!("{m:.prec$} ({lo:.prec$}..{hi:.prec$})")
}

/// Poll with ACKs (no new writes) until everything accepted is on the wire, then check that
/// it went out once, in order.
fn check<S: Side>(side: &mut S, case: &Case) {
    let name = S::NAME;
    let idle = Case {
        write: 0,
        writes: 0,
        ..*case
    };
    for _ in 0..1000 {
        if side.wire().payload == side.offered_accepted().1 {
            break;
        }
        side.run(&idle, &[], 1);
    }
    let (_, accepted) = side.offered_accepted();
    let w = side.wire();
    assert!(accepted > 0, "{name}: nothing was written");
    assert_eq!(
        w.payload, accepted,
        "{name}: payload on the wire differs from what was written"
    );
    assert_eq!(w.out_of_order, 0, "{name}: data went out of order or twice");
    assert_eq!(w.other, 0, "{name}: frames other than IPv4 were sent");
    assert!(w.checked > 0, "{name}: no checksum was checked");
    assert_eq!(
        w.bad_checksum, 0,
        "{name}: frames with a wrong checksum were sent"
    );
}

/// `TX_COUNT=<flextoe|smoltcp>:<case>:<bursts>`: set up one side, run that many bursts of
/// case 0, 1 or 2 (the order of the table), check what went out, and exit. For counting
/// instructions under `valgrind --tool=cachegrind`: the difference of two runs' counts over
/// the difference of their bursts leaves setup out (as `ENGINES_COUNT` in `benches/engines.rs`).
fn count_only(spec: &str, app: &[u8]) {
    let parts: Vec<&str> = spec.split(':').collect();
    let [side, case, bursts] = parts[..] else {
        panic!("TX_COUNT=<flextoe|smoltcp>:<case>:<bursts>, not {spec}");
    };
    let case = &CASES[case.parse::<usize>().expect("case: 0, 1 or 2")];
    let bursts: usize = bursts.parse().expect("bursts");
    match side {
        "flextoe" => {
            let mut e = EngineSide::new();
            e.run(case, app, bursts);
            check(&mut e, case);
        }
        "smoltcp" => {
            let mut s = SmolSide::new();
            s.run(case, app, bursts);
            check(&mut s, case);
        }
        other => panic!("TX_COUNT side: flextoe or smoltcp, not {other}"),
    }
}

fn main() {
    // Application data: a non-constant pattern, copied in by every write.
    let app: Vec<u8> = (0..BURST * MSS).map(|i| (i * 7 + i / 251) as u8).collect();
    if let Ok(spec) = std::env::var("TX_COUNT") {
        count_only(&spec, &app);
        return;
    }
    println!(
        "transmit path, {ROUNDS} interleaved rounds of {BURSTS} bursts per side; median (min..max)"
    );
    println!(
        "{:<28} {:<12} {:>26} {:>26} {:>16}",
        "case", "unit", "flextoe", "smoltcp", "smoltcp/flextoe"
    );
    for case in &CASES {
        let mut engine = EngineSide::new();
        let mut smol = SmolSide::new();
        engine.run(case, &app, WARMUP);
        smol.run(case, &app, WARMUP);
        let mut e = Rounds::default();
        let mut s = Rounds::default();
        for round in 0..ROUNDS {
            if round % 2 == 0 {
                run_round(&mut engine, case, &app, &mut e);
                run_round(&mut smol, case, &app, &mut s);
            } else {
                run_round(&mut smol, case, &app, &mut s);
                run_round(&mut engine, case, &app, &mut e);
            }
        }
        check(&mut engine, case);
        check(&mut smol, case);
        let rows = [
            (case.name, case.unit, &e.per_unit, &s.per_unit, 1, true),
            ("", "ns/byte", &e.per_byte, &s.per_byte, 3, true),
            ("", "frames/burst", &e.frames, &s.frames, 2, false),
            ("", "bytes/burst", &e.wire_bytes, &s.wire_bytes, 0, false),
            ("", "polls/burst", &e.polls, &s.polls, 2, false),
        ];
        for (name, unit, a, b, prec, time) in rows {
            let ratio = if time {
                format!("{:.2}", stats(b).0 / stats(a).0)
            } else {
                String::new()
            };
            println!(
                "{name:<28} {unit:<12} {:>26} {:>26} {ratio:>16}",
                fmt(a, prec),
                fmt(b, prec)
            );
        }
    }
    println!("(ratio above 1: flextoe is faster)");
}
