//! A stateful firewall at [`RxFrame`]: an ordered list of [`Rule`]s (allow or deny by
//! address prefix, port range and TCP flags; the first that matches decides) and a default
//! action, with per-rule counters and connection tracking.
//!
//! Connection tracking: the first frame of a TCP connection the firewall sees (its SYN, or
//! for connections older than the firewall any frame) is checked against the rules, and
//! the verdict is kept for the connection's later frames, counted under the same rule; a
//! SYN is always checked again (a tuple first seen with another frame earns no pass for a
//! new connection), except on a connection confirmed by a later frame and not closing: there
//! the SYN (a peer's stray or spoofed one) is decided alone, and the connection keeps its
//! verdict. Rules on other flags (RST, FIN...) thus decide a connection's first frame only.
//! When the rules change, a connection's verdict is decided again on its next frame: a rule
//! that only denies new connections (`syn`) leaves established ones alone, a rule on their
//! addresses or ports stops them at once. The table is bounded: when it is full,
//! connections quiet for 10 s (closing or denied ones, and handshakes that never saw a
//! frame past the SYN) or 5 minutes (the others) are forgotten; then a new connection takes
//! the place of the oldest denied entry or unconfirmed handshake (so that a SYN flood
//! cannot keep the table full and every new connection's later frames untracked); beyond
//! that, frames are checked one by one, and counted.
//!
//! Rules change while the engine runs ([`Firewall::set_rules`]): the stages pick the new
//! list up at their next burst, with one atomic load per burst and no lock on the way.
//!
//! Frames that are not IPv4 (ARP) pass; rules with ports or flags match TCP (ports also
//! UDP) only.
//!
//! ```
//! use flextoe::stages::ext::firewall::{Action, Firewall, Rule};
//!
//! // Deny new connections to telnet and everything from 198.51.100.0/24; allow the rest.
//! let fw = Firewall::new(Action::Allow);
//! fw.set_rules(vec![
//!     Rule::deny().dst_port(23).syn(),
//!     Rule::deny().src("198.51.100.0/24".parse().unwrap()),
//! ]);
//! let stage = fw.stage(); // add with PipelineBuilder::on_rx_frame
//! assert_eq!(fw.hits(), vec![0, 0]);
//! # drop(stage);
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::headers::{FrameInfo, ETHERTYPE_IPV4, PROTO_TCP, PROTO_UDP};
use super::rules::{PortRange, Prefix};
use crate::buf::Frame;
use crate::pipeline::hooks::{Hook, HookCx, RxFrame, Verdict, Verdicts};
use crate::wire::flags;

/// What a rule (or the default) does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Let the frame through.
    Allow,
    /// Drop it.
    Deny,
}

/// One rule: every term given must match. Terms are in the receiver's view: `src` is the
/// peer, `dst` the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// What it does.
    pub action: Action,
    /// Source address prefix.
    pub src: Option<Prefix>,
    /// Destination address prefix.
    pub dst: Option<Prefix>,
    /// Source ports (TCP or UDP).
    pub src_port: Option<PortRange>,
    /// Destination ports (TCP or UDP).
    pub dst_port: Option<PortRange>,
    /// TCP flags: `(mask, value)` matches when `flags & mask == value`.
    pub tcp_flags: Option<(u8, u8)>,
}

impl Rule {
    fn new(action: Action) -> Self {
        Rule {
            action,
            src: None,
            dst: None,
            src_port: None,
            dst_port: None,
            tcp_flags: None,
        }
    }

    /// A rule that allows what it matches (everything, until terms are added).
    pub fn allow() -> Self {
        Self::new(Action::Allow)
    }

    /// A rule that denies what it matches (everything, until terms are added).
    pub fn deny() -> Self {
        Self::new(Action::Deny)
    }

    /// Match a source prefix.
    pub fn src(mut self, p: Prefix) -> Self {
        self.src = Some(p);
        self
    }

    /// Match a destination prefix.
    pub fn dst(mut self, p: Prefix) -> Self {
        self.dst = Some(p);
        self
    }

    /// Match source ports.
    pub fn src_port(mut self, r: impl Into<PortRange>) -> Self {
        self.src_port = Some(r.into());
        self
    }

    /// Match destination ports.
    pub fn dst_port(mut self, r: impl Into<PortRange>) -> Self {
        self.dst_port = Some(r.into());
        self
    }

    /// Match TCP flags: `flags & mask == value`.
    pub fn flags(mut self, mask: u8, value: u8) -> Self {
        self.tcp_flags = Some((mask, value));
        self
    }

    /// Match only a connection's opening SYN (SYN without ACK): new connections.
    pub fn syn(self) -> Self {
        self.flags(flags::SYN | flags::ACK, flags::SYN)
    }

