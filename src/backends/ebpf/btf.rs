//! Just enough BTF to read libbpf-style map definitions: the `.maps` section's variables are
//! structs whose members `type`, `max_entries`, `key_size`/`key`, `value_size`/`value` encode
//! numbers as array lengths (`int (*type)[N]`) and types as pointers to them. Every offset
//! and index read from the object is checked; a malformed BTF section is an error.

use super::LoadError;

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug)]
struct Type {
    name_off: u32,
    kind: u32,
    vlen: usize,
    /// `size` or `type`, by kind.
    size_or_type: u32,
    /// The bytes after the common header.
    extra: Vec<u8>,
}

/// Parsed BTF types (index 0 is `void`).
pub(crate) struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn bad(what: &str) -> LoadError {
    LoadError::Btf(what.to_string())
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, LoadError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| bad("truncated"))
}

/// A map definition read from BTF.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct BtfMap {
    pub(crate) name: String,
    pub(crate) map_type: u32,
    pub(crate) key_size: u32,
    pub(crate) value_size: u32,
    pub(crate) max_entries: u32,
}

impl Btf {
    pub(crate) fn parse(b: &[u8]) -> Result<Btf, LoadError> {
        if b.len() < 24 || u16::from_le_bytes([b[0], b[1]]) != BTF_MAGIC {
            return Err(bad("not BTF (little endian)"));
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let type_off = u32_at(b, 8)? as usize;
        let type_len = u32_at(b, 12)? as usize;
        let str_off = u32_at(b, 16)? as usize;
        let str_len = u32_at(b, 20)? as usize;
        let ts = hdr_len
            .checked_add(type_off)
            .ok_or_else(|| bad("offsets"))?;
        let te = ts.checked_add(type_len).ok_or_else(|| bad("offsets"))?;
        let ss = hdr_len.checked_add(str_off).ok_or_else(|| bad("offsets"))?;
        let se = ss.checked_add(str_len).ok_or_else(|| bad("offsets"))?;
        let tb = b.get(ts..te).ok_or_else(|| bad("type section"))?;
        let strings = b.get(ss..se).ok_or_else(|| bad("string section"))?.to_vec();
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            vlen: 0,
            size_or_type: 0,
            extra: Vec::new(),
        }];
        let mut o = 0;
        while o < tb.len() {
            let name_off = u32_at(tb, o)?;
            let info = u32_at(tb, o + 4)?;
            let size_or_type = u32_at(tb, o + 8)?;
            o += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let extra_len = match kind {
                KIND_INT => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ENUM64 => 12 * vlen,
                _ => return Err(bad("unknown type kind")),
            };
            let extra = tb
                .get(o..o + extra_len)
                .ok_or_else(|| bad("truncated type"))?
                .to_vec();
            o += extra_len;
            types.push(Type {
                name_off,
                kind,
                vlen,
                size_or_type,
                extra,
            });
            if types.len() > 1 << 20 {
                return Err(bad("too many types"));
            }
        }
        Ok(Btf { types, strings })
    }

    fn name(&self, off: u32) -> String {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = s.iter().position(|c| *c == 0).unwrap_or(s.len());
        String::from_utf8_lossy(&s[..end]).into_owned()
    }

    fn ty(&self, id: u32) -> Result<&Type, LoadError> {
        self.types.get(id as usize).ok_or_else(|| bad("type id"))
    }

    /// Follow typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Result<&Type, LoadError> {
        for _ in 0..32 {
            let t = self.ty(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Ok(t),
            }
        }
        Err(bad("type chain too long"))
    }

    /// The size in bytes of type `id`.
    fn size_of(&self, id: u32, depth: usize) -> Result<u32, LoadError> {
        if depth > 32 {
            return Err(bad("type nesting"));
        }
        let t = self.resolve(id)?;
        match t.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                Ok(t.size_or_type)
            }
            KIND_PTR => Ok(8),
            KIND_ARRAY => {
                let elem = u32_at(&t.extra, 0)?;
                let n = u32_at(&t.extra, 8)?;
                self.size_of(elem, depth + 1)?
                    .checked_mul(n)
                    .ok_or_else(|| bad("array size"))
            }
            _ => Err(bad("type without a size")),
        }
    }

    /// `int (*name)[N]`: N.
    fn ptr_array_len(&self, id: u32) -> Result<u32, LoadError> {
        let p = self.resolve(id)?;
        if p.kind != KIND_PTR {
            return Err(bad("map field is not a pointer"));
        }
        let a = self.resolve(p.size_or_type)?;
        if a.kind != KIND_ARRAY {
            return Err(bad("map field does not point to an array"));
        }
        u32_at(&a.extra, 8)
    }

    /// The maps of the `.maps` data section, in the order of their offsets.
    pub(crate) fn maps(&self) -> Result<Vec<(u32, BtfMap)>, LoadError> {
        let Some(sec) = self
            .types
            .iter()
            .find(|t| t.kind == KIND_DATASEC && self.name(t.name_off) == ".maps")
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for v in 0..sec.vlen {
            let var_id = u32_at(&sec.extra, v * 12)?;
            let offset = u32_at(&sec.extra, v * 12 + 4)?;
            let var = self.ty(var_id)?;
            if var.kind != KIND_VAR {
                return Err(bad("map is not a variable"));
            }
            let st = self.resolve(var.size_or_type)?;
            if st.kind != KIND_STRUCT {
                return Err(bad("map definition is not a struct"));
            }
            let mut m = BtfMap {
                name: self.name(var.name_off),
                ..BtfMap::default()
            };
            for k in 0..st.vlen {
                let mname = self.name(u32_at(&st.extra, k * 12)?);
                let mtype = u32_at(&st.extra, k * 12 + 4)?;
                match mname.as_str() {
                    "type" => m.map_type = self.ptr_array_len(mtype)?,
                    "max_entries" => m.max_entries = self.ptr_array_len(mtype)?,
                    "key_size" => m.key_size = self.ptr_array_len(mtype)?,
                    "value_size" => m.value_size = self.ptr_array_len(mtype)?,
                    "key" | "value" => {
                        let p = self.resolve(mtype)?;
                        if p.kind != KIND_PTR {
                            return Err(bad("map key/value is not a pointer"));
                        }
                        let size = self.size_of(p.size_or_type, 0)?;
                        if mname == "key" {
                            m.key_size = size;
                        } else {
                            m.value_size = size;
                        }
                    }
                    _ => {}
                }
            }
            out.push((offset, m));
        }
        out.sort_by_key(|(o, _)| *o);
        Ok(out)
    }
}
