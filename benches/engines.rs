//! Two engines talking to each other against two smoltcp interfaces talking to each other,
//! in memory, on one thread, interleaved in one process.
//!
//! ```text
//! cargo bench --bench engines
//! ```
//!
//! Workloads, each over 15 rounds per side, alternating which side goes first:
//!
//! - **bulk**: the client streams 64 MiB per round to the server, which reads and discards
//!   it; MB/s (10^6 bytes per second);
//! - **RPC, depth 1**: 64-byte requests, each answered by a 64-byte response that echoes
//!   it, one outstanding at a time; requests per second;
//! - **RPC, depth 64**: the same with 64 requests outstanding on the one connection
//!   (pipelined);
//! - **idle poll**: the connection open and idle, each stack polled with nothing to do
//!   (no frame, no data, no timer due); stack polls per second. A round that sends a frame
//!   fails.
//!
//! Both sides run the same application loop (one generic function per workload): each
//! iteration advances a fake clock by 1 us (`flextoe::time::Instant::from_micros`,
//! `smoltcp::time::Instant::from_micros`), polls the client's stack, then the server's, then
//! lets the server and the client applications read and write what they can. Only the
//! time from a round's first iteration to its last is measured; connections are set up
//! before, and stay open across rounds.
//!
//! - **flextoe**: two engines ([`Pipeline::builder`], inline runtime: 256 KiB rings,
//!   NewReno, window scaling, SACK; timestamps off, as on the smoltcp side; delayed ACKs of
//!   10 ms, `AckPolicy::delayed`, as smoltcp's: an ACK goes at once when more than one full
//!   segment of data is unacknowledged and otherwise rides on the response), with static
//!   neighbour entries for each other, joined by the zero-copy `ArenaLink` (one shared frame
//!   arena; sending moves frame handles). The applications use nonblocking [`Stream`]s.
//! - **smoltcp**: two `Interface`s with one `tcp::Socket` each (256 KiB buffers, window
//!   scaling; no timestamps, which smoltcp sends only with a generator set, and no SACK,
//!   which it does not offer; Nagle off since the engine has no Nagle; smoltcp's default
//!   delayed ACK of 10 ms, which still ACKs at once when more than one full segment is
//!   unacknowledged, and otherwise lets the ACK ride on the response), joined by a device
//!   pair written here. The first packet's ARP exchange happens during setup.
//!
//! Both compute and verify IPv4 and TCP checksums in software, and both copy application
//! data in on write and out on read (the engine through its per-connection rings, smoltcp
//! through its socket buffers). Neither link copies: the smoltcp device pair moves buffers
//! between the two interfaces (a transmit token fills a pooled buffer that goes onto the
//! peer's queue, and the receive token returns it to the pool), and `ArenaLink` moves frame
//! handles. [`engine_pair`] is the one place that makes the engines' link.
//!
//! Every response is compared with the request it answers, and every byte of the bulk
//! stream with what the client wrote; the counts and the comparisons are asserted at the
//! end, so a run that moved nothing, or the wrong bytes, fails.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::time::{Duration, Instant as StdInstant};

use flextoe::backends::arena_link::{ArenaLink, ArenaPort};
use flextoe::pipeline::{Engine, EngineConfig, Pipeline};
use flextoe::stages::protocol::AckPolicy;
use flextoe::wire::MacAddr;
use flextoe::Stream;

#[path = "engines/smoltcp_side.rs"]
mod smoltcp_side;
use smoltcp_side::Smols;

/// Interleaved rounds per workload.
const ROUNDS: usize = 15;
/// Bytes the bulk client sends per round.
const BULK_BYTES: u64 = 64 << 20;
/// Requests per round at depth 1.
const RPC_1: u64 = 100_000;
/// Requests per round at depth 64.
const RPC_64: u64 = 2_000_000;
/// Loop iterations per idle round (each polls both stacks).
const IDLE_POLLS: u64 = 2_000_000;
/// Request and response size.
const MSG: usize = 64;
/// Loop iterations after which a round counts as stalled.
const STALL: u64 = 20_000_000;

