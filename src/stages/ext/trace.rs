//! TCP tracing at [`Results`]: per-flow events (state changes, RTT samples, the congestion
//! window, retransmissions by kind, the peer's window) into a bounded lock-free ring that
//! any thread drains ([`TraceReader`]), as JSON lines or as a pcapng file whose packets are
//! empty and whose comments are the events (Wireshark and tshark show them as
//! `frame.comment`).
//!
//! Its cost is bounded: one push per event, and when the ring is full the event is counted
//! as lost, never waited for.
//!
//! ```
//! use flextoe::stages::ext::trace::Tracer;
//!
//! let (tracer, reader) = Tracer::new(64 * 1024);
//! // Pipeline::builder(cfg, port).on_results(tracer)...
//! let mut json = Vec::new();
//! reader.write_json_lines(&mut json).unwrap();
//! assert!(json.is_empty());
//! # drop(tracer);
//! ```

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use crate::flow::FlowId;
use crate::pipeline::hooks::{Hook, HookCx, Results, Verdicts};
use crate::stages::{Actions, ProtoResult};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TraceKind {
    /// An RTT sample (microseconds).
    Rtt(u32),
    /// The congestion window changed (bytes).
    Cwnd(u32),
    /// The peer's window changed (bytes).
    PeerWindow(u32),
    /// A fast recovery began (its first retransmission).
    FastRetransmit,
    /// A fast recovery resent a segment (a SACK hole, a partial ACK).
    RecoveryRetransmit,
    /// A tail-loss probe was sent.
    TailProbe,
    /// A retransmission timeout went back to the oldest unacknowledged byte.
    TimeoutRetransmit,
    /// The peer's FIN arrived.
    FinReceived,
    /// Our FIN was sent.
    FinSent,
    /// Our FIN was acknowledged.
    FinAcked,
    /// A RST arrived and reset the connection.
    RstReceived,
    /// We sent a RST.
    RstSent,
}

impl TraceKind {
    /// The event's name in exports.
    pub fn name(&self) -> &'static str {
        match self {
            TraceKind::Rtt(_) => "rtt",
            TraceKind::Cwnd(_) => "cwnd",
            TraceKind::PeerWindow(_) => "peer_window",
            TraceKind::FastRetransmit => "fast_retransmit",
            TraceKind::RecoveryRetransmit => "recovery_retransmit",
            TraceKind::TailProbe => "tail_probe",
            TraceKind::TimeoutRetransmit => "timeout_retransmit",
            TraceKind::FinReceived => "fin_received",
            TraceKind::FinSent => "fin_sent",
            TraceKind::FinAcked => "fin_acked",
            TraceKind::RstReceived => "rst_received",
            TraceKind::RstSent => "rst_sent",
        }
    }

    fn value(&self) -> Option<u32> {
        match self {
            TraceKind::Rtt(v) | TraceKind::Cwnd(v) | TraceKind::PeerWindow(v) => Some(*v),
            _ => None,
        }
    }
}

/// One event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// The engine's time (microseconds).
    pub at_us: u64,
    /// The flow.
    pub flow: FlowId,
    /// What happened.
    pub kind: TraceKind,
    /// Sequence space in flight after it.
    pub in_flight: u32,
    /// Bytes queued and not sent after it.
    pub unsent: u32,
}

impl TraceEvent {
    /// The event as one line of JSON (no newline).
    pub fn to_json(&self) -> String {
        let value = self
            .kind
            .value()
            .map_or(String::new(), |v| format!(",\"value\":{v}"));
        format!(
            "{{\"t_us\":{},\"flow\":{},\"event\":\"{}\"{value},\"in_flight\":{},\"unsent\":{}}}",
            self.at_us,
            self.flow,
            self.kind.name(),
            self.in_flight,
            self.unsent
        )
    }
}

struct Ring {
    q: ArrayQueue<TraceEvent>,
    lost: AtomicU64,
    pushed: AtomicU64,
}

