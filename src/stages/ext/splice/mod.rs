//! Connection splicing: once a proxy application has decided where a client goes, it joins
//! its connection to the client and its connection to the server inside the engine
//! ([`Splicer::splice`]). From then on segments of one are rewritten (MAC and IP addresses,
//! ports, sequence and acknowledgement numbers, SACK blocks, timestamps, window, checksums)
//! and sent on the other by a stage at [`RxFrame`], without reaching the protocol stage or
//! the application; FINs and RSTs are relayed as any segment, so closing or resetting either
//! side reaches the other. The engine forgets both connections; the splice ends a while
//! after both FINs or a RST went through.
//!
//! The hand-over is exact: the engine freezes both connections in the protocol stage, reads
//! their sequence numbers, and splices only if everything each side sent has been
//! acknowledged, the application has read everything received and neither holds data it
//! SACKed past what it received in order (otherwise it thaws them
//! and the splice fails with [`SpliceError::NotQuiet`]: forward what is left and try again).
//! Segments that arrive while a connection is frozen are dropped; their senders retransmit
//! them and the splice relays them.
//!
//! Both connections must have negotiated the same options (timestamps, SACK) and must be
//! able to carry each other's segments (each side's MSS at least what the other may send).
//!
//! ```no_run
//! use flextoe::stages::ext::splice::Splicer;
//! # fn proxy(engine: flextoe::pipeline::PipelineBuilder<flextoe::backends::mem::MemPort>,
//! #          client: flextoe::Stream, server: flextoe::Stream) {
//! let splicer = Splicer::new();
//! let engine = engine.on_rx_frame(splicer.stage()).build().unwrap();
//! // ... accept `client`, read its request, connect `server`, forward the request ...
//! let pending = splicer.splice(client, server).unwrap();
//! // Poll the engine until the splice is done (a runtime thread does this by itself).
//! # let _ = (engine, pending);
//! # }
//! ```

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::headers::FrameInfo;
use crate::buf::Frame;
use crate::host::HostShared;
use crate::host::Stream;
use crate::pipeline::hooks::{AttachCx, Hook, HookCx, RxFrame, Verdict, Verdicts};
use crate::wire::{self, flags, MacAddr};

/// Why a splice did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpliceError {
    /// A connection has data not yet acknowledged, or received data the application has not
    /// read, or holds out-of-order data it SACKed (the gap is on its way), or is closing:
    /// forward what is left and try again.
    #[error("a connection is not quiet (unacknowledged or unread data, or closing)")]
    NotQuiet,
    /// The two connections negotiated different options, or one side's segments would not
    /// fit the other's MSS.
    #[error("the connections negotiated incompatible options")]
    Incompatible,
    /// The streams are not two established connections of the same engine.
    #[error("not two established connections of one engine")]
    NotConnected,
    /// The engine did not answer (it is not being polled, or it stopped).
    #[error("the engine did not answer")]
    NoAnswer,
    /// The engine holds `max_splices` splices already (`ControlConfig::max_splices`).
    #[error("the engine's splice table is full")]
    TableFull,
    /// The streams' engine does not run this splicer's stage ([`Splicer::stage`] at
    /// `rx_frame`): nothing would relay the spliced connections' segments.
    #[error("the engine does not run this splicer's stage")]
    NoStage,
}

