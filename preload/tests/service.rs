//! Unmodified programs attached to the engine service (`flextoe-serviced`,
//! `FLEXTOE_MODE=service`) in a namespace lab: the calls behave as the kernel's, several
//! processes share one engine, and a crash on either side is an error, never a hang.
//! Needs root, `ip`, `ethtool`, `nft`, `python3` and `curl`.

mod common;

use std::io::Read;
use std::net::{SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use common::lab::VethLab;
use common::*;
use flextoe::backends::netns::in_netns;

/// The semantics suite (`semantics.py`) through the service: equal to the kernel's.
#[test]
fn service_semantics_match_the_kernel() {
    if !have(&["python3"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let svc = Service::start(&lab);
    check_semantics(&lab, &svc.env(&lab));
}

/// Two processes on one service at once: a `python3 -m http.server` serving 4 MiB to Linux's
/// `curl` while `curl` (a second process) fetches 4 MiB from a Linux server.
#[test]
fn two_processes_share_one_service() {
    if !have(&["python3", "curl"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let svc = Service::start(&lab);
    let engine = Side {
        ns: &lab.engine,
        env: svc.env(&lab),
        ip: lab.engine_ip,
    };
    let linux = Side {
        ns: &lab.linux,
        env: vec![],
        ip: lab.linux_ip,
    };
    std::thread::scope(|s| {
        s.spawn(|| http_transfer("svc-srv", &engine, &linux, &lab.linux));
        s.spawn(|| {
            let linux8 = Side {
                ns: &lab.linux,
                env: vec![],
                ip: lab.linux_ip,
            };
            http_transfer("svc-cli", &linux8, &engine, &lab.linux)
        });
    });
}

/// One application is bounded: its 65th listener fails with `EMFILE` (each holds a port and
/// an accept queue: 65536 listeners took every port and gigabytes); the service holds at
/// most 256 attached applications, closing further attaches at once (a program attaching in
/// a loop took a thread and three descriptors each, until the service could make no thread
/// and exited), and at most 16 of one process (one attaching in a loop took all 256 places).
/// After both, the service serves on.
#[test]
fn an_application_is_bounded_in_listeners_and_attaches() {
    if !have(&["python3"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let svc = Service::start(&lab);
    let ip = lab.engine_ip.to_string();
    let listeners = format!(
        r#"
import socket, errno
n, held = 0, []
for p in range(21000, 21200):
    s = socket.socket()
    try:
        s.bind(("{ip}", p))
        s.listen(1)
    except OSError as e:
        print("refused", n, errno.errorcode.get(e.errno), flush=True)
        break
    held.append(s)
    n += 1
else:
    print("all", n, flush=True)
"#
    );
    let run = |env: &[(&str, String)], code: &str| {
        let out = command(&lab.engine, env, None, &["python3", "-c", code])
            .output()
            .expect("python3");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = run(&svc.env(&lab), &listeners);
    assert!(out.contains("refused 64 EMFILE"), "{out}");
    // One process attaching 300 times holds 16 of the places; it and seventeen more
    // processes of twenty attaches each (sixteen held each), all at once, fill the
    // service's 256.
    let attaches = format!(
        r#"
import socket, os
def attach(n):
    conns = []
    for i in range(n):
        u = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        u.connect("{}")
        conns.append(u)
    greeted = closed = 0
    for u in conns:
        u.settimeout(5)
        if u.recv(4096):
            greeted += 1
        else:
            closed += 1
    return conns, greeted, closed
held, greeted, closed = attach(300)
print("attach", greeted, closed, flush=True)
pipes = []
for k in range(17):
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    if os.fork() == 0:
        os.close(r)
        os.close(go_w)
        conns, g, _ = attach(20)
        os.write(w, bytes([g]))
        os.read(go_r, 1)
        os._exit(0)
    os.close(w)
    os.close(go_r)
    pipes.append((r, go_w))
others = [os.read(r, 1)[0] for r, _ in pipes]
print("others", max(others), sum(others), flush=True)
for _, go in pipes:
    os.write(go, b"x")
for _ in pipes:
    os.wait()
"#,
        svc.path
    );
    let out = run(&[], &attaches);
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"attach"), "{out}");
    let num = |i: usize| -> usize { words[i].parse().unwrap() };
    assert_eq!((num(1), num(2)), (16, 284), "{out}");
    assert_eq!(words.get(3), Some(&"others"), "{out}");
    assert!(num(4) <= 16, "{out}");
    assert!((250..=256).contains(&(num(1) + num(5))), "{out}");
    // The attaches are gone with their program: the service takes applications again.
    let out = run(&svc.env(&lab), &listeners);
    assert!(out.contains("refused 64 EMFILE"), "{out}");
}

/// Ports below `net.ipv4.ip_unprivileged_port_start` (1024) as the kernel's bind has them:
/// a program that holds `CAP_NET_BIND_SERVICE` listens on port 80; the same program with
/// the capability dropped (`setpriv`; the service runs as root with every capability) is
/// refused there with `EACCES` at `bind`, as on Linux (the service takes the port then) and
/// listens on 8080; so is one that dropped it and then made a user namespace of its own,
/// where it holds every capability (but only for that namespace's objects), and one that
/// attached with it and then changed to another user.
#[test]
fn a_program_without_cap_net_bind_service_cannot_listen_below_1024() {
    if !have(&["python3", "setpriv", "unshare", "timeout"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let svc = Service::start(&lab);
    let code = format!(
        r#"
import socket, errno
for p in (80, 8080):
    s = socket.socket()
    try:
        s.bind(("{}", p))
        s.listen(1)
        print(p, "ok", flush=True)
    except OSError as e:
        print(p, "bind" if s.getsockname()[1] == 0 else "listen",
              errno.errorcode.get(e.errno), flush=True)
    s.close()
"#,
        lab.engine_ip
    );
    let run = |pre: &[&str]| {
        let mut args = vec!["timeout", "60"];
        args.extend(pre);
        args.extend(["python3", "-c", &code]);
        let out = command(&lab.engine, &svc.env(&lab), None, &args)
            .output()
            .expect("python3");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (with, err) = run(&[]);
    assert_eq!(with, "80 ok\n8080 ok\n", "{err}");
    let drop_cap = [
        "setpriv",
        "--inh-caps=-net_bind_service",
        "--bounding-set=-net_bind_service",
    ];
    let (without, err) = run(&drop_cap);
    assert_eq!(without, "80 bind EACCES\n8080 ok\n", "{err}");
    let mut in_userns = drop_cap.to_vec();
    in_userns.extend(["unshare", "-Ur"]);
    let (userns, err) = run(&in_userns);
    assert_eq!(userns, "80 bind EACCES\n8080 ok\n", "{err}");
    // Attached with the capability (a listen on 8080), then gone to another user (which
    // drops every capability): the next listen on 80 is refused, asked again then.
    let later = format!(
        r#"
import socket, os, errno
a = socket.socket()
a.bind(("{ip}", 8080))
a.listen(1)
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
s = socket.socket()
try:
    s.bind(("{ip}", 80))
    s.listen(1)
    print("80 ok", flush=True)
except OSError as e:
    print("80", errno.errorcode.get(e.errno), flush=True)
"#,
        ip = lab.engine_ip
    );
    let out = command(
        &lab.engine,
        &svc.env(&lab),
        None,
        &["timeout", "60", "python3", "-c", &later],
    )
    .output()
    .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "80 EACCES\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Python that defines `attach_raw()`: attach to the service at `path` by hand, returning
/// the request socket and the four descriptors of the greeting (page, kick eventfd, wake-up
/// socket, event socket); and `connect_raw(u, ip, port)`: a CONNECT on request socket `u`,
/// returning the connection's header and rings mapped (its first page).
fn attach_py(path: &str) -> String {
    format!(
        r#"
import socket
def attach_raw():
    u = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    u.settimeout(5)
    u.connect("{path}")
    _, fds, _, _ = socket.recv_fds(u, 4096, 8)
    assert len(fds) == 4, fds
    return u, fds
import struct, mmap
def connect_raw(u, ip, port):
    addr = int.from_bytes(socket.inet_aton(ip), "big")
    u.send(struct.pack("<IiIII", 4, 0, addr, port, 0))
    msg, cfds, _, _ = socket.recv_fds(u, 4096, 8)
    op, err, a, b, seq = struct.unpack("<IiIII", msg)
    assert err == 0 and len(cfds) == 1, (err, cfds)
    return mmap.mmap(cfds[0], 4096)
"#
    )
}

/// `code` run by Python in `ns` without the library (a program that speaks the service's
/// protocol by hand), bounded at 30 s: its output and its errors.
fn raw_python(ns: &common::lab::Netns, code: &str) -> (String, String) {
    let out = command(ns, &[], None, &["timeout", "30", "python3", "-c", code])
        .output()
        .expect("python3");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each program wakes the service's pump through an eventfd of its own, and is woken
/// through a stream socket of its own. One eventfd shared by all let a program that read it
/// take the others' wake-ups (their bytes then waited for the pump's 10 ms timeout). Two
/// raw attaches get different ones (the kernel's `eventfd-id` where `/proc` shows it), and
/// what a program sends on the ends the service only sends on (its descriptors, say, which
/// parked in a queue nobody read kept a gone program's session) fails at once.
#[test]
fn each_program_kicks_the_pump_through_its_own_eventfd() {
    if !have(&["python3", "timeout"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let svc = Service::start(&lab);
    let code = format!(
        r#"
{}
import os
def kick_id(fd):
    info = open("/proc/self/fdinfo/%d" % fd).read()
    assert "eventfd-count" in info, info
    ids = [l.split()[1] for l in info.splitlines() if l.startswith("eventfd-id:")]
    return ids[0] if ids else None
ua, fa = attach_raw()
ub, fb = attach_raw()
ka, kb = kick_id(fa[1]), kick_id(fb[1])
wakes = [socket.socket(fileno=os.dup(f[2])) for f in (fa, fb)]
streams = all(w.type == socket.SOCK_STREAM for w in wakes)
print("kicks", "unknown" if ka is None else ("distinct" if ka != kb else "shared"),
      "wakes", "streams" if streams else "other", flush=True)
refused = 0
for fd in fa[2:4]:
    try:
        socket.send_fds(socket.socket(fileno=os.dup(fd)), [b"x"], [ua.fileno()])
    except BrokenPipeError:
        refused += 1
print("refused", refused, flush=True)
"#,
        attach_py(&svc.path)
    );
    let (text, err) = raw_python(&lab.engine, &code);
    if text.starts_with("kicks unknown") {
        eprintln!("this kernel shows no eventfd-id: the kicks' distinctness is not checked");
        assert_eq!(text, "kicks unknown wakes streams\nrefused 2\n", "{err}");
    } else {
        assert_eq!(text, "kicks distinct wakes streams\nrefused 2\n", "{err}");
    }
}

/// A `CONNECT` request from a bound port that the service refuses (a port past 65535, as
/// only a program speaking the protocol by hand can send) gives the bound port back, as a
/// failed connect does: it stayed held until the program went away, and a `bind` to it
/// failed with `EADDRINUSE`.
#[test]
fn a_refused_connect_request_gives_its_bound_port_back() {
    if !have(&["python3", "timeout"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let svc = Service::start(&lab);
    let code = format!(
        r#"
{}
import errno
u, fds = attach_raw()
def ask(op, a, b, seq):
    u.send(struct.pack("<IiIII", op, 0, a, b, seq))
    msg = u.recv(4096)
    _, err, a, b, _ = struct.unpack("<IiIII", msg[:20])
    return err, a
err, bound = ask(6, 21500, 0, 0)
print("bind", errno.errorcode.get(err, err), flush=True)
peer = int.from_bytes(socket.inet_aton("{}"), "big")
err, _ = ask(4, peer, 70000, bound)
print("connect", errno.errorcode.get(err, err), flush=True)
err, _ = ask(6, 21500, 0, 0)
print("bind again", errno.errorcode.get(err, err), flush=True)
"#,
        attach_py(&svc.path),
        lab.linux_ip
    );
    let (text, err) = raw_python(&lab.engine, &code);
    assert_eq!(text, "bind 0\nconnect EINVAL\nbind again 0\n", "{err}");
}

/// A process holds at most 1024 connections through the service, over all its attaches:
/// past them a `CONNECT` request fails with `ENOBUFS`, and an `ACCEPT` with `EMFILE` while
/// the connection stays queued, taken by the accept after one of the process's connections
/// ended. (A program that connected in a loop took every one of the engine's flows: every
/// other program's connections then failed, and every listener answered SYNs with a RST.)
#[test]
fn a_process_is_bounded_in_connections_over_its_attaches() {
    if !have(&["python3", "timeout"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let svc = Service::start(&lab);
    // A Linux listener that never accepts: the engine's connections to it stay open (or
    // keep trying), each held by the service.
    let silent = format!(
        r#"
import socket, time
s = socket.socket()
s.bind(("{}", 9002))
s.listen(1)
time.sleep(60)
"#,
        lab.linux_ip
    );
    let _silent = spawn(command(
        &lab.linux,
        &[],
        None,
        &["timeout", "60", "python3", "-c", &silent],
    ));
    wait_listening(&lab.linux, SocketAddrV4::new(lab.linux_ip, 9002));
    // From Linux, a connection to the program's listener (port 21600) once it listens.
    let connector = format!(
        r#"
import socket, time
held = []
for _ in range(300):
    try:
        held.append(socket.create_connection(("{}", 21600), timeout=1))
        break
    except OSError:
        time.sleep(0.1)
time.sleep(30)
"#,
        lab.engine_ip
    );
    let _connector = spawn(command(
        &lab.linux,
        &[],
        None,
        &["timeout", "40", "python3", "-c", &connector],
    ));
    let code = format!(
        r#"
{}
import errno, os, time
def ask(u, op, a, b, seq):
    u.send(struct.pack("<IiIII", op, 0, a, b, seq))
    msg, cfds, _, _ = socket.recv_fds(u, 4096, 8)
    _, err, a, b, _ = struct.unpack("<IiIII", msg[:20])
    return err, a, b, cfds
name = lambda e: errno.errorcode.get(e, e)
peer = int.from_bytes(socket.inet_aton("{}"), "big")
u1, f1 = attach_raw()
u2, f2 = attach_raw()
maps, n, err = [], [0, 0], 0
for i, u in ((0, u1), (1, u2)):
    while n[i] < 600:
        err, _, _, cfds = ask(u, 4, peer, 9002, 0)
        if err:
            break
        maps.append(mmap.mmap(cfds[0], 4096))
        os.close(cfds[0])
        n[i] += 1
print("connected", n[0], n[1], name(err), flush=True)
err, lid, _, _ = ask(u2, 1, 21600, 8, 0)
print("listen", name(err), flush=True)
for _ in range(200):
    err, _, left, cfds = ask(u2, 3, lid, 0, 0)
    if left > 0:
        break
    time.sleep(0.05)
err, _, left, cfds = ask(u2, 3, lid, 0, 0)
print("accept while full", name(err), left, len(cfds), flush=True)
# The first connection closed with a reset (APP_CLOSED | APP_ABORT), the pump kicked.
struct.pack_into("<I", maps[0], 40, 2 | 4)
os.write(f1[1], (1).to_bytes(8, "little"))
for _ in range(100):
    err, _, left, cfds = ask(u2, 3, lid, 0, 0)
    if err != errno.EMFILE:
        break
    time.sleep(0.05)
print("accept after a close", name(err), left, len(cfds), flush=True)
# A connection closed with more bytes than the engine takes (its peer reads nothing) keeps
# sending, but no longer counts against the 1024: one more connects, and then no more.
m = maps[1]
for _ in range(4):
    tail = struct.unpack_from("<Q", m, 16)[0]
    struct.pack_into("<Q", m, 32, tail + 256 * 1024)
    os.write(f1[1], (1).to_bytes(8, "little"))
    time.sleep(0.2)
struct.pack_into("<I", m, 40, 2)
os.write(f1[1], (1).to_bytes(8, "little"))
time.sleep(0.3)
stuck = struct.unpack_from("<Q", m, 32)[0] != struct.unpack_from("<Q", m, 16)[0]
e1, _, _, _ = ask(u1, 4, peer, 9002, 0)
e2, _, _, _ = ask(u1, 4, peer, 9002, 0)
print("after closing one still sending", stuck, name(e1), name(e2), flush=True)
"#,
        attach_py(&svc.path),
        lab.linux_ip
    );
    let (text, err) = raw_python(&lab.engine, &code);
    assert_eq!(
        text,
        "connected 600 424 ENOBUFS\nlisten 0\naccept while full EMFILE 1 0\naccept after a close 0 0 1\nafter closing one still sending True 0 ENOBUFS\n",
        "{err}"
    );
}

/// The service's request socket refuses descriptors (`SO_PASSRIGHTS` off on its listening
/// socket and so on every socket it accepts, Linux 6.16 and later): a program's request
/// with one attached fails in its own `sendmsg` with `EPERM`, also when sent before the
/// service accepted the connection, and the service serves its next request. (The service
/// closed what it was sent after each request; a descriptor whose close blocks, the last
/// reference to a socket lingering on unsent data, stopped the program's service thread and
/// its cleanup for good.) On an older kernel the request goes through, as before, and the
/// test says so.
#[test]
fn the_request_socket_refuses_descriptors() {
    if !have(&["python3", "timeout"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let svc = Service::start(&lab);
    let code = format!(
        r#"
{}
import errno, os
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
try:
    b.setsockopt(socket.SOL_SOCKET, 83, 0)
    supported = True
except OSError:
    supported = False
r, w = os.pipe()
# Sent at once after connecting, before the service can have accepted the connection.
v = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
v.connect("{}")
try:
    socket.send_fds(v, [struct.pack("<IiIII", 6, 0, 21702, 0, 0)], [r])
    early = "sent"
except OSError as e:
    early = errno.errorcode.get(e.errno, e.errno)
v.close()
u, fds = attach_raw()
try:
    socket.send_fds(u, [struct.pack("<IiIII", 6, 0, 21700, 0, 0)], [r])
    sent = "sent"
    u.recv(4096)
except OSError as e:
    sent = errno.errorcode.get(e.errno, e.errno)
u.send(struct.pack("<IiIII", 6, 0, 21701, 0, 0))
_, err, _, port, _ = struct.unpack("<IiIII", u.recv(4096)[:20])
print("supported" if supported else "unsupported", early, sent, "bind", err, port & 0xffff, flush=True)
"#,
        attach_py(&svc.path),
        svc.path
    );
    let (text, err) = raw_python(&lab.engine, &code);
    if text.starts_with("unsupported") {
        eprintln!("SO_PASSRIGHTS unsupported by this kernel: {text}");
        return;
    }
    assert_eq!(text, "supported EPERM EPERM bind 0 21701\n", "{err}");
}

/// A program that clears `O_NONBLOCK` on the eventfd it kicks the pump with (one open file
/// with the service's) and takes its own kicks with blocking reads while it kicks does not
/// stop the pump: it still moves the bytes of the program's next connection. (The pump
/// reads with `RWF_NOWAIT`, so that it cannot block there. In runs here a plain read did
/// not stay blocked either: this test does not tell the two apart; it checks that the
/// pump survives the abuse.)
#[test]
fn a_program_taking_its_own_kicks_does_not_block_the_pump() {
    if !have(&["python3", "timeout"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let svc = Service::start(&lab);
    let _srv = linux_holding_server(&lab, 9001);
    let code = format!(
        r#"
{attach}
import os, threading, time, struct, mmap
u, fds = attach_raw()
k = fds[1]
os.set_blocking(k, True)
def take():
    while True:
        os.read(k, 8)
for _ in range(4):
    threading.Thread(target=take, daemon=True).start()
for i in range(1000):
    os.write(k, (1).to_bytes(8, "little"))
    time.sleep(0.0005 * (i % 4))
m = connect_raw(u, "{ip}", 9001)
# The server's "hi" in the receive ring: the pump moved it (rx_head, bytes 8..16).
deadline = time.time() + 5
while struct.unpack_from("<Q", m, 8)[0] < 2 and time.time() < deadline:
    time.sleep(0.01)
print("moved" if struct.unpack_from("<Q", m, 8)[0] == 2 else "stuck", flush=True)
os._exit(0)
"#,
        attach = attach_py(&svc.path),
        ip = lab.linux_ip
    );
    let (text, err) = raw_python(&lab.engine, &code);
    assert_eq!(text, "moved\n", "{err}");
}

/// A Linux server on `lab`'s Linux side at `port` that accepts every connection, sends
/// it "hi" and holds it (for a minute at most).
fn linux_holding_server(lab: &VethLab, port: u16) -> Running {
    let server = format!(
        r#"
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{}", {port}))
s.listen(8)
held = []
while True:
    c, _ = s.accept()
    c.sendall(b"hi")
    held.append(c)
"#,
        lab.linux_ip
    );
    let srv = spawn(command(
        &lab.linux,
        &[],
        None,
        &["timeout", "60", "python3", "-c", &server],
    ));
    wait_listening(&lab.linux, SocketAddrV4::new(lab.linux_ip, port));
    srv
}

/// The pump sleeps when nothing moves: with a program attached that kicked it once, the
/// service takes under 0.3 s of CPU time over an idle second. (Once the pump drained the
/// engine's eventfd as if it were a socket, never read it, and spun on it: a whole CPU.)
#[test]
fn an_idle_service_sleeps() {
    use std::io::BufRead;
    if !have(&["python3", "timeout"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let svc = Service::start(&lab);
    let code = format!(
        r#"
{}
import time
u, fds = attach_raw()
# One kick.
import os
os.write(fds[1], (1).to_bytes(8, "little"))
print("attached", flush=True)
time.sleep(4)
"#,
        attach_py(&svc.path)
    );
    let mut c = command(
        &lab.engine,
        &[],
        None,
        &["timeout", "10", "python3", "-c", &code],
    );
    let mut holder = Running(
        c.stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3"),
    );
    let mut line = String::new();
    let out = holder.0.stdout.take().expect("its output");
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("a line");
    assert_eq!(line.trim(), "attached");
    std::thread::sleep(Duration::from_millis(300));
    let pid = svc.proc.0.id();
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the service");
        let after = &stat[stat.rfind(')').expect("a name") + 2..];
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
        f[11] + f[12]
    };
    // SAFETY: sysconf takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let before = cpu();
    std::thread::sleep(Duration::from_secs(1));
    let used = (cpu() - before) as f64 / hz;
    assert!(
        used < 0.3,
        "the idle service used {used:.2} s of CPU in a second"
    );
}

/// A program that rewrites what the service writes in a connection's shared header (its
/// status word) is not woken for it, nor the pump kept busy rewriting it back: the pump
/// compares against its own copy.
/// Compared against the header's, each rewrite was undone at the next pass and the
/// program woken for it. A raw attach (the service's protocol by hand) connects to a
/// Linux server, then writes the status word 500 times a millisecond apart and counts
/// the wake-ups the service gave it meanwhile: a few at most (hundreds before: 278 in a run).
#[test]
fn a_program_rewriting_its_header_is_not_woken_for_it() {
    if !have(&["python3", "timeout"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let svc = Service::start(&lab);
    let _srv = linux_holding_server(&lab, 9000);
    let code = format!(
        r#"
{attach}
import struct, mmap, os, time, errno
u, fds = attach_raw()
wake = fds[2]
os.set_blocking(wake, False)
m = connect_raw(u, "{ip}", 9000)
deadline = time.time() + 5
while struct.unpack_from("<I", m, 0)[0] != 1 and time.time() < deadline:
    time.sleep(0.01)
assert struct.unpack_from("<I", m, 0)[0] == 1, "not established"
time.sleep(0.1)
def kicks():
    n = 0
    while True:
        try:
            n += len(os.read(wake, 4096))
        except BlockingIOError:
            return n
kicks()
for i in range(500):
    struct.pack_into("<I", m, 0, 0x7777)
    time.sleep(0.001)
print("kicks", kicks(), flush=True)
"#,
        attach = attach_py(&svc.path),
        ip = lab.linux_ip
    );
    let (text, err) = raw_python(&lab.engine, &code);
    let kicks: u64 = text
        .strip_prefix("kicks ")
        .and_then(|k| k.trim().parse().ok())
        .unwrap_or_else(|| panic!("{text}{err}"));
    assert!(kicks <= 5, "{kicks} wake-ups for nothing that moved");
}

/// A program that prints `line` when ready: started with its output read line by line.
/// Keep-alive timing options reach the engine through the service too.
#[test]
fn service_keepalive_options_time_out_a_silent_peer() {
    if !have(&["python3", "nft"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let svc = Service::start(&lab);
    keepalive_times_out(&lab, &svc.env(&lab), false);
    keepalive_times_out(&lab, &svc.env(&lab), true);
}

/// Killing an application mid-connection: the service resets its connection, and the
/// Linux peer's blocked read fails with a reset within a second.
#[test]
fn a_killed_application_resets_its_connections() {
    killed_application(false);
}

/// The same with a forked child of the application still alive: the child does not keep the
/// parent's session (it closed its copies of the service's sockets at the fork).
#[test]
fn a_killed_application_resets_its_connections_while_its_child_lives() {
    killed_application(true);
}

fn killed_application(fork: bool) {
    if !have(&["python3"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let svc = Service::start(&lab);
    let ip = lab.engine_ip.to_string();
    let mut c = command(
        &lab.engine,
        &svc.env(&lab),
        None,
        &[
            "python3",
            &script("hold.py"),
            if fork { "server-fork" } else { "server" },
            &ip,
            "7300",
        ],
    );
    let (mut app, rx) = start_reporting(&mut c);
    let _ = wait_line(&rx, "listening");
    let to = SocketAddrV4::new(lab.engine_ip, 7300);
    let (conn_tx, conn_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn({
        let ns = lab.linux.0.clone();
        move || {
            in_netns(&ns, move || {
                let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(5))?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut b = [0u8; 5];
                s.read_exact(&mut b)?;
                let _ = conn_tx.send(());
                // Blocks until the connection ends.
                let r = s.read(&mut b);
                Ok((r.map_err(|e| e.kind()), Instant::now()))
            })
            .unwrap()
        }
    });
    wait_line(&rx, "accepted");
    conn_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the peer got the greeting");
    let child = fork.then(|| {
        let (line, _) = wait_line(&rx, "forked");
        line["forked ".len()..].trim().parse::<u32>().unwrap()
    });
    let killed = Instant::now();
    app.0.kill().unwrap();
    let _ = app.0.wait();
    let (r, at) = reader.join().unwrap();
    if let Some(pid) = child {
        // The child is ours (and sleeps 30 s at most anyway).
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    let took = at.duration_since(killed);
    eprintln!("the peer's read after the kill: {r:?} in {took:?}");
    assert_eq!(r, Err(std::io::ErrorKind::ConnectionReset));
    assert!(took < Duration::from_secs(1), "{took:?}");
}

/// Killing the service: an application blocked in `recv` on a service connection gets an
/// error (`ECONNRESET`) within a second, not a hang.
#[test]
fn a_killed_service_fails_blocked_calls_within_a_second() {
    if !have(&["python3"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let peer_ip = lab.linux_ip.to_string();
    let _peer = start_peer(&lab);
    let mut svc = Service::start(&lab);
    let mut c = command(
        &lab.engine,
        &svc.env(&lab),
        None,
        &["python3", &script("hold.py"), "client", &peer_ip, "7002"],
    );
    let (_app, rx) = start_reporting(&mut c);
    wait_line(&rx, "blocked");
    // Let the call block.
    std::thread::sleep(Duration::from_millis(200));
    let killed = Instant::now();
    svc.proc.0.kill().unwrap();
    let _ = svc.proc.0.wait();
    let (_, at) = wait_line(&rx, "error");
    let took = at.duration_since(killed);
    eprintln!("the blocked recv failed {took:?} after the kill");
    assert!(took < Duration::from_secs(1), "{took:?}");
}
