//! Unit tests of the trace port.

use super::*;
use crate::wire::{flags, parse_frame, Parsed};

fn cfg() -> TraceConfig {
    TraceConfig::new(
        MacAddr([2, 0, 0, 0, 0, 2]),
        Ipv4Addr::new(10, 0, 0, 2),
        MacAddr([2, 0, 0, 0, 0, 1]),
        Ipv4Addr::new(10, 0, 0, 1),
        80,
    )
}

#[test]
fn bad_configurations_are_refused() {
    let bad = [
        TraceConfig {
            connections: 0,
            ..cfg()
        },
        TraceConfig { mss: 1461, ..cfg() },
        TraceConfig {
            client_port_base: 65535,
            connections: 2,
            ..cfg()
        },
        TraceConfig {
            workload: Workload::Rpc {
                request: 64,
                response: 64,
                depth: 0,
            },
            ..cfg()
        },
        TraceConfig {
            mode: Mode::OpenLoop { frames_per_recv: 0 },
            ..cfg()
        },
    ];
    for c in bad {
        assert!(TracePort::new(c).is_err());
    }
    assert!(TracePort::new(cfg()).is_ok());
}

#[test]
fn garbage_from_the_engine_is_counted_not_fatal() {
    let arena = FrameArena::new(64).unwrap();
    let mut p = TracePort::new(cfg()).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for len in 0..300usize {
        let mut bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        if len > 40 {
            // Make some look like IPv4/TCP for the port's connection.
            bytes[12] = 8;
            bytes[13] = 0;
            bytes[14] = 0x45;
            bytes[23] = 6;
            bytes[36..38].copy_from_slice(&40000u16.to_be_bytes());
        }
        let mut v = vec![arena.alloc_copy(&bytes).unwrap()];
        assert_eq!(p.send(Instant::ZERO, &arena, &mut v), 1);
    }
    assert_eq!(arena.in_use(), 0, "every frame freed");
    assert_eq!(p.stats().unexpected, 300);
    assert_eq!(p.stats_handle().snapshot().frames_out, 300);
}

#[test]
fn syns_first_then_retried_after_the_timeout() {
    let arena = FrameArena::new(64).unwrap();
    let mut p = TracePort::new(TraceConfig {
        connections: 3,
        ..cfg()
    })
    .unwrap();
    let mut out = Vec::new();
    assert_eq!(p.recv(Instant::ZERO, &arena, &mut out, 2), 2);
    assert_eq!(p.recv(Instant::ZERO, &arena, &mut out, 32), 1);
    assert_eq!(p.recv(Instant::from_millis(1), &arena, &mut out, 32), 0);
    let ports: Vec<u16> = out
        .iter()
        .map(|f| match parse_frame(arena.data(f)) {
            Ok(Parsed::Tcp(t)) => {
                assert!(t.summary.has(flags::SYN));
                assert_eq!(t.options.window_scale, Some(7));
                assert_eq!(t.options.mss, Some(1460));
                assert!(t.options.timestamp.is_none() && !t.options.sack_permitted);
                t.tuple.remote_port
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ports, [40000, 40001, 40002]);
    arena.free_all(&mut out);
    assert_eq!(p.recv(Instant::from_millis(200), &arena, &mut out, 32), 3);
    assert_eq!(p.stats().syn_retries, 3);
    arena.free_all(&mut out);
}

#[test]
fn the_port_can_move_to_an_engine_thread() {
    fn send<T: Send + 'static>() {}
    fn shared<T: Send + Sync + Clone>() {}
    send::<TracePort>();
    shared::<TraceStatsHandle>();
}
