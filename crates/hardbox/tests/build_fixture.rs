#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! `hardbox build` and `hardbox lock` end to end against a signed repository served on
//! loopback: what gets installed and removed, reproducibility with and without a lock, and
//! tampered packages and metadata stopping the build before the store changes. skopeo and
//! umoci read the images.

mod build_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use build_support::{
    built_digest, fails, ok, require_tool, setid_files, stdout, Fixture, RELEASE_EPOCH,
};
use serde_json::Value;

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(out)))
}

/// Blobs in a store (none in a store nothing was added to).
fn blob_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn assert_store_clean_and_empty(fixture: &Fixture) {
    let images = json(&ok(fixture.hardbox().args(["image", "ls", "--json"])));
    assert_eq!(images, serde_json::json!([]), "nothing was added");
    assert_eq!(blob_count(&fixture.root()), 0, "no blob was stored");
    let fsck = ok(fixture.hardbox().args(["system", "fsck"]));
    assert!(stdout(&fsck).contains("no damage"), "{}", stdout(&fsck));
}

#[test]
fn build_resolves_hardens_and_peers_read_the_image() {
    require_tool("skopeo");
    require_tool("umoci");
    let fixture = Fixture::new();
    let out = ok(fixture
        .hardbox()
        .arg("build")
        .arg(fixture.spec())
        .arg("--json"));
    let outcome = json(&out);
    let names: Vec<&str> = outcome["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    // The library, the virtual package's provider and the first alternative come in; the
    // excluded dependency and the second alternative do not.
    assert_eq!(
        names,
        [
            "fixture-awk",
            "fixture-mail",
            "fixture-shell",
            "fixture-tool",
            "libfixture1"
        ]
    );
    assert_eq!(outcome["source_date_epoch"], RELEASE_EPOCH);
    assert_eq!(outcome["source_date_epoch_from"], "release");
    assert_eq!(
        outcome["tags"],
        serde_json::json!(["hardbox.test/fixture:1"])
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: fixture-tool -> fixture-docs: left unsatisfied"),
        "{stderr}"
    );
    let removed = outcome["report"]["removed"].to_string();
    assert!(
        removed.contains("/usr/bin/bash") && removed.contains("shell"),
        "{removed}"
    );
    let changed = outcome["report"]["changed"].to_string();
    assert!(changed.contains("/usr/sbin/fixture-sendmail"), "{changed}");
    let referrers: Vec<&str> = outcome["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["artifact_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        referrers,
        ["application/spdx+json", "application/vnd.cyclonedx+json"]
    );

    let listed = json(&ok(fixture.hardbox().args(["image", "ls", "--json"])));
    assert_eq!(listed[0]["names"][0], "hardbox.test/fixture:1");
    assert_eq!(listed[0]["digest"], outcome["manifest"]["digest"]);

    // skopeo and umoci read the exported image.
    let layout = fixture.dir.path().join("layout");
    ok(fixture
        .hardbox()
        .args([
            "image",
            "export",
            "hardbox.test/fixture:1",
            "--format",
            "oci-dir",
            "-o",
        ])
        .arg(&layout));
    let reference = format!("oci:{}:hardbox.test/fixture:1", layout.display());
    let config: Value = serde_json::from_slice(
        &ok(Command::new("skopeo").args(["inspect", "--config", &reference])).stdout,
    )
    .unwrap();
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    let bundle = fixture.dir.path().join("bundle");
    ok(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:hardbox.test/fixture:1", layout.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    for shell in ["usr/bin/bash", "usr/bin/sh", "bin/sh", "bin/bash"] {
        assert!(
            std::fs::symlink_metadata(rootfs.join(shell)).is_err(),
            "{shell} is still in the image"
        );
    }
    assert_eq!(setid_files(&rootfs), Vec::<std::path::PathBuf>::new());
    let sendmail = std::fs::metadata(rootfs.join("usr/sbin/fixture-sendmail")).unwrap();
    assert_eq!(sendmail.permissions().mode() & 0o7777, 0o755);
    // The library, the alternative set up natively, the loader link below /lib64.
    assert_eq!(
        std::fs::read(rootfs.join("usr/lib/x86_64-linux-gnu/libfixture.so.1")).unwrap(),
        b"library\n"
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("usr/bin/editor")).unwrap(),
        Path::new("/etc/alternatives/editor")
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("etc/alternatives/editor")).unwrap(),
        Path::new("/usr/bin/tool-editor")
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("usr/lib64/ld-fixture.so.2")).unwrap(),
        Path::new("/usr/lib/x86_64-linux-gnu/ld-fixture.so.2")
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("lib64")).unwrap(),
        Path::new("usr/lib64")
    );
    assert!(!rootfs.join("usr/share/fixture/manual.txt").exists());
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    let status = std::fs::read_to_string(rootfs.join("var/lib/dpkg/status")).unwrap();
    assert!(status.contains("Package: libfixture1\n"), "{status}");

    let fsck = ok(fixture.hardbox().args(["system", "fsck"]));
    assert!(stdout(&fsck).contains("no damage"), "{}", stdout(&fsck));
}

