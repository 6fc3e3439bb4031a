//! Running a [`LaunchPlan`]: the parent (the CLI), init (pid 1 of the sandbox) and the command.
//!
//! ```text
//! parent ──clone(user, mount, pid, ipc, uts, net, cgroup)──► init ──vfork──► command ──exec
//!   writes id maps, passes mounts ─socket─►  applies plan.setup
//!   creates the cgroup                       (meanwhile, on another CPU)
//!   sends "go" ──────────────────socket─►    spawns the command      applies plan.command
//!   forwards signals, enforces the timeout   reaps, forwards signals
//!   ◄──────────────── the command's status ─ socket, then exits
//! ```
//!
//! Guarantees: a failing step is reported to the parent over a close-on-exec pipe as
//! (phase, step index, errno) and becomes a [`LaunchError`] naming the step; nothing runs
//! unless every step before it succeeded; the command joins the sandbox's cgroup
//! (when the plan has limits) before its first step, and a cgroup that cannot be created stops the
//! launch; the parent's exit status is the command's (128 + N when signal N killed it, 137 when
//! the memory limit's OOM killer did, 124 when the timeout did). Signals INT, TERM, HUP, QUIT,
//! USR1, USR2 and WINCH sent to the parent are forwarded to init, which forwards them to the
//! command.
//!
//! Start-up cost: the parent does its own work (cgroup creation) while init mounts the
//! sandbox's filesystem on another CPU, and without a cgroup to remove it returns as soon as
//! init reports the status, without waiting for the kernel to tear the namespaces down (init
//! exits right after reporting, and its exit kills whatever else still runs in the sandbox).
//! See `docs/benchmarks.md`.
//!
//! The parent's side up to the "go" (`start_init`, `InitProcess`), init's setup
//! (`prepare_init`) and the command's process (`run_command`) are shared with session mode
//! ([`crate::session`]), whose init stays up and spawns more commands on request.

use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};
use sys::linux::Linux;
use sys::process::{self as proc, ExecTarget, Forked, Namespaces, SignalFd, SignalSet};
use sys::Errno;

use rustix::event::{PollFd, PollFlags};

use crate::apply::{apply, Resources};
use crate::plan::{LaunchPlan, Network, Step};
use crate::terminal::{self, Relay};

/// How the command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
    /// The kernel's OOM killer ended it: the sandbox reached its memory limit.
    OutOfMemory {
        limit_bytes: u64,
    },
    /// The sandbox ran longer than its timeout and was killed.
    TimedOut {
        after: Duration,
    },
}

/// Exit code when the timeout killed the sandbox (as GNU `timeout`).
pub const EXIT_TIMED_OUT: i32 = 124;

impl ExitStatus {
    /// The shell convention: the exit code, or 128 + the signal's number; 137 (SIGKILL) for
    /// an OOM kill and [`EXIT_TIMED_OUT`] for a timeout.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(signal) => 128 + signal,
            ExitStatus::OutOfMemory { .. } => 128 + Signal::KILL.as_raw(),
            ExitStatus::TimedOut { .. } => EXIT_TIMED_OUT,
        }
    }
}

