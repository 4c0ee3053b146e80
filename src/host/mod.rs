//! What the application sees: streams, listeners, contexts.
//!
//! Each connection has an RX and a TX byte ring. The application reads the RX ring and writes
//! the TX ring directly; the engine owns the other ends (see [`crate::stages::place`]). After
//! moving its ring positions the application rings a doorbell: the flow id goes into an
//! app-to-engine queue (at most once until the engine has seen it), and the engine turns it
//! into work for the protocol stage. Every write that adds data rings; a read rings only once
//! it opens the receive window enough for a window update (the ring's read bell, which the
//! protocol stage sets: [`RingObserver::set_read_bell`](crate::buf::RingObserver::set_read_bell)),
//! since the protocol stage reads the ring's tail itself whenever it computes a window. The engine tells the application about new data, freed
//! space, and state changes by waking the connection's waiter and by posting [`Event`]s to
//! the [`Context`] the stream is registered with.
//!
//! [`Stream`] implements [`std::io::Read`] and [`std::io::Write`] (blocking by default;
//! [`Stream::set_nonblocking`] makes them return [`std::io::ErrorKind::WouldBlock`]).
//! Blocking calls need the engine to run on another thread ([`crate::pipeline::Runtime`]);
//! single-threaded programs use nonblocking streams and call
//! [`Engine::poll`](crate::pipeline::Engine::poll) themselves.

use crate::control::congestion::Algorithm;
use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::buf::{byte_ring, RingReader, RingWriter};
use crate::flow::FlowId;
use crate::stages::place::FlowRings;

/// Where a connection stands, as the application sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnStatus {
    /// Handshake in progress.
    Connecting = 0,
    /// Data can flow.
    Established = 1,
    /// Closed in an orderly way (both FINs exchanged and acknowledged).
    Closed = 2,
    /// Reset by the peer or aborted.
    Reset = 3,
    /// The peer refused the connection (a RST, or an ICMP protocol or port unreachable,
    /// for the SYN), or it timed out after an ICMP error said so.
    Refused = 4,
    /// The handshake or the retransmissions timed out.
    TimedOut = 5,
    /// The peer's address could not be resolved, or ICMP said it could not be reached
    /// (for the SYN, or before the connection timed out).
    Unreachable = 6,
    /// The connection went into a splice
    /// ([`Splicer`](crate::stages::ext::splice::Splicer)): the engine relays it.
    Spliced = 7,
    /// The engine's connection table was full (`max_flows` connections established or
    /// in their handshakes): the connection was never tried.
    TableFull = 8,
    /// Opened from a bound port ([`BoundPort`]) to where another connection of that port
    /// goes already: the connection was never tried (Linux's `EADDRNOTAVAIL`).
    TupleInUse = 9,
}

impl ConnStatus {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => ConnStatus::Connecting,
            1 => ConnStatus::Established,
            2 => ConnStatus::Closed,
            3 => ConnStatus::Reset,
            4 => ConnStatus::Refused,
            5 => ConnStatus::TimedOut,
            7 => ConnStatus::Spliced,
            8 => ConnStatus::TableFull,
            9 => ConnStatus::TupleInUse,
            _ => ConnStatus::Unreachable,
        }
    }

    fn error(self) -> Option<Error> {
        match self {
            ConnStatus::Reset => Some(Error::ConnectionReset),
            ConnStatus::Refused => Some(Error::ConnectionRefused),
            ConnStatus::TimedOut => Some(Error::TimedOut),
            ConnStatus::Unreachable => Some(Error::HostUnreachable),
            ConnStatus::TableFull => Some(Error::TooManyConnections),
            ConnStatus::TupleInUse => Some(Error::TupleInUse),
            _ => None,
        }
    }
}

/// The state a connection's application side and engine side share.
pub struct ConnShared {
    /// The congestion control asked for ([`Algorithm`] as a number).
    congestion: AtomicU8,
    /// Keep-alive idle time in milliseconds (0: off), interval in milliseconds, probes.
    keepalive: (AtomicU64, AtomicU32, AtomicU32),
    status: AtomicU8,
    flow: AtomicU32,
    rx_fin: AtomicBool,
    tx_fin: AtomicBool,
    rx_closed: AtomicBool,
    abort: AtomicBool,
    doorbell_pending: AtomicBool,
    /// Woken on every change.
    pub waiter: Waiter,
    ctx: OnceLock<(Context, u64)>,
    local: SocketAddrV4,
    remote: SocketAddrV4,
}

