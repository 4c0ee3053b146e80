//! 802.1Q VLANs: [`VlanStrip`] at [`RxFrame`] removes the tag of received frames, and
//! [`VlanPush`] at [`TxFrame`] adds one to every frame sent. Both are O(1) per frame: the
//! two MAC addresses (12 bytes) move by four bytes and the frame's start moves into or out
//! of its headroom; the payload is never copied.
//!
//! Stages that match on the VLAN id (the [`Classification`](super::classify::Classification)
//! stage, a capture filter's `vlan` term) go before the strip.
//!
//! ```
//! use flextoe::backends::mem::MemLink;
//! use flextoe::pipeline::{EngineConfig, Pipeline};
//! use flextoe::sim::Impairments;
//! use flextoe::stages::ext::vlan::{VlanPush, VlanStrip};
//! use flextoe::wire::MacAddr;
//!
//! let (port, _peer) = MemLink::pair(Impairments::none());
//! let cfg = EngineConfig::new(MacAddr([2, 0, 0, 0, 0, 1]), "10.0.0.1".parse().unwrap());
//! let strip = VlanStrip::only(42);
//! let counters = strip.counters();
//! let engine = Pipeline::builder(cfg, port)
//!     .on_rx_frame(strip)
//!     .on_tx_frame(VlanPush::new(42))
//!     .build()
//!     .unwrap();
//! assert_eq!(counters.stripped(), 0);
//! # drop(engine);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::headers::TPID_8021Q;
use crate::buf::Frame;
use crate::pipeline::hooks::{Hook, HookCx, RxFrame, TxFrame, Verdict, Verdicts};

/// Counters of a VLAN stage, shared by its copies (one per runtime instance).
#[derive(Debug, Default)]
pub struct VlanCounters {
    stripped: AtomicU64,
    pushed: AtomicU64,
}

impl VlanCounters {
    /// Frames whose tag was removed.
    pub fn stripped(&self) -> u64 {
        self.stripped.load(Ordering::Relaxed)
    }

    /// Frames a tag was added to.
    pub fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Relaxed)
    }
}

/// Removes the 802.1Q tag of received frames. Drop reasons: `untagged` (when untagged
/// frames are refused), `other-vlan` (a tag of a VLAN not accepted), `truncated` (a tag with
/// no room for an EtherType after it, or a frame already started at the end of its
/// headroom).
#[derive(Clone, Debug)]
pub struct VlanStrip {
    vid: Option<u16>,
    pass_untagged: bool,
    counters: Arc<VlanCounters>,
}

impl VlanStrip {
    /// Strip the tag of VLAN `vid`; drop frames of other VLANs and untagged frames.
    pub fn only(vid: u16) -> Self {
        VlanStrip {
            vid: Some(vid & 0x0fff),
            pass_untagged: false,
            counters: Arc::default(),
        }
    }

    /// Strip any tag; pass untagged frames as they are.
    pub fn any() -> Self {
        VlanStrip {
            vid: None,
            pass_untagged: true,
            counters: Arc::default(),
        }
    }

    /// The same stage, passing untagged frames (`true`) or dropping them.
    pub fn untagged(mut self, pass: bool) -> Self {
        self.pass_untagged = pass;
        self
    }

    /// The stage's counters (shared with every copy).
    pub fn counters(&self) -> Arc<VlanCounters> {
        self.counters.clone()
    }
}

impl Hook<RxFrame> for VlanStrip {
    fn name(&self) -> &'static str {
        "vlan-strip"
    }

    fn drop_reasons(&self) -> &'static [&'static str] {
        &["untagged", "other-vlan", "truncated"]
    }

    fn process(&mut self, cx: &HookCx<'_>, frames: &mut [Frame], verdicts: &mut Verdicts) {
        let mut stripped = 0;
        for (i, f) in frames.iter_mut().enumerate() {
            let no_room = f.headroom() + 4 > crate::buf::MAX_HEADROOM;
            let d = cx.arena.data_mut(f);
            if d.len() < 14 || u16::from_be_bytes([d[12], d[13]]) != TPID_8021Q {
                if !self.pass_untagged {
                    verdicts.set(i, Verdict::Drop(0));
                }
                continue;
            }
            if d.len() < 18 {
                verdicts.set(i, Verdict::Drop(2));
                continue;
            }
            let vid = u16::from_be_bytes([d[14], d[15]]) & 0x0fff;
            if self.vid.is_some_and(|v| v != vid) {
                verdicts.set(i, Verdict::Drop(1));
                continue;
            }
            if no_room {
                // No room to start the frame four bytes later (a stage before moved it far).
                verdicts.set(i, Verdict::Drop(2));
                continue;
            }
            // The MAC addresses move over the tag; the frame then starts four bytes later.
            d.copy_within(0..12, 4);
            f.pull_header(4);
            stripped += 1;
        }
        if stripped > 0 {
            self.counters
                .stripped
                .fetch_add(stripped, Ordering::Relaxed);
        }
    }
}

