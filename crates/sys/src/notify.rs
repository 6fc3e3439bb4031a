//! Seccomp user notification and the process inspection the exec tracer needs.
//!
//! Why it exists: the exec tracer (`exectrace`) learns of every `execve`, `execveat` and
//! `exit_group` in a sandbox through a seccomp filter that returns `SECCOMP_RET_USER_NOTIF`.
//! Installing that filter, receiving and answering its notifications, reading the notifying
//! process's memory and watching processes through pidfds are raw syscalls and ioctls; they are
//! wrapped here so the tracer stays free of `unsafe` code.
//!
//! What it guarantees:
//!
//! - [`Listener`] sizes its buffers from `SECCOMP_GET_NOTIF_SIZES`, so a kernel whose structures
//!   grew never writes past them, and zeroes the notification buffer before each receive, as
//!   the kernel requires;
//! - [`read_process_memory`] never reads more than its buffer and stops at the first unmapped
//!   page, returning what it read before it;
//! - every call returns the kernel's errno unchanged (`EINTR` is retried where noted) and
//!   nothing here prints.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::Errno;

/// One classic BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpfInstruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// The kernel refuses longer programs (`BPF_MAXINSNS`).
pub const MAX_INSTRUCTIONS: usize = 4096;

/// `SECCOMP_RET_USER_NOTIF`: the filter's answer that hands the syscall to the listener.
pub const RETURN_USER_NOTIFICATION: u32 = 0x7fc0_0000;
/// `SECCOMP_RET_ALLOW`.
pub const RETURN_ALLOW: u32 = 0x7fff_0000;

fn last_errno(fallback: Errno) -> Errno {
    Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(fallback)
}

/// Installs `program` as a seccomp filter on the calling thread with
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER` and returns the listener (close-on-exec).
///
/// The caller needs `no_new_privs` or `CAP_SYS_ADMIN` in its user namespace. The filter is
/// inherited by every process the thread starts afterwards and cannot be removed.
pub fn install_listener_filter(program: &[BpfInstruction]) -> Result<OwnedFd, Errno> {
    if program.is_empty() || program.len() > MAX_INSTRUCTIONS {
        return Err(Errno::INVAL);
    }
    let len = u16::try_from(program.len()).map_err(|_| Errno::INVAL)?;
    let fprog = libc::sock_fprog {
        len,
        // The kernel only reads the program; `sock_fprog` merely spells the pointer `*mut`.
        filter: program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // SAFETY: `BpfInstruction` is `repr(C)` with the exact layout of `struct sock_filter`
    // (u16, u8, u8, u32); `fprog` points to `len` of them, alive for the call, and the kernel
    // copies the program before returning. The flag asks for a new descriptor as the result.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            std::ptr::from_ref(&fprog),
        )
    };
    if fd < 0 {
        return Err(last_errno(Errno::INVAL));
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| Errno::INVAL)?;
    // SAFETY: with NEW_LISTENER, a non-negative result is a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The sizes of the notification structures of the running kernel (`SECCOMP_GET_NOTIF_SIZES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotificationSizes {
    /// `struct seccomp_notif`.
    pub notification: u16,
    /// `struct seccomp_notif_resp`.
    pub response: u16,
    /// `struct seccomp_data`.
    pub data: u16,
}

/// Asks the kernel for the sizes of its notification structures.
pub fn notification_sizes() -> Result<NotificationSizes, Errno> {
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: GET_NOTIF_SIZES writes one `struct seccomp_notif_sizes` to the pointer, which is a
    // valid, writable value of that type for the call's duration.
    let result = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0 as libc::c_uint,
            std::ptr::from_mut(&mut sizes),
        )
    };
    if result < 0 {
        return Err(last_errno(Errno::INVAL));
    }
    Ok(NotificationSizes {
        notification: sizes.seccomp_notif,
        response: sizes.seccomp_notif_resp,
        data: sizes.seccomp_data,
    })
}

