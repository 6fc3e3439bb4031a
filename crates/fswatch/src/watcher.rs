//! The watcher thread: inotify watches per directory, and the translation of inotify's events
//! into file events of the sandbox's view (see the crate docs for what it guarantees).

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use events::{
    Event, Recorded, Recorder, Severity, ATTR_ERROR_TYPE, ATTR_FILE_IS_DIRECTORY, ATTR_FILE_PATH,
    ATTR_FILE_PREVIOUS_PATH, ATTR_SENSOR_NAME, FILE_CREATE, FILE_DELETE, FILE_RENAME, FILE_WRITE,
    SENSOR_LOSS,
};
use rustix::event::{PollFd, PollFlags};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::{Watch, WatchStats};

/// What every directory's watch asks for.
fn watch_mask() -> WatchFlags {
    WatchFlags::CREATE
        | WatchFlags::DELETE
        | WatchFlags::CLOSE_WRITE
        | WatchFlags::MOVED_FROM
        | WatchFlags::MOVED_TO
        | WatchFlags::ONLYDIR
        | WatchFlags::EXCL_UNLINK
}

/// How long an `IN_MOVED_FROM` waits for its `IN_MOVED_TO` when the queue is empty: the
/// kernel queues the pair in one rename, but a read may fall between the two.
const MOVE_PAIR_WAIT_NS: i64 = 20_000_000;

/// Room for many events per read (each is 16 bytes plus its name).
const READ_BUFFER: usize = 64 * 1024;

struct Root {
    guest: PathBuf,
    host: PathBuf,
    overlay_upper: bool,
    fd: OwnedFd,
}

/// A watched directory: its root and its path below it.
#[derive(Clone)]
struct Dir {
    root: usize,
    rel: PathBuf,
}

/// One inotify event, copied out of the read buffer.
struct Raw {
    wd: i32,
    flags: ReadFlags,
    cookie: u32,
    name: Option<OsString>,
}

/// An `IN_MOVED_FROM` waiting for its `IN_MOVED_TO`.
struct MovedFrom {
    cookie: u32,
    root: usize,
    rel: PathBuf,
    is_dir: bool,
}

pub(crate) struct Watcher {
    inotify: OwnedFd,
    roots: Vec<Root>,
    dirs: HashMap<i32, Dir>,
    /// Entries a scan of a new directory reported, whose `IN_CREATE` may still be queued.
    scanned: HashSet<(usize, PathBuf)>,
    /// Known whiteouts of overlay roots (their removal is not a deletion).
    whiteouts: HashSet<(usize, PathBuf)>,
    moved_from: Option<MovedFrom>,
    recorder: Recorder,
    stats: WatchStats,
}

fn os_name(name: &std::ffi::CStr) -> OsString {
    OsStr::from_bytes(name.to_bytes()).to_os_string()
}

impl Watcher {
    pub(crate) fn new(watches: Vec<Watch>, recorder: Recorder) -> io::Result<Watcher> {
        let inotify = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        let mut roots = Vec::with_capacity(watches.len());
        for watch in watches {
            let fd = rustix::fs::open(
                &watch.host,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| with_path(e, "open", &watch.host))?;
            roots.push(Root {
                guest: watch.guest,
                host: watch.host,
                overlay_upper: watch.overlay_upper,
                fd,
            });
        }
        let mut watcher = Watcher {
            inotify,
            roots,
            dirs: HashMap::new(),
            scanned: HashSet::new(),
            whiteouts: HashSet::new(),
            moved_from: None,
            recorder,
            stats: WatchStats::default(),
        };
        for root in 0..watcher.roots.len() {
            // The root itself must be watched; a subdirectory that cannot be is a loss event.
            let fd = watcher.open_dir(root, Path::new(""))?;
            watcher
                .add_watch(root, Path::new(""), &fd)
                .map_err(|e| with_path(e, "watch", &watcher.roots[root].host))?;
            watcher.walk(root, PathBuf::new(), fd, false);
        }
        Ok(watcher)
    }

