#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! `debian::deb` against packages built by the real `dpkg-deb`, in every compression it writes,
//! and against broken packages made by hand.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use debian::deb::{Compression, DebError, DebFile};

/// Builds `name_1.0_all.deb` in `dir` with `dpkg-deb -Z compression`.
fn build_deb(dir: &Path, compression: &str) -> PathBuf {
    let root = dir.join(format!("root-{compression}"));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        "Package: hello\nVersion: 1.0-1\nArchitecture: all\nMaintainer: Test <t@example.invalid>\nDescription: test package\n multi-line\n",
    )
    .unwrap();
    std::fs::write(
        root.join("DEBIAN/postinst"),
        "#!/bin/sh\nupdate-alternatives --install /usr/bin/hi hi /usr/bin/hello 50\n",
    )
    .unwrap();
    std::fs::write(root.join("DEBIAN/conffiles"), "/etc/hello.conf\n").unwrap();
    std::fs::write(
        root.join("DEBIAN/md5sums"),
        "b1946ac92492d2347c6235b4d2611184  usr/bin/hello\n",
    )
    .unwrap();
    std::fs::write(root.join("usr/bin/hello"), "hello\n").unwrap();
    std::fs::write(root.join("etc/hello.conf"), "x=1\n").unwrap();
    let mut perms = std::fs::metadata(root.join("DEBIAN/postinst"))
        .unwrap()
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(root.join("DEBIAN/postinst"), perms).unwrap();
    let out = dir.join(format!("hello-{compression}.deb"));
    let status = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Z", compression, "--build"])
        .arg(&root)
        .arg(&out)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    out
}

fn data_names(deb: &DebFile) -> Vec<String> {
    let mut archive = tar::Archive::new(deb.data().unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn reads_dpkg_deb_output_in_every_compression() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, expected) in [
        ("xz", Compression::Xz),
        ("gzip", Compression::Gzip),
        ("zstd", Compression::Zstd),
        ("none", Compression::None),
    ] {
        let path = build_deb(dir.path(), flag);
        let deb = DebFile::open(&path).unwrap();
        assert_eq!(deb.data_compression(), expected, "{flag}");
        let control = deb.control();
        let paragraphs = debian::control::parse(&control.paragraph).unwrap();
        assert_eq!(paragraphs[0].get("Package"), Some("hello"));
        assert_eq!(paragraphs[0].get("Version"), Some("1.0-1"));
        assert!(control.scripts["postinst"].contains("update-alternatives --install"));
        assert_eq!(control.conffiles, vec!["/etc/hello.conf".to_owned()]);
        assert!(control
            .md5sums
            .as_deref()
            .unwrap()
            .contains("usr/bin/hello"));
        let names = data_names(&deb);
        assert!(names.contains(&"./usr/bin/hello".to_owned()), "{names:?}");
        assert!(names.contains(&"./etc/hello.conf".to_owned()), "{names:?}");
        let mut archive = tar::Archive::new(deb.data().unwrap());
        let mut found = String::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().ends_with("usr/bin/hello") {
                entry.read_to_string(&mut found).unwrap();
            }
        }
        assert_eq!(found, "hello\n");
    }
}

/// Writes an `ar` archive with the given members.
fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, bytes) in members {
        out.extend_from_slice(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                name,
                0,
                0,
                0,
                "100644",
                bytes.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(bytes);
        if bytes.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

fn expect_error(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let err = DebFile::open(&path).unwrap_err();
    let text = format!("{err}");
    assert!(text.contains(name), "error does not name the file: {text}");
    text
}

#[test]
fn malformed_packages_are_errors_naming_file_and_member() {
    let dir = tempfile::tempdir().unwrap();
    let text = expect_error(dir.path(), "empty.deb", b"");
    assert!(text.contains("ar magic"), "{text}");
    let text = expect_error(dir.path(), "magic.deb", b"PK\x03\x04 not an ar archive");
    assert!(text.contains("ar magic"), "{text}");

    let text = expect_error(
        dir.path(),
        "missing.deb",
        &ar(&[("debian-binary", b"2.0\n")]),
    );
    assert!(text.contains("debian-binary"), "{text}");

    let mut truncated = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.gz", b"xxxx"),
        ("data.tar.xz", &[0u8; 100]),
    ]);
    truncated.truncate(truncated.len() - 50);
    let text = expect_error(dir.path(), "truncated.deb", &truncated);
    assert!(text.contains("data.tar.xz"), "{text}");

    let text = expect_error(
        dir.path(),
        "bzip2.deb",
        &ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz", b"xx"),
            ("data.tar.bz2", b"BZh"),
        ]),
    );
    assert!(
        text.contains("data.tar.bz2") && text.contains("bz2"),
        "{text}"
    );

    let text = expect_error(
        dir.path(),
        "badcontrol.deb",
        &ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz", b"definitely not gzip"),
            ("data.tar", b""),
        ]),
    );
    assert!(text.contains("control.tar.gz"), "{text}");

    let text = expect_error(
        dir.path(),
        "version.deb",
        &ar(&[
            ("debian-binary", b"3.0\n"),
            ("control.tar", b""),
            ("data.tar", b""),
        ]),
    );
    assert!(
        text.contains("debian-binary") && text.contains("3.0"),
        "{text}"
    );
}

#[test]
fn corrupt_data_member_fails_while_streaming_naming_the_member() {
    let dir = tempfile::tempdir().unwrap();
    let good = build_deb(dir.path(), "xz");
    let deb = DebFile::open(&good).unwrap();
    let member = deb.data_member().clone();
    let mut bytes = std::fs::read(&good).unwrap();
    // Flip bytes in the middle of the compressed data member.
    let middle = (member.offset + member.size / 2) as usize;
    for b in &mut bytes[middle..middle + 8] {
        *b ^= 0xff;
    }
    let bad = dir.path().join("corrupt.deb");
    std::fs::write(&bad, &bytes).unwrap();
    let deb = DebFile::open(&bad).unwrap();
    let mut sink = Vec::new();
    let err = deb.data().unwrap().read_to_end(&mut sink).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("corrupt.deb") && text.contains("data.tar.xz"),
        "{text}"
    );
    assert!(matches!(
        DebFile::open(&dir.path().join("absent.deb")),
        Err(DebError::Io { .. })
    ));
}
