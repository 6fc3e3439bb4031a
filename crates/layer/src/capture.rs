//! What a sandbox changed, as a list and as an OCI layer: `hardbox diff` and `hardbox save`.
//!
//! Why it exists: a long-lived sandbox writes to an overlayfs upper directory over its image's
//! unpacked root filesystem, and to a host workspace (a directory bound read-write) whose state
//! at create time was recorded in a [`Snapshot`]. This module reads both back:
//!
//! - [`upper_changes`] lists what the upper adds, changes and deletes against the lower (the
//!   image's rootfs directory); [`write_upper_layer`] writes the same as a layer tar, with
//!   overlayfs whiteouts (a 0:0 character device, the `overlay.opaque` xattr) turned into OCI
//!   ones (`.wh.NAME`, `.wh..wh..opq`).
//! - [`Snapshot::take`] records a workspace, [`Snapshot::changes`] lists what changed since,
//!   and [`write_workspace_layer`] writes the changes as a layer placed under the workspace's
//!   path in the sandbox.
//!
//! How the CLI uses it (`<dir>` is `<root>/sandboxes/<id>`):
//!
//! ```text
//! diff:  upper_changes(<dir>/upper, Some(image rootfs dir))            -> Vec<Change>
//!        Snapshot::parse(<dir>/workspace.snapshot)?.changes(workspace, guest_path)
//! save:  write_upper_layer(<dir>/upper, Some(rootfs), file, &options)  -> LayerSummary
//!        write_workspace_layer(workspace, &snapshot, guest_path, file, &options)
//!        then build::save with both tars
//! create: Snapshot::take(workspace)?.to_bytes(), written atomically to workspace.snapshot
//! ```
//!
//! Guarantees:
//!
//! - Nothing is followed: every file is reached from a directory descriptor with
//!   `O_NOFOLLOW` (or `openat2` with `RESOLVE_NO_SYMLINKS`), symlinks are recorded as links and
//!   never opened, fifos and devices are never opened. A file replaced while it is read (another
//!   inode, another type, a shorter size) stops the capture with [`CaptureError::Changed`]
//!   rather than giving a torn layer.
//! - Secrets never end up in a layer: [`ALWAYS_EXCLUDED`] (`/run/hardbox`, where the proxy's CA
//!   bundle and secret files are bound) is skipped whatever the options say. `/run` is a tmpfs
//!   in every sandbox, so nothing of it reaches the upper in the first place; the exclusion
//!   guards against a later change of that layout.
//! - Overlay metadata fails closed: a `redirect` or `metacopy` xattr (features hardbox never
//!   mounts with), an `opaque` value other than `y`, or a device node other than the 0:0
//!   whiteout stops the capture (devices may be skipped instead with [`DeviceNodes::Skip`]).
//!   Overlay xattrs, `user.hardbox.owner` and `security.selinux` never reach the layer.
//! - Layers are deterministic: entries in path order (each directory's names sorted bytewise,
//!   a directory before what it holds), ustar headers with PAX records only for long names and
//!   xattrs, mtimes in whole seconds and clamped when asked, empty user and group names. Regular
//!   files with several links in the layer are written once and linked after.
//! - Owners are what the sandbox saw: shifted back from the root-mode host range
//!   ([`Owners::Unshift`]) or read from the caller's ids and `user.hardbox.owner` rootless
//!   ([`Owners::Caller`]); an id outside the sandbox's range is an error, not a guess.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use types::{Digest, Sha256Writer};

use crate::names::{OPAQUE_WHITEOUT, WHITEOUT_PREFIX};
use crate::tree;

/// Sandbox paths never listed nor captured: the proxy's CA bundle and the secrets are bound
/// below `/run/hardbox`.
pub const ALWAYS_EXCLUDED: &[&str] = &["/run/hardbox"];

/// The xattr recording a file's owner in a rootless image cache (see [`crate::Ownership`]).
const OWNER_XATTR: &[u8] = b"user.hardbox.owner";
/// Host labels, meaningless in an image.
const SELINUX_XATTR: &[u8] = b"security.selinux";
const SNAPSHOT_HEADER: &str = "hardbox-workspace-snapshot 1";

/// How a path differs from what the sandbox started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    /// Not there before.
    Added,
    /// There before: its content or metadata changed, or it was replaced.
    Changed,
    /// Gone (only the topmost deleted path is listed, not what a deleted directory held).
    Deleted,
}

impl ChangeKind {
    /// `A`, `C` or `D`, as `docker diff` prints them.
    pub fn symbol(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// What kind of file a path is (for a deletion: was).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    /// A deletion recorded by a whiteout when no lower directory was given to say what it hid.
    Unknown,
}

impl EntryKind {
    fn of_mode(mode: u32) -> EntryKind {
        match FileType::from_raw_mode(mode) {
            FileType::RegularFile => EntryKind::File,
            FileType::Directory => EntryKind::Directory,
            FileType::Symlink => EntryKind::Symlink,
            FileType::Fifo => EntryKind::Fifo,
            FileType::Socket => EntryKind::Socket,
            FileType::CharacterDevice => EntryKind::CharDevice,
            FileType::BlockDevice => EntryKind::BlockDevice,
            FileType::Unknown => EntryKind::Unknown,
        }
    }

    /// One letter as `ls -l` and the snapshot file write it (`f` for a regular file, `?` for
    /// [`EntryKind::Unknown`]).
    pub fn symbol(self) -> char {
        match self {
            EntryKind::File => 'f',
            EntryKind::Directory => 'd',
            EntryKind::Symlink => 'l',
            EntryKind::Fifo => 'p',
            EntryKind::Socket => 's',
            EntryKind::CharDevice => 'c',
            EntryKind::BlockDevice => 'b',
            EntryKind::Unknown => '?',
        }
    }

    fn from_symbol(symbol: &str) -> Option<EntryKind> {
        Some(match symbol {
            "f" => EntryKind::File,
            "d" => EntryKind::Directory,
            "l" => EntryKind::Symlink,
            "p" => EntryKind::Fifo,
            "s" => EntryKind::Socket,
            "c" => EntryKind::CharDevice,
            "b" => EntryKind::BlockDevice,
            _ => return None,
        })
    }
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Change {
    /// Absolute, as the sandbox sees it (`/etc/hosts`, `/workspace/src/main.rs`).
    pub path: PathBuf,
    pub kind: ChangeKind,
    /// What the path is now, or for a deletion what it was.
    pub entry: EntryKind,
}

/// Which xattr namespace the overlay keeps its metadata in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayXattrs {
    /// `trusted.overlay.*`: an overlay mounted by root (root-mode sandboxes).
    Trusted,
    /// `user.overlay.*`: an overlay mounted with `userxattr` in a user namespace (rootless).
    User,
}

impl OverlayXattrs {
    /// The namespace sandboxes of the current user use: `trusted` as root, `user` otherwise.
    pub fn for_current_user() -> OverlayXattrs {
        if rustix::process::geteuid().is_root() {
            OverlayXattrs::Trusted
        } else {
            OverlayXattrs::User
        }
    }

