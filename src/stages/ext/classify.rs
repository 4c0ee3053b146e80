//! Flow classification: ordered [`ClassRule`]s (port ranges, DSCP, VLAN id) map each new
//! connection to a traffic class, which the scheduler weights or prioritises
//! ([`Pacer::with_classes`](crate::stages::pacer::Pacer::with_classes)) and which the
//! statistics count.
//!
//! A [`Classification`] has two parts:
//! - a stage at [`RxFrame`] ([`Classification::stage`]) that reads the opening frames
//!   of connections (a SYN, or the SYN-ACK of a connection the engine opened) before any
//!   VLAN strip, so that their DSCP and VLAN id are known, classifies them and notes the
//!   class for the control plane; it also counts every frame and byte per class;
//! - the control plane's [`Classifier`] ([`Classification::classifier`], for
//!   `ControlConfig::classifier`), which gives each connection, when it is established, the
//!   class the stage noted (or, if none, the class its ports alone give), and counts it.
//!
//! ```
//! use flextoe::stages::ext::classify::{Classification, ClassRule};
//!
//! // Class 0: the key-value port or DSCP EF; class 2: VLAN 100; the rest class 1.
//! let c = Classification::new(
//!     vec![
//!         ClassRule::to_class(0).local_port(11211),
//!         ClassRule::to_class(0).dscp(46),
//!         ClassRule::to_class(2).vid(100),
//!     ],
//!     1,
//! );
//! // cfg.control.classifier = Some(c.classifier());
//! // Pipeline::builder(cfg, port).on_rx_frame(c.stage())...
//! assert_eq!(c.connections(0), 0);
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::headers::FrameInfo;
use super::rules::PortRange;
use crate::buf::Frame;
use crate::flow::Classifier;
use crate::pipeline::hooks::{Hook, HookCx, RxFrame, Verdicts};
use crate::wire::{flags, FourTuple};

/// One classification rule: every term given must match. Ports are the engine's view
/// (`local` is the engine's port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassRule {
    /// The class it gives.
    pub class: u8,
    /// The engine's ports.
    pub local_port: Option<PortRange>,
    /// The peer's ports.
    pub remote_port: Option<PortRange>,
    /// The DSCP of the connection's opening frame.
    pub dscp: Option<u8>,
    /// The VLAN id of the connection's opening frame.
    pub vid: Option<u16>,
}

impl ClassRule {
    /// A rule giving `class` (to everything, until terms are added).
    pub fn to_class(class: u8) -> Self {
        ClassRule {
            class,
            local_port: None,
            remote_port: None,
            dscp: None,
            vid: None,
        }
    }

    /// Match the engine's ports.
    pub fn local_port(mut self, r: impl Into<PortRange>) -> Self {
        self.local_port = Some(r.into());
        self
    }

    /// Match the peer's ports.
    pub fn remote_port(mut self, r: impl Into<PortRange>) -> Self {
        self.remote_port = Some(r.into());
        self
    }

    /// Match a DSCP.
    pub fn dscp(mut self, d: u8) -> Self {
        self.dscp = Some(d & 0x3f);
        self
    }

    /// Match a VLAN id.
    pub fn vid(mut self, v: u16) -> Self {
        self.vid = Some(v & 0x0fff);
        self
    }

    /// Whether the rule matches a connection with these ports, DSCP and VLAN id.
    pub fn matches(&self, local: u16, remote: u16, dscp: u8, vid: Option<u16>) -> bool {
        self.local_port.is_none_or(|r| r.contains(local))
            && self.remote_port.is_none_or(|r| r.contains(remote))
            && self.dscp.is_none_or(|d| d == dscp)
            && self.vid.is_none_or(|v| vid == Some(v))
    }
}

/// Classes are counted up to this many; higher classes count as the last.
pub const COUNTED_CLASSES: usize = 16;

struct Shared {
    rules: Vec<ClassRule>,
    default: u8,
    /// Classes the stage decided from opening frames (with when, in ms), for the control
    /// plane to pick up; entries of handshakes that never completed go after 10 s.
    noted: Mutex<HashMap<FourTuple, (u8, u64)>>,
    max_noted: usize,
    connections: [AtomicU64; COUNTED_CLASSES],
    frames: [AtomicU64; COUNTED_CLASSES],
    bytes: [AtomicU64; COUNTED_CLASSES],
    unnoted: AtomicU64,
    /// When `noted` was last swept (ms).
    swept: AtomicU64,
}

impl Shared {
    fn classify(&self, local: u16, remote: u16, dscp: u8, vid: Option<u16>) -> u8 {
        self.rules
            .iter()
            .find(|r| r.matches(local, remote, dscp, vid))
            .map_or(self.default, |r| r.class)
    }
}

fn slot(class: u8) -> usize {
    usize::from(class).min(COUNTED_CLASSES - 1)
}

/// Rules, counters, the stage and the control plane's classifier. Clones share everything.
#[derive(Clone)]
pub struct Classification {
    shared: Arc<Shared>,
}

