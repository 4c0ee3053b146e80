//! What the kernel's loader and verifier do to a program before it runs, done here for the
//! userspace VM:
//! - map references: a 64-bit load relocated to a map gets the map's handle (the kernel puts
//!   a map's file descriptor there);
//! - the `xdp_md` context: the program reads `data`, `data_end` and `data_meta` as 32-bit
//!   fields, which the kernel's verifier turns into 64-bit pointer loads; here the context is
//!   laid out with 64-bit pointers (the `ctx` offsets) and those loads are widened the same way;
//! - map helpers whose key (and value) pointer is provably on the program's stack (`r10`
//!   plus a constant, checked against the key's size) are marked, so that the helper trusts
//!   it; any other pointer a helper gets must lie in the packet, the context or a map.

use std::collections::HashSet;

use super::elf::{ProgramSpec, INSN};
use super::maps::MapSpec;

/// The high 32 bits of a map handle as a program sees it (the low bits: the map's index).
pub(crate) const MAP_HANDLE_TAG: u64 = 0x6d61_7000;
/// Added to a map helper's number when its pointers are proven to be on the stack.
pub(crate) const STACK_PROVEN: u32 = 0x1000;

/// `bpf_map_lookup_elem`, `bpf_map_update_elem`, `bpf_map_delete_elem`.
pub(crate) const HELPER_LOOKUP: u32 = 1;
pub(crate) const HELPER_UPDATE: u32 = 2;
pub(crate) const HELPER_DELETE: u32 = 3;

/// The context the userspace VM gives an XDP program (the kernel's `xdp_md`, with pointers
/// 64 bits wide): byte offsets of its fields.
pub(crate) mod ctx {
    pub(crate) const DATA: usize = 0;
    pub(crate) const DATA_END: usize = 8;
    pub(crate) const DATA_META: usize = 16;
    pub(crate) const INGRESS_IFINDEX: usize = 24;
    pub(crate) const RX_QUEUE_INDEX: usize = 28;
    pub(crate) const EGRESS_IFINDEX: usize = 32;
    pub(crate) const SIZE: usize = 40;
}

const LDXW: u8 = 0x61;
const LDXDW: u8 = 0x79;
const LDDW: u8 = 0x18;
const MOV64_REG: u8 = 0xbf;
const ADD64_IMM: u8 = 0x07;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;

fn dst(p: &[u8], i: usize) -> u8 {
    p[i * INSN + 1] & 0x0f
}
fn src(p: &[u8], i: usize) -> u8 {
    p[i * INSN + 1] >> 4
}
fn off(p: &[u8], i: usize) -> i16 {
    i16::from_le_bytes([p[i * INSN + 2], p[i * INSN + 3]])
}
fn imm(p: &[u8], i: usize) -> i32 {
    i32::from_le_bytes(p[i * INSN + 4..i * INSN + 8].try_into().unwrap_or([0; 4]))
}
fn set_imm(p: &mut [u8], i: usize, v: u32) {
    if let Some(s) = p.get_mut(i * INSN + 4..i * INSN + 8) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn is_jump(op: u8) -> bool {
    let class = op & 0x07;
    (class == 0x05 || class == 0x06) && op != CALL && op != EXIT
}

/// Whether instruction `i` writes register `r` (loads and ALU operations write `dst`).
fn writes(p: &[u8], i: usize, r: u8) -> bool {
    let op = p[i * INSN];
    match op & 0x07 {
        0x00 | 0x01 | 0x04 | 0x07 => dst(p, i) == r,
        _ => op == CALL && r <= 5,
    }
}

/// Where instructions start (the second half of a 64-bit load is not one), and the jump
/// targets.
fn layout(p: &[u8]) -> (Vec<bool>, HashSet<usize>) {
    let n = p.len() / INSN;
    let mut start = vec![true; n];
    let mut targets = HashSet::new();
    let mut i = 0;
    while i < n {
        let op = p[i * INSN];
        if op == LDDW && i + 1 < n {
            start[i + 1] = false;
            i += 2;
            continue;
        }
        if is_jump(op) {
            let t = i as i64 + 1 + i64::from(off(p, i));
            if t >= 0 {
                targets.insert(t as usize);
            }
        }
        i += 1;
    }
    (start, targets)
}

/// What register `r` holds just before instruction `at`, if it is `r10 + c` or a map handle
/// set in the same straight-line block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Def {
    Stack(i64),
    Map(usize),
}

fn def_before(
    p: &[u8],
    start: &[bool],
    targets: &HashSet<usize>,
    maps: &[(usize, usize)],
    at: usize,
    r: u8,
) -> Option<Def> {
    let mut add: i64 = 0;
    let mut i = at;
    while i > 0 {
        if targets.contains(&i) {
            return None;
        }
        i -= 1;
        if !start[i] {
            continue;
        }
        let op = p[i * INSN];
        if is_jump(op) || op == EXIT {
            return None;
        }
        if !writes(p, i, r) {
            continue;
        }
        match op {
            ADD64_IMM => add += i64::from(imm(p, i)),
            MOV64_REG if src(p, i) == 10 => return Some(Def::Stack(add)),
            LDDW if add == 0 => {
                return maps
                    .iter()
                    .find(|(k, _)| *k == i)
                    .map(|(_, m)| Def::Map(*m))
            }
            _ => return None,
        }
    }
    None
}

