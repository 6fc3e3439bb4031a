//! The per-sandbox spool: `events.jsonl`, an append-only file of one JSON event per line,
//! written by one thread fed through a bounded queue.
//!
//! Guarantees:
//! - [`Recorder::record`] never blocks: when the queue is full the event is dropped and counted
//!   against its sensor, and the writer writes a [`SENSOR_LOSS`] event with the count as soon as
//!   it runs again. Loss is never silent.
//! - Sequence numbers start at 1 and increase by one per line, across reopen.
//! - Each line goes to the file in one `write` of the whole line (the file is opened for
//!   appending). A line torn by a crash has no final newline; [`Spool::open`] truncates it away,
//!   so every line a reader sees is whole, and numbering continues after the last whole line.
//! - Written lines are `fsync`ed within [`SpoolOptions::fsync_interval`] (one `fsync` per
//!   interval at most, also when no further event comes) and on [`Spool::close`].
//! - One spool per directory: `events.lock` is held (`flock`) while the spool is open.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::event::{Event, Severity, Value, ATTR_LOST_COUNT, ATTR_SENSOR_NAME, SENSOR_LOSS};

/// The spool's file name inside the sandbox's event directory.
pub const SPOOL_FILE: &str = "events.jsonl";
/// The lock file held by the open spool.
pub const LOCK_FILE: &str = "events.lock";

/// A hook the writer calls with each event (sequence assigned) right before writing it.
pub type BeforeWrite = Arc<dyn Fn(&Event) + Send + Sync>;

/// How a spool queues and syncs.
#[derive(Clone)]
pub struct SpoolOptions {
    /// Events the queue holds before [`Recorder::record`] drops (at least 1).
    pub queue_capacity: usize,
    /// Longest time written data stays unsynced while events keep arriving; `Duration::ZERO`
    /// syncs after every line.
    pub fsync_interval: Duration,
    before_write: Option<BeforeWrite>,
}

impl Default for SpoolOptions {
    fn default() -> SpoolOptions {
        SpoolOptions {
            queue_capacity: 4096,
            fsync_interval: Duration::from_millis(1000),
            before_write: None,
        }
    }
}

impl std::fmt::Debug for SpoolOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolOptions")
            .field("queue_capacity", &self.queue_capacity)
            .field("fsync_interval", &self.fsync_interval)
            .field("before_write", &self.before_write.is_some())
            .finish()
    }
}

impl SpoolOptions {
    /// Sets the queue capacity.
    #[must_use]
    pub fn queue_capacity(mut self, capacity: usize) -> SpoolOptions {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// Sets the fsync interval.
    #[must_use]
    pub fn fsync_interval(mut self, interval: Duration) -> SpoolOptions {
        self.fsync_interval = interval;
        self
    }

    /// Has the writer thread call `hook` before each line it writes (instrumentation; tests use
    /// it to hold the writer while they fill the queue).
    #[must_use]
    pub fn before_write(mut self, hook: impl Fn(&Event) + Send + Sync + 'static) -> SpoolOptions {
        self.before_write = Some(Arc::new(hook));
        self
    }
}

/// Errors of opening, writing or closing a spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The directory or a file in it could not be created, opened, read or truncated.
    #[error("failed to {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another spool holds the directory.
    #[error("event spool {path} is already open elsewhere")]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// The last whole line of an existing spool is not an event.
    #[error("event spool {path}: line {line} is not an event")]
    Corrupt {
        /// The spool file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// An event could not be written; the spool stopped writing (later events were counted as
    /// lost).
    #[error("failed to write event {sequence} to {path}")]
    Write {
        /// The spool file.
        path: PathBuf,
        /// The sequence number the event would have had.
        sequence: u64,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Written data could not be synced.
    #[error("failed to sync {path} after event {sequence}")]
    Sync {
        /// The spool file.
        path: PathBuf,
        /// The last sequence number written.
        sequence: u64,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The writer thread panicked.
    #[error("the writer of event spool {path} panicked")]
    WriterPanicked {
        /// The spool file.
        path: PathBuf,
    },
}

/// What [`Spool::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes of a torn last line removed.
    pub truncated_bytes: u64,
    /// The sequence number of the next event.
    pub next_sequence: u64,
}

/// Totals of a closed spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolStats {
    /// Lines written by this spool (events and loss reports).
    pub written: u64,
    /// Events dropped by recorders (queue full, or spool closed) or after a write error.
    pub lost: u64,
    /// The sequence number the next event would get.
    pub next_sequence: u64,
}

/// Whether [`Recorder::record`] queued the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// In the queue; the writer will number and write it.
    Queued,
    /// Dropped and counted (queue full, or spool closed).
    Dropped,
}

