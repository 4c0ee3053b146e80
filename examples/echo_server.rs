//! An echo server on the engine, on any backend.
//!
//! ```text
//! # In-memory link with a built-in client (no privileges needed):
//! cargo run --release --example echo_server -- --backend mem
//! # On a TAP device or a veth end inside a network namespace (root, features):
//! cargo run --release --features tap --example echo_server -- \
//!     --backend tap --iface tap0 --netns lab --ip 10.82.0.2 --port 7
//! cargo run --release --features af_packet --example echo_server -- \
//!     --backend af-packet --iface vethb --netns lab --ip 10.81.0.2 --port 7 --cores 2
//! ```
//!
//! `--cores 0` runs the inline runtime on one thread; `--cores N` the threaded runtime with
//! `Topology::x86(N)`. A one-line statistics display refreshes every second; Ctrl-C stops
//! the server cleanly and prints the final counters.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use flextoe::backends::mem::MemLink;
use flextoe::backends::Port;
use flextoe::host::{Host, Stream};
use flextoe::pipeline::{Engine, EngineConfig, Runtime, Threaded, Topology};
use flextoe::sim::Impairments;
use flextoe::time::SystemClock;
use flextoe::wire::MacAddr;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Backend {
    /// In-memory link, with a built-in client on the other end.
    Mem,
    /// TAP device (feature `tap`).
    Tap,
    /// AF_PACKET socket on an interface (feature `af_packet`).
    AfPacket,
}

#[derive(Parser, Debug)]
#[command(about = "TCP echo server on a flextoe engine")]
struct Args {
    /// Where frames come from.
    #[arg(long, value_enum, default_value = "mem")]
    backend: Backend,
    /// Interface (TAP device or veth end) for tap / af-packet.
    #[arg(long)]
    iface: Option<String>,
    /// Network namespace to open the interface in (as made by `ip netns add`).
    #[arg(long)]
    netns: Option<String>,
    /// The engine's IPv4 address.
    #[arg(long, default_value = "10.82.0.2")]
    ip: Ipv4Addr,
    /// The engine's MAC address.
    #[arg(long, default_value = "02:66:74:6f:65:01")]
    mac: String,
    /// TCP port.
    #[arg(long, default_value_t = 7)]
    port: u16,
    /// 0: inline runtime on one thread; N: threaded runtime with N workers.
    #[arg(long, default_value_t = 0)]
    cores: usize,
    /// With `--backend mem`: MiB the built-in client sends (0 = until Ctrl-C).
    #[arg(long, default_value_t = 256)]
    mib: u64,
}

fn parse_mac(s: &str) -> Result<MacAddr, String> {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).map_err(|e| format!("bad MAC {s}: {e}")))
        .collect::<Result<_, _>>()?;
    let a: [u8; 6] = v.try_into().map_err(|_| format!("bad MAC {s}"))?;
    Ok(MacAddr(a))
}

/// Either runtime, behind one interface.
enum Running<P: Port + 'static> {
    Inline(Runtime<P>),
    Threaded(Threaded),
}

impl<P: Port + 'static> Running<P> {
    fn host(&self) -> Host {
        match self {
            Running::Inline(r) => r.host(),
            Running::Threaded(t) => t.host(),
        }
    }

    fn stop(self) -> String {
        match self {
            Running::Inline(r) => r.stop().stats().to_string(),
            Running::Threaded(t) => t.stop().to_string(),
        }
    }
}

fn start<P: Port + 'static>(
    cfg: EngineConfig,
    port: P,
    cores: usize,
    clock: SystemClock,
) -> Running<P> {
    if cores == 0 {
        Running::Inline(
            Runtime::spawn(Engine::new(cfg, port).expect("engine"), clock).expect("runtime"),
        )
    } else {
        Running::Threaded(Threaded::spawn(cfg, port, Topology::x86(cores), clock).expect("runtime"))
    }
}

fn echo(mut s: Stream, bytes: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
                bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    s.wait_closed(Some(Duration::from_secs(5)));
}

fn serve<P: Port + 'static>(
    args: &Args,
    cfg: EngineConfig,
    port: P,
    stop: Arc<AtomicBool>,
    client: Option<Box<dyn FnOnce(Arc<AtomicBool>) + Send>>,
) {
    let running = start(cfg, port, args.cores, SystemClock::new());
    let listener = running.host().listen(args.port, 128).expect("listen");
    let bytes = Arc::new(AtomicU64::new(0));
    let conns = Arc::new(AtomicU64::new(0));
    eprintln!(
        "echo server on {}:{} ({:?}, {} )",
        args.ip,
        args.port,
        args.backend,
        if args.cores == 0 {
            "inline runtime".to_string()
        } else {
            format!("threaded runtime, {} workers", args.cores)
        }
    );
    let client = client.map(|c| {
        let s = stop.clone();
        std::thread::spawn(move || c(s))
    });
    let mut last = std::time::Instant::now();
    let mut last_bytes = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(Some(s)) = listener.accept_timeout(Duration::from_millis(100)) {
            conns.fetch_add(1, Ordering::Relaxed);
            let b = bytes.clone();
            std::thread::spawn(move || echo(s, b));
        }
        if last.elapsed() >= Duration::from_secs(1) {
            let b = bytes.load(Ordering::Relaxed);
            eprint!(
                "\rconnections {:>5}  echoed {:>10} MiB  {:>8.1} MiB/s   ",
                conns.load(Ordering::Relaxed),
                b >> 20,
                (b - last_bytes) as f64 / last.elapsed().as_secs_f64() / (1 << 20) as f64
            );
            last = std::time::Instant::now();
            last_bytes = b;
        }
    }
    if let Some(c) = client {
        let _ = c.join();
    }
    eprintln!("\nstopping");
    println!("{}", running.stop());
}

