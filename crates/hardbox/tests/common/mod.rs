//! Helpers shared by the end-to-end tests: drive the real binary, call real peers, compare trees.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use types::Digest;

/// The `hardbox` binary under test, with its store at `root`.
pub fn hardbox(root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hardbox"));
    cmd.arg("--root").arg(root);
    cmd
}

/// Runs a command and returns its output, failing the test with its stderr if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("failed to start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Fails loudly when a privileged test runs without root (CI runs as root).
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (CI runs as root); run it with sudo"
    );
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

/// The repository's top directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One filesystem entry, as far as an image cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// File content digest, symlink target, or device numbers.
    pub content: String,
    pub mtime: i64,
    /// For hardlinked files: the first path (in sorted order) of the same inode.
    pub link_group: Option<String>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Walks `dir` without following symlinks and summarises every entry below it.
pub fn tree(dir: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut paths = Vec::new();
    collect(dir, &mut paths);
    paths.sort();
    for path in paths {
        let rel = path
            .strip_prefix(dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        let (kind, content) = if ft.is_symlink() {
            (
                "symlink",
                std::fs::read_link(&path)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            )
        } else if ft.is_dir() {
            ("dir", String::new())
        } else if ft.is_file() {
            (
                "file",
                Digest::of(&std::fs::read(&path).unwrap()).to_string(),
            )
        } else if ft.is_char_device() {
            ("char", format!("{:x}", meta.rdev()))
        } else if ft.is_block_device() {
            ("block", format!("{:x}", meta.rdev()))
        } else if ft.is_fifo() {
            ("fifo", String::new())
        } else {
            ("socket", String::new())
        };
        let link_group = if ft.is_file() && meta.nlink() > 1 {
            Some(
                inodes
                    .entry((meta.dev(), meta.ino()))
                    .or_insert_with(|| rel.clone())
                    .clone(),
            )
        } else {
            None
        };
        out.insert(
            rel,
            Entry {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                content,
                // Directory times are disturbed by unpackers in different ways; compare files.
                mtime: if ft.is_dir() { 0 } else { meta.mtime() },
                link_group,
                xattrs: xattrs(&path),
            },
        );
    }
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push(path.clone());
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            collect(&path, out);
        }
    }
}

fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        // SELinux labels and ACLs depend on the host, not the image.
        if name.starts_with("security.selinux") || name.starts_with("system.") {
            continue;
        }
        let mut value = vec![0u8; 4096];
        if let Ok(len) = rustix::fs::lgetxattr(path, name.as_str(), &mut value) {
            value.truncate(len);
            out.insert(name, value);
        }
    }
    out
}

/// Asserts two trees are the same, listing every difference.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let a = tree(expected);
    let b = tree(actual);
    let mut diffs = Vec::new();
    for (path, entry) in &a {
        match b.get(path) {
            None => diffs.push(format!("missing: {path}")),
            Some(other) if other != entry => diffs.push(format!(
                "differs: {path}\n  want {entry:?}\n  got  {other:?}"
            )),
            Some(_) => {}
        }
    }
    for path in b.keys().filter(|p| !a.contains_key(*p)) {
        diffs.push(format!("unexpected: {path}"));
    }
    assert!(
        diffs.is_empty(),
        "{} and {} differ:\n{}",
        expected.display(),
        actual.display(),
        diffs.join("\n")
    );
}
