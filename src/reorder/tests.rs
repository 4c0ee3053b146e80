//! Tests of the reorder buffer (tombstones, gaps, overflow policies) and the ordered merge.

use super::*;

#[test]
fn reorder_releases_in_order_and_consumes_tombstones() {
    let mut r = Reorder::new(8, Overflow::Backpressure);
    let mut out = Vec::new();
    r.offer(Tagged::item(2, 'c'), &mut out).unwrap();
    r.offer(Tagged::tombstone(1), &mut out).unwrap();
    assert!(out.is_empty());
    r.offer(Tagged::item(0, 'a'), &mut out).unwrap();
    assert_eq!(out, vec!['a', 'c']);
    assert_eq!(r.stats().tombstones, 1);
    assert_eq!(r.next_seq(), 3);
    r.offer(Tagged::item(0, 'z'), &mut out).unwrap();
    assert_eq!(r.stats().late, 1);
}

fn gap(first: u64, count: u32) -> Sequenced<char> {
    Sequenced::gap(first, NonZeroU32::new(count).unwrap())
}

#[test]
fn push_tombstone_grows_only_a_gap_that_ends_just_below() {
    let mut v: Vec<Sequenced<char>> = Vec::new();
    for s in [3, 4, 5, 7] {
        Sequenced::push_tombstone(&mut v, s);
    }
    v.push(Sequenced::item(8, 'x'));
    Sequenced::push_tombstone(&mut v, 9);
    assert_eq!(
        v,
        vec![gap(3, 3), gap(7, 1), Sequenced::item(8, 'x'), gap(9, 1)]
    );
    // A gap at the top of the count does not wrap.
    let mut v = vec![gap(0, u32::MAX)];
    Sequenced::push_tombstone(&mut v, u64::from(u32::MAX));
    assert_eq!(v, vec![gap(0, u32::MAX), gap(u64::from(u32::MAX), 1)]);
}

#[test]
fn a_gap_in_order_moves_past_every_number_and_lets_out_what_waited() {
    let mut r = Reorder::new(4, Overflow::Backpressure);
    let mut out = Vec::new();
    // In order with nothing held: one step, even past the window's size.
    r.offer_entry(gap(0, 100), &mut out).unwrap();
    assert_eq!((r.next_seq(), r.stats().tombstones), (100, 100));
    // An item waits for a gap from another replica; the gap lets it out.
    r.offer_entry(Sequenced::item(103, 'a'), &mut out).unwrap();
    assert!(out.is_empty());
    assert!(r.accepts(&gap(100, 3)));
    r.offer_entry(gap(100, 3), &mut out).unwrap();
    assert_eq!((out.clone(), r.next_seq(), r.held()), (vec!['a'], 104, 0));
    // A gap ahead is held number by number, within the window only.
    r.offer_entry(gap(105, 2), &mut out).unwrap();
    assert_eq!(r.held(), 2);
    assert!(
        !r.accepts(&gap(107, 2)),
        "its last number is past the window"
    );
    assert_eq!(r.offer_entry(gap(107, 2), &mut out), Err(gap(107, 2)));
    assert_eq!(r.stats().refused, 1);
    r.offer_entry(Sequenced::item(104, 'b'), &mut out).unwrap();
    assert_eq!((r.next_seq(), r.held()), (107, 0));
    r.offer_entry(gap(107, 2), &mut out).unwrap();
    assert_eq!(out, vec!['a', 'b']);
    assert_eq!(r.stats().tombstones, 107);
    assert_eq!(r.stats().late, 0);
}

#[test]
fn a_gap_over_numbers_already_taken_counts_them_late() {
    let mut r = Reorder::new(8, Overflow::Backpressure);
    let mut out = Vec::new();
    r.offer_entry(gap(0, 4), &mut out).unwrap();
    // Entirely below the next number, then partly.
    r.offer_entry(gap(1, 2), &mut out).unwrap();
    assert_eq!(r.stats().late, 2);
    r.offer_entry(gap(2, 4), &mut out).unwrap();
    assert_eq!((r.stats().late, r.next_seq()), (4, 6));
    // A held item keeps its number; the gap's tombstone for it is late; an item past
    // the gap is released after it.
    r.offer_entry(Sequenced::item(7, 'a'), &mut out).unwrap();
    r.offer_entry(Sequenced::item(9, 'b'), &mut out).unwrap();
    r.offer_entry(gap(6, 3), &mut out).unwrap();
    assert_eq!(out, vec!['a', 'b']);
    assert_eq!((r.stats().late, r.next_seq(), r.held()), (5, 10, 0));
    r.offer_entry(Sequenced::item(11, 'c'), &mut out).unwrap();
    // A gap longer than the window over held items: every held number is walked.
    r.offer_entry(gap(9, 20), &mut out).unwrap();
    assert_eq!(out, vec!['a', 'b', 'c']);
    assert_eq!((r.next_seq(), r.held(), r.stats().late), (29, 0, 7));
}

#[test]
fn skip_ahead_makes_room_for_a_long_gap() {
    let mut r = Reorder::new(4, Overflow::SkipAhead);
    let mut out = Vec::new();
    r.offer_entry(Sequenced::item(1, 'a'), &mut out).unwrap();
    // 0 is missing; a gap far ahead gives it up and lets 'a' out.
    assert!(r.accepts(&gap(3, 10)));
    r.offer_entry(gap(3, 10), &mut out).unwrap();
    assert_eq!(out, vec!['a']);
    assert_eq!(r.stats().skipped, 2, "numbers 0 and 2");
    assert_eq!((r.next_seq(), r.stats().tombstones), (13, 10));
    assert_eq!(r.held(), 0);
}

