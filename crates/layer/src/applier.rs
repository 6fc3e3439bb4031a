//! Applying layer streams entry by entry to a root directory.
//!
//! Guarantees: nothing is created, changed or removed outside the root, whatever the layer
//! contains. Entry names are checked lexically first ([`crate::names`]); parent directories are
//! then reached only through [`crate::tree::resolve_dir`] (in-root resolution) and the final
//! component is acted on with calls that never follow it. A cached parent descriptor is dropped
//! whenever a directory or symlink is removed, so a stale descriptor never outlives what it named.
//! Limits are checked before data is written; the blob is read to its end so both digests cover
//! all of it.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustix::fs::{
    self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;
use types::{Digest, Sha256Writer};

use crate::chunks::{self, ChunkReader, ChunkSink};
use crate::error::LayerError;
use crate::names::{self, EntryPath, NameProblem, WhiteoutKind};
use crate::tarstream::{EntryHeader, Kind, TarError, TarReader, Time};
use crate::tree;
use crate::{Compression, Devices, LayerStats, Options, Ownership, Warning, Whiteouts};

/// Parent directory descriptors kept between entries.
const MAX_CACHED_PARENTS: usize = 256;
const OWNER_XATTR: &str = "user.hardbox.owner";
/// Most uncompressed bytes accepted after the end-of-archive blocks (tar pads to its record
/// size, 10 KiB by default); more is a decompression bomb, not padding.
const MAX_TRAILING: u64 = 16 << 20;

/// Which of owner and mode a newly created file already has as the layer wants them.
#[derive(Debug, Clone, Copy)]
struct Done {
    owner: bool,
    mode: bool,
}

impl Done {
    const NOTHING: Done = Done {
        owner: false,
        mode: false,
    };
}

/// Metadata of a directory, set by [`Applier::finish`] because adding children changes it.
#[derive(Debug)]
struct DirectoryMetadata {
    layer: Digest,
    entry: String,
    mtime: Time,
    atime: Time,
    /// The mode to set at the end, when it was relaxed to `u+rwx` while applying (not root).
    final_mode: Option<u32>,
}

/// Applies layers, bottom first, to one root directory.
#[derive(Debug)]
pub struct Applier {
    options: Options,
    root_path: PathBuf,
    root: OwnedFd,
    privileged: bool,
    total_entries: u64,
    total_bytes: u64,
    directories: HashMap<Vec<u8>, DirectoryMetadata>,
    parents: HashMap<Vec<u8>, Parent>,
}

/// A parent directory kept between entries.
#[derive(Debug)]
struct Parent {
    fd: Arc<OwnedFd>,
    new_files: NewFiles,
}

/// What the kernel was seen to give regular files this process creates in one directory, so
/// that calls which would change nothing are left out.
///
/// The owner of a new file depends only on the creating process and the directory (its set-gid
/// bit and group, the filesystem's `grpid` option, id squashing), and its mode on the mode asked
/// for and the directory (umask or default ACL). Both are learned by `fstat` of a file created
/// here (once for the owner, once per distinct mode), never assumed, and forgotten when the
/// directory's metadata is set or the cached descriptor is dropped.
#[derive(Debug, Default)]
struct NewFiles {
    /// The (uid, gid) new files get.
    owner: Option<(u32, u32)>,
    /// Modes (permission bits only) that new files were created with exactly as asked.
    modes: Vec<u32>,
}

/// Reads the layer blob on the producing thread: hashes what it reads (when asked), counts it,
/// writes a copy of it (when given somewhere to write), and notes whether the blob itself failed.
/// The copy is written from the very buffer that was hashed, before it is passed on, so the copy,
/// the hash and what is applied are the same bytes.
struct BlobReader<'a, 'c, R> {
    inner: R,
    hasher: Option<Sha256Writer>,
    copy: Option<&'c mut (dyn Write + Send)>,
    /// Why writing the copy failed; the stream then fails too.
    copy_error: Option<io::Error>,
    len: u64,
    failed: &'a AtomicBool,
}

impl<'a, 'c, R: Read> BlobReader<'a, 'c, R> {
    fn new(
        inner: R,
        hash: bool,
        copy: Option<&'c mut (dyn Write + Send)>,
        failed: &'a AtomicBool,
    ) -> Self {
        BlobReader {
            inner,
            hasher: hash.then(Sha256Writer::new),
            copy,
            copy_error: None,
            len: 0,
            failed,
        }
    }
}

