//! Unmodified programs on the engine through the LD_PRELOAD library, in a namespace lab:
//! the program runs in the engine's namespace with the library, its peer is Linux in the
//! other namespace. Needs root, `ip`, `ethtool`, `nft`, and each program (a test whose
//! program is missing says so and passes, except under `CI=true`).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::lab::VethLab;
use common::*;
use flextoe::backends::netns::in_netns;
/// `python3 -m http.server` on the engine serves a 4 MiB file to Linux's `curl`, three
/// times, byte for byte.
#[test]
fn python_http_server_on_the_engine_serves_curl() {
    if !have(&["python3", "curl"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let (engine, linux) = sides(&lab);
    http_transfer("http", &engine, &linux, &lab.linux);
}

/// `curl` on the engine fetches a 4 MiB file from a Linux `python3 -m http.server`.
#[test]
fn curl_on_the_engine_fetches_from_linux() {
    if !have(&["python3", "curl"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let (engine, linux) = sides(&lab);
    http_transfer("curl", &linux, &engine, &lab.linux);
}

/// One memcached text-protocol request; returns the reply up to its end marker.
fn mc_request(s: &mut TcpStream, req: &[u8], end: &[u8]) -> Vec<u8> {
    s.write_all(req).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(end) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "memcached closed the connection");
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// Unmodified memcached (two worker threads, epoll through libevent) on the engine `env`
/// selects: `memcslap` and `memcaslap` (memaslap, verifying every value) load it from Linux,
/// and a checking client stores and reads back 2000 keys of varied sizes over 8
/// connections, every reply compared.
fn memcached_checked(lab: &VethLab, env: &[(&str, String)]) {
    let ip = lab.engine_ip.to_string();
    let _srv = spawn(command(
        &lab.engine,
        env,
        None,
        &[
            "memcached",
            "-u",
            "root",
            "-l",
            &ip,
            "-p",
            "11211",
            "-t",
            "2",
            "-U",
            "0",
            "-m",
            "64",
        ],
    ));
    let to = SocketAddrV4::new(lab.engine_ip, 11211);
    wait_listening(&lab.linux, to);
    for test in ["set", "get"] {
        let o = command(
            &lab.linux,
            &[],
            None,
            &[
                "timeout",
                "60",
                "memcslap",
                &format!("--servers={ip}:11211"),
                "--concurrency=4",
                "--execute-number=2000",
                &format!("--test={test}"),
            ],
        )
        .output()
        .unwrap();
        let text =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        eprintln!("memcslap --test={test}:\n{text}");
        assert!(
            o.status.success() && !text.contains("error") && !text.contains("FAILURE"),
            "{text}"
        );
    }
    // memaslap (Debian's `memcaslap`): 90% get, 10% set over 8 connections for two seconds,
    // every value it gets back verified against what it set.
    let o = command(
        &lab.linux,
        &[],
        None,
        &[
            "timeout",
            "60",
            "memcaslap",
            &format!("--servers={ip}:11211"),
            "--concurrency=8",
            "--threads=1",
            "--time=2s",
            "--verify=1.0",
        ],
    )
    .output()
    .unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    eprintln!("memcaslap:\n{text}");
    let count = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.trim().parse().ok())
    };
    assert!(o.status.success(), "{text}");
    assert!(count("cmd_get:").is_some_and(|n| n > 1000), "{text}");
    assert_eq!(count("verify_failed:"), Some(0), "{text}");
    assert_eq!(count("verify_misses:"), Some(0), "{text}");
    let checked = in_netns(&lab.linux.0, move || {
        let clients: Vec<_> = (0..8u64)
            .map(|c| {
                std::thread::spawn(move || {
                    let mut s =
                        TcpStream::connect_timeout(&to.into(), Duration::from_secs(5)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let value = |k: u64| -> Vec<u8> {
                        let len = 1 + (k * 7919 % 3000) as usize;
                        (0..len)
                            .map(|i| b'a' + ((k as usize + i) % 26) as u8)
                            .collect()
                    };
                    for k in (c * 250)..(c * 250 + 250) {
                        let v = value(k);
                        let mut req = format!("set key{k} 0 0 {}\r\n", v.len()).into_bytes();
                        req.extend_from_slice(&v);
                        req.extend_from_slice(b"\r\n");
                        assert_eq!(mc_request(&mut s, &req, b"\r\n"), b"STORED\r\n");
                    }
                    for k in (c * 250)..(c * 250 + 250) {
                        let v = value(k);
                        let got =
                            mc_request(&mut s, format!("get key{k}\r\n").as_bytes(), b"END\r\n");
                        let mut want = format!("VALUE key{k} 0 {}\r\n", v.len()).into_bytes();
                        want.extend_from_slice(&v);
                        want.extend_from_slice(b"\r\nEND\r\n");
                        assert!(got == want, "key{k}: wrong reply");
                    }
                    250u64
                })
            })
            .collect();
        Ok(clients.into_iter().map(|c| c.join().unwrap()).sum::<u64>())
    })
    .unwrap();
    assert_eq!(checked, 2000);
}

/// memcached on the engine's AF_XDP backend (see [`memcached_checked`]).
#[test]
fn memcached_on_the_engine_serves_memcslap_and_checked_clients() {
    if !have(&["memcached", "memcslap", "memcaslap"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let mut env = engine_env(&lab);
    env.push(("FLEXTOE_BACKEND", "af_xdp".into()));
    memcached_checked(&lab, &env);
}

/// memcached on the engine's DPDK backend: DPDK's `net_af_packet` PMD on the veth end, its
/// EAL inside memcached's process (feature `dpdk`; see [`memcached_checked`]).
#[cfg(feature = "dpdk")]
#[test]
fn memcached_on_dpdk_serves_memcslap_and_checked_clients() {
    if !have(&["memcached", "memcslap", "memcaslap"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let mut env = engine_env(&lab);
    env.retain(|(k, _)| *k != "FLEXTOE_IFACE");
    env.push(("FLEXTOE_BACKEND", "dpdk".into()));
    // The PMD's kernel ring: a frame's data must fit an mbuf after its headroom.
    let dev = format!(
        "{},iface={},qpairs=1,blocksz=28672,framesz=1792,framecnt=512",
        format_args!("net_af_packet{}", std::process::id() % 1000),
        lab.engine_if
    );
    env.push(("FLEXTOE_IFACE", dev));
    memcached_checked(&lab, &env);
}

/// `nc` both ways: a listening `nc` on the engine receives a 1 MiB file from Linux's, and
/// an engine `nc` sends one to a listening Linux `nc`.
#[test]
fn nc_both_ways() {
    if !have(&["nc"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let (dir, data) = scratch_file("nc", 1 << 20);
    let blob = dir.join("blob").to_string_lossy().into_owned();
    let (engine, linux) = sides(&lab);
    for engine_listens in [true, false] {
        let got = dir.join("got");
        let (l, c) = if engine_listens {
            (&engine, &linux)
        } else {
            (&linux, &engine)
        };
        let lip = l.ip;
        let out = std::fs::File::create(&got).unwrap();
        let mut nc = command(l.ns, &l.env, None, &["nc", "-l", &lip.to_string(), "9000"]);
        nc.stdout(out);
        let mut listener = spawn(nc);
        std::thread::sleep(Duration::from_millis(500));
        let o = command(
            c.ns,
            &c.env,
            None,
            &["sh", "-c", &format!("nc -N {lip} 9000 < {blob}")],
        )
        .output()
        .unwrap();
        assert!(
            o.status.success(),
            "nc: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while listener.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the listening nc did not finish");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            std::fs::read(&got).unwrap() == data,
            "engine listens: {engine_listens}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The intercepted calls against the kernel's own behaviour: `semantics.py` runs its cases
/// (error codes of connect, read, write, accept; SO_ERROR; epoll level, edge and one-shot;
/// poll over a pipe and a socket; dup; FIONREAD and MSG_PEEK; threads) once on kernel
/// sockets in Linux's namespace and once on the engine, against the same peer; the outputs
/// must be equal line for line.
#[test]
fn semantics_match_the_kernel() {
    if !have(&["python3"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    check_semantics(&lab, &engine_env(&lab));
}

/// Keep-alive timing options take effect on the engine (`keepalive_times_out`).
#[test]
fn keepalive_options_time_out_a_silent_peer() {
    if !have(&["python3", "nft"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    keepalive_times_out(&lab, &engine_env(&lab), false);
    keepalive_times_out(&lab, &engine_env(&lab), true);
}

/// One RESP request (an array of bulk strings); returns the reply's first line and, for a
/// bulk string, its payload.
fn resp(s: &mut std::io::BufReader<TcpStream>, args: &[&[u8]]) -> (String, Option<Vec<u8>>) {
    use std::io::BufRead;
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a);
        req.extend_from_slice(b"\r\n");
    }
    s.get_mut().write_all(&req).unwrap();
    let mut line = String::new();
    s.read_line(&mut line).unwrap();
    let line = line.trim_end().to_string();
    let bulk = match line.strip_prefix('$').map(|n| n.parse::<i64>().unwrap()) {
        Some(n) if n >= 0 => {
            let mut v = vec![0u8; n as usize + 2];
            s.read_exact(&mut v).unwrap();
            v.truncate(n as usize);
            Some(v)
        }
        _ => None,
    };
    (line, bulk)
}

/// Unmodified `redis-server` on the engine: `redis-benchmark` from Linux completes SET, GET,
/// INCR, LPUSH and LPOP, and 8 checking clients set and read back 250 keys each, count with
/// INCR and push and pop a list, every reply compared.
#[test]
fn redis_on_the_engine_serves_redis_benchmark_and_checked_clients() {
    if !have(&["redis-server", "redis-benchmark"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let ip = lab.engine_ip.to_string();
    let _srv = spawn(command(
        &lab.engine,
        &engine_env(&lab),
        None,
        &[
            "redis-server",
            "--bind",
            &ip,
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
        ],
    ));
    let to = SocketAddrV4::new(lab.engine_ip, 6379);
    wait_listening(&lab.linux, to);
    let bench = [
        "timeout",
        "120",
        "redis-benchmark",
        "-h",
        &ip,
        "-p",
        "6379",
        "-n",
        "20000",
        "-c",
        "8",
        "-q",
        "-t",
        "set,get,incr,lpush,lpop",
    ];
    let o = command(&lab.linux, &[], None, &bench).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).replace('\r', "\n");
    let done: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("requests per second"))
        .collect();
    eprintln!("{}", done.join("\n"));
    assert!(o.status.success() && done.len() == 5, "{text}");
    let checked = in_netns(&lab.linux.0, move || {
        let clients: Vec<_> = (0..8u64)
            .map(|c| {
                std::thread::spawn(move || {
                    let s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(5)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut s = std::io::BufReader::new(s);
                    let value = |k: u64| format!("v{k}-{}", "x".repeat((k * 131 % 2000) as usize));
                    for k in c * 250..c * 250 + 250 {
                        let key = format!("key{k}");
                        let r = resp(&mut s, &[b"SET", key.as_bytes(), value(k).as_bytes()]);
                        assert_eq!(r.0, "+OK");
                    }
                    for k in c * 250..c * 250 + 250 {
                        let key = format!("key{k}");
                        let r = resp(&mut s, &[b"GET", key.as_bytes()]);
                        assert_eq!(r.1.as_deref(), Some(value(k).as_bytes()), "{key}");
                    }
                    let counter = format!("counter{c}");
                    for i in 1..=100 {
                        let r = resp(&mut s, &[b"INCR", counter.as_bytes()]);
                        assert_eq!(r.0, format!(":{i}"));
                    }
                    let list = format!("list{c}");
                    for i in 0..50 {
                        resp(
                            &mut s,
                            &[b"RPUSH", list.as_bytes(), format!("{i}").as_bytes()],
                        );
                    }
                    for i in 0..50 {
                        let r = resp(&mut s, &[b"LPOP", list.as_bytes()]);
                        assert_eq!(r.1, Some(format!("{i}").into_bytes()));
                    }
                    250u64
                })
            })
            .collect();
        Ok(clients.into_iter().map(|c| c.join().unwrap()).sum::<u64>())
    })
    .unwrap();
    assert_eq!(checked, 2000);
}

/// Unmodified `nginx` (one process: `master_process off`, since a forked worker would not
/// have the engine) on the engine: a 64 MiB file to `curl` twice (sent with `sendfile`),
/// byte for byte, then `ab` with keep-alive and without, no request failed.
#[test]
fn nginx_on_the_engine_serves_curl_and_ab() {
    if !have(&["nginx", "curl", "ab"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let (dir, data) = scratch_file("nginx", 64 << 20);
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::write(dir.join("index.html"), b"hello from nginx on the engine\n").unwrap();
    let d = dir.to_string_lossy();
    let ip = lab.engine_ip.to_string();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1;\n\
         error_log {d}/error.log info; pid {d}/nginx.pid;\n\
         events {{ worker_connections 256; }}\n\
         http {{ access_log off; sendfile on;\n\
           client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
           uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
           server {{ listen {ip}:8090; root {d}; }} }}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let conf_path = format!("{d}/nginx.conf");
    let _srv = spawn(command(
        &lab.engine,
        &engine_env(&lab),
        None,
        &["nginx", "-c", &conf_path, "-p", &d],
    ));
    wait_listening(&lab.linux, SocketAddrV4::new(lab.engine_ip, 8090));
    let out = format!("{d}/got");
    let url = format!("http://{ip}:8090/blob");
    for _ in 0..2 {
        let _ = std::fs::remove_file(&out);
        let curl = ["curl", "-sS", "--max-time", "60", "-o", &out, &url];
        let o = command(&lab.linux, &[], None, &curl).output().unwrap();
        assert!(
            o.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            std::fs::read(&out).unwrap() == data,
            "the file came back different"
        );
    }
    let page = format!("http://{ip}:8090/index.html");
    for keepalive in [true, false] {
        let mut args = vec!["timeout", "60", "ab", "-n", "2000", "-c", "8"];
        if keepalive {
            args.push("-k");
        }
        args.push(&page);
        let o = command(&lab.linux, &[], None, &args).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("Complete")
                    || l.starts_with("Failed")
                    || l.starts_with("Requests per")
            })
            .collect();
        eprintln!("ab keep-alive {keepalive}: {lines:?}");
        assert!(o.status.success(), "{text}");
        assert!(text.contains("Complete requests:      2000"), "{text}");
        assert!(text.contains("Failed requests:        0"), "{text}");
        assert!(!text.contains("Non-2xx"), "{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The receiver's figure of an `iperf3 -J` report, in bits per second.
fn iperf_bps(json: &str) -> f64 {
    let at = json.find("\"sum_received\"").expect("sum_received");
    let rest = &json[at..];
    let b = rest.find("\"bits_per_second\"").expect("bits_per_second");
    let num: String = rest[b + 18..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == 'e' || *c == '+')
        .collect();
    num.parse().unwrap()
}

/// `iperf3` against Linux: the engine's server receives from a Linux client, the engine's
/// client sends to a Linux server, and receives from it (`-R`); each moves data.
#[test]
fn iperf3_client_and_server_against_linux() {
    if !have(&["iperf3"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let (engine, linux) = sides(&lab);
    for (server, client, reverse) in [
        (&engine, &linux, false),
        (&linux, &engine, false),
        (&linux, &engine, true),
    ] {
        let sip = server.ip.to_string();
        // A probing connection would be taken for the one client `-1` serves: wait for the
        // server's own word that it listens.
        let mut c = command(
            server.ns,
            &server.env,
            None,
            &[
                "iperf3",
                "-s",
                "-B",
                &sip,
                "-p",
                "5201",
                "-1",
                "--forceflush",
            ],
        );
        c.stdout(Stdio::piped());
        let mut srv = spawn(c);
        let out = srv.0.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("iperf3 -s listens");
        let mut args = vec![
            "timeout", "60", "iperf3", "-c", &sip, "-p", "5201", "-t", "2", "-J",
        ];
        if reverse {
            args.push("-R");
        }
        let o = command(client.ns, &client.env, None, &args)
            .output()
            .unwrap();
        let json = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "iperf3: {json}");
        let bps = iperf_bps(&json);
        eprintln!(
            "iperf3 server on {sip}, reverse {reverse}: {:.0} Mbit/s",
            bps / 1e6
        );
        assert!(bps > 1e6, "{json}");
    }
}

/// `fork` on the engine: the child's engine socket fails its first call (it does not hang:
/// the engine stayed in the parent) and the parent's connection keeps working.
#[test]
fn fork_child_loses_engine_sockets_parent_keeps_them() {
    if !have(&["python3"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let peer_ip = lab.linux_ip.to_string();
    let _peer = start_peer(&lab);
    let args = ["timeout", "30", "python3", &script("fork.py"), &peer_ip];
    let o = command(&lab.engine, &engine_env(&lab), None, &args)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    eprintln!("{out}");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("child: error"), "{out}");
    assert!(out.contains("parent: b'after'"), "{out}");
}
