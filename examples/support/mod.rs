//! What the example servers share: the command line that picks a backend, and either
//! runtime behind one interface.

#![allow(dead_code)]

pub mod firewall;
pub mod kv;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use flextoe::backends::pcap::PcapPort;
use flextoe::backends::Port;
use flextoe::host::{Host, Stream};
use flextoe::pipeline::{EngineConfig, HookReport, Pipeline, Runtime, Threaded, Topology};
use flextoe::time::SystemClock;
use flextoe::wire::MacAddr;

/// Where frames come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// In-memory link, with a built-in client on the other end.
    Mem,
    /// TAP device (feature `tap`).
    Tap,
    /// AF_PACKET socket on an interface (feature `af_packet`).
    AfPacket,
    /// AF_XDP socket on an interface, with the crate's XDP program (feature `af_xdp`).
    AfXdp,
    /// A DPDK port, any PMD (feature `dpdk`): EAL arguments from `--dpdk-args`, the device
    /// from `--iface` (a port name, or devargs to probe) or the first `--vdev` there.
    Dpdk,
}

/// Backend, interface, address, port and cores.
#[derive(Args, Debug, Clone)]
pub struct NetArgs {
    /// Where frames come from.
    #[arg(long, value_enum, default_value = "mem")]
    pub backend: Backend,
    /// Interface (TAP device or veth / NIC) for tap, af-packet and af-xdp; for dpdk, the
    /// port's name or devargs to probe.
    #[arg(long)]
    pub iface: Option<String>,
    /// DPDK EAL arguments for `--backend dpdk`, as one string.
    #[arg(
        long,
        allow_hyphen_values = true,
        default_value = "--no-huge -m 512 --no-pci --no-shconf --no-telemetry"
    )]
    pub dpdk_args: String,
    /// Network namespace to open the interface in (as made by `ip netns add`).
    #[arg(long)]
    pub netns: Option<String>,
    /// Receive queues of the port (af-packet: sockets in a fanout group; af-xdp: sockets on
    /// the device's queues, as many as it has; dpdk: queue pairs, `qpairs=` as many for
    /// net_af_packet; tap: 1). The inline runtime (`--cores 0`) reads them in turn; the
    /// threaded one feeds each preprocess replica from its own queue only where its topology
    /// (`Topology::x86(cores)`) has as many replicas as the port has queues (two with
    /// `--cores 2`), else it reads them in turn too.
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
    /// The engine's IPv4 address.
    #[arg(long, default_value = "10.82.0.2")]
    pub ip: Ipv4Addr,
    /// The engine's MAC address.
    #[arg(long, default_value = "02:66:74:6f:65:01", value_parser = parse_mac)]
    pub mac: MacAddr,
    /// TCP port.
    #[arg(long)]
    pub port: Option<u16>,
    /// 0: inline runtime on one thread; N: threaded runtime with N workers.
    #[arg(long, default_value_t = 0)]
    pub cores: usize,
    /// Write every frame the engine receives and sends to this pcap file.
    #[arg(long)]
    pub pcap: Option<std::path::PathBuf>,
    /// Drop TCP frames to this local port (a firewall stage at the `rx_frame` hook point;
    /// repeat for more ports).
    #[arg(long)]
    pub deny: Vec<u16>,
}

impl NetArgs {
    /// `port`, capturing into `--pcap` when given.
    pub fn capture<P: Port>(&self, port: P) -> PcapPort<P> {
        PcapPort::maybe(port, self.pcap.as_deref()).unwrap_or_else(|e| {
            eprintln!("--pcap: {e}");
            std::process::exit(1);
        })
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<MacAddr, String> {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).map_err(|e| format!("bad MAC {s}: {e}")))
        .collect::<Result<_, _>>()?;
    let a: [u8; 6] = v.try_into().map_err(|_| format!("bad MAC {s}"))?;
    Ok(MacAddr(a))
}

/// Either runtime, behind one interface.
pub enum Running<P: Port + 'static> {
    Inline(Runtime<P>),
    Threaded(Threaded),
}

impl<P: Port + 'static> Running<P> {
    /// The default pipeline, plus a firewall stage when `deny` names ports.
    pub fn start(cfg: EngineConfig, port: P, cores: usize, deny: &[u16]) -> Self {
        let clock = SystemClock::new();
        let mut b = Pipeline::builder(cfg, port);
        if !deny.is_empty() {
            b = b.on_rx_frame(firewall::Firewall {
                deny: deny.to_vec(),
            });
        }
        if cores == 0 {
            Running::Inline(Runtime::spawn(b.build().expect("engine"), clock).expect("runtime"))
        } else {
            Running::Threaded(b.threaded(Topology::x86(cores), clock).expect("runtime"))
        }
    }

    /// The user stages' counters, as last published.
    pub fn hooks(&self) -> Vec<HookReport> {
        match self {
            Running::Inline(r) => r.stats().hooks,
            Running::Threaded(t) => t.stats().hooks(),
        }
    }

    /// A short line of every user stage's counters (for the live line).
    pub fn hooks_line(&self) -> String {
        self.hooks()
            .iter()
            .map(|h| {
                format!(
                    "  {}: in {} dropped {}",
                    h.name,
                    h.stats.items_in,
                    h.drops_total()
                )
            })
            .collect()
    }

    pub fn host(&self) -> Host {
        match self {
            Running::Inline(r) => r.host(),
            Running::Threaded(t) => t.host(),
        }
    }

    /// Stop and return the final counters as text.
    pub fn stop(self) -> String {
        match self {
            Running::Inline(r) => r.stop().stats().to_string(),
            Running::Threaded(t) => t.stop().to_string(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Running::Inline(_) => "inline runtime".to_string(),
            Running::Threaded(_) => "threaded runtime".to_string(),
        }
    }
}

