#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! Online: `examples/python.yaml` built from the host's own apt mirror (CI reaches it), then
//! run in the sandbox. It fails, never skips, when the host has no apt source, and it needs
//! root for `hardbox run` (CI runs as root).

mod build_support;

use std::path::Path;

use build_support::{ok, setid_files, stdout};

/// Whether `/etc/apt` names a `deb` source, as apt reads it.
fn host_has_deb_source() -> bool {
    let etc = Path::new("/etc/apt");
    let mut files = vec![etc.join("sources.list")];
    if let Ok(entries) = std::fs::read_dir(etc.join("sources.list.d")) {
        files.extend(
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources")),
        );
    }
    files.iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|text| {
            text.lines().any(|l| {
                let l = l.trim();
                l.starts_with("deb ")
                    || l.strip_prefix("Types:")
                        .is_some_and(|v| v.split_whitespace().any(|t| t == "deb"))
            })
        })
    })
}

#[test]
fn python_example_builds_from_the_host_mirror_and_runs_as_nonroot_without_a_shell() {
    assert!(
        host_has_deb_source(),
        "the host has no `deb` source in /etc/apt/sources.list or /etc/apt/sources.list.d: \
         this online test builds from the host's apt mirror"
    );
    assert!(
        rustix::process::geteuid().is_root(),
        "this test runs the sandbox as root (CI does): run it with sudo"
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python.yaml");
    let image = "hardbox.test/python:online";
    let out = ok(build_support::hardbox(&root)
        .arg("build")
        .arg(&spec)
        .args(["-t", image]));
    let summary = stdout(&out);
    assert!(
        summary.contains("attached application/spdx+json"),
        "{summary}"
    );

    let out = ok(build_support::hardbox(&root).args([
        "run",
        image,
        "--",
        "python3",
        "-c",
        "import os, ssl, sqlite3; print('ok', os.getuid(), os.getgid())",
    ]));
    assert_eq!(stdout(&out).trim(), "ok 65532 65532", "{}", stdout(&out));

    let tree = dir.path().join("tree");
    ok(build_support::hardbox(&root)
        .args(["image", "unpack", image])
        .arg(&tree));
    for shell in ["sh", "bash", "dash"] {
        for dir in ["bin", "usr/bin", "sbin", "usr/sbin"] {
            let path = tree.join(dir).join(shell);
            assert!(
                std::fs::symlink_metadata(&path).is_err(),
                "{} is in the image",
                path.display()
            );
        }
    }
    assert_eq!(setid_files(&tree), Vec::<std::path::PathBuf>::new());
    assert!(tree.join("usr/bin/python3").exists());
}
