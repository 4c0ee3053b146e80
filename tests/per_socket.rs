//! Congestion control as a socket option: an engine whose policy is `Selectable` gives each
//! connection the algorithm its socket asked for (`Host::connect_with`,
//! `Host::listen_with`) and the policy's default to the others; control-plane rates set to
//! apply only when asked drive exactly the connections whose socket asked for them.

mod common;

use std::net::SocketAddrV4;
use std::time::Duration;

use common::*;
use flextoe::backends::mem::MemLink;
use flextoe::control::congestion::{Algorithm, Selectable, SelectableFlow};
use flextoe::pipeline::Pipeline;
use flextoe::sim::Impairments;
use flextoe::stages::pacer::Pacer;
use flextoe::time::Instant;
use flextoe::wire::FourTuple;

#[test]
fn each_connection_gets_the_algorithm_its_socket_asked_for() {
    let (pa, pb) = MemLink::pair(Impairments::none());
    let mut a = Pipeline::builder(engine_config(MAC_A, IP_A), pa)
        .congestion(Selectable::default())
        .scheduler(Pacer::new(4))
        .build()
        .unwrap();
    let mut b = Pipeline::builder(engine_config(MAC_B, IP_B), pb)
        .congestion(Selectable {
            default: Algorithm::Cubic,
            ..Selectable::default()
        })
        .build()
        .unwrap();
    let dctcp = b
        .host()
        .listen_with(SERVER_PORT, 8, Algorithm::Dctcp)
        .unwrap();
    let plain = b.host().listen(SERVER_PORT + 1, 8).unwrap();
    let server = |port| SocketAddrV4::new(IP_B, port);
    let streams = [
        a.host()
            .connect_with(server(SERVER_PORT), Algorithm::Timely)
            .unwrap(),
        a.host()
            .connect_with(server(SERVER_PORT), Algorithm::Cubic)
            .unwrap(),
        a.host().connect(server(SERVER_PORT + 1)).unwrap(),
    ];
    let mut now = Instant::ZERO;
    for _ in 0..200 {
        a.poll(now);
        b.poll(now);
        now += Duration::from_micros(10);
    }
    let tuple = |s: &flextoe::Stream| FourTuple {
        local_ip: IP_A,
        local_port: s.local_addr().port(),
        remote_ip: IP_B,
        remote_port: s.peer_addr().port(),
    };
    let kind = |f: Option<&SelectableFlow>| match f {
        Some(SelectableFlow::NewReno(_)) => "newreno",
        Some(SelectableFlow::Cubic(_)) => "cubic",
        Some(SelectableFlow::Dctcp(_)) => "dctcp",
        Some(SelectableFlow::Timely(_)) => "timely",
        Some(SelectableFlow::Rates(_)) => "rates",
        None => "none",
    };
    let got: Vec<_> = streams
        .iter()
        .map(|s| kind(a.congestion_state(&tuple(s))))
        .collect();
    assert_eq!(
        got,
        ["timely", "cubic", "newreno"],
        "the client's choices, then its default"
    );
    // The server side: the listener's choice, then the server's default (CUBIC).
    let mut server_side: Vec<_> = b
        .connections()
        .iter()
        .map(|t| (t.local_port, kind(b.congestion_state(t))))
        .collect();
    server_side.sort();
    assert_eq!(
        server_side,
        [
            (SERVER_PORT, "dctcp"),
            (SERVER_PORT, "dctcp"),
            (SERVER_PORT + 1, "cubic")
        ]
    );
    assert!(dctcp.try_accept().unwrap().is_some());
    assert!(plain.try_accept().unwrap().is_some());
}

#[test]
fn control_plane_rates_drive_the_sockets_that_ask_for_them() {
    use flextoe::control::rates::{ControlRates, DctcpRate};
    use std::io::Write;

    let (pa, pb) = MemLink::pair(Impairments::none());
    let mut cfg = engine_config(MAC_A, IP_A);
    cfg.control.rates =
        Some(ControlRates::new(Duration::from_micros(100), DctcpRate::default()).only_when_asked());
    let mut a = Pipeline::builder(cfg, pa)
        .congestion(Selectable::default())
        .scheduler(Pacer::new(4))
        .build()
        .unwrap();
    // An engine without control-plane rates: a socket asking for them gets the default.
    let mut b = Pipeline::builder(engine_config(MAC_B, IP_B), pb)
        .congestion(Selectable::default())
        .build()
        .unwrap();
    let _l = b.host().listen(SERVER_PORT, 8).unwrap();
    let _m = a.host().listen(SERVER_PORT, 8).unwrap();
    let server = SocketAddrV4::new(IP_B, SERVER_PORT);
    let mut rated = a.host().connect_with(server, Algorithm::Rates).unwrap();
    let mut plain = a.host().connect_with(server, Algorithm::Cubic).unwrap();
    let unrated = b
        .host()
        .connect_with(SocketAddrV4::new(IP_A, SERVER_PORT), Algorithm::Rates)
        .unwrap();
    rated.set_nonblocking(true);
    plain.set_nonblocking(true);
    let mut now = Instant::ZERO;
    for _ in 0..2000 {
        a.poll(now);
        b.poll(now);
        let _ = rated.write(&[1u8; 4096]);
        let _ = plain.write(&[1u8; 4096]);
        now += Duration::from_micros(10);
    }
    let tuple = |s: &flextoe::Stream, ip| FourTuple {
        local_ip: ip,
        local_port: s.local_addr().port(),
        remote_ip: s.peer_addr().ip().to_owned(),
        remote_port: s.peer_addr().port(),
    };
    let t = tuple(&rated, IP_A);
    let st = a.tcp_state(&t).unwrap();
    assert!(
        matches!(a.congestion_state(&t), Some(SelectableFlow::Rates(_))),
        "the data path's window does not limit"
    );
    let rate = st.control_rate.expect("the control plane set a rate");
    assert!(
        rate > 0 && st.control_window > 0,
        "{rate} {}",
        st.control_window
    );
    let p = a.tcp_state(&tuple(&plain, IP_A)).unwrap();
    assert_eq!(
        (p.control_rate, p.control_window),
        (None, 0),
        "CUBIC is left alone"
    );
    let u = tuple(&unrated, IP_B);
    assert!(
        matches!(b.congestion_state(&u), Some(SelectableFlow::NewReno(_))),
        "no control-plane rates on that engine: the default"
    );
    assert_eq!(b.tcp_state(&u).unwrap().control_rate, None);
}
