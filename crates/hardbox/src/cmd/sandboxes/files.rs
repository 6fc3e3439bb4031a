//! `cp`, `diff` and `save`: a sandbox's files.
//!
//! - `diff` compares the overlay's upper directory with the image (added, changed, deleted)
//!   and the workspace with its snapshot from `create`.
//! - `save` turns those two change sets into layers over the base image (an empty base for
//!   `--host` sandboxes) and stores the image, its event log attached as a referrer.
//! - `cp` copies into and out of a running sandbox through its init's root
//!   (`/proc/PID/root`), resolving every path with `RESOLVE_IN_ROOT`, so a symlink in the
//!   sandbox never leads the copy outside it.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use serde::Serialize;

use super::{alive, lookup, registry, Stored, SNAPSHOT_FILE};
use crate::cli::{CpArgs, DiffArgs, SaveArgs, SaveFormat};
use crate::cmd::run;
use crate::{exit, output};

/// The image's cached root filesystem (the overlay's lower layer) of an image sandbox.
fn lower_dir(root: &Path, digest: &str) -> Result<PathBuf> {
    let rootfs = run::image_rootfs(root, digest)
        .with_context(|| format!("failed to prepare the image {digest}"))?;
    Ok(rootfs.directory)
}

fn read_snapshot(dir: &Path) -> Result<Option<layer::capture::Snapshot>> {
    let path = dir.join(SNAPSHOT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(
            layer::capture::Snapshot::parse(&bytes)
                .with_context(|| format!("invalid {}", path.display()))?,
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("failed to read {}", path.display())),
    }
}

#[derive(Debug, Serialize)]
struct Listed {
    kind: &'static str,
    path: String,
    area: &'static str,
}

pub fn diff(root: Option<PathBuf>, args: DiffArgs) -> Result<u8> {
    let (root, registry) = registry(root)?;
    let record = lookup(&registry, &args.sandbox)?;
    let dir = registry.sandbox_dir(&record.id);
    let stored = Stored::read(&dir)?;
    let mut listed = Vec::new();
    if let Some(digest) = &stored.image_digest {
        let upper = dir.join("upper");
        if upper.is_dir() {
            let lower = lower_dir(&root, digest)?;
            for change in layer::capture::upper_changes(&upper, Some(&lower))? {
                listed.push(Listed {
                    kind: letter(change.kind),
                    path: change.path.display().to_string(),
                    area: "system",
                });
            }
        }
    }
    if let (Some(workspace), Some(snapshot)) = (&stored.workspace, read_snapshot(&dir)?) {
        for change in snapshot.changes(workspace, workspace)? {
            listed.push(Listed {
                kind: letter(change.kind),
                path: change.path.display().to_string(),
                area: "workspace",
            });
        }
    }
    if args.json {
        output::json(&listed)?;
    } else {
        for item in &listed {
            output::line(&format!("{} {}", item.kind, item.path))?;
        }
    }
    Ok(exit::OK)
}

fn letter(kind: layer::capture::ChangeKind) -> &'static str {
    match kind.symbol() {
        'A' => "A",
        'D' => "D",
        _ => "C",
    }
}

