//! User stages and runtime choices shared by the composed-pipeline tests
//! (`tests/pipeline.rs`, `tests/policies.rs`).
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::common::*;
use flextoe::backends::mem::MemPort;
use flextoe::buf::Frame;
use flextoe::flow::FlowId;
use flextoe::pipeline::hooks::{Hook, HookCx, Results, RxFrame, RxSegment, TxFrame};
use flextoe::pipeline::{PipelineBuilder, Topology, Verdict, Verdicts};
use flextoe::sim::VirtualClock;
use flextoe::stages::{Actions, ProtoResult, RxWork};
use flextoe::wire::{self, seq, Parsed};

// ---------------------------------------------------------------------------------------
// User stages
// ---------------------------------------------------------------------------------------

/// What a [`Probe`] found, shared by all its instances.
#[derive(Default)]
pub struct ProbeLog {
    /// Segments at `rx_segment` whose timestamp (the sender's clock when it sent them) went
    /// backwards within their flow: the sender's order was not kept.
    pub seg_disorder: AtomicU64,
    /// Segments at `rx_segment` that carried a timestamp (what the order check can see).
    pub seg_timestamps: AtomicU64,
    /// Segments at `rx_segment` without their flow's incarnation (which the protocol stage
    /// checks them against).
    pub seg_unchecked: AtomicU64,
    /// Results whose acknowledgment number went backwards within their flow.
    pub result_disorder: AtomicU64,
    /// Results that carried a received segment.
    pub rx_results: AtomicU64,
    /// Largest `in_flight` any result reported.
    pub max_in_flight: AtomicU64,
}

/// One stage type for every hook point: looks at everything, passes everything, checks
/// per-flow order (per instance: each flow stays on one instance).
#[derive(Clone)]
pub struct Probe {
    pub log: Arc<ProbeLog>,
    pub last_seq: Vec<Option<u32>>,
    pub last_ack: Vec<Option<u32>>,
}

impl Probe {
    pub fn new() -> (Self, Arc<ProbeLog>) {
        let log = Arc::new(ProbeLog::default());
        let p = Probe {
            log: log.clone(),
            last_seq: Vec::new(),
            last_ack: Vec::new(),
        };
        (p, log)
    }
}

/// Record `v` for `flow` in `slots`; whether it went backwards.
pub fn backwards(slots: &mut Vec<Option<u32>>, flow: FlowId, v: u32) -> bool {
    let i = flow as usize;
    if slots.len() <= i {
        slots.resize(i + 1, None);
    }
    let back = slots[i].is_some_and(|last| seq::lt(v, last));
    slots[i] = Some(v);
    back
}

impl Hook<RxFrame> for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn process(&mut self, _cx: &HookCx<'_>, _items: &mut [Frame], _v: &mut Verdicts) {}
}

impl Hook<RxSegment> for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn process(&mut self, cx: &HookCx<'_>, items: &mut [RxWork], _v: &mut Verdicts) {
        for w in items.iter() {
            if w.summary.incarnation == 0 {
                self.log.seg_unchecked.fetch_add(1, Ordering::Relaxed);
            }
            let Some((val, _)) = w.summary.timestamps(cx.arena.data(&w.frame)) else {
                continue;
            };
            self.log.seg_timestamps.fetch_add(1, Ordering::Relaxed);
            if backwards(&mut self.last_seq, w.flow, val) {
                self.log.seg_disorder.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Hook<Results> for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn process(&mut self, _cx: &HookCx<'_>, items: &mut [ProtoResult], _v: &mut Verdicts) {
        for r in items.iter() {
            if r.rx_frame.is_some() {
                self.log.rx_results.fetch_add(1, Ordering::Relaxed);
            }
            if r.actions.any(Actions::TX) && backwards(&mut self.last_ack, r.flow, r.hdr.ack) {
                self.log.result_disorder.fetch_add(1, Ordering::Relaxed);
            }
            self.log
                .max_in_flight
                .fetch_max(r.in_flight as u64, Ordering::Relaxed);
        }
    }
}

impl Hook<TxFrame> for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn process(&mut self, _cx: &HookCx<'_>, _items: &mut [Frame], _v: &mut Verdicts) {}
}

/// Drops frames (at `rx_frame`) and segments (at `rx_segment`) to one destination port,
/// counted as "deny".
#[derive(Clone)]
pub struct PortFirewall {
    pub deny: u16,
}

impl Hook<RxFrame> for PortFirewall {
    fn name(&self) -> &'static str {
        "fw-frame"
    }
    fn drop_reasons(&self) -> &'static [&'static str] {
        &["deny"]
    }
    fn process(&mut self, cx: &HookCx<'_>, items: &mut [Frame], v: &mut Verdicts) {
        for (i, f) in items.iter().enumerate() {
            if let Ok(Parsed::Tcp(seg)) = wire::parse_frame(cx.arena.data(f)) {
                if seg.tuple.local_port == self.deny {
                    v.set(i, Verdict::Drop(0));
                }
            }
        }
    }
}

