//! The engine against the Linux TCP stack on the same veth pair, in one run.
//!
//! Two namespaces the program creates and removes: the client side, where every client is a
//! plain Linux socket program (this process's threads, or `memcslap`), and the server side,
//! whose veth end carries both servers: the engine on one address (AF_XDP by default; the
//! XDP program takes only that address's packets) and the Linux stack on another. Each
//! comparison sends the same load to both and prints the ratio engine / Linux:
//!
//! * bulk: one connection sends `--bulk-mib` to a sink server (engine vs Linux server);
//! * latency: 64-byte echo round trips on one connection, p50 / p99 / p99.9, and the
//!   process's CPU time per round trip (client, server and, for the engine, its thread);
//!   `--echo-gap-us` has the client wait between round trips, so that each request finds
//!   the server idle (the engine's thread asleep);
//! * idle: the process's CPU time over a second with nothing to do, before the loads, and how
//!   often the engine's thread slept in it;
//! * kv: the engine's kv server (`examples/kv_server.rs`'s protocol code) vs memcached, driven
//!   by `memcslap` (set then get) from the client side, plus get/set latency percentiles
//!   from this program's own client.
//!
//! ```text
//! sudo cargo run --release --features af_xdp,af_packet --example vs_linux
//! sudo cargo run --release --features af_xdp,af_packet --example vs_linux -- --backend af-packet
//! sudo cargo run --release --features af_xdp,af_packet,dpdk --example vs_linux -- --backend af-xdp,dpdk
//! ```
//!
//! With several backends, each engine runs the whole load in turn on the same veth end and
//! address, then Linux does; one table shows every engine next to Linux.
//!
//! Both stacks get the same buffer budget per connection, in bytes: the engine's rings
//! (`EngineConfig::rx_buffer`, `tx_buffer`) are the largest powers of two not above the
//! maxima Linux may grow a socket's buffers to in the server's namespace (`net.ipv4.tcp_rmem`,
//! `net.ipv4.tcp_wmem`; kept within the engine's 1 KiB to 1 GiB); `--rx-buffer` and
//! `--tx-buffer` set them instead (262144 each is the engine's default). Linux counts its
//! buffers' overhead against that budget and advertises part of it as window, so for the same
//! bytes the engine's window is the larger. A line printed before the loads gives the sizes
//! and where they came from.
//!
//! Needs root, `ip`, `ethtool`, `nft` and, for the kv comparison, `memcached` and `memcslap`.

#[cfg(feature = "af_xdp")]
#[path = "../tests/common/lab.rs"]
#[allow(dead_code)]
mod lab;
mod support;

#[cfg(feature = "af_xdp")]
mod run {
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use clap::{Parser, ValueEnum};
    use flextoe::backends::any::{AnyPort, BackendKind, PortSpec};
    use flextoe::backends::netns::in_netns;
    use flextoe::host::Stream;
    use flextoe::pipeline::{Engine, EngineConfig, Runtime};
    use flextoe::time::SystemClock;
    use flextoe::wire::MacAddr;

    use crate::lab::{sh, VethLab};
    use crate::support::kv::{serve_connection, Store};

    #[derive(Clone, Copy, Debug, ValueEnum)]
    enum Backend {
        AfXdp,
        AfPacket,
        /// DPDK's net_af_packet PMD (build with the `dpdk` feature).
        Dpdk,
    }

    #[derive(Parser, Debug)]
    #[command(about = "flextoe vs the Linux TCP stack on one veth pair")]
    struct Args {
        /// The engine's backends, measured one after another (comma-separated).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "af-xdp")]
        backend: Vec<Backend>,
        /// MiB per bulk transfer.
        #[arg(long, default_value_t = 512)]
        bulk_mib: u64,
        /// Bulk transfers per server (the best is reported).
        #[arg(long, default_value_t = 3)]
        bulk_runs: usize,
        /// Echo round trips measured per server (after 1000 for warm-up).
        #[arg(long, default_value_t = 20000)]
        rtts: usize,
        /// Microseconds the echo client waits after each round trip before the next.
        #[arg(long, default_value_t = 0)]
        echo_gap_us: u64,
        /// `memcslap --execute-number` (per thread).
        #[arg(long, default_value_t = 20000)]
        kv_ops: u64,
        /// `memcslap --concurrency`.
        #[arg(long, default_value_t = 2)]
        kv_threads: u32,
        /// Skip the kv comparison.
        #[arg(long)]
        no_kv: bool,
        /// The engine's receive ring per connection, bytes (a power of two, 1 KiB to 1
        /// GiB). By default the largest power of two not above what Linux may grow a
        /// socket's receive buffer to in the server's namespace (the maximum of
        /// `net.ipv4.tcp_rmem`), so that both stacks get the same budget; 262144 gives the
        /// engine's default (`EngineConfig::new`).
        #[arg(long, value_parser = ring_size)]
        rx_buffer: Option<usize>,
        /// As `--rx-buffer`, for the transmit ring (against `net.ipv4.tcp_wmem`).
        #[arg(long, value_parser = ring_size)]
        tx_buffer: Option<usize>,
    }

