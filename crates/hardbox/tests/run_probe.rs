//! End-to-end proof of `hardbox run --host`: `tests/probe/probe.py` runs inside the sandbox, as
//! root and as an unprivileged user, tries what an escaping agent would try, and prints one JSON
//! report that is asserted field by field; then real programs (python, git, a pipeline, a pty)
//! are shown to work inside. They need root (CI runs as root) and say so when they do not have it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const PROBE: &str = include_str!("probe/probe.py");
const PYTHON: &str = "/usr/bin/python3";
const NOBODY: u32 = 65534;

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests run the sandbox as root (CI does): run them with sudo"
    );
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn sha256(path: &Path) -> String {
    let output = Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("sha256sum: {e}"));
    assert!(output.status.success(), "sha256sum {}", path.display());
    stdout(&output)
        .split_whitespace()
        .next()
        .expect("sha256sum printed nothing")
        .to_owned()
}

/// Who launches the sandbox.
#[derive(Clone, Copy, Debug)]
enum Caller {
    Root,
    /// `setpriv --reuid 65534 --regid 65534 --clear-groups`: rootless.
    Nobody,
}

/// A workspace, plus a HOME outside it that holds a fake SSH key and a readable control file.
/// HOME lives under the target directory, not `/tmp`: the sandbox's `/tmp` is its own tmpfs, and
/// a HOME that is merely absent inside would prove nothing.
struct Fixture {
    workspace: tempfile::TempDir,
    home: tempfile::TempDir,
    caller: Caller,
}

impl Fixture {
    fn new(caller: Caller) -> Fixture {
        require_root();
        let workspace = tempfile::tempdir().expect("tempdir");
        // Not below /tmp (the sandbox gets a fresh /tmp, so a HOME there would vanish inside),
        // nor below the checkout, which CI may clone anywhere, /tmp included.
        let home = tempfile::tempdir_in("/var/tmp").expect("tempdir");
        std::fs::create_dir(home.path().join(".ssh")).unwrap();
        std::fs::write(home.path().join(".ssh/id_rsa"), "SECRET-SSH-KEY").unwrap();
        std::fs::write(home.path().join("visible.txt"), "visible\n").unwrap();
        // The sandbox's root is not the host's root (its ids are mapped), so HOME must be
        // searchable by others, as a HOME under /home usually is.
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        if let Caller::Nobody = caller {
            for path in [
                workspace.path().to_owned(),
                home.path().to_owned(),
                home.path().join(".ssh"),
                home.path().join(".ssh/id_rsa"),
                home.path().join("visible.txt"),
            ] {
                std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
            }
        }
        Fixture {
            workspace,
            home,
            caller,
        }
    }

    fn workspace(&self) -> &Path {
        self.workspace.path()
    }

    /// `hardbox run --host --workspace W -e HOME=H [options] -- command...`, as the caller.
    fn run(&self, options: &[&str], command: &[&str]) -> Output {
        let mut cmd = match self.caller {
            Caller::Root => Command::new(env!("CARGO_BIN_EXE_hardbox")),
            Caller::Nobody => {
                let mut cmd = Command::new("setpriv");
                cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
                    .arg(env!("CARGO_BIN_EXE_hardbox"));
                cmd
            }
        };
        cmd.args(["run", "--host", "--workspace"])
            .arg(self.workspace())
            .arg("-e")
            .arg(format!("HOME={}", self.home.path().display()))
            .args(options)
            .arg("--")
            .args(command)
            .current_dir(self.workspace())
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("failed to run hardbox: {e}"))
    }

    /// Runs `command` and asserts it exits 0; returns its stdout.
    fn probe(&self, options: &[&str], command: &[&str]) -> String {
        let output = self.run(options, command);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{command:?} failed as {:?}\nstdout: {}\nstderr: {}",
            self.caller,
            stdout(&output),
            stderr(&output)
        );
        stdout(&output)
    }

    fn sh(&self, script: &str) -> String {
        self.probe(&[], &["/bin/sh", "-c", script])
    }
}

/// Runs `probe.py` inside a sandbox launched by `caller` and returns its report, after checking
/// that no connection reached the host listener and the host's binaries are unchanged.
fn probe_report(caller: Caller) -> Value {
    let fixture = Fixture::new(caller);
    let script = fixture.workspace().join("probe.py");
    std::fs::write(&script, PROBE).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let binaries: Vec<PathBuf> = [env!("CARGO_BIN_EXE_hardbox"), PYTHON]
        .iter()
        .map(|path| std::fs::canonicalize(path).unwrap())
        .collect();
    let before: Vec<String> = binaries.iter().map(|path| sha256(path)).collect();

    let workspace = fixture.workspace().to_string_lossy().into_owned();
    let home = fixture.home.path().to_string_lossy().into_owned();
    let host_pid = std::process::id().to_string();
    let out = fixture.probe(
        &[],
        &[
            PYTHON,
            &script.to_string_lossy(),
            &workspace,
            &home,
            &port,
            &host_pid,
        ],
    );
    let report: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("probe printed {out:?}: {e}"));

    let after: Vec<String> = binaries.iter().map(|path| sha256(path)).collect();
    assert_eq!(before, after, "a host binary changed: {binaries:?}");
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "the sandbox reached the host");
    assert!(
        !fixture.workspace().join("null").exists(),
        "a device node was made"
    );
    eprintln!("{caller:?}: {report}");
    report
}

