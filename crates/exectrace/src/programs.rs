//! The root tracer's eBPF programs, all keeping only the processes of one pid namespace: one on
//! `sched_process_exec`, one on `sched_process_exit`, and for failed exec attempts one on
//! `sys_enter` (which keeps an attempt's pointers) and one on `sys_exit` (which records it if
//! the syscall failed).
//!
//! Records, in the ring buffer (native byte order):
//!
//! ```text
//! exec: 0 u32 kind = 1 | 4 u32 tgid (in the namespace) | 8 u32 tid | 12 u32 parent tgid (0 outside)
//!       16 u64 time (CLOCK_MONOTONIC ns) | 24 u32 host tgid | 28 u32 -
//!       32 u32 path bytes (with NUL) | 36 u32 argv bytes read | 40 u32 argv bytes in all
//!       44 u32 cwd start | 48 u32 cwd end (1 root reached, 2 outside the root, 3 too deep)
//!       56 u64 cwd bytes
//!       64: path, then argv (NUL-separated), then cwd components leaf first, each with a NUL
//! exit: 0 u32 kind = 2 | 4 u32 tgid | 8 u32 tid | 12 - | 16 u64 time | 24 u32 host tgid
//!       28 u32 wait status | 32 u64 the process's start time (CLOCK_MONOTONIC ns)
//! failed exec: kind = 3, as exec, with 28 u32 errno, 52 u32 1 for execveat, and the path in a
//!       region of PATH_MAX bytes (ended by a NUL), argv after it
//! ```

use crate::asm::{helper, Asm, Cond, Size, FP, R0, R1, R2, R3, R4, R6, R7, R8, R9};
use crate::btf::{Btf, BtfError};
use sys::bpf::Instruction;

pub const KIND_EXEC: u32 = 1;
pub const KIND_EXIT: u32 = 2;
/// An exec that failed: laid out as an exec record, with the path in a region of PATH_MAX
/// bytes (ended by a NUL), the errno at 28 and 1 at 52 for `execveat`.
pub const KIND_FAILED_EXEC: u32 = 3;
/// Where the variable part of an exec record starts.
pub const HEADER: usize = 64;
/// The most bytes of the executable's path recorded, with its NUL.
pub const PATH_MAX: i32 = 512;
/// The most bytes of argv recorded.
pub const ARGS_MAX: i32 = 16384;
/// The most bytes of working directory components recorded.
pub const CWD_MAX: i32 = 4096;
/// Where the exec record keeps the working directory's bytes while they are collected.
const CWD_BYTES: i16 = 56;
/// Where the exec record keeps where the working directory starts, and its largest value.
const CWD_START: i16 = 44;
const CWD_START_MAX: i32 = HEADER as i32 + PATH_MAX + ARGS_MAX;
/// The most bytes of one component.
const NAME_MAX: i32 = 256;
/// The most directories walked up from the working directory.
const CWD_DEPTH: i32 = 48;
/// The per-CPU scratch record's size: room for the largest record.
pub const SCRATCH: u32 = 24576;
pub const EXIT_RECORD: usize = 40;

pub const CWD_ROOT: u32 = 1;
pub const CWD_OUTSIDE: u32 = 2;
pub const CWD_TOO_DEEP: u32 = 3;

/// The kernel's field offsets the programs read.
#[derive(Clone, Copy, Debug)]
pub struct Offsets {
    task_exit_code: i32,
    task_start_time: i32,
    task_mm: i32,
    task_fs: i32,
    task_real_parent: i32,
    task_thread_pid: i32,
    pid_level: i32,
    pid_numbers: i32,
    upid_size: i32,
    upid_nr: i32,
    upid_ns: i32,
    mm_arg_start: i32,
    mm_arg_end: i32,
    fs_root: i32,
    fs_pwd: i32,
    path_mnt: i32,
    path_dentry: i32,
    dentry_parent: i32,
    dentry_name: i32,
    mount_mnt: i32,
    mount_parent: i32,
    mount_mountpoint: i32,
    vfsmount_root: i32,
    binprm_filename: i32,
    /// Where a syscall's first three arguments are in `struct pt_regs`.
    syscall_arguments: [i32; 3],
    /// Whether `sched_process_exit` passes `group_dead` (Linux 6.16+); without it, a process's
    /// exit is its leader thread's.
    exit_has_group_dead: bool,
}