const SERVER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const CLIENT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 4, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 4, 0, 2);
const PORT: u16 = 5000;
const CLIENT_PORT: u16 = 49152;
/// Socket buffer size of the smoltcp sockets.
const SMOL_BUF: usize = 256 * 1024;

/// Two connected stacks: a client and a server with one established connection. `0` from a
/// read or a write means "nothing now"; end of stream and errors panic.
trait Stacks {
    /// Poll the client's stack, then the server's, at `t` microseconds of the fake clock.
    fn poll(&mut self, t: u64);
    fn client_write(&mut self, data: &[u8]) -> usize;
    fn client_read(&mut self, buf: &mut [u8]) -> usize;
    fn server_write(&mut self, data: &[u8]) -> usize;
    fn server_read(&mut self, buf: &mut [u8]) -> usize;
    /// Frames both stacks have sent so far.
    fn frames(&self) -> u64;
}

// ---------------------------------------------------------------------------------------
// flextoe.

/// The port type of the engines' link.
type EnginePort = ArenaPort;

/// The link between the two engines: (server's port, client's port).
fn engine_pair() -> (EnginePort, EnginePort) {
    ArenaLink::pair(32 * 1024).expect("link")
}

/// An engine's settings: timestamps off and delayed ACKs of 10 ms, as on the smoltcp side.
fn engine_config(mac: MacAddr, ip: Ipv4Addr, peer: (Ipv4Addr, MacAddr)) -> EngineConfig {
    let mut cfg = EngineConfig::new(mac, ip).neighbor(peer.0, peer.1);
    cfg.control.timestamps = false;
    cfg.ack_policy = AckPolicy::delayed(Duration::from_millis(10));
    cfg
}

struct Engines {
    client: Engine<EnginePort>,
    server: Engine<EnginePort>,
    c: Stream,
    s: Stream,
}

impl Engines {
    /// Two default engines and an established connection, at fake time `*t` (advanced).
    fn new(t: &mut u64) -> Self {
        let (server_port, client_port) = engine_pair();
        let mut server = Pipeline::builder(
            engine_config(SERVER_MAC, SERVER_IP, (CLIENT_IP, CLIENT_MAC)),
            server_port,
        )
        .build()
        .expect("server engine");
        let mut client = Pipeline::builder(
            engine_config(CLIENT_MAC, CLIENT_IP, (SERVER_IP, SERVER_MAC)),
            client_port,
        )
        .build()
        .expect("client engine");
        let listener = server.host().listen(PORT, 4).expect("listen");
        let mut c = client
            .host()
            .connect(SocketAddrV4::new(SERVER_IP, PORT))
            .expect("connect");
        c.set_nonblocking(true);
        let mut accepted = None;
        for _ in 0..1000 {
            *t += 1;
            let now = flextoe::time::Instant::from_micros(*t);
            client.poll(now);
            server.poll(now);
            if accepted.is_none() {
                accepted = listener.try_accept().expect("accept");
            }
            if accepted.is_some() && c.status() == flextoe::host::ConnStatus::Established {
                break;
            }
        }
        let mut s = accepted.expect("engines connected");
        assert_eq!(c.status(), flextoe::host::ConnStatus::Established);
        s.set_nonblocking(true);
        Engines {
            client,
            server,
            c,
            s,
        }
    }

    /// Segments both engines resent (fast recovery, tail-loss probes, timeouts); none are
    /// expected on a perfect link.
    fn resent(&self) -> u64 {
        [self.client.retransmissions(), self.server.retransmissions()]
            .iter()
            .map(|r| r.recovery + r.tail_probes + r.timeout)
            .sum()
    }
}

fn stream_write(s: &mut Stream, data: &[u8]) -> usize {
    match s.write(data) {
        Ok(n) => n,
        Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
        Err(e) => panic!("write: {e}"),
    }
}

