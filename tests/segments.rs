//! What the receiver and sender do with individual segments, one test per rule: PAWS
//! (RFC 7323 section 5), the FIN's place when out-of-order data and FINs interleave,
//! silly-window avoidance on both sides (RFC 9293 3.8.6.2), and the rate limits on challenge
//! ACKs and RST replies (RFC 5961 section 7).

mod common;

use std::io::Write;
use std::time::Duration;

use common::script::*;
use flextoe::stats::DropReason;
use flextoe::wire::flags::*;
use smoltcp::wire::TcpRepr;

/// A passive open with timestamps; returns our timestamp value as the peer saw it.
fn established_with_timestamps(t: &mut Script) -> u32 {
    let syn = TcpRepr {
        timestamp: Script::ts(1000, 0),
        ..t.repr(SYN, PEER_ISS, None, &[])
    };
    t.accept_with(&syn).ts.expect("timestamps").0
}

/// PAWS: a segment whose timestamp is older than the last one received in order is an old
/// duplicate (its sequence numbers may have wrapped into the window). It used to be
/// accepted; it is now dropped, answered with an ACK, and counted.
#[test]
fn paws_drops_a_segment_with_an_old_timestamp() {
    let mut t = Script::new(config());
    let ours = established_with_timestamps(&mut t);
    let data = |t: &Script, ts: u32, payload: &'static [u8]| TcpRepr {
        timestamp: Script::ts(ts, ours),
        ..t.repr(PSH | ACK, t.peer_seq, Some(t.engine_seq), payload)
    };
    let r = data(&t, 2000, b"new");
    t.send_repr(&r);
    t.recv();
    t.peer_seq += 3;
    assert_eq!(t.app_read(), b"new");
    let old = data(&t, 1500, b"old");
    t.send_repr(&old);
    let ack = t.recv_one();
    assert_eq!(ack.ack, t.peer_seq, "nothing accepted");
    assert!(t.app_read().is_empty());
    assert_eq!(t.engine.stats().drops(DropReason::Paws), 1);
    let fresh = data(&t, 2001, b"fresh");
    t.send_repr(&fresh);
    assert_eq!(t.app_read(), b"fresh");
}

/// RFC 7323 section 4.3: the timestamp an ACK echoes is that of the earliest segment it
/// covers (TS.Recent takes a segment's value only when the segment starts at or before the
/// last ACK sent), so that the peer's round trip includes the time the ACK waited. With
/// delayed ACKs the ACK of two segments (together more than one MSS, so the ACK goes at
/// the second) echoed the second's value, and the peer's samples left the delay out.
#[test]
fn a_delayed_ack_echoes_the_timestamp_of_the_first_segment_it_covers() {
    let mut cfg = config();
    cfg.ack_policy = flextoe::stages::protocol::AckPolicy::delayed(Duration::from_millis(40));
    let mut t = Script::new(cfg);
    let ours = established_with_timestamps(&mut t);
    let data = |t: &mut Script, ts: u32| {
        let r = TcpRepr {
            timestamp: Script::ts(ts, ours),
            ..t.repr(PSH | ACK, t.peer_seq, Some(t.engine_seq), &[7u8; 1000])
        };
        t.send_repr(&r);
        t.peer_seq += 1000;
    };
    data(&mut t, 2000);
    t.recv_none();
    data(&mut t, 2005);
    let ack = t.recv_one();
    assert_eq!(
        ack.ack, t.peer_seq,
        "more than an MSS unacknowledged: the ACK goes"
    );
    assert_eq!(
        ack.ts.map(|(_, ecr)| ecr),
        Some(2000),
        "the first one's value"
    );
    // The next segment starts where that ACK ended: its own value is echoed, by the
    // delayed-ACK timer's ACK.
    data(&mut t, 2010);
    t.recv_none();
    t.advance(Duration::from_millis(50));
    let ack = t.recv_one();
    assert_eq!(ack.ack, t.peer_seq);
    assert_eq!(ack.ts.map(|(_, ecr)| ecr), Some(2010));
    assert_eq!(t.app_read().len(), 3000);
}

/// The same under the default policy (one ACK per connection per burst): two segments
/// received in one burst draw one ACK, which echoes the first's timestamp; the next burst's
/// segment, which starts where that ACK ended, its own.
#[test]
fn a_burst_acknowledged_once_echoes_its_first_segments_timestamp() {
    let mut t = Script::new(config());
    let ours = established_with_timestamps(&mut t);
    let frame = |t: &mut Script, ts: u32| {
        let r = TcpRepr {
            timestamp: Script::ts(ts, ours),
            ..t.repr(PSH | ACK, t.peer_seq, Some(t.engine_seq), &[5u8; 100])
        };
        t.peer_seq += 100;
        t.frame(&r)
    };
    let (a, b) = (frame(&mut t, 3000), frame(&mut t, 3007));
    t.inject(&a);
    t.inject(&b);
    let ack = t.recv_one();
    assert_eq!(ack.ack, t.peer_seq, "one ACK for both");
    assert_eq!(ack.ts.map(|(_, ecr)| ecr), Some(3000));
    let c = frame(&mut t, 3010);
    t.inject(&c);
    assert_eq!(t.recv_one().ts.map(|(_, ecr)| ecr), Some(3010));
    assert_eq!(t.app_read().len(), 300);
}

