//! Connection-state tests, grouped by TCP state (RFC 9293), against a scripted peer.

mod common;

use common::script::*;
use flextoe::control::TcpConnState as S;
use flextoe::control::OOW_ANSWER_GAP;
use flextoe::host::ConnStatus;
use flextoe::stats::DropReason;
use flextoe::wire::flags::*;
use std::io::Write;
use std::time::Duration;

fn script() -> Script {
    Script::new(config())
}

mod listen {
    use super::*;

    #[test]
    fn syn_gets_syn_ack_with_options() {
        let mut t = script();
        t.listen(4);
        assert!(t.engine.is_listening(LOCAL_PORT));
        let sa = t.syn();
        assert_eq!(sa.mss, Some(1460));
        // The peer offered neither window scaling nor timestamps: none come back.
        assert_eq!(sa.wscale, None);
        assert_eq!(sa.ts, None);
        assert_eq!(t.state(), Some(S::SynReceived));
    }

    #[test]
    fn syn_with_wscale_and_timestamps_is_answered_in_kind() {
        let mut t = script();
        t.listen(4);
        let r = smoltcp::wire::TcpRepr {
            window_scale: Some(7),
            timestamp: Script::ts(77, 0),
            sack_permitted: true,
            ..t.repr(SYN, PEER_ISS, None, &[])
        };
        t.send_repr(&r);
        let sa = t.recv_one();
        assert!(sa.wscale.is_some());
        assert_eq!(sa.ts.map(|x| x.1), Some(77));
    }

    #[test]
    fn ack_without_connection_gets_rst() {
        let mut t = script();
        t.listen(4);
        t.send(ACK, 5, Some(1234), &[]);
        let r = t.recv_one();
        assert!(r.has(RST));
        assert_eq!(r.seq, 1234);
        assert_eq!(t.state(), None);
    }

    #[test]
    fn rst_without_connection_is_ignored() {
        let mut t = script();
        t.listen(4);
        t.send(RST, 5, None, &[]);
        t.recv_none();
    }

    #[test]
    fn syn_to_closed_port_gets_rst_ack() {
        let mut t = script();
        t.send(SYN, 100, None, &[]);
        let r = t.recv_one();
        assert!(r.has(RST | ACK));
        assert_eq!(r.ack, 101);
    }

    #[test]
    fn backlog_limits_half_open_connections() {
        // Beyond the backlog a SYN gets a SYN cookie and leaves no state.
        let mut t = script();
        t.listen(1);
        t.syn();
        t.peer_port += 1;
        let s = t.peer_seq;
        t.send(SYN, s, None, &[]);
        assert!(t.recv_one().has(SYN | ACK));
        let st = t.engine.stats();
        assert_eq!((st.handshakes, st.control.cookies_sent), (1, 1));
        // Without cookies it is dropped and counted.
        let mut cfg = config();
        cfg.control.syn_cookies = false;
        let mut t = Script::new(cfg);
        t.listen(1);
        t.syn();
        t.peer_port += 1;
        let s = t.peer_seq;
        t.send(SYN, s, None, &[]);
        t.recv_none();
        assert_eq!(
            t.engine.stats().control.drops.get(DropReason::BacklogFull),
            1
        );
    }
}

mod syn_sent {
    use super::*;
    use std::net::SocketAddrV4;

    fn connect(t: &mut Script) -> Seg {
        let mut s = t
            .engine
            .host()
            .connect(SocketAddrV4::new(common::IP_B, PEER_PORT))
            .unwrap();
        s.set_nonblocking(true);
        t.stream = Some(s);
        let syn = t.recv_one();
        t.local_port = syn.src_port;
        t.engine_seq = syn.seq.wrapping_add(1);
        syn
    }

    #[test]
    fn connect_sends_syn_with_options() {
        let mut t = script();
        let syn = connect(&mut t);
        assert!(syn.has(SYN) && !syn.has(ACK));
        assert_eq!(syn.mss, Some(1460));
        assert!(syn.wscale.is_some());
        assert!(syn.ts.is_some());
        assert_eq!(t.state(), Some(S::SynSent));
        assert_eq!(t.stream().status(), ConnStatus::Connecting);
    }

    #[test]
    fn isns_differ_per_connection() {
        let mut t = script();
        let a = connect(&mut t);
        let b = connect(&mut t);
        assert_ne!(a.src_port, b.src_port);
        assert_ne!(a.seq, b.seq);
    }

    #[test]
    fn syn_ack_with_bad_ack_gets_rst() {
        let mut t = script();
        let syn = connect(&mut t);
        let bad = syn.seq.wrapping_add(77);
        t.send(SYN | ACK, PEER_ISS, Some(bad), &[]);
        let r = t.recv_one();
        assert!(r.has(RST));
        assert_eq!(r.seq, bad);
        assert_eq!(t.state(), Some(S::SynSent));
    }

