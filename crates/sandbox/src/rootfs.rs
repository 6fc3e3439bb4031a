//! An image's root filesystem for a sandbox: unpacked once into a cache under the store, then
//! shared read-only by every sandbox of that image, each writing to its own scratch directory.
//!
//! Why it exists: unpacking an image is slow and the result never changes, so `hardbox run
//! IMAGE` unpacks it once per (manifest digest, id mapping) into
//! `<store>/rootfs/<manifest-hex>-<mapping>` and mounts it as an overlay's lower layer.
//!
//! What it guarantees:
//!
//! - a cache directory is complete or absent: the image is unpacked into a staging directory
//!   and renamed into place without replacing anything, so concurrent runs are safe (the first
//!   rename wins, the others discard their copy) and an interrupted unpack leaves only a
//!   `.staging-*` directory, never a half cache;
//! - the cache lives outside `blobs/`, so the store's fsck does not see it;
//! - files are owned by the sandbox's ids as the host sees them: shifted into the root-mode
//!   range as root, the caller's own (root inside) rootless;
//! - a [`Scratch`] directory is removed when it is dropped.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fs_err as fs;
use oci::spec::{Descriptor, RunConfig};
use oci::Store;

use crate::plan::{ROOT_MODE_ID_BASE, ROOT_MODE_ID_COUNT};

/// The directory under the store root holding unpacked image root filesystems.
pub const CACHE_DIRECTORY: &str = "rootfs";

/// Directories the launcher mounts on, created in the cache when the image lacks them.
const MOUNT_POINTS: [&str; 4] = ["proc", "dev", "sys", "tmp"];

/// How the cache's files are owned on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOwnership {
    /// hardbox runs as root: image id N is owned by host id `ROOT_MODE_ID_BASE + N`.
    Shifted,
    /// Rootless: every file is the caller's (root inside the sandbox); owners recorded in
    /// `user.hardbox.owner` xattrs.
    Caller { uid: u32 },
}

impl CacheOwnership {
    fn key(self) -> String {
        match self {
            CacheOwnership::Shifted => ROOT_MODE_ID_BASE.to_string(),
            CacheOwnership::Caller { uid } => format!("user{uid}"),
        }
    }

    fn options(self) -> layer::Options {
        layer::Options {
            limits: layer::Limits::default(),
            ownership: match self {
                CacheOwnership::Shifted => layer::Ownership::Shift {
                    uid_base: ROOT_MODE_ID_BASE,
                    gid_base: ROOT_MODE_ID_BASE,
                    size: ROOT_MODE_ID_COUNT,
                },
                CacheOwnership::Caller { .. } => layer::Ownership::Record,
            },
            // Device files would be useless: the rootfs is mounted nodev.
            devices: layer::Devices::Skip,
            whiteouts: layer::Whiteouts::Apply,
        }
    }

    /// The host ids that are root inside the sandbox, if they must be set explicitly.
    fn root_owner(self) -> Option<(u32, u32)> {
        match self {
            CacheOwnership::Shifted => Some((ROOT_MODE_ID_BASE, ROOT_MODE_ID_BASE)),
            CacheOwnership::Caller { .. } => None,
        }
    }
}

/// An image ready to run: its cached root filesystem and how it says to run.
#[derive(Debug)]
pub struct ImageRootfs {
    pub manifest: Descriptor,
    /// The unpacked root filesystem (never written by sandboxes).
    pub directory: PathBuf,
    /// The image config's run settings (Env, Entrypoint, Cmd, WorkingDir, User).
    pub config: RunConfig,
}

/// Why an image's root filesystem could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Resolve(#[from] oci::ResolveError),
    #[error("failed to read image {digest}")]
    Read {
        digest: types::Digest,
        source: oci::BlobError,
    },
    #[error("failed to unpack image {digest} into the rootfs cache")]
    Unpack {
        digest: types::Digest,
        source: Box<oci::UnpackError>,
    },
    #[error("failed to prepare {path}")]
    Write { path: PathBuf, source: io::Error },
}

fn write_error(path: &Path) -> impl FnOnce(io::Error) -> RootfsError {
    let path = path.to_owned();
    move |source| RootfsError::Write { path, source }
}

