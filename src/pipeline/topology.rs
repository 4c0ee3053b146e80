//! Topologies: how many replicas of each stage, how many flow groups, which thread runs
//! which task, and which core each thread is pinned to.

pub use super::cores::{core_budget, usable_cores};
use crate::flow::FlowId;
use crate::reorder::Overflow;
use crate::wire::FourTuple;

/// With [`Topology::replicated_placement`], the shortest payload copy a place replica lends
/// to another (bytes); shorter ones cost less to make than to hand over.
pub const LEND_MIN: usize = 256;

/// Which place replica owns a flow's rings in the threaded runtime. Called once per flow,
/// when it is set up; the answer is kept in a table, so the data path pays nothing per
/// packet. Answers are taken modulo the number of replicas.
///
/// ```
/// use flextoe::flow::FlowId;
/// use flextoe::pipeline::Placement;
/// use flextoe::wire::FourTuple;
///
/// /// Connections to port 11211 get replica 0 to themselves; the rest share the others.
/// struct KvApart;
///
/// impl Placement for KvApart {
///     fn place(&self, _id: FlowId, t: &FourTuple, replicas: usize) -> usize {
///         if t.local_port == 11211 || replicas == 1 {
///             0
///         } else {
///             1 + (t.remote_port as usize % (replicas - 1))
///         }
///     }
/// }
/// ```
pub trait Placement: Send + Sync + 'static {
    /// The replica (in `0..replicas`) that owns flow `id`.
    fn place(&self, id: FlowId, tuple: &FourTuple, replicas: usize) -> usize;
}

/// The default placement: flow id modulo the number of replicas.
#[derive(Clone, Copy, Debug, Default)]
pub struct ByFlowId;

impl Placement for ByFlowId {
    fn place(&self, id: FlowId, _tuple: &FourTuple, replicas: usize) -> usize {
        id as usize % replicas.max(1)
    }
}

/// One task of the threaded runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskRef {
    /// Port I/O, ingress numbering and distribution, egress reorder, control plane,
    /// application requests and doorbells, timers.
    Io,
    /// Preprocess replica `n`.
    Preprocess(usize),
    /// Flow group `n`: ingress reorder, protocol, scheduler.
    Group(usize),
    /// Place replica `n`: payload between frames and connection rings, notifications, for
    /// the connections whose flow id is `n` modulo the number of place replicas.
    Place(usize),
    /// Postprocess replica `n`: headers, checksums, egress tags.
    Postprocess(usize),
    /// The `rx_frame` user stages on a task of their own, between the I/O task and the
    /// preprocess replicas (only with [`Topology::rx_hooks`]).
    RxHooks,
    /// The `tx_frame` user stages on a task of their own, between the egress reorder and the
    /// port (only with [`Topology::tx_hooks`]).
    TxHooks,
}

/// One worker thread: the tasks it runs in turn and its core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSpec {
    /// Core to pin to (`None`: let the OS schedule).
    pub core: Option<usize>,
    /// Tasks, run round-robin.
    pub tasks: Vec<TaskRef>,
}

/// The shape of a threaded engine. Start from a constructor ([`Topology::x86`],
/// [`Topology::auto`], [`Topology::single_thread`], ...) and adjust the public fields; the
/// type is `#[non_exhaustive]`, so a field added later breaks no caller.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Topology {
    /// Preprocess replicas.
    pub preprocess: usize,
    /// Postprocess replicas.
    pub postprocess: usize,
    /// Flow groups (a power of two), one protocol worker each.
    pub flow_groups: usize,
    /// Place replicas (each owns the rings of its share of the connections).
    pub place: usize,
    /// Worker threads.
    pub workers: Vec<WorkerSpec>,
    /// Slots of every stage-to-stage ring. The two links that carry protocol results
    /// (flow group to placement, placement to postprocess) move whole bursts and hold
    /// `ring_size / 32` of them (at least two), whatever each burst holds: from one result
    /// up to a group's pass.
    pub ring_size: usize,
    /// Window of each egress reorder stage.
    pub reorder_window: usize,
    /// What the egress reorder stages do when an item is too far ahead.
    pub overflow: Overflow,
    /// Run the `rx_frame` user stages as a task of their own ([`TaskRef::RxHooks`]), with
    /// the runtime's rings around it, instead of inside each preprocess replica.
    pub rx_hooks: bool,
    /// Run the `tx_frame` user stages as a task of their own ([`TaskRef::TxHooks`]) on every
    /// frame sent, in wire order, instead of inside each postprocess replica (and the I/O
    /// task, for control-plane frames).
    pub tx_hooks: bool,
    /// No worker threads: the application's thread runs every task, through
    /// [`Threaded::poll`](crate::pipeline::Threaded::poll), as it polls an inline
    /// [`Engine`](crate::pipeline::Engine). The tasks are those of the one worker in
    /// `workers`. See [`Topology::fused`].
    pub caller_driven: bool,
    /// Run the layout as the inline [`Engine`](crate::pipeline::Engine) runs its stages, one
    /// task with no rings between them, on its one worker thread: takes effect with one
    /// worker, one flow group and no thread of its own for the user stages at the frame hook
    /// points ([`maps_inline`](Self::maps_inline)). A caller-driven layout of one flow group
    /// maps inline whether or not it is set. See [`Topology::inline_worker`].
    pub inline_worker: bool,
    /// Replicated placement: every place replica makes payload copies of at least
    /// [`LEND_MIN`] bytes
    /// for the connections of the others, so one connection's copies run on several
    /// workers; the replica that owns a connection still publishes its rings and notifies
    /// in result order, once the copies before have come back. Off by default; with one
    /// place replica it changes nothing. See [`Topology::with_replicated_placement`].
    pub replicated_placement: bool,
}

