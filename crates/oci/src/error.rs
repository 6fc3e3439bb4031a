//! Errors shared by several store operations: opening the store, reading a verified blob and
//! resolving a reference. Each operation has its own enum (in its module) that wraps these.

use std::io;
use std::path::PathBuf;

use types::Digest;

/// Why the store could not be opened, locked or its `index.json` read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to open the image store at {root}")]
    Open { root: PathBuf, source: io::Error },
    #[error("failed to lock the image store at {path}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("failed to read {path}")]
    ReadIndex { path: PathBuf, source: io::Error },
    #[error("{path} is not a valid OCI index")]
    ParseIndex {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("failed to write {path}")]
    WriteIndex { path: PathBuf, source: io::Error },
}

/// Why a blob could not be read and trusted. Every variant names the blob.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("{kind} blob {digest} is missing")]
    Missing { kind: &'static str, digest: Digest },
    #[error("{kind} blob {digest} is {size} bytes, more than the {limit} bytes allowed")]
    TooLarge {
        kind: &'static str,
        digest: Digest,
        size: u64,
        limit: u64,
    },
    #[error("{kind} blob {digest} is {actual} bytes but its descriptor says {expected}")]
    SizeMismatch {
        kind: &'static str,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("{kind} blob {expected} has content with digest {actual}")]
    DigestMismatch {
        kind: &'static str,
        expected: Digest,
        actual: Digest,
    },
    #[error("{kind} {digest} has unsupported media type {media_type:?}")]
    UnknownMediaType {
        kind: &'static str,
        digest: Digest,
        media_type: String,
    },
    #[error("{kind} {digest} is not valid JSON")]
    Parse {
        kind: &'static str,
        digest: Digest,
        source: serde_json::Error,
    },
    #[error("manifest {manifest} lists {layers} layers but its config {config} lists {diff_ids} diff_ids")]
    LayerCount {
        manifest: Digest,
        config: Digest,
        layers: usize,
        diff_ids: usize,
    },
    #[error("failed to read {kind} blob {digest} at {path}")]
    Read {
        kind: &'static str,
        digest: Digest,
        path: PathBuf,
        source: io::Error,
    },
    #[error("failed to write blob {digest}")]
    Write { digest: Digest, source: io::Error },
}

/// Why a reference does not name exactly one image.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no image named {reference:?} in the store")]
    NotFound { reference: String },
    #[error("{reference:?} matches {count} images; give more digest characters")]
    Ambiguous { reference: String, count: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a string is not an image name hardbox can store.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("image name is empty")]
    Empty,
    #[error("image name {0:?} contains whitespace or control characters")]
    BadCharacter(String),
    #[error("image name {0:?} looks like a digest; digests are not names")]
    LooksLikeDigest(String),
}

/// Whether `err` (or anything in its chain) is an unknown reference, for callers that want to
/// suggest listing the images. Looks through the transparent wrappers of every store operation.
pub fn is_unknown_reference(err: &(dyn std::error::Error + 'static)) -> bool {
    use crate::images::{ReadImageError, RemoveError, TagError};
    use crate::{ExportError, UnpackError};
    let read =
        |e: &ReadImageError| matches!(e, ReadImageError::Resolve(ResolveError::NotFound { .. }));
    let mut current = Some(err);
    while let Some(e) = current {
        let found = match () {
            _ if matches!(e.downcast_ref(), Some(ResolveError::NotFound { .. })) => true,
            _ if e.downcast_ref::<ReadImageError>().is_some_and(read) => true,
            _ if matches!(e.downcast_ref(), Some(ExportError::Read(r)) if read(r)) => true,
            _ if matches!(e.downcast_ref(), Some(UnpackError::Read(r)) if read(r)) => true,
            _ if matches!(
                e.downcast_ref(),
                Some(TagError::Resolve(ResolveError::NotFound { .. }))
            ) =>
            {
                true
            }
            _ if matches!(
                e.downcast_ref(),
                Some(RemoveError::Resolve(ResolveError::NotFound { .. }))
            ) =>
            {
                true
            }
            _ => false,
        };
        if found {
            return true;
        }
        current = e.source();
    }
    false
}