/// Open the Linux port `args` names (not `mem`), or exit with the reason.
#[cfg(any(
    feature = "tap",
    feature = "af_packet",
    feature = "af_xdp",
    feature = "dpdk"
))]
pub fn open_linux_port(args: &NetArgs) -> flextoe::backends::any::AnyPort {
    use flextoe::backends::any::{AnyPort, BackendKind, PortSpec};
    let kind = match args.backend {
        Backend::Tap => BackendKind::Tap,
        Backend::AfPacket => BackendKind::AfPacket,
        Backend::AfXdp => BackendKind::AfXdp,
        Backend::Dpdk => BackendKind::Dpdk,
        Backend::Mem => unreachable!("mem is not a Linux port"),
    };
    // DPDK: the first `--vdev` of the EAL arguments names the port when --iface does not.
    let first_vdev = args
        .dpdk_args
        .split_whitespace()
        .find_map(|a| a.strip_prefix("--vdev="))
        .map(|v| v.split(',').next().unwrap_or(v).to_string());
    let iface = args.iface.clone().or(if args.backend == Backend::Dpdk {
        first_vdev
    } else {
        None
    });
    let Some(iface) = iface else {
        eprintln!("--iface is required for {:?}", args.backend);
        std::process::exit(2);
    };
    let spec = PortSpec {
        kind,
        iface,
        netns: args.netns.clone(),
        mac: args.mac,
        ip: args.ip,
        dpdk_args: args.dpdk_args.clone(),
        queues: args.queues,
    };
    match AnyPort::open(&spec) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("opening {:?} on {}: {e}", args.backend, spec.iface);
            std::process::exit(1);
        }
    }
}

/// Built without any Linux backend: say so and exit.
#[cfg(not(any(
    feature = "tap",
    feature = "af_packet",
    feature = "af_xdp",
    feature = "dpdk"
)))]
pub fn open_linux_port(args: &NetArgs) -> flextoe::backends::mem::MemPort {
    eprintln!(
        "{:?} needs a build with its feature (--features tap, af_packet or af_xdp)",
        args.backend
    );
    std::process::exit(2);
}

/// A client run on its own thread next to the server (the `mem` backend's built-in load);
/// it sets the stop flag when done.
pub type BuiltinClient = Box<dyn FnOnce(Arc<AtomicBool>) + Send>;

/// What [`serve`] runs.
pub struct Server<'a> {
    /// Shown at start.
    pub name: &'a str,
    pub net: &'a NetArgs,
    pub tcp_port: u16,
    /// Set by Ctrl-C or the built-in client.
    pub stop: Arc<AtomicBool>,
    pub client: Option<BuiltinClient>,
}

/// Start the engine on `port`, listen on `tcp_port`, and hand every connection to
/// `on_conn` until `stop` is set, printing `status(seconds since the last line)` once a
/// second. Prints the engine's final counters after stopping.
pub fn serve<P: Port + 'static>(
    server: Server<'_>,
    cfg: EngineConfig,
    port: P,
    mut on_conn: impl FnMut(Stream),
    mut status: impl FnMut(f64) -> String,
) {
    let Server {
        name,
        net,
        tcp_port,
        stop,
        client,
    } = server;
    let running = Running::start(cfg, port, net.cores, &net.deny);
    let listener = running.host().listen(tcp_port, 1024).expect("listen");
    eprintln!(
        "{name} on {}:{} ({:?}, {}, {} workers)",
        net.ip,
        tcp_port,
        net.backend,
        running.describe(),
        net.cores
    );
    let client = client.map(|c| {
        let s = stop.clone();
        std::thread::spawn(move || c(s))
    });
    let mut last = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Ok(Some(s)) = listener.accept_timeout(Duration::from_millis(100)) {
            on_conn(s);
        }
        if last.elapsed() >= Duration::from_secs(1) {
            let line = status(last.elapsed().as_secs_f64());
            eprint!("\r{line}{}   ", running.hooks_line());
            last = std::time::Instant::now();
        }
    }
    if let Some(c) = client {
        let _ = c.join();
    }
    eprintln!("\nstopping");
    println!("{}", running.stop());
}

/// A flag that Ctrl-C sets.
pub fn ctrl_c_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::Relaxed)).expect("Ctrl-C handler");
    stop
}
