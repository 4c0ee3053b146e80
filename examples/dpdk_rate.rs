//! Packet rate of the engine on a DPDK PMD, next to `dpdk-testpmd` forwarding on the same
//! PMD, in one run.
//!
//! ```text
//! cargo run --release --features dpdk --example dpdk_rate -- --mib 256
//! ```
//!
//! Two engines in this process are linked by a `net_ring` pair (frames cross by pointer,
//! both engines share one frame pool): one sends `--mib` MiB over one connection, the other
//! reads it. The program counts the frames both ports moved per second (data and ACKs) and
//! the goodput. Then it runs `dpdk-testpmd` in io-forward mode on two `net_ring` ports for
//! `--secs` seconds, which moves mbuf pointers from ring to ring without touching a byte:
//! the ceiling of the PMD and DPDK's burst path on this machine, not a TCP stack. Both run
//! without hugepages (`--no-huge`), on the same cores, with release builds.

#[cfg(feature = "dpdk")]
mod run {
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::process::Command;
    use std::time::{Duration, Instant};

    use clap::Parser;
    use flextoe::backends::dpdk::{DpdkPort, Eal, FramePool};
    use flextoe::pipeline::{Engine, EngineConfig, Runtime};
    use flextoe::time::SystemClock;
    use flextoe::wire::MacAddr;

    #[derive(Parser, Debug)]
    #[command(about = "engine frames/s on net_ring next to dpdk-testpmd io-forward on net_ring")]
    struct Args {
        /// MiB the engine moves over one connection.
        #[arg(long, default_value_t = 256)]
        mib: u64,
        /// Seconds testpmd forwards.
        #[arg(long, default_value_t = 3)]
        secs: u64,
    }

    /// testpmd's packets per second over its ports: the sum of each port's last `Rx-pps`.
    fn testpmd_pps(secs: u64) -> Option<f64> {
        let prefix = format!("--file-prefix=rate{}", std::process::id());
        let out = Command::new("timeout")
            .args([
                "-s",
                "INT",
                &(secs + 2).to_string(),
                "dpdk-testpmd",
                "-l",
                "0-1",
            ])
            .args([
                "--no-huge",
                "-m",
                "512",
                "--no-pci",
                "--no-shconf",
                "--no-telemetry",
            ])
            .args([
                prefix.as_str(),
                "--vdev=net_ring0",
                "--vdev=net_ring1",
                "--",
            ])
            .args(["--forward-mode=io", "--tx-first", "--stats-period=1"])
            .arg("--total-num-mbufs=16384")
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let rates: Vec<f64> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Rx-pps:"))
            .filter_map(|r| r.split_whitespace().next()?.parse().ok())
            .collect();
        // Two ports per report: the last report's pair.
        (rates.len() >= 2).then(|| rates[rates.len() - 2..].iter().sum())
    }

    pub fn main() {
        let args = Args::parse();
        let eal = Eal::init(&[
            "--no-huge",
            "-m",
            "512",
            "--no-pci",
            "--no-shconf",
            "--no-telemetry",
            &format!("--file-prefix=engrate{}", std::process::id()),
            "--log-level=*:warning",
        ])
        .expect("DPDK EAL");
        let pool = FramePool::new(eal, 16384, 1024).expect("frame pool");
        let (a, b) = DpdkPort::ring_pair(&pool, "rate", 1).expect("net_ring pair");
        let (ip_a, ip_b) = (Ipv4Addr::new(10, 9, 0, 1), Ipv4Addr::new(10, 9, 0, 2));
        let mac = |n| MacAddr([2, 0, 0, 0, 0, n]);
        let ra = Runtime::spawn(
            Engine::new(EngineConfig::new(mac(1), ip_a), a).unwrap(),
            SystemClock::new(),
        )
        .unwrap();
        let rb = Runtime::spawn(
            Engine::new(EngineConfig::new(mac(2), ip_b), b).unwrap(),
            SystemClock::new(),
        )
        .unwrap();
        let l = rb.host().listen(5001, 1).unwrap();
        let reader = std::thread::spawn(move || {
            let mut s = l.accept().unwrap();
            let mut buf = vec![0u8; 256 * 1024];
            let mut n = 0u64;
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return n,
                    Ok(k) => n += k as u64,
                }
            }
        });
        let mut s = ra
            .host()
            .connect_blocking(SocketAddrV4::new(ip_b, 5001), Duration::from_secs(5))
            .expect("connect");
        let chunk = vec![0x5au8; 256 * 1024];
        let total = args.mib << 20;
        let t0 = Instant::now();
        let mut sent = 0u64;
        while sent < total {
            let n = (total - sent).min(chunk.len() as u64) as usize;
            s.write_all(&chunk[..n]).unwrap();
            sent += n as u64;
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let got = reader.join().unwrap();
        let secs = t0.elapsed().as_secs_f64();
        drop(s);
        let (ea, eb) = (ra.stop(), rb.stop());
        let (pa, pb) = (ea.port().stats(), eb.port().stats());
        assert_eq!(got, total, "the reader got every byte");
        let frames = (pa.tx + pb.tx) as f64;
        let engine_pps = frames / secs;
        println!(
            "engine on net_ring: {} MiB in {secs:.3} s = {:.2} Gbit/s goodput; {} frames \
             (data {} + ACK {}) = {:.3} Mpps",
            args.mib,
            total as f64 * 8.0 / secs / 1e9,
            frames,
            pa.tx,
            pb.tx,
            engine_pps / 1e6
        );
        match testpmd_pps(args.secs) {
            Some(pps) => {
                println!(
                    "dpdk-testpmd io-forward on net_ring (2 ports, 2 lcores, no packet \
                     touched): {:.1} Mpps",
                    pps / 1e6
                );
                println!(
                    "engine / testpmd ceiling: {:.4} (the engine runs TCP on every frame)",
                    engine_pps / pps
                );
            }
            None => println!(
                "dpdk-testpmd not found or gave no rate (Debian: apt-get install dpdk-dev)"
            ),
        }
    }
}

#[cfg(feature = "dpdk")]
fn main() {
    run::main();
}

#[cfg(not(feature = "dpdk"))]
fn main() {
    eprintln!("build with --features dpdk");
    std::process::exit(2);
}
