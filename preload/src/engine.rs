//! The engine inside the application's process, started on the first engine socket, and
//! the one wake-up that every waiting call sleeps on.
//!
//! Configuration comes from the environment:
//!
//! | variable          | meaning                                                     |
//! |-------------------|-------------------------------------------------------------|
//! | `FLEXTOE_IP`      | the engine's IPv4 address (without it, nothing is intercepted) |
//! | `FLEXTOE_IFACE`   | the interface (veth end, NIC, TAP device) the engine opens   |
//! | `FLEXTOE_BACKEND` | `af_packet` (default), `af_xdp`, `tap`, or `dpdk` (feature `dpdk`; `FLEXTOE_IFACE` is then the port's devargs, `net_af_packet0,iface=veth1`) |
//! | `FLEXTOE_DPDK_ARGS` | DPDK's EAL arguments (default: no hugepages, no PCI, 512 MiB) |
//! | `FLEXTOE_MAC`     | the engine's MAC (default: the interface's own)              |
//! | `FLEXTOE_PREFIX`  | the engine's subnet length (default 24): `connect` to an address inside it goes to the engine |
//! | `FLEXTOE_MODE`    | `inprocess` (default) or `service` (attach to `flextoe-serviced`) |
//! | `FLEXTOE_SERVICE` | the service's Unix socket (default `/run/flextoe.sock`)      |
//! | `FLEXTOE_DEBUG`   | set: print the service connection's failures on stderr       |

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use flextoe::backends::any::{AnyPort, BackendKind, PortSpec};
use flextoe::host::{Context, Error as HostError, Host};
use flextoe::pipeline::{Engine, EngineConfig, Runtime};
use flextoe::time::SystemClock;
use flextoe::wire::MacAddr;

use crate::conn::{Bound, Conn, Listen};
use crate::real;

/// What the environment asked for.
#[derive(Clone, Debug)]
pub struct Config {
    /// The engine's address.
    pub ip: Ipv4Addr,
    /// Its subnet length.
    pub prefix: u8,
    /// The service's Unix socket, in service mode.
    pub service: Option<String>,
    /// The port to open.
    pub spec: PortSpec,
}

impl Config {
    /// Read the environment; `None` when `FLEXTOE_IP` is unset (nothing is intercepted).
    pub fn from_env() -> Result<Option<Config>, String> {
        let Ok(ip) = std::env::var("FLEXTOE_IP") else {
            return Ok(None);
        };
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("FLEXTOE_IP {ip:?}: {e}"))?;
        let service = match std::env::var("FLEXTOE_MODE").as_deref() {
            Err(_) | Ok("inprocess") => None,
            Ok("service") => Some(
                std::env::var("FLEXTOE_SERVICE").unwrap_or_else(|_| DEFAULT_SERVICE.to_string()),
            ),
            Ok(m) => return Err(format!("FLEXTOE_MODE {m:?}: inprocess or service")),
        };
        let iface = match (&service, std::env::var("FLEXTOE_IFACE")) {
            (_, Ok(i)) => i,
            (Some(_), Err(_)) => String::new(),
            (None, Err(_)) => return Err("FLEXTOE_IFACE is unset".to_string()),
        };
        let kind = match std::env::var("FLEXTOE_BACKEND").as_deref() {
            Err(_) | Ok("af_packet") => BackendKind::AfPacket,
            Ok("af_xdp") => BackendKind::AfXdp,
            Ok("tap") => BackendKind::Tap,
            Ok("dpdk") => BackendKind::Dpdk,
            Ok(b) => {
                return Err(format!(
                    "FLEXTOE_BACKEND {b:?}: af_packet, af_xdp, tap or dpdk"
                ))
            }
        };
        // DPDK names its port by devargs (`net_af_packet0,iface=veth1`): the interface for
        // the default MAC is the one `iface=` names.
        let mac_iface = iface
            .split(',')
            .find_map(|kv| kv.strip_prefix("iface="))
            .unwrap_or(&iface)
            .to_string();
        let dpdk_args = std::env::var("FLEXTOE_DPDK_ARGS").unwrap_or_else(|_| {
            format!(
                "--no-huge -m 512 --no-pci --no-shconf --no-telemetry \
                 --file-prefix=flextoe{} --log-level=*:warning",
                std::process::id()
            )
        });
        let mac = match std::env::var("FLEXTOE_MAC") {
            Ok(m) => parse_mac(&m).ok_or(format!("FLEXTOE_MAC {m:?}"))?,
            Err(_) if service.is_some() => MacAddr([0; 6]),
            Err(_) => {
                let path = format!("/sys/class/net/{mac_iface}/address");
                let m = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
                parse_mac(m.trim()).ok_or(format!("{path}: {m:?}"))?
            }
        };
        let prefix = match std::env::var("FLEXTOE_PREFIX") {
            Ok(p) => p
                .parse()
                .ok()
                .filter(|p| *p <= 32)
                .ok_or(format!("FLEXTOE_PREFIX {p:?}"))?,
            Err(_) => 24,
        };
        Ok(Some(Config {
            ip,
            prefix,
            service,
            spec: PortSpec {
                kind,
                iface,
                netns: None,
                mac,
                ip,
                dpdk_args,
                queues: 1,
            },
        }))
    }

    /// Whether a connection to `to` goes through the engine: TCP over IPv4 to the engine's
    /// subnet, not to the engine's own address.
    pub fn routes(&self, to: SocketAddrV4) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        };
        let (a, b) = (u32::from(*to.ip()), u32::from(self.ip));
        a != b && a & mask == b & mask
    }

    /// Whether a bind to `ip` takes the engine's address: the address itself or any.
    pub fn binds(&self, ip: Ipv4Addr) -> bool {
        ip == self.ip || ip.is_unspecified()
    }
}