impl<R: Read> Read for BlobReader<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.copy_error.is_some() {
            return Err(io::Error::other(
                "writing the copy of the layer blob failed",
            ));
        }
        match self.inner.read(buf) {
            Ok(n) => {
                if let Some(hasher) = &mut self.hasher {
                    hasher.update(&buf[..n]);
                }
                if let Some(copy) = &mut self.copy {
                    if let Err(error) = copy.write_all(&buf[..n]) {
                        self.failed.store(true, Ordering::Relaxed);
                        self.copy_error = Some(error);
                        return Err(io::Error::other(
                            "writing the copy of the layer blob failed",
                        ));
                    }
                }
                self.len += n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.failed.store(true, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }
}

fn timespec(time: Time) -> Timespec {
    Timespec {
        tv_sec: time.seconds,
        tv_nsec: time.nanoseconds.into(),
    }
}

fn timestamps(mtime: Time, atime: Time) -> Timestamps {
    Timestamps {
        last_access: timespec(atime),
        last_modification: timespec(mtime),
    }
}

fn mode(bits: u32) -> Mode {
    Mode::from_raw_mode(bits)
}

impl Applier {
    /// Opens `root` (which must exist and be a directory) for applying layers.
    pub fn new(root: &Path, options: Options) -> io::Result<Applier> {
        let fd = rfs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("failed to open root directory {}: {e}", root.display()),
            )
        })?;
        Ok(Applier {
            options,
            root_path: root.to_path_buf(),
            root: fd,
            privileged: rustix::process::geteuid().is_root(),
            total_entries: 0,
            total_bytes: 0,
            directories: HashMap::new(),
            parents: HashMap::new(),
        })
    }

    /// The directory layers are applied to.
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// Applies one layer read from `blob`. `layer` is used to name the layer in errors and
    /// warnings; the whole of `blob` is read (so [`LayerStats::digest`] covers all of it).
    /// On error the root is left partly applied; callers apply into a staging directory.
    ///
    /// The blob is read, hashed and decompressed on a second thread while this one applies
    /// entries ([`crate::chunks`]); an uncompressed blob is hashed once, its digest being its
    /// diff_id.
    pub fn apply(
        &mut self,
        blob: &mut (dyn Read + Send),
        layer: &Digest,
        compression: Compression,
    ) -> Result<LayerStats, LayerError> {
        self.apply_inner(blob, None, layer, compression)
    }

    /// Applies one layer like [`Applier::apply`] and writes a copy of every byte of `blob` to
    /// `copy` in the same pass, so that storing a blob and applying it read and hash it once.
    ///
    /// The reading thread writes each piece of the blob to `copy` from the buffer it hashed,
    /// before passing it on: the copy, [`LayerStats::digest`] and what was applied are the same
    /// bytes. The copy is complete only when this returns `Ok`; whether it may be kept (its
    /// digest and diff_id match what the caller expected) is for the caller to decide. A failed
    /// write to `copy` is [`LayerError::CopyBlob`].
    pub fn apply_and_copy(
        &mut self,
        blob: &mut (dyn Read + Send),
        copy: &mut (dyn Write + Send),
        layer: &Digest,
        compression: Compression,
    ) -> Result<LayerStats, LayerError> {
        self.apply_inner(blob, Some(copy), layer, compression)
    }

    fn apply_inner(
        &mut self,
        blob: &mut (dyn Read + Send),
        copy: Option<&mut (dyn Write + Send)>,
        layer: &Digest,
        compression: Compression,
    ) -> Result<LayerStats, LayerError> {
        let blob_failed = AtomicBool::new(false);
        // One core reads, hashes and decompresses the blob; the other applies entries. For a
        // compressed blob the tar stream (diff_id) is hashed on the applying side, which has time
        // to spare, so that decompression is not slowed by a second hash.
        let compressed = compression != Compression::None;
        let (sink, reader) = chunks::channel(!compressed);
        let reader = if compressed {
            reader.hash_received()
        } else {
            reader
        };
        let mut run = LayerRun {
            applier: self,
            layer,
            compression,
            blob_failed: &blob_failed,
            created: HashSet::new(),
            touched: HashSet::new(),
            warnings: Vec::new(),
            entries: 0,
            bytes: 0,
            last_entry: String::new(),
        };
        let (applied, produced) = std::thread::scope(|scope| {
            let producer = std::thread::Builder::new()
                .name("hardbox-layer-read".to_owned())
                .spawn_scoped(scope, || {
                    produce(blob, copy, compression, sink, &blob_failed)
                });
            let producer = match producer {
                Ok(producer) => producer,
                Err(source) => return (Err(run.read_error(source)), Err(None)),
            };
            // `reader` is dropped on an error, which stops the producer.
            let applied = run.apply_stream(reader).map(ChunkReader::finish);
            (applied, producer.join().unwrap_or(Err(None)))
        });
        // A failed copy also failed the stream; report the cause, not its consequence.
        if let Err(Some(source)) = produced {
            return Err(LayerError::CopyBlob {
                layer: layer.clone(),
                source,
            });
        }
        let received = applied?;
        let stopped = || LayerError::ReadBlob {
            layer: layer.clone(),
            source: io::Error::other("the thread reading the layer stopped before its end"),
        };
        let produced = produced.map_err(|_| stopped())?;
        let diff_id = match (produced.diff_id, received) {
            (Some(diff_id), _) | (None, Some((diff_id, _))) => diff_id,
            (None, None) => return Err(stopped()),
        };
        let LayerRun {
            warnings,
            entries,
            bytes,
            ..
        } = run;
        Ok(LayerStats {
            diff_id,
            digest: produced.digest,
            blob_size: produced.blob_size,
            entries,
            bytes,
            warnings,
        })
    }

    /// Finishes: sets directory times (and, when not root, the modes relaxed while applying)
    /// that adding entries disturbed. Directories removed or replaced since are skipped.
    pub fn finish(mut self) -> Result<(), LayerError> {
        let mut directories: Vec<_> = self.directories.drain().collect();
        // Children first, so a parent made unsearchable (non-root) comes last.
        directories.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        for (path, metadata) in directories {
            let fail = |operation, errno: Errno| LayerError::Io {
                layer: metadata.layer.clone(),
                entry: metadata.entry.clone(),
                operation,
                source: errno.into(),
            };
            let Ok(path) = EntryPath::parse(&path) else {
                continue;
            };
            let parent = match tree::resolve_dir(&self.root, &names::join(path.parent_components()))
            {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR) => continue,
                Err(e) => return Err(fail("open parent directory", e)),
            };
            let name = path.file_name().unwrap_or(b".");
            match tree::stat(&parent, name) {
                Ok(Some(stat)) if tree::is_dir(&stat) => {}
                Ok(_) => continue,
                Err(e) => return Err(fail("inspect directory", e)),
            }
            if let Some(bits) = metadata.final_mode {
                let fd = tree::open_dir(&parent, name).map_err(|e| fail("open directory", e))?;
                rfs::fchmod(&fd, mode(bits)).map_err(|e| fail("set directory mode", e))?;
            }
            rfs::utimensat(
                &parent,
                name,
                &timestamps(metadata.mtime, metadata.atime),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| fail("set directory times", e))?;
        }
        Ok(())
    }
}

