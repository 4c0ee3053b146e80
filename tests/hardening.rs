//! Defects a network peer could exploit, one test each, named after the defect: a tiny MSS,
//! predictable initial sequence numbers, timestamps and ephemeral ports.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};

use common::script::*;
use common::{IP_A, IP_B, MAC_A};
use flextoe::control::secrets::Secrets;
use flextoe::control::MIN_PEER_MSS;
use flextoe::pipeline::EngineConfig;
use flextoe::time::{Clock, Instant};
use flextoe::wire::flags::*;
use flextoe::wire::{FourTuple, MacAddr, TS_OPT_LEN};

/// A SYN announcing an MSS below 12 together with timestamps used to underflow the payload
/// size (a panic in debug builds, a 65 KB "MSS" in release builds). The MSS is now clamped
/// to Linux's 88: the connection works and no segment carries more than 88 - 12 bytes.
#[test]
fn tiny_mss_with_timestamps_is_clamped_not_underflowed() {
    for announced in [0u16, 1, 11, 12, 40] {
        let mut t = Script::new(config());
        t.listen(4);
        let r = smoltcp::wire::TcpRepr {
            max_seg_size: Some(announced),
            timestamp: Script::ts(1000, 0),
            ..t.repr(SYN, PEER_ISS, None, &[])
        };
        t.send_repr(&r);
        let sa = t.recv_one();
        assert!(sa.has(SYN | ACK));
        t.peer_seq = PEER_ISS + 1;
        t.engine_seq = sa.seq.wrapping_add(1);
        let ack = smoltcp::wire::TcpRepr {
            timestamp: Script::ts(1001, sa.ts.expect("timestamps negotiated").0),
            ..t.repr(ACK, t.peer_seq, Some(t.engine_seq), &[])
        };
        t.send_repr(&ack);
        let mut s = t
            .listener
            .as_ref()
            .unwrap()
            .try_accept()
            .unwrap()
            .unwrap_or_else(|| panic!("MSS {announced}: established"));
        s.set_nonblocking(true);
        s.write_all(&[7u8; 1000]).unwrap();
        t.stream = Some(s);
        let segs = t.recv();
        let data: Vec<_> = segs.iter().filter(|s| !s.payload.is_empty()).collect();
        assert!(!data.is_empty(), "MSS {announced}: data goes out");
        let max = (MIN_PEER_MSS - TS_OPT_LEN as u16) as usize;
        for s in &data {
            assert!(
                s.payload.len() <= max,
                "MSS {announced}: {} bytes",
                s.payload.len()
            );
            assert!(s.ts.is_some());
        }
    }
}

fn tuple(i: u32) -> FourTuple {
    FourTuple {
        local_ip: Ipv4Addr::new(10, 0, 0, 1),
        local_port: 80,
        remote_ip: Ipv4Addr::from(0x0a00_0000 | (i >> 16)),
        remote_port: (i & 0xffff) as u16,
    }
}

/// The ISN key used to be a constant in every engine. Two engines built from default
/// configurations now give unrelated ISNs and timestamp offsets for the same 4-tuples:
/// over 4096 tuples no two agree, and their differences are as spread as random values.
#[test]
fn isns_and_timestamp_offsets_are_unrelated_across_engines() {
    let mac = MacAddr([2, 0, 0, 0, 0, 1]);
    let ip = Ipv4Addr::new(10, 0, 0, 1);
    let (a, b) = (
        EngineConfig::new(mac, ip).control.isn_secret,
        EngineConfig::new(mac, ip).control.isn_secret,
    );
    assert_ne!(a, b, "each configuration draws its own key");
    let (a, b) = (Secrets::new(a), Secrets::new(b));
    let n = 4096u32;
    let now = Instant::from_millis(5);
    let mut isn_diffs = HashSet::new();
    let mut ts_diffs = HashSet::new();
    let mut isn_a = HashSet::new();
    let mut equal = 0;
    for i in 0..n {
        let t = tuple(i);
        let (x, y) = (a.isn(&t, now), b.isn(&t, now));
        equal += u32::from(x == y);
        isn_diffs.insert(x.wrapping_sub(y));
        ts_diffs.insert(a.ts_offset(&t).wrapping_sub(b.ts_offset(&t)));
        isn_a.insert(x);
    }
    assert!(equal <= 1, "{equal} equal ISNs");
    // Random 32-bit differences collide with probability ~n^2/2^33: expect (almost) none.
    assert!(
        isn_diffs.len() as u32 >= n - 2,
        "{} distinct ISN differences",
        isn_diffs.len()
    );
    assert!(
        ts_diffs.len() as u32 >= n - 2,
        "{} distinct offset differences",
        ts_diffs.len()
    );
    assert!(
        isn_a.len() as u32 >= n - 2,
        "one engine's ISNs are spread over tuples"
    );
    // The same engine is consistent: same tuple, same time, same ISN; time moves it on.
    let t = tuple(7);
    assert_eq!(a.isn(&t, now), a.isn(&t, now));
    assert_eq!(
        a.isn(&t, Instant::from_millis(6))
            .wrapping_sub(a.isn(&t, now)),
        250,
        "the ISN clock ticks every 4 microseconds"
    );
}

