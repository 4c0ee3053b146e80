//! ICMP destination unreachable and time exceeded (RFC 1122 4.2.3.9, RFC 5461), after
//! Linux's rules (with RFC 5927's range of sequence numbers, which leaves out SND.NXT that
//! Linux takes): a connect in its handshake ends at once, refused (port or protocol unreachable)
//! or unreachable (the rest); a peer's half-open connection is dropped when a router finds
//! no route to the peer; an established connection goes on, and if it then times out with
//! no segment from the peer since, reports the error it was told; a report that quotes no
//! segment in flight (in a handshake: not our ISS) changes nothing.

mod common;

use std::io::{ErrorKind, Write};
use std::net::Ipv4Addr;
use std::time::Duration;

use common::script::*;
use common::{IP_A, IP_B, MAC_A, MAC_B};
use flextoe::control::TcpConnState;
use flextoe::host::ConnStatus;
use flextoe::pipeline::Threaded;
use flextoe::stats::DropReason;
use flextoe::wire::icmp::emit_icmp_error;
use flextoe::wire::{flags, Endpoints};

/// Destination unreachable's type, and its codes used here.
const UNREACHABLE: u8 = 3;
const HOST_UNREACHABLE: u8 = 1;
const PORT_UNREACHABLE: u8 = 3;
/// Time exceeded in transit.
const TIME_EXCEEDED: (u8, u8) = (11, 0);
/// A router between the engine and the peer.
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 254);

/// An ICMP error of `kind` from `from`, quoting the start of one of the engine's segments
/// (at `seq`) of `t`'s connection, or of the one to `remote_port` where given.
fn icmp_error<E: Target>(
    t: &Script<E>,
    from: Ipv4Addr,
    kind: (u8, u8),
    remote_port: Option<u16>,
    seq: u32,
) -> Vec<u8> {
    let sender = Endpoints {
        src_mac: MAC_B,
        dst_mac: MAC_A,
        src_ip: from,
        dst_ip: IP_A,
    };
    let mut b = vec![0u8; 256];
    let n = emit_icmp_error(&mut b, &sender, kind, &t.quoted(remote_port, seq)).expect("fits");
    b.truncate(n);
    b
}

/// Hand `frame` to the engine and let it run.
fn tell<E: Target>(t: &mut Script<E>, frame: &[u8]) {
    t.inject(frame);
    t.poll();
}

/// A connect whose SYN is out: the script knows the engine's port; returns the SYN's
/// sequence number (the engine's ISS).
fn connecting<E: Target>(t: &mut Script<E>) -> u32 {
    let syn = t.start_connect();
    assert!(syn.has(flags::SYN) && !syn.has(flags::ACK));
    t.local_port = syn.src_port;
    syn.seq
}

/// After `status`, the connect is over: no SYN goes again, and the stream fails with `kind`.
fn assert_connect_ended<E: Target>(t: &mut Script<E>, status: ConnStatus, kind: ErrorKind) {
    assert_eq!(t.stream().status(), status);
    let e = t.stream().write(b"x").unwrap_err();
    assert_eq!(e.kind(), kind);
    for _ in 0..10 {
        t.advance(Duration::from_secs(1));
        assert!(t.recv().is_empty(), "no SYN sent again");
    }
}

fn port_unreachable_refuses<E: Target>(mut t: Script<E>) -> Script<E> {
    let iss = connecting(&mut t);
    // Stale ones first: another sequence number, another connection.
    let f = icmp_error(
        &t,
        IP_B,
        (UNREACHABLE, PORT_UNREACHABLE),
        None,
        iss.wrapping_add(1),
    );
    tell(&mut t, &f);
    let other = Some(PEER_PORT + 1);
    let f = icmp_error(&t, IP_B, (UNREACHABLE, PORT_UNREACHABLE), other, iss);
    tell(&mut t, &f);
    assert_eq!(t.stream().status(), ConnStatus::Connecting);
    // The peer's host says nothing listens on the port.
    let f = icmp_error(&t, IP_B, (UNREACHABLE, PORT_UNREACHABLE), None, iss);
    tell(&mut t, &f);
    assert_connect_ended(&mut t, ConnStatus::Refused, ErrorKind::ConnectionRefused);
    t
}

#[test]
fn port_unreachable_refuses_a_connect_at_once() {
    let t = port_unreachable_refuses(Script::new(config()));
    assert_eq!(t.state(), None);
    let s = t.engine.stats();
    assert_eq!(s.control.icmp_unreachables, 1);
    assert_eq!(s.drops(DropReason::IcmpStale), 2);
    assert_eq!(s.handshakes, 0, "the handshake is gone");
}

#[test]
fn port_unreachable_refuses_a_connect_on_the_threaded_runtime() {
    let t: Script<Threaded> = port_unreachable_refuses(Script::threaded(
        config(),
        two_groups_on_the_callers_thread(),
    ));
    assert_eq!(t.engine.stats().io.control.icmp_unreachables, 1);
}

#[test]
fn a_routers_report_ends_a_connect_as_unreachable() {
    for kind in [
        (UNREACHABLE, HOST_UNREACHABLE),
        (UNREACHABLE, 13),
        TIME_EXCEEDED,
    ] {
        let mut t = Script::new(config());
        let iss = connecting(&mut t);
        // A SYN retransmitted carries the same sequence number.
        t.advance(Duration::from_secs(2));
        assert!(t.recv().iter().any(|s| s.has(flags::SYN)), "SYN again");
        let f = icmp_error(&t, ROUTER, kind, None, iss);
        tell(&mut t, &f);
        assert_connect_ended(&mut t, ConnStatus::Unreachable, ErrorKind::HostUnreachable);
        assert_eq!(t.engine.stats().control.icmp_unreachables, 1, "{kind:?}");
    }
}

