//! Adding new content to the store: blobs, images built elsewhere (the image builder), and OCI 1.1
//! referrers (SBOMs, signatures, provenance attached to an image).
//!
//! Everything goes through an [`ImageWriter`], which holds the store lock shared for its whole
//! life, so `gc` (exclusive) cannot remove a blob between the moment it is written and the moment
//! a manifest in `index.json` refers to it. Blobs are written to `tmp/`, hashed while written,
//! fsynced and renamed to their digest; a manifest is added to `index.json` only after every
//! blob it names is present with the size its descriptor says and its config parses.
//!
//! Referrers are artifact manifests (OCI 1.1: `artifactType`, the empty config, a `subject`).
//! They are listed in `index.json` without a name and with their `artifactType`, which is how the
//! rest of the store tells them from images: listings and reference resolution skip them, `gc`
//! keeps one while its subject is listed and drops it (and then its blobs) once the subject is
//! gone, `fsck` checks them, and `image export` writes them along with their subject.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use fs_err as fs;
use fsutil::{AtomicFile, Lock, LockMode};
use serde::Serialize;
use types::Digest;

use crate::error::{BlobError, NameError, StoreError};
use crate::images::{add_unnamed, set_name};
use crate::names::normalize_name;
use crate::spec::{
    Descriptor, Index, Manifest, ANNOTATION_REF_NAME, EMPTY_JSON, MEDIA_TYPE_EMPTY,
    MEDIA_TYPE_OCI_MANIFEST,
};
use crate::store::{check_layer_count, parse_config, parse_manifest, Store};

/// Why new content could not be added. `index.json` is unchanged whenever one is returned.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("failed to read {path}")]
    Source { path: PathBuf, source: io::Error },
    #[error("failed to write a {kind} blob to the store")]
    Write {
        kind: &'static str,
        source: io::Error,
    },
    #[error("cannot add image: {0}")]
    Blob(#[from] BlobError),
    #[error("cannot tag the new image as {name:?}")]
    Name { name: String, source: NameError },
    #[error("cannot add image: manifest media type {0:?} is not an OCI image manifest")]
    ManifestMediaType(String),
    #[error("referrer subject {digest} is not in the store")]
    UnknownSubject { digest: Digest },
    #[error("referrer annotation {key:?} is reserved for image names")]
    ReservedAnnotation { key: String },
    #[error("failed to serialise the manifest")]
    Serialize(#[source] serde_json::Error),
}

/// A referrer as [`Store::referrers`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Referrer {
    /// The referrer's manifest (with its `artifactType` and annotations).
    pub descriptor: Descriptor,
    pub artifact_type: String,
    /// The manifest it refers to.
    pub subject: Digest,
    /// Its blobs (the artifact's content: an SBOM document, a DSSE envelope, ...).
    pub blobs: Vec<Descriptor>,
    pub annotations: BTreeMap<String, String>,
}

/// Adds content to a store while holding its lock shared. Create one with [`Store::writer`].
#[derive(Debug)]
pub struct ImageWriter<'s> {
    store: &'s Store,
    _lock: Lock,
}

impl Store {
    /// Starts adding content; `gc` and `fsck` wait until the writer is dropped.
    pub fn writer(&self) -> Result<ImageWriter<'_>, StoreError> {
        Ok(ImageWriter {
            store: self,
            _lock: self.lock_store(LockMode::Shared)?,
        })
    }

    /// The referrers of the manifest `subject`, in `index.json` order. A referrer whose manifest
    /// cannot be read is skipped (`fsck` reports it).
    pub fn referrers(&self, subject: &Digest) -> Result<Vec<Referrer>, StoreError> {
        let _lock = self.lock_store(LockMode::Shared)?;
        let index = self.read_index()?;
        Ok(referrers_in(self, &index)
            .into_iter()
            .filter(|r| r.subject == *subject)
            .collect())
    }
}

/// Every readable referrer listed in `index`, deduplicated by digest.
pub(crate) fn referrers_in(store: &Store, index: &Index) -> Vec<Referrer> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for descriptor in index.manifests.iter().filter(|d| d.is_referrer()) {
        if !seen.insert(descriptor.digest.clone()) {
            continue;
        }
        let Ok(manifest) = store
            .read_metadata("manifest", descriptor)
            .and_then(|bytes| parse_artifact(descriptor, &bytes))
        else {
            continue;
        };
        let Some(subject) = manifest.subject else {
            continue;
        };
        out.push(Referrer {
            descriptor: descriptor.clone(),
            artifact_type: manifest
                .artifact_type
                .or_else(|| descriptor.artifact_type.clone())
                .unwrap_or_default(),
            subject: subject.digest,
            blobs: manifest.layers,
            annotations: manifest.annotations,
        });
    }
    out
}

