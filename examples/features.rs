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
