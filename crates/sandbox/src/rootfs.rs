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
//! - a sandbox writes over its image into a [`Scratch`]: either a directory in the store
//!   ([`Scratch::create`], kept on disk while it lives and removed when it is dropped), or, for a
//!   throw-away sandbox as root, a detached tmpfs ([`Scratch::in_memory`]) that no path on the
//!   host reaches, whose writes are charged to the writer's memory cgroup, and which the kernel
//!   frees with its last reference: nothing is created or removed on the store's disk.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
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
/// In the cache directory: held shared by every sandbox with an in-memory scratch (it has no
/// directory with an owner lock), so [`sweep`] knows a cached root filesystem may be in use.
const IN_USE_LOCK: &str = ".in-use";

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

/// A sandbox's own overlay upper and work directories (overlayfs needs them on one
/// filesystem), gone when it is dropped.
#[derive(Debug)]
pub struct Scratch {
    /// Where the sandbox's writes land. For [`Scratch::in_memory`], a `/proc/self/fd/...` path:
    /// valid in this process, while the scratch lives.
    pub upper: PathBuf,
    /// Overlayfs's work directory, on the same filesystem as `upper`.
    pub work: PathBuf,
    storage: Storage,
}

/// What holds a scratch's directories.
#[derive(Debug)]
enum Storage {
    /// A directory next to the cache, removed on drop.
    Directory {
        path: PathBuf,
        /// Held while the sandbox lives (its init inherits it too), so `hardbox system gc`
        /// leaves the directory alone.
        _owner: fsutil::Lock,
    },
    /// A detached tmpfs; the kernel frees it with the last reference (this descriptor, the
    /// overlay using it).
    Memory {
        _filesystem: OwnedFd,
        /// The cache's in-use lock, held shared while the sandbox lives (its init inherits it
        /// too), so `hardbox system gc` leaves the cached root filesystems alone.
        _in_use: fsutil::Lock,
    },
}

impl Scratch {
    /// Creates a scratch directory in the store for a sandbox of `image`: on disk, for
    /// sandboxes whose writes must outlive a process or exceed memory. The upper directory
    /// gets the owner and mode of the image's root, which it stands for in the overlay.
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
            storage: Storage::Directory {
                path: path.clone(),
                _owner: owner,
            },
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

    /// Creates a scratch in memory for a throw-away sandbox of `image`: a tmpfs of
    /// `size_bytes` (the sandbox's memory limit; `None`: the tmpfs default, half of the host's
    /// memory) mounted nowhere, holding `upper` (owner and mode of the image's root) and `work`. Writes are
    /// charged to the memory cgroup of the process writing, so they count against the
    /// sandbox's memory limit. Root only: the overlay is mounted by this process, which names
    /// the directories through `/proc/self/fd`; layers on detached mounts need Linux 6.15
    /// (see [`in_memory_supported`]).
    ///
    /// # Errors
    ///
    /// [`RootfsError::Write`] naming the image directory (reading its root) or the scratch
    /// (creating the tmpfs or its directories).
    pub fn in_memory(image: &ImageRootfs, size_bytes: Option<u64>) -> Result<Scratch, RootfsError> {
        use rustix::fs::{AtFlags, Mode};
        use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};

        let root = fs::metadata(&image.directory).map_err(write_error(&image.directory))?;
        let cache = image.directory.parent().unwrap_or(Path::new("/"));
        let in_use = {
            let _creating =
                fsutil::Lock::acquire(&cache.join(CREATION_LOCK), fsutil::LockMode::Shared)
                    .map_err(write_error(cache))?;
            fsutil::Lock::acquire(&cache.join(IN_USE_LOCK), fsutil::LockMode::Shared)
                .map_err(write_error(cache))?
        };
        let name = Path::new("tmpfs (in-memory scratch)");
        let failed = |errno: rustix::io::Errno| write_error(name)(errno.into());
        let context =
            rustix::mount::fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(failed)?;
        rustix::mount::fsconfig_set_string(&context, "mode", "0700").map_err(failed)?;
        if let Some(size) = size_bytes {
            rustix::mount::fsconfig_set_string(&context, "size", size.to_string())
                .map_err(failed)?;
        }
        rustix::mount::fsconfig_create(&context).map_err(failed)?;
        let filesystem = rustix::mount::fsmount(
            &context,
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
        )
        .map_err(failed)?;
        drop(context);
        let base = PathBuf::from(format!("/proc/self/fd/{}", filesystem.as_raw_fd()));
        let (upper, work) = (base.join("upper"), base.join("work"));
        let mode = Mode::from_raw_mode(root.mode() & 0o7777);
        let upper_failed = |errno: rustix::io::Errno| write_error(&upper)(errno.into());
        rustix::fs::mkdirat(&filesystem, "upper", Mode::RWXU).map_err(upper_failed)?;
        // mkdirat applies the umask; the mode is set afterwards, as `create` does.
        rustix::fs::chmodat(&filesystem, "upper", mode, AtFlags::empty()).map_err(upper_failed)?;
        rustix::fs::chownat(
            &filesystem,
            "upper",
            Some(rustix::fs::Uid::from_raw(root.uid())),
            Some(rustix::fs::Gid::from_raw(root.gid())),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(upper_failed)?;
        rustix::fs::mkdirat(&filesystem, "work", Mode::RWXU)
            .map_err(|errno| write_error(&work)(errno.into()))?;
        let scratch = Scratch {
            upper,
            work,
            storage: Storage::Memory {
                _filesystem: filesystem,
                _in_use: in_use,
            },
        };
        Ok(scratch)
    }

