//! Session mode end to end: a host-root sandbox (`run --host`'s rootfs) kept up, commands
//! exec'd into it and probed from inside with `/bin/sh`.
//!
//! Every test runs twice: as root (the CI's user, with a cgroup), then rootless, this binary
//! started again as uid/gid 65534 with `setpriv`. There is no libtest harness: a launch needs a
//! single-threaded process, and libtest runs each test on a thread of its own. Arguments that
//! do not start with `-` filter tests by name.

// The harness reports each test on stderr, as libtest does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rustix::io::Errno;
use sandbox::{
    start_session, ExecId, ExecRequest, ExitStatus, Identity, LaunchError, LaunchPlan,
    ResourceLimits, Rootfs, SandboxSettings, Session, SessionEvent, SessionOptions, MAIN,
};

const NOBODY: u32 = 65534;
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How the current test runs.
#[derive(Clone, Copy, Debug)]
struct Mode {
    rootless: bool,
}

type Test = fn(Mode);

const TESTS: &[(&str, Test)] = &[
    (
        "execs_run_one_after_another_and_together",
        execs_run_one_after_another_and_together,
    ),
    (
        "exec_takes_working_directory_and_user",
        exec_takes_working_directory_and_user,
    ),
    (
        "exec_failures_are_run_failures",
        exec_failures_are_run_failures,
    ),
    ("exec_is_isolated_like_run", exec_is_isolated_like_run),
    (
        "exec_gets_a_terminal_of_the_sandbox",
        exec_gets_a_terminal_of_the_sandbox,
    ),
    ("signal_reaches_the_process", signal_reaches_the_process),
    (
        "main_command_exit_is_reported",
        main_command_exit_is_reported,
    ),
    (
        "stop_leaves_no_process_and_no_cgroup",
        stop_leaves_no_process_and_no_cgroup,
    ),
    (
        "trace_hook_runs_in_init_and_its_fd_arrives",
        trace_hook_runs_in_init_and_its_fd_arrives,
    ),
    (
        "failing_trace_hook_stops_the_start",
        failing_trace_hook_stops_the_start,
    ),
];

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, name] = arguments.as_slice() {
        if flag == "--as-nobody" {
            let test = find(name);
            test(Mode { rootless: true });
            return;
        }
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests run sandboxes as root and as uid 65534 (CI runs as root): run them with sudo"
    );
    let filters: Vec<&String> = arguments.iter().filter(|a| !a.starts_with('-')).collect();
    let mut failed = Vec::new();
    let mut passed = 0;
    for (name, test) in TESTS {
        if !filters.is_empty() && !filters.iter().any(|filter| name.contains(filter.as_str())) {
            continue;
        }
        let as_root = std::panic::catch_unwind(|| test(Mode { rootless: false })).is_ok();
        report(name, "root", as_root, &mut passed, &mut failed);
        let status = Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(std::env::current_exe().unwrap())
            .args(["--as-nobody", name])
            .current_dir("/")
            .status()
            .unwrap_or_else(|error| panic!("failed to run setpriv: {error}"));
        report(name, "rootless", status.success(), &mut passed, &mut failed);
    }
    eprintln!("\nsession: {passed} passed, {} failed", failed.len());
    if !failed.is_empty() {
        eprintln!("failed: {failed:?}");
        std::process::exit(101);
    }
}

fn report(name: &str, mode: &str, ok: bool, passed: &mut usize, failed: &mut Vec<String>) {
    eprintln!(
        "test {name} ({mode}) ... {}",
        if ok { "ok" } else { "FAILED" }
    );
    if ok {
        *passed += 1;
    } else {
        failed.push(format!("{name} ({mode})"));
    }
}

