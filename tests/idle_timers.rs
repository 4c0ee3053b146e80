//! The control plane's timers look every tick only at connections with something to time;
//! idle ones are set aside until their next deadline or until something arms them, and
//! then time as before.

mod common;

use std::net::SocketAddrV4;
use std::time::Duration;

use common::script::*;
use common::{IP_A, IP_B, MAC_A, MAC_B};
use flextoe::backends::arena_link::ArenaLink;
use flextoe::pipeline::{Engine, EngineConfig};
use flextoe::stages::protocol::AckPolicy;
use flextoe::time::Instant;
use flextoe::wire::flags::*;

const MSS: u32 = 1460;

/// An idle connection set aside for seconds: its next write still gets a full
/// retransmission timeout (1 s here), counted from the write, not from when it went idle.
#[test]
fn a_write_after_a_long_idle_times_out_from_the_write() {
    let mut t = Script::new(config());
    t.accept_established();
    // Set aside, looked at every 100 ms: the last look was some 50 ms before the write.
    t.advance(Duration::from_millis(3050));
    t.recv();
    std::io::Write::write_all(t.stream(), &[5u8; MSS as usize]).unwrap();
    let sent = t.recv();
    assert_eq!(sent.iter().filter(|s| !s.payload.is_empty()).count(), 1);
    t.advance(Duration::from_millis(980));
    assert!(
        t.recv().iter().all(|s| s.payload.is_empty()),
        "no retransmission before the timeout"
    );
    t.advance(Duration::from_millis(40));
    let again = t.recv();
    assert_eq!(
        again.iter().filter(|s| !s.payload.is_empty()).count(),
        1,
        "the timeout resends the segment"
    );
    assert_eq!(t.engine.stats().control.timeouts, 1);
}

/// A delayed ACK armed on a connection the timers had set aside goes out when due.
#[test]
fn a_delayed_ack_after_a_long_idle_goes_out_when_due() {
    let mut cfg = config();
    cfg.ack_policy = AckPolicy::delayed(Duration::from_millis(40));
    let mut t = Script::new(cfg);
    t.accept_established();
    t.advance(Duration::from_secs(2));
    t.recv();
    t.send_data(b"one segment");
    assert!(t.recv().is_empty(), "one segment: the ACK waits");
    t.advance(Duration::from_millis(30));
    assert!(t.recv().is_empty(), "not yet due");
    t.advance(Duration::from_millis(20));
    let acks = t.recv();
    assert_eq!(acks.len(), 1, "the delayed ACK: {acks:?}");
    assert!(acks[0].has(ACK) && acks[0].payload.is_empty());
    assert_eq!(t.engine.stats().control.delayed_acks, 1);
}

/// Hundreds of idle connections: a second of timer ticks looks at each a handful of times,
/// not at every tick.
#[test]
fn idle_connections_are_not_looked_at_every_tick() {
    const CONNS: usize = 200;
    let (sp, cp) = ArenaLink::pair(8 * 1024).unwrap();
    let small = |mut c: EngineConfig| {
        c.rx_buffer = 4096;
        c.tx_buffer = 4096;
        c
    };
    let mut server = Engine::new(
        small(EngineConfig::new(MAC_A, IP_A).neighbor(IP_B, MAC_B)),
        sp,
    )
    .unwrap();
    let mut client = Engine::new(
        small(EngineConfig::new(MAC_B, IP_B).neighbor(IP_A, MAC_A)),
        cp,
    )
    .unwrap();
    let listener = server.host().listen(80, 1024).unwrap();
    let mut us = 0u64;
    let mut step = |server: &mut Engine<_>, client: &mut Engine<_>, d: u64| {
        us += d;
        client.poll(Instant::from_micros(us));
        server.poll(Instant::from_micros(us));
    };
    let mut clients = Vec::new();
    let mut accepted = Vec::new();
    for _ in 0..CONNS {
        clients.push(client.host().connect(SocketAddrV4::new(IP_A, 80)).unwrap());
        for _ in 0..4 {
            step(&mut server, &mut client, 10);
        }
        while let Ok(Some(s)) = listener.try_accept() {
            accepted.push(s);
        }
    }
    // Let the last handshakes settle.
    for _ in 0..1000 {
        step(&mut server, &mut client, 100);
        while let Ok(Some(s)) = listener.try_accept() {
            accepted.push(s);
        }
    }
    assert_eq!(accepted.len(), CONNS);
    let before = server.stats().control.timer_visits;
    // One second in timer ticks: 10,000 ticks.
    for _ in 0..10_000 {
        step(&mut server, &mut client, 100);
    }
    let visits = server.stats().control.timer_visits - before;
    // Each idle connection is looked at about every 100 ms: some 10 times in the second.
    assert!(
        visits <= (CONNS * 12) as u64,
        "{visits} looks at {CONNS} idle connections in 10,000 ticks"
    );
    assert!(
        visits >= CONNS as u64,
        "every connection is looked at now and then"
    );
    // And they still work: a byte each way on every connection.
    use std::io::{Read, Write};
    for c in clients.iter_mut() {
        c.write_all(b"x").unwrap();
    }
    for _ in 0..100 {
        step(&mut server, &mut client, 100);
    }
    let mut b = [0u8; 1];
    for s in accepted.iter_mut() {
        s.set_nonblocking(true);
        assert_eq!(s.read(&mut b).unwrap(), 1);
    }
}

/// A connection reset by its peer frees its flow id; a connection established before the
/// next tick takes the id again. The timers still look at it once per tick.
#[test]
fn a_reused_flow_id_is_looked_at_once_per_tick() {
    let mut t = Script::new(config());
    t.accept_established();
    std::io::Write::write_all(t.stream(), &[1u8; 100]).unwrap();
    assert!(!t.recv().is_empty());
    let s = t.peer_seq;
    t.send(RST, s, None, &[]);
    t.recv();
    assert_eq!(t.state(), None, "the reset connection is gone");
    // A second connection from another port, with no timer tick in between.
    t.peer_port += 1;
    t.peer_seq = PEER_ISS;
    t.syn();
    t.send_ack();
    let mut s2 = t
        .listener
        .as_ref()
        .unwrap()
        .try_accept()
        .unwrap()
        .expect("the second connection");
    s2.set_nonblocking(true);
    // Unacknowledged data keeps it in the active list.
    std::io::Write::write_all(&mut s2, &[2u8; 100]).unwrap();
    assert!(!t.recv().is_empty());
    let before = t.engine.stats().control.timer_visits;
    for _ in 0..10 {
        t.advance(flextoe::control::TIMER_TICK);
    }
    assert_eq!(t.engine.stats().control.timer_visits - before, 10);
}
