//! Loss recovery and the timers around it, one test per behaviour, against a scripted peer:
//! SACK in both directions (RFC 2018), fast recovery that resends only the holes
//! (RFC 6675), NewReno partial ACKs (RFC 6582), limited transmit (RFC 3042), tail-loss
//! probes (RFC 8985), Karn's backoff (RFC 6298), the persist timer and zero-window ACKs
//! (RFC 9293 3.8.6.1, 3.10.7.4), and a RST for data after the application closed.

mod common;

use std::io::Write;
use std::time::Duration;

use common::script::*;
use flextoe::control::TcpConnState;
use flextoe::stats::DropReason;
use flextoe::wire::flags::*;
use smoltcp::wire::TcpRepr;

const MSS: u32 = 1460;

/// A passive open; the peer's SYN offers SACK-permitted when `sack`.
fn established(cfg: flextoe::pipeline::EngineConfig, sack: bool) -> Script {
    let mut t = Script::new(cfg);
    let syn = TcpRepr {
        sack_permitted: sack,
        ..t.repr(SYN, PEER_ISS, None, &[])
    };
    let sa = t.accept_with(&syn);
    assert_eq!(sa.sack_permitted, sack, "SACK-permitted answered in kind");
    t
}

/// The peer acknowledges `ack` with SACK blocks (and window `win`).
fn ack_with(t: &mut Script, ack: u32, blocks: &[(u32, u32)], win: u16) {
    let mut ranges = [None; 3];
    for (i, b) in blocks.iter().enumerate() {
        ranges[i] = Some(*b);
    }
    let r = TcpRepr {
        sack_ranges: ranges,
        window_len: win,
        ..t.repr(ACK, t.peer_seq, Some(ack), &[])
    };
    t.send_repr(&r);
}

/// Sequence numbers of the data segments the engine sent since the last look.
fn data_seqs(t: &mut Script) -> Vec<u32> {
    data_segments(t).into_iter().map(|(s, _)| s).collect()
}

/// The data segments the engine sent since the last look: where each starts and ends.
fn data_segments(t: &mut Script) -> Vec<(u32, u32)> {
    t.recv()
        .iter()
        .filter(|s| !s.payload.is_empty())
        .map(|s| (s.seq, s.seq.wrapping_add(s.payload.len() as u32)))
        .collect()
}

fn write(t: &mut Script, segments: u32) {
    let data = vec![7u8; (segments * MSS) as usize];
    t.stream().write_all(&data).unwrap();
}

/// Writes `segments`, lets the first flight (up to ten) go unacknowledged until the
/// retransmission timeout, and checks that it sends the first segment again; returns where
/// the data starts.
fn timed_out(t: &mut Script, segments: u32) -> u32 {
    write(t, segments);
    let base = t.engine_seq;
    assert_eq!(data_seqs(t).len(), segments.min(10) as usize);
    t.advance(Duration::from_millis(1050));
    assert_eq!(
        data_seqs(t),
        vec![base],
        "the timeout sends the first again"
    );
    base
}

#[test]
fn sack_is_negotiated_and_out_of_order_data_is_reported_in_sack_blocks() {
    let mut t = established(config(), true);
    let hole = t.peer_seq;
    // Two segments beyond a 100-byte hole: each ACK reports the blocks, the latest first.
    let (a, b) = (hole + 100, hole + 400);
    t.send(PSH | ACK, a, Some(t.engine_seq), &[1u8; 200]);
    let ack = t.recv_one();
    assert_eq!(ack.ack, hole);
    assert_eq!(ack.sack, vec![(a, a + 200)]);
    t.send(PSH | ACK, b, Some(t.engine_seq), &[2u8; 100]);
    let ack = t.recv_one();
    assert_eq!(ack.sack, vec![(b, b + 100), (a, a + 200)]);
    // The hole fills: the blocks merge into the cumulative ACK and disappear.
    t.send(PSH | ACK, hole, Some(t.engine_seq), &[0u8; 100]);
    let ack = t.recv_one();
    assert_eq!(ack.ack, a + 200);
    assert_eq!(ack.sack, vec![(b, b + 100)]);

    // A peer that does not offer SACK gets neither the option nor blocks.
    let mut t = established(config(), false);
    let hole = t.peer_seq;
    t.send(PSH | ACK, hole + 100, Some(t.engine_seq), &[1u8; 200]);
    assert!(t.recv_one().sack.is_empty());
}

