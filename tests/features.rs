//! Features beyond the state machine: readiness contexts, ACK policies, timestamp echo,
//! window scaling, and the in-memory link's latency and rate limit.

mod common;

use std::io::Write;
use std::time::Duration;

use common::script::*;
use common::*;
use flextoe::host::{Context, EventKind};
use flextoe::sim::Impairments;
use flextoe::stages::protocol::AckPolicy;
use flextoe::wire::flags::*;
use smoltcp::wire::TcpRepr;

#[test]
fn context_reports_readiness_events() {
    let mut t = Script::new(config());
    t.accept_established();
    let ctx = Context::new(64);
    t.stream().register(&ctx, 42).unwrap();
    assert!(
        t.stream().register(&ctx, 43).is_err(),
        "one registration per stream"
    );
    t.send_data(b"ping");
    t.recv();
    let mut ev = Vec::new();
    assert!(ctx.wait(Some(Duration::ZERO)));
    ctx.poll(&mut ev);
    assert!(
        ev.iter()
            .any(|e| e.token == 42 && e.kind == EventKind::Readable),
        "{ev:?}"
    );
    assert!(t.stream().is_readable());
    assert_eq!(t.stream().readable_bytes(), 4);
    ev.clear();
    t.stream().write_all(b"pong").unwrap();
    t.recv();
    t.engine_seq = t.engine_seq.wrapping_add(4);
    t.send_ack();
    ctx.poll(&mut ev);
    assert!(ev.iter().any(|e| e.kind == EventKind::Writable), "{ev:?}");
    ev.clear();
    let (s, a) = (t.peer_seq, t.engine_seq);
    t.send(RST, s, Some(a), &[]);
    ctx.poll(&mut ev);
    assert!(ev.iter().any(|e| e.kind == EventKind::Closed), "{ev:?}");
}

#[test]
fn ack_every_segment_policy() {
    let mut cfg = config();
    cfg.ack_policy = AckPolicy::EverySegment;
    let mut t = Script::new(cfg);
    t.accept_established();
    // Three segments in one burst: one ACK each.
    let (s, a) = (t.peer_seq, t.engine_seq);
    for i in 0..3u32 {
        let f = t.frame(&t.repr(PSH | ACK, s + i * 10, Some(a), &[7u8; 10]));
        t.inject(&f);
    }
    let acks = t.recv();
    assert_eq!(
        acks.iter().map(|x| x.ack).collect::<Vec<_>>(),
        vec![s + 10, s + 20, s + 30]
    );
}

#[test]
fn ack_per_burst_policy_coalesces() {
    let mut t = Script::new(config());
    t.accept_established();
    let (s, a) = (t.peer_seq, t.engine_seq);
    for i in 0..3u32 {
        let f = t.frame(&t.repr(PSH | ACK, s + i * 10, Some(a), &[7u8; 10]));
        t.inject(&f);
    }
    let acks = t.recv();
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].ack, s + 30);
}

#[test]
fn delayed_ack_waits_for_a_second_full_segment_or_the_delay() {
    let mut cfg = config();
    cfg.ack_policy = AckPolicy::delayed(Duration::from_millis(20));
    let mut t = Script::new(cfg);
    t.accept_established();
    let s = t.peer_seq;
    // Both ends' MSS is 1460 here: segments of 1460 bytes are full-sized. Small segments
    // that add up to less than one: no ACK yet.
    t.send_data(&[1u8; 10]);
    t.recv_none();
    t.send_data(&[2u8; 10]);
    t.recv_none();
    // More than one full segment unacknowledged: acknowledged at once, all of it.
    t.send_data(&[3u8; 1450]);
    let ack = t.recv_one();
    assert_eq!(ack.ack, s + 1470);
    assert!(ack.payload.is_empty());
    // Two full-sized segments: the second is acknowledged at once.
    t.send_data(&[4u8; 1460]);
    t.recv_none();
    t.send_data(&[5u8; 1460]);
    let ack = t.recv_one();
    let s = s + 1470 + 2920;
    assert_eq!(ack.ack, s);
    // A lone segment is acknowledged when the delay runs out, not before.
    t.send_data(&[6u8; 10]);
    t.advance(Duration::from_millis(10));
    t.recv_none();
    t.advance(Duration::from_millis(15));
    let ack = t.recv_one();
    assert_eq!(ack.ack, s + 10);
    assert_eq!(t.engine.stats().control.delayed_acks, 1);
    // Out-of-order data is acknowledged at once (a duplicate ACK for the sender).
    let (p, a) = (t.peer_seq, t.engine_seq);
    t.send(PSH | ACK, p + 100, Some(a), &[4u8; 10]);
    let dup = t.recv_one();
    assert_eq!(dup.ack, s + 10);
}

