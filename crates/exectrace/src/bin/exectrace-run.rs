//! `exectrace-run`: runs one command under the exec tracer, outside any sandbox. It drives the
//! crate's tests (rootless through `setpriv`) and `scripts/bench-exec-trace`; the sandbox
//! itself installs the filter in its init and runs the tracer in its supervisor.
//!
//! ```text
//! exectrace-run --events DIR [--no-trace | --bpf [--ring-bytes N] | --pid-namespace] [--redact]
//!               [--max-argument-bytes N] -- PROGRAM ARGS...
//! ```
//!
//! The command runs in a child that sets `no_new_privs`, installs the notify filter (unless
//! `--no-trace`), sends the listener back over `DIR/trace.sock` and execs PROGRAM (searched in
//! `PATH`). With `--bpf` (root) the command instead runs as pid 1 of a new pid namespace
//! (`--pid-namespace` alone does that without tracing), recorded by the eBPF tracer, which is
//! attached before the command starts. Events go to the spool in DIR. At the end one JSON line of totals goes to stderr:
//! `{"execs":N,"exits":N,"lost":N,"stopped_by":"HangUp"}`, and the command's exit code (128 +
//! signal if killed) becomes this program's. Usage errors exit 2, setup failures 125.

use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use exectrace::{StopReason, TraceOptions};

struct Settings {
    events: PathBuf,
    trace: bool,
    /// Trace with the eBPF programs (root) instead of the notify filter.
    bpf: bool,
    /// Run the command as pid 1 of a new pid namespace (implied by `--bpf`).
    pid_namespace: bool,
    /// The eBPF tracer's ring buffer size (`--ring-bytes`), when not the default.
    ring_bytes: Option<usize>,
    options: TraceOptions,
    command: Vec<String>,
}

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    if arguments.first().map(String::as_str) == Some("--child") {
        return child(&arguments[1..]);
    }
    let settings = match parse(&arguments) {
        Ok(settings) => settings,
        Err(message) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: {message}\nusage: exectrace-run --events DIR [--no-trace] [--redact] \
                 [--max-argument-bytes N] -- PROGRAM ARGS..."
            );
            return ExitCode::from(2);
        }
    };
    match parent(&settings) {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "error: {message}");
            ExitCode::from(125)
        }
    }
}

fn parse(arguments: &[String]) -> Result<Settings, String> {
    let mut settings = Settings {
        events: PathBuf::new(),
        trace: true,
        bpf: false,
        pid_namespace: false,
        ring_bytes: None,
        options: TraceOptions::default(),
        command: Vec::new(),
    };
    let mut iter = arguments.iter();
    while let Some(argument) = iter.next() {
        match argument.as_str() {
            "--events" => {
                settings.events = PathBuf::from(iter.next().ok_or("--events needs a directory")?);
            }
            "--no-trace" => settings.trace = false,
            "--bpf" => {
                settings.bpf = true;
                settings.pid_namespace = true;
            }
            "--pid-namespace" => settings.pid_namespace = true,
            "--ring-bytes" => {
                settings.ring_bytes = Some(
                    iter.next()
                        .and_then(|n| n.parse().ok())
                        .ok_or("--ring-bytes needs a number")?,
                );
            }
            "--redact" => settings.options.redact_arguments = true,
            "--max-argument-bytes" => {
                settings.options.max_argument_bytes = iter
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--max-argument-bytes needs a number")?;
            }
            "--" => {
                settings.command = iter.cloned().collect();
                break;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if settings.events.as_os_str().is_empty() {
        return Err("--events is required".to_owned());
    }
    if settings.command.is_empty() {
        return Err("no command given".to_owned());
    }
    Ok(settings)
}

fn parent(settings: &Settings) -> Result<u8, String> {
    let dir = &settings.events;
    std::fs::create_dir_all(dir).map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
    let socket_path = dir.join("trace.sock");
    let _ = std::fs::remove_file(&socket_path);
    let socket = UnixListener::bind(&socket_path)
        .map_err(|e| format!("failed to bind {}: {e}", socket_path.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("failed to find myself: {e}"))?;
    let mut command = Command::new(exe);
    command.arg("--child").arg(&socket_path);
    if settings.pid_namespace {
        command.arg("--pid-namespace");
    } else if !settings.trace {
        command.arg("--no-trace");
    }
    let mut child = command
        .arg("--")
        .args(&settings.command)
        .spawn()
        .map_err(|e| format!("failed to start the child: {e}"))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| format!("failed to configure {}: {e}", socket_path.display()))?;
    let stream = loop {
        match socket.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("the child ended before it connected: {status}"));
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => {
                return Err(format!(
                    "failed to accept on {}: {e}",
                    socket_path.display()
                ))
            }
        }
    };
    stream
        .set_nonblocking(false)
        .map_err(|e| format!("failed to configure {}: {e}", socket_path.display()))?;
    let _ = std::fs::remove_file(&socket_path);
    let mut descriptors = Vec::new();
    sys::process::receive_descriptors(stream.as_fd(), &mut descriptors)
        .map_err(|e| format!("failed to receive the listener: {e}"))?;
    let spool =
        events::Spool::open(dir, events::SpoolOptions::default()).map_err(|e| format!("{e}"))?;
    let received = descriptors.pop().filter(|_| settings.trace);
    let tracer = match received {
        Some(namespace) if settings.bpf => {
            let tracer = match settings.ring_bytes {
                Some(bytes) => exectrace::prepare_ebpf_with_ring(bytes),
                None => exectrace::prepare_ebpf(),
            }
            .and_then(|prepared| {
                prepared.start(&namespace, spool.recorder("exec-tracer"), settings.options)
            })
            .map_err(|e| format!("failed to start the eBPF tracer: {e}"))?;
            Some(tracer)
        }
        Some(listener) => Some(
            exectrace::spawn(
                listener,
                spool.recorder("exec-tracer"),
                settings.options,
                Some(own_pid_namespace()?),
            )
            .map_err(|e| format!("failed to start the tracer: {e}"))?,
        ),
        None if settings.trace => return Err("the child sent no listener".to_owned()),
        None => None,
    };
    if settings.pid_namespace {
        // The command's process waits for this before it executes the command (with --bpf,
        // until the programs are attached).
        (&stream)
            .write_all(b"g")
            .map_err(|e| format!("failed to start the command: {e}"))?;
    }
    drop(stream);
    let status = child
        .wait()
        .map_err(|e| format!("failed to wait for the child: {e}"))?;
    let stats = tracer.map(|tracer| {
        if settings.bpf {
            // Every process of the namespace is gone: its pid 1 was reaped.
            tracer.stop()
        } else {
            tracer.wait()
        }
    });
    let spool_stats = spool.close().map_err(|e| format!("{e}"))?;
    if let Some(stats) = stats {
        let stopped_by = match stats.stopped_by {
            StopReason::HangUp => "HangUp".to_owned(),
            StopReason::Requested => "Requested".to_owned(),
            StopReason::Failed(errno) => format!("Failed({})", sys::errno::describe(errno)),
        };
        let _ = writeln!(
            std::io::stderr(),
            "{{\"execs\":{},\"exits\":{},\"lost\":{},\"spool_lost\":{},\"stopped_by\":\"{stopped_by}\"}}",
            stats.execs,
            stats.exits,
            stats.lost,
            spool_stats.lost,
        );
    }
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + (signal & 0x7f)).unwrap_or(1),
        (None, None) => 1,
    })
}

