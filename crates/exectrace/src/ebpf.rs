//! The root tracer: execs and exits from eBPF programs on kernel tracepoints.
//!
//! Why it exists: the seccomp tracer stops every exec until the tracer answers, a round trip
//! that costs an exec storm about a fifth of its speed. As root, programs on the scheduler's
//! `sched_process_exec` and `sched_process_exit` tracepoints record the same facts without
//! stopping anything: the exec'd path, argv (read from the new image, where exec laid it out), the
//! working directory (walked up through dentries and mounts to the process's root), the pids
//! and parent's pid in the sandbox's pid namespace, and at exit the wait status. They write to
//! a ring buffer that this thread drains in batches.
//!
//! What it guarantees:
//!
//! - every exec and every process exit in the pid namespace is seen from the moment
//!   [`PreparedEbpf::start`] returns; the verifier checks the programs and they are attached
//!   in [`prepare_ebpf`], before there is a sandbox;
//! - an exec that fails is recorded as an attempt, as the seccomp tracer does, with its errno
//!   (`error.type`, e.g. `ENOENT`, or `EACCES` for a path Landlock refuses): a program on the
//!   `sys_enter` raw tracepoint keeps an exec attempt's path and argv pointers, and one on
//!   `sys_exit` reads a failed attempt from the caller's memory, still intact. Both return at
//!   their first comparison for any other syscall (or any success), so the rest of the host
//!   pays one short program call per syscall while a sandbox runs;
//! - events carry the time the kernel saw them;
//! - processes that started before the tracer and never exec'd under it (the sandbox's init)
//!   get no exit event; every other process does, including one that never exec'd;
//! - a record the ring buffer had no room for is counted by the program, reported with a
//!   `hardbox.sensor.loss` event (`error.type` `ring_buffer_full`, the count since the last
//!   one) when the reader next hands over a full batch or stops, and counted in
//!   [`TraceStats::lost`]: never dropped silently;
//! - [`TracerHandle::stop`] detaches the programs and then records everything already in the
//!   ring buffer before the thread ends. The thread ends only when stopped.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use events::{Event, Recorder};
use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::{eventfd, EventfdFlags};
use sys::bpf::{RawTracepoint, RingBuffer};
use sys::Errno;

use crate::batch::Batch;
use crate::btf::Btf;
use crate::programs::{self, Maps, Offsets};
use crate::remote::Arguments;
use crate::tracer::{exec_event, exit_event, ExecRecord};
use crate::{StopReason, TraceOptions, TraceStats, TracerHandle};

/// The ring buffer's size: room for a burst of several thousand execs between two drains.
const RING_SIZE: usize = 8 << 20;

/// Why the root tracer could not start: the kernel lacks what it needs, or refused a program.
#[derive(Debug)]
pub struct EbpfError(String);

impl std::fmt::Display for EbpfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EbpfError {}

fn fail(what: &str, errno: Errno) -> EbpfError {
    EbpfError(format!("{what}: {errno}"))
}

/// The programs loaded, checked by the kernel and attached, keeping no namespace yet: what can
/// be done before the sandbox exists, so that a kernel that refuses them is known before
/// anything starts.
pub struct PreparedEbpf {
    ring: RingBuffer,
    attempts: OwnedFd,
    attached: Vec<RawTracepoint>,
    attempt: OwnedFd,
    failed: OwnedFd,
    config: OwnedFd,
    scratch: OwnedFd,
    lost: OwnedFd,
    exec: OwnedFd,
    exit: OwnedFd,
}

impl std::fmt::Debug for PreparedEbpf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedEbpf").finish_non_exhaustive()
    }
}

/// Loads the programs (after the kernel's verifier accepted them) and their maps. Needs
/// `CAP_BPF` and `CAP_PERFMON` (root) and a kernel with BTF.
pub fn prepare_ebpf() -> Result<PreparedEbpf, EbpfError> {
    prepare_ebpf_with_ring(RING_SIZE)
}

