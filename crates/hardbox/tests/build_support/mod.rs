//! A signed Debian repository for `hardbox build` tests, made the way `scripts/fixture-repo`
//! makes one (dpkg-deb, apt-ftparchive, xz, gzip, gpg) but with packages that carry files,
//! modes, symlinks and maintainer scripts, served on loopback by `python3 -m http.server`.
//!
//! The packages cover what a resolver and a hardened build must get right:
//! - `fixture-tool` depends on a library (`libfixture1 (>= 1.0)`), on a virtual package
//!   (`fixture-mta`, provided by `fixture-mail`), on an alternative (`fixture-awk |
//!   gawk-fixture`), and on `fixture-docs`, which the spec excludes; its postinst sets up an
//!   `editor` alternative;
//! - `fixture-mail` ships a setuid and a setgid program;
//! - `fixture-shell` ships `bash` and `/bin/sh`;
//! - `libfixture1` ships `./lib64/` with a loader link, as libc6 does.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// `Date` of the fixture's Release: SOURCE_DATE_EPOCH 1700000000.
pub const RELEASE_DATE: &str = "Tue, 14 Nov 2023 22:13:20 UTC";
pub const RELEASE_EPOCH: u64 = 1_700_000_000;

/// The `hardbox` binary under test.
pub fn hardbox(root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hardbox"));
    cmd.arg("--root").arg(root);
    // The caller's SOURCE_DATE_EPOCH would change what the tests expect.
    cmd.env_remove("SOURCE_DATE_EPOCH");
    cmd
}

/// Runs a command; fails the test with its output unless it succeeds.
pub fn ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command that must fail with exit code 1; returns its stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{cmd:?} should fail with 1\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails loudly when a peer tool is missing (`scripts/test` installs them).
pub fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed; run scripts/test, which installs it"
    );
}

/// A file of a package: path, content, mode.
type File = (&'static str, &'static str, u32);

struct Package {
    name: &'static str,
    version: &'static str,
    architecture: &'static str,
    control: &'static str,
    files: &'static [File],
    symlinks: &'static [(&'static str, &'static str)],
    postinst: Option<&'static str>,
}

const DEP5_HEADER: &str =
    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n";

const PACKAGES: &[Package] = &[
    Package {
        name: "libfixture1",
        version: "1.2-1",
        architecture: "amd64",
        control: "Multi-Arch: same\nSection: libs\nPriority: optional\n",
        files: &[
            ("usr/lib/x86_64-linux-gnu/libfixture.so.1.2", "library\n", 0o644),
            ("usr/lib/x86_64-linux-gnu/ld-fixture.so.2", "loader\n", 0o755),
            ("usr/share/doc/libfixture1/copyright", "MIT", 0o644),
        ],
        symlinks: &[
            ("usr/lib/x86_64-linux-gnu/libfixture.so.1", "libfixture.so.1.2"),
            ("lib64/ld-fixture.so.2", "/usr/lib/x86_64-linux-gnu/ld-fixture.so.2"),
        ],
        postinst: None,
    },
    Package {
        name: "fixture-tool",
        version: "1.0-1",
        architecture: "amd64",
        control: "Depends: libfixture1 (>= 1.0), fixture-mta, fixture-awk | gawk-fixture, fixture-docs\n",
        files: &[
            ("usr/bin/fixture-tool", "#!/usr/bin/fixture-tool\ntool\n", 0o755),
            ("usr/bin/tool-editor", "editor\n", 0o755),
            ("usr/share/doc/fixture-tool/copyright", "Apache-2.0", 0o644),
            ("usr/share/doc/fixture-tool/changelog.Debian.gz", "log", 0o644),
            ("usr/share/man/man1/fixture-tool.1.gz", "man", 0o644),
        ],
        symlinks: &[],
        postinst: Some(
            "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n  update-alternatives --install /usr/bin/editor editor /usr/bin/tool-editor 50\nfi\n",
        ),
    },
    Package {
        name: "fixture-mail",
        version: "2.0-1",
        architecture: "amd64",
        control: "Provides: fixture-mta\n",
        files: &[
            ("usr/sbin/fixture-sendmail", "sendmail\n", 0o4755),
            ("usr/bin/fixture-lockfile", "lockfile\n", 0o2755),
            ("usr/share/doc/fixture-mail/copyright", "GPL-2+", 0o644),
        ],
        symlinks: &[],
        postinst: None,
    },
    Package {
        name: "fixture-awk",
        version: "1.0-1",
        architecture: "amd64",
        control: "",
        files: &[("usr/bin/fixture-awk", "awk\n", 0o755)],
        symlinks: &[],
        postinst: None,
    },
    Package {
        name: "gawk-fixture",
        version: "1.0-1",
        architecture: "amd64",
        control: "",
        files: &[("usr/bin/gawk-fixture", "gawk\n", 0o755)],
        symlinks: &[],
        postinst: None,
    },
    Package {
        name: "fixture-docs",
        version: "1.0-1",
        architecture: "all",
        control: "",
        files: &[("usr/share/fixture/manual.txt", "manual\n", 0o644)],
        symlinks: &[],
        postinst: None,
    },
    Package {
        name: "fixture-shell",
        version: "5.2-1",
        architecture: "amd64",
        control: "Essential: yes\nPriority: required\n",
        files: &[
            ("bin/bash", "#!bash\n", 0o755),
            ("usr/share/doc/fixture-shell/copyright", "GPL-3+", 0o644),
        ],
        symlinks: &[("bin/sh", "bash")],
        postinst: None,
    },
];