/// PAWS from the first segment on an engine that has run for more than 24 days: the time
/// of the SYN's timestamp is the connection's start, not the engine's (it was 0, so every
/// new connection's `ts_recent` counted as 24 days old and the first segment with an older
/// timestamp than the SYN's was taken).
#[test]
fn paws_holds_from_the_first_segment_on_a_long_running_engine() {
    let mut t = Script::new(config());
    t.clock
        .advance(std::time::Duration::from_secs(25 * 24 * 3600));
    t.poll();
    let ours = established_with_timestamps(&mut t);
    let old = TcpRepr {
        timestamp: Script::ts(500, ours),
        ..t.repr(PSH | ACK, t.peer_seq, Some(t.engine_seq), b"old")
    };
    t.send_repr(&old);
    assert_eq!(t.recv_one().ack, t.peer_seq, "nothing accepted");
    assert!(t.app_read().is_empty());
    assert_eq!(t.engine.stats().drops(DropReason::Paws), 1);
}

/// The stream ends where the first FIN said. A later segment claiming a FIN further on, and
/// data past the first FIN, are ignored; out-of-order data past it is cut off. The
/// application reads exactly the bytes before the FIN, then the end of the stream.
#[test]
fn the_first_fin_fixes_the_end_of_the_stream() {
    let mut t = Script::new(config());
    t.accept_established();
    let n = t.peer_seq;
    let a = t.engine_seq;
    // Beyond a 100-byte hole: data and FIN at n+200.
    t.send(PSH | ACK | FIN, n + 100, Some(a), &[2u8; 100]);
    // Data past the first FIN, then a bare FIN that contradicts it.
    t.send(PSH | ACK, n + 200, Some(a), &[3u8; 100]);
    t.send(ACK | FIN, n + 250, Some(a), &[]);
    // The hole fills.
    t.send(PSH | ACK, n, Some(a), &[1u8; 100]);
    t.recv();
    let got = t.app_read();
    assert_eq!(got.len(), 200);
    assert!(got[..100].iter().all(|b| *b == 1) && got[100..].iter().all(|b| *b == 2));
    let mut buf = [0u8; 8];
    assert_eq!(
        std::io::Read::read(t.stream(), &mut buf).unwrap(),
        0,
        "end of stream"
    );
    let st = t.engine.stats();
    assert_eq!(st.drops(DropReason::FinMismatch), 1);
    assert_eq!(st.drops(DropReason::DataAfterFin), 1);
}

/// Receiver-side silly-window avoidance: once the window is shut, reading a few bytes does
/// not reopen it by those few bytes; the window opens again by at least an MSS. It used to
/// offer whatever was free, inviting tiny segments.
#[test]
fn a_shut_window_reopens_only_by_a_useful_amount() {
    let mut t = Script::new(config());
    t.accept_established();
    let mut win = u16::MAX;
    for _ in 0..100 {
        let (s, a) = (t.peer_seq, t.engine_seq);
        t.send(PSH | ACK, s, Some(a), &[3u8; 1460]);
        let last = t.recv().pop().expect("an ACK");
        t.peer_seq = last.ack;
        win = last.win;
        if win == 0 {
            break;
        }
    }
    assert_eq!(win, 0);
    let mut small = [0u8; 100];
    assert_eq!(std::io::Read::read(t.stream(), &mut small).unwrap(), 100);
    t.recv_none();
    // A one-byte probe fits in the real space; the ACK still offers nothing.
    t.send_data(&[4u8]);
    let ack = t.recv_one();
    assert_eq!((ack.ack, ack.win), (t.peer_seq, 0));
    // Reading more than two segments' worth opens the window, with an update of its own.
    let mut more = vec![0u8; 4000];
    assert_eq!(std::io::Read::read(t.stream(), &mut more).unwrap(), 4000);
    let update = t.recv_one();
    assert!(update.win as usize >= 1460, "{update:?}");
}