/// This process's pid namespace, the one the command starts in: events carry its pids.
fn own_pid_namespace() -> Result<OwnedFd, String> {
    std::fs::File::open("/proc/self/ns/pid")
        .map(OwnedFd::from)
        .map_err(|e| format!("failed to open /proc/self/ns/pid: {e}"))
}

/// The child: `--child SOCKET [--no-trace | --pid-namespace] -- PROGRAM ARGS...`. It installs
/// the notify filter and sends its listener (nothing with `--no-trace`) and executes the
/// command; or, with `--pid-namespace`, starts the command's process as pid 1 of a new pid
/// namespace, sends that namespace, and the command's process waits for the parent's go
/// before it executes the command.
fn child(arguments: &[String]) -> ExitCode {
    let result = (|| -> Result<sys::Errno, String> {
        let socket_path = Path::new(arguments.first().ok_or("--child needs a socket")?);
        let separator = arguments
            .iter()
            .position(|a| a == "--")
            .ok_or("--child needs -- PROGRAM")?;
        let flags = &arguments[1..separator];
        let pid_namespace = flags.iter().any(|f| f == "--pid-namespace");
        let filter = !pid_namespace && !flags.iter().any(|f| f == "--no-trace");
        let command = &arguments[separator + 1..];
        let program = command.first().ok_or("no command given")?;
        let environment: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
        let search_path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned());
        let target = sys::process::ExecTarget::new(program, command, &environment, &search_path)
            .map_err(|e| format!("invalid command: {e}"))?;
        rustix::thread::set_no_new_privs(true).map_err(|e| format!("no_new_privs: {e}"))?;
        let listener: Option<OwnedFd> = if filter {
            Some(
                exectrace::install_listener()
                    .map_err(|e| format!("failed to install the filter: {e}"))?,
            )
        } else {
            None
        };
        let stream = UnixStream::connect(socket_path)
            .map_err(|e| format!("failed to connect to {}: {e}", socket_path.display()))?;
        let wait_for_go = |stream: UnixStream| {
            let mut go = [0u8; 1];
            std::io::Read::read_exact(&mut &stream, &mut go)
                .map_err(|e| format!("the tracer did not start: {e}"))
        };
        if pid_namespace {
            let namespaces = sys::process::Namespaces {
                pid: true,
                ..sys::process::Namespaces::default()
            };
            match sys::process::clone_into_namespaces(namespaces)
                .map_err(|e| format!("failed to start pid 1 of a new pid namespace: {e}"))?
            {
                sys::process::Forked::Child => {
                    wait_for_go(stream)?;
                    return Ok(target.execute());
                }
                sys::process::Forked::Parent(pid) => {
                    let namespace =
                        std::fs::File::open(format!("/proc/{}/ns/pid", pid.as_raw_nonzero()))
                            .map_err(|e| format!("failed to open the pid namespace: {e}"))?;
                    sys::process::send_descriptors(stream.as_fd(), 1, &[namespace.as_fd()])
                        .map_err(|e| format!("failed to send the pid namespace: {e}"))?;
                    drop(stream);
                    let status =
                        rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
                            .map_err(|e| format!("failed to wait for the command: {e}"))?
                            .map(|(_, status)| status);
                    let code = match status {
                        Some(status) if status.exited() => status.exit_status().unwrap_or(1),
                        Some(status) => 128 + status.terminating_signal().unwrap_or(0),
                        None => 1,
                    };
                    std::process::exit(code);
                }
            }
        }
        let descriptors: Vec<_> = listener.iter().map(AsFd::as_fd).collect();
        sys::process::send_descriptors(stream.as_fd(), 1, &descriptors)
            .map_err(|e| format!("failed to send the listener: {e}"))?;
        drop(listener);
        drop(stream);
        Ok(target.execute())
    })();
    let message = match result {
        Ok(errno) => format!("failed to execute the command: {errno}"),
        Err(message) => message,
    };
    let _ = writeln!(std::io::stderr(), "error: {message}");
    ExitCode::from(127)
}
