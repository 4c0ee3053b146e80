//! The blocking socket API: two engines on their own threads (the runtime), applications on
//! further threads using `Read` / `Write` like `std::net::TcpStream`.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddrV4;
use std::time::Duration;

use common::*;
use flextoe::backends::mem::{MemLink, MemPort};
use flextoe::pipeline::{Engine, Runtime};
use flextoe::sim::Impairments;
use flextoe::time::SystemClock;
use sha2::{Digest, Sha256};

/// A server engine (A) and a client engine (B) on runtime threads, joined in memory.
fn runtimes() -> (Runtime<MemPort>, Runtime<MemPort>) {
    let (pa, pb) = MemLink::pair(Impairments::none());
    let clock = SystemClock::new();
    let server =
        Runtime::spawn(Engine::new(engine_config(MAC_A, IP_A), pa).unwrap(), clock).unwrap();
    let client =
        Runtime::spawn(Engine::new(engine_config(MAC_B, IP_B), pb).unwrap(), clock).unwrap();
    (server, client)
}

#[test]
fn blocking_upload_and_digest_reply() {
    let (pa, pb) = MemLink::pair(Impairments::none());
    let mut cfg_a = engine_config(MAC_A, IP_A);
    cfg_a.control.time_wait = Duration::from_millis(50);
    let mut cfg_b = engine_config(MAC_B, IP_B);
    cfg_b.control.time_wait = Duration::from_millis(50);
    // One clock for both engines and for their restarts below.
    let clock = SystemClock::new();
    let server = Runtime::spawn(Engine::new(cfg_a, pa).unwrap(), clock).unwrap();
    let client = Runtime::spawn(Engine::new(cfg_b, pb).unwrap(), clock).unwrap();

    let listener = server.host().listen(9000, 4).unwrap();
    let srv = std::thread::spawn(move || {
        let mut s = listener.accept().unwrap();
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 100_000];
        let mut n_total = 0u64;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            n_total += n as u64;
            h.update(&buf[..n]);
        }
        s.write_all(&h.finalize()).unwrap();
        s.write_all(&n_total.to_le_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(s.wait_closed(Some(Duration::from_secs(10))));
    });

    let mut c = client
        .host()
        .connect_blocking(SocketAddrV4::new(IP_A, 9000), Duration::from_secs(30))
        .unwrap();
    let mut src = Source::new(5, 16 << 20);
    loop {
        let chunk = src.pending().to_vec();
        if chunk.is_empty() {
            break;
        }
        c.write_all(&chunk).unwrap();
        src.consume(chunk.len());
    }
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).unwrap();
    assert_eq!(reply.len(), 40);
    assert_eq!(&reply[..32], &src.digest()[..]);
    assert_eq!(
        u64::from_le_bytes(reply[32..].try_into().unwrap()),
        16 << 20
    );
    srv.join().unwrap();
    assert!(c.wait_closed(Some(Duration::from_secs(10))));
    drop(c);

    // Both engines drop every flow once TIME-WAIT is over.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (mut a, mut b);
    let (mut s, mut cl) = (Some(server), Some(client));
    loop {
        a = s.take().unwrap().stop();
        b = cl.take().unwrap().stop();
        if a.flow_count() == 0 && b.flow_count() == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "flows left");
        std::thread::sleep(Duration::from_millis(20));
        s = Some(Runtime::spawn(a, clock).unwrap());
        cl = Some(Runtime::spawn(b, clock).unwrap());
    }
}

#[test]
fn connect_to_nothing_is_refused_and_errors_map_to_io_kinds() {
    let (pa, pb) = MemLink::pair(Impairments::none());
    let server = Runtime::spawn(
        Engine::new(engine_config(MAC_A, IP_A), pa).unwrap(),
        SystemClock::new(),
    )
    .unwrap();
    let client = Runtime::spawn(
        Engine::new(engine_config(MAC_B, IP_B), pb).unwrap(),
        SystemClock::new(),
    )
    .unwrap();
    let err = client
        .host()
        .connect_blocking(SocketAddrV4::new(IP_A, 1), Duration::from_secs(5))
        .unwrap_err();
    assert_eq!(err, flextoe::host::Error::ConnectionRefused);
    let io: std::io::Error = err.into();
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(matches!(
        server.host().listen(0, 1),
        Err(flextoe::host::Error::InvalidInput(_))
    ));
    let _l = server.host().listen(5, 1).unwrap();
    assert_eq!(
        server.host().listen(5, 1).err(),
        Some(flextoe::host::Error::AddrInUse(5))
    );
}

