//! `image export`: one image out of the store as an OCI layout directory, an OCI archive or a
//! legacy docker-archive (as `docker save` writes it).
//!
//! Guarantees: the output path must not exist; everything is written to a hidden temporary sibling
//! and renamed into place only when complete (a rename that refuses to replace anything), so a
//! failed or interrupted export leaves no half-written output. Every blob is verified against its
//! descriptor while it is copied; docker-archive layers are decompressed on the way and checked
//! against the config's `diff_ids`.

use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use fs_err as fs;
use fsutil::{LockMode, TempPath};
use serde::Serialize;
use types::{Digest, Sha256Writer};

use crate::error::{BlobError, ResolveError, StoreError};
use crate::images::ReadImageError;
use crate::spec::{Descriptor, Index, Layout, ANNOTATION_REF_NAME, EMPTY_JSON, MEDIA_TYPE_EMPTY};
use crate::store::{check, Image, Store};
use crate::write::{referrers_in, Referrer};

/// The formats `image export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    OciDir,
    OciArchive,
    DockerArchive,
}

/// Why an export failed. The output path is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path} already exists")]
    OutputExists { path: PathBuf },
    #[error("failed to write {path}")]
    Write { path: PathBuf, source: io::Error },
    #[error("failed to export image {digest}")]
    Blob { digest: Digest, source: BlobError },
    #[error("layer {layer} of image {image} has diff_id {actual} but its config says {expected}")]
    DiffId {
        image: Digest,
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error(transparent)]
    Read(#[from] ReadImageError),
}

impl From<StoreError> for ExportError {
    fn from(e: StoreError) -> ExportError {
        ExportError::Read(ReadImageError::Store(e))
    }
}

impl From<ResolveError> for ExportError {
    fn from(e: ResolveError) -> ExportError {
        ExportError::Read(ReadImageError::Resolve(e))
    }
}

