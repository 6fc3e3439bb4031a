//! `hardbox supervise ID`: the supervisor of one long-lived sandbox (docs/lifecycle.md).
//!
//! Started by `create` and `start` in a session of its own, it holds the sandbox's
//! `supervisor.lock` for its whole life, launches the sandbox as a [`sandbox::Session`], writes
//! one readiness line on its stdout (then lets go of it), and serves the control socket until
//! the sandbox stops. Its sensors (exec tracer, file watcher, proxy, lifecycle) write the
//! sandbox's event spool. If it dies, the kernel kills the sandbox (init's parent-death signal)
//! and releases the lock, so `ls` reports the sandbox stopped.
//!
//! The loop is single-threaded (poll); the proxy, the tracer, the file watcher, the spool's
//! writer and the OTLP exporter run on threads of their own, started after the launch (which
//! needs a single-threaded process).

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use rustix::event::{PollFd, PollFlags};
use sandbox::{ExecId, ExecRequest, LaunchError, LaunchPlan, SessionEvent, SessionOptions};
use sys::process::{SignalFd, SignalSet};

use super::control::{self, ExecCommand, Reply, Request};
use super::lifecycle::Readiness;
use super::{Stored, OUTPUT_LOG};
use crate::cli::SuperviseArgs;
use crate::cmd::{network, publish, run};
use crate::exit;

/// Signals that stop the sandbox gracefully.
const STOP_SIGNALS: [i32; 3] = [libc_signal::TERM, libc_signal::INT, libc_signal::HUP];

mod libc_signal {
    pub const HUP: i32 = 1;
    pub const INT: i32 = 2;
    pub const KILL: i32 = 9;
    pub const TERM: i32 = 15;
}

/// How often an idle supervisor looks at the cgroup's limit counters.
const LIMIT_CHECK: Duration = Duration::from_secs(1);

/// The event of a resource limit hit (an OOM kill, refused forks).
const RESOURCE_LIMIT: &str = "hardbox.resource.limit";

/// How long the sandbox's other processes get after its main command ended.
const MAIN_EXIT_GRACE: Duration = Duration::from_secs(2);

pub fn supervise(root: Option<PathBuf>, args: SuperviseArgs) -> Result<u8> {
    // Out of the caller's session: its terminal's signals are not the sandbox's.
    let _ = rustix::process::setsid();
    let root = crate::settings::store_root(root)?;
    let registry = state::Registry::open(&root)?;
    let record = registry.get(&args.id)?;
    let dir = registry.sandbox_dir(&record.id);
    let _lock = match state::SupervisorLock::acquire(&dir) {
        Ok(lock) => lock,
        Err(err) => {
            ready(&Readiness {
                ok: false,
                code: exit::LAUNCH_FAILED,
                message: format!("{err}"),
                init_pid: 0,
            });
            return Ok(exit::ERROR);
        }
    };
    let launched = match launch(&root, &dir) {
        Ok(launched) => launched,
        Err((code, err)) => {
            ready(&Readiness {
                ok: false,
                code,
                message: format!("{err:#}"),
                init_pid: 0,
            });
            return Ok(exit::ERROR);
        }
    };
    let mut supervisor = match Supervisor::start(&registry, &record, &dir, launched) {
        Ok(supervisor) => supervisor,
        Err(err) => {
            ready(&Readiness {
                ok: false,
                code: exit::LAUNCH_FAILED,
                message: format!("{err:#}"),
                init_pid: 0,
            });
            return Ok(exit::ERROR);
        }
    };
    // The main command starts once every sensor runs: its exec is traced like any other.
    if let Err((code, message)) = supervisor.start_main() {
        ready(&Readiness {
            ok: false,
            code,
            message,
            init_pid: 0,
        });
        supervisor.finish(&registry, &record.id);
        return Ok(exit::ERROR);
    }
    ready(&Readiness {
        ok: true,
        code: 0,
        message: String::new(),
        init_pid: supervisor.session_init_pid(),
    });
    let result = supervisor.serve();
    supervisor.finish(&registry, &record.id);
    if let Err(err) = &result {
        eprintln!("supervisor: {err:#}");
    }
    result.map(|()| exit::OK)
}

