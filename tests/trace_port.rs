//! The trace-driven port against real engines: bulk and RPC workloads, closed and open loop,
//! the inline and the threaded runtime, one and several connections. The application's
//! reads are checked against the payload pattern, and its byte counts against the port's.

use std::io::{ErrorKind, Read, Write};
use std::net::Ipv4Addr;
use std::time::Duration;

use flextoe::backends::trace::{
    pattern_byte, ConnPhase, Mode, TraceConfig, TracePort, TraceStats, Workload,
};
use flextoe::buf::Frame;
use flextoe::pipeline::hooks::RxFrame;
use flextoe::pipeline::{
    Engine, EngineConfig, Hook, HookCx, Pipeline, Topology, Verdict, Verdicts,
};
use flextoe::time::{Instant, SystemClock};
use flextoe::wire::MacAddr;
use flextoe::{Listener, Stream};

const SERVER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const CLIENT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const PORT: u16 = 5001;
const MIB: u64 = 1 << 20;
/// The engine's receive ring per connection (`EngineConfig::new`'s default).
const RX_RING: u64 = 256 * 1024;

fn engine_config() -> EngineConfig {
    EngineConfig::new(SERVER_MAC, SERVER_IP).neighbor(CLIENT_IP, CLIENT_MAC)
}

fn trace_config(workload: Workload, connections: usize, mode: Mode) -> TraceConfig {
    TraceConfig {
        workload,
        connections,
        mode,
        ..TraceConfig::new(CLIENT_MAC, CLIENT_IP, SERVER_MAC, SERVER_IP, PORT)
    }
}

/// One accepted connection on the server side: what its application read so far.
struct Server {
    stream: Stream,
    /// Bytes read (the stream offset of the next byte).
    read: u64,
    /// Echoed bytes not yet written (RPC).
    pending: Vec<u8>,
}