    #[test]
    fn rst_ack_refuses() {
        let mut t = script();
        connect(&mut t);
        let a = t.engine_seq;
        t.send(RST | ACK, 0, Some(a), &[]);
        assert_eq!(t.state(), None);
        assert_eq!(t.stream().status(), ConnStatus::Refused);
        let e = t.stream().write(b"x").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn rst_without_ack_is_ignored() {
        let mut t = script();
        connect(&mut t);
        t.send(RST, 0, None, &[]);
        assert_eq!(t.state(), Some(S::SynSent));
    }

    #[test]
    fn syn_is_retransmitted_then_times_out() {
        let mut cfg = config();
        cfg.control.syn_retries = 2;
        let mut t = Script::new(cfg);
        let syn = connect(&mut t);
        t.advance(Duration::from_millis(1100));
        let again = t.recv_one();
        assert!(again.has(SYN));
        assert_eq!(again.seq, syn.seq);
        t.advance(Duration::from_secs(10));
        assert_eq!(t.state(), None);
        assert_eq!(t.stream().status(), ConnStatus::TimedOut);
    }

    #[test]
    fn simultaneous_open_answers_syn_with_syn_ack() {
        let mut t = script();
        connect(&mut t);
        t.send(SYN, PEER_ISS, None, &[]);
        let sa = t.recv_one();
        assert!(sa.has(SYN | ACK));
        assert_eq!(sa.ack, PEER_ISS + 1);
        assert_eq!(t.state(), Some(S::SynReceived));
    }

    /// The rest of a simultaneous open (RFC 9293 figure 8): the peer's SYN-ACK, which
    /// acknowledges our SYN, establishes the connection (it used to draw another SYN-ACK,
    /// so two such engines bounced SYN-ACKs until the handshake timed out), and data flows
    /// both ways.
    #[test]
    fn simultaneous_open_completes_with_the_peers_syn_ack() {
        let mut t = script();
        let syn = connect(&mut t);
        t.send(SYN, PEER_ISS, None, &[]);
        let sa = t.recv_one();
        assert!(sa.has(SYN | ACK));
        t.send(SYN | ACK, PEER_ISS, Some(syn.seq.wrapping_add(1)), &[]);
        assert_eq!(t.state(), Some(S::Established));
        // At most a plain ACK (the one an active open ends with), no SYN-ACK again.
        assert!(t.recv().iter().all(|g| !g.has(SYN)));
        t.peer_seq = PEER_ISS + 1;
        t.send_data(b"ping");
        assert_eq!(t.app_read(), b"ping");
        t.stream().write_all(b"pong").unwrap();
        t.poll();
        let out: Vec<u8> = t.recv().into_iter().flat_map(|g| g.payload).collect();
        assert_eq!(out, b"pong");
    }

    #[test]
    fn syn_ack_establishes() {
        let mut t = script();
        t.connect_established();
        assert_eq!(t.stream().status(), ConnStatus::Established);
        assert_eq!(t.engine.flow_count(), 1);
    }

    #[test]
    fn data_written_while_connecting_is_sent_once_established() {
        let mut t = script();
        let mut s = t
            .engine
            .host()
            .connect(std::net::SocketAddrV4::new(common::IP_B, PEER_PORT))
            .unwrap();
        s.set_nonblocking(true);
        s.write_all(b"early").unwrap();
        t.stream = Some(s);
        let syn = t.recv_one();
        t.local_port = syn.src_port;
        t.send(SYN | ACK, PEER_ISS, Some(syn.seq.wrapping_add(1)), &[]);
        let segs = t.recv();
        assert!(segs.iter().any(|s| s.payload == b"early"), "{segs:#?}");
    }
}

mod syn_received {
    use super::*;

    #[test]
    fn retransmitted_syn_gets_syn_ack_again() {
        let mut t = script();
        t.listen(4);
        let sa = t.syn();
        t.send(SYN, PEER_ISS, None, &[]);
        let again = t.recv_one();
        assert!(again.has(SYN | ACK));
        assert_eq!(again.seq, sa.seq);
    }

    /// A repeated SYN gets the SYN-ACK again at most once every `OOW_ANSWER_GAP`: a peer
    /// (or anyone who knows the tuple) repeating it does not get one for each.
    #[test]
    fn repeated_syns_get_syn_acks_at_a_limited_rate() {
        let mut t = script();
        t.listen(4);
        let sa = t.syn();
        t.send(SYN, PEER_ISS, None, &[]);
        assert!(t.recv_one().has(SYN | ACK));
        let limited = t.engine.stats().control.drops.get(DropReason::RateLimited);
        for _ in 0..5 {
            t.send(SYN, PEER_ISS, None, &[]);
            t.recv_none();
        }
        let stats = t.engine.stats().control;
        assert_eq!(stats.drops.get(DropReason::RateLimited), limited + 5);
        t.advance(OOW_ANSWER_GAP);
        t.send(SYN, PEER_ISS, None, &[]);
        let again = t.recv_one();
        assert!(again.has(SYN | ACK));
        assert_eq!(again.seq, sa.seq);
        assert_eq!(t.state(), Some(S::SynReceived));
    }

