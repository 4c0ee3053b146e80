//! Unmodified memcached on the engine (through the LD_PRELOAD library) against the same
//! memcached on Linux TCP: same binary, same load, same lab, one run, printed as ratios.
//!
//! ```sh
//! cargo build --release -p flextoe-preload --lib --bins --examples
//! sudo target/release/examples/memcached_vs_linux --secs 5 --conns 8
//! ```
//!
//! The lab is two network namespaces joined by a veth pair (offloads off, so both stacks
//! compute checksums in software). memcached runs in the server namespace with one worker
//! thread (`-t 1`), first on Linux TCP (a kernel address on the veth), then on the engine
//! (AF_PACKET, then AF_XDP) at the engine's address, then attached to the engine service
//! (`flextoe-serviced` on AF_XDP, whose CPU time counts as the server's too). The load comes from the client
//! namespace: `--conns` closed-loop connections, each a thread, 90% `get` and 10% `set` of
//! 100-byte values over 10,000 keys stored beforehand, every reply checked. Reported per
//! server: operations per second, the server process's CPU time (user and system, from
//! `/proc`) as cores, operations per second per server core, and the latency percentiles
//! the clients saw. The engine's own thread polls, so its CPU time is counted in full.

#[path = "../../tests/common/lab.rs"]
#[allow(dead_code)]
mod lab;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flextoe::backends::netns::in_netns;
use lab::{sh, VethLab};

struct Args {
    secs: f64,
    conns: usize,
    service: bool,
}

fn args() -> Args {
    let mut a = Args {
        secs: 5.0,
        conns: 8,
        service: true,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        if v[i] == "--no-service" {
            a.service = false;
            i += 1;
            continue;
        }
        match v[i].as_str() {
            "--secs" => a.secs = v[i + 1].parse().expect("--secs"),
            "--conns" => a.conns = v[i + 1].parse().expect("--conns"),
            other => panic!("unknown argument {other} (--secs S, --conns N, --no-service)"),
        }
        i += 2;
    }
    a
}

/// A file cargo built next to this example (target/<profile>/).
fn sibling(name: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let f = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        f.exists(),
        "{} is missing: cargo build --release -p flextoe-preload --lib --bins --examples",
        f.display()
    );
    f.to_string_lossy().into_owned()
}

/// The library next to this example.
fn library() -> String {
    sibling("libflextoe_preload.so")
}

/// The server process's CPU time so far (user + system), in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/pid/stat");
    // Fields after the command name (which is in parentheses): utime is the 14th field.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// One request; the reply must end with `end`.
