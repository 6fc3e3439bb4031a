//! Session mode: a sandbox that stays up after its launch, into which its supervisor starts
//! more commands ("exec"), for long-lived sandboxes (`docs/lifecycle.md`).
//!
//! ```text
//! supervisor ──clone──► init (pid 1) ── prepares the sandbox exactly as for `run` ──┐
//!   start_session()       marks its descriptors close-on-exec, becomes non-dumpable,  │
//!                         installs the exec tracer (optional), spawns the main command │
//!   exec() ──EXEC + stdio fds──► spawns the command: cgroup join, stdio, the command steps
//!   ◄── STARTED (pid, pty master) / FAILED (step, errno) ──┘
//!   ◄── EXITED / MAIN_EXITED ── on SIGCHLD (init reaps every process of the sandbox)
//!   stop() ──STOP──► SIGTERM to every other process; SIGKILL to init after the grace time
//! ```
//!
//! Guarantees:
//!
//! - init is set up by the same code as `run`'s ([`crate::launch`](mod@crate::launch): id maps, mounts, cgroup,
//!   proxy listeners, setup steps), and every command it spawns, main or exec'd, goes through
//!   the same command steps as `run`'s command (cgroup join, rlimits, bounding set, identity,
//!   capabilities cleared, no_new_privs, Landlock, seccomp, exec), with a failing step reported
//!   as the same [`LaunchError`] (`CommandNotFound` for exit 127, `NotExecutable` for 126, a
//!   step for 125; see [`LaunchError::exit_code`]);
//! - init stays out of the sandbox's reach: it is non-dumpable (`/proc/1/mem` and ptrace of it
//!   are refused to processes without `CAP_SYS_PTRACE`, which no command has), every
//!   descriptor it holds is close-on-exec (so no command inherits the control socket, the
//!   cgroup files or another command's stdio), and as pid 1 of its pid namespace it ignores
//!   every signal from inside but SIGCHLD, which only makes it reap (none of the supervisor's
//!   signal handlers survives in it);
//! - init dies with the supervisor (parent-death signal KILL), and with init the kernel kills
//!   every process of the sandbox;
//! - the supervisor's side never blocks in [`Session::next_event`], installs no signal handler
//!   and blocks no signal: the supervisor owns its signal handling.
//!
//! # Protocol
//!
//! After the launch's own exchange (mounts, proxy listeners, "go"), the stream socket pair
//! between the supervisor and init carries frames in both directions:
//!
//! ```text
//! u32 LE body length | u8 kind | u8 descriptor count | body
//! ```
//!
//! sent with one `sendmsg`, the descriptors (`SCM_RIGHTS`) attached to its first byte. On a
//! unix stream socket the kernel hands a message's descriptors to the `recvmsg` that reads its
//! first byte, so a receiver keeps descriptors in arrival order and gives each frame as many
//! as its header counts. Numbers are little-endian; strings are a u32 length then UTF-8 bytes.
//! A frame longer than [`MAX_BODY`], with more than 3 descriptors, or whose descriptors did
//! not arrive, is malformed: init then ends the sandbox, the supervisor gets
//! [`LaunchError::Protocol`].
//!
//! Supervisor to init:
//!
//! - `EXEC` (3 descriptors, stdin, stdout, stderr; none with a terminal): id u64, flags u8
//!   (1 terminal, 2 working directory, 4 user), uid u32, gid u32, program, argument count u32,
//!   arguments, environment count u32, (name, value) pairs, then the working directory if
//!   flagged. A body init cannot use gets `FAILED` with the request phase;
//! - `SIGNAL`: id u64 (0: the main command), signal i32;
//! - `STOP`: init sends SIGTERM to every other process of the sandbox, and exits once none is
//!   left (the supervisor kills it when the grace time passes first).
//!
//! Init to supervisor:
//!
//! - `TRACE` (1 or 2 descriptors): the exec tracer's listener, before anything is spawned, and
//!   init's pid namespace (`/proc/self/ns/pid`, opened by init itself: a rootless supervisor
//!   may not open it for a non-dumpable init), unless init could not open it;
//! - `STARTED` (the pty master with a terminal): id u64, pid u32 (in the sandbox);
//! - `FAILED`: id u64, then the launch's failure record (phase u32, step index u32, errno i32),
//!   named by the supervisor against [`LaunchPlan::exec_steps`] of the request;
//! - `EXITED`: id u64, then the launch's status record (kind u32, value i32);
//! - `MAIN_EXITED`: the status record of the main command.
//!
//! When init ends, the socket reaches end of file and the supervisor reaps init
//! ([`SessionEvent::Ended`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::process::{Pid, Signal, WaitOptions};
use sys::process::{self as proc, ExecTarget, SignalFd, SignalSet};
use sys::Errno;

use crate::apply::Resources;
use crate::launch::{
    command_target, compile_seccomp, decode, decode_status, encode, encode_status, exit_status,
    fail, failure_in, out_of_memory, prepare_init, remove_keeping_parents, run_command, start_init,
    CgroupUse, CommandStdio, ExitStatus, Hooks, InitProcess, LaunchError, SeccompProgram,
    EXIT_SETUP_FAILED, PHASE_COMMAND, PHASE_REQUEST, PHASE_SESSION, PHASE_SPAWN, PHASE_TERMINAL,
    PHASE_TRACE, RECORD_SIZE, STATUS_SIZE,
};
use crate::plan::{LaunchPlan, Step, DEFAULT_PATH};
use crate::terminal;

/// Names a command started in a session. The main command is [`MAIN`]; exec'd commands count
/// from 1.
pub type ExecId = u64;

/// The [`ExecId`] of the main command (for [`Session::signal`]).
pub const MAIN: ExecId = 0;

/// The largest frame body either side accepts (arguments and environment of one exec).
pub const MAX_BODY: usize = 4 << 20;