/// What the producer thread read: the blob's digest and size, and the tar stream's digest (its
/// diff_id) when the producer hashed it.
struct Produced {
    digest: Digest,
    blob_size: u64,
    diff_id: Option<Digest>,
}

/// The producer thread of [`Applier::apply`]: reads the blob to its end (copying it when asked),
/// decompresses it and sends the tar stream on. Returns the blob's digest and size, and the tar
/// stream's digest when the sink hashed it, once the whole blob was read. A failure is forwarded
/// to the reader side, which reports it; a failed copy is also returned (`Err(Some)`), so that it
/// is reported as such rather than as a read error.
fn produce(
    blob: &mut (dyn Read + Send),
    copy: Option<&mut (dyn Write + Send)>,
    compression: Compression,
    mut sink: ChunkSink,
    blob_failed: &AtomicBool,
) -> Result<Produced, Option<io::Error>> {
    // An uncompressed blob is its own tar stream: the sink's hash is both digests.
    let mut raw = BlobReader::new(blob, compression != Compression::None, copy, blob_failed);
    let sent = match compression {
        Compression::None => sink.pump(&mut raw),
        Compression::Gzip => sink.pump(&mut flate2::read::MultiGzDecoder::new(&mut raw)),
        Compression::Zstd => match zstd::stream::read::Decoder::new(&mut raw) {
            Ok(mut decoder) => sink.pump(&mut decoder),
            Err(error) => {
                sink.fail(error);
                false
            }
        },
    };
    if !sent {
        return Err(raw.copy_error.take());
    }
    // Bytes after the end of the compressed stream are part of the blob's digest.
    if let Err(error) = io::copy(&mut raw, &mut io::sink()) {
        sink.fail(error);
        return Err(raw.copy_error.take());
    }
    let sent = sink.finish().map(|(digest, _)| digest);
    let blob_size = raw.len;
    match (raw.hasher.map(|hasher| hasher.finish().0), sent) {
        (Some(digest), diff_id) => Ok(Produced {
            digest,
            blob_size,
            diff_id,
        }),
        (None, Some(digest)) => Ok(Produced {
            diff_id: Some(digest.clone()),
            digest,
            blob_size,
        }),
        (None, None) => Err(None),
    }
}

/// State of applying one layer.
struct LayerRun<'a> {
    applier: &'a mut Applier,
    layer: &'a Digest,
    compression: Compression,
    blob_failed: &'a AtomicBool,
    /// Paths the current layer created (for opaque whiteouts and same-layer whiteouts).
    created: HashSet<Vec<u8>>,
    /// `created` plus all their ancestors.
    touched: HashSet<Vec<u8>>,
    warnings: Vec<Warning>,
    entries: u64,
    bytes: u64,
    last_entry: String,
}

