//! Connection splicing through a proxy engine: a client engine, a proxy engine and a server
//! engine behind a simulated switch. The proxy application reads the client's request line,
//! connects to the server, forwards the server's greeting, and splices the two connections
//! (`stages::ext::splice`). Then 64 MiB go each way between client and server, verified by
//! SHA-256, relayed by the proxy engine's splice stage while the proxy application holds no
//! stream and no segment reaches the proxy engine's protocol stage; the client's FIN reaches the server and the
//! server's FIN the client, and the splice is gone a while after. A second run shows a reset
//! on one side reaching the other. Inline and threaded proxy.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use common::*;
use flextoe::backends::mem::MemPort;
use flextoe::host::ConnStatus;
use flextoe::pipeline::{Engine, Pipeline, Topology};
use flextoe::sim::{Impairments, Switch, VirtualClock};
use flextoe::stages::ext::splice::{SpliceError, Splicer};
use flextoe::stages::ext::vlan::{VlanPush, VlanStrip};
use flextoe::time::{Clock, Instant};
use flextoe::wire::MacAddr;
use flextoe::Stream;

const C: (Ipv4Addr, MacAddr) = (Ipv4Addr::new(10, 8, 0, 1), MacAddr([2, 0, 0, 8, 0, 1]));
const P: (Ipv4Addr, MacAddr) = (Ipv4Addr::new(10, 8, 0, 2), MacAddr([2, 0, 0, 8, 0, 2]));
const S: (Ipv4Addr, MacAddr) = (Ipv4Addr::new(10, 8, 0, 3), MacAddr([2, 0, 0, 8, 0, 3]));

fn cfg(me: (Ipv4Addr, MacAddr), threaded: bool) -> flextoe::EngineConfig {
    let mut c = if threaded {
        threaded_config(me.1, me.0)
    } else {
        engine_config(me.1, me.0)
    };
    c.arena_frames = 8192;
    c.tx_buffer = 1 << 20;
    c.rx_buffer = 1 << 20;
    for (ip, mac) in [C, P, S] {
        c = c.neighbor(ip, mac);
    }
    c
}

enum Proxy {
    Inline(Box<Engine<MemPort>>),
    Threaded(flextoe::pipeline::Threaded),
}

impl Proxy {
    fn host(&self) -> flextoe::Host {
        match self {
            Proxy::Inline(e) => e.host(),
            Proxy::Threaded(t) => t.host(),
        }
    }
    fn poll(&mut self, now: Instant) -> bool {
        match self {
            Proxy::Inline(e) => e.poll(now),
            Proxy::Threaded(_) => false,
        }
    }
    fn next_deadline(&self) -> Option<Instant> {
        match self {
            Proxy::Inline(e) => e.next_deadline(),
            Proxy::Threaded(_) => None,
        }
    }
    /// Work items the proxy's protocol stage took (segments, grants, ...), and its flows.
    fn protocol_items_and_flows(&self) -> (u64, usize) {
        match self {
            Proxy::Inline(e) => {
                let s = e.stats();
                let p = s.stages.iter().find(|(n, _)| *n == "protocol").unwrap();
                (p.1.items_in, s.flows)
            }
            Proxy::Threaded(t) => {
                let s = t.stats();
                (s.stage("protocol").items_in, s.io.flows)
            }
        }
    }
}

struct Lab {
    clock: VirtualClock,
    sw: Switch,
    client: Engine<MemPort>,
    server: Engine<MemPort>,
    proxy: Proxy,
    splicer: Splicer,
    threaded: bool,
}

impl Lab {
    fn new(threaded: bool) -> Lab {
        Self::with_vlan(threaded, None)
    }

    /// All three engines on VLAN `vlan` (tagged frames on the wire).
    fn with_vlan(threaded: bool, vlan: Option<u16>) -> Lab {
        Self::with(threaded, vlan, |_, _| {})
    }