/// With window scaling, re-offering the edge already advertised rounds it up to the scale
/// where the ring has room (rounded down, each ACK moved the edge left by up to a scale
/// unit: a shrinking window); where the ring is full up to the edge it rounds down rather
/// than offer room the ring lacks.
#[test]
fn a_scaled_window_keeps_its_edge_where_the_ring_has_room() {
    use smoltcp::wire::TcpRepr;
    let mut cfg = config();
    cfg.rx_buffer = 1 << 20;
    let cap = cfg.rx_buffer as u32;
    let mut t = Script::new(cfg);
    let syn = TcpRepr {
        window_scale: Some(7),
        ..t.repr(SYN, PEER_ISS, None, &[])
    };
    let sa = t.accept_with(&syn);
    let shift = sa.wscale.expect("window scale answered");
    assert!(shift > 0, "a {cap}-byte ring needs a scale");
    // The handshake's ACK carries the first scaled window.
    t.send(ACK, t.peer_seq, Some(t.engine_seq), &[]);
    let edge = |s: &Seg| s.ack.wrapping_add(u32::from(s.win) << shift);
    // 3000 bytes, unread: the ring is full up to the edge, which rounds down.
    for _ in 0..3 {
        t.send_data(&[1u8; 1000]);
    }
    let full = t.recv().pop().expect("an ACK");
    assert!(edge(&full).wrapping_sub(full.ack) <= cap - 3000, "{full:?}");
    // The application reads 2990; the ACK of one byte more opens the window to the ring's
    // free space, its edge a whole number of units past its ACK. Then 3 bytes arrive: the
    // edge offered, rounded down from 3 bytes further on, would move left by most of a
    // unit; the ring has room for it, and it stays.
    let mut buf = vec![0u8; 2990];
    assert_eq!(std::io::Read::read(t.stream(), &mut buf).unwrap(), 2990);
    t.recv();
    t.send_data(&[2u8]);
    let first = t.recv_one();
    t.send_data(&[2u8; 3]);
    let second = t.recv_one();
    assert_eq!(second.ack, first.ack + 3);
    assert!(
        !seq_lt(edge(&second), edge(&first)),
        "the edge moved left: {first:?} then {second:?}"
    );
    assert!(
        edge(&second).wrapping_sub(second.ack) <= cap - 14,
        "{second:?}"
    );
}

fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// Sender-side silly-window avoidance: with data in flight and a window that leaves room
/// for only 100 more bytes, the engine waits for a useful window instead of sending a
/// 100-byte segment (it used to send it).
#[test]
fn a_small_window_does_not_draw_a_small_segment() {
    let mut t = Script::new(config());
    t.accept_established();
    t.stream().write_all(&vec![9u8; 30 * 1460]).unwrap();
    let first = t.recv();
    assert_eq!(first.len(), 10, "the initial window");
    let una = t.engine_seq;
    let max = una + 10 * 1460;
    // Two segments acknowledged; the window ends 100 bytes past what was sent.
    let acked = una + 2 * 1460;
    let r = TcpRepr {
        window_len: (max + 100 - acked) as u16,
        ..t.repr(ACK, t.peer_seq, Some(acked), &[])
    };
    t.send_repr(&r);
    assert!(t.recv().is_empty(), "no 100-byte segment");
    // The window opens: full segments go.
    let r = TcpRepr {
        window_len: 20_000,
        ..t.repr(ACK, t.peer_seq, Some(acked), &[])
    };
    t.send_repr(&r);
    let segs = t.recv();
    assert!(
        !segs.is_empty() && segs.iter().all(|s| s.payload.len() == 1460),
        "{segs:?}"
    );
}

/// Sender-side silly-window avoidance with nothing in flight: a window of 100 bytes draws
/// no 100-byte segment at once (it used to, as if the peer's window would never grow),
/// and no ACK will come to open it: the persist timer's override sends what the window
/// takes after a retransmission timeout (RFC 9293 3.8.6.2.1; Linux's probe timer), and
/// full segments follow once the window opens.
#[test]
fn a_small_window_with_nothing_in_flight_waits_for_the_override() {
    let mut t = Script::new(config());
    t.accept_established();
    t.stream().write_all(&vec![9u8; 30 * 1460]).unwrap();
    let first = t.recv();
    assert_eq!(first.len(), 10, "the initial window");
    // Everything acknowledged; the peer's window is down to 100 bytes.
    let acked = t.engine_seq + 10 * 1460;
    let r = TcpRepr {
        window_len: 100,
        ..t.repr(ACK, t.peer_seq, Some(acked), &[])
    };
    t.send_repr(&r);
    assert!(t.recv().is_empty(), "no 100-byte segment at once");
    let wait_for_segments = |t: &mut Script| {
        let mut waited = Duration::ZERO;
        loop {
            let segs = t.recv();
            if !segs.is_empty() || waited > Duration::from_secs(5) {
                break (waited, segs);
            }
            t.advance(Duration::from_millis(10));
            waited += Duration::from_millis(10);
        }
    };
    let (first, segs) = wait_for_segments(&mut t);
    assert!(first >= Duration::from_millis(200), "after {first:?}");
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert_eq!(segs[0].seq, acked);
    assert_eq!(segs[0].payload.len(), 100, "what the window takes");
    // Acknowledged, with the window at 100 bytes again: the next override comes after as
    // long, not after a backed-off persist interval (the override got data through).
    let r = TcpRepr {
        window_len: 100,
        ..t.repr(ACK, t.peer_seq, Some(acked + 100), &[])
    };
    t.send_repr(&r);
    let (second, segs) = wait_for_segments(&mut t);
    assert!(
        second <= first + Duration::from_millis(50),
        "{first:?} then {second:?}"
    );
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert_eq!(segs[0].seq, acked + 100);
    assert_eq!(segs[0].payload.len(), 100);
    let r = TcpRepr {
        window_len: 20_000,
        ..t.repr(ACK, t.peer_seq, Some(acked + 200), &[])
    };
    t.send_repr(&r);
    let segs = t.recv();
    assert!(
        !segs.is_empty() && segs.iter().all(|s| s.payload.len() == 1460),
        "{segs:?}"
    );
}

