//! `Stream::batch`: reads and writes that tell the engine once, when the batch ends (or
//! before a call in it has to wait).

mod common;

use std::io::{Read, Write};
use std::net::SocketAddrV4;
use std::time::Duration;

use common::*;
use flextoe::backends::arena_link::ArenaLink;
use flextoe::pipeline::{Engine, Runtime};
use flextoe::sim::VirtualClock;
use flextoe::time::{Clock, SystemClock};
use flextoe::Stream;

/// Two inline engines over a shared arena with a connection between them, nonblocking on
/// both ends: (client stream, server stream, a function that polls both `n` times).
fn connected() -> (Stream, Stream, impl FnMut(usize)) {
    let (pa, pb) = ArenaLink::pair(4096).unwrap();
    let clock = VirtualClock::new();
    let mut server = Engine::new(engine_config(MAC_A, IP_A), pa).unwrap();
    let mut client = Engine::new(engine_config(MAC_B, IP_B), pb).unwrap();
    let listener = server.host().listen(7, 4).unwrap();
    let mut c = client.host().connect(SocketAddrV4::new(IP_A, 7)).unwrap();
    c.set_nonblocking(true);
    let mut poll = move |n: usize| {
        for _ in 0..n {
            clock.advance(Duration::from_micros(10));
            client.poll(clock.now());
            server.poll(clock.now());
        }
    };
    poll(50);
    let mut s = listener.try_accept().unwrap().expect("accepted");
    s.set_nonblocking(true);
    (c, s, poll)
}

#[test]
fn a_batch_tells_the_engine_when_it_ends() {
    let (mut c, mut s, mut poll) = connected();

    // Written in a batch: the engine is not told, nothing leaves.
    let mut b = c.batch();
    for i in 0..10u8 {
        b.write_all(&[i; 10]).unwrap();
    }
    poll(50);
    assert_eq!(s.readable_bytes(), 0, "sent before the batch ended");
    // The batch ends: one doorbell, all 100 bytes go.
    drop(b);
    poll(50);
    let mut got = vec![0u8; 200];
    let n = s.read(&mut got).unwrap();
    let want: Vec<u8> = (0..10u8).flat_map(|i| [i; 10]).collect();
    assert_eq!(&got[..n], &want[..]);

    // `ring` (and `flush`) tell the engine mid-batch.
    let mut b = c.batch();
    b.write_all(b"abc").unwrap();
    b.flush().unwrap();
    poll(50);
    b.write_all(b"def").unwrap();
    poll(50);
    assert_eq!(s.read(&mut got).unwrap(), 3);
    assert_eq!(&got[..3], b"abc");
    drop(b);
    poll(50);
    assert_eq!(s.read(&mut got).unwrap(), 3);
    assert_eq!(&got[..3], b"def");
}

/// A batch that returns `WouldBlock` has told the engine first, and a batch that was
/// forgotten instead of dropped ends at the stream's next call.
#[test]
fn would_block_and_forgotten_batches_leave_nothing_untold() {
    let (mut c, mut s, mut poll) = connected();

    // Fill the send ring in a batch until it would block: what was written is on its way.
    let mut b = c.batch();
    let chunk = [7u8; 4096];
    let mut written = 0;
    loop {
        match b.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    poll(50);
    assert!(s.readable_bytes() > 0, "nothing sent of {written} bytes");
    drop(b);
    let mut got = vec![0u8; 1 << 20];
    let mut total = 0;
    for _ in 0..200 {
        while let Ok(n) = s.read(&mut got) {
            total += n;
        }
        poll(5);
    }
    assert_eq!(total, written);

    // A forgotten batch: its writes wait for the next call on the stream.
    let mut b = c.batch();
    b.write_all(b"hello").unwrap();
    std::mem::forget(b);
    poll(50);
    assert_eq!(s.readable_bytes(), 0);
    c.flush().unwrap();
    poll(50);
    assert_eq!(s.read(&mut got).unwrap(), 5);
    assert_eq!(&got[..5], b"hello");
}

/// A blocking write in a batch that fills the send ring tells the engine before it waits:
/// without that it would wait for ever on an engine that never heard of the data.
#[test]
fn a_blocking_batch_rings_before_it_waits() {
    let (pa, pb) = ArenaLink::pair(4096).unwrap();
    let clock = SystemClock::new();
    let server =
        Runtime::spawn(Engine::new(engine_config(MAC_A, IP_A), pa).unwrap(), clock).unwrap();
    let client =
        Runtime::spawn(Engine::new(engine_config(MAC_B, IP_B), pb).unwrap(), clock).unwrap();
    let listener = server.host().listen(9, 4).unwrap();
    const TOTAL: u64 = 8 << 20;
    let srv = std::thread::spawn(move || {
        let mut s = listener.accept().unwrap();
        let mut sink = Sink::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut batch = s.batch();
        loop {
            let n = batch.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            sink.take(&buf[..n]);
        }
        sink.digest()
    });
    let mut c = client
        .host()
        .connect_blocking(SocketAddrV4::new(IP_A, 9), Duration::from_secs(5))
        .unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        let mut src = Source::new(11, TOTAL);
        {
            let mut b = c.batch();
            while !src.pending().is_empty() {
                let chunk = src.pending().to_vec();
                b.write_all(&chunk).unwrap();
                src.consume(chunk.len());
            }
        }
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let _ = done_tx.send(src.digest());
        c
    });
    let sent = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the batched writer finished within 60 s");
    let received = srv.join().unwrap();
    assert_eq!(received, sent);
    drop(writer.join().unwrap());
}
