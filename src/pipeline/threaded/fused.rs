//! The inline mapping of the threaded runtime. When every task runs on one thread, the
//! application's ([`Topology::fused`], or [`Topology::auto`] with no core to spare) or one
//! worker's ([`Topology::inline_worker`], or `auto` with one core to spare), and there is
//! one flow group, rings between the tasks only cost: the runtime then runs the stages the
//! way the inline [`Engine`] does, one segment of the data path after another, with no
//! rings, sequence tags or reordering between them. It is one task, the whole engine.

use super::*;
use crate::pipeline::Engine;

/// The whole engine as one task of the threaded runtime.
pub(super) struct Fused<P: Port, C: CongestionControl, S: FlowScheduler> {
    engine: Engine<P, C, S>,
    meta: Meta,
    summary: Shared<IoSummary>,
    /// Reports made (see [`stats::publish_io`]).
    reports: u64,
}

impl<P: Port, C: CongestionControl, S: FlowScheduler> Fused<P, C, S> {
    pub(super) fn new(
        engine: Engine<P, C, S>,
        reports: &mut Vec<Shared<TaskReport>>,
        summary: Shared<IoSummary>,
    ) -> Self {
        Fused {
            engine,
            meta: Meta::new(TaskRef::Io, 0, reports),
            summary,
            reports: 0,
        }
    }
}

impl<P: Port + 'static, C: CongestionControl, S: FlowScheduler> Task for Fused<P, C, S> {
    fn run(&mut self, now: Instant) -> bool {
        self.meta.polls += 1;
        let busy = self.engine.poll(now);
        self.meta.busy += u64::from(busy);
        busy
    }

    fn report(&mut self) {
        self.report_with(false);
    }

    fn report_full(&mut self) {
        self.report_with(true);
    }
}

impl<P: Port + 'static, C: CongestionControl, S: FlowScheduler> Fused<P, C, S> {
    fn report_with(&mut self, full: bool) {
        let s = self.engine.stats();
        let e = &self.engine;
        let base = IoSummary {
            control: s.control.clone(),
            flows: s.flows,
            rx_frames: s.rx_frames,
            tx_frames: s.tx_frames,
            frames_in_use: s.frames_in_use,
            ..IoSummary::default()
        };
        let count = s.flows + s.handshakes;
        stats::publish_io(&self.summary, &mut self.reports, full, count, base, || {
            (e.connection_states(), e.retransmissions())
        });
        self.meta.publish(s.stages, Vec::new(), Vec::new(), s.hooks);
    }
}