impl ConnShared {
    pub(crate) fn new(local: SocketAddrV4, remote: SocketAddrV4) -> Arc<Self> {
        Arc::new(ConnShared {
            congestion: AtomicU8::new(Algorithm::Default as u8),
            keepalive: Default::default(),
            status: AtomicU8::new(ConnStatus::Connecting as u8),
            flow: AtomicU32::new(u32::MAX),
            rx_fin: AtomicBool::new(false),
            tx_fin: AtomicBool::new(false),
            rx_closed: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            doorbell_pending: AtomicBool::new(false),
            waiter: Waiter::default(),
            ctx: OnceLock::new(),
            local,
            remote,
        })
    }

    /// Current status.
    pub fn status(&self) -> ConnStatus {
        ConnStatus::from_u8(self.status.load(Ordering::Acquire))
    }

    /// The flow id, once established.
    pub fn flow(&self) -> Option<FlowId> {
        match self.flow.load(Ordering::Acquire) {
            u32::MAX => None,
            f => Some(f),
        }
    }

    pub(crate) fn set_flow(&self, f: FlowId) {
        self.flow.store(f, Ordering::Release);
    }

    pub(crate) fn set_status(&self, s: ConnStatus) {
        self.status.store(s as u8, Ordering::Release);
        let kind = match s {
            ConnStatus::Connecting => None,
            ConnStatus::Established => Some(EventKind::Connected),
            _ => Some(EventKind::Closed),
        };
        if let Some(k) = kind {
            self.post(k);
        }
        self.waiter.wake();
    }

    pub(crate) fn set_rx_fin(&self) {
        self.rx_fin.store(true, Ordering::Release);
        self.post(EventKind::Readable);
        self.waiter.wake();
    }

    /// Whether the peer's FIN has arrived.
    pub fn rx_fin(&self) -> bool {
        self.rx_fin.load(Ordering::Acquire)
    }

    /// Whether the application shut down its sending side.
    pub fn tx_fin(&self) -> bool {
        self.tx_fin.load(Ordering::Acquire)
    }

    /// Whether the application closed its reading side (dropped the stream or its
    /// [`ReadHalf`]): it will read no more. The peer's data draws a RST only once the
    /// sending side is shut too ([`tx_fin`](Self::tx_fin)): after the whole stream was
    /// dropped, or both halves.
    pub fn rx_closed(&self) -> bool {
        self.rx_closed.load(Ordering::Acquire)
    }

    /// The congestion control the connection asked for.
    pub fn congestion(&self) -> Algorithm {
        Algorithm::from_u8(self.congestion.load(Ordering::Relaxed))
    }

    pub(crate) fn set_congestion(&self, a: Algorithm) {
        self.congestion.store(a as u8, Ordering::Relaxed);
    }

    /// The keep-alive settings, if keep-alives are on.
    pub fn keepalive(&self) -> Option<Keepalive> {
        // Acquire: `set_keepalive` stores idle last, with Release, so the interval and
        // count read below are at least as new as this idle time.
        let idle = self.keepalive.0.load(Ordering::Acquire);
        (idle > 0).then(|| Keepalive {
            idle: Duration::from_millis(idle),
            interval: Duration::from_millis(u64::from(self.keepalive.1.load(Ordering::Relaxed))),
            count: self.keepalive.2.load(Ordering::Relaxed),
        })
    }

    /// Whether the application asked for an abort.
    pub fn abort_requested(&self) -> bool {
        self.abort.load(Ordering::Acquire)
    }

    /// The flow id where [`flow`](Self::flow) saw none: after a full fence, read again.
    /// The engine publishes the id, fences, then reads what the application changed
    /// (`fence_after_install`); with a fence on this side too, either this read sees the
    /// id (and the caller rings) or the engine's reads see what the application did
    /// before (store-buffering: neither side may miss both). Only before the install.
    #[cold]
    fn flow_after_fence(&self) -> Option<FlowId> {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.flow()
    }

