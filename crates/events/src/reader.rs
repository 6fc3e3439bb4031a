//! Reading a spool: every event from the start or `since` a sequence number or a time, and
//! optionally `follow`ing the file as the writer appends.
//!
//! A reader yields whole lines only: bytes after the last newline are a line being written (or
//! torn by a crash, which the next [`crate::Spool::open`] truncates); a follower waits for the
//! rest, and notices when a reopening spool truncated a torn tail away.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::event::Event;
use crate::spool::SPOOL_FILE;

/// Where reading starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Since {
    /// Every event.
    #[default]
    Start,
    /// Events whose sequence number is at least this.
    Sequence(u64),
    /// Events whose time (ns since the Unix epoch) is at least this.
    TimeUnixNano(u64),
}

/// Errors of reading a spool. After a `Corrupt` or `OutOfOrder` error the reader goes on with
/// the next line.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The spool could not be opened or read.
    #[error("failed to {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The spool file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A line is not an event.
    #[error("{path}: line {line} is not an event")]
    Corrupt {
        /// The spool file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A line's sequence number does not follow the previous line's.
    #[error("{path}: line {line} has sequence {sequence}, not after {previous}")]
    OutOfOrder {
        /// The spool file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// Its sequence number.
        sequence: u64,
        /// The previous line's.
        previous: u64,
    },
}

/// Ends a following reader from another thread: the reader still returns what the file holds,
/// then `None` at its end instead of waiting for more.
#[derive(Debug, Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Stops the reader.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// An iterator over the events of a spool.
#[derive(Debug)]
pub struct Reader {
    path: PathBuf,
    file: File,
    /// Bytes read from the file so far.
    offset: u64,
    /// Read bytes not yet split into lines (at most a partial line once lines are taken).
    pending: Vec<u8>,
    /// Lines taken so far.
    line: u64,
    previous: Option<u64>,
    /// A partial line was held at the end of the file: check it is still there once whole.
    suspect: bool,
    since: Since,
    follow: Option<Duration>,
    stop: StopHandle,
}

impl Reader {
    /// Opens the spool in directory `dir` (the directory given to [`crate::Spool::open`]).
    pub fn open(dir: &Path) -> Result<Reader, ReadError> {
        Reader::open_file(&dir.join(SPOOL_FILE))
    }

    /// Opens a spool file by its own path.
    pub fn open_file(path: &Path) -> Result<Reader, ReadError> {
        let file = File::open(path).map_err(|source| ReadError::Io {
            action: "open",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Reader {
            path: path.to_path_buf(),
            file,
            offset: 0,
            pending: Vec::new(),
            line: 0,
            previous: None,
            suspect: false,
            since: Since::Start,
            follow: None,
            stop: StopHandle::default(),
        })
    }

    /// Skips events before `since`.
    #[must_use]
    pub fn since(mut self, since: Since) -> Reader {
        self.since = since;
        self
    }

    /// At the end of the file, waits for more, looking every `poll`, until stopped through
    /// [`Reader::stop_handle`].
    #[must_use]
    pub fn follow(mut self, poll: Duration) -> Reader {
        self.follow = Some(poll);
        self
    }

    /// A handle that ends a following reader.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, action: &'static str) -> impl FnOnce(io::Error) -> ReadError + '_ {
        move |source| ReadError::Io {
            action,
            path: self.path.clone(),
            source,
        }
    }

    /// Whether the first `n` pending bytes are still what the file holds where they were read.
    fn still_in_file(&self, n: usize) -> bool {
        let start = self.offset - self.pending.len() as u64;
        let mut now = vec![0u8; n];
        self.file.read_exact_at(&mut now, start).is_ok() && now == self.pending[..n]
    }

    fn next_line(&mut self) -> Option<Result<Vec<u8>, ReadError>> {
        let mut buf = [0u8; 16 * 1024];
        let mut scanned = 0;
        loop {
            if let Some(i) = self.pending[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i;
                if std::mem::take(&mut self.suspect) && !self.still_in_file(end + 1) {
                    // The partial line we held was torn and truncated away, and new lines
                    // took its place: read again from where it started.
                    let start = self.offset - self.pending.len() as u64;
                    if let Err(e) = self.file.seek(SeekFrom::Start(start)) {
                        return Some(Err((self.io("seek"))(e)));
                    }
                    self.offset = start;
                    self.pending.clear();
                    scanned = 0;
                    continue;
                }
                let mut line: Vec<u8> = self.pending.drain(..=end).collect();
                line.pop();
                self.line += 1;
                return Some(Ok(line));
            }
            scanned = self.pending.len();
            let n = match self.file.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Some(Err((self.io("read"))(e))),
            };
            if n > 0 {
                self.pending.extend_from_slice(&buf[..n]);
                self.offset += n as u64;
                continue;
            }
            // End of file; `pending` holds at most a partial line. A stopped reader ends here,
            // after every event written before the stop, so nothing already recorded is lost.
            let poll = self.follow?;
            if self.stop.stopped() {
                return None;
            }
            if !self.pending.is_empty() {
                self.suspect = true;
            }
            let len = match self.file.metadata() {
                Ok(m) => m.len(),
                Err(e) => return Some(Err((self.io("read"))(e))),
            };
            if len < self.offset {
                // A reopened spool truncated the torn line we were holding.
                let keep = self.offset - self.pending.len() as u64;
                if let Err(e) = self.file.seek(SeekFrom::Start(keep)) {
                    return Some(Err((self.io("seek"))(e)));
                }
                self.offset = keep;
                self.pending.clear();
                scanned = 0;
                continue;
            }
            std::thread::sleep(poll);
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Event, ReadError>;

    fn next(&mut self) -> Option<Result<Event, ReadError>> {
        loop {
            let line = match self.next_line()? {
                Ok(line) => line,
                Err(e) => return Some(Err(e)),
            };
            let event: Event = match serde_json::from_slice(&line) {
                Ok(event) => event,
                Err(source) => {
                    return Some(Err(ReadError::Corrupt {
                        path: self.path.clone(),
                        line: self.line,
                        source,
                    }))
                }
            };
            if let Some(previous) = self.previous.replace(event.sequence) {
                if event.sequence <= previous {
                    return Some(Err(ReadError::OutOfOrder {
                        path: self.path.clone(),
                        line: self.line,
                        sequence: event.sequence,
                        previous,
                    }));
                }
            }
            let wanted = match self.since {
                Since::Start => true,
                Since::Sequence(n) => event.sequence >= n,
                Since::TimeUnixNano(t) => event.time_unix_nano >= t,
            };
            if wanted {
                return Some(Ok(event));
            }
        }
    }
}
