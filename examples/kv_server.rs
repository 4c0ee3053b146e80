//! A key-value server speaking memcached's text protocol, on the engine, on any backend.
//!
//! ```text
//! # In-memory link with a built-in client that loads and checks keys (no privileges):
//! cargo run --release --example kv_server -- --backend mem
//! # On a veth end inside a network namespace (root, feature):
//! cargo run --release --features af_xdp --example kv_server -- \
//!     --backend af-xdp --iface vethb --netns lab --ip 10.81.0.2 --port 11211
//! # Any DPDK PMD (feature dpdk; EAL arguments passed through, the first --vdev is the port):
//! cargo run --release --features dpdk --example kv_server -- --backend dpdk --netns lab \
//!     --dpdk-args "--no-huge -m 512 --no-pci --no-shconf --file-prefix=srv \
//!     --vdev=net_af_packet0,iface=vethb,blocksz=28672,framesz=1792,framecnt=512" \
//!     --ip 10.81.0.2 --port 11211
//! ```
//!
//! Commands: get and gets with several keys, set, add, replace, append, prepend, cas, delete,
//! incr, decr, touch, flush_all, version, quit, with memcached's error replies;
//! `tests/kv.rs` compares every reply with the real memcached's. A one-line statistics
//! display refreshes every second; Ctrl-C stops the server cleanly.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use flextoe::backends::mem::{MemLink, MemPort};
use flextoe::backends::Port;
use flextoe::pipeline::{Engine, EngineConfig, Runtime};
use flextoe::sim::Impairments;
use flextoe::time::SystemClock;
use flextoe::wire::MacAddr;

mod support;
use support::kv::{serve_connection, Store};
use support::{open_linux_port, Backend, BuiltinClient, NetArgs, Server};

#[derive(Parser, Debug)]
#[command(about = "memcached-protocol key-value server on a flextoe engine")]
struct Args {
    #[command(flatten)]
    net: NetArgs,
    /// With `--backend mem`: client connections of the built-in client.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// With `--backend mem`: requests per client connection (0 = until Ctrl-C).
    #[arg(long, default_value_t = 20000)]
    requests: u64,
}

fn serve<P: Port + 'static>(
    args: &Args,
    cfg: EngineConfig,
    port: P,
    stop: Arc<AtomicBool>,
    client: Option<BuiltinClient>,
) {
    let store = Arc::new(Store::default());
    let conns = Arc::new(AtomicU64::new(0));
    let open = Arc::new(AtomicU64::new(0));
    let mut last_cmds = 0;
    let (st, c1, o1) = (store.clone(), conns.clone(), open.clone());
    support::serve(
        Server {
            name: "kv server",
            net: &args.net,
            tcp_port: args.net.port.unwrap_or(11211),
            stop,
            client,
        },
        cfg,
        port,
        move |mut s| {
            c1.fetch_add(1, Ordering::Relaxed);
            o1.fetch_add(1, Ordering::Relaxed);
            let (st, open) = (st.clone(), o1.clone());
            std::thread::spawn(move || {
                serve_connection(&mut s, &st);
                let _ = s.shutdown(std::net::Shutdown::Write);
                open.fetch_sub(1, Ordering::Relaxed);
            });
        },
        move |secs| {
            let c = store.commands.load(Ordering::Relaxed);
            let line = format!(
                "connections {:>5} (open {:>4})  commands {:>10}  {:>9.0} commands/s",
                conns.load(Ordering::Relaxed),
                open.load(Ordering::Relaxed),
                c,
                (c - last_cmds) as f64 / secs
            );
            last_cmds = c;
            line
        },
    );
}

/// The built-in client for `--backend mem`: each connection sets keys and reads them back,
/// checking every reply.
fn mem_client(port: MemPort, server: SocketAddrV4, clients: usize, requests: u64) -> BuiltinClient {
    Box::new(move |stop: Arc<AtomicBool>| {
        let o = server.ip().octets();
        let cfg = EngineConfig::new(
            MacAddr([2, 0, 0, 0, 0, 0x99]),
            Ipv4Addr::new(o[0], o[1], o[2], 99),
        );
        let rt = Runtime::spawn(
            Engine::new(cfg, port).expect("client engine"),
            SystemClock::new(),
        )
        .expect("client runtime");
        let started = std::time::Instant::now();
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                let host = rt.host();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut s = host
                        .connect_blocking(server, Duration::from_secs(5))
                        .expect("connect");
                    let mut buf = vec![0u8; 4096];
                    let mut done = 0u64;
                    while (requests == 0 || done < requests) && !stop.load(Ordering::Relaxed) {
                        let key = format!("c{c}k{}", done % 1000);
                        let value = format!("v{done}");
                        let req =
                            format!("set {key} 0 0 {}\r\n{value}\r\nget {key}\r\n", value.len());
                        s.write_all(req.as_bytes()).expect("send");
                        let want = format!(
                            "STORED\r\nVALUE {key} 0 {}\r\n{value}\r\nEND\r\n",
                            value.len()
                        );
                        let mut got = Vec::new();
                        while got.len() < want.len() {
                            let n = s.read(&mut buf).expect("read");
                            assert!(n > 0, "server closed");
                            got.extend_from_slice(&buf[..n]);
                        }
                        assert_eq!(String::from_utf8_lossy(&got), want, "reply differs");
                        done += 2;
                    }
                    s.write_all(b"quit\r\n").expect("quit");
                    done
                })
            })
            .collect();
        let total: u64 = threads.into_iter().map(|t| t.join().expect("client")).sum();
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "\nbuilt-in client: {total} requests over {clients} connections, every reply \
             checked, {:.0} requests/s",
            total as f64 / secs
        );
        stop.store(true, Ordering::Relaxed);
        rt.stop();
    })
}

fn main() {
    let args = Args::parse();
    let stop = support::ctrl_c_flag();
    let cfg = EngineConfig::new(args.net.mac, args.net.ip);
    if args.net.backend == Backend::Mem {
        let (a, b) = MemLink::pair(Impairments::none());
        let server = SocketAddrV4::new(args.net.ip, args.net.port.unwrap_or(11211));
        let client = mem_client(b, server, args.clients, args.requests);
        serve(&args, cfg, args.net.capture(a), stop, Some(client));
    } else {
        let port = open_linux_port(&args.net);
        serve(&args, cfg, args.net.capture(port), stop, None);
    }
}