impl Hook<RxSegment> for PortFirewall {
    fn name(&self) -> &'static str {
        "fw-segment"
    }
    fn drop_reasons(&self) -> &'static [&'static str] {
        &["deny"]
    }
    fn process(&mut self, cx: &HookCx<'_>, items: &mut [RxWork], v: &mut Verdicts) {
        for (i, w) in items.iter().enumerate() {
            if let Ok(Parsed::Tcp(seg)) = wire::parse_frame(cx.arena.data(&w.frame)) {
                if seg.tuple.local_port == self.deny && w.summary.payload_len > 0 {
                    v.set(i, Verdict::Drop(0));
                }
            }
        }
    }
}

pub const ETH_REFLECT: [u8; 2] = [0x88, 0xb5];
pub const ETH_REDIRECT: [u8; 2] = [0x88, 0xb6];
pub const ETH_PUNT: [u8; 2] = [0x88, 0xb7];

/// Acts on frames by their (experimental) EtherType: reflects, redirects or punts them.
#[derive(Clone)]
pub struct Marks;

impl Hook<RxFrame> for Marks {
    fn name(&self) -> &'static str {
        "marks"
    }
    fn process(&mut self, cx: &HookCx<'_>, items: &mut [Frame], v: &mut Verdicts) {
        for (i, f) in items.iter_mut().enumerate() {
            let data = cx.arena.data_mut(f);
            if data.len() < 14 {
                continue;
            }
            match [data[12], data[13]] {
                ETH_REFLECT => {
                    let (dst, src) = data.split_at_mut(6);
                    dst.swap_with_slice(&mut src[..6]);
                    v.set(i, Verdict::Tx);
                }
                ETH_REDIRECT => v.set(i, Verdict::Redirect(0)),
                ETH_PUNT => v.set(i, Verdict::Punt),
                _ => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Runtimes
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rt {
    Inline,
    Threaded,
    /// Threaded, with the `rx_frame` and the `tx_frame` stages on workers of their own.
    ThreadedOwnWorker,
}

/// Two groups, two replicas of every stage, on two threads.
pub fn wide() -> Topology {
    Topology::with_counts(2, 2, 2, 2, 2, false)
}

pub fn side(b: PipelineBuilder<MemPort>, rt: Rt, clock: &VirtualClock) -> Side {
    match rt {
        Rt::Inline => Side::from_engine(b.build().unwrap()),
        Rt::Threaded => Side::from_threaded(b.threaded(wide(), clock.clone()).unwrap()),
        Rt::ThreadedOwnWorker => {
            let t = wide().with_rx_hooks_worker(None).with_tx_hooks_worker(None);
            Side::from_threaded(b.threaded(t, clock.clone()).unwrap())
        }
    }
}

pub fn server_cfg(rt: Rt) -> flextoe::EngineConfig {
    match rt {
        Rt::Inline => engine_config(MAC_A, IP_A),
        Rt::Threaded | Rt::ThreadedOwnWorker => threaded_config(MAC_A, IP_A),
    }
}
