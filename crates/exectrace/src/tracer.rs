//! The tracer thread: receives notifications, reads what it records, answers CONTINUE, then
//! records exec and exit events; watches the processes it saw exec through pidfds.
//!
//! How exits are seen depends on the kernel ([`ExitSource`]). From Linux 6.15 a pidfd wakes
//! its poller with `EPOLLHUP` when its process is reaped and then reports the wait status
//! (`PIDFD_INFO_EXIT`), so the filter leaves `exit_group` alone: a process costs one round trip
//! (its exec), and its exit is recorded when its parent reaps it, without stopping anything.
//! On older kernels `exit_group` is notified and answered at once, and the pidfd (readable at
//! exit) catches processes killed by a signal, whose status comes from `/proc/PID/stat` while
//! they are zombies.
//!
//! What it guarantees (see the crate documentation for the whole contract):
//!
//! - each received notification is answered with CONTINUE before anything is recorded, also
//!   when reading the process failed; a notification whose process died meanwhile is skipped;
//! - a notification is answered only after everything recorded about it was read, and what was
//!   read is recorded only if the answer succeeded: the kernel accepts it only while the
//!   notifying process still waits in the syscall, during which its pid cannot name another
//!   process, so a recycled pid never lends its data to an event;
//! - pidfds are handled before notifications of the same wake-up, and an exec whose pid is
//!   still listed checks that the listed process is alive, so a process that ended is recorded
//!   and forgotten before a new process with its pid is listed;
//! - events are handed to the recorder in batches (`batch.rs`: at most 64 events, at most
//!   10 ms after the first), so the spool's writer wakes once per batch rather than
//!   once per event; whatever is held is handed over before the thread ends;
//! - the thread ends when the listener hangs up (every process that had the filter is gone and
//!   reaped) or when [`TracerHandle::stop`] asks it to, after answering what is pending.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use events::{Event, Recorder, Value};
use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::{eventfd, EventfdFlags};
use sys::notify::{Listener, Notification};
use sys::Errno;

use crate::batch::Batch;
use crate::filter::{Arch, ExitSource};
use crate::procfs::{Proc, Status};
use crate::remote::{self, Memory};
use crate::REDACTED;

/// What the tracer records of each exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceOptions {
    /// argv is recorded as `[argv0, "<redacted>"]` (or `[argv0]` when it has one entry): for
    /// sandboxes whose commands carry secrets on their command line.
    pub redact_arguments: bool,
    /// The most bytes of argv strings recorded per exec; the rest is cut and the event marked
    /// truncated.
    pub max_argument_bytes: usize,
}

impl Default for TraceOptions {
    /// Arguments recorded, up to 16 KiB.
    fn default() -> TraceOptions {
        TraceOptions {
            redact_arguments: false,
            max_argument_bytes: 16 * 1024,
        }
    }
}

/// Why the tracer stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The listener hung up: no process has the filter any more.
    HangUp,
    /// [`TracerHandle::stop`] was called.
    Requested,
    /// Receiving or waiting failed with this errno; the listener was closed, so the remaining
    /// processes' filtered syscalls fail with `ENOSYS` (fails closed).
    Failed(Errno),
}

/// Totals of a tracer run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceStats {
    /// Exec events recorded (attempts, including failed execs).
    pub execs: u64,
    /// Exit events recorded.
    pub exits: u64,
    /// Events the recorder dropped (its queue was full).
    pub lost: u64,
    /// Why the thread ended.
    pub stopped_by: StopReason,
}

/// The running tracer thread.
#[derive(Debug)]
pub struct TracerHandle {
    stop: OwnedFd,
    thread: JoinHandle<TraceStats>,
}

impl TracerHandle {
    pub(crate) fn new(stop: OwnedFd, thread: JoinHandle<TraceStats>) -> TracerHandle {
        TracerHandle { stop, thread }
    }

    /// Asks the thread to stop (it answers the notifications pending now and records the exits
    /// it already saw) and waits for it. Processes still running keep the filter, whose
    /// syscalls then fail with `ENOSYS`: stop explicitly only once the sandbox is gone.
    pub fn stop(self) -> TraceStats {
        // An eventfd write of 1 cannot block or fail short of a closed descriptor, which the
        // handle owns; if it failed anyway the thread still ends at hang-up.
        let _ = rustix::io::write(&self.stop, &1u64.to_ne_bytes());
        self.wait()
    }

