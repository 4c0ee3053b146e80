//! What the engine service knows of an attached program: whether it may listen on the
//! ports below `net.ipv4.ip_unprivileged_port_start`, as the kernel would let it bind them.
//!
//! The kernel lets a process bind those ports when it holds `CAP_NET_BIND_SERVICE`; the
//! service, which runs with every capability to open its port, decides for the programs
//! that attach to it by the same rule: the effective capabilities of the process at the
//! other end of the attach socket (`SO_PEERCRED`, then `/proc/<pid>/status`), read once at
//! attach. Anything unreadable counts as unprivileged.

use std::os::fd::RawFd;

/// `CAP_NET_BIND_SERVICE`'s bit in a capability set.
const CAP_NET_BIND_SERVICE: u32 = 10;

/// The first port a program may listen on without `CAP_NET_BIND_SERVICE`, as the kernel has
/// it for the calling thread's namespace; 1024 (the kernel's default) when unreadable.
pub fn unprivileged_port_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// Whether the process at the other end of Unix socket `sock` holds `CAP_NET_BIND_SERVICE`
/// in its effective set.
pub fn binds_low_ports(sock: RawFd) -> bool {
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
    if r != 0 || cred.pid <= 0 {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{}/status", cred.pid))
        .ok()
        .and_then(|s| effective_caps(&s))
        .is_some_and(|caps| caps >> CAP_NET_BIND_SERVICE & 1 == 1)
}

/// The `CapEff` line of a `/proc/<pid>/status`.
fn effective_caps(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_set() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000400\n\
                 CapEff:\t0000000000000400\nCapBnd:\t000001ffffffffff\n";
        assert_eq!(effective_caps(s), Some(0x400));
        assert_eq!(effective_caps("CapEff:\tzz\n"), None);
        assert_eq!(effective_caps("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_is_its_own_peer() {
        let mut pair = [0; 2];
        // SAFETY: `pair` has room for two descriptors.
        let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) };
        assert_eq!(r, 0);
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        let want = effective_caps(&own).unwrap() >> CAP_NET_BIND_SERVICE & 1 == 1;
        assert_eq!(binds_low_ports(pair[0]), want);
        // SAFETY: our descriptors, closed once.
        unsafe {
            libc::close(pair[0]);
            libc::close(pair[1]);
        }
    }
}
