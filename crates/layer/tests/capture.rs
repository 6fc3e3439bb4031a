//! `layer::capture` against real overlayfs: changes made through a mounted overlay are listed
//! right, and lower + the captured layer, applied by `Applier`, give exactly the merged view.
//! Hostile uppers (symlinks out, fifos, devices, overlay features hardbox does not use) are
//! handled without following anything; workspace snapshots see what changed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on unexpected values"
)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{lgetxattr, require_root};
use layer::capture::{
    upper_changes, upper_changes_with, write_upper_layer, write_workspace_layer, CaptureError,
    CaptureOptions, Change, ChangeKind, DeviceNodes, EntryKind, OverlayXattrs, Owners, Snapshot,
};
use layer::{Applier, Compression, Options, Ownership, Whiteouts};
use rustix::fs::{FileType, Mode, XattrFlags};
use types::Digest;

/// What a tree looks like, path by path: kind, mode, owner, content or link target, user
/// xattrs.
type Shape = BTreeMap<String, (char, u32, u32, u32, Vec<u8>, Vec<(String, Vec<u8>)>)>;

fn shape(root: &Path) -> Shape {
    let mut out = Shape::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Shape) {
    let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).unwrap();
        let kind = meta.file_type();
        let (symbol, content) = if kind.is_dir() {
            ('d', Vec::new())
        } else if kind.is_symlink() {
            (
                'l',
                fs::read_link(&path)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes(),
            )
        } else if kind.is_file() {
            ('f', fs::read(&path).unwrap())
        } else if kind.is_fifo() {
            ('p', Vec::new())
        } else {
            ('?', Vec::new())
        };
        let mut xattrs = Vec::new();
        if !kind.is_symlink() {
            for name in ["user.note", "user.other"] {
                if let Some(value) = lgetxattr(&path, name) {
                    xattrs.push((name.to_owned(), value));
                }
            }
        }
        let relative = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        out.insert(
            relative,
            (
                symbol,
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid(),
                content,
                xattrs,
            ),
        );
        if kind.is_dir() {
            walk(root, &path, out);
        }
    }
}

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {output:?}");
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn change(path: &str, kind: ChangeKind, entry: EntryKind) -> Change {
    Change {
        path: PathBuf::from(path),
        kind,
        entry,
    }
}

fn capture(upper: &Path, lower: Option<&Path>, options: &CaptureOptions) -> Vec<u8> {
    let mut tar = Vec::new();
    let summary = write_upper_layer(upper, lower, &mut tar, options).unwrap();
    assert_eq!(summary.diff_id, Digest::of(&tar));
    assert_eq!(summary.size, tar.len() as u64);
    tar
}

/// Names in a tar, with their type flag and link name.
fn tar_entries(tar: &[u8]) -> Vec<(String, u8, String)> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.path().unwrap().to_string_lossy().into_owned(),
                entry.header().entry_type().as_byte(),
                entry
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn apply_layers(root: &Path, layers: &[&[u8]]) {
    let options = Options {
        ownership: Ownership::Preserve,
        whiteouts: Whiteouts::Apply,
        ..Options::for_current_user()
    };
    let mut applier = Applier::new(root, options).unwrap();
    for layer in layers {
        applier
            .apply(&mut &layer[..], &Digest::of(layer), Compression::None)
            .unwrap();
    }
    applier.finish().unwrap();
}

/// A temporary overlay: `lower` (filled by the test), `upper`, `work`, `merged`.
struct Overlay {
    _dir: tempfile::TempDir,
    base: PathBuf,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
    mounted: bool,
}

impl Overlay {
    fn new() -> Overlay {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        let [lower, upper, work, merged] =
            ["lower", "upper", "work", "merged"].map(|name| base.join(name));
        for path in [&lower, &upper, &work, &merged] {
            fs::create_dir(path).unwrap();
            set_mode(path, 0o755);
        }
        Overlay {
            _dir: dir,
            base,
            lower,
            upper,
            work,
            merged,
            mounted: false,
        }
    }

