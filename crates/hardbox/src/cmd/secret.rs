//! `hardbox secret set|ls|rm`: the host-side secret store. Values are files of mode 0600 in a
//! directory of mode 0700 under the store root, written atomically, and never printed.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cli::{SecretCommand, SecretSetArgs};
use crate::{exit, output, settings};

/// The largest secret accepted: API keys and tokens are small; a mistake (a whole file piped
/// in) should not be stored.
const MAX_SECRET_BYTES: usize = 64 * 1024;

pub fn run(root: Option<PathBuf>, command: SecretCommand) -> Result<u8> {
    let directory = directory(&settings::store_root(root)?);
    match command {
        SecretCommand::Set(args) => set(&directory, &args),
        SecretCommand::Ls(flags) => list(&directory, flags.json),
        SecretCommand::Rm(args) => {
            for name in &args.names {
                check_name(name)?;
                match std::fs::remove_file(directory.join(name)) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                        bail!("no secret named {name}")
                    }
                    Err(error) => {
                        return Err(error).with_context(|| format!("failed to remove {name}"))
                    }
                }
            }
            Ok(exit::OK)
        }
    }
}

/// The secret store's directory under the store root.
pub fn directory(store_root: &Path) -> PathBuf {
    store_root.join("secrets")
}

/// A secret's value, for the proxy.
pub fn read(store_root: &Path, name: &str) -> Result<Vec<u8>> {
    check_name(name)?;
    let path = directory(store_root).join(name);
    std::fs::read(&path).with_context(|| {
        format!("secret {name} is not in the store: set it with 'hardbox secret set {name}'")
    })
}

fn check_name(name: &str) -> Result<()> {
    // The sandbox sees the secret as an environment variable of this name.
    let valid = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        bail!(
            "invalid secret name {name:?}: use letters, digits and '_', not starting with a \
             digit (it names an environment variable)"
        );
    }
    Ok(())
}

fn set(directory: &Path, args: &SecretSetArgs) -> Result<u8> {
    check_name(&args.name)?;
    let mut value = Vec::new();
    match &args.from_file {
        Some(path) => {
            std::fs::File::open(path)
                .and_then(|file| {
                    file.take(MAX_SECRET_BYTES as u64 + 1)
                        .read_to_end(&mut value)
                })
                .with_context(|| format!("failed to read {}", path.display()))?;
        }
        None => {
            std::io::stdin()
                .take(MAX_SECRET_BYTES as u64 + 1)
                .read_to_end(&mut value)
                .context("failed to read the secret from stdin")?;
            if value.ends_with(b"\n") {
                value.pop();
                if value.ends_with(b"\r") {
                    value.pop();
                }
            }
        }
    }
    if value.len() > MAX_SECRET_BYTES {
        bail!("the secret is larger than {MAX_SECRET_BYTES} bytes");
    }
    if value.is_empty() {
        bail!("the secret is empty");
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(directory)
        .with_context(|| format!("failed to create {}", directory.display()))?;
    std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("failed to restrict {}", directory.display()))?;
    let staged = directory.join(fsutil::unique_name(".set-"));
    let mut guard = fsutil::TempPath::new(staged.clone());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged)
        .with_context(|| format!("failed to create {}", staged.display()))?;
    file.write_all(&value)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("failed to write {}", staged.display()))?;
    let target = directory.join(&args.name);
    std::fs::rename(&staged, &target)
        .with_context(|| format!("failed to write {}", target.display()))?;
    guard.keep();
    fsutil::sync_dir(directory)
        .with_context(|| format!("failed to sync {}", directory.display()))?;
    output::info(&format!(
        "stored secret {} ({} bytes)",
        args.name,
        value.len()
    ));
    Ok(exit::OK)
}

fn list(directory: &Path, json: bool) -> Result<u8> {
    let mut names = Vec::new();
    match std::fs::read_dir(directory) {
        Ok(entries) => {
            for entry in entries {
                let entry =
                    entry.with_context(|| format!("failed to read {}", directory.display()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    names.push(name);
                }
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("failed to read {}", directory.display()))
        }
    }
    names.sort();
    if json {
        output::json(&names)?;
    } else {
        for name in &names {
            output::line(name)?;
        }
    }
    Ok(exit::OK)
}
