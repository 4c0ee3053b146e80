//! Tests of the protocol stage's burst loop: owed ACK headers and the receiver's shortcut
//! against a stage without them (differential proptests), quiet reads, direct sends, frozen
//! and stale flows.

use super::*;
use crate::flow::FlowCounters;
use crate::stages::postprocess::{FlowView, Postprocess};
use crate::stages::RxWork;
use proptest::prelude::*;

mod frozen;
mod stale;

pub(in crate::stages::protocol) const FLOWS: u32 = 2;
pub(in crate::stages::protocol) const PEER_ISS: u32 = 7_000;
const OUR_ISS: u32 = 90_000;

/// One work item of a scripted burst.
#[derive(Clone, Copy, Debug)]
pub(in crate::stages::protocol) enum Op {
    /// In-order data (of this many bytes), perhaps CE-marked.
    Data(u16, bool),
    /// Data this far past what the peer sent in order (a gap before it).
    Ahead(u16, u16),
    /// Data the peer already sent (a retransmission).
    Old(u16),
    /// A pure ACK of this share (in 1/8) of what we have in flight, perhaps with CWR.
    PureAck(u8, bool),
    /// A duplicate ACK with one SACK block from this share (in 1/8) of what we have in
    /// flight to its end, perhaps echoing congestion (ECE).
    Sack(u8, bool),
    /// In-order FIN, with this much data before it.
    Fin(u16),
    /// The application queued this much to send, and read this share (in 1/8) of what
    /// it had not read.
    App(u16, u8),
    /// A transmission grant.
    Tx,
    /// The control plane asks for an ACK.
    AckRequest,
    /// A zero-window probe.
    Probe,
    /// A segment without ACK flag (dropped, changes nothing).
    NoAck(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u16..1200, any::<bool>()).prop_map(|(n, ce)| Op::Data(n, ce)),
        1 => (1u16..3000, 1u16..800).prop_map(|(g, n)| Op::Ahead(g, n)),
        1 => (1u16..800).prop_map(Op::Old),
        2 => (0u8..=8, any::<bool>()).prop_map(|(k, cwr)| Op::PureAck(k, cwr)),
        1 => (1u8..=7, any::<bool>()).prop_map(|(k, ece)| Op::Sack(k, ece)),
        1 => (0u16..300).prop_map(Op::Fin),
        2 => (0u16..3000, 0u8..=8).prop_map(|(n, read)| Op::App(n, read)),
        2 => (0u8..=8).prop_map(|read| Op::App(0, read)),
        2 => Just(Op::Tx),
        1 => Just(Op::AckRequest),
        1 => Just(Op::Probe),
        1 => (0u16..100).prop_map(Op::NoAck),
    ]
}

/// The peer's side of one flow, as the script builds its segments.
#[derive(Clone, Copy)]
pub(in crate::stages::protocol) struct Peer {
    pub(in crate::stages::protocol) next: u32,
    pub(in crate::stages::protocol) ts: u32,
    pub(in crate::stages::protocol) fin: bool,
}

pub(in crate::stages::protocol) fn params(rcv_shift: u8) -> TcpParams {
    TcpParams {
        snd_nxt: OUR_ISS,
        rcv_nxt: PEER_ISS,
        snd_wnd: 60_000,
        mss: 1000,
        snd_shift: 0,
        rcv_shift,
        rx_cap: 6000,
        timestamps: true,
        ts_recent: 1,
        ts_offset: 0,
        initial_cwnd_segments: 10,
        sack: true,
        ecn: true,
        congestion: Algorithm::default(),
        incarnation: 1,
    }
}

pub(in crate::stages::protocol) fn postprocess(
    arena: &Arc<FrameArena>,
    policy: AckPolicy,
) -> Postprocess {
    let mut p = Postprocess::new(arena.clone(), policy);
    for id in 0..FLOWS {
        p.install(
            id,
            FlowView {
                identity: crate::flow::test_identity(id, 1000),
                counters: FlowCounters::new(),
            },
        );
    }
    p
}