/// Timestamps used to be the engine's clock in milliseconds, the same on every connection.
/// Each connection's timestamps now carry its own offset (RFC 7323 5.4).
#[test]
fn timestamps_carry_a_per_connection_offset() {
    let mut vals = Vec::new();
    for peer_port in [4000u16, 4001] {
        let mut t = Script::new(config());
        t.peer_port = peer_port;
        t.listen(4);
        let r = smoltcp::wire::TcpRepr {
            timestamp: Script::ts(1000, 0),
            ..t.repr(SYN, PEER_ISS, None, &[])
        };
        t.send_repr(&r);
        let sa = t.recv_one();
        vals.push(sa.ts.expect("timestamps negotiated").0);
    }
    // Both engines' clocks read the same time (0 ms): only the offsets differ.
    assert_ne!(vals[0], vals[1], "{vals:?}");
    assert!(vals.iter().all(|v| *v != 0), "{vals:?}");
}

/// Ephemeral ports used to be handed out in sequence from 49152. They are now random
/// (RFC 6056 algorithm 1).
#[test]
fn ephemeral_ports_are_random() {
    let t = Script::new(config());
    let ports: Vec<u16> = (0..64)
        .map(|_| {
            let s = t
                .engine
                .host()
                .connect(SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 2), 80))
                .unwrap();
            s.local_addr().port()
        })
        .collect();
    let distinct: HashSet<_> = ports.iter().collect();
    assert_eq!(distinct.len(), ports.len(), "no port twice");
    assert!(ports.iter().all(|p| *p >= 49152));
    let sequential = ports.windows(2).filter(|w| w[1] == w[0] + 1).count();
    assert!(sequential < 4, "ports follow each other: {ports:?}");
    let first = ports.iter().filter(|p| **p < 49152 + 64).count();
    assert!(
        first < 8,
        "ports bunch at the start of the range: {ports:?}"
    );
}

/// A port that reports a huge MTU.
struct HugeMtu(flextoe::backends::mem::MemPort, usize);

impl flextoe::backends::Port for HugeMtu {
    fn recv(
        &mut self,
        now: Instant,
        arena: &flextoe::buf::FrameArena,
        out: &mut Vec<flextoe::buf::Frame>,
        max: usize,
    ) -> usize {
        self.0.recv(now, arena, out, max)
    }
    fn send(
        &mut self,
        now: Instant,
        arena: &flextoe::buf::FrameArena,
        frames: &mut Vec<flextoe::buf::Frame>,
    ) -> usize {
        self.0.send(now, arena, frames)
    }
    fn mtu(&self) -> usize {
        self.1
    }
}

/// An MTU larger than a frame used to panic (over about 2000) or wrap to 0 (65536). It is
/// now clamped to what a frame holds, and full-size segments go through.
#[test]
fn port_mtu_larger_than_a_frame_is_clamped() {
    use flextoe::backends::mem::MemLink;
    use flextoe::pipeline::Engine;
    use flextoe::sim::Impairments;
    use std::io::Read;
    for mtu in [9000usize, 65536, 1 << 20] {
        let (a, b) = MemLink::pair(Impairments::none());
        let cfg = |mac: MacAddr, ip| {
            let mut c = EngineConfig::new(mac, ip);
            c.control.mtu = 9000;
            c
        };
        let (ip_a, ip_b) = (Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 1, 0, 2));
        let mut srv = Engine::new(cfg(MacAddr([2, 0, 0, 0, 0, 1]), ip_a), HugeMtu(a, mtu)).unwrap();
        let mut cli = Engine::new(cfg(MacAddr([2, 0, 0, 0, 0, 2]), ip_b), HugeMtu(b, mtu)).unwrap();
        let l = srv.host().listen(9, 4).unwrap();
        let mut c = cli.host().connect(SocketAddrV4::new(ip_a, 9)).unwrap();
        c.set_nonblocking(true);
        let data: Vec<u8> = (0..200_000).map(|i| (i % 241) as u8).collect();
        let (mut sent, mut got) = (0, Vec::new());
        let mut s = None;
        let mut buf = vec![0u8; 65536];
        for i in 0..200_000u64 {
            let now = Instant::from_micros(i * 10);
            cli.poll(now);
            srv.poll(now);
            if sent < data.len() {
                if let Ok(n) = c.write(&data[sent..]) {
                    sent += n;
                }
            }
            if s.is_none() {
                s = l.try_accept().unwrap();
            }
            if let Some(s) = s.as_mut() {
                s.set_nonblocking(true);
                if let Ok(n) = s.read(&mut buf) {
                    got.extend_from_slice(&buf[..n]);
                }
            }
            if got.len() == data.len() {
                break;
            }
        }
        assert_eq!(got, data, "MTU {mtu}");
        let t = cli.connections()[0];
        let mss = cli.tcp_state(&t).expect("flow").mss as usize;
        let room = flextoe::buf::FRAME_SIZE - flextoe::buf::HEADROOM;
        assert!(mss > 1400, "MTU {mtu}: MSS {mss} uses the larger frames");
        assert!(
            mss + 14 + 4 + 40 + TS_OPT_LEN <= room,
            "MTU {mtu}: MSS {mss}"
        );
    }
}

