#![allow(clippy::unwrap_used, reason = "tests unwrap values known to be valid")]

use super::*;

/// Renders what hardbox would do with each controller on a host, every directory writable.
fn render(mountinfo: &str, proc_cgroup: &str, unified_controllers: &str) -> String {
    let layout = match Layout::parse(mountinfo, proc_cgroup) {
        Ok(layout) => layout,
        Err(err) => return format!("error: {err}"),
    };
    let host = HostCgroups::assemble(
        &layout,
        None,
        |_| {
            unified_controllers
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        },
        |_| ParentState::Writable,
        true,
        |_| true,
    );
    let mut out = format!("mode={}", host.mode);
    if let Some(unified) = &host.unified {
        match &unified.parent {
            Some(parent) => out.push_str(&format!("\nunified: {}", parent.display())),
            None => out.push_str(&format!("\nunified: {:?}", unified.state)),
        }
    }
    for &controller in Controller::ALL {
        out.push_str(&format!("\n{controller}: "));
        match host.placement(controller) {
            Ok(placement) => {
                out.push_str(&format!(
                    "{} {}",
                    placement.version,
                    placement.parent.display()
                ));
            }
            Err(reason) => out.push_str(&format!("unavailable: {reason}")),
        }
    }
    out
}

fn check(mountinfo: &str, proc_cgroup: &str, unified_controllers: &str, expected: &str) {
    let got = render(mountinfo, proc_cgroup, unified_controllers);
    assert_eq!(
        got,
        expected.trim(),
        "\n--- got ---\n{got}\n--- expected ---\n{}",
        expected.trim()
    );
}

const PROC: &str = "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n";

#[test]
fn pure_v2_uses_the_unified_hierarchy() {
    // A systemd desktop: unified at /sys/fs/cgroup, the user's shell in a delegated scope.
    let mountinfo = format!(
        "{PROC}35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
    );
    let cgroup = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/shell.scope\n";
    check(
        &mountinfo,
        cgroup,
        "cpuset cpu io memory pids",
        "
mode=unified
unified: /sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/shell.scope
memory: v2 /sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/shell.scope
pids: v2 /sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/shell.scope
cpu: v2 /sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/shell.scope
",
    );
    // The same host where the parent offers only memory and pids: cpu fails closed.
    check(
        &mountinfo,
        "0::/\n",
        "memory pids",
        "
mode=unified
unified: /sys/fs/cgroup
memory: v2 /sys/fs/cgroup
pids: v2 /sys/fs/cgroup
cpu: unavailable: the controller is not listed in /sys/fs/cgroup/cgroup.controllers
",
    );
}

#[test]
fn pure_v1_uses_each_controllers_hierarchy() {
    // CentOS 7 style: cpu and cpuacct co-mounted, a named systemd hierarchy, no cgroup2.
    let mountinfo = format!(
        "{PROC}25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,pids
32 25 0:29 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,freezer
"
    );
    let cgroup = "11:pids:/user.slice/user-1000.slice
5:memory:/user.slice
4:cpu,cpuacct:/user.slice
2:freezer:/
1:name=systemd:/user.slice/user-1000.slice/session-2.scope
";
    check(
        &mountinfo,
        cgroup,
        "",
        "
mode=legacy
memory: v1 /sys/fs/cgroup/memory/user.slice
pids: v1 /sys/fs/cgroup/pids/user.slice/user-1000.slice
cpu: v1 /sys/fs/cgroup/cpu,cpuacct/user.slice
",
    );
}

/// This machine's own layout: v1 controllers, each alone, and an empty cgroup2 beside them.
const HYBRID_MOUNTINFO: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

const HYBRID_CGROUP: &str = "9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/bd4134ed8ab583284b24499c4b24b6bc
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

