//! `image import`: OCI layout directories, OCI archives and docker-archives into the store.
//!
//! Archives are read in one pass: every regular member is hashed while it is copied to `tmp/` as a
//! candidate blob; then `index.json` (or docker's `manifest.json`) decides which candidates become
//! blobs. Nothing is trusted by its name: a candidate is adopted only when its computed digest and
//! size match the descriptor that refers to it. All manifests and configs are checked before any
//! blob is stored, all blobs are stored before `index.json` changes, and a failed import leaves
//! `index.json` as it was (at worst with unreferenced blobs, which `gc` removes).
//!
//! With `--unpack` ([`Store::import_unpack`]) the one imported image is also unpacked, in the
//! same pass over each layer's bytes: a layer of a layout is read once, hashed once (on a second
//! core) and, from the same buffers, written to its staging file in `tmp/` and applied to a
//! staging sibling of the target directory ([`layer::Applier::apply_and_copy`]). The blob is
//! renamed into the store only when its digest, size and diff_id match, and the directory is
//! renamed onto the target only when every layer matched. Archive members are staged (and
//! hashed) as the archive is read, before anything says which of them are layers, so a layer of
//! an archive is read and hashed again as it is applied.

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

use fs_err as fs;
use fsutil::{AtomicFile, LockMode};
use serde::{Deserialize, Serialize};
use types::Digest;

use crate::error::{BlobError, NameError, StoreError};
use crate::images::{add_unnamed, set_name};
use crate::names::normalize_name;
use crate::spec::{
    self, Descriptor, ImageConfig, Index, Manifest, Platform, ANNOTATION_CONTAINERD_NAME,
    ANNOTATION_REF_NAME, MAX_METADATA_BYTES, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_OCI_LAYER_ZSTD, MEDIA_TYPE_OCI_MANIFEST,
};
use crate::store::{
    check_layer_count, parse_config, parse_index, parse_manifest, read_verified, Store,
};
use crate::unpack::{UnpackError, UnpackReport, Unpacking};

/// What to import and how to name it.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Replaces the names recorded in the source (the source must hold one image).
    pub tag: Option<String>,
    /// The platform to pick from multi-platform indexes; the host's when `None`.
    pub platform: Option<Platform>,
}

/// The kinds of source `image import` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    OciDir,
    OciArchive,
    DockerArchive,
}

/// One image that landed in the store.
#[derive(Debug, Clone, Serialize)]
pub struct ImportedImage {
    pub digest: Digest,
    pub names: Vec<String>,
    pub platform: String,
    pub source_kind: SourceKind,
}

/// Why an import failed. The store's `index.json` is unchanged whenever one is returned.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("failed to read {path}")]
    Source { path: PathBuf, source: io::Error },
    #[error("{path} is not an OCI layout, an OCI archive or a docker-archive")]
    UnknownSource { path: PathBuf },
    #[error("failed to read archive {path}")]
    Archive { path: PathBuf, source: io::Error },
    #[error("failed to stage member {member} of {archive} in the store")]
    Stage {
        archive: PathBuf,
        member: String,
        source: io::Error,
    },
    #[error("{source_path} has no {member}")]
    MissingMember {
        source_path: PathBuf,
        member: String,
    },
    #[error("{member} in {source_path} is larger than {limit} bytes")]
    MemberTooLarge {
        source_path: PathBuf,
        member: String,
        limit: u64,
    },
    #[error("{member} in {archive} does not match its name: its content has digest {actual}")]
    MemberMismatch {
        archive: PathBuf,
        member: String,
        actual: Digest,
    },
    #[error("{member} in {source_path} is not valid")]
    Json {
        source_path: PathBuf,
        member: String,
        source: serde_json::Error,
    },
    #[error("{path} holds no images")]
    NoImages { path: PathBuf },
    #[error("{path} has no image for platform {platform}")]
    NoPlatform { path: PathBuf, platform: Platform },
    #[error("--tag names one image but {path} holds {count}")]
    TagNeedsOneImage { path: PathBuf, count: usize },
    #[error("--unpack needs one image but {path} holds {count}")]
    UnpackNeedsOneImage { path: PathBuf, count: usize },
    #[error("{path} names an image {name:?} hardbox cannot store")]
    Name {
        path: PathBuf,
        name: String,
        source: NameError,
    },
    #[error(
        "image {config} in {path} lists {layers} layers but its config lists {diff_ids} diff_ids"
    )]
    LayerCount {
        path: PathBuf,
        config: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error("layer {layer} in {path} has diff_id {actual} but its config says {expected}")]
    DiffId {
        path: PathBuf,
        layer: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("invalid image in {path}")]
    Invalid { path: PathBuf, source: BlobError },
    #[error(transparent)]
    Write(BlobError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
}

