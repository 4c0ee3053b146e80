//! What each extension costs on the receive path: the default pipeline against the same with
//! one extension added, per data segment of an established connection (bursts of 32
//! segments of 1448 bytes, read by the application), in one run. With `--features ebpf`
//! (and clang to build `examples/xdp/port_filter.c`) it adds the XDP port filter in rbpf's
//! interpreter and JIT, against the same filter written as a native stage.
//!
//! ```text
//! cargo bench --features ebpf --bench extensions
//! ```
//!
//! criterion measures each configuration; then interleaved rounds of all of them (each
//! round in a different order) give medians in ns per segment and the overhead over the
//! bare pipeline, printed as a table.

use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant as StdInstant};

use criterion::{BenchmarkId, Criterion, Throughput};
use flextoe::backends::Port;
use flextoe::buf::{Frame, FrameArena};
use flextoe::pipeline::hooks::{Hook, HookCx, RxFrame, Verdict};
use flextoe::pipeline::{Engine, EngineConfig, Pipeline, PipelineBuilder, Verdicts};
use flextoe::stages::ext::capture::{Capture, CaptureFormat};
use flextoe::stages::ext::classify::{ClassRule, Classification};
use flextoe::stages::ext::firewall::{Action, Firewall, Rule};
use flextoe::stages::ext::headers::FrameInfo;
use flextoe::stages::ext::trace::{TraceReader, Tracer};
use flextoe::stages::ext::vlan::{VlanPush, VlanStrip};
use flextoe::time::Instant;
use flextoe::wire::{self, flags, Endpoints, MacAddr, Parsed};
use smoltcp::wire::{TcpControl, TcpRepr, TcpSeqNumber};

const BURST: usize = 32;
const PAYLOAD: usize = 1448;
const LOCAL_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const PEER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 2);

#[derive(Default)]
struct BenchPort {
    rx: VecDeque<Frame>,
    pending: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    capture: bool,
}

impl Port for BenchPort {
    fn recv(&mut self, _: Instant, arena: &FrameArena, out: &mut Vec<Frame>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            if let Some(f) = self.rx.pop_front() {
                out.push(f);
            } else if let Some(b) = self.pending.pop_front() {
                out.push(arena.alloc_copy(&b).expect("frame"));
            } else {
                break;
            }
            n += 1;
        }
        n
    }

    fn send(&mut self, _: Instant, arena: &FrameArena, frames: &mut Vec<Frame>) -> usize {
        let n = frames.len();
        for f in frames.drain(..) {
            if self.capture {
                self.tx.push(arena.data(&f).to_vec());
            }
            arena.free(f);
        }
        n
    }
}

fn segment(tag: Option<u16>, fl: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    segment_ports(tag, (4000, 80), fl, seq, ack, payload)
}

fn segment_ports(
    tag: Option<u16>,
    ports: (u16, u16),
    fl: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut buf = vec![0u8; 14 + 20 + 20 + 4 + payload.len()];
    let ep = Endpoints {
        src_mac: PEER_MAC,
        dst_mac: LOCAL_MAC,
        src_ip: PEER_IP,
        dst_ip: LOCAL_IP,
    };
    let repr = TcpRepr {
        src_port: ports.0,
        dst_port: ports.1,
        control: if fl & flags::SYN != 0 {
            TcpControl::Syn
        } else {
            TcpControl::None
        },
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: (fl & flags::ACK != 0).then_some(TcpSeqNumber(ack as i32)),
        window_len: 65535,
        window_scale: None,
        max_seg_size: (fl & flags::SYN != 0).then_some(1460),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    let n = wire::emit_tcp(&mut buf, &ep, &repr).expect("segment");
    buf.truncate(n);
    if let Some(vid) = tag {
        let mut t = buf[..12].to_vec();
        t.extend_from_slice(&[0x81, 0x00]);
        t.extend_from_slice(&vid.to_be_bytes());
        t.extend_from_slice(&buf[12..]);
        buf = t;
    }
    buf
}

/// The same filter as `examples/xdp/port_filter.c`, as a native stage: drops TCP and UDP
/// frames to a port in the set, counting them.
#[derive(Clone)]
struct PortFilter {
    blocked: HashSet<u32>,
    drops: u64,
}

impl Hook<RxFrame> for PortFilter {
    fn name(&self) -> &'static str {
        "native-port-filter"
    }
    fn drop_reasons(&self) -> &'static [&'static str] {
        &["blocked"]
    }
    fn process(&mut self, cx: &HookCx<'_>, frames: &mut [Frame], v: &mut Verdicts) {
        for (i, f) in frames.iter().enumerate() {
            if let Some(h) = FrameInfo::peek(cx.arena.data(f)) {
                if (h.proto == 6 || h.proto == 17) && self.blocked.contains(&u32::from(h.dport)) {
                    self.drops += 1;
                    v.set(i, Verdict::Drop(0));
                }
            }
        }
    }
}