/// Parses a verified artifact manifest: an OCI manifest with a subject. Its config and layers
/// may have any media type.
pub(crate) fn parse_artifact(descriptor: &Descriptor, bytes: &[u8]) -> Result<Manifest, BlobError> {
    if descriptor.media_type != MEDIA_TYPE_OCI_MANIFEST {
        return Err(BlobError::UnknownMediaType {
            kind: "referrer manifest",
            digest: descriptor.digest.clone(),
            media_type: descriptor.media_type.clone(),
        });
    }
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(|source| BlobError::Parse {
        kind: "referrer manifest",
        digest: descriptor.digest.clone(),
        source,
    })?;
    if manifest.subject.is_none() {
        return Err(BlobError::UnknownMediaType {
            kind: "referrer manifest without a subject",
            digest: descriptor.digest.clone(),
            media_type: descriptor.media_type.clone(),
        });
    }
    Ok(manifest)
}

/// Removes from `index` every referrer whose subject is no longer listed (repeatedly, so a
/// signature of a removed SBOM goes too). Referrers whose manifest cannot be read are kept.
/// Returns the removed entries.
pub(crate) fn prune_referrers(store: &Store, index: &mut Index) -> Vec<Descriptor> {
    let subjects: BTreeMap<Digest, Digest> = referrers_in(store, index)
        .into_iter()
        .map(|r| (r.descriptor.digest, r.subject))
        .collect();
    let mut removed = Vec::new();
    loop {
        let present: BTreeSet<Digest> = index.manifests.iter().map(|d| d.digest.clone()).collect();
        let before = index.manifests.len();
        index.manifests.retain(|d| {
            let dangling = d.is_referrer()
                && subjects
                    .get(&d.digest)
                    .is_some_and(|subject| !present.contains(subject));
            if dangling {
                removed.push(d.clone());
            }
            !dangling
        });
        if index.manifests.len() == before {
            return removed;
        }
    }
}