    /// [`with_vlan`](Self::with_vlan), with each engine's configuration changed by `tweak`
    /// (given the engine's address).
    fn with(
        threaded: bool,
        vlan: Option<u16>,
        tweak: impl Fn(Ipv4Addr, &mut flextoe::EngineConfig),
    ) -> Lab {
        let mut sw = Switch::new();
        let pc = sw.attach(Impairments::none(), Impairments::none());
        let pp = sw.attach(Impairments::none(), Impairments::none());
        let ps = sw.attach(Impairments::none(), Impairments::none());
        let clock = VirtualClock::new();
        let splicer = Splicer::new();
        let mut pcfg = cfg(P, threaded);
        tweak(P.0, &mut pcfg);
        let mut b = Pipeline::builder(pcfg, pp);
        let engine = |me: (Ipv4Addr, MacAddr), port| {
            let mut c = cfg(me, false);
            tweak(me.0, &mut c);
            let mut e = Pipeline::builder(c, port);
            if let Some(v) = vlan {
                e = e
                    .on_rx_frame(VlanStrip::only(v))
                    .on_tx_frame(VlanPush::new(v));
            }
            e.build().unwrap()
        };
        if let Some(v) = vlan {
            b = b
                .on_rx_frame(VlanStrip::only(v))
                .on_tx_frame(VlanPush::new(v));
        }
        // After the strip: relayed frames leave through the push, which tags them again.
        b = b.on_rx_frame(splicer.stage());
        let proxy = if threaded {
            let t = Topology::with_counts(2, 1, 2, 2, 2, false);
            Proxy::Threaded(b.threaded(t, clock.clone()).unwrap())
        } else {
            Proxy::Inline(Box::new(b.build().unwrap()))
        };
        Lab {
            clock,
            sw,
            client: engine(C, pc),
            server: engine(S, ps),
            proxy,
            splicer,
            threaded,
        }
    }

    /// One round: every engine and the switch; then the clock moves.
    fn step(&mut self) {
        let wall = std::time::Instant::now();
        let now = self.clock.now();
        let busy = self.client.poll(now)
            | self.server.poll(now)
            | self.proxy.poll(now)
            | self.sw.poll(now);
        if self.threaded {
            // The proxy's threads read this clock: keep it near real time.
            std::thread::yield_now();
            self.clock
                .advance(wall.elapsed().max(Duration::from_micros(20)));
        } else {
            self.clock.advance_to(next_time(
                now,
                busy,
                [
                    self.client.next_deadline(),
                    self.server.next_deadline(),
                    self.proxy.next_deadline(),
                    self.sw.next_deadline(),
                ],
                Duration::from_micros(5),
                Duration::from_millis(10),
            ));
        }
    }

    fn until(&mut self, what: &str, mut f: impl FnMut(&mut Lab) -> bool) {
        let start = self.clock.now();
        let wall = std::time::Instant::now();
        while !f(self) {
            self.step();
            assert!(
                self.clock.now().saturating_since(start) < Duration::from_secs(600)
                    && wall.elapsed() < Duration::from_secs(300),
                "timed out: {what}"
            );
        }
    }
}

fn nb(mut s: Stream) -> Stream {
    s.set_nonblocking(true);
    s
}

fn read_some(s: &mut Stream, buf: &mut [u8]) -> Option<usize> {
    s.read(buf).ok()
}

/// Connect client -> proxy -> server, do the greeting through the proxy application, and
/// splice. Returns the client's and the server's streams.
/// The client connected to the proxy and the proxy to the server, nothing spliced:
/// (client, proxy's downstream, proxy's upstream, server) streams.
fn connect_both(lab: &mut Lab) -> (Stream, Stream, Stream, Stream) {
    let plisten = lab.proxy.host().listen(8080, 4).unwrap();
    let slisten = lab.server.host().listen(80, 4).unwrap();
    let cs = nb(lab
        .client
        .host()
        .connect(SocketAddrV4::new(P.0, 8080))
        .unwrap());
    let up = nb(lab
        .proxy
        .host()
        .connect(SocketAddrV4::new(S.0, 80))
        .unwrap());
    let mut down = None;
    let mut server = None;
    lab.until("both connected", |_| {
        if let Ok(Some(s)) = plisten.try_accept() {
            down = Some(nb(s));
        }
        if let Ok(Some(s)) = slisten.try_accept() {
            server = Some(s);
        }
        down.is_some() && server.is_some() && cs.status() == ConnStatus::Established
    });
    (cs, down.unwrap(), up, server.unwrap())
}

