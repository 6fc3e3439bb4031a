//! Limits enforced by the real kernel, on this host's own cgroup layout (hybrid on the
//! development machine and CI: the limits go to v1, processes are also tracked in v2), and on
//! the same host seen as pure v1 (the cgroup2 mount left out of the mountinfo text).
//!
//! These tests need root and assert it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on the first unexpected error"
)]

mod common;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cgroup::{Cgroup, Controller, CreateError, Host, HostCgroups, Limits, Mode, Version};
use common::{gated, gated_shell, read, release_into, require_root, unique_name, wait_until_empty};

/// This host seen without its cgroup2 mount: a pure v1 host.
fn host_as_pure_v1() -> HostCgroups {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let without_v2: String = mountinfo
        .lines()
        .filter(|line| !line.contains(" - cgroup2 "))
        .map(|line| format!("{line}\n"))
        .collect();
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let host = Host::from_text(&without_v2, &proc_cgroup, None).unwrap();
    assert_eq!(host.mode, Mode::Legacy, "{host:#?}");
    host
}

fn python() -> PathBuf {
    let system = Path::new("/usr/bin/python3");
    if system.exists() {
        system.to_owned()
    } else {
        PathBuf::from("python3")
    }
}

#[test]
fn pids_limit_stops_forks_beyond_it() {
    require_root();
    let host = Host::detect().unwrap();
    let limits = Limits {
        pids: Some(8),
        ..Limits::default()
    };
    let mut group = Cgroup::create(&host, &unique_name("pids"), &limits).unwrap();
    let (_, directory) = group.directory_of(Controller::Pids).unwrap();
    assert_eq!(read(&directory.join("pids.max")), "8");

    // Only `sleep` forks: `[`, `echo` and arithmetic are shell builtins. The shell is one of
    // the 8, so at most 7 sleeps start; the shell stops (or goes on) when fork fails.
    let mut child = gated_shell(
        "i=0; while [ $i -lt 32 ]; do sleep 1000 >/dev/null 2>&1 & echo started; i=$((i+1)); done",
    );
    release_into(&group, &mut child);
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let started = stdout.lines().filter(|l| *l == "started").count();

    assert!(
        (1..=7).contains(&started),
        "{started} sleeps started under pids.max=8 ({status}, stderr {stderr:?})"
    );
    assert!(
        stderr.to_lowercase().contains("fork"),
        "the shell did not report a failed fork: {stderr:?}"
    );
    assert!(
        group.pids_denied().unwrap() >= 1,
        "pids.events counted no refused fork"
    );
    assert!(group.pids_current().unwrap() <= 8);
    assert_eq!(group.processes().unwrap().len(), started);

    group.kill_all().unwrap();
    wait_until_empty(&group);
    group.remove().unwrap();
}

#[test]
fn memory_hog_is_oom_killed_and_counted() {
    require_root();
    let host = Host::detect().unwrap();
    let limits = Limits {
        memory_bytes: Some(64 << 20),
        ..Limits::default()
    };
    let mut group = Cgroup::create(&host, &unique_name("memory"), &limits).unwrap();
    let (version, directory) = group.directory_of(Controller::Memory).unwrap();
    match version {
        Version::V1 => {
            assert_eq!(read(&directory.join("memory.limit_in_bytes")), "67108864");
            let memsw = directory.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                assert_eq!(read(&memsw), "67108864");
            }
        }
        Version::V2 => {
            assert_eq!(read(&directory.join("memory.max")), "67108864");
            assert_eq!(read(&directory.join("memory.swap.max")), "0");
        }
    }
    assert_eq!(group.oom_kills().unwrap(), 0);

    // 300 MiB of written (not merely reserved) memory.
    let mut child = gated(Command::new(python()).args([
        "-c",
        "import sys; sys.stdin.readline(); b = b'x' * (300 << 20); print(len(b))",
    ]));
    release_into(&group, &mut child);
    let status = child.wait().unwrap();

    assert_eq!(status.signal(), Some(9), "the hog was not killed: {status}");
    assert!(group.oom_kills().unwrap() >= 1, "no OOM kill counted");
    // The test process, outside the cgroup, is alive and can still allocate.
    let survivor = vec![1u8; 1 << 20];
    assert_eq!(survivor.len(), 1 << 20);

    wait_until_empty(&group);
    group.remove().unwrap();
}

#[test]
fn cpu_quota_is_written_as_quota_over_period() {
    require_root();
    let host = Host::detect().unwrap();
    let limits = Limits {
        cpus: Some(0.2),
        ..Limits::default()
    };
    let mut group = Cgroup::create(&host, &unique_name("cpu"), &limits).unwrap();
    let (version, directory) = group.directory_of(Controller::Cpu).unwrap();
    match version {
        Version::V1 => {
            assert_eq!(read(&directory.join("cpu.cfs_quota_us")), "20000");
            assert_eq!(read(&directory.join("cpu.cfs_period_us")), "100000");
        }
        Version::V2 => assert_eq!(read(&directory.join("cpu.max")), "20000 100000"),
    }
    // CPU time is readable (from v2 cpu.stat on hybrid hosts, v1 cpuacct otherwise).
    assert_eq!(group.cpu_usage().unwrap().as_nanos(), 0);
    group.remove().unwrap();
}