/// One syscall waiting for the listener's answer (`struct seccomp_notif`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The cookie that answers it and checks it is still pending.
    pub id: u64,
    /// The thread's id in the listener's pid namespace (0 if it is not visible there).
    pub pid: u32,
    pub flags: u32,
    /// The syscall number.
    pub nr: i32,
    /// `AUDIT_ARCH_*` of the syscall.
    pub arch: u32,
    pub instruction_pointer: u64,
    pub arguments: [u64; 6],
}

/// `struct seccomp_notif` as this crate knows it: 80 bytes.
const NOTIFICATION_SIZE: usize = 80;
/// `struct seccomp_notif_resp` as this crate knows it: 24 bytes.
const RESPONSE_SIZE: usize = 24;

/// A seccomp listener with receive and answer buffers sized for the running kernel.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    /// At least `NOTIFICATION_SIZE` bytes, 8-aligned.
    notification: Vec<u64>,
    /// At least `RESPONSE_SIZE` bytes, 8-aligned.
    response: Vec<u64>,
}

impl Listener {
    /// Wraps the listener returned by [`install_listener_filter`].
    pub fn new(fd: OwnedFd) -> Result<Listener, Errno> {
        let sizes = notification_sizes()?;
        let words = |kernel: u16, ours: usize| usize::from(kernel).max(ours).div_ceil(8);
        Ok(Listener {
            fd,
            notification: vec![0; words(sizes.notification, NOTIFICATION_SIZE)],
            response: vec![0; words(sizes.response, RESPONSE_SIZE)],
        })
    }

    /// Takes the next pending notification, waiting for one if none is pending (poll the
    /// listener first to never wait). `ENOENT`: the notifying process died meanwhile.
    /// `EINTR` is retried.
    pub fn receive(&mut self) -> Result<Notification, Errno> {
        loop {
            self.notification.fill(0);
            // SAFETY: NOTIF_RECV writes one `struct seccomp_notif` of the kernel's size to the
            // pointer; the buffer holds at least that many bytes (sized from GET_NOTIF_SIZES),
            // is zeroed as the kernel requires and is 8-aligned as the structure is.
            let result = unsafe {
                libc::ioctl(
                    self.fd.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_RECV,
                    self.notification.as_mut_ptr(),
                )
            };
            if result < 0 {
                match last_errno(Errno::IO) {
                    Errno::INTR => continue,
                    errno => return Err(errno),
                }
            }
            let word = |index: usize| self.notification.get(index).copied().unwrap_or(0);
            // Layout: id u64 | pid u32, flags u32 | nr i32, arch u32 | ip u64 | args[6] u64;
            // 32-bit pairs share a word in native (little or big) endian order.
            let split = |value: u64| -> (u32, u32) {
                let bytes = value.to_ne_bytes();
                let first = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                let second = u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
                (first, second)
            };
            let (pid, flags) = split(word(1));
            let (nr, arch) = split(word(2));
            let mut arguments = [0u64; 6];
            for (index, argument) in arguments.iter_mut().enumerate() {
                *argument = word(4 + index);
            }
            return Ok(Notification {
                id: word(0),
                pid,
                flags,
                nr: i32::from_ne_bytes(nr.to_ne_bytes()),
                arch,
                instruction_pointer: word(3),
                arguments,
            });
        }
    }

