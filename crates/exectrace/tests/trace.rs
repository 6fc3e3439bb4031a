//! The tracer against real processes: a child (`exectrace-run --child`) sets no_new_privs,
//! installs the notify filter, sends the listener over a unix socket and execs a shell; the
//! tracer records its execs and exits. The rootless variants run everything (tracer included,
//! through `exectrace-run`) as uid/gid 65534 when the tests run as root, and as the calling user
//! otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{args, exec_with, execs, exit_of, int, spool_events, text};
use events::{Event, Value};
use exectrace::{StopReason, TraceOptions, TraceStats};

const RUN: &str = env!("CARGO_BIN_EXE_exectrace-run");

/// The shell the behaviour tests trace: a builtin, a program with arguments, `id`, a process
/// that kills itself with SIGKILL, an exec that fails, and an exit code.
const SCRIPT: &str =
    "true; /bin/echo a b; /usr/bin/id -u; /bin/sh -c 'kill -9 $$'; /nonexistent/program 2>/dev/null; exit 3";

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A scratch directory everyone may use (the rootless runs write into it as 65534).
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// Whether the kernel keeps a reaped process's exit status for its pidfd (6.15+); without it
/// a process killed by a signal and reaped at once by its parent may be recorded without one.
fn kernel_keeps_exit_status() -> bool {
    let mut child = Command::new("/bin/true").spawn().unwrap();
    let pidfd = sys::notify::pidfd_open(child.id()).unwrap();
    child.wait().unwrap();
    matches!(sys::notify::pidfd_exit_status(pidfd.as_fd()), Ok(Some(_)))
}

/// Runs `command` in a traced child (in `dir`, spool in `dir/events`) with the tracer in this
/// process; returns the tracer's totals, the spool's loss count and the child's output.
fn trace_here(
    dir: &Path,
    options: TraceOptions,
    command: &[&str],
) -> (TraceStats, u64, Output, u32) {
    trace_here_in(dir, options, command, None)
}

/// [`trace_here`] with the tracer presenting the pids of `pid_namespace`.
fn trace_here_in(
    dir: &Path,
    options: TraceOptions,
    command: &[&str],
    pid_namespace: Option<OwnedFd>,
) -> (TraceStats, u64, Output, u32) {
    let socket_path = dir.join("trace.sock");
    let socket = UnixListener::bind(&socket_path).unwrap();
    let child = Command::new(RUN)
        .arg("--child")
        .arg(&socket_path)
        .arg("--")
        .args(command)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (stream, _) = socket.accept().unwrap();
    let mut descriptors = Vec::new();
    sys::process::receive_descriptors(stream.as_fd(), &mut descriptors).unwrap();
    let listener = descriptors.pop().expect("the child sent its listener");
    let spool = events::Spool::open(&dir.join("events"), events::SpoolOptions::default()).unwrap();
    let tracer = exectrace::spawn(
        listener,
        spool.recorder("exec-tracer"),
        options,
        pid_namespace,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    let stats = tracer.wait();
    let spool_stats = spool.close().unwrap();
    (stats, spool_stats.lost, output, pid)
}

/// Runs `exectrace-run --events dir/events -- command` in `dir`, as 65534 when root.
fn trace_with_binary(dir: &Path, command: &[&str]) -> (Output, String) {
    let mut cmd = if is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            RUN,
        ]);
        cmd
    } else {
        Command::new(RUN)
    };
    let output = cmd
        .arg("--events")
        .arg(dir.join("events"))
        .arg("--")
        .args(command)
        .current_dir(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let stats = stderr
        .lines()
        .find(|line| line.starts_with("{\"execs\""))
        .unwrap_or_else(|| panic!("no totals in stderr: {stderr}"))
        .to_owned();
    (output, stats)
}