    /// Engine side, right after [`set_flow`](Self::set_flow) and before reading the
    /// connection's rings and flags: the fence that pairs with `flow_after_fence`.
    pub(crate) fn fence_after_install(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Engine side: the connection left the engine (closed, reset, spliced). Its doorbell
    /// stays rung for good, so that what the application still does with it (a drop, a
    /// shutdown, a read) queues nothing: its flow id may already be another connection's.
    pub(crate) fn retire_doorbell(&self) {
        self.doorbell_pending.store(true, Ordering::SeqCst);
    }

    /// Engine side: the doorbell has been seen; the next application change rings again.
    pub(crate) fn clear_doorbell(&self) {
        // Acquire what the application published before its last ring (an AcqRel swap, so
        // a ring that found the flag still set is seen by the engine's reads that follow).
        self.doorbell_pending.swap(false, Ordering::AcqRel);
    }

    /// Post an event to the registered context, if any.
    pub(crate) fn post(&self, kind: EventKind) {
        if let Some((ctx, token)) = self.ctx.get() {
            ctx.post(Event {
                token: *token,
                kind,
            });
        }
    }

    /// Local address.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// Peer address.
    pub fn peer_addr(&self) -> SocketAddrV4 {
        self.remote
    }
}

/// Requests from the application to the control plane.
pub(crate) enum AppRequest {
    Listen {
        port: u16,
        backlog: usize,
        accept_tx: Sender<Stream>,
        congestion: Algorithm,
        ctx: Arc<OnceLock<(Context, u64)>>,
    },
    Unlisten {
        port: u16,
    },
    Connect {
        remote: SocketAddrV4,
        local_port: u16,
        conn: Arc<ConnShared>,
        rings: FlowRings,
    },
    Splice(crate::stages::ext::splice::SpliceRequest),
}

/// State shared by every [`Host`] handle and the engine.
pub(crate) struct HostShared {
    pub(crate) ip: Ipv4Addr,
    pub(crate) requests: Sender<AppRequest>,
    /// Requests sent and not yet taken: counted up before the send, down by the engine
    /// after each receive, so that an idle engine checks one word, not the channel.
    pub(crate) requests_pending: AtomicUsize,
    pub(crate) doorbells: doorbells::Doorbells,
    pub(crate) ports: Mutex<PortAlloc>,
    pub(crate) rx_buf: usize,
    pub(crate) tx_buf: usize,
    pub(crate) engine_alive: AtomicBool,
    /// Connection ring pairs made so far (each holds `rx_buf + tx_buf` bytes).
    pub(crate) rings_made: std::sync::atomic::AtomicU64,
    /// The runtime thread that serves doorbells and requests, when one may sleep.
    pub(crate) engine_wake: OnceLock<Arc<crate::ring::Wakeup>>,
}

pub(crate) struct PortAlloc {
    used: HashSet<u16>,
    rng: crate::control::secrets::PortRng,
}

impl PortAlloc {
    pub(crate) fn new(key: [u64; 2]) -> Self {
        PortAlloc {
            used: HashSet::new(),
            rng: crate::control::secrets::PortRng::from_key(key),
        }
    }

    fn take(&mut self, port: u16) -> Result<()> {
        if port == 0 {
            return Err(Error::InvalidInput("port 0"));
        }
        if !self.used.insert(port) {
            return Err(Error::AddrInUse(port));
        }
        Ok(())
    }

    /// A random free port of the ephemeral range (RFC 6056 algorithm 1: a random start,
    /// then the next free one).
    fn take_ephemeral(&mut self) -> Result<u16> {
        let span = u32::from(u16::MAX - EPHEMERAL_START) + 1;
        let start = (self.rng.next_u64() % u64::from(span)) as u32;
        for i in 0..span {
            let p = EPHEMERAL_START as u32 + (start + i) % span;
            let p = p as u16;
            if self.used.insert(p) {
                return Ok(p);
            }
        }
        Err(Error::NoFreePort)
    }

    pub(crate) fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }
}

const EPHEMERAL_START: u16 = 49152;

