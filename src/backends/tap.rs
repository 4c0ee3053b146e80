//! TAP backend: Ethernet frames through `/dev/net/tun` (feature `tap`, Linux).
//!
//! The device is opened nonblocking with `IFF_TAP | IFF_NO_PI` and no offloads, so frames
//! read carry full checksums and are at most MTU-sized. One `read` or `write` per frame:
//! TAP has no batch interface.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::Port;
use crate::buf::{Frame, FrameArena};
use crate::time::Instant;

/// Counters of a TAP port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapStats {
    /// Frames read.
    pub rx: u64,
    /// Frames written.
    pub tx: u64,
    /// Writes that failed (frame dropped).
    pub tx_errors: u64,
    /// Reads that failed with something other than "nothing to read".
    pub rx_errors: u64,
}

/// A TAP device as a [`Port`].
pub struct TapPort {
    fd: OwnedFd,
    name: String,
    mtu: usize,
    stats: TapStats,
}

const IFNAMSIZ: usize = 16;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReq {
    name: [libc::c_char; IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl TapPort {
    /// Attach to (or create) the TAP device `name` in the calling thread's namespace.
    pub fn open(name: &str) -> io::Result<Self> {
        if name.is_empty() || name.len() >= IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad interface name",
            ));
        }
        let path = CString::new("/dev/net/tun").expect("no NUL");
        // SAFETY: `path` is a valid NUL-terminated string.
        let raw = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq {
            name: [0; IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        for (d, s) in req.name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads and writes an `ifreq`, which `IfReq` lays out; the pointer
        // is valid for the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TapPort {
            fd,
            name: name.to_string(),
            mtu: 1500,
            stats: TapStats::default(),
        })
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counters.
    pub fn stats(&self) -> TapStats {
        self.stats
    }
}

impl Port for TapPort {
    fn recv(
        &mut self,
        _now: Instant,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        let mut n = 0;
        while n < max {
            let Some(mut f) = arena.alloc() else { break };
            let buf = arena.buf_mut(&mut f);
            // SAFETY: `buf` is `buf.len()` writable bytes owned through `f`.
            let r = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                arena.free(f);
                if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
                    self.stats.rx_errors += 1;
                }
                break;
            }
            f.set_len(r as usize);
            out.push(f);
            n += 1;
        }
        self.stats.rx += n as u64;
        n
    }

    fn send(&mut self, _now: Instant, arena: &FrameArena, frames: &mut Vec<Frame>) -> usize {
        let mut sent = 0;
        for f in frames.drain(..) {
            let d = arena.data(&f);
            // SAFETY: `d` is a valid slice for the duration of the call.
            let r = unsafe { libc::write(self.fd.as_raw_fd(), d.as_ptr().cast(), d.len()) };
            if r == d.len() as isize {
                sent += 1;
            } else {
                self.stats.tx_errors += 1;
            }
            arena.free(f);
        }
        self.stats.tx += sent as u64;
        sent
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn wakeup_fds(&self) -> Vec<std::os::fd::RawFd> {
        vec![self.fd.as_raw_fd()]
    }
}
