//! The engine service (`flextoe-serviced`): one engine that application processes attach
//! to with `FLEXTOE_MODE=service`.
//!
//! An application attaches over a Unix (`SOCK_SEQPACKET`) socket, which then carries only
//! set-up requests: listen, accept, connect. Each connection's bytes go through a memfd
//! both processes map ([`crate::shm`]): the application reads and writes its rings without
//! a system call, and the service's pump thread moves bytes between those rings and the
//! engine's connection. Each side wakes the other (the program an eventfd of its own, the
//! service a socket pair of that program's own) only when the other sleeps (the pump) or when it moved the other's data
//! (the application's event thread).
//!
//! When an application goes away (its socket ends, a crash included), the connections it
//! had not closed are reset, and its listeners closed. When the service goes away, the
//! applications' event sockets end, and their connections read as reset.

mod pump;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flextoe::backends::any::AnyPort;
use flextoe::host::{BoundPort, Context, Host, Listener};
use flextoe::pipeline::{Engine, EngineConfig, Runtime};
use flextoe::time::SystemClock;

use crate::engine::Config;
use crate::peer::Peer;
use crate::shm::{self, op, Mapping, Msg};
use pump::{bridge, new_mapping, pump_loop, Bridge};

/// The service's shared state.
struct Shared {
    host: Host,
    ctx: Context,
    page: Mapping,
    page_fd: OwnedFd,
    pump: OwnedFd,
    apps: Mutex<Vec<Arc<App>>>,
    /// Held from the count of a process's connections to the new one's insert (each
    /// application's requests run on a thread of their own).
    admit: Mutex<()>,
    /// Applications attached now (each holds a thread and four descriptors).
    attached: AtomicUsize,
    /// Attaches each process holds now, by process id ([`MAX_PROCESS_APPS`]).
    per_process: Mutex<HashMap<i32, usize>>,
    /// Whether programs kick the pump in datagrams: where this kernel cannot read an
    /// eventfd with `RWF_NOWAIT` (before 5.12), a shared eventfd could be made to block the
    /// pump's read ([`shm::eventfd_reads_without_waiting`]).
    kick_datagrams: bool,
}

/// Most applications attached at once: past it an attach is closed at once (a program that
/// attached in a loop and sent nothing took a thread and its descriptors each, until the
/// service could make no thread and exited).
const MAX_APPS: usize = 256;
/// Most attaches one process holds at once: past it an attach is closed at once. A process
/// attaches once (a child after `fork` is a process of its own); one that attached in a
/// loop took every one of the [`MAX_APPS`] places, and no other program could attach.
const MAX_PROCESS_APPS: usize = 16;
/// Most ports one application holds for bound sockets: past it `bind` fails with
/// `EADDRINUSE` (each takes a port of the engine's).
const MAX_APP_BINDINGS: usize = 1024;
/// Most ports all applications together hold for bound sockets (a quarter of the ephemeral
/// range): past it `bind` fails with `EADDRINUSE`, so that a few sessions cannot take every
/// port from the others' connections.
const MAX_BINDINGS: usize = 4096;
/// Most listeners one application holds: past it `listen` fails with `EMFILE` (each takes
/// a port of the engine's and an accept queue of up to 4096 connections). Listeners count
/// towards [`MAX_BINDINGS`] as well.
const MAX_APP_LISTENERS: usize = 64;
/// Most connections one process holds, over all its attaches: past it `connect` fails with
/// `ENOBUFS` and `accept` with `EMFILE` (the connection stays queued, as Linux's accept with
/// the descriptor table full). Each takes one of the engine's flows (4096 by default),
/// rings and a shared memory: a program that connected in a loop took every flow, and then
/// every other program's connections failed and every listener answered SYNs with a RST.
const MAX_PROCESS_CONNS: usize = 1024;

