//! Turning resolved settings into a [`LaunchPlan`]: the ordered steps the sandbox's init and
//! command processes will apply, the id maps, the Landlock rules. Pure: no I/O, no syscalls.
//!
//! The order (`DESIGN.md` §3), as the steps come out of [`LaunchPlan::new`]:
//!
//! 1. user namespace + id maps: the parent creates every namespace with one `clone` (the
//!    pid, network and cgroup namespaces must exist before `/proc` and `/sys` can be mounted
//!    for them) and writes the id maps; init waits for them before its first step;
//! 2. mount namespace: every mount private, so nothing propagates back to the host;
//! 3. staging: a tmpfs root holding `newroot` and `oldroot`; a first `pivot_root` puts the
//!    host's tree at `/oldroot`, so bind sources are reached there whatever is mounted later;
//! 4. rootfs (host `/` bound read-only, recursively; an image directory bound read-only; or
//!    an overlay of an image directory under a per-sandbox upper directory);
//! 5. tmpfs mounts (`/tmp`, `/run` over the host's root, `--tmpfs`) first, so binds can land
//!    inside them (a workspace under `/tmp`), then binds (workspace writable), then masks over
//!    hidden paths;
//! 6. `/proc`, a minimal `/dev`, `/sys` (read-only);
//! 7. `pivot_root` into `newroot` and detach the old root (staging and host tree);
//! 8. namespace settings: hostname (uts), loopback up (network); then the working directory;
//!    then init empties its capability bounding set, which every command it forks inherits
//!    (the set only matters at an exec, and init never execs);
//! 9. init forks the command, which applies: rlimits (`RLIMIT_CORE` = 0) → capabilities
//!    dropped (ambient, then the identity switch, then effective/permitted/inheritable) →
//!    no_new_privs → Landlock → seccomp → exec.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use sys::{Filesystem, LandlockRules, MountAttributes};

/// Where the staging tmpfs is mounted in the host's view (in the sandbox's private mount
/// namespace, so the host never sees it).
pub const STAGING: &str = "/tmp";
/// The sandbox's future root, inside the staging tmpfs.
pub const NEW_ROOT: &str = "/newroot";
/// The host's root after the first `pivot_root`.
pub const OLD_ROOT: &str = "/oldroot";
/// An empty, mode 000 file bound over hidden files.
pub const EMPTY_FILE: &str = "/empty";

/// First host id of the range sandbox ids map to when hardbox runs as root. Ids
/// 1_000_000_000..1_000_065_536 belong to no host account, so a process that escaped the
/// sandbox would own nothing on the host.
pub const ROOT_MODE_ID_BASE: u32 = 1_000_000_000;
/// How many ids the root-mode range holds (sandbox ids 0..65536).
pub const ROOT_MODE_ID_COUNT: u32 = 65_536;

/// Device nodes bound from the host into the sandbox's `/dev`.
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Devices the command may write.
const WRITABLE_DEVICES: [&str; 4] = ["null", "zero", "full", "tty"];

/// `PATH` used to find the command when the environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The root filesystem the sandbox sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rootfs {
    /// The host's `/`, read-only (submounts included).
    Host,
    /// A directory on the host (an unpacked image), read-only.
    Directory(PathBuf),
    /// An overlay: `lower` (an unpacked image, never written) under `upper`, where every write
    /// lands; `work` is overlayfs's work directory, on the same filesystem as `upper`. As
    /// root the parent mounts it (host credentials, `trusted.*` xattrs); rootless, init
    /// mounts it inside the user namespace with `userxattr`.
    Overlay {
        lower: PathBuf,
        upper: PathBuf,
        work: PathBuf,
    },
}

impl Rootfs {
    /// Whether the rootfs is an image's (so `/run` and the host's hidden paths do not apply).
    pub fn is_image(&self) -> bool {
        !matches!(self, Rootfs::Host)
    }
}

/// A host path made visible inside the sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// Absolute host path (already resolved: no symlinks).
    pub source: PathBuf,
    /// Absolute path inside the sandbox.
    pub target: PathBuf,
    pub writable: bool,
    /// Whether the source is a directory (else a file), for creating its mount point.
    pub directory: bool,
}

/// What a hidden path is on the host, which decides how it is masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HiddenKind {
    /// Masked with an empty, read-only, mode 000 tmpfs.
    Directory,
    /// Masked with an empty, read-only, mode 000 file.
    File,
}

/// A path the sandbox must not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HiddenPath {
    /// Absolute path (already resolved: no symlinks), the same on the host and inside.
    pub path: PathBuf,
    pub kind: HiddenKind,
}

/// Who the command runs as, and how sandbox ids map to host ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// hardbox runs unprivileged: the caller's ids map to `uid`/`gid` inside, one id each.
    Rootless {
        host_uid: u32,
        host_gid: u32,
        uid: u32,
        gid: u32,
    },
    /// hardbox runs as root: sandbox ids 0..65536 map to host ids
    /// [`ROOT_MODE_ID_BASE`].., and the command runs as `uid`/`gid`. Writable binds are
    /// idmapped through the same range, so the sandbox's ids own what the host's same ids own.
    Root { uid: u32, gid: u32 },
}

impl Identity {
    /// The ids the command runs as inside the sandbox.
    pub fn sandbox_ids(self) -> (u32, u32) {
        match self {
            Identity::Rootless { uid, gid, .. } | Identity::Root { uid, gid } => (uid, gid),
        }
    }
}

/// Isolation layers the user turned off by name (`--dangerously-skip LAYER`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkippedLayers {
    pub landlock: bool,
    pub seccomp: bool,
    /// No per-sandbox cgroup: [`ResourceLimits`] other than `open_files` are not enforced.
    pub cgroups: bool,
}

/// Resource limits of one sandbox. `None` leaves a resource unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ResourceLimits {
    /// Memory (cgroup), in bytes; no swap on top.
    pub memory_bytes: Option<u64>,
    /// Processes and threads (cgroup `pids.max`).
    pub pids: Option<u64>,
    /// CPU time in CPUs, fractions allowed (cgroup CFS quota).
    pub cpus: Option<f64>,
    /// Open files per process (`RLIMIT_NOFILE`, set in the command's process).
    pub open_files: Option<u64>,
}