/// The state both directions of a splice share.
#[derive(Debug, Default)]
pub(crate) struct SpliceState {
    /// Bit 0: FIN from side 0 relayed; bit 1: FIN from side 1; bit 2: a RST at the
    /// sequence number the other side acknowledged (or one that side acknowledged
    /// later); bits 3 and 4: a RST from side 0 or 1 elsewhere in the window (it may have
    /// ended the connection: a peer that aborts with data in flight sends its RST at its
    /// `snd_nxt`), cleared when the side it reached answers with a duplicate ACK below it
    /// (its challenge ACK: it rejected it, RFC 5961 3.2).
    pub(crate) ends: AtomicU8,
    /// The engine's time (ms) of the last frame relayed.
    pub(crate) last_ms: AtomicU64,
    /// Per direction: the latched timestamp shift (bit 32 set once latched).
    ts_delta: [AtomicU64; 2],
    /// Per direction: the first timestamp sent out (translated), valid once latched.
    ts_first: [AtomicU32; 2],
    /// Frames relayed, per direction.
    pub(crate) relayed: [AtomicU64; 2],
    /// Per side: the last acknowledgement relayed to it (bit 32 set once there is one), the
    /// sequence number its RST must carry for the splice to count it. It moves only
    /// forward, and not past `sent_end`: a spoofed ACK cannot move it.
    acked: [AtomicU64; 2],
    /// Per side: where the sequence space it sent (as relayed) ends.
    sent_end: [AtomicU32; 2],
    /// Per side: the window it may send into, in bytes, as the other side last offered it
    /// (through the splice); the FINs and RSTs it sends count only within it.
    window: [AtomicU32; 2],
    /// Per side: the number of its last RST in the window but not exact.
    rst_at: [AtomicU32; 2],
}

/// Move `v` forward to `to` (in sequence space) if it is ahead.
fn forward(v: &AtomicU32, to: u32) {
    let _ = v.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
        wire::seq::gt(to, cur).then_some(to)
    });
}

impl SpliceState {
    /// The state of a new splice whose sides' next sequence numbers are `next` (what the
    /// engine had acknowledged of each when it froze them), each side taken to send into
    /// `window` bytes until the other offers it a window through the splice (the window the
    /// engine last offered it, [`Frozen::window`](crate::stages::notify::Frozen::window)).
    pub(crate) fn new(next: [u32; 2], window: [u32; 2]) -> SpliceState {
        let s = SpliceState::default();
        for k in 0..2 {
            s.acked[k].store((1 << 32) | u64::from(next[k]), Ordering::Relaxed);
            s.sent_end[k].store(next[k], Ordering::Relaxed);
            s.window[k].store(window[k], Ordering::Relaxed);
        }
        s
    }

    /// Whether both FINs or an exact RST went through.
    pub(crate) fn ended(&self) -> bool {
        let e = self.ends.load(Ordering::Relaxed);
        e & 4 != 0 || e & 3 == 3
    }

    /// Whether a RST in the window but not exact went through and its receiver has said
    /// nothing since (the splice ends once it is quiet a while after it, as Linux's
    /// conntrack closes a connection 10 s after such a RST).
    pub(crate) fn rst_seen(&self) -> bool {
        self.ends.load(Ordering::Relaxed) & (8 | 16) != 0
    }

    /// Fix the timestamp shift of direction `dir`: the peer's value `val` becomes `ours` on
    /// the outgoing connection. The first shift fixed stays.
    pub(crate) fn latch_ts(&self, dir: usize, ours: u32, val: u32) -> u64 {
        let want = (1u64 << 32) | u64::from(ours.wrapping_sub(val));
        // The first value sent is published before the shift, so that a reader that sees
        // the shift sees it too (a concurrent latch on another replica can only move it by
        // the few milliseconds between them).
        self.ts_first[dir].store(ours, Ordering::Release);
        match self.ts_delta[dir].compare_exchange(0, want, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => want,
            Err(cur) => cur,
        }
    }