/// One attached application.
struct App {
    alive: AtomicBool,
    /// The program's process id (`SO_PEERCRED`; 0 where the kernel told none): its
    /// attaches share [`MAX_PROCESS_CONNS`].
    pid: i32,
    /// The program's process, as the kernel named it when it attached, if it held
    /// `CAP_NET_BIND_SERVICE` then ([`crate::peer`]).
    low_ports: Option<Peer>,
    events: OwnedFd,
    /// The service's end of the socket pair the program's event thread waits on.
    wake: OwnedFd,
    /// The eventfd the program writes to wake the pump: one per program, so that no
    /// program can take another's wake-ups. The program holds the same open file, whose
    /// `O_NONBLOCK` it can clear: the pump reads it with `RWF_NOWAIT` ([`shm::take_kicks`]);
    /// on kernels without that, the service's end of a datagram socket pair instead.
    /// (The other way, the service writes: there a socket pair, sent on with `MSG_DONTWAIT`
    /// and `MSG_NOSIGNAL`, since an eventfd's write could be made to block.)
    kick: OwnedFd,
    listeners: Mutex<HashMap<u32, Listening>>,
    /// Ports held for the application's bound sockets ([`op::BIND`]).
    bound: Mutex<HashMap<u32, BoundPort>>,
    conns: Mutex<HashMap<u32, Arc<Bridge>>>,
    next: AtomicU32,
}

/// One listener of an application, and what the application was last told of its queue.
struct Listening {
    l: Listener,
    /// The queue count last reported.
    told: u32,
    /// The number of the last report (the application keeps the highest).
    seq: u32,
}

impl Listening {
    /// Report the queue count now: `(count, report number)`.
    fn report(&mut self) -> (u32, u32) {
        self.told = self.l.pending() as u32;
        // 0 is no report (see the client's `note_pending`).
        self.seq = self.seq.wrapping_add(1).max(1);
        (self.told, self.seq)
    }
}