impl HostShared {
    pub(crate) fn ring_doorbell(&self, conn: &ConnShared) {
        let Some(f) = conn.flow().or_else(|| conn.flow_after_fence()) else {
            return;
        };
        if !conn.doorbell_pending.swap(true, Ordering::SeqCst) {
            // The queue holds twice the flow limit: each flow has at most one entry, and
            // a flow that left the engine keeps its flag up (`retire_doorbell`); only an
            // entry queued just as its connection left can reach the next connection on
            // its flow id and let that one push once more. Were the queue full all the
            // same, this change would wait for the next ring; the flag goes down again so
            // that there is one, rather than the connection never being heard again.
            if self.doorbells.push(f).is_err() {
                conn.doorbell_pending.store(false, Ordering::SeqCst);
            }
            self.wake_engine();
        }
    }

    /// Hand a request to the engine and wake it; `false` if the engine is gone.
    pub(crate) fn request(&self, r: AppRequest) -> bool {
        self.requests_pending.fetch_add(1, Ordering::Release);
        let sent = self.requests.send(r).is_ok();
        if !sent {
            self.requests_pending.fetch_sub(1, Ordering::Relaxed);
        }
        self.wake_engine();
        sent
    }

    /// Wake the engine's thread if it sleeps (a runtime registered its wakeup).
    #[inline]
    pub(crate) fn wake_engine(&self) {
        if let Some(w) = self.engine_wake.get() {
            w.notify();
        }
    }

    /// The wakeup the runtime thread that serves doorbells and requests sleeps on (one per
    /// engine: a later runtime on the same engine sleeps on it too).
    pub(crate) fn engine_wake(&self) -> Arc<crate::ring::Wakeup> {
        self.engine_wake
            .get_or_init(crate::ring::Wakeup::new)
            .clone()
    }

    pub(crate) fn release_port(&self, port: u16) {
        self.ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release(port);
    }

    /// Make the ring pairs of a new connection: (engine ends, application ends).
    pub(crate) fn make_rings(&self) -> (FlowRings, RingReader, RingWriter) {
        self.rings_made
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (rx_w, rx_r) = byte_ring(self.rx_buf);
        let (tx_w, tx_r) = byte_ring(self.tx_buf);
        (FlowRings { rx: rx_w, tx: tx_r }, rx_r, tx_w)
    }
}

/// A handle for opening connections on an engine. Cheap to clone; `Send` and `Sync`.
#[derive(Clone)]
pub struct Host {
    pub(crate) shared: Arc<HostShared>,
}

