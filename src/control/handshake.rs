//! Handshakes: active and passive opens, SYN and SYN-ACK (with their retransmissions), the
//! negotiation of MSS, window scaling and timestamps, and the installation of a connection
//! once its handshake completes.

use super::*;
use crate::control::congestion::Algorithm;

pub(super) struct Listening {
    pub(super) backlog: usize,
    pub(super) accept_tx: Sender<Stream>,
    pub(super) pending: usize,
    /// When the listener last answered a SYN with a cookie: cookies are checked only for
    /// as long as one it sent can be valid ([`Control::cookies_recent`]).
    pub(super) cookie_sent: Option<Instant>,
    pub(super) congestion: crate::control::congestion::Algorithm,
    /// Where [`Listener::register`](crate::host::Listener::register) asked for events.
    pub(super) ctx: Arc<std::sync::OnceLock<(crate::host::Context, u64)>>,
}

pub(super) struct Embryo {
    pub(super) state: TcpConnState,
    pub(super) iss: u32,
    pub(super) irs: u32,
    pub(super) remote_mac: MacAddr,
    pub(super) peer_mss: u16,
    pub(super) peer_wscale: Option<u8>,
    pub(super) peer_ts: Option<u32>,
    pub(super) peer_sack: bool,
    /// ECN: asked for (active open) or agreed (passive open, or once the SYN-ACK agreed).
    pub(super) ecn: bool,
    pub(super) timestamps: bool,
    pub(super) conn: Arc<ConnShared>,
    pub(super) rings: Option<FlowRings>,
    pub(super) active: bool,
    /// Rebuilt from a SYN cookie: it never counted as pending on its listener.
    pub(super) cookie: bool,
    pub(super) retries: u32,
    pub(super) next_retx: Instant,
    /// When the handshake last answered a segment outside it (a repeated SYN with the
    /// SYN-ACK, an empty segment outside the window with an ACK): at most one such answer
    /// every [`OOW_ANSWER_GAP`], as Linux's `tcp_oow_rate_limited`. A peer (or anyone who
    /// knows the tuple) repeating its SYN otherwise had a SYN-ACK for each.
    pub(super) last_oow: Option<Instant>,
}

/// The least time between two answers of one connection to segments outside it: a
/// handshake's (a repeated SYN, an empty segment outside the window), and a synchronized
/// connection's (challenge ACKs, ACKs of unacceptable segments). Linux's
/// `tcp_invalid_ratelimit`, 500 ms by default.
pub const OOW_ANSWER_GAP: Duration = Duration::from_millis(500);

pub(super) struct PendingConnect {
    pub(super) tuple: FourTuple,
    pub(super) conn: Arc<ConnShared>,
    pub(super) rings: FlowRings,
}

/// Smallest MSS a peer may announce (as Linux clamps it): anything below is raised to this.
pub const MIN_PEER_MSS: u16 = 88;
/// What a peer that announces no MSS gets (RFC 9293 3.7.1).
const DEFAULT_PEER_MSS: u16 = 536;

/// The peer's MSS option, clamped: no option means 536, a tiny one means [`MIN_PEER_MSS`].
pub(super) fn peer_mss(announced: Option<u16>) -> u16 {
    announced.unwrap_or(DEFAULT_PEER_MSS).max(MIN_PEER_MSS)
}

impl Embryo {
    /// Whether an answer to a segment outside the handshake may go now (and if so, it is
    /// counted as gone).
    fn may_answer_oow(&mut self, now: Instant) -> bool {
        if self
            .last_oow
            .is_some_and(|at| now.saturating_since(at) < OOW_ANSWER_GAP)
        {
            return false;
        }
        self.last_oow = Some(now);
        true
    }
}

impl Control {
    /// Connections that hold or will need a flow: installed, in their handshakes, or
    /// waiting for the peer's MAC address.
    pub(super) fn flows_committed(&self) -> usize {
        let waiting: usize = self.arp_wait.values().map(|w| w.conns.len()).sum();
        self.conns.len().saturating_sub(self.free_ids.len()) + self.embryos.len() + waiting
    }

