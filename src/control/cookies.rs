//! SYN cookies (RFC 4987 section 3.6): when a listener's half-open queue or the engine's
//! bound on half-open connections is full, a SYN is answered with a SYN-ACK whose sequence
//! number encodes what the handshake needs, and nothing is kept. The ACK that completes the
//! handshake brings it back; a valid one creates the connection as if it had waited.
//!
//! The initial sequence number is `count:5 | mss:3 | mac:24`: a 64-second time counter, an
//! index into [`MSS_TABLE`], and 24 bits of keyed SipHash over the 4-tuple, the peer's ISN,
//! the counter, the MSS index and the options. With timestamps, the options (the peer's
//! window scale, SACK-permitted and ECN) ride in the low 6 bits of our timestamp value, which the
//! peer echoes; the MAC covers them, so a forged echo fails. Without timestamps the cookie
//! connection has neither window scaling nor SACK, as in Linux. A cookie is accepted for two
//! counter ticks (64-128 s), and ACKs are checked as cookies only for two ticks after their
//! listener last sent one (as Linux, which checks them only after a recent overflow).

use std::hash::{Hash, Hasher};

use siphasher::sip::SipHasher24;

use super::handshake::Embryo;
use super::*;

/// MSS values a cookie can carry; a SYN's MSS is rounded down to the largest entry not above
/// it (the peer then gets at most what it asked for).
pub const MSS_TABLE: [u16; 8] = [88, 536, 1220, 1300, 1440, 1460, 4312, 8960];

const TICK_US: u64 = 64_000_000;
/// How long a cookie stays valid at most (two ticks): returning ACKs are checked as
/// cookies only this long after the listener last sent one.
const VALID_US: u64 = 2 * TICK_US;
/// Options byte of a cookie without timestamps: no window scale, no SACK, no ECN, and a
/// bit that no echoed timestamp carries (those give at most `OPTS_MASK`), so that the MAC
/// tells it from a timestamp cookie whose options read the same.
const NO_OPTS: u8 = 0x4f;

fn count_at(now: Instant) -> u32 {
    (now.micros() / TICK_US) as u32
}

/// The options a cookie keeps, as 6 bits: window scale (15 = none), SACK-permitted, ECN.
fn opts_bits(wscale: Option<u8>, sack: bool, ecn: bool) -> u8 {
    wscale.map_or(0x0f, |w| w.min(14)) | (u8::from(sack) << 4) | (u8::from(ecn) << 5)
}

/// The low bits of our timestamp value that carry a cookie's options.
const OPTS_MASK: u32 = 0x3f;

fn mss_index(mss: u16) -> u8 {
    MSS_TABLE.iter().rposition(|m| *m <= mss).unwrap_or(0) as u8
}

impl secrets::Secrets {
    fn cookie_mac(&self, t: &FourTuple, irs: u32, count: u32, mss: u8, opts: u8) -> u32 {
        let mut h = SipHasher24::new_with_keys(self.key()[0], self.key()[1]);
        2u8.hash(&mut h);
        t.hash(&mut h);
        (irs, count, mss, opts).hash(&mut h);
        h.finish() as u32 & 0x00ff_ffff
    }

    fn cookie_at(&self, t: &FourTuple, irs: u32, count: u32, mss: u8, opts: u8) -> u32 {
        ((count & 0x1f) << 27)
            | (u32::from(mss & 7) << 24)
            | self.cookie_mac(t, irs, count, mss, opts)
    }

    /// The cookie ISN for a SYN on `t` with ISN `irs`, MSS index `mss` and options `opts`.
    pub fn cookie(&self, t: &FourTuple, irs: u32, now: Instant, mss: u8, opts: u8) -> u32 {
        self.cookie_at(t, irs, count_at(now), mss, opts)
    }

