#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! The builder end to end on packages made by the real `dpkg-deb`: assembly, native script
//! equivalents, hardening, the dpkg database, determinism, and the image in a store checked by
//! hardbox's fsck, skopeo and umoci.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use build::spec::Spec;
use build::tree::Kind;
use build::{assemble, AssembleOptions, BuildOptions, InstalledDeb};
use oci::{ExportFormat, Store};

/// Files of a test package: (path, content, mode).
type Files<'a> = &'a [(&'a str, &'a str, u32)];

/// Builds a package with `dpkg-deb --build`: control fields, files and maintainer scripts.
fn deb(
    dir: &Path,
    name: &str,
    extra_control: &str,
    files: Files,
    scripts: &[(&str, &str)],
) -> PathBuf {
    let root = dir.join(format!("src-{name}"));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: Test <t@example.invalid>\n{extra_control}Description: test package {name}\n"
        ),
    )
    .unwrap();
    for (script, text) in scripts {
        let path = root.join("DEBIAN").join(script);
        std::fs::write(&path, text).unwrap();
        let mode = if *script == "conffiles" { 0o644 } else { 0o755 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    for (path, content, mode) in files {
        let full = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, content).unwrap();
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let out = dir.join(format!("{name}.deb"));
    let result = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&root)
        .arg(&out)
        .output()
        .unwrap();
    assert!(result.status.success(), "{result:?}");
    out
}

/// The test packages: a libc-like base, a tool with an alternative, a setuid program, docs and
/// a shell, and one replacing a file of another.
fn packages(dir: &Path) -> Vec<PathBuf> {
    vec![
        deb(
            dir,
            "base",
            "Multi-Arch: same\n",
            &[
                ("/bin/true", "#!true\n", 0o755),
                ("/etc/os-release", "ID=debian\n", 0o644),
                ("/etc/ssh/ssh_host_ed25519_key", "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n", 0o600),
                ("/usr/share/zoneinfo/Etc/UTC", "TZif2", 0o644),
                ("/usr/share/ca-certificates/mozilla/B_Root.crt", "-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----", 0o644),
                ("/usr/share/ca-certificates/mozilla/A_Root.crt", "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n", 0o644),
                ("/usr/share/locale/de/LC_MESSAGES/base.mo", "de", 0o644),
                ("/usr/share/locale/locale.alias", "alias", 0o644),
                ("/var/tmp/.keep", "", 0o644),
                ("/opt/shared", "from base\n", 0o666),
            ],
            &[],
        ),
        deb(
            dir,
            "tool",
            "Depends: base\n",
            &[
                ("/usr/bin/tool.real", "tool\n", 0o755),
                ("/usr/bin/passwd-ish", "suid\n", 0o4755),
                ("/usr/share/doc/tool/copyright", "MIT\n", 0o644),
                ("/usr/share/doc/tool/changelog.gz", "log", 0o644),
                ("/usr/share/man/man1/tool.1.gz", "man", 0o644),
                ("/etc/tool.conf", "a=1\n", 0o644),
            ],
            &[(
                "postinst",
                "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n  update-alternatives --install /usr/bin/tool tool /usr/bin/tool.real 50 \\\n    --slave /usr/share/man/man1/t.1.gz t.1.gz /usr/share/man/man1/tool.1.gz\nfi\n",
            ), ("conffiles", "/etc/tool.conf\n")],
        ),
        deb(
            dir,
            "shell",
            "",
            &[
                ("/bin/sh", "shell\n", 0o755),
                ("/usr/bin/bash", "bash\n", 0o755),
                ("/usr/bin/dpkg", "dpkg\n", 0o755),
                ("/opt/shared", "from shell\n", 0o644),
            ],
            &[("preinst", "#!/bin/sh\nexit 0\n")],
        ),
    ]
}

fn installed(paths: &[PathBuf]) -> Vec<InstalledDeb> {
    paths
        .iter()
        .map(|p| InstalledDeb::open(p).unwrap())
        .collect()
}

fn options(epoch: u64) -> AssembleOptions {
    AssembleOptions {
        source_date_epoch: epoch,
        context: PathBuf::from("."),
        architecture: "amd64".into(),
    }
}