    fn prefix(self) -> &'static [u8] {
        match self {
            OverlayXattrs::Trusted => b"trusted.overlay.",
            OverlayXattrs::User => b"user.overlay.",
        }
    }
}

/// Which owners the layer records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// The ids as stored on the host.
    Keep,
    /// Root-mode sandboxes: host id `base + N` is N in the sandbox; ids outside
    /// `base..base + size` are an error.
    Unshift {
        uid_base: u32,
        gid_base: u32,
        size: u32,
    },
    /// Rootless sandboxes: the caller's ids are root in the sandbox, unless the file records
    /// its owner in `user.hardbox.owner` (`"UID:GID"`, copied up from the image cache); any
    /// other id is an error.
    Caller { uid: u32, gid: u32 },
    /// Every entry owned by these ids (a workspace of host files, say).
    Fixed { uid: u32, gid: u32 },
}

/// What to do with device nodes (other than overlay whiteouts) found in a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceNodes {
    /// Stop with [`CaptureError::DeviceNode`]: no sandbox can make one (its root is mounted
    /// `nodev` and its user namespace cannot `mknod`), so one is a sign of tampering.
    Refuse,
    /// Leave it out of the layer and list it in [`LayerSummary::skipped`].
    Skip,
}

/// How a layer is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureOptions {
    /// mtimes later than this (seconds since the epoch) are written as this.
    pub mtime_clamp: Option<u64>,
    pub owners: Owners,
    pub overlay_xattrs: OverlayXattrs,
    pub devices: DeviceNodes,
    /// More absolute sandbox paths to leave out (with everything below them), besides
    /// [`ALWAYS_EXCLUDED`].
    pub exclude: Vec<PathBuf>,
}

impl CaptureOptions {
    /// Owners kept, the current user's overlay namespace, devices refused, no clamp.
    pub fn for_current_user() -> CaptureOptions {
        CaptureOptions {
            mtime_clamp: None,
            owners: Owners::Keep,
            overlay_xattrs: OverlayXattrs::for_current_user(),
            devices: DeviceNodes::Refuse,
            exclude: Vec::new(),
        }
    }
}

/// What writing a layer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSummary {
    /// SHA-256 of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar.
    pub size: u64,
    /// Tar entries (PAX extension headers not counted).
    pub entries: u64,
    /// Sandbox paths left out: sockets, and device nodes with [`DeviceNodes::Skip`].
    pub skipped: Vec<PathBuf>,
}

/// Why a change list or a layer could not be made. Paths are host paths unless said otherwise.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("failed to {operation} {path}")]
    Io {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{path} changed while it was captured")]
    Changed { path: PathBuf },
    #[error("{path} is on another filesystem than the directory captured")]
    OtherFilesystem { path: PathBuf },
    #[error("{path} carries the overlayfs xattr {xattr}, a feature hardbox does not mount overlays with")]
    OverlayFeature { path: PathBuf, xattr: String },
    #[error("{path} has the overlayfs opaque xattr set to {value:?}, not \"y\"")]
    BadOpaque { path: PathBuf, value: String },
    #[error("{path} is a device node ({major}:{minor}); devices are not captured")]
    DeviceNode {
        path: PathBuf,
        major: u32,
        minor: u32,
    },
    #[error("{path} is owned by {which} {id}, which the sandbox does not map")]
    UnmappedOwner {
        path: PathBuf,
        which: &'static str,
        id: u32,
    },
    #[error("{path} has an xattr whose name is not UTF-8")]
    XattrName { path: PathBuf },
    #[error("guest path {path} is not an absolute path without '..'")]
    GuestPath { path: PathBuf },
    #[error("failed to write the layer")]
    Write(#[source] io::Error),
    #[error("workspace snapshot, line {line}: {reason}")]
    Snapshot { line: usize, reason: &'static str },
}

fn io_error(path: &Path, operation: &'static str) -> impl FnOnce(Errno) -> CaptureError {
    let path = path.to_owned();
    move |errno| CaptureError::Io {
        path,
        operation,
        source: errno.into(),
    }
}

/// Relative path components (no `.`, `..` or `/`); empty for the root.
type Rel = Vec<Vec<u8>>;

/// Extended attributes, (name, value), sorted by name.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

fn join_rel(base: &Path, rel: &[Vec<u8>]) -> PathBuf {
    let mut path = base.to_path_buf();
    for component in rel {
        path.push(std::ffi::OsStr::from_bytes(component));
    }
    path
}

fn sandbox_path(rel: &[Vec<u8>]) -> PathBuf {
    join_rel(Path::new("/"), rel)
}

/// The normal components of an absolute path; `None` if it is relative or has `..`.
fn absolute_components(path: &Path) -> Option<Rel> {
    let mut out = Vec::new();
    let mut components = path.components();
    if components.next() != Some(Component::RootDir) {
        return None;
    }
    for component in components {
        match component {
            Component::Normal(name) => out.push(name.as_bytes().to_vec()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn excluded_paths(extra: &[PathBuf]) -> Vec<Rel> {
    ALWAYS_EXCLUDED
        .iter()
        .map(Path::new)
        .chain(extra.iter().map(PathBuf::as_path))
        .filter_map(absolute_components)
        // Excluding the root would exclude everything; an exclusion says what to leave out.
        .filter(|rel| !rel.is_empty())
        .collect()
}

fn is_excluded(excluded: &[Rel], path: &[Vec<u8>]) -> bool {
    excluded.iter().any(|ex| path.starts_with(ex))
}

/// The metadata this module uses, in fixed-width types on every architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    dev: u64,
    rdev: u64,
    nlink: u64,
}

impl Meta {
    #[allow(
        clippy::unnecessary_cast,
        clippy::useless_conversion,
        reason = "the field types of struct stat differ between architectures"
    )]
    fn from_stat(stat: &rfs::Stat) -> Meta {
        let nanos = |seconds: i64, nanoseconds: i64| {
            seconds
                .saturating_mul(1_000_000_000)
                .saturating_add(nanoseconds)
        };
        Meta {
            mode: stat.st_mode as u32,
            uid: stat.st_uid as u32,
            gid: stat.st_gid as u32,
            size: stat.st_size.max(0) as u64,
            mtime: stat.st_mtime as i64,
            mtime_ns: nanos(stat.st_mtime as i64, stat.st_mtime_nsec as i64),
            ctime_ns: nanos(stat.st_ctime as i64, stat.st_ctime_nsec as i64),
            ino: stat.st_ino as u64,
            dev: stat.st_dev as u64,
            rdev: stat.st_rdev as u64,
            nlink: stat.st_nlink as u64,
        }
    }

    fn kind(&self) -> EntryKind {
        EntryKind::of_mode(self.mode)
    }

    fn is_dir(&self) -> bool {
        self.kind() == EntryKind::Directory
    }

    /// An overlayfs whiteout: a character device 0:0.
    fn is_whiteout(&self) -> bool {
        self.kind() == EntryKind::CharDevice && self.rdev == 0
    }

    fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }

    /// Whether a directory's own metadata (not its times, which its children move) differs.
    fn same_directory_metadata(&self, other: &Meta) -> bool {
        (self.permissions(), self.uid, self.gid) == (other.permissions(), other.uid, other.gid)
    }
}

fn stat_at(parent: impl AsFd, name: &[u8], path: &Path) -> Result<Option<Meta>, CaptureError> {
    tree::stat(parent, name)
        .map(|stat| stat.as_ref().map(Meta::from_stat))
        .map_err(io_error(path, "inspect"))
}

/// Opens a directory below `parent` without following it and checks it is the one `meta`
/// describes (on the same filesystem as the tree, so a mount cannot pull in something else).
fn open_dir_checked(
    parent: impl AsFd,
    name: &[u8],
    meta: &Meta,
    dev: u64,
    path: &Path,
) -> Result<OwnedFd, CaptureError> {
    let fd = match tree::open_dir(parent, name) {
        Ok(fd) => fd,
        Err(Errno::LOOP | Errno::NOTDIR | Errno::NOENT) => {
            return Err(CaptureError::Changed {
                path: path.to_owned(),
            })
        }
        Err(errno) => return Err(io_error(path, "open directory")(errno)),
    };
    let now = rfs::fstat(&fd)
        .map(|stat| Meta::from_stat(&stat))
        .map_err(io_error(path, "inspect directory"))?;
    if (now.dev, now.ino) != (meta.dev, meta.ino) || !now.is_dir() {
        return Err(CaptureError::Changed {
            path: path.to_owned(),
        });
    }
    if now.dev != dev {
        return Err(CaptureError::OtherFilesystem {
            path: path.to_owned(),
        });
    }
    Ok(fd)
}

/// Opens a regular file for reading without following it, without blocking (a fifo swapped in
/// would not block) and checks it is the one `meta` describes. Returns its current metadata.
fn open_file_checked(
    parent: impl AsFd,
    name: &[u8],
    meta: &Meta,
    path: &Path,
) -> Result<(OwnedFd, Meta), CaptureError> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = match rfs::openat(parent, name, flags | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::LOOP | Errno::NOENT | Errno::NXIO) => {
            return Err(CaptureError::Changed {
                path: path.to_owned(),
            })
        }
        Err(errno) => return Err(io_error(path, "open")(errno)),
    };
    let now = rfs::fstat(&fd)
        .map(|stat| Meta::from_stat(&stat))
        .map_err(io_error(path, "inspect"))?;
    if (now.dev, now.ino) != (meta.dev, meta.ino) || now.kind() != EntryKind::File {
        return Err(CaptureError::Changed {
            path: path.to_owned(),
        });
    }
    Ok((fd, now))
}

