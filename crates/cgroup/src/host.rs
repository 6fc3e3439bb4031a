//! Where this host's cgroup controllers live, and whether this process may use them.
//!
//! Two steps, so the tricky one is testable without a kernel: [`Layout::parse`] turns the text of
//! `/proc/self/mountinfo` and `/proc/self/cgroup` into mounted hierarchies and this process's
//! cgroup in each (pure); [`Host::detect`] then reads the unified hierarchy's
//! `cgroup.controllers` and checks which directories are writable. [`HostCgroups::placement`]
//! says, for each controller, which hierarchy hardbox uses or why none can be used.
//!
//! Rule: a controller offered by the unified (v2) hierarchy is used there; otherwise the v1
//! hierarchy it is bound to is used. On a hybrid host the unified hierarchy is still used to
//! track the sandbox's processes (`cgroup.kill`, `cpu.stat`) even when it offers no controller.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{DetectError, ParseError, UnavailableReason};

/// A controller hardbox sets limits with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Controller {
    /// Memory (`memory.max` / `memory.limit_in_bytes`).
    Memory,
    /// Number of processes (`pids.max`).
    Pids,
    /// CPU bandwidth (`cpu.max` / `cpu.cfs_quota_us`).
    Cpu,
}

impl Controller {
    /// Every controller hardbox can limit.
    pub const ALL: &'static [Controller] = &[Controller::Memory, Controller::Pids, Controller::Cpu];

    /// The kernel's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How this host mounts cgroups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Only the unified (v2) hierarchy.
    Unified,
    /// Only v1 hierarchies.
    Legacy,
    /// v1 hierarchies with controllers, and a unified hierarchy beside them.
    Hybrid,
    /// No cgroup file system is mounted.
    Absent,
}

impl Mode {
    /// A short name: `unified`, `legacy`, `hybrid` or `absent`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Unified => "unified",
            Mode::Legacy => "legacy",
            Mode::Hybrid => "hybrid",
            Mode::Absent => "absent",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The cgroup interface a hierarchy speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// cgroup v1 (one hierarchy per controller or group of controllers).
    V1,
    /// cgroup v2 (the unified hierarchy).
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// One mounted cgroup hierarchy, as `/proc/self/mountinfo` and `/proc/self/cgroup` describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountedHierarchy {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The cgroup the mount shows at its mount point (`/` unless a sub-tree is bind-mounted).
    pub mount_root: String,
    /// v1: the controllers bound to it, with `name=…` for named hierarchies. v2: empty (the
    /// controllers are read from `cgroup.controllers`).
    pub controllers: Vec<String>,
    /// This process's cgroup in the hierarchy, as `/proc/self/cgroup` says.
    pub cgroup: Option<String>,
}

impl MountedHierarchy {
    /// The directory of cgroup `path` (absolute within the hierarchy), if the mount shows it.
    pub fn directory_of(&self, path: &str) -> Option<PathBuf> {
        let relative = if self.mount_root == "/" {
            path
        } else {
            let rest = path.strip_prefix(self.mount_root.as_str())?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            rest
        };
        let relative = relative.trim_start_matches('/');
        if relative.split('/').any(|part| part == "..") {
            return None;
        }
        Some(if relative.is_empty() {
            self.mount_point.clone()
        } else {
            self.mount_point.join(relative)
        })
    }

    /// The directory of this process's cgroup, if the mount shows it.
    pub fn current_directory(&self) -> Option<PathBuf> {
        self.directory_of(self.cgroup.as_deref()?)
    }
}

/// The mounted hierarchies of this host and this process's place in each. No I/O.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// The unified (v2) hierarchy, if mounted.
    pub unified: Option<MountedHierarchy>,
    /// The v1 hierarchies, in mount order.
    pub legacy: Vec<MountedHierarchy>,
}

/// The kernel's v1 mount options that are not controllers.
const V1_MOUNT_FLAGS: &[&str] = &[
    "rw",
    "ro",
    "noprefix",
    "clone_children",
    "xattr",
    "cpuset_v2_mode",
    "all",
    "none",
];

