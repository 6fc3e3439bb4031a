//! The on-disk store: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`) plus
//! hardbox's `tmp/` staging directory and two lock files.
//!
//! Guarantees:
//! - A blob appears under `blobs/sha256/<hex>` only after its bytes were written to `tmp/`,
//!   hashed, checked against the expected digest and size, and fsynced; the rename is followed by
//!   an fsync of the directory. `index.json` is replaced the same way.
//! - Metadata blobs (manifests, configs, indexes) are re-hashed and size-checked every time they
//!   are read, and never read into memory beyond [`MAX_METADATA_BYTES`].
//! - Locking: commands that add blobs hold `store.lock` shared for their whole run, and
//!   `index.lock` exclusively around each read-modify-write of `index.json`; commands that delete
//!   blobs (`gc`, `rm`, `fsck`) hold `store.lock` exclusively. A killed command leaves at most
//!   unreferenced blobs and `tmp/` files behind.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use fs_err as fs;
use fsutil::{AtomicFile, Lock, LockMode};
use types::Digest;

use crate::error::{BlobError, StoreError};
use crate::spec::{self, Descriptor, ImageConfig, Index, Layout, Manifest, MAX_METADATA_BYTES};

pub(crate) const STORE_LOCK: &str = "store.lock";
pub(crate) const INDEX_LOCK: &str = "index.lock";

/// An image store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
}

/// A manifest with its config, both verified against their descriptors and parsed.
#[derive(Debug, Clone)]
pub struct Image {
    pub descriptor: Descriptor,
    pub manifest: Manifest,
    pub config: ImageConfig,
    pub config_bytes: Vec<u8>,
}