impl Offsets {
    pub fn find(btf: &Btf) -> Result<Offsets, BtfError> {
        let at = |name: &str, member: &str| btf.offset_of(name, member).map(|o| o as i32);
        Ok(Offsets {
            task_exit_code: at("task_struct", "exit_code")?,
            task_start_time: at("task_struct", "start_time")?,
            task_mm: at("task_struct", "mm")?,
            task_fs: at("task_struct", "fs")?,
            task_real_parent: at("task_struct", "real_parent")?,
            task_thread_pid: at("task_struct", "thread_pid")?,
            pid_level: at("pid", "level")?,
            pid_numbers: at("pid", "numbers")?,
            upid_size: btf.size_of("upid")? as i32,
            upid_nr: at("upid", "nr")?,
            upid_ns: at("upid", "ns")?,
            mm_arg_start: at("mm_struct", "arg_start")?,
            mm_arg_end: at("mm_struct", "arg_end")?,
            fs_root: at("fs_struct", "root")?,
            fs_pwd: at("fs_struct", "pwd")?,
            path_mnt: at("path", "mnt")?,
            path_dentry: at("path", "dentry")?,
            dentry_parent: at("dentry", "d_parent")?,
            dentry_name: at("dentry", "d_name")? + at("qstr", "name")?,
            mount_mnt: at("mount", "mnt")?,
            mount_parent: at("mount", "mnt_parent")?,
            mount_mountpoint: at("mount", "mnt_mountpoint")?,
            vfsmount_root: at("vfsmount", "mnt_root")?,
            binprm_filename: at("linux_binprm", "filename")?,
            syscall_arguments: syscall_arguments(btf)?,
            exit_has_group_dead: btf.tracepoint_arguments("sched_process_exit")? >= 2,
        })
    }
}

/// The syscall numbers of `execve` and `execveat` on this architecture.
#[cfg(target_arch = "x86_64")]
const EXEC_SYSCALLS: (i32, i32) = (59, 322);
#[cfg(target_arch = "aarch64")]
const EXEC_SYSCALLS: (i32, i32) = (221, 281);

/// Where the registers holding a syscall's first three arguments are in `struct pt_regs`.
#[cfg(target_arch = "x86_64")]
fn syscall_arguments(btf: &Btf) -> Result<[i32; 3], BtfError> {
    let at = |member: &str| btf.offset_of("pt_regs", member).map(|o| o as i32);
    Ok([at("di")?, at("si")?, at("dx")?])
}
#[cfg(target_arch = "aarch64")]
fn syscall_arguments(btf: &Btf) -> Result<[i32; 3], BtfError> {
    let regs = btf.offset_of("pt_regs", "regs")? as i32;
    Ok([regs, regs + 8, regs + 16])
}

/// The maps the programs use.
#[derive(Clone, Copy, Debug)]
pub struct Maps {
    pub config: i32,
    /// Exec attempts under way, by task: what `sys_enter_execve(at)` saw.
    pub attempts: i32,
    pub ring: i32,
    pub scratch: i32,
    pub lost: i32,
}

/// The config map's value: the pid namespace kept, as its `nsfs` device and inode.
pub const CONFIG_SIZE: u32 = 16;

// Stack slots (offsets from the frame pointer).
const SLOT_READ: i16 = -8;
const SLOT_NS: i16 = -16;
const SLOT_KEY: i16 = -20;
const SLOT_A: i16 = -32;
const SLOT_B: i16 = -40;
const SLOT_C: i16 = -48;
const SLOT_ROOT_DENTRY: i16 = -56;
const SLOT_ROOT_MNT: i16 = -64;
const SLOT_DEPTH: i16 = -72;
const SLOT_NEXT: i16 = -80;
const SLOT_D: i16 = -88;
const SLOT_TASK_KEY: i16 = -104;
const SLOT_FILENAME: i16 = -112;
const SLOT_ARGV: i16 = -120;
const SLOT_RET: i16 = -128;
const SLOT_SYSCALL: i16 = -136;
const SLOT_ARG_INDEX: i16 = -144;
const SLOT_START: i16 = -152;
const SLOT_VALUE: i16 = -192;
/// The attempts map's value: filename and argv pointers, 1 for `execveat`, and the task's
/// start time.
pub const ATTEMPT_SIZE: u32 = 32;
/// The most argv entries of a failed exec read, and the most bytes of one.
const FAILED_ARGS: i32 = 64;
const FAILED_ARG_MAX: i32 = 4096;
const SLOT_RECORD: i16 = -128;

