//! The test lab: network namespaces joined by a veth pair, or holding a TAP device, with
//! unique names, addresses inside them only, offloads off, and removal when dropped (also
//! when a test fails and unwinds).
//!
//! A lab needs root and `ip`, `ethtool`, `nft`. Without them the lab is skipped (`None`),
//! except under `CI=true`, where a lab that cannot be built fails the test.

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Run a command; panic with its output when it fails.
pub fn sh(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{:?} failed: {}{}",
        args,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command, returning its output whatever happened.
pub fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{:?}: {e}", args))
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether labs can be built here; under `CI=true` a missing prerequisite is a failure.
pub fn available(tools: &[&str]) -> bool {
    let root = run(&["id", "-u"]).stdout == b"0\n";
    let missing: Vec<&&str> = tools.iter().filter(|t| !have(t)).collect();
    let ok = root && missing.is_empty();
    if !ok {
        let why = format!("lab unavailable: root={root}, missing tools {missing:?}");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{why}");
        }
        eprintln!("skipping: {why}");
    }
    ok
}

/// A network namespace, deleted on drop (with every device in it).
pub struct Netns(pub String);

impl Netns {
    fn new(name: String) -> Self {
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &name,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
        ]);
        Netns(name)
    }

    /// A new namespace with a name no other lab of this process uses, ending in `suffix`.
    pub fn unique(suffix: &str) -> Self {
        let (base, _) = unique();
        Self::new(format!("{base}{suffix}"))
    }

    /// `ip netns exec <ns> <args...>` as an argument vector.
    pub fn exec<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["ip", "netns", "exec", self.0.as_str()];
        v.extend_from_slice(args);
        v
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(o) = Command::new("ip").args(["netns", "pids", &self.0]).output() {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("kill").arg(pid).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn unique() -> (String, u32) {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    (format!("ft{}x{}", std::process::id() % 100_000, n), n)
}

/// Two namespaces and a veth pair: Linux owns `linux_ip` on `linux_if` in `linux`; the
/// engine opens `engine_if` in `engine`, which has no address (the kernel must not answer
/// for the engine's IP).
pub struct VethLab {
    pub linux: Netns,
    pub engine: Netns,
    pub linux_if: String,
    pub engine_if: String,
    pub linux_ip: Ipv4Addr,
    pub engine_ip: Ipv4Addr,
}

impl VethLab {
    pub fn new() -> Option<Self> {
        Self::with_queues(1)
    }

    /// A lab whose veth ends have `queues` receive and transmit queues each (Linux spreads
    /// its flows over them by hash; the engine's end receives each on the queue it was
    /// sent on).
    pub fn with_queues(queues: u32) -> Option<Self> {
        if !available(&["ip", "ethtool", "nft"]) {
            return None;
        }
        let (base, n) = unique();
        let linux = Netns::new(format!("{base}l"));
        let engine = Netns::new(format!("{base}e"));
        let (li, ei) = (format!("{base}a"), format!("{base}b"));
        let q = queues.to_string();
        sh(&[
            "ip",
            "link",
            "add",
            &li,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &ei,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ]);
        sh(&["ip", "link", "set", &li, "netns", &linux.0]);
        sh(&["ip", "link", "set", &ei, "netns", &engine.0]);
        let subnet = 10 + (n % 200) as u8;
        let linux_ip = Ipv4Addr::new(10, 81, subnet, 1);
        let engine_ip = Ipv4Addr::new(10, 81, subnet, 2);
        sh(&[
            "ip",
            "-n",
            &linux.0,
            "addr",
            "add",
            &format!("{linux_ip}/24"),
            "dev",
            &li,
        ]);
        for (ns, dev) in [(&linux, &li), (&engine, &ei)] {
            sh(&["ip", "-n", &ns.0, "link", "set", dev, "up"]);
            // Real wire frames: no checksum offload, no segmentation offload.
            let args = ns.exec(&[
                "ethtool", "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro",
                "off",
            ]);
            sh(&args);
        }
        Some(VethLab {
            linux,
            engine,
            linux_if: li,
            engine_if: ei,
            linux_ip,
            engine_ip,
        })
    }
}

/// One namespace with a TAP device: Linux owns `linux_ip` on it; the engine opens the
/// device and uses `engine_ip`, which is local to no namespace.
pub struct TapLab {
    pub ns: Netns,
    pub tap: String,
    pub linux_ip: Ipv4Addr,
    pub engine_ip: Ipv4Addr,
}

impl TapLab {
    pub fn new() -> Option<Self> {
        if !available(&["ip", "nft"]) || !std::path::Path::new("/dev/net/tun").exists() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("no /dev/net/tun");
            }
            return None;
        }
        let (base, n) = unique();
        let ns = Netns::new(format!("{base}t"));
        let tap = format!("{base}p");
        sh(&[
            "ip", "-n", &ns.0, "tuntap", "add", "dev", &tap, "mode", "tap",
        ]);
        let subnet = 10 + (n % 200) as u8;
        let linux_ip = Ipv4Addr::new(10, 82, subnet, 1);
        let engine_ip = Ipv4Addr::new(10, 82, subnet, 2);
        sh(&[
            "ip",
            "-n",
            &ns.0,
            "addr",
            "add",
            &format!("{linux_ip}/24"),
            "dev",
            &tap,
        ]);
        sh(&["ip", "-n", &ns.0, "link", "set", &tap, "up"]);
        Some(TapLab {
            ns,
            tap,
            linux_ip,
            engine_ip,
        })
    }
}

/// Drop `permille`/1000 of the IPv4 packets Linux receives in `ns` and of those it sends
/// (random, by nftables); removed with the namespace.
pub fn linux_loss(ns: &Netns, permille: u32) {
    let rules = format!(
        "table inet ftloss {{
  chain pre {{ type filter hook prerouting priority -300; policy accept; meta nfproto ipv4 meta l4proto tcp numgen random mod 1000 < {permille} counter drop; }}
  chain post {{ type filter hook postrouting priority 300; policy accept; meta nfproto ipv4 meta l4proto tcp numgen random mod 1000 < {permille} counter drop; }}
}}"
    );
    let path = std::env::temp_dir().join(format!("{}-loss.nft", ns.0));
    std::fs::write(&path, rules).unwrap();
    let p = path.to_string_lossy().into_owned();
    sh(&ns.exec(&["nft", "-f", &p]));
    let _ = std::fs::remove_file(path);
}

/// Packets nftables dropped in `ns` (from [`linux_loss`]).
pub fn linux_loss_count(ns: &Netns) -> u64 {
    let out = sh(&ns.exec(&["nft", "list", "table", "inet", "ftloss"]));
    out.split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "packets")
        .filter_map(|w| w[1].parse::<u64>().ok())
        .sum()
}
