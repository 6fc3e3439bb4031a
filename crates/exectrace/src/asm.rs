//! A small eBPF assembler: instructions by name, jumps to labels, map references.
//!
//! Why it exists: the root tracer's two programs are short and must not need a C compiler or
//! an eBPF toolchain at build time, so they are written here as instruction sequences whose
//! kernel offsets are filled in from BTF when they are built.
//!
//! What it guarantees: every jump lands on its label (an unknown label is an error when the
//! program is finished, not a wrong jump), and wide loads take their two slots.

use std::collections::HashMap;

use sys::bpf::Instruction;

/// A register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg(pub u8);

pub const R0: Reg = Reg(0);
pub const R1: Reg = Reg(1);
pub const R2: Reg = Reg(2);
pub const R3: Reg = Reg(3);
pub const R4: Reg = Reg(4);
pub const R6: Reg = Reg(6);
pub const R7: Reg = Reg(7);
pub const R8: Reg = Reg(8);
pub const R9: Reg = Reg(9);
/// The frame pointer (read-only); the stack is the 512 bytes below it.
pub const FP: Reg = Reg(10);

/// Access sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    W = 0x00,
    DW = 0x18,
}

/// Conditions of jumps (unsigned unless named signed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    Eq = 0x10,
    Gt = 0x20,
    Ge = 0x30,
    Ne = 0x50,
    Sgt = 0x60,
    Lt = 0xa0,
    Le = 0xb0,
    Sle = 0xd0,
}

/// Helper functions by number (`enum bpf_func_id`).
pub mod helper {
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    pub const MAP_UPDATE_ELEM: i32 = 2;
    pub const MAP_DELETE_ELEM: i32 = 3;
    pub const KTIME_GET_NS: i32 = 5;
    pub const GET_CURRENT_PID_TGID: i32 = 14;
    pub const GET_CURRENT_TASK: i32 = 35;
    pub const PROBE_READ_USER: i32 = 112;
    pub const PROBE_READ_KERNEL: i32 = 113;
    pub const PROBE_READ_USER_STR: i32 = 114;
    pub const PROBE_READ_KERNEL_STR: i32 = 115;
    pub const GET_NS_CURRENT_PID_TGID: i32 = 120;
    pub const RINGBUF_OUTPUT: i32 = 130;
}

const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_JMP: u8 = 0x05;
const CLASS_ALU64: u8 = 0x07;
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const MODE_ATOMIC: u8 = 0xc0;
const SOURCE_K: u8 = 0x00;
const SOURCE_X: u8 = 0x08;
const ALU_ADD: u8 = 0x00;
const ALU_SUB: u8 = 0x10;
const ALU_MUL: u8 = 0x20;
const ALU_AND: u8 = 0x50;
const ALU_RSH: u8 = 0x70;
const ALU_MOV: u8 = 0xb0;
const JMP_JA: u8 = 0x00;
const JMP_CALL: u8 = 0x80;
const JMP_EXIT: u8 = 0x90;
/// `BPF_PSEUDO_MAP_FD`: the immediate of a wide load is a map's descriptor.
const PSEUDO_MAP_FD: u8 = 1;

fn insn(code: u8, dst: Reg, src: Reg, offset: i16, immediate: i32) -> Instruction {
    Instruction {
        code,
        registers: (src.0 << 4) | (dst.0 & 0x0f),
        offset,
        immediate,
    }
}

/// A program being written.
#[derive(Default)]
pub struct Asm {
    code: Vec<Instruction>,
    labels: HashMap<&'static str, usize>,
    jumps: Vec<(usize, &'static str)>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    fn push(&mut self, instruction: Instruction) -> &mut Asm {
        self.code.push(instruction);
        self
    }

    /// `dst = src`.
    pub fn mov(&mut self, dst: Reg, src: Reg) -> &mut Asm {
        self.push(insn(CLASS_ALU64 | ALU_MOV | SOURCE_X, dst, src, 0, 0))
    }

    /// `dst = immediate` (sign-extended).
    pub fn mov_imm(&mut self, dst: Reg, immediate: i32) -> &mut Asm {
        self.push(insn(
            CLASS_ALU64 | ALU_MOV | SOURCE_K,
            dst,
            R0,
            0,
            immediate,
        ))
    }

    /// `dst = the map with this descriptor`.
    pub fn load_map(&mut self, dst: Reg, map_fd: i32) -> &mut Asm {
        self.push(insn(
            CLASS_LD | MODE_IMM | Size::DW as u8,
            dst,
            Reg(PSEUDO_MAP_FD),
            0,
            map_fd,
        ));
        self.push(insn(0, R0, R0, 0, 0))
    }

    /// `dst += immediate`.
    pub fn add_imm(&mut self, dst: Reg, immediate: i32) -> &mut Asm {
        self.push(insn(
            CLASS_ALU64 | ALU_ADD | SOURCE_K,
            dst,
            R0,
            0,
            immediate,
        ))
    }

    /// `dst += src`.
    pub fn add(&mut self, dst: Reg, src: Reg) -> &mut Asm {
        self.push(insn(CLASS_ALU64 | ALU_ADD | SOURCE_X, dst, src, 0, 0))
    }

    /// `dst -= src`.
    pub fn sub(&mut self, dst: Reg, src: Reg) -> &mut Asm {
        self.push(insn(CLASS_ALU64 | ALU_SUB | SOURCE_X, dst, src, 0, 0))
    }