/// Segments 0 and 4 of 10 are lost. Today's go-back-N sent all ten again; fast recovery
/// with the peer's SACK blocks sends exactly the two holes.
#[test]
fn fast_recovery_retransmits_only_the_sack_holes() {
    let mut t = established(config(), true);
    write(&mut t, 10);
    let base = t.engine_seq;
    let seg = |i: u32| base + i * MSS;
    assert_eq!(data_seqs(&mut t), (0..10).map(seg).collect::<Vec<_>>());
    ack_with(&mut t, base, &[(seg(1), seg(4))], 65535);
    assert_eq!(data_seqs(&mut t), vec![seg(0)], "the first hole, at once");
    ack_with(&mut t, base, &[(seg(5), seg(10)), (seg(1), seg(4))], 65535);
    assert_eq!(data_seqs(&mut t), vec![seg(4)], "then the other hole only");
    ack_with(&mut t, seg(10), &[], 65535);
    assert!(data_seqs(&mut t).is_empty());
    let r = t.engine.retransmissions();
    assert_eq!((r.fast, r.recovery, r.timeout), (1, 2, 0), "{r:?}");
    t.advance(Duration::from_secs(3));
    assert!(data_seqs(&mut t).is_empty(), "nothing left to time out");
}

/// A SACK block that starts past what was sent and runs 2^31 bytes on passes each bound
/// checked alone (its left edge is above SND.UNA, its right edge "below" SND.MAX by
/// sequence arithmetic): once believed, about 2 GiB counted as SACKed started a recovery
/// on every ACK and took the congestion window out of the sender's limits.
#[test]
fn a_sack_block_past_what_was_sent_is_not_believed() {
    let mut t = established(config(), true);
    write(&mut t, 10);
    let base = t.engine_seq;
    let max = base + 10 * MSS;
    assert_eq!(data_seqs(&mut t).len(), 10);
    for _ in 0..3 {
        let far = (max + 1, (max + 1).wrapping_add(0x8000_0000));
        ack_with(&mut t, base, &[far], 65535);
        assert!(data_seqs(&mut t).is_empty(), "nothing resent");
    }
    ack_with(&mut t, max, &[], 65535);
    write(&mut t, 4);
    assert_eq!(data_seqs(&mut t).len(), 4);
    ack_with(&mut t, max + 4 * MSS, &[], 65535);
    assert!(data_seqs(&mut t).is_empty());
    let r = t.engine.retransmissions();
    assert_eq!((r.fast, r.recovery, r.timeout), (0, 0, 0), "{r:?}");
}

/// With SACK, an ACK that SACKs nothing new is no duplicate ACK (RFC 6675 section 2): three
/// ACKs carrying only a D-SACK (the peer got an old segment twice), or no blocks at all,
/// start no recovery.
#[test]
fn acks_with_no_new_sack_information_start_no_recovery() {
    let mut t = established(config(), true);
    write(&mut t, 10);
    let base = t.engine_seq;
    let max = base + 10 * MSS;
    assert_eq!(data_seqs(&mut t).len(), 10);
    for blocks in [&[(base - 1, base)][..], &[]] {
        for _ in 0..3 {
            ack_with(&mut t, base, blocks, 65535);
        }
        assert!(
            data_seqs(&mut t).is_empty(),
            "nothing resent for {blocks:?}"
        );
    }
    // Blocks that SACK new bytes still are: the hole below them goes at once.
    ack_with(&mut t, base, &[(base + MSS, base + 4 * MSS)], 65535);
    assert_eq!(data_seqs(&mut t), vec![base]);
    ack_with(&mut t, max, &[], 65535);
    let r = t.engine.retransmissions();
    assert_eq!((r.fast, r.timeout), (1, 0), "{r:?}");
}