impl ResourceLimits {
    /// Whether any limit needs a cgroup.
    pub fn needs_cgroup(&self) -> bool {
        self.memory_bytes.is_some() || self.pids.is_some() || self.cpus.is_some()
    }
}

/// Resolved settings: every default applied, every host path resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxSettings {
    /// The program to run: a path, or a name searched in the sandbox's `PATH`.
    pub program: String,
    /// argv, starting with argv\[0\].
    pub arguments: Vec<String>,
    /// The command's whole environment.
    pub environment: Vec<(String, String)>,
    /// Absolute path inside the sandbox.
    pub working_directory: PathBuf,
    pub rootfs: Rootfs,
    pub binds: Vec<Bind>,
    pub hidden: Vec<HiddenPath>,
    /// Absolute paths inside the sandbox that get an empty, writable tmpfs.
    pub tmpfs: Vec<PathBuf>,
    pub hostname: String,
    pub identity: Identity,
    pub skip: SkippedLayers,
    /// Enforced by a per-sandbox cgroup that init joins before the command starts (unless
    /// `skip.cgroups`), and `RLIMIT_NOFILE`.
    pub limits: ResourceLimits,
    /// Wall-clock limit: the sandbox is killed when it passes.
    pub timeout: Option<std::time::Duration>,
    /// Syscalls taken back from the seccomp filter's denials, by name.
    pub seccomp_allow: Vec<String>,
    /// Give the command a terminal: a pseudo-terminal of the sandbox's own devpts as its
    /// controlling terminal and stdin, stdout and stderr, relayed by the parent (`-t`).
    pub tty: bool,
    /// With `tty`: forward the parent's stdin to the terminal (`-i`). Without `tty` the command
    /// inherits the parent's stdin either way.
    pub interactive: bool,
    /// What the sandbox's network namespace reaches besides its loopback.
    pub network: Network,
}

/// The sandbox's network (its namespace always has its own loopback).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Network {
    /// Loopback only: nothing outside the sandbox is reachable.
    #[default]
    Loopback,
    /// Every address is routed to loopback ("AnyIP"), where init opens listeners for the
    /// parent's egress proxy: TCP 80 and 443, the explicit proxy on 127.0.0.1:3128, DNS on 53
    /// (UDP and TCP), and `tcp_ports` for other TCP the proxy may let through. A connection to
    /// any other port is refused by the kernel.
    Proxy { tcp_ports: Vec<u16> },
}

/// Settings that cannot make a sandbox.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("the command is empty")]
    EmptyCommand,
    #[error("{what} {path} must be an absolute path without '..'")]
    NotAbsolute { what: &'static str, path: PathBuf },
    #[error("bind target {path} would replace the sandbox's root")]
    BindOverRoot { path: PathBuf },
    #[error("invalid hostname {name:?}: use 1 to 64 letters, digits, '-' and '.'")]
    InvalidHostname { name: String },
    #[error("invalid environment variable name {name:?}")]
    InvalidEnvironmentName { name: String },
    #[error("{what} contains a NUL byte: {text:?}")]
    NulByte { what: &'static str, text: String },
    #[error("user {uid}:{gid} is outside the sandbox's id range 0..{ROOT_MODE_ID_COUNT}")]
    IdOutOfRange { uid: u32, gid: u32 },
    #[error(
        "overlay directory {path} contains ',', ':' or '\\', which mount options cannot carry"
    )]
    UnsafeOverlayPath { path: PathBuf },
    #[error("too many binds: at most {max} when running as root")]
    TooManyBinds { max: usize },
}

/// One step of the launch, applied through [`sys::Syscalls`]. Paths are as the kernel gets
/// them at that point of the launch (see the constants of this module).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    MakeMountsPrivate,
    SetIdentity {
        uid: u32,
        gid: u32,
        clear_groups: bool,
    },
    MountFilesystem {
        filesystem: Filesystem,
        target: PathBuf,
        attributes: MountAttributes,
        options: String,
    },
    MakeDirectory {
        path: PathBuf,
        mode: u32,
    },
    MakeFile {
        path: PathBuf,
        mode: u32,
    },
    MakeSymlink {
        target: PathBuf,
        link: PathBuf,
    },
    /// Create `path` (a directory or an empty file) and its missing parents, if absent.
    MakeMountPoint {
        path: PathBuf,
        directory: bool,
    },
    BindMount {
        source: PathBuf,
        target: PathBuf,
    },
    /// Attach the `index`th mount the parent passed (root mode binds, possibly idmapped).
    AttachMount {
        index: usize,
        source: PathBuf,
        target: PathBuf,
    },
    SetMountAttributes {
        target: PathBuf,
        attributes: MountAttributes,
        recursive: bool,
    },
    /// Masks a hidden path: an empty sealed tmpfs over a directory, the empty file bound over a
    /// file. A path the sandbox cannot reach at all (a directory on the way denies it search
    /// permission, `EACCES`) needs no mask and is left as it is: the sandbox's credentials only
    /// shrink after this step.
    Mask {
        target: PathBuf,
        kind: HiddenKind,
    },
    PivotRoot {
        new_root: PathBuf,
        put_old: PathBuf,
    },
    DetachMount {
        target: PathBuf,
    },
    ChangeDirectory {
        path: PathBuf,
    },
    SetHostname {
        name: String,
    },
    BringUpLoopback,
    /// Routes every address to loopback (see [`Network::Proxy`]).
    RouteAllToLoopback,
    DisableCoreDumps,
    LimitOpenFiles {
        limit: u64,
    },
    DropBoundingCapabilities,
    ClearAmbientCapabilities,
    ClearCapabilities,
    SetNoNewPrivs,
    RestrictLandlock,
    InstallSeccomp,
    Execute,
}