/// What every run of [`SCRIPT`] must have recorded; returns the shell's pid.
fn check_shell_events(events: &[Event], working_directory: &Path) -> i64 {
    let shell = exec_with(events, &["/bin/sh", "-c", SCRIPT]);
    assert_eq!(
        text(shell, exectrace::ATTR_PROCESS_EXECUTABLE_PATH),
        Some("/bin/sh")
    );
    assert_eq!(
        text(shell, exectrace::ATTR_PROCESS_WORKING_DIRECTORY),
        working_directory.to_str()
    );
    let shell_pid = int(shell, exectrace::ATTR_PROCESS_PID).unwrap();

    let echo = exec_with(events, &["/bin/echo", "a", "b"]);
    assert_eq!(
        text(echo, exectrace::ATTR_PROCESS_EXECUTABLE_PATH),
        Some("/bin/echo")
    );
    assert_eq!(
        int(echo, exectrace::ATTR_PROCESS_PARENT_PID),
        Some(shell_pid)
    );
    let echo_pid = int(echo, exectrace::ATTR_PROCESS_PID).unwrap();
    assert_ne!(echo_pid, shell_pid);
    let echo_exit = exit_of(events, echo_pid);
    assert_eq!(int(echo_exit, exectrace::ATTR_PROCESS_EXIT_CODE), Some(0));
    assert!(matches!(
        echo_exit.attributes.get(exectrace::ATTR_PROCESS_DURATION_MS),
        Some(Value::Double(ms)) if *ms >= 0.0
    ));

    let killed = exec_with(events, &["/bin/sh", "-c", "kill -9 $$"]);
    let killed_exit = exit_of(events, int(killed, exectrace::ATTR_PROCESS_PID).unwrap());
    assert_eq!(
        int(killed_exit, exectrace::ATTR_PROCESS_EXIT_CODE),
        None,
        "{killed_exit:?}"
    );
    if kernel_keeps_exit_status() {
        assert_eq!(
            int(killed_exit, exectrace::ATTR_PROCESS_EXIT_SIGNAL),
            Some(9),
            "{killed_exit:?}"
        );
    }

    // A failing exec is still an attempt; its process then exits 127.
    let missing = exec_with(events, &["/nonexistent/program"]);
    assert_eq!(
        text(missing, exectrace::ATTR_PROCESS_EXECUTABLE_PATH),
        Some("/nonexistent/program")
    );
    let missing_exit = exit_of(events, int(missing, exectrace::ATTR_PROCESS_PID).unwrap());
    assert_eq!(
        int(missing_exit, exectrace::ATTR_PROCESS_EXIT_CODE),
        Some(127)
    );

    let shell_exit = exit_of(events, shell_pid);
    assert_eq!(int(shell_exit, exectrace::ATTR_PROCESS_EXIT_CODE), Some(3));
    assert!(events.iter().all(|e| e.name != events::SENSOR_LOSS));
    shell_pid
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap()
}

#[test]
fn records_execs_and_exits_of_a_shell() {
    let dir = scratch();
    let (stats, spool_lost, output, child_pid) = trace_here(
        dir.path(),
        TraceOptions::default(),
        &["/bin/sh", "-c", SCRIPT],
    );
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let events = spool_events(&dir.path().join("events"));
    let shell_pid = check_shell_events(&events, &canonical(dir.path()));
    // The child execs the shell itself: same pid, and this process is its parent.
    assert_eq!(shell_pid, i64::from(child_pid));
    let shell = exec_with(&events, &["/bin/sh", "-c", SCRIPT]);
    assert_eq!(
        int(shell, exectrace::ATTR_PROCESS_PARENT_PID),
        Some(i64::from(std::process::id()))
    );
    assert_eq!(stats.stopped_by, StopReason::HangUp);
    assert_eq!((stats.lost, spool_lost), (0, 0));
    assert_eq!(stats.execs, execs(&events).len() as u64);
    assert_eq!(stats.exits, 5, "{events:#?}"); // sh, echo, id, the killed sh, the failed exec
}