    /// A segment outside the window gets an ACK that says where the handshake is (with
    /// or without the ACK flag; the window scaled as the connection will give it, the SYN's
    /// timestamp echoed), an empty one at most one every `OOW_ANSWER_GAP` (it may be half
    /// of an ACK loop), one with data each time, as Linux's `tcp_check_req`; it leaves the
    /// handshake as it was.
    #[test]
    fn a_segment_outside_the_window_gets_an_ack() {
        let mut t = script();
        t.listen(4);
        let syn = smoltcp::wire::TcpRepr {
            window_scale: Some(7),
            timestamp: Script::ts(77, 0),
            ..t.repr(SYN, PEER_ISS, None, &[])
        };
        t.send_repr(&syn);
        let sa = t.recv_one();
        let shift = sa.wscale.expect("window scaling agreed");
        t.peer_seq = PEER_ISS + 1;
        t.engine_seq = sa.seq.wrapping_add(1);
        let (s, a) = (t.peer_seq, t.engine_seq);
        let far = s.wrapping_add(1 << 30);
        // `fl` 0: no ACK flag.
        let outside = |t: &mut Script, fl, data: &[u8]| {
            let ack = (fl != 0).then_some(a);
            let r = smoltcp::wire::TcpRepr {
                timestamp: Script::ts(78, sa.ts.map_or(0, |x| x.0)),
                ..t.repr(fl, far, ack, data)
            };
            t.send_repr(&r);
        };
        outside(&mut t, ACK, &[]);
        let ack = t.recv_one();
        assert!(ack.has(ACK) && !ack.has(SYN) && !ack.has(RST));
        assert_eq!((ack.seq, ack.ack), (a, s));
        assert_eq!(u32::from(ack.win), (64 * 1024) >> shift);
        assert_eq!(ack.ts.map(|x| x.1), Some(77));
        // Empty: limited.
        outside(&mut t, ACK, &[]);
        t.recv_none();
        outside(&mut t, 0, &[]);
        t.recv_none();
        // With data: answered each time.
        for _ in 0..3 {
            outside(&mut t, PSH | ACK, b"x");
            assert_eq!(t.recv_one().ack, s);
        }
        assert_eq!(t.state(), Some(S::SynReceived));
        t.advance(OOW_ANSWER_GAP);
        outside(&mut t, 0, &[]);
        assert_eq!(t.recv_one().ack, s, "no ACK flag, outside the window");
        // The handshake still completes.
        t.send(ACK, s, Some(a), &[]);
        assert_eq!(t.state(), Some(S::Established));
    }

    #[test]
    fn ack_with_wrong_number_gets_rst() {
        let mut t = script();
        t.listen(4);
        t.syn();
        let bad = t.engine_seq.wrapping_add(1000);
        let s = t.peer_seq;
        t.send(ACK, s, Some(bad), &[]);
        let r = t.recv_one();
        assert!(r.has(RST));
        assert_eq!(r.seq, bad);
        assert_eq!(t.state(), Some(S::SynReceived));
    }

    #[test]
    fn rst_aborts_handshake() {
        let mut t = script();
        t.listen(4);
        t.syn();
        let s = t.peer_seq;
        t.send(RST, s, None, &[]);
        assert_eq!(t.state(), None);
    }

    #[test]
    fn syn_ack_is_retransmitted() {
        let mut t = script();
        t.listen(4);
        let sa = t.syn();
        t.advance(Duration::from_millis(1100));
        let again = t.recv_one();
        assert_eq!(again.seq, sa.seq);
        assert!(again.has(SYN | ACK));
    }

    #[test]
    fn data_overtaking_the_final_ack_completes_the_handshake() {
        let mut t = script();
        t.listen(4);
        t.syn();
        let (s, a) = (t.peer_seq, t.engine_seq);
        // The final ACK is lost; a later data segment arrives first.
        t.send(PSH | ACK, s + 3, Some(a), b"def");
        assert_eq!(t.state(), Some(S::Established));
        let dup = t.recv_one();
        assert_eq!(dup.ack, s, "out-of-order data is acknowledged at the gap");
        t.send(PSH | ACK, s, Some(a), b"abc");
        let mut st = t.listener.as_ref().unwrap().try_accept().unwrap().unwrap();
        st.set_nonblocking(true);
        t.stream = Some(st);
        assert_eq!(t.app_read(), b"abcdef");
    }

    #[test]
    fn final_ack_with_data_delivers_it() {
        let mut t = script();
        t.listen(4);
        t.syn();
        t.send_data(b"piggyback");
        let ack = t.recv_one();
        assert_eq!(ack.ack, PEER_ISS + 1 + 9);
        let mut s = t.listener.as_ref().unwrap().try_accept().unwrap().unwrap();
        s.set_nonblocking(true);
        t.stream = Some(s);
        assert_eq!(t.app_read(), b"piggyback");
    }
}

mod established {
    use super::*;

    #[test]
    fn data_is_acked_and_delivered() {
        let mut t = script();
        t.accept_established();
        t.send_data(b"hello");
        let a = t.recv_one();
        assert_eq!(a.ack, t.peer_seq);
        assert_eq!(t.app_read(), b"hello");
    }

