//! The agent filter's rules, as data.
//!
//! Each rule names a syscall, the condition on its arguments under which it is denied, the errno
//! the caller sees and why the rule exists. Everything not matched by a rule is allowed: this is
//! a denylist in the spirit of Docker's default profile, aimed at the kernel interfaces an agent
//! never needs and attackers love (keyrings, BPF, io_uring, namespaces, mounts, modules, tracing
//! other processes, terminal injection).
//!
//! Errno choices: `EPERM` is what the kernel itself answers an unprivileged caller for almost all
//! of these, so programs already handle it. `ENOSYS` is used where the caller should fall back
//! to another syscall (`clone3`, whose flags live in memory seccomp cannot read, so libc retries
//! with `clone`, whose flags it can).
//!
//! Argument conditions compare only the low 32 bits of an argument. That is deliberate: every
//! argument inspected here is an `int`, `unsigned int` or narrower in the kernel (or, for
//! `clone`, is truncated with `lower_32_bits`), so the kernel ignores the high half too and a
//! caller cannot hide a value there.

use crate::Errno;

/// What a rule does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Fail the syscall with this errno; the process keeps running.
    Errno(Errno),
}

/// When a rule matches, looking at one syscall argument (its low 32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Every call.
    Always,
    /// `argument == value`.
    Equals { argument: u8, value: u32 },
    /// `argument & mask == value`.
    MaskedEquals { argument: u8, mask: u32, value: u32 },
    /// `argument & mask != 0`.
    AnyBitSet { argument: u8, mask: u32 },
    /// `argument` is none of `values`.
    NoneOf {
        argument: u8,
        values: &'static [u32],
    },
}

/// One denial in the filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Syscall name, as in the kernel's syscall tables.
    pub syscall: &'static str,
    /// What the caller sees.
    pub action: Action,
    /// Which calls the rule applies to.
    pub when: When,
    /// Why the rule is there.
    pub why: &'static str,
}

const EPERM: Action = Action::Errno(Errno::EPERM);
const ENOSYS: Action = Action::Errno(Errno::ENOSYS);

const fn always(syscall: &'static str, why: &'static str) -> Rule {
    Rule {
        syscall,
        action: EPERM,
        when: When::Always,
        why,
    }
}

// Constants from the kernel's uapi headers (identical on x86_64 and aarch64).
const CLONE_NEWNS: u32 = 0x0002_0000;
const CLONE_NEWCGROUP: u32 = 0x0200_0000;
const CLONE_NEWUTS: u32 = 0x0400_0000;
const CLONE_NEWIPC: u32 = 0x0800_0000;
const CLONE_NEWUSER: u32 = 0x1000_0000;
const CLONE_NEWPID: u32 = 0x2000_0000;
const CLONE_NEWNET: u32 = 0x4000_0000;
const NAMESPACE_FLAGS: u32 = CLONE_NEWNS
    | CLONE_NEWCGROUP
    | CLONE_NEWUTS
    | CLONE_NEWIPC
    | CLONE_NEWUSER
    | CLONE_NEWPID
    | CLONE_NEWNET;
const AF_PACKET: u32 = 17;
const SOCK_TYPE_MASK: u32 = 0xf;
const SOCK_RAW: u32 = 3;
const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541c;
const S_IFMT: u32 = 0o170_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFBLK: u32 = 0o060_000;
const PER_LINUX: u32 = 0x0000;
const PER_LINUX32: u32 = 0x0008;
const UNAME26: u32 = 0x0002_0000;
const PERSONALITY_QUERY: u32 = 0xffff_ffff;