/// The tracing stage, for [`Results`]. Copies (one per flow group) share the ring.
pub struct Tracer {
    ring: Arc<Ring>,
    /// Per flow: the last congestion window and peer window reported.
    last: Vec<(u32, u32)>,
    /// Events of this burst that found the ring full (flushed once per burst).
    lost: u64,
    pushed: u64,
}

impl Clone for Tracer {
    fn clone(&self) -> Self {
        Tracer {
            ring: self.ring.clone(),
            last: Vec::new(),
            lost: 0,
            pushed: 0,
        }
    }
}

impl Tracer {
    /// A tracer whose ring holds `capacity` events (at least one), and its reader.
    pub fn new(capacity: usize) -> (Tracer, TraceReader) {
        let ring = Arc::new(Ring {
            q: ArrayQueue::new(capacity.max(1)),
            lost: AtomicU64::new(0),
            pushed: AtomicU64::new(0),
        });
        (
            Tracer {
                ring: ring.clone(),
                last: Vec::new(),
                lost: 0,
                pushed: 0,
            },
            TraceReader { ring },
        )
    }

    fn push(&mut self, e: TraceEvent) {
        if self.ring.q.push(e).is_err() {
            self.lost += 1;
        } else {
            self.pushed += 1;
        }
    }

    fn events_of(&mut self, now_us: u64, r: &ProtoResult) {
        let a = r.actions;
        let ev = |kind| TraceEvent {
            at_us: now_us,
            flow: r.flow,
            kind,
            in_flight: r.in_flight,
            unsent: r.unsent,
        };
        const KINDS: [(u32, TraceKind); 9] = [
            (Actions::FAST_RETRANSMIT, TraceKind::FastRetransmit),
            (Actions::RECOVERY_RETRANSMIT, TraceKind::RecoveryRetransmit),
            (Actions::TAIL_PROBE, TraceKind::TailProbe),
            (Actions::TIMEOUT_RETRANSMIT, TraceKind::TimeoutRetransmit),
            (Actions::FIN_RX, TraceKind::FinReceived),
            (Actions::FIN_TX, TraceKind::FinSent),
            (Actions::FIN_ACKED, TraceKind::FinAcked),
            (Actions::RST_RX, TraceKind::RstReceived),
            (Actions::RST_TX, TraceKind::RstSent),
        ];
        if a.any(Actions::RTT_SAMPLE) {
            self.push(ev(TraceKind::Rtt(r.rtt_us)));
        }
        for (bit, kind) in KINDS {
            if a.any(bit) {
                self.push(ev(kind));
            }
        }
        let i = r.flow as usize;
        if self.last.len() <= i {
            self.last.resize(i + 1, (0, 0));
        }
        let (cwnd, wnd) = self.last[i];
        if r.cwnd != cwnd && r.cwnd != 0 {
            self.last[i].0 = r.cwnd;
            self.push(ev(TraceKind::Cwnd(r.cwnd)));
        }
        if r.snd_wnd != wnd && r.cwnd != 0 {
            self.last[i].1 = r.snd_wnd;
            self.push(ev(TraceKind::PeerWindow(r.snd_wnd)));
        }
        if a.any(Actions::RST_RX | Actions::RST_TX) {
            // The flow id may be reused by another connection.
            self.last[i] = (0, 0);
        }
    }
}

impl Hook<Results> for Tracer {
    fn name(&self) -> &'static str {
        "tracer"
    }

    fn process(&mut self, cx: &HookCx<'_>, results: &mut [ProtoResult], _v: &mut Verdicts) {
        let now = cx.now.micros();
        for r in results.iter() {
            self.events_of(now, r);
        }
        if self.lost > 0 {
            self.ring.lost.fetch_add(self.lost, Ordering::Relaxed);
            self.lost = 0;
        }
        if self.pushed > 0 {
            self.ring.pushed.fetch_add(self.pushed, Ordering::Relaxed);
            self.pushed = 0;
        }
    }
}

/// The reading end of a [`Tracer`]'s ring; clones read the same ring.
#[derive(Clone)]
pub struct TraceReader {
    ring: Arc<Ring>,
}

impl TraceReader {
    /// Take one event.
    pub fn pop(&self) -> Option<TraceEvent> {
        self.ring.q.pop()
    }

