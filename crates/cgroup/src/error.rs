//! The errors of each operation: detecting, creating, using and removing a cgroup.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::host::Controller;

/// A malformed line in `/proc/self/mountinfo` or `/proc/self/cgroup`.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The line does not have the file's format.
    #[error("malformed line {line} of {file}: {text:?}")]
    Malformed {
        /// The file the text came from.
        file: &'static str,
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
}

/// Errors from [`crate::Host::detect`].
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A file under `/proc` or a `cgroup.controllers` file could not be read.
    #[error("failed to read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// `/proc/self/mountinfo` or `/proc/self/cgroup` is malformed.
    #[error("failed to work out this host's cgroup layout")]
    Parse(#[from] ParseError),
}

/// Why a controller cannot be used for a limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnavailableReason {
    /// No mounted hierarchy has the controller.
    NotMounted,
    /// The unified hierarchy does not offer it to the parent cgroup (it is bound to v1, or a
    /// parent did not enable it).
    NotEnabled {
        /// The parent's `cgroup.controllers`.
        path: PathBuf,
    },
    /// Root, but the parent directory is not writable (a read-only mount).
    NotWritable {
        /// The parent directory.
        path: PathBuf,
    },
    /// Not root, and the parent was not delegated to this user.
    NotDelegated {
        /// The parent directory.
        path: PathBuf,
    },
    /// A configured parent cgroup does not exist.
    MissingParent {
        /// The parent directory.
        path: PathBuf,
    },
    /// The v2 parent has processes of its own, so the controller cannot be enabled for
    /// children (the kernel's no-internal-processes rule).
    ParentHasProcesses {
        /// The parent directory.
        path: PathBuf,
    },
    /// This process's cgroup is not visible under the hierarchy's mount.
    NotVisible {
        /// The mount point.
        mount_point: PathBuf,
    },
}

impl fmt::Display for UnavailableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnavailableReason::NotMounted => {
                f.write_str("no cgroup hierarchy on this host offers the controller")
            }
            UnavailableReason::NotEnabled { path } => {
                write!(f, "the controller is not listed in {}", path.display())
            }
            UnavailableReason::NotWritable { path } => {
                write!(f, "{} is not writable", path.display())
            }
            UnavailableReason::NotDelegated { path } => write!(
                f,
                "{} is not delegated to this user (not root, and the cgroup is not writable)",
                path.display()
            ),
            UnavailableReason::MissingParent { path } => {
                write!(f, "the parent cgroup {} does not exist", path.display())
            }
            UnavailableReason::ParentHasProcesses { path } => write!(
                f,
                "{} has processes of its own, so the controller cannot be enabled in its cgroup.subtree_control",
                path.display()
            ),
            UnavailableReason::NotVisible { mount_point } => write!(
                f,
                "this process's cgroup is not visible under {}",
                mount_point.display()
            ),
        }
    }
}

/// Errors from [`crate::Cgroup::create`].
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The sandbox name cannot be a cgroup directory name.
    #[error("invalid cgroup name {name:?}: use 1 to 128 letters, digits, '.', '_' or '-', not starting with '.'")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// A limit has an impossible value.
    #[error("invalid {controller} limit: {reason}")]
    InvalidLimit {
        /// The controller of the limit.
        controller: Controller,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A limit was asked for but the controller cannot be used on this host.
    #[error("cannot enforce the {controller} limit: {reason}")]
    Unavailable {
        /// The controller.
        controller: Controller,
        /// Why it cannot be used.
        reason: UnavailableReason,
    },
    /// The controller's limit file is missing from the new cgroup.
    #[error("cannot enforce the {controller} limit: {path} does not exist")]
    MissingFile {
        /// The controller.
        controller: Controller,
        /// The file that should have been there.
        path: PathBuf,
    },
    /// Swap cannot be limited (no swap accounting) while the host has swap.
    #[error("cannot keep the sandbox out of swap: {path} does not exist (swap accounting is off) and this host has swap enabled")]
    SwapNotLimited {
        /// The missing swap limit file.
        path: PathBuf,
    },
    /// `/proc/swaps` could not be read.
    #[error("failed to read {path}")]
    ReadSwaps {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// No usable hierarchy at all: nothing to create the cgroup in.
    #[error("no writable cgroup hierarchy to create sandbox cgroup {name} in")]
    NoHierarchy {
        /// The sandbox name.
        name: String,
    },
    /// A cgroup of that name exists already.
    #[error("cgroup {path} already exists: another sandbox has this name, or a crashed one left it behind")]
    AlreadyExists {
        /// The existing directory.
        path: PathBuf,
    },
    /// `mkdir` of a cgroup failed.
    #[error("failed to create cgroup {path}")]
    CreateDirectory {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Writing `+controller` to a `cgroup.subtree_control` failed.
    #[error("failed to enable the {controller} controller in {path}")]
    EnableController {
        /// The controller.
        controller: Controller,
        /// The `cgroup.subtree_control` file.
        path: PathBuf,
        /// Why (`EBUSY`: the parent cgroup has processes of its own).
        source: io::Error,
    },
    /// Writing a limit failed.
    #[error("failed to write {value:?} to {path} for the {controller} limit")]
    WriteLimit {
        /// The controller.
        controller: Controller,
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// Why.
        source: io::Error,
    },
}

/// Errors from using a created cgroup: adding processes, reading usage, killing.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Writing a pid to `cgroup.procs` failed.
    #[error("failed to move process {pid} into {path}")]
    AddProcess {
        /// The process.
        pid: u32,
        /// The `cgroup.procs` file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A cgroup file could not be read.
    #[error("failed to read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A cgroup file could not be written.
    #[error("failed to write {value:?} to {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// Why.
        source: io::Error,
    },
    /// A flat-keyed file lacks an entry.
    #[error("{path} has no {key} entry")]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The key looked for.
        key: &'static str,
    },
    /// A value is not a number.
    #[error("{path} holds {text:?} where a number was expected")]
    InvalidValue {
        /// The file.
        path: PathBuf,
        /// The text found.
        text: String,
    },
    /// The value needs a controller this cgroup does not use.
    #[error(
        "sandbox cgroup {name} has no {controller} controller (no {controller} limit was set)"
    )]
    NotLimited {
        /// The sandbox name.
        name: String,
        /// The controller.
        controller: Controller,
    },
    /// No hierarchy of this cgroup accounts CPU time.
    #[error("sandbox cgroup {name} has no cpu accounting (neither v2 cpu.stat nor v1 cpuacct)")]
    NoCpuAccounting {
        /// The sandbox name.
        name: String,
    },
    /// Sending `SIGKILL` failed for another reason than the process being gone.
    #[error("failed to kill process {pid} of sandbox cgroup {name}")]
    Signal {
        /// The sandbox name.
        name: String,
        /// The process.
        pid: i32,
        /// Why.
        source: io::Error,
    },
    /// The v1 freezer did not reach `FROZEN`.
    #[error("cgroup {path} did not freeze")]
    FreezeStuck {
        /// The freezer cgroup.
        path: PathBuf,
    },
    /// Processes kept appearing while killing without a freezer.
    #[error("processes kept appearing in {path} while killing them")]
    KillIncomplete {
        /// The cgroup.
        path: PathBuf,
    },
}

/// Errors from [`crate::Cgroup::remove`].
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// `rmdir` kept failing with `EBUSY`: processes are still in the cgroup.
    #[error("cgroup {path} still has processes")]
    Busy {
        /// The directory.
        path: PathBuf,
    },
    /// `rmdir` failed.
    #[error("failed to remove cgroup {path}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}
