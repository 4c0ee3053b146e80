//! A flow frozen for a splice: what it drops, what it reports, what it still sends.

use super::*;

/// A frozen flow (its state on its way to the control plane) drops its segments,
/// counted, and hands their frames back; a segment for a flow id with no flow is a stale
/// drop; after the thaw the data is taken when it comes again; frozen again, the flow's
/// exact RST still goes through and resets it.
#[test]
fn a_frozen_flow_drops_segments_returns_their_frames_and_lets_a_reset_through() {
    let arena = Arc::new(FrameArena::new(64).unwrap());
    let mut proto = Protocol::new(arena.clone());
    proto.install(0, TcpState::new(&params(0)));
    let now = Instant::from_micros(1_000);
    let mut peer = peers();
    // Every frame a result hands back is freed: a frame lost on any path stays in use.
    let run = |proto: &mut Protocol, work: Vec<ProtoWork>| {
        let actions = process_all(proto, &arena, now, work);
        assert_eq!(arena.in_use(), 0, "every frame came back");
        actions
    };
    let frozen = |proto: &Protocol| proto.stats().drops.get(DropReason::Frozen);
    run(
        &mut proto,
        vec![ProtoWork::Freeze {
            flow: 0,
            incarnation: 0,
        }],
    );
    let before = proto.state(0).unwrap().rcv_nxt;
    // Data for the frozen flow: dropped, counted, its frames back.
    let work = items(
        &arena,
        &[(0, Op::Data(500, false)), (0, Op::Data(300, false))],
        &mut peer,
        &proto,
    );
    let a = run(&mut proto, work);
    assert_eq!(frozen(&proto), 2);
    assert!(a.any(Actions::RECEIVED) && !a.any(Actions::TX));
    assert_eq!(proto.state(0).unwrap().rcv_nxt, before);
    // A segment for a flow id with no flow: a stale drop, its frame back.
    let stale = proto.stats().drops.get(DropReason::StaleFlow);
    let orphan = ProtoWork::Rx(RxWork {
        flow: 1,
        summary: SegmentSummary {
            seq: PEER_ISS,
            flags: flags::ACK,
            payload_off: 54,
            ..SegmentSummary::default()
        },
        frame: arena.alloc_copy(&[0u8; 54]).unwrap(),
    });
    run(&mut proto, vec![orphan]);
    assert_eq!(proto.stats().drops.get(DropReason::StaleFlow), stale + 1);
    // After the thaw, the data that was dropped is taken when it comes again.
    run(
        &mut proto,
        vec![ProtoWork::Thaw {
            flow: 0,
            incarnation: 0,
        }],
    );
    peer[0].next = PEER_ISS;
    let work = items(&arena, &[(0, Op::Data(500, false))], &mut peer, &proto);
    run(&mut proto, work);
    assert_eq!(proto.state(0).unwrap().rcv_nxt, before.wrapping_add(500));
    assert_eq!(frozen(&proto), 2);
    // Frozen again, the flow's exact RST goes through and resets it.
    run(
        &mut proto,
        vec![ProtoWork::Freeze {
            flow: 0,
            incarnation: 0,
        }],
    );
    let rst = ProtoWork::Rx(RxWork {
        flow: 0,
        summary: SegmentSummary {
            seq: before.wrapping_add(500),
            flags: flags::RST,
            payload_off: 54,
            incarnation: 1,
            ..SegmentSummary::default()
        },
        frame: arena.alloc_copy(&[0u8; 54]).unwrap(),
    });
    let a = run(&mut proto, vec![rst]);
    assert!(a.any(Actions::RST_RX));
    assert_eq!(frozen(&proto), 2);
}

/// Process `work`, give back every frame its results hand back, and return the first result
/// with any of `actions`.
fn result_with(
    proto: &mut Protocol,
    arena: &FrameArena,
    now: Instant,
    mut work: Vec<ProtoWork>,
    actions: u32,
) -> ProtoResult {
    let mut results = Vec::new();
    proto.process(now, &mut work, &mut results);
    for r in &mut results {
        for f in [r.rx_frame.take(), r.tx_frame.take()].into_iter().flatten() {
            arena.free(f);
        }
    }
    results
        .into_iter()
        .find(|r| r.actions.any(actions))
        .expect("a result with those actions")
}

/// A flow frozen for a splice reports the window it last offered, as its window field gives
/// it (rounded up to the scale): the splice judges a FIN or RST that comes before the other
/// side's first ACK against that, not against the most any window could be. It also
/// reports whether it holds data it SACKed.
#[test]
fn a_frozen_flow_reports_its_window_and_what_it_sacked() {
    let arena = Arc::new(FrameArena::new(64).unwrap());
    let now = Instant::from_micros(1_000);
    let freeze = || {
        vec![ProtoWork::Freeze {
            flow: 0,
            incarnation: 0,
        }]
    };
    for shift in [0u8, 2, 7] {
        let mut proto = Protocol::new(arena.clone());
        proto.install(0, TcpState::new(&params(shift)));
        let work = items(&arena, &[(0, Op::Data(500, false))], &mut peers(), &proto);
        process_all(&mut proto, &arena, now, work);
        let st = proto.state(0).unwrap();
        let offered = st.rcv_adv.wrapping_sub(st.rcv_nxt);
        assert!(offered > 0 && offered <= 6000, "{offered}");
        let r = result_with(&mut proto, &arena, now, freeze(), Actions::FROZEN);
        let window = u32::from(r.hdr.win) << shift;
        assert!(
            window >= offered && window < offered + (1 << shift),
            "shift {shift}: {window} for {offered}"
        );
        assert!(r.hdr.sack.is_empty(), "nothing held out of order");
    }
    // Data held past a gap, SACKed to the peer: the report says so (the control plane
    // refuses the splice as not quiet: the splice would drop that data, and the peer would
    // send it again only after a timeout).
    let mut proto = Protocol::new(arena.clone());
    proto.install(0, TcpState::new(&params(0)));
    let work = items(&arena, &[(0, Op::Ahead(100, 200))], &mut peers(), &proto);
    process_all(&mut proto, &arena, now, work);
    let r = result_with(&mut proto, &arena, now, freeze(), Actions::FROZEN);
    assert!(!r.hdr.sack.is_empty(), "{:?}", r.hdr.sack);
    assert_eq!(arena.in_use(), 0);
}