/// A path as the user knows it: staging prefixes removed.
fn shown(path: &Path) -> String {
    for prefix in [NEW_ROOT, OLD_ROOT] {
        if let Ok(rest) = path.strip_prefix(prefix) {
            return Path::new("/").join(rest).display().to_string();
        }
    }
    path.display().to_string()
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::MakeMountsPrivate => f.write_str("make mounts private"),
            Step::SetIdentity { uid, gid, .. } => write!(f, "switch to user {uid}:{gid}"),
            Step::MountFilesystem {
                filesystem, target, ..
            } => write!(f, "mount {} on {}", filesystem.kernel_name(), shown(target)),
            Step::MakeDirectory { path, .. } => write!(f, "create directory {}", shown(path)),
            Step::MakeFile { path, .. } => write!(f, "create file {}", shown(path)),
            Step::MakeSymlink { link, .. } => write!(f, "create symlink {}", shown(link)),
            Step::MakeMountPoint { path, .. } => write!(f, "create mount point {}", shown(path)),
            Step::BindMount { source, target } => {
                write!(f, "bind {} to {}", shown(source), shown(target))
            }
            Step::AttachMount { source, target, .. } => {
                write!(f, "bind {} to {}", source.display(), shown(target))
            }
            Step::SetMountAttributes { target, .. } => {
                write!(f, "set mount flags of {}", shown(target))
            }
            Step::Mask { target, .. } => write!(f, "hide {}", shown(target)),
            Step::PivotRoot { new_root, .. } => write!(f, "pivot_root to {}", shown(new_root)),
            Step::DetachMount { .. } => f.write_str("detach the old root"),
            Step::ChangeDirectory { path } => write!(f, "change directory to {}", shown(path)),
            Step::SetHostname { name } => write!(f, "set hostname {name}"),
            Step::BringUpLoopback => f.write_str("bring up loopback"),
            Step::RouteAllToLoopback => f.write_str("route every address to loopback"),
            Step::DisableCoreDumps => f.write_str("set RLIMIT_CORE"),
            Step::LimitOpenFiles { limit } => write!(f, "set RLIMIT_NOFILE to {limit}"),
            Step::DropBoundingCapabilities => f.write_str("drop bounding capabilities"),
            Step::ClearAmbientCapabilities => f.write_str("clear ambient capabilities"),
            Step::ClearCapabilities => f.write_str("drop capabilities"),
            Step::SetNoNewPrivs => f.write_str("set no_new_privs"),
            Step::RestrictLandlock => f.write_str("landlock"),
            Step::InstallSeccomp => f.write_str("seccomp"),
            Step::Execute => f.write_str("exec"),
        }
    }
}

/// A mount the parent prepares (root mode): a detached copy of `source`, idmapped if
/// `idmapped`, passed to init over a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassedMount {
    pub source: PathBuf,
    pub idmapped: bool,
    /// Instead of cloning `source`, mount an overlay of it (the lower directory) under
    /// these directories.
    pub overlay: Option<OverlayUpper>,
}

/// The writable half of an overlay the parent mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayUpper {
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// What the parent writes to `/proc/PID/{setgroups,uid_map,gid_map}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdMaps {
    pub uid_map: String,
    pub gid_map: String,
    /// Write `deny` to `setgroups` first (required for an unprivileged `gid_map`).
    pub deny_setgroups: bool,
}

/// The whole launch, decided before any process starts.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchPlan {
    pub settings: SandboxSettings,
    /// Applied by init (pid 1 of the sandbox), in order.
    pub setup: Vec<Step>,
    /// Applied by the command's process after init forks it, in order; ends with exec.
    pub command: Vec<Step>,
    pub id_maps: IdMaps,
    /// Mounts the parent prepares, in the order `AttachMount` steps refer to them.
    pub passed_mounts: Vec<PassedMount>,
    pub landlock: LandlockRules,
    /// Hidden paths left visible because a bind targets them or a path inside them (the
    /// explicit bind wins; hidden paths inside the bind are still masked).
    pub unhidden: Vec<PathBuf>,
}

fn is_normal_absolute(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

fn require_absolute(what: &'static str, path: &Path) -> Result<(), PlanError> {
    if is_normal_absolute(path) {
        Ok(())
    } else {
        Err(PlanError::NotAbsolute {
            what,
            path: path.to_owned(),
        })
    }
}

/// `root` + `path` (absolute): where `path` is under a staging directory.
fn under(root: &str, path: &Path) -> PathBuf {
    let relative = path.strip_prefix("/").unwrap_or(path);
    if relative.as_os_str().is_empty() {
        PathBuf::from(root)
    } else {
        Path::new(root).join(relative)
    }
}

fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn check_no_nul(what: &'static str, text: &OsStr) -> Result<(), PlanError> {
    if text.as_encoded_bytes().contains(&0) {
        return Err(PlanError::NulByte {
            what,
            text: text.to_string_lossy().into_owned(),
        });
    }
    Ok(())
}

fn validate(settings: &SandboxSettings) -> Result<(), PlanError> {
    if settings.program.is_empty() || settings.arguments.is_empty() {
        return Err(PlanError::EmptyCommand);
    }
    check_no_nul("the command", OsStr::new(&settings.program))?;
    for argument in &settings.arguments {
        check_no_nul("an argument", OsStr::new(argument))?;
    }
    for (name, value) in &settings.environment {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(PlanError::InvalidEnvironmentName { name: name.clone() });
        }
        check_no_nul("an environment value", OsStr::new(value))?;
    }
    require_absolute("working directory", &settings.working_directory)?;
    match &settings.rootfs {
        Rootfs::Host => {}
        Rootfs::Directory(directory) => require_absolute("rootfs directory", directory)?,
        Rootfs::Overlay { lower, upper, work } => {
            for path in [lower, upper, work] {
                require_absolute("overlay directory", path)?;
                if path
                    .as_os_str()
                    .as_encoded_bytes()
                    .iter()
                    .any(|b| matches!(b, b',' | b':' | b'\\'))
                {
                    return Err(PlanError::UnsafeOverlayPath { path: path.clone() });
                }
            }
        }
    }
    for bind in &settings.binds {
        require_absolute("bind source", &bind.source)?;
        require_absolute("bind target", &bind.target)?;
        if bind.target == Path::new("/") {
            return Err(PlanError::BindOverRoot {
                path: bind.target.clone(),
            });
        }
    }
    for hidden in &settings.hidden {
        require_absolute("hidden path", &hidden.path)?;
    }
    for tmpfs in &settings.tmpfs {
        require_absolute("tmpfs path", tmpfs)?;
        if tmpfs == Path::new("/") {
            return Err(PlanError::BindOverRoot {
                path: tmpfs.clone(),
            });
        }
    }
    if !valid_hostname(&settings.hostname) {
        return Err(PlanError::InvalidHostname {
            name: settings.hostname.clone(),
        });
    }
    if let Identity::Root { uid, gid } = settings.identity {
        if uid >= ROOT_MODE_ID_COUNT || gid >= ROOT_MODE_ID_COUNT {
            return Err(PlanError::IdOutOfRange { uid, gid });
        }
        let rootfs_mounts = usize::from(settings.rootfs.is_image());
        if settings.binds.len() + rootfs_mounts > sys::process::MAX_DESCRIPTORS {
            return Err(PlanError::TooManyBinds {
                max: sys::process::MAX_DESCRIPTORS - rootfs_mounts,
            });
        }
    }
    Ok(())
}

