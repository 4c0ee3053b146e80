//! Open ports inside a network namespace.
//!
//! A TAP device or an AF_PACKET socket belongs to the network namespace of the thread that
//! creates it and keeps working from any thread afterwards. [`in_netns`] runs a closure on a
//! short-lived thread that has joined the named namespace (`/var/run/netns/<name>`, as made by
//! `ip netns add`), so a process can drive ports in several namespaces at once.

use std::io;

/// Run `f` inside the network namespace `name` and return its result.
pub fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path)?;
        use std::os::fd::AsRawFd;
        // SAFETY: `file` is an open namespace file for the whole call; setns only changes the
        // calling thread's network namespace, and this thread ends after `f`.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?
}
