//! File-descriptor based operations below the root, none of which follow a symlink out of it.
//!
//! Directories are reached with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so a symlink
//! on the way (absolute or with `..`) resolves inside the root as it would under `chroot`. Final
//! components are only ever acted on with `*at` calls that do not follow them, and recursive
//! deletion walks directories by descriptor, opened with `O_NOFOLLOW`.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{self, AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

/// Opens the directory at `path` (components joined with `/`, `.` for the root) below `root`,
/// as an `O_PATH` descriptor. Symlinks on the way resolve inside the root.
pub fn resolve_dir(root: impl AsFd, path: &[u8]) -> Result<OwnedFd, Errno> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let mut attempts = 0;
    loop {
        match fs::openat2(root.as_fd(), path, flags, Mode::empty(), resolve) {
            // The kernel asks to retry when a rename raced with an in-root lookup.
            Err(Errno::AGAIN) if attempts < 16 => attempts += 1,
            other => return other,
        }
    }
}

/// Opens the directory `name` in `parent` for reading and changing its metadata, refusing to
/// follow a symlink.
pub fn open_dir(parent: impl AsFd, name: &[u8]) -> Result<OwnedFd, Errno> {
    fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `lstat` of `name` in `parent`; `None` when it does not exist.
pub fn stat(parent: impl AsFd, name: &[u8]) -> Result<Option<Stat>, Errno> {
    match fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn is_dir(stat: &Stat) -> bool {
    FileType::from_raw_mode(stat.st_mode) == FileType::Directory
}

/// Removes `name` from `parent` whatever it is; a directory is removed with everything in it,
/// never following symlinks. Nothing there is not an error.
pub fn remove(parent: impl AsFd, name: &[u8]) -> Result<(), Errno> {
    let parent = parent.as_fd();
    match fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        // unlink of a directory fails with EISDIR on Linux.
        Err(Errno::ISDIR) | Err(Errno::PERM) => {
            let Some(stat) = stat(parent, name)? else {
                return Ok(());
            };
            if !is_dir(&stat) {
                return fs::unlinkat(parent, name, AtFlags::empty());
            }
            let dir = open_dir(parent, name)?;
            remove_children(&dir, &mut |_| false)?;
            fs::unlinkat(parent, name, AtFlags::REMOVEDIR)
        }
        Err(e) => Err(e),
    }
}

/// Removes every child of `dir` (recursively) for which `keep`, given the child's name, says
/// false.
pub fn remove_children(dir: &OwnedFd, keep: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), Errno> {
    for name in list(dir)? {
        if !keep(&name) {
            remove(dir, &name)?;
        }
    }
    Ok(())
}

/// The names in `dir`, without `.` and `..`.
pub fn list(dir: &OwnedFd) -> Result<Vec<Vec<u8>>, Errno> {
    let mut names = Vec::new();
    let mut entries = Dir::read_from(dir)?;
    while let Some(entry) = entries.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// A `/proc/self/fd/N` path for an `O_PATH` descriptor of a non-symlink, used to change mode
/// and xattrs of device nodes and fifos without opening them (which could block or have side
/// effects). The descriptor pins the inode, so the path cannot be redirected.
pub fn proc_path(fd: &OwnedFd) -> CString {
    use std::os::fd::AsRawFd;
    // A decimal number never contains NUL.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// Opens `name` in `parent` as an `O_PATH` descriptor without following it.
pub fn open_path(parent: impl AsFd, name: &[u8]) -> Result<OwnedFd, Errno> {
    fs::openat(
        parent,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}