    /// Take every waiting event.
    pub fn drain(&self) -> Vec<TraceEvent> {
        std::iter::from_fn(|| self.pop()).collect()
    }

    /// Events that found the ring full.
    pub fn lost(&self) -> u64 {
        self.ring.lost.load(Ordering::Relaxed)
    }

    /// Events put in the ring so far.
    pub fn recorded(&self) -> u64 {
        self.ring.pushed.load(Ordering::Relaxed)
    }

    /// Take every waiting event and write it as a line of JSON; returns how many.
    pub fn write_json_lines(&self, mut w: impl Write) -> io::Result<usize> {
        let mut n = 0;
        while let Some(e) = self.pop() {
            writeln!(w, "{}", e.to_json())?;
            n += 1;
        }
        Ok(n)
    }

    /// Take every waiting event and write a pcapng file of them: one empty Ethernet packet
    /// per event, at the event's time, with the event's JSON as its comment. Returns how many.
    pub fn write_pcapng(&self, w: impl Write) -> io::Result<usize> {
        write_pcapng(w, self.drain())
    }
}

fn write_pcapng(w: impl Write, events: Vec<TraceEvent>) -> io::Result<usize> {
    use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::DataLink;

    let err = |e: pcap_file::PcapError| io::Error::other(e.to_string());
    let mut out = PcapNgWriter::new(w).map_err(err)?;
    let idb = InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: Vec::new(),
    };
    out.write_pcapng_block(idb).map_err(err)?;
    let n = events.len();
    for e in events {
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_micros(e.at_us),
            original_len: 0,
            data: std::borrow::Cow::Borrowed(&[]),
            options: vec![EnhancedPacketOption::Comment(e.to_json().into())],
        };
        out.write_pcapng_block(epb).map_err(err)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_become_events_and_a_full_ring_counts_losses() {
        let (mut t, reader) = Tracer::new(4);
        let mut r = ProtoResult {
            flow: 3,
            cwnd: 14480,
            snd_wnd: 65535,
            rtt_us: 120,
            ..Default::default()
        };
        r.actions
            .set(Actions::RTT_SAMPLE | Actions::FAST_RETRANSMIT);
        t.events_of(10, &r);
        let kinds: Vec<_> = reader.drain().into_iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                TraceKind::Rtt(120),
                TraceKind::FastRetransmit,
                TraceKind::Cwnd(14480),
                TraceKind::PeerWindow(65535)
            ]
        );
        // Nothing changed: nothing to say.
        r.actions = Actions::default();
        t.events_of(11, &r);
        assert!(reader.pop().is_none());
        // Five events into a ring of four: one lost, counted.
        r.actions
            .set(Actions::RTT_SAMPLE | Actions::TAIL_PROBE | Actions::FIN_TX);
        r.cwnd = 1;
        r.snd_wnd = 2;
        t.events_of(12, &r);
        assert_eq!((t.pushed, t.lost), (8, 1));
        let line = reader.pop().unwrap().to_json();
        assert_eq!(
            line,
            r#"{"t_us":12,"flow":3,"event":"rtt","value":120,"in_flight":0,"unsent":0}"#
        );
    }

    #[test]
    fn pcapng_export_reads_back() {
        let (mut t, reader) = Tracer::new(16);
        let mut r = ProtoResult::default();
        r.actions.set(Actions::FIN_RX);
        t.events_of(5, &r);
        let mut file = Vec::new();
        assert_eq!(reader.write_pcapng(&mut file).unwrap(), 1);
        let mut rd = pcap_file::pcapng::PcapNgReader::new(&file[..]).unwrap();
        let mut comments = Vec::new();
        while let Some(b) = rd.next_block() {
            if let pcap_file::pcapng::Block::EnhancedPacket(p) = b.unwrap() {
                for o in p.options {
                    if let pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption::Comment(c) = o {
                        comments.push(c.to_string());
                    }
                }
            }
        }
        assert_eq!(comments.len(), 1);
        assert!(comments[0].contains("fin_received"));
    }
}