fn parse_mac(s: &str) -> Option<MacAddr> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(MacAddr(m))
}

/// Where `FLEXTOE_SERVICE` points by default.
pub const DEFAULT_SERVICE: &str = "/run/flextoe.sock";

/// The engine of this process: its own, or the service's.
pub struct Stack {
    /// What it was started with.
    pub cfg: Config,
    /// Which.
    pub mode: Mode,
}

/// In-process or service.
pub enum Mode {
    /// The engine runs on a thread of this process.
    InProcess {
        /// Its socket API.
        host: Host,
        /// The context every engine socket is registered with (token: the descriptor).
        ctx: Context,
        /// The engine's thread.
        runtime: Mutex<Runtime<AnyPort>>,
    },
    /// The engine service, attached over its Unix socket.
    Service(Arc<crate::client::Client>),
}

impl Stack {
    /// Hold `port` (0: a free one of the ephemeral range) for a bound socket.
    pub fn bind(&self, port: u16) -> Result<Bound, i32> {
        match &self.mode {
            Mode::Service(c) => c.bind(port).map(Bound::Remote),
            Mode::InProcess { host, .. } => host.bind(port).map(Bound::Local).map_err(host_errno),
        }
    }

    /// Listen on `bound`'s port, or on `port` without one (0: a free one); `token` names
    /// the listener in events.
    pub fn listen(
        &self,
        bound: Option<Bound>,
        port: u16,
        backlog: usize,
        token: u64,
    ) -> Result<Listen, i32> {
        let bound = match bound {
            Some(b) => b,
            None => self.bind(port)?,
        };
        match (&self.mode, bound) {
            (Mode::InProcess { ctx, .. }, Bound::Local(b)) => {
                let l = b.listen(backlog).map_err(host_errno)?;
                l.register(ctx, token).map_err(host_errno)?;
                Ok(Listen::Local(l))
            }
            (Mode::Service(c), Bound::Remote(b)) => {
                c.listen(b.port, backlog, Some(b)).map(Listen::Remote)
            }
            _ => Err(libc::EINVAL),
        }
    }

    /// Connect to `to`, from `bound`'s port if given; `token` names the connection in
    /// events.
    pub fn connect(&self, bound: Option<Bound>, to: SocketAddrV4, token: u64) -> Result<Conn, i32> {
        match &self.mode {
            Mode::Service(c) => {
                let b = match bound {
                    Some(Bound::Remote(b)) => Some(b),
                    Some(Bound::Local(_)) => return Err(libc::EINVAL),
                    None => None,
                };
                c.connect(to, b).map(Conn::Remote)
            }
            Mode::InProcess { host, ctx, .. } => {
                let r = match bound {
                    Some(Bound::Local(b)) => b.connect(to),
                    Some(Bound::Remote(_)) => return Err(libc::EINVAL),
                    None => host.connect(to),
                };
                let mut s = r.map_err(host_errno)?;
                s.set_nonblocking(true);
                s.register(ctx, token).map_err(host_errno)?;
                Ok(Conn::Local(s))
            }
        }
    }

    /// Take in an accepted connection under `token`.
    pub fn adopt(&self, conn: &mut Conn, token: u64) -> Result<(), i32> {
        if let (Conn::Local(s), Mode::InProcess { ctx, .. }) = (conn, &self.mode) {
            s.set_nonblocking(true);
            s.register(ctx, token).map_err(host_errno)?;
        }
        Ok(())
    }
}

