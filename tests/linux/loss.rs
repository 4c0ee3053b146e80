//! Transfers under loss against Linux, timed: the engine's and Linux's own stacks through
//! the same nftables drops.

use super::*;

/// A Linux client's 16 MiB echo against `ip`:7 from `ns`, timed (wall seconds, Python's
/// start included, as for every side of the comparison).
fn timed_echo(ns: &Netns, ip: Ipv4Addr, bytes: u64) -> f64 {
    let (ip_s, n_s) = (ip.to_string(), bytes.to_string());
    let t0 = std::time::Instant::now();
    let out = run(&ns.exec(&[python(), &script("echo_client.py"), &ip_s, "7", &n_s]));
    let secs = t0.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(" ok"), "{text}");
    secs
}

/// A Linux echo server on `lab`'s engine side (the kernel owns the engine's address there),
/// then a timed echo from the Linux side: the baseline for the engine's time.
fn linux_echo_time(lab: &VethLab, bytes: u64, cc: Option<&str>) -> f64 {
    let cidr = format!("{}/24", lab.engine_ip);
    sh(&[
        "ip",
        "-n",
        &lab.engine.0,
        "addr",
        "add",
        &cidr,
        "dev",
        &lab.engine_if,
    ]);
    let ip_s = lab.engine_ip.to_string();
    let cc_env = format!("FLEXTOE_TCP_CC={}", cc.unwrap_or(""));
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.engine.0,
            "env",
            &cc_env,
            python(),
            &script("echo_server.py"),
            &ip_s,
            "7",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("Linux echo server");
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(server.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "listening");
    let secs = timed_echo(&lab.linux, lab.engine_ip, bytes);
    assert!(server.wait().unwrap().success());
    secs
}

/// The engine's time for a Linux client's 16 MiB echo with `permille`/1000 of Linux's
/// packets dropped in both directions (AF_XDP, default configuration: NewReno, 200 ms
/// minimum RTO as Linux's). Prints its retransmissions by kind; returns the time, the packets
/// dropped and the segments sent again (recovery, probes and after timeouts).
fn engine_loss_run(permille: u32) -> Option<(f64, u64, u64)> {
    let lab = VethLab::new()?;
    linux_loss(&lab.linux, permille);
    let mut cfg = EngineConfig::new(MAC, lab.engine_ip);
    cfg.control.time_wait = Duration::from_millis(100);
    let xcfg = XdpConfig::new(&lab.engine_if, lab.engine_ip);
    let port = in_netns(&lab.engine.0, move || AfXdpPort::open(&xcfg)).expect("AF_XDP");
    let rt = Runtime::spawn(Engine::new(cfg, port).unwrap(), SystemClock::new()).unwrap();
    let srv = echo_server(&rt.host(), 7);
    let secs = timed_echo(&lab.linux, lab.engine_ip, LOSS_BYTES);
    assert_eq!(srv.join().unwrap(), LOSS_BYTES);
    let e = rt.stop();
    let dropped = linux_loss_count(&lab.linux);
    assert!(dropped > 0);
    let r = e.retransmissions();
    eprintln!(
        "{permille}\u{2030} loss: engine {secs:.2} s ({dropped} packets dropped); \
         retransmissions: fast recoveries {}, recovery segments {}, tail-loss probes {}, \
         timeouts {}",
        r.fast, r.recovery, r.tail_probes, r.timeout
    );
    Some((secs, dropped, r.recovery + r.tail_probes + r.timeout))
}

/// [`engine_loss_run`]'s time.
fn engine_loss_time(permille: u32) -> Option<f64> {
    engine_loss_run(permille).map(|r| r.0)
}

/// The same echo against a Linux echo server on an identical lab, the server's congestion
/// control set to `cc` on its socket (`None`: the system's default). The client is the same
/// Linux client as in the engine's run.
fn linux_loss_time(permille: u32, cc: Option<&str>) -> Option<f64> {
    let lab = VethLab::new()?;
    linux_loss(&lab.linux, permille);
    let name = match cc {
        Some(cc) => cc.to_string(),
        None => sh(&lab
            .linux
            .exec(&["sysctl", "-n", "net.ipv4.tcp_congestion_control"]))
        .trim()
        .to_string(),
    };
    let secs = linux_echo_time(&lab, LOSS_BYTES, cc);
    eprintln!("{permille}\u{2030} loss: Linux ({name}) {secs:.2} s");
    Some(secs)
}

const LOSS_BYTES: u64 = 16 << 20;

/// 3% loss both ways, three runs of each side, best time of each: the engine (default
/// NewReno) against Linux echo servers whose sockets use Reno and CUBIC, the loss-based
/// congestion controls of the engine's family, and the system's default (BBR on the
/// project's machines, which does not slow down for random loss: printed, not bounded;
/// rate-based congestion control is a policy of its own). The times are printed, not
/// bounded (one lucky run of Linux's under random loss once took a sixth of its others); what
/// is checked is what made go-back-N take 35-68x Linux's time: the engine sends again about
/// what was lost (at most twice the packets dropped, probes and timeouts included), not whole
/// windows.
#[test]
fn three_percent_loss_against_linux() {
    let (mut engine, mut reno, mut cubic, mut default) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..3 {
        let Some((e, dropped, again)) = engine_loss_run(30) else {
            return;
        };
        assert!(
            again <= 2 * dropped,
            "{again} segments sent again for {dropped} packets dropped"
        );
        engine = engine.min(e);
        reno = reno.min(linux_loss_time(30, Some("reno")).unwrap());
        cubic = cubic.min(linux_loss_time(30, Some("cubic")).unwrap());
        default = default.min(linux_loss_time(30, None).unwrap());
    }
    eprintln!(
        "3% loss, 16 MiB echo, best of 3: engine {engine:.2} s; Linux reno {reno:.2} s \
         ({:.2}x), cubic {cubic:.2} s ({:.2}x), default {default:.2} s ({:.2}x)",
        engine / reno,
        engine / cubic,
        engine / default
    );
}

/// 10% loss both ways: the echo completes with every byte exact (the client checks the
/// SHA-256 of what came back).
#[test]
fn ten_percent_loss_completes_exact() {
    if engine_loss_time(100).is_some() {
        linux_loss_time(100, None);
    }
}
