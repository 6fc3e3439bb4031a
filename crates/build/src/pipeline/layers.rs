//! Reading an image back from the store: blobs checked against their descriptors, and the
//! filesystem its layers make, for SBOMs of images hardbox did not build.
//!
//! The store is an OCI image layout (`blobs/sha256/HEX`); every blob read here is hashed and its
//! size and digest compared with its descriptor before what it says is used. Layers are read as
//! a runtime applies them (bottom up, OCI whiteouts and opaque directories honoured, parent
//! directories resolved through symlinks inside the image), into a [`Tree`] that keeps only the
//! contents an SBOM reads (the dpkg database, copyright files, os-release); every other regular
//! file is hashed on the way and dropped.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::sync::Arc;

use fs_err as fs;
use oci::spec::Descriptor;
use oci::{Image, Store};
use sbom::{FileHasher, FileInfo};
use types::Sha256Writer;

use super::PipelineError;
use crate::tree::{self, Entry, Kind, Tree};

/// The largest file kept in memory (a copyright file or dpkg database bigger is not read).
const MAX_KEPT: u64 = 64 << 20;
/// Limits against archive bombs, across all layers of an image.
const MAX_BYTES: u64 = 64 << 30;
const MAX_ENTRIES: u64 = 4_000_000;

fn blob_path(store: &Store, descriptor: &Descriptor) -> std::path::PathBuf {
    store
        .root()
        .join("blobs")
        .join(descriptor.digest.algorithm())
        .join(descriptor.digest.hex())
}

/// Reads a (small) blob whole and checks it against `descriptor`.
pub(super) fn read_blob(
    store: &Store,
    image: &str,
    descriptor: &Descriptor,
    limit: u64,
) -> Result<Vec<u8>, PipelineError> {
    let error = |source: io::Error| PipelineError::Blob {
        image: image.to_owned(),
        digest: descriptor.digest.clone(),
        source,
    };
    if descriptor.size > limit {
        return Err(error(io::Error::other(format!(
            "{} bytes is more than the {limit} accepted",
            descriptor.size
        ))));
    }
    let file = fs::File::open(blob_path(store, descriptor)).map_err(error)?;
    let mut bytes = Vec::with_capacity(usize::try_from(descriptor.size).unwrap_or(0));
    file.take(descriptor.size + 1)
        .read_to_end(&mut bytes)
        .map_err(error)?;
    if bytes.len() as u64 != descriptor.size || types::Digest::of(&bytes) != descriptor.digest {
        return Err(error(io::Error::other(
            "the stored bytes do not match the descriptor's digest and size",
        )));
    }
    Ok(bytes)
}

/// Hashes what passes through.
struct Hashing<R> {
    inner: R,
    hash: Sha256Writer,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Whether an SBOM reads the file at this (canonical) path.
fn kept(path: &str) -> bool {
    path == "var/lib/dpkg/status"
        || path.starts_with("var/lib/dpkg/status.d/")
        || (path.starts_with("var/lib/dpkg/info/")
            && (path.ends_with(".list") || path.ends_with(".md5sums")))
        || (path.starts_with("usr/share/doc/") && path.ends_with("/copyright"))
        || path == "etc/os-release"
        || path == "usr/lib/os-release"
}

/// The filesystem of `image`'s layers and the hashes of its regular files (canonical path →
/// info).
pub(super) fn read_tree(
    store: &Store,
    reference: &str,
    image: &Image,
) -> Result<(Tree, HashMap<String, FileInfo>), PipelineError> {
    let mut tree = Tree::new();
    let mut hashes = HashMap::new();
    let mut budget = (MAX_BYTES, MAX_ENTRIES);
    for descriptor in &image.manifest.layers {
        let fail = |reason: String| PipelineError::Layer {
            image: reference.to_owned(),
            digest: descriptor.digest.clone(),
            reason,
        };
        let compression = layer::Compression::from_media_type(&descriptor.media_type)
            .ok_or_else(|| fail(format!("unsupported media type {}", descriptor.media_type)))?;
        let file = fs::File::open(blob_path(store, descriptor)).map_err(|e| fail(e.to_string()))?;
        let mut hashing = Hashing {
            inner: io::BufReader::with_capacity(256 << 10, file),
            hash: Sha256Writer::new(),
        };
        {
            let decompressed: Box<dyn Read + '_> = match compression {
                layer::Compression::None => Box::new(&mut hashing),
                layer::Compression::Gzip => {
                    Box::new(flate2::read::MultiGzDecoder::new(&mut hashing))
                }
                layer::Compression::Zstd => Box::new(
                    zstd::stream::read::Decoder::new(&mut hashing)
                        .map_err(|e| fail(e.to_string()))?,
                ),
            };
            let mut archive = tar::Archive::new(decompressed);
            apply(&mut archive, &mut tree, &mut hashes, &mut budget).map_err(&fail)?;
            // Whatever follows the tar's end is part of the blob too.
            io::copy(&mut archive.into_inner(), &mut io::sink())
                .map_err(|e| fail(e.to_string()))?;
        }
        io::copy(&mut hashing, &mut io::sink()).map_err(|e| fail(e.to_string()))?;
        let (digest, size, _) = hashing.hash.finish();
        if digest != descriptor.digest || size != descriptor.size {
            return Err(fail(format!(
                "the stored blob is {digest} ({size} bytes), not what the manifest names"
            )));
        }
    }
    Ok((tree, hashes))
}