/// `dst = *(size *)(r3 + offset)` read from kernel memory through `probe_read_kernel`
/// (0 when unreadable); clobbers r0-r5.
fn read_kernel(
    asm: &mut Asm,
    dst: crate::asm::Reg,
    base: crate::asm::Reg,
    offset: i32,
    size: Size,
) {
    asm.store_imm(Size::DW, FP, SLOT_READ, 0)
        .mov(R3, base)
        .add_imm(R3, offset)
        .mov(R1, FP)
        .add_imm(R1, i32::from(SLOT_READ))
        .mov_imm(R2, if size == Size::DW { 8 } else { 4 })
        .call(helper::PROBE_READ_KERNEL)
        .load(size, dst, FP, SLOT_READ);
}

/// Keeps only the current process of the namespace configured (its `nsfs` device and inode
/// in the config map; nothing before they are set): its pid and tgid there go to SLOT_NS (pid
/// at +0, tgid at +4); others jump to `out`.
fn filter(asm: &mut Asm, maps: Maps) {
    asm.store_imm(Size::W, FP, SLOT_KEY, 0)
        .load_map(R1, maps.config)
        .mov(R2, FP)
        .add_imm(R2, i32::from(SLOT_KEY))
        .call(helper::MAP_LOOKUP_ELEM)
        .jump_if_imm(R0, Cond::Eq, 0, "out")
        .load(Size::DW, R1, R0, 0)
        .load(Size::DW, R2, R0, 8)
        .jump_if_imm(R2, Cond::Eq, 0, "out")
        .mov(R3, FP)
        .add_imm(R3, i32::from(SLOT_NS))
        .mov_imm(R4, 8)
        .call(helper::GET_NS_CURRENT_PID_TGID)
        .jump_if_imm(R0, Cond::Ne, 0, "out");
}

/// Counts a record the ring buffer had no room for.
fn count_loss(asm: &mut Asm, maps: Maps) {
    asm.store_imm(Size::W, FP, SLOT_KEY, 0)
        .load_map(R1, maps.lost)
        .mov(R2, FP)
        .add_imm(R2, i32::from(SLOT_KEY))
        .call(helper::MAP_LOOKUP_ELEM)
        .jump_if_imm(R0, Cond::Eq, 0, "out")
        .mov_imm(R1, 1)
        .atomic_add(R0, 0, R1);
}

/// The program on `sched_process_exec` (raw arguments: task, old pid, binprm).
pub fn exec_program(offsets: &Offsets, maps: Maps) -> Result<Vec<Instruction>, String> {
    let o = offsets;
    let mut asm = Asm::new();
    asm.mov(R6, R1);
    start_record(&mut asm, maps, KIND_EXEC);
    forget_attempt(&mut asm, maps);
    parent(&mut asm, o);
    path_from_binprm(&mut asm, o);
    arguments_from_image(&mut asm, o);
    working_directory_and_send(&mut asm, o, maps);
    asm.finish()
}

/// Keeps only the namespace's processes, takes the scratch record (r7) and fills its header;
/// r8 is the current task. r6 is left alone.
fn start_record(asm: &mut Asm, maps: Maps, kind: u32) {
    filter(asm, maps);
    asm.store_imm(Size::W, FP, SLOT_KEY, 0)
        .load_map(R1, maps.scratch)
        .mov(R2, FP)
        .add_imm(R2, i32::from(SLOT_KEY))
        .call(helper::MAP_LOOKUP_ELEM)
        .jump_if_imm(R0, Cond::Eq, 0, "out")
        .mov(R7, R0)
        .store_imm(Size::W, R7, 0, kind as i32)
        .load(Size::W, R1, FP, SLOT_NS + 4)
        .store(Size::W, R7, 4, R1)
        .load(Size::W, R1, FP, SLOT_NS)
        .store(Size::W, R7, 8, R1)
        .store_imm(Size::W, R7, 12, 0)
        .call(helper::KTIME_GET_NS)
        .store(Size::DW, R7, 16, R0)
        .call(helper::GET_CURRENT_PID_TGID)
        .rsh_imm(R0, 32)
        .store(Size::W, R7, 24, R0)
        .store_imm(Size::W, R7, 48, 0)
        .store_imm(Size::W, R7, 28, 0)
        .call(helper::GET_CURRENT_TASK)
        .mov(R8, R0);
}

