//! The sandbox's seccomp filter, kept as data and compiled to BPF.
//!
//! Why it exists: seccomp is the last isolation layer the launcher applies before exec. It shuts
//! kernel interfaces an agent never needs (keyrings, BPF, io_uring, namespaces, mounts, module
//! loading, tracing other processes, terminal injection) so that a kernel bug behind them cannot
//! be reached from inside the sandbox.
//!
//! What it guarantees:
//!
//! - every rule lives in [`AGENT_RULES`] with the reason it is there and the errno it returns;
//! - a denial is an errno (`EPERM`, or `ENOSYS` where libc should fall back), never a kill, so the
//!   agent sees an ordinary error and keeps running;
//! - syscalls from any other architecture or ABI (i386 `int 0x80`, x32) fail with `ENOSYS`;
//! - [`Filter::compile`] does all allocation, before fork; [`install`] does not allocate, so it
//!   is safe to call between fork and exec.
//!
//! Typical use in the launcher:
//!
//! ```no_run
//! let mut filter = seccomp::Filter::agent_default();
//! filter.allow("ptrace")?; // the policy asked for a debugger
//! let program = filter.compile()?; // before fork
//! // ... in the child, after no_new_privs and Landlock, as the very last step before exec:
//! seccomp::install(&program)?;
//! # Ok::<(), seccomp::SeccompError>(())
//! ```

mod bpf;
mod rules;
mod status;
mod syscalls;

use std::fmt;
use std::io;
use std::path::PathBuf;

pub use rules::{Action, Rule, When, AGENT_RULES};
pub use status::{parse_status, status_of_self, SeccompMode};

/// Errors from building, compiling or installing a filter, or reading its status.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// `Filter::allow` was given a name the agent filter does not deny.
    #[error("cannot allow syscall {name:?}: the seccomp filter does not deny it (denied syscalls: {denied})")]
    NotDenied {
        /// The name given.
        name: String,
        /// The syscalls that can be allowed back, comma-separated.
        denied: String,
    },
    /// The host architecture has no filter.
    #[error("no seccomp filter for architecture {arch}: hardbox supports x86_64 and aarch64")]
    UnsupportedArchitecture {
        /// `std::env::consts::ARCH` of the host.
        arch: &'static str,
    },
    /// The program needs a jump longer than classic BPF's 8-bit offsets allow.
    #[error(
        "seccomp program has {instructions} instructions, too many for classic BPF's short jumps"
    )]
    JumpTooLong {
        /// The program's length.
        instructions: usize,
    },
    /// The whole program exceeds the kernel's limit.
    #[error("seccomp program has {instructions} instructions, more than the kernel's 4096")]
    ProgramTooLarge {
        /// The program's length.
        instructions: usize,
    },
    /// The program was compiled for another architecture than the one running.
    #[error("seccomp program was compiled for {program}, but this host is {host}")]
    ForeignProgram {
        /// The program's architecture.
        program: Arch,
        /// `std::env::consts::ARCH` of the host.
        host: &'static str,
    },
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("failed to set no_new_privs before installing the seccomp filter")]
    NoNewPrivs(#[source] io::Error),
    /// The kernel refused the filter.
    #[error("failed to install the seccomp filter")]
    Install(#[source] io::Error),
    /// `/proc/self/status` could not be read.
    #[error("failed to read {path}")]
    ReadStatus {
        /// The file read.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// `/proc/self/status` has no `Seccomp:` line (kernel built without seccomp).
    #[error("{path} has no Seccomp line: the kernel has no seccomp support")]
    MissingStatus {
        /// The file read.
        path: PathBuf,
    },
}

/// An errno a rule returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(u16);

impl Errno {
    /// "Operation not permitted": what the kernel answers an unprivileged caller.
    pub const EPERM: Errno = Errno(1);
    /// "Function not implemented": makes libc fall back to an older syscall.
    pub const ENOSYS: Errno = Errno(38);

    /// The numeric value (the same on x86_64 and aarch64).
    pub fn code(self) -> u16 {
        self.0
    }

    /// The symbolic name, for documentation and messages.
    pub fn name(self) -> &'static str {
        match self {
            Errno::EPERM => "EPERM",
            Errno::ENOSYS => "ENOSYS",
            _ => "unknown errno",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// An architecture hardbox builds filters for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// x86_64 (the x32 ABI and i386 compat syscalls are denied).
    X86_64,
    /// aarch64 (arm32 compat syscalls are denied).
    Aarch64,
}

impl Arch {
    /// The architecture this binary runs on, if hardbox supports it.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Aarch64),
            _ => None,
        }
    }

    /// The number of syscall `name` on this architecture, for the syscalls the rules name.
    /// `None` for other names and for syscalls this architecture lacks.
    pub fn syscall_number(self, name: &str) -> Option<u32> {
        let syscall = syscalls::lookup(name)?;
        match self {
            Arch::X86_64 => syscall.x86_64,
            Arch::Aarch64 => syscall.aarch64,
        }
    }

    /// `AUDIT_ARCH_*`, as the kernel reports it in `seccomp_data.arch`.
    fn audit_value(self) -> u32 {
        match self {
            // EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
            Arch::X86_64 => 62 | 0x8000_0000 | 0x4000_0000,
            // EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
            Arch::Aarch64 => 183 | 0x8000_0000 | 0x4000_0000,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        })
    }
}