/// Ask the proxy to splice `down` and `up` and wait for its answer (the crate's own result
/// type, streams and all).
#[allow(clippy::result_large_err)]
fn splice_answer(
    lab: &mut Lab,
    down: Stream,
    up: Stream,
) -> flextoe::stages::ext::splice::SpliceResult {
    let mut pending = lab.splicer.splice(down, up).ok();
    let mut back = None;
    lab.until("answer", |_| match pending.take().map(|p| p.try_finish()) {
        Some(Err(p)) => {
            pending = Some(p);
            false
        }
        Some(Ok(r)) => {
            back = Some(r);
            true
        }
        None => unreachable!(),
    });
    back.expect("an answer")
}

fn connect_and_splice(lab: &mut Lab) -> (Stream, Stream) {
    let plisten = lab.proxy.host().listen(8080, 4).unwrap();
    let slisten = lab.server.host().listen(80, 4).unwrap();
    let mut cs = nb(lab
        .client
        .host()
        .connect(SocketAddrV4::new(P.0, 8080))
        .unwrap());
    lab.until("client connected", |_| {
        cs.status() == ConnStatus::Established
    });
    cs.write_all(b"GO\n").unwrap();
    let mut down: Option<Stream> = None;
    lab.until("proxy accepts", |_| {
        if let Ok(Some(s)) = plisten.try_accept() {
            down = Some(nb(s));
        }
        down.is_some()
    });
    let mut down = down.unwrap();
    let mut req = [0u8; 3];
    let mut got = 0;
    lab.until("request line", |_| {
        if let Some(n) = read_some(&mut down, &mut req[got..]) {
            got += n;
        }
        got == 3
    });
    assert_eq!(&req, b"GO\n");
    let mut up = nb(lab
        .proxy
        .host()
        .connect(SocketAddrV4::new(S.0, 80))
        .unwrap());
    let mut ss: Option<Stream> = None;
    lab.until("server accepts", |_| {
        if let Ok(Some(s)) = slisten.try_accept() {
            ss = Some(nb(s));
        }
        ss.is_some() && up.status() == ConnStatus::Established
    });
    let mut ss = ss.unwrap();
    ss.write_all(b"OK\n").unwrap();
    let mut hello = [0u8; 3];
    let mut got = 0;
    lab.until("greeting at the proxy", |_| {
        if let Some(n) = read_some(&mut up, &mut hello[got..]) {
            got += n;
        }
        got == 3
    });
    down.write_all(&hello).unwrap();
    // Splice once the greeting is acknowledged (retrying while anything is left over).
    let mut pair = Some((down, up));
    let mut pending = None;
    let mut attempts = 0;
    lab.until("spliced", |lab| {
        if let Some((d, u)) = pair.take() {
            if d.unacked_bytes() > 0 || u.unacked_bytes() > 0 {
                pair = Some((d, u));
                return false;
            }
            attempts += 1;
            match lab.splicer.splice(d, u) {
                Ok(p) => pending = Some(p),
                Err((e, d, u)) => panic!("{e}: {d:?} {u:?}"),
            }
        }
        let Some(p) = pending.take() else {
            return false;
        };
        match p.try_finish() {
            Err(p) => {
                pending = Some(p);
                false
            }
            Ok(Ok(())) => true,
            Ok(Err((SpliceError::NotQuiet, d, u))) => {
                pair = Some((d, u));
                false
            }
            Ok(Err((e, ..))) => panic!("splice: {e}"),
        }
    });
    eprintln!("spliced after {attempts} attempt(s)");
    let mut hello = [0u8; 3];
    let mut got = 0;
    lab.until("greeting at the client", |_| {
        if let Some(n) = read_some(&mut cs, &mut hello[got..]) {
            got += n;
        }
        got == 3
    });
    assert_eq!(&hello, b"OK\n");
    (cs, ss)
}

