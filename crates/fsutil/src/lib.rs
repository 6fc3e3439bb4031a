//! Filesystem helpers that make writes crash-safe and commands safe to run concurrently.
//!
//! Guarantees:
//! - [`AtomicFile`] and [`write_atomic`] never leave a half-written file at the final path: data
//!   goes to a temporary file in a staging directory on the same filesystem, is fsynced, renamed
//!   into place, and the parent directory is fsynced. A dropped, uncommitted file is removed.
//! - [`Lock`] is an advisory `flock(2)` lock released when the value is dropped (or the process
//!   dies, so a killed command never leaves a stale lock behind).
//!
//! Every error names the path it is about.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use fs_err as fs;
use rustix::fs::FlockOperation;

/// A name for a temporary file that no other process or thread will pick at the same time.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}{}-{nanos:08x}-{n}", std::process::id())
}

/// fsyncs a directory so that renames and creations inside it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?
        .sync_all()
        .map_err(|e| with_path(e, "failed to sync directory", dir))
}

/// Adds a path and an action to an I/O error's message, keeping its kind.
pub fn with_path(err: io::Error, action: &str, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{action} {}: {err}", path.display()))
}

/// Writes `bytes` to `path` atomically; the temporary file lives next to `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_of(path)?;
    let mut file = AtomicFile::create(dir, path)?;
    file.write_all(bytes)
        .map_err(|e| with_path(e, "failed to write", file.temp_path()))?;
    file.commit()
}

fn parent_of(path: &Path) -> io::Result<&Path> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Ok(p),
        _ => Ok(Path::new(".")),
    }
}

/// A file being written that becomes visible at its final path only on [`AtomicFile::commit`].
#[derive(Debug)]
pub struct AtomicFile {
    file: Option<fs::File>,
    temp: PathBuf,
    target: PathBuf,
}

impl AtomicFile {
    /// Starts a file that will be renamed to `target`; the temporary file is created in
    /// `staging_dir`, which must be on the same filesystem as `target`.
    pub fn create(staging_dir: &Path, target: &Path) -> io::Result<AtomicFile> {
        let temp = staging_dir.join(unique_name(".tmp-"));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        Ok(AtomicFile {
            file: Some(file),
            temp,
            target: target.to_owned(),
        })
    }

    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Changes where the file will land (for content-addressed writes whose name is known only
    /// once all bytes are written).
    pub fn set_target(&mut self, target: PathBuf) {
        self.target = target;
    }

    /// Flushes, fsyncs and renames the file into place, then fsyncs the target's directory.
    pub fn commit(mut self) -> io::Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("atomic file already committed"))?;
        file.sync_all()
            .map_err(|e| with_path(e, "failed to sync", &self.temp))?;
        drop(file);
        fs::rename(&self.temp, &self.target)?;
        sync_dir(parent_of(&self.target)?)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("atomic file already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// A temporary file or directory that is removed when dropped, unless [`TempPath::keep`] says it
/// was renamed into place: a failed command leaves no half-written output behind.
#[derive(Debug)]
pub struct TempPath {
    path: PathBuf,
    armed: bool,
}

impl TempPath {
    /// Takes charge of `path` (which need not exist yet).
    pub fn new(path: PathBuf) -> TempPath {
        TempPath { path, armed: true }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path was renamed into place: leave it alone.
    pub fn keep(&mut self) {
        self.armed = false;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.is_dir() => {
                let _ = std::fs::remove_dir_all(&self.path);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&self.path);
            }
            Err(_) => {}
        }
    }
}

fn open_lock_file(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// How a [`Lock`] is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders at once (readers, or writers that only add content-addressed data).
    Shared,
    /// One holder, no shared holders.
    Exclusive,
}

/// An advisory lock on a file, held until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: fs::File,
}

impl Lock {
    /// Blocks until the lock on `path` (created if missing) is held in `mode`.
    pub fn acquire(path: &Path, mode: LockMode) -> io::Result<Lock> {
        let file = open_lock_file(path)?;
        let op = match mode {
            LockMode::Shared => FlockOperation::LockShared,
            LockMode::Exclusive => FlockOperation::LockExclusive,
        };
        loop {
            match rustix::fs::flock(&file, op) {
                Ok(()) => return Ok(Lock { _file: file }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(with_path(e.into(), "failed to lock", path)),
            }
        }
    }

    /// Takes the lock only if it is free right now.
    pub fn try_acquire(path: &Path, mode: LockMode) -> io::Result<Option<Lock>> {
        let file = open_lock_file(path)?;
        let op = match mode {
            LockMode::Shared => FlockOperation::NonBlockingLockShared,
            LockMode::Exclusive => FlockOperation::NonBlockingLockExclusive,
        };
        match rustix::fs::flock(&file, op) {
            Ok(()) => Ok(Some(Lock { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(with_path(e.into(), "failed to lock", path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_content_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["index.json"]);
    }

    #[test]
    fn dropped_atomic_file_is_removed_and_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("blob");
        let mut f = AtomicFile::create(dir.path(), &target).unwrap();
        f.write_all(b"partial").unwrap();
        let temp = f.temp_path().to_owned();
        drop(f);
        assert!(!temp.exists());
        assert!(!target.exists());
    }

    #[test]
    fn exclusive_lock_excludes_others_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = Lock::acquire(&path, LockMode::Exclusive).unwrap();
        assert!(Lock::try_acquire(&path, LockMode::Shared)
            .unwrap()
            .is_none());
        drop(held);
        let a = Lock::try_acquire(&path, LockMode::Shared).unwrap();
        let b = Lock::try_acquire(&path, LockMode::Shared).unwrap();
        assert!(a.is_some() && b.is_some());
        assert!(Lock::try_acquire(&path, LockMode::Exclusive)
            .unwrap()
            .is_none());
    }

    #[test]
    fn temp_path_removes_files_and_trees_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        let tree = dir.path().join("tree");
        let kept = dir.path().join("kept");
        std::fs::write(&file, b"x").unwrap();
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/c"), b"x").unwrap();
        std::fs::write(&kept, b"x").unwrap();
        drop(TempPath::new(file.clone()));
        drop(TempPath::new(tree.clone()));
        let mut keep = TempPath::new(kept.clone());
        keep.keep();
        drop(keep);
        assert!(!file.exists() && !tree.exists());
        assert!(kept.exists());
    }

    #[test]
    fn errors_name_the_path() {
        let err = write_atomic(Path::new("/nonexistent-dir/x/y"), b"").unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x"), "{err}");
    }
}
