//! The image's filesystem as a value: canonical path → entry, never written to disk.
//!
//! Paths are relative to the image root, `/`-separated, without `.` or `..` components and
//! without a trailing slash (`usr/bin/python3`); the root itself is implicit. Inserting resolves
//! the parent directories through symlinks already in the tree, as dpkg does when it unpacks onto
//! a merged-/usr system (`bin/sh` lands in `usr/bin/sh` when `bin` links to `usr/bin`); that
//! resolution is confined to the tree (an absolute target or `..` never leaves the root), so no
//! entry can land outside the image whatever a package says. Building the tree has no side
//! effects, so two builds of the same input are the same value.

use std::collections::BTreeMap;
use std::sync::Arc;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File(Arc<Vec<u8>>),
    /// A symbolic link and its target, as written (may be relative or absolute).
    Symlink(String),
    /// A hard link to another file of the tree (canonical path); it keeps the content so the link
    /// can become a plain file if its target is removed.
    Hardlink {
        target: String,
        content: Arc<Vec<u8>>,
    },
}

/// One filesystem entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (`0o7777` at most).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    /// The package that shipped it, if any.
    pub package: Option<Arc<str>>,
}

impl Entry {
    pub fn directory(mode: u32, uid: u32, gid: u32, mtime: u64) -> Entry {
        Entry {
            kind: Kind::Directory,
            mode,
            uid,
            gid,
            mtime,
            package: None,
        }
    }

    pub fn file(content: Vec<u8>, mode: u32, uid: u32, gid: u32, mtime: u64) -> Entry {
        Entry {
            kind: Kind::File(Arc::new(content)),
            mode,
            uid,
            gid,
            mtime,
            package: None,
        }
    }

    pub fn symlink(target: &str, mtime: u64) -> Entry {
        Entry {
            kind: Kind::Symlink(target.to_owned()),
            mode: 0o777,
            uid: 0,
            gid: 0,
            mtime,
            package: None,
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Directory)
    }

    /// The bytes of a file or hard link.
    pub fn content(&self) -> Option<&[u8]> {
        match &self.kind {
            Kind::File(c) | Kind::Hardlink { content: c, .. } => Some(c),
            _ => None,
        }
    }
}

/// Why a path cannot be placed in the tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("path {0:?} contains \"..\" or is otherwise not a plain relative path")]
    BadPath(String),
    #[error("{path:?} lies below {parent:?}, which is not a directory")]
    NotADirectory { path: String, parent: String },
    #[error("resolving {0:?} follows more than 40 symbolic links")]
    SymlinkLoop(String),
}

/// The filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

/// Splits a path from a package or a spec into clean components: a leading `./` or `/` is
/// dropped, `.` and empty components are skipped, `..` is refused.
pub fn clean(path: &str) -> Result<String, TreeError> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(TreeError::BadPath(path.to_owned())),
            p if p.contains('\0') => return Err(TreeError::BadPath(path.to_owned())),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// The parent of a canonical path (`""` for top-level entries).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

