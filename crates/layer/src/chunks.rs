//! A byte stream handed from one thread to another in bounded, recycled chunks, hashed (SHA-256)
//! on the producing side.
//!
//! It exists so that reading, decompressing and hashing a blob run on one core while the other
//! parses the tar stream and writes files (or, for `image import`, writes the blob). The bytes
//! the reader side sees are exactly the bytes that were hashed: a chunk is hashed, then moved (not
//! copied) to the reader, and only comes back empty for reuse. Memory is bounded: at most
//! [`POOL`] chunks of [`CHUNK`] bytes exist at once, and the producer waits for the reader to
//! give one back before reading more.
//!
//! The reader side can tell a complete stream from an interrupted one: the producer ends the
//! stream explicitly ([`ChunkSink::finish`]); a producer that fails forwards its error
//! ([`ChunkSink::fail`]), and one that disappears without either (a panic) reads as an error, never
//! as a clean end of stream.

use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::Arc;

use types::{Digest, Sha256Writer};

/// Size of one chunk.
pub const CHUNK: usize = 1 << 20;
/// Most chunks in existence at once (being filled, queued or being read).
pub const POOL: usize = 4;

enum Message {
    /// `len` bytes at the start of the buffer (which is always `CHUNK` long).
    Data {
        buffer: Vec<u8>,
        len: usize,
    },
    End,
    Failed(io::Error),
}

/// Creates the two ends of a stream; the sink hashes what it sends when `hash` is set.
pub fn channel(hash: bool) -> (ChunkSink, ChunkReader) {
    let (full_tx, full_rx) = mpsc::sync_channel(POOL + 1);
    let (free_tx, free_rx) = mpsc::channel();
    (
        ChunkSink {
            full: full_tx,
            free: free_rx,
            allocated: 0,
            hasher: hash.then(Sha256Writer::new),
        },
        ChunkReader {
            full: full_rx,
            free: free_tx,
            current: Vec::new(),
            start: 0,
            end: 0,
            state: State::Open,
            hasher: None,
        },
    )
}

/// The producing end: fills chunks from a reader, hashes them and sends them on.
pub struct ChunkSink {
    full: SyncSender<Message>,
    free: Receiver<Vec<u8>>,
    allocated: usize,
    hasher: Option<Sha256Writer>,
}

impl ChunkSink {
    /// An empty chunk: a recycled one, a new one while fewer than [`POOL`] exist, or the next one
    /// the reader gives back. `None` when the reader is gone.
    fn buffer(&mut self) -> Option<Vec<u8>> {
        match self.free.try_recv() {
            Ok(buffer) => return Some(buffer),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => {}
        }
        if self.allocated < POOL {
            self.allocated += 1;
            return Some(vec![0; CHUNK]);
        }
        self.free.recv().ok()
    }