/// The burst's work items for `script`, from the peers' and the reference state.
pub(in crate::stages::protocol) fn items(
    arena: &FrameArena,
    script: &[(u32, Op)],
    peers: &mut [Peer],
    reference: &Protocol,
) -> Vec<ProtoWork> {
    let mut out = Vec::new();
    for &(flow, op) in script {
        let st = reference.state(flow).expect("installed");
        let p = &mut peers[flow as usize];
        p.ts += 1;
        // The timestamp option's value and echo stay in the frame (bytes 58..66, after
        // NOP NOP kind length), as a parsed segment's do.
        let mut s = SegmentSummary {
            seq: p.next,
            ack: st.snd_una,
            win: 60_000,
            payload_off: 66,
            payload_len: 0,
            sack_at: 0,
            flags: flags::ACK,
            ce: false,
            sack_len: 0,
            ts_at: 58,
            incarnation: 1,
        };
        match op {
            Op::Data(n, ce) => {
                s.payload_len = n;
                s.ce = ce;
                if !p.fin {
                    p.next = p.next.wrapping_add(u32::from(n));
                }
            }
            Op::NoAck(n) => {
                s.payload_len = n;
                s.flags = 0;
            }
            Op::Ahead(gap, n) => {
                s.seq = p.next.wrapping_add(u32::from(gap));
                s.payload_len = n;
            }
            Op::Old(n) => {
                s.seq = p.next.wrapping_sub(u32::from(n));
                s.payload_len = n;
            }
            Op::PureAck(k, cwr) => {
                let flight = st.snd_max.wrapping_sub(st.snd_una);
                s.ack = st.snd_una.wrapping_add(flight / 8 * u32::from(k));
                if cwr {
                    s.flags |= flags::CWR;
                }
            }
            Op::Sack(_, ece) => {
                s.sack_len = 1;
                s.sack_at = 70;
                s.payload_off = 78;
                if ece {
                    s.flags |= flags::ECE;
                }
            }
            Op::Fin(n) => {
                s.payload_len = n;
                s.flags |= flags::FIN;
                if !p.fin {
                    p.next = p.next.wrapping_add(u32::from(n) + 1);
                    p.fin = true;
                }
            }
            Op::App(n, read) => {
                // The application reads `read`/8 of what it has not read yet.
                let unread = st.rx_pos - st.rx_tail;
                let tail = st.rx_tail + unread / 8 * u64::from(read);
                out.push(ProtoWork::App {
                    flow,
                    positions: Some((st.tx_app_end + u64::from(n), tail)),
                    fin: false,
                    closed: false,
                    incarnation: 0,
                });
                continue;
            }
            Op::Tx => {
                out.push(ProtoWork::Tx { flow });
                continue;
            }
            Op::AckRequest => {
                out.push(ProtoWork::Ack {
                    flow,
                    incarnation: 0,
                });
                continue;
            }
            Op::Probe => {
                out.push(ProtoWork::Probe {
                    flow,
                    incarnation: 0,
                });
                continue;
            }
        }
        let mut header = [0u8; 78];
        header[54..58].copy_from_slice(&[1, 1, 8, 10]);
        header[58..62].copy_from_slice(&p.ts.to_be_bytes());
        if let Op::Sack(k, _) = op {
            // NOP NOP, then the option's kind and length, then the block.
            let flight = st.snd_max.wrapping_sub(st.snd_una);
            let left = st.snd_una.wrapping_add(flight / 8 * u32::from(k));
            header[66..70].copy_from_slice(&[1, 1, 5, 10]);
            header[70..74].copy_from_slice(&left.to_be_bytes());
            header[74..78].copy_from_slice(&st.snd_max.to_be_bytes());
        }
        let len = usize::from(s.payload_off);
        let frame = arena
            .alloc_copy(&header[..len])
            .expect("a frame for the segment");
        out.push(ProtoWork::Rx(RxWork {
            flow,
            summary: s,
            frame,
        }));
    }
    out
}

