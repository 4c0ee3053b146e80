//! Unit tests of the firewall: rules, connection tracking, a full table, floods.

use super::*;

fn info(src: [u8; 4], sport: u16, dport: u16, fl: u8) -> FrameInfo {
    FrameInfo {
        ethertype: ETHERTYPE_IPV4,
        src: src.into(),
        dst: Ipv4Addr::new(10, 0, 0, 1),
        proto: PROTO_TCP,
        sport,
        dport,
        tcp_flags: fl,
        len: 60,
        ..FrameInfo::default()
    }
}

#[test]
fn first_match_decides_and_tracking_keeps_it() {
    let fw = Firewall::new(Action::Allow);
    fw.set_rules(vec![
        Rule::deny().dst_port(23).syn(),
        Rule::deny().src("198.51.100.0/24".parse().unwrap()),
        Rule::allow().dst_port(8000..=8000u16),
    ]);
    let mut st = fw.stage();
    st.refresh();
    let syn = flags::SYN;
    let ack = flags::ACK;
    assert_eq!(
        st.verdict(&info([1, 2, 3, 4], 999, 23, syn), 0),
        (0, Action::Deny)
    );
    // An established telnet connection the firewall first sees mid-stream passes.
    assert_eq!(
        st.verdict(&info([1, 2, 3, 5], 999, 23, ack), 0),
        (3, Action::Allow)
    );
    assert_eq!(
        st.verdict(&info([198, 51, 100, 9], 1, 80, syn), 0),
        (1, Action::Deny)
    );
    // Tracked: a later frame of an allowed connection keeps its verdict.
    assert_eq!(
        st.verdict(&info([1, 2, 3, 4], 1000, 80, syn), 0),
        (3, Action::Allow)
    );
    assert_eq!(
        st.verdict(&info([1, 2, 3, 4], 1000, 80, ack), 0),
        (3, Action::Allow)
    );
    // A new rule on the connection's port stops it; one on new connections does not.
    fw.set_rules(vec![Rule::deny().dst_port(80).syn()]);
    st.refresh();
    assert_eq!(
        st.verdict(&info([1, 2, 3, 4], 1000, 80, ack), 0),
        (1, Action::Allow)
    );
    assert_eq!(
        st.verdict(&info([1, 2, 3, 4], 1001, 80, syn), 0),
        (0, Action::Deny)
    );
    fw.set_rules(vec![Rule::deny().dst_port(80)]);
    st.refresh();
    assert_eq!(
        st.verdict(&info([1, 2, 3, 4], 1000, 80, ack), 0),
        (0, Action::Deny)
    );
    assert_eq!(
        st.verdict(&info([1, 2, 3, 5], 999, 23, ack), 0),
        (1, Action::Allow)
    );
    // A tuple first seen with an ACK (allowed: the telnet rule is for new connections)
    // earns no pass for a SYN on it.
    fw.set_rules(vec![Rule::deny().dst_port(23).syn()]);
    st.refresh();
    assert_eq!(
        st.verdict(&info([9, 9, 9, 9], 7, 23, ack), 0).1,
        Action::Allow
    );
    assert_eq!(
        st.verdict(&info([9, 9, 9, 9], 7, 23, syn), 0),
        (0, Action::Deny)
    );
    // A RST marks the connection closing; it is forgotten 10 s later, when room is
    // needed.
    assert_eq!(st.table.len(), 6);
    st.verdict(&info([1, 2, 3, 5], 999, 23, flags::RST), 0);
    assert_eq!(st.table.len(), 6);
}

#[test]
fn quiet_connections_make_room() {
    let fw = Firewall::with_capacity(Action::Allow, 2);
    let mut st = fw.stage();
    st.refresh();
    st.verdict(&info([1, 1, 1, 1], 1, 80, flags::SYN), 0);
    st.verdict(&info([1, 1, 1, 1], 1, 80, flags::ACK), 0);
    st.verdict(&info([1, 1, 1, 1], 2, 80, flags::FIN), 0);
    // Full: a third connection at 5 s finds no room (the first is confirmed, the
    // second allowed); at 11 s the closing one has gone.
    st.verdict(&info([1, 1, 1, 1], 3, 80, flags::SYN), 5_000);
    assert_eq!((st.table.len(), fw.tracking().1), (2, 1));
    st.verdict(&info([1, 1, 1, 1], 3, 80, flags::SYN), 11_000);
    assert_eq!(st.table.len(), 2);
    assert!(st
        .table
        .contains_key(&(Ipv4Addr::new(1, 1, 1, 1), 3, Ipv4Addr::new(10, 0, 0, 1), 80)));
}