/// Removes a staging directory unless its content was renamed into place.
struct StagingGuard(PathBuf, #[allow(dead_code)] Option<fsutil::Lock>);

impl Drop for StagingGuard {
    fn drop(&mut self) {
        let _ = remove_tree(&self.0);
    }
}

/// In every `.sandbox-*` and `.staging-*` directory: held by its owner while it lives, so
/// [`sweep`] can tell a live directory from a killed command's leftover.
const OWNER_LOCK: &str = "lock";
/// In the cache directory: held shared while a directory is created and its owner lock taken,
/// exclusive while [`sweep`] runs, so a sweep never sees a directory before its owner holds it.
const CREATION_LOCK: &str = ".lock";

/// Creates `path` (a directory) and takes its owner lock, under the cache's creation lock.
fn create_owned(cache: &Path, path: &Path) -> Result<fsutil::Lock, RootfsError> {
    let _creating = fsutil::Lock::acquire(&cache.join(CREATION_LOCK), fsutil::LockMode::Shared)
        .map_err(write_error(cache))?;
    fs::create_dir(path).map_err(write_error(path))?;
    fsutil::Lock::acquire(&path.join(OWNER_LOCK), fsutil::LockMode::Exclusive)
        .map_err(write_error(path))
}

/// Resolves `reference` in `store` and returns its cached root filesystem, unpacking it first
/// if no sandbox has yet.
///
/// # Errors
///
/// [`RootfsError`] when the image is unknown, damaged, or cannot be unpacked.
pub fn prepare(
    store: &Store,
    reference: &str,
    ownership: CacheOwnership,
) -> Result<ImageRootfs, RootfsError> {
    let manifest = store.resolve(reference)?;
    let image = store
        .load_image(&manifest)
        .map_err(|source| RootfsError::Read {
            digest: manifest.digest.clone(),
            source,
        })?;
    let cache = store.root().join(CACHE_DIRECTORY);
    let directory = cache.join(format!("{}-{}", manifest.digest.hex(), ownership.key()));
    if !directory.is_dir() {
        unpack(store, &manifest, &cache, &directory, ownership)?;
    }
    Ok(ImageRootfs {
        manifest,
        directory,
        config: image.config.config.unwrap_or_default(),
    })
}

fn unpack(
    store: &Store,
    manifest: &Descriptor,
    cache: &Path,
    directory: &Path,
    ownership: CacheOwnership,
) -> Result<(), RootfsError> {
    fs::create_dir_all(cache).map_err(write_error(cache))?;
    let mut staging = StagingGuard(cache.join(fsutil::unique_name(".staging-")), None);
    staging.1 = Some(create_owned(cache, &staging.0)?);
    let rootfs = staging.0.join("rootfs");
    // By digest: a tag moved meanwhile must not put another image under this key.
    store
        .unpack(&manifest.digest.to_string(), &rootfs, ownership.options())
        .map_err(|source| RootfsError::Unpack {
            digest: manifest.digest.clone(),
            source: Box::new(source),
        })?;
    let root_metadata = fs::symlink_metadata(&rootfs).map_err(write_error(&rootfs))?;
    if let Some((uid, gid)) = ownership.root_owner() {
        // A layer without a `./` entry leaves the root owned by the host's root, which the
        // sandbox does not map.
        if !(uid..uid + ROOT_MODE_ID_COUNT).contains(&root_metadata.uid()) {
            std::os::unix::fs::lchown(&rootfs, Some(uid), Some(gid))
                .map_err(write_error(&rootfs))?;
        }
    }
    for name in MOUNT_POINTS {
        let path = rootfs.join(name);
        if fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        fs::create_dir(&path).map_err(write_error(&path))?;
        let mode = if name == "tmp" { 0o1777 } else { 0o755 };
        fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(write_error(&path))?;
        if let Some((uid, gid)) = ownership.root_owner() {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(write_error(&path))?;
        }
    }
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        &rootfs,
        rustix::fs::CWD,
        directory,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        // Another sandbox cached the same image first: use its copy.
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(errno) => return Err(write_error(directory)(errno.into())),
    }
    fsutil::sync_dir(cache).map_err(write_error(cache))?;
    Ok(())
}

/// A sandbox's own overlay upper and work directories, next to the cache (overlayfs needs
/// them on one filesystem), removed on drop.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Held while the sandbox lives (its init inherits it too), so `hardbox system gc` leaves
    /// the directory alone.
    _owner: fsutil::Lock,
}