/// With SACK, an ACK that SACKs new bytes is a duplicate ACK even when it carries data (RFC
/// 6675 section 2: a peer that sends as well as receives): three such segments, each SACKing
/// a byte more, start a recovery that resends the hole at SND.UNA.
#[test]
fn data_segments_with_new_sack_blocks_are_duplicate_acks() {
    let mut t = established(config(), true);
    write(&mut t, 10);
    let base = t.engine_seq;
    assert_eq!(data_seqs(&mut t).len(), 10);
    let at = base + 5 * MSS;
    for k in 1..=3 {
        let mut ranges = [None; 3];
        ranges[0] = Some((at, at + k));
        let r = TcpRepr {
            sack_ranges: ranges,
            ..t.repr(PSH | ACK, t.peer_seq, Some(base), &[5u8; 10])
        };
        t.send_repr(&r);
        t.peer_seq += 10;
    }
    assert_eq!(
        data_seqs(&mut t),
        vec![base],
        "the hole at SND.UNA, at once"
    );
    assert_eq!(t.engine.retransmissions().fast, 1);
}

/// Without SACK: three duplicate ACKs retransmit the first segment only, and a partial ACK
/// retransmits the segment it points at (RFC 6582), not the whole window.
#[test]
fn newreno_partial_ack_retransmits_the_next_hole_without_sack() {
    let mut t = established(config(), false);
    write(&mut t, 10);
    let base = t.engine_seq;
    let seg = |i: u32| base + i * MSS;
    assert_eq!(data_seqs(&mut t).len(), 10);
    for _ in 0..3 {
        ack_with(&mut t, base, &[], 65535);
    }
    assert_eq!(data_seqs(&mut t), vec![seg(0)]);
    ack_with(&mut t, seg(4), &[], 65535);
    assert_eq!(data_seqs(&mut t), vec![seg(4)], "the partial ACK's hole");
    ack_with(&mut t, seg(10), &[], 65535);
    assert!(data_seqs(&mut t).is_empty());
    let r = t.engine.retransmissions();
    assert_eq!((r.fast, r.recovery, r.timeout), (1, 2, 0), "{r:?}");
}

/// The first two duplicate ACKs each let one new segment out beyond the congestion window
/// (RFC 3042); the third starts the recovery.
#[test]
fn limited_transmit_sends_new_data_on_the_first_two_duplicate_acks() {
    let mut t = established(config(), false);
    write(&mut t, 14);
    let base = t.engine_seq;
    let seg = |i: u32| base + i * MSS;
    assert_eq!(data_seqs(&mut t).len(), 10, "the initial window");
    ack_with(&mut t, base, &[], 65535);
    assert_eq!(data_seqs(&mut t), vec![seg(10)]);
    ack_with(&mut t, base, &[], 65535);
    assert_eq!(data_seqs(&mut t), vec![seg(11)]);
    ack_with(&mut t, base, &[], 65535);
    assert_eq!(data_seqs(&mut t), vec![seg(0)]);
}

/// The last two segments of a flight are lost and no ACK comes: a tail-loss probe resends
/// the last segment after two RTTs and 2 ms, and the SACK it draws recovers the other in a
/// fast recovery. No retransmission timeout (at least 200 ms) is needed.
#[test]
fn tail_loss_probe_recovers_a_lost_tail_without_a_timeout() {
    let mut t = established(config(), true);
    // One round trip of 5 ms gives the RTT estimate.
    write(&mut t, 1);
    assert_eq!(data_seqs(&mut t).len(), 1);
    t.advance(Duration::from_millis(5));
    let base = t.engine_seq + MSS;
    ack_with(&mut t, base, &[], 65535);
    // One timer tick: the control plane takes this RTT sample on its own.
    t.advance(flextoe::control::TIMER_TICK);
    let seg = |i: u32| base + i * MSS;
    write(&mut t, 5);
    assert_eq!(data_seqs(&mut t).len(), 5);
    ack_with(&mut t, seg(3), &[], 65535);
    assert!(data_seqs(&mut t).is_empty());
    // Probe timeout: twice the smoothed RTT (5 ms, then about 0 for the ACK just now:
    // 4.4 ms) plus 2 ms.
    t.advance(Duration::from_millis(10));
    assert!(data_seqs(&mut t).is_empty());
    t.advance(Duration::from_millis(2));
    assert_eq!(
        data_seqs(&mut t),
        vec![seg(4)],
        "the probe: the last segment"
    );
    ack_with(&mut t, seg(3), &[(seg(4), seg(5))], 65535);
    assert_eq!(
        data_seqs(&mut t),
        vec![seg(3)],
        "the SACK starts a recovery"
    );
    ack_with(&mut t, seg(5), &[], 65535);
    let r = t.engine.retransmissions();
    assert_eq!((r.tail_probes, r.timeout), (1, 0), "{r:?}");
    assert_eq!(t.engine.stats().control.timeouts, 0);
}

