//! Store maintenance: `gc` removes what no image refers to, `fsck` proves the store is intact.
//!
//! Both hold the store lock exclusively, so no import is half-way through while they look.
//! Unreferenced blobs and `tmp/` leftovers are the normal residue of interrupted commands: `gc`
//! removes them and `fsck` reports them as information, never as damage. Damage is anything that
//! would make a referenced image untrustworthy: a blob whose content does not match its name, a
//! missing or wrongly sized referenced blob, an unparseable `index.json`, `oci-layout`, manifest
//! or config.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;

use fs_err as fs;
use fsutil::LockMode;
use serde::Serialize;
use types::{Digest, Sha256Writer};

use crate::error::{BlobError, StoreError};
use crate::images::reachable;
use crate::spec::{self, Descriptor, Layout};
use crate::store::{check_layer_count, parse_config, parse_index, parse_manifest, Store};

/// What `gc` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Referrers removed from `index.json` because their subject is gone.
    pub referrers_removed: usize,
    pub blobs_removed: usize,
    pub blob_bytes_freed: u64,
    pub tmp_removed: usize,
    pub tmp_bytes_freed: u64,
}

/// Why `gc` failed.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("not collecting: cannot tell which blobs the images use")]
    Walk(#[source] BlobError),
    #[error("failed to list {path}")]
    List { path: PathBuf, source: io::Error },
    #[error("failed to remove {path}")]
    Remove { path: PathBuf, source: io::Error },
}

/// Why `fsck` could not run at all (damage it finds is reported, not returned as an error).
#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("failed to list {path}")]
    List { path: PathBuf, source: io::Error },
}

/// One piece of damage `fsck` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum FsckProblem {
    /// `oci-layout` is missing or not valid.
    Layout { error: String },
    /// `index.json` is missing or not valid.
    Index { error: String },
    /// A blob's content does not hash to its file name.
    CorruptBlob { digest: Digest, actual: Digest },
    /// A blob could not be read.
    UnreadableBlob { digest: Digest, error: String },
    /// A referenced blob is absent.
    MissingBlob {
        kind: String,
        digest: Digest,
        referenced_by: String,
    },
    /// A referenced blob has another size than its descriptor says.
    SizeMismatch {
        kind: String,
        digest: Digest,
        expected: u64,
        actual: u64,
        referenced_by: String,
    },
    /// A referenced manifest, index or config cannot be used.
    Invalid {
        kind: String,
        digest: Digest,
        referenced_by: String,
        error: String,
    },
}

impl fmt::Display for FsckProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsckProblem::Layout { error } => write!(f, "oci-layout: {error}"),
            FsckProblem::Index { error } => write!(f, "index.json: {error}"),
            FsckProblem::CorruptBlob { digest, actual } => {
                write!(f, "blob {digest} has content with digest {actual}")
            }
            FsckProblem::UnreadableBlob { digest, error } => {
                write!(f, "blob {digest} cannot be read: {error}")
            }
            FsckProblem::MissingBlob {
                kind,
                digest,
                referenced_by,
            } => write!(f, "{kind} {digest} (of {referenced_by}) is missing"),
            FsckProblem::SizeMismatch {
                kind,
                digest,
                expected,
                actual,
                referenced_by,
            } => write!(
                f,
                "{kind} {digest} (of {referenced_by}) is {actual} bytes but its descriptor says {expected}"
            ),
            FsckProblem::Invalid {
                kind,
                digest,
                referenced_by,
                error,
            } => write!(f, "{kind} {digest} (of {referenced_by}) is invalid: {error}"),
        }
    }
}

/// What `fsck` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FsckReport {
    pub blobs_checked: usize,
    pub images_checked: usize,
    pub referrers_checked: usize,
    /// Referrers whose subject is no longer in the store (not damage; `gc` removes them).
    pub dangling_referrers: Vec<Digest>,
    /// Damage; the store is intact when this is empty.
    pub problems: Vec<FsckProblem>,
    /// Blobs no image refers to (not damage; `gc` removes them).
    pub unreferenced_blobs: Vec<Digest>,
    /// Files in `tmp/` (not damage; `gc` removes them).
    pub tmp_leftovers: Vec<String>,
    /// Files in `blobs/sha256/` whose names are not digests (not damage; left alone).
    pub stray_files: Vec<String>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