    /// Whether the rule matches a frame with these headers and TCP flags.
    pub fn matches(&self, i: &FrameInfo, tcp_flags: u8) -> bool {
        let ports = i.proto == PROTO_TCP || i.proto == PROTO_UDP;
        self.src.is_none_or(|p| p.contains(i.src))
            && self.dst.is_none_or(|p| p.contains(i.dst))
            && self.src_port.is_none_or(|r| ports && r.contains(i.sport))
            && self.dst_port.is_none_or(|r| ports && r.contains(i.dport))
            && self
                .tcp_flags
                .is_none_or(|(m, v)| i.proto == PROTO_TCP && tcp_flags & m == v)
    }
}

/// An installed list: the rules, their counters and the default.
#[derive(Debug)]
struct RuleSet {
    rules: Vec<Rule>,
    default: Action,
    generation: u64,
}

impl RuleSet {
    /// The index of the rule that decides (`rules.len()` for the default) and the action.
    fn decide(&self, i: &FrameInfo, tcp_flags: u8) -> (usize, Action) {
        self.rules
            .iter()
            .position(|r| r.matches(i, tcp_flags))
            .map_or((self.rules.len(), self.default), |k| {
                (k, self.rules[k].action)
            })
    }
}

/// Counters of a [`Firewall`].
#[derive(Debug, Default)]
struct Counters {
    /// Per rule of the current list (the last entry is the default's); reset when the list
    /// changes.
    hits: RwLock<Vec<AtomicU64>>,
    tracked: AtomicU64,
    untracked: AtomicU64,
}

impl Counters {
    /// The per-rule counters (a poisoned lock still holds them).
    fn read_hits(&self) -> std::sync::RwLockReadGuard<'_, Vec<AtomicU64>> {
        self.hits.read().unwrap_or_else(|p| p.into_inner())
    }
}

struct Shared {
    current: RwLock<Arc<RuleSet>>,
    generation: AtomicU64,
    counters: Counters,
    max_tracked: usize,
}

/// The firewall: its rule list, its counters, and stages that enforce it. Clones share
/// everything.
#[derive(Clone)]
pub struct Firewall {
    shared: Arc<Shared>,
}

impl Firewall {
    /// A firewall with no rules and `default` for everything; each stage tracks up to 65,536
    /// connections.
    pub fn new(default: Action) -> Self {
        Self::with_capacity(default, 65_536)
    }

    /// The same with room for `max_tracked` connections per stage.
    pub fn with_capacity(default: Action, max_tracked: usize) -> Self {
        let fw = Firewall {
            shared: Arc::new(Shared {
                current: RwLock::new(Arc::new(RuleSet {
                    rules: Vec::new(),
                    default,
                    generation: 0,
                })),
                generation: AtomicU64::new(0),
                counters: Counters::default(),
                max_tracked,
            }),
        };
        fw.install(Vec::new(), default);
        fw
    }

    fn install(&self, rules: Vec<Rule>, default: Action) {
        let s = &self.shared;
        let mut cur = s.current.write().unwrap_or_else(|p| p.into_inner());
        let generation = cur.generation + 1;
        {
            let mut hits = s.counters.hits.write().unwrap_or_else(|p| p.into_inner());
            *hits = (0..=rules.len()).map(|_| AtomicU64::new(0)).collect();
        }
        *cur = Arc::new(RuleSet {
            rules,
            default,
            generation,
        });
        s.generation.store(generation, Ordering::Release);
    }

    /// Replace the rules (the default stays); running stages apply them from their next
    /// burst. The per-rule counters start again from zero.
    pub fn set_rules(&self, rules: Vec<Rule>) {
        let default = self.default();
        self.install(rules, default);
    }

    /// Replace the default action.
    pub fn set_default(&self, default: Action) {
        let rules = self.rules();
        self.install(rules, default);
    }

    /// The rules in force.
    pub fn rules(&self) -> Vec<Rule> {
        self.current().rules.clone()
    }

    /// The default action.
    pub fn default(&self) -> Action {
        self.current().default
    }