    /// Waits until the listener hangs up (every traced process is gone) and the thread ends.
    pub fn wait(self) -> TraceStats {
        match self.thread.join() {
            Ok(stats) => stats,
            // The thread does not panic; were it to, what it recorded is in the spool and the
            // listener was closed (failing closed).
            Err(_) => TraceStats {
                execs: 0,
                exits: 0,
                lost: 0,
                stopped_by: StopReason::Failed(Errno::IO),
            },
        }
    }

    /// Whether the thread has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

/// Starts the tracer on a thread named `exec-tracer`, answering the notifications of
/// `listener` and recording into `recorder`.
///
/// `pid_namespace` (an open `/proc/PID/ns/pid`, the sandbox's) is the namespace whose pids the
/// events carry: a process's and its parent's pid there (0 for a parent outside it), as `ps`
/// in the sandbox shows them, each found with one ioctl. Without it (or on kernels before
/// 6.10) each process's pid in its own innermost namespace is read from `/proc`, and a parent
/// counts only when it is in the same namespace.
pub fn spawn(
    listener: OwnedFd,
    recorder: Recorder,
    options: TraceOptions,
    pid_namespace: Option<OwnedFd>,
) -> io::Result<TracerHandle> {
    let arch = Arch::native().ok_or_else(|| io::Error::from(io::ErrorKind::Unsupported))?;
    let pids = match pid_namespace {
        Some(namespace) if is_own_pid_namespace(&namespace)? => Pids::Own,
        Some(namespace) => Pids::Namespace(namespace),
        None => Pids::Innermost,
    };
    let listener = Listener::new(listener)?;
    let stop = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
    let stop_for_thread = stop.try_clone()?;
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    epoll::add(
        &epoll,
        listener.as_fd(),
        EventData::new_u64(LISTENER),
        EventFlags::IN,
    )?;
    epoll::add(
        &epoll,
        &stop_for_thread,
        EventData::new_u64(STOP),
        EventFlags::IN,
    )?;
    let tracer = Tracer {
        arch,
        exit_source: ExitSource::detect(),
        listener,
        options,
        pids,
        epoll,
        _stop: stop_for_thread,
        proc: Proc::open()?,
        pointers: Memory::new(),
        strings: Memory::new(),
        processes: HashMap::new(),
        parents: HashMap::new(),
        batch: Batch::new(recorder),
        execs: 0,
        exits: 0,
    };
    let thread = std::thread::Builder::new()
        .name("exec-tracer".to_owned())
        .spawn(move || tracer.run())?;
    Ok(TracerHandle { stop, thread })
}

/// Whether `namespace` is the pid namespace the calling thread's pids are in.
fn is_own_pid_namespace(namespace: &OwnedFd) -> io::Result<bool> {
    let given = rustix::fs::fstat(namespace)?;
    let own = rustix::fs::stat("/proc/thread-self/ns/pid")?;
    Ok((given.st_dev, given.st_ino) == (own.st_dev, own.st_ino))
}

/// Which pids the events carry (see [`spawn`]).
enum Pids {
    /// The tracer's own: the pid namespace given is the tracer's, so a process's pid is the
    /// notification's, with nothing to read.
    Own,
    /// Those of this pid namespace.
    Namespace(OwnedFd),
    /// Each process's in its innermost namespace.
    Innermost,
}

/// epoll data of the listener and the stop eventfd; a pidfd's is its process's pid + `PIDFD`.
const LISTENER: u64 = 0;
const STOP: u64 = 1;
const PIDFD: u64 = 2;

/// A process that exec'd and has not been seen to exit.
struct Traced {
    sandbox_pid: u32,
    /// How many pid namespaces (seen from the tracer's) hold it.
    levels: usize,
    pidfd: OwnedFd,
    /// Its last exec.
    exec_at: Instant,
}

struct Tracer {
    arch: Arch,
    exit_source: ExitSource,
    listener: Listener,
    options: TraceOptions,
    pids: Pids,
    epoll: OwnedFd,
    _stop: OwnedFd,
    proc: Proc,
    pointers: Memory,
    strings: Memory,
    /// By pid in the tracer's pid namespace.
    processes: HashMap<u32, Traced>,
    /// With [`Pids::Innermost`], parents that did not exec under the tracer (init, whose
    /// children every `exec` into a sandbox is), by pid in the tracer's namespace: their pid in
    /// their own namespace, its number of levels, and a pidfd that tells whether the pid still
    /// names them. Saves reading their `status` for every child.
    parents: HashMap<u32, (u32, usize, OwnedFd)>,
    /// Events not yet handed to the recorder.
    batch: Batch,
    execs: u64,
    exits: u64,
}

/// An exec as read, before it is recorded.
struct Exec {
    /// The process's pid in the tracer's namespace.
    tgid: u32,
    /// The process's pid in its own namespace.
    pid: u32,
    levels: usize,
    /// Opened when the process is not in the table yet.
    pidfd: Option<OwnedFd>,
    record: ExecRecord,
}

/// What an exec event says.
pub(crate) struct ExecRecord {
    pub pid: u32,
    pub parent_pid: u32,
    pub path: Option<String>,
    pub arguments: remote::Arguments,
    pub working_directory: Option<String>,
    pub execveat: bool,
    pub incomplete: bool,
}

impl Tracer {
    fn run(mut self) -> TraceStats {
        let stopped_by = self.serve();
        if stopped_by == StopReason::HangUp {
            // No process has the filter any more: every one still listed is gone (reaped).
            let pids: Vec<u32> = self.processes.keys().copied().collect();
            for pid in pids {
                self.process_exited(pid);
            }
        }
        self.batch.flush();
        TraceStats {
            execs: self.execs,
            exits: self.exits,
            lost: self.batch.lost,
            stopped_by,
        }
    }

