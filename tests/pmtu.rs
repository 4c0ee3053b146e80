//! Path MTU discovery (RFC 1191): a router's ICMP "fragmentation needed" about a segment in
//! flight shrinks the connection's segments to what the path takes and sends what was in
//! flight again at that size, the stream intact; one about data not in flight (RFC 5927:
//! it may be forged), about no connection, or raising the MTU changes nothing; a reported
//! MTU below 552 is taken as 552.

mod common;

use std::io::Write;
use std::net::Ipv4Addr;

use common::script::*;
use common::{IP_A, MAC_A, MAC_B};
use flextoe::pipeline::Threaded;
use flextoe::stats::DropReason;
use flextoe::wire::icmp::emit_frag_needed;
use flextoe::wire::Endpoints;

/// The MSS of the scripts' connections: a 1500-byte MTU, no options.
const MSS: usize = 1460;

/// A router's "fragmentation needed" with `mtu`, quoting the start of one of the engine's
/// segments (at `seq`, a 1500-byte packet) of `t`'s connection, or of the one to
/// `remote_port` where given.
fn frag_needed<E: Target>(t: &Script<E>, mtu: u16, remote_port: Option<u16>, seq: u32) -> Vec<u8> {
    let mut quoted = t.quoted(remote_port, seq);
    quoted[2..4].copy_from_slice(&1500u16.to_be_bytes());
    let router = Endpoints {
        src_mac: MAC_B,
        dst_mac: MAC_A,
        src_ip: Ipv4Addr::new(10, 9, 0, 254),
        dst_ip: IP_A,
    };
    let mut b = vec![0u8; 256];
    let n = emit_frag_needed(&mut b, &router, mtu, &quoted).unwrap();
    b.truncate(n);
    b
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// The peer of an established script: takes the engine's segments, `first` the ones
/// already taken off the wire (those longer than `path` bytes are lost on the way, as the
/// router dropped them), acknowledges what arrived in order, until `want` bytes from
/// `base` came; returns them, the largest segment that arrived and how many were lost.
fn receive<E: Target>(
    t: &mut Script<E>,
    base: u32,
    first: Vec<Seg>,
    want: usize,
    path: usize,
) -> (Vec<u8>, usize, usize) {
    let mut got = Vec::new();
    let mut largest = 0;
    let mut lost = 0;
    let mut pending = Some(first);
    for _ in 0..200 {
        if got.len() >= want {
            break;
        }
        let mut segs = pending.take().unwrap_or_else(|| t.recv());
        if segs.is_empty() {
            // Nothing more: the retransmission timeout.
            t.advance(std::time::Duration::from_millis(500));
            segs = t.recv();
        }
        for s in segs.iter().filter(|s| !s.payload.is_empty()) {
            if s.payload.len() > path {
                lost += 1;
                continue;
            }
            largest = largest.max(s.payload.len());
            let off = s.seq.wrapping_sub(base) as usize;
            if off <= got.len() && off + s.payload.len() > got.len() {
                got.extend_from_slice(&s.payload[got.len() - off..]);
            }
        }
        t.engine_seq = base.wrapping_add(got.len() as u32);
        t.send_ack();
    }
    (got, largest, lost)
}

fn shrinks_and_resends<E: Target>(mut t: Script<E>) -> Script<E> {
    t.accept_stream();
    let data = pattern(20_000);
    let first = t.engine_seq;
    t.stream.as_mut().unwrap().write_all(&data[..6000]).unwrap();
    let sent = t.recv();
    assert!(
        sent.iter().any(|s| s.payload.len() == MSS),
        "full-sized segments first: {:?}",
        sent.iter().map(|s| s.payload.len()).collect::<Vec<_>>()
    );
    // The router drops them and says so about the first.
    t.inject(&frag_needed(&t, 1000, None, first));
    let again = t.recv();
    let data_again: Vec<_> = again.iter().filter(|s| !s.payload.is_empty()).collect();
    assert!(
        !data_again.is_empty(),
        "what was in flight goes again at once"
    );
    assert_eq!(
        data_again[0].seq, first,
        "from the oldest unacknowledged byte"
    );
    assert!(
        data_again.iter().all(|s| s.payload.len() <= 960),
        "at most 1000 - 40 bytes: {:?}",
        data_again
            .iter()
            .map(|s| s.payload.len())
            .collect::<Vec<_>>()
    );
    // They arrive (they fit the path), then the rest of the stream.
    t.stream.as_mut().unwrap().write_all(&data[6000..]).unwrap();
    let (got, largest, lost) = receive(&mut t, first, again, data.len(), 960);
    assert!(
        got == data,
        "the stream intact: {} of {} bytes",
        got.len(),
        data.len()
    );
    assert_eq!(
        lost, 0,
        "no segment too large for the path after the report"
    );
    assert!(largest > 900, "segments of the path's size: {largest}");
    t
}

#[test]
fn fragmentation_needed_shrinks_segments_and_resends_what_was_in_flight() {
    let t = shrinks_and_resends(Script::new(config()));
    let s = t.engine.stats();
    assert_eq!(s.control.path_mtu_reports, 1);
    assert_eq!(s.drops(DropReason::IcmpStale), 0);
}

#[test]
fn fragmentation_needed_on_the_threaded_runtime() {
    let t: Script<Threaded> = shrinks_and_resends(Script::threaded(
        config(),
        two_groups_on_the_callers_thread(),
    ));
    assert_eq!(t.engine.stats().io.control.path_mtu_reports, 1);
}

/// The application writes 3000 bytes.
fn write_3000(t: &mut Script) {
    let s = t.stream.as_mut().expect("a stream");
    s.write_all(&pattern(3000)).unwrap();
}

/// An established connection with 3000 bytes in flight, in three segments; and the
/// sequence number of the first.
fn three_segments_in_flight() -> (Script, u32) {
    let mut t = Script::new(config());
    t.accept_established();
    let first = t.engine_seq;
    write_3000(&mut t);
    let sent = t.recv();
    assert_eq!(sent.len(), 3);
    (t, first)
}

/// A report about data not in flight, about no connection, or of an MTU the segments
/// already fit changes nothing: full-sized segments go on, nothing is sent again.
#[test]
fn fragmentation_needed_not_about_data_in_flight_is_ignored() {
    let (mut t, first) = three_segments_in_flight();
    let end = first.wrapping_add(3000);
    let stale = [
        // Below the oldest unacknowledged byte, and at or past the end of what was sent.
        frag_needed(&t, 1000, None, first.wrapping_sub(1)),
        frag_needed(&t, 1000, None, end),
        frag_needed(&t, 1000, None, end.wrapping_add(100_000)),
        // Another connection's.
        frag_needed(&t, 1000, Some(PEER_PORT + 1), first),
    ];
    for f in &stale {
        t.inject(f);
        assert!(t.recv().is_empty(), "nothing sent again");
    }
    assert_eq!(t.engine.stats().drops(DropReason::IcmpStale), 4);
    // An MTU the segments already fit.
    t.inject(&frag_needed(&t, 1500, None, first));
    assert!(t.recv().is_empty(), "nothing sent again");
    t.engine_seq = end;
    t.send_ack();
    write_3000(&mut t);
    let sent = t.recv();
    assert_eq!(sent[0].payload.len(), MSS, "the MSS as it was");
}

/// A report about a retransmission, in the recovery after a timeout: the recovery's
/// segments shrink too, and the one the router dropped goes again at once.
#[test]
fn fragmentation_needed_in_a_recovery_resends_at_once() {
    let (mut t, first) = three_segments_in_flight();
    // No ACK: the retransmission timeout sends the first segment again, full-sized.
    let mut rto = Vec::new();
    for _ in 0..40 {
        t.advance(std::time::Duration::from_millis(100));
        rto = t.recv();
        if !rto.is_empty() {
            break;
        }
    }
    assert_eq!(rto.len(), 1, "one segment after the timeout");
    assert_eq!((rto[0].seq, rto[0].payload.len()), (first, MSS));
    t.inject(&frag_needed(&t, 1000, None, first));
    let again = t.recv();
    assert!(
        !again.is_empty(),
        "sent again at once, not at the next timeout"
    );
    assert_eq!(again[0].seq, first);
    assert!(again.iter().all(|s| s.payload.len() <= 960));
}

/// A forged report cannot shrink segments below a 552-byte MTU (Linux's `min_pmtu`).
#[test]
fn a_tiny_reported_mtu_is_floored() {
    let (mut t, first) = three_segments_in_flight();
    t.inject(&frag_needed(&t, 68, None, first));
    let again = t.recv();
    assert!(!again.is_empty());
    assert_eq!(again[0].payload.len(), 512);
    assert!(
        again.iter().all(|s| s.payload.len() <= 512),
        "552 - 40 bytes: {:?}",
        again.iter().map(|s| s.payload.len()).collect::<Vec<_>>()
    );
}

/// A flood of reports is handed to the connection at most `path_mtu_limit` times a second
/// (a flow group's queue cannot be filled with them); the rest are counted as rate-limited.
/// Pings have a budget of their own: with none left for them, reports still go through.
#[test]
fn a_flood_of_reports_is_rate_limited() {
    let mut cfg = config();
    cfg.control.path_mtu_limit = 2;
    cfg.control.icmp_echo_limit = 0;
    let mut t = Script::new(cfg);
    t.accept_established();
    let first = t.engine_seq;
    write_3000(&mut t);
    assert_eq!(t.recv().len(), 3);
    for i in 0..5 {
        t.inject(&frag_needed(&t, 1000, None, first.wrapping_add(i)));
    }
    // The first goes back at the new size; the second changes nothing (the MSS is that
    // already); the rest wait for the next second.
    assert!(!t.recv().is_empty());
    let s = t.engine.stats();
    assert_eq!(s.control.path_mtu_reports, 2);
    assert_eq!(s.drops(DropReason::IcmpStale), 0);
    assert_eq!(s.drops(DropReason::RateLimited), 3);
}

/// What a timer test needs of a runtime: the retransmission timeouts the control plane
/// fired.
trait Timeouts {
    fn timeouts(&self) -> u64;
}

impl Timeouts for Script {
    fn timeouts(&self) -> u64 {
        self.engine.stats().control.timeouts
    }
}

impl Timeouts for Script<Threaded> {
    fn timeouts(&self) -> u64 {
        self.engine.stats().io.control.timeouts
    }
}

fn ms(n: u64) -> std::time::Duration {
    std::time::Duration::from_millis(n)
}

/// The retransmission timer and path MTU reports, on a runtime `make` builds: a report
/// shortly before the timeout starts the timer over (its resend is a retransmission); a
/// second report of the same MTU changes nothing, so the timer runs on.
fn timer_starts_over<E: Target>(make: impl Fn() -> Script<E>)
where
    Script<E>: Timeouts,
{
    let in_flight = || {
        let mut t = make();
        t.accept_stream();
        let first = t.engine_seq;
        t.stream
            .as_mut()
            .unwrap()
            .write_all(&pattern(3000))
            .unwrap();
        assert_eq!(t.recv().len(), 3);
        (t, first)
    };
    // When the timeout comes, without a report (in 10 ms steps).
    let (mut t, _) = in_flight();
    let mut rto = 0;
    while t.timeouts() == 0 && rto < 10_000 {
        t.advance(ms(10));
        rto += 10;
    }
    assert!((100..10_000).contains(&rto), "a timeout at {rto} ms");
    let (mut t, first) = in_flight();
    t.advance(ms(rto - 40));
    assert_eq!(t.timeouts(), 0);
    t.inject(&frag_needed(&t, 1000, None, first));
    assert!(!t.recv().is_empty(), "sent again at once");
    t.advance(ms(80));
    assert_eq!(t.timeouts(), 0, "no timeout where the old one was due");
    // The same MTU again just before the new timeout: nothing goes again, and the timer
    // is not moved.
    t.advance(ms(rto - 120));
    t.inject(&frag_needed(&t, 1000, None, first));
    assert!(t.recv().is_empty(), "nothing sent again");
    t.advance(ms(80));
    assert_eq!(
        t.timeouts(),
        1,
        "a timeout a timeout's length after the first report"
    );
}

#[test]
fn a_report_starts_the_retransmission_timer_over() {
    timer_starts_over(|| Script::new(config()));
}

#[test]
fn a_report_starts_the_retransmission_timer_over_on_the_threaded_runtime() {
    timer_starts_over(|| Script::threaded(config(), two_groups_on_the_callers_thread()));
}

#[test]
fn blind_reports_do_not_spend_the_budget() {
    let mut cfg = config();
    cfg.control.path_mtu_limit = 1;
    let (mut t, first) = {
        let mut t = Script::new(cfg);
        t.accept_established();
        let first = t.engine_seq;
        write_3000(&mut t);
        assert_eq!(t.recv().len(), 3);
        (t, first)
    };
    // Far from anything in flight (a blind guess): dropped before the rate limit.
    for far in [100_000u32, 1 << 31, 3_000_000_000] {
        t.inject(&frag_needed(&t, 1000, None, first.wrapping_add(far)));
    }
    t.inject(&frag_needed(&t, 1000, None, first.wrapping_add(1000)));
    assert!(!t.recv().is_empty(), "the genuine one goes back");
    let s = t.engine.stats();
    assert_eq!(s.drops(DropReason::IcmpStale), 3);
    assert_eq!(s.drops(DropReason::RateLimited), 0);
    assert_eq!(s.control.path_mtu_reports, 1);
}