fn find(name: &str) -> Test {
    TESTS
        .iter()
        .find(|(candidate, _)| *candidate == name)
        .map(|(_, test)| *test)
        .unwrap_or_else(|| panic!("no test {name}"))
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A host-root sandbox; as root with a pids limit, so it has a cgroup.
fn plan(mode: Mode, program: &[&str]) -> LaunchPlan {
    let identity = if mode.rootless {
        Identity::Rootless {
            host_uid: NOBODY,
            host_gid: NOBODY,
            uid: 0,
            gid: 0,
        }
    } else {
        Identity::Root { uid: 0, gid: 0 }
    };
    let limits = ResourceLimits {
        pids: (!mode.rootless).then_some(256),
        ..ResourceLimits::default()
    };
    LaunchPlan::new(SandboxSettings {
        program: program[0].to_owned(),
        arguments: program.iter().map(|&a| a.to_owned()).collect(),
        environment: vec![("PATH".into(), PATH.into())],
        working_directory: "/".into(),
        rootfs: Rootfs::Host,
        binds: vec![],
        hidden: vec![],
        tmpfs: vec![],
        hostname: "session".into(),
        identity,
        skip: sandbox::SkippedLayers::default(),
        limits,
        timeout: None,
        seccomp_allow: vec![],
        tty: false,
        interactive: false,
        network: sandbox::Network::Loopback,
    })
    .unwrap_or_else(|error| panic!("plan: {error}"))
}

struct NoHooks;

impl sandbox::Hooks for NoHooks {
    fn network(&mut self, _listeners: sandbox::ProxyListeners) -> Result<(), String> {
        Err("no network in these tests".into())
    }
}

fn start(mode: Mode, options: SessionOptions) -> Session {
    start_with(mode, &["/bin/true"], options)
}

fn start_with(mode: Mode, program: &[&str], options: SessionOptions) -> Session {
    start_session(&plan(mode, program), &mut NoHooks, options)
        .unwrap_or_else(|error| panic!("start_session: {error}"))
}

/// `/bin/sh -c script`, with the test's PATH.
fn shell(script: &str) -> ExecRequest {
    ExecRequest {
        program: "/bin/sh".into(),
        arguments: vec!["sh".into(), "-c".into(), script.into()],
        environment: vec![("PATH".into(), PATH.into())],
        ..ExecRequest::default()
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap()
}

fn dev_null() -> OwnedFd {
    OwnedFd::from(File::open("/dev/null").unwrap())
}

/// Stdio for an exec: stdin `stdin` (else /dev/null), stdout and stderr into one pipe, whose
/// read end is returned.
fn piped(stdin: Option<OwnedFd>) -> ([OwnedFd; 3], File) {
    let (read, write) = pipe();
    let stderr = write.try_clone().unwrap();
    (
        [stdin.unwrap_or_else(dev_null), write, stderr],
        File::from(read),
    )
}

fn read_all(mut file: File) -> String {
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    text
}

/// The next event, waiting for it (a minute at most, so a broken sandbox fails the test
/// instead of hanging it).
fn wait(session: &mut Session) -> SessionEvent {
    loop {
        if let Some(event) = session
            .next_event()
            .unwrap_or_else(|e| panic!("next_event: {e}"))
        {
            return event;
        }
        let fd = session.as_fd();
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec {
            tv_sec: 60,
            tv_nsec: 0,
        };
        let ready = rustix::event::poll(&mut fds, Some(&timeout)).unwrap();
        assert!(ready > 0, "no event from the session within a minute");
    }
}

/// Waits until `id` started; returns its pid.
fn started(session: &mut Session, id: ExecId) -> u32 {
    match wait(session) {
        SessionEvent::Started { id: got, pid, .. } if got == id => pid,
        other => panic!("expected exec {id} to start, got {other:?}"),
    }
}

fn exited(session: &mut Session, id: ExecId) -> ExitStatus {
    match wait(session) {
        SessionEvent::Exited { id: got, status } if got == id => status,
        other => panic!("expected exec {id} to exit, got {other:?}"),
    }
}

fn failed(session: &mut Session, id: ExecId) -> LaunchError {
    match wait(session) {
        SessionEvent::Failed { id: got, error } if got == id => error,
        other => panic!("expected exec {id} to fail, got {other:?}"),
    }
}

/// Runs `request` to its end; returns its status and output (stdout and stderr).
fn run(session: &mut Session, request: &ExecRequest) -> (ExitStatus, String) {
    let (stdio, output) = piped(None);
    let id = session.exec(request, Some(stdio)).unwrap();
    started(session, id);
    let status = exited(session, id);
    (status, read_all(output))
}

fn probe(session: &mut Session, script: &str) -> String {
    let (status, output) = run(session, &shell(script));
    assert_eq!(status, ExitStatus::Exited(0), "{script}: {output}");
    output
}

// ---------------------------------------------------------------------------------------------
// Tests.

fn execs_run_one_after_another_and_together(mode: Mode) {
    let mut session = start(mode, SessionOptions::default());
    for round in 1..=3 {
        let (status, output) = run(
            &mut session,
            &shell(&format!("echo one-{round}; exit {round}")),
        );
        assert_eq!(status, ExitStatus::Exited(round));
        assert_eq!(output, format!("one-{round}\n"));
    }

    // Three at once: each waits for a line on its own stdin, so all three run together before
    // any of them ends.
    let mut commands = HashMap::new();
    for round in 1..=3 {
        let (stdin_read, stdin_write) = pipe();
        let (stdio, output) = piped(Some(stdin_read));
        let request = shell(&format!("read line; echo \"$line-{round}\"; exit 1{round}"));
        let id = session.exec(&request, Some(stdio)).unwrap();
        commands.insert(id, (round, File::from(stdin_write), output));
    }
    let mut pids = Vec::new();
    for _ in 0..3 {
        match wait(&mut session) {
            SessionEvent::Started { id, pid, terminal } => {
                assert!(commands.contains_key(&id) && terminal.is_none());
                pids.push(pid);
            }
            other => panic!("expected a start, got {other:?}"),
        }
    }
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 3, "three processes: {pids:?}");
    for (_, stdin, _) in commands.values_mut() {
        use std::io::Write;
        stdin.write_all(b"together\n").unwrap();
    }
    for _ in 0..3 {
        match wait(&mut session) {
            SessionEvent::Exited { id, status } => {
                let (round, _, output) = commands.remove(&id).expect("a known exec");
                assert_eq!(status, ExitStatus::Exited(10 + round));
                assert_eq!(read_all(output), format!("together-{round}\n"));
            }
            other => panic!("expected an exit, got {other:?}"),
        }
    }
    assert_eq!(session.stop(Duration::from_secs(5)), ExitStatus::Exited(0));
}

fn exec_takes_working_directory_and_user(mode: Mode) {
    let mut session = start(mode, SessionOptions::default());
    let mut request = shell("pwd; id -u; id -g");
    request.working_directory = Some("/usr/share".into());
    assert_eq!(probe_request(&mut session, &request), "/usr/share\n0\n0\n");

    // A user the sandbox maps: as root any of 0..65536; rootless only the caller's (root
    // inside).
    let mapped = if mode.rootless { (0, 0) } else { (1000, 1001) };
    request.user = Some(mapped);
    request.working_directory = Some("/tmp".into());
    assert_eq!(
        probe_request(&mut session, &request),
        format!("/tmp\n{}\n{}\n", mapped.0, mapped.1)
    );

    // One it does not map: a clear step error, exit code 125 as for run.
    request.user = Some(if mode.rootless {
        (1000, 1000)
    } else {
        (70_000, 70_000)
    });
    let (stdio, _output) = piped(None);
    let id = session.exec(&request, Some(stdio)).unwrap();
    let error = failed(&mut session, id);
    let message = error.to_string();
    assert!(
        message.contains("switch to user") && message.contains("does not map"),
        "{message}"
    );
    assert_eq!(error.exit_code(), 125);

    // A directory that does not exist names the step.
    let mut request = shell("pwd");
    request.working_directory = Some("/no/such/directory".into());
    let (stdio, _output) = piped(None);
    let id = session.exec(&request, Some(stdio)).unwrap();
    let message = failed(&mut session, id).to_string();
    assert!(
        message.contains("change directory to /no/such/directory"),
        "{message}"
    );

    // Relative directories are refused before anything is sent.
    request.working_directory = Some(PathBuf::from("tmp"));
    let (stdio, _output) = piped(None);
    assert!(matches!(
        session.exec(&request, Some(stdio)),
        Err(LaunchError::RelativeWorkingDirectory { .. })
    ));
}

fn probe_request(session: &mut Session, request: &ExecRequest) -> String {
    let (status, output) = run(session, request);
    assert_eq!(status, ExitStatus::Exited(0), "{output}");
    output
}

fn exec_failures_are_run_failures(mode: Mode) {
    let mut session = start(mode, SessionOptions::default());
    for program in ["/no/such/program", "no-such-program"] {
        let request = ExecRequest {
            program: program.into(),
            environment: vec![("PATH".into(), PATH.into())],
            ..ExecRequest::default()
        };
        let (stdio, _output) = piped(None);
        let id = session.exec(&request, Some(stdio)).unwrap();
        let error = failed(&mut session, id);
        assert!(
            matches!(&error, LaunchError::CommandNotFound { program: p } if p == program),
            "{error:?}"
        );
        assert_eq!(error.exit_code(), 127);
    }
    let request = ExecRequest {
        program: "/etc/hostname".into(),
        ..ExecRequest::default()
    };
    let (stdio, _output) = piped(None);
    let id = session.exec(&request, Some(stdio)).unwrap();
    let error = failed(&mut session, id);
    assert!(
        matches!(error, LaunchError::NotExecutable { .. }),
        "{error:?}"
    );
    assert_eq!(error.exit_code(), 126);
    // Stdio and terminal go together.
    assert!(matches!(
        session.exec(&shell("true"), None),
        Err(LaunchError::MissingStdio)
    ));
    // The sandbox still serves.
    assert_eq!(probe(&mut session, "echo still"), "still\n");
}

fn exec_is_isolated_like_run(mode: Mode) {
    // A descriptor the supervisor holds without close-on-exec when it starts the sandbox.
    let not_close_on_exec = rustix::io::dup(dev_null()).unwrap();
    let mut session = start(mode, SessionOptions::default());
    let status = probe(
        &mut session,
        "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status",
    );
    for line in [
        "CapInh:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "CapAmb:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(
            status.lines().any(|l| l == line),
            "{line} not in:\n{status}"
        );
    }
    // Landlock holds in every exec'd command (init builds the ruleset once for all of them):
    // /proc is mounted writable and the process owns its comm file; only Landlock refuses.
    for _ in 0..2 {
        assert_eq!(
            probe(
                &mut session,
                "if echo probe 2>/dev/null > /proc/self/comm; then echo wrote; else echo refused; fi"
            ),
            "refused\n"
        );
    }
    // Only the sandbox's processes: init and this shell (the glob runs in the shell itself).
    let visible = probe(&mut session, "cd /proc && echo [0-9]* && echo $$");
    let mut lines = visible.lines();
    let pids: Vec<&str> = lines.next().unwrap().split(' ').collect();
    let shell_pid = lines.next().unwrap();
    assert_eq!(pids, ["1", shell_pid], "{visible}");
    assert_eq!(probe(&mut session, "hostname"), "session\n");
    // Init is out of reach: its memory and environment cannot be opened.
    let init = probe(
        &mut session,
        "for f in mem environ; do if (: < /proc/1/$f) 2>/dev/null; then echo $f open; \
         else echo $f denied; fi; done",
    );
    assert_eq!(init, "mem denied\nenviron denied\n");
    // Signals from inside do not reach init (the supervisor's handlers do not run in it).
    assert_eq!(
        probe(
            &mut session,
            "for s in TERM USR1 HUP INT KILL; do kill -$s 1; done; echo sent"
        ),
        "sent\n"
    );
    assert_eq!(probe(&mut session, "echo alive"), "alive\n");
    // Nothing of init's leaks into a command: the shell (which `ls` lists from outside, with
    // no pipe or substitution open in the shell meanwhile) holds its stdio and nothing else.
    let fds = probe(&mut session, "ls /proc/$$/fd");
    assert_eq!(fds, "0\n1\n2\n");
    drop(not_close_on_exec);
}

fn exec_gets_a_terminal_of_the_sandbox(mode: Mode) {
    let mut session = start(mode, SessionOptions::default());
    let mut request = shell("tty; echo done");
    request.tty = true;
    let id = session.exec(&request, None).unwrap();
    let master = match wait(&mut session) {
        SessionEvent::Started {
            id: got,
            terminal: Some(master),
            ..
        } if got == id => master,
        other => panic!("expected a start with a terminal, got {other:?}"),
    };
    assert_eq!(exited(&mut session, id), ExitStatus::Exited(0));
    // Read until every slave is closed (EIO).
    let mut output = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match rustix::io::read(&master, &mut buffer) {
            Ok(0) | Err(Errno::IO) => break,
            Ok(count) => output.extend_from_slice(&buffer[..count]),
            Err(Errno::INTR) => {}
            Err(errno) => panic!("read the master: {errno}"),
        }
    }
    let output = String::from_utf8_lossy(&output);
    assert_eq!(output, "/dev/pts/0\r\ndone\r\n");
}