    pub(super) fn start_connect(
        &mut self,
        now: Instant,
        pc: PendingConnect,
        mac: MacAddr,
        out: &mut ControlOutput,
    ) {
        let iss = self.isn(&pc.tuple, now);
        let e = Embryo {
            state: TcpConnState::SynSent,
            iss,
            irs: 0,
            remote_mac: mac,
            peer_mss: 536,
            peer_wscale: None,
            peer_ts: None,
            peer_sack: false,
            ecn: self.cfg.ecn == Ecn::Request,
            timestamps: self.cfg.timestamps,
            conn: pc.conn,
            rings: Some(pc.rings),
            active: true,
            cookie: false,
            retries: 0,
            next_retx: now + self.cfg.rto_initial,
            last_oow: None,
        };
        self.send_syn(now, &pc.tuple, &e, out);
        self.embryos.insert(pc.tuple, e);
    }

    pub(super) fn syn_repr(&self, now: Instant, t: &FourTuple, e: &Embryo) -> TcpRepr<'static> {
        let syn_ack = e.state == TcpConnState::SynReceived;
        let ws_ok = self.cfg.window_scaling && (!syn_ack || e.peer_wscale.is_some());
        let ts = if syn_ack {
            e.peer_ts
                .filter(|_| e.timestamps)
                .map(|v| TcpTimestampRepr::new(self.ts_val(t, now), v))
        } else if e.timestamps {
            Some(TcpTimestampRepr::new(self.ts_val(t, now), 0))
        } else {
            None
        };
        TcpRepr {
            src_port: t.local_port,
            dst_port: t.remote_port,
            control: TcpControl::Syn,
            seq_number: TcpSeqNumber(e.iss as i32),
            ack_number: syn_ack.then_some(TcpSeqNumber(e.irs.wrapping_add(1) as i32)),
            window_len: self.host.rx_buf.min(65535) as u16,
            window_scale: ws_ok.then_some(self.our_wscale()),
            max_seg_size: Some(self.our_mss()),
            sack_permitted: self.cfg.sack && (!syn_ack || e.peer_sack),
            sack_ranges: [None; 3],
            timestamp: ts,
            payload: &[],
        }
    }

    pub(super) fn send_syn(
        &mut self,
        now: Instant,
        t: &FourTuple,
        e: &Embryo,
        out: &mut ControlOutput,
    ) {
        let repr = self.syn_repr(now, t, e);
        let ep = self.endpoints(t, e.remote_mac);
        // ECN setup: ECE and CWR on the SYN, ECE on the SYN-ACK.
        let extra = match (e.ecn, e.state) {
            (false, _) => 0,
            (true, TcpConnState::SynReceived) => flags::ECE,
            (true, _) => flags::ECE | flags::CWR,
        };
        self.send_tcp_flags(out, ep, repr, extra);
    }

    /// An ACK of the peer's SYN from a handshake in SYN-RECEIVED (sequence number our SYN's
    /// end); where `limited` (the segment it answers carries no data), at most one every
    /// [`OOW_ANSWER_GAP`], as Linux's `tcp_oow_rate_limited`.
    fn answer_out_of_window(
        &mut self,
        now: Instant,
        t: &FourTuple,
        limited: bool,
        out: &mut ControlOutput,
    ) {
        let Some(e) = self.embryos.get_mut(t) else {
            return;
        };
        if limited && !e.may_answer_oow(now) {
            self.stats.drops.add(DropReason::RateLimited);
            return;
        }
        let scaled = e.peer_wscale.is_some();
        let (iss, irs, mac, echo) = (
            e.iss,
            e.irs,
            e.remote_mac,
            e.peer_ts.filter(|_| e.timestamps),
        );
        // The window as the connection will give it: scaled once both sides agreed.
        let shift = if self.cfg.window_scaling && scaled {
            self.our_wscale()
        } else {
            0
        };
        let repr = TcpRepr {
            src_port: t.local_port,
            dst_port: t.remote_port,
            control: TcpControl::None,
            seq_number: TcpSeqNumber(iss.wrapping_add(1) as i32),
            ack_number: Some(TcpSeqNumber(irs.wrapping_add(1) as i32)),
            window_len: (self.host.rx_buf >> shift).min(65535) as u16,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: echo.map(|v| TcpTimestampRepr::new(self.ts_val(t, now), v)),
            payload: &[],
        };
        let ep = self.endpoints(t, mac);
        self.send_tcp(out, ep, repr);
    }

    /// The application side of a passive open, with the listener's socket options.
    pub(super) fn listener_conn(
        &self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Arc<ConnShared> {
        let conn = ConnShared::new(local, remote);
        if let Some(l) = self.listeners.get(&local.port()) {
            conn.set_congestion(l.congestion);
        }
        conn
    }

    pub(super) fn passive_open(&mut self, now: Instant, seg: TcpSegment, out: &mut ControlOutput) {
        let Some(l) = self.listeners.get_mut(&seg.tuple.local_port) else {
            return;
        };
        if l.accept_tx.len() >= l.backlog {
            // Connections wait for the application: take no more (as Linux).
            self.stats.drops.add(DropReason::BacklogFull);
            return;
        }
        // Every connection in the table or in its handshake will need a flow: refuse the
        // SYN now rather than complete a handshake that cannot be installed.
        if self.flows_committed() >= self.cfg.max_flows {
            self.stats.drops.add(DropReason::FlowTableFull);
            self.reply_rst(now, &seg, out);
            return;
        }
        let half_open = self.embryos.values().filter(|e| !e.active).count();
        let Some(l) = self.listeners.get_mut(&seg.tuple.local_port) else {
            return;
        };
        if l.pending >= l.backlog || half_open >= self.cfg.max_half_open {
            // The half-open queue is full (a SYN flood, or a burst): answer with a cookie
            // and keep nothing, or drop when cookies are off.
            if self.cfg.syn_cookies {
                self.send_cookie(now, &seg, out);
            } else {
                self.stats.drops.add(DropReason::BacklogFull);
            }
            return;
        }
        l.pending += 1;
        // The handshake answers the SYN's source MAC (kept in the embryo); the neighbour
        // cache does not learn from SYNs, which anyone can send (poisoning, unbounded growth).
        let iss = self.isn(&seg.tuple, now);
        let local = SocketAddrV4::new(seg.tuple.local_ip, seg.tuple.local_port);
        let remote = SocketAddrV4::new(seg.tuple.remote_ip, seg.tuple.remote_port);
        // No rings until the handshake completes: a SYN costs an embryo, not 512 KiB.
        let e = Embryo {
            state: TcpConnState::SynReceived,
            iss,
            irs: seg.summary.seq,
            remote_mac: seg.src_mac,
            peer_mss: peer_mss(seg.options.mss),
            peer_wscale: seg.options.window_scale,
            peer_ts: seg.options.timestamp.map(|t| t.0),
            peer_sack: seg.options.sack_permitted,
            ecn: self.cfg.ecn != Ecn::Off && seg.summary.has(flags::ECE | flags::CWR),
            timestamps: self.cfg.timestamps && seg.options.timestamp.is_some(),
            conn: self.listener_conn(local, remote),
            rings: None,
            active: false,
            cookie: false,
            retries: 0,
            next_retx: now + self.cfg.rto_initial,
            last_oow: None,
        };
        self.send_syn(now, &seg.tuple, &e, out);
        self.embryos.insert(seg.tuple, e);
    }

    pub(super) fn punt_for_embryo(
        &mut self,
        now: Instant,
        seg: TcpSegment,
        frame: Frame,
        out: &mut ControlOutput,
    ) {
        let s = seg.summary;
        let t = seg.tuple;
        let Some(e) = self.embryos.get_mut(&t) else {
            self.arena.free(frame);
            return;
        };
        match e.state {
            TcpConnState::SynSent => {
                self.arena.free(frame);
                if s.has(flags::ACK) && s.ack != e.iss.wrapping_add(1) {
                    if s.has(flags::RST) {
                        // RFC 9293 3.10.7.3: a RST whose ACK is not acceptable is dropped.
                        self.stats.drops.add(DropReason::BadRst);
                    } else {
                        self.stats.drops.add(DropReason::BadHandshake);
                        self.reply_rst(now, &seg, out);
                    }
                    return;
                }
                if s.has(flags::RST) {
                    if s.has(flags::ACK) {
                        let e = self.embryos.remove(&t).expect("present");
                        self.fail_embryo(&t, e, ConnStatus::Refused);
                    } else {
                        self.stats.drops.add(DropReason::BadRst);
                    }
                    return;
                }
                if !s.has(flags::SYN) {
                    self.stats.drops.add(DropReason::BadHandshake);
                    return;
                }
                e.irs = s.seq;
                e.peer_mss = peer_mss(seg.options.mss);
                e.peer_wscale = seg.options.window_scale;
                e.peer_ts = seg.options.timestamp.map(|x| x.0);
                e.peer_sack = seg.options.sack_permitted;
                // An ECN-setup SYN-ACK has ECE without CWR (RFC 3168 6.1.1).
                e.ecn = e.ecn && s.has(flags::ECE) && !s.has(flags::CWR);
                e.timestamps = e.timestamps && seg.options.timestamp.is_some();
                if s.has(flags::ACK) {
                    let e = self.embryos.remove(&t).expect("present");
                    // Windows in SYN segments are never scaled.
                    self.establish(now, t, e, s.win as u32, out);
                } else {
                    // Simultaneous open: answer with SYN-ACK.
                    e.state = TcpConnState::SynReceived;
                    let e = self.embryos.remove(&t).expect("present");
                    self.send_syn(now, &t, &e, out);
                    self.embryos.insert(t, e);
                }
            }
            TcpConnState::SynReceived => {
                if s.has(flags::RST) {
                    self.arena.free(frame);
                    if s.seq == e.irs.wrapping_add(1) {
                        let e = self.embryos.remove(&t).expect("present");
                        self.fail_embryo(&t, e, ConnStatus::Reset);
                    } else {
                        self.stats.drops.add(DropReason::BadRst);
                    }
                    return;
                }
                if s.has(flags::SYN) {
                    self.arena.free(frame);
                    if s.has(flags::ACK) && s.seq == e.irs && s.ack == e.iss.wrapping_add(1) {
                        // Simultaneous open: the peer's SYN-ACK acknowledges our SYN, as
                        // ours did its SYN (RFC 9293 figure 8; Linux takes it alike).
                        let e = self.embryos.remove(&t).expect("present");
                        // Windows in SYN segments are never scaled.
                        self.establish(now, t, e, s.win as u32, out);
                        return;
                    }
                    // Retransmitted SYN: our SYN-ACK was lost.
                    if s.seq == e.irs {
                        if !e.may_answer_oow(now) {
                            self.stats.drops.add(DropReason::RateLimited);
                            return;
                        }
                        let e = self.embryos.remove(&t).expect("present");
                        self.send_syn(now, &t, &e, out);
                        self.embryos.insert(t, e);
                    } else {
                        self.stats.drops.add(DropReason::BadHandshake);
                    }
                    return;
                }
                // Any acceptable segment that acknowledges our SYN completes the handshake
                // (RFC 9293 3.10.7.4); with parallel preprocessing, data that followed the
                // final ACK may be punted before it.
                let in_window = s.seq.wrapping_sub(e.irs.wrapping_add(1)) < self.host.rx_buf as u32;
                if !s.has(flags::ACK) || s.ack != e.iss.wrapping_add(1) || !in_window {
                    self.arena.free(frame);
                    self.stats.drops.add(DropReason::BadHandshake);
                    if s.has(flags::ACK) && s.ack != e.iss.wrapping_add(1) {
                        self.reply_rst(now, &seg, out);
                    } else if !in_window {
                        // Outside the window: an ACK says where we are (RFC 9293 3.10.7.4;
                        // Linux's `tcp_check_req`), at a limited rate unless it carries
                        // data (an empty one may be half of an ACK loop).
                        let empty = s.payload_len == 0 && !s.has(flags::FIN);
                        self.answer_out_of_window(now, &t, empty, out);
                    }
                    return;
                }
                let queue_full = !e.active
                    && self
                        .listeners
                        .get(&t.local_port)
                        .is_some_and(|l| l.accept_tx.len() >= l.backlog);
                if queue_full {
                    // The application has not taken the connections waiting for it: this
                    // one waits in its handshake (as Linux, which drops the ACK); our
                    // SYN-ACK goes again and the peer's ACK with it. Installed now, it
                    // would be reset at once.
                    self.arena.free(frame);
                    self.stats.drops.add(DropReason::BacklogFull);
                    return;
                }
                let e = self.embryos.remove(&t).expect("present");
                let shift = if self.cfg.window_scaling && e.peer_wscale.is_some() {
                    e.peer_wscale.unwrap_or(0)
                } else {
                    0
                };
                if self.establish(now, t, e, (s.win as u32) << shift, out)
                    && (s.payload_len > 0 || s.has(flags::FIN))
                {
                    out.reinject.push(frame);
                } else {
                    self.arena.free(frame);
                }
            }
            _ => self.arena.free(frame),
        }
    }

    /// The application dropped its listener on `port` (which it released itself): the
    /// handshakes it had in progress go with it, as a kernel's request queue does, rather
    /// than complete into a later listener's queue; their final ACKs find no listener.
    pub(super) fn unlisten(&mut self, port: u16) {
        self.listeners.remove(&port);
        self.embryos.retain(|t, e| e.active || t.local_port != port);
    }

    pub(super) fn fail_embryo(&mut self, t: &FourTuple, e: Embryo, status: ConnStatus) {
        if e.active {
            self.host.release_port(t.local_port);
        } else if let Some(l) = self.listeners.get_mut(&t.local_port).filter(|_| !e.cookie) {
            l.pending = l.pending.saturating_sub(1);
        }
        if status == ConnStatus::Reset {
            self.stats.resets += 1;
        }
        e.conn.set_status(status);
    }

    /// Install a handshaken connection. Returns false if it could not be installed.
    pub(super) fn establish(
        &mut self,
        now: Instant,
        t: FourTuple,
        mut e: Embryo,
        snd_wnd: u32,
        out: &mut ControlOutput,
    ) -> bool {
        let Some(id) = self.alloc_id() else {
            self.stats.drops.add(DropReason::QueueFull);
            self.fail_embryo(&t, e, ConnStatus::Reset);
            return false;
        };
        let ws = self.cfg.window_scaling && e.peer_wscale.is_some();
        let (snd_shift, rcv_shift) = if ws {
            (e.peer_wscale.unwrap_or(0), self.our_wscale())
        } else {
            (0, 0)
        };
        let ts = e.timestamps && e.peer_ts.is_some();
        let incarnation = self.next_incarnation(id);
        // Room for payload once the timestamp option is in every segment (both sides are at
        // least MIN_PEER_MSS, so this stays positive).
        let ts_len = if ts { wire::TS_OPT_LEN as u16 } else { 0 };
        let mss = e.peer_mss.min(self.our_mss()).saturating_sub(ts_len).max(1);
        let identity = Arc::new(FlowIdentity {
            id,
            tuple: t,
            local_mac: self.cfg.mac,
            remote_mac: e.remote_mac,
            group: self.secrets.flow_group(&t, self.cfg.flow_groups),
            template: wire::HeaderTemplate::new(self.cfg.mac, e.remote_mac, &t, ts),
            timestamps: ts,
            rcv_wscale: rcv_shift,
            snd_wscale: snd_shift,
            mss,
            class: self.cfg.classifier.as_ref().map_or(0, |c| c.class(&t)),
            incarnation,
        });
        // An active open brought its rings; a passive one gets them now.
        let (rings, app_rings) = match e.rings.take() {
            Some(r) => (r, None),
            None => {
                let (r, rx, tx) = self.host.make_rings();
                (r, Some((rx, tx)))
            }
        };
        // Control-plane rates for this connection, if the engine has them and they apply to
        // what the socket asked for; a socket that asked for them on an engine without them
        // gets the default.
        let asked = e.conn.congestion();
        let rated = self.rates.as_ref().is_some_and(|r| r.cfg.applies_to(asked));
        let congestion = if asked == Algorithm::Rates && !rated {
            Algorithm::Default
        } else {
            asked
        };
        let mut state = TcpState::new(&TcpParams {
            snd_nxt: e.iss.wrapping_add(1),
            rcv_nxt: e.irs.wrapping_add(1),
            snd_wnd,
            mss,
            snd_shift,
            rcv_shift,
            rx_cap: rings.rx.capacity() as u32,
            timestamps: ts,
            ts_recent: e.peer_ts.unwrap_or(0),
            ts_offset: self.secrets.ts_offset(&t),
            initial_cwnd_segments: self.cfg.initial_cwnd_segments,
            sack: self.cfg.sack && e.peer_sack,
            ecn: e.ecn,
            congestion,
            incarnation,
        });
        // The SYN's timestamp is as recent as the handshake (PAWS judges the first
        // segments by it; left at 0, an engine up for 24 days would skip PAWS for them).
        state.ts_recent_ms = now.millis();
        state.watch_rx(rings.rx.observer());
        let counters = FlowCounters::new();
        counters.set_timer_wake(id, self.timers.wake_tx.clone());
        self.conns[id as usize] = Some(Conn {
            tuple: t,
            state: TcpConnState::Established,
            conn: e.conn.clone(),
            counters: counters.clone(),
            ephemeral: e.active,
            fin_seen: false,
            abort_seen: false,
            orphan: false,
            fin_wait2_since: None,
            last_rx_segments: 0,
            last_rx: now,
            keepalives_sent: 0,
            persist_probes: 0,
            persist_silent: 0,
            srtt_us: None,
            rttvar_us: 0.0,
            // RFC 6298 5.7: a handshake that needed a retransmission starts with an RTO of
            // at least 3 s (until the first RTT sample).
            rto: if e.retries > 0 {
                self.cfg
                    .rto_initial
                    .max(Duration::from_secs(3))
                    .min(self.cfg.rto_max)
            } else {
                self.cfg.rto_initial
            },
            backoff: 1,
            probe_backoff: 1,
            retries: 0,
            mss: mss as u32,
            probes_fired: 0,
            last_acked: 0,
            last_rtt: 0,
            last_progress: now,
            persist_at: None,
            time_wait_until: None,
            rated,
            iss: e.iss,
            irs: e.irs,
            sack: self.cfg.sack && e.peer_sack,
            ecn: e.ecn,
            identity: identity.clone(),
            rate_snap: super::RateSnap {
                at: now,
                ..Default::default()
            },
            timer_active: false,
            parked_until: None,
            timer_tick: 0,
            resumed_at: None,
            soft_error: None,
        });
        self.activate_timers(id);
        self.by_tuple.insert(t, id);
        if let Some(r) = self.rates.as_mut().filter(|_| rated) {
            let set = r.driver.open(id, u32::from(mss));
            if let Some(c) = self.conns[id as usize].as_mut() {
                c.rate_snap.set = set;
            }
            out.work.push(ProtoWork::SetRate {
                flow: id,
                incarnation: incarnation_of(&self.incarnations, id),
                bytes_per_sec: Some(set.0),
                window: set.1,
            });
        }
        out.installs.push(FlowInstall {
            identity,
            counters,
            state,
            rings,
            conn: e.conn.clone(),
        });
        self.stats.established += 1;
        if e.active {
            // Complete the handshake with an ACK built by the data path.
            out.work.push(ProtoWork::Ack {
                flow: id,
                incarnation: incarnation_of(&self.incarnations, id),
            });
        } else {
            if let Some(l) = self.listeners.get_mut(&t.local_port).filter(|_| !e.cookie) {
                l.pending = l.pending.saturating_sub(1);
            }
            // The application sees an accepted stream established, as a kernel socket is,
            // even before the data path has installed the flow (what it writes meanwhile
            // is picked up at the installation).
            e.conn.set_status(crate::host::ConnStatus::Established);
            let stream =
                app_rings.map(|(rx, tx)| Stream::new(e.conn.clone(), rx, tx, self.host.clone()));
            let delivered = match (self.listeners.get(&t.local_port), stream) {
                (Some(l), Some(s)) => {
                    let ok = l.accept_tx.try_send(s).is_ok();
                    if let (true, Some((ctx, token))) = (ok, l.ctx.get()) {
                        ctx.post(crate::host::Event {
                            token: *token,
                            kind: crate::host::EventKind::Readable,
                        });
                    }
                    ok
                }
                _ => false,
            };
            if !delivered {
                // The listener is gone or full: abort what we just installed.
                self.stats.drops.add(DropReason::BacklogFull);
                out.work.push(ProtoWork::Reset {
                    flow: id,
                    incarnation: incarnation_of(&self.incarnations, id),
                });
            }
        }
        true
    }

    /// Handshake retransmissions (SYN, SYN-ACK) that are due, and handshakes that gave up.
    pub(super) fn poll_handshakes(&mut self, now: Instant, out: &mut ControlOutput) {
        let due: Vec<FourTuple> = self
            .embryos
            .iter()
            .filter(|(_, e)| now >= e.next_retx)
            .map(|(t, _)| *t)
            .collect();
        for t in due {
            let mut e = self.embryos.remove(&t).expect("present");
            e.retries += 1;
            if e.retries > self.cfg.syn_retries {
                self.fail_embryo(&t, e, ConnStatus::TimedOut);
                continue;
            }
            self.stats.syn_retransmits += 1;
            e.next_retx =
                now + (self.cfg.rto_initial * (1 << e.retries.min(6))).min(self.cfg.rto_max);
            self.send_syn(now, &t, &e, out);
            self.embryos.insert(t, e);
        }
    }
}
