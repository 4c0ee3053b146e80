//! The six extensions together on one engine, a proxy between a client and a server
//! engine on a VLAN, in memory behind a simulated switch:
//!
//! - **capture** (`rx_frame`, `tx_frame`): SYN, FIN and RST frames into a pcapng file;
//! - **classification** (`rx_frame`, before the VLAN strip): connections to port 7 are class
//!   0, the rest class 1, scheduled 3:1 by the pacer;
//! - **splicing** (`rx_frame`): the proxy reads a request line, connects to the server and
//!   splices the two connections; the bulk transfer then never reaches the proxy's TCP;
//! - **VLAN** strip and push (tag 42 on every frame of the fabric);
//! - **firewall** (`rx_frame`): port 23 denied; mid-run, the echo port is denied for a while;
//! - **tracing** (`results`): TCP events into a ring, written as JSON lines.
//!
//! It prints the counters as it goes and a summary at the end.
//!
//! ```text
//! cargo run --release --example features
//! cargo run --release --example features -- --mib 16 --out /tmp/features
//! # The same proxy engine on AF_XDP in a namespace lab the program makes (root): Linux
//! # clients and a Linux server on the other end of a veth pair.
//! sudo cargo run --release --features af_xdp --example features -- --lab
//! ```

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use flextoe::backends::mem::MemPort;
use flextoe::control::congestion::NewReno;
use flextoe::host::ConnStatus;
use flextoe::pipeline::{Engine, EngineConfig, Pipeline};
use flextoe::sim::{Impairments, Switch};
use flextoe::stages::ext::capture::{Capture, CaptureFormat};
use flextoe::stages::ext::classify::{ClassRule, Classification};
use flextoe::stages::ext::firewall::{Action, Firewall, Rule};
use flextoe::stages::ext::splice::{SpliceError, Splicer};
use flextoe::stages::ext::trace::Tracer;
use flextoe::stages::ext::vlan::{VlanPush, VlanStrip};
use flextoe::stages::pacer::{ClassPolicy, Pacer};
use flextoe::time::Instant;
use flextoe::wire::MacAddr;
use flextoe::Stream;

#[derive(Parser)]
struct Args {
    /// MiB the client sends through the splice (and the server sends back).
    #[arg(long, default_value_t = 64)]
    mib: u64,
    /// Where the capture and the trace go.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    out: PathBuf,
    /// Run the proxy engine on AF_XDP in a namespace lab, against Linux clients and a Linux
    /// server (root; feature `af_xdp`).
    #[arg(long)]
    lab: bool,
}

const VLAN: u16 = 42;
const C: (Ipv4Addr, MacAddr) = (Ipv4Addr::new(10, 42, 0, 1), MacAddr([2, 0, 0, 42, 0, 1]));
const P: (Ipv4Addr, MacAddr) = (Ipv4Addr::new(10, 42, 0, 2), MacAddr([2, 0, 0, 42, 0, 2]));
const S: (Ipv4Addr, MacAddr) = (Ipv4Addr::new(10, 42, 0, 3), MacAddr([2, 0, 0, 42, 0, 3]));

fn config(me: (Ipv4Addr, MacAddr)) -> EngineConfig {
    let mut c = EngineConfig::new(me.1, me.0);
    c.tx_buffer = 1 << 20;
    c.rx_buffer = 1 << 20;
    for (ip, mac) in [C, P, S] {
        c = c.neighbor(ip, mac);
    }
    c
}

/// An engine on the VLAN with no other extension.
fn plain(me: (Ipv4Addr, MacAddr), port: MemPort) -> Engine<MemPort> {
    Pipeline::builder(config(me), port)
        .on_rx_frame(VlanStrip::only(VLAN))
        .on_tx_frame(VlanPush::new(VLAN))
        .build()
        .expect("engine")
}

struct Fabric {
    now: Instant,
    sw: Switch,
    client: Engine<MemPort>,
    server: Engine<MemPort>,
    proxy: Engine<MemPort, NewReno, Pacer>,
}

