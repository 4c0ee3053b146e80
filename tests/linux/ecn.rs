//! ECN against Linux: CE marks from nftables, ECE echoed until CWR, read from a capture.

use super::*;

/// ECN against Linux (`net.ipv4.tcp_ecn=1` in the Linux namespace): the Linux client's SYN
/// asks for ECN and the engine's SYN-ACK agrees; nftables marks 5% of Linux's ECN-capable
/// packets CE on their way out; the capture shows the engine echoing ECE and Linux answering
/// with CWR (its window reduced), the engine stopping its echo once CWR arrived, and the
/// engine's own data sent ECT(0).
#[test]
fn ecn_with_linux_ce_marks_draw_ece_until_cwr() {
    if !available(&["tcpdump", "tshark"]) {
        return;
    }
    let Some(lab) = VethLab::new() else { return };
    sh(&lab.linux.exec(&["sysctl", "-qw", "net.ipv4.tcp_ecn=1"]));
    let rules = "table ip ftce {
  chain post {
    type filter hook postrouting priority 0; policy accept;
    ip ecn ect0 numgen random mod 100 < 5 ip ecn set ce counter
  }
}
";
    let path = std::env::temp_dir().join(format!("{}-ce.nft", lab.linux.0));
    std::fs::write(&path, rules).unwrap();
    sh(&lab.linux.exec(&["nft", "-f", &path.to_string_lossy()]));
    let _ = std::fs::remove_file(&path);
    // The marking is random (5% of Linux's ECT(0) packets, a GSO packet whole): a run whose
    // capture holds no CE mark at all tests nothing, so it is run again (the counts are
    // printed).
    let mut attempt = 0;
    let (pkts, stats) = loop {
        attempt += 1;
        let (pkts, stats) = ecn_run(&lab);
        let linux_data = pkts.iter().filter(|p| !p.engine && p.len > 0).count();
        let marked = pkts.iter().filter(|p| !p.engine && p.ecn == 3).count();
        // A capture that lost packets (its end, say) cannot show the echo stopping.
        let complete =
            pkts.iter().any(|p| p.engine && p.fin) && pkts.iter().any(|p| !p.engine && p.fin);
        eprintln!(
            "attempt {attempt}: {} packets captured, {linux_data} Linux data segments, \
             {marked} CE-marked, complete: {complete}",
            pkts.len()
        );
        // Marks come in clumps (a GSO packet is marked whole): a CWR followed at once by the
        // next clump gives the engine no chance to show its echo stopping.
        let chances = echo_counts(&pkts).chances;
        if (marked > 0 && complete && chances > 0) || attempt == 8 {
            break (pkts, stats);
        }
    };
    let syn = pkts
        .iter()
        .find(|p| !p.engine && p.syn && !p.ack)
        .expect("Linux's SYN");
    assert!(syn.ece && syn.cwr, "Linux asks for ECN");
    let sa = pkts
        .iter()
        .find(|p| p.engine && p.syn && p.ack)
        .expect("SYN-ACK");
    assert!(sa.ece && !sa.cwr, "the engine agrees");
    let data: Vec<_> = pkts.iter().filter(|p| !p.syn).collect();
    let ce = data.iter().filter(|p| !p.engine && p.ecn == 3).count();
    let ece = data.iter().filter(|p| p.engine && p.ece).count();
    let cwr = data.iter().filter(|p| !p.engine && p.cwr).count();
    eprintln!("CE marks {ce}, engine ECE segments {ece}, Linux CWR segments {cwr}\n{stats}");
    assert!(ce > 0 && ece > 0 && cwr > 0);
    // After a CWR (with no CE after it) the echo stops.
    let counts = echo_counts(&pkts);
    // A compact timeline for a failure: C = Linux CE mark, W = Linux CWR, E = engine ECE,
    // e = engine without ECE (runs collapsed).
    let timeline = || {
        let mut t = String::new();
        for p in &data {
            let c = match (p.engine, p.ece, p.cwr, p.ecn == 3) {
                (true, true, _, _) => 'E',
                (true, false, _, _) => 'e',
                (false, _, true, _) => 'W',
                (false, _, _, true) => 'C',
                _ => continue,
            };
            if !(t.ends_with(c) && (c == 'e' || c == 'E')) {
                t.push(c);
            }
        }
        t
    };
    assert!(
        counts.answered > 0,
        "no CWR answered the engine's ECE: {}",
        timeline()
    );
    assert!(
        counts.chances > 0,
        "no CWR was followed by {CHANCE} engine segments before the next CE mark: {}",
        timeline()
    );
    assert!(
        counts.stopped > 0,
        "the engine's echo never ended after a CWR: {}",
        timeline()
    );
    let engine_data: Vec<_> = data.iter().filter(|p| p.engine && p.len > 0).collect();
    let ect = engine_data.iter().filter(|p| p.ecn == 2).count();
    assert!(
        ect * 10 >= engine_data.len() * 9,
        "{ect} of {} data segments ECT(0)",
        engine_data.len()
    );
}