    #[test]
    fn app_data_is_sent_and_acked() {
        let mut t = script();
        t.accept_established();
        t.stream().write_all(b"world").unwrap();
        let d = t.recv_one();
        assert_eq!(d.payload, b"world");
        assert_eq!(d.seq, t.engine_seq);
        t.engine_seq = t.engine_seq.wrapping_add(5);
        assert_eq!(t.stream().unacked_bytes(), 5);
        t.send_ack();
        assert_eq!(t.stream().unacked_bytes(), 0);
    }

    #[test]
    fn out_of_order_segment_is_kept_and_dup_acked() {
        let mut t = script();
        t.accept_established();
        let base = t.peer_seq;
        let a = t.engine_seq;
        t.send(PSH | ACK, base + 3, Some(a), b"def");
        let dup = t.recv_one();
        assert_eq!(dup.ack, base);
        assert!(t.app_read().is_empty());
        t.send(PSH | ACK, base, Some(a), b"abc");
        let ack = t.recv_one();
        assert_eq!(ack.ack, base + 6);
        assert_eq!(t.app_read(), b"abcdef");
    }

    #[test]
    fn overlapping_and_duplicate_segments_deliver_each_byte_once() {
        let mut t = script();
        t.accept_established();
        let base = t.peer_seq;
        let a = t.engine_seq;
        t.send(PSH | ACK, base + 2, Some(a), b"cdef");
        t.send(PSH | ACK, base + 4, Some(a), b"efgh");
        t.send(PSH | ACK, base, Some(a), b"abcd");
        t.send(PSH | ACK, base, Some(a), b"abcd");
        t.recv();
        assert_eq!(t.app_read(), b"abcdefgh");
    }

    #[test]
    fn segment_outside_window_gets_ack_and_is_dropped() {
        let mut t = script();
        t.accept_established();
        let s = t.peer_seq.wrapping_add(10_000_000);
        let a = t.engine_seq;
        t.send(PSH | ACK, s, Some(a), b"far");
        let r = t.recv_one();
        assert_eq!(r.ack, t.peer_seq);
        assert!(t.app_read().is_empty());
    }

    #[test]
    fn ack_for_unsent_data_gets_ack() {
        let mut t = script();
        t.accept_established();
        let s = t.peer_seq;
        let a = t.engine_seq.wrapping_add(5000);
        t.send(ACK, s, Some(a), &[]);
        let r = t.recv_one();
        assert_eq!(r.seq, t.engine_seq);
    }

    /// Unacceptable segments that carry nothing (what two ends in an ACK loop send each
    /// other) are answered at most once per flow per 500 ms; segments with data always.
    #[test]
    fn answers_to_unacceptable_empty_segments_are_rate_limited() {
        let mut t = script();
        t.accept_established();
        let (s, a) = (t.peer_seq, t.engine_seq);
        let limited = |t: &Script| t.engine.stats().drops(DropReason::RateLimited);
        // An ACK for data never sent, three times in a row: one answer.
        for _ in 0..3 {
            t.send(ACK, s, Some(a.wrapping_add(5000)), &[]);
        }
        assert_eq!(t.recv().len(), 1, "one answer");
        assert_eq!(limited(&t), 2);
        // Out of the window, without data: still limited; with data: answered.
        t.send(ACK, s.wrapping_add(10_000_000), Some(a), &[]);
        t.recv_none();
        t.send(PSH | ACK, s.wrapping_add(10_000_000), Some(a), b"far");
        assert_eq!(t.recv_one().ack, s);
        // Half a second later the next empty one is answered again.
        t.advance(Duration::from_millis(500));
        let _ = t.recv();
        t.send(ACK, s, Some(a.wrapping_add(5000)), &[]);
        assert_eq!(t.recv_one().ack, s);
        assert_eq!(limited(&t), 3);
    }

    /// A FIN past the window (its segment's data trimmed at the window's edge) is not
    /// taken: the stream does not end where the trimmed segment said. One right at the
    /// edge, after data that filled the window, is.
    #[test]
    fn a_fin_past_the_window_is_trimmed_with_the_data() {
        let mut t = script();
        t.accept_established();
        // Fill the 64 KiB receive ring to 1,000 bytes short of full; the application
        // reads nothing.
        let fill = 64 * 1024 - 1000;
        let mut sent = 0;
        while sent < fill {
            let n = (fill - sent).min(1000);
            t.send_data(&vec![1u8; n]);
            sent += n;
        }
        let _ = t.recv();
        let r = t.peer_seq;
        // 1,400 bytes and a FIN: 1,000 fit.
        t.send(PSH | ACK | FIN, r, Some(t.engine_seq), &[2u8; 1400]);
        let acks = t.recv();
        assert_eq!(acks.last().map(|g| g.ack), Some(r + 1000), "{acks:?}");
        assert_eq!(t.app_read().len(), fill + 1000);
        // The rest without a FIN: the stream goes on.
        t.send(PSH | ACK, r + 1000, Some(t.engine_seq), &[2u8; 400]);
        assert_eq!(t.state(), Some(S::Established));
        assert_eq!(t.app_read().len(), 400);
        // Data that fills the window exactly, with a FIN right at its edge: taken.
        let r = r + 1400;
        t.peer_seq = r;
        let fill = 64 * 1024;
        let mut sent = 0;
        while sent + 1000 < fill {
            t.send_data(&[3u8; 1000]);
            sent += 1000;
        }
        let last = fill - sent;
        assert_eq!(t.peer_seq, r + sent as u32);
        t.send(
            PSH | ACK | FIN,
            t.peer_seq,
            Some(t.engine_seq),
            &vec![4u8; last],
        );
        assert_eq!(t.state(), Some(S::CloseWait));
        let acks = t.recv();
        assert_eq!(acks.last().map(|g| g.ack), Some(r + fill as u32 + 1));
    }

