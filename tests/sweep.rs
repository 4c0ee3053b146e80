//! A sweep over seeds and impairment levels (loss up to 5%, reordering 5%, duplication 2%),
//! 2 MiB each way per run, for all three pairings. Runs in parallel with rayon.

mod common;

use common::*;
use flextoe::sim::Impairments;
use rayon::prelude::*;

#[test]
fn seeds_and_impairments() {
    let runs: Vec<(u64, Kind, Kind)> = (0..24u64)
        .flat_map(|seed| {
            [
                (seed, Kind::Engine, Kind::Smoltcp),
                (seed, Kind::Smoltcp, Kind::Engine),
                (seed, Kind::Engine, Kind::Engine),
            ]
        })
        .collect();
    let retransmissions: u64 = runs
        .par_iter()
        .map(|&(seed, s, c)| {
            let loss = [0.0, 0.01, 0.05][(seed % 3) as usize];
            let o = transfer(s, c, Impairments::lossy(loss, 0.05, 0.02, seed), 2 << 20);
            engine_retransmissions(&o)
        })
        .sum();
    assert!(retransmissions > 0);
}