    /// A frame from side `dir` with flags `fl`, sequence space `[seq, end)` (SYN and FIN
    /// counted), acknowledging `ack` (in the other side's numbers, when `fl` has ACK) and
    /// offering the other side `window` bytes, was relayed: move what the splice knows.
    /// Every value only moves forward, by compare-and-swap: on the threaded runtime each
    /// preprocess replica relays a share of a direction's frames.
    fn relayed(&self, dir: usize, fl: u8, seq: u32, end: u32, ack: u32, window: u32) {
        let other = 1 - dir;
        if fl & flags::RST == 0 {
            // Only what falls in the window moves the end of what the side sent.
            let acked = self.acked[dir].load(Ordering::Relaxed) as u32;
            let limit = acked
                .wrapping_add(self.window[dir].load(Ordering::Relaxed))
                .wrapping_add(1);
            if !wire::seq::gt(end, limit) {
                forward(&self.sent_end[dir], end);
                // Its own RST in the window, not exact, is belied by data past it: it
                // still sends.
                let mark = 8u8 << dir;
                if self.ends.load(Ordering::Acquire) & mark != 0
                    && wire::seq::gt(end, self.rst_at[dir].load(Ordering::Relaxed))
                {
                    self.ends.fetch_and(!mark, Ordering::Relaxed);
                }
            }
        }
        if fl & flags::RST == 0 && fl & flags::ACK != 0 {
            // An acknowledgement within what the other side has sent (RFC 9293's window
            // update check, SND.UNA <= SEG.ACK <= SND.NXT): a blind spoofer's misses, so it
            // neither moves the number the other side's RST must carry nor the window.
            let a = self.acked[other].load(Ordering::Relaxed);
            let sent = self.sent_end[other].load(Ordering::Relaxed);
            let set = a >> 32 != 0;
            if !set || (!wire::seq::lt(ack, a as u32) && !wire::seq::gt(ack, sent)) {
                let moved = !set || wire::seq::gt(ack, a as u32);
                if moved {
                    let _ = self.acked[other].fetch_update(
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                        |cur| {
                            (cur >> 32 == 0 || wire::seq::gt(ack, cur as u32))
                                .then_some((1 << 32) | u64::from(ack))
                        },
                    );
                }
                self.window[other].store(window, Ordering::Relaxed);
                // A RST of the other side in the window (not exact) reached this one: an
                // acknowledgement of its number, with nothing sent past it, says this side
                // took it (it was exact by then: the data before it had come); a duplicate
                // one below it is its challenge ACK (it rejected the RST, RFC 5961 3.2), and
                // one past it says it lives on.
                let mark = 8u8 << other;
                if self.ends.load(Ordering::Acquire) & mark != 0 {
                    let rst = self.rst_at[other].load(Ordering::Relaxed);
                    if ack == rst && !wire::seq::gt(sent, rst) {
                        self.ends.fetch_or(4, Ordering::Relaxed);
                    } else if wire::seq::gt(ack, rst) || (!moved && wire::seq::lt(ack, rst)) {
                        self.ends.fetch_and(!mark, Ordering::Relaxed);
                    }
                }
            }
        }
        if fl & (flags::RST | flags::FIN) != 0 {
            self.note_end(dir, fl, seq);
        }
    }

    /// A FIN or RST (`fl`) numbered `seq` relayed from side `dir`: note it if it can end
    /// the splice. A RST ends it with the exact sequence number the other side
    /// acknowledged (RFC 5961 3.2) and marks it elsewhere in the window after it; a FIN
    /// counts within the window of that number, ahead or behind. A spoofed one outside
    /// counts for nothing (the peers check both again themselves): a blind spoofer's
    /// chance is the window over 2^32, where it was a half (any FIN within 2^30).
    pub(crate) fn note_end(&self, dir: usize, fl: u8, seq: u32) {
        let acked = self.acked[dir].load(Ordering::Relaxed);
        if acked >> 32 == 0 {
            return;
        }
        let ahead = seq.wrapping_sub(acked as u32);
        let window = self.window[dir].load(Ordering::Relaxed).max(1);
        if fl & flags::RST != 0 {
            let bit = if ahead == 0 {
                4
            } else if ahead <= window {
                self.rst_at[dir].store(seq, Ordering::Relaxed);
                8 << dir
            } else {
                0
            };
            // Release: a replica that sees the mark sees its number.
            self.ends.fetch_or(bit, Ordering::Release);
        } else if fl & flags::FIN != 0 && (ahead as i32).unsigned_abs() <= window {
            // Behind the number too: a FIN segment sent again starts where its data did.
            self.ends.fetch_or(1 << dir, Ordering::Relaxed);
        }
    }
}