/// Errors in a topology.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopologyError {
    /// Zero replicas or groups, or groups not a power of two.
    #[error("invalid counts: {0}")]
    Counts(&'static str),
    /// A task is run by no worker, or by more than one.
    #[error("task {0:?} must be run by exactly one worker")]
    Placement(TaskRef),
    /// A worker names a task that does not exist.
    #[error("unknown task {0:?}")]
    Unknown(TaskRef),
}

/// The most worker threads [`Topology::auto`] uses, however many cores are free.
///
/// All received frames pass through one I/O task, which deals every burst to a preprocess
/// replica (and tells the others how far the numbering went) and merges what every
/// postprocess replica sends. Past about eight workers the replicas [`Topology::x86`] adds
/// cost that task more than they take off the others. Measured on 16 cores
/// (`examples/parallel -- --workers 2,4,6,8,11` and `examples/trace_scaling -- --workers
/// 4,6,8,10`, README "Performance"), eight workers did as well as or better than fourteen
/// and fifteen in every row, and twice as well for one connection's RPCs. Ask for more
/// with [`x86`](Topology::x86).
pub const AUTO_MAX_WORKERS: usize = 8;

impl Topology {
    /// Every task of this topology.
    pub fn tasks(&self) -> Vec<TaskRef> {
        let mut v = vec![TaskRef::Io];
        v.extend((0..self.preprocess).map(TaskRef::Preprocess));
        v.extend((0..self.flow_groups).map(TaskRef::Group));
        v.extend((0..self.place).map(TaskRef::Place));
        v.extend((0..self.postprocess).map(TaskRef::Postprocess));
        if self.rx_hooks {
            v.push(TaskRef::RxHooks);
        }
        if self.tx_hooks {
            v.push(TaskRef::TxHooks);
        }
        v
    }

    /// Check counts and that every task runs on exactly one worker.
    pub fn validate(&self) -> Result<(), TopologyError> {
        if self.preprocess == 0 || self.postprocess == 0 || self.flow_groups == 0 || self.place == 0
        {
            return Err(TopologyError::Counts(
                "every stage needs at least one instance",
            ));
        }
        if !self.flow_groups.is_power_of_two() {
            return Err(TopologyError::Counts("flow groups must be a power of two"));
        }
        if self.ring_size < 2 || self.reorder_window < 2 {
            return Err(TopologyError::Counts(
                "rings and reorder windows need at least 2 slots",
            ));
        }
        let all = self.tasks();
        for t in self.workers.iter().flat_map(|w| &w.tasks) {
            if !all.contains(t) {
                return Err(TopologyError::Unknown(*t));
            }
        }
        for t in all {
            let n = self
                .workers
                .iter()
                .flat_map(|w| &w.tasks)
                .filter(|x| **x == t)
                .count();
            if n != 1 {
                return Err(TopologyError::Placement(t));
            }
        }
        Ok(())
    }