/// What a frozen flow still sends (a challenge ACK to an in-window RST, the ACK its
/// delayed-ACK timer owes) offers no more than the window it reported at the freeze, though
/// the application read since: the splice takes the peer to send within the reported window
/// until the other side's first ACK, and the peer's data past it stuck the splice's numbers.
/// The ring's read bell stays where the freeze's window set it: the application's read
/// there still rings, and the update it asks for goes at the thaw. (The ACK the timer owed
/// was dropped: the peer's data waited for its retransmission timeout.)
#[test]
fn a_frozen_flow_sends_acks_within_the_window_it_reported() {
    let arena = Arc::new(FrameArena::new(64).unwrap());
    let now = Instant::from_micros(1_000_000);
    let mut proto = Protocol::new(arena.clone());
    let mut st = TcpState::new(&params(0));
    let (mut writer, mut reader) = crate::buf::byte_ring(8192);
    st.watch_rx(writer.observer());
    proto.install(0, st);
    let ops = [(0, Op::Data(1000, false)); 4];
    let work = items(&arena, &ops, &mut peers(), &proto);
    process_all(&mut proto, &arena, now, work);
    assert_eq!(writer.push(&[7; 4000]), 4000);
    let freeze = vec![ProtoWork::Freeze {
        flow: 0,
        incarnation: 0,
    }];
    let reported = result_with(&mut proto, &arena, now, freeze, Actions::FROZEN)
        .hdr
        .win;
    assert_eq!(reported, 2000, "the ring holds 4000 unread bytes of 6000");
    // The application reads a quarter while the flow is frozen (short of its read bell).
    assert_eq!(reader.pop(&mut [0; 1000]), 1000);
    assert!(!reader.read_bell_due());
    let rcv_nxt = proto.state(0).unwrap().rcv_nxt;
    let rst = ProtoWork::Rx(RxWork {
        flow: 0,
        summary: SegmentSummary {
            seq: rcv_nxt.wrapping_add(10),
            flags: flags::RST,
            payload_off: 54,
            incarnation: 1,
            ..SegmentSummary::default()
        },
        frame: arena.alloc_copy(&[0u8; 54]).unwrap(),
    });
    let challenge = result_with(&mut proto, &arena, now, vec![rst], Actions::CHALLENGE_ACK);
    assert_eq!(challenge.hdr.win, reported);
    let ack = vec![ProtoWork::Ack {
        flow: 0,
        incarnation: 0,
    }];
    let ack = result_with(&mut proto, &arena, now, ack, Actions::ACK_NOW);
    assert!(ack.actions.any(Actions::TX), "the owed ACK goes");
    assert_eq!(ack.hdr.win, reported);
    // Another thousand reach the bell the freeze's window set: the application rings, and
    // its update waits for the thaw, which offers the ring's free 4000 bytes.
    assert_eq!(reader.pop(&mut [0; 1000]), 1000);
    assert!(
        reader.read_bell_due(),
        "the bell stayed where the freeze's window set it"
    );
    let tx_head = proto.state(0).unwrap().tx_app_end;
    let app = ProtoWork::App {
        flow: 0,
        positions: Some((tx_head, 2000)),
        fin: false,
        closed: false,
        incarnation: 0,
    };
    let mut work = vec![app];
    proto.process(now, &mut work, &mut Vec::new());
    let work = vec![ProtoWork::Thaw {
        flow: 0,
        incarnation: 0,
    }];
    let update = result_with(&mut proto, &arena, now, work, Actions::TX);
    assert_eq!(update.hdr.win, 4000);
    // Frozen again and reset by the peer's exact RST: the timer's ACK no longer goes.
    let freeze = vec![ProtoWork::Freeze {
        flow: 0,
        incarnation: 0,
    }];
    result_with(&mut proto, &arena, now, freeze, Actions::FROZEN);
    let rst = ProtoWork::Rx(RxWork {
        flow: 0,
        summary: SegmentSummary {
            seq: rcv_nxt,
            flags: flags::RST,
            payload_off: 54,
            incarnation: 1,
            ..SegmentSummary::default()
        },
        frame: arena.alloc_copy(&[0u8; 54]).unwrap(),
    });
    result_with(&mut proto, &arena, now, vec![rst], Actions::RST_RX);
    let a = process_all(
        &mut proto,
        &arena,
        now,
        vec![ProtoWork::Ack {
            flow: 0,
            incarnation: 0,
        }],
    );
    assert!(!a.any(Actions::TX), "nothing after the reset");
    assert_eq!(arena.in_use(), 0);
}
