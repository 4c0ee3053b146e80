//! [`ReadHalf`] and [`WriteHalf`]: the two halves of a [`Stream`](super::Stream), each usable
//! from its own thread.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::stream::{try_read, try_write, wait_readable, wait_writable, Bell};
use super::{ConnShared, ConnStatus, HostShared};
use crate::buf::{RingReader, RingWriter};

/// The reading half of a [`Stream`](super::Stream) (see [`Stream::into_split`](super::Stream::into_split)).
pub struct ReadHalf {
    pub(super) conn: Arc<ConnShared>,
    pub(super) rx: RingReader,
    pub(super) host: Arc<HostShared>,
    pub(super) nonblocking: bool,
    pub(super) rd_shutdown: bool,
}

impl ReadHalf {
    /// Make reads return `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&mut self, nb: bool) {
        self.nonblocking = nb;
    }

    /// Bytes ready to read.
    pub fn readable_bytes(&self) -> usize {
        self.rx.available()
    }

    /// Connection status.
    pub fn status(&self) -> ConnStatus {
        self.conn.status()
    }
}

impl io::Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let bell = &Bell::default();
            if let Some(r) = try_read(
                &self.conn,
                &self.host,
                bell,
                &mut self.rx,
                self.rd_shutdown,
                buf,
            ) {
                return r;
            }
            if self.nonblocking {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            wait_readable(&self.conn, &self.rx);
        }
    }
}

/// The writing half of a [`Stream`](super::Stream) (see
/// [`Stream::into_split`](super::Stream::into_split)). Dropping it sends a FIN
/// once the queued data is out.
pub struct WriteHalf {
    pub(super) conn: Arc<ConnShared>,
    pub(super) tx: RingWriter,
    pub(super) host: Arc<HostShared>,
    pub(super) nonblocking: bool,
}

impl WriteHalf {
    /// Make writes return `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&mut self, nb: bool) {
        self.nonblocking = nb;
    }

    /// Free TX ring space.
    pub fn writable_bytes(&self) -> usize {
        self.tx.free()
    }

    /// Wait until everything written has been acknowledged, or `timeout` passes.
    pub fn wait_drained(&self, timeout: Option<Duration>) -> bool {
        self.conn.waiter.wait_until(timeout, || {
            self.tx.free() == self.tx.capacity() || self.conn.status().error().is_some()
        })
    }
}

impl io::Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            if let Some(r) = try_write(&self.conn, &self.host, &Bell::default(), &mut self.tx, buf)
            {
                return r;
            }
            if self.nonblocking {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            wait_writable(&self.conn, &self.tx);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for ReadHalf {
    fn drop(&mut self) {
        self.conn.rx_closed.store(true, Ordering::Release);
        self.host.ring_doorbell(&self.conn);
    }
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        self.conn.tx_fin.store(true, Ordering::Release);
        self.host.ring_doorbell(&self.conn);
    }
}