    /// Check a returning cookie: `iss` (the ACK number less one) for the peer's ISN `irs`
    /// and options `opts`. Returns the MSS index when it is ours and at most one tick old.
    pub fn check_cookie(
        &self,
        t: &FourTuple,
        irs: u32,
        iss: u32,
        now: Instant,
        opts: u8,
    ) -> Option<u8> {
        let mss = ((iss >> 24) & 7) as u8;
        let now_count = count_at(now);
        (0..2)
            .map(|age| now_count.wrapping_sub(age))
            .find(|c| (c & 0x1f) == iss >> 27 && self.cookie_at(t, irs, *c, mss, opts) == iss)
            .map(|_| mss)
    }
}

impl Control {
    /// Answer `seg` (a SYN to a listener) with a cookie SYN-ACK; nothing is kept.
    pub(super) fn send_cookie(&mut self, now: Instant, seg: &TcpSegment, out: &mut ControlOutput) {
        let t = seg.tuple;
        let s = &seg.summary;
        let ts = self.cfg.timestamps && seg.options.timestamp.is_some();
        let wscale = (self.cfg.window_scaling && ts)
            .then_some(seg.options.window_scale)
            .flatten();
        let sack = self.cfg.sack && ts && seg.options.sack_permitted;
        let ecn = self.cfg.ecn != Ecn::Off && ts && s.has(flags::ECE | flags::CWR);
        let opts = if ts {
            opts_bits(wscale, sack, ecn)
        } else {
            NO_OPTS
        };
        let mss = mss_index(handshake::peer_mss(seg.options.mss));
        let iss = self.secrets.cookie(&t, s.seq, now, mss, opts);
        // The options replace the low bits; never ahead of the connection's own clock (the
        // peer's PAWS would drop our first segments), so a step back when they would be.
        let clock = self.ts_val(&t, now);
        let mut ts_val = (clock & !OPTS_MASK) | u32::from(opts);
        if crate::wire::seq::gt(ts_val, clock) {
            ts_val = ts_val.wrapping_sub(OPTS_MASK + 1);
        }
        let repr = TcpRepr {
            src_port: t.local_port,
            dst_port: t.remote_port,
            control: TcpControl::Syn,
            seq_number: TcpSeqNumber(iss as i32),
            ack_number: Some(TcpSeqNumber(s.seq.wrapping_add(1) as i32)),
            window_len: self.host.rx_buf.min(65535) as u16,
            window_scale: wscale.map(|_| self.our_wscale()),
            max_seg_size: Some(self.our_mss()),
            sack_permitted: sack,
            sack_ranges: [None; 3],
            timestamp: seg
                .options
                .timestamp
                .filter(|_| ts)
                .map(|(v, _)| TcpTimestampRepr::new(ts_val, v)),
            payload: &[],
        };
        let ep = self.endpoints(&t, seg.src_mac);
        self.stats.cookies_sent += 1;
        if let Some(l) = self.listeners.get_mut(&t.local_port) {
            l.cookie_sent = Some(now);
        }
        self.send_tcp_flags(out, ep, repr, if ecn { flags::ECE } else { 0 });
    }

    /// Whether the listener on `port` sent a cookie that can still be valid (as Linux's
    /// `tcp_synq_no_recent_overflow`): only then is an ACK checked as one. Otherwise a
    /// blind peer could guess a cookie's 24-bit MAC by trying (the counter is public, the
    /// MSS index its choice) and open a connection from any address, or replay the first
    /// segment of a closed cookie connection for two minutes; both need a flood now.
    pub(super) fn cookies_recent(&self, port: u16, now: Instant) -> bool {
        self.listeners
            .get(&port)
            .and_then(|l| l.cookie_sent)
            .is_some_and(|at| now.saturating_since(at).as_micros() < u128::from(VALID_US))
    }