/// One direction of a splice: what frames received on one connection become on the other.
#[derive(Debug)]
pub(crate) struct SpliceDir {
    /// Direction index (0: from side 0 to side 1).
    pub(crate) dir: usize,
    pub(crate) src_mac: MacAddr,
    pub(crate) dst_mac: MacAddr,
    pub(crate) src_ip: Ipv4Addr,
    pub(crate) dst_ip: Ipv4Addr,
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    /// Added to the sequence number.
    pub(crate) seq_delta: u32,
    /// Added to the acknowledgement number (and to SACK blocks).
    pub(crate) ack_delta: u32,
    /// Window shift of the sender (applied to its window field) and ours on the other side
    /// (the field sent out is shifted by it).
    pub(crate) in_shift: u8,
    pub(crate) out_shift: u8,
    /// Our timestamp clock's offset on the outgoing connection (TSval = ms + offset).
    pub(crate) out_ts_offset: u32,
    pub(crate) state: Arc<SpliceState>,
}

type Key = (Ipv4Addr, u16, Ipv4Addr, u16);

/// The splices in force, shared by the stages (which read a snapshot, refreshed when the
/// generation moves) and the control plane (which adds and removes them).
#[derive(Clone, Default)]
pub(crate) struct SpliceTable {
    inner: Arc<TableInner>,
}

#[derive(Default)]
struct TableInner {
    map: RwLock<Arc<HashMap<Key, Arc<SpliceDir>>>>,
    generation: AtomicU64,
    /// The engines whose pipelines run a stage of this table ([`Hook::attach`]).
    engines: Mutex<Vec<Weak<HostShared>>>,
}

impl SpliceTable {
    /// An engine runs a stage of this table.
    fn attach(&self, engine: Weak<HostShared>) {
        let mut e = self.inner.engines.lock().unwrap_or_else(|p| p.into_inner());
        e.retain(|w| w.strong_count() > 0);
        e.push(engine);
    }

    /// Whether `engine` runs a stage of this table.
    fn serves(&self, engine: &Arc<HostShared>) -> bool {
        let e = self.inner.engines.lock().unwrap_or_else(|p| p.into_inner());
        e.iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(engine)))
    }

    /// Relay frames received from `from` (the peer's address and port, ours) by `dir`.
    pub(crate) fn insert(&self, from: Key, dir: SpliceDir) {
        self.update(|m| {
            m.insert(from, Arc::new(dir));
        });
    }

    /// Stop relaying frames received from these keys.
    pub(crate) fn remove(&self, keys: &[Key]) {
        self.update(|m| {
            for k in keys {
                m.remove(k);
            }
        });
    }

    fn update(&self, f: impl FnOnce(&mut HashMap<Key, Arc<SpliceDir>>)) {
        let mut g = self.inner.map.write().unwrap_or_else(|p| p.into_inner());
        let mut m = (**g).clone();
        f(&mut m);
        *g = Arc::new(m);
        self.inner.generation.fetch_add(1, Ordering::Release);
    }

    fn snapshot(&self) -> Arc<HashMap<Key, Arc<SpliceDir>>> {
        self.inner
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn len(&self) -> usize {
        self.snapshot().len()
    }
}

/// What the control plane needs to splice two connections.
pub(crate) struct SpliceRequest {
    /// Per side: the connection, what the application wrote and what it read.
    pub(crate) sides: [(Arc<crate::host::ConnShared>, u64, u64); 2],
    pub(crate) table: SpliceTable,
    pub(crate) reply: crossbeam_channel::Sender<Result<(), SpliceError>>,
    /// Who decided first: the engine, to splice ([`take`](Self::take)), or the application,
    /// to stop waiting (`PendingSplice::wait`'s timeout). One of them wins.
    pub(crate) claim: Arc<AtomicU8>,
}

/// [`SpliceRequest::claim`]: nobody has decided yet.
const UNDECIDED: u8 = 0;
/// The engine splices.
const TAKEN: u8 = 1;
/// The application gave up waiting: the engine leaves the connections as they were.
const GIVEN_UP: u8 = 2;