/// Where each hidden host path shows inside the sandbox, as (sandbox path, kind): at its own
/// path when the rootfs is the host's and nothing replaces it there (a bind or a tmpfs over it
/// or a parent), and under every bind whose source contains it.
fn mask_targets(settings: &SandboxSettings, tmpfs_paths: &[PathBuf]) -> Vec<(PathBuf, HiddenKind)> {
    let replaced = |path: &Path| {
        settings
            .binds
            .iter()
            .any(|bind| path.starts_with(&bind.target))
            || tmpfs_paths.iter().any(|tmpfs| path.starts_with(tmpfs))
            || ["/proc", "/dev", "/sys"]
                .iter()
                .any(|special| path.starts_with(special))
    };
    let mut targets = Vec::new();
    for hidden in &settings.hidden {
        if settings.rootfs == Rootfs::Host && !replaced(&hidden.path) {
            targets.push((hidden.path.clone(), hidden.kind));
        }
        for bind in &settings.binds {
            if let Ok(inside) = hidden.path.strip_prefix(&bind.source) {
                let target = if inside.as_os_str().is_empty() {
                    bind.target.clone()
                } else {
                    bind.target.join(inside)
                };
                targets.push((target, hidden.kind));
            }
        }
    }
    targets.sort();
    targets.dedup();
    targets
}

/// Splits mask targets into those to mask and those left visible because a bind targets them
/// or a path inside them (the explicit bind wins; hidden paths inside the bind are still
/// masked). Targets inside another masked directory are dropped: masked with it.
fn split_masks(
    targets: Vec<(PathBuf, HiddenKind)>,
    binds: &[Bind],
) -> (Vec<(PathBuf, HiddenKind)>, Vec<PathBuf>) {
    let (unhidden, masked): (Vec<_>, Vec<_>) = targets
        .into_iter()
        .partition(|(path, _)| binds.iter().any(|bind| bind.target.starts_with(path)));
    let outermost = masked
        .iter()
        .filter(|(path, _)| {
            !masked.iter().any(|(other, kind)| {
                *kind == HiddenKind::Directory && other != path && path.starts_with(other)
            })
        })
        .cloned()
        .collect();
    (
        outermost,
        unhidden.into_iter().map(|(path, _)| path).collect(),
    )
}

