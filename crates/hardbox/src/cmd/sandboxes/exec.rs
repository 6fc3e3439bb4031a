//! `hardbox exec NAME -- COMMAND`: runs a command in a running sandbox.
//!
//! The CLI hands its own stdin (with `-i`; `/dev/null` otherwise), stdout and stderr to the
//! supervisor, which hands them to the sandbox's init: the command writes straight into them.
//! With `-t` the command gets a terminal of the sandbox's devpts and the CLI relays its master,
//! as `run -t` does. INT, TERM, HUP and QUIT are forwarded to the command. The exit code is
//! the command's (128+N for signal N), or 125/126/127 as for `run`.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use rustix::event::{PollFd, PollFlags};
use sys::process::{SignalFd, SignalSet};

use super::control::{self, ExecCommand, Received, Reply, Request};
use super::{alive, lookup, parse_user, registry};
use crate::cli::ExecArgs;
use crate::{exit, output};

/// Signals forwarded to the command (WINCH is handled by the terminal relay).
const FORWARDED: [i32; 5] = [1, 2, 3, 15, 28];
const WINCH: i32 = 28;

pub fn exec(root: Option<PathBuf>, args: ExecArgs) -> Result<u8> {
    let root = crate::settings::store_root(root)?;
    // The name index reaches a running sandbox without opening the database; anything else
    // (an id, a stopped sandbox, a missing link) goes through the registry.
    let indexed =
        state::indexed_dir(&root, &args.sandbox).and_then(|dir| control::connect(&dir).ok());
    let socket = match indexed {
        Some(socket) => socket,
        None => match connect(root, &args.sandbox)? {
            Ok(socket) => socket,
            Err(code) => return Ok(code),
        },
    };
    let environment = super::resolve_environment(&args.env)
        .into_iter()
        .filter_map(|entry| {
            entry
                .split_once('=')
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
        })
        .collect();
    let user = args.user.as_deref().map(parse_user).transpose()?;
    let request = Request::Exec(ExecCommand {
        arguments: args.command.clone(),
        environment,
        working_directory: args.workdir.clone(),
        user,
        tty: args.tty,
        traceparent: std::env::var("TRACEPARENT").ok().filter(|v| !v.is_empty()),
    });
    let signals = SignalSet::of(&FORWARDED);
    let previous = sys::process::block_signals(&signals)
        .map_err(|errno| anyhow!("failed to block signals: {errno}"))?;
    let result = run(&socket, &request, &args, &signals);
    let _ = sys::process::set_signal_mask(&previous);
    result
}

/// The control socket of the sandbox `name` found through the registry, or the exit code when
/// it is not running (after saying so).
fn connect(root: PathBuf, name: &str) -> Result<Result<OwnedFd, u8>> {
    let (_, registry) = registry(Some(root))?;
    let record = lookup(&registry, name)?;
    let dir = registry.sandbox_dir(&record.id);
    match control::connect(&dir) {
        Ok(socket) => Ok(Ok(socket)),
        Err(err) => {
            if !alive(&dir)? {
                output::error(&output::hinted(
                    format!("sandbox {} is not running", record.name),
                    format!("start it with 'hardbox start {}'", record.name),
                ));
                return Ok(Err(exit::LAUNCH_FAILED));
            }
            Err(err)
        }
    }
}

fn run(socket: &OwnedFd, request: &Request, args: &ExecArgs, signals: &SignalSet) -> Result<u8> {
    let signal_fd = SignalFd::open(signals).map_err(|errno| anyhow!("signalfd: {errno}"))?;
    if args.tty {
        control::send(socket.as_fd(), request, &[])?;
    } else {
        let stdin: OwnedFd = if args.interactive {
            rustix::io::dup(std::io::stdin().as_fd())?
        } else {
            OwnedFd::from(std::fs::File::open("/dev/null")?)
        };
        let stdout = std::io::stdout();
        let stderr = std::io::stderr();
        control::send(
            socket.as_fd(),
            request,
            &[stdin.as_fd(), stdout.as_fd(), stderr.as_fd()],
        )?;
    }
    let mut relay: Option<sandbox::Relay> = None;
    loop {
        let mut fds = Vec::with_capacity(6);
        fds.push(PollFd::new(socket, PollFlags::IN));
        fds.push(PollFd::new(&signal_fd, PollFlags::IN));
        let interest = relay
            .as_ref()
            .map(|relay| relay.poll_fds(&mut fds))
            .unwrap_or_default();
        match rustix::event::poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(errno) => bail!("poll: {errno}"),
        }
        let events: Vec<PollFlags> = fds.iter().map(PollFd::revents).collect();
        drop(fds);
        if let Some(relay) = relay.as_mut() {
            relay.pump(interest, &events);
        }
        if !events[1].is_empty() {
            while let Ok(Some(signal)) = signal_fd.take() {
                if signal == WINCH {
                    if let Some(relay) = relay.as_ref() {
                        relay.resize();
                    }
                } else {
                    let _ = control::send(socket.as_fd(), &Request::Signal { signal }, &[]);
                }
            }
        }
        if events[0].is_empty() {
            continue;
        }
        let mut received = Vec::new();
        match control::receive::<Reply>(socket.as_fd(), &mut received)? {
            Received::Message(Reply::Started { .. }) => {
                if args.tty {
                    let Some(master) = received.pop() else {
                        bail!("the sandbox sent no terminal");
                    };
                    relay = Some(
                        sandbox::Relay::new(master, args.interactive)
                            .map_err(|errno| anyhow!("failed to relay the terminal: {errno}"))?,
                    );
                }
            }
            Received::Message(Reply::Failed { code, message }) => {
                output::error(&anyhow!(message));
                return Ok(code);
            }
            Received::Message(Reply::Exited { code }) => {
                if let Some(relay) = relay.as_mut() {
                    relay.finish(std::time::Duration::from_millis(500));
                }
                return Ok(u8::try_from(code).unwrap_or(exit::LAUNCH_FAILED));
            }
            Received::Message(Reply::Error { message }) => {
                output::error(&anyhow!(message));
                return Ok(exit::LAUNCH_FAILED);
            }
            Received::Message(_) | Received::Empty => {}
            Received::Closed => {
                output::error(&anyhow!("the sandbox stopped while the command ran"));
                return Ok(137);
            }
        }
    }
}