    fn serve(&mut self) -> StopReason {
        let empty = epoll::Event {
            flags: EventFlags::empty(),
            data: EventData::new_u64(0),
        };
        let mut ready = [empty; 64];
        let mut stopping = false;
        // Once stopping, at most this many more wake-ups are served.
        let mut drain = 1024u32;
        loop {
            if stopping {
                drain = drain.saturating_sub(1);
                if drain == 0 {
                    return StopReason::Requested;
                }
            }
            // Once stopping, only look at what is ready now; with events held, wake up when
            // they are due.
            let timeout = if stopping {
                Some(Duration::ZERO)
            } else {
                self.batch.wait()
            };
            let timeout = timeout.map(|delay| rustix::event::Timespec {
                tv_sec: 0,
                // Below BATCH_DELAY: fits and stays under a second.
                tv_nsec: i64::from(delay.subsec_nanos()),
            });
            let count = match epoll::wait(&self.epoll, &mut ready[..], timeout.as_ref()) {
                Ok(count) => count,
                Err(Errno::INTR) => continue,
                Err(errno) => return StopReason::Failed(errno),
            };
            if count == 0 {
                if stopping {
                    return StopReason::Requested;
                }
                self.batch.flush();
                continue;
            }
            let mut listener = None;
            // Exits first: a pid is forgotten before a notification could come from its reuse.
            for event in &ready[..count] {
                match event.data.u64() {
                    LISTENER => listener = Some(event.flags),
                    STOP => stopping = true,
                    key => {
                        if let Ok(pid) = u32::try_from(key - PIDFD) {
                            self.process_exited(pid);
                        }
                    }
                }
            }
            if let Some(flags) = listener {
                if flags.contains(EventFlags::IN) {
                    match self.listener.receive() {
                        Ok(notification) => self.handle(&notification),
                        // The notifying process died before it was received.
                        Err(Errno::NOENT) => {}
                        Err(errno) => return StopReason::Failed(errno),
                    }
                } else if flags.intersects(EventFlags::HUP | EventFlags::ERR) {
                    return StopReason::HangUp;
                }
            }
            if self.batch.is_due() {
                self.batch.flush();
            }
        }
    }

    fn handle(&mut self, notification: &Notification) {
        let nr = notification.nr;
        if notification.arch != self.arch.audit_value() {
            self.answer(notification.id);
        } else if nr == self.arch.execve() || nr == self.arch.execveat() {
            self.exec(notification, nr == self.arch.execveat());
        } else if nr == self.arch.exit_group() {
            self.exit_group(notification);
        } else {
            self.answer(notification.id);
        }
    }

    /// Lets the syscall run. Fails only when the process died meanwhile (`ENOENT`), which
    /// leaves nothing to do.
    fn answer(&mut self, id: u64) -> bool {
        self.listener.continue_syscall(id).is_ok()
    }

