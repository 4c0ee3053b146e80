//! An engine connection or listener as the socket calls see it: in this process
//! (in-process mode, the crate's own [`Stream`] and [`Listener`]) or in the engine service
//! (through shared memory, [`crate::client`]).

use std::io;
use std::net::SocketAddrV4;

use flextoe::host::{BoundPort, ConnStatus, Keepalive, Listener, Stream};

use crate::client::{Remote, RemoteBound, RemoteListener};

/// A connection.
pub enum Conn {
    /// On the engine in this process.
    Local(Stream),
    /// On the engine service.
    Remote(Remote),
}

macro_rules! both {
    ($self:expr, $c:ident => $e:expr) => {
        match $self {
            Conn::Local($c) => $e,
            Conn::Remote($c) => $e,
        }
    };
}

impl Conn {
    /// Status.
    pub fn status(&self) -> ConnStatus {
        both!(self, c => c.status())
    }

    /// Bytes ready to read.
    pub fn readable_bytes(&self) -> usize {
        both!(self, c => c.readable_bytes())
    }

    /// Free send space.
    pub fn writable_bytes(&self) -> usize {
        both!(self, c => c.writable_bytes())
    }

    /// Whether a read would not block (data, end of stream, or an error).
    pub fn is_readable(&self) -> bool {
        match self {
            Conn::Local(s) => s.is_readable(),
            Conn::Remote(r) => {
                r.read_closed()
                    || r.readable_bytes() > 0
                    || r.peer_closed()
                    || (r.rx_final()
                        && !matches!(
                            r.status(),
                            ConnStatus::Connecting | ConnStatus::Established | ConnStatus::Closed
                        ))
            }
        }
    }

    /// Whether a failed connection's error is what a read of an empty ring reports: through
    /// the service, once every byte received before the failure is in the ring.
    pub fn rx_final(&self) -> bool {
        match self {
            Conn::Local(_) => true,
            Conn::Remote(r) => r.rx_final(),
        }
    }

    /// Whether the peer's FIN arrived.
    pub fn peer_closed(&self) -> bool {
        both!(self, c => c.peer_closed())
    }

    /// Whether reading was shut down here (reads return what is left, then 0).
    pub fn read_closed(&self) -> bool {
        both!(self, c => c.read_closed())
    }

    /// Whether writing was shut down.
    pub fn write_closed(&self) -> bool {
        both!(self, c => c.write_closed())
    }

    /// Bytes written and not yet acknowledged by the peer (`SIOCOUTQ`).
    pub fn unacked_bytes(&self) -> usize {
        both!(self, c => c.unacked_bytes())
    }

    /// Bytes received so far.
    pub fn received_total(&self) -> u64 {
        both!(self, c => c.received_total())
    }

    /// Local address.
    pub fn local_addr(&self) -> SocketAddrV4 {
        both!(self, c => c.local_addr())
    }

    /// Peer address.
    pub fn peer_addr(&self) -> SocketAddrV4 {
        both!(self, c => c.peer_addr())
    }

    /// Read in place (never waits).
    pub fn read_with<R>(&mut self, f: impl FnOnce(&[u8]) -> (usize, R)) -> io::Result<R> {
        both!(self, c => c.read_with(f))
    }

    /// Write what fits (never waits).
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Local(s) => io::Write::write(s, data),
            Conn::Remote(r) => r.write(data),
        }
    }

    /// Write in place: `f` fills the free space it is given (never waits).
    pub fn write_with<R>(&mut self, f: impl FnOnce(&mut [u8]) -> (usize, R)) -> io::Result<R> {
        match self {
            Conn::Local(s) => s.write_with(f),
            Conn::Remote(r) => {
                let room = r.writable_bytes().min(64 * 1024);
                if room == 0 {
                    // Lets the status decide: an error, a closed side, or would block.
                    r.write(&[0u8; 1][..0])?;
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let mut buf = vec![0u8; room];
                let (n, out) = f(&mut buf);
                let n = n.min(room);
                let mut done = 0;
                while done < n {
                    done += r.write(&buf[done..n])?;
                }
                Ok(out)
            }
        }
    }

    /// Shut one or both directions down.
    pub fn shutdown(&mut self, how: std::net::Shutdown) -> io::Result<()> {
        match self {
            Conn::Local(s) => s.shutdown(how),
            Conn::Remote(r) => {
                r.shutdown(how);
                Ok(())
            }
        }
    }

    /// Keep-alives on with `k`'s timing, or off.
    pub fn set_keepalive(&self, k: Option<Keepalive>) {
        match self {
            Conn::Local(s) => s.set_keepalive(k),
            Conn::Remote(r) => r.set_keepalive(k),
        }
    }
}

/// A port held for a bound socket (`bind(2)`), until it listens or connects from it.
pub enum Bound {
    /// On the engine in this process.
    Local(BoundPort),
    /// On the engine service.
    Remote(RemoteBound),
}

impl Bound {
    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            Bound::Local(b) => b.port(),
            Bound::Remote(b) => b.port,
        }
    }
}

/// A listener.
pub enum Listen {
    /// On the engine in this process.
    Local(Listener),
    /// On the engine service.
    Remote(RemoteListener),
}

impl Listen {
    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            Listen::Local(l) => l.port(),
            Listen::Remote(l) => l.port,
        }
    }

    /// Connections waiting for accept.
    pub fn pending(&self) -> usize {
        match self {
            Listen::Local(l) => l.pending(),
            Listen::Remote(l) => l.pending(),
        }
    }

    /// Whether the listener is the service's (its queue count may lag behind).
    pub fn remote(&self) -> bool {
        matches!(self, Listen::Remote(_))
    }

    /// Whether the engine (or the service) is gone.
    pub fn engine_gone(&self) -> bool {
        match self {
            Listen::Local(l) => l.engine_gone(),
            Listen::Remote(l) => l.dead(),
        }
    }

    /// Take a queued connection; `Ok(None)` when none is.
    pub fn try_accept(&self) -> Result<Option<Conn>, libc::c_int> {
        match self {
            Listen::Local(l) => match l.try_accept() {
                Ok(s) => Ok(s.map(Conn::Local)),
                Err(_) => Err(libc::ECONNABORTED),
            },
            Listen::Remote(l) => match l.try_accept() {
                Ok(r) => Ok(Some(Conn::Remote(r))),
                Err(libc::EAGAIN) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }
}
