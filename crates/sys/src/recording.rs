//! [`Recorder`]: a fake kernel that records each [`Syscalls`] call, so the launch order can be
//! asserted without root. It can also be told to fail one kind of call with an errno, to test
//! how failures are reported.

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use crate::process::ExecTarget;
use crate::{
    Errno, Filesystem, LandlockEnforcement, LandlockRules, MountAttributes, PreparedLandlock,
    SeccompFilter, Syscalls,
};

/// One recorded call, with its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    MakeMountsPrivate(PathBuf),
    MountFilesystem {
        filesystem: Filesystem,
        target: PathBuf,
        attributes: MountAttributes,
        options: String,
    },
    BindMount {
        source: PathBuf,
        target: PathBuf,
    },
    AttachMount(PathBuf),
    SetMountAttributes {
        target: PathBuf,
        attributes: MountAttributes,
        recursive: bool,
    },
    MakeDirectory(PathBuf),
    MakeFile(PathBuf),
    MakeSymlink {
        target: PathBuf,
        link: PathBuf,
    },
    PivotRoot {
        new_root: PathBuf,
        put_old: PathBuf,
    },
    DetachMount(PathBuf),
    ChangeDirectory(PathBuf),
    SetIdentity {
        uid: u32,
        gid: u32,
        clear_groups: bool,
    },
    SetHostname(String),
    BringUpLoopback,
    RouteAllToLoopback,
    DisableCoreDumps,
    LimitOpenFiles(u64),
    DropBoundingCapabilities,
    ClearAmbientCapabilities,
    ClearCapabilities,
    SetNoNewPrivs,
    RestrictLandlock(LandlockRules),
    InstallSeccomp,
    Execute,
}

impl Call {
    /// The call's name without arguments, for asserting order.
    pub fn name(&self) -> &'static str {
        match self {
            Call::MakeMountsPrivate(_) => "make_mounts_private",
            Call::MountFilesystem { .. } => "mount_filesystem",
            Call::BindMount { .. } => "bind_mount",
            Call::AttachMount(_) => "attach_mount",
            Call::SetMountAttributes { .. } => "set_mount_attributes",
            Call::MakeDirectory(_) => "make_directory",
            Call::MakeFile(_) => "make_file",
            Call::MakeSymlink { .. } => "make_symlink",
            Call::PivotRoot { .. } => "pivot_root",
            Call::DetachMount(_) => "detach_mount",
            Call::ChangeDirectory(_) => "change_directory",
            Call::SetIdentity { .. } => "set_identity",
            Call::SetHostname(_) => "set_hostname",
            Call::BringUpLoopback => "bring_up_loopback",
            Call::RouteAllToLoopback => "route_all_to_loopback",
            Call::DisableCoreDumps => "disable_core_dumps",
            Call::LimitOpenFiles(_) => "limit_open_files",
            Call::DropBoundingCapabilities => "drop_bounding_capabilities",
            Call::ClearAmbientCapabilities => "clear_ambient_capabilities",
            Call::ClearCapabilities => "clear_capabilities",
            Call::SetNoNewPrivs => "set_no_new_privs",
            Call::RestrictLandlock(_) => "restrict_landlock",
            Call::InstallSeccomp => "install_seccomp",
            Call::Execute => "execute",
        }
    }
}

/// Records calls; succeeds unless told to fail a call by name.
#[derive(Debug, Default)]
pub struct Recorder {
    pub calls: Vec<Call>,
    /// Fail the first call with this name with this errno.
    pub fail: Option<(&'static str, Errno)>,
    /// What `restrict_landlock` reports.
    pub landlock: Option<LandlockEnforcement>,
}

impl Recorder {
    /// The names of the recorded calls, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.calls.iter().map(Call::name).collect()
    }

    fn record(&mut self, call: Call) -> Result<(), Errno> {
        let name = call.name();
        self.calls.push(call);
        match self.fail {
            Some((failing, errno)) if failing == name => {
                self.fail = None;
                Err(errno)
            }
            _ => Ok(()),
        }
    }
}

impl Syscalls for Recorder {
    fn make_mounts_private(&mut self, target: &Path) -> Result<(), Errno> {
        self.record(Call::MakeMountsPrivate(target.to_owned()))
    }

    fn mount_filesystem(
        &mut self,
        filesystem: Filesystem,
        target: &Path,
        attributes: MountAttributes,
        options: &str,
    ) -> Result<(), Errno> {
        self.record(Call::MountFilesystem {
            filesystem,
            target: target.to_owned(),
            attributes,
            options: options.to_owned(),
        })
    }

