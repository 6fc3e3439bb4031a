//! What applying layers produces: replacement rules, whiteouts, limits, devices, times,
//! ownership recording and overlay-form whiteouts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on unexpected values"
)]

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use common::*;
use layer::{Devices, Limits, Options, Ownership, Whiteouts};

#[test]
fn files_directories_symlinks_hardlinks_and_fifos_are_created() {
    let sandbox = Sandbox::new();
    let mut fifo = Entry::new("dir/fifo", b'6');
    fifo.mode = 0o640;
    let mut exec = Entry::new("dir/tool", b'0');
    exec.mode = 0o750;
    exec.data = b"#!/bin/sh\n".to_vec();
    let layer = Tar::new()
        .dir("dir/")
        .file("dir/file", "content")
        .entry(exec)
        .symlink("dir/link", "file")
        .hardlink("dir/hard", "dir/file")
        .entry(fifo)
        .file("implicit/parents/f", "deep")
        .bytes();
    let stats = apply(&sandbox.root, &[layer]).expect("apply");
    assert_eq!(stats[0].entries, 7);
    assert_eq!(stats[0].bytes, 7 + 10 + 4);
    assert_eq!(
        fs::read(sandbox.path("dir/link")).expect("link"),
        b"content"
    );
    assert_eq!(
        fs::read_link(sandbox.path("dir/link"))
            .expect("readlink")
            .to_str(),
        Some("file")
    );
    let file = fs::metadata(sandbox.path("dir/file")).expect("file");
    assert_eq!(file.nlink(), 2);
    assert_eq!(
        file.ino(),
        fs::metadata(sandbox.path("dir/hard")).expect("hard").ino()
    );
    assert_eq!(file.permissions().mode() & 0o7777, 0o644);
    let tool = fs::metadata(sandbox.path("dir/tool")).expect("tool");
    assert_eq!(tool.permissions().mode() & 0o7777, 0o750);
    let fifo = fs::symlink_metadata(sandbox.path("dir/fifo")).expect("fifo");
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.permissions().mode() & 0o7777, 0o640);
    let implicit = fs::metadata(sandbox.path("implicit/parents")).expect("implicit");
    assert_eq!(implicit.permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        fs::read(sandbox.path("implicit/parents/f")).expect("f"),
        b"deep"
    );
}

#[test]
fn root_entry_sets_root_directory_metadata() {
    let sandbox = Sandbox::new();
    let mut root = Entry::new("./", b'5');
    root.mode = 0o751;
    root.mtime = 1234;
    let layer = Tar::new().entry(root).file("./a", "x").bytes();
    apply(&sandbox.root, &[layer]).expect("apply");
    let meta = fs::metadata(&sandbox.root).expect("root");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o751);
    assert_eq!(meta.mtime(), 1234);
}

#[test]
fn duplicate_entries_last_wins() {
    let sandbox = Sandbox::new();
    let layer = Tar::new()
        .file("f", "one")
        .file("./f", "two")
        .symlink("s", "a")
        .symlink("s", "b")
        .bytes();
    apply(&sandbox.root, &[layer]).expect("apply");
    assert_eq!(fs::read(sandbox.path("f")).expect("f"), b"two");
    assert_eq!(
        fs::read_link(sandbox.path("s")).expect("s").to_str(),
        Some("b")
    );
}

#[test]
fn file_replaces_directory_and_directory_replaces_file() {
    let sandbox = Sandbox::new();
    let lower = Tar::new()
        .dir("d/")
        .file("d/sub/f", "deep")
        .file("f", "file")
        .symlink("s", "d")
        .bytes();
    let upper = Tar::new()
        .file("d", "now a file")
        .dir("f/")
        .file("f/inner", "in dir")
        .dir("s/")
        .bytes();
    apply(&sandbox.root, &[lower, upper]).expect("apply");
    assert_eq!(fs::read(sandbox.path("d")).expect("d"), b"now a file");
    assert!(fs::symlink_metadata(sandbox.path("f")).expect("f").is_dir());
    assert_eq!(fs::read(sandbox.path("f/inner")).expect("inner"), b"in dir");
    assert!(fs::symlink_metadata(sandbox.path("s")).expect("s").is_dir());
}