/// Writes the readiness line on stdout and points stdout at `/dev/null` (the CLI that waits
/// for the line then sees the end of the pipe and goes on).
fn ready(readiness: &Readiness) {
    let line = serde_json::to_string(readiness).unwrap_or_else(|_| "{\"ok\":false}".to_owned());
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    drop(stdout);
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
    }
}

/// A launched sandbox and what the supervisor needs to serve it.
struct Launched {
    session: sandbox::Session,
    hooks: SessionHooks,
    plan: LaunchPlan,
    stored: Stored,
    /// The main command's stdin, stdout and stderr, until it is started.
    main_stdio: Option<[OwnedFd; 3]>,
    /// The eBPF exec tracer, loaded before the sandbox started, when it records its execs;
    /// or why it could not be loaded when it was wanted.
    ebpf: Result<Option<exectrace::PreparedEbpf>, String>,
}

/// The environment variable that picks the exec tracer: `seccomp` forces the notify filter;
/// otherwise root uses the eBPF programs when the kernel takes them.
const EXEC_TRACER_ENV: &str = "HARDBOX_EXEC_TRACER";

/// The eBPF tracer, loaded, if it is the one to use: as root, with the sandbox's seccomp
/// filter in force with nothing added to it (the filter refuses new pid namespaces, whose
/// processes the programs would not see), unless `HARDBOX_EXEC_TRACER=seccomp`. A kernel that
/// refuses the programs leaves the seccomp tracer, which is as complete and costs more; the
/// reason is then recorded with the `started` event.
fn ebpf_tracer(plan: &LaunchPlan) -> Result<Option<exectrace::PreparedEbpf>, String> {
    let settings = &plan.settings;
    let wanted = rustix::process::geteuid().is_root()
        && !settings.skip.seccomp
        && settings.seccomp_allow.is_empty()
        && std::env::var(EXEC_TRACER_ENV).as_deref() != Ok("seccomp");
    if !wanted {
        return Ok(None);
    }
    exectrace::prepare_ebpf()
        .map(Some)
        .map_err(|err| err.to_string())
}

/// Resolves the stored command line as `run` does and starts the session. Errors carry the
/// exit code `create` reports (125, or 126/127 when the main command cannot run).
fn launch(root: &Path, dir: &Path) -> Result<Launched, (u8, anyhow::Error)> {
    let failed = |err: anyhow::Error| (exit::LAUNCH_FAILED, err);
    let stored = Stored::read(dir).map_err(failed)?;
    std::env::set_current_dir(&stored.cwd)
        .with_context(|| format!("the sandbox's directory {} is gone", stored.cwd.display()))
        .map_err(failed)?;
    let mut args = stored.run_args().map_err(failed)?;
    let main_command = !args.command.is_empty();
    if !main_command {
        // Idle: init only waits for exec requests; the plan still needs a command.
        args.command = vec!["true".to_owned()];
    }
    let explicit_timeout = args.timeout.is_some();
    let image = match &stored.image_digest {
        Some(digest) => {
            let upper = dir.join("upper");
            let work = dir.join("work");
            let image =
                run::prepare_persistent_image(root, digest, &upper, &work).map_err(failed)?;
            make_upper(&image.rootfs.directory, &upper, &work).map_err(failed)?;
            Some(image)
        }
        None => None,
    };
    let (mut settings, proxy) = run::resolve(Some(root), &args, image.as_ref()).map_err(failed)?;
    if !explicit_timeout {
        settings.timeout = None;
    }
    settings.tty = false;
    settings.interactive = false;
    let plan = LaunchPlan::new(settings)
        .map_err(|err| failed(anyhow!(err).context("invalid sandbox settings")))?;
    let publisher = args
        .publish
        .iter()
        .map(|text| publish::parse(text))
        .collect::<Result<Vec<_>>>()
        .and_then(|publishes| publish::Publisher::bind(&publishes))
        .map_err(failed)?;
    let log_path = dir.join(OUTPUT_LOG);
    let open_log = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("failed to open {}", log_path.display()))
    };
    let null = std::fs::File::open("/dev/null")
        .context("failed to open /dev/null")
        .map_err(failed)?;
    let stdout = open_log().map_err(failed)?;
    let stderr = open_log().map_err(failed)?;
    let ebpf = ebpf_tracer(&plan);
    let options = SessionOptions {
        // The main command is started as an exec once the tracer runs (start_main): an
        // exec before that would wait for a tracer that does not exist yet (or, with the
        // eBPF tracer, go unrecorded).
        main_command: false,
        main_stdio: None,
        trace: if matches!(ebpf, Ok(Some(_))) {
            None
        } else {
            Some(exectrace::install_listener)
        },
    };
    let mut hooks = SessionHooks {
        proxy,
        listeners: None,
        publisher,
    };
    let session = sandbox::start_session(&plan, &mut hooks, options)
        .map_err(|err| (failure_code(&err), run::describe(&err)))?;
    Ok(Launched {
        session,
        hooks,
        plan,
        stored,
        ebpf,
        main_stdio: main_command.then_some([
            OwnedFd::from(null),
            OwnedFd::from(stdout),
            OwnedFd::from(stderr),
        ]),
    })
}