impl Scratch {
    /// Creates a scratch directory for a sandbox of `image`. The upper directory gets the
    /// owner and mode of the image's root, which it stands for in the overlay.
    ///
    /// # Errors
    ///
    /// [`RootfsError::Write`] naming the directory that could not be created.
    pub fn create(image: &ImageRootfs) -> Result<Scratch, RootfsError> {
        let parent = image.directory.parent().unwrap_or(Path::new("/"));
        let path = parent.join(fsutil::unique_name(".sandbox-"));
        let owner = create_owned(parent, &path)?;
        let scratch = Scratch {
            upper: path.join("upper"),
            work: path.join("work"),
            path,
            _owner: owner,
        };
        let root = fs::metadata(&image.directory).map_err(write_error(&image.directory))?;
        for directory in [&scratch.upper, &scratch.work] {
            fs::create_dir(directory).map_err(write_error(directory))?;
        }
        fs::set_permissions(
            &scratch.upper,
            std::fs::Permissions::from_mode(root.mode() & 0o7777),
        )
        .map_err(write_error(&scratch.upper))?;
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::lchown(&scratch.upper, Some(root.uid()), Some(root.gid()))
                .map_err(write_error(&scratch.upper))?;
        }
        Ok(scratch)
    }

    /// The scratch directory (holding `upper` and `work`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = remove_tree(&self.path);
    }
}

/// What [`sweep`] removed from the rootfs cache.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Scratch and staging directories of sandboxes and unpacks whose command was killed.
    pub abandoned: Vec<PathBuf>,
    /// Cached root filesystems of images no longer in the store.
    pub unused_images: Vec<PathBuf>,
}

/// Removes what killed commands left in the store's rootfs cache (directories whose owner lock
/// is free) and, when no sandbox is running from the cache, the cached root filesystems of
/// images the store no longer holds.
///
/// # Errors
///
/// [`RootfsError::Write`] naming the directory that could not be read, locked or removed.
pub fn sweep(store: &Store) -> Result<SweepReport, RootfsError> {
    let cache = store.root().join(CACHE_DIRECTORY);
    let mut report = SweepReport::default();
    if !cache.is_dir() {
        return Ok(report);
    }
    let _sweeping = fsutil::Lock::acquire(&cache.join(CREATION_LOCK), fsutil::LockMode::Exclusive)
        .map_err(write_error(&cache))?;
    let mut live = 0;
    let mut cached = Vec::new();
    for entry in fs::read_dir(&cache).map_err(write_error(&cache))? {
        let entry = entry.map_err(write_error(&cache))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".sandbox-") || name.starts_with(".staging-") {
            // Under the creation lock every such directory has its owner lock file.
            match fsutil::Lock::try_acquire(&path.join(OWNER_LOCK), fsutil::LockMode::Exclusive) {
                Ok(Some(_free)) => {
                    remove_tree(&path).map_err(write_error(&path))?;
                    report.abandoned.push(path);
                }
                Ok(None) => live += 1,
                Err(error) => return Err(write_error(&path)(error)),
            }
        } else if !name.starts_with('.') && entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            cached.push((name.into_owned(), path));
        }
    }
    if live == 0 {
        let images: Vec<String> = store
            .images()
            .map_err(|error| RootfsError::Write {
                path: store.root().to_owned(),
                source: io::Error::other(error.to_string()),
            })?
            .iter()
            .map(|image| image.digest.hex().to_owned())
            .collect();
        for (name, path) in cached {
            let digest = name.split_once('-').map_or(name.as_str(), |(hex, _)| hex);
            if !images.iter().any(|hex| hex == digest) {
                remove_tree(&path).map_err(write_error(&path))?;
                report.unused_images.push(path);
            }
        }
    }
    Ok(report)
}

/// Removes `path` and everything under it, making directories the caller owns searchable
/// first (overlayfs leaves a mode 000 directory in its work directory).
fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Ok(()) => Ok(()),
        Err(_) => {
            open_up(path);
            std::fs::remove_dir_all(path)
        }
    }
}

fn open_up(path: &Path) {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !metadata.is_dir() {
        return;
    }
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            open_up(&entry.path());
        }
    }
}
