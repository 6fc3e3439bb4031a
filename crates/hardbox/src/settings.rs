//! Resolves flags, environment and defaults into the values actions take.

use std::path::PathBuf;

use anyhow::{bail, Result};

/// Where the store lives: `--root`, else `$HARDBOX_ROOT`, else `/var/lib/hardbox` for root and
/// `$XDG_DATA_HOME/hardbox` (or `~/.local/share/hardbox`) for everyone else.
pub fn store_root(flag: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(root) = flag {
        return Ok(root);
    }
    if let Some(root) = std::env::var_os("HARDBOX_ROOT").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(root));
    }
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/hardbox"));
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(data).join("hardbox"));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(home).join(".local/share/hardbox"));
    }
    bail!("cannot find a store root: set HARDBOX_ROOT or pass --root")
}
