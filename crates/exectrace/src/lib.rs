//! The exec tracer: every exec and exit of every process of a sandbox, complete and rootless.
//!
//! Why it exists: long-lived sandboxes (docs/lifecycle.md) record what ran in them. Sampling
//! (`/proc` scans) misses short processes and ptrace is costly and exclusive; a seccomp filter
//! that returns `SECCOMP_RET_USER_NOTIF` for `execve` and `execveat` sees every exec, needs no
//! privilege beyond what the sandbox's init already has, and costs one round trip to the tracer
//! per exec. Exits come from a pidfd per exec'd process, which reports the wait status once
//! the process is reaped (Linux 6.15+); older kernels also notify `exit_group`, a second round
//! trip per process ([`ExitSource`]).
//!
//! How: the sandbox's init calls [`install_listener`] before it starts anything, so every
//! process of the sandbox inherits the filter, and sends the listener to the supervisor, which
//! runs [`spawn`]. The tracer thread reads what it needs about each notifying process (the
//! path and argv from its memory, its pid, parent and working directory from `/proc`), answers
//! `SECCOMP_USER_NOTIF_FLAG_CONTINUE` and then records an event through an
//! [`events::Recorder`], which never blocks.
//!
//! What it guarantees:
//!
//! - every notification is answered with CONTINUE, whatever could or could not be read about
//!   the process: the tracer never changes what a syscall does and never leaves a process
//!   blocked while it runs (events are recorded after the answer, and recording never blocks);
//! - one [`PROCESS_EXEC`](events::PROCESS_EXEC) event per exec attempt (a failing exec is still
//!   an attempt) and one [`PROCESS_EXIT`](events::PROCESS_EXIT) per process that attempted an
//!   exec, with its exit code or signal: from its pidfd when it is reaped (so a process whose
//!   parent never reaps it gets its exit event when it is reaped by whoever inherits it), or
//!   from `exit_group` on kernels before 6.15;
//! - a process that never execs (a fork of a shell that exits) gets no event with exits from
//!   pidfds; with `exit_group` notified, it gets an exit event;
//! - events the spool could not take are counted in [`TraceStats::lost`] (and reported by the
//!   spool itself), never silently dropped.
//!
//! As root there is a second mechanism, which stops nothing: [`prepare_ebpf`] loads two eBPF
//! programs on the scheduler's exec and exit tracepoints and [`PreparedEbpf::start`] attaches
//! them to one pid namespace (see the `ebpf` module for its guarantees: successful execs only,
//! and an exit event for every process, also those that never exec).
//!
//! What it does not do: the filter only notifies; the sandbox's own seccomp filter decides what
//! is allowed (a syscall it denies is never notified). When the listener is closed (the tracer
//! stopped), the kernel fails the filtered syscalls of processes still running with `ENOSYS`:
//! stop the tracer only once the sandbox is gone, or accept that the sandbox can no longer exec.

#![forbid(unsafe_code)]

mod asm;
mod batch;
mod btf;
mod ebpf;
mod filter;
mod procfs;
mod programs;
mod remote;
mod tracer;

pub use ebpf::{prepare_ebpf, prepare_ebpf_with_ring, spawn_ebpf, EbpfError, PreparedEbpf};
pub use filter::{install_listener, program, Arch, ExitSource};
pub use tracer::{spawn, StopReason, TraceOptions, TraceStats, TracerHandle};

/// Attribute of exec and exit events: the process's pid as the sandbox sees it.
pub const ATTR_PROCESS_PID: &str = "process.pid";
/// Attribute of exec events: the parent's pid as the sandbox sees it (0 when the parent is
/// outside the sandbox's pid namespace, as `getppid` reports it there).
pub const ATTR_PROCESS_PARENT_PID: &str = "process.parent_pid";
/// Attribute of exec events: the path given to `execve` (for `execveat`, resolved against its
/// directory descriptor).
pub const ATTR_PROCESS_EXECUTABLE_PATH: &str = "process.executable.path";
/// Attribute of exec events: argv, truncated at [`TraceOptions::max_argument_bytes`] or
/// redacted on request.
pub const ATTR_PROCESS_COMMAND_ARGS: &str = "process.command_args";
/// Attribute of exec events: the working directory as the sandbox sees it.
pub const ATTR_PROCESS_WORKING_DIRECTORY: &str = "process.working_directory";
/// Attribute of exit events: the exit code (low 8 bits of `exit_group`'s argument).
pub const ATTR_PROCESS_EXIT_CODE: &str = "process.exit.code";
/// Attribute of exit events: the signal that killed the process.
pub const ATTR_PROCESS_EXIT_SIGNAL: &str = "process.exit.signal";
/// Attribute of exit events: milliseconds from the process's last exec to its exit (a double;
/// with exits from pidfds, to its reap, normally at once after the exit).
pub const ATTR_PROCESS_DURATION_MS: &str = "process.duration_ms";
/// Attribute of exec events, present (`true`) when argv was cut at the byte limit.
pub const ATTR_COMMAND_ARGS_TRUNCATED: &str = "hardbox.process.command_args.truncated";
/// Attribute of exec events, present (`true`) when part of the path or argv could not be read
/// from the process (a bad pointer, or memory the tracer may not read).
pub const ATTR_INCOMPLETE: &str = "hardbox.process.incomplete";
/// Attribute of exec events: `execveat` when that syscall was used (absent for `execve`).
pub const ATTR_SYSCALL: &str = "hardbox.process.syscall";

/// What argv becomes when [`TraceOptions::redact_arguments`] is set: `[argv0, REDACTED]`.
pub const REDACTED: &str = "<redacted>";