/// Tags every frame sent with VLAN `vid` (priority 0), in the frame's headroom. Drop reason:
/// `no-headroom` (a frame with no four bytes before it, or shorter than an Ethernet header).
#[derive(Clone, Debug)]
pub struct VlanPush {
    tci: u16,
    counters: Arc<VlanCounters>,
}

impl VlanPush {
    /// Tag with VLAN `vid`.
    pub fn new(vid: u16) -> Self {
        Self::with_priority(vid, 0)
    }

    /// Tag with VLAN `vid` and 802.1p priority `pcp` (0-7).
    pub fn with_priority(vid: u16, pcp: u8) -> Self {
        VlanPush {
            tci: (u16::from(pcp & 7) << 13) | (vid & 0x0fff),
            counters: Arc::default(),
        }
    }

    /// The stage's counters (shared with every copy).
    pub fn counters(&self) -> Arc<VlanCounters> {
        self.counters.clone()
    }
}

impl Hook<TxFrame> for VlanPush {
    fn name(&self) -> &'static str {
        "vlan-push"
    }

    fn drop_reasons(&self) -> &'static [&'static str] {
        &["no-headroom"]
    }

    fn process(&mut self, cx: &HookCx<'_>, frames: &mut [Frame], verdicts: &mut Verdicts) {
        let mut pushed = 0;
        for (i, f) in frames.iter_mut().enumerate() {
            if f.len() < 14 || !f.push_header(4) {
                verdicts.set(i, Verdict::Drop(0));
                continue;
            }
            let d = cx.arena.data_mut(f);
            d.copy_within(4..16, 0);
            d[12..14].copy_from_slice(&TPID_8021Q.to_be_bytes());
            d[14..16].copy_from_slice(&self.tci.to_be_bytes());
            pushed += 1;
        }
        if pushed > 0 {
            self.counters.pushed.fetch_add(pushed, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::FrameArena;
    use crate::time::Instant;

    fn run<H: crate::pipeline::hooks::HookPoint<Item = Frame>>(
        stage: &mut impl Hook<H>,
        arena: &FrameArena,
        frames: &mut [Frame],
    ) -> Vec<Verdict> {
        let cx = HookCx {
            now: Instant::ZERO,
            arena,
            instance: 0,
        };
        let mut v = Verdicts::default();
        v.start(frames.len());
        stage.process(&cx, frames, &mut v);
        (0..frames.len()).map(|i| v.get(i)).collect()
    }

    #[test]
    fn push_then_strip_gives_the_frame_back() {
        let arena = FrameArena::new(8).unwrap();
        let original: Vec<u8> = (0..64u8).collect();
        let mut f = [arena.alloc_copy(&original).unwrap()];
        let mut push = VlanPush::with_priority(42, 5);
        assert_eq!(run::<TxFrame>(&mut push, &arena, &mut f), [Verdict::Pass]);
        let d = arena.data(&f[0]).to_vec();
        assert_eq!(d.len(), 68);
        assert_eq!(&d[..12], &original[..12]);
        assert_eq!(&d[12..16], &[0x81, 0x00, 0xa0, 42]);
        assert_eq!(&d[16..], &original[12..]);
        let mut strip = VlanStrip::only(42);
        assert_eq!(run::<RxFrame>(&mut strip, &arena, &mut f), [Verdict::Pass]);
        assert_eq!(arena.data(&f[0]), &original[..]);
        assert_eq!(
            (push.counters().pushed(), strip.counters().stripped()),
            (1, 1)
        );
        let mut other = VlanStrip::only(7);
        let mut g = [arena.alloc_copy(&d).unwrap()];
        assert_eq!(
            run::<RxFrame>(&mut other, &arena, &mut g),
            [Verdict::Drop(1)]
        );
        let mut h = [arena.alloc_copy(&original).unwrap()];
        assert_eq!(
            run::<RxFrame>(&mut other, &arena, &mut h),
            [Verdict::Drop(0)]
        );
        let mut any = VlanStrip::any();
        assert_eq!(run::<RxFrame>(&mut any, &arena, &mut h), [Verdict::Pass]);
        assert_eq!(
            arena.data(&h[0]),
            &original[..],
            "untagged passes untouched"
        );
        let mut cut = [arena.alloc_copy(&d[..16]).unwrap()];
        assert_eq!(
            run::<RxFrame>(&mut any, &arena, &mut cut),
            [Verdict::Drop(2)]
        );
    }
}
