//! File change events of a sandbox (docs/lifecycle.md, "Event feed"): what the sandbox created,
//! wrote, deleted and renamed in its writable layer and its workspace, as
//! [`events::FILE_CREATE`], [`events::FILE_WRITE`], [`events::FILE_DELETE`] and
//! [`events::FILE_RENAME`] events recorded through an [`events::Recorder`].
//!
//! [`spawn`] watches each [`Watch`]'s host directory tree with inotify (which works rootless)
//! on a thread of its own until [`WatcherHandle::stop`]. Every event carries
//! [`events::ATTR_FILE_PATH`] (the path as the sandbox sees it: the host directory is replaced
//! by [`Watch::guest`]) and [`events::ATTR_FILE_IS_DIRECTORY`]; a rename also carries
//! [`events::ATTR_FILE_PREVIOUS_PATH`].
//!
//! Guarantees:
//! - Recursive: every directory of the tree has a watch, added when the directory is created
//!   or moved in; the new directory is then read, and what appeared in it before its watch
//!   existed is reported as created (once: an inotify `IN_CREATE` for an entry the scan already
//!   reported is not reported again).
//! - A write is reported when a file opened for writing is closed (`IN_CLOSE_WRITE`), not per
//!   `write(2)`, so a busy file cannot flood the feed.
//! - A move inside the tree is one rename (inotify's `IN_MOVED_FROM` and `IN_MOVED_TO` paired
//!   by cookie); a move out of the tree is a delete, a move in a create.
//! - Loss is never silent: an inotify queue overflow is recorded as a
//!   [`events::SENSOR_LOSS`] event with [`events::ATTR_ERROR_TYPE`] `inotify_queue_overflow`
//!   (and the tree is walked again so directories created meanwhile get their watches); a
//!   directory that cannot be watched (the per-user watch limit,
//!   `/proc/sys/fs/inotify/max_user_watches`, or another error) is a loss event naming that
//!   directory's guest path with `inotify_watch_limit` or `inotify_watch_failed`. Events the
//!   recorder drops are counted by the spool, which reports them itself.
//! - Paths are never resolved through symbolic links: a directory is opened beneath its
//!   watch's root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` and watched through its
//!   descriptor, so a sandbox that swaps a directory for a symlink cannot make the watcher
//!   watch or list a host directory outside the tree.
//!
//! Overlay upper directories ([`Watch::overlay_upper`]): a whiteout (a character device 0:0)
//! appearing means the entry was deleted in the sandbox's view and is reported as a delete,
//! and removing a whiteout reports nothing. The overlay's work directory is a sibling of the
//! upper directory and is never watched, so overlayfs's own moves between the two (copy-up,
//! whiteout exchange) look like moves in and out: a move in that is not an exchange is a
//! copy-up of an entry the sandbox already had and is not reported as a create (a later close
//! after writing is reported as a write), and an exchange reports what is now at the path.
//!
//! Limits: a directory deleted or moved out is one event (its contents are not listed);
//! events are reported in the order inotify delivers them; whether a new entry is a whiteout
//! is looked at when its event is handled, so a whiteout replaced again before that is seen as
//! what replaced it.
#![forbid(unsafe_code)]

mod watcher;

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::thread::JoinHandle;

/// One directory tree to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// The directory on the host (the overlay's upper directory, or the workspace).
    pub host: PathBuf,
    /// Where the sandbox sees `host` (`/` for the upper directory of the root filesystem).
    pub guest: PathBuf,
    /// Whether `host` is an overlay upper directory (whiteouts are deletions).
    pub overlay_upper: bool,
}

/// What a watcher did, returned by [`WatcherHandle::stop`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// File events the recorder queued.
    pub events: u64,
    /// Events known to be lost: the recorder's drops of this watcher's events (the spool reports
    /// them too), plus one per inotify queue overflow and per directory left unwatched (how
    /// many events those cost is unknown).
    pub lost: u64,
    /// inotify queue overflows.
    pub overflows: u64,
}

/// A running watcher; [`WatcherHandle::stop`] ends it. Dropping the handle also stops it.
#[derive(Debug)]
pub struct WatcherHandle {
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<WatchStats>>,
}

impl WatcherHandle {
    /// Stops the watcher after it reported every change made before this call (inotify queues
    /// an event when the change happens, and the watcher reads the queue empty before it
    /// ends), and returns its totals.
    pub fn stop(mut self) -> WatchStats {
        self.finish()
    }

    fn finish(&mut self) -> WatchStats {
        // Closing the write end makes the pipe readable (end of file) for the watcher.
        drop(self.stop.take());
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(stats)) => stats,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => WatchStats::default(),
        }
    }
}

impl Drop for WatcherHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            drop(self.stop.take());
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Starts watching `watches` on a new thread, recording through `recorder`. The initial trees
/// are watched before this returns (changes made after it are reported; what exists already
/// is not). Fails when inotify or a watch root cannot be set up, naming the directory.
pub fn spawn(watches: Vec<Watch>, recorder: events::Recorder) -> io::Result<WatcherHandle> {
    let (stop_read, stop_write) = rustix::pipe::pipe_with(
        rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
    )?;
    let watcher = watcher::Watcher::new(watches, recorder)?;
    let thread = std::thread::Builder::new()
        .name("fswatch".to_owned())
        .spawn(move || watcher.run(&stop_read))?;
    Ok(WatcherHandle {
        stop: Some(stop_write),
        thread: Some(thread),
    })
}
