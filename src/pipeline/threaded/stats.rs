//! What the threaded runtime reports while it runs: per task, and about the connections.

use super::*;

/// Statistics of one task, as last published.
#[derive(Clone, Debug, Default)]
pub struct TaskReport {
    /// Which task.
    pub task: Option<TaskRef>,
    /// Worker thread index.
    pub worker: usize,
    /// Polls so far.
    pub polls: u64,
    /// Polls that found work.
    pub busy_polls: u64,
    /// Stages this task runs, with their counters.
    pub stages: Vec<(&'static str, StageStats)>,
    /// Occupancy of the task's input rings: (name, items waiting, capacity). The rings that
    /// carry protocol results (`from_group`, `from_place`) count whole bursts.
    pub rings: Vec<(&'static str, usize, usize)>,
    /// Reorder counters (groups: ingress merge; I/O: egress reorder per group).
    pub reorder: Vec<crate::reorder::ReorderStats>,
    /// The user stages this task runs, with their counters.
    pub hooks: Vec<HookReport>,
    /// The CPU time this task has used so far, estimated: its worker thread's CPU time
    /// (the thread CPU clock) split among the thread's tasks by how long their runs took,
    /// timed on one pass in 16. For a caller-driven topology (no worker threads) it is the
    /// task's run time on the application's thread, timed on one call of
    /// [`Threaded::poll`](crate::pipeline::Threaded::poll) in 16 and scaled up; zero for
    /// the inline mapping on the application's thread. On one worker
    /// ([`Topology::inline_worker`](crate::pipeline::Topology::inline_worker)) the one task
    /// is the whole engine, and this is the worker's whole CPU time, spinning included.
    pub cpu: std::time::Duration,
    /// The time this task's runs that found work took (wall time, timed on the same sampled
    /// passes as [`cpu`](Self::cpu) and scaled up). Unlike `cpu` it leaves out the runs that
    /// found nothing and a worker's spinning between them, so a task alone on its worker
    /// that shows a whole core of `cpu` shows here about how much of it was work. It is wall
    /// time where `cpu` is the thread's CPU time: on a worker that was preempted, or from
    /// the sampling's error, it can come out above `cpu`.
    pub work: std::time::Duration,
}

impl TaskReport {
    /// Fraction of polls that found work.
    pub fn busy_fraction(&self) -> f64 {
        if self.polls == 0 {
            0.0
        } else {
            self.busy_polls as f64 / self.polls as f64
        }
    }
}

/// Connections up to which [`IoSummary::connections`] and
/// [`IoSummary::retransmissions`] are rebuilt on every report (about every millisecond).
pub(super) const LIST_ALWAYS: usize = 256;
/// With more connections, they are rebuilt on one report in this many (about 100 ms): each
/// costs a lookup per connection on the thread that runs the port and the control plane
/// (4096 connections took a fifth of its time).
pub(super) const LIST_EVERY: u64 = 100;

/// The per-connection part of the I/O task's reports, shared by the runtimes that publish
/// one: rebuilt (by `list`) when `full`, or as [`LIST_ALWAYS`] and [`LIST_EVERY`] say, else
/// kept as last published; `base` brings the rest of the summary.
pub(super) fn publish_io(
    slot: &Shared<IoSummary>,
    reports: &mut u64,
    full: bool,
    connections: usize,
    mut base: IoSummary,
    list: impl FnOnce() -> (Vec<(FourTuple, TcpConnState)>, RetransmitTotals),
) {
    let fresh = full || connections <= LIST_ALWAYS || reports.is_multiple_of(LIST_EVERY);
    *reports += 1;
    let rebuilt = fresh.then(list);
    let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
    (base.connections, base.retransmissions) = match rebuilt {
        Some(r) => r,
        None => (std::mem::take(&mut s.connections), s.retransmissions),
    };
    *s = base;
}

/// What the I/O task publishes about the connections.
#[derive(Clone, Debug, Default)]
pub struct IoSummary {
    /// Control-plane counters.
    pub control: ControlStats,
    /// Installed flows.
    pub flows: usize,
    /// Connections the control plane knows (handshakes included); with more than 256, as
    /// of one report in 100 (about 100 ms: the list costs a lookup per connection), but
    /// current in the statistics [`Threaded::stop`] returns and in a caller-driven
    /// runtime's.
    pub connections: Vec<(FourTuple, TcpConnState)>,
    /// Retransmissions so far (refreshed as `connections` is).
    pub retransmissions: RetransmitTotals,
    /// Frames received and sent.
    pub rx_frames: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Frames received per port queue, when each preprocess replica has a queue of its own
    /// (empty otherwise): replica `q` got exactly the frames of queue `q`.
    pub rx_by_queue: Vec<u64>,
    /// Arena frames in use.
    pub frames_in_use: usize,
}

/// Statistics of a threaded engine, readable while it runs.
#[derive(Clone, Debug, Default)]
pub struct ThreadedStats {
    /// One report per task.
    pub tasks: Vec<TaskReport>,
    /// Connections and control plane.
    pub io: IoSummary,
    /// CPU time each worker thread has used so far (its thread CPU clock, read with its
    /// reports), spinning included; empty for a caller-driven topology, whose tasks run on
    /// the application's thread. Set against wall time it says how busy a core was, where
    /// poll counts only say how often a task found work.
    pub worker_cpu: Vec<std::time::Duration>,
}

impl ThreadedStats {
    /// Every user stage's counters, summed over the tasks that run an instance of it.
    pub fn hooks(&self) -> Vec<HookReport> {
        let mut v = Vec::new();
        for t in &self.tasks {
            HookReport::merge_into(&mut v, &t.hooks);
        }
        v
    }

    /// One user stage's counters, summed over its instances.
    pub fn hook(&self, name: &str) -> Option<HookReport> {
        self.hooks().into_iter().find(|h| h.name == name)
    }

    /// A built-in stage's counters, summed over its instances.
    pub fn stage(&self, name: &str) -> StageStats {
        let mut s = StageStats::default();
        for (_, x) in self
            .tasks
            .iter()
            .flat_map(|t| &t.stages)
            .filter(|(n, _)| *n == name)
        {
            s.items_in += x.items_in;
            s.items_out += x.items_out;
            s.bursts += x.bursts;
            s.drops.merge(&x.drops);
        }
        s
    }
}

impl std::fmt::Display for ThreadedStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "rx_frames={} tx_frames={} flows={} frames_in_use={} retransmissions fast={} timeout={}",
            self.io.rx_frames,
            self.io.tx_frames,
            self.io.flows,
            self.io.frames_in_use,
            self.io.retransmissions.fast,
            self.io.retransmissions.timeout
        )?;
        for t in &self.tasks {
            writeln!(
                f,
                "  worker {} {:?}: busy {:.0}% of {} polls, {:.1} ms CPU, {:.1} ms working",
                t.worker,
                t.task.unwrap_or(TaskRef::Io),
                100.0 * t.busy_fraction(),
                t.polls,
                t.cpu.as_secs_f64() * 1e3,
                t.work.as_secs_f64() * 1e3
            )?;
            for (name, s) in &t.stages {
                writeln!(f, "    {:<12} {}", name, s)?;
            }
            for (name, len, cap) in &t.rings {
                if *len > 0 {
                    writeln!(f, "    ring {:<10} {}/{}", name, len, cap)?;
                }
            }
        }
        for h in self.hooks() {
            writeln!(f, "  hook {}", h)?;
        }
        write!(
            f,
            "  control: established={} closed={} resets={} timeouts={} drops: {}",
            self.io.control.established,
            self.io.control.closed,
            self.io.control.resets,
            self.io.control.timeouts,
            self.io.control.drops
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With many connections the list is built on one report in [`LIST_EVERY`] (the
    /// first included) and kept in between, with the rest of the summary fresh; with few,
    /// on every report.
    #[test]
    fn the_connection_list_is_rebuilt_sparingly_when_long() {
        let slot: Shared<IoSummary> = Arc::default();
        let mut reports = 0;
        let mut built = 0;
        let t = FourTuple {
            local_ip: std::net::Ipv4Addr::new(10, 0, 0, 1),
            local_port: 80,
            remote_ip: std::net::Ipv4Addr::new(10, 0, 0, 2),
            remote_port: 4000,
        };
        for i in 0..2 * LIST_EVERY {
            let base = IoSummary {
                rx_frames: i,
                ..IoSummary::default()
            };
            publish_io(&slot, &mut reports, false, LIST_ALWAYS + 1, base, || {
                built += 1;
                (vec![(t, TcpConnState::Established)], Default::default())
            });
            let s = slot.lock().unwrap();
            assert_eq!((s.rx_frames, s.connections.len()), (i, 1));
        }
        assert_eq!(built, 2);
        for _ in 0..3 {
            publish_io(
                &slot,
                &mut reports,
                false,
                LIST_ALWAYS,
                IoSummary::default(),
                || {
                    built += 1;
                    (Vec::new(), Default::default())
                },
            );
        }
        assert_eq!(built, 5);
        assert!(slot.lock().unwrap().connections.is_empty());
        // A full report (the runtime stops, or a caller-driven one is asked) rebuilds it.
        publish_io(
            &slot,
            &mut reports,
            true,
            LIST_ALWAYS + 1,
            IoSummary::default(),
            || {
                built += 1;
                (vec![(t, TcpConnState::Established)], Default::default())
            },
        );
        assert_eq!(built, 6);
        assert_eq!(slot.lock().unwrap().connections.len(), 1);
    }
}