fn stream_read(s: &mut Stream, buf: &mut [u8]) -> usize {
    match s.read(buf) {
        Ok(0) => panic!("unexpected end of stream"),
        Ok(n) => n,
        Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
        Err(e) => panic!("read: {e}"),
    }
}

impl Stacks for Engines {
    #[inline]
    fn poll(&mut self, t: u64) {
        let now = flextoe::time::Instant::from_micros(t);
        self.client.poll(now);
        self.server.poll(now);
    }
    fn client_write(&mut self, data: &[u8]) -> usize {
        stream_write(&mut self.c, data)
    }
    fn client_read(&mut self, buf: &mut [u8]) -> usize {
        stream_read(&mut self.c, buf)
    }
    fn server_write(&mut self, data: &[u8]) -> usize {
        stream_write(&mut self.s, data)
    }
    fn server_read(&mut self, buf: &mut [u8]) -> usize {
        stream_read(&mut self.s, buf)
    }
    fn frames(&self) -> u64 {
        self.client.stats().tx_frames + self.server.stats().tx_frames
    }
}

// ---------------------------------------------------------------------------------------
// Workloads, written once for both.

/// One side of a comparison: its stacks, its fake clock and its workload state.
struct Side<S, W> {
    stacks: S,
    clock: u64,
    work: W,
    /// Per round: the rate (units per second), the seconds and the loop iterations the
    /// round took.
    rates: Vec<f64>,
    seconds: Vec<f64>,
    iterations: Vec<u64>,
    /// Per round: frames sent (both directions) per unit.
    frames: Vec<f64>,
}

/// A workload's state on one side, kept across rounds.
trait Workload {
    /// Run one round; returns the units done (bytes or requests).
    fn round<S: Stacks>(&mut self, stacks: &mut S, clock: &mut u64) -> u64;
    /// Check what the rounds did, after the last one.
    fn verify(&self, rounds: usize);
}

/// The bulk stream's bytes: a pseudo-random pattern of a prime length, twice over, so that
/// stream offset `i` holds `pattern[i % PATTERN]` and any run of up to `PATTERN` bytes from
/// there is contiguous.
const PATTERN: usize = 65521;

fn pattern() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let one: Vec<u8> = (0..PATTERN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    [one.as_slice(), one.as_slice()].concat()
}

struct Bulk {
    pattern: Rc<Vec<u8>>,
    buf: Vec<u8>,
    /// Stream bytes written by the client and read by the server.
    sent: u64,
    received: u64,
    /// Read chunks that differed from what was written at their offset.
    mismatches: u64,
}

impl Bulk {
    fn new(pattern: Rc<Vec<u8>>) -> Self {
        Bulk {
            pattern,
            buf: vec![0; 256 * 1024],
            sent: 0,
            received: 0,
            mismatches: 0,
        }
    }
}

impl Workload for Bulk {
    fn round<S: Stacks>(&mut self, stacks: &mut S, clock: &mut u64) -> u64 {
        let target = self.received + BULK_BYTES;
        let start = *clock;
        while self.received < target {
            *clock += 1;
            stacks.poll(*clock);
            while self.sent < target {
                let off = (self.sent % PATTERN as u64) as usize;
                let len = ((target - self.sent) as usize).min(PATTERN);
                let n = stacks.client_write(&self.pattern[off..off + len]);
                if n == 0 {
                    break;
                }
                self.sent += n as u64;
            }
            loop {
                let n = stacks.server_read(&mut self.buf);
                if n == 0 {
                    break;
                }
                let mut done = 0;
                while done < n {
                    let off = ((self.received + done as u64) % PATTERN as u64) as usize;
                    let k = (n - done).min(PATTERN);
                    if self.buf[done..done + k] != self.pattern[off..off + k] {
                        self.mismatches += 1;
                    }
                    done += k;
                }
                self.received += n as u64;
            }
            assert!(*clock - start < STALL, "bulk round stalled");
        }
        assert_eq!(self.received, target, "more bytes than were sent");
        BULK_BYTES
    }

