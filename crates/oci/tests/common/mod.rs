//! Builders for test images: layers, configs, manifests, OCI layouts, OCI archives and
//! docker-archives, all written with the `tar` crate into temporary directories.

#![allow(
    dead_code,
    clippy::unwrap_used,
    reason = "test helpers unwrap values known to be valid"
)]

use std::io::Write;
use std::path::{Path, PathBuf};

use oci::spec::{
    Descriptor, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_OCI_MANIFEST,
};
use serde_json::json;
use types::Digest;

/// An uncompressed layer tar holding regular files.
pub fn layer_tar(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, content.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A built image: every blob, and the descriptors that point at them.
#[derive(Debug, Clone)]
pub struct Built {
    pub blobs: Vec<Vec<u8>>,
    pub manifest: Descriptor,
    pub manifest_bytes: Vec<u8>,
    pub config: Descriptor,
    pub config_bytes: Vec<u8>,
    /// (descriptor, uncompressed tar)
    pub layers: Vec<(Descriptor, Vec<u8>)>,
}

/// An image for `arch` whose layers are the given tars; `gzip_layers` compresses them.
pub fn build_image(arch: &str, tars: &[Vec<u8>], gzip_layers: bool) -> Built {
    let mut layers = Vec::new();
    for tar in tars {
        let (media_type, bytes) = if gzip_layers {
            (MEDIA_TYPE_OCI_LAYER_GZIP, gzip(tar))
        } else {
            (MEDIA_TYPE_OCI_LAYER, tar.clone())
        };
        layers.push((
            Descriptor::new(media_type, Digest::of(&bytes), bytes.len() as u64),
            bytes,
            tar.clone(),
        ));
    }
    let diff_ids: Vec<String> = tars.iter().map(|t| Digest::of(t).to_string()).collect();
    let config_bytes = serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/app"], "WorkingDir": "/srv", "User": "1000"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config = Descriptor::new(
        MEDIA_TYPE_OCI_CONFIG,
        Digest::of(&config_bytes),
        config_bytes.len() as u64,
    );
    build_manifest(config, config_bytes, layers)
}

/// Assembles a manifest from a config and `(descriptor, blob bytes, uncompressed tar)` layers.
pub fn build_manifest(
    config: Descriptor,
    config_bytes: Vec<u8>,
    layers: Vec<(Descriptor, Vec<u8>, Vec<u8>)>,
) -> Built {
    let manifest_bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": config,
        "layers": layers.iter().map(|(d, _, _)| d).collect::<Vec<_>>(),
    }))
    .unwrap();
    let manifest = Descriptor::new(
        MEDIA_TYPE_OCI_MANIFEST,
        Digest::of(&manifest_bytes),
        manifest_bytes.len() as u64,
    );
    let mut blobs = vec![manifest_bytes.clone(), config_bytes.clone()];
    blobs.extend(layers.iter().map(|(_, b, _)| b.clone()));
    Built {
        blobs,
        manifest,
        manifest_bytes,
        config,
        config_bytes,
        layers: layers.into_iter().map(|(d, _, t)| (d, t)).collect(),
    }
}

/// A descriptor with the ref.name annotation.
pub fn named(descriptor: &Descriptor, name: &str) -> Descriptor {
    let mut d = descriptor.clone();
    d.annotations
        .insert(oci::spec::ANNOTATION_REF_NAME.to_owned(), name.to_owned());
    d
}

/// Writes an OCI layout with these blobs and `index.json` entries.
pub fn write_layout(dir: &Path, blobs: &[Vec<u8>], entries: &[Descriptor]) {
    let blob_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir).unwrap();
    for blob in blobs {
        std::fs::write(blob_dir.join(Digest::of(blob).hex()), blob).unwrap();
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index =
        json!({"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": entries});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Tars a directory's contents (paths relative to it) into `archive`.
pub fn tar_dir(dir: &Path, archive: &Path) -> PathBuf {
    let file = std::fs::File::create(archive).unwrap();
    let mut builder = tar::Builder::new(file);
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir).unwrap();
    builder.finish().unwrap();
    archive.to_owned()
}

/// Members for an archive written by [`write_tar`].
pub enum Member {
    File(String, Vec<u8>),
    Symlink(String, String),
}

pub fn write_tar(archive: &Path, members: &[Member]) {
    let file = std::fs::File::create(archive).unwrap();
    let mut builder = tar::Builder::new(file);
    for member in members {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        match member {
            Member::File(path, bytes) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(bytes.len() as u64);
                builder
                    .append_data(&mut header, path, bytes.as_slice())
                    .unwrap();
            }
            Member::Symlink(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    builder.finish().unwrap();
}

/// A legacy docker-archive (as `docker save` writes it) of an image with uncompressed layers;
/// the last layer repeats the first, as a symlink to it.
pub fn write_docker_archive(archive: &Path, image: &Built, repo_tags: &[&str]) {
    let config_name = format!("{}.json", image.config.digest.hex());
    let mut members = vec![Member::File(
        config_name.clone(),
        image.config_bytes.clone(),
    )];
    let mut layer_paths = Vec::new();
    for (i, (_, tar)) in image.layers.iter().enumerate() {
        let id = format!("{:064x}", i + 1);
        let path = format!("{id}/layer.tar");
        let first = image.layers.iter().position(|(_, t)| t == tar).unwrap();
        if first < i {
            members.push(Member::Symlink(
                path.clone(),
                format!("../{:064x}/layer.tar", first + 1),
            ));
        } else {
            members.push(Member::File(path.clone(), tar.clone()));
        }
        layer_paths.push(path);
    }
    let manifest = json!([{"Config": config_name, "RepoTags": repo_tags, "Layers": layer_paths}]);
    members.push(Member::File(
        "manifest.json".to_owned(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    write_tar(archive, &members);
}

/// The host's architecture in OCI terms, and another one.
pub fn host_and_other_arch() -> (String, String) {
    let host = oci::spec::Platform::host().architecture;
    let other = if host == "s390x" { "ppc64le" } else { "s390x" };
    (host, other.to_owned())
}
