//! The AF_PACKET port's two ways to receive, on one veth end, in one run: a receive ring
//! shared with the kernel (`AfPacketConfig::rx_ring`) against a `recvmmsg` per burst.
//!
//! ```text
//! sudo target/release/examples/af_packet_rx --rounds 15 --frames 1000
//! ```
//!
//! (Build with `cargo build --release --features af_packet --example af_packet_rx`.)
//! Two ports are open on the same interface, one of each kind: the kernel gives each a copy
//! of every frame. A sender on the other end of the veth pair puts `--frames` frames in
//! both; then each port's `recv` is asked for 32 frames at a time (the engine's burst) until
//! it has taken them all into arena frames, which are freed, and the time that takes is
//! measured, the side that goes first alternating by round. Each port works as it does
//! under an engine: the `recvmmsg` side offers 4 frames to a poll's first call and 32 to
//! the calls after a full one (so a burst of 32 takes two calls), the ring side copies the
//! frames out of the ring into the arena frames (where the kernel copies them for
//! `recvmmsg`). What the kernel does before the frames can be taken (queueing the socket
//! buffers for `recvmmsg`, copying into the ring for the other) runs in the sender's
//! system call and is timed on neither side. Then each port is polled `--empty` times with
//! nothing waiting: the common case of a polling engine between requests. Medians over the
//! rounds, with min and max, and the ring's speed over `recvmmsg`'s.

#[cfg(feature = "af_packet")]
#[path = "../tests/common/lab.rs"]
#[allow(dead_code)]
mod lab;

#[cfg(feature = "af_packet")]
mod run {
    use std::time::{Duration, Instant};

    use clap::Parser;
    use flextoe::backends::af_packet::{AfPacketConfig, AfPacketPort};
    use flextoe::backends::netns::in_netns;
    use flextoe::backends::Port;
    use flextoe::buf::{Frame, FrameArena};
    use flextoe::time::Instant as EngineInstant;
    use flextoe::wire::MacAddr;

    use crate::lab::VethLab;

    #[derive(Parser, Debug)]
    #[command(about = "AF_PACKET receive: a ring shared with the kernel against recvmmsg")]
    struct Args {
        /// Interleaved rounds.
        #[arg(long, default_value_t = 15)]
        rounds: usize,
        /// Frames each round, of each size (at most the ring's 1024 slots).
        #[arg(long, default_value_t = 1000)]
        frames: usize,
        /// Polls with nothing waiting, each round.
        #[arg(long, default_value_t = 100_000)]
        empty: usize,
    }

    const SENDER: MacAddr = MacAddr([0x02, 0x66, 0x74, 0x6f, 0x65, 0x02]);
    const ENGINE: MacAddr = MacAddr([0x02, 0x66, 0x74, 0x6f, 0x65, 0x01]);
    /// An experimental EtherType (IEEE 802 local).
    const TEST_TYPE: [u8; 2] = [0x88, 0xb5];