    /// Reads and translates events until `stop` becomes readable (its write end closed), then
    /// reads the queue empty and returns.
    pub(crate) fn run(mut self, stop: &OwnedFd) -> WatchStats {
        let mut buffer = vec![MaybeUninit::<u8>::uninit(); READ_BUFFER];
        loop {
            let waiting = self.moved_from.is_some();
            let timeout = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: MOVE_PAIR_WAIT_NS,
            };
            let mut fds = [
                PollFd::new(&self.inotify, PollFlags::IN),
                PollFd::new(stop, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, waiting.then_some(&timeout)) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => {
                    self.failed("inotify_poll_failed", e);
                    break;
                }
            }
            let stopping = !fds[1].revents().is_empty();
            let readable = !fds[0].revents().is_empty();
            if readable || stopping {
                match self.read_all(&mut buffer) {
                    Ok(()) => {}
                    Err(e) => {
                        self.failed("inotify_read_failed", e);
                        break;
                    }
                }
            } else if waiting {
                // Timed out: the move's other half is not coming; it left the tree.
                self.flush_moved_from();
            }
            if stopping {
                break;
            }
        }
        self.flush_moved_from();
        self.stats
    }

    /// Reads and handles events until the queue is empty.
    fn read_all(&mut self, buffer: &mut [MaybeUninit<u8>]) -> Result<(), Errno> {
        loop {
            let batch = match self.read_batch(buffer) {
                Ok(batch) => batch,
                Err(Errno::AGAIN) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e),
            };
            let mut events = batch.into_iter().peekable();
            while let Some(event) = events.next() {
                let next = events.peek();
                if self.handle(&event, next) {
                    events.next();
                }
            }
        }
    }

    /// One `read` worth of events.
    fn read_batch(&self, buffer: &mut [MaybeUninit<u8>]) -> Result<Vec<Raw>, Errno> {
        let mut reader = inotify::Reader::new(&self.inotify, buffer);
        let mut batch = Vec::new();
        loop {
            let event = reader.next()?;
            batch.push(Raw {
                wd: event.wd(),
                flags: event.events(),
                cookie: event.cookie(),
                name: event.file_name().map(os_name),
            });
            if reader.is_buffer_empty() {
                return Ok(batch);
            }
        }
    }

    /// Handles `event`; returns true when it also consumed `next`.
    fn handle(&mut self, event: &Raw, next: Option<&Raw>) -> bool {
        if event.flags.contains(ReadFlags::QUEUE_OVERFLOW) {
            self.flush_moved_from();
            self.overflowed();
            return false;
        }
        if event.flags.contains(ReadFlags::IGNORED) {
            self.dirs.remove(&event.wd);
            return false;
        }
        let (Some(dir), Some(name)) = (self.dirs.get(&event.wd).cloned(), &event.name) else {
            // An event of a watch already dropped, or about the directory itself (its parent's
            // watch reports it).
            return false;
        };
        let rel = dir.rel.join(name);
        let root = dir.root;
        let is_dir = event.flags.contains(ReadFlags::ISDIR);
        let flags = event.flags;
        if !(flags.contains(ReadFlags::MOVED_TO)
            && self
                .moved_from
                .as_ref()
                .is_some_and(|m| m.cookie == event.cookie))
        {
            self.flush_moved_from();
        }
        if flags.contains(ReadFlags::CREATE) {
            if self.scanned.remove(&(root, rel.clone())) {
                return false;
            }
            self.appeared(root, rel, is_dir);
        } else if flags.contains(ReadFlags::CLOSE_WRITE) {
            if !is_dir {
                self.emit(FILE_WRITE, root, &rel, false, None);
            }
        } else if flags.contains(ReadFlags::DELETE) {
            self.scanned.remove(&(root, rel.clone()));
            if !self.whiteouts.remove(&(root, rel.clone())) {
                self.emit(FILE_DELETE, root, &rel, is_dir, None);
            }
        } else if flags.contains(ReadFlags::MOVED_FROM) {
            self.scanned.remove(&(root, rel.clone()));
            self.moved_from = Some(MovedFrom {
                cookie: event.cookie,
                root,
                rel,
                is_dir,
            });
        } else if flags.contains(ReadFlags::MOVED_TO) {
            self.scanned.remove(&(root, rel.clone()));
            match self.moved_from.take() {
                Some(from) if from.cookie == event.cookie && from.root == root => {
                    self.renamed(root, &from.rel, rel, is_dir);
                }
                Some(from) if from.cookie == event.cookie => {
                    // Between two watched trees: out of one, into the other.
                    self.moved_from = Some(from);
                    self.flush_moved_from();
                    self.appeared(root, rel, is_dir);
                }
                other => {
                    self.moved_from = other;
                    return self.moved_in(root, rel, is_dir, event, next);
                }
            }
        }
        false
    }

    /// An entry created at `rel` (or moved in from outside every watched tree).
    fn appeared(&mut self, root: usize, rel: PathBuf, is_dir: bool) {
        if !is_dir && self.is_whiteout(root, &rel) {
            self.whiteouts.insert((root, rel.clone()));
            self.emit(FILE_DELETE, root, &rel, false, None);
            return;
        }
        self.emit(FILE_CREATE, root, &rel, is_dir, None);
        if is_dir {
            self.watch_new_dir(root, rel, true);
        }
    }

    /// An unpaired `IN_MOVED_TO`. In an overlay upper directory it comes from the work
    /// directory: followed by an `IN_MOVED_FROM` of the same name it is an exchange (a whiteout
    /// put in place of a deleted entry, or a new entry put in place of a whiteout), else a
    /// copy-up of an entry the sandbox already had. Returns true when it consumed `next`.
    fn moved_in(
        &mut self,
        root: usize,
        rel: PathBuf,
        is_dir: bool,
        event: &Raw,
        next: Option<&Raw>,
    ) -> bool {
        if !self.roots[root].overlay_upper {
            self.appeared(root, rel, is_dir);
            return false;
        }
        let exchange = next.is_some_and(|n| {
            n.flags.contains(ReadFlags::MOVED_FROM) && n.wd == event.wd && n.name == event.name
        });
        if exchange {
            let replaced_whiteout = self.whiteouts.remove(&(root, rel.clone()));
            if !is_dir && self.is_whiteout(root, &rel) {
                self.whiteouts.insert((root, rel.clone()));
                self.emit(FILE_DELETE, root, &rel, false, None);
            } else if replaced_whiteout {
                self.emit(FILE_CREATE, root, &rel, is_dir, None);
                if is_dir {
                    self.watch_new_dir(root, rel, true);
                }
            } else {
                // A real entry replaced another one: the sandbox sees the new one appear.
                self.emit(FILE_CREATE, root, &rel, is_dir, None);
                if is_dir {
                    self.watch_new_dir(root, rel, true);
                }
            }
            return true;
        }
        if !is_dir && self.is_whiteout(root, &rel) {
            self.whiteouts.insert((root, rel.clone()));
            self.emit(FILE_DELETE, root, &rel, false, None);
        } else if is_dir {
            // A copied-up directory: watch it; what it holds is new.
            self.watch_new_dir(root, rel, true);
        }
        false
    }

    /// A move inside one tree.
    fn renamed(&mut self, root: usize, from: &Path, to: PathBuf, is_dir: bool) {
        self.emit(FILE_RENAME, root, &to, is_dir, Some(from));
        if is_dir {
            for dir in self.dirs.values_mut() {
                if dir.root == root {
                    if let Ok(rest) = dir.rel.strip_prefix(from) {
                        dir.rel = to.join(rest);
                    }
                }
            }
            for set in [&mut self.scanned, &mut self.whiteouts] {
                let moved: Vec<_> = set
                    .iter()
                    .filter(|(r, p)| *r == root && p.starts_with(from))
                    .cloned()
                    .collect();
                for (r, p) in moved {
                    set.remove(&(r, p.clone()));
                    if let Ok(rest) = p.strip_prefix(from) {
                        set.insert((r, to.join(rest)));
                    }
                }
            }
        } else if self.whiteouts.remove(&(root, from.to_path_buf())) {
            self.whiteouts.insert((root, to));
        }
    }

    /// Reports a pending `IN_MOVED_FROM` whose `IN_MOVED_TO` did not come: the entry left the
    /// tree. In an overlay upper directory, an entry still present at the path was exchanged
    /// (see [`Watcher::moved_in`]) and is not reported.
    fn flush_moved_from(&mut self) {
        let Some(from) = self.moved_from.take() else {
            return;
        };
        if from.is_dir {
            let gone: Vec<i32> = self
                .dirs
                .iter()
                .filter(|(_, d)| d.root == from.root && d.rel.starts_with(&from.rel))
                .map(|(wd, _)| *wd)
                .collect();
            for wd in gone {
                self.dirs.remove(&wd);
                let _ = inotify::remove_watch(&self.inotify, wd);
            }
        }
        let was_whiteout = self.whiteouts.remove(&(from.root, from.rel.clone()));
        if self.roots[from.root].overlay_upper
            && (was_whiteout || self.exists(from.root, &from.rel))
        {
            return;
        }
        self.emit(FILE_DELETE, from.root, &from.rel, from.is_dir, None);
    }

    /// inotify dropped events: say so, and watch directories created meanwhile.
    fn overflowed(&mut self) {
        self.stats.overflows += 1;
        self.stats.lost += 1;
        let event = Event::new(SENSOR_LOSS)
            .severity(Severity::Warn)
            .with(ATTR_SENSOR_NAME, self.recorder.sensor())
            .with(ATTR_ERROR_TYPE, "inotify_queue_overflow");
        self.record(event);
        self.scanned.clear();
        for root in 0..self.roots.len() {
            match self.open_dir(root, Path::new("")) {
                Ok(fd) => self.walk(root, PathBuf::new(), fd, false),
                Err(e) => self.unwatched(root, Path::new(""), e),
            }
        }
    }

    /// Watches a directory that appeared at `rel` and reports what it holds as created when
    /// `report`.
    fn watch_new_dir(&mut self, root: usize, rel: PathBuf, report: bool) {
        match self.open_dir(root, &rel) {
            Ok(fd) => self.walk(root, rel, fd, report),
            // Gone or replaced already: its removal is (or will be) reported on its own.
            Err(e) if is_vanished(&e) => {}
            Err(e) => self.unwatched(root, &rel, e),
        }
    }

    /// Watches the directory `fd` (at `rel`) and every directory below it, reporting each
    /// entry as created when `report`, and noting whiteouts.
    fn walk(&mut self, root: usize, rel: PathBuf, fd: OwnedFd, report: bool) {
        let mut stack = vec![(rel, Some(fd))];
        while let Some((rel, fd)) = stack.pop() {
            let fd = match fd {
                Some(fd) => fd,
                None => match self.open_dir(root, &rel) {
                    Ok(fd) => fd,
                    Err(e) if is_vanished(&e) => continue,
                    Err(e) => {
                        self.unwatched(root, &rel, e);
                        continue;
                    }
                },
            };
            if let Err(e) = self.add_watch(root, &rel, &fd) {
                if !is_vanished(&e) {
                    self.unwatched(root, &rel, e);
                }
                continue;
            }
            let entries = match list(&fd) {
                Ok(entries) => entries,
                Err(e) if is_vanished(&e) => continue,
                Err(e) => {
                    self.unwatched(root, &rel, e);
                    continue;
                }
            };
            let mut subdirs = Vec::new();
            for (name, file_type) in entries {
                let child = rel.join(&name);
                let file_type = match file_type {
                    FileType::Unknown => {
                        match rustix::fs::statat(&fd, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
                            Ok(stat) => FileType::from_raw_mode(stat.st_mode),
                            Err(_) => continue,
                        }
                    }
                    known => known,
                };
                if file_type == FileType::Directory {
                    if report {
                        self.scanned.insert((root, child.clone()));
                        self.emit(FILE_CREATE, root, &child, true, None);
                    }
                    subdirs.push(child);
                } else if file_type == FileType::CharacterDevice
                    && self.roots[root].overlay_upper
                    && is_whiteout_at(&fd, &name)
                {
                    self.whiteouts.insert((root, child.clone()));
                    if report {
                        self.scanned.insert((root, child.clone()));
                        self.emit(FILE_DELETE, root, &child, false, None);
                    }
                } else if report {
                    self.scanned.insert((root, child.clone()));
                    self.emit(FILE_CREATE, root, &child, false, None);
                }
            }
            // Depth first, in name order.
            stack.extend(subdirs.into_iter().rev().map(|rel| (rel, None)));
        }
    }

    fn add_watch(&mut self, root: usize, rel: &Path, fd: &OwnedFd) -> io::Result<()> {
        // Through the descriptor, so the directory watched is the one opened beneath the root.
        let path = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
        let wd = inotify::add_watch(&self.inotify, path, watch_mask())?;
        self.dirs.insert(
            wd,
            Dir {
                root,
                rel: rel.to_path_buf(),
            },
        );
        Ok(())
    }

    /// Opens the directory at `rel` beneath its root without following any symlink.
    fn open_dir(&self, root: usize, rel: &Path) -> io::Result<OwnedFd> {
        let path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        rustix::fs::openat2(
            &self.roots[root].fd,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(io::Error::from)
    }

    /// Whether the entry at `rel` is an overlay whiteout (only in overlay roots).
    fn is_whiteout(&self, root: usize, rel: &Path) -> bool {
        if !self.roots[root].overlay_upper {
            return false;
        }
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return false;
        };
        match self.open_dir(root, parent) {
            Ok(fd) => is_whiteout_at(&fd, name),
            Err(_) => false,
        }
    }

    /// Whether something is at `rel` now.
    fn exists(&self, root: usize, rel: &Path) -> bool {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return false;
        };
        match self.open_dir(root, parent) {
            Ok(fd) => rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok(),
            Err(_) => false,
        }
    }

    fn guest_path(&self, root: usize, rel: &Path) -> String {
        let guest = &self.roots[root].guest;
        let path = if rel.as_os_str().is_empty() {
            guest.clone()
        } else {
            guest.join(rel)
        };
        path.to_string_lossy().into_owned()
    }

    fn emit(&mut self, name: &str, root: usize, rel: &Path, is_dir: bool, from: Option<&Path>) {
        let mut event = Event::new(name)
            .with(ATTR_FILE_PATH, self.guest_path(root, rel))
            .with(ATTR_FILE_IS_DIRECTORY, is_dir);
        if let Some(from) = from {
            event = event.with(ATTR_FILE_PREVIOUS_PATH, self.guest_path(root, from));
        }
        if self.record(event) {
            self.stats.events += 1;
        }
    }

    fn record(&mut self, event: Event) -> bool {
        match self.recorder.record(event) {
            Recorded::Queued => true,
            Recorded::Dropped => {
                self.stats.lost += 1;
                false
            }
        }
    }

    /// A directory that could not be watched: its changes will be missed.
    fn unwatched(&mut self, root: usize, rel: &Path, err: io::Error) {
        self.stats.lost += 1;
        let error_type = if err.raw_os_error() == Some(Errno::NOSPC.raw_os_error()) {
            "inotify_watch_limit"
        } else {
            "inotify_watch_failed"
        };
        let event = Event::new(SENSOR_LOSS)
            .severity(Severity::Error)
            .with(ATTR_SENSOR_NAME, self.recorder.sensor())
            .with(ATTR_ERROR_TYPE, error_type)
            .with(ATTR_FILE_PATH, self.guest_path(root, rel))
            .with("exception.message", err.to_string());
        self.record(event);
    }

    /// The watcher cannot go on (inotify itself failed).
    fn failed(&mut self, error_type: &'static str, err: Errno) {
        self.stats.lost += 1;
        let event = Event::new(SENSOR_LOSS)
            .severity(Severity::Error)
            .with(ATTR_SENSOR_NAME, self.recorder.sensor())
            .with(ATTR_ERROR_TYPE, error_type)
            .with("exception.message", io::Error::from(err).to_string());
        self.record(event);
    }
}

/// The entries of a directory (without `.` and `..`), sorted by name.
fn list(fd: &OwnedFd) -> io::Result<Vec<(OsString, FileType)>> {
    let mut entries = Vec::new();
    for entry in rustix::fs::Dir::read_from(fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        entries.push((OsStr::from_bytes(name).to_os_string(), entry.file_type()));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// A character device 0:0, which overlayfs uses to hide a lower entry.
fn is_whiteout_at(dir: &OwnedFd, name: &OsStr) -> bool {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => {
            FileType::from_raw_mode(stat.st_mode) == FileType::CharacterDevice && stat.st_rdev == 0
        }
        Err(_) => false,
    }
}

/// The directory was removed or replaced (by a non-directory or a symlink) meanwhile.
fn is_vanished(err: &io::Error) -> bool {
    [Errno::NOENT, Errno::NOTDIR, Errno::LOOP, Errno::XDEV]
        .iter()
        .any(|e| err.raw_os_error() == Some(e.raw_os_error()))
}

fn with_path(err: impl Into<io::Error>, action: &str, path: &Path) -> io::Error {
    let err: io::Error = err.into();
    io::Error::new(
        err.kind(),
        format!("failed to {action} {}: {err}", path.display()),
    )
}