#[test]
fn directory_over_directory_merges_and_updates_mode() {
    let sandbox = Sandbox::new();
    let lower = Tar::new().dir("d/").file("d/old", "kept").bytes();
    let mut dir = Entry::new("d/", b'5');
    dir.mode = 0o711;
    let upper = Tar::new().entry(dir).file("d/new", "added").bytes();
    apply(&sandbox.root, &[lower, upper]).expect("apply");
    assert_eq!(list(&sandbox.path("d")), ["new", "old"]);
    let mode = fs::metadata(sandbox.path("d"))
        .expect("d")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o711);
}

#[test]
fn whiteouts_delete_lower_entries_across_layers() {
    let sandbox = Sandbox::new();
    let lower = Tar::new()
        .file("a", "a")
        .dir("dir/")
        .file("dir/x", "x")
        .file("dir/y", "y")
        .file("tree/deep/er/f", "f")
        .bytes();
    let upper = Tar::new()
        .file(".wh.a", "")
        .file("dir/.wh.x", "")
        .file(".wh.tree", "")
        .file(".wh.never-existed", "")
        .file("missing-dir/.wh.x", "")
        .bytes();
    apply(&sandbox.root, &[lower, upper]).expect("apply");
    assert_eq!(list(&sandbox.root), ["dir"]);
    assert_eq!(list(&sandbox.path("dir")), ["y"]);
}

#[test]
fn whiteout_does_not_hide_entries_of_its_own_layer() {
    let sandbox = Sandbox::new();
    let layer = Tar::new().file("b", "same layer").file(".wh.b", "").bytes();
    apply(&sandbox.root, &[layer]).expect("apply");
    assert_eq!(fs::read(sandbox.path("b")).expect("b"), b"same layer");
}

#[test]
fn opaque_whiteout_keeps_entries_of_the_same_layer() {
    let sandbox = Sandbox::new();
    let lower = Tar::new()
        .dir("d/")
        .file("d/a", "lower")
        .file("d/b", "lower")
        .file("d/sub/lower", "lower")
        .file("d/sub2/lower", "lower")
        .file("other/kept", "lower")
        .bytes();
    let upper = Tar::new()
        .file("d/early", "upper, before the marker")
        .dir("d/sub/")
        .file("d/sub/upper", "upper")
        .file("d/.wh..wh..opq", "")
        .file("d/late", "upper, after the marker")
        .bytes();
    apply(&sandbox.root, &[lower, upper]).expect("apply");
    assert_eq!(list(&sandbox.path("d")), ["early", "late", "sub"]);
    assert_eq!(list(&sandbox.path("d/sub")), ["upper"]);
    assert_eq!(list(&sandbox.path("other")), ["kept"]);
}

#[test]
fn overlay_whiteouts_are_kept_as_char_devices_and_opaque_xattrs() {
    let sandbox = Sandbox::new();
    let layer = Tar::new()
        .file(".wh.gone", "")
        .dir("d/")
        .file("d/.wh..wh..opq", "")
        .file("d/kept", "k")
        .file("e/.wh.x", "")
        .bytes();
    apply_with(&sandbox.root, options_overlay(), &[layer]).expect("apply");
    for whiteout in ["gone", "e/x"] {
        let meta = fs::symlink_metadata(sandbox.path(whiteout)).expect("whiteout");
        assert!(meta.file_type().is_char_device(), "{whiteout}");
        assert_eq!(meta.rdev(), 0, "{whiteout}");
    }
    let xattr = if rustix::process::geteuid().is_root() {
        "trusted.overlay.opaque"
    } else {
        "user.overlay.opaque"
    };
    assert_eq!(
        lgetxattr(&sandbox.path("d"), xattr).as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(list(&sandbox.path("d")), ["kept"]);
    assert_eq!(list(&sandbox.root), ["d", "e", "gone"]);
}

#[test]
fn devices_are_skipped_with_a_warning() {
    let sandbox = Sandbox::new();
    let mut null = Entry::new("dev/null", b'3');
    null.device = (1, 3);
    let layer = Tar::new().dir("dev/").entry(null).bytes();
    let options = Options {
        devices: Devices::Skip,
        ..options()
    };
    let stats = apply_with(&sandbox.root, options, std::slice::from_ref(&layer)).expect("apply");
    let warnings = &stats[0].warnings;
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].layer, digest_of(&layer));
    assert_eq!(warnings[0].entry, "dev/null");
    assert!(warnings[0]
        .to_string()
        .contains("character device 1:3 skipped"));
    assert!(list(&sandbox.path("dev")).is_empty());
}