    #[test]
    fn exact_rst_resets() {
        let mut t = script();
        t.accept_established();
        let s = t.peer_seq;
        t.send(RST, s, None, &[]);
        assert_eq!(t.state(), None);
        assert_eq!(t.engine.flow_count(), 0);
        assert_eq!(t.stream().status(), ConnStatus::Reset);
        let e = std::io::Read::read(t.stream(), &mut [0u8; 4]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
        let e = t.stream().write(b"late").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    }

    /// A connection that left the engine rings nothing: what the application still does
    /// with its stream (a shutdown, a drop) queues no doorbell, whose flow id may already
    /// be another connection's (stale ids could otherwise fill the doorbell queue, which
    /// holds one entry per flow, and leave a live connection unheard).
    #[test]
    fn a_removed_connections_stream_rings_no_doorbell() {
        let mut t = script();
        t.accept_established();
        let s = t.peer_seq;
        t.send(RST, s, None, &[]);
        assert_eq!(t.engine.flow_count(), 0);
        t.poll();
        let before = t.engine.stats().doorbells;
        let _ = t.stream().shutdown(std::net::Shutdown::Both);
        drop(t.stream.take());
        t.poll();
        assert_eq!(t.engine.stats().doorbells, before, "no doorbell queued");
        // The next connection (another peer port, same listener) takes the flow id again
        // and is heard.
        t.peer_port += 1;
        t.peer_seq = PEER_ISS;
        t.syn();
        t.send_ack();
        let mut next = t.listener.as_ref().unwrap().try_accept().unwrap().unwrap();
        assert_eq!(t.engine.flow_count(), 1);
        next.write_all(b"heard").unwrap();
        t.poll();
        let got: Vec<u8> = t.recv().into_iter().flat_map(|g| g.payload).collect();
        assert_eq!(got, b"heard");
    }

    /// A write takes what room the send ring has; with none it would block, an empty write
    /// is no write, and after `shutdown(Write)` every write is a broken pipe.
    #[test]
    fn writes_fill_the_ring_then_block_and_a_shut_side_refuses_them() {
        let mut t = script();
        t.accept_established();
        let s = t.stream();
        s.set_nonblocking(true);
        let big = vec![7u8; 128 * 1024];
        let n = s.write(&big).unwrap();
        assert_eq!(n, 64 * 1024, "the ring's capacity");
        let e = s.write(&big).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        assert_eq!(s.write(&[]).unwrap(), 0);
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let e = s.write(b"x").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
        assert_eq!(
            s.write(&[]).unwrap_err().kind(),
            std::io::ErrorKind::BrokenPipe
        );
    }

    /// An established connection with six bytes received and reading shut down.
    fn shut_for_reading_with_six_bytes() -> Script {
        let mut t = script();
        t.accept_established();
        t.send_data(b"queued");
        t.recv();
        let s = t.stream();
        s.set_nonblocking(true);
        s.shutdown(std::net::Shutdown::Read).unwrap();
        t
    }

    /// After `shutdown(Read)` a read returns what was received (as a kernel socket's),
    /// then the end of the stream instead of waiting; the stream polls readable.
    #[test]
    fn reads_after_shutdown_read_return_what_was_received_then_the_end() {
        use std::io::Read;
        let mut t = shut_for_reading_with_six_bytes();
        let s = t.stream();
        assert!(s.is_readable() && s.read_closed());
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).unwrap(), 6);
        assert_eq!(&buf[..6], b"queued");
        assert_eq!(s.read(&mut buf).unwrap(), 0, "the end, not WouldBlock");
        assert!(s.is_readable());
    }

    /// After `shutdown(Read)`, a reset the peer sent before any FIN is still the read's
    /// error once what was received is read (as Linux; it read as the end of the stream).
    #[test]
    fn a_reset_after_shutdown_read_is_an_error_still() {
        use std::io::Read;
        let mut t = shut_for_reading_with_six_bytes();
        let seq = t.peer_seq;
        t.send(RST, seq, None, &[]);
        let mut buf = [0u8; 16];
        let s = t.stream();
        assert_eq!(s.read(&mut buf).unwrap(), 6);
        let e = s.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    }