/// An image checked and ready to store.
struct Planned {
    descriptor: Descriptor,
    manifest_bytes: Vec<u8>,
    manifest: Manifest,
    config_bytes: Vec<u8>,
    /// The config's `rootfs.diff_ids`, one per layer (checked).
    diff_ids: Vec<Digest>,
    names: Vec<String>,
}

/// Where `--unpack` puts the imported image, and how its layers are applied.
#[derive(Debug, Clone, Copy)]
struct UnpackTarget<'a> {
    dir: &'a Path,
    options: layer::Options,
}

/// Starts unpacking the one planned image, when asked to: before any blob is stored, so that a
/// source of several images, or a target that is not free, changes nothing.
fn start_unpacking(
    target: Option<UnpackTarget<'_>>,
    source: &Path,
    images: &[Planned],
) -> Result<Option<Unpacking>, ImportError> {
    let Some(target) = target else {
        return Ok(None);
    };
    let [image] = images else {
        return Err(ImportError::UnpackNeedsOneImage {
            path: source.to_owned(),
            count: images.len(),
        });
    };
    let unpacking = Unpacking::start(
        target.dir,
        &image.descriptor.digest,
        image.manifest.layers.len(),
        target.options,
    )?;
    Ok(Some(unpacking))
}

impl Store {
    /// Imports every image in `source` (one platform of each multi-platform index).
    pub fn import(
        &self,
        source: &Path,
        options: &ImportOptions,
    ) -> Result<Vec<ImportedImage>, ImportError> {
        self.import_inner(source, options, None)
            .map(|(imported, _)| imported)
    }

    /// Imports the one image in `source` (after `options.platform` picked among platforms) and
    /// unpacks it into `dir`, which must not exist or be empty, reading and hashing each layer
    /// of a layout once (see the module docs). Layers are applied with `unpack`, as
    /// [`Store::unpack`] would.
    ///
    /// Nothing is stored and `dir` is not touched when the source holds several images or `dir`
    /// is not free. On error `index.json` is unchanged (blobs of layers that matched may remain,
    /// unreferenced) and `dir` is left as it was, unless the error is the final write of
    /// `index.json`, after `dir` was put in place.
    pub fn import_unpack(
        &self,
        source: &Path,
        options: &ImportOptions,
        dir: &Path,
        unpack: layer::Options,
    ) -> Result<(Vec<ImportedImage>, UnpackReport), ImportError> {
        let target = UnpackTarget {
            dir,
            options: unpack,
        };
        let (imported, report) = self.import_inner(source, options, Some(target))?;
        // import_inner unpacks whenever it is given a target.
        let report = report.ok_or_else(|| ImportError::NoImages {
            path: source.to_owned(),
        })?;
        Ok((imported, report))
    }

    fn import_inner(
        &self,
        source: &Path,
        options: &ImportOptions,
        unpack: Option<UnpackTarget<'_>>,
    ) -> Result<(Vec<ImportedImage>, Option<UnpackReport>), ImportError> {
        let _lock = self.lock_store(LockMode::Shared)?;
        let meta = fs::metadata(source).map_err(|e| ImportError::Source {
            path: source.to_owned(),
            source: e,
        })?;
        let (kind, planned, unpacking) = if meta.is_dir() {
            let index_path = source.join("index.json");
            if !index_path.is_file() {
                return Err(ImportError::UnknownSource {
                    path: source.to_owned(),
                });
            }
            let blobs = DirBlobs {
                dir: source.to_owned(),
            };
            let index = read_member_file(source, "index.json", &index_path)?;
            let planned = plan_layout(&blobs, source, &index, options)?;
            let mut unpacking = start_unpacking(unpack, source, &planned)?;
            store_layout(self, &blobs, &planned, unpacking.as_mut())?;
            (SourceKind::OciDir, planned, unpacking)
        } else {
            let members = Members::stage(self, source)?;
            if let Some(index) = members.read_small(source, "index.json")? {
                let blobs = ArchiveBlobs {
                    archive: source,
                    members: &members,
                };
                let planned = plan_layout(&blobs, source, &index, options)?;
                let mut unpacking = start_unpacking(unpack, source, &planned)?;
                store_layout(self, &blobs, &planned, unpacking.as_mut())?;
                (SourceKind::OciArchive, planned, unpacking)
            } else if let Some(list) = members.read_small(source, "manifest.json")? {
                let (planned, unpacking) =
                    import_docker(self, &members, source, &list, options, unpack)?;
                (SourceKind::DockerArchive, planned, unpacking)
            } else {
                return Err(ImportError::UnknownSource {
                    path: source.to_owned(),
                });
            }
        };
        // Every layer matched: the unpacked tree goes in place before the image is named, so
        // that an error leaves index.json as it was.
        let report = unpacking.map(Unpacking::finish).transpose()?;
        let imported: Vec<ImportedImage> = planned
            .iter()
            .map(|p| ImportedImage {
                digest: p.descriptor.digest.clone(),
                names: p.names.clone(),
                platform: p
                    .descriptor
                    .platform
                    .as_ref()
                    .map(Platform::to_string)
                    .unwrap_or_default(),
                source_kind: kind,
            })
            .collect();
        self.update_index(|index| {
            for image in &planned {
                if image.names.is_empty() {
                    add_unnamed(index, &image.descriptor);
                }
                for name in &image.names {
                    set_name(index, &image.descriptor, name);
                }
            }
            (true, ())
        })?;
        Ok((imported, report))
    }
}

