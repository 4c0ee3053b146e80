//! TIMELY with 8 flows on a 10 Gbit/s bottleneck (no ECN, an unlimited queue) under the
//! virtual clock: the paced rates settle so that the queue, and with it the RTT, stays near
//! TIMELY's target band (`t_low` 30 us to `t_high` 150 us; the path's base RTT is 20 us).

mod common;

use common::bottleneck::bottleneck;
use flextoe::control::congestion::Timely;
use flextoe::stages::pacer::Pacer;

#[test]
fn timely_keeps_the_rtt_near_its_band_with_8_flows() {
    let rate = 10_000_000_000u64;
    let cc = Timely::default();
    let r = bottleneck(cc, Pacer::new(4), 8, 8_000_000, rate, 0);
    let rtt = |q: u64| 20.0 + q as f64 * 8.0 / rate as f64 * 1e6;
    let (p50, p99) = (rtt(r.q50), rtt(r.q99));
    eprintln!(
        "TIMELY, 8 flows: utilisation {:.3}, Jain {:.3}, RTT from the queue p50 {p50:.0} us \
         p99 {p99:.0} us (band {}-{} us), overflow {}",
        r.utilisation, r.jain, cc.t_low_us, cc.t_high_us, r.overflowed
    );
    assert!(p99 <= 1.5 * cc.t_high_us, "p99 RTT {p99} us");
    assert!(p50 <= cc.t_high_us, "median RTT {p50} us");
    assert!(r.utilisation >= 0.8, "utilisation {}", r.utilisation);
}
