//! Assemble your own engine: the built-in stages plus three user stages, on the inline
//! runtime and then on the threaded runtime, over the in-memory backend.
//!
//! * `VlanStrip` (at `rx_frame`) takes the 802.1Q tag off received frames of one VLAN and
//!   drops other VLANs and untagged frames; `VlanPush` (at `tx_frame`) tags every frame the
//!   engine sends, in the frame's headroom (O(1), no payload moved).
//! * `Firewall` (at `rx_frame`, after the VLAN strip; in `support/firewall.rs`) drops TCP
//!   frames to denied ports, counted under its own reason.
//! * `Tracer` (at `results`) keeps bytes sent and received and RTT samples per flow, from
//!   the protocol stage's results.
//!
//! The client engine is assembled the same way (VLAN stages only). It echoes `--mib` MiB
//! (default 8) through the server on port 7, verifies it, and tries port 23, which the
//! server's firewall denies. Every stage's counters are printed, user stages included.
//!
//! ```text
//! cargo run --release --example custom_pipeline -- --mib 8
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as WallInstant};

use flextoe::backends::mem::{MemLink, MemPort};
use flextoe::buf::Frame;
use flextoe::flow::FlowId;
use flextoe::host::ConnStatus;
use flextoe::pipeline::hooks::{Hook, HookCx, Results, RxFrame, TxFrame, Verdict, Verdicts};
use flextoe::pipeline::{Engine, EngineConfig, Pipeline, PipelineBuilder, Topology};
use flextoe::sim::Impairments;
use flextoe::stages::{Actions, ProtoResult};
use flextoe::time::{Clock, SystemClock};
use flextoe::wire::MacAddr;

// The port firewall (a user stage at `rx_frame`) is shared with the example servers'
// `--deny` option.
#[path = "support/firewall.rs"]
mod firewall;
use firewall::Firewall;

const SERVER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
const CLIENT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const VLAN: u16 = 42;
const ECHO_PORT: u16 = 7;
const DENIED_PORT: u16 = 23;

/// 802.1Q: strips the tag of VLAN `vid` on receive; drops other VLANs and untagged frames.
#[derive(Clone)]
struct VlanStrip {
    vid: u16,
}

impl Hook<RxFrame> for VlanStrip {
    fn name(&self) -> &'static str {
        "vlan-strip"
    }
    fn drop_reasons(&self) -> &'static [&'static str] {
        &["untagged", "other-vlan"]
    }
    fn process(&mut self, cx: &HookCx<'_>, frames: &mut [Frame], verdicts: &mut Verdicts) {
        for (i, f) in frames.iter_mut().enumerate() {
            let d = cx.arena.data_mut(f);
            if d.len() < 18 || d[12..14] != [0x81, 0x00] {
                verdicts.set(i, Verdict::Drop(0));
                continue;
            }
            if u16::from_be_bytes([d[14], d[15]]) & 0x0fff != self.vid {
                verdicts.set(i, Verdict::Drop(1));
                continue;
            }
            // Move the two MAC addresses over the tag, then start the frame 4 bytes later.
            d.copy_within(0..12, 4);
            f.pull_header(4);
        }
    }
}

/// 802.1Q: tags every frame sent with VLAN `vid`, in the frame's headroom.
#[derive(Clone)]
struct VlanPush {
    vid: u16,
}

impl Hook<TxFrame> for VlanPush {
    fn name(&self) -> &'static str {
        "vlan-push"
    }
    fn drop_reasons(&self) -> &'static [&'static str] {
        &["no-headroom"]
    }
    fn process(&mut self, cx: &HookCx<'_>, frames: &mut [Frame], verdicts: &mut Verdicts) {
        for (i, f) in frames.iter_mut().enumerate() {
            if f.len() < 14 || !f.push_header(4) {
                verdicts.set(i, Verdict::Drop(0));
                continue;
            }
            let d = cx.arena.data_mut(f);
            d.copy_within(4..16, 0);
            d[12..14].copy_from_slice(&[0x81, 0x00]);
            d[14..16].copy_from_slice(&(self.vid & 0x0fff).to_be_bytes());
        }
    }
}

