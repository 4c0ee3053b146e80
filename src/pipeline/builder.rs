//! The pipeline description: built-in stages, user stages at hook points, policies; mapped
//! onto the inline or the threaded runtime.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use flextoe::backends::mem::MemLink;
//! use flextoe::buf::Frame;
//! use flextoe::control::congestion::FixedWindow;
//! use flextoe::pipeline::hooks::{Hook, HookCx, RxFrame, Verdicts};
//! use flextoe::pipeline::{EngineConfig, Pipeline};
//! use flextoe::sim::Impairments;
//! use flextoe::wire::MacAddr;
//!
//! #[derive(Clone)]
//! struct CountFrames(u64);
//!
//! impl Hook<RxFrame> for CountFrames {
//!     fn name(&self) -> &'static str {
//!         "count"
//!     }
//!     fn process(&mut self, _cx: &HookCx<'_>, frames: &mut [Frame], _v: &mut Verdicts) {
//!         self.0 += frames.len() as u64;
//!     }
//! }
//!
//! let (port, _peer) = MemLink::pair(Impairments::none());
//! let cfg = EngineConfig::new(MacAddr([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(10, 0, 0, 1));
//! let engine = Pipeline::builder(cfg, port)
//!     .on_rx_frame(CountFrames(0))
//!     .congestion(FixedWindow(64 * 1024))
//!     .build()
//!     .unwrap();
//! assert_eq!(engine.stats().hooks[0].name, "count");
//! ```

use std::sync::Arc;

use super::hooks::{Hook, Hooks, RedirectRing, Results, RxFrame, RxSegment, TxFrame};
use super::threaded::Threaded;
use super::topology::{ByFlowId, Placement, Topology};
use super::{Engine, EngineConfig, EngineError};
use crate::backends::Port;
use crate::control::congestion::{CongestionControl, NewReno};
use crate::stages::scheduler::{FlowScheduler, RoundRobin};
use crate::time::Clock;

/// Entry point for describing an engine: see [`Pipeline::builder`].
#[derive(Debug)]
pub enum Pipeline {}

impl Pipeline {
    /// Start describing an engine on `port`: the built-in stages (preprocess, protocol,
    /// place, postprocess, notify, scheduler), no user stages, the default policies
    /// ([`NewReno`], [`RoundRobin`], [`ByFlowId`]).
    pub fn builder<P: Port>(cfg: EngineConfig, port: P) -> PipelineBuilder<P> {
        PipelineBuilder {
            cfg,
            port,
            cc: NewReno,
            sched: RoundRobin::new(),
            placement: Arc::new(ByFlowId),
            hooks: Hooks::default(),
        }
    }
}

/// An engine's description. Add user stages with the `on_*` methods (several per point run
/// in the order they were added), replace policies, then map it onto a runtime with
/// [`build`](Self::build) (inline) or [`threaded`](Self::threaded).
pub struct PipelineBuilder<P: Port, C: CongestionControl = NewReno, S: FlowScheduler = RoundRobin> {
    cfg: EngineConfig,
    port: P,
    cc: C,
    sched: S,
    placement: Arc<dyn Placement>,
    hooks: Hooks,
}

impl<P: Port, C: CongestionControl, S: FlowScheduler> PipelineBuilder<P, C, S> {
    /// Add a stage at [`RxFrame`]: the raw frame, before preprocess.
    pub fn on_rx_frame<H: Hook<RxFrame> + Clone>(mut self, stage: H) -> Self {
        self.hooks.rx_frame.push(stage);
        self
    }

    /// Add a stage at [`RxSegment`]: a segment of an established flow, before protocol, in
    /// per-flow order.
    pub fn on_rx_segment<H: Hook<RxSegment> + Clone>(mut self, stage: H) -> Self {
        self.hooks.rx_segment.push(stage);
        self
    }

    /// Add a stage at [`Results`]: the protocol stage's results, in per-flow order.
    pub fn on_results<H: Hook<Results> + Clone>(mut self, stage: H) -> Self {
        self.hooks.results.push(stage);
        self
    }

    /// Add a stage at [`TxFrame`]: the finished frame, before the port.
    pub fn on_tx_frame<H: Hook<TxFrame> + Clone>(mut self, stage: H) -> Self {
        self.hooks.tx_frame.push(stage);
        self
    }

    /// Register a ring for [`Verdict::Redirect`](super::Verdict::Redirect): the first
    /// ring registered is `Redirect(0)`, the next `Redirect(1)`, and so on.
    pub fn redirect_to(mut self, ring: RedirectRing) -> Self {
        self.hooks.rings.push(ring);
        self
    }

    /// Replace the congestion control.
    pub fn congestion<C2: CongestionControl>(self, cc: C2) -> PipelineBuilder<P, C2, S> {
        PipelineBuilder {
            cfg: self.cfg,
            port: self.port,
            cc,
            sched: self.sched,
            placement: self.placement,
            hooks: self.hooks,
        }
    }

    /// Replace the flow scheduler.
    pub fn scheduler<S2: FlowScheduler>(self, sched: S2) -> PipelineBuilder<P, C, S2> {
        PipelineBuilder {
            cfg: self.cfg,
            port: self.port,
            cc: self.cc,
            sched,
            placement: self.placement,
            hooks: self.hooks,
        }
    }

    /// Replace the placement policy (threaded runtime: which place replica owns a flow).
    pub fn placement(mut self, placement: impl Placement) -> Self {
        self.placement = Arc::new(placement);
        self
    }

    /// The user stages added so far.
    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// Map the description onto the inline runtime.
    pub fn build(self) -> Result<Engine<P, C, S>, EngineError> {
        Engine::assemble(self.cfg, self.port, self.cc, self.sched, self.hooks)
    }

    /// Map the description onto worker threads laid out as `topology`, reading time from
    /// `clock`, and start them.
    pub fn threaded<K: Clock + Clone + 'static>(
        self,
        topology: Topology,
        clock: K,
    ) -> Result<Threaded, EngineError>
    where
        P: 'static,
    {
        Threaded::assemble(
            self.cfg,
            self.port,
            topology,
            clock,
            super::threaded::Policies {
                cc: self.cc,
                sched: self.sched,
                placement: self.placement,
                hooks: self.hooks,
            },
        )
    }
}
