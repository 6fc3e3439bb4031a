//! End-to-end tests of `hardbox run IMAGE`: a static busybox image made with
//! `scripts/make-oci-layout`, imported with the binary, run on an overlay of the store's
//! rootfs cache. They need root (CI runs as root) and say so when they do not have it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

const BUSYBOX: &str = "/bin/busybox";

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests run the sandbox as root (CI does): run them with sudo"
    );
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sha256(path: &Path) -> String {
    let output = Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("sha256sum: {e}"));
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("sha256sum printed nothing"))
        .to_owned()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes `value` as a blob of `layout`, returning its digest hex and size.
fn put_blob(layout: &Path, value: &Value) -> (String, u64) {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|e| panic!("{e}"));
    let staging = layout.join("blob.tmp");
    std::fs::write(&staging, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let hex = sha256(&staging);
    std::fs::rename(&staging, layout.join("blobs/sha256").join(&hex))
        .unwrap_or_else(|e| panic!("{e}"));
    (hex, bytes.len() as u64)
}

/// Replaces the run config (`config.config`) of the layout's only image.
fn set_run_config(layout: &Path, run_config: Value) {
    let index_path = layout.join("index.json");
    let mut index = read_json(&index_path);
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no manifest in {index}"))
        .trim_start_matches("sha256:")
        .to_owned();
    let mut manifest = read_json(&layout.join("blobs/sha256").join(&manifest_digest));
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no config in {manifest}"))
        .trim_start_matches("sha256:")
        .to_owned();
    let mut config = read_json(&layout.join("blobs/sha256").join(&config_digest));
    config["config"] = run_config;
    let (hex, size) = put_blob(layout, &config);
    manifest["config"]["digest"] = json!(format!("sha256:{hex}"));
    manifest["config"]["size"] = json!(size);
    let (hex, size) = put_blob(layout, &manifest);
    index["manifests"][0]["digest"] = json!(format!("sha256:{hex}"));
    index["manifests"][0]["size"] = json!(size);
    std::fs::write(
        &index_path,
        serde_json::to_vec(&index).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// A store holding `img:1`: a static busybox, `/bin/sh`, an `/etc/passwd` with `app` (1000).
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(run_config: Option<Value>) -> Fixture {
        require_root();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let rootfs = dir.path().join("rootfs");
        for sub in ["bin", "etc"] {
            std::fs::create_dir_all(rootfs.join(sub)).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::copy(BUSYBOX, rootfs.join("bin/busybox"))
            .unwrap_or_else(|e| panic!("{BUSYBOX}: {e} (scripts/test installs busybox-static)"));
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh"))
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\nstaff:x:50:\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let layout = dir.path().join("layout");
        let status = Command::new(repository().join("scripts/make-oci-layout"))
            .arg(&rootfs)
            .arg(&layout)
            .args(["img:1", "none"])
            .status()
            .unwrap_or_else(|e| panic!("make-oci-layout: {e}"));
        assert!(status.success(), "make-oci-layout failed");
        if let Some(run_config) = run_config {
            set_run_config(&layout, run_config);
        }
        let fixture = Fixture { dir };
        let output = fixture.hardbox(&[
            "image",
            "import",
            layout.to_str().unwrap_or_else(|| panic!("path")),
        ]);
        assert!(output.status.success(), "import: {}", stderr(&output));
        fixture
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn hardbox(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_hardbox"))
            .args(args)
            .env("HARDBOX_ROOT", self.store())
            .env("PATH", "/host/only/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("failed to run hardbox: {e}"))
    }

    /// `hardbox run OPTIONS img:1 -- busybox sh -c SCRIPT`.
    fn run(&self, options: &[&str], script: &str) -> Output {
        let mut args = vec!["run"];
        args.extend_from_slice(options);
        args.extend_from_slice(&["img:1", "--", "/bin/busybox", "sh", "-c", script]);
        self.hardbox(&args)
    }

    fn probe(&self, options: &[&str], script: &str) -> String {
        let output = self.run(options, script);
        assert_eq!(
            output.status.code(),
            Some(0),
            "script {script:?} failed\nstdout: {}\nstderr: {}",
            stdout(&output),
            stderr(&output)
        );
        stdout(&output)
    }

    /// Every path under the store's rootfs directory with its size, sorted.
    fn cache_listing(&self) -> Vec<(PathBuf, u64)> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<(PathBuf, u64)>) {
            let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{e}"));
            for entry in entries {
                let entry = entry.unwrap_or_else(|e| panic!("{e}"));
                let path = entry.path();
                let metadata = std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{e}"));
                let relative = path.strip_prefix(base).unwrap_or(&path).to_owned();
                out.push((relative, metadata.len()));
                if metadata.is_dir() {
                    walk(&path, base, out);
                }
            }
        }
        let base = self.store().join("rootfs");
        let mut out = Vec::new();
        walk(&base, &base, &mut out);
        out.sort();
        out
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn writes_land_in_a_discarded_upper_and_never_in_the_cache() {
    let fixture = Fixture::new(None);
    let out = fixture.probe(&[], "echo hi > /x; cat /x; id -u");
    assert_eq!(out, "hi\n0\n");
    let cache = fixture.cache_listing();
    assert!(
        cache.iter().all(|(path, _)| !path.ends_with("x")),
        "/x reached the cache: {cache:?}"
    );
    assert!(
        cache
            .iter()
            .all(|(path, _)| !path.to_string_lossy().starts_with(".s")),
        "a scratch or staging directory was left behind: {cache:?}"
    );
    let out = fixture.probe(&[], "test -e /x && echo present || echo absent");
    assert_eq!(out, "absent\n");
    assert_eq!(fixture.cache_listing(), cache, "the cache changed");
}

#[test]
fn the_command_exit_code_propagates() {
    let fixture = Fixture::new(None);
    let output = fixture.run(&[], "exit 3");
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
}

#[test]
fn image_env_cmd_and_working_dir_apply_when_no_command_is_given() {
    let fixture = Fixture::new(Some(json!({
        "Env": ["PATH=/bin", "GREETING=hello"],
        "Cmd": ["/bin/busybox", "sh", "-c", "echo $GREETING $PATH; pwd"],
        "WorkingDir": "/srv/app",
    })));
    let output = fixture.hardbox(&["run", "img:1"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "hello /bin\n/srv/app\n");

    // -e and -w win over the image's.
    let output = fixture.hardbox(&["run", "-e", "GREETING=bye", "-w", "/tmp", "img:1"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "bye /bin\n/tmp\n");

    // A command replaces Cmd.
    let out = fixture.probe(&[], "echo replaced");
    assert_eq!(out, "replaced\n");
}

#[test]
fn an_entrypoint_gets_the_command_as_arguments() {
    let fixture = Fixture::new(Some(json!({
        "Entrypoint": ["/bin/busybox", "echo", "entry"],
        "Cmd": ["default"],
    })));
    let output = fixture.hardbox(&["run", "img:1"]);
    assert_eq!(stdout(&output), "entry default\n", "{}", stderr(&output));
    let output = fixture.hardbox(&["run", "img:1", "--", "given"]);
    assert_eq!(stdout(&output), "entry given\n", "{}", stderr(&output));
}

#[test]
fn read_only_image_refuses_writes_with_erofs() {
    let fixture = Fixture::new(None);
    let output = fixture.run(&["--read-only"], "echo hi > /x");
    assert_ne!(output.status.code(), Some(0));
    assert!(
        stderr(&output).contains("Read-only file system"),
        "{}",
        stderr(&output)
    );
    // /tmp stays writable.
    let out = fixture.probe(&["--read-only"], "echo ok > /tmp/y; cat /tmp/y");
    assert_eq!(out, "ok\n");
}

#[test]
fn only_the_sandboxs_processes_are_visible_and_pid_1_is_init() {
    let fixture = Fixture::new(None);
    let out = fixture.probe(
        &[],
        "echo $$; ls /proc | grep -c '^[0-9]'; tr '\\0' ' ' < /proc/1/cmdline",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "2", "the command is not pid 2: {out}");
    let processes: u32 = lines[1].parse().unwrap_or_else(|e| panic!("{out}: {e}"));
    assert!(processes <= 4, "host processes visible: {out}");
    // pid 1 is hardbox's init (a fork of the binary), not the command.
    assert!(
        lines[2].starts_with(env!("CARGO_BIN_EXE_hardbox")),
        "pid 1 is not init: {}",
        lines[2]
    );
}

#[test]
fn the_command_has_no_capabilities() {
    let fixture = Fixture::new(None);
    let out = fixture.probe(&[], "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    for line in lines {
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
}

#[test]
fn user_names_resolve_in_the_image_passwd_and_unknown_names_are_refused() {
    let fixture = Fixture::new(None);
    let out = fixture.probe(&["--user", "app"], "id -u; id -g");
    assert_eq!(out, "1000\n1001\n");
    let out = fixture.probe(&["--user", "app:staff"], "id -g");
    assert_eq!(out, "50\n");
    let output = fixture.run(&["--user", "ghost"], "true");
    assert_eq!(output.status.code(), Some(125));
    assert!(
        stderr(&output).contains("no user \"ghost\" in the image's /etc/passwd"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn unknown_image_exits_125_naming_it_with_a_hint() {
    let fixture = Fixture::new(None);
    let output = fixture.hardbox(&["run", "missing:9", "--", "true"]);
    assert_eq!(output.status.code(), Some(125));
    let err = stderr(&output);
    assert!(err.contains("missing:9"), "{err}");
    assert!(err.contains("hardbox image ls"), "{err}");
    assert!(err.contains("hardbox image import"), "{err}");
}
