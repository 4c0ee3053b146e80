//! Preprocess: validate, summarize, look up the flow, and punt what the data path does not
//! handle. Stateless apart from its copy of the flow table, so it can be replicated.

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::{PreOut, Punt, PuntReason, RxWork, Stage};
use crate::buf::{Frame, FrameArena};
use crate::flow::{FlowId, FlowTable};
use crate::stats::{DropReason, StageStats};
use crate::time::Instant;
use crate::wire::{self, flags, MacAddr};

/// The preprocess stage.
pub struct Preprocess {
    arena: Arc<FrameArena>,
    mac: MacAddr,
    ip: Ipv4Addr,
    table: FlowTable,
    /// Each installed flow id's incarnation (0: not checked), put in its segments'
    /// summaries.
    incarnations: Vec<u8>,
    /// The last successful lookup, with the flow's incarnation: bursts are mostly one
    /// flow's segments.
    last: Option<(wire::FourTuple, FlowId, u8)>,
    /// For each output of the last burst, the index of the input it came from.
    sources: Vec<usize>,
    /// The segment being classified (parsed in place, not moved).
    seg: wire::TcpSegment,
    stats: StageStats,
}

impl Preprocess {
    /// A preprocess stage for the engine at `mac` / `ip`.
    pub fn new(arena: Arc<FrameArena>, mac: MacAddr, ip: Ipv4Addr) -> Self {
        Preprocess {
            arena,
            mac,
            ip,
            table: FlowTable::new(),
            incarnations: Vec::new(),
            last: None,
            sources: Vec::new(),
            seg: wire::TcpSegment::EMPTY,
            stats: StageStats::default(),
        }
    }

    /// Install a flow: `tuple`'s segments go to flow `id`, for its connection `incarnation`
    /// ([`FlowIdentity::incarnation`](crate::flow::FlowIdentity::incarnation); 0: not
    /// checked), which each segment's summary carries
    /// ([`SegmentSummary::incarnation`](wire::SegmentSummary::incarnation)).
    pub fn install(&mut self, tuple: wire::FourTuple, id: FlowId, incarnation: u8) {
        self.last = None;
        self.table.insert(tuple, id);
        let i = id as usize;
        if self.incarnations.len() <= i {
            self.incarnations.resize(i + 1, 0);
        }
        self.incarnations[i] = incarnation;
    }

    /// Remove a flow.
    pub fn remove(&mut self, tuple: &wire::FourTuple) {
        self.last = None;
        self.table.remove(tuple);
    }

    /// The flow of the segment just parsed and its incarnation: the last one found when
    /// its tuple matches, else the table's.
    #[inline(always)]
    fn lookup(&mut self) -> Option<(FlowId, u8)> {
        if let Some((lt, id, inc)) = &self.last {
            if same_tuple(lt, &self.seg.tuple) {
                return Some((*id, *inc));
            }
        }
        let t = self.seg.tuple;
        self.lookup_table(&t)
    }

    #[inline(never)]
    fn lookup_table(&mut self, t: &wire::FourTuple) -> Option<(FlowId, u8)> {
        let id = self.table.lookup(t)?;
        let inc = self.incarnations.get(id as usize).copied().unwrap_or(0);
        self.last = Some((*t, id, inc));
        Some((id, inc))
    }

    /// For each output of the last burst given to [`Stage::process`], the position of the
    /// input frame it came from (a runtime that numbers frames keeps their numbers with
    /// this).
    pub fn sources(&self) -> &[usize] {
        &self.sources
    }

    /// The flow table.
    pub fn table(&self) -> &FlowTable {
        &self.table
    }

    /// Count a burst that the caller then classifies frame by frame with
    /// [`classify`](Self::classify) (what [`Stage::process`] does, minus its output vector).
    pub fn begin_burst(&mut self) {
        self.stats.bursts += 1;
        self.sources.clear();
    }

    /// Classify one frame (a frame of the port, or one the control plane re-injects).
    #[inline(always)]
    pub fn classify(&mut self, frame: Frame) -> Option<PreOut> {
        self.stats.items_in += 1;
        let out = self.classify_inner(frame);
        self.stats.items_out += u64::from(out.is_some());
        out
    }