/// With the flow table full (handshakes in progress included), a SYN used to be answered
/// with a SYN-ACK and the connection dropped once the handshake completed. It is now refused
/// at once with a RST, and counted.
#[test]
fn syn_with_flow_table_full_gets_rst() {
    use flextoe::stats::DropReason;
    let mut cfg = config();
    cfg.control.max_flows = 2;
    let mut t = Script::new(cfg);
    t.listen(8);
    for port in [4000u16, 4001] {
        t.peer_port = port;
        t.peer_seq = PEER_ISS;
        t.syn();
        t.send_ack();
    }
    t.peer_port = 4002;
    t.send(SYN, PEER_ISS, None, &[]);
    let rst = t.recv_one();
    assert!(rst.has(RST | ACK), "{rst:?}");
    assert_eq!(rst.ack, PEER_ISS + 1);
    assert_eq!(rst.dst_port, 4002);
    let drops = t
        .engine
        .stats()
        .control
        .drops
        .get(DropReason::FlowTableFull);
    assert_eq!(drops, 1);
    let l = t.listener.as_ref().unwrap();
    let mut accepted = 0;
    while let Ok(Some(_)) = l.try_accept() {
        accepted += 1;
    }
    assert_eq!(accepted, 2, "the two connections that fit are there");
    assert_eq!(t.engine.flow_count(), 2);
}

/// URG segments used to be punted, re-injected, punted again and freed: never acknowledged,
/// so the connection stalled. Urgent data is now delivered inline and acknowledged, on the
/// data path: neither URG nor an unknown option sends a segment of an established
/// connection through the control plane (a peer could slow every flow to its pace).
#[test]
fn urgent_data_is_delivered_inline_and_acked() {
    let mut t = Script::new(config());
    t.accept_established();
    let punted = t.engine.stats().control.punted;
    let payload = b"urgent!";
    let r = t.repr(PSH | ACK, t.peer_seq, Some(t.engine_seq), payload);
    let mut f = t.frame(&r);
    // URG flag and an urgent pointer to the end of the data, checksums redone.
    let tcp = 14 + 20;
    f[tcp + 13] |= URG;
    f[tcp + 18..tcp + 20].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    flextoe::wire::fill_checksums(&mut f);
    t.inject(&f);
    let acks = t.recv();
    let want = t.peer_seq + payload.len() as u32;
    assert!(
        acks.iter().any(|s| s.has(ACK) && s.ack == want),
        "urgent data acknowledged: {acks:?}"
    );
    assert_eq!(t.app_read(), payload);
    // And the connection goes on, with an unknown option (kind 99) as well.
    t.peer_seq = want;
    let r = t.repr(PSH | ACK, t.peer_seq, Some(t.engine_seq), b"more");
    let mut f = t.frame(&r);
    let tcp = 14 + 20;
    let doff = usize::from(f[tcp + 12] >> 4) * 4;
    f[tcp + 12] += 1 << 4;
    f.splice(tcp + doff..tcp + doff, [99, 2, 1, 1]);
    let ip_len = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    flextoe::wire::fill_checksums(&mut f);
    t.inject(&f);
    t.poll();
    assert_eq!(t.app_read(), b"more");
    assert_eq!(t.engine.stats().control.punted, punted);
}

/// A SYN used to teach the neighbour cache its source MAC: anyone could poison the entry of
/// an address the engine later connects to (and fill the cache). The engine now resolves
/// that address with ARP instead.
#[test]
fn syn_does_not_teach_the_neighbour_cache() {
    use flextoe::wire::{emit_tcp, parse_frame, Endpoints, Parsed};
    let ip_c = Ipv4Addr::new(10, 9, 0, 3);
    let bogus = MacAddr([0x02, 0xba, 0xd0, 0, 0, 1]);
    let mut t = Script::new(config());
    t.listen(8);
    let repr = t.repr(SYN, PEER_ISS, None, &[]);
    let mut buf = vec![0u8; 2048];
    let ep = Endpoints {
        src_mac: bogus,
        dst_mac: MAC_A,
        src_ip: ip_c,
        dst_ip: IP_A,
    };
    let n = emit_tcp(&mut buf, &ep, &repr).unwrap();
    t.inject(&buf[..n]);
    t.poll();
    while t.wire.recv_bytes(t.clock.now()).is_some() {}
    let _c = t.engine.host().connect(SocketAddrV4::new(ip_c, 7)).unwrap();
    t.poll();
    let (mut arp_requests, mut syns_to_bogus) = (0, 0);
    while let Some(f) = t.wire.recv_bytes(t.clock.now()) {
        match parse_frame(&f) {
            Ok(Parsed::Arp(_)) => arp_requests += 1,
            Ok(Parsed::Tcp(s)) if f[..6] == bogus.0 && s.tuple.local_port == 7 => {
                syns_to_bogus += 1
            }
            _ => {}
        }
    }
    assert_eq!(
        syns_to_bogus, 0,
        "no SYN to the MAC a stranger's SYN claimed"
    );
    assert_eq!(arp_requests, 1, "the address is resolved with ARP");
}

