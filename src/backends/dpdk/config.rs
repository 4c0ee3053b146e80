//! What a [`DpdkPort`](super::DpdkPort) is opened with ([`DpdkConfig`]) and what it counts
//! ([`DpdkStats`]).

/// Which ethdev to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Device {
    /// Probe a device from a devargs string when the port opens and remove it when the port
    /// closes, e.g. `net_af_packet0,iface=veth0,qpairs=2` or `net_memif0,role=server`. The
    /// calling thread's network namespace is the one kernel-facing PMDs open their
    /// interface in.
    Probe(String),
    /// A port DPDK already probed (a PCI device, a `--vdev` of the EAL arguments), by name
    /// (`0000:03:00.0`, `net_ring0`).
    Named(String),
}

/// Settings of a DPDK port.
#[derive(Clone, Debug)]
pub struct DpdkConfig {
    /// The device.
    pub device: Device,
    /// Receive and transmit queues. Flows are spread over the receive queues by the
    /// device's RSS where it hashes (mlx5, ice, i40e), or by the PMD (`net_af_packet` with
    /// `qpairs`: a hashing fanout group); a device with neither delivers everything to
    /// queue 0. The port sends each flow on one queue.
    pub queues: u16,
    /// Receive descriptors per queue.
    pub rx_desc: u16,
    /// Transmit descriptors per queue.
    pub tx_desc: u16,
    /// Use the device's IPv4 and TCP transmit checksum offload when it has both.
    pub checksum_offload: bool,
    /// Give the driver a receive mempool of its own (ordinary mbufs) and copy each received
    /// frame into the arena, for drivers that cannot receive into the arena's pinned
    /// external buffers. `net_af_xdp` is one (it builds its UMEM over the mempool's object
    /// memory) and gets this whatever the setting.
    pub rx_copy: bool,
}

impl DpdkConfig {
    /// One queue, 1024 descriptors each way, checksum offload where offered.
    pub fn new(device: Device) -> Self {
        DpdkConfig {
            device,
            queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            checksum_offload: true,
            rx_copy: false,
        }
    }
}

/// Counters of one queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Frames received on this queue.
    pub rx: u64,
    /// Frames sent on this queue.
    pub tx: u64,
    /// Frames dropped because the transmit queue stayed full.
    pub tx_full: u64,
}

/// Counters of a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DpdkStats {
    /// Frames received (all queues).
    pub rx: u64,
    /// Frames sent (all queues).
    pub tx: u64,
    /// Frames dropped because a transmit queue stayed full.
    pub tx_full: u64,
    /// Empty frames handed to `send`, dropped.
    pub tx_empty: u64,
    /// Received mbufs from another pool (a driver that allocates its own) or shared ones:
    /// copied (or dropped when no frame was free).
    pub rx_copied: u64,
    /// Received chained (multi-segment) mbufs, or mbufs whose data lies outside their
    /// buffer: dropped.
    pub rx_dropped: u64,
    /// Frames the device counted as received (`rte_eth_stats`).
    pub dev_ipackets: u64,
    /// Frames the device counted as sent.
    pub dev_opackets: u64,
    /// Frames the device dropped for want of receive room.
    pub dev_imissed: u64,
    /// Receive errors the device counted.
    pub dev_ierrors: u64,
    /// Receive buffers the device could not get from the mempool.
    pub dev_rx_nombuf: u64,
}
