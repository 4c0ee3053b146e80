//! A worker thread: runs its tasks in turn, samples their run times, publishes their
//! reports, and spins then parks when none had work. The task graph's workers and the
//! inline mapping's one worker are this same loop.

use super::*;
use crate::pipeline::sleep::{PortFds, Sleep};

/// What a worker thread needs besides its tasks.
pub(super) struct WorkerParams<K> {
    /// Its index (the thread's name).
    pub(super) index: usize,
    /// The core to pin it to ([`WorkerSpec::core`](crate::pipeline::topology::WorkerSpec::core):
    /// an index into the process's cores).
    pub(super) core: Option<usize>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) clock: K,
    /// What producers ring to wake it.
    pub(super) wake: Arc<Wakeup>,
    /// Its longest sleep.
    pub(super) nap: Duration,
    /// How long it keeps polling after its last busy pass before it parks, where it has a
    /// core of its own ([`PORT_SPIN`](crate::ring::PORT_SPIN) for the worker of the I/O task).
    pub(super) spin: Duration,
    /// The port's descriptors, for the worker of the I/O task: it sleeps on them (at most a
    /// nap at a time), so that a frame wakes it. Empty: it parks.
    pub(super) port_fds: PortFds,
    /// The runtime's worker threads, all told: with fewer cores than threads that want to
    /// run (workers plus applications), a busy worker yields now and then instead of
    /// holding its core for a whole time slice.
    pub(super) workers: usize,
}

/// Start a worker thread running `tasks` (in the order of `cpu.tasks`), publishing their
/// run times and its CPU clock into `cpu`.
pub(super) fn spawn<K: Clock + 'static>(
    mut tasks: Vec<Box<dyn Task>>,
    cpu: &WorkerCpu,
    p: WorkerParams<K>,
) -> Result<JoinHandle<()>, EngineError> {
    let task_ns: Vec<(Arc<AtomicU64>, Arc<AtomicU64>)> = cpu
        .tasks
        .iter()
        .map(|t| (t.all.clone(), t.work.clone()))
        .collect();
    let thread_ns = cpu.thread_ns.clone();
    let counters = cpu.sleeps.clone();
    // The process's cores, not the calling thread's: a caller pinned to one core would
    // otherwise confine every worker to it.
    let cores = crate::pipeline::topology::usable_cores();
    let core = p
        .core
        .and_then(|c| cores.get(c % cores.len().max(1)).copied())
        .map(|id| core_affinity::CoreId { id });
    let share_core = p.workers >= crate::pipeline::topology::core_budget().max(1);
    std::thread::Builder::new()
        .name(format!("flextoe-w{}", p.index))
        .spawn(move || {
            if let Some(c) = core {
                core_affinity::set_for_current(c);
            }
            // A worker that shares its core with others spins no longer than the passes.
            let mut idle = Idle::new(if share_core { Duration::ZERO } else { p.spin });
            let mut sleep = Sleep::on(p.port_fds, &p.wake, p.nap, p.nap, &counters);
            let mut polls = 0u64;
            let mut times = RunTimes::new(tasks.len());
            let mut reported = std::time::Instant::now();
            let run_all = |tasks: &mut Vec<Box<dyn Task>>| {
                let now = p.clock.now();
                let mut busy = false;
                for t in tasks.iter_mut() {
                    busy |= t.run(now);
                }
                busy
            };
            let publish = |tasks: &mut Vec<Box<dyn Task>>, times: &RunTimes, full: bool| {
                let sampled = times.all.iter().zip(&times.work);
                for ((t, (all, work)), (a, w)) in tasks.iter_mut().zip(&task_ns).zip(sampled) {
                    all.store(*a, Ordering::Relaxed);
                    work.store(*w, Ordering::Relaxed);
                    if full {
                        t.report_full();
                    } else {
                        t.report();
                    }
                }
                if let Ok(t) = cpu_time::ThreadTime::try_now() {
                    thread_ns.store(t.as_duration().as_nanos() as u64, Ordering::Relaxed);
                }
            };
            while !p.stop.load(Ordering::Relaxed) {
                let busy = if polls.is_multiple_of(SAMPLE_EVERY) {
                    times.run_timed(&mut tasks, p.clock.now())
                } else {
                    run_all(&mut tasks)
                };
                polls += 1;
                if polls.is_multiple_of(64) && reported.elapsed() >= REPORT_EVERY {
                    reported = std::time::Instant::now();
                    publish(&mut tasks, &times, false);
                }
                // Share the core now and then: applications and other workers may have been
                // placed on it too.
                if busy && share_core && polls.is_multiple_of(16) {
                    std::thread::yield_now();
                }
                idle.after(
                    busy,
                    &p.wake,
                    || run_all(&mut tasks) || p.stop.load(Ordering::Relaxed),
                    |idle_since| sleep.sleep(None, idle_since, &counters),
                );
            }
            publish(&mut tasks, &times, true);
        })
        .map_err(|_| EngineError::Config("could not spawn a worker thread"))
}
