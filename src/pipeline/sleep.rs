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
use std::sync::Arc;
use std::time::{Duration, Instant};

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
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) const PORT_SLEEP_AFTER: Duration = Duration::from_millis(1);

/// Where an idle polling thread sleeps.
pub(crate) enum Sleep {
    /// Park for at most this long.
    Nap(Duration),
    /// Nap until idle for [`PORT_SLEEP_AFTER`], then block on the port's descriptors.
    #[cfg(target_os = "linux")]
    Port(PortSleep),
}

/// Sleeping on a port's descriptors and a doorbell that the wakeup kicks.
#[cfg(target_os = "linux")]
pub(crate) struct PortSleep {
    wait: crate::backends::wait::PortWait,
    /// The wakeup whose wakes ring the doorbell (its kick, cleared when this goes).
    wake: Arc<Wakeup>,
    /// A nap's length, for the first [`PORT_SLEEP_AFTER`] of idleness.
    nap: Duration,
    /// The longest sleep on the descriptors.
    max: Duration,
    /// The idle period (by its start) in which a descriptor ended a sleep: the pass after
    /// it found no work (a port that leaves its frames unread while its arena or the next
    /// stage is full; a descriptor in error), so the thread naps for the rest of that
    /// period instead of returning from the kernel at once, again and again.
    woke_in: Option<Instant>,
}

#[cfg(target_os = "linux")]
impl Drop for PortSleep {
    fn drop(&mut self) {
        // The doorbell goes with the sleeper: later wakes only unpark.
        self.wake.set_kick(None);
    }
}

impl Sleep {
    /// Sleep on `port`'s descriptors where it has some (and the doorbell could be made),
    /// for at most `max` at a time, with `wake`'s wakes ringing the doorbell while it does;
    /// otherwise nap for `nap`. Marks in `n` which it is.
    pub(crate) fn for_port(
        port: &impl Port,
        wake: &Arc<Wakeup>,
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
        wake: &Arc<Wakeup>,
        nap: Duration,
        max: Duration,
        n: &SleepCounters,
    ) -> Sleep {
        let sleep = Sleep::choose(fds, wake, nap, max);
        n.on_port
            .store(!matches!(sleep, Sleep::Nap(_)), Ordering::Relaxed);
        sleep
    }

    fn choose(fds: PortFds, wake: &Arc<Wakeup>, nap: Duration, max: Duration) -> Sleep {
        #[cfg(target_os = "linux")]
        {
            if !fds.is_empty() {
                if let Ok(wait) = crate::backends::wait::PortWait::new(&fds) {
                    let bell = wait.doorbell();
                    wake.set_kick(Some(Arc::new(move || bell.ring())));
                    return Sleep::Port(PortSleep {
                        wait,
                        wake: wake.clone(),
                        nap,
                        max,
                        woke_in: None,
                    });
                }
            }
        }
        let _ = (fds, wake, max);
        Sleep::Nap(nap)
    }