impl SpliceRequest {
    /// The engine's side of the claim: `true` where it may splice, `false` where the
    /// application gave up waiting first.
    pub(crate) fn take(&self) -> bool {
        self.claim
            .compare_exchange(UNDECIDED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// Splices connections; its stage relays the spliced segments. Clones share everything.
#[derive(Clone, Default)]
pub struct Splicer {
    table: SpliceTable,
    counters: Arc<SpliceCounters>,
}

/// Counters of a [`Splicer`]'s stages.
#[derive(Debug, Default)]
pub struct SpliceCounters {
    relayed: AtomicU64,
    relayed_bytes: AtomicU64,
    bad: AtomicU64,
}

impl SpliceCounters {
    /// Frames relayed.
    pub fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::Relaxed)
    }

    /// Payload bytes relayed.
    pub fn relayed_bytes(&self) -> u64 {
        self.relayed_bytes.load(Ordering::Relaxed)
    }

    /// Frames of spliced connections dropped as malformed (headers that cannot be rewritten,
    /// or a wrong checksum).
    pub fn malformed(&self) -> u64 {
        self.bad.load(Ordering::Relaxed)
    }
}

impl Splicer {
    /// A splicer with no splice.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stage that relays spliced segments, for [`RxFrame`] (after any VLAN strip: the
    /// relayed frames go through the `tx_frame` stages, where a VLAN push tags them).
    pub fn stage(&self) -> SpliceStage {
        SpliceStage {
            table: self.table.clone(),
            counters: self.counters.clone(),
            snapshot: Arc::new(HashMap::new()),
            generation: u64::MAX,
        }
    }

    /// The stages' counters.
    pub fn counters(&self) -> Arc<SpliceCounters> {
        self.counters.clone()
    }

    /// Splices in force (two entries per splice, one per direction).
    pub fn active(&self) -> usize {
        self.table.len() / 2
    }

    /// Ask the engine of `a` and `b` (two established connections of one engine) to splice
    /// them. The answer comes while the engine runs ([`PendingSplice`]); on refusal the
    /// streams come back.
    // A refusal hands the caller's two streams back by value: a large error, on a cold path.
    #[allow(clippy::result_large_err)]
    pub fn splice(
        &self,
        a: Stream,
        b: Stream,
    ) -> Result<PendingSplice, (SpliceError, Stream, Stream)> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let claim = Arc::new(AtomicU8::new(UNDECIDED));
        let req = SpliceRequest {
            sides: [a.splice_side(), b.splice_side()],
            table: self.table.clone(),
            reply: tx,
            claim: claim.clone(),
        };
        if !a.same_engine(&b) {
            return Err((SpliceError::NotConnected, a, b));
        }
        if !self.table.serves(a.engine()) {
            return Err((SpliceError::NoStage, a, b));
        }
        if !a.request_splice(req) {
            return Err((SpliceError::NotConnected, a, b));
        }
        Ok(PendingSplice {
            streams: Box::new((a, b)),
            reply: rx,
            claim,
        })
    }
}

/// A splice the engine is carrying out.
pub struct PendingSplice {
    streams: Box<(Stream, Stream)>,
    reply: Receiver<Result<(), SpliceError>>,
    claim: Arc<AtomicU8>,
}

/// What a finished splice request gives: `Ok` (the streams went into the splice) or the
/// error with the streams back.
pub type SpliceResult = Result<(), (SpliceError, Stream, Stream)>;

// As `Splicer::splice`: a refusal gives the two streams back.
#[allow(clippy::result_large_err)]
impl PendingSplice {
    fn finish(self, r: Result<(), SpliceError>) -> SpliceResult {
        let (a, b) = *self.streams;
        match r {
            Ok(()) => {
                a.detach();
                b.detach();
                Ok(())
            }
            Err(e) => Err((e, a, b)),
        }
    }

