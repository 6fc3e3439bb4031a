//! Deterministic layers and the OCI image, written to the store.
//!
//! A layer is a tar of tree entries in path order (hard links after the file they link to),
//! with owners and modes from the tree, every mtime clamped to `SOURCE_DATE_EPOCH`, no
//! atime/ctime, empty user and group names, and a PAX header only for a path or link target
//! longer than ustar holds. It is compressed with a fixed header (gzip: no mtime, no name) at a
//! fixed level. The tar is produced on one thread and compressed in fixed-size blocks on every
//! core ([`crate::compress`]) while the store hashes and writes the result, so the same tree and
//! epoch always give the same bytes, and the same digests, on any machine.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

use oci::spec::{
    Descriptor, History, ImageConfig, Manifest, Platform, RootFs, RunConfig, MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_OCI_LAYER_ZSTD, MEDIA_TYPE_OCI_MANIFEST,
};
use oci::{ImageWriter, Store, WriteError};
use types::Digest;

use crate::compress;
use crate::spec::{LayerCompression, Layers};
use crate::tree::{self, Entry, Kind, Tree};

/// Everything about the image that is not its filesystem.
#[derive(Debug, Clone, Default)]
pub struct ImageMeta {
    pub platform: Option<Platform>,
    pub source_date_epoch: u64,
    pub user: Option<String>,
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub exposed_ports: Vec<String>,
    pub stop_signal: Option<String>,
    /// Manifest annotations (`org.opencontainers.image.created` is added).
    pub annotations: BTreeMap<String, String>,
    /// Names to tag the image with in the store (none: stored unnamed).
    pub tags: Vec<String>,
    pub layers: Layers,
    /// What the history entry says created the image.
    pub created_by: String,
}

/// Why the image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Store(#[from] oci::StoreError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("failed to write layer {index} of the image")]
    Layer { index: usize, source: io::Error },
    #[error("failed to serialise the image config")]
    Config(#[source] serde_json::Error),
    #[error("the store named the manifest {actual}, not {expected} as staged")]
    ManifestChanged { expected: Digest, actual: Digest },
}

/// An image the store now holds.
#[derive(Debug, Clone)]
pub struct WrittenImage {
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<Digest>,
}

/// RFC 3339 UTC time of `epoch` seconds (from the year 10000 on, that year's first second:
/// OCI configs want four-digit years).
pub fn rfc3339(epoch: u64) -> String {
    types::time::rfc3339(epoch).unwrap_or_else(|| "9999-12-31T23:59:59Z".to_owned())
}

/// Splits the tree into at most `max` layers: the largest packages get their own layers, the
/// rest (and everything no package shipped) goes in the last one. Each layer carries the
/// directories its entries need.
pub fn partition(tree: &Tree, max: usize) -> Vec<BTreeSet<String>> {
    if max <= 1 {
        return vec![tree.iter().map(|(p, _)| p.clone()).collect()];
    }
    let mut sizes: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, entry) in tree.iter() {
        if let (Some(package), Some(content)) = (&entry.package, entry.content()) {
            *sizes.entry(package).or_default() += content.len() as u64;
        }
    }
    let mut by_size: Vec<(&str, u64)> = sizes.into_iter().collect();
    by_size.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let own: Vec<&str> = by_size.iter().take(max - 1).map(|(p, _)| *p).collect();
    let mut layers: Vec<BTreeSet<String>> = vec![BTreeSet::new(); own.len() + 1];
    let last = own.len();
    for (path, entry) in tree.iter() {
        if entry.is_dir() {
            continue;
        }
        let index = entry
            .package
            .as_deref()
            .and_then(|p| own.iter().position(|o| *o == p))
            .unwrap_or(last);
        layers[index].insert(path.clone());
        // A hard link must travel with its target.
        if let Kind::Hardlink { target, .. } = &entry.kind {
            layers[index].insert(target.clone());
        }
    }
    for layer in &mut layers {
        let files: Vec<String> = layer.iter().cloned().collect();
        for path in files {
            let mut dir = tree::parent(&path);
            while !dir.is_empty() && layer.insert(dir.to_owned()) {
                dir = tree::parent(dir);
            }
        }
    }
    // Directories with nothing below go in the last layer.
    for (path, entry) in tree.iter() {
        if entry.is_dir() && !layers.iter().any(|l| l.contains(path)) {
            layers[last].insert(path.clone());
        }
    }
    layers.retain(|l| !l.is_empty());
    layers
}

