//! Unit tests of the splice relay: the rewrite, what ends a splice, hostile frames.

use super::*;
use crate::sim::Rng;

fn dir(state: Arc<SpliceState>, d: usize) -> SpliceDir {
    SpliceDir {
        dir: d,
        src_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        dst_mac: MacAddr([2, 0, 0, 0, 0, 3]),
        src_ip: Ipv4Addr::new(10, 0, 0, 2),
        dst_ip: Ipv4Addr::new(10, 0, 0, 3),
        sport: 5555,
        dport: 80,
        seq_delta: 1000,
        ack_delta: u32::MAX - 9,
        in_shift: 7,
        out_shift: 5,
        out_ts_offset: 0x1000,
        state,
    }
}

/// An Ethernet/IPv4/TCP frame with SACK and timestamp options and 4 bytes of payload.
fn frame() -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20 + 24 + 4];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    let total = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[23] = 6;
    let t = 34;
    f[t + 4..t + 8].copy_from_slice(&100u32.to_be_bytes());
    f[t + 8..t + 12].copy_from_slice(&200u32.to_be_bytes());
    f[t + 12] = (44 / 4) << 4;
    f[t + 13] = flags::ACK;
    f[t + 14..t + 16].copy_from_slice(&10u16.to_be_bytes());
    let o = t + 20;
    f[o..o + 2].copy_from_slice(&[1, 1]);
    f[o + 2..o + 4].copy_from_slice(&[5, 10]);
    f[o + 4..o + 8].copy_from_slice(&300u32.to_be_bytes());
    f[o + 8..o + 12].copy_from_slice(&400u32.to_be_bytes());
    f[o + 12..o + 14].copy_from_slice(&[8, 10]);
    f[o + 14..o + 18].copy_from_slice(&7u32.to_be_bytes());
    f[o + 18..o + 22].copy_from_slice(&9u32.to_be_bytes());
    f
}

#[test]
fn rewrites_addresses_numbers_options_and_window() {
    let st = Arc::new(SpliceState::default());
    let d = dir(st.clone(), 0);
    let mut f = frame();
    crate::wire::fill_checksums(&mut f);
    let (payload, fl, seq) = rewrite(&mut f, &d, 50).unwrap();
    assert_eq!((payload, fl, seq), (4, flags::ACK, 100));
    let be32 = |i: usize| u32::from_be_bytes(f[i..i + 4].try_into().unwrap());
    assert_eq!(&f[0..6], &d.dst_mac.0);
    assert_eq!(&f[26..30], &[10, 0, 0, 2]);
    assert_eq!(be32(34 + 4), 1100, "seq moves by seq_delta");
    assert_eq!(be32(34 + 8), 190, "ack moves by ack_delta");
    assert_eq!(u16::from_be_bytes([f[48], f[49]]), 40, "10 << 7 >> 5");
    assert_eq!((be32(54 + 4), be32(54 + 8)), (290, 390), "SACK block");
    // The first timestamp latches: our clock on the other side (50 + 0x1000).
    assert_eq!(be32(54 + 14), 50 + 0x1000);
    assert_eq!(
        be32(54 + 18),
        0,
        "nothing from the other direction yet: no echo"
    );
    let mut g = frame();
    g[54 + 14..54 + 18].copy_from_slice(&17u32.to_be_bytes());
    crate::wire::fill_checksums(&mut g);
    rewrite(&mut g, &d, 60).unwrap();
    assert_eq!(
        u32::from_be_bytes(g[54 + 14..54 + 18].try_into().unwrap()),
        50 + 0x1000 + 10,
        "later timestamps keep their distance"
    );
    let mut fresh = f.clone();
    crate::wire::fill_checksums(&mut fresh);
    assert_eq!(f, fresh, "the updated checksums are the right ones");
}

