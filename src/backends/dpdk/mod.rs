//! DPDK ports (feature `dpdk`): any poll-mode driver, frames shared with the engine.
//!
//! The binding is the crate's own, generated at build time from the system's DPDK
//! (`pkg-config libdpdk`, bindgen, and `cc` for the wrappers of DPDK's inline burst
//! functions; see `build.rs`). Its surface is small: EAL set-up, device probe and
//! configuration, queue set-up, the burst calls, the mempool and memzone calls, and the
//! `net_ring` constructor. Every call is made from this module, each `unsafe` block with
//! the reason it is sound.
//!
//! * [`Eal::init`] starts DPDK once per process with arguments passed through.
//! * [`FramePool`] puts the engine's frame arena in a DPDK memory zone and builds the
//!   mempool over it with pinned external buffers: an mbuf's buffer *is* a frame, so
//!   receiving and sending move ownership, never bytes.
//! * [`DpdkPort`] opens any ethdev (a probed devargs string or a named port), sets up one
//!   number of receive and transmit queue pairs (RSS where the device hashes), uses IPv4/TCP
//!   checksum offload where the device has it, and implements [`Port`](super::Port), with
//!   [`recv_queue`](super::Port::recv_queue) so that the threaded runtime can give each
//!   preprocess replica a queue.
//!   [`DpdkPort::split`] gives each queue its own port; [`DpdkPort::ring_pair`] links two
//!   ports back to back in memory.
//!
//! ```no_run
//! use flextoe::backends::dpdk::{Device, DpdkConfig, DpdkPort, Eal, FramePool};
//!
//! let eal = Eal::init(&["--no-huge", "-m", "512", "--no-pci", "--file-prefix=doc"])?;
//! let pool = FramePool::new(eal, 16384, 1024)?;
//! // The PMD's kernel ring frames must fit an mbuf after its headroom (docs/dpdk.md).
//! let args = "net_af_packet0,iface=veth0,qpairs=2,blocksz=28672,framesz=1792,framecnt=512";
//! let mut cfg = DpdkConfig::new(Device::Probe(args.into()));
//! cfg.queues = 2;
//! let port = DpdkPort::open(&pool, &cfg)?;
//! // `port` is a `Port`: hand it to `Pipeline::builder` like any other backend.
//! # Ok::<(), flextoe::backends::dpdk::DpdkError>(())
//! ```
//!
//! Running without hugepages or PCI devices (tests, CI): `--no-huge -m 512 --no-pci
//! --file-prefix=<unique>` (see the README's DPDK section).

mod config;
mod eal;
mod ffi;
mod pool;
mod port;

pub use config::{Device, DpdkConfig, DpdkStats, QueueStats};
pub use eal::Eal;
pub use pool::{FramePool, PoolCounts};
pub use port::DpdkPort;

/// Errors of the DPDK backend.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum DpdkError {
    /// A DPDK call failed.
    #[error("{call} failed: {message} ({code})")]
    Rte {
        /// The function.
        call: &'static str,
        /// The error number (`rte_errno` or the negated return value).
        code: i32,
        /// DPDK's text for it.
        message: String,
    },
    /// The EAL is already running with other arguments (DPDK allows one per process).
    #[error("the DPDK EAL already runs with other arguments: {0}")]
    AlreadyInitialised(String),
    /// A setting or device the backend cannot use.
    #[error("{0}")]
    Config(String),
}

impl DpdkError {
    fn rte(call: &'static str, code: i32) -> Self {
        DpdkError::Rte {
            call,
            code,
            message: eal::strerror(code),
        }
    }
}

impl From<DpdkError> for std::io::Error {
    fn from(e: DpdkError) -> Self {
        let kind = match &e {
            DpdkError::Config(_) | DpdkError::AlreadyInitialised(_) => {
                std::io::ErrorKind::InvalidInput
            }
            DpdkError::Rte { .. } => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}