const SPEC: &str = "name: test\nvariant: runtime\ntags: [\"1\"]\nimage: hardbox.test/tool\nos-release:\n  id: debian\n  version-id: \"12\"\n  pretty-name: Test\nenvironment:\n  SSL_CERT_FILE: /etc/ssl/certs/ca-certificates.crt\nentrypoint: [/usr/bin/tool]\nwork-dir: /home/nonroot\npaths:\n  - type: directory\n    path: /app\n    uid: 65532\n    gid: 65532\n    mode: \"0750\"\n  - type: file\n    path: /app/config\n    content: \"x=1\\n\"\nannotations:\n  org.opencontainers.image.description: test image\n";

#[test]
fn assembles_packages_into_a_hardened_tree() {
    let dir = tempfile::tempdir().unwrap();
    let debs = installed(&packages(dir.path()));
    let spec = Spec::parse(SPEC, "test.yaml").unwrap();
    let (tree, report) = assemble(&spec, &debs, &options(1_000_000)).unwrap();

    // Later packages win, and it is recorded.
    assert_eq!(tree.read("opt/shared"), Some(&b"from shell\n"[..]));
    assert!(report
        .replaced
        .iter()
        .any(|r| r.path == "/opt/shared" && r.by == "shell" && r.from == "base"));
    // Merged /usr: /bin/true landed in /usr/bin.
    assert!(matches!(tree.get("bin").unwrap().kind, Kind::Symlink(_)));
    assert!(tree.get("usr/bin/true").is_some());

    // Accounts.
    let passwd = String::from_utf8(tree.read("etc/passwd").unwrap().to_vec()).unwrap();
    assert!(passwd.contains("root:x:0:0:"), "{passwd}");
    assert!(passwd.contains("nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin"));
    assert!(tree.get("home/nonroot").unwrap().uid == 65532);
    assert!(String::from_utf8_lossy(tree.read("etc/shadow").unwrap()).contains("nonroot:!:"));

    // CA bundle in byte order, newline added to the certificate that lacked one.
    assert_eq!(
        tree.read("etc/ssl/certs/ca-certificates.crt").unwrap(),
        b"-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n"
    );
    assert!(tree.get("etc/ssl/certs/A_Root.pem").is_some());

    // Alternatives from the postinst.
    assert_eq!(
        tree.get("usr/bin/tool").unwrap().kind,
        Kind::Symlink("/etc/alternatives/tool".into())
    );
    assert_eq!(tree.read("usr/bin/tool"), Some(&b"tool\n"[..]));
    assert_eq!(report.alternatives[0].priority, 50);

    // Time zone and os-release.
    assert_eq!(
        tree.get("etc/localtime").unwrap().kind,
        Kind::Symlink("/usr/share/zoneinfo/Etc/UTC".into())
    );
    assert_eq!(tree.read("etc/timezone"), Some(&b"Etc/UTC\n"[..]));
    let os = String::from_utf8_lossy(tree.read("etc/os-release").unwrap()).into_owned();
    assert!(
        os.contains("ID=\"debian\"") && os.contains("PRETTY_NAME=\"Test\""),
        "{os}"
    );

    // Hardening: no shells, no package manager, no setuid, no docs but copyright, no foreign
    // locales, no world-writable paths but /tmp, no host keys.
    for gone in [
        "usr/bin/sh",
        "usr/bin/bash",
        "usr/bin/dpkg",
        "usr/share/man",
        "usr/share/doc/tool/changelog.gz",
        "usr/share/locale/de",
        "etc/ssh/ssh_host_ed25519_key",
    ] {
        assert!(tree.get(gone).is_none(), "{gone} is still there");
    }
    assert!(tree.get("usr/share/doc/tool/copyright").is_some());
    assert!(tree.get("usr/share/locale/locale.alias").is_some());
    assert_eq!(tree.get("usr/bin/passwd-ish").unwrap().mode, 0o755);
    assert_eq!(tree.get("tmp").unwrap().mode, 0o1777);
    for (path, entry) in tree.iter() {
        if path != "tmp" && !matches!(entry.kind, Kind::Symlink(_)) {
            assert_eq!(entry.mode & 0o002, 0, "{path} is world-writable");
        }
        assert!(entry.mtime <= 1_000_000, "{path}");
    }
    let reasons: Vec<_> = report
        .removed
        .iter()
        .map(|r| (r.path.as_str(), r.reason))
        .collect();
    assert!(
        reasons.contains(&("/usr/bin/sh", build::harden::Reason::Shell)),
        "{reasons:?}"
    );
    assert!(report
        .changed
        .iter()
        .any(|c| c.path == "/usr/bin/passwd-ish"));

    // Spec paths.
    assert_eq!(tree.get("app").unwrap().mode, 0o750);
    assert_eq!(tree.read("app/config"), Some(&b"x=1\n"[..]));

    // The dpkg database scanners read.
    let status = String::from_utf8_lossy(tree.read("var/lib/dpkg/status").unwrap()).into_owned();
    let paragraphs = debian::control::parse(&status).unwrap();
    let names: Vec<_> = paragraphs
        .iter()
        .map(|p| p.get("Package").unwrap())
        .collect();
    assert_eq!(names, ["base", "shell", "tool"]);
    assert!(paragraphs
        .iter()
        .all(|p| p.get("Status") == Some("install ok installed")));
    let tool = paragraphs
        .iter()
        .find(|p| p.get("Package") == Some("tool"))
        .unwrap();
    assert!(tool.get("Conffiles").unwrap().contains("/etc/tool.conf"));
    let list =
        String::from_utf8_lossy(tree.read("var/lib/dpkg/info/tool.list").unwrap()).into_owned();
    assert!(
        list.starts_with("/.\n") && list.contains("/usr/bin/tool.real\n"),
        "{list}"
    );
    assert!(tree.get("var/lib/dpkg/info/base:amd64.list").is_some());
    assert!(tree.get("var/lib/dpkg/info/tool.md5sums").is_some());
    assert!(report
        .packages
        .iter()
        .any(|p| p.name == "tool" && p.scripts_not_run == ["postinst"]));
}

