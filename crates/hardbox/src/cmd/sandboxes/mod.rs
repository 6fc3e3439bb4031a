//! Long-lived sandboxes (docs/lifecycle.md): `create`, `exec`, `ls`, `stop`, `start`, `rm`,
//! `logs`, `cp`, `diff`, `port`, `events`, `save`, and the hidden `supervise` verb that
//! `create` and `start` spawn, one supervisor per running sandbox.
//!
//! The registry (`state` crate) records sandboxes; a sandbox is running exactly when its
//! supervisor holds `<dir>/supervisor.lock`, which the kernel releases when the supervisor dies
//! however it dies, so every verb asks the lock, not the record.

mod control;
mod exec;
mod files;
mod inspect;
mod lifecycle;
mod supervisor;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use exec::exec;
pub use files::{cp, diff, save};
pub use inspect::{events, logs, port};
pub use lifecycle::{create, ls, rm, start, stop};
pub use supervisor::supervise;

use crate::cli::{Cli, Command, RunArgs};
use crate::output;

/// What `start` relaunches a sandbox with, written once by `create` (`sandbox.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// The `create` command line as typed (parsed again by the supervisor).
    argv: Vec<String>,
    /// The directory `create` ran in: relative paths of the command line are relative to it.
    cwd: PathBuf,
    /// `-e` values resolved at create (`KEY` alone takes the host's value then, not later).
    environment: Vec<String>,
    /// The image's manifest digest, so a moved tag does not change the sandbox's base.
    image_digest: Option<String>,
    /// The image reference as given.
    image: Option<String>,
    /// The workspace bound read-write (host path), if any.
    workspace: Option<PathBuf>,
    otlp_endpoint: Option<String>,
    redact_args: bool,
}

const STORED_FILE: &str = "sandbox.json";
const OUTPUT_LOG: &str = "output.log";
const SUPERVISOR_LOG: &str = "supervisor.log";
const SNAPSHOT_FILE: &str = "workspace.snapshot";

impl Stored {
    fn read(dir: &Path) -> Result<Stored> {
        let path = dir.join(STORED_FILE);
        let bytes =
            std::fs::read(&path).with_context(|| format!("failed to read {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("invalid {}", path.display()))
    }

    fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(STORED_FILE);
        let bytes = serde_json::to_vec_pretty(self)?;
        fsutil::write_atomic(&path, &bytes)
            .with_context(|| format!("failed to write {}", path.display()))
    }

    /// The `run` options of the `create` command line, with the image pinned to its digest and
    /// the environment as resolved at create.
    fn run_args(&self) -> Result<RunArgs> {
        let cli = <Cli as clap::Parser>::try_parse_from(&self.argv)
            .map_err(|err| anyhow!("the stored command line no longer parses: {err}"))?;
        let Command::Create(create) = cli.command else {
            bail!("the stored command line is not a create command");
        };
        let mut args = create.run;
        if let Some(digest) = &self.image_digest {
            args.image = Some(digest.clone());
        }
        args.env = self.environment.clone();
        // A long-lived sandbox has no terminal of its own; exec -t gives commands one.
        args.tty = false;
        args.interactive = false;
        Ok(args)
    }
}

/// The registry of the store at `root` (`--root` or the default).
fn registry(root: Option<PathBuf>) -> Result<(PathBuf, state::Registry)> {
    let root = crate::settings::store_root(root)?;
    let registry = state::Registry::open(&root)
        .with_context(|| format!("failed to open the sandbox registry in {}", root.display()))?;
    Ok((root, registry))
}

/// The record of `name` (a name, an id or a unique id prefix), with a hint when absent.
fn lookup(registry: &state::Registry, name: &str) -> Result<state::SandboxRecord> {
    registry.get(name).map_err(|err| match err {
        state::StateError::NotFound { .. } => output::hinted(
            format!("no sandbox {name:?}"),
            "run 'hardbox ls' to see the sandboxes",
        ),
        other => anyhow!(other),
    })
}

/// Whether the sandbox in `dir` has a live supervisor.
fn alive(dir: &Path) -> Result<bool> {
    state::supervisor_alive(dir)
        .with_context(|| format!("failed to check the supervisor of {}", dir.display()))
}

/// Resolves `-e KEY` (the host's value) and `-e KEY=VALUE` into `KEY=VALUE` strings; a `KEY`
/// the host does not have is left out, as `docker` does.
fn resolve_environment(entries: &[String]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|entry| {
            if entry.contains('=') {
                Some(entry.clone())
            } else {
                std::env::var(entry)
                    .ok()
                    .map(|value| format!("{entry}={value}"))
            }
        })
        .collect()
}

/// `UID[:GID]` (numbers; `root` for 0).
fn parse_user(text: &str) -> Result<(u32, u32)> {
    let number = |part: &str| -> Result<u32> {
        if part == "root" {
            return Ok(0);
        }
        part.parse()
            .map_err(|_| anyhow!("invalid user {text:?}: use UID[:GID] with numbers"))
    };
    match text.split_once(':') {
        Some((uid, gid)) => Ok((number(uid)?, number(gid)?)),
        None => {
            let uid = number(text)?;
            Ok((uid, uid))
        }
    }
}

/// Removes a directory tree that may hold read-only directories (an image's, or overlayfs's
/// work directory): permissions are opened up on the way down. Symlinks are never followed.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
        Ok(_) => {}
    }
    if std::fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    open_up(path)?;
    std::fs::remove_dir_all(path)
}

fn open_up(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::symlink_metadata(path)?;
    if !metadata.is_dir() {
        return Ok(());
    }
    let mode = metadata.permissions().mode();
    if mode & 0o700 != 0o700 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o700))?;
    }
    for entry in std::fs::read_dir(path)? {
        open_up(&entry?.path())?;
    }
    Ok(())
}