/// The helpers the userspace VM has (the kernel's numbers).
pub(crate) const KNOWN_HELPERS: [u32; 9] = [1, 2, 3, 5, 7, 23, 44, 51, 65];

/// Longest program the userspace VM takes: rbpf's interpreter computes a jump's target in
/// 16 bits (`insn_ptr as i16 + off`), so past this a forward jump could land anywhere,
/// backwards included.
pub(crate) const USERSPACE_MAX_INSNS: usize = i16::MAX as usize;

/// The program's image for the userspace VM. Refused: programs longer than
/// [`USERSPACE_MAX_INSNS`], calls between functions (a called function's stack would not
/// be where the loader's stack proofs assume), calls to helpers the VM does not have, the
/// loader's own numbers included, and jumps back (loops: a run must finish within the
/// program's length).
pub(crate) fn userspace_image(
    prog: &ProgramSpec,
    maps: &[MapSpec],
) -> Result<Vec<u8>, super::LoadError> {
    let mut p = prog.insns.clone();
    let n = p.len() / INSN;
    if n > USERSPACE_MAX_INSNS {
        return Err(super::LoadError::Verifier(format!(
            "{n} instructions: the userspace VM takes at most {USERSPACE_MAX_INSNS}"
        )));
    }
    {
        let (start, _) = layout(&p);
        // Control must not run off the end: the interpreter would reach code it treats as
        // unreachable. The last instruction is an exit (an unconditional jump there could
        // only go back), and every jump lands on an instruction.
        let last = (0..n).rev().find(|&i| start[i]);
        if !last.is_some_and(|i| p[i * INSN] == EXIT && i + 1 == n) {
            return Err(super::LoadError::Verifier(
                "the program does not end with an exit".into(),
            ));
        }
        for i in (0..n).filter(|&i| start[i] && is_jump(p[i * INSN])) {
            let t = i as i64 + 1 + i64::from(off(&p, i));
            if t < 0 || t as usize >= n || !start[t as usize] {
                return Err(super::LoadError::Verifier(format!(
                    "jump at instruction {i} leaves the program"
                )));
            }
            // A jump back could loop for ever on the data path (rbpf's verifier refuses only
            // a jump to itself, and its VM has no instruction budget). Forward jumps only,
            // as the kernel required before bounded loops: with calls between functions
            // refused too, every instruction runs at most once per frame, so a run is
            // bounded by the program's length.
            if t as usize <= i {
                return Err(super::LoadError::Verifier(format!(
                    "jump at instruction {i} goes back to {t}: loops are refused"
                )));
            }
        }
        // The legacy packet loads (BPF_LD with BPF_ABS or BPF_IND) belong to socket filters;
        // the kernel refuses them in XDP programs, and the VM would add their offsets to a
        // host address unchecked.
        if let Some(i) = (0..n).find(|&i| {
            let op = p[i * INSN];
            start[i] && op & 0x07 == 0x00 && matches!(op & 0xe0, 0x20 | 0x40)
        }) {
            return Err(super::LoadError::Verifier(format!(
                "instruction {i}: a legacy packet load (LD_ABS/LD_IND)"
            )));
        }
        for i in (0..n).filter(|i| start[*i] && p[i * INSN] == CALL) {
            if src(&p, i) != 0 {
                return Err(super::LoadError::Unsupported(
                    "calls between functions".into(),
                ));
            }
            let h = imm(&p, i) as u32;
            if !KNOWN_HELPERS.contains(&h) {
                return Err(super::LoadError::Unsupported(format!("helper {h}")));
            }
        }
    }
    for &(i, m) in &prog.map_refs {
        p[i * INSN + 1] &= 0x0f; // src_reg 0: a plain 64-bit constant
        set_imm(&mut p, i, m as u32);
        set_imm(&mut p, i + 1, (MAP_HANDLE_TAG) as u32);
    }
    let (start, targets) = layout(&p);
    // The context's registers: r1 at entry, and copies of it.
    let mut ctx_regs: u16 = 1 << 1;
    let mut i = 0;
    while i < n {
        if !start[i] {
            i += 1;
            continue;
        }
        let op = p[i * INSN];
        let (d, s) = (dst(&p, i), src(&p, i));
        if op == LDXW && ctx_regs & (1 << s) != 0 {
            let new = match off(&p, i) {
                0 => Some((LDXDW, ctx::DATA)),
                4 => Some((LDXDW, ctx::DATA_END)),
                8 => Some((LDXDW, ctx::DATA_META)),
                12 => Some((LDXW, ctx::INGRESS_IFINDEX)),
                16 => Some((LDXW, ctx::RX_QUEUE_INDEX)),
                20 => Some((LDXW, ctx::EGRESS_IFINDEX)),
                _ => None,
            };
            if let Some((code, o)) = new {
                p[i * INSN] = code;
                p[i * INSN + 2..i * INSN + 4].copy_from_slice(&(o as i16).to_le_bytes());
            }
        }
        if op == MOV64_REG {
            if ctx_regs & (1 << s) != 0 {
                ctx_regs |= 1 << d;
            } else {
                ctx_regs &= !(1 << d);
            }
        } else if op == CALL {
            ctx_regs &= !0x3f;
        } else if writes(&p, i, d) && op & 0x07 != 0x05 {
            ctx_regs &= !(1 << d);
        }
        if op == CALL && src(&p, i) == 0 {
            let h = imm(&p, i) as u32;
            if matches!(h, HELPER_LOOKUP | HELPER_UPDATE | HELPER_DELETE) {
                let map = match def_before(&p, &start, &targets, &prog.map_refs, i, 1) {
                    Some(Def::Map(m)) => maps.get(m),
                    _ => None,
                };
                let on_stack = |r: u8, len: u32| {
                    matches!(def_before(&p, &start, &targets, &prog.map_refs, i, r),
                        Some(Def::Stack(c)) if c >= -512 && c + i64::from(len) <= 0)
                };
                if let Some(m) = map {
                    let proven = on_stack(2, m.key_size)
                        && (h != HELPER_UPDATE || on_stack(3, m.value_size));
                    if proven {
                        set_imm(&mut p, i, h + STACK_PROVEN);
                    }
                }
            }
        }
        i += 1;
    }
    Ok(p)
}