/// Writes the uncompressed tar of `paths` (all in `tree`) to `out`.
pub fn write_tar(
    tree: &Tree,
    paths: &BTreeSet<String>,
    epoch: u64,
    out: &mut dyn Write,
) -> io::Result<()> {
    // For each hard-link group, the first path (in write order) carries the content.
    let mut first_of: BTreeMap<&str, &str> = BTreeMap::new();
    for path in paths {
        if let Some(Entry {
            kind: Kind::Hardlink { target, .. },
            ..
        }) = tree.get(path)
        {
            let target_present = paths.contains(target)
                && tree
                    .get(target)
                    .is_some_and(|e| matches!(e.kind, Kind::File(_)));
            if target_present {
                let leader = first_of.entry(target.as_str()).or_insert(target.as_str());
                if path.as_str() < *leader {
                    *leader = path.as_str();
                }
            }
        }
    }
    let mut builder = tar::Builder::new(out);
    for path in paths {
        let Some(entry) = tree.get(path) else {
            continue;
        };
        let mut header = tar::Header::new_ustar();
        header.set_mode(entry.mode & 0o7777);
        header.set_uid(u64::from(entry.uid));
        header.set_gid(u64::from(entry.gid));
        header.set_mtime(entry.mtime.min(epoch));
        header.set_size(0);
        let mut name = path.clone();
        let mut pax: Vec<(&str, String)> = Vec::new();
        let mut data: &[u8] = &[];
        let mut link: Option<String> = None;
        match &entry.kind {
            Kind::Directory => {
                header.set_entry_type(tar::EntryType::Directory);
                name.push('/');
            }
            Kind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                link = Some(target.clone());
            }
            Kind::File(content) => match first_of.get(path.as_str()) {
                Some(leader) if *leader != path.as_str() => {
                    header.set_entry_type(tar::EntryType::Link);
                    link = Some((*leader).to_owned());
                }
                _ => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(content.len() as u64);
                    data = content;
                }
            },
            Kind::Hardlink { target, content } => {
                let leader = first_of.get(target.as_str()).copied();
                match leader {
                    Some(leader) if leader != path.as_str() => {
                        header.set_entry_type(tar::EntryType::Link);
                        link = Some(leader.to_owned());
                    }
                    Some(_) => {
                        // This link is the group's first path: it carries the content.
                        header.set_entry_type(tar::EntryType::Regular);
                        header.set_size(content.len() as u64);
                        data = content;
                    }
                    None => {
                        // The target is gone (hardening) or elsewhere: a plain copy.
                        header.set_entry_type(tar::EntryType::Regular);
                        header.set_size(content.len() as u64);
                        data = content;
                    }
                }
            }
        }
        if header.set_path(&name).is_err() {
            pax.push(("path", name.clone()));
            set_truncated_name(&mut header, &name);
        }
        if let Some(link) = &link {
            if link.len() > 100 || header.set_link_name(link).is_err() {
                pax.push(("linkpath", link.clone()));
                let truncated: String = link.chars().take(100).collect();
                let _ = header.set_link_name(truncated.as_str());
            }
        }
        if !pax.is_empty() {
            builder.append_pax_extensions(pax.iter().map(|(k, v)| (*k, v.as_bytes())))?;
        }
        header.set_cksum();
        builder.append(&header, data)?;
    }
    builder.finish()
}

/// Sets the ustar name field to the first 100 bytes of `name` (the PAX `path` says the rest).
fn set_truncated_name(header: &mut tar::Header, name: &str) {
    let bytes = name.as_bytes();
    let field = &mut header.as_old_mut().name;
    field.fill(0);
    let n = bytes.len().min(field.len());
    field[..n].copy_from_slice(&bytes[..n]);
}

/// Writes one layer to the store: the tar on one thread, compression on every core
/// ([`crate::compress`]), hashing and writing on this one. Returns the blob descriptor and the
/// diff_id.
fn write_layer(
    writer: &ImageWriter<'_>,
    tree: &Tree,
    paths: &BTreeSet<String>,
    epoch: u64,
    layers: &Layers,
) -> io::Result<(Descriptor, Digest)> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    std::thread::scope(|scope| {
        let (mut tar_out, mut compressed_in) =
            compress::pipeline(scope, layers.compression, layers.level, workers);
        let producer = scope.spawn(move || -> io::Result<Digest> {
            write_tar(tree, paths, epoch, &mut tar_out)?;
            tar_out.finish()
        });
        let media_type = match layers.compression {
            LayerCompression::Gzip => MEDIA_TYPE_OCI_LAYER_GZIP,
            LayerCompression::Zstd => MEDIA_TYPE_OCI_LAYER_ZSTD,
        };
        let stored = writer.put_blob_reader(media_type, &mut compressed_in);
        // Unblock the threads if storing stopped early.
        drop(compressed_in);
        let diff_id = producer
            .join()
            .map_err(|_| io::Error::other("the tar thread panicked"))?;
        let descriptor = stored.map_err(io::Error::other)?;
        Ok((descriptor, diff_id?))
    })
}

/// An image whose blobs (layers, config) are in the store but that `index.json` does not list
/// yet: its manifest, and the descriptor [`commit_image`] will give it, are known, so documents
/// about the image (SBOMs, attestations) can be made before it appears.
#[derive(Debug, Clone)]
pub struct StagedImage {
    pub manifest: Manifest,
    /// Digest and size of the manifest's JSON, as the store will name it.
    pub descriptor: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<Digest>,
    /// Names the image gets when committed.
    pub tags: Vec<String>,
}