    fn mount(&mut self) {
        run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                self.lower.display(),
                self.upper.display(),
                self.work.display()
            ))
            .arg(&self.merged));
        self.mounted = true;
    }

    fn unmount(&mut self) {
        run(Command::new("umount").arg(&self.merged));
        self.mounted = false;
    }

    fn merged(&self, path: &str) -> PathBuf {
        self.merged.join(path)
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.merged).status();
        }
    }
}

#[test]
fn overlay_changes_are_listed_and_replay_to_the_merged_view() {
    require_root();
    let mut overlay = Overlay::new();
    let lower = overlay.lower.clone();
    write(&lower.join("etc/keep"), "keep");
    write(&lower.join("etc/modify"), "old");
    write(&lower.join("etc/delete"), "bye");
    write(&lower.join("etc/untouched"), "same");
    write(&lower.join("opt/old/a"), "a");
    write(&lower.join("opt/old/b/c"), "c");
    write(&lower.join("usr/bin/tool"), "#!tool");
    std::os::unix::fs::symlink("usr/bin", lower.join("bin")).unwrap();
    fs::create_dir_all(lower.join("srv/www")).unwrap();
    fs::create_dir_all(lower.join("var/gone/deep")).unwrap();
    write(&lower.join("var/gone/deep/file"), "x");
    write(&lower.join("home/user/file"), "owned");
    std::os::unix::fs::lchown(lower.join("home/user/file"), Some(1000), Some(1000)).unwrap();
    set_mode(&lower.join("usr/bin/tool"), 0o755);

    overlay.mount();
    write(&overlay.merged("etc/new"), "new");
    fs::write(overlay.merged("etc/modify"), "new content").unwrap();
    fs::remove_file(overlay.merged("etc/delete")).unwrap();
    fs::remove_dir_all(overlay.merged("opt/old")).unwrap();
    write(&overlay.merged("opt/old/fresh"), "fresh");
    std::os::unix::fs::symlink("keep", overlay.merged("etc/alias")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", overlay.merged("etc/absolute")).unwrap();
    fs::hard_link(overlay.merged("etc/new"), overlay.merged("etc/new2")).unwrap();
    fs::hard_link(overlay.merged("etc/keep"), overlay.merged("etc/keep2")).unwrap();
    rustix::fs::setxattr(
        overlay.merged("etc/new"),
        "user.note",
        b"hello",
        XattrFlags::empty(),
    )
    .unwrap();
    set_mode(&overlay.merged("srv"), 0o700);
    write(&overlay.merged("data/x/y"), "y");
    fs::remove_dir_all(overlay.merged("var/gone")).unwrap();
    std::os::unix::fs::lchown(overlay.merged("home/user/file"), Some(1001), Some(1002)).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        overlay.merged("srv/pipe"),
        FileType::Fifo,
        Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    // What the sandbox's CA bundle would be, were /run not a tmpfs.
    write(
        &overlay.merged("run/hardbox/ca-certificates.crt"),
        "secret CA",
    );
    let merged = shape(&overlay.merged);
    overlay.unmount();

    let changes = upper_changes(&overlay.upper, Some(&lower)).unwrap();
    use ChangeKind::{Added, Changed, Deleted};
    use EntryKind::{Directory, Fifo, File, Symlink};
    assert_eq!(
        changes,
        vec![
            change("/data", Added, Directory),
            change("/data/x", Added, Directory),
            change("/data/x/y", Added, File),
            change("/etc/absolute", Added, Symlink),
            change("/etc/alias", Added, Symlink),
            change("/etc/delete", Deleted, File),
            change("/etc/keep", Changed, File),
            change("/etc/keep2", Added, File),
            change("/etc/modify", Changed, File),
            change("/etc/new", Added, File),
            change("/etc/new2", Added, File),
            change("/home/user/file", Changed, File),
            change("/opt/old", Changed, Directory),
            change("/opt/old/a", Deleted, File),
            change("/opt/old/b", Deleted, Directory),
            change("/opt/old/fresh", Added, File),
            change("/run", Added, Directory),
            change("/srv", Changed, Directory),
            change("/srv/pipe", Added, Fifo),
            change("/var/gone", Deleted, Directory),
        ]
    );

    let keep = CaptureOptions {
        owners: Owners::Keep,
        ..CaptureOptions::for_current_user()
    };
    let lower_tar = capture(&lower, None, &keep);
    let upper_tar = capture(&overlay.upper, Some(&lower), &keep);
    assert_eq!(
        upper_tar,
        capture(&overlay.upper, Some(&lower), &keep),
        "the same upper gives the same bytes"
    );
    let entries = tar_entries(&upper_tar);
    let names: Vec<&str> = entries.iter().map(|(n, _, _)| n.as_str()).collect();
    for expected in ["etc/.wh.delete", "opt/old/.wh..wh..opq", "var/.wh.gone"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.starts_with("run/hardbox")),
        "{names:?}"
    );
    let links: Vec<_> = entries
        .iter()
        .filter(|(_, kind, _)| *kind == b'1')
        .collect();
    assert_eq!(
        links,
        [
            &("etc/keep2".to_owned(), b'1', "etc/keep".to_owned()),
            &("etc/new2".to_owned(), b'1', "etc/new".to_owned())
        ],
        "hard links within the layer are kept"
    );

    let replay = overlay.base.join("replay");
    fs::create_dir(&replay).unwrap();
    set_mode(&replay, 0o755);
    apply_layers(&replay, &[&lower_tar, &upper_tar]);
    let mut expected = merged.clone();
    expected.retain(|path, _| !path.starts_with("run/hardbox"));
    assert_eq!(shape(&replay), expected);
    assert_eq!(
        fs::metadata(replay.join("etc/new")).unwrap().ino(),
        fs::metadata(replay.join("etc/new2")).unwrap().ino()
    );
    assert_eq!(
        fs::metadata(replay.join("home/user/file")).unwrap().uid(),
        1001
    );
}

