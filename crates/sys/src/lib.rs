//! The syscalls the sandbox launcher makes, and the only crate of the workspace with `unsafe`.
//!
//! Why it exists: the launcher (`sandbox`) must call the kernel in a strict order (namespaces,
//! mounts, pivot_root, capabilities, no_new_privs, Landlock, seccomp, exec). Keeping every call
//! behind the [`Syscalls`] trait lets that order be unit-tested with [`recording::Recorder`]
//! without root, and keeps every `unsafe` block of the project in one small, reviewed place.
//!
//! What it guarantees:
//!
//! - every `unsafe` block carries a `// SAFETY:` comment naming the invariant it relies on;
//! - [`linux::Linux`] does one syscall (or one small fixed group) per trait method, returns the
//!   kernel's errno unchanged and never prints;
//! - the process helpers in [`process`] that run between fork and exec do not allocate, except
//!   where their documentation says so.

pub mod bpf;
pub mod entry;
pub mod errno;
pub mod linux;
pub mod notify;
pub mod process;
pub mod recording;

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

pub use rustix::io::Errno;

/// Flags a mount may carry. They can be added to a mount but, inside a user namespace, not
/// removed from one the host made (the kernel locks them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MountAttributes {
    pub read_only: bool,
    pub no_setuid: bool,
    pub no_devices: bool,
    pub no_exec: bool,
}

impl MountAttributes {
    /// Read-only, no setuid, no device files: what a bind of host paths gets.
    pub const READ_ONLY: MountAttributes = MountAttributes {
        read_only: true,
        no_setuid: true,
        no_devices: true,
        no_exec: false,
    };
    /// Writable, no setuid, no device files.
    pub const WRITABLE: MountAttributes = MountAttributes {
        read_only: false,
        no_setuid: true,
        no_devices: true,
        no_exec: false,
    };
    /// Read-only, and nothing may be executed, opened as a device or gain privileges from it.
    pub const SEALED: MountAttributes = MountAttributes {
        read_only: true,
        no_setuid: true,
        no_devices: true,
        no_exec: true,
    };
}

/// A filesystem the launcher creates (as opposed to binding an existing one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Filesystem {
    Tmpfs,
    Proc,
    Sysfs,
    Devpts,
    /// overlayfs: a writable upper directory over read-only lower ones.
    Overlay,
}

impl Filesystem {
    /// The kernel's name for the filesystem type.
    pub fn kernel_name(self) -> &'static str {
        match self {
            Filesystem::Tmpfs => "tmpfs",
            Filesystem::Proc => "proc",
            Filesystem::Sysfs => "sysfs",
            Filesystem::Devpts => "devpts",
            Filesystem::Overlay => "overlay",
        }
    }
}

/// What the command may do under Landlock. Paths are as seen inside the sandbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LandlockRules {
    /// Directories whose whole tree may be read, listed and executed.
    pub read: Vec<PathBuf>,
    /// Directories whose whole tree may also be written, created in and removed from.
    pub write_directories: Vec<PathBuf>,
    /// Single files (devices) that may also be written and truncated.
    pub write_files: Vec<PathBuf>,
}

/// A Landlock ruleset built by [`Syscalls::prepare_landlock`] and not yet enforced.
#[derive(Debug)]
pub struct PreparedLandlock {
    /// `None` when made by the recording fake.
    pub(crate) ruleset: Option<landlock::RulesetCreated>,
    /// The rules it was made from (what the recording fake records).
    pub(crate) rules: LandlockRules,
}

/// How much of the requested Landlock ruleset the kernel enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LandlockEnforcement {
    /// Every requested access right is enforced.
    Full,
    /// The kernel's Landlock ABI is older than the crate's: the rights it knows are enforced.
    Partial,
    /// The kernel does not enforce Landlock at all.
    None,
}

/// A compiled seccomp filter, installed by the layer that owns it (the `seccomp` crate sits
/// above this one, so the launcher adapts it to this trait).
pub trait SeccompFilter {
    /// Installs the filter on the calling thread.
    ///
    /// # Errors
    ///
    /// The errno of the refused `prctl`/`seccomp` call.
    fn install(&self) -> Result<(), Errno>;
}