fn request(s: &mut TcpStream, req: &[u8], end: &[u8], buf: &mut Vec<u8>) {
    s.write_all(req).unwrap();
    buf.clear();
    let mut chunk = [0u8; 4096];
    while !buf.ends_with(end) {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn value(k: u64, gen: u64) -> Vec<u8> {
    (0..100)
        .map(|i| b'a' + ((k + gen + i) % 26) as u8)
        .collect()
}

const KEYS: u64 = 10_000;

/// What one server did.
struct Figures {
    ops: f64,
    cores: f64,
    lat_us: [f64; 3],
}

/// Store the keys, then load the server at `to` from `ns` for `secs`; `pids` are the
/// server's processes (memcached, and the engine service when there is one).
fn load(ns: &str, to: SocketAddrV4, conns: usize, secs: f64, pids: Vec<u32>) -> Figures {
    let conns = conns.max(1);
    in_netns(ns, move || {
        // Store every key once (its generation 0), from one connection.
        let mut s = TcpStream::connect(to)?;
        s.set_nodelay(true)?;
        let mut buf = Vec::new();
        for k in 0..KEYS {
            let mut req = format!("set k{k} 0 0 100\r\n").into_bytes();
            req.extend_from_slice(&value(k, 0));
            req.extend_from_slice(b"\r\n");
            request(&mut s, &req, b"\r\n", &mut buf);
            assert_eq!(buf, b"STORED\r\n");
        }
        drop(s);
        let cpu_all = || pids.iter().map(|p| cpu_secs(*p)).sum::<f64>();
        let start_cpu = cpu_all();
        let start = Instant::now();
        let until = start + Duration::from_secs_f64(secs);
        let threads: Vec<_> = (0..conns as u64)
            .map(|c| {
                std::thread::spawn(move || {
                    let mut s = TcpStream::connect(to).unwrap();
                    s.set_nodelay(true).unwrap();
                    let mut buf = Vec::new();
                    let mut lat = Vec::with_capacity(1 << 20);
                    // Each connection owns the keys k with k % conns == c, so it knows
                    // which generation each holds.
                    let mine: Vec<u64> = (0..KEYS).filter(|k| k % conns as u64 == c).collect();
                    let mut gens = vec![0u64; mine.len()];
                    let mut x = 0x2545_f491_4f6c_dd1du64 ^ c;
                    while Instant::now() < until {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let i = (x % mine.len() as u64) as usize;
                        let k = mine[i];
                        let t = Instant::now();
                        if x.is_multiple_of(10) {
                            gens[i] += 1;
                            let mut req = format!("set k{k} 0 0 100\r\n").into_bytes();
                            req.extend_from_slice(&value(k, gens[i]));
                            req.extend_from_slice(b"\r\n");
                            request(&mut s, &req, b"\r\n", &mut buf);
                            assert_eq!(buf, b"STORED\r\n");
                        } else {
                            request(
                                &mut s,
                                format!("get k{k}\r\n").as_bytes(),
                                b"END\r\n",
                                &mut buf,
                            );
                            let mut want = format!("VALUE k{k} 0 100\r\n").into_bytes();
                            want.extend_from_slice(&value(k, gens[i]));
                            want.extend_from_slice(b"\r\nEND\r\n");
                            assert!(buf == want, "k{k}: a wrong reply");
                        }
                        lat.push(t.elapsed().as_nanos() as u64);
                    }
                    lat
                })
            })
            .collect();
        let mut lat: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let wall = start.elapsed().as_secs_f64();
        let cpu = cpu_all() - start_cpu;
        lat.sort_unstable();
        let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1e3;
        Ok(Figures {
            ops: lat.len() as f64 / wall,
            cores: cpu / wall,
            lat_us: [pct(0.50), pct(0.99), pct(0.999)],
        })
    })
    .expect("load")
}

/// memcached in `ns` listening on `ip`, with `env`.
fn memcached(ns: &str, ip: Ipv4Addr, env: &[(&str, String)]) -> Child {
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        ns,
        "memcached",
        "-u",
        "root",
        "-t",
        "1",
        "-U",
        "0",
        "-m",
        "256",
    ])
    .args(["-l", &ip.to_string(), "-p", "11211"])
    .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().expect("memcached")
}

fn wait_up(ns: &str, to: SocketAddrV4) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_netns(ns, move || {
        TcpStream::connect_timeout(&to.into(), Duration::from_millis(300))
    })
    .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "memcached on {to} does not answer"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main() {
    let a = args();
    let lib = library();
    let lab = VethLab::new().expect("the lab needs root, ip, ethtool and nft");
    let mut rows: Vec<(String, Figures)> = Vec::new();

    // Linux TCP: a kernel address on the server's veth end.
    let o = lab.engine_ip.octets();
    let kernel_ip = Ipv4Addr::new(o[0], o[1], o[2], 3);
    let dev = lab.engine_if.clone();
    sh(&lab
        .engine
        .exec(&["ip", "addr", "add", &format!("{kernel_ip}/24"), "dev", &dev]));
    let mut srv = memcached(&lab.engine.0, kernel_ip, &[]);
    let to = SocketAddrV4::new(kernel_ip, 11211);
    wait_up(&lab.linux.0, to);
    rows.push((
        "Linux TCP".into(),
        load(&lab.linux.0, to, a.conns, a.secs, vec![srv.id()]),
    ));
    let _ = srv.kill();
    let _ = srv.wait();
    sh(&lab
        .engine
        .exec(&["ip", "addr", "del", &format!("{kernel_ip}/24"), "dev", &dev]));

    for backend in ["af_packet", "af_xdp"] {
        let env = [
            ("LD_PRELOAD", lib.clone()),
            ("FLEXTOE_IP", lab.engine_ip.to_string()),
            ("FLEXTOE_IFACE", lab.engine_if.clone()),
            ("FLEXTOE_BACKEND", backend.to_string()),
        ];
        let mut srv = memcached(&lab.engine.0, lab.engine_ip, &env);
        let to = SocketAddrV4::new(lab.engine_ip, 11211);
        wait_up(&lab.linux.0, to);
        rows.push((
            format!("engine ({backend})"),
            load(&lab.linux.0, to, a.conns, a.secs, vec![srv.id()]),
        ));
        let _ = srv.kill();
        let _ = srv.wait();
    }

    if a.service {
        service_row(&lab, &lib, &a, &mut rows);
    }
    print_rows(&a, &rows);
}

