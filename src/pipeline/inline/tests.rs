//! The inline engine's control plane against events of connections gone.

use super::*;
use crate::backends::arena_link::{ArenaLink, ArenaPort};
use crate::host::{ConnStatus, Stream};
use crate::stages::notify::Frozen;
use crate::stages::{Actions, ProtoWork};
use std::net::SocketAddrV4;

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

fn engines() -> (Engine<ArenaPort>, Engine<ArenaPort>) {
    let (a, b) = ArenaLink::pair(1024).expect("link");
    let mac = |n| MacAddr([0x02, 0, 0, 0, 0, n]);
    let server = Engine::new(EngineConfig::new(mac(1), SERVER_IP), a).expect("server");
    let client = Engine::new(EngineConfig::new(mac(2), CLIENT_IP), b).expect("client");
    (server, client)
}

/// Poll both engines (a fake millisecond a round) until `done` or a bound.
fn drive(
    t: &mut u64,
    server: &mut Engine<ArenaPort>,
    client: &mut Engine<ArenaPort>,
    mut done: impl FnMut(&Engine<ArenaPort>) -> bool,
) {
    for _ in 0..2000 {
        *t += 1000;
        let now = Instant::from_micros(*t);
        client.poll(now);
        server.poll(now);
        if done(client) {
            return;
        }
    }
    panic!("not done in 2000 rounds");
}

fn tuple(s: &Stream) -> FourTuple {
    FourTuple {
        local_ip: *s.local_addr().ip(),
        local_port: s.local_addr().port(),
        remote_ip: *s.peer_addr().ip(),
        remote_port: s.peer_addr().port(),
    }
}

/// A client whose first connection was aborted and whose second took its flow id.
struct Reused {
    server: Engine<ArenaPort>,
    client: Engine<ArenaPort>,
    t: u64,
    id: FlowId,
    /// The first connection's incarnation.
    gone: u8,
    /// The second connection's.
    current: u8,
    second: Stream,
    new: FourTuple,
    /// Holds the server's side of the second connection (in its queue).
    _listener: crate::host::Listener,
}

fn reused() -> Reused {
    let Connected {
        mut server,
        mut client,
        mut t,
        s: first,
        tuple: old,
        _peer,
        _listener: listener,
    } = connected();
    let id = first.flow().expect("flow");
    let stamp = client.tcp_state(&old).expect("state").stamp;
    let gone = (stamp >> 24) as u8;
    first.abort();
    drive(&mut t, &mut server, &mut client, |c| {
        c.conn_state(&old).is_none()
    });
    while listener.try_accept().expect("accept").is_some() {}

    let remote = SocketAddrV4::new(SERVER_IP, 80);
    let second = client.host().connect(remote).expect("connect");
    drive(&mut t, &mut server, &mut client, |_| {
        second.status() == ConnStatus::Established
    });
    assert_eq!(
        second.flow(),
        Some(id),
        "the new connection takes the freed id"
    );
    let new = tuple(&second);
    let current = (client.tcp_state(&new).expect("state").stamp >> 24) as u8;
    assert_ne!(current, gone);
    Reused {
        server,
        client,
        t,
        id,
        gone,
        current,
        second,
        new,
        _listener: listener,
    }
}

/// An event of a connection whose flow id a new connection took (in the threaded runtime
/// it can still be on its way from the data path when the id is given out again) is
/// ignored: it neither resets nor changes the new connection. The same event of the new
/// connection acts on it.
#[test]
fn an_event_of_a_connection_gone_leaves_its_ids_new_connection() {
    let Reused {
        mut client,
        t,
        id,
        gone,
        current,
        second,
        new,
        ..
    } = reused();
    let before = client.stats().control;

    let reset = |incarnation| ControlEvent {
        flow: id,
        incarnation,
        actions: Actions(Actions::RST_RX),
        frozen: Frozen::default(),
    };
    let now = Instant::from_micros(t);
    client
        .control
        .handle_event(now, reset(gone), &mut client.cout);
    client.apply_control(now);
    assert_eq!(client.conn_state(&new), Some(TcpConnState::Established));
    assert_eq!(second.status(), ConnStatus::Established);
    let after = client.stats().control;
    assert_eq!(after.stale_events, before.stale_events + 1);
    assert_eq!(after.resets, before.resets);

    client
        .control
        .handle_event(now, reset(current), &mut client.cout);
    client.apply_control(now);
    assert_eq!(client.conn_state(&new), None);
    assert_eq!(second.status(), ConnStatus::Reset);
    assert_eq!(client.stats().control.resets, before.resets + 1);
}

