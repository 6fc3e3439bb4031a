//! Turns rules into a classic BPF program for `SECCOMP_SET_MODE_FILTER`.
//!
//! Layout, checked top to bottom:
//!
//! 1. the architecture in `seccomp_data` must be the program's: any other (i386 via `int 0x80`,
//!    arm32 compat) gets `ENOSYS`, as if the kernel had no compat layer;
//! 2. on x86_64, syscall numbers with the x32 bit (`0x4000_0000`) get `ENOSYS`;
//! 3. one block per denied syscall: `if nr == N { rules...; return ALLOW }`;
//! 4. everything else is allowed.
//!
//! Every block ends in a return, so blocks never jump into each other and each jump is short.

use seccompiler::sock_filter;

use crate::rules::{Action, Rule, When};
use crate::{Arch, SeccompError};

// Classic BPF opcodes (linux/bpf_common.h) in the combinations used here.
const LOAD_WORD_ABSOLUTE: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JUMP_IF_EQUAL: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JUMP_IF_GREATER_OR_EQUAL: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JUMP_IF_ANY_BIT_SET: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const AND: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RETURN: u16 = 0x06; // BPF_RET | BPF_K

// Return values (linux/seccomp.h).
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

// Offsets in `struct seccomp_data { int nr; u32 arch; u64 ip; u64 args[6]; }`. Both supported
// architectures are little-endian, so an argument's low half sits at its own offset.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGUMENTS: u32 = 16;

/// The x32 ABI marks its syscall numbers with this bit (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The kernel refuses longer programs (`BPF_MAXINSNS`).
pub(crate) const MAX_INSTRUCTIONS: usize = 4096;

fn statement(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn load_argument(argument: u8) -> sock_filter {
    statement(
        LOAD_WORD_ABSOLUTE,
        OFFSET_ARGUMENTS + 8 * u32::from(argument),
    )
}

fn return_value(action: Action) -> u32 {
    match action {
        Action::Errno(errno) => SECCOMP_RET_ERRNO | u32::from(errno.code()),
    }
}

/// The program's instructions for `rules` on `arch`. Rules naming syscalls `arch` lacks are left
/// out.
pub(crate) fn generate(arch: Arch, rules: &[Rule]) -> Result<Vec<sock_filter>, SeccompError> {
    let enosys = return_value(Action::Errno(crate::Errno::ENOSYS));
    let mut program = vec![
        statement(LOAD_WORD_ABSOLUTE, OFFSET_ARCH),
        jump(JUMP_IF_EQUAL, arch.audit_value(), 1, 0),
        statement(RETURN, enosys),
        statement(LOAD_WORD_ABSOLUTE, OFFSET_NR),
    ];
    if arch == Arch::X86_64 {
        program.push(jump(JUMP_IF_GREATER_OR_EQUAL, X32_SYSCALL_BIT, 0, 1));
        program.push(statement(RETURN, enosys));
    }

    // Group rules by syscall, keeping the order of first appearance.
    let mut syscalls: Vec<&str> = Vec::new();
    for rule in rules {
        if !syscalls.contains(&rule.syscall) {
            syscalls.push(rule.syscall);
        }
    }
    for name in syscalls {
        let Some(number) = arch.syscall_number(name) else {
            continue;
        };
        let mut block = Vec::new();
        for rule in rules.iter().filter(|rule| rule.syscall == name) {
            append_rule(&mut block, rule, name)?;
        }
        block.push(statement(RETURN, SECCOMP_RET_ALLOW));
        let skip = u8::try_from(block.len()).map_err(|_| SeccompError::RulesTooLong {
            syscall: name.to_owned(),
        })?;
        program.push(jump(JUMP_IF_EQUAL, number, 0, skip));
        program.append(&mut block);
    }
    program.push(statement(RETURN, SECCOMP_RET_ALLOW));

    if program.len() > MAX_INSTRUCTIONS {
        return Err(SeccompError::ProgramTooLarge {
            instructions: program.len(),
        });
    }
    Ok(program)
}

/// Appends the instructions of one rule: return the rule's action if it matches, else fall
/// through to the next instruction.
fn append_rule(block: &mut Vec<sock_filter>, rule: &Rule, name: &str) -> Result<(), SeccompError> {
    let action = statement(RETURN, return_value(rule.action));
    match rule.when {
        When::Always => block.push(action),
        When::Equals { argument, value } => {
            block.push(load_argument(argument));
            block.push(jump(JUMP_IF_EQUAL, value, 0, 1));
            block.push(action);
        }
        When::MaskedEquals {
            argument,
            mask,
            value,
        } => {
            block.push(load_argument(argument));
            block.push(statement(AND, mask));
            block.push(jump(JUMP_IF_EQUAL, value, 0, 1));
            block.push(action);
        }
        When::AnyBitSet { argument, mask } => {
            block.push(load_argument(argument));
            block.push(jump(JUMP_IF_ANY_BIT_SET, mask, 0, 1));
            block.push(action);
        }
        When::NoneOf { argument, values } => {
            block.push(load_argument(argument));
            let count = values.len();
            for (index, value) in values.iter().enumerate() {
                // On a match, skip the remaining comparisons and the action.
                let skip = u8::try_from(count - index).map_err(|_| SeccompError::RulesTooLong {
                    syscall: name.to_owned(),
                })?;
                block.push(jump(JUMP_IF_EQUAL, *value, skip, 0));
            }
            block.push(action);
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod interpreter {
    //! A classic BPF interpreter for the opcodes `generate` emits, so tests can run a program
    //! against syscalls of any architecture without installing it.

    use super::*;

    /// Runs `program` on a `seccomp_data` made of `arch`, `nr` and `arguments`.
    pub(crate) fn run(program: &[sock_filter], arch: u32, nr: u32, arguments: [u64; 6]) -> u32 {
        let word = |offset: u32| -> u32 {
            match offset {
                OFFSET_NR => nr,
                OFFSET_ARCH => arch,
                _ => {
                    let index = ((offset - OFFSET_ARGUMENTS) / 8) as usize;
                    let value = arguments[index];
                    if (offset - OFFSET_ARGUMENTS) & 7 == 0 {
                        value as u32
                    } else {
                        (value >> 32) as u32
                    }
                }
            }
        };
        let mut accumulator = 0u32;
        let mut counter = 0usize;
        loop {
            let instruction = &program[counter];
            counter += 1;
            match instruction.code {
                LOAD_WORD_ABSOLUTE => accumulator = word(instruction.k),
                AND => accumulator &= instruction.k,
                RETURN => return instruction.k,
                JUMP_IF_EQUAL | JUMP_IF_GREATER_OR_EQUAL | JUMP_IF_ANY_BIT_SET => {
                    let taken = match instruction.code {
                        JUMP_IF_EQUAL => accumulator == instruction.k,
                        JUMP_IF_GREATER_OR_EQUAL => accumulator >= instruction.k,
                        _ => accumulator & instruction.k != 0,
                    };
                    let offset = if taken {
                        instruction.jt
                    } else {
                        instruction.jf
                    };
                    counter += usize::from(offset);
                }
                code => panic!("unexpected opcode {code:#x}"),
            }
        }
    }

    pub(crate) const ALLOW: u32 = SECCOMP_RET_ALLOW;

    pub(crate) fn errno(code: u16) -> u32 {
        SECCOMP_RET_ERRNO | u32::from(code)
    }
}