    fn verify(&self, rounds: usize) {
        assert_eq!(self.received, rounds as u64 * BULK_BYTES, "bytes received");
        assert_eq!(self.sent, self.received, "bytes sent");
        assert_eq!(
            self.mismatches, 0,
            "received bytes differ from the sent ones"
        );
    }
}

/// Request `i`: eight 64-bit words derived from `i`.
fn request(i: u64) -> [u8; MSG] {
    let mut r = [0u8; MSG];
    for (k, w) in r.chunks_exact_mut(8).enumerate() {
        let v = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (k as u64) << 56 ^ i;
        w.copy_from_slice(&v.to_le_bytes());
    }
    r
}

struct Rpc {
    depth: u64,
    per_round: u64,
    /// Requests issued and responses checked.
    issued: u64,
    done: u64,
    /// Responses that differed from their request.
    mismatches: u64,
    /// Client: requests not yet taken by the stack; responses not yet complete.
    c_out: Vec<u8>,
    c_in: Vec<u8>,
    /// Server: requests not yet complete; responses not yet taken by the stack.
    s_in: Vec<u8>,
    s_out: Vec<u8>,
    buf: Vec<u8>,
}

impl Rpc {
    fn new(depth: u64, per_round: u64) -> Self {
        Rpc {
            depth,
            per_round,
            issued: 0,
            done: 0,
            mismatches: 0,
            c_out: Vec::new(),
            c_in: Vec::new(),
            s_in: Vec::new(),
            s_out: Vec::new(),
            buf: vec![0; 64 * 1024],
        }
    }
}

/// Write as much of `out` as the stack takes; drop that from `out`.
fn flush(out: &mut Vec<u8>, mut write: impl FnMut(&[u8]) -> usize) {
    let mut off = 0;
    while off < out.len() {
        let n = write(&out[off..]);
        if n == 0 {
            break;
        }
        off += n;
    }
    out.drain(..off);
}

impl Workload for Rpc {
    fn round<S: Stacks>(&mut self, stacks: &mut S, clock: &mut u64) -> u64 {
        let target = self.done + self.per_round;
        let start = *clock;
        while self.done < target {
            *clock += 1;
            stacks.poll(*clock);
            // Client: keep `depth` requests outstanding.
            while self.issued < target && self.issued - self.done < self.depth {
                self.c_out.extend_from_slice(&request(self.issued));
                self.issued += 1;
            }
            flush(&mut self.c_out, |d| stacks.client_write(d));
            // Server: answer every complete request with its echo.
            loop {
                let n = stacks.server_read(&mut self.buf);
                if n == 0 {
                    break;
                }
                self.s_in.extend_from_slice(&self.buf[..n]);
            }
            let complete = self.s_in.len() / MSG * MSG;
            self.s_out.extend_from_slice(&self.s_in[..complete]);
            self.s_in.drain(..complete);
            flush(&mut self.s_out, |d| stacks.server_write(d));
            // Client: check the responses.
            loop {
                let n = stacks.client_read(&mut self.buf);
                if n == 0 {
                    break;
                }
                self.c_in.extend_from_slice(&self.buf[..n]);
            }
            let complete = self.c_in.len() / MSG;
            for r in self.c_in.chunks_exact(MSG).take(complete) {
                if r != request(self.done) {
                    self.mismatches += 1;
                }
                self.done += 1;
            }
            self.c_in.drain(..complete * MSG);
            assert!(*clock - start < STALL, "RPC round stalled");
        }
        assert_eq!(self.done, target, "more responses than requests");
        self.per_round
    }

    fn verify(&self, rounds: usize) {
        assert_eq!(self.done, rounds as u64 * self.per_round, "responses");
        assert_eq!(self.issued, self.done, "requests");
        assert_eq!(self.mismatches, 0, "responses differ from their requests");
        assert!(self.c_in.is_empty() && self.s_in.is_empty() && self.s_out.is_empty());
    }
}