#[test]
fn size_bomb_fails_before_writing() {
    let sandbox = Sandbox::new();
    let layer = Tar::new()
        .file("small", vec![1u8; 600])
        .file("bomb", vec![0u8; 2000])
        .bytes();
    let options = Options {
        limits: Limits {
            max_bytes: 1000,
            max_entries: 100,
        },
        ..options()
    };
    let err = apply_with(&sandbox.root, options, std::slice::from_ref(&layer)).expect_err("bomb");
    assert_eq!(
        err.to_string(),
        format!(
            "failed to apply layer {}: entry \"bomb\" exceeds the limit of 1000 bytes of file content",
            digest_of(&layer)
        )
    );
    assert!(
        !sandbox.path("bomb").exists(),
        "nothing of the bomb is written"
    );
    sandbox.assert_outside_untouched();
}

#[test]
fn entry_count_bomb_fails_across_layers() {
    let sandbox = Sandbox::new();
    let first = Tar::new().file("a", "").file("b", "").bytes();
    let second = Tar::new().file("c", "").file("d", "").bytes();
    let options = Options {
        limits: Limits {
            max_bytes: 1 << 20,
            max_entries: 3,
        },
        ..options()
    };
    let err = apply_with(&sandbox.root, options, &[first, second.clone()]).expect_err("bomb");
    assert_eq!(
        err.to_string(),
        format!(
            "failed to apply layer {}: entry \"d\" exceeds the limit of 3 entries",
            digest_of(&second)
        )
    );
}

#[test]
fn mtimes_of_files_symlinks_and_directories_are_set() {
    let sandbox = Sandbox::new();
    let mut dir = Entry::new("d/", b'5');
    dir.mtime = 1_000_000;
    let mut file = Entry::new("d/f", b'0');
    file.mtime = 2_000_000;
    file.pax.push(("mtime".into(), b"2000000.25".to_vec()));
    let mut link = Entry::new("d/l", b'2');
    link.link = b"f".to_vec();
    link.mtime = 3_000_000;
    let lower = Tar::new().entry(dir).entry(file).entry(link).bytes();
    // A later layer adding to the directory must not disturb its time.
    let upper = Tar::new().file("d/added", "x").bytes();
    apply(&sandbox.root, &[lower, upper]).expect("apply");
    let d = fs::metadata(sandbox.path("d")).expect("d");
    assert_eq!(d.mtime(), 1_000_000);
    let f = fs::metadata(sandbox.path("d/f")).expect("f");
    assert_eq!((f.mtime(), f.mtime_nsec()), (2_000_000, 250_000_000));
    let l = fs::symlink_metadata(sandbox.path("d/l")).expect("l");
    assert_eq!(l.mtime(), 3_000_000);
}