    /// Spread the tasks over `threads` workers round-robin (I/O first, then the flow groups,
    /// then the replicas), pinned to cores `0..threads` when `pin`.
    pub fn with_counts(
        preprocess: usize,
        flow_groups: usize,
        place: usize,
        postprocess: usize,
        threads: usize,
        pin: bool,
    ) -> Self {
        let mut t = Topology {
            preprocess,
            postprocess,
            flow_groups,
            place,
            workers: Vec::new(),
            ring_size: 1024,
            reorder_window: 1024,
            overflow: Overflow::Backpressure,
            rx_hooks: false,
            tx_hooks: false,
            replicated_placement: false,
            caller_driven: false,
            inline_worker: false,
        };
        let threads = threads.max(1);
        t.workers = (0..threads)
            .map(|i| WorkerSpec {
                core: pin.then_some(i),
                tasks: Vec::new(),
            })
            .collect();
        // Io first on worker 0; groups next so they land on different workers; then the
        // replicas fill in.
        let mut order = vec![TaskRef::Io];
        order.extend((0..flow_groups).map(TaskRef::Group));
        let p = (0..preprocess).map(TaskRef::Preprocess);
        let d = (0..place).map(TaskRef::Place);
        let q = (0..postprocess).map(TaskRef::Postprocess);
        order.extend(p.chain(d).chain(q));
        for (i, task) in order.into_iter().enumerate() {
            t.workers[i % threads].tasks.push(task);
        }
        t
    }

    /// All tasks on one thread (useful for tests and as a baseline).
    pub fn single_thread() -> Self {
        Self::with_counts(1, 1, 1, 1, 1, false)
    }

    /// Every task fused onto the application's own thread: no worker threads, the
    /// application calls [`Threaded::poll`](crate::pipeline::Threaded::poll) in its loop
    /// (the inline mapping of the threaded runtime; blocking socket calls would wait for
    /// ever, as with an inline [`Engine`](crate::pipeline::Engine)).
    pub fn fused() -> Self {
        let mut t = Self::single_thread();
        t.caller_driven = true;
        t
    }

    /// One worker thread that runs the whole engine as the inline
    /// [`Engine`](crate::pipeline::Engine) does (the stages one after another, no rings,
    /// sequence tags or reordering between them), the application on threads of its own.
    /// [`auto`](Self::auto) picks it when one core is free: on one worker, the rings between
    /// the five tasks of [`single_thread`](Self::single_thread) only cost. Its statistics
    /// have one task report (the I/O task's), the whole engine's.
    ///
    /// ```
    /// use flextoe::pipeline::Topology;
    /// let t = Topology::inline_worker();
    /// assert!(t.maps_inline() && !t.caller_driven);
    /// assert_eq!(t.workers.len(), 1);
    /// ```
    pub fn inline_worker() -> Self {
        let mut t = Self::single_thread();
        t.inline_worker = true;
        t
    }

    /// Whether the threaded runtime runs this layout as the inline engine does, as one task
    /// with no rings between the stages: one flow group, no thread of its own for the user
    /// stages at the frame hook points, and every task on one thread, the application's
    /// ([`caller_driven`](Self::caller_driven)) or, with
    /// [`inline_worker`](Self::inline_worker) set, the one worker's. Its statistics then
    /// have one task report, the whole engine's.
    pub fn maps_inline(&self) -> bool {
        let one_thread = self.caller_driven || self.inline_worker && self.workers.len() == 1;
        one_thread && self.flow_groups == 1 && !self.rx_hooks && !self.tx_hooks
    }

    /// Size the runtime to the cores left after `app_threads` busy application threads
    /// (the threads that will call into the engine or share the machine with it): never
    /// more workers than free cores. The cores are those the process may use
    /// ([`core_budget`]: the union of its threads' CPUs, bounded by a cgroup quota),
    /// whatever the calling thread is pinned to. Two or more free cores: [`x86`](Self::x86) with that
    /// many workers, but at most [`AUTO_MAX_WORKERS`]; one: the whole engine on one worker,
    /// as one task ([`inline_worker`](Self::inline_worker)); none: every task on the application's
    /// thread ([`fused`](Self::fused)), which must then call
    /// [`Threaded::poll`](crate::pipeline::Threaded::poll).
    ///
    /// ```
    /// use flextoe::pipeline::Topology;
    /// let cores = flextoe::pipeline::topology::core_budget();
    /// let t = Topology::auto(1);
    /// assert!(t.workers.len() <= cores.saturating_sub(1).max(1));
    /// assert_eq!(t.caller_driven, cores <= 1);
    /// ```
    pub fn auto(app_threads: usize) -> Self {
        Self::for_free_cores(core_budget().saturating_sub(app_threads))
    }

    /// [`auto`](Self::auto) for a given number of free cores.
    pub fn for_free_cores(free: usize) -> Self {
        match free {
            0 => Self::fused(),
            1 => Self::inline_worker(),
            n => Self::x86(n.min(AUTO_MAX_WORKERS)),
        }
    }