impl Store {
    /// Removes blobs no image refers to and everything in `tmp/`.
    pub fn gc(&self) -> Result<GcReport, GcError> {
        let _lock = self.lock_store(LockMode::Exclusive)?;
        let pruned = self.update_index(|index| {
            let pruned = crate::write::prune_referrers(self, index);
            (!pruned.is_empty(), pruned.len())
        })?;
        let index = self.read_index()?;
        let keep = reachable(self, &index.manifests).map_err(GcError::Walk)?;
        let mut report = GcReport {
            referrers_removed: pruned,
            ..GcReport::default()
        };
        let list_error = |path: PathBuf| move |source| GcError::List { path, source };
        let blobs = self.blobs_dir().to_owned();
        for entry in fs::read_dir(&blobs).map_err(list_error(blobs.clone()))? {
            let entry = entry.map_err(list_error(blobs.clone()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(digest) = Digest::from_hex(&name) else {
                continue;
            };
            if keep.contains(&digest) {
                continue;
            }
            let path = entry.path();
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).map_err(|source| GcError::Remove { path, source })?;
            report.blobs_removed += 1;
            report.blob_bytes_freed += size;
        }
        let tmp = self.tmp_dir().to_owned();
        for entry in fs::read_dir(&tmp).map_err(list_error(tmp.clone()))? {
            let entry = entry.map_err(list_error(tmp.clone()))?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(list_error(path.clone()))?;
            let removed = if meta.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(|source| GcError::Remove { path, source })?;
            report.tmp_removed += 1;
            report.tmp_bytes_freed += meta.len();
        }
        for dir in [&blobs, &tmp] {
            fsutil::sync_dir(dir).map_err(|source| GcError::Remove {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(report)
    }

    /// Verifies every blob and every reference; damage is listed in the report.
    pub fn fsck(&self) -> Result<FsckReport, FsckError> {
        let _lock = self.lock_store(LockMode::Exclusive)?;
        let mut report = FsckReport::default();
        let list_error = |path: PathBuf| move |source| FsckError::List { path, source };

        match crate::store::read_capped(&self.root().join("oci-layout"), 4096)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Layout>(&b).map_err(|e| e.to_string()))
        {
            Ok(layout) if layout.image_layout_version.starts_with("1.") => {}
            Ok(layout) => report.problems.push(FsckProblem::Layout {
                error: format!("unsupported version {:?}", layout.image_layout_version),
            }),
            Err(error) => report.problems.push(FsckProblem::Layout { error }),
        }

        // Every blob, hashed: digest -> size, for the intact ones.
        let mut intact: BTreeMap<Digest, u64> = BTreeMap::new();
        let mut damaged: BTreeSet<Digest> = BTreeSet::new();
        let blobs = self.blobs_dir().to_owned();
        for entry in fs::read_dir(&blobs).map_err(list_error(blobs.clone()))? {
            let entry = entry.map_err(list_error(blobs.clone()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(digest) = Digest::from_hex(&name) else {
                report.stray_files.push(name);
                continue;
            };
            report.blobs_checked += 1;
            match hash_file(&entry.path()) {
                Ok((actual, size)) if actual == digest => {
                    intact.insert(digest, size);
                }
                Ok((actual, _)) => {
                    report.problems.push(FsckProblem::CorruptBlob {
                        digest: digest.clone(),
                        actual,
                    });
                    damaged.insert(digest);
                }
                Err(e) => {
                    report.problems.push(FsckProblem::UnreadableBlob {
                        digest: digest.clone(),
                        error: e.to_string(),
                    });
                    damaged.insert(digest);
                }
            }
        }

        let mut referenced: BTreeSet<Digest> = BTreeSet::new();
        match self.read_index() {
            Err(e) => report.problems.push(FsckProblem::Index {
                error: error_chain(&e),
            }),
            Ok(index) => {
                let mut checker = Checker {
                    store: self,
                    intact: &intact,
                    damaged: &damaged,
                    referenced: &mut referenced,
                    problems: &mut report.problems,
                };
                let mut seen = BTreeSet::new();
                let listed: BTreeSet<Digest> =
                    index.manifests.iter().map(|d| d.digest.clone()).collect();
                for descriptor in &index.manifests {
                    if descriptor.is_referrer() {
                        if seen.insert(descriptor.digest.clone()) {
                            report.referrers_checked += 1;
                            if let Some(subject) = checker.check_referrer(descriptor) {
                                if !listed.contains(&subject) {
                                    report.dangling_referrers.push(descriptor.digest.clone());
                                }
                            }
                        }
                        continue;
                    }
                    if seen.insert(descriptor.digest.clone()) {
                        report.images_checked += 1;
                        let by = descriptor
                            .ref_name()
                            .map(str::to_owned)
                            .unwrap_or_else(|| "index.json".to_owned());
                        checker.check_entry(descriptor, &by, 0);
                    }
                }
            }
        }
        report.unreferenced_blobs = intact
            .keys()
            .chain(damaged.iter())
            .filter(|d| !referenced.contains(*d))
            .cloned()
            .collect();
        let tmp = self.tmp_dir().to_owned();
        for entry in fs::read_dir(&tmp).map_err(list_error(tmp.clone()))? {
            let entry = entry.map_err(list_error(tmp.clone()))?;
            report
                .tmp_leftovers
                .push(entry.file_name().to_string_lossy().into_owned());
        }
        report.tmp_leftovers.sort();
        Ok(report)
    }
}

fn hash_file(path: &std::path::Path) -> io::Result<(Digest, u64)> {
    let mut file = fs::File::open(path)?;
    let mut hash = Sha256Writer::new();
    io::copy(&mut (&mut file).take(u64::MAX), &mut hash)?;
    let (digest, size, _) = hash.finish();
    Ok((digest, size))
}

/// Walks references from `index.json`, recording problems.
struct Checker<'a> {
    store: &'a Store,
    intact: &'a BTreeMap<Digest, u64>,
    damaged: &'a BTreeSet<Digest>,
    referenced: &'a mut BTreeSet<Digest>,
    problems: &'a mut Vec<FsckProblem>,
}

impl Checker<'_> {
    /// Checks that a referenced blob exists with the right size; `true` if it can be read.
    fn check_blob(&mut self, kind: &str, descriptor: &Descriptor, by: &str) -> bool {
        self.referenced.insert(descriptor.digest.clone());
        if self.damaged.contains(&descriptor.digest) {
            return false;
        }
        match self.intact.get(&descriptor.digest) {
            None => {
                self.problems.push(FsckProblem::MissingBlob {
                    kind: kind.to_owned(),
                    digest: descriptor.digest.clone(),
                    referenced_by: by.to_owned(),
                });
                false
            }
            Some(size) if *size != descriptor.size => {
                self.problems.push(FsckProblem::SizeMismatch {
                    kind: kind.to_owned(),
                    digest: descriptor.digest.clone(),
                    expected: descriptor.size,
                    actual: *size,
                    referenced_by: by.to_owned(),
                });
                false
            }
            Some(_) => true,
        }
    }

    fn invalid(&mut self, kind: &str, digest: &Digest, by: &str, error: &BlobError) {
        self.problems.push(FsckProblem::Invalid {
            kind: kind.to_owned(),
            digest: digest.clone(),
            referenced_by: by.to_owned(),
            error: error_chain(error),
        });
    }

    /// Checks a referrer's manifest, config and blobs; returns its subject when it can be read.
    fn check_referrer(&mut self, descriptor: &Descriptor) -> Option<Digest> {
        let by = format!("referrer {}", descriptor.digest.short());
        if !self.check_blob("manifest", descriptor, "index.json") {
            return None;
        }
        let manifest = match self
            .store
            .read_metadata("manifest", descriptor)
            .and_then(|bytes| crate::write::parse_artifact(descriptor, &bytes))
        {
            Ok(m) => m,
            Err(e) => {
                self.invalid("manifest", &descriptor.digest, "index.json", &e);
                return None;
            }
        };
        self.check_blob("config", &manifest.config, &by);
        for blob in &manifest.layers {
            self.check_blob("referrer blob", blob, &by);
        }
        manifest.subject.map(|s| s.digest)
    }

    fn check_entry(&mut self, descriptor: &Descriptor, by: &str, depth: usize) {
        if spec::is_index(&descriptor.media_type) {
            if !self.check_blob("index", descriptor, by) || depth > 4 {
                return;
            }
            let nested = self
                .store
                .read_metadata("index", descriptor)
                .and_then(|bytes| parse_index(descriptor, &bytes));
            match nested {
                Ok(index) => {
                    for child in &index.manifests {
                        self.check_entry(child, by, depth + 1);
                    }
                }
                Err(e) => self.invalid("index", &descriptor.digest, by, &e),
            }
            return;
        }
        if !self.check_blob("manifest", descriptor, by) {
            return;
        }
        let manifest = match self
            .store
            .read_metadata("manifest", descriptor)
            .and_then(|bytes| parse_manifest(descriptor, &bytes))
        {
            Ok(m) => m,
            Err(e) => return self.invalid("manifest", &descriptor.digest, by, &e),
        };
        let by_manifest = format!("{by} manifest {}", descriptor.digest.short());
        for layer in &manifest.layers {
            self.check_blob("layer", layer, &by_manifest);
        }
        if self.check_blob("config", &manifest.config, &by_manifest) {
            let config = self
                .store
                .read_metadata("config", &manifest.config)
                .and_then(|bytes| parse_config(&manifest.config, &bytes))
                .and_then(|config| check_layer_count(&descriptor.digest, &manifest, &config));
            if let Err(e) = config {
                self.invalid("config", &manifest.config.digest, &by_manifest, &e);
            }
        }
    }
}