/// Work the control plane makes for a connection names its incarnation (an abort's reset,
/// an application update), and work of a connection gone (in the threaded runtime it can
/// still be on its way to the flow's group when the id is given out again) leaves the
/// id's new connection as it is, where the same work of the new connection resets it.
#[test]
fn work_made_for_a_connection_gone_leaves_its_ids_new_connection() {
    let Reused {
        mut server,
        mut client,
        mut t,
        id,
        gone,
        current,
        mut second,
        new,
        _listener,
    } = reused();
    std::io::Write::write_all(&mut second, b"hello").expect("write");
    let update = client.control.app_update(id, &mut client.cout);
    let work = update.expect("an update").work(id, None);
    assert_eq!(work.incarnation(), current);
    client.cout.work.push(work);
    let reset = |incarnation| ProtoWork::Reset {
        flow: id,
        incarnation,
    };
    let stale = |c: &Engine<ArenaPort>| c.stats().drops(DropReason::StaleFlow);
    let dropped = stale(&client);
    client.cout.work.push(reset(gone));
    client.apply_control(Instant::from_micros(t));
    assert_eq!(stale(&client), dropped + 1, "counted once");
    drive(&mut t, &mut server, &mut client, |c| {
        c.tcp_state(&new).is_some_and(|st| st.snd_una == st.snd_nxt)
    });
    assert_eq!(client.conn_state(&new), Some(TcpConnState::Established));
    assert_eq!(second.status(), ConnStatus::Established);

    second.abort();
    assert!(client.control.app_update(id, &mut client.cout).is_none());
    let made: Vec<_> = client
        .cout
        .work
        .iter()
        .map(ProtoWork::incarnation)
        .collect();
    assert_eq!(made, [current], "the abort's reset");
    client.cout.work.clear();
    client.cout.work.push(reset(current));
    client.apply_control(Instant::from_micros(t));
    drive(&mut t, &mut server, &mut client, |c| {
        c.conn_state(&new).is_none()
    });
}

/// A client's connection to the server, established, its server side accepted.
struct Connected {
    server: Engine<ArenaPort>,
    client: Engine<ArenaPort>,
    /// The fake time, in microseconds.
    t: u64,
    /// The client's stream.
    s: Stream,
    tuple: FourTuple,
    _peer: Stream,
    _listener: crate::host::Listener,
}

fn connected() -> Connected {
    let (mut server, mut client) = engines();
    let mut t = 0;
    let listener = server.host().listen(80, 8).expect("listen");
    let remote = SocketAddrV4::new(SERVER_IP, 80);
    let s = client.host().connect(remote).expect("connect");
    drive(&mut t, &mut server, &mut client, |_| {
        s.status() == ConnStatus::Established
    });
    let _peer = listener.try_accept().expect("accept").expect("a stream");
    let tuple = tuple(&s);
    Connected {
        server,
        client,
        t,
        s,
        tuple,
        _peer,
        _listener: listener,
    }
}

/// The deadline `client` reports at `now`, half a timer tick after its last poll (its
/// timers have not looked at what that poll took), and the one it reports once they looked
/// at the next tick, with nothing new in between: the two must be the same instant.
fn deadline_before_and_after_the_look(client: &mut Engine<ArenaPort>, now: Instant) -> Instant {
    let before = client.next_deadline().expect("a deadline");
    let tick = now + crate::control::TIMER_TICK;
    client.poll(tick);
    let after = client.next_deadline().expect("a deadline");
    assert_eq!(
        before.saturating_since(now),
        after.saturating_since(now),
        "the deadline before the timers' look, and after"
    );
    assert!(before > tick);
    before
}

