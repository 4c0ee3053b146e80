//! The extensions (`stages::ext`) end to end, each over a transfer on the inline and on the
//! threaded runtime:
//! - the tracer's events match the engine's own counters (retransmissions by kind, FINs);
//! - a capture holds exactly the frames its filter selects (checked against a capture of
//!   every frame, filtered here by hand), and tshark reads it without errors;
//! - VLAN-tagged engines interoperate, every frame tagged on the wire;
//! - classified connections get their class's share of the scheduler;
//! - the firewall drops and counts what its rules say, and a rule change takes effect in
//!   the middle of a transfer (and its removal lets the transfer finish, bytes exact).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddrV4;
use std::time::Duration;

use common::*;
use flextoe::backends::mem::{MemLink, MemPort};
use flextoe::control::congestion::FixedWindow;
use flextoe::flow::RetransmitTotals;
use flextoe::pipeline::hooks::HookReport;
use flextoe::pipeline::{Engine, Pipeline, PipelineBuilder, Topology};
use flextoe::sim::{Impairments, VirtualClock};
use flextoe::stages::ext::capture::{Capture, CaptureFormat};
use flextoe::stages::ext::classify::{ClassRule, Classification};
use flextoe::stages::ext::firewall::{Action, Firewall, Rule};
use flextoe::stages::ext::trace::{TraceKind, Tracer};
use flextoe::stages::ext::vlan::{VlanPush, VlanStrip};
use flextoe::stages::pacer::{ClassPolicy, Pacer};
use flextoe::time::{Clock, Instant};
use flextoe::wire::flags;

fn side(b: PipelineBuilder<MemPort>, threaded: bool, clock: &VirtualClock) -> Side {
    if threaded {
        let t = Topology::with_counts(2, 2, 2, 2, 2, false);
        Side::from_threaded(b.threaded(t, clock.clone()).unwrap())
    } else {
        Side::from_engine(b.build().unwrap())
    }
}

fn config(
    threaded: bool,
    mac: flextoe::wire::MacAddr,
    ip: std::net::Ipv4Addr,
) -> flextoe::EngineConfig {
    if threaded {
        threaded_config(mac, ip)
    } else {
        engine_config(mac, ip)
    }
}

/// The final figures of a threaded side: its runtime is stopped first, since a running
/// one publishes its statistics only about once a millisecond, while counters the test holds
/// (a stage's, a tracer's) move at once.
fn stopped(s: &mut Side) -> flextoe::pipeline::ThreadedStats {
    match s {
        Side::Threaded { rt, .. } => rt.take().expect("a running runtime").stop(),
        _ => unreachable!("not a threaded side"),
    }
}

/// Retransmissions by kind, final (a threaded side is stopped).
fn retransmissions(s: &mut Side) -> RetransmitTotals {
    match s.engine_ref() {
        Some(e) => e.retransmissions(),
        None => stopped(s).io.retransmissions,
    }
}

/// The hook stages' reports, final (a threaded side is stopped).
fn hooks(s: &mut Side) -> Vec<HookReport> {
    match s.engine_ref() {
        Some(e) => e.stats().hooks,
        None => stopped(s).hooks(),
    }
}

fn tracer_events_match_counters(threaded: bool) {
    let _serial = THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let (pa, pb) = MemLink::pair(Impairments::lossy(0.02, 0.0, 0.0, 17));
    let probe = LinkProbe::new(&pa);
    let clock = VirtualClock::new();
    let (tracer, events) = Tracer::new(1 << 20);
    let b = Pipeline::builder(config(threaded, MAC_A, IP_A), pa).on_results(tracer);
    let srv = side(b, threaded, &clock);
    let cli = Side::smoltcp(pb, MAC_B, IP_B, true);
    let mut o = transfer_sides(srv, cli, &clock, probe, 1 << 20);
    assert_eq!(events.lost(), 0);
    let mut by_kind: HashMap<&'static str, u64> = HashMap::new();
    let mut json = Vec::new();
    let n = events.write_json_lines(&mut json).unwrap() as u64;
    assert_eq!(n, events.recorded());
    for line in String::from_utf8(json).unwrap().lines() {
        let name = line
            .split("\"event\":\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let name = [
            "rtt",
            "cwnd",
            "peer_window",
            "fast_retransmit",
            "recovery_retransmit",
            "tail_probe",
            "timeout_retransmit",
            "fin_received",
            "fin_sent",
            "fin_acked",
            "rst_received",
            "rst_sent",
        ]
        .into_iter()
        .find(|k| *k == name)
        .expect("a known event");
        *by_kind.entry(name).or_default() += 1;
    }
    let k = |name| by_kind.get(name).copied().unwrap_or(0);
    let r = retransmissions(&mut o.server);
    eprintln!(
        "threaded={threaded}: {r:?}; events {by_kind:?}; lost frames {}",
        o.lost_frames
    );
    assert!(o.lost_frames > 0);
    assert!(r.fast + r.recovery + r.tail_probes + r.timeout > 0);
    assert_eq!(
        (
            k("fast_retransmit"),
            k("recovery_retransmit"),
            k("tail_probe"),
            k("timeout_retransmit")
        ),
        (r.fast, r.recovery, r.tail_probes, r.timeout),
        "retransmissions by kind"
    );
    assert_eq!(
        (k("fin_sent"), k("fin_received"), k("fin_acked")),
        (1, 1, 1)
    );
    assert!(k("rtt") > 10 && k("cwnd") > 1 && k("peer_window") >= 1);
    let _ = TraceKind::FinSent;
}

