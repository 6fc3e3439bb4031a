//! eBPF: maps, program loading, raw tracepoints and the ring buffer's reader.
//!
//! Why it exists: as root, the exec tracer (`exectrace`) records execs and exits from two small
//! eBPF programs on the scheduler's tracepoints instead of a seccomp notification per exec,
//! which stops every exec for a round trip. The programs are built as instructions by safe code;
//! the `bpf` syscall, the memory-mapped ring buffer and its memory ordering are here.
//!
//! What it guarantees:
//!
//! - every object is a close-on-exec [`OwnedFd`]; closing a [`RawTracepoint`]'s descriptor
//!   detaches its program, so nothing stays attached after its owner is gone;
//! - [`load_program`] returns the verifier's log with its error, so a refused program says why;
//! - [`RingBuffer::consume`] hands out each committed record once, in order, skips discarded
//!   ones, stops at a record still being written, and releases the space only after the
//!   callback returned.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Errno;

/// One eBPF instruction (`struct bpf_insn`): opcode, destination and source registers (low and
/// high nibble), offset and immediate.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instruction {
    pub code: u8,
    pub registers: u8,
    pub offset: i16,
    pub immediate: i32,
}

/// `BPF_MAP_TYPE_ARRAY`.
pub const MAP_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_PERCPU_ARRAY`.
pub const MAP_PERCPU_ARRAY: u32 = 6;
/// `BPF_MAP_TYPE_RINGBUF`.
pub const MAP_RINGBUF: u32 = 27;
/// `BPF_MAP_TYPE_LRU_HASH`.
pub const MAP_LRU_HASH: u32 = 9;
/// `BPF_PROG_TYPE_RAW_TRACEPOINT`.
pub const PROGRAM_RAW_TRACEPOINT: u32 = 17;

const CMD_MAP_CREATE: libc::c_long = 0;
const CMD_MAP_LOOKUP_ELEM: libc::c_long = 1;
const CMD_MAP_UPDATE_ELEM: libc::c_long = 2;
const CMD_PROG_LOAD: libc::c_long = 5;
const CMD_RAW_TRACEPOINT_OPEN: libc::c_long = 17;

/// Room for every `union bpf_attr` member used here; the kernel accepts a larger, zeroed tail.
#[repr(C, align(8))]
struct Attributes([u8; 128]);

impl Attributes {
    fn new() -> Attributes {
        Attributes([0; 128])
    }

    fn put_u32(&mut self, offset: usize, value: u32) {
        self.0[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
    }

    fn put_u64(&mut self, offset: usize, value: u64) {
        self.0[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
    }
}

/// `bpf(cmd, attr, size)`; the result (a descriptor or 0) or the errno.
fn bpf(command: libc::c_long, attributes: &mut Attributes) -> Result<libc::c_long, Errno> {
    loop {
        // SAFETY: `attributes` is a live, 8-aligned buffer of the size passed; every pointer
        // stored in it (names, instructions, log, key and value buffers) is set by the caller
        // from a borrow that outlives this call, and the kernel writes only into the buffers
        // whose sizes were given with them.
        let result = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                command,
                attributes.0.as_mut_ptr(),
                attributes.0.len() as libc::c_uint,
            )
        };
        if result >= 0 {
            return Ok(result);
        }
        let errno = Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL);
        if errno != Errno::AGAIN && errno != Errno::INTR {
            return Err(errno);
        }
        // The verifier may return EAGAIN when interrupted; loading is then retried.
        if command != CMD_PROG_LOAD {
            return Err(errno);
        }
    }
}

fn owned(result: libc::c_long) -> Result<OwnedFd, Errno> {
    let fd = libc::c_int::try_from(result).map_err(|_| Errno::INVAL)?;
    // SAFETY: the commands used with this return a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Object names are at most 15 bytes and a NUL (`BPF_OBJ_NAME_LEN`). Every bpf descriptor is
/// close-on-exec: the kernel sets `O_CLOEXEC` on all of them.
const NAME_LEN: usize = 16;

fn put_name(attributes: &mut Attributes, offset: usize, name: &str) {
    let bytes = name.as_bytes();
    let len = bytes.len().min(NAME_LEN - 1);
    attributes.0[offset..offset + len].copy_from_slice(&bytes[..len]);
}

/// Creates a map (`BPF_MAP_CREATE`).
pub fn create_map(
    kind: u32,
    key_size: u32,
    value_size: u32,
    entries: u32,
    name: &str,
) -> Result<OwnedFd, Errno> {
    let mut attributes = Attributes::new();
    attributes.put_u32(0, kind);
    attributes.put_u32(4, key_size);
    attributes.put_u32(8, value_size);
    attributes.put_u32(12, entries);
    // map_flags (16), inner_map_fd (20), numa_node (24), then map_name.
    put_name(&mut attributes, 28, name);
    owned(bpf(CMD_MAP_CREATE, &mut attributes)?)
}

/// Reads the value at `key` of an array map into `value` (`BPF_MAP_LOOKUP_ELEM`). For a
/// per-CPU map, `value` holds one value per possible CPU, each rounded up to 8 bytes.
pub fn lookup(map: BorrowedFd<'_>, key: u32, value: &mut [u8]) -> Result<(), Errno> {
    let key = key.to_ne_bytes();
    let mut attributes = Attributes::new();
    attributes.put_u32(0, map.as_raw_fd() as u32);
    attributes.put_u64(8, key.as_ptr() as u64);
    attributes.put_u64(16, value.as_mut_ptr() as u64);
    bpf(CMD_MAP_LOOKUP_ELEM, &mut attributes).map(drop)
}

/// Writes `value` at `key` of an array map (`BPF_MAP_UPDATE_ELEM`, `BPF_ANY`).
pub fn update(map: BorrowedFd<'_>, key: u32, value: &[u8]) -> Result<(), Errno> {
    let key = key.to_ne_bytes();
    let mut attributes = Attributes::new();
    attributes.put_u32(0, map.as_raw_fd() as u32);
    attributes.put_u64(8, key.as_ptr() as u64);
    attributes.put_u64(16, value.as_ptr() as u64);
    bpf(CMD_MAP_UPDATE_ELEM, &mut attributes).map(drop)
}

/// A program the verifier refused, with its log.
#[derive(Debug)]
pub struct LoadError {
    pub errno: Errno,
    pub log: String,
}

/// Loads a program (`BPF_PROG_LOAD`) under the GPL license, which the tracing helpers need.
/// On failure the verifier's log is returned.
pub fn load_program(
    kind: u32,
    instructions: &[Instruction],
    name: &str,
) -> Result<OwnedFd, LoadError> {
    let license = b"GPL\0";
    let count = u32::try_from(instructions.len()).map_err(|_| LoadError {
        errno: Errno::TOOBIG,
        log: String::new(),
    })?;
    let attempt = |log: &mut [u8], level: u32| {
        let mut attributes = Attributes::new();
        attributes.put_u32(0, kind);
        attributes.put_u32(4, count);
        attributes.put_u64(8, instructions.as_ptr() as u64);
        attributes.put_u64(16, license.as_ptr() as u64);
        attributes.put_u32(24, level);
        if !log.is_empty() {
            attributes.put_u32(28, log.len() as u32);
            attributes.put_u64(32, log.as_mut_ptr() as u64);
        }
        // kern_version (40), prog_flags (44), then prog_name.
        put_name(&mut attributes, 48, name);
        bpf(CMD_PROG_LOAD, &mut attributes)
    };
    match attempt(&mut [], 0) {
        Ok(fd) => owned(fd).map_err(|errno| LoadError {
            errno,
            log: String::new(),
        }),
        Err(errno) => {
            // Load again with a log to say why (the verifier's log costs time, so only then).
            let mut log = vec![0u8; 1 << 20];
            let _ = attempt(&mut log, 1);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(LoadError {
                errno,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
    }
}

/// A program attached to a raw tracepoint; dropping it detaches the program.
#[derive(Debug)]
pub struct RawTracepoint {
    _link: OwnedFd,
}

/// Attaches `program` to the raw tracepoint `name` (`BPF_RAW_TRACEPOINT_OPEN`).
pub fn attach_raw_tracepoint(program: BorrowedFd<'_>, name: &str) -> Result<RawTracepoint, Errno> {
    let name = std::ffi::CString::new(name).map_err(|_| Errno::INVAL)?;
    let mut attributes = Attributes::new();
    attributes.put_u64(0, name.as_ptr() as u64);
    attributes.put_u32(8, program.as_raw_fd() as u32);
    Ok(RawTracepoint {
        _link: owned(bpf(CMD_RAW_TRACEPOINT_OPEN, &mut attributes)?)?,
    })
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns` and of a task's start
/// time.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `now`, which lives for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64).saturating_mul(1_000_000_000) + now.tv_nsec as u64
}

