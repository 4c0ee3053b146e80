//! DCTCP over a bottleneck that marks ECN at a threshold K (the in-memory link with a rate,
//! a queue of 4K and marking above K), under the virtual clock: N connections from one
//! engine to another share it. After convergence DCTCP fills the link (at least 95%),
//! shares it fairly (Jain's index at least 0.95), keeps the queue around K (99th percentile
//! at most 2K) and loses nothing. NewReno with classic ECN on the same link is printed for
//! comparison.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddrV4;
use std::time::Duration;

use common::*;
use flextoe::backends::mem::{MemLink, MemPort};
use flextoe::control::congestion::{CongestionControl, Dctcp, NewReno};
use flextoe::control::Ecn;
use flextoe::pipeline::{Engine, Pipeline};
use flextoe::sim::Impairments;
use flextoe::time::Instant;

struct Report {
    utilisation: f64,
    jain: f64,
    q50: u64,
    q99: u64,
    overflowed: u64,
    marked: u64,
}

fn engine<C: CongestionControl>(
    cc: C,
    mac: flextoe::wire::MacAddr,
    ip: std::net::Ipv4Addr,
    port: MemPort,
) -> Engine<MemPort, C> {
    let mut cfg = engine_config(mac, ip);
    cfg.control.ecn = Ecn::Request;
    cfg.arena_frames = 16384;
    Pipeline::builder(cfg, port).congestion(cc).build().unwrap()
}

/// `flows` connections, `bytes` each, over a `rate_bps` bottleneck with ECN threshold `k`
/// bytes and a queue of `4k`; measured from when every flow has delivered 20% to when the
/// first one is done.
fn bottleneck<C: CongestionControl>(
    cc: C,
    flows: usize,
    bytes: u64,
    rate_bps: u64,
    k: usize,
) -> Report {
    let imp = Impairments {
        rate_bps,
        latency: Duration::from_micros(10),
        ecn_threshold: k,
        queue_limit: 4 * k,
        ..Impairments::default()
    };
    let back = Impairments {
        latency: Duration::from_micros(10),
        ..Impairments::default()
    };
    let (pa, pb) = MemLink::pair_asymmetric(imp, back);
    let mut cli = engine(cc.clone(), MAC_A, IP_A, pa);
    let mut srv = engine(cc, MAC_B, IP_B, pb);
    let listener = srv.host().listen(SERVER_PORT, 64).unwrap();
    let mut tx: Vec<_> = (0..flows)
        .map(|_| {
            let mut s = cli
                .host()
                .connect(SocketAddrV4::new(IP_B, SERVER_PORT))
                .unwrap();
            s.set_nonblocking(true);
            s
        })
        .collect();
    let mut rx = Vec::new();
    let mut got = vec![0u64; flows];
    let mut sent = vec![0u64; flows];
    let chunk = vec![7u8; 64 * 1024];
    let mut buf = vec![0u8; 256 * 1024];
    let mut now = Instant::ZERO;
    let mut start: Option<(Instant, Vec<u64>)> = None;
    let end;
    loop {
        assert!(now < Instant::from_micros(60_000_000), "virtual time limit");
        let busy = cli.poll(now) | srv.poll(now);
        while let Ok(Some(mut s)) = listener.try_accept() {
            s.set_nonblocking(true);
            rx.push(s);
        }
        for (i, s) in tx.iter_mut().enumerate() {
            let n = (bytes - sent[i]).min(chunk.len() as u64) as usize;
            if n > 0 {
                if let Ok(w) = s.write(&chunk[..n]) {
                    sent[i] += w as u64;
                }
            }
        }
        for (i, s) in rx.iter_mut().enumerate() {
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got[i] += n as u64;
            }
        }
        if start.is_none() && rx.len() == flows && got.iter().all(|g| *g >= bytes / 5) {
            start = Some((now, got.clone()));
        }
        if got.iter().any(|g| *g >= bytes) {
            end = now;
            break;
        }
        if busy {
            now += Duration::from_micros(1);
        } else {
            let next = [cli.next_deadline(), srv.next_deadline()]
                .into_iter()
                .flatten()
                .filter(|t| *t > now)
                .min();
            now = next.map_or(now + Duration::from_micros(1), |t| {
                t.min(now + Duration::from_millis(1))
            });
        }
    }
    let (t0, at0) = start.expect("every flow under way");
    let delta: Vec<f64> = got.iter().zip(&at0).map(|(g, a)| (g - a) as f64).collect();
    let secs = end.saturating_since(t0).as_secs_f64();
    let total: f64 = delta.iter().sum();
    let sq: f64 = delta.iter().map(|x| x * x).sum();
    let port = cli.port();
    let st = port.tx_stats();
    Report {
        // Payload against link capacity (headers take 66 of every 1514 bytes).
        utilisation: total * 8.0 / secs / rate_bps as f64 * 1514.0 / 1448.0,
        jain: total * total / (flows as f64 * sq),
        q50: port.tx_queue_quantile(0.5),
        q99: port.tx_queue_quantile(0.99),
        overflowed: st.overflowed,
        marked: st.ce_marked,
    }
}

#[test]
fn dctcp_fills_and_shares_a_marking_bottleneck() {
    let rate = 10_000_000_000;
    let k = 65 * 1514;
    for flows in [2usize, 4, 8, 16] {
        let bytes = 64_000_000 / flows as u64;
        let r = bottleneck(Dctcp::default(), flows, bytes, rate, k);
        let reno = bottleneck(NewReno, flows, bytes, rate, k);
        eprintln!(
            "{flows:>2} flows  DCTCP: utilisation {:.3} Jain {:.3} queue p50 {} p99 {} (K {k}) \
             overflow {} marks {} | NewReno+ECN: utilisation {:.3} Jain {:.3} p50 {} p99 {} overflow {}",
            r.utilisation, r.jain, r.q50, r.q99, r.overflowed, r.marked,
            reno.utilisation, reno.jain, reno.q50, reno.q99, reno.overflowed
        );
        assert!(
            r.utilisation >= 0.95,
            "{flows} flows: utilisation {}",
            r.utilisation
        );
        assert!(r.jain >= 0.95, "{flows} flows: Jain {}", r.jain);
        assert!(r.q99 <= 2 * k as u64, "{flows} flows: p99 queue {}", r.q99);
        assert_eq!(r.overflowed, 0, "{flows} flows: no loss with a queue of 4K");
        assert!(r.marked > 0);
    }
}
