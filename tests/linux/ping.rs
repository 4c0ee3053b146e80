//! Ping against Linux: Linux's `ping` in its namespace gets the engine's echo replies, of
//! the default size and of the largest an unfragmented 1500-byte packet holds.

use super::*;

/// `ping` from the Linux side to the engine: every request answered, at both sizes.
fn linux_ping_is_answered<P: Port + 'static>(rt: Runtime<P>, lab: &VethLab) {
    let ip = lab.engine_ip.to_string();
    for size in ["56", "1472"] {
        let o = run(&lab.linux.exec(&[
            "ping", "-c", "5", "-i", "0.2", "-W", "2", "-M", "do", "-s", size, &ip,
        ]));
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        eprintln!("{text}");
        assert!(o.status.success(), "ping -s {size}: {text}");
        assert!(
            text.contains("5 packets transmitted, 5 received"),
            "ping -s {size}: {text}"
        );
    }
    let e = rt.stop();
    let st = e.stats();
    assert_eq!(st.control.icmp_echo_replies, 10, "{st}");
}

#[test]
fn af_xdp_engine_answers_linux_ping() {
    let Some(lab) = VethLab::new() else { return };
    let rt = af_xdp_engine(&lab);
    linux_ping_is_answered(rt, &lab);
}

#[test]
fn af_packet_engine_answers_linux_ping() {
    let Some(lab) = VethLab::new() else { return };
    let rt = af_packet_engine(&lab);
    linux_ping_is_answered(rt, &lab);
}