/// Every xattr of an open file or directory, sorted by name.
fn read_xattrs(fd: &OwnedFd, path: &Path) -> Result<Xattrs, CaptureError> {
    let fail = io_error(path, "read xattrs of");
    let mut list = vec![0u8; 1024];
    let len = loop {
        match rfs::flistxattr(fd, &mut list[..]) {
            Ok(len) => break len,
            Err(Errno::RANGE) => {
                let needed = rfs::flistxattr_query(fd).map_err(io_error(path, "list xattrs of"))?;
                list.resize(needed.max(list.len() * 2), 0);
            }
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Err(errno) => return Err(fail(errno)),
        }
    };
    let mut xattrs = Vec::new();
    for name in list[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if let Some(value) = read_xattr(fd, name, path)? {
            xattrs.push((name.to_vec(), value));
        }
    }
    xattrs.sort();
    Ok(xattrs)
}

fn read_xattr(fd: &OwnedFd, name: &[u8], path: &Path) -> Result<Option<Vec<u8>>, CaptureError> {
    let mut value = vec![0u8; 256];
    loop {
        match rfs::fgetxattr(fd, name, &mut value[..]) {
            Ok(len) => {
                value.truncate(len);
                return Ok(Some(value));
            }
            Err(Errno::RANGE) => {
                let needed =
                    rfs::fgetxattr_query(fd, name).map_err(io_error(path, "read xattr of"))?;
                value.resize(needed.max(value.len() * 2), 0);
            }
            // Removed meanwhile.
            Err(Errno::NODATA) => return Ok(None),
            Err(errno) => return Err(io_error(path, "read xattr of")(errno)),
        }
    }
}

/// The xattrs a layer may carry: none of overlayfs's (either namespace), nor hardbox's owner
/// record, nor SELinux labels of the host.
fn is_private_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.")
        || name.starts_with(b"user.overlay.")
        || name == OWNER_XATTR
        || name == SELINUX_XATTR
}

/// What the overlay's own xattrs on one upper entry say.
#[derive(Debug, Default)]
struct OverlayState {
    opaque: bool,
}

fn overlay_state(
    xattrs: &[(Vec<u8>, Vec<u8>)],
    namespace: OverlayXattrs,
    path: &Path,
) -> Result<OverlayState, CaptureError> {
    let mut state = OverlayState::default();
    for (name, value) in xattrs {
        let Some(key) = name.strip_prefix(namespace.prefix()) else {
            continue;
        };
        match key {
            b"opaque" if value == b"y" => state.opaque = true,
            b"opaque" => {
                return Err(CaptureError::BadOpaque {
                    path: path.to_owned(),
                    value: String::from_utf8_lossy(value).into_owned(),
                })
            }
            // Renamed directories and metadata-only copy-ups point into the lower layers in
            // ways a tar cannot say; whiteouts as xattrs belong to lower layers only.
            b"redirect" | b"metacopy" | b"whiteout" | b"whiteouts" => {
                return Err(CaptureError::OverlayFeature {
                    path: path.to_owned(),
                    xattr: String::from_utf8_lossy(name).into_owned(),
                })
            }
            // origin, impure, nlink, upper, uuid, protattr, ...: bookkeeping, never copied.
            _ => {}
        }
    }
    Ok(state)
}

/// One thing the upper walk found.
enum Item<'a> {
    /// A file, directory, symlink or special file of the upper.
    Node {
        rel: &'a [Vec<u8>],
        host: &'a Path,
        parent: &'a OwnedFd,
        name: &'a [u8],
        meta: Meta,
        /// For directories and regular files (the only ones whose xattrs are read).
        xattrs: Xattrs,
        opaque: bool,
        lower: Option<Meta>,
    },
    /// An overlayfs whiteout.
    Whiteout {
        rel: &'a [Vec<u8>],
        meta: Meta,
        lower: Option<Meta>,
    },
    /// Something of the lower hidden by an opaque directory (and not in the upper).
    Hidden { rel: &'a [Vec<u8>], lower: Meta },
}

struct UpperWalk<'o> {
    upper: PathBuf,
    dev: u64,
    namespace: OverlayXattrs,
    excluded: Vec<Rel>,
    visit: &'o mut dyn FnMut(Item<'_>) -> Result<(), CaptureError>,
}

