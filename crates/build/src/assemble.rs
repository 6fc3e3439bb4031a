//! Assembly: a spec and an ordered list of `.deb` files become a [`Tree`] and a [`Report`].
//!
//! Packages are decompressed once each (two at a time, on two threads) into memory and merged in
//! the order given: a later package replacing a file of an earlier one wins, as with dpkg, and the
//! replacement is recorded. Maintainer scripts are never run; what they would do for a container
//! image is done natively ([`crate::native`]): accounts, the CA bundle, alternatives, the time
//! zone, `os-release` and the dpkg database scanners read. The spec's `paths` are then applied and
//! the image hardened ([`crate::harden`]). Nothing here writes to disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use debian::deb::{DebError, DebFile};
use fs_err as fs;
use serde::Serialize;

use crate::harden::{self, Removal};
use crate::native;
use crate::spec::{PathKind, PathSpec, Spec};
use crate::tree::{self, Entry, Kind, Tree, TreeError};

/// A downloaded, verified package to install, with the fields assembly needs from its control
/// paragraph.
#[derive(Debug, Clone)]
pub struct InstalledDeb {
    pub deb: DebFile,
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// `Multi-Arch: same` packages get `info/NAME:ARCH.*` files.
    pub multi_arch_same: bool,
}

impl InstalledDeb {
    /// Opens a `.deb` and reads its name, version and architecture.
    pub fn open(path: &Path) -> Result<InstalledDeb, AssembleError> {
        let deb = DebFile::open(path)?;
        let control = &deb.control().paragraph;
        let parsed = debian::control::parse(control).map_err(|e| AssembleError::Control {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let Some(paragraph) = parsed.first() else {
            return Err(AssembleError::Control {
                path: path.to_owned(),
                reason: "the control file has no paragraph".to_owned(),
            });
        };
        let field = |name: &str| {
            paragraph
                .get(name)
                .map(str::to_owned)
                .ok_or_else(|| AssembleError::Control {
                    path: path.to_owned(),
                    reason: format!("the control file has no {name} field"),
                })
        };
        Ok(InstalledDeb {
            name: field("Package")?,
            version: field("Version")?,
            architecture: field("Architecture")?,
            multi_arch_same: paragraph
                .get("Multi-Arch")
                .is_some_and(|m| m.eq_ignore_ascii_case("same")),
            deb,
        })
    }

    /// `name` or `name:arch` for `Multi-Arch: same` packages, as dpkg names its info files.
    pub fn info_name(&self) -> String {
        if self.multi_arch_same {
            format!("{}:{}", self.name, self.architecture)
        } else {
            self.name.clone()
        }
    }
}

/// What the caller decides: the timestamp and where `paths[].source` files are read from.
#[derive(Debug, Clone)]
pub struct AssembleOptions {
    /// `SOURCE_DATE_EPOCH`: every timestamp is clamped to it.
    pub source_date_epoch: u64,
    /// The directory `paths[].source` is relative to.
    pub context: PathBuf,
    /// The image architecture in Debian terms (`amd64`), for the multiarch library directory.
    pub architecture: String,
}

/// Why assembly failed.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error(transparent)]
    Deb(#[from] DebError),
    #[error("{path}: invalid control data: {reason}")]
    Control { path: PathBuf, reason: String },
    #[error("{path}: data.tar entry {entry:?}: {reason}")]
    Entry {
        path: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("failed to read data.tar of {path}")]
    Data {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spec key {key} is not supported: {reason}")]
    Unsupported { key: String, reason: String },
    #[error("paths: {path}: {reason}")]
    Path { path: String, reason: String },
    #[error("failed to read {path} for paths entry {entry}")]
    Source {
        path: PathBuf,
        entry: String,
        source: std::io::Error,
    },
}

/// A file one package shipped and a later one replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replaced {
    pub path: String,
    pub by: String,
    pub from: String,
}

/// A package as installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageRecord {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// Maintainer scripts it has that were not run (their effects are done natively or not at
    /// all).
    pub scripts_not_run: Vec<String>,
}

/// An alternative that was set up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alternative {
    pub name: String,
    pub link: String,
    pub path: String,
    pub priority: i64,
}

/// A change to an entry that stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub path: String,
    pub what: String,
}

/// What assembly did, for the binary to print (`--json` too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub packages: Vec<PackageRecord>,
    pub replaced: Vec<Replaced>,
    pub alternatives: Vec<Alternative>,
    /// Files the native equivalents of maintainer scripts wrote.
    pub generated: Vec<String>,
    pub removed: Vec<Removal>,
    pub changed: Vec<Change>,
    pub warnings: Vec<String>,
}