    /// Lets the notified syscall run as if the filter had allowed it
    /// (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`). `ENOENT`: the process died meanwhile.
    pub fn continue_syscall(&mut self, id: u64) -> Result<(), Errno> {
        self.response.fill(0);
        // Layout: id u64 | val i64 | error i32, flags u32.
        self.response[0] = id;
        let flags = u32::try_from(libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE).unwrap_or(1);
        let mut last = [0u8; 8];
        last[4..].copy_from_slice(&flags.to_ne_bytes());
        self.response[2] = u64::from_ne_bytes(last);
        loop {
            // SAFETY: NOTIF_SEND reads one `struct seccomp_notif_resp` of the kernel's size from
            // the pointer; the buffer holds at least that many bytes, initialised above.
            let result = unsafe {
                libc::ioctl(
                    self.fd.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_SEND,
                    self.response.as_ptr(),
                )
            };
            if result >= 0 {
                return Ok(());
            }
            match last_errno(Errno::IO) {
                Errno::INTR => continue,
                errno => return Err(errno),
            }
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Granularity of [`read_process_memory`]'s remote pieces: no page is smaller, so a piece never
/// straddles a mapped and an unmapped page.
const PIECE: u64 = 4096;
/// The most pieces one call reads (64 KiB).
const MAX_PIECES: usize = 16;

/// Reads up to `buffer.len()` bytes (at most 64 KiB) of process `pid`'s memory at `address`
/// with `process_vm_readv`; returns how many were read, which is fewer when an unmapped page
/// follows. `EFAULT` when not even the first byte is mapped; `ESRCH` when the process is gone;
/// `EPERM` without ptrace access to it.
pub fn read_process_memory(pid: u32, address: u64, buffer: &mut [u8]) -> Result<usize, Errno> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| Errno::SRCH)?;
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut remote = [empty; MAX_PIECES];
    let mut pieces = 0;
    let mut cursor = address;
    let mut wanted = 0usize;
    while pieces < MAX_PIECES && wanted < buffer.len() {
        let page_end = (cursor / PIECE + 1).saturating_mul(PIECE);
        let length = usize::try_from(page_end - cursor)
            .unwrap_or(usize::MAX)
            .min(buffer.len() - wanted);
        if length == 0 {
            break;
        }
        remote[pieces] = libc::iovec {
            iov_base: usize::try_from(cursor).map_err(|_| Errno::FAULT)? as *mut libc::c_void,
            iov_len: length,
        };
        pieces += 1;
        wanted += length;
        cursor = cursor.checked_add(length as u64).ok_or(Errno::FAULT)?;
    }
    if wanted == 0 {
        return Ok(0);
    }
    let local = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast::<libc::c_void>(),
        iov_len: wanted,
    };
    // SAFETY: `local` describes `wanted` writable bytes of `buffer` (wanted <= buffer.len()),
    // alive for the call; the remote iovecs only name addresses in the other process, which
    // the kernel checks itself. The process is not written to.
    let read = unsafe {
        libc::process_vm_readv(pid, &local, 1, remote.as_ptr(), pieces as libc::c_ulong, 0)
    };
    if read < 0 {
        return Err(last_errno(Errno::FAULT));
    }
    usize::try_from(read).map_err(|_| Errno::IO)
}

/// A pidfd for process `pid` (close-on-exec). `EINVAL` if `pid` is a thread but not a
/// thread-group leader, `ESRCH` if no such process exists.
pub fn pidfd_open(pid: u32) -> Result<OwnedFd, Errno> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or(Errno::SRCH)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
}

/// Whether the process of `pidfd` has not been reaped yet (running or a zombie): signal 0
/// through the pidfd succeeds or is refused for lack of permission, and fails with `ESRCH`
/// once the process is reaped.
pub fn pidfd_is_unreaped(pidfd: BorrowedFd<'_>) -> Result<bool, Errno> {
    // SAFETY: pidfd_send_signal with signal 0 sends nothing; the null `siginfo` pointer is
    // allowed and `pidfd` is an open descriptor for the call's duration.
    let result = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0 as libc::c_int,
            std::ptr::null_mut::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if result == 0 {
        return Ok(true);
    }
    match last_errno(Errno::SRCH) {
        Errno::SRCH => Ok(false),
        Errno::PERM => Ok(true),
        errno => Err(errno),
    }
}

/// `struct pidfd_info` of `<linux/pidfd.h>`, version 0 (64 bytes).
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroup_id: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    exit_code: i32,
}

/// `PIDFD_INFO_EXIT`.
const PIDFD_INFO_EXIT: u64 = 1 << 3;
/// `PIDFD_GET_INFO` = `_IOWR(0xFF, 11, struct pidfd_info)` with the 64-byte version 0.
const PIDFD_GET_INFO: libc::c_ulong = (3 << 30) | (64 << 16) | (0xFF << 8) | 11;