impl ImageWriter<'_> {
    pub fn store(&self) -> &Store {
        self.store
    }

    /// Stores `bytes` as a blob and returns its descriptor.
    pub fn put_blob_bytes(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor, WriteError> {
        let descriptor = Descriptor::new(media_type, Digest::of(bytes), bytes.len() as u64);
        self.store.put_bytes(&descriptor, bytes)?;
        Ok(descriptor)
    }

    /// Copies the file at `path` into the store as a blob (hashed while copied).
    pub fn put_blob_file(&self, media_type: &str, path: &Path) -> Result<Descriptor, WriteError> {
        let mut file = fs::File::open(path).map_err(|source| WriteError::Source {
            path: path.to_owned(),
            source,
        })?;
        self.put_blob_reader(media_type, &mut file)
    }

    /// Stores everything `reader` yields as a blob, hashing it on the way; the blob is named by
    /// the digest computed, so nothing needs to be known in advance.
    pub fn put_blob_reader(
        &self,
        media_type: &str,
        reader: &mut dyn Read,
    ) -> Result<Descriptor, WriteError> {
        let write_error = |source| WriteError::Write {
            kind: "content",
            source,
        };
        let mut file =
            AtomicFile::create(self.store.tmp_dir(), self.store.tmp_dir()).map_err(write_error)?;
        let (digest, size) = layer::chunks::copy_hashed(reader, &mut file).map_err(write_error)?;
        if self.store.has_blob(&digest) {
            // Dropping the uncommitted file removes it.
            return Ok(Descriptor::new(media_type, digest, size));
        }
        file.set_target(self.store.blob_path(&digest));
        file.commit().map_err(write_error)?;
        Ok(Descriptor::new(media_type, digest, size))
    }

    /// Checks that a blob is present with the size `descriptor` says.
    fn check_present(&self, kind: &'static str, descriptor: &Descriptor) -> Result<(), BlobError> {
        let path = self.store.blob_path(&descriptor.digest);
        match fs::metadata(&path) {
            Ok(meta) if meta.len() == descriptor.size => Ok(()),
            Ok(meta) => Err(BlobError::SizeMismatch {
                kind,
                digest: descriptor.digest.clone(),
                expected: descriptor.size,
                actual: meta.len(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::Missing {
                kind,
                digest: descriptor.digest.clone(),
            }),
            Err(source) => Err(BlobError::Read {
                kind,
                digest: descriptor.digest.clone(),
                path,
                source,
            }),
        }
    }

    /// Adds an image whose config and layers are already stored: writes the manifest and lists
    /// it in `index.json` under each of `tags` (normalised, `:latest` added where missing; a tag
    /// another image had moves to this one), or without a name when `tags` is empty. The whole
    /// `index.json` change is one atomic replacement.
    pub fn put_image(
        &self,
        manifest: &Manifest,
        tags: &[String],
    ) -> Result<Descriptor, WriteError> {
        let names = tags
            .iter()
            .map(|tag| {
                normalize_name(tag).map_err(|source| WriteError::Name {
                    name: tag.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let media_type = manifest
            .media_type
            .clone()
            .unwrap_or_else(|| MEDIA_TYPE_OCI_MANIFEST.to_owned());
        if media_type != MEDIA_TYPE_OCI_MANIFEST {
            return Err(WriteError::ManifestMediaType(media_type));
        }
        let bytes = serde_json::to_vec(manifest).map_err(WriteError::Serialize)?;
        let mut descriptor = Descriptor::new(&media_type, Digest::of(&bytes), bytes.len() as u64);
        // The same checks a stored image passes when it is loaded.
        let parsed = parse_manifest(&descriptor, &bytes)?;
        let config_bytes = self.store.read_metadata("config", &parsed.config)?;
        let config = parse_config(&parsed.config, &config_bytes)?;
        check_layer_count(&descriptor.digest, &parsed, &config)?;
        for layer in &parsed.layers {
            self.check_present("layer", layer)?;
        }
        descriptor.platform = Some(config.platform());
        self.store.put_bytes(&descriptor, &bytes)?;
        self.store.update_index(|index| {
            if names.is_empty() {
                add_unnamed(index, &descriptor);
            }
            for name in &names {
                set_name(index, &descriptor, name);
            }
            (true, ())
        })?;
        Ok(descriptor)
    }

    /// Attaches an artifact to the manifest `subject` (an image or another referrer listed in
    /// `index.json`): writes an OCI 1.1 artifact manifest (`artifactType`, the empty config,
    /// `blobs` as its layers, `subject`, `annotations`) and lists it in `index.json`.
    pub fn put_referrer(
        &self,
        subject: &Descriptor,
        artifact_type: &str,
        blobs: &[Descriptor],
        annotations: &BTreeMap<String, String>,
    ) -> Result<Descriptor, WriteError> {
        if annotations.contains_key(ANNOTATION_REF_NAME) {
            return Err(WriteError::ReservedAnnotation {
                key: ANNOTATION_REF_NAME.to_owned(),
            });
        }
        for blob in blobs {
            self.check_present("referrer", blob)?;
        }
        let empty = self.put_blob_bytes(MEDIA_TYPE_EMPTY, EMPTY_JSON)?;
        let mut subject_descriptor =
            Descriptor::new(&subject.media_type, subject.digest.clone(), subject.size);
        subject_descriptor.artifact_type = None;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_owned()),
            artifact_type: Some(artifact_type.to_owned()),
            config: empty,
            layers: blobs.to_vec(),
            subject: Some(subject_descriptor),
            annotations: annotations.clone(),
        };
        let bytes = serde_json::to_vec(&manifest).map_err(WriteError::Serialize)?;
        let mut descriptor = Descriptor::new(
            MEDIA_TYPE_OCI_MANIFEST,
            Digest::of(&bytes),
            bytes.len() as u64,
        );
        descriptor.artifact_type = Some(artifact_type.to_owned());
        descriptor.annotations = annotations.clone();
        self.store.put_bytes(&descriptor, &bytes)?;
        self.store.update_index(|index| {
            if !index.manifests.iter().any(|d| d.digest == subject.digest) {
                return (
                    false,
                    Err(WriteError::UnknownSubject {
                        digest: subject.digest.clone(),
                    }),
                );
            }
            if !index
                .manifests
                .iter()
                .any(|d| d.digest == descriptor.digest)
            {
                index.manifests.push(descriptor.clone());
            }
            (true, Ok(()))
        })??;
        Ok(descriptor)
    }
}