    /// The ring sizes the engine takes: powers of two from 1 KiB to 1 GiB.
    const RING_SIZES: std::ops::RangeInclusive<usize> = 1024..=1 << 30;

    fn ring_size(arg: &str) -> Result<usize, String> {
        let n: usize = arg.parse().map_err(|e| format!("{e}"))?;
        if n.is_power_of_two() && RING_SIZES.contains(&n) {
            Ok(n)
        } else {
            Err(format!(
                "{n} is not a power of two from 1024 to {}",
                RING_SIZES.end()
            ))
        }
    }

    /// The largest power of two not above the maximum (third field) of a `tcp_rmem` /
    /// `tcp_wmem` value ("min default max"), kept within the engine's ring sizes.
    fn buffer_max(sysctl: &str) -> Option<usize> {
        let max: usize = sysctl.split_whitespace().nth(2)?.parse().ok()?;
        Some(1 << max.clamp(*RING_SIZES.start(), *RING_SIZES.end()).ilog2())
    }

    /// A ring's size: the option's, or from the sysctl, or the engine's default; and where
    /// it came from.
    fn ring_from(
        option: Option<usize>,
        sysctl: Option<&str>,
        name: &str,
        default: usize,
    ) -> (usize, String) {
        if let Some(n) = option {
            return (n, "as asked".into());
        }
        match sysctl {
            Some(v) => match buffer_max(v) {
                Some(n) => (n, format!("from {name} {v}")),
                None => (
                    default,
                    format!("the engine's default: {name} \"{v}\" unreadable"),
                ),
            },
            None => (default, format!("the engine's default: {name} unreadable")),
        }
    }

    const MAC: MacAddr = MacAddr([0x02, 0x66, 0x74, 0x6f, 0x65, 0x02]);
    const SINK: u16 = 5001;
    const ECHO: u16 = 7;
    const KV: u16 = 11211;

