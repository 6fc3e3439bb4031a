//! `hardbox run`: resolves the command line into [`sandbox::SandboxSettings`], plans, launches,
//! and exits with the command's status (125 when hardbox failed, 126/127 when the command
//! could not be executed or found, 128+N when signal N killed it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use policy::{Layer, NetworkMode, PathVariables, Policy, PolicyOverrides};
use sandbox::{
    Bind, CacheOwnership, ExitStatus, HiddenKind, HiddenPath, Identity, ImageRootfs, LaunchError,
    LaunchPlan, ResourceLimits, Rootfs, RootfsError, SandboxSettings, Scratch, SkippedLayers,
};

use super::{network, publish};
use crate::cli::{NetworkModeArg, RunArgs, SkippableLayer};
use crate::{exit, output, settings};

const HINT_DOCTOR: &str = "run 'hardbox doctor' to see which layers this host can enforce";

pub fn run(root: Option<PathBuf>, args: RunArgs) -> Result<u8> {
    if args.image.is_none() && args.command.is_empty() {
        output::error(&anyhow!(
            "run --host needs a command: hardbox run --host -- COMMAND [ARGS...]"
        ));
        return Ok(exit::USAGE);
    }
    // With an image, the sandbox's upper directory lives until the command ends (`--rm`).
    let image = match args
        .image
        .as_deref()
        .map(|image| prepare_image(root.clone(), image, &args))
    {
        None => None,
        Some(Ok(image)) => Some(image),
        Some(Err(err)) => {
            output::error(&err);
            return Ok(exit::LAUNCH_FAILED);
        }
    };
    let (settings, mut proxy) = match resolve(root.as_deref(), &args, image.as_ref()) {
        Ok(resolved) => resolved,
        Err(err) => {
            output::error(&err);
            return Ok(exit::LAUNCH_FAILED);
        }
    };
    let plan = match LaunchPlan::new(settings) {
        Ok(plan) => plan,
        Err(err) => {
            output::error(&anyhow!(err).context("invalid sandbox settings"));
            return Ok(exit::LAUNCH_FAILED);
        }
    };
    for path in &plan.unhidden {
        output::warn(&format!(
            "{} is not hidden: a bind mounts into it",
            path.display()
        ));
    }
    let publishes = match args
        .publish
        .iter()
        .map(|text| publish::parse(text))
        .collect::<Result<Vec<_>>>()
        .and_then(|publishes| publish::Publisher::bind(&publishes))
    {
        Ok(publisher) => publisher,
        Err(err) => {
            output::error(&err);
            return Ok(exit::LAUNCH_FAILED);
        }
    };
    let mut hooks = RunHooks {
        proxy: proxy.take(),
        publisher: publishes,
    };
    let launched = sandbox::launch_with(&plan, &mut hooks);
    // The proxy serves the sandbox until its command ended.
    drop(hooks);
    match launched {
        Ok(status) => {
            match status {
                ExitStatus::OutOfMemory { limit_bytes } => output::error(&anyhow!(
                    "the command was killed: out of memory (limit {})",
                    human_size(limit_bytes)
                )),
                ExitStatus::TimedOut { after } => output::error(&anyhow!(
                    "the command timed out after {}",
                    human_duration(after)
                )),
                ExitStatus::Exited(_) | ExitStatus::Signaled(_) => {}
            }
            Ok(u8::try_from(status.code()).unwrap_or(exit::LAUNCH_FAILED))
        }
        Err(err) => {
            let code = match err {
                LaunchError::CommandNotFound { .. } => exit::NOT_FOUND,
                LaunchError::NotExecutable { .. } => exit::NOT_EXECUTABLE,
                _ => exit::LAUNCH_FAILED,
            };
            output::error(&describe(&err));
            Ok(code)
        }
    }
}

/// What `run` does at the launch's points: serve the proxy's listeners, forward published
/// ports.
struct RunHooks {
    proxy: Option<network::ProxySetup>,
    publisher: publish::Publisher,
}

impl sandbox::Hooks for RunHooks {
    fn network(&mut self, listeners: sandbox::ProxyListeners) -> Result<(), String> {
        match self.proxy.as_mut() {
            Some(proxy) => proxy.network(listeners),
            None => Err("no proxy was set up for the sandbox's network".to_owned()),
        }
    }

