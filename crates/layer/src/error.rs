//! The ways applying a layer fails; every message names the layer and, where one is involved,
//! the entry as the layer spells it.

use std::io;

use types::Digest;

/// Why a layer could not be applied. Every variant names the layer, and the entry where one is
/// involved.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("failed to apply layer {layer}: entry {entry:?} escapes the root")]
    EscapesRoot { layer: Digest, entry: String },

    #[error("failed to apply layer {layer}: entry {entry:?} has an absolute path")]
    AbsolutePath { layer: Digest, entry: String },

    #[error("failed to apply layer {layer}: entry {entry:?} contains a NUL byte")]
    NulInName { layer: Digest, entry: String },

    #[error("failed to apply layer {layer}: entry {entry:?} is longer than {limit} bytes")]
    NameTooLong {
        layer: Digest,
        entry: String,
        limit: usize,
    },

    #[error(
        "failed to apply layer {layer}: hardlink {entry:?} points to {target:?} outside the root"
    )]
    HardlinkOutsideRoot {
        layer: Digest,
        entry: String,
        target: String,
    },

    #[error("failed to apply layer {layer}: hardlink {entry:?} points to {target:?}, which does not exist")]
    HardlinkTargetMissing {
        layer: Digest,
        entry: String,
        target: String,
    },

    #[error("failed to apply layer {layer}: whiteout {entry:?} names no file")]
    InvalidWhiteout { layer: Digest, entry: String },

    #[error("failed to apply layer {layer}: symlink loop resolving {entry:?}")]
    SymlinkLoop { layer: Digest, entry: String },

    #[error("failed to apply layer {layer}: parent of entry {entry:?} is not a directory")]
    ParentNotDirectory { layer: Digest, entry: String },

    #[error("failed to apply layer {layer}: entry {entry:?} exceeds the limit of {limit} bytes of file content")]
    TooManyBytes {
        layer: Digest,
        entry: String,
        limit: u64,
    },

    #[error("failed to apply layer {layer}: entry {entry:?} exceeds the limit of {limit} entries")]
    TooManyEntries {
        layer: Digest,
        entry: String,
        limit: u64,
    },

    #[error("failed to apply layer {layer}: entry {entry:?} has {which} {id}, outside the shifted range of {size} ids")]
    IdOutOfRange {
        layer: Digest,
        entry: String,
        which: &'static str,
        id: u64,
        size: u32,
    },

    #[error(
        "failed to apply layer {layer}: entry {entry:?} is a sparse file, which is not supported"
    )]
    SparseFile { layer: Digest, entry: String },

    #[error("failed to apply layer {layer}: corrupt or truncated {compression} stream")]
    CorruptStream {
        layer: Digest,
        compression: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("failed to apply layer {layer}: failed to read the layer blob")]
    ReadBlob {
        layer: Digest,
        #[source]
        source: io::Error,
    },

    #[error("failed to apply layer {layer}: failed to write a copy of the layer blob")]
    CopyBlob {
        layer: Digest,
        #[source]
        source: io::Error,
    },

    #[error("failed to apply layer {layer}: tar stream is truncated after entry {after:?}")]
    TruncatedTar { layer: Digest, after: String },

    #[error("failed to apply layer {layer}: tar header after entry {after:?} has a bad checksum")]
    BadChecksum { layer: Digest, after: String },

    #[error("failed to apply layer {layer}: tar header after entry {after:?} has an invalid {field} field")]
    BadHeaderField {
        layer: Digest,
        after: String,
        field: &'static str,
    },

    #[error(
        "failed to apply layer {layer}: extended tar header after entry {after:?} is malformed"
    )]
    BadPaxHeader { layer: Digest, after: String },

    #[error("failed to apply layer {layer}: extended tar header of {size} bytes after entry {after:?} exceeds the limit of {limit} bytes")]
    ExtensionTooLarge {
        layer: Digest,
        after: String,
        size: u64,
        limit: u64,
    },

    #[error("failed to apply layer {layer}: extended tar headers after entry {after:?} describe no entry")]
    DanglingExtension { layer: Digest, after: String },

    #[error(
        "failed to apply layer {layer}: more than {limit} bytes follow the end of the tar archive"
    )]
    TrailingData { layer: Digest, limit: u64 },

    #[error("failed to apply layer {layer}: failed to {operation} for entry {entry:?}")]
    Io {
        layer: Digest,
        entry: String,
        operation: &'static str,
        #[source]
        source: io::Error,
    },
}