#[test]
fn hybrid_puts_limits_in_v1_and_tracks_in_v2() {
    check(
        HYBRID_MOUNTINFO,
        HYBRID_CGROUP,
        "hugetlb",
        "
mode=hybrid
unified: /sys/fs/cgroup/unified
memory: v1 /sys/fs/cgroup/memory/process_api/bd4134ed8ab583284b24499c4b24b6bc
pids: v1 /sys/fs/cgroup/pids
cpu: v1 /sys/fs/cgroup/cpu
",
    );
    // A hybrid host whose pids controller is not bound to v1 offers it on v2, and v2 wins.
    let without_v1_pids: String = HYBRID_MOUNTINFO
        .lines()
        .filter(|line| !line.ends_with("rw,pids"))
        .map(|line| format!("{line}\n"))
        .collect();
    check(
        &without_v1_pids,
        HYBRID_CGROUP,
        "hugetlb pids",
        "
mode=hybrid
unified: /sys/fs/cgroup/unified
memory: v1 /sys/fs/cgroup/memory/process_api/bd4134ed8ab583284b24499c4b24b6bc
pids: v2 /sys/fs/cgroup/unified
cpu: v1 /sys/fs/cgroup/cpu
",
    );
    // Ubuntu 20.04 style, named systemd hierarchy only plus unified: that is unified mode.
    check(
        "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n\
         41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n",
        "1:name=systemd:/init.scope\n0::/init.scope\n",
        "",
        "
mode=unified
unified: /sys/fs/cgroup/unified/init.scope
memory: unavailable: the controller is not listed in /sys/fs/cgroup/unified/init.scope/cgroup.controllers
pids: unavailable: the controller is not listed in /sys/fs/cgroup/unified/init.scope/cgroup.controllers
cpu: unavailable: the controller is not listed in /sys/fs/cgroup/unified/init.scope/cgroup.controllers
",
    );
}

#[test]
fn containers_see_their_cgroup_through_the_mount_root() {
    // Docker without a cgroup namespace: the container's cgroup is bind-mounted at the root.
    check(
        "900 880 0:30 /docker/0123abcd /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n",
        "0::/docker/0123abcd\n",
        "memory pids cpu",
        "
mode=unified
unified: /sys/fs/cgroup
memory: v2 /sys/fs/cgroup
pids: v2 /sys/fs/cgroup
cpu: v2 /sys/fs/cgroup
",
    );
    check(
        "900 880 0:30 /docker/0123abcd /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n",
        "0::/docker/0123abcd/sub\n",
        "memory",
        "
mode=unified
unified: /sys/fs/cgroup/sub
memory: v2 /sys/fs/cgroup/sub
pids: unavailable: the controller is not listed in /sys/fs/cgroup/sub/cgroup.controllers
cpu: unavailable: the controller is not listed in /sys/fs/cgroup/sub/cgroup.controllers
",
    );
    // A cgroup outside the mounted sub-tree is not reachable; "/docker/0123" is not a prefix
    // match of "/docker/0123abcd".
    check(
        "900 880 0:30 /docker/0123abcd /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n\
         901 880 0:31 /docker/0123 /mnt/memory rw - cgroup cgroup rw,memory\n",
        "4:memory:/docker/0123abcd\n0::/elsewhere\n",
        "",
        "
mode=hybrid
unified: NotVisible
memory: unavailable: this process's cgroup is not visible under /mnt/memory
pids: unavailable: no cgroup hierarchy on this host offers the controller
cpu: unavailable: no cgroup hierarchy on this host offers the controller
",
    );
}

#[test]
fn absent_and_escaped_and_malformed() {
    check(
        PROC,
        "0::/\n",
        "",
        "
mode=absent
memory: unavailable: no cgroup hierarchy on this host offers the controller
pids: unavailable: no cgroup hierarchy on this host offers the controller
cpu: unavailable: no cgroup hierarchy on this host offers the controller
",
    );
    check(
        "50 1 0:40 / /tmp/cgroup\\040two rw - cgroup2 none rw\n",
        "0::/a\\b\n",
        "pids",
        "
mode=unified
unified: /tmp/cgroup two/a\\b
memory: unavailable: the controller is not listed in /tmp/cgroup two/a\\b/cgroup.controllers
pids: v2 /tmp/cgroup two/a\\b
cpu: unavailable: the controller is not listed in /tmp/cgroup two/a\\b/cgroup.controllers
",
    );
    check(
        "50 1 0:40 / /sys/fs/cgroup rw cgroup2 none rw\n",
        "0::/\n",
        "",
        r#"error: malformed line 1 of /proc/self/mountinfo: "50 1 0:40 / /sys/fs/cgroup rw cgroup2 none rw""#,
    );
    check(
        "",
        "0::/\nmemory:/\n",
        "",
        r#"error: malformed line 2 of /proc/self/cgroup: "memory:/""#,
    );
    check(
        "",
        "x::/\n",
        "",
        r#"error: malformed line 1 of /proc/self/cgroup: "x::/""#,
    );
}