fn spliced_proxy_carries_64_mib(threaded: bool, vlan: Option<u16>) {
    let _serial = THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = Lab::with_vlan(threaded, vlan);
    let (mut cs, mut ss) = connect_and_splice(&mut lab);
    lab.until("the proxy's engine forgot both connections", |lab| {
        lab.proxy.protocol_items_and_flows().1 == 0
    });
    // (The threaded runtime publishes its counters every millisecond of real time, when
    // its workers get the CPU: let them settle, until a reading holds for 50 ms of the
    // virtual clock and, threaded, of real time. Inline counters are exact at once.)
    let mut last = (
        lab.proxy.protocol_items_and_flows().0,
        lab.clock.now(),
        std::time::Instant::now(),
    );
    lab.until("the proxy's counters to settle", |lab| {
        let items = lab.proxy.protocol_items_and_flows().0;
        if items != last.0 {
            last = (items, lab.clock.now(), std::time::Instant::now());
            return false;
        }
        lab.clock.now().saturating_since(last.1) > Duration::from_millis(50)
            && (!threaded || last.2.elapsed() > Duration::from_millis(50))
    });
    let (items_at_splice, _) = lab.proxy.protocol_items_and_flows();
    assert_eq!(lab.splicer.active(), 1);
    let total: u64 = 64 << 20;
    let mut up = Source::new(1, total);
    let mut down = Source::new(2, total);
    let (mut at_s, mut at_c) = (Sink::default(), Sink::default());
    let mut buf = vec![0u8; 1 << 16];
    let (mut c_closed, mut s_closed) = (false, false);
    lab.until("64 MiB each way and both FINs", |_| {
        for (src, s) in [(&mut up, &mut cs), (&mut down, &mut ss)] {
            let data = src.pending();
            if !data.is_empty() {
                if let Ok(n) = s.write(data) {
                    src.consume(n);
                }
            }
        }
        for (sink, s) in [(&mut at_s, &mut ss), (&mut at_c, &mut cs)] {
            while let Some(n) = read_some(s, &mut buf) {
                if n == 0 {
                    sink.eof = true;
                    break;
                }
                sink.take(&buf[..n]);
            }
        }
        if up.done() && !c_closed {
            cs.shutdown(std::net::Shutdown::Write).unwrap();
            c_closed = true;
        }
        if down.done() && !s_closed {
            ss.shutdown(std::net::Shutdown::Write).unwrap();
            s_closed = true;
        }
        at_s.eof && at_c.eof
    });
    assert_eq!(at_s.digest(), up.digest(), "client -> server, SHA-256");
    assert_eq!(at_c.digest(), down.digest(), "server -> client, SHA-256");
    let relayed = lab.splicer.counters().relayed_bytes();
    let (items, _) = lab.proxy.protocol_items_and_flows();
    eprintln!(
        "threaded={threaded}: relayed {relayed} payload bytes in {} frames; the proxy's protocol stage took {items} items ({items_at_splice} at the splice)",
        lab.splicer.counters().relayed()
    );
    assert!(relayed >= 2 * total);
    assert_eq!(
        items, items_at_splice,
        "no segment of the spliced connections reached the proxy's protocol stage"
    );
    assert_eq!(lab.splicer.counters().malformed(), 0);
    // Both ends close; the splice goes a while after.
    drop(cs);
    drop(ss);
    lab.until("splice removed", |lab| lab.splicer.active() == 0);
}

#[test]
fn spliced_proxy_carries_64_mib_inline() {
    spliced_proxy_carries_64_mib(false, None);
}

#[test]
fn spliced_proxy_on_a_vlan_inline() {
    spliced_proxy_carries_64_mib(false, Some(42));
}

#[test]
fn spliced_proxy_carries_64_mib_threaded() {
    spliced_proxy_carries_64_mib(true, None);
}

#[test]
fn a_reset_on_one_side_reaches_the_other() {
    let mut lab = Lab::new(false);
    let (cs, mut ss) = connect_and_splice(&mut lab);
    cs.abort();
    let mut buf = [0u8; 16];
    lab.until("the server sees the reset", |_| {
        let _ = ss.read(&mut buf);
        ss.status() == ConnStatus::Reset
    });
    lab.until("splice removed", |lab| lab.splicer.active() == 0);
}

/// A spliced connection's addresses stay its own: a connection from its port (bound once
/// the listener that accepted it is gone) to its peer is never tried (`TupleInUse`; its
/// SYN went out on the spliced flow's addresses), and the splice carries on.
#[test]
fn a_connection_from_a_bound_port_does_not_take_a_spliced_ones_place() {
    let mut lab = Lab::new(false);
    let (mut cs, mut ss) = connect_and_splice(&mut lab);
    let clash = nb(lab
        .proxy
        .host()
        .bind(8080)
        .unwrap()
        .connect(SocketAddrV4::new(C.0, cs.local_addr().port()))
        .unwrap());
    lab.until("the clash fails", |_| {
        clash.status() != ConnStatus::Connecting
    });
    assert_eq!(clash.status(), ConnStatus::TupleInUse);
    cs.write_all(b"still").unwrap();
    let mut buf = [0u8; 5];
    let mut got = 0;
    lab.until("the splice carries on", |_| {
        if let Some(n) = read_some(&mut ss, &mut buf[got..]) {
            got += n;
        }
        got == 5
    });
    assert_eq!(&buf, b"still");
}