impl Classification {
    /// Classify by `rules` (the first that matches decides), `default` when none does.
    pub fn new(rules: Vec<ClassRule>, default: u8) -> Self {
        Classification {
            shared: Arc::new(Shared {
                rules,
                default,
                noted: Mutex::new(HashMap::new()),
                max_noted: 4096,
                connections: Default::default(),
                frames: Default::default(),
                bytes: Default::default(),
                unnoted: AtomicU64::new(0),
                swept: AtomicU64::new(0),
            }),
        }
    }

    /// The stage, for [`RxFrame`] (before any VLAN strip).
    pub fn stage(&self) -> ClassifyStage {
        ClassifyStage {
            shared: self.shared.clone(),
            known: HashMap::default(),
            frames: [0; COUNTED_CLASSES],
            bytes: [0; COUNTED_CLASSES],
            swept: 0,
        }
    }

    /// The control plane's classifier (`ControlConfig::classifier`).
    pub fn classifier(&self) -> Classifier {
        let s = self.shared.clone();
        Classifier::new(move |t: &FourTuple| {
            let noted = s
                .noted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(t)
                .map(|(c, _)| c);
            let class = noted.unwrap_or_else(|| s.classify(t.local_port, t.remote_port, 0, None));
            s.connections[slot(class)].fetch_add(1, Ordering::Relaxed);
            class
        })
    }

    /// Connections given `class`.
    pub fn connections(&self, class: u8) -> u64 {
        self.shared.connections[slot(class)].load(Ordering::Relaxed)
    }

    /// Frames and bytes received of connections of `class` (as the stage knew them).
    pub fn traffic(&self, class: u8) -> (u64, u64) {
        let i = slot(class);
        (
            self.shared.frames[i].load(Ordering::Relaxed),
            self.shared.bytes[i].load(Ordering::Relaxed),
        )
    }

    /// Opening frames whose class could not be noted (the table for the control plane was
    /// full); their connections are classified by ports alone.
    pub fn unnoted(&self) -> u64 {
        self.shared.unnoted.load(Ordering::Relaxed)
    }
}

/// How long a SYN's note holds against later SYNs of the tuple (its retransmissions): a
/// SYN after that is a new connection's.
const NOTE_FRESH_MS: u64 = 10_000;

/// The [`Classification`]'s stage: passes every frame.
pub struct ClassifyStage {
    shared: Arc<Shared>,
    /// The classes of connections this copy saw open and when it last saw them (ms), for
    /// its traffic counters (bounded: quiet ones go after a minute when room is needed);
    /// hashed with a secret seed, as peers choose the keys.
    known: HashMap<FourTuple, (u8, u64), crate::flow::SeededTuples>,
    frames: [u64; COUNTED_CLASSES],
    bytes: [u64; COUNTED_CLASSES],
    swept: u64,
}

impl Clone for ClassifyStage {
    fn clone(&self) -> Self {
        Classification {
            shared: self.shared.clone(),
        }
        .stage()
    }
}