fn read_member_file(source: &Path, member: &str, path: &Path) -> Result<Vec<u8>, ImportError> {
    match crate::store::read_capped(path, MAX_METADATA_BYTES) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(ImportError::MemberTooLarge {
            source_path: source.to_owned(),
            member: member.to_owned(),
            limit: MAX_METADATA_BYTES,
        }),
        Err(e) => Err(ImportError::Source {
            path: path.to_owned(),
            source: e,
        }),
    }
}

/// Where a layout's blobs come from.
trait Blobs {
    /// Reads a metadata blob, verified against `descriptor`.
    fn read(&self, kind: &'static str, descriptor: &Descriptor) -> Result<Vec<u8>, ImportError>;
    /// Puts a blob into the store, verified against `descriptor`.
    fn transfer(
        &self,
        store: &Store,
        kind: &'static str,
        descriptor: &Descriptor,
    ) -> Result<(), ImportError>;
    /// Puts a layer blob into the store and applies it with `unpacking`, both from the bytes
    /// read, which must match `descriptor` and `diff_id` before the blob is stored.
    fn transfer_unpacking(
        &self,
        store: &Store,
        descriptor: &Descriptor,
        diff_id: &Digest,
        unpacking: &mut Unpacking,
    ) -> Result<(), ImportError>;
}

/// Checks what applying a layer read against its descriptor and the config's diff_id.
fn check_layer(
    source: &Path,
    descriptor: &Descriptor,
    diff_id: &Digest,
    stats: &layer::LayerStats,
) -> Result<(), ImportError> {
    crate::store::check("layer", descriptor, &stats.digest, stats.blob_size).map_err(
        |source_error| ImportError::Invalid {
            path: source.to_owned(),
            source: source_error,
        },
    )?;
    if stats.diff_id != *diff_id {
        return Err(ImportError::DiffId {
            path: source.to_owned(),
            layer: descriptor.digest.to_string(),
            expected: diff_id.clone(),
            actual: stats.diff_id.clone(),
        });
    }
    Ok(())
}

/// Applies a layer staged from an archive (already hashed as it was staged; hashed again as it
/// is applied, so the bytes applied are the bytes checked) and adopts it into the store.
fn apply_staged(
    store: &Store,
    archive: &Path,
    staged: &Staged,
    descriptor: &Descriptor,
    diff_id: &Digest,
    unpacking: &mut Unpacking,
) -> Result<(), ImportError> {
    // A layer listed twice was adopted the first time.
    let path = if store.has_blob(&descriptor.digest) {
        store.blob_path(&descriptor.digest)
    } else {
        staged.temp.clone()
    };
    let file = fs::File::open(&path).map_err(|source| ImportError::Source {
        path: path.clone(),
        source,
    })?;
    let stats = unpacking.apply(descriptor, &mut file.take(descriptor.size + 1), None)?;
    check_layer(archive, descriptor, diff_id, &stats)?;
    store
        .adopt(&staged.temp, &staged.digest)
        .map_err(ImportError::Write)
}

struct DirBlobs {
    dir: PathBuf,
}

impl DirBlobs {
    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(digest.hex())
    }

    fn invalid(&self, source: BlobError) -> ImportError {
        ImportError::Invalid {
            path: self.dir.clone(),
            source,
        }
    }

    fn open(&self, kind: &'static str, descriptor: &Descriptor) -> Result<fs::File, ImportError> {
        let path = self.path(&descriptor.digest);
        fs::File::open(&path).map_err(|source| {
            self.invalid(if source.kind() == io::ErrorKind::NotFound {
                BlobError::Missing {
                    kind,
                    digest: descriptor.digest.clone(),
                }
            } else {
                BlobError::Read {
                    kind,
                    digest: descriptor.digest.clone(),
                    path: path.clone(),
                    source,
                }
            })
        })
    }
}