/// Polls with nothing to do: the connection is open and idle, no data, no timer due.
struct Idle {
    per_round: u64,
    /// Stack polls done over all rounds.
    polls: u64,
}

impl Idle {
    fn new(per_round: u64) -> Self {
        Idle {
            per_round,
            polls: 0,
        }
    }
}

impl Workload for Idle {
    /// `per_round` loop iterations, each polling both stacks; returns the stack polls.
    fn round<S: Stacks>(&mut self, stacks: &mut S, clock: &mut u64) -> u64 {
        let frames = stacks.frames();
        for _ in 0..self.per_round {
            *clock += 1;
            stacks.poll(*clock);
        }
        assert_eq!(stacks.frames(), frames, "an idle poll sent a frame");
        self.polls += 2 * self.per_round;
        2 * self.per_round
    }

    fn verify(&self, rounds: usize) {
        assert_eq!(self.polls, 2 * rounds as u64 * self.per_round, "polls");
    }
}

impl<S: Stacks, W: Workload> Side<S, W> {
    fn new(stacks: S, clock: u64, work: W) -> Self {
        Side {
            stacks,
            clock,
            work,
            rates: Vec::new(),
            seconds: Vec::new(),
            iterations: Vec::new(),
            frames: Vec::new(),
        }
    }

    /// One timed round; records units per second.
    fn round(&mut self) {
        let t0 = self.clock;
        let f0 = self.stacks.frames();
        let start = StdInstant::now();
        let units = self.work.round(&mut self.stacks, &mut self.clock);
        let spent: Duration = start.elapsed();
        self.rates.push(units as f64 / spent.as_secs_f64());
        self.seconds.push(spent.as_secs_f64());
        self.iterations.push(self.clock - t0);
        self.frames
            .push((self.stacks.frames() - f0) as f64 / units as f64);
    }
}

/// Median, min and max.
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

/// How a workload's rows are printed.
struct Labels {
    name: String,
    /// The rate's unit, and units per rate unit (units per second divided by `scale`).
    unit: &'static str,
    scale: f64,
    /// Frames per what, and units per that.
    frames_per: &'static str,
    frames_scale: f64,
}

/// Run both sides of one workload for [`ROUNDS`] interleaved rounds and print its rows.
fn compare<W: Workload>(l: &Labels, make: impl Fn() -> W) {
    let mut t = 0;
    let engines = Engines::new(&mut t);
    let mut ours = Side::new(engines, t, make());
    let mut t = 0;
    let smols = Smols::new(&mut t);
    let mut theirs = Side::new(smols, t, make());
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            ours.round();
            theirs.round();
        } else {
            theirs.round();
            ours.round();
        }
    }
    ours.work.verify(ROUNDS);
    theirs.work.verify(ROUNDS);
    let fmt = |v: &[f64]| {
        let (m, lo, hi) = stats(v);
        let scale = l.scale;
        format!("{:.1} ({:.1}..{:.1})", m / scale, lo / scale, hi / scale)
    };
    let ratio = stats(&ours.rates).0 / stats(&theirs.rates).0;
    println!(
        "{:<16} {:<10} {:>28} {:>28} {ratio:>16.2}",
        l.name,
        l.unit,
        fmt(&ours.rates),
        fmt(&theirs.rates),
    );
    let frames = |v: &[f64]| format!("{:.2}", stats(v).0 * l.frames_scale);
    let secs = |v: &[f64]| format!("{:.3}", stats(v).0);
    let iters = |v: &[u64]| {
        let mut s = v.to_vec();
        s.sort_unstable();
        s[s.len() / 2].to_string()
    };
    println!(
        "{:<16} {:<10} {:>28} {:>28}",
        "",
        l.frames_per,
        frames(&ours.frames),
        frames(&theirs.frames)
    );
    println!(
        "{:<16} {:<10} {:>28} {:>28}",
        "",
        "s/round",
        secs(&ours.seconds),
        secs(&theirs.seconds)
    );
    println!(
        "{:<16} {:<10} {:>28} {:>28}",
        "",
        "it/round",
        iters(&ours.iterations),
        iters(&theirs.iterations)
    );
    let resent = ours.stacks.resent();
    if resent > 0 {
        println!("{:<16} the engines resent {resent} segments", "");
    }
}

