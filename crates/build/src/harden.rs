//! Hardening: what a minimal, non-root, shell-less image must not contain, applied to the tree.
//! Each step is a switch of [`HardeningPlan`]; everything removed or changed is reported.
//!
//! - Shells (`sh`, `bash`, `dash`, `busybox`, ...) and the package manager (`apt*`, `dpkg*`
//!   programs; the dpkg database stays for scanners) are removed from the program directories,
//!   with the symlinks that pointed at them.
//! - setuid/setgid bits are cleared.
//! - `/usr/share/{doc,man,info}` go, except `/usr/share/doc/*/copyright` (license detection).
//! - Translations and locales other than C / C.UTF-8 go.
//! - No entry is world-writable except `/tmp`, which is 1777.
//! - Private keys (PEM `PRIVATE KEY` blocks) and SSH host keys go.

use serde::Serialize;

use crate::assemble::{Change, Report};
use crate::spec::HardeningPlan;
use crate::tree::{self, Entry, Kind, Tree};

/// Why something was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    Shell,
    PackageManager,
    Documentation,
    Locale,
    PrivateKey,
    DanglingLink,
}

/// One removed path (a directory counts once, with how many entries went with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removal {
    pub path: String,
    pub reason: Reason,
    pub entries: usize,
}

/// Program directories searched for shells and package managers (canonical paths).
const BIN_DIRS: [&str; 6] = [
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "usr/local/bin",
    "usr/local/sbin",
];

const SHELLS: [&str; 14] = [
    "sh", "bash", "rbash", "dash", "busybox", "ash", "zsh", "ksh", "ksh93", "mksh", "csh", "tcsh",
    "fish", "yash",
];

const PACKAGE_MANAGER: [&str; 20] = [
    "apt",
    "apt-get",
    "apt-cache",
    "apt-config",
    "apt-mark",
    "apt-key",
    "apt-cdrom",
    "apt-extracttemplates",
    "apt-sortpkgs",
    "dpkg",
    "dpkg-deb",
    "dpkg-query",
    "dpkg-split",
    "dpkg-divert",
    "dpkg-statoverride",
    "dpkg-trigger",
    "dpkg-maintscript-helper",
    "dpkg-realpath",
    "dpkg-fsys-usrunmess",
    "update-alternatives",
];

/// Hardens `tree` as `plan` says.
pub fn harden(plan: &HardeningPlan, tree: &mut Tree, report: &mut Report, epoch: u64) {
    let mut programs: Vec<(&str, Reason)> = Vec::new();
    if plan.remove_shells {
        programs.extend(SHELLS.iter().map(|s| (*s, Reason::Shell)));
    }
    if plan.remove_package_manager {
        programs.extend(PACKAGE_MANAGER.iter().map(|s| (*s, Reason::PackageManager)));
    }
    let mut removed_programs = Vec::new();
    for dir in BIN_DIRS {
        for (name, reason) in &programs {
            let path = format!("{dir}/{name}");
            if tree.get(&path).is_some() {
                remove(tree, report, &path, *reason);
                removed_programs.push(path);
            }
        }
    }
    if !removed_programs.is_empty() {
        // Links that led to a removed program (`/usr/bin/sh.distrib`, alternatives) go too.
        remove_dangling_links(tree, report);
    }

    if plan.strip_setuid {
        for (path, entry) in tree.iter_mut() {
            if entry.mode & 0o6000 != 0 && !entry.is_dir() {
                let before = entry.mode;
                entry.mode &= !0o6000;
                report.changed.push(Change {
                    path: format!("/{path}"),
                    what: format!("setuid/setgid cleared: {before:04o} -> {:04o}", entry.mode),
                });
            }
        }
    }

    if plan.remove_docs {
        remove_docs(tree, report);
    }
    if plan.remove_locales {
        remove_locales(tree, report);
    }
    if plan.remove_private_keys {
        remove_private_keys(tree, report);
    }

    if tree.get("tmp").is_none_or(|e| !e.is_dir()) {
        tree.insert("tmp", Entry::directory(0o1777, 0, 0, epoch));
    }
    if let Some(tmp) = tree.get_mut("tmp") {
        tmp.mode = 0o1777;
        tmp.uid = 0;
        tmp.gid = 0;
    }
    if plan.no_world_writable {
        for (path, entry) in tree.iter_mut() {
            if path == "tmp" || matches!(entry.kind, Kind::Symlink(_)) {
                continue;
            }
            if entry.mode & 0o002 != 0 {
                let before = entry.mode;
                entry.mode &= !0o1002;
                report.changed.push(Change {
                    path: format!("/{path}"),
                    what: format!("world-writable cleared: {before:04o} -> {:04o}", entry.mode),
                });
            }
        }
    }
}