/// How a session starts.
#[derive(Debug, Default)]
pub struct SessionOptions {
    /// Spawn the plan's own command as the main command; without it init only reaps and waits
    /// for requests.
    pub main_command: bool,
    /// The main command's stdin, stdout and stderr (e.g. `/dev/null` and a log file); `None`:
    /// init's own, which are the caller's. The plan's `tty` does not apply to sessions.
    pub main_stdio: Option<[OwnedFd; 3]>,
    /// Called in init after its setup steps and before anything is spawned, so every process
    /// of the sandbox inherits what it installs (init has `CAP_SYS_ADMIN` in its user
    /// namespace: a seccomp filter needs no no_new_privs). The descriptor it returns (the
    /// filter's listener) is sent to the caller with init's pid namespace:
    /// [`Session::take_trace_listener`], [`Session::take_trace_pid_namespace`].
    pub trace: Option<fn() -> Result<OwnedFd, Errno>>,
}

/// A command to start in a running sandbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecRequest {
    /// A path, or a name searched in the `PATH` of `environment` (else the default `PATH`).
    pub program: String,
    /// argv, starting with argv\[0\]; empty: the program alone.
    pub arguments: Vec<String>,
    /// The command's whole environment.
    pub environment: Vec<(String, String)>,
    /// Absolute path inside the sandbox; `None`: the sandbox's working directory.
    pub working_directory: Option<PathBuf>,
    /// (uid, gid) inside the sandbox; `None`: the plan's. Only ids the sandbox maps work.
    pub user: Option<(u32, u32)>,
    /// Give the command a terminal of the sandbox's devpts as its controlling terminal and
    /// stdio; its master comes with [`SessionEvent::Started`].
    pub tty: bool,
}

/// What happened in the sandbox, in the order init saw it.
#[derive(Debug)]
pub enum SessionEvent {
    /// An exec'd command runs (its exec succeeded).
    Started {
        id: ExecId,
        /// Its pid as the sandbox sees it.
        pid: u32,
        /// The master of its terminal, when it asked for one.
        terminal: Option<OwnedFd>,
    },
    /// An exec'd command could not be started; no `Exited` follows.
    Failed { id: ExecId, error: LaunchError },
    /// An exec'd command ended.
    Exited { id: ExecId, status: ExitStatus },
    /// The main command ended; the sandbox stays until [`Session::stop`].
    MainExited { status: ExitStatus },
    /// Init is gone, and with it every process of the sandbox. The last event.
    Ended { status: ExitStatus },
}

/// Resource use of the sandbox's cgroup, where its controllers report it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu: Option<Duration>,
    pub memory_bytes: Option<u64>,
    /// Processes the memory limit's OOM killer killed so far.
    pub oom_kills: Option<u64>,
    /// Forks and clones the pids limit refused so far.
    pub pids_denied: Option<u64>,
}

/// An exec sent to init that has not started or failed yet.
#[derive(Debug)]
struct Pending {
    program: String,
    steps: Vec<Step>,
    user: Option<(u32, u32)>,
}

/// The supervisor's side of a running sandbox. Dropping it kills the sandbox.
#[derive(Debug)]
pub struct Session {
    plan: LaunchPlan,
    init: Pid,
    socket: OwnedFd,
    group: Option<cgroup::Cgroup>,
    inbound: Inbound,
    trace_listener: Option<OwnedFd>,
    trace_pid_namespace: Option<OwnedFd>,
    next_id: ExecId,
    pending: HashMap<ExecId, Pending>,
    running: HashSet<ExecId>,
    main_running: bool,
    main_status: Option<ExitStatus>,
    /// Init's status once it was reaped.
    ended: Option<ExitStatus>,
    /// Whether [`SessionEvent::Ended`] was returned.
    ended_reported: bool,
}

/// Starts the plan's sandbox in session mode. Returns once init is set up, the exec tracer
/// installed (if asked) and the main command started (if asked). Must be called from a
/// single-threaded process, like [`crate::launch()`]. The plan's timeout is not enforced (the
/// supervisor decides when the sandbox stops), nor its `tty`.
///
/// # Errors
///
/// As [`crate::launch_with`]: [`LaunchError`] naming what failed, the main command's
/// `CommandNotFound`/`NotExecutable` included; the sandbox is gone then.
pub fn start_session(
    plan: &LaunchPlan,
    hooks: &mut dyn Hooks,
    options: SessionOptions,
) -> Result<Session, LaunchError> {
    let main = if options.main_command {
        Some(command_target(plan)?)
    } else {
        None
    };
    let seccomp = compile_seccomp(plan)?;
    let trace = options.trace;
    let mut main_stdio = options.main_stdio;
    let mut init = start_init(plan, hooks, CgroupUse::Tracking, &mut |socket, report| {
        serve(
            plan,
            seccomp.as_ref(),
            main.as_ref(),
            main_stdio.take(),
            trace,
            socket,
            report,
        )
    })?;
    // Init has its own copies.
    drop(main_stdio);
    init.go(hooks)?;
    init.read_report(plan)?;

    let InitProcess {
        pid, socket, group, ..
    } = init;
    let mut session = Session {
        plan: plan.clone(),
        init: pid,
        socket,
        group,
        inbound: Inbound::default(),
        trace_listener: None,
        trace_pid_namespace: None,
        next_id: MAIN + 1,
        pending: HashMap::new(),
        running: HashSet::new(),
        main_running: main.is_some(),
        main_status: None,
        ended: None,
        ended_reported: false,
    };
    if trace.is_some() {
        // Init sent the listener before it spawned anything, so before any other frame.
        let message = session.receive_blocking()?;
        match (message.kind, message.fds.len()) {
            (TRACE, 1 | 2) => session.take_trace(message.fds),
            _ => return Err(LaunchError::Protocol),
        }
    }
    Ok(session)
}

impl Session {
    /// Init's pid in the caller's pid namespace.
    pub fn init_pid(&self) -> u32 {
        self.init.as_raw_nonzero().get().unsigned_abs()
    }

    /// The exec tracer's listener, once (when [`SessionOptions::trace`] was given).
    pub fn take_trace_listener(&mut self) -> Option<OwnedFd> {
        self.trace_listener.take()
    }

