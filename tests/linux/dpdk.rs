//! The engine on DPDK's `net_af_packet` and `net_tap` PMDs against Linux.

use super::*;

/// The engine on DPDK's `net_af_packet` PMD on the lab's veth end (probed in the engine's
/// namespace), with a frame pool of its own.
#[cfg(feature = "dpdk")]
fn dpdk_engine_on(lab: &VethLab, pmd: &str, extra: &str) -> Runtime<DpdkPort> {
    let pool = FramePool::new(common::dpdk::eal(), 16384, 1024).expect("frame pool");
    let args = format!(
        "{},iface={}{extra}",
        common::dpdk::unique(pmd),
        lab.engine_if
    );
    let cfg = DpdkConfig::new(Device::Probe(args));
    let port = in_netns(&lab.engine.0, move || {
        DpdkPort::open(&pool, &cfg).map_err(std::io::Error::from)
    })
    .expect("DPDK port");
    Runtime::spawn(
        Engine::new(config(lab.engine_ip), port).unwrap(),
        SystemClock::new(),
    )
    .unwrap()
}

/// The PMD's kernel ring: a frame's data must fit an mbuf after its 128-byte headroom
/// (1920 bytes), and the PMD assumes frames fill each block exactly (blocksz a multiple of
/// framesz): 16 frames of 1792 bytes per 28 KiB block.
#[cfg(feature = "dpdk")]
const AF_PACKET_RING: &str = "blocksz=28672,framesz=1792,framecnt=512";

#[cfg(feature = "dpdk")]
fn dpdk_af_packet_engine(lab: &VethLab) -> Runtime<DpdkPort> {
    dpdk_engine_on(lab, "net_af_packet", &format!(",qpairs=1,{AF_PACKET_RING}"))
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_two_queues_spread_sixteen_connections() {
    let Some(lab) = VethLab::with_queues(2) else {
        return;
    };
    let pool = FramePool::new(common::dpdk::eal(), 16384, 1024).expect("frame pool");
    // net_af_packet with two queue pairs: a fanout group hashing each flow to one socket.
    let args = format!(
        "{},iface={},qpairs=2,{AF_PACKET_RING}",
        common::dpdk::unique("net_af_packet"),
        lab.engine_if
    );
    let mut cfg = DpdkConfig::new(Device::Probe(args));
    cfg.queues = 2;
    let port = in_netns(&lab.engine.0, move || {
        DpdkPort::open(&pool, &cfg).map_err(std::io::Error::from)
    })
    .expect("DPDK port");
    let rt = Runtime::spawn(
        Engine::new(config(lab.engine_ip), port).unwrap(),
        SystemClock::new(),
    )
    .unwrap();
    let e = sixteen_linux_clients(rt, &lab.linux, lab.engine_ip);
    let per_queue = e.port().queue_stats();
    eprintln!("DPDK per queue: {per_queue:?}");
    assert_eq!(per_queue.len(), 2);
    for (q, st) in &per_queue {
        assert!(st.rx > 100 && st.tx > 100, "queue {q} idle: {per_queue:?}");
    }
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_af_packet_linux_client_echo() {
    let Some(lab) = VethLab::new() else { return };
    let e = linux_client_against_engine(dpdk_af_packet_engine(&lab), &lab.linux, lab.engine_ip);
    let st = e.port().stats();
    eprintln!("{}\n{st:?}", e.stats());
    assert!(st.rx > 0 && st.tx > 0 && st.dev_ipackets > 0, "{st:?}");
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_af_packet_engine_client_linux_server() {
    let Some(lab) = VethLab::new() else { return };
    let e = engine_client_against_linux(dpdk_af_packet_engine(&lab), &lab.linux, lab.linux_ip);
    eprintln!("{}\n{:?}", e.stats(), e.port().stats());
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_af_packet_with_one_percent_loss() {
    let Some(lab) = VethLab::new() else { return };
    both_ways_with_loss(
        || dpdk_af_packet_engine(&lab),
        &lab.linux,
        lab.engine_ip,
        lab.linux_ip,
    );
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_af_packet_capture_has_no_malformed_packets_or_bad_checksums() {
    capture_check(dpdk_af_packet_engine);
}

/// DPDK's TAP PMD reports IPv4 and TCP transmit checksum offload (it computes them in
/// software from the mbuf's offload flags): the port turns it on, the engine leaves the
/// checksums to the device, and what reaches Linux is correct (tshark, and the echo).
#[cfg(feature = "dpdk")]
#[test]
fn dpdk_net_tap_checksum_offload_against_linux() {
    if !available(&["ip", "tcpdump", "tshark"]) {
        return;
    }
    let ns = Netns::unique("o");
    let tap = format!("{}t", ns.0);
    let pool = FramePool::new(common::dpdk::eal(), 16384, 1024).expect("frame pool");
    let cfg = DpdkConfig::new(Device::Probe(format!(
        "{},iface={tap}",
        common::dpdk::unique("net_tap")
    )));
    let port = in_netns(&ns.0, move || {
        DpdkPort::open(&pool, &cfg).map_err(std::io::Error::from)
    })
    .expect("DPDK TAP port");
    assert!(
        port.checksum_offload(),
        "net_tap offers IPv4 and TCP checksum offload"
    );
    assert!(port.capabilities().tx_checksum_offload);
    let linux_ip = Ipv4Addr::new(10, 83, 0, 1);
    let engine_ip = Ipv4Addr::new(10, 83, 0, 2);
    let cidr = format!("{linux_ip}/24");
    sh(&["ip", "-n", &ns.0, "addr", "add", &cidr, "dev", &tap]);
    sh(&["ip", "-n", &ns.0, "link", "set", &tap, "up"]);
    let rt = Runtime::spawn(
        Engine::new(config(engine_ip), port).unwrap(),
        SystemClock::new(),
    )
    .unwrap();
    capture_on(&ns, &tap, engine_ip, rt);
}
