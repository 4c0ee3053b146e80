//! Pacing under the virtual clock: an engine whose congestion control sets a constant rate
//! and whose scheduler is the `Pacer` sends to a default engine over the in-memory link;
//! the rate the receiver sees, between 10% and 100% of the transfer, is within 2% of the
//! set rate from 1 Mbit/s to 40 Gbit/s.

mod common;

use std::time::Duration;

use common::*;
use flextoe::backends::mem::MemLink;
use flextoe::control::congestion::ConstantRate;
use flextoe::pipeline::Engine;
use flextoe::pipeline::Pipeline;
use flextoe::sim::Impairments;
use flextoe::stages::pacer::Pacer;
use flextoe::time::Instant;
use std::io::{Read, Write};
use std::net::SocketAddrV4;

/// Bytes per second the receiver saw with the sender paced at `rate` (bytes per second):
/// the two engines polled in turn on one virtual clock, which moves 5 us while they are
/// busy and jumps to the next deadline (a pacing time included) while they are idle.
fn paced(rate: u64, bytes: u64, burst: u32) -> f64 {
    let (pa, pb) = MemLink::pair(Impairments::none());
    let mut srv = Engine::new(engine_config(MAC_A, IP_A), pa).unwrap();
    let mut cfg = engine_config(MAC_B, IP_B);
    cfg.tx_buffer = 4 << 20;
    let mut cli = Pipeline::builder(cfg, pb)
        .congestion(ConstantRate {
            bytes_per_sec: rate,
            window: 4 << 20,
        })
        .scheduler(Pacer::new(burst))
        .build()
        .unwrap();
    let mut now = Instant::ZERO;
    let listener = srv.host().listen(SERVER_PORT, 4).unwrap();
    let mut tx = cli
        .host()
        .connect(SocketAddrV4::new(IP_A, SERVER_PORT))
        .unwrap();
    tx.set_nonblocking(true);
    let mut rx: Option<flextoe::Stream> = None;
    let mut up = Source::new(5, bytes);
    let mut sink = Sink::default();
    let mut buf = vec![0u8; 1 << 20];
    let (mut t10, mut t100) = (None, None);
    let limit = Instant::from_micros(600_000_000);
    while t100.is_none() {
        assert!(now < limit, "virtual time limit");
        let busy = srv.poll(now) | cli.poll(now);
        if rx.is_none() {
            if let Ok(Some(mut s)) = listener.try_accept() {
                s.set_nonblocking(true);
                rx = Some(s);
            }
        }
        let data = up.pending();
        if !data.is_empty() {
            if let Ok(n) = tx.write(data) {
                up.consume(n);
            }
        }
        if let Some(s) = rx.as_mut() {
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.take(&buf[..n]);
            }
        }
        if t10.is_none() && sink.received >= bytes / 10 {
            t10 = Some((now, sink.received));
        }
        if sink.received == bytes {
            t100 = Some(now);
        }
        now = next_time(
            now,
            busy,
            [srv.next_deadline(), cli.next_deadline()],
            Duration::from_micros(5),
            Duration::from_millis(100),
        );
    }
    assert_eq!(sink.digest(), up.digest());
    let (t10, at10) = t10.unwrap();
    let secs = t100.unwrap().saturating_since(t10).as_secs_f64();
    (bytes - at10) as f64 / secs
}

#[test]
fn paced_rates_from_1_mbit_to_40_gbit_are_within_two_percent() {
    for (mbit, secs, burst) in [
        (1u64, 2.0, 1),
        (10, 1.0, 1),
        (100, 0.2, 2),
        (1_000, 0.05, 4),
        (10_000, 0.02, 16),
        (40_000, 0.01, 64),
    ] {
        let rate = mbit * 1_000_000 / 8;
        let bytes = (rate as f64 * secs) as u64;
        let got = paced(rate, bytes, burst);
        let err = (got - rate as f64).abs() / rate as f64;
        eprintln!(
            "set {mbit} Mbit/s, got {:.3} Mbit/s ({:+.2}%)",
            got * 8.0 / 1e6,
            (got / rate as f64 - 1.0) * 100.0
        );
        assert!(err < 0.02, "{mbit} Mbit/s: {:.3} Mbit/s", got * 8.0 / 1e6);
    }
}

/// Traffic classes end to end: the sender's classifier puts its connection to one port in
/// class 0 and its connection to another in class 1, and its pacer shares grants 3:1
/// between the classes. With both connections backlogged and the engine granting four
/// segments per pass (so that grants, not windows, limit them), the receiver sees their
/// bytes in that proportion.
#[test]
fn classes_share_the_grants_by_weight() {
    use flextoe::control::congestion::FixedWindow;
    use flextoe::flow::Classifier;
    use flextoe::stages::pacer::ClassPolicy;

    let (pa, pb) = MemLink::pair(Impairments::none());
    let mut srv = Engine::new(engine_config(MAC_A, IP_A), pa).unwrap();
    let mut cfg = engine_config(MAC_B, IP_B);
    cfg.burst = 4;
    // 32 segments per poll: the link's share per poll, which the two classes contend for.
    cfg.poll_budget = 32;
    cfg.tx_buffer = 1 << 20;
    cfg.control.classifier = Some(Classifier::new(|t| u8::from(t.remote_port != 7001)));
    let mut cli = Pipeline::builder(cfg, pb)
        .congestion(FixedWindow(1 << 20))
        .scheduler(Pacer::new(4).with_classes(ClassPolicy::Weighted(vec![3, 1])))
        .build()
        .unwrap();
    let listeners = [7001u16, 7002].map(|p| srv.host().listen(p, 4).unwrap());
    let mut tx = [7001u16, 7002].map(|p| {
        let mut s = cli.host().connect(SocketAddrV4::new(IP_A, p)).unwrap();
        s.set_nonblocking(true);
        s
    });
    let mut rx: [Option<flextoe::Stream>; 2] = [None, None];
    let mut got = [0u64; 2];
    let chunk = vec![7u8; 64 * 1024];
    let mut buf = vec![0u8; 1 << 20];
    let mut now = Instant::ZERO;
    while got[0] < 16 << 20 {
        assert!(now < Instant::from_micros(10_000_000), "virtual time limit");
        let busy = srv.poll(now) | cli.poll(now);
        for i in 0..2 {
            if rx[i].is_none() {
                if let Ok(Some(mut s)) = listeners[i].try_accept() {
                    s.set_nonblocking(true);
                    rx[i] = Some(s);
                }
            }
            let _ = tx[i].write(&chunk);
            if let Some(s) = rx[i].as_mut() {
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got[i] += n as u64;
                }
            }
        }
        now = next_time(
            now,
            busy,
            [srv.next_deadline(), cli.next_deadline()],
            Duration::from_micros(5),
            Duration::from_millis(1),
        );
    }
    let ratio = got[0] as f64 / got[1].max(1) as f64;
    eprintln!(
        "class 0: {} B, class 1: {} B, ratio {ratio:.2}",
        got[0], got[1]
    );
    assert!((2.7..=3.3).contains(&ratio), "ratio {ratio}");
}