/// A frame of the spliced connection with a wrong checksum, or with an option that
/// cannot be read, is refused before it changes anything: not the frame, not the ACK
/// the other side's RST is judged by, not the timestamp shift the first value latches.
#[test]
fn a_corrupted_or_malformed_frame_changes_no_state() {
    let st = Arc::new(SpliceState::default());
    let d = dir(st.clone(), 0);
    let untouched = |st: &SpliceState| {
        st.acked[1].load(Ordering::Relaxed) == 0
            && st.ts_delta[0].load(Ordering::Relaxed) == 0
            && st.ts_first[0].load(Ordering::Relaxed) == 0
    };
    // A bad TCP checksum (the last payload byte flipped after filling it).
    let mut bad = frame();
    crate::wire::fill_checksums(&mut bad);
    let n = bad.len();
    bad[n - 1] ^= 0x40;
    let before = bad.clone();
    assert!(rewrite(&mut bad, &d, 60).is_none());
    assert_eq!(bad, before, "the frame is as it came");
    assert!(untouched(&st));
    // A bad IPv4 header checksum.
    let mut bad = frame();
    crate::wire::fill_checksums(&mut bad);
    bad[14 + 10] ^= 1;
    assert!(rewrite(&mut bad, &d, 60).is_none());
    assert!(untouched(&st));
    // Correct checksums, but an option after the timestamp runs past the header.
    let mut bad = frame();
    let end = 54 + 22;
    assert_eq!(bad[end..end + 2], [0, 0], "end of options pads the header");
    bad[end..end + 2].copy_from_slice(&[3, 9]);
    crate::wire::fill_checksums(&mut bad);
    assert!(rewrite(&mut bad, &d, 60).is_none());
    assert!(untouched(&st));
    // The same frame well formed is taken and moves the state.
    let mut good = frame();
    crate::wire::fill_checksums(&mut good);
    assert!(rewrite(&mut good, &d, 60).is_some());
    assert!(!untouched(&st));
}

/// What ends a splice: a FIN counts within the window the other side offered of the
/// number it acknowledged (a FIN 2 MiB ahead, from a sender with that much
/// unacknowledged and a window to match, used not to count: the splice then stayed for
/// days), a RST at that number ends it, one elsewhere in the window after it marks it (it
/// ends once quiet), numbers outside count for nothing.
#[test]
fn what_ends_a_splice() {
    let st = SpliceState::new([1000, 5000], [65_535; 2]);
    let ends = |st: &SpliceState| st.ends.load(Ordering::Relaxed);
    // Side 1 offers side 0 a 4 MiB window, and side 0 the same to side 1.
    st.relayed(1, flags::ACK, 5000, 5000, 1000, 4 << 20);
    st.relayed(0, flags::ACK, 1000, 1000, 5000, 4 << 20);
    st.note_end(0, flags::FIN | flags::ACK, 1000 + (2 << 20));
    assert_eq!(ends(&st), 1);
    st.note_end(1, flags::FIN, 5000 + (1 << 31));
    assert_eq!(ends(&st), 1, "far off");
    st.note_end(1, flags::RST, 5000 + (4 << 20) + 1);
    assert_eq!(ends(&st), 1, "past the window");
    st.note_end(1, flags::RST, 5000 + 100);
    assert!(st.rst_seen() && !st.ended());
    st.note_end(1, flags::RST, 5000);
    assert!(st.ended());
    let st = SpliceState::new([1000, 5000], [65_535; 2]);
    st.note_end(1, flags::FIN, 4990);
    st.note_end(0, flags::FIN, 1000);
    assert!(st.ended() && !st.rst_seen(), "both FINs");
}

