//! End-to-end: images made by umoci are imported and unpacked by hardbox to the same tree, and
//! images exported by hardbox are accepted by skopeo and unpack under umoci to the same tree.
//! Peers are the oracles; these tests run as root (CI does) and need skopeo and umoci.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{assert_same_tree, hardbox, require_root, require_tool, run_ok};

/// A capability set granting cap_net_bind_service (VFS_CAP_REVISION_2, effective).
const NET_BIND_CAPABILITY: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// Fills `rootfs` with one of everything an image may hold.
fn populate(rootfs: &Path) {
    let p = |rel: &str| rootfs.join(rel);
    for dir in ["etc", "usr/bin", "usr/lib", "var/empty", "tmp", "home/user"] {
        std::fs::create_dir_all(p(dir)).unwrap();
    }
    std::fs::set_permissions(p("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(p("var/empty"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(p("etc/hostname"), "oracle\n").unwrap();
    std::fs::write(p("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(p("usr/bin/tool"), vec![0x7f; 70_000]).unwrap();
    std::fs::set_permissions(p("usr/bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(p("usr/bin/su-like"), b"setuid").unwrap();
    std::fs::set_permissions(
        p("usr/bin/su-like"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::write(p("usr/bin/ping-like"), b"capable").unwrap();
    rustix::fs::setxattr(
        p("usr/bin/ping-like"),
        "security.capability",
        &NET_BIND_CAPABILITY,
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    std::fs::hard_link(p("usr/bin/tool"), p("usr/bin/tool-hardlink")).unwrap();
    symlink("tool", p("usr/bin/relative-link")).unwrap();
    symlink("/etc/passwd", p("usr/lib/absolute-link")).unwrap();
    symlink("../../nowhere", p("usr/lib/dangling-link")).unwrap();
    std::fs::write(p("home/user/notes.txt"), "mine").unwrap();
    rustix::fs::chown(
        p("home/user/notes.txt"),
        Some(rustix::fs::Uid::from_raw(1000)),
        Some(rustix::fs::Gid::from_raw(1000)),
    )
    .unwrap();
    rustix::fs::chown(
        p("home/user"),
        Some(rustix::fs::Uid::from_raw(1000)),
        Some(rustix::fs::Gid::from_raw(1000)),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p("etc/null-like"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p("tmp/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
}

/// Builds a two-layer image with umoci: the populated tree, then a change set with deletions
/// (whiteouts), a replaced file and a new directory. Returns the layout and umoci's unpack of it,
/// which is what hardbox must unpack the image to.
fn umoci_image(work: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let layout = work.join("umoci-layout");
    let bundle = work.join("umoci-bundle");
    let image = format!("{}:img", layout.display());
    run_ok(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
    );
    run_ok(Command::new("umoci").args(["new", "--image", &image]));
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    populate(&rootfs);
    run_ok(
        Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle),
    );
    // Second layer, from a fresh bundle of the first (umoci appends a layer to what a bundle was
    // unpacked from): whiteouts and replacements.
    let bundle = work.join("umoci-bundle-2");
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    std::fs::remove_file(rootfs.join("etc/hostname")).unwrap();
    std::fs::remove_dir_all(rootfs.join("var/empty")).unwrap();
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0::/root:/sbin/nologin\n",
    )
    .unwrap();
    std::fs::create_dir_all(rootfs.join("opt/app")).unwrap();
    std::fs::write(rootfs.join("opt/app/run"), "#!/bin/true\n").unwrap();
    run_ok(
        Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle),
    );
    // The reference is umoci's own unpack of the finished image: the layers record times rounded
    // to the second, so the bundle's (nanosecond) times are not what any unpacker can restore.
    let reference = work.join("umoci-reference");
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&reference),
    );
    assert!(!rootfs.join("etc/hostname").exists());
    (layout, reference.join("rootfs"))
}

#[test]
fn umoci_image_unpacks_to_the_same_tree_as_umoci_made_it() {
    require_root();
    require_tool("umoci");
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let (layout, rootfs) = umoci_image(work.path());

    run_ok(hardbox(&store).args(["image", "import"]).arg(&layout));
    let out = work.path().join("unpacked");
    run_ok(hardbox(&store).args(["image", "unpack", "img"]).arg(&out));

    assert_same_tree(&rootfs, &out);
    assert!(!out.join("etc/hostname").exists(), "whiteout not applied");
    run_ok(hardbox(&store).args(["system", "fsck"]));
}

#[test]
fn hardbox_exports_are_accepted_by_skopeo_and_unpack_identically_with_umoci() {
    require_root();
    require_tool("umoci");
    require_tool("skopeo");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let store = w.join("store");
    let (layout, _) = umoci_image(w);
    run_ok(
        hardbox(&store)
            .args(["image", "import", "--tag", "oracle:1"])
            .arg(&layout),
    );
    let reference = w.join("reference");
    run_ok(
        hardbox(&store)
            .args(["image", "unpack", "oracle:1"])
            .arg(&reference),
    );

    // The store itself is an OCI layout that skopeo can read.
    run_ok(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:oracle:1", store.display())),
    );

    for (format, transport) in [
        ("oci-dir", "oci"),
        ("oci-archive", "oci-archive"),
        ("docker-archive", "docker-archive"),
    ] {
        let exported = w.join(format!("export-{format}"));
        run_ok(
            hardbox(&store)
                .args(["image", "export", "oracle:1", "--format", format, "-o"])
                .arg(&exported),
        );
        let source = if format == "oci-dir" {
            format!("{transport}:{}:oracle:1", exported.display())
        } else {
            format!("{transport}:{}", exported.display())
        };
        let inspect = run_ok(Command::new("skopeo").args(["inspect", &source]));
        let json: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
        assert_eq!(json["Os"], "linux", "{format}: {json}");
        assert_eq!(
            json["Layers"].as_array().map(Vec::len),
            Some(2),
            "{format}: {json}"
        );

        let copy = w.join(format!("copy-{format}"));
        run_ok(Command::new("skopeo").args([
            "copy",
            "--quiet",
            &source,
            &format!("oci:{}:copy", copy.display()),
        ]));
        let bundle = w.join(format!("bundle-{format}"));
        run_ok(
            Command::new("umoci")
                .args(["unpack", "--image", &format!("{}:copy", copy.display())])
                .arg(&bundle),
        );
        assert_same_tree(&reference, &bundle.join("rootfs"));
    }
}

#[test]
fn unknown_reference_is_an_error_naming_it_with_a_hint() {
    let work = tempfile::tempdir().unwrap();
    let out = hardbox(&work.path().join("store"))
        .args(["image", "unpack", "no-such-image:1"])
        .arg(work.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-image:1"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
    assert!(!work.path().join("out").exists());
}