/// A reader that hashes what passes through it.
struct HashReader<R> {
    inner: R,
    hash: Sha256Writer,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

impl Store {
    /// Writes the image `reference` names to `output` in `format`.
    pub fn export(
        &self,
        reference: &str,
        format: ExportFormat,
        output: &Path,
    ) -> Result<(), ExportError> {
        if fs::symlink_metadata(output).is_ok() {
            return Err(ExportError::OutputExists {
                path: output.to_owned(),
            });
        }
        let _lock = self.lock_store(LockMode::Shared)?;
        let (image, names) = self.load_reference(reference)?;
        let referrers = if format == ExportFormat::DockerArchive {
            Vec::new()
        } else {
            self.referrers_of(&image.descriptor.digest)?
        };
        let parent = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let file_name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "export".to_owned());
        let mut temp =
            TempPath::new(parent.join(fsutil::unique_name(&format!(".{file_name}.tmp-"))));
        let write_error = |path: &Path| {
            let path = path.to_owned();
            move |source| ExportError::Write { path, source }
        };
        match format {
            ExportFormat::OciDir => self.write_oci_dir(&image, &names, &referrers, temp.path())?,
            ExportFormat::OciArchive | ExportFormat::DockerArchive => {
                let file = fs::File::create(temp.path()).map_err(write_error(temp.path()))?;
                let mut tar = tar::Builder::new(BufWriter::new(file));
                if format == ExportFormat::OciArchive {
                    self.write_oci_archive(&image, &names, &referrers, &mut tar, temp.path())?;
                } else {
                    self.write_docker_archive(&image, &names, &mut tar, temp.path())?;
                }
                let buffered = tar.into_inner().map_err(write_error(temp.path()))?;
                let file = buffered
                    .into_inner()
                    .map_err(|e| write_error(temp.path())(e.into_error()))?;
                file.sync_all().map_err(write_error(temp.path()))?;
            }
        }
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            temp.path(),
            rustix::fs::CWD,
            output,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => temp.keep(),
            Err(rustix::io::Errno::EXIST) => {
                return Err(ExportError::OutputExists {
                    path: output.to_owned(),
                })
            }
            Err(e) => return Err(write_error(output)(e.into())),
        }
        fsutil::sync_dir(&parent).map_err(write_error(&parent))
    }

    fn blob_error(image: &Image) -> impl Fn(BlobError) -> ExportError + '_ {
        move |source| ExportError::Blob {
            digest: image.descriptor.digest.clone(),
            source,
        }
    }

    /// The referrers of `subject`, and theirs, in `index.json` order.
    fn referrers_of(&self, subject: &Digest) -> Result<Vec<Referrer>, StoreError> {
        let index = self.read_index()?;
        let all = referrers_in(self, &index);
        let mut wanted = vec![subject.clone()];
        let mut out: Vec<Referrer> = Vec::new();
        while let Some(digest) = wanted.pop() {
            for referrer in all.iter().filter(|r| r.subject == digest) {
                if !out
                    .iter()
                    .any(|o| o.descriptor.digest == referrer.descriptor.digest)
                {
                    wanted.push(referrer.descriptor.digest.clone());
                    out.push(referrer.clone());
                }
            }
        }
        Ok(out)
    }

    /// The layout `index.json` for an exported image: one entry per name, then its referrers
    /// (unnamed, with their `artifactType`), as OCI 1.1 layouts list them.
    fn export_index(image: &Image, names: &[String], referrers: &[Referrer]) -> Index {
        let mut index = Index::default();
        let mut entry = image.descriptor.clone();
        entry.annotations.clear();
        if names.is_empty() {
            index.manifests.push(entry.clone());
        }
        for name in names {
            let mut named = entry.clone();
            named
                .annotations
                .insert(ANNOTATION_REF_NAME.to_owned(), name.clone());
            index.manifests.push(named);
        }
        index
            .manifests
            .extend(referrers.iter().map(|r| r.descriptor.clone()));
        index
    }

    /// Every blob of an image and its referrers: manifests, configs, layers (deduplicated).
    fn blobs_of(&self, image: &Image, referrers: &[Referrer]) -> Vec<(&'static str, Descriptor)> {
        let mut all = vec![
            ("manifest", image.descriptor.clone()),
            ("config", image.manifest.config.clone()),
        ];
        let mut push = |kind: &'static str, descriptor: &Descriptor| {
            if !all.iter().any(|(_, d)| d.digest == descriptor.digest) {
                all.push((kind, descriptor.clone()));
            }
        };
        for layer in &image.manifest.layers {
            push("layer", layer);
        }
        for referrer in referrers {
            push("referrer manifest", &referrer.descriptor);
            // The empty config every referrer shares.
            push("config", &empty_descriptor());
            for blob in &referrer.blobs {
                push("referrer blob", blob);
            }
        }
        all
    }

    /// Copies a blob into `writer`, verifying it against `descriptor`.
    fn copy_verified(
        &self,
        kind: &'static str,
        descriptor: &Descriptor,
        writer: &mut dyn Write,
    ) -> Result<Result<(), BlobError>, io::Error> {
        let file = match self.open_blob(kind, descriptor) {
            Ok(f) => f,
            Err(e) => return Ok(Err(e)),
        };
        let mut reader = HashReader {
            inner: file.take(descriptor.size + 1),
            hash: Sha256Writer::new(),
        };
        io::copy(&mut reader, writer)?;
        let (digest, size, _) = reader.hash.finish();
        Ok(check(kind, descriptor, &digest, size))
    }

    fn write_oci_dir(
        &self,
        image: &Image,
        names: &[String],
        referrers: &[Referrer],
        dir: &Path,
    ) -> Result<(), ExportError> {
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(|source| ExportError::Write {
            path: blobs.clone(),
            source,
        })?;
        let layout = dir.join("oci-layout");
        let bytes = to_json(&Layout::default()).map_err(|source| ExportError::Write {
            path: layout.clone(),
            source,
        })?;
        write_synced(&layout, &bytes)?;
        for (kind, descriptor) in self.blobs_of(image, referrers) {
            let path = blobs.join(descriptor.digest.hex());
            let write_error = |source| ExportError::Write {
                path: path.clone(),
                source,
            };
            let mut file = fs::File::create(&path).map_err(write_error)?;
            self.copy_verified(kind, &descriptor, &mut file)
                .map_err(write_error)?
                .map_err(Self::blob_error(image))?;
            file.sync_all().map_err(write_error)?;
        }
        let index = dir.join("index.json");
        let bytes = to_json(&Self::export_index(image, names, referrers)).map_err(|source| {
            ExportError::Write {
                path: index.clone(),
                source,
            }
        })?;
        write_synced(&index, &bytes)?;
        for d in [blobs.as_path(), &dir.join("blobs"), dir] {
            fsutil::sync_dir(d).map_err(|source| ExportError::Write {
                path: d.to_owned(),
                source,
            })?;
        }
        Ok(())
    }

    fn write_oci_archive(
        &self,
        image: &Image,
        names: &[String],
        referrers: &[Referrer],
        tar: &mut tar::Builder<BufWriter<fs::File>>,
        path: &Path,
    ) -> Result<(), ExportError> {
        let write_error = |source| ExportError::Write {
            path: path.to_owned(),
            source,
        };
        append_dir(tar, "blobs/").map_err(write_error)?;
        append_dir(tar, "blobs/sha256/").map_err(write_error)?;
        append_bytes(
            tar,
            "oci-layout",
            &to_json(&Layout::default()).map_err(write_error)?,
        )
        .map_err(write_error)?;
        for (kind, descriptor) in self.blobs_of(image, referrers) {
            let name = format!("blobs/sha256/{}", descriptor.digest.hex());
            let file = self
                .open_blob(kind, &descriptor)
                .map_err(Self::blob_error(image))?;
            let mut reader = HashReader {
                inner: file.take(descriptor.size),
                hash: Sha256Writer::new(),
            };
            tar.append_data(&mut file_header(descriptor.size), &name, &mut reader)
                .map_err(write_error)?;
            let (digest, size, _) = reader.hash.finish();
            check(kind, &descriptor, &digest, size).map_err(Self::blob_error(image))?;
        }
        let index = to_json(&Self::export_index(image, names, referrers)).map_err(write_error)?;
        append_bytes(tar, "index.json", &index).map_err(write_error)
    }

    fn write_docker_archive(
        &self,
        image: &Image,
        names: &[String],
        tar: &mut tar::Builder<BufWriter<fs::File>>,
        path: &Path,
    ) -> Result<(), ExportError> {
        let write_error = |source| ExportError::Write {
            path: path.to_owned(),
            source,
        };
        let config_name = format!("{}.json", image.manifest.config.digest.hex());
        append_bytes(tar, &config_name, &image.config_bytes).map_err(write_error)?;
        let mut layer_names: Vec<String> = Vec::new();
        for (layer, diff_id) in image
            .manifest
            .layers
            .iter()
            .zip(&image.config.rootfs.diff_ids)
        {
            let name = format!("{}/layer.tar", diff_id.hex());
            if !layer_names.contains(&name) {
                append_dir(tar, &format!("{}/", diff_id.hex())).map_err(write_error)?;
                self.append_layer(image, layer, diff_id, &name, tar, path)?;
            }
            layer_names.push(name);
        }
        #[derive(Serialize)]
        struct Entry<'a> {
            #[serde(rename = "Config")]
            config: &'a str,
            #[serde(rename = "RepoTags")]
            repo_tags: &'a [String],
            #[serde(rename = "Layers")]
            layers: &'a [String],
        }
        let manifest = [Entry {
            config: &config_name,
            repo_tags: names,
            layers: &layer_names,
        }];
        let manifest = to_json(&manifest).map_err(write_error)?;
        append_bytes(tar, "manifest.json", &manifest).map_err(write_error)
    }

    /// Appends one layer uncompressed as `name`, checking its digest and diff_id.
    fn append_layer(
        &self,
        image: &Image,
        layer: &Descriptor,
        diff_id: &Digest,
        name: &str,
        tar: &mut tar::Builder<BufWriter<fs::File>>,
        path: &Path,
    ) -> Result<(), ExportError> {
        let write_error = |source| ExportError::Write {
            path: path.to_owned(),
            source,
        };
        let compression =
            layer::Compression::from_media_type(&layer.media_type).ok_or_else(|| {
                Self::blob_error(image)(BlobError::UnknownMediaType {
                    kind: "layer",
                    digest: layer.digest.clone(),
                    media_type: layer.media_type.clone(),
                })
            })?;
        let file = self
            .open_blob("layer", layer)
            .map_err(Self::blob_error(image))?;
        let mut compressed = HashReader {
            inner: file.take(layer.size + 1),
            hash: Sha256Writer::new(),
        };
        // Decompress into tmp/ first: the tar header needs the size up front.
        let staged_path = self.tmp_dir().join(fsutil::unique_name("export-"));
        let staged = TempPath::new(staged_path.clone());
        let stage_error = |source| ExportError::Write {
            path: staged_path.clone(),
            source,
        };
        let mut out = Sha256Writer::wrap(BufWriter::new(
            fs::File::create(staged.path()).map_err(stage_error)?,
        ));
        match compression {
            layer::Compression::None => io::copy(&mut compressed, &mut out),
            layer::Compression::Gzip => io::copy(
                &mut flate2::read::MultiGzDecoder::new(&mut compressed),
                &mut out,
            ),
            layer::Compression::Zstd => zstd::stream::read::Decoder::new(&mut compressed)
                .and_then(|mut decoder| io::copy(&mut decoder, &mut out)),
        }
        .map_err(|source| {
            Self::blob_error(image)(BlobError::Read {
                kind: "layer",
                digest: layer.digest.clone(),
                path: self.blob_path(&layer.digest),
                source,
            })
        })?;
        // Trailing bytes after the compressed stream still count towards the digest.
        io::copy(&mut compressed, &mut io::sink()).map_err(write_error)?;
        let (digest, size, _) = compressed.hash.finish();
        check("layer", layer, &digest, size).map_err(Self::blob_error(image))?;
        let (actual_diff_id, uncompressed, buffered) = out.finish();
        if actual_diff_id != *diff_id {
            return Err(ExportError::DiffId {
                image: image.descriptor.digest.clone(),
                layer: layer.digest.clone(),
                expected: diff_id.clone(),
                actual: actual_diff_id,
            });
        }
        buffered
            .into_inner()
            .map_err(|e| stage_error(e.into_error()))?;
        let mut staged_file = fs::File::open(staged.path()).map_err(stage_error)?;
        tar.append_data(&mut file_header(uncompressed), name, &mut staged_file)
            .map_err(write_error)
    }
}

/// The descriptor of the empty JSON blob, the config of every referrer.
fn empty_descriptor() -> Descriptor {
    Descriptor::new(
        MEDIA_TYPE_EMPTY,
        Digest::of(EMPTY_JSON),
        EMPTY_JSON.len() as u64,
    )
}

/// Serialises one of the small JSON documents an export writes.
fn to_json<T: Serialize + ?Sized>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let write_error = |source| ExportError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::File::create(path).map_err(write_error)?;
    file.write_all(bytes).map_err(write_error)?;
    file.sync_all().map_err(write_error)
}

fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

fn append_dir(tar: &mut tar::Builder<BufWriter<fs::File>>, name: &str) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    tar.append_data(&mut header, name, io::empty())
}

fn append_bytes(
    tar: &mut tar::Builder<BufWriter<fs::File>>,
    name: &str,
    bytes: &[u8],
) -> io::Result<()> {
    tar.append_data(&mut file_header(bytes.len() as u64), name, bytes)
}
