//! `create`, `start`, `stop`, `rm` and `ls`.
//!
//! `create` records the sandbox, writes what `start` needs, and starts its supervisor; it
//! returns once the supervisor reported the sandbox running, or removes everything it made and
//! reports why the sandbox could not start (with `run`'s exit codes). `rm` marks the record
//! `removing` before it deletes anything and deletes the record last, so an interrupted `rm` is
//! finished by the next one.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::control::{self, Reply, Request};
use super::{alive, lookup, registry, remove_tree, Stored, SNAPSHOT_FILE, SUPERVISOR_LOG};
use crate::cli::{CreateArgs, SandboxLsArgs, SandboxNames, SandboxRmArgs, StopArgs};
use crate::{exit, output};

/// What the supervisor writes on its stdout once: the sandbox runs, or why it does not.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Readiness {
    pub ok: bool,
    #[serde(default)]
    pub code: u8,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub init_pid: u32,
}

pub fn create(root: Option<PathBuf>, args: CreateArgs) -> Result<u8> {
    let (root, registry) = registry(root)?;
    if let Some(name) = &args.name {
        state::validate_name(name)?;
    }
    let policy = crate::cmd::run::effective_policy(&args.run)?;
    let policy_digest = format!("sha256:{:x}", Sha256::digest(policy.to_toml().as_bytes()));
    let cwd = std::env::current_dir().context("failed to read the current directory")?;
    let image_digest = match &args.run.image {
        Some(reference) => {
            let store = oci::Store::open(&root)
                .with_context(|| format!("failed to open the store {}", root.display()))?;
            let manifest = store.resolve(reference).map_err(|err| {
                output::hinted(
                    err.to_string(),
                    "run 'hardbox image ls' to see the images in the store",
                )
            })?;
            Some(manifest.digest.to_string())
        }
        None => None,
    };
    let workspace = match (&args.run.workspace, args.run.image.is_none()) {
        (Some(dir), _) => Some(
            std::fs::canonicalize(dir)
                .with_context(|| format!("invalid workspace {}", dir.display()))?,
        ),
        (None, true) => Some(cwd.clone()),
        (None, false) => None,
    };
    let record = registry.insert(&state::NewSandbox {
        name: args.name.clone(),
        image: args.run.image.clone(),
        image_digest: image_digest.clone(),
        host_mode: args.run.host,
        policy_digest,
        command: args.run.command.clone(),
        publishes: args.run.publish.clone(),
        workspace: workspace.as_ref().map(|dir| dir.display().to_string()),
    })?;
    let dir = registry.sandbox_dir(&record.id);
    let made = (|| -> Result<()> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
        let stored = Stored {
            argv: std::env::args().collect(),
            cwd,
            environment: super::resolve_environment(&args.run.env),
            image_digest,
            image: args.run.image.clone(),
            workspace: workspace.clone(),
            otlp_endpoint: args.otlp_endpoint.clone(),
            redact_args: args.redact_args,
        };
        stored.write(&dir)?;
        if let Some(workspace) = &workspace {
            let snapshot = layer::capture::Snapshot::take(workspace).with_context(|| {
                format!("failed to snapshot the workspace {}", workspace.display())
            })?;
            let path = dir.join(SNAPSHOT_FILE);
            fsutil::write_atomic(&path, &snapshot.to_bytes())
                .with_context(|| format!("failed to write {}", path.display()))?;
        }
        Ok(())
    })();
    if let Err(err) = made {
        discard(&registry, &record.id, &dir);
        return Err(err);
    }
    match spawn_supervisor(&root, &record.id, &dir)? {
        Ok(_) => {
            output::line(&record.name)?;
            Ok(exit::OK)
        }
        Err((code, message)) => {
            discard(&registry, &record.id, &dir);
            output::error(&anyhow!(message));
            Ok(code)
        }
    }
}

/// Removes what a failed `create` made.
fn discard(registry: &state::Registry, id: &str, dir: &Path) {
    let _ = registry.set_removing(id);
    let _ = remove_tree(dir);
    let _ = registry.remove(id);
}