impl Server {
    /// Read everything readable, checking the payload pattern; with `echo`, write it back.
    fn serve(&mut self, buf: &mut [u8], echo: bool) -> usize {
        let mut total = 0;
        loop {
            if echo && !self.pending.is_empty() {
                match self.stream.write(&self.pending) {
                    Ok(n) => {
                        self.pending.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("server write: {e}"),
                }
                if !self.pending.is_empty() {
                    return total;
                }
            }
            match self.stream.read(buf) {
                Ok(0) => return total,
                Ok(n) => {
                    for (j, &b) in buf[..n].iter().enumerate() {
                        let off = self.read + j as u64;
                        assert_eq!(b, pattern_byte(off), "payload at offset {off}");
                    }
                    self.read += n as u64;
                    total += n;
                    if echo {
                        self.pending.extend_from_slice(&buf[..n]);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return total,
                Err(e) => panic!("server read: {e}"),
            }
        }
    }
}

/// The server application: accepts and serves every connection.
struct App {
    listener: Listener,
    servers: Vec<Server>,
    buf: Vec<u8>,
    echo: bool,
}

impl App {
    fn new(listener: Listener, echo: bool) -> Self {
        App {
            listener,
            servers: Vec::new(),
            buf: vec![0u8; 64 * 1024],
            echo,
        }
    }

    fn step(&mut self) -> usize {
        while let Ok(Some(mut s)) = self.listener.try_accept() {
            s.set_nonblocking(true);
            self.servers.push(Server {
                stream: s,
                read: 0,
                pending: Vec::new(),
            });
        }
        let (buf, echo) = (&mut self.buf, self.echo);
        self.servers.iter_mut().map(|s| s.serve(buf, echo)).sum()
    }

    fn read(&self) -> u64 {
        self.servers.iter().map(|s| s.read).sum()
    }

    fn quiet(&self) -> bool {
        self.servers.iter().all(|s| s.pending.is_empty())
    }
}

/// An inline engine with a trace port and its application.
struct Rig {
    engine: Engine<TracePort>,
    app: App,
    t: u64,
}

impl Rig {
    fn new(cfg: TraceConfig, echo: bool) -> Self {
        let port = TracePort::new(cfg).unwrap();
        Self::with_engine(Engine::new(engine_config(), port).unwrap(), echo)
    }

    fn with_engine(engine: Engine<TracePort>, echo: bool) -> Self {
        let listener = engine.host().listen(PORT, 64).unwrap();
        Rig {
            engine,
            app: App::new(listener, echo),
            t: 0,
        }
    }

    /// One poll of the engine at the next fake instant, then the application.
    fn step(&mut self) {
        self.t += 10;
        self.engine.poll(Instant::from_micros(self.t));
        self.app.step();
    }

    fn stats(&self) -> TraceStats {
        self.engine.port().stats()
    }

    /// Pause the load and poll until nothing is in flight and the application has read
    /// (and answered) everything acknowledged; bounded.
    fn drain(&mut self, settled: impl Fn(&Self) -> bool) {
        self.engine.port().stats_handle().pause();
        for _ in 0..20_000 {
            self.step();
            if self.app.quiet() && settled(self) {
                return;
            }
        }
        panic!("did not drain: {:?}", self.stats());
    }
}

/// Nothing went wrong on the wire.
fn assert_clean(s: &TraceStats) {
    assert_eq!(s.unexpected, 0, "{s:?}");
    assert_eq!(s.resets, 0, "{s:?}");
    assert_eq!(s.retransmits, 0, "{s:?}");
    assert_eq!(s.out_of_order, 0, "{s:?}");
    assert_eq!(s.alloc_failures, 0, "{s:?}");
}

#[test]
fn bulk_closed_loop_inline_delivers_what_the_application_reads() {
    let mut rig = Rig::new(
        trace_config(Workload::Bulk { segment: 1460 }, 1, Mode::ClosedLoop),
        false,
    );
    for _ in 0..200_000 {
        rig.step();
        if rig.app.read() >= 16 * MIB {
            break;
        }
    }
    let s = rig.stats();
    let read = rig.app.read();
    assert!(read >= 16 * MIB, "read {read}, {s:?}");
    assert!(
        s.bytes_delivered >= read && s.bytes_delivered - read <= RX_RING,
        "delivered {} read {read}",
        s.bytes_delivered
    );
    assert_eq!(s.handshakes_done, 1);
    assert!(s.window_stalls > 0, "the closed loop waits for the window");
    assert_clean(&s);
    // The handle published the same totals.
    assert_eq!(rig.engine.port().stats_handle().snapshot(), s);
    // Quiet: every acknowledged byte was read, nothing more.
    rig.drain(|r| {
        let s = r.stats();
        s.bytes_delivered == s.bytes_sent - s.bytes_retransmitted
            && r.app.read() == s.bytes_delivered
    });
    let s = rig.stats();
    assert_eq!(rig.app.read(), s.bytes_delivered);
    assert_eq!(s.data_frames * 1460, s.bytes_sent);
    assert_clean(&s);
}

/// RPC with `depth` requests in flight: every response the port counted is a request the
/// application saw, and never more than `depth` were outstanding.
fn rpc_closed_loop(depth: usize, responses: u64) {
    let mut rig = Rig::new(
        trace_config(
            Workload::Rpc {
                request: 64,
                response: 64,
                depth,
            },
            1,
            Mode::ClosedLoop,
        ),
        true,
    );
    let mut most_outstanding = 0;
    for _ in 0..200_000 {
        rig.step();
        let s = rig.stats();
        most_outstanding = most_outstanding.max(s.requests - s.responses);
        if s.responses >= responses {
            break;
        }
    }
    let s = rig.stats();
    assert!(s.responses >= responses, "{s:?}");
    assert!(
        most_outstanding <= depth as u64,
        "{most_outstanding} > {depth}"
    );
    assert!(s.depth_stalls > 0, "{s:?}");
    rig.drain(|r| {
        let s = r.stats();
        s.responses == s.requests && r.app.read() == s.requests * 64
    });
    let s = rig.stats();
    let seen = rig.app.read() / 64;
    assert_eq!(rig.app.read() % 64, 0);
    assert_eq!(s.responses, seen, "{s:?}");
    assert_eq!(s.response_bytes, seen * 64);
    assert_eq!(s.bytes_delivered, seen * 64);
    assert_clean(&s);
}

#[test]
fn rpc_depth_1_closed_loop_counts_every_response() {
    rpc_closed_loop(1, 2_000);
}

#[test]
fn rpc_depth_16_closed_loop_counts_every_response() {
    rpc_closed_loop(16, 20_000);
}

#[test]
fn bulk_on_the_threaded_runtime() {
    let port = TracePort::new(trace_config(
        Workload::Bulk { segment: 1460 },
        1,
        Mode::ClosedLoop,
    ))
    .unwrap();
    let handle = port.stats_handle();
    // Hold the SYN until the listener exists: the runtime polls the port as soon as it runs.
    handle.pause();
    let server = Pipeline::builder(engine_config(), port)
        .threaded(
            Topology::with_counts(1, 1, 1, 1, 1, false),
            SystemClock::new(),
        )
        .unwrap();
    let mut app = App::new(server.host().listen(PORT, 64).unwrap(), false);
    handle.resume();
    let wall = std::time::Instant::now();
    while app.read() < 4 * MIB {
        assert!(
            wall.elapsed() < Duration::from_secs(30),
            "read {} in 30 s: {:?}",
            app.read(),
            handle.snapshot()
        );
        if app.step() == 0 {
            std::thread::yield_now();
        }
    }
    // Quiet: every acknowledged byte was read.
    handle.pause();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        app.step();
        let s = handle.snapshot();
        if s.bytes_delivered == s.bytes_sent - s.bytes_retransmitted
            && app.read() == s.bytes_delivered
        {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "did not drain: app read {}, {s:?}, engine {:?}",
            app.read(),
            server.stats().io
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let s = handle.snapshot();
    assert!(s.bytes_delivered >= 4 * MIB);
    assert_eq!(s.handshakes_done, 1);
    assert_eq!(s.unexpected, 0, "{s:?}");
    assert_eq!(s.resets, 0, "{s:?}");
    let st = server.stop();
    assert!(st.tasks.iter().any(|t| !t.stages.is_empty()));
}

#[test]
fn four_bulk_connections_all_handshake_and_move_data() {
    let mut rig = Rig::new(
        trace_config(Workload::Bulk { segment: 1000 }, 4, Mode::ClosedLoop),
        false,
    );
    for _ in 0..200_000 {
        rig.step();
        if rig.app.servers.len() == 4 && rig.app.servers.iter().all(|s| s.read >= 2 * MIB) {
            break;
        }
    }
    let s = rig.stats();
    assert_eq!(s.handshakes_done, 4);
    assert_eq!(rig.app.servers.len(), 4);
    let mut ports: Vec<u16> = rig
        .app
        .servers
        .iter()
        .map(|s| s.stream.peer_addr().port())
        .collect();
    ports.sort_unstable();
    assert_eq!(ports, [40000, 40001, 40002, 40003]);
    let conns = rig.engine.port().connections();
    for srv in &rig.app.servers {
        assert!(srv.read >= 2 * MIB, "{}", srv.read);
        let c = conns
            .iter()
            .find(|c| c.client_port == srv.stream.peer_addr().port())
            .unwrap();
        assert_eq!(c.phase, ConnPhase::Established);
        assert!(c.bytes_delivered >= srv.read && c.bytes_delivered - srv.read <= RX_RING);
    }
    assert_clean(&s);
    // The handle sees the same per-connection counters.
    assert_eq!(rig.engine.port().stats_handle().connections(), conns);
}

#[test]
fn open_loop_offers_a_fixed_load_and_counts_what_got_in() {
    let mut rig = Rig::new(
        trace_config(
            Workload::Bulk { segment: 1460 },
            2,
            Mode::OpenLoop { frames_per_recv: 8 },
        ),
        false,
    );
    for _ in 0..200_000 {
        rig.step();
        if rig.app.read() >= 4 * MIB {
            break;
        }
    }
    let s = rig.stats();
    assert!(rig.app.read() >= 4 * MIB, "{s:?}");
    assert_eq!(s.offered, s.data_frames + s.refused, "{s:?}");
    assert!(s.refused > 0, "the window refuses part of the load: {s:?}");
    assert_clean(&s);
}

#[test]
fn rpc_open_loop_ignores_depth_but_never_overruns_the_window() {
    let mut rig = Rig::new(
        trace_config(
            Workload::Rpc {
                request: 3000,
                response: 3000,
                depth: 1,
            },
            1,
            Mode::OpenLoop { frames_per_recv: 4 },
        ),
        true,
    );
    for _ in 0..200_000 {
        rig.step();
        if rig.stats().responses >= 500 {
            break;
        }
    }
    let s = rig.stats();
    assert!(s.responses >= 500, "{s:?}");
    assert_eq!(s.depth_stalls, 0);
    rig.drain(|r| {
        let s = r.stats();
        s.responses == s.requests && r.app.read() == s.requests * 3000
    });
    let s = rig.stats();
    assert_eq!(s.responses * 3000, rig.app.read());
    assert_clean(&s);
}

#[test]
fn a_refused_connection_is_counted_as_reset() {
    let port = TracePort::new(trace_config(
        Workload::Bulk { segment: 1460 },
        2,
        Mode::ClosedLoop,
    ))
    .unwrap();
    // Nothing listens: the engine answers each SYN with a RST.
    let mut engine = Engine::new(engine_config(), port).unwrap();
    for t in 0..100 {
        engine.poll(Instant::from_micros(t * 10));
    }
    let s = engine.port().stats();
    assert_eq!(s.resets, 2, "{s:?}");
    assert_eq!(s.handshakes_done, 0);
    assert!(engine.port().handshakes_settled());
    assert!(engine
        .port()
        .connections()
        .iter()
        .all(|c| c.phase == ConnPhase::Reset));
    assert_eq!(s.unexpected, 0);
}

/// Drops every `every`-th data frame the engine receives, as a lossy link would.
#[derive(Clone)]
struct Lossy {
    every: u64,
    seen: u64,
}

impl Hook<RxFrame> for Lossy {
    fn name(&self) -> &'static str {
        "lossy"
    }
    fn drop_reasons(&self) -> &'static [&'static str] {
        &["lost"]
    }
    fn process(&mut self, cx: &HookCx<'_>, items: &mut [Frame], v: &mut Verdicts) {
        for (i, f) in items.iter().enumerate() {
            if cx.arena.data(f).len() > 54 {
                self.seen += 1;
                if self.seen.is_multiple_of(self.every) {
                    v.set(i, Verdict::Drop(0));
                }
            }
        }
    }
}

#[test]
fn lost_segments_are_sent_again_and_the_stream_stays_intact() {
    let port = TracePort::new(trace_config(
        Workload::Bulk { segment: 1460 },
        1,
        Mode::ClosedLoop,
    ))
    .unwrap();
    let engine = Pipeline::builder(engine_config(), port)
        .on_rx_frame(Lossy { every: 97, seen: 0 })
        .build()
        .unwrap();
    let mut rig = Rig::with_engine(engine, false);
    for _ in 0..200_000 {
        rig.step();
        if rig.app.read() >= 4 * MIB {
            break;
        }
    }
    let s = rig.stats();
    assert!(rig.app.read() >= 4 * MIB, "{s:?}");
    assert!(s.retransmits > 0 && s.bytes_retransmitted > 0, "{s:?}");
    assert!(s.dup_acks >= 3, "{s:?}");
    rig.drain(|r| {
        let s = r.stats();
        s.bytes_delivered == s.bytes_sent - s.bytes_retransmitted
            && r.app.read() == s.bytes_delivered
    });
    let lost = rig
        .engine
        .stats()
        .hook("lossy")
        .map_or(0, |h| h.drops("lost"));
    assert!(lost > 0);
    // One retransmission per loss, give or take: no go-back-N.
    let s = rig.stats();
    assert!(
        s.bytes_retransmitted <= 2 * lost * 1460,
        "{lost} lost, {s:?}"
    );
    assert_eq!(rig.stats().unexpected, 0);
}

#[test]
fn a_window_closed_for_a_timeout_is_probed() {
    let mut rig = Rig::new(
        trace_config(Workload::Bulk { segment: 1460 }, 1, Mode::ClosedLoop),
        false,
    );
    // The application accepts but does not read: the window closes.
    for _ in 0..100 {
        rig.t += 10;
        rig.engine.poll(Instant::from_micros(rig.t));
        while let Ok(Some(s)) = rig.app.listener.try_accept() {
            rig.app.servers.push(Server {
                stream: s,
                read: 0,
                pending: Vec::new(),
            });
        }
    }
    let s = rig.stats();
    assert!(s.bytes_delivered >= RX_RING - 1460, "{s:?}");
    assert_eq!(s.probes, 0);
    // Half a second later (fake time) the port has probed the closed window twice.
    for _ in 0..50 {
        rig.t += 10_000;
        rig.engine.poll(Instant::from_micros(rig.t));
    }
    let s = rig.stats();
    assert!(s.probes >= 2, "{s:?}");
    assert_eq!(s.bytes_sent - s.bytes_retransmitted, s.bytes_delivered);
    // Reading opens the window again and data flows.
    rig.app.servers[0].stream.set_nonblocking(true);
    let before = s.bytes_delivered;
    for _ in 0..1000 {
        rig.step();
    }
    assert!(rig.stats().bytes_delivered > before + MIB);
    assert_clean(&rig.stats());
}
