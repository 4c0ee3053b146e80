//! What the engine service knows of an attached program: whether it may listen on the
//! ports below `net.ipv4.ip_unprivileged_port_start`, as the kernel would let it bind them.
//!
//! The kernel lets a process bind those ports when it holds `CAP_NET_BIND_SERVICE` in the
//! user namespace that owns the network namespace. The service, which runs with every
//! capability to open its port, decides for the programs attached to it by the same rule:
//! the process at the other end of the attach socket (`SO_PEERCRED`: its pid and effective
//! uid when it connected) must, as `/proc/<pid>` reads, still have that effective uid, be in
//! the service's own user namespace (capabilities in another one are that namespace's only)
//! and hold the capability in its effective set. The service asks when the program
//! attaches and again at each listen on such a port, and both must hold: a process that
//! dropped the capability since is refused. So is a pid that went to another process: the
//! kernel's pidfd of the peer (`SO_PEERPIDFD`, Linux 6.5) must still name a live process
//! after `/proc` was read; a peer the kernel gives no pidfd for because it is gone is
//! refused (on kernels before 6.5, which have no such option, only `/proc` is read, and a
//! pid reused between the connect and the check could pass). Anything unreadable counts as unprivileged.
//! (Capabilities are per thread; `/proc/<pid>` gives the main thread's.)

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;

/// `CAP_NET_BIND_SERVICE`'s bit in a capability set.
const CAP_NET_BIND_SERVICE: u32 = 10;

/// The first port a program may listen on without `CAP_NET_BIND_SERVICE`, as the kernel has
/// it now for the calling thread's namespace; 1024 (the kernel's default) when unreadable.
pub fn unprivileged_port_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// The process at the other end of an attach socket, as the kernel gave it at connect time.
#[derive(Debug)]
pub struct Peer {
    pid: i32,
    euid: u32,
    /// The process itself, where the kernel gives a pidfd.
    pidfd: Option<OwnedFd>,
}

/// The credentials of Unix socket `sock`'s peer (`SO_PEERCRED`), if the kernel tells a
/// process.
fn credentials(sock: RawFd) -> Option<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are live locals of the size the kernel is told.
    let r = unsafe {
        libc::getsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0 && cred.pid > 0).then_some(cred)
}

/// The process id of Unix socket `sock`'s peer as it connected (`SO_PEERCRED`; 0 where the
/// kernel tells none, as for a peer in a process id namespace this one cannot see). It
/// names the process even after it exited, unlike [`Peer::of`].
pub fn peer_pid(sock: RawFd) -> i32 {
    credentials(sock).map_or(0, |c| c.pid)
}

impl Peer {
    /// The peer of Unix socket `sock` (`SO_PEERCRED`), if the kernel tells one.
    pub fn of(sock: RawFd) -> Option<Peer> {
        let cred = credentials(sock)?;
        let mut fd: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `fd` and `len` are live locals of the size the kernel is told.
        let r = unsafe {
            libc::getsockopt(
                sock,
                libc::SOL_SOCKET,
                libc::SO_PEERPIDFD,
                (&mut fd as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        let pidfd = if r == 0 && fd >= 0 {
            // SAFETY: a descriptor the kernel just made for us.
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOPROTOOPT) {
            // A kernel before 6.5: `/proc` alone.
            None
        } else {
            // The peer is gone already (6.5 to 6.15 say so; later kernels give a pidfd of
            // the dead process, which `alive` refuses): its pid may be another's.
            return None;
        };
        Some(Peer {
            pid: cred.pid,
            euid: cred.uid,
            pidfd,
        })
    }

    /// Whether the process the pidfd names is still alive (signal 0 checks without
    /// sending); `true` without a pidfd.
    fn alive(&self) -> bool {
        self.pidfd.as_ref().is_none_or(|fd| {
            // SAFETY: a pidfd of ours, no signal information, no flags.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    0,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            r == 0
        })
    }

    /// The process's id, as the kernel named it when the socket was connected.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the peer holds `CAP_NET_BIND_SERVICE` now, by the module's rule.
    pub fn binds_low_ports(&self) -> bool {
        let same_userns = |pid: &str| {
            let theirs = std::fs::metadata(format!("/proc/{pid}/ns/user"));
            let ours = std::fs::metadata("/proc/self/ns/user");
            matches!((theirs, ours), (Ok(t), Ok(o)) if (t.dev(), t.ino()) == (o.dev(), o.ino()))
        };
        let pid = self.pid.to_string();
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| Some((effective_uid(&s)?, effective_caps(&s)?)))
            .is_some_and(|(euid, caps)| {
                euid == self.euid && caps >> CAP_NET_BIND_SERVICE & 1 == 1 && same_userns(&pid)
            })
            // After reading /proc: the pid was still the peer's while it was read.
            && self.alive()
    }
}

/// The `CapEff` line of a `/proc/<pid>/status`.
fn effective_caps(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The effective uid of a `/proc/<pid>/status` (the second field of its `Uid` line).
fn effective_uid(status: &str) -> Option<u32> {
    let ids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    ids.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_set_and_uid() {
        let s = "Name:\tx\nUid:\t1000\t0\t0\t0\nCapInh:\t0000000000000000\n\
                 CapPrm:\t0000000000000400\nCapEff:\t0000000000000400\n";
        assert_eq!(effective_caps(s), Some(0x400));
        assert_eq!(effective_uid(s), Some(0));
        assert_eq!(effective_caps("CapEff:\tzz\n"), None);
        assert_eq!(effective_caps("Name:\tx\n"), None);
        assert_eq!(effective_uid("Uid:\t1000\n"), None);
    }

    /// A pidfd whose process has exited and been reaped names no live process: its pid may
    /// be another's by now.
    #[test]
    fn a_peer_that_exited_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().expect("true");
        let pid = child.id() as i32;
        // SAFETY: pidfd_open takes no pointers.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
        assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
        let peer = Peer {
            pid,
            euid: 0,
            // SAFETY: a descriptor just made for us.
            pidfd: Some(unsafe { OwnedFd::from_raw_fd(fd) }),
        };
        assert!(peer.alive());
        child.wait().expect("reaped");
        assert!(!peer.alive());
        assert!(!peer.binds_low_ports());
    }

    #[test]
    fn this_process_is_its_own_peer() {
        let mut pair = [0; 2];
        // SAFETY: `pair` has room for two descriptors.
        let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) };
        assert_eq!(r, 0);
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        let want = effective_caps(&own).unwrap() >> CAP_NET_BIND_SERVICE & 1 == 1;
        let peer = Peer::of(pair[0]).expect("a peer");
        assert_eq!(peer.pid as u32, std::process::id());
        assert_eq!(peer.binds_low_ports(), want);
        // Another effective uid than the one it connected with: refused.
        let other = Peer {
            euid: peer.euid.wrapping_add(1),
            ..peer
        };
        assert!(!other.binds_low_ports());
        // SAFETY: our descriptors, closed once.
        unsafe {
            libc::close(pair[0]);
            libc::close(pair[1]);
        }
    }
}
