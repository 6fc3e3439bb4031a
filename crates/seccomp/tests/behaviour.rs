//! Behavioural tests of the agent filter against the real kernel.
//!
//! Each case runs in a child process: this test binary re-executed with `HARDBOX_SECCOMP_PROBE`
//! set. The child sets no_new_privs, installs the agent filter and then either execs a command
//! (which inherits the filter; raw syscalls are made from `python3` with `ctypes`) or does
//! ordinary work in Rust. The parent compares what the child printed with the documented
//! outcome. Where the unfiltered kernel answers differently whatever the privileges, the same
//! probe also runs without the filter, proving the probe itself would notice a missing rule.
//!
//! The binary has its own `main` (`harness = false`) so the child never starts libtest's threads.

#![allow(
    clippy::print_stderr,
    clippy::print_stdout,
    reason = "a test harness reports its results"
)]

use std::env;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};

use seccomp::{Arch, Filter, SeccompMode};

const PROBE: &str = "HARDBOX_SECCOMP_PROBE";

fn main() -> ExitCode {
    match env::var(PROBE) {
        Ok(mode) => child(&mode),
        Err(_) => parent(),
    }
}

// ---------------------------------------------------------------------------------------------
// Child side.

fn child(mode: &str) -> ExitCode {
    if mode != "unfiltered" {
        if let Err(error) = rustix::thread::set_no_new_privs(true) {
            eprintln!("probe: set_no_new_privs: {error}");
            return ExitCode::from(100);
        }
        let installed = Filter::agent_default()
            .compile()
            .and_then(|program| seccomp::install(&program));
        if let Err(error) = installed {
            eprintln!("probe: install: {error}");
            return ExitCode::from(101);
        }
    }
    match mode {
        "ordinary" => match ordinary_work() {
            Ok(()) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("probe: ordinary work failed: {error}");
                ExitCode::from(1)
            }
        },
        _ => {
            let arguments: Vec<String> =
                env::args().skip_while(|arg| arg != "--").skip(1).collect();
            let Some((program, rest)) = arguments.split_first() else {
                eprintln!("probe: no command after --");
                return ExitCode::from(102);
            };
            let error = Command::new(program).args(rest).exec();
            eprintln!("probe: exec {program}: {error}");
            ExitCode::from(103)
        }
    }
}

