//! The watcher against real directory trees (and, as root, a real overlay mount), read back
//! through a real spool.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use events::{
    Event, Reader, Spool, SpoolOptions, Value, ATTR_ERROR_TYPE, ATTR_FILE_IS_DIRECTORY,
    ATTR_FILE_PATH, ATTR_FILE_PREVIOUS_PATH, ATTR_SENSOR_NAME, FILE_CREATE, FILE_DELETE,
    FILE_RENAME, FILE_WRITE, SENSOR_LOSS,
};
use fswatch::{Watch, WatchStats};
use rustix::fs::{FileType, Mode, CWD};

/// A file event reduced to what the tests compare: (name, path, is_directory, previous path).
type Seen = (String, String, bool, Option<String>);

fn text(event: &Event, key: &str) -> Option<String> {
    match event.attributes.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

fn seen(events: &[Event]) -> Vec<Seen> {
    events
        .iter()
        .filter(|e| e.name.starts_with("hardbox.file."))
        .map(|e| {
            (
                e.name.clone(),
                text(e, ATTR_FILE_PATH).unwrap_or_default(),
                e.attributes.get(ATTR_FILE_IS_DIRECTORY) == Some(&Value::Bool(true)),
                text(e, ATTR_FILE_PREVIOUS_PATH),
            )
        })
        .collect()
}

fn ev(name: &str, path: &str, dir: bool) -> Seen {
    (name.to_owned(), path.to_owned(), dir, None)
}

fn renamed(path: &str, from: &str, dir: bool) -> Seen {
    (
        FILE_RENAME.to_owned(),
        path.to_owned(),
        dir,
        Some(from.to_owned()),
    )
}

/// Held for writing while `max_queued_events` is lowered (it applies to every inotify
/// instance created meanwhile), for reading by every other test's `spawn`.
static QUEUE_SIZE: RwLock<()> = RwLock::new(());

/// A watcher recording into a spool of its own.
struct Session {
    spool_dir: tempfile::TempDir,
    spool: Spool,
    handle: fswatch::WatcherHandle,
}

impl Session {
    fn start(watches: Vec<Watch>) -> Session {
        let spool_dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(spool_dir.path(), SpoolOptions::default()).unwrap();
        let handle = {
            // Not while another test has shrunk the queue of new inotify instances.
            let _queue = QUEUE_SIZE.read().unwrap_or_else(PoisonError::into_inner);
            fswatch::spawn(watches, spool.recorder("fswatch")).unwrap()
        };
        Session {
            spool_dir,
            spool,
            handle,
        }
    }

    /// Waits until the spool holds a file event equal to `want` (the watcher runs on its own
    /// thread; a step that depends on a new directory's watch waits for its event first).
    fn wait_for(&self, want: &Seen) {
        let start = Instant::now();
        loop {
            let events: Vec<Event> = Reader::open(self.spool_dir.path())
                .unwrap()
                .map(Result::unwrap)
                .collect();
            if seen(&events).contains(want) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no {want:?} in {:?}",
                seen(&events)
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(self) -> (Vec<Event>, WatchStats) {
        let stats = self.handle.stop();
        self.spool.close().unwrap();
        let events = Reader::open(self.spool_dir.path())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        (events, stats)
    }
}

fn workspace_watch(host: &Path) -> Vec<Watch> {
    vec![Watch {
        host: host.to_path_buf(),
        guest: PathBuf::from("/workspace"),
        overlay_upper: false,
    }]
}

#[test]
fn create_write_delete_rename_in_a_tree_with_new_subdirectories() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(ws.join("old")).unwrap();
    fs::write(ws.join("old/kept.txt"), b"before").unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("incoming.txt"), b"in").unwrap();

    let session = Session::start(workspace_watch(&ws));
    // Files that existed before are not reported; changes to them are.
    fs::write(ws.join("old/kept.txt"), b"after").unwrap();
    fs::write(ws.join("a.txt"), b"a").unwrap();
    // A new directory, and a file in it right after mkdir.
    fs::create_dir(ws.join("sub")).unwrap();
    fs::write(ws.join("sub/b.txt"), b"b").unwrap();
    session.wait_for(&ev(FILE_CREATE, "/workspace/sub/b.txt", false));
    // A rename into the new directory, then a directory rename and a file in its new place.
    fs::rename(ws.join("a.txt"), ws.join("sub/c.txt")).unwrap();
    fs::rename(ws.join("sub"), ws.join("sub2")).unwrap();
    fs::create_dir(ws.join("sub2/deeper")).unwrap();
    fs::write(ws.join("sub2/deeper/d.txt"), b"d").unwrap();
    session.wait_for(&ev(FILE_CREATE, "/workspace/sub2/deeper/d.txt", false));
    // Deletions, a move out of the tree and a move in.
    fs::remove_file(ws.join("sub2/c.txt")).unwrap();
    fs::rename(ws.join("old/kept.txt"), outside.join("kept.txt")).unwrap();
    fs::rename(outside.join("incoming.txt"), ws.join("incoming.txt")).unwrap();
    fs::remove_file(ws.join("sub2/deeper/d.txt")).unwrap();
    fs::remove_dir(ws.join("sub2/deeper")).unwrap();
    let (events, stats) = session.finish();

    let mut got = seen(&events);
    // Whether b.txt and d.txt were closed before or after their directory's watch existed is
    // up to the scheduler: their writes may or may not be seen. Everything else is certain.
    got.retain(|e| {
        *e != ev(FILE_WRITE, "/workspace/sub/b.txt", false)
            && *e != ev(FILE_WRITE, "/workspace/sub2/deeper/d.txt", false)
    });
    let want = vec![
        ev(FILE_WRITE, "/workspace/old/kept.txt", false),
        ev(FILE_CREATE, "/workspace/a.txt", false),
        ev(FILE_WRITE, "/workspace/a.txt", false),
        ev(FILE_CREATE, "/workspace/sub", true),
        ev(FILE_CREATE, "/workspace/sub/b.txt", false),
        renamed("/workspace/sub/c.txt", "/workspace/a.txt", false),
        renamed("/workspace/sub2", "/workspace/sub", true),
        ev(FILE_CREATE, "/workspace/sub2/deeper", true),
        ev(FILE_CREATE, "/workspace/sub2/deeper/d.txt", false),
        ev(FILE_DELETE, "/workspace/sub2/c.txt", false),
        ev(FILE_DELETE, "/workspace/old/kept.txt", false),
        ev(FILE_CREATE, "/workspace/incoming.txt", false),
        ev(FILE_DELETE, "/workspace/sub2/deeper/d.txt", false),
        ev(FILE_DELETE, "/workspace/sub2/deeper", true),
    ];
    assert_eq!(got, want);
    assert_eq!(stats.lost, 0);
    assert_eq!(stats.overflows, 0);
    assert!(stats.events >= want.len() as u64);
    assert!(events.iter().all(|e| e.name != SENSOR_LOSS));
}

#[test]
fn directory_made_with_contents_before_its_watch_reports_each_entry_once() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let staging = tmp.path().join("staging");
    fs::create_dir_all(&ws).unwrap();
    fs::create_dir_all(staging.join("tree/inner")).unwrap();
    fs::write(staging.join("tree/one"), b"1").unwrap();
    fs::write(staging.join("tree/inner/two"), b"2").unwrap();

    let session = Session::start(workspace_watch(&ws));
    // Moved in whole: only the scan can see what it holds.
    fs::rename(staging.join("tree"), ws.join("tree")).unwrap();
    session.wait_for(&ev(FILE_CREATE, "/workspace/tree/inner/two", false));
    // Its directories are watched now.
    fs::write(ws.join("tree/inner/three"), b"3").unwrap();
    let (events, _) = session.finish();
    assert_eq!(
        seen(&events),
        vec![
            ev(FILE_CREATE, "/workspace/tree", true),
            ev(FILE_CREATE, "/workspace/tree/inner", true),
            ev(FILE_CREATE, "/workspace/tree/one", false),
            ev(FILE_CREATE, "/workspace/tree/inner/two", false),
            ev(FILE_CREATE, "/workspace/tree/inner/three", false),
            ev(FILE_WRITE, "/workspace/tree/inner/three", false),
        ]
    );
}