    fn exec(&mut self, notification: &Notification, execveat: bool) {
        let started = Instant::now();
        let exec = self.read_exec(notification, execveat);
        // Everything was read by pid (and the pidfd opened by pid): it belongs to the notifying
        // process only if that process was still waiting in the syscall after the reads. The
        // answer tells: it fails (ENOENT) once the process died or left the syscall (a signal
        // interrupted it; the restarted syscall is notified anew), and while it waits its pid
        // cannot name another process. So no separate SECCOMP_IOCTL_NOTIF_ID_VALID is made.
        let valid = self.answer(notification.id);
        let Some(exec) = exec.filter(|_| valid) else {
            return;
        };
        match (self.processes.get_mut(&exec.tgid), exec.pidfd) {
            (Some(traced), _) => traced.exec_at = started,
            (None, Some(pidfd)) => {
                // With exits from pidfds, only the reap matters: EPOLLHUP, which epoll always
                // reports (no wake-up at exit, while the parent has not reaped yet).
                let flags = match self.exit_source {
                    ExitSource::Pidfd => EventFlags::empty(),
                    ExitSource::ExitGroup => EventFlags::IN,
                };
                let watched = epoll::add(
                    &self.epoll,
                    &pidfd,
                    EventData::new_u64(u64::from(exec.tgid) + PIDFD),
                    flags,
                );
                if watched.is_ok() {
                    self.processes.insert(
                        exec.tgid,
                        Traced {
                            sandbox_pid: exec.pid,
                            levels: exec.levels,
                            pidfd,
                            exec_at: started,
                        },
                    );
                }
            }
            (None, None) => {}
        }
        self.execs += 1;
        let event = exec_event(exec.record, &self.options);
        self.batch.push(event);
    }

    /// Reads an exec's process, path, argv and working directory, and opens a pidfd for a
    /// process not seen before; `None` if the process is gone.
    fn read_exec(&mut self, notification: &Notification, execveat: bool) -> Option<Exec> {
        let tid = notification.pid;
        let (status, pidfd) = self.identify(tid)?;
        let parent_pid = self.sandbox_parent(status.parent, status.levels);
        let arguments = &notification.arguments;
        let (path_address, argv_address) = if execveat {
            (arguments[1], arguments[2])
        } else {
            (arguments[0], arguments[1])
        };
        let mut incomplete = false;
        self.pointers.attach(tid);
        self.strings.attach(tid);
        let path = match self.strings.string(path_address, PATH_LIMIT) {
            Ok((bytes, _)) => Some(bytes),
            Err((_, _)) => {
                incomplete = true;
                None
            }
        };
        let arguments = remote::arguments(
            &mut self.pointers,
            &mut self.strings,
            argv_address,
            self.options.max_argument_bytes,
            self.options.redact_arguments,
        );
        let path = path.map(|path| {
            let path = if execveat {
                execveat_path(&mut self.proc, notification, path)
            } else {
                path
            };
            String::from_utf8_lossy(&path).into_owned()
        });
        let working_directory = self
            .proc
            .link_in_sandbox(tid, "cwd")
            .ok()
            .map(|cwd| String::from_utf8_lossy(&cwd).into_owned());
        Some(Exec {
            tgid: status.tgid,
            pid: status.sandbox_pid,
            levels: status.levels,
            pidfd,
            record: ExecRecord {
                pid: status.sandbox_pid,
                parent_pid,
                path,
                arguments,
                working_directory,
                execveat,
                incomplete,
            },
        })
    }

