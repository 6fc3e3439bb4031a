//! End-to-end tests of `hardbox run --host`: the real binary, probed from inside with `sh`
//! and `python3`. They need root (CI runs as root) and say so when they do not have it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests run the sandbox as root (CI does): run them with sudo"
    );
}

fn hardbox(workspace: &Path, options: &[&str], script: &str) -> Output {
    require_root();
    Command::new(env!("CARGO_BIN_EXE_hardbox"))
        .args(["run", "--host", "--workspace"])
        .arg(workspace)
        .args(options)
        .args(["--", "/bin/sh", "-c", script])
        .env("HARDBOX_TEST_HOST_VARIABLE", "leaked")
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("failed to run hardbox: {error}"))
}

fn workspace() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `script` and asserts it exits 0; returns its stdout.
fn probe(workspace: &Path, options: &[&str], script: &str) -> String {
    let output = hardbox(workspace, options, script);
    assert_eq!(
        output.status.code(),
        Some(0),
        "script {script:?} failed\nstdout: {}\nstderr: {}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

#[test]
fn only_the_sandboxs_processes_are_visible_and_pid_1_is_init() {
    let dir = workspace();
    let out = probe(
        dir.path(),
        &[],
        "cat /proc/1/comm; echo $$; ls /proc | grep -c '^[0-9][0-9]*$'",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "hardbox", "{out}");
    assert_eq!(lines[1], "2", "the command is init's first child: {out}");
    // init, sh, and the pipeline's ls and grep.
    let count: u32 = lines[2].parse().unwrap_or(u32::MAX);
    assert!(count <= 4, "more processes than the sandbox's: {out}");
}

#[test]
fn init_reaps_orphans_also_from_other_sessions() {
    let dir = workspace();
    // The subshell exits at once, so its child (a session of its own) is handed to init;
    // when it ends, init must reap it whatever its process group.
    let out = probe(
        dir.path(),
        &[],
        "(setsid sleep 0.2 &); sleep 1; grep -l '^State:.Z' /proc/[0-9]*/status | wc -l",
    );
    assert_eq!(out.trim(), "0", "a zombie is left in the sandbox");
}

#[test]
fn writes_outside_the_workspace_fail_and_inside_reach_the_host() {
    let dir = workspace();
    let out = probe(
        dir.path(),
        &[],
        "touch /etc/hardbox-probe 2>&1; touch /usr/hardbox-probe 2>&1; echo made > inside; pwd",
    );
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(!Path::new("/etc/hardbox-probe").exists());
    assert!(!Path::new("/usr/hardbox-probe").exists());
    assert!(
        out.trim_end().ends_with(&*dir.path().to_string_lossy()),
        "{out}"
    );
    let written = std::fs::read_to_string(dir.path().join("inside")).unwrap_or_default();
    assert_eq!(written, "made\n");
}

#[test]
fn hidden_paths_are_unreadable_also_through_a_symlink_in_the_workspace() {
    let dir = workspace();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(home.join(".ssh/id_ed25519"), "SECRET-KEY").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(home.join(".netrc"), "SECRET-NETRC").unwrap_or_else(|e| panic!("{e}"));
    let home_variable = format!("HOME={}", home.display());
    let out = hardbox(
        dir.path(),
        &["-e", &home_variable],
        "ln -s /etc/shadow shadow-link; ln -s $HOME/.ssh/id_ed25519 key-link; \
         cat /etc/shadow shadow-link key-link $HOME/.ssh/id_ed25519 $HOME/.netrc; ls /root; \
         echo done",
    );
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("done"), "{text}");
    assert!(!text.contains("SECRET"), "a secret leaked: {text}");
    assert!(!text.contains("root:"), "/etc/shadow leaked: {text}");
    // Both the real secret files and the shadow file were refused, not missing.
    assert!(text.matches("Permission denied").count() >= 5, "{text}");
}

/// As root with the HOME of another user (`sudo -E`): hidden paths under a 0700 home the
/// sandbox cannot even traverse need no mask, and the launch must not fail over them.
#[test]
fn hidden_paths_under_a_home_the_sandbox_cannot_traverse_do_not_stop_the_launch() {
    require_root();
    let home = tempfile::Builder::new()
        .prefix("hardbox-home-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::create_dir(home.path().join(".ssh")).unwrap();
    std::fs::write(home.path().join(".ssh/id_ed25519"), "secret key").unwrap();
    for path in [home.path().to_owned(), home.path().join(".ssh")] {
        std::os::unix::fs::chown(&path, Some(4321), Some(4321)).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
    }
    let dir = workspace();
    let output = Command::new(env!("CARGO_BIN_EXE_hardbox"))
        .args(["run", "--host", "--workspace"])
        .arg(dir.path())
        .args([
            "--",
            "/bin/sh",
            "-c",
            "cat \"$0/.ssh/id_ed25519\" 2>&1; echo done",
        ])
        .arg(home.path())
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{out}{}", stderr(&output));
    assert!(
        out.contains("Permission denied") && !out.contains("secret key"),
        "{out}"
    );
    assert!(out.ends_with("done\n"), "{out}");
}

#[test]
fn capabilities_are_dropped_and_no_new_privs_is_set() {
    let dir = workspace();
    let out = probe(
        dir.path(),
        &[],
        "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status",
    );
    for field in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            out.lines()
                .any(|line| line.starts_with(field) && line.ends_with("0000000000000000")),
            "{field} not empty: {out}"
        );
    }
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "seccomp filter missing: {out}");
}