pub fn save(root: Option<PathBuf>, args: SaveArgs) -> Result<u8> {
    let (root, registry) = registry(root)?;
    let record = lookup(&registry, &args.sandbox)?;
    let dir = registry.sandbox_dir(&record.id);
    let stored = Stored::read(&dir)?;
    let store = oci::Store::open(&root)
        .with_context(|| format!("failed to open the store {}", root.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".save-")
        .tempdir_in(&dir)
        .with_context(|| format!("failed to create a staging directory in {}", dir.display()))?;
    let mut layers = Vec::new();
    if let Some(digest) = &stored.image_digest {
        let upper = dir.join("upper");
        if upper.is_dir() {
            let lower = lower_dir(&root, digest)?;
            let path = staging.path().join("system.tar");
            let file = std::fs::File::create(&path)?;
            let mut writer = std::io::BufWriter::new(file);
            layer::capture::write_upper_layer(&upper, Some(&lower), &mut writer, &system_options())
                .with_context(|| format!("failed to capture {}", upper.display()))?;
            writer.flush()?;
            layers.push(build::save::NewLayer::file(path, "system changes"));
        }
    }
    if let (Some(workspace), Some(snapshot)) = (&stored.workspace, read_snapshot(&dir)?) {
        let path = staging.path().join("workspace.tar");
        let file = std::fs::File::create(&path)?;
        let mut writer = std::io::BufWriter::new(file);
        layer::capture::write_workspace_layer(
            workspace,
            &snapshot,
            workspace,
            &mut writer,
            &workspace_options(),
        )
        .with_context(|| format!("failed to capture the workspace {}", workspace.display()))?;
        writer.flush()?;
        layers.push(build::save::NewLayer::file(path, "workspace changes"));
    }
    let mut labels = BTreeMap::new();
    labels.insert("io.hardbox.sandbox.id".to_owned(), record.id.clone());
    labels.insert("io.hardbox.sandbox.name".to_owned(), record.name.clone());
    if stored.image_digest.is_none() {
        labels.insert(
            "io.hardbox.base".to_owned(),
            "empty (a --host sandbox: only its changed files)".to_owned(),
        );
    }
    let events = dir.join(events::SPOOL_FILE);
    let outcome = build::save::save(
        &store,
        build::save::SaveRequest {
            base: stored.image_digest.clone(),
            layers,
            labels,
            policy_digest: Some(record.policy_digest.clone()),
            created: now_seconds(),
            events: events.is_file().then_some(events),
            tag: args.tag.clone(),
            compression: build::spec::LayerCompression::default(),
            level: None,
        },
    )
    .with_context(|| format!("failed to save sandbox {}", record.name))?;
    if stored.image_digest.is_none() {
        output::info("a --host sandbox: its changed files were saved over an empty base");
    }
    if let Some(output_path) = &args.output {
        let format = match args.format {
            SaveFormat::OciArchive => oci::ExportFormat::OciArchive,
            SaveFormat::DockerArchive => oci::ExportFormat::DockerArchive,
        };
        store
            .export(&args.tag, format, output_path)
            .with_context(|| format!("failed to write {}", output_path.display()))?;
    }
    output::line(&outcome.manifest.digest.to_string())?;
    Ok(exit::OK)
}

/// The system layer: owners as the sandbox saw them (shifted back from the root-mode range,
/// or the caller's ids as root rootless), mtimes clamped to now.
fn system_options() -> layer::capture::CaptureOptions {
    let mut options = layer::capture::CaptureOptions::for_current_user();
    let euid = rustix::process::geteuid();
    options.owners = if euid.is_root() {
        layer::capture::Owners::Unshift {
            uid_base: sandbox::plan::ROOT_MODE_ID_BASE,
            gid_base: sandbox::plan::ROOT_MODE_ID_BASE,
            size: sandbox::plan::ROOT_MODE_ID_COUNT,
        }
    } else {
        layer::capture::Owners::Caller {
            uid: euid.as_raw(),
            gid: rustix::process::getegid().as_raw(),
        }
    };
    options.mtime_clamp = Some(now_seconds());
    options
}

/// The workspace layer: host files, owned by root in the image.
fn workspace_options() -> layer::capture::CaptureOptions {
    let mut options = layer::capture::CaptureOptions::for_current_user();
    options.owners = layer::capture::Owners::Fixed { uid: 0, gid: 0 };
    options.devices = layer::capture::DeviceNodes::Skip;
    options.mtime_clamp = Some(now_seconds());
    options
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |now| now.as_secs())
}

/// `NAME:PATH` → (name, path); a host path has no colon before its first slash.
fn split_sandbox_path(text: &str) -> Option<(&str, &str)> {
    let (name, path) = text.split_once(':')?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    Some((name, path))
}