    /// A close with data unread is a RST (RFC 2525 2.17, as Linux), reading shut down or
    /// not (it was a FIN after `shutdown(Read)`).
    #[test]
    fn a_close_after_shutdown_read_with_data_unread_is_a_reset() {
        let mut t = script();
        t.accept_established();
        t.send_data(b"left");
        t.recv();
        t.stream().shutdown(std::net::Shutdown::Read).unwrap();
        drop(t.stream.take());
        t.poll();
        let segs = t.recv();
        assert!(segs.iter().any(|g| g.has(RST)), "{segs:?}");
        assert!(!segs.iter().any(|g| g.has(FIN)), "{segs:?}");
    }

    #[test]
    fn rst_in_window_but_not_exact_gets_challenge_ack() {
        let mut t = script();
        t.accept_established();
        let s = t.peer_seq.wrapping_add(100);
        t.send(RST, s, None, &[]);
        let c = t.recv_one();
        assert!(c.has(ACK) && !c.has(RST));
        assert_eq!(c.ack, t.peer_seq);
        assert_eq!(t.state(), Some(S::Established));
        assert_eq!(t.engine.stats().control.challenge_acks, 1);
    }

    #[test]
    fn rst_outside_window_is_ignored() {
        let mut t = script();
        t.accept_established();
        let s = t.peer_seq.wrapping_sub(100);
        t.send(RST, s, None, &[]);
        t.recv_none();
        assert_eq!(t.state(), Some(S::Established));
    }

    #[test]
    fn syn_gets_challenge_ack() {
        let mut t = script();
        t.accept_established();
        t.send(SYN, 999, None, &[]);
        let c = t.recv_one();
        assert!(c.has(ACK) && !c.has(SYN));
        assert_eq!(c.ack, t.peer_seq);
        assert_eq!(t.state(), Some(S::Established));
    }

    #[test]
    fn three_duplicate_acks_go_back_n() {
        let mut t = script();
        t.accept_established();
        let data = vec![7u8; 1460 * 5];
        t.stream().write_all(&data).unwrap();
        let segs = t.recv();
        assert_eq!(segs.len(), 5);
        let una = t.engine_seq;
        // The first segment was "lost": the peer acknowledges nothing new, three times.
        for _ in 0..3 {
            let s = t.peer_seq;
            t.send(ACK, s, Some(una), &[]);
        }
        let re = t.recv();
        assert!(!re.is_empty());
        assert_eq!(re[0].seq, una, "retransmission starts at snd_una");
        let tot = t.engine.retransmissions();
        assert_eq!(tot.fast, 1);
    }

    #[test]
    fn timeout_retransmits_from_snd_una() {
        let mut t = script();
        t.accept_established();
        t.stream().write_all(b"lost").unwrap();
        let first = t.recv_one();
        t.advance(Duration::from_millis(1100));
        let re = t.recv_one();
        assert_eq!(re.seq, first.seq);
        assert_eq!(re.payload, b"lost");
        assert_eq!(t.engine.retransmissions().timeout, 1);
    }

    #[test]
    fn zero_window_is_probed_and_reopens() {
        let mut t = script();
        t.accept_established();
        let s = t.peer_seq;
        let a = t.engine_seq;
        let r = smoltcp::wire::TcpRepr {
            window_len: 0,
            ..t.repr(ACK, s, Some(a), &[])
        };
        t.send_repr(&r);
        t.stream().write_all(b"blocked").unwrap();
        t.recv_none();
        t.advance(Duration::from_millis(1100));
        let probe = t.recv_one();
        assert_eq!(
            probe.seq,
            t.engine_seq.wrapping_sub(1),
            "probe uses an old sequence number"
        );
        assert!(probe.payload.is_empty());
        t.send_ack();
        let d = t.recv_one();
        assert_eq!(d.payload, b"blocked");
        assert_eq!(t.engine.stats().control.probes, 1);
    }

    #[test]
    fn window_counts_from_the_ack_that_carried_it() {
        // The peer's pure ACKs run ahead of its retransmissions: a pure ACK carries
        // sequence number S+3000 (data the engine has not received yet), then the peer
        // retransmits from S with a newer acknowledgment and a smaller window. The newer
        // window must win, and nothing may be sent past ack + window.
        let mut t = script();
        t.accept_established();
        let (s, a) = (t.peer_seq, t.engine_seq);
        let ahead = smoltcp::wire::TcpRepr {
            window_len: 4000,
            ..t.repr(ACK, s.wrapping_add(3000), Some(a), &[])
        };
        t.send_repr(&ahead);
        t.recv();
        t.stream().write_all(&[7u8; 4000]).unwrap();
        let sent: usize = t.recv().iter().map(|x| x.payload.len()).sum();
        assert_eq!(sent, 4000, "a 4000-byte window is filled");
        // Two full segments (a shorter window would hold a short segment back:
        // silly-window avoidance).
        let newer = smoltcp::wire::TcpRepr {
            window_len: 2920,
            ..t.repr(ACK | PSH, s, Some(a.wrapping_add(4000)), b"retransmitted")
        };
        t.send_repr(&newer);
        t.stream().write_all(&[8u8; 8000]).unwrap();
        let segs = t.recv();
        let edge = a.wrapping_add(4000 + 2920);
        for x in &segs {
            let end = x.seq.wrapping_add(x.payload.len() as u32);
            assert!(
                (edge.wrapping_sub(end) as i32) >= 0,
                "segment {}..{end} passes the window edge {edge}",
                x.seq
            );
        }
        let more: usize = segs.iter().map(|x| x.payload.len()).sum();
        assert_eq!(more, 2920, "exactly the new window is used");
    }

