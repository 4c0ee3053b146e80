//! A bottleneck under the virtual clock: `flows` connections from one engine to another
//! over the in-memory link with a rate, a queue of 4K and ECN marking above K.

use std::io::{Read, Write};
use std::net::SocketAddrV4;
use std::time::Duration;

use super::*;
use flextoe::backends::mem::{MemLink, MemPort};
use flextoe::control::congestion::CongestionControl;
use flextoe::control::Ecn;
use flextoe::pipeline::{Engine, Pipeline};
use flextoe::sim::Impairments;
use flextoe::stages::scheduler::FlowScheduler;
use flextoe::time::Instant;

pub struct Report {
    pub utilisation: f64,
    pub jain: f64,
    pub q50: u64,
    pub q99: u64,
    pub overflowed: u64,
    pub marked: u64,
}

fn engine<C: CongestionControl, S: FlowScheduler>(
    cc: C,
    sched: S,
    mac: flextoe::wire::MacAddr,
    ip: std::net::Ipv4Addr,
    port: MemPort,
) -> Engine<MemPort, C, S> {
    let mut cfg = engine_config(mac, ip);
    cfg.control.ecn = Ecn::Request;
    cfg.arena_frames = 16384;
    Pipeline::builder(cfg, port)
        .congestion(cc)
        .scheduler(sched)
        .build()
        .unwrap()
}

/// `flows` connections, `bytes` each, over a `rate_bps` bottleneck with ECN threshold `k`
/// bytes and a queue of `4k`; measured from when every flow has delivered 20% to when the
/// first one is done.
pub fn bottleneck<C: CongestionControl, S: FlowScheduler>(
    cc: C,
    sched: S,
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
    let mut cli = engine(cc.clone(), sched.clone(), MAC_A, IP_A, pa);
    let mut srv = engine(cc, sched, MAC_B, IP_B, pb);
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
        now = next_time(
            now,
            busy,
            [cli.next_deadline(), srv.next_deadline()],
            Duration::from_micros(1),
            Duration::from_millis(1),
        );
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