/// What postprocess sent of a burst: (index, flow, header), and the results' actions
/// without TX (which only says whether a segment may go).
pub(in crate::stages::protocol) type Sent = (Vec<(usize, FlowId, TxHeader)>, Vec<u32>);

pub(in crate::stages::protocol) fn run(
    arena: &FrameArena,
    proto: &mut Protocol,
    post: &mut Postprocess,
    now: Instant,
    mut work: Vec<ProtoWork>,
) -> Sent {
    let mut results = Vec::new();
    proto.process(now, &mut work, &mut results);
    for r in &results {
        assert!(!r.actions.any(HEADER_OWED | ACK_DECIDES), "{r:?}");
        // Whatever postprocess runs on (another burst, in another replica), a result
        // that may send has its header: every segment of ours carries ACK.
        let written = r.hdr.flags & flags::ACK != 0;
        assert!(!r.actions.any(Actions::TX) || written, "{r:?}");
    }
    post.process_in_place(now, &mut results);
    let mut sent = Vec::new();
    let mut actions = Vec::new();
    for (i, r) in results.iter_mut().enumerate() {
        if let Some(f) = r.tx_frame.take() {
            sent.push((i, r.flow, r.hdr));
            arena.free(f);
        }
        if let Some(f) = r.rx_frame.take() {
            arena.free(f);
        }
        actions.push(r.actions.0 & !Actions::TX);
    }
    (sent, actions)
}

/// A read is applied without a work item while the window stays open and nothing is
/// to be sent; a read that opens a small window, new data to send, or data queued
/// and not sent need the work item, and leave the state as it was.
#[test]
fn reads_are_quiet_only_where_their_result_does_nothing() {
    let arena = Arc::new(FrameArena::new(64).unwrap());
    let mut proto = Protocol::new(arena.clone());
    proto.install(0, TcpState::new(&params(0)));
    let now = Instant::from_micros(1_000);
    let mut peers = peers();
    let mut receive = |proto: &mut Protocol, script: &[(u32, Op)]| {
        let mut work = items(&arena, script, &mut peers, proto);
        let mut results = Vec::new();
        proto.process(now, &mut work, &mut results);
        for r in &mut results {
            for f in [r.rx_frame.take(), r.tx_frame.take()].into_iter().flatten() {
                arena.free(f);
            }
        }
    };
    // 1,000 bytes in: 5,000 of the 6,000-byte ring advertised.
    receive(&mut proto, &[(0, Op::Data(1000, false))]);
    let st = proto.state(0).unwrap().clone();
    assert!(proto.app_quiet(0, st.tx_app_end, st.rx_tail + 500));
    assert_eq!(proto.state(0).unwrap().rx_tail, st.rx_tail + 500);
    // New data to send needs its work item.
    assert!(!proto.app_quiet(0, st.tx_app_end + 10, st.rx_tail + 600));
    assert_eq!(proto.state(0).unwrap().rx_tail, st.rx_tail + 500);
    // 3,600 more: the window advertised is under half the ring; reading all of it
    // opens it by more than two segments, which the peer is told at once.
    receive(&mut proto, &[(0, Op::Data(900, false)); 4]);
    let st = proto.state(0).unwrap().clone();
    assert_eq!(st.rx_pos - st.rx_tail, 4_100);
    assert!(!proto.app_quiet(0, st.tx_app_end, st.rx_pos));
    assert_eq!(proto.state(0).unwrap(), &st);
    let app = |tx_head, rx_tail| ProtoWork::App {
        flow: 0,
        positions: Some((tx_head, rx_tail)),
        fin: false,
        closed: false,
        incarnation: 0,
    };
    let r = proto.handle(now, app(st.tx_app_end, st.rx_pos));
    assert!(r.actions.any(Actions::TX | Actions::ACK_NOW), "{r:?}");
    // Data queued and not sent yet: a read's work item asks for a grant.
    let r = proto.handle(now, app(st.tx_app_end + 100, st.rx_pos));
    assert!(r.actions.any(Actions::SCHED), "{r:?}");
    receive(&mut proto, &[(0, Op::Data(100, false))]);
    let st = proto.state(0).unwrap().clone();
    assert!(!proto.app_quiet(0, st.tx_app_end, st.rx_pos));
    assert_eq!(proto.state(0).unwrap(), &st);
    // No such flow.
    assert!(!proto.app_quiet(1, 0, 0));
    assert_eq!(arena.free_frames(), 64);
}