#[test]
fn delayed_ack_rides_on_the_response() {
    let mut cfg = config();
    cfg.ack_policy = AckPolicy::delayed(Duration::from_millis(40));
    let mut t = Script::new(cfg);
    t.accept_established();
    let s = t.peer_seq;
    for round in 0..3u32 {
        t.send_data(b"request!");
        t.recv_none();
        assert_eq!(t.app_read(), b"request!");
        t.stream().write_all(b"response").unwrap();
        // One segment: the response, carrying the ACK of the request.
        let seg = t.recv_one();
        assert_eq!(seg.payload, b"response");
        assert_eq!(seg.ack, s + 8 * (round + 1));
        t.engine_seq = t.engine_seq.wrapping_add(8);
        t.send_ack();
    }
    t.advance(Duration::from_millis(100));
    t.recv_none();
    assert_eq!(t.engine.stats().control.delayed_acks, 0);
}

#[test]
fn in_place_reads_and_writes() {
    use bytes::{Buf, BytesMut};
    let mut cfg = config();
    cfg.rx_buffer = 1024;
    let mut t = Script::new(cfg);
    t.accept_established();
    // Read part in place, then the rest.
    let data: Vec<u8> = (0..800u32).map(|i| i as u8).collect();
    t.send_data(&data);
    let head = t.stream().read_with(|b| (10, b[..10].to_vec())).unwrap();
    assert_eq!(head, data[..10]);
    assert_eq!(t.stream().readable_bytes(), 790);
    let rest = t.stream().read_with(|b| (b.len(), b.to_vec())).unwrap();
    assert_eq!(rest, data[10..]);
    // The engine learns of the freed space (a window update).
    assert!(t.recv().iter().any(|s| s.win > 0));
    // The next 800 bytes wrap around the 1 KiB ring: read_with sees up to the wrap,
    // read_buf takes both parts in one call.
    t.send_data(&data);
    let upto_wrap = t.stream().read_with(|b| (0, b.len())).unwrap();
    assert_eq!(upto_wrap, 224, "the ring wraps after 1024 bytes");
    let mut got = BytesMut::with_capacity(4096);
    assert_eq!(t.stream().read_buf(&mut got).unwrap(), 800);
    assert_eq!(&got[..], &data[..]);
    // Nothing left: would block.
    let e = t.stream().read_with(|b| (b.len(), ())).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    // Write in place, and from a chain of buffers.
    let n = t
        .stream()
        .write_with(|b| {
            b[..5].copy_from_slice(b"hello");
            (5, 5)
        })
        .unwrap();
    assert_eq!(n, 5);
    let mut chain = bytes::Bytes::from_static(b", ").chain(bytes::Bytes::from_static(b"world"));
    assert_eq!(t.stream().write_buf(&mut chain).unwrap(), 7);
    assert!(!chain.has_remaining());
    let sent: Vec<u8> = t.recv().into_iter().flat_map(|s| s.payload).collect();
    assert_eq!(sent, b"hello, world");
    // The end of the stream: an empty slice.
    let (p, a) = (t.peer_seq, t.engine_seq);
    t.send(FIN | ACK, p, Some(a + 12), &[]);
    let eof = t.stream().read_with(|b| (0, b.is_empty())).unwrap();
    assert!(eof);
}