#[test]
fn tracer_events_match_counters_inline() {
    tracer_events_match_counters(false);
}

#[test]
fn tracer_events_match_counters_threaded() {
    tracer_events_match_counters(true);
}

/// TCP segments the filter below selects, decided here by hand.
fn selected(frame: &[u8]) -> bool {
    if frame.len() < 54 || frame[12..14] != [0x08, 0x00] || frame[23] != 6 {
        return false;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let fl = frame[14 + ihl + 13];
    fl & (flags::SYN | flags::FIN | flags::RST) != 0 || frame.len() < 100
}

const FILTER: &str = "tcp and (syn or fin or rst or len < 100)";

fn packets(path: &std::path::Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let mut r = pcap_file::pcapng::PcapNgReader::new(&bytes[..]).unwrap();
    let mut v = Vec::new();
    while let Some(b) = r.next_block() {
        if let pcap_file::pcapng::Block::EnhancedPacket(p) = b.unwrap() {
            v.push(p.data.to_vec());
        }
    }
    v
}

fn capture_holds_exactly_the_selected_frames(threaded: bool) {
    let _serial = THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir();
    let tag = format!("{}-{}", std::process::id(), threaded);
    let all_path = dir.join(format!("flextoe-ext-all-{tag}.pcapng"));
    let sel_path = dir.join(format!("flextoe-ext-sel-{tag}.pcapng"));
    let all = Capture::create(&all_path, CaptureFormat::PcapNg, "").unwrap();
    let sel = Capture::create(&sel_path, CaptureFormat::PcapNg, FILTER).unwrap();
    let (pa, pb) = MemLink::pair(Impairments::lossy(0.01, 0.0, 0.0, 5));
    let probe = LinkProbe::new(&pa);
    let clock = VirtualClock::new();
    let b = Pipeline::builder(config(threaded, MAC_A, IP_A), pa)
        .on_rx_frame(all.rx_stage())
        .on_rx_frame(sel.rx_stage())
        .on_tx_frame(all.tx_stage())
        .on_tx_frame(sel.tx_stage());
    let srv = side(b, threaded, &clock);
    let cli = Side::smoltcp(pb, MAC_B, IP_B, true);
    let _o = transfer_sides(srv, cli, &clock, probe, 1 << 20);
    all.flush().unwrap();
    sel.flush().unwrap();
    let mut want: Vec<Vec<u8>> = packets(&all_path)
        .into_iter()
        .filter(|f| selected(f))
        .collect();
    let mut got = packets(&sel_path);
    eprintln!(
        "threaded={threaded}: {} frames in all, {} selected, {} written",
        all.written(),
        want.len(),
        got.len()
    );
    assert_eq!(
        all.written(),
        all.seen(),
        "the empty filter takes everything"
    );
    assert!(all.written() > 1000);
    assert!(want.len() > 20 && want.len() < all.written() as usize / 2);
    want.sort();
    got.sort();
    assert_eq!(got, want, "exactly the selected frames");
    assert_eq!((all.errors(), sel.errors()), (0, 0));
    if common::lab::available(&["tshark"]) {
        let p = sel_path.to_string_lossy().into_owned();
        let out = common::lab::run(&["tshark", "-r", &p, "-T", "fields", "-e", "frame.number"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().count(),
            got.len()
        );
        let bad = common::lab::run(&["tshark", "-r", &p, "-Y", "_ws.malformed"]);
        assert!(
            bad.status.success() && bad.stdout.is_empty(),
            "malformed frames"
        );
    }
    let _ = std::fs::remove_file(&all_path);
    let _ = std::fs::remove_file(&sel_path);
}

#[test]
fn capture_holds_exactly_the_selected_frames_inline() {
    capture_holds_exactly_the_selected_frames(false);
}

#[test]
fn capture_holds_exactly_the_selected_frames_threaded() {
    capture_holds_exactly_the_selected_frames(true);
}

fn vlan_tagged_engines_interoperate(threaded: bool) {
    let _serial = THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let (pa, pb) = MemLink::pair(Impairments::none());
    let probe = LinkProbe::new(&pa);
    let clock = VirtualClock::new();
    // A capture of the server's frames as they leave, after the tag is pushed.
    let wire_tx = Capture::new(
        std::io::sink(),
        CaptureFormat::Pcap,
        "vlan 42".parse().unwrap(),
    )
    .unwrap();
    let (strip_a, push_a) = (VlanStrip::only(42), VlanPush::new(42));
    let (sa, pa_c) = (strip_a.counters(), push_a.counters());
    let b = Pipeline::builder(config(threaded, MAC_A, IP_A), pa)
        .on_rx_frame(strip_a)
        .on_tx_frame(push_a)
        .on_tx_frame(wire_tx.tx_stage());
    let srv = side(b, threaded, &clock);
    let cli = Side::from_engine(
        Pipeline::builder(engine_config(MAC_B, IP_B), pb)
            .on_rx_frame(VlanStrip::only(42))
            .on_tx_frame(VlanPush::new(42))
            .build()
            .unwrap(),
    );
    let mut o = transfer_sides(srv, cli, &clock, probe, 1 << 20);
    let h = hooks(&mut o.server);
    let at = |name: &str| h.iter().find(|r| r.name == name).unwrap().stats.clone();
    let (rx, tx) = (at("vlan-strip"), at("vlan-push"));
    eprintln!(
        "threaded={threaded}: stripped {} pushed {}",
        sa.stripped(),
        pa_c.pushed()
    );
    assert!(rx.items_in > 500 && tx.items_in > 500);
    assert_eq!(
        sa.stripped(),
        rx.items_in,
        "every received frame was tagged"
    );
    assert_eq!(pa_c.pushed(), tx.items_in, "every frame sent got a tag");
    assert_eq!(wire_tx.written(), wire_tx.seen(), "tagged on the wire");
}

#[test]
fn vlan_tagged_engines_interoperate_inline() {
    vlan_tagged_engines_interoperate(false);
}

#[test]
fn vlan_tagged_engines_interoperate_threaded() {
    vlan_tagged_engines_interoperate(true);
}

/// Two connections from one engine, classified by the peer's port (the classification
/// stage reads their SYN-ACKs), get 3:1 of the grants.
#[test]
fn classified_flows_get_their_class_scheduling() {
    let classes = Classification::new(vec![ClassRule::to_class(0).remote_port(7001)], 1);
    let (pa, pb) = MemLink::pair(Impairments::none());
    let mut srv = Engine::new(engine_config(MAC_A, IP_A), pa).unwrap();
    let mut cfg = engine_config(MAC_B, IP_B);
    cfg.burst = 4;
    // 32 segments per poll: the link's share per poll, which the two classes contend for.
    cfg.poll_budget = 32;
    cfg.tx_buffer = 1 << 20;
    cfg.control.classifier = Some(classes.classifier());
    let mut cli = Pipeline::builder(cfg, pb)
        .on_rx_frame(classes.stage())
        .congestion(FixedWindow(1 << 20))
        .scheduler(Pacer::new(4).with_classes(ClassPolicy::Weighted(vec![3, 1])))
        .build()
        .unwrap();
    let listeners = [7001u16, 7002].map(|p| srv.host().listen(p, 4).unwrap());
    let mut tx = [7001u16, 7002].map(|p| {
        let mut s = cli.host().connect(SocketAddrV4::new(IP_A, p)).unwrap();
        s.set_nonblocking(true);
        s
    });
    let mut rx: [Option<flextoe::Stream>; 2] = [None, None];
    let mut got = [0u64; 2];
    let chunk = vec![7u8; 64 * 1024];
    let mut buf = vec![0u8; 1 << 20];
    let mut now = Instant::ZERO;
    while got[0] < 8 << 20 {
        assert!(now < Instant::from_micros(10_000_000), "virtual time limit");
        let busy = srv.poll(now) | cli.poll(now);
        for i in 0..2 {
            if rx[i].is_none() {
                if let Ok(Some(mut s)) = listeners[i].try_accept() {
                    s.set_nonblocking(true);
                    rx[i] = Some(s);
                }
            }
            let _ = tx[i].write(&chunk);
            if let Some(s) = rx[i].as_mut() {
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got[i] += n as u64;
                }
            }
        }
        now = next_time(
            now,
            busy,
            [srv.next_deadline(), cli.next_deadline()],
            Duration::from_micros(5),
            Duration::from_millis(1),
        );
    }
    let ratio = got[0] as f64 / got[1].max(1) as f64;
    eprintln!(
        "class 0 {} B, class 1 {} B, ratio {ratio:.2}",
        got[0], got[1]
    );
    assert!((2.7..=3.3).contains(&ratio), "ratio {ratio}");
    assert_eq!((classes.connections(0), classes.connections(1)), (1, 1));
    let (f0, b0) = classes.traffic(0);
    let (f1, b1) = classes.traffic(1);
    assert!(
        f0 > 100 && f1 > 100 && b0 > 0 && b1 > 0,
        "ACKs counted per class"
    );
}

fn firewall_rules_take_effect_mid_transfer(threaded: bool) {
    let _serial = THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let (pa, pb) = MemLink::pair(Impairments::none());
    let clock = VirtualClock::new();
    let fw = Firewall::new(Action::Allow);
    fw.set_rules(vec![Rule::deny().dst_port(23)]);
    let b = Pipeline::builder(config(threaded, MAC_A, IP_A), pa).on_rx_frame(fw.stage());
    let mut srv = side(b, threaded, &clock);
    let mut ccfg = engine_config(MAC_B, IP_B);
    ccfg.control.rto_min = Duration::from_millis(20);
    ccfg.control.max_retransmissions = 100;
    let mut cli = Side::from_engine(Engine::new(ccfg, pb).unwrap());
    let host = |s: &Side| match s {
        Side::Engine { engine, .. } => engine.host(),
        Side::Threaded { host, .. } => host.clone(),
        _ => unreachable!(),
    };
    let _telnet = host(&srv).listen(23, 4).unwrap();
    let listener = host(&srv).listen(SERVER_PORT, 4).unwrap();
    let mut denied = host(&cli).connect(SocketAddrV4::new(IP_A, 23)).unwrap();
    denied.set_nonblocking(true);
    let mut up = host(&cli)
        .connect(SocketAddrV4::new(IP_A, SERVER_PORT))
        .unwrap();
    up.set_nonblocking(true);
    let total: u64 = 4 << 20;
    let mut source = Source::new(3, total);
    let mut sink = Sink::default();
    let mut rx: Option<flextoe::Stream> = None;
    let mut buf = vec![0u8; 1 << 16];
    let mut phase = 0;
    let mut stalled_at = 0u64;
    let mut frozen_since = None;
    let mut hits_while_denied = Vec::new();
    drive(
        &mut srv,
        &mut cli,
        &clock,
        Duration::from_secs(120),
        50_000_000,
        |_, _| {
            if rx.is_none() {
                if let Ok(Some(mut s)) = listener.try_accept() {
                    s.set_nonblocking(true);
                    rx = Some(s);
                }
            }
            let data = source.pending();
            if !data.is_empty() {
                if let Ok(n) = up.write(data) {
                    source.consume(n);
                }
            }
            if let Some(s) = rx.as_mut() {
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.take(&buf[..n]);
                }
            }
            match phase {
                0 if sink.received >= total / 4 => {
                    // Mid-transfer: deny the connection's port.
                    fw.set_rules(vec![
                        Rule::deny().dst_port(23),
                        Rule::deny().dst_port(SERVER_PORT),
                    ]);
                    stalled_at = sink.received;
                    frozen_since = Some(clock.now());
                    phase = 1;
                }
                1 => {
                    // Whatever was in flight when the rule came may still land, nothing more.
                    assert!(
                        sink.received <= stalled_at + (1 << 20),
                        "data passed a deny rule"
                    );
                    if clock.now().saturating_since(frozen_since.unwrap())
                        > Duration::from_millis(300)
                    {
                        let frozen = sink.received;
                        assert!(frozen < total, "the transfer stopped");
                        hits_while_denied = fw.hits();
                        fw.set_rules(vec![Rule::deny().dst_port(23)]);
                        stalled_at = frozen;
                        phase = 2;
                    }
                }
                _ => {}
            }
            phase == 2 && sink.received == total
        },
    );
    assert_eq!(
        sink.digest(),
        source.digest(),
        "bytes exact after the rule went"
    );
    assert!(
        !matches!(denied.status(), flextoe::host::ConnStatus::Established),
        "port 23 never connected"
    );
    let h = hooks(&mut srv);
    let fwr = h.iter().find(|r| r.name == "firewall").unwrap();
    eprintln!(
        "threaded={threaded}: {fwr}; hits now {:?}, stalled at {stalled_at}",
        fw.hits()
    );
    assert!(
        fwr.drops("rule") > 3,
        "SYNs to 23 and segments while denied"
    );
    assert!(
        hits_while_denied.len() == 2 && hits_while_denied[1] > 0,
        "the new rule counted the segments it stopped: {hits_while_denied:?}"
    );
}