    #[test]
    fn full_receive_buffer_closes_window_and_reading_reopens_it() {
        let mut t = script();
        t.accept_established();
        let chunk = vec![1u8; 1000];
        let mut last = None;
        for _ in 0..64 {
            t.send_data(&chunk);
            last = t.recv().pop().or(last);
        }
        assert_eq!(last.unwrap().win, 1536, "64 KiB ring minus 64000 bytes");
        let mut got = 0;
        while got < 64_000 {
            let n = t.app_read().len();
            assert!(n > 0);
            got += n;
        }
        let upd = t.recv_one();
        assert_eq!(
            upd.win,
            u16::MAX,
            "window update after the application read"
        );
    }

    /// The room every read made counts, however small: an application that read many small
    /// messages, then waits for one that fills nearly the whole ring before it reads again,
    /// gets all of it (room kept from the engine would leave the peer facing a closed window
    /// with nobody left to open it). The reads say nothing to the engine (no doorbell: the
    /// window stays wide, no update is due); the protocol stage reads the ring's tail when
    /// it takes a segment and when it advertises a window.
    #[test]
    fn small_reads_then_a_message_that_fills_the_ring() {
        let mut t = script();
        t.accept_established();
        let doorbells = t.engine.stats().doorbells;
        for _ in 0..40 {
            t.send_data(&[3u8; 100]);
            t.recv();
            assert_eq!(t.app_read().len(), 100);
        }
        assert_eq!(t.engine.stats().doorbells, doorbells, "no read rang");
        // 65,000 bytes of one message, none read until all are there.
        for _ in 0..65 {
            t.send_data(&[4u8; 1000]);
        }
        let ack = t.recv().pop().expect("an ACK");
        assert_eq!(ack.ack, t.peer_seq, "all of the message taken");
        // The protocol stage took the small reads' room into account: the message fit.
        assert_eq!(t.stream().readable_bytes(), 65_000);
        // A write after reads: the application's update and the segment it lets out go
        // through egress together, in one pass.
        let egress_bursts = |t: &Script| {
            let st = t.engine.stats();
            st.stages
                .iter()
                .find(|(n, _)| *n == "egress")
                .unwrap()
                .1
                .bursts
        };
        let mut got = 0;
        while got < 65_000 {
            got += t.app_read().len();
        }
        t.recv();
        let bursts = egress_bursts(&t);
        t.stream().write_all(b"response").unwrap();
        let seg = t.recv_one();
        assert_eq!(seg.payload, b"response");
        assert_eq!(seg.win, u16::MAX, "the whole ring again");
        assert_eq!(egress_bursts(&t), bursts + 1);
    }

    /// A write sends its first segment in its own result, without a grant (the scheduler
    /// would have given it at once: no other flow waits); what is left goes by grants, in
    /// order.
    #[test]
    fn a_write_sends_its_first_segment_without_a_grant() {
        let mut t = script();
        t.accept_established();
        let grants = t.engine.stats().grants;
        for msg in [&b"one"[..], b"two", b"three"] {
            t.stream().write_all(msg).unwrap();
            let seg = t.recv_one();
            assert_eq!(seg.payload, msg);
        }
        assert_eq!(t.engine.stats().grants, grants, "no grant for one segment");
        let big: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        t.stream().write_all(&big).unwrap();
        let segs = t.recv();
        assert!(segs.len() >= 3, "{} segments", segs.len());
        let sent: Vec<u8> = segs.iter().flat_map(|s| s.payload.clone()).collect();
        assert_eq!(sent, big, "every byte once, in order");
        // One grant per segment after the first: the results of a burst's grants settle
        // the requests made before them (none is left to grant a segment already sent).
        assert_eq!(
            t.engine.stats().grants - grants,
            segs.len() as u64 - 1,
            "the rest by grants, one each"
        );
        t.advance(Duration::from_millis(1));
        assert!(t.recv().is_empty(), "nothing more to send");
        assert_eq!(t.engine.stats().grants - grants, segs.len() as u64 - 1);
    }

    #[test]
    fn drop_with_unread_data_sends_rst() {
        let mut t = script();
        t.accept_established();
        t.send_data(b"unread");
        t.recv();
        t.stream = None;
        let r = t.recv_one();
        assert!(r.has(RST));
        assert_eq!(t.state(), None);
        assert_eq!(t.engine.flow_count(), 0);
    }
}

mod closing_states {
    use super::*;

