//! Path MTU discovery against Linux: the engine's client sends to a Linux host behind a
//! Linux router whose next link takes 1000-byte packets. The far host announces an MSS of
//! 1460 (its own link is 1500 bytes), so the engine's full-sized segments leave with DF
//! set, the router answers "fragmentation needed", and the engine's segments must shrink
//! for any byte to arrive.

use super::*;
use sha2::{Digest, Sha256};

/// A Linux sink: reads one connection to its end, then answers with the byte count and the
/// SHA-256 of what it read.
const SINK: &str = r#"import hashlib, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
s.settimeout(60)
print('listening', flush=True)
c, _ = s.accept()
c.settimeout(60)
h = hashlib.sha256()
n = 0
while True:
    b = c.recv(65536)
    if not b:
        break
    h.update(b)
    n += len(b)
c.sendall(('%d %s\n' % (n, h.hexdigest())).encode())
c.close()
"#;

/// The lab's Linux side made a router: a third namespace behind it on a veth pair whose
/// router end takes 1000-byte packets (the far end 1500), the router forwarding, answering
/// ARP for the far host (proxy ARP) and sending ICMP without a rate limit. Returns the far
/// namespace and the far host's address.
fn router_behind(lab: &VethLab) -> (Netns, Ipv4Addr) {
    let far = Netns::unique("f");
    let (r_if, f_if) = (format!("{}c", lab.linux.0), format!("{}d", lab.linux.0));
    sh(&[
        "ip", "link", "add", &r_if, "type", "veth", "peer", "name", &f_if,
    ]);
    sh(&["ip", "link", "set", &r_if, "netns", &lab.linux.0]);
    sh(&["ip", "link", "set", &f_if, "netns", &far.0]);
    let x = lab.linux_ip.octets()[2];
    let (router_ip, far_ip) = (Ipv4Addr::new(10, 82, x, 1), Ipv4Addr::new(10, 82, x, 2));
    let (r, f) = (&lab.linux.0, &far.0);
    sh(&[
        "ip",
        "-n",
        r,
        "addr",
        "add",
        &format!("{router_ip}/24"),
        "dev",
        &r_if,
    ]);
    sh(&["ip", "-n", r, "link", "set", &r_if, "mtu", "1000", "up"]);
    sh(&[
        "ip",
        "-n",
        f,
        "addr",
        "add",
        &format!("{far_ip}/24"),
        "dev",
        &f_if,
    ]);
    sh(&["ip", "-n", f, "link", "set", &f_if, "up"]);
    let via = router_ip.to_string();
    sh(&["ip", "-n", f, "route", "add", "default", "via", &via]);
    for (ns, dev) in [(&lab.linux, &r_if), (&far, &f_if)] {
        sh(&ns.exec(&[
            "ethtool", "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro",
            "off",
        ]));
    }
    let li = &lab.linux_if;
    for setting in [
        "net.ipv4.ip_forward=1".to_string(),
        format!("net.ipv4.conf.{li}.proxy_arp=1"),
        "net.ipv4.conf.all.rp_filter=0".to_string(),
        format!("net.ipv4.conf.{li}.rp_filter=0"),
        "net.ipv4.icmp_ratelimit=0".to_string(),
    ] {
        sh(&lab.linux.exec(&["sysctl", "-qw", &setting]));
    }
    (far, far_ip)
}

#[test]
fn af_xdp_client_through_a_linux_router_with_a_smaller_mtu() {
    let Some(lab) = VethLab::new() else { return };
    let (far, far_ip) = router_behind(&lab);
    let ip_s = far_ip.to_string();
    let mut sink = Command::new("ip")
        .args(["netns", "exec", &far.0, python(), "-c", SINK, &ip_s, "9000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("Linux sink");
    let mut out = std::io::BufReader::new(sink.stdout.take().unwrap());
    let mut line = String::new();
    use std::io::BufRead;
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "listening");
    let rt = af_xdp_engine(&lab);
    let mut s = rt
        .host()
        .connect_blocking(SocketAddrV4::new(far_ip, 9000), Duration::from_secs(10))
        .expect("connect through the router");
    s.set_nonblocking(true);
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 31 % 253) as u8).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut at = 0;
    while at < data.len() {
        match std::io::Write::write(&mut s, &data[at..]) {
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "stuck after {at} bytes: {}",
                    rt.stats()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("write after {at} bytes: {e}: {}", rt.stats()),
        }
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no answer: {}", rt.stats());
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("read: {e}: {}", rt.stats()),
        }
    }
    let _ = sink.wait();
    let want = format!("{} {:x}\n", data.len(), Sha256::digest(&data));
    assert_eq!(
        String::from_utf8_lossy(&answer),
        want,
        "every byte, once, in order"
    );
    drop(s);
    let e = rt.stop();
    let st = e.stats();
    eprintln!("{st}");
    assert!(st.control.path_mtu_reports >= 1, "the router said so: {st}");
}