    /// Who thread `tid` is, and a pidfd of its process unless it is listed. Without a file to
    /// read where possible: a listed process that is still unreaped is the same process (its
    /// pid cannot be reused meanwhile), and a new process's leader has a pidfd that gives its
    /// parent (`PIDFD_GET_INFO`) and its pid as the events show it ([`Tracer::presented`]).
    /// Otherwise (a thread other than the leader, kernels before 6.13) from `/proc/TID/status`.
    fn identify(&mut self, tid: u32) -> Option<(Status, Option<OwnedFd>)> {
        self.forget_if_reaped(tid);
        if let Some(traced) = self.processes.get(&tid) {
            if let Ok(ids) = sys::notify::pidfd_ids(traced.pidfd.as_fd()) {
                let status = Status {
                    tgid: tid,
                    sandbox_pid: traced.sandbox_pid,
                    levels: traced.levels,
                    parent: ids.parent,
                };
                return Some((status, None));
            }
        } else if let Ok(pidfd) = sys::notify::pidfd_open(tid) {
            let ids = sys::notify::pidfd_ids(pidfd.as_fd()).ok();
            if let Some(ids) = ids.filter(|ids| ids.tgid == tid) {
                if let Some((sandbox_pid, levels)) = self.presented(tid, Some(&pidfd)) {
                    let status = Status {
                        tgid: tid,
                        sandbox_pid,
                        levels,
                        parent: ids.parent,
                    };
                    return Some((status, Some(pidfd)));
                }
            }
        }
        let mut status = self.proc.status(tid).ok()?;
        if !matches!(self.pids, Pids::Innermost) {
            (status.sandbox_pid, status.levels) = self.presented(status.tgid, None)?;
        }
        self.forget_if_reaped(status.tgid);
        let pidfd = if self.processes.contains_key(&status.tgid) {
            None
        } else {
            sys::notify::pidfd_open(status.tgid).ok()
        };
        Some((status, pidfd))
    }

    /// The pid events show for the process whose pid in the tracer's namespace is `pid`, and
    /// its number of levels (1 unless [`Pids::Innermost`]); `None` when it is gone. With
    /// [`Pids::Namespace`], 0 for a process outside that namespace (told from a gone one by
    /// its `pidfd`, else `None`). With [`Pids::Innermost`] it comes from `pidfd`'s fdinfo
    /// (`None` without a pidfd). A kernel without the namespace ioctl turns the tracer to
    /// [`Pids::Innermost`] for good.
    fn presented(&mut self, pid: u32, pidfd: Option<&OwnedFd>) -> Option<(u32, usize)> {
        if let Pids::Namespace(namespace) = &self.pids {
            match sys::notify::pid_in_namespace(namespace.as_fd(), pid) {
                Ok(presented) => return Some((presented, 1)),
                Err(Errno::NOTTY | Errno::INVAL) => self.pids = Pids::Innermost,
                Err(_) => {
                    let alive = sys::notify::pidfd_is_unreaped(pidfd?.as_fd()) == Ok(true);
                    return alive.then_some((0, 1));
                }
            }
        }
        match self.pids {
            Pids::Own => Some((pid, 1)),
            _ => self.proc.pidfd_sandbox_pid(pidfd?).ok(),
        }
    }

    /// The parent's pid as the events show it: from the table when it exec'd; else in the
    /// events' pid namespace (0 outside it), or with [`Pids::Innermost`] from its status (0
    /// when it lives outside the child's innermost pid namespace).
    fn sandbox_parent(&mut self, parent: u32, child_levels: usize) -> u32 {
        if parent == 0 {
            return 0;
        }
        if let Some(traced) = self.processes.get(&parent) {
            return traced.sandbox_pid;
        }
        match &self.pids {
            Pids::Own => return parent,
            Pids::Namespace(namespace) => {
                match sys::notify::pid_in_namespace(namespace.as_fd(), parent) {
                    Ok(presented) => return presented,
                    Err(Errno::NOTTY | Errno::INVAL) => self.pids = Pids::Innermost,
                    // Outside the namespace (or gone).
                    Err(_) => return 0,
                }
            }
            Pids::Innermost => {}
        }
        let in_child_namespace = |(pid, levels): (u32, usize)| {
            if levels == child_levels {
                pid
            } else {
                0
            }
        };
        if let Some((pid, levels, pidfd)) = self.parents.get(&parent) {
            if sys::notify::pidfd_is_unreaped(pidfd.as_fd()) == Ok(true) {
                return in_child_namespace((*pid, *levels));
            }
            self.parents.remove(&parent);
        }
        // The pidfd first: if the pid still names its process after the status was read, the
        // status is that process's.
        let pidfd = sys::notify::pidfd_open(parent).ok();
        let Ok(status) = self.proc.status(parent) else {
            return 0;
        };
        if let Some(pidfd) = pidfd {
            if sys::notify::pidfd_is_unreaped(pidfd.as_fd()) == Ok(true) {
                if self.parents.len() >= MAX_PARENTS {
                    self.parents.clear();
                }
                self.parents
                    .insert(parent, (status.sandbox_pid, status.levels, pidfd));
            }
        }
        in_child_namespace((status.sandbox_pid, status.levels))
    }

