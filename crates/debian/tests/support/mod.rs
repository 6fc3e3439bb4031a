//! A real, signed Debian repository for tests, built with the tools Debian uses, and a loopback
//! HTTP server that can inject faults.
//!
//! - [`Gpg`]: a temporary GNUPGHOME; generates keys (`gpg --quick-gen-key`), exports them, and
//!   signs (`--clearsign`, `--detach-sign`). Its gpg-agent is stopped on drop.
//! - [`DebSpec`] / [`build_deb`]: a `.deb` built by `dpkg-deb --build` from a small tree with the
//!   given control fields and files.
//! - [`RepoBuilder`] / [`Repo`]: a repository tree (`pool/`, `dists/SUITE/...`) with `Packages`
//!   from `apt-ftparchive packages` (plus `.xz` and `.gz` from `xz` and `gzip`), `Release` from
//!   `apt-ftparchive release`, signed into `InRelease` and/or `Release.gpg`.
//! - [`Server`]: serves a directory on `127.0.0.1:0` (GET, `Range`, optional `Last-Modified`)
//!   with per-path [`Fault`]s (truncate, tamper, 404, ignore `Range`) and a request log.
//!
//! Use from an integration test with `mod support;`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use debian::fetch::DebRequest;
use debian::openpgp::Keyring;
use debian::sources::{SignedBy, Source};
use tempfile::TempDir;
use types::Digest;