    /// The scratch directory (holding `upper` and `work`) in the store; `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        match &self.storage {
            Storage::Directory { path, .. } => Some(path),
            Storage::Memory { .. } => None,
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Storage::Directory { path, .. } = &self.storage {
            let _ = remove_tree(path);
        }
    }
}

/// Whether [`Scratch::in_memory`] can serve as an overlay's upper layer here: overlayfs takes
/// layers on detached mounts since Linux 6.15 ("fs: allow detached mounts in
/// clone_private_mount()"); older kernels refuse them with `EINVAL`.
pub fn in_memory_supported() -> bool {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let major = numbers.next().unwrap_or(0);
    let minor = numbers.next().unwrap_or(0);
    (major, minor) >= (6, 15)
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
/// is free) and, when no sandbox is running from the cache (no live scratch directory, no
/// holder of the in-use lock), the cached root filesystems of images the store no longer holds.
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
        match fsutil::Lock::try_acquire(&cache.join(IN_USE_LOCK), fsutil::LockMode::Exclusive) {
            Ok(Some(_free)) => {}
            Ok(None) => live += 1,
            Err(error) => return Err(write_error(&cache)(error)),
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use rustix::fs::{Mode, OFlags};

    use super::*;

    /// A directory standing for an image's unpacked root, owned by `uid` with `mode`.
    fn image(uid: u32, mode: u32) -> ImageRootfs {
        image_in(&std::env::temp_dir(), uid, mode)
    }

    /// Like [`image`], in `parent` (a cache directory).
    fn image_in(parent: &Path, uid: u32, mode: u32) -> ImageRootfs {
        let directory = parent.join(fsutil::unique_name("hardbox-rootfs-test-"));
        std::fs::create_dir(&directory).expect("create the image directory");
        std::fs::write(directory.join("lower-file"), "lower").expect("write the lower file");
        std::fs::set_permissions(&directory, std::fs::Permissions::from_mode(mode))
            .expect("chmod the image directory");
        std::os::unix::fs::lchown(&directory, Some(uid), Some(uid))
            .expect("chown the image directory");
        ImageRootfs {
            manifest: Descriptor::new("", types::Digest::of(b""), 0),
            directory,
            config: RunConfig::default(),
        }
    }

    #[test]
    fn in_memory_scratch_takes_an_overlays_writes_and_leaves_nothing_on_disk() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test creates a tmpfs and needs root"
        );
        let image = image(100_000, 0o751);
        let scratch = Scratch::in_memory(&image, Some(1 << 20)).expect("in-memory scratch");
        assert_eq!(scratch.path(), None);
        let upper = fs::metadata(&scratch.upper).expect("stat upper");
        assert_eq!(upper.mode() & 0o7777, 0o751);
        assert_eq!((upper.uid(), upper.gid()), (100_000, 100_000));
        assert!(fs::metadata(&scratch.work).expect("stat work").is_dir());
        assert!(
            in_memory_supported(),
            "Linux 6.15 or later is needed for an in-memory upper layer"
        );

        let overlay = sys::process::mount_overlay(&image.directory, &scratch.upper, &scratch.work)
            .expect("overlay over the in-memory scratch");
        let file = rustix::fs::openat(
            &overlay,
            "written",
            OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .expect("create a file in the overlay");
        let mut file = std::fs::File::from(file);
        file.write_all(b"upper").expect("write to the overlay");
        // The size limit holds: 1 MiB more does not fit.
        let error = file
            .write_all(&vec![0; 2 << 20])
            .expect_err("a write beyond the tmpfs size");
        assert_eq!(error.raw_os_error(), Some(28), "{error}");
        drop(file);
        assert!(fs::metadata(scratch.upper.join("written")).is_ok());
        assert!(fs::metadata(image.directory.join("written")).is_err());
        let entries: Vec<_> = fs::read_dir(&image.directory)
            .expect("list the image directory")
            .map(|entry| entry.map(|entry| entry.file_name()))
            .collect::<Result<_, _>>()
            .expect("read the image directory");
        assert_eq!(entries, ["lower-file"]);
        drop(overlay);
        drop(scratch);
        fs::remove_dir_all(&image.directory).expect("remove the image directory");
    }

    #[test]
    fn store_scratch_is_removed_on_drop() {
        let image = image(rustix::process::geteuid().as_raw(), 0o755);
        let scratch = Scratch::create(&image).expect("scratch in the store");
        let path = scratch.path().expect("a directory").to_owned();
        assert!(scratch.upper.starts_with(&path) && scratch.work.starts_with(&path));
        assert!(fs::metadata(&scratch.upper).expect("stat upper").is_dir());
        drop(scratch);
        assert!(fs::symlink_metadata(&path).is_err());
        fs::remove_dir_all(&image.directory).expect("remove the image directory");
    }

    #[test]
    fn sweep_keeps_cached_images_while_an_in_memory_sandbox_lives() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test creates a tmpfs and needs root"
        );
        let root = std::env::temp_dir().join(fsutil::unique_name("hardbox-sweep-test-"));
        let store = Store::open(&root).expect("open the store");
        let cache = root.join(CACHE_DIRECTORY);
        fs::create_dir_all(&cache).expect("create the cache");
        // Not an image of the store: removed by a sweep when nothing runs.
        let image = image_in(&cache, 0, 0o755);
        let scratch = Scratch::in_memory(&image, None).expect("in-memory scratch");
        let report = sweep(&store).expect("sweep with a live sandbox");
        assert_eq!(report, SweepReport::default());
        assert!(image.directory.is_dir());
        drop(scratch);
        let report = sweep(&store).expect("sweep with no sandbox");
        assert_eq!(report.unused_images, std::slice::from_ref(&image.directory));
        assert!(!image.directory.exists());
        fs::remove_dir_all(&root).expect("remove the store");
    }
}
