//! The merge the way the flow group ran it before runs: every stream's messages in until it
//! holds an item, then one `Merge::pop`, over and over. The reference `Merge::release` is
//! checked (`tests/prop_reorder.rs`) and measured (`benches/sequencing.rs`) against.

use std::collections::VecDeque;

use flextoe::reorder::{Ingress, Merge};

/// Feed `queues` into `m` and give `out` everything it releases, one pop at a time.
pub fn merge_by_pops<T>(
    m: &mut Merge<T>,
    queues: &mut [VecDeque<Ingress<T>>],
    mut out: impl FnMut(u64, T),
) {
    loop {
        for (i, q) in queues.iter_mut().enumerate() {
            while m.wants(i) {
                match q.pop_front() {
                    Some(msg) => m.push(i, msg),
                    None => break,
                }
            }
        }
        match m.pop() {
            Some((s, v)) => out(s, v),
            None => return,
        }
    }
}
