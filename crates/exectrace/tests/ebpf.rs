//! The root tracer (eBPF programs on `sched_process_exec` and `sched_process_exit`) against
//! real processes: `exectrace-run --bpf` runs the command as pid 1 of a new pid namespace and
//! records what the programs report. Needs root, as CI has.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{args, exec_with, execs, exit_of, int, spool_events, text};
use events::{Event, Value};

const RUN: &str = env!("CARGO_BIN_EXE_exectrace-run");

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the eBPF tracer needs root (CI runs as root): run these tests with sudo"
    );
}

/// Runs `exectrace-run --bpf [flags] --events DIR/events -- command` in `dir`; returns its
/// output and its line of totals.
fn trace(dir: &Path, flags: &[&str], command: &[&str]) -> (Output, String, Vec<Event>) {
    require_root();
    let output = Command::new(RUN)
        .arg("--bpf")
        .args(flags)
        .arg("--events")
        .arg(dir.join("events"))
        .arg("--")
        .args(command)
        .current_dir(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let totals = stderr
        .lines()
        .find(|line| line.starts_with("{\"execs\""))
        .unwrap_or_else(|| panic!("no totals in stderr: {stderr}"))
        .to_owned();
    let events = spool_events(&dir.join("events"));
    (output, totals, events)
}

/// A builtin, a program with arguments from another directory, a process that kills itself,
/// an exec that fails, a subshell that never execs, and an exit code.
const SCRIPT: &str = "true; (cd /proc/sys && /bin/echo a b; true); /bin/sh -c 'kill -9 $$'; \
                      /nonexistent/program 2>/dev/null; (exit 4); exit 3";

#[test]
fn records_execs_and_every_exit_in_the_pid_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let (output, totals, events) = trace(dir.path(), &[], &["/bin/sh", "-c", SCRIPT]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(totals.contains("\"lost\":0,\"spool_lost\":0"), "{totals}");

    // The shell is pid 1 of its namespace; its parent is outside it.
    let shell = exec_with(&events, &["/bin/sh", "-c", SCRIPT]);
    assert_eq!(int(shell, exectrace::ATTR_PROCESS_PID), Some(1));
    assert_eq!(int(shell, exectrace::ATTR_PROCESS_PARENT_PID), Some(0));
    assert_eq!(
        text(shell, exectrace::ATTR_PROCESS_EXECUTABLE_PATH),
        Some("/bin/sh")
    );
    let cwd = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(
        text(shell, exectrace::ATTR_PROCESS_WORKING_DIRECTORY),
        cwd.to_str()
    );

    // The working directory is walked across mounts (/proc is one).
    let echo = exec_with(&events, &["/bin/echo", "a", "b"]);
    assert_eq!(
        text(echo, exectrace::ATTR_PROCESS_WORKING_DIRECTORY),
        Some("/proc/sys")
    );
    let echo_pid = int(echo, exectrace::ATTR_PROCESS_PID).unwrap();
    // echo's parent is the subshell, a fork of pid 1.
    let echo_parent = int(echo, exectrace::ATTR_PROCESS_PARENT_PID).unwrap();
    assert!(echo_parent > 1, "{echo:?}");
    let echo_exit = exit_of(&events, echo_pid);
    assert_eq!(int(echo_exit, exectrace::ATTR_PROCESS_EXIT_CODE), Some(0));
    assert!(matches!(
        echo_exit.attributes.get(exectrace::ATTR_PROCESS_DURATION_MS),
        Some(Value::Double(ms)) if *ms >= 0.0
    ));
    // The subshell that ran it never exec'd, and its exit is recorded too.
    assert_eq!(
        int(
            exit_of(&events, echo_parent),
            exectrace::ATTR_PROCESS_EXIT_CODE
        ),
        Some(0)
    );

    let killed = exec_with(&events, &["/bin/sh", "-c", "kill -9 $$"]);
    let killed_exit = exit_of(&events, int(killed, exectrace::ATTR_PROCESS_PID).unwrap());
    assert_eq!(
        int(killed_exit, exectrace::ATTR_PROCESS_EXIT_SIGNAL),
        Some(9)
    );
    assert_eq!(int(killed_exit, exectrace::ATTR_PROCESS_EXIT_CODE), None);

    // A failed exec is an attempt, with its errno; its process's exit (127) follows.
    let missing = exec_with(&events, &["/nonexistent/program"]);
    assert_eq!(text(missing, events::ATTR_ERROR_TYPE), Some("ENOENT"));
    assert_eq!(
        text(missing, exectrace::ATTR_PROCESS_EXECUTABLE_PATH),
        Some("/nonexistent/program")
    );
    assert_eq!(
        text(missing, exectrace::ATTR_PROCESS_WORKING_DIRECTORY),
        cwd.to_str()
    );
    assert_eq!(int(missing, exectrace::ATTR_PROCESS_PARENT_PID), Some(1));
    assert_eq!(
        int(
            exit_of(&events, int(missing, exectrace::ATTR_PROCESS_PID).unwrap()),
            exectrace::ATTR_PROCESS_EXIT_CODE
        ),
        Some(127)
    );
    assert!(!shell.attributes.contains_key(events::ATTR_ERROR_TYPE));
    let codes: Vec<_> = events
        .iter()
        .filter(|e| e.name == events::PROCESS_EXIT)
        .filter_map(|e| int(e, exectrace::ATTR_PROCESS_EXIT_CODE))
        .collect();
    assert!(codes.contains(&127), "{codes:?}");
    assert!(codes.contains(&4), "{codes:?}");
    assert_eq!(
        int(exit_of(&events, 1), exectrace::ATTR_PROCESS_EXIT_CODE),
        Some(3)
    );

    // Only the namespace's processes: exactly the execs of the script.
    assert_eq!(execs(&events).len(), 4, "{events:#?}");
    assert!(events.iter().all(|e| e.name != events::SENSOR_LOSS));
}

#[test]
fn a_storm_of_2000_execs_is_recorded_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let storm = "i=0; while [ $i -lt 2000 ]; do /bin/true; i=$((i+1)); done";
    let (output, totals, events) = trace(dir.path(), &[], &["/bin/sh", "-c", storm]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        totals.starts_with("{\"execs\":2001,\"exits\":2001,\"lost\":0,\"spool_lost\":0,"),
        "{totals}"
    );
    let trues: Vec<_> = execs(&events)
        .into_iter()
        .filter(|e| text(e, exectrace::ATTR_PROCESS_EXECUTABLE_PATH) == Some("/bin/true"))
        .collect();
    assert_eq!(trues.len(), 2000);
    for exec in trues {
        assert_eq!(int(exec, exectrace::ATTR_PROCESS_PARENT_PID), Some(1));
        let exit = exit_of(&events, int(exec, exectrace::ATTR_PROCESS_PID).unwrap());
        assert_eq!(int(exit, exectrace::ATTR_PROCESS_EXIT_CODE), Some(0));
    }
}

