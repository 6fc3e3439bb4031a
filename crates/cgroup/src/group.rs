//! One sandbox's cgroup: `hardbox/<name>` in every hierarchy it needs.
//!
//! What it guarantees: every limit asked for is written, or [`Cgroup::create`] fails and removes
//! what it created; a process added with [`Cgroup::add_process`] is in the sandbox's cgroup in
//! every hierarchy; [`Cgroup::kill_all`] leaves no process able to fork out of the kill (v2
//! `cgroup.kill`, or a frozen cgroup while `SIGKILL` is sent); [`Cgroup::remove`] removes every
//! directory it created, and the shared `hardbox/` directory when it is left empty.

use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::{Pid, Signal};

use crate::error::{CgroupError, CreateError, RemoveError};
use crate::host::{Controller, HostCgroups, Version};
use crate::limits::{CpuQuota, Limits};

/// The directory every sandbox cgroup is created in, under the parent cgroup.
pub const GROUP_DIRECTORY: &str = "hardbox";

/// How often `rmdir` is retried while the kernel still counts exiting processes (`EBUSY`),
/// and how long to wait between tries: one second in all.
const REMOVE_TRIES: u32 = 100;
const REMOVE_PAUSE: Duration = Duration::from_millis(10);

/// How often a freezer's state is read while it freezes, and the pause between reads.
const FREEZE_TRIES: u32 = 200;
const FREEZE_PAUSE: Duration = Duration::from_millis(5);

/// Rounds of reading `cgroup.procs` and killing, without a freezer, before giving up.
const KILL_ROUNDS: u32 = 100;

/// Attempts at creating a leaf when another sandbox removes the shared `hardbox/` meanwhile.
const CREATE_ATTEMPTS: u32 = 10;

/// One hierarchy's part of the sandbox cgroup.
#[derive(Clone, Debug)]
struct Member {
    version: Version,
    directory: PathBuf,
}

/// A sandbox's cgroup, created with its limits set.
///
/// Dropping it without [`Cgroup::remove`] kills its processes and removes it, best effort.
#[derive(Debug)]
pub struct Cgroup {
    name: String,
    /// Every leaf directory created, in creation order.
    members: Vec<Member>,
    /// The `hardbox/` directories the leaves are in; removed when left empty.
    group_directories: Vec<PathBuf>,
    memory: Option<Member>,
    pids: Option<Member>,
    cpu: Option<Member>,
    /// The leaf in the unified hierarchy, if any (process tracking, `cgroup.kill`, `cpu.stat`).
    unified: Option<PathBuf>,
    /// The leaf in the v1 freezer hierarchy, used to kill when there is no unified leaf.
    freezer: Option<PathBuf>,
    /// The leaf in the v1 cpuacct hierarchy, for CPU time when there is no unified leaf.
    cpuacct: Option<PathBuf>,
    removed: bool,
}

/// What to create in one hierarchy.
struct Plan {
    version: Version,
    parent: PathBuf,
    controllers: Vec<Controller>,
}