    /// `dst *= immediate`.
    pub fn mul_imm(&mut self, dst: Reg, immediate: i32) -> &mut Asm {
        self.push(insn(
            CLASS_ALU64 | ALU_MUL | SOURCE_K,
            dst,
            R0,
            0,
            immediate,
        ))
    }

    /// `dst &= immediate`.
    pub fn and_imm(&mut self, dst: Reg, immediate: i32) -> &mut Asm {
        self.push(insn(
            CLASS_ALU64 | ALU_AND | SOURCE_K,
            dst,
            R0,
            0,
            immediate,
        ))
    }

    /// `dst >>= immediate` (logical).
    pub fn rsh_imm(&mut self, dst: Reg, immediate: i32) -> &mut Asm {
        self.push(insn(
            CLASS_ALU64 | ALU_RSH | SOURCE_K,
            dst,
            R0,
            0,
            immediate,
        ))
    }

    /// `dst = *(size *)(src + offset)`.
    pub fn load(&mut self, size: Size, dst: Reg, src: Reg, offset: i16) -> &mut Asm {
        self.push(insn(CLASS_LDX | MODE_MEM | size as u8, dst, src, offset, 0))
    }

    /// `*(size *)(dst + offset) = src`.
    pub fn store(&mut self, size: Size, dst: Reg, offset: i16, src: Reg) -> &mut Asm {
        self.push(insn(CLASS_STX | MODE_MEM | size as u8, dst, src, offset, 0))
    }

    /// `*(size *)(dst + offset) = immediate`.
    pub fn store_imm(&mut self, size: Size, dst: Reg, offset: i16, immediate: i32) -> &mut Asm {
        self.push(insn(
            CLASS_ST | MODE_MEM | size as u8,
            dst,
            R0,
            offset,
            immediate,
        ))
    }

    /// `*(u64 *)(dst + offset) += src`, atomically.
    pub fn atomic_add(&mut self, dst: Reg, offset: i16, src: Reg) -> &mut Asm {
        self.push(insn(
            CLASS_STX | MODE_ATOMIC | Size::DW as u8,
            dst,
            src,
            offset,
            i32::from(ALU_ADD),
        ))
    }

    /// Calls helper `id`; arguments in r1-r5, result in r0, r1-r5 clobbered.
    pub fn call(&mut self, id: i32) -> &mut Asm {
        self.push(insn(CLASS_JMP | JMP_CALL, R0, R0, 0, id))
    }

    /// Returns r0.
    pub fn exit(&mut self) -> &mut Asm {
        self.push(insn(CLASS_JMP | JMP_EXIT, R0, R0, 0, 0))
    }

    /// Jumps to `label`.
    pub fn jump(&mut self, label: &'static str) -> &mut Asm {
        self.jumps.push((self.code.len(), label));
        self.push(insn(CLASS_JMP | JMP_JA, R0, R0, 0, 0))
    }

    /// Jumps to `label` if `dst cond immediate`.
    pub fn jump_if_imm(
        &mut self,
        dst: Reg,
        cond: Cond,
        immediate: i32,
        label: &'static str,
    ) -> &mut Asm {
        self.jumps.push((self.code.len(), label));
        self.push(insn(
            CLASS_JMP | cond as u8 | SOURCE_K,
            dst,
            R0,
            0,
            immediate,
        ))
    }

    /// Jumps to `label` if `dst cond src`.
    pub fn jump_if(&mut self, dst: Reg, cond: Cond, src: Reg, label: &'static str) -> &mut Asm {
        self.jumps.push((self.code.len(), label));
        self.push(insn(CLASS_JMP | cond as u8 | SOURCE_X, dst, src, 0, 0))
    }

    /// Places `label` at the next instruction.
    pub fn label(&mut self, label: &'static str) -> &mut Asm {
        self.labels.insert(label, self.code.len());
        self
    }

    /// The finished program, with every jump resolved.
    pub fn finish(mut self) -> Result<Vec<Instruction>, String> {
        for (at, label) in std::mem::take(&mut self.jumps) {
            let target = *self
                .labels
                .get(label)
                .ok_or_else(|| format!("eBPF program jumps to unknown label {label}"))?;
            let distance = target as i64 - at as i64 - 1;
            self.code[at].offset =
                i16::try_from(distance).map_err(|_| format!("eBPF jump to {label} is too far"))?;
        }
        Ok(self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_on_their_labels_forward_and_back() {
        let mut asm = Asm::new();
        asm.label("top")
            .mov_imm(R0, 0)
            .jump_if_imm(R0, Cond::Eq, 0, "end")
            .jump("top")
            .label("end")
            .exit();
        let code = asm.finish().unwrap();
        assert_eq!(code[1].offset, 1);
        assert_eq!(code[2].offset, -3);
        assert_eq!(code[1].code, 0x15);
        assert_eq!(code[3].code, 0x95);
    }

    #[test]
    fn unknown_labels_are_errors() {
        let mut asm = Asm::new();
        asm.jump("nowhere");
        assert!(asm.finish().is_err());
    }

    #[test]
    fn wide_loads_take_two_slots() {
        let mut asm = Asm::new();
        asm.load_map(R1, 7).exit();
        let code = asm.finish().unwrap();
        assert_eq!(code.len(), 3);
        assert_eq!((code[0].code, code[0].registers), (0x18, 0x11));
        assert_eq!(code[0].immediate, 7);
        assert_eq!(code[1], insn(0, R0, R0, 0, 0));
    }
}