    /// Sends all of `source` (to its end). Returns false when reading failed (the error went to
    /// the reader side) or the reader side is gone; either way the producer should stop.
    pub fn pump(&mut self, source: &mut dyn Read) -> bool {
        loop {
            let Some(mut buffer) = self.buffer() else {
                return false;
            };
            let mut len = 0;
            let mut at_end = false;
            while len < CHUNK {
                match source.read(&mut buffer[len..]) {
                    Ok(0) => {
                        at_end = true;
                        break;
                    }
                    Ok(n) => len += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // What was read before the error is still delivered, then the error.
                        if len > 0 && !self.send(buffer, len) {
                            return false;
                        }
                        self.fail(e);
                        return false;
                    }
                }
            }
            if len > 0 && !self.send(buffer, len) {
                return false;
            }
            if at_end {
                return true;
            }
        }
    }

    fn send(&mut self, buffer: Vec<u8>, len: usize) -> bool {
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buffer[..len]);
        }
        self.full.send(Message::Data { buffer, len }).is_ok()
    }

    /// Forwards an error to the reader side, which returns it from its next read.
    pub fn fail(&mut self, error: io::Error) {
        // A reader that is gone needs no error.
        let _ = self.full.send(Message::Failed(error));
    }

    /// Ends the stream cleanly; the digest and length of everything sent, when hashing.
    pub fn finish(self) -> Option<(Digest, u64)> {
        let _ = self.full.send(Message::End);
        self.hasher.map(|hasher| {
            let (digest, len, _) = hasher.finish();
            (digest, len)
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Ended,
    Failed,
}

/// The reading end: a [`BufRead`] over the chunks, handing each back once read.
pub struct ChunkReader {
    full: Receiver<Message>,
    free: Sender<Vec<u8>>,
    current: Vec<u8>,
    start: usize,
    end: usize,
    state: State,
    hasher: Option<Sha256Writer>,
}

impl ChunkReader {
    /// Hashes every chunk on this side as it arrives (for when this thread has more time to
    /// spare than the producer's).
    pub fn hash_received(mut self) -> ChunkReader {
        self.hasher = Some(Sha256Writer::new());
        self
    }

    /// The digest and length of everything received, when [`ChunkReader::hash_received`] was
    /// asked for and the stream ended cleanly.
    pub fn finish(self) -> Option<(Digest, u64)> {
        if self.state != State::Ended {
            return None;
        }
        self.hasher.map(|hasher| {
            let (digest, len, _) = hasher.finish();
            (digest, len)
        })
    }

    fn failed() -> io::Error {
        io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the thread reading the stream stopped before its end",
        )
    }
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.start == self.end {
            match self.state {
                State::Open => {}
                State::Ended => return Ok(&[]),
                State::Failed => return Err(ChunkReader::failed()),
            }
            if !self.current.is_empty() {
                // The producer may be gone already; then the buffer is simply dropped.
                let _ = self.free.send(std::mem::take(&mut self.current));
            }
            match self.full.recv() {
                Ok(Message::Data { buffer, len }) => {
                    if let Some(hasher) = &mut self.hasher {
                        hasher.update(&buffer[..len]);
                    }
                    self.current = buffer;
                    self.start = 0;
                    self.end = len;
                }
                Ok(Message::End) => self.state = State::Ended,
                Ok(Message::Failed(error)) => {
                    self.state = State::Failed;
                    return Err(error);
                }
                Err(_) => {
                    self.state = State::Failed;
                    return Err(ChunkReader::failed());
                }
            }
        }
        Ok(&self.current[self.start..self.end])
    }

    fn consume(&mut self, amount: usize) {
        self.start = (self.start + amount).min(self.end);
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// A filled chunk shared, read-only, by the writing thread and the hashing thread.
type Shared = Arc<(Vec<u8>, usize)>;

/// Copies `reader` to `writer` while another thread hashes the same chunks, returning the digest
/// and length of what was copied. Each chunk is read once into an immutable shared buffer that is
/// both written and hashed, so the bytes written are exactly the bytes hashed; at most [`POOL`]
/// chunks exist at once. Used where writing is cheaper than hashing (storing a blob).
pub fn copy_hashed(reader: &mut dyn Read, writer: &mut dyn Write) -> io::Result<(Digest, u64)> {
    let (full_tx, full_rx) = mpsc::sync_channel::<Shared>(POOL + 1);
    let (done_tx, done_rx) = mpsc::channel::<Shared>();
    let hasher = std::thread::Builder::new()
        .name("hardbox-hash".to_owned())
        .spawn(move || {
            let mut hasher = Sha256Writer::new();
            for chunk in full_rx {
                hasher.update(&chunk.0[..chunk.1]);
                // The copying side may be gone already; the chunk is then dropped.
                let _ = done_tx.send(chunk);
            }
            let (digest, len, _) = hasher.finish();
            (digest, len)
        })?;
    let hasher_gone = || io::Error::other("the thread hashing the stream stopped");
    let mut allocated = 0;
    loop {
        let mut buffer = match done_rx.try_recv() {
            Ok(chunk) => Arc::try_unwrap(chunk).map(|(buffer, _)| buffer).ok(),
            Err(_) => None,
        };
        if buffer.is_none() && allocated >= POOL {
            let chunk = done_rx.recv().map_err(|_| hasher_gone())?;
            buffer = Arc::try_unwrap(chunk).map(|(buffer, _)| buffer).ok();
        }
        let mut buffer = match buffer {
            Some(buffer) => buffer,
            None => {
                allocated += 1;
                vec![0; CHUNK]
            }
        };
        let mut len = 0;
        while len < CHUNK {
            match reader.read(&mut buffer[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if len == 0 {
            break;
        }
        let chunk: Shared = Arc::new((buffer, len));
        full_tx
            .send(Arc::clone(&chunk))
            .map_err(|_| hasher_gone())?;
        writer.write_all(&chunk.0[..len])?;
        if len < CHUNK {
            break;
        }
    }
    drop(full_tx);
    hasher.join().map_err(|_| hasher_gone())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Failing;

    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }

    #[test]
    fn delivers_and_hashes_every_byte() {
        let data: Vec<u8> = (0..(3 * CHUNK + 123)).map(|i| (i % 251) as u8).collect();
        let (mut sink, mut reader) = channel(true);
        let (hashed, read) = std::thread::scope(|scope| {
            let producer = scope.spawn(|| {
                assert!(sink.pump(&mut &data[..]));
                sink.finish()
            });
            let mut read = Vec::new();
            reader.read_to_end(&mut read).unwrap();
            (producer.join().unwrap(), read)
        });
        assert_eq!(read, data);
        assert_eq!(hashed, Some((Digest::of(&data), data.len() as u64)));
    }

    #[test]
    fn copy_hashed_writes_and_hashes_the_same_bytes() {
        for size in [0, 1, CHUNK, 7 * CHUNK + 5] {
            let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            let mut out = Vec::new();
            let (digest, len) = copy_hashed(&mut &data[..], &mut out).unwrap();
            assert_eq!(out, data);
            assert_eq!((digest, len), (Digest::of(&data), size as u64));
        }
    }

    #[test]
    fn copy_hashed_reports_a_read_error() {
        let err = copy_hashed(&mut Failing, &mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
    }

    #[test]
    fn the_reader_side_can_hash_instead() {
        let data = vec![5u8; 2 * CHUNK + 9];
        let (mut sink, reader) = channel(false);
        let mut reader = reader.hash_received();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                assert!(sink.pump(&mut &data[..]));
                assert_eq!(sink.finish(), None);
            });
            let mut read = Vec::new();
            reader.read_to_end(&mut read).unwrap();
            assert_eq!(
                reader.finish(),
                Some((Digest::of(&read), 2 * CHUNK as u64 + 9))
            );
        });
    }

    #[test]
    fn forwards_a_read_error() {
        let (mut sink, mut reader) = channel(false);
        std::thread::scope(|scope| {
            scope.spawn(move || assert!(!sink.pump(&mut Failing)));
            let err = reader.read_to_end(&mut Vec::new()).unwrap_err();
            assert_eq!(err.to_string(), "disk on fire");
        });
    }

    #[test]
    fn a_producer_that_vanishes_is_not_a_clean_end() {
        let (sink, mut reader) = channel(false);
        drop(sink);
        let err = reader.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn the_producer_stops_when_the_reader_goes() {
        let data = vec![7u8; 10 * CHUNK];
        let (mut sink, reader) = channel(false);
        drop(reader);
        assert!(!sink.pump(&mut &data[..]));
    }
}