#[test]
fn guest_paths_map_each_watch_to_its_place_in_the_sandbox() {
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    let ws = tmp.path().join("ws");
    fs::create_dir_all(upper.join("etc")).unwrap();
    fs::create_dir_all(&ws).unwrap();
    let session = Session::start(vec![
        Watch {
            host: upper.clone(),
            guest: PathBuf::from("/"),
            overlay_upper: true,
        },
        Watch {
            host: ws.clone(),
            guest: PathBuf::from("/home/agent/project"),
            overlay_upper: false,
        },
    ]);
    fs::write(upper.join("etc/hosts"), b"").unwrap();
    fs::write(ws.join("main.rs"), b"").unwrap();
    let (events, _) = session.finish();
    assert_eq!(
        seen(&events),
        vec![
            ev(FILE_CREATE, "/etc/hosts", false),
            ev(FILE_WRITE, "/etc/hosts", false),
            ev(FILE_CREATE, "/home/agent/project/main.rs", false),
            ev(FILE_WRITE, "/home/agent/project/main.rs", false),
        ]
    );
}

#[test]
fn a_symlink_swapped_in_for_a_directory_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let host_secret = tmp.path().join("host");
    fs::create_dir_all(&ws).unwrap();
    fs::create_dir_all(&host_secret).unwrap();
    fs::write(host_secret.join("secret.txt"), b"").unwrap();
    let session = Session::start(workspace_watch(&ws));
    std::os::unix::fs::symlink(&host_secret, ws.join("link")).unwrap();
    fs::write(ws.join("after"), b"").unwrap();
    session.wait_for(&ev(FILE_WRITE, "/workspace/after", false));
    fs::write(host_secret.join("changed.txt"), b"").unwrap();
    let (events, _) = session.finish();
    let got = seen(&events);
    assert!(got.contains(&ev(FILE_CREATE, "/workspace/link", false)));
    assert!(
        got.iter()
            .all(|(_, path, _, _)| !path.contains("secret") && !path.contains("changed")),
        "{got:?}"
    );
}

