//! Segments and work of an earlier connection with the flow's id (another incarnation).

use super::*;

/// A segment preprocess looked up for an earlier connection of the flow id (another
/// incarnation in its summary) is dropped as stale, its frame handed back: data at
/// RCV.NXT is not taken, an exact RST does not reset. The same segments of the flow's
/// own incarnation, or unchecked (0), are taken.
#[test]
fn segments_of_an_earlier_incarnation_of_the_flow_id_are_dropped() {
    let arena = Arc::new(FrameArena::new(64).unwrap());
    let mut proto = Protocol::new(arena.clone());
    proto.install(0, TcpState::new(&params(0)));
    let now = Instant::from_micros(1_000);
    let mut peer = peers();
    let run = |proto: &mut Protocol, mut work: Vec<ProtoWork>, incarnation: u8| {
        for w in &mut work {
            if let ProtoWork::Rx(w) = w {
                w.summary.incarnation = incarnation;
            }
        }
        process_all(proto, &arena, now, work)
    };
    let stale = |proto: &Protocol| proto.stats().drops.get(DropReason::StaleFlow);
    // Data of incarnation 2 for the flow of incarnation 1.
    let work = items(&arena, &[(0, Op::Data(500, false))], &mut peer, &proto);
    let before = proto.state(0).unwrap().clone();
    run(&mut proto, work, 2);
    assert_eq!(stale(&proto), 1);
    assert_eq!(proto.state(0).unwrap().rcv_nxt, before.rcv_nxt);
    // An exact RST of incarnation 2.
    let rst = |arena: &FrameArena, seq| {
        ProtoWork::Rx(RxWork {
            flow: 0,
            summary: SegmentSummary {
                seq,
                flags: flags::RST,
                payload_off: 54,
                ..SegmentSummary::default()
            },
            frame: arena.alloc_copy(&[0u8; 54]).unwrap(),
        })
    };
    let a = run(&mut proto, vec![rst(&arena, before.rcv_nxt)], 2);
    assert!(!a.any(Actions::RST_RX));
    assert_eq!(stale(&proto), 2);
    // The same data, unchecked (0), then of the flow's own incarnation: taken.
    peer[0].next = PEER_ISS;
    let work = items(&arena, &[(0, Op::Data(500, false))], &mut peer, &proto);
    run(&mut proto, work, 0);
    let work = items(&arena, &[(0, Op::Data(500, false))], &mut peer, &proto);
    run(&mut proto, work, 1);
    assert_eq!(stale(&proto), 2);
    let rcv_nxt = proto.state(0).unwrap().rcv_nxt;
    assert_eq!(rcv_nxt, before.rcv_nxt.wrapping_add(1000));
    // And the flow's own exact RST resets it.
    let a = run(&mut proto, vec![rst(&arena, rcv_nxt)], 1);
    assert!(a.any(Actions::RST_RX));
    assert_eq!(stale(&proto), 2);
    // A connection installed without an incarnation (0) checks nothing.
    let mut unchecked = Protocol::new(arena.clone());
    unchecked.install(
        0,
        TcpState::new(&TcpParams {
            incarnation: 0,
            ..params(0)
        }),
    );
    peer[0].next = PEER_ISS;
    let work = items(&arena, &[(0, Op::Data(500, false))], &mut peer, &unchecked);
    run(&mut unchecked, work, 5);
    assert_eq!(stale(&unchecked), 0);
    assert_eq!(
        unchecked.state(0).unwrap().rcv_nxt,
        before.rcv_nxt.wrapping_add(500)
    );
    assert_eq!(arena.free_frames(), 64);
}

