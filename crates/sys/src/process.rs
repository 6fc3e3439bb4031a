//! Process creation, exec, signals and descriptor passing for the launcher.
//!
//! Why it exists: these are the calls `rustix` leaves `unsafe` (fork, clone into namespaces,
//! execve, signal masks). Each is wrapped so the launcher stays free of `unsafe` code.
//!
//! What it guarantees: [`clone_into_namespaces`] and [`fork`] refuse to run in a process with
//! more than one thread (the child of a multi-threaded fork may find locks held forever);
//! [`ExecTarget::execute`], [`exit_immediately`] and the signal helpers do not allocate.

use std::ffi::{c_char, CString};
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::mount::OpenTreeFlags;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::Errno;

/// The namespaces a new process gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Namespaces {
    pub user: bool,
    pub mount: bool,
    pub pid: bool,
    pub ipc: bool,
    pub uts: bool,
    pub network: bool,
    pub cgroup: bool,
}

impl Namespaces {
    /// Every namespace the sandbox uses.
    pub const ALL: Namespaces = Namespaces {
        user: true,
        mount: true,
        pid: true,
        ipc: true,
        uts: true,
        network: true,
        cgroup: true,
    };

    fn clone_flags(self) -> libc::c_ulong {
        let mut flags = 0;
        for (wanted, flag) in [
            (self.user, libc::CLONE_NEWUSER),
            (self.mount, libc::CLONE_NEWNS),
            (self.pid, libc::CLONE_NEWPID),
            (self.ipc, libc::CLONE_NEWIPC),
            (self.uts, libc::CLONE_NEWUTS),
            (self.network, libc::CLONE_NEWNET),
            (self.cgroup, libc::CLONE_NEWCGROUP),
        ] {
            if wanted {
                flags |= flag;
            }
        }
        flags as libc::c_ulong
    }
}

/// Which side of a fork the caller is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forked {
    Child,
    Parent(rustix::process::Pid),
}

/// Fails with `EBUSY` unless the calling process has exactly one thread.
///
/// procfs counts a process's threads in the link count of `/proc/self/task` (2 + one per
/// thread), so one `statx` answers without generating the whole `/proc/self/status` text.
fn require_single_thread() -> Result<(), Errno> {
    let task = rustix::fs::stat("/proc/self/task").map_err(|_| Errno::IO)?;
    if task.st_nlink == 3 {
        Ok(())
    } else {
        Err(Errno::BUSY)
    }
}

fn fork_result(pid: libc::c_long) -> Result<Forked, Errno> {
    if pid < 0 {
        return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::AGAIN));
    }
    if pid == 0 {
        return Ok(Forked::Child);
    }
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or(Errno::INVAL)?;
    Ok(Forked::Parent(pid))
}

/// Starts a child in new `namespaces`, like `fork` (the child gets `SIGCHLD` semantics and a
/// copy of the address space). In a new pid namespace the child is its pid 1.
///
/// The child must only run the launcher's own code and end with [`exit_immediately`] or an
/// exec: it does not run `pthread_atfork` handlers.
pub fn clone_into_namespaces(namespaces: Namespaces) -> Result<Forked, Errno> {
    require_single_thread()?;
    let flags = namespaces.clone_flags() | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: a raw `clone` without CLONE_VM or a new stack behaves as `fork`: the child gets a
    // copy of the address space and continues from here on its own copy of the stack. The
    // process has a single thread (checked above), so no lock can be held by a thread that
    // does not exist in the child. The pointer arguments are null, which `clone` accepts when
    // the flags that use them (CLONE_PARENT_SETTID, CLONE_CHILD_SETTID, CLONE_SETTLS) are unset.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    fork_result(pid)
}

/// `fork(2)` for a single-threaded process.
pub fn fork() -> Result<Forked, Errno> {
    require_single_thread()?;
    // SAFETY: the process has one thread (checked above), so the child inherits no lock held by
    // another thread; glibc's fork runs its atfork handlers and keeps its own state consistent.
    let pid = unsafe { libc::fork() };
    fork_result(libc::c_long::from(pid))
}

