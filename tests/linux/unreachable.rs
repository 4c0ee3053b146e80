//! ICMP errors from Linux: the engine's connect to a Linux port that nftables rejects with
//! an ICMP port unreachable is refused, and one rejected with a host unreachable (what a
//! router says of a host it cannot reach) fails as unreachable, each at its first SYN,
//! where without them the engine would send SYNs until it gave up.

use super::*;
use flextoe::host::Error;

fn linux_rejections_end_connects<P: Port + 'static>(rt: Runtime<P>, lab: &VethLab) {
    let rules = "table ip ftreject {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 9 counter reject with icmp type port-unreachable
    tcp dport 10 counter reject with icmp type host-unreachable
  }
}";
    let path = std::env::temp_dir().join(format!("{}-reject.nft", lab.linux.0));
    std::fs::write(&path, rules).unwrap();
    sh(&lab.linux.exec(&["nft", "-f", &path.to_string_lossy()]));
    let _ = std::fs::remove_file(path);
    let host = rt.host();
    for (port, want) in [(9, Error::ConnectionRefused), (10, Error::HostUnreachable)] {
        let s = host
            .connect(SocketAddrV4::new(lab.linux_ip, port))
            .expect("connect");
        // Far longer than the first SYN's retransmission timeout (1 s): without the ICMP
        // error the handshake is still going when this ends, and it reports `TimedOut`.
        let r = s.wait_connected(Some(Duration::from_secs(10)));
        assert_eq!(r, Err(want), "port {port}");
    }
    let e = rt.stop();
    let st = e.stats();
    eprintln!("{st}");
    assert_eq!(st.control.icmp_unreachables, 2, "{st}");
    assert_eq!(
        st.control.syn_retransmits, 0,
        "ended at the first SYN: {st}"
    );
    let counted = sh(&lab.linux.exec(&["nft", "list", "table", "ip", "ftreject"]));
    assert_eq!(counted.matches("packets 1 ").count(), 2, "{counted}");
}

#[test]
fn af_xdp_engine_connect_refused_and_unreachable_by_linux_icmp() {
    let Some(lab) = VethLab::new() else { return };
    let rt = af_xdp_engine(&lab);
    linux_rejections_end_connects(rt, &lab);
}