fn host_errno(e: HostError) -> i32 {
    crate::calls::errno_of(&std::io::Error::from(e))
}

static STACK: OnceLock<Option<Stack>> = OnceLock::new();

/// Set in a child after `fork`: the engine's threads stayed in the parent.
static FORKED: AtomicBool = AtomicBool::new(false);

/// The process that started the engine.
static ENGINE_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Whether this is a child of `vfork` (or `posix_spawn`, or `clone(CLONE_VM)`): it runs on
/// the parent's memory, the engine's tables included, until it calls `exec`, but its
/// descriptors are its own. Its closes must leave the parent's engine sockets alone. (A
/// system call: asked only where an engine socket is at stake.)
pub fn in_vfork_child() -> bool {
    let pid = ENGINE_PID.load(Ordering::Relaxed);
    // SAFETY: getpid takes no arguments.
    pid != 0 && unsafe { libc::getpid() } != pid
}

extern "C" fn in_child() {
    FORKED.store(true, Ordering::SeqCst);
    // The service's sockets stay the parent's: a child that kept them would keep its
    // session alive after the parent died (its connections never reset).
    if let Some(Some(Stack {
        mode: Mode::Service(c),
        ..
    })) = STACK.get()
    {
        c.leave_in_child();
    }
    crate::sock::forget_all();
    crate::events::forget_all();
}

/// The engine, started on first use; `None` when the environment asks for none or it could
/// not start (the reason is printed once on stderr), and in a forked child.
pub fn stack() -> Option<&'static Stack> {
    if FORKED.load(Ordering::Relaxed) {
        return None;
    }
    STACK
        .get_or_init(|| match Config::from_env() {
            Ok(None) => None,
            Ok(Some(cfg)) => match start(cfg) {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("flextoe-preload: engine not started: {e}");
                    None
                }
            },
            Err(e) => {
                eprintln!("flextoe-preload: {e}");
                None
            }
        })
        .as_ref()
}

/// The engine if it was started already (a call on a descriptor the engine cannot own
/// does not start it).
pub fn started() -> Option<&'static Stack> {
    if FORKED.load(Ordering::Relaxed) {
        return None;
    }
    STACK.get().and_then(|s| s.as_ref())
}

/// Whether the environment names an engine (cheap; does not start it).
pub fn configured() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FLEXTOE_IP").is_some())
}

fn start(cfg: Config) -> Result<Stack, String> {
    // SAFETY: getpid takes no arguments.
    ENGINE_PID.store(unsafe { libc::getpid() }, Ordering::Relaxed);
    // SAFETY: registers a handler that only stores to atomics and forgets the table.
    unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    if let Some(path) = &cfg.service {
        let client =
            crate::client::Client::attach(path).map_err(|e| format!("service at {path}: {e}"))?;
        // SAFETY: registers a handler that closes what the program left open.
        unsafe { libc::atexit(crate::linger::at_exit) };
        return Ok(Stack {
            cfg,
            mode: Mode::Service(client),
        });
    }
    let port = AnyPort::open(&cfg.spec)
        .map_err(|e| format!("{:?} on {}: {e}", cfg.spec.kind, cfg.spec.iface))?;
    let engine =
        Engine::new(EngineConfig::new(cfg.spec.mac, cfg.ip), port).map_err(|e| e.to_string())?;
    // The engine's threads take none of the program's signals.
    let runtime = crate::signals::quiet(|| Runtime::spawn(engine, SystemClock::new()))
        .map_err(|e| e.to_string())?;
    let host = runtime.host();
    // SAFETY: registers a handler that waits (bounded) for closed connections.
    unsafe { libc::atexit(crate::linger::at_exit) };
    let ctx = Context::with_notify(1 << 16, Arc::new(notify));
    Ok(Stack {
        cfg,
        mode: Mode::InProcess {
            host,
            ctx,
            runtime: Mutex::new(runtime),
        },
    })
}

/// Engine events so far; a waiter sleeps until this moves.
static EPOCH: AtomicU64 = AtomicU64::new(0);
/// Threads inside [`Sleep::wait`] or a mixed wait.
static SLEEPERS: AtomicUsize = AtomicUsize::new(0);
static LOCK: Mutex<()> = Mutex::new(());
static CV: Condvar = Condvar::new();

/// Eventfds of waiters sleeping in the kernel (poll on a thread's own, epoll on its set's),
/// with how many waiters sleep on each.
static ARMED: Mutex<Vec<(i32, usize)>> = Mutex::new(Vec::new());