#[test]
fn records_execs_and_exits_of_a_shell_rootless() {
    let dir = scratch();
    let (output, stats) = trace_with_binary(dir.path(), &["/bin/sh", "-c", SCRIPT]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    if is_root() {
        assert!(stdout.contains("\n65534\n"), "{stdout}");
    }
    assert!(stats.contains("\"lost\":0,\"spool_lost\":0"), "{stats}");
    assert!(stats.contains("\"stopped_by\":\"HangUp\""), "{stats}");
    let events = spool_events(&dir.path().join("events"));
    check_shell_events(&events, &canonical(dir.path()));
}

/// `/bin/true` 2,000 times from a shell loop.
const STORM: &str = "i=0; while [ $i -lt 2000 ]; do /bin/true; i=$((i+1)); done";

fn check_storm(events: &[Event]) {
    let trues: Vec<_> = execs(events)
        .into_iter()
        .filter(|e| text(e, exectrace::ATTR_PROCESS_EXECUTABLE_PATH) == Some("/bin/true"))
        .collect();
    assert_eq!(trues.len(), 2000);
    for exec in trues {
        let exit = exit_of(events, int(exec, exectrace::ATTR_PROCESS_PID).unwrap());
        assert_eq!(int(exit, exectrace::ATTR_PROCESS_EXIT_CODE), Some(0));
    }
    assert!(events.iter().all(|e| e.name != events::SENSOR_LOSS));
}

#[test]
fn a_storm_of_2000_execs_is_recorded_without_loss() {
    let dir = scratch();
    let (stats, spool_lost, output, _) = trace_here(
        dir.path(),
        TraceOptions::default(),
        &["/bin/sh", "-c", STORM],
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!((stats.lost, spool_lost), (0, 0));
    assert_eq!(stats.execs, 2001); // the shell and 2,000 /bin/true
    assert_eq!(stats.exits, 2001);
    check_storm(&spool_events(&dir.path().join("events")));
}

#[test]
fn a_storm_of_2000_execs_is_recorded_without_loss_rootless() {
    let dir = scratch();
    let (output, stats) = trace_with_binary(dir.path(), &["/bin/sh", "-c", STORM]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stats.starts_with("{\"execs\":2001,\"exits\":2001,\"lost\":0,\"spool_lost\":0,"),
        "{stats}"
    );
    check_storm(&spool_events(&dir.path().join("events")));
}

/// Kills the `unshare` holding a pid namespace (and, through `--kill-child`, its init).
struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pids_are_those_of_the_pid_namespace_given() {
    assert!(is_root(), "needs root (unshare --pid), as CI has");
    let holder = Holder(
        Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "sleep", "1000"])
            .spawn()
            .unwrap(),
    );
    // The namespace's init: unshare's child.
    let children = format!("/proc/{0}/task/{0}/children", holder.0.id());
    let init = loop {
        let text = std::fs::read_to_string(&children).unwrap();
        if let Some(pid) = text.split_whitespace().next() {
            break pid.to_owned();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let namespace = OwnedFd::from(std::fs::File::open(format!("/proc/{init}/ns/pid")).unwrap());
    let dir = scratch();
    // nsenter forks into the namespace: the shell is its pid 2 (after `sleep`), then echo 3
    // and true 4, the shell's children.
    let script = "/bin/echo $$; /bin/true";
    let nsenter = [
        "/usr/bin/nsenter",
        "--target",
        &init,
        "--pid",
        "--",
        "/bin/sh",
        "-c",
        script,
    ];
    let (stats, _, output, _) = trace_here_in(
        dir.path(),
        TraceOptions::default(),
        &nsenter,
        Some(namespace),
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "2\n");
    let events = spool_events(&dir.path().join("events"));
    let pids = |argv: &[&str]| {
        let exec = exec_with(&events, argv);
        (
            int(exec, exectrace::ATTR_PROCESS_PID),
            int(exec, exectrace::ATTR_PROCESS_PARENT_PID),
        )
    };
    // nsenter itself runs outside the namespace, as its parent does: 0 for both.
    assert_eq!(pids(&nsenter), (Some(0), Some(0)));
    assert_eq!(pids(&["/bin/sh", "-c", script]), (Some(2), Some(0)));
    assert_eq!(pids(&["/bin/echo", "2"]), (Some(3), Some(2)));
    assert_eq!(pids(&["/bin/true"]), (Some(4), Some(2)));
    assert_eq!(
        int(exit_of(&events, 3), exectrace::ATTR_PROCESS_EXIT_CODE),
        Some(0)
    );
    assert_eq!((stats.execs, stats.lost), (4, 0), "{events:#?}");
    assert_eq!(
        int(exit_of(&events, 0), exectrace::ATTR_PROCESS_EXIT_CODE),
        Some(0)
    );
}

#[test]
fn arguments_are_redacted_or_truncated_on_request() {
    let dir = scratch();
    let redact = TraceOptions {
        redact_arguments: true,
        ..TraceOptions::default()
    };
    trace_here(dir.path(), redact, &["/bin/echo", "token=secret", "more"]);
    let events = spool_events(&dir.path().join("events"));
    let echo = execs(&events)[0];
    assert_eq!(args(echo), ["/bin/echo", exectrace::REDACTED]);
    assert!(!format!("{events:?}").contains("secret"));

    let dir = scratch();
    let short = TraceOptions {
        redact_arguments: false,
        max_argument_bytes: 12,
    };
    trace_here(dir.path(), short, &["/bin/echo", "abcdefgh", "ijkl"]);
    let events = spool_events(&dir.path().join("events"));
    let echo = execs(&events)[0];
    assert_eq!(args(echo), ["/bin/echo", "abc"]);
    assert_eq!(
        echo.attributes.get(exectrace::ATTR_COMMAND_ARGS_TRUNCATED),
        Some(&Value::Bool(true))
    );
}

#[test]
fn execveat_records_the_path_of_its_descriptor() {
    let dir = scratch();
    // glibc's fexecve is execveat(fd, "", argv, envp, AT_EMPTY_PATH).
    let program =
        "import os; fd = os.open('/usr/bin/true', os.O_RDONLY); os.execve(fd, ['true', 'x'], {})";
    let (_, _, output, _) = trace_here(
        dir.path(),
        TraceOptions::default(),
        &["/usr/bin/python3", "-c", program],
    );
    assert!(output.status.success(), "{output:?}");
    let events = spool_events(&dir.path().join("events"));
    let exec = exec_with(&events, &["true", "x"]);
    assert_eq!(text(exec, exectrace::ATTR_SYSCALL), Some("execveat"));
    assert_eq!(
        text(exec, exectrace::ATTR_PROCESS_EXECUTABLE_PATH),
        Some("/usr/bin/true")
    );
}

#[test]
fn stop_ends_the_tracer_while_traced_processes_still_run() {
    let dir = scratch();
    let socket_path = dir.path().join("trace.sock");
    let socket = UnixListener::bind(&socket_path).unwrap();
    // The child waits for a line on stdin, so it outlives the tracer for sure.
    let mut child = Command::new(RUN)
        .arg("--child")
        .arg(&socket_path)
        .args([
            "--",
            "/bin/sh",
            "-c",
            "echo ready; read line; /bin/echo $line",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (stream, _) = socket.accept().unwrap();
    let mut descriptors = Vec::new();
    sys::process::receive_descriptors(stream.as_fd(), &mut descriptors).unwrap();
    let spool =
        events::Spool::open(&dir.path().join("events"), events::SpoolOptions::default()).unwrap();
    let tracer = exectrace::spawn(
        descriptors.pop().unwrap(),
        spool.recorder("exec-tracer"),
        TraceOptions::default(),
        None,
    )
    .unwrap();
    // The shell runs (its exec was answered) once it says so.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    let stats = tracer.stop();
    assert_eq!(stats.stopped_by, StopReason::Requested);
    assert!(child.try_wait().unwrap().is_none());
    // Without a listener the filtered syscalls fail with ENOSYS: the shell cannot exec echo.
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("hello"),
        "{output:?}"
    );
    spool.close().unwrap();
}

/// Exit codes and signals of processes reaped by their parents before the tracer looks (with
/// exits from pidfds, the tracer only ever looks after the reap).
#[test]
fn exit_codes_and_signals_of_reaped_processes_are_recorded() {
    let dir = scratch();
    let script = "/bin/sh -c 'exit 5'; /bin/sh -c 'kill -TERM $$'; /bin/sh -c 'kill -9 $$'; \
                  (exit 4); /bin/true & wait; exit 0";
    let (stats, _, output, _) = trace_here(
        dir.path(),
        TraceOptions::default(),
        &["/bin/sh", "-c", script],
    );
    assert!(output.status.success(), "{output:?}");
    let events = spool_events(&dir.path().join("events"));
    let exit = |argv: &[&str]| {
        let pid = int(exec_with(&events, argv), exectrace::ATTR_PROCESS_PID).unwrap();
        let exit = exit_of(&events, pid);
        (
            int(exit, exectrace::ATTR_PROCESS_EXIT_CODE),
            int(exit, exectrace::ATTR_PROCESS_EXIT_SIGNAL),
        )
    };
    assert_eq!(exit(&["/bin/sh", "-c", "exit 5"]), (Some(5), None));
    assert_eq!(exit(&["/bin/true"]), (Some(0), None));
    assert_eq!(exit(&["/bin/sh", "-c", script]), (Some(0), None));
    if exectrace::ExitSource::detect() == exectrace::ExitSource::Pidfd {
        assert_eq!(exit(&["/bin/sh", "-c", "kill -TERM $$"]), (None, Some(15)));
        assert_eq!(exit(&["/bin/sh", "-c", "kill -9 $$"]), (None, Some(9)));
        // The subshell never execs: without exit_group notifications it is not seen at all.
        assert_eq!(stats.exits, stats.execs, "{events:#?}");
    } else {
        assert!(stats.exits > stats.execs, "{events:#?}");
    }
}

/// The filter notifies `exit_group` exactly where the kernel cannot report exits through
/// pidfds.
#[test]
fn the_filter_notifies_exit_group_only_without_exits_from_pidfds() {
    let arch = exectrace::Arch::native().unwrap();
    let program = exectrace::program(arch, exectrace::ExitSource::detect());
    let exit_group = u32::try_from(arch.exit_group()).unwrap();
    let tested = program.iter().any(|i| i.code == 0x15 && i.k == exit_group);
    assert_eq!(
        tested,
        exectrace::ExitSource::detect() == exectrace::ExitSource::ExitGroup
    );
}