    fn started(&mut self, init: u32) -> Result<(), String> {
        self.publisher
            .start(init)
            .map_err(|error| format!("{error:#}"))
    }
}

/// The message and hint for a launch failure.
pub(super) fn describe(err: &LaunchError) -> anyhow::Error {
    let message = match err {
        LaunchError::CommandNotFound { .. } | LaunchError::NotExecutable { .. } => err.to_string(),
        _ => {
            // The whole chain: a cgroup error names the controller in its source.
            let mut message = format!("failed to start sandbox: {err}");
            let mut source = std::error::Error::source(err);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            message
        }
    };
    let hint = match err {
        LaunchError::Step { step, .. } if step == "landlock" => Some(
            "this kernel does not enforce Landlock; '--dangerously-skip landlock' runs without it"
                .to_owned(),
        ),
        LaunchError::Step { step, .. } if step == "seccomp" => Some(
            "this kernel refused the seccomp filter; '--dangerously-skip seccomp' runs without it"
                .to_owned(),
        ),
        LaunchError::Namespaces { .. } => Some(format!(
            "user namespaces may be disabled on this host (sysctl user.max_user_namespaces, \
             AppArmor's unprivileged_userns restriction); {HINT_DOCTOR}"
        )),
        LaunchError::PrepareMount { call, .. } if call.starts_with("idmapped") => Some(
            "as root, writable binds are idmapped mounts: the filesystem must support them \
             (ext4, xfs, btrfs, overlayfs, tmpfs on Linux 6.3+)"
                .to_owned(),
        ),
        LaunchError::Cgroup(_) | LaunchError::CgroupDetect(_) | LaunchError::CgroupJoin { .. } => {
            Some(format!(
                "'--dangerously-skip cgroups' runs without resource limits; {HINT_DOCTOR}"
            ))
        }
        LaunchError::CommandNotFound { .. } => Some(
            "the command is searched in the sandbox's PATH; pass -e PATH=... or an absolute path"
                .to_owned(),
        ),
        LaunchError::Step { .. } | LaunchError::Parent { .. } | LaunchError::IdMap { .. } => {
            Some(HINT_DOCTOR.to_owned())
        }
        _ => None,
    };
    match hint {
        Some(hint) => output::hinted(message, hint),
        None => anyhow!(message),
    }
}