impl Host {
    /// Connection ring pairs made so far (one per connection that got its buffers: an
    /// active open when it starts, a passive one when its handshake completes).
    pub fn rings_made(&self) -> u64 {
        self.shared
            .rings_made
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The engine's IPv4 address.
    pub fn ip(&self) -> Ipv4Addr {
        self.shared.ip
    }

    /// Listen on `port` with an accept backlog (at most [`MAX_BACKLOG`]).
    pub fn listen(&self, port: u16, backlog: usize) -> Result<Listener> {
        self.listen_with(port, backlog, Algorithm::Default)
    }

    /// [`listen`](Self::listen), with the congestion control the accepted connections ask
    /// for (a socket option; the engine's policy must offer the choice, as
    /// [`Selectable`](crate::control::congestion::Selectable) does).
    pub fn listen_with(
        &self,
        port: u16,
        backlog: usize,
        congestion: Algorithm,
    ) -> Result<Listener> {
        if backlog == 0 {
            return Err(Error::InvalidInput("backlog 0"));
        }
        self.check_alive()?;
        self.shared
            .ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(port)?;
        self.listen_on(port, backlog, congestion)
    }

    /// Hold `port` for a socket bound to it (a free one of the ephemeral range for 0), to
    /// [`listen`](BoundPort::listen) or [`connect`](BoundPort::connect) from later: what
    /// `bind(2)` does, so that the port is known, and no one else's, before either.
    pub fn bind(&self, port: u16) -> Result<BoundPort> {
        self.check_alive()?;
        let mut ports = self.shared.ports.lock().unwrap_or_else(|p| p.into_inner());
        let port = if port == 0 {
            ports.take_ephemeral()?
        } else {
            ports.take(port)?;
            port
        };
        Ok(BoundPort {
            port,
            host: self.clone(),
            held: true,
        })
    }

    /// [`listen_with`](Self::listen_with) on `port`, taken already; given back on failure.
    fn listen_on(&self, port: u16, backlog: usize, congestion: Algorithm) -> Result<Listener> {
        if backlog == 0 {
            self.shared.release_port(port);
            return Err(Error::InvalidInput("backlog 0"));
        }
        // As Linux caps a backlog at `somaxconn`: the accept queue is made at its size.
        let backlog = backlog.min(MAX_BACKLOG);
        let (accept_tx, accept_rx) = crossbeam_channel::bounded(backlog);
        let ctx = Arc::new(OnceLock::new());
        if !self.shared.request(AppRequest::Listen {
            port,
            backlog,
            accept_tx,
            congestion,
            ctx: ctx.clone(),
        }) {
            self.shared.release_port(port);
            return Err(Error::EngineGone);
        }
        Ok(Listener {
            port,
            accept_rx,
            host: self.shared.clone(),
            nonblocking: false,
            ctx,
        })
    }

    /// Start connecting to `remote`; returns at once with a stream in
    /// [`ConnStatus::Connecting`]. Data written meanwhile is sent once the connection is up.
    pub fn connect(&self, remote: SocketAddrV4) -> Result<Stream> {
        self.connect_with(remote, Algorithm::Default)
    }

    /// [`connect`](Self::connect), with the congestion control the connection asks for (a
    /// socket option, set before the handshake; the engine's policy must offer the choice,
    /// as [`Selectable`](crate::control::congestion::Selectable) does).
    pub fn connect_with(&self, remote: SocketAddrV4, congestion: Algorithm) -> Result<Stream> {
        self.check_remote(remote)?;
        let local_port = self
            .shared
            .ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_ephemeral()?;
        self.connect_from(local_port, remote, congestion)
    }

    /// Whether a connection may be opened to `remote`.
    fn check_remote(&self, remote: SocketAddrV4) -> Result<()> {
        if remote.port() == 0 {
            return Err(Error::InvalidInput("remote port 0"));
        }
        let ip = remote.ip();
        if *ip == self.shared.ip {
            // The engine does not talk to itself (no loopback): the SYN would go out on
            // the wire to our own address and the connection time out.
            return Err(Error::InvalidInput("the engine's own address"));
        }
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return Err(Error::InvalidInput("not a unicast address"));
        }
        self.check_alive()
    }

    /// [`connect_with`](Self::connect_with) from `local_port`, taken already (and given
    /// back by the engine when the connection ends, or here on failure).
    fn connect_from(
        &self,
        local_port: u16,
        remote: SocketAddrV4,
        congestion: Algorithm,
    ) -> Result<Stream> {
        let local = SocketAddrV4::new(self.shared.ip, local_port);
        let conn = ConnShared::new(local, remote);
        conn.set_congestion(congestion);
        let (rings, rx, tx) = self.shared.make_rings();
        if !self.shared.request(AppRequest::Connect {
            remote,
            local_port,
            conn: conn.clone(),
            rings,
        }) {
            self.shared.release_port(local_port);
            return Err(Error::EngineGone);
        }
        Ok(Stream::new(conn, rx, tx, self.shared.clone()))
    }

    /// Connect and wait (up to `timeout`) until the connection is established. Needs the
    /// engine to run on another thread.
    pub fn connect_blocking(&self, remote: SocketAddrV4, timeout: Duration) -> Result<Stream> {
        let s = self.connect(remote)?;
        s.wait_connected(Some(timeout))?;
        Ok(s)
    }

    fn check_alive(&self) -> Result<()> {
        if self.shared.engine_alive.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(Error::EngineGone)
        }
    }
}

/// A local port held for a bound socket ([`Host::bind`]): listen on it or connect from it;
/// dropped, it is given back.
pub struct BoundPort {
    port: u16,
    host: Host,
    /// Still held here (not handed on to a listener or a connection).
    held: bool,
}

impl BoundPort {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Listen on the port ([`Host::listen`]). On failure the port is given back.
    pub fn listen(self, backlog: usize) -> Result<Listener> {
        self.listen_with(backlog, Algorithm::Default)
    }

    /// [`listen`](Self::listen) with a congestion control ([`Host::listen_with`]).
    pub fn listen_with(self, backlog: usize, congestion: Algorithm) -> Result<Listener> {
        let (host, port) = self.take();
        host.listen_on(port, backlog, congestion)
    }