pub fn cp(root: Option<PathBuf>, args: CpArgs) -> Result<u8> {
    let (_, registry) = registry(root)?;
    let (sandbox, into, sandbox_path, host_path) = match (
        split_sandbox_path(&args.source),
        split_sandbox_path(&args.destination),
    ) {
        (Some(_), Some(_)) => {
            bail!("copy between two sandboxes is not supported: copy through the host")
        }
        (None, None) => bail!("one of SOURCE and DESTINATION must be NAME:PATH"),
        (Some((name, path)), None) => (name, false, path, PathBuf::from(&args.destination)),
        (None, Some((name, path))) => (name, true, path, PathBuf::from(&args.source)),
    };
    let record = lookup(&registry, sandbox)?;
    let dir = registry.sandbox_dir(&record.id);
    if !alive(&dir)? {
        return Err(output::hinted(
            format!("sandbox {} is not running", record.name),
            format!("start it with 'hardbox start {}'", record.name),
        ));
    }
    let init = record
        .init_pid
        .ok_or_else(|| anyhow!("sandbox {} has no init process recorded", record.name))?;
    let root_dir = rustix::fs::open(
        format!("/proc/{init}/root"),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("failed to open the root of sandbox {}", record.name))?;
    let relative = sandbox_path.trim_start_matches('/');
    if into {
        copy_in(root_dir.as_fd(), relative, &host_path)?;
    } else {
        copy_out(root_dir.as_fd(), relative, &host_path)?;
    }
    Ok(exit::OK)
}

fn in_root(
    root: BorrowedFd<'_>,
    path: &str,
    flags: OFlags,
    mode: Mode,
) -> rustix::io::Result<OwnedFd> {
    let path = if path.is_empty() { "." } else { path };
    rustix::fs::openat2(
        root,
        path,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        mode,
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Copies the host path `source` into the sandbox at `target` (into it, when it is a
/// directory). New files get the owner of the directory they land in.
fn copy_in(root: BorrowedFd<'_>, target: &str, source: &Path) -> Result<()> {
    let name = source
        .file_name()
        .ok_or_else(|| anyhow!("invalid source {}", source.display()))?;
    let (parent, leaf) = match in_root(
        root,
        target,
        OFlags::DIRECTORY | OFlags::RDONLY,
        Mode::empty(),
    ) {
        Ok(directory) => (directory, name.to_string_lossy().into_owned()),
        Err(_) => {
            let (parent, leaf) = match target.rsplit_once('/') {
                Some((parent, leaf)) => (parent, leaf),
                None => ("", target),
            };
            let directory = in_root(
                root,
                parent,
                OFlags::DIRECTORY | OFlags::RDONLY,
                Mode::empty(),
            )
            .with_context(|| format!("no directory /{parent} in the sandbox"))?;
            (directory, leaf.to_owned())
        }
    };
    let owner = rustix::fs::fstat(&parent)?;
    // Files are created as the owner of the directory they land in (an id the sandbox maps:
    // its filesystems refuse ids it does not map), then the ids are restored.
    let previous = sys::linux::set_filesystem_ids(owner.st_uid, owner.st_gid);
    let copied = copy_host_entry(parent.as_fd(), &leaf, source, (owner.st_uid, owner.st_gid));
    sys::linux::set_filesystem_ids(previous.0, previous.1);
    copied
}

fn copy_host_entry(
    parent: BorrowedFd<'_>,
    name: &str,
    source: &Path,
    owner: (u32, u32),
) -> Result<()> {
    let metadata = std::fs::symlink_metadata(source)
        .with_context(|| format!("failed to read {}", source.display()))?;
    let mode = Mode::from_raw_mode(metadata.mode() & 0o7777);
    let chown = |fd: BorrowedFd<'_>| {
        let _ = rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(owner.0)),
            Some(rustix::fs::Gid::from_raw(owner.1)),
        );
    };
    if metadata.is_dir() {
        match rustix::fs::mkdirat(parent, name, mode) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(errno) => bail!("failed to create {name} in the sandbox: {errno}"),
        }
        let directory = rustix::fs::openat(
            parent,
            name,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("failed to open {name} in the sandbox"))?;
        chown(directory.as_fd());
        for entry in std::fs::read_dir(source)? {
            let entry = entry?;
            copy_host_entry(
                directory.as_fd(),
                &entry.file_name().to_string_lossy(),
                &entry.path(),
                owner,
            )?;
        }
    } else if metadata.is_symlink() {
        let target = std::fs::read_link(source)?;
        rustix::fs::symlinkat(&target, parent, name)
            .with_context(|| format!("failed to create the symlink {name} in the sandbox"))?;
    } else if metadata.is_file() {
        let mut input = std::fs::File::open(source)?;
        let output = rustix::fs::openat(
            parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            mode,
        )
        .with_context(|| format!("failed to create {name} in the sandbox"))?;
        chown(output.as_fd());
        let mut output = std::fs::File::from(output);
        std::io::copy(&mut input, &mut output)?;
    } else {
        output::warn(&format!(
            "{} is not a file, directory or symlink: skipped",
            source.display()
        ));
    }
    Ok(())
}