    /// Sleep until woken, a frame (on descriptors, once the thread has been idle for
    /// [`PORT_SLEEP_AFTER`]: it has been since `idle_since`), `timeout` where given, or the
    /// longest sleep (a nap: its length); counts in `n`.
    pub(crate) fn sleep(
        &mut self,
        timeout: Option<Duration>,
        idle_since: Instant,
        n: &SleepCounters,
    ) {
        n.sleeps.fetch_add(1, Ordering::Relaxed);
        match self {
            Sleep::Nap(nap) => std::thread::park_timeout(*nap),
            #[cfg(target_os = "linux")]
            Sleep::Port(p) => {
                if idle_since.elapsed() < PORT_SLEEP_AFTER || p.woke_in == Some(idle_since) {
                    std::thread::park_timeout(p.nap);
                    return;
                }
                let limit = timeout.map_or(p.max, |t| t.min(p.max));
                let mut woken = Ok(Default::default());
                p.wake.sleep_kicked(|| woken = p.wait.wait(limit));
                match woken {
                    Ok(w) => {
                        if w.port {
                            n.port_wakes.fetch_add(1, Ordering::Relaxed);
                            p.woke_in = Some(idle_since);
                        }
                        if w.bell {
                            n.bell_wakes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // A descriptor the kernel refuses to wait on: nap from now on (the
                    // port sleep's drop takes the kick back).
                    Err(_) => {
                        n.on_port.store(false, Ordering::Relaxed);
                        *self = Sleep::Nap(p.nap);
                    }
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (timeout, idle_since);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// A port sleep on `fd` with a nap of 1 ms and kernel sleeps of up to 30 s.
    fn port_sleep(fd: std::os::fd::RawFd, wake: &Arc<Wakeup>, n: &SleepCounters) -> Sleep {
        let s = Sleep::on(
            vec![fd],
            wake,
            Duration::from_millis(1),
            Duration::from_secs(30),
            n,
        );
        assert!(n.get().on_port);
        s
    }

    /// Idle long enough to sleep on the descriptors.
    fn long_idle() -> Instant {
        Instant::now() - PORT_SLEEP_AFTER * 2
    }

    #[test]
    fn a_wake_kicks_a_sleep_in_the_kernel_and_one_before_it_skips_the_sleep() {
        let (port, _peer) = UnixStream::pair().unwrap();
        let (wake, n) = (Wakeup::new(), SleepCounters::default());
        let mut s = port_sleep(port.as_raw_fd(), &wake, &n);
        // A producer's wake during the sleep ends it through the doorbell.
        let since = long_idle();
        wake.prepare();
        let w = wake.clone();
        let producer = std::thread::spawn(move || {
            // Once the consumer is on its way into the kernel (or in it).
            let t0 = Instant::now();
            while !w.in_kicked_sleep() && t0.elapsed() < Duration::from_secs(10) {
                std::thread::yield_now();
            }
            w.notify();
        });
        let t0 = Instant::now();
        wake.park_in(|| s.sleep(None, since, &n));
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        producer.join().unwrap();
        assert_eq!((n.get().sleeps, n.get().bell_wakes), (1, 1));
        // A wake between the announcement and the sleep: no sleep at all.
        wake.prepare();
        wake.notify();
        wake.park_in(|| s.sleep(None, since, &n));
        assert_eq!(n.get().sleeps, 1);
        // Gone, the sleep takes its doorbell back from the wakeup.
        assert!(format!("{wake:?}").contains("kick: true"), "{wake:?}");
        drop(s);
        assert!(!format!("{wake:?}").contains("kick: true"), "{wake:?}");
    }

    #[test]
    fn a_descriptor_that_stays_ready_without_work_ends_one_sleep_per_idle_period() {
        let (port, mut peer) = UnixStream::pair().unwrap();
        let (wake, n) = (Wakeup::new(), SleepCounters::default());
        let mut s = port_sleep(port.as_raw_fd(), &wake, &n);
        // Readable, and never read (an arena that is full, say).
        peer.write_all(b"x").unwrap();
        let sleep = |s: &mut Sleep, since| {
            wake.prepare();
            wake.park_in(|| s.sleep(None, since, &n));
        };
        let first = long_idle();
        sleep(&mut s, first);
        assert_eq!(n.get().port_wakes, 1);
        // The same idle period: naps, not another return from the kernel at once.
        for _ in 0..3 {
            sleep(&mut s, first);
        }
        assert_eq!((n.get().sleeps, n.get().port_wakes), (4, 1));
        // Idle for less than the threshold (here: from a time to come, so never long
        // enough, however late this thread runs): naps too.
        sleep(&mut s, Instant::now() + Duration::from_secs(60));
        assert_eq!(n.get().port_wakes, 1);
        // A later idle period sleeps on the descriptor again.
        sleep(&mut s, long_idle());
        assert_eq!((n.get().sleeps, n.get().port_wakes), (6, 2));
    }

    #[test]
    fn a_descriptor_the_kernel_refuses_turns_the_sleep_into_naps_and_takes_the_kick_back() {
        let (wake, n) = (Wakeup::new(), SleepCounters::default());
        let mut s = port_sleep(std::os::fd::RawFd::MAX, &wake, &n);
        assert!(format!("{wake:?}").contains("kick: true"), "{wake:?}");
        wake.prepare();
        wake.park_in(|| s.sleep(None, long_idle(), &n));
        assert!(matches!(s, Sleep::Nap(_)));
        assert!(!n.get().on_port);
        assert!(format!("{wake:?}").contains("kick: false"), "{wake:?}");
    }
}
