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
    Errno, Filesystem, LandlockEnforcement, LandlockRules, MountAttributes, PreparedLandlock,
    SeccompFilter, Syscalls,
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

    fn route_all_to_loopback(&mut self) -> Result<(), Errno> {
        let socket = rustix::net::socket_with(
            rustix::net::AddressFamily::NETLINK,
            rustix::net::SocketType::RAW,
            rustix::net::SocketFlags::CLOEXEC,
            // NETLINK_ROUTE is protocol 0, the default.
            None,
        )?;
        let loopback = interface_index(b"lo\0")?;
        add_local_default_route(&socket, AF_INET, 4, loopback, 1)?;
        match add_local_default_route(&socket, AF_INET6, 16, loopback, 2) {
            // No IPv6 in this kernel: there is nothing to route.
            Err(Errno::AFNOSUPPORT | Errno::OPNOTSUPP) => Ok(()),
            other => other,
        }
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
        let prepared = self.prepare_landlock(rules)?;
        let ruleset = prepared.ruleset.ok_or(Errno::INVAL)?;
        enforce(ruleset)
    }

    fn prepare_landlock(&mut self, rules: &LandlockRules) -> Result<PreparedLandlock, Errno> {
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
        Ok(PreparedLandlock {
            ruleset: Some(created),
            rules: rules.clone(),
        })
    }

    fn restrict_prepared_landlock(
        &mut self,
        prepared: &PreparedLandlock,
    ) -> Result<LandlockEnforcement, Errno> {
        let ruleset = prepared.ruleset.as_ref().ok_or(Errno::INVAL)?;
        // A duplicate: enforcing consumes the ruleset, and the prepared one serves again.
        let duplicate = ruleset
            .try_clone()
            .map_err(|error| Errno::from_io_error(&error).unwrap_or(Errno::INVAL))?;
        enforce(duplicate)
    }

    fn install_seccomp(&mut self, filter: &dyn SeccompFilter) -> Result<(), Errno> {
        filter.install()
    }

    fn execute(&mut self, target: &crate::process::ExecTarget) -> Result<(), Errno> {
        Err(target.execute())
    }
}

/// Enforces `ruleset` on the calling thread and says how much of it the kernel enforces.
fn enforce(ruleset: landlock::RulesetCreated) -> Result<LandlockEnforcement, Errno> {
    let status = ruleset
        .restrict_self()
        .map_err(|error| errno_from(&error))?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockEnforcement::Full,
        RulesetStatus::PartiallyEnforced => LandlockEnforcement::Partial,
        RulesetStatus::NotEnforced => LandlockEnforcement::None,
    })
}

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// The index of the interface `name` (NUL-terminated).
fn interface_index(name: &[u8]) -> Result<u32, Errno> {
    let socket = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )?;
    // SAFETY: `ifreq` is plain old data; all-zero bytes are a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name) {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: `socket` is an open socket and `request` a valid `ifreq` naming an interface; the
    // kernel writes the index into it.
    if unsafe { libc::ioctl(socket.as_fd().as_raw_fd(), libc::SIOCGIFINDEX, &mut request) } < 0 {
        return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO));
    }
    // SAFETY: SIOCGIFINDEX filled the `ifru_ifindex` member of the union, the one read here.
    let index = unsafe { request.ifr_ifru.ifru_ifindex };
    u32::try_from(index).map_err(|_| Errno::INVAL)
}