impl LaunchPlan {
    /// Plans the launch. Pure: the same settings always give the same plan.
    ///
    /// # Errors
    ///
    /// [`PlanError`] for settings that cannot make a sandbox.
    pub fn new(settings: SandboxSettings) -> Result<LaunchPlan, PlanError> {
        validate(&settings)?;
        let (uid, gid) = settings.identity.sandbox_ids();
        let root_mode = matches!(settings.identity, Identity::Root { .. });
        let owner = format!("uid={uid},gid={gid}");
        let mut setup = Vec::new();
        let mut passed_mounts = Vec::new();

        // 2. mount namespace: nothing propagates to or from the host.
        setup.push(Step::MakeMountsPrivate);
        // In root mode init starts as host root, which the user namespace does not map:
        // become the sandbox's root before creating anything (files need a mapped owner).
        if root_mode {
            setup.push(Step::SetIdentity {
                uid: 0,
                gid: 0,
                clear_groups: true,
            });
        }

        // 3. staging root with the host's tree at /oldroot.
        setup.push(Step::MountFilesystem {
            filesystem: Filesystem::Tmpfs,
            target: STAGING.into(),
            attributes: MountAttributes::WRITABLE,
            options: "mode=0755".into(),
        });
        for directory in [NEW_ROOT, OLD_ROOT] {
            setup.push(Step::MakeDirectory {
                path: under(STAGING, Path::new(directory)),
                mode: 0o755,
            });
        }
        setup.push(Step::MakeFile {
            path: under(STAGING, Path::new(EMPTY_FILE)),
            mode: 0,
        });
        setup.push(Step::PivotRoot {
            new_root: STAGING.into(),
            put_old: under(STAGING, Path::new(OLD_ROOT)),
        });
        setup.push(Step::ChangeDirectory { path: "/".into() });

        // 4. rootfs: the host's or an image's read-only with its submounts, or an overlay.
        // As root, image directories come from the parent: init's ids (the sandbox's range)
        // may not even traverse the store's parents.
        match &settings.rootfs {
            Rootfs::Host => setup.push(Step::BindMount {
                source: OLD_ROOT.into(),
                target: NEW_ROOT.into(),
            }),
            Rootfs::Directory(directory) if root_mode => {
                setup.push(Step::AttachMount {
                    index: passed_mounts.len(),
                    source: directory.clone(),
                    target: NEW_ROOT.into(),
                });
                passed_mounts.push(PassedMount {
                    source: directory.clone(),
                    idmapped: false,
                    overlay: None,
                });
            }
            Rootfs::Directory(directory) => setup.push(Step::BindMount {
                source: under(OLD_ROOT, directory),
                target: NEW_ROOT.into(),
            }),
            Rootfs::Overlay { lower, upper, work } if root_mode => {
                setup.push(Step::AttachMount {
                    index: passed_mounts.len(),
                    source: lower.clone(),
                    target: NEW_ROOT.into(),
                });
                passed_mounts.push(PassedMount {
                    source: lower.clone(),
                    idmapped: false,
                    overlay: Some(OverlayUpper {
                        upper: upper.clone(),
                        work: work.clone(),
                    }),
                });
            }
            Rootfs::Overlay { lower, upper, work } => setup.push(Step::MountFilesystem {
                filesystem: Filesystem::Overlay,
                target: NEW_ROOT.into(),
                attributes: MountAttributes::WRITABLE,
                // Inside a user namespace overlayfs may not write `trusted.*` xattrs.
                options: format!(
                    "lowerdir={},upperdir={},workdir={},userxattr",
                    under(OLD_ROOT, lower).display(),
                    under(OLD_ROOT, upper).display(),
                    under(OLD_ROOT, work).display()
                ),
            }),
        }
        setup.push(Step::SetMountAttributes {
            target: NEW_ROOT.into(),
            attributes: if matches!(settings.rootfs, Rootfs::Overlay { .. }) {
                MountAttributes::WRITABLE
            } else {
                MountAttributes::READ_ONLY
            },
            recursive: true,
        });
        if matches!(settings.rootfs, Rootfs::Overlay { .. })
            && settings.working_directory != Path::new("/")
        {
            // An image's WorkingDir need not exist in its layers; in the sandbox's own upper.
            setup.push(Step::MakeMountPoint {
                path: under(NEW_ROOT, &settings.working_directory),
                directory: true,
            });
        }

        // 5. tmpfs mounts (first, so binds may land in them), binds, masks.
        let mut tmpfs_paths: Vec<PathBuf> = Vec::new();
        if settings.rootfs == Rootfs::Host {
            // The host's /run holds its daemons' sockets (docker, dbus); a read-only mount
            // does not stop connect(2), so the sandbox gets an empty one.
            tmpfs_paths.push("/run".into());
        }
        tmpfs_paths.push("/tmp".into());
        tmpfs_paths.extend(settings.tmpfs.iter().cloned());
        for path in &tmpfs_paths {
            setup.push(Step::MountFilesystem {
                filesystem: Filesystem::Tmpfs,
                target: under(NEW_ROOT, path),
                attributes: MountAttributes::WRITABLE,
                options: if path == Path::new("/tmp") {
                    format!("mode=1777,{owner}")
                } else {
                    format!("mode=0755,{owner}")
                },
            });
        }
        for bind in &settings.binds {
            let target = under(NEW_ROOT, &bind.target);
            setup.push(Step::MakeMountPoint {
                path: target.clone(),
                directory: bind.directory,
            });
            if root_mode {
                setup.push(Step::AttachMount {
                    index: passed_mounts.len(),
                    source: bind.source.clone(),
                    target: target.clone(),
                });
                passed_mounts.push(PassedMount {
                    source: bind.source.clone(),
                    idmapped: bind.writable,
                    overlay: None,
                });
            } else {
                setup.push(Step::BindMount {
                    source: under(OLD_ROOT, &bind.source),
                    target: target.clone(),
                });
            }
            setup.push(Step::SetMountAttributes {
                target,
                attributes: if bind.writable {
                    MountAttributes::WRITABLE
                } else {
                    MountAttributes::READ_ONLY
                },
                recursive: true,
            });
        }
        let (masks, unhidden) = split_masks(mask_targets(&settings, &tmpfs_paths), &settings.binds);
        for (path, kind) in masks {
            setup.push(Step::Mask {
                target: under(NEW_ROOT, &path),
                kind,
            });
        }

        // 6. /proc, /dev, /tmp, /sys.
        setup.push(Step::MountFilesystem {
            filesystem: Filesystem::Proc,
            target: under(NEW_ROOT, Path::new("/proc")),
            attributes: MountAttributes {
                read_only: false,
                no_setuid: true,
                no_devices: true,
                no_exec: true,
            },
            options: String::new(),
        });
        let dev = under(NEW_ROOT, Path::new("/dev"));
        setup.push(Step::MountFilesystem {
            filesystem: Filesystem::Tmpfs,
            target: dev.clone(),
            attributes: MountAttributes {
                read_only: false,
                no_setuid: true,
                no_devices: false,
                no_exec: true,
            },
            options: "mode=0755".into(),
        });
        for device in DEVICES {
            let target = dev.join(device);
            setup.push(Step::MakeFile {
                path: target.clone(),
                mode: 0o666,
            });
            setup.push(Step::BindMount {
                source: under(OLD_ROOT, &Path::new("/dev").join(device)),
                target,
            });
        }
        setup.push(Step::MakeDirectory {
            path: dev.join("pts"),
            mode: 0o755,
        });
        setup.push(Step::MountFilesystem {
            filesystem: Filesystem::Devpts,
            target: dev.join("pts"),
            attributes: MountAttributes {
                read_only: false,
                no_setuid: true,
                no_devices: false,
                no_exec: true,
            },
            options: "newinstance,ptmxmode=0666,mode=0620".into(),
        });
        setup.push(Step::MakeDirectory {
            path: dev.join("shm"),
            mode: 0o755,
        });
        setup.push(Step::MountFilesystem {
            filesystem: Filesystem::Tmpfs,
            target: dev.join("shm"),
            attributes: MountAttributes::WRITABLE,
            options: format!("mode=1777,{owner}"),
        });
        for (link, target) in [
            ("ptmx", "pts/ptmx"),
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            setup.push(Step::MakeSymlink {
                target: target.into(),
                link: dev.join(link),
            });
        }
        setup.push(Step::SetMountAttributes {
            target: dev,
            attributes: MountAttributes {
                read_only: true,
                no_setuid: true,
                no_devices: false,
                no_exec: true,
            },
            recursive: false,
        });
        setup.push(Step::MountFilesystem {
            filesystem: Filesystem::Sysfs,
            target: under(NEW_ROOT, Path::new("/sys")),
            attributes: MountAttributes::SEALED,
            options: String::new(),
        });

        // 7. pivot_root into the new root; detach staging and the host's tree.
        setup.push(Step::ChangeDirectory {
            path: NEW_ROOT.into(),
        });
        setup.push(Step::PivotRoot {
            new_root: ".".into(),
            put_old: ".".into(),
        });
        setup.push(Step::DetachMount { target: ".".into() });
        setup.push(Step::ChangeDirectory { path: "/".into() });

        // 8. namespace settings, working directory.
        setup.push(Step::SetHostname {
            name: settings.hostname.clone(),
        });
        setup.push(Step::BringUpLoopback);
        if let Network::Proxy { .. } = settings.network {
            setup.push(Step::RouteAllToLoopback);
        }
        setup.push(Step::ChangeDirectory {
            path: settings.working_directory.clone(),
        });
        // The bounding set only matters at an exec, and init never execs: dropped here once,
        // every command init forks inherits it empty (a long-lived sandbox's execs included).
        setup.push(Step::DropBoundingCapabilities);

        // 9. the command's own process.
        let mut command = vec![Step::DisableCoreDumps];
        if let Some(limit) = settings.limits.open_files {
            command.push(Step::LimitOpenFiles { limit });
        }
        command.push(Step::ClearAmbientCapabilities);
        if root_mode && (uid, gid) != (0, 0) {
            command.push(Step::SetIdentity {
                uid,
                gid,
                clear_groups: true,
            });
        }
        command.push(Step::ClearCapabilities);
        command.push(Step::SetNoNewPrivs);
        if !settings.skip.landlock {
            command.push(Step::RestrictLandlock);
        }
        if !settings.skip.seccomp {
            command.push(Step::InstallSeccomp);
        }
        command.push(Step::Execute);

        let id_maps = match settings.identity {
            Identity::Rootless {
                host_uid,
                host_gid,
                uid,
                gid,
            } => IdMaps {
                uid_map: format!("{uid} {host_uid} 1\n"),
                gid_map: format!("{gid} {host_gid} 1\n"),
                deny_setgroups: true,
            },
            Identity::Root { .. } => IdMaps {
                uid_map: format!("0 {ROOT_MODE_ID_BASE} {ROOT_MODE_ID_COUNT}\n"),
                gid_map: format!("0 {ROOT_MODE_ID_BASE} {ROOT_MODE_ID_COUNT}\n"),
                deny_setgroups: false,
            },
        };

        let landlock = landlock_rules(&settings, &tmpfs_paths);
        Ok(LaunchPlan {
            settings,
            setup,
            command,
            id_maps,
            passed_mounts,
            landlock,
            unhidden,
        })
    }