/// Stack size of the child [`spawn_sharing_memory`] starts: the launcher's command steps
/// (capabilities, Landlock, seccomp, exec) need a few KiB; the rest is never touched, so never
/// backed by memory.
const SHARED_CHILD_STACK: usize = 256 * 1024;

/// Runs `child` in a new process that shares the caller's memory until it execs or exits, and
/// returns the new process's pid once it has: `clone(CLONE_VM | CLONE_VFORK)` on a stack of its
/// own, as `posix_spawn` does. Nothing of the address space is copied (a `fork` of the
/// launcher copies its page tables, then takes a copy-on-write fault for each page either side
/// writes), and the caller is suspended meanwhile. The child gets its own descriptor table,
/// signal dispositions, credentials, limits and seccomp/Landlock state, as after `fork`.
///
/// `child` must end with an exec or [`exit_immediately`] (or return the exit code); what it
/// allocates stays allocated in the caller's heap. The process must have a single thread: only
/// the calling thread is suspended, and the child may take the allocator's lock.
pub fn spawn_sharing_memory(child: &mut dyn FnMut() -> i32) -> Result<rustix::process::Pid, Errno> {
    require_single_thread()?;
    extern "C" fn trampoline(argument: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `argument` is the `&mut &mut dyn FnMut` passed to `clone` below; the caller's
        // frame that owns it is suspended (CLONE_VFORK) until this child execs or exits, so the
        // reference stays valid and nothing else uses it meanwhile.
        let child = unsafe { &mut *argument.cast::<&mut dyn FnMut() -> i32>() };
        child()
    }
    let mut stack: Vec<u8> = Vec::with_capacity(SHARED_CHILD_STACK);
    // The stack grows down from the end of the allocation, 16-byte aligned as the ABI requires.
    let top = stack.as_mut_ptr().wrapping_add(SHARED_CHILD_STACK);
    let top = top.wrapping_sub(top as usize % 16);
    let mut child = child;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    // SAFETY: `top` is the aligned end of a writable allocation of SHARED_CHILD_STACK bytes that
    // outlives the child's use of it: with CLONE_VFORK `clone` returns only after the child
    // exec'd or exited, and `stack` is dropped after that. The child shares memory (CLONE_VM)
    // but runs on that stack, never on the caller's, and the caller (its only thread, checked
    // above) is suspended meanwhile, so no lock or data is used by both at once. `arg` points to
    // `child`, which lives in this frame until `clone` returns.
    let pid = unsafe {
        libc::clone(
            trampoline,
            top.cast::<libc::c_void>(),
            flags,
            std::ptr::from_mut(&mut child).cast::<libc::c_void>(),
        )
    };
    drop(stack);
    match fork_result(libc::c_long::from(pid))? {
        Forked::Parent(pid) => Ok(pid),
        // The child never returns here: it runs `trampoline` on its own stack.
        Forked::Child => Err(Errno::INVAL),
    }
}

/// Marks every descriptor from `first` up close-on-exec (`close_range` with
/// `CLOSE_RANGE_CLOEXEC`, Linux 5.11), so no program the process execs later inherits one it
/// did not hand over on purpose (`dup2` onto 0, 1 or 2 gives a copy without the flag).
pub fn set_close_on_exec_from(first: u32) -> Result<(), Errno> {
    // SAFETY: `close_range` takes plain integers; with CLOSE_RANGE_CLOEXEC it closes nothing,
    // it only sets a flag on descriptors this process owns, so no owner loses its descriptor.
    let result = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            libc::c_uint::from(first),
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if result < 0 {
        return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL));
    }
    Ok(())
}