/// After a retransmission timeout the window starts over at one segment and, with SACK,
/// grows by slow start as the go-back-N retransmissions are acknowledged (RFC 5681 3.1):
/// one segment, then two, then four. It used to stay at one segment a round trip until
/// everything sent before the timeout was acknowledged. Without SACK it still does: the
/// sender cannot tell what the peer holds, and would send it again.
#[test]
fn after_a_timeout_the_window_grows_by_slow_start() {
    for sack in [true, false] {
        let mut t = established(config(), sack);
        let base = timed_out(&mut t, 10);
        ack_with(&mut t, base + MSS, &[], 65535);
        let next: Vec<u32> = if sack {
            vec![base + MSS, base + 2 * MSS]
        } else {
            vec![base + MSS]
        };
        assert_eq!(data_seqs(&mut t), next, "SACK {sack}");
        if sack {
            ack_with(&mut t, base + 3 * MSS, &[], 65535);
            let next: Vec<u32> = (3..7).map(|i| base + i * MSS).collect();
            assert_eq!(data_seqs(&mut t), next);
        }
    }
}

/// Going back after a timeout, duplicate ACKs send the sender back once for what it had
/// sent, not again on every three: the go-back's own segments draw duplicate ACKs, and a
/// peer could send three at will; each sent the window again (ten groups of three sent the
/// window ten times).
#[test]
fn duplicate_acks_after_a_timeout_send_the_window_back_once() {
    let mut t = established(config(), true);
    let base = timed_out(&mut t, 30);
    // Slow start while going back: 1, 2, 4, then the window (up to `ssthresh`) from
    // base + 7 MSS.
    ack_with(&mut t, base + MSS, &[], 65535);
    assert_eq!(data_seqs(&mut t).len(), 2);
    ack_with(&mut t, base + 3 * MSS, &[], 65535);
    assert_eq!(data_seqs(&mut t).len(), 4);
    ack_with(&mut t, base + 7 * MSS, &[], 65535);
    let window = data_segments(&mut t);
    assert!(window.len() >= 4, "{window:?}");
    let mut resent = Vec::new();
    // Each SACKs one more byte (with SACK only news makes a duplicate ACK, RFC 6675).
    let sacked = base + 8 * MSS;
    for i in 0..10 {
        for k in 1..=3 {
            let block = (sacked, sacked + i * 3 + k);
            ack_with(&mut t, base + 7 * MSS, &[block], 65535);
        }
        resent.extend(data_segments(&mut t));
    }
    assert!(
        resent.iter().any(|s| s.0 == base + 7 * MSS),
        "sent back once: {resent:?}"
    );
    assert!(
        resent.len() <= window.len(),
        "{} segments for 30 duplicate ACKs: {resent:?}",
        resent.len()
    );
    // The data still all arrives: the peer acknowledges everything, nothing is stuck.
    let top = window
        .iter()
        .chain(&resent)
        .map(|s| s.1)
        .max()
        .unwrap_or(base);
    ack_with(&mut t, top, &[], 65535);
    let more = data_seqs(&mut t);
    assert!(more.first().is_some_and(|&s| s == top), "{more:?}");
}

/// A passive open with timestamps; returns our SYN-ACK's timestamp value.
fn established_with_timestamps() -> (Script, u32) {
    let mut t = Script::new(config());
    let syn = TcpRepr {
        timestamp: Script::ts(1000, 0),
        ..t.repr(SYN, PEER_ISS, None, &[])
    };
    let syn_ack_ts = t.accept_with(&syn).ts.expect("timestamps").0;
    (t, syn_ack_ts)
}