enum Message {
    Event(Box<Event>),
    /// Makes the writer look at the loss counters.
    Wake,
    Close,
}

struct Sensor {
    name: String,
    /// Lost since the last loss event.
    pending: AtomicU64,
}

#[derive(Default)]
struct Shared {
    sensors: Mutex<Vec<Arc<Sensor>>>,
    lost: AtomicU64,
}

/// An open event spool; [`Spool::recorder`] hands out the cheap, cloneable handles that record.
pub struct Spool {
    path: PathBuf,
    sender: SyncSender<Message>,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<Result<WriterEnd, SpoolError>>>,
    recovery: Recovery,
    _lock: fsutil::Lock,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("path", &self.path)
            .field("recovery", &self.recovery)
            .finish_non_exhaustive()
    }
}

/// Records events of one sensor (the proxy, the exec tracker, …) into a spool.
#[derive(Clone)]
pub struct Recorder {
    sender: SyncSender<Message>,
    sensor: Arc<Sensor>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("sensor", &self.sensor.name)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Queues `event` for writing without ever blocking. Its `sequence` is assigned by the
    /// writer. When the queue is full the event is dropped and counted, and the writer reports
    /// the loss with a `hardbox.sensor.loss` event.
    pub fn record(&self, event: Event) -> Recorded {
        match self.sender.try_send(Message::Event(Box::new(event))) {
            Ok(()) => Recorded::Queued,
            Err(TrySendError::Full(_)) => {
                self.sensor.pending.fetch_add(1, Ordering::SeqCst);
                self.shared.lost.fetch_add(1, Ordering::SeqCst);
                // If the writer emptied the queue meanwhile it may be waiting: wake it so it
                // reports the loss now. If the queue is still full, the writer has messages left
                // and looks at the counters after each of them.
                let _ = self.sender.try_send(Message::Wake);
                Recorded::Dropped
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared.lost.fetch_add(1, Ordering::SeqCst);
                Recorded::Dropped
            }
        }
    }

    /// The sensor this recorder records for.
    pub fn sensor(&self) -> &str {
        &self.sensor.name
    }

    /// Events dropped so far by all recorders of the spool.
    pub fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::SeqCst)
    }
}

impl Spool {
    /// Opens (creating it and `dir` if needed) the spool in `dir`, truncates a torn last line
    /// and starts the writer thread.
    pub fn open(dir: &Path, options: SpoolOptions) -> Result<Spool, SpoolError> {
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| SpoolError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = fsutil::Lock::try_acquire(&lock_path, fsutil::LockMode::Exclusive)
            .map_err(io("lock", &lock_path))?
            .ok_or(SpoolError::Busy { path: lock_path })?;
        let path = dir.join(SPOOL_FILE);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io("open", &path))?;
        if !existed {
            fsutil::sync_dir(dir).map_err(io("sync", dir))?;
        }
        let recovery = recover(&file, &path)?;
        let shared = Arc::new(Shared::default());
        let (sender, receiver) = mpsc::sync_channel(options.queue_capacity.max(1));
        let writer = Writer {
            file,
            path: path.clone(),
            next: recovery.next_sequence,
            written: 0,
            shared: Arc::clone(&shared),
            options,
            failed: None,
            unsynced_since: None,
        };
        let writer = std::thread::Builder::new()
            .name("event-spool".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(io("start the writer of", &path))?;
        Ok(Spool {
            path,
            sender,
            shared,
            writer: Some(writer),
            recovery,
            _lock: lock,
        })
    }