fn signal_reaches_the_process(mode: Mode) {
    let mut session = start(mode, SessionOptions::default());
    let (stdio, mut output) = piped(None);
    let id = session
        .exec(&shell("echo ready; exec sleep 1000"), Some(stdio))
        .unwrap();
    started(&mut session, id);
    let mut ready = [0u8; 6];
    output.read_exact(&mut ready).unwrap();
    assert_eq!(&ready, b"ready\n");
    session
        .signal(id, rustix::process::Signal::TERM.as_raw())
        .unwrap();
    assert_eq!(exited(&mut session, id), ExitStatus::Signaled(15));
    assert!(matches!(
        session.signal(id, rustix::process::Signal::TERM.as_raw()),
        Err(LaunchError::UnknownExec { .. })
    ));
}

fn main_command_exit_is_reported(mode: Mode) {
    let (stdio, output) = piped(None);
    let mut session = start_with(
        mode,
        &["/bin/sh", "-c", "read line; echo main; exit 7"],
        SessionOptions {
            main_command: true,
            main_stdio: Some(stdio),
            trace: None,
        },
    );
    // The main command waits on /dev/null's end of file; the sandbox stays after it ended.
    match wait(&mut session) {
        SessionEvent::MainExited { status } => assert_eq!(status, ExitStatus::Exited(7)),
        other => panic!("expected the main command's end, got {other:?}"),
    }
    assert_eq!(read_all(output), "main\n");
    assert!(matches!(
        session.signal(MAIN, 15),
        Err(LaunchError::UnknownExec { id: MAIN })
    ));
    assert_eq!(probe(&mut session, "echo after"), "after\n");
    assert_eq!(session.stop(Duration::from_secs(5)), ExitStatus::Exited(7));

    // Signals reach the main command too.
    let mut session = start_with(
        mode,
        &["/bin/sleep", "1000"],
        SessionOptions {
            main_command: true,
            main_stdio: Some([dev_null(), dev_null(), dev_null()]),
            trace: None,
        },
    );
    session.signal(MAIN, 15).unwrap();
    match wait(&mut session) {
        SessionEvent::MainExited { status } => assert_eq!(status, ExitStatus::Signaled(15)),
        other => panic!("expected the main command's end, got {other:?}"),
    }

    // A main command that cannot start fails the start as run would.
    let error = start_session(
        &plan(mode, &["/no/such/main"]),
        &mut NoHooks,
        SessionOptions {
            main_command: true,
            ..SessionOptions::default()
        },
    )
    .expect_err("a missing main command fails the start");
    assert!(
        matches!(error, LaunchError::CommandNotFound { .. }),
        "{error:?}"
    );
}