    /// The handshake a valid cookie ACK completes, rebuilt; `None` when `seg` carries no
    /// valid cookie (or its listener sent none lately, [`cookies_recent`](Self::cookies_recent)).
    pub(super) fn cookie_embryo(&mut self, now: Instant, seg: &TcpSegment) -> Option<Embryo> {
        if !self.cookies_recent(seg.tuple.local_port, now) {
            return None;
        }
        let s = &seg.summary;
        let t = seg.tuple;
        let irs = s.seq.wrapping_sub(1);
        let iss = s.ack.wrapping_sub(1);
        let echoed = seg.options.timestamp.filter(|_| self.cfg.timestamps);
        let opts = echoed.map_or(NO_OPTS, |(_, ecr)| (ecr & OPTS_MASK) as u8);
        let mss = self.secrets.check_cookie(&t, irs, iss, now, opts)?;
        let wscale = (opts & 0x0f != 0x0f).then_some(opts & 0x0f);
        let local = SocketAddrV4::new(t.local_ip, t.local_port);
        let remote = SocketAddrV4::new(t.remote_ip, t.remote_port);
        Some(Embryo {
            state: TcpConnState::SynReceived,
            iss,
            irs,
            remote_mac: seg.src_mac,
            peer_mss: MSS_TABLE[mss as usize],
            peer_wscale: wscale,
            peer_ts: echoed.map(|(v, _)| v),
            peer_sack: opts & 0x10 != 0,
            ecn: opts & 0x20 != 0,
            timestamps: echoed.is_some(),
            conn: self.listener_conn(local, remote),
            rings: None,
            active: false,
            cookie: true,
            retries: 0,
            next_retx: now,
            last_oow: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple() -> FourTuple {
        FourTuple {
            local_ip: Ipv4Addr::new(10, 0, 0, 1),
            local_port: 80,
            remote_ip: Ipv4Addr::new(10, 0, 0, 2),
            remote_port: 4000,
        }
    }

    #[test]
    fn cookies_check_and_expire() {
        let s = secrets::Secrets::new([1, 2]);
        let t = tuple();
        let now = Instant::from_micros(5 * TICK_US + 10);
        let c = s.cookie(&t, 777, now, 5, 0x13);
        assert_eq!(s.check_cookie(&t, 777, c, now, 0x13), Some(5));
        let later = Instant::from_micros(6 * TICK_US + 10);
        assert_eq!(
            s.check_cookie(&t, 777, c, later, 0x13),
            Some(5),
            "one tick old"
        );
        let too_late = Instant::from_micros(7 * TICK_US + 10);
        assert_eq!(s.check_cookie(&t, 777, c, too_late, 0x13), None);
        assert_eq!(s.check_cookie(&t, 778, c, now, 0x13), None, "other ISN");
        assert_eq!(
            s.check_cookie(&t, 777, c, now, 0x03),
            None,
            "forged options"
        );
        assert_eq!(
            s.check_cookie(&t, 777, c ^ 1, now, 0x13),
            None,
            "forged MAC"
        );
        let other = secrets::Secrets::new([3, 4]);
        assert_eq!(other.check_cookie(&t, 777, c, now, 0x13), None, "other key");
    }

    /// A cookie sent without timestamps does not check with the options an echoed
    /// timestamp would give for "no window scale, no SACK, no ECN" (which would turn
    /// timestamps on where none were negotiated), nor the other way round.
    #[test]
    fn cookies_with_and_without_timestamps_differ() {
        let s = secrets::Secrets::new([1, 2]);
        let t = tuple();
        let now = Instant::from_micros(5 * TICK_US + 10);
        let none = opts_bits(None, false, false);
        assert_eq!(none, u8::try_from(OPTS_MASK).unwrap() & NO_OPTS);
        let plain = s.cookie(&t, 777, now, 5, NO_OPTS);
        assert_eq!(s.check_cookie(&t, 777, plain, now, NO_OPTS), Some(5));
        assert_eq!(s.check_cookie(&t, 777, plain, now, none), None);
        let stamped = s.cookie(&t, 777, now, 5, none);
        assert_eq!(s.check_cookie(&t, 777, stamped, now, NO_OPTS), None);
    }

    #[test]
    fn mss_rounds_down_to_the_table() {
        assert_eq!(MSS_TABLE[mss_index(1460) as usize], 1460);
        assert_eq!(MSS_TABLE[mss_index(1459) as usize], 1440);
        assert_eq!(MSS_TABLE[mss_index(88) as usize], 88);
        assert_eq!(MSS_TABLE[mss_index(9000) as usize], 8960);
    }
}