/// `512 MiB`, `2 GiB`: a byte count in the largest binary unit that divides it.
fn human_size(bytes: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// `5s`, `1m30s`, `250ms`: a duration as the policy writes them.
fn human_duration(duration: std::time::Duration) -> String {
    let millis = duration.as_millis();
    if !millis.is_multiple_of(1000) {
        return format!("{millis}ms");
    }
    let mut seconds = duration.as_secs();
    let mut text = String::new();
    for (unit, size) in [("h", 3600), ("m", 60)] {
        if seconds >= size {
            text.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    if seconds > 0 || text.is_empty() {
        text.push_str(&format!("{seconds}s"));
    }
    text
}

/// The policy file (or the default) with the command line's flags layered over it.
pub fn effective_policy(args: &RunArgs) -> Result<Policy> {
    let policy = super::policy::load(args.policy.as_deref())?;
    let mut overrides = PolicyOverrides::default();
    if let Some(memory) = &args.memory {
        let bytes =
            policy::parse_size(memory).with_context(|| format!("invalid --memory {memory:?}"))?;
        overrides.memory = Some(
            policy::ByteSize::new(bytes).with_context(|| format!("invalid --memory {memory:?}"))?,
        );
    }
    if let Some(pids) = args.pids_limit {
        overrides.pids =
            Some(policy::Count::new(pids).with_context(|| format!("invalid --pids-limit {pids}"))?);
    }
    if let Some(cpus) = args.cpus {
        overrides.cpus =
            Some(policy::Cpus::new(cpus).with_context(|| format!("invalid --cpus {cpus}"))?);
    }
    if let Some(timeout) = &args.timeout {
        let duration = policy::parse_duration(timeout)
            .with_context(|| format!("invalid --timeout {timeout:?}"))?;
        overrides.timeout = Some(
            policy::HumanDuration::new(duration)
                .with_context(|| format!("invalid --timeout {timeout:?}"))?,
        );
    }
    overrides.network = match args.network {
        Some(NetworkModeArg::None) => Some(NetworkMode::None),
        Some(NetworkModeArg::Proxy) => Some(NetworkMode::Proxy),
        Some(NetworkModeArg::Host) => Some(NetworkMode::Host),
        // Network rules on the command line mean the proxy.
        None if !(args.allow_host.is_empty()
            && args.deny_host.is_empty()
            && args.allow_cidr.is_empty()
            && args.allow_tcp.is_empty()) =>
        {
            Some(NetworkMode::Proxy)
        }
        None => None,
    };
    overrides.allow_hosts = args.allow_host.clone();
    overrides.deny_hosts = args.deny_host.clone();
    overrides.allow_cidrs = args.allow_cidr.clone();
    overrides.allow_tcp = args.allow_tcp.clone();
    overrides.strict_hostname = args.strict_hostname;
    overrides.dangerously_skip = args
        .dangerously_skip
        .iter()
        .map(|layer| match layer {
            SkippableLayer::Landlock => Layer::Landlock,
            SkippableLayer::Seccomp => Layer::Seccomp,
            SkippableLayer::Cgroups => Layer::Cgroups,
        })
        .collect();
    policy
        .merge(&overrides)
        .context("invalid policy after applying the command line")
}

/// An image's cached root filesystem and, unless `--read-only`, the sandbox's own upper
/// directory over it.
pub(super) struct PreparedImage {
    pub rootfs: ImageRootfs,
    pub scratch: Option<Scratch>,
    /// A long-lived sandbox's own upper and work directories (kept across stop and start).
    pub persistent: Option<(PathBuf, PathBuf)>,
}

const HINT_IMAGES: &str =
    "run 'hardbox image ls' to see the images in the store, or 'hardbox image import' to add one";

/// The cached root filesystem of image `reference` in the store at `root`, unpacked for this
/// user's sandboxes (shifted ids as root, the caller's own rootless) on first use.
pub(super) fn image_rootfs(root: &Path, reference: &str) -> Result<ImageRootfs> {
    let store = oci::Store::open(root)
        .with_context(|| format!("failed to open the store {}", root.display()))?;
    let euid = rustix::process::geteuid();
    let ownership = if euid.is_root() {
        CacheOwnership::Shifted
    } else {
        CacheOwnership::Caller { uid: euid.as_raw() }
    };
    match sandbox::rootfs::prepare(&store, reference, ownership) {
        Ok(rootfs) => Ok(rootfs),
        Err(RootfsError::Resolve(err @ oci::ResolveError::NotFound { .. })) => {
            Err(output::hinted(err.to_string(), HINT_IMAGES))
        }
        Err(err) => Err(anyhow!(err)),
    }
}

fn prepare_image(root: Option<PathBuf>, reference: &str, args: &RunArgs) -> Result<PreparedImage> {
    let root = crate::settings::store_root(root)?;
    let rootfs = image_rootfs(&root, reference)?;
    let euid = rustix::process::geteuid();
    let scratch = if args.read_only {
        None
    } else if euid.is_root() && sandbox::rootfs::in_memory_supported() {
        // `run` throws the sandbox away: its writes live in a tmpfs as large as its memory
        // limit, which they count against, and nothing is created on the store's disk.
        let limit = effective_policy(args)
            .ok()
            .map(|policy| policy.limits.memory.bytes());
        Some(Scratch::in_memory(&rootfs, limit)?)
    } else {
        Some(Scratch::create(&rootfs)?)
    };
    Ok(PreparedImage {
        rootfs,
        scratch,
        persistent: None,
    })
}

/// An image's cached root filesystem for a long-lived sandbox, whose upper and work
/// directories are `upper` and `work` (created by the caller; kept across stop and start).
pub(super) fn prepare_persistent_image(
    root: &Path,
    reference: &str,
    upper: &Path,
    work: &Path,
) -> Result<PreparedImage> {
    Ok(PreparedImage {
        rootfs: image_rootfs(root, reference)?,
        scratch: None,
        persistent: Some((upper.to_path_buf(), work.to_path_buf())),
    })
}

/// Resolves the command line and policy: paths made absolute and free of symlinks, defaults
/// applied.
pub(super) fn resolve(
    root: Option<&Path>,
    args: &RunArgs,
    image: Option<&PreparedImage>,
) -> Result<(SandboxSettings, Option<network::ProxySetup>)> {
    let policy = effective_policy(args)?;
    if policy.skips(Layer::Userns) {
        bail!("the user namespace cannot be skipped: the process sandbox is built on it");
    }
    network::check_mode(&policy)?;
    let proxy = if policy.network.mode == NetworkMode::Proxy {
        let store_root = settings::store_root(root.map(Path::to_path_buf))?;
        Some(network::prepare(&policy, &store_root)?)
    } else {
        None
    };
    let mut settings = match image {
        Some(image) => resolve_image(args, &policy, image)?,
        None => resolve_host(args, &policy)?,
    };
    if let Some(proxy) = &proxy {
        settings.network = sandbox::Network::Proxy {
            tcp_ports: proxy.tcp_ports.clone(),
        };
        for (name, value) in &proxy.environment {
            settings
                .environment
                .retain(|(existing, _)| existing != name);
            settings.environment.push((name.clone(), value.clone()));
        }
        settings.binds.extend(proxy.ca_bind());
    }
    Ok((settings, proxy))
}

/// `--host`: the host's root read-only, the workspace writable.
fn resolve_host(args: &RunArgs, policy: &Policy) -> Result<SandboxSettings> {
    let policy = policy.clone();
    let workspace = match &args.workspace {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("failed to read the current directory")?,
    };
    let workspace = canonical(&workspace, "workspace")?;
    let environment = environment(args, &policy, &[])?;
    // `~` is the sandbox's HOME, so `-e HOME=...` moves what is hidden with it.
    let home = environment
        .get("HOME")
        .map(PathBuf::from)
        .filter(|home| home.is_absolute());
    let filesystem = policy
        .filesystem
        .expand(PathVariables {
            home: home.as_deref(),
            workspace: Some(&workspace),
        })
        .context("invalid policy paths")?;
    if !filesystem.read.iter().any(|path| path == Path::new("/")) {
        bail!("a filesystem.read without \"/\" is not supported yet: the sandbox reads the whole host root");
    }
    let mut binds = vec![Bind {
        source: workspace.clone(),
        target: workspace.clone(),
        writable: true,
        directory: true,
    }];
    for path in &filesystem.write {
        // The workspace is bound above; /tmp is the sandbox's own tmpfs.
        if *path == workspace || path == Path::new("/tmp") {
            continue;
        }
        // A grant of a path that does not exist grants nothing.
        let Ok(source) = std::fs::canonicalize(path) else {
            continue;
        };
        let directory = source.is_dir();
        binds.push(Bind {
            source,
            target: path.clone(),
            writable: true,
            directory,
        });
    }
    for volume in &args.volumes {
        binds.push(parse_volume(volume)?);
    }

    let working_directory = match &args.workdir {
        Some(dir) if dir.is_absolute() => dir.clone(),
        Some(dir) => workspace.join(dir),
        None => workspace.clone(),
    };

    let hidden = hidden_paths(&filesystem.hide)?;

    let identity = identity(args.user.as_deref())?;
    let skip = skipped_layers(args, &policy);
    Ok(SandboxSettings {
        program: args.command[0].clone(),
        arguments: args.command.clone(),
        environment: environment.into_iter().collect(),
        working_directory,
        rootfs: Rootfs::Host,
        binds,
        hidden,
        tmpfs: args.tmpfs.clone(),
        hostname: args.hostname.clone(),
        identity,
        skip,
        limits: resource_limits(&policy),
        timeout: Some(policy.limits.timeout.duration()),
        seccomp_allow: seccomp_allow(&policy),
        tty: args.tty,
        interactive: args.interactive,
        network: sandbox::Network::Loopback,
    })
}

fn skipped_layers(args: &RunArgs, policy: &Policy) -> SkippedLayers {
    SkippedLayers {
        landlock: policy.skips(Layer::Landlock),
        seccomp: policy.skips(Layer::Seccomp),
        cgroups: policy.skips(Layer::Cgroups) || default_limits_unenforceable(args, policy),
    }
}

fn resource_limits(policy: &Policy) -> ResourceLimits {
    let limits = &policy.limits;
    ResourceLimits {
        memory_bytes: Some(limits.memory.bytes()),
        pids: Some(limits.pids.get()),
        cpus: Some(limits.cpus.get()),
        open_files: Some(limits.nofile.get()),
    }
}

fn seccomp_allow(policy: &Policy) -> Vec<String> {
    policy
        .seccomp
        .allow
        .iter()
        .map(|name| name.as_str().to_owned())
        .collect()
}

/// Image mode: the image's root filesystem (an overlay, or read-only), its config's Env,
/// Entrypoint, Cmd, WorkingDir and User as defaults under the flags. The host's paths are not
/// visible: only `--workspace` and `-v` bind them.
fn resolve_image(
    args: &RunArgs,
    policy: &Policy,
    image: &PreparedImage,
) -> Result<SandboxSettings> {
    let config = &image.rootfs.config;
    let image_env = config.env.clone().unwrap_or_default();
    let environment = environment(args, policy, &image_env)?;
    let mut arguments = config.entrypoint.clone().unwrap_or_default();
    if args.command.is_empty() {
        arguments.extend(config.cmd.clone().unwrap_or_default());
    } else {
        arguments.extend(args.command.iter().cloned());
    }
    let Some(program) = arguments.first().cloned() else {
        bail!(
            "image {} has no Entrypoint or Cmd: give the command after '--'",
            args.image.as_deref().unwrap_or_default()
        );
    };
    let image_workdir = config
        .working_dir
        .as_deref()
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| PathBuf::from("/"), PathBuf::from);
    let image_workdir = if image_workdir.is_absolute() {
        image_workdir
    } else {
        Path::new("/").join(image_workdir)
    };
    let mut binds = Vec::new();
    if let Some(workspace) = &args.workspace {
        let workspace = canonical(workspace, "workspace")?;
        binds.push(Bind {
            source: workspace.clone(),
            target: workspace,
            writable: true,
            directory: true,
        });
    }
    for volume in &args.volumes {
        binds.push(parse_volume(volume)?);
    }
    let working_directory = match &args.workdir {
        Some(dir) => image_workdir.join(dir),
        None => image_workdir,
    };
    let home = environment
        .get("HOME")
        .map(PathBuf::from)
        .filter(|home| home.is_absolute());
    // Hidden host paths matter only where a bind shows the host.
    let hidden = if binds.is_empty() {
        Vec::new()
    } else {
        let workspace = match binds.first() {
            Some(bind) if args.workspace.is_some() => bind.source.clone(),
            _ => std::env::current_dir().context("failed to read the current directory")?,
        };
        let filesystem = policy
            .filesystem
            .expand(PathVariables {
                home: home.as_deref(),
                workspace: Some(&workspace),
            })
            .context("invalid policy paths")?;
        hidden_paths(&filesystem.hide)?
    };
    let user = args
        .user
        .clone()
        .or_else(|| config.user.clone().filter(|user| !user.is_empty()));
    let user = match user {
        None => None,
        Some(user) => Some(image_user(&image.rootfs.directory, &user)?),
    };
    let identity = identity(user.as_deref())?;
    let rootfs = match (&image.persistent, &image.scratch) {
        (Some((upper, work)), _) => Rootfs::Overlay {
            lower: image.rootfs.directory.clone(),
            upper: upper.clone(),
            work: work.clone(),
        },
        (None, None) => Rootfs::Directory(image.rootfs.directory.clone()),
        (None, Some(scratch)) => Rootfs::Overlay {
            lower: image.rootfs.directory.clone(),
            upper: scratch.upper.clone(),
            work: scratch.work.clone(),
        },
    };
    Ok(SandboxSettings {
        program,
        arguments,
        environment: environment.into_iter().collect(),
        working_directory,
        rootfs,
        binds,
        hidden,
        tmpfs: args.tmpfs.clone(),
        hostname: args.hostname.clone(),
        identity,
        skip: skipped_layers(args, policy),
        limits: resource_limits(policy),
        timeout: Some(policy.limits.timeout.duration()),
        seccomp_allow: seccomp_allow(policy),
        tty: args.tty,
        interactive: args.interactive,
        network: sandbox::Network::Loopback,
    })
}

/// `USER[:GROUP]` with names looked up in the image's `/etc/passwd` and `/etc/group`, as
/// `UID:GID`. A user without a group gets the passwd entry's group (or its own id).
fn image_user(rootfs: &Path, user: &str) -> Result<String> {
    let (name, group) = match user.split_once(':') {
        Some((name, group)) => (name, Some(group)),
        None => (user, None),
    };
    let passwd = read_image_file(rootfs, "etc/passwd");
    let entry = passwd.as_deref().and_then(|text| {
        text.lines()
            .map(|line| line.split(':').collect::<Vec<_>>())
            .find(|fields| {
                fields.len() >= 4
                    && (fields[0] == name || (name.parse::<u32>().is_ok() && fields[2] == name))
            })
            .map(|fields| (fields[2].to_owned(), fields[3].to_owned()))
    });
    let uid = match name.parse::<u32>() {
        Ok(uid) => uid.to_string(),
        Err(_) => match &entry {
            Some((uid, _)) => uid.clone(),
            None => bail!(
                "invalid user {user:?}: no user {name:?} in the image's /etc/passwd; give a numeric UID[:GID]"
            ),
        },
    };
    let gid = match group {
        Some(group) if group.parse::<u32>().is_ok() => group.to_owned(),
        Some(group) => {
            let groups = read_image_file(rootfs, "etc/group");
            let found = groups.as_deref().and_then(|text| {
                text.lines()
                    .map(|line| line.split(':').collect::<Vec<_>>())
                    .find(|fields| fields.len() >= 3 && fields[0] == group)
                    .map(|fields| fields[2].to_owned())
            });
            match found {
                Some(gid) => gid,
                None => bail!(
                    "invalid user {user:?}: no group {group:?} in the image's /etc/group; give a numeric GID"
                ),
            }
        }
        None => entry.map_or_else(|| uid.clone(), |(_, gid)| gid),
    };
    Ok(format!("{uid}:{gid}"))
}

/// A file of the image's root filesystem, if it is a regular file (a symlink in an image may
/// point anywhere on the host).
fn read_image_file(rootfs: &Path, relative: &str) -> Option<String> {
    let path = rootfs.join(relative);
    let metadata = std::fs::symlink_metadata(&path).ok()?;
    if !metadata.is_file() {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// Whether the limits are the built-in defaults (no flag or policy file asked for them) and
/// this user cannot create cgroups (not root, no delegation). Then the sandbox runs without
/// them, with a warning; limits that were asked for fail closed instead.
fn default_limits_unenforceable(args: &RunArgs, policy: &Policy) -> bool {
    if rustix::process::geteuid().is_root() {
        return false;
    }
    let defaults = policy::Limits::default();
    let asked = args.memory.is_some()
        || args.pids_limit.is_some()
        || args.cpus.is_some()
        || policy.limits.memory != defaults.memory
        || policy.limits.pids != defaults.pids
        || policy.limits.cpus != defaults.cpus;
    if asked {
        return false;
    }
    let reason = match cgroup::Host::detect() {
        Err(err) => err.to_string(),
        Ok(host) => {
            let unavailable = [
                cgroup::Controller::Memory,
                cgroup::Controller::Pids,
                cgroup::Controller::Cpu,
            ]
            .into_iter()
            .find_map(|controller| {
                host.placement(controller)
                    .err()
                    .map(|reason| format!("{}: {reason}", controller.name()))
            });
            match unavailable {
                Some(reason) => reason,
                None => return false,
            }
        }
    };
    output::warn(&format!(
        "the default resource limits are not enforced: {reason} (pass --memory, --pids-limit \
         or --cpus to require them)"
    ));
    true
}

fn canonical(path: &Path, what: &str) -> Result<PathBuf> {
    std::fs::canonicalize(path)
        .with_context(|| format!("failed to resolve {what} {}", path.display()))
}

/// `HOST:GUEST[:ro|rw]`.
fn parse_volume(volume: &str) -> Result<Bind> {
    let parts: Vec<&str> = volume.split(':').collect();
    let (host, guest, writable) = match parts.as_slice() {
        [host, guest] => (*host, *guest, true),
        [host, guest, "rw"] => (*host, *guest, true),
        [host, guest, "ro"] => (*host, *guest, false),
        _ => bail!("invalid volume {volume:?}: expected HOST:GUEST[:ro|rw]"),
    };
    let guest = PathBuf::from(guest);
    if !guest.is_absolute() {
        bail!("invalid volume {volume:?}: the guest path must be absolute");
    }
    let source = canonical(Path::new(host), "volume source")?;
    let directory = source.is_dir();
    Ok(Bind {
        source,
        target: guest,
        writable,
        directory,
    })
}

/// The command's environment: the host variables the policy allows, then the image's `Env`
/// (`KEY=VALUE` strings; the host's `PATH` is not the image's), then the policy's `set`, then
/// `--env-file`s, then `-e`.
fn environment(
    args: &RunArgs,
    policy: &Policy,
    image_env: &[String],
) -> Result<BTreeMap<String, String>> {
    let mut environment = BTreeMap::new();
    for (name, value) in std::env::vars_os() {
        let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else {
            continue;
        };
        if args.image.is_some() && name == "PATH" {
            continue;
        }
        if policy.environment.allows(name) {
            environment.insert(name.to_owned(), value.to_owned());
        }
    }
    for variable in image_env {
        match variable.split_once('=') {
            Some((name, value)) => environment.insert(name.to_owned(), value.to_owned()),
            None => environment.insert(variable.clone(), String::new()),
        };
    }
    for (name, value) in &policy.environment.set {
        environment.insert(name.as_str().to_owned(), value.clone());
    }
    environment
        .entry("PATH".to_owned())
        .or_insert_with(|| sandbox::plan::DEFAULT_PATH.to_owned());
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("failed to read env file {}", file.display()))?;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = line.split_once('=').with_context(|| {
                format!(
                    "invalid line {} in env file {}: expected KEY=VALUE",
                    number + 1,
                    file.display()
                )
            })?;
            environment.insert(name.trim().to_owned(), value.to_owned());
        }
    }
    for variable in &args.env {
        match variable.split_once('=') {
            Some((name, value)) => {
                environment.insert(name.to_owned(), value.to_owned());
            }
            None => {
                if let Some(value) = std::env::var_os(variable).and_then(|v| v.into_string().ok()) {
                    environment.insert(variable.clone(), value);
                }
            }
        }
    }
    Ok(environment)
}

/// The policy's hidden paths that exist, resolved (a symlinked `~/.ssh` hides its target).
fn hidden_paths(candidates: &[PathBuf]) -> Result<Vec<HiddenPath>> {
    let mut hidden = Vec::new();
    for candidate in candidates {
        let Ok(path) = std::fs::canonicalize(candidate) else {
            // Does not exist (or a dangling symlink): nothing to hide.
            continue;
        };
        let metadata = std::fs::metadata(&path)
            .with_context(|| format!("failed to read hidden path {}", path.display()))?;
        let kind = if metadata.is_dir() {
            HiddenKind::Directory
        } else {
            HiddenKind::File
        };
        hidden.push(HiddenPath { path, kind });
    }
    Ok(hidden)
}

/// Root maps the sandbox to an unprivileged id range; anyone else maps their own ids.
fn identity(user: Option<&str>) -> Result<Identity> {
    let (uid, gid) = match user {
        None => (0, 0),
        Some(text) => {
            let parse = |part: &str| {
                part.parse::<u32>()
                    .map_err(|_| anyhow!("invalid --user {text:?}: expected UID[:GID] as numbers"))
            };
            match text.split_once(':') {
                Some((uid, gid)) => (parse(uid)?, parse(gid)?),
                None => {
                    let uid = parse(text)?;
                    (uid, uid)
                }
            }
        }
    };
    if rustix::process::geteuid().is_root() {
        Ok(Identity::Root { uid, gid })
    } else {
        Ok(Identity::Rootless {
            host_uid: rustix::process::geteuid().as_raw(),
            host_gid: rustix::process::getegid().as_raw(),
            uid,
            gid,
        })
    }
}
