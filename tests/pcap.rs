//! `PcapPort`: a capture of a 1 MiB upload between two engines holds every frame the
//! captured engine received and sent, each one a valid Ethernet frame, in a file that
//! tshark reads without complaint (when tshark is installed).

mod common;

use std::io::{Read, Write};
use std::net::SocketAddrV4;
use std::process::Command;
use std::time::Duration;

use common::*;
use flextoe::backends::mem::MemLink;
use flextoe::backends::pcap::PcapPort;
use flextoe::pipeline::{Engine, Runtime};
use flextoe::sim::Impairments;
use flextoe::time::SystemClock;
use flextoe::wire::{self, Parsed};

/// The records of a classic little-endian pcap file.
fn records(bytes: &[u8]) -> Vec<&[u8]> {
    assert_eq!(&bytes[0..4], &0xa1b2_c3d4u32.to_le_bytes(), "magic");
    assert_eq!(
        u32::from_le_bytes(bytes[20..24].try_into().unwrap()),
        1,
        "Ethernet"
    );
    let mut off = 24;
    let mut v = Vec::new();
    while off < bytes.len() {
        let incl = u32::from_le_bytes(bytes[off + 8..off + 12].try_into().unwrap()) as usize;
        let orig = u32::from_le_bytes(bytes[off + 12..off + 16].try_into().unwrap()) as usize;
        assert_eq!(incl, orig, "nothing truncated");
        v.push(&bytes[off + 16..off + 16 + incl]);
        off += 16 + incl;
    }
    assert_eq!(off, bytes.len(), "no partial record");
    v
}

#[test]
fn capture_holds_every_frame() {
    let path = std::env::temp_dir().join(format!("flextoe-pcap-{}.pcap", std::process::id()));
    let (pa, pb) = MemLink::pair(Impairments::none());
    let clock = SystemClock::new();
    let server = Runtime::spawn(
        Engine::new(
            engine_config(MAC_A, IP_A),
            PcapPort::create(pa, &path).unwrap(),
        )
        .unwrap(),
        clock,
    )
    .unwrap();
    let client =
        Runtime::spawn(Engine::new(engine_config(MAC_B, IP_B), pb).unwrap(), clock).unwrap();
    let listener = server.host().listen(9000, 4).unwrap();
    let srv = std::thread::spawn(move || {
        let mut s = listener.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        let mut n = 0u64;
        loop {
            let k = s.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        s.write_all(&n.to_le_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        s.wait_closed(Some(Duration::from_secs(5)));
    });
    let mut s = client
        .host()
        .connect_blocking(SocketAddrV4::new(IP_A, 9000), Duration::from_secs(30))
        .unwrap();
    s.write_all(&vec![7u8; 1 << 20]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut count = [0u8; 8];
    s.read_exact(&mut count).unwrap();
    assert_eq!(u64::from_le_bytes(count), 1 << 20);
    srv.join().unwrap();
    drop(s);
    let _ = client.stop();
    let mut e = server.stop();
    let st = e.stats();
    e.port_mut().flush().unwrap();
    assert!(e.port().error().is_none());
    let captured = e.port().frames();
    drop(e);
    let bytes = std::fs::read(&path).unwrap();
    let recs = records(&bytes);
    assert_eq!(recs.len() as u64, captured);
    assert_eq!(captured, st.rx_frames + st.tx_frames, "{st}");
    let mut payload = 0usize;
    for r in &recs {
        match wire::parse_frame(r).expect("every captured frame parses") {
            Parsed::Tcp(t) => payload += t.summary.payload_len as usize,
            Parsed::Arp(_) => {}
        }
    }
    assert!(
        payload >= (1 << 20) + 8,
        "payload in the capture: {payload}"
    );
    let tshark = Command::new("tshark")
        .args([
            "-r",
            &path.to_string_lossy(),
            "-o",
            "tcp.check_checksum:TRUE",
        ])
        .args(["-Y", "_ws.malformed || tcp.checksum.status == 0"])
        .output();
    if let Ok(o) = tshark {
        assert!(o.status.success());
        assert!(
            o.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    let _ = std::fs::remove_file(&path);
}
