//! [`Runtime`]: an inline [`Engine`] polled on a thread of its own, and how that thread
//! sleeps when the engine has nothing to do.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::sleep::{RuntimeSleeps, Sleep, SleepCounters};
use super::{topology, Engine, EngineStats};
use crate::backends::Port;
use crate::control::congestion::{CongestionControl, NewReno};
use crate::host::Host;
use crate::ring::{Idle, Wakeup, PORT_SPIN};
use crate::stages::scheduler::{FlowScheduler, RoundRobin};
use crate::time::Clock;

/// How often a [`Runtime`] publishes its engine's counters.
const STATS_EVERY: Duration = Duration::from_millis(100);
/// Longest sleep of an idle [`Runtime`] thread whose port has no descriptors to sleep on
/// (it polls the port and the timers at least this often).
const RUNTIME_NAP: Duration = Duration::from_micros(50);
/// Longest sleep of an idle [`Runtime`] thread blocked on its port's descriptors: it wakes
/// sooner for a frame, a doorbell, or the engine's next deadline; this bounds what a
/// deadline the engine does not report could wait.
const PORT_SLEEP_MAX: Duration = Duration::from_millis(1);

/// Runs an engine on its own thread, polling it with a clock, until stopped. Blocking
/// socket calls work against a running runtime.
///
/// The thread polls without a break while there is work, and for 50 us after the last poll
/// that found any (the next frame of a conversation usually arrives within that; not where
/// the process may use only one core); then it naps, up to 50 us at a time. The
/// application's doorbells and requests wake it at once. Where the port has descriptors
/// ([`Port::wakeup_fds`]: AF_XDP, AF_PACKET, TAP), a thread idle for 1 ms sleeps in the
/// kernel on them instead, until a frame, a doorbell or the engine's next deadline (at most
/// 1 ms at a time): an idle engine then costs little CPU. In a nap, a frame waits for the
/// nap's end. [`sleeps`](Self::sleeps) says how the thread slept.
pub struct Runtime<P: Port + 'static, C: CongestionControl = NewReno, S: FlowScheduler = RoundRobin>
{
    stop: Arc<AtomicBool>,
    wake: Arc<Wakeup>,
    handle: Option<JoinHandle<Engine<P, C, S>>>,
    host: Host,
    stats: Arc<Mutex<EngineStats>>,
    sleeps: Arc<SleepCounters>,
}

impl<P: Port + 'static, C: CongestionControl, S: FlowScheduler> Runtime<P, C, S> {
    /// Start polling `engine` on a new thread with `clock`.
    pub fn spawn(
        mut engine: Engine<P, C, S>,
        clock: impl Clock + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let host = engine.host();
        let s = stop.clone();
        let stats = Arc::new(Mutex::new(engine.stats()));
        let slot = stats.clone();
        let sleeps = Arc::new(SleepCounters::default());
        let counters = sleeps.clone();
        // Doorbells and requests wake the thread.
        let wake = engine.engine_wake();
        let w = wake.clone();
        let handle = std::thread::Builder::new()
            .name("flextoe-engine".into())
            .spawn(move || {
                // With one core to run on, the application's threads need it: no spin.
                let spin = if topology::core_budget() > 1 {
                    PORT_SPIN
                } else {
                    Duration::ZERO
                };
                let mut idle = Idle::new(spin);
                // Made here, so that it goes with the thread (taking its doorbell back from
                // the wakeup) however the thread ends.
                let mut sleep =
                    Sleep::for_port(engine.port(), &w, RUNTIME_NAP, PORT_SLEEP_MAX, &counters);
                let mut published = clock.now();
                while !s.load(Ordering::Relaxed) {
                    let now = clock.now();
                    if now.saturating_since(published) >= STATS_EVERY {
                        published = now;
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = engine.stats();
                    }
                    let busy = engine.poll(now);
                    let deadline = Cell::new(None);
                    idle.after(
                        busy,
                        &w,
                        || {
                            let again = engine.poll(clock.now()) || s.load(Ordering::Relaxed);
                            deadline.set(engine.next_deadline());
                            again
                        },
                        |idle_since| {
                            let now = clock.now();
                            let timeout = deadline.get().map(|d| d.saturating_since(now));
                            sleep.sleep(timeout, idle_since, &counters)
                        },
                    );
                }
                engine
            })?;
        Ok(Runtime {
            stop,
            wake,
            handle: Some(handle),
            host,
            stats,
            sleeps,
        })
    }

    /// The engine's counters as last published (every 100 ms of the runtime's clock).
    pub fn stats(&self) -> EngineStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How the thread slept so far.
    pub fn sleeps(&self) -> RuntimeSleeps {
        self.sleeps.get()
    }

    /// A socket handle for the engine.
    pub fn host(&self) -> Host {
        self.host.clone()
    }

    /// Stop the thread and get the engine back.
    pub fn stop(mut self) -> Engine<P, C, S> {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.force();
        let h = self.handle.take().expect("runtime joined once");
        match h.join() {
            Ok(e) => e,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

impl<P: Port + 'static, C: CongestionControl, S: FlowScheduler> Drop for Runtime<P, C, S> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.force();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