impl Image {
    /// Bytes of the manifest, config and layers.
    pub fn size(&self) -> u64 {
        self.descriptor.size
            + self.manifest.config.size
            + self.manifest.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

impl Store {
    /// Opens the store at `root`, creating an empty one if it does not exist yet (or finishing
    /// one whose creation was interrupted).
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let store = Store {
            root: root.to_owned(),
            blobs: root.join("blobs").join("sha256"),
            tmp: root.join("tmp"),
        };
        let open_error = |source| StoreError::Open {
            root: root.to_owned(),
            source,
        };
        fs::create_dir_all(&store.blobs).map_err(open_error)?;
        fs::create_dir_all(&store.tmp).map_err(open_error)?;
        let layout = root.join("oci-layout");
        let index = root.join("index.json");
        if !layout.exists() || !index.exists() {
            let _guard = store.lock_index()?;
            if !layout.exists() {
                let bytes = serde_json::to_vec(&Layout::default()).map_err(io::Error::other);
                store
                    .write_file(&layout, &bytes.map_err(open_error)?)
                    .map_err(open_error)?;
            }
            if !index.exists() {
                store.write_index(&Index::default())?;
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    pub(crate) fn blobs_dir(&self) -> &Path {
        &self.blobs
    }

    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Takes the store lock (shared for adding, exclusive for deleting).
    pub(crate) fn lock_store(&self, mode: LockMode) -> Result<Lock, StoreError> {
        let path = self.root.join(STORE_LOCK);
        Lock::acquire(&path, mode).map_err(|source| StoreError::Lock { path, source })
    }

    fn lock_index(&self) -> Result<Lock, StoreError> {
        let path = self.root.join(INDEX_LOCK);
        Lock::acquire(&path, LockMode::Exclusive)
            .map_err(|source| StoreError::Lock { path, source })
    }

    fn write_file(&self, target: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = AtomicFile::create(&self.tmp, target)?;
        file.write_all(bytes)
            .map_err(|e| fsutil::with_path(e, "failed to write", file.temp_path()))?;
        file.commit()
    }

    /// Reads `index.json`.
    pub(crate) fn read_index(&self) -> Result<Index, StoreError> {
        let path = self.index_path();
        let bytes =
            read_capped(&path, MAX_METADATA_BYTES).map_err(|source| StoreError::ReadIndex {
                path: path.clone(),
                source,
            })?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::ParseIndex { path, source })
    }

    fn write_index(&self, index: &Index) -> Result<(), StoreError> {
        let path = self.index_path();
        let write_error = |source| StoreError::WriteIndex {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| write_error(e.into()))?;
        self.write_file(&path, &bytes).map_err(write_error)
    }

    /// Reads, changes and writes `index.json` under the index lock. `change` returns whether to
    /// write the result.
    pub(crate) fn update_index<T>(
        &self,
        change: impl FnOnce(&mut Index) -> (bool, T),
    ) -> Result<T, StoreError> {
        let _guard = self.lock_index()?;
        let mut index = self.read_index()?;
        let (write, value) = change(&mut index);
        if write {
            self.write_index(&index)?;
        }
        Ok(value)
    }

    /// Reads a metadata blob into memory, checking its size and digest against `descriptor`.
    pub(crate) fn read_metadata(
        &self,
        kind: &'static str,
        descriptor: &Descriptor,
    ) -> Result<Vec<u8>, BlobError> {
        read_verified(&self.blob_path(&descriptor.digest), kind, descriptor)
    }

    /// Opens a blob for streaming; the caller verifies what it reads.
    pub(crate) fn open_blob(
        &self,
        kind: &'static str,
        descriptor: &Descriptor,
    ) -> Result<fs::File, BlobError> {
        let path = self.blob_path(&descriptor.digest);
        open_blob_file(&path, kind, descriptor)
    }

    /// Whether a blob is present (not whether it is intact).
    pub(crate) fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Stores bytes already verified against `descriptor`.
    pub(crate) fn put_bytes(&self, descriptor: &Descriptor, bytes: &[u8]) -> Result<(), BlobError> {
        if self.has_blob(&descriptor.digest) {
            return Ok(());
        }
        self.write_file(&self.blob_path(&descriptor.digest), bytes)
            .map_err(|source| BlobError::Write {
                digest: descriptor.digest.clone(),
                source,
            })
    }

    /// Stores a blob read from `reader`, hashing it on the way; nothing is stored unless the bytes
    /// match `descriptor`'s digest and size.
    ///
    /// Another thread hashes while this one reads and writes ([`layer::chunks::copy_hashed`]):
    /// both work on the same immutable chunk, so the bytes written are exactly the bytes hashed.
    pub(crate) fn put_stream(
        &self,
        kind: &'static str,
        descriptor: &Descriptor,
        reader: &mut dyn Read,
    ) -> Result<(), BlobError> {
        let digest = &descriptor.digest;
        let write_error = |source| BlobError::Write {
            digest: digest.clone(),
            source,
        };
        let mut file = self.stage_blob(digest)?;
        // Never copy more than one byte past the expected size.
        let (actual, size) =
            layer::chunks::copy_hashed(&mut reader.take(descriptor.size + 1), &mut file)
                .map_err(write_error)?;
        check(kind, descriptor, &actual, size)?;
        file.commit().map_err(write_error)
    }

    /// A staging file in `tmp/` for the blob `digest`. The caller writes it, hashing what it
    /// writes, and commits it (fsync, rename to `blobs/sha256/<hex>`, fsync of the directory)
    /// only when the hash and size it computed match; dropped uncommitted, it is removed.
    pub(crate) fn stage_blob(&self, digest: &Digest) -> Result<AtomicFile, BlobError> {
        AtomicFile::create(&self.tmp, &self.blob_path(digest)).map_err(|source| BlobError::Write {
            digest: digest.clone(),
            source,
        })
    }

    /// Moves a staged file (already hashed to `digest`, fsynced, in `tmp/`) into place.
    pub(crate) fn adopt(&self, staged: &Path, digest: &Digest) -> Result<(), BlobError> {
        let write_error = |source| BlobError::Write {
            digest: digest.clone(),
            source,
        };
        if self.has_blob(digest) {
            return Ok(());
        }
        fs::rename(staged, self.blob_path(digest)).map_err(write_error)?;
        fsutil::sync_dir(&self.blobs).map_err(write_error)
    }

    /// Loads and verifies an image's manifest and config.
    pub fn load_image(&self, descriptor: &Descriptor) -> Result<Image, BlobError> {
        let bytes = self.read_metadata("manifest", descriptor)?;
        let manifest = parse_manifest(descriptor, &bytes)?;
        let config_bytes = self.read_metadata("config", &manifest.config)?;
        let config = parse_config(&manifest.config, &config_bytes)?;
        check_layer_count(&descriptor.digest, &manifest, &config)?;
        Ok(Image {
            descriptor: descriptor.clone(),
            manifest,
            config,
            config_bytes,
        })
    }
}

/// Reads at most `limit` bytes of a file; a longer file is an error.
pub(crate) fn read_capped(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {limit} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

fn open_blob_file(
    path: &Path,
    kind: &'static str,
    descriptor: &Descriptor,
) -> Result<fs::File, BlobError> {
    fs::File::open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            BlobError::Missing {
                kind,
                digest: descriptor.digest.clone(),
            }
        } else {
            BlobError::Read {
                kind,
                digest: descriptor.digest.clone(),
                path: path.to_owned(),
                source,
            }
        }
    })
}

/// Reads a metadata blob from `path` and checks it against `descriptor`.
pub(crate) fn read_verified(
    path: &Path,
    kind: &'static str,
    descriptor: &Descriptor,
) -> Result<Vec<u8>, BlobError> {
    if descriptor.size > MAX_METADATA_BYTES {
        return Err(BlobError::TooLarge {
            kind,
            digest: descriptor.digest.clone(),
            size: descriptor.size,
            limit: MAX_METADATA_BYTES,
        });
    }
    let file = open_blob_file(path, kind, descriptor)?;
    let mut bytes = Vec::new();
    file.take(descriptor.size + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| BlobError::Read {
            kind,
            digest: descriptor.digest.clone(),
            path: path.to_owned(),
            source,
        })?;
    verify(kind, descriptor, &bytes)?;
    Ok(bytes)
}

/// Checks bytes against a descriptor's size and digest.
pub(crate) fn verify(
    kind: &'static str,
    descriptor: &Descriptor,
    bytes: &[u8],
) -> Result<(), BlobError> {
    check(kind, descriptor, &Digest::of(bytes), bytes.len() as u64)
}

/// Checks a computed digest and size against a descriptor.
pub(crate) fn check(
    kind: &'static str,
    descriptor: &Descriptor,
    actual: &Digest,
    size: u64,
) -> Result<(), BlobError> {
    if size != descriptor.size {
        return Err(BlobError::SizeMismatch {
            kind,
            digest: descriptor.digest.clone(),
            expected: descriptor.size,
            actual: size,
        });
    }
    if *actual != descriptor.digest {
        return Err(BlobError::DigestMismatch {
            kind,
            expected: descriptor.digest.clone(),
            actual: actual.clone(),
        });
    }
    Ok(())
}

/// Parses a verified manifest, rejecting media types hardbox does not understand.
pub(crate) fn parse_manifest(descriptor: &Descriptor, bytes: &[u8]) -> Result<Manifest, BlobError> {
    if !spec::is_manifest(&descriptor.media_type) {
        return Err(BlobError::UnknownMediaType {
            kind: "manifest",
            digest: descriptor.digest.clone(),
            media_type: descriptor.media_type.clone(),
        });
    }
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(|source| BlobError::Parse {
        kind: "manifest",
        digest: descriptor.digest.clone(),
        source,
    })?;
    if let Some(media_type) = &manifest.media_type {
        if !spec::is_manifest(media_type) {
            return Err(BlobError::UnknownMediaType {
                kind: "manifest",
                digest: descriptor.digest.clone(),
                media_type: media_type.clone(),
            });
        }
    }
    if !spec::is_config(&manifest.config.media_type) {
        return Err(BlobError::UnknownMediaType {
            kind: "config",
            digest: manifest.config.digest.clone(),
            media_type: manifest.config.media_type.clone(),
        });
    }
    if let Some(layer) = manifest
        .layers
        .iter()
        .find(|l| !spec::is_layer(&l.media_type))
    {
        return Err(BlobError::UnknownMediaType {
            kind: "layer",
            digest: layer.digest.clone(),
            media_type: layer.media_type.clone(),
        });
    }
    Ok(manifest)
}

/// Parses a verified index (or Docker manifest list).
pub(crate) fn parse_index(descriptor: &Descriptor, bytes: &[u8]) -> Result<Index, BlobError> {
    if !spec::is_index(&descriptor.media_type) {
        return Err(BlobError::UnknownMediaType {
            kind: "index",
            digest: descriptor.digest.clone(),
            media_type: descriptor.media_type.clone(),
        });
    }
    serde_json::from_slice(bytes).map_err(|source| BlobError::Parse {
        kind: "index",
        digest: descriptor.digest.clone(),
        source,
    })
}

/// Parses a verified config.
pub(crate) fn parse_config(
    descriptor: &Descriptor,
    bytes: &[u8],
) -> Result<ImageConfig, BlobError> {
    serde_json::from_slice(bytes).map_err(|source| BlobError::Parse {
        kind: "config",
        digest: descriptor.digest.clone(),
        source,
    })
}

pub(crate) fn check_layer_count(
    manifest_digest: &Digest,
    manifest: &Manifest,
    config: &ImageConfig,
) -> Result<(), BlobError> {
    if manifest.layers.len() != config.rootfs.diff_ids.len() {
        return Err(BlobError::LayerCount {
            manifest: manifest_digest.clone(),
            config: manifest.config.digest.clone(),
            layers: manifest.layers.len(),
            diff_ids: config.rootfs.diff_ids.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap values known to be valid")]
mod tests {
    use super::*;

    #[test]
    fn open_creates_an_oci_layout_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        Store::open(&root).unwrap();
        Store::open(&root).unwrap();
        let layout: Layout =
            serde_json::from_slice(&std::fs::read(root.join("oci-layout")).unwrap()).unwrap();
        assert_eq!(layout.image_layout_version, "1.0.0");
        let store = Store::open(&root).unwrap();
        assert!(store.read_index().unwrap().manifests.is_empty());
        assert!(root.join("blobs/sha256").is_dir() && root.join("tmp").is_dir());
    }

    #[test]
    fn put_stream_refuses_bytes_that_do_not_match() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let descriptor = Descriptor::new(spec::MEDIA_TYPE_OCI_LAYER, Digest::of(b"good"), 4);
        let err = store
            .put_stream("layer", &descriptor, &mut &b"evil"[..])
            .unwrap_err();
        assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
        assert!(!store.has_blob(&descriptor.digest));
        let err = store
            .put_stream("layer", &descriptor, &mut &b"good!"[..])
            .unwrap_err();
        assert!(matches!(err, BlobError::SizeMismatch { .. }), "{err}");
        store
            .put_stream("layer", &descriptor, &mut &b"good"[..])
            .unwrap();
        assert_eq!(store.read_metadata("layer", &descriptor).unwrap(), b"good");
        assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }
}