impl Blobs for DirBlobs {
    fn read(&self, kind: &'static str, descriptor: &Descriptor) -> Result<Vec<u8>, ImportError> {
        read_verified(&self.path(&descriptor.digest), kind, descriptor).map_err(|e| self.invalid(e))
    }

    fn transfer(
        &self,
        store: &Store,
        kind: &'static str,
        descriptor: &Descriptor,
    ) -> Result<(), ImportError> {
        if store.has_blob(&descriptor.digest) {
            return Ok(());
        }
        let mut file = self.open(kind, descriptor)?;
        store
            .put_stream(kind, descriptor, &mut file)
            .map_err(|e| match e {
                BlobError::Write { .. } => ImportError::Write(e),
                other => self.invalid(other),
            })
    }

    fn transfer_unpacking(
        &self,
        store: &Store,
        descriptor: &Descriptor,
        diff_id: &Digest,
        unpacking: &mut Unpacking,
    ) -> Result<(), ImportError> {
        let file = self.open("layer", descriptor)?;
        // A blob of the wrong size is refused before it is applied (and named as such, rather
        // than by how its tar stream breaks); it is never read more than one byte past the
        // expected size, should it grow meanwhile.
        let size = file
            .metadata()
            .map_err(|source| {
                self.invalid(BlobError::Read {
                    kind: "layer",
                    digest: descriptor.digest.clone(),
                    path: self.path(&descriptor.digest),
                    source,
                })
            })?
            .len();
        if size != descriptor.size {
            return Err(self.invalid(BlobError::SizeMismatch {
                kind: "layer",
                digest: descriptor.digest.clone(),
                expected: descriptor.size,
                actual: size,
            }));
        }
        let mut blob = file.take(descriptor.size + 1);
        if store.has_blob(&descriptor.digest) {
            let stats = unpacking.apply(descriptor, &mut blob, None)?;
            return check_layer(&self.dir, descriptor, diff_id, &stats);
        }
        let mut staged = store
            .stage_blob(&descriptor.digest)
            .map_err(ImportError::Write)?;
        let mut copy = WriteBehind::new(&mut staged);
        let stats = unpacking.apply(descriptor, &mut blob, Some(&mut copy))?;
        check_layer(&self.dir, descriptor, diff_id, &stats)?;
        staged.commit().map_err(|source| {
            ImportError::Write(BlobError::Write {
                digest: descriptor.digest.clone(),
                source,
            })
        })
    }
}

/// How much of a staging blob is written before its write-back is started.
const WRITE_BEHIND: u64 = 8 << 20;

/// Writes a staging blob and has the kernel start writing each [`WRITE_BEHIND`] bytes back to
/// disk as soon as they are written, so that the fsync before the blob's rename waits for the
/// last few MiB instead of the whole blob, the disk having worked while the layer was applied.
///
/// `posix_fadvise(DONTNEED)` starts write-back of the dirty pages of a range and drops only
/// those already clean (pages under write-back stay cached); on tmpfs it does nothing. It is
/// advice: if it fails, the data reaches the disk at the fsync, as without it.
struct WriteBehind<'a> {
    file: &'a mut AtomicFile,
    /// The staging file opened once more: [`AtomicFile`] does not lend its descriptor.
    advised_file: Option<std::os::fd::OwnedFd>,
    written: u64,
    advised: u64,
}

impl<'a> WriteBehind<'a> {
    fn new(file: &'a mut AtomicFile) -> WriteBehind<'a> {
        // Never following a link nor waiting on a fifo that would have replaced the file.
        let flags = rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::NONBLOCK
            | rustix::fs::OFlags::CLOEXEC;
        let advised_file =
            rustix::fs::open(file.temp_path(), flags, rustix::fs::Mode::empty()).ok();
        WriteBehind {
            file,
            advised_file,
            written: 0,
            advised: 0,
        }
    }
}

impl Write for WriteBehind<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if let (Some(file), Some(len)) = (
            &self.advised_file,
            std::num::NonZeroU64::new(self.written - self.advised),
        ) {
            if len.get() >= WRITE_BEHIND {
                let _ = rustix::fs::fadvise(
                    file,
                    self.advised,
                    Some(len),
                    rustix::fs::Advice::DontNeed,
                );
                self.advised = self.written;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

struct ArchiveBlobs<'a> {
    archive: &'a Path,
    members: &'a Members,
}

impl ArchiveBlobs<'_> {
    fn staged(&self, kind: &'static str, descriptor: &Descriptor) -> Result<&Staged, ImportError> {
        let member = format!("blobs/sha256/{}", descriptor.digest.hex());
        let staged = self
            .members
            .lookup(&member)
            .ok_or_else(|| ImportError::Invalid {
                path: self.archive.to_owned(),
                source: BlobError::Missing {
                    kind,
                    digest: descriptor.digest.clone(),
                },
            })?;
        if staged.digest != descriptor.digest {
            return Err(ImportError::MemberMismatch {
                archive: self.archive.to_owned(),
                member,
                actual: staged.digest.clone(),
            });
        }
        crate::store::check(kind, descriptor, &staged.digest, staged.size).map_err(|source| {
            ImportError::Invalid {
                path: self.archive.to_owned(),
                source,
            }
        })?;
        Ok(staged)
    }
}

impl Blobs for ArchiveBlobs<'_> {
    fn read(&self, kind: &'static str, descriptor: &Descriptor) -> Result<Vec<u8>, ImportError> {
        let staged = self.staged(kind, descriptor)?;
        read_verified(&staged.temp, kind, descriptor).map_err(|source| ImportError::Invalid {
            path: self.archive.to_owned(),
            source,
        })
    }