/// A blind spoofer who knows a splice's addresses and ports, not its numbers: FINs and
/// RSTs spread over the sequence space (once, any FIN within 2^30 counted, so two FINs
/// from each side ended an idle splice after 2 s) and ACKs of data never sent (once, any
/// ACK moved the number a RST must carry, and so let its FIN count) move nothing.
#[test]
fn a_blind_spoofer_cannot_end_a_splice() {
    let st = SpliceState::new([1000, 5000], [65_535; 2]);
    st.relayed(1, flags::ACK, 5000, 5000, 1000, 64 << 10);
    st.relayed(0, flags::ACK, 1000, 1000, 5000, 64 << 10);
    for k in 1..16u32 {
        let far = k << 28;
        for side in 0..2 {
            let acked = if side == 0 { 1000u32 } else { 5000 };
            // An ACK of data the other side never sent, then a FIN and a RST there.
            st.relayed(
                1 - side,
                flags::ACK,
                0,
                0,
                acked.wrapping_add(far) | 1,
                1 << 30,
            );
            st.relayed(
                side,
                flags::FIN | flags::ACK,
                acked.wrapping_add(far) | 1,
                0,
                0,
                0,
            );
            st.relayed(side, flags::RST, acked.wrapping_add(far) | 1, 0, 0, 0);
        }
    }
    assert_eq!(st.ends.load(Ordering::Relaxed), 0);
    assert_eq!(st.acked[0].load(Ordering::Relaxed) as u32, 1000);
    assert_eq!(st.window[0].load(Ordering::Relaxed), 64 << 10);
    // Data side 0 sent and side 1 acknowledged moves them.
    st.relayed(0, flags::ACK, 1000, 1500, 5000, 64 << 10);
    st.relayed(1, flags::ACK, 5000, 5000, 1500, 32 << 10);
    assert_eq!(st.acked[0].load(Ordering::Relaxed) as u32, 1500);
    assert_eq!(st.window[0].load(Ordering::Relaxed), 32 << 10);
}

/// A RST in the window but not exact marks the splice; the side it reached answering
/// (its challenge ACK: it rejected the RST) unmarks it, so a spoofed one does not end an
/// idle splice 10 s later.
#[test]
fn a_rst_its_receiver_rejected_does_not_end_the_splice() {
    let st = SpliceState::new([1000, 5000], [65_535; 2]);
    st.relayed(0, flags::RST, 1000 + 10, 1000 + 10, 0, 0);
    assert!(st.rst_seen());
    // Side 1 answers with a challenge ACK (its own numbers, acknowledging 1000).
    st.relayed(1, flags::ACK, 5000, 5000, 1000, 64 << 10);
    assert!(!st.rst_seen());
    // Side 0 talking does not unmark a RST side 1 sent.
    st.relayed(1, flags::RST, 5000 + 10, 5000 + 10, 0, 0);
    st.relayed(0, flags::ACK, 1000, 1000, 4000, 64 << 10);
    assert!(st.rst_seen(), "an implausible ACK is no answer");
}

/// Frames preprocess would drop are not relayed: a first fragment (its FIN would count
/// though the receiver may never reassemble it) and SYN with FIN.
#[test]
fn fragments_and_bad_flag_combinations_are_not_relayed() {
    let st = Arc::new(SpliceState::new([100, 190], [65_535; 2]));
    let d = dir(st.clone(), 0);
    let mut f = frame();
    f[14 + 6] = 0x20; // More Fragments
    f[34 + 13] = flags::ACK | flags::FIN;
    crate::wire::fill_checksums(&mut f);
    assert!(rewrite(&mut f, &d, 5).is_none());
    let mut f = frame();
    f[34 + 13] = flags::SYN | flags::FIN;
    crate::wire::fill_checksums(&mut f);
    assert!(rewrite(&mut f, &d, 5).is_none());
    assert_eq!(st.ends.load(Ordering::Relaxed), 0);
    let mut f = frame();
    f[34 + 13] = flags::ACK | flags::FIN;
    crate::wire::fill_checksums(&mut f);
    assert!(rewrite(&mut f, &d, 5).is_some());
}

#[test]
fn a_tagged_frame_keeps_its_tag() {
    let st = Arc::new(SpliceState::default());
    let d = dir(st, 0);
    let mut a = frame();
    crate::wire::fill_checksums(&mut a);
    let mut tagged = a[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 42]);
    tagged.extend_from_slice(&a[12..]);
    rewrite(&mut a, &d, 50).unwrap();
    rewrite(&mut tagged, &d, 50).unwrap();
    assert_eq!(&tagged[12..16], &[0x81, 0x00, 0x00, 42]);
    assert_eq!(&tagged[..12], &a[..12]);
    assert_eq!(
        &tagged[16..],
        &a[12..],
        "the same rewrite, checksums included"
    );
}

