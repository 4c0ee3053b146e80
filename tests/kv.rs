//! The memcached text protocol of `examples/kv_server.rs`, compared with the real memcached:
//! the same requests go to the kv server (on an engine, over the in-memory link, from an
//! engine client) and to memcached (over loopback, from a Linux socket), and the replies must
//! be equal byte for byte (the version string aside). Needs `memcached` on the PATH
//! (`.ci/run` installs it); skipped without it unless `CI=true`.

#[path = "../examples/support/kv.rs"]
mod kv;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flextoe::backends::mem::MemLink;
use flextoe::pipeline::{Engine, EngineConfig, Runtime};
use flextoe::sim::Impairments;
use flextoe::time::SystemClock;
use flextoe::wire::MacAddr;

/// A memcached on 127.0.0.1, killed on drop.
struct Memcached {
    child: Child,
    port: u16,
}

impl Memcached {
    fn start() -> Option<Self> {
        let ok = Command::new("sh")
            .args(["-c", "command -v memcached"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "memcached is not installed"
            );
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new("memcached");
        cmd.args([
            "-l",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "0",
            "-t",
            "1",
            "-m",
            "64",
        ]);
        // memcached run by root must be told which user to run as.
        if Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout == b"0\n")
        {
            cmd.args(["-u", "root"]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let m = Memcached { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "memcached did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(m)
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send `req` followed by `version`, and return everything before the version reply.
fn transact<S: Read + Write>(s: &mut S, req: &[u8]) -> Vec<u8> {
    let mut msg = req.to_vec();
    msg.extend_from_slice(b"version\r\n");
    let mut off = 0;
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "no complete reply to {:?}; got {:?}",
            String::from_utf8_lossy(req),
            String::from_utf8_lossy(&got)
        );
        if off < msg.len() {
            match s.write(&msg[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("write: {e}"),
            }
        }
        match s.read(&mut buf) {
            Ok(0) => panic!("closed after {:?}", String::from_utf8_lossy(req)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200))
            }
            Err(e) => panic!("read: {e}"),
        }
        if got.ends_with(b"\r\n") {
            let body = &got[..got.len() - 2];
            let last = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            if body[last..].starts_with(b"VERSION ") && off == msg.len() {
                got.truncate(last);
                return got;
            }
        }
    }
}

/// The kv server on an engine over the in-memory link, and a client engine.
struct KvOnEngine {
    server: Runtime<flextoe::backends::mem::MemPort>,
    client: Runtime<flextoe::backends::mem::MemPort>,
}

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);

impl KvOnEngine {
    fn start() -> Self {
        let (a, b) = MemLink::pair(Impairments::none());
        let server = Runtime::spawn(
            Engine::new(EngineConfig::new(MacAddr([2, 0, 0, 0, 0, 1]), SERVER_IP), a).unwrap(),
            SystemClock::new(),
        )
        .unwrap();
        let client = Runtime::spawn(
            Engine::new(
                EngineConfig::new(MacAddr([2, 0, 0, 0, 0, 2]), Ipv4Addr::new(10, 9, 0, 2)),
                b,
            )
            .unwrap(),
            SystemClock::new(),
        )
        .unwrap();
        let listener = server.host().listen(11211, 16).unwrap();
        let store = Arc::new(kv::Store::default());
        std::thread::spawn(move || {
            while let Ok(mut s) = listener.accept() {
                let store = store.clone();
                std::thread::spawn(move || kv::serve_connection(&mut s, &store));
            }
        });
        KvOnEngine { server, client }
    }