fn open_root(path: &Path) -> Result<(OwnedFd, Meta), CaptureError> {
    let fd = rfs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_error(path, "open directory"))?;
    let meta = rfs::fstat(&fd)
        .map(|stat| Meta::from_stat(&stat))
        .map_err(io_error(path, "inspect"))?;
    Ok((fd, meta))
}

/// Walks `upper` (and `lower` alongside), calling `visit` for every item in path order.
fn walk_upper(
    upper: &Path,
    lower: Option<&Path>,
    namespace: OverlayXattrs,
    exclude: &[PathBuf],
    visit: &mut dyn FnMut(Item<'_>) -> Result<(), CaptureError>,
) -> Result<(), CaptureError> {
    let (root, root_meta) = open_root(upper)?;
    let lower = match lower {
        Some(path) => Some(open_root(path)?),
        None => None,
    };
    let xattrs = read_xattrs(&root, upper)?;
    let state = overlay_state(&xattrs, namespace, upper)?;
    let mut walk = UpperWalk {
        upper: upper.to_owned(),
        dev: root_meta.dev,
        namespace,
        excluded: excluded_paths(exclude),
        visit,
    };
    (walk.visit)(Item::Node {
        rel: &[],
        host: upper,
        parent: &root,
        name: b".",
        meta: root_meta,
        xattrs,
        opaque: state.opaque,
        lower: lower.as_ref().map(|(_, meta)| *meta),
    })?;
    let merged = lower.is_some() && !state.opaque;
    let mut rel = Vec::new();
    walk.directory(&root, lower.as_ref().map(|(fd, _)| fd), merged, &mut rel)
}

impl UpperWalk<'_> {
    /// Visits the children of `dir` (at `rel`). `lower` is the same directory in the lower
    /// layer; `merged` says whether overlayfs shows the lower's children here (no opaque
    /// directory on the way), else every lower child absent from the upper is hidden.
    fn directory(
        &mut self,
        dir: &OwnedFd,
        lower: Option<&OwnedFd>,
        merged: bool,
        rel: &mut Rel,
    ) -> Result<(), CaptureError> {
        let host = join_rel(&self.upper, rel);
        let mut names: BTreeSet<Vec<u8>> = tree::list(dir)
            .map_err(io_error(&host, "list directory"))?
            .into_iter()
            .collect();
        if let (Some(lower), false) = (lower, merged) {
            names.extend(
                tree::list(lower).map_err(io_error(&host, "list the lower layer's directory"))?,
            );
        }
        for name in names {
            rel.push(name);
            let result = self.child(dir, lower, merged, rel);
            rel.pop();
            result?;
        }
        Ok(())
    }

    fn child(
        &mut self,
        dir: &OwnedFd,
        lower_dir: Option<&OwnedFd>,
        merged: bool,
        rel: &mut Rel,
    ) -> Result<(), CaptureError> {
        if is_excluded(&self.excluded, rel) {
            return Ok(());
        }
        let host = join_rel(&self.upper, rel);
        let name = rel.last().cloned().unwrap_or_default();
        let meta = stat_at(dir, &name, &host)?;
        let lower = match lower_dir {
            Some(lower_dir) => stat_at(lower_dir, &name, &host)?,
            None => None,
        };
        let Some(meta) = meta else {
            if let (Some(lower), false) = (lower, merged) {
                (self.visit)(Item::Hidden { rel, lower })?;
            }
            return Ok(());
        };
        if meta.is_whiteout() {
            return (self.visit)(Item::Whiteout { rel, meta, lower });
        }
        match meta.kind() {
            EntryKind::Directory => {
                let fd = open_dir_checked(dir, &name, &meta, self.dev, &host)?;
                let xattrs = read_xattrs(&fd, &host)?;
                let state = overlay_state(&xattrs, self.namespace, &host)?;
                (self.visit)(Item::Node {
                    rel,
                    host: &host,
                    parent: dir,
                    name: &name,
                    meta,
                    xattrs,
                    opaque: state.opaque,
                    lower,
                })?;
                let lower_child = match (lower_dir, lower) {
                    (Some(lower_dir), Some(lower)) if lower.is_dir() => Some(
                        tree::open_dir(lower_dir, &name)
                            .map_err(io_error(&host, "open the lower layer's directory for"))?,
                    ),
                    _ => None,
                };
                let merged = merged && !state.opaque && lower_child.is_some();
                self.directory(&fd, lower_child.as_ref(), merged, rel)
            }
            EntryKind::File => {
                let (fd, _) = open_file_checked(dir, &name, &meta, &host)?;
                let xattrs = read_xattrs(&fd, &host)?;
                overlay_state(&xattrs, self.namespace, &host)?;
                drop(fd);
                (self.visit)(Item::Node {
                    rel,
                    host: &host,
                    parent: dir,
                    name: &name,
                    meta,
                    xattrs,
                    opaque: false,
                    lower,
                })
            }
            _ => (self.visit)(Item::Node {
                rel,
                host: &host,
                parent: dir,
                name: &name,
                meta,
                xattrs: Vec::new(),
                opaque: false,
                lower,
            }),
        }
    }
}

/// Lists what the overlay upper directory `upper` adds, changes and deletes against `lower`
/// (the image's unpacked rootfs the overlay was mounted over), in path order, with paths as
/// the sandbox sees them. Overlay xattrs are read in the current user's namespace
/// ([`OverlayXattrs::for_current_user`]); see [`upper_changes_with`] to choose.
///
/// - A path in the upper is `Added` when the lower lacks it, else `Changed`, except a
///   directory present in both, not opaque, with the same mode and owner: it is only in the
///   upper because something below it changed, and is not listed.
/// - A whiteout is `Deleted` (with the kind the lower had); one that hides nothing is not
///   listed. An opaque directory (a directory deleted and made again) is `Changed`, and each
///   lower entry it hides is `Deleted`.
/// - Without `lower`, every upper entry is `Added` and a whiteout's kind is
///   [`EntryKind::Unknown`].
/// - [`ALWAYS_EXCLUDED`] paths are not listed.
pub fn upper_changes(upper: &Path, lower: Option<&Path>) -> Result<Vec<Change>, CaptureError> {
    upper_changes_with(upper, lower, OverlayXattrs::for_current_user(), &[])
}

/// [`upper_changes`] with the overlay's xattr namespace and more paths to leave out.
pub fn upper_changes_with(
    upper: &Path,
    lower: Option<&Path>,
    namespace: OverlayXattrs,
    exclude: &[PathBuf],
) -> Result<Vec<Change>, CaptureError> {
    let have_lower = lower.is_some();
    let mut changes = Vec::new();
    walk_upper(upper, lower, namespace, exclude, &mut |item| {
        let change = match item {
            Item::Node {
                rel,
                meta,
                lower,
                opaque,
                ..
            } => {
                let kind = match lower {
                    None if rel.is_empty() && !have_lower => None,
                    None => Some(ChangeKind::Added),
                    Some(lower)
                        if meta.is_dir()
                            && lower.is_dir()
                            && !opaque
                            && meta.same_directory_metadata(&lower) =>
                    {
                        None
                    }
                    Some(_) => Some(ChangeKind::Changed),
                };
                kind.map(|kind| Change {
                    path: sandbox_path(rel),
                    kind,
                    entry: meta.kind(),
                })
            }
            Item::Whiteout { rel, lower, .. } => match (have_lower, lower) {
                (false, _) => Some(Change {
                    path: sandbox_path(rel),
                    kind: ChangeKind::Deleted,
                    entry: EntryKind::Unknown,
                }),
                (true, None) => None,
                (true, Some(lower)) => Some(Change {
                    path: sandbox_path(rel),
                    kind: ChangeKind::Deleted,
                    entry: lower.kind(),
                }),
            },
            Item::Hidden { rel, lower } => Some(Change {
                path: sandbox_path(rel),
                kind: ChangeKind::Deleted,
                entry: lower.kind(),
            }),
        };
        changes.extend(change);
        Ok(())
    })?;
    Ok(changes)
}