/// The parent's pid in the namespace, into the record: the number of its `struct pid` at this
/// process's level, if that number is in the same namespace (else the parent is outside: 0).
fn parent(asm: &mut Asm, o: &Offsets) {
    read_kernel(asm, R9, R8, o.task_thread_pid, Size::DW);
    asm.store(Size::DW, FP, SLOT_A, R9);
    read_kernel(asm, R1, R9, o.pid_level, Size::W);
    asm.and_imm(R1, 63)
        .store(Size::DW, FP, SLOT_D, R1)
        .mul_imm(R1, o.upid_size)
        .add_imm(R1, o.pid_numbers)
        .store(Size::DW, FP, SLOT_B, R1);
    read_kernel(asm, R9, R8, o.task_real_parent, Size::DW);
    read_kernel(asm, R9, R9, o.task_thread_pid, Size::DW);
    asm.store(Size::DW, FP, SLOT_C, R9);
    read_kernel(asm, R1, R9, o.pid_level, Size::W);
    asm.load(Size::DW, R2, FP, SLOT_D)
        .jump_if(R1, Cond::Lt, R2, "parent_done")
        .load(Size::DW, R1, FP, SLOT_A)
        .load(Size::DW, R2, FP, SLOT_B)
        .add(R1, R2);
    read_kernel(asm, R9, R1, o.upid_ns, Size::DW);
    asm.load(Size::DW, R1, FP, SLOT_C)
        .load(Size::DW, R2, FP, SLOT_B)
        .add(R1, R2)
        .store(Size::DW, FP, SLOT_A, R1);
    read_kernel(asm, R1, R1, o.upid_ns, Size::DW);
    asm.jump_if(R1, Cond::Ne, R9, "parent_done")
        .load(Size::DW, R1, FP, SLOT_A);
    read_kernel(asm, R1, R1, o.upid_nr, Size::W);
    asm.store(Size::W, R7, 12, R1).label("parent_done");
}

/// The path given to exec, from the binprm (the third raw argument, ctx in r6); r9 is where
/// the next field goes.
fn path_from_binprm(asm: &mut Asm, o: &Offsets) {
    asm.load(Size::DW, R1, R6, 16);
    read_kernel(asm, R3, R1, o.binprm_filename, Size::DW);
    asm.mov(R1, R7)
        .add_imm(R1, HEADER as i32)
        .mov_imm(R2, PATH_MAX)
        .call(helper::PROBE_READ_KERNEL_STR)
        .jump_if_imm(R0, Cond::Sgt, 0, "path_read")
        .mov_imm(R0, 0)
        .label("path_read")
        .jump_if_imm(R0, Cond::Le, PATH_MAX, "path_ok")
        .mov_imm(R0, PATH_MAX)
        .label("path_ok")
        .store(Size::W, R7, 32, R0)
        .mov(R9, R0)
        .add_imm(R9, HEADER as i32);
}

/// argv: the new image's argument strings, already laid out by exec, after the path.
fn arguments_from_image(asm: &mut Asm, o: &Offsets) {
    read_kernel(asm, R1, R8, o.task_mm, Size::DW);
    asm.store(Size::DW, FP, SLOT_A, R1);
    read_kernel(asm, R1, R1, o.mm_arg_start, Size::DW);
    asm.store(Size::DW, FP, SLOT_B, R1)
        .load(Size::DW, R1, FP, SLOT_A);
    read_kernel(asm, R1, R1, o.mm_arg_end, Size::DW);
    asm.load(Size::DW, R2, FP, SLOT_B)
        .sub(R1, R2)
        .store(Size::W, R7, 40, R1)
        .jump_if_imm(R1, Cond::Le, ARGS_MAX, "args_len_ok")
        .mov_imm(R1, ARGS_MAX)
        .label("args_len_ok")
        .store(Size::DW, FP, SLOT_C, R1)
        .mov(R2, R1)
        .load(Size::DW, R3, FP, SLOT_B)
        .mov(R1, R7)
        .add(R1, R9)
        .call(helper::PROBE_READ_USER)
        .load(Size::DW, R1, FP, SLOT_C)
        .jump_if_imm(R0, Cond::Eq, 0, "args_read")
        .mov_imm(R1, 0)
        .label("args_read")
        .store(Size::W, R7, 36, R1)
        .add(R9, R1);
}

