//! `hardbox policy show`: the effective sandbox policy (built-in default, then a policy file),
//! and the one place policy files are read for `run` as well.

use std::path::Path;

use anyhow::{Context, Result};
use policy::Policy;

use crate::cli::PolicyCommand;
use crate::{exit, output};

pub fn run(command: PolicyCommand) -> Result<u8> {
    match command {
        PolicyCommand::Show(args) => {
            let policy = load(args.policy.as_deref())?;
            if args.json {
                output::json(&policy)?;
            } else {
                output::line(policy.to_toml().trim_end())?;
            }
            Ok(exit::OK)
        }
    }
}

/// The built-in default, or `file` layered over it. Errors name the file and, for bad
/// contents, the line.
pub fn load(file: Option<&Path>) -> Result<Policy> {
    let Some(file) = file else {
        return Ok(Policy::default());
    };
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("failed to read policy file {}", file.display()))?;
    Policy::from_toml(&text).with_context(|| format!("policy file {}", file.display()))
}
