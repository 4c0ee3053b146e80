//! ICMP echo (ping): requests to the engine are answered with their identifier, sequence
//! number and data (RFC 792, RFC 1122 3.2.2.6), within a rate limit, on the inline and the
//! threaded runtime; every other ICMP message, a damaged one, one for another host or from
//! an address no reply can go to is dropped and counted, never answered.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::script::*;
use common::{IP_A, IP_B, MAC_A, MAC_B};
use flextoe::pipeline::Threaded;
use flextoe::stats::DropReason;
use flextoe::time::Clock;
use flextoe::wire::icmp::{emit_echo_request, parse_echo_request};
use flextoe::wire::{checksum, Endpoints, MacAddr, ETH_HDR, IP_HDR};

fn peer() -> Endpoints {
    Endpoints {
        src_mac: MAC_B,
        dst_mac: MAC_A,
        src_ip: IP_B,
        dst_ip: IP_A,
    }
}

/// An echo request from `ep`.
fn request(ep: &Endpoints, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 2048];
    let n = emit_echo_request(&mut b, ep, 0xbeef, seq, data).expect("fits");
    b.truncate(n);
    b
}

/// `data` of `len` bytes that differ from byte to byte.
fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ salt)
        .collect()
}

/// Every frame the engine sent.
fn sent<E: Target>(t: &mut Script<E>) -> Vec<Vec<u8>> {
    t.poll();
    let mut out = Vec::new();
    while let Some(f) = t.wire.recv_bytes(t.clock.now()) {
        out.push(f);
    }
    out
}

/// Check that `f` is the engine's echo reply to `req`: addresses swapped, checksums right,
/// identifier, sequence number and data the request's.
fn assert_reply_to(f: &[u8], req: &[u8]) {
    assert_eq!(f.len(), req.len(), "as long as the request");
    assert_eq!(
        MacAddr::from_bytes(&f[..6]),
        MAC_B,
        "to the requester's MAC"
    );
    assert_eq!(
        MacAddr::from_bytes(&f[6..12]),
        MAC_A,
        "from the engine's MAC"
    );
    let ip = &f[ETH_HDR..ETH_HDR + IP_HDR];
    assert!(checksum::ipv4_header_ok(ip), "IPv4 header checksum");
    assert_eq!(
        usize::from(u16::from_be_bytes([ip[2], ip[3]])),
        f.len() - ETH_HDR,
        "IPv4 total length"
    );
    assert_eq!(ip[9], 1, "ICMP");
    assert_eq!(&ip[12..16], &IP_A.octets(), "from the engine's address");
    assert_eq!(&ip[16..20], &IP_B.octets(), "to the requester's");
    let msg = &f[ETH_HDR + IP_HDR..];
    assert!(
        checksum::Sum::default().add_bytes(msg).verifies(),
        "ICMP checksum"
    );
    assert_eq!((msg[0], msg[1]), (0, 0), "echo reply");
    assert_eq!(
        &msg[4..],
        &req[ETH_HDR + IP_HDR + 4..],
        "identifier, sequence number and data"
    );
}

/// Echo replies sent and arena frames in use, on either runtime.
trait Counters {
    fn replies_and_frames(&self) -> (u64, usize);
}
impl Counters for Script {
    fn replies_and_frames(&self) -> (u64, usize) {
        let s = self.engine.stats();
        (s.control.icmp_echo_replies, s.frames_in_use)
    }
}
impl Counters for Script<Threaded> {
    fn replies_and_frames(&self) -> (u64, usize) {
        let s = self.engine.stats();
        (s.io.control.icmp_echo_replies, s.io.frames_in_use)
    }
}