    /// The sandbox's pid namespace (init's), once, as init sent it with the tracer's listener:
    /// what the tracer presents pids in.
    pub fn take_trace_pid_namespace(&mut self) -> Option<OwnedFd> {
        self.trace_pid_namespace.take()
    }

    /// Keeps a `TRACE` frame's descriptors: the listener, then the pid namespace.
    fn take_trace(&mut self, fds: Vec<OwnedFd>) {
        let mut fds = fds.into_iter();
        self.trace_listener = fds.next();
        self.trace_pid_namespace = fds.next();
    }

    /// Asks init to start `request` with `stdio` (stdin, stdout, stderr; `None` exactly when
    /// the request asks for a terminal). Its [`SessionEvent::Started`] or
    /// [`SessionEvent::Failed`] follows. While it waits to send, it reads what init sent: call
    /// [`Session::next_event`] until `None` afterwards, as after a poll.
    ///
    /// # Errors
    ///
    /// [`LaunchError::InvalidCommand`] for NUL bytes or a bad environment name,
    /// [`LaunchError::RelativeWorkingDirectory`], [`LaunchError::MissingStdio`],
    /// [`LaunchError::SessionEnded`] once init is gone.
    pub fn exec(
        &mut self,
        request: &ExecRequest,
        stdio: Option<[OwnedFd; 3]>,
    ) -> Result<ExecId, LaunchError> {
        validate(request)?;
        if request.tty == stdio.is_some() {
            return Err(LaunchError::MissingStdio);
        }
        if self.ended.is_some() {
            return Err(LaunchError::SessionEnded);
        }
        let id = self.next_id;
        let body = encode_exec(id, request);
        let fds: Vec<BorrowedFd<'_>> = stdio.iter().flatten().map(AsFd::as_fd).collect();
        self.send(EXEC, &body, &fds)?;
        drop(fds);
        self.next_id += 1;
        self.pending.insert(
            id,
            Pending {
                program: request.program.clone(),
                steps: self
                    .plan
                    .exec_steps(request.working_directory.as_deref(), request.user),
                user: request.user,
            },
        );
        Ok(id)
    }

    /// Sends `signal` to the command `id` ([`MAIN`]: the main command) through init.
    ///
    /// # Errors
    ///
    /// [`LaunchError::UnknownExec`] when no such command runs, [`LaunchError::SessionEnded`]
    /// once init is gone.
    pub fn signal(&mut self, id: ExecId, signal: i32) -> Result<(), LaunchError> {
        if self.ended.is_some() {
            return Err(LaunchError::SessionEnded);
        }
        let known = if id == MAIN {
            self.main_running
        } else {
            self.running.contains(&id) || self.pending.contains_key(&id)
        };
        if !known {
            return Err(LaunchError::UnknownExec { id });
        }
        let mut body = Body::default();
        body.u64(id);
        body.i32(signal);
        self.send(SIGNAL, &body.0, &[])
    }

    /// The descriptor to poll for readability before [`Session::next_event`].
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// The next event, or `None` when none is ready. Never blocks (but for reaping init once
    /// its socket closed, which it does as it exits). Call it until `None` each time the
    /// descriptor polls readable: several events may arrive together, and those left unread
    /// wait in a buffer the descriptor does not poll readable for.
    ///
    /// # Errors
    ///
    /// [`LaunchError::Protocol`] when init sent a malformed frame; [`LaunchError::Parent`]
    /// when the socket fails.
    pub fn next_event(&mut self) -> Result<Option<SessionEvent>, LaunchError> {
        loop {
            if self.ended_reported {
                return Ok(None);
            }
            if let Some(message) = self.inbound.next_message()? {
                if let Some(event) = self.event(message)? {
                    return Ok(Some(event));
                }
                continue;
            }
            if let Some(status) = self.ended {
                self.ended_reported = true;
                return Ok(Some(SessionEvent::Ended { status }));
            }
            match self.inbound.receive(self.socket.as_fd(), true) {
                Ok(0) => {
                    self.reap_init();
                }
                Ok(_) | Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return Ok(None),
                Err(errno) => {
                    return Err(LaunchError::Parent {
                        call: "recvmsg",
                        errno,
                    })
                }
            }
        }
    }

    /// Resource use of the sandbox, from its cgroup (`None` without one).
    pub fn usage(&self) -> Option<Usage> {
        let group = self.group.as_ref()?;
        Some(Usage {
            cpu: group.cpu_usage().ok(),
            memory_bytes: group.memory_current().ok(),
            oom_kills: group.oom_kills().ok(),
            pids_denied: group.pids_denied().ok(),
        })
    }