/// RFC 5961 section 7: challenge ACKs are limited (one per flow per 500 ms, in-window RSTs
/// and SYNs alike), and so are RSTs in reply to segments that match nothing (here 50 a
/// second). A flood of in-window RSTs and of segments to a closed port used to get one
/// reply each.
#[test]
fn challenge_acks_and_rst_replies_are_rate_limited() {
    let mut cfg = config();
    cfg.control.rst_limit = 50;
    let mut t = Script::new(cfg);
    t.accept_established();
    for i in 0..500u32 {
        let r = t.repr(RST, t.peer_seq + 10 + i, None, &[]);
        let f = t.frame(&r);
        t.inject(&f);
    }
    t.poll();
    let acks = t.recv();
    assert_eq!(acks.len(), 1, "one challenge ACK per flow per 500 ms");
    assert_eq!(t.engine.stats().control.challenge_acks, 1);
    assert_eq!(t.engine.stats().drops(DropReason::RateLimited), 499);
    // A SYN on the connection within the 500 ms draws none either (one limit for both).
    let r = t.repr(SYN, 999, None, &[]);
    t.send_repr(&r);
    assert_eq!(t.recv().len(), 0);
    assert_eq!(t.engine.stats().drops(DropReason::RateLimited), 500);
    let local = t.local_port;
    t.local_port = 9; // nothing listens there
    for i in 0..500u32 {
        let r = t.repr(ACK, i, Some(i), &[]);
        let f = t.frame(&r);
        t.inject(&f);
    }
    t.poll();
    assert_eq!(t.recv().len(), 50, "RST replies within the limit");
    assert_eq!(t.engine.stats().drops(DropReason::RateLimited), 950);
    // A second later the budget is back.
    t.local_port = local;
    t.advance(Duration::from_secs(1));
    let r = t.repr(RST, t.peer_seq + 10, None, &[]);
    t.send_repr(&r);
    assert_eq!(t.recv().len(), 1);
    assert_eq!(t.engine.stats().control.challenge_acks, 2);
    // A budget across flows, when one is set, limits them too.
    let mut cfg = config();
    cfg.control.challenge_ack_limit = 0;
    let mut t = Script::new(cfg);
    t.accept_established();
    let r = t.repr(RST, t.peer_seq + 10, None, &[]);
    t.send_repr(&r);
    assert_eq!(t.recv().len(), 0);
    assert_eq!(t.engine.stats().drops(DropReason::RateLimited), 1);
}

/// A peer's RST of an established connection is checked by the protocol stage where it
/// arrived among the connection's segments, without a trip to the control plane: one far
/// outside the window is dropped without a reply, and an exact one behind data in the same
/// burst resets the connection once the data is in. The control plane sees no punt.
#[test]
fn a_peers_rst_is_checked_on_the_data_path() {
    let mut t = Script::new(config());
    t.accept_established();
    let punted = t.engine.stats().control.punted;
    let r = t.repr(RST, t.peer_seq.wrapping_add(1 << 30), None, &[]);
    t.send_repr(&r);
    t.recv_none();
    assert_eq!(t.engine.stats().drops(DropReason::BadRst), 1);
    let a = t.engine_seq;
    for i in 0..4u8 {
        let payload = [i; 100];
        let r = t.repr(PSH | ACK, t.peer_seq, Some(a), &payload);
        let f = t.frame(&r);
        t.inject(&f);
        t.peer_seq = t.peer_seq.wrapping_add(100);
    }
    let r = t.repr(RST, t.peer_seq, None, &[]);
    t.send_repr(&r);
    assert_eq!(t.stream().status(), flextoe::host::ConnStatus::Reset);
    assert_eq!(t.engine.stats().control.challenge_acks, 0);
    assert_eq!(t.engine.stats().control.punted, punted);
}
