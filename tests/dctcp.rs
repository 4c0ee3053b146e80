//! DCTCP over a bottleneck that marks ECN at a threshold K (the in-memory link with a rate,
//! a queue of 4K and marking above K), under the virtual clock: N connections from one
//! engine to another share it. After convergence DCTCP fills the link (at least 95%),
//! shares it fairly (Jain's index at least 0.95), keeps the queue around K (99th percentile
//! at most 2K) and loses nothing. NewReno with classic ECN on the same link is printed for
//! comparison.

mod common;

use common::bottleneck::bottleneck;
use flextoe::control::congestion::{Dctcp, NewReno};
use flextoe::stages::scheduler::RoundRobin;

#[test]
fn dctcp_fills_and_shares_a_marking_bottleneck() {
    let rate = 10_000_000_000;
    let k = 65 * 1514;
    for flows in [2usize, 4, 8, 16] {
        let bytes = 64_000_000 / flows as u64;
        let r = bottleneck(Dctcp::default(), RoundRobin::new(), flows, bytes, rate, k);
        let reno = bottleneck(NewReno, RoundRobin::new(), flows, bytes, rate, k);
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