/// Host pids of processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
        })
        .collect()
}

/// The sandbox's cgroup directories (`run-<our pid>-<init>-<our start time>`), in every
/// hierarchy.
fn cgroups_of(init: u32) -> Vec<PathBuf> {
    let name = format!("run-{}-{init}", std::process::id());
    let mut found = Vec::new();
    let mut parents = vec![PathBuf::from("/sys/fs/cgroup/hardbox")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        parents.extend(entries.filter_map(|e| Some(e.ok()?.path().join("hardbox"))));
    }
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let entry_name = entry.file_name().to_string_lossy().into_owned();
            if entry_name == name || entry_name.starts_with(&format!("{name}-")) {
                found.push(entry.path());
            }
        }
    }
    found
}

fn stop_leaves_no_process_and_no_cgroup(mode: Mode) {
    let marker = format!("session-stop-marker-{}", std::process::id());
    let main_marker = format!("{marker}-main");
    let mut session = start_with(
        mode,
        &["/bin/sh", "-c", "while :; do sleep 1; done", &main_marker],
        SessionOptions {
            main_command: true,
            main_stdio: Some([dev_null(), dev_null(), dev_null()]),
            trace: None,
        },
    );
    let init = session.init_pid();
    // One that ends on SIGTERM, one that ignores it (killed after the grace time).
    let mut readers = Vec::new();
    for script in [
        "echo ready; while :; do sleep 1; done",
        "trap '' TERM; echo ready; while :; do sleep 1; done",
    ] {
        let mut request = shell(script);
        request.arguments.push(marker.clone());
        let (stdio, mut output) = piped(None);
        let id = session.exec(&request, Some(stdio)).unwrap();
        started(&mut session, id);
        let mut ready = [0u8; 6];
        output.read_exact(&mut ready).unwrap();
        readers.push(output);
    }
    // A shell's fork for `sleep` carries its command line until it execs: look again until
    // only the three shells are there.
    let mut count = processes_with(&marker).len();
    for _ in 0..100 {
        if count == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        count = processes_with(&marker).len();
    }
    assert_eq!(count, 3, "main and two execs run");
    if mode.rootless {
        assert!(session.usage().is_none(), "no cgroup rootless");
    } else {
        assert!(!cgroups_of(init).is_empty(), "the sandbox has a cgroup");
        let usage = session.usage().expect("usage from the cgroup");
        assert!(usage.cpu.is_some() || usage.memory_bytes.is_some() || usage == Default::default());
    }
    let status = session.stop(Duration::from_millis(500));
    // The main command ended on SIGTERM; the one ignoring it was killed with the rest.
    assert_eq!(status, ExitStatus::Signaled(15));
    assert!(
        processes_with(&marker).is_empty(),
        "{:?}",
        processes_with(&marker)
    );
    assert!(
        !Path::new(&format!("/proc/{init}")).exists(),
        "init is reaped"
    );
    assert!(cgroups_of(init).is_empty(), "{:?}", cgroups_of(init));
    // Every writer is gone: the outputs reach end of file.
    for output in readers {
        let _ = read_all(output);
    }
}