/// A peer at the start of each flow's stream.
pub(in crate::stages::protocol) fn peers() -> [Peer; FLOWS as usize] {
    [Peer {
        next: PEER_ISS,
        ts: 10,
        fin: false,
    }; FLOWS as usize]
}

/// Process `work`, give back every frame its results hand back, and return their
/// actions together.
fn process_all(
    proto: &mut Protocol,
    arena: &FrameArena,
    now: Instant,
    mut work: Vec<ProtoWork>,
) -> Actions {
    let mut results = Vec::new();
    proto.process(now, &mut work, &mut results);
    let mut actions = Actions::default();
    for r in &mut results {
        actions.set(r.actions.0);
        for f in [r.rx_frame.take(), r.tx_frame.take()].into_iter().flatten() {
            arena.free(f);
        }
    }
    actions
}

/// Two protocol stages with the same flows, each with its postprocess and its peers, over
/// one arena: the two sides of a differential test. The second side coalesces ACK
/// headers; the first where `both_coalesce`.
struct Pair {
    arena: Arc<FrameArena>,
    a: Protocol,
    b: Protocol,
    post_a: Postprocess,
    post_b: Postprocess,
    peers_a: [Peer; FLOWS as usize],
    peers_b: [Peer; FLOWS as usize],
}

impl Pair {
    fn new(delayed: bool, rcv_shift: u8, both_coalesce: bool) -> Self {
        let arena = Arc::new(FrameArena::new(256).unwrap());
        let policy = if delayed {
            AckPolicy::delayed(Duration::from_millis(5))
        } else {
            AckPolicy::PerBurst
        };
        let mut a = Protocol::new(arena.clone())
            .with_ack_coalescing(both_coalesce)
            .with_delayed_acks(delayed);
        let mut b = Protocol::new(arena.clone())
            .with_ack_coalescing(true)
            .with_delayed_acks(delayed);
        for id in 0..FLOWS {
            a.install(id, TcpState::new(&params(rcv_shift)));
            b.install(id, TcpState::new(&params(rcv_shift)));
        }
        let peer = Peer {
            next: PEER_ISS,
            ts: 10,
            fin: false,
        };
        Pair {
            post_a: postprocess(&arena, policy),
            post_b: postprocess(&arena, policy),
            arena,
            a,
            b,
            peers_a: [peer; FLOWS as usize],
            peers_b: [peer; FLOWS as usize],
        }
    }
}

/// Segments sent, their timestamp echo left out: a stage that writes every header takes
/// every ACK for sent, and so echoes each segment's own timestamp, where one that leaves
/// headers owed knows which ACK goes and echoes the earliest segment it covers (RFC 7323
/// section 4.3; `last_ack_sent`).
fn without_echo(sent: &[(usize, FlowId, TxHeader)]) -> Vec<(usize, FlowId, TxHeader)> {
    let mut v = sent.to_vec();
    for (_, _, h) in &mut v {
        h.ts_ecr = 0;
    }
    v
}