fn remove(tree: &mut Tree, report: &mut Report, path: &str, reason: Reason) {
    let removed = tree.remove(path);
    if !removed.is_empty() {
        report.removed.push(Removal {
            path: format!("/{path}"),
            reason,
            entries: removed.len(),
        });
    }
}

/// Removes symlinks in program directories and `/etc/alternatives` whose target is gone.
fn remove_dangling_links(tree: &mut Tree, report: &mut Report) {
    loop {
        let dangling: Vec<String> = tree
            .iter()
            .filter(|(path, entry)| {
                matches!(entry.kind, Kind::Symlink(_))
                    && (BIN_DIRS.contains(&tree::parent(path))
                        || tree::parent(path) == "etc/alternatives")
            })
            .filter(|(path, _)| !tree.exists(path))
            .map(|(path, _)| path.clone())
            .collect();
        if dangling.is_empty() {
            return;
        }
        for path in dangling {
            remove(tree, report, &path, Reason::DanglingLink);
        }
    }
}

fn remove_docs(tree: &mut Tree, report: &mut Report) {
    for dir in ["usr/share/man", "usr/share/info"] {
        if tree.get(dir).is_some() {
            remove(tree, report, dir, Reason::Documentation);
        }
    }
    let doc = "usr/share/doc";
    let doomed: Vec<String> = tree
        .children_of(doc)
        .filter(|(path, entry)| {
            let rest = &path[doc.len() + 1..];
            let depth = rest.matches('/').count();
            // Keep package directories and their copyright files.
            let keep =
                (depth == 0 && entry.is_dir()) || (depth == 1 && rest.ends_with("/copyright"));
            !keep
        })
        .map(|(p, _)| p.clone())
        .collect();
    let mut count = 0;
    for path in doomed {
        count += tree.remove(&path).len();
    }
    if count > 0 {
        report.removed.push(Removal {
            path: "/usr/share/doc/* (all but copyright)".to_owned(),
            reason: Reason::Documentation,
            entries: count,
        });
    }
}

fn is_c_locale(name: &str) -> bool {
    matches!(name, "C" | "C.UTF-8" | "C.utf8" | "POSIX")
}

fn remove_locales(tree: &mut Tree, report: &mut Report) {
    for dir in ["usr/share/locale", "usr/lib/locale"] {
        let doomed: Vec<String> = tree
            .children_of(dir)
            .filter(|(path, entry)| {
                tree::parent(path) == dir && entry.is_dir() && !is_c_locale(tree::file_name(path))
            })
            .map(|(p, _)| p.clone())
            .collect();
        let mut count = 0;
        for path in doomed {
            count += tree.remove(&path).len();
        }
        if count > 0 {
            report.removed.push(Removal {
                path: format!("/{dir}/* (all but C, C.UTF-8)"),
                reason: Reason::Locale,
                entries: count,
            });
        }
    }
}

fn remove_private_keys(tree: &mut Tree, report: &mut Report) {
    let doomed: Vec<String> = tree
        .iter()
        .filter(|(path, entry)| {
            let name = tree::file_name(path);
            let ssh_host_key = tree::parent(path) == "etc/ssh" && name.starts_with("ssh_host_");
            ssh_host_key || entry.content().is_some_and(has_private_key)
        })
        .map(|(p, _)| p.clone())
        .collect();
    for path in doomed {
        remove(tree, report, &path, Reason::PrivateKey);
    }
}

/// Whether `bytes` hold a PEM private key block (`-----BEGIN ... PRIVATE KEY-----`). Only files
/// under 256 KiB are looked at: key files are small, and large binaries are not key stores.
fn has_private_key(bytes: &[u8]) -> bool {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"PRIVATE KEY-----";
    if bytes.len() > (256 << 10) {
        return false;
    }
    let mut rest = bytes;
    while let Some(i) = rest.iter().position(|b| *b == b'-') {
        rest = &rest[i..];
        if rest.starts_with(BEGIN) {
            let line_end = rest
                .iter()
                .take(80)
                .position(|b| *b == b'\n')
                .unwrap_or(rest.len().min(80));
            if rest[..line_end].ends_with(END) {
                return true;
            }
        }
        rest = &rest[1..];
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap values known to be valid")]
mod tests {
    use super::*;

    #[test]
    fn private_key_markers() {
        assert!(has_private_key(b"x\n-----BEGIN PRIVATE KEY-----\nabc"));
        assert!(has_private_key(b"-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        assert!(!has_private_key(b"-----BEGIN PUBLIC KEY-----\n"));
        assert!(!has_private_key(b"the words PRIVATE KEY----- alone"));
    }
}