    /// Ends the sandbox: SIGTERM to every process but init, SIGKILL to all when `grace`
    /// passes first; waits for init and removes the cgroup. Returns the main command's status
    /// if it ended, else init's: `Exited(0)` when everything ended within `grace`,
    /// `Signaled(9)` when it was killed.
    pub fn stop(mut self, grace: Duration) -> ExitStatus {
        if self.ended.is_none() {
            let _ = self.send(STOP, &[], &[]);
            let deadline = Instant::now() + grace;
            while self.ended.is_none() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let _ = proc::poll_readable(&[self.socket.as_fd()], Some(left));
                while let Ok(Some(_)) = self.next_event() {}
            }
        }
        self.finish();
        let ended = self.ended.unwrap_or(ExitStatus::Signaled(9));
        self.main_status.unwrap_or(ended)
    }

    /// Kills init if it still runs, reaps it, removes the cgroup.
    fn finish(&mut self) {
        if self.ended.is_none() {
            let _ = rustix::process::kill_process(self.init, Signal::KILL);
            self.reap_init();
        }
        if let Some(group) = self.group.take() {
            // Init's end ended every process of its pid namespace; nothing else can be left.
            if group.processes().is_ok_and(|pids| !pids.is_empty()) {
                let _ = group.kill_all();
            }
            remove_keeping_parents(group);
        }
    }

    /// Waits for init (its socket closed, so it is exiting) and records its status.
    fn reap_init(&mut self) {
        let status = loop {
            match rustix::process::waitpid(Some(self.init), WaitOptions::empty()) {
                Ok(Some((_, status))) => break exit_status(status),
                Err(Errno::INTR) => {}
                // Reaped already, or never ours: nothing more to learn.
                Ok(None) | Err(_) => break ExitStatus::Signaled(9),
            }
        };
        self.running.clear();
        self.pending.clear();
        self.main_running = false;
        self.ended = Some(status);
    }

    /// Reads until one whole frame is there (start-up only: init sends it right away).
    fn receive_blocking(&mut self) -> Result<Message, LaunchError> {
        loop {
            if let Some(message) = self.inbound.next_message()? {
                return Ok(message);
            }
            match self.inbound.receive(self.socket.as_fd(), false) {
                Ok(0) => return Err(LaunchError::InitVanished),
                Ok(_) | Err(Errno::INTR) => {}
                Err(errno) => {
                    return Err(LaunchError::Parent {
                        call: "recvmsg",
                        errno,
                    })
                }
            }
        }
    }

    /// Sends one frame without ever blocking on a full socket while init waits for the
    /// supervisor to read: what init sent meanwhile is buffered for [`Session::next_event`].
    fn send(&mut self, kind: u8, body: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), LaunchError> {
        let frame = frame(kind, fds.len(), body);
        let mut sent = 0;
        let mut fds = fds;
        while sent < frame.len() {
            match proc::send_message(self.socket.as_fd(), &frame[sent..], fds, true) {
                Ok(count) => {
                    sent += count;
                    fds = &[];
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => {
                    let mut poll = [rustix::event::PollFd::new(
                        &self.socket,
                        rustix::event::PollFlags::IN | rustix::event::PollFlags::OUT,
                    )];
                    let _ = rustix::event::poll(&mut poll, None);
                    if poll[0].revents().contains(rustix::event::PollFlags::IN) {
                        match self.inbound.receive(self.socket.as_fd(), true) {
                            Ok(0) => return Err(LaunchError::SessionEnded),
                            Ok(_) | Err(Errno::AGAIN | Errno::INTR) => {}
                            Err(errno) => {
                                return Err(LaunchError::Parent {
                                    call: "recvmsg",
                                    errno,
                                })
                            }
                        }
                    }
                }
                Err(Errno::PIPE | Errno::CONNRESET) => return Err(LaunchError::SessionEnded),
                Err(errno) => {
                    return Err(LaunchError::Parent {
                        call: "sendmsg",
                        errno,
                    })
                }
            }
        }
        Ok(())
    }

    /// The event a frame from init stands for (`None` for frames that are not events).
    fn event(&mut self, message: Message) -> Result<Option<SessionEvent>, LaunchError> {
        let mut fields = Fields(&message.body);
        let event = match message.kind {
            TRACE => {
                self.take_trace(message.fds);
                return Ok(None);
            }
            STARTED => {
                let id = fields.u64().ok_or(LaunchError::Protocol)?;
                let pid = fields.u32().ok_or(LaunchError::Protocol)?;
                fields.end().ok_or(LaunchError::Protocol)?;
                self.pending.remove(&id);
                self.running.insert(id);
                SessionEvent::Started {
                    id,
                    pid,
                    terminal: message.fds.into_iter().next(),
                }
            }
            FAILED => {
                let id = fields.u64().ok_or(LaunchError::Protocol)?;
                let record = fields
                    .record::<RECORD_SIZE>()
                    .ok_or(LaunchError::Protocol)?;
                fields.end().ok_or(LaunchError::Protocol)?;
                let pending = self.pending.remove(&id).ok_or(LaunchError::Protocol)?;
                SessionEvent::Failed {
                    id,
                    error: exec_failure(&self.plan, &pending, &record),
                }
            }
            EXITED => {
                let id = fields.u64().ok_or(LaunchError::Protocol)?;
                let record = fields
                    .record::<STATUS_SIZE>()
                    .ok_or(LaunchError::Protocol)?;
                fields.end().ok_or(LaunchError::Protocol)?;
                self.running.remove(&id);
                SessionEvent::Exited {
                    id,
                    status: self.with_out_of_memory(decode_status(&record)),
                }
            }
            MAIN_EXITED => {
                let record = fields
                    .record::<STATUS_SIZE>()
                    .ok_or(LaunchError::Protocol)?;
                fields.end().ok_or(LaunchError::Protocol)?;
                let status = self.with_out_of_memory(decode_status(&record));
                self.main_running = false;
                self.main_status = Some(status);
                SessionEvent::MainExited { status }
            }
            _ => return Err(LaunchError::Protocol),
        };
        Ok(Some(event))
    }

    fn with_out_of_memory(&self, status: ExitStatus) -> ExitStatus {
        match &self.group {
            Some(group) => out_of_memory(status, &self.plan, group),
            None => status,
        }
    }
}