/// The wait status (as `waitpid` reports it) of the reaped process of `pidfd`, from
/// `PIDFD_GET_INFO` (Linux 6.15 and later). `Ok(None)` while the process has not been reaped;
/// `ENOTTY` or `EINVAL` from older kernels.
pub fn pidfd_exit_status(pidfd: BorrowedFd<'_>) -> Result<Option<i32>, Errno> {
    let info = pidfd_info(pidfd, PIDFD_INFO_EXIT)?;
    if info.mask & PIDFD_INFO_EXIT == 0 {
        return Ok(None);
    }
    Ok(Some(info.exit_code))
}

/// `PIDFD_INFO_PID`.
const PIDFD_INFO_PID: u64 = 1 << 0;

/// `PIDFD_GET_INFO` asking for `mask`; the returned mask says what the kernel filled in.
fn pidfd_info(pidfd: BorrowedFd<'_>, mask: u64) -> Result<PidfdInfo, Errno> {
    const _: () = assert!(std::mem::size_of::<PidfdInfo>() == 64);
    let mut info = PidfdInfo {
        mask,
        ..PidfdInfo::default()
    };
    // SAFETY: PIDFD_GET_INFO reads the request mask from and writes at most 64 bytes (the size
    // encoded in the request number) to the pointer, a valid `repr(C)` 64-byte local.
    let result = unsafe {
        libc::ioctl(
            pidfd.as_raw_fd(),
            PIDFD_GET_INFO as _,
            std::ptr::from_mut(&mut info),
        )
    };
    if result < 0 {
        return Err(last_errno(Errno::NOTTY));
    }
    Ok(info)
}

/// The ids of a pidfd's process as the caller's pid namespace sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PidfdIds {
    pub pid: u32,
    pub tgid: u32,
    /// 0 when the parent is not visible in the caller's pid namespace.
    pub parent: u32,
}

/// The pid, thread-group id and parent of the live process of `pidfd` (`PIDFD_GET_INFO` with
/// `PIDFD_INFO_PID`, Linux 6.13 and later): one ioctl, no file to open. `ESRCH` once the
/// process was reaped; `ENOTTY` or `EINVAL` from older kernels.
pub fn pidfd_ids(pidfd: BorrowedFd<'_>) -> Result<PidfdIds, Errno> {
    let info = pidfd_info(pidfd, PIDFD_INFO_PID)?;
    if info.mask & PIDFD_INFO_PID == 0 {
        return Err(Errno::SRCH);
    }
    Ok(PidfdIds {
        pid: info.pid,
        tgid: info.tgid,
        parent: info.ppid,
    })
}

/// `NS_GET_TGID_IN_PIDNS` = `_IOR(0xb7, 0x9, int)` of `<linux/nsfs.h>`.
const NS_GET_TGID_IN_PIDNS: libc::c_ulong = (2 << 30) | (4 << 16) | (0xb7 << 8) | 0x9;

/// The pid, in the pid namespace of `namespace` (an open `/proc/PID/ns/pid`), of the process
/// whose pid (or whose thread's id) in the caller's namespace is `pid`: one ioctl
/// (`NS_GET_TGID_IN_PIDNS`, Linux 6.10 and later). `ESRCH` when no such process is visible in
/// that namespace or it is gone; `ENOTTY` or `EINVAL` from older kernels.
pub fn pid_in_namespace(namespace: BorrowedFd<'_>, pid: u32) -> Result<u32, Errno> {
    let pid = libc::c_ulong::from(pid);
    // SAFETY: NS_GET_TGID_IN_PIDNS takes the pid as the argument's value and touches no memory
    // of the caller; `namespace` is an open descriptor for the call's duration.
    let result = unsafe { libc::ioctl(namespace.as_raw_fd(), NS_GET_TGID_IN_PIDNS as _, pid) };
    if result < 0 {
        return Err(last_errno(Errno::NOTTY));
    }
    u32::try_from(result).map_err(|_| Errno::SRCH)
}

/// Whether the running kernel keeps the exit status of a reaped process for its pidfds
/// (`PIDFD_GET_INFO` with `PIDFD_INFO_EXIT`) and wakes a pidfd's pollers with `EPOLLHUP` when
/// its process is reaped: both since Linux 6.15, told by the kernel's release (`uname`).
///
/// Why the version and not a probe: the ioctl reports an exit only for a reaped process, and
/// the callers (a sandbox's init before it starts anything) have none to ask about; forking
/// one would take a pid of the sandbox. A kernel with the features backported but an older
/// version number answers `false`, which is safe (the caller keeps its slower way).
pub fn pidfd_reports_exit_status() -> bool {
    let uname = rustix::system::uname();
    kernel_release_at_least(uname.release().to_bytes(), (6, 15))
}