impl Fabric {
    fn step(&mut self) {
        let n = self.now;
        let busy = self.client.poll(n) | self.server.poll(n) | self.proxy.poll(n) | self.sw.poll(n);
        let next = [
            self.client.next_deadline(),
            self.server.next_deadline(),
            self.proxy.next_deadline(),
            self.sw.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .filter(|t| *t > n)
        .min();
        self.now = if busy {
            n + Duration::from_micros(2)
        } else {
            next.map_or(n + Duration::from_micros(2), |t| {
                t.min(n + Duration::from_millis(10))
            })
        };
    }

    fn until(&mut self, what: &str, mut done: impl FnMut(&mut Fabric) -> bool) {
        let start = self.now;
        while !done(self) {
            self.step();
            if self.now.saturating_since(start) > Duration::from_secs(600) {
                panic!("{what}: no progress in 600 s of virtual time");
            }
        }
    }
}

fn nb(mut s: Stream) -> Stream {
    s.set_nonblocking(true);
    s
}

fn main() {
    let args = Args::parse();
    if args.lab {
        #[cfg(feature = "af_xdp")]
        return lab_run::run(&args);
        #[cfg(not(feature = "af_xdp"))]
        {
            eprintln!("--lab needs the af_xdp feature");
            std::process::exit(2);
        }
    }
    let mut sw = Switch::new();
    let (pc, pp, ps) = (
        sw.attach(Impairments::none(), Impairments::none()),
        sw.attach(Impairments::none(), Impairments::none()),
        sw.attach(Impairments::none(), Impairments::none()),
    );
    // The proxy with every extension.
    let cap_path = args.out.join("flextoe-features.pcapng");
    let trace_path = args.out.join("flextoe-features.jsonl");
    let capture = Capture::create(&cap_path, CaptureFormat::PcapNg, "syn or fin or rst")
        .expect("capture file");
    let classes = Classification::new(vec![ClassRule::to_class(0).local_port(7)], 1);
    let firewall = Firewall::new(Action::Allow);
    firewall.set_rules(vec![Rule::deny().dst_port(23)]);
    let splicer = Splicer::new();
    let (tracer, events) = Tracer::new(1 << 20);
    let mut cfg = config(P);
    cfg.control.classifier = Some(classes.classifier());
    let proxy = Pipeline::builder(cfg, pp)
        .on_rx_frame(capture.rx_stage())
        .on_rx_frame(classes.stage())
        .on_rx_frame(VlanStrip::only(VLAN))
        .on_rx_frame(splicer.stage())
        .on_rx_frame(firewall.stage())
        .on_results(tracer)
        .on_tx_frame(VlanPush::new(VLAN))
        .on_tx_frame(capture.tx_stage())
        .scheduler(Pacer::new(4).with_classes(ClassPolicy::Weighted(vec![3, 1])))
        .build()
        .expect("proxy engine");
    let mut f = Fabric {
        now: Instant::ZERO,
        sw,
        client: plain(C, pc),
        server: plain(S, ps),
        proxy,
    };
    let echo_l = f.proxy.host().listen(7, 8).unwrap();
    let proxy_l = f.proxy.host().listen(8080, 8).unwrap();
    let _telnet_l = f.proxy.host().listen(23, 8).unwrap();
    let server_l = f.server.host().listen(80, 8).unwrap();

    // The firewall: telnet never connects.
    let telnet = f.client.host().connect(SocketAddrV4::new(P.0, 23)).unwrap();
    // The proxy: a request line, then a splice to the server.
    let mut cs = nb(f
        .client
        .host()
        .connect(SocketAddrV4::new(P.0, 8080))
        .unwrap());
    f.until("client connected", |_| {
        cs.status() == ConnStatus::Established
    });
    cs.write_all(b"GO\n").unwrap();
    let mut down = None;
    f.until("proxy accepted", |_| {
        if let Ok(Some(s)) = proxy_l.try_accept() {
            down = Some(nb(s));
        }
        down.is_some()
    });
    let mut down = down.unwrap();
    let mut line = Vec::new();
    f.until("request line", |_| {
        let mut b = [0u8; 16];
        if let Ok(n) = down.read(&mut b) {
            line.extend_from_slice(&b[..n]);
        }
        line.ends_with(b"\n")
    });
    let up = nb(f.proxy.host().connect(SocketAddrV4::new(S.0, 80)).unwrap());
    let mut ss = None;
    f.until("server accepted", |_| {
        if let Ok(Some(s)) = server_l.try_accept() {
            ss = Some(nb(s));
        }
        ss.is_some() && up.status() == ConnStatus::Established
    });
    let mut ss = ss.unwrap();
    let mut pair = Some((down, up));
    let mut pending = None;
    f.until("spliced", |_| {
        if let Some((d, u)) = pair.take() {
            match splicer.splice(d, u) {
                Ok(p) => pending = Some(p),
                Err((e, ..)) => panic!("splice: {e}"),
            }
        }
        let Some(p) = pending.take() else {
            return false;
        };
        match p.try_finish() {
            Err(p) => {
                pending = Some(p);
                false
            }
            Ok(Ok(())) => true,
            Ok(Err((SpliceError::NotQuiet, d, u))) => {
                pair = Some((d, u));
                false
            }
            Ok(Err((e, ..))) => panic!("splice: {e}"),
        }
    });
    println!("spliced {} -> {} at {:?}", line.len(), S.0, f.now);

    // Traffic: the bulk both ways through the splice, and an echo (class 0) beside it.
    let mut echo_c = nb(f.client.host().connect(SocketAddrV4::new(P.0, 7)).unwrap());
    let mut echo_s: Option<Stream> = None;
    let total = args.mib << 20;
    let chunk = vec![0x5au8; 64 * 1024];
    let (mut sent_up, mut sent_down, mut got_up, mut got_down) = (0u64, 0u64, 0u64, 0u64);
    let (mut echo_sent, mut echo_back) = (0u64, 0u64);
    let mut buf = vec![0u8; 1 << 16];
    let mut next_report = f.now;
    let mut phase = 0;
    let mut denied_at = f.now;
    f.until("transfers", |f| {
        if echo_s.is_none() {
            if let Ok(Some(s)) = echo_l.try_accept() {
                echo_s = Some(nb(s));
            }
        }
        for (sent, s) in [(&mut sent_up, &mut cs), (&mut sent_down, &mut ss)] {
            if *sent < total {
                let n = (total - *sent).min(chunk.len() as u64) as usize;
                if let Ok(w) = s.write(&chunk[..n]) {
                    *sent += w as u64;
                }
            }
        }
        for (got, s) in [(&mut got_up, &mut ss), (&mut got_down, &mut cs)] {
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                *got += n as u64;
            }
        }
        if echo_sent < total / 4 {
            let n = (total / 4 - echo_sent).min(4096) as usize;
            if let Ok(w) = echo_c.write(&chunk[..n]) {
                echo_sent += w as u64;
            }
        }
        if let Some(e) = echo_s.as_mut() {
            // Read no more than can be written back at once.
            loop {
                let room = e.writable_bytes().min(buf.len());
                match e.read(&mut buf[..room]) {
                    Ok(n) if n > 0 => e.write_all(&buf[..n]).expect("room was there"),
                    _ => break,
                }
            }
        }
        while let Ok(n) = echo_c.read(&mut buf) {
            if n == 0 {
                break;
            }
            echo_back += n as u64;
        }
        // Mid-run the echo port is denied for 20 ms of virtual time, then allowed again.
        if phase == 0 && echo_back > total / 16 {
            denied_at = f.now;
            firewall.set_rules(vec![Rule::deny().dst_port(23), Rule::deny().dst_port(7)]);
            println!("{:>9.3} s  firewall: port 7 denied", f.now.micros() as f64 / 1e6);
            phase = 1;
        } else if phase == 1 && f.now.saturating_since(denied_at) > Duration::from_millis(20) {
            println!(
                "{:>9.3} s  firewall: port 7 allowed again (hits while denied: {:?})",
                f.now.micros() as f64 / 1e6,
                firewall.hits()
            );
            firewall.set_rules(vec![Rule::deny().dst_port(23)]);
            phase = 2;
        }
        if f.now >= next_report {
            next_report = f.now + Duration::from_millis(2);
            println!(
                "{:>9.3} s  spliced {:>6.1}/{:>6.1} MiB  echo {:>6.1} MiB  relayed {} frames  trace {} events  capture {} frames  class0/1 frames {}/{}",
                f.now.micros() as f64 / 1e6,
                got_up as f64 / 1048576.0,
                got_down as f64 / 1048576.0,
                echo_back as f64 / 1048576.0,
                splicer.counters().relayed(),
                events.recorded(),
                capture.written(),
                classes.traffic(0).0,
                classes.traffic(1).0,
            );
        }
        got_up == total && got_down == total && echo_back == total / 4
    });
    cs.shutdown(std::net::Shutdown::Write).unwrap();
    ss.shutdown(std::net::Shutdown::Write).unwrap();
    drop(echo_c);
    f.until("splice ends", |_| splicer.active() == 0);
    capture.flush().unwrap();
    let n = events
        .write_json_lines(std::fs::File::create(&trace_path).unwrap())
        .unwrap();
    println!();
    println!("virtual time        {:.3} s", f.now.micros() as f64 / 1e6);
    println!(
        "splice              {} MiB each way relayed in {} frames; the proxy's protocol stage never saw them",
        args.mib,
        splicer.counters().relayed()
    );
    println!(
        "classification      class 0: {} connection(s), {} frames; class 1: {} connection(s), {} frames",
        classes.connections(0),
        classes.traffic(0).0,
        classes.connections(1),
        classes.traffic(1).0
    );
    println!(
        "firewall            rule hits {:?}, default {}; telnet {:?}",
        firewall.hits(),
        firewall.default_hits(),
        telnet.status()
    );
    println!(
        "capture             {} SYN/FIN/RST frames of {} in {}",
        capture.written(),
        capture.seen(),
        cap_path.display()
    );
    println!(
        "trace               {} events ({} lost) in {}",
        n,
        events.lost(),
        trace_path.display()
    );
    println!("proxy stages:");
    for h in f.proxy.stats().hooks {
        println!("  {h}");
    }
}