impl AsFd for Session {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The error an exec's failure record describes.
fn exec_failure(plan: &LaunchPlan, pending: &Pending, record: &[u8; RECORD_SIZE]) -> LaunchError {
    let (phase, index, errno) = decode(record);
    if let (PHASE_COMMAND, Some(Step::SetIdentity { uid, gid, .. }), Some(_), Errno::INVAL) =
        (phase, pending.steps.get(index), pending.user, errno)
    {
        return LaunchError::Step {
            step: format!("switch to user {uid}:{gid} (an id the sandbox does not map)"),
            errno,
        };
    }
    failure_in(&plan.setup, &pending.steps, &pending.program, record)
}

fn validate(request: &ExecRequest) -> Result<(), LaunchError> {
    let has_nul = |text: &str| text.contains('\0');
    if request.program.is_empty()
        || has_nul(&request.program)
        || request.arguments.iter().any(|argument| has_nul(argument))
        || request.environment.iter().any(|(name, value)| {
            name.is_empty() || name.contains('=') || has_nul(name) || has_nul(value)
        })
    {
        return Err(LaunchError::InvalidCommand);
    }
    if let Some(path) = &request.working_directory {
        let normal = path.is_absolute()
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
            && !path.as_os_str().as_encoded_bytes().contains(&0);
        if !normal {
            return Err(LaunchError::RelativeWorkingDirectory { path: path.clone() });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Frames.

const EXEC: u8 = 1;
const SIGNAL: u8 = 2;
const STOP: u8 = 3;
const TRACE: u8 = 16;
const STARTED: u8 = 17;
const FAILED: u8 = 18;
const EXITED: u8 = 19;
const MAIN_EXITED: u8 = 20;

const HEADER: usize = 6;
/// The most descriptors a frame carries (an exec's stdio).
const MAX_FRAME_DESCRIPTORS: usize = 3;

const FLAG_TTY: u8 = 1;
const FLAG_DIRECTORY: u8 = 2;
const FLAG_USER: u8 = 4;

/// A frame's bytes: header then body.
fn frame(kind: u8, descriptors: usize, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + body.len());
    bytes.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    bytes.push(kind);
    bytes.push(u8::try_from(descriptors).unwrap_or(u8::MAX));
    bytes.extend_from_slice(body);
    bytes
}

/// A frame body being written.
#[derive(Default)]
struct Body(Vec<u8>);

impl Body {
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }
    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn i32(&mut self, value: i32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn count(&mut self, count: usize) {
        self.u32(u32::try_from(count).unwrap_or(u32::MAX));
    }
    fn string(&mut self, text: &str) {
        self.count(text.len());
        self.0.extend_from_slice(text.as_bytes());
    }
    fn bytes(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
}

/// A frame body being read; every reader returns `None` past its end.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take(&mut self, count: usize) -> Option<&[u8]> {
        if self.0.len() < count {
            return None;
        }
        let (head, rest) = self.0.split_at(count);
        self.0 = rest;
        Some(head)
    }
    fn record<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.record::<1>()?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.record()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_le_bytes(self.record()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.record()?))
    }
    fn string(&mut self) -> Option<String> {
        let length = usize::try_from(self.u32()?).ok()?;
        String::from_utf8(self.take(length)?.to_vec()).ok()
    }
    /// A count of items of at least `size` bytes each, bounded by what is left.
    fn count(&mut self, size: usize) -> Option<usize> {
        let count = usize::try_from(self.u32()?).ok()?;
        (count.checked_mul(size)? <= self.0.len()).then_some(count)
    }
    /// `Some` when every byte was read.
    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

fn encode_exec(id: ExecId, request: &ExecRequest) -> Vec<u8> {
    let mut body = Body::default();
    body.u64(id);
    let mut flags = 0;
    if request.tty {
        flags |= FLAG_TTY;
    }
    if request.working_directory.is_some() {
        flags |= FLAG_DIRECTORY;
    }
    if request.user.is_some() {
        flags |= FLAG_USER;
    }
    body.u8(flags);
    let (uid, gid) = request.user.unwrap_or_default();
    body.u32(uid);
    body.u32(gid);
    body.string(&request.program);
    if request.arguments.is_empty() {
        body.count(1);
        body.string(&request.program);
    } else {
        body.count(request.arguments.len());
        for argument in &request.arguments {
            body.string(argument);
        }
    }
    body.count(request.environment.len());
    for (name, value) in &request.environment {
        body.string(name);
        body.string(value);
    }
    if let Some(path) = &request.working_directory {
        // Validated: absolute, UTF-8 as given (a `PathBuf` from a `String` in practice).
        body.string(&path.to_string_lossy());
    }
    body.0
}

/// An exec request as init reads it.
struct DecodedExec {
    id: ExecId,
    request: ExecRequest,
}

/// The request, or the id (if readable) of a request init cannot use.
fn decode_exec(body: &[u8]) -> Result<DecodedExec, Option<ExecId>> {
    let mut fields = Fields(body);
    let id = fields.u64().ok_or(None)?;
    let read = |fields: &mut Fields<'_>| -> Option<ExecRequest> {
        let flags = fields.u8()?;
        let uid = fields.u32()?;
        let gid = fields.u32()?;
        let program = fields.string()?;
        let count = fields.count(4)?;
        let arguments = (0..count)
            .map(|_| fields.string())
            .collect::<Option<Vec<_>>>()?;
        let count = fields.count(8)?;
        let environment = (0..count)
            .map(|_| Some((fields.string()?, fields.string()?)))
            .collect::<Option<Vec<_>>>()?;
        let working_directory = if flags & FLAG_DIRECTORY != 0 {
            Some(PathBuf::from(fields.string()?))
        } else {
            None
        };
        fields.end()?;
        let request = ExecRequest {
            program,
            arguments,
            environment,
            working_directory,
            user: (flags & FLAG_USER != 0).then_some((uid, gid)),
            tty: flags & FLAG_TTY != 0,
        };
        validate(&request).ok()?;
        (!request.arguments.is_empty()).then_some(request)
    };
    read(&mut fields)
        .map(|request| DecodedExec { id, request })
        .ok_or(Some(id))
}

/// A whole frame received.
struct Message {
    kind: u8,
    body: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// Bytes and descriptors received and not yet parsed into frames.
#[derive(Debug, Default)]
struct Inbound {
    buffer: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

impl Inbound {
    /// One `recvmsg`: returns the bytes received, 0 at end of stream.
    fn receive(&mut self, socket: BorrowedFd<'_>, nonblocking: bool) -> Result<usize, Errno> {
        let mut chunk = [0u8; 16 * 1024];
        let mut fds = Vec::new();
        let count = proc::receive_message(socket, &mut chunk, &mut fds, nonblocking)?;
        self.buffer.extend_from_slice(&chunk[..count]);
        self.fds.extend(fds);
        Ok(count)
    }