/// Run by the engine after every event it posts (in service mode: by the thread that
/// hears the service).
pub fn notify() {
    EPOCH.fetch_add(1, Ordering::SeqCst);
    if SLEEPERS.load(Ordering::SeqCst) > 0 {
        drop(LOCK.lock().unwrap_or_else(|p| p.into_inner()));
        CV.notify_all();
        let armed = ARMED.lock().unwrap_or_else(|p| p.into_inner());
        for &(fd, _) in armed.iter() {
            // One write until the waiter drains it: later events find it readable already.
            if !signaled(fd).is_some_and(|f| f.swap(true, Ordering::AcqRel)) {
                signal(fd);
            }
        }
    }
}

/// Per eventfd below 65536: written and not yet drained.
static SIGNALED: [AtomicBool; 65536] = [const { AtomicBool::new(false) }; 65536];

fn signaled(fd: i32) -> Option<&'static AtomicBool> {
    usize::try_from(fd).ok().and_then(|i| SIGNALED.get(i))
}

/// Make the eventfd `fd` readable.
fn signal(fd: i32) {
    let one = 1u64;
    // SAFETY: an 8-byte write to one of our eventfds.
    unsafe { real::write(fd, (&one as *const u64).cast(), 8) };
}

/// A new nonblocking eventfd (for a thread's polls or an epoll set); -1 on failure.
pub fn new_event_fd() -> i32 {
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    // A reused descriptor number starts unsignaled.
    if let Some(f) = signaled(fd) {
        f.store(false, Ordering::Release);
    }
    fd
}

/// This thread's eventfd for `poll` and `select` waits.
pub fn thread_event_fd() -> i32 {
    struct Fd(i32);
    impl Drop for Fd {
        fn drop(&mut self) {
            if self.0 >= 0 {
                // SAFETY: our own eventfd, closed once when the thread ends.
                unsafe { real::close(self.0) };
            }
        }
    }
    thread_local! {
        static FD: Fd = Fd(new_event_fd());
    }
    FD.with(|f| f.0)
}

/// Empty the eventfd `fd` after a wait woke on it.
pub fn drain_event_fd(fd: i32) {
    let mut v = 0u64;
    // SAFETY: an 8-byte read into `v` from one of our nonblocking eventfds.
    unsafe { real::read(fd, (&mut v as *mut u64).cast(), 8) };
    // After the read: a notify between the two finds the flag still set and does not write,
    // but the waiter looks at readiness again after this anyway.
    if let Some(f) = signaled(fd) {
        f.store(false, Ordering::Release);
    }
}

/// A registration as a sleeper: the epoch seen before the caller's last readiness check.
pub struct Sleep {
    /// The epoch when the registration was made.
    pub epoch: u64,
    /// The eventfd the sleeper waits on in the kernel, if any.
    fd: i32,
}

impl Sleep {
    /// Register; the caller checks readiness after this and sleeps only if nothing is ready.
    pub fn enter() -> Sleep {
        Self::enter_fd(-1)
    }

    /// [`enter`](Self::enter) for a wait in the kernel on the eventfd `fd`, which engine
    /// events make readable until the registration ends.
    pub fn enter_fd(fd: i32) -> Sleep {
        if fd >= 0 {
            let mut armed = ARMED.lock().unwrap_or_else(|p| p.into_inner());
            match armed.iter_mut().find(|(f, _)| *f == fd) {
                Some((_, n)) => *n += 1,
                None => armed.push((fd, 1)),
            }
        }
        SLEEPERS.fetch_add(1, Ordering::SeqCst);
        Sleep {
            epoch: EPOCH.load(Ordering::SeqCst),
            fd,
        }
    }

    /// Whether an event came since the registration.
    pub fn moved(&self) -> bool {
        EPOCH.load(Ordering::SeqCst) != self.epoch
    }

    /// Sleep until an engine event or `deadline` (at most a slice: a missed wake-up costs
    /// no more than that).
    pub fn wait(&self, deadline: Option<Instant>) {
        let mut slice = Duration::from_millis(50);
        if let Some(d) = deadline {
            slice = slice.min(d.saturating_duration_since(Instant::now()));
        }
        let g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        if !self.moved() && !slice.is_zero() {
            let _ = CV.wait_timeout(g, slice);
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        SLEEPERS.fetch_sub(1, Ordering::SeqCst);
        if self.fd >= 0 {
            let mut armed = ARMED.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = armed.iter().position(|(f, _)| *f == self.fd) {
                armed[i].1 -= 1;
                if armed[i].1 == 0 {
                    armed.swap_remove(i);
                }
            }
        }
    }
}