/// The program's image for the kernel, with `fds[m]` the file descriptor of map `m`.
pub(crate) fn kernel_image(prog: &ProgramSpec, fds: &[i32]) -> Vec<u8> {
    let mut p = prog.insns.clone();
    for &(i, m) in &prog.map_refs {
        p[i * INSN + 1] = (p[i * INSN + 1] & 0x0f) | (1 << 4); // BPF_PSEUDO_MAP_FD
        set_imm(&mut p, i, fds.get(m).copied().unwrap_or(-1) as u32);
        set_imm(&mut p, i + 1, 0);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One instruction: opcode, registers, offset, immediate.
    fn insn(op: u8, regs: u8, off: i16, imm: i32) -> [u8; INSN] {
        let mut b = [0u8; INSN];
        b[0] = op;
        b[1] = regs;
        b[2..4].copy_from_slice(&off.to_le_bytes());
        b[4..8].copy_from_slice(&imm.to_le_bytes());
        b
    }

    const MOV64_IMM: u8 = 0xb7;
    const JEQ_IMM: u8 = 0x15;

    fn program(insns: &[[u8; INSN]]) -> ProgramSpec {
        ProgramSpec {
            name: "p".into(),
            section: "xdp".into(),
            insns: insns.concat(),
            map_refs: Vec::new(),
        }
    }

    fn refusal(insns: &[[u8; INSN]]) -> Option<String> {
        match userspace_image(&program(insns), &[]) {
            Ok(_) => None,
            Err(super::super::LoadError::Verifier(why)) => Some(why),
            Err(e) => panic!("refused for another reason: {e}"),
        }
    }

    #[test]
    fn forward_jumps_load_and_jumps_back_are_refused() {
        let mov = insn(MOV64_IMM, 0, 0, 2);
        let exit = insn(EXIT, 0, 0, 0);
        // if r0 == 0 goto +1; r0 = 2; exit
        assert_eq!(refusal(&[insn(JEQ_IMM, 0, 1, 0), mov, exit]), None);
        // r0 = 2; if r0 == 0 goto -2 (back to itself's predecessor); exit
        let back = refusal(&[mov, insn(JEQ_IMM, 0, -2, 0), exit]).unwrap();
        assert!(back.contains("goes back"), "{back}");
        // A final unconditional jump can only go back.
        let tail = refusal(&[mov, insn(0x05, 0, -2, 0)]).unwrap();
        assert!(tail.contains("does not end with an exit"), "{tail}");
    }

    /// rbpf's interpreter adds a jump's offset to its position in 16 bits: in a longer
    /// program a forward jump past instruction 32,767 would wrap to the start (a loop) or
    /// past the end (a panic). Such programs are refused at load.
    #[test]
    fn programs_past_the_interpreters_16_bit_jumps_are_refused() {
        let mov = insn(MOV64_IMM, 0, 0, 0);
        let mut long = vec![mov; USERSPACE_MAX_INSNS + 1];
        long[USERSPACE_MAX_INSNS - 2] = insn(0x05, 0, 1, 0);
        *long.last_mut().unwrap() = insn(EXIT, 0, 0, 0);
        let why = refusal(&long).unwrap();
        assert!(why.contains("at most"), "{why}");
        // The longest program taken: the same shape, one instruction shorter.
        long.remove(0);
        assert_eq!(refusal(&long), None);
    }
}