    fn frame(len: usize, seq: usize) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&SENDER.0);
        f.extend_from_slice(&TEST_TYPE);
        f.extend((f.len()..len).map(|i| (i ^ seq) as u8));
        f
    }

    /// Take `want` test frames off `port` in bursts of 32 (the receive calls and the frees
    /// timed, not the waits); returns the time and the frames taken (short of `want` if
    /// none came for 200 ms).
    fn drain(port: &mut AfPacketPort, arena: &FrameArena, want: usize) -> (Duration, usize) {
        let mut burst: Vec<Frame> = Vec::with_capacity(64);
        let (mut got, mut idle) = (0, 0u32);
        let mut spent = Duration::ZERO;
        while got < want && idle < 200 {
            let t = Instant::now();
            let n = port.recv(EngineInstant::ZERO, arena, &mut burst, 32);
            for f in burst.drain(..) {
                got += usize::from(arena.data(&f)[12..14] == TEST_TYPE);
                arena.free(f);
            }
            spent += t.elapsed();
            if n == 0 {
                std::thread::sleep(Duration::from_millis(1));
                idle += 1;
            }
        }
        (spent, got)
    }

    fn median(v: &mut [f64]) -> (f64, f64, f64) {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    }

    pub fn main() {
        let mut args = Args::parse();
        args.rounds = args.rounds.max(1);
        args.empty = args.empty.max(1);
        let Some(lab) = VethLab::new() else {
            eprintln!("needs root and ip, ethtool, nft");
            std::process::exit(2);
        };
        let frames = args.frames.min(1000);
        let a = lab.linux_if.clone();
        let mut tx =
            in_netns(&lab.linux.0, move || AfPacketPort::open(&a, SENDER)).expect("sender");
        let open = |rx_ring| {
            let b = lab.engine_if.clone();
            let cfg = AfPacketConfig {
                rx_ring,
                ..AfPacketConfig::default()
            };
            in_netns(&lab.engine.0, move || {
                AfPacketPort::open_with(&b, ENGINE, &cfg)
            })
            .expect("receiver")
        };
        let mut ports = [open(true), open(false)];
        let arena = FrameArena::new(4096).expect("arena");
        println!(
            "AF_PACKET receive on one veth end: ring (rx_ring) against recvmmsg, {} rounds",
            args.rounds
        );
        println!(
            "{:<26} {:>22} {:>22} {:>18}",
            "", "ring", "recvmmsg", "ring speed / recvmmsg"
        );
        for len in [60usize, 1514] {
            let mut ns = [Vec::new(), Vec::new()];
            for round in 0..args.rounds {
                let batch: Vec<Vec<u8>> = (0..frames).map(|i| frame(len, i)).collect();
                for chunk in batch.chunks(100) {
                    let mut out: Vec<Frame> = chunk
                        .iter()
                        .map(|f| arena.alloc_copy(f).expect("arena frame"))
                        .collect();
                    tx.send(EngineInstant::ZERO, &arena, &mut out);
                    std::thread::sleep(Duration::from_millis(2));
                }
                std::thread::sleep(Duration::from_millis(20));
                for k in 0..2 {
                    let side = (k + round) % 2;
                    let (t, got) = drain(&mut ports[side], &arena, frames);
                    assert_eq!(got, frames, "side {side} round {round}: frames lost");
                    ns[side].push(t.as_nanos() as f64 / frames as f64);
                }
            }
            let (r, rmin, rmax) = median(&mut ns[0]);
            let (c, cmin, cmax) = median(&mut ns[1]);
            println!(
                "{:<26} {:>22} {:>22} {:>18}",
                format!("{len}-byte frames, ns each"),
                format!("{r:.1} ({rmin:.1}-{rmax:.1})"),
                format!("{c:.1} ({cmin:.1}-{cmax:.1})"),
                format!("{:.2}", c / r)
            );
        }
        let mut ns = [Vec::new(), Vec::new()];
        let mut burst = Vec::new();
        for round in 0..args.rounds {
            for k in 0..2 {
                let side = (k + round) % 2;
                let t = Instant::now();
                for _ in 0..args.empty {
                    ports[side].recv(EngineInstant::ZERO, &arena, &mut burst, 32);
                    arena.free_all(&mut burst);
                }
                ns[side].push(t.elapsed().as_nanos() as f64 / args.empty as f64);
            }
        }
        let (r, rmin, rmax) = median(&mut ns[0]);
        let (c, cmin, cmax) = median(&mut ns[1]);
        println!(
            "{:<26} {:>22} {:>22} {:>18}",
            "poll, nothing waiting, ns",
            format!("{r:.1} ({rmin:.1}-{rmax:.1})"),
            format!("{c:.1} ({cmin:.1}-{cmax:.1})"),
            format!("{:.2}", c / r)
        );
        for (name, p) in ["ring", "recvmmsg"].iter().zip(ports.iter_mut()) {
            println!("{name}: {:?}", p.stats());
        }
    }
}

#[cfg(feature = "af_packet")]
fn main() {
    run::main();
}

#[cfg(not(feature = "af_packet"))]
fn main() {
    eprintln!("build with --features af_packet");
    std::process::exit(2);
}