/// Writes the working directory from r9 on, then sends the record.
fn working_directory_and_send(asm: &mut Asm, o: &Offsets, maps: Maps) {
    // The working directory: its dentries' names up to the process's root, crossing mounts
    // (r8 the dentry, r6 the vfsmount), leaf first.
    read_kernel(asm, R1, R8, o.task_fs, Size::DW);
    asm.store(Size::DW, FP, SLOT_A, R1);
    read_kernel(asm, R1, R1, o.fs_root + o.path_dentry, Size::DW);
    asm.store(Size::DW, FP, SLOT_ROOT_DENTRY, R1)
        .load(Size::DW, R1, FP, SLOT_A);
    read_kernel(asm, R1, R1, o.fs_root + o.path_mnt, Size::DW);
    asm.store(Size::DW, FP, SLOT_ROOT_MNT, R1)
        .load(Size::DW, R1, FP, SLOT_A);
    read_kernel(asm, R6, R1, o.fs_pwd + o.path_mnt, Size::DW);
    asm.load(Size::DW, R1, FP, SLOT_A);
    read_kernel(asm, R8, R1, o.fs_pwd + o.path_dentry, Size::DW);
    // The component bytes so far are kept in the record (at CWD_BYTES), not in a register:
    // read back from the map they have no known bounds, so after the mask every pass through
    // the loop has the same ones and the verifier prunes equal states instead of walking
    // every combination of passes (which took it over a second).
    // So is where they start (different after each way through the path and argv).
    asm.store(Size::W, R7, CWD_START, R9)
        .store_imm(Size::DW, R7, CWD_BYTES, 0)
        .store_imm(Size::DW, FP, SLOT_DEPTH, 0)
        .label("walk")
        .load(Size::DW, R1, FP, SLOT_DEPTH)
        .jump_if_imm(R1, Cond::Ge, CWD_DEPTH, "too_deep")
        .add_imm(R1, 1)
        .store(Size::DW, FP, SLOT_DEPTH, R1)
        .load(Size::DW, R1, FP, SLOT_ROOT_DENTRY)
        .jump_if(R8, Cond::Ne, R1, "not_root")
        .load(Size::DW, R1, FP, SLOT_ROOT_MNT)
        .jump_if(R6, Cond::Eq, R1, "at_root")
        .label("not_root");
    read_kernel(asm, R1, R6, o.vfsmount_root, Size::DW);
    asm.jump_if(R8, Cond::Ne, R1, "component");
    // The top of a mount: go on from where it is mounted, in its parent.
    read_kernel(asm, R1, R6, o.mount_parent - o.mount_mnt, Size::DW);
    asm.mov(R2, R6)
        .add_imm(R2, -o.mount_mnt)
        .jump_if(R1, Cond::Eq, R2, "outside")
        .store(Size::DW, FP, SLOT_NEXT, R1);
    read_kernel(asm, R8, R6, o.mount_mountpoint - o.mount_mnt, Size::DW);
    asm.load(Size::DW, R6, FP, SLOT_NEXT)
        .add_imm(R6, o.mount_mnt)
        .jump("walk")
        .label("component");
    read_kernel(asm, R1, R8, o.dentry_parent, Size::DW);
    asm.store(Size::DW, FP, SLOT_NEXT, R1)
        .jump_if(R1, Cond::Eq, R8, "outside");
    read_kernel(asm, R3, R8, o.dentry_name, Size::DW);
    asm.load(Size::DW, R9, R7, CWD_BYTES)
        .and_imm(R9, CWD_MAX - 1)
        .jump_if_imm(R9, Cond::Gt, CWD_MAX - NAME_MAX, "too_deep")
        .load(Size::W, R1, R7, CWD_START)
        .jump_if_imm(R1, Cond::Gt, CWD_START_MAX, "out")
        .add(R1, R7)
        .add(R1, R9)
        .mov_imm(R2, NAME_MAX)
        .call(helper::PROBE_READ_KERNEL_STR)
        .jump_if_imm(R0, Cond::Sle, 0, "next")
        .jump_if_imm(R0, Cond::Gt, NAME_MAX, "next")
        .add(R9, R0)
        .store(Size::DW, R7, CWD_BYTES, R9)
        .label("next")
        .load(Size::DW, R8, FP, SLOT_NEXT)
        .jump("walk");
    asm.label("at_root")
        .store_imm(Size::W, R7, 48, CWD_ROOT as i32)
        .jump("send")
        .label("outside")
        .store_imm(Size::W, R7, 48, CWD_OUTSIDE as i32)
        .jump("send")
        .label("too_deep")
        .store_imm(Size::W, R7, 48, CWD_TOO_DEEP as i32)
        .label("send")
        .load(Size::DW, R9, R7, CWD_BYTES)
        .jump_if_imm(R9, Cond::Le, CWD_MAX, "cwd_bounded")
        .mov_imm(R9, CWD_MAX)
        .label("cwd_bounded")
        .load(Size::W, R3, R7, CWD_START)
        .jump_if_imm(R3, Cond::Gt, CWD_START_MAX, "out")
        .add(R3, R9)
        .load_map(R1, maps.ring)
        .mov(R2, R7)
        .mov_imm(R4, 0)
        .call(helper::RINGBUF_OUTPUT)
        .jump_if_imm(R0, Cond::Eq, 0, "out");
    count_loss(asm, maps);
    asm.label("out").mov_imm(R0, 0).exit();
}