impl Cgroup {
    /// Creates `hardbox/<name>` under the parent cgroup in every hierarchy the limits need, plus
    /// the unified hierarchy when it is usable (to track and kill processes), and writes the
    /// limits.
    ///
    /// On a host with no unified hierarchy, the v1 `freezer` (for [`Cgroup::kill_all`]) and
    /// `cpuacct` (for [`Cgroup::cpu_usage`]) hierarchies are used as well when writable.
    ///
    /// # Errors
    ///
    /// [`CreateError::Unavailable`] naming the controller and the reason when a limit cannot be
    /// enforced; [`CreateError::AlreadyExists`] when the cgroup exists; I/O errors with their
    /// path. Whatever was created before the error is removed.
    pub fn create(host: &HostCgroups, name: &str, limits: &Limits) -> Result<Cgroup, CreateError> {
        validate_name(name)?;
        limits.validate()?;

        let mut plans: Vec<Plan> = Vec::new();
        let mut add = |version: Version, parent: PathBuf, controller: Option<Controller>| {
            let index = match plans.iter().position(|p| p.parent == parent) {
                Some(index) => index,
                None => {
                    plans.push(Plan {
                        version,
                        parent,
                        controllers: Vec::new(),
                    });
                    plans.len() - 1
                }
            };
            if let Some(controller) = controller {
                plans[index].controllers.push(controller);
            }
        };
        for &controller in &limits.controllers() {
            let placement = host
                .placement(controller)
                .map_err(|reason| CreateError::Unavailable { controller, reason })?;
            add(placement.version, placement.parent, Some(controller));
        }
        let unified_parent = host.unified.as_ref().and_then(|u| host.usable(u).ok());
        if let Some(parent) = &unified_parent {
            add(Version::V2, parent.clone(), None);
        }
        let mut freezer_parent = None;
        let mut cpuacct_parent = None;
        if unified_parent.is_none() {
            freezer_parent = host.usable_legacy("freezer");
            cpuacct_parent = host.usable_legacy("cpuacct");
            for parent in [&freezer_parent, &cpuacct_parent].into_iter().flatten() {
                add(Version::V1, parent.clone(), None);
            }
        }
        if plans.is_empty() {
            return Err(CreateError::NoHierarchy {
                name: name.to_owned(),
            });
        }

        let mut cgroup = Cgroup {
            name: name.to_owned(),
            members: Vec::new(),
            group_directories: Vec::new(),
            memory: None,
            pids: None,
            cpu: None,
            unified: None,
            freezer: None,
            cpuacct: None,
            removed: false,
        };
        // From here on, an error drops `cgroup`, which removes what was created.
        for plan in &plans {
            let leaf = create_leaf(plan, name)?;
            cgroup
                .group_directories
                .push(plan.parent.join(GROUP_DIRECTORY));
            let member = Member {
                version: plan.version,
                directory: leaf.clone(),
            };
            cgroup.members.push(member.clone());
            for controller in &plan.controllers {
                match controller {
                    Controller::Memory => cgroup.memory = Some(member.clone()),
                    Controller::Pids => cgroup.pids = Some(member.clone()),
                    Controller::Cpu => cgroup.cpu = Some(member.clone()),
                }
            }
            if plan.version == Version::V2 {
                cgroup.unified = Some(leaf.clone());
            }
            if freezer_parent.as_ref() == Some(&plan.parent) {
                cgroup.freezer = Some(leaf.clone());
            }
            if cpuacct_parent.as_ref() == Some(&plan.parent) {
                cgroup.cpuacct = Some(leaf);
            }
        }
        cgroup.write_limits(limits)?;
        Ok(cgroup)
    }

