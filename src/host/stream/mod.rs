//! [`Stream`] and its halves: reads and writes on a connection's byte rings.

use std::io::{self, Write};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::buf::{RingReader, RingWriter};

mod batch;
pub use batch::Batch;

/// One TCP connection, as the application holds it.
///
/// Dropping a stream closes it: with a FIN when all received data was read, with a RST
/// (abort) when unread data remains, as Linux does.
pub struct Stream {
    conn: Arc<ConnShared>,
    rx: RingReader,
    tx: RingWriter,
    host: Arc<HostShared>,
    nonblocking: bool,
    rd_shutdown: bool,
    /// The rings went to a [`ReadHalf`] and a [`WriteHalf`]; dropping does nothing.
    split: bool,
    /// Doorbells, deferred while a [`Batch`] is open.
    bell: Bell,
}

/// The doorbell of one stream: rung at once, or owed while a [`Batch`] defers it. A
/// doorbell tells the engine that the stream's ring positions moved (data written, room
/// made by a read where the receive ring's read bell asks for it); ringing once covers every
/// move before it. (Atomics only so that
/// `&self` methods can settle it; one thread uses a stream's bell at a time.)
#[derive(Debug, Default)]
pub(super) struct Bell {
    defer: AtomicBool,
    owed: AtomicBool,
}

impl Bell {
    fn ring(&self, host: &HostShared, conn: &ConnShared) {
        if self.defer.load(Ordering::Relaxed) {
            self.owed.store(true, Ordering::Relaxed);
        } else {
            host.ring_doorbell(conn);
        }
    }

    /// Ring what is owed (before waiting on the engine or returning `WouldBlock`).
    fn settle(&self, host: &HostShared, conn: &ConnShared) {
        if self.owed.load(Ordering::Relaxed) {
            self.owed.store(false, Ordering::Relaxed);
            host.ring_doorbell(conn);
        }
    }

    /// End a batch (dropped, or forgotten: every call from outside one ends it).
    fn end(&self, host: &HostShared, conn: &ConnShared) {
        if self.defer.load(Ordering::Relaxed) {
            self.defer.store(false, Ordering::Relaxed);
            self.settle(host, conn);
        }
    }
}

impl Stream {
    pub(crate) fn new(
        conn: Arc<ConnShared>,
        rx: RingReader,
        tx: RingWriter,
        host: Arc<HostShared>,
    ) -> Self {
        Stream {
            conn,
            rx,
            tx,
            host,
            nonblocking: false,
            rd_shutdown: false,
            split: false,
            bell: Bell::default(),
        }
    }