/// One configuration: its name, whether its input is VLAN-tagged, and how it extends the
/// pipeline.
struct Config {
    name: String,
    tagged: bool,
    /// Splice the connection to a second one before measuring (a splice stage at
    /// `rx_frame`): its segments are relayed.
    splice: bool,
    add: Box<dyn Fn(PipelineBuilder<BenchPort>) -> PipelineBuilder<BenchPort>>,
}

fn configs(keep: &mut Vec<TraceReader>) -> Vec<Config> {
    let mut v: Vec<Config> = vec![Config {
        name: "bare pipeline".into(),
        tagged: false,
        splice: false,
        add: Box::new(|b| b),
    }];
    let (tracer, reader) = Tracer::new(1 << 16);
    keep.push(reader);
    v.push(Config {
        name: "tracer (results)".into(),
        tagged: false,
        splice: false,
        add: Box::new(move |b| b.on_results(tracer.clone())),
    });
    v.push(Config {
        name: "capture, SYN/FIN/RST filter (rx, tx)".into(),
        tagged: false,
        splice: false,
        add: Box::new(|b| {
            let c = Capture::new(
                std::io::sink(),
                CaptureFormat::PcapNg,
                "syn or fin or rst".parse().unwrap(),
            )
            .unwrap();
            b.on_rx_frame(c.rx_stage()).on_tx_frame(c.tx_stage())
        }),
    });
    v.push(Config {
        name: "VLAN strip + push (tagged input)".into(),
        tagged: true,
        splice: false,
        add: Box::new(|b| {
            b.on_rx_frame(VlanStrip::only(42))
                .on_tx_frame(VlanPush::new(42))
        }),
    });
    v.push(Config {
        name: "classification (rx)".into(),
        tagged: false,
        splice: false,
        add: Box::new(|b| {
            let c = Classification::new(
                vec![
                    ClassRule::to_class(0).local_port(11211),
                    ClassRule::to_class(2).dscp(46),
                ],
                1,
            );
            b.on_rx_frame(c.stage())
        }),
    });
    v.push(Config {
        name: "firewall, 8 rules (rx)".into(),
        tagged: false,
        splice: false,
        add: Box::new(|b| {
            let fw = Firewall::new(Action::Allow);
            fw.set_rules(
                (0..8)
                    .map(|k| {
                        Rule::deny()
                            .dst_port(1000 + k)
                            .src("192.0.2.0/24".parse().unwrap())
                    })
                    .collect(),
            );
            b.on_rx_frame(fw.stage())
        }),
    });
    v.push(Config {
        name: "native port filter (rx)".into(),
        tagged: false,
        splice: false,
        add: Box::new(|b| {
            b.on_rx_frame(PortFilter {
                blocked: [23u32, 53].into_iter().collect(),
                drops: 0,
            })
        }),
    });
    v.push(Config {
        name: "splice: segments relayed to another connection (rx -> tx)".into(),
        tagged: false,
        splice: true,
        add: Box::new(|b| b),
    });
    #[cfg(feature = "ebpf")]
    v.extend(ebpf_configs());
    v
}

