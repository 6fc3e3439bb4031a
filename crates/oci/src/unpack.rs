//! `image unpack`: an image's layers applied, bottom first, into a new directory.
//!
//! Guarantees: the target is either left as it was (absent or empty) or replaced by the complete
//! tree. Layers are applied into a hidden staging sibling, each layer's digest (as streamed) is
//! compared with the manifest and its diff_id with the config's `rootfs.diff_ids`, and only then
//! is the staging directory renamed onto the target. On any error the staging directory is
//! removed. Writes stay inside the staging directory (the `layer` crate's guarantee).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use fs_err as fs;
use fsutil::{LockMode, TempPath};
use serde::Serialize;
use types::Digest;

use crate::error::BlobError;
use crate::images::ReadImageError;
use crate::spec::Descriptor;
use crate::store::Store;

/// What `image unpack` did.
#[derive(Debug, Clone, Serialize)]
pub struct UnpackReport {
    pub digest: Digest,
    pub layers: usize,
    pub entries: u64,
    pub bytes: u64,
    #[serde(skip)]
    pub warnings: Vec<layer::Warning>,
}

/// Why an unpack failed. The target directory is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("{path} exists and is not an empty directory")]
    TargetNotEmpty { path: PathBuf },
    #[error("failed to prepare {path}")]
    Write { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Read(#[from] ReadImageError),
    #[error("failed to unpack image {digest}")]
    Blob { digest: Digest, source: BlobError },
    #[error("failed to unpack image {digest}")]
    Layer {
        digest: Digest,
        source: layer::LayerError,
    },
    #[error("layer {layer} of image {image} has content with digest {actual}")]
    LayerDigest {
        image: Digest,
        layer: Digest,
        actual: Digest,
    },
    #[error("layer {layer} of image {image} has diff_id {actual} but its config says {expected}")]
    DiffId {
        image: Digest,
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
}

impl From<crate::error::StoreError> for UnpackError {
    fn from(e: crate::error::StoreError) -> UnpackError {
        UnpackError::Read(ReadImageError::Store(e))
    }
}

/// Whether `dir` is absent, or an empty directory (not a symlink to one).
fn target_is_free(dir: &Path) -> Result<bool, UnpackError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(source) => Err(UnpackError::Write {
            path: dir.to_owned(),
            source,
        }),
        Ok(meta) if meta.is_dir() => {
            let mut entries = fs::read_dir(dir).map_err(|source| UnpackError::Write {
                path: dir.to_owned(),
                source,
            })?;
            Ok(entries.next().is_none())
        }
        Ok(_) => Ok(false),
    }
}

impl Store {
    /// Unpacks the image `reference` names into `dir`, which must not exist or be empty.
    pub fn unpack(
        &self,
        reference: &str,
        dir: &Path,
        options: layer::Options,
    ) -> Result<UnpackReport, UnpackError> {
        if !target_is_free(dir)? {
            return Err(UnpackError::TargetNotEmpty {
                path: dir.to_owned(),
            });
        }
        let _lock = self.lock_store(LockMode::Shared)?;
        let (image, _) = self.load_reference(reference)?;
        let image_digest = image.descriptor.digest.clone();
        let mut unpacking =
            Unpacking::start(dir, &image_digest, image.manifest.layers.len(), options)?;
        let blob_error = |source| UnpackError::Blob {
            digest: image_digest.clone(),
            source,
        };
        for (layer, diff_id) in image
            .manifest
            .layers
            .iter()
            .zip(&image.config.rootfs.diff_ids)
        {
            let mut file = self.open_blob("layer", layer).map_err(blob_error)?;
            let size = file
                .metadata()
                .map_err(|source| {
                    blob_error(BlobError::Read {
                        kind: "layer",
                        digest: layer.digest.clone(),
                        path: self.blob_path(&layer.digest),
                        source,
                    })
                })?
                .len();
            if size != layer.size {
                return Err(blob_error(BlobError::SizeMismatch {
                    kind: "layer",
                    digest: layer.digest.clone(),
                    expected: layer.size,
                    actual: size,
                }));
            }
            let stats = unpacking.apply(layer, &mut file, None)?;
            if stats.digest != layer.digest {
                return Err(UnpackError::LayerDigest {
                    image: image_digest.clone(),
                    layer: layer.digest.clone(),
                    actual: stats.digest,
                });
            }
            if stats.diff_id != *diff_id {
                return Err(UnpackError::DiffId {
                    image: image_digest.clone(),
                    layer: layer.digest.clone(),
                    expected: diff_id.clone(),
                    actual: stats.diff_id,
                });
            }
        }
        unpacking.finish()
    }
}

