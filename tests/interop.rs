//! Interoperability: the engine against smoltcp and against itself, over the in-memory link,
//! with and without seeded loss, reordering and duplication. Every test moves
//! `FLEXTOE_TEST_BYTES` (default 64 MiB) in each direction, verifies the content by SHA-256,
//! closes in order on both ends and checks that no flow-table entry and no frame is left.

mod common;

use common::*;
use flextoe::sim::Impairments;

fn impaired(seed: u64) -> Impairments {
    Impairments::lossy(0.01, 0.01, 0.005, seed)
}

#[test]
fn engine_server_smoltcp_client() {
    let o = transfer(
        Kind::Engine,
        Kind::Smoltcp,
        Impairments::none(),
        test_bytes(),
    );
    eprintln!("{}", describe(&o));
}

#[test]
fn smoltcp_server_engine_client() {
    let o = transfer(
        Kind::Smoltcp,
        Kind::Engine,
        Impairments::none(),
        test_bytes(),
    );
    eprintln!("{}", describe(&o));
}

#[test]
fn engine_server_engine_client() {
    let o = transfer(
        Kind::Engine,
        Kind::Engine,
        Impairments::none(),
        test_bytes(),
    );
    eprintln!("{}", describe(&o));
}

#[test]
fn engine_server_smoltcp_client_impaired() {
    let o = transfer(Kind::Engine, Kind::Smoltcp, impaired(101), test_bytes());
    eprintln!("{}", describe(&o));
    assert!(o.lost_frames > 0);
    assert!(engine_retransmissions(&o) > 0, "{}", describe(&o));
}

#[test]
fn smoltcp_server_engine_client_impaired() {
    let o = transfer(Kind::Smoltcp, Kind::Engine, impaired(202), test_bytes());
    eprintln!("{}", describe(&o));
    assert!(o.lost_frames > 0);
    assert!(engine_retransmissions(&o) > 0, "{}", describe(&o));
}

#[test]
fn engine_server_engine_client_impaired() {
    let o = transfer(Kind::Engine, Kind::Engine, impaired(303), test_bytes());
    eprintln!("{}", describe(&o));
    assert!(o.lost_frames > 0);
    assert!(engine_retransmissions(&o) > 0, "{}", describe(&o));
}

// The same pairings with the engine on the threaded runtime (two workers).

#[test]
fn threaded_server_smoltcp_client() {
    let o = transfer(
        Kind::Threaded,
        Kind::Smoltcp,
        Impairments::none(),
        test_bytes(),
    );
    eprintln!("{}", describe(&o));
}

#[test]
fn smoltcp_server_threaded_client() {
    let o = transfer(
        Kind::Smoltcp,
        Kind::Threaded,
        Impairments::none(),
        test_bytes(),
    );
    eprintln!("{}", describe(&o));
}

#[test]
fn threaded_server_threaded_client() {
    let o = transfer(
        Kind::Threaded,
        Kind::Threaded,
        Impairments::none(),
        test_bytes(),
    );
    eprintln!("{}", describe(&o));
}

#[test]
fn threaded_server_smoltcp_client_impaired() {
    let o = transfer(Kind::Threaded, Kind::Smoltcp, impaired(404), test_bytes());
    eprintln!("{}", describe(&o));
    assert!(o.lost_frames > 0);
    assert!(engine_retransmissions(&o) > 0, "{}", describe(&o));
}

#[test]
fn smoltcp_server_threaded_client_impaired() {
    let o = transfer(Kind::Smoltcp, Kind::Threaded, impaired(505), test_bytes());
    eprintln!("{}", describe(&o));
    assert!(o.lost_frames > 0);
    assert!(engine_retransmissions(&o) > 0, "{}", describe(&o));
}

#[test]
fn threaded_server_threaded_client_impaired() {
    let o = transfer(Kind::Threaded, Kind::Threaded, impaired(606), test_bytes());
    eprintln!("{}", describe(&o));
    assert!(o.lost_frames > 0);
    assert!(engine_retransmissions(&o) > 0, "{}", describe(&o));
}

/// Heavy random loss in memory: 5% and 10% of the frames each way, a 100 µs one-way delay,
/// 4 MiB each way, with the engine as both peers and against smoltcp in both roles. Every
/// byte arrives once and in order (content checked by SHA-256, orderly close, nothing
/// left behind). The virtual time each transfer took is printed; the README sets it beside
/// the go-back-N recovery the engine had before.
#[test]
fn heavy_loss_recovery() {
    let pairs = [
        ("engine-engine", Kind::Engine, Kind::Engine),
        ("engine-smoltcp", Kind::Engine, Kind::Smoltcp),
        ("smoltcp-engine", Kind::Smoltcp, Kind::Engine),
    ];
    for loss in [0.05, 0.10] {
        for (i, (name, server, client)) in pairs.iter().enumerate() {
            let imp = Impairments {
                latency: std::time::Duration::from_micros(100),
                ..Impairments::lossy(loss, 0.0, 0.0, 500 + i as u64)
            };
            let o = transfer(*server, *client, imp, 4 << 20);
            assert!(o.lost_frames > 0);
            eprintln!(
                "heavy loss {:.0}% {name}: virtual {:.3} s, {} frames lost",
                loss * 100.0,
                o.virtual_time.as_secs_f64(),
                o.lost_frames
            );
        }
    }
}
