//! Reading a notifying process's exec arguments from its memory: the path string, the argv
//! pointer array and the strings it points to.
//!
//! Why a module: `execve`'s arguments are pointers into the caller's address space; reading
//! them one `process_vm_readv` per string would cost a syscall per argument. [`Memory`] keeps
//! a window of the last memory read, so strings that lie together (as a shell builds them) are
//! read with one call.
//!
//! What it guarantees: bounded work per notification (strings stop at their byte limit, the
//! pointer array at [`MAX_ARGUMENTS`]); a read that fails part-way returns what was read with
//! `complete == false` rather than nothing. The values are what the process's memory held when
//! the tracer read it: another thread of the process could change them before the kernel does
//! (an inherent limit of seccomp notification; the event is an audit record, not a decision).

use sys::Errno;

/// How many bytes one read of the window fetches: a shell's argv fits, and the read pins at
/// most two pages.
const WINDOW: usize = 4096;
/// The most argv entries read, whatever the byte limit (the kernel's own limit is far higher,
/// but 2 MiB of strings holds at most this many non-empty ones per 32 bytes).
pub(crate) const MAX_ARGUMENTS: usize = 65_536;
/// Size of a pointer in the traced process (both supported architectures are 64-bit).
const POINTER: usize = 8;

/// A window onto another process's memory.
pub(crate) struct Memory {
    pid: u32,
    window: Vec<u8>,
    base: u64,
    length: usize,
}

/// Argv as read.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Arguments {
    pub values: Vec<String>,
    /// Cut at the byte limit (or at [`MAX_ARGUMENTS`]).
    pub truncated: bool,
    /// Part of it could not be read.
    pub incomplete: bool,
    /// More entries follow the ones read (when reading stopped early on purpose).
    pub more: bool,
}

impl Memory {
    pub(crate) fn new() -> Memory {
        Memory {
            pid: 0,
            window: vec![0; WINDOW],
            base: 0,
            length: 0,
        }
    }

    /// Starts reading process `pid` (forgets the window).
    pub(crate) fn attach(&mut self, pid: u32) {
        self.pid = pid;
        self.length = 0;
        self.base = 0;
    }

    /// The bytes from `address` to the end of the window, reading a new window at `address`
    /// when it is not covered. `EFAULT` when nothing is mapped there.
    fn view(&mut self, address: u64) -> Result<&[u8], Errno> {
        let covered = address >= self.base
            && usize::try_from(address - self.base).is_ok_and(|offset| offset < self.length);
        if !covered {
            self.length = 0;
            let read = sys::notify::read_process_memory(self.pid, address, &mut self.window)?;
            if read == 0 {
                return Err(Errno::FAULT);
            }
            self.base = address;
            self.length = read;
        }
        let offset = usize::try_from(address - self.base).map_err(|_| Errno::FAULT)?;
        Ok(&self.window[offset..self.length])
    }

    /// The NUL-terminated string at `address`, at most `limit` bytes of it. Returns the bytes
    /// and whether the string was longer than `limit`. `EFAULT` if its start is unreadable; an
    /// unreadable middle gives what was read before it, with the error.
    pub(crate) fn string(
        &mut self,
        address: u64,
        limit: usize,
    ) -> Result<(Vec<u8>, bool), (Vec<u8>, Errno)> {
        let mut out = Vec::new();
        let mut cursor = address;
        loop {
            let room = limit - out.len();
            let chunk = match self.view(cursor) {
                Ok(chunk) => chunk,
                Err(errno) => return Err((out, errno)),
            };
            if let Some(nul) = memchr::memchr(0, chunk) {
                let take = nul.min(room);
                out.extend_from_slice(&chunk[..take]);
                return Ok((out, nul > room));
            }
            if chunk.len() >= room {
                out.extend_from_slice(&chunk[..room]);
                return Ok((out, true));
            }
            out.extend_from_slice(chunk);
            cursor = match cursor.checked_add(chunk.len() as u64) {
                Some(next) => next,
                None => return Err((out, Errno::FAULT)),
            };
        }
    }

    /// The pointer at `address`.
    fn pointer(&mut self, address: u64) -> Result<u64, Errno> {
        let mut bytes = [0u8; POINTER];
        let mut filled = 0;
        while filled < POINTER {
            let chunk = self.view(address + filled as u64)?;
            let take = chunk.len().min(POINTER - filled);
            bytes[filled..filled + take].copy_from_slice(&chunk[..take]);
            filled += take;
        }
        Ok(u64::from_ne_bytes(bytes))
    }

    /// Up to `count` pointers of the NULL-terminated array at `address` (the NULL excluded),
    /// appended to `pointers`; returns whether the array ended (a NULL was read).
    pub(crate) fn pointers(
        &mut self,
        address: u64,
        count: usize,
        pointers: &mut Vec<u64>,
    ) -> Result<bool, Errno> {
        for index in 0..count {
            let offset = u64::try_from(index * POINTER).map_err(|_| Errno::FAULT)?;
            let at = address.checked_add(offset).ok_or(Errno::FAULT)?;
            match self.pointer(at)? {
                0 => return Ok(true),
                pointer => pointers.push(pointer),
            }
        }
        Ok(false)
    }
}