impl Layout {
    /// Parses the text of `/proc/self/mountinfo` and `/proc/self/cgroup`.
    ///
    /// Only the first mount of each hierarchy counts. A hierarchy this process has no line for
    /// in `/proc/self/cgroup` is kept with `cgroup: None`.
    ///
    /// # Errors
    ///
    /// [`ParseError`] naming the file and line of a malformed line.
    pub fn parse(mountinfo: &str, proc_cgroup: &str) -> Result<Layout, ParseError> {
        let memberships = parse_proc_cgroup(proc_cgroup)?;
        let mut layout = Layout::default();
        for (index, line) in mountinfo.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let mount = parse_mountinfo_line(line).ok_or(ParseError::Malformed {
                file: "/proc/self/mountinfo",
                line: index + 1,
                text: line.to_owned(),
            })?;
            match mount.fs_type {
                "cgroup2" if layout.unified.is_none() => {
                    let cgroup = memberships
                        .iter()
                        .find(|m| m.hierarchy_id == 0 && m.controllers.is_empty())
                        .map(|m| m.path.clone());
                    layout.unified = Some(MountedHierarchy {
                        mount_point: PathBuf::from(unescape(mount.mount_point)),
                        mount_root: unescape(mount.root),
                        controllers: Vec::new(),
                        cgroup,
                    });
                }
                "cgroup" => {
                    let controllers: Vec<String> = mount
                        .super_options
                        .split(',')
                        .filter(|option| {
                            !V1_MOUNT_FLAGS.contains(option)
                                && (!option.contains('=') || option.starts_with("name="))
                        })
                        .map(str::to_owned)
                        .collect();
                    if controllers.is_empty()
                        || layout
                            .legacy
                            .iter()
                            .any(|known| known.controllers == controllers)
                    {
                        continue;
                    }
                    let cgroup = memberships
                        .iter()
                        .find(|m| {
                            m.hierarchy_id != 0
                                && !m.controllers.is_empty()
                                && m.controllers.iter().all(|c| controllers.contains(c))
                        })
                        .map(|m| m.path.clone());
                    layout.legacy.push(MountedHierarchy {
                        mount_point: PathBuf::from(unescape(mount.mount_point)),
                        mount_root: unescape(mount.root),
                        controllers,
                        cgroup,
                    });
                }
                _ => {}
            }
        }
        Ok(layout)
    }

    /// How the host mounts cgroups.
    pub fn mode(&self) -> Mode {
        let has_v1_controllers = self
            .legacy
            .iter()
            .any(|h| h.controllers.iter().any(|c| !c.starts_with("name=")));
        match (self.unified.is_some(), has_v1_controllers) {
            (true, true) => Mode::Hybrid,
            (true, false) => Mode::Unified,
            (false, true) => Mode::Legacy,
            (false, false) if !self.legacy.is_empty() => Mode::Legacy,
            (false, false) => Mode::Absent,
        }
    }

    /// The v1 hierarchy a controller is bound to.
    pub fn legacy_with(&self, controller: &str) -> Option<&MountedHierarchy> {
        self.legacy
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
    }
}

struct MountLine<'a> {
    root: &'a str,
    mount_point: &'a str,
    fs_type: &'a str,
    super_options: &'a str,
}

/// `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL…] - FS_TYPE SOURCE SUPER_OPTIONS`
fn parse_mountinfo_line(line: &str) -> Option<MountLine<'_>> {
    let (before, after) = line.split_once(" - ")?;
    let mut fields = before.split(' ');
    let _id = fields.next()?;
    let _parent = fields.next()?;
    let _device = fields.next()?;
    let root = fields.next()?;
    let mount_point = fields.next()?;
    let _options = fields.next()?;
    let mut fields = after.split(' ');
    let fs_type = fields.next()?;
    let _source = fields.next()?;
    let super_options = fields.next()?;
    Some(MountLine {
        root,
        mount_point,
        fs_type,
        super_options,
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash, …).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'\\' {
            if let Some(digits) = bytes.get(index + 1..index + 4) {
                let octal = digits.iter().all(|d| (b'0'..=b'7').contains(d));
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d.wrapping_sub(b'0')));
                if let (true, Ok(byte)) = (octal, u8::try_from(value)) {
                    out.push(byte);
                    index += 4;
                    continue;
                }
            }
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Membership {
    hierarchy_id: u32,
    controllers: Vec<String>,
    path: String,
}

