//! `hardbox run`: resolves the command line into [`sandbox::SandboxSettings`], plans, launches,
//! and exits with the command's status (125 when hardbox failed, 126/127 when the command
//! could not be executed or found, 128+N when signal N killed it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use sandbox::{
    Bind, HiddenKind, HiddenPath, Identity, LaunchError, LaunchPlan, Rootfs, SandboxSettings,
    SkippedLayers,
};

use crate::cli::{RunArgs, SkippableLayer};
use crate::{exit, output};

/// Host variables that reach the sandbox (plus `LC_*`); everything else is dropped.
const KEPT_VARIABLES: [&str; 6] = ["PATH", "TERM", "LANG", "HOME", "USER", "TZ"];

/// Paths under the caller's home that hold credentials.
const HIDDEN_IN_HOME: [&str; 8] = [
    ".ssh",
    ".aws",
    ".config/gcloud",
    ".azure",
    ".kube",
    ".docker/config.json",
    ".netrc",
    ".gnupg",
];
/// System paths that hold credentials.
const HIDDEN_SYSTEM: [&str; 3] = ["/etc/shadow", "/etc/gshadow", "/root"];

const HINT_DOCTOR: &str = "run 'hardbox doctor' to see which layers this host can enforce";

pub fn run(_root: Option<PathBuf>, args: RunArgs) -> Result<u8> {
    let settings = match resolve(&args) {
        Ok(settings) => settings,
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
    match sandbox::launch(&plan) {
        Ok(status) => Ok(u8::try_from(status.code()).unwrap_or(exit::LAUNCH_FAILED)),
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

/// The message and hint for a launch failure.
fn describe(err: &LaunchError) -> anyhow::Error {
    let message = match err {
        LaunchError::CommandNotFound { .. } | LaunchError::NotExecutable { .. } => err.to_string(),
        _ => format!("failed to start sandbox: {err}"),
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

/// Resolves the command line: paths made absolute and free of symlinks, defaults applied.
fn resolve(args: &RunArgs) -> Result<SandboxSettings> {
    if args.image.is_some() {
        bail!("running an image is not supported yet; use --host");
    }
    let workspace = match &args.workspace {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("failed to read the current directory")?,
    };
    let workspace = canonical(&workspace, "workspace")?;
    let mut binds = vec![Bind {
        source: workspace.clone(),
        target: workspace.clone(),
        writable: true,
        directory: true,
    }];
    for volume in &args.volumes {
        binds.push(parse_volume(volume)?);
    }

    let working_directory = match &args.workdir {
        Some(dir) if dir.is_absolute() => dir.clone(),
        Some(dir) => workspace.join(dir),
        None => workspace.clone(),
    };

    let environment = environment(args)?;
    let hidden = hidden_paths(environment.get("HOME").map(String::as_str))?;

    let identity = identity(args.user.as_deref())?;
    let skip = SkippedLayers {
        landlock: args.dangerously_skip.contains(&SkippableLayer::Landlock),
        seccomp: args.dangerously_skip.contains(&SkippableLayer::Seccomp),
    };
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
    })
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

/// The command's environment: the kept host variables, then `--env-file`s, then `-e`.
fn environment(args: &RunArgs) -> Result<BTreeMap<String, String>> {
    let mut environment = BTreeMap::new();
    for (name, value) in std::env::vars_os() {
        let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else {
            continue;
        };
        if KEPT_VARIABLES.contains(&name) || name.starts_with("LC_") {
            environment.insert(name.to_owned(), value.to_owned());
        }
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

/// The default hidden paths that exist, resolved (a symlinked `~/.ssh` hides its target).
fn hidden_paths(home: Option<&str>) -> Result<Vec<HiddenPath>> {
    let mut candidates: Vec<PathBuf> = HIDDEN_SYSTEM.iter().map(PathBuf::from).collect();
    if let Some(home) = home.filter(|home| home.starts_with('/')) {
        candidates.extend(HIDDEN_IN_HOME.iter().map(|name| Path::new(home).join(name)));
    }
    let mut hidden = Vec::new();
    for candidate in candidates {
        let Ok(path) = std::fs::canonicalize(&candidate) else {
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