/// A filter before compilation: the rules in force and the target architecture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    arch: Option<Arch>,
    rules: Vec<Rule>,
}

impl Filter {
    /// The agent default filter ([`AGENT_RULES`]) for the host architecture. On an unsupported
    /// architecture, [`Filter::compile`] fails.
    pub fn agent_default() -> Filter {
        Filter {
            arch: Arch::host(),
            rules: AGENT_RULES.to_vec(),
        }
    }

    /// The agent default filter for `arch`, for inspecting or testing another architecture's
    /// program. Only a program for the host can be installed.
    pub fn agent_default_for(arch: Arch) -> Filter {
        Filter {
            arch: Some(arch),
            rules: AGENT_RULES.to_vec(),
        }
    }

    /// The rules in force, in the order they are checked.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Takes syscall `name` back from the denials: every rule on it is dropped (for `clone`,
    /// that allows namespace flags too). Allowing an already-allowed denied syscall is a no-op.
    ///
    /// # Errors
    ///
    /// [`SeccompError::NotDenied`] if no rule of the agent filter names `name`, which catches
    /// typos and names of syscalls that were never denied.
    pub fn allow(&mut self, name: &str) -> Result<(), SeccompError> {
        if !AGENT_RULES.iter().any(|rule| rule.syscall == name) {
            let mut denied: Vec<&str> = AGENT_RULES.iter().map(|rule| rule.syscall).collect();
            denied.sort_unstable();
            denied.dedup();
            return Err(SeccompError::NotDenied {
                name: name.to_owned(),
                denied: denied.join(", "),
            });
        }
        self.rules.retain(|rule| rule.syscall != name);
        Ok(())
    }

    /// Compiles the filter to a BPF program. Call it before fork: it allocates.
    ///
    /// # Errors
    ///
    /// [`SeccompError::UnsupportedArchitecture`] on a host hardbox has no filter for, and
    /// [`SeccompError::ProgramTooLarge`] or [`SeccompError::JumpTooLong`] if the rules outgrow
    /// what classic BPF can express.
    pub fn compile(&self) -> Result<Program, SeccompError> {
        let arch = self.arch.ok_or(SeccompError::UnsupportedArchitecture {
            arch: std::env::consts::ARCH,
        })?;
        Ok(Program {
            arch,
            instructions: bpf::generate(arch, &self.rules)?,
        })
    }
}

/// A compiled filter, ready for [`install`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    arch: Arch,
    instructions: Vec<seccompiler::sock_filter>,
}

impl Program {
    /// The architecture the program checks for.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The number of BPF instructions.
    pub fn len(&self) -> usize {
        self.instructions.len()
    }

    /// Always false: a program at least checks the architecture. Present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.instructions.is_empty()
    }
}

