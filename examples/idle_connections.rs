//! What idle connections cost an engine: the server's `poll` with a timer tick on every
//! call (the clock advances by `TIMER_TICK` each time), with 1 to 4,000 established, idle
//! connections.
//!
//! ```text
//! cargo run --release --example idle_connections
//! ```
//!
//! Two engines over `ArenaLink` (4 KiB rings per connection), the client opening the
//! connections; then the server alone is polled 20,000 times. It prints the time per poll
//! and how many connections the timers looked at per tick (`ControlStats::timer_visits`):
//! the timers keep looking every tick only at connections with something to time, and set
//! the idle ones aside until their next deadline (at most 100 ms away). Then 200,000
//! polls 1 us apart (a timer tick on one in a hundred): what an idle `poll` costs.

use std::net::{Ipv4Addr, SocketAddrV4};

use flextoe::backends::arena_link::ArenaLink;
use flextoe::control::TIMER_TICK;
use flextoe::pipeline::{Engine, EngineConfig};
use flextoe::time::Instant;
use flextoe::wire::MacAddr;

const SERVER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const CLIENT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn config(mac: MacAddr, ip: Ipv4Addr, peer: (Ipv4Addr, MacAddr)) -> EngineConfig {
    let mut c = EngineConfig::new(mac, ip).neighbor(peer.0, peer.1);
    c.rx_buffer = 4096;
    c.tx_buffer = 4096;
    c
}

fn main() {
    let tick = TIMER_TICK.as_micros() as u64;
    println!("server poll with a timer tick each, idle connections (and polls 1 us apart)");
    for n in [1usize, 100, 1000, 4000] {
        let (sp, cp) = ArenaLink::pair(32 * 1024).expect("link");
        let mut server = Engine::new(config(SERVER_MAC, SERVER_IP, (CLIENT_IP, CLIENT_MAC)), sp)
            .expect("server");
        let mut client = Engine::new(config(CLIENT_MAC, CLIENT_IP, (SERVER_IP, SERVER_MAC)), cp)
            .expect("client");
        let listener = server.host().listen(80, 65535).expect("listen");
        let mut us = 0u64;
        let mut clients = Vec::new();
        let mut accepted = Vec::new();
        let mut step = |server: &mut Engine<_>, client: &mut Engine<_>, d: u64| {
            us += d;
            client.poll(Instant::from_micros(us));
            server.poll(Instant::from_micros(us));
        };
        for _ in 0..n {
            clients.push(
                client
                    .host()
                    .connect(SocketAddrV4::new(SERVER_IP, 80))
                    .expect("connect"),
            );
            for _ in 0..4 {
                step(&mut server, &mut client, 10);
            }
            while let Ok(Some(s)) = listener.try_accept() {
                accepted.push(s);
            }
        }
        for _ in 0..2000 {
            step(&mut server, &mut client, tick);
            while let Ok(Some(s)) = listener.try_accept() {
                accepted.push(s);
            }
        }
        assert_eq!(accepted.len(), n, "every connection established");
        let polls = 20_000u64;
        let visits = server.stats().control.timer_visits;
        let t0 = std::time::Instant::now();
        for _ in 0..polls {
            us += tick;
            server.poll(Instant::from_micros(us));
        }
        let el = t0.elapsed();
        let visits = server.stats().control.timer_visits - visits;
        // Polls 1 us apart: a tick on one in a hundred.
        let t0 = std::time::Instant::now();
        for _ in 0..polls * 10 {
            us += 1;
            server.poll(Instant::from_micros(us));
        }
        let between = t0.elapsed();
        println!(
            "  {n:>5} connections: {:>8.0} ns per poll, {:>7.2} connections looked at per tick; {:>5.0} ns per poll 1 us apart",
            el.as_nanos() as f64 / polls as f64,
            visits as f64 / polls as f64,
            between.as_nanos() as f64 / (polls * 10) as f64
        );
    }
}