/// Only the entries the upper holds, owners shifted back to the sandbox's view (root mode).
#[test]
fn root_mode_owners_are_shifted_back_and_unmapped_ids_refused() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let upper = dir.path().join("upper");
    fs::create_dir(&upper).unwrap();
    const BASE: u32 = 1_000_000_000;
    std::os::unix::fs::lchown(&upper, Some(BASE), Some(BASE)).unwrap();
    write(&upper.join("app/data"), "d");
    std::os::unix::fs::lchown(upper.join("app"), Some(BASE), Some(BASE)).unwrap();
    std::os::unix::fs::lchown(upper.join("app/data"), Some(BASE + 1000), Some(BASE + 50)).unwrap();
    let options = CaptureOptions {
        owners: Owners::Unshift {
            uid_base: BASE,
            gid_base: BASE,
            size: 65_536,
        },
        mtime_clamp: Some(1_000),
        ..CaptureOptions::for_current_user()
    };
    let tar = capture(&upper, None, &options);
    let mut archive = tar::Archive::new(&tar[..]);
    let owners: Vec<(String, u64, u64, u64)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        owners,
        [
            ("./".to_owned(), 0, 0, 1_000),
            ("app/".to_owned(), 0, 0, 1_000),
            ("app/data".to_owned(), 1000, 50, 1_000),
        ]
    );

    std::os::unix::fs::lchown(upper.join("app/data"), Some(7), None).unwrap();
    match write_upper_layer(&upper, None, std::io::sink(), &options) {
        Err(CaptureError::UnmappedOwner { path, which, id }) => {
            assert_eq!((path, which, id), (upper.join("app/data"), "uid", 7));
        }
        other => panic!("{other:?}"),
    }
}

