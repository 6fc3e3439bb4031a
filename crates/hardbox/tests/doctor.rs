//! `hardbox doctor --json` end to end: the real binary on this host.
//!
//! CI runs as root on a hybrid cgroup host with Landlock and seccomp, where every layer of the
//! default policy is enforceable; the test asserts exactly that, and fails loudly elsewhere.

#![allow(
    clippy::unwrap_used,
    reason = "tests fail loudly on the first unexpected error"
)]

use std::process::Command;

use serde_json::Value;

fn doctor_json() -> (Value, i32) {
    let output = Command::new(env!("CARGO_BIN_EXE_hardbox"))
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {stdout}"));
    (report, output.status.code().unwrap())
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report:#}"))
}

#[test]
fn doctor_json_has_one_entry_per_layer_with_status_reason_and_hint() {
    let (report, code) = doctor_json();
    assert!(report["ok"].is_boolean());
    assert!(report["unenforceable"].is_array());
    let checks = report["checks"].as_array().unwrap();
    for entry in checks {
        let name = entry["name"].as_str().unwrap();
        let status = entry["status"].as_str().unwrap();
        assert!(
            ["ok", "missing", "unknown"].contains(&status),
            "{name}: status {status}"
        );
        assert!(entry["required"].is_boolean(), "{name}");
        assert!(!entry["detail"].as_str().unwrap().is_empty(), "{name}");
        // A hint exactly where something is wrong.
        assert_eq!(entry["hint"].is_string(), status != "ok", "{name}: {entry}");
    }
    for name in [
        "userns",
        "mountns",
        "pidns",
        "netns",
        "ipcns",
        "utsns",
        "cgroupns",
        "cgroups",
        "landlock",
        "seccomp",
        "no_new_privs",
        "overlayfs",
        "idmapped_mounts",
        "exec_feed_ebpf",
        "kvm",
    ] {
        check(&report, name);
    }
    // The exit status follows the verdict.
    let unenforceable = report["unenforceable"].as_array().unwrap();
    assert_eq!(report["ok"], unenforceable.is_empty());
    assert_eq!(code, if unenforceable.is_empty() { 0 } else { 1 });
}

#[test]
fn doctor_reports_this_root_host_fully_enforceable() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test expects the CI host (root): run it as root"
    );
    let (report, code) = doctor_json();
    for name in ["landlock", "seccomp", "userns", "cgroups", "no_new_privs"] {
        let entry = check(&report, name);
        assert_eq!(entry["status"], "ok", "{entry:#}");
        assert_eq!(entry["required"], true, "{name}");
    }
    // As root, execs are recorded by eBPF programs; they are not required.
    let feed = check(&report, "exec_feed_ebpf");
    assert_eq!(feed["status"], "ok", "{feed:#}");
    assert_eq!(feed["required"], false);
    let landlock = check(&report, "landlock");
    assert!(
        landlock["facts"]["abi"].as_i64().unwrap() >= 1,
        "{landlock:#}"
    );

    let cgroups = check(&report, "cgroups");
    let facts = &cgroups["facts"];
    let mode = facts["mode"].as_str().unwrap();
    for controller in ["memory", "pids", "cpu"] {
        let entry = &facts["controllers"][controller];
        assert_eq!(entry["enforceable"], true, "{controller}: {cgroups:#}");
        // On hybrid and v1 hosts the limits live in v1; on unified hosts in v2.
        let expected = if mode == "unified" { "v2" } else { "v1" };
        assert_eq!(entry["version"], expected, "{controller}: {cgroups:#}");
    }
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(code, 0);
}