/// Take the hard limit on descriptors as the soft one: each attached program holds four
/// here, and [`MAX_APPS`] of them alone fill the usual soft limit of 1024.
fn raise_descriptor_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live `rlimit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 && lim.rlim_cur < lim.rlim_max
    {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above; failure leaves the limit as it was.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
}

/// A pair of connected Unix sockets of `kind`, nonblocking.
fn socket_pair(kind: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut ends = [0 as RawFd; 2];
    // SAFETY: `ends` has room for two descriptors.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            ends.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: our new descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) })
}

/// A pair of connected Unix datagram sockets for kicks, where eventfds cannot serve: the
/// service's end (receives only), the program's.
fn kick_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (ours, theirs) = socket_pair(libc::SOCK_DGRAM)?;
    // SAFETY: shutdown of a socket of ours takes no pointers.
    unsafe { crate::real::shutdown(ours.as_raw_fd(), libc::SHUT_WR) };
    Ok((ours, theirs))
}

/// A pair of connected Unix stream sockets for wake-ups ([`shm::nudge`], [`shm::drain`]):
/// a byte each, which a receive takes many of at once.
fn wake_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socket_pair(libc::SOCK_STREAM)
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: our new descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Run the service: the engine `cfg` describes, applications attaching at `path`. Returns
/// only on an error.
pub fn run(cfg: Config, path: &str) -> io::Result<()> {
    raise_descriptor_limit();
    let port = AnyPort::open(&cfg.spec)?;
    let engine = Engine::new(EngineConfig::new(cfg.spec.mac, cfg.ip), port)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let runtime = Runtime::spawn(engine, SystemClock::new())?;
    let (page_fd, page) = Mapping::create("flextoe-service", shm::PAGE)?;
    let pump = eventfd()?;
    let pump_raw = pump.as_raw_fd();
    let page_ptr = Arc::new(Mapping::map(page_fd.as_raw_fd(), shm::PAGE)?);
    // Applications read the page; none may write it.
    Mapping::seal_writes(page_fd.as_raw_fd())?;
    let ctx = Context::with_notify(
        1 << 16,
        Arc::new(move || {
            if page_ptr.word(shm::PAGE_PUMP_SLEEPS).load(Ordering::SeqCst) != 0 {
                shm::kick(pump_raw);
            }
        }),
    );
    let shared = Arc::new(Shared {
        host: runtime.host(),
        ctx,
        page,
        page_fd,
        pump,
        apps: Mutex::new(Vec::new()),
        admit: Mutex::new(()),
        attached: AtomicUsize::new(0),
        per_process: Mutex::new(HashMap::new()),
        kick_datagrams: !shm::eventfd_reads_without_waiting(),
    });
    let s2 = shared.clone();
    std::thread::Builder::new()
        .name("flextoe-pump".into())
        .spawn(move || pump_loop(&s2))?;

    // SAFETY: socket takes no pointers.
    let lfd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if lfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: our new descriptor.
    let listener = unsafe { OwnedFd::from_raw_fd(lfd) };
    let _ = std::fs::remove_file(path);
    // SAFETY: a zeroed sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if path.len() >= addr.sun_path.len() {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    for (d, s) in addr.sun_path.iter_mut().zip(path.as_bytes()) {
        *d = *s as libc::c_char;
    }
    // SAFETY: a sockaddr_un of the right size.
    let r = unsafe {
        crate::real::bind(
            lfd,
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    // Set before `listen`: the sockets it accepts take it over from the moment a program
    // connects (a program sending descriptors before the service's `accept` is refused too).
    refuse_descriptors(lfd);
    // SAFETY: listen takes no pointers.
    if r < 0 || unsafe { crate::real::listen(lfd, 64) } < 0 {
        return Err(io::Error::last_os_error());
    }
    eprintln!(
        "flextoe-serviced: engine {} on {}, applications attach at {path}",
        cfg.ip, cfg.spec.iface
    );
    let _runtime = runtime;
    loop {
        // SAFETY: accept without an address.
        let fd = unsafe {
            crate::real::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::ECONNABORTED) => continue,
                // Out of descriptors or memory for now: the applications already attached
                // keep being served; a new one waits.
                Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS)
                | Some(libc::ENOMEM) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                _ => return Err(e),
            }
        }
        // SAFETY: the accepted descriptor is ours.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // The process's place first, and nothing more (no thread, no place of all the
        // programs') for a process that holds its limit.
        let pid = crate::peer::peer_pid(sock.as_raw_fd());
        let Some(place) = ProcessPlace::take(&shared, pid) else {
            // Closed at once: the process's other attaches and every other program go on.
            continue;
        };
        if shared.attached.fetch_add(1, Ordering::SeqCst) >= MAX_APPS {
            // Closed at once: the application's attach fails, the others go on.
            shared.attached.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("flextoe-app".into())
            .spawn(move || {
                // Held while the attach is served, given back after.
                let _place = place;
                if let Err(e) = serve_app(&s, sock, pid) {
                    eprintln!("flextoe-serviced: an application: {e}");
                }
                s.attached.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            // No thread for it now (its socket went with the closure): the others go on.
            shared.attached.fetch_sub(1, Ordering::SeqCst);
            eprintln!("flextoe-serviced: no thread for an application: {e}");
        }
    }
}

/// One of a process's [`MAX_PROCESS_APPS`] places, held while its attach is served.
struct ProcessPlace {
    shared: Arc<Shared>,
    pid: i32,
}

impl ProcessPlace {
    /// A place for an attach of process `pid`, if it holds fewer than its limit (always
    /// where the kernel told no process: 0).
    fn take(shared: &Arc<Shared>, pid: i32) -> Option<Self> {
        if pid != 0 {
            let mut held = shared.per_process.lock().unwrap_or_else(|p| p.into_inner());
            let n = held.entry(pid).or_insert(0);
            if *n >= MAX_PROCESS_APPS {
                return None;
            }
            *n += 1;
        }
        Some(ProcessPlace {
            shared: shared.clone(),
            pid,
        })
    }
}

impl Drop for ProcessPlace {
    fn drop(&mut self) {
        if self.pid == 0 {
            return;
        }
        let mut held = self
            .shared
            .per_process
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.pid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.pid);
            }
        }
    }
}

/// Greet one application, then serve its requests until it goes away.
/// `pid`: the program's process ([`crate::peer::peer_pid`]).
fn serve_app(shared: &Arc<Shared>, sock: OwnedFd, pid: i32) -> io::Result<()> {
    refuse_descriptors(sock.as_raw_fd());
    // Asked first, before anything goes back to the program.
    let peer = Peer::of(sock.as_raw_fd());
    let low_ports = peer.filter(Peer::binds_low_ports);
    let mut pair = [0 as RawFd; 2];
    // SAFETY: `pair` has room for two descriptors.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the pair is ours.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    // SAFETY: F_SETFL on our descriptor.
    unsafe { libc::fcntl(ours.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    // Wake-ups to the program on a stream socket pair, whose receive takes many at once;
    // kicks of the pump on an eventfd (cheaper than a socket's send here: memcached
    // through the service ran about a fifth slower with kicks in datagrams).
    let (wake, their_wake) = wake_pair()?;
    let (kick, their_kick) = if shared.kick_datagrams {
        kick_pair()?
    } else {
        let kick = eventfd()?;
        let theirs = kick.try_clone()?;
        (kick, theirs)
    };
    // Each end one way only: what the program sends on the service's sending ends (its
    // own descriptors parked in a queue nobody reads, say) fails at once.
    for (fd, how) in [
        (ours.as_raw_fd(), libc::SHUT_RD),
        (wake.as_raw_fd(), libc::SHUT_RD),
    ] {
        // SAFETY: shutdown of a socket of ours takes no pointers.
        unsafe { crate::real::shutdown(fd, how) };
    }
    shm::send_msg(
        sock.as_raw_fd(),
        &Msg::default(),
        &[
            shared.page_fd.as_raw_fd(),
            their_kick.as_raw_fd(),
            their_wake.as_raw_fd(),
            theirs.as_raw_fd(),
        ],
    )?;
    drop((their_kick, their_wake));
    crate::client::debug(&format!(
        "app attached: request {}, events {}, wake {}",
        sock.as_raw_fd(),
        ours.as_raw_fd(),
        wake.as_raw_fd()
    ));
    drop(theirs);
    let app = Arc::new(App {
        alive: AtomicBool::new(true),
        pid,
        low_ports,
        events: ours,
        wake,
        kick,
        listeners: Mutex::new(HashMap::new()),
        bound: Mutex::new(HashMap::new()),
        conns: Mutex::new(HashMap::new()),
        next: AtomicU32::new(1),
    });
    shared
        .apps
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(app.clone());
    // The pump, asleep, watches the kicks of the programs it knew: it looks again.
    shm::kick(shared.pump.as_raw_fd());
    let result = requests(shared, &app, sock.as_raw_fd());
    // Gone (closed its socket, exited or crashed): what it had not closed is reset.
    app.alive.store(false, Ordering::SeqCst);
    app.listeners
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    app.bound.lock().unwrap_or_else(|p| p.into_inner()).clear();
    shm::kick(shared.pump.as_raw_fd());
    result
}

fn requests(shared: &Arc<Shared>, app: &Arc<App>, sock: RawFd) -> io::Result<()> {
    while let Some((m, _)) = shm::recv_msg(sock)? {
        let reply = |r: Result<(Msg, Option<RawFd>), i32>| -> io::Result<()> {
            match r {
                Ok((m, fd)) => shm::send_msg(sock, &m, fd.as_slice()),
                Err(e) => shm::send_msg(
                    sock,
                    &Msg {
                        err: e,
                        ..Msg::default()
                    },
                    &[],
                ),
            }
        };
        // A binding a listen or a connect names (`seq`, 0: none) is taken out of the table
        // whether the request then succeeds or not.
        let binding = |id: u32| {
            (id != 0).then(|| {
                app.bound
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id)
                    .ok_or(libc::EINVAL)
            })
        };
        match m.op {
            op::BIND => {
                let held = app.bound.lock().unwrap_or_else(|p| p.into_inner()).len();
                let r = match allowed_port(app, m.a) {
                    Ok(_) if held >= MAX_APP_BINDINGS || ports_held(shared) >= MAX_BINDINGS => {
                        Err(libc::EADDRINUSE)
                    }
                    Ok(port) => shared.host.bind(port).map_err(host_errno),
                    Err(e) => Err(e),
                };
                match r {
                    Ok(b) => {
                        let id = app.next.fetch_add(1, Ordering::Relaxed).max(1);
                        let port = b.port();
                        app.bound
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(id, b);
                        reply(Ok((id_and_port(id, port), None)))?;
                    }
                    Err(e) => reply(Err(e))?,
                }
            }
            op::UNBIND => {
                app.bound
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&m.a);
            }
            op::LISTEN => {
                let backlog = (m.b as usize).clamp(1, 4096);
                let held = app
                    .listeners
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .len();
                let r = match (binding(m.seq), allowed_port(app, m.a)) {
                    (Some(Err(e)), _) | (None, Err(e)) => Err(e),
                    _ if held >= MAX_APP_LISTENERS => Err(libc::EMFILE),
                    // A listener without a binding takes a port here: it counts as one.
                    (None, Ok(_)) if ports_held(shared) >= MAX_BINDINGS => Err(libc::EADDRINUSE),
                    (Some(Ok(b)), _) => b.listen(backlog).map_err(host_errno),
                    (None, Ok(port)) => shared
                        .host
                        .bind(port)
                        .and_then(|b| b.listen(backlog))
                        .map_err(host_errno),
                };
                match r {
                    Ok(l) => {
                        let id = app.next.fetch_add(1, Ordering::Relaxed);
                        let _ = l.register(&shared.ctx, 0);
                        let port = l.port();
                        app.listeners
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(id, Listening { l, told: 0, seq: 0 });
                        reply(Ok((id_and_port(id, port), None)))?;
                    }
                    Err(e) => reply(Err(e))?,
                }
            }
            op::UNLISTEN => {
                app.listeners
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&m.a);
            }
            op::ACCEPT => {
                // Take one, and report how many stay queued: the reply tells the application,
                // and the pump tells it again only when that number changes.
                // Only a connection that is there is counted against the process's limit
                // and given a shared memory (made before it is taken, so that a failure
                // leaves it queued), outside the listeners' lock that the pump takes too;
                // `admit` keeps the count and the insert together.
                let queued = {
                    let ls = app.listeners.lock().unwrap_or_else(|p| p.into_inner());
                    ls.get(&m.a).map(|ls| (ls.l.pending(), ls.l.engine_gone()))
                };
                let prepared = match queued {
                    None => Err(libc::EINVAL),
                    Some((_, true)) => Err(libc::ECONNABORTED),
                    Some((0, false)) => Err(libc::EAGAIN),
                    Some(_) => Ok(()),
                };
                // `admit` only where a connection is there to take.
                let admit = prepared
                    .is_ok()
                    .then(|| shared.admit.lock().unwrap_or_else(|p| p.into_inner()));
                let prepared = prepared.and_then(|()| {
                    if over_conn_limit(shared, app) {
                        return Err(libc::EMFILE);
                    }
                    new_mapping().map_err(|e| e.raw_os_error().unwrap_or(libc::ENOMEM))
                });
                let (r, left, seq) = match app
                    .listeners
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&m.a)
                {
                    Some(ls) => {
                        let r = prepared.and_then(|mem| match ls.l.try_accept() {
                            Ok(Some(s)) => Ok((s, mem)),
                            Ok(None) => Err(libc::EAGAIN),
                            Err(_) => Err(libc::ECONNABORTED),
                        });
                        let (left, seq) = ls.report();
                        (r, left, seq)
                    }
                    None => (Err(libc::EINVAL), 0, 0),
                };
                let r = r.map(|(s, mem)| bridge(shared, app, s, mem));
                drop(admit);
                match r {
                    Ok((id, fd)) => shm::send_msg(
                        sock,
                        &Msg {
                            a: id,
                            b: left,
                            seq,
                            ..Msg::default()
                        },
                        &[fd.as_raw_fd()],
                    )?,
                    Err(err) => shm::send_msg(
                        sock,
                        &Msg {
                            err,
                            b: left,
                            seq,
                            ..Msg::default()
                        },
                        &[],
                    )?,
                }
            }
            op::CONNECT => {
                // The binding named is taken first: a request refused here gives its port
                // back (as a failed connect does), rather than leaving it held.
                let bound = binding(m.seq);
                let Ok(port) = u16::try_from(m.b) else {
                    reply(Err(libc::EINVAL))?;
                    continue;
                };
                let to = std::net::SocketAddrV4::new(m.a.into(), port);
                // `admit` keeps the count and the insert together; no reply is sent under
                // it (a program that reads no replies must not hold up the others).
                let r = {
                    let _admit = shared.admit.lock().unwrap_or_else(|p| p.into_inner());
                    match bound {
                        Some(Err(e)) => Err(e),
                        _ if over_conn_limit(shared, app) => Err(libc::ENOBUFS),
                        // The shared memory first: where it cannot be made, no connection
                        // starts.
                        _ => match new_mapping() {
                            Err(e) => Err(e.raw_os_error().unwrap_or(libc::ENOMEM)),
                            Ok(mem) => match bound {
                                Some(Ok(b)) => b.connect(to),
                                _ => shared.host.connect(to),
                            }
                            .map(|s| bridge(shared, app, s, mem))
                            .map_err(host_errno),
                        },
                    }
                };
                match r {
                    Ok((id, fd)) => reply(Ok((
                        Msg {
                            a: id,
                            ..Msg::default()
                        },
                        Some(fd.as_raw_fd()),
                    )))?,
                    Err(e) => reply(Err(e))?,
                }
            }
            op::KEEPALIVE => {
                if let Some(b) = app
                    .conns
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&m.a)
                {
                    if let Some(s) = &*b.stream.lock().unwrap_or_else(|p| p.into_inner()) {
                        s.set_keepalive(shm::keepalive_from_msg(m.b, m.seq));
                    }
                }
            }
            _ => return Err(io::ErrorKind::InvalidData.into()),
        }
    }
    Ok(())
}

/// A reply naming a new binding or listener and its port.
fn id_and_port(id: u32, port: u16) -> Msg {
    Msg {
        a: id,
        b: u32::from(port),
        ..Msg::default()
    }
}

/// The port a bind or listen request names, if the application may have it: as the
/// kernel's bind, a port below the namespace's unprivileged start needs
/// `CAP_NET_BIND_SERVICE`, held at attach and still now.
fn allowed_port(app: &App, port: u32) -> Result<u16, i32> {
    let port = u16::try_from(port).map_err(|_| libc::EINVAL)?;
    if port != 0
        && u32::from(port) < crate::peer::unprivileged_port_start()
        && !app.low_ports.as_ref().is_some_and(Peer::binds_low_ports)
    {
        return Err(libc::EACCES);
    }
    Ok(port)
}

/// `SO_PASSRIGHTS` (Linux 6.16): whether a socket takes descriptors passed to it. 83 but on
/// sparc, which numbers it apart (and parisc, no Rust target): there none is set.
const SO_PASSRIGHTS: Option<libc::c_int> =
    if cfg!(any(target_arch = "sparc", target_arch = "sparc64")) {
        None
    } else {
        Some(83)
    };

/// Have the kernel refuse descriptors sent on the request socket `fd` (the sender's
/// `sendmsg` fails with `EPERM`): the protocol passes none this way, and the service closing
/// one it was sent could block its thread for good (the last reference to a socket lingering
/// on unsent data, or to a file whose flush is never answered), its application's cleanup
/// with it. Kernels before 6.16 have no such option: descriptors that arrive there are
/// closed after the request, as before.
fn refuse_descriptors(fd: RawFd) {
    let Some(opt) = SO_PASSRIGHTS else {
        return;
    };
    let off: libc::c_int = 0;
    // SAFETY: `off` is a live `c_int` of the size the kernel is told.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&off as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Ports the applications hold: their bound sockets' and their listeners'.
fn ports_held(shared: &Shared) -> usize {
    shared
        .apps
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|a| {
            a.bound.lock().unwrap_or_else(|p| p.into_inner()).len()
                + a.listeners.lock().unwrap_or_else(|p| p.into_inner()).len()
        })
        .sum()
}

/// Whether `app`'s process holds as many connections as it may, over all its attaches (by
/// `app` alone where its process id is unknown): [`MAX_PROCESS_CONNS`] it has not closed, or
/// twice that with the ones it closed that still send (a closed socket no longer counts
/// for Linux either; the second bound keeps those from piling up past the engine's flows).
fn over_conn_limit(shared: &Shared, app: &Arc<App>) -> bool {
    let count = |a: &App| {
        let conns = a.conns.lock().unwrap_or_else(|p| p.into_inner());
        let closed = conns.values().filter(|b| b.app_closed()).count();
        (conns.len() - closed, conns.len())
    };
    let (open, all) = if app.pid == 0 {
        count(app)
    } else {
        // The process's attaches first: the pump takes the list on every pass, and the
        // count reads a header per connection.
        let mine: Vec<Arc<App>> = shared
            .apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|a| a.pid == app.pid && a.alive.load(Ordering::Relaxed))
            .cloned()
            .collect();
        mine.iter()
            .map(|a| count(a))
            .fold((0, 0), |(o, t), (a, b)| (o + a, t + b))
    };
    open >= MAX_PROCESS_CONNS || all >= 2 * MAX_PROCESS_CONNS
}

fn host_errno(e: flextoe::host::Error) -> i32 {
    crate::calls::errno_of(&io::Error::from(e))
}