#[test]
fn firewall_rules_take_effect_mid_transfer_inline() {
    firewall_rules_take_effect_mid_transfer(false);
}

#[test]
fn firewall_rules_take_effect_mid_transfer_threaded() {
    firewall_rules_take_effect_mid_transfer(true);
}

/// The same on the threaded runtime (the sender's group task grants by class; real time
/// drives it, so the share is looser).
#[test]
fn classified_flows_get_their_class_scheduling_threaded() {
    let _serial = THREADED_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let classes = Classification::new(vec![ClassRule::to_class(0).remote_port(7001)], 1);
    let (pa, pb) = MemLink::pair(Impairments::none());
    let clock = VirtualClock::new();
    // Nothing but the sender's one worker may limit the flows, or they would share by
    // window or by the application's writes instead of by class: receive rings, windows
    // and send rings larger than the whole transfer, the send rings kept full.
    let mut srv_cfg = engine_config(MAC_A, IP_A);
    srv_cfg.rx_buffer = 32 << 20;
    let mut srv = Engine::new(srv_cfg, pa).unwrap();
    let mut cfg = threaded_config(MAC_B, IP_B);
    cfg.tx_buffer = 32 << 20;
    cfg.control.classifier = Some(classes.classifier());
    let cli = Pipeline::builder(cfg, pb)
        .on_rx_frame(classes.stage())
        .congestion(FixedWindow(64 << 20))
        .scheduler(Pacer::new(4).with_classes(ClassPolicy::Weighted(vec![3, 1])))
        .threaded(Topology::with_counts(1, 1, 1, 1, 1, false), clock.clone())
        .unwrap();
    let listeners = [7001u16, 7002].map(|p| srv.host().listen(p, 4).unwrap());
    let mut tx = [7001u16, 7002].map(|p| {
        let mut s = cli.host().connect(SocketAddrV4::new(IP_A, p)).unwrap();
        s.set_nonblocking(true);
        s
    });
    let mut rx: [Option<flextoe::Stream>; 2] = [None, None];
    let mut got = [0u64; 2];
    let chunk = vec![7u8; 64 * 1024];
    let mut buf = vec![0u8; 1 << 20];
    let wall = std::time::Instant::now();
    // The share is measured from the moment class 0 has 4 MiB: a handshake that completes
    // late, or a stall of the application's thread at the start, does not skew it.
    let mut mark: Option<[u64; 2]> = None;
    while got[0] < 16 << 20 {
        assert!(
            wall.elapsed() < Duration::from_secs(120),
            "stalled: {got:?}"
        );
        clock.advance_to(Instant::ZERO + wall.elapsed());
        srv.poll(clock.now());
        for i in 0..2 {
            if rx[i].is_none() {
                if let Ok(Some(mut s)) = listeners[i].try_accept() {
                    s.set_nonblocking(true);
                    rx[i] = Some(s);
                }
            }
            while matches!(tx[i].write(&chunk), Ok(n) if n > 0) {}
            if let Some(s) = rx[i].as_mut() {
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got[i] += n as u64;
                }
            }
        }
        if mark.is_none() && got[0] >= 4 << 20 {
            mark = Some(got);
        }
    }
    let m = mark.expect("class 0 passed 4 MiB");
    let ratio = (got[0] - m[0]) as f64 / (got[1] - m[1]).max(1) as f64;
    eprintln!(
        "threaded: class 0 {} B, class 1 {} B ({m:?} at the mark), ratio {ratio:.2} after it",
        got[0], got[1]
    );
    assert_eq!((classes.connections(0), classes.connections(1)), (1, 1));
    assert!((2.0..=4.5).contains(&ratio), "ratio {ratio}");
    drop(cli);
}
