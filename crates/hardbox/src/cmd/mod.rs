//! One module per verb group; each takes parsed arguments, resolves them and acts.

mod build;
mod doctor;
mod image;
mod key;
mod network;
mod policy;
mod publish;
mod run;
mod sandboxes;
mod secret;
mod supply;
mod system;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::{exit, output};

pub fn dispatch(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Image(command) => image::run(cli.root, command),
        Command::System(command) => system::run(cli.root, command),
        Command::Version(flags) => version(flags.json),
        Command::Run(args) => run::run(cli.root, *args),
        Command::Doctor(args) => doctor::run(&args),
        Command::Policy(command) => policy::run(command),
        Command::Key(command) => key::run(command),
        Command::Build(args) => build::build(cli.root, *args),
        Command::Lock(args) => build::lock(cli.root, args),
        Command::Sbom(args) => supply::sbom(cli.root, args),
        Command::Verify(args) => supply::verify(cli.root, args),
        Command::Secret(command) => secret::run(cli.root, command),
        Command::Create(args) => sandboxes::create(cli.root, *args),
        Command::Exec(args) => sandboxes::exec(cli.root, args),
        Command::Ls(args) => sandboxes::ls(cli.root, args),
        Command::Stop(args) => sandboxes::stop(cli.root, args),
        Command::Start(args) => sandboxes::start(cli.root, args),
        Command::Rm(args) => sandboxes::rm(cli.root, args),
        Command::Logs(args) => sandboxes::logs(cli.root, args),
        Command::Cp(args) => sandboxes::cp(cli.root, args),
        Command::Diff(args) => sandboxes::diff(cli.root, args),
        Command::Port(args) => sandboxes::port(cli.root, args),
        Command::Events(args) => sandboxes::events(cli.root, args),
        Command::Save(args) => sandboxes::save(cli.root, args),
        Command::Supervise(args) => sandboxes::supervise(cli.root, args),
    }
}

/// The exit code for an error that reached the top.
pub fn exit_code_for(_err: &anyhow::Error) -> u8 {
    exit::ERROR
}

fn version(json: bool) -> Result<u8> {
    let version = env!("CARGO_PKG_VERSION");
    if json {
        output::json(&serde_json::json!({ "version": version }))?;
    } else {
        output::line(&format!("hardbox {version}"))?;
    }
    Ok(exit::OK)
}