/// One entry read from a package's `data.tar`.
struct RawEntry {
    path: String,
    /// As shipped, for the dpkg `.list` file (`/usr/bin/x`).
    listed: String,
    kind: RawKind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
}

enum RawKind {
    Directory,
    File(Vec<u8>),
    Symlink(String),
    Hardlink(String),
}

/// Builds the tree from `spec` and `debs` (in installation order).
pub fn assemble(
    spec: &Spec,
    debs: &[InstalledDeb],
    options: &AssembleOptions,
) -> Result<(Tree, Report), AssembleError> {
    for (key, values) in [
        ("contents.builds", spec.contents.builds.len()),
        ("contents.artifacts", spec.contents.artifacts.len()),
        ("contents.files", spec.contents.files.len()),
    ] {
        if values > 0 {
            return Err(AssembleError::Unsupported {
                key: key.to_owned(),
                reason: "hardbox installs Debian packages only and runs no build pipelines"
                    .to_owned(),
            });
        }
    }
    let epoch = options.source_date_epoch;
    let plan = spec.hardening_plan();
    let mut tree = Tree::new();
    let mut report = Report::default();
    if plan.merged_usr {
        // As on a merged-/usr system, each link's directory exists before packages are
        // unpacked, so what a package ships below /lib64 (libc6's dynamic loader link) lands in
        // /usr/lib64 instead of replacing the link.
        for dir in ["bin", "sbin", "lib", "lib64"] {
            tree.insert(&format!("usr/{dir}"), Entry::directory(0o755, 0, 0, epoch));
            tree.insert(dir, Entry::symlink(&format!("usr/{dir}"), epoch));
        }
    }

    let unpacked = unpack_all(debs)?;
    let mut lists = Vec::with_capacity(debs.len());
    for (deb, entries) in debs.iter().zip(unpacked) {
        let package: Arc<str> = Arc::from(deb.name.as_str());
        let mut listed = Vec::with_capacity(entries.len());
        for raw in entries {
            listed.push(raw.listed.clone());
            merge(&mut tree, &mut report, deb, &package, raw)?;
        }
        lists.push(listed);
        report.packages.push(PackageRecord {
            name: deb.name.clone(),
            version: deb.version.clone(),
            architecture: deb.architecture.clone(),
            scripts_not_run: deb.deb.control().scripts.keys().cloned().collect(),
        });
    }
    // Architectures without /lib64 keep neither the link nor an empty /usr/lib64.
    if plan.merged_usr && tree.children_of("usr/lib64").next().is_none() {
        tree.remove("usr/lib64");
        tree.remove("lib64");
    }

    native::accounts(spec, &mut tree, &mut report, epoch);
    native::ca_certificates(&mut tree, &mut report, epoch);
    native::alternatives(debs, &mut tree, &mut report, epoch);
    native::timezone(&mut tree, &mut report, epoch);
    native::os_release(spec, &mut tree, &mut report, epoch);
    native::dpkg_database(debs, &lists, &mut tree, &mut report, epoch);

    for path in &spec.paths {
        apply_path(&mut tree, path, options)?;
    }
    harden::harden(&plan, &mut tree, &mut report, epoch);

    for (_, entry) in tree.iter_mut() {
        entry.mtime = entry.mtime.min(epoch);
    }
    Ok((tree, report))
}

/// Reads every package's `data.tar` on every core (up to four); results keep the input order.
/// The largest `data.tar` members are taken first, so no core is left decompressing one big
/// package alone at the end.
fn unpack_all(debs: &[InstalledDeb]) -> Result<Vec<Vec<RawEntry>>, AssembleError> {
    type Slot = Option<Result<Vec<RawEntry>, AssembleError>>;
    let slots: Vec<Mutex<Slot>> = debs.iter().map(|_| Mutex::new(None)).collect();
    let mut order: Vec<usize> = (0..debs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(debs[i].deb.data_member().size));
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
        .min(debs.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let result = read_data(&debs[i].deb);
                    if let Ok(mut slot) = slots[i].lock() {
                        *slot = Some(result);
                    }
                }
            });
        }
    });
    let mut out = Vec::with_capacity(debs.len());
    for (slot, deb) in slots.into_iter().zip(debs) {
        let result = slot.into_inner().ok().flatten().unwrap_or_else(|| {
            Err(AssembleError::Data {
                path: deb.deb.path().to_owned(),
                source: std::io::Error::other("the unpacking thread stopped"),
            })
        })?;
        out.push(result);
    }
    Ok(out)
}