#[test]
fn landlock_refuses_writes_to_writable_mounts_it_does_not_grant() {
    let dir = workspace();
    // /proc is mounted writable and the process owns its comm file; only Landlock refuses.
    let script = "if echo probe > /proc/self/comm; then echo wrote; else echo refused; fi";
    assert_eq!(probe(dir.path(), &[], script).trim(), "refused");
    assert_eq!(
        probe(dir.path(), &["--dangerously-skip", "landlock"], script).trim(),
        "wrote"
    );
}

#[test]
fn tmp_and_rw_volumes_are_writable_and_ro_volumes_are_not() {
    let dir = workspace();
    let data = workspace();
    let ro = format!("{}:/mnt:ro", data.path().display());
    let out = probe(
        dir.path(),
        &["-v", &ro],
        "echo t > /tmp/t && cat /tmp/t; touch /mnt/x 2>&1 || true",
    );
    assert!(out.starts_with("t\n"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(!data.path().join("x").exists());
}

#[test]
fn hostname_is_the_sandboxs() {
    let dir = workspace();
    assert_eq!(
        probe(dir.path(), &[], "cat /proc/sys/kernel/hostname").trim(),
        "hardbox"
    );
    assert_eq!(
        probe(
            dir.path(),
            &["--hostname", "agent-1"],
            "cat /proc/sys/kernel/hostname"
        )
        .trim(),
        "agent-1"
    );
}

#[test]
fn exit_codes_follow_docker_run() {
    let dir = workspace();
    std::fs::write(dir.path().join("not-executable"), "#!/bin/sh\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let code = |script: &str| hardbox(dir.path(), &[], script).status.code();
    assert_eq!(code("exit 0"), Some(0));
    assert_eq!(code("exit 3"), Some(3));
    assert_eq!(code("kill -9 $$"), Some(128 + 9));

    let run = |command: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hardbox"))
            .args(["run", "--host", "--workspace"])
            .arg(dir.path())
            .arg("--")
            .args(command)
            .output()
            .unwrap_or_else(|error| panic!("failed to run hardbox: {error}"))
    };
    let missing = run(&["hardbox-no-such-command"]);
    assert_eq!(missing.status.code(), Some(127));
    assert!(stderr(&missing).contains("command not found: hardbox-no-such-command"));
    let path = dir.path().join("not-executable");
    let not_executable = run(&[&path.to_string_lossy()]);
    assert_eq!(
        not_executable.status.code(),
        Some(126),
        "{}",
        stderr(&not_executable)
    );
}

#[test]
fn a_failing_setup_step_exits_125_naming_the_step_and_errno() {
    let dir = workspace();
    let output = hardbox(dir.path(), &["--tmpfs", "/hardbox-no-such-dir"], "true");
    assert_eq!(output.status.code(), Some(125));
    let message = stderr(&output);
    assert!(
        message.contains(
            "error: failed to start sandbox: mount tmpfs on /hardbox-no-such-dir: ENOENT"
        ),
        "{message}"
    );
    assert!(message.contains("hint:"), "{message}");
}

#[test]
fn the_environment_is_clean() {
    let dir = workspace();
    let out = probe(dir.path(), &["-e", "GIVEN=yes"], "env");
    assert!(!out.contains("HARDBOX_TEST_HOST_VARIABLE"), "{out}");
    assert!(out.contains("GIVEN=yes"), "{out}");
    assert!(out.contains("PATH=/usr/local/bin:/usr/bin:/bin"), "{out}");
}

#[test]
fn the_hosts_loopback_cannot_be_reached() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    let dir = workspace();
    let script = format!(
        "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; \
         /usr/bin/python3 -c 'import socket\n\
try:\n    socket.create_connection((\"127.0.0.1\", {port}), timeout=5); print(\"connected\")\n\
except OSError as e: print(\"refused\", e.errno)'"
    );
    let out = probe(dir.path(), &[], &script);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "lo", "interfaces other than loopback: {out}");
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[1].starts_with("refused"), "{out}");
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(listener.accept().is_err(), "the sandbox reached the host");
}