    /// A recorder for `sensor` (the name its loss events carry). Recorders of one sensor share
    /// its loss counter.
    pub fn recorder(&self, sensor: &str) -> Recorder {
        let mut sensors = self
            .shared
            .sensors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let sensor = match sensors.iter().find(|s| s.name == sensor) {
            Some(s) => Arc::clone(s),
            None => {
                let s = Arc::new(Sensor {
                    name: sensor.to_owned(),
                    pending: AtomicU64::new(0),
                });
                sensors.push(Arc::clone(&s));
                s
            }
        };
        Recorder {
            sender: self.sender.clone(),
            sensor,
            shared: Arc::clone(&self.shared),
        }
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What opening found (torn bytes removed, first sequence number of this session).
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// Writes what is queued, reports pending loss, syncs and stops the writer. Events recorded
    /// after this are dropped and counted.
    pub fn close(mut self) -> Result<SpoolStats, SpoolError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<SpoolStats, SpoolError> {
        let Some(writer) = self.writer.take() else {
            return Err(SpoolError::WriterPanicked {
                path: self.path.clone(),
            });
        };
        // Blocks only until the writer makes room; a writer that ended drops the receiver.
        let _ = self.sender.send(Message::Close);
        let end = writer.join().map_err(|_| SpoolError::WriterPanicked {
            path: self.path.clone(),
        })??;
        Ok(SpoolStats {
            written: end.written,
            lost: self.shared.lost.load(Ordering::SeqCst),
            next_sequence: end.next,
        })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = self.finish();
        }
    }
}

struct WriterEnd {
    written: u64,
    next: u64,
}

struct Writer {
    file: File,
    path: PathBuf,
    next: u64,
    written: u64,
    shared: Arc<Shared>,
    options: SpoolOptions,
    failed: Option<SpoolError>,
    /// When the oldest unsynced line was written.
    unsynced_since: Option<Instant>,
}

impl Writer {
    fn run(mut self, receiver: Receiver<Message>) -> Result<WriterEnd, SpoolError> {
        let interval = self.options.fsync_interval;
        loop {
            let mut due = false;
            let message = match self.unsynced_since {
                // Unsynced data: wait at most until its sync is due.
                Some(since) => {
                    match receiver.recv_timeout(interval.saturating_sub(since.elapsed())) {
                        Ok(m) => m,
                        Err(RecvTimeoutError::Timeout) => {
                            due = true;
                            Message::Wake
                        }
                        Err(RecvTimeoutError::Disconnected) => Message::Close,
                    }
                }
                None => receiver.recv().unwrap_or(Message::Close),
            };
            match message {
                Message::Event(event) => {
                    self.write(*event);
                    self.report_losses();
                }
                Message::Wake => self.report_losses(),
                Message::Close => break,
            }
            if let Some(since) = self.unsynced_since {
                if due || since.elapsed() >= interval {
                    self.sync();
                }
            }
        }
        // Events queued before the close are written; the receiver is dropped on return, so
        // later records count as lost.
        while let Ok(message) = receiver.try_recv() {
            if let Message::Event(event) = message {
                self.write(*event);
            }
        }
        self.report_losses();
        self.sync();
        drop(receiver);
        match self.failed {
            Some(e) => Err(e),
            None => Ok(WriterEnd {
                written: self.written,
                next: self.next,
            }),
        }
    }

    fn report_losses(&mut self) {
        let sensors: Vec<Arc<Sensor>> = self
            .shared
            .sensors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for sensor in sensors {
            let lost = sensor.pending.swap(0, Ordering::SeqCst);
            if lost > 0 {
                let event = Event::new(SENSOR_LOSS)
                    .severity(Severity::Warn)
                    .with(ATTR_SENSOR_NAME, sensor.name.as_str())
                    .with(ATTR_LOST_COUNT, lost);
                self.write(event);
            }
        }
    }