    fn transfer(
        &self,
        store: &Store,
        kind: &'static str,
        descriptor: &Descriptor,
    ) -> Result<(), ImportError> {
        let staged = self.staged(kind, descriptor)?;
        store
            .adopt(&staged.temp, &staged.digest)
            .map_err(ImportError::Write)
    }

    fn transfer_unpacking(
        &self,
        store: &Store,
        descriptor: &Descriptor,
        diff_id: &Digest,
        unpacking: &mut Unpacking,
    ) -> Result<(), ImportError> {
        let staged = self.staged("layer", descriptor)?;
        apply_staged(store, self.archive, staged, descriptor, diff_id, unpacking)
    }
}

/// The names a layout records for one of its `index.json` entries.
fn source_names(source: &Path, descriptor: &Descriptor) -> Result<Vec<String>, ImportError> {
    let name = descriptor
        .annotations
        .get(ANNOTATION_CONTAINERD_NAME)
        .or_else(|| descriptor.annotations.get(ANNOTATION_REF_NAME));
    match name {
        None => Ok(Vec::new()),
        Some(name) => normalize_name(name)
            .map(|n| vec![n])
            .map_err(|e| ImportError::Name {
                path: source.to_owned(),
                name: name.clone(),
                source: e,
            }),
    }
}

/// Decides which manifests of a layout to import, and checks them and their configs.
fn plan_layout(
    blobs: &dyn Blobs,
    source: &Path,
    index_bytes: &[u8],
    options: &ImportOptions,
) -> Result<Vec<Planned>, ImportError> {
    let index: Index = serde_json::from_slice(index_bytes).map_err(|e| ImportError::Json {
        source_path: source.to_owned(),
        member: "index.json".to_owned(),
        source: e,
    })?;
    let wanted = options.platform.clone().unwrap_or_else(Platform::host);
    let invalid = |e| ImportError::Invalid {
        path: source.to_owned(),
        source: e,
    };
    let no_platform = || ImportError::NoPlatform {
        path: source.to_owned(),
        platform: wanted.clone(),
    };

    let mut chosen: Vec<(Descriptor, Vec<String>)> = Vec::new();
    let mut flat: Vec<(Descriptor, Vec<String>)> = Vec::new();
    for descriptor in &index.manifests {
        // Referrers (SBOMs, signatures) exported along with an image are not images.
        if descriptor.is_referrer() {
            continue;
        }
        let names = source_names(source, descriptor)?;
        if spec::is_index(&descriptor.media_type) {
            let bytes = blobs.read("index", descriptor)?;
            let nested = parse_index(descriptor, &bytes).map_err(invalid)?;
            let pick = nested
                .manifests
                .iter()
                .find(|m| m.platform.as_ref().is_some_and(|p| p.satisfies(&wanted)))
                .ok_or_else(no_platform)?;
            chosen.push((pick.clone(), names));
        } else if spec::is_manifest(&descriptor.media_type) {
            flat.push((descriptor.clone(), names));
        } else {
            return Err(invalid(BlobError::UnknownMediaType {
                kind: "manifest",
                digest: descriptor.digest.clone(),
                media_type: descriptor.media_type.clone(),
            }));
        }
    }
    // A flat index of several platforms (or an explicit --platform) filters by platform; entries
    // without a platform are kept.
    let mut platforms: Vec<&Platform> = flat
        .iter()
        .filter_map(|(d, _)| d.platform.as_ref())
        .collect();
    platforms.dedup();
    if options.platform.is_some() || platforms.len() > 1 {
        let before = flat.len();
        flat.retain(|(d, _)| d.platform.as_ref().is_none_or(|p| p.satisfies(&wanted)));
        if before > 0 && flat.is_empty() && chosen.is_empty() {
            return Err(no_platform());
        }
    }
    chosen.extend(flat);

    // One entry per manifest, with all its names.
    let mut merged: Vec<(Descriptor, Vec<String>)> = Vec::new();
    for (descriptor, names) in chosen {
        match merged
            .iter_mut()
            .find(|(d, _)| d.digest == descriptor.digest)
        {
            Some((_, all)) => {
                for name in names {
                    if !all.contains(&name) {
                        all.push(name);
                    }
                }
            }
            None => merged.push((descriptor, names)),
        }
    }
    apply_tag(source, options, &mut merged)?;

    let mut planned = Vec::new();
    for (mut descriptor, names) in merged {
        let manifest_bytes = blobs.read("manifest", &descriptor)?;
        let manifest = parse_manifest(&descriptor, &manifest_bytes).map_err(invalid)?;
        let config_bytes = blobs.read("config", &manifest.config)?;
        let config = parse_config(&manifest.config, &config_bytes).map_err(invalid)?;
        check_layer_count(&descriptor.digest, &manifest, &config).map_err(invalid)?;
        descriptor.annotations.clear();
        descriptor.platform = platform_of(&config);
        planned.push(Planned {
            descriptor,
            manifest_bytes,
            manifest,
            config_bytes,
            diff_ids: config.rootfs.diff_ids,
            names,
        });
    }
    Ok(planned)
}

