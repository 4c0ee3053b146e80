//! ECN end to end (RFC 3168) against a scripted peer: negotiation in the handshake in both
//! roles, ECT(0) on new data only, CE echoed as ECE until CWR, and the sender's reduction
//! (through the congestion-control policy) with CWR on its next segment.

mod common;

use std::io::Write;

use common::script::*;
use flextoe::control::Ecn;
use flextoe::wire::flags::*;
use flextoe::wire::{fill_checksums, ETH_HDR, IP_HDR};
use smoltcp::wire::{TcpRepr, TcpSeqNumber};

/// The frame for `r` with `extra` TCP flags and the IP ECN field set to `ecn`.
fn marked(t: &Script, r: &TcpRepr<'_>, extra: u8, ecn: u8) -> Vec<u8> {
    let mut f = t.frame(r);
    f[ETH_HDR + IP_HDR + 13] |= extra;
    f[ETH_HDR + 1] = (f[ETH_HDR + 1] & !3) | ecn;
    fill_checksums(&mut f);
    f
}

/// A passive open whose SYN asks for ECN (ECE and CWR); returns the SYN-ACK.
fn ecn_accept(t: &mut Script) -> Seg {
    let syn = t.repr(SYN, PEER_ISS, None, &[]);
    ecn_accept_with(t, &syn)
}

/// [`ecn_accept`] with the SYN `syn` (its options).
fn ecn_accept_with(t: &mut Script, syn: &TcpRepr<'_>) -> Seg {
    t.listen(8);
    let f = marked(t, syn, ECE | CWR, 0);
    t.inject(&f);
    let sa = t.recv_one();
    t.peer_seq = PEER_ISS + 1;
    t.engine_seq = sa.seq.wrapping_add(1);
    t.send_ack();
    let mut s = t.listener.as_ref().unwrap().try_accept().unwrap().unwrap();
    s.set_nonblocking(true);
    t.stream = Some(s);
    sa
}

#[test]
fn ecn_is_negotiated_in_both_roles_and_only_when_asked() {
    // Passive, asked: the SYN-ACK has ECE without CWR.
    let mut t = Script::new(config());
    let sa = ecn_accept(&mut t);
    assert!(sa.has(SYN | ACK | ECE) && !sa.has(CWR), "{sa:?}");
    assert!(t.engine.tcp_state(&t.tuple()).unwrap().ecn());
    // Passive, not asked: a plain SYN-ACK.
    let mut t = Script::new(config());
    t.listen(8);
    let sa = t.syn();
    assert!(!sa.has(ECE));
    // Passive, asked, but off.
    let mut cfg = config();
    cfg.control.ecn = Ecn::Off;
    let mut t = Script::new(cfg);
    let sa = ecn_accept(&mut t);
    assert!(!sa.has(ECE));
    assert!(!t.engine.tcp_state(&t.tuple()).unwrap().ecn());
    // Active: the SYN asks with ECE and CWR; a SYN-ACK with ECE agrees.
    let mut cfg = config();
    cfg.control.ecn = Ecn::Request;
    let mut t = Script::new(cfg);
    let syn = t.start_connect();
    assert!(syn.has(SYN | ECE | CWR), "{syn:?}");
    t.local_port = syn.src_port;
    t.engine_seq = syn.seq.wrapping_add(1);
    let sa = TcpRepr {
        ack_number: Some(TcpSeqNumber(t.engine_seq as i32)),
        ..t.repr(SYN | ACK, PEER_ISS, None, &[])
    };
    let f = marked(&t, &sa, ECE, 0);
    t.inject(&f);
    t.peer_seq = PEER_ISS + 1;
    t.recv();
    assert!(t.engine.tcp_state(&t.tuple()).unwrap().ecn());
}

/// New data carries ECT(0); pure ACKs and retransmissions do not (RFC 3168 6.1.4, 6.1.5).
#[test]
fn new_data_is_ect_and_acks_and_retransmissions_are_not() {
    let mut t = Script::new(config());
    ecn_accept(&mut t);
    t.stream().write_all(&[1u8; 1000]).unwrap();
    let data = t.recv_one();
    assert_eq!(data.ecn, 2, "ECT(0)");
    t.send_data(b"x");
    let ack = t.recv_one();
    assert_eq!(ack.ecn, 0);
    t.advance(std::time::Duration::from_millis(1100));
    let again = t.recv_one();
    assert_eq!(
        (again.seq, again.ecn),
        (data.seq, 0),
        "a retransmission is not ECT"
    );
    // Without ECN nothing is ECT.
    let mut t = Script::new(config());
    t.accept_established();
    t.stream().write_all(&[1u8; 1000]).unwrap();
    assert_eq!(t.recv_one().ecn, 0);
}

/// CE is acknowledged at once with ECE, and every ACK carries ECE until a segment with CWR
/// arrives (it used to be echoed on one ACK, and without negotiation).
#[test]
fn ce_is_echoed_until_cwr() {
    let mut t = Script::new(config());
    ecn_accept(&mut t);
    let r = t.repr(PSH | ACK, t.peer_seq, Some(t.engine_seq), b"marked");
    let f = marked(&t, &r, 0, 3);
    t.inject(&f);
    t.peer_seq += 6;
    let ack = t.recv_one();
    assert!(ack.has(ECE), "{ack:?}");
    t.send_data(b"plain");
    assert!(t.recv_one().has(ECE), "still echoed");
    let r = t.repr(PSH | ACK, t.peer_seq, Some(t.engine_seq), b"cwr");
    let f = marked(&t, &r, CWR, 2);
    t.inject(&f);
    t.peer_seq += 3;
    assert!(!t.recv_one().has(ECE), "CWR ends the echo");
    assert_eq!(t.app_read(), b"markedplaincwr");
}