/// A segment of no connection from a source no connection can have (broadcast,
/// multicast, unspecified, loopback, reserved, our own address) is dropped unanswered: no
/// SYN-ACK, no RST.
#[test]
fn segments_from_martian_sources_get_no_answer() {
    use flextoe::stats::DropReason;
    use flextoe::wire::{emit_tcp, Endpoints};
    let mut t = Script::new(config());
    t.listen(8);
    let sources = [
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 1),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(240, 0, 0, 9),
        IP_A,
    ];
    let mut buf = vec![0u8; 2048];
    for (i, src_ip) in sources.into_iter().enumerate() {
        for (fl, port) in [(SYN, LOCAL_PORT), (ACK, LOCAL_PORT + 1)] {
            let mut repr = t.repr(fl, PEER_ISS, (fl == ACK).then_some(5), &[]);
            repr.dst_port = port;
            let ep = Endpoints {
                src_mac: MacAddr([0x02, 0, 0, 0, 1, i as u8]),
                dst_mac: MAC_A,
                src_ip,
                dst_ip: IP_A,
            };
            let n = emit_tcp(&mut buf, &ep, &repr).unwrap();
            t.inject(&buf[..n]);
        }
    }
    t.poll();
    let answers = std::iter::from_fn(|| t.wire.recv_bytes(t.clock.now())).count();
    assert_eq!(answers, 0, "nothing answers a martian source");
    let drops = t.engine.stats().control.drops;
    assert_eq!(drops.get(DropReason::MartianSource), 12);
    assert_eq!(t.engine.stats().handshakes, 0, "no handshake began");
}

/// Every SYN used to allocate the connection's two rings (here 128 KiB; 512 KiB by
/// default) and hold them until the handshake timed out. Rings are now made when the
/// handshake completes.
#[test]
fn syn_allocates_no_rings_until_the_handshake_completes() {
    let mut t = Script::new(config());
    t.listen(512);
    let host = t.engine.host();
    for i in 0..200u16 {
        t.peer_port = 20_000 + i;
        t.send(SYN, PEER_ISS, None, &[]);
    }
    let synacks = t.recv();
    assert_eq!(synacks.len(), 200, "every SYN answered");
    assert_eq!(host.rings_made(), 0, "no rings for half-open connections");
    // Completing one handshake gives that connection its rings.
    t.peer_port = 20_000;
    t.peer_seq = PEER_ISS + 1;
    t.engine_seq = synacks[0].seq.wrapping_add(1);
    t.send_ack();
    assert_eq!(host.rings_made(), 1);
    let mut s = t.listener.as_ref().unwrap().try_accept().unwrap().unwrap();
    s.set_nonblocking(true);
    s.write_all(b"ok").unwrap();
    let seg = t.recv_one();
    assert_eq!(seg.payload, b"ok");
}

/// RFC 5961 section 5: data whose ACK lies below SND.UNA - MAX.SND.WND used to be accepted
/// (a blind injection needs only a plausible sequence number). It is now dropped with an
/// ACK in reply, and counted; a sane ACK on the same data is accepted afterwards.
#[test]
fn ack_below_snd_una_minus_max_window_drops_the_data() {
    use flextoe::stats::DropReason;
    let mut t = Script::new(config());
    t.accept_established();
    let (s, a) = (t.peer_seq, t.engine_seq);
    t.send(PSH | ACK, s, Some(a.wrapping_sub(1 << 30)), b"injected");
    let reply = t.recv_one();
    assert!(reply.has(ACK) && reply.payload.is_empty());
    assert_eq!(reply.ack, s, "nothing was accepted");
    assert!(t.app_read().is_empty());
    let proto = t
        .engine
        .stats()
        .stages
        .into_iter()
        .find(|(n, _)| *n == "protocol")
        .unwrap()
        .1;
    assert_eq!(proto.drops.get(DropReason::AckTooOld), 1);
    t.send_data(b"genuine");
    assert_eq!(t.app_read(), b"genuine");
}