/// The agent default filter's rules, in the order they are checked.
pub const AGENT_RULES: &[Rule] = &[
    // Kernel keyrings.
    always("add_key", "kernel keyrings are shared kernel state and not namespaced well; a long history of keyring bugs"),
    always("request_key", "kernel keyrings are shared kernel state and not namespaced well; a long history of keyring bugs"),
    always("keyctl", "kernel keyrings are shared kernel state and not namespaced well; a long history of keyring bugs"),
    // Large kernel attack surface an agent does not need.
    always("bpf", "loading BPF programs is a large kernel attack surface and can read kernel memory"),
    always("perf_event_open", "performance counters leak kernel addresses and timing; frequent source of kernel bugs"),
    always("userfaultfd", "lets a process stall kernel page faults, the classic tool for winning kernel races"),
    always("io_uring_setup", "io_uring bypasses seccomp for the operations it submits and has had many kernel bugs"),
    always("io_uring_enter", "io_uring bypasses seccomp for the operations it submits and has had many kernel bugs"),
    always("io_uring_register", "io_uring bypasses seccomp for the operations it submits and has had many kernel bugs"),
    // Replacing or extending the kernel.
    always("kexec_load", "loads a new kernel"),
    always("kexec_file_load", "loads a new kernel"),
    always("init_module", "loads kernel modules"),
    always("finit_module", "loads kernel modules"),
    always("delete_module", "unloads kernel modules"),
    always("create_module", "obsolete module interface (x86_64); never needed"),
    always("get_kernel_syms", "obsolete module interface (x86_64); never needed"),
    always("query_module", "obsolete module interface (x86_64); never needed"),
    // Mounts: the sandbox's filesystem view is fixed before exec.
    always("mount", "the sandbox's mount table is final before exec; new mounts could uncover hidden paths"),
    always("umount2", "unmounting could uncover paths masked by the sandbox"),
    always("pivot_root", "changes the root the sandbox set up"),
    always("move_mount", "new mount API; same reason as mount"),
    always("open_tree", "new mount API; clones mounts that could uncover hidden paths"),
    always("fsopen", "new mount API; same reason as mount"),
    always("fsconfig", "new mount API; same reason as mount"),
    always("fsmount", "new mount API; same reason as mount"),
    always("fspick", "new mount API; reconfigures existing mounts"),
    always("mount_setattr", "could make read-only mounts writable"),
    always("chroot", "chroot is a building block for escapes when combined with other file descriptors"),
    // Host-wide state.
    always("swapon", "host-wide swap configuration"),
    always("swapoff", "host-wide swap configuration"),
    always("reboot", "reboots the host or loads a kexec kernel"),
    always("settimeofday", "the clock is host-wide and not namespaced"),
    always("clock_settime", "the clock is host-wide and not namespaced"),
    always("clock_adjtime", "the clock is host-wide and not namespaced"),
    always("adjtimex", "the clock is host-wide and not namespaced"),
    always("acct", "process accounting is host-wide"),
    always("quotactl", "disk quotas are host-wide"),
    always("quotactl_fd", "disk quotas are host-wide"),
    always("lookup_dcookie", "profiling interface that reveals kernel paths"),
    always("syslog", "reads the kernel log, which leaks kernel addresses and other processes' messages"),
    always("nfsservctl", "removed from the kernel; nothing legitimate calls it"),
    always("uselib", "obsolete a.out loader (x86_64); never needed"),
    always("_sysctl", "obsolete sysctl interface (x86_64); never needed"),
    always("iopl", "raw I/O port access (x86_64)"),
    always("ioperm", "raw I/O port access (x86_64)"),
    // File handles bypass path-based checks (Landlock, masked paths).
    always("open_by_handle_at", "opens files by handle, bypassing path checks (the 'shocker' container escape)"),
    always("name_to_handle_at", "companion of open_by_handle_at; leaks file handles"),
    // Namespaces: the sandbox's namespaces are final before exec.
    always("setns", "joining other namespaces would leave the sandbox"),
    always("unshare", "new namespaces (user namespaces above all) expose kernel code that is otherwise root-only"),
    Rule {
        syscall: "clone",
        action: EPERM,
        when: When::AnyBitSet { argument: 0, mask: NAMESPACE_FLAGS },
        why: "clone with CLONE_NEW* flags creates namespaces, like unshare; plain fork and threads stay allowed",
    },
    Rule {
        syscall: "clone3",
        action: ENOSYS,
        when: When::Always,
        why: "clone3's flags live in memory seccomp cannot inspect; ENOSYS makes libc fall back to clone, whose flags it can",
    },
    // Reading or changing other processes.
    always("ptrace", "tracing other processes reads and changes their memory; also a classic seccomp bypass on old kernels"),
    always("process_vm_readv", "reads another process's memory"),
    always("process_vm_writev", "writes another process's memory"),
    always("kcmp", "compares kernel objects across processes; leaks kernel layout"),
    always("pidfd_getfd", "steals file descriptors from other processes"),
    always("process_madvise", "changes another process's memory advice"),
    Rule {
        syscall: "personality",
        action: EPERM,
        when: When::NoneOf {
            argument: 0,
            values: &[PER_LINUX, PER_LINUX32, UNAME26, UNAME26 | PER_LINUX32, PERSONALITY_QUERY],
        },
        why: "odd personalities (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE, MMAP_PAGE_ZERO) weaken memory protections; the normal values and the query stay allowed",
    },
    // Network: no raw packets.
    Rule {
        syscall: "socket",
        action: EPERM,
        when: When::Equals { argument: 0, value: AF_PACKET },
        why: "packet sockets see and forge raw link-layer traffic",
    },
    Rule {
        syscall: "socket",
        action: EPERM,
        when: When::MaskedEquals { argument: 1, mask: SOCK_TYPE_MASK, value: SOCK_RAW },
        why: "raw sockets forge packets and bypass the egress proxy's view of connections",
    },
    // Terminals.
    Rule {
        syscall: "ioctl",
        action: EPERM,
        when: When::Equals { argument: 1, value: TIOCSTI },
        why: "TIOCSTI pushes keystrokes into the terminal, running commands in the user's shell after the sandbox exits",
    },
    Rule {
        syscall: "ioctl",
        action: EPERM,
        when: When::Equals { argument: 1, value: TIOCLINUX },
        why: "TIOCLINUX can paste into and read the Linux console",
    },
    // Device nodes: fifos and regular files stay allowed.
    Rule {
        syscall: "mknod",
        action: EPERM,
        when: When::MaskedEquals { argument: 1, mask: S_IFMT, value: S_IFCHR },
        why: "a character device node could reach host devices (memory, disks, terminals)",
    },
    Rule {
        syscall: "mknod",
        action: EPERM,
        when: When::MaskedEquals { argument: 1, mask: S_IFMT, value: S_IFBLK },
        why: "a block device node could reach host disks",
    },
    Rule {
        syscall: "mknodat",
        action: EPERM,
        when: When::MaskedEquals { argument: 2, mask: S_IFMT, value: S_IFCHR },
        why: "a character device node could reach host devices (memory, disks, terminals)",
    },
    Rule {
        syscall: "mknodat",
        action: EPERM,
        when: When::MaskedEquals { argument: 2, mask: S_IFMT, value: S_IFBLK },
        why: "a block device node could reach host disks",
    },
];