/// `ID:CONTROLLERS:PATH` per line; the unified hierarchy is `0::PATH`.
fn parse_proc_cgroup(text: &str) -> Result<Vec<Membership>, ParseError> {
    let mut memberships = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let malformed = || ParseError::Malformed {
            file: "/proc/self/cgroup",
            line: index + 1,
            text: line.to_owned(),
        };
        let (id, rest) = line.split_once(':').ok_or_else(malformed)?;
        let (controllers, path) = rest.split_once(':').ok_or_else(malformed)?;
        let hierarchy_id = id.parse().map_err(|_| malformed())?;
        if !path.starts_with('/') {
            return Err(malformed());
        }
        memberships.push(Membership {
            hierarchy_id,
            controllers: controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
            path: path.to_owned(),
        });
    }
    Ok(memberships)
}

/// Whether this process may create cgroups under a hierarchy's parent directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParentState {
    /// The directory exists and is writable.
    Writable,
    /// The directory exists but this user may not write it (or the mount is read-only).
    NotWritable,
    /// The directory does not exist (a configured parent that was not created).
    Missing,
    /// This process's cgroup is not visible under the mount (another cgroup namespace or a
    /// bind mount of an unrelated sub-tree).
    NotVisible,
}

/// One hierarchy as hardbox would use it: where `hardbox/<name>` goes and whether it may.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    /// v1 or v2.
    pub version: Version,
    /// Where the hierarchy is mounted.
    pub mount_point: PathBuf,
    /// v1: the controllers bound to the hierarchy. v2: the controllers the parent's
    /// `cgroup.controllers` offers.
    pub controllers: Vec<String>,
    /// The directory `hardbox/` is created in: this process's cgroup, or the configured parent.
    pub parent: Option<PathBuf>,
    /// Whether hardbox may create cgroups there.
    pub state: ParentState,
    /// v2: the controllers already enabled in the parent's `cgroup.subtree_control`.
    pub subtree_control: Vec<String>,
    /// v2: the parent is not the hierarchy's root and has processes of its own, so the kernel
    /// refuses to enable more controllers in its `cgroup.subtree_control` (`EBUSY`).
    pub parent_has_processes: bool,
}

impl Hierarchy {
    fn offers(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// Where one controller's limits are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The interface of that hierarchy.
    pub version: Version,
    /// The directory `hardbox/<name>` is created in.
    pub parent: PathBuf,
}

/// This host's cgroups as hardbox sees them: what [`Host::detect`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostCgroups {
    /// How cgroups are mounted.
    pub mode: Mode,
    /// The unified (v2) hierarchy, if mounted.
    pub unified: Option<Hierarchy>,
    /// The v1 hierarchies with controllers (named hierarchies such as `name=systemd` left out).
    pub legacy: Vec<Hierarchy>,
    /// Whether this process runs as root (effective uid 0).
    pub root_user: bool,
    /// Whether a non-root user was handed its unified cgroup to manage (systemd delegation):
    /// the parent and its `cgroup.procs` and `cgroup.subtree_control` are writable.
    pub delegated: bool,
}

