//! Applying planned steps through [`sys::Syscalls`]: the one place the launch order is executed.
//!
//! The same function runs on the real kernel inside the sandbox's processes and on
//! [`sys::recording::Recorder`] in tests, so the order the tests assert is the order that runs.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use sys::process::ExecTarget;
use sys::{Errno, LandlockEnforcement, LandlockRules, SeccompFilter, Syscalls};

use crate::plan::{Step, NEW_ROOT};

/// What some steps need beyond their own data.
pub struct Resources<'a> {
    /// Mounts passed by the parent, indexed by `Step::AttachMount::index`.
    pub mounts: &'a [OwnedFd],
    pub landlock: &'a LandlockRules,
    pub seccomp: Option<&'a dyn SeccompFilter>,
    pub exec: Option<&'a ExecTarget>,
}

/// Which step failed, and the errno the kernel gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepFailure {
    pub index: usize,
    pub errno: Errno,
}

/// Applies `steps` in order; stops at the first failure. `Execute` does not return on success
/// with the real kernel.
///
/// Landlock that the kernel does not enforce at all fails with `EOPNOTSUPP`: isolation never
/// degrades silently.
pub fn apply<S: Syscalls>(
    steps: &[Step],
    sys: &mut S,
    resources: &Resources<'_>,
) -> Result<(), StepFailure> {
    for (index, step) in steps.iter().enumerate() {
        apply_one(step, sys, resources).map_err(|errno| StepFailure { index, errno })?;
    }
    Ok(())
}

/// `mkdir -p` the parents of `path` under the new root, then create `path` itself; what
/// already exists is left as it is.
fn make_mount_point<S: Syscalls>(sys: &mut S, path: &Path, directory: bool) -> Result<(), Errno> {
    let ignore_existing = |result: Result<(), Errno>| match result {
        Err(Errno::EXIST) => Ok(()),
        other => other,
    };
    let mut parents: Vec<&Path> = path
        .ancestors()
        .skip(1)
        .take_while(|parent| parent.starts_with(NEW_ROOT) && *parent != Path::new(NEW_ROOT))
        .collect();
    parents.reverse();
    for parent in parents {
        ignore_existing(sys.make_directory(parent, 0o755))?;
    }
    if directory {
        ignore_existing(sys.make_directory(path, 0o755))
    } else {
        ignore_existing(sys.make_file(path, 0o644))
    }
}

fn apply_one<S: Syscalls>(
    step: &Step,
    sys: &mut S,
    resources: &Resources<'_>,
) -> Result<(), Errno> {
    match step {
        Step::MakeMountsPrivate => sys.make_mounts_private("/".as_ref()),
        Step::SetIdentity {
            uid,
            gid,
            clear_groups,
        } => sys.set_identity(*uid, *gid, *clear_groups),
        Step::MountFilesystem {
            filesystem,
            target,
            attributes,
            options,
        } => sys.mount_filesystem(*filesystem, target, *attributes, options),
        Step::MakeDirectory { path, mode } => sys.make_directory(path, *mode),
        Step::MakeFile { path, mode } => sys.make_file(path, *mode),
        Step::MakeSymlink { target, link } => sys.make_symlink(target, link),
        Step::MakeMountPoint { path, directory } => make_mount_point(sys, path, *directory),
        Step::BindMount { source, target } => sys.bind_mount(source, target),
        Step::AttachMount { index, target, .. } => {
            let mount = resources.mounts.get(*index).ok_or(Errno::BADF)?;
            sys.attach_mount(mount.as_fd(), target)
        }
        Step::SetMountAttributes {
            target,
            attributes,
            recursive,
        } => sys.set_mount_attributes(target, *attributes, *recursive),
        Step::PivotRoot { new_root, put_old } => sys.pivot_root(new_root, put_old),
        Step::DetachMount { target } => sys.detach_mount(target),
        Step::ChangeDirectory { path } => sys.change_directory(path),
        Step::SetHostname { name } => sys.set_hostname(name),
        Step::BringUpLoopback => sys.bring_up_loopback(),
        Step::DisableCoreDumps => sys.disable_core_dumps(),
        Step::DropBoundingCapabilities => sys.drop_bounding_capabilities(),
        Step::ClearAmbientCapabilities => sys.clear_ambient_capabilities(),
        Step::ClearCapabilities => sys.clear_capabilities(),
        Step::SetNoNewPrivs => sys.set_no_new_privs(),
        Step::RestrictLandlock => match sys.restrict_landlock(resources.landlock)? {
            LandlockEnforcement::Full | LandlockEnforcement::Partial => Ok(()),
            LandlockEnforcement::None => Err(Errno::OPNOTSUPP),
        },
        Step::InstallSeccomp => {
            let filter = resources.seccomp.ok_or(Errno::INVAL)?;
            sys.install_seccomp(filter)
        }
        Step::Execute => {
            let target = resources.exec.ok_or(Errno::INVAL)?;
            let errno = sys.execute(target);
            // Only the recording fake returns from a successful exec, with errno 0.
            if errno.raw_os_error() == 0 {
                Ok(())
            } else {
                Err(errno)
            }
        }
    }
}