/// The program on `sched_process_exit` (raw arguments: task, and from Linux 6.16 whether the
/// whole thread group is dead).
pub fn exit_program(offsets: &Offsets, maps: Maps) -> Result<Vec<Instruction>, String> {
    let o = offsets;
    let mut asm = Asm::new();
    asm.mov(R6, R1);
    filter(&mut asm, maps);
    if o.exit_has_group_dead {
        asm.load(Size::DW, R1, R6, 8)
            .and_imm(R1, 0xff)
            .jump_if_imm(R1, Cond::Eq, 0, "out");
    } else {
        asm.load(Size::W, R1, FP, SLOT_NS)
            .load(Size::W, R2, FP, SLOT_NS + 4)
            .jump_if(R1, Cond::Ne, R2, "out");
    }
    let record = SLOT_RECORD;
    asm.store_imm(Size::W, FP, record, KIND_EXIT as i32)
        .load(Size::W, R1, FP, SLOT_NS + 4)
        .store(Size::W, FP, record + 4, R1)
        .load(Size::W, R1, FP, SLOT_NS)
        .store(Size::W, FP, record + 8, R1)
        .store_imm(Size::W, FP, record + 12, 0)
        .call(helper::KTIME_GET_NS)
        .store(Size::DW, FP, record + 16, R0)
        .call(helper::GET_CURRENT_PID_TGID)
        .rsh_imm(R0, 32)
        .store(Size::W, FP, record + 24, R0)
        .load(Size::DW, R1, R6, 0);
    read_kernel(&mut asm, R1, R1, o.task_exit_code, Size::W);
    asm.store(Size::W, FP, record + 28, R1)
        .load(Size::DW, R1, R6, 0);
    read_kernel(&mut asm, R1, R1, o.task_start_time, Size::DW);
    asm.store(Size::DW, FP, record + 32, R1)
        .load_map(R1, maps.ring)
        .mov(R2, FP)
        .add_imm(R2, i32::from(record))
        .mov_imm(R3, EXIT_RECORD as i32)
        .mov_imm(R4, 0)
        .call(helper::RINGBUF_OUTPUT)
        .jump_if_imm(R0, Cond::Eq, 0, "out");
    count_loss(&mut asm, maps);
    asm.label("out").mov_imm(R0, 0).exit();
    asm.finish()
}