    fn connect(&self) -> flextoe::host::Stream {
        let mut s = self
            .client
            .host()
            .connect_blocking(SocketAddrV4::new(SERVER_IP, 11211), Duration::from_secs(5))
            .unwrap();
        s.set_nonblocking(true);
        s
    }
}

fn memcached_conn(m: &Memcached) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", m.port)).unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

/// Requests, one exchange each, in order (state carries over from one to the next).
fn script() -> Vec<Vec<u8>> {
    let big = vec![b'x'; 2 << 20];
    let mut too_large = b"set big 0 0 2097152\r\n".to_vec();
    too_large.extend_from_slice(&big);
    too_large.extend_from_slice(b"\r\n");
    let long_key = "k".repeat(251);
    let mut v: Vec<Vec<u8>> = [
        "get a\r\n",
        "set a 5 0 3\r\nabc\r\n",
        "get a\r\n",
        "set b 0 0 0\r\n\r\n",
        "get a b c\r\n",
        "add a 0 0 1\r\nz\r\n",
        "add c 7 0 2\r\ncc\r\n",
        "replace d 0 0 1\r\nd\r\n",
        "replace c 8 0 3\r\nccc\r\n",
        "get c\r\n",
        "append a 0 0 2\r\nde\r\n",
        "prepend a 0 0 2\r\n01\r\n",
        "get a\r\n",
        "append nokey 0 0 1\r\nx\r\n",
        "prepend nokey 0 0 1\r\nx\r\n",
        "cas nokey 0 0 1 1\r\nx\r\n",
        "delete a\r\n",
        "delete a\r\n",
        "delete b 0\r\n",
        "delete c 5\r\n",
        "delete c noreply\r\n",
        "get c\r\n",
        "set n 0 0 2\r\n10\r\n",
        "incr n 5\r\n",
        "decr n 3\r\n",
        "decr n 100\r\n",
        "get n\r\n",
        "incr n 18446744073709551615\r\n",
        "incr n x\r\n",
        "incr nokey 1\r\n",
        "set s 0 0 3\r\nabc\r\n",
        "incr s 1\r\n",
        "set n2 0 0 3\r\n100\r\n",
        "decr n2 1\r\n",
        "get n2\r\n",
        "incr n2 1\r\n",
        "get n2\r\n",
        "touch n2 100\r\n",
        "touch nokey 100\r\n",
        "touch n2 abc\r\n",
        "set e 0 -1 1\r\ne\r\n",
        "get e\r\n",
        "set t 0 100 1\r\nt\r\n",
        "get t\r\n",
        "set q 1 0 1 noreply\r\nq\r\n",
        "get q\r\n",
        "add q 0 0 1 noreply\r\nr\r\n",
        "incr n 1 noreply\r\n",
        "set bad 0 0 3\r\nabcde\r\n",
        "get bad\r\n",
        "set x 0 0\r\n",
        "set x abc 0 1\r\nx\r\n",
        "set x 0 0 -1\r\n",
        "bogus command\r\n",
        "\r\n",
        "get\r\n",
        "GET a\r\n",
        "version extra\r\n",
        "set lf 0 0 2\nlf\r\nget lf\n",
        "set p1 0 0 1\r\n1\r\nset p2 0 0 1\r\n2\r\nget p1 p2\r\ndelete p1\r\nincr p2 9\r\n",
        "set old 0 2592001 1\r\no\r\n",
        "get old\r\n",
        "set sp 0 0 3\r\n 12\r\n",
        "incr sp 1\r\n",
        "set neg 0 0 2\r\n-5\r\n",
        "incr neg 1\r\n",
        "incr n -1\r\n",
        "decr nokey 1 noreply\r\n",
        "incr s 1 noreply\r\n",
        "touch n2 5 noreply\r\n",
        "touch n2 abc noreply\r\n",
        "set nr 0 0 3 noreply\r\nabcde\r\n",
        "set nr x 0 1 noreply\r\nx\r\n",
        "cas nr 0 0 1\r\nx\r\n",
        "gets\r\n",
        "delete a b c\r\n",
        "delete a 0 noreply\r\n",
        "delete\r\n",
        "incr\r\n",
        "touch a\r\n",
        "flush_all 0 noreply extra\r\n",
        "set noreply 0 0 1\r\nn\r\n",
        "delete noreply\r\n",
        "delete noreply\r\n",
        "set n 0 0 2\r\n10\r\n",
        "incr n +5\r\n",
        "incr n -0\r\n",
        "incr n -1\r\n",
        "set p 0 0 2\r\n+5\r\n",
        "incr p 1\r\n",
        "set p 0 0 2\r\n-0\r\n",
        "incr p 1\r\n",
        "set p 0 0 3\r\n\x0b55\r\n",
        "incr p 1\r\n",
        "set p 0 0 4\r\n5 \u{7f}x\r\n",
        "incr p 1\r\n",
        "set fl -0 0 1\r\nf\r\n",
        "get fl\r\n",
        "set fl 4294967297 0 1\r\nf\r\n",
        "get fl\r\n",
        "set e2 0 2147483648 1\r\nx\r\n",
        "get e2\r\n",
        "set e3 0 0 1\r\nx\r\n",
        "touch e3 2147483648\r\n",
        "get e3\r\n",
        "set v 0 0 4294967297\r\nx\r\n",
        "get v\r\n",
        "set w 0 0 1\r\nw\r\n",
        "flush_all 4294967296\r\n",
        "get w v\r\n",
        "set a 0 0 1\r\na\r\n",
        "delete a\0 noreply\r\n",
        "set z\0 0 0 1\r\nx\r\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    // Size limits: memcached's depend on the key's length and on whether flags are set.
    let long_key2 = "q".repeat(250);
    for (key, flags, len) in [
        ("b", 0, 1048516),
        ("b", 0, 1048517),
        ("b", 1, 1048512),
        ("b", 1, 1048513),
        (long_key2.as_str(), 0, 1048267),
        (long_key2.as_str(), 0, 1048268),
    ] {
        let mut r = format!("set {key} {flags} 0 {len}\r\n").into_bytes();
        r.extend(std::iter::repeat_n(b'y', len));
        r.extend_from_slice(b"\r\n");
        v.push(r);
        v.push(format!("gets {key}\r\n").into_bytes().to_vec());
    }
    let mut ap = b"set ap 0 0 600000\r\n".to_vec();
    ap.extend(std::iter::repeat_n(b'a', 600000));
    ap.extend_from_slice(b"\r\nappend ap 0 0 600000\r\n");
    ap.extend(std::iter::repeat_n(b'b', 600000));
    ap.extend_from_slice(b"\r\n");
    v.push(ap);
    let keys: Vec<String> = (0..2500).map(|i| format!("key{i:05}")).collect();
    v.push(format!("get {}\r\n", keys.join(" ")).into_bytes());
    v.push(format!("delete {long_key} 5\r\n").into_bytes());
    v.push(format!("get {long_key}\r\n").into_bytes());
    v.push(format!("set {long_key} 0 0 1\r\nx\r\n").into_bytes());
    v.push(format!("set {long_key} 0 0 1 noreply\r\nx\r\n").into_bytes());
    v.push(format!("incr {long_key} 1\r\n").into_bytes());
    v.push(format!("delete {long_key}\r\n").into_bytes());
    v.push(format!("get a {long_key} b\r\n").into_bytes());
    v.push(too_large.clone());
    v.push(b"get big\r\n".to_vec());
    v.push(b"set big 0 0 1\r\nb\r\n".to_vec());
    v.push(too_large);
    v.push(b"get big\r\n".to_vec());
    // gets and cas: the cas values differ between servers, so they are read back from the
    // reply (see `run_script`).
    v.push(b"set g 3 0 2\r\ngg\r\n".to_vec());
    v.push(b"gets g\r\n".to_vec());
    v.push(b"cas g 4 0 3 {CAS}\r\nhhh\r\n".to_vec());
    v.push(b"cas g 4 0 3 {CAS}\r\niii\r\n".to_vec());
    v.push(b"gets g a n\r\n".to_vec());
    v.push(b"cas g 0 0 1 abc\r\nx\r\n".to_vec());
    v.push(b"flush_all\r\n".to_vec());
    v.push(b"get g n q\r\n".to_vec());
    v.push(b"set f 0 0 1\r\nf\r\n".to_vec());
    v.push(b"flush_all 0\r\n".to_vec());
    v.push(b"get f\r\n".to_vec());
    v.push(b"set after 0 0 1\r\na\r\n".to_vec());
    v.push(b"get after\r\n".to_vec());
    v.push(b"flush_all 100\r\n".to_vec());
    v.push(b"get after\r\n".to_vec());
    v.push(b"flush_all abc\r\n".to_vec());
    v.push(b"flush_all noreply\r\n".to_vec());
    v
}

/// Run the script; cas values in `gets` replies are replaced by `{CAS}` in the returned
/// transcript and substituted into later requests.
fn run_script<S: Read + Write>(s: &mut S) -> Vec<(String, String)> {
    let mut cas = String::new();
    let mut transcript = Vec::new();
    for req in script() {
        let req_s = String::from_utf8_lossy(&req).replace("{CAS}", &cas);
        let reply = transact(s, req_s.as_bytes());
        let mut text = String::from_utf8_lossy(&reply).into_owned();
        // The servers name different versions.
        if text.starts_with("VERSION ") {
            text = "VERSION *\r\n".to_string();
        }
        if req.starts_with(b"gets") {
            // "VALUE g 3 2 <cas>": remember the first item's cas, mask all of them.
            let mut masked = Vec::new();
            for line in text.split("\r\n") {
                let f: Vec<&str> = line.split(' ').collect();
                if f.len() == 5 && f[0] == "VALUE" {
                    if f[1] == "g" {
                        cas = f[4].to_string();
                    }
                    masked.push(format!("{} {} {} {} {{CAS}}", f[0], f[1], f[2], f[3]));
                } else {
                    masked.push(line.to_string());
                }
            }
            text = masked.join("\r\n");
        }
        let shown: String = String::from_utf8_lossy(&req).chars().take(60).collect();
        let text: String = if text.len() > 400 {
            format!("{}... ({} bytes)", &text[..400], text.len())
        } else {
            text
        };
        transcript.push((shown, text));
    }
    transcript
}

#[test]
fn replies_match_memcached() {
    let Some(mc) = Memcached::start() else { return };
    let want = run_script(&mut memcached_conn(&mc));
    let kv = KvOnEngine::start();
    let got = run_script(&mut kv.connect());
    let mut diffs = Vec::new();
    for ((req, w), (_, g)) in want.iter().zip(&got) {
        if w != g {
            diffs.push(format!(
                "request {req:?}\n  memcached: {w:?}\n  kv_server: {g:?}"
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    assert_eq!(want.len(), got.len());
    drop(kv.client.stop());
    drop(kv.server.stop());
}

#[test]
fn quit_closes_the_connection_on_both() {
    let Some(mc) = Memcached::start() else { return };
    let kv = KvOnEngine::start();
    fn closes<S: Read + Write>(s: &mut S) -> bool {
        s.write_all(b"quit\r\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => return false,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(_) => return true,
            }
        }
        false
    }
    assert!(closes(&mut memcached_conn(&mc)), "memcached closes on quit");
    assert!(closes(&mut kv.connect()), "kv_server closes on quit");
}

/// A value length far beyond the limit is refused at once and its bytes are dropped as they
/// arrive, never held (memcached does the same).
#[test]
fn too_large_value_is_swallowed_not_buffered() {
    let store = kv::Store::default();
    let mut session = kv::Session::default();
    let mut out = Vec::new();
    session.feed(&store, b"set k 0 0 2147483645\r\n", &mut out);
    assert_eq!(out, b"SERVER_ERROR object too large for cache\r\n");
    let junk = vec![b'j'; 1 << 20];
    for _ in 0..64 {
        out.clear();
        assert_eq!(session.feed(&store, &junk, &mut out), kv::Next::More);
        assert!(out.is_empty());
        assert_eq!(session.buffered(), 0);
    }
}

/// A long `get` line arriving in pieces is served; a long line of anything else closes the
/// connection without a reply, as memcached does.
#[test]
fn long_lines_like_memcached() {
    let Some(mc) = Memcached::start() else { return };
    let keys: Vec<String> = (0..2500).map(|i| format!("key{i:05}")).collect();
    let get = format!("get {}\r\n", keys.join(" ")).into_bytes();
    let store = kv::Store::default();
    let mut session = kv::Session::default();
    let mut out = Vec::new();
    for piece in get.chunks(1000) {
        assert_eq!(session.feed(&store, piece, &mut out), kv::Next::More);
    }
    assert_eq!(out, b"END\r\n");
    let mut s = TcpStream::connect(("127.0.0.1", mc.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for piece in get.chunks(1000) {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"END\r\n");

    let bogus = [b"set ".to_vec(), vec![b'a'; 3000]].concat();
    let mut out = Vec::new();
    let mut session = kv::Session::default();
    assert_eq!(session.feed(&store, &bogus, &mut out), kv::Next::Close);
    assert!(out.is_empty());
    let mut s = TcpStream::connect(("127.0.0.1", mc.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&bogus).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("memcached closes the connection");
    assert!(rest.is_empty(), "memcached replied {rest:?}");
}