#[test]
fn a_retransmitted_segment_is_counted_as_a_duplicate() {
    use flextoe::stats::DropReason;
    let mut t = Script::new(config());
    t.accept_established();
    let (s, a) = (t.peer_seq, t.engine_seq);
    t.send_data(b"once");
    let ack = t.recv_one();
    assert_eq!(ack.ack, s + 4);
    // The same segment again: the engine has it, says so, and counts it.
    t.send(PSH | ACK, s, Some(a), b"once");
    let ack = t.recv_one();
    assert_eq!(ack.ack, s + 4);
    let st = t.engine.stats();
    assert_eq!(st.drops(DropReason::Duplicate), 1);
    assert_eq!(st.drops(DropReason::OutOfWindow), 0);
    assert_eq!(t.app_read(), b"once");
}

#[test]
fn timestamps_are_echoed() {
    let mut t = Script::new(config());
    t.listen(4);
    let r = TcpRepr {
        timestamp: Script::ts(1000, 0),
        ..t.repr(SYN, PEER_ISS, None, &[])
    };
    t.send_repr(&r);
    let sa = t.recv_one();
    let (engine_ts, echo) = sa.ts.expect("timestamps negotiated");
    assert_eq!(echo, 1000);
    t.peer_seq = PEER_ISS + 1;
    t.engine_seq = sa.seq.wrapping_add(1);
    let (s, a) = (t.peer_seq, t.engine_seq);
    let r = TcpRepr {
        timestamp: Script::ts(1001, engine_ts),
        ..t.repr(ACK, s, Some(a), &[])
    };
    t.send_repr(&r);
    let r = TcpRepr {
        timestamp: Script::ts(1002, engine_ts),
        ..t.repr(PSH | ACK, s, Some(a), b"data")
    };
    t.send_repr(&r);
    let ack = t.recv_one();
    assert_eq!(
        ack.ts.map(|x| x.1),
        Some(1002),
        "echoes the latest in-order TSval"
    );
}

#[test]
fn window_scaling_is_negotiated_and_applied() {
    let mut t = Script::new(config());
    t.listen(4);
    let r = TcpRepr {
        window_scale: Some(7),
        ..t.repr(SYN, PEER_ISS, None, &[])
    };
    t.send_repr(&r);
    let sa = t.recv_one();
    // A 64 KiB ring needs a shift of 1 to be advertised whole.
    assert_eq!(sa.wscale, Some(1));
    t.peer_seq = PEER_ISS + 1;
    t.engine_seq = sa.seq.wrapping_add(1);
    // The peer's window field 100 means 100 << 7 bytes.
    let (s, a) = (t.peer_seq, t.engine_seq);
    let r = TcpRepr {
        window_len: 100,
        ..t.repr(ACK, s, Some(a), &[])
    };
    t.send_repr(&r);
    let st = t.engine.tcp_state(&t.tuple()).expect("established").clone();
    assert_eq!((st.snd_shift, st.rcv_shift), (7, 1));
    assert_eq!(st.snd_wnd, 100 << 7);
    t.send_data(b"x");
    let ack = t.recv_one();
    assert_eq!(
        ack.win as u32,
        (64 * 1024 - 1) >> 1,
        "window field is scaled down"
    );
}

#[test]
fn link_latency_and_rate_limit_shape_the_transfer() {
    let imp = Impairments {
        latency: Duration::from_millis(1),
        rate_bps: 100_000_000,
        ..Impairments::none()
    };
    let bytes = 4 << 20;
    let o = transfer(Kind::Engine, Kind::Engine, imp, bytes);
    // 4 MiB each way over 100 Mbit/s links takes at least 8 * 4 MiB / 100 Mbit/s = 0.34 s.
    let min = Duration::from_secs_f64(bytes as f64 * 8.0 / 100e6);
    assert!(o.virtual_time >= min, "{:?} < {:?}", o.virtual_time, min);
    assert!(o.virtual_time < min * 10, "{:?}", o.virtual_time);
}