    #[test]
    fn fin_wait_1_then_2_then_time_wait_then_gone() {
        let mut t = script();
        t.accept_established();
        t.stream().shutdown(std::net::Shutdown::Write).unwrap();
        let fin = t.recv_one();
        assert!(fin.has(FIN | ACK));
        assert_eq!(t.state(), Some(S::FinWait1));
        t.engine_seq = t.engine_seq.wrapping_add(1);
        t.send_ack();
        assert_eq!(t.state(), Some(S::FinWait2));
        let (s, a) = (t.peer_seq, t.engine_seq);
        t.send(FIN | ACK, s, Some(a), &[]);
        t.peer_seq += 1;
        let ack = t.recv_one();
        assert_eq!(ack.ack, t.peer_seq);
        assert_eq!(t.state(), Some(S::TimeWait));
        assert_eq!(t.stream().status(), ConnStatus::Closed);
        // A retransmitted FIN in TIME-WAIT is acknowledged again.
        t.send(FIN | ACK, s, Some(a), &[]);
        assert_eq!(t.recv_one().ack, t.peer_seq);
        t.advance(Duration::from_millis(1100));
        assert_eq!(t.state(), None);
        assert_eq!(t.engine.flow_count(), 0);
    }

    #[test]
    fn fin_wait_1_fin_and_ack_together_goes_to_time_wait() {
        let mut t = script();
        t.accept_established();
        t.stream().shutdown(std::net::Shutdown::Write).unwrap();
        t.recv_one();
        t.engine_seq = t.engine_seq.wrapping_add(1);
        let (s, a) = (t.peer_seq, t.engine_seq);
        t.send(FIN | ACK, s, Some(a), &[]);
        assert_eq!(t.state(), Some(S::TimeWait));
    }

    #[test]
    fn simultaneous_close_goes_through_closing() {
        let mut t = script();
        t.accept_established();
        t.stream().shutdown(std::net::Shutdown::Write).unwrap();
        let fin = t.recv_one();
        // The peer's FIN crosses ours: it does not acknowledge our FIN.
        let (s, a) = (t.peer_seq, fin.seq);
        t.send(FIN | ACK, s, Some(a), &[]);
        t.peer_seq += 1;
        assert_eq!(t.state(), Some(S::Closing));
        let ack = t.recv_one();
        assert_eq!(ack.ack, t.peer_seq);
        t.engine_seq = fin.seq.wrapping_add(1);
        t.send_ack();
        assert_eq!(t.state(), Some(S::TimeWait));
    }

    #[test]
    fn close_wait_then_last_ack_then_closed() {
        let mut t = script();
        t.accept_established();
        let (s, a) = (t.peer_seq, t.engine_seq);
        t.send(FIN | ACK, s, Some(a), &[]);
        t.peer_seq += 1;
        assert_eq!(t.recv_one().ack, t.peer_seq);
        assert_eq!(t.state(), Some(S::CloseWait));
        assert!(t.app_read().is_empty(), "end of stream");
        // Half-closed: we can still send.
        t.stream().write_all(b"bye").unwrap();
        let d = t.recv_one();
        assert_eq!(d.payload, b"bye");
        t.engine_seq = t.engine_seq.wrapping_add(3);
        t.send_ack();
        t.stream().shutdown(std::net::Shutdown::Write).unwrap();
        let fin = t.recv_one();
        assert!(fin.has(FIN));
        assert_eq!(t.state(), Some(S::LastAck));
        t.engine_seq = t.engine_seq.wrapping_add(1);
        t.send_ack();
        assert_eq!(t.state(), None);
        assert_eq!(t.engine.flow_count(), 0);
        assert_eq!(t.stream().status(), ConnStatus::Closed);
    }

    #[test]
    fn fin_is_retransmitted_until_acked() {
        let mut t = script();
        t.accept_established();
        t.stream().shutdown(std::net::Shutdown::Write).unwrap();
        let fin = t.recv_one();
        t.advance(Duration::from_millis(1100));
        let again = t.recv_one();
        assert!(again.has(FIN));
        assert_eq!(again.seq, fin.seq);
    }

    #[test]
    fn out_of_order_fin_waits_for_the_gap() {
        let mut t = script();
        t.accept_established();
        let (s, a) = (t.peer_seq, t.engine_seq);
        t.send(FIN | PSH | ACK, s + 3, Some(a), b"def");
        t.recv();
        assert_eq!(t.state(), Some(S::Established));
        t.send(PSH | ACK, s, Some(a), b"abc");
        let ack = t.recv_one();
        assert_eq!(ack.ack, s + 7);
        assert_eq!(t.state(), Some(S::CloseWait));
        assert_eq!(t.app_read(), b"abcdef");
    }

    #[test]
    fn rst_in_time_wait_ends_it() {
        let mut t = script();
        t.accept_established();
        t.stream().shutdown(std::net::Shutdown::Write).unwrap();
        t.recv_one();
        t.engine_seq = t.engine_seq.wrapping_add(1);
        let (s, a) = (t.peer_seq, t.engine_seq);
        t.send(FIN | ACK, s, Some(a), &[]);
        t.peer_seq += 1;
        t.recv();
        assert_eq!(t.state(), Some(S::TimeWait));
        let s = t.peer_seq;
        t.send(RST, s, None, &[]);
        assert_eq!(t.state(), None);
        assert_eq!(t.engine.flow_count(), 0);
    }
}
