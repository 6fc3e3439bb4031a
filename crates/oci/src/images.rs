//! Reading and renaming the images in the store: list, inspect, resolve, tag and remove.
//!
//! Each image is one manifest descriptor per name in `index.json` (annotation
//! `org.opencontainers.image.ref.name`); an image without a name has one descriptor without that
//! annotation and is reachable by digest. Removing the last name of an image removes the blobs no
//! remaining image uses, under the exclusive store lock so no concurrent import loses a blob.

use std::collections::BTreeSet;
use std::io;

use fsutil::LockMode;
use serde::Serialize;
use types::Digest;

use crate::error::{BlobError, NameError, ResolveError, StoreError};
use crate::names;
use crate::spec::{self, Descriptor, Index, ANNOTATION_REF_NAME};
use crate::store::{parse_index, Image, Store};

/// One image in a listing.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSummary {
    pub digest: Digest,
    pub names: Vec<String>,
    pub platform: Option<String>,
    pub created: Option<String>,
    /// Bytes of the manifest, config and layer blobs.
    pub size: u64,
    /// Why the image's manifest or config cannot be used, if it cannot (`fsck` says more).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
}

/// Everything `image inspect` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ImageDetails {
    pub digest: Digest,
    pub media_type: String,
    pub names: Vec<String>,
    pub platform: String,
    pub created: Option<String>,
    pub config_digest: Digest,
    pub config: RunSummary,
    pub layers: Vec<LayerSummary>,
    pub size: u64,
}

/// How the image runs.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RunSummary {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub diff_id: Digest,
}

/// Why `image ls` or `image inspect` failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadImageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("failed to read image {digest}")]
    Blob { digest: Digest, source: BlobError },
}

/// Why `image tag` failed.
#[derive(Debug, thiserror::Error)]
pub enum TagError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("cannot tag {source_reference:?} as {target:?}")]
    Name {
        source_reference: String,
        target: String,
        source: NameError,
    },
}

/// Why `image rm` failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("removed the names but kept all blobs: cannot tell which blobs remaining images use")]
    Walk(#[source] BlobError),
    #[error("failed to remove blob {digest}")]
    Delete { digest: Digest, source: io::Error },
    #[error("failed to sync {path}")]
    Sync {
        path: std::path::PathBuf,
        source: io::Error,
    },
}

/// What `image rm` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RemoveReport {
    pub untagged: Vec<String>,
    pub deleted_images: Vec<Digest>,
    pub deleted_blobs: usize,
    pub bytes_freed: u64,
}

/// The names of a manifest digest in an index, in index order.
pub(crate) fn names_of(index: &Index, digest: &Digest) -> Vec<String> {
    index
        .manifests
        .iter()
        .filter(|d| d.digest == *digest)
        .filter_map(|d| d.ref_name().map(str::to_owned))
        .collect()
}

/// Gives `descriptor` the name `name` (moving it from any image that had it), dropping the
/// unnamed entry of the same digest.
pub(crate) fn set_name(index: &mut Index, descriptor: &Descriptor, name: &str) {
    index.manifests.retain(|d| {
        d.ref_name() != Some(name) && !(d.digest == descriptor.digest && d.ref_name().is_none())
    });
    let mut entry = descriptor.clone();
    entry.annotations.clear();
    entry
        .annotations
        .insert(ANNOTATION_REF_NAME.to_owned(), name.to_owned());
    index.manifests.push(entry);
}

/// Adds `descriptor` without a name unless the index has it already.
pub(crate) fn add_unnamed(index: &mut Index, descriptor: &Descriptor) {
    if !index
        .manifests
        .iter()
        .any(|d| d.digest == descriptor.digest)
    {
        let mut entry = descriptor.clone();
        entry.annotations.clear();
        index.manifests.push(entry);
    }
}

/// The entries of `index.json` that are images (referrers are not).
pub(crate) fn image_entries(index: &Index) -> Vec<Descriptor> {
    index
        .manifests
        .iter()
        .filter(|d| !d.is_referrer())
        .cloned()
        .collect()
}