/// Applies one layer's entries to `tree`.
fn apply(
    archive: &mut tar::Archive<Box<dyn Read + '_>>,
    tree: &mut Tree,
    hashes: &mut HashMap<String, FileInfo>,
    budget: &mut (u64, u64),
) -> Result<(), String> {
    let mut added: HashSet<String> = HashSet::new();
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let entry_error = |reason: String| format!("entry {raw:?}: {reason}");
        budget.1 = budget
            .1
            .checked_sub(1)
            .ok_or_else(|| entry_error(format!("the image has more than {MAX_ENTRIES} entries")))?;
        let size = entry.size();
        budget.0 = budget.0.checked_sub(size).ok_or_else(|| {
            entry_error(format!("the image unpacks to more than {MAX_BYTES} bytes"))
        })?;
        let clean = tree::clean(&raw).map_err(|e| entry_error(e.to_string()))?;
        if clean.is_empty() {
            continue;
        }
        let name = tree::file_name(&clean);
        let parent = tree::parent(&clean);
        if name == ".wh..wh..opq" {
            let dir = tree
                .resolve(parent, true)
                .map_err(|e| entry_error(e.to_string()))?;
            let below: Vec<String> = tree
                .children_of(&dir)
                .map(|(p, _)| p.clone())
                .filter(|p| !added.contains(p))
                .collect();
            for path in below {
                tree.remove(&path);
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let target = if parent.is_empty() {
                hidden.to_owned()
            } else {
                format!("{parent}/{hidden}")
            };
            if let Ok(placed) = tree.place(&target) {
                tree.remove(&placed);
            }
            continue;
        }
        let placed = tree.place(&clean).map_err(|e| entry_error(e.to_string()))?;
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let uid = u32::try_from(header.uid().unwrap_or(0)).unwrap_or(0);
        let gid = u32::try_from(header.gid().unwrap_or(0)).unwrap_or(0);
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        let new = match header.entry_type() {
            tar::EntryType::Directory => {
                if let Some(existing) = tree.get_mut(&placed).filter(|e| e.is_dir()) {
                    existing.mode = mode;
                    added.insert(placed);
                    continue;
                }
                Entry::directory(mode, uid, gid, 0)
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut hasher = FileHasher::new();
                let mut content = Vec::new();
                let keep = kept(&placed) && size <= MAX_KEPT;
                let mut buffer = vec![0u8; 64 << 10];
                loop {
                    let n = entry
                        .read(&mut buffer)
                        .map_err(|e| entry_error(e.to_string()))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buffer[..n]);
                    if keep {
                        content.extend_from_slice(&buffer[..n]);
                    }
                }
                hashes.insert(placed.clone(), hasher.finish(format!("/{placed}")));
                Entry::file(content, mode, uid, gid, 0)
            }
            tar::EntryType::Symlink => {
                let target = link.ok_or_else(|| entry_error("link without a target".to_owned()))?;
                let mut symlink = Entry::symlink(&target, 0);
                symlink.uid = uid;
                symlink.gid = gid;
                symlink
            }
            tar::EntryType::Link => {
                let target = link.ok_or_else(|| entry_error("link without a target".to_owned()))?;
                let target = tree::clean(&target)
                    .and_then(|t| tree.place(&t))
                    .map_err(|e| entry_error(e.to_string()))?;
                let content = match tree.get(&target).map(|e| &e.kind) {
                    Some(Kind::File(c)) | Some(Kind::Hardlink { content: c, .. }) => Arc::clone(c),
                    _ => return Err(entry_error(format!("hard link to missing file /{target}"))),
                };
                if let Some(info) = hashes.get(&target).cloned() {
                    hashes.insert(placed.clone(), info);
                }
                Entry {
                    kind: Kind::Hardlink { target, content },
                    mode,
                    uid,
                    gid,
                    mtime: 0,
                    package: None,
                }
            }
            // Devices, fifos and metadata entries hold no file content.
            _ => continue,
        };
        added.insert(placed.clone());
        tree.insert(&placed, new);
    }
    Ok(())
}