fn platform_of(config: &ImageConfig) -> Option<Platform> {
    (!config.os.is_empty() && !config.architecture.is_empty()).then(|| config.platform())
}

fn apply_tag(
    source: &Path,
    options: &ImportOptions,
    images: &mut [(Descriptor, Vec<String>)],
) -> Result<(), ImportError> {
    if images.is_empty() {
        return Err(ImportError::NoImages {
            path: source.to_owned(),
        });
    }
    if let Some(tag) = &options.tag {
        if images.len() != 1 {
            return Err(ImportError::TagNeedsOneImage {
                path: source.to_owned(),
                count: images.len(),
            });
        }
        let name = normalize_name(tag).map_err(|e| ImportError::Name {
            path: source.to_owned(),
            name: tag.clone(),
            source: e,
        })?;
        images[0].1 = vec![name];
    }
    Ok(())
}

/// Stores the layers, configs and manifests of planned layout images, applying the layers with
/// `unpacking` when given.
fn store_layout(
    store: &Store,
    blobs: &dyn Blobs,
    planned: &[Planned],
    mut unpacking: Option<&mut Unpacking>,
) -> Result<(), ImportError> {
    for image in planned {
        for (layer, diff_id) in image.manifest.layers.iter().zip(&image.diff_ids) {
            match unpacking.as_deref_mut() {
                Some(unpacking) => blobs.transfer_unpacking(store, layer, diff_id, unpacking)?,
                None => blobs.transfer(store, "layer", layer)?,
            }
        }
        store
            .put_bytes(&image.manifest.config, &image.config_bytes)
            .map_err(ImportError::Write)?;
        store
            .put_bytes(&image.descriptor, &image.manifest_bytes)
            .map_err(ImportError::Write)?;
    }
    Ok(())
}