/// Rootless: the caller's ids are root, `user.hardbox.owner` (copied up from the image cache)
/// says the image's owner, and the record itself stays out of the layer.
#[test]
fn rootless_owners_come_from_the_recorded_xattr() {
    let dir = tempfile::tempdir().unwrap();
    let upper = dir.path().join("upper");
    write(&upper.join("srv/file"), "f");
    write(&upper.join("srv/mine"), "m");
    rustix::fs::setxattr(
        upper.join("srv/file"),
        "user.hardbox.owner",
        b"33:44",
        XattrFlags::empty(),
    )
    .unwrap();
    let me = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    let options = CaptureOptions {
        owners: Owners::Caller {
            uid: me.0,
            gid: me.1,
        },
        overlay_xattrs: OverlayXattrs::User,
        ..CaptureOptions::for_current_user()
    };
    let tar = capture(&upper, None, &options);
    let mut archive = tar::Archive::new(&tar[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let owner = (entry.header().uid().unwrap(), entry.header().gid().unwrap());
        let expected = if path == "srv/file" { (33, 44) } else { (0, 0) };
        assert_eq!(owner, expected, "{path}");
        let xattrs: Vec<String> = entry
            .pax_extensions()
            .unwrap()
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().key().unwrap().to_owned())
            .collect();
        assert!(!xattrs.iter().any(|k| k.contains("hardbox")), "{xattrs:?}");
    }
}

#[test]
fn hostile_upper_is_captured_without_following_anything() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let upper = dir.path().join("upper");
    let outside = dir.path().join("outside");
    write(&outside.join("secret"), "do not read");
    fs::create_dir(&upper).unwrap();
    std::os::unix::fs::symlink(&outside, upper.join("escape")).unwrap();
    std::os::unix::fs::symlink("../../outside/secret", upper.join("relative")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        upper.join("pipe"),
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    fs::create_dir(upper.join("dev")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        upper.join("dev/sda"),
        FileType::BlockDevice,
        Mode::from_raw_mode(0o600),
        rustix::fs::makedev(8, 0),
    )
    .unwrap();
    // A whiteout: listed as a deletion, never as a device.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        upper.join("dev/gone"),
        FileType::CharacterDevice,
        Mode::empty(),
        0,
    )
    .unwrap();

    let changes = upper_changes(&upper, None).unwrap();
    let listed: Vec<(String, ChangeKind, EntryKind)> = changes
        .into_iter()
        .map(|c| (c.path.display().to_string(), c.kind, c.entry))
        .collect();
    assert_eq!(
        listed,
        [
            ("/dev".to_owned(), ChangeKind::Added, EntryKind::Directory),
            (
                "/dev/gone".to_owned(),
                ChangeKind::Deleted,
                EntryKind::Unknown
            ),
            (
                "/dev/sda".to_owned(),
                ChangeKind::Added,
                EntryKind::BlockDevice
            ),
            ("/escape".to_owned(), ChangeKind::Added, EntryKind::Symlink),
            ("/pipe".to_owned(), ChangeKind::Added, EntryKind::Fifo),
            (
                "/relative".to_owned(),
                ChangeKind::Added,
                EntryKind::Symlink
            ),
        ]
    );

    let refuse = CaptureOptions::for_current_user();
    match write_upper_layer(&upper, None, std::io::sink(), &refuse) {
        Err(CaptureError::DeviceNode { path, major, minor }) => {
            assert_eq!((path, major, minor), (upper.join("dev/sda"), 8, 0));
        }
        other => panic!("{other:?}"),
    }
    let skip = CaptureOptions {
        devices: DeviceNodes::Skip,
        ..CaptureOptions::for_current_user()
    };
    let mut tar = Vec::new();
    let summary = write_upper_layer(&upper, None, &mut tar, &skip).unwrap();
    assert_eq!(summary.skipped, [PathBuf::from("/dev/sda")]);
    let entries = tar_entries(&tar);
    assert_eq!(
        entries,
        [
            ("./".to_owned(), b'5', String::new()),
            ("dev/".to_owned(), b'5', String::new()),
            ("dev/.wh.gone".to_owned(), b'0', String::new()),
            ("escape".to_owned(), b'2', outside.display().to_string()),
            ("pipe".to_owned(), b'6', String::new()),
            (
                "relative".to_owned(),
                b'2',
                "../../outside/secret".to_owned()
            ),
        ]
    );
    assert_eq!(summary.entries, 6);
    assert!(!tar.windows(11).any(|w| w == b"do not read"));
}