    fn write_limits(&self, limits: &Limits) -> Result<(), CreateError> {
        if let (Some(bytes), Some(member)) = (limits.memory_bytes, &self.memory) {
            let swap = limits.memory_swap_bytes.unwrap_or(0);
            let directory = &member.directory;
            match member.version {
                Version::V2 => {
                    write_limit(Controller::Memory, &directory.join("memory.max"), bytes)?;
                    write_swap_limit(&directory.join("memory.swap.max"), swap)?;
                }
                Version::V1 => {
                    write_limit(
                        Controller::Memory,
                        &directory.join("memory.limit_in_bytes"),
                        bytes,
                    )?;
                    write_swap_limit(
                        &directory.join("memory.memsw.limit_in_bytes"),
                        bytes.saturating_add(swap),
                    )?;
                }
            }
        }
        if let (Some(count), Some(member)) = (limits.pids, &self.pids) {
            write_limit(Controller::Pids, &member.directory.join("pids.max"), count)?;
        }
        if let (Some(cpus), Some(member)) = (limits.cpus, &self.cpu) {
            let quota = CpuQuota::from_cpus(cpus)?;
            let directory = &member.directory;
            match member.version {
                Version::V2 => write_value(
                    Controller::Cpu,
                    &directory.join("cpu.max"),
                    &quota.cpu_max(),
                )?,
                Version::V1 => {
                    write_limit(
                        Controller::Cpu,
                        &directory.join("cpu.cfs_period_us"),
                        quota.period_micros,
                    )?;
                    write_limit(
                        Controller::Cpu,
                        &directory.join("cpu.cfs_quota_us"),
                        quota.quota_micros,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// The sandbox name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every directory of this cgroup, one per hierarchy, in creation order.
    pub fn directories(&self) -> Vec<&Path> {
        self.members.iter().map(|m| m.directory.as_path()).collect()
    }

    /// The directory holding `controller`'s limit, and its interface, if a limit was set.
    pub fn directory_of(&self, controller: Controller) -> Option<(Version, &Path)> {
        let member = match controller {
            Controller::Memory => self.memory.as_ref(),
            Controller::Pids => self.pids.as_ref(),
            Controller::Cpu => self.cpu.as_ref(),
        }?;
        Some((member.version, member.directory.as_path()))
    }

    /// Moves process `pid` (and with it, its future children) into the cgroup in every
    /// hierarchy.
    ///
    /// # Errors
    ///
    /// [`CgroupError::AddProcess`] naming the `cgroup.procs` file that refused it.
    pub fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        for member in &self.members {
            let path = member.directory.join("cgroup.procs");
            std::fs::write(&path, pid.to_string()).map_err(|source| CgroupError::AddProcess {
                pid,
                path,
                source,
            })?;
        }
        Ok(())
    }

    /// The processes in the cgroup, in any hierarchy, sorted.
    ///
    /// # Errors
    ///
    /// [`CgroupError::Read`] or [`CgroupError::InvalidValue`] for a `cgroup.procs` file.
    pub fn processes(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = Vec::new();
        for member in &self.members {
            pids.extend(read_procs(&member.directory)?);
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// How many times the kernel's OOM killer killed a process in the cgroup (v2
    /// `memory.events` `oom_kill`, v1 `memory.oom_control` `oom_kill`).
    ///
    /// # Errors
    ///
    /// [`CgroupError::NotLimited`] without a memory limit; read and parse errors with the path.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        let member = self.member(Controller::Memory)?;
        let file = match member.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        read_key(&member.directory.join(file), "oom_kill")
    }

    /// Memory in use, in bytes (v2 `memory.current`, v1 `memory.usage_in_bytes`).
    ///
    /// # Errors
    ///
    /// As [`Cgroup::oom_kills`].
    pub fn memory_current(&self) -> Result<u64, CgroupError> {
        let member = self.member(Controller::Memory)?;
        let file = match member.version {
            Version::V2 => "memory.current",
            Version::V1 => "memory.usage_in_bytes",
        };
        read_number(&member.directory.join(file))
    }

    /// Processes and threads in the cgroup (`pids.current`).
    ///
    /// # Errors
    ///
    /// [`CgroupError::NotLimited`] without a pids limit; read and parse errors with the path.
    pub fn pids_current(&self) -> Result<u64, CgroupError> {
        let member = self.member(Controller::Pids)?;
        read_number(&member.directory.join("pids.current"))
    }

    /// How many forks and clones the pids limit refused (`pids.events` `max`).
    ///
    /// # Errors
    ///
    /// As [`Cgroup::pids_current`].
    pub fn pids_denied(&self) -> Result<u64, CgroupError> {
        let member = self.member(Controller::Pids)?;
        read_key(&member.directory.join("pids.events"), "max")
    }

    /// CPU time used by the cgroup's processes (v2 `cpu.stat` `usage_usec`, which the unified
    /// hierarchy keeps even without the cpu controller; else v1 `cpuacct.usage`).
    ///
    /// # Errors
    ///
    /// [`CgroupError::NoCpuAccounting`] when neither is available; read and parse errors.
    pub fn cpu_usage(&self) -> Result<Duration, CgroupError> {
        if let Some(unified) = &self.unified {
            let micros = read_key(&unified.join("cpu.stat"), "usage_usec")?;
            return Ok(Duration::from_micros(micros));
        }
        if let Some(cpuacct) = &self.cpuacct {
            let nanos = read_number(&cpuacct.join("cpuacct.usage"))?;
            return Ok(Duration::from_nanos(nanos));
        }
        Err(CgroupError::NoCpuAccounting {
            name: self.name.clone(),
        })
    }

    /// Sends `SIGKILL` to every process in the cgroup, such that none can fork out of it: v2
    /// `cgroup.kill` when there is one; otherwise the cgroup is frozen (v2 `cgroup.freeze` or
    /// the v1 freezer), every process in `cgroup.procs` is killed, and the cgroup is thawed so
    /// the kills take effect. Without any freezer, it kills in rounds until no process is left.
    ///
    /// The processes die shortly after; their parents still have to reap them.
    ///
    /// # Errors
    ///
    /// I/O errors with their path, [`CgroupError::FreezeStuck`], [`CgroupError::Signal`].
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        if let Some(unified) = &self.unified {
            let kill = unified.join("cgroup.kill");
            if kill.exists() {
                return write_file(&kill, "1");
            }
            return self.kill_frozen(&Freezer::Unified(unified.clone()));
        }
        if let Some(freezer) = &self.freezer {
            return self.kill_frozen(&Freezer::Legacy(freezer.clone()));
        }
        self.kill_in_rounds()
    }

    fn kill_frozen(&self, freezer: &Freezer) -> Result<(), CgroupError> {
        freezer.freeze()?;
        let killed = self.kill_listed();
        let thawed = freezer.thaw();
        killed.and(thawed)
    }

    fn kill_in_rounds(&self) -> Result<(), CgroupError> {
        for _ in 0..KILL_ROUNDS {
            if self.processes()?.is_empty() {
                return Ok(());
            }
            self.kill_listed()?;
            thread::yield_now();
        }
        Err(CgroupError::KillIncomplete {
            path: self
                .members
                .first()
                .map(|m| m.directory.clone())
                .unwrap_or_default(),
        })
    }

    fn kill_listed(&self) -> Result<(), CgroupError> {
        for raw in self.processes()? {
            let Some(pid) = Pid::from_raw(raw) else {
                continue;
            };
            match rustix::process::kill_process(pid, Signal::KILL) {
                Ok(()) | Err(Errno::SRCH) => {}
                Err(errno) => {
                    return Err(CgroupError::Signal {
                        name: self.name.clone(),
                        pid: raw,
                        source: errno.into(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Removes the cgroup's directories (retrying briefly while exiting processes are still
    /// counted), then each shared `hardbox/` directory if it is left empty.
    ///
    /// Kill the processes first ([`Cgroup::kill_all`]); a cgroup with live processes cannot be
    /// removed.
    ///
    /// # Errors
    ///
    /// [`RemoveError::Busy`] when processes remain; [`RemoveError::Remove`] for other failures.
    /// Directories removed before the error stay removed; calling again retries the rest.
    pub fn remove(&mut self) -> Result<(), RemoveError> {
        let removed = self.remove_leaves();
        for group in &self.group_directories {
            // Other sandboxes may still use it: only an empty one goes.
            let _ = std::fs::remove_dir(group);
        }
        removed
    }

    /// Removes the cgroup's own directories and keeps the shared `hardbox/` parents, which the
    /// next sandbox would otherwise create again (creating a memory cgroup is the costliest part
    /// of creating one).
    ///
    /// # Errors
    ///
    /// As [`Cgroup::remove`]; calling [`Cgroup::remove`] afterwards retries what is left.
    pub fn remove_leaves(&mut self) -> Result<(), RemoveError> {
        let mut first_error = None;
        let mut remaining = Vec::new();
        for member in self.members.drain(..).rev() {
            if let Err(err) = remove_directory(&member.directory) {
                first_error.get_or_insert(err);
                remaining.push(member);
            }
        }
        remaining.reverse();
        self.members = remaining;
        match first_error {
            Some(err) => Err(err),
            None => {
                self.removed = true;
                Ok(())
            }
        }
    }

    fn member(&self, controller: Controller) -> Result<&Member, CgroupError> {
        match controller {
            Controller::Memory => self.memory.as_ref(),
            Controller::Pids => self.pids.as_ref(),
            Controller::Cpu => self.cpu.as_ref(),
        }
        .ok_or_else(|| CgroupError::NotLimited {
            name: self.name.clone(),
            controller,
        })
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if self.removed || self.members.is_empty() {
            return;
        }
        if self.processes().is_ok_and(|pids| !pids.is_empty()) {
            let _ = self.kill_all();
        }
        let _ = self.remove();
    }
}

enum Freezer {
    Unified(PathBuf),
    Legacy(PathBuf),
}

impl Freezer {
    fn freeze(&self) -> Result<(), CgroupError> {
        let (file, value) = self.control(true);
        write_file(&file, value)?;
        for _ in 0..FREEZE_TRIES {
            if self.frozen()? {
                return Ok(());
            }
            thread::sleep(FREEZE_PAUSE);
        }
        let _ = self.thaw();
        Err(CgroupError::FreezeStuck {
            path: match self {
                Freezer::Unified(path) | Freezer::Legacy(path) => path.clone(),
            },
        })
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        let (file, value) = self.control(false);
        write_file(&file, value)
    }

    fn control(&self, frozen: bool) -> (PathBuf, &'static str) {
        match self {
            Freezer::Unified(path) => (path.join("cgroup.freeze"), if frozen { "1" } else { "0" }),
            Freezer::Legacy(path) => (
                path.join("freezer.state"),
                if frozen { "FROZEN" } else { "THAWED" },
            ),
        }
    }

    fn frozen(&self) -> Result<bool, CgroupError> {
        match self {
            Freezer::Unified(path) => Ok(read_key(&path.join("cgroup.events"), "frozen")? == 1),
            Freezer::Legacy(path) => {
                let file = path.join("freezer.state");
                Ok(read_text(&file)?.trim() == "FROZEN")
            }
        }
    }
}

fn validate_name(name: &str) -> Result<(), CreateError> {
    let valid = (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(CreateError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// Creates `parent/hardbox/<name>`, enabling the plan's controllers on the way for v2.
fn create_leaf(plan: &Plan, name: &str) -> Result<PathBuf, CreateError> {
    let group = plan.parent.join(GROUP_DIRECTORY);
    let leaf = group.join(name);
    // v1: `hardbox/` exists after the first sandbox, and there is no controller to enable in
    // it first, so the leaf alone is one mkdir instead of two.
    if plan.version == Version::V1 {
        match std::fs::create_dir(&leaf) {
            Ok(()) => return Ok(leaf),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                return Err(CreateError::AlreadyExists { path: leaf });
            }
            // `hardbox/` is missing, or something else failed: the steps below tell which.
            Err(_) => {}
        }
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        if plan.version == Version::V2 {
            for &controller in &plan.controllers {
                enable_controller(&plan.parent, controller)?;
            }
        }
        match std::fs::create_dir(&group) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(CreateError::CreateDirectory {
                    path: group,
                    source,
                });
            }
        }
        if plan.version == Version::V2 {
            let mut lost_group = false;
            for &controller in &plan.controllers {
                match enable_controller(&group, controller) {
                    Ok(()) => {}
                    Err(CreateError::EnableController { source, .. })
                        if source.kind() == io::ErrorKind::NotFound
                            && attempt < CREATE_ATTEMPTS =>
                    {
                        lost_group = true;
                        break;
                    }
                    Err(err) => return Err(err),
                }
            }
            if lost_group {
                continue;
            }
        }
        match std::fs::create_dir(&leaf) {
            Ok(()) => return Ok(leaf),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                return Err(CreateError::AlreadyExists { path: leaf });
            }
            // Another sandbox removed the empty `hardbox/` in between: make it again.
            Err(err) if err.kind() == io::ErrorKind::NotFound && attempt < CREATE_ATTEMPTS => {}
            Err(source) => return Err(CreateError::CreateDirectory { path: leaf, source }),
        }
    }
}

/// Writes `+controller` to `directory/cgroup.subtree_control` unless it is already enabled.
fn enable_controller(directory: &Path, controller: Controller) -> Result<(), CreateError> {
    let path = directory.join("cgroup.subtree_control");
    enable_in_subtree(&path, controller.name()).map_err(|source| CreateError::EnableController {
        controller,
        path,
        source,
    })
}

/// Enables the controller called `name` in a `cgroup.subtree_control` file, if it is not yet.
fn enable_in_subtree(path: &Path, name: &str) -> io::Result<()> {
    let enabled = std::fs::read_to_string(path)?;
    if enabled.split_whitespace().any(|c| c == name) {
        return Ok(());
    }
    std::fs::write(path, format!("+{name}"))
}

fn write_limit(controller: Controller, path: &Path, value: u64) -> Result<(), CreateError> {
    write_value(controller, path, &value.to_string())
}

fn write_value(controller: Controller, path: &Path, value: &str) -> Result<(), CreateError> {
    match std::fs::write(path, value) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(CreateError::MissingFile {
            controller,
            path: path.to_owned(),
        }),
        Err(source) => Err(CreateError::WriteLimit {
            controller,
            path: path.to_owned(),
            value: value.to_owned(),
            source,
        }),
    }
}

/// Writes a swap limit; where the kernel keeps no swap accounting, that is only acceptable on a
/// host without swap, since the limit could not be held otherwise.
fn write_swap_limit(path: &Path, value: u64) -> Result<(), CreateError> {
    if path.exists() {
        return write_limit(Controller::Memory, path, value);
    }
    let swaps = Path::new("/proc/swaps");
    let text = std::fs::read_to_string(swaps).map_err(|source| CreateError::ReadSwaps {
        path: swaps.to_owned(),
        source,
    })?;
    // The first line is a header; any other line is an active swap area.
    if text.lines().skip(1).any(|line| !line.trim().is_empty()) {
        return Err(CreateError::SwapNotLimited {
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn remove_directory(path: &Path) -> Result<(), RemoveError> {
    for _ in 0..REMOVE_TRIES {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) if err.raw_os_error() == Some(Errno::BUSY.raw_os_error()) => {
                thread::sleep(REMOVE_PAUSE);
            }
            Err(source) => {
                return Err(RemoveError::Remove {
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
    Err(RemoveError::Busy {
        path: path.to_owned(),
    })
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse_number(path: &Path, text: &str) -> Result<u64, CgroupError> {
    text.trim().parse().map_err(|_| CgroupError::InvalidValue {
        path: path.to_owned(),
        text: text.trim().to_owned(),
    })
}

fn read_number(path: &Path) -> Result<u64, CgroupError> {
    parse_number(path, &read_text(path)?)
}

/// The value of `key` in a flat-keyed file (`key value` per line).
fn read_key(path: &Path, key: &'static str) -> Result<u64, CgroupError> {
    let text = read_text(path)?;
    let value = text
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(' ')?;
            (name == key).then_some(value)
        })
        .ok_or_else(|| CgroupError::MissingKey {
            path: path.to_owned(),
            key,
        })?;
    parse_number(path, value)
}

fn read_procs(directory: &Path) -> Result<Vec<i32>, CgroupError> {
    let path = directory.join("cgroup.procs");
    let text = read_text(&path)?;
    text.split_whitespace()
        .map(|pid| {
            pid.parse().map_err(|_| CgroupError::InvalidValue {
                path: path.clone(),
                text: pid.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap values known to be valid")]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_plain_directory_names() {
        let check = |name: &str, ok: bool| {
            assert_eq!(validate_name(name).is_ok(), ok, "{name:?}");
        };
        check("agent-1", true);
        check("a.b_c-D9", true);
        check(&"x".repeat(128), true);
        check("", false);
        check(&"x".repeat(129), false);
        check(".", false);
        check("..", false);
        check(".hidden", false);
        check("a/b", false);
        check("a b", false);
        check("ü", false);
    }

    /// The v2 mechanism under every limit: a controller the parent offers is enabled for the
    /// children through `cgroup.subtree_control`, and one it does not offer is refused by the
    /// kernel. Run on a real cgroup2 mount with whichever controller this host leaves to v2
    /// (on a hybrid host typically `hugetlb` or `misc`, as v1 holds memory, pids and cpu).
    #[test]
    fn subtree_control_enables_offered_controllers_and_the_kernel_refuses_others() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test mounts cgroup2 and must run as root (euid 0); CI runs it as root"
        );
        let mount = tempfile::tempdir().unwrap();
        rustix::mount::mount(
            "hardbox-test",
            mount.path(),
            "cgroup2",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .unwrap();
        let root = mount.path();
        let offered = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap();
        let parent = root.join(format!("hardbox-subtree-test-{}", std::process::id()));
        std::fs::create_dir(&parent).unwrap();
        let subtree = parent.join("cgroup.subtree_control");

        // Never offered to `parent` unless the root enables it first: "+<name>" fails.
        let unoffered = ["memory", "pids", "cpu", "io", "hugetlb", "misc", "rdma"]
            .into_iter()
            .find(|c| {
                !std::fs::read_to_string(parent.join("cgroup.controllers"))
                    .unwrap()
                    .split_whitespace()
                    .any(|o| o == *c)
            })
            .unwrap();
        assert!(enable_in_subtree(&subtree, unoffered).is_err());

        let root_subtree = root.join("cgroup.subtree_control");
        let before = std::fs::read_to_string(&root_subtree).unwrap();
        let outcome = offered.split_whitespace().next().map(|controller| {
            enable_in_subtree(&root_subtree, controller).unwrap();
            enable_in_subtree(&subtree, controller).unwrap();
            // Idempotent: a second call writes nothing and succeeds.
            enable_in_subtree(&subtree, controller).unwrap();
            let child = parent.join("child");
            std::fs::create_dir(&child).unwrap();
            let child_offers = std::fs::read_to_string(child.join("cgroup.controllers")).unwrap();
            std::fs::remove_dir(&child).unwrap();
            (controller.to_owned(), child_offers)
        });
        std::fs::remove_dir(&parent).unwrap();
        if let Some((controller, _)) = &outcome {
            if !before.split_whitespace().any(|c| c == controller) {
                std::fs::write(&root_subtree, format!("-{controller}")).unwrap();
            }
        }
        rustix::mount::unmount(root, rustix::mount::UnmountFlags::DETACH).unwrap();
        // A host whose v2 hierarchy offers nothing at all cannot show the positive half.
        if let Some((controller, child_offers)) = outcome {
            assert!(
                child_offers.split_whitespace().any(|c| c == controller),
                "{controller} not offered to a child after enabling it: {child_offers:?}"
            );
        }
    }

    #[test]
    fn reads_flat_keyed_files() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("memory.events");
        std::fs::write(
            &path,
            "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        assert_eq!(read_key(&path, "oom_kill").unwrap(), 1);
        assert_eq!(read_key(&path, "max").unwrap(), 12);
        assert_eq!(
            read_key(&path, "missing").unwrap_err().to_string(),
            format!("{} has no missing entry", path.display())
        );
        std::fs::write(&path, "oom_kill many\n").unwrap();
        assert!(matches!(
            read_key(&path, "oom_kill"),
            Err(CgroupError::InvalidValue { .. })
        ));
    }
}

/// What [`sweep`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Leaf directories removed.
    pub removed: Vec<PathBuf>,
    /// Leaf directories that could not be removed, with the reason.
    pub failed: Vec<(PathBuf, String)>,
}

/// Removes abandoned sandbox cgroups: every `hardbox/<name>` leaf, in every hierarchy hardbox
/// may write, whose `name` the caller calls stale (its owner is gone). Processes still in such
/// a leaf are killed first.
///
/// The caller decides what is stale because only it knows how it named its cgroups; a leaf of a
/// live sandbox must never be called stale.
pub fn sweep(host: &HostCgroups, stale: impl Fn(&str) -> bool) -> SweepReport {
    let mut report = SweepReport::default();
    let parents = host
        .unified
        .iter()
        .chain(&host.legacy)
        .filter_map(|hierarchy| host.usable(hierarchy).ok());
    for parent in parents {
        let group = parent.join(GROUP_DIRECTORY);
        let Ok(entries) = std::fs::read_dir(&group) else {
            continue;
        };
        for entry in entries.flatten() {
            let leaf = entry.path();
            let is_stale = entry.file_name().to_str().is_some_and(&stale);
            if !is_stale || !leaf.is_dir() {
                continue;
            }
            kill_listed_in(&leaf);
            match remove_directory(&leaf) {
                Ok(()) => report.removed.push(leaf),
                Err(err) => report.failed.push((leaf, err.to_string())),
            }
        }
    }
    report
}

/// Kills every process listed in `leaf/cgroup.procs`, a few rounds (forks may race).
fn kill_listed_in(leaf: &Path) {
    for _ in 0..10 {
        let Ok(text) = std::fs::read_to_string(leaf.join("cgroup.procs")) else {
            return;
        };
        let pids: Vec<Pid> = text
            .lines()
            .filter_map(|line| line.trim().parse::<i32>().ok())
            .filter_map(Pid::from_raw)
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
        thread::sleep(REMOVE_PAUSE);
    }
}