    /// The first whole frame, if there is one.
    fn next_message(&mut self) -> Result<Option<Message>, LaunchError> {
        let Some(header) = self.buffer.get(..HEADER) else {
            return Ok(None);
        };
        let mut length = [0u8; 4];
        length.copy_from_slice(&header[..4]);
        let length = usize::try_from(u32::from_le_bytes(length)).unwrap_or(usize::MAX);
        let (kind, count) = (header[4], usize::from(header[5]));
        if length > MAX_BODY || count > MAX_FRAME_DESCRIPTORS {
            return Err(LaunchError::Protocol);
        }
        if self.buffer.len() < HEADER + length {
            return Ok(None);
        }
        // A frame's descriptors come with its first byte, so they are here by now.
        if self.fds.len() < count {
            return Err(LaunchError::Protocol);
        }
        let body = self.buffer[HEADER..HEADER + length].to_vec();
        self.buffer.drain(..HEADER + length);
        let fds = self.fds.drain(..count).collect();
        Ok(Some(Message { kind, body, fds }))
    }
}

/// Sends a whole frame from init (blocking: the supervisor reads, or init waits).
fn send_frame(
    socket: &OwnedFd,
    kind: u8,
    body: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), Errno> {
    let frame = frame(kind, fds.len(), body);
    let mut sent = 0;
    let mut fds = fds;
    while sent < frame.len() {
        sent += proc::send_message(socket.as_fd(), &frame[sent..], fds, false)?;
        fds = &[];
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Init's side.

/// A descriptor numbered 3 or above (a copy, close-on-exec, when it was 0, 1 or 2), so that
/// moving stdio into place cannot overwrite one source with another.
fn above_stdio(fd: OwnedFd) -> Result<OwnedFd, Errno> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    rustix::io::fcntl_dupfd_cloexec(&fd, 3)
}

fn above_stdio_all(fds: [OwnedFd; 3]) -> Result<[OwnedFd; 3], Errno> {
    let [stdin, stdout, stderr] = fds;
    Ok([
        above_stdio(stdin)?,
        above_stdio(stdout)?,
        above_stdio(stderr)?,
    ])
}

/// What init keeps while it serves.
struct Served<'a> {
    plan: &'a LaunchPlan,
    seccomp: Option<&'a SeccompProgram>,
    /// The Landlock ruleset, built once for every command (`None`: each builds its own, which
    /// also reports an error building it).
    landlock: Option<sys::PreparedLandlock>,
    socket: OwnedFd,
    join_files: Vec<OwnedFd>,
    /// The main command while it runs.
    main: Option<Pid>,
    main_status: Option<ExitStatus>,
    /// Exec'd commands that run, by pid (in the sandbox).
    running: HashMap<i32, ExecId>,
    stopping: bool,
}

/// pid 1 of a session: sets the sandbox up as for `run`, hardens itself, installs the exec
/// tracer, spawns the main command, then serves requests and reaps until stopped.
fn serve(
    plan: &LaunchPlan,
    seccomp: Option<&SeccompProgram>,
    main: Option<&ExecTarget>,
    main_stdio: Option<[OwnedFd; 3]>,
    trace: Option<fn() -> Result<OwnedFd, Errno>>,
    socket: OwnedFd,
    report: OwnedFd,
) -> ! {
    let ready = prepare_init(plan, seccomp, &socket, &report, false, true);
    // Init is a copy of the supervisor: none of the supervisor's signal handlers may run in
    // it (a sandbox process signalling pid 1 would run them, writing to the supervisor's
    // self-pipes). With default actions, pid 1 of a namespace drops every signal from inside.
    if let Err(errno) = proc::reset_all_signal_dispositions() {
        fail(&report, PHASE_SESSION, 3, errno, EXIT_SETUP_FAILED);
    }
    // Whatever the supervisor held when it cloned init is not for the sandbox's commands.
    if let Err(errno) = proc::set_close_on_exec_from(3) {
        fail(&report, PHASE_SESSION, 0, errno, EXIT_SETUP_FAILED);
    }
    // Commands run with init's ids; non-dumpable, init's memory and descriptors stay out of
    // their reach (and setresuid in the setup already happened, which would reset the flag).
    if let Err(errno) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        fail(&report, PHASE_SESSION, 1, errno, EXIT_SETUP_FAILED);
    }
    let children = SignalSet::of(&[Signal::CHILD.as_raw()]);
    let signal_fd = match proc::block_signals(&children).and_then(|_| SignalFd::open(&children)) {
        Ok(fd) => fd,
        Err(errno) => fail(&report, PHASE_SESSION, 2, errno, EXIT_SETUP_FAILED),
    };
    if let Some(install) = trace {
        match install() {
            Ok(listener) => {
                // Without it (no /proc in the sandbox) the tracer reads each process's pid.
                let namespace = rustix::fs::open(
                    c"/proc/self/ns/pid",
                    OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ok();
                let listener = listener.as_fd();
                let both;
                let fds: &[BorrowedFd<'_>] = match &namespace {
                    Some(namespace) => {
                        both = [listener, namespace.as_fd()];
                        &both
                    }
                    None => std::slice::from_ref(&listener),
                };
                if send_frame(&socket, TRACE, &[], fds).is_err() {
                    proc::exit_immediately(EXIT_SETUP_FAILED);
                }
            }
            Err(errno) => fail(&report, PHASE_TRACE, 0, errno, EXIT_SETUP_FAILED),
        }
    }
    let landlock = (!plan.settings.skip.landlock)
        .then(|| sys::Syscalls::prepare_landlock(&mut sys::linux::Linux, &plan.landlock).ok())
        .flatten();
    let mut served = Served {
        plan,
        seccomp,
        landlock,
        socket,
        join_files: ready.join_files,
        main: None,
        main_status: None,
        running: HashMap::new(),
        stopping: false,
    };
    // Commands start with no signal blocked, whatever the supervisor blocks.
    let unblocked = SignalSet::empty();
    if let Some(main) = main {
        let stdio = match main_stdio.map(above_stdio_all).transpose() {
            Ok(stdio) => stdio,
            Err(errno) => fail(&report, PHASE_REQUEST, 1, errno, EXIT_SETUP_FAILED),
        };
        let stdio_ref = match &stdio {
            Some(fds) => CommandStdio::Descriptors(fds),
            None => CommandStdio::Inherit,
        };
        let resources = served.resources(main);
        let spawned = proc::spawn_sharing_memory(&mut || {
            run_command(
                &plan.command,
                &resources,
                &served.join_files,
                &stdio_ref,
                &report,
                &unblocked,
            )
        });
        drop(stdio);
        match spawned {
            Ok(pid) => served.main = Some(pid),
            Err(errno) => fail(&report, PHASE_SPAWN, 0, errno, EXIT_SETUP_FAILED),
        }
    } else {
        drop(main_stdio);
    }
    // End of file: init is ready (a failing main command wrote its record before).
    drop(report);

    let mut inbound = Inbound::default();
    loop {
        let ready = match proc::poll_readable(&[served.socket.as_fd(), signal_fd.as_fd()], None) {
            Ok(ready) => ready,
            Err(_) => served.end(),
        };
        if ready & 0b10 != 0 || ready == 0 {
            while let Ok(Some(_)) = signal_fd.take() {}
            served.reap();
        }
        if ready & 0b01 != 0 {
            match inbound.receive(served.socket.as_fd(), true) {
                // The supervisor is gone (or closed the session): so is the sandbox.
                Ok(0) => served.end(),
                Ok(_) | Err(Errno::AGAIN | Errno::INTR) => {}
                Err(_) => served.end(),
            }
            loop {
                match inbound.next_message() {
                    Ok(Some(message)) => served.handle(message),
                    Ok(None) => break,
                    // A malformed frame: the channel cannot be trusted any more.
                    Err(_) => served.end(),
                }
            }
        }
    }
}

impl<'a> Served<'a> {
    fn resources<'b>(&'b self, exec: &'b ExecTarget) -> Resources<'b>
    where
        'a: 'b,
    {
        Resources {
            mounts: &[],
            landlock: &self.plan.landlock,
            prepared_landlock: self.landlock.as_ref(),
            seccomp: self.seccomp.map(|filter| filter as &dyn sys::SeccompFilter),
            exec: Some(exec),
        }
    }