    fn current(&self) -> Arc<RuleSet> {
        self.shared
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Frames each rule decided since the rules were last set, in rule order (those of
    /// tracked connections included).
    pub fn hits(&self) -> Vec<u64> {
        let mut h = self.all_hits();
        h.pop();
        h
    }

    /// Frames the default decided since the rules were last set.
    pub fn default_hits(&self) -> u64 {
        self.all_hits().last().copied().unwrap_or(0)
    }

    fn all_hits(&self) -> Vec<u64> {
        let hits = self.shared.counters.read_hits();
        hits.iter().map(|h| h.load(Ordering::Relaxed)).collect()
    }

    /// Connections tracked by the stages now (summed over their copies, as of their last
    /// burst), and frames checked one by one because a table was full.
    pub fn tracking(&self) -> (u64, u64) {
        let c = &self.shared.counters;
        (
            c.tracked.load(Ordering::Relaxed),
            c.untracked.load(Ordering::Relaxed),
        )
    }

    /// A stage that enforces the firewall, for [`RxFrame`].
    pub fn stage(&self) -> FirewallStage {
        FirewallStage {
            shared: self.shared.clone(),
            rules: self.current(),
            table: Table::default(),
            evictable: VecDeque::new(),
            hits: Vec::new(),
            tracked_reported: 0,
            last_sweep_ms: 0,
        }
    }
}

/// A tracked connection: who decided, under which list, when it was last seen, whether
/// it is closing (FIN or RST seen), whether a frame other than a SYN confirmed it.
#[derive(Clone, Copy, Debug)]
struct Tracked {
    rule: usize,
    action: Action,
    generation: u64,
    last_ms: u64,
    closing: bool,
    confirmed: bool,
    /// Which of its key's places in the queue of evictable entries is current (it is
    /// queued again, at the back, each time it becomes evictable; older places are
    /// skipped).
    stamp: u32,
}

impl Tracked {
    /// Whether a new connection may take its place when the table is full: a denied
    /// entry (forgetting it lets its next frame be decided alone, as it was) or a
    /// handshake no frame past its SYN confirmed.
    fn evictable(&self) -> bool {
        self.action == Action::Deny || !self.confirmed
    }
}

type Key = (Ipv4Addr, u16, Ipv4Addr, u16);
/// The tracking table: keys chosen by peers (any frame adds one), bounded (`max_tracked`),
/// hashed fast with a secret seed so that no peer can pile its keys into one bucket.
type Table = HashMap<Key, Tracked, crate::flow::SeededTuples>;

/// The [`Firewall`]'s stage. Drop reasons: `rule` (a deny rule), `default` (the default
/// action denied).
pub struct FirewallStage {
    shared: Arc<Shared>,
    rules: Arc<RuleSet>,
    table: Table,
    /// Keys of entries when they became evictable, with their stamps, oldest first (a
    /// place whose stamp is no longer its entry's, or whose entry is no longer evictable,
    /// is skipped when met); compacted past twice the table's size.
    evictable: VecDeque<(Key, u32)>,
    /// Hits of this burst, flushed to the shared counters once per burst.
    hits: Vec<u64>,
    tracked_reported: u64,
    last_sweep_ms: u64,
}

impl Clone for FirewallStage {
    /// A fresh copy for another runtime instance: same firewall, empty table.
    fn clone(&self) -> Self {
        FirewallStage {
            shared: self.shared.clone(),
            rules: self.rules.clone(),
            table: Table::default(),
            evictable: VecDeque::new(),
            hits: Vec::new(),
            tracked_reported: 0,
            last_sweep_ms: 0,
        }
    }
}

impl FirewallStage {
    fn refresh(&mut self) {
        let g = self.shared.generation.load(Ordering::Acquire);
        if g != self.rules.generation {
            self.rules = self
                .shared
                .current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
        }
    }

    fn verdict(&mut self, i: &FrameInfo, now_ms: u64) -> (usize, Action) {
        if !i.is_tcp() {
            return self.rules.decide(i, i.tcp_flags);
        }
        let key = (i.src, i.sport, i.dst, i.dport);
        let generation = self.rules.generation;
        // A connection's opening SYN is always checked: a tuple first seen with another
        // frame (which a rule on new connections does not match) earns no pass for a SYN.
        let syn = i.tcp_flags & (flags::SYN | flags::ACK) == flags::SYN;
        let closing = i.tcp_flags & (flags::FIN | flags::RST) != 0;
        if let Some(t) = self.table.get_mut(&key) {
            if syn && t.confirmed && !t.closing && t.generation == generation {
                if t.action == Action::Allow {
                    // A SYN on an established connection: the peer's stray one, or a
                    // spoofer's that a rule on new connections would otherwise make the
                    // connection's verdict. Decided alone.
                    return self.rules.decide(i, i.tcp_flags);
                }
                // A tuple denied for a frame of no connection (a stray ACK, say): its SYN
                // opens one, and decides.
                t.confirmed = false;
            }
            let was_evictable = t.evictable();
            if t.generation != generation || syn {
                let (rule, action) = self.rules.decide(i, i.tcp_flags);
                t.rule = rule;
                t.action = action;
                t.generation = generation;
            }
            if syn && t.confirmed && t.closing {
                // A new connection on the tuple of one that closed.
                t.confirmed = false;
                t.closing = false;
            }
            t.last_ms = now_ms;
            t.closing |= closing;
            t.confirmed |= !syn;
            let verdict = (t.rule, t.action);
            if !was_evictable && t.evictable() {
                t.stamp = t.stamp.wrapping_add(1);
                let stamp = t.stamp;
                self.queue(key, stamp);
            }
            return verdict;
        }
        let d = self.rules.decide(i, i.tcp_flags);
        if self.table.len() >= self.shared.max_tracked {
            self.sweep(now_ms);
        }
        if self.table.len() >= self.shared.max_tracked {
            self.evict_one();
        }
        if self.table.len() < self.shared.max_tracked {
            let t = Tracked {
                rule: d.0,
                action: d.1,
                generation,
                last_ms: now_ms,
                closing,
                confirmed: !syn,
                stamp: 0,
            };
            let evictable = t.evictable();
            self.table.insert(key, t);
            if evictable {
                self.queue(key, 0);
            }
        } else {
            self.shared
                .counters
                .untracked
                .fetch_add(1, Ordering::Relaxed);
        }
        d
    }

    /// Forget connections that went quiet: closing or denied ones and unconfirmed
    /// handshakes after 10 s, the others after 5 minutes (at most one sweep a second).
    fn sweep(&mut self, now_ms: u64) {
        if now_ms < self.last_sweep_ms + 1000 && self.last_sweep_ms != 0 {
            return;
        }
        self.last_sweep_ms = now_ms.max(1);
        self.table.retain(|_, t| {
            let idle = now_ms.saturating_sub(t.last_ms);
            let short = t.closing || t.evictable();
            idle < if short { 10_000 } else { 300_000 }
        });
        self.compact();
    }

    /// Keep only the queue's current places.
    fn compact(&mut self) {
        let table = &self.table;
        self.evictable
            .retain(|(k, s)| table.get(k).is_some_and(|t| t.stamp == *s && t.evictable()));
    }

    /// Queue `key` (its entry just became evictable, with `stamp`).
    fn queue(&mut self, key: Key, stamp: u32) {
        self.evictable.push_back((key, stamp));
        if self.evictable.len() > self.shared.max_tracked.max(1).saturating_mul(2) {
            // At most one current place a key: at least `max_tracked` pushes between two
            // compactions, which so cost O(1) a push.
            self.compact();
        }
    }

    /// Forget the oldest entry still evictable ([`Tracked::evictable`]), if any. Each key
    /// met is looked at once: the work is paid for by the insertions that queued them.
    fn evict_one(&mut self) {
        while let Some((k, s)) = self.evictable.pop_front() {
            if self
                .table
                .get(&k)
                .is_some_and(|t| t.stamp == s && t.evictable())
            {
                self.table.remove(&k);
                return;
            }
        }
    }
}

impl Hook<RxFrame> for FirewallStage {
    fn name(&self) -> &'static str {
        "firewall"
    }

    fn drop_reasons(&self) -> &'static [&'static str] {
        &["rule", "default"]
    }

