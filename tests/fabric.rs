//! Fabrics of engines behind the simulated switch (`sim::fabric`), under one virtual clock:
//! DCTCP from 2, 4, 8 and 16 engines into one receiver through a 10 Gbit/s port that marks
//! CE at K (full, fair, queue near K, no loss with a queue of 4K), the same with DCTCP's
//! rates computed on the control plane, and a CUBIC engine and a NewReno engine filling a
//! 100 Mbit/s path with a 20 ms RTT together (their shares printed). A fabric replays bit for
//! bit: the same seeds give the same samples.

use std::time::Duration;

use flextoe::control::congestion::Algorithm;
use flextoe::control::rates::{ControlRates, DctcpRate};
use flextoe::sim::fabric::{Fabric, FabricReport, FlowSpec, Scheme};

const RATE: u64 = 10_000_000_000;
/// K: 65 full frames, RFC 8257's guidance for 10 Gbit/s.
const K: usize = 65 * 1514;

fn dc(n: usize, scheme: Scheme) -> Fabric {
    let mut f = Fabric::data_center(RATE, K);
    f.flows = vec![FlowSpec::new(scheme); n];
    f.warmup = Duration::from_millis(5);
    f.duration = Duration::from_millis(20);
    f
}

fn print(what: &str, r: &FabricReport) {
    eprintln!(
        "{what}: utilisation {:.3}, Jain {:.3}, queue p50 {} p99 {} max {} (K {}), overflow {}, CE {}, retransmissions {}",
        r.utilisation, r.jain, r.queue_p50, r.queue_p99, r.queue_max, r.k, r.overflowed,
        r.ce_marked, r.retransmissions
    );
}

fn check_dctcp(what: &str, r: &FabricReport) {
    print(what, r);
    assert!(
        r.utilisation >= 0.95,
        "{what}: utilisation {}",
        r.utilisation
    );
    assert!(r.jain >= 0.95, "{what}: Jain {}", r.jain);
    assert!(
        r.queue_p99 <= 2 * K as u64,
        "{what}: p99 queue {}",
        r.queue_p99
    );
    assert!(
        r.queue_p50 >= K as u64 / 4 && r.queue_p50 <= 2 * K as u64,
        "{what}: the queue stays around K (median {})",
        r.queue_p50
    );
    assert_eq!(r.overflowed, 0, "{what}: no loss with a queue of 4K");
    assert!(r.ce_marked > 0, "{what}: the port marked");
}

#[test]
fn dctcp_from_2_4_8_and_16_engines_shares_a_marking_port() {
    for n in [2usize, 4, 8, 16] {
        let r = dc(n, Scheme::Window(Algorithm::Dctcp)).run();
        check_dctcp(&format!("{n} engines, DCTCP"), &r);
        if n == 4 {
            let again = dc(n, Scheme::Window(Algorithm::Dctcp)).run();
            assert_eq!(again, r, "the same seeds give the same run");
            assert_eq!(again.digest(), r.digest());
        }
    }
}

#[test]
fn dctcp_rates_on_the_control_plane_share_a_marking_port() {
    for n in [2usize, 4, 8, 16] {
        let rates = ControlRates::new(Duration::from_micros(50), DctcpRate::default());
        let r = dc(n, Scheme::Rates(rates)).run();
        check_dctcp(&format!("{n} engines, DCTCP rates every 50 us"), &r);
    }
}

#[test]
fn cubic_and_newreno_share_a_long_path() {
    let rate = 100_000_000u64;
    let mut f = Fabric::wide_area(rate, Duration::from_millis(20));
    f.flows = vec![
        FlowSpec::new(Scheme::Window(Algorithm::Cubic)),
        FlowSpec::new(Scheme::Window(Algorithm::NewReno)),
    ];
    f.duration = Duration::from_secs(10);
    let r = f.run();
    let g = r.goodputs(r.measured.0, r.measured.1);
    let total: f64 = g.iter().sum();
    print("100 Mbit/s, 20 ms RTT, CUBIC + NewReno", &r);
    eprintln!(
        "  CUBIC {:.0}%, NewReno {:.0}%",
        g[0] / total * 100.0,
        g[1] / total * 100.0
    );
    // Together they fill the path. How they split it is printed, not bounded: it depends on
    // how the drop-tail queue's losses fall on each (about 60/40 for CUBIC here).
    assert!(r.utilisation >= 0.8, "utilisation {}", r.utilisation);
    assert!(g[1] > 0.0, "NewReno makes progress");
}
