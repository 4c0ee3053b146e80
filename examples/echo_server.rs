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
//! cargo run --release --features af_xdp --example echo_server -- \
//!     --backend af-xdp --iface vethb --netns lab --ip 10.81.0.2 --port 7
//! # Any DPDK PMD (feature dpdk; EAL arguments passed through, the first --vdev is the port):
//! cargo run --release --features dpdk --example echo_server -- --backend dpdk --netns lab \
//!     --dpdk-args "--no-huge -m 512 --no-pci --no-shconf --file-prefix=srv \
//!     --vdev=net_af_packet0,iface=vethb,blocksz=28672,framesz=1792,framecnt=512" \
//!     --ip 10.81.0.2 --port 7
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

use clap::Parser;
use flextoe::backends::mem::MemLink;
use flextoe::backends::Port;
use flextoe::host::Stream;
use flextoe::pipeline::{Engine, EngineConfig, Runtime};
use flextoe::sim::Impairments;
use flextoe::time::SystemClock;
use flextoe::wire::MacAddr;

mod support;
use support::{open_linux_port, Backend, BuiltinClient, NetArgs, Server};

#[derive(Parser, Debug)]
#[command(about = "TCP echo server on a flextoe engine")]
struct Args {
    #[command(flatten)]
    net: NetArgs,
    /// With `--backend mem`: MiB the built-in client sends (0 = until Ctrl-C).
    #[arg(long, default_value_t = 256)]
    mib: u64,
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
    client: Option<BuiltinClient>,
) {
    let bytes = Arc::new(AtomicU64::new(0));
    let conns = Arc::new(AtomicU64::new(0));
    let mut last_bytes = 0;
    let (b1, c1) = (bytes.clone(), conns.clone());
    support::serve(
        Server {
            name: "echo server",
            net: &args.net,
            tcp_port: args.net.port.unwrap_or(7),
            stop,
            client,
        },
        cfg,
        port,
        move |s| {
            c1.fetch_add(1, Ordering::Relaxed);
            let b = b1.clone();
            std::thread::spawn(move || echo(s, b));
        },
        move |secs| {
            let b = bytes.load(Ordering::Relaxed);
            let line = format!(
                "connections {:>5}  echoed {:>10} MiB  {:>8.1} MiB/s",
                conns.load(Ordering::Relaxed),
                b >> 20,
                (b - last_bytes) as f64 / secs / (1 << 20) as f64
            );
            last_bytes = b;
            line
        },
    );
}

/// The built-in client for `--backend mem`: streams data to the server and checks the echo.
fn mem_client(
    port: flextoe::backends::mem::MemPort,
    server_ip: Ipv4Addr,
    server_port: u16,
    mib: u64,
) -> BuiltinClient {
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
    let stop = support::ctrl_c_flag();
    let cfg = EngineConfig::new(args.net.mac, args.net.ip);
    if args.net.backend == Backend::Mem {
        let (a, b) = MemLink::pair(Impairments::none());
        let client = mem_client(b, args.net.ip, args.net.port.unwrap_or(7), args.mib);
        serve(&args, cfg, args.net.capture(a), stop, Some(client));
    } else {
        let port = open_linux_port(&args.net);
        serve(&args, cfg, args.net.capture(port), stop, None);
    }
}