/// Reads one package's `data.tar` into memory, checking every path.
fn read_data(deb: &DebFile) -> Result<Vec<RawEntry>, AssembleError> {
    let path = deb.path();
    let data_error = |source| AssembleError::Data {
        path: path.to_owned(),
        source,
    };
    let mut archive = tar::Archive::new(deb.data()?);
    let mut out = Vec::new();
    for entry in archive.entries().map_err(data_error)? {
        let mut entry = entry.map_err(data_error)?;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let entry_error = |reason: String| AssembleError::Entry {
            path: path.to_owned(),
            entry: raw_path.clone(),
            reason,
        };
        if raw_path.starts_with('/') {
            return Err(entry_error("absolute paths are not allowed".to_owned()));
        }
        let clean = tree::clean(&raw_path).map_err(|e| entry_error(e.to_string()))?;
        if clean.is_empty() {
            continue;
        }
        let header = entry.header();
        let mode = header.mode().map_err(|e| entry_error(e.to_string()))? & 0o7777;
        let uid = header.uid().map_err(|e| entry_error(e.to_string()))?;
        let gid = header.gid().map_err(|e| entry_error(e.to_string()))?;
        let mtime = header.mtime().map_err(|e| entry_error(e.to_string()))?;
        let (uid, gid) = match (u32::try_from(uid), u32::try_from(gid)) {
            (Ok(u), Ok(g)) => (u, g),
            _ => return Err(entry_error(format!("owner {uid}:{gid} is out of range"))),
        };
        let link = || -> Result<String, AssembleError> {
            entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .ok_or_else(|| entry_error("link without a target".to_owned()))
        };
        let kind = match header.entry_type() {
            tar::EntryType::Directory => RawKind::Directory,
            tar::EntryType::Symlink => RawKind::Symlink(link()?),
            tar::EntryType::Link => {
                let target = link()?;
                let clean_target = tree::clean(&target).map_err(|e| entry_error(e.to_string()))?;
                RawKind::Hardlink(clean_target)
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(data_error)?;
                RawKind::File(bytes)
            }
            other => {
                return Err(entry_error(format!(
                    "unsupported entry type {other:?} (devices and fifos do not belong in images)"
                )))
            }
        };
        out.push(RawEntry {
            listed: format!("/{clean}"),
            path: clean,
            kind,
            mode,
            uid,
            gid,
            mtime,
        });
    }
    Ok(out)
}

/// Merges one entry into the tree (later packages win, as with dpkg).
fn merge(
    tree: &mut Tree,
    report: &mut Report,
    deb: &InstalledDeb,
    package: &Arc<str>,
    raw: RawEntry,
) -> Result<(), AssembleError> {
    let entry_error = |reason: String| AssembleError::Entry {
        path: deb.deb.path().to_owned(),
        entry: raw.listed.clone(),
        reason,
    };
    let placed = tree
        .place(&raw.path)
        .map_err(|e: TreeError| entry_error(e.to_string()))?;
    if placed.is_empty() {
        return Ok(());
    }
    let existing = tree.get(&placed).cloned();
    let kind = match raw.kind {
        RawKind::Directory => {
            match &existing {
                // dpkg keeps a symlink to a directory (merged /usr) and an existing directory.
                Some(e) if matches!(e.kind, Kind::Symlink(_)) => {
                    if tree.exists(&placed)
                        && tree
                            .resolve(&placed, true)
                            .is_ok_and(|p| tree.get(&p).is_some_and(Entry::is_dir))
                    {
                        return Ok(());
                    }
                    Kind::Directory
                }
                Some(e) if e.is_dir() => {
                    if let Some(dir) = tree.get_mut(&placed) {
                        dir.mode = raw.mode;
                        dir.uid = raw.uid;
                        dir.gid = raw.gid;
                    }
                    return Ok(());
                }
                _ => Kind::Directory,
            }
        }
        RawKind::File(bytes) => Kind::File(Arc::new(bytes)),
        RawKind::Symlink(target) => Kind::Symlink(target),
        RawKind::Hardlink(target) => {
            let target = tree
                .place(&target)
                .map_err(|e| entry_error(e.to_string()))?;
            let content = match tree.get(&target).map(|e| &e.kind) {
                Some(Kind::File(c)) => c.clone(),
                Some(Kind::Hardlink { content, .. }) => content.clone(),
                _ => {
                    return Err(entry_error(format!(
                        "hard link to /{target}, which is not a file the package shipped before it"
                    )))
                }
            };
            Kind::Hardlink { target, content }
        }
    };
    if let Some(old) = &existing {
        if !old.is_dir() {
            if let Some(from) = &old.package {
                if **from != **package {
                    report.replaced.push(Replaced {
                        path: format!("/{placed}"),
                        by: package.to_string(),
                        from: from.to_string(),
                    });
                }
            }
        }
    }
    tree.insert(
        &placed,
        Entry {
            kind,
            mode: raw.mode,
            uid: raw.uid,
            gid: raw.gid,
            mtime: raw.mtime,
            package: Some(package.clone()),
        },
    );
    Ok(())
}