/// The program on the `sys_enter` raw tracepoint (arguments: the registers, the syscall
/// number): for an `execve` or `execveat` of the namespace, keeps the path and argv pointers
/// and the task's start time until the result is known. Every other syscall returns at the
/// first comparison.
pub fn attempt_program(offsets: &Offsets, maps: Maps) -> Result<Vec<Instruction>, String> {
    let o = offsets;
    let [first, second, third] = o.syscall_arguments;
    let mut asm = Asm::new();
    asm.mov(R6, R1)
        .load(Size::DW, R1, R6, 8)
        .jump_if_imm(R1, Cond::Eq, EXEC_SYSCALLS.0, "execve")
        .jump_if_imm(R1, Cond::Eq, EXEC_SYSCALLS.1, "execveat")
        .jump("out")
        .label("execve")
        .store_imm(Size::DW, FP, SLOT_SYSCALL, 0)
        .store_imm(Size::DW, FP, SLOT_A, first)
        .store_imm(Size::DW, FP, SLOT_B, second)
        .jump("chosen")
        .label("execveat")
        .store_imm(Size::DW, FP, SLOT_SYSCALL, 1)
        .store_imm(Size::DW, FP, SLOT_A, second)
        .store_imm(Size::DW, FP, SLOT_B, third)
        .label("chosen");
    filter(&mut asm, maps);
    // The value: filename, argv, execveat, start time (SLOT_VALUE up to SLOT_VALUE + 32).
    asm.load(Size::DW, R1, R6, 0)
        .load(Size::DW, R2, FP, SLOT_A)
        .add(R1, R2);
    read_kernel(&mut asm, R1, R1, 0, Size::DW);
    asm.store(Size::DW, FP, SLOT_VALUE, R1)
        .load(Size::DW, R1, R6, 0)
        .load(Size::DW, R2, FP, SLOT_B)
        .add(R1, R2);
    read_kernel(&mut asm, R1, R1, 0, Size::DW);
    asm.store(Size::DW, FP, SLOT_VALUE + 8, R1)
        .load(Size::DW, R1, FP, SLOT_SYSCALL)
        .store(Size::DW, FP, SLOT_VALUE + 16, R1)
        .call(helper::GET_CURRENT_TASK);
    read_kernel(&mut asm, R1, R0, o.task_start_time, Size::DW);
    asm.store(Size::DW, FP, SLOT_VALUE + 24, R1)
        .call(helper::GET_CURRENT_PID_TGID)
        .store(Size::DW, FP, SLOT_TASK_KEY, R0)
        .load_map(R1, maps.attempts)
        .mov(R2, FP)
        .add_imm(R2, i32::from(SLOT_TASK_KEY))
        .mov(R3, FP)
        .add_imm(R3, i32::from(SLOT_VALUE))
        .mov_imm(R4, 0)
        .call(helper::MAP_UPDATE_ELEM)
        .label("out")
        .mov_imm(R0, 0)
        .exit();
    asm.finish()
}

/// Forgets the current task's exec attempt (its exec succeeded).
fn forget_attempt(asm: &mut Asm, maps: Maps) {
    asm.call(helper::GET_CURRENT_PID_TGID)
        .store(Size::DW, FP, SLOT_TASK_KEY, R0)
        .load_map(R1, maps.attempts)
        .mov(R2, FP)
        .add_imm(R2, i32::from(SLOT_TASK_KEY))
        .call(helper::MAP_DELETE_ELEM);
}

