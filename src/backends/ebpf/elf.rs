//! Reading clang-built eBPF objects (`clang -O2 -target bpf -c prog.c`): the programs (one
//! per function in a section other than `.text`), the maps (libbpf's BTF-defined `.maps`, or
//! the older `maps` section of `struct bpf_map_def`s) and the relocations that point
//! instructions at maps. Everything else an object may need (calls between functions, global
//! data, CO-RE) is refused with a clear error.

use object::{Object as _, ObjectSection, ObjectSymbol, RelocationTarget, SectionKind};

use super::btf::Btf;
use super::maps::MapSpec;
use super::LoadError;

/// Bytes per instruction.
pub(crate) const INSN: usize = 8;
/// Most instructions a program may have.
pub const MAX_INSNS: usize = 65_536;

/// A program read from an object, before it is prepared for a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramSpec {
    /// The function's name.
    pub name: String,
    /// The ELF section it sits in (`xdp`, `xdp/...`).
    pub section: String,
    /// Its instructions as compiled.
    pub(crate) insns: Vec<u8>,
    /// `(instruction index, map index)`: the 64-bit loads that refer to maps.
    pub(crate) map_refs: Vec<(usize, usize)>,
}

impl ProgramSpec {
    /// Number of instructions (a 64-bit load counts two).
    pub fn len(&self) -> usize {
        self.insns.len() / INSN
    }

    /// Whether it has no instruction.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }
}

/// What an object file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectSpec {
    /// Its programs.
    pub programs: Vec<ProgramSpec>,
    /// Its maps.
    pub maps: Vec<MapSpec>,
    /// The `license` section's text.
    pub license: String,
}

fn err(e: impl std::fmt::Display) -> LoadError {
    LoadError::Elf(e.to_string())
}