/// Creates the upper and work directories of an image sandbox on its first start: the upper
/// gets the owner and mode of the image's root, which it stands for in the overlay.
fn make_upper(lower: &Path, upper: &Path, work: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if upper.is_dir() && work.is_dir() {
        return Ok(());
    }
    let root =
        std::fs::metadata(lower).with_context(|| format!("failed to read {}", lower.display()))?;
    for directory in [upper, work] {
        match std::fs::create_dir(directory) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("failed to create {}", directory.display()))
            }
        }
    }
    std::fs::set_permissions(upper, std::fs::Permissions::from_mode(root.mode() & 0o7777))
        .with_context(|| format!("failed to set the mode of {}", upper.display()))?;
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::lchown(upper, Some(root.uid()), Some(root.gid()))
            .with_context(|| format!("failed to set the owner of {}", upper.display()))?;
    }
    Ok(())
}

/// The launch's hooks: the proxy's listeners are kept until the event spool exists (their
/// backlog holds connections meanwhile), published ports are forwarded from the start.
struct SessionHooks {
    proxy: Option<network::ProxySetup>,
    listeners: Option<sandbox::ProxyListeners>,
    publisher: publish::Publisher,
}

impl sandbox::Hooks for SessionHooks {
    fn network(&mut self, listeners: sandbox::ProxyListeners) -> Result<(), String> {
        if self.proxy.is_none() {
            return Err("no proxy was set up for the sandbox's network".to_owned());
        }
        self.listeners = Some(listeners);
        Ok(())
    }

    fn started(&mut self, init: u32) -> Result<(), String> {
        self.publisher
            .start(init)
            .map_err(|error| format!("{error:#}"))
    }
}

/// A connection from a CLI.
struct Client {
    socket: OwnedFd,
    /// The command it started, until it ended.
    exec: Option<ExecId>,
}

/// Why and how the sandbox is to stop.
struct Stopping {
    /// The `stop` caller waiting for the reply (none for a signal or the main command's end).
    requester: Option<OwnedFd>,
    grace: Duration,
}

struct Supervisor {
    launched: Launched,
    spool: Option<events::Spool>,
    lifecycle: events::Recorder,
    tracer: Option<exectrace::TracerHandle>,
    watcher: Option<fswatch::WatcherHandle>,
    exporter: Option<(events::StopHandle, std::thread::JoinHandle<()>)>,
    listener: OwnedFd,
    signals: SignalFd,
    clients: Vec<Client>,
    stopping: Option<Stopping>,
    /// The main command's exec, while it runs.
    main: Option<ExecId>,
    /// The main command's exit code, once it ended.
    main_exit: Option<i32>,
    /// init's end, once known (the sandbox is over).
    ended: Option<sandbox::ExitStatus>,
    /// The cgroup's OOM kills and refused forks as last recorded.
    limit_hits: (u64, u64),
    /// When the cgroup's counters were last read (at most every LIMIT_CHECK, off the path of
    /// requests: reading them is a dozen syscalls).
    limits_checked: Instant,
}