/// A trace hook for the test: a memfd holding the pid init sees itself as.
fn memfd_trace() -> Result<OwnedFd, Errno> {
    let fd = rustix::fs::memfd_create("session-trace", rustix::fs::MemfdFlags::CLOEXEC)?;
    let pid = rustix::process::getpid().as_raw_nonzero().get().to_string();
    rustix::io::write(&fd, pid.as_bytes())?;
    Ok(fd)
}

fn failing_trace() -> Result<OwnedFd, Errno> {
    Err(Errno::NOSYS)
}

fn trace_hook_runs_in_init_and_its_fd_arrives(mode: Mode) {
    let mut session = start(
        mode,
        SessionOptions {
            trace: Some(memfd_trace),
            ..SessionOptions::default()
        },
    );
    let listener = session
        .take_trace_listener()
        .expect("the hook's descriptor");
    assert!(session.take_trace_listener().is_none());
    // With it, init's pid namespace: the one a process of the sandbox is in.
    let namespace = session
        .take_trace_pid_namespace()
        .expect("init's pid namespace");
    // Init is its pid 1 (a rootless caller may not open /proc/INIT/ns/pid to compare).
    assert_eq!(
        sys::notify::pid_in_namespace(namespace.as_fd(), session.init_pid()),
        Ok(1)
    );
    let link = std::fs::read_link(format!("/proc/self/fd/{}", {
        use std::os::fd::AsRawFd;
        listener.as_fd().as_raw_fd()
    }))
    .unwrap();
    assert!(
        link.to_string_lossy().contains("memfd:session-trace"),
        "{link:?}"
    );
    let mut text = String::new();
    let mut file = File::from(listener);
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0)).unwrap();
    file.read_to_string(&mut text).unwrap();
    assert_eq!(text, "1", "the hook ran in the sandbox's init");
    assert_eq!(probe(&mut session, "echo traced"), "traced\n");
}

fn failing_trace_hook_stops_the_start(mode: Mode) {
    let error = start_session(
        &plan(mode, &["/bin/true"]),
        &mut NoHooks,
        SessionOptions {
            trace: Some(failing_trace),
            ..SessionOptions::default()
        },
    )
    .expect_err("a failing trace hook fails the start");
    let message = error.to_string();
    assert!(message.contains("exec tracer"), "{message}");
}