/// Read an object file. Every offset and size in it is checked; a malformed file is an
/// error, never a panic.
pub fn parse(bytes: &[u8]) -> Result<ObjectSpec, LoadError> {
    let file = object::File::parse(bytes).map_err(err)?;
    if file.format() != object::BinaryFormat::Elf
        || file.architecture() != object::Architecture::Bpf
        || !file.is_little_endian()
    {
        return Err(LoadError::Elf("not a little-endian eBPF ELF object".into()));
    }
    // Maps: where each map's definition starts in its section, by section.
    let mut maps: Vec<MapSpec> = Vec::new();
    let mut map_at: Vec<(object::SectionIndex, u64, usize)> = Vec::new();
    if let Some(sec) = file.section_by_name(".maps") {
        let btf = file
            .section_by_name(".BTF")
            .ok_or_else(|| LoadError::Btf("`.maps` without `.BTF`".into()))?;
        let btf = Btf::parse(btf.data().map_err(err)?)?;
        for (_, m) in btf.maps()? {
            // (clang leaves the data section's offsets at zero, for the loader to take from
            // the symbols: the map's symbol says where its definition is.)
            let off = file
                .symbols()
                .find(|s| s.section_index() == Some(sec.index()) && s.name() == Ok(m.name.as_str()))
                .map(|s| s.address())
                .ok_or_else(|| LoadError::Map(format!("{}: no symbol", m.name)))?;
            let spec = MapSpec {
                name: m.name,
                map_type: m.map_type,
                key_size: m.key_size,
                value_size: m.value_size,
                max_entries: m.max_entries,
            };
            spec.check()?;
            map_at.push((sec.index(), off, maps.len()));
            maps.push(spec);
        }
    }
    if let Some(sec) = file.section_by_name("maps") {
        let data = sec.data().map_err(err)?;
        for sym in file
            .symbols()
            .filter(|s| s.section_index() == Some(sec.index()))
        {
            let off = sym.address() as usize;
            let def = off
                .checked_add(20)
                .and_then(|end| data.get(off..end))
                .ok_or_else(|| LoadError::Map("bpf_map_def past its section".into()))?;
            let f = |i: usize| u32::from_le_bytes([def[i], def[i + 1], def[i + 2], def[i + 3]]);
            let spec = MapSpec {
                name: sym.name().map_err(err)?.to_string(),
                map_type: f(0),
                key_size: f(4),
                value_size: f(8),
                max_entries: f(12),
            };
            spec.check()?;
            map_at.push((sec.index(), off as u64, maps.len()));
            maps.push(spec);
        }
    }
    if maps.len() > 64 {
        return Err(LoadError::Map("more than 64 maps".into()));
    }
    let total: u64 = maps.iter().map(|m| m.bytes()).sum();
    if total > super::maps::MAX_OBJECT_MAP_BYTES {
        return Err(LoadError::Map(format!("the maps would take {total} bytes")));
    }
    let license = file
        .section_by_name("license")
        .and_then(|s| s.data().ok())
        .map(|d| String::from_utf8_lossy(d.split(|c| *c == 0).next().unwrap_or(&[])).into_owned())
        .unwrap_or_default();
    let mut programs = Vec::new();
    for sec in file.sections() {
        let name = sec.name().map_err(err)?;
        if sec.kind() != SectionKind::Text || sec.size() == 0 {
            continue;
        }
        if name == ".text" {
            return Err(LoadError::Unsupported(
                "functions in `.text` (calls between functions)".into(),
            ));
        }
        let data = sec.data().map_err(err)?;
        if !data.len().is_multiple_of(INSN) || data.len() / INSN > MAX_INSNS {
            return Err(LoadError::Elf(format!("section {name}: bad size")));
        }
        // Relocations of this section: instruction -> map.
        let mut refs = Vec::new();
        for (off, rel) in sec.relocations() {
            let RelocationTarget::Symbol(si) = rel.target() else {
                return Err(LoadError::Unsupported(format!("relocation in {name}")));
            };
            let sym = file.symbol_by_index(si).map_err(err)?;
            let found = map_at
                .iter()
                .find(|(s, a, _)| Some(*s) == sym.section_index() && *a == sym.address());
            let Some(&(_, _, map)) = found else {
                return Err(LoadError::Unsupported(format!(
                    "relocation to {} (only maps are supported)",
                    sym.name().unwrap_or("?")
                )));
            };
            let at = off as usize;
            if !at.is_multiple_of(INSN)
                || at.checked_add(2 * INSN).is_none_or(|e| e > data.len())
                || data[at] != 0x18
            {
                return Err(LoadError::Elf(format!(
                    "map relocation at {at} is not a 64-bit load"
                )));
            }
            refs.push((at / INSN, map));
        }
        // One program per function symbol of the section.
        let mut funcs: Vec<(u64, u64, String)> = file
            .symbols()
            .filter(|s| {
                s.section_index() == Some(sec.index()) && s.kind() == object::SymbolKind::Text
            })
            .map(|s| (s.address(), s.size(), s.name().unwrap_or("").to_string()))
            .collect();
        funcs.sort();
        if funcs.is_empty() {
            funcs.push((0, data.len() as u64, name.to_string()));
        }
        for (addr, size, fname) in funcs {
            let (a, z) = (addr as usize, size as usize);
            let insns = data
                .get(a..a.checked_add(z).ok_or_else(|| err("size"))?)
                .ok_or_else(|| err("function past its section"))?;
            if insns.is_empty() || !a.is_multiple_of(INSN) || !z.is_multiple_of(INSN) {
                return Err(LoadError::Elf(format!("function {fname}: bad bounds")));
            }
            let first = a / INSN;
            let count = z / INSN;
            let map_refs: Vec<(usize, usize)> = refs
                .iter()
                .filter(|(i, _)| *i >= first && *i < first + count)
                .map(|(i, m)| (i - first, *m))
                .collect();
            if map_refs.iter().any(|(i, _)| i + 1 >= count) {
                return Err(LoadError::Elf(format!(
                    "function {fname}: a map load cut in half"
                )));
            }
            programs.push(ProgramSpec {
                name: fname,
                section: name.to_string(),
                insns: insns.to_vec(),
                map_refs,
            });
        }
    }
    if programs.is_empty() {
        return Err(LoadError::Elf("no program".into()));
    }
    Ok(ObjectSpec {
        programs,
        maps,
        license,
    })
}