impl Supervisor {
    fn start(
        registry: &state::Registry,
        record: &state::SandboxRecord,
        dir: &Path,
        mut launched: Launched,
    ) -> Result<Supervisor> {
        let spool = events::Spool::open(dir, events::SpoolOptions::default())
            .with_context(|| format!("failed to open the event spool in {}", dir.display()))?;
        let lifecycle = spool.recorder("supervisor");
        if let (Some(proxy), Some(listeners)) = (
            launched.hooks.proxy.as_mut(),
            launched.hooks.listeners.take(),
        ) {
            proxy.record_to(spool.recorder("proxy"));
            sandbox::Hooks::network(proxy, listeners).map_err(|err| anyhow!(err))?;
        }
        let trace_options = exectrace::TraceOptions {
            redact_arguments: launched.stored.redact_args,
            max_argument_bytes: 16 * 1024,
        };
        let ebpf = std::mem::replace(&mut launched.ebpf, Ok(None));
        let fallback = ebpf.as_ref().err().cloned();
        let (tracer, exec_sensor) =
            match (ebpf.ok().flatten(), launched.session.take_trace_listener()) {
                (Some(ebpf), _) => {
                    let init = launched.session.init_pid();
                    let namespace = std::fs::File::open(format!("/proc/{init}/ns/pid"))
                        .map(OwnedFd::from)
                        .with_context(|| format!("failed to open init's pid namespace ({init})"))?;
                    let tracer = ebpf
                        .start(&namespace, spool.recorder("exec"), trace_options)
                        .context("failed to start the exec tracer")?;
                    (Some(tracer), "ebpf")
                }
                (None, Some(listener)) => (
                    Some(
                        exectrace::spawn(
                            listener,
                            spool.recorder("exec"),
                            trace_options,
                            // Events carry pids as the sandbox sees them: those of init's
                            // namespace.
                            launched.session.take_trace_pid_namespace(),
                        )
                        .context("failed to start the exec tracer")?,
                    ),
                    "seccomp",
                ),
                (None, None) => (None, "none"),
            };
        let mut watches = Vec::new();
        if launched.stored.image_digest.is_some() && dir.join("upper").is_dir() {
            watches.push(fswatch::Watch {
                host: dir.join("upper"),
                guest: PathBuf::from("/"),
                overlay_upper: true,
            });
        }
        if let Some(workspace) = &launched.stored.workspace {
            watches.push(fswatch::Watch {
                host: workspace.clone(),
                guest: workspace.clone(),
                overlay_upper: false,
            });
        }
        let watcher = if watches.is_empty() {
            None
        } else {
            Some(
                fswatch::spawn(watches, spool.recorder("files"))
                    .context("failed to watch the sandbox's files")?,
            )
        };
        let exporter = match &launched.stored.otlp_endpoint {
            Some(endpoint) => Some(start_exporter(dir, endpoint, record)?),
            None => None,
        };
        let listener = control::listen(dir)?;
        let signals = SignalSet::of(&STOP_SIGNALS);
        sys::process::block_signals(&signals)
            .map_err(|errno| anyhow!("failed to block signals: {errno}"))?;
        let signals = SignalFd::open(&signals).map_err(|errno| anyhow!("signalfd: {errno}"))?;
        let init_pid = launched.session.init_pid();
        registry.set_running(&record.id, std::process::id(), init_pid)?;
        let mut started = lifecycle_event(record, "started")
            .with("hardbox.policy.digest", record.policy_digest.as_str())
            .with(
                "hardbox.image.digest",
                record.image_digest.clone().unwrap_or_default(),
            )
            .with("process.pid", init_pid)
            .with(ATTR_EXEC_SENSOR, exec_sensor);
        if let Some(reason) = fallback {
            started = started.with(ATTR_EXEC_SENSOR_FALLBACK, reason);
        }
        lifecycle.record(started);
        Ok(Supervisor {
            launched,
            spool: Some(spool),
            lifecycle,
            tracer,
            watcher,
            exporter,
            listener,
            signals,
            clients: Vec::new(),
            stopping: None,
            main: None,
            main_exit: None,
            ended: None,
            limit_hits: (0, 0),
            limits_checked: Instant::now(),
        })
    }

    fn session_init_pid(&self) -> u32 {
        self.launched.session.init_pid()
    }