/// [`prepare_ebpf`] with a ring buffer of `ring_bytes` (a power of two, a multiple of the page
/// size) instead of 8 MiB.
pub fn prepare_ebpf_with_ring(ring_bytes: usize) -> Result<PreparedEbpf, EbpfError> {
    let btf = Btf::kernel().map_err(|e| EbpfError(format!("kernel BTF: {e}")))?;
    let offsets = Offsets::find(&btf).map_err(|e| EbpfError(e.to_string()))?;
    drop(btf);
    let ring =
        RingBuffer::create(ring_bytes, "hardbox_exec").map_err(|e| fail("ring buffer", e))?;
    let config = sys::bpf::create_map(
        sys::bpf::MAP_ARRAY,
        4,
        programs::CONFIG_SIZE,
        1,
        "hardbox_config",
    )
    .map_err(|e| fail("config map", e))?;
    let scratch = sys::bpf::create_map(
        sys::bpf::MAP_PERCPU_ARRAY,
        4,
        programs::SCRATCH,
        1,
        "hardbox_scratch",
    )
    .map_err(|e| fail("scratch map", e))?;
    let lost = sys::bpf::create_map(sys::bpf::MAP_ARRAY, 4, 8, 1, "hardbox_lost")
        .map_err(|e| fail("loss counter", e))?;
    let attempts = sys::bpf::create_map(
        sys::bpf::MAP_LRU_HASH,
        8,
        programs::ATTEMPT_SIZE,
        ATTEMPTS,
        "hardbox_attempt",
    )
    .map_err(|e| fail("exec attempts map", e))?;
    let maps = Maps {
        config: config.as_raw_fd(),
        attempts: attempts.as_raw_fd(),
        ring: ring.map().as_raw_fd(),
        scratch: scratch.as_raw_fd(),
        lost: lost.as_raw_fd(),
    };
    let load = |name: &str, code: Result<Vec<sys::bpf::Instruction>, String>| {
        let code = code.map_err(EbpfError)?;
        sys::bpf::load_program(sys::bpf::PROGRAM_RAW_TRACEPOINT, &code, name).map_err(|e| {
            let lines: Vec<&str> = e.log.lines().collect();
            let tail = lines[lines.len().saturating_sub(12)..].join("\n");
            EbpfError(format!(
                "the kernel refused the {name} program ({}):\n{tail}",
                e.errno
            ))
        })
    };
    let exec = load("hardbox_exec", programs::exec_program(&offsets, maps))?;
    let exit = load("hardbox_exit", programs::exit_program(&offsets, maps))?;
    let attempt = load("hardbox_try", programs::attempt_program(&offsets, maps))?;
    let failed = load(
        "hardbox_failed",
        programs::failed_exec_program(&offsets, maps),
    )?;
    // Attached now, before there is a namespace to keep (until then the programs keep
    // nothing), so that a kernel that refuses the attachment is known before the sandbox
    // starts.
    let attach = |program: &OwnedFd, name: &str| {
        sys::bpf::attach_raw_tracepoint(program.as_fd(), name)
            .map_err(|e| fail(&format!("attaching to {name}"), e))
    };
    // Exits first, and an attempt's result before the attempt: nothing is half seen.
    let attached = vec![
        attach(&exit, "sched_process_exit")?,
        attach(&failed, "sys_exit")?,
        attach(&attempt, "sys_enter")?,
        attach(&exec, "sched_process_exec")?,
    ];
    Ok(PreparedEbpf {
        ring,
        attempts,
        attached,
        attempt,
        failed,
        config,
        scratch,
        lost,
        exec,
        exit,
    })
}

