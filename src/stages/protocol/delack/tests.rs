//! The protocol stage's delayed-ACK decisions, through the burst loop and postprocess.

use super::super::burst::tests::{items, params, postprocess, run, Op, Peer, FLOWS, PEER_ISS};
use super::*;
use std::time::Duration;

/// A protocol stage taking delayed ACKs (coalescing ACK headers, as the engines run it),
/// its postprocess, and the peers of its flows.
struct Side {
    arena: Arc<FrameArena>,
    proto: Protocol,
    post: crate::stages::postprocess::Postprocess,
    peers: [Peer; FLOWS as usize],
    now: u64,
}

impl Side {
    /// Flows of this MSS, with a receive ring large enough that the window never closes.
    fn new(mss: u16) -> Self {
        let arena = Arc::new(FrameArena::new(256).unwrap());
        let delayed = AckPolicy::delayed(Duration::from_millis(5));
        let mut proto = Protocol::new(arena.clone()).with_ack_policy(delayed);
        for id in 0..FLOWS {
            proto.install(
                id,
                TcpState::new(&TcpParams {
                    mss,
                    rx_cap: 1 << 20,
                    ..params(0)
                }),
            );
        }
        Side {
            post: postprocess(&arena, delayed),
            arena,
            proto,
            peers: [Peer {
                next: PEER_ISS,
                ts: 10,
                fin: false,
            }; FLOWS as usize],
            now: 1_000,
        }
    }

    /// Run one burst; what went out: (result index, flow, header).
    fn burst(&mut self, script: &[(u32, Op)]) -> Vec<(usize, FlowId, TxHeader)> {
        self.now += 10;
        let work = items(&self.arena, script, &mut self.peers, &self.proto);
        let (sent, _) = run(
            &self.arena,
            &mut self.proto,
            &mut self.post,
            Instant::from_micros(self.now),
            work,
        );
        sent
    }

    /// Bursts of one in-order segment each of these sizes: whether each drew an ACK.
    fn lone_segments(&mut self, sizes: &[u16]) -> Vec<bool> {
        sizes
            .iter()
            .map(|&n| !self.burst(&[(0, Op::Data(n, false))]).is_empty())
            .collect()
    }
}

/// What each policy asks of the protocol stage's ACK headers.
#[test]
fn the_ack_policy_sets_coalescing_and_delayed_acks() {
    let arena = Arc::new(FrameArena::new(8).unwrap());
    for (policy, coalescing, delayed) in [
        (AckPolicy::EverySegment, false, false),
        (AckPolicy::PerBurst, true, false),
        (AckPolicy::delayed(Duration::from_millis(5)), true, true),
    ] {
        let p = Protocol::new(arena.clone()).with_ack_policy(policy);
        assert_eq!(
            (p.ack_coalescing(), p.delayed_acks()),
            (coalescing, delayed),
            "{policy:?}"
        );
    }
}

/// A lone full-sized segment waits; the next one's ACK goes at once and acknowledges both.
#[test]
fn every_second_full_segment_is_acknowledged() {
    let mut s = Side::new(1000);
    assert_eq!(
        s.lone_segments(&[1000; 6]),
        [false, true, false, true, false, true]
    );
    let st = s.proto.state(0).unwrap();
    assert_eq!(st.rcv_nxt, PEER_ISS + 6000);
    assert_eq!(st.delack_seq, st.rcv_nxt, "nothing unacknowledged");
    // The ACK that went acknowledges all of it.
    let sent = s.burst(&[(0, Op::Data(1000, false)), (0, Op::Data(1000, false))]);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].2.ack, PEER_ISS + 8000);
}

/// Small segments are counted in bytes: the ACK goes once more than one full-sized segment
/// is unacknowledged (16 x 64 = 1024 > 1000), as Linux and smoltcp count. In one burst:
/// one ACK at most, on the segment where the count passes, the last of the flow's run.
#[test]
fn small_segments_are_acknowledged_once_a_full_segment_is_passed() {
    let mut s = Side::new(1000);
    let drew = s.lone_segments(&[64; 40]);
    let at: Vec<usize> = (0..40).filter(|&i| drew[i]).collect();
    assert_eq!(at, [15, 31]);
    let mut s = Side::new(1000);
    assert!(s.burst(&[(0, Op::Data(64, false)); 10]).is_empty());
    let sent = s.burst(&[(0, Op::Data(64, false)); 6]);
    assert_eq!(sent.iter().map(|x| x.0).collect::<Vec<_>>(), [5]);
    assert_eq!(sent[0].2.ack, PEER_ISS + 16 * 64);
}

/// The full-sized segment is the flow's MSS (536 here), raised to the largest in-order
/// payload seen: a peer whose segments are larger than this side's MSS still gets an ACK
/// every second one, not every one.
#[test]
fn the_full_segment_follows_the_mss_and_the_largest_segment_seen() {
    let mut s = Side::new(536);
    // 600 > 536 at the second; 1072 at the fourth; the first 1448 raises the full
    // segment to 1448, so it waits for its second.
    assert_eq!(
        s.lone_segments(&[300, 300, 536, 536, 1448, 1448, 1448, 1448]),
        [false, true, false, true, false, true, false, true]
    );
}