#[test]
fn record_ownership_stores_owner_in_xattr() {
    let sandbox = Sandbox::new();
    let mut owned = Entry::new("owned", b'0');
    owned.uid = 1000;
    owned.gid = 2000;
    let mut dir = Entry::new("dir/", b'5');
    dir.uid = 33;
    dir.gid = 33;
    let layer = Tar::new()
        .entry(owned)
        .entry(dir)
        .file("rootfile", "")
        .bytes();
    let options = Options {
        ownership: Ownership::Record,
        ..options()
    };
    apply_with(&sandbox.root, options, &[layer]).expect("apply");
    let me = rustix::process::geteuid().as_raw();
    assert_eq!(
        lgetxattr(&sandbox.path("owned"), "user.hardbox.owner").as_deref(),
        Some(&b"1000:2000"[..])
    );
    assert_eq!(
        fs::metadata(sandbox.path("owned")).expect("owned").uid(),
        me
    );
    assert_eq!(
        lgetxattr(&sandbox.path("dir"), "user.hardbox.owner").as_deref(),
        Some(&b"33:33"[..])
    );
    assert_eq!(
        lgetxattr(&sandbox.path("rootfile"), "user.hardbox.owner"),
        None
    );
}

#[test]
fn shift_rejects_ids_outside_the_range() {
    let mut entry = Entry::new("f", b'0');
    entry.uid = 70_000;
    let layer = Tar::new().entry(entry).bytes();
    let sandbox = Sandbox::new();
    let options = Options {
        ownership: Ownership::Shift {
            uid_base: 100_000,
            gid_base: 100_000,
            size: 65_536,
        },
        ..options()
    };
    let err =
        apply_with(&sandbox.root, options, std::slice::from_ref(&layer)).expect_err("out of range");
    assert_eq!(
        err.to_string(),
        format!(
            "failed to apply layer {}: entry \"f\" has uid 70000, outside the shifted range of 65536 ids",
            digest_of(&layer)
        )
    );
}

#[test]
fn unknown_entry_types_are_skipped_with_a_warning() {
    let sandbox = Sandbox::new();
    let layer = Tar::new()
        .entry(Entry::new("volume", b'V'))
        .file("f", "x")
        .bytes();
    let stats = apply(&sandbox.root, &[layer]).expect("apply");
    assert_eq!(stats[0].warnings.len(), 1);
    assert_eq!(stats[0].warnings[0].entry, "volume");
    assert_eq!(list(&sandbox.root), ["f"]);
}

#[test]
fn long_names_from_pax_headers_are_applied() {
    let sandbox = Sandbox::new();
    let long = format!("{}/file", "directory".repeat(20));
    let layer = Tar::new().file(&long, "long").bytes();
    apply(&sandbox.root, &[layer]).expect("apply");
    assert_eq!(fs::read(sandbox.path(&long)).expect("long"), b"long");
}

#[test]
fn whiteouts_in_overlay_mode_never_delete() {
    let sandbox = Sandbox::new();
    let lower = Tar::new().file("a", "lower").bytes();
    let upper = Tar::new().file(".wh.a", "").bytes();
    let options = Options {
        whiteouts: Whiteouts::Overlay,
        ..options()
    };
    apply_with(&sandbox.root, options, &[lower, upper]).expect("apply");
    let meta = fs::symlink_metadata(sandbox.path("a")).expect("a");
    assert!(
        meta.file_type().is_char_device(),
        "the whiteout replaces the file"
    );
}

#[test]
fn gnu_long_names_and_long_link_names_are_applied() {
    let long_dir = "d".repeat(120);
    let file = format!("{long_dir}/file");
    let link = format!("{long_dir}/link-with-a-long-target");
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, &file, &b"data"[..])
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_mode(0o777);
    builder
        .append_link(&mut header, &link, format!("/{file}"))
        .unwrap();
    let layer = builder.into_inner().unwrap();
    let sandbox = Sandbox::new();
    apply(&sandbox.root, &[layer]).expect("apply");
    assert_eq!(fs::read(sandbox.path(&file)).expect("file"), b"data");
    let target = fs::read_link(sandbox.path(&link)).expect("readlink");
    assert_eq!(target.to_str(), Some(format!("/{file}").as_str()));
}