#[test]
fn a_full_table_checks_frame_by_frame() {
    let fw = Firewall::with_capacity(Action::Deny, 2);
    fw.set_rules(vec![Rule::allow().dst_port(80)]);
    let mut st = fw.stage();
    st.refresh();
    for p in 0..4 {
        assert_eq!(
            st.verdict(&info([1, 1, 1, 1], p, 80, 0), 0).1,
            Action::Allow
        );
    }
    assert_eq!(st.table.len(), 2);
    assert_eq!(fw.tracking().1, 2);
    // Denied ones make room for each other (forgotten, their next frames are denied
    // alone), never for the allowed.
    for p in 0..4 {
        assert_eq!(st.verdict(&info([1, 1, 1, 1], p, 81, 0), 0).1, Action::Deny);
    }
    assert_eq!(fw.tracking().1, 6);
    assert_eq!(
        st.verdict(&info([1, 1, 1, 1], 0, 80, 0), 0).1,
        Action::Allow
    );
}

/// The verdict on one frame of `src`:`sport` to `dport` with flags `fl` at `now` ms.
fn act(st: &mut FirewallStage, src: [u8; 4], sport: u16, dport: u16, fl: u8, now: u64) -> Action {
    st.verdict(&info(src, sport, dport, fl), now).1
}

/// A spoofed SYN on an established connection, under a rule that denies new
/// connections, is dropped alone: the connection keeps its verdict (it once became the
/// connection's, and dropped every later frame).
#[test]
fn a_syn_on_an_established_connection_does_not_change_its_verdict() {
    let fw = Firewall::new(Action::Allow);
    let mut st = fw.stage();
    st.refresh();
    let peer = [1, 2, 3, 4];
    assert_eq!(act(&mut st, peer, 999, 23, flags::SYN, 0), Action::Allow);
    assert_eq!(act(&mut st, peer, 999, 23, flags::ACK, 0), Action::Allow);
    fw.set_rules(vec![Rule::deny().dst_port(23).syn()]);
    st.refresh();
    assert_eq!(act(&mut st, peer, 999, 23, flags::ACK, 1), Action::Allow);
    assert_eq!(act(&mut st, peer, 999, 23, flags::SYN, 2), Action::Deny);
    assert_eq!(act(&mut st, peer, 999, 23, flags::ACK, 3), Action::Allow);
    // Once it closed, a SYN on the tuple is a new connection's, and decides.
    st.verdict(&info(peer, 999, 23, flags::FIN | flags::ACK), 4);
    assert_eq!(act(&mut st, peer, 999, 23, flags::SYN, 5), Action::Deny);
    assert_eq!(act(&mut st, peer, 999, 23, flags::ACK, 6), Action::Deny);
}

/// The stateful set-up (SYNs to port 80 allowed, everything else denied) under a SYN
/// flood that fills the table: a new client's SYN takes the place of the oldest
/// unconfirmed handshake, and its handshake ACK passes. The flood's entries were kept
/// for 5 minutes, the new client's SYN went untracked and its ACK met the default.
#[test]
fn a_syn_flood_does_not_keep_new_connections_out() {
    let fw = Firewall::with_capacity(Action::Deny, 1000);
    fw.set_rules(vec![Rule::allow().dst_port(80).syn()]);
    let mut st = fw.stage();
    st.refresh();
    for p in 0..1000u16 {
        let a = p.to_be_bytes();
        st.verdict(&info([9, 9, a[0], a[1]], 1000, 80, flags::SYN), 0);
    }
    assert_eq!(st.table.len(), 1000);
    // Still flooding at 2 s (nothing quiet enough to sweep): the client gets in.
    let client = [1, 2, 3, 4];
    assert_eq!(
        act(&mut st, client, 5000, 80, flags::SYN, 2_000),
        Action::Allow
    );
    assert_eq!(
        act(&mut st, client, 5000, 80, flags::ACK, 2_001),
        Action::Allow
    );
    assert_eq!(fw.tracking().1, 0, "nothing untracked");
    // More flood: the confirmed connection stays.
    for p in 1000..3000u16 {
        let a = p.to_be_bytes();
        st.verdict(&info([9, 9, a[0], a[1]], 1000, 80, flags::SYN), 2_500);
    }
    assert_eq!(
        act(&mut st, client, 5000, 80, flags::ACK, 3_000),
        Action::Allow
    );
    assert!(st.table.len() <= 1000 && st.evictable.len() <= 1000);
    // Unconfirmed handshakes are forgotten after 10 quiet seconds.
    st.verdict(&info(client, 5001, 80, flags::SYN), 13_000);
    assert!(st.table.len() < 10, "{}", st.table.len());
}