impl LayerRun<'_> {
    fn layer(&self) -> Digest {
        self.layer.clone()
    }

    fn compression_name(&self) -> Option<&'static str> {
        match self.compression {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
        }
    }

    fn read_error(&self, source: io::Error) -> LayerError {
        match self.compression_name() {
            Some(compression) if !self.blob_failed.load(Ordering::Relaxed) => {
                LayerError::CorruptStream {
                    layer: self.layer(),
                    compression,
                    source,
                }
            }
            _ => LayerError::ReadBlob {
                layer: self.layer(),
                source,
            },
        }
    }

    fn tar_error(&self, error: TarError) -> LayerError {
        let layer = self.layer();
        let after = self.last_entry.clone();
        match error {
            TarError::Read(source) => self.read_error(source),
            TarError::Truncated => match self.compression_name() {
                Some(compression) => LayerError::CorruptStream {
                    layer,
                    compression,
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the stream ends inside the tar archive",
                    ),
                },
                None => LayerError::TruncatedTar { layer, after },
            },
            TarError::Checksum => LayerError::BadChecksum { layer, after },
            TarError::BadField(field) => LayerError::BadHeaderField {
                layer,
                after,
                field,
            },
            TarError::ExtensionTooLarge { size, limit } => LayerError::ExtensionTooLarge {
                layer,
                after,
                size,
                limit,
            },
            TarError::BadPax => LayerError::BadPaxHeader { layer, after },
            TarError::DanglingExtension => LayerError::DanglingExtension { layer, after },
        }
    }

    fn fail(&self, entry: &str, operation: &'static str, errno: Errno) -> LayerError {
        match errno {
            Errno::LOOP => LayerError::SymlinkLoop {
                layer: self.layer(),
                entry: entry.to_owned(),
            },
            _ => LayerError::Io {
                layer: self.layer(),
                entry: entry.to_owned(),
                operation,
                source: errno.into(),
            },
        }
    }

    fn warn(&mut self, entry: &str, message: String) {
        self.warnings.push(Warning {
            layer: self.layer(),
            entry: entry.to_owned(),
            message,
        });
    }

    /// Reads the (decompressed) tar stream to its end, applying entries; gives the stream back.
    fn apply_stream(&mut self, decoded: ChunkReader) -> Result<ChunkReader, LayerError> {
        let mut tar = TarReader::new(decoded);
        loop {
            let header = match tar.next_header() {
                Ok(Some(header)) => header,
                Ok(None) => break,
                Err(e) => return Err(self.tar_error(e)),
            };
            let entry = String::from_utf8_lossy(&header.name).into_owned();
            self.count_entry(&entry)?;
            self.apply_entry(&header, &entry, &mut tar)?;
            self.last_entry = entry;
        }
        // Whatever follows the end-of-archive blocks (padding) is part of both digests.
        let mut rest = tar.into_inner();
        let trailing = io::copy(&mut (&mut rest).take(MAX_TRAILING + 1), &mut io::sink())
            .map_err(|e| self.read_error(e))?;
        if trailing > MAX_TRAILING {
            return Err(LayerError::TrailingData {
                layer: self.layer(),
                limit: MAX_TRAILING,
            });
        }
        Ok(rest)
    }

    fn count_entry(&mut self, entry: &str) -> Result<(), LayerError> {
        let limit = self.applier.options.limits.max_entries;
        if self.applier.total_entries >= limit {
            return Err(LayerError::TooManyEntries {
                layer: self.layer(),
                entry: entry.to_owned(),
                limit,
            });
        }
        self.applier.total_entries += 1;
        self.entries += 1;
        Ok(())
    }

    fn parse_name(&self, raw: &[u8], entry: &str) -> Result<EntryPath, LayerError> {
        EntryPath::parse(raw).map_err(|problem| {
            let layer = self.layer();
            let entry = entry.to_owned();
            match problem {
                NameProblem::Absolute => LayerError::AbsolutePath { layer, entry },
                NameProblem::DotDot => LayerError::EscapesRoot { layer, entry },
                NameProblem::Nul => LayerError::NulInName { layer, entry },
                NameProblem::TooLong => LayerError::NameTooLong {
                    layer,
                    entry,
                    limit: names::MAX_NAME,
                },
            }
        })
    }

    fn apply_entry<R: BufRead>(
        &mut self,
        header: &EntryHeader,
        entry: &str,
        tar: &mut TarReader<R>,
    ) -> Result<(), LayerError> {
        let path = self.parse_name(&header.name, entry)?;
        if let Some(file_name) = path.file_name() {
            match names::whiteout_kind(file_name) {
                WhiteoutKind::None => {}
                WhiteoutKind::Opaque => return self.opaque_whiteout(&path, entry),
                WhiteoutKind::Delete(name) => {
                    return self.whiteout(&path.with_file_name(&name), entry)
                }
                WhiteoutKind::Metadata => {
                    self.warn(entry, "whiteout metadata entry skipped".to_owned());
                    return Ok(());
                }
                WhiteoutKind::Invalid => {
                    return Err(LayerError::InvalidWhiteout {
                        layer: self.layer(),
                        entry: entry.to_owned(),
                    })
                }
            }
        }
        if path.is_root() && header.kind != Kind::Directory {
            return Err(self.fail(entry, "replace the root directory", Errno::ISDIR));
        }
        let created = match header.kind {
            Kind::Regular => self.regular(&path, header, entry, tar)?,
            Kind::Directory => self.directory(&path, header, entry)?,
            Kind::Symlink => self.symlink(&path, header, entry)?,
            Kind::Hardlink => self.hardlink(&path, header, entry)?,
            Kind::CharDevice | Kind::BlockDevice => self.device(&path, header, entry)?,
            Kind::Fifo => self.special(&path, header, entry, FileType::Fifo, 0)?,
            Kind::Sparse => {
                return Err(LayerError::SparseFile {
                    layer: self.layer(),
                    entry: entry.to_owned(),
                })
            }
            Kind::Other(flag) => {
                self.warn(
                    entry,
                    format!(
                        "entry type {:?} is not supported; skipped",
                        char::from(flag)
                    ),
                );
                false
            }
        };
        if created {
            self.mark_created(&path);
        }
        Ok(())
    }

    fn mark_created(&mut self, path: &EntryPath) {
        self.created.insert(path.joined());
        let components = path.components();
        for n in (1..=components.len()).rev() {
            if !self.touched.insert(names::join(&components[..n])) {
                break;
            }
        }
    }

    fn invalidate_parents(&mut self) {
        // Drops what was learned about each directory along with its descriptor.
        self.applier.parents.clear();
    }

    /// Removes whatever is at `name` in `parent`, dropping cached parents if it could have been
    /// on the way to one (a directory or a symlink).
    fn remove_existing(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        entry: &str,
    ) -> Result<(), LayerError> {
        let stat = tree::stat(parent, name).map_err(|e| self.fail(entry, "inspect existing", e))?;
        let Some(stat) = stat else {
            return Ok(());
        };
        let file_type = FileType::from_raw_mode(stat.st_mode);
        if matches!(file_type, FileType::Directory | FileType::Symlink) {
            self.invalidate_parents();
        }
        tree::remove(parent, name).map_err(|e| self.fail(entry, "remove existing", e))
    }

    /// Runs `make`, and once more after removing what is in the way if the name exists.
    fn create<T>(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        entry: &str,
        operation: &'static str,
        make: impl Fn(&OwnedFd, &[u8]) -> Result<T, Errno>,
    ) -> Result<T, LayerError> {
        match make(parent, name) {
            Ok(value) => Ok(value),
            Err(Errno::EXIST) => {
                self.remove_existing(parent, name, entry)?;
                make(parent, name).map_err(|e| self.fail(entry, operation, e))
            }
            Err(e) => Err(self.fail(entry, operation, e)),
        }
    }

    /// The directory that will hold `path`, creating missing ones (0755, owned by root as the
    /// ownership mode maps it).
    fn parent_of(&mut self, path: &EntryPath, entry: &str) -> Result<Arc<OwnedFd>, LayerError> {
        let key = names::join(path.parent_components());
        self.parent_at(&key, path, entry)
    }

    /// [`LayerRun::parent_of`], given the parent's key (its joined components).
    fn parent_at(
        &mut self,
        key: &[u8],
        path: &EntryPath,
        entry: &str,
    ) -> Result<Arc<OwnedFd>, LayerError> {
        if let Some(parent) = self.applier.parents.get(key) {
            return Ok(Arc::clone(&parent.fd));
        }
        let fd = match tree::resolve_dir(&self.applier.root, key) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => self.create_parents(path.parent_components(), entry)?,
            Err(e) => return Err(self.parent_error(entry, e)),
        };
        if self.applier.parents.len() >= MAX_CACHED_PARENTS {
            self.applier.parents.clear();
        }
        let fd = Arc::new(fd);
        let parent = Parent {
            fd: Arc::clone(&fd),
            new_files: NewFiles::default(),
        };
        self.applier.parents.insert(key.to_vec(), parent);
        Ok(fd)
    }

    fn parent_error(&self, entry: &str, errno: Errno) -> LayerError {
        match errno {
            Errno::NOTDIR => LayerError::ParentNotDirectory {
                layer: self.layer(),
                entry: entry.to_owned(),
            },
            e => self.fail(entry, "open parent directory", e),
        }
    }

    fn create_parents(
        &mut self,
        components: &[Vec<u8>],
        entry: &str,
    ) -> Result<OwnedFd, LayerError> {
        let root = &self.applier.root;
        let mut current = tree::resolve_dir(root, b".").map_err(|e| self.parent_error(entry, e))?;
        for n in 1..=components.len() {
            let prefix = names::join(&components[..n]);
            match tree::resolve_dir(&self.applier.root, &prefix) {
                Ok(fd) => current = fd,
                Err(Errno::NOENT) => {
                    let name = &components[n - 1];
                    match rfs::mkdirat(&current, name.as_slice(), mode(0o755)) {
                        Ok(()) => {
                            let (uid, gid) = (0, 0);
                            let owner = self.owner(uid, gid, entry)?;
                            let fd = tree::open_dir(&current, name)
                                .map_err(|e| self.fail(entry, "open parent directory", e))?;
                            if let Some((uid, gid)) = owner {
                                rfs::fchown(&fd, Some(uid), Some(gid))
                                    .map_err(|e| self.fail(entry, "set parent owner", e))?;
                            }
                            rfs::fchmod(&fd, mode(0o755))
                                .map_err(|e| self.fail(entry, "set parent mode", e))?;
                        }
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(self.fail(entry, "create parent directory", e)),
                    }
                    current = tree::resolve_dir(&self.applier.root, &prefix)
                        .map_err(|e| self.parent_error(entry, e))?;
                }
                Err(e) => return Err(self.parent_error(entry, e)),
            }
        }
        Ok(current)
    }

    /// The owner to set for the layer's ids, `None` when owners are only recorded.
    fn owner(&self, uid: u64, gid: u64, entry: &str) -> Result<Option<(Uid, Gid)>, LayerError> {
        let out_of_range = |which, id, size| LayerError::IdOutOfRange {
            layer: self.layer(),
            entry: entry.to_owned(),
            which,
            id,
            size,
        };
        // u32::MAX is -1, "leave unchanged", to chown.
        let map = |id: u64, base: u32, size: u32, which| {
            if id >= u64::from(size) {
                return Err(out_of_range(which, id, size));
            }
            match u32::try_from(id).ok().and_then(|id| base.checked_add(id)) {
                Some(mapped) if mapped != u32::MAX => Ok(mapped),
                _ => Err(out_of_range(which, id, size)),
            }
        };
        match self.applier.options.ownership {
            Ownership::Preserve => Ok(Some((
                Uid::from_raw(map(uid, 0, u32::MAX, "uid")?),
                Gid::from_raw(map(gid, 0, u32::MAX, "gid")?),
            ))),
            Ownership::Shift {
                uid_base,
                gid_base,
                size,
            } => Ok(Some((
                Uid::from_raw(map(uid, uid_base, size, "uid")?),
                Gid::from_raw(map(gid, gid_base, size, "gid")?),
            ))),
            Ownership::Record => Ok(None),
        }
    }

    /// The `user.hardbox.owner` value to record, when owners are recorded and not root's.
    fn recorded_owner(&self, header: &EntryHeader) -> Option<String> {
        (self.applier.options.ownership == Ownership::Record && (header.uid, header.gid) != (0, 0))
            .then(|| format!("{}:{}", header.uid, header.gid))
    }

    /// Whether an xattr failure is one to report and go on from (not permitted or not
    /// supported here) rather than stop on.
    fn xattr_refused(errno: Errno) -> bool {
        matches!(
            errno,
            Errno::PERM | Errno::OPNOTSUPP | Errno::ACCESS | Errno::INVAL
        )
    }

    /// Owner, mode, xattrs of an open file or directory, in that order (chown clears setuid
    /// bits and file capabilities); owner and mode are left alone where `done` says the file
    /// already has them.
    fn set_metadata(
        &mut self,
        fd: &OwnedFd,
        header: &EntryHeader,
        entry: &str,
        bits: u32,
        done: Done,
    ) -> Result<(), LayerError> {
        if let Some((uid, gid)) = self.owner(header.uid, header.gid, entry)? {
            if !done.owner {
                rfs::fchown(fd, Some(uid), Some(gid))
                    .map_err(|e| self.fail(entry, "set owner", e))?;
            }
        }
        if !done.mode {
            rfs::fchmod(fd, mode(bits)).map_err(|e| self.fail(entry, "set mode", e))?;
        }
        for (name, value) in &header.xattrs {
            match rfs::fsetxattr(fd, name.as_slice(), value, XattrFlags::empty()) {
                Ok(()) => {}
                Err(e) if Self::xattr_refused(e) => {
                    let name = String::from_utf8_lossy(name).into_owned();
                    self.warn(entry, format!("xattr {name} not set: {e}"));
                }
                Err(e) => return Err(self.fail(entry, "set xattr", e)),
            }
        }
        if let Some(owner) = self.recorded_owner(header) {
            match rfs::fsetxattr(fd, OWNER_XATTR, owner.as_bytes(), XattrFlags::empty()) {
                Ok(()) => {}
                Err(e) if Self::xattr_refused(e) => {
                    self.warn(entry, format!("owner {owner} not recorded: {e}"));
                }
                Err(e) => return Err(self.fail(entry, "record owner", e)),
            }
        }
        Ok(())
    }

    fn check_bytes(&mut self, size: u64, entry: &str) -> Result<(), LayerError> {
        let limit = self.applier.options.limits.max_bytes;
        match self.applier.total_bytes.checked_add(size) {
            Some(total) if total <= limit => {
                self.applier.total_bytes = total;
                self.bytes += size;
                Ok(())
            }
            _ => Err(LayerError::TooManyBytes {
                layer: self.layer(),
                entry: entry.to_owned(),
                limit,
            }),
        }
    }

    fn regular<R: BufRead>(
        &mut self,
        path: &EntryPath,
        header: &EntryHeader,
        entry: &str,
        tar: &mut TarReader<R>,
    ) -> Result<bool, LayerError> {
        self.check_bytes(header.size, entry)?;
        let key = names::join(path.parent_components());
        let parent = self.parent_at(&key, path, entry)?;
        let name = path.file_name().unwrap_or(b".");
        let owner = self
            .owner(header.uid, header.gid, entry)?
            .map(|(uid, gid)| (uid.as_raw(), gid.as_raw()));
        let seen = self
            .applier
            .parents
            .get(&key)
            .map(|parent| &parent.new_files);
        let seen_owner = seen.and_then(|seen| seen.owner);
        let seen_mode = |mode| seen.is_some_and(|seen| seen.modes.contains(&mode));
        let (seen_final_mode, seen_private_mode) = (seen_mode(header.mode), seen_mode(0o600));
        // Created with its final mode only when nothing else is left to change: no set-id or
        // sticky bits (which must follow the owner), and the owner it will get already the one
        // wanted. Otherwise 0600 until owner and mode are set, as before.
        let settled_owner = owner.is_none() || seen_owner == owner;
        let create_mode = if (header.mode & !0o777) == 0 && settled_owner {
            header.mode
        } else {
            0o600
        };
        let fd = self.create(&parent, name, entry, "create file", |parent, name| {
            rfs::openat(
                parent,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                mode(create_mode),
            )
        })?;
        let mut file = File::from(fd);
        loop {
            let chunk = tar.data().map_err(|e| self.tar_error(e))?;
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            if let Err(e) = file.write_all(chunk) {
                return Err(LayerError::Io {
                    layer: self.layer(),
                    entry: entry.to_owned(),
                    operation: "write file",
                    source: e,
                });
            }
            tar.consume(n);
        }
        let fd = OwnedFd::from(file);
        // The owner and mode the file has now: looked at when not known for this directory (and
        // this mode) yet, else as seen on an earlier file created here the same way.
        let seen_create_mode = if create_mode == header.mode {
            seen_final_mode
        } else {
            seen_private_mode
        };
        let (has_owner, has_mode) = match seen_owner {
            Some(seen) if seen_create_mode => (seen, create_mode),
            _ => {
                let stat = rfs::fstat(&fd).map_err(|e| self.fail(entry, "inspect file", e))?;
                let has = ((stat.st_uid, stat.st_gid), stat.st_mode & 0o7777);
                if let Some(parent) = self.applier.parents.get_mut(&key) {
                    parent.new_files.owner = Some(has.0);
                    if has.1 == create_mode && !parent.new_files.modes.contains(&create_mode) {
                        parent.new_files.modes.push(create_mode);
                    }
                }
                has
            }
        };
        let done = Done {
            owner: owner.is_none_or(|owner| owner == has_owner),
            mode: has_mode == header.mode,
        };
        self.set_metadata(&fd, header, entry, header.mode, done)?;
        let atime = header.atime.unwrap_or(header.mtime);
        rfs::futimens(&fd, &timestamps(header.mtime, atime))
            .map_err(|e| self.fail(entry, "set times", e))?;
        Ok(true)
    }

    fn directory(
        &mut self,
        path: &EntryPath,
        header: &EntryHeader,
        entry: &str,
    ) -> Result<bool, LayerError> {
        let fd = if path.is_root() {
            tree::open_dir(&self.applier.root, b".")
                .map_err(|e| self.fail(entry, "open root directory", e))?
        } else {
            let parent = self.parent_of(path, entry)?;
            let name = path.file_name().unwrap_or(b".");
            match rfs::mkdirat(&*parent, name, mode(0o700)) {
                Ok(()) => {}
                Err(Errno::EXIST) => {
                    let existing = tree::stat(&*parent, name)
                        .map_err(|e| self.fail(entry, "inspect existing", e))?;
                    if !existing.is_some_and(|stat| tree::is_dir(&stat)) {
                        self.remove_existing(&parent, name, entry)?;
                        rfs::mkdirat(&*parent, name, mode(0o700))
                            .map_err(|e| self.fail(entry, "create directory", e))?;
                    }
                }
                Err(e) => return Err(self.fail(entry, "create directory", e)),
            }
            tree::open_dir(&*parent, name).map_err(|e| self.fail(entry, "open directory", e))?
        };
        let privileged = self.applier.privileged;
        let bits = if privileged {
            header.mode
        } else {
            header.mode | 0o700
        };
        self.set_metadata(&fd, header, entry, bits, Done::NOTHING)?;
        // Its owner, mode and xattrs (a default ACL) decide what files created in it get.
        if let Some(parent) = self.applier.parents.get_mut(&path.joined()) {
            parent.new_files = NewFiles::default();
        }
        self.applier.directories.insert(
            path.joined(),
            DirectoryMetadata {
                layer: self.layer(),
                entry: entry.to_owned(),
                mtime: header.mtime,
                atime: header.atime.unwrap_or(header.mtime),
                final_mode: (!privileged && bits != header.mode).then_some(header.mode),
            },
        );
        Ok(true)
    }

    fn symlink(
        &mut self,
        path: &EntryPath,
        header: &EntryHeader,
        entry: &str,
    ) -> Result<bool, LayerError> {
        let parent = self.parent_of(path, entry)?;
        let name = path.file_name().unwrap_or(b".");
        let target = header.link.as_slice();
        self.create(&parent, name, entry, "create symlink", |parent, name| {
            rfs::symlinkat(target, parent, name)
        })?;
        if let Some((uid, gid)) = self.owner(header.uid, header.gid, entry)? {
            rfs::chownat(
                &*parent,
                name,
                Some(uid),
                Some(gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.fail(entry, "set owner", e))?;
        }
        if !header.xattrs.is_empty() {
            self.warn(entry, "xattrs on symlinks are not set".to_owned());
        }
        let atime = header.atime.unwrap_or(header.mtime);
        rfs::utimensat(
            &*parent,
            name,
            &timestamps(header.mtime, atime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.fail(entry, "set times", e))?;
        Ok(true)
    }

    fn hardlink(
        &mut self,
        path: &EntryPath,
        header: &EntryHeader,
        entry: &str,
    ) -> Result<bool, LayerError> {
        let target_name = String::from_utf8_lossy(&header.link).into_owned();
        let outside = || LayerError::HardlinkOutsideRoot {
            layer: self.layer(),
            entry: entry.to_owned(),
            target: target_name.clone(),
        };
        let target = match EntryPath::parse(&header.link) {
            Ok(target) => target,
            Err(NameProblem::Absolute | NameProblem::DotDot) => return Err(outside()),
            Err(NameProblem::Nul) => {
                return Err(LayerError::NulInName {
                    layer: self.layer(),
                    entry: entry.to_owned(),
                })
            }
            Err(NameProblem::TooLong) => {
                return Err(LayerError::NameTooLong {
                    layer: self.layer(),
                    entry: entry.to_owned(),
                    limit: names::MAX_NAME,
                })
            }
        };
        let missing = || LayerError::HardlinkTargetMissing {
            layer: self.layer(),
            entry: entry.to_owned(),
            target: target_name.clone(),
        };
        let Some(target_file) = target.file_name() else {
            return Err(self.fail(entry, "link to the root directory", Errno::PERM));
        };
        let target_parent =
            match tree::resolve_dir(&self.applier.root, &names::join(target.parent_components())) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR) => return Err(missing()),
                Err(e) => return Err(self.fail(entry, "open hardlink target directory", e)),
            };
        let target_stat = tree::stat(&target_parent, target_file)
            .map_err(|e| self.fail(entry, "inspect hardlink target", e))?
            .ok_or_else(missing)?;
        let parent = self.parent_of(path, entry)?;
        let name = path.file_name().unwrap_or(b".");
        if let Some(existing) =
            tree::stat(&*parent, name).map_err(|e| self.fail(entry, "inspect existing", e))?
        {
            if (existing.st_dev, existing.st_ino) == (target_stat.st_dev, target_stat.st_ino) {
                return Ok(true);
            }
        }
        self.create(&parent, name, entry, "create hardlink", |parent, name| {
            // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
            rfs::linkat(&target_parent, target_file, parent, name, AtFlags::empty())
        })?;
        Ok(true)
    }

    fn device(
        &mut self,
        path: &EntryPath,
        header: &EntryHeader,
        entry: &str,
    ) -> Result<bool, LayerError> {
        let (file_type, kind) = if header.kind == Kind::CharDevice {
            (FileType::CharacterDevice, "character")
        } else {
            (FileType::BlockDevice, "block")
        };
        if self.applier.options.devices == Devices::Skip {
            self.warn(
                entry,
                format!(
                    "{kind} device {}:{} skipped (devices are not created)",
                    header.major, header.minor
                ),
            );
            return Ok(false);
        }
        let device = rfs::makedev(header.major, header.minor);
        self.special(path, header, entry, file_type, device)
    }

    /// Creates a device node or fifo and sets its metadata without opening it for I/O.
    fn special(
        &mut self,
        path: &EntryPath,
        header: &EntryHeader,
        entry: &str,
        file_type: FileType,
        device: rfs::Dev,
    ) -> Result<bool, LayerError> {
        let parent = self.parent_of(path, entry)?;
        let name = path.file_name().unwrap_or(b".");
        self.create(
            &parent,
            name,
            entry,
            "create special file",
            |parent, name| rfs::mknodat(parent, name, file_type, mode(0o600), device),
        )?;
        if let Some((uid, gid)) = self.owner(header.uid, header.gid, entry)? {
            rfs::chownat(
                &*parent,
                name,
                Some(uid),
                Some(gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.fail(entry, "set owner", e))?;
        }
        let fd = tree::open_path(&*parent, name)
            .map_err(|e| self.fail(entry, "open special file", e))?;
        let stat = rfs::fstat(&fd).map_err(|e| self.fail(entry, "inspect special file", e))?;
        if FileType::from_raw_mode(stat.st_mode) != file_type {
            return Err(self.fail(entry, "inspect special file", Errno::STALE));
        }
        let proc_path = tree::proc_path(&fd);
        rfs::chmodat(rfs::CWD, &proc_path, mode(header.mode), AtFlags::empty())
            .map_err(|e| self.fail(entry, "set mode", e))?;
        for (xattr, value) in &header.xattrs {
            match rfs::setxattr(&proc_path, xattr.as_slice(), value, XattrFlags::empty()) {
                Ok(()) => {}
                Err(e) if Self::xattr_refused(e) => {
                    let xattr = String::from_utf8_lossy(xattr).into_owned();
                    self.warn(entry, format!("xattr {xattr} not set: {e}"));
                }
                Err(e) => return Err(self.fail(entry, "set xattr", e)),
            }
        }
        if let Some(owner) = self.recorded_owner(header) {
            // Best effort: most filesystems refuse user xattrs on special files.
            let _ = rfs::setxattr(
                &proc_path,
                OWNER_XATTR,
                owner.as_bytes(),
                XattrFlags::empty(),
            );
        }
        let atime = header.atime.unwrap_or(header.mtime);
        rfs::utimensat(
            &*parent,
            name,
            &timestamps(header.mtime, atime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.fail(entry, "set times", e))?;
        Ok(true)
    }

    /// `.wh.NAME`: deletes what lower layers put at `target`, or records an overlay whiteout.
    fn whiteout(&mut self, target: &EntryPath, entry: &str) -> Result<(), LayerError> {
        let key = target.joined();
        if self.created.contains(&key) {
            // Whiteouts hide lower layers only, never entries of their own layer.
            return Ok(());
        }
        let name = target.file_name().unwrap_or(b".");
        if self.applier.options.whiteouts == Whiteouts::Overlay {
            let parent = self.parent_of(target, entry)?;
            self.create(&parent, name, entry, "create whiteout", |parent, name| {
                rfs::mknodat(
                    parent,
                    name,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rfs::makedev(0, 0),
                )
            })?;
            self.mark_created(target);
            return Ok(());
        }
        let parent_key = names::join(target.parent_components());
        let parent = match tree::resolve_dir(&self.applier.root, &parent_key) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
            Err(e) => return Err(self.fail(entry, "open whiteout directory", e)),
        };
        self.remove_existing(&parent, name, entry)
    }

    /// `.wh..wh..opq`: empties the directory of what lower layers put there, or marks it opaque
    /// for overlayfs.
    fn opaque_whiteout(&mut self, path: &EntryPath, entry: &str) -> Result<(), LayerError> {
        let directory = path.parent();
        if self.applier.options.whiteouts == Whiteouts::Overlay {
            let parent = self.parent_of(path, entry)?;
            let fd = tree::open_dir(&*parent, b".")
                .map_err(|e| self.fail(entry, "open opaque directory", e))?;
            let xattr = if self.applier.privileged {
                "trusted.overlay.opaque"
            } else {
                "user.overlay.opaque"
            };
            rfs::fsetxattr(&fd, xattr, b"y", XattrFlags::empty())
                .map_err(|e| self.fail(entry, "mark directory opaque", e))?;
            self.mark_created(&directory);
            return Ok(());
        }
        let fd = match tree::resolve_dir(&self.applier.root, &directory.joined()) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
            Err(e) => return Err(self.fail(entry, "open opaque directory", e)),
        };
        let fd =
            tree::open_dir(&fd, b".").map_err(|e| self.fail(entry, "open opaque directory", e))?;
        self.invalidate_parents();
        self.clear_lower(&fd, &directory, entry)
    }

    /// Removes from `dir` everything the current layer did not create, keeping the way to what
    /// it did.
    fn clear_lower(
        &mut self,
        dir: &OwnedFd,
        path: &EntryPath,
        entry: &str,
    ) -> Result<(), LayerError> {
        let children = tree::list(dir).map_err(|e| self.fail(entry, "list opaque directory", e))?;
        for name in children {
            let child = path.child(&name);
            if !self.touched.contains(&child.joined()) {
                tree::remove(dir, &name).map_err(|e| self.fail(entry, "remove hidden entry", e))?;
                continue;
            }
            let stat = tree::stat(dir, &name).map_err(|e| self.fail(entry, "inspect entry", e))?;
            if stat.is_some_and(|stat| tree::is_dir(&stat)) {
                let sub = tree::open_dir(dir, &name)
                    .map_err(|e| self.fail(entry, "open directory", e))?;
                self.clear_lower(&sub, &child, entry)?;
            }
        }
        Ok(())
    }
}