    fn write(&mut self, mut event: Event) {
        if self.failed.is_some() {
            self.shared.lost.fetch_add(1, Ordering::SeqCst);
            return;
        }
        event.sequence = self.next;
        for value in event.attributes.values_mut() {
            if let Value::Double(d) = value {
                // JSON has no NaN or infinities; keep them readable rather than write `null`.
                if !d.is_finite() {
                    *value = Value::String(d.to_string());
                }
            }
        }
        if let Some(hook) = &self.options.before_write {
            hook(&event);
        }
        let mut line = match serde_json::to_vec(&event) {
            Ok(line) => line,
            Err(e) => {
                self.fail(SpoolError::Write {
                    path: self.path.clone(),
                    sequence: event.sequence,
                    source: io::Error::other(e),
                });
                return;
            }
        };
        line.push(b'\n');
        let before = match self.file.metadata() {
            Ok(m) => m.len(),
            Err(source) => {
                self.fail(SpoolError::Write {
                    path: self.path.clone(),
                    sequence: event.sequence,
                    source,
                });
                return;
            }
        };
        if let Err(source) = self.file.write_all(&line) {
            // Take back a partial line so the file stays whole lines.
            let _ = self.file.set_len(before);
            self.fail(SpoolError::Write {
                path: self.path.clone(),
                sequence: event.sequence,
                source,
            });
            return;
        }
        self.next += 1;
        self.written += 1;
        if self.unsynced_since.is_none() {
            self.unsynced_since = Some(Instant::now());
        }
        if self.options.fsync_interval.is_zero() {
            self.sync();
        }
    }

    fn sync(&mut self) {
        if self.failed.is_some() || self.unsynced_since.take().is_none() {
            return;
        }
        if let Err(source) = self.file.sync_data() {
            self.fail(SpoolError::Sync {
                path: self.path.clone(),
                sequence: self.next.saturating_sub(1),
                source,
            });
        }
    }

    fn fail(&mut self, error: SpoolError) {
        self.shared.lost.fetch_add(1, Ordering::SeqCst);
        self.failed = Some(error);
    }
}

/// Finds the last whole line of `file` reading backwards from its end, truncates anything
/// after it (a line torn by a crash) and returns the next sequence number.
fn recover(file: &File, path: &Path) -> Result<Recovery, SpoolError> {
    const CHUNK: u64 = 64 * 1024;
    let io = |action| {
        move |source| SpoolError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    let len = file.metadata().map_err(io("read"))?.len();
    // `tail` holds the bytes from `start` to the end of the file.
    let mut tail: Vec<u8> = Vec::new();
    let mut start = len;
    let (good_len, last_line) = loop {
        let last_newline = tail.iter().rposition(|&b| b == b'\n');
        if let Some(end) = last_newline {
            if let Some(previous) = tail[..end].iter().rposition(|&b| b == b'\n') {
                break (
                    start + end as u64 + 1,
                    Some(tail[previous + 1..end].to_vec()),
                );
            }
            if start == 0 {
                break (end as u64 + 1, Some(tail[..end].to_vec()));
            }
        } else if start == 0 {
            break (0, None);
        }
        let size = CHUNK.min(start);
        start -= size;
        let mut chunk = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut chunk, start).map_err(io("read"))?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
    };
    if good_len < len {
        file.set_len(good_len)
            .map_err(io("truncate the torn last line of"))?;
        file.sync_data().map_err(io("sync"))?;
    }
    let next_sequence = match last_line {
        None => 1,
        Some(line) => match serde_json::from_slice::<Event>(&line) {
            Ok(event) => event.sequence + 1,
            Err(source) => {
                return Err(SpoolError::Corrupt {
                    path: path.to_path_buf(),
                    line: count_lines(file, good_len).map_err(io("read"))?,
                    source,
                })
            }
        },
    };
    Ok(Recovery {
        truncated_bytes: len - good_len,
        next_sequence,
    })
}

/// Newlines in the first `len` bytes (only on the error path: it reads the whole file).
fn count_lines(file: &File, len: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0;
    let mut lines = 0;
    while offset < len {
        let want = usize::try_from((len - offset).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = file.read_at(&mut buf[..want], offset)?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        offset += n as u64;
    }
    Ok(lines)
}