/// Applies one `paths` entry.
fn apply_path(
    tree: &mut Tree,
    spec: &PathSpec,
    options: &AssembleOptions,
) -> Result<(), AssembleError> {
    let epoch = options.source_date_epoch;
    let fail = |reason: String| AssembleError::Path {
        path: spec.path.clone(),
        reason,
    };
    let placed = tree.place(&spec.path).map_err(|e| fail(e.to_string()))?;
    if placed.is_empty() && spec.kind != PathKind::Permissions {
        return Err(fail("cannot replace the root directory".to_owned()));
    }
    let mode = spec.mode.map(|m| m.0);
    match spec.kind {
        PathKind::Directory => {
            if let Some(source) = &spec.source {
                copy_dir(tree, &options.context.join(source), &placed, spec, epoch)?;
            }
            let existing = tree.get(&placed).filter(|e| e.is_dir()).map(|e| e.mode);
            tree.insert(
                &placed,
                Entry::directory(
                    mode.or(existing).unwrap_or(0o755),
                    spec.uid,
                    spec.gid,
                    epoch,
                ),
            );
            if spec.recursive {
                set_owner_below(tree, &placed, spec);
            }
        }
        PathKind::File | PathKind::Emptyfile => {
            let content = match (&spec.content, &spec.source) {
                (Some(text), _) => text.clone().into_bytes(),
                (None, Some(source)) => {
                    let path = options.context.join(source);
                    fs::read(&path).map_err(|e| AssembleError::Source {
                        path: path.clone(),
                        entry: spec.path.clone(),
                        source: e,
                    })?
                }
                (None, None) => Vec::new(),
            };
            tree.insert(
                &placed,
                Entry::file(content, mode.unwrap_or(0o644), spec.uid, spec.gid, epoch),
            );
        }
        PathKind::Symlink => {
            let target = spec.source.as_deref().unwrap_or_default();
            let mut link = Entry::symlink(target, epoch);
            link.uid = spec.uid;
            link.gid = spec.gid;
            tree.insert(&placed, link);
        }
        PathKind::Delete => {
            tree.remove(&placed);
        }
        PathKind::Permissions => {
            let Some(entry) = tree.get_mut(&placed) else {
                return Err(fail("no such file or directory in the image".to_owned()));
            };
            entry.uid = spec.uid;
            entry.gid = spec.gid;
            if let Some(mode) = mode {
                entry.mode = mode;
            }
            if spec.recursive {
                set_owner_below(tree, &placed, spec);
            }
        }
    }
    Ok(())
}

fn set_owner_below(tree: &mut Tree, dir: &str, spec: &PathSpec) {
    let below: Vec<String> = tree.children_of(dir).map(|(p, _)| p.clone()).collect();
    for path in below {
        if let Some(entry) = tree.get_mut(&path) {
            entry.uid = spec.uid;
            entry.gid = spec.gid;
        }
    }
}

/// Copies a directory of the build context into the tree (files, directories, symlinks).
fn copy_dir(
    tree: &mut Tree,
    source: &Path,
    target: &str,
    spec: &PathSpec,
    epoch: u64,
) -> Result<(), AssembleError> {
    let read_error = |path: &Path, e| AssembleError::Source {
        path: path.to_owned(),
        entry: spec.path.clone(),
        source: e,
    };
    let mut entries: Vec<_> = fs::read_dir(source)
        .map_err(|e| read_error(source, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_error(source, e))?;
    entries.sort_by_key(|e| e.file_name());
    for item in entries {
        let name = item.file_name().to_string_lossy().into_owned();
        let path = format!("{target}/{name}");
        let meta = fs::symlink_metadata(item.path()).map_err(|e| read_error(&item.path(), e))?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
        if meta.is_dir() {
            tree.insert(&path, Entry::directory(mode, spec.uid, spec.gid, epoch));
            copy_dir(tree, &item.path(), &path, spec, epoch)?;
        } else if meta.file_type().is_symlink() {
            let link = fs::read_link(item.path()).map_err(|e| read_error(&item.path(), e))?;
            tree.insert(&path, Entry::symlink(&link.to_string_lossy(), epoch));
        } else {
            let bytes = fs::read(item.path()).map_err(|e| read_error(&item.path(), e))?;
            tree.insert(&path, Entry::file(bytes, mode, spec.uid, spec.gid, epoch));
        }
    }
    Ok(())
}