#[test]
fn same_spec_and_lock_give_the_same_image() {
    let fixture = Fixture::new();
    let build = |root: &Path, extra: &[&str]| {
        built_digest(&ok(build_support::hardbox(root)
            .arg("build")
            .arg(fixture.spec())
            .args(extra)))
    };
    let first = build(&fixture.root(), &[]);
    assert_eq!(
        build(&fixture.root(), &[]),
        first,
        "second build, warm cache"
    );
    let other_root = fixture.dir.path().join("other-store");
    assert_eq!(build(&other_root, &[]), first, "another store, cold cache");

    // The lock is written next to the spec; a locked build installs the same set.
    let out = ok(fixture.hardbox().arg("lock").arg(fixture.spec()));
    assert!(stdout(&out).contains("5 packages"), "{}", stdout(&out));
    let lock: Value = serde_json::from_slice(&std::fs::read(fixture.lockfile()).unwrap()).unwrap();
    assert_eq!(lock["packages"].as_array().unwrap().len(), 5);
    assert_eq!(build(&fixture.root(), &["--locked"]), first);

    // The archive moves on: a new Release with another date. Unlocked builds follow it; the
    // locked build keeps the date of the Release it was resolved from.
    fixture.publish("Wed, 15 Nov 2023 00:00:00 UTC");
    let moved = build(&fixture.root(), &[]);
    assert_ne!(moved, first);
    assert_eq!(build(&fixture.root(), &["--locked"]), first);
    // A store that never saw that Release cannot know its date: it says so, and the caller's
    // SOURCE_DATE_EPOCH settles it.
    let fresh = fixture.dir.path().join("fresh-store");
    let stderr = fails(
        build_support::hardbox(&fresh)
            .arg("build")
            .arg(fixture.spec())
            .arg("--locked"),
    );
    assert!(
        stderr.contains("cannot find the SOURCE_DATE_EPOCH of the locked build")
            && stderr.contains("/dists/stable/InRelease"),
        "{stderr}"
    );
    let epoch = RELEASE_EPOCH.to_string();
    assert_eq!(
        build(&fresh, &["--locked", "--source-date-epoch", &epoch]),
        first
    );
    assert_eq!(
        built_digest(&ok(build_support::hardbox(&fresh)
            .env("SOURCE_DATE_EPOCH", &epoch)
            .arg("build")
            .arg(fixture.spec())
            .arg("--locked"))),
        first
    );

    // A spec whose requests changed no longer matches its lock.
    fixture.write_spec(&["fixture-tool", "'!fixture-docs'"]);
    let stderr = fails(
        fixture
            .hardbox()
            .arg("build")
            .arg(fixture.spec())
            .arg("--locked"),
    );
    assert!(
        stderr.contains("was made for other packages than")
            && stderr.contains("hint: run 'hardbox lock SPEC'"),
        "{stderr}"
    );
}

#[test]
fn a_tampered_deb_stops_the_build_before_the_store() {
    let fixture = Fixture::new();
    // Same size, one byte changed: only the digest can tell.
    let deb = fixture.deb("libfixture1");
    let mut bytes = std::fs::read(&deb).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&deb, bytes).unwrap();
    let stderr = fails(fixture.hardbox().arg("build").arg(fixture.spec()));
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        stderr.contains("sha256 mismatch") && stderr.contains(&name),
        "{stderr}"
    );
    assert_store_clean_and_empty(&fixture);
    // Nothing unverified entered the download cache either.
    let cached = fixture.root().join("cache/debian/debs/sha256");
    for entry in std::fs::read_dir(cached).unwrap() {
        let path = entry.unwrap().path();
        let digest = format!("sha256:{}", path.file_name().unwrap().to_string_lossy());
        let actual = types::Digest::of(&std::fs::read(&path).unwrap()).to_string();
        assert_eq!(actual, digest);
    }
}

#[test]
fn a_tampered_inrelease_stops_the_build_before_the_store() {
    let fixture = Fixture::new();
    let inrelease = fixture.dist().join("InRelease");
    let text = std::fs::read_to_string(&inrelease).unwrap();
    std::fs::write(
        &inrelease,
        text.replace("Origin: hardbox-fixture", "Origin: hardbox-fixturf"),
    )
    .unwrap();
    let stderr = fails(fixture.hardbox().arg("build").arg(fixture.spec()));
    assert!(
        stderr.contains("failed to verify the signature of")
            && stderr.contains("/dists/stable/InRelease"),
        "{stderr}"
    );
    assert_store_clean_and_empty(&fixture);
    let stderr = fails(fixture.hardbox().arg("lock").arg(fixture.spec()));
    assert!(stderr.contains("/dists/stable/InRelease"), "{stderr}");
    assert!(!fixture.lockfile().exists());
}

#[test]
fn bad_specs_and_repositories_are_named() {
    let fixture = Fixture::new();
    std::fs::write(fixture.spec(), "name: x\ncontents:\n  pakages: [aa]\n").unwrap();
    let stderr = fails(fixture.hardbox().arg("build").arg(fixture.spec()));
    assert!(
        stderr.contains("fixture.yaml") && stderr.contains("pakages"),
        "{stderr}"
    );

    std::fs::write(
        fixture.spec(),
        "name: x\ncontents:\n  repositories:\n    - deb [trusted=yes] http://127.0.0.1:9/x stable main\n  packages: [aa]\n",
    )
    .unwrap();
    let stderr = fails(fixture.hardbox().arg("build").arg(fixture.spec()));
    assert!(
        stderr.contains("contents.repositories") && stderr.contains("trusted=yes"),
        "{stderr}"
    );

    fixture.write_spec(&["fixture-tool", "no-such-package"]);
    let stderr = fails(fixture.hardbox().arg("build").arg(fixture.spec()));
    assert!(stderr.contains("no-such-package"), "{stderr}");
    assert_store_clean_and_empty(&fixture);
}
