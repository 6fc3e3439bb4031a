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