#[test]
fn unwritable_parents_fail_closed_with_the_reason() {
    let layout = Layout::parse(HYBRID_MOUNTINFO, HYBRID_CGROUP).unwrap();
    let render = |root_user: bool, state: ParentState| {
        let host = HostCgroups::assemble(
            &layout,
            None,
            |_| Vec::new(),
            |_| state,
            root_user,
            |_| true,
        );
        host.placement(Controller::Pids).unwrap_err().to_string()
    };
    assert_eq!(
        render(true, ParentState::NotWritable),
        "/sys/fs/cgroup/pids is not writable"
    );
    assert_eq!(
        render(false, ParentState::NotWritable),
        "/sys/fs/cgroup/pids is not delegated to this user (not root, and the cgroup is not writable)"
    );
    assert_eq!(
        render(true, ParentState::Missing),
        "the parent cgroup /sys/fs/cgroup/pids does not exist"
    );
}

#[test]
fn a_configured_parent_replaces_the_current_cgroup() {
    let layout = Layout::parse(HYBRID_MOUNTINFO, HYBRID_CGROUP).unwrap();
    let host = HostCgroups::assemble(
        &layout,
        Some("/hardbox.slice"),
        |_| Vec::new(),
        |_| ParentState::Writable,
        true,
        |_| true,
    );
    let placement = host.placement(Controller::Memory).unwrap();
    assert_eq!(
        placement.parent,
        Path::new("/sys/fs/cgroup/memory/hardbox.slice")
    );
    assert_eq!(
        host.unified.unwrap().parent.as_deref(),
        Some(Path::new("/sys/fs/cgroup/unified/hardbox.slice"))
    );
}

#[test]
fn delegation_is_for_non_root_users_with_a_writable_unified_cgroup() {
    let layout = Layout::parse(
        "35 24 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n",
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/a.scope\n",
    )
    .unwrap();
    let assemble = |root_user: bool, state: ParentState, owned: bool| {
        HostCgroups::assemble(
            &layout,
            None,
            |_| vec!["memory".to_owned()],
            |_| state,
            root_user,
            |_| owned,
        )
        .delegated
    };
    assert!(assemble(false, ParentState::Writable, true));
    assert!(!assemble(false, ParentState::Writable, false));
    assert!(!assemble(false, ParentState::NotWritable, true));
    assert!(!assemble(true, ParentState::Writable, true));
}

#[test]
fn a_v2_parent_with_its_own_processes_offers_only_what_it_already_enabled() {
    let layout = Layout::parse(
        "35 24 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n",
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/shell.scope\n",
    )
    .unwrap();
    let mut host = HostCgroups::assemble(
        &layout,
        None,
        |_| vec!["memory".to_owned(), "pids".to_owned(), "cpu".to_owned()],
        |_| ParentState::Writable,
        false,
        |_| true,
    );
    let unified = host.unified.as_mut().unwrap();
    unified.parent_has_processes = true;
    unified.subtree_control = vec!["pids".to_owned()];
    assert!(host.placement(Controller::Pids).is_ok());
    assert_eq!(
        host.placement(Controller::Memory).unwrap_err().to_string(),
        "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/shell.scope has processes of its own, so the controller cannot be enabled in its cgroup.subtree_control"
    );
}

#[test]
fn detects_this_host() {
    let host = Host::detect().unwrap();
    // Whatever the host, detection is consistent with the raw files.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let has_v2 = mountinfo.lines().any(|l| l.contains(" - cgroup2 "));
    assert_eq!(host.unified.is_some(), has_v2);
}