/// Where the echoes may differ (see [`without_echo`]), side b's (owed headers, the
/// earliest segment an ACK covers) is never newer than side a's.
fn echoes_no_newer(
    a: &[(usize, FlowId, TxHeader)],
    b: &[(usize, FlowId, TxHeader)],
) -> Result<(), TestCaseError> {
    for ((_, _, ha), (_, _, hb)) in a.iter().zip(b) {
        prop_assert!(
            crate::wire::seq::le(hb.ts_ecr, ha.ts_ecr),
            "echo {} against {}",
            hb.ts_ecr,
            ha.ts_ecr
        );
    }
    Ok(())
}

/// Run `bursts` on both sides of `pair` (side a with every acceptable ACK through
/// `on_ack` where `full_ack_on_a`), both sides' work built from side a's state: they
/// must take the same actions, send the same segments (their timestamp echoes alike
/// where `echo_alike`, else side b's no newer), end in the same state, and hand every
/// frame back.
fn both_sides_alike(
    pair: Pair,
    bursts: &[Vec<(u32, Op)>],
    full_ack_on_a: bool,
    echo_alike: bool,
) -> Result<(), TestCaseError> {
    let echo = |sent: &[(usize, FlowId, TxHeader)]| {
        if echo_alike {
            sent.to_vec()
        } else {
            without_echo(sent)
        }
    };
    use super::super::receive::FULL_ACK_PROCESSING;
    let Pair {
        arena,
        mut a,
        mut b,
        mut post_a,
        mut post_b,
        mut peers_a,
        mut peers_b,
    } = pair;
    for (i, script) in bursts.iter().enumerate() {
        let now = Instant::from_micros(1_000 + 3_000 * i as u64);
        let wa = items(&arena, script, &mut peers_a, &a);
        let wb = items(&arena, script, &mut peers_b, &a);
        FULL_ACK_PROCESSING.with(|c| c.set(full_ack_on_a));
        let sent_a = run(&arena, &mut a, &mut post_a, now, wa);
        FULL_ACK_PROCESSING.with(|c| c.set(false));
        let sent_b = run(&arena, &mut b, &mut post_b, now, wb);
        prop_assert_eq!(&sent_a.1, &sent_b.1, "actions, burst {}", i);
        prop_assert_eq!(
            echo(&sent_a.0),
            echo(&sent_b.0),
            "segments sent, burst {}",
            i
        );
        echoes_no_newer(&sent_a.0, &sent_b.0)?;
    }
    for id in 0..FLOWS {
        let unechoed = |st: Option<&TcpState>| {
            st.cloned().map(|mut st| {
                if !echo_alike {
                    (st.ts_recent, st.ts_recent_ms, st.last_ack_sent) = (0, 0, 0);
                }
                st
            })
        };
        prop_assert_eq!(unechoed(a.state(id)), unechoed(b.state(id)));
    }
    drop((post_a, post_b));
    prop_assert_eq!(arena.free_frames(), 256);
    Ok(())
}