    /// Starts the main command (if the sandbox has one) as an exec with the sandbox's own
    /// command line, environment and working directory, its output in `output.log`, and waits
    /// until it runs or failed (with run's exit code and message).
    fn start_main(&mut self) -> Result<(), (u8, String)> {
        let Some(stdio) = self.launched.main_stdio.take() else {
            return Ok(());
        };
        let settings = &self.launched.plan.settings;
        let request = ExecRequest {
            program: settings.program.clone(),
            arguments: settings.arguments.clone(),
            environment: settings.environment.clone(),
            working_directory: None,
            user: None,
            tty: false,
        };
        let id = self
            .launched
            .session
            .exec(&request, Some(stdio))
            .map_err(|err| failure(&err))?;
        self.main = Some(id);
        loop {
            let mut fds = [PollFd::from_borrowed_fd(
                self.launched.session.as_fd(),
                PollFlags::IN,
            )];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(errno) => return Err((exit::LAUNCH_FAILED, format!("poll: {errno}"))),
            }
            loop {
                match self.launched.session.next_event() {
                    Ok(Some(SessionEvent::Started { id: started, .. })) if started == id => {
                        return Ok(())
                    }
                    Ok(Some(SessionEvent::Failed { id: failed, error })) if failed == id => {
                        self.main = None;
                        return Err(failure(&error));
                    }
                    Ok(Some(SessionEvent::Exited { id: exited, status })) if exited == id => {
                        // Ended before its start was reported: it ran.
                        self.main_ended(status);
                        return Ok(());
                    }
                    Ok(Some(SessionEvent::Ended { status })) => {
                        return Err((
                            exit::LAUNCH_FAILED,
                            format!(
                                "the sandbox ended while its command started ({})",
                                status.code()
                            ),
                        ))
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(err) => return Err((exit::LAUNCH_FAILED, format!("{err}"))),
                }
            }
        }
    }

