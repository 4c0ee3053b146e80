//! The service's pump: one connection's bytes and states moved between the engine's
//! connection and the application's shared rings ([`Bridge`]), and the thread that does it
//! for every attached application.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flextoe::host::{ConnStatus, Stream};

use super::{App, Shared};
use crate::shm::{self, op, Mapping, Msg};

/// One connection between the engine and an application's shared rings.
pub(super) struct Bridge {
    pub(super) stream: Mutex<Option<Stream>>,
    map: Mapping,
    shut: AtomicBool,
    /// The status last written to the header, and whether the peer's FIN was: the pump's
    /// own copies (the program can write the header's too; comparing against those, a
    /// program rewriting them had every pass write them back and wake it, the pump never
    /// sleeping).
    told_status: AtomicU32,
    told_fin: AtomicBool,
    told_final: AtomicBool,
    /// Closed by its application with bytes still in the shared ring that the engine takes
    /// none of: since when (see [`ORPHAN_STALL`]).
    stalled_since: Mutex<Option<Instant>>,
    /// Its application closed it ([`Bridge::app_closed`]): for good, whatever the header
    /// says later.
    closed: AtomicBool,
}

impl Bridge {
    /// Whether its application closed it: the flag the application writes, kept here once
    /// seen (a program that cleared it again would have its closed connections, still
    /// sending, count as closed for its limit and be open all the same).
    pub(super) fn app_closed(&self) -> bool {
        self.app_flags() & shm::APP_CLOSED != 0
    }

    /// The application's flags as the header has them, with a close seen before kept.
    fn app_flags(&self) -> u32 {
        let flags = self.map.header().app_flags.load(Ordering::Acquire);
        if flags & shm::APP_CLOSED != 0 {
            self.closed.store(true, Ordering::Relaxed);
            return flags;
        }
        flags
            | if self.closed.load(Ordering::Relaxed) {
                shm::APP_CLOSED
            } else {
                0
            }
    }
}

/// How long a connection its application closed may hold bytes in the shared ring that the
/// engine takes none of (the peer keeps its window shut) before it is reset. Its stream is
/// held open meanwhile, so the engine's own limit on orphans (probes of a shut window) does
/// not apply to it: a program that closed connections to a peer that never reads, and went
/// away, left them, and its session, in the service for good. About Linux's: an orphan's
/// eight window probes take some 50 s.
pub(super) const ORPHAN_STALL: Duration = Duration::from_secs(60);

/// A connection's shared memory, made before the connection is taken or started (so that
/// a failure to make it costs no connection).
pub(super) fn new_mapping() -> io::Result<(OwnedFd, Mapping)> {
    Mapping::create("flextoe-conn", shm::SIZE)
}

/// Give `app` the connection `s` through the shared memory `mem` ([`new_mapping`]);
/// returns its id and memfd.
pub(super) fn bridge(
    shared: &Arc<Shared>,
    app: &Arc<App>,
    mut s: Stream,
    (fd, map): (OwnedFd, Mapping),
) -> (u32, OwnedFd) {
    s.set_nonblocking(true);
    let _ = s.register(&shared.ctx, 0);
    let h = map.header();
    let (l, p) = (s.local_addr(), s.peer_addr());
    h.local_ip.store(u32::from(*l.ip()), Ordering::Relaxed);
    h.local_port.store(l.port() as u32, Ordering::Relaxed);
    h.peer_ip.store(u32::from(*p.ip()), Ordering::Relaxed);
    h.peer_port.store(p.port() as u32, Ordering::Relaxed);
    let status = s.status() as u32;
    h.status.store(status, Ordering::Release);
    let id = app.next.fetch_add(1, Ordering::Relaxed);
    let b = Arc::new(Bridge {
        stream: Mutex::new(Some(s)),
        map,
        shut: AtomicBool::new(false),
        told_status: AtomicU32::new(status),
        told_fin: AtomicBool::new(false),
        told_final: AtomicBool::new(false),
        stalled_since: Mutex::new(None),
        closed: AtomicBool::new(false),
    });
    app.conns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, b);
    shm::kick(shared.pump.as_raw_fd());
    (id, fd)
}