/// Sends `signal` to every process the caller may signal but itself (`kill(-1, signal)`): in
/// a pid namespace's init, every other process of the namespace.
pub fn signal_all_others(signal: i32) -> Result<(), Errno> {
    // SAFETY: `kill` takes plain integers and touches no memory of this process.
    let result = unsafe { libc::kill(-1, signal) };
    if result < 0 {
        return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL));
    }
    Ok(())
}

/// Ends the process at once with `code`, without running destructors or flushing stdio
/// buffers (which belong to the parent's copy in a forked child).
pub fn exit_immediately(code: i32) -> ! {
    // SAFETY: `_exit` takes no pointers and never returns; skipping destructors is what a
    // forked child needs.
    unsafe { libc::_exit(code) }
}

/// A set of signals.
#[derive(Clone, Copy)]
pub struct SignalSet(libc::sigset_t);

impl std::fmt::Debug for SignalSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignalSet")
    }
}

impl SignalSet {
    pub fn empty() -> SignalSet {
        // SAFETY: `sigset_t` is plain data; `sigemptyset` initialises it fully.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable `sigset_t`.
        unsafe { libc::sigemptyset(&mut set) };
        SignalSet(set)
    }

    pub fn of(signals: &[i32]) -> SignalSet {
        let mut set = SignalSet::empty();
        for &signal in signals {
            // SAFETY: `set.0` is an initialised `sigset_t`; an invalid number is rejected with
            // EINVAL and leaves it unchanged.
            unsafe { libc::sigaddset(&mut set.0, signal) };
        }
        set
    }

    pub fn contains(&self, signal: i32) -> bool {
        // SAFETY: `self.0` is an initialised `sigset_t`, only read.
        unsafe { libc::sigismember(&self.0, signal) == 1 }
    }
}

/// Blocks `signals` for the calling thread; returns the previous mask.
pub fn block_signals(signals: &SignalSet) -> Result<SignalSet, Errno> {
    change_mask(libc::SIG_BLOCK, signals)
}

/// Replaces the calling thread's signal mask; returns the previous one.
pub fn set_signal_mask(mask: &SignalSet) -> Result<SignalSet, Errno> {
    change_mask(libc::SIG_SETMASK, mask)
}

fn change_mask(how: libc::c_int, set: &SignalSet) -> Result<SignalSet, Errno> {
    let mut old = SignalSet::empty();
    // SAFETY: both pointers are valid `sigset_t`s for the duration of the call.
    let result = unsafe { libc::pthread_sigmask(how, &set.0, &mut old.0) };
    if result == 0 {
        Ok(old)
    } else {
        Err(Errno::from_raw_os_error(result))
    }
}

/// Waits until one of `signals` (which must be blocked) is pending, takes it, and returns its
/// number.
pub fn wait_for_signal(signals: &SignalSet) -> Result<i32, Errno> {
    loop {
        // SAFETY: `signals.0` is an initialised `sigset_t`; a null `siginfo_t` pointer is allowed.
        let signal = unsafe { libc::sigwaitinfo(&signals.0, std::ptr::null_mut()) };
        if signal >= 0 {
            return Ok(signal);
        }
        let errno = Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INTR);
        if errno != Errno::INTR {
            return Err(errno);
        }
    }
}

/// A `signalfd` for a set of blocked signals: readable when one of them is pending, so a
/// supervisor can wait for signals and descriptors together with [`poll_readable`].
#[derive(Debug)]
pub struct SignalFd(OwnedFd);