/// In a recovery the echoed timestamp of an ACK that moves `snd_una` is an RTT sample only
/// when it is from a segment sent in the recovery: a peer that echoed our SYN-ACK's
/// timestamp, 20 s old, on a partial ACK made a 20 s sample (up to a minute was taken),
/// which moved the smoothed RTT by seconds.
#[test]
fn an_echo_from_before_the_recovery_is_no_rtt_sample() {
    let (mut t, syn_ack_ts) = established_with_timestamps();
    let peer = |t: &Script, ack: u32, ecr: u32| TcpRepr {
        timestamp: Script::ts(2000, ecr),
        ..t.repr(ACK, t.peer_seq, Some(ack), &[])
    };
    t.advance(Duration::from_secs(20));
    write(&mut t, 10);
    let base = t.engine_seq;
    let sent = t.recv();
    assert_eq!(sent.len(), 10);
    let now_ts = sent[0].ts.expect("timestamps").0;
    // The first segment is lost: three duplicate ACKs start a fast recovery.
    for _ in 0..3 {
        let d = peer(&t, base, now_ts);
        t.send_repr(&d);
    }
    assert!(data_seqs(&mut t).contains(&base), "fast retransmission");
    // (The timers fold samples into the smoothed RTT.)
    t.advance(Duration::from_millis(10));
    let before = t.engine.srtt(&t.tuple());
    // A partial ACK echoing the SYN-ACK's timestamp.
    let partial = peer(&t, base + MSS, syn_ack_ts);
    t.send_repr(&partial);
    t.advance(Duration::from_millis(10));
    t.recv();
    let after = t.engine.srtt(&t.tuple());
    assert_eq!(after, before, "no sample: {before:?} -> {after:?}");
}

/// In a recovery, an ACK echoing a timestamp of this very millisecond is no RTT sample:
/// the timestamps tell only that the round trip is under a millisecond. It was taken as
/// 0 us, so a peer acknowledging a recovery's retransmissions at once (or in many small
/// ACKs) pulled the smoothed RTT, and a rate control's least RTT, to nothing.
#[test]
fn an_echo_of_this_millisecond_is_no_rtt_sample() {
    let (mut t, _) = established_with_timestamps();
    let peer = |t: &Script, ack: u32, ecr: u32| TcpRepr {
        timestamp: Script::ts(2000, ecr),
        ..t.repr(ACK, t.peer_seq, Some(ack), &[])
    };
    // A first sample of 5 ms.
    write(&mut t, 1);
    let first = t.recv();
    t.advance(Duration::from_millis(5));
    let ts = first[0].ts.expect("timestamps").0;
    let base = t.engine_seq + MSS;
    t.send_repr(&peer(&t, base, ts));
    t.advance(Duration::from_millis(10));
    let before = t.engine.srtt(&t.tuple());
    assert!(
        before.is_some_and(|d| d >= Duration::from_millis(4)),
        "{before:?}"
    );
    write(&mut t, 10);
    let sent: Vec<_> = t
        .recv()
        .into_iter()
        .filter(|s| !s.payload.is_empty())
        .collect();
    // 1448-byte segments (the timestamp option takes 12 bytes).
    assert_eq!(sent.len(), 11);
    let seg = sent[0].payload.len() as u32;
    let now_ts = sent[0].ts.expect("timestamps").0;
    for _ in 0..3 {
        let d = peer(&t, base, now_ts);
        t.send_repr(&d);
    }
    let rxt = t.recv();
    let again = rxt.iter().find(|s| s.seq == base && !s.payload.is_empty());
    let rxt_ts = again
        .expect("fast retransmission")
        .ts
        .expect("timestamps")
        .0;
    // The retransmission acknowledged in the millisecond it left.
    let partial = peer(&t, base + seg, rxt_ts);
    t.send_repr(&partial);
    t.advance(Duration::from_millis(10));
    t.recv();
    let after = t.engine.srtt(&t.tuple());
    assert_eq!(after, before, "no sample: {before:?} -> {after:?}");
}