/// Reads exactly `remaining` bytes, failing (and saying so) if the file ends before.
struct ExactReader<'a> {
    file: io::Take<File>,
    remaining: u64,
    short: &'a mut bool,
}

impl Read for ExactReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let n = self.file.read(buf)?;
        if n == 0 {
            *self.short = true;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was read",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// What a tar entry is made from.
enum Content {
    None,
    /// A regular file, open, and its size when opened.
    File(OwnedFd, u64),
    Symlink(Vec<u8>),
}

/// The tar being written: deterministic headers, hard-link groups, counts.
struct TarOut<'o, W: Write> {
    builder: tar::Builder<Sha256Writer<W>>,
    options: &'o CaptureOptions,
    links: HashMap<(u64, u64), Vec<u8>>,
    entries: u64,
    skipped: Vec<PathBuf>,
}

/// Puts `value` in a 100-byte ustar field, or its first 100 bytes when a PAX record says it all.
fn set_field(field: &mut [u8; 100], value: &[u8]) -> bool {
    field.fill(0);
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    value.len() <= field.len()
}

impl<'o, W: Write> TarOut<'o, W> {
    fn new(out: W, options: &'o CaptureOptions) -> Self {
        TarOut {
            builder: tar::Builder::new(Sha256Writer::wrap(out)),
            options,
            links: HashMap::new(),
            entries: 0,
            skipped: Vec::new(),
        }
    }

    fn mtime(&self, seconds: i64) -> u64 {
        let seconds = u64::try_from(seconds).unwrap_or(0);
        match self.options.mtime_clamp {
            Some(clamp) => seconds.min(clamp),
            None => seconds,
        }
    }

    /// The owner the layer records for a file, from its host ids and xattrs.
    fn owner(
        &self,
        meta: &Meta,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        host: &Path,
    ) -> Result<(u32, u32), CaptureError> {
        let unmapped = |which, id| CaptureError::UnmappedOwner {
            path: host.to_owned(),
            which,
            id,
        };
        match self.options.owners {
            Owners::Keep => Ok((meta.uid, meta.gid)),
            Owners::Fixed { uid, gid } => Ok((uid, gid)),
            Owners::Unshift {
                uid_base,
                gid_base,
                size,
            } => {
                let shift = |id: u32, base: u32, which| {
                    id.checked_sub(base)
                        .filter(|inside| *inside < size)
                        .ok_or_else(|| unmapped(which, id))
                };
                Ok((
                    shift(meta.uid, uid_base, "uid")?,
                    shift(meta.gid, gid_base, "gid")?,
                ))
            }
            Owners::Caller { uid, gid } => {
                if meta.uid != uid {
                    return Err(unmapped("uid", meta.uid));
                }
                if meta.gid != gid {
                    return Err(unmapped("gid", meta.gid));
                }
                let recorded = xattrs
                    .iter()
                    .find(|(name, _)| name == OWNER_XATTR)
                    .and_then(|(_, value)| std::str::from_utf8(value).ok())
                    .and_then(|text| text.split_once(':'))
                    .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)));
                Ok(recorded.unwrap_or((0, 0)))
            }
        }
    }

    /// Writes the PAX records (long names, xattrs) and the header, then `data`.
    fn append(
        &mut self,
        header: &mut tar::Header,
        name: &[u8],
        link: Option<&[u8]>,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        host: &Path,
        data: &mut dyn Read,
    ) -> Result<(), CaptureError> {
        let mut pax: Vec<(String, &[u8])> = Vec::new();
        if !set_field(&mut header.as_old_mut().name, name) {
            pax.push(("path".to_owned(), name));
        }
        if let Some(link) = link {
            if !set_field(&mut header.as_old_mut().linkname, link) {
                pax.push(("linkpath".to_owned(), link));
            }
        }
        for (xattr, value) in xattrs.iter().filter(|(n, _)| !is_private_xattr(n)) {
            let xattr = std::str::from_utf8(xattr).map_err(|_| CaptureError::XattrName {
                path: host.to_owned(),
            })?;
            pax.push((format!("SCHILY.xattr.{xattr}"), value));
        }
        if !pax.is_empty() {
            self.builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))
                .map_err(CaptureError::Write)?;
        }
        header.set_cksum();
        self.builder
            .append(header, data)
            .map_err(CaptureError::Write)?;
        self.entries += 1;
        Ok(())
    }

    /// Writes one file, directory, symlink or fifo. `name` is the tar name without a trailing
    /// `/` (empty for the root); `sandbox` names it in [`LayerSummary::skipped`].
    #[allow(clippy::too_many_arguments, reason = "one entry's facts, all needed")]
    fn node(
        &mut self,
        name: &[u8],
        sandbox: PathBuf,
        host: &Path,
        meta: &Meta,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        content: Content,
    ) -> Result<(), CaptureError> {
        let mut header = tar::Header::new_ustar();
        header.set_mode(meta.permissions());
        header.set_mtime(self.mtime(meta.mtime));
        header.set_size(0);
        let kind = meta.kind();
        let (uid, gid) = match kind {
            EntryKind::Socket
            | EntryKind::CharDevice
            | EntryKind::BlockDevice
            | EntryKind::Unknown => (0, 0),
            _ => self.owner(meta, xattrs, host)?,
        };
        header.set_uid(u64::from(uid));
        header.set_gid(u64::from(gid));
        let mut name = name.to_vec();
        match (kind, content) {
            (EntryKind::Directory, _) => {
                header.set_entry_type(tar::EntryType::Directory);
                if name.is_empty() {
                    name.push(b'.');
                }
                name.push(b'/');
                self.append(&mut header, &name, None, xattrs, host, &mut io::empty())
            }
            (EntryKind::File, Content::File(fd, size)) => {
                if meta.nlink > 1 {
                    if let Some(first) = self.links.get(&(meta.dev, meta.ino)).cloned() {
                        header.set_entry_type(tar::EntryType::Link);
                        return self.append(
                            &mut header,
                            &name,
                            Some(&first),
                            &[],
                            host,
                            &mut io::empty(),
                        );
                    }
                    self.links.insert((meta.dev, meta.ino), name.clone());
                }
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(size);
                let mut short = false;
                let mut reader = ExactReader {
                    file: File::from(fd).take(size),
                    remaining: size,
                    short: &mut short,
                };
                let result = self.append(&mut header, &name, None, xattrs, host, &mut reader);
                if short {
                    return Err(CaptureError::Changed {
                        path: host.to_owned(),
                    });
                }
                result
            }
            (EntryKind::Symlink, Content::Symlink(target)) => {
                header.set_entry_type(tar::EntryType::Symlink);
                // Symlinks carry no user xattrs and the applier does not set others on them.
                self.append(
                    &mut header,
                    &name,
                    Some(&target),
                    &[],
                    host,
                    &mut io::empty(),
                )
            }
            (EntryKind::Fifo, _) => {
                header.set_entry_type(tar::EntryType::Fifo);
                self.append(&mut header, &name, None, &[], host, &mut io::empty())
            }
            (EntryKind::CharDevice | EntryKind::BlockDevice, _)
                if self.options.devices == DeviceNodes::Refuse =>
            {
                Err(CaptureError::DeviceNode {
                    path: host.to_owned(),
                    major: rfs::major(meta.rdev),
                    minor: rfs::minor(meta.rdev),
                })
            }
            _ => {
                // Sockets, skipped devices, and a file whose content was not opened.
                self.skipped.push(sandbox);
                Ok(())
            }
        }
    }

    /// Writes `.wh.NAME` (or `.wh..wh..opq` with `opaque`) in the directory `parent`.
    fn whiteout(&mut self, parent: &[u8], name: &[u8], mtime: i64) -> Result<(), CaptureError> {
        let mut path = parent.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(WHITEOUT_PREFIX);
        path.extend_from_slice(name);
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(self.mtime(mtime));
        header.set_size(0);
        self.append(
            &mut header,
            &path,
            None,
            &[],
            Path::new(""),
            &mut io::empty(),
        )
    }

    fn finish(self) -> Result<LayerSummary, CaptureError> {
        let hashed = self.builder.into_inner().map_err(CaptureError::Write)?;
        let (diff_id, size, mut out) = hashed.finish();
        out.flush().map_err(CaptureError::Write)?;
        Ok(LayerSummary {
            diff_id,
            size,
            entries: self.entries,
            skipped: self.skipped,
        })
    }
}