#[cfg(feature = "af_xdp")]
#[path = "../tests/common/lab.rs"]
#[allow(dead_code)]
mod lab;

/// The proxy engine on AF_XDP, against Linux sockets on the other side of a veth pair.
#[cfg(feature = "af_xdp")]
mod lab_run {
    use std::io::{Read, Write};
    use std::net::{Shutdown, SocketAddrV4, TcpListener, TcpStream};
    use std::time::Duration;

    use super::lab::VethLab;
    use super::*;
    use flextoe::backends::any::{AnyPort, BackendKind, PortSpec};
    use flextoe::backends::netns::in_netns;
    use flextoe::pipeline::Runtime;
    use flextoe::time::SystemClock;

    const UPSTREAM_PORT: u16 = 9000;

    pub fn run(args: &Args) {
        let Some(lab) = VethLab::new() else {
            eprintln!("--lab needs root and ip, ethtool, nft");
            std::process::exit(2);
        };
        let (linux_ns, engine_ns) = (lab.linux.0.clone(), lab.engine.0.clone());
        let (engine_ip, linux_ip) = (lab.engine_ip, lab.linux_ip);
        let mac = MacAddr([2, 0, 0, 0x4c, 0, 2]);
        let port = AnyPort::open(&PortSpec {
            kind: BackendKind::AfXdp,
            iface: lab.engine_if.clone(),
            netns: Some(engine_ns),
            mac,
            ip: engine_ip,
            dpdk_args: String::new(),
            queues: 1,
        })
        .expect("AF_XDP port");
        let capture = Capture::create(
            args.out.join("flextoe-features-lab.pcapng"),
            CaptureFormat::PcapNg,
            "syn or fin or rst",
        )
        .expect("capture file");
        let classes = Classification::new(vec![ClassRule::to_class(0).local_port(7)], 1);
        let firewall = Firewall::new(Action::Allow);
        firewall.set_rules(vec![Rule::deny().dst_port(23)]);
        let splicer = Splicer::new();
        let (tracer, events) = Tracer::new(1 << 20);
        let mut cfg = EngineConfig::new(mac, engine_ip);
        cfg.control.classifier = Some(classes.classifier());
        cfg.tx_buffer = 1 << 20;
        cfg.rx_buffer = 1 << 20;
        let engine = Pipeline::builder(cfg, port)
            .on_rx_frame(capture.rx_stage())
            .on_rx_frame(classes.stage())
            .on_rx_frame(VlanStrip::any())
            .on_rx_frame(splicer.stage())
            .on_rx_frame(firewall.stage())
            .on_results(tracer)
            .on_tx_frame(capture.tx_stage())
            .scheduler(Pacer::new(4).with_classes(ClassPolicy::Weighted(vec![3, 1])))
            .build()
            .expect("proxy engine");
        let rt = Runtime::spawn(engine, SystemClock::new()).expect("runtime");
        let host = rt.host();
        // The Linux server behind the proxy: echoes what it gets.
        let server = in_netns(&linux_ns, move || {
            TcpListener::bind(SocketAddrV4::new(linux_ip, UPSTREAM_PORT))
        })
        .expect("linux server");
        std::thread::spawn(move || {
            for s in server.incoming().flatten() {
                std::thread::spawn(move || linux_echo(s));
            }
        });
        // The proxy application: a request line, then a splice to the server.
        let proxy_l = host.listen(8080, 16).unwrap();
        let echo_l = host.listen(7, 16).unwrap();
        let _telnet_l = host.listen(23, 16).unwrap();
        let (h2, sp) = (host.clone(), splicer.clone());
        std::thread::spawn(move || {
            while let Ok(mut down) = proxy_l.accept() {
                let mut line = [0u8; 3];
                if down.read_exact(&mut line).is_err() {
                    continue;
                }
                let upstream = SocketAddrV4::new(linux_ip, UPSTREAM_PORT);
                let Ok(up) = h2.connect_blocking(upstream, Duration::from_secs(5)) else {
                    continue;
                };
                let mut pair = (down, up);
                for _ in 0..50 {
                    match sp.splice(pair.0, pair.1) {
                        Ok(p) => match p.wait(Duration::from_secs(5)) {
                            Ok(()) => break,
                            Err((e, d, u)) => {
                                eprintln!("splice: {e}; again");
                                std::thread::sleep(Duration::from_millis(20));
                                pair = (d, u);
                            }
                        },
                        Err((e, ..)) => {
                            eprintln!("splice: {e}");
                            break;
                        }
                    }
                }
            }
        });
        std::thread::spawn(move || {
            while let Ok(mut s) = echo_l.accept() {
                std::thread::spawn(move || {
                    let mut b = vec![0u8; 65536];
                    while let Ok(n) = s.read(&mut b) {
                        if n == 0 || s.write_all(&b[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s.shutdown(Shutdown::Write);
                });
            }
        });
        // Linux clients: through the splice, to the echo port, to the denied port.
        let total = (args.mib << 20) as usize;
        let spliced = linux_client(
            &linux_ns,
            SocketAddrV4::new(engine_ip, 8080),
            b"GO\n",
            total,
        );
        let echoed = linux_client(&linux_ns, SocketAddrV4::new(engine_ip, 7), b"", total / 4);
        let telnet = in_netns(&linux_ns, move || {
            TcpStream::connect_timeout(
                &SocketAddrV4::new(engine_ip, 23).into(),
                Duration::from_secs(2),
            )
        });
        println!(
            "spliced through the proxy to the Linux server: {spliced} bytes echoed back intact"
        );
        println!("echoed by the proxy itself: {echoed} bytes");
        println!(
            "telnet: {}",
            if telnet.is_err() {
                "no connection (firewall)"
            } else {
                "CONNECTED"
            }
        );
        assert_eq!(spliced, total, "the splice carried everything");
        assert_eq!(echoed, total / 4);
        assert!(telnet.is_err(), "the firewall let telnet in");
        capture.flush().unwrap();
        let st = rt.stop().stats();
        println!(
            "splice relayed {} frames; classes 0/1: {}/{} connections; firewall hits {:?}; {} trace events; {} captured frames",
            splicer.counters().relayed(),
            classes.connections(0),
            classes.connections(1),
            firewall.hits(),
            events.recorded(),
            capture.written()
        );
        for h in st.hooks {
            println!("  {h}");
        }
        assert!(splicer.counters().relayed() > 0);
    }

    fn linux_echo(mut s: TcpStream) {
        let mut b = vec![0u8; 65536];
        while let Ok(n) = s.read(&mut b) {
            if n == 0 || s.write_all(&b[..n]).is_err() {
                break;
            }
        }
        let _ = s.shutdown(Shutdown::Write);
    }

    /// From the Linux side: connect, send `hello`, wait a moment (the splice), send `n`
    /// bytes, read them back; how many came back equal.
    fn linux_client(ns: &str, to: SocketAddrV4, hello: &'static [u8], n: usize) -> usize {
        let mut s = in_netns(ns, move || {
            TcpStream::connect_timeout(&to.into(), Duration::from_secs(5))
        })
        .expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(hello).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = s.try_clone().unwrap();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            w.write_all(&sent).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::with_capacity(n);
        let mut b = vec![0u8; 65536];
        while let Ok(k) = s.read(&mut b) {
            if k == 0 {
                break;
            }
            back.extend_from_slice(&b[..k]);
        }
        writer.join().unwrap();
        if back == data {
            back.len()
        } else {
            0
        }
    }
}
