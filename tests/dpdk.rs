//! The DPDK backend without root: two engines in one process over `net_ring` ports that
//! share one frame pool, so frames cross the link by pointer. Needs DPDK's development
//! files (`--features dpdk`); runs with `--no-huge --no-pci`.
#![cfg(feature = "dpdk")]

mod common;

use std::net::SocketAddrV4;
use std::time::Duration;

use common::echo::{echo_server, echo_through};
use common::{IP_A, IP_B, MAC_A, MAC_B};
use flextoe::backends::dpdk::{DpdkPort, FramePool};
use flextoe::backends::Port;
use flextoe::pipeline::{Engine, EngineConfig, Runtime};
use flextoe::time::SystemClock;

const MIB64: u64 = 64 << 20;

fn runtime(
    port: DpdkPort,
    mac: flextoe::wire::MacAddr,
    ip: std::net::Ipv4Addr,
) -> Runtime<DpdkPort> {
    let mut cfg = EngineConfig::new(mac, ip);
    cfg.control.rto_min = Duration::from_millis(20);
    cfg.control.time_wait = Duration::from_millis(100);
    Runtime::spawn(Engine::new(cfg, port).unwrap(), SystemClock::new()).unwrap()
}

#[test]
fn two_engines_on_net_ring_echo_64_mib_with_no_mbuf_leaked() {
    let pool = FramePool::new(common::dpdk::eal(), 8192, 1024).expect("frame pool");
    let start = pool.counts();
    assert_eq!(start.outstanding(), 0, "{start:?}");
    let (a, b) = DpdkPort::ring_pair(&pool, &common::dpdk::unique("ring"), 1).expect("ring pair");
    assert!(a.arena().is_some() && std::sync::Arc::ptr_eq(&a.arena().unwrap(), pool.arena()));
    let client = runtime(a, MAC_A, IP_A);
    let server = runtime(b, MAC_B, IP_B);
    let srv = echo_server(&server.host(), 7);
    let mut s = client
        .host()
        .connect_blocking(SocketAddrV4::new(IP_B, 7), Duration::from_secs(10))
        .expect("connect over net_ring");
    echo_through(&mut s, 11, MIB64, Duration::from_secs(240), &mut || {
        format!("client {}\nserver {}", client.stats(), server.stats())
    });
    assert_eq!(srv.join().unwrap(), MIB64);
    assert!(s.wait_closed(Some(Duration::from_secs(10))), "clean close");
    drop(s);
    let (ce, se) = (client.stop(), server.stop());
    let (cs, ss) = (ce.port().stats(), se.port().stats());
    eprintln!(
        "client port {cs:?}\nserver port {ss:?}\npool {:?}",
        pool.counts()
    );
    assert!(cs.tx > 0 && ss.rx > 0 && cs.rx > 0);
    assert_eq!(
        cs.rx_copied + ss.rx_copied,
        0,
        "net_ring moves the pool's own mbufs"
    );
    drop((ce, se));
    // Engines and ports gone, links drained: every frame is free again on one side or the
    // other, and after settling the mempool holds what it held at the start.
    pool.settle();
    let end = pool.counts();
    eprintln!("start {start:?}\nend   {end:?}");
    assert_eq!(end.outstanding(), 0, "frames leaked: {end:?}");
    assert_eq!(end.mbufs_in_use, start.mbufs_in_use, "{end:?}");
    assert_eq!(end.arena_in_use, start.arena_in_use, "{end:?}");
}