/// The same after a timeout: going back, an ACK echoing a timestamp from before the
/// timeout is no RTT sample.
#[test]
fn an_echo_from_before_a_timeout_is_no_rtt_sample() {
    let (mut t, syn_ack_ts) = established_with_timestamps();
    t.advance(Duration::from_secs(20));
    write(&mut t, 10);
    let base = t.engine_seq;
    assert_eq!(data_seqs(&mut t).len(), 10);
    t.advance(Duration::from_millis(1050));
    assert_eq!(data_seqs(&mut t), vec![base], "the timeout");
    let before = t.engine.srtt(&t.tuple());
    let partial = TcpRepr {
        timestamp: Script::ts(2000, syn_ack_ts),
        ..t.repr(ACK, t.peer_seq, Some(base + MSS), &[])
    };
    t.send_repr(&partial);
    t.advance(Duration::from_millis(10));
    t.recv();
    let after = t.engine.srtt(&t.tuple());
    assert_eq!(after, before, "no sample: {before:?} -> {after:?}");
}

/// Karn's algorithm: after a timeout, an ACK of the retransmitted segment carries no RTT
/// sample, so the doubled timeout stays for the next loss. It used to be reset by any ACK,
/// which makes a step in the RTT a loop of spurious timeouts.
#[test]
fn karn_backoff_survives_an_ack_of_retransmitted_data() {
    let mut t = established(config(), false);
    write(&mut t, 1);
    let base = t.engine_seq;
    assert_eq!(data_seqs(&mut t), vec![base]);
    t.advance(Duration::from_millis(1050));
    assert_eq!(data_seqs(&mut t), vec![base], "first timeout after 1 s");
    ack_with(&mut t, base + MSS, &[], 65535);
    write(&mut t, 1);
    assert_eq!(data_seqs(&mut t), vec![base + MSS]);
    t.advance(Duration::from_millis(1500));
    assert!(
        data_seqs(&mut t).is_empty(),
        "the backed-off timeout (2 s) still holds"
    );
    t.advance(Duration::from_millis(600));
    assert_eq!(data_seqs(&mut t), vec![base + MSS]);
}

/// The peer closes its window with data in flight and answers each probe with the window
/// still shut. The persist timer probes it; the retransmission timeout does not run, so
/// the connection is not aborted after `max_retransmissions` (it used to be). When the
/// window opens, the data goes through.
#[test]
fn zero_window_with_data_in_flight_is_probed_not_aborted() {
    let mut cfg = config();
    cfg.control.max_retransmissions = 3;
    cfg.control.rto_max = Duration::from_secs(2);
    let mut t = established(cfg, false);
    write(&mut t, 10);
    let base = t.engine_seq;
    assert_eq!(data_seqs(&mut t).len(), 10);
    ack_with(&mut t, base + 2 * MSS, &[], 0);
    let mut probes = Vec::new();
    for _ in 0..30 {
        t.advance(Duration::from_secs(2));
        probes.extend(t.recv());
        ack_with(&mut t, base + 2 * MSS, &[], 0);
    }
    let st = t.engine.stats();
    assert_eq!(
        t.state(),
        Some(TcpConnState::Established),
        "{st}\n{probes:?}"
    );
    assert!(st.control.probes >= 5, "{st}");
    assert_eq!(st.control.timeouts, 0, "{st}");
    // Probes carry nothing; the answers are duplicate ACKs, whose fast retransmission
    // (allowed into a shut window, RFC 9293 3.8.6.1) may send the first unacknowledged
    // segment again, and nothing past it.
    assert!(
        probes
            .iter()
            .all(|s| s.payload.is_empty() || s.seq == base + 2 * MSS),
        "{probes:?}"
    );
    // The window opens: what was in flight is sent again and acknowledged.
    ack_with(&mut t, base + 2 * MSS, &[], 65535);
    t.advance(Duration::from_millis(1200));
    assert!(data_seqs(&mut t).contains(&(base + 2 * MSS)));
    ack_with(&mut t, base + 10 * MSS, &[], 65535);
    let out = t.recv();
    let st = t.engine.stats();
    assert_eq!(t.state(), Some(TcpConnState::Established), "{st}\n{out:?}");
}