#[test]
fn dev_variant_keeps_shell_and_package_manager() {
    let dir = tempfile::tempdir().unwrap();
    let debs = installed(&packages(dir.path()));
    let spec = Spec::parse("variant: dev\naccounts:\n  run-as: root\n", "dev.yaml").unwrap();
    let (tree, _) = assemble(&spec, &debs, &options(0)).unwrap();
    assert_eq!(tree.read("bin/sh"), Some(&b"shell\n"[..]));
    assert!(tree.get("usr/bin/dpkg").is_some());
    assert_eq!(spec.run_as_ids(), Some((0, 0)));
}

/// Writes a `data.tar` by hand with `name` as an entry path, packs it into a `.deb`.
fn deb_with_raw_path(dir: &Path, name: &[u8]) -> PathBuf {
    let mut data = Vec::new();
    {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_size(4);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let mut builder = tar::Builder::new(&mut data);
        builder.append(&header, &b"evil"[..]).unwrap();
        builder.finish().unwrap();
    }
    let mut control = Vec::new();
    {
        let text = b"Package: evil\nVersion: 1\nArchitecture: all\n";
        let mut header = tar::Header::new_ustar();
        header.set_path("./control").unwrap();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        let mut builder = tar::Builder::new(&mut control);
        builder.append(&header, &text[..]).unwrap();
        builder.finish().unwrap();
    }
    let mut out = b"!<arch>\n".to_vec();
    for (member, bytes) in [
        ("debian-binary", &b"2.0\n"[..]),
        ("control.tar", &control),
        ("data.tar", &data),
    ] {
        out.extend_from_slice(
            format!(
                "{member:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
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
    let path = dir.join(format!("evil-{}.deb", name.len()));
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn assemble_rejects_dotdot_and_absolute_paths_in_data_tar() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::parse("name: x\n", "x.yaml").unwrap();
    for name in [&b"./usr/../../etc/passwd"[..], b"/etc/passwd"] {
        let path = deb_with_raw_path(dir.path(), name);
        let debs = installed(&[path]);
        let err = assemble(&spec, &debs, &options(0)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("evil-") && text.contains("etc/passwd"),
            "{text}"
        );
    }
}

#[test]
fn merged_usr_keeps_what_a_package_ships_below_lib64() {
    // libc6 ships ./lib64/ and ./lib64/ld-linux-x86-64.so.2: the loader every binary names.
    let dir = tempfile::tempdir().unwrap();
    let libc = deb(
        dir.path(),
        "libc",
        "",
        &[("/lib64/ld-linux-x86-64.so.2", "loader", 0o755)],
        &[],
    );
    let spec = Spec::parse("name: x\n", "x.yaml").unwrap();
    let (tree, _) = assemble(&spec, &installed(&[libc]), &options(0)).unwrap();
    assert!(matches!(&tree.get("lib64").unwrap().kind, Kind::Symlink(t) if t == "usr/lib64"));
    assert_eq!(
        tree.read("lib64/ld-linux-x86-64.so.2"),
        Some(&b"loader"[..])
    );

    // Without anything below /lib64, neither the link nor /usr/lib64 stays.
    let other = deb(dir.path(), "other", "", &[("/usr/bin/x", "x", 0o755)], &[]);
    let (tree, _) = assemble(&spec, &installed(&[other]), &options(0)).unwrap();
    assert!(tree.get("lib64").is_none() && tree.get("usr/lib64").is_none());
    assert!(matches!(&tree.get("lib").unwrap().kind, Kind::Symlink(_)));
}

fn build_once(store: &Store, debs: &[PathBuf], epoch: u64, tag: &str) -> build::BuildOutput {
    let spec = Spec::parse(SPEC, "test.yaml").unwrap();
    let paths: Vec<&Path> = debs.iter().map(PathBuf::as_path).collect();
    build::build(
        store,
        &spec,
        &paths,
        &BuildOptions {
            source_date_epoch: Some(epoch),
            tags: Some(vec![tag.to_owned()]),
            ..BuildOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn builds_are_reproducible_and_peers_accept_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let debs = packages(dir.path());
    let store = Store::open(&dir.path().join("store")).unwrap();
    let first = build_once(&store, &debs, 1_700_000_000, "tool:a");
    let other_store = Store::open(&dir.path().join("store2")).unwrap();
    let second = build_once(&other_store, &debs, 1_700_000_000, "tool:a");
    assert_eq!(first.manifest().digest, second.manifest().digest);
    let later = build_once(&store, &debs, 1_700_000_001, "tool:b");
    assert_ne!(first.manifest().digest, later.manifest().digest);

    let report = store.fsck().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let details = store.inspect("tool:a").unwrap();
    assert_eq!(details.config.user.as_deref(), Some("65532:65532"));
    assert_eq!(details.config.entrypoint, ["/usr/bin/tool"]);
    assert_eq!(details.created.as_deref(), Some("2023-11-14T22:13:20Z"));

    let layout = dir.path().join("layout");
    store
        .export("tool:a", ExportFormat::OciDir, &layout)
        .unwrap();
    let skopeo = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:tool:a", layout.display()))
        .output()
        .unwrap();
    assert!(skopeo.status.success(), "{skopeo:?}");
    let inspected: serde_json::Value = serde_json::from_slice(&skopeo.stdout).unwrap();
    assert_eq!(inspected["Created"], "2023-11-14T22:13:20Z");
    let bundle = dir.path().join("bundle");
    let umoci = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:tool:a", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(umoci.status.success(), "{umoci:?}");
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_link(rootfs.join("usr/bin/tool")).unwrap(),
        Path::new("/etc/alternatives/tool")
    );
    assert_eq!(
        std::fs::read(rootfs.join("usr/bin/tool.real")).unwrap(),
        b"tool\n"
    );
    assert!(std::fs::read_link(rootfs.join("bin")).unwrap() == Path::new("usr/bin"));
    assert!(!rootfs.join("usr/bin/sh").exists());
    let status = std::fs::read_to_string(rootfs.join("var/lib/dpkg/status")).unwrap();
    assert!(status.contains("Package: tool\nStatus: install ok installed\n"));
}

#[test]
fn layer_budget_splits_by_package_and_stays_valid() {
    let dir = tempfile::tempdir().unwrap();
    let debs = packages(dir.path());
    let store = Store::open(&dir.path().join("store")).unwrap();
    let spec = Spec::parse(
        &format!("{SPEC}layers:\n  max: 3\n  compression: zstd\n"),
        "t.yaml",
    )
    .unwrap();
    let paths: Vec<&Path> = debs.iter().map(PathBuf::as_path).collect();
    let out = build::build(&store, &spec, &paths, &BuildOptions::default()).unwrap();
    assert_eq!(out.image.layers.len(), 3);
    assert!(store.fsck().unwrap().is_clean());
    let target = dir.path().join("unpacked");
    store
        .unpack(&out.tags[0], &target, layer::Options::for_current_user())
        .unwrap();
    assert_eq!(
        std::fs::read(target.join("usr/bin/tool.real")).unwrap(),
        b"tool\n"
    );
    assert_eq!(
        std::fs::read(target.join("opt/shared")).unwrap(),
        b"from shell\n"
    );
    assert!(target.join("var/lib/dpkg/status").is_file());
}