/// Every blob reachable from `descriptors` (manifests, configs, layers, nested indexes,
/// referrers' blobs).
pub(crate) fn reachable(
    store: &Store,
    descriptors: &[Descriptor],
) -> Result<BTreeSet<Digest>, BlobError> {
    let mut seen = BTreeSet::new();
    let mut pending: Vec<Descriptor> = descriptors.to_vec();
    while let Some(descriptor) = pending.pop() {
        if !seen.insert(descriptor.digest.clone()) {
            continue;
        }
        if spec::is_index(&descriptor.media_type) {
            let bytes = store.read_metadata("index", &descriptor)?;
            pending.extend(parse_index(&descriptor, &bytes)?.manifests);
        } else if descriptor.is_referrer() {
            let bytes = store.read_metadata("manifest", &descriptor)?;
            let manifest = crate::write::parse_artifact(&descriptor, &bytes)?;
            seen.insert(manifest.config.digest);
            seen.extend(manifest.layers.into_iter().map(|l| l.digest));
        } else {
            let bytes = store.read_metadata("manifest", &descriptor)?;
            let manifest = crate::store::parse_manifest(&descriptor, &bytes)?;
            seen.insert(manifest.config.digest);
            seen.extend(manifest.layers.into_iter().map(|l| l.digest));
        }
    }
    Ok(seen)
}

impl Store {
    /// Finds the manifest descriptor a reference names.
    pub fn resolve(&self, reference: &str) -> Result<Descriptor, ResolveError> {
        let index = self.read_index()?;
        names::resolve(&image_entries(&index), reference).cloned()
    }

    /// Resolves and loads an image.
    pub(crate) fn load_reference(
        &self,
        reference: &str,
    ) -> Result<(Image, Vec<String>), ReadImageError> {
        let index = self.read_index()?;
        let images = image_entries(&index);
        let descriptor = names::resolve(&images, reference)?;
        let names = names_of(&index, &descriptor.digest);
        let image = self
            .load_image(descriptor)
            .map_err(|source| ReadImageError::Blob {
                digest: descriptor.digest.clone(),
                source,
            })?;
        Ok((image, names))
    }

    /// Lists the images, one entry per manifest digest, in index order. A damaged image is listed
    /// with what is wrong instead of failing the listing.
    pub fn images(&self) -> Result<Vec<ImageSummary>, ReadImageError> {
        let _lock = self.lock_store(LockMode::Shared)?;
        let index = self.read_index()?;
        let mut out: Vec<ImageSummary> = Vec::new();
        for descriptor in &image_entries(&index) {
            if out.iter().any(|s| s.digest == descriptor.digest) {
                continue;
            }
            let names = names_of(&index, &descriptor.digest);
            let summary = match self.load_image(descriptor) {
                Ok(image) => ImageSummary {
                    digest: descriptor.digest.clone(),
                    names,
                    platform: Some(image.config.platform().to_string()),
                    created: image.config.created.clone(),
                    size: image.size(),
                    damaged: None,
                },
                Err(e) => ImageSummary {
                    digest: descriptor.digest.clone(),
                    names,
                    platform: None,
                    created: None,
                    size: descriptor.size,
                    damaged: Some(e.to_string()),
                },
            };
            out.push(summary);
        }
        Ok(out)
    }

    /// Describes one image.
    pub fn inspect(&self, reference: &str) -> Result<ImageDetails, ReadImageError> {
        let _lock = self.lock_store(LockMode::Shared)?;
        let (image, names) = self.load_reference(reference)?;
        let run = image.config.config.clone().unwrap_or_default();
        let size = image.size();
        Ok(ImageDetails {
            digest: image.descriptor.digest.clone(),
            media_type: image.descriptor.media_type.clone(),
            names,
            platform: image.config.platform().to_string(),
            created: image.config.created.clone(),
            config_digest: image.manifest.config.digest.clone(),
            config: RunSummary {
                env: run.env.unwrap_or_default(),
                entrypoint: run.entrypoint.unwrap_or_default(),
                cmd: run.cmd.unwrap_or_default(),
                working_dir: run.working_dir.filter(|w| !w.is_empty()),
                user: run.user.filter(|u| !u.is_empty()),
            },
            layers: image
                .manifest
                .layers
                .iter()
                .zip(&image.config.rootfs.diff_ids)
                .map(|(layer, diff_id)| LayerSummary {
                    digest: layer.digest.clone(),
                    media_type: layer.media_type.clone(),
                    size: layer.size,
                    diff_id: diff_id.clone(),
                })
                .collect(),
            size,
        })
    }