#[test]
fn remove_leaves_no_directory_behind() {
    require_root();
    let host = Host::detect().unwrap();
    let limits = Limits {
        memory_bytes: Some(256 << 20),
        pids: Some(64),
        cpus: Some(1.0),
        ..Limits::default()
    };
    let mut group = Cgroup::create(&host, &unique_name("remove"), &limits).unwrap();
    let directories: Vec<PathBuf> = group
        .directories()
        .iter()
        .map(|d| d.to_path_buf())
        .collect();
    // One directory per hierarchy that holds a limit, plus the unified one when usable.
    let mut expected = std::collections::BTreeSet::new();
    for &controller in Controller::ALL {
        expected.insert(group.directory_of(controller).unwrap().1.to_path_buf());
    }
    if host.mode == Mode::Hybrid {
        let unified_mount = &host.unified.as_ref().unwrap().mount_point;
        let unified: Vec<&PathBuf> = directories
            .iter()
            .filter(|d| d.starts_with(unified_mount))
            .collect();
        assert_eq!(unified.len(), 1, "no unified directory in {directories:?}");
        expected.insert(unified[0].clone());
    }
    assert_eq!(directories.len(), expected.len(), "{directories:?}");
    for directory in &directories {
        assert!(
            directory.is_dir(),
            "{} was not created",
            directory.display()
        );
    }

    let mut child = gated_shell("sleep 1000 & sleep 1000 & wait");
    release_into(&group, &mut child);
    let pid = i32::try_from(child.id()).unwrap();
    assert!(group.processes().unwrap().contains(&pid));
    let proc_cgroup = read(Path::new(&format!("/proc/{pid}/cgroup")));
    assert!(
        proc_cgroup.contains(&format!("/hardbox/{}", group.name())),
        "{proc_cgroup}"
    );

    group.kill_all().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    wait_until_empty(&group);
    group.remove().unwrap();
    for directory in &directories {
        assert!(
            !directory.exists(),
            "{} is left behind",
            directory.display()
        );
    }
}

#[test]
fn pure_v1_kills_through_the_freezer_and_cleans_up() {
    require_root();
    let host = host_as_pure_v1();
    let limits = Limits {
        memory_bytes: Some(128 << 20),
        pids: Some(16),
        cpus: Some(0.5),
        ..Limits::default()
    };
    let mut group = Cgroup::create(&host, &unique_name("v1"), &limits).unwrap();
    let directories: Vec<PathBuf> = group
        .directories()
        .iter()
        .map(|d| d.to_path_buf())
        .collect();
    assert!(
        directories
            .iter()
            .any(|d| d.starts_with("/sys/fs/cgroup/freezer")),
        "no freezer directory in {directories:?}"
    );
    for &controller in Controller::ALL {
        assert_eq!(group.directory_of(controller).unwrap().0, Version::V1);
    }
    let (_, cpu) = group.directory_of(Controller::Cpu).unwrap();
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");

    let mut child = gated_shell("sleep 1000 & sleep 1000 & wait");
    release_into(&group, &mut child);
    group.kill_all().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    wait_until_empty(&group);
    let freezer = directories
        .iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/freezer"))
        .unwrap();
    assert_eq!(read(&freezer.join("freezer.state")), "THAWED");
    // cpuacct accounts CPU time when there is no unified hierarchy.
    assert!(group.cpu_usage().is_ok());
    group.remove().unwrap();
    for directory in &directories {
        assert!(
            !directory.exists(),
            "{} is left behind",
            directory.display()
        );
    }
}

#[test]
fn a_limit_that_cannot_be_enforced_fails_closed_and_creates_nothing() {
    require_root();
    // This host without its v1 memory hierarchy: memory can only go to v2, which lacks it here
    // (or anywhere the parent does not offer it).
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let without_memory: String = mountinfo
        .lines()
        .filter(|line| !line.ends_with(",memory"))
        .map(|line| format!("{line}\n"))
        .collect();
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let host = Host::from_text(&without_memory, &proc_cgroup, None).unwrap();
    if host.placement(Controller::Memory).is_ok() {
        panic!("this test expects a host whose unified hierarchy lacks memory: {host:#?}");
    }
    let name = unique_name("closed");
    let limits = Limits {
        pids: Some(8),
        memory_bytes: Some(64 << 20),
        ..Limits::default()
    };
    let err = Cgroup::create(&host, &name, &limits).unwrap_err();
    assert!(
        matches!(
            err,
            CreateError::Unavailable {
                controller: Controller::Memory,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("cannot enforce the memory limit: "),
        "{err}"
    );
    let pids_parent = host.placement(Controller::Pids).unwrap().parent;
    assert!(!pids_parent.join("hardbox").join(&name).exists());
}

#[test]
fn a_second_cgroup_of_the_same_name_is_refused() {
    require_root();
    let host = Host::detect().unwrap();
    let name = unique_name("twice");
    let limits = Limits {
        pids: Some(4),
        ..Limits::default()
    };
    let mut first = Cgroup::create(&host, &name, &limits).unwrap();
    let err = Cgroup::create(&host, &name, &limits).unwrap_err();
    assert!(matches!(err, CreateError::AlreadyExists { .. }), "{err:?}");
    // The failed attempt did not remove the first cgroup's directories.
    for directory in first.directories() {
        assert!(directory.is_dir(), "{} vanished", directory.display());
    }
    first.remove().unwrap();
}

#[test]
fn dropping_a_cgroup_kills_its_processes_and_removes_it() {
    require_root();
    let host = Host::detect().unwrap();
    let limits = Limits {
        pids: Some(16),
        ..Limits::default()
    };
    let group = Cgroup::create(&host, &unique_name("drop"), &limits).unwrap();
    let directories: Vec<PathBuf> = group
        .directories()
        .iter()
        .map(|d| d.to_path_buf())
        .collect();
    let mut child = gated_shell("sleep 1000");
    release_into(&group, &mut child);
    drop(group);
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    for directory in &directories {
        assert!(
            !directory.exists(),
            "{} is left behind",
            directory.display()
        );
    }
}
