//! Applying planned steps through [`sys::Syscalls`]: the one place the launch order is executed.
//!
//! The same function runs on the real kernel inside the sandbox's processes and on
//! [`sys::recording::Recorder`] in tests, so the order the tests assert is the order that runs.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use sys::process::ExecTarget;
use sys::{Errno, LandlockEnforcement, LandlockRules, PreparedLandlock, SeccompFilter, Syscalls};

use crate::plan::{HiddenKind, Step, EMPTY_FILE, NEW_ROOT};
use sys::{Filesystem, MountAttributes};

/// What some steps need beyond their own data.
pub struct Resources<'a> {
    /// Mounts passed by the parent, indexed by `Step::AttachMount::index`.
    pub mounts: &'a [OwnedFd],
    pub landlock: &'a LandlockRules,
    /// The same rules built in advance (a long-lived sandbox's init builds them once for all
    /// its commands); used instead of `landlock` when present.
    pub prepared_landlock: Option<&'a PreparedLandlock>,
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

/// Masks a hidden path (see [`Step::Mask`]).
fn mask<S: Syscalls>(sys: &mut S, target: &Path, kind: HiddenKind) -> Result<(), Errno> {
    let masked = match kind {
        HiddenKind::Directory => sys.mount_filesystem(
            Filesystem::Tmpfs,
            target,
            MountAttributes::SEALED,
            "mode=000,size=4k,nr_inodes=1",
        ),
        HiddenKind::File => sys
            .bind_mount(Path::new(EMPTY_FILE), target)
            .and_then(|()| sys.set_mount_attributes(target, MountAttributes::SEALED, false)),
    };
    match masked {
        // Unreachable for the sandbox already: nothing to hide.
        Err(Errno::ACCESS) => Ok(()),
        other => other,
    }
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
        Step::Mask { target, kind } => mask(sys, target, *kind),
        Step::PivotRoot { new_root, put_old } => sys.pivot_root(new_root, put_old),
        Step::DetachMount { target } => sys.detach_mount(target),
        Step::ChangeDirectory { path } => sys.change_directory(path),
        Step::SetHostname { name } => sys.set_hostname(name),
        Step::BringUpLoopback => sys.bring_up_loopback(),
        Step::RouteAllToLoopback => sys.route_all_to_loopback(),
        Step::DisableCoreDumps => sys.disable_core_dumps(),
        Step::LimitOpenFiles { limit } => sys.limit_open_files(*limit),
        Step::DropBoundingCapabilities => sys.drop_bounding_capabilities(),
        Step::ClearAmbientCapabilities => sys.clear_ambient_capabilities(),
        Step::ClearCapabilities => sys.clear_capabilities(),
        Step::SetNoNewPrivs => sys.set_no_new_privs(),
        Step::RestrictLandlock => {
            let enforcement = match resources.prepared_landlock {
                Some(prepared) => sys.restrict_prepared_landlock(prepared)?,
                None => sys.restrict_landlock(resources.landlock)?,
            };
            match enforcement {
                LandlockEnforcement::Full | LandlockEnforcement::Partial => Ok(()),
                LandlockEnforcement::None => Err(Errno::OPNOTSUPP),
            }
        }
        Step::InstallSeccomp => {
            let filter = resources.seccomp.ok_or(Errno::INVAL)?;
            sys.install_seccomp(filter)
        }
        Step::Execute => {
            let target = resources.exec.ok_or(Errno::INVAL)?;
            sys.execute(target)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use sys::recording::{Call, Recorder};

    use super::*;
    use crate::plan::tests::{settings, ROOTLESS};
    use crate::plan::{Identity, LaunchPlan};

    struct NoFilter;

    impl SeccompFilter for NoFilter {
        fn install(&self) -> Result<(), Errno> {
            Ok(())
        }
    }

    fn exec_target() -> ExecTarget {
        ExecTarget::new("sh", &["sh".into()], &[], "/bin").unwrap_or_else(|e| panic!("{e}"))
    }

    /// Applies setup then command steps to a recorder, as init and the command do.
    fn record(plan: &LaunchPlan, recorder: &mut Recorder) -> Result<(), StepFailure> {
        let mounts: Vec<OwnedFd> = plan
            .passed_mounts
            .iter()
            .map(|_| File::open("/dev/null").map(OwnedFd::from))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{e}"));
        let exec = exec_target();
        let resources = Resources {
            mounts: &mounts,
            landlock: &plan.landlock,
            prepared_landlock: None,
            seccomp: Some(&NoFilter),
            exec: Some(&exec),
        };
        apply(&plan.setup, recorder, &resources)?;
        apply(&plan.command, recorder, &resources)
    }

    fn position(names: &[&str], name: &str) -> usize {
        names
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("{name} was not called: {names:?}"))
    }

    fn last_position(names: &[&str], name: &str) -> usize {
        names
            .iter()
            .rposition(|n| *n == name)
            .unwrap_or_else(|| panic!("{name} was not called: {names:?}"))
    }

    fn index_of(calls: &[Call], wanted: &Call) -> usize {
        calls
            .iter()
            .position(|call| call == wanted)
            .unwrap_or_else(|| panic!("{wanted:?} was not called"))
    }

    #[test]
    fn syscalls_follow_the_documented_launch_order() {
        for identity in [
            ROOTLESS,
            Identity::Root {
                uid: 1000,
                gid: 1000,
            },
        ] {
            let plan = LaunchPlan::new(settings(identity)).unwrap_or_else(|e| panic!("{e}"));
            let mut recorder = Recorder::default();
            record(&plan, &mut recorder).unwrap_or_else(|f| panic!("{f:?}"));
            let names = recorder.names();
            let calls = &recorder.calls;

            // mount namespace made private before any mount.
            assert_eq!(names[0], "make_mounts_private");
            let rootfs = index_of(
                calls,
                &Call::BindMount {
                    source: "/oldroot".into(),
                    target: "/newroot".into(),
                },
            );
            let workspace = calls
                .iter()
                .position(|call| match call {
                    Call::BindMount { target, .. } | Call::AttachMount(target) => {
                        target == Path::new("/newroot/work/project")
                    }
                    _ => false,
                })
                .unwrap_or_else(|| panic!("workspace not bound: {names:?}"));
            let mask = calls
                .iter()
                .position(|call| {
                    matches!(call, Call::MountFilesystem { target, .. } if target == Path::new("/newroot/root"))
                })
                .unwrap_or_else(|| panic!("/root not masked: {names:?}"));
            let proc_mount = calls
                .iter()
                .position(|call| {
                    matches!(
                        call,
                        Call::MountFilesystem {
                            filesystem: sys::Filesystem::Proc,
                            ..
                        }
                    )
                })
                .unwrap_or_else(|| panic!("no /proc: {names:?}"));
            let sys_mount = calls
                .iter()
                .position(|call| {
                    matches!(
                        call,
                        Call::MountFilesystem {
                            filesystem: sys::Filesystem::Sysfs,
                            ..
                        }
                    )
                })
                .unwrap_or_else(|| panic!("no /sys: {names:?}"));
            let final_pivot = index_of(
                calls,
                &Call::PivotRoot {
                    new_root: ".".into(),
                    put_old: ".".into(),
                },
            );
            let detach = position(&names, "detach_mount");
            let hostname = position(&names, "set_hostname");
            let loopback = position(&names, "bring_up_loopback");
            let rlimit = position(&names, "disable_core_dumps");
            let bounding = position(&names, "drop_bounding_capabilities");
            let ambient = position(&names, "clear_ambient_capabilities");
            let capabilities = position(&names, "clear_capabilities");
            let no_new_privs = position(&names, "set_no_new_privs");
            let landlock = position(&names, "restrict_landlock");
            let seccomp = position(&names, "install_seccomp");
            let exec = position(&names, "execute");

            let order = [
                0,
                rootfs,
                workspace,
                mask,
                proc_mount,
                sys_mount,
                final_pivot,
                detach,
                hostname,
                loopback,
                bounding,
                rlimit,
                ambient,
                capabilities,
                no_new_privs,
                landlock,
                seccomp,
                exec,
            ];
            assert!(
                order.windows(2).all(|pair| pair[0] < pair[1]),
                "{identity:?}: out of order {order:?} in {names:?}"
            );
            // Seccomp is the very last step before exec; exec is the last call.
            assert_eq!(seccomp + 1, exec);
            assert_eq!(exec, names.len() - 1);
            // Nothing is mounted after the final pivot_root.
            assert!(last_position(&names, "mount_filesystem") < final_pivot);
            assert!(last_position(&names, "bind_mount") < final_pivot);
        }
    }

    #[test]
    fn a_failing_step_stops_the_launch_and_names_its_index() {
        let plan = LaunchPlan::new(settings(ROOTLESS)).unwrap_or_else(|e| panic!("{e}"));
        let mut recorder = Recorder {
            fail: Some(("set_no_new_privs", Errno::PERM)),
            ..Recorder::default()
        };
        let failure = record(&plan, &mut recorder).err();
        let index = plan
            .command
            .iter()
            .position(|step| *step == Step::SetNoNewPrivs)
            .unwrap_or_else(|| panic!("no no_new_privs step"));
        assert_eq!(
            failure,
            Some(StepFailure {
                index,
                errno: Errno::PERM
            })
        );
        assert_eq!(recorder.names().last(), Some(&"set_no_new_privs"));
    }

    #[test]
    fn unenforced_landlock_fails_closed() {
        let plan = LaunchPlan::new(settings(ROOTLESS)).unwrap_or_else(|e| panic!("{e}"));
        let mut recorder = Recorder {
            landlock: Some(sys::LandlockEnforcement::None),
            ..Recorder::default()
        };
        let failure = record(&plan, &mut recorder).err();
        assert_eq!(failure.map(|f| f.errno), Some(Errno::OPNOTSUPP));
        assert!(!recorder.names().contains(&"execute"));
    }

    #[test]
    fn a_prepared_ruleset_is_enforced_in_place_of_building_one_and_fails_closed_alike() {
        let plan = LaunchPlan::new(settings(ROOTLESS)).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(plan.landlock, LandlockRules::default());
        let exec = exec_target();
        for (enforcement, expected) in [
            (sys::LandlockEnforcement::Full, None),
            (sys::LandlockEnforcement::None, Some(Errno::OPNOTSUPP)),
        ] {
            let mut recorder = Recorder {
                landlock: Some(enforcement),
                ..Recorder::default()
            };
            let prepared = recorder
                .prepare_landlock(&plan.landlock)
                .unwrap_or_else(|e| panic!("{e}"));
            let resources = Resources {
                mounts: &[],
                landlock: &LandlockRules::default(),
                prepared_landlock: Some(&prepared),
                seccomp: Some(&NoFilter),
                exec: Some(&exec),
            };
            let result = apply(&plan.command, &mut recorder, &resources);
            assert_eq!(result.err().map(|f| f.errno), expected);
            // The prepared rules are the ones enforced, not the (empty) rules passed beside.
            assert!(recorder
                .calls
                .contains(&Call::RestrictLandlock(plan.landlock.clone())));
            assert_eq!(recorder.names().contains(&"execute"), expected.is_none());
        }
    }

    #[test]
    fn mount_points_are_created_with_their_parents_under_the_new_root() {
        let mut recorder = Recorder::default();
        make_mount_point(&mut recorder, Path::new("/newroot/tmp/a/b"), false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            recorder.calls,
            [
                Call::MakeDirectory("/newroot/tmp".into()),
                Call::MakeDirectory("/newroot/tmp/a".into()),
                Call::MakeFile("/newroot/tmp/a/b".into()),
            ]
        );
    }
}