#[test]
fn overlay_features_hardbox_does_not_use_are_refused() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let upper = dir.path().join("upper");
    fs::create_dir_all(upper.join("moved")).unwrap();
    rustix::fs::setxattr(
        upper.join("moved"),
        "trusted.overlay.redirect",
        b"/elsewhere",
        XattrFlags::empty(),
    )
    .unwrap();
    match upper_changes_with(&upper, None, OverlayXattrs::Trusted, &[]) {
        Err(CaptureError::OverlayFeature { path, xattr }) => {
            assert_eq!(
                (path, xattr.as_str()),
                (upper.join("moved"), "trusted.overlay.redirect")
            );
        }
        other => panic!("{other:?}"),
    }
    fs::remove_dir(upper.join("moved")).unwrap();
    write(&upper.join("meta"), "");
    rustix::fs::setxattr(
        upper.join("meta"),
        "trusted.overlay.metacopy",
        b"",
        XattrFlags::empty(),
    )
    .unwrap();
    let options = CaptureOptions {
        overlay_xattrs: OverlayXattrs::Trusted,
        ..CaptureOptions::for_current_user()
    };
    assert!(matches!(
        write_upper_layer(&upper, None, std::io::sink(), &options),
        Err(CaptureError::OverlayFeature { .. })
    ));
    fs::remove_file(upper.join("meta")).unwrap();
    fs::create_dir(upper.join("odd")).unwrap();
    rustix::fs::setxattr(
        upper.join("odd"),
        "trusted.overlay.opaque",
        b"x",
        XattrFlags::empty(),
    )
    .unwrap();
    assert!(matches!(
        upper_changes_with(&upper, None, OverlayXattrs::Trusted, &[]),
        Err(CaptureError::BadOpaque { .. })
    ));
}

/// Rootless overlays keep their metadata in `user.overlay.*`: an opaque directory there is
/// one, and in the other namespace it is ordinary data that still never reaches a layer.
#[test]
fn user_namespace_opaque_directories_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let lower = dir.path().join("lower");
    let upper = dir.path().join("upper");
    write(&lower.join("d/old"), "old");
    write(&upper.join("d/new"), "new");
    set_mode(&lower, 0o755);
    set_mode(&upper, 0o755);
    rustix::fs::setxattr(
        upper.join("d"),
        "user.overlay.opaque",
        b"y",
        XattrFlags::empty(),
    )
    .unwrap();
    let changes = upper_changes_with(&upper, Some(&lower), OverlayXattrs::User, &[]).unwrap();
    assert_eq!(
        changes,
        [
            change("/d", ChangeKind::Changed, EntryKind::Directory),
            change("/d/new", ChangeKind::Added, EntryKind::File),
            change("/d/old", ChangeKind::Deleted, EntryKind::File),
        ]
    );
    let options = CaptureOptions {
        overlay_xattrs: OverlayXattrs::User,
        ..CaptureOptions::for_current_user()
    };
    let user_tar = capture(&upper, Some(&lower), &options);
    let names: Vec<String> = tar_entries(&user_tar).into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["d/", "d/.wh..wh..opq", "d/new"]);
    assert!(!user_tar.windows(7).any(|w| w == b"overlay"));

    let trusted = CaptureOptions {
        overlay_xattrs: OverlayXattrs::Trusted,
        ..options
    };
    let tar = capture(&upper, Some(&lower), &trusted);
    let names: Vec<String> = tar_entries(&tar).into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["d/", "d/new"]);
    assert!(!tar.windows(7).any(|w| w == b"overlay"));
}