const BUSY: u32 = 1 << 31;
const DISCARDED: u32 = 1 << 30;
const HEADER: u64 = 8;

/// The reader's side of a `BPF_MAP_TYPE_RINGBUF` map: its consumer position (writable) and its
/// producer position and data (read-only, the data mapped twice so a record that wraps is
/// contiguous).
pub struct RingBuffer {
    map: OwnedFd,
    consumer: NonNull<u8>,
    producer: NonNull<u8>,
    page: usize,
    size: usize,
}

// SAFETY: the mappings belong to the RingBuffer alone; moving it to another thread moves them.
unsafe impl Send for RingBuffer {}

fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the process; no memory is passed.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

fn map_shared(
    fd: BorrowedFd<'_>,
    len: usize,
    offset: u64,
    writable: bool,
) -> Result<NonNull<u8>, Errno> {
    let protection = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: a new shared mapping of the ring buffer's descriptor at an address the kernel
    // chooses; nothing else refers to that range. Checked for MAP_FAILED below.
    let address = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            protection,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if address == libc::MAP_FAILED {
        return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL));
    }
    NonNull::new(address.cast::<u8>()).ok_or(Errno::INVAL)
}

impl RingBuffer {
    /// Creates a ring buffer map of `size` bytes (a power of two, a multiple of the page size)
    /// and maps it for reading.
    pub fn create(size: usize, name: &str) -> Result<RingBuffer, Errno> {
        let page = page_size();
        if !size.is_power_of_two() || !size.is_multiple_of(page) {
            return Err(Errno::INVAL);
        }
        let map = create_map(
            MAP_RINGBUF,
            0,
            0,
            u32::try_from(size).map_err(|_| Errno::INVAL)?,
            name,
        )?;
        let consumer = map_shared(map.as_fd(), page, 0, true)?;
        let producer = match map_shared(map.as_fd(), page + 2 * size, page as u64, false) {
            Ok(producer) => producer,
            Err(errno) => {
                // SAFETY: `consumer` was mapped above with this length and is not used again.
                unsafe { libc::munmap(consumer.as_ptr().cast(), page) };
                return Err(errno);
            }
        };
        Ok(RingBuffer {
            map,
            consumer,
            producer,
            page,
            size,
        })
    }

