//! A simulated Ethernet switch for in-memory fabrics: engines attach with
//! [`Switch::attach`], each through its own [`MemLink`]. The switch learns which port each
//! MAC address is behind (floods frames to unknown or broadcast addresses) and forwards
//! every frame out of its destination's port, whose link direction towards the engine has
//! the [`Impairments`] given at attach time: a rate and a finite queue make it a
//! bottleneck, an ECN threshold makes it mark CE at K. It runs on the caller's clock, so a
//! fabric of engines and switch under one virtual clock replays bit for bit from its seeds.
//!
//! ```
//! use flextoe::sim::{Impairments, Switch};
//! use flextoe::time::Instant;
//!
//! let mut sw = Switch::new();
//! // Two hosts; the link towards the second runs at 1 Gbit/s with a 64 KB queue.
//! let a = sw.attach(Impairments::none(), Impairments::none());
//! let b = sw.attach(
//!     Impairments { rate_bps: 1_000_000_000, queue_limit: 64 * 1024, ..Impairments::none() },
//!     Impairments::none(),
//! );
//! // Engines are built on `a` and `b`; each round, poll them and then the switch:
//! assert!(!sw.poll(Instant::ZERO));
//! # drop((a, b));
//! ```

use std::collections::HashMap;

use super::Impairments;
use crate::backends::mem::{MemLink, MemPort};
use crate::backends::Port;
use crate::time::Instant;
use crate::wire::MacAddr;

/// A learning switch joining [`MemLink`]s: it forwards by destination MAC address and floods
/// what it does not know; each port's link towards its host shapes what leaves it.
#[derive(Default)]
pub struct Switch {
    ports: Vec<MemPort>,
    table: HashMap<MacAddr, usize>,
    forwarded: u64,
    flooded: u64,
}

impl Switch {
    /// A switch with no port.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a port; returns the engine's end of its link. `to_host` shapes what the switch
    /// sends to the engine (rate, queue, ECN threshold, delay), `from_host` what the engine
    /// sends to the switch.
    pub fn attach(&mut self, to_host: Impairments, from_host: Impairments) -> MemPort {
        let (host, sw) = MemLink::pair_asymmetric(from_host, to_host);
        self.ports.push(sw);
        host
    }

    /// The switch's end of port `i` (its counters: `tx_stats` is what went towards the host).
    pub fn port(&self, i: usize) -> &MemPort {
        &self.ports[i]
    }

    /// Frames forwarded to one port, and frames flooded to all.
    pub fn counters(&self) -> (u64, u64) {
        (self.forwarded, self.flooded)
    }

    /// Forward every frame that has arrived by `now`. Returns whether any moved.
    pub fn poll(&mut self, now: Instant) -> bool {
        let mut moved = false;
        for i in 0..self.ports.len() {
            while let Some(f) = self.ports[i].recv_bytes(now) {
                moved = true;
                if f.len() < 14 {
                    continue;
                }
                let dst = MacAddr::from_bytes(&f[..6]);
                let src = MacAddr::from_bytes(&f[6..12]);
                self.table.insert(src, i);
                match self
                    .table
                    .get(&dst)
                    .copied()
                    .filter(|_| !dst.is_broadcast())
                {
                    Some(j) if j != i => {
                        self.forwarded += 1;
                        self.ports[j].send_bytes(now, &f);
                    }
                    Some(_) => {}
                    None => {
                        self.flooded += 1;
                        for (j, p) in self.ports.iter().enumerate() {
                            if j != i {
                                p.send_bytes(now, &f);
                            }
                        }
                    }
                }
            }
        }
        moved
    }

    /// When the next frame reaches the switch.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.ports.iter().filter_map(Port::next_arrival).min()
    }
}