#[cfg(feature = "ebpf")]
fn ebpf_configs() -> Vec<Config> {
    use flextoe::backends::ebpf::{Exec, XdpObject};
    use flextoe::stages::ext::xdp::XdpStage;
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/xdp/port_filter.c");
    let out = std::env::temp_dir().join(format!("flextoe-bench-{}.o", std::process::id()));
    let ok = std::process::Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-c", src, "-o"])
        .arg(&out)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("clang did not build port_filter.c: no XDP rows");
        return Vec::new();
    }
    let obj = XdpObject::parse(&std::fs::read(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    let mut v = Vec::new();
    for (name, exec) in [
        ("XDP port filter, interpreter (rx)", Exec::Interpreter),
        ("XDP port filter, JIT (rx)", Exec::Jit),
    ] {
        if exec == Exec::Jit && !cfg!(target_arch = "x86_64") {
            continue;
        }
        let prog = obj.program("port_filter", exec).unwrap();
        for p in [23u32, 53] {
            prog.maps()
                .update("blocked", &p.to_le_bytes(), &1u32.to_le_bytes())
                .unwrap();
        }
        v.push(Config {
            name: name.into(),
            tagged: false,
            splice: false,
            add: Box::new(move |b| b.on_rx_frame(XdpStage::new(prog.clone()).unwrap())),
        });
    }
    v
}

struct Side {
    engine: Engine<BenchPort>,
    /// `None` when the connection went into a splice (its segments are relayed).
    stream: Option<flextoe::Stream>,
    seq: u32,
    ack: u32,
    tagged: bool,
    t: u64,
}

fn setup(c: &Config) -> Side {
    let mut cfg = EngineConfig::new(LOCAL_MAC, LOCAL_IP).neighbor(PEER_IP, PEER_MAC);
    cfg.control.timestamps = false;
    let port = BenchPort {
        capture: true,
        ..Default::default()
    };
    let splicer = c.splice.then(flextoe::stages::ext::splice::Splicer::new);
    let mut b = (c.add)(Pipeline::builder(cfg, port));
    if let Some(sp) = &splicer {
        b = b.on_rx_frame(sp.stage());
    }
    let mut e = b.build().unwrap();
    let l = e.host().listen(80, 4).unwrap();
    let tag = c.tagged.then_some(42);
    e.port_mut()
        .pending
        .push_back(segment(tag, flags::SYN, 1000, 0, &[]));
    e.poll(Instant::ZERO);
    let synack = e.port().tx.last().cloned().expect("SYN-ACK");
    let off = if c.tagged { 4 } else { 0 };
    let Ok(Parsed::Tcp(s)) = wire::parse_frame(&synack[off..]) else {
        panic!("no SYN-ACK")
    };
    let ack = s.summary.seq.wrapping_add(1);
    e.port_mut()
        .pending
        .push_back(segment(tag, flags::ACK, 1001, ack, &[]));
    e.poll(Instant::ZERO);
    let mut stream = l.try_accept().unwrap().expect("established");
    stream.set_nonblocking(true);
    e.port_mut().capture = false;
    let stream = match splicer {
        None => Some(stream),
        Some(sp) => {
            // A second connection (peer port 4001 to port 81), and the two spliced.
            let l2 = e.host().listen(81, 4).unwrap();
            e.port_mut().capture = true;
            e.port_mut().pending.push_back(segment_ports(
                None,
                (4001, 81),
                flags::SYN,
                5000,
                0,
                &[],
            ));
            e.poll(Instant::from_micros(1));
            let synack = e.port().tx.last().cloned().expect("SYN-ACK");
            let Ok(Parsed::Tcp(s2)) = wire::parse_frame(&synack) else {
                panic!("no SYN-ACK")
            };
            let a2 = s2.summary.seq.wrapping_add(1);
            e.port_mut().pending.push_back(segment_ports(
                None,
                (4001, 81),
                flags::ACK,
                5001,
                a2,
                &[],
            ));
            e.poll(Instant::from_micros(2));
            let other = l2.try_accept().unwrap().expect("second connection");
            e.port_mut().capture = false;
            let mut pending = Some(sp.splice(stream, other).expect("splice asked"));
            let mut t = 3;
            loop {
                e.poll(Instant::from_micros(t));
                t += 1;
                match pending.take().expect("pending").try_finish() {
                    Err(p) => pending = Some(p),
                    Ok(Ok(())) => break,
                    Ok(Err((err, ..))) => panic!("splice: {err}"),
                }
                assert!(t < 10_000, "the splice did not happen");
            }
            None
        }
    };
    Side {
        engine: e,
        stream,
        seq: 1001,
        ack,
        tagged: c.tagged,
        t: 1,
    }
}

/// One burst in, read out; the time it took.
fn burst(s: &mut Side, payload: &[u8], buf: &mut [u8]) -> Duration {
    let arena = s.engine.arena().clone();
    let tag = s.tagged.then_some(42);
    for _ in 0..BURST {
        let f = segment(tag, flags::ACK, s.seq, s.ack, payload);
        s.seq = s.seq.wrapping_add(payload.len() as u32);
        let frame = arena.alloc_copy(&f).expect("frame");
        s.engine.port_mut().rx.push_back(frame);
    }
    let start = StdInstant::now();
    s.t += 1;
    s.engine.poll(Instant::from_micros(s.t));
    if let Some(st) = s.stream.as_mut() {
        while let Ok(n) = st.read(buf) {
            if n == 0 {
                break;
            }
        }
    }
    start.elapsed()
}

fn main() {
    let mut readers = Vec::new();
    let cfgs = configs(&mut readers);
    let payload = vec![0x5au8; PAYLOAD];
    let mut buf = vec![0u8; 256 * 1024];
    let mut c = Criterion::default().configure_from_args();
    {
        let mut g = c.benchmark_group("extensions");
        g.throughput(Throughput::Elements(BURST as u64));
        for cfg in &cfgs {
            let mut side = setup(cfg);
            g.bench_function(BenchmarkId::new("rx burst", &cfg.name), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| burst(&mut side, &payload, &mut buf))
                        .sum()
                })
            });
            for r in &readers {
                r.drain();
            }
        }
        g.finish();
    }
    c.final_summary();

    const ROUNDS: usize = 31;
    const BURSTS: usize = 300;
    let mut sides: Vec<Side> = cfgs.iter().map(setup).collect();
    let mut times = vec![Vec::new(); cfgs.len()];
    for round in 0..ROUNDS {
        for k in 0..sides.len() {
            let i = (k + round) % sides.len();
            let mut spent = Duration::ZERO;
            for _ in 0..BURSTS {
                spent += burst(&mut sides[i], &payload, &mut buf);
            }
            times[i].push(spent.as_nanos() as f64 / (BURSTS * BURST) as f64);
            for r in &readers {
                r.drain();
            }
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let base = med(&mut times[0].clone());
    println!(
        "\nreceive path, {PAYLOAD} B segments, {ROUNDS} interleaved rounds of {BURSTS} bursts of {BURST}: median ns per segment"
    );
    println!("| configuration | ns/segment | over the bare pipeline |");
    println!("|---|---|---|");
    for (cfg, t) in cfgs.iter().zip(times.iter_mut()) {
        let m = med(t);
        println!(
            "| {} | {m:.1} | {:+.1} ns ({:+.1}%) |",
            cfg.name,
            m - base,
            (m / base - 1.0) * 100.0
        );
    }
    for s in &sides {
        for h in s.engine.stats().hooks {
            assert!(h.stats.items_in > 0, "{} ran", h.name);
            assert_eq!(
                h.drops_total(),
                0,
                "{} dropped nothing of this stream",
                h.name
            );
            if h.name == "splice" {
                assert!(h.stats.tx > 0, "the splice relayed");
            }
        }
    }
}
