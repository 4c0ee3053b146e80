//! A minimal `bpf()` loader for the port's XDP program.

use super::*;

const BPF_MAP_CREATE: i64 = 0;
const BPF_MAP_UPDATE_ELEM: i64 = 2;
const BPF_PROG_LOAD: i64 = 5;
const BPF_LINK_CREATE: i64 = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const XDP_PASS: i32 = 2;
const XDP_FLAGS_SKB_MODE: u32 = 2;
const XDP_FLAGS_DRV_MODE: u32 = 4;
/// Entries of the XSKMAP (queues).
const QUEUES: u32 = 64;

/// `union bpf_attr`, 144 bytes on current kernels; fields are written at their offsets.
#[repr(C, align(8))]
struct Attr([u8; 144]);

impl Attr {
    fn new() -> Self {
        Attr([0; 144])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

fn sys_bpf(cmd: i64, attr: &mut Attr) -> io::Result<RawFd> {
    // SAFETY: `attr` is a live, zero-padded `union bpf_attr` of the size passed; every
    // pointer written into it points to memory that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<Attr>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as RawFd)
    }
}

fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by bpf() and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// One `struct bpf_insn`.
#[derive(Clone, Copy)]
#[repr(C)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// The program: redirect IPv4 to `ip` and ARP about `ip` to the socket of the receiving
/// queue (falling back to the stack when that queue has no socket), pass the rest.
fn program(ip: Ipv4Addr, map_fd: RawFd) -> Vec<Insn> {
    const LDXW: u8 = 0x61; // r_dst = *(u32 *)(r_src + off)
    const LDXH: u8 = 0x69; // r_dst = *(u16 *)(r_src + off)
    const MOV_X: u8 = 0xbf;
    const MOV_K: u8 = 0xb7;
    const ADD_K: u8 = 0x07;
    const JGT_X: u8 = 0x2d;
    const JEQ32_K: u8 = 0x16;
    const JNE32_K: u8 = 0x56;
    const JA: u8 = 0x05;
    const LD_IMM64: u8 = 0x18;
    const CALL: u8 = 0x85;
    const EXIT: u8 = 0x95;
    // Packet bytes are compared as loaded: native words of network-order bytes.
    let ip_word = u32::from_ne_bytes(ip.octets()) as i32;
    let ipv4 = u16::from_ne_bytes([0x08, 0x00]) as i32;
    let arp = u16::from_ne_bytes([0x08, 0x06]) as i32;
    vec![
        /* 0 */ insn(MOV_X, 6, 1, 0, 0), // r6 = ctx
        /* 1 */ insn(LDXW, 2, 6, 0, 0), // r2 = data
        /* 2 */ insn(LDXW, 3, 6, 4, 0), // r3 = data_end
        /* 3 */ insn(MOV_X, 4, 2, 0, 0),
        /* 4 */ insn(ADD_K, 4, 0, 0, 42), // Ethernet + ARP body
        /* 5 */ insn(JGT_X, 4, 3, 15, 0), // too short -> pass (21)
        /* 6 */ insn(LDXH, 5, 2, 12, 0), // ethertype
        /* 7 */ insn(JEQ32_K, 5, 0, 2, ipv4), // -> 10
        /* 8 */ insn(JEQ32_K, 5, 0, 4, arp), // -> 13
        /* 9 */ insn(JA, 0, 0, 11, 0), // -> 21
        /* 10 */ insn(LDXW, 5, 2, 30, 0), // IPv4 destination
        /* 11 */ insn(JNE32_K, 5, 0, 9, ip_word), // -> 21
        /* 12 */ insn(JA, 0, 0, 2, 0), // -> 15
        /* 13 */ insn(LDXW, 5, 2, 38, 0), // ARP target protocol address
        /* 14 */ insn(JNE32_K, 5, 0, 6, ip_word), // -> 21
        /* 15 */ insn(LDXW, 2, 6, 16, 0), // key = ctx->rx_queue_index
        /* 16 */ insn(LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        /* 17 */ insn(0, 0, 0, 0, 0),
        /* 18 */ insn(MOV_K, 3, 0, 0, XDP_PASS), // when the key has no socket
        /* 19 */ insn(CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        /* 20 */ insn(EXIT, 0, 0, 0, 0),
        /* 21 */ insn(MOV_K, 0, 0, 0, XDP_PASS),
        /* 22 */ insn(EXIT, 0, 0, 0, 0),
    ]
}

/// The loaded program, its socket map and its link; dropping it detaches the program.
pub(super) struct XdpProgram {
    _link: OwnedFd,
    _prog: OwnedFd,
    _map: OwnedFd,
}

impl XdpProgram {
    pub(super) fn load(
        ip: Ipv4Addr,
        ifindex: u32,
        sockets: &[(u32, RawFd)],
        mode: XdpMode,
    ) -> io::Result<Self> {
        if let Some((queue, _)) = sockets.iter().find(|(q, _)| *q >= QUEUES) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("queue {queue} beyond the program's {QUEUES} queues"),
            ));
        }
        let mut a = Attr::new();
        a.u32(0, BPF_MAP_TYPE_XSKMAP)
            .u32(4, 4)
            .u32(8, 4)
            .u32(12, QUEUES);
        let map = owned(
            sys_bpf(BPF_MAP_CREATE, &mut a)
                .map_err(|e| ctx(e, "creating the XSKMAP (needs CAP_BPF)"))?,
        );
        for &(key, fd) in sockets {
            let value = fd as u32;
            let mut a = Attr::new();
            a.u32(0, map.as_raw_fd() as u32)
                .u64(8, &key as *const u32 as u64)
                .u64(16, &value as *const u32 as u64)
                .u64(24, 0);
            sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a)
                .map_err(|e| ctx(e, "putting a socket into the XSKMAP"))?;
        }
        let insns = program(ip, map.as_raw_fd());
        let license = b"GPL\0";
        let name = b"flextoe_xdp\0\0\0\0\0";
        let load = |log: Option<&mut Vec<u8>>| {
            let mut a = Attr::new();
            a.u32(0, BPF_PROG_TYPE_XDP)
                .u32(4, insns.len() as u32)
                .u64(8, insns.as_ptr() as u64)
                .u64(16, license.as_ptr() as u64);
            if let Some(buf) = log {
                a.u32(24, 1)
                    .u32(28, buf.len() as u32)
                    .u64(32, buf.as_mut_ptr() as u64);
            }
            a.0[48..64].copy_from_slice(name);
            a.u32(68, BPF_XDP);
            sys_bpf(BPF_PROG_LOAD, &mut a)
        };
        let prog = match load(None) {
            Ok(fd) => owned(fd),
            Err(e) => {
                // Load again with the verifier's log for the error message.
                let mut log = vec![0u8; 1 << 16];
                let _ = load(Some(&mut log));
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]).into_owned();
                return Err(io::Error::new(
                    e.kind(),
                    format!("loading the XDP program: {e}; verifier: {text}"),
                ));
            }
        };
        let flags = match mode {
            XdpMode::Generic => XDP_FLAGS_SKB_MODE,
            XdpMode::Native => XDP_FLAGS_DRV_MODE,
        };
        let mut a = Attr::new();
        a.u32(0, prog.as_raw_fd() as u32)
            .u32(4, ifindex)
            .u32(8, BPF_XDP)
            .u32(12, flags);
        let link = owned(sys_bpf(BPF_LINK_CREATE, &mut a).map_err(|e| {
            ctx(
                e,
                "attaching the XDP program (is another one attached to the interface?)",
            )
        })?);
        Ok(XdpProgram {
            _link: link,
            _prog: prog,
            _map: map,
        })
    }
}

fn ctx(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}