/// Writes the image's layers and config through `writer` and prepares its manifest.
pub fn stage_image(
    writer: &ImageWriter<'_>,
    tree: &Tree,
    meta: &ImageMeta,
) -> Result<StagedImage, ImageError> {
    let epoch = meta.source_date_epoch;
    let created = rfc3339(epoch);
    let groups = partition(tree, meta.layers.max);
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let mut history = Vec::new();
    for (index, paths) in groups.iter().enumerate() {
        let (descriptor, diff_id) = write_layer(writer, tree, paths, epoch, &meta.layers)
            .map_err(|source| ImageError::Layer { index, source })?;
        layers.push(descriptor);
        diff_ids.push(diff_id);
        let packages: BTreeSet<&str> = paths
            .iter()
            .filter_map(|p| tree.get(p).and_then(|e| e.package.as_deref()))
            .collect();
        history.push(History {
            created: Some(created.clone()),
            created_by: Some(meta.created_by.clone()),
            comment: Some(format!(
                "{} entries from {} packages",
                paths.len(),
                packages.len()
            )),
            empty_layer: None,
        });
    }
    let platform = meta.platform.clone().unwrap_or_else(Platform::host);
    let ports = (!meta.exposed_ports.is_empty()).then(|| {
        meta.exposed_ports
            .iter()
            .map(|p| (p.clone(), serde_json::Map::new()))
            .collect()
    });
    let config = ImageConfig {
        created: Some(created.clone()),
        author: None,
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        config: Some(RunConfig {
            user: meta.user.clone(),
            env: Some(meta.env.clone()),
            entrypoint: meta.entrypoint.clone(),
            cmd: meta.cmd.clone(),
            working_dir: meta.working_dir.clone(),
            labels: (!meta.labels.is_empty()).then(|| meta.labels.clone()),
            exposed_ports: ports,
            stop_signal: meta.stop_signal.clone(),
        }),
        rootfs: RootFs {
            kind: "layers".to_owned(),
            diff_ids: diff_ids.clone(),
        },
        history,
    };
    let config_bytes = serde_json::to_vec(&config).map_err(ImageError::Config)?;
    let config_descriptor = writer.put_blob_bytes(MEDIA_TYPE_OCI_CONFIG, &config_bytes)?;
    let mut annotations = meta.annotations.clone();
    annotations.insert("org.opencontainers.image.created".to_owned(), created);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_owned()),
        artifact_type: None,
        config: config_descriptor.clone(),
        layers: layers.clone(),
        subject: None,
        annotations,
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(ImageError::Config)?;
    let descriptor = Descriptor::new(
        MEDIA_TYPE_OCI_MANIFEST,
        Digest::of(&manifest_bytes),
        manifest_bytes.len() as u64,
    );
    Ok(StagedImage {
        manifest,
        descriptor,
        config: config_descriptor,
        layers,
        diff_ids,
        tags: meta.tags.clone(),
    })
}

/// Lists a staged image in `index.json` under its tags (one atomic change).
pub fn commit_image(
    writer: &ImageWriter<'_>,
    staged: &StagedImage,
) -> Result<WrittenImage, ImageError> {
    let descriptor = writer.put_image(&staged.manifest, &staged.tags)?;
    if descriptor.digest != staged.descriptor.digest {
        return Err(ImageError::ManifestChanged {
            expected: staged.descriptor.digest.clone(),
            actual: descriptor.digest,
        });
    }
    Ok(WrittenImage {
        manifest: descriptor,
        config: staged.config.clone(),
        layers: staged.layers.clone(),
        diff_ids: staged.diff_ids.clone(),
    })
}

/// Writes the image: layers, config and manifest, then tags it, all through one store writer.
pub fn write_image(
    store: &Store,
    tree: &Tree,
    meta: &ImageMeta,
) -> Result<WrittenImage, ImageError> {
    let writer = store.writer()?;
    let staged = stage_image(&writer, tree, meta)?;
    commit_image(&writer, &staged)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap values known to be valid")]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_728_259_200), "2024-10-07T00:00:00Z");
        assert_eq!(rfc3339(951_782_400 + 3661), "2000-02-29T01:01:01Z");
    }

    #[test]
    fn long_paths_get_pax_headers_and_tars_are_stable() {
        let mut tree = Tree::new();
        let long = format!("opt/{}/file", "d".repeat(180));
        tree.insert(&long, Entry::file(b"x".to_vec(), 0o644, 0, 0, 99));
        tree.insert("a", Entry::symlink(&format!("/{long}"), 5));
        let paths: BTreeSet<String> = tree.iter().map(|(p, _)| p.clone()).collect();
        let mut first = Vec::new();
        write_tar(&tree, &paths, 50, &mut first).unwrap();
        let mut second = Vec::new();
        write_tar(&tree, &paths, 50, &mut second).unwrap();
        assert_eq!(first, second);
        let mut archive = tar::Archive::new(&first[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            assert!(entry.header().mtime().unwrap() <= 50);
            seen.push(entry.path().unwrap().to_string_lossy().into_owned());
            if let Some(link) = entry.link_name().unwrap() {
                assert_eq!(link.to_string_lossy(), format!("/{long}"));
            }
        }
        assert!(seen.contains(&long), "{seen:?}");
    }
}
