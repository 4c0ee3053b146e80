//! A worker thread: runs its tasks in turn, samples their run times, publishes their
//! reports, and spins then parks when none had work. The task graph's workers and the
//! inline mapping's one worker are this same loop.

use super::*;

/// What a worker thread needs besides its tasks.
pub(super) struct WorkerParams<K> {
    /// Its index (the thread's name).
    pub(super) index: usize,
    /// The core to pin it to.
    pub(super) core: Option<core_affinity::CoreId>,
    /// Each task's sampled run times (every run, the runs that found work), published.
    pub(super) task_ns: Vec<(Arc<AtomicU64>, Arc<AtomicU64>)>,
    /// The thread's CPU clock, published.
    pub(super) cpu: Arc<AtomicU64>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) clock: K,
    /// What producers ring to wake it.
    pub(super) wake: Arc<Wakeup>,
    /// Its longest sleep.
    pub(super) nap: Duration,
    /// Whether it yields its core now and then while busy (more threads than cores).
    pub(super) share_core: bool,
}

/// Start a worker thread running `tasks`.
pub(super) fn spawn<K: Clock + 'static>(
    mut tasks: Vec<Box<dyn Task>>,
    p: WorkerParams<K>,
) -> Result<JoinHandle<()>, EngineError> {
    std::thread::Builder::new()
        .name(format!("flextoe-w{}", p.index))
        .spawn(move || {
            if let Some(c) = p.core {
                core_affinity::set_for_current(c);
            }
            let mut idle = Idle::default();
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
            let publish = |tasks: &mut Vec<Box<dyn Task>>, times: &RunTimes| {
                let sampled = times.all.iter().zip(&times.work);
                for ((t, (all, work)), (a, w)) in tasks.iter_mut().zip(&p.task_ns).zip(sampled) {
                    all.store(*a, Ordering::Relaxed);
                    work.store(*w, Ordering::Relaxed);
                    t.report();
                }
                if let Ok(t) = cpu_time::ThreadTime::try_now() {
                    p.cpu
                        .store(t.as_duration().as_nanos() as u64, Ordering::Relaxed);
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
                    publish(&mut tasks, &times);
                }
                // Share the core now and then: applications and other workers may have been
                // placed on it too.
                if busy && p.share_core && polls.is_multiple_of(16) {
                    std::thread::yield_now();
                }
                idle.after(busy, &p.wake, p.nap, || {
                    run_all(&mut tasks) || p.stop.load(Ordering::Relaxed)
                });
            }
            publish(&mut tasks, &times);
        })
        .map_err(|_| EngineError::Config("could not spawn a worker thread"))
}
