//! The link layer's hostile input: ARP packets (floods, claims on configured neighbours,
//! senders no neighbour can have) and frames from Ethernet addresses no station sends from.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use common::script::*;
use common::{IP_A, MAC_A};
use flextoe::stats::DropReason;
use flextoe::time::Clock;
use flextoe::wire::flags::*;
use flextoe::wire::{arp_request, emit_arp, parse_frame, MacAddr, Parsed};

/// A flood of ARP requests for our address from made-up senders is answered, but the
/// neighbour cache remembers at most `NEIGHBOR_LIMIT` of them; an ARP packet claiming a
/// configured neighbour's address does not move it.
#[test]
fn arp_flood_is_answered_but_not_all_remembered_and_configured_entries_stay() {
    use flextoe::control::NEIGHBOR_LIMIT;
    use flextoe::wire::{arp_request, emit_arp, parse_frame, Parsed};
    let mut t = Script::new(config());
    let bogus = MacAddr([0x02, 0xba, 0xd0, 0, 0, 2]);
    let extra = 40;
    let mut buf = vec![0u8; 128];
    for i in 0..NEIGHBOR_LIMIT + extra {
        let ip = Ipv4Addr::from(0x0a40_0000 + i as u32);
        let n = emit_arp(
            &mut buf,
            bogus,
            MacAddr::BROADCAST,
            &arp_request(bogus, ip, IP_A),
        )
        .unwrap();
        t.inject(&buf[..n]);
        if i % 64 == 63 {
            t.poll();
            while t.wire.recv_bytes(t.clock.now()).is_some() {}
        }
    }
    // The configured neighbour's address, claimed by a stranger.
    let n = emit_arp(
        &mut buf,
        bogus,
        MacAddr::BROADCAST,
        &arp_request(bogus, common::IP_B, IP_A),
    )
    .unwrap();
    t.inject(&buf[..n]);
    t.poll();
    while t.wire.recv_bytes(t.clock.now()).is_some() {}
    let c = t.engine.stats().control;
    assert_eq!(
        c.arp_replies,
        (NEIGHBOR_LIMIT + extra + 1) as u64,
        "every request answered"
    );
    assert_eq!(
        c.arp_not_learned, extra as u64,
        "the cache stopped at its limit"
    );
    // A connect to the configured neighbour still goes to its configured MAC.
    let _c = t
        .engine
        .host()
        .connect(SocketAddrV4::new(common::IP_B, 7))
        .unwrap();
    t.poll();
    let mut syns = Vec::new();
    while let Some(f) = t.wire.recv_bytes(t.clock.now()) {
        // Parsed as its receiver sees it: the destination is the tuple's local end.
        if let Ok(Parsed::Tcp(s)) = parse_frame(&f) {
            if s.tuple.local_port == 7 {
                syns.push(f[..6].to_vec());
            }
        }
    }
    assert_eq!(
        syns,
        vec![common::MAC_B.0.to_vec()],
        "the SYN goes to the configured MAC"
    );
}

/// A neighbour configured twice (the map keeps one entry) is counted once: an ARP request
/// for us then learns its sender (it used to underflow the count of learned entries).
#[test]
fn a_neighbour_configured_twice_is_counted_once() {
    use flextoe::wire::{arp_request, emit_arp};
    let cfg = config().neighbor(common::IP_B, common::MAC_B);
    let mut t = Script::new(cfg);
    let someone = MacAddr([0x02, 0, 0, 0, 0, 0x0c]);
    let mut buf = vec![0u8; 128];
    let req = arp_request(someone, Ipv4Addr::new(10, 9, 0, 3), IP_A);
    let n = emit_arp(&mut buf, someone, MacAddr::BROADCAST, &req).unwrap();
    t.inject(&buf[..n]);
    t.poll();
    let c = t.engine.stats().control;
    assert_eq!((c.arp_replies, c.arp_not_learned), (1, 0));
}

/// Frames from a group (broadcast, multicast) or all-zero Ethernet source are dropped and
/// counted, unanswered: a SYN to a listener got a SYN-ACK sent to the broadcast address (and
/// the connection's every later frame with it, a flood of the whole link at a peer's
/// asking).
#[test]
fn frames_from_group_or_zero_source_macs_get_no_answer() {
    use flextoe::wire::{emit_tcp, Endpoints};
    let mut t = Script::new(config());
    t.listen(8);
    let macs = [
        MacAddr::BROADCAST,
        MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]),
        MacAddr([0x33, 0x33, 0, 0, 0, 1]),
        MacAddr([0; 6]),
    ];
    let mut buf = vec![0u8; 2048];
    for (i, src_mac) in macs.into_iter().enumerate() {
        t.peer_port = PEER_PORT + i as u16;
        let repr = t.repr(SYN, PEER_ISS, None, &[]);
        let ep = Endpoints {
            src_mac,
            dst_mac: MAC_A,
            src_ip: common::IP_B,
            dst_ip: IP_A,
        };
        let n = emit_tcp(&mut buf, &ep, &repr).unwrap();
        t.inject(&buf[..n]);
    }
    t.poll();
    let answers = std::iter::from_fn(|| t.wire.recv_bytes(t.clock.now())).count();
    assert_eq!(answers, 0, "nothing answers a group or zero source");
    let st = t.engine.stats();
    assert_eq!(st.drops(DropReason::BadSourceMac), 4);
    assert_eq!(st.handshakes, 0, "no handshake began");
    // The same SYN from a station's address is answered.
    t.peer_port = PEER_PORT;
    t.send(SYN, PEER_ISS, None, &[]);
    let synack = t.recv_one();
    assert!(synack.has(SYN) && synack.has(ACK));
}