/// The tar name of a path (components joined with `/`, under `base`).
fn tar_name(base: &[Vec<u8>], rel: &[Vec<u8>]) -> Vec<u8> {
    let mut all: Vec<Vec<u8>> = base.to_vec();
    all.extend_from_slice(rel);
    all.join(&b'/')
}

/// Reads what a node is made from: the open file, or the symlink's target.
fn content_of(
    parent: &OwnedFd,
    name: &[u8],
    meta: &Meta,
    host: &Path,
) -> Result<(Content, Meta), CaptureError> {
    match meta.kind() {
        EntryKind::File => {
            let (fd, now) = open_file_checked(parent, name, meta, host)?;
            Ok((Content::File(fd, now.size), now))
        }
        EntryKind::Symlink => {
            let target = rfs::readlinkat(parent, name, Vec::new())
                .map_err(|e| match e {
                    Errno::INVAL | Errno::NOENT => CaptureError::Changed {
                        path: host.to_owned(),
                    },
                    e => io_error(host, "read symlink")(e),
                })?
                .into_bytes();
            Ok((Content::Symlink(target), *meta))
        }
        _ => Ok((Content::None, *meta)),
    }
}

/// Writes what the overlay upper directory `upper` holds as an OCI layer tar to `out` (see the
/// module docs for what is guaranteed), hashing it on the way. `lower` (the image's rootfs
/// directory) only decides whether the root directory's metadata needs an entry; whiteouts
/// are written whether or not the lower has what they hide.
pub fn write_upper_layer(
    upper: &Path,
    lower: Option<&Path>,
    out: impl Write,
    options: &CaptureOptions,
) -> Result<LayerSummary, CaptureError> {
    let mut tar = TarOut::new(out, options);
    walk_upper(
        upper,
        lower,
        options.overlay_xattrs,
        &options.exclude,
        &mut |item| match item {
            Item::Node {
                rel,
                host,
                parent,
                name,
                meta,
                xattrs,
                opaque,
                lower,
            } => {
                if rel.is_empty() && lower.is_some_and(|lower| meta.same_directory_metadata(&lower))
                {
                    return Ok(());
                }
                let (content, meta) = if rel.is_empty() {
                    (Content::None, meta)
                } else {
                    content_of(parent, name, &meta, host)?
                };
                let tar_path = tar_name(&[], rel);
                tar.node(&tar_path, sandbox_path(rel), host, &meta, &xattrs, content)?;
                if opaque {
                    tar.whiteout(
                        &tar_path,
                        &OPAQUE_WHITEOUT[WHITEOUT_PREFIX.len()..],
                        meta.mtime,
                    )?;
                }
                Ok(())
            }
            Item::Whiteout { rel, meta, .. } => {
                // A whiteout has a name: the walk never yields the root as one.
                match rel.split_last() {
                    Some((name, parent)) => tar.whiteout(&tar_name(&[], parent), name, meta.mtime),
                    None => Ok(()),
                }
            }
            Item::Hidden { .. } => Ok(()),
        },
    )?;
    tar.finish()
}

/// One path of a [`Snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub kind: EntryKind,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl SnapshotEntry {
    fn of(meta: &Meta) -> SnapshotEntry {
        SnapshotEntry {
            kind: meta.kind(),
            size: meta.size,
            mtime_ns: meta.mtime_ns,
            ctime_ns: meta.ctime_ns,
            inode: meta.ino,
            mode: meta.permissions(),
            uid: meta.uid,
            gid: meta.gid,
        }
    }

    /// Whether `now` is this entry unchanged. Any write moves a file's ctime (which no
    /// unprivileged call can set back), so content changes are seen without reading content.
    /// A directory's times move with its children, which are compared on their own.
    fn unchanged(&self, now: &SnapshotEntry) -> bool {
        let same_identity = (self.kind, self.inode, self.mode, self.uid, self.gid)
            == (now.kind, now.inode, now.mode, now.uid, now.gid);
        if self.kind == EntryKind::Directory {
            return same_identity;
        }
        same_identity
            && (self.size, self.mtime_ns, self.ctime_ns) == (now.size, now.mtime_ns, now.ctime_ns)
    }
}

/// A workspace as it was: path → kind, size, times, inode, mode, owner. Taken when a sandbox is
/// created, compared with the workspace at `diff` and `save`. Serialised with
/// [`Snapshot::to_bytes`] as one line per path (the caller writes it atomically).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    entries: BTreeMap<Rel, SnapshotEntry>,
}

