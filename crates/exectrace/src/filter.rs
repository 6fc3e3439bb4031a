//! The notify filter: a few BPF instructions that hand `execve` and `execveat` of the native
//! architecture to the listener and allow everything else; `exit_group` too on kernels that
//! cannot report a reaped process's exit status through its pidfd (before Linux 6.15).
//!
//! Why a builder of its own: the program is fixed and tiny, and keeping it here (with a small
//! interpreter in the tests) keeps it independent of the sandbox's main filter compiler.
//!
//! What it guarantees: the program never denies anything. Syscalls of other architectures
//! (i386 through `int 0x80`, x32 numbers) are allowed here: the sandbox's main filter, installed
//! later by each command, refuses them, and seccomp applies the most restrictive answer of all
//! filters, so a denied syscall is never notified.

use std::os::fd::OwnedFd;

use sys::notify::{BpfInstruction, RETURN_ALLOW, RETURN_USER_NOTIFICATION};
use sys::Errno;

// Classic BPF opcodes (linux/bpf_common.h).
const LOAD_WORD_ABSOLUTE: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JUMP_IF_EQUAL: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const RETURN: u16 = 0x06; // BPF_RET | BPF_K

// Offsets in `struct seccomp_data { int nr; u32 arch; u64 ip; u64 args[6]; }`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;

/// An architecture the tracer supports, with the numbers the program and the tracer use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The architecture this crate was built for, if supported.
    pub fn native() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }

    /// `AUDIT_ARCH_*`, as the kernel reports it in `seccomp_data.arch`.
    pub fn audit_value(self) -> u32 {
        match self {
            // EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
            Arch::X86_64 => 0xc000_003e,
            // EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
            Arch::Aarch64 => 0xc000_00b7,
        }
    }

    /// `__NR_execve`.
    pub fn execve(self) -> i32 {
        match self {
            Arch::X86_64 => 59,
            Arch::Aarch64 => 221,
        }
    }

    /// `__NR_execveat`.
    pub fn execveat(self) -> i32 {
        match self {
            Arch::X86_64 => 322,
            Arch::Aarch64 => 281,
        }
    }

    /// `__NR_exit_group`.
    pub fn exit_group(self) -> i32 {
        match self {
            Arch::X86_64 => 231,
            Arch::Aarch64 => 94,
        }
    }
}

