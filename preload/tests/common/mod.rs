//! What the tests of unmodified programs share: the lab, the library, starting programs in
//! a namespace with the environment that puts them on the engine (in-process or through
//! the service).

#![allow(dead_code)]

#[path = "../../../tests/common/lab.rs"]
pub mod lab;

use std::io::BufRead;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flextoe::backends::netns::in_netns;
use lab::{available, Netns, VethLab};

/// The library, built (once per test binary, a no-op when it is fresh) by the cargo that
/// runs the tests: `cargo test` builds the crate as an rlib only, and a stale `.so` would
/// test old code.
pub fn library() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut c = Command::new(cargo);
            c.args(["build", "-p", "flextoe-preload", "--lib"])
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
            if cfg!(feature = "dpdk") {
                c.args(["--features", "dpdk"]);
            }
            let st = c.status().expect("cargo build -p flextoe-preload");
            assert!(st.success(), "cargo build -p flextoe-preload failed");
            let exe = std::env::current_exe().unwrap();
            let dir = exe.parent().unwrap().parent().unwrap();
            let lib = dir.join("libflextoe_preload.so");
            assert!(lib.exists(), "{} is missing", lib.display());
            lib
        })
        .clone()
}

/// Whether `tools` exist; under `CI=true` a missing tool fails the test.
pub fn have(tools: &[&str]) -> bool {
    let ok = available(tools);
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI needs all of {tools:?}"
        );
        eprintln!("skipped: needs {tools:?}");
    }
    ok
}

/// A program that is killed when the test ends.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The environment that puts a program in `lab`'s engine namespace on the engine.
pub fn engine_env(lab: &VethLab) -> Vec<(&'static str, String)> {
    vec![
        ("LD_PRELOAD", library().to_string_lossy().into_owned()),
        ("FLEXTOE_IP", lab.engine_ip.to_string()),
        ("FLEXTOE_IFACE", lab.engine_if.clone()),
    ]
}

/// `args` in namespace `ns` with `env`, in `dir`.
pub fn command(
    ns: &Netns,
    env: &[(&str, String)],
    dir: Option<&std::path::Path>,
    args: &[&str],
) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns.0]).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    if let Some(d) = dir {
        c.current_dir(d);
    }
    c
}

/// Start a server; its output goes to the test's.
pub fn spawn(mut c: Command) -> Running {
    Running(c.stdin(Stdio::null()).spawn().expect("spawn"))
}