/// A tuple denied for a stray frame of no connection (an ACK, under "SYNs to port 80
/// allowed, the rest denied"), then opened by a real SYN: the SYN decides, and the
/// connection's later frames pass (the SYN was once decided alone, leaving the entry
/// denied).
#[test]
fn a_syn_after_a_stray_frame_decides_the_connection() {
    let fw = Firewall::new(Action::Deny);
    fw.set_rules(vec![Rule::allow().dst_port(80).syn()]);
    let mut st = fw.stage();
    st.refresh();
    let peer = [1, 2, 3, 4];
    assert_eq!(act(&mut st, peer, 999, 80, flags::ACK, 0), Action::Deny);
    assert_eq!(act(&mut st, peer, 999, 80, flags::SYN, 1), Action::Allow);
    assert_eq!(act(&mut st, peer, 999, 80, flags::ACK, 2), Action::Allow);
}

/// An entry that becomes evictable after it was made (the tuple of a connection older
/// than the firewall, closed and opened again) can make room for a new connection.
#[test]
fn an_entry_that_becomes_evictable_makes_room() {
    let fw = Firewall::with_capacity(Action::Allow, 2);
    let mut st = fw.stage();
    st.refresh();
    let peer = [1, 2, 3, 4];
    for fl in [flags::ACK, flags::FIN | flags::ACK, flags::SYN] {
        act(&mut st, peer, 1, 80, fl, 0);
    }
    act(&mut st, peer, 2, 80, flags::SYN, 0);
    act(&mut st, peer, 2, 80, flags::ACK, 0);
    // Full; the reopened tuple is the only unconfirmed entry.
    act(&mut st, peer, 3, 80, flags::SYN, 100);
    assert_eq!(fw.tracking().1, 0, "the new connection is tracked");
    let key = |p| (Ipv4Addr::new(1, 2, 3, 4), p, Ipv4Addr::new(10, 0, 0, 1), 80);
    assert!(!st.table.contains_key(&key(1)) && st.table.contains_key(&key(3)));
    assert!(st.evictable.len() <= st.table.len());
}

/// A tuple closed and opened again is queued for eviction at the back, as the newest
/// handshake: older unconfirmed ones go first (it kept its first place, at the front).
#[test]
fn a_reopened_tuple_is_evicted_after_older_handshakes() {
    let fw = Firewall::with_capacity(Action::Allow, 3);
    let mut st = fw.stage();
    st.refresh();
    let peer = [1, 2, 3, 4];
    act(&mut st, peer, 1, 80, flags::SYN, 0);
    act(&mut st, peer, 1, 80, flags::ACK, 0);
    act(&mut st, peer, 2, 80, flags::SYN, 0);
    act(&mut st, peer, 1, 80, flags::FIN | flags::ACK, 0);
    act(&mut st, peer, 1, 80, flags::SYN, 0);
    act(&mut st, peer, 3, 80, flags::SYN, 0);
    act(&mut st, peer, 4, 80, flags::SYN, 100);
    let key = |p| (Ipv4Addr::new(1, 2, 3, 4), p, Ipv4Addr::new(10, 0, 0, 1), 80);
    assert!(st.table.contains_key(&key(1)), "the reopened tuple stays");
    assert!(!st.table.contains_key(&key(2)), "the oldest handshake went");
    assert!(st.evictable.len() <= 2 * 3);
}