impl HostCgroups {
    /// Where `controller`'s limits would be written, or why they cannot be.
    ///
    /// # Errors
    ///
    /// The [`UnavailableReason`] that stops hardbox from enforcing a limit with `controller`.
    pub fn placement(&self, controller: Controller) -> Result<Placement, UnavailableReason> {
        let name = controller.name();
        let chosen = match &self.unified {
            Some(unified) if unified.offers(name) => Some(unified),
            _ => self.legacy.iter().find(|h| h.offers(name)),
        };
        let Some(hierarchy) = chosen else {
            return Err(
                match self.unified.as_ref().and_then(|u| u.parent.as_ref()) {
                    Some(parent) => UnavailableReason::NotEnabled {
                        path: parent.join("cgroup.controllers"),
                    },
                    None => UnavailableReason::NotMounted,
                },
            );
        };
        let parent = self.usable(hierarchy)?;
        if hierarchy.version == Version::V2
            && hierarchy.parent_has_processes
            && !hierarchy.subtree_control.iter().any(|c| c == name)
        {
            return Err(UnavailableReason::ParentHasProcesses { path: parent });
        }
        Ok(Placement {
            version: hierarchy.version,
            parent,
        })
    }

    /// The parent directory of `hierarchy` if hardbox may create cgroups there.
    pub(crate) fn usable(&self, hierarchy: &Hierarchy) -> Result<PathBuf, UnavailableReason> {
        let parent = || hierarchy.parent.clone().unwrap_or_default();
        match hierarchy.state {
            ParentState::Writable => Ok(parent()),
            ParentState::NotWritable if self.root_user => {
                Err(UnavailableReason::NotWritable { path: parent() })
            }
            ParentState::NotWritable => Err(UnavailableReason::NotDelegated { path: parent() }),
            ParentState::Missing => Err(UnavailableReason::MissingParent { path: parent() }),
            ParentState::NotVisible => Err(UnavailableReason::NotVisible {
                mount_point: hierarchy.mount_point.clone(),
            }),
        }
    }

    /// The v1 hierarchy bound to `controller` (any v1 controller, such as `freezer`), if usable.
    pub(crate) fn usable_legacy(&self, controller: &str) -> Option<PathBuf> {
        let hierarchy = self.legacy.iter().find(|h| h.offers(controller))?;
        self.usable(hierarchy).ok()
    }

    /// Builds the view from a parsed layout, with the I/O results passed in.
    pub(crate) fn assemble(
        layout: &Layout,
        parent: Option<&str>,
        mut unified_controllers: impl FnMut(&Path) -> Vec<String>,
        state_of: impl Fn(&Path) -> ParentState,
        root_user: bool,
        delegated: impl Fn(&Path) -> bool,
    ) -> HostCgroups {
        let resolve = |mounted: &MountedHierarchy| -> (Option<PathBuf>, ParentState) {
            let cgroup = parent.map(str::to_owned).or_else(|| mounted.cgroup.clone());
            match cgroup.as_deref().and_then(|c| mounted.directory_of(c)) {
                Some(directory) => {
                    let state = state_of(&directory);
                    (Some(directory), state)
                }
                None => (None, ParentState::NotVisible),
            }
        };
        let unified = layout.unified.as_ref().map(|mounted| {
            let (directory, state) = resolve(mounted);
            let controllers = match (&directory, state) {
                (Some(directory), ParentState::Writable | ParentState::NotWritable) => {
                    unified_controllers(directory)
                }
                _ => Vec::new(),
            };
            Hierarchy {
                version: Version::V2,
                mount_point: mounted.mount_point.clone(),
                controllers,
                parent: directory,
                state,
                subtree_control: Vec::new(),
                parent_has_processes: false,
            }
        });
        let legacy = layout
            .legacy
            .iter()
            .filter(|h| h.controllers.iter().any(|c| !c.starts_with("name=")))
            .map(|mounted| {
                let (directory, state) = resolve(mounted);
                Hierarchy {
                    version: Version::V1,
                    mount_point: mounted.mount_point.clone(),
                    controllers: mounted.controllers.clone(),
                    parent: directory,
                    state,
                    subtree_control: Vec::new(),
                    parent_has_processes: false,
                }
            })
            .collect();
        let delegated = !root_user
            && unified.as_ref().is_some_and(|u: &Hierarchy| {
                u.state == ParentState::Writable && u.parent.as_deref().is_some_and(&delegated)
            });
        HostCgroups {
            mode: layout.mode(),
            unified,
            legacy,
            root_user,
            delegated,
        }
    }
}

