//! The DPDK environment of a test binary: one EAL per process, without hugepages or PCI
//! devices, with a file prefix of its own; devices are probed per test with unique names.

use std::sync::atomic::{AtomicUsize, Ordering};

use flextoe::backends::dpdk::Eal;

/// The process's EAL (started by the first caller).
pub fn eal() -> &'static Eal {
    let args = [
        "--no-huge".to_string(),
        "-m".into(),
        "1024".into(),
        "--no-pci".into(),
        "--no-shconf".into(),
        "--no-telemetry".into(),
        format!("--file-prefix=ftoe{}", std::process::id()),
        "--log-level=*:warning".into(),
    ];
    Eal::init(&args).expect("DPDK EAL (no hugepages, no PCI)")
}

/// A device or object name no other test of this process uses: `{kind}{n}`.
pub fn unique(kind: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{kind}{}", N.fetch_add(1, Ordering::Relaxed))
}