fn statement(code: u16, k: u32) -> BpfInstruction {
    BpfInstruction {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump_if_equal(k: i32, jt: u8, jf: u8) -> BpfInstruction {
    BpfInstruction {
        code: JUMP_IF_EQUAL,
        jt,
        jf,
        k: u32::from_ne_bytes(k.to_ne_bytes()),
    }
}

/// Where the tracer learns how a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitSource {
    /// From the process's pidfd once it is reaped (`PIDFD_INFO_EXIT`, Linux 6.15+): the filter
    /// does not notify `exit_group`, so a process costs one round trip to the tracer (its
    /// exec), and the exit is seen without stopping the process.
    Pidfd,
    /// From an `exit_group` notification (older kernels), with the pidfd for processes that
    /// end otherwise (a signal).
    ExitGroup,
}

impl ExitSource {
    /// What the running kernel allows; [`install_listener`] and the tracer both decide with
    /// it, so the filter and the tracer agree (see [`sys::notify::pidfd_reports_exit_status`]).
    pub fn detect() -> ExitSource {
        if sys::notify::pidfd_reports_exit_status() {
            ExitSource::Pidfd
        } else {
            ExitSource::ExitGroup
        }
    }
}

/// The notify program for `arch`; with [`ExitSource::ExitGroup`], `exit_group` is notified too:
///
/// ```text
/// 0: A = arch
/// 1: if A != AUDIT_ARCH goto 6
/// 2: A = nr
/// 3: if A == execve goto 7
/// 4: if A == execveat goto 7
/// 5: if A == exit_group goto 7      (ExitSource::ExitGroup only)
/// 6: return ALLOW
/// 7: return USER_NOTIF
/// ```
pub fn program(arch: Arch, exits: ExitSource) -> Vec<BpfInstruction> {
    let mut program = vec![
        statement(LOAD_WORD_ABSOLUTE, OFFSET_ARCH),
        BpfInstruction {
            code: JUMP_IF_EQUAL,
            jt: 0,
            jf: 4,
            k: arch.audit_value(),
        },
        statement(LOAD_WORD_ABSOLUTE, OFFSET_NR),
        jump_if_equal(arch.execve(), 3, 0),
        jump_if_equal(arch.execveat(), 2, 0),
        jump_if_equal(arch.exit_group(), 1, 0),
        statement(RETURN, RETURN_ALLOW),
        statement(RETURN, RETURN_USER_NOTIFICATION),
    ];
    if exits == ExitSource::Pidfd {
        // Without the exit_group test: the jumps over it shrink by one.
        program.remove(5);
        program[1].jf = 3;
        program[3].jt = 2;
        program[4].jt = 1;
    }
    program
}

/// Installs the notify filter on the calling thread and returns its listener.
///
/// The caller must be single-threaded (the filter is not synchronised to other threads) and
/// have `no_new_privs` set or `CAP_SYS_ADMIN` in its user namespace (the sandbox's init has the
/// latter). Every process it starts afterwards inherits the filter. `exit_group` is notified
/// only where [`ExitSource::detect`] says the kernel cannot report exits through pidfds.
/// `ENOSYS` on an architecture other than x86_64 and aarch64.
pub fn install_listener() -> Result<OwnedFd, Errno> {
    let arch = Arch::native().ok_or(Errno::NOSYS)?;
    sys::notify::install_listener_filter(&program(arch, ExitSource::detect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a program of the three instruction kinds used here on (nr, arch).
    fn run(program: &[BpfInstruction], nr: i32, arch: u32) -> u32 {
        let mut accumulator = 0u32;
        let mut pc = 0usize;
        for _ in 0..program.len() {
            let instruction = program[pc];
            match instruction.code {
                LOAD_WORD_ABSOLUTE => {
                    accumulator = match instruction.k {
                        OFFSET_NR => u32::from_ne_bytes(nr.to_ne_bytes()),
                        OFFSET_ARCH => arch,
                        other => panic!("unexpected load offset {other}"),
                    };
                    pc += 1;
                }
                JUMP_IF_EQUAL => {
                    let skip = if accumulator == instruction.k {
                        instruction.jt
                    } else {
                        instruction.jf
                    };
                    pc += 1 + usize::from(skip);
                }
                RETURN => return instruction.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
        panic!("program ran off its end")
    }

    #[test]
    fn notifies_exactly_exec_and_exit_group_of_the_native_architecture() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let program = program(arch, ExitSource::ExitGroup);
            let audit = arch.audit_value();
            for nr in [arch.execve(), arch.execveat(), arch.exit_group()] {
                assert_eq!(
                    run(&program, nr, audit),
                    RETURN_USER_NOTIFICATION,
                    "{arch:?} {nr}"
                );
            }
            for nr in [0, 1, 60, 93, 95, 222, 280, 323, 0x4000_003b, -1] {
                assert_eq!(run(&program, nr, audit), RETURN_ALLOW, "{arch:?} {nr}");
            }
            // The same numbers on a foreign architecture (i386: execve is 11) are allowed.
            for nr in [arch.execve(), arch.exit_group(), 11, 252] {
                assert_eq!(
                    run(&program, nr, 0x4000_0003),
                    RETURN_ALLOW,
                    "{arch:?} {nr}"
                );
            }
        }
    }

    #[test]
    fn with_exits_from_pidfds_notifies_exactly_exec_of_the_native_architecture() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let program = program(arch, ExitSource::Pidfd);
            assert_eq!(program.len(), 7);
            let audit = arch.audit_value();
            for nr in [arch.execve(), arch.execveat()] {
                assert_eq!(
                    run(&program, nr, audit),
                    RETURN_USER_NOTIFICATION,
                    "{arch:?} {nr}"
                );
            }
            for nr in [arch.exit_group(), 0, 1, 60, 93, 222, 280, 323, -1] {
                assert_eq!(run(&program, nr, audit), RETURN_ALLOW, "{arch:?} {nr}");
            }
            for nr in [arch.execve(), arch.execveat(), 11] {
                assert_eq!(
                    run(&program, nr, 0x4000_0003),
                    RETURN_ALLOW,
                    "{arch:?} {nr}"
                );
            }
        }
    }
}
