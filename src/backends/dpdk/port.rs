//! A DPDK ethdev port (any PMD) as a [`Port`], with one receive and one transmit queue per
//! worker.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use super::config::{Device, DpdkConfig, DpdkStats, QueueStats};
use super::ffi;
use super::pool::FramePool;
use super::{eal, DpdkError};
use crate::backends::{tx_queue_of, Port, PortCaps};
use crate::buf::{Frame, FrameArena, FRAME_SIZE};
use crate::time::Instant;
use crate::wire::MacAddr;

/// Most mbufs moved per `rx_burst`/`tx_burst` call.
const BURST: usize = 64;
/// `tx_burst` calls per queue and `send` before what is left is dropped.
const TX_TRIES: usize = 64;

// Offload and RSS bits of rte_ethdev.h (function-like macros, which bindgen cannot read).
const TX_OFFLOAD_IPV4_CKSUM: u64 = 1 << 1;
const TX_OFFLOAD_TCP_CKSUM: u64 = 1 << 3;
const RSS_IPV4: u64 = 1 << 2;
const RSS_NONFRAG_IPV4_TCP: u64 = 1 << 4;

/// Ethdev ports some `DpdkPort` has open: a second open of the same port is refused
/// (DPDK would reconfigure the running device under the first).
static CLAIMED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// DPDK's device and ethdev control calls (probe, configure, start, stop, close, remove) are
/// not safe from several threads at once: one control operation at a time per process.
static CONTROL: std::sync::Mutex<()> = std::sync::Mutex::new(());

