//! The AF_PACKET port itself, on a veth pair: bursts larger than one system call, an arena
//! out of frames, frames too large for an arena frame, frames that carry the engine's own
//! source address, an interface taken down.

use super::*;
use flextoe::buf::{Frame, FrameArena};
use flextoe::time::Instant as EngineInstant;

/// An experimental EtherType (IEEE 802 local), so that nothing else the kernel sends on the
/// pair is taken for a test frame.
const TEST_TYPE: [u8; 2] = [0x88, 0xb5];
const OTHER_MAC: MacAddr = MacAddr([0x02, 0x66, 0x74, 0x6f, 0x65, 0x02]);

/// A test frame: broadcast, from `src`, `len` bytes, its sequence number `seq` after the
/// EtherType and the rest a pattern of `seq`.
fn test_frame(src: MacAddr, seq: u16, len: usize) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&TEST_TYPE);
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend((f.len()..len).map(|i| (i as u16).wrapping_mul(seq | 1) as u8));
    f
}

/// Both ends of a veth lab as AF_PACKET ports: (the Linux side's, the engine side's); the
/// engine side's skips frames from `MAC`.
fn ports(lab: &VethLab) -> (AfPacketPort, AfPacketPort) {
    let (a, b) = (lab.linux_if.clone(), lab.engine_if.clone());
    let tx = in_netns(&lab.linux.0, move || AfPacketPort::open(&a, OTHER_MAC)).expect("port a");
    let rx = in_netns(&lab.engine.0, move || AfPacketPort::open(&b, MAC)).expect("port b");
    (tx, rx)
}

fn send(port: &mut AfPacketPort, arena: &FrameArena, frames: &[Vec<u8>]) -> usize {
    let mut out: Vec<Frame> = frames
        .iter()
        .map(|f| arena.alloc_copy(f).expect("arena frame"))
        .collect();
    let n = port.send(EngineInstant::ZERO, arena, &mut out);
    assert!(out.is_empty(), "send takes every frame");
    n
}

/// Test frames received within two seconds, until `want` (bytes each), freeing the rest.
fn receive(port: &mut AfPacketPort, arena: &FrameArena, want: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut got = Vec::new();
    let mut burst = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        let n = port.recv(EngineInstant::ZERO, arena, &mut burst, 256);
        assert_eq!(n, burst.len(), "recv counts what it appends");
        for f in burst.drain(..) {
            let d = arena.data(&f);
            if d.len() >= 14 && d[12..14] == TEST_TYPE {
                got.push(d.to_vec());
            }
            arena.free(f);
        }
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    got
}