impl PreparedEbpf {
    /// Keeps the pid namespace of `pid_namespace` (an open `/proc/PID/ns/pid`) and starts the
    /// thread, named `exec-tracer`, that records into `recorder`.
    pub fn start(
        self,
        pid_namespace: &OwnedFd,
        recorder: Recorder,
        options: TraceOptions,
    ) -> Result<TracerHandle, EbpfError> {
        let stat = rustix::fs::fstat(pid_namespace).map_err(|e| fail("pid namespace", e))?;
        let mut config = [0u8; programs::CONFIG_SIZE as usize];
        config[..8].copy_from_slice(&stat.st_dev.to_ne_bytes());
        config[8..].copy_from_slice(&stat.st_ino.to_ne_bytes());
        let started = sys::bpf::monotonic_ns();
        // From here the attached programs keep the namespace's processes.
        sys::bpf::update(self.config.as_fd(), 0, &config).map_err(|e| fail("config map", e))?;
        let ring = self.ring;
        let setup = || -> io::Result<(OwnedFd, OwnedFd, OwnedFd)> {
            let stop = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
            let stop_for_thread = stop.try_clone()?;
            let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
            epoll::add(&epoll, ring.map(), EventData::new_u64(RING), EventFlags::IN)?;
            epoll::add(
                &epoll,
                &stop_for_thread,
                EventData::new_u64(STOP),
                EventFlags::IN,
            )?;
            Ok((stop, stop_for_thread, epoll))
        };
        let (stop, stop_for_thread, epoll) =
            setup().map_err(|e| EbpfError(format!("tracer setup: {e}")))?;
        let tracer = Reader {
            ring,
            lost_map: self.lost,
            _kept: [
                self.config,
                self.scratch,
                self.exec,
                self.exit,
                self.attempts,
                self.attempt,
                self.failed,
            ],
            attached: self.attached,
            started,
            realtime_offset: realtime_offset(),
            epoll,
            stop: stop_for_thread,
            batch: Batch::new(recorder),
            options,
            execs_at: HashMap::new(),
            execs: 0,
            exits: 0,
            reported_losses: 0,
        };
        let thread = std::thread::Builder::new()
            .name("exec-tracer".to_owned())
            .spawn(move || tracer.run())
            .map_err(|e| EbpfError(format!("tracer thread: {e}")))?;
        Ok(TracerHandle::new(stop, thread))
    }
}

/// [`prepare_ebpf`], then [`PreparedEbpf::start`].
pub fn spawn_ebpf(
    pid_namespace: &OwnedFd,
    recorder: Recorder,
    options: TraceOptions,
) -> Result<TracerHandle, EbpfError> {
    prepare_ebpf()?.start(pid_namespace, recorder, options)
}

/// The most exec attempts under way at once that are remembered (an exec by a thread other
/// than the leader leaves its entry behind, which the least recently used order evicts).
const ATTEMPTS: u32 = 4096;

/// CLOCK_REALTIME minus CLOCK_MONOTONIC now, in ns.
fn realtime_offset() -> u64 {
    let realtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        });
    realtime.saturating_sub(sys::bpf::monotonic_ns())
}

const RING: u64 = 0;
const STOP: u64 = 1;

struct Reader {
    ring: RingBuffer,
    lost_map: OwnedFd,
    /// The maps and the programs, alive while attached.
    _kept: [OwnedFd; 7],
    attached: Vec<RawTracepoint>,
    /// When the programs were attached (CLOCK_MONOTONIC ns).
    started: u64,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, in ns: events are stamped with when the kernel
    /// saw them, not when they were read.
    realtime_offset: u64,
    epoll: OwnedFd,
    stop: OwnedFd,
    options: TraceOptions,
    /// The last exec of each process (by tgid in the namespace), in CLOCK_MONOTONIC ns.
    execs_at: HashMap<u32, u64>,
    batch: Batch,
    execs: u64,
    exits: u64,
    /// Records the programs dropped, as last reported.
    reported_losses: u64,
}

impl Reader {
    fn run(mut self) -> TraceStats {
        let stopped_by = self.serve();
        // Detach, then take what the programs wrote before.
        self.attached.clear();
        self.drain();
        self.flush();
        self.report_losses();
        self.batch.flush();
        TraceStats {
            execs: self.execs,
            exits: self.exits,
            lost: self.batch.lost + self.reported_losses,
            stopped_by,
        }
    }