/// `Host::bind` holds a port before listening or connecting (as `bind(2)`): port 0 gets a
/// free one of the ephemeral range, a held port is in use for everyone else, a listener
/// and a connection take it over, and a binding dropped unused gives it back.
#[test]
fn a_bound_port_is_held_until_it_listens_or_connects() {
    let (server, client) = runtimes();
    let b = server.host().bind(0).unwrap();
    let port = b.port();
    assert!(port >= 49152, "{port}");
    assert_eq!(
        server.host().listen(port, 1).err(),
        Some(flextoe::host::Error::AddrInUse(port))
    );
    assert!(server.host().bind(port).is_err());
    let listener = b.listen(4).unwrap();
    assert_eq!(listener.port(), port);
    // The client connects from a port it bound first.
    let cb = client.host().bind(40_000).unwrap();
    let c = cb.connect(SocketAddrV4::new(IP_A, port)).unwrap();
    c.wait_connected(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(c.local_addr().port(), 40_000);
    let s = listener.accept().unwrap();
    assert_eq!(s.peer_addr().port(), 40_000);
    assert_eq!(
        client.host().bind(40_000).err(),
        Some(flextoe::host::Error::AddrInUse(40_000))
    );
    // Dropped unused, a binding gives its port back.
    drop(server.host().bind(5000).unwrap());
    drop(server.host().listen(5000, 1).unwrap());
    // A connect that fails its checks gives the port back too.
    let bad = client.host().bind(40_001).unwrap();
    assert!(bad.connect(SocketAddrV4::new(IP_A, 0)).is_err());
    drop(client.host().bind(40_001).unwrap());
}

/// A connection from a bound port to where an accepted connection of that port (its
/// listener gone) goes already is never tried (`TupleInUse`, Linux's `EADDRNOTAVAIL`): its
/// handshake took the accepted connection's place. The accepted connection goes on, and
/// the port is given back.
#[test]
fn a_connection_from_a_bound_port_does_not_take_an_existing_ones_place() {
    let (server, client) = runtimes();
    let listener = server.host().listen(6000, 4).unwrap();
    let mut c = client
        .host()
        .connect_blocking(SocketAddrV4::new(IP_A, 6000), Duration::from_secs(10))
        .unwrap();
    let mut s = listener.accept().unwrap();
    drop(listener);
    let clash = server
        .host()
        .bind(6000)
        .unwrap()
        .connect(s.peer_addr())
        .unwrap();
    assert_eq!(
        clash.wait_connected(Some(Duration::from_secs(10))),
        Err(flextoe::host::Error::TupleInUse)
    );
    assert_eq!(clash.status(), flextoe::host::ConnStatus::TupleInUse);
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    s.write_all(b"pong").unwrap();
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    drop(server.host().bind(6000).unwrap());
}

/// A split stream: one thread writes 32 MiB while another reads the echo at the same time
/// (with one thread and blocking calls both rings would fill and stall); dropping the write
/// half sends the FIN, after which the read half sees the end of the echo.
#[test]
fn split_stream_reads_and_writes_from_two_threads() {
    let (server, client) = runtimes();
    let listener = server.host().listen(7, 4).unwrap();
    let srv = std::thread::spawn(move || {
        let s = listener.accept().unwrap();
        let (mut r, mut w) = s.into_split();
        std::io::copy(&mut r, &mut w).unwrap()
    });
    let c = client
        .host()
        .connect_blocking(SocketAddrV4::new(IP_A, 7), Duration::from_secs(30))
        .unwrap();
    let (mut r, mut w) = c.into_split();
    const TOTAL: u64 = 32 << 20;
    let writer = std::thread::spawn(move || {
        let mut src = Source::new(11, TOTAL);
        loop {
            let chunk = src.pending().to_vec();
            if chunk.is_empty() {
                break;
            }
            w.write_all(&chunk).unwrap();
            src.consume(chunk.len());
        }
        src.digest()
        // `w` drops here: FIN.
    });
    let mut sink = Sink::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        sink.take(&buf[..n]);
    }
    let sent = writer.join().unwrap();
    assert_eq!(sink.received, TOTAL);
    assert_eq!(sink.digest(), sent);
    assert_eq!(srv.join().unwrap(), TOTAL);
    drop(r);
    let _ = client.stop();
    let _ = server.stop();
}