#[test]
fn workspace_snapshot_sees_changes_and_replays_them() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("workspace");
    write(&workspace.join("src/main.rs"), "fn main() {}");
    write(&workspace.join("src/lib.rs"), "// lib");
    write(&workspace.join("README"), "readme");
    write(&workspace.join("notes"), "notes");
    write(&workspace.join("build/out/a.o"), "object");
    write(&workspace.join("saved-by-editor"), "v1");
    std::os::unix::fs::symlink("README", workspace.join("link")).unwrap();
    let snapshot = Snapshot::take(&workspace).unwrap();
    let snapshot = Snapshot::parse(&snapshot.to_bytes()).unwrap();
    let guest = Path::new("/workspace");
    assert_eq!(snapshot.changes(&workspace, guest).unwrap(), []);

    let before = dir.path().join("before");
    run(Command::new("cp").arg("-a").arg(&workspace).arg(&before));

    fs::write(workspace.join("src/main.rs"), "fn main() { changed(); }").unwrap();
    write(&workspace.join("src/new.rs"), "// new");
    fs::remove_file(workspace.join("notes")).unwrap();
    fs::remove_dir_all(workspace.join("build")).unwrap();
    set_mode(&workspace.join("src"), 0o700);
    // An editor's save: a new file renamed over the old one, same size.
    fs::write(workspace.join(".tmp"), "v2").unwrap();
    fs::rename(workspace.join(".tmp"), workspace.join("saved-by-editor")).unwrap();
    fs::hard_link(
        workspace.join("src/new.rs"),
        workspace.join("src/also-new.rs"),
    )
    .unwrap();

    use ChangeKind::{Added, Changed, Deleted};
    use EntryKind::{Directory, File};
    assert_eq!(
        snapshot.changes(&workspace, guest).unwrap(),
        [
            change("/workspace/build", Deleted, Directory),
            change("/workspace/notes", Deleted, File),
            change("/workspace/saved-by-editor", Changed, File),
            change("/workspace/src", Changed, Directory),
            change("/workspace/src/also-new.rs", Added, File),
            change("/workspace/src/main.rs", Changed, File),
            change("/workspace/src/new.rs", Added, File),
        ]
    );

    let me = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    let options = CaptureOptions {
        owners: Owners::Fixed {
            uid: me.0,
            gid: me.1,
        },
        ..CaptureOptions::for_current_user()
    };
    let mut layer = Vec::new();
    let summary =
        write_workspace_layer(&workspace, &snapshot, guest, &mut layer, &options).unwrap();
    assert_eq!(summary.diff_id, Digest::of(&layer));
    let names: Vec<String> = tar_entries(&layer).into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        [
            "workspace/",
            "workspace/.wh.build",
            "workspace/.wh.notes",
            "workspace/saved-by-editor",
            "workspace/src/",
            "workspace/src/also-new.rs",
            "workspace/src/main.rs",
            "workspace/src/new.rs",
        ]
    );

    // The workspace as it was, in an image at /workspace, plus the layer: the workspace now.
    let image = dir.path().join("image");
    fs::create_dir(&image).unwrap();
    run(Command::new("cp")
        .arg("-a")
        .arg(&before)
        .arg(image.join("workspace")));
    let options = Options {
        ownership: Ownership::Preserve,
        ..Options::for_current_user()
    };
    let mut applier = Applier::new(&image, options).unwrap();
    applier
        .apply(&mut &layer[..], &Digest::of(&layer), Compression::None)
        .unwrap();
    applier.finish().unwrap();
    assert_eq!(shape(&image.join("workspace")), shape(&workspace));
}

#[test]
fn workspace_guest_path_must_be_absolute() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = Snapshot::take(dir.path()).unwrap();
    for bad in ["relative", "/a/../b"] {
        assert!(matches!(
            snapshot.changes(dir.path(), Path::new(bad)),
            Err(CaptureError::GuestPath { .. })
        ));
    }
}

const ROOTLESS_DIR: &str = "HARDBOX_TEST_ROOTLESS_CAPTURE_DIR";

/// Rootless sandboxes: an overlay mounted with `userxattr` by an unprivileged user in a user
/// namespace of its own, changed through the merged view, then captured by that user (65534,
/// outside the namespace, as the CLI runs) in [`rootless_capture_child`]. The layers it wrote
/// replay to what the sandbox saw, every file owned by root.
#[test]
fn rootless_overlay_is_captured_by_the_unprivileged_user() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    std::os::unix::fs::chown(base, Some(65534), Some(65534)).unwrap();
    let script = r#"set -e