/// A peer that shuts its window with the timed segment unacknowledged, answers the probes
/// for two minutes, then acknowledges, gives no RTT sample of the wait: no timeout runs
/// with the window shut, so nothing stopped the timing, and the sample (which wrapped past
/// 71 minutes) put the smoothed RTT at tens of seconds.
#[test]
fn a_timed_segment_held_behind_a_shut_window_is_no_rtt_sample() {
    let mut t = established(config(), false);
    write(&mut t, 2);
    let base = t.engine_seq;
    assert_eq!(data_seqs(&mut t).len(), 2);
    ack_with(&mut t, base, &[], 0);
    for _ in 0..60 {
        t.advance(Duration::from_secs(2));
        t.recv();
        // Each answer carries a byte of data: no duplicate ACK, no fast retransmission
        // (which would have stopped the timing).
        let r = TcpRepr {
            window_len: 0,
            ..t.repr(ACK, t.peer_seq, Some(base), b"x")
        };
        t.send_repr(&r);
        t.peer_seq = t.peer_seq.wrapping_add(1);
    }
    assert_eq!(t.state(), Some(TcpConnState::Established));
    assert_eq!(t.engine.stats().control.timeouts, 0);
    ack_with(&mut t, base + 2 * MSS, &[], 65535);
    t.advance(Duration::from_millis(10));
    t.recv();
    let srtt = t.engine.srtt(&t.tuple());
    assert!(
        srtt.is_none_or(|d| d < Duration::from_secs(1)),
        "a sample of the wait: {srtt:?}"
    );
}

/// With our receive window at zero, a one-byte window probe and a bare FIN are not
/// acceptable, but each still gets an ACK that tells the peer the window (RFC 9293
/// 3.10.7.4); they used to get silence.
#[test]
fn zero_window_probe_and_bare_fin_are_acknowledged() {
    let mut t = established(config(), false);
    // Fill the receive buffer; the application reads nothing.
    let mut win = u16::MAX;
    for _ in 0..100 {
        let (s, a) = (t.peer_seq, t.engine_seq);
        t.send(PSH | ACK, s, Some(a), &[3u8; MSS as usize]);
        let acks = t.recv();
        let last = acks.last().expect("an ACK");
        t.peer_seq = last.ack;
        win = last.win;
        if win == 0 {
            break;
        }
    }
    assert_eq!(win, 0, "the window closed");
    let rcv_nxt = t.peer_seq;
    let drops_before = t.engine.stats().drops(DropReason::OutOfWindow);
    t.send(PSH | ACK, rcv_nxt, Some(t.engine_seq), &[9u8]);
    let ack = t.recv_one();
    assert_eq!((ack.flags, ack.ack, ack.win), (ACK, rcv_nxt, 0));
    t.send(FIN | ACK, rcv_nxt, Some(t.engine_seq), &[]);
    let ack = t.recv_one();
    assert_eq!((ack.flags, ack.ack, ack.win), (ACK, rcv_nxt, 0));
    assert_eq!(
        t.engine.stats().drops(DropReason::OutOfWindow),
        drops_before + 2
    );
    assert_eq!(t.state(), Some(TcpConnState::Established));
}

/// The application read everything and closed; the peer then sends more data. Nobody can
/// read it: the engine answers with a RST (RFC 9293 3.10.7.4, RFC 1122 4.2.2.13) instead of
/// ACKing and discarding it behind a window that then stays shut.
#[test]
fn data_after_the_application_closed_is_answered_with_rst() {
    let mut t = established(config(), false);
    t.send_data(&[5u8; 100]);
    assert_eq!(t.app_read().len(), 100);
    t.recv();
    t.stream = None;
    let fin = t.recv();
    assert!(fin.iter().any(|s| s.has(FIN)), "{fin:?}");
    t.engine_seq = t.engine_seq.wrapping_add(1);
    t.send_ack();
    assert_eq!(t.state(), Some(TcpConnState::FinWait2));
    t.send_data(&[6u8; 100]);
    let out = t.recv();
    assert!(out.iter().any(|s| s.has(RST)), "{out:?}");
    t.poll();
    assert_eq!(t.state(), None, "the connection is gone");
    assert_eq!(t.engine.stats().drops(DropReason::DataAfterClose), 1);
}