    /// Gives the image `source` names another name; returns its digest and the stored name.
    pub fn tag(&self, source: &str, target: &str) -> Result<(Digest, String), TagError> {
        let name = names::normalize_name(target).map_err(|e| TagError::Name {
            source_reference: source.to_owned(),
            target: target.to_owned(),
            source: e,
        })?;
        let _lock = self.lock_store(LockMode::Shared)?;
        let digest = self.update_index(|index| {
            match names::resolve(&image_entries(index), source).cloned() {
                Ok(descriptor) => {
                    set_name(index, &descriptor, &name);
                    (true, Ok(descriptor.digest))
                }
                Err(e) => (false, Err(e)),
            }
        })??;
        Ok((digest, name))
    }

    /// Removes names (or, for a digest reference, every name of that image), then the blobs no
    /// remaining image uses. Fails before changing anything if a reference is unknown.
    pub fn remove(&self, references: &[String]) -> Result<RemoveReport, RemoveError> {
        let _lock = self.lock_store(LockMode::Exclusive)?;
        let (removed, remaining, untagged) = self.update_index(|index| {
            let mut untagged = Vec::new();
            let mut removed: Vec<Descriptor> = Vec::new();
            for reference in references {
                let descriptor = match names::resolve(&image_entries(index), reference).cloned() {
                    Ok(d) => d,
                    Err(e) => return (false, Err(e)),
                };
                let by_name = descriptor.ref_name().is_some_and(|n| {
                    Some(n) == Some(reference.as_str())
                        || names::normalize_name(reference).ok().as_deref() == Some(n)
                });
                index.manifests.retain(|d| {
                    let drop = if by_name {
                        d.digest == descriptor.digest && d.ref_name() == descriptor.ref_name()
                    } else {
                        d.digest == descriptor.digest
                    };
                    if drop {
                        untagged.extend(d.ref_name().map(str::to_owned));
                    }
                    !drop
                });
                removed.push(descriptor);
            }
            // Referrers go with their subject.
            removed.extend(crate::write::prune_referrers(self, index));
            (true, Ok((removed, index.manifests.clone(), untagged)))
        })??;

        let mut report = RemoveReport {
            untagged,
            ..RemoveReport::default()
        };
        let gone: Vec<Descriptor> = removed
            .into_iter()
            .filter(|d| !remaining.iter().any(|r| r.digest == d.digest))
            .collect();
        for descriptor in gone.iter().filter(|d| !d.is_referrer()) {
            if !report.deleted_images.contains(&descriptor.digest) {
                report.deleted_images.push(descriptor.digest.clone());
            }
        }
        let keep = reachable(self, &remaining).map_err(RemoveError::Walk)?;
        let mut candidates = BTreeSet::new();
        for descriptor in &gone {
            // A damaged manifest of a removed image still lets its own blob go.
            match reachable(self, std::slice::from_ref(descriptor)) {
                Ok(all) => candidates.extend(all),
                Err(_) => {
                    candidates.insert(descriptor.digest.clone());
                }
            }
        }
        for digest in candidates.difference(&keep) {
            let path = self.blob_path(digest);
            let size = match fs_err::metadata(&path) {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(RemoveError::Delete {
                        digest: digest.clone(),
                        source,
                    })
                }
            };
            fs_err::remove_file(&path).map_err(|source| RemoveError::Delete {
                digest: digest.clone(),
                source,
            })?;
            report.deleted_blobs += 1;
            report.bytes_freed += size;
        }
        if report.deleted_blobs > 0 {
            fsutil::sync_dir(self.blobs_dir()).map_err(|source| RemoveError::Sync {
                path: self.blobs_dir().to_owned(),
                source,
            })?;
        }
        Ok(report)
    }
}