/// Whether a ring's positions (as the application may have written them) can be copied
/// between: the head at or past the tail by at most the ring, and both far below
/// `u64::MAX` (a head of `u64::MAX - 10` made the service's `head + n` overflow: a panic
/// that stopped the pump for every application in a build with overflow checks). No
/// connection moves 2^62 bytes.
fn positions_sane(head: u64, tail: u64) -> bool {
    head >= tail && head - tail <= shm::RING as u64 && head < 1 << 62
}

/// Move one connection's bytes and states at `now`; `(changed, finished)`.
fn pump_one(b: &Bridge, app_alive: bool, now: Instant) -> (bool, bool) {
    let h = b.map.header();
    let mut guard = b.stream.lock().unwrap_or_else(|p| p.into_inner());
    let Some(st) = guard.as_mut() else {
        return (false, true);
    };
    let mut changed = false;
    let conn_status = st.status();
    // The application writes `rx_tail` and `tx_head`: positions that no well-behaved
    // application can produce end its connection (a RST), never a bad copy.
    let sane = positions_sane;
    if !sane(h.rx_head.load(Ordering::Relaxed), shm::load(&h.rx_tail))
        || !sane(shm::load(&h.tx_head), h.tx_tail.load(Ordering::Relaxed))
    {
        if let Some(s) = guard.take() {
            s.abort();
        }
        return (true, true);
    }
    // Engine to application. The status may say the connection failed before the bytes
    // received ahead of that are in the ring: `rx_final` says when they are (the
    // application's reads report the error only then; its writes fail at once, as Linux).
    for _ in 0..4 {
        let head = h.rx_head.load(Ordering::Relaxed);
        let tail = shm::load(&h.rx_tail);
        if !sane(head, tail) || head - tail == shm::RING as u64 {
            break;
        }
        match st.read_with(|src| {
            let n = b.map.write(shm::RX, head, tail, src);
            (n, n)
        }) {
            Ok(n) if n > 0 => {
                h.rx_head.store(head + n as u64, Ordering::Release);
                changed = true;
            }
            _ => break,
        }
    }
    // The FIN once every byte before it is in the ring (the loop may also have stopped at a
    // full ring or its count): published before `rx_final`, so that a read that sees the
    // failure sees it.
    if st.peer_closed() && st.readable_bytes() == 0 && !b.told_fin.swap(true, Ordering::Relaxed) {
        h.peer_fin.store(1, Ordering::Release);
        changed = true;
    }
    let failed = !matches!(
        conn_status,
        ConnStatus::Connecting | ConnStatus::Established | ConnStatus::Closed
    );
    // A failed connection receives nothing more: once its stream is empty, every byte is
    // in the ring.
    if failed && st.readable_bytes() == 0 && !b.told_final.swap(true, Ordering::Relaxed) {
        h.rx_final.store(1, Ordering::Release);
        changed = true;
    }
    // The status after `rx_final`: a failure with nothing left to move polls as one at once.
    let status = conn_status as u32;
    if b.told_status.swap(status, Ordering::Relaxed) != status {
        h.status.store(status, Ordering::Release);
        changed = true;
    }
    // Application to engine; nothing of an aborted connection's (a close with unread data
    // or `SO_LINGER` at zero discards what is queued, as Linux).
    let aborted = h.app_flags.load(Ordering::Acquire) & shm::APP_ABORT != 0;
    let mut tx_moved = false;
    for _ in 0..if aborted { 0 } else { 4 } {
        let tail = h.tx_tail.load(Ordering::Relaxed);
        let head = shm::load(&h.tx_head);
        if head == tail || !sane(head, tail) {
            break;
        }
        match st.write_with(|dst| {
            let n = b.map.read(shm::TX, head, tail, dst);
            (n, n)
        }) {
            Ok(n) if n > 0 => {
                // Counted in the engine before they leave the ring: the application's
                // `SIOCOUTQ` never misses them in between.
                h.tx_unacked
                    .store(st.unacked_bytes() as u64, Ordering::Release);
                h.tx_tail.store(tail + n as u64, Ordering::Release);
                changed = true;
                tx_moved = true;
            }
            _ => break,
        }
    }
    // What the peer acknowledged since.
    let unacked = st.unacked_bytes() as u64;
    if h.tx_unacked.load(Ordering::Relaxed) != unacked {
        h.tx_unacked.store(unacked, Ordering::Release);
    }
    let flags = b.app_flags();
    let drained = shm::load(&h.tx_head) == h.tx_tail.load(Ordering::Relaxed);
    if flags & shm::APP_ABORT != 0 || (!app_alive && flags & shm::APP_CLOSED == 0) {
        // Closed with unread data, or its application is gone: a RST.
        if let Some(s) = guard.take() {
            s.abort();
        }
        return (changed, true);
    }
    if flags & (shm::APP_SHUT_WR | shm::APP_CLOSED) != 0
        && drained
        && !b.shut.swap(true, Ordering::Relaxed)
    {
        let _ = st.shutdown(std::net::Shutdown::Write);
    }
    // Closed, and its data out (or never to go out: the connection failed or ended).
    let over = !matches!(
        st.status(),
        ConnStatus::Connecting | ConnStatus::Established
    );
    if flags & shm::APP_CLOSED != 0 && (drained || over) {
        // The engine finishes the connection (FIN, retransmissions, TIME-WAIT) on its own.
        let _ = st.shutdown(std::net::Shutdown::Both);
        drop(guard.take());
        return (changed, true);
    }
    if flags & shm::APP_CLOSED != 0 {
        // Closed with bytes left in the shared ring: reset once the engine took none of
        // them for `ORPHAN_STALL`.
        let mut since = b.stalled_since.lock().unwrap_or_else(|p| p.into_inner());
        match *since {
            Some(t) if !tx_moved && now.saturating_duration_since(t) >= ORPHAN_STALL => {
                if let Some(s) = guard.take() {
                    s.abort();
                }
                return (true, true);
            }
            Some(_) if !tx_moved => {}
            _ => *since = Some(now),
        }
    }
    (changed, false)
}