    fn serve(&mut self) -> StopReason {
        let empty = epoll::Event {
            flags: EventFlags::empty(),
            data: EventData::new_u64(0),
        };
        let mut ready = [empty; 4];
        loop {
            let timeout = self.batch.wait().map(|delay| rustix::event::Timespec {
                tv_sec: 0,
                // Below BATCH_DELAY: fits and stays under a second.
                tv_nsec: i64::from(delay.subsec_nanos()),
            });
            let count = match epoll::wait(&self.epoll, &mut ready[..], timeout.as_ref()) {
                Ok(count) => count,
                Err(Errno::INTR) => continue,
                Err(errno) => return StopReason::Failed(errno),
            };
            if ready[..count].iter().any(|e| e.data.u64() == STOP) {
                return StopReason::Requested;
            }
            let drained = self.drain();
            if self.batch.is_due() {
                self.flush();
            }
            if drained > 1 {
                // A burst: let records gather for a while rather than waking for each one
                // (the kernel wakes the reader only when it had caught up). A stop request
                // ends the pause.
                let delay = rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: i64::from(PAUSE.subsec_nanos()),
                };
                let mut stop = [rustix::event::PollFd::new(
                    &self.stop,
                    rustix::event::PollFlags::IN,
                )];
                let _ = rustix::event::poll(&mut stop, Some(&delay));
            }
        }
    }

    /// Records everything in the ring buffer; returns how many records there were.
    fn drain(&mut self) -> usize {
        let mut records = Vec::new();
        let count = self.ring.consume(|data| records.push(data.to_vec()));
        for record in records {
            self.handle(&record);
        }
        count
    }

    fn handle(&mut self, record: &[u8]) {
        let kind = u32_at(record, 0);
        if kind == programs::KIND_EXEC {
            if let Some(exec) = parse_exec(record, &self.options) {
                self.execs_at.insert(exec.1, exec.2);
                self.execs += 1;
                let event = exec_event(exec.0, &self.options).at(exec.2 + self.realtime_offset);
                self.batch.push(event);
            }
        } else if kind == programs::KIND_FAILED_EXEC {
            if let Some((mut exec, _, at)) = parse_exec(record, &self.options) {
                exec.execveat = u32_at(record, 52) == 1;
                let errno = sys::Errno::from_raw_os_error(u32_at(record, 28) as i32);
                self.execs += 1;
                let event = exec_event(exec, &self.options)
                    .at(at + self.realtime_offset)
                    .with(
                        events::ATTR_ERROR_TYPE,
                        sys::errno::name(errno).unwrap_or("unknown"),
                    );
                self.batch.push(event);
            }
        } else if kind == programs::KIND_EXIT && record.len() >= programs::EXIT_RECORD {
            let tgid = u32_at(record, 4);
            let at = u64_at(record, 16);
            let status = u32_at(record, 28);
            let start = u64_at(record, 32);
            let exec_at = self.execs_at.remove(&tgid);
            if exec_at.is_none() && start < self.started {
                // Started before the tracer and never exec'd under it.
                return;
            }
            let since = exec_at.unwrap_or(start);
            let duration = at.saturating_sub(since) as f64 / 1e6;
            self.exits += 1;
            let event =
                exit_event(tgid, duration, Some(status as i32)).at(at + self.realtime_offset);
            self.batch.push(event);
        }
    }

    /// Records a [`events::SENSOR_LOSS`] event for records the programs dropped since the
    /// last report (the ring buffer was full).
    fn report_losses(&mut self) {
        let dropped = self.program_losses();
        if dropped > self.reported_losses {
            let count = dropped - self.reported_losses;
            self.reported_losses = dropped;
            let event = Event::new(events::SENSOR_LOSS)
                .severity(events::Severity::Warn)
                .with(events::ATTR_SENSOR_NAME, self.batch.sensor())
                .with(events::ATTR_ERROR_TYPE, "ring_buffer_full")
                .with(
                    events::ATTR_LOST_COUNT,
                    i64::try_from(count).unwrap_or(i64::MAX),
                );
            self.batch.push(event);
        }
    }

    fn flush(&mut self) {
        if self.batch.is_full() {
            // Under load: the programs' loss counter is read once per full batch.
            self.report_losses();
        }
        self.batch.flush();
    }

    /// Records the programs could not write for want of room.
    fn program_losses(&self) -> u64 {
        let mut value = [0u8; 8];
        match sys::bpf::lookup(self.lost_map.as_fd(), 0, &mut value) {
            Ok(()) => u64::from_ne_bytes(value),
            Err(_) => 0,
        }
    }
}

/// How long the reader lets records gather after a burst.
const PAUSE: Duration = Duration::from_millis(5);

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes.get(at..at + 8).map_or(0, |b| {
        let mut word = [0u8; 8];
        word.copy_from_slice(b);
        u64::from_ne_bytes(word)
    })
}

