//! Layer compression on every core, with output that does not depend on how many there are.
//!
//! The uncompressed tar is cut into blocks of a fixed size ([`GZIP_BLOCK`], [`ZSTD_BLOCK`]), each
//! block is compressed on its own by whichever worker takes it, and the results are put back in
//! order. The bytes are a function of the tar, the compression and the level only: never of the
//! number of workers or of scheduling.
//!
//! - gzip: one gzip member, as pigz writes it. Each block is raw deflate ending with a sync flush
//!   (an empty stored block, so the next block starts on a byte boundary), the last one with the
//!   final block; the header is fixed (no name, no mtime, OS 255) and the trailer carries the CRC-32
//!   of the whole tar (the blocks' CRCs combined) and its length. Any gunzip reads it as one stream.
//! - zstd: one frame per block (with its content size and checksum), concatenated, which zstd
//!   decoders read as one stream.
//!
//! The tar producer hashes the tar as it writes it (the layer's diff_id). At most a few blocks
//! are in flight: the producer waits for a token the reader gives back for each block it has
//! passed on, so memory stays bounded however slowly the store writes.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use types::{Digest, Sha256Writer};

use crate::spec::LayerCompression;

/// Uncompressed bytes per gzip block: deflate's window is 32 KiB, so cutting every MiB costs a
/// fraction of a percent of compression.
pub const GZIP_BLOCK: usize = 1 << 20;
/// Uncompressed bytes per zstd frame.
pub const ZSTD_BLOCK: usize = 4 << 20;

/// A block of the tar, numbered from 0.
struct Job {
    seq: u64,
    bytes: Vec<u8>,
    last: bool,
}

/// A compressed block (or why it could not be compressed) with the CRC-32 of its input.
struct Done {
    seq: u64,
    bytes: io::Result<Vec<u8>>,
    crc: Crc,
    last: bool,
}

/// The tar side: a `Write` that cuts what it is given into blocks and hands them to the workers.
pub struct BlockWriter {
    block: usize,
    buffer: Vec<u8>,
    seq: u64,
    jobs: SyncSender<Job>,
    tokens: Receiver<()>,
    hash: Sha256Writer,
}

impl BlockWriter {
    fn send(&mut self, last: bool) -> io::Result<()> {
        // A token per block in flight; the reader returns them as it passes blocks on.
        self.tokens.recv().map_err(|_| stopped())?;
        let bytes = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.block));
        self.hash.update(&bytes);
        let job = Job {
            seq: self.seq,
            bytes,
            last,
        };
        self.seq += 1;
        self.jobs.send(job).map_err(|_| stopped())
    }

    /// Sends what is left as the last block and returns the diff_id (SHA-256 of everything
    /// written).
    pub fn finish(mut self) -> io::Result<Digest> {
        self.send(true)?;
        Ok(self.hash.finish().0)
    }
}