thread_local! {
    /// This thread holds [`CONTROL`] (a failed open drops its device under the lock).
    static IN_CONTROL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Holds [`CONTROL`], unless this thread already does.
struct ControlGuard(Option<std::sync::MutexGuard<'static, ()>>);

impl Drop for ControlGuard {
    fn drop(&mut self) {
        if self.0.is_some() {
            IN_CONTROL.with(|h| h.set(false));
        }
    }
}

fn control() -> ControlGuard {
    if IN_CONTROL.with(|h| h.get()) {
        return ControlGuard(None);
    }
    let g = CONTROL.lock().unwrap_or_else(|e| e.into_inner());
    IN_CONTROL.with(|h| h.set(true));
    ControlGuard(Some(g))
}

/// The open ethdev; stopped when the last port sharing it goes, and closed and removed too
/// when this crate created it (probed devargs, ring pairs), so that its name can be used
/// again. A port DPDK already had (a PCI device, an EAL `--vdev`) is only stopped, so that
/// it can be opened again.
struct Ethdev {
    id: u16,
    device: *mut ffi::rte_device,
    /// Created by this crate: close and remove it at the end.
    probed: bool,
    /// Configured and started (else only the claim is released).
    started: bool,
    /// The driver's own receive mempool (`DpdkConfig::rx_copy`), freed after the device.
    rx_pool: *mut ffi::rte_mempool,
    /// Rings of a [`DpdkPort::ring_pair`] link, freed after both ends closed.
    _rings: Option<Arc<Rings>>,
    _pool: Arc<FramePool>,
}

// SAFETY: port ids and device pointers are process-wide DPDK handles, usable from any
// thread; the fields are only read after construction.
unsafe impl Send for Ethdev {}
// SAFETY: as above.
unsafe impl Sync for Ethdev {}

impl Drop for Ethdev {
    fn drop(&mut self) {
        let _control = control();
        // SAFETY: no queue is used any more (every `DpdkPort` sharing the device is gone).
        // Stop makes the driver give back its mbufs; close and remove only for devices
        // this crate created.
        unsafe {
            if self.started {
                ffi::rte_eth_dev_stop(self.id);
            }
            if self.probed {
                ffi::rte_eth_dev_close(self.id);
                if !self.device.is_null() {
                    ffi::rte_dev_remove(self.device);
                }
            }
        }
        if !self.rx_pool.is_null() {
            // SAFETY: created in `start` for this device only, which is stopped now.
            unsafe { ffi::rte_mempool_free(self.rx_pool) };
        }
        self._pool.balance();
        let mut c = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        c.retain(|&p| p != self.id);
    }
}

/// The rings linking the two ends of a [`DpdkPort::ring_pair`].
struct Rings {
    rings: Vec<*mut ffi::rte_ring>,
    pool: Arc<FramePool>,
}

// SAFETY: rte_rings are process-wide; only freed in Drop.
unsafe impl Send for Rings {}
// SAFETY: as above.
unsafe impl Sync for Rings {}

impl Drop for Rings {
    fn drop(&mut self) {
        for &r in &self.rings {
            let mut buf = [std::ptr::null_mut::<ffi::rte_mbuf>(); BURST];
            loop {
                // SAFETY: `r` is a live ring of mbuf pointers, no port uses it any more.
                let n = unsafe {
                    ffi::rte_ring_dequeue_burst(
                        r,
                        buf.as_mut_ptr().cast(),
                        BURST as u32,
                        std::ptr::null_mut(),
                    )
                } as usize;
                if n == 0 {
                    break;
                }
                for &m in &buf[..n] {
                    // SAFETY: frames left in flight on the link: give them to the mempool.
                    unsafe { ffi::rte_pktmbuf_free(m) };
                }
            }
            // SAFETY: created in `ring_pair`, freed once.
            unsafe { ffi::rte_ring_free(r) };
        }
        self.pool.balance();
    }
}

/// A DPDK port: a [`Port`] over an ethdev's queues, sharing a [`FramePool`] with the
/// engine, so frames move between the driver and the engine without a copy.
///
/// With several queues the port receives from each in turn and sends each flow on one
/// queue (by a symmetric hash of its addresses and ports). [`split`](Self::split) gives
/// each queue a port of its own instead, for one engine (or one preprocess replica) per
/// queue.
pub struct DpdkPort {
    dev: Arc<Ethdev>,
    pool: Arc<FramePool>,
    /// The ethdev queues this port serves.
    queues: Vec<u16>,
    qstats: Vec<QueueStats>,
    next_rx: usize,
    offload: bool,
    mtu: usize,
    mac: MacAddr,
    stats: DpdkStats,
    rx_buf: Vec<*mut ffi::rte_mbuf>,
    tx_buf: Vec<Vec<*mut ffi::rte_mbuf>>,
}

// SAFETY: the port's raw pointers are mbufs it owns (scratch buffers, empty between calls)
// and process-wide DPDK handles; `&mut self` gives one thread at a time the queues.
unsafe impl Send for DpdkPort {}

fn cstring(s: &str) -> Result<CString, DpdkError> {
    CString::new(s).map_err(|_| DpdkError::Config(format!("{s:?} holds a NUL")))
}

fn check(what: &'static str, r: i32) -> Result<(), DpdkError> {
    if r < 0 {
        Err(DpdkError::rte(what, -r))
    } else {
        Ok(())
    }
}

impl DpdkPort {
    /// Open and start the device of `cfg` with frames from `pool`.
    pub fn open(pool: &Arc<FramePool>, cfg: &DpdkConfig) -> Result<DpdkPort, DpdkError> {
        let _control = control();
        let (name, probed) = match &cfg.device {
            Device::Probe(args) => {
                let c = cstring(args)?;
                // SAFETY: a NUL-terminated devargs string, copied by DPDK.
                check("rte_dev_probe", unsafe { ffi::rte_dev_probe(c.as_ptr()) })?;
                (args.split(',').next().unwrap_or_default().to_string(), true)
            }
            Device::Named(n) => (n.clone(), false),
        };
        let id = port_by_name(&name)?;
        Self::start(pool, id, probed, None, cfg)
    }

    /// Two ports linked back to back in memory through DPDK rings (the `net_ring` PMD),
    /// `queues` each way: what one sends on queue `q` the other receives on queue `q`.
    /// Both share `pool`, so a frame crosses the link by pointer.
    pub fn ring_pair(
        pool: &Arc<FramePool>,
        name: &str,
        queues: u16,
    ) -> Result<(DpdkPort, DpdkPort), DpdkError> {
        let _control = control();
        let queues = queues.max(1);
        let mut rings = Vec::new();
        for dir in ["ab", "ba"] {
            for q in 0..queues {
                let n = cstring(&format!("{name}_{dir}{q}"))?;
                // SAFETY: a NUL-terminated name; the ring is freed by `Rings`.
                let r = unsafe {
                    ffi::rte_ring_create(
                        n.as_ptr(),
                        4096,
                        ffi::rte_socket_id() as i32,
                        ffi::RING_F_SP_ENQ | ffi::RING_F_SC_DEQ,
                    )
                };
                if r.is_null() {
                    let e = DpdkError::rte("rte_ring_create", eal::errno());
                    // The rings made so far go (and are freed) with this set.
                    drop(Rings {
                        rings,
                        pool: pool.clone(),
                    });
                    return Err(e);
                }
                rings.push(r);
            }
        }
        let q = queues as usize;
        let rings = Arc::new(Rings {
            rings,
            pool: pool.clone(),
        });
        let (ab, ba) = rings.rings.split_at(q);
        let mut ports = Vec::new();
        for (end, rx, tx) in [("a", ba, ab), ("b", ab, ba)] {
            let n = cstring(&format!("{name}_{end}"))?;
            // SAFETY: the ring arrays hold `queues` live rings each; DPDK copies the arrays.
            let id = unsafe {
                ffi::rte_eth_from_rings(
                    n.as_ptr(),
                    rx.as_ptr(),
                    queues as u32,
                    tx.as_ptr(),
                    queues as u32,
                    ffi::rte_socket_id(),
                )
            };
            if id < 0 {
                return Err(DpdkError::rte("rte_eth_from_rings", eal::errno()));
            }
            let mut cfg = DpdkConfig::new(Device::Named(format!("{name}_{end}")));
            cfg.queues = queues;
            // Created here: closed and removed with the port, so the name can be reused.
            ports.push(Self::start(
                pool,
                id as u16,
                true,
                Some(rings.clone()),
                &cfg,
            )?);
        }
        let b = ports.pop().expect("two ports");
        let a = ports.pop().expect("two ports");
        Ok((a, b))
    }

    fn start(
        pool: &Arc<FramePool>,
        id: u16,
        probed: bool,
        rings: Option<Arc<Rings>>,
        cfg: &DpdkConfig,
    ) -> Result<DpdkPort, DpdkError> {
        let mut info = ffi::rte_eth_dev_info::default();
        // SAFETY: `info` is a writable rte_eth_dev_info.
        check("rte_eth_dev_info_get", unsafe {
            ffi::rte_eth_dev_info_get(id, &mut info)
        })?;
        {
            let mut c = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
            if c.contains(&id) {
                return Err(DpdkError::Config(format!("DPDK port {id} is already open")));
            }
            c.push(id);
        }
        // From here on, dropping `dev` releases the claim (and removes a device this crate
        // created); once started, it also stops the device.
        let mut dev = Ethdev {
            id,
            device: info.device,
            probed,
            started: false,
            rx_pool: std::ptr::null_mut(),
            _rings: rings,
            _pool: pool.clone(),
        };
        let nq = cfg.queues.max(1);
        if nq > info.max_rx_queues || nq > info.max_tx_queues {
            return Err(DpdkError::Config(format!(
                "{nq} queues asked, the device has {} receive and {} transmit queues",
                info.max_rx_queues, info.max_tx_queues
            )));
        }
        let mut conf = ffi::rte_eth_conf::default();
        let rss = info.flow_type_rss_offloads & (RSS_IPV4 | RSS_NONFRAG_IPV4_TCP);
        if nq > 1 && rss != 0 {
            conf.rxmode.mq_mode = ffi::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss;
        }
        let csum = TX_OFFLOAD_IPV4_CKSUM | TX_OFFLOAD_TCP_CKSUM;
        let offload = cfg.checksum_offload && info.tx_offload_capa & csum == csum;
        if offload {
            conf.txmode.offloads = csum;
        }
        // SAFETY: `conf` is a valid configuration; the port exists.
        check("rte_eth_dev_configure", unsafe {
            ffi::rte_eth_dev_configure(id, nq, nq, &conf)
        })?;
        let clamp = |want: u16, lim: &ffi::rte_eth_desc_lim| {
            let mut n = want;
            if lim.nb_max > 0 {
                n = n.min(lim.nb_max);
            }
            n = n.max(lim.nb_min);
            if lim.nb_align > 1 {
                n -= n % lim.nb_align;
                n = n.max(lim.nb_align);
            }
            n
        };
        let rx_desc = clamp(cfg.rx_desc, &info.rx_desc_lim);
        let tx_desc = clamp(cfg.tx_desc, &info.tx_desc_lim);
        // SAFETY: plain C call.
        let socket = unsafe { ffi::rte_socket_id() };
        let driver = if info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: the driver name is a static NUL-terminated string of the driver.
            unsafe { std::ffi::CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        let rx_mp = if cfg.rx_copy || driver == "net_af_xdp" {
            let n = cstring(&format!("{}_rx{id}", pool.name()))?;
            let count = (nq as u32 * rx_desc as u32 * 2).max(4096);
            // SAFETY: a NUL-terminated name; the pool is freed by `Ethdev` after the device.
            let mp = unsafe {
                ffi::rte_pktmbuf_pool_create(
                    n.as_ptr(),
                    count,
                    0,
                    0,
                    (FRAME_SIZE + ffi::RTE_PKTMBUF_HEADROOM as usize) as u16,
                    socket as i32,
                )
            };
            if mp.is_null() {
                return Err(DpdkError::rte("rte_pktmbuf_pool_create", eal::errno()));
            }
            dev.rx_pool = mp;
            mp
        } else {
            // Drivers that post receive buffers take them from the mempool when they start.
            pool.lend(nq as usize * rx_desc as usize);
            pool.mempool()
        };
        for q in 0..nq {
            // SAFETY: queue `q` < the configured count; NULL configurations take the
            // driver's defaults; the mempool outlives the port (`Ethdev` holds the pool).
            unsafe {
                check(
                    "rte_eth_rx_queue_setup",
                    ffi::rte_eth_rx_queue_setup(id, q, rx_desc, socket, std::ptr::null(), rx_mp),
                )?;
                check(
                    "rte_eth_tx_queue_setup",
                    ffi::rte_eth_tx_queue_setup(id, q, tx_desc, socket, std::ptr::null()),
                )?;
            }
        }
        // SAFETY: configured above. Promiscuous mode is best effort (not every PMD has it).
        unsafe {
            check("rte_eth_dev_start", ffi::rte_eth_dev_start(id))?;
            dev.started = true;
            ffi::rte_eth_promiscuous_enable(id);
        }
        let dev = Arc::new(dev);
        let mut mac = ffi::rte_ether_addr::default();
        let mut mtu = 1500u16;
        // SAFETY: writable out-parameters.
        unsafe {
            ffi::rte_eth_macaddr_get(id, &mut mac);
            ffi::rte_eth_dev_get_mtu(id, &mut mtu);
        }
        // A received frame must fit a buffer after the driver's 128-byte headroom.
        let room = FRAME_SIZE - ffi::RTE_PKTMBUF_HEADROOM as usize - 18;
        Ok(DpdkPort {
            dev,
            pool: pool.clone(),
            queues: (0..nq).collect(),
            qstats: vec![QueueStats::default(); nq as usize],
            next_rx: 0,
            offload,
            mtu: (mtu as usize).clamp(576, room),
            mac: MacAddr(mac.addr_bytes),
            stats: DpdkStats::default(),
            rx_buf: vec![std::ptr::null_mut(); BURST],
            tx_buf: (0..nq).map(|_| Vec::with_capacity(BURST)).collect(),
        })
    }

    /// One port per queue, each serving only its own queue (for run-to-completion shards
    /// or one preprocess replica per queue). The device closes when the last one goes.
    pub fn split(self) -> Vec<DpdkPort> {
        self.queues
            .iter()
            .map(|&q| DpdkPort {
                dev: self.dev.clone(),
                pool: self.pool.clone(),
                queues: vec![q],
                qstats: vec![QueueStats::default()],
                next_rx: 0,
                offload: self.offload,
                mtu: self.mtu,
                mac: self.mac,
                stats: DpdkStats::default(),
                rx_buf: vec![std::ptr::null_mut(); BURST],
                tx_buf: vec![Vec::with_capacity(BURST)],
            })
            .collect()
    }

    /// The device's MAC address.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// The ethdev port id.
    pub fn port_id(&self) -> u16 {
        self.dev.id
    }

    /// The pool this port's frames come from.
    pub fn pool(&self) -> &Arc<FramePool> {
        &self.pool
    }

    /// Whether the device fills in IPv4 and TCP checksums of sent frames.
    pub fn checksum_offload(&self) -> bool {
        self.offload
    }

    /// Counters of each queue this port serves, by ethdev queue id.
    pub fn queue_stats(&self) -> Vec<(u16, QueueStats)> {
        self.queues
            .iter()
            .copied()
            .zip(self.qstats.iter().copied())
            .collect()
    }

    /// The port's counters, with the device's own (`rte_eth_stats_get`).
    pub fn stats(&self) -> DpdkStats {
        let mut s = self.stats;
        let mut e = ffi::rte_eth_stats::default();
        // SAFETY: writable out-parameter.
        if unsafe { ffi::rte_eth_stats_get(self.dev.id, &mut e) } == 0 {
            s.dev_ipackets = e.ipackets;
            s.dev_opackets = e.opackets;
            s.dev_imissed = e.imissed;
            s.dev_ierrors = e.ierrors;
            s.dev_rx_nombuf = e.rx_nombuf;
        }
        s
    }

    /// Receive one burst from the queue in `slot`.
    fn recv_slot(&mut self, slot: usize, out: &mut Vec<Frame>, max: usize) -> usize {
        let want = max.min(BURST) as u16;
        // SAFETY: the queue is configured and served by this port only; `rx_buf` has room
        // for `want` pointers.
        let n = unsafe {
            ffi::rte_eth_rx_burst(
                self.dev.id,
                self.queues[slot],
                self.rx_buf.as_mut_ptr(),
                want,
            )
        } as usize;
        let mut taken = 0;
        for j in 0..n {
            let m = self.rx_buf[j];
            if self.accept(m, out) {
                taken += 1;
            }
        }
        self.qstats[slot].rx += taken as u64;
        self.stats.rx += taken as u64;
        taken
    }

    /// Take a received mbuf into the engine: its frame when it is the pool's, else a copy.
    fn accept(&mut self, m: *mut ffi::rte_mbuf, out: &mut Vec<Frame>) -> bool {
        let Some(m) = NonNull::new(m) else {
            return false;
        };
        // SAFETY: the driver handed `m` over; the header is ours to read.
        let (segs, off, len, buf_len, shared) = unsafe {
            let mb = &*m.as_ptr();
            (
                mb.nb_segs,
                mb.data_off as usize,
                mb.data_len as usize,
                mb.buf_len as usize,
                mb.refcnt != 1 || !mb.next.is_null(),
            )
        };
        if segs != 1 || off + len > buf_len {
            // A chain (the engine takes one buffer per frame) or a header that does not
            // describe its own buffer.
            self.stats.rx_dropped += 1;
            // SAFETY: ours to free (whole chain).
            unsafe { ffi::rte_pktmbuf_free(m.as_ptr()) };
            return false;
        }
        if let Some(i) = self.pool.index_of(m).filter(|_| !shared) {
            // SAFETY: the pool's mbuf, handed over by the driver and referenced by nobody
            // else (refcnt 1, no chain), its data inside its buffer (checked above).
            out.push(unsafe { self.pool.frame_of(m, i) });
            return true;
        }
        // Another pool's mbuf, or one the driver still shares: copy it.
        self.stats.rx_copied += 1;
        let arena = self.pool.arena();
        let copied = arena.alloc().map(|mut f| {
            let n = len.min(FRAME_SIZE - f.headroom());
            f.set_len(n);
            // SAFETY: a single-segment mbuf's data is `data_len` bytes at `data_off` into
            // its buffer.
            let src = unsafe {
                std::slice::from_raw_parts(((*m.as_ptr()).buf_addr as *const u8).add(off), n)
            };
            arena.data_mut(&mut f).copy_from_slice(src);
            f
        });
        // SAFETY: ours to free.
        unsafe { ffi::rte_pktmbuf_free(m.as_ptr()) };
        match copied {
            Some(f) => {
                out.push(f);
                true
            }
            None => false,
        }
    }
}

/// Fill in the offload fields of an IPv4/TCP frame: the device computes both checksums
/// from the header lengths, starting from the pseudo-header sum in the TCP checksum field.
fn prepare_offload(m: NonNull<ffi::rte_mbuf>, data: &mut [u8]) {
    let mut l2 = 14;
    if data.len() >= 18 && data[12..14] == [0x81, 0x00] {
        l2 = 18;
    }
    if data.len() < l2 + 20 || data[l2 - 2..l2] != [0x08, 0x00] || data[l2] >> 4 != 4 {
        return;
    }
    let ihl = (data[l2] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([data[l2 + 2], data[l2 + 3]]) as usize;
    if data[l2 + 9] != 6 || ihl < 20 || total < ihl + 20 || data.len() < l2 + total {
        return;
    }
    let ip = &data[l2..l2 + ihl];
    let mut sum: u32 = 6 + (total - ihl) as u32;
    for w in ip[12..20].chunks(2) {
        sum += u16::from_be_bytes([w[0], w[1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    data[l2 + 10..l2 + 12].copy_from_slice(&[0, 0]);
    let t = l2 + ihl + 16;
    data[t..t + 2].copy_from_slice(&(sum as u16).to_be_bytes());
    // SAFETY: the mbuf is the caller's (not yet handed to the driver).
    unsafe {
        let mb = &mut *m.as_ptr();
        mb.ol_flags |=
            ffi::RTE_MBUF_F_TX_IPV4 | ffi::RTE_MBUF_F_TX_IP_CKSUM | ffi::RTE_MBUF_F_TX_TCP_CKSUM;
        // tx_offload's l2_len and l3_len bit fields, at the offsets the target's header
        // gives (they depend on its byte order).
        mb.__bindgen_anon_3.tx_offload = (l2 as u64) << (ffi::RTE_MBUF_L2_LEN_OFS as u64)
            | (ihl as u64) << (ffi::RTE_MBUF_L3_LEN_OFS as u64);
    }
}

fn port_by_name(name: &str) -> Result<u16, DpdkError> {
    let c = cstring(name)?;
    let mut id = 0u16;
    // SAFETY: NUL-terminated name, writable out-parameter.
    check("rte_eth_dev_get_port_by_name", unsafe {
        ffi::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id)
    })
    .map_err(|e| DpdkError::Config(format!("no DPDK port named {name:?}: {e}")))?;
    Ok(id)
}

impl Port for DpdkPort {
    fn recv(
        &mut self,
        _now: Instant,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        debug_assert!(
            std::ptr::eq(arena, &**self.pool.arena()),
            "the pool's arena"
        );
        self.pool.balance();
        let nq = self.queues.len();
        let got = super::super::recv_each_queue(nq, self.next_rx, max, |q, left| {
            self.recv_slot(q, out, left)
        });
        self.next_rx = (self.next_rx + 1) % nq;
        got
    }

    fn recv_queue(
        &mut self,
        queue: u16,
        _now: Instant,
        arena: &FrameArena,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        debug_assert!(
            std::ptr::eq(arena, &**self.pool.arena()),
            "the pool's arena"
        );
        if queue as usize >= self.queues.len() {
            return 0;
        }
        self.pool.balance();
        self.recv_slot(queue as usize, out, max)
    }

    fn send(&mut self, _now: Instant, arena: &FrameArena, frames: &mut Vec<Frame>) -> usize {
        debug_assert!(
            std::ptr::eq(arena, &**self.pool.arena()),
            "the pool's arena"
        );
        let nq = self.queues.len();
        let mut sent = 0;
        let mut pending = frames.drain(..).peekable();
        while pending.peek().is_some() {
            // Sort up to a burst per queue.
            for mut f in pending.by_ref() {
                if f.is_empty() {
                    self.stats.tx_empty += 1;
                    self.pool.arena().free(f);
                    continue;
                }
                let slot = tx_queue_of(self.pool.arena().data(&f), nq);
                let offload = self.offload;
                let data: *mut [u8] = self.pool.arena().data_mut(&mut f);
                let m = self.pool.mbuf_of(f);
                if offload {
                    // SAFETY: the frame's bytes (its mbuf's data) stay valid and unaliased:
                    // the mbuf is not yet handed to the driver.
                    prepare_offload(m, unsafe { &mut *data });
                }
                self.tx_buf[slot].push(m.as_ptr());
                if self.tx_buf[slot].len() == BURST {
                    break;
                }
            }
            for slot in 0..nq {
                let q = self.queues[slot];
                let buf = &mut self.tx_buf[slot];
                let mut done = 0;
                let mut tries = 0;
                while done < buf.len() && tries < TX_TRIES {
                    // SAFETY: the queue is this port's; the mbufs are ours until the driver
                    // takes them (the first `n` of the array).
                    let n = unsafe {
                        ffi::rte_eth_tx_burst(
                            self.dev.id,
                            q,
                            buf[done..].as_mut_ptr(),
                            (buf.len() - done) as u16,
                        )
                    } as usize;
                    done += n;
                    tries += 1;
                }
                for &m in &buf[done..] {
                    self.pool.unsent(NonNull::new(m).expect("non-null mbuf"));
                }
                self.qstats[slot].tx += done as u64;
                self.qstats[slot].tx_full += (buf.len() - done) as u64;
                self.stats.tx_full += (buf.len() - done) as u64;
                sent += done;
                buf.clear();
            }
        }
        self.stats.tx += sent as u64;
        sent
    }

    fn mtu(&self) -> usize {
        self.mtu.min(1500)
    }

    fn capabilities(&self) -> PortCaps {
        PortCaps {
            tx_checksum_offload: self.offload,
            queues: self.queues.len() as u16,
        }
    }

    fn arena(&self) -> Option<Arc<FrameArena>> {
        Some(self.pool.arena().clone())
    }
}