/// What the tracer saw of one flow.
#[derive(Clone, Copy, Debug, Default)]
struct FlowTrace {
    acked_bytes: u64,
    received_bytes: u64,
    rtt_samples: u64,
    rtt_sum_us: u64,
    rtt_min_us: u32,
    rtt_max_us: u32,
}

type Traces = Arc<Mutex<BTreeMap<FlowId, FlowTrace>>>;

/// Per-flow bytes and RTT from the protocol results. Each instance (one per flow group when
/// threaded) gathers a burst locally and takes the shared map's lock once per burst.
#[derive(Clone)]
struct Tracer {
    out: Traces,
    local: Vec<(FlowId, FlowTrace)>,
}

impl Hook<Results> for Tracer {
    fn name(&self) -> &'static str {
        "tracer"
    }
    fn process(&mut self, _cx: &HookCx<'_>, results: &mut [ProtoResult], _v: &mut Verdicts) {
        self.local.clear();
        for r in results.iter() {
            let i = match self.local.iter().position(|(f, _)| *f == r.flow) {
                Some(i) => i,
                None => {
                    self.local.push((r.flow, FlowTrace::default()));
                    self.local.len() - 1
                }
            };
            let t = &mut self.local[i].1;
            t.acked_bytes += r.acked as u64;
            if r.actions.any(Actions::PLACE_PAYLOAD) {
                t.received_bytes += r.payload.len as u64;
            }
            if r.actions.any(Actions::RTT_SAMPLE) {
                t.rtt_samples += 1;
                t.rtt_sum_us += r.rtt_us as u64;
                t.rtt_min_us = if t.rtt_min_us == 0 {
                    r.rtt_us
                } else {
                    t.rtt_min_us.min(r.rtt_us)
                };
                t.rtt_max_us = t.rtt_max_us.max(r.rtt_us);
            }
        }
        let mut all = self.out.lock().unwrap_or_else(|p| p.into_inner());
        for (flow, t) in &self.local {
            let e = all.entry(*flow).or_default();
            e.acked_bytes += t.acked_bytes;
            e.received_bytes += t.received_bytes;
            e.rtt_samples += t.rtt_samples;
            e.rtt_sum_us += t.rtt_sum_us;
            if t.rtt_samples > 0 {
                e.rtt_min_us = if e.rtt_min_us == 0 {
                    t.rtt_min_us
                } else {
                    e.rtt_min_us.min(t.rtt_min_us)
                };
            }
            e.rtt_max_us = e.rtt_max_us.max(t.rtt_max_us);
        }
    }
}

/// The server's pipeline: VLAN strip, then the firewall, on receive; the tracer on the
/// results; VLAN push on transmit.
fn server(port: MemPort, traces: &Traces) -> PipelineBuilder<MemPort> {
    Pipeline::builder(EngineConfig::new(SERVER_MAC, SERVER_IP), port)
        .on_rx_frame(VlanStrip { vid: VLAN })
        .on_rx_frame(Firewall {
            deny: vec![DENIED_PORT],
        })
        .on_results(Tracer {
            out: traces.clone(),
            local: Vec::new(),
        })
        .on_tx_frame(VlanPush { vid: VLAN })
}

/// The client speaks the same tagged link.
fn client(port: MemPort) -> Engine<MemPort> {
    let mut cfg = EngineConfig::new(CLIENT_MAC, CLIENT_IP);
    cfg.control.syn_retries = 1;
    cfg.control.rto_initial = Duration::from_millis(100);
    Pipeline::builder(cfg, port)
        .on_rx_frame(VlanStrip { vid: VLAN })
        .on_tx_frame(VlanPush { vid: VLAN })
        .build()
        .expect("client engine")
}