    /// The answer if it came (`Ok`), or the pending splice back (`Err`) to ask again later.
    pub fn try_finish(self) -> Result<SpliceResult, PendingSplice> {
        let r = match self.reply.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => return Err(self),
            Err(TryRecvError::Disconnected) => Err(SpliceError::NoAnswer),
        };
        Ok(self.finish(r))
    }

    /// Wait for the answer (the engine must be running on another thread). After a
    /// timeout the streams come back with [`SpliceError::NoAnswer`], and the engine, when it
    /// gets to the request, leaves the connections as they were.
    pub fn wait(self, timeout: Duration) -> SpliceResult {
        let r = match self.reply.recv_timeout(timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Disconnected) => Err(SpliceError::NoAnswer),
            // Give up, unless the engine has just taken the request: then it splices, and
            // its answer is on its way.
            Err(RecvTimeoutError::Timeout) => match self.claim.compare_exchange(
                UNDECIDED,
                GIVEN_UP,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => Err(SpliceError::NoAnswer),
                Err(_) => self.reply.recv().unwrap_or(Err(SpliceError::NoAnswer)),
            },
        };
        self.finish(r)
    }
}

/// The [`Splicer`]'s stage: relays frames of spliced connections ([`Verdict::Tx`]), passes
/// the rest. Relayed frames leave through the `tx_frame` stages as every frame sent: on a
/// VLAN put the splice stage after the strip, and the push tags the relayed frames. (A frame
/// that still has an 802.1Q tag when it reaches the stage keeps it.) Drop reason: `malformed` (a frame of a spliced connection whose headers could
/// not be rewritten, or whose IPv4 or TCP checksum is wrong: the stage runs before
/// preprocess, and such a frame must not move the splice's state).
pub struct SpliceStage {
    table: SpliceTable,
    counters: Arc<SpliceCounters>,
    snapshot: Arc<HashMap<Key, Arc<SpliceDir>>>,
    generation: u64,
}

impl Clone for SpliceStage {
    fn clone(&self) -> Self {
        Splicer {
            table: self.table.clone(),
            counters: self.counters.clone(),
        }
        .stage()
    }
}