/// SYN flood, in memory: a listener with a backlog of 2 took two handshakes and dropped every
/// later SYN, so a legitimate client could not connect until the flood's handshakes timed
/// out (about a minute). SYNs beyond the half-open queue now get a SYN cookie (RFC 4987):
/// no state is kept, and the ACK that returns the cookie creates the connection with the
/// MSS (rounded down to the cookie table), window scale, SACK-permitted and timestamps the
/// SYN offered. A forged or stale cookie gets a RST and creates nothing.
#[test]
fn syn_flood_is_answered_with_cookies_and_a_client_still_connects() {
    let mut t = Script::new(config());
    t.listen(2);
    for i in 0..500u16 {
        t.peer_port = 30_000 + i;
        t.send(SYN, PEER_ISS + u32::from(i), None, &[]);
    }
    assert_eq!(t.recv().len(), 500, "every SYN answered");
    let st = t.engine.stats();
    assert_eq!(st.handshakes, 2, "half-open state stays at the backlog");
    assert_eq!(st.control.cookies_sent, 498);
    assert_eq!(t.engine.host().rings_made(), 0);

    // A legitimate client, with every option.
    t.peer_port = 40_000;
    let syn = smoltcp::wire::TcpRepr {
        max_seg_size: Some(1400),
        window_scale: Some(7),
        sack_permitted: true,
        timestamp: Script::ts(5000, 0),
        ..t.repr(SYN, PEER_ISS, None, &[])
    };
    t.send_repr(&syn);
    let sa = t.recv_one();
    assert!(sa.has(SYN | ACK) && sa.sack_permitted && sa.wscale.is_some());
    let (our_ts, echo) = sa.ts.expect("timestamps");
    assert_eq!(echo, 5000);
    assert_eq!(t.engine.stats().handshakes, 2, "the cookie keeps nothing");
    t.peer_seq = PEER_ISS + 1;
    t.engine_seq = sa.seq.wrapping_add(1);
    // A forged cookie first: a RST, no connection.
    let forged = smoltcp::wire::TcpRepr {
        timestamp: Script::ts(5001, our_ts),
        ..t.repr(ACK, t.peer_seq, Some(t.engine_seq ^ 0x100), &[])
    };
    t.send_repr(&forged);
    assert!(t.recv_one().has(RST));
    // Options in the echo are covered by the cookie: a changed echo fails too.
    let tampered = smoltcp::wire::TcpRepr {
        timestamp: Script::ts(5001, our_ts ^ 0x10),
        ..t.repr(ACK, t.peer_seq, Some(t.engine_seq), &[])
    };
    t.send_repr(&tampered);
    assert!(t.recv_one().has(RST));
    assert_eq!(t.engine.stats().flows, 0);
    // The real ACK, with data.
    let ack = smoltcp::wire::TcpRepr {
        timestamp: Script::ts(5001, our_ts),
        ..t.repr(PSH | ACK, t.peer_seq, Some(t.engine_seq), b"hello")
    };
    t.send_repr(&ack);
    let st = t.engine.stats();
    assert_eq!((st.flows, st.control.cookies_accepted), (1, 1));
    // The cookie's timestamp (options in its low bits) is never ahead of the connection's
    // clock: the peer's PAWS would otherwise drop the engine's next segments.
    let acks = t.recv();
    assert!(!acks.is_empty(), "the data is acknowledged");
    for seg in acks {
        let later = seg.ts.expect("timestamps").0;
        assert!(
            flextoe::wire::seq::le(our_ts, later),
            "{our_ts} then {later}"
        );
    }
    let tcp = t.engine.tcp_state(&t.tuple()).expect("connection").clone();
    assert_eq!(tcp.snd_shift, 7, "the peer's window scale came back");
    assert!(tcp.sack(), "SACK-permitted came back");
    assert_eq!(
        tcp.mss as usize,
        1300 - TS_OPT_LEN,
        "MSS 1400 rounded down to 1300"
    );
    let mut s = t.listener.as_ref().unwrap().try_accept().unwrap().unwrap();
    s.set_nonblocking(true);
    let mut buf = [0u8; 16];
    assert_eq!(std::io::Read::read(&mut s, &mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");
}

/// Cookies are checked only while a listener's cookies can be valid, never past the accept
/// queue, and a listener's later segment that is no cookie draws no RST while cookies are
/// out. Every ACK to a listener used to be checked as a cookie, flood or not (a blind peer
/// could try cookies until one fit, 24 bits of MAC, and open a connection from any address);
/// a cookie ACK with the accept queue full was installed and reset at once; and a cookie
/// connection's second data segment, ahead of its first, drew a RST the peer takes as exact.
#[test]
fn cookies_are_checked_only_while_out_and_never_past_the_accept_queue() {
    use flextoe::stats::DropReason;
    let mut t = Script::new(config());
    t.listen(1);
    t.syn();
    // The half-open queue is full: cookies from here on.
    let cookie = |t: &mut Script, port: u16| {
        t.peer_port = port;
        t.send(SYN, PEER_ISS, None, &[]);
        let sa = t.recv_one();
        assert!(sa.has(SYN | ACK));
        (PEER_ISS + 1, sa.seq.wrapping_add(1))
    };
    let (seq, ack) = cookie(&mut t, 40_001);
    let (seq2, ack2) = cookie(&mut t, 40_002);
    // A segment with data that is no valid cookie (a later segment, come first): no RST.
    t.peer_port = 40_001;
    t.send(PSH | ACK, seq + 5, Some(ack), b"later");
    t.recv_none();
    assert_eq!(t.engine.stats().flows, 0);
    // Its first segment makes the connection.
    t.send(PSH | ACK, seq, Some(ack), b"first");
    let st = t.engine.stats();
    assert_eq!((st.flows, st.control.cookies_accepted), (1, 1));
    // The accept queue (backlog 1) now holds it: a valid cookie ACK is dropped, not
    // installed and reset.
    t.recv();
    let rsts = t.engine.stats().control.rst_sent;
    let full = t.engine.stats().control.drops.get(DropReason::BacklogFull);
    t.peer_port = 40_002;
    t.send(ACK, seq2, Some(ack2), &[]);
    t.recv_none();
    let st = t.engine.stats();
    assert_eq!((st.flows, st.control.cookies_accepted), (1, 1));
    assert_eq!(st.control.drops.get(DropReason::BacklogFull), full + 1);
    assert_eq!(st.control.rst_sent, rsts);
    // Once the application took the connection, the same ACK makes one.
    let listener = t.listener.take().unwrap();
    let _first = listener.try_accept().unwrap().unwrap();
    t.send(ACK, seq2, Some(ack2), &[]);
    assert_eq!(t.engine.stats().control.cookies_accepted, 2);
    let _second = listener.try_accept().unwrap().unwrap();
    // A listener that sent no cookie checks none: a cookie its port's earlier listener
    // sent, valid for its MAC, gets a RST and makes nothing.
    let (seq3, ack3) = cookie(&mut t, 40_003);
    drop(listener);
    t.poll();
    t.listen(1);
    t.send(ACK, seq3, Some(ack3), &[]);
    assert!(t.recv_one().has(RST));
    assert_eq!(t.engine.stats().control.cookies_accepted, 2);
}

/// A handshake whose final ACK finds the accept queue full waits (its ACK dropped, as
/// Linux) instead of being installed and reset at once: with a backlog of 2, two
/// handshakes in progress, one completed, a third admitted and the second completed, the
/// third's ACK (with data) used to reset it. Once the application takes a connection, the
/// same ACK completes it.
#[test]
fn a_final_ack_that_finds_the_accept_queue_full_waits() {
    use flextoe::stats::DropReason;
    let mut t = Script::new(config());
    t.listen(2);
    let syn = |t: &mut Script, port: u16| {
        t.peer_port = port;
        t.send(SYN, PEER_ISS, None, &[]);
        let sa = t.recv_one();
        assert!(
            sa.has(SYN | ACK) && sa.mss.is_some(),
            "a handshake, not a cookie"
        );
        sa.seq.wrapping_add(1)
    };
    let ack = |t: &mut Script, port: u16, a: u32, data: &[u8]| {
        t.peer_port = port;
        t.send(PSH | ACK, PEER_ISS + 1, Some(a), data);
    };
    let a = syn(&mut t, 40_001);
    let b = syn(&mut t, 40_002);
    ack(&mut t, 40_001, a, &[]);
    let c = syn(&mut t, 40_003);
    ack(&mut t, 40_002, b, &[]);
    assert_eq!(t.engine.stats().flows, 2);
    let full = t.engine.stats().control.drops.get(DropReason::BacklogFull);
    ack(&mut t, 40_003, c, b"x");
    let out = t.recv();
    assert!(out.iter().all(|s| !s.has(RST)), "{out:?}");
    let st = t.engine.stats();
    assert_eq!(st.flows, 2);
    assert_eq!(st.control.drops.get(DropReason::BacklogFull), full + 1);
    let listener = t.listener.take().unwrap();
    let _first = listener.try_accept().unwrap().unwrap();
    ack(&mut t, 40_003, c, b"x");
    assert_eq!(t.engine.stats().flows, 3);
    let _second = listener.try_accept().unwrap().unwrap();
    let mut third = listener.try_accept().unwrap().unwrap();
    third.set_nonblocking(true);
    let mut buf = [0u8; 4];
    assert_eq!(std::io::Read::read(&mut third, &mut buf).unwrap(), 1);
}

/// A listener dropped and made again on its port at once: the port is free straight away
/// (it was freed only when the engine took the drop, so the second `listen` failed with
/// `AddrInUse`), and the handshake the first one had in progress goes with it (its final
/// ACK completed it into the new listener's queue): that ACK gets a RST.
#[test]
fn a_listener_made_again_at_once_gets_the_port_and_no_old_handshake() {
    let mut t = Script::new(config());
    t.listen(8);
    let sa = t.syn();
    drop(t.listener.take());
    t.listener = Some(
        t.engine
            .host()
            .listen(t.local_port, 8)
            .expect("the port is free"),
    );
    t.poll();
    t.send(ACK, PEER_ISS + 1, Some(sa.seq.wrapping_add(1)), &[]);
    assert!(t.recv_one().has(RST));
    let st = t.engine.stats();
    assert_eq!((st.flows, st.handshakes), (0, 0), "{st}");
    assert!(t.listener.as_ref().unwrap().try_accept().unwrap().is_none());
    // The new listener makes connections of its own.
    t.peer_port += 1;
    t.peer_seq = PEER_ISS;
    t.syn();
    t.send_ack();
    assert!(t.listener.as_ref().unwrap().try_accept().unwrap().is_some());
}

/// A `connect` with the flow table full (here: one connection established, one waiting
/// for ARP, one in its handshake) is refused before any SYN goes out, with its own error:
/// it used to send the SYN, then reset the connection the peer accepted. A `connect` to the
/// engine's own address or to a non-unicast one fails at once (it timed out).
#[test]
fn a_connect_past_the_flow_table_is_refused_at_once() {
    use flextoe::host::{ConnStatus, Error};
    use flextoe::stats::DropReason;
    let mut cfg = config();
    cfg.control.max_flows = 3;
    let mut t = Script::new(cfg);
    t.connect_established();
    let host = t.engine.host();
    // An address the engine has no MAC for: the connection waits for ARP.
    let far = Ipv4Addr::new(10, 0, 0, 77);
    let _arp = host.connect(SocketAddrV4::new(far, 80)).unwrap();
    let _syn = host.connect(SocketAddrV4::new(IP_B, 81)).unwrap();
    let out = t.recv();
    assert_eq!(out.iter().filter(|s| s.has(SYN)).count(), 1, "{out:?}");
    let full = host.connect(SocketAddrV4::new(IP_B, 82)).unwrap();
    t.recv_none();
    assert_eq!(full.status(), ConnStatus::TableFull);
    assert_eq!(
        full.wait_connected(Some(std::time::Duration::ZERO)),
        Err(Error::TooManyConnections)
    );
    let st = t.engine.stats();
    assert_eq!(st.control.drops.get(DropReason::FlowTableFull), 1, "{st}");
    for bad in [
        IP_A,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 1),
    ] {
        assert!(matches!(
            host.connect(SocketAddrV4::new(bad, 80)).map(|_| ()),
            Err(Error::InvalidInput(_))
        ));
    }
}

/// A valid cookie ACK that finds the flow table promised (a handshake in progress, a
/// connect waiting for ARP) gets a RST: it was installed in the flow that the connect then
/// found taken (reset after its peer accepted it).
#[test]
fn a_cookie_past_the_promised_flows_is_refused() {
    use flextoe::stats::DropReason;
    let mut cfg = config();
    cfg.control.max_flows = 2;
    let mut t = Script::new(cfg);
    t.listen(1);
    t.syn();
    // The half-open queue is full: a cookie, while one flow is left.
    t.peer_port = 40_001;
    t.send(SYN, PEER_ISS, None, &[]);
    let sa = t.recv_one();
    assert!(sa.has(SYN | ACK));
    // The last flow is promised to a connect waiting for ARP.
    let _arp = t
        .engine
        .host()
        .connect(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 77), 80))
        .unwrap();
    t.recv();
    t.send(ACK, PEER_ISS + 1, Some(sa.seq.wrapping_add(1)), &[]);
    assert!(t.recv_one().has(RST));
    let st = t.engine.stats();
    assert_eq!((st.flows, st.control.cookies_accepted), (0, 0), "{st}");
    assert_eq!(st.control.drops.get(DropReason::FlowTableFull), 1);
}