/// An exec record as an event's contents, the process's tgid and the exec's time.
fn parse_exec(record: &[u8], options: &TraceOptions) -> Option<(ExecRecord, u32, u64)> {
    if record.len() < programs::HEADER {
        return None;
    }
    let tgid = u32_at(record, 4);
    let parent_pid = u32_at(record, 12);
    let at = u64_at(record, 16);
    let path_len = u32_at(record, 32) as usize;
    let args_len = u32_at(record, 36) as usize;
    let args_total = u32_at(record, 40) as usize;
    let cwd_end = u32_at(record, 48);
    let path_start = programs::HEADER;
    let args_start = path_start + path_len;
    let cwd_start = args_start + args_len;
    let path = record.get(path_start..args_start)?;
    let argv = record.get(args_start..cwd_start)?;
    let cwd = record.get(cwd_start..)?;
    let mut incomplete = false;
    // Up to its NUL: a failed exec's path has a fixed region.
    let path = path.split(|&b| b == 0).next().unwrap_or(path);
    let path = if path.is_empty() {
        incomplete = true;
        None
    } else {
        Some(String::from_utf8_lossy(path).into_owned())
    };
    if args_len == 0 && args_total > 0 {
        incomplete = true;
    }
    let arguments = split_arguments(argv, args_total > args_len, options);
    let working_directory = match cwd_end {
        programs::CWD_ROOT => Some(join_components(cwd)),
        // A directory outside the process's root (or too deep to walk): not a path it
        // could use.
        _ => {
            incomplete = true;
            None
        }
    };
    Some((
        ExecRecord {
            pid: tgid,
            parent_pid,
            path,
            arguments,
            working_directory,
            execveat: false,
            incomplete,
        },
        tgid,
        at,
    ))
}

/// argv strings as the events record them: cut at the byte limit, or redacted.
fn split_arguments(argv: &[u8], cut: bool, options: &TraceOptions) -> Arguments {
    let mut result = Arguments::default();
    let argv = argv.strip_suffix(b"\0").unwrap_or(argv);
    if argv.is_empty() {
        result.truncated = cut;
        return result;
    }
    let mut values = argv.split(|&b| b == 0);
    if options.redact_arguments {
        if let Some(first) = values.next() {
            result
                .values
                .push(String::from_utf8_lossy(first).into_owned());
        }
        result.more = values.next().is_some() || cut;
        return result;
    }
    let mut budget = options.max_argument_bytes;
    for value in values {
        if value.len() > budget {
            result
                .values
                .push(String::from_utf8_lossy(&value[..budget]).into_owned());
            result.truncated = true;
            return result;
        }
        budget -= value.len();
        result
            .values
            .push(String::from_utf8_lossy(value).into_owned());
    }
    result.truncated = cut;
    result
}

/// A working directory from its components, leaf first, each ended by a NUL.
fn join_components(cwd: &[u8]) -> String {
    let cwd = cwd.strip_suffix(b"\0").unwrap_or(cwd);
    if cwd.is_empty() {
        return "/".to_owned();
    }
    let mut path = Vec::new();
    for component in cwd.split(|&b| b == 0).rev() {
        path.push(b'/');
        path.extend_from_slice(component);
    }
    String::from_utf8_lossy(&path).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_join_root_first() {
        assert_eq!(join_components(b""), "/");
        assert_eq!(join_components(b"work\0"), "/work");
        assert_eq!(join_components(b"c\0b\0a\0"), "/a/b/c");
    }

    #[test]
    fn arguments_are_cut_at_the_byte_limit_or_redacted() {
        let options = TraceOptions {
            redact_arguments: false,
            max_argument_bytes: 6,
        };
        let args = split_arguments(b"sh\0-c\0echo\0", false, &options);
        assert_eq!(args.values, ["sh", "-c", "ec"]);
        assert!(args.truncated);
        let args = split_arguments(b"sh\0-c\0", false, &options);
        assert_eq!(args.values, ["sh", "-c"]);
        assert!(!args.truncated);
        let args = split_arguments(b"sh\0-c\0", true, &options);
        assert!(args.truncated);
        let redacted = TraceOptions {
            redact_arguments: true,
            ..options
        };
        let args = split_arguments(b"curl\0-H\0secret\0", false, &redacted);
        assert_eq!(args.values, ["curl"]);
        assert!(args.more);
    }
}
