//! `sendfile` to an engine socket: the file's bytes are read straight into the connection's
//! send ring (one copy, as the kernel's own `sendfile` makes into the socket buffer).

use std::sync::atomic::Ordering;

use libc::{c_int, off_t, size_t, ssize_t};

use crate::real::{self, fail};
use crate::sock::{self, State};

/// `sendfile`.
///
/// # Safety
/// As `sendfile(2)`.
#[no_mangle]
pub unsafe extern "C" fn sendfile(
    out: c_int,
    input: c_int,
    offset: *mut off_t,
    count: size_t,
) -> ssize_t {
    // SAFETY: as sendfile.
    unsafe { sendfile_impl(out, input, offset, count) }
}

/// `sendfile64` (the same on 64-bit Linux).
///
/// # Safety
/// As `sendfile(2)`.
#[no_mangle]
pub unsafe extern "C" fn sendfile64(
    out: c_int,
    input: c_int,
    offset: *mut off_t,
    count: size_t,
) -> ssize_t {
    // SAFETY: as sendfile.
    unsafe { sendfile_impl(out, input, offset, count) }
}

unsafe fn sendfile_impl(out: c_int, input: c_int, offset: *mut off_t, count: size_t) -> ssize_t {
    let Some(s) = sock::get(out) else {
        // SAFETY: passed through.
        return unsafe { real::sendfile(out, input, offset, count) };
    };
    let nonblock = s.nonblock.load(Ordering::Relaxed);
    // SAFETY: the caller's offset (or null: the file's own position is used and moved).
    let mut pos = if offset.is_null() {
        None
    } else {
        Some(unsafe { *offset })
    };
    let mut total = 0usize;
    let result = loop {
        let mut read_err = 0;
        let mut eof = false;
        let r = {
            let mut state = s.lock();
            let State::Stream(stream) = &mut *state else {
                // Not connected (bound or listening): `EPIPE`, as Linux's `tcp_sendmsg`.
                break Err(libc::EPIPE);
            };
            stream.write_with(|buf| {
                let want = buf.len().min(count - total);
                let n = match pos {
                    // SAFETY: reading at most `want` bytes into the ring's writable slice.
                    Some(p) => unsafe { libc::pread(input, buf.as_mut_ptr().cast(), want, p) },
                    // SAFETY: as above, at the file's position.
                    None => unsafe { real::read(input, buf.as_mut_ptr().cast(), want) },
                };
                if n < 0 {
                    read_err = std::io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EIO);
                } else if n == 0 {
                    eof = true;
                }
                let n = n.max(0) as usize;
                (n, n)
            })
        };
        match r {
            Ok(n) => {
                total += n;
                if let Some(p) = pos.as_mut() {
                    *p += n as off_t;
                }
                if read_err != 0 {
                    break if total > 0 { Ok(()) } else { Err(read_err) };
                }
                if eof || total == count || nonblock {
                    if !eof && total < count {
                        s.ran_out_of_room();
                    }
                    break Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if nonblock {
                    s.used_up(libc::POLLOUT);
                    break Err(libc::EAGAIN);
                }
                if let Err(e) = s.wait(libc::POLLOUT, None) {
                    // A signal: what went so far, or the error (as Linux).
                    break if total > 0 { Ok(()) } else { Err(e) };
                }
            }
            Err(e) => {
                break if total > 0 {
                    Ok(())
                } else {
                    let fin_first = match &*s.lock() {
                        State::Stream(stream) => stream.peer_closed() && !stream.write_closed(),
                        _ => false,
                    };
                    Err(crate::io::send_errno(&s, &e, fin_first))
                };
            }
        }
    };
    if let (Some(p), false) = (pos, offset.is_null()) {
        // SAFETY: the caller's offset.
        unsafe { *offset = p };
    }
    match result {
        Ok(()) => total as ssize_t,
        Err(e) => {
            if e == libc::EPIPE {
                // SAFETY: raising a signal in our own process, as the kernel would.
                unsafe { libc::raise(libc::SIGPIPE) };
            }
            fail(e) as ssize_t
        }
    }
}