    /// Serves requests and the session's events until the sandbox is to stop or has ended.
    fn serve(&mut self) -> Result<()> {
        // Events received with the main command's start (its exit, for a short command) wait
        // in the session's buffer, and its descriptor will not poll readable for them.
        self.session_events()?;
        while self.ended.is_none() && self.stopping.is_none() {
            let mut fds = Vec::with_capacity(3 + self.clients.len());
            fds.push(PollFd::new(&self.listener, PollFlags::IN));
            fds.push(PollFd::from_borrowed_fd(
                self.launched.session.as_fd(),
                PollFlags::IN,
            ));
            fds.push(PollFd::new(&self.signals, PollFlags::IN));
            for client in &self.clients {
                fds.push(PollFd::new(&client.socket, PollFlags::IN));
            }
            // Woken at least every LIMIT_CHECK to notice limit hits of idle sandboxes.
            let timeout = rustix::event::Timespec {
                tv_sec: LIMIT_CHECK.as_secs() as i64,
                tv_nsec: 0,
            };
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(errno) => return Err(anyhow!("poll: {errno}")),
            }
            let ready: Vec<bool> = fds.iter().map(|fd| !fd.revents().is_empty()).collect();
            drop(fds);
            // Clients are found again by descriptor: handling one may remove others.
            let ready_clients: Vec<i32> = self
                .clients
                .iter()
                .zip(ready.iter().skip(3))
                .filter(|(_, ready)| **ready)
                .map(|(client, _)| std::os::fd::AsRawFd::as_raw_fd(&client.socket))
                .collect();
            if ready[2] {
                while let Ok(Some(_)) = self.signals.take() {
                    self.stopping = Some(Stopping {
                        requester: None,
                        grace: Duration::from_secs(10),
                    });
                }
            }
            if ready[1] {
                self.session_events()?;
            }
            for fd in ready_clients {
                let found = self
                    .clients
                    .iter()
                    .position(|client| std::os::fd::AsRawFd::as_raw_fd(&client.socket) == fd);
                if let Some(index) = found {
                    self.client_request(index);
                }
            }
            if ready[0] {
                self.accept();
            }
            if self.limits_checked.elapsed() >= LIMIT_CHECK {
                self.record_limit_hits();
            }
        }
        // The hits of the last moments, before the sandbox stops.
        self.record_limit_hits();
        Ok(())
    }

    /// Records a `hardbox.resource.limit` event when the cgroup's OOM killer killed a process
    /// or the pids limit refused forks since the last look.
    fn record_limit_hits(&mut self) {
        self.limits_checked = Instant::now();
        let Some(usage) = self.launched.session.usage() else {
            return;
        };
        let (oom, pids) = (usage.oom_kills.unwrap_or(0), usage.pids_denied.unwrap_or(0));
        let limits = &self.launched.plan.settings.limits;
        let hits = [
            (
                "memory",
                limits.memory_bytes,
                oom,
                self.limit_hits.0,
                "oom_kill",
            ),
            ("pids", limits.pids, pids, self.limit_hits.1, "fork_refused"),
        ];
        for (resource, limit, now, before, action) in hits {
            if now > before {
                self.lifecycle.record(
                    events::Event::new(RESOURCE_LIMIT)
                        .severity(events::Severity::Warn)
                        .with("hardbox.resource.name", resource)
                        .with("hardbox.resource.limit", limit.unwrap_or(0))
                        .with("hardbox.resource.hits", now - before)
                        .with("hardbox.resource.action", action),
                );
            }
        }
        self.limit_hits = (oom.max(self.limit_hits.0), pids.max(self.limit_hits.1));
    }

    /// Accepts every pending connection.
    fn accept(&mut self) {
        while let Ok(socket) = rustix::net::accept_with(
            &self.listener,
            rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
        ) {
            self.clients.push(Client { socket, exec: None });
        }
    }

    /// Handles one message of client `index`; a closed or failing connection is dropped, and
    /// the command it started killed (its terminal or pipes are gone with it).
    fn client_request(&mut self, index: usize) {
        let mut fds = Vec::new();
        let request = control::receive::<Request>(self.clients[index].socket.as_fd(), &mut fds);
        let request = match request {
            Ok(control::Received::Message(request)) => request,
            Ok(control::Received::Empty) => return,
            Ok(control::Received::Closed) | Err(_) => {
                let client = self.clients.swap_remove(index);
                if let Some(id) = client.exec {
                    let _ = self.launched.session.signal(id, libc_signal::KILL);
                }
                return;
            }
        };
        match request {
            Request::Exec(request) => {
                let reply = self.exec(index, request, fds);
                if let Some(reply) = reply {
                    self.reply(index, &reply, &[]);
                }
                // exec() may have read the session's events while it waited to send.
                if let Err(err) = self.session_events() {
                    eprintln!("supervisor: {err:#}");
                }
            }
            Request::Signal { signal } => {
                if let Some(id) = self.clients[index].exec {
                    let _ = self.launched.session.signal(id, signal);
                }
            }
            Request::Stop { grace_ms } => {
                let client = self.clients.swap_remove(index);
                if let Some(id) = client.exec {
                    let _ = self.launched.session.signal(id, libc_signal::KILL);
                }
                self.stopping = Some(Stopping {
                    requester: Some(client.socket),
                    grace: Duration::from_millis(grace_ms),
                });
            }
            Request::Status => {
                let (cpu_ns, memory_bytes) = match self.launched.session.usage() {
                    Some(usage) => (
                        usage
                            .cpu
                            .map(|cpu| u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX)),
                        usage.memory_bytes,
                    ),
                    None => (None, None),
                };
                let reply = Reply::Status {
                    init_pid: self.launched.session.init_pid(),
                    cpu_ns,
                    memory_bytes,
                };
                self.reply(index, &reply, &[]);
            }
        }
    }

    /// Starts an exec'd command for client `index`; the reply comes with the session's
    /// `Started` or `Failed` event, or at once (returned) when the request is refused.
    fn exec(&mut self, index: usize, request: ExecCommand, fds: Vec<OwnedFd>) -> Option<Reply> {
        let ExecCommand {
            arguments,
            environment,
            working_directory,
            user,
            tty,
            traceparent,
        } = request;
        if self.clients[index].exec.is_some() {
            return Some(Reply::Error {
                message: "this connection already runs a command".to_owned(),
            });
        }
        let Some(program) = arguments.first().cloned() else {
            return Some(Reply::Error {
                message: "no command given".to_owned(),
            });
        };
        let stdio = if tty {
            None
        } else {
            let fds: [OwnedFd; 3] = match fds.try_into() {
                Ok(fds) => fds,
                Err(_) => {
                    return Some(Reply::Error {
                        message: "exec needs stdin, stdout and stderr".to_owned(),
                    })
                }
            };
            Some(fds)
        };
        // The sandbox's environment, with the request's values over it; the caller's trace
        // context goes on with the command (tools that speak W3C trace context join it).
        let mut merged = self.launched.plan.settings.environment.clone();
        let trace_variable = traceparent
            .clone()
            .map(|value| ("TRACEPARENT".to_owned(), value));
        for (name, value) in environment.into_iter().chain(trace_variable) {
            merged.retain(|(existing, _)| *existing != name);
            merged.push((name, value));
        }
        let request = ExecRequest {
            program,
            arguments: arguments.clone(),
            environment: merged,
            working_directory,
            user,
            tty,
        };
        match self.launched.session.exec(&request, stdio) {
            Ok(id) => {
                self.clients[index].exec = Some(id);
                let trace = traceparent
                    .as_deref()
                    .and_then(|value| events::TraceContext::parse(value).ok());
                self.lifecycle.record(
                    events::Event::new("hardbox.sandbox.exec")
                        .with("process.command_args", arguments)
                        .with("hardbox.exec.id", id)
                        .traced(trace),
                );
                None
            }
            Err(err) => {
                let (code, message) = failure(&err);
                Some(Reply::Failed { code, message })
            }
        }
    }

    fn reply(&mut self, index: usize, reply: &Reply, fds: &[std::os::fd::BorrowedFd<'_>]) {
        if control::send(self.clients[index].socket.as_fd(), reply, fds).is_err() {
            let client = self.clients.swap_remove(index);
            if let Some(id) = client.exec {
                let _ = self.launched.session.signal(id, libc_signal::KILL);
            }
        }
    }

    fn client_of(&self, id: ExecId) -> Option<usize> {
        self.clients
            .iter()
            .position(|client| client.exec == Some(id))
    }

    /// The main command ended with `status`: the sandbox stops (its other processes get
    /// [`MAIN_EXIT_GRACE`]) unless it is stopping already.
    fn main_ended(&mut self, status: sandbox::ExitStatus) {
        self.main = None;
        self.main_exit = Some(status.code());
        if self.stopping.is_none() {
            self.stopping = Some(Stopping {
                requester: None,
                grace: MAIN_EXIT_GRACE,
            });
        }
    }

    /// Handles every event the session has.
    fn session_events(&mut self) -> Result<()> {
        loop {
            let event = match self.launched.session.next_event() {
                Ok(Some(event)) => event,
                Ok(None) => return Ok(()),
                Err(err) => return Err(anyhow!(err).context("the sandbox's init failed")),
            };
            match event {
                SessionEvent::Started { id, pid, terminal } => {
                    if let Some(index) = self.client_of(id) {
                        let borrowed: Vec<_> = terminal.iter().map(AsFd::as_fd).collect();
                        self.reply(index, &Reply::Started { pid }, &borrowed);
                    }
                }
                SessionEvent::Failed { id, error } => {
                    if let Some(index) = self.client_of(id) {
                        self.clients[index].exec = None;
                        let (code, message) = failure(&error);
                        self.reply(index, &Reply::Failed { code, message }, &[]);
                    }
                }
                SessionEvent::Exited { id, status } if self.main == Some(id) => {
                    self.main_ended(status);
                }
                SessionEvent::Exited { id, status } => {
                    if let Some(index) = self.client_of(id) {
                        self.clients[index].exec = None;
                        self.reply(
                            index,
                            &Reply::Exited {
                                code: status.code(),
                            },
                            &[],
                        );
                    }
                }
                SessionEvent::MainExited { status } => self.main_ended(status),
                SessionEvent::Ended { status } => {
                    self.ended = Some(status);
                    return Ok(());
                }
            }
        }
    }

    /// Stops the sandbox (unless it ended), the sensors and the spool, records the state, and
    /// answers the `stop` caller.
    fn finish(mut self, registry: &state::Registry, id: &str) {
        self.record_limit_hits();
        let grace = self
            .stopping
            .as_ref()
            .map_or(Duration::ZERO, |stopping| stopping.grace);
        let status = self.launched.session.stop(grace);
        let code = self.main_exit.or(Some(status.code()));
        // Clients still waiting for their command learn it was killed.
        for client in self.clients.drain(..) {
            if client.exec.is_some() {
                let _ = control::send(client.socket.as_fd(), &Reply::Exited { code: 137 }, &[]);
            }
        }
        if let Some(tracer) = self.tracer.take() {
            let _ = tracer.stop();
        }
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.stop();
        }
        if let Some(proxy) = self.launched.hooks.proxy.as_mut() {
            proxy.stop();
        }
        self.lifecycle.record(
            events::Event::new(events::SANDBOX_LIFECYCLE)
                .with(events::ATTR_SANDBOX_ID, id)
                .with(events::ATTR_SANDBOX_STATE, "stopped")
                .with("process.exit.code", code.unwrap_or(-1)),
        );
        if let Some(spool) = self.spool.take() {
            let _ = spool.close();
        }
        if let Some((stop, thread)) = self.exporter.take() {
            stop.stop();
            let _ = thread.join();
        }
        let _ = registry.set_stopped(id, code);
        let _ = std::fs::remove_file(registry.sandbox_dir(id).join(control::SOCKET_FILE));
        if let Some(Stopping {
            requester: Some(socket),
            ..
        }) = self.stopping.take()
        {
            let _ = control::send(socket.as_fd(), &Reply::Stopped { code }, &[]);
        }
    }
}