    /// The command's `PATH`, used to find the program.
    pub fn search_path(&self) -> &str {
        self.settings
            .environment
            .iter()
            .find(|(name, _)| name == "PATH")
            .map_or(DEFAULT_PATH, |(_, value)| value.as_str())
    }

    /// The steps of a command started later in the running sandbox (a session's exec): the
    /// command's own steps, as `user` (uid, gid) when given, in `working_directory` when
    /// given. The identity switch takes the place of the command's own, before the
    /// capabilities are dropped (only ids the sandbox maps can be switched to: the kernel
    /// refuses others with `EINVAL`); the directory is entered right after it, with the user's
    /// permissions.
    pub fn exec_steps(
        &self,
        working_directory: Option<&Path>,
        user: Option<(u32, u32)>,
    ) -> Vec<Step> {
        // Rootless sandboxes deny setgroups (one id mapped, no supplementary groups to drop).
        let clear_groups = matches!(self.settings.identity, Identity::Root { .. });
        let mut steps = Vec::with_capacity(self.command.len() + 2);
        for step in &self.command {
            if user.is_some() && matches!(step, Step::SetIdentity { .. }) {
                continue;
            }
            if *step == Step::ClearCapabilities {
                if let Some((uid, gid)) = user {
                    steps.push(Step::SetIdentity {
                        uid,
                        gid,
                        clear_groups,
                    });
                }
                if let Some(path) = working_directory {
                    steps.push(Step::ChangeDirectory {
                        path: path.to_owned(),
                    });
                }
            }
            steps.push(step.clone());
        }
        steps
    }

    /// The environment as `KEY=VALUE` strings.
    pub fn environment_strings(&self) -> Vec<String> {
        self.settings
            .environment
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect()
    }
}