/// Runs a command, panicking with its stderr when it fails; returns stdout.
fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn build_deb(package: &Package, work: &Path, pool: &Path) {
    let tree = work.join(format!("tree-{}", package.name));
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    std::fs::write(
        tree.join("DEBIAN/control"),
        format!(
            "Package: {}\nVersion: {}\nArchitecture: {}\nMaintainer: Fixture Maintainers <fixture@example.invalid>\n{}Description: fixture package {}\n",
            package.name, package.version, package.architecture, package.control, package.name
        ),
    )
    .unwrap();
    if let Some(script) = package.postinst {
        let path = tree.join("DEBIAN/postinst");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (path, content, mode) in package.files {
        let full = tree.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        let content = if path.ends_with("/copyright") {
            // A machine-readable copyright file declaring `content` as the license.
            format!(
                "{DEP5_HEADER}Upstream-Name: {}\n\nFiles: *\nCopyright: 2023 Fixture Authors\nLicense: {content}\n",
                package.name
            )
        } else {
            (*content).to_owned()
        };
        std::fs::write(&full, content).unwrap();
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    for (path, target) in package.symlinks {
        let full = tree.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, &full).unwrap();
    }
    let version = package
        .version
        .split_once(':')
        .map_or(package.version, |(_, v)| v);
    let out = pool.join(format!(
        "{}_{version}_{}.deb",
        package.name, package.architecture
    ));
    run(Command::new("dpkg-deb")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&tree)
        .arg(&out)
        .stdout(Stdio::null()));
}

/// A fixture repository, its keyring, a spec using it, and a store root; the server stops and
/// the files go when it is dropped.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    gnupg: tempfile::TempDir,
    server: Child,
    pub url: String,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.gnupg.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

impl Fixture {
    pub fn new() -> Fixture {
        for tool in [
            "dpkg-deb",
            "apt-ftparchive",
            "gpg",
            "gpgconf",
            "xz",
            "gzip",
            "python3",
        ] {
            require_tool(tool);
        }
        let dir = tempfile::tempdir().unwrap();
        // Short path: gpg-agent's socket path must fit in sun_path.
        let gnupg = tempfile::Builder::new()
            .prefix("hbgpg")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(gnupg.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let repo = dir.path().join("repo");
        let pool = repo.join("pool/main");
        std::fs::create_dir_all(&pool).unwrap();
        let work = dir.path().join("work");
        for package in PACKAGES {
            build_deb(package, &work, &pool);
        }
        std::fs::remove_dir_all(&work).unwrap();
        let gpg = |args: &[&str]| {
            let mut cmd = Command::new("gpg");
            cmd.env("GNUPGHOME", gnupg.path()).args([
                "--batch",
                "--quiet",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ]);
            cmd.args(args);
            run(&mut cmd)
        };
        gpg(&[
            "--quick-gen-key",
            "Fixture Archive <archive@example.invalid>",
            "ed25519",
            "sign",
            "never",
        ]);
        std::fs::write(dir.path().join("keyring.gpg"), gpg(&["--export"])).unwrap();

        // The server's first line says which port it got.
        let mut server = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(&repo)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .split_whitespace()
            .find_map(|w| w.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        let fixture = Fixture {
            dir,
            gnupg,
            server,
            url: format!("http://127.0.0.1:{port}"),
        };
        fixture.publish(RELEASE_DATE);
        fixture.write_spec(&["fixture-tool", "fixture-shell", "'!fixture-docs'"]);
        fixture
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub fn dist(&self) -> PathBuf {
        self.repo().join("dists/stable")
    }

    /// The store root of the tests (`another` gives a second, empty one).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn spec(&self) -> PathBuf {
        self.dir.path().join("fixture.yaml")
    }

    pub fn lockfile(&self) -> PathBuf {
        self.dir.path().join("hardbox.lock.json")
    }

    pub fn hardbox(&self) -> Command {
        hardbox(&self.root())
    }

    /// The path of a package's `.deb` in the pool.
    pub fn deb(&self, name: &str) -> PathBuf {
        let pool = self.repo().join("pool/main");
        std::fs::read_dir(&pool)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{name}_"))
            })
            .unwrap_or_else(|| panic!("no {name} in {}", pool.display()))
    }