/// Challenge ACKs are limited per flow, one per 500 ms for in-window RSTs and SYNs alike,
/// with no budget across flows by default: a flood of in-window RSTs on one flow draws one
/// challenge ACK and leaves the other flow's first in-window RST its own. A budget shared
/// by flows (a thousand a second, until it was off by default) tells a peer that spends it
/// whether its spoofed RSTs drew challenge ACKs on another connection (CVE-2016-5696).
#[test]
fn challenge_acks_are_limited_per_flow_not_across_flows() {
    let arena = Arc::new(FrameArena::new(64).unwrap());
    let t0 = Instant::from_micros(1_000_000);
    let ms = |n: u64| Instant::from_micros(1_000_000 + n * 1000);
    let rst = |flow: FlowId| {
        ProtoWork::Rx(RxWork {
            flow,
            summary: SegmentSummary {
                seq: PEER_ISS + 10,
                flags: flags::RST,
                payload_off: 54,
                incarnation: 1,
                ..SegmentSummary::default()
            },
            frame: arena.alloc_copy(&[0u8; 54]).unwrap(),
        })
    };
    // Challenge ACKs per flow in the results of `work`, every frame given back.
    let challenges = |proto: &mut Protocol, now: Instant, mut work: Vec<ProtoWork>| {
        let mut results = Vec::new();
        proto.process(now, &mut work, &mut results);
        let mut per_flow = [0usize; FLOWS as usize];
        for r in &mut results {
            if r.actions.any(Actions::CHALLENGE_ACK) {
                per_flow[r.flow as usize] += 1;
            }
            for f in [r.rx_frame.take(), r.tx_frame.take()].into_iter().flatten() {
                arena.free(f);
            }
        }
        assert_eq!(arena.in_use(), 0, "every frame came back");
        per_flow
    };
    let mut proto = Protocol::new(arena.clone());
    for id in 0..FLOWS {
        proto.install(id, TcpState::new(&params(0)));
    }
    for _ in 0..50 {
        let flood = (0..30).map(|_| rst(0)).collect();
        challenges(&mut proto, t0, flood);
    }
    let limited = proto.stats().drops.get(DropReason::RateLimited);
    assert_eq!(
        limited, 1499,
        "one of 1500 in-window RSTs drew a challenge ACK"
    );
    assert_eq!(challenges(&mut proto, t0, vec![rst(1)]), [0, 1]);
    // A SYN's challenge ACK shares the flow's limit: none 499 ms later, one at 500 ms.
    let syn = || {
        vec![ProtoWork::Challenge {
            flow: 0,
            incarnation: 0,
        }]
    };
    assert_eq!(challenges(&mut proto, ms(499), syn()), [0, 0]);
    assert_eq!(challenges(&mut proto, ms(500), syn()), [1, 0]);
    assert_eq!(challenges(&mut proto, ms(999), vec![rst(0)]), [0, 0]);
    assert_eq!(challenges(&mut proto, ms(1000), vec![rst(0)]), [1, 0]);
    // A budget across flows, when one is set, applies besides, asked only past the flow's
    // own limit: a flood on one flow spends one token.
    let mut proto = Protocol::new(arena.clone()).with_challenge_ack_limit(2);
    for id in 0..FLOWS {
        proto.install(id, TcpState::new(&params(0)));
    }
    let flood = vec![
        rst(0),
        ProtoWork::Challenge {
            flow: 0,
            incarnation: 0,
        },
        rst(0),
    ];
    assert_eq!(challenges(&mut proto, t0, flood), [1, 0]);
    assert_eq!(challenges(&mut proto, t0, vec![rst(1)]), [0, 1]);
    // A SYN's challenge ACK spends from the same budget.
    let mut proto = Protocol::new(arena.clone()).with_challenge_ack_limit(1);
    for id in 0..FLOWS {
        proto.install(id, TcpState::new(&params(0)));
    }
    let syn0 = vec![ProtoWork::Challenge {
        flow: 0,
        incarnation: 0,
    }];
    assert_eq!(challenges(&mut proto, t0, syn0), [1, 0]);
    assert_eq!(challenges(&mut proto, t0, vec![rst(1)]), [0, 0]);
    // So does a RST the control plane handed over (its flow not yet on the data path):
    // past the flow's own limit only.
    let mut proto = Protocol::new(arena.clone()).with_challenge_ack_limit(1);
    for id in 0..FLOWS {
        proto.install(id, TcpState::new(&params(0)));
    }
    let punted = |flow| ProtoWork::Rst {
        flow,
        seq: PEER_ISS + 10,
        challenge: true,
        ingress: 0,
        incarnation: 0,
    };
    assert_eq!(
        challenges(&mut proto, t0, vec![punted(0), punted(0)]),
        [1, 0]
    );
    assert_eq!(challenges(&mut proto, t0, vec![punted(1)]), [0, 0]);
}

