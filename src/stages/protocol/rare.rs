//! Protocol work that does not come with every segment, kept out of the hot code: a peer's
//! RST, the work of a flow frozen for a splice, and the control plane's kinds (resets,
//! timeouts, probes, requested ACKs, path MTU).

use super::*;

/// A peer's RST on the data path (RFC 5961 section 3): it resets the connection when exact,
/// draws a challenge ACK (within the flow's limit and the stage's budget) when in the
/// window, and is dropped
/// otherwise. It comes in the flow's stream of segments, so it takes effect after every
/// segment that arrived before it and before every one after it.
#[cold]
#[inline(never)]
pub(super) fn peer_rst(
    st: &mut TcpState,
    limit: &mut RateLimit,
    stats: &mut StageStats,
    now: Instant,
    s: &SegmentSummary,
    r: &mut ProtoResult,
) {
    if let Some(reason) = st.on_rst(now, s.seq, || limit.take(now), r) {
        stats.drops.add(reason);
    }
}

/// A segment for a frozen flow (on its way into a splice), not a reset: dropped, its frame
/// handed back.
#[cold]
#[inline(never)]
pub(super) fn frozen_segment(st: &mut TcpState, stats: &mut StageStats, r: &mut ProtoResult) {
    r.actions.set(Actions::RECEIVED);
    stats.drops.add(DropReason::Frozen);
    st.finish(r);
}

/// Work for a frozen flow (on its way into a splice): segments are dropped, application
/// updates wait for the thaw, resets go through. Returns the work to carry on with (the
/// thaw's update, a reset), or `None` when done.
#[cold]
#[inline(never)]
pub(super) fn frozen(
    st: &mut TcpState,
    now: Instant,
    work: ProtoWork,
    r: &mut ProtoResult,
) -> Option<ProtoWork> {
    match work {
        // Segments go to the protocol stage's `handle_rx`, which drops them there
        // (`frozen_segment`) but for a reset.
        w @ ProtoWork::Rx(_) => return Some(w),
        ProtoWork::App {
            positions,
            fin,
            closed,
            ..
        } => {
            let prev = st.frozen_app.take();
            let (p0, f0, c0) = prev.unwrap_or((None, false, false));
            st.frozen_app = Some((positions.or(p0), fin || f0, closed || c0));
        }
        ProtoWork::Thaw { flow, incarnation } => {
            st.flags &= !F_FROZEN;
            match st.frozen_app.take() {
                Some((positions, fin, closed)) => {
                    return Some(ProtoWork::App {
                        flow,
                        positions,
                        fin,
                        closed,
                        incarnation,
                    });
                }
                None => {
                    if st.can_send() {
                        r.actions.set(Actions::SCHED);
                    }
                }
            }
        }
        ProtoWork::Freeze { .. } => st.report_frozen(r),
        // An ACK the delayed-ACK timer owes (it disarmed itself) still goes, the window
        // held: dropped, the peer's data waited for its retransmission timeout, spliced or
        // thawed. (On the threaded runtime it may leave after the splice is installed: a
        // duplicate ACK of what the splice starts from.) Not after a reset.
        ProtoWork::Ack { .. } if !st.has(F_RST) => {
            st.frozen_ack_header(now, &mut r.hdr);
            r.actions.set(Actions::TX | Actions::ACK_NOW);
        }
        w @ (ProtoWork::Rst { .. } | ProtoWork::Reset { .. }) => return Some(w),
        _ => {}
    }
    st.finish(r);
    None
}

/// The work kinds that do not come with every segment: the control plane's (resets,
/// timeouts, probes, ACKs on request, rates, splice freezes). Out of line, so that the
/// code of the per-segment kinds stays together. Work made for an earlier connection with
/// the flow's id (see [`ProtoWork`]) is dropped and counted.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
pub(super) fn rare<C: CongestionControl>(
    st: &mut TcpState,
    cc: &C,
    cf: &mut C::Flow,
    stats: &mut StageStats,
    limit: &mut RateLimit,
    now: Instant,
    work: ProtoWork,
    r: &mut ProtoResult,
) {
    if super::stale_work(st, work.incarnation()) {
        stats.drops.add(DropReason::StaleFlow);
        return;
    }
    match work {
        ProtoWork::Freeze { .. } => {
            st.flags |= F_FROZEN;
            st.report_frozen(r);
        }
        ProtoWork::Thaw { .. } => {
            if st.can_send() {
                r.actions.set(Actions::SCHED);
            }
        }
        ProtoWork::Rst { seq, challenge, .. } => {
            if let Some(reason) = st.on_rst(now, seq, || challenge && limit.take(now), r) {
                stats.drops.add(reason);
            }
        }
        ProtoWork::Retransmit { .. } => st.on_timeout(cc, cf, now, r),
        ProtoWork::Probe { .. } => st.on_probe(now, r),
        ProtoWork::TailProbe { .. } => st.on_tail_probe(now, r),
        ProtoWork::Ack { .. } => st.on_ack_request(now, r),
        ProtoWork::Challenge { .. } => {
            // The stage's budget across flows, if one is set, is asked only past the
            // flow's own limit (a flood on one flow does not spend it).
            if let Some(reason) = st.challenge_ack(now, || limit.take(now), r) {
                stats.drops.add(reason);
            }
        }
        ProtoWork::Reset { .. } => st.on_reset(now, r),
        ProtoWork::PathMtu { mss, seq, .. } => {
            if let Some(reason) = st.on_path_mtu(cc, cf, now, (mss, seq), r) {
                stats.drops.add(reason);
            }
        }
        ProtoWork::SetRate {
            bytes_per_sec,
            window,
            ..
        } => {
            st.control_rate = bytes_per_sec;
            st.control_window = window.map_or(0, |w| w.max(u32::from(st.mss)));
            r.actions.set(Actions::RATE);
            if st.can_send() {
                // A larger window may let more out.
                r.actions.set(Actions::SCHED);
            }
        }
        // The per-segment kinds are handled in line and never come here (a frame would
        // still go back with the result).
        ProtoWork::Rx(w) => r.rx_frame = Some(w.frame),
        ProtoWork::Tx { .. } | ProtoWork::App { .. } => {}
    }
}