#[test]
fn stdin_passes_through_and_signals_reach_the_command() {
    require_root();
    let dir = workspace();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hardbox"))
        .args(["run", "--host", "--workspace"])
        .arg(dir.path())
        .args([
            "--",
            "/bin/sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; read line; echo \"read $line\"; \
             while :; do sleep 0.05; done",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("failed to run hardbox: {error}"));
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("no stdin"));
    writeln!(stdin, "hello").unwrap_or_else(|e| panic!("{e}"));
    let mut reader = BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("no stdout")));
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(line, "read hello\n");
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap_or_else(|| panic!("pid"));
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)
        .unwrap_or_else(|e| panic!("{e}"));
    line.clear();
    reader
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(line, "got-term\n");
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.code(), Some(42));
}

#[test]
fn as_root_the_workspace_is_idmapped_so_sandbox_ids_own_host_ids_files() {
    let dir = workspace();
    std::os::unix::fs::chown(dir.path(), Some(1000), Some(1000)).unwrap_or_else(|e| panic!("{e}"));
    let out = probe(
        dir.path(),
        &["--user", "1000:1000"],
        "id -u; touch made; ls -ln made",
    );
    assert!(out.starts_with("1000\n"), "{out}");
    let metadata = std::fs::metadata(dir.path().join("made")).unwrap_or_else(|e| panic!("{e}"));
    use std::os::unix::fs::MetadataExt;
    assert_eq!((metadata.uid(), metadata.gid()), (1000, 1000));
}