    #[inline(always)]
    fn classify_inner(&mut self, frame: Frame) -> Option<PreOut> {
        let data = self.arena.data(&frame);
        let arp = match wire::parse_frame_into(data, &mut self.seg) {
            Ok(a) => a,
            Err(reason) if wire::icmp::is_icmp(data, reason) => return self.icmp(frame),
            Err(reason) => {
                self.stats.drops.add(reason);
                self.arena.free(frame);
                return None;
            }
        };
        let dst_mac = MacAddr::from_bytes(&data[..6]);
        if dst_mac != self.mac && !dst_mac.is_broadcast() {
            self.stats.drops.add(DropReason::NotForUs);
            self.arena.free(frame);
            return None;
        }
        if arp.is_some() {
            return Some(PreOut::Punt(Punt {
                frame,
                reason: PuntReason::Arp,
            }));
        }
        let seg = &self.seg;
        if seg.tuple.local_ip != self.ip || dst_mac != self.mac {
            self.stats.drops.add(DropReason::NotForUs);
            self.arena.free(frame);
            return None;
        }
        let f = seg.summary.flags;
        // A RST (without SYN) of a flow on the data path stays on it, in the flow's stream
        // of segments (the protocol stage decides: RFC 5961 3.2); of any other, it goes to
        // the control plane. Options a data segment should not carry are ignored (RFC 9293
        // 3.1) and urgent data is delivered inline, on the data path: a peer cannot send
        // its segments through the control plane by setting URG or an unknown option.
        let rst = f & (flags::SYN | flags::RST) == flags::RST;
        if f & flags::SYN != 0 {
            return Some(PreOut::Punt(Punt {
                frame,
                reason: PuntReason::Syn,
            }));
        }
        match self.lookup() {
            Some((flow, incarnation)) => Some(PreOut::Rx(RxWork {
                flow,
                summary: summary_by_fields(&self.seg.summary, incarnation),
                frame,
            })),
            None => Some(PreOut::Punt(Punt {
                frame,
                reason: if rst {
                    PuntReason::Rst
                } else {
                    PuntReason::UnknownFlow
                },
            })),
        }
    }
}

impl Preprocess {
    /// An intact ICMP packet: punted if it is addressed to this engine (its MAC and its
    /// IP address, not a broadcast), dropped as not for us otherwise.
    #[cold]
    fn icmp(&mut self, frame: Frame) -> Option<PreOut> {
        let data = self.arena.data(&frame);
        // An intact IPv4 packet: its header is in the frame.
        let to_us = MacAddr::from_bytes(&data[..6]) == self.mac
            && data[wire::ETH_HDR + 16..wire::ETH_HDR + 20] == self.ip.octets();
        if !to_us {
            self.stats.drops.add(DropReason::NotForUs);
            self.arena.free(frame);
            return None;
        }
        Some(PreOut::Punt(Punt {
            frame,
            reason: PuntReason::Icmp,
        }))
    }
}

impl Stage for Preprocess {
    type In = Frame;
    type Out = PreOut;

    fn name(&self) -> &'static str {
        "preprocess"
    }

    /// Classify a burst; [`sources`](Preprocess::sources) then tells which input each
    /// output came from (frames dropped as malformed leave no output).
    fn process(&mut self, _now: Instant, input: &mut Vec<Frame>, output: &mut Vec<PreOut>) {
        self.begin_burst();
        for (i, frame) in input.drain(..).enumerate() {
            if let Some(out) = self.classify(frame) {
                output.push(out);
                self.sources.push(i);
            }
        }
    }

    fn stats(&self) -> &StageStats {
        &self.stats
    }
}

/// A copy of `s` with its `incarnation`, read field by field. The parser has just written
/// it a field at a time: a copy of the whole struct reads it back in wider words, which the
/// CPU cannot forward from the narrower stores still in flight and stalls on
/// (store-to-load forwarding covers only a load that one store covers).
#[inline(always)]
fn summary_by_fields(s: &wire::SegmentSummary, incarnation: u8) -> wire::SegmentSummary {
    wire::SegmentSummary {
        seq: s.seq,
        ack: s.ack,
        win: s.win,
        payload_off: s.payload_off,
        payload_len: s.payload_len,
        sack_at: s.sack_at,
        flags: s.flags,
        ce: s.ce,
        sack_len: s.sack_len,
        ts_at: s.ts_at,
        incarnation,
    }
}

/// Whether two tuples are the same, field by field in the words the parser writes them in:
/// `b` was just written, and a comparison of the whole struct (which the compiler turns
/// into wide loads) would stall on it as [`summary_by_fields`] says.
#[inline(always)]
fn same_tuple(a: &wire::FourTuple, b: &wire::FourTuple) -> bool {
    let d = (a.local_ip.to_bits() ^ b.local_ip.to_bits())
        | (a.remote_ip.to_bits() ^ b.remote_ip.to_bits())
        | u32::from(a.local_port ^ b.local_port)
        | u32::from(a.remote_port ^ b.remote_port);
    d == 0
}
