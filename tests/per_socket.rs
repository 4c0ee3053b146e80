//! Congestion control as a socket option: an engine whose policy is `Selectable` gives each
//! connection the algorithm its socket asked for (`Host::connect_with`,
//! `Host::listen_with`) and the policy's default to the others.

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
