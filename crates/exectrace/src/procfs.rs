//! What the tracer reads from `/proc` about a notifying process: thread-group id and pid in the
//! sandbox's pid namespace, parent, links (cwd, root, fds) and the exit status of a zombie.
//!
//! Why a module: the parsing is pure and unit-tested here; the reads go through one `/proc`
//! descriptor and reusable buffers, so a notification costs no allocation of its own beyond
//! the strings it records.
//!
//! What it guarantees: pids are parsed from the kernel's text or reported missing, never
//! guessed; paths are presented as the sandbox sees them (see [`sandbox_view`]).

use std::fmt::Write as _;
use std::os::fd::OwnedFd;

use rustix::fs::{Mode, OFlags};
use sys::Errno;

/// What `/proc/TID/status` says about a thread's process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Status {
    /// The thread-group id (the process's pid) in the tracer's pid namespace.
    pub tgid: u32,
    /// The process's pid in its own (innermost) pid namespace: the last field of `NStgid`.
    pub sandbox_pid: u32,
    /// How many pid namespaces the process is visible in (fields of `NStgid`).
    pub levels: usize,
    /// The parent's pid in the tracer's pid namespace (0 if it has none visible there).
    pub parent: u32,
}

/// Parses the `Tgid`, `NStgid` and `PPid` lines of `/proc/PID/status`. Kernels before 4.1
/// have no `NStgid`; the process then counts as visible in one namespace with pid `Tgid`.
pub(crate) fn parse_status(text: &[u8]) -> Option<Status> {
    let mut tgid = None;
    let mut parent = None;
    let mut namespaced: Option<(u32, usize)> = None;
    for line in text.split(|&b| b == b'\n') {
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (key, value) = (&line[..colon], &line[colon + 1..]);
        let mut fields = value
            .split(|b| b.is_ascii_whitespace())
            .filter(|field| !field.is_empty())
            .map(|field| std::str::from_utf8(field).ok()?.parse::<u32>().ok());
        match key {
            b"Tgid" => tgid = fields.next().flatten(),
            b"PPid" => parent = fields.next().flatten(),
            b"NStgid" => {
                let mut last = None;
                let mut count = 0;
                for field in fields {
                    last = Some(field?);
                    count += 1;
                }
                namespaced = last.map(|pid| (pid, count));
            }
            _ => {}
        }
    }
    let tgid = tgid?;
    let (sandbox_pid, levels) = namespaced.unwrap_or((tgid, 1));
    Some(Status {
        tgid,
        sandbox_pid,
        levels,
        parent: parent?,
    })
}

/// The `NSpid` line of a pidfd's `/proc/self/fdinfo/FD`: the process's pid in its innermost
/// pid namespace (the last field) and how many namespaces (seen from the reader's) hold it.
pub(crate) fn parse_fdinfo_pid(text: &[u8]) -> Option<(u32, usize)> {
    let line = text
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"NSpid:"))?;
    let mut last = None;
    let mut count = 0;
    for field in line
        .split(|b| b.is_ascii_whitespace())
        .filter(|field| !field.is_empty())
    {
        let pid: i64 = std::str::from_utf8(field).ok()?.parse().ok()?;
        // -1 (or 0) once the process is gone.
        last = Some(u32::try_from(pid).ok().filter(|&pid| pid > 0)?);
        count += 1;
    }
    last.map(|pid| (pid, count))
}

/// The `exit_code` field (52) of `/proc/PID/stat`: the wait status of an exited process (0
/// while it runs, or when the reader may not see it).
pub(crate) fn parse_stat_exit_code(text: &[u8]) -> Option<i32> {
    // The command name (field 2) is in parentheses and may contain anything, ')' included.
    let close = memchr::memrchr(b')', text)?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    // Field 3 (state) is the first after the name.
    rest.split_ascii_whitespace().nth(52 - 3)?.parse().ok()
}