/// The program on the `sys_exit` raw tracepoint (arguments: the registers, the result): a
/// failed syscall of a task with an exec attempt kept is that attempt's failure, recorded with
/// its path, argv (read from the caller's memory, still there), errno, working directory and
/// parent. Syscalls that succeed return at the first comparison; an attempt whose task's start
/// time differs (its thread id reused after a non-leader's exec) is dropped.
pub fn failed_exec_program(offsets: &Offsets, maps: Maps) -> Result<Vec<Instruction>, String> {
    let o = offsets;
    let mut asm = Asm::new();
    asm.mov(R6, R1)
        .load(Size::DW, R1, R6, 8)
        .jump_if_imm(R1, Cond::Sgt, -1, "out")
        .store(Size::DW, FP, SLOT_RET, R1)
        .call(helper::GET_CURRENT_PID_TGID)
        .store(Size::DW, FP, SLOT_TASK_KEY, R0)
        .load_map(R1, maps.attempts)
        .mov(R2, FP)
        .add_imm(R2, i32::from(SLOT_TASK_KEY))
        .call(helper::MAP_LOOKUP_ELEM)
        .jump_if_imm(R0, Cond::Eq, 0, "out")
        .load(Size::DW, R1, R0, 0)
        .store(Size::DW, FP, SLOT_FILENAME, R1)
        .load(Size::DW, R1, R0, 8)
        .store(Size::DW, FP, SLOT_ARGV, R1)
        .load(Size::DW, R1, R0, 16)
        .store(Size::DW, FP, SLOT_SYSCALL, R1)
        .load(Size::DW, R1, R0, 24)
        .store(Size::DW, FP, SLOT_START, R1)
        .load_map(R1, maps.attempts)
        .mov(R2, FP)
        .add_imm(R2, i32::from(SLOT_TASK_KEY))
        .call(helper::MAP_DELETE_ELEM)
        .call(helper::GET_CURRENT_TASK);
    read_kernel(&mut asm, R1, R0, o.task_start_time, Size::DW);
    asm.load(Size::DW, R2, FP, SLOT_START)
        .jump_if(R1, Cond::Ne, R2, "out");
    start_record(&mut asm, maps, KIND_FAILED_EXEC);
    asm.load(Size::DW, R1, FP, SLOT_RET)
        .mov_imm(R2, 0)
        .sub(R2, R1)
        .store(Size::W, R7, 28, R2)
        .load(Size::DW, R1, FP, SLOT_SYSCALL)
        .store(Size::W, R7, 52, R1);
    parent(&mut asm, o);
    // The path, in its fixed region.
    asm.mov(R1, R7)
        .add_imm(R1, HEADER as i32)
        .mov_imm(R2, PATH_MAX)
        .load(Size::DW, R3, FP, SLOT_FILENAME)
        .call(helper::PROBE_READ_USER_STR)
        .jump_if_imm(R0, Cond::Sgt, 0, "failed_path_read")
        .store_imm(Size::W, R7, HEADER as i16, 0)
        .label("failed_path_read")
        .store_imm(Size::W, R7, 32, PATH_MAX);
    // argv, one string at a time; the byte count is kept in the record (at 36) for the same
    // reason as the working directory's.
    let base = HEADER as i32 + PATH_MAX;
    asm.store_imm(Size::W, R7, 36, 0)
        .store_imm(Size::DW, FP, SLOT_ARG_INDEX, 0)
        .label("arg")
        .load(Size::DW, R1, FP, SLOT_ARG_INDEX)
        .jump_if_imm(R1, Cond::Ge, FAILED_ARGS, "args_cut")
        .mov(R3, R1)
        .mul_imm(R3, 8)
        .add_imm(R1, 1)
        .store(Size::DW, FP, SLOT_ARG_INDEX, R1)
        .load(Size::DW, R1, FP, SLOT_ARGV)
        .add(R3, R1)
        .store_imm(Size::DW, FP, SLOT_READ, 0)
        .mov(R1, FP)
        .add_imm(R1, i32::from(SLOT_READ))
        .mov_imm(R2, 8)
        .call(helper::PROBE_READ_USER)
        .load(Size::DW, R1, FP, SLOT_READ)
        .jump_if_imm(R1, Cond::Eq, 0, "args_end")
        .store(Size::DW, FP, SLOT_NEXT, R1)
        .load(Size::W, R9, R7, 36)
        .and_imm(R9, ARGS_MAX - 1)
        .jump_if_imm(R9, Cond::Gt, ARGS_MAX - FAILED_ARG_MAX, "args_cut")
        .mov(R1, R7)
        .add_imm(R1, base)
        .add(R1, R9)
        .mov_imm(R2, FAILED_ARG_MAX)
        .load(Size::DW, R3, FP, SLOT_NEXT)
        .call(helper::PROBE_READ_USER_STR)
        .jump_if_imm(R0, Cond::Sle, 0, "args_end")
        .jump_if_imm(R0, Cond::Gt, FAILED_ARG_MAX, "args_end")
        .add(R9, R0)
        .store(Size::W, R7, 36, R9)
        .jump_if_imm(R0, Cond::Eq, FAILED_ARG_MAX, "args_cut")
        .jump("arg")
        .label("args_cut")
        // Cut: one more byte than read says so.
        .load(Size::W, R1, R7, 36)
        .add_imm(R1, 1)
        .store(Size::W, R7, 40, R1)
        .jump("args_done")
        .label("args_end")
        .load(Size::W, R1, R7, 36)
        .store(Size::W, R7, 40, R1)
        .label("args_done")
        .load(Size::W, R9, R7, 36)
        .jump_if_imm(R9, Cond::Gt, ARGS_MAX, "out")
        .add_imm(R9, base);
    working_directory_and_send(&mut asm, o, maps);
    asm.finish()
}