/// Why the command could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("invalid command or environment: it contains a NUL byte")]
    InvalidCommand,
    #[error("failed to compile the seccomp filter")]
    Seccomp(#[source] seccomp::SeccompError),
    #[error("{call}: {}", sys::errno::describe(*errno))]
    Parent { call: &'static str, errno: Errno },
    #[error("failed to create the sandbox's namespaces: {}", sys::errno::describe(*errno))]
    Namespaces { errno: Errno },
    #[error("failed to write {path}")]
    IdMap {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to prepare mount of {path}: {call}: {}", sys::errno::describe(*errno))]
    PrepareMount {
        path: PathBuf,
        call: &'static str,
        errno: Errno,
    },
    #[error("{step}: {}", sys::errno::describe(*errno))]
    Step { step: String, errno: Errno },
    #[error("command not found: {program}")]
    CommandNotFound { program: String },
    #[error("command not executable: {program}: {}", sys::errno::describe(*errno))]
    NotExecutable { program: String, errno: Errno },
    #[error("the sandbox's init ended before reporting")]
    InitVanished,
    #[error("failed to set up the sandbox's network: {0}")]
    Network(String),
    #[error("failed to find the host's cgroup hierarchies")]
    CgroupDetect(#[source] cgroup::DetectError),
    #[error("failed to create the sandbox's cgroup")]
    Cgroup(#[source] cgroup::CreateError),
    #[error("failed to move the sandbox into its cgroup: failed to write {path}")]
    CgroupJoin {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid exec request: working directory {path} is not an absolute path without '..'")]
    RelativeWorkingDirectory { path: PathBuf },
    #[error("invalid exec request: stdin, stdout and stderr are passed exactly when no terminal is asked for")]
    MissingStdio,
    #[error("no command with exec id {id} runs in the sandbox")]
    UnknownExec { id: u64 },
    #[error("the sandbox has ended")]
    SessionEnded,
    #[error("the sandbox's init sent a malformed message")]
    Protocol,
}

impl LaunchError {
    /// The exit code a shell gives for this failure: 127 when the command was not found, 126
    /// when it could not be executed, 125 for every other failure to start it.
    pub fn exit_code(&self) -> i32 {
        match self {
            LaunchError::CommandNotFound { .. } => 127,
            LaunchError::NotExecutable { .. } => 126,
            _ => EXIT_SETUP_FAILED,
        }
    }

    /// The layer or step that failed, for hints.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            LaunchError::Parent { errno, .. }
            | LaunchError::Namespaces { errno }
            | LaunchError::PrepareMount { errno, .. }
            | LaunchError::Step { errno, .. }
            | LaunchError::NotExecutable { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// The signals forwarded to the command (plus SIGCHLD, which wakes the waiting loop).
const FORWARDED: [i32; 7] = [
    libc_signal::INT,
    libc_signal::TERM,
    libc_signal::HUP,
    libc_signal::QUIT,
    libc_signal::USR1,
    libc_signal::USR2,
    libc_signal::WINCH,
];

/// Signal numbers, from rustix (so this crate needs no libc).
mod libc_signal {
    use rustix::process::Signal;
    pub const INT: i32 = Signal::INT.as_raw();
    pub const TERM: i32 = Signal::TERM.as_raw();
    pub const HUP: i32 = Signal::HUP.as_raw();
    pub const QUIT: i32 = Signal::QUIT.as_raw();
    pub const USR1: i32 = Signal::USR1.as_raw();
    pub const USR2: i32 = Signal::USR2.as_raw();
    pub const WINCH: i32 = Signal::WINCH.as_raw();
    pub const CHLD: i32 = Signal::CHILD.as_raw();
}

pub(crate) fn supervised_signals() -> SignalSet {
    let mut all = FORWARDED.to_vec();
    all.push(libc_signal::CHLD);
    SignalSet::of(&all)
}

/// Which list a failing step belongs to.
pub(crate) const PHASE_SETUP: u32 = 1;
pub(crate) const PHASE_COMMAND: u32 = 2;
/// Init failed to join the sandbox's cgroup.
const PHASE_CGROUP: u32 = 3;
/// Opening (index 0) or attaching (index 1) the command's terminal failed.
pub(crate) const PHASE_TERMINAL: u32 = 4;
/// Opening the proxy's listeners failed.
const PHASE_NETWORK: u32 = 5;
/// Connecting a command's stdin, stdout and stderr failed.
const PHASE_STDIO: u32 = 6;
/// Session init's own hardening failed: index 0 close-on-exec, 1 non-dumpable, 2 signalfd,
/// 3 signal dispositions.
pub(crate) const PHASE_SESSION: u32 = 7;
/// The exec tracer's hook failed in init.
pub(crate) const PHASE_TRACE: u32 = 8;
/// Init could not use an exec request (bad strings, descriptors below 3 it could not move).
pub(crate) const PHASE_REQUEST: u32 = 9;
/// Init could not start an exec'd command's process (pipe, clone).
pub(crate) const PHASE_SPAWN: u32 = 10;
/// Exit code of init or the command when a step failed (the parent reports the step).
pub(crate) const EXIT_SETUP_FAILED: i32 = 125;
pub(crate) const RECORD_SIZE: usize = 12;

pub(crate) fn encode(phase: u32, index: usize, errno: Errno) -> [u8; RECORD_SIZE] {
    let mut record = [0u8; RECORD_SIZE];
    record[..4].copy_from_slice(&phase.to_le_bytes());
    record[4..8].copy_from_slice(&u32::try_from(index).unwrap_or(u32::MAX).to_le_bytes());
    record[8..].copy_from_slice(&errno.raw_os_error().to_le_bytes());
    record
}

pub(crate) fn decode(record: &[u8; RECORD_SIZE]) -> (u32, usize, Errno) {
    let word = |range: std::ops::Range<usize>| {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(&record[range]);
        bytes
    };
    let phase = u32::from_le_bytes(word(0..4));
    let index = u32::from_le_bytes(word(4..8)) as usize;
    let errno = Errno::from_raw_os_error(i32::from_le_bytes(word(8..12)));
    (phase, index, errno)
}

/// Adapts the `seccomp` crate's compiled program to `sys`.
pub(crate) struct SeccompProgram(seccomp::Program);

impl sys::SeccompFilter for SeccompProgram {
    fn install(&self) -> Result<(), Errno> {
        seccomp::install(&self.0).map_err(|error| match error {
            seccomp::SeccompError::NoNewPrivs(source) | seccomp::SeccompError::Install(source) => {
                Errno::from_io_error(&source).unwrap_or(Errno::INVAL)
            }
            _ => Errno::INVAL,
        })
    }
}

/// The sockets init opens in the sandbox's network namespace for [`Network::Proxy`], for the
/// parent's egress proxy to serve. Each is bound to every address of the namespace (which, with
/// every address routed to loopback, is every address), dual-stack when the kernel has IPv6.
#[derive(Debug)]
pub struct ProxyListeners {
    /// TCP port 80: plain HTTP, decided by its Host header.
    pub http: TcpListener,
    /// TCP port 443: TLS, decided by its server name (SNI).
    pub tls: TcpListener,
    /// `127.0.0.1:3128`: the explicit proxy `HTTP_PROXY` and `HTTPS_PROXY` name.
    pub explicit: TcpListener,
    /// UDP port 53: DNS.
    pub dns_udp: UdpSocket,
    /// TCP port 53: DNS.
    pub dns_tcp: TcpListener,
    /// Other TCP ports, as [`Network::Proxy`] lists them.
    pub tcp: Vec<(u16, TcpListener)>,
}

/// The address of the explicit proxy inside the sandbox.
pub const EXPLICIT_PROXY: &str = "127.0.0.1:3128";

/// What the caller does at points of the launch (the parent's side).
pub trait Hooks {
    /// The sandbox's network is ready: serve its listeners (e.g. on a thread) before the
    /// command starts. An error stops the launch.
    fn network(&mut self, listeners: ProxyListeners) -> Result<(), String>;

    /// The sandbox's namespaces exist and are set up (init's pid is `init`, in the caller's pid
    /// namespace); the command starts right after. An error stops the launch.
    fn started(&mut self, init: u32) -> Result<(), String> {
        let _ = init;
        Ok(())
    }
}

/// [`Hooks`] that do nothing; a plan with [`Network::Proxy`] then fails to launch.
#[derive(Debug)]
struct NoHooks;

impl Hooks for NoHooks {
    fn network(&mut self, _listeners: ProxyListeners) -> Result<(), String> {
        Err("nothing serves the sandbox's proxy listeners".to_owned())
    }
}

/// Runs the plan and waits for the command. Must be called from a single-threaded process.
///
/// # Errors
///
/// [`LaunchError`] when the sandbox could not be set up or the command could not be started;
/// the command's own failure is its [`ExitStatus`].
pub fn launch(plan: &LaunchPlan) -> Result<ExitStatus, LaunchError> {
    launch_with(plan, &mut NoHooks)
}

/// [`launch`], calling `hooks` at their points of the launch.
///
/// # Errors
///
/// As [`launch`]; [`LaunchError::Network`] when the hook refused the network.
pub fn launch_with(plan: &LaunchPlan, hooks: &mut dyn Hooks) -> Result<ExitStatus, LaunchError> {
    let exec = command_target(plan)?;
    let seccomp = compile_seccomp(plan)?;

    let signals = supervised_signals();
    let previous_mask = proc::block_signals(&signals).map_err(|errno| LaunchError::Parent {
        call: "sigprocmask",
        errno,
    })?;
    let result = launch_with_signals_blocked(
        plan,
        &exec,
        seccomp.as_ref(),
        &signals,
        &previous_mask,
        hooks,
    );
    // Restoring the mask cannot fail with a valid set; the command's result matters more.
    let _ = proc::set_signal_mask(&previous_mask);
    result
}

/// The plan's command, ready to exec without allocating.
pub(crate) fn command_target(plan: &LaunchPlan) -> Result<ExecTarget, LaunchError> {
    ExecTarget::new(
        &plan.settings.program,
        &plan.settings.arguments,
        &plan.environment_strings(),
        plan.search_path(),
    )
    .map_err(|_| LaunchError::InvalidCommand)
}

/// The plan's seccomp filter, compiled before any process starts (`None` when skipped).
pub(crate) fn compile_seccomp(plan: &LaunchPlan) -> Result<Option<SeccompProgram>, LaunchError> {
    if plan.settings.skip.seccomp {
        return Ok(None);
    }
    let mut filter = seccomp::Filter::agent_default();
    for name in &plan.settings.seccomp_allow {
        filter.allow(name).map_err(LaunchError::Seccomp)?;
    }
    let program = filter.compile().map_err(LaunchError::Seccomp)?;
    Ok(Some(SeccompProgram(program)))
}

fn launch_with_signals_blocked(
    plan: &LaunchPlan,
    exec: &ExecTarget,
    seccomp: Option<&SeccompProgram>,
    signals: &SignalSet,
    previous_mask: &SignalSet,
    hooks: &mut dyn Hooks,
) -> Result<ExitStatus, LaunchError> {
    let started = Instant::now();
    let parent_error = |call| move |errno| LaunchError::Parent { call, errno };
    let mut init = start_init(plan, hooks, CgroupUse::Limits, &mut |socket, report| {
        run_init(plan, exec, seccomp, socket, report, signals, previous_mask)
    })?;
    // Opened after the clone, so init never holds it; the signals are blocked already.
    let signal_fd = SignalFd::open(signals)
        .map_err(parent_error("signalfd"))
        .map_err(|error| init.abandon(error))?;
    // With a terminal, init sends its master once the sandbox's devpts is mounted; if init
    // failed instead, the socket is closed and its report below says why.
    let mut relay = None;
    if plan.settings.tty {
        let mut received = Vec::with_capacity(1);
        if let Ok(Some(TERMINAL)) = proc::receive_descriptors(init.socket.as_fd(), &mut received) {
            if let Some(master) = received.pop() {
                relay = Some(
                    Relay::new(master, plan.settings.interactive)
                        .map_err(parent_error("set up the terminal relay"))
                        .map_err(|error| init.abandon(error))?,
                );
            }
        }
    }
    init.go(hooks)?;
    init.read_report(plan)?;

    let deadline = plan
        .settings
        .timeout
        .map(|timeout| (started + timeout, timeout));
    let ending = supervise_init(
        init.pid,
        &init.socket,
        &signal_fd,
        deadline,
        init.group.as_ref(),
        relay.as_mut(),
    )
    .map_err(parent_error("waitpid"))?;
    if let Some(relay) = relay.as_mut() {
        relay.finish(TERMINAL_DRAIN_LIMIT);
    }
    drop(relay);
    let Some(group) = init.group.take() else {
        return Ok(ending.status);
    };
    // The cgroup can go only when no process is left in it. On v1 hosts only the command and
    // its descendants joined it, and once init reported the command's end it is usually empty
    // already: then it is removed while init exits (tearing the namespaces down takes longer
    // than the removal). Otherwise init's exit ends every process of the sandbox.
    let empty = !init.init_joined && group.processes().is_ok_and(|pids| pids.is_empty());
    if !ending.reaped && !empty {
        let _ = rustix::process::waitpid(Some(init.pid), WaitOptions::empty());
    }
    let status = out_of_memory(ending.status, plan, &group);
    remove_keeping_parents(group);
    Ok(status)
}

/// `status`, or [`ExitStatus::OutOfMemory`] when SIGKILL ended it and the cgroup's OOM killer
/// has been at work.
pub(crate) fn out_of_memory(
    status: ExitStatus,
    plan: &LaunchPlan,
    group: &cgroup::Cgroup,
) -> ExitStatus {
    match (status, plan.settings.limits.memory_bytes) {
        (ExitStatus::Signaled(9) | ExitStatus::Exited(137), Some(limit_bytes))
            if group.oom_kills().is_ok_and(|kills| kills > 0) =>
        {
            ExitStatus::OutOfMemory { limit_bytes }
        }
        (status, _) => status,
    }
}

/// Init as the parent sees it between the clone and the command's start.
pub(crate) struct InitProcess {
    /// Init's pid in the caller's pid namespace.
    pub(crate) pid: Pid,
    /// The parent's end of the socket pair (stream, close-on-exec).
    pub(crate) socket: OwnedFd,
    /// The read end of the failure report pipe: a record when a step failed, end of file once
    /// the command runs.
    pub(crate) report: OwnedFd,
    /// The sandbox's cgroup, when the plan has limits.
    pub(crate) group: Option<cgroup::Cgroup>,
    /// Whether init itself joined the cgroup (a v2 leaf).
    pub(crate) init_joined: bool,
    /// The v1 `tasks` files the commands write themselves into; sent to init with "go".
    join_files: Vec<OwnedFd>,
}

impl InitProcess {
    /// Kills init (and so the whole sandbox) and waits for it; returns `error`.
    pub(crate) fn abandon(&self, error: LaunchError) -> LaunchError {
        let _ = rustix::process::kill_process(self.pid, Signal::KILL);
        let _ = rustix::process::waitpid(Some(self.pid), WaitOptions::empty());
        error
    }

    /// Calls [`Hooks::started`], then lets init spawn its command(s), handing it the cgroup
    /// files they join.
    pub(crate) fn go(&mut self, hooks: &mut dyn Hooks) -> Result<(), LaunchError> {
        hooks
            .started(self.pid.as_raw_nonzero().get().unsigned_abs())
            .map_err(LaunchError::Network)
            .map_err(|error| self.abandon(error))?;
        // If init already failed, the socket is closed; its report says why.
        let join_files = std::mem::take(&mut self.join_files);
        let borrowed: Vec<_> = join_files.iter().map(AsFd::as_fd).collect();
        let _ = proc::send_descriptors(self.socket.as_fd(), GO, &borrowed);
        Ok(())
    }

    /// Waits for init's report: end of file once the command runs (or, in a session, once
    /// init is ready), the failed step otherwise (init is then gone).
    pub(crate) fn read_report(&mut self, plan: &LaunchPlan) -> Result<(), LaunchError> {
        let mut record = [0u8; RECORD_SIZE];
        let read = proc::read_full(&self.report, &mut record).map_err(|errno| {
            self.abandon(LaunchError::Parent {
                call: "read",
                errno,
            })
        })?;
        if read == 0 {
            return Ok(());
        }
        Err(self.abandon(if read == RECORD_SIZE {
            failure(plan, &record)
        } else {
            LaunchError::InitVanished
        }))
    }
}

/// Starts init in the sandbox's namespaces and sets it up from the parent's side: writes its
/// id maps, prepares its mounts and creates the cgroup (on a second thread meanwhile), and
/// serves the proxy's listeners through `hooks`. Init runs `init_main` with its end of the
/// socket and the report pipe's write end, and ends the process itself.
/// What the sandbox's cgroup is for, beyond its limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CgroupUse {
    /// Only the limits (a `run`): on v1 hierarchies nothing else is created. Init's end kills
    /// every process of its pid namespace, so no freezer is needed to end them, and no CPU time
    /// is reported.
    Limits,
    /// The limits, and also CPU time (v1 `cpuacct`) and a freezer to stop every process (a
    /// long-lived session, whose usage `ls` shows).
    Tracking,
}

pub(crate) fn start_init(
    plan: &LaunchPlan,
    hooks: &mut dyn Hooks,
    cgroup_use: CgroupUse,
    init_main: &mut dyn FnMut(OwnedFd, OwnedFd),
) -> Result<InitProcess, LaunchError> {
    let parent_error = |call| move |errno| LaunchError::Parent { call, errno };
    let (parent_socket, init_socket) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .map_err(parent_error("socketpair"))?;
    let (report_read, report_write) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(parent_error("pipe"))?;

    let init = match proc::clone_into_namespaces(Namespaces::ALL)
        .map_err(|errno| LaunchError::Namespaces { errno })?
    {
        Forked::Child => {
            drop(parent_socket);
            drop(report_read);
            init_main(init_socket, report_write);
            // `init_main` ends with the sandbox; should it return, init ends here.
            proc::exit_immediately(EXIT_SETUP_FAILED)
        }
        Forked::Parent(pid) => pid,
    };
    drop(init_socket);
    drop(report_write);

    let abandon = |error: LaunchError| {
        let _ = rustix::process::kill_process(init, Signal::KILL);
        let _ = rustix::process::waitpid(Some(init), WaitOptions::empty());
        error
    };
    // The cgroup is created on a second thread while this one writes init's id maps and
    // prepares its mounts (an overlay for an image), and init mounts the sandbox's filesystem
    // meanwhile: the three cost about the same, and none waits for another. Init spawns the
    // command only after the "go", and the command joins the cgroup before its first step.
    // (Init was cloned before the thread exists, so no lock can be held across a fork.)
    let wants_cgroup = plan.settings.limits.needs_cgroup() && !plan.settings.skip.cgroups;
    let (configured, joining) = std::thread::scope(|scope| {
        let creating = wants_cgroup.then(|| scope.spawn(|| create_cgroup(plan, init, cgroup_use)));
        let configured = configure_init(plan, init, &parent_socket);
        let joining = creating.map(|thread| {
            thread.join().unwrap_or(Err(LaunchError::Parent {
                call: "create the cgroup (the thread panicked)",
                errno: Errno::INVAL,
            }))
        });
        (configured, joining)
    });
    configured.map_err(abandon)?;
    let (group, join_files, init_joined) = match joining {
        Some(joining) => {
            let joining = joining.map_err(abandon)?;
            (Some(joining.group), joining.files, joining.init_joined)
        }
        None => (None, Vec::new(), false),
    };
    // With the proxy network, init sends its listeners once the namespace is set up; if init
    // failed instead, the socket is closed and its report says why.
    if let Network::Proxy { tcp_ports } = &plan.settings.network {
        let mut received = Vec::with_capacity(5 + tcp_ports.len());
        if let Ok(Some(NETWORK)) = proc::receive_descriptors(parent_socket.as_fd(), &mut received) {
            let listeners = proxy_listeners(received, tcp_ports)
                .ok_or(LaunchError::Network(
                    "init sent an unexpected set of listeners".to_owned(),
                ))
                .map_err(abandon)?;
            hooks
                .network(listeners)
                .map_err(LaunchError::Network)
                .map_err(abandon)?;
        }
    }
    Ok(InitProcess {
        pid: init,
        socket: parent_socket,
        report: report_read,
        group,
        init_joined,
        join_files,
    })
}

/// Removes the sandbox's own cgroup directories and keeps the shared `hardbox/` parents, which
/// the next sandbox would otherwise create again: making a memory cgroup is the costliest part
/// of creating one, and removing it the costliest part of removing one (0.28 ms of a 3 ms
/// launch together on the reference host). When a directory cannot go yet,
/// [`cgroup::Cgroup::remove`] retries (and removes the parents if empty, as it always does).
///
/// Best effort: `hardbox system gc` sweeps leftovers of killed CLIs.
pub(crate) fn remove_keeping_parents(mut group: cgroup::Cgroup) {
    if group.remove_leaves().is_err() {
        let _ = group.remove();
    }
}

/// The byte that lets init spawn the command.
const GO: u8 = 1;
/// The byte with which init sends the master of the command's terminal.
const TERMINAL: u8 = 2;
/// The byte with which init sends the proxy's listeners.
const NETWORK: u8 = 3;
/// How long the parent waits, after the command ended, for the last of its terminal output.
const TERMINAL_DRAIN_LIMIT: Duration = Duration::from_secs(1);
/// Size of the status record init sends when the command has ended.
pub(crate) const STATUS_SIZE: usize = 8;
const STATUS_EXITED: u32 = 1;
const STATUS_SIGNALED: u32 = 2;

pub(crate) fn encode_status(status: ExitStatus) -> [u8; STATUS_SIZE] {
    let (kind, value) = match status {
        ExitStatus::Signaled(signal) => (STATUS_SIGNALED, signal),
        other => (STATUS_EXITED, other.code()),
    };
    let mut record = [0u8; STATUS_SIZE];
    record[..4].copy_from_slice(&kind.to_le_bytes());
    record[4..].copy_from_slice(&value.to_le_bytes());
    record
}

pub(crate) fn decode_status(record: &[u8; STATUS_SIZE]) -> ExitStatus {
    let mut kind = [0u8; 4];
    kind.copy_from_slice(&record[..4]);
    let mut value = [0u8; 4];
    value.copy_from_slice(&record[4..]);
    let value = i32::from_le_bytes(value);
    if u32::from_le_bytes(kind) == STATUS_SIGNALED {
        ExitStatus::Signaled(value)
    } else {
        ExitStatus::Exited(value)
    }
}

/// The sandbox's cgroup, and how its processes join it.
struct Joining {
    group: cgroup::Cgroup,
    /// The v1 `tasks` files the command writes itself into, before its first step.
    files: Vec<OwnedFd>,
    /// Whether the parent moved init itself into the cgroup (a v2 leaf).
    init_joined: bool,
}

/// The name of a sandbox's cgroup: the CLI's pid (which owns and removes it) and init's.
/// `run-<owner>-<init>-<owner's start time>`: the owner is this process (the CLI, or a
/// long-lived sandbox's supervisor), and its start time tells it apart from a later process
/// that reuses its pid, whatever the binary is called (see [`sweep_cgroups`]).
fn cgroup_name(init: Pid) -> String {
    let owner = std::process::id();
    let init = init.as_raw_nonzero();
    match std::fs::read_to_string("/proc/self/stat")
        .ok()
        .as_deref()
        .and_then(stat_fields)
    {
        Some((_, start)) => format!("{CGROUP_PREFIX}{owner}-{init}-{start}"),
        None => format!("{CGROUP_PREFIX}{owner}-{init}"),
    }
}

/// The state letter and the start time (clock ticks after boot) in a `/proc/PID/stat` line.
/// The command name (field 2) may hold spaces and parentheses: fields are counted from the
/// last `)`.
fn stat_fields(stat: &str) -> Option<(&str, u64)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    // Field 3 is the state; field 22 the start time.
    let state = fields.next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

const CGROUP_PREFIX: &str = "run-";

/// Removes the cgroups of sandboxes whose CLI is gone (killed before it could remove them),
/// killing anything left in them.
///
/// # Errors
///
/// When the host's cgroups cannot be read.
pub fn sweep_cgroups() -> Result<cgroup::SweepReport, cgroup::DetectError> {
    let host = cgroup::Host::detect()?;
    Ok(cgroup::sweep(&host, |name| {
        let Some(rest) = name.strip_prefix(CGROUP_PREFIX) else {
            return false;
        };
        let mut parts = rest.split('-');
        let Some(owner) = parts.next().and_then(|owner| owner.parse::<u32>().ok()) else {
            return false;
        };
        let recorded_start = parts.nth(1).and_then(|start| start.parse::<u64>().ok());
        owner_is_gone(owner, recorded_start)
    }))
}

/// Whether the owner of a cgroup is gone: no process has its pid, or a zombie has it (a
/// killed owner stays one on hosts whose pid 1 does not reap), or a process started at
/// another time has it (the pid was reused). Names made before the start time was recorded
/// fall back to the process being called `hardbox`.
fn owner_is_gone(owner: u32, recorded_start: Option<u64>) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{owner}/stat")) else {
        return true;
    };
    let Some((state, start)) = stat_fields(&stat) else {
        return true;
    };
    if state == "Z" || state == "X" {
        return true;
    }
    match recorded_start {
        Some(recorded) => start != recorded,
        None => !std::fs::read_to_string(format!("/proc/{owner}/comm"))
            .is_ok_and(|comm| comm.trim_end() == "hardbox"),
    }
}

/// Creates the sandbox's cgroup with the plan's limits; returns it with the v1 `tasks` files
/// the command writes itself into (after init's setup, before the command's own steps).
///
/// Cost matters here (it runs while init mounts, and must finish before the command starts).
/// Moving another process into a cgroup takes the kernel's thread-group lock for writing, and
/// its first writer waits for an RCU grace period: 5 to 15 ms on the reference host, more than
/// the whole launch. A thread that writes `0` (itself) to a v1 `tasks` file skips that lock,
/// and the command has one thread at that point, so this moves all of it in microseconds. The
/// files are opened here, by the host's root, which is the credential the kernel checks; the
/// command holds them until its exec closes them. Init stays outside the cgroup, so the
/// parent can remove it without waiting for init's exit. So:
///
/// - when every limit lives in a v1 hierarchy (v1 and hybrid hosts), the unified hierarchy is
///   left out: it would only track processes, which the v1 freezer does as well, and a v2 leaf
///   can only be joined through `cgroup.procs`;
/// - a v2 leaf (v2 hosts) is joined by the parent writing init's pid to `cgroup.procs`, and the
///   command inherits it.
fn create_cgroup(
    plan: &LaunchPlan,
    init: Pid,
    cgroup_use: CgroupUse,
) -> Result<Joining, LaunchError> {
    let limits = &plan.settings.limits;
    let mut host = cgroup::Host::detect().map_err(LaunchError::CgroupDetect)?;
    let cgroup_limits = cgroup::Limits {
        memory_bytes: limits.memory_bytes,
        memory_swap_bytes: None,
        pids: limits.pids,
        cpus: limits.cpus,
    };
    let all_legacy = cgroup_limits.controllers().iter().all(|&controller| {
        host.placement(controller)
            .is_ok_and(|placement| placement.version == cgroup::Version::V1)
    });
    if all_legacy && !host.legacy.is_empty() {
        host.unified = None;
    }
    if cgroup_use == CgroupUse::Limits {
        // Every v1 hierarchy without a limit is one mkdir, one join and one rmdir saved.
        let controllers = cgroup_limits.controllers();
        host.legacy.retain(|hierarchy| {
            controllers
                .iter()
                .any(|controller| hierarchy.controllers.iter().any(|c| c == controller.name()))
        });
    }
    let name = cgroup_name(init);
    let group =
        cgroup::Cgroup::create(&host, &name, &cgroup_limits).map_err(LaunchError::Cgroup)?;
    let mut files = Vec::new();
    let mut init_joined = false;
    for directory in group.directories() {
        let tasks = directory.join("tasks");
        if tasks.exists() {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&tasks)
                .map_err(|source| LaunchError::CgroupJoin {
                    path: tasks.clone(),
                    source,
                })?;
            files.push(OwnedFd::from(file));
        } else {
            let path = directory.join("cgroup.procs");
            std::fs::write(&path, init.as_raw_nonzero().to_string())
                .map_err(|source| LaunchError::CgroupJoin { path, source })?;
            init_joined = true;
        }
    }
    Ok(Joining {
        group,
        files,
        init_joined,
    })
}

/// How the parent's watch over init ended.
struct Ending {
    status: ExitStatus,
    /// Whether init has been waited for already.
    reaped: bool,
}

/// Waits for init's status record (or init's end), forwarding signals to init, relaying the
/// command's terminal, and killing the sandbox when `deadline` passes.
fn supervise_init(
    init: Pid,
    socket: &OwnedFd,
    signal_fd: &SignalFd,
    deadline: Option<(Instant, Duration)>,
    group: Option<&cgroup::Cgroup>,
    mut relay: Option<&mut Relay>,
) -> Result<Ending, Errno> {
    let mut record = [0u8; STATUS_SIZE];
    let mut filled = 0;
    let mut events = [PollFlags::empty(); 4];
    loop {
        let remaining = match deadline {
            Some((at, after)) => {
                let remaining = at.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    let _ = rustix::process::kill_process(init, Signal::KILL);
                    if let Some(group) = group {
                        let _ = group.kill_all();
                    }
                    let _ = rustix::process::waitpid(Some(init), WaitOptions::empty());
                    return Ok(Ending {
                        status: ExitStatus::TimedOut { after },
                        reaped: true,
                    });
                }
                Some(remaining)
            }
            None => None,
        };
        let mut fds = Vec::with_capacity(4);
        fds.push(PollFd::new(signal_fd, PollFlags::IN));
        fds.push(PollFd::new(socket, PollFlags::IN));
        let interest = relay
            .as_deref()
            .map(|relay| relay.poll_fds(&mut fds))
            .unwrap_or_default();
        let timeout = remaining.map(|left| {
            // Round up, so a wait never ends before the deadline.
            let left = left + Duration::from_nanos(999);
            rustix::event::Timespec {
                tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(left.subsec_nanos()),
            }
        });
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(errno) => return Err(errno),
        }
        for (slot, fd) in events.iter_mut().zip(&fds) {
            *slot = fd.revents();
        }
        let count = fds.len();
        drop(fds);
        let events = &events[..count];
        if let Some(relay) = relay.as_deref_mut() {
            relay.pump(interest, events);
        }
        if !events[0].is_empty() {
            while let Some(signal) = signal_fd.take()? {
                if signal == libc_signal::CHLD {
                    if let Some((_, status)) =
                        rustix::process::waitpid(Some(init), WaitOptions::NOHANG)?
                    {
                        return Ok(Ending {
                            status: exit_status(status),
                            reaped: true,
                        });
                    }
                } else if let (libc_signal::WINCH, Some(relay)) = (signal, relay.as_deref()) {
                    // The terminal's size changes; the kernel signals the command.
                    relay.resize();
                } else if let Some(signal) = Signal::from_named_raw(signal) {
                    // Init may have just exited; its status follows.
                    let _ = rustix::process::kill_process(init, signal);
                }
            }
        }
        if !events[1].is_empty() {
            match rustix::io::read(socket, &mut record[filled..]) {
                Ok(0) => {
                    // Init ended without a status (killed): its own exit status tells.
                    let waited = rustix::process::waitpid(Some(init), WaitOptions::empty())?;
                    let status = waited.map_or(ExitStatus::Exited(EXIT_SETUP_FAILED), |(_, s)| {
                        exit_status(s)
                    });
                    return Ok(Ending {
                        status,
                        reaped: true,
                    });
                }
                Ok(count) => {
                    filled += count;
                    if filled == STATUS_SIZE {
                        return Ok(Ending {
                            status: decode_status(&record),
                            reaped: false,
                        });
                    }
                }
                Err(Errno::INTR | Errno::AGAIN) => {}
                Err(errno) => return Err(errno),
            }
        }
    }
}

/// The error a failure record of the launch describes.
fn failure(plan: &LaunchPlan, record: &[u8; RECORD_SIZE]) -> LaunchError {
    failure_in(&plan.setup, &plan.command, &plan.settings.program, record)
}

/// The error a failure record describes, given the steps init (`setup`) and the command
/// (`command`, ending with the exec of `program`) applied.
pub(crate) fn failure_in(
    setup: &[Step],
    command: &[Step],
    program: &str,
    record: &[u8; RECORD_SIZE],
) -> LaunchError {
    let (phase, index, errno) = decode(record);
    let fixed = match phase {
        PHASE_NETWORK => Some("open the network proxy's listeners in the sandbox"),
        PHASE_TERMINAL if index == 0 => Some("open a terminal in the sandbox (/dev/ptmx)"),
        PHASE_TERMINAL => Some("make the terminal the command's controlling terminal"),
        PHASE_CGROUP => Some("join the sandbox's cgroup"),
        PHASE_STDIO => Some("connect the command's stdin, stdout and stderr"),
        PHASE_SESSION => Some(match index {
            0 => "mark init's descriptors close-on-exec",
            1 => "make init non-dumpable",
            2 => "watch for the end of the sandbox's processes (signalfd)",
            _ => "reset init's signal handlers",
        }),
        PHASE_TRACE => Some("install the exec tracer in the sandbox's init"),
        PHASE_REQUEST => Some("read the exec request"),
        PHASE_SPAWN => Some("start the command's process"),
        _ => None,
    };
    if let Some(step) = fixed {
        return LaunchError::Step {
            step: step.to_owned(),
            errno,
        };
    }
    let steps = if phase == PHASE_SETUP { setup } else { command };
    let Some(step) = steps.get(index) else {
        return LaunchError::InitVanished;
    };
    if *step == Step::Execute {
        let program = program.to_owned();
        return if errno == Errno::NOENT {
            LaunchError::CommandNotFound { program }
        } else {
            LaunchError::NotExecutable { program, errno }
        };
    }
    LaunchError::Step {
        step: step.to_string(),
        errno,
    }
}

/// Writes init's id maps, prepares the mounts it needs from the host, and lets it go.
fn configure_init(plan: &LaunchPlan, init: Pid, socket: &OwnedFd) -> Result<(), LaunchError> {
    let proc_dir = PathBuf::from(format!("/proc/{}", init.as_raw_nonzero()));
    let write = |name: &str, contents: &str| {
        let path = proc_dir.join(name);
        std::fs::write(&path, contents).map_err(|source| LaunchError::IdMap { path, source })
    };
    if plan.id_maps.deny_setgroups {
        write("setgroups", "deny")?;
    }
    write("uid_map", &plan.id_maps.uid_map)?;
    write("gid_map", &plan.id_maps.gid_map)?;

    let mut mounts = Vec::with_capacity(plan.passed_mounts.len());
    if !plan.passed_mounts.is_empty() {
        let user_namespace_path = proc_dir.join("ns/user");
        let user_namespace = rustix::fs::open(
            &user_namespace_path,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|errno| LaunchError::PrepareMount {
            path: user_namespace_path.clone(),
            call: "open",
            errno,
        })?;
        for passed in &plan.passed_mounts {
            let mount = match &passed.overlay {
                None => proc::clone_mount_tree(&passed.source).map_err(|errno| {
                    LaunchError::PrepareMount {
                        path: passed.source.clone(),
                        call: "open_tree",
                        errno,
                    }
                })?,
                Some(overlay) => proc::mount_overlay(&passed.source, &overlay.upper, &overlay.work)
                    .map_err(|errno| LaunchError::PrepareMount {
                        path: passed.source.clone(),
                        call: "overlay mount (fsopen/fsconfig/fsmount)",
                        errno,
                    })?,
            };
            if passed.idmapped {
                sys::linux::set_id_mapping(mount.as_fd(), user_namespace.as_fd()).map_err(
                    |errno| LaunchError::PrepareMount {
                        path: passed.source.clone(),
                        call: "idmapped mount (mount_setattr MOUNT_ATTR_IDMAP)",
                        errno,
                    },
                )?;
            }
            mounts.push(mount);
        }
    }
    let borrowed: Vec<_> = mounts.iter().map(AsFd::as_fd).collect();
    proc::send_descriptors(socket.as_fd(), 1, &borrowed).map_err(|errno| LaunchError::Parent {
        call: "sendmsg",
        errno,
    })
}

/// Waits for `target`, forwarding the forwarded signals to it. With `reap_all` (init), every
/// child that ends is reaped; the loop returns when `target` ends.
fn supervise(target: Pid, reap_all: bool, signals: &SignalSet) -> Result<ExitStatus, Errno> {
    loop {
        loop {
            let waited = if reap_all {
                rustix::process::wait(WaitOptions::NOHANG)
            } else {
                rustix::process::waitpid(Some(target), WaitOptions::NOHANG)
            };
            match waited {
                Ok(Some((pid, status))) if pid == target => return Ok(exit_status(status)),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(Errno::INTR) => {}
                Err(errno) => return Err(errno),
            }
        }
        let signal = proc::wait_for_signal(signals)?;
        if signal != libc_signal::CHLD {
            if let Some(signal) = Signal::from_named_raw(signal) {
                // The target may have just exited; the next waitpid reports it.
                let _ = rustix::process::kill_process(target, signal);
            }
        }
    }
}

pub(crate) fn exit_status(status: WaitStatus) -> ExitStatus {
    if let Some(signal) = status.terminating_signal() {
        ExitStatus::Signaled(signal)
    } else {
        ExitStatus::Exited(status.exit_status().unwrap_or(EXIT_SETUP_FAILED))
    }
}

/// Reports a failed step to the parent and ends the process.
pub(crate) fn fail(report: &OwnedFd, phase: u32, index: usize, errno: Errno, code: i32) -> ! {
    // If the parent is gone there is no one to tell.
    let _ = proc::write_all(report, &encode(phase, index, errno));
    proc::exit_immediately(code)
}

/// What init has once the sandbox is set up and the parent said "go".
pub(crate) struct InitReady {
    /// The v1 `tasks` files each command writes itself into (writing `0`: itself).
    pub(crate) join_files: Vec<OwnedFd>,
    /// The slave of the command's terminal, when `prepare_init` was asked for one.
    pub(crate) terminal: Option<OwnedFd>,
}

/// In init, everything before a command is spawned: waits for the id maps and the parent's
/// mounts, applies the setup steps, opens the proxy's listeners (sent to the parent) and, with
/// `terminal`, a terminal (its master sent to the parent), then waits for the parent's "go".
/// With `new_session` init leaves the caller's session first. A failing step is reported and
/// ends init.
pub(crate) fn prepare_init(
    plan: &LaunchPlan,
    seccomp: Option<&SeccompProgram>,
    socket: &OwnedFd,
    report: &OwnedFd,
    terminal: bool,
    new_session: bool,
) -> InitReady {
    // If the parent dies, so does the sandbox (the kernel then kills every process in it).
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    if new_session {
        let _ = rustix::process::setsid();
    }
    let mut mounts = Vec::with_capacity(sys::process::MAX_DESCRIPTORS);
    match proc::receive_descriptors(socket.as_fd(), &mut mounts) {
        Ok(Some(_)) => {}
        // The parent failed before letting init go, and reports that itself.
        _ => proc::exit_immediately(EXIT_SETUP_FAILED),
    }

    let mut linux = Linux;
    let resources = Resources {
        mounts: &mounts,
        landlock: &plan.landlock,
        prepared_landlock: None,
        seccomp: seccomp.map(|filter| filter as &dyn sys::SeccompFilter),
        exec: None,
    };
    if let Err(failure) = apply(&plan.setup, &mut linux, &resources) {
        fail(
            report,
            PHASE_SETUP,
            failure.index,
            failure.errno,
            EXIT_SETUP_FAILED,
        );
    }
    // Switching to the sandbox's host ids (setresuid) made the kernel forget the parent-death
    // signal: arm it again. A parent that died in between may have sent its "go" already (it
    // does not wait for the setup), so its death is checked on the socket: a dying process's
    // files are closed before its children are signalled, so either the signal comes or the
    // socket is seen closed here, and no window is left where a killed CLI leaves its sandbox
    // running.
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    if proc::peer_closed(socket.as_fd()) {
        proc::exit_immediately(EXIT_SETUP_FAILED);
    }
    // The passed mounts are attached now; the command must not inherit them.
    drop(mounts);
    // The proxy's listeners live in the sandbox's network namespace, now set up.
    if let Network::Proxy { tcp_ports } = &plan.settings.network {
        match open_proxy_listeners(tcp_ports) {
            Ok(fds) => {
                let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
                if proc::send_descriptors(socket.as_fd(), NETWORK, &borrowed).is_err() {
                    proc::exit_immediately(EXIT_SETUP_FAILED);
                }
            }
            Err(errno) => fail(report, PHASE_NETWORK, 0, errno, EXIT_SETUP_FAILED),
        }
    }
    // The command's terminal belongs to the sandbox's devpts, now mounted.
    let terminal = if terminal {
        match terminal::open_pair() {
            Ok((master, slave)) => {
                if proc::send_descriptors(socket.as_fd(), TERMINAL, &[master.as_fd()]).is_err() {
                    proc::exit_immediately(EXIT_SETUP_FAILED);
                }
                Some(slave)
            }
            Err(errno) => fail(report, PHASE_TERMINAL, 0, errno, EXIT_SETUP_FAILED),
        }
    } else {
        None
    };
    // The parent says "go" with the cgroup files the commands join (writing `0`: itself).
    let mut join_files = Vec::with_capacity(sys::process::MAX_DESCRIPTORS);
    match proc::receive_descriptors(socket.as_fd(), &mut join_files) {
        Ok(Some(GO)) => {}
        _ => proc::exit_immediately(EXIT_SETUP_FAILED),
    }
    InitReady {
        join_files,
        terminal,
    }
}

/// pid 1 of the sandbox (`run`): sets the sandbox up, spawns the command, then reaps and
/// forwards signals until the command ends, and exits with its status.
fn run_init(
    plan: &LaunchPlan,
    exec: &ExecTarget,
    seccomp: Option<&SeccompProgram>,
    socket: OwnedFd,
    report: OwnedFd,
    signals: &SignalSet,
    previous_mask: &SignalSet,
) -> ! {
    // With a terminal of its own, the sandbox leaves the CLI's session, so keys and window
    // changes on the CLI's terminal signal only the CLI (which relays them once), not init too.
    let tty = plan.settings.tty;
    let ready = prepare_init(plan, seccomp, &socket, &report, tty, tty);
    let resources = Resources {
        mounts: &[],
        landlock: &plan.landlock,
        prepared_landlock: None,
        seccomp: seccomp.map(|filter| filter as &dyn sys::SeccompFilter),
        exec: Some(exec),
    };
    let stdio = match &ready.terminal {
        Some(slave) => CommandStdio::Terminal(slave),
        None => CommandStdio::Inherit,
    };

    // The command shares init's memory until it execs (init waits meanwhile): nothing of
    // init's address space is copied for a process that is about to replace it.
    let spawned = proc::spawn_sharing_memory(&mut || {
        run_command(
            &plan.command,
            &resources,
            &ready.join_files,
            &stdio,
            &report,
            previous_mask,
        )
    });
    drop(ready);
    let command = match spawned {
        Ok(pid) => pid,
        Err(errno) => fail(
            &report,
            PHASE_SETUP,
            plan.setup.len(),
            errno,
            EXIT_SETUP_FAILED,
        ),
    };
    drop(report);
    let status = supervise(command, true, signals).unwrap_or(ExitStatus::Exited(EXIT_SETUP_FAILED));
    // If the parent is gone there is no one to tell; the exit status says the same.
    let _ = proc::write_all(&socket, &encode_status(status));
    proc::exit_immediately(status.code())
}

/// Where a command's stdin, stdout and stderr come from.
pub(crate) enum CommandStdio<'a> {
    /// Init's own (the CLI's, for `run`).
    Inherit,
    /// The slave of its terminal, which also becomes its controlling terminal (new session).
    Terminal(&'a OwnedFd),
    /// Three descriptors (stdin, stdout, stderr), numbered 3 or above; the command gets a new
    /// session without a controlling terminal.
    Descriptors(&'a [OwnedFd; 3]),
}

/// A command's process: joins the sandbox's cgroup, takes its stdio (with `-t`, its
/// terminal), sets its signal mask to `mask` with default dispositions, applies `steps` (the
/// last is exec) and reports whichever fails.
///
/// It shares init's memory until exec, so it drops nothing it borrows; every descriptor init
/// holds is close-on-exec.
pub(crate) fn run_command(
    steps: &[Step],
    resources: &Resources<'_>,
    join_files: &[OwnedFd],
    stdio: &CommandStdio<'_>,
    report: &OwnedFd,
    mask: &SignalSet,
) -> ! {
    for file in join_files {
        if let Err(errno) = proc::write_all(file, b"0") {
            fail(report, PHASE_CGROUP, 0, errno, EXIT_SETUP_FAILED);
        }
    }
    match stdio {
        CommandStdio::Inherit => {}
        CommandStdio::Terminal(slave) => {
            if let Err(errno) = terminal::attach(slave) {
                fail(report, PHASE_TERMINAL, 1, errno, EXIT_SETUP_FAILED);
            }
        }
        CommandStdio::Descriptors([stdin, stdout, stderr]) => {
            let connected = rustix::process::setsid()
                .map(drop)
                .and_then(|()| rustix::stdio::dup2_stdin(stdin))
                .and_then(|()| rustix::stdio::dup2_stdout(stdout))
                .and_then(|()| rustix::stdio::dup2_stderr(stderr));
            if let Err(errno) = connected {
                fail(report, PHASE_STDIO, 0, errno, EXIT_SETUP_FAILED);
            }
        }
    }
    let prepared = proc::set_signal_mask(mask).and_then(|_| proc::reset_signal_dispositions());
    if let Err(errno) = prepared {
        fail(report, PHASE_COMMAND, 0, errno, EXIT_SETUP_FAILED);
    }
    let mut linux = Linux;
    match apply(steps, &mut linux, resources) {
        Err(failure) => {
            let code = if steps.get(failure.index) == Some(&Step::Execute) {
                if failure.errno == Errno::NOENT {
                    127
                } else {
                    126
                }
            } else {
                EXIT_SETUP_FAILED
            };
            fail(report, PHASE_COMMAND, failure.index, failure.errno, code)
        }
        // Exec returned without an error: cannot happen with the real kernel.
        Ok(()) => proc::exit_immediately(EXIT_SETUP_FAILED),
    }
}

/// In init: the proxy's listeners, in the order [`proxy_listeners`] reads them: HTTP, TLS,
/// explicit, DNS over UDP, DNS over TCP, then `tcp_ports` (those not already listed).
fn open_proxy_listeners(tcp_ports: &[u16]) -> Result<Vec<OwnedFd>, Errno> {
    let tcp = |port: u16| -> Result<OwnedFd, Errno> {
        // Dual-stack when the kernel has IPv6; IPv4 only otherwise.
        let listener = TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, port))
            .or_else(|_| TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port)))
            .map_err(|error| Errno::from_io_error(&error).unwrap_or(Errno::IO))?;
        Ok(OwnedFd::from(listener))
    };
    let mut fds = vec![tcp(80)?, tcp(443)?];
    let explicit = TcpListener::bind(EXPLICIT_PROXY)
        .map_err(|error| Errno::from_io_error(&error).unwrap_or(Errno::IO))?;
    fds.push(OwnedFd::from(explicit));
    let dns = UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, 53))
        .or_else(|_| UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 53)))
        .map_err(|error| Errno::from_io_error(&error).unwrap_or(Errno::IO))?;
    fds.push(OwnedFd::from(dns));
    fds.push(tcp(53)?);
    for &port in distinct_extra_ports(tcp_ports).iter() {
        fds.push(tcp(port)?);
    }
    Ok(fds)
}