/// The engine service (AF_XDP) in its own process; memcached attaches to it.
fn service_row(lab: &VethLab, lib: &str, a: &Args, rows: &mut Vec<(String, Figures)>) {
    let sock = std::env::temp_dir()
        .join(format!("{}.sock", lab.engine.0))
        .to_string_lossy()
        .into_owned();
    let mut service = Command::new("ip")
        .args(["netns", "exec", &lab.engine.0, &sibling("flextoe-serviced")])
        .env("FLEXTOE_IP", lab.engine_ip.to_string())
        .env("FLEXTOE_IFACE", &lab.engine_if)
        .env("FLEXTOE_BACKEND", "af_xdp")
        .env("FLEXTOE_SERVICE", &sock)
        .stdin(Stdio::null())
        .spawn()
        .expect("flextoe-serviced");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::path::Path::new(&sock).exists() {
        assert!(Instant::now() < deadline, "the service did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let env = [
        ("LD_PRELOAD", lib.to_string()),
        ("FLEXTOE_IP", lab.engine_ip.to_string()),
        ("FLEXTOE_MODE", "service".to_string()),
        ("FLEXTOE_SERVICE", sock.clone()),
    ];
    let mut srv = memcached(&lab.engine.0, lab.engine_ip, &env);
    let to = SocketAddrV4::new(lab.engine_ip, 11211);
    wait_up(&lab.linux.0, to);
    rows.push((
        "service (af_xdp)".into(),
        load(
            &lab.linux.0,
            to,
            a.conns,
            a.secs,
            vec![srv.id(), service.id()],
        ),
    ));
    let _ = srv.kill();
    let _ = srv.wait();
    let _ = service.kill();
    let _ = service.wait();
    let _ = std::fs::remove_file(&sock);
}

fn print_rows(a: &Args, rows: &[(String, Figures)]) {
    println!(
        "memcached -t 1, {} connections, {} s, 90% get / 10% set, 100 B values, every reply checked",
        a.conns, a.secs
    );
    println!(
        "{:<20} {:>10} {:>8} {:>12} {:>9} {:>9} {:>9}",
        "server", "ops/s", "cores", "ops/s/core", "p50 us", "p99 us", "p99.9 us"
    );
    for (name, f) in rows {
        println!(
            "{:<20} {:>10.0} {:>8.2} {:>12.0} {:>9.1} {:>9.1} {:>9.1}",
            name,
            f.ops,
            f.cores,
            f.ops / f.cores.max(1e-9),
            f.lat_us[0],
            f.lat_us[1],
            f.lat_us[2]
        );
    }
    let base = &rows[0].1;
    for (name, f) in &rows[1..] {
        println!(
            "{name} / Linux: ops/s {:.2}, ops/s per core {:.2}, p50 {:.2}, p99 {:.2}, p99.9 {:.2}",
            f.ops / base.ops,
            (f.ops / f.cores.max(1e-9)) / (base.ops / base.cores.max(1e-9)),
            f.lat_us[0] / base.lat_us[0],
            f.lat_us[1] / base.lat_us[1],
            f.lat_us[2] / base.lat_us[2]
        );
    }
}