impl SignalFd {
    /// Opens a non-blocking, close-on-exec `signalfd` for `signals` (which must be blocked).
    pub fn open(signals: &SignalSet) -> Result<SignalFd, Errno> {
        // SAFETY: `signals.0` is an initialised `sigset_t`; -1 asks for a new descriptor.
        let fd = unsafe { libc::signalfd(-1, &signals.0, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd < 0 {
            return Err(
                Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL)
            );
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        Ok(SignalFd(unsafe {
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
        }))
    }

    /// Takes one pending signal, if any, and returns its number.
    pub fn take(&self) -> Result<Option<i32>, Errno> {
        // SAFETY: `signalfd_siginfo` is plain data; all-zero bytes are a valid value.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: `info` is a writable buffer of exactly `size` bytes for the call's duration.
        let read = unsafe {
            libc::read(
                std::os::fd::AsRawFd::as_raw_fd(&self.0),
                std::ptr::from_mut(&mut info).cast::<libc::c_void>(),
                size,
            )
        };
        if read < 0 {
            let errno = Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO);
            return match errno {
                Errno::AGAIN | Errno::INTR => Ok(None),
                errno => Err(errno),
            };
        }
        if usize::try_from(read).ok() != Some(size) {
            return Err(Errno::IO);
        }
        Ok(i32::try_from(info.ssi_signo).ok())
    }
}

impl AsFd for SignalFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Whether the other end of the connected socket `fd` is closed (its process exited, or closed
/// it), even while data it sent is still unread. Does not wait or allocate; a failing `poll`
/// counts as closed.
pub fn peer_closed(fd: BorrowedFd<'_>) -> bool {
    let mut entry = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
        // Hang-ups are reported whatever is asked for.
        events: 0,
        revents: 0,
    };
    // SAFETY: `entry` is one initialised `pollfd`, writable for the call.
    let ready = unsafe { libc::poll(&mut entry, 1, 0) };
    ready < 0 || entry.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// Waits until one of `fds` is readable (or hung up), or `timeout` passes (`None`: no limit).
/// Returns a bit per descriptor, bit `i` set when `fds[i]` is ready; 0 means the time passed.
/// At most 8 descriptors; does not allocate. `EINTR` is returned as an empty set.
pub fn poll_readable(
    fds: &[BorrowedFd<'_>],
    timeout: Option<std::time::Duration>,
) -> Result<u8, Errno> {
    const MAX: usize = 8;
    if fds.len() > MAX {
        return Err(Errno::INVAL);
    }
    let mut entries = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; MAX];
    for (entry, fd) in entries.iter_mut().zip(fds) {
        entry.fd = std::os::fd::AsRawFd::as_raw_fd(fd);
        entry.events = libc::POLLIN;
    }
    let milliseconds = match timeout {
        None => -1,
        // Round up, so a wait never ends before the deadline.
        Some(duration) => {
            libc::c_int::try_from(duration.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX)
        }
    };
    // SAFETY: `entries` holds `fds.len()` initialised `pollfd`s, writable for the call.
    let ready = unsafe {
        libc::poll(
            entries.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            milliseconds,
        )
    };
    if ready < 0 {
        let errno = Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO);
        return if errno == Errno::INTR {
            Ok(0)
        } else {
            Err(errno)
        };
    }
    let mut bits = 0u8;
    for (index, entry) in entries.iter().take(fds.len()).enumerate() {
        if entry.revents != 0 {
            bits |= 1 << index;
        }
    }
    Ok(bits)
}

/// Restores the default action of every signal the Rust runtime or the launcher changed
/// (`SIGPIPE` is ignored by Rust programs; an ignored signal stays ignored across exec).
pub fn reset_signal_dispositions() -> Result<(), Errno> {
    // SAFETY: SIG_DFL is a valid disposition for SIGPIPE; no handler pointer is involved.
    let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    if previous == libc::SIG_ERR {
        return Err(Errno::INVAL);
    }
    Ok(())
}

/// Restores the default action of every signal (SIGKILL and SIGSTOP cannot change), so a
/// process forked from one that installed handlers or ignores signals runs none of its
/// handlers and passes no ignored signal on across exec.
pub fn reset_all_signal_dispositions() -> Result<(), Errno> {
    let last = libc::SIGRTMAX();
    for signal in 1..=last {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL is a valid disposition for every signal; no handler pointer is
        // involved. Numbers the C library keeps for itself are refused with EINVAL.
        let previous = unsafe { libc::signal(signal, libc::SIG_DFL) };
        if previous == libc::SIG_ERR {
            let errno =
                Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL);
            if errno != Errno::INVAL {
                return Err(errno);
            }
        }
    }
    Ok(())
}