/// `path` as the process whose root directory is `root` sees it, both read as links of
/// `/proc/PID/` by the tracer.
///
/// The kernel writes these links relative to the reader's root when the target is reachable
/// from it (the same mount namespace: the process's root is then a prefix, e.g. a chroot), and
/// relative to the root of the process's own mount namespace when it is not (a sandbox after
/// `pivot_root`: `root` is then `/`). Removing `root` gives the sandbox's view in both cases. A
/// path outside the process's root (a directory kept open across `chroot`) is returned as the
/// tracer sees it.
pub(crate) fn sandbox_view(root: &[u8], path: &[u8]) -> Vec<u8> {
    if root == b"/" {
        return path.to_vec();
    }
    match path.strip_prefix(root) {
        Some([]) => b"/".to_vec(),
        Some(rest) if rest.first() == Some(&b'/') => rest.to_vec(),
        _ => path.to_vec(),
    }
}

/// Reads of `/proc` through one directory descriptor and reusable buffers.
pub(crate) struct Proc {
    dir: OwnedFd,
    /// `/proc/self/fdinfo` of the tracer's process.
    fdinfo: OwnedFd,
    path: String,
    buffer: Vec<u8>,
}

const BUFFER: usize = 16 * 1024;

impl Proc {
    /// Opens `/proc` (the tracer's, whose pids are the notifications' pids).
    pub(crate) fn open() -> Result<Proc, Errno> {
        let dir = rustix::fs::open(
            "/proc",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let fdinfo = rustix::fs::openat(
            &dir,
            "self/fdinfo",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Proc {
            dir,
            fdinfo,
            path: String::with_capacity(64),
            buffer: vec![0; BUFFER],
        })
    }

    /// Reads `/proc/PID/NAME` (up to 16 KiB) into the buffer; returns its length. Paths from
    /// the `/proc` descriptor, not a `/proc/PID` descriptor per process: a notification reads
    /// one or two of its files, and opening (and closing) the directory first would cost two
    /// more syscalls. One read: the files read here are generated whole by one `read`.
    fn read(&mut self, pid: u32, name: &str) -> Result<usize, Errno> {
        self.path.clear();
        // Writing to a String cannot fail.
        let _ = write!(self.path, "{pid}/{name}");
        let file = rustix::fs::openat(
            &self.dir,
            self.path.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )?;
        read_once(&file, &mut self.buffer)
    }

    /// The status of thread `tid`.
    pub(crate) fn status(&mut self, tid: u32) -> Result<Status, Errno> {
        let length = self.read(tid, "status")?;
        parse_status(&self.buffer[..length]).ok_or(Errno::INVAL)
    }

    /// The pid in its innermost pid namespace, and the number of levels, of the process of
    /// `pidfd` (from the pidfd's fdinfo, which the kernel writes with little work, unlike a
    /// process's `status`).
    pub(crate) fn pidfd_sandbox_pid(&mut self, pidfd: &OwnedFd) -> Result<(u32, usize), Errno> {
        use std::os::fd::AsRawFd as _;
        self.path.clear();
        // Writing to a String cannot fail.
        let _ = write!(self.path, "{}", pidfd.as_raw_fd());
        let file = rustix::fs::openat(
            &self.fdinfo,
            self.path.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )?;
        let length = read_once(&file, &mut self.buffer)?;
        parse_fdinfo_pid(&self.buffer[..length]).ok_or(Errno::SRCH)
    }

    /// The wait status of process `pid` from its `stat` (meaningful once it exited).
    pub(crate) fn exit_status(&mut self, pid: u32) -> Result<i32, Errno> {
        let length = self.read(pid, "stat")?;
        parse_stat_exit_code(&self.buffer[..length]).ok_or(Errno::INVAL)
    }

    /// The target of the link `/proc/PID/NAME` (`cwd`, `root`, `fd/3`).
    pub(crate) fn link(&mut self, pid: u32, name: &str) -> Result<Vec<u8>, Errno> {
        self.path.clear();
        // Writing to a String cannot fail.
        let _ = write!(self.path, "{pid}/{name}");
        let target = rustix::fs::readlinkat(&self.dir, self.path.as_str(), Vec::new())?;
        Ok(target.into_bytes())
    }

    /// The link `/proc/PID/NAME` as process `pid` sees it: relative to its own root.
    pub(crate) fn link_in_sandbox(&mut self, pid: u32, name: &str) -> Result<Vec<u8>, Errno> {
        let path = self.link(pid, name)?;
        let root = self.link(pid, "root")?;
        Ok(sandbox_view(&root, &path))
    }
}

/// One `read` of a `/proc` file into `buffer`. The kernel generates `status`, `stat` and a
/// pidfd's `fdinfo` whole on the first read when the buffer holds them (they are far smaller
/// than [`BUFFER`]), so a second read, which would only confirm the end, is not made; a file
/// that filled the buffer is refused rather than parsed cut.
fn read_once(file: &OwnedFd, buffer: &mut [u8]) -> Result<usize, Errno> {
    loop {
        match rustix::io::read(file, &mut *buffer) {
            Ok(length) if length < buffer.len() => return Ok(length),
            Ok(_) => return Err(Errno::FBIG),
            Err(Errno::INTR) => {}
            Err(errno) => return Err(errno),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &[u8] = b"Name:\tsh\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n\
Ngid:\t0\nPid:\t4243\nPPid:\t4000\nTracerPid:\t0\nNStgid:\t4242\t7\nNSpid:\t4243\t8\n";

    #[test]
    fn status_gives_the_innermost_pid_and_the_number_of_levels() {
        assert_eq!(
            parse_status(STATUS),
            Some(Status {
                tgid: 4242,
                sandbox_pid: 7,
                levels: 2,
                parent: 4000
            })
        );
    }

    #[test]
    fn status_without_nstgid_uses_tgid() {
        let text = b"Tgid:\t10\nPid:\t10\nPPid:\t1\n";
        assert_eq!(
            parse_status(text),
            Some(Status {
                tgid: 10,
                sandbox_pid: 10,
                levels: 1,
                parent: 1
            })
        );
        assert_eq!(parse_status(b"Name:\tx\n"), None);
    }

    #[test]
    fn fdinfo_gives_the_innermost_pid_of_a_pidfd() {
        let text = b"pos:\t0\nflags:\t02000002\nmnt_id:\t4\nino:\t7\nPid:\t4242\nNSpid:\t4242\t7\n";
        assert_eq!(parse_fdinfo_pid(text), Some((7, 2)));
        assert_eq!(parse_fdinfo_pid(b"Pid:\t-1\nNSpid:\t-1\n"), None);
        assert_eq!(parse_fdinfo_pid(b"Pid:\t10\n"), None);
        let mut proc = Proc::open().unwrap_or_else(|e| panic!("{e}"));
        let pidfd = sys::notify::pidfd_open(std::process::id()).unwrap_or_else(|e| panic!("{e}"));
        let (pid, _) = proc
            .pidfd_sandbox_pid(&pidfd)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pid, std::process::id());
    }

    #[test]
    fn stat_exit_code_survives_parentheses_in_the_command_name() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[0] = "Z".to_owned();
        fields[52 - 3] = "9".to_owned();
        let text = format!("77 (a) b (c)) {}\n", fields.join(" "));
        assert_eq!(parse_stat_exit_code(text.as_bytes()), Some(9));
        assert_eq!(parse_stat_exit_code(b"77 (a) Z 1 2"), None);
    }

    #[test]
    fn paths_are_shown_relative_to_the_process_root() {
        let check = |root: &str, path: &str, expected: &str| {
            assert_eq!(
                String::from_utf8(sandbox_view(root.as_bytes(), path.as_bytes())).ok(),
                Some(expected.to_owned()),
                "{root} {path}"
            );
        };
        check("/", "/work/dir", "/work/dir");
        check("/srv/root", "/srv/root/work", "/work");
        check("/srv/root", "/srv/root", "/");
        check("/srv/root", "/srv/rootless/x", "/srv/rootless/x");
        check("/srv/root", "/elsewhere", "/elsewhere");
    }

    #[test]
    fn reads_its_own_status() {
        let mut proc = Proc::open().unwrap_or_else(|e| panic!("{e}"));
        let status = proc
            .status(std::process::id())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status.tgid, std::process::id());
        assert_eq!(proc.exit_status(std::process::id()), Ok(0));
        let cwd = proc
            .link_in_sandbox(std::process::id(), "cwd")
            .unwrap_or_else(|e| panic!("{e}"));
        let expected = std::env::current_dir().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cwd, expected.as_os_str().as_encoded_bytes());
    }
}