impl Hook<RxFrame> for ClassifyStage {
    fn name(&self) -> &'static str {
        "classify"
    }

    fn process(&mut self, cx: &HookCx<'_>, frames: &mut [Frame], _verdicts: &mut Verdicts) {
        let now = cx.now.millis();
        for f in frames.iter() {
            let data = cx.arena.data(f);
            let Some(i) = FrameInfo::peek(data) else {
                continue;
            };
            if !i.is_tcp() {
                continue;
            }
            let t = FourTuple {
                local_ip: i.dst,
                local_port: i.dport,
                remote_ip: i.src,
                remote_port: i.sport,
            };
            // A SYN notes its connection's class: only a whole, checked one (this stage
            // runs before preprocess checks frames), and the first: a later SYN on the
            // tuple within `NOTE_FRESH_MS` (retransmitted, or a spoofer's with another
            // DSCP or tag) keeps it.
            let opening = i.tcp_flags & flags::SYN != 0 && i.tcp_checksums_ok(data);
            if opening {
                let class = self.shared.classify(i.dport, i.sport, i.dscp, i.vid);
                let mut noted = self.shared.noted.lock().unwrap_or_else(|p| p.into_inner());
                if noted.len() >= self.shared.max_noted
                    && now >= self.shared.swept.load(Ordering::Relaxed) + 1000
                {
                    // Handshakes that never completed (a SYN flood) make room, at most once
                    // a second.
                    self.shared.swept.store(now, Ordering::Relaxed);
                    noted.retain(|_, (_, at)| now.saturating_sub(*at) < NOTE_FRESH_MS);
                }
                // Whether this SYN's class is the connection's (its counters follow).
                let mut fresh = true;
                if let Some(e) = noted.get_mut(&t) {
                    // A SYN sent again keeps the note; one past the handshake's time
                    // (a note nothing picked up, left by a duplicate) starts a new one.
                    fresh = now.saturating_sub(e.1) >= NOTE_FRESH_MS;
                    if fresh {
                        *e = (class, now);
                    }
                } else if noted.len() < self.shared.max_noted {
                    noted.insert(t, (class, now));
                } else {
                    self.shared.unnoted.fetch_add(1, Ordering::Relaxed);
                }
                drop(noted);
                if self.known.len() >= self.shared.max_noted && now >= self.swept + 1000 {
                    self.swept = now;
                    self.known
                        .retain(|_, (_, at)| now.saturating_sub(*at) < 60_000);
                }
                if fresh
                    && (self.known.len() < self.shared.max_noted || self.known.contains_key(&t))
                {
                    self.known.insert(t, (class, now));
                }
            }
            if let Some((c, at)) = self.known.get_mut(&t) {
                *at = now;
                self.frames[slot(*c)] += 1;
                self.bytes[slot(*c)] += i.len as u64;
            }
            if i.tcp_flags & (flags::RST | flags::FIN) != 0 {
                self.known.remove(&t);
            }
        }
        for k in 0..COUNTED_CLASSES {
            if self.frames[k] > 0 {
                self.shared.frames[k].fetch_add(self.frames[k], Ordering::Relaxed);
                self.shared.bytes[k].fetch_add(self.bytes[k], Ordering::Relaxed);
                self.frames[k] = 0;
                self.bytes[k] = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_by_port_dscp_and_vlan() {
        let c = Classification::new(
            vec![
                ClassRule::to_class(0).local_port(11211),
                ClassRule::to_class(3).dscp(46).vid(7),
                ClassRule::to_class(2).remote_port(1000..=1999u16),
            ],
            1,
        );
        let s = &c.shared;
        assert_eq!(s.classify(11211, 5, 0, None), 0);
        assert_eq!(s.classify(80, 5, 46, Some(7)), 3);
        assert_eq!(s.classify(80, 5, 46, None), 1, "both terms must match");
        assert_eq!(s.classify(80, 1500, 0, None), 2);
        assert_eq!(s.classify(80, 2500, 0, None), 1);
        let t = FourTuple {
            local_ip: "10.0.0.1".parse().unwrap(),
            local_port: 80,
            remote_ip: "10.0.0.2".parse().unwrap(),
            remote_port: 5,
        };
        s.noted.lock().unwrap().insert(t, (3, 0));
        let cl = c.classifier();
        assert_eq!(cl.class(&t), 3, "what the stage noted");
        assert_eq!(cl.class(&t), 1, "picked up once; then by ports");
        assert_eq!((c.connections(3), c.connections(1)), (1, 1));
    }

    /// A SYN with DSCP `dscp` from port 5000 to 80; `bad` spoils its TCP checksum.
    fn syn(arena: &crate::buf::FrameArena, dscp: u8, bad: bool) -> Frame {
        let ip = |s: &str| s.parse().unwrap();
        let mut buf = crate::wire::test_syn(ip("10.0.0.2"), 5000, ip("10.0.0.1"), 80);
        buf[15] = dscp << 2;
        crate::wire::fill_checksums(&mut buf);
        if bad {
            let n = buf.len();
            buf[n - 1] ^= 0xff;
        }
        arena.alloc_copy(&buf).unwrap()
    }

    /// The class a SYN notes is the first checked one's: a later SYN on the tuple with
    /// another DSCP (a spoofer's), or one whose checksum is wrong, changes nothing (each
    /// once re-classed the connection).
    #[test]
    fn a_spoofed_or_broken_syn_does_not_reclass_a_handshake() {
        let arena = crate::buf::FrameArena::new(16).unwrap();
        let c = Classification::new(vec![ClassRule::to_class(3).dscp(46)], 1);
        let mut st = c.stage();
        let cx = HookCx {
            now: crate::time::Instant::ZERO,
            arena: &arena,
            instance: 0,
        };
        let mut v = Verdicts::default();
        let frames = [
            syn(&arena, 46, true),
            syn(&arena, 0, false),
            syn(&arena, 46, false),
        ];
        for f in frames {
            let mut burst = [f];
            st.process(&cx, &mut burst, &mut v);
            let [f] = burst;
            arena.free(f);
        }
        let t = FourTuple {
            local_ip: "10.0.0.1".parse().unwrap(),
            local_port: 80,
            remote_ip: "10.0.0.2".parse().unwrap(),
            remote_port: 5000,
        };
        assert_eq!(c.classifier().class(&t), 1, "the first checked SYN's class");
        // A note nothing picked up (a duplicate SYN's after the install), then a new
        // connection on the tuple 10 s on: the new SYN's class.
        let late = |at: u64| HookCx {
            now: crate::time::Instant::from_millis(at),
            arena: &arena,
            instance: 0,
        };
        for (at, dscp) in [(1_000, 0), (12_000, 46)] {
            let mut burst = [syn(&arena, dscp, false)];
            st.process(&late(at), &mut burst, &mut v);
            let [f] = burst;
            arena.free(f);
        }
        assert_eq!(c.classifier().class(&t), 3, "the new connection's class");
    }
}