#[test]
fn hostile_frames_are_refused_not_a_panic() {
    let st = Arc::new(SpliceState::default());
    let d = dir(st, 1);
    let good = frame();
    for n in 0..good.len() {
        let mut f = good[..n].to_vec();
        let _ = rewrite(&mut f, &d, 1);
    }
    // Checksums made right again after every other mutation (where the lengths allow),
    // so that the rewrite past the checks sees hostile headers and options too.
    let refill = |f: &mut [u8]| {
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
        if ihl < 20 || total < ihl + 20 || 14 + total > f.len() {
            return;
        }
        wire::checksum::fill_ipv4_header(&mut f[14..14 + ihl]);
        let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
        let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
        wire::checksum::fill_tcp(src, dst, &mut f[14 + ihl..14 + total]);
    };
    let mut rng = Rng::new(3);
    let mut taken = 0;
    for i in 0..20_000 {
        let mut f = good.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(f.len() as u64) as usize;
            f[i] = rng.next_u64() as u8;
        }
        if i % 2 == 0 {
            refill(&mut f);
        }
        taken += usize::from(rewrite(&mut f, &d, 1).is_some());
    }
    assert!(
        taken > 1000,
        "{taken}: the rewrite past the checks was reached"
    );
}

/// A side that aborts with data in flight sends its RST at its `snd_nxt`, in the window
/// but not exact: the other side's ACKs of that data still pass after the RST, and the
/// one that reaches the RST's number (the RST then exact for it) ends the splice. They
/// used to unmark the RST, and the splice stayed for days.
#[test]
fn an_abort_with_data_in_flight_ends_the_splice() {
    let st = SpliceState::new([1000, 5000], [65_535; 2]);
    st.relayed(1, flags::ACK, 5000, 8000, 1000, 64 << 10);
    st.relayed(1, flags::RST, 8000, 8000, 0, 0);
    assert!(st.rst_seen() && !st.ended());
    st.relayed(0, flags::ACK, 1000, 1000, 6000, 64 << 10);
    assert!(st.rst_seen() && !st.ended(), "data still coming");
    st.relayed(0, flags::ACK, 1000, 1000, 8000, 64 << 10);
    assert!(st.ended());
}

/// More than 64 KiB in flight before any ACK came through (the splice starts from the
/// window the engine last offered each side, here 65535 scaled by a shift of 7): the ACKs that
/// follow move the splice's numbers, and the FIN after counts. (Starting from 65535, the
/// numbers stuck, the FIN fell outside and the splice stayed for days.)
#[test]
fn a_flight_past_64_kib_is_followed() {
    let st = SpliceState::new([1000, 5000], [65_535 << 7; 2]);
    let mut seq = 1000u32;
    for _ in 0..140 {
        st.relayed(0, flags::ACK, seq, seq + 1448, 5000, 1 << 20);
        seq += 1448;
    }
    st.relayed(1, flags::ACK, 5000, 5000, 101_000, 1 << 20);
    st.relayed(1, flags::ACK, 5000, 5000, seq, 1 << 20);
    assert_eq!(st.acked[0].load(Ordering::Relaxed) as u32, seq);
    st.relayed(0, flags::FIN | flags::ACK, seq, seq + 1, 5000, 1 << 20);
    assert_eq!(st.ends.load(Ordering::Relaxed), 1);
}

/// A spoofed RST in the window, not exact, while the data flows: the RST's side sending
/// past it, or the other acknowledging past it, unmarks it (it once stayed marked, and the
/// next pause of 10 s removed a live splice).
#[test]
fn a_spoofed_rst_is_belied_by_traffic_past_it() {
    let st = SpliceState::new([1000, 5000], [65_535; 2]);
    st.relayed(0, flags::RST, 3000, 3000, 0, 0);
    assert!(st.rst_seen());
    st.relayed(0, flags::ACK, 1000, 4000, 5000, 64 << 10);
    assert!(!st.rst_seen(), "data past it");
    st.relayed(1, flags::RST, 7000, 7000, 0, 0);
    assert!(st.rst_seen());
    st.relayed(1, flags::ACK, 5000, 8000, 4000, 64 << 10);
    assert!(!st.rst_seen() && !st.ended());
    // An ACK of exactly the RST's number while its side sent past it ends nothing.
    st.relayed(1, flags::RST, 9000, 9000, 0, 0);
    st.relayed(1, flags::ACK, 8000, 10_000, 4000, 64 << 10);
    st.relayed(0, flags::ACK, 4000, 4000, 9000, 64 << 10);
    assert!(!st.ended());
}