/// An unpack in progress: layers applied, bottom first, into a staging sibling of the target,
/// which [`Unpacking::finish`] renames onto it. Dropped unfinished, it removes the staging
/// directory and leaves the target as it was. Used by [`Store::unpack`] and by `image import
/// --unpack`, which feeds it the layers it is storing.
#[derive(Debug)]
pub(crate) struct Unpacking {
    target: PathBuf,
    parent: PathBuf,
    staging: TempPath,
    applier: layer::Applier,
    report: UnpackReport,
}

impl Unpacking {
    /// Checks that `dir` is absent or empty and creates the staging directory next to it.
    pub(crate) fn start(
        dir: &Path,
        image: &Digest,
        layers: usize,
        options: layer::Options,
    ) -> Result<Unpacking, UnpackError> {
        if !target_is_free(dir)? {
            return Err(UnpackError::TargetNotEmpty {
                path: dir.to_owned(),
            });
        }
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "rootfs".to_owned());
        let staging = TempPath::new(parent.join(fsutil::unique_name(&format!(".{name}.unpack-"))));
        let prepare_error = |source| UnpackError::Write {
            path: staging.path().to_owned(),
            source,
        };
        fs::create_dir(staging.path()).map_err(prepare_error)?;
        let applier = layer::Applier::new(staging.path(), options).map_err(prepare_error)?;
        Ok(Unpacking {
            target: dir.to_owned(),
            parent,
            staging,
            applier,
            report: UnpackReport {
                digest: image.clone(),
                layers,
                entries: 0,
                bytes: 0,
                warnings: Vec::new(),
            },
        })
    }

    /// Applies the next layer from `blob`, writing a copy of every byte read to `copy` when
    /// given ([`layer::Applier::apply_and_copy`]). Returns what was applied, the blob's digest,
    /// size and diff_id among it, for the caller to check before it trusts the layer (or its
    /// copy): nothing is compared here.
    pub(crate) fn apply(
        &mut self,
        layer: &Descriptor,
        blob: &mut (dyn Read + Send),
        copy: Option<&mut (dyn Write + Send)>,
    ) -> Result<layer::LayerStats, UnpackError> {
        let compression =
            layer::Compression::from_media_type(&layer.media_type).ok_or_else(|| {
                UnpackError::Blob {
                    digest: self.report.digest.clone(),
                    source: BlobError::UnknownMediaType {
                        kind: "layer",
                        digest: layer.digest.clone(),
                        media_type: layer.media_type.clone(),
                    },
                }
            })?;
        let applied = match copy {
            Some(copy) => self
                .applier
                .apply_and_copy(blob, copy, &layer.digest, compression),
            None => self.applier.apply(blob, &layer.digest, compression),
        };
        let mut stats = applied.map_err(|source| UnpackError::Layer {
            digest: self.report.digest.clone(),
            source,
        })?;
        self.report.entries += stats.entries;
        self.report.bytes += stats.bytes;
        self.report.warnings.append(&mut stats.warnings);
        Ok(stats)
    }

    /// Sets the directory metadata disturbed while applying and renames the staging directory
    /// onto the target.
    pub(crate) fn finish(mut self) -> Result<UnpackReport, UnpackError> {
        let digest = self.report.digest.clone();
        self.applier
            .finish()
            .map_err(|source| UnpackError::Layer { digest, source })?;
        place(&self.staging, &self.target)?;
        self.staging.keep();
        fsutil::sync_dir(&self.parent).map_err(|source| UnpackError::Write {
            path: self.parent.clone(),
            source,
        })?;
        Ok(self.report)
    }
}

/// Renames the staging directory onto `dir`: replacing an empty directory, or creating `dir`
/// without replacing anything that appeared meanwhile.
fn place(staging: &TempPath, dir: &Path) -> Result<(), UnpackError> {
    let exists = fs::symlink_metadata(dir).is_ok();
    let flags = if exists {
        // rename(2) replaces a directory only when it is empty.
        rustix::fs::RenameFlags::empty()
    } else {
        rustix::fs::RenameFlags::NOREPLACE
    };
    rustix::fs::renameat_with(rustix::fs::CWD, staging.path(), rustix::fs::CWD, dir, flags).map_err(
        |e| match e {
            rustix::io::Errno::EXIST | rustix::io::Errno::NOTEMPTY => UnpackError::TargetNotEmpty {
                path: dir.to_owned(),
            },
            other => UnpackError::Write {
                path: dir.to_owned(),
                source: other.into(),
            },
        },
    )
}
