//! Files get the modes the layer gives them whatever the process umask or a directory's default
//! ACL would make of the mode they are created with. Alone in its test binary: the umask is
//! process-wide.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on unexpected values"
)]

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::*;

/// A minimal POSIX ACL (`user::rwx group::r-x other::---`) as stored in
/// `system.posix_acl_default`.
fn default_acl() -> Vec<u8> {
    let mut value = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [(0x01u16, 7u16), (0x04, 5), (0x20, 0)] {
        value.extend_from_slice(&tag.to_le_bytes());
        value.extend_from_slice(&perm.to_le_bytes());
        value.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    value
}

fn file(name: &str, mode: u32) -> Entry {
    let mut entry = Entry::new(name, b'0');
    entry.mode = mode;
    entry.data = name.as_bytes().to_vec();
    entry
}

fn modes(sandbox: &Sandbox, names: &[(&str, u32)]) {
    for (name, mode) in names {
        let meta = fs::symlink_metadata(sandbox.path(name)).expect(name);
        assert_eq!(meta.mode() & 0o7777, *mode, "{name}");
    }
}

#[test]
fn modes_survive_a_restrictive_umask_and_a_default_acl() {
    let previous = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let names = [
        ("a/one", 0o644),
        ("a/two", 0o644),
        ("a/three", 0o755),
        ("a/four", 0o600),
        ("a/five", 0o444),
        ("a/six", 0o644),
    ];
    let sandbox = Sandbox::new();
    let mut tar = Tar::new();
    for (name, mode) in names {
        tar = tar.entry(file(name, mode));
    }
    apply(&sandbox.root, &[tar.bytes()]).expect("apply");
    rustix::process::umask(previous);
    modes(&sandbox, &names);

    // A directory given a default ACL after files were created in it: what was learned about
    // it before no longer holds.
    let sandbox = Sandbox::new();
    let mut dir = Entry::new("d/", b'5');
    dir.mode = 0o755;
    let mut acl_dir = dir.clone();
    acl_dir.pax.push((
        "SCHILY.xattr.system.posix_acl_default".into(),
        default_acl(),
    ));
    let before = [("d/one", 0o644), ("d/two", 0o644), ("d/three", 0o664)];
    let after = [("d/four", 0o644), ("d/five", 0o644), ("d/six", 0o664)];
    let mut tar = Tar::new().entry(dir);
    for (name, mode) in before {
        tar = tar.entry(file(name, mode));
    }
    tar = tar.entry(acl_dir);
    for (name, mode) in after {
        tar = tar.entry(file(name, mode));
    }
    apply(&sandbox.root, &[tar.bytes()]).expect("apply");
    assert!(
        lgetxattr(&sandbox.path("d"), "system.posix_acl_default").is_some(),
        "the default ACL was not set; this filesystem needs ACL support"
    );
    modes(&sandbox, &before);
    modes(&sandbox, &after);
}