/// The kernel interface of the launch sequence. [`linux::Linux`] calls the kernel;
/// [`recording::Recorder`] records the calls so their order can be tested without root.
///
/// Paths are passed as they must reach the kernel (relative to the caller's current root).
pub trait Syscalls {
    /// Makes every mount under `target` private, recursively, so nothing propagates back to
    /// the host.
    fn make_mounts_private(&mut self, target: &Path) -> Result<(), Errno>;
    /// Mounts a new filesystem on `target`.
    fn mount_filesystem(
        &mut self,
        filesystem: Filesystem,
        target: &Path,
        attributes: MountAttributes,
        options: &str,
    ) -> Result<(), Errno>;
    /// Binds `source` (with its submounts) onto `target`.
    fn bind_mount(&mut self, source: &Path, target: &Path) -> Result<(), Errno>;
    /// Attaches a detached mount (from `open_tree`, possibly idmapped) onto `target`.
    fn attach_mount(&mut self, mount: BorrowedFd<'_>, target: &Path) -> Result<(), Errno>;
    /// Adds `attributes` to the mount at `target`, and to its submounts if `recursive`.
    fn set_mount_attributes(
        &mut self,
        target: &Path,
        attributes: MountAttributes,
        recursive: bool,
    ) -> Result<(), Errno>;
    fn make_directory(&mut self, path: &Path, mode: u32) -> Result<(), Errno>;
    /// Creates an empty regular file (a mount point for a file bind).
    fn make_file(&mut self, path: &Path, mode: u32) -> Result<(), Errno>;
    fn make_symlink(&mut self, target: &Path, link: &Path) -> Result<(), Errno>;
    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> Result<(), Errno>;
    /// Lazily detaches the mount at `target` and everything under it.
    fn detach_mount(&mut self, target: &Path) -> Result<(), Errno>;
    fn change_directory(&mut self, path: &Path) -> Result<(), Errno>;
    /// Sets real, effective and saved ids; `clear_groups` empties the supplementary groups.
    fn set_identity(&mut self, uid: u32, gid: u32, clear_groups: bool) -> Result<(), Errno>;
    fn set_hostname(&mut self, name: &str) -> Result<(), Errno>;
    /// Brings the network namespace's loopback interface up.
    fn bring_up_loopback(&mut self) -> Result<(), Errno>;
    /// Makes every IPv4 and IPv6 address local to the network namespace ("AnyIP": a `local`
    /// route for `0.0.0.0/0` and `::/0` via loopback in the local table), so a connection to any
    /// address lands on a listener bound in the namespace, whose accepted sockets keep the
    /// original destination as their local address. IPv6 is skipped when the kernel has none.
    fn route_all_to_loopback(&mut self) -> Result<(), Errno>;
    /// `RLIMIT_CORE` = 0: a crashing command leaves no core file with its memory.
    fn disable_core_dumps(&mut self) -> Result<(), Errno>;
    /// `RLIMIT_NOFILE` = `limit` (soft and hard): the most files a process may hold open.
    fn limit_open_files(&mut self, limit: u64) -> Result<(), Errno>;
    /// Drops every capability from the bounding set.
    fn drop_bounding_capabilities(&mut self) -> Result<(), Errno>;
    fn clear_ambient_capabilities(&mut self) -> Result<(), Errno>;
    /// Empties the effective, permitted and inheritable sets.
    fn clear_capabilities(&mut self) -> Result<(), Errno>;
    fn set_no_new_privs(&mut self) -> Result<(), Errno>;
    fn restrict_landlock(&mut self, rules: &LandlockRules) -> Result<LandlockEnforcement, Errno>;
    /// Builds the ruleset of `rules` without enforcing it, so that a process that starts many
    /// commands (a long-lived sandbox's init) opens the granted paths once, not per command.
    /// The paths are resolved now: a granted path made later is not granted (fail closed).
    fn prepare_landlock(&mut self, rules: &LandlockRules) -> Result<PreparedLandlock, Errno>;
    /// Enforces a prepared ruleset on the calling thread, as [`Syscalls::restrict_landlock`]
    /// does with the rules it was made from. The prepared ruleset stays usable.
    fn restrict_prepared_landlock(
        &mut self,
        prepared: &PreparedLandlock,
    ) -> Result<LandlockEnforcement, Errno>;
    fn install_seccomp(&mut self, filter: &dyn SeccompFilter) -> Result<(), Errno>;
    /// Replaces the process image. The real kernel returns only on failure, with the errno
    /// that explains it; the recording fake returns `Ok` where exec would have succeeded.
    fn execute(&mut self, target: &process::ExecTarget) -> Result<(), Errno>;
}