/// A split stream's server: reads "hello", waits (when `unread`) until the peer's next
/// request has arrived and leaves it unread, drops its read half, then writes `total`
/// bytes (more than its send ring holds) while the peer sends (when not `unread`) a
/// request after the read half went. The client reads the whole response, then returns
/// how its next read ends once the server's write half is gone.
fn split_close(unread: bool, total: u64) -> std::io::Result<usize> {
    let (server, client) = runtimes();
    let listener = server.host().listen(8080, 4).unwrap();
    let (dropped_tx, dropped_rx) = std::sync::mpsc::channel();
    let (read_all_tx, read_all_rx) = std::sync::mpsc::channel::<()>();
    let srv = std::thread::spawn(move || {
        let mut s = listener.accept().unwrap();
        let mut req = [0u8; 5];
        s.read_exact(&mut req).unwrap();
        assert_eq!(&req, b"hello");
        let (r, mut w) = s.into_split();
        if unread {
            let start = std::time::Instant::now();
            while r.readable_bytes() == 0 {
                assert!(start.elapsed() < Duration::from_secs(30));
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        drop(r);
        dropped_tx.send(()).unwrap();
        let mut src = Source::new(21, total);
        loop {
            let chunk = src.pending().to_vec();
            if chunk.is_empty() {
                break;
            }
            w.write_all(&chunk).unwrap();
            src.consume(chunk.len());
        }
        read_all_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        src.digest()
        // `w` drops here.
    });
    let mut c = client
        .host()
        .connect_blocking(SocketAddrV4::new(IP_A, 8080), Duration::from_secs(30))
        .unwrap();
    c.write_all(b"hello").unwrap();
    if unread {
        c.write_all(b"a pipelined request").unwrap();
    }
    dropped_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    if !unread {
        // Time for the engine to see the read half go, then data from the peer.
        std::thread::sleep(Duration::from_millis(50));
        c.write_all(b"a request after the read half went").unwrap();
    }
    let mut sink = Sink::default();
    let mut buf = vec![0u8; 64 * 1024];
    while sink.received < total {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "the response ended early");
        sink.take(&buf[..n]);
    }
    read_all_tx.send(()).unwrap();
    let sent = srv.join().unwrap();
    assert_eq!(sink.received, total);
    assert_eq!(sink.digest(), sent);
    let end = c.read(&mut buf);
    drop(c);
    let _ = client.stop();
    let _ = server.stop();
    end
}

/// Dropping the read half of a split stream stops nothing: data the peer sends afterwards
/// draws no RST while the write half is open, and everything the write half queued (more
/// than the send ring holds) arrives whole, then the FIN. (The RST answer to data after
/// close used to be armed by the read half alone and threw away the queued response.)
#[test]
fn dropping_the_read_half_keeps_the_write_half_and_its_data() {
    assert_eq!(split_close(false, 1 << 20).unwrap(), 0, "a FIN");
}

/// Once both halves are gone, the connection closes as a dropped stream does: data the
/// read half left unread makes it a RST (as Linux's `close`), after the write half's data.
#[test]
fn split_halves_that_left_data_unread_close_with_a_rst() {
    let end = split_close(true, 100_000).map_err(|e| e.kind());
    assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset));
}

/// A thread blocked in a read wakes with an error once the engine that holds its
/// connection stops (it waited for good: nothing changed the connection's status).
#[test]
fn a_blocked_read_wakes_with_an_error_when_the_engine_stops() {
    let (server, client) = runtimes();
    let listener = server.host().listen(8081, 4).unwrap();
    let mut c = client
        .host()
        .connect_blocking(SocketAddrV4::new(IP_A, 8081), Duration::from_secs(30))
        .unwrap();
    let _accepted = listener.accept().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        let _ = done_tx.send(c.read(&mut buf).map_err(|e| e.kind()));
    });
    std::thread::sleep(Duration::from_millis(50));
    drop(client.stop());
    let got = done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the blocked read returned");
    assert_eq!(got, Err(std::io::ErrorKind::ConnectionReset));
    let _ = server.stop();
}