    fn exit_group(&mut self, notification: &Notification) {
        let tid = notification.pid;
        // The low 8 bits are what the parent's wait reports.
        let code = i64::try_from(notification.arguments[0] & 0xff).unwrap_or(0);
        let (pid, traced) = if let Some(traced) = self.forget(tid) {
            // A traced process's pid cannot have been recycled: its exit would have been seen
            // on its pidfd first.
            self.answer(notification.id);
            (traced.sandbox_pid, Some(traced))
        } else {
            // A thread other than the leader, or a process that never exec'd.
            let status = self.proc.status(tid).ok().and_then(|mut status| {
                if !matches!(self.pids, Pids::Innermost) {
                    status.sandbox_pid = self.presented(status.tgid, None)?.0;
                }
                Some(status)
            });
            // As for an exec: the answer fails if the process is no longer waiting.
            let valid = self.answer(notification.id);
            let Some(status) = status.filter(|_| valid) else {
                return;
            };
            (status.sandbox_pid, self.forget(status.tgid))
        };
        let mut event = Event::new(events::PROCESS_EXIT)
            .with(crate::ATTR_PROCESS_PID, i64::from(pid))
            .with(crate::ATTR_PROCESS_EXIT_CODE, code);
        if let Some(traced) = traced {
            event = event.with(
                crate::ATTR_PROCESS_DURATION_MS,
                milliseconds(traced.exec_at),
            );
        }
        self.exits += 1;
        self.batch.push(event);
    }

    /// Records the exit of listed process `pid` if it was reaped: its pid is being reused, and
    /// the wake-up of its pidfd was not handled yet.
    fn forget_if_reaped(&mut self, pid: u32) {
        let reaped = self.processes.get(&pid).is_some_and(|traced| {
            sys::notify::pidfd_is_unreaped(traced.pidfd.as_fd()) == Ok(false)
        });
        if reaped {
            self.process_exited(pid);
        }
    }

    /// Stops watching process `pid` and returns what was known of it. Its pidfd leaves the
    /// epoll set when the caller drops it (the tracer holds the only descriptor of that file,
    /// and closing it removes it), before the next wait: no `EPOLL_CTL_DEL` to make.
    fn forget(&mut self, pid: u32) -> Option<Traced> {
        self.processes.remove(&pid)
    }

    /// The wait status of process `pid`, which ended: from its pidfd once it is reaped (6.15+),
    /// else from `/proc/PID/stat` while it is a zombie (checked through the pidfd after reading,
    /// so the pid was not yet recycled).
    ///
    /// The kernel detaches a reaped process's pid (which wakes the pidfd's pollers and makes
    /// the zombie's `stat` unreadable) a moment before it records the status for the pidfd. A
    /// process caught in between is asked again, for at most [`STATUS_WAIT`]; under load the
    /// tracer's tests otherwise lost an exit code in about one run in twenty.
    fn exit_status(&mut self, pid: u32, pidfd: BorrowedFd<'_>) -> Option<i32> {
        let started = Instant::now();
        loop {
            match sys::notify::pidfd_exit_status(pidfd) {
                Ok(Some(status)) => return Some(status),
                Ok(None) => {}
                // Before 6.15: only a zombie's stat tells.
                Err(_) => return self.zombie_status(pid, pidfd),
            }
            let zombie = self.zombie_status(pid, pidfd);
            if zombie.is_some() || started.elapsed() >= STATUS_WAIT {
                return zombie;
            }
            std::thread::yield_now();
        }
    }

    /// The wait status in `/proc/PID/stat` of `pid`, if it is still an unreaped zombie once
    /// read (checked through its pidfd, so the pid did not name another process meanwhile).
    fn zombie_status(&mut self, pid: u32, pidfd: BorrowedFd<'_>) -> Option<i32> {
        self.proc
            .exit_status(pid)
            .ok()
            .filter(|_| sys::notify::pidfd_is_unreaped(pidfd) == Ok(true))
    }