/// An ECE makes the sender reduce its window through the congestion control (NewReno
/// halves it) once per window of data, retransmit nothing, and set CWR on its next new
/// segment.
#[test]
fn ece_reduces_the_window_once_and_the_next_segment_carries_cwr() {
    let mut t = Script::new(config());
    ecn_accept(&mut t);
    t.stream().write_all(&vec![1u8; 40 * 1460]).unwrap();
    let first = t.recv();
    assert_eq!(first.len(), 10);
    let cwnd = t.engine.tcp_state(&t.tuple()).unwrap().cwnd;
    // Two segments acknowledged, with ECE.
    let r = t.repr(ACK, t.peer_seq, Some(t.engine_seq + 2 * 1460), &[]);
    let f = marked(&t, &r, ECE, 0);
    t.inject(&f);
    t.poll();
    let after = t.engine.tcp_state(&t.tuple()).unwrap().cwnd;
    assert_eq!(after, 8 * 1460 / 2, "half the flight ({cwnd} before)");
    assert!(
        t.recv().is_empty(),
        "no retransmission, and the window is full"
    );
    // A second ECE in the same window changes nothing.
    let r = t.repr(ACK, t.peer_seq, Some(t.engine_seq + 3 * 1460), &[]);
    let f = marked(&t, &r, ECE, 0);
    t.inject(&f);
    t.poll();
    assert_eq!(t.engine.tcp_state(&t.tuple()).unwrap().cwnd, after);
    assert!(t.recv().is_empty());
    // The window opens: new data, the first with CWR.
    t.send(ACK, t.peer_seq, Some(t.engine_seq + 7 * 1460), &[]);
    let more = t.recv();
    assert!(!more.is_empty());
    assert!(
        more.iter().all(|s| s.seq >= t.engine_seq + 10 * 1460),
        "no retransmission"
    );
    let cwr: Vec<_> = more.iter().filter(|s| s.has(CWR)).collect();
    assert_eq!(cwr.len(), 1, "one CWR: {more:?}");
    assert_eq!(cwr[0].seq, t.engine_seq + 10 * 1460);
    assert!(!cwr[0].payload.is_empty());
}

/// An ACK for data never sent, CE-marked, arriving while the flow's answers to such
/// segments are rate-limited: nothing goes out (the mark asked for an ACK, but the segment
/// is dropped unanswered; a blank segment once went out in its place).
#[test]
fn a_rate_limited_drop_sends_nothing_even_when_ce_marked() {
    let mut t = Script::new(config());
    ecn_accept(&mut t);
    let too_new = t.engine_seq.wrapping_add(5000);
    t.send(ACK, t.peer_seq, Some(too_new), &[]);
    assert_eq!(t.recv().len(), 1, "the first is answered");
    let r = t.repr(ACK, t.peer_seq, Some(too_new), &[]);
    let f = marked(&t, &r, 0, 3);
    t.inject(&f);
    t.poll();
    assert_eq!(t.recv(), Vec::new(), "nothing within the limit");
}

/// A timeout during an ECN reduction ends it: the window starts over at one segment and,
/// with SACK, grows by slow start as the retransmissions are acknowledged. (The reduction's
/// flag outlived the timeout and held the window at one segment a round trip.)
#[test]
fn a_timeout_ends_an_ecn_reduction() {
    let mut t = Script::new(config());
    let syn = TcpRepr {
        sack_permitted: true,
        ..t.repr(SYN, PEER_ISS, None, &[])
    };
    assert!(ecn_accept_with(&mut t, &syn).sack_permitted);
    t.stream().write_all(&vec![1u8; 40 * 1460]).unwrap();
    assert_eq!(t.recv().len(), 10);
    // Two segments acknowledged with ECE: the window is cut, a reduction under way.
    let base = t.engine_seq + 2 * 1460;
    let r = t.repr(ACK, t.peer_seq, Some(base), &[]);
    let f = marked(&t, &r, ECE, 0);
    t.inject(&f);
    t.poll();
    t.recv();
    // Then nothing: (after tail-loss probes of new data) the timeout sends the first
    // unacknowledged segment again.
    let mut waited = 0;
    loop {
        t.advance(std::time::Duration::from_millis(10));
        waited += 10;
        assert!(waited < 5000, "no timeout");
        if t.recv()
            .iter()
            .any(|s| s.seq == base && !s.payload.is_empty())
        {
            break;
        }
    }
    // Its ACK lets two segments out (slow start), not one.
    t.send(ACK, t.peer_seq, Some(base + 1460), &[]);
    let next: Vec<u32> = t
        .recv()
        .iter()
        .filter(|s| !s.payload.is_empty())
        .map(|s| s.seq)
        .collect();
    assert_eq!(next, vec![base + 1460, base + 2 * 1460]);
}
