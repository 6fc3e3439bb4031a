//! The running kernel's type information (BTF, `/sys/kernel/btf/vmlinux`): where the fields the
//! eBPF programs read are in this kernel's structures.
//!
//! Why it exists: the programs read a few kernel fields (a task's exit code, its argv's
//! address, its working directory's dentries); their offsets change between kernels and
//! configurations. They are looked up here when the programs are built, so one binary runs on
//! every kernel with BTF, and a kernel whose structures lack a field is refused by name.
//!
//! What it guarantees: every offset is read from the kernel's own description; members of
//! anonymous structs and unions are found through them, as C would; a malformed or truncated
//! file is an error, never a panic.

use std::collections::HashMap;
use std::fmt;

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// What went wrong reading BTF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BtfError {
    /// The file is not BTF or is cut short.
    Malformed(&'static str),
    /// This kernel has no such struct, or the struct no such member.
    Missing(String),
}

impl fmt::Display for BtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BtfError::Malformed(what) => write!(f, "malformed kernel BTF: {what}"),
            BtfError::Missing(what) => write!(f, "the kernel's BTF has no {what}"),
        }
    }
}

impl std::error::Error for BtfError {}

struct Type {
    kind: u32,
    name: u32,
    kind_flag: bool,
    vlen: u32,
    size_or_type: u32,
    /// Index of its first member (structs, unions) or parameter (function prototypes).
    first: usize,
}

struct Member {
    name: u32,
    type_id: u32,
    offset_bits: u32,
}