/// Sends `RTM_NEWROUTE` for a `local` route of the whole `family` address space via interface
/// `index` in the local table, and waits for the kernel's acknowledgement.
fn add_local_default_route(
    socket: &std::os::fd::OwnedFd,
    family: u8,
    address_length: usize,
    index: u32,
    sequence: u32,
) -> Result<(), Errno> {
    const RTM_NEWROUTE: u16 = 24;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_ACK: u16 = 0x4;
    const NLM_F_CREATE: u16 = 0x400;
    const NLM_F_EXCL: u16 = 0x200;
    const NLMSG_ERROR: u16 = 2;
    const RT_TABLE_LOCAL: u8 = 255;
    const RTPROT_STATIC: u8 = 4;
    const RT_SCOPE_HOST: u8 = 254;
    const RTN_LOCAL: u8 = 2;
    const RTA_DST: u16 = 1;
    const RTA_OIF: u16 = 4;

    let mut message = Vec::with_capacity(64);
    // struct nlmsghdr: length (filled below), type, flags, sequence, port id.
    message.extend_from_slice(&0u32.to_ne_bytes());
    message.extend_from_slice(&RTM_NEWROUTE.to_ne_bytes());
    message
        .extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).to_ne_bytes());
    message.extend_from_slice(&sequence.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    // struct rtmsg: family, dst_len 0 (the whole space), src_len, tos, table, protocol, scope,
    // type, flags.
    message.extend_from_slice(&[
        family,
        0,
        0,
        0,
        RT_TABLE_LOCAL,
        RTPROT_STATIC,
        RT_SCOPE_HOST,
        RTN_LOCAL,
    ]);
    message.extend_from_slice(&0u32.to_ne_bytes());
    // RTA_DST: the all-zero address.
    let attribute_length = 4 + address_length;
    message.extend_from_slice(&u16::try_from(attribute_length).unwrap_or(0).to_ne_bytes());
    message.extend_from_slice(&RTA_DST.to_ne_bytes());
    message.resize(message.len() + address_length, 0);
    message.resize(message.len().next_multiple_of(4), 0);
    // RTA_OIF: the interface.
    message.extend_from_slice(&8u16.to_ne_bytes());
    message.extend_from_slice(&RTA_OIF.to_ne_bytes());
    message.extend_from_slice(&index.to_ne_bytes());
    let length = u32::try_from(message.len()).map_err(|_| Errno::INVAL)?;
    message[..4].copy_from_slice(&length.to_ne_bytes());

    let kernel = rustix::net::netlink::SocketAddrNetlink::new(0, 0);
    rustix::net::sendto(socket, &message, rustix::net::SendFlags::empty(), &kernel)?;
    let mut reply = [0u8; 1024];
    loop {
        let (received, _) = rustix::net::recv(socket, &mut reply, rustix::net::RecvFlags::empty())?;
        let reply = reply.get(..received).ok_or(Errno::IO)?;
        if reply.len() < 20 {
            return Err(Errno::IO);
        }
        let kind = u16::from_ne_bytes([reply[4], reply[5]]);
        let replied_to = u32::from_ne_bytes([reply[8], reply[9], reply[10], reply[11]]);
        if kind != NLMSG_ERROR || replied_to != sequence {
            continue;
        }
        // struct nlmsgerr: a negative errno, or 0 for the acknowledgement.
        let error = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
        return if error == 0 {
            Ok(())
        } else {
            Err(Errno::from_raw_os_error(-error))
        };
    }
}

/// Sets the calling thread's filesystem user and group ids (`setfsuid`, `setfsgid`) and
/// returns the previous ones, so files it creates belong to `uid`:`gid`. Used to create files
/// in a sandbox's filesystems as an id the sandbox maps (a file created there as an id it does
/// not map fails with `EOVERFLOW`). The kernel ignores ids the caller may not take; the
/// returned previous ids let the caller restore them.
pub fn set_filesystem_ids(uid: u32, gid: u32) -> (u32, u32) {
    // SAFETY: setfsgid and setfsuid take plain integers, touch no memory of the caller and
    // cannot fail in a way that leaves the thread inconsistent (they return the previous id).
    let previous_gid = unsafe { libc::setfsgid(gid) };
    // SAFETY: as above.
    let previous_uid = unsafe { libc::setfsuid(uid) };
    (
        u32::try_from(previous_uid).unwrap_or(0),
        u32::try_from(previous_gid).unwrap_or(0),
    )
}
