//! Per-engine secrets that make what a peer sees unpredictable: initial sequence numbers
//! (RFC 6528), per-connection timestamp offsets (RFC 7323 section 5.4), and the random
//! choice of ephemeral ports (RFC 6056).
//!
//! Each engine draws a 128-bit key from the operating system's generator when its
//! configuration is made ([`EngineConfig::new`](crate::pipeline::EngineConfig::new)); ISNs
//! and offsets are keyed SipHash-2-4 of the connection's addresses and ports.

use std::hash::{BuildHasher, Hash, Hasher};

use siphasher::sip::SipHasher24;

use crate::time::Instant;
use crate::wire::FourTuple;

/// 16 bytes from the operating system's random generator. Should the generator be
/// unavailable, the standard library's randomly keyed hasher is used instead.
pub fn os_random() -> [u64; 2] {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_ok() {
        let lo = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
        let hi = u64::from_le_bytes(b[8..].try_into().unwrap_or_default());
        return [lo, hi];
    }
    let s = std::collections::hash_map::RandomState::new();
    [s.hash_one(1u8), s.hash_one(2u8)]
}

/// The keyed functions behind ISNs and timestamp offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Secrets {
    key: [u64; 2],
}

impl Secrets {
    /// Secrets over `key` (use [`os_random`] for a fresh one).
    pub fn new(key: [u64; 2]) -> Self {
        Secrets { key }
    }

    /// Fresh secrets from the operating system.
    pub fn from_os() -> Self {
        Self::new(os_random())
    }

    /// The key (for the other keyed functions of the control plane).
    pub(crate) fn key(&self) -> [u64; 2] {
        self.key
    }

    fn hash(&self, domain: u8, t: &FourTuple) -> u64 {
        let mut h = SipHasher24::new_with_keys(self.key[0], self.key[1]);
        domain.hash(&mut h);
        t.hash(&mut h);
        h.finish()
    }

    /// Initial sequence number for `t` at `now`: a keyed hash of the 4-tuple plus a clock
    /// that ticks every 4 microseconds (RFC 6528).
    pub fn isn(&self, t: &FourTuple, now: Instant) -> u32 {
        (self.hash(0, t) as u32).wrapping_add((now.micros() / 4) as u32)
    }

    /// Offset added to the timestamps sent on connection `t` (RFC 7323 section 5.4), so
    /// that they reveal neither the engine's clock nor relate across connections.
    pub fn ts_offset(&self, t: &FourTuple) -> u32 {
        self.hash(1, t) as u32
    }

    /// The flow group of connection `t` among `groups` (a power of two): keyed, so that a
    /// peer cannot choose ports that put its connections on one group (one core).
    pub fn flow_group(&self, t: &FourTuple, groups: u16) -> u16 {
        debug_assert!(groups.is_power_of_two());
        (self.hash(3, t) & u64::from(groups.max(1) - 1)) as u16
    }
}

/// A small generator for choices that need to be unpredictable to a peer but not secret
/// (ephemeral ports): xorshift64*, seeded from the engine's key (which
/// [`EngineConfig::new`](crate::pipeline::EngineConfig::new) draws from the operating system;
/// a simulation that fixes the key gets the same ports every run).
#[derive(Clone, Debug)]
pub struct PortRng(u64);

impl PortRng {
    /// Seeded from the operating system.
    pub fn from_os() -> Self {
        PortRng(os_random()[0] | 1)
    }

    /// Seeded from a key (keyed SipHash of a domain constant).
    pub fn from_key(key: [u64; 2]) -> Self {
        let mut h = SipHasher24::new_with_keys(key[0], key[1]);
        b"ephemeral ports".hash(&mut h);
        PortRng(h.finish() | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// A peer's connections from one address, ports in a row: which group each lands in is
    /// a function of the key (a peer that does not know it cannot choose ports for one
    /// group), and they spread over the groups.
    #[test]
    fn the_flow_group_is_keyed_and_spreads() {
        let tuples: Vec<FourTuple> = (0..256u16)
            .map(|i| FourTuple {
                local_ip: Ipv4Addr::new(10, 0, 0, 1),
                local_port: 80,
                remote_ip: Ipv4Addr::new(10, 0, 0, 2),
                remote_port: 40_000 + i,
            })
            .collect();
        let groups = |key: [u64; 2]| -> Vec<u16> {
            let s = Secrets::new(key);
            tuples.iter().map(|t| s.flow_group(t, 4)).collect()
        };
        let a = groups([1, 2]);
        let b = groups([3, 4]);
        assert_eq!(a, groups([1, 2]), "the same key, the same groups");
        let moved = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        // Independent choices differ in three of four places.
        assert!(moved > 128, "only {moved} of 256 moved with the key");
        for g in 0..4 {
            let n = a.iter().filter(|&&x| x == g).count();
            assert!((32..=96).contains(&n), "group {g} holds {n} of 256");
        }
        assert!(a.iter().all(|&g| g < 4));
        assert_eq!(Secrets::new([1, 2]).flow_group(&tuples[0], 1), 0);
    }
}
