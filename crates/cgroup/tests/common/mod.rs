//! Helpers shared by the kernel tests: root check, unique names, gated children.

#![allow(
    dead_code,
    clippy::unwrap_used,
    reason = "shared by several test binaries; tests fail loudly on the first unexpected error"
)]

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use cgroup::Cgroup;

/// These tests create real cgroups; CI runs them as root.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test creates cgroups and must run as root (euid 0); CI runs it as root"
    );
}

/// A cgroup name no other test (or test run) uses.
pub fn unique_name(what: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "test-{what}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Starts `sh -c script` that waits for a line on stdin before running `script`, so that it
/// can be put in a cgroup before it does anything.
pub fn gated_shell(script: &str) -> Child {
    gated(
        Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("read go; {script}")),
    )
}

/// Starts `command`, which must read one line from stdin before doing its work.
pub fn gated(command: &mut Command) -> Child {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Puts `child` into `group`, then lets it go.
pub fn release_into(group: &Cgroup, child: &mut Child) {
    group.add_process(child.id()).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "go").unwrap();
}

/// Waits (without a clock) until the cgroup holds no process: the kernel finishes killing
/// asynchronously.
pub fn wait_until_empty(group: &Cgroup) {
    for _ in 0..10_000 {
        if group.processes().unwrap().is_empty() {
            return;
        }
        std::thread::yield_now();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!(
        "processes {:?} are still in {:?}",
        group.processes().unwrap(),
        group.directories()
    );
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("failed to read {}: {err}", path.display()))
        .trim()
        .to_owned()
}

/// A cgroup2 file system mounted at a temporary directory for one test, unmounted on drop.
///
/// cgroup2 is one hierarchy per system: this mount shows the same tree as any other cgroup2
/// mount, with the same controllers. On a hybrid host that means the controllers v1 does not
/// hold (often none of memory, pids, cpu).
pub struct Cgroup2Mount {
    directory: tempfile::TempDir,
}

impl Cgroup2Mount {
    pub fn new() -> Cgroup2Mount {
        let directory = tempfile::tempdir().unwrap();
        rustix::mount::mount(
            "hardbox-test",
            directory.path(),
            "cgroup2",
            rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
            None,
        )
        .unwrap_or_else(|err| panic!("failed to mount cgroup2 at {:?}: {err}", directory.path()));
        Cgroup2Mount { directory }
    }

    pub fn path(&self) -> &Path {
        self.directory.path()
    }

    /// This process's `/proc/self/mountinfo` with only this mount in it: the host seen as a pure
    /// v2 host whose hierarchy is mounted here.
    pub fn mountinfo(&self) -> String {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let point = format!(" {} ", self.path().display());
        let lines: Vec<&str> = mountinfo
            .lines()
            .filter(|line| line.contains(" - cgroup2 ") && line.contains(&point))
            .collect();
        assert_eq!(lines.len(), 1, "mount of {:?} not found once", self.path());
        format!("{}\n", lines[0])
    }
}

impl Drop for Cgroup2Mount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(self.path(), rustix::mount::UnmountFlags::DETACH);
    }
}