/// Wait until a TCP connection from `ns` to `to` succeeds (the server is up).
pub fn wait_listening(ns: &Netns, to: SocketAddrV4) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = in_netns(&ns.0, move || {
            TcpStream::connect_timeout(&to.into(), Duration::from_millis(500))
        })
        .is_ok();
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "nothing listens on {to}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A scratch directory with a file of `n` pseudo-random bytes; returns both.
pub fn scratch_file(tag: &str, n: usize) -> (PathBuf, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("flextoe-preload-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("blob"), &data).unwrap();
    (dir, data)
}

/// Which side of the lab runs a program, and with which environment.
pub struct Side<'a> {
    pub ns: &'a Netns,
    pub env: Vec<(&'static str, String)>,
    pub ip: Ipv4Addr,
}

/// The engine's side of `lab` (the program under the library) and Linux's.
pub fn sides(lab: &VethLab) -> (Side<'_>, Side<'_>) {
    (
        Side {
            ns: &lab.engine,
            env: engine_env(lab),
            ip: lab.engine_ip,
        },
        Side {
            ns: &lab.linux,
            env: vec![],
            ip: lab.linux_ip,
        },
    )
}

/// `python3 -m http.server` on `server` serves a 4 MiB file to `curl` on `client` three
/// times; each copy must equal the file.
pub fn http_transfer(tag: &str, server: &Side, client: &Side, probe_from: &Netns) {
    let (dir, data) = scratch_file(tag, 4 << 20);
    let ip = server.ip.to_string();
    let _srv = spawn(command(
        server.ns,
        &server.env,
        Some(&dir),
        &["python3", "-m", "http.server", "8080", "--bind", &ip],
    ));
    wait_listening(probe_from, SocketAddrV4::new(server.ip, 8080));
    let out = dir.join("got");
    let out_s = out.to_string_lossy().into_owned();
    let url = format!("http://{ip}:8080/blob");
    for _ in 0..3 {
        let _ = std::fs::remove_file(&out);
        let curl = ["curl", "-sS", "--max-time", "20", "-o", &out_s, &url];
        let o = command(client.ns, &client.env, None, &curl)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "curl: {err}");
        assert!(
            std::fs::read(&out).unwrap() == data,
            "the file came back different"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

pub fn script(name: &str) -> String {
    format!("{}/tests/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `peer.py` on Linux's side of `lab`, once all its ports listen.
pub fn start_peer(lab: &VethLab) -> Running {
    let peer_ip = lab.linux_ip.to_string();
    let peer = spawn(command(
        &lab.linux,
        &[],
        None,
        &["python3", &script("peer.py"), &peer_ip],
    ));
    for port in [
        7001, 7002, 7004, 7005, 7006, 7007, 7008, 7009, 7012, 7014, 7016,
    ] {
        wait_listening(&lab.linux, SocketAddrV4::new(lab.linux_ip, port));
    }
    peer
}

/// Run `semantics.py` on kernel sockets (Linux's namespace) and on the engine (`env` in the
/// engine's namespace) against `peer.py`; the outputs must be equal line for line.
pub fn check_semantics(lab: &VethLab, env: &[(&str, String)]) {
    let peer_ip = lab.linux_ip.to_string();
    let _peer = start_peer(lab);
    let run = |ns: &Netns, env: &[(&str, String)], own: Ipv4Addr| {
        let o = command(
            ns,
            env,
            None,
            &[
                "timeout",
                "60",
                "python3",
                &script("semantics.py"),
                &peer_ip,
                &own.to_string(),
            ],
        )
        .output()
        .unwrap();
        assert!(
            o.status.success(),
            "semantics.py ({}): {}\nits output so far:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let kernel = run(&lab.linux, &[], lab.linux_ip);
    let engine = run(&lab.engine, env, lab.engine_ip);
    eprintln!("kernel:\n{kernel}\nengine:\n{engine}");
    assert!(kernel.lines().count() >= 21, "cases missing");
    for (k, e) in kernel.lines().zip(engine.lines()) {
        assert_eq!(k, e, "the engine differs from the kernel");
    }
    assert_eq!(kernel.lines().count(), engine.lines().count());
}

/// The engine service (`flextoe-serviced`) on `lab`'s engine interface, killed when dropped.
pub struct Service {
    /// The service process.
    pub proc: Running,
    /// Its Unix socket.
    pub path: String,
}

impl Service {
    /// Start the service in `lab`'s engine namespace and wait for its socket.
    pub fn start(lab: &VethLab) -> Service {
        let path = std::env::temp_dir()
            .join(format!("{}.sock", lab.engine.0))
            .to_string_lossy()
            .into_owned();
        let _ = std::fs::remove_file(&path);
        let env = [
            ("FLEXTOE_IP", lab.engine_ip.to_string()),
            ("FLEXTOE_IFACE", lab.engine_if.clone()),
            ("FLEXTOE_SERVICE", path.clone()),
        ];
        let proc = spawn(command(
            &lab.engine,
            &env,
            None,
            &[env!("CARGO_BIN_EXE_flextoe-serviced")],
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::path::Path::new(&path).exists() {
            assert!(Instant::now() < deadline, "the service did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Service { proc, path }
    }

    /// The environment that attaches a program in the engine's namespace to this service.
    pub fn env(&self, lab: &VethLab) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", library().to_string_lossy().into_owned()),
            ("FLEXTOE_IP", lab.engine_ip.to_string()),
            ("FLEXTOE_MODE", "service".into()),
            ("FLEXTOE_SERVICE", self.path.clone()),
        ]
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Start `c` with its output read line by line: each line with the moment it came.
pub fn start_reporting(
    c: &mut std::process::Command,
) -> (Running, std::sync::mpsc::Receiver<(String, Instant)>) {
    c.stdout(Stdio::piped());
    let mut r = spawn(std::mem::replace(c, std::process::Command::new("true")));
    let out = r.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send((line, Instant::now()));
        }
    });
    (r, rx)
}

/// The next line that contains `what` (at most 10 s between lines).
pub fn wait_line(
    rx: &std::sync::mpsc::Receiver<(String, Instant)>,
    what: &str,
) -> (String, Instant) {
    loop {
        let (line, at) = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no {what:?}"));
        if line.contains(what) {
            return (line, at);
        }
    }
}

/// Keep-alives with the timing of `TCP_KEEPIDLE`, `TCP_KEEPINTVL` and `TCP_KEEPCNT`: a program
/// on the engine (`env`) holds a connection with 1 s, 1 s and 2 probes set, then Linux stops
/// answering it (its packets are dropped: no ACK to a probe, no reset). The blocked `recv`
/// must fail with `ETIMEDOUT` after the idle time and two probes, about 3 s, as on Linux;
/// with the default timing it would block for two hours. With `listen`, the program sets
/// the options on a listener and the connection it accepts (from Linux) inherits them;
/// otherwise it connects to `peer.py`.
pub fn keepalive_times_out(lab: &VethLab, env: &[(&str, String)], listen: bool) {
    let peer_ip = lab.linux_ip.to_string();
    let engine_ip = lab.engine_ip.to_string();
    let _peer = start_peer(lab);
    let args: [&str; 5] = if listen {
        [
            "python3",
            &script("hold.py"),
            "keepalive-server",
            &engine_ip,
            "7301",
        ]
    } else {
        ["python3", &script("hold.py"), "keepalive", &peer_ip, "7002"]
    };
    let mut c = command(&lab.engine, env, None, &args);
    let (_app, rx) = start_reporting(&mut c);
    // The Linux client of the listening case, held open until the end.
    let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
    let client = listen.then(|| {
        wait_line(&rx, "listening");
        let to = SocketAddrV4::new(lab.engine_ip, 7301);
        let ns = lab.linux.0.clone();
        std::thread::spawn(move || {
            in_netns(&ns, move || {
                let s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(5))?;
                let _ = hold_rx.recv_timeout(Duration::from_secs(30));
                drop(s);
                Ok(())
            })
        })
    });
    wait_line(&rx, "blocked");
    for rule in [
        vec!["add", "table", "inet", "flextoe_ka"],
        vec![
            "add",
            "chain",
            "inet",
            "flextoe_ka",
            "in",
            "{ type filter hook input priority 0 ; }",
        ],
        vec![
            "add",
            "rule",
            "inet",
            "flextoe_ka",
            "in",
            "ip",
            "saddr",
            &engine_ip,
            "drop",
        ],
    ] {
        let mut args = vec!["nft"];
        args.extend(rule);
        let o = command(&lab.linux, &[], None, &args).output().unwrap();
        assert!(
            o.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let cut = Instant::now();
    let (line, at) = wait_line(&rx, "error");
    let took = at.duration_since(cut);
    eprintln!("{line} {took:?} after the peer went silent");
    let o = command(
        &lab.linux,
        &[],
        None,
        &["nft", "delete", "table", "inet", "flextoe_ka"],
    )
    .output()
    .unwrap();
    assert!(
        o.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(line.trim(), "error TimeoutError");
    assert!(
        took > Duration::from_millis(1500) && took < Duration::from_secs(8),
        "{took:?}"
    );
    drop(hold_tx);
    if let Some(c) = client {
        c.join().unwrap().unwrap();
    }
}