impl Write for BlockWriter {
    fn write(&mut self, mut bytes: &[u8]) -> io::Result<usize> {
        let written = bytes.len();
        while !bytes.is_empty() {
            let room = self.block - self.buffer.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.buffer.extend_from_slice(now);
            bytes = rest;
            if self.buffer.len() == self.block {
                self.send(false)?;
            }
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "layer compression stopped")
}

/// The store side: a `Read` of the compressed layer, blocks in order, with gzip's header and
/// trailer around them.
pub struct CompressedReader {
    results: Receiver<Done>,
    tokens: Sender<()>,
    waiting: BTreeMap<u64, Done>,
    next: u64,
    current: Vec<u8>,
    offset: usize,
    gzip: bool,
    crc: Crc,
    finished: bool,
}

impl CompressedReader {
    /// Fills `current` with the next bytes to hand out; false at the end.
    fn refill(&mut self) -> io::Result<bool> {
        if self.finished {
            return Ok(false);
        }
        let done = loop {
            if let Some(done) = self.waiting.remove(&self.next) {
                break done;
            }
            let done = self.results.recv().map_err(|_| stopped())?;
            self.waiting.insert(done.seq, done);
        };
        self.next += 1;
        // The block has left the pipeline: the producer may start another.
        let _ = self.tokens.send(());
        self.crc.combine(&done.crc);
        self.current = done.bytes?;
        self.offset = 0;
        if done.last {
            self.finished = true;
            if self.gzip {
                self.current
                    .extend_from_slice(&self.crc.sum().to_le_bytes());
                self.current
                    .extend_from_slice(&self.crc.amount().to_le_bytes());
            }
        }
        Ok(true)
    }
}

impl Read for CompressedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.offset >= self.current.len() {
            if !self.refill()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.current.len() - self.offset);
        buf[..n].copy_from_slice(&self.current[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

/// The gzip header hardbox writes: no name, no mtime, no extra flags, OS 255 (unknown).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// Starts `workers` compression threads in `scope` and returns the writer the tar goes to and
/// the reader the compressed layer comes from. The threads end when the writer is finished or
/// dropped and every block is compressed, or when the reader is dropped.
pub fn pipeline<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    compression: LayerCompression,
    level: Option<u32>,
    workers: usize,
) -> (BlockWriter, CompressedReader) {
    let workers = workers.max(1);
    let in_flight = 2 * workers + 2;
    let (jobs, job_queue) = mpsc::sync_channel::<Job>(workers);
    let (results_to, results) = mpsc::channel::<Done>();
    let (tokens_to, tokens) = mpsc::channel::<()>();
    for _ in 0..in_flight {
        let _ = tokens_to.send(());
    }
    let job_queue = Arc::new(Mutex::new(job_queue));
    for _ in 0..workers {
        let queue = Arc::clone(&job_queue);
        let results_to = results_to.clone();
        scope.spawn(move || loop {
            let job = match queue.lock() {
                Ok(queue) => queue.recv(),
                Err(_) => return,
            };
            let Ok(job) = job else { return };
            let mut crc = Crc::new();
            crc.update(&job.bytes);
            let bytes = match compression {
                LayerCompression::Gzip => deflate_block(level.unwrap_or(6), &job.bytes, job.last),
                LayerCompression::Zstd => zstd_frame(level.unwrap_or(3), &job.bytes),
            };
            let done = Done {
                seq: job.seq,
                bytes,
                crc,
                last: job.last,
            };
            if results_to.send(done).is_err() {
                return;
            }
        });
    }
    let block = match compression {
        LayerCompression::Gzip => GZIP_BLOCK,
        LayerCompression::Zstd => ZSTD_BLOCK,
    };
    let gzip = compression == LayerCompression::Gzip;
    let writer = BlockWriter {
        block,
        buffer: Vec::with_capacity(block),
        seq: 0,
        jobs,
        tokens,
        hash: Sha256Writer::new(),
    };
    let reader = CompressedReader {
        results,
        tokens: tokens_to,
        waiting: BTreeMap::new(),
        next: 0,
        current: if gzip {
            GZIP_HEADER.to_vec()
        } else {
            Vec::new()
        },
        offset: 0,
        gzip,
        crc: Crc::new(),
        finished: false,
    };
    (writer, reader)
}

/// One block as raw deflate: ends with a sync flush (byte-aligned, not final) unless it is the
/// last, which ends the deflate stream.
pub fn deflate_block(level: u32, input: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut compress = Compress::new(Compression::new(level.min(9)), false);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(input.len() / 2 + 1024);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(4096));
        }
        let consumed = usize::try_from(compress.total_in()).map_err(io::Error::other)?;
        let status = compress
            .compress_vec(&input[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = usize::try_from(compress.total_in()).map_err(io::Error::other)? == input.len();
        match status {
            Status::StreamEnd => return Ok(out),
            // A flush is complete once it no longer fills the output.
            Status::Ok | Status::BufError if !last && all_in && out.len() < out.capacity() => {
                return Ok(out)
            }
            Status::Ok | Status::BufError => {}
        }
    }
}

/// One block as a zstd frame with its content size and checksum.
pub fn zstd_frame(level: u32, input: &[u8]) -> io::Result<Vec<u8>> {
    let level = i32::try_from(level).unwrap_or(3);
    let mut encoder =
        zstd::stream::write::Encoder::new(Vec::with_capacity(input.len() / 3 + 1024), level)?;
    encoder.include_checksum(true)?;
    encoder.include_contentsize(true)?;
    encoder.set_pledged_src_size(Some(input.len() as u64))?;
    encoder.write_all(input)?;
    encoder.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap values known to be valid")]
mod tests {
    use super::*;

    fn run(
        compression: LayerCompression,
        level: Option<u32>,
        workers: usize,
        input: &[u8],
    ) -> Vec<u8> {
        std::thread::scope(|scope| {
            let (mut writer, mut reader) = pipeline(scope, compression, level, workers);
            let producer = scope.spawn(move || {
                // Uneven writes: the blocks must not depend on them.
                for piece in input.chunks(7777) {
                    writer.write_all(piece).unwrap();
                }
                writer.finish().unwrap()
            });
            let mut out = Vec::new();
            reader.read_to_end(&mut out).unwrap();
            assert_eq!(producer.join().unwrap(), Digest::of(input));
            out
        })
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_u32;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                if i % 3 == 0 {
                    b'a' + (i % 26) as u8
                } else {
                    state as u8 & 0x3f
                }
            })
            .collect()
    }

    #[test]
    fn gzip_is_one_member_any_gunzip_reads_and_independent_of_workers() {
        for len in [0, 1, GZIP_BLOCK - 1, GZIP_BLOCK, 3 * GZIP_BLOCK + 12345] {
            let input = sample(len);
            let one = run(LayerCompression::Gzip, None, 1, &input);
            let four = run(LayerCompression::Gzip, None, 4, &input);
            assert_eq!(one, four, "len {len}");
            // A single-member decoder reads all of it.
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&one[..])
                .read_to_end(&mut decoded)
                .unwrap();
            assert_eq!(decoded, input, "len {len}");
        }
    }

    #[test]
    fn gzip_output_is_checked_by_the_system_gzip() {
        let input = sample(2 * GZIP_BLOCK + 99);
        let compressed = run(LayerCompression::Gzip, Some(1), 2, &input);
        let mut child = std::process::Command::new("gzip")
            .args(["-d", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || stdin.write_all(&compressed).unwrap());
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, input);
    }

    #[test]
    fn zstd_frames_read_as_one_stream() {
        let input = sample(2 * ZSTD_BLOCK + 5);
        let one = run(LayerCompression::Zstd, None, 1, &input);
        assert_eq!(one, run(LayerCompression::Zstd, None, 3, &input));
        let decoded = zstd::stream::decode_all(&one[..]).unwrap();
        assert_eq!(decoded, input);
    }

    #[test]
    fn a_dropped_reader_stops_the_producer() {
        let input = sample(8 * GZIP_BLOCK);
        std::thread::scope(|scope| {
            let (mut writer, reader) = pipeline(scope, LayerCompression::Gzip, None, 2);
            drop(reader);
            let err = writer.write_all(&input).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        });
    }
}