    fn process(&mut self, cx: &HookCx<'_>, frames: &mut [Frame], verdicts: &mut Verdicts) {
        self.refresh();
        self.hits.clear();
        self.hits.resize(self.rules.rules.len() + 1, 0);
        for (k, f) in frames.iter().enumerate() {
            let Some(info) = FrameInfo::peek(cx.arena.data(f)) else {
                continue;
            };
            if info.ethertype != ETHERTYPE_IPV4 {
                continue;
            }
            let (rule, action) = self.verdict(&info, cx.now.millis());
            self.hits[rule] += 1;
            if action == Action::Deny {
                let default = rule == self.rules.rules.len();
                verdicts.set(k, Verdict::Drop(u8::from(default)));
            }
        }
        {
            let hits = self.shared.counters.read_hits();
            // Counters of a list that was replaced meanwhile are dropped with it.
            if hits.len() == self.hits.len()
                && self.shared.generation.load(Ordering::Acquire) == self.rules.generation
            {
                for (h, n) in hits.iter().zip(&self.hits) {
                    if *n > 0 {
                        h.fetch_add(*n, Ordering::Relaxed);
                    }
                }
            }
        }
        let now = self.table.len() as u64;
        if now != self.tracked_reported {
            let c = &self.shared.counters.tracked;
            if now > self.tracked_reported {
                c.fetch_add(now - self.tracked_reported, Ordering::Relaxed);
            } else {
                c.fetch_sub(self.tracked_reported - now, Ordering::Relaxed);
            }
            self.tracked_reported = now;
        }
    }
}

#[cfg(test)]
mod tests;
