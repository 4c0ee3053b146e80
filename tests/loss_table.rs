//! Throughput against random loss for each congestion control, as a snapshot: one
//! connection moves 4 MB over a 1 Gbit/s link with 1 ms of delay each way (a 1 MB queue),
//! with 0, 0.1, 1, 5 and 10% of the data direction's frames lost, under the virtual clock
//! with fixed seeds and keys, so every run gives the same table. The table is compared
//! with `tests/snapshots/loss_table.txt`; a change that shifts it shows up in review.
//! `FLEXTOE_UPDATE_SNAPSHOTS=1 cargo test --test loss_table` rewrites the file.

mod common;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::SocketAddrV4;
use std::time::Duration;

use common::*;
use flextoe::backends::mem::{MemLink, MemPort};
use flextoe::control::congestion::{
    CongestionControl, ConstantRate, Cubic, Dctcp, FixedWindow, NewReno, Timely,
};
use flextoe::control::rates::{ControlRates, DctcpRate};
use flextoe::pipeline::{Engine, Pipeline};
use flextoe::sim::Impairments;
use flextoe::stages::pacer::Pacer;
use flextoe::stages::scheduler::{FlowScheduler, RoundRobin};
use flextoe::time::Instant;

const BYTES: u64 = 4_000_000;

fn config(mac: flextoe::wire::MacAddr, ip: std::net::Ipv4Addr) -> flextoe::pipeline::EngineConfig {
    let mut cfg = engine_config(mac, ip);
    // Fixed keys: the same sequence numbers and timestamps every run.
    cfg.control.isn_secret = [0x5eed, 0xf00d];
    cfg.arena_frames = 8192;
    cfg.tx_buffer = 4 << 20;
    cfg.rx_buffer = 4 << 20;
    cfg
}

/// Megabits per second of one transfer with sender policies `cc` and `sched`.
fn throughput<C: CongestionControl, S: FlowScheduler>(cc: C, sched: S, loss: f64) -> f64 {
    throughput_with(cc, sched, None, loss)
}

/// The same, with the sender's rates computed on the control plane.
fn throughput_with<C: CongestionControl, S: FlowScheduler>(
    cc: C,
    sched: S,
    rates: Option<ControlRates>,
    loss: f64,
) -> f64 {
    let data = Impairments {
        loss,
        rate_bps: 1_000_000_000,
        latency: Duration::from_millis(1),
        queue_limit: 1 << 20,
        seed: 77,
        ..Impairments::default()
    };
    let acks = Impairments {
        latency: Duration::from_millis(1),
        seed: 78,
        ..Impairments::default()
    };
    let (pa, pb) = MemLink::pair_asymmetric(data, acks);
    let mut cfg = config(MAC_A, IP_A);
    cfg.control.rates = rates;
    let mut cli: Engine<MemPort, C, S> = Pipeline::builder(cfg, pa)
        .congestion(cc)
        .scheduler(sched)
        .build()
        .unwrap();
    let mut srv = Engine::new(config(MAC_B, IP_B), pb).unwrap();
    let listener = srv.host().listen(SERVER_PORT, 4).unwrap();
    let mut tx = cli
        .host()
        .connect(SocketAddrV4::new(IP_B, SERVER_PORT))
        .unwrap();
    tx.set_nonblocking(true);
    let mut rx: Option<flextoe::Stream> = None;
    let (mut sent, mut got) = (0u64, 0u64);
    let chunk = vec![3u8; 256 * 1024];
    let mut buf = vec![0u8; 1 << 20];
    let mut now = Instant::ZERO;
    let mut first: Option<Instant> = None;
    while got < BYTES {
        assert!(
            now < Instant::from_micros(3_600_000_000),
            "virtual time limit"
        );
        let busy = cli.poll(now) | srv.poll(now);
        if rx.is_none() {
            if let Ok(Some(mut s)) = listener.try_accept() {
                s.set_nonblocking(true);
                rx = Some(s);
                first = Some(now);
            }
        }
        let n = (BYTES - sent).min(chunk.len() as u64) as usize;
        if n > 0 {
            if let Ok(w) = tx.write(&chunk[..n]) {
                sent += w as u64;
            }
        }
        if let Some(s) = rx.as_mut() {
            while let Ok(k) = s.read(&mut buf) {
                if k == 0 {
                    break;
                }
                got += k as u64;
            }
        }
        now = next_time(
            now,
            busy,
            [cli.next_deadline(), srv.next_deadline()],
            Duration::from_micros(2),
            Duration::from_millis(10),
        );
    }
    let secs = now.saturating_since(first.unwrap()).as_secs_f64();
    if std::env::var_os("FLEXTOE_DEBUG").is_some() {
        eprintln!(
            "loss {loss}: {secs:.3} s\n{}\n{:?}\n{}",
            cli.stats(),
            cli.port().tx_stats(),
            srv.stats()
        );
    }
    BYTES as f64 * 8.0 / secs / 1e6
}

fn row(name: &str, f: impl Fn(f64) -> f64, out: &mut String) {
    write!(out, "{name:<24}").unwrap();
    for loss in [0.0, 0.001, 0.01, 0.05, 0.10] {
        write!(out, " {:>9.1}", f(loss)).unwrap();
    }
    out.push('\n');
}

#[test]
fn throughput_against_random_loss() {
    let mut table = String::from(
        "Mbit/s, 4 MB, 1 Gbit/s, 2 ms RTT  0%        0.1%      1%        5%        10%\n",
    );
    row(
        "newreno",
        |l| throughput(NewReno, RoundRobin::new(), l),
        &mut table,
    );
    row(
        "cubic",
        |l| throughput(Cubic::default(), RoundRobin::new(), l),
        &mut table,
    );
    row(
        "dctcp (no marks)",
        |l| throughput(Dctcp::default(), RoundRobin::new(), l),
        &mut table,
    );
    row(
        "dctcp-rate (no marks)",
        |l| {
            // Every 4 ms (two round trips), DCTCP's window paced over the RTT.
            let rates = ControlRates::new(
                Duration::from_millis(4),
                DctcpRate {
                    initial_rtt_us: 2000.0,
                    ..DctcpRate::default()
                },
            );
            throughput_with(FixedWindow(4 << 20), Pacer::new(4), Some(rates), l)
        },
        &mut table,
    );
    row(
        "timely (band 2.1-4 ms)",
        |l| {
            // TIMELY's band set for this path's 2 ms round trip, up to the line rate.
            let cc = Timely {
                t_low_us: 2100.0,
                t_high_us: 4000.0,
                delta: 10e6 / 8.0,
                initial_rate: 100e6 / 8.0,
                max_rate: 1e9 / 8.0,
                ..Timely::default()
            };
            throughput(cc, Pacer::new(4), l)
        },
        &mut table,
    );
    row(
        "constant 500 Mbit/s",
        |l| {
            let cc = ConstantRate {
                bytes_per_sec: 62_500_000,
                window: 4 << 20,
            };
            throughput(cc, Pacer::new(4), l)
        },
        &mut table,
    );
    eprint!("{table}");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/snapshots/loss_table.txt"
    );
    if std::env::var_os("FLEXTOE_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
        std::fs::write(path, &table).unwrap();
    }
    let want = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (run with FLEXTOE_UPDATE_SNAPSHOTS=1)"));
    assert_eq!(
        table, want,
        "the table moved; review it and update the snapshot"
    );
}
