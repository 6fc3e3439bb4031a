//! `hardbox key generate`: a signing key pair for attestations, written with safe modes.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cli::{KeyAlgorithm, KeyCommand, KeyGenerateArgs};
use crate::{exit, output};

pub fn run(command: KeyCommand) -> Result<u8> {
    match command {
        KeyCommand::Generate(args) => generate(&args),
    }
}

fn generate(args: &KeyGenerateArgs) -> Result<u8> {
    let private_path = with_suffix(&args.prefix, "key");
    let public_path = with_suffix(&args.prefix, "pub");
    if !args.force {
        for path in [&private_path, &public_path] {
            if path.exists() {
                bail!("{} exists: pass --force to replace it", path.display());
            }
        }
    }
    let algorithm = match args.algorithm {
        KeyAlgorithm::Ed25519 => attest::Algorithm::Ed25519,
        KeyAlgorithm::EcdsaP256 => attest::Algorithm::EcdsaP256,
    };
    let key = attest::Key::generate(algorithm).context("failed to generate the key")?;
    let private_pem = key.to_pem().context("failed to encode the private key")?;
    let public_pem = key
        .public_key()
        .to_pem()
        .context("failed to encode the public key")?;
    // The private key never exists with a wider mode, not even for a moment.
    write_new(&private_path, private_pem.as_bytes(), 0o600)?;
    write_new(&public_path, public_pem.as_bytes(), 0o644)?;
    if args.json {
        output::json(&serde_json::json!({
            "keyid": key.keyid(),
            "algorithm": key.algorithm().to_string(),
            "private_key": private_path,
            "public_key": public_path,
        }))?;
    } else {
        output::line(&format!(
            "wrote {} (private, keep it secret) and {} (public); key id {}",
            private_path.display(),
            public_path.display(),
            key.keyid()
        ))?;
    }
    Ok(exit::OK)
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes `bytes` to a temporary sibling created with `mode`, syncs it, and renames it over
/// `path`: the file appears whole or not at all.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let staged = directory.join(fsutil::unique_name(".hardbox-key-"));
    let mut guard = fsutil::TempPath::new(staged.clone());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&staged)
        .with_context(|| format!("failed to create {}", staged.display()))?;
    // The umask may have narrowed the mode; it must not have widened it, but set it exactly.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("failed to write {}", staged.display()))?;
    std::fs::rename(&staged, path)
        .with_context(|| format!("failed to write {}", path.display()))?;
    guard.keep();
    fsutil::sync_dir(&directory)
        .with_context(|| format!("failed to sync {}", directory.display()))?;
    Ok(())
}
