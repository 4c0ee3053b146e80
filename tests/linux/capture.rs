//! Captures of the engine's traffic read by tshark: no malformed packet, no bad checksum.

use super::*;

/// A `tcpdump` writing a pcap file inside a namespace.
pub(crate) struct Tcpdump(std::process::Child, Arc<Mutex<Vec<String>>>, String);

impl Tcpdump {
    /// Captures on `iface` in `ns` into `pcap` (`snap` bytes per packet, 0 for all), with
    /// a capture `filter`. Packets reach the file as they arrive (`--immediate-mode`), into a
    /// 64 MiB buffer: a 4 MiB echo is some 9000 packets in a few tens of milliseconds, which
    /// overflow the default buffer.
    pub(crate) fn start(
        ns: &Netns,
        iface: &str,
        snap: u32,
        pcap: &str,
        filter: &[&str],
    ) -> Tcpdump {
        let snap = snap.to_string();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                "tcpdump",
                "--immediate-mode",
                "-U",
                "-n",
            ])
            .args(["-B", "65536", "-s", &snap, "-i", iface, "-w", pcap])
            .args(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        // Ready once tcpdump says it is listening (a fixed sleep lost the start of the
        // transfer under load); the reader goes on draining stderr until tcpdump ends.
        let mut child = child;
        let stderr = child.stderr.take().expect("tcpdump stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let said = Arc::new(Mutex::new(Vec::new()));
        let lines = said.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
                lines.lock().unwrap().push(line);
            }
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(20)).is_ok(),
            "tcpdump did not start listening on {iface} within 20 s"
        );
        Tcpdump(child, said, pcap.to_string())
    }

    /// Lets the capture settle, then stops it with SIGINT (killed after 5 s if it has not
    /// ended). Returns what tcpdump printed (its packet and drop counts among it).
    ///
    /// Settling means the file stopped growing for 300 ms (at most 20 s): a tcpdump short
    /// of CPU lags behind the traffic, and on SIGINT it exits without reading what is still
    /// queued for it in the kernel.
    pub(crate) fn stop(mut self) -> String {
        let size = |p: &str| std::fs::metadata(p).map_or(0, |m| m.len());
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut last, mut since) = (size(&self.2), Instant::now());
        while Instant::now() < deadline && since.elapsed() < Duration::from_millis(300) {
            std::thread::sleep(Duration::from_millis(50));
            let now = size(&self.2);
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                std::thread::sleep(Duration::from_millis(50));
                return self.1.lock().unwrap().join("\n");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        self.1.lock().unwrap().join("\n")
    }
}

/// One 4 MiB echo transfer over the engine `engine` makes, captured on the Linux side and
/// read by tshark: no malformed packet, no bad IP or TCP checksum.
pub(crate) fn capture_check<P: Port + 'static>(engine: fn(&VethLab) -> Runtime<P>) {
    if !available(&["tcpdump", "tshark"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    let rt = engine(&lab);
    capture_on(&lab.linux, &lab.linux_if, lab.engine_ip, rt);
}

/// The same check with an engine already running, captured on `iface` in `ns`.
pub(crate) fn capture_on<P: Port + 'static>(
    ns: &Netns,
    iface: &str,
    engine_ip: Ipv4Addr,
    rt: Runtime<P>,
) {
    let pcap = std::env::temp_dir().join(format!("{}.pcap", ns.0));
    let pcap_s = pcap.to_string_lossy().into_owned();
    let dump = Tcpdump::start(ns, iface, 0, &pcap_s, &[]);
    let srv = echo_server(&rt.host(), 7);
    let n = (4u64 << 20).to_string();
    let ip = engine_ip.to_string();
    let out = run(&ns.exec(&[python(), &script("echo_client.py"), &ip, "7", &n]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    srv.join().unwrap();
    rt.stop();
    let said = dump.stop();
    let total = sh(&[
        "tshark",
        "-r",
        &pcap_s,
        "-T",
        "fields",
        "-e",
        "frame.number",
    ])
    .lines()
    .count();
    // Checksums of the engine's frames only: Linux itself writes 0xFFFF for a TCP checksum
    // that computes to zero when it finishes one in software (`CSUM_MANGLED_0`), which
    // tshark reports as illegal. DPDK's software checksum (net_tap's offload) does the same
    // for the engine's frames: 0xFFFF and 0x0000 are the same one's-complement zero (RFC
    // 1624), which tshark flags on its own (`tcp.checksum.ffff`), so that case is allowed.
    let filter = format!(
        "_ws.malformed || (ip.src == {engine_ip} && (ip.checksum.status == 0 || (tcp.checksum.status == 0 && !tcp.checksum.ffff)))"
    );
    let bad = sh(&[
        "tshark",
        "-r",
        &pcap_s,
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "tcp.check_checksum:TRUE",
        "-Y",
        &filter,
    ]);
    let _ = std::fs::remove_file(&pcap);
    assert!(
        total > 3000,
        "capture too small: {total} frames; tcpdump:\n{said}"
    );
    assert!(bad.trim().is_empty(), "tshark found problems:\n{bad}");
}