#[test]
fn arguments_are_redacted_or_truncated_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, events) = trace(
        dir.path(),
        &["--redact"],
        &["/bin/echo", "token=secret", "more"],
    );
    let echo = execs(&events)[0];
    assert_eq!(args(echo), ["/bin/echo", exectrace::REDACTED]);
    assert!(!format!("{events:?}").contains("secret"));

    let dir = tempfile::tempdir().unwrap();
    let (_, _, events) = trace(
        dir.path(),
        &["--max-argument-bytes", "12"],
        &["/bin/echo", "abcdefgh", "ijkl"],
    );
    let echo = execs(&events)[0];
    assert_eq!(args(echo), ["/bin/echo", "abc"]);
    assert_eq!(
        echo.attributes.get(exectrace::ATTR_COMMAND_ARGS_TRUNCATED),
        Some(&Value::Bool(true))
    );
}

#[test]
fn a_long_argv_is_cut_at_the_programs_limit_and_marked() {
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(20_000);
    let (output, _, events) = trace(
        dir.path(),
        &["--max-argument-bytes", "100000"],
        &["/bin/echo", &long],
    );
    assert!(output.status.success(), "{output:?}");
    let echo = execs(&events)[0];
    let values = args(echo);
    assert_eq!(values[0], "/bin/echo");
    assert!(values[1].len() < long.len() && long.starts_with(values[1]));
    assert_eq!(
        echo.attributes.get(exectrace::ATTR_COMMAND_ARGS_TRUNCATED),
        Some(&Value::Bool(true))
    );
}

#[test]
fn records_the_ring_buffer_had_no_room_for_are_reported_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    // One page of ring buffer and 3 KiB of argv per exec: the programs run out of room
    // while the reader pauses between batches.
    let script = "a=$(head -c 3000 /dev/zero | tr '\\0' x); i=0; \
                  while [ $i -lt 200 ]; do /bin/echo $a >/dev/null; i=$((i+1)); done";
    let (output, totals, events) = trace(
        dir.path(),
        &["--ring-bytes", "4096"],
        &["/bin/sh", "-c", script],
    );
    assert!(output.status.success(), "{output:?}");
    let losses: Vec<&Event> = events
        .iter()
        .filter(|e| e.name == events::SENSOR_LOSS)
        .collect();
    assert!(!losses.is_empty(), "no loss reported: {totals}");
    let reported: i64 = losses
        .iter()
        .map(|e| {
            assert_eq!(
                text(e, events::ATTR_ERROR_TYPE),
                Some("ring_buffer_full"),
                "{e:?}"
            );
            int(e, events::ATTR_LOST_COUNT).unwrap()
        })
        .sum();
    // What was lost and what was recorded account for every process.
    let lost: i64 = totals
        .split("\"lost\":")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert_eq!(reported, lost, "{totals}");
    let recorded = events
        .iter()
        .filter(|e| e.name == events::PROCESS_EXEC || e.name == events::PROCESS_EXIT)
        .count() as i64;
    // 200 echos, head, tr and the shell: an exec and an exit each; the command substitution's
    // subshell: an exit.
    assert_eq!(recorded + lost, 2 * 203 + 1, "{totals}");
}