    /// Connect from the port ([`Host::connect`]). On failure the port is given back.
    pub fn connect(self, remote: SocketAddrV4) -> Result<Stream> {
        self.connect_with(remote, Algorithm::Default)
    }

    /// [`connect`](Self::connect) with a congestion control ([`Host::connect_with`]).
    pub fn connect_with(self, remote: SocketAddrV4, congestion: Algorithm) -> Result<Stream> {
        let (host, port) = self.take();
        if let Err(e) = host.check_remote(remote) {
            host.shared.release_port(port);
            return Err(e);
        }
        host.connect_from(port, remote, congestion)
    }

    /// The host and the port, which the caller now gives back or hands on.
    fn take(mut self) -> (Host, u16) {
        self.held = false;
        (self.host.clone(), self.port)
    }
}

impl Drop for BoundPort {
    fn drop(&mut self) {
        if self.held {
            self.host.shared.release_port(self.port);
        }
    }
}

/// A listening socket.
pub struct Listener {
    port: u16,
    accept_rx: Receiver<Stream>,
    host: Arc<HostShared>,
    nonblocking: bool,
    ctx: Arc<OnceLock<(Context, u64)>>,
}

impl Listener {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Make [`accept`](Self::accept) return `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&mut self, nb: bool) {
        self.nonblocking = nb;
    }

    /// Post [`EventKind::Readable`] with `token` to `ctx` whenever a connection is queued
    /// for [`accept`](Self::accept). Once per listener.
    pub fn register(&self, ctx: &Context, token: u64) -> Result<()> {
        self.ctx
            .set((ctx.clone(), token))
            .map_err(|_| Error::InvalidInput("listener already registered"))
    }

    /// Established connections waiting for [`accept`](Self::accept).
    pub fn pending(&self) -> usize {
        self.accept_rx.len()
    }

    /// Whether the engine that serves this listener has stopped.
    pub fn engine_gone(&self) -> bool {
        !self.host.engine_alive.load(Ordering::Acquire)
    }

    /// Take an established connection, waiting for one unless nonblocking.
    pub fn accept(&self) -> io::Result<Stream> {
        if self.nonblocking {
            return match self.try_accept()? {
                Some(s) => Ok(s),
                None => Err(io::ErrorKind::WouldBlock.into()),
            };
        }
        self.accept_rx.recv().map_err(|_| Error::EngineGone.into())
    }

    /// Take an established connection if one is waiting.
    pub fn try_accept(&self) -> io::Result<Option<Stream>> {
        match self.accept_rx.try_recv() {
            Ok(s) => Ok(Some(s)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(Error::EngineGone.into()),
        }
    }

    /// Wait up to `timeout` for a connection.
    pub fn accept_timeout(&self, timeout: Duration) -> io::Result<Option<Stream>> {
        match self.accept_rx.recv_timeout(timeout) {
            Ok(s) => Ok(Some(s)),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Ok(None),
            Err(_) => Err(Error::EngineGone.into()),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // The port is free at once, so that the application may listen on it again
        // straight away: the engine takes requests in order, this `Unlisten` before any
        // `Listen` that can follow the release.
        self.host.request(AppRequest::Unlisten { port: self.port });
        self.host.release_port(self.port);
    }
}

/// The largest listen backlog: larger ones are cut to it (as Linux's `somaxconn` cuts
/// them; the accept queue is allocated at the backlog's size).
pub const MAX_BACKLOG: usize = 65535;

/// Keep-alive timing for [`Stream::set_keepalive`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Time without a segment from the peer before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is aborted.
    pub count: u32,
}

impl Default for Keepalive {
    /// Linux's defaults: two hours, 75 s, 9 probes.
    fn default() -> Self {
        Keepalive {
            idle: Duration::from_secs(7200),
            interval: Duration::from_secs(75),
            count: 9,
        }
    }
}

mod context;
mod doorbells;
mod error;
mod split;
mod stream;
pub use context::{Context, Event, EventKind, Notify, Waiter};
pub(crate) use doorbells::Doorbells;
pub use error::{Error, Result};
pub use split::{ReadHalf, WriteHalf};
pub use stream::{Batch, Stream};