/// The pump: move every connection's bytes; sleep on the eventfd when nothing moves.
pub(super) fn pump_loop(shared: &Shared) {
    let mut idle = 0u32;
    loop {
        let apps: Vec<Arc<App>> = shared
            .apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut any = false;
        let now = Instant::now();
        for app in &apps {
            let alive = app.alive.load(Ordering::SeqCst);
            let conns: Vec<(u32, Arc<Bridge>)> = app
                .conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect();
            let mut dirty = false;
            let mut done = Vec::new();
            for (id, b) in &conns {
                let (changed, finished) = pump_one(b, alive, now);
                dirty |= changed;
                if finished {
                    done.push(*id);
                }
            }
            if !done.is_empty() {
                let mut c = app.conns.lock().unwrap_or_else(|p| p.into_inner());
                for id in done {
                    c.remove(&id);
                }
                any = true;
            }
            // Listeners' queues, told as events.
            for (id, ls) in app
                .listeners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter_mut()
            {
                if ls.l.pending() as u32 == ls.told {
                    continue;
                }
                let (n, seq) = ls.report();
                // The event socket does not block: an application that does not read its
                // events (stopped, say) stalls nobody; it is told at a later pass (the count
                // it was not told is forgotten, so the next pass reports again).
                if shm::send_msg(
                    app.events.as_raw_fd(),
                    &Msg {
                        op: op::PENDING,
                        a: *id,
                        b: n,
                        seq,
                        err: 0,
                    },
                    &[],
                )
                .is_ok()
                {
                    any = true;
                } else {
                    ls.told = u32::MAX;
                }
            }
            if dirty && alive {
                shm::nudge(app.wake.as_raw_fd());
            }
            any |= dirty;
        }
        if apps.iter().any(|a| !a.alive.load(Ordering::SeqCst)) {
            // Applications that are gone with nothing left to finish leave the list.
            shared
                .apps
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|a| {
                    a.alive.load(Ordering::SeqCst)
                        || !a.conns.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
                });
        }
        let flag = shared.page.word(shm::PAGE_PUMP_SLEEPS);
        if any {
            flag.store(0, Ordering::SeqCst);
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < 64 {
            std::hint::spin_loop();
            continue;
        }
        // Sleep: announce it, look once more (the next pass), then wait for a kick (or
        // 10 ms: a missed kick costs no more).
        flag.store(1, Ordering::SeqCst);
        // The flag must be seen before the positions are looked at again (store-load).
        std::sync::atomic::fence(Ordering::SeqCst);
        // The engine's kicks, and each program's.
        let mut fds: Vec<libc::pollfd> = std::iter::once(&shared.pump)
            .chain(apps.iter().map(|a| &a.kick))
            .map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: Duration::from_millis(10).as_nanos() as libc::c_long,
        };
        if idle > 64 {
            // SAFETY: `fds.len()` pollfds of ours.
            unsafe {
                crate::real::ppoll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    &ts,
                    std::ptr::null(),
                )
            };
            // The engine's eventfd, then the programs' kicks.
            if fds[0].revents != 0 {
                let mut v = 0u64;
                // SAFETY: an 8-byte read from our own nonblocking eventfd.
                unsafe { crate::real::read(fds[0].fd, (&mut v as *mut u64).cast(), 8) };
            }
            for p in fds[1..].iter().filter(|p| p.revents != 0) {
                shm::take_kicks(p.fd, shared.kick_datagrams);
            }
            flag.store(0, Ordering::SeqCst);
            idle = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Positions an application wrote: a head near `u64::MAX` (whose `head + n` overflowed
    /// in the pump), a tail past the head, or more than the ring between them end the
    /// connection; positions of a connection that moved a lot of data do not.
    #[test]
    fn hostile_ring_positions_are_refused() {
        let ring = shm::RING as u64;
        assert!(positions_sane(0, 0));
        assert!(positions_sane(ring, 0));
        assert!(positions_sane(1 << 50, (1 << 50) - ring));
        assert!(!positions_sane(ring + 1, 0));
        assert!(!positions_sane(0, 1));
        assert!(!positions_sane(u64::MAX - 10, u64::MAX - 10));
        assert!(!positions_sane(u64::MAX, u64::MAX - ring));
    }

    /// A connection reset after more bytes than the application's ring holds: the pump
    /// says `rx_final` only once every byte received before the reset is in the ring (the
    /// application's read reports the reset then, not while bytes are still in the engine).
    #[test]
    fn a_reset_is_final_for_reads_only_after_every_byte_before_it() {
        reset_after_more_than_the_ring(false);
    }

    /// The same with the peer's FIN before its reset: the FIN is published with the last
    /// bytes, before `rx_final` (the pump stopped at the full ring and said final without
    /// it, and the application's read, after the last bytes, reported the reset where
    /// Linux's reads the end).
    #[test]
    fn a_fin_before_a_reset_is_published_before_the_reset_is_final() {
        reset_after_more_than_the_ring(true);
    }

    use flextoe::backends::arena_link::ArenaPort;
    use flextoe::pipeline::Engine;
    use flextoe::time::{Clock, SystemClock};

    /// Two engines over an in-memory link, one connection between them: its client end
    /// bridged to a shared memory (the application's rings), its server end the peer.
    struct Bridged {
        server: Engine<ArenaPort>,
        client: Engine<ArenaPort>,
        clock: SystemClock,
        bridge: Bridge,
        peer: Stream,
    }

    fn bridged() -> Bridged {
        use flextoe::backends::arena_link::ArenaLink;
        use flextoe::pipeline::EngineConfig;
        use flextoe::wire::MacAddr;
        use std::net::{Ipv4Addr, SocketAddrV4};

        let (a, b) = ArenaLink::pair(16 * 1024).unwrap();
        let ip = |n| Ipv4Addr::new(192, 0, 2, n);
        let mut server =
            Engine::new(EngineConfig::new(MacAddr([2, 0, 0, 0, 0, 1]), ip(1)), a).unwrap();
        let mut client =
            Engine::new(EngineConfig::new(MacAddr([2, 0, 0, 0, 0, 2]), ip(2)), b).unwrap();
        let clock = SystemClock::new();
        let listener = server.host().listen(80, 4).unwrap();
        let mut conn = client.host().connect(SocketAddrV4::new(ip(1), 80)).unwrap();
        conn.set_nonblocking(true);
        let mut accepted = None;
        for _ in 0..1000 {
            server.poll(clock.now());
            client.poll(clock.now());
            if let Some(s) = listener.try_accept().unwrap() {
                accepted = Some(s);
                break;
            }
        }
        let mut peer = accepted.expect("accepted");
        peer.set_nonblocking(true);
        let (_fd, map) = Mapping::create("flextoe-test", shm::SIZE).unwrap();
        let bridge = Bridge {
            stream: Mutex::new(Some(conn)),
            map,
            shut: AtomicBool::new(false),
            told_status: AtomicU32::new(ConnStatus::Established as u32),
            told_fin: AtomicBool::new(false),
            told_final: AtomicBool::new(false),
            stalled_since: Mutex::new(None),
            closed: AtomicBool::new(false),
        };
        Bridged {
            server,
            client,
            clock,
            bridge,
            peer,
        }
    }

    /// A connection its application closed with bytes in the shared ring that the engine
    /// cannot take (the peer reads nothing, its window shut) is reset once no byte moved for
    /// `ORPHAN_STALL`, and not before; bytes that move start the wait over. (It stayed open
    /// for good, with its application's session, after the application went away.)
    #[test]
    fn a_closed_connection_stalled_on_a_shut_window_is_reset_in_time() {
        use std::io::Read;
        let Bridged {
            mut server,
            mut client,
            clock,
            bridge,
            mut peer,
        } = bridged();
        let h = bridge.map.header();
        // The application writes until the engine takes no more (the peer reads nothing).
        let mut stuck = 0;
        for _ in 0..100_000 {
            let tail = h.tx_tail.load(Ordering::Relaxed);
            h.tx_head.store(tail + shm::RING as u64, Ordering::Release);
            server.poll(clock.now());
            client.poll(clock.now());
            pump_one(&bridge, true, Instant::now());
            stuck = if h.tx_tail.load(Ordering::Relaxed) == tail {
                stuck + 1
            } else {
                0
            };
            if stuck > 1000 {
                break;
            }
        }
        assert!(stuck > 1000, "the engine kept taking bytes");
        h.app_flags.store(shm::APP_CLOSED, Ordering::Release);
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert!(!pump_one(&bridge, false, t0).1, "bytes still to send");
        assert!(!pump_one(&bridge, false, at(59)).1);
        // The peer reads some, and the engine has room again: bytes move at a pass past
        // the stall's end, and the wait starts over instead of the reset.
        let mut buf = vec![0u8; 64 * 1024];
        let room = |b: &Bridge| {
            let g = b.stream.lock().unwrap();
            g.as_ref().map_or(0, |s| s.writable_bytes())
        };
        for _ in 0..100_000 {
            if room(&bridge) > 0 {
                break;
            }
            let _ = peer.read(&mut buf);
            server.poll(clock.now());
            client.poll(clock.now());
        }
        assert!(room(&bridge) > 0, "no room after the peer read");
        let before = h.tx_tail.load(Ordering::Relaxed);
        assert!(!pump_one(&bridge, false, at(70)).1, "bytes moved: no reset");
        assert!(h.tx_tail.load(Ordering::Relaxed) > before, "no byte moved");
        assert!(!pump_one(&bridge, false, at(72)).1, "the wait started over");
        assert!(pump_one(&bridge, false, at(130)).1, "reset after the stall");
        assert!(
            bridge.stream.lock().unwrap().is_none(),
            "the stream is let go of"
        );
        // The peer sees the reset.
        let mut reset = false;
        for _ in 0..100_000 {
            server.poll(clock.now());
            client.poll(clock.now());
            if peer.status() == ConnStatus::Reset {
                reset = true;
                break;
            }
            let _ = peer.read(&mut buf);
        }
        assert!(reset, "the peer was not reset");
    }

    /// A close the service has seen stays: a program that clears its header's flag again
    /// keeps the connection closed (it counted as closed for the program's connection limit
    /// and stayed open), and the pump finishes it.
    #[test]
    fn a_close_seen_stays_when_the_program_clears_its_flag() {
        let Bridged { bridge, .. } = bridged();
        let h = bridge.map.header();
        assert!(!bridge.app_closed());
        h.app_flags.store(shm::APP_CLOSED, Ordering::Release);
        assert!(bridge.app_closed());
        h.app_flags.store(0, Ordering::Release);
        assert!(bridge.app_closed(), "the close was forgotten");
        assert!(pump_one(&bridge, true, Instant::now()).1, "not finished");
        assert!(bridge.stream.lock().unwrap().is_none());
    }

    fn reset_after_more_than_the_ring(fin: bool) {
        use std::io::Write;
        let Bridged {
            mut server,
            mut client,
            clock,
            bridge,
            mut peer,
        } = bridged();
        let h = bridge.map.header();
        // Poll both engines and pump until `until` holds (bounded).
        let mut step = |until: &dyn Fn(&Bridge) -> bool| {
            for _ in 0..100_000 {
                server.poll(clock.now());
                client.poll(clock.now());
                pump_one(&bridge, true, Instant::now());
                if until(&bridge) {
                    return;
                }
            }
        };
        // More than the ring (the application reads nothing), less than it and the
        // engine's receive buffer together: all of it arrives.
        let total = shm::RING + shm::RING / 2;
        let data = vec![7u8; total];
        let mut sent = 0;
        let in_engine = |b: &Bridge| {
            let g = b.stream.lock().unwrap();
            g.as_ref().map_or(0, |s| s.readable_bytes())
        };
        while sent < total {
            sent += peer.write(&data[sent..]).unwrap_or(0);
            step(&|_| true);
        }
        step(&|b| b.map.header().rx_head.load(Ordering::Relaxed) as usize + in_engine(b) == total);
        assert_eq!(h.rx_head.load(Ordering::Relaxed) as usize, shm::RING);
        assert_eq!(in_engine(&bridge), total - shm::RING);
        if fin {
            peer.shutdown(std::net::Shutdown::Write).unwrap();
            step(&|b| {
                b.stream
                    .lock()
                    .unwrap()
                    .as_ref()
                    .is_some_and(|s| s.peer_closed())
            });
        }
        peer.abort();
        step(&|b| b.map.header().status.load(Ordering::Relaxed) == ConnStatus::Reset as u32);
        assert_eq!(h.status.load(Ordering::Relaxed), ConnStatus::Reset as u32);
        assert_eq!(
            h.rx_final.load(Ordering::Relaxed),
            0,
            "bytes are still in the engine"
        );
        assert_eq!(h.peer_fin.load(Ordering::Relaxed), 0);
        // The application reads as much as is left in the engine: the pump moves the rest,
        // filling the ring again, then says final (with the FIN first, where it came).
        h.rx_tail
            .store((total - shm::RING) as u64, Ordering::Relaxed);
        pump_one(&bridge, true, Instant::now());
        assert_eq!(h.rx_head.load(Ordering::Relaxed) as usize, total);
        assert_eq!(h.peer_fin.load(Ordering::Relaxed), u32::from(fin));
        assert_eq!(h.rx_final.load(Ordering::Relaxed), 1);
    }
}