/// Echo `total` bytes through the server on port 7 and try port 23; `poll_server` runs the
/// server when it is inline. Returns seconds taken.
fn exercise(
    client: &mut Engine<MemPort>,
    host: &flextoe::Host,
    total: usize,
    mut poll_server: impl FnMut(flextoe::time::Instant),
) -> f64 {
    let clock = SystemClock::new();
    let listener = host.listen(ECHO_PORT, 4).expect("listen");
    let _denied_listener = host.listen(DENIED_PORT, 4).expect("listen");
    let mut conn = client
        .host()
        .connect(SocketAddrV4::new(SERVER_IP, ECHO_PORT))
        .expect("connect");
    let denied = client
        .host()
        .connect(SocketAddrV4::new(SERVER_IP, DENIED_PORT))
        .expect("connect");
    conn.set_nonblocking(true);
    let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    let (mut sent, mut back) = (0, 0);
    let mut srv = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    let start = WallInstant::now();
    while back < total || denied.status() == ConnStatus::Connecting {
        assert!(start.elapsed() < Duration::from_secs(120), "stalled");
        let now = clock.now();
        client.poll(now);
        poll_server(now);
        if srv.is_none() {
            srv = listener.try_accept().expect("accept");
            if let Some(s) = srv.as_mut() {
                s.set_nonblocking(true);
            }
        }
        if let Some(s) = srv.as_mut() {
            if pending.is_empty() {
                if let Ok(n) = s.read(&mut buf) {
                    pending.extend_from_slice(&buf[..n]);
                }
            }
            if let Ok(n) = s.write(&pending) {
                pending.drain(..n);
            }
        }
        if sent < total {
            if let Ok(n) = conn.write(&data[sent..]) {
                sent += n;
            }
        }
        if let Ok(n) = conn.read(&mut buf) {
            assert_eq!(&buf[..n], &data[back..back + n], "echo differs");
            back += n;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(back, total);
    assert_ne!(
        denied.status(),
        ConnStatus::Established,
        "port 23 is denied"
    );
    println!(
        "  echoed {} MiB through VLAN {VLAN} in {secs:.2} s; port {DENIED_PORT}: {:?}",
        total >> 20,
        denied.status()
    );
    secs
}

fn print_traces(traces: &Traces) {
    for (flow, t) in traces.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let avg = t.rtt_sum_us.checked_div(t.rtt_samples).unwrap_or(0);
        println!(
            "  tracer: flow {flow}: acked {} B, received {} B, {} RTT samples (min {} us, avg {avg} us, max {} us)",
            t.acked_bytes, t.received_bytes, t.rtt_samples, t.rtt_min_us, t.rtt_max_us
        );
    }
}

fn main() {
    let mib: usize = std::env::args()
        .skip_while(|a| a != "--mib")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let total = mib << 20;

    println!("== inline runtime");
    let (sp, cp) = MemLink::pair(Impairments::none());
    let traces = Traces::default();
    let mut srv = server(sp, &traces).build().expect("server engine");
    let mut cli = client(cp);
    let host = srv.host();
    exercise(&mut cli, &host, total, |now| {
        srv.poll(now);
    });
    print_traces(&traces);
    println!("server:\n{}", srv.stats());
    let s = srv.stats();
    let fw = s.hook("firewall").expect("firewall stats");
    assert!(
        fw.drops("denied-port") > 0,
        "the firewall dropped the SYNs to port 23"
    );
    assert!(s.hook("vlan-push").expect("vlan-push").stats.passed > 0);

    println!("\n== threaded runtime (Topology::x86(2))");
    let (sp, cp) = MemLink::pair(Impairments::none());
    let traces = Traces::default();
    let srv = server(sp, &traces)
        .threaded(Topology::x86(2), SystemClock::new())
        .expect("threaded server");
    let mut cli = client(cp);
    let host = srv.host();
    exercise(&mut cli, &host, total, |_| {});
    let st = srv.stop();
    print_traces(&traces);
    println!("server:\n{st}");
    let fw = st.hook("firewall").expect("firewall stats");
    assert!(
        fw.drops("denied-port") > 0,
        "the firewall dropped the SYNs to port 23"
    );
    println!("client:\n{}", cli.stats());
}