/// The interface's promiscuity count (`ip -d link show`).
fn promiscuity(ns: &Netns, dev: &str) -> u32 {
    let out = sh(&["ip", "-n", &ns.0, "-d", "link", "show", "dev", dev]);
    let at = out.find("promiscuity ").expect("ip -d shows promiscuity") + 12;
    out[at..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count")
}

/// Everything one `recv` of at most `max` returns, with the test frames among it.
fn recv_once(port: &mut AfPacketPort, arena: &FrameArena, max: usize) -> (usize, Vec<Vec<u8>>) {
    let mut burst = Vec::new();
    let n = port.recv(EngineInstant::ZERO, arena, &mut burst, max);
    assert_eq!(n, burst.len(), "recv counts what it appends");
    let mut test = Vec::new();
    for f in burst.drain(..) {
        let d = arena.data(&f);
        if d.len() >= 14 && d[12..14] == TEST_TYPE {
            test.push(d.to_vec());
        }
        arena.free(f);
    }
    (n, test)
}

#[test]
fn af_packet_moves_bursts_larger_than_one_system_call_and_waits_for_frames() {
    let Some(lab) = VethLab::new() else {
        return;
    };
    let (mut a, mut b) = ports(&lab);
    // Promiscuous while open: the engine's MAC is not the interface's.
    assert_eq!(promiscuity(&lab.engine, &lab.engine_if), 1);
    let arena = FrameArena::new(1024).unwrap();
    // 150 frames in one `send`: five `sendmmsg` calls of at most 32; every size from the
    // smallest Ethernet frame to the largest.
    let frames: Vec<Vec<u8>> = (0..150u16)
        .map(|i| test_frame(OTHER_MAC, i, 60 + usize::from(i) * 1454 / 149))
        .collect();
    assert_eq!(send(&mut a, &arena, &frames), 150);
    let st = a.stats();
    assert_eq!((st.tx, st.tx_calls, st.tx_errors), (150, 5, 0), "{st:?}");
    // All of them waiting: one `recv` takes them in a few calls (4 frames, then 32 a call).
    std::thread::sleep(Duration::from_millis(50));
    let (n, got) = recv_once(&mut b, &arena, 256);
    assert!(got == frames, "every frame, in order, byte for byte");
    let calls = b.stats().rx_calls;
    assert!(n >= 150 && calls <= 8, "{n} frames in {calls} calls");
    assert_eq!(arena.in_use(), 0, "no frame kept by either port");

    // A frame the interface refuses (past the MTU) fails alone: counted, the others go.
    let mixed = [
        test_frame(OTHER_MAC, 0, 100),
        test_frame(OTHER_MAC, 1, 1600),
        test_frame(OTHER_MAC, 2, 100),
    ];
    assert_eq!(send(&mut a, &arena, &mixed), 2);
    assert_eq!(a.stats().tx_errors, 1, "{:?}", a.stats());
    let got = receive(&mut b, &arena, 2);
    assert!(
        got == [mixed[0].clone(), mixed[2].clone()],
        "the two that fit"
    );

    // A `recv` takes no more than asked; the rest waits for the next.
    let five: Vec<Vec<u8>> = (0..5u16).map(|i| test_frame(OTHER_MAC, i, 80)).collect();
    assert_eq!(send(&mut a, &arena, &five), 5);
    std::thread::sleep(Duration::from_millis(50));
    let (n, got) = recv_once(&mut b, &arena, 3);
    assert_eq!(n, 3);
    assert!(got == five[..3], "the first three");
    assert!(
        receive(&mut b, &arena, 2) == five[3..],
        "then the other two"
    );

    // An arena out of frames: a poll with nothing waiting counts nothing; with frames
    // waiting it counts once and takes none; they arrive once frames are free.
    let small = FrameArena::new(8).unwrap();
    let mut held = Vec::new();
    assert_eq!(small.alloc_burst(8, &mut held), 8);
    assert_eq!(recv_once(&mut b, &small, 32).0, 0);
    assert_eq!(b.stats().rx_no_buffer, 0, "nothing waited");
    let more: Vec<Vec<u8>> = (0..5u16).map(|i| test_frame(OTHER_MAC, i, 100)).collect();
    assert_eq!(send(&mut a, &arena, &more), 5);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(recv_once(&mut b, &small, 32).0, 0);
    assert_eq!(b.stats().rx_no_buffer, 1, "{:?}", b.stats());
    small.free_all(&mut held);
    let got = receive(&mut b, &small, 5);
    assert!(got == more, "the frames that waited, in order");
    assert_eq!(small.in_use(), 0);
    drop(b);
    assert_eq!(
        promiscuity(&lab.engine, &lab.engine_if),
        0,
        "undone at close"
    );
}

#[test]
fn af_packet_drops_oversized_frames_and_its_own_and_counts_failed_receives() {
    let Some(lab) = VethLab::new() else {
        return;
    };
    // An MTU above what an arena frame holds after its headroom.
    for (ns, dev) in [(&lab.linux, &lab.linux_if), (&lab.engine, &lab.engine_if)] {
        sh(&["ip", "-n", &ns.0, "link", "set", dev, "mtu", "4000"]);
    }
    let (_, mut b) = ports(&lab);
    let arena = FrameArena::new(64).unwrap();
    let big = test_frame(OTHER_MAC, 1, 3000);
    let after = test_frame(OTHER_MAC, 2, 100);
    let own = test_frame(MAC, 3, 100);
    // Sent by Python (an arena frame cannot hold the big one).
    let hex = |f: &[u8]| f.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let prog = format!(
        "import socket\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('{}',0))\n\
         for h in ['{}','{}','{}']: s.send(bytes.fromhex(h))\n",
        lab.linux_if,
        hex(&big),
        hex(&own),
        hex(&after)
    );
    sh(&lab.linux.exec(&[python(), "-c", &prog]));
    let got = receive(&mut b, &arena, 1);
    assert!(
        got == vec![after],
        "only the frame that fits and is not ours"
    );
    let st = b.stats();
    assert_eq!(
        (st.rx_oversize, st.rx_own, st.rx_errors),
        (1, 1, 0),
        "{st:?}"
    );

    // The interface taken down under the socket: the receive fails, counted, nothing read.
    sh(&[
        "ip",
        "-n",
        &lab.engine.0,
        "link",
        "set",
        &lab.engine_if,
        "down",
    ]);
    let mut burst = Vec::new();
    assert_eq!(b.recv(EngineInstant::ZERO, &arena, &mut burst, 32), 0);
    assert_eq!(b.stats().rx_errors, 1, "{:?}", b.stats());
    assert_eq!(arena.in_use(), 0);
}