/// Starts `hardbox supervise ID` in a session of its own and waits for its readiness line:
/// `Ok(Ok(init pid))`, or `Ok(Err((exit code, message)))` when the sandbox could not start.
fn spawn_supervisor(root: &Path, id: &str, dir: &Path) -> Result<Result<u32, (u8, String)>> {
    let log_path = dir.join(SUPERVISOR_LOG);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("failed to open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("failed to find the hardbox binary")?;
    let mut child = Command::new(exe)
        .arg("--root")
        .arg(root)
        .arg("supervise")
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .env_remove("RUST_BACKTRACE")
        .spawn()
        .context("failed to start the sandbox's supervisor")?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("the supervisor has no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("failed to read the supervisor's readiness")?;
    // The supervisor lives on in its own session; it is not this process's to wait for, but
    // when it ended already its status is collected here.
    let _ = child.try_wait();
    if line.trim().is_empty() {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let last = log.lines().last().unwrap_or("no message").to_owned();
        return Ok(Err((
            exit::LAUNCH_FAILED,
            format!("the supervisor ended before the sandbox started: {last}"),
        )));
    }
    let readiness: Readiness =
        serde_json::from_str(&line).context("the supervisor's readiness line is malformed")?;
    if readiness.ok {
        Ok(Ok(readiness.init_pid))
    } else {
        Ok(Err((readiness.code, readiness.message)))
    }
}

pub fn start(root: Option<PathBuf>, args: SandboxNames) -> Result<u8> {
    let (root, registry) = registry(root)?;
    let mut code = exit::OK;
    for name in &args.sandboxes {
        let record = lookup(&registry, name)?;
        let dir = registry.sandbox_dir(&record.id);
        if record.state == state::SandboxState::Removing {
            output::error(&anyhow!("sandbox {name} is being removed"));
            code = exit::ERROR;
            continue;
        }
        if alive(&dir)? {
            output::info(&format!("sandbox {} is already running", record.name));
            continue;
        }
        match spawn_supervisor(&root, &record.id, &dir)? {
            Ok(_) => output::line(&record.name)?,
            Err((failed, message)) => {
                output::error(&anyhow!("sandbox {}: {message}", record.name));
                code = failed;
            }
        }
    }
    Ok(code)
}

pub fn stop(root: Option<PathBuf>, args: StopArgs) -> Result<u8> {
    let (_, registry) = registry(root)?;
    let grace = Duration::from_secs(args.time);
    for name in &args.sandboxes {
        let record = lookup(&registry, name)?;
        stop_one(&registry, &record, grace)?;
        output::line(&record.name)?;
    }
    Ok(exit::OK)
}

/// Stops the sandbox of `record` if it runs: asks its supervisor, or kills the supervisor when
/// it does not answer (the kernel then kills the sandbox), and waits until its lock is free.
fn stop_one(
    registry: &state::Registry,
    record: &state::SandboxRecord,
    grace: Duration,
) -> Result<()> {
    let dir = registry.sandbox_dir(&record.id);
    if !alive(&dir)? {
        if record.state == state::SandboxState::Running {
            registry.set_stopped(&record.id, None)?;
        }
        return Ok(());
    }
    let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    let asked = control::call(&dir, &Request::Stop { grace_ms });
    if !matches!(asked, Ok(Reply::Stopped { .. })) {
        if let Some(pid) = record
            .supervisor_pid
            .and_then(|pid| rustix::process::Pid::from_raw(pid as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    let deadline = Instant::now() + grace + Duration::from_secs(10);
    while alive(&dir)? {
        if Instant::now() > deadline {
            bail!("sandbox {} did not stop", record.name);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let current = registry.get(&record.id)?;
    if current.state == state::SandboxState::Running {
        registry.set_stopped(&record.id, None)?;
    }
    Ok(())
}

pub fn rm(root: Option<PathBuf>, args: SandboxRmArgs) -> Result<u8> {
    let (_, registry) = registry(root)?;
    let mut code = exit::OK;
    for name in &args.sandboxes {
        let record = lookup(&registry, name)?;
        let dir = registry.sandbox_dir(&record.id);
        if alive(&dir)? {
            if !args.force {
                output::error(&output::hinted(
                    format!("sandbox {} is running", record.name),
                    format!(
                        "stop it first ('hardbox stop {}') or use 'rm -f'",
                        record.name
                    ),
                ));
                code = exit::ERROR;
                continue;
            }
            stop_one(&registry, &record, Duration::ZERO)?;
        }
        registry.set_removing(&record.id)?;
        remove_tree(&dir).with_context(|| format!("failed to remove {}", dir.display()))?;
        registry.remove(&record.id)?;
        output::line(&record.name)?;
    }
    // The cgroups of sandboxes whose supervisor was killed (a stopped sandbox's are gone).
    let _ = sandbox::launch::sweep_cgroups();
    Ok(code)
}

#[derive(Debug, Serialize)]
struct Listed {
    id: String,
    name: String,
    image: Option<String>,
    image_digest: Option<String>,
    host: bool,
    state: String,
    created: String,
    age_seconds: i64,
    command: Vec<String>,
    policy_digest: String,
    init_pid: Option<u32>,
    cpu_seconds: Option<f64>,
    memory_bytes: Option<u64>,
    exit_code: Option<i32>,
    ports: Vec<String>,
}

pub fn ls(root: Option<PathBuf>, args: SandboxLsArgs) -> Result<u8> {
    let (_, registry) = registry(root)?;
    let records = registry.reconcile()?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |now| i64::try_from(now.as_millis()).unwrap_or(i64::MAX));
    let mut listed = Vec::with_capacity(records.len());
    for record in records {
        let dir = registry.sandbox_dir(&record.id);
        let (mut init_pid, mut cpu, mut memory) = (None, None, None);
        if record.state == state::SandboxState::Running {
            if let Ok(Reply::Status {
                init_pid: pid,
                cpu_ns,
                memory_bytes,
            }) = control::call(&dir, &Request::Status)
            {
                init_pid = Some(pid);
                cpu = cpu_ns.map(|ns| ns as f64 / 1e9);
                memory = memory_bytes;
            }
        }
        let seconds = (now_ms - record.created_at_unix_ms).max(0) / 1000;
        listed.push(Listed {
            created: types::time::rfc3339(
                u64::try_from(record.created_at_unix_ms / 1000).unwrap_or(0),
            )
            .unwrap_or_default(),
            id: record.id,
            name: record.name,
            image: record.image,
            image_digest: record.image_digest,
            host: record.host_mode,
            state: record.state.to_string(),
            age_seconds: seconds,
            command: record.command,
            policy_digest: record.policy_digest,
            init_pid,
            cpu_seconds: cpu,
            memory_bytes: memory,
            exit_code: record.exit_code,
            ports: record.publishes,
        });
    }
    if args.json {
        output::json(&listed)?;
        return Ok(exit::OK);
    }
    if args.quiet {
        for sandbox in &listed {
            output::line(&sandbox.id)?;
        }
        return Ok(exit::OK);
    }
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|sandbox| {
            let state = match (sandbox.state.as_str(), sandbox.exit_code) {
                ("stopped", Some(code)) => format!("stopped ({code})"),
                (state, _) => state.to_owned(),
            };
            vec![
                sandbox.name.clone(),
                sandbox.id.clone(),
                sandbox.image.clone().unwrap_or_else(|| "--host".to_owned()),
                state,
                human_age(sandbox.age_seconds),
                sandbox
                    .cpu_seconds
                    .map_or_else(|| "-".to_owned(), |cpu| format!("{cpu:.2}s")),
                sandbox
                    .memory_bytes
                    .map_or_else(|| "-".to_owned(), human_bytes),
                sandbox.policy_digest.chars().take(19).collect(),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME", "ID", "IMAGE", "STATE", "AGE", "CPU", "MEMORY", "POLICY",
        ],
        &rows,
    )?;
    Ok(exit::OK)
}

fn human_age(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn human_bytes(bytes: u64) -> String {
    let mut value = bytes as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if value < 1024.0 {
            return format!("{value:.1}{unit}");
        }
        value /= 1024.0;
    }
    format!("{value:.1}TiB")
}