/// Rewrite `d` (an Ethernet/IPv4/TCP frame received on the splice's incoming connection,
/// untagged or with one 802.1Q tag, which it keeps) for the outgoing one. `None` (and
/// nothing changed) if its headers are malformed or a checksum is wrong.
fn rewrite(d: &mut [u8], s: &SpliceDir, now_ms: u64) -> Option<(usize, u8, u32)> {
    let tag = if d.len() >= 18 && d[12..14] == [0x81, 0x00] {
        4
    } else {
        0
    };
    let ip = 14 + tag;
    if d.len() < ip + 40 || d[ip - 2..ip] != [0x08, 0x00] {
        return None;
    }
    let ihl = usize::from(d[ip] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([d[ip + 2], d[ip + 3]]));
    let t = ip + ihl;
    if ihl < 20 || d.len() < t + 20 || total < ihl + 20 || ip + total > d.len() {
        return None;
    }
    let doff = usize::from(d[t + 12] >> 4) * 4;
    if doff < 20 || ihl + doff > total {
        return None;
    }
    let payload = total - ihl - doff;
    let fl = d[t + 13];
    // What preprocess would drop goes no further: a fragment (the receiver may never
    // reassemble it, yet its FIN would count) and SYN with FIN or RST.
    let fragment = u16::from_be_bytes([d[ip + 6], d[ip + 7]]) & 0x3fff != 0;
    if fragment || (fl & flags::SYN != 0 && fl & (flags::FIN | flags::RST) != 0) {
        return None;
    }
    // Everything is checked before anything changes, in the frame or in the splice's shared
    // state (the ACK the other side answers, the timestamp shift, the ends): the stage runs
    // before preprocess, so a frame with a bad checksum or malformed options must not move
    // them. The checksums are then updated for what changes (RFC 1624).
    let src = Ipv4Addr::new(d[ip + 12], d[ip + 13], d[ip + 14], d[ip + 15]);
    let dst = Ipv4Addr::new(d[ip + 16], d[ip + 17], d[ip + 18], d[ip + 19]);
    if !wire::checksum::ipv4_header_ok(&d[ip..t])
        || !wire::checksum::tcp_ok(src, dst, &d[t..ip + total])
        || !options_ok(&d[t + 20..t + doff])
    {
        return None;
    }
    let mut old_hdr = [0u8; 60];
    old_hdr[..doff].copy_from_slice(&d[t..t + doff]);
    old_hdr[16..18].fill(0);
    let old_ips = sum16(&d[ip + 12..ip + 20]);
    let old_tcp = old_ips + sum16(&old_hdr[..doff]);
    d[0..6].copy_from_slice(&s.dst_mac.0);
    d[6..12].copy_from_slice(&s.src_mac.0);
    d[ip + 12..ip + 16].copy_from_slice(&s.src_ip.octets());
    d[ip + 16..ip + 20].copy_from_slice(&s.dst_ip.octets());
    d[t..t + 2].copy_from_slice(&s.sport.to_be_bytes());
    d[t + 2..t + 4].copy_from_slice(&s.dport.to_be_bytes());
    let be32 = |d: &[u8], i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
    let in_seq = be32(d, t + 4);
    let seq = in_seq.wrapping_add(s.seq_delta);
    d[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
    let mut ack = 0;
    if fl & flags::ACK != 0 {
        ack = be32(d, t + 8).wrapping_add(s.ack_delta);
        d[t + 8..t + 12].copy_from_slice(&ack.to_be_bytes());
    }
    let win = u32::from(u16::from_be_bytes([d[t + 14], d[t + 15]]));
    let bytes = u64::from(win) << s.in_shift;
    let len = payload as u32 + u32::from(fl & flags::SYN != 0) + u32::from(fl & flags::FIN != 0);
    // What the other side's next segment should carry, and what it may send.
    s.state.relayed(
        s.dir,
        fl,
        in_seq,
        in_seq.wrapping_add(len),
        ack,
        u32::try_from(bytes).unwrap_or(u32::MAX),
    );
    let out = (bytes >> s.out_shift).min(0xffff) as u16;
    d[t + 14..t + 16].copy_from_slice(&out.to_be_bytes());
    // Options: SACK blocks move with the acknowledgement numbers, timestamps with the clocks.
    let mut o = t + 20;
    let end = t + doff;
    while o < end {
        match d[o] {
            0 => break,
            1 => o += 1,
            kind => {
                let len = usize::from(*d.get(o + 1)?);
                if len < 2 || o + len > end {
                    return None;
                }
                if kind == 5 {
                    if (len - 2) % 8 != 0 {
                        return None;
                    }
                    let mut b = o + 2;
                    while b < o + len {
                        let v = be32(d, b).wrapping_add(s.ack_delta);
                        d[b..b + 4].copy_from_slice(&v.to_be_bytes());
                        b += 4;
                    }
                } else if kind == 8 {
                    if len != 10 {
                        return None;
                    }
                    let (val, ecr) = (be32(d, o + 2), be32(d, o + 6));
                    let mut delta = s.state.ts_delta[s.dir].load(Ordering::Acquire);
                    if delta >> 32 == 0 {
                        // No shift fixed at the install (a splice made without the peer's
                        // last value): from here on the peer's clock maps onto ours on the
                        // outgoing connection, from now.
                        let ours = (now_ms as u32).wrapping_add(s.out_ts_offset);
                        delta = s.state.latch_ts(s.dir, ours, val);
                    }
                    let out_val = val.wrapping_add(delta as u32);
                    // The echo maps back through the other direction's shift, once the value
                    // echoed is one that direction sent; before that it echoes our own
                    // clock, which means nothing to the other peer: 0 (no RTT sample).
                    let other = 1 - s.dir;
                    let od = s.state.ts_delta[other].load(Ordering::Acquire);
                    let first = s.state.ts_first[other].load(Ordering::Acquire);
                    let out_ecr = if od >> 32 != 0 && !wire::seq::lt(ecr, first) {
                        ecr.wrapping_sub(od as u32)
                    } else {
                        0
                    };
                    d[o + 2..o + 6].copy_from_slice(&out_val.to_be_bytes());
                    d[o + 6..o + 10].copy_from_slice(&out_ecr.to_be_bytes());
                }
                o += len;
            }
        }
    }
    let new_ips = sum16(&d[ip + 12..ip + 20]);
    let mut new_hdr = [0u8; 60];
    new_hdr[..doff].copy_from_slice(&d[t..t + doff]);
    new_hdr[16..18].fill(0);
    let new_tcp = new_ips + sum16(&new_hdr[..doff]);
    let ip_csum = u16::from_be_bytes([d[ip + 10], d[ip + 11]]);
    d[ip + 10..ip + 12].copy_from_slice(&adjust(ip_csum, old_ips, new_ips).to_be_bytes());
    let tcp_csum = u16::from_be_bytes([d[t + 16], d[t + 17]]);
    d[t + 16..t + 18].copy_from_slice(&adjust(tcp_csum, old_tcp, new_tcp).to_be_bytes());
    Some((payload, fl, in_seq))
}

/// Whether TCP options are well formed as [`rewrite`] reads them: every option's length
/// within the header, SACK blocks of 8 bytes, timestamps of 10.
fn options_ok(opts: &[u8]) -> bool {
    let mut o = 0;
    while o < opts.len() {
        match opts[o] {
            0 => break,
            1 => o += 1,
            kind => {
                let Some(&len) = opts.get(o + 1) else {
                    return false;
                };
                let len = usize::from(len);
                if len < 2 || o + len > opts.len() {
                    return false;
                }
                if (kind == 5 && (len - 2) % 8 != 0) || (kind == 8 && len != 10) {
                    return false;
                }
                o += len;
            }
        }
    }
    true
}

/// One's complement sum of big-endian 16-bit words (an odd last byte padded with zero).
fn sum16(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut x: u32) -> u16 {
    while x > 0xffff {
        x = (x & 0xffff) + (x >> 16);
    }
    x as u16
}

/// RFC 1624 (eqn. 3): the checksum `csum` of data whose words summed to `old` now summing to
/// `new`: `HC' = ~(~HC + ~m + m')`.
fn adjust(csum: u16, old: u32, new: u32) -> u16 {
    !fold(u32::from(!csum) + u32::from(!fold(old)) + u32::from(fold(new)))
}

impl Hook<RxFrame> for SpliceStage {
    fn name(&self) -> &'static str {
        "splice"
    }

    fn attach(&mut self, engine: &AttachCx) {
        self.table.attach(engine.host.clone());
    }

    fn drop_reasons(&self) -> &'static [&'static str] {
        &["malformed"]
    }

    fn process(&mut self, cx: &HookCx<'_>, frames: &mut [Frame], verdicts: &mut Verdicts) {
        let g = self.table.inner.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.snapshot = self.table.snapshot();
            self.generation = g;
        }
        if self.snapshot.is_empty() {
            return;
        }
        let now_ms = cx.now.millis();
        let (mut n, mut bytes, mut bad) = (0u64, 0u64, 0u64);
        for (i, f) in frames.iter_mut().enumerate() {
            let Some(h) = FrameInfo::peek(cx.arena.data(f)) else {
                continue;
            };
            if !h.is_tcp() {
                continue;
            }
            let Some(dir) = self.snapshot.get(&(h.src, h.sport, h.dst, h.dport)) else {
                continue;
            };
            match rewrite(cx.arena.data_mut(f), dir, now_ms) {
                Some((payload, _, _)) => {
                    let st = &dir.state;
                    st.last_ms.store(now_ms, Ordering::Relaxed);
                    st.relayed[dir.dir].fetch_add(1, Ordering::Relaxed);
                    verdicts.set(i, Verdict::Tx);
                    n += 1;
                    bytes += payload as u64;
                }
                None => {
                    verdicts.set(i, Verdict::Drop(0));
                    bad += 1;
                }
            }
        }
        let c = &self.counters;
        c.relayed.fetch_add(n, Ordering::Relaxed);
        c.relayed_bytes.fetch_add(bytes, Ordering::Relaxed);
        if bad > 0 {
            c.bad.fetch_add(bad, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests;
