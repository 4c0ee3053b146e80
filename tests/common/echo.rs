//! Echo over real sockets of a running engine: a server that echoes one connection, and a
//! client that streams a verified byte sequence through an echo and checks what returns.

use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use flextoe::host::{Host, Stream};

use super::{Sink, Source};

/// The engine's echo server on `port` until one connection has closed; returns the bytes
/// echoed.
pub fn echo_server(host: &Host, port: u16) -> std::thread::JoinHandle<u64> {
    let l = host.listen(port, 4).expect("listen");
    std::thread::spawn(move || {
        let mut s = l.accept().expect("accept");
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            let k = s.read(&mut buf).expect("read");
            if k == 0 {
                break;
            }
            n += k as u64;
            s.write_all(&buf[..k]).expect("write");
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        s.wait_closed(Some(Duration::from_secs(10)));
        n
    })
}

/// The engine's echo server on `port` for `n` connections at once (a thread each) until
/// all have closed; returns the bytes echoed on each.
pub fn echo_server_n(host: &Host, port: u16, n: usize) -> std::thread::JoinHandle<Vec<u64>> {
    let l = host.listen(port, n).expect("listen");
    std::thread::spawn(move || {
        let workers: Vec<_> = (0..n)
            .map(|_| {
                let mut s = l.accept().expect("accept");
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut total = 0u64;
                    loop {
                        let k = s.read(&mut buf).expect("read");
                        if k == 0 {
                            break;
                        }
                        total += k as u64;
                        s.write_all(&buf[..k]).expect("write");
                    }
                    s.shutdown(std::net::Shutdown::Write).unwrap();
                    s.wait_closed(Some(Duration::from_secs(10)));
                    total
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    })
}

/// Send `bytes` of a seeded stream through an echo on `s`, close the sending side, read
/// until the echo closes, and check that every byte came back in order (SHA-256). Panics
/// with `context()` on an error or after `timeout` without completion.
pub fn echo_through(
    s: &mut Stream,
    seed: u64,
    bytes: u64,
    timeout: Duration,
    context: &mut dyn FnMut() -> String,
) {
    s.set_nonblocking(true);
    let mut src = Source::new(seed, bytes);
    let mut sink = Sink::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut closed = false;
    let deadline = std::time::Instant::now() + timeout;
    while !sink.eof {
        assert!(
            std::time::Instant::now() < deadline,
            "transfer stalled at {} bytes\n{}",
            sink.received,
            context()
        );
        let mut progress = false;
        let data = src.pending();
        if !data.is_empty() {
            match s.write(data) {
                Ok(n) => {
                    src.consume(n);
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!(
                    "write: {e} after {} bytes echoed\n{}",
                    sink.received,
                    context()
                ),
            }
        } else if !closed {
            s.shutdown(std::net::Shutdown::Write).unwrap();
            closed = true;
        }
        match s.read(&mut buf) {
            Ok(0) => sink.eof = true,
            Ok(n) => {
                sink.take(&buf[..n]);
                progress = true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e} after {} bytes\n{}", sink.received, context()),
        }
        if !progress {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    assert_eq!(sink.received, bytes);
    assert_eq!(
        sink.digest(),
        src.digest(),
        "the echo differs from what was sent"
    );
}