fn pings_are_answered<E: Target>(mut t: Script<E>)
where
    Script<E>: Counters,
{
    // Empty, ping's default 56 bytes, odd, and the most one 1500-byte IPv4 packet holds.
    let sizes = [0usize, 56, 57, 1472];
    let reqs: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| request(&peer(), i as u16, &pattern(n, i as u8)))
        .collect();
    for r in &reqs {
        t.inject(r);
    }
    let out = sent(&mut t);
    assert_eq!(out.len(), reqs.len(), "one reply per request");
    for (f, r) in out.iter().zip(&reqs) {
        assert_reply_to(f, r);
    }
    assert_eq!(
        t.replies_and_frames(),
        (reqs.len() as u64, 0),
        "replies counted, every frame back in the arena"
    );
}

#[test]
fn pings_are_answered_with_their_data_inline() {
    pings_are_answered(Script::new(config()));
}

#[test]
fn pings_are_answered_with_their_data_threaded() {
    // Several tasks and replicas, driven from the test's thread.
    pings_are_answered(Script::threaded(
        config(),
        two_groups_on_the_callers_thread(),
    ));
}

/// What is not a ping for us gets no answer, and each is counted under its reason.
#[test]
fn other_icmp_is_dropped_and_counted_never_answered() {
    let mut t = Script::new(config());
    let good = request(&peer(), 1, b"0123456789");
    let icmp = ETH_HDR + IP_HDR;
    let mut cases: Vec<(Vec<u8>, DropReason)> = Vec::new();
    // The ICMP checksum wrong.
    let mut f = good.clone();
    *f.last_mut().unwrap() ^= 0x40;
    cases.push((f, DropReason::BadIcmp));
    // Shorter than an echo header.
    let mut f = good[..icmp + 4].to_vec();
    f[ETH_HDR + 2..ETH_HDR + 4].copy_from_slice(&24u16.to_be_bytes());
    checksum::fill_ipv4_header(&mut f[ETH_HDR..icmp]);
    cases.push((f, DropReason::BadIcmp));
    // A timestamp request (13) and an echo reply (0), checksums right.
    for ty in [13u8, 0] {
        let mut f = good.clone();
        f[icmp] = ty;
        f[icmp + 2..icmp + 4].fill(0);
        let c = checksum::Sum::default().add_bytes(&f[icmp..]).checksum();
        f[icmp + 2..icmp + 4].copy_from_slice(&c);
        cases.push((f, DropReason::IcmpIgnored));
    }
    // For another host, by address and by MAC, and to the broadcast MAC.
    let other_ip = Endpoints {
        dst_ip: Ipv4Addr::new(10, 9, 0, 77),
        ..peer()
    };
    cases.push((request(&other_ip, 2, b"x"), DropReason::NotForUs));
    let other_mac = Endpoints {
        dst_mac: MacAddr([2, 0, 0, 0, 0, 0x77]),
        ..peer()
    };
    cases.push((request(&other_mac, 3, b"x"), DropReason::NotForUs));
    let broadcast = Endpoints {
        dst_mac: MacAddr::BROADCAST,
        ..peer()
    };
    cases.push((request(&broadcast, 4, b"x"), DropReason::NotForUs));
    // From addresses a reply cannot go to: broadcast, multicast, loopback, our own.
    for src in [
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 1),
        Ipv4Addr::LOCALHOST,
        IP_A,
    ] {
        let ep = Endpoints {
            src_ip: src,
            ..peer()
        };
        cases.push((request(&ep, 5, b"x"), DropReason::MartianSource));
    }
    // From a group or all-zero Ethernet source: the reply would go to the whole link.
    for src_mac in [
        MacAddr::BROADCAST,
        MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
        MacAddr([0; 6]),
    ] {
        let ep = Endpoints { src_mac, ..peer() };
        cases.push((request(&ep, 6, b"x"), DropReason::BadSourceMac));
    }
    // IP options (a source route would have to be reversed into the reply).
    let mut f = good[..ETH_HDR].to_vec();
    f.push(0x46);
    f.extend_from_slice(&good[ETH_HDR + 1..icmp]);
    f.extend_from_slice(&[1, 1, 1, 0]);
    f.extend_from_slice(&good[icmp..]);
    let total = (f.len() - ETH_HDR) as u16;
    f[ETH_HDR + 2..ETH_HDR + 4].copy_from_slice(&total.to_be_bytes());
    checksum::fill_ipv4_header(&mut f[ETH_HDR..icmp + 4]);
    cases.push((f, DropReason::IcmpIgnored));
    // The IPv4 header damaged: the TCP parser's reason.
    let mut f = good.clone();
    f[ETH_HDR + 10] ^= 1;
    cases.push((f, DropReason::BadIpChecksum));
    for (i, (f, reason)) in cases.iter().enumerate() {
        let before = t.engine.stats();
        t.inject(f);
        assert!(sent(&mut t).is_empty(), "case {i} ({reason:?}) answered");
        let after = t.engine.stats();
        assert_eq!(
            after.drops(*reason),
            before.drops(*reason) + 1,
            "case {i}: counted as {reason:?}"
        );
        if *reason == DropReason::NotForUs {
            // Preprocess drops it: the control plane never sees what is not ours.
            assert_eq!(
                after.control.punted, before.control.punted,
                "case {i} punted"
            );
        }
    }
    // The good request is still answered, and so is one padded past its IPv4 length (as
    // Ethernet pads short frames): the reply as long as the packet, not the frame.
    t.inject(&good);
    let mut padded = good.clone();
    padded.extend_from_slice(&[0xee; 9]);
    t.inject(&padded);
    let out = sent(&mut t);
    assert_eq!(out.len(), 2);
    assert_reply_to(&out[0], &good);
    assert_reply_to(&out[1], &good);
    let s = t.engine.stats();
    assert_eq!(s.control.icmp_echo_replies, 2);
    assert_eq!(s.frames_in_use, 0);
}