/// One image in a docker-archive's `manifest.json`.
#[derive(Debug, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// Converts the images of a legacy docker-archive to OCI manifests and stores them, applying
/// the layers of the one image when asked to unpack it.
fn import_docker(
    store: &Store,
    members: &Members,
    source: &Path,
    list: &[u8],
    options: &ImportOptions,
    unpack: Option<UnpackTarget<'_>>,
) -> Result<(Vec<Planned>, Option<Unpacking>), ImportError> {
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(list).map_err(|e| ImportError::Json {
            source_path: source.to_owned(),
            member: "manifest.json".to_owned(),
            source: e,
        })?;
    let missing = |member: &str| ImportError::MissingMember {
        source_path: source.to_owned(),
        member: member.to_owned(),
    };
    let mut images: Vec<(Descriptor, Vec<String>)> = Vec::new();
    let mut planned = Vec::new();
    let mut staged_layers: Vec<Vec<&Staged>> = Vec::new();
    for entry in &entries {
        let config_bytes = members
            .read_small(source, &entry.config)?
            .ok_or_else(|| missing(&entry.config))?;
        let config_descriptor = Descriptor::new(
            MEDIA_TYPE_OCI_CONFIG,
            Digest::of(&config_bytes),
            config_bytes.len() as u64,
        );
        let config =
            parse_config(&config_descriptor, &config_bytes).map_err(|e| ImportError::Invalid {
                path: source.to_owned(),
                source: e,
            })?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(ImportError::LayerCount {
                path: source.to_owned(),
                config: entry.config.clone(),
                layers: entry.layers.len(),
                diff_ids: config.rootfs.diff_ids.len(),
            });
        }
        let mut layers = Vec::new();
        let mut staged = Vec::new();
        for (path, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            let member = members.lookup(path).ok_or_else(|| missing(path))?;
            let media_type = sniff_layer_type(&member.head);
            if media_type == MEDIA_TYPE_OCI_LAYER && member.digest != *diff_id {
                return Err(ImportError::DiffId {
                    path: source.to_owned(),
                    layer: path.clone(),
                    expected: diff_id.clone(),
                    actual: member.digest.clone(),
                });
            }
            layers.push(Descriptor::new(
                media_type,
                member.digest.clone(),
                member.size,
            ));
            staged.push(member);
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_owned()),
            artifact_type: None,
            config: config_descriptor,
            layers,
            subject: None,
            annotations: Default::default(),
        };
        let manifest_bytes =
            serde_json::to_vec_pretty(&manifest).map_err(|e| ImportError::Json {
                source_path: source.to_owned(),
                member: "manifest.json".to_owned(),
                source: e,
            })?;
        let mut descriptor = Descriptor::new(
            MEDIA_TYPE_OCI_MANIFEST,
            Digest::of(&manifest_bytes),
            manifest_bytes.len() as u64,
        );
        descriptor.platform = platform_of(&config);
        let mut names = Vec::new();
        for tag in entry.repo_tags.iter().flatten() {
            let name = normalize_name(tag).map_err(|e| ImportError::Name {
                path: source.to_owned(),
                name: tag.clone(),
                source: e,
            })?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
        images.push((descriptor.clone(), names.clone()));
        staged_layers.push(staged);
        planned.push(Planned {
            descriptor,
            manifest_bytes,
            manifest,
            diff_ids: config.rootfs.diff_ids,
            config_bytes,
            names,
        });
    }
    apply_tag(source, options, &mut images)?;
    for (image, (_, names)) in planned.iter_mut().zip(images) {
        image.names = names;
    }
    let mut unpacking = start_unpacking(unpack, source, &planned)?;
    for (image, staged) in planned.iter().zip(&staged_layers) {
        let layers = image.manifest.layers.iter().zip(&image.diff_ids);
        for (member, (layer, diff_id)) in staged.iter().zip(layers) {
            match &mut unpacking {
                Some(unpacking) => {
                    apply_staged(store, source, member, layer, diff_id, unpacking)?;
                }
                None => store
                    .adopt(&member.temp, &member.digest)
                    .map_err(ImportError::Write)?,
            }
        }
        store
            .put_bytes(&image.manifest.config, &image.config_bytes)
            .map_err(ImportError::Write)?;
        store
            .put_bytes(&image.descriptor, &image.manifest_bytes)
            .map_err(ImportError::Write)?;
    }
    Ok((planned, unpacking))
}

/// The OCI layer media type for a layer whose first bytes are `head`.
fn sniff_layer_type(head: &[u8]) -> &'static str {
    if head.starts_with(&[0x1f, 0x8b]) {
        MEDIA_TYPE_OCI_LAYER_GZIP
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        MEDIA_TYPE_OCI_LAYER_ZSTD
    } else {
        MEDIA_TYPE_OCI_LAYER
    }
}

/// A regular archive member, hashed and copied into `tmp/`.
#[derive(Debug)]
struct Staged {
    temp: PathBuf,
    digest: Digest,
    size: u64,
    head: Vec<u8>,
}

#[derive(Debug)]
enum Member {
    File(usize),
    /// A symlink or hard link, as a normalised archive path.
    Link(String),
}

/// The staged members of one archive; staged files not adopted are removed on drop.
#[derive(Debug)]
struct Members {
    by_path: HashMap<String, Member>,
    staged: Vec<Staged>,
}

impl Drop for Members {
    fn drop(&mut self) {
        for staged in &self.staged {
            // Adopted files are already gone; leftovers of a failed removal are gc's to clean.
            let _ = std::fs::remove_file(&staged.temp);
        }
    }
}