    fn bind_mount(&mut self, source: &Path, target: &Path) -> Result<(), Errno> {
        self.record(Call::BindMount {
            source: source.to_owned(),
            target: target.to_owned(),
        })
    }

    fn attach_mount(&mut self, _mount: BorrowedFd<'_>, target: &Path) -> Result<(), Errno> {
        self.record(Call::AttachMount(target.to_owned()))
    }

    fn set_mount_attributes(
        &mut self,
        target: &Path,
        attributes: MountAttributes,
        recursive: bool,
    ) -> Result<(), Errno> {
        self.record(Call::SetMountAttributes {
            target: target.to_owned(),
            attributes,
            recursive,
        })
    }

    fn make_directory(&mut self, path: &Path, _mode: u32) -> Result<(), Errno> {
        self.record(Call::MakeDirectory(path.to_owned()))
    }

    fn make_file(&mut self, path: &Path, _mode: u32) -> Result<(), Errno> {
        self.record(Call::MakeFile(path.to_owned()))
    }

    fn make_symlink(&mut self, target: &Path, link: &Path) -> Result<(), Errno> {
        self.record(Call::MakeSymlink {
            target: target.to_owned(),
            link: link.to_owned(),
        })
    }

    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> Result<(), Errno> {
        self.record(Call::PivotRoot {
            new_root: new_root.to_owned(),
            put_old: put_old.to_owned(),
        })
    }

    fn detach_mount(&mut self, target: &Path) -> Result<(), Errno> {
        self.record(Call::DetachMount(target.to_owned()))
    }

    fn change_directory(&mut self, path: &Path) -> Result<(), Errno> {
        self.record(Call::ChangeDirectory(path.to_owned()))
    }

    fn set_identity(&mut self, uid: u32, gid: u32, clear_groups: bool) -> Result<(), Errno> {
        self.record(Call::SetIdentity {
            uid,
            gid,
            clear_groups,
        })
    }

    fn set_hostname(&mut self, name: &str) -> Result<(), Errno> {
        self.record(Call::SetHostname(name.to_owned()))
    }

    fn bring_up_loopback(&mut self) -> Result<(), Errno> {
        self.record(Call::BringUpLoopback)
    }

    fn route_all_to_loopback(&mut self) -> Result<(), Errno> {
        self.record(Call::RouteAllToLoopback)
    }

    fn disable_core_dumps(&mut self) -> Result<(), Errno> {
        self.record(Call::DisableCoreDumps)
    }

    fn limit_open_files(&mut self, limit: u64) -> Result<(), Errno> {
        self.record(Call::LimitOpenFiles(limit))
    }

    fn drop_bounding_capabilities(&mut self) -> Result<(), Errno> {
        self.record(Call::DropBoundingCapabilities)
    }

    fn clear_ambient_capabilities(&mut self) -> Result<(), Errno> {
        self.record(Call::ClearAmbientCapabilities)
    }

    fn clear_capabilities(&mut self) -> Result<(), Errno> {
        self.record(Call::ClearCapabilities)
    }

    fn set_no_new_privs(&mut self) -> Result<(), Errno> {
        self.record(Call::SetNoNewPrivs)
    }

    fn restrict_landlock(&mut self, rules: &LandlockRules) -> Result<LandlockEnforcement, Errno> {
        self.record(Call::RestrictLandlock(rules.clone()))?;
        Ok(self.landlock.unwrap_or(LandlockEnforcement::Full))
    }

    /// Records nothing: preparing changes no process; enforcing it is recorded as
    /// [`Call::RestrictLandlock`] of the rules it was made from.
    fn prepare_landlock(&mut self, rules: &LandlockRules) -> Result<PreparedLandlock, Errno> {
        Ok(PreparedLandlock {
            ruleset: None,
            rules: rules.clone(),
        })
    }

    fn restrict_prepared_landlock(
        &mut self,
        prepared: &PreparedLandlock,
    ) -> Result<LandlockEnforcement, Errno> {
        self.restrict_landlock(&prepared.rules)
    }

    fn install_seccomp(&mut self, _filter: &dyn SeccompFilter) -> Result<(), Errno> {
        self.record(Call::InstallSeccomp)
    }

    fn execute(&mut self, _target: &ExecTarget) -> Result<(), Errno> {
        self.record(Call::Execute)
    }
}
