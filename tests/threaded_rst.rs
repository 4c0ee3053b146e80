//! Resets on the threaded runtime: an application's abort on a multi-worker layout, and a
//! peer's RST ordered against the segments that arrived before and after it when they cross
//! different preprocess replicas and flow groups.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddrV4;
use std::time::Duration;

use common::script::{self, two_groups_on_the_callers_thread, Script};
use common::*;
use flextoe::backends::mem::MemLink;
use flextoe::host::ConnStatus;
use flextoe::pipeline::{Engine, Threaded, Topology};
use flextoe::sim::{Impairments, VirtualClock};
use flextoe::time::Clock;

/// An application's abort sends a RST on a layout where placement and postprocess run on
/// different workers: the control plane removes the flow as soon as placement reports the
/// reset, possibly before postprocess has built the RST. Every client must see its reset
/// without sending anything itself (a lost RST would leave it waiting for ever).
#[test]
fn aborts_on_a_multi_worker_layout_all_reach_the_peer() {
    let _serial = THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    const N: usize = 32;
    let (sp, cp) = MemLink::pair(Impairments::none());
    let clock = VirtualClock::new();
    let topology = Topology::x86(2);
    assert!(!topology.maps_inline() && !topology.caller_driven);
    let server = Threaded::spawn(engine_config(MAC_A, IP_A), sp, topology, clock.clone()).unwrap();
    let mut client = Engine::new(engine_config(MAC_B, IP_B), cp).unwrap();
    let listener = server.host().listen(7, 128).unwrap();
    let mut clients: Vec<_> = (0..N)
        .map(|_| {
            let mut s = client.host().connect(SocketAddrV4::new(IP_A, 7)).unwrap();
            s.set_nonblocking(true);
            s
        })
        .collect();
    let mut reset = [false; N];
    let mut aborted = 0;
    let mut buf = [0u8; 64];
    let wall = std::time::Instant::now();
    while reset.iter().any(|r| !r) {
        assert!(
            wall.elapsed() < Duration::from_secs(60),
            "{} of {N} clients saw no reset; {aborted} aborted",
            reset.iter().filter(|r| !**r).count()
        );
        clock.advance_to(flextoe::time::Instant::ZERO + wall.elapsed());
        client.poll(clock.now());
        while let Ok(Some(s)) = listener.try_accept() {
            s.abort();
            aborted += 1;
        }
        for (c, r) in clients.iter_mut().zip(reset.iter_mut()) {
            match c.read(&mut buf) {
                Err(e) if e.kind() == ErrorKind::ConnectionReset => *r = true,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                other => panic!("client read: {other:?}"),
            }
        }
        std::thread::yield_now();
    }
    assert_eq!(aborted, N);
    // The flow ids come back for new connections (their second incarnation): the data of
    // each arrives whole.
    let mut again: Vec<_> = (0..4)
        .map(|_| {
            let mut s = client.host().connect(SocketAddrV4::new(IP_A, 7)).unwrap();
            s.set_nonblocking(true);
            s
        })
        .collect();
    let mut accepted = Vec::new();
    let mut got = vec![Vec::new(); 4];
    let mut written = [false; 4];
    while got.iter().map(Vec::len).sum::<usize>() < 4 * 1000 {
        assert!(
            wall.elapsed() < Duration::from_secs(120),
            "reused ids stalled"
        );
        clock.advance_to(flextoe::time::Instant::ZERO + wall.elapsed());
        client.poll(clock.now());
        while let Ok(Some(mut s)) = listener.try_accept() {
            s.set_nonblocking(true);
            accepted.push(s);
        }
        for (i, c) in again.iter_mut().enumerate() {
            if !written[i] {
                if let Ok(n) = c.write(&[i as u8; 1000]) {
                    assert_eq!(n, 1000);
                    written[i] = true;
                }
            }
        }
        for (s, g) in accepted.iter_mut().zip(got.iter_mut()) {
            let mut b = [0u8; 2048];
            if let Ok(n) = s.read(&mut b) {
                g.extend_from_slice(&b[..n]);
            }
        }
        std::thread::yield_now();
    }
    let mut firsts: Vec<u8> = got.iter().map(|g| g[0]).collect();
    firsts.sort();
    assert_eq!(firsts, vec![0, 1, 2, 3]);
    assert!(got
        .iter()
        .all(|g| g.len() == 1000 && g.iter().all(|&b| b == g[0])));
    server.stop();
}

/// 200 in-order segments of 100 bytes and then a RST at `offset` past their end, all in one
/// burst, into a script-driven runtime of two flow groups; returns the script and what the
/// engine sent.
fn data_then_rst(offset: u32) -> (Script<Threaded>, Vec<script::Seg>) {
    data_rst_data(offset, 0)
}

/// Injects the peer's next in-order segment: 100 bytes of `i`, acknowledging `ack`.
fn peer_data(t: &mut Script<Threaded>, ack: u32, i: u32) {
    use flextoe::wire::flags::{ACK, PSH};
    let payload = [i as u8; 100];
    let r = t.repr(PSH | ACK, t.peer_seq, Some(ack), &payload);
    let f = t.frame(&r);
    t.inject(&f);
    t.peer_seq = t.peer_seq.wrapping_add(100);
}

/// [`data_then_rst`], then `after` more segments.
fn data_rst_data(offset: u32, after: u32) -> (Script<Threaded>, Vec<script::Seg>) {
    use flextoe::wire::flags::RST;
    let mut t = Script::threaded(script::config(), two_groups_on_the_callers_thread());
    t.accept_stream();
    let a = t.engine_seq;
    for i in 0..200u32 {
        peer_data(&mut t, a, i);
    }
    let rst = t.repr(RST, t.peer_seq.wrapping_add(offset), None, &[]);
    let f = t.frame(&rst);
    t.inject(&f);
    for i in 200..200 + after {
        peer_data(&mut t, a, i);
    }
    let sent = t.recv();
    (t, sent)
}