/// Walks `dir` (below `root_fd`) by descriptor, recording every entry.
fn record_tree(
    dir: &OwnedFd,
    rel: &mut Rel,
    base: &Path,
    dev: u64,
    out: &mut BTreeMap<Rel, (SnapshotEntry, Meta)>,
) -> Result<(), CaptureError> {
    let host = join_rel(base, rel);
    let mut names = tree::list(dir).map_err(io_error(&host, "list directory"))?;
    names.sort();
    for name in names {
        rel.push(name.clone());
        let host = join_rel(base, rel);
        let result = (|| {
            let Some(meta) = stat_at(dir, &name, &host)? else {
                return Err(CaptureError::Changed { path: host.clone() });
            };
            out.insert(rel.clone(), (SnapshotEntry::of(&meta), meta));
            if meta.is_dir() {
                let child = open_dir_checked(dir, &name, &meta, dev, &host)?;
                record_tree(&child, rel, base, dev, out)?;
            }
            Ok(())
        })();
        rel.pop();
        result?;
    }
    Ok(())
}

fn record(dir: &Path) -> Result<BTreeMap<Rel, (SnapshotEntry, Meta)>, CaptureError> {
    let (root, meta) = open_root(dir)?;
    let mut entries = BTreeMap::new();
    entries.insert(Vec::new(), (SnapshotEntry::of(&meta), meta));
    record_tree(&root, &mut Vec::new(), dir, meta.dev, &mut entries)?;
    Ok(entries)
}

/// `%XX` for every byte outside printable ASCII, space and `%`.
fn escape(path: &[u8], out: &mut String) {
    for &byte in path {
        if byte.is_ascii_graphic() && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

fn unescape(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The workspace's changes as relative paths, and what each is now (`None` for deletions).
type WorkspaceChanges = Vec<(Rel, ChangeKind, EntryKind)>;

impl Snapshot {
    /// Records every path below `dir` (and `dir` itself), never following a symlink.
    pub fn take(dir: &Path) -> Result<Snapshot, CaptureError> {
        Ok(Snapshot {
            entries: record(dir)?
                .into_iter()
                .map(|(rel, (entry, _))| (rel, entry))
                .collect(),
        })
    }

    /// How many paths it records (the workspace directory itself included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `path`, relative to the workspace (empty for the workspace itself).
    pub fn get(&self, path: &Path) -> Option<&SnapshotEntry> {
        let rel: Rel = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name.as_bytes().to_vec()),
                _ => None,
            })
            .collect();
        self.entries.get(&rel)
    }

    /// The snapshot file: a header line, then per path
    /// `KIND MODE UID GID SIZE MTIME_NS CTIME_NS INODE PATH` (mode in octal, the path relative to
    /// the workspace with `%XX` escapes, `.` for the workspace itself).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut text = String::with_capacity(64 * (self.entries.len() + 1));
        text.push_str(SNAPSHOT_HEADER);
        text.push('\n');
        for (rel, e) in &self.entries {
            text.push_str(&format!(
                "{} {:o} {} {} {} {} {} {} ",
                e.kind.symbol(),
                e.mode,
                e.uid,
                e.gid,
                e.size,
                e.mtime_ns,
                e.ctime_ns,
                e.inode
            ));
            if rel.is_empty() {
                text.push('.');
            } else {
                escape(&rel.join(&b'/'), &mut text);
            }
            text.push('\n');
        }
        text.into_bytes()
    }

    /// Reads what [`Snapshot::to_bytes`] wrote.
    pub fn parse(bytes: &[u8]) -> Result<Snapshot, CaptureError> {
        let bad = |line, reason| CaptureError::Snapshot { line, reason };
        let text = std::str::from_utf8(bytes).map_err(|_| bad(1, "not UTF-8"))?;
        let mut lines = text.lines();
        if lines.next() != Some(SNAPSHOT_HEADER) {
            return Err(bad(1, "not a workspace snapshot of this version"));
        }
        let mut entries = BTreeMap::new();
        for (index, line) in lines.enumerate() {
            let number = index + 2;
            let fields: Vec<&str> = line.split(' ').collect();
            let [kind, mode, uid, gid, size, mtime, ctime, inode, path] = fields[..] else {
                return Err(bad(number, "expected 9 fields"));
            };
            let field = |reason| bad(number, reason);
            let entry = SnapshotEntry {
                kind: EntryKind::from_symbol(kind).ok_or_else(|| field("unknown kind"))?,
                mode: u32::from_str_radix(mode, 8).map_err(|_| field("bad mode"))?,
                uid: uid.parse().map_err(|_| field("bad uid"))?,
                gid: gid.parse().map_err(|_| field("bad gid"))?,
                size: size.parse().map_err(|_| field("bad size"))?,
                mtime_ns: mtime.parse().map_err(|_| field("bad mtime"))?,
                ctime_ns: ctime.parse().map_err(|_| field("bad ctime"))?,
                inode: inode.parse().map_err(|_| field("bad inode"))?,
            };
            let rel: Rel = if path == "." {
                Vec::new()
            } else {
                let raw = unescape(path).ok_or_else(|| field("bad path escape"))?;
                let rel: Rel = raw.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
                if rel
                    .iter()
                    .any(|c| c.is_empty() || c == b"." || c == b".." || c.contains(&0))
                {
                    return Err(field("bad path"));
                }
                rel
            };
            entries.insert(rel, entry);
        }
        Ok(Snapshot { entries })
    }

    /// Compares with the workspace now: relative paths, in path order.
    fn diff(&self, now: &BTreeMap<Rel, (SnapshotEntry, Meta)>) -> WorkspaceChanges {
        let mut changes = Vec::new();
        for (rel, (entry, _)) in now {
            match self.entries.get(rel) {
                None => changes.push((rel.clone(), ChangeKind::Added, entry.kind)),
                Some(old) if !old.unchanged(entry) => {
                    // The workspace directory itself is listed only when its own metadata
                    // changed, as any directory.
                    changes.push((rel.clone(), ChangeKind::Changed, entry.kind));
                }
                Some(_) => {}
            }
        }
        for (rel, old) in &self.entries {
            if now.contains_key(rel) {
                continue;
            }
            // Only the topmost deleted path: its parent is a directory now.
            let parent = &rel[..rel.len().saturating_sub(1)];
            if now
                .get(parent)
                .is_some_and(|(entry, _)| entry.kind == EntryKind::Directory)
            {
                changes.push((rel.clone(), ChangeKind::Deleted, old.kind));
            }
        }
        changes.sort();
        changes
    }

    /// What changed in `dir` (the workspace on the host) since the snapshot, in path order,
    /// with paths as the sandbox sees them: below `guest_path`, where the workspace is bound.
    /// A file is `Changed` when its inode, size, mtime, ctime, mode or owner moved; a directory
    /// when its inode, mode or owner did; a deleted directory is listed, not what it held.
    pub fn changes(&self, dir: &Path, guest_path: &Path) -> Result<Vec<Change>, CaptureError> {
        let guest = absolute_components(guest_path).ok_or_else(|| CaptureError::GuestPath {
            path: guest_path.to_owned(),
        })?;
        let now = record(dir)?;
        Ok(self
            .diff(&now)
            .into_iter()
            .map(|(rel, kind, entry)| {
                let mut path = guest.clone();
                path.extend(rel);
                Change {
                    path: sandbox_path(&path),
                    kind,
                    entry,
                }
            })
            .collect())
    }
}