/// A listen backlog of `usize::MAX` is cut to `MAX_BACKLOG` (the accept queue is made at
/// the backlog's size: it panicked, with the port left taken for good).
#[test]
fn a_huge_backlog_is_cut_not_a_panic() {
    let t = Script::new(config());
    let l = t.engine.host().listen(81, usize::MAX).unwrap();
    drop(l);
    assert!(t.engine.host().listen(82, 1 << 40).is_ok());
}

/// Half-open connections are bounded engine-wide (`max_half_open`), not only per listener:
/// with cookies off, SYNs beyond the bound are dropped and counted.
#[test]
fn half_open_connections_are_bounded() {
    let mut cfg = config();
    cfg.control.max_half_open = 8;
    cfg.control.syn_cookies = false;
    let mut t = Script::new(cfg);
    t.listen(1000);
    for i in 0..100u16 {
        t.peer_port = 30_000 + i;
        t.send(SYN, PEER_ISS, None, &[]);
    }
    assert_eq!(t.recv().len(), 8);
    let st = t.engine.stats();
    assert_eq!(st.handshakes, 8);
    assert_eq!(st.drops(flextoe::stats::DropReason::BacklogFull), 92);
}

/// A peer that ACKs our FIN and goes silent used to pin the connection in FIN-WAIT-2
/// forever. Once the application has closed it (an orphan), FIN-WAIT-2 lasts at most
/// `fin_wait2_timeout` (60 s by default).
#[test]
fn orphan_in_fin_wait_2_is_freed_after_the_timeout() {
    use flextoe::control::TcpConnState;
    let mut t = Script::new(config());
    t.accept_established();
    t.stream = None;
    let fin = t.recv_one();
    assert!(fin.has(FIN));
    t.engine_seq = t.engine_seq.wrapping_add(1);
    t.send_ack();
    assert_eq!(t.state(), Some(TcpConnState::FinWait2));
    t.advance(std::time::Duration::from_secs(59));
    assert_eq!(t.state(), Some(TcpConnState::FinWait2));
    t.advance(std::time::Duration::from_secs(2));
    assert_eq!(t.state(), None, "freed");
    let st = t.engine.stats();
    assert_eq!((st.flows, st.control.fin_wait2_timeouts), (0, 1));
}