/// `tcp_ports` without the ports the proxy always listens on, and without repeats, in order.
fn distinct_extra_ports(tcp_ports: &[u16]) -> Vec<u16> {
    let mut ports = Vec::new();
    for &port in tcp_ports {
        if ![80, 443, 53].contains(&port) && !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

/// In the parent: the listeners init sent, or `None` when they are not what was asked for.
fn proxy_listeners(fds: Vec<OwnedFd>, tcp_ports: &[u16]) -> Option<ProxyListeners> {
    let extra = distinct_extra_ports(tcp_ports);
    if fds.len() != 5 + extra.len() {
        return None;
    }
    let mut fds = fds.into_iter();
    let mut next_tcp = || fds.next().map(TcpListener::from);
    let http = next_tcp()?;
    let tls = next_tcp()?;
    let explicit = next_tcp()?;
    let dns_udp = UdpSocket::from(fds.next()?);
    let dns_tcp = TcpListener::from(fds.next()?);
    let tcp = extra
        .into_iter()
        .map(|port| Some((port, TcpListener::from(fds.next()?))))
        .collect::<Option<Vec<_>>>()?;
    Some(ProxyListeners {
        http,
        tls,
        explicit,
        dns_udp,
        dns_tcp,
        tcp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        let stat = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 200 18446744073709551615";
        assert_eq!(stat_fields(stat), Some(("S", 987_654)));
        assert_eq!(stat_fields("4242 (x) Z"), None);
        assert_eq!(stat_fields("no parenthesis"), None);
    }

    #[test]
    fn a_cgroup_owner_is_known_by_its_pid_and_start_time() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let (_, start) = stat_fields(&stat).unwrap_or_else(|| panic!("{stat}"));
        let me = std::process::id();
        assert!(!owner_is_gone(me, Some(start)));
        // The same pid with another start time is a reuse: the owner is gone.
        assert!(owner_is_gone(me, Some(start + 1)));
        // An old name without a start time: alive only under the name `hardbox`, which the
        // test binary is not.
        assert!(owner_is_gone(me, None));
        // No such process (pids stop below 2^22).
        assert!(owner_is_gone(4_194_304 + 1, Some(start)));
        // The name records this process's start time.
        let name = cgroup_name(Pid::from_raw(7).unwrap_or_else(|| panic!("pid 7")));
        assert_eq!(name, format!("run-{me}-7-{start}"));
    }

    #[test]
    fn failure_records_round_trip() {
        let record = encode(PHASE_COMMAND, 7, Errno::PERM);
        assert_eq!(decode(&record), (PHASE_COMMAND, 7, Errno::PERM));
    }

    #[test]
    fn status_records_round_trip() {
        for status in [ExitStatus::Exited(3), ExitStatus::Signaled(15)] {
            assert_eq!(decode_status(&encode_status(status)), status);
        }
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(ExitStatus::OutOfMemory { limit_bytes: 1 }.code(), 137);
        assert_eq!(
            ExitStatus::TimedOut {
                after: Duration::from_secs(1)
            }
            .code(),
            124
        );
        assert_eq!(ExitStatus::Exited(3).code(), 3);
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
    }
}