/// One captured packet of the ECN test.
struct EcnPacket {
    engine: bool,
    syn: bool,
    ack: bool,
    ece: bool,
    cwr: bool,
    ecn: u8,
    len: u32,
    fin: bool,
}

/// Engine segments after a CWR, before the next CE mark, that make a chance to see the
/// engine's echo stop (the first ones left before the CWR reached it).
const CHANCE: usize = 16;

/// What the ECN test reads from a capture's segments after the handshake, in order.
#[derive(Default)]
struct EchoCounts {
    /// Linux CWRs that answered an engine ECE.
    answered: usize,
    /// Engine segments without ECE right after one with ECE, with no CE mark since the last
    /// CWR: the echo stopping.
    stopped: usize,
    /// Answered CWRs followed by [`CHANCE`] engine segments before the next CE mark.
    chances: usize,
}

/// Counts the echo's turns in a capture (a Linux CWR also comes with no ECE before it: Linux
/// reduces its window for local congestion too, a full device queue).
fn echo_counts(pkts: &[EcnPacket]) -> EchoCounts {
    let mut c = EchoCounts::default();
    let (mut echoing, mut ece_since_cwr, mut pending_ce) = (false, false, false);
    // Engine segments since the last answered CWR with no CE mark after it.
    let mut since_cwr: Option<usize> = None;
    for p in pkts.iter().filter(|p| !p.syn) {
        if p.engine {
            if echoing && !p.ece && !pending_ce {
                c.stopped += 1;
            }
            echoing = p.ece;
            ece_since_cwr |= p.ece;
            if let Some(n) = since_cwr.as_mut() {
                *n += 1;
                if *n == CHANCE {
                    c.chances += 1;
                    since_cwr = None;
                }
            }
        } else {
            if p.cwr {
                if ece_since_cwr {
                    c.answered += 1;
                    since_cwr = Some(0);
                }
                ece_since_cwr = false;
                pending_ce = false;
            }
            if p.ecn == 3 {
                pending_ce = true;
                since_cwr = None;
            }
        }
    }
    c
}

/// A 4 MiB echo from a Linux client to the engine (AF_XDP) in `lab`, captured on Linux's
/// side: every TCP packet's flags and ECN field, and the engine's counters.
fn ecn_run(lab: &VethLab) -> (Vec<EcnPacket>, String) {
    let pcap = std::env::temp_dir().join(format!("{}-ecn.pcap", lab.linux.0));
    let pcap_s = pcap.to_string_lossy().into_owned();
    let dump = Tcpdump::start(&lab.linux, &lab.linux_if, 96, &pcap_s, &["tcp"]);
    let rt = af_xdp_engine(lab);
    let srv = echo_server(&rt.host(), 7);
    let (ip, n) = (lab.engine_ip.to_string(), (4u64 << 20).to_string());
    let out = run(&lab
        .linux
        .exec(&[python(), &script("echo_client.py"), &ip, "7", &n]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    srv.join().unwrap();
    let stats = rt.stop().stats().to_string();
    let _ = dump.stop();
    let fields = sh(&[
        "tshark",
        "-r",
        &pcap_s,
        "-T",
        "fields",
        "-E",
        "separator=,",
        "-e",
        "ip.src",
        "-e",
        "tcp.flags.syn",
        "-e",
        "tcp.flags.ack",
        "-e",
        "tcp.flags.ece",
        "-e",
        "tcp.flags.cwr",
        "-e",
        "ip.dsfield.ecn",
        "-e",
        "tcp.len",
        "-e",
        "tcp.flags.fin",
    ]);
    let _ = std::fs::remove_file(&pcap);
    let engine_ip = lab.engine_ip.to_string();
    let flag = |v: &str| v == "1" || v == "True";
    let pkts: Vec<EcnPacket> = fields
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() == 8).then(|| EcnPacket {
                engine: f[0] == engine_ip,
                syn: flag(f[1]),
                ack: flag(f[2]),
                ece: flag(f[3]),
                cwr: flag(f[4]),
                ecn: f[5].parse().unwrap_or(0),
                len: f[6].parse().unwrap_or(0),
                fin: flag(f[7]),
            })
        })
        .collect();
    (pkts, stats)
}
