//! [`Linux`]: the [`Syscalls`] trait on the real kernel.
//!
//! Each method is one syscall, or one small fixed group of them (bringing loopback up, dropping
//! every bounding capability), and returns the kernel's errno unchanged.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use landlock::{
    Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    ABI,
};
use rustix::fs::{FileType, Mode, CWD};
use rustix::mount::{MountFlags, MountPropagationFlags, MoveMountFlags, UnmountFlags};
use rustix::process::{Resource, Rlimit};
use rustix::thread::{CapabilitySet, CapabilitySets};

use crate::{
    Errno, Filesystem, LandlockEnforcement, LandlockRules, MountAttributes, SeccompFilter, Syscalls,
};

/// The real kernel.
#[derive(Debug, Default)]
pub struct Linux;

// `mount_setattr(2)`: rustix does not wrap it yet.
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const AT_RECURSIVE: u32 = 0x8000;

/// `struct mount_attr` from `<linux/mount.h>` (version 0, 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn attribute_bits(attributes: MountAttributes) -> u64 {
    let mut bits = 0;
    if attributes.read_only {
        bits |= MOUNT_ATTR_RDONLY;
    }
    if attributes.no_setuid {
        bits |= MOUNT_ATTR_NOSUID;
    }
    if attributes.no_devices {
        bits |= MOUNT_ATTR_NODEV;
    }
    if attributes.no_exec {
        bits |= MOUNT_ATTR_NOEXEC;
    }
    bits
}

fn mount_flags(attributes: MountAttributes) -> MountFlags {
    let mut flags = MountFlags::empty();
    if attributes.read_only {
        flags |= MountFlags::RDONLY;
    }
    if attributes.no_setuid {
        flags |= MountFlags::NOSUID;
    }
    if attributes.no_devices {
        flags |= MountFlags::NODEV;
    }
    if attributes.no_exec {
        flags |= MountFlags::NOEXEC;
    }
    flags
}

fn c_path(path: &Path) -> Result<CString, Errno> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::INVAL)
}

/// `mount_setattr(dirfd, path, flags, attr)`.
fn mount_setattr(
    directory: BorrowedFd<'_>,
    path: &Path,
    flags: u32,
    attr: &MountAttr,
) -> Result<(), Errno> {
    let path = c_path(path)?;
    // SAFETY: `path` is a NUL-terminated string and `attr` a valid `struct mount_attr` whose
    // size we pass; both outlive the call, and the kernel only reads them.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            directory.as_raw_fd(),
            path.as_ptr(),
            flags,
            std::ptr::from_ref(attr),
            std::mem::size_of::<MountAttr>(),
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL))
    }
}

/// Makes the detached mount `mount` (from [`crate::process::clone_mount_tree`]) show files
/// through the id mapping of the user namespace `user_namespace`, recursively.
///
/// The caller needs `CAP_SYS_ADMIN` over the filesystem's user namespace (the host's root).
pub fn set_id_mapping(mount: BorrowedFd<'_>, user_namespace: BorrowedFd<'_>) -> Result<(), Errno> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: u64::try_from(user_namespace.as_raw_fd()).map_err(|_| Errno::BADF)?,
    };
    mount_setattr(
        mount,
        Path::new(""),
        libc::AT_EMPTY_PATH as u32 | AT_RECURSIVE,
        &attr,
    )
}

fn errno_from(error: &(dyn std::error::Error + 'static)) -> Errno {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if let Some(errno) = Errno::from_io_error(io) {
                return errno;
            }
        }
        current = error.source();
    }
    Errno::INVAL
}

impl Syscalls for Linux {
    fn make_mounts_private(&mut self, target: &Path) -> Result<(), Errno> {
        rustix::mount::mount_change(
            target,
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        )
    }

    fn mount_filesystem(
        &mut self,
        filesystem: Filesystem,
        target: &Path,
        attributes: MountAttributes,
        options: &str,
    ) -> Result<(), Errno> {
        let name = filesystem.kernel_name();
        let options = CString::new(options).map_err(|_| Errno::INVAL)?;
        rustix::mount::mount(
            name,
            target,
            name,
            mount_flags(attributes),
            Some(options.as_c_str()),
        )
    }

    fn bind_mount(&mut self, source: &Path, target: &Path) -> Result<(), Errno> {
        rustix::mount::mount_bind_recursive(source, target)
    }