fn assert_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (CI runs as root)"
    );
}

fn whiteout(path: &Path) {
    rustix::fs::mknodat(
        CWD,
        path,
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o600),
        rustix::fs::makedev(0, 0),
    )
    .unwrap();
}

#[test]
fn whiteouts_in_an_upper_directory_are_deletions() {
    assert_root();
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    let work = tmp.path().join("work");
    fs::create_dir_all(upper.join("etc")).unwrap();
    fs::create_dir_all(&work).unwrap();
    fs::write(upper.join("etc/passwd"), b"root").unwrap();
    let session = Session::start(vec![Watch {
        host: upper.clone(),
        guest: PathBuf::from("/"),
        overlay_upper: true,
    }]);
    // A whiteout made in place: the lower entry is gone for the sandbox.
    whiteout(&upper.join("etc/shadow"));
    // An entry's kind is looked at when its event is handled: wait before it changes again.
    session.wait_for(&ev(FILE_DELETE, "/etc/shadow", false));
    // A whiteout made in the work directory and exchanged with an upper entry (overlayfs's
    // deletion of an entry that is in both layers).
    whiteout(&work.join("wh"));
    rustix::fs::renameat_with(
        CWD,
        work.join("wh"),
        CWD,
        upper.join("etc/passwd"),
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .unwrap();
    fs::remove_file(work.join("wh")).unwrap();
    session.wait_for(&ev(FILE_DELETE, "/etc/passwd", false));
    // A whiteout removed (the entry comes back through a new file) is no deletion itself.
    fs::remove_file(upper.join("etc/shadow")).unwrap();
    fs::write(upper.join("etc/shadow"), b"new").unwrap();
    // A copy-up: an entry the sandbox had, moved in from the work directory.
    fs::write(work.join("copy"), b"lower content").unwrap();
    fs::rename(work.join("copy"), upper.join("etc/group")).unwrap();
    let (events, _) = session.finish();
    assert_eq!(
        seen(&events),
        vec![
            ev(FILE_DELETE, "/etc/shadow", false),
            ev(FILE_DELETE, "/etc/passwd", false),
            ev(FILE_CREATE, "/etc/shadow", false),
            ev(FILE_WRITE, "/etc/shadow", false),
        ]
    );
}

#[test]
fn real_overlay_deletion_copy_up_and_creation_as_the_sandbox_sees_them() {
    assert_root();
    let tmp = tempfile::tempdir().unwrap();
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| {
        let path = tmp.path().join(d);
        fs::create_dir(&path).unwrap();
        path
    });
    fs::write(lower.join("remove-me"), b"x").unwrap();
    fs::write(lower.join("edit-me"), b"x").unwrap();
    fs::create_dir(lower.join("dir")).unwrap();
    fs::write(lower.join("dir/inside"), b"x").unwrap();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    rustix::mount::mount(
        "overlay",
        &merged,
        "overlay",
        rustix::mount::MountFlags::empty(),
        Some(std::ffi::CString::new(options).unwrap().as_c_str()),
    )
    .unwrap();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
    let _unmount = Unmount(merged.clone());

    let session = Session::start(vec![Watch {
        host: upper.clone(),
        guest: PathBuf::from("/"),
        overlay_upper: true,
    }]);
    fs::remove_file(merged.join("remove-me")).unwrap();
    fs::write(merged.join("created"), b"new").unwrap();
    fs::write(merged.join("dir/added"), b"new").unwrap();
    session.wait_for(&ev(FILE_CREATE, "/dir/added", false));
    fs::remove_file(merged.join("dir/inside")).unwrap();
    let (events, _) = session.finish();
    let got = seen(&events);
    // The copy-up of `dir` (needed to create `added`) is no creation of `dir`.
    assert!(!got.contains(&ev(FILE_CREATE, "/dir", true)), "{got:?}");
    for want in [
        ev(FILE_DELETE, "/remove-me", false),
        ev(FILE_CREATE, "/created", false),
        ev(FILE_CREATE, "/dir/added", false),
        ev(FILE_DELETE, "/dir/inside", false),
    ] {
        assert!(got.contains(&want), "{want:?} not in {got:?}");
    }
    assert!(
        got.iter()
            .all(|(name, path, _, _)| !(name == FILE_CREATE && path == "/remove-me")),
        "{got:?}"
    );
}

