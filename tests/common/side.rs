//! One side of a transfer: an engine (inline or threaded) or a smoltcp interface, each with
//! its listener or stream, over the in-memory link.

use std::sync::atomic::{AtomicU32, Ordering};

use flextoe::flow::flow_group;
use flextoe::host::ConnStatus;
use flextoe::pipeline::Topology;
use flextoe::wire::FourTuple;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use super::*;

static TS_MS: AtomicU32 = AtomicU32::new(1);
fn smol_tsval() -> u32 {
    TS_MS.load(Ordering::Relaxed)
}

/// One side of a transfer.
pub enum Side {
    Engine {
        engine: Box<Engine<MemPort>>,
        listener: Option<Listener>,
        stream: Option<Stream>,
    },
    Smol {
        iface: Box<Interface>,
        dev: MemPort,
        sockets: SocketSet<'static>,
        handle: SocketHandle,
    },
    Threaded {
        rt: Option<Threaded>,
        host: flextoe::Host,
        listener: Option<Listener>,
        stream: Option<Stream>,
    },
}

/// Opens at least `n` non-blocking connections from `host` to `dst`, and more where needed
/// until each of the server's `groups` flow groups holds at least `per_group` of them
/// (`secret`: the server's `isn_secret`, which keys its choice of group).
/// Ephemeral ports are random, so a few connections may all hash to one group; a test that
/// needs every group busy must not depend on that luck.
pub fn connect_over_groups(
    host: &Host,
    secret: [u64; 2],
    dst: SocketAddrV4,
    n: usize,
    groups: u16,
    per_group: usize,
) -> Vec<Stream> {
    let mut count = vec![0usize; groups as usize];
    let mut streams = Vec::new();
    while streams.len() < n || count.iter().any(|&c| c < per_group) {
        assert!(
            streams.len() < n + 64 * groups as usize * per_group,
            "no spread over the flow groups"
        );
        let mut s = host.connect(dst).unwrap();
        s.set_nonblocking(true);
        let at_server = FourTuple {
            local_ip: *dst.ip(),
            local_port: dst.port(),
            remote_ip: *s.local_addr().ip(),
            remote_port: s.local_addr().port(),
        };
        count[flow_group(secret, &at_server, groups) as usize] += 1;
        streams.push(s);
    }
    streams
}

pub fn engine_config(mac: MacAddr, ip: Ipv4Addr) -> EngineConfig {
    let mut cfg = EngineConfig::new(mac, ip);
    cfg.arena_frames = 4096;
    cfg
}

/// Settings for an engine on the threaded runtime in these tests.
pub fn threaded_config(mac: MacAddr, ip: Ipv4Addr) -> EngineConfig {
    let mut cfg = engine_config(mac, ip);
    // Real time passes in these runs: keep retransmission timeouts short.
    cfg.control.rto_min = Duration::from_millis(10);
    cfg.control.rto_initial = Duration::from_millis(50);
    cfg.control.time_wait = Duration::from_millis(100);
    // Worker threads share two cores with the harness and other tests: a stall of a few
    // seconds is the scheduler, not the network, so allow more timeouts in a row.
    cfg.control.max_retransmissions = 40;
    cfg
}

impl Side {
    pub fn engine(port: MemPort, mac: MacAddr, ip: Ipv4Addr, cfg: Option<EngineConfig>) -> Side {
        let cfg = cfg.unwrap_or_else(|| engine_config(mac, ip));
        Side::Engine {
            engine: Box::new(Engine::new(cfg, port).expect("engine")),
            listener: None,
            stream: None,
        }
    }

    pub fn threaded(port: MemPort, mac: MacAddr, ip: Ipv4Addr, clock: &VirtualClock) -> Side {
        let cfg = threaded_config(mac, ip);
        let rt = Threaded::spawn(cfg, port, Topology::x86(2), clock.clone()).expect("threaded");
        Side::from_threaded(rt)
    }

    /// A side around an engine built elsewhere (for example with `Pipeline::builder`).
    pub fn from_engine(engine: Engine<MemPort>) -> Side {
        Side::Engine {
            engine: Box::new(engine),
            listener: None,
            stream: None,
        }
    }

    /// A side around a threaded engine built elsewhere.
    pub fn from_threaded(rt: Threaded) -> Side {
        Side::Threaded {
            host: rt.host(),
            rt: Some(rt),
            listener: None,
            stream: None,
        }
    }