    /// Writes the spec with these `contents.packages` entries.
    pub fn write_spec(&self, packages: &[&str]) {
        let packages: String = packages.iter().map(|p| format!("    - {p}\n")).collect();
        std::fs::write(
            self.spec(),
            format!(
                "name: Fixture\nimage: hardbox.test/fixture\ntags: [\"1\"]\nplatforms: [linux/amd64]\n\
                 contents:\n  repositories:\n    - deb [signed-by={}] {} stable main\n  packages:\n{packages}\
                 accounts:\n  run-as: nonroot\nentrypoint: [/usr/bin/fixture-tool]\n\
                 annotations:\n  org.opencontainers.image.vendor: hardbox tests\n",
                self.dir.path().join("keyring.gpg").display(),
                self.url
            ),
        )
        .unwrap();
    }

    /// (Re)writes Packages, Release (with `date` as its Date) and the signed InRelease and
    /// Release.gpg.
    pub fn publish(&self, date: &str) {
        let repo = self.repo();
        let bin = repo.join("dists/stable/main/binary-amd64");
        std::fs::create_dir_all(&bin).unwrap();
        let packages = run(Command::new("apt-ftparchive")
            .current_dir(&repo)
            .args(["packages", "pool/main"]));
        std::fs::write(bin.join("Packages"), &packages).unwrap();
        run(Command::new("xz")
            .args(["-k", "-f"])
            .arg(bin.join("Packages")));
        run(Command::new("gzip")
            .args(["-k", "-f", "-n"])
            .arg(bin.join("Packages")));
        let release = run(Command::new("apt-ftparchive").current_dir(&repo).args([
            "-o",
            "APT::FTPArchive::Release::Origin=hardbox-fixture",
            "-o",
            "APT::FTPArchive::Release::Label=hardbox-fixture",
            "-o",
            "APT::FTPArchive::Release::Suite=stable",
            "-o",
            "APT::FTPArchive::Release::Codename=fixture",
            "-o",
            "APT::FTPArchive::Release::Architectures=amd64",
            "-o",
            "APT::FTPArchive::Release::Components=main",
            "release",
            "dists/stable",
        ]));
        let release: String = String::from_utf8(release)
            .unwrap()
            .lines()
            .map(|l| {
                if l.starts_with("Date:") {
                    format!("Date: {date}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let dist = self.dist();
        // A republished file must look newer to If-Modified-Since, which counts in seconds.
        let newer = std::fs::metadata(dist.join("InRelease"))
            .and_then(|m| m.modified())
            .ok()
            .map(|t| t + std::time::Duration::from_secs(60));
        std::fs::write(dist.join("Release"), release).unwrap();
        let sign = |args: &[&str]| {
            run(Command::new("gpg")
                .env("GNUPGHOME", self.gnupg.path())
                .args([
                    "--batch",
                    "--quiet",
                    "--yes",
                    "--no-tty",
                    "--pinentry-mode",
                    "loopback",
                    "--passphrase",
                    "",
                    "--digest-algo",
                    "SHA512",
                ])
                .args(args));
        };
        let (release, inrelease, signature) = (
            dist.join("Release"),
            dist.join("InRelease"),
            dist.join("Release.gpg"),
        );
        sign(&[
            "--clearsign",
            "--output",
            inrelease.to_str().unwrap(),
            release.to_str().unwrap(),
        ]);
        sign(&[
            "--armor",
            "--detach-sign",
            "--output",
            signature.to_str().unwrap(),
            release.to_str().unwrap(),
        ]);
        if let Some(newer) = newer {
            for path in [&release, &inrelease, &signature] {
                std::fs::File::options()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_modified(newer))
                    .unwrap();
            }
        }
    }
}

/// Walks `dir` (not following symlinks) and returns every path below it.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                pending.push(path.clone());
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Regular files with a setuid or setgid bit below `dir`.
pub fn setid_files(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| {
            let meta = std::fs::symlink_metadata(p).unwrap();
            meta.is_file() && meta.permissions().mode() & 0o6000 != 0
        })
        .collect()
}

/// The manifest digest `hardbox build` printed (`built sha256:... NAME`).
pub fn built_digest(out: &Output) -> String {
    let text = stdout(out);
    text.lines()
        .find_map(|l| l.strip_prefix("built "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in:\n{text}"))
        .to_owned()
}