/// Sets a sysctl for the life of the value and restores it after.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Sysctl {
        let old = fs::read_to_string(path).unwrap();
        fs::write(path, value).unwrap();
        Sysctl { path, old }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = fs::write(self.path, self.old.trim());
    }
}

#[test]
fn queue_overflow_is_a_loss_event() {
    assert_root();
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    fs::create_dir_all(&ws).unwrap();
    // The queue's size is taken when the inotify instance is created: a queue of one event,
    // restored for everyone else right after.
    let session = {
        let _queue = QUEUE_SIZE.write().unwrap_or_else(PoisonError::into_inner);
        let _sysctl = Sysctl::set("/proc/sys/fs/inotify/max_queued_events", "1");
        let spool_dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(spool_dir.path(), SpoolOptions::default()).unwrap();
        let handle = fswatch::spawn(workspace_watch(&ws), spool.recorder("fswatch")).unwrap();
        Session {
            spool_dir,
            spool,
            handle,
        }
    };
    // Each file is two events (create, close after write) queued back to back.
    for i in 0..2000 {
        fs::write(ws.join(format!("f{i}")), b"x").unwrap();
    }
    let (events, stats) = session.finish();
    assert!(stats.overflows > 0, "{stats:?}");
    assert!(stats.lost >= stats.overflows);
    let losses: Vec<&Event> = events
        .iter()
        .filter(|e| {
            e.name == SENSOR_LOSS
                && text(e, ATTR_ERROR_TYPE).as_deref() == Some("inotify_queue_overflow")
        })
        .collect();
    assert!(!losses.is_empty());
    assert_eq!(
        text(losses[0], ATTR_SENSOR_NAME).as_deref(),
        Some("fswatch")
    );
}
