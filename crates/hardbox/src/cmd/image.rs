//! `hardbox image ...`

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::cli::ImageCommand;

pub fn run(_root: Option<PathBuf>, _command: ImageCommand) -> Result<u8> {
    bail!("image commands are not built yet")
}