/// Detection of this host's cgroups.
#[derive(Debug)]
pub struct Host;

impl Host {
    /// Detects this host's cgroups, with `hardbox/` going under this process's own cgroup.
    ///
    /// # Errors
    ///
    /// [`DetectError`] if `/proc/self/mountinfo` or `/proc/self/cgroup` cannot be read or parsed,
    /// or a `cgroup.controllers` file cannot be read.
    pub fn detect() -> Result<HostCgroups, DetectError> {
        Host::detect_under(None)
    }

    /// Like [`Host::detect`], with `hardbox/` going under the cgroup `parent` (a path within each
    /// hierarchy, such as `/hardbox.slice`) instead of this process's own cgroup.
    ///
    /// # Errors
    ///
    /// As [`Host::detect`].
    pub fn detect_under(parent: Option<&str>) -> Result<HostCgroups, DetectError> {
        let mountinfo = read_text(Path::new("/proc/self/mountinfo"))?;
        let proc_cgroup = read_text(Path::new("/proc/self/cgroup"))?;
        Host::from_text(&mountinfo, &proc_cgroup, parent)
    }

    /// Detects from given `/proc/self/mountinfo` and `/proc/self/cgroup` text, then checks the
    /// directories they name on this machine. Tests use it to see the host as pure v1 or pure
    /// v2 by leaving mounts out.
    ///
    /// # Errors
    ///
    /// As [`Host::detect`].
    pub fn from_text(
        mountinfo: &str,
        proc_cgroup: &str,
        parent: Option<&str>,
    ) -> Result<HostCgroups, DetectError> {
        let layout = Layout::parse(mountinfo, proc_cgroup)?;
        let mut read_error = None;
        let root_user = rustix::process::geteuid().is_root();
        let host = HostCgroups::assemble(
            &layout,
            parent,
            |directory| {
                let path = directory.join("cgroup.controllers");
                match read_text(&path) {
                    Ok(text) => text.split_whitespace().map(str::to_owned).collect(),
                    Err(err) => {
                        read_error.get_or_insert(err);
                        Vec::new()
                    }
                }
            },
            state_of,
            root_user,
            |directory| {
                ["cgroup.procs", "cgroup.subtree_control"]
                    .iter()
                    .all(|file| writable(&directory.join(file)))
            },
        );
        if let Some(err) = read_error {
            return Err(err);
        }
        let mut host = host;
        if let Some(unified) = &mut host.unified {
            if let (Some(parent), ParentState::Writable) = (&unified.parent, unified.state) {
                let subtree = read_text(&parent.join("cgroup.subtree_control"))?;
                unified.subtree_control = subtree.split_whitespace().map(str::to_owned).collect();
                // The root cgroup is exempt from the no-internal-processes rule.
                if parent != &unified.mount_point || layout_root_is_not_hierarchy_root(&layout) {
                    let procs = read_text(&parent.join("cgroup.procs"))?;
                    unified.parent_has_processes = !procs.trim().is_empty();
                }
            }
        }
        Ok(host)
    }
}

/// Whether the unified mount shows a sub-tree (a container's cgroup), whose top is not the
/// hierarchy's root and so not exempt from the no-internal-processes rule.
fn layout_root_is_not_hierarchy_root(layout: &Layout) -> bool {
    layout.unified.as_ref().is_some_and(|u| u.mount_root != "/")
}

fn writable(path: &Path) -> bool {
    rustix::fs::access(path, rustix::fs::Access::WRITE_OK).is_ok()
}

fn state_of(directory: &Path) -> ParentState {
    match rustix::fs::access(directory, rustix::fs::Access::WRITE_OK) {
        Ok(()) => ParentState::Writable,
        Err(rustix::io::Errno::NOENT) => ParentState::Missing,
        Err(_) => ParentState::NotWritable,
    }
}

fn read_text(path: &Path) -> Result<String, DetectError> {
    std::fs::read_to_string(path).map_err(|source: io::Error| DetectError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests;
