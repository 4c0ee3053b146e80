//! Quickstart: an echo server on one engine, a client on another, joined by the in-memory
//! link. The client streams 256 MiB (override with `--mib N`), the server echoes every byte,
//! and both ends verify what they received by SHA-256. Prints throughput and per-stage
//! counters. The engines are joined by a zero-copy link (one shared frame arena).
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! Everything runs on one thread: both engines are polled in turn (the inline runtime), and
//! the applications use nonblocking streams in the same loop.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant as WallInstant;

use flextoe::backends::arena_link::ArenaLink;
use flextoe::pipeline::{EngineConfig, Pipeline};
use flextoe::sim::Rng;
use flextoe::time::{Clock, SystemClock};
use flextoe::wire::MacAddr;
use sha2::{Digest, Sha256};

const SERVER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
const CLIENT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const PORT: u16 = 7;

fn main() {
    let mib: u64 = std::env::args()
        .skip_while(|a| a != "--mib")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let total = mib * 1024 * 1024;

    // A zero-copy link: both engines share one frame arena and pass frame handles, so the
    // run measures the engines (examples/features.rs uses `MemLink` for loss and delay).
    let (server_port, client_port) = ArenaLink::pair(32 * 1024).expect("link");
    // The default pipeline on the inline runtime (`Engine::new(cfg, port)` is the short form);
    // examples/custom_pipeline.rs adds user stages and policies to the same builder.
    let mut server = Pipeline::builder(EngineConfig::new(SERVER_MAC, SERVER_IP), server_port)
        .build()
        .expect("server engine");
    let mut client = Pipeline::builder(EngineConfig::new(CLIENT_MAC, CLIENT_IP), client_port)
        .build()
        .expect("client engine");

    let listener = server.host().listen(PORT, 16).expect("listen");
    let mut conn = client
        .host()
        .connect(SocketAddrV4::new(SERVER_IP, PORT))
        .expect("connect");
    conn.set_nonblocking(true);

    let clock = SystemClock::new();
    let mut accepted = None;
    let mut rng = Rng::new(2022);
    let mut out_buf: Vec<u8> = Vec::new();
    let mut out_off = 0;
    let (mut sent, mut echoed_back) = (0u64, 0u64);
    let mut sent_hash = Sha256::new();
    let mut server_hash = Sha256::new();
    let mut back_hash = Sha256::new();
    let mut echo_buf = vec![0u8; 256 * 1024];
    let mut echo_pending: Vec<u8> = Vec::new();
    let mut read_buf = vec![0u8; 256 * 1024];
    let mut server_rx = 0u64;
    let mut closed_write = false;
    let mut server_done = false;

    let start = WallInstant::now();
    loop {
        let now = clock.now();
        client.poll(now);
        server.poll(now);

        // Client: send the stream.
        while sent < total {
            if out_off == out_buf.len() {
                let n = (total - sent).min(64 * 1024) as usize;
                out_buf.clear();
                while out_buf.len() < n {
                    out_buf.extend_from_slice(&rng.next_u64().to_le_bytes());
                }
                out_buf.truncate(n);
                sent_hash.update(&out_buf);
                out_off = 0;
            }
            match conn.write(&out_buf[out_off..]) {
                Ok(n) => {
                    out_off += n;
                    if out_off == out_buf.len() {
                        sent += out_buf.len() as u64;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("client write: {e}"),
            }
        }
        if sent == total && !closed_write {
            conn.shutdown(std::net::Shutdown::Write).expect("shutdown");
            closed_write = true;
        }

        // Server: echo.
        if accepted.is_none() {
            if let Some(mut s) = listener.try_accept().expect("accept") {
                s.set_nonblocking(true);
                accepted = Some(s);
            }
        }
        if let Some(s) = accepted.as_mut() {
            loop {
                if !echo_pending.is_empty() {
                    match s.write(&echo_pending) {
                        Ok(n) => {
                            echo_pending.drain(..n);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("server write: {e}"),
                    }
                    if !echo_pending.is_empty() {
                        break;
                    }
                }
                match s.read(&mut echo_buf) {
                    Ok(0) => {
                        if !server_done {
                            s.shutdown(std::net::Shutdown::Write).expect("shutdown");
                            server_done = true;
                        }
                        break;
                    }
                    Ok(n) => {
                        server_rx += n as u64;
                        server_hash.update(&echo_buf[..n]);
                        echo_pending.extend_from_slice(&echo_buf[..n]);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("server read: {e}"),
                }
            }
        }

        // Client: read the echo.
        let mut eof = false;
        loop {
            match conn.read(&mut read_buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    echoed_back += n as u64;
                    back_hash.update(&read_buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("client read: {e}"),
            }
        }
        if eof {
            break;
        }
        assert!(start.elapsed().as_secs() < 300, "quickstart took too long");
    }
    let elapsed = start.elapsed();

    let sent_digest = sent_hash.finalize();
    assert_eq!(server_rx, total, "server received everything");
    assert_eq!(echoed_back, total, "client received the whole echo");
    assert_eq!(
        server_hash.finalize(),
        sent_digest,
        "server content matches"
    );
    assert_eq!(back_hash.finalize(), sent_digest, "echo content matches");

    let secs = elapsed.as_secs_f64();
    let moved = 2 * total;
    println!(
        "echoed {} MiB: {} MiB moved over the in-memory link in {:.2} s",
        mib,
        moved / (1024 * 1024),
        secs
    );
    println!(
        "throughput: {:.2} Gbit/s of payload ({:.0} MiB/s), content verified by SHA-256 on both ends",
        moved as f64 * 8.0 / secs / 1e9,
        moved as f64 / secs / (1024.0 * 1024.0)
    );
    println!("\nserver engine:\n{}", server.stats());
    println!("\nclient engine:\n{}", client.stats());
}