/// `field` of the report is one of `allowed` (errno names, or "ok").
fn check(report: &Value, field: &str, allowed: &[&str]) {
    let pointer = format!("/{}", field.replace('.', "/"));
    let value = report
        .pointer(&pointer)
        .unwrap_or_else(|| panic!("no {field} in {report}"));
    assert!(
        allowed.iter().any(|want| value == want),
        "{field} is {value}, expected one of {allowed:?}\nreport: {report}"
    );
}

fn assert_confined(report: &Value) {
    // Root inside, in both cases, but without any capability.
    assert_eq!(report["euid"], 0, "{report}");
    // Only init (1) and the probe (2) exist: no host process is visible.
    assert_eq!(report["pid"], 2, "{report}");
    assert_eq!(report["pids"], serde_json::json!([1, 2]), "{report}");
    assert_eq!(report["host_pid_visible"], false, "{report}");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        check(report, &format!("status.{cap}"), &["0000000000000000"]);
    }
    check(report, "status.NoNewPrivs", &["1"]);
    check(report, "status.Seccomp", &["2"]);
    // /proc is writable and the probe owns its comm file: only Landlock refuses the write.
    check(report, "landlock_comm", &["EACCES"]);
    let write_refused = ["ETXTBSY", "EACCES", "EROFS", "EPERM"];
    check(report, "write_self_exe", &write_refused);
    check(report, "write_init_exe", &write_refused);
    check(report, "ptrace_init", &["EPERM", "ENOSYS"]);
    check(report, "ptrace_host_pid", &["EPERM", "ENOSYS", "ESRCH"]);
    for call in [
        "mount",
        "unshare_user",
        "keyctl",
        "bpf",
        "perf_event_open",
        "io_uring_setup",
    ] {
        check(report, call, &["EPERM", "ENOSYS"]);
    }
    check(report, "mknod_char", &["EPERM"]);
    check(report, "raw_socket", &["EPERM", "EACCES"]);
    check(
        report,
        "packet_socket",
        &["EPERM", "EACCES", "EAFNOSUPPORT"],
    );
    check(
        report,
        "host_tcp",
        &["ECONNREFUSED", "ENETUNREACH", "ETIMEDOUT", "EHOSTUNREACH"],
    );
    // HOME itself is visible (so the refusals below are refusals, not absences) ...
    check(report, "visible", &["visible\n"]);
    // ... but its secret and /etc/shadow are not: directly, through a symlink in the
    // workspace, or through a hardlink in the workspace (refused, or made but unreadable).
    for secret in ["shadow", "ssh_key"] {
        check(report, &format!("{secret}.read"), &["EACCES", "EPERM"]);
        check(report, &format!("{secret}.symlink"), &["EACCES", "EPERM"]);
        let linked = &report[secret]["hardlink"];
        if linked == "ok" {
            check(
                report,
                &format!("{secret}.hardlink_read"),
                &["EACCES", "EPERM"],
            );
        } else {
            check(
                report,
                &format!("{secret}.hardlink"),
                &["EXDEV", "EACCES", "EPERM", "ENOENT"],
            );
        }
    }
    check(report, "ssh_dir_list", &["EACCES", "EPERM"]);
    let text = report.to_string();
    assert!(!text.contains("SECRET"), "a secret leaked: {text}");
}

#[test]
fn the_probe_finds_every_layer_in_place_as_root() {
    assert_confined(&probe_report(Caller::Root));
}

#[test]
fn the_probe_finds_every_layer_in_place_rootless() {
    assert_confined(&probe_report(Caller::Nobody));
}

/// The real-program checks, for one caller.
fn real_programs_work(caller: Caller) {
    let fixture = Fixture::new(caller);

    // python3 writes a file in the workspace and the host sees it.
    fixture.probe(
        &[],
        &[
            PYTHON,
            "-c",
            "open('from-python.txt', 'w').write('written by python\\n')",
        ],
    );
    let written = std::fs::read_to_string(fixture.workspace().join("from-python.txt")).unwrap();
    assert_eq!(written, "written by python\n");

    // git init and commit in the workspace; the host's git reads the commit back.
    let out = fixture.sh(
        "set -e; git init -q repo; cd repo; echo tracked > file; git add file; \
         git -c user.name=Agent -c user.email=agent@example.invalid commit -q -m inside; \
         git log --format=%s",
    );
    assert_eq!(out, "inside\n");
    let log = Command::new("git")
        .args(["-c", "safe.directory=*", "-C"])
        .arg(fixture.workspace().join("repo"))
        .args(["log", "--format=%an %s"])
        .output()
        .unwrap();
    assert_eq!(stdout(&log), "Agent inside\n", "{}", stderr(&log));

    // A pipeline.
    assert_eq!(fixture.sh("seq 1000 | sort -n | tail -1"), "1000\n");

    // A program that needs a pseudo-terminal.
    let out = fixture.probe(
        &[],
        &[
            PYTHON,
            "-c",
            "import os, pty\n\
pid, fd = pty.fork()\n\
if pid == 0:\n    os.execv('/bin/sh', ['sh', '-c', 'test -t 0 && echo tty-ok'])\n\
data = b''\n\
while True:\n    try:\n        chunk = os.read(fd, 1024)\n    except OSError:\n        break\n    if not chunk:\n        break\n    data += chunk\n\
os.waitpid(pid, 0)\n\
print(data.decode().strip())",
        ],
    );
    assert_eq!(out, "tty-ok\n");
    let out = fixture.sh("script -qc 'tty >/dev/null && echo script-ok' /dev/null");
    assert_eq!(out.trim(), "script-ok", "{out:?}");
}

#[test]
fn real_programs_work_inside_as_root() {
    real_programs_work(Caller::Root);
}

#[test]
fn real_programs_work_inside_rootless() {
    real_programs_work(Caller::Nobody);
}