/// An application writes, closes, and the peer holds its window at zero: the engine used to
/// probe forever, holding the flow and its rings. An orphan gets `orphan_retries` probes,
/// then a RST.
#[test]
fn orphan_facing_a_zero_window_is_aborted_after_orphan_retries() {
    let mut t = Script::new(config());
    t.accept_established();
    t.stream().write_all(&[1u8; 3000]).unwrap();
    let segs = t.recv();
    let sent: usize = segs.iter().map(|s| s.payload.len()).sum();
    let (s, a) = (t.peer_seq, t.engine_seq.wrapping_add(sent as u32));
    let zero = smoltcp::wire::TcpRepr {
        window_len: 0,
        ..t.repr(ACK, s, Some(a), &[])
    };
    t.send_repr(&zero);
    t.stream().write_all(&[2u8; 1000]).unwrap();
    t.stream = None;
    t.advance(std::time::Duration::from_secs(600));
    let out = t.recv();
    assert!(out.iter().any(|s| s.has(RST)), "aborted with a RST");
    let st = t.engine.stats();
    assert_eq!(st.flows, 0);
    assert_eq!(st.control.orphans_aborted, 1);
    assert_eq!(st.control.probes, 8, "orphan_retries probes, then the RST");
}

/// A peer that shuts its window and then answers no probe used to hold a connection open
/// for as long as the application did (only orphans were given up). Now it is reset after
/// `max_retransmissions` unanswered probes in a row, as a retransmission timeout would;
/// a peer that answers each probe, even with a zero window, keeps it as long as it likes.
#[test]
fn a_zero_window_peer_that_answers_no_probe_is_given_up() {
    use std::time::Duration;
    let zero_window = |t: &mut Script, sent: usize| {
        let (s, a) = (t.peer_seq, t.engine_seq.wrapping_add(sent as u32));
        let zero = smoltcp::wire::TcpRepr {
            window_len: 0,
            ..t.repr(ACK, s, Some(a), &[])
        };
        t.send_repr(&zero);
    };
    let setup = || {
        let mut cfg = config();
        cfg.control.rto_max = Duration::from_secs(2);
        cfg.control.max_retransmissions = 5;
        let mut t = Script::new(cfg);
        t.accept_established();
        t.stream().write_all(&[1u8; 3000]).unwrap();
        let sent: usize = t.recv().iter().map(|s| s.payload.len()).sum();
        zero_window(&mut t, sent);
        t.stream().write_all(&[2u8; 1000]).unwrap();
        (t, sent)
    };
    // Answered: twelve probes, each answered with the window still shut.
    let (mut t, sent) = setup();
    for _ in 0..12 {
        t.advance(Duration::from_secs(3));
        let out = t.recv();
        assert!(
            !out.is_empty() && out.iter().all(|s| !s.has(RST)),
            "{out:?}"
        );
        zero_window(&mut t, sent);
    }
    assert!(t.engine.stats().control.probes >= 12);
    assert_eq!(t.state(), Some(flextoe::control::TcpConnState::Established));
    // Silent: five probes, then the RST, and the application learns it timed out.
    let (mut t, _) = setup();
    t.advance(Duration::from_secs(60));
    let out = t.recv();
    assert!(out.iter().any(|s| s.has(RST)), "aborted with a RST");
    let st = t.engine.stats();
    assert_eq!((st.flows, st.control.probes), (0, 5));
    assert_eq!(t.stream().status(), flextoe::host::ConnStatus::TimedOut);
}