#[test]
fn rootless_maps_the_caller_to_root_inside() {
    require_root();
    let dir = workspace();
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534))
        .unwrap_or_else(|e| panic!("{e}"));
    let output = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_hardbox"))
        .args(["run", "--host", "--workspace"])
        .arg(dir.path())
        .args([
            "--",
            "/bin/sh",
            "-c",
            "id -u; echo x > made; grep CapEff /proc/self/status",
        ])
        .output()
        .unwrap_or_else(|error| panic!("failed to run setpriv: {error}"));
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{out}{}", stderr(&output));
    assert!(out.starts_with("0\n"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(dir.path().join("made")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(metadata.uid(), 65534);
}

/// The `hardbox/` cgroup directories of this test's sandboxes, in the pids hierarchy.
fn sandbox_cgroups(pid: u32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup/pids/hardbox") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&format!("run-{pid}-")))
        .collect()
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit_and_the_sandbox_still_exits() {
    let dir = workspace();
    let output = hardbox(
        dir.path(),
        &["--pids-limit", "16"],
        "for i in $(seq 100); do sleep 5 & done; wait; echo all-forked",
    );
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert!(!text.contains("all-forked"), "{text}");
    assert!(text.to_lowercase().contains("fork"), "{text}");
    assert_ne!(output.status.code(), Some(0), "{text}");
}

#[test]
fn the_sandbox_runs_in_its_own_cgroup_which_is_removed_on_exit() {
    let dir = workspace();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hardbox"))
        .args(["run", "--host", "--workspace"])
        .arg(dir.path())
        .args(["--pids-limit", "50", "--", "/bin/sh", "-c"])
        .arg("cat /proc/self/cgroup; read line; true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("no stdout")));
    let mut text = String::new();
    while !text.contains("pids:") {
        let mut line = String::new();
        if lines.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        text.push_str(&line);
    }
    assert!(
        text.contains(&format!("pids:/hardbox/run-{pid}-")),
        "{text}"
    );
    let limit = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/pids/hardbox/{}/pids.max",
        sandbox_cgroups(pid).first().cloned().unwrap_or_default()
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(limit.trim(), "50");
    drop(child.stdin.take());
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.code(), Some(0));
    assert!(sandbox_cgroups(pid).is_empty(), "cgroup left behind");
}

#[test]
fn a_memory_hog_is_oom_killed_with_a_message_and_exit_137() {
    let dir = workspace();
    let output = hardbox(
        dir.path(),
        &["--memory", "64m"],
        "exec python3 -c 'chunks = []\nwhile True: chunks.append(bytearray(1 << 20))'",
    );
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(137), "{message}");
    assert!(
        message.contains("error: the command was killed: out of memory (limit 64 MiB)"),
        "{message}"
    );
}

#[test]
fn a_timeout_kills_the_sandbox_and_exits_124() {
    let dir = workspace();
    let output = hardbox(dir.path(), &["--timeout", "1s"], "sleep 30");
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(124), "{message}");
    assert!(
        message.contains("error: the command timed out after 1s"),
        "{message}"
    );
}

#[test]
fn a_policy_file_sets_limits_and_environment_and_flags_win() {
    let dir = workspace();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[limits]\npids = 40\nnofile = 100\n[environment.set]\nFROM_POLICY = \"yes\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let policy = policy.to_string_lossy().into_owned();
    let out = probe(
        dir.path(),
        &["--policy", &policy],
        "ulimit -n; echo $FROM_POLICY; cat /sys/fs/cgroup/pids/pids.max 2>/dev/null; true",
    );
    assert!(out.starts_with("100\nyes\n"), "{out}");
    let out = probe(
        dir.path(),
        &[
            "--policy",
            &policy,
            "--timeout",
            "1m",
            "--dangerously-skip",
            "cgroups",
        ],
        "cat /proc/self/cgroup",
    );
    assert!(!out.contains("hardbox/run-"), "{out}");
}

#[test]
fn a_bad_policy_file_is_refused_naming_the_file_and_line() {
    let dir = workspace();
    let policy = dir.path().join("bad.toml");
    std::fs::write(&policy, "[limits]\nmemory = \"2x\"\n").unwrap_or_else(|e| panic!("{e}"));
    let policy = policy.to_string_lossy().into_owned();
    let output = hardbox(dir.path(), &["--policy", &policy], "true");
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(125), "{message}");
    assert!(message.contains(&policy), "{message}");
    assert!(message.contains("line 2"), "{message}");

    let show = Command::new(env!("CARGO_BIN_EXE_hardbox"))
        .args(["policy", "show", "--policy", &policy])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(show.status.code(), Some(1));
    assert!(stderr(&show).contains("line 2"), "{}", stderr(&show));
}

#[test]
fn policy_show_prints_the_effective_policy_as_toml_and_json() {
    let dir = workspace();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[limits]\nmemory = \"512m\"\n").unwrap_or_else(|e| panic!("{e}"));
    let show = |extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_hardbox"))
            .args(["policy", "show", "--policy"])
            .arg(&policy)
            .args(extra)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        stdout(&output)
    };
    let text = show(&[]);
    assert!(text.contains("[limits]"), "{text}");
    assert!(text.contains("memory = \"512m\""), "{text}");
    assert!(text.contains("pids = 1024"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&show(&["--json"])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["limits"]["pids"], 1024);
}

#[test]
fn the_command_starts_with_default_signal_dispositions() {
    // hardbox ignores SIGPIPE for itself; the command must not inherit that (`yes | head`
    // would then get EPIPE errors instead of ending by the signal), nor a blocked mask.
    let dir = workspace();
    let out = probe(
        dir.path(),
        &[],
        "grep -E '^Sig(Ign|Blk):' /proc/self/status",
    );
    let mask = |field: &str| {
        let line = out.lines().find(|line| line.starts_with(field)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    const SIGPIPE_BIT: u64 = 1 << (13 - 1);
    assert_eq!(mask("SigIgn:") & SIGPIPE_BIT, 0, "SIGPIPE ignored: {out}");
    assert_eq!(mask("SigBlk:"), 0, "signals blocked: {out}");
}

#[test]
fn closed_standard_descriptors_are_opened_on_dev_null() {
    // With stdout closed, the first file hardbox opened would otherwise become its stdout;
    // a print to a closed stdout would be an error. Either way it must exit 0 here.
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' version >&- 2>&- <&-",
            env!("CARGO_BIN_EXE_hardbox")
        ))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}
