//! `hardbox system ...`

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::cli::SystemCommand;

pub fn run(_root: Option<PathBuf>, _command: SystemCommand) -> Result<u8> {
    bail!("system commands are not built yet")
}