mkdir -p lower/etc lower/opt/old/b upper work merged
echo keep > lower/etc/keep
echo old > lower/etc/modify
echo bye > lower/etc/delete
echo a > lower/opt/old/a
echo c > lower/opt/old/b/c
mount -t overlay overlay -o "lowerdir=$PWD/lower,upperdir=$PWD/upper,workdir=$PWD/work,userxattr" merged
echo new > merged/etc/new
echo changed > merged/etc/modify
rm merged/etc/delete
rm -r merged/opt/old
mkdir merged/opt/old
echo fresh > merged/opt/old/fresh
ln -s keep merged/etc/alias
umount merged
"#;
    let as_nobody = |program: &str| {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program)
            .current_dir(base);
        command
    };
    run(as_nobody("unshare").args(["--user", "--map-root-user", "--mount", "sh", "-c", script]));
    run(
        as_nobody(std::env::current_exe().unwrap().to_str().unwrap())
            .args(["--exact", "rootless_capture_child", "--include-ignored"])
            .env(ROOTLESS_DIR, base),
    );

    let replay = base.join("replay");
    fs::create_dir(&replay).unwrap();
    let lower_tar = fs::read(base.join("lower.tar")).unwrap();
    let upper_tar = fs::read(base.join("upper.tar")).unwrap();
    apply_layers(&replay, &[&lower_tar, &upper_tar]);
    let read = |path: &str| fs::read_to_string(replay.join(path)).unwrap();
    assert_eq!(read("etc/keep"), "keep\n");
    assert_eq!(read("etc/new"), "new\n");
    assert_eq!(read("etc/modify"), "changed\n");
    assert_eq!(
        fs::read_link(replay.join("etc/alias")).unwrap(),
        Path::new("keep")
    );
    assert!(fs::symlink_metadata(replay.join("etc/delete")).is_err());
    assert_eq!(common::list(&replay.join("opt/old")), ["fresh"]);
    for path in ["etc", "etc/new", "etc/modify", "opt/old/fresh"] {
        let meta = fs::symlink_metadata(replay.join(path)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{path}");
    }
}

/// Run by [`rootless_overlay_is_captured_by_the_unprivileged_user`] as 65534.
#[test]
#[ignore = "run as an unprivileged user by rootless_overlay_is_captured_by_the_unprivileged_user"]
fn rootless_capture_child() {
    let base = PathBuf::from(std::env::var_os(ROOTLESS_DIR).expect(ROOTLESS_DIR));
    assert_ne!(rustix::process::geteuid().as_raw(), 0);
    let (upper, lower) = (base.join("upper"), base.join("lower"));
    use ChangeKind::{Added, Changed, Deleted};
    use EntryKind::{Directory, File, Symlink};
    assert_eq!(
        upper_changes(&upper, Some(&lower)).unwrap(),
        [
            change("/etc/alias", Added, Symlink),
            change("/etc/delete", Deleted, File),
            change("/etc/modify", Changed, File),
            change("/etc/new", Added, File),
            change("/opt/old", Changed, Directory),
            change("/opt/old/a", Deleted, File),
            change("/opt/old/b", Deleted, Directory),
            change("/opt/old/fresh", Added, File),
        ]
    );
    let me = rustix::process::geteuid().as_raw();
    let options = CaptureOptions {
        owners: Owners::Caller { uid: me, gid: me },
        ..CaptureOptions::for_current_user()
    };
    assert_eq!(options.overlay_xattrs, OverlayXattrs::User);
    for (name, upper, lower) in [
        ("lower.tar", &lower, None),
        ("upper.tar", &upper, Some(lower.as_path())),
    ] {
        let file = fs::File::create(base.join(name)).unwrap();
        write_upper_layer(upper, lower, file, &options).unwrap();
    }
    let names: Vec<String> = tar_entries(&fs::read(base.join("upper.tar")).unwrap())
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(
        names.contains(&"opt/old/.wh..wh..opq".to_owned()),
        "{names:?}"
    );
    assert!(names.contains(&"etc/.wh.delete".to_owned()), "{names:?}");
}