/// The last component of a path.
pub fn file_name(path: &str) -> &str {
    path.rsplit_once('/').map(|(_, n)| n).unwrap_or(path)
}

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    pub fn get_mut(&mut self, path: &str) -> Option<&mut Entry> {
        self.entries.get_mut(path)
    }

    /// Entries in path order (the order layers are written in).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut Entry)> {
        self.entries.iter_mut()
    }

    /// Entries strictly below `dir` (canonical), in path order.
    pub fn children_of<'a>(
        &'a self,
        dir: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Entry)> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.entries
            .range(prefix.clone()..)
            .take_while(move |(p, _)| p.starts_with(&prefix))
    }

    /// The content of the file at `path`, following symlinks in the tree.
    pub fn read(&self, path: &str) -> Option<&[u8]> {
        let resolved = self.resolve(path, true).ok()?;
        self.entries.get(&resolved)?.content()
    }

    /// Whether anything is at `path` (following symlinks).
    pub fn exists(&self, path: &str) -> bool {
        self.resolve(path, true)
            .is_ok_and(|p| p.is_empty() || self.entries.contains_key(&p))
    }

    /// Resolves `path` (relative to the root) through symlinks in the tree, confined to the
    /// root: parents always, the last component when `follow_last`. Missing components are
    /// kept as they are.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<String, TreeError> {
        let mut pending: Vec<String> = clean_lenient(path).into_iter().rev().collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                resolved.pop();
                continue;
            }
            resolved.push(part);
            let is_last = pending.is_empty();
            if is_last && !follow_last {
                break;
            }
            let current = resolved.join("/");
            if let Some(Entry {
                kind: Kind::Symlink(target),
                ..
            }) = self.entries.get(&current)
            {
                hops += 1;
                if hops > 40 {
                    return Err(TreeError::SymlinkLoop(path.to_owned()));
                }
                resolved.pop();
                if target.starts_with('/') {
                    resolved.clear();
                }
                pending.extend(clean_lenient(target).into_iter().rev());
            }
        }
        Ok(resolved.join("/"))
    }

    /// Where an entry for `path` lands: its parents resolved through symlinks, its last
    /// component kept. Fails if a parent exists and is not a directory.
    pub fn place(&self, path: &str) -> Result<String, TreeError> {
        let cleaned = clean(path)?;
        let placed = self.resolve(&cleaned, false)?;
        let mut dir = parent(&placed);
        while !dir.is_empty() {
            match self.entries.get(dir) {
                Some(e) if !e.is_dir() => {
                    return Err(TreeError::NotADirectory {
                        path: path.to_owned(),
                        parent: dir.to_owned(),
                    })
                }
                _ => {}
            }
            dir = parent(dir);
        }
        Ok(placed)
    }

    /// Puts `entry` at the canonical path `path`, creating missing parent directories (0755,
    /// root, `mtime`). Returns the entry it replaced. Replacing a directory by a non-directory
    /// removes what was below it.
    pub fn insert(&mut self, path: &str, entry: Entry) -> Option<Entry> {
        let mut missing = Vec::new();
        let mut dir = parent(path);
        while !dir.is_empty() && !self.entries.contains_key(dir) {
            missing.push(dir.to_owned());
            dir = parent(dir);
        }
        for dir in missing {
            self.entries
                .insert(dir, Entry::directory(0o755, 0, 0, entry.mtime));
        }
        if !entry.is_dir() && self.entries.get(path).is_some_and(Entry::is_dir) {
            self.remove(path);
        }
        self.entries.insert(path.to_owned(), entry)
    }

    /// Removes `path` and everything below it; returns the removed paths.
    pub fn remove(&mut self, path: &str) -> Vec<String> {
        let mut removed: Vec<String> = self.children_of(path).map(|(p, _)| p.clone()).collect();
        for p in &removed {
            self.entries.remove(p);
        }
        if self.entries.remove(path).is_some() {
            removed.insert(0, path.to_owned());
        }
        removed
    }
}

/// Components of a symlink target or path, keeping `..` (resolution clamps it at the root).
fn clean_lenient(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap values known to be valid")]
mod tests {
    use super::*;

    #[test]
    fn clean_refuses_dotdot() {
        assert_eq!(clean("./usr//bin/./x").unwrap(), "usr/bin/x");
        assert_eq!(clean("/etc/passwd").unwrap(), "etc/passwd");
        assert!(clean("./usr/../../etc/passwd").is_err());
        assert!(clean("..").is_err());
    }

    #[test]
    fn placement_follows_directory_symlinks_but_stays_inside() {
        let mut tree = Tree::new();
        tree.insert("usr/bin", Entry::directory(0o755, 0, 0, 0));
        tree.insert("bin", Entry::symlink("usr/bin", 0));
        tree.insert("evil", Entry::symlink("/../../../../etc", 0));
        assert_eq!(tree.place("./bin/sh").unwrap(), "usr/bin/sh");
        assert_eq!(tree.place("./evil/passwd").unwrap(), "etc/passwd");
        tree.insert("usr/bin/up", Entry::symlink("../../../..", 0));
        assert_eq!(tree.place("usr/bin/up/x").unwrap(), "x");
        tree.insert("loop", Entry::symlink("loop", 0));
        assert!(matches!(
            tree.place("loop/x"),
            Err(TreeError::SymlinkLoop(_))
        ));
        tree.insert("file", Entry::file(b"x".to_vec(), 0o644, 0, 0, 0));
        assert!(matches!(
            tree.place("file/x"),
            Err(TreeError::NotADirectory { .. })
        ));
    }

    #[test]
    fn insert_creates_parents_and_remove_takes_children() {
        let mut tree = Tree::new();
        tree.insert("a/b/c", Entry::file(b"x".to_vec(), 0o644, 0, 0, 7));
        assert!(tree.get("a").unwrap().is_dir() && tree.get("a/b").unwrap().is_dir());
        assert_eq!(tree.read("a/b/c"), Some(&b"x"[..]));
        assert_eq!(tree.remove("a/b"), vec!["a/b", "a/b/c"]);
        assert_eq!(tree.len(), 1);
    }
}