/// The peer's data was read, the application closed; the peer's FIN was lost and it
/// retransmits the data it had sent with the FIN merged in (as Linux does). The data is
/// old, only the FIN new: it is taken, not answered with a RST (which threw away our FIN's
/// graceful close).
#[test]
fn old_data_retransmitted_with_a_fin_after_the_application_closed_is_no_reset() {
    let mut t = established(config(), false);
    let start = t.peer_seq;
    t.send_data(&[5u8; 100]);
    assert_eq!(t.app_read().len(), 100);
    t.recv();
    t.stream = None;
    let fin = t.recv();
    assert!(fin.iter().any(|s| s.has(FIN)), "{fin:?}");
    t.send(FIN | PSH | ACK, start, Some(t.engine_seq), &[5u8; 100]);
    let out = t.recv();
    assert!(out.iter().all(|s| !s.has(RST)), "{out:?}");
    assert!(
        out.iter().any(|s| s.ack == start + 101),
        "the FIN is acknowledged: {out:?}"
    );
    assert_eq!(t.state(), Some(TcpConnState::Closing));
    assert_eq!(t.engine.stats().drops(DropReason::DataAfterClose), 0);
}

/// RFC 7323 section 4 with Karn's rule: after a timeout no segment can be timed, but the
/// timestamp the peer echoes still measures the round trip. That sample ends the backoff,
/// so the next loss is found by a probe and the minimum RTO (200 ms), not after the doubled
/// 2 s.
#[test]
fn timestamps_give_an_rtt_sample_after_a_timeout() {
    let mut t = Script::new(config());
    let syn = TcpRepr {
        timestamp: Script::ts(1000, 0),
        ..t.repr(SYN, PEER_ISS, None, &[])
    };
    t.accept_with(&syn);
    let mss = MSS - 12; // the timestamp option takes 12 bytes
    t.stream().write_all(&[1u8; (MSS - 12) as usize]).unwrap();
    let base = t.engine_seq;
    assert_eq!(data_seqs(&mut t), vec![base]);
    t.advance(Duration::from_millis(1050));
    let rtx = t.recv();
    assert_eq!(rtx.len(), 1, "the timeout's retransmission");
    let echo = TcpRepr {
        timestamp: Script::ts(1002, rtx[0].ts.unwrap().0),
        ..t.repr(ACK, t.peer_seq, Some(base + mss), &[])
    };
    t.send_repr(&echo);
    t.stream().write_all(&[2u8; (MSS - 12) as usize]).unwrap();
    assert_eq!(data_seqs(&mut t).len(), 1);
    t.advance(Duration::from_millis(300));
    // A tail-loss probe (the RTT is known now) and the timeout after 200 ms.
    assert_eq!(data_seqs(&mut t).len(), 2);
    let st = t.engine.stats();
    assert_eq!(
        (st.control.timeouts, st.control.tail_probes),
        (2, 1),
        "{st}"
    );
}

/// RFC 6298 5.7: when the SYN had to be retransmitted, the RTO starts at 3 s once the
/// connection is up (until an RTT sample), not at the 1 s initial value.
#[test]
fn a_retransmitted_syn_starts_data_at_a_three_second_rto() {
    let mut t = Script::new(config());
    let syn = t.start_connect();
    t.advance(Duration::from_millis(1100));
    let again = t.recv_one();
    assert_eq!(again.seq, syn.seq, "the SYN again");
    t.local_port = syn.src_port;
    t.engine_seq = syn.seq.wrapping_add(1);
    let sa = TcpRepr {
        ack_number: Some(smoltcp::wire::TcpSeqNumber(t.engine_seq as i32)),
        ..t.repr(SYN | ACK, PEER_ISS, None, &[])
    };
    t.send_repr(&sa);
    t.peer_seq = PEER_ISS + 1;
    t.recv();
    write(&mut t, 1);
    assert_eq!(data_seqs(&mut t).len(), 1);
    t.advance(Duration::from_millis(2500));
    assert!(data_seqs(&mut t).is_empty(), "no timeout before 3 s");
    t.advance(Duration::from_millis(600));
    assert_eq!(data_seqs(&mut t).len(), 1);
}
