//! Applies OCI image layers to a directory.
//!
//! (API skeleton: the implementation replaces the bodies; the public names and signatures are the
//! contract the `oci` crate builds on.)

use std::io::Read;
use std::path::Path;

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
    Shift { uid_base: u32, gid_base: u32, size: u32 },
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
        write!(f, "layer {}: entry {}: {}", self.layer, self.entry, self.message)
    }
}

/// What applying one layer did.
#[derive(Debug, Clone)]
pub struct LayerStats {
    /// Digest of the blob exactly as read (compressed), to check against the manifest.
    pub digest: Digest,
    /// Digest of the uncompressed tar stream, to check against the config's `rootfs.diff_ids`.
    pub diff_id: Digest,
    pub entries: u64,
    pub bytes: u64,
    pub warnings: Vec<Warning>,
}

/// Why a layer could not be applied. Every variant names the layer, and the entry where one is
/// involved.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("failed to apply layer {layer}: not implemented")]
    NotImplemented { layer: Digest },
}

/// Applies layers, bottom first, to one root directory.
#[derive(Debug)]
pub struct Applier {
    _options: Options,
}

impl Applier {
    /// Opens `root` (which must exist and be a directory) for applying layers.
    pub fn new(_root: &Path, options: Options) -> std::io::Result<Applier> {
        Ok(Applier { _options: options })
    }

    /// Applies one layer read from `blob`. `layer` is used to name the layer in errors and
    /// warnings; the whole of `blob` is read (so [`LayerStats::digest`] covers all of it).
    pub fn apply(
        &mut self,
        _blob: &mut dyn Read,
        layer: &Digest,
        _compression: Compression,
    ) -> Result<LayerStats, LayerError> {
        Err(LayerError::NotImplemented {
            layer: layer.clone(),
        })
    }

    /// Finishes: sets directory times that adding entries disturbed.
    pub fn finish(self) -> Result<(), LayerError> {
        Ok(())
    }
}