/// A flood gets at most `icmp_echo_limit` replies a second; the rest are counted as
/// rate-limited, and the budget comes back with time. A limit of 0 answers nothing.
#[test]
fn a_ping_flood_is_answered_within_the_rate_limit() {
    let mut cfg = config();
    cfg.control.icmp_echo_limit = 50;
    let mut t = Script::new(cfg);
    let mut answered = 0;
    for round in 0..4u16 {
        for i in 0..50u16 {
            t.inject(&request(&peer(), round * 50 + i, b"flood"));
        }
        answered += sent(&mut t).len();
    }
    assert_eq!(answered, 50, "the burst's budget");
    assert_eq!(t.engine.stats().drops(DropReason::RateLimited), 150);
    t.advance(Duration::from_secs(1));
    for i in 0..60u16 {
        t.inject(&request(&peer(), 1000 + i, b"later"));
    }
    assert_eq!(sent(&mut t).len(), 50, "a second's budget again");
    assert_eq!(t.engine.stats().frames_in_use, 0);

    let mut cfg = config();
    cfg.control.icmp_echo_limit = 0;
    let mut t = Script::new(cfg);
    t.inject(&request(&peer(), 1, b"x"));
    assert!(sent(&mut t).is_empty(), "0: no replies");
    assert_eq!(t.engine.stats().drops(DropReason::RateLimited), 1);
}

/// The parser takes any bytes: requests cut short at every length are dropped and counted,
/// never answered, never a panic.
#[test]
fn requests_cut_short_are_dropped() {
    let mut t = Script::new(config());
    let good = request(&peer(), 9, &pattern(100, 3));
    for n in 0..good.len() {
        t.inject(&good[..n]);
        assert!(sent(&mut t).is_empty(), "{n} bytes answered");
        assert!(parse_echo_request(&good[..n]).is_err());
    }
    let s = t.engine.stats();
    let counted: u64 = flextoe::stats::DropReason::ALL
        .iter()
        .map(|r| s.drops(*r))
        .sum();
    assert_eq!(counted, good.len() as u64, "every one counted");
    assert_eq!(s.frames_in_use, 0);
}