/// Opens the directory `rel` below `root` without following any symlink on the way.
fn open_beneath(root: &OwnedFd, rel: &[Vec<u8>], host: &Path) -> Result<OwnedFd, CaptureError> {
    let joined = crate::names::join(rel);
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH
        | ResolveFlags::NO_SYMLINKS
        | ResolveFlags::NO_MAGICLINKS
        | ResolveFlags::NO_XDEV;
    match rfs::openat2(root, joined.as_slice(), flags, Mode::empty(), resolve) {
        Ok(fd) => Ok(fd),
        Err(Errno::LOOP | Errno::NOTDIR | Errno::NOENT | Errno::XDEV | Errno::AGAIN) => {
            Err(CaptureError::Changed {
                path: host.to_owned(),
            })
        }
        Err(errno) => Err(io_error(host, "open directory")(errno)),
    }
}

/// Writes what changed in the workspace `dir` since `snapshot` as an OCI layer tar to `out`,
/// placed under `guest_path` (where the workspace is bound in the sandbox): added and changed
/// entries with the directories on the way to them (the workspace directory included, with its
/// metadata of now), and a whiteout for each deleted path. The exclusions and owners of
/// `options` apply ([`Owners::Fixed`] suits host files); overlay xattrs mean nothing here and
/// are dropped like any private xattr.
pub fn write_workspace_layer(
    dir: &Path,
    snapshot: &Snapshot,
    guest_path: &Path,
    out: impl Write,
    options: &CaptureOptions,
) -> Result<LayerSummary, CaptureError> {
    let guest = absolute_components(guest_path).ok_or_else(|| CaptureError::GuestPath {
        path: guest_path.to_owned(),
    })?;
    let excluded = excluded_paths(&options.exclude);
    let (root, _) = open_root(dir)?;
    let now = record(dir)?;
    let changes = snapshot.diff(&now);
    // Path → whether it is a whiteout (true) or an entry of the workspace now (false).
    let mut plan: BTreeMap<Rel, bool> = BTreeMap::new();
    for (rel, kind, _) in &changes {
        let mut full = guest.clone();
        full.extend(rel.iter().cloned());
        if is_excluded(&excluded, &full) {
            continue;
        }
        for depth in 0..rel.len() {
            plan.entry(rel[..depth].to_vec()).or_insert(false);
        }
        plan.insert(rel.clone(), *kind == ChangeKind::Deleted);
    }
    let mut tar = TarOut::new(out, options);
    for (rel, whiteout) in plan {
        let (parent_rel, name) = match rel.split_last() {
            Some((name, parent)) => (parent.to_vec(), name.clone()),
            None => (Vec::new(), Vec::new()),
        };
        let host = join_rel(dir, &rel);
        if whiteout {
            let mtime = now.get(&parent_rel).map_or(0, |(_, meta)| meta.mtime);
            tar.whiteout(&tar_name(&guest, &parent_rel), &name, mtime)?;
            continue;
        }
        let Some((_, recorded)) = now.get(&rel) else {
            continue;
        };
        let mut full = guest.clone();
        full.extend(rel.iter().cloned());
        if rel.is_empty() {
            let xattrs = read_xattrs(&root, &host)?;
            tar.node(
                &tar_name(&guest, &[]),
                sandbox_path(&full),
                &host,
                recorded,
                &xattrs,
                Content::None,
            )?;
            continue;
        }
        let parent = open_beneath(&root, &parent_rel, &host)?;
        let Some(meta) = stat_at(&parent, &name, &host)? else {
            return Err(CaptureError::Changed { path: host });
        };
        if (meta.ino, meta.mode) != (recorded.ino, recorded.mode) {
            return Err(CaptureError::Changed { path: host });
        }
        let xattrs = match meta.kind() {
            EntryKind::Directory => {
                let fd = open_dir_checked(&parent, &name, &meta, meta.dev, &host)?;
                read_xattrs(&fd, &host)?
            }
            EntryKind::File => {
                let (fd, _) = open_file_checked(&parent, &name, &meta, &host)?;
                read_xattrs(&fd, &host)?
            }
            _ => Vec::new(),
        };
        let (content, meta) = content_of(&parent, &name, &meta, &host)?;
        tar.node(
            &tar_name(&guest, &rel),
            sandbox_path(&full),
            &host,
            &meta,
            &xattrs,
            content,
        )?;
    }
    tar.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap values known to be valid")]
mod tests {
    use super::*;

    #[test]
    fn paths_escape_and_unescape() {
        for raw in [
            &b"plain/name"[..],
            b"with space",
            b"100%",
            b"new\nline",
            b"\xff\x00x",
        ] {
            let mut text = String::new();
            escape(raw, &mut text);
            assert!(!text.contains([' ', '\n']), "{text}");
            assert_eq!(unescape(&text).unwrap(), raw);
        }
        assert_eq!(unescape("%4"), None);
        assert_eq!(unescape("%zz"), None);
    }

    #[test]
    fn exclusions_match_whole_components() {
        let excluded = excluded_paths(&[PathBuf::from("/srv/cache")]);
        let rel = |s: &str| -> Rel { s.split('/').map(|c| c.as_bytes().to_vec()).collect() };
        assert!(is_excluded(&excluded, &rel("run/hardbox")));
        assert!(is_excluded(
            &excluded,
            &rel("run/hardbox/ca-certificates.crt")
        ));
        assert!(!is_excluded(&excluded, &rel("run/hardboxes")));
        assert!(!is_excluded(&excluded, &rel("run")));
        assert!(is_excluded(&excluded, &rel("srv/cache/x")));
        assert!(excluded_paths(&[PathBuf::from("/"), PathBuf::from("relative")]).len() == 1);
    }

    #[test]
    fn snapshot_file_round_trips_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub dir")).unwrap();
        std::fs::write(dir.path().join("sub dir/f%1"), "x").unwrap();
        std::os::unix::fs::symlink("target", dir.path().join("link")).unwrap();
        let snapshot = Snapshot::take(dir.path()).unwrap();
        assert_eq!(snapshot.len(), 4);
        let parsed = Snapshot::parse(&snapshot.to_bytes()).unwrap();
        assert_eq!(parsed, snapshot);
        assert_eq!(
            parsed
                .get(Path::new("sub dir/f%1"))
                .map(|e| (e.kind, e.size)),
            Some((EntryKind::File, 1))
        );
        for (bad, line) in [
            (&b"other header\n"[..], 1),
            (b"hardbox-workspace-snapshot 1\nf 644 0 0 1 2 3\n", 2),
            (b"hardbox-workspace-snapshot 1\nq 644 0 0 1 2 3 4 a\n", 2),
            (
                b"hardbox-workspace-snapshot 1\nf 644 0 0 1 2 3 4 a/../b\n",
                2,
            ),
        ] {
            match Snapshot::parse(bad) {
                Err(CaptureError::Snapshot { line: got, .. }) => assert_eq!(got, line),
                other => panic!("{other:?}"),
            }
        }
    }
}