    /// The pidfd of `pid` woke up: with [`ExitSource::Pidfd`] it was reaped, with
    /// [`ExitSource::ExitGroup`] it ended without `exit_group` (a signal, or its last thread's
    /// `exit`). Its wait status comes from the pidfd once reaped (6.15+), else from
    /// `/proc/PID/stat` while it is a zombie (checked through the pidfd after reading, so the
    /// pid was not yet recycled), else it is recorded without one.
    fn process_exited(&mut self, pid: u32) {
        let Some(traced) = self.forget(pid) else {
            return;
        };
        let pidfd: BorrowedFd<'_> = traced.pidfd.as_fd();
        let status = self.exit_status(pid, pidfd);
        let event = exit_event(traced.sandbox_pid, milliseconds(traced.exec_at), status);
        self.exits += 1;
        self.batch.push(event);
    }
}

/// `execveat`'s path resolved against its directory descriptor: the descriptor's path (as
/// the process sees it) joined with a relative path, or alone with `AT_EMPTY_PATH` and an
/// empty path. An absolute path, `AT_FDCWD` or an unreadable descriptor leave it as given.
fn execveat_path(proc: &mut Proc, notification: &Notification, path: Vec<u8>) -> Vec<u8> {
    const AT_FDCWD: i32 = -100;
    const AT_EMPTY_PATH: u64 = 0x1000;
    let dirfd = i32::from_ne_bytes(
        u32::try_from(notification.arguments[0] & 0xffff_ffff)
            .unwrap_or(0)
            .to_ne_bytes(),
    );
    let empty = path.is_empty() && notification.arguments[4] & AT_EMPTY_PATH != 0;
    if dirfd == AT_FDCWD || path.first() == Some(&b'/') || (path.is_empty() && !empty) {
        return path;
    }
    let Ok(directory) = proc.link_in_sandbox(notification.pid, &format!("fd/{dirfd}")) else {
        return path;
    };
    if empty {
        return directory;
    }
    let mut joined = directory;
    if joined.last() != Some(&b'/') {
        joined.push(b'/');
    }
    joined.extend_from_slice(&path);
    joined
}

/// The longest executable path read (`PATH_MAX`).
const PATH_LIMIT: usize = 4096;
/// The longest [`Tracer::exit_status`] waits for the kernel to record a reaped process's status.
const STATUS_WAIT: Duration = Duration::from_millis(5);
/// The most parents remembered (see `Tracer::parents`); the table starts over when full.
const MAX_PARENTS: usize = 256;

/// Milliseconds since `since`, rounded to the microsecond.
fn milliseconds(since: Instant) -> f64 {
    // Exact below 2^53 microseconds (285 years).
    since.elapsed().as_micros() as f64 / 1000.0
}

/// An exit event: the process's pid in the sandbox, milliseconds since its last exec and its
/// wait status, if known.
pub(crate) fn exit_event(pid: u32, duration_ms: f64, status: Option<i32>) -> Event {
    let mut event = Event::new(events::PROCESS_EXIT)
        .with(crate::ATTR_PROCESS_PID, i64::from(pid))
        .with(crate::ATTR_PROCESS_DURATION_MS, duration_ms);
    if let Some(status) = status {
        let signal = status & 0x7f;
        if signal != 0 && signal != 0x7f {
            event = event.with(crate::ATTR_PROCESS_EXIT_SIGNAL, i64::from(signal));
        } else if signal == 0 {
            event = event.with(
                crate::ATTR_PROCESS_EXIT_CODE,
                i64::from((status >> 8) & 0xff),
            );
        }
    }
    event
}

pub(crate) fn exec_event(exec: ExecRecord, options: &TraceOptions) -> Event {
    let mut event = Event::new(events::PROCESS_EXEC)
        .with(crate::ATTR_PROCESS_PID, i64::from(exec.pid))
        .with(crate::ATTR_PROCESS_PARENT_PID, i64::from(exec.parent_pid));
    if let Some(path) = exec.path {
        event = event.with(crate::ATTR_PROCESS_EXECUTABLE_PATH, path);
    }
    let mut arguments = exec.arguments;
    if options.redact_arguments && arguments.more {
        arguments.values.push(REDACTED.to_owned());
    }
    event = event.with(
        crate::ATTR_PROCESS_COMMAND_ARGS,
        Value::StringArray(arguments.values),
    );
    if let Some(cwd) = exec.working_directory {
        event = event.with(crate::ATTR_PROCESS_WORKING_DIRECTORY, cwd);
    }
    if arguments.truncated {
        event = event.with(crate::ATTR_COMMAND_ARGS_TRUNCATED, true);
    }
    if exec.incomplete || arguments.incomplete {
        event = event.with(crate::ATTR_INCOMPLETE, true);
    }
    if exec.execveat {
        event = event.with(crate::ATTR_SYSCALL, "execveat");
    }
    event
}