/// Runs a command, panicking with its stderr when it fails; returns stdout.
pub fn run(cmd: &mut Command) -> Vec<u8> {
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

/// A temporary GnuPG home with its own agent.
pub struct Gpg {
    home: TempDir,
}

impl Default for Gpg {
    fn default() -> Self {
        Gpg::new()
    }
}

impl Gpg {
    pub fn new() -> Gpg {
        // Short path: the agent's socket path must fit in sun_path.
        let home = tempfile::Builder::new()
            .prefix("hbgpg")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(
            home.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        Gpg { home }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.home.path()).args([
            "--batch",
            "--quiet",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        c
    }

    /// Generates a key (`algo`: `ed25519`, `rsa2048`, ...; `usage`: `sign`, `cert`, ...;
    /// `expire`: `never`, `1d`, `seconds=N`) and returns its fingerprint.
    pub fn generate(&self, uid: &str, algo: &str, usage: &str, expire: &str) -> String {
        run(self
            .cmd()
            .args(["--quick-gen-key", uid, algo, usage, expire]));
        self.fingerprints(uid)[0].clone()
    }

    /// Adds a signing subkey to `primary` and returns the subkey's fingerprint.
    pub fn add_signing_subkey(&self, primary: &str, algo: &str) -> String {
        run(self
            .cmd()
            .args(["--quick-add-key", primary, algo, "sign", "never"]));
        self.fingerprints(primary).last().unwrap().clone()
    }

    /// The fingerprints of the primary key and subkeys matching `who`.
    pub fn fingerprints(&self, who: &str) -> Vec<String> {
        let out = run(self.cmd().args(["--with-colons", "--list-keys", who]));
        String::from_utf8(out)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("fpr:"))
            .map(|l| l.split(':').nth(9).unwrap().to_owned())
            .collect()
    }

    /// Exports public keys, binary or armored.
    pub fn export(&self, who: &str, armor: bool) -> Vec<u8> {
        let mut c = self.cmd();
        if armor {
            c.arg("--armor");
        }
        run(c.args(["--export", who]))
    }

    /// Writes `who`'s public keys as a binary keyring file.
    pub fn export_to(&self, who: &str, path: &Path) {
        std::fs::write(path, self.export(who, false)).unwrap();
    }

    /// Clearsigns `input` with each of `signers` (one signature each).
    pub fn clearsign(&self, signers: &[&str], input: &Path, output: &Path) {
        let mut c = self.cmd();
        c.args(["--yes", "--digest-algo", "SHA512", "--clearsign"]);
        for s in signers {
            c.args(["--local-user", &format!("{s}!")]);
        }
        run(c.arg("--output").arg(output).arg(input));
    }

    /// Makes an armored detached signature of `input` with each of `signers`.
    pub fn detach_sign(&self, signers: &[&str], input: &Path, output: &Path) {
        let mut c = self.cmd();
        c.args([
            "--yes",
            "--digest-algo",
            "SHA512",
            "--armor",
            "--detach-sign",
        ]);
        for s in signers {
            c.args(["--local-user", &format!("{s}!")]);
        }
        run(c.arg("--output").arg(output).arg(input));
    }

    /// Revokes `fingerprint` with the revocation certificate gpg made when generating it.
    pub fn revoke(&self, fingerprint: &str) {
        let rev = self
            .home()
            .join("openpgp-revocs.d")
            .join(format!("{fingerprint}.rev"));
        let text = std::fs::read_to_string(&rev).unwrap();
        // gpg prefixes the armor line with ':' so the file is not imported by accident.
        let text = text.replace(
            ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
        );
        let armored = self.home().join("revoke.asc");
        std::fs::write(&armored, text).unwrap();
        run(self.cmd().arg("--import").arg(&armored));
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A binary package to build: control fields and files.
#[derive(Debug, Clone)]
pub struct DebSpec {
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// Further control fields, in order (`Depends`, `Priority`, ...).
    pub fields: Vec<(String, String)>,
    /// Files of the data tree: path (relative, e.g. `usr/bin/x`) and contents.
    pub files: Vec<(String, Vec<u8>)>,
}

impl DebSpec {
    pub fn new(package: &str, version: &str) -> DebSpec {
        DebSpec {
            package: package.to_owned(),
            version: version.to_owned(),
            architecture: "amd64".to_owned(),
            fields: Vec::new(),
            files: vec![(
                format!("usr/share/doc/{package}/README"),
                format!("{package} {version}\n").into_bytes(),
            )],
        }
    }

    pub fn arch(mut self, architecture: &str) -> DebSpec {
        self.architecture = architecture.to_owned();
        self
    }

    pub fn field(mut self, name: &str, value: &str) -> DebSpec {
        self.fields.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn file(mut self, path: &str, contents: &[u8]) -> DebSpec {
        self.files.push((path.to_owned(), contents.to_vec()));
        self
    }

    /// The file name Debian gives it: `PACKAGE_VERSION_ARCH.deb` (epoch dropped).
    pub fn file_name(&self) -> String {
        let version = self
            .version
            .split_once(':')
            .map_or(self.version.as_str(), |(_, v)| v);
        format!("{}_{}_{}.deb", self.package, version, self.architecture)
    }
}

/// Builds `spec` with `dpkg-deb --build` into `out_dir` and returns the `.deb` path.
pub fn build_deb(spec: &DebSpec, out_dir: &Path) -> PathBuf {
    let tree = tempfile::tempdir().unwrap();
    let debian = tree.path().join("DEBIAN");
    std::fs::create_dir_all(&debian).unwrap();
    let mut control = format!(
        "Package: {}\nVersion: {}\nArchitecture: {}\nMaintainer: Fixture <fixture@example.invalid>\n",
        spec.package, spec.version, spec.architecture
    );
    let mut has_description = false;
    for (name, value) in &spec.fields {
        has_description |= name.eq_ignore_ascii_case("Description");
        control.push_str(&format!("{name}: {value}\n"));
    }
    if !has_description {
        control.push_str(&format!(
            "Description: fixture package {}\n test data\n",
            spec.package
        ));
    }
    std::fs::write(debian.join("control"), control).unwrap();
    for (path, contents) in &spec.files {
        let p = tree.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
    }
    std::fs::create_dir_all(out_dir).unwrap();
    let out = out_dir.join(spec.file_name());
    run(Command::new("dpkg-deb")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(tree.path())
        .arg(&out)
        .stdout(Stdio::null()));
    out
}

/// How the built repository's `Release` is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// `InRelease` only.
    InRelease,
    /// `Release` + `Release.gpg` only.
    Detached,
    /// Both, as Debian publishes.
    Both,
    /// `Release` alone, unsigned.
    None,
}

/// A package as it appears in the built repository's `Packages`.
#[derive(Debug, Clone)]
pub struct BuiltDeb {
    pub package: String,
    pub version: String,
    pub component: String,
    /// `Filename` (relative to the repository root).
    pub filename: String,
    pub sha256: Digest,
    pub size: u64,
}

impl BuiltDeb {
    /// The request a caller makes for this package from `repository` (a URI).
    pub fn request(&self, repository: &str) -> DebRequest {
        DebRequest {
            repository: repository.to_owned(),
            filename: self.filename.clone(),
            sha256: self.sha256.clone(),
            size: self.size,
        }
    }
}

/// Builds a signed repository.
pub struct RepoBuilder {
    suite: String,
    codename: String,
    arch: String,
    debs: Vec<(String, DebSpec)>,
    release_fields: Vec<(String, String)>,
    signing: Signing,
    signers: Vec<String>,
    compressions: Vec<&'static str>,
    valid_for: Option<Duration>,
    by_hash: bool,
}

impl Default for RepoBuilder {
    fn default() -> Self {
        RepoBuilder::new()
    }
}

impl RepoBuilder {
    /// Suite `stable`, codename `fixture`, architecture `amd64`, signed both ways, `Packages`
    /// published as `.xz`, `.gz` and uncompressed.
    pub fn new() -> RepoBuilder {
        RepoBuilder {
            suite: "stable".into(),
            codename: "fixture".into(),
            arch: "amd64".into(),
            debs: Vec::new(),
            release_fields: Vec::new(),
            signing: Signing::Both,
            signers: Vec::new(),
            compressions: vec!["xz", "gz", ""],
            valid_for: None,
            by_hash: false,
        }
    }

    pub fn suite(mut self, suite: &str, codename: &str) -> Self {
        self.suite = suite.into();
        self.codename = codename.into();
        self
    }

    pub fn arch(mut self, arch: &str) -> Self {
        self.arch = arch.into();
        self
    }

    /// Adds a package to `component`.
    pub fn deb(mut self, component: &str, spec: DebSpec) -> Self {
        self.debs.push((component.into(), spec));
        self
    }

    /// Sets (or replaces) a field of `Release` before signing (`Valid-Until`, `Date`, ...).
    pub fn release_field(mut self, name: &str, value: &str) -> Self {
        self.release_fields.push((name.into(), value.into()));
        self
    }

    /// `Valid-Until` = now + `d` (apt-ftparchive's `ValidTime`).
    pub fn valid_for(mut self, d: Duration) -> Self {
        self.valid_for = Some(d);
        self
    }

    pub fn signing(mut self, signing: Signing) -> Self {
        self.signing = signing;
        self
    }

    /// Signs with these keys (fingerprints in the builder's [`Gpg`]); default: one new ed25519 key.
    pub fn signers(mut self, signers: &[&str]) -> Self {
        self.signers = signers.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Also publish each index under `by-hash/SHA256/HEX` and say `Acquire-By-Hash: yes`.
    pub fn by_hash(mut self, on: bool) -> Self {
        self.by_hash = on;
        self
    }

    /// Which `Packages` variants to publish: any of `"xz"`, `"gz"`, `""` (uncompressed).
    pub fn compressions(mut self, c: &[&'static str]) -> Self {
        self.compressions = c.to_vec();
        self
    }

    /// Builds the repository in a new temporary directory, signing with keys of `gpg`.
    pub fn build(self, gpg: &Gpg) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let signers = if self.signers.is_empty() {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let uid = format!("Fixture Archive {n} <archive{n}@example.invalid>");
            vec![gpg.generate(&uid, "ed25519", "sign", "never")]
        } else {
            self.signers.clone()
        };
        let mut components: Vec<String> = Vec::new();
        for (c, _) in &self.debs {
            if !components.contains(c) {
                components.push(c.clone());
            }
        }
        if components.is_empty() {
            components.push("main".into());
        }
        let mut debs = Vec::new();
        let dist = root.join("dists").join(&self.suite);
        for component in &components {
            let pool = root.join("pool").join(component);
            std::fs::create_dir_all(&pool).unwrap();
            for (_, spec) in self.debs.iter().filter(|(c, _)| c == component) {
                build_deb(spec, &pool);
            }
            let packages = run(Command::new("apt-ftparchive")
                .current_dir(&root)
                .args(["packages", &format!("pool/{component}")]));
            let bin = dist.join(component).join(format!("binary-{}", self.arch));
            std::fs::create_dir_all(&bin).unwrap();
            let plain = bin.join("Packages");
            std::fs::write(&plain, &packages).unwrap();
            for c in &self.compressions {
                match *c {
                    "xz" => run(Command::new("xz").args(["-k", "-f"]).arg(&plain)),
                    "gz" => run(Command::new("gzip").args(["-k", "-f", "-n"]).arg(&plain)),
                    _ => Vec::new(),
                };
            }
            if self.by_hash {
                let dir = bin.join("by-hash/SHA256");
                std::fs::create_dir_all(&dir).unwrap();
                for name in ["Packages", "Packages.xz", "Packages.gz"] {
                    if let Ok(bytes) = std::fs::read(bin.join(name)) {
                        std::fs::write(dir.join(Digest::of(&bytes).hex()), bytes).unwrap();
                    }
                }
            }
            if !self.compressions.contains(&"") {
                std::fs::remove_file(&plain).unwrap();
            }
            for p in debian::control::parse(std::str::from_utf8(&packages).unwrap()).unwrap() {
                debs.push(BuiltDeb {
                    package: p.require("Package").unwrap().to_owned(),
                    version: p.require("Version").unwrap().to_owned(),
                    component: component.clone(),
                    filename: p.require("Filename").unwrap().to_owned(),
                    sha256: Digest::from_hex(p.require("SHA256").unwrap()).unwrap(),
                    size: p.require("Size").unwrap().parse().unwrap(),
                });
            }
        }
        let repo = Repo {
            dir,
            root,
            suite: self.suite.clone(),
            codename: self.codename.clone(),
            arch: self.arch.clone(),
            components,
            signers,
            debs,
        };
        repo.write_release(&self, gpg);
        repo
    }
}

/// A built repository on disk.
pub struct Repo {
    dir: TempDir,
    /// The repository root (holds `dists/` and `pool/`).
    pub root: PathBuf,
    pub suite: String,
    pub codename: String,
    pub arch: String,
    pub components: Vec<String>,
    /// Fingerprints of the signing keys.
    pub signers: Vec<String>,
    pub debs: Vec<BuiltDeb>,
}

impl Repo {
    /// `dists/SUITE`.
    pub fn dist(&self) -> PathBuf {
        self.root.join("dists").join(&self.suite)
    }

    /// A scratch directory that lives as long as the repository (outside its root).
    pub fn scratch(&self) -> PathBuf {
        let p = self.dir.path().join("scratch");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// The built package named `package`.
    pub fn deb(&self, package: &str) -> &BuiltDeb {
        self.debs
            .iter()
            .find(|d| d.package == package)
            .unwrap_or_else(|| panic!("no package {package} in the fixture"))
    }

    /// Writes the signing keys (of `gpg`) as a binary keyring next to the repository.
    pub fn keyring_file(&self, gpg: &Gpg) -> PathBuf {
        let path = self.dir.path().join("keyring.gpg");
        let mut bytes = Vec::new();
        for s in &self.signers {
            bytes.extend(gpg.export(s, false));
        }
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// The signing keys as a [`Keyring`].
    pub fn keyring(&self, gpg: &Gpg) -> Keyring {
        Keyring::load(&self.keyring_file(gpg)).unwrap()
    }

    /// A source for this repository served at `uri` (`file://ROOT` or a server URL).
    pub fn source(&self, uri: &str) -> Source {
        Source {
            uri: uri.trim_end_matches('/').to_owned(),
            suite: self.suite.clone(),
            components: self.components.clone(),
            architectures: vec![self.arch.clone()],
            signed_by: Vec::new(),
        }
    }

    /// The source with `Signed-By` naming a keyring file.
    pub fn source_signed_by(&self, uri: &str, keyring: &Path) -> Source {
        Source {
            signed_by: vec![SignedBy::Keyring(keyring.to_owned())],
            ..self.source(uri)
        }
    }

    /// `file://ROOT`.
    pub fn file_uri(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn write_release(&self, b: &RepoBuilder, gpg: &Gpg) {
        let dist = self.dist();
        for f in ["Release", "InRelease", "Release.gpg"] {
            let _ = std::fs::remove_file(dist.join(f));
        }
        let mut c = Command::new("apt-ftparchive");
        c.current_dir(&self.root).args([
            "-o",
            "APT::FTPArchive::Release::Origin=hardbox-fixture",
            "-o",
            "APT::FTPArchive::Release::Label=hardbox-fixture",
            "-o",
            &format!("APT::FTPArchive::Release::Suite={}", self.suite),
            "-o",
            &format!("APT::FTPArchive::Release::Codename={}", self.codename),
            "-o",
            &format!("APT::FTPArchive::Release::Architectures={}", self.arch),
            "-o",
            &format!(
                "APT::FTPArchive::Release::Components={}",
                self.components.join(" ")
            ),
        ]);
        if let Some(d) = b.valid_for {
            c.args([
                "-o",
                &format!("APT::FTPArchive::Release::ValidTime={}", d.as_secs()),
            ]);
        }
        let text = run(c.args(["release", &format!("dists/{}", self.suite)]));
        let mut fields = b.release_fields.clone();
        if b.by_hash {
            fields.push(("Acquire-By-Hash".into(), "yes".into()));
        }
        let text = set_fields(&String::from_utf8(text).unwrap(), &fields);
        self.sign_release(&text, b.signing, gpg);
    }

    /// Replaces `Release` with `text` and signs it (as the builder's signing mode says).
    pub fn sign_release(&self, text: &str, signing: Signing, gpg: &Gpg) {
        let dist = self.dist();
        for f in ["Release", "InRelease", "Release.gpg"] {
            let _ = std::fs::remove_file(dist.join(f));
        }
        let release = dist.join("Release");
        std::fs::write(&release, text).unwrap();
        let signers: Vec<&str> = self.signers.iter().map(String::as_str).collect();
        if matches!(signing, Signing::InRelease | Signing::Both) {
            gpg.clearsign(&signers, &release, &dist.join("InRelease"));
        }
        if matches!(signing, Signing::Detached | Signing::Both) {
            gpg.detach_sign(&signers, &release, &dist.join("Release.gpg"));
        }
        if signing == Signing::InRelease {
            std::fs::remove_file(&release).unwrap();
        }
    }

    /// The `Release` text currently published.
    pub fn release_text(&self) -> String {
        let dist = self.dist();
        match std::fs::read_to_string(dist.join("Release")) {
            Ok(t) => t,
            Err(_) => {
                let inrelease = std::fs::read_to_string(dist.join("InRelease")).unwrap();
                let body = inrelease.split_once("\n\n").unwrap().1;
                body.split("\n-----BEGIN PGP SIGNATURE-----")
                    .next()
                    .unwrap()
                    .to_owned()
                    + "\n"
            }
        }
    }
}

/// Sets fields of a one-paragraph control text: replaces existing ones, adds new ones after the
/// first line.
pub fn set_fields(text: &str, fields: &[(String, String)]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for (name, value) in fields {
        let prefix = format!("{name}:");
        match lines.iter().position(|l| l.starts_with(&prefix)) {
            Some(i) => lines[i] = format!("{name}: {value}"),
            None => lines.insert(1, format!("{name}: {value}")),
        }
    }
    lines.join("\n") + "\n"
}

/// An RFC 1123 date as `Release` files write it.
pub fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (y, m, d) = types::time::civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} UTC",
        WEEKDAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[m as usize - 1],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A fault the [`Server`] injects on one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Announce the full length, send only `after` bytes of the body, then close the connection.
    /// Applies to the next `times` requests of the path.
    Truncate { after: usize, times: usize },
    /// Serve the file with one byte changed (same length).
    Tamper,
    /// Answer 404.
    NotFound,
    /// Answer a `Range` request with the whole file (200), as servers without range support do.
    IgnoreRange,
}

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub path: String,
    pub range: Option<String>,
    pub if_modified_since: Option<String>,
    pub status: u16,
}

#[derive(Default)]
struct ServerState {
    faults: HashMap<String, Fault>,
    log: Vec<Logged>,
    last_modified: bool,
}

/// A minimal HTTP/1.1 file server on loopback, for tests.
pub struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<ServerState>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Serves `root` on `127.0.0.1` at a free port.
    pub fn start(root: &Path) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ServerState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (root, st, sp) = (root.to_owned(), state.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (root, st) = (root.clone(), st.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &root, &st);
                });
            }
        });
        Server { addr, state, stop }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash); append the repository path.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Injects `fault` on requests for `path` (absolute URL path, e.g. `/dists/stable/InRelease`).
    pub fn fault(&self, path: &str, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .insert(path.to_owned(), fault);
    }

    pub fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    /// Send `Last-Modified` (the file's mtime) and answer a matching `If-Modified-Since` with 304.
    pub fn last_modified(&self, on: bool) {
        self.state.lock().unwrap().last_modified = on;
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// The requests for paths ending with `suffix`.
    pub fn requests_for(&self, suffix: &str) -> Vec<Logged> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with(suffix))
            .collect()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: TcpStream, root: &Path, state: &Mutex<ServerState>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let path = path.to_owned();
    let range = headers.get("range").cloned();
    let since = headers.get("if-modified-since").cloned();
    let (fault, last_modified) = {
        let mut st = state.lock().unwrap();
        let fault = st.faults.get(&path).cloned();
        if let Some(Fault::Truncate { after, times }) = &fault {
            if *times <= 1 {
                st.faults.remove(&path);
            } else {
                st.faults.insert(
                    path.clone(),
                    Fault::Truncate {
                        after: *after,
                        times: times - 1,
                    },
                );
            }
        }
        (fault, st.last_modified)
    };
    let log = |status: u16| {
        state.lock().unwrap().log.push(Logged {
            path: path.clone(),
            range: range.clone(),
            if_modified_since: since.clone(),
            status,
        });
    };
    let mut out = stream;
    let respond = |out: &mut TcpStream, status: u16, extra: &str, body: &[u8]| {
        let reason = match status {
            200 => "OK",
            206 => "Partial Content",
            304 => "Not Modified",
            404 => "Not Found",
            416 => "Range Not Satisfiable",
            _ => "Error",
        };
        write!(
            out,
            "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        )?;
        out.write_all(body)?;
        out.flush()
    };
    let rel = path.trim_start_matches('/');
    if method != "GET" || rel.split('/').any(|c| c == "..") {
        log(404);
        return respond(&mut out, 404, "", b"");
    }
    let file = root.join(rel);
    let bytes = match (fault.as_ref(), std::fs::read(&file)) {
        (Some(Fault::NotFound), _) | (_, Err(_)) => {
            log(404);
            return respond(&mut out, 404, "", b"");
        }
        (_, Ok(b)) => b,
    };
    let mut bytes = bytes;
    if fault == Some(Fault::Tamper) && !bytes.is_empty() {
        let i = bytes.len() / 2;
        bytes[i] ^= 0x01;
    }
    let mut extra = String::from("Accept-Ranges: bytes\r\n");
    if last_modified {
        let mtime = std::fs::metadata(&file)?.modified()?;
        let lm = http_date(mtime).replace(" UTC", " GMT");
        if since.as_deref() == Some(lm.as_str()) {
            log(304);
            return respond(&mut out, 304, "", b"");
        }
        extra.push_str(&format!("Last-Modified: {lm}\r\n"));
    }
    let range_start = range
        .as_deref()
        .filter(|_| fault != Some(Fault::IgnoreRange))
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, _)| a.parse::<usize>().ok());
    let (status, body) = match range_start {
        Some(start) if start >= bytes.len() => {
            log(416);
            let extra = format!("Content-Range: bytes */{}\r\n", bytes.len());
            return respond(&mut out, 416, &extra, b"");
        }
        Some(start) => {
            extra.push_str(&format!(
                "Content-Range: bytes {start}-{}/{}\r\n",
                bytes.len() - 1,
                bytes.len()
            ));
            (206, &bytes[start..])
        }
        None => (200, &bytes[..]),
    };
    log(status);
    if let Some(Fault::Truncate { after, .. }) = fault {
        let reason = if status == 206 {
            "Partial Content"
        } else {
            "OK"
        };
        write!(
            out,
            "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        )?;
        out.write_all(&body[..after.min(body.len())])?;
        out.flush()?;
        return out.shutdown(std::net::Shutdown::Both);
    }
    respond(&mut out, status, &extra, body)
}

/// Reads a whole file (panicking with its path).
pub fn read(path: &Path) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

/// All files below `dir` (relative paths, sorted); empty if `dir` does not exist.
pub fn files_below(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
