//! The `hardbox` command line: parse, resolve settings, act, print.
//!
//! This is the only crate that prints. Libraries return values and typed errors; this crate turns
//! them into text or JSON on stdout, messages on stderr, and the exit codes of `DESIGN.md` §1.

// The binary is the one place allowed to print.
#![allow(clippy::print_stdout, clippy::print_stderr)]
// `main` is defined by `sys::entry!`, which skips the runtime's start-up probes (see there).
#![cfg_attr(not(test), no_main)]

mod cli;
mod cmd;
mod output;
mod settings;

use clap::Parser;

use crate::cli::Cli;

/// Exit codes shared by every verb (the `docker run` convention).
pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const USAGE: u8 = 2;
    /// hardbox itself failed before the command could start.
    pub const LAUNCH_FAILED: u8 = 125;
    pub const NOT_EXECUTABLE: u8 = 126;
    pub const NOT_FOUND: u8 = 127;
}

#[cfg(not(test))]
sys::entry!(run);

#[cfg_attr(test, allow(dead_code))]
fn run() -> u8 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = err.print();
            return code;
        }
    };
    match cmd::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            output::error(&err);
            cmd::exit_code_for(&err)
        }
    }
}