/// Read and execute everywhere; write only where the sandbox is meant to write. Hidden paths
/// get nothing more than their masks allow (empty, mode 000, read-only): Landlock grants
/// cannot carve an exception out of the read grant on `/`.
fn landlock_rules(settings: &SandboxSettings, tmpfs_paths: &[PathBuf]) -> LandlockRules {
    let mut write_directories: Vec<PathBuf> = settings
        .binds
        .iter()
        .filter(|bind| bind.writable)
        .map(|bind| bind.target.clone())
        .collect();
    write_directories.extend(tmpfs_paths.iter().cloned());
    if matches!(settings.rootfs, Rootfs::Overlay { .. }) {
        // The overlay's upper directory is the sandbox's own, discarded with it.
        write_directories.push("/".into());
    }
    write_directories.push("/dev/shm".into());
    write_directories.push("/dev/pts".into());
    LandlockRules {
        read: vec!["/".into()],
        write_directories,
        write_files: WRITABLE_DEVICES
            .iter()
            .map(|device| Path::new("/dev").join(device))
            .collect(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Settings for a host-root sandbox with a workspace, as `hardbox run --host` resolves them.
    pub(crate) fn settings(identity: Identity) -> SandboxSettings {
        SandboxSettings {
            program: "sh".into(),
            arguments: vec!["sh".into(), "-c".into(), "true".into()],
            environment: vec![("PATH".into(), "/usr/bin:/bin".into())],
            working_directory: "/work/project".into(),
            rootfs: Rootfs::Host,
            binds: vec![Bind {
                source: "/work/project".into(),
                target: "/work/project".into(),
                writable: true,
                directory: true,
            }],
            hidden: vec![
                HiddenPath {
                    path: "/root".into(),
                    kind: HiddenKind::Directory,
                },
                HiddenPath {
                    path: "/root/.ssh".into(),
                    kind: HiddenKind::Directory,
                },
                HiddenPath {
                    path: "/etc/shadow".into(),
                    kind: HiddenKind::File,
                },
            ],
            tmpfs: vec![],
            hostname: "hardbox".into(),
            identity,
            skip: SkippedLayers::default(),
            limits: ResourceLimits {
                open_files: Some(4096),
                ..ResourceLimits::default()
            },
            timeout: None,
            seccomp_allow: vec![],
            tty: false,
            interactive: false,
            network: Network::Loopback,
        }
    }

    pub(crate) const ROOTLESS: Identity = Identity::Rootless {
        host_uid: 1000,
        host_gid: 1000,
        uid: 0,
        gid: 0,
    };

    fn plan(settings: SandboxSettings) -> LaunchPlan {
        LaunchPlan::new(settings).unwrap_or_else(|error| panic!("plan failed: {error}"))
    }

    fn check_invalid(change: impl FnOnce(&mut SandboxSettings), expected: PlanError) {
        let mut settings = settings(ROOTLESS);
        change(&mut settings);
        assert_eq!(LaunchPlan::new(settings), Err(expected));
    }

    #[test]
    fn exec_steps_switch_user_and_directory_before_capabilities_are_dropped() {
        let plan = plan(settings(Identity::Root {
            uid: 1000,
            gid: 1000,
        }));
        assert_eq!(plan.exec_steps(None, None), plan.command);
        let steps = plan.exec_steps(Some(Path::new("/srv")), Some((5, 6)));
        let switch = Step::SetIdentity {
            uid: 5,
            gid: 6,
            clear_groups: true,
        };
        let position = |wanted: &Step| steps.iter().position(|step| step == wanted);
        let identities = steps
            .iter()
            .filter(|step| matches!(step, Step::SetIdentity { .. }))
            .count();
        assert_eq!(identities, 1, "{steps:?}");
        let switched = position(&switch).unwrap_or_else(|| panic!("no switch: {steps:?}"));
        let entered = position(&Step::ChangeDirectory {
            path: "/srv".into(),
        });
        assert_eq!(entered, Some(switched + 1), "{steps:?}");
        assert_eq!(position(&Step::ClearCapabilities), Some(switched + 2));
        assert_eq!(steps.last(), Some(&Step::Execute));

        // Rootless: no supplementary groups to clear (setgroups is denied).
        let rootless = plan_rootless().exec_steps(None, Some((0, 0)));
        assert!(rootless.contains(&Step::SetIdentity {
            uid: 0,
            gid: 0,
            clear_groups: false
        }));
    }

    fn plan_rootless() -> LaunchPlan {
        plan(settings(ROOTLESS))
    }

    #[test]
    fn planning_is_pure() {
        assert_eq!(plan(settings(ROOTLESS)), plan(settings(ROOTLESS)));
    }

    #[test]
    fn rootless_maps_only_the_callers_ids_and_denies_setgroups() {
        let plan = plan(settings(ROOTLESS));
        assert_eq!(plan.id_maps.uid_map, "0 1000 1\n");
        assert_eq!(plan.id_maps.gid_map, "0 1000 1\n");
        assert!(plan.id_maps.deny_setgroups);
        assert!(plan.passed_mounts.is_empty());
        assert!(!plan
            .setup
            .iter()
            .chain(&plan.command)
            .any(|step| matches!(step, Step::SetIdentity { .. })));
    }

    #[test]
    fn root_maps_an_unprivileged_range_and_idmaps_writable_binds() {
        let plan = plan(settings(Identity::Root {
            uid: 1000,
            gid: 100,
        }));
        assert_eq!(plan.id_maps.uid_map, "0 1000000000 65536\n");
        assert!(!plan.id_maps.deny_setgroups);
        assert_eq!(
            plan.passed_mounts,
            [PassedMount {
                source: "/work/project".into(),
                idmapped: true,
                overlay: None,
            }]
        );
        // init becomes the sandbox's root before creating anything, and empties the bounding
        // set last; the command switches to the requested user before capabilities are
        // cleared.
        assert_eq!(
            plan.setup[1],
            Step::SetIdentity {
                uid: 0,
                gid: 0,
                clear_groups: true
            }
        );
        assert_eq!(plan.setup.last(), Some(&Step::DropBoundingCapabilities));
        let names: Vec<String> = plan.command.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "set RLIMIT_CORE",
                "set RLIMIT_NOFILE to 4096",
                "clear ambient capabilities",
                "switch to user 1000:100",
                "drop capabilities",
                "set no_new_privs",
                "landlock",
                "seccomp",
                "exec"
            ]
        );
    }

    #[test]
    fn hidden_paths_are_masked_once_and_files_get_the_empty_file() {
        let plan = plan(settings(ROOTLESS));
        let masks: Vec<&Step> = plan
            .setup
            .iter()
            .filter(|step| matches!(step, Step::Mask { .. }))
            .collect();
        assert_eq!(
            masks,
            [
                &Step::Mask {
                    target: "/newroot/etc/shadow".into(),
                    kind: HiddenKind::File,
                },
                &Step::Mask {
                    target: "/newroot/root".into(),
                    kind: HiddenKind::Directory,
                },
            ]
        );
    }

    #[test]
    fn a_bind_inside_a_hidden_directory_unhides_it_but_not_what_is_inside() {
        let mut settings = settings(ROOTLESS);
        settings.binds[0].source = "/root".into();
        settings.binds[0].target = "/root".into();
        let plan = plan(settings);
        assert_eq!(plan.unhidden, [PathBuf::from("/root")]);
        assert!(plan.setup.contains(&Step::Mask {
            target: "/newroot/root/.ssh".into(),
            kind: HiddenKind::Directory,
        }));
    }

    #[test]
    fn hidden_paths_are_masked_where_they_show_inside() {
        let mut settings = settings(ROOTLESS);
        settings.binds.push(Bind {
            source: "/home/user".into(),
            target: "/data".into(),
            writable: false,
            directory: true,
        });
        settings.hidden = vec![
            HiddenPath {
                path: "/home/user/.ssh".into(),
                kind: HiddenKind::Directory,
            },
            // Under the sandbox's own /tmp: not visible, nothing to mask.
            HiddenPath {
                path: "/tmp/home/.aws".into(),
                kind: HiddenKind::Directory,
            },
        ];
        let masked: Vec<PathBuf> = plan(settings)
            .setup
            .into_iter()
            .filter_map(|step| match step {
                Step::Mask { target, .. } => Some(target),
                _ => None,
            })
            .collect();
        assert_eq!(
            masked,
            [
                PathBuf::from("/newroot/data/.ssh"),
                PathBuf::from("/newroot/home/user/.ssh")
            ]
        );
    }

    #[test]
    fn landlock_grants_read_everywhere_and_write_only_where_meant() {
        let mut settings = settings(ROOTLESS);
        settings.binds.push(Bind {
            source: "/data".into(),
            target: "/data".into(),
            writable: false,
            directory: true,
        });
        settings.tmpfs.push("/scratch".into());
        let plan = plan(settings);
        assert_eq!(plan.landlock.read, [PathBuf::from("/")]);
        let write: Vec<&str> = plan
            .landlock
            .write_directories
            .iter()
            .filter_map(|p| p.to_str())
            .collect();
        assert_eq!(
            write,
            [
                "/work/project",
                "/run",
                "/tmp",
                "/scratch",
                "/dev/shm",
                "/dev/pts"
            ]
        );
        let files: Vec<&str> = plan
            .landlock
            .write_files
            .iter()
            .filter_map(|p| p.to_str())
            .collect();
        assert_eq!(files, ["/dev/null", "/dev/zero", "/dev/full", "/dev/tty"]);
    }

    #[test]
    fn skipped_layers_leave_the_plan() {
        let mut settings = settings(ROOTLESS);
        settings.skip = SkippedLayers {
            landlock: true,
            seccomp: true,
            cgroups: true,
        };
        let plan = plan(settings);
        assert!(!plan.command.contains(&Step::RestrictLandlock));
        assert!(!plan.command.contains(&Step::InstallSeccomp));
        assert!(plan.command.contains(&Step::SetNoNewPrivs));
    }

    #[test]
    fn invalid_settings_are_refused() {
        check_invalid(
            |s| s.working_directory = "relative".into(),
            PlanError::NotAbsolute {
                what: "working directory",
                path: "relative".into(),
            },
        );
        check_invalid(
            |s| s.binds[0].target = "/a/../b".into(),
            PlanError::NotAbsolute {
                what: "bind target",
                path: "/a/../b".into(),
            },
        );
        check_invalid(
            |s| s.binds[0].target = "/".into(),
            PlanError::BindOverRoot { path: "/".into() },
        );
        check_invalid(
            |s| s.hostname = "bad host".into(),
            PlanError::InvalidHostname {
                name: "bad host".into(),
            },
        );
        check_invalid(
            |s| s.environment.push(("A=B".into(), "c".into())),
            PlanError::InvalidEnvironmentName { name: "A=B".into() },
        );
        check_invalid(|s| s.arguments.clear(), PlanError::EmptyCommand);
        check_invalid(
            |s| {
                s.identity = Identity::Root {
                    uid: 70_000,
                    gid: 0,
                }
            },
            PlanError::IdOutOfRange {
                uid: 70_000,
                gid: 0,
            },
        );
    }

    #[test]
    fn steps_describe_themselves_with_sandbox_paths() {
        let step = Step::MountFilesystem {
            filesystem: Filesystem::Proc,
            target: "/newroot/proc".into(),
            attributes: MountAttributes::default(),
            options: String::new(),
        };
        assert_eq!(step.to_string(), "mount proc on /proc");
        let step = Step::BindMount {
            source: "/oldroot/dev/null".into(),
            target: "/newroot/dev/null".into(),
        };
        assert_eq!(step.to_string(), "bind /dev/null to /dev/null");
    }

    fn image_settings(identity: Identity, rootfs: Rootfs) -> SandboxSettings {
        let mut settings = settings(identity);
        settings.rootfs = rootfs;
        settings.binds.clear();
        settings.working_directory = "/srv/app".into();
        settings
    }

    fn overlay() -> Rootfs {
        Rootfs::Overlay {
            lower: "/store/rootfs/abc-1000000000".into(),
            upper: "/store/rootfs/.sandbox-1/upper".into(),
            work: "/store/rootfs/.sandbox-1/work".into(),
        }
    }

    #[test]
    fn as_root_the_parent_mounts_the_image_overlay_and_init_attaches_it() {
        let plan = plan(image_settings(Identity::Root { uid: 0, gid: 0 }, overlay()));
        assert_eq!(
            plan.passed_mounts,
            [PassedMount {
                source: "/store/rootfs/abc-1000000000".into(),
                idmapped: false,
                overlay: Some(OverlayUpper {
                    upper: "/store/rootfs/.sandbox-1/upper".into(),
                    work: "/store/rootfs/.sandbox-1/work".into(),
                }),
            }]
        );
        let attach = plan
            .setup
            .iter()
            .position(|step| {
                *step
                    == Step::AttachMount {
                        index: 0,
                        source: "/store/rootfs/abc-1000000000".into(),
                        target: NEW_ROOT.into(),
                    }
            })
            .unwrap_or_else(|| panic!("overlay not attached: {:?}", plan.setup));
        assert_eq!(
            plan.setup[attach + 1],
            Step::SetMountAttributes {
                target: NEW_ROOT.into(),
                attributes: MountAttributes::WRITABLE,
                recursive: true,
            }
        );
        // The working directory is created in the sandbox's upper; no host /run.
        assert!(plan.setup.contains(&Step::MakeMountPoint {
            path: "/newroot/srv/app".into(),
            directory: true,
        }));
        assert!(!plan.setup.iter().any(|step| matches!(
            step,
            Step::MountFilesystem { target, .. } if target == Path::new("/newroot/run")
        )));
        assert!(plan
            .landlock
            .write_directories
            .contains(&PathBuf::from("/")));
    }

    #[test]
    fn rootless_init_mounts_the_image_overlay_with_userxattr() {
        let plan = plan(image_settings(ROOTLESS, overlay()));
        assert!(plan.passed_mounts.is_empty());
        assert!(plan.setup.contains(&Step::MountFilesystem {
            filesystem: Filesystem::Overlay,
            target: NEW_ROOT.into(),
            attributes: MountAttributes::WRITABLE,
            options: "lowerdir=/oldroot/store/rootfs/abc-1000000000,\
                      upperdir=/oldroot/store/rootfs/.sandbox-1/upper,\
                      workdir=/oldroot/store/rootfs/.sandbox-1/work,userxattr"
                .into(),
        }));
    }

    #[test]
    fn a_read_only_image_is_bound_read_only_and_not_writable_under_landlock() {
        let directory = Rootfs::Directory("/store/rootfs/abc-1000000000".into());
        let plan = plan(image_settings(Identity::Root { uid: 0, gid: 0 }, directory));
        assert_eq!(
            plan.passed_mounts,
            [PassedMount {
                source: "/store/rootfs/abc-1000000000".into(),
                idmapped: false,
                overlay: None,
            }]
        );
        assert!(plan.setup.contains(&Step::SetMountAttributes {
            target: NEW_ROOT.into(),
            attributes: MountAttributes::READ_ONLY,
            recursive: true,
        }));
        assert!(!plan
            .landlock
            .write_directories
            .contains(&PathBuf::from("/")));
    }

    #[test]
    fn overlay_paths_mount_options_cannot_carry_are_refused() {
        check_invalid(
            |settings| {
                settings.rootfs = Rootfs::Overlay {
                    lower: "/store/a:b".into(),
                    upper: "/store/upper".into(),
                    work: "/store/work".into(),
                }
            },
            PlanError::UnsafeOverlayPath {
                path: "/store/a:b".into(),
            },
        );
    }
}