    /// The map's descriptor: for programs to refer to, and pollable (readable when records
    /// were committed since the reader last caught up).
    pub fn map(&self) -> BorrowedFd<'_> {
        self.map.as_fd()
    }

    fn position(&self, base: NonNull<u8>) -> &AtomicU64 {
        // SAFETY: the first 8 bytes of each mapped page hold the kernel's position counters,
        // 8-aligned (page-aligned), alive as long as `self`; they are only accessed atomically.
        unsafe { &*base.as_ptr().cast::<AtomicU64>() }
    }

    /// Hands every committed record to `each`, in order, and releases their space. Returns
    /// how many records were handed out.
    pub fn consume(&mut self, mut each: impl FnMut(&[u8])) -> usize {
        let mask = (self.size - 1) as u64;
        let mut consumer = self.position(self.consumer).load(Ordering::Acquire);
        let mut count = 0;
        loop {
            let producer = self.position(self.producer).load(Ordering::Acquire);
            if consumer >= producer {
                break;
            }
            let offset = self.page + (consumer & mask) as usize;
            // SAFETY: `offset` + 8 lies within the first copy of the data, which the mapping
            // covers (page + 2 * size bytes); the header is 8-aligned and written by the
            // kernel with release semantics, read here with acquire.
            let header = unsafe {
                &*self
                    .producer
                    .as_ptr()
                    .add(offset)
                    .cast::<std::sync::atomic::AtomicU32>()
            }
            .load(Ordering::Acquire);
            if header & BUSY != 0 {
                break;
            }
            let len = u64::from(header & !(BUSY | DISCARDED));
            if header & DISCARDED == 0 && len <= self.size as u64 {
                // SAFETY: the record's data follows its header and is at most `size` bytes,
                // so it ends within the double mapping; the kernel does not write a committed
                // record until the consumer position passes it.
                let data = unsafe {
                    std::slice::from_raw_parts(
                        self.producer.as_ptr().add(offset + HEADER as usize),
                        len as usize,
                    )
                };
                each(data);
                count += 1;
            }
            consumer += (len + HEADER + 7) & !7;
            self.position(self.consumer)
                .store(consumer, Ordering::Release);
        }
        count
    }
}

impl Drop for RingBuffer {
    fn drop(&mut self) {
        // SAFETY: both ranges were mapped in `create` with these lengths and no reference into
        // them outlives `self` (`consume` lends slices only for the callback).
        unsafe {
            libc::munmap(self.consumer.as_ptr().cast(), self.page);
            libc::munmap(self.producer.as_ptr().cast(), self.page + 2 * self.size);
        }
    }
}

impl std::fmt::Debug for RingBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingBuffer")
            .field("map", &self.map)
            .field("size", &self.size)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let first = monotonic_ns();
        let second = monotonic_ns();
        assert!(first > 0 && second >= first);
    }
}