/// Splices are bounded (`max_splices`): they free their connections' flows, so the flow
/// table did not bound them, and each held a table entry and an ephemeral port for as long
/// as its peers kept it (5 idle days). Past the bound a splice is refused with the streams
/// back, which work on.
#[test]
fn splices_past_max_splices_are_refused() {
    let mut lab = Lab::with(false, None, |_, c| c.control.max_splices = 1);
    let (_cs, _ss) = connect_and_splice(&mut lab);
    assert_eq!(lab.splicer.active(), 1);
    let (mut cs, down, up, _server) = connect_both(&mut lab);
    let back = Some(splice_answer(&mut lab, down, up));
    let Some(Err((SpliceError::TableFull, mut down, _up))) = back else {
        panic!("refused with the streams back");
    };
    assert_eq!(lab.splicer.active(), 1);
    cs.write_all(b"still").unwrap();
    let mut buf = [0u8; 5];
    lab.until("read", |_| down.read(&mut buf).is_ok());
    assert_eq!(&buf, b"still");
}

/// A client that negotiated ECN with the proxy and a server that did not: their segments
/// would carry ECN marks (ECT, ECE, CWR) to a peer that never agreed to them. Refused as
/// incompatible (ECN was not part of the check).
#[test]
fn a_splice_of_an_ecn_side_and_a_plain_one_is_refused() {
    let mut lab = Lab::with(false, None, |ip, c| {
        if ip == C.0 {
            c.control.ecn = flextoe::control::Ecn::Request;
        }
    });
    let (_cs, down, up, _server) = connect_both(&mut lab);
    let back = Some(splice_answer(&mut lab, down, up));
    assert!(
        matches!(back, Some(Err((SpliceError::Incompatible, ..)))),
        "{back:?}"
    );
    assert_eq!(lab.splicer.active(), 0);
}

#[test]
fn a_splice_with_unread_data_is_refused_and_the_streams_come_back() {
    let mut lab = Lab::new(false);
    let (mut cs, down, up, _server) = connect_both(&mut lab);
    cs.write_all(b"unread").unwrap();
    lab.until("data at the proxy", |_| down.readable_bytes() == 6);
    let back = Some(splice_answer(&mut lab, down, up));
    let Some(Err((SpliceError::NotQuiet, mut down, up))) = back else {
        panic!("refused with the streams back");
    };
    assert_eq!(lab.splicer.active(), 0);
    // The connections work on: the unread bytes are still there, and the proxy can write.
    let mut buf = [0u8; 6];
    lab.until("read", |_| down.read(&mut buf).is_ok());
    assert_eq!(&buf, b"unread");
    assert_eq!(up.status(), ConnStatus::Established);
    let _ = Read::read(&mut cs, &mut buf);
}

/// A splicer whose stage the engine does not run refuses at once (`NoStage`), the streams
/// back and working: the splice would have frozen both connections and handed their
/// segments to a table no stage reads.
#[test]
fn a_splicer_whose_stage_the_engine_lacks_refuses() {
    let mut lab = Lab::new(false);
    let (mut cs, mut down, up, _server) = connect_both(&mut lab);
    let other = Splicer::new();
    let Err((SpliceError::NoStage, d, u)) = other.splice(down, up) else {
        panic!("refused with the streams back");
    };
    (down, _) = (d, u);
    cs.write_all(b"still").unwrap();
    let mut buf = [0u8; 5];
    lab.until("read", |_| down.read(&mut buf).is_ok());
    assert_eq!(&buf, b"still");
}

