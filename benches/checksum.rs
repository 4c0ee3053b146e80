//! TCP checksum verification, the engine's against smoltcp's, on the same segments: a
//! 20-byte header with 64 and with 1448 bytes of payload, at the start of a buffer and at
//! an odd-looking but even offset (the segment's place in a frame after a 14-byte Ethernet
//! header and a 20-byte IPv4 header). Rounds alternate which side goes first; the medians of
//! the rounds are printed with their ratio.
//!
//! ```text
//! cargo bench --bench checksum
//! ```

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant;

use flextoe::wire::checksum;
use smoltcp::wire::{IpAddress, Ipv4Address, TcpPacket};

const ROUNDS: usize = 21;
const CALLS: usize = 200_000;

/// A TCP segment of `payload` bytes with a correct checksum, at `off` in a buffer.
fn segment(payload: usize, off: usize, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut buf = vec![0u8; off + 20 + payload];
    let seg = &mut buf[off..];
    seg[0..2].copy_from_slice(&1000u16.to_be_bytes());
    seg[2..4].copy_from_slice(&80u16.to_be_bytes());
    seg[12] = 5 << 4;
    seg[13] = 0x10;
    for (i, b) in seg[20..].iter_mut().enumerate() {
        *b = (i * 7 + i / 251) as u8;
    }
    checksum::fill_tcp(src, dst, seg);
    buf
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let (s_src, s_dst) = (
        IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 1)),
        IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 2)),
    );
    println!("TCP checksum verification, {ROUNDS} interleaved rounds of {CALLS} calls; median ns per segment");
    for payload in [64usize, 1448] {
        for off in [0usize, 34] {
            let buf = segment(payload, off, src, dst);
            let seg = &buf[off..];
            let ours = || {
                let t = Instant::now();
                let mut ok = 0usize;
                for _ in 0..CALLS {
                    ok += usize::from(checksum::tcp_ok(src, dst, black_box(seg)));
                }
                assert_eq!(ok, CALLS, "flextoe: a correct checksum was refused");
                t.elapsed().as_nanos() as f64 / CALLS as f64
            };
            let theirs = || {
                let t = Instant::now();
                let mut ok = 0usize;
                for _ in 0..CALLS {
                    let p = TcpPacket::new_unchecked(black_box(seg));
                    ok += usize::from(p.verify_checksum(&s_src, &s_dst));
                }
                assert_eq!(ok, CALLS, "smoltcp: a correct checksum was refused");
                t.elapsed().as_nanos() as f64 / CALLS as f64
            };
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for round in 0..ROUNDS {
                if round % 2 == 0 {
                    a.push(ours());
                    b.push(theirs());
                } else {
                    b.push(theirs());
                    a.push(ours());
                }
            }
            // A wrong checksum is refused by both.
            let mut bad = buf.clone();
            bad[off + 20] ^= 1;
            assert!(!checksum::tcp_ok(src, dst, &bad[off..]));
            assert!(!TcpPacket::new_unchecked(&bad[off..]).verify_checksum(&s_src, &s_dst));
            let (ma, mb) = (median(&mut a), median(&mut b));
            println!(
                "{:>5} B payload, offset {off:>2}: flextoe {ma:6.1} ns, smoltcp {mb:6.1} ns, smoltcp/flextoe time ratio {:.2}",
                payload,
                mb / ma
            );
        }
    }
}
