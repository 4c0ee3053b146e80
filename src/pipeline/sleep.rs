//! Where a thread that polls a port sleeps when it has nothing to do: in short parks (naps)
//! at first, and once it has been idle for [`PORT_SLEEP_AFTER`], in the kernel on the port's
//! descriptors where it has some (a frame, a doorbell or the timeout ends that sleep). The
//! inline [`Runtime`](super::Runtime)'s thread and the threaded runtime's I/O worker both
//! sleep this way.
//!
//! Why naps first: while traffic flows with short pauses (a bulk receiver waiting for the
//! sender), a frame-driven wakeup per pause costs the sender's CPU a wakeup and the engine a
//! smaller batch; measured on AF_XDP over veth (2 vCPUs), bulk fell by about a tenth when
//! every pause slept on the socket.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::backends::Port;
use crate::ring::Wakeup;

/// How a polling thread slept while it had nothing to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeSleeps {
    /// Whether, once idle a while, it sleeps on its port's descriptors
    /// ([`Port::wakeup_fds`]), so that a frame ends the sleep; otherwise it only naps.
    pub on_port: bool,
    /// Sleeps taken (naps included).
    pub sleeps: u64,
    /// Sleeps that a frame on the port ended (only when sleeping on its descriptors).
    pub port_wakes: u64,
    /// Sleeps that the application's doorbell or a request ended (only when sleeping on
    /// the port's descriptors; in a nap it is not told apart from the nap's end).
    pub bell_wakes: u64,
}

/// [`RuntimeSleeps`] as the sleeping thread counts them.
#[derive(Debug, Default)]
pub(crate) struct SleepCounters {
    on_port: AtomicBool,
    sleeps: AtomicU64,
    port_wakes: AtomicU64,
    bell_wakes: AtomicU64,
}

impl SleepCounters {
    pub(crate) fn get(&self) -> RuntimeSleeps {
        RuntimeSleeps {
            on_port: self.on_port.load(Ordering::Relaxed),
            sleeps: self.sleeps.load(Ordering::Relaxed),
            port_wakes: self.port_wakes.load(Ordering::Relaxed),
            bell_wakes: self.bell_wakes.load(Ordering::Relaxed),
        }
    }
}

/// A port's descriptors to sleep on ([`Port::wakeup_fds`]; none off Linux).
#[cfg(target_os = "linux")]
pub(crate) type PortFds = Vec<std::os::fd::RawFd>;
/// A port's descriptors to sleep on (none off Linux).
#[cfg(not(target_os = "linux"))]
pub(crate) type PortFds = ();

/// `port`'s descriptors to sleep on.
pub(crate) fn fds_of(port: &impl Port) -> PortFds {
    #[cfg(target_os = "linux")]
    return port.wakeup_fds();
    #[cfg(not(target_os = "linux"))]
    let _ = port;
}

/// How long a thread stays idle, napping, before it sleeps on the port's descriptors.
pub(crate) const PORT_SLEEP_AFTER: Duration = Duration::from_millis(1);

/// Where an idle polling thread sleeps.
pub(crate) enum Sleep {
    /// Park for at most this long.
    Nap(Duration),
    /// Nap for `nap` until idle for [`PORT_SLEEP_AFTER`], then block on the port's
    /// descriptors and a doorbell the wakeup kicks, for at most `max`.
    #[cfg(target_os = "linux")]
    Port {
        wait: crate::backends::wait::PortWait,
        nap: Duration,
        max: Duration,
    },
}

impl Sleep {
    /// Sleep on `port`'s descriptors where it has some (and the doorbell could be made),
    /// for at most `max` at a time, with `wake`'s wakes ringing the doorbell; otherwise nap
    /// for `nap`. Marks in `n` which it is.
    pub(crate) fn for_port(
        port: &impl Port,
        wake: &Wakeup,
        nap: Duration,
        max: Duration,
        n: &SleepCounters,
    ) -> Sleep {
        Sleep::on(fds_of(port), wake, nap, max, n)
    }

    /// [`for_port`](Self::for_port) with the port's descriptors taken before (an empty
    /// list: nap).
    pub(crate) fn on(
        fds: PortFds,
        wake: &Wakeup,
        nap: Duration,
        max: Duration,
        n: &SleepCounters,
    ) -> Sleep {
        let sleep = Sleep::choose(fds, wake, nap, max);
        n.on_port
            .store(!matches!(sleep, Sleep::Nap(_)), Ordering::Relaxed);
        sleep
    }

    fn choose(fds: PortFds, wake: &Wakeup, nap: Duration, max: Duration) -> Sleep {
        #[cfg(target_os = "linux")]
        {
            if !fds.is_empty() {
                if let Ok(wait) = crate::backends::wait::PortWait::new(&fds) {
                    let bell = wait.doorbell();
                    wake.set_kick(Some(std::sync::Arc::new(move || bell.ring())));
                    return Sleep::Port { wait, nap, max };
                }
            }
        }
        let _ = (fds, wake, max);
        Sleep::Nap(nap)
    }

    /// Sleep until woken, a frame (on descriptors, once the thread has been idle for
    /// [`PORT_SLEEP_AFTER`]: `idle_for` says how long it has), `timeout` where given, or the
    /// longest sleep (a nap: its length); counts in `n`.
    pub(crate) fn sleep(
        &mut self,
        timeout: Option<Duration>,
        idle_for: Duration,
        n: &SleepCounters,
    ) {
        n.sleeps.fetch_add(1, Ordering::Relaxed);
        match self {
            Sleep::Nap(nap) => std::thread::park_timeout(*nap),
            #[cfg(target_os = "linux")]
            Sleep::Port { nap, .. } if idle_for < PORT_SLEEP_AFTER => {
                std::thread::park_timeout(*nap)
            }
            #[cfg(target_os = "linux")]
            Sleep::Port { wait, max, .. } => match wait.wait(timeout.map_or(*max, |t| t.min(*max)))
            {
                Ok(woken) => {
                    if woken.port {
                        n.port_wakes.fetch_add(1, Ordering::Relaxed);
                    }
                    if woken.bell {
                        n.bell_wakes.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // A descriptor the kernel refuses to wait on: nap from now on.
                Err(_) => *self = Sleep::Nap(*max),
            },
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (timeout, idle_for);
    }
}