/// The deadline the control plane reports counts the tail-loss probes afresh from an ACK of
/// new data that its timers have not looked at yet: after the probes ran out, such an ACK
/// makes the next probe due one probe timeout after it, not at the retransmission timeout
/// (a runtime sleeping to the deadline would probe late).
#[test]
fn an_ack_the_timers_have_not_seen_restarts_the_probes_in_the_deadline() {
    let Connected {
        mut server,
        mut client,
        mut t,
        mut s,
        tuple,
        _peer,
        _listener,
    } = connected();
    let all_acked = |c: &Engine<ArenaPort>| {
        c.tcp_state(&tuple)
            .is_some_and(|st| st.snd_una == st.snd_nxt)
    };
    // An RTT estimate.
    for _ in 0..4 {
        std::io::Write::write_all(&mut s, &[1; 1000]).expect("write");
        drive(&mut t, &mut server, &mut client, all_acked);
    }
    // Three segments in flight that the server does not see: the probes run out.
    std::io::Write::write_all(&mut s, &[2; 4000]).expect("write");
    let probes = client.stats().control.tail_probes;
    for _ in 0..100 {
        t += 1000;
        client.poll(Instant::from_micros(t));
        if client.stats().control.tail_probes == probes + 3 {
            break;
        }
    }
    assert_eq!(client.stats().control.tail_probes, probes + 3);
    // The server's ACK reaches the client half a timer tick after its last poll: the data
    // path takes it, the timers do not look yet. More data goes out with it.
    server.poll(Instant::from_micros(t));
    std::io::Write::write_all(&mut s, &[3; 4000]).expect("write");
    let now = Instant::from_micros(t + crate::control::TIMER_TICK.as_micros() as u64 / 2);
    let una = client.tcp_state(&tuple).expect("state").snd_una;
    client.poll(now);
    let st = client.tcp_state(&tuple).expect("state");
    assert!(st.snd_una != una && st.snd_nxt != st.snd_una, "{st:?}");
    let due = deadline_before_and_after_the_look(&mut client, now);
    assert!(
        due.saturating_since(now) < Duration::from_millis(20),
        "the next probe is due {:?} after the ACK",
        due.saturating_since(now)
    );
}

/// After a retransmission timeout (its backoff doubles the next), an ACK with an RTT sample
/// that the timers have not taken yet ends the backoff in the deadline the control plane
/// reports (Karn's algorithm), and the sample's estimate is in it: the deadline is the one
/// the timers' look at the sample gives (on a path too long for tail-loss probes, a runtime
/// sleeping to the old deadline retransmitted the next loss a whole timeout late).
#[test]
fn an_rtt_sample_the_timers_have_not_seen_ends_the_backoff_in_the_deadline() {
    let Connected {
        mut server,
        mut client,
        mut t,
        mut s,
        tuple,
        _peer,
        _listener,
    } = connected();
    let in_flight = |c: &Engine<ArenaPort>| {
        let st = c.tcp_state(&tuple).expect("state");
        st.snd_nxt.wrapping_sub(st.snd_una)
    };
    // Round trips of 150 ms: a probe timeout (twice the RTT) would come after the
    // retransmission timeout, so no tail-loss probe is armed.
    for _ in 0..8 {
        std::io::Write::write_all(&mut s, &[1; 1000]).expect("write");
        for _ in 0..10 {
            t += 150_000;
            client.poll(Instant::from_micros(t));
            server.poll(Instant::from_micros(t));
            if in_flight(&client) == 0 {
                break;
            }
        }
        assert_eq!(in_flight(&client), 0);
    }
    // Data the server does not see until the retransmission timeout fires.
    std::io::Write::write_all(&mut s, &[2; 1000]).expect("write");
    let stats = client.stats().control;
    for _ in 0..200 {
        t += 10_000;
        client.poll(Instant::from_micros(t));
        if client.stats().control.timeouts > stats.timeouts {
            break;
        }
    }
    assert_eq!(client.stats().control.timeouts, stats.timeouts + 1);
    assert_eq!(client.stats().control.tail_probes, stats.tail_probes);
    // The server's ACK of it reaches the client a little after its last poll, which sends
    // new data; the ACK of that (an RTT sample: nothing of it went twice) comes before
    // the next timer tick, with more data going out.
    server.poll(Instant::from_micros(t));
    std::io::Write::write_all(&mut s, &[3; 1000]).expect("write");
    client.poll(Instant::from_micros(t + 20));
    assert_eq!(in_flight(&client), 1000);
    server.poll(Instant::from_micros(t + 30));
    std::io::Write::write_all(&mut s, &[4; 1000]).expect("write");
    let now = Instant::from_micros(t + crate::control::TIMER_TICK.as_micros() as u64 / 2);
    client.poll(now);
    assert_eq!(in_flight(&client), 1000);
    let due = deadline_before_and_after_the_look(&mut client, now);
    // Without the backoff: within the doubled timeout (at least 2 x 200 ms) of the ACK.
    let after = due.saturating_since(now);
    assert!(
        after < Duration::from_millis(400),
        "the next timer is due {after:?} after the ACK"
    );
}
