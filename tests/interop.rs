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