/// Work every agent does; all of it must keep working under the filter.
fn ordinary_work() -> Result<(), String> {
    match seccomp::status_of_self() {
        Ok(SeccompMode::Filter) => {}
        other => return Err(format!("expected seccomp mode filter, got {other:?}")),
    }

    let directory = tempfile::tempdir().map_err(|error| format!("tempdir: {error}"))?;
    let path = directory.path().join("file");
    std::fs::write(&path, b"hello").map_err(|error| format!("write: {error}"))?;
    let read = std::fs::read(&path).map_err(|error| format!("read: {error}"))?;
    if read != b"hello" {
        return Err(format!("read back {read:?}"));
    }
    std::fs::rename(&path, directory.path().join("renamed"))
        .map_err(|error| format!("rename: {error}"))?;

    let status = Command::new("/bin/true")
        .status()
        .map_err(|error| format!("spawn /bin/true: {error}"))?;
    if !status.success() {
        return Err(format!("/bin/true exited with {status}"));
    }

    let sum = std::thread::spawn(|| (1..=10).sum::<u32>())
        .join()
        .map_err(|_| "thread panicked".to_owned())?;
    if sum != 55 {
        return Err(format!("thread computed {sum}"));
    }

    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|error| format!("bind loopback: {error}"))?;
    let address = listener
        .local_addr()
        .map_err(|error| format!("local_addr: {error}"))?;
    let server = std::thread::spawn(move || -> Result<Vec<u8>, String> {
        let (mut stream, _) = listener
            .accept()
            .map_err(|error| format!("accept: {error}"))?;
        let mut buffer = Vec::new();
        stream
            .read_to_end(&mut buffer)
            .map_err(|error| format!("server read: {error}"))?;
        Ok(buffer)
    });
    let mut client =
        TcpStream::connect(address).map_err(|error| format!("connect {address}: {error}"))?;
    client
        .write_all(b"ping")
        .map_err(|error| format!("client write: {error}"))?;
    drop(client);
    let received = server
        .join()
        .map_err(|_| "server thread panicked".to_owned())??;
    if received != b"ping" {
        return Err(format!("server received {received:?}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Parent side.

/// Runs `command` in a child, under the filter or not, and returns its trimmed stdout, or a
/// description of how it failed.
fn run(filtered: bool, command: &[&str]) -> Result<String, String> {
    let executable = env::current_exe().map_err(|error| format!("current_exe: {error}"))?;
    let mode = match (filtered, command.is_empty()) {
        (_, true) => "ordinary",
        (true, false) => "exec",
        (false, false) => "unfiltered",
    };
    let output = Command::new(executable)
        .env(PROBE, mode)
        .arg("--")
        .args(command)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("spawn probe: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() {
        return Err(format!(
            "probe exited with {}; stdout {stdout:?}; stderr {:?}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(stdout)
}

const PYTHON_PRELUDE: &str = r#"
import ctypes, os, socket, stat, sys
libc = ctypes.CDLL(None, use_errno=True)
L = ctypes.c_long
def report(result):
    print("ok" if result >= 0 else "errno=%d" % ctypes.get_errno())
def attempt(function):
    try:
        function()
        print("ok")
    except OSError as error:
        print("errno=%d" % error.errno)
"#;

struct Outcomes {
    failures: Vec<String>,
    passed: usize,
}

impl Outcomes {
    fn record(&mut self, name: &str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.passed += 1;
                eprintln!("test {name} ... ok");
            }
            Err(message) => {
                eprintln!("test {name} ... FAILED\n  {message}");
                self.failures.push(format!("{name}: {message}"));
            }
        }
    }

    /// Runs python `body` under the filter and expects it to print `expected`. With
    /// `unfiltered` set, also runs it without the filter and expects that output instead.
    fn check(&mut self, name: &str, body: &str, expected: &str, unfiltered: Option<&str>) {
        let script = format!("{PYTHON_PRELUDE}\n{body}\n");
        let command = ["python3", "-c", script.as_str()];
        let mut result = match run(true, &command) {
            Ok(output) if output == expected => Ok(()),
            Ok(output) => Err(format!(
                "under the filter: expected {expected:?}, got {output:?}"
            )),
            Err(error) => Err(error),
        };
        if let (Ok(()), Some(control)) = (&result, unfiltered) {
            result = match run(false, &command) {
                Ok(output) if output == control => Ok(()),
                Ok(output) => Err(format!(
                    "without the filter: expected {control:?}, got {output:?} (the probe does not test what it claims)"
                )),
                Err(error) => Err(error),
            };
        }
        self.record(name, result);
    }

    /// Runs `command` under the filter and expects success and `expected` in its stdout.
    fn check_command(&mut self, name: &str, command: &[&str], expected: &str) {
        let result = match run(true, command) {
            Ok(output) if output.contains(expected) => Ok(()),
            Ok(output) => Err(format!("expected {expected:?} in {output:?}")),
            Err(error) => Err(error),
        };
        self.record(name, result);
    }
}

fn number(arch: Arch, name: &str) -> u32 {
    match arch.syscall_number(name) {
        Some(number) => number,
        None => panic!("no syscall number for {name} on {arch}"),
    }
}

fn parent() -> ExitCode {
    let Some(arch) = Arch::host() else {
        eprintln!("seccomp behaviour tests need x86_64 or aarch64");
        return ExitCode::FAILURE;
    };
    let directory = match tempfile::tempdir() {
        Ok(directory) => directory,
        Err(error) => {
            eprintln!("tempdir: {error}");
            return ExitCode::FAILURE;
        }
    };
    let scratch = directory.path().display().to_string();
    let syscall = |name: &str, arguments: &str| {
        format!(
            "report(libc.syscall(L({}), {arguments}))",
            number(arch, name)
        )
    };
    let mut outcomes = Outcomes {
        failures: Vec::new(),
        passed: 0,
    };
    const EPERM: &str = "errno=1";

    // Denied, with the documented errno.
    outcomes.check(
        "keyctl_is_eperm",
        // KEYCTL_GET_KEYRING_ID of the thread keyring, without creating it.
        &syscall("keyctl", "L(0), L(-1), L(0)"),
        EPERM,
        Some("errno=126"),
    );
    outcomes.check(
        "bpf_is_eperm",
        &syscall("bpf", "L(0), None, L(0)"),
        EPERM,
        None,
    );
    outcomes.check(
        "unshare_newuser_is_eperm",
        "report(libc.unshare(ctypes.c_int(0x10000000)))",
        EPERM,
        Some("ok"),
    );
    outcomes.check(
        "clone_newuser_is_eperm",
        &syscall("clone", "L(0x10000000 | 17), L(0), L(0), L(0), L(0)"),
        EPERM,
        None,
    );
    outcomes.check(
        "clone3_is_enosys",
        &syscall("clone3", "None, L(0)"),
        "errno=38",
        Some("errno=22"),
    );
    outcomes.check(
        "mount_is_eperm",
        r#"report(libc.mount(b"none", b"/nonexistent-hardbox-probe", b"tmpfs", L(0), None))"#,
        EPERM,
        Some("errno=2"),
    );
    outcomes.check(
        "ptrace_is_eperm",
        "report(libc.ptrace(L(0), L(0), None, None))",
        EPERM,
        None,
    );
    outcomes.check(
        "raw_socket_is_eperm",
        "attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))",
        EPERM,
        None,
    );
    outcomes.check(
        "packet_socket_is_eperm",
        "attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0))",
        EPERM,
        None,
    );
    outcomes.check(
        "io_uring_setup_is_eperm",
        &syscall("io_uring_setup", "L(1), None"),
        EPERM,
        Some("errno=14"),
    );
    outcomes.check(
        "perf_event_open_is_eperm",
        &syscall("perf_event_open", "None, L(0), L(-1), L(-1), L(0)"),
        EPERM,
        Some("errno=14"),
    );
    outcomes.check(
        "mknod_char_device_is_eperm",
        &format!(
            "attempt(lambda: os.mknod('{scratch}/null', stat.S_IFCHR | 0o600, os.makedev(1, 3)))"
        ),
        EPERM,
        None,
    );
    outcomes.check(
        "mknod_block_device_is_eperm",
        &format!(
            "attempt(lambda: os.mknod('{scratch}/disk', stat.S_IFBLK | 0o600, os.makedev(7, 0)))"
        ),
        EPERM,
        None,
    );
    outcomes.check(
        "ioctl_tiocsti_is_eperm",
        // stdin is /dev/null: without the filter the kernel says ENOTTY.
        r#"report(libc.ioctl(ctypes.c_int(0), ctypes.c_ulong(0x5412), ctypes.c_char_p(b"x")))"#,
        EPERM,
        Some("errno=25"),
    );
    outcomes.check(
        "personality_addr_no_randomize_is_eperm",
        &syscall("personality", "L(0x0040000)"),
        EPERM,
        Some("ok"),
    );
    if arch == Arch::X86_64 {
        // getpid (39) through the x32 ABI.
        outcomes.check(
            "x32_syscall_is_enosys",
            "report(libc.syscall(L(0x40000000 | 39)))",
            "errno=38",
            None,
        );
    }

    // Allowed variants of filtered syscalls.
    outcomes.check(
        "personality_query_is_allowed",
        &syscall("personality", "L(0xffffffff)"),
        "ok",
        None,
    );
    outcomes.check(
        "mkfifo_and_regular_mknod_are_allowed",
        &format!(
            "os.mkfifo('{scratch}/fifo'); attempt(lambda: os.mknod('{scratch}/regular', stat.S_IFREG | 0o600))"
        ),
        "ok",
        None,
    );
    outcomes.check(
        "unix_and_tcp_sockets_are_allowed",
        "attempt(lambda: (socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), socket.socket(socket.AF_INET, socket.SOCK_STREAM)))",
        "ok",
        None,
    );
    outcomes.check(
        "python_fork_and_threads_work",
        "import threading; t = threading.Thread(target=lambda: None); t.start(); t.join(); pid = os.fork()\nif pid == 0: os._exit(7)\n_, status = os.waitpid(pid, 0); print('ok' if os.WEXITSTATUS(status) == 7 else status)",
        "ok",
        None,
    );

    // Ordinary work and real programs.
    let ordinary = match run(true, &[]) {
        Ok(output) if output == "ok" => Ok(()),
        Ok(output) => Err(format!("expected \"ok\", got {output:?}")),
        Err(error) => Err(error),
    };
    outcomes.record("ordinary_work_is_allowed", ordinary);
    outcomes.check_command(
        "shell_pipeline_works",
        &["sh", "-c", "echo hello | tr a-z A-Z"],
        "HELLO",
    );
    outcomes.check_command("git_runs", &["git", "--version"], "git version");
    outcomes.check_command("curl_runs", &["curl", "--version"], "curl");
    outcomes.check_command(
        "node_runs",
        &[
            "node",
            "-e",
            "require('fs').writeFileSync('/dev/null', 'x'); console.log(6 * 7)",
        ],
        "42",
    );

    eprintln!(
        "\nseccomp behaviour: {} passed, {} failed",
        outcomes.passed,
        outcomes.failures.len()
    );
    if outcomes.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for failure in &outcomes.failures {
            eprintln!("failed: {failure}");
        }
        ExitCode::FAILURE
    }
}
