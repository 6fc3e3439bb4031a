//! The v2 (unified) code path against a real cgroup2 mount.
//!
//! The test mounts cgroup2 at a temporary directory and hands [`Host::from_text`] a mountinfo
//! holding only that mount, so the crate sees a pure v2 host. What this proves on a hybrid host
//! whose v1 hierarchies hold memory, pids and cpu: v2 detection, the `hardbox/<name>` layout,
//! `cgroup.procs` placement, CPU time from `cpu.stat`, `cgroup.kill`, removal, and that asking
//! for a limit the v2 hierarchy does not offer fails closed naming the controller. Where the
//! kernel does offer memory, pids or cpu on v2 (pure v2 hosts), the same test checks that the
//! limit files and `cgroup.subtree_control` are written.
//!
//! These tests need root and assert it.

#![allow(
    clippy::unwrap_used,
    reason = "tests fail loudly on the first unexpected error"
)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use cgroup::{Cgroup, Controller, CreateError, Host, Limits, Mode, UnavailableReason, Version};
use common::{
    gated_shell, read, release_into, require_root, unique_name, wait_until_empty, Cgroup2Mount,
};

#[test]
fn v2_cgroup_tracks_kills_and_removes_processes() {
    require_root();
    let mount = Cgroup2Mount::new();
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let host = Host::from_text(&mount.mountinfo(), &proc_cgroup, None).unwrap();
    assert_eq!(host.mode, Mode::Unified);
    let unified = host.unified.as_ref().unwrap();
    let own = proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap();
    let expected_parent = mount.path().join(own.trim_start_matches('/'));
    assert_eq!(unified.parent.as_deref(), Some(expected_parent.as_path()));
    assert_eq!(unified.version, Version::V2);

    let name = unique_name("v2");
    let mut group = Cgroup::create(&host, &name, &Limits::default()).unwrap();
    let leaf = expected_parent.join("hardbox").join(&name);
    assert_eq!(group.directories(), vec![leaf.as_path()]);
    assert!(leaf.join("cgroup.procs").is_file());

    let mut child = gated_shell("sleep 1000 & sleep 1000 & wait");
    release_into(&group, &mut child);
    let pid = i32::try_from(child.id()).unwrap();
    assert!(group.processes().unwrap().contains(&pid));
    let membership = read(Path::new(&format!("/proc/{pid}/cgroup")));
    let expected_line = format!("0::{}/hardbox/{name}", own.trim_end_matches('/'));
    assert!(
        membership.lines().any(|l| l == expected_line),
        "{expected_line:?} not in {membership}"
    );
    // cpu.stat exists in every v2 cgroup, with or without the cpu controller.
    assert!(group.cpu_usage().is_ok());
    // No pids limit was asked for, so there is no pids count to read.
    assert!(group.pids_current().is_err());

    group.kill_all().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    wait_until_empty(&group);
    group.remove().unwrap();
    assert!(!leaf.exists(), "{} is left behind", leaf.display());
}

#[test]
fn v2_limits_are_written_or_refused_by_what_the_hierarchy_offers() {
    require_root();
    let mount = Cgroup2Mount::new();
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let host = Host::from_text(&mount.mountinfo(), &proc_cgroup, None).unwrap();
    let unified = host.unified.as_ref().unwrap();
    let parent = unified.parent.clone().unwrap();
    let offered: Vec<String> = read(&parent.join("cgroup.controllers"))
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(unified.controllers, offered);

    for &controller in Controller::ALL {
        let limits = match controller {
            Controller::Memory => Limits {
                memory_bytes: Some(64 << 20),
                ..Limits::default()
            },
            Controller::Pids => Limits {
                pids: Some(8),
                ..Limits::default()
            },
            Controller::Cpu => Limits {
                cpus: Some(0.2),
                ..Limits::default()
            },
        };
        let name = unique_name(controller.name());
        let leaf = parent.join("hardbox").join(&name);
        if offered.iter().any(|c| c == controller.name()) {
            let mut group = Cgroup::create(&host, &name, &limits).unwrap();
            assert_eq!(
                group.directory_of(controller),
                Some((Version::V2, leaf.as_path()))
            );
            for directory in [parent.clone(), parent.join("hardbox")] {
                let enabled = read(&directory.join("cgroup.subtree_control"));
                assert!(
                    enabled.split_whitespace().any(|c| c == controller.name()),
                    "{controller} not enabled in {}: {enabled:?}",
                    directory.display()
                );
            }
            let (file, expected) = match controller {
                Controller::Memory => ("memory.max", "67108864"),
                Controller::Pids => ("pids.max", "8"),
                Controller::Cpu => ("cpu.max", "20000 100000"),
            };
            assert_eq!(read(&leaf.join(file)), expected);
            group.remove().unwrap();
        } else {
            let err = Cgroup::create(&host, &name, &limits).unwrap_err();
            let controllers_file = parent.join("cgroup.controllers");
            match &err {
                CreateError::Unavailable {
                    controller: refused,
                    reason: UnavailableReason::NotEnabled { path },
                } => {
                    assert_eq!(*refused, controller);
                    assert_eq!(path, &controllers_file);
                }
                other => panic!("{controller}: expected Unavailable, got {other:?}"),
            }
            assert_eq!(
                err.to_string(),
                format!(
                    "cannot enforce the {controller} limit: the controller is not listed in {}",
                    controllers_file.display()
                )
            );
        }
        assert!(!leaf.exists(), "{} is left behind", leaf.display());
    }
}