/// Work the control plane or the application made for an earlier connection of the flow
/// id (another incarnation in the item) is dropped, counted, and changes nothing: a reset,
/// a freeze, a close, a retransmission timeout, a thaw or a close of a frozen flow. The
/// same work of the flow's own incarnation, or unchecked (0), is done.
#[test]
fn work_made_for_an_earlier_incarnation_of_the_flow_id_is_dropped() {
    let arena = Arc::new(FrameArena::new(64).unwrap());
    let mut proto = Protocol::new(arena.clone());
    proto.install(0, TcpState::new(&params(0)));
    let now = Instant::from_micros(1_000);
    let mut peer = peers();
    // Data in flight, so that a timeout has something to send.
    let mut tx = Vec::new();
    for op in [Op::App(1000, 0), Op::Tx] {
        tx.extend(items(&arena, &[(0, op)], &mut peer, &proto));
        process_all(&mut proto, &arena, now, std::mem::take(&mut tx));
    }
    assert!(proto.state(0).unwrap().snd_nxt != proto.state(0).unwrap().snd_una);
    let stale = |proto: &Protocol| proto.stats().drops.get(DropReason::StaleFlow);
    let kinds = |incarnation: u8| {
        vec![
            ProtoWork::Reset {
                flow: 0,
                incarnation,
            },
            ProtoWork::Freeze {
                flow: 0,
                incarnation,
            },
            ProtoWork::App {
                flow: 0,
                positions: None,
                fin: true,
                closed: true,
                incarnation,
            },
            ProtoWork::Retransmit {
                flow: 0,
                incarnation,
            },
        ]
    };
    // The result of a dropped item only reports the flow's counters, with the flow's
    // stamp (placement takes it as the flow's and counts no second drop); nothing else of
    // the state moves.
    let same = |proto: &Protocol, before: &TcpState, r: &ProtoResult| {
        let mut st = proto.state(0).unwrap().clone();
        assert_eq!(r.stamp, st.stamp);
        assert_eq!(r.stamp >> 24, 1);
        assert_eq!(r.actions.0 & !Actions::PEER_WINDOW_ZERO, 0, "{r:?}");
        st.stamp = before.stamp;
        assert_eq!(&st, before);
    };
    let before = proto.state(0).unwrap().clone();
    for (i, w) in kinds(2).into_iter().enumerate() {
        let r = proto.handle(now, w);
        same(&proto, &before, &r);
        assert_eq!(stale(&proto), i as u64 + 1);
    }
    // Frozen (for a splice), a thaw of another incarnation leaves it frozen.
    let freeze_thaw = |incarnation| {
        (
            ProtoWork::Freeze {
                flow: 0,
                incarnation,
            },
            ProtoWork::Thaw {
                flow: 0,
                incarnation,
            },
        )
    };
    let a = process_all(&mut proto, &arena, now, vec![freeze_thaw(1).0]);
    assert!(a.any(Actions::FROZEN), "{a:?}");
    let frozen = proto.state(0).unwrap().clone();
    assert!(frozen.has(F_FROZEN));
    let r = proto.handle(now, freeze_thaw(2).1);
    same(&proto, &frozen, &r);
    assert_eq!(stale(&proto), 5);
    // Nor does a close of another incarnation wait for the thaw.
    let close = kinds(2).swap_remove(2);
    assert!(matches!(close, ProtoWork::App { closed: true, .. }));
    let r = proto.handle(now, close);
    same(&proto, &frozen, &r);
    assert!(proto.state(0).unwrap().frozen_app.is_none());
    assert_eq!(stale(&proto), 6);
    process_all(&mut proto, &arena, now, vec![freeze_thaw(1).1]);
    assert!(!proto.state(0).unwrap().has(F_FROZEN), "thawed");
    // The flow's own incarnation, and unchecked: a timeout resends, a reset resets.
    let [reset, _, _, timeout] = <[ProtoWork; 4]>::try_from(kinds(1)).unwrap();
    let a = process_all(&mut proto, &arena, now, vec![timeout]);
    assert!(a.any(Actions::TIMEOUT_RETRANSMIT), "{a:?}");
    let [_, _, _, timeout] = <[ProtoWork; 4]>::try_from(kinds(0)).unwrap();
    let a = process_all(&mut proto, &arena, now, vec![timeout]);
    assert!(a.any(Actions::TIMEOUT_RETRANSMIT), "{a:?}");
    let a = process_all(&mut proto, &arena, now, vec![reset]);
    assert!(a.any(Actions::RST_TX), "{a:?}");
    assert_eq!(stale(&proto), 6);
    assert_eq!(arena.in_use(), 0);
}