    /// Ends init, and with it every process of the sandbox.
    fn end(&self) -> ! {
        proc::exit_immediately(self.main_status.map_or(0, ExitStatus::code))
    }

    /// Sends an event; a supervisor that cannot take it is gone.
    fn report(&self, kind: u8, body: &[u8], fds: &[BorrowedFd<'_>]) {
        if send_frame(&self.socket, kind, body, fds).is_err() {
            self.end();
        }
    }

    fn report_failure(&self, id: ExecId, phase: u32, index: usize, errno: Errno) {
        self.report_record(id, &encode(phase, index, errno));
    }

    fn report_record(&self, id: ExecId, record: &[u8; RECORD_SIZE]) {
        let mut body = Body::default();
        body.u64(id);
        body.bytes(record);
        self.report(FAILED, &body.0, &[]);
    }

    fn handle(&mut self, message: Message) {
        match message.kind {
            EXEC => match decode_exec(&message.body) {
                Ok(exec) => self.spawn(exec, message.fds),
                Err(Some(id)) => self.report_failure(id, PHASE_REQUEST, 0, Errno::INVAL),
                Err(None) => {}
            },
            SIGNAL => {
                let mut fields = Fields(&message.body);
                let (Some(id), Some(number), Some(())) = (fields.u64(), fields.i32(), fields.end())
                else {
                    return;
                };
                let target = if id == MAIN {
                    self.main
                } else {
                    self.running
                        .iter()
                        .find(|(_, running)| **running == id)
                        .and_then(|(pid, _)| Pid::from_raw(*pid))
                };
                if let (Some(pid), Some(signal)) = (target, Signal::from_named_raw(number)) {
                    // The command may have just ended; its EXITED follows.
                    let _ = rustix::process::kill_process(pid, signal);
                }
            }
            STOP => {
                self.stopping = true;
                let _ = proc::signal_all_others(Signal::TERM.as_raw());
                self.reap();
            }
            // Unknown frames are refused, not guessed at.
            _ => {}
        }
    }

    /// Starts an exec'd command and reports STARTED or FAILED.
    fn spawn(&mut self, exec: DecodedExec, fds: Vec<OwnedFd>) {
        let DecodedExec { id, request } = exec;
        let stdio: Option<[OwnedFd; 3]> = match (request.tty, <[OwnedFd; 3]>::try_from(fds)) {
            (true, Err(fds)) if fds.is_empty() => None,
            (false, Ok(fds)) => match above_stdio_all(fds) {
                Ok(fds) => Some(fds),
                Err(errno) => return self.report_failure(id, PHASE_REQUEST, 1, errno),
            },
            _ => return self.report_failure(id, PHASE_REQUEST, 0, Errno::BADF),
        };
        let environment: Vec<String> = request
            .environment
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let search_path = request
            .environment
            .iter()
            .find(|(name, _)| name == "PATH")
            .map_or(DEFAULT_PATH, |(_, value)| value.as_str());
        let Ok(target) = ExecTarget::new(
            &request.program,
            &request.arguments,
            &environment,
            search_path,
        ) else {
            return self.report_failure(id, PHASE_REQUEST, 0, Errno::INVAL);
        };
        let steps = self
            .plan
            .exec_steps(request.working_directory.as_deref(), request.user);
        let (master, slave) = if request.tty {
            match terminal::open_pair() {
                Ok((master, slave)) => (Some(master), Some(slave)),
                Err(errno) => return self.report_failure(id, PHASE_TERMINAL, 0, errno),
            }
        } else {
            (None, None)
        };
        let stdio_ref = match (&slave, &stdio) {
            (Some(slave), _) => CommandStdio::Terminal(slave),
            (None, Some(fds)) => CommandStdio::Descriptors(fds),
            (None, None) => CommandStdio::Inherit,
        };
        let (report_read, report_write) =
            match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) {
                Ok(pair) => pair,
                Err(errno) => return self.report_failure(id, PHASE_SPAWN, 0, errno),
            };
        let resources = self.resources(&target);
        let unblocked = SignalSet::empty();
        // Like run's command: it shares init's memory until it execs or fails (init waits),
        // so everything it needs was built above.
        let spawned = proc::spawn_sharing_memory(&mut || {
            run_command(
                &steps,
                &resources,
                &self.join_files,
                &stdio_ref,
                &report_write,
                &unblocked,
            )
        });
        drop(report_write);
        drop(stdio);
        drop(slave);
        let pid = match spawned {
            Ok(pid) => pid,
            Err(errno) => return self.report_failure(id, PHASE_SPAWN, 0, errno),
        };
        // The command has exec'd (its copy of the pipe closed) or failed (its record written):
        // this read does not wait.
        let mut record = [0u8; RECORD_SIZE];
        if proc::read_full(&report_read, &mut record) == Ok(RECORD_SIZE) {
            // Reaped as any orphan: no EXITED for a command that never started.
            return self.report_record(id, &record);
        }
        let raw = pid.as_raw_nonzero().get();
        self.running.insert(raw, id);
        let mut body = Body::default();
        body.u64(id);
        body.u32(raw.unsigned_abs());
        let fds: Vec<BorrowedFd<'_>> = master.iter().map(AsFd::as_fd).collect();
        self.report(STARTED, &body.0, &fds);
    }

