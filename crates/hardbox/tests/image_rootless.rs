//! End-to-end: the image verbs as an unprivileged user. Device nodes are skipped with a warning
//! naming the layer and entry, ownership the user cannot set is recorded instead of failing, and
//! nothing is written outside the target.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{repo_root, require_root, run_ok};

const NOBODY: u32 = 65534;

/// The hardbox binary run as uid/gid 65534 with its store at `store`.
fn hardbox_as_nobody(store: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--",
    ])
    .arg(env!("CARGO_BIN_EXE_hardbox"))
    .arg("--root")
    .arg(store)
    .env("HOME", "/nonexistent");
    cmd
}

fn chown(path: &Path, id: u32) {
    rustix::fs::chown(
        path,
        Some(rustix::fs::Uid::from_raw(id)),
        Some(rustix::fs::Gid::from_raw(id)),
    )
    .unwrap();
}

#[test]
fn rootless_unpack_skips_device_nodes_with_a_warning_and_records_owners() {
    require_root();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::set_permissions(w, std::fs::Permissions::from_mode(0o755)).unwrap();

    // An image with a device node and a file owned by someone else, made as root.
    let rootfs = w.join("rootfs");
    std::fs::create_dir_all(rootfs.join("dev")).unwrap();
    std::fs::write(rootfs.join("owned-by-1000"), "x").unwrap();
    chown(&rootfs.join("owned-by-1000"), 1000);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        rootfs.join("dev/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let layout = w.join("layout");
    run_ok(
        Command::new(repo_root().join("scripts/make-oci-layout"))
            .arg(&rootfs)
            .arg(&layout)
            .arg("devices:1")
            .env("KEEP_OWNERS", "1"),
    );

    // The user's own store and output directory.
    let home = w.join("nobody");
    std::fs::create_dir(&home).unwrap();
    chown(&home, NOBODY);
    let store = home.join("store");
    let out = home.join("out");
    run_ok(
        hardbox_as_nobody(&store)
            .args(["image", "import"])
            .arg(&layout),
    );
    let unpack = run_ok(
        hardbox_as_nobody(&store)
            .args(["image", "unpack", "devices:1"])
            .arg(&out),
    );
    let stderr = String::from_utf8_lossy(&unpack.stderr);
    assert!(stderr.contains("warning:"), "{stderr}");
    assert!(
        stderr.contains("dev/null"),
        "warning must name the entry: {stderr}"
    );
    assert!(
        stderr.contains("sha256:"),
        "warning must name the layer: {stderr}"
    );

    assert!(
        std::fs::symlink_metadata(out.join("dev/null")).is_err(),
        "no device node may be created rootless"
    );
    let owned = std::fs::metadata(out.join("owned-by-1000")).unwrap();
    assert_eq!(owned.uid(), NOBODY, "files belong to the unpacking user");
    let mut recorded = [0u8; 64];
    let n = rustix::fs::getxattr(
        out.join("owned-by-1000"),
        "user.hardbox.owner",
        &mut recorded,
    )
    .expect("the layer's owner is recorded in user.hardbox.owner");
    assert_eq!(&recorded[..n], b"1000:1000");
    run_ok(hardbox_as_nobody(&store).args(["system", "fsck"]));
}