/// Copies `source` of the sandbox to the host path `target` (into it, when it is a directory).
fn copy_out(root: BorrowedFd<'_>, source: &str, target: &Path) -> Result<()> {
    let leaf = source
        .rsplit('/')
        .next()
        .filter(|leaf| !leaf.is_empty())
        .unwrap_or("root");
    let target = if target.is_dir() {
        target.join(leaf)
    } else {
        target.to_path_buf()
    };
    let opened = in_root(root, source, OFlags::PATH, Mode::empty())
        .with_context(|| format!("no /{source} in the sandbox"))?;
    copy_sandbox_entry(opened, &target)
}

fn copy_sandbox_entry(opened: OwnedFd, target: &Path) -> Result<()> {
    let stat = rustix::fs::fstat(&opened)?;
    let kind = rustix::fs::FileType::from_raw_mode(stat.st_mode);
    let mode = stat.st_mode & 0o777;
    match kind {
        rustix::fs::FileType::Directory => {
            let directory = rustix::fs::openat(
                &opened,
                ".",
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            std::fs::create_dir(target)
                .or_else(|err| {
                    if err.kind() == std::io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(err)
                    }
                })
                .with_context(|| format!("failed to create {}", target.display()))?;
            let dir = rustix::fs::Dir::read_from(&directory)?;
            for entry in dir {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name == "." || name == ".." {
                    continue;
                }
                let child = rustix::fs::openat(
                    &directory,
                    name.as_str(),
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                copy_sandbox_entry(child, &target.join(&name))?;
            }
        }
        rustix::fs::FileType::RegularFile => {
            let readable =
                rustix::fs::openat(&opened, "", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                    .or_else(|_| {
                        rustix::fs::open(
                            format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&opened)),
                            OFlags::RDONLY | OFlags::CLOEXEC,
                            Mode::empty(),
                        )
                    })?;
            let mut input = std::fs::File::from(readable);
            let mut output = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(target)
                .with_context(|| format!("failed to create {}", target.display()))?;
            std::io::copy(&mut input, &mut output)?;
            let _ = std::fs::set_permissions(
                target,
                std::os::unix::fs::PermissionsExt::from_mode(mode),
            );
        }
        rustix::fs::FileType::Symlink => {
            let link = rustix::fs::readlinkat(&opened, "", Vec::new())?;
            std::os::unix::fs::symlink(std::ffi::OsStr::new(&*link.to_string_lossy()), target)
                .with_context(|| format!("failed to create {}", target.display()))?;
        }
        _ => output::warn(&format!(
            "{} is not a file, directory or symlink: skipped",
            target.display()
        )),
    }
    Ok(())
}