/// At most `max_orphans` closed connections may still be finishing: beyond, a newly closed
/// connection is reset at once.
#[test]
fn orphans_beyond_the_cap_are_reset() {
    let mut cfg = config();
    cfg.control.max_orphans = 2;
    let mut t = Script::new(cfg);
    t.listen(8);
    let mut streams = Vec::new();
    for i in 0..3u16 {
        t.peer_port = 41_000 + i;
        t.peer_seq = PEER_ISS;
        t.syn();
        t.send_ack();
        streams.push(t.listener.as_ref().unwrap().try_accept().unwrap().unwrap());
    }
    t.recv();
    // The peer never ACKs the FINs: all three stay in FIN-WAIT-1.
    drop(streams);
    let out = t.recv();
    assert_eq!(out.iter().filter(|s| s.has(RST)).count(), 1, "{out:?}");
    assert_eq!(out.iter().filter(|s| s.has(FIN)).count(), 2, "{out:?}");
    let st = t.engine.stats();
    assert_eq!((st.flows, st.control.orphans_aborted), (2, 1));
}

/// Keep-alives turned on for a connection the timers had set aside (idle for 5 s): the
/// probe that is already due goes out within a millisecond, not at the end of the
/// connection's parking (up to 100 ms).
#[test]
fn keepalive_set_on_a_long_idle_connection_probes_at_once() {
    use flextoe::host::Keepalive;
    use std::time::Duration;
    let mut t = Script::new(config());
    t.accept_established();
    t.advance(Duration::from_secs(5));
    t.recv_none();
    t.stream().set_keepalive(Some(Keepalive {
        idle: Duration::from_secs(1),
        interval: Duration::from_secs(1),
        count: 3,
    }));
    t.advance(Duration::from_millis(1));
    let probe = t.recv_one();
    assert!(probe.payload.is_empty() && probe.has(ACK));
    assert_eq!(probe.seq, t.engine_seq.wrapping_sub(1));
    assert_eq!(t.engine.stats().control.keepalive_probes, 1);
}

/// Keep-alives (RFC 1122 4.2.3.6) as a socket option: after `idle` without a segment from
/// the peer a probe goes out every `interval`; an answer starts the count again, and after
/// `count` unanswered probes the connection is aborted as timed out.
#[test]
fn keepalives_probe_an_idle_peer_and_give_up() {
    use flextoe::host::{ConnStatus, Keepalive};
    use std::time::Duration;
    let mut t = Script::new(config());
    t.accept_established();
    t.stream().set_keepalive(Some(Keepalive {
        idle: Duration::from_secs(10),
        interval: Duration::from_secs(2),
        count: 3,
    }));
    t.advance(Duration::from_millis(9_900));
    t.recv_none();
    t.advance(Duration::from_millis(200));
    let probe = t.recv_one();
    assert!(probe.payload.is_empty() && probe.has(ACK));
    assert_eq!(
        probe.seq,
        t.engine_seq.wrapping_sub(1),
        "below SND.UNA: must be answered"
    );
    // The peer answers: idle again from here.
    t.send_ack();
    t.advance(Duration::from_millis(9_900));
    t.recv_none();
    // Probes at 10, 12 and 14 s after the answer; the abort at 16 s.
    t.advance(Duration::from_secs(5));
    let out = t.recv();
    assert_eq!(out.len(), 3, "{out:?}");
    assert!(out.iter().all(|s| !s.has(RST)));
    t.advance(Duration::from_secs(2));
    let out = t.recv();
    assert!(out.iter().any(|s| s.has(RST)), "{out:?}");
    assert_eq!(t.stream().status(), ConnStatus::TimedOut);
    let st = t.engine.stats();
    assert_eq!(
        (st.control.keepalive_probes, st.control.keepalive_timeouts),
        (4, 1)
    );
}