/// The built-in client for `--backend mem`: streams data to the server and checks the echo.
fn mem_client(
    port: flextoe::backends::mem::MemPort,
    server_ip: Ipv4Addr,
    server_port: u16,
    mib: u64,
) -> Box<dyn FnOnce(Arc<AtomicBool>) + Send> {
    Box::new(move |stop: Arc<AtomicBool>| {
        let cfg = EngineConfig::new(
            MacAddr([2, 0, 0, 0, 0, 0x99]),
            Ipv4Addr::new(
                server_ip.octets()[0],
                server_ip.octets()[1],
                server_ip.octets()[2],
                99,
            ),
        );
        let rt = Runtime::spawn(
            Engine::new(cfg, port).expect("client engine"),
            SystemClock::new(),
        )
        .expect("client runtime");
        let mut s = rt
            .host()
            .connect_blocking(
                std::net::SocketAddrV4::new(server_ip, server_port),
                Duration::from_secs(5),
            )
            .expect("connect");
        s.set_nonblocking(true);
        let chunk: Vec<u8> = (0..65536u32).map(|i| (i * 31 + 7) as u8).collect();
        let total = if mib == 0 { u64::MAX } else { mib << 20 };
        let (mut sent, mut got) = (0u64, 0u64);
        let mut buf = vec![0u8; 65536];
        while got < total && !stop.load(Ordering::Relaxed) {
            let mut progress = false;
            if sent < total {
                let off = (sent % 65536) as usize;
                let n = ((total - sent) as usize).min(65536 - off);
                if let Ok(k) = s.write(&chunk[off..off + n]) {
                    sent += k as u64;
                    progress = k > 0;
                }
            }
            if !progress {
                // Leave the cores to the engines and the server while nothing moves.
                std::thread::sleep(Duration::from_micros(50));
            }
            if let Ok(k) = s.read(&mut buf) {
                for (i, b) in buf[..k].iter().enumerate() {
                    assert_eq!(
                        *b,
                        chunk[((got + i as u64) % 65536) as usize],
                        "echo differs"
                    );
                }
                got += k as u64;
            }
        }
        eprintln!("\nbuilt-in client: {} MiB echoed and verified", got >> 20);
        stop.store(true, Ordering::Relaxed);
        drop(s);
        rt.stop();
    })
}

fn main() {
    let args = Args::parse();
    let mac = match parse_mac(&args.mac) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let s = stop.clone();
        ctrlc::set_handler(move || s.store(true, Ordering::Relaxed)).expect("Ctrl-C handler");
    }
    let cfg = EngineConfig::new(mac, args.ip);
    match args.backend {
        Backend::Mem => {
            let (a, b) = MemLink::pair(Impairments::none());
            let client = mem_client(b, args.ip, args.port, args.mib);
            serve(&args, cfg, a, stop, Some(client));
        }
        Backend::Tap => {
            #[cfg(feature = "tap")]
            {
                let iface = args.iface.clone().expect("--iface is required for tap");
                let open = move || flextoe::backends::tap::TapPort::open(&iface);
                let port = match &args.netns {
                    Some(ns) => flextoe::backends::netns::in_netns(ns, open),
                    None => open(),
                }
                .expect("open TAP device");
                serve(&args, cfg, port, stop, None);
            }
            #[cfg(not(feature = "tap"))]
            {
                eprintln!("built without the `tap` feature");
                std::process::exit(2);
            }
        }
        Backend::AfPacket => {
            #[cfg(feature = "af_packet")]
            {
                let iface = args
                    .iface
                    .clone()
                    .expect("--iface is required for af-packet");
                let open = move || flextoe::backends::af_packet::AfPacketPort::open(&iface, mac);
                let port = match &args.netns {
                    Some(ns) => flextoe::backends::netns::in_netns(ns, open),
                    None => open(),
                }
                .expect("open AF_PACKET socket");
                serve(&args, cfg, port, stop, None);
            }
            #[cfg(not(feature = "af_packet"))]
            {
                eprintln!("built without the `af_packet` feature");
                std::process::exit(2);
            }
        }
    }
}