    /// The engine's connections and their TCP state, for failure messages.
    pub fn debug_state(&self) -> String {
        match self {
            Side::Engine { engine, .. } => {
                let mut out = format!("{}\n", engine.stats());
                for t in engine.connections() {
                    out += &format!(
                        "{t:?} {:?}\n{:?}\n{:?}\n",
                        engine.conn_state(&t),
                        engine.tcp_state(&t),
                        engine.congestion_state(&t)
                    );
                }
                out
            }
            Side::Smol {
                sockets, handle, ..
            } => {
                let s = sockets.get::<tcp::Socket>(*handle);
                format!(
                    "smoltcp {:?} send_queue {} recv_queue {}",
                    s.state(),
                    s.send_queue(),
                    s.recv_queue()
                )
            }
            Side::Threaded { rt, .. } => rt
                .as_ref()
                .map(|r| format!("{}", r.stats()))
                .unwrap_or_default(),
        }
    }

    pub fn is_threaded(&self) -> bool {
        matches!(self, Side::Threaded { .. })
    }

    pub fn threaded_stats(&self) -> Option<flextoe::pipeline::ThreadedStats> {
        match self {
            Side::Threaded { rt: Some(rt), .. } => Some(rt.stats()),
            _ => None,
        }
    }

    pub fn smoltcp(mut dev: MemPort, mac: MacAddr, ip: Ipv4Addr, timestamps: bool) -> Side {
        let cfg = Config::new(HardwareAddress::Ethernet(mac));
        let mut iface = Interface::new(cfg, &mut dev, smoltcp::time::Instant::from_micros(0));
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(ip), 24)).unwrap();
        });
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
        );
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        if timestamps {
            sock.set_tsval_generator(Some(smol_tsval));
        }
        let mut sockets = SocketSet::new(vec![]);
        let handle = sockets.add(sock);
        Side::Smol {
            iface: Box::new(iface),
            dev,
            sockets,
            handle,
        }
    }

    pub fn listen(&mut self, port: u16) {
        match self {
            Side::Engine {
                engine, listener, ..
            } => {
                *listener = Some(engine.host().listen(port, 16).expect("listen"));
            }
            Side::Smol {
                sockets, handle, ..
            } => {
                sockets
                    .get_mut::<tcp::Socket>(*handle)
                    .listen(port)
                    .expect("listen");
            }
            Side::Threaded { host, listener, .. } => {
                *listener = Some(host.listen(port, 16).expect("listen"));
            }
        }
    }

    pub fn connect(&mut self, ip: Ipv4Addr, port: u16) {
        match self {
            Side::Engine { engine, stream, .. } => {
                let mut s = engine
                    .host()
                    .connect(SocketAddrV4::new(ip, port))
                    .expect("connect");
                s.set_nonblocking(true);
                *stream = Some(s);
            }
            Side::Threaded { host, stream, .. } => {
                let mut s = host.connect(SocketAddrV4::new(ip, port)).expect("connect");
                s.set_nonblocking(true);
                *stream = Some(s);
            }
            Side::Smol {
                iface,
                sockets,
                handle,
                ..
            } => {
                sockets
                    .get_mut::<tcp::Socket>(*handle)
                    .connect(iface.context(), (IpAddress::Ipv4(ip), port), 40000)
                    .expect("connect");
            }
        }
    }

    pub fn poll(&mut self, now: Instant) -> bool {
        match self {
            Side::Engine {
                engine,
                listener,
                stream,
            } => {
                let busy = engine.poll(now);
                if stream.is_none() {
                    if let Some(l) = listener.as_ref() {
                        if let Some(mut s) = l.try_accept().expect("accept") {
                            s.set_nonblocking(true);
                            *stream = Some(s);
                        }
                    }
                }
                busy
            }
            Side::Threaded {
                listener, stream, ..
            } => {
                if stream.is_none() {
                    if let Some(l) = listener.as_ref() {
                        if let Some(mut s) = l.try_accept().expect("accept") {
                            s.set_nonblocking(true);
                            *stream = Some(s);
                        }
                    }
                }
                false
            }
            Side::Smol {
                iface,
                dev,
                sockets,
                ..
            } => {
                // One timestamp clock for every smoltcp side of this test binary (smoltcp takes
                // a plain function): tests run in parallel on clocks of their own, so it
                // only ever moves forward, as a timestamp clock must (PAWS).
                TS_MS.fetch_max((now.millis() as u32).max(1), Ordering::Relaxed);
                let t = smoltcp::time::Instant::from_micros(now.micros() as i64);
                iface.poll(t, dev, sockets) != smoltcp::iface::PollResult::None
            }
        }
    }

    pub fn next_deadline(&mut self, now: Instant) -> Option<Instant> {
        match self {
            Side::Engine { engine, .. } => engine.next_deadline(),
            Side::Threaded { .. } => None,
            Side::Smol {
                iface,
                sockets,
                dev,
                ..
            } => {
                let t = smoltcp::time::Instant::from_micros(now.micros() as i64);
                let a = iface
                    .poll_at(t, sockets)
                    .map(|x| Instant::from_micros(x.total_micros().max(0) as u64));
                use flextoe::backends::Port;
                match (a, dev.next_arrival()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    /// Write from `src`; returns bytes accepted.
    pub fn write(&mut self, src: &mut Source) -> usize {
        let mut total = 0;
        loop {
            let data = src.pending();
            if data.is_empty() {
                return total;
            }
            let n = match self {
                Side::Engine { stream, .. } | Side::Threaded { stream, .. } => {
                    match stream.as_mut() {
                        Some(s) => match s.write(data) {
                            Ok(n) => n,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
                            Err(e) => panic!("write: {e}"),
                        },
                        None => 0,
                    }
                }
                Side::Smol {
                    sockets, handle, ..
                } => {
                    let s = sockets.get_mut::<tcp::Socket>(*handle);
                    if s.can_send() {
                        s.send_slice(data).expect("send")
                    } else {
                        0
                    }
                }
            };
            if n == 0 {
                return total;
            }
            src.consume(n);
            total += n;
        }
    }

    /// Read into `sink`; returns bytes read.
    pub fn read(&mut self, sink: &mut Sink) -> usize {
        let mut total = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match self {
                Side::Engine { stream, .. } | Side::Threaded { stream, .. } => {
                    match stream.as_mut() {
                        Some(s) => match s.read(&mut buf) {
                            Ok(0) => {
                                sink.eof = true;
                                return total;
                            }
                            Ok(n) => n,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => return total,
                            Err(e) => panic!("read: {e}"),
                        },
                        None => return total,
                    }
                }
                Side::Smol {
                    sockets, handle, ..
                } => {
                    let s = sockets.get_mut::<tcp::Socket>(*handle);
                    match s.recv_slice(&mut buf) {
                        Ok(n) => n,
                        Err(tcp::RecvError::Finished) => {
                            sink.eof = true;
                            return total;
                        }
                        Err(tcp::RecvError::InvalidState) => return total,
                    }
                }
            };
            if n == 0 {
                return total;
            }
            sink.take(&buf[..n]);
            total += n;
        }
    }

    pub fn close_write(&mut self) {
        match self {
            Side::Engine { stream, .. } | Side::Threaded { stream, .. } => {
                if let Some(s) = stream.as_mut() {
                    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
                }
            }
            Side::Smol {
                sockets, handle, ..
            } => sockets.get_mut::<tcp::Socket>(*handle).close(),
        }
    }

    pub fn connected(&mut self) -> bool {
        match self {
            Side::Engine { stream, .. } | Side::Threaded { stream, .. } => stream
                .as_ref()
                .is_some_and(|s| s.status() != ConnStatus::Connecting),
            Side::Smol {
                sockets, handle, ..
            } => {
                sockets.get_mut::<tcp::Socket>(*handle).state() != tcp::State::SynSent
                    && sockets.get_mut::<tcp::Socket>(*handle).state() != tcp::State::Listen
                    && sockets.get_mut::<tcp::Socket>(*handle).state() != tcp::State::SynReceived
            }
        }
    }

    /// Closed as far as the application can tell (both FINs done).
    pub fn closed(&mut self) -> bool {
        match self {
            Side::Engine { stream, .. } | Side::Threaded { stream, .. } => stream
                .as_ref()
                .is_some_and(|s| s.status() == ConnStatus::Closed),
            Side::Smol {
                sockets, handle, ..
            } => matches!(
                sockets.get_mut::<tcp::Socket>(*handle).state(),
                tcp::State::Closed | tcp::State::TimeWait
            ),
        }
    }

    /// Nothing left: no flow-table entry, no connection state.
    pub fn fully_gone(&mut self) -> bool {
        match self {
            Side::Engine { engine, .. } => {
                engine.flow_count() == 0 && engine.connections().is_empty()
            }
            Side::Threaded { rt, .. } => {
                let st = rt.as_ref().expect("running").stats();
                st.io.flows == 0 && st.io.connections.is_empty()
            }
            Side::Smol {
                sockets, handle, ..
            } => sockets.get_mut::<tcp::Socket>(*handle).state() == tcp::State::Closed,
        }
    }

    pub fn engine_ref(&self) -> Option<&Engine<MemPort>> {
        match self {
            Side::Engine { engine, .. } => Some(engine),
            _ => None,
        }
    }
}