/// A splice the application stopped waiting for is not carried out: the engine, coming to
/// the request afterwards, leaves both connections as they were (the application claimed
/// the request first), and they carry data on.
#[test]
fn a_splice_given_up_on_leaves_the_connections_as_they_were() {
    let mut lab = Lab::new(false);
    let (mut cs, down, up, _server) = connect_both(&mut lab);
    let pending = lab.splicer.splice(down, up).ok().unwrap();
    // The engine has not run since the request: no answer within no time.
    let Err((SpliceError::NoAnswer, mut down, up)) = pending.wait(Duration::ZERO) else {
        panic!("given up, with the streams back");
    };
    for _ in 0..20 {
        lab.step();
    }
    assert_eq!(lab.splicer.active(), 0);
    assert_eq!(down.status(), ConnStatus::Established);
    assert_eq!(up.status(), ConnStatus::Established);
    cs.write_all(b"still here").unwrap();
    let mut buf = [0u8; 10];
    let mut got = 0;
    lab.until("data at the proxy", |_| {
        if let Some(n) = read_some(&mut down, &mut buf[got..]) {
            got += n;
        }
        got == 10
    });
    assert_eq!(&buf, b"still here");
}

/// The proxy writes to the server and asks for the splice at once: the engine freezes the
/// connection before it has sent the write, refuses (not quiet), sends the write when the
/// connection thaws, and a retry splices. Nothing written is lost.
#[test]
fn a_write_just_before_the_splice_is_not_lost() {
    let mut lab = Lab::new(false);
    // (`connect_both` returns once the server accepted: `up` sent its last handshake ACK
    // as it became established.)
    let (_cs, down, mut up, server) = connect_both(&mut lab);
    assert_eq!(up.status(), ConnStatus::Established);
    let mut server = nb(server);
    up.write_all(b"HELLO").unwrap();
    let mut pair = Some((down, up));
    let mut pending = None;
    let mut refusals = 0;
    lab.until("spliced", |lab| {
        if let Some((d, u)) = pair.take() {
            pending = Some(lab.splicer.splice(d, u).ok().unwrap());
        }
        let Some(p) = pending.take() else {
            return false;
        };
        match p.try_finish() {
            Err(p) => {
                pending = Some(p);
                false
            }
            Ok(Ok(())) => true,
            Ok(Err((SpliceError::NotQuiet, d, u))) => {
                refusals += 1;
                pair = Some((d, u));
                false
            }
            Ok(Err((e, ..))) => panic!("splice: {e}"),
        }
    });
    assert!(
        refusals >= 1,
        "the first request came before the write was sent"
    );
    let mut got = Vec::new();
    lab.until("the write reached the server", |_| {
        let mut b = [0u8; 16];
        if let Ok(n) = server.read(&mut b) {
            got.extend_from_slice(&b[..n]);
        }
        got.len() >= 5
    });
    assert_eq!(&got, b"HELLO");
}

/// A segment from `from` (address, MAC) to the proxy, straight into the proxy's link as from
/// the switch: `seg` is (source port, destination port, sequence number), with an ACK of a
/// number no side uses and a FIN if `fin`.
fn spoof_to_proxy(
    lab: &mut Lab,
    from: (Ipv4Addr, MacAddr),
    seg: (u16, u16, u32),
    fin: bool,
    timestamp: Option<smoltcp::wire::TcpTimestampRepr>,
) {
    let repr = smoltcp::wire::TcpRepr {
        src_port: seg.0,
        dst_port: seg.1,
        control: if fin {
            smoltcp::wire::TcpControl::Fin
        } else {
            smoltcp::wire::TcpControl::None
        },
        seq_number: smoltcp::wire::TcpSeqNumber(seg.2 as i32),
        ack_number: Some(smoltcp::wire::TcpSeqNumber(0x0765_4321)),
        window_len: 1000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp,
        payload: &[],
    };
    let ep = flextoe::wire::Endpoints {
        src_mac: from.1,
        dst_mac: P.1,
        src_ip: from.0,
        dst_ip: P.0,
    };
    let mut frame = vec![0u8; 128];
    let n = flextoe::wire::emit_tcp(&mut frame, &ep, &repr).unwrap();
    let now = lab.clock.now();
    lab.sw.port(1).send_bytes(now, &frame[..n]);
}