    /// Streams of both stacks, for the servers.
    trait Conn: Read + Write + Send + 'static {
        fn half_close(&mut self);
    }
    impl Conn for TcpStream {
        fn half_close(&mut self) {
            let _ = self.shutdown(Shutdown::Write);
        }
    }
    impl Conn for Stream {
        fn half_close(&mut self) {
            let _ = self.shutdown(Shutdown::Write);
        }
    }

    /// Read to the end, answer with the byte count, close.
    fn sink<C: Conn>(mut s: C) {
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k as u64,
            }
        }
        let _ = s.write_all(&n.to_le_bytes());
        s.half_close();
    }

    fn echo<C: Conn>(mut s: C) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    if s.write_all(&buf[..k]).is_err() {
                        break;
                    }
                }
            }
        }
        s.half_close();
    }

    fn kv<C: Conn>(mut s: C, store: Arc<Store>) {
        serve_connection(&mut s, &store);
        s.half_close();
    }

    fn linux_listener(ns: &str, ip: Ipv4Addr, port: u16) -> TcpListener {
        in_netns(ns, move || TcpListener::bind(SocketAddrV4::new(ip, port)))
            .unwrap_or_else(|e| panic!("Linux listener {ip}:{port}: {e}"))
    }

    fn spawn_linux_server(l: TcpListener, handler: fn(TcpStream)) {
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let _ = s.set_nodelay(true);
                std::thread::spawn(move || handler(s));
            }
        });
    }

    fn connect(ns: &str, addr: SocketAddrV4) -> TcpStream {
        let s = in_netns(ns, move || {
            TcpStream::connect_timeout(&SocketAddr::V4(addr), Duration::from_secs(5))
        })
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_nodelay(true).unwrap();
        // A stalled server fails the run instead of hanging it.
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// One bulk transfer; payload bits per second.
    fn bulk(ns: &str, addr: SocketAddrV4, bytes: u64) -> f64 {
        let mut s = connect(ns, addr);
        let chunk = vec![0x5au8; 256 * 1024];
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < bytes {
            let n = (bytes - sent).min(chunk.len() as u64) as usize;
            s.write_all(&chunk[..n]).expect("bulk write");
            sent += n as u64;
        }
        s.shutdown(Shutdown::Write).unwrap();
        let mut count = [0u8; 8];
        s.read_exact(&mut count)
            .expect("byte count from the server");
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(u64::from_le_bytes(count), bytes, "server counted");
        bytes as f64 * 8.0 / secs
    }

    /// Sorted round-trip times of `n` 64-byte echoes, after a warm-up, `gap` apart; and
    /// the process's CPU time per measured round trip, in microseconds (the gaps' time
    /// included: what the process used while serving that load).
    fn echo_rtts(ns: &str, addr: SocketAddrV4, n: usize, gap: Duration) -> (Vec<Duration>, f64) {
        let mut s = connect(ns, addr);
        let msg = [0x42u8; 64];
        let mut back = [0u8; 64];
        let mut v = Vec::with_capacity(n);
        let mut cpu0 = None;
        for i in 0..n + 1000 {
            if i == 1000 {
                cpu0 = Some(cpu_time::ProcessTime::now());
            }
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
            let t = Instant::now();
            s.write_all(&msg).unwrap();
            s.read_exact(&mut back).unwrap();
            if i >= 1000 {
                v.push(t.elapsed());
            }
        }
        let cpu = cpu0.map_or(0.0, |c| c.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64);
        assert_eq!(back, msg);
        v.sort();
        (v, cpu)
    }

    /// Sorted latencies of `n` alternating set / get requests (32-byte keys, 64-byte values).
    fn kv_latencies(ns: &str, addr: SocketAddrV4, n: usize) -> Vec<Duration> {
        let mut s = connect(ns, addr);
        let value = [b'v'; 64];
        let mut v = Vec::with_capacity(n);
        let mut buf = vec![0u8; 4096];
        for i in 0..n + 1000 {
            // Each key is set, then read back by the next request.
            let key = format!("key-{:028}", (i / 2) % 1000);
            let (req, want): (Vec<u8>, usize) = if i % 2 == 0 {
                let mut r = format!("set {key} 0 0 64\r\n").into_bytes();
                r.extend_from_slice(&value);
                r.extend_from_slice(b"\r\n");
                (r, "STORED\r\n".len())
            } else {
                let r = format!("get {key}\r\n").into_bytes();
                (r, format!("VALUE {key} 0 64\r\n").len() + 66 + 5)
            };
            let t = Instant::now();
            s.write_all(&req).unwrap();
            let mut got = 0;
            while got < want {
                let k = s.read(&mut buf[got..]).unwrap();
                assert!(k > 0, "server closed");
                got += k;
            }
            if i >= 1000 {
                v.push(t.elapsed());
            }
        }
        v.sort();
        v
    }

    fn pct(v: &[Duration], p: f64) -> f64 {
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64() * 1e6
    }

    /// What one server (an engine on one backend, or Linux) measured.
    struct Measured {
        name: String,
        bulk_bps: f64,
        echo: Vec<Duration>,
        /// Process CPU time per echo round trip, microseconds.
        echo_cpu: f64,
        kv_rates: Option<(f64, f64)>,
        kv_lat: Vec<Duration>,
    }

    /// One latency table: a row per server, ratios against the last row (Linux).
    fn print_latency(title: &str, rows: &[(&str, &[Duration])]) {
        print_latency_cpu(title, rows, None);
    }

    /// [`print_latency`], with each row's CPU microseconds per request where given.
    fn print_latency_cpu(title: &str, rows: &[(&str, &[Duration])], cpu: Option<&[f64]>) {
        let Some(&(_, linux)) = rows.last() else {
            return;
        };
        if linux.is_empty() {
            return;
        }
        println!(
            "\n{title:<28} {:>9} {:>9} {:>9}   Linux/it (>1: faster): p50 p99 p99.9{}",
            "p50 us",
            "p99 us",
            "p99.9 us",
            if cpu.is_some() {
                "   CPU us/request"
            } else {
                ""
            }
        );
        for (i, (name, v)) in rows.iter().enumerate().filter(|(_, (_, v))| !v.is_empty()) {
            println!(
                "  {name:<26} {:>9.1} {:>9.1} {:>9.1}   {:.2} {:.2} {:.2}{}",
                pct(v, 0.5),
                pct(v, 0.99),
                pct(v, 0.999),
                pct(linux, 0.5) / pct(v, 0.5),
                pct(linux, 0.99) / pct(v, 0.99),
                pct(linux, 0.999) / pct(v, 0.999),
                cpu.map_or(String::new(), |c| format!("   {:>10.1}", c[i]))
            );
        }
    }

    /// Every measurement, a row per server, the last (Linux) the reference for the ratios.
    fn print_table(rows: &[Measured]) {
        let linux = rows.last().expect("Linux row");
        println!("\nbulk, 1 connection (best run)");
        for r in rows {
            println!(
                "  {:<26} {:>8.2} Gbit/s   x{:.2} of Linux",
                r.name,
                r.bulk_bps / 1e9,
                r.bulk_bps / linux.bulk_bps
            );
        }
        let echo: Vec<(&str, &[Duration])> = rows
            .iter()
            .map(|r| (r.name.as_str(), &r.echo[..]))
            .collect();
        let cpu: Vec<f64> = rows.iter().map(|r| r.echo_cpu).collect();
        print_latency_cpu("64-byte echo, 1 connection", &echo, Some(&cpu));
        if let Some((ls, lg)) = linux.kv_rates {
            println!(
                "\nkv (memcslap; engines serve the kv_server example's protocol, Linux runs memcached)"
            );
            println!(
                "  {:<26} {:>12} {:>12}   set, get vs memcached",
                "", "set keys/s", "get keys/s"
            );
            for r in rows {
                if let Some((set, get)) = r.kv_rates {
                    println!(
                        "  {:<26} {set:>12.0} {get:>12.0}   x{:.2} x{:.2}",
                        r.name,
                        set / ls,
                        get / lg
                    );
                }
            }
            let kv: Vec<(&str, &[Duration])> = rows
                .iter()
                .map(|r| (r.name.as_str(), &r.kv_lat[..]))
                .collect();
            print_latency("kv latency, 1 connection", &kv);
        }
    }

    /// `memcslap` in `ns`; keys per second of the `test` phase.
    fn memcslap(ns: &str, addr: SocketAddrV4, test: &str, threads: u32, ops: u64) -> f64 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "memcslap",
                &format!("--servers={}:{}", addr.ip(), addr.port()),
                &format!("--test={test}"),
                &format!("--concurrency={threads}"),
                &format!("--execute-number={ops}"),
            ])
            .output()
            .expect("memcslap");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "memcslap failed: {text}");
        // "Time to get   39131 keys by    2 threads:     0.593 seconds."
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("Time to {test} ")))
            .unwrap_or_else(|| panic!("no result line in: {text}"));
        let nums: Vec<f64> = line
            .split(|c: char| c.is_whitespace() || c == ':')
            .filter_map(|w| w.parse().ok())
            .collect();
        let (keys, secs) = (nums[0], nums[nums.len() - 1]);
        keys / secs.max(1e-9)
    }

    struct Memcached(Child);
    impl Drop for Memcached {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// An IPv4 sysctl of namespace `ns` (its fields separated by single spaces), where it
    /// can be read.
    fn ipv4_sysctl(ns: &str, name: &str) -> Option<String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "cat",
                &format!("/proc/sys/net/ipv4/{name}"),
            ])
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        let fields: Vec<&str> = text.split_whitespace().collect();
        (!fields.is_empty()).then(|| fields.join(" "))
    }

    fn have(tool: &str) -> bool {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    pub fn main() {
        let args = Args::parse();
        let Some(lab) = VethLab::new() else {
            eprintln!("needs root and ip, ethtool, nft");
            std::process::exit(2);
        };
        let client_ns = lab.linux.0.clone();
        let server_ns = lab.engine.0.clone();
        let o = lab.engine_ip.octets();
        let engine_ip = lab.engine_ip;
        let linux_ip = Ipv4Addr::new(o[0], o[1], o[2], 3);
        sh(&[
            "ip",
            "-n",
            &server_ns,
            "addr",
            "add",
            &format!("{linux_ip}/24"),
            "dev",
            &lab.engine_if,
        ]);
        let e = move |p| SocketAddrV4::new(engine_ip, p);
        let l = move |p| SocketAddrV4::new(linux_ip, p);
        let bytes = args.bulk_mib << 20;
        let kv_tools = !args.no_kv && have("memcached") && have("memcslap");
        if !args.no_kv && !kv_tools {
            eprintln!("memcached or memcslap missing: kv comparison skipped");
        }
        println!(
            "engines {engine_ip} ({:?}, one after another) and Linux {linux_ip} on one veth end; \
             clients in another namespace; {} CPUs",
            args.backend,
            flextoe::pipeline::topology::usable_cores().len()
        );
        let defaults = EngineConfig::new(MAC, engine_ip);
        let rmem = ipv4_sysctl(&server_ns, "tcp_rmem");
        let wmem = ipv4_sysctl(&server_ns, "tcp_wmem");
        let (rx_buffer, rx_from) = ring_from(
            args.rx_buffer,
            rmem.as_deref(),
            "tcp_rmem",
            defaults.rx_buffer,
        );
        let (tx_buffer, tx_from) = ring_from(
            args.tx_buffer,
            wmem.as_deref(),
            "tcp_wmem",
            defaults.tx_buffer,
        );
        println!(
            "engine rings per connection: receive {} KiB ({rx_from}), transmit {} KiB ({tx_from})",
            rx_buffer >> 10,
            tx_buffer >> 10,
        );
        let mut rows = Vec::new();
        let gap = Duration::from_micros(args.echo_gap_us);
        for backend in &args.backend {
            let (kind, dpdk_args, iface) = match backend {
                Backend::AfXdp => (BackendKind::AfXdp, String::new(), lab.engine_if.clone()),
                Backend::AfPacket => (BackendKind::AfPacket, String::new(), lab.engine_if.clone()),
                Backend::Dpdk => (
                    BackendKind::Dpdk,
                    format!(
                        "--no-huge -m 512 --no-pci --no-shconf --no-telemetry \
                         --file-prefix=vslinux{} --log-level=*:warning",
                        std::process::id()
                    ),
                    // DPDK's AF_PACKET PMD on the same veth end; its kernel ring frames fit
                    // an mbuf after the 128-byte headroom and fill each block exactly.
                    format!(
                        "net_af_packet0,iface={},qpairs=1,blocksz=28672,framesz=1792,framecnt=512",
                        lab.engine_if
                    ),
                ),
            };
            let spec = PortSpec {
                kind,
                iface,
                netns: Some(server_ns.clone()),
                mac: MAC,
                ip: engine_ip,
                dpdk_args,
                queues: 1,
            };
            let port = AnyPort::open(&spec).expect("engine port");
            let rt = Runtime::spawn(
                Engine::new(
                    {
                        let mut c = EngineConfig::new(MAC, engine_ip);
                        c.rx_buffer = rx_buffer;
                        c.tx_buffer = tx_buffer;
                        c
                    },
                    port,
                )
                .expect("engine"),
                SystemClock::new(),
            )
            .expect("engine runtime");
            let host = rt.host();
            let store = Arc::new(Store::default());
            for (p, which) in [(SINK, 0), (ECHO, 1), (KV, 2)] {
                let l = host.listen(p, 64).expect("engine listen");
                let store = store.clone();
                std::thread::spawn(move || {
                    while let Ok(s) = l.accept() {
                        let store = store.clone();
                        std::thread::spawn(move || match which {
                            0 => sink(s),
                            1 => echo(s),
                            _ => kv(s, store),
                        });
                    }
                });
            }
            // A second with nothing to do: what the idle engine costs.
            let (idle0, cpu0) = (rt.sleeps(), cpu_time::ProcessTime::now());
            std::thread::sleep(Duration::from_secs(1));
            let (idle1, idle_cpu) = (rt.sleeps(), cpu0.elapsed());
            println!(
                "engine on {backend:?}, idle 1 s: {:.1}% of a CPU, {} sleeps",
                idle_cpu.as_secs_f64() * 100.0,
                idle1.sleeps - idle0.sleeps
            );
            let mut best = 0f64;
            for _ in 0..args.bulk_runs.max(1) {
                best = best.max(bulk(&client_ns, e(SINK), bytes));
            }
            let sleeps0 = rt.sleeps();
            let (echo_v, echo_cpu) = echo_rtts(&client_ns, e(ECHO), args.rtts, gap);
            let sleeps = rt.sleeps();
            let (kv_rates, kv_lat) = if kv_tools {
                let set = memcslap(&client_ns, e(KV), "set", args.kv_threads, args.kv_ops);
                let get = memcslap(&client_ns, e(KV), "get", args.kv_threads, args.kv_ops);
                (Some((set, get)), kv_latencies(&client_ns, e(KV), args.rtts))
            } else {
                (None, Vec::new())
            };
            let mut engine = rt.stop();
            println!(
                "engine on {backend:?}: retransmissions {:?}; port {}",
                engine.retransmissions(),
                engine.port_mut().stats_line()
            );
            println!(
                "engine on {backend:?}, echo: the runtime thread slept {} times ({}; {} ended \
                 by a frame, {} by the application)",
                sleeps.sleeps - sleeps0.sleeps,
                if sleeps.on_port {
                    "naps, then on the port's descriptors once idle for 1 ms"
                } else {
                    "naps only"
                },
                sleeps.port_wakes - sleeps0.port_wakes,
                sleeps.bell_wakes - sleeps0.bell_wakes,
            );
            drop(engine);
            rows.push(Measured {
                name: format!("engine ({backend:?})"),
                bulk_bps: best,
                echo: echo_v,
                echo_cpu,
                kv_rates,
                kv_lat,
            });
        }

        // Linux, the same load.
        spawn_linux_server(linux_listener(&server_ns, linux_ip, SINK), sink);
        spawn_linux_server(linux_listener(&server_ns, linux_ip, ECHO), echo);
        let mut best = 0f64;
        for _ in 0..args.bulk_runs.max(1) {
            best = best.max(bulk(&client_ns, l(SINK), bytes));
        }
        let (echo_v, echo_cpu) = echo_rtts(&client_ns, l(ECHO), args.rtts, gap);
        let (kv_rates, kv_lat) = if kv_tools {
            let _mc = Memcached(
                Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &server_ns,
                        "memcached",
                        "-u",
                        "root",
                        "-l",
                        &linux_ip.to_string(),
                        "-p",
                        &KV.to_string(),
                        "-U",
                        "0",
                        "-t",
                        "1",
                        "-c",
                        "1024",
                        "-m",
                        "256",
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("memcached"),
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while in_netns(&client_ns, move || {
                TcpStream::connect_timeout(&SocketAddr::V4(l(KV)), Duration::from_secs(1))
            })
            .is_err()
            {
                assert!(Instant::now() < deadline, "memcached did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
            let set = memcslap(&client_ns, l(KV), "set", args.kv_threads, args.kv_ops);
            let get = memcslap(&client_ns, l(KV), "get", args.kv_threads, args.kv_ops);
            (Some((set, get)), kv_latencies(&client_ns, l(KV), args.rtts))
        } else {
            (None, Vec::new())
        };
        rows.push(Measured {
            name: "Linux".into(),
            bulk_bps: best,
            echo: echo_v,
            echo_cpu,
            kv_rates,
            kv_lat,
        });
        println!(
            "\n{} MiB per bulk run, best of {}; {} echo round trips, {} us apart; memcslap \
             --concurrency={} --execute-number={}",
            args.bulk_mib,
            args.bulk_runs.max(1),
            args.rtts,
            args.echo_gap_us,
            args.kv_threads,
            args.kv_ops
        );
        print_table(&rows);
    }
}

#[cfg(feature = "af_xdp")]
fn main() {
    run::main();
}

#[cfg(not(feature = "af_xdp"))]
fn main() {
    eprintln!("build with --features af_xdp,af_packet");
    std::process::exit(2);
}