/// Attribute of the `started` lifecycle event: how execs and exits are recorded (`ebpf`,
/// `seccomp`).
const ATTR_EXEC_SENSOR: &str = "hardbox.sensor.exec";
/// Attribute of the `started` lifecycle event: why the eBPF tracer, wanted, could not be
/// loaded (the seccomp tracer records instead).
const ATTR_EXEC_SENSOR_FALLBACK: &str = "hardbox.sensor.exec.fallback";

fn lifecycle_event(record: &state::SandboxRecord, state: &str) -> events::Event {
    events::Event::new(events::SANDBOX_LIFECYCLE)
        .with(events::ATTR_SANDBOX_ID, record.id.as_str())
        .with(events::ATTR_SANDBOX_NAME, record.name.as_str())
        .with(events::ATTR_SANDBOX_STATE, state)
}

/// `run`'s exit code for a launch error.
fn failure_code(err: &LaunchError) -> u8 {
    u8::try_from(err.exit_code()).unwrap_or(exit::LAUNCH_FAILED)
}

/// `run`'s exit code and message for a launch error.
fn failure(err: &LaunchError) -> (u8, String) {
    (failure_code(err), format!("{:#}", run::describe(err)))
}

/// Follows the spool and posts its events to the OTLP collector at `endpoint`: a reader thread
/// hands events to an exporter thread, which sends a batch when 512 are waiting or none came
/// for 200 ms. Events the collector refuses are counted by the exporter, never retried forever.
fn start_exporter(
    dir: &Path,
    endpoint: &str,
    record: &state::SandboxRecord,
) -> Result<(events::StopHandle, std::thread::JoinHandle<()>)> {
    let resource = events::Resource::new(&record.id, &record.name);
    let mut exporter = events::OtlpExporter::new(endpoint, resource)
        .with_context(|| format!("invalid OTLP endpoint {endpoint:?}"))?;
    let reader = events::Reader::open(dir)?.follow(Duration::from_millis(50));
    let stop = reader.stop_handle();
    let (sender, receiver) = std::sync::mpsc::sync_channel::<events::Event>(4096);
    std::thread::Builder::new()
        .name("otlp-read".to_owned())
        .spawn(move || {
            for event in reader.flatten() {
                if sender.send(event).is_err() {
                    return;
                }
            }
        })
        .context("failed to start the OTLP reader")?;
    let thread = std::thread::Builder::new()
        .name("otlp".to_owned())
        .spawn(move || {
            let mut batch = Vec::new();
            loop {
                match receiver.recv_timeout(Duration::from_millis(200)) {
                    Ok(event) => {
                        batch.push(event);
                        if batch.len() < 512 {
                            continue;
                        }
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
                if !batch.is_empty() {
                    let _ = exporter.export(&batch);
                    batch.clear();
                }
            }
            if !batch.is_empty() {
                let _ = exporter.export(&batch);
            }
        })
        .context("failed to start the OTLP exporter")?;
    Ok((stop, thread))
}