/// ARP packets from a sender address no neighbour can have (broadcast, multicast,
/// loopback, reserved, our own) are neither learned nor answered (`MartianSource`), and
/// neither is one sent from a group or zero Ethernet source (`BadSourceMac`, as every
/// frame). A request for our address from 0.0.0.0 (a duplicate-address probe, RFC 5227) is
/// answered, as Linux does; a probe for another address is ignored, uncounted. A connect to
/// an address that a dropped packet claimed still asks for it with ARP.
#[test]
fn arp_from_senders_no_neighbour_can_be_is_dropped_and_probes_are_answered() {
    let mut t = Script::new(config());
    let station = MacAddr([0x02, 0, 0, 0, 0, 0x33]);
    let far = Ipv4Addr::new(10, 9, 0, 50);
    let mut buf = vec![0u8; 128];
    let mut arp = |t: &mut Script, eth_src: MacAddr, spa: Ipv4Addr, tpa: Ipv4Addr| {
        let req = arp_request(station, spa, tpa);
        let n = emit_arp(&mut buf, eth_src, MacAddr::BROADCAST, &req).unwrap();
        t.inject(&buf[..n]);
        t.poll();
        std::iter::from_fn(|| t.wire.recv_bytes(t.clock.now())).collect::<Vec<_>>()
    };
    let cases = [
        (MacAddr::BROADCAST, far, DropReason::BadSourceMac),
        (
            MacAddr([0x01, 0, 0x5e, 0, 0, 9]),
            far,
            DropReason::BadSourceMac,
        ),
        (MacAddr([0; 6]), far, DropReason::BadSourceMac),
        (station, Ipv4Addr::BROADCAST, DropReason::MartianSource),
        (
            station,
            Ipv4Addr::new(224, 0, 0, 1),
            DropReason::MartianSource,
        ),
        (station, Ipv4Addr::LOCALHOST, DropReason::MartianSource),
        (
            station,
            Ipv4Addr::new(240, 0, 0, 1),
            DropReason::MartianSource,
        ),
        (station, IP_A, DropReason::MartianSource),
    ];
    for (i, (eth_src, spa, reason)) in cases.into_iter().enumerate() {
        let before = t.engine.stats().drops(reason);
        let sent = arp(&mut t, eth_src, spa, IP_A);
        assert!(sent.is_empty(), "case {i} answered");
        assert_eq!(t.engine.stats().drops(reason), before + 1, "case {i}");
    }
    assert_eq!(t.engine.stats().control.arp_replies, 0);
    // A probe for another address: none of ours, not counted.
    let drops = |t: &Script| {
        let st = t.engine.stats();
        st.drops(DropReason::MartianSource) + st.drops(DropReason::BadArp)
    };
    let before = drops(&t);
    let other = Ipv4Addr::new(10, 9, 0, 60);
    let sent = arp(&mut t, station, Ipv4Addr::UNSPECIFIED, other);
    assert!(sent.is_empty(), "a probe for another address answered");
    assert_eq!(drops(&t), before, "a probe for another address counted");
    // A duplicate-address probe for ours: answered to its sender, at 0.0.0.0.
    let sent = arp(&mut t, station, Ipv4Addr::UNSPECIFIED, IP_A);
    assert_eq!(sent.len(), 1, "the probe is answered");
    match parse_frame(&sent[0]) {
        Ok(Parsed::Arp(smoltcp::wire::ArpRepr::EthernetIpv4 {
            source_protocol_addr,
            target_hardware_addr,
            target_protocol_addr,
            ..
        })) => {
            assert_eq!(source_protocol_addr, IP_A);
            assert_eq!(target_hardware_addr, station);
            assert_eq!(target_protocol_addr, Ipv4Addr::UNSPECIFIED);
        }
        other => panic!("not an ARP reply: {other:?}"),
    }
    assert_eq!(&sent[0][..6], &station.0, "sent to the prober");
    // The dropped packets' claim on `far` was not learned: a connect asks with ARP.
    let _c = t.engine.host().connect(SocketAddrV4::new(far, 80)).unwrap();
    t.poll();
    let asked = std::iter::from_fn(|| t.wire.recv_bytes(t.clock.now()))
        .filter(|f| matches!(parse_frame(f), Ok(Parsed::Arp(_))))
        .count();
    assert_eq!(asked, 1, "the address is resolved with ARP");
}

/// In SYN-SENT, a RST whose ACK is not our ISS + 1 is dropped (RFC 9293 3.10.7.3) and
/// counted as `BadRst` (it was dropped uncounted); the connection goes on.
#[test]
fn a_rst_with_a_wrong_ack_in_syn_sent_is_dropped_and_counted() {
    let mut t = Script::new(config());
    let syn = t.start_connect();
    t.local_port = syn.src_port;
    let before = t.engine.stats().drops(DropReason::BadRst);
    t.send(RST | ACK, 0, Some(syn.seq.wrapping_add(2)), &[]);
    assert!(t.recv().is_empty(), "nothing answers it");
    assert_eq!(t.engine.stats().drops(DropReason::BadRst), before + 1);
    assert_eq!(
        t.stream().status(),
        flextoe::host::ConnStatus::Connecting,
        "the connection goes on"
    );
}
