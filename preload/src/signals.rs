//! Signals and blocking calls.
//!
//! A blocking call on a kernel socket ends with `EINTR` when a signal handler runs while it
//! sleeps, unless the handler was installed with `SA_RESTART` (and the socket has no
//! `SO_RCVTIMEO`/`SO_SNDTIMEO`: then it always ends, `signal(7)`). A blocking call on an
//! engine socket sleeps in `ppoll` on its thread's eventfd, with the signals held off while
//! it looks at readiness and let in only while it sleeps (the race `pselect` closes): a
//! handler that runs ends that sleep, and the call decides as Linux would
//! ([`interrupts`]). The library's own threads (the engine's, the service client's) take no
//! signals ([`quiet`]), so that a signal meant for the program reaches a thread of the
//! program, as it would without the library.

use std::time::{Duration, Instant};

use crate::real;

/// The calling thread's signals, held off until this is dropped.
pub struct Held {
    old: libc::sigset_t,
}

impl Held {
    /// Hold off every signal the calling thread can hold (not `SIGKILL`, `SIGSTOP`).
    pub fn hold() -> Held {
        // SAFETY: both sets are ours; `sigfillset` initializes `all`, and `pthread_sigmask`
        // writes the thread's old mask into `old`.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            Held { old }
        }
    }

    /// Sleep in `ppoll` on the eventfd `fd` for at most `d`, with the thread's signals as
    /// they were before [`hold`](Self::hold): `(interrupted, woken)`, whether a signal
    /// handler ran meanwhile and whether `fd` became readable.
    pub fn sleep_on(&self, fd: libc::c_int, d: Duration) -> (bool, bool) {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        };
        // SAFETY: one pollfd, a timespec and a signal set, all ours.
        let r = unsafe { real::ppoll(&mut p, 1, &ts, &self.old) };
        let interrupted =
            r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR);
        (interrupted, r > 0 && p.revents != 0)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: restores the mask `hold` saved, ours.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// Run `f` (which starts threads of the library's) with every signal held off: the threads
/// it starts inherit that, and take no signal meant for the program.
pub fn quiet<T>(f: impl FnOnce() -> T) -> T {
    let _held = Held::hold();
    f()
}

/// Signals a fault raises in the thread that faulted: their handlers (Rust's own stack
/// overflow handlers among them) never end another call's sleep.
const FAULTS: [libc::c_int; 4] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL];

/// Whether a blocking call that a signal handler interrupted fails with `EINTR` (else it
/// goes on waiting): always where the socket has a timeout (`timeout_set`), as Linux; else
/// where some handler of the program (for a signal other than a fault's) was installed
/// without `SA_RESTART`. Which signal came is not known here, so a program with handlers of
/// both kinds may see an `EINTR` Linux would have restarted; such a program handles `EINTR`
/// anyway.
pub fn interrupts(timeout_set: bool) -> bool {
    timeout_set
        || (1..=libc::SIGRTMAX()).any(|sig| {
            if FAULTS.contains(&sig) {
                return false;
            }
            // SAFETY: all zeroes is a valid `sigaction` (a plain C struct).
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: a query (null new action) into `old`, ours.
            let r = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
            r == 0
                && old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN
                && old.sa_flags & libc::SA_RESTART == 0
        })
}

/// How long a blocking call sleeps at most before it looks at readiness again (a missed
/// wake-up costs no more), `deadline` allowing.
pub fn slice(deadline: Option<Instant>) -> Duration {
    let slice = Duration::from_millis(50);
    match deadline {
        Some(d) => slice.min(d.saturating_duration_since(Instant::now())),
        None => slice,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(sig: libc::c_int, flags: libc::c_int) -> libc::sigaction {
        extern "C" fn handler(_: libc::c_int) {}
        // SAFETY: all zeroes is a valid `sigaction`; the handler does nothing.
        unsafe {
            let mut new: libc::sigaction = std::mem::zeroed();
            let mut old: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
            new.sa_flags = flags;
            assert_eq!(libc::sigaction(sig, &new, &mut old), 0);
            old
        }
    }

    /// A handler without `SA_RESTART` makes interrupted calls fail, one with it does not,
    /// a timeout always does, and the fault handlers (the test harness's own) do not count.
    #[test]
    fn which_handlers_interrupt() {
        let sig = libc::SIGRTMAX() - 1;
        assert!(!interrupts(false), "only fault handlers in this process");
        assert!(interrupts(true));
        let old = install(sig, libc::SA_RESTART);
        assert!(!interrupts(false));
        install(sig, 0);
        assert!(interrupts(false));
        // SAFETY: puts back what was there.
        unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
        assert!(!interrupts(false));
    }
}