#[test]
fn a_routers_report_drops_a_half_open_connection_but_not_a_refusal() {
    let mut t = Script::new(config());
    t.listen(1);
    let sa = t.syn();
    assert_eq!(t.state(), Some(TcpConnState::SynReceived));
    // The peer asked for the connection: a refusal from it (or forged) is not believed,
    // nor (as Linux) a filter's prohibition; nor a report about another sequence number.
    let iss = sa.seq;
    let f = icmp_error(&t, IP_B, (UNREACHABLE, PORT_UNREACHABLE), None, iss);
    tell(&mut t, &f);
    let f = icmp_error(&t, ROUTER, (UNREACHABLE, 13), None, iss);
    tell(&mut t, &f);
    let f = icmp_error(&t, ROUTER, (UNREACHABLE, HOST_UNREACHABLE), None, iss ^ 1);
    tell(&mut t, &f);
    assert_eq!(t.state(), Some(TcpConnState::SynReceived));
    assert_eq!(t.engine.stats().drops(DropReason::IcmpStale), 3);
    // A router finds no route to the peer: the half-open connection goes, its backlog
    // place with it, and another peer's SYN is answered.
    let f = icmp_error(&t, ROUTER, TIME_EXCEEDED, None, iss);
    tell(&mut t, &f);
    assert_eq!(t.state(), None);
    let s = t.engine.stats();
    assert_eq!((s.handshakes, s.control.icmp_unreachables), (0, 1));
    t.advance(Duration::from_secs(5));
    assert!(t.recv().is_empty(), "no SYN-ACK sent again");
    (t.peer_port, t.peer_seq) = (PEER_PORT + 1, PEER_ISS);
    t.syn();
    assert_eq!(t.state(), Some(TcpConnState::SynReceived));
    assert_eq!(
        t.engine.stats().control.cookies_sent,
        0,
        "a place in the backlog"
    );
}

/// An established connection whose peer went silent with 3000 bytes in flight, told
/// `report` (if any: from whom, what, about the segment `at` bytes past SND.UNA), then sent
/// an ACK of `answer` bytes (if any; 0: a duplicate ACK): the status it ends with once its
/// retransmissions give up, and whether the report was taken.
fn silent_peer_after(
    report: Option<(Ipv4Addr, (u8, u8), u32)>,
    answer: Option<u32>,
) -> (ConnStatus, bool) {
    let mut cfg = config();
    cfg.control.max_retransmissions = 3;
    let mut t = Script::new(cfg);
    t.accept_established();
    let first = t.engine_seq;
    t.stream().write_all(&[7u8; 3000]).unwrap();
    assert_eq!(t.recv().len(), 3);
    if let Some((from, kind, at)) = report {
        let f = icmp_error(&t, from, kind, None, first.wrapping_add(at));
        tell(&mut t, &f);
        assert!(t.recv().is_empty(), "nothing sent at the report");
        assert_eq!(t.state(), Some(TcpConnState::Established), "goes on");
    }
    let s = t.engine.stats();
    let taken = s.control.icmp_unreachables == 1;
    assert_eq!(
        s.control.icmp_unreachables + s.drops(DropReason::IcmpStale),
        u64::from(report.is_some())
    );
    if let Some(n) = answer {
        t.engine_seq = first.wrapping_add(n);
        t.send_ack();
    }
    for _ in 0..600 {
        t.advance(Duration::from_millis(500));
        t.recv();
        if t.stream().status() != ConnStatus::Established {
            break;
        }
    }
    (t.stream().status(), taken)
}

#[test]
fn an_established_connection_that_times_out_reports_what_icmp_said() {
    use ConnStatus::*;
    assert_eq!(silent_peer_after(None, None), (TimedOut, false));
    let host = |at| Some((ROUTER, (UNREACHABLE, HOST_UNREACHABLE), at));
    let port = |at| Some((IP_B, (UNREACHABLE, PORT_UNREACHABLE), at));
    assert_eq!(silent_peer_after(host(0), None), (Unreachable, true));
    assert_eq!(silent_peer_after(port(2999), None), (Refused, true));
    // About no segment in flight: at SND.MAX, before SND.UNA.
    assert_eq!(silent_peer_after(port(3000), None), (TimedOut, false));
    assert_eq!(silent_peer_after(host(u32::MAX), None), (TimedOut, false));
    // A segment from the peer after the report, new data acknowledged or not: the path
    // works, the error is forgotten.
    assert_eq!(silent_peer_after(host(0), Some(1000)), (TimedOut, true));
    assert_eq!(silent_peer_after(host(0), Some(0)), (TimedOut, true));
}

#[test]
fn a_report_about_an_idle_connection_is_stale() {
    let mut t = Script::new(config());
    t.accept_established();
    let at = t.engine_seq;
    let f = icmp_error(&t, ROUTER, (UNREACHABLE, HOST_UNREACHABLE), None, at);
    tell(&mut t, &f);
    let s = t.engine.stats();
    assert_eq!(
        (s.control.icmp_unreachables, s.drops(DropReason::IcmpStale)),
        (0, 1)
    );
    assert_eq!(t.state(), Some(TcpConnState::Established));
}