    /// Reaps every process that ended, reporting the commands; once stopping and none is
    /// left, ends init.
    fn reap(&mut self) {
        loop {
            match rustix::process::wait(WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => {
                    let status = exit_status(status);
                    if Some(pid) == self.main {
                        self.main = None;
                        self.main_status = Some(status);
                        self.report(MAIN_EXITED, &encode_status(status), &[]);
                    } else if let Some(id) = self.running.remove(&pid.as_raw_nonzero().get()) {
                        let mut body = Body::default();
                        body.u64(id);
                        body.bytes(&encode_status(status));
                        self.report(EXITED, &body.0, &[]);
                    }
                }
                Ok(None) => return,
                Err(Errno::INTR) => {}
                // ECHILD: no process is left but init.
                Err(_) => {
                    if self.stopping {
                        self.end();
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ExecRequest {
        ExecRequest {
            program: "sh".into(),
            arguments: vec!["sh".into(), "-c".into(), "echo hi".into()],
            environment: vec![("PATH".into(), "/bin".into())],
            working_directory: Some("/srv".into()),
            user: Some((5, 6)),
            tty: true,
        }
    }

    #[test]
    fn exec_requests_round_trip() {
        let body = encode_exec(7, &request());
        let decoded = decode_exec(&body).unwrap_or_else(|_| panic!("not decoded"));
        assert_eq!(decoded.id, 7);
        assert_eq!(decoded.request, request());
    }

    #[test]
    fn malformed_exec_requests_are_rejected_with_their_id() {
        let body = encode_exec(7, &request());
        // Truncated, or with a byte too many.
        assert_eq!(decode_exec(&body[..body.len() - 1]).err(), Some(Some(7)));
        let mut longer = body.clone();
        longer.push(0);
        assert_eq!(decode_exec(&longer).err(), Some(Some(7)));
        assert_eq!(decode_exec(&body[..4]).err(), Some(None));
        // A count larger than the body can hold is refused before anything is allocated.
        let mut huge = Body::default();
        huge.u64(1);
        huge.u8(0);
        huge.u32(0);
        huge.u32(0);
        huge.string("sh");
        huge.u32(u32::MAX);
        assert_eq!(decode_exec(&huge.0).err(), Some(Some(1)));
        // A relative working directory is refused by init too.
        let mut relative = request();
        relative.working_directory = Some("srv".into());
        assert_eq!(decode_exec(&encode_exec(2, &relative)).err(), Some(Some(2)));
    }

    #[test]
    fn frames_are_split_and_refused_as_the_header_says() {
        let mut inbound = Inbound::default();
        let bytes = frame(STOP, 0, &[1, 2, 3]);
        inbound.buffer.extend_from_slice(&bytes[..4]);
        assert!(matches!(inbound.next_message(), Ok(None)));
        inbound.buffer.extend_from_slice(&bytes[4..]);
        inbound.buffer.extend_from_slice(&frame(SIGNAL, 0, &[]));
        let first = inbound.next_message().ok().flatten();
        assert!(matches!(first, Some(Message { kind: STOP, ref body, .. }) if body == &[1, 2, 3]));
        let second = inbound.next_message().ok().flatten();
        assert!(matches!(second, Some(Message { kind: SIGNAL, .. })));
        assert!(matches!(inbound.next_message(), Ok(None)));

        // Descriptors the header counts but that never came, too many, a body too long.
        for bytes in [frame(EXEC, 3, &[]), frame(EXEC, 4, &[]), {
            let mut bytes = frame(EXEC, 0, &[]);
            bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
            bytes
        }] {
            let mut inbound = Inbound {
                buffer: bytes,
                ..Inbound::default()
            };
            assert!(matches!(inbound.next_message(), Err(LaunchError::Protocol)));
        }
    }

    #[test]
    fn requests_are_validated_before_they_are_sent() {
        let mut bad = request();
        bad.arguments.push("a\0b".into());
        assert!(matches!(validate(&bad), Err(LaunchError::InvalidCommand)));
        let mut bad = request();
        bad.environment.push(("A=B".into(), "c".into()));
        assert!(matches!(validate(&bad), Err(LaunchError::InvalidCommand)));
        let mut bad = request();
        bad.working_directory = Some("/a/../b".into());
        assert!(matches!(
            validate(&bad),
            Err(LaunchError::RelativeWorkingDirectory { .. })
        ));
        assert!(validate(&request()).is_ok());
    }
}
