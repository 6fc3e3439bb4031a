//! End-to-end tests of long-lived sandboxes: `create`, `exec`, `ls`, `stop`, `start`, `rm`,
//! `logs`, `cp`, `diff`, `port`, `events` and `save`, with the real binary on a static busybox
//! image made with `scripts/make-oci-layout`, as root (CI runs as root) and rootless.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{repo_root, require_root, require_tool};
use serde_json::Value;

const BUSYBOX: &str = "/bin/busybox";
const NOBODY: &str = "65534";

/// A store holding `img:1` (static busybox, `/bin/sh`, `/etc/passwd`, `/etc/group`) and a
/// workspace, owned by `owner` when the tests run rootless.
struct Fixture {
    dir: tempfile::TempDir,
    rootless: bool,
}

impl Fixture {
    fn new(rootless: bool) -> Fixture {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let rootfs = dir.path().join("rootfs");
        for sub in ["bin", "etc", "data"] {
            std::fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        std::fs::copy(BUSYBOX, rootfs.join("bin/busybox"))
            .unwrap_or_else(|e| panic!("{BUSYBOX}: {e} (scripts/test installs busybox-static)"));
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\n").unwrap();
        std::fs::write(rootfs.join("data/keep"), "kept\n").unwrap();
        std::fs::write(rootfs.join("data/gone"), "deleted later\n").unwrap();
        let layout = dir.path().join("layout");
        let status = Command::new(repo_root().join("scripts/make-oci-layout"))
            .arg(&rootfs)
            .arg(&layout)
            .args(["img:1", "none"])
            .status()
            .unwrap();
        assert!(status.success(), "make-oci-layout failed");
        std::fs::create_dir(dir.path().join("store")).unwrap();
        std::fs::create_dir(dir.path().join("workspace")).unwrap();
        if rootless {
            for path in ["store", "workspace", "layout"] {
                chown_tree(&dir.path().join(path));
            }
        }
        let fixture = Fixture { dir, rootless };
        let output = fixture.hardbox(&["image", "import", layout.to_str().unwrap()]);
        assert!(output.status.success(), "import: {}", text(&output.stderr));
        fixture
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    fn command(&self) -> Command {
        let mut cmd = if self.rootless {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--"])
                .arg(env!("CARGO_BIN_EXE_hardbox"));
            cmd.env("HOME", "/nonexistent");
            cmd
        } else {
            Command::new(env!("CARGO_BIN_EXE_hardbox"))
        };
        cmd.arg("--root").arg(self.store());
        cmd.current_dir(self.workspace());
        cmd.stdin(Stdio::null());
        cmd
    }

    fn hardbox(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.hardbox(args);
        assert!(
            output.status.success(),
            "hardbox {args:?} failed with {}\nstdout: {}\nstderr: {}",
            output.status,
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    /// `exec NAME -- /bin/busybox sh -c SCRIPT`.
    fn sh(&self, name: &str, script: &str) -> Output {
        self.hardbox(&["exec", name, "--", "/bin/busybox", "sh", "-c", script])
    }

    fn sh_ok(&self, name: &str, script: &str) -> String {
        let output = self.sh(name, script);
        assert_eq!(
            output.status.code(),
            Some(0),
            "script {script:?} failed\nstdout: {}\nstderr: {}",
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    fn listed(&self) -> Vec<Value> {
        let out = self.ok(&["ls", "--json"]);
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn state_of(&self, name: &str) -> Option<String> {
        self.listed()
            .into_iter()
            .find(|sandbox| sandbox["name"] == name)
            .map(|sandbox| sandbox["state"].as_str().unwrap().to_owned())
    }

    /// SIGKILLs the supervisor of sandbox `name` (the parent of its init).
    fn kill_supervisor(&self, name: &str) {
        let record = self
            .listed()
            .into_iter()
            .find(|sandbox| sandbox["name"] == name)
            .unwrap();
        let init = record["init_pid"].as_u64().unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{init}/stat")).unwrap();
        let ppid: i32 = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(ppid).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
    }

    fn events(&self, name: &str) -> Vec<Value> {
        self.ok(&["events", name, "--json"])
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

fn chown_tree(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every process whose environment names `marker` (the sandbox's processes carry it).
fn processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) {
            if environ
                .split(|byte| *byte == 0)
                .any(|entry| entry == format!("MARKER={marker}").as_bytes())
            {
                found.push(pid);
            }
        }
    }
    found
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lifecycle(rootless: bool) {
    let fixture = Fixture::new(rootless);
    let name = fixture.ok(&["create", "--name", "box", "-e", "MARKER=lifecycle", "img:1"]);
    assert_eq!(name.trim(), "box");
    assert_eq!(fixture.state_of("box").as_deref(), Some("running"));

    // exec: output, exit codes, environment, working directory, not found.
    assert_eq!(fixture.sh_ok("box", "echo hello; id -u"), "hello\n0\n");
    assert_eq!(fixture.sh("box", "exit 7").status.code(), Some(7));
    assert_eq!(fixture.sh_ok("box", "echo $MARKER $EXTRA"), "lifecycle\n");
    let out = fixture.ok(&[
        "exec",
        "-e",
        "EXTRA=x",
        "-w",
        "/data",
        "box",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "echo $EXTRA; pwd; cat keep",
    ]);
    assert_eq!(out, "x\n/data\nkept\n");
    let missing = fixture.hardbox(&["exec", "box", "--", "/no/such/program"]);
    assert_eq!(
        missing.status.code(),
        Some(127),
        "{}",
        text(&missing.stderr)
    );
    // stdin is passed through with -i.
    let mut child = fixture
        .command()
        .args(["exec", "-i", "box", "--", "/bin/busybox", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"piped\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(text(&output.stdout), "piped\n");
    // Without its name link (the index is only a shortcut), and by id, exec still finds it.
    assert_eq!(names_left(&fixture), vec!["box".to_owned()]);
    std::fs::remove_file(fixture.store().join("names/box")).unwrap();
    assert_eq!(fixture.sh_ok("box", "echo unindexed"), "unindexed\n");
    let id = fixture.ok(&["ls", "-q"]);
    assert_eq!(fixture.sh_ok(id.trim(), "echo by-id"), "by-id\n");
    // The exec'd command is as confined as run's: no capabilities, seccomp, no_new_privs,
    // and it shares the sandbox's pid namespace (init is pid 1).
    let status = fixture.sh_ok(
        "box",
        "grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status; cat /proc/1/comm",
    );
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");

    // Files persist across stop and start; stop ends every process of the sandbox.
    fixture.sh_ok("box", "echo persisted > /data/new; rm /data/gone");
    fixture.sh_ok("box", "/bin/busybox sleep 1000 >/dev/null 2>&1 &");
    assert!(!processes_with("lifecycle").is_empty());
    fixture.ok(&["stop", "box"]);
    assert_eq!(fixture.state_of("box").as_deref(), Some("stopped"));
    assert!(
        processes_with("lifecycle").is_empty(),
        "processes left after stop"
    );
    let refused = fixture.sh("box", "true");
    assert_eq!(refused.status.code(), Some(125));
    assert!(
        text(&refused.stderr).contains("not running"),
        "{}",
        text(&refused.stderr)
    );
    fixture.ok(&["start", "box"]);
    assert_eq!(
        fixture.sh_ok("box", "cat /data/new; ls /data"),
        "persisted\nkeep\nnew\n"
    );

    // diff against the image.
    let diff = fixture.ok(&["diff", "box"]);
    assert!(diff.lines().any(|line| line == "A /data/new"), "{diff}");
    assert!(diff.lines().any(|line| line == "D /data/gone"), "{diff}");

    // rm refuses a running sandbox without -f, then removes everything.
    let refused = fixture.hardbox(&["rm", "box"]);
    assert!(!refused.status.success());
    fixture.ok(&["rm", "-f", "box"]);
    assert!(fixture.listed().is_empty());
    assert!(
        processes_with("lifecycle").is_empty(),
        "processes left after rm"
    );
    let sandboxes = fixture.store().join("sandboxes");
    let left: Vec<_> = std::fs::read_dir(&sandboxes)
        .map(|dir| dir.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", sandboxes.display());
    assert_eq!(
        names_left(&fixture),
        Vec::<String>::new(),
        "name links left"
    );
}

/// The entries of the store's name index.
fn names_left(fixture: &Fixture) -> Vec<String> {
    std::fs::read_dir(fixture.store().join("names"))
        .map(|dir| {
            dir.flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn create_exec_stop_start_rm_as_root() {
    lifecycle(false);
}

#[test]
fn create_exec_stop_start_rm_rootless() {
    lifecycle(true);
}

#[test]
fn names_are_unique_and_a_failed_create_leaves_nothing() {
    let fixture = Fixture::new(false);
    fixture.ok(&["create", "--name", "one", "img:1"]);
    let again = fixture.hardbox(&["create", "--name", "one", "img:1"]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("one"),
        "{}",
        text(&again.stderr)
    );
    let missing = fixture.hardbox(&["create", "--name", "two", "img:1", "--", "/no/such"]);
    assert_eq!(
        missing.status.code(),
        Some(127),
        "{}",
        text(&missing.stderr)
    );
    let names: Vec<String> = fixture
        .listed()
        .iter()
        .map(|sandbox| sandbox["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["one"]);
    fixture.ok(&["rm", "-f", "one"]);
}

#[test]
fn a_main_command_runs_logs_and_stops_the_sandbox_when_it_ends() {
    let fixture = Fixture::new(false);
    fixture.ok(&[
        "create",
        "--name",
        "job",
        "img:1",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "echo started; echo err >&2; exit 4",
    ]);
    wait_until("the job stopped", || {
        fixture.state_of("job").as_deref() == Some("stopped")
    });
    let logs = fixture.ok(&["logs", "job"]);
    assert!(
        logs.contains("started\n") && logs.contains("err\n"),
        "{logs}"
    );
    let sandbox = fixture
        .listed()
        .into_iter()
        .find(|sandbox| sandbox["name"] == "job")
        .unwrap();
    assert_eq!(sandbox["exit_code"], 4);
    fixture.ok(&["rm", "job"]);
}

#[test]
fn system_gc_spares_the_cgroups_of_a_sandbox_run_by_a_binary_of_another_name() {
    // The owner of a cgroup is known by its pid and start time, not by being called hardbox.
    let fixture = Fixture::new(false);
    let copy = fixture.dir.path().join("hb-copy");
    std::fs::copy(env!("CARGO_BIN_EXE_hardbox"), &copy).unwrap();
    let created = Command::new(&copy)
        .arg("--root")
        .arg(fixture.store())
        .current_dir(fixture.workspace())
        .stdin(Stdio::null())
        .args(["create", "--name", "renamed", "img:1"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", text(&created.stderr));
    fixture.ok(&["system", "gc"]);
    assert_eq!(fixture.sh_ok("renamed", "echo alive"), "alive\n");
    fixture.ok(&["rm", "-f", "renamed"]);
}

#[test]
fn a_killed_supervisor_takes_its_sandbox_down_and_ls_tells_the_truth() {
    let fixture = Fixture::new(false);
    fixture.ok(&["create", "--name", "victim", "-e", "MARKER=victim", "img:1"]);
    fixture.sh_ok("victim", "/bin/busybox sleep 1000 >/dev/null 2>&1 &");
    assert!(!processes_with("victim").is_empty());
    fixture.kill_supervisor("victim");
    wait_until("the sandbox's processes are gone", || {
        processes_with("victim").is_empty()
    });
    // init holds the supervisor's lock too (it is a fork of the supervisor) and releases it
    // as it exits; on a loaded host that can trail the last process's end by a moment.
    wait_until("ls says the sandbox stopped", || {
        fixture.state_of("victim").as_deref() == Some("stopped")
    });
    fixture.ok(&["start", "victim"]);
    fixture.sh_ok("victim", "true");
    fixture.ok(&["rm", "-f", "victim"]);
    assert!(processes_with("victim").is_empty());
}

#[test]
fn events_record_execs_exits_files_and_the_lifecycle() {
    let fixture = Fixture::new(false);
    fixture.ok(&["create", "--name", "watched", "img:1"]);
    fixture.sh_ok(
        "watched",
        "/bin/busybox true; echo data > /data/written; exit 0",
    );
    let _ = fixture.sh("watched", "exit 3");
    // The caller's trace context links the exec to its trace and reaches the command.
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let traced = fixture
        .command()
        .env("TRACEPARENT", TRACEPARENT)
        .args([
            "exec",
            "watched",
            "--",
            "/bin/busybox",
            "sh",
            "-c",
            "echo $TRACEPARENT",
        ])
        .output()
        .unwrap();
    assert_eq!(text(&traced.stdout), format!("{TRACEPARENT}\n"));
    fixture.ok(&["stop", "watched"]);
    let events = fixture.events("watched");
    let named = |name: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|event| event["event.name"] == name)
            .collect()
    };
    let execs = named("hardbox.process.exec");
    assert!(
        execs
            .iter()
            .any(|event| event["attributes"]["process.command_args"]
                == serde_json::json!(["/bin/busybox", "true"])),
        "no exec of busybox true in {execs:#?}"
    );
    // Every exec'd command is a child of the sandbox's init (pid 1), each time.
    let shells: Vec<&&Value> = execs
        .iter()
        .filter(|event| event["attributes"]["process.command_args"][1] == "sh")
        .collect();
    assert_eq!(shells.len(), 3, "{execs:#?}");
    for shell in shells {
        assert_eq!(shell["attributes"]["process.parent_pid"], 1, "{shell:#?}");
    }
    let exits = named("hardbox.process.exit");
    assert!(
        exits
            .iter()
            .any(|event| event["attributes"]["process.exit.code"] == 3),
        "no exit 3 in {exits:#?}"
    );
    assert!(
        events.iter().any(|event| event["event.name"]
            .as_str()
            .unwrap()
            .starts_with("hardbox.file.")
            && event["attributes"]["file.path"] == "/data/written"),
        "no file event for /data/written"
    );
    assert!(
        named("hardbox.sandbox.exec")
            .iter()
            .any(|event| event["traceparent"] == TRACEPARENT),
        "no exec linked to the caller's trace"
    );
    let states: Vec<&str> = named("hardbox.sandbox.lifecycle")
        .iter()
        .map(|event| {
            event["attributes"]["hardbox.sandbox.state"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(states, ["started", "stopped"]);
    // As root the execs come from the eBPF programs.
    assert_eq!(
        named("hardbox.sandbox.lifecycle")[0]["attributes"]["hardbox.sensor.exec"],
        "ebpf"
    );
    let sequences: Vec<u64> = events
        .iter()
        .map(|event| event["sequence"].as_u64().unwrap())
        .collect();
    assert!(sequences.windows(2).all(|pair| pair[0] < pair[1]));
    fixture.ok(&["rm", "watched"]);
}

#[test]
fn save_writes_an_image_that_runs_again_and_loads_with_skopeo() {
    require_tool("skopeo");
    let fixture = Fixture::new(false);
    fixture.ok(&["create", "--name", "work", "img:1"]);
    fixture.sh_ok("work", "echo saved > /data/new; rm /data/gone");
    let archive = fixture.dir.path().join("saved.tar");
    let digest = fixture.ok(&[
        "save",
        "work",
        "saved:1",
        "-o",
        archive.to_str().unwrap(),
        "--format",
        "docker-archive",
    ]);
    assert!(digest.trim().starts_with("sha256:"), "{digest}");
    let out = fixture.ok(&[
        "run",
        "saved:1",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "cat /data/new; ls /data",
    ]);
    assert_eq!(out, "saved\nkeep\nnew\n");
    let oci = fixture.dir.path().join("oci");
    let status = Command::new("skopeo")
        .args([
            "copy",
            &format!("docker-archive:{}", archive.display()),
            &format!("oci:{}:saved", oci.display()),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "skopeo could not load the docker-archive");
    let inspect: Value =
        serde_json::from_str(&fixture.ok(&["image", "inspect", "--json", "saved:1"])).unwrap();
    let config_digest = inspect["config_digest"].as_str().unwrap();
    let config_path = fixture
        .store()
        .join("blobs/sha256")
        .join(config_digest.trim_start_matches("sha256:"));
    let config: Value = serde_json::from_slice(&std::fs::read(config_path).unwrap()).unwrap();
    let labels = &config["config"]["Labels"];
    assert!(
        labels["io.hardbox.policy.digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{labels}"
    );
    assert!(
        labels["org.opencontainers.image.base.digest"].is_string(),
        "{labels}"
    );
    fixture.ok(&["rm", "-f", "work"]);
}

#[test]
fn host_sandboxes_work_in_the_workspace_and_cp_copies_both_ways() {
    let fixture = Fixture::new(false);
    let workspace = fixture.workspace();
    fixture.ok(&[
        "create",
        "--name",
        "dev",
        "--host",
        "--workspace",
        workspace.to_str().unwrap(),
    ]);
    let script = format!("echo made > {}/made.txt", workspace.display());
    fixture.ok(&["exec", "dev", "--", "/bin/sh", "-c", &script]);
    assert_eq!(
        std::fs::read_to_string(workspace.join("made.txt")).unwrap(),
        "made\n"
    );
    let diff = fixture.ok(&["diff", "dev"]);
    assert!(
        diff.contains(&format!("A {}/made.txt", workspace.display())),
        "{diff}"
    );
    let outside = fixture.dir.path().join("outside.txt");
    std::fs::write(&outside, "copied in\n").unwrap();
    fixture.ok(&["cp", outside.to_str().unwrap(), "dev:/tmp/in.txt"]);
    assert_eq!(
        fixture.ok(&["exec", "dev", "--", "/bin/cat", "/tmp/in.txt"]),
        "copied in\n"
    );
    let back = fixture.dir.path().join("back.txt");
    fixture.ok(&["cp", "dev:/tmp/in.txt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied in\n");
    fixture.ok(&["rm", "-f", "dev"]);
}

/// Create, exec, stop and remove many times, half of the rounds with the supervisor or the
/// command killed by SIGKILL: nothing may be left behind.
#[test]
fn many_cycles_with_kills_leave_nothing_behind() {
    let cycles: usize = std::env::var("HARDBOX_LIFECYCLE_CYCLES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(500);
    let fixture = Fixture::new(false);
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    for round in 0..cycles {
        let name = format!("cycle{round}");
        fixture.ok(&["create", "--name", &name, "-e", "MARKER=cycles", "img:1"]);
        match round % 4 {
            0 | 1 => {
                fixture.sh_ok(&name, "echo x > /data/x");
                fixture.ok(&["stop", "-t", "1", &name]);
            }
            2 => {
                // The command killed mid-run: exec reports 137.
                let mut child = fixture
                    .command()
                    .args(["exec", &name, "--", "/bin/busybox", "sleep", "30"])
                    .spawn()
                    .unwrap();
                wait_until("sleep runs", || !processes_with("cycles").is_empty());
                // Only the exec'd sleep carries the sandbox's environment.
                for pid in processes_with("cycles") {
                    let _ = rustix::process::kill_process(
                        rustix::process::Pid::from_raw(pid as i32).unwrap(),
                        rustix::process::Signal::KILL,
                    );
                }
                assert_eq!(child.wait().unwrap().code(), Some(137));
            }
            _ => {
                // The supervisor killed.
                fixture.kill_supervisor(&name);
            }
        }
        fixture.ok(&["rm", "-f", &name]);
    }
    wait_until("every sandbox process is gone", || {
        processes_with("cycles").is_empty()
    });
    assert!(fixture.listed().is_empty());
    let mounts_after = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    assert_eq!(mounts_before, mounts_after, "mounts leaked");
    fixture.ok(&["system", "gc"]);
    fixture.ok(&["system", "fsck"]);
    let sandboxes: Vec<_> = std::fs::read_dir(fixture.store().join("sandboxes"))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        sandboxes.is_empty(),
        "sandbox directories left: {sandboxes:?}"
    );
    assert_eq!(
        names_left(&fixture),
        Vec::<String>::new(),
        "name links left"
    );
    // Cgroups of sandboxes whose supervisor is gone (other tests' running sandboxes have
    // cgroups of their own, named after their live supervisor). Only the parents hardbox uses
    // (under this process's own cgroups) are looked at: a hierarchy can show other machines'.
    let host = cgroup::Host::detect().unwrap();
    let mut cgroups = String::new();
    for parent in host
        .unified
        .iter()
        .chain(&host.legacy)
        .filter_map(|hierarchy| hierarchy.parent.as_ref())
    {
        let group = parent.join(cgroup::GROUP_DIRECTORY);
        for entry in std::fs::read_dir(&group).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("run-") && entry.path().is_dir() {
                cgroups.push_str(&format!("{}/{name}\n", group.display()));
            }
        }
    }
    let abandoned: Vec<String> = cgroups
        .lines()
        .filter(|path| {
            let name = path.rsplit('/').next().unwrap_or_default();
            let owner = name
                .trim_start_matches("run-")
                .split('-')
                .next()
                .unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{owner}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some(Some(state)) if state != 'Z' && state != 'X')
        })
        .map(str::to_owned)
        .collect();
    assert_eq!(abandoned, Vec::<String>::new(), "cgroups left");
}

/// The seccomp tracer, which rootless sandboxes use, also records under root when asked for,
/// failed exec attempts included (the eBPF tracer records those too, with their errno).
#[test]
fn the_seccomp_exec_tracer_records_when_asked_for() {
    let fixture = Fixture::new(false);
    let output = fixture
        .command()
        .env("HARDBOX_EXEC_TRACER", "seccomp")
        .args(["create", "--name", "notify", "img:1"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    fixture.sh_ok(
        "notify",
        "/bin/busybox true; /nonexistent 2>/dev/null; exit 0",
    );
    fixture.ok(&["stop", "notify"]);
    let events = fixture.events("notify");
    let started = events
        .iter()
        .find(|event| event["event.name"] == "hardbox.sandbox.lifecycle")
        .unwrap();
    assert_eq!(started["attributes"]["hardbox.sensor.exec"], "seccomp");
    let execs: Vec<&Value> = events
        .iter()
        .filter(|event| event["event.name"] == "hardbox.process.exec")
        .collect();
    for argv in [
        serde_json::json!(["/bin/busybox", "true"]),
        serde_json::json!(["/nonexistent"]),
    ] {
        assert!(
            execs
                .iter()
                .any(|event| event["attributes"]["process.command_args"] == argv),
            "no exec of {argv} in {execs:#?}"
        );
    }
    fixture.ok(&["rm", "notify"]);
}

/// An exec storm: every one of 10,000 short processes shows up as an exec event, nothing is
/// lost, and the sequence numbers have no gap.
#[test]
fn an_exec_storm_of_ten_thousand_processes_is_recorded_whole() {
    let fixture = Fixture::new(false);
    fixture.ok(&["create", "--name", "storm", "img:1"]);
    // busybox's own `true`, exec'd (the image has no /bin/true: the storm would be 10,000
    // failed attempts).
    fixture.sh_ok(
        "storm",
        "i=0; while [ $i -lt 10000 ]; do /bin/busybox true; i=$((i+1)); done",
    );
    fixture.ok(&["stop", "storm"]);
    let events = fixture.events("storm");
    let trues = events
        .iter()
        .filter(|event| {
            event["event.name"] == "hardbox.process.exec"
                && event["attributes"]["process.command_args"]
                    == serde_json::json!(["/bin/busybox", "true"])
        })
        .count();
    assert_eq!(trues, 10_000);
    let losses: Vec<&Value> = events
        .iter()
        .filter(|event| event["event.name"] == "hardbox.sensor.loss")
        .collect();
    assert!(losses.is_empty(), "events were lost: {losses:?}");
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event["sequence"].as_u64(), Some(index as u64 + 1));
    }
    fixture.ok(&["rm", "storm"]);
}

/// `--otlp-endpoint`: the sandbox's events reach a collector that decodes them with the
/// official OpenTelemetry protobuf definitions, with the sandbox as the resource.
#[test]
fn events_are_exported_as_otlp_logs() {
    use std::io::BufRead;
    let fixture = Fixture::new(false);
    let script = repo_root().join("crates/events/tests/otlp_receiver.py");
    let mut receiver = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(receiver.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let port: u16 = line
        .strip_prefix("PORT ")
        .and_then(|port| port.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!("the OTLP receiver did not start (pip install opentelemetry-proto): {line:?}")
        });
    let endpoint = format!("http://127.0.0.1:{port}");
    fixture.ok(&[
        "create",
        "--name",
        "otlp",
        "--otlp-endpoint",
        &endpoint,
        "img:1",
    ]);
    fixture.sh_ok("otlp", "/bin/busybox echo exported");
    fixture.ok(&["stop", "otlp"]);
    drop(receiver.stdin.take());
    let requests: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(&line.unwrap()).unwrap())
        .collect();
    assert!(receiver.wait().unwrap().success());
    let mut names = Vec::new();
    let mut echoed = false;
    for request in &requests {
        assert!(request.get("decode_error").is_none(), "{request}");
        for resource_logs in request["resource_logs"].as_array().unwrap() {
            assert_eq!(resource_logs["resource"]["hardbox.sandbox.name"], "otlp");
            for record in resource_logs["records"].as_array().unwrap() {
                let name = record["event_name"].as_str().unwrap().to_owned();
                if name == "hardbox.process.exec"
                    && record["attributes"]["process.command_args"]
                        == serde_json::json!(["/bin/busybox", "echo", "exported"])
                {
                    echoed = true;
                }
                names.push(name);
            }
        }
    }
    assert!(echoed, "no exec record of the command in {names:?}");
    assert!(
        names.iter().any(|name| name == "hardbox.sandbox.lifecycle"),
        "{names:?}"
    );
    fixture.ok(&["rm", "otlp"]);
}

/// Limit hits are events: forks the pids limit refuses, a process the memory limit's OOM
/// killer ends (and its exec reports 137).
#[test]
fn resource_limit_hits_are_recorded() {
    let fixture = Fixture::new(false);
    fixture.ok(&[
        "create",
        "--name",
        "limited",
        "--pids-limit",
        "16",
        "--memory",
        "64m",
        "img:1",
    ]);
    let _ = fixture.sh(
        "limited",
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24; do /bin/busybox sleep 2 & done; wait",
    );
    let hog = fixture.sh(
        "limited",
        "x=$(/bin/busybox head -c 200000000 /dev/zero | /bin/busybox tr '\\0' a); echo survived",
    );
    assert_eq!(hog.status.code(), Some(137), "{}", text(&hog.stdout));
    fixture.ok(&["stop", "limited"]);
    let events = fixture.events("limited");
    let hits: Vec<String> = events
        .iter()
        .filter(|event| event["event.name"] == "hardbox.resource.limit")
        .map(|event| {
            event["attributes"]["hardbox.resource.name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(hits.iter().any(|name| name == "pids"), "{hits:?}");
    assert!(hits.iter().any(|name| name == "memory"), "{hits:?}");
    fixture.ok(&["rm", "limited"]);
}