/// Reads argv of process `pid` at `argv` with at most `limit` bytes of strings in total; with
/// `first_only`, only argv\[0\] (and whether more entries follow).
pub(crate) fn arguments(
    pointers_memory: &mut Memory,
    strings_memory: &mut Memory,
    argv: u64,
    limit: usize,
    first_only: bool,
) -> Arguments {
    let mut result = Arguments::default();
    if argv == 0 {
        // Linux runs the program with an empty argv.
        return result;
    }
    let mut pointers = Vec::new();
    let wanted = if first_only { 2 } else { MAX_ARGUMENTS };
    let ended = match pointers_memory.pointers(argv, wanted, &mut pointers) {
        Ok(ended) => ended,
        Err(_) => {
            result.incomplete = true;
            true
        }
    };
    if first_only {
        result.more = pointers.len() > 1;
        pointers.truncate(1);
    } else if !ended {
        result.truncated = true;
    }
    let mut budget = limit;
    for pointer in pointers {
        if budget == 0 {
            result.truncated = true;
            break;
        }
        match strings_memory.string(pointer, budget) {
            Ok((bytes, cut)) => {
                budget -= bytes.len();
                result.values.push(lossy(bytes, &mut budget));
                if cut {
                    result.truncated = true;
                    break;
                }
            }
            Err((bytes, _)) => {
                result.incomplete = true;
                if !bytes.is_empty() {
                    budget = budget.saturating_sub(bytes.len());
                    result.values.push(lossy(bytes, &mut budget));
                }
                break;
            }
        }
    }
    result
}

/// The bytes as UTF-8, invalid sequences replaced (which may lengthen the text: the extra is
/// taken from `budget` as far as it goes).
fn lossy(bytes: Vec<u8>, budget: &mut usize) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            let raw = error.into_bytes();
            let text = String::from_utf8_lossy(&raw).into_owned();
            *budget = budget.saturating_sub(text.len().saturating_sub(raw.len()));
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A NULL-terminated argv of `strings`, with the owned storage it points into.
    fn argv(strings: &[&str]) -> (Vec<Vec<u8>>, Vec<u64>) {
        let storage: Vec<Vec<u8>> = strings
            .iter()
            .map(|s| {
                let mut bytes = s.as_bytes().to_vec();
                bytes.push(0);
                bytes
            })
            .collect();
        let mut pointers: Vec<u64> = storage.iter().map(|s| s.as_ptr() as u64).collect();
        pointers.push(0);
        (storage, pointers)
    }

    fn read(strings: &[&str], limit: usize, first_only: bool) -> Arguments {
        let (_storage, pointers) = argv(strings);
        let (mut a, mut b) = (Memory::new(), Memory::new());
        a.attach(std::process::id());
        b.attach(std::process::id());
        arguments(&mut a, &mut b, pointers.as_ptr() as u64, limit, first_only)
    }

    #[test]
    fn reads_argv_of_a_process() {
        let got = read(&["/bin/echo", "a", "b", ""], 1024, false);
        assert_eq!(got.values, ["/bin/echo", "a", "b", ""]);
        assert!(!got.truncated && !got.incomplete);
    }

    #[test]
    fn truncates_at_the_byte_limit() {
        let got = read(&["abcdef", "ghijkl", "mnop"], 9, false);
        assert_eq!(got.values, ["abcdef", "ghi"]);
        assert!(got.truncated);
        let got = read(&["abcdef", "ghi", "x"], 9, false);
        assert_eq!(got.values, ["abcdef", "ghi"]);
        assert!(got.truncated);
    }

    #[test]
    fn reads_only_the_first_entry_when_asked() {
        let got = read(&["sh", "-c", "secret"], 1024, true);
        assert_eq!(got.values, ["sh"]);
        assert!(got.more);
        let got = read(&["sh"], 1024, true);
        assert!(!got.more);
    }

    #[test]
    fn a_bad_pointer_gives_what_was_read_before_it() {
        let (_storage, mut pointers) = argv(&["ok", "lost"]);
        pointers[1] = 8; // the first page is never mapped
        let (mut a, mut b) = (Memory::new(), Memory::new());
        a.attach(std::process::id());
        b.attach(std::process::id());
        let got = arguments(&mut a, &mut b, pointers.as_ptr() as u64, 1024, false);
        assert_eq!(got.values, ["ok"]);
        assert!(got.incomplete);
    }

    #[test]
    fn long_strings_are_read_across_windows() {
        let long = "x".repeat(3 * WINDOW + 5);
        let got = read(&[&long, "y"], 4 * WINDOW, false);
        assert_eq!(got.values, [long.as_str(), "y"]);
    }
}