/// Whether a kernel release string (`6.18.44-fc`) is at least `major.minor`; `false` when it
/// cannot be parsed.
fn kernel_release_at_least(release: &[u8], (major, minor): (u32, u32)) -> bool {
    let number = |part: &[u8]| -> Option<u32> {
        let digits = part.iter().take_while(|b| b.is_ascii_digit()).count();
        std::str::from_utf8(&part[..digits]).ok()?.parse().ok()
    };
    let mut parts = release.splitn(3, |&b| b == b'.');
    let found_major = parts.next().and_then(number);
    let found_minor = parts.next().and_then(number);
    match (found_major, found_minor) {
        (Some(found_major), Some(found_minor)) => (found_major, found_minor) >= (major, minor),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_structures_are_at_least_the_sizes_this_module_knows() {
        let sizes = notification_sizes().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            usize::from(sizes.notification) >= NOTIFICATION_SIZE,
            "{sizes:?}"
        );
        assert!(usize::from(sizes.response) >= RESPONSE_SIZE, "{sizes:?}");
        assert!(usize::from(sizes.data) >= 64, "{sizes:?}");
    }

    #[test]
    fn reads_own_memory_and_stops_at_an_unmapped_page() {
        let text = b"hello across pieces\0".repeat(600);
        let mut buffer = vec![0u8; text.len()];
        let read = read_process_memory(std::process::id(), text.as_ptr() as u64, &mut buffer)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read, text.len().min(MAX_PIECES * PIECE as usize));
        assert_eq!(&buffer[..read], &text[..read]);
        // Address 0 is never mapped.
        assert_eq!(
            read_process_memory(std::process::id(), 0, &mut buffer),
            Err(Errno::FAULT)
        );
    }

    #[test]
    fn a_pidfd_of_a_live_process_is_unreaped_without_exit_status() {
        let pidfd = pidfd_open(std::process::id()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pidfd_is_unreaped(pidfd.as_fd()), Ok(true));
        match pidfd_exit_status(pidfd.as_fd()) {
            Ok(status) => assert_eq!(status, None),
            Err(errno) => assert!(matches!(errno, Errno::NOTTY | Errno::INVAL), "{errno}"),
        }
    }

    #[test]
    fn a_pidfd_gives_the_ids_of_its_process() {
        let pidfd = pidfd_open(std::process::id()).unwrap_or_else(|e| panic!("{e}"));
        match pidfd_ids(pidfd.as_fd()) {
            Ok(ids) => {
                assert_eq!(
                    (ids.pid, ids.tgid),
                    (std::process::id(), std::process::id())
                );
                assert_eq!(
                    ids.parent,
                    rustix::process::getppid()
                        .map_or(0, |p| p.as_raw_nonzero().get().unsigned_abs())
                );
            }
            Err(errno) => assert!(matches!(errno, Errno::NOTTY | Errno::INVAL), "{errno}"),
        }
    }

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        let check = |release: &str, expected: bool| {
            assert_eq!(
                kernel_release_at_least(release.as_bytes(), (6, 15)),
                expected,
                "{release}"
            );
        };
        check("6.15.0", true);
        check("6.18.44-fc-v782", true);
        check("7.0", true);
        check("6.14.11-300.fc42.x86_64", false);
        check("5.19.0", false);
        check("6.9", false);
        check("6", false);
        check("", false);
    }

    #[test]
    fn a_reaped_child_reports_its_exit_status_where_the_kernel_says_so() {
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let pidfd = pidfd_open(child.id()).unwrap_or_else(|e| panic!("{e}"));
        child.wait().unwrap_or_else(|e| panic!("{e}"));
        let status = pidfd_exit_status(pidfd.as_fd());
        if pidfd_reports_exit_status() {
            assert_eq!(status, Ok(Some(7 << 8)));
        }
    }
}