#[test]
fn backpressure_refuses_beyond_window() {
    let mut r = Reorder::new(4, Overflow::Backpressure);
    let mut out = Vec::new();
    let back = r.offer(Tagged::item(4, 4), &mut out).unwrap_err();
    assert_eq!(back.seq, 4);
    assert_eq!(r.stats().refused, 1);
    for s in 0..4 {
        r.offer(Tagged::item(s, s), &mut out).unwrap();
    }
    r.offer(back, &mut out).unwrap();
    assert_eq!(out, vec![0, 1, 2, 3, 4]);
}

#[test]
fn skip_ahead_releases_present_items_and_counts_missing() {
    let mut r = Reorder::new(4, Overflow::SkipAhead);
    let mut out = Vec::new();
    r.offer(Tagged::item(1, 1), &mut out).unwrap();
    r.offer(Tagged::item(2, 2), &mut out).unwrap();
    // 0 is missing; 5 forces the window to move to 2..=5.
    r.offer(Tagged::item(5, 5), &mut out).unwrap();
    assert_eq!(out, vec![1, 2]);
    assert_eq!(r.stats().skipped, 1);
    r.offer(Tagged::item(0, 0), &mut out).unwrap();
    assert_eq!(r.stats().late, 1);
    r.offer(Tagged::item(3, 3), &mut out).unwrap();
    r.offer(Tagged::item(4, 4), &mut out).unwrap();
    assert_eq!(out, vec![1, 2, 3, 4, 5]);
}

#[test]
fn merge_waits_for_slow_stream_then_releases() {
    let mut m = Merge::new(2);
    let mut q = [
        VecDeque::from([Ingress::Run(3), Ingress::Item("c"), Ingress::Item("d")]),
        VecDeque::new(),
    ];
    let mut out = Vec::new();
    m.release(|i| q[i].pop_front(), usize::MAX, |v| out.push(v));
    assert!(out.is_empty(), "stream 1 may still deliver 0..=2");
    q[1].extend([Ingress::Run(1), Ingress::Item("a")]);
    m.release(|i| q[i].pop_front(), usize::MAX, |v| out.push(v));
    assert_eq!(out, ["a"], "stream 1's run may go on up to 2");
    q[1].push_back(Ingress::Advance(2));
    m.release(|i| q[i].pop_front(), usize::MAX, |v| out.push(v));
    assert_eq!(out, ["a", "c", "d"]);
}

#[test]
fn a_run_cut_short_goes_on_first_and_a_late_run_is_dropped() {
    let mut m = Merge::new(2);
    let mut q = [
        VecDeque::from([
            Ingress::Run(1),
            Ingress::Item(1),
            Ingress::Item(2),
            Ingress::Advance(2),
        ]),
        VecDeque::from([Ingress::Run(3), Ingress::Item(3)]),
    ];
    let mut out = Vec::new();
    assert_eq!(m.release(|i| q[i].pop_front(), 1, |v| out.push(v)), 1);
    assert_eq!(m.floor(), 1, "stream 0's run is open");
    assert_eq!(m.release(|i| q[i].pop_front(), 8, |v| out.push(v)), 2);
    assert_eq!(out, [1, 2, 3]);
    // A run at or below the stream's frontier: its items are late.
    q[0].extend([Ingress::Run(2), Ingress::Item(9), Ingress::Item(9)]);
    q[0].push_back(Ingress::Advance(9));
    q[1].push_back(Ingress::Advance(9));
    m.release(|i| q[i].pop_front(), 8, |v| out.push(v));
    assert_eq!(out, [1, 2, 3]);
    assert_eq!((m.stats().released, m.stats().late), (3, 2));
}

#[test]
fn release_below_stops_at_the_limit_and_floor_says_when_it_is_reached() {
    let mut m = Merge::new(2);
    let mut q = [
        VecDeque::from([
            Ingress::Run(1),
            Ingress::Item('a'),
            Ingress::Run(4),
            Ingress::Item('d'),
        ]),
        VecDeque::from([Ingress::Run(2), Ingress::Item('b'), Ingress::Advance(3)]),
    ];
    assert_eq!(m.floor(), 0, "no stream has spoken");
    let mut out = Vec::new();
    // Number 3 came out of band: no run numbered 3 or more goes before it.
    m.release_below(|i| q[i].pop_front(), usize::MAX, 3, |v| out.push(v));
    assert_eq!(out, vec!['a', 'b']);
    assert_eq!(m.floor(), 4, "everything below 4 is out, 4 is held");
    m.release(|i| q[i].pop_front(), usize::MAX, |v| out.push(v));
    assert_eq!(out.last(), Some(&'d'));
    // Below the floor: a run held at the limit stays held.
    let mut m = Merge::new(1);
    let mut q = VecDeque::from([Ingress::Run(7), Ingress::Item('x')]);
    let n = m.release_below(|_| q.pop_front(), usize::MAX, 7, |_| {});
    assert_eq!((n, m.floor()), (0, 7));
}