    /// x86 with `cores` worker threads: for 2, the I/O task with one preprocess and one
    /// postprocess replica on the first worker, the flow group with the other preprocess and
    /// postprocess replicas and the place replica on the second; for more, roughly a quarter
    /// of the workers as flow groups, as many place replicas, and the rest split between
    /// preprocess and postprocess. Threads are not pinned (applications usually share the
    /// machine); see [`pinned`](Self::pinned).
    pub fn x86(cores: usize) -> Self {
        let cores = cores.max(1);
        if cores == 1 {
            return Self::with_counts(1, 1, 1, 1, 1, false);
        }
        if cores == 2 {
            let mut t = Self::with_counts(2, 1, 1, 2, 2, false);
            t.workers[0].tasks = vec![TaskRef::Io, TaskRef::Preprocess(0), TaskRef::Postprocess(0)];
            t.workers[1].tasks = vec![
                TaskRef::Group(0),
                TaskRef::Preprocess(1),
                TaskRef::Place(0),
                TaskRef::Postprocess(1),
            ];
            return t;
        }
        let groups = prev_power_of_two((cores / 4).max(1));
        let place = groups;
        let rest = cores.saturating_sub(1 + groups + place).max(2);
        let pre = rest.div_ceil(2);
        let post = (rest - pre).max(1);
        Self::with_counts(pre, groups, place, post, cores, false)
    }

    /// Give the `rx_frame` user stages a worker thread of their own (pinned to `core`, when
    /// given): the I/O task hands every numbered burst to them, and they deal what they pass
    /// to the preprocess replicas.
    pub fn with_rx_hooks_worker(mut self, core: Option<usize>) -> Self {
        self.rx_hooks = true;
        self.workers.push(WorkerSpec {
            core,
            tasks: vec![TaskRef::RxHooks],
        });
        self
    }

    /// Spread each connection's payload copies over every place replica
    /// ([`replicated_placement`](Self::replicated_placement)).
    pub fn with_replicated_placement(mut self) -> Self {
        self.replicated_placement = true;
        self
    }

    /// Give the `tx_frame` user stages a worker thread of their own (pinned to `core`, when
    /// given): the I/O task hands them every frame it sends, in wire order, and sends what
    /// they pass.
    pub fn with_tx_hooks_worker(mut self, core: Option<usize>) -> Self {
        self.tx_hooks = true;
        self.workers.push(WorkerSpec {
            core,
            tasks: vec![TaskRef::TxHooks],
        });
        self
    }

    /// Pin worker `i` to core `first + i` (for machines whose cores are reserved for the
    /// data path, as on a SmartNIC).
    pub fn pinned(mut self, first: usize) -> Self {
        for (i, w) in self.workers.iter_mut().enumerate() {
            w.core = Some(first + i);
        }
        self
    }

    /// BlueField-2: 8 Arm cores, reserved for the data path. One I/O core, 2 flow groups,
    /// 2 preprocess, 2 place and 1 postprocess replicas, one pinned thread per task.
    pub fn bluefield2() -> Self {
        Self::with_counts(2, 2, 2, 1, 8, true)
    }

    /// BlueField-3: 16 Arm cores, reserved for the data path. One I/O core, 4 flow groups,
    /// 4 preprocess, 4 place and 3 postprocess replicas, one pinned thread per task.
    pub fn bluefield3() -> Self {
        Self::with_counts(4, 4, 4, 3, 16, true)
    }
}

fn prev_power_of_two(n: usize) -> usize {
    if n.is_power_of_two() {
        n
    } else {
        n.next_power_of_two() / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_use_their_cores() {
        for (t, cores) in [
            (Topology::x86(1), 1),
            (Topology::x86(2), 2),
            (Topology::x86(4), 4),
            (Topology::x86(16), 16),
            (Topology::bluefield2(), 8),
            (Topology::bluefield3(), 16),
            (Topology::single_thread(), 1),
        ] {
            t.validate().unwrap();
            assert_eq!(t.workers.len(), cores);
            assert!(t.workers.iter().all(|w| !w.tasks.is_empty()), "{t:?}");
        }
        assert_eq!(Topology::bluefield3().flow_groups, 4);
    }

    #[test]
    fn invalid_topologies_are_refused() {
        let mut t = Topology::x86(2);
        t.flow_groups = 3;
        assert!(t.validate().is_err());
        let mut t = Topology::x86(2);
        t.workers[1].tasks.retain(|x| *x != TaskRef::Group(0));
        assert_eq!(
            t.validate(),
            Err(TopologyError::Placement(TaskRef::Group(0)))
        );
    }
}