/// `ENGINES_COUNT=<flextoe|smoltcp>:<depth>:<requests>`: set up one side, run one round
/// of that many 64-byte requests at that depth, check it, and exit; with `idle` for the
/// depth, that many idle loop iterations (two stack polls each). For counting
/// instructions, which unlike time do not move with the machine: two runs under
/// `valgrind --tool=cachegrind`, the difference of their counts over the difference of
/// their requests (which leaves setup out). See the README's Performance section.
fn count_only(spec: &str) {
    let parts: Vec<&str> = spec.split(':').collect();
    let [side, depth, requests] = parts[..] else {
        panic!("ENGINES_COUNT=<flextoe|smoltcp>:<depth>:<requests>, not {spec}");
    };
    let requests: u64 = requests.parse().expect("requests");
    let mut t = 0;
    match side {
        "flextoe" => count_one(Engines::new(&mut t), t, depth, requests),
        "smoltcp" => count_one(Smols::new(&mut t), t, depth, requests),
        other => panic!("ENGINES_COUNT side: flextoe or smoltcp, not {other}"),
    }
}

/// One counted round on `stacks`: RPC at `depth`, or `n` idle iterations (`idle`).
fn count_one<S: Stacks>(stacks: S, t: u64, depth: &str, n: u64) {
    if depth == "idle" {
        let mut one = Side::new(stacks, t, Idle::new(n));
        one.round();
        one.work.verify(1);
    } else {
        let depth: u64 = depth.parse().expect("depth");
        let mut one = Side::new(stacks, t, Rpc::new(depth, n));
        one.round();
        one.work.verify(1);
    }
}

fn main() {
    if let Ok(spec) = std::env::var("ENGINES_COUNT") {
        count_only(&spec);
        return;
    }
    // `cargo bench --bench engines -- rpc` runs the workloads whose name contains "rpc".
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.to_lowercase())
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.to_lowercase().contains(f));
    println!(
        "engine pair vs smoltcp pair, in memory, one thread; {ROUNDS} interleaved rounds; median (min..max)"
    );
    println!(
        "{:<16} {:<10} {:>28} {:>28} {:>16}",
        "workload", "unit", "flextoe", "smoltcp", "flextoe/smoltcp"
    );
    let pattern = Rc::new(pattern());
    let bulk = Labels {
        name: format!("bulk {} MiB", BULK_BYTES >> 20),
        unit: "MB/s",
        scale: 1e6,
        frames_per: "frames/MB",
        frames_scale: 1e6,
    };
    if wanted(&bulk.name) {
        compare(&bulk, || Bulk::new(pattern.clone()));
    }
    for (depth, per_round) in [(1, RPC_1), (64, RPC_64)] {
        let rpc = Labels {
            name: format!("RPC {MSG} B, d={depth}"),
            unit: "k req/s",
            scale: 1e3,
            frames_per: "frames/req",
            frames_scale: 1.0,
        };
        if wanted(&rpc.name) {
            compare(&rpc, || Rpc::new(depth, per_round));
        }
    }
    let idle = Labels {
        name: "idle poll".to_string(),
        unit: "M polls/s",
        scale: 1e6,
        frames_per: "frames/poll",
        frames_scale: 1.0,
    };
    if wanted(&idle.name) {
        compare(&idle, || Idle::new(IDLE_POLLS));
    }
    println!("(ratio above 1: flextoe has the higher throughput. Medians per round: frames both");
    println!(" ends sent, per unit; seconds; loop iterations, each one fake microsecond)");
}