    /// Open a batch: reads and writes through it tell the engine once, when the batch ends,
    /// instead of ringing the engine's doorbell on every call (as smoltcp's sockets, which
    /// the stack looks at on its next poll). A call in the batch that has to wait, or
    /// returns [`WouldBlock`](io::ErrorKind::WouldBlock), rings first, so it cannot wait
    /// for an engine that was never told. Waiting on anything else (another stream, a
    /// readiness [`Context`](super::Context)) with the batch open can: end the batch, or
    /// [`ring`](Batch::ring), before that.
    ///
    /// ```
    /// # fn demo(s: &mut flextoe::Stream) -> std::io::Result<()> {
    /// use std::io::Write;
    /// let mut b = s.batch();
    /// for _ in 0..32 {
    ///     b.write_all(b"sixty-four bytes of a small message, one of many in one burst..")?;
    /// }
    /// drop(b); // one doorbell for the 32 writes
    /// # Ok(()) }
    /// ```
    pub fn batch(&mut self) -> Batch<'_> {
        self.bell.defer.store(true, Ordering::Relaxed);
        Batch { stream: self }
    }

    /// Every call from outside a batch ends one left open (a `Batch` that was forgotten
    /// rather than dropped).
    fn end_batch(&self) {
        self.bell.end(&self.host, &self.conn);
    }

    /// Split into a reading and a writing half that two threads can use at once. Dropping
    /// the write half sends a FIN once its queued data is out (like
    /// `shutdown(Shutdown::Write)`); dropping the read half stops nothing (what the peer
    /// sends afterwards is acknowledged and discarded). Once both are gone the connection
    /// is closed as dropping the stream closes it: with a RST instead of the FIN when the
    /// read half left data unread.
    pub fn into_split(mut self) -> (ReadHalf, WriteHalf) {
        self.end_batch();
        let (dummy_tx, dummy_rx) = crate::buf::byte_ring(64);
        let rx = std::mem::replace(&mut self.rx, dummy_rx);
        let tx = std::mem::replace(&mut self.tx, dummy_tx);
        self.split = true;
        let halves = Arc::new(super::split::Halves::default());
        let read = ReadHalf {
            conn: self.conn.clone(),
            rx,
            host: self.host.clone(),
            nonblocking: self.nonblocking,
            rd_shutdown: self.rd_shutdown,
            halves: halves.clone(),
        };
        let write = WriteHalf {
            conn: self.conn.clone(),
            tx,
            host: self.host.clone(),
            nonblocking: self.nonblocking,
            halves,
        };
        (read, write)
    }

    /// Connection status.
    pub fn status(&self) -> ConnStatus {
        self.conn.status()
    }

    /// Local address.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.conn.local_addr()
    }

    /// Peer address.
    pub fn peer_addr(&self) -> SocketAddrV4 {
        self.conn.peer_addr()
    }

    /// The engine's flow id, once established.
    pub fn flow(&self) -> Option<FlowId> {
        self.conn.flow()
    }

    /// Make reads and writes return `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&mut self, nb: bool) {
        self.nonblocking = nb;
    }

    /// Register with a context: readiness events for this stream carry `token`. A stream
    /// can be registered once.
    pub fn register(&self, ctx: &Context, token: u64) -> Result<()> {
        self.conn
            .ctx
            .set((ctx.clone(), token))
            .map_err(|_| Error::InvalidInput("stream already registered"))
    }

    /// Wait until the handshake finishes (or fails).
    pub fn wait_connected(&self, timeout: Option<Duration>) -> Result<()> {
        self.conn
            .waiter
            .wait_until(timeout, || self.conn.status() != ConnStatus::Connecting);
        match self.conn.status() {
            ConnStatus::Established | ConnStatus::Closed => Ok(()),
            ConnStatus::Connecting => Err(Error::TimedOut),
            s => Err(s.error().unwrap_or(Error::ConnectionReset)),
        }
    }

    /// Bytes ready to read.
    pub fn readable_bytes(&self) -> usize {
        self.rx.available()
    }

    /// Free TX ring space.
    pub fn writable_bytes(&self) -> usize {
        self.tx.free()
    }

    /// Whether a read would not block (data, end of stream, an error, or reading shut
    /// down: a read then returns what is left, or 0 at once).
    pub fn is_readable(&self) -> bool {
        self.rd_shutdown
            || self.rx.available() > 0
            || self.conn.rx_fin()
            || self.conn.status().error().is_some()
    }

    /// Whether this side's reading was shut down ([`shutdown`](Self::shutdown)): reads
    /// return what is left in the receive ring, then 0 instead of waiting.
    pub fn read_closed(&self) -> bool {
        self.rd_shutdown
    }

    /// Bytes the engine has put into the receive ring so far, read or not: grows with every
    /// arrival (an edge-triggered readiness report compares it).
    pub fn received_total(&self) -> u64 {
        self.rx.tail() + self.rx.available() as u64
    }

    /// Whether the peer's FIN arrived (every byte before it is in the ring).
    pub fn peer_closed(&self) -> bool {
        self.conn.rx_fin()
    }

    /// Whether this side's writing was shut down ([`shutdown`](Self::shutdown)).
    pub fn write_closed(&self) -> bool {
        self.conn.tx_fin()
    }

    /// Bytes written but not yet acknowledged by the peer.
    pub fn unacked_bytes(&self) -> usize {
        self.tx.capacity() - self.tx.free()
    }

    /// Turn keep-alives on (RFC 1122 4.2.3.6) with `k`'s timing, or off with `None`: after
    /// `k.idle` without a segment from the peer, the engine sends a probe every
    /// `k.interval`, and after `k.count` unanswered probes it aborts the connection
    /// ([`ConnStatus::TimedOut`]). Off by default, as for a kernel socket.
    pub fn set_keepalive(&self, k: Option<Keepalive>) {
        let c = &self.conn;
        match k {
            Some(k) => {
                c.keepalive.1.store(
                    k.interval.as_millis().clamp(1, u32::MAX as u128) as u32,
                    Ordering::Relaxed,
                );
                c.keepalive.2.store(k.count.max(1), Ordering::Relaxed);
                c.keepalive.0.store(
                    k.idle.as_millis().clamp(1, u64::MAX as u128) as u64,
                    Ordering::Release,
                );
            }
            None => c.keepalive.0.store(0, Ordering::Release),
        }
        // The timers may have set an idle connection aside until its next deadline; the
        // doorbell has them look at it again now, so a probe already due goes out at once.
        self.host.ring_doorbell(c);
    }

    /// Shut down one or both directions. `Write` sends a FIN once queued data is out.
    /// `Read` makes reads return what is left in the receive ring and then 0 (end of
    /// stream) instead of waiting, as a kernel socket's do.
    pub fn shutdown(&mut self, how: std::net::Shutdown) -> io::Result<()> {
        use std::net::Shutdown;
        self.end_batch();
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            self.rd_shutdown = true;
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.conn.tx_fin.store(true, Ordering::Release);
            self.host.ring_doorbell(&self.conn);
        }
        Ok(())
    }

    /// Abort the connection: a RST, and queued data is discarded.
    pub fn abort(self) {
        self.conn.abort.store(true, Ordering::Release);
        self.host.ring_doorbell(&self.conn);
    }

    /// Wait until everything written has been acknowledged, or `timeout` passes.
    pub fn wait_drained(&self, timeout: Option<Duration>) -> bool {
        self.end_batch();
        self.conn.waiter.wait_until(timeout, || {
            self.tx.free() == self.tx.capacity() || self.conn.status().error().is_some()
        })
    }

    /// Wait until the connection is fully closed (or failed), or `timeout` passes.
    pub fn wait_closed(&self, timeout: Option<Duration>) -> bool {
        self.end_batch();
        self.conn.waiter.wait_until(timeout, || {
            !matches!(
                self.conn.status(),
                ConnStatus::Connecting | ConnStatus::Established
            )
        })
    }

    /// Read in place: `f` sees the readable bytes (up to where the ring wraps; call again
    /// for the rest) and returns how many it consumed, with a result of its own. At the end
    /// of the stream `f` sees an empty slice. Blocks, or returns
    /// [`WouldBlock`](io::ErrorKind::WouldBlock) in nonblocking mode, while nothing is
    /// readable. Like smoltcp's `TcpSocket::recv`: no copy into a buffer of the caller's.
    ///
    /// ```
    /// # fn demo(s: &mut flextoe::Stream) -> std::io::Result<()> {
    /// // Count newlines without copying the bytes out.
    /// let lines = s.read_with(|buf| (buf.len(), buf.iter().filter(|b| **b == b'\n').count()))?;
    /// # let _ = lines; Ok(()) }
    /// ```
    pub fn read_with<R>(&mut self, f: impl FnOnce(&[u8]) -> (usize, R)) -> io::Result<R> {
        self.end_batch();
        self.read_with_in(f)
    }

    fn read_with_in<R>(&mut self, f: impl FnOnce(&[u8]) -> (usize, R)) -> io::Result<R> {
        let mut f = Some(f);
        loop {
            let r = try_read_with(
                &self.conn,
                &self.host,
                &self.bell,
                &mut self.rx,
                self.rd_shutdown,
                |rx| {
                    let f = f.take().expect("called once");
                    match rx {
                        Some(rx) => {
                            let slice = rx.readable_slice();
                            let (n, r) = f(slice);
                            let n = n.min(slice.len());
                            let _ = rx.consume(n);
                            (n, r)
                        }
                        None => (0, f(&[]).1),
                    }
                },
            );
            if let Some(r) = r {
                return r;
            }
            self.bell.settle(&self.host, &self.conn);
            if self.nonblocking {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            wait_readable(&self.conn, &self.rx);
        }
    }

    /// Write in place: `f` fills the free space of the send ring (up to where the ring
    /// wraps) and returns how many bytes it wrote, with a result of its own; those bytes are
    /// sent. Blocks, or returns [`WouldBlock`](io::ErrorKind::WouldBlock) in nonblocking
    /// mode, while the ring is full. Like smoltcp's `TcpSocket::send`.
    ///
    /// ```
    /// # fn demo(s: &mut flextoe::Stream) -> std::io::Result<()> {
    /// // Format a response straight into the send ring.
    /// use std::io::Write;
    /// let wrote = s.write_with(|buf| {
    ///     let mut w = &mut buf[..];
    ///     let before = w.len();
    ///     let _ = write!(w, "HTTP/1.1 204 No Content\r\n\r\n");
    ///     let n = before - w.len();
    ///     (n, n)
    /// })?;
    /// # let _ = wrote; Ok(()) }
    /// ```
    pub fn write_with<R>(&mut self, f: impl FnOnce(&mut [u8]) -> (usize, R)) -> io::Result<R> {
        self.end_batch();
        self.write_with_in(f)
    }

    fn write_with_in<R>(&mut self, f: impl FnOnce(&mut [u8]) -> (usize, R)) -> io::Result<R> {
        let mut f = Some(f);
        loop {
            let r = try_write_with(
                &self.conn,
                &self.host,
                &self.bell,
                &mut self.tx,
                false,
                |tx| {
                    let f = f.take().expect("called once");
                    let slice = tx.writable_slice();
                    let len = slice.len();
                    let (n, r) = f(slice);
                    let n = n.min(len);
                    let _ = tx.commit(n);
                    (n, r)
                },
            );
            if let Some(r) = r {
                return r;
            }
            self.bell.settle(&self.host, &self.conn);
            if self.nonblocking {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            wait_writable(&self.conn, &self.tx);
        }
    }

    /// Read into the spare capacity of `buf` (a [`bytes::BytesMut`], a `Vec<u8>`, ...)
    /// straight from the receive ring: no zeroed scratch buffer, no second copy. Returns the
    /// bytes read (0 at the end of the stream).
    pub fn read_buf(&mut self, buf: &mut impl bytes::BufMut) -> io::Result<usize> {
        fn put(data: &[u8], buf: &mut impl bytes::BufMut) -> (usize, usize) {
            let n = data.len().min(buf.remaining_mut());
            buf.put_slice(&data[..n]);
            (n, n)
        }
        if !buf.has_remaining_mut() {
            return Ok(0);
        }
        let first = self.read_with(|data| put(data, buf))?;
        // The rest, when the readable bytes wrapped around the ring's end (never blocks).
        let mut second = 0;
        if first > 0 && buf.has_remaining_mut() && self.rx.available() > 0 {
            let r = try_read_with(
                &self.conn,
                &self.host,
                &self.bell,
                &mut self.rx,
                false,
                |rx| match rx {
                    Some(rx) => {
                        let (n, _) = put(rx.readable_slice(), buf);
                        let _ = rx.consume(n);
                        (n, n)
                    }
                    None => (0, 0),
                },
            );
            second = r.and_then(|r| r.ok()).unwrap_or(0);
        }
        Ok(first + second)
    }

    /// Write the chunks of `buf` (a [`bytes::Bytes`], a chain of them, ...) straight into
    /// the send ring, advancing `buf` past what was taken: no flattening copy. Returns the
    /// bytes written.
    pub fn write_buf(&mut self, buf: &mut impl bytes::Buf) -> io::Result<usize> {
        let mut total = 0;
        while buf.has_remaining() {
            let r = if total == 0 {
                self.write(buf.chunk())
            } else {
                match try_write(
                    &self.conn,
                    &self.host,
                    &self.bell,
                    &mut self.tx,
                    buf.chunk(),
                ) {
                    Some(r) => r,
                    None => break,
                }
            };
            match r {
                Ok(0) => break,
                Ok(n) => {
                    buf.advance(n);
                    total += n;
                }
                Err(e) if total > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    fn try_read(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        try_read(
            &self.conn,
            &self.host,
            &self.bell,
            &mut self.rx,
            self.rd_shutdown,
            buf,
        )
    }

    fn try_write(&mut self, buf: &[u8]) -> Option<io::Result<usize>> {
        try_write(&self.conn, &self.host, &self.bell, &mut self.tx, buf)
    }
}

pub(super) fn try_read(
    conn: &Arc<ConnShared>,
    host: &HostShared,
    bell: &Bell,
    rx: &mut RingReader,
    rd_shutdown: bool,
    buf: &mut [u8],
) -> Option<io::Result<usize>> {
    if buf.is_empty() {
        return Some(Ok(0));
    }
    try_read_with(conn, host, bell, rx, rd_shutdown, |rx| {
        let n = rx.map_or(0, |rx| rx.pop(buf));
        (n, n)
    })
}

/// The decisions of every read: `take` moves bytes out of the ring and returns (bytes
/// released, its result); it gets no ring when reading was shut down and nothing is left to
/// read (what was received is still read first, and a reset before the peer's FIN is still
/// an error, as on Linux), and an empty one at the end of the stream. `None`: nothing yet (would block).
fn try_read_with<R>(
    conn: &Arc<ConnShared>,
    host: &HostShared,
    bell: &Bell,
    rx: &mut RingReader,
    rd_shutdown: bool,
    take: impl FnOnce(Option<&mut RingReader>) -> (usize, R),
) -> Option<io::Result<R>> {
    if rd_shutdown && rx.available() == 0 {
        // As Linux: a reset before the peer's FIN is an error still.
        if !conn.rx_fin() {
            if let Some(e) = conn.status().error() {
                return Some(Err(e.into()));
            }
        }
        return Some(Ok(take(None).1));
    }
    // With a FIN, the ring is read again: the FIN is published after all data before it.
    if rx.available() == 0 && !conn.rx_fin() {
        if let Some(e) = conn.status().error() {
            return Some(Err(e.into()));
        }
        if conn.status() != ConnStatus::Closed {
            return None;
        }
    }
    let (n, r) = take(Some(rx));
    // Room made by a read matters to the engine only once it opens the window enough for
    // an update: the protocol stage reads the rest from the ring when it next advertises.
    if n > 0 && rx.read_bell_due() {
        bell.ring(host, conn);
    }
    Some(Ok(r))
}

pub(super) fn try_write(
    conn: &Arc<ConnShared>,
    host: &HostShared,
    bell: &Bell,
    tx: &mut RingWriter,
    buf: &[u8],
) -> Option<io::Result<usize>> {
    if let Some(e) = write_refused(conn) {
        return Some(Err(e));
    }
    if buf.is_empty() {
        return Some(Ok(0));
    }
    // `push` takes what room there is: none is the only case that waits.
    let n = tx.push(buf);
    if n == 0 {
        return None;
    }
    bell.ring(host, conn);
    Some(Ok(n))
}

/// Why a write cannot go, if it cannot: the connection failed, or it can send no more. The
/// connection's status is read once where it is established and open for writing.
#[inline]
fn write_refused(conn: &ConnShared) -> Option<io::Error> {
    let status = conn.status();
    if status == ConnStatus::Established && !conn.tx_fin() {
        return None;
    }
    if let Some(e) = status.error() {
        return Some(e.into());
    }
    if conn.tx_fin() || status == ConnStatus::Closed {
        return Some(io::ErrorKind::BrokenPipe.into());
    }
    None
}

/// The decisions of every write: `put` moves bytes into the ring when it has room (or when
/// `always`) and returns (bytes published, its result). `None`: no room yet (would block).
fn try_write_with<R>(
    conn: &Arc<ConnShared>,
    host: &HostShared,
    bell: &Bell,
    tx: &mut RingWriter,
    always: bool,
    put: impl FnOnce(&mut RingWriter) -> (usize, R),
) -> Option<io::Result<R>> {
    if let Some(e) = write_refused(conn) {
        return Some(Err(e));
    }
    if !always && !tx.has_free() {
        return None;
    }
    let (n, r) = put(tx);
    if n > 0 {
        bell.ring(host, conn);
    }
    Some(Ok(r))
}

/// Block on `conn` until `rx` has data or the connection's state changed.
pub(super) fn wait_readable(conn: &Arc<ConnShared>, rx: &RingReader) {
    conn.waiter.wait_until(None, || {
        rx.available() > 0
            || conn.rx_fin()
            || conn.status() != ConnStatus::Established && conn.status() != ConnStatus::Connecting
    });
}

/// Block on `conn` until `tx` has room or the connection failed.
pub(super) fn wait_writable(conn: &Arc<ConnShared>, tx: &RingWriter) {
    conn.waiter
        .wait_until(None, || tx.free() > 0 || conn.status().error().is_some());
}

impl io::Read for Stream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.end_batch();
        if self.read_would_block(buf) {
            self.bell.settle(&self.host, &self.conn);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.read_in(buf)
    }
}

impl Stream {
    /// A nonblocking read of an open connection with nothing to read, the common case of a
    /// polling reader: told in line, with the answer `read_in` would give.
    #[inline(always)]
    fn read_would_block(&self, buf: &[u8]) -> bool {
        self.nonblocking
            && !self.rd_shutdown
            && !buf.is_empty()
            && self.rx.available() == 0
            && !self.conn.rx_fin()
            && self.conn.status() == ConnStatus::Established
    }

    #[inline(never)]
    fn read_in(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(r) = self.try_read(buf) {
                return r;
            }
            self.bell.settle(&self.host, &self.conn);
            if self.nonblocking {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            wait_readable(&self.conn, &self.rx);
        }
    }
}

impl io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.end_batch();
        self.write_in(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.end_batch();
        Ok(())
    }
}

impl Stream {
    fn write_in(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            if let Some(r) = self.try_write(buf) {
                return r;
            }
            self.bell.settle(&self.host, &self.conn);
            if self.nonblocking {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            wait_writable(&self.conn, &self.tx);
        }
    }
}

/// What splicing needs of a stream (see [`crate::stages::ext::splice`]).
impl Stream {
    /// The connection, what the application wrote, what it read.
    pub(crate) fn splice_side(&self) -> (Arc<ConnShared>, u64, u64) {
        (self.conn.clone(), self.tx.head(), self.rx.tail())
    }

    /// The engine's side of the application interface this stream belongs to.
    pub(crate) fn engine(&self) -> &Arc<HostShared> {
        &self.host
    }

    /// Whether both streams belong to one engine.
    pub(crate) fn same_engine(&self, other: &Stream) -> bool {
        Arc::ptr_eq(&self.host, &other.host)
    }

    /// Hand a splice request to the engine; `false` if it is gone.
    pub(crate) fn request_splice(&self, req: crate::stages::ext::splice::SpliceRequest) -> bool {
        self.host.request(AppRequest::Splice(req))
    }

    /// Let go of a stream whose connection went into a splice: dropping it closes nothing.
    pub(crate) fn detach(mut self) {
        self.end_batch();
        self.split = true;
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.split {
            return;
        }
        // Unread data makes the close a RST (RFC 2525 2.17), reading shut down or not: what
        // was received can still be read after `shutdown(Read)` (as Linux).
        if self.rx.available() > 0 {
            self.conn.abort.store(true, Ordering::Release);
        } else {
            self.conn.tx_fin.store(true, Ordering::Release);
        }
        self.conn.rx_closed.store(true, Ordering::Release);
        self.host.ring_doorbell(&self.conn);
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("local", &self.local_addr())
            .field("peer", &self.peer_addr())
            .field("status", &self.status())
            .finish()
    }
}
