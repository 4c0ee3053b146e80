//! [`ReadHalf`] and [`WriteHalf`]: the two halves of a [`Stream`](super::Stream), each usable
//! from its own thread.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::stream::{try_read, try_write, wait_readable, wait_writable, Bell};
use super::{ConnShared, ConnStatus, HostShared};
use crate::buf::{RingReader, RingWriter};

/// What the two halves of a stream share: which of them is gone, and whether the read
/// half left data unread. The last half to go closes the connection as dropping the whole
/// [`Stream`](super::Stream) does: with a RST when the read half left data unread (as
/// Linux's `close`), else with a FIN after the queued data. (Data the peer sends after the
/// read half went is acknowledged and discarded: its ring is gone, so the window stays
/// open and a peer that keeps sending never stalls the write half's response.)
#[derive(Default)]
pub(super) struct Halves(Mutex<HalvesState>);

#[derive(Default)]
struct HalvesState {
    read_gone: bool,
    write_gone: bool,
    /// The read half went with data unread.
    left_unread: bool,
}

impl Halves {
    fn lock(&self) -> std::sync::MutexGuard<'_, HalvesState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The reading half of a [`Stream`](super::Stream) (see [`Stream::into_split`](super::Stream::into_split)).
pub struct ReadHalf {
    pub(super) conn: Arc<ConnShared>,
    pub(super) rx: RingReader,
    pub(super) host: Arc<HostShared>,
    pub(super) nonblocking: bool,
    pub(super) rd_shutdown: bool,
    pub(super) halves: Arc<Halves>,
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
/// once the queued data is out (a RST instead when the read half is gone and left data
/// unread, as dropping the whole stream does).
pub struct WriteHalf {
    pub(super) conn: Arc<ConnShared>,
    pub(super) tx: RingWriter,
    pub(super) host: Arc<HostShared>,
    pub(super) nonblocking: bool,
    pub(super) halves: Arc<Halves>,
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
        let mut h = self.halves.lock();
        h.read_gone = true;
        h.left_unread = self.rx.available() > 0;
        if h.write_gone && h.left_unread {
            // The last half: unread data makes the close an abort.
            self.conn.abort.store(true, Ordering::Release);
        }
        drop(h);
        self.conn.rx_closed.store(true, Ordering::Release);
        self.host.ring_doorbell(&self.conn);
    }
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        let mut h = self.halves.lock();
        h.write_gone = true;
        if h.read_gone && h.left_unread {
            self.conn.abort.store(true, Ordering::Release);
        } else {
            self.conn.tx_fin.store(true, Ordering::Release);
        }
        drop(h);
        self.host.ring_doorbell(&self.conn);
    }
}