    fn attach_mount(&mut self, mount: BorrowedFd<'_>, target: &Path) -> Result<(), Errno> {
        rustix::mount::move_mount(
            mount,
            "",
            CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
    }

    fn set_mount_attributes(
        &mut self,
        target: &Path,
        attributes: MountAttributes,
        recursive: bool,
    ) -> Result<(), Errno> {
        let attr = MountAttr {
            attr_set: attribute_bits(attributes),
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        let flags = if recursive { AT_RECURSIVE } else { 0 };
        mount_setattr(CWD, target, flags, &attr)
    }

    fn make_directory(&mut self, path: &Path, mode: u32) -> Result<(), Errno> {
        rustix::fs::mkdir(path, Mode::from_raw_mode(mode))
    }

    fn make_file(&mut self, path: &Path, mode: u32) -> Result<(), Errno> {
        // `mknod` of a regular file creates it as `open(O_CREAT | O_EXCL)` does (`EEXIST` when
        // something is there), without opening and closing a file: one call per mount point.
        rustix::fs::mknodat(
            CWD,
            path,
            FileType::RegularFile,
            Mode::from_raw_mode(mode),
            0,
        )
    }

    fn make_symlink(&mut self, target: &Path, link: &Path) -> Result<(), Errno> {
        rustix::fs::symlink(target, link)
    }

    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> Result<(), Errno> {
        rustix::process::pivot_root(new_root, put_old)
    }

    fn detach_mount(&mut self, target: &Path) -> Result<(), Errno> {
        rustix::mount::unmount(target, UnmountFlags::DETACH)
    }

    fn change_directory(&mut self, path: &Path) -> Result<(), Errno> {
        rustix::process::chdir(path)
    }

    fn set_identity(&mut self, uid: u32, gid: u32, clear_groups: bool) -> Result<(), Errno> {
        if clear_groups {
            rustix::thread::set_thread_groups(&[])?;
        }
        let gid = rustix::process::Gid::from_raw(gid);
        rustix::thread::set_thread_res_gid(gid, gid, gid)?;
        let uid = rustix::process::Uid::from_raw(uid);
        rustix::thread::set_thread_res_uid(uid, uid, uid)
    }

    fn set_hostname(&mut self, name: &str) -> Result<(), Errno> {
        rustix::system::sethostname(name.as_bytes())
    }

    fn bring_up_loopback(&mut self) -> Result<(), Errno> {
        let socket = rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::DGRAM,
            None,
        )?;
        // SAFETY: `ifreq` is plain old data; all-zero bytes are a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *slot = *byte as libc::c_char;
        }
        // SAFETY: `socket` is an open socket and `request` a valid `ifreq` naming "lo"; the
        // kernel writes the interface flags into it.
        if unsafe { libc::ioctl(socket.as_fd().as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0
        {
            return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO));
        }
        // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union, the one read here.
        let flags = unsafe { request.ifr_ifru.ifru_flags };
        request.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        // SAFETY: as above; the kernel reads the name and flags from `request`.
        if unsafe { libc::ioctl(socket.as_fd().as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
            return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO));
        }
        Ok(())
    }

    fn disable_core_dumps(&mut self) -> Result<(), Errno> {
        rustix::process::setrlimit(
            Resource::Core,
            Rlimit {
                current: Some(0),
                maximum: Some(0),
            },
        )
    }

    fn limit_open_files(&mut self, limit: u64) -> Result<(), Errno> {
        rustix::process::setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(limit),
                maximum: Some(limit),
            },
        )
    }

    fn drop_bounding_capabilities(&mut self) -> Result<(), Errno> {
        // Capabilities are numbered from 0 without gaps; the kernel answers EINVAL for the first
        // number past its last one (`cap_last_cap`), which ends the loop. Asking the kernel
        // instead of reading `/proc/sys/kernel/cap_last_cap` saves an open and a read per launch.
        for number in 0..64 {
            let capability = CapabilitySet::from_bits_retain(1 << number);
            match rustix::thread::remove_capability_from_bounding_set(capability) {
                Ok(()) => {}
                Err(Errno::INVAL) => return Ok(()),
                Err(errno) => return Err(errno),
            }
        }
        Ok(())
    }

    fn clear_ambient_capabilities(&mut self) -> Result<(), Errno> {
        rustix::thread::clear_ambient_capability_set()
    }

    fn clear_capabilities(&mut self) -> Result<(), Errno> {
        rustix::thread::set_capabilities(
            None,
            CapabilitySets {
                effective: CapabilitySet::empty(),
                permitted: CapabilitySet::empty(),
                inheritable: CapabilitySet::empty(),
            },
        )
    }

    fn set_no_new_privs(&mut self) -> Result<(), Errno> {
        rustix::thread::set_no_new_privs(true)
    }

    fn restrict_landlock(&mut self, rules: &LandlockRules) -> Result<LandlockEnforcement, Errno> {
        // Ask for every right this crate knows; the kernel enforces the ones its ABI has.
        let abi = ABI::V10;
        let read = AccessFs::from_read(abi) | AccessFs::IoctlDev;
        let write = AccessFs::from_all(abi);
        let write_file = AccessFs::from_file(abi);
        let ruleset = Ruleset::default()
            .handle_access(AccessFs::from_all(abi))
            .map_err(|error| errno_from(&error))?;
        let mut created = ruleset.create().map_err(|error| errno_from(&error))?;
        let groups = [
            (&rules.read, read),
            (&rules.write_directories, write),
            (&rules.write_files, write_file),
        ];
        for (paths, access) in groups {
            for path in paths {
                let fd = match PathFd::new(path) {
                    Ok(fd) => fd,
                    // A grant for a path that does not exist grants nothing: skipping it only
                    // ever removes access.
                    Err(error) if errno_from(&error) == Errno::NOENT => continue,
                    Err(error) => return Err(errno_from(&error)),
                };
                created = created
                    .add_rule(PathBeneath::new(fd, access))
                    .map_err(|error| errno_from(&error))?;
            }
        }
        let status = created
            .restrict_self()
            .map_err(|error| errno_from(&error))?;
        Ok(match status.ruleset {
            RulesetStatus::FullyEnforced => LandlockEnforcement::Full,
            RulesetStatus::PartiallyEnforced => LandlockEnforcement::Partial,
            RulesetStatus::NotEnforced => LandlockEnforcement::None,
        })
    }

    fn install_seccomp(&mut self, filter: &dyn SeccompFilter) -> Result<(), Errno> {
        filter.install()
    }

    fn execute(&mut self, target: &crate::process::ExecTarget) -> Result<(), Errno> {
        Err(target.execute())
    }
}