/// A spoofed segment with a timestamp far ahead, the first from the server's side after the
/// splice, does not fix the timestamp shift: the shift is fixed at the install from the
/// server's last value. (The first relayed segment's value fixed it: every real one after
/// was then 2^30 behind, and the client's PAWS dropped them all.)
#[test]
fn a_spoofed_first_timestamp_does_not_stall_a_splice() {
    const KEY: [u64; 2] = [7, 9];
    let mut lab = Lab::with(false, None, |ip, c| {
        if ip == S.0 {
            c.control.isn_secret = KEY;
        }
    });
    let (mut cs, mut ss) = connect_and_splice(&mut lab);
    // The server's clock on its connection to the proxy, as the server stamps it.
    let at_server = flextoe::wire::FourTuple {
        local_ip: S.0,
        local_port: 80,
        remote_ip: P.0,
        remote_port: ss.peer_addr().port(),
    };
    let offset = flextoe::control::secrets::Secrets::new(KEY).ts_offset(&at_server);
    let now = lab.clock.now();
    let real = (now.millis() as u32).wrapping_add(offset);
    let ts = smoltcp::wire::TcpTimestampRepr {
        tsval: real.wrapping_add(1 << 30),
        tsecr: 0,
    };
    let seg = (80, at_server.remote_port, 0x1234_5678);
    spoof_to_proxy(
        &mut lab,
        (S.0, MacAddr([2, 0, 0, 8, 0, 99])),
        seg,
        false,
        Some(ts),
    );
    let data: Vec<u8> = (0..256 * 1024).map(|i| (i * 13 % 251) as u8).collect();
    let mut sent = 0;
    let mut got = Vec::new();
    lab.until("the server's data at the client", |_| {
        if sent < data.len() {
            if let Ok(n) = ss.write(&data[sent..]) {
                sent += n;
            }
        }
        let mut b = [0u8; 16384];
        if let Some(n) = read_some(&mut cs, &mut b) {
            got.extend_from_slice(&b[..n]);
        }
        got.len() == data.len()
    });
    assert!(got == data);
}

/// Before the other side's first ACK through the splice, a FIN counts only within the
/// window the engine last offered its sender, not within the most any window could have
/// been (65535 scaled by the engine's shift: 2 MiB here, twice the offered 1 MiB). A
/// spoofed FIN between the two, then the server's real FIN: the splice stays, and the
/// client's data still reaches the server. (Both counted, the splice was removed as soon as
/// it was quiet, and the client's next bytes went to a proxy that no longer knew them.)
#[test]
fn a_spoofed_fin_past_the_offered_window_does_not_end_a_splice() {
    const KEY: [u64; 2] = [11, 13];
    let mut lab = Lab::with(false, None, |ip, c| {
        if ip == C.0 {
            c.control.isn_secret = KEY;
        }
    });
    // The client's SYN leaves on the first round, at this time.
    let t0 = lab.clock.now();
    let (mut cs, mut ss) = connect_and_splice(&mut lab);
    let at_client = flextoe::wire::FourTuple {
        local_ip: C.0,
        local_port: cs.local_addr().port(),
        remote_ip: P.0,
        remote_port: 8080,
    };
    // SND.NXT of the client: its ISS, the SYN and the three bytes of its request.
    let iss = flextoe::control::secrets::Secrets::new(KEY).isn(&at_client, t0);
    let next = iss.wrapping_add(1 + 3);
    // Past the 1 MiB the proxy offered the client, within 2 MiB.
    let seg = (at_client.local_port, 8080, next.wrapping_add(1_500_000));
    let (relayed, malformed) = (
        lab.splicer.counters().relayed(),
        lab.splicer.counters().malformed(),
    );
    spoof_to_proxy(&mut lab, C, seg, true, None);
    for _ in 0..10 {
        lab.step();
    }
    // The spoofed FIN went through the splice (and the server ignored it).
    assert!(lab.splicer.counters().relayed() > relayed);
    assert_eq!(lab.splicer.counters().malformed(), malformed);
    ss.shutdown(std::net::Shutdown::Write).unwrap();
    let mut b = [0u8; 64];
    lab.until("the server's FIN at the client", |_| {
        let _ = cs.read(&mut b);
        cs.peer_closed()
    });
    let quiet = lab.clock.now();
    lab.until("a minute after", |lab| {
        lab.clock.now().saturating_since(quiet) > Duration::from_secs(60)
    });
    assert_eq!(lab.splicer.active(), 1, "the splice is still there");
    cs.write_all(b"still here").unwrap();
    let mut got = Vec::new();
    lab.until("the client's bytes at the server", |_| {
        if let Some(n) = read_some(&mut ss, &mut b) {
            got.extend_from_slice(&b[..n]);
        }
        got.len() >= 10
    });
    assert_eq!(got, b"still here");
}