/// Parsed BTF: types by id (id 0 is `void`) and names.
pub struct Btf {
    types: Vec<Type>,
    members: Vec<Member>,
    strings: Vec<u8>,
    /// Named structs and typedefs, by name.
    by_name: HashMap<(u32, Vec<u8>), u32>,
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16, BtfError> {
    bytes
        .get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(BtfError::Malformed("truncated"))
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, BtfError> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn kernel() -> std::io::Result<Btf> {
        let bytes = std::fs::read("/sys/kernel/btf/vmlinux")?;
        Btf::parse(&bytes)
            .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err.to_string()))
    }

    /// Parses BTF in the byte order of this machine (little-endian only).
    pub fn parse(bytes: &[u8]) -> Result<Btf, BtfError> {
        if u16_at(bytes, 0)? != MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let header_len = u32_at(bytes, 4)? as usize;
        let type_off = u32_at(bytes, 8)? as usize;
        let type_len = u32_at(bytes, 12)? as usize;
        let str_off = u32_at(bytes, 16)? as usize;
        let str_len = u32_at(bytes, 20)? as usize;
        let types_start = header_len
            .checked_add(type_off)
            .ok_or(BtfError::Malformed("type section"))?;
        let types_bytes = bytes
            .get(types_start..types_start.saturating_add(type_len))
            .ok_or(BtfError::Malformed("type section out of the file"))?;
        let strings_start = header_len.saturating_add(str_off);
        let strings = bytes
            .get(strings_start..strings_start.saturating_add(str_len))
            .ok_or(BtfError::Malformed("string section out of the file"))?
            .to_vec();
        let mut types = vec![Type {
            kind: 0,
            name: 0,
            kind_flag: false,
            vlen: 0,
            size_or_type: 0,
            first: 0,
        }];
        let mut members = Vec::new();
        let mut at = 0;
        while at < types_bytes.len() {
            let name = u32_at(types_bytes, at)?;
            let info = u32_at(types_bytes, at + 4)?;
            let size_or_type = u32_at(types_bytes, at + 8)?;
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let kind_flag = info >> 31 == 1;
            let first = members.len();
            let vlen_usize = vlen as usize;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for index in 0..vlen_usize {
                        let base = at + index * 12;
                        members.push(Member {
                            name: u32_at(types_bytes, base)?,
                            type_id: u32_at(types_bytes, base + 4)?,
                            offset_bits: u32_at(types_bytes, base + 8)?,
                        });
                    }
                    vlen_usize * 12
                }
                KIND_ENUM => vlen_usize * 8,
                KIND_FUNC_PROTO => {
                    for index in 0..vlen_usize {
                        let base = at + index * 8;
                        members.push(Member {
                            name: u32_at(types_bytes, base)?,
                            type_id: u32_at(types_bytes, base + 4)?,
                            offset_bits: 0,
                        });
                    }
                    vlen_usize * 8
                }
                KIND_DATASEC | KIND_ENUM64 => vlen_usize * 12,
                0 | KIND_PTR | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | 12 | 16 | KIND_TYPE_TAG => 0,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            at += extra;
            if at > types_bytes.len() {
                return Err(BtfError::Malformed("type cut short"));
            }
            types.push(Type {
                kind,
                name,
                kind_flag,
                vlen,
                size_or_type,
                first,
            });
        }
        let mut btf = Btf {
            types,
            members,
            strings,
            by_name: HashMap::new(),
        };
        for (id, ty) in btf.types.iter().enumerate().skip(1) {
            if matches!(ty.kind, KIND_STRUCT | KIND_TYPEDEF) && ty.name != 0 {
                let name = btf.name(ty.name).to_vec();
                btf.by_name.entry((ty.kind, name)).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn name(&self, offset: u32) -> &[u8] {
        let rest = self.strings.get(offset as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    fn get(&self, id: u32) -> Result<&Type, BtfError> {
        self.types
            .get(id as usize)
            .ok_or(BtfError::Malformed("type id out of range"))
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..32 {
            let ty = self.get(id)?;
            if matches!(
                ty.kind,
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
            ) {
                id = ty.size_or_type;
            } else {
                return Ok(id);
            }
        }
        Err(BtfError::Malformed("typedef loop"))
    }

    fn struct_id(&self, name: &str) -> Result<u32, BtfError> {
        self.by_name
            .get(&(KIND_STRUCT, name.as_bytes().to_vec()))
            .copied()
            .ok_or_else(|| BtfError::Missing(format!("struct {name}")))
    }

    /// The size in bytes of `struct name`.
    pub fn size_of(&self, name: &str) -> Result<u32, BtfError> {
        Ok(self.get(self.struct_id(name)?)?.size_or_type)
    }

    /// The byte offset of `member` in `struct name`, looking into anonymous members.
    pub fn offset_of(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let id = self.struct_id(name)?;
        self.find_member(id, member.as_bytes(), 0)?
            .ok_or_else(|| BtfError::Missing(format!("member {member} in struct {name}")))
    }

    fn find_member(&self, id: u32, wanted: &[u8], depth: u32) -> Result<Option<u32>, BtfError> {
        if depth > 8 {
            return Ok(None);
        }
        let ty = self.get(id)?;
        if !matches!(ty.kind, KIND_STRUCT | KIND_UNION) {
            return Ok(None);
        }
        let members = self
            .members
            .get(ty.first..ty.first + ty.vlen as usize)
            .ok_or(BtfError::Malformed("members out of range"))?;
        for member in members {
            let bits = if ty.kind_flag {
                member.offset_bits & 0x00ff_ffff
            } else {
                member.offset_bits
            };
            if member.name == 0 {
                let inner = self.resolve(member.type_id)?;
                if let Some(offset) = self.find_member(inner, wanted, depth + 1)? {
                    return Ok(Some(bits / 8 + offset));
                }
            } else if self.name(member.name) == wanted {
                if bits % 8 != 0 {
                    return Err(BtfError::Missing(format!(
                        "byte-aligned member {}",
                        String::from_utf8_lossy(wanted)
                    )));
                }
                return Ok(Some(bits / 8));
            }
        }
        Ok(None)
    }

    /// The number of arguments of the raw tracepoint `name` (its `btf_trace_NAME` typedef, a
    /// pointer to a prototype whose first parameter is the program's context).
    pub fn tracepoint_arguments(&self, name: &str) -> Result<u32, BtfError> {
        let typedef = format!("btf_trace_{name}");
        let id = self
            .by_name
            .get(&(KIND_TYPEDEF, typedef.as_bytes().to_vec()))
            .copied()
            .ok_or_else(|| BtfError::Missing(format!("tracepoint {name}")))?;
        let pointer = self.resolve(self.get(id)?.size_or_type)?;
        let pointer = self.get(pointer)?;
        if pointer.kind != KIND_PTR {
            return Err(BtfError::Malformed("tracepoint typedef is not a pointer"));
        }
        let prototype = self.get(self.resolve(pointer.size_or_type)?)?;
        if prototype.kind != KIND_FUNC_PROTO || prototype.vlen == 0 {
            return Err(BtfError::Malformed("tracepoint typedef is not a prototype"));
        }
        Ok(prototype.vlen - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little BTF blob: `struct outer { int a; union { int b; long c; }; }` and an `int`.
    fn sample() -> Vec<u8> {
        let strings = b"\0outer\0a\0b\0c\0int\0".to_vec();
        let name = |s: &str| {
            let needle = format!("\0{s}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .map(|p| p as u32 + 1)
                .unwrap_or(0)
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for word in words {
                types.extend_from_slice(&word.to_le_bytes());
            }
        };
        // 1: int
        push(&[name("int"), KIND_INT << 24, 4, 32]);
        // 2: union { int b; long c (as int); }
        push(&[0, KIND_UNION << 24 | 2, 8, name("b"), 1, 0, name("c"), 1, 0]);
        // 3: struct outer { int a; union at byte 8; }
        push(&[
            name("outer"),
            KIND_STRUCT << 24 | 2,
            16,
            name("a"),
            1,
            0,
            0,
            2,
            64,
        ]);
        let mut bytes = Vec::new();
        for word in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            if bytes.is_empty() {
                bytes.extend_from_slice(&MAGIC.to_le_bytes());
                bytes.push(1);
                bytes.push(0);
            }
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes.extend_from_slice(&types);
        bytes.extend_from_slice(&strings);
        bytes
    }

    #[test]
    fn offsets_are_found_also_in_anonymous_members() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.offset_of("outer", "a"), Ok(0));
        assert_eq!(btf.offset_of("outer", "c"), Ok(8));
        assert_eq!(btf.size_of("outer"), Ok(16));
        assert!(matches!(
            btf.offset_of("outer", "d"),
            Err(BtfError::Missing(_))
        ));
        assert!(matches!(
            btf.offset_of("inner", "a"),
            Err(BtfError::Missing(_))
        ));
    }

    #[test]
    fn cut_files_are_errors() {
        let bytes = sample();
        for len in [0, 3, 10, 30, bytes.len() - 1] {
            assert!(Btf::parse(&bytes[..len]).is_err(), "{len}");
        }
    }

    #[test]
    fn the_running_kernel_describes_the_fields_the_programs_read() {
        let btf = Btf::kernel().unwrap();
        for (name, member) in [
            ("task_struct", "exit_code"),
            ("task_struct", "mm"),
            ("mm_struct", "arg_start"),
            ("dentry", "d_parent"),
        ] {
            btf.offset_of(name, member).unwrap();
        }
        assert!(btf.tracepoint_arguments("sched_process_exec").unwrap() >= 3);
    }
}