/// Direct sends: as many updates send their first segment as allowed, the others ask
/// for a grant; an update whose result is a window update keeps it and asks too.
#[test]
fn direct_sends_stay_within_their_allowance() {
    let arena = Arc::new(FrameArena::new(64).unwrap());
    let mut proto = Protocol::new(arena.clone());
    for id in 0..FLOWS {
        proto.install(id, TcpState::new(&params(0)));
    }
    let now = Instant::from_micros(1_000);
    let write = |proto: &Protocol, flow: FlowId, n: u64, read_all: bool| {
        let st = proto.state(flow).unwrap();
        ProtoWork::App {
            flow,
            positions: Some((
                st.tx_app_end + n,
                if read_all { st.rx_pos } else { st.rx_tail },
            )),
            fin: false,
            closed: false,
            incarnation: 0,
        }
    };
    proto.set_direct_sends(1);
    let mut work = vec![write(&proto, 0, 100, false), write(&proto, 1, 100, false)];
    let mut results = Vec::new();
    proto.process(now, &mut work, &mut results);
    assert!(results[0].actions.any(Actions::TX | Actions::FETCH_PAYLOAD));
    assert_eq!(results[0].payload.len, 100);
    assert!(!results[0].actions.any(Actions::SCHED), "nothing left");
    // A direct send answers like a grant: the runtime settles the flow's earlier
    // requests of the burst with it.
    assert!(results[0].actions.any(Actions::GRANTED));
    assert!(!results[1].actions.any(Actions::TX), "past the allowance");
    assert!(results[1].actions.any(Actions::SCHED));
    assert!(
        !results[1].actions.any(Actions::GRANTED),
        "no segment: a request"
    );
    assert_eq!(proto.direct_sends_left(), 0);
    // Flow 0 took 4,100 bytes it has not read (its window is under half the ring):
    // reading them and writing at once makes a window update, which goes as it is.
    let mut peers = peers();
    let mut work = items(&arena, &[(0, Op::Data(820, false)); 5], &mut peers, &proto);
    results.clear();
    proto.process(now, &mut work, &mut results);
    for r in &mut results {
        arena.free(r.rx_frame.take().unwrap());
    }
    proto.set_direct_sends(4);
    let mut work = vec![write(&proto, 0, 50, true)];
    results.clear();
    proto.process(now, &mut work, &mut results);
    let r = &results[0];
    assert!(r.actions.any(Actions::TX | Actions::ACK_NOW), "{r:?}");
    assert_eq!(r.payload.len, 0, "the window update, not data");
    assert!(r.actions.any(Actions::SCHED), "the data asks for a grant");
    assert_eq!(proto.direct_sends_left(), 4);
    assert_eq!(arena.free_frames(), 64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// A stage that leaves ACK headers owed sends the same segments as one that writes
    /// every header, burst after burst, under both coalescing policies, and ends in the
    /// same state.
    #[test]
    fn owed_headers_send_what_written_headers_send(
        bursts in proptest::collection::vec(
            proptest::collection::vec((0..FLOWS, op()), 1..24), 1..8),
        delayed in any::<bool>(),
        rcv_shift in prop_oneof![Just(0u8), 1u8..4],
    ) {
        both_sides_alike(Pair::new(delayed, rcv_shift, false), &bursts, false, false)?;
    }

    /// The receiver's shortcut past `on_ack` (an ACK that acknowledges nothing, with
    /// nothing in flight, no SACK blocks and no congestion echoed) does what `on_ack`
    /// does: the same actions, the same segments sent, the same state.
    #[test]
    fn the_receivers_shortcut_does_what_on_ack_does(
        bursts in proptest::collection::vec(
            proptest::collection::vec((0..FLOWS, op()), 1..24), 1..8),
        delayed in any::<bool>(),
        rcv_shift in prop_oneof![Just(0u8), 1u8..4],
    ) {
        both_sides_alike(Pair::new(delayed, rcv_shift, true), &bursts, true, true)?;
    }

    /// A read's update applied without a work item where `Protocol::app_quiet` takes it
    /// (the inline runtime's rule: no earlier item of the same flow still queued)
    /// changes what its result would have: the same segments go out, every other
    /// result's actions are the same, the result it spares would have done nothing,
    /// and both end in the same state (but the count of results reported). Under delayed
    /// ACKs, not where sparing a read would join two runs of one flow's segments.
    #[test]
    fn quiet_reads_do_what_their_work_items_do(
        bursts in proptest::collection::vec(
            proptest::collection::vec((0..FLOWS, op()), 1..24), 1..8),
        delayed in any::<bool>(),
        rcv_shift in prop_oneof![Just(0u8), 1u8..4],
    ) {
        let Pair { arena, a: mut full, b: mut quiet, post_a: mut post_full,
            post_b: mut post_quiet, mut peers_a, mut peers_b } =
            Pair::new(delayed, rcv_shift, true);
        for (b, script) in bursts.iter().enumerate() {
            let now = Instant::from_micros(1_000 + 3_000 * b as u64);
            let wa = items(&arena, script, &mut peers_a, &full);
            let mut all = items(&arena, script, &mut peers_b, &full)
                .into_iter()
                .enumerate()
                .peekable();
            let mut wb = Vec::new();
            let mut spared = Vec::new();
            while let Some((i, w)) = all.next() {
                if let ProtoWork::App { flow, positions: Some((tx, rx)), .. } = w {
                    // Under delayed ACKs a flow's run of segments in a burst decides its
                    // ACK at its end: a read spared between two segments of one flow
                    // joins their runs and moves the decision (to a valid one, but not
                    // the same segments), so such a read keeps its work item here.
                    let joins = delayed
                        && matches!((wb.last(), all.peek()),
                            (Some(ProtoWork::Rx(p)), Some((_, ProtoWork::Rx(n))))
                                if p.flow == n.flow);
                    if !joins
                        && !wb.iter().any(|q: &ProtoWork| q.flow() == flow)
                        && quiet.app_quiet(flow, tx, rx)
                    {
                        spared.push(i);
                        continue;
                    }
                }
                wb.push(w);
            }
            let (sent_a, mut actions_a) = run(&arena, &mut full, &mut post_full, now, wa);
            let (sent_b, actions_b) = run(&arena, &mut quiet, &mut post_quiet, now, wb);
            for &i in spared.iter().rev() {
                let a = Actions(actions_a.remove(i));
                prop_assert!(
                    !a.any(!Actions::PEER_WINDOW_ZERO),
                    "a spared result would have done something: {:?}, burst {}", a, b
                );
                prop_assert!(sent_a.iter().all(|s| s.0 != i), "burst {}", b);
            }
            prop_assert_eq!(&actions_a, &actions_b, "actions, burst {}", b);
            // The echo left out where ACKs coalesce per burst: a read's item between two
            // segments of a flow has the first's ACK header written (and left unsent by
            // postprocess), which the stage takes for sent (`last_ack_sent`; see
            // `without_echo`). Under delayed ACKs such reads keep their items (`joins`).
            let segs = |s: &[(usize, FlowId, TxHeader)]| {
                let s = if delayed { s.to_vec() } else { without_echo(s) };
                s.into_iter().map(|(_, f, h)| (f, h)).collect::<Vec<_>>()
            };
            prop_assert_eq!(segs(&sent_a), segs(&sent_b), "segments sent, burst {}", b);
        }
        for id in 0..FLOWS {
            let (mut a, mut b) = (full.state(id).unwrap().clone(), quiet.state(id).unwrap().clone());
            a.stamp = b.stamp;
            for st in [&mut a, &mut b].into_iter().filter(|_| !delayed) {
                (st.ts_recent, st.ts_recent_ms, st.last_ack_sent) = (0, 0, 0);
            }
            prop_assert_eq!(&a, &b);
        }
        drop((post_full, post_quiet));
        prop_assert_eq!(arena.free_frames(), 256);
    }
}
