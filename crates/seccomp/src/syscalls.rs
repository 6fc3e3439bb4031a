//! Syscall numbers for the architectures hardbox filters, by name.
//!
//! The table holds every syscall the rules name, so rules stay readable (`"keyctl"`, not `250`)
//! and one rule list serves both architectures. A syscall missing on an architecture (`mknod`,
//! `iopl` on aarch64) has `None` there and its rules are left out of that architecture's program.
//! Numbers come from the kernel's `arch/x86/entry/syscalls/syscall_64.tbl` and
//! `include/uapi/asm-generic/unistd.h` (aarch64 uses the generic table).

/// One syscall's number on each supported architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Syscall {
    pub(crate) name: &'static str,
    pub(crate) x86_64: Option<u32>,
    pub(crate) aarch64: Option<u32>,
}

const fn both(name: &'static str, x86_64: u32, aarch64: u32) -> Syscall {
    Syscall {
        name,
        x86_64: Some(x86_64),
        aarch64: Some(aarch64),
    }
}

const fn x86_64_only(name: &'static str, x86_64: u32) -> Syscall {
    Syscall {
        name,
        x86_64: Some(x86_64),
        aarch64: None,
    }
}

/// Every syscall a rule may name.
pub(crate) const SYSCALLS: &[Syscall] = &[
    both("acct", 163, 89),
    both("add_key", 248, 217),
    both("adjtimex", 159, 171),
    both("bpf", 321, 280),
    both("chroot", 161, 51),
    both("clock_adjtime", 305, 266),
    both("clock_settime", 227, 112),
    both("clone", 56, 220),
    both("clone3", 435, 435),
    x86_64_only("create_module", 174),
    both("delete_module", 176, 106),
    both("finit_module", 313, 273),
    both("fsconfig", 431, 431),
    both("fsmount", 432, 432),
    both("fsopen", 430, 430),
    both("fspick", 433, 433),
    x86_64_only("get_kernel_syms", 177),
    both("init_module", 175, 105),
    both("io_uring_enter", 426, 426),
    both("io_uring_register", 427, 427),
    both("io_uring_setup", 425, 425),
    both("ioctl", 16, 29),
    x86_64_only("ioperm", 173),
    x86_64_only("iopl", 172),
    both("kcmp", 312, 272),
    both("kexec_file_load", 320, 294),
    both("kexec_load", 246, 104),
    both("keyctl", 250, 219),
    both("lookup_dcookie", 212, 18),
    x86_64_only("mknod", 133),
    both("mknodat", 259, 33),
    both("mount", 165, 40),
    both("mount_setattr", 442, 442),
    both("move_mount", 429, 429),
    both("name_to_handle_at", 303, 264),
    both("nfsservctl", 180, 42),
    both("open_by_handle_at", 304, 265),
    both("open_tree", 428, 428),
    both("perf_event_open", 298, 241),
    both("personality", 135, 92),
    both("pidfd_getfd", 438, 438),
    both("pivot_root", 155, 41),
    both("process_madvise", 440, 440),
    both("process_vm_readv", 310, 270),
    both("process_vm_writev", 311, 271),
    both("ptrace", 101, 117),
    x86_64_only("query_module", 178),
    both("quotactl", 179, 60),
    both("quotactl_fd", 443, 443),
    both("reboot", 169, 142),
    both("request_key", 249, 218),
    both("setns", 308, 268),
    both("settimeofday", 164, 170),
    both("socket", 41, 198),
    both("swapoff", 168, 225),
    both("swapon", 167, 224),
    x86_64_only("_sysctl", 156),
    both("syslog", 103, 116),
    both("umount2", 166, 39),
    both("unshare", 272, 97),
    x86_64_only("uselib", 134),
    both("userfaultfd", 323, 282),
];

/// The entry for `name`, if the table has one.
pub(crate) fn lookup(name: &str) -> Option<&'static Syscall> {
    SYSCALLS.iter().find(|syscall| syscall.name == name)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_and_numbers_are_unique_per_architecture() {
        let names: BTreeSet<_> = SYSCALLS.iter().map(|syscall| syscall.name).collect();
        assert_eq!(names.len(), SYSCALLS.len());
        let x86_64: Vec<_> = SYSCALLS
            .iter()
            .filter_map(|syscall| syscall.x86_64)
            .collect();
        let unique: BTreeSet<_> = x86_64.iter().collect();
        assert_eq!(unique.len(), x86_64.len());
        let aarch64: Vec<_> = SYSCALLS
            .iter()
            .filter_map(|syscall| syscall.aarch64)
            .collect();
        let unique: BTreeSet<_> = aarch64.iter().collect();
        assert_eq!(unique.len(), aarch64.len());
    }

    #[test]
    fn spot_check_numbers_against_the_kernel_tables() {
        let check = |name: &str, x86_64: Option<u32>, aarch64: Option<u32>| {
            let syscall = lookup(name).map(|syscall| (syscall.x86_64, syscall.aarch64));
            assert_eq!(syscall, Some((x86_64, aarch64)), "{name}");
        };
        check("ioctl", Some(16), Some(29));
        check("clone", Some(56), Some(220));
        check("keyctl", Some(250), Some(219));
        check("mknod", Some(133), None);
        check("io_uring_setup", Some(425), Some(425));
    }
}