/// A peer's RST takes effect after every segment that arrived before it, as on the inline
/// engine: an exact RST behind 200 segments resets the connection once all the data is in. (Checked against the RCV.NXT of before the data, it would be in the window but not
/// exact, and draw a challenge ACK instead.)
#[test]
fn a_peers_rst_takes_effect_after_the_segments_that_arrived_before_it() {
    let (mut t, sent) = data_then_rst(0);
    assert_eq!(t.engine.stats().io.control.challenge_acks, 0, "{sent:?}");
    assert_eq!(t.stream().status(), ConnStatus::Reset);
}

/// The same with a RST in the window but not exact: one challenge ACK, and it acknowledges
/// all the data that arrived before the RST. (Sent before the last segments went through,
/// it would repeat the RCV.NXT of an ACK already sent for the data.)
#[test]
fn a_challenge_ack_acknowledges_the_segments_that_arrived_before_the_rst() {
    let (mut t, sent) = data_then_rst(100);
    assert_eq!(t.engine.stats().io.control.challenge_acks, 1, "{sent:?}");
    let acks: Vec<u32> = sent.iter().map(|s| s.ack).collect();
    assert!(acks.windows(2).all(|w| w[0] < w[1]), "{acks:?}");
    assert_eq!(acks.last(), Some(&t.peer_seq), "{acks:?}");
    assert_eq!(t.stream().status(), ConnStatus::Established);
    assert_eq!(t.app_read().len(), 20_000);
}

/// The same with 23 more segments after the RST, in the RST's burst of 32 frames: they go
/// through after it. The challenge ACK acknowledges the data up to the RST, and a later ACK
/// the rest.
#[test]
fn segments_after_a_peers_rst_wait_for_it() {
    let (mut t, sent) = data_rst_data(100, 23);
    let at_rst = t.peer_seq.wrapping_sub(23 * 100);
    assert_eq!(t.engine.stats().io.control.challenge_acks, 1, "{sent:?}");
    let acks: Vec<u32> = sent.iter().map(|s| s.ack).collect();
    assert!(acks.windows(2).all(|w| w[0] <= w[1]), "{acks:?}");
    assert!(
        acks.contains(&at_rst),
        "no ACK of the data up to the RST: {acks:?}"
    );
    assert_eq!(acks.last(), Some(&t.peer_seq), "{acks:?}");
    assert_eq!(t.app_read().len(), 22_300);
}

/// An exact RST with 23 more segments after it in its burst: the connection resets. Had the
/// segments after it gone first, the RST would no longer be exact (RCV.NXT would have moved
/// past it) and the connection would stay open.
#[test]
fn an_exact_rst_with_segments_after_it_resets() {
    let (mut t, sent) = data_rst_data(0, 23);
    assert_eq!(t.engine.stats().io.control.challenge_acks, 0, "{sent:?}");
    assert_eq!(t.stream().status(), ConnStatus::Reset);
}

/// Two RSTs of one flow in consecutive bursts, so on the two preprocess replicas: the
/// first exact (data before it and after it in its burst), the second in the window but
/// not exact. Each travels in its replica's stream to the flow group between the segments
/// it arrived between, so the group's merge applies them in arrival order: the first resets
/// the connection. (Taken the other way round, the second would draw a challenge ACK and
/// the first would no longer be exact.) With `lead` 1, one segment goes through a pass of
/// its own first: replica 0 then holds a burst of one segment when the next two are dealt,
/// and takes it together with most of the third (the second RST's) in one pass, while
/// replica 1 takes the second (the first RST's). When RSTs went to the control plane, which
/// reads replica 0's punts first, the second RST came back first in this case. Returns the
/// script, what the engine sent, and the control plane's punt count before the RSTs.
fn two_rsts_on_two_replicas(lead: u32) -> (Script<Threaded>, Vec<script::Seg>, u64) {
    use flextoe::wire::flags::RST;
    let mut t = Script::threaded(script::config(), two_groups_on_the_callers_thread());
    t.accept_stream();
    let a = t.engine_seq;
    let punted = t.engine.stats().io.control.punted;
    let mut i = 0u32;
    let mut data_n = |t: &mut Script<Threaded>, n: u32| {
        for _ in 0..n {
            peer_data(t, a, i);
            i += 1;
        }
    };
    data_n(&mut t, lead);
    t.engine.poll();
    data_n(&mut t, 16);
    // Burst: 16 segments, the exact RST, 15 segments.
    let rst = t.repr(RST, t.peer_seq, None, &[]);
    let f = t.frame(&rst);
    t.inject(&f);
    data_n(&mut t, 15 + 16);
    // Next burst: 16 segments, a RST in the window but not exact, 15 segments.
    let rst = t.repr(RST, t.peer_seq.wrapping_add(100), None, &[]);
    let f = t.frame(&rst);
    t.inject(&f);
    data_n(&mut t, 15);
    let sent = t.recv();
    (t, sent, punted)
}

/// See [`two_rsts_on_two_replicas`]; and the RSTs stayed on the data path.
#[test]
fn two_rsts_on_two_replicas_apply_in_arrival_order() {
    for lead in [0, 1] {
        let (mut t, sent, punted) = two_rsts_on_two_replicas(lead);
        assert_eq!(t.engine.stats().io.control.punted, punted, "lead {lead}");
        assert_eq!(
            t.engine.stats().io.control.challenge_acks,
            0,
            "lead {lead}: {sent:?}"
        );
        assert_eq!(t.stream().status(), ConnStatus::Reset, "lead {lead}");
    }
}