/// Normalises an archive path: no leading `./` or `/`, `..` resolved; `None` if it climbs out.
fn clean_path(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

impl Members {
    /// Reads the archive at `archive` (optionally gzip-compressed) in one pass, staging every
    /// regular member in the store's `tmp/`.
    fn stage(store: &Store, archive: &Path) -> Result<Members, ImportError> {
        let archive_error = |source| ImportError::Archive {
            path: archive.to_owned(),
            source,
        };
        let mut file = BufReader::new(fs::File::open(archive).map_err(archive_error)?);
        let mut magic = [0u8; 2];
        let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
        file.rewind().map_err(archive_error)?;
        let reader: Box<dyn Read> = if gzip {
            Box::new(flate2::read::GzDecoder::new(file))
        } else {
            Box::new(file)
        };
        let mut members = Members {
            by_path: HashMap::new(),
            staged: Vec::new(),
        };
        let mut tar = tar::Archive::new(reader);
        for entry in tar.entries().map_err(archive_error)? {
            let mut entry = entry.map_err(archive_error)?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(path) = clean_path(&raw) else {
                continue;
            };
            let kind = entry.header().entry_type();
            if kind.is_file() {
                let staged = stage_member(store, archive, &path, &mut entry)?;
                members.staged.push(staged);
                members
                    .by_path
                    .insert(path, Member::File(members.staged.len() - 1));
            } else if kind.is_symlink() || kind.is_hard_link() {
                let Some(target) = entry.link_name_bytes() else {
                    continue;
                };
                let target = String::from_utf8_lossy(&target).into_owned();
                let joined = if kind.is_symlink() && !target.starts_with('/') {
                    match path.rsplit_once('/') {
                        Some((parent, _)) => format!("{parent}/{target}"),
                        None => target,
                    }
                } else {
                    target
                };
                if let Some(target) = clean_path(&joined) {
                    members.by_path.insert(path, Member::Link(target));
                }
            }
        }
        Ok(members)
    }

    /// The staged file at `path`, following links.
    fn lookup(&self, path: &str) -> Option<&Staged> {
        let mut path = clean_path(path)?;
        for _ in 0..40 {
            match self.by_path.get(&path)? {
                Member::File(i) => return self.staged.get(*i),
                Member::Link(target) => path = target.clone(),
            }
        }
        None
    }

    /// Reads a small member (≤ 4 MiB), `None` if the archive has no such member.
    fn read_small(&self, archive: &Path, path: &str) -> Result<Option<Vec<u8>>, ImportError> {
        let Some(staged) = self.lookup(path) else {
            return Ok(None);
        };
        if staged.size > MAX_METADATA_BYTES {
            return Err(ImportError::MemberTooLarge {
                source_path: archive.to_owned(),
                member: path.to_owned(),
                limit: MAX_METADATA_BYTES,
            });
        }
        read_member_file(archive, path, &staged.temp).map(Some)
    }
}

/// Writes through to `inner`, keeping the first 8 bytes written (to sniff a layer's
/// compression from what was actually stored).
struct HeadWriter<W> {
    inner: W,
    head: Vec<u8>,
}

impl<W: Write> Write for HeadWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if self.head.len() < 8 {
            let take = (8 - self.head.len()).min(n);
            self.head.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn stage_member(
    store: &Store,
    archive: &Path,
    member: &str,
    reader: &mut dyn Read,
) -> Result<Staged, ImportError> {
    let temp = store.tmp_dir().join(fsutil::unique_name("import-"));
    let stage_error = |source| ImportError::Stage {
        archive: archive.to_owned(),
        member: member.to_owned(),
        source,
    };
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(stage_error)?;
    // Read and written on this thread, hashed on another ([`layer::chunks::copy_hashed`]).
    let mut out = HeadWriter {
        inner: file,
        head: Vec::new(),
    };
    let finish = layer::chunks::copy_hashed(reader, &mut out).and_then(|(digest, size)| {
        out.inner.sync_all()?;
        Ok((digest, size))
    });
    let head = out.head;
    match finish {
        Ok((digest, size)) => Ok(Staged {
            temp,
            digest,
            size,
            head,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(stage_error(e))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap values known to be valid")]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_are_normalised() {
        assert_eq!(
            clean_path("./blobs//sha256/ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(clean_path("a/../b").as_deref(), Some("b"));
        assert_eq!(clean_path("../x"), None);
    }

    #[test]
    fn layer_types_are_sniffed_from_magic() {
        assert_eq!(
            sniff_layer_type(&[0x1f, 0x8b, 8]),
            MEDIA_TYPE_OCI_LAYER_GZIP
        );
        assert_eq!(
            sniff_layer_type(&[0x28, 0xb5, 0x2f, 0xfd]),
            MEDIA_TYPE_OCI_LAYER_ZSTD
        );
        assert_eq!(sniff_layer_type(b"etc/"), MEDIA_TYPE_OCI_LAYER);
    }
}
