//! Applies OCI image layers (tar, tar+gzip, tar+zstd) to a directory.
//!
//! This crate exists so that unpacking an image can never write outside its target, whatever
//! the layer contains: `..` and absolute names are refused before any filesystem access, symlinks
//! in the layer (absolute or relative) resolve inside the root as under `chroot`, hardlinks and
//! whiteouts cannot reach out of it, and archive and decompression bombs stop at [`Limits`]
//! before their data is written. It also computes the layer's digest and diff ID while reading,
//! and applies OCI whiteouts either by deleting (a flattened tree) or by keeping them in
//! overlayfs form (one directory per layer).

mod applier;
pub mod capture;
pub mod chunks;
mod error;
mod names;
mod tarstream;
mod tree;

pub use applier::Applier;
pub use capture::{
    upper_changes, write_upper_layer, write_workspace_layer, CaptureError, CaptureOptions, Change,
    ChangeKind, EntryKind, LayerSummary, Snapshot,
};
pub use error::LayerError;
use types::Digest;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression an OCI or Docker layer media type names, `None` if the type is not a
    /// known layer type.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Limits that stop archive and decompression bombs, counted across all layers of one applier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of regular file content.
    pub max_bytes: u64,
    /// Total tar entries.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 64 << 30,
            max_entries: 4_000_000,
        }
    }
}

/// What to do with the owners recorded in the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Set the recorded uid/gid (needs root or CAP_CHOWN).
    Preserve,
    /// Add a base to every uid/gid (root inside maps to `uid_base` on the host); ids at or above
    /// `size` are an error.
    Shift {
        uid_base: u32,
        gid_base: u32,
        size: u32,
    },
    /// Leave files owned by the caller and record the layer's owner in the
    /// `user.hardbox.owner` xattr (`"UID:GID"`) when it is not 0:0.
    Record,
}

/// What to do with character and block device entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Devices {
    /// Create them with mknod (needs root).
    Create,
    /// Skip them, reporting a [`Warning`].
    Skip,
}

/// How whiteout entries are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Delete what they hide from the directory (flattening layers into one tree).
    Apply,
    /// Keep them as overlayfs whiteouts (a 0/0 character device, and the `opaque` xattr on
    /// directories), so the directory can serve as one lower layer of an overlay mount.
    Overlay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub limits: Limits,
    pub ownership: Ownership,
    pub devices: Devices,
    pub whiteouts: Whiteouts,
}

impl Options {
    /// Defaults for the current process: preserve owners and create devices as root, record
    /// owners and skip devices otherwise; whiteouts applied.
    pub fn for_current_user() -> Options {
        let root = rustix::process::geteuid().is_root();
        Options {
            limits: Limits::default(),
            ownership: if root {
                Ownership::Preserve
            } else {
                Ownership::Record
            },
            devices: if root { Devices::Create } else { Devices::Skip },
            whiteouts: Whiteouts::Apply,
        }
    }
}

/// Something skipped or changed while applying a layer, that did not stop it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub layer: Digest,
    pub entry: String,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "layer {}: entry {}: {}",
            self.layer, self.entry, self.message
        )
    }
}

/// What applying one layer did.
#[derive(Debug, Clone)]
pub struct LayerStats {
    /// Digest of the blob exactly as read (compressed), to check against the manifest.
    pub digest: Digest,
    /// Size of the blob exactly as read (compressed), to check against the manifest.
    pub blob_size: u64,
    /// Digest of the uncompressed tar stream, to check against the config's `rootfs.diff_ids`.
    pub diff_id: Digest,
    pub entries: u64,
    pub bytes: u64,
    pub warnings: Vec<Warning>,
}
