//! Sleeping in the kernel until a port has frames or a doorbell rings (Linux).
//!
//! A thread that polls a port has nothing to wake it when a frame arrives: left alone it
//! naps and looks again, so a frame that comes during a nap waits for its end, and an idle
//! engine wakes thousands of times a second. Ports that sit on file descriptors (AF_XDP and
//! AF_PACKET sockets, TAP devices) name them ([`Port::wakeup_fds`](super::Port::wakeup_fds)),
//! and [`PortWait`] blocks in `ppoll(2)` on those and on an eventfd, the [`Doorbell`], that
//! the application's threads ring (through [`Wakeup::set_kick`](crate::ring::Wakeup::set_kick))
//! when they hand the engine work. The inline [`Runtime`](crate::pipeline::Runtime) uses it
//! where its port has descriptors.
//!
//! ```no_run
//! use std::time::Duration;
//! use flextoe::backends::wait::{PortWait, Woken};
//!
//! # fn main() -> std::io::Result<()> {
//! # let socket_fd = 0;
//! let mut wait = PortWait::new(&[socket_fd])?;
//! let bell = wait.doorbell();
//! std::thread::spawn(move || bell.ring());
//! // Returns when the socket is readable, the bell rang, or 10 ms passed.
//! let woken: Woken = wait.wait(Duration::from_millis(10))?;
//! # let _ = woken;
//! # Ok(())
//! # }
//! ```

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// An eventfd that another thread rings to end a [`PortWait::wait`] at once.
#[derive(Debug)]
pub struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    /// A new, unrung doorbell.
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor.
        let r = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `r` was just returned by eventfd() and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(r) };
        Ok(Doorbell { fd })
    }

    /// Ring: the waiter (now or at its next wait) returns at once.
    pub fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of a live `u64` to this doorbell's eventfd. A failure
        // (EAGAIN: the counter is at its maximum) leaves the doorbell rung, which is all
        // this asks.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Take the rings so far back (the eventfd is readable until then).
    fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live `u64`; the eventfd does not block
        // (EFD_NONBLOCK), and a failure (EAGAIN: not rung) leaves nothing to take back.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// What ended a [`PortWait::wait`] (both flags may be set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Woken {
    /// A port descriptor is readable (or reported an error or hang-up).
    pub port: bool,
    /// The doorbell rang.
    pub bell: bool,
}

impl Woken {
    /// Neither: the timeout passed (or a signal interrupted the wait).
    pub fn timed_out(self) -> bool {
        !self.port && !self.bell
    }
}

/// Blocks until one of a port's descriptors is readable, its [`Doorbell`] rings, or a
/// timeout passes.
#[derive(Debug)]
pub struct PortWait {
    /// The port's descriptors, then the doorbell's.
    fds: Vec<libc::pollfd>,
    bell: Arc<Doorbell>,
}

impl PortWait {
    /// A wait on `port_fds` (descriptors the caller keeps open for as long as it waits) and
    /// a new doorbell.
    pub fn new(port_fds: &[RawFd]) -> io::Result<Self> {
        let bell = Arc::new(Doorbell::new()?);
        let fds = port_fds
            .iter()
            .copied()
            .chain([bell.fd.as_raw_fd()])
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        Ok(PortWait { fds, bell })
    }

    /// The doorbell that ends this wait.
    pub fn doorbell(&self) -> Arc<Doorbell> {
        self.bell.clone()
    }

    /// Sleep until a port descriptor is readable (or in error: the caller reads it to find
    /// out), the doorbell rings (a ring before the call counts: the call then returns at
    /// once), or `timeout` passes. Takes the doorbell's rings back before it returns. A
    /// descriptor that is not open is an error (EBADF).
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Woken> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        for p in &mut self.fds {
            p.revents = 0;
        }
        // SAFETY: `fds` is a live, initialized array of `fds.len()` pollfd records that
        // ppoll may write `revents` into; `ts` is a live timespec; no signal mask is passed.
        let r = unsafe {
            libc::ppoll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(Woken::default())
            } else {
                Err(e)
            };
        }
        if self.fds.iter().any(|p| p.revents & libc::POLLNVAL != 0) {
            // A descriptor that is not open: waiting on it again would return at once.
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        let (bell, port) = self.fds.split_last().expect("the doorbell is always there");
        let woken = Woken {
            port: port.iter().any(|p| p.revents != 0),
            bell: bell.revents != 0,
        };
        if woken.bell {
            self.bell.drain();
        }
        Ok(woken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_before_or_during_the_wait_ends_it_and_a_quiet_wait_times_out() {
        let mut w = PortWait::new(&[]).expect("eventfd");
        // Nothing rang: the timeout.
        let t0 = std::time::Instant::now();
        assert!(w.wait(Duration::from_millis(5)).unwrap().timed_out());
        assert!(t0.elapsed() >= Duration::from_millis(5));
        // A ring before the wait counts, and is taken back by it.
        w.doorbell().ring();
        w.doorbell().ring();
        let woken = w.wait(Duration::from_secs(30)).unwrap();
        assert_eq!(
            woken,
            Woken {
                port: false,
                bell: true
            }
        );
        assert!(
            w.wait(Duration::ZERO).unwrap().timed_out(),
            "the rings were taken back"
        );
        // A ring from another thread during the wait.
        let bell = w.doorbell();
        let ringer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            bell.ring();
        });
        assert!(w.wait(Duration::from_secs(30)).unwrap().bell);
        ringer.join().unwrap();
    }

    #[test]
    fn a_readable_port_descriptor_ends_the_wait() {
        let (port, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut w = PortWait::new(&[port.as_raw_fd()]).expect("eventfd");
        assert!(w.wait(Duration::from_millis(1)).unwrap().timed_out());
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            std::io::Write::write_all(&mut peer, b"x").unwrap();
            peer
        });
        let woken = w.wait(Duration::from_secs(30)).unwrap();
        assert_eq!(
            woken,
            Woken {
                port: true,
                bell: false
            }
        );
        drop(writer.join().unwrap());
    }

    #[test]
    fn a_closed_descriptor_is_an_error() {
        // No process has this many descriptors open (a closed one's number could be taken
        // again by another test's thread).
        let mut w = PortWait::new(&[RawFd::MAX]).expect("eventfd");
        let e = w.wait(Duration::from_secs(30)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    }
}