/// Two segments in a row of one smaller size (at least 536 bytes) lower the full-sized
/// segment to theirs: a peer whose path MTU fell below this side's MSS gets an ACK every
/// second segment again (it got one every seventh, or only from the timer when its window
/// held fewer). Smaller segments, the ends of writes, lower nothing.
#[test]
fn two_smaller_segments_in_a_row_lower_the_full_segment() {
    let mut s = Side::new(8948);
    assert_eq!(
        s.lone_segments(&[1448; 6]),
        [false, true, false, true, false, true]
    );
    assert_eq!(s.proto.state(0).unwrap().delack_full, 1448);
    let mut s = Side::new(1448);
    assert_eq!(
        s.lone_segments(&[400, 400, 400, 400]),
        [false, false, false, true]
    );
    assert_eq!(s.proto.state(0).unwrap().delack_full, 1448);
    // Different sizes in a row lower nothing.
    let mut s = Side::new(8948);
    s.lone_segments(&[1000, 1200, 1000, 1200]);
    assert_eq!(s.proto.state(0).unwrap().delack_full, 8948);
}

/// Every in-order segment raises the full size, not only the one that decides: where the
/// bursts split a flow's segments (which the threaded runtime's replicas may do) does not
/// change it.
#[test]
fn a_large_segment_inside_a_run_raises_the_full_segment() {
    let mut s = Side::new(536);
    let sent = s.burst(&[(0, Op::Data(700, false)), (0, Op::Data(10, false))]);
    assert_eq!(sent.iter().map(|x| x.0).collect::<Vec<_>>(), [1]);
    assert_eq!(s.proto.state(0).unwrap().delack_full, 700);
    // 600 unacknowledged: past the MSS, not past the largest segment.
    assert_eq!(s.lone_segments(&[300, 300, 300]), [false, false, true]);
}

/// A flow's run of segments in a burst is decided at its last: two full segments draw one
/// ACK there; when the run's ACK waits, none of its segments' ACKs goes. A flow with two
/// runs in one burst is decided at the end of each.
#[test]
fn a_runs_acks_go_or_wait_together() {
    let mut s = Side::new(1000);
    let sent = s.burst(&[(0, Op::Data(1000, false)); 3]);
    assert_eq!(sent.iter().map(|x| x.0).collect::<Vec<_>>(), [2]);
    assert!(s.burst(&[(0, Op::Data(300, false)); 2]).is_empty());
    // Flow 0: its first run (300 + 300 before, and 300) waits, its second passes 1000;
    // flow 1's one segment waits.
    let sent = s.burst(&[
        (0, Op::Data(300, false)),
        (1, Op::Data(1000, false)),
        (0, Op::Data(300, false)),
    ]);
    assert_eq!(
        sent.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(),
        [(2, 0)]
    );
    assert_eq!(sent[0].2.ack, PEER_ISS + 3000 + 1200);
}

/// A run ended by a segment without ACK flag (dropped, it changes nothing) is decided at
/// its last data segment: a lone full segment still waits, the second still goes. A FIN
/// ending a run is acknowledged at once, with the run's data.
#[test]
fn a_run_ended_by_a_dropped_segment_or_a_fin_is_decided_alike() {
    let mut s = Side::new(1000);
    assert!(s
        .burst(&[(0, Op::Data(1000, false)), (0, Op::NoAck(50))])
        .is_empty());
    let sent = s.burst(&[(0, Op::Data(1000, false)), (0, Op::NoAck(50))]);
    assert_eq!(sent.iter().map(|x| x.0).collect::<Vec<_>>(), [0]);
    assert_eq!(sent[0].2.ack, PEER_ISS + 2000);
    let st = s.proto.state(0).unwrap();
    assert_eq!(st.delack_seq, st.rcv_nxt, "nothing unacknowledged");
    assert!(s
        .burst(&[(0, Op::Data(300, false)), (0, Op::NoAck(20))])
        .is_empty());
    let sent = s.burst(&[(0, Op::Data(300, false)), (0, Op::Fin(0))]);
    assert_eq!(sent.iter().map(|x| x.0).collect::<Vec<_>>(), [1]);
    assert_eq!(sent[0].2.ack, PEER_ISS + 2600 + 1, "the data and the FIN");
}

/// A segment of ours that goes anyway (a response) carries the ACK: the count starts
/// again, and the next lone segment waits. Out-of-order data is acknowledged at once.
#[test]
fn a_response_carries_the_ack_and_out_of_order_data_is_acknowledged_at_once() {
    let mut s = Side::new(1000);
    assert!(s.burst(&[(0, Op::Data(800, false))]).is_empty());
    let sent = s.burst(&[(0, Op::App(100, 8)), (0, Op::Tx)]);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].2.payload_len, 100, "the response");
    assert_eq!(sent[0].2.ack, PEER_ISS + 800, "it carries the ACK");
    let st = s.proto.state(0).unwrap();
    assert_eq!(st.delack_seq, st.rcv_nxt, "nothing unacknowledged");
    // 800 + 800 would have passed 1000 without the response.
    assert!(s.burst(&[(0, Op::Data(800, false))]).is_empty());
    let sent = s.burst(&[(0, Op::Ahead(100, 50))]);
    assert_eq!(sent.len(), 1, "a duplicate ACK at once");
    assert_eq!(sent[0].2.ack, PEER_ISS + 1600);
    let st = s.proto.state(0).unwrap();
    assert_eq!(st.delack_seq, st.rcv_nxt, "nothing unacknowledged");
    // Every frame came back (postprocess keeps a few in its cache until dropped).
    let Side { arena, post, .. } = s;
    drop(post);
    assert_eq!(arena.free_frames(), 256);
}
