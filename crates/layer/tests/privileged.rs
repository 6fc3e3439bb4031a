//! Behaviour that needs root: owners, setuid bits, file capabilities and device nodes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on unexpected values"
)]

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use common::*;
use layer::{Devices, Options, Ownership};

/// `cap_net_bind_service=ep` as a version 2 `vfs_cap_data`.
fn capability() -> Vec<u8> {
    let mut value = Vec::new();
    value.extend_from_slice(&0x0200_0001u32.to_le_bytes()); // revision 2, effective
    value.extend_from_slice(&(1u32 << 10).to_le_bytes()); // permitted: CAP_NET_BIND_SERVICE
    value.extend_from_slice(&0u32.to_le_bytes()); // inheritable
    value.extend_from_slice(&0u32.to_le_bytes());
    value.extend_from_slice(&0u32.to_le_bytes());
    value
}

#[test]
fn preserve_ownership_sets_recorded_owners() {
    require_root();
    let sandbox = Sandbox::new();
    let mut file = Entry::new("f", b'0');
    (file.uid, file.gid) = (1000, 2000);
    let mut dir = Entry::new("d/", b'5');
    (dir.uid, dir.gid) = (33, 34);
    let mut link = Entry::new("l", b'2');
    link.link = b"f".to_vec();
    (link.uid, link.gid) = (5, 6);
    let layer = Tar::new()
        .entry(file)
        .entry(dir)
        .entry(link)
        .file("d/implicit/x", "")
        .bytes();
    apply_with(&sandbox.root, preserve(), &[layer]).expect("apply");
    let owner = |p: &str| {
        let m = fs::symlink_metadata(sandbox.path(p)).expect(p);
        (m.uid(), m.gid())
    };
    assert_eq!(owner("f"), (1000, 2000));
    assert_eq!(owner("d"), (33, 34));
    assert_eq!(owner("l"), (5, 6));
    assert_eq!(owner("d/implicit"), (0, 0));
}

#[test]
fn shift_ownership_adds_the_base() {
    require_root();
    let sandbox = Sandbox::new();
    let mut file = Entry::new("f", b'0');
    (file.uid, file.gid) = (1000, 2000);
    let layer = Tar::new()
        .entry(file)
        .file("rootfile", "")
        .file("a/b", "")
        .bytes();
    let options = Options {
        ownership: Ownership::Shift {
            uid_base: 100_000,
            gid_base: 200_000,
            size: 65_536,
        },
        ..options()
    };
    apply_with(&sandbox.root, options, &[layer]).expect("apply");
    let owner = |p: &str| {
        let m = fs::symlink_metadata(sandbox.path(p)).expect(p);
        (m.uid(), m.gid())
    };
    assert_eq!(owner("f"), (101_000, 202_000));
    assert_eq!(owner("rootfile"), (100_000, 200_000));
    assert_eq!(
        owner("a"),
        (100_000, 200_000),
        "implicit parents are the shifted root"
    );
}

#[test]
fn setuid_mode_survives_chown() {
    require_root();
    let sandbox = Sandbox::new();
    let mut file = Entry::new("su", b'0');
    file.mode = 0o4755;
    (file.uid, file.gid) = (1000, 1000);
    file.data = b"binary".to_vec();
    let mut dir = Entry::new("tmp/", b'5');
    dir.mode = 0o1777;
    let layer = Tar::new().entry(file).entry(dir).bytes();
    apply_with(&sandbox.root, preserve(), &[layer]).expect("apply");
    let mode = |p: &str| fs::metadata(sandbox.path(p)).expect(p).permissions().mode() & 0o7777;
    assert_eq!(mode("su"), 0o4755);
    assert_eq!(mode("tmp"), 0o1777);
}

#[test]
fn security_capability_xattr_is_kept() {
    require_root();
    let sandbox = Sandbox::new();
    let mut file = Entry::new("ping", b'0');
    (file.uid, file.gid) = (1000, 1000);
    file.data = b"binary".to_vec();
    file.mode = 0o755;
    file.pax
        .push(("SCHILY.xattr.security.capability".into(), capability()));
    file.pax
        .push(("SCHILY.xattr.user.note".into(), b"hello".to_vec()));
    let layer = Tar::new().entry(file).bytes();
    apply_with(&sandbox.root, preserve(), &[layer]).expect("apply");
    let path = sandbox.path("ping");
    assert_eq!(lgetxattr(&path, "security.capability"), Some(capability()));
    assert_eq!(
        lgetxattr(&path, "user.note").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(fs::metadata(&path).expect("ping").uid(), 1000);
}

#[test]
fn devices_are_created_as_root() {
    require_root();
    let sandbox = Sandbox::new();
    let mut null = Entry::new("dev/null", b'3');
    null.device = (1, 3);
    null.mode = 0o666;
    let mut loop0 = Entry::new("dev/loop0", b'4');
    loop0.device = (7, 0);
    loop0.mode = 0o660;
    loop0.gid = 6;
    let layer = Tar::new().dir("dev/").entry(null).entry(loop0).bytes();
    let options = Options {
        devices: Devices::Create,
        ..preserve()
    };
    let stats = apply_with(&sandbox.root, options, &[layer]).expect("apply");
    assert!(stats[0].warnings.is_empty());
    let null = fs::symlink_metadata(sandbox.path("dev/null")).expect("null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(null.permissions().mode() & 0o7777, 0o666);
    let loop0 = fs::symlink_metadata(sandbox.path("dev/loop0")).expect("loop0");
    assert!(loop0.file_type().is_block_device());
    assert_eq!(loop0.rdev(), rustix::fs::makedev(7, 0));
    assert_eq!(loop0.gid(), 6);
    assert_eq!(loop0.mtime(), MTIME as i64);
}

/// A file's owner and mode are what the layer says, whatever the kernel gives new files in its
/// directory: in a set-gid directory of another group, new files get that group, which must
/// not be mistaken for the layer's.
#[test]
fn files_in_a_setgid_directory_get_the_layers_owner_and_mode() {
    require_root();
    let sandbox = Sandbox::new();
    let mut shared = Entry::new("shared/", b'5');
    (shared.mode, shared.gid) = (0o2775, 50);
    let mut tar = Tar::new().entry(shared);
    let files = [
        ("shared/a", 0, 0, 0o644),
        ("shared/b", 0, 0, 0o644),
        ("shared/c", 0, 0, 0o640),
        ("shared/d", 0, 50, 0o664),
        ("shared/e", 0, 50, 0o664),
        ("shared/f", 0, 0, 0o755),
        ("plain/g", 0, 0, 0o644),
        ("plain/h", 0, 0, 0o644),
        ("plain/i", 7, 8, 0o644),
        ("plain/j", 0, 0, 0o4755),
        ("plain/k", 0, 0, 0o644),
    ];
    for (name, uid, gid, mode) in files {
        let mut file = Entry::new(name, b'0');
        (file.uid, file.gid, file.mode) = (uid, gid, mode);
        file.data = name.as_bytes().to_vec();
        tar = tar.entry(file);
    }
    apply_with(&sandbox.root, preserve(), &[tar.bytes()]).expect("apply");
    for (name, uid, gid, mode) in files {
        let meta = fs::symlink_metadata(sandbox.path(name)).expect(name);
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (uid as u32, gid as u32, mode),
            "{name}"
        );
    }
}