/// A program to exec, with everything `execve` needs built before fork so that exec does not
/// allocate.
pub struct ExecTarget {
    /// Paths to try in order: the program itself if it names a path, else each `PATH` entry.
    candidates: Vec<CString>,
    _arguments: Vec<CString>,
    _environment: Vec<CString>,
    argument_pointers: Vec<*const c_char>,
    environment_pointers: Vec<*const c_char>,
}

impl std::fmt::Debug for ExecTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecTarget")
            .field("candidates", &self.candidates)
            .finish_non_exhaustive()
    }
}

impl ExecTarget {
    /// `program` is searched in `search_path` (colon-separated, as `PATH`) unless it contains a
    /// `/`. `arguments` starts with argv\[0\]. Fails with `EINVAL` if a string holds a NUL byte.
    pub fn new(
        program: &str,
        arguments: &[String],
        environment: &[String],
        search_path: &str,
    ) -> Result<ExecTarget, Errno> {
        let c = |text: &[u8]| CString::new(text).map_err(|_| Errno::INVAL);
        let candidates = if program.contains('/') {
            vec![c(program.as_bytes())?]
        } else {
            search_path
                .split(':')
                .map(|directory| {
                    let directory = if directory.is_empty() { "." } else { directory };
                    let path: PathBuf = Path::new(directory).join(program);
                    c(path.as_os_str().as_bytes())
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let arguments = arguments
            .iter()
            .map(|a| c(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let environment = environment
            .iter()
            .map(|e| c(e.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let pointers = |strings: &[CString]| {
            let mut pointers: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
            pointers.push(std::ptr::null());
            pointers
        };
        Ok(ExecTarget {
            argument_pointers: pointers(&arguments),
            environment_pointers: pointers(&environment),
            candidates,
            _arguments: arguments,
            _environment: environment,
        })
    }

    /// The paths exec will try, in order.
    pub fn candidates(&self) -> impl Iterator<Item = &std::ffi::CStr> {
        self.candidates.iter().map(CString::as_c_str)
    }

    /// Execs the first candidate that exists, as `execvp` does. Returns only on failure: with
    /// `EACCES` if a candidate existed but could not be executed, `ENOENT` if none existed (or
    /// none could be seen), or the first other error.
    pub fn execute(&self) -> Errno {
        let mut denied = None;
        for candidate in &self.candidates {
            // SAFETY: `candidate` is NUL-terminated; both pointer arrays end with a null pointer
            // and point into `self._arguments`/`self._environment`, which live as long as self.
            unsafe {
                libc::execve(
                    candidate.as_ptr(),
                    self.argument_pointers.as_ptr(),
                    self.environment_pointers.as_ptr(),
                )
            };
            let errno =
                Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::NOENT);
            match errno {
                Errno::NOENT | Errno::NOTDIR => continue,
                // A candidate in a directory the sandbox cannot search is as absent as one
                // that does not exist; one that exists but cannot be run is "not executable".
                Errno::ACCESS | Errno::PERM => {
                    if rustix::fs::stat(candidate.as_c_str()).is_ok() {
                        denied = Some(errno);
                    }
                }
                other => return other,
            }
        }
        denied.unwrap_or(Errno::NOENT)
    }
}

/// A detached copy of the mount tree at `path` (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`),
/// ready to be changed with `mount_setattr` and attached elsewhere, even in another mount
/// namespace. Needs `CAP_SYS_ADMIN` in the caller's mount namespace.
pub fn clone_mount_tree(path: &Path) -> Result<OwnedFd, Errno> {
    rustix::mount::open_tree(
        rustix::fs::CWD,
        path,
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )
}

/// A detached overlay mount (`fsopen("overlay")`, `fsconfig`, `fsmount`) of `lower` (read-only)
/// under `upper`, with `work` as overlayfs's work directory (on the same filesystem as
/// `upper`), ready to be attached elsewhere, even in another mount namespace. Made by the
/// caller's credentials: as host root, overlayfs keeps its metadata in `trusted.*` xattrs.
/// Needs `CAP_SYS_ADMIN`.
pub fn mount_overlay(lower: &Path, upper: &Path, work: &Path) -> Result<OwnedFd, Errno> {
    let context = rustix::mount::fsopen("overlay", rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC)?;
    rustix::mount::fsconfig_set_string(&context, "lowerdir", lower)?;
    rustix::mount::fsconfig_set_string(&context, "upperdir", upper)?;
    rustix::mount::fsconfig_set_string(&context, "workdir", work)?;
    rustix::mount::fsconfig_create(&context)?;
    rustix::mount::fsmount(
        &context,
        rustix::mount::FsMountFlags::FSMOUNT_CLOEXEC,
        rustix::mount::MountAttrFlags::MOUNT_ATTR_NOSUID
            | rustix::mount::MountAttrFlags::MOUNT_ATTR_NODEV,
    )
}

/// The most descriptors [`send_descriptors`] sends in one message.
pub const MAX_DESCRIPTORS: usize = 16;

/// Sends one byte and `descriptors` (at most [`MAX_DESCRIPTORS`]) over a unix socket.
pub fn send_descriptors(
    socket: BorrowedFd<'_>,
    byte: u8,
    descriptors: &[BorrowedFd<'_>],
) -> Result<(), Errno> {
    if descriptors.len() > MAX_DESCRIPTORS {
        return Err(Errno::TOOBIG);
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_DESCRIPTORS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !descriptors.is_empty() && !control.push(SendAncillaryMessage::ScmRights(descriptors)) {
        return Err(Errno::TOOBIG);
    }
    let sent = rustix::net::sendmsg(
        socket,
        &[IoSlice::new(&[byte])],
        &mut control,
        SendFlags::empty(),
    )?;
    if sent == 1 {
        Ok(())
    } else {
        Err(Errno::IO)
    }
}

/// Receives what [`send_descriptors`] sent: the byte (`None` at end of stream) and the
/// descriptors, appended to `descriptors`.
pub fn receive_descriptors(
    socket: BorrowedFd<'_>,
    descriptors: &mut Vec<OwnedFd>,
) -> Result<Option<u8>, Errno> {
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_DESCRIPTORS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        match rustix::net::recvmsg(
            socket,
            &mut [IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(Errno::INTR) => continue,
            other => break other?,
        }
    };
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            descriptors.extend(fds);
        }
    }
    if received.bytes == 0 {
        return Ok(None);
    }
    Ok(Some(byte[0]))
}

/// Sends `bytes` with `descriptors` (at most [`MAX_DESCRIPTORS`]) in one `sendmsg` on a
/// stream socket; returns how many bytes went (the descriptors travel with the first of them,
/// so a caller sending the rest sends it without descriptors). Never raises `SIGPIPE`
/// (`MSG_NOSIGNAL`); with `nonblocking`, a full socket gives `EAGAIN` (`MSG_DONTWAIT`).
/// `EINTR` is retried.
pub fn send_message(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    descriptors: &[BorrowedFd<'_>],
    nonblocking: bool,
) -> Result<usize, Errno> {
    if descriptors.len() > MAX_DESCRIPTORS {
        return Err(Errno::TOOBIG);
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_DESCRIPTORS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !descriptors.is_empty() && !control.push(SendAncillaryMessage::ScmRights(descriptors)) {
        return Err(Errno::TOOBIG);
    }
    let mut flags = SendFlags::NOSIGNAL;
    if nonblocking {
        flags |= SendFlags::DONTWAIT;
    }
    loop {
        match rustix::net::sendmsg(socket, &[IoSlice::new(bytes)], &mut control, flags) {
            Err(Errno::INTR) => {}
            other => return other,
        }
    }
}

/// Receives up to `buffer.len()` bytes from a stream socket, appending the descriptors that
/// came with them (close-on-exec) to `descriptors`; returns how many bytes came, 0 at end of
/// stream. With `nonblocking`, nothing to read gives `EAGAIN` (`MSG_DONTWAIT`). `EINTR` is
/// retried. Descriptors the kernel could not deliver (`MSG_CTRUNC`) give `EMFILE`.
pub fn receive_message(
    socket: BorrowedFd<'_>,
    buffer: &mut [u8],
    descriptors: &mut Vec<OwnedFd>,
    nonblocking: bool,
) -> Result<usize, Errno> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_DESCRIPTORS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if nonblocking {
        flags |= RecvFlags::DONTWAIT;
    }
    let received = loop {
        match rustix::net::recvmsg(socket, &mut [IoSliceMut::new(buffer)], &mut control, flags) {
            Err(Errno::INTR) => continue,
            other => break other?,
        }
    };
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            descriptors.extend(fds);
        }
    }
    if received.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(Errno::MFILE);
    }
    Ok(received.bytes)
}

/// Writes all of `bytes` to `fd`, retrying on `EINTR`. Does not allocate.
pub fn write_all(fd: impl AsFd, bytes: &[u8]) -> Result<(), Errno> {
    let mut rest = bytes;
    while !rest.is_empty() {
        match rustix::io::write(fd.as_fd(), rest) {
            Ok(0) => return Err(Errno::IO),
            Ok(written) => rest = &rest[written..],
            Err(Errno::INTR) => {}
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}

/// Reads until `buffer` is full or end of stream, retrying on `EINTR`; returns the bytes read.
pub fn read_full(fd: impl AsFd, buffer: &mut [u8]) -> Result<usize, Errno> {
    let mut filled = 0;
    while filled < buffer.len() {
        match rustix::io::read(fd.as_fd(), &mut buffer[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(Errno::INTR) => {}
            Err(errno) => return Err(errno),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_target_searches_path_unless_program_names_a_path() {
        let target = ExecTarget::new("sh", &["sh".into()], &[], "/usr/bin:/bin")
            .unwrap_or_else(|e| panic!("{e}"));
        let candidates: Vec<_> = target
            .candidates()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        assert_eq!(candidates, ["/usr/bin/sh", "/bin/sh"]);
        let target = ExecTarget::new("./run", &["run".into()], &[], "/bin")
            .unwrap_or_else(|e| panic!("{e}"));
        let candidates: Vec<_> = target
            .candidates()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        assert_eq!(candidates, ["./run"]);
    }

    #[test]
    fn exec_target_rejects_nul_bytes() {
        assert_eq!(
            ExecTarget::new("sh", &["a\0b".into()], &[], "/bin").map(drop),
            Err(Errno::INVAL)
        );
    }

    #[test]
    fn a_closed_peer_is_seen_even_with_its_data_unread() {
        use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
        let (near, far) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap_or_else(|e| panic!("socketpair: {e}"));
        assert!(!peer_closed(near.as_fd()));
        rustix::io::write(&far, b"go").unwrap_or_else(|e| panic!("write: {e}"));
        assert!(!peer_closed(near.as_fd()), "data alone is not a hang-up");
        drop(far);
        assert!(peer_closed(near.as_fd()), "closed with a message unread");
    }

    #[test]
    fn signal_set_holds_what_was_added() {
        let set = SignalSet::of(&[libc::SIGINT, libc::SIGCHLD]);
        assert!(set.contains(libc::SIGINT));
        assert!(set.contains(libc::SIGCHLD));
        assert!(!set.contains(libc::SIGTERM));
    }
}