/// Installs `program` on the calling thread; it is inherited across fork and exec.
///
/// The caller must already have set `no_new_privs` (the launcher does it as its own, ordered
/// step, before Landlock). The underlying call sets it once more, which is harmless. Install
/// in a single-threaded child: other threads of the process are not filtered.
///
/// Does not allocate, so it may run between fork and exec.
///
/// # Errors
///
/// [`SeccompError::ForeignProgram`] if `program` was compiled for another architecture,
/// [`SeccompError::NoNewPrivs`] or [`SeccompError::Install`] if the kernel refuses.
pub fn install(program: &Program) -> Result<(), SeccompError> {
    if Arch::host() != Some(program.arch) {
        return Err(SeccompError::ForeignProgram {
            program: program.arch,
            host: std::env::consts::ARCH,
        });
    }
    seccompiler::apply_filter(&program.instructions).map_err(|error| match error {
        seccompiler::Error::Prctl(source) => SeccompError::NoNewPrivs(source),
        seccompiler::Error::Seccomp(source) => SeccompError::Install(source),
        // The remaining variants come from compiling (ours is done), the TSYNC flag (not
        // used) or an empty program (ours never is); report them as a refused install
        // without allocating.
        _ => SeccompError::Install(io::Error::from(io::ErrorKind::InvalidInput)),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::bpf::interpreter::{errno, run, ALLOW};
    use super::*;

    fn program(arch: Arch) -> Vec<seccompiler::sock_filter> {
        match Filter::agent_default_for(arch).compile() {
            Ok(program) => program.instructions,
            Err(error) => panic!("agent filter for {arch} does not compile: {error}"),
        }
    }

    #[test]
    fn agent_filter_compiles_for_both_architectures() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let instructions = program(arch);
            assert!(instructions.len() > 60, "{arch}: {}", instructions.len());
            assert!(instructions.len() <= bpf::MAX_INSTRUCTIONS);
        }
        assert!(Filter::agent_default().compile().is_ok());
    }

    #[test]
    fn every_rule_has_a_reason_and_a_known_syscall() {
        for rule in AGENT_RULES {
            assert!(
                rule.why.len() > 10,
                "rule for {} needs a reason",
                rule.syscall
            );
            let syscall = syscalls::lookup(rule.syscall);
            assert!(
                syscall
                    .is_some_and(|syscall| syscall.x86_64.is_some() || syscall.aarch64.is_some()),
                "rule names {} which has no number",
                rule.syscall
            );
        }
    }

    #[test]
    fn rules_have_no_duplicates_and_always_rules_stand_alone() {
        let mut seen = BTreeSet::new();
        for rule in AGENT_RULES {
            assert!(
                seen.insert((rule.syscall, format!("{:?}", rule.when))),
                "duplicate rule for {}",
                rule.syscall
            );
            if rule.when == When::Always {
                let count = AGENT_RULES
                    .iter()
                    .filter(|other| other.syscall == rule.syscall)
                    .count();
                assert_eq!(count, 1, "{} has an Always rule and others", rule.syscall);
            }
        }
    }

    #[test]
    fn every_table_syscall_is_used_by_a_rule() {
        for syscall in syscalls::SYSCALLS {
            assert!(
                AGENT_RULES.iter().any(|rule| rule.syscall == syscall.name),
                "{} is in the table but no rule uses it",
                syscall.name
            );
        }
    }

    const EPERM: u32 = 0x0005_0001;
    const ENOSYS: u32 = 0x0005_0026;
    const X86_64: u32 = 0xc000_003e;
    const AARCH64: u32 = 0xc000_00b7;
    const I386: u32 = 0x4000_0003;

    /// Runs the agent program for `arch` on syscall `name` with `arguments`.
    fn verdict(arch: Arch, name: &str, arguments: [u64; 6]) -> u32 {
        let Some(number) = arch.syscall_number(name) else {
            panic!("no number for {name} on {arch}");
        };
        run(&program(arch), arch.audit_value(), number, arguments)
    }

    #[test]
    fn program_semantics_on_both_architectures() {
        let check = |name: &str, arguments: [u64; 6], expected: u32| {
            for arch in [Arch::X86_64, Arch::Aarch64] {
                assert_eq!(
                    verdict(arch, name, arguments),
                    expected,
                    "{arch}: {name}{arguments:?}"
                );
            }
        };
        check("keyctl", [0; 6], EPERM);
        check("unshare", [0x1000_0000, 0, 0, 0, 0, 0], EPERM);
        check("clone3", [0; 6], ENOSYS);
        // fork and pthread_create's clone fallback stay allowed.
        check("clone", [0x11, 0, 0, 0, 0, 0], ALLOW);
        check("clone", [0x003d_0f00, 0, 0, 0, 0, 0], ALLOW);
        check("clone", [0x1000_0011, 0, 0, 0, 0, 0], EPERM);
        check("clone", [0x2000_0011, 0, 0, 0, 0, 0], EPERM);
        // socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC) vs raw and packet sockets.
        check("socket", [2, 0x8_0001, 0, 0, 0, 0], ALLOW);
        check("socket", [2, 0x8_0003, 1, 0, 0, 0], EPERM);
        check("socket", [17, 2, 0, 0, 0, 0], EPERM);
        check("socket", [1, 1, 0, 0, 0, 0], ALLOW);
        check("ioctl", [0, 0x5412, 0, 0, 0, 0], EPERM);
        check("ioctl", [0, 0x541c, 0, 0, 0, 0], EPERM);
        check("ioctl", [0, 0x5413, 0, 0, 0, 0], ALLOW);
        // The high half of an int argument is ignored by the kernel and by the filter.
        check("ioctl", [0, 0x1_0000_5412, 0, 0, 0, 0], EPERM);
        check("mknodat", [0, 0, 0o020_600, 0, 0, 0], EPERM);
        check("mknodat", [0, 0, 0o060_600, 0, 0, 0], EPERM);
        check("mknodat", [0, 0, 0o010_600, 0, 0, 0], ALLOW);
        check("mknodat", [0, 0, 0o100_600, 0, 0, 0], ALLOW);
        check("personality", [0xffff_ffff, 0, 0, 0, 0, 0], ALLOW);
        check("personality", [0, 0, 0, 0, 0, 0], ALLOW);
        check("personality", [0x0002_0008, 0, 0, 0, 0, 0], ALLOW);
        check("personality", [0x0040_0000, 0, 0, 0, 0, 0], EPERM);
        check("personality", [0x0004_0000, 0, 0, 0, 0, 0], EPERM);
    }

    #[test]
    fn unlisted_syscalls_are_allowed() {
        // read and write are 0/1 on x86_64 and 63/64 on aarch64.
        assert_eq!(run(&program(Arch::X86_64), X86_64, 0, [0; 6]), ALLOW);
        assert_eq!(run(&program(Arch::Aarch64), AARCH64, 63, [0; 6]), ALLOW);
    }

    #[test]
    fn foreign_architectures_and_x32_get_enosys() {
        let x86_64 = program(Arch::X86_64);
        assert_eq!(run(&x86_64, I386, 0, [0; 6]), ENOSYS);
        assert_eq!(run(&x86_64, AARCH64, 0, [0; 6]), ENOSYS);
        assert_eq!(run(&x86_64, X86_64, 0x4000_0000, [0; 6]), ENOSYS);
        assert_eq!(run(&x86_64, X86_64, 0x4000_0000 | 250, [0; 6]), ENOSYS);
        let aarch64 = program(Arch::Aarch64);
        assert_eq!(run(&aarch64, X86_64, 63, [0; 6]), ENOSYS);
        assert_eq!(errno(Errno::ENOSYS.code()), ENOSYS);
    }

    #[test]
    fn x86_64_only_syscalls_are_denied_on_x86_64() {
        assert_eq!(verdict(Arch::X86_64, "iopl", [0; 6]), EPERM);
        assert_eq!(
            verdict(Arch::X86_64, "mknod", [0, 0o020_600, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(
            verdict(Arch::X86_64, "mknod", [0, 0o010_600, 0, 0, 0, 0]),
            ALLOW
        );
    }

    #[test]
    fn allow_takes_a_syscall_back() {
        let mut filter = Filter::agent_default_for(Arch::X86_64);
        assert!(filter.allow("ptrace").is_ok());
        assert!(filter.allow("ptrace").is_ok());
        assert!(filter.rules().iter().all(|rule| rule.syscall != "ptrace"));
        let instructions = match filter.compile() {
            Ok(program) => program.instructions,
            Err(error) => panic!("{error}"),
        };
        assert_eq!(run(&instructions, X86_64, 101, [0; 6]), ALLOW);
        assert_eq!(run(&instructions, X86_64, 250, [0; 6]), EPERM);
    }

    #[test]
    fn allow_rejects_names_the_filter_does_not_deny() {
        let check = |name: &str| {
            let mut filter = Filter::agent_default();
            match filter.allow(name) {
                Err(error @ SeccompError::NotDenied { .. }) => {
                    let message = error.to_string();
                    assert!(message.contains(&format!("{name:?}")), "{message}");
                    assert!(message.contains("keyctl, lookup_dcookie"), "{message}");
                }
                other => panic!("allow({name:?}) gave {other:?}"),
            }
            assert_eq!(filter, Filter::agent_default());
        };
        check("ptrcae");
        check("read");
        check("");
    }

    #[test]
    fn foreign_program_is_not_installed() {
        let foreign = match Arch::host() {
            Some(Arch::X86_64) => Arch::Aarch64,
            _ => Arch::X86_64,
        };
        let program = match Filter::agent_default_for(foreign).compile() {
            Ok(program) => program,
            Err(error) => panic!("{error}"),
        };
        assert!(matches!(
            install(&program),
            Err(SeccompError::ForeignProgram { .. })
        ));
    }
}
