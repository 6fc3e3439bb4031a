//! `hardbox save`: a sandbox's changes as a new image in the store, on top of the image it ran.
//!
//! Why it exists: a sandbox's writable layer and its workspace changes
//! ([`layer::capture`]) become layer tars; this module puts them on the base image and stores
//! the result as an ordinary OCI image, which `hardbox run TAG` runs and `image export` writes
//! as an OCI or docker archive (export is `oci`'s job: `Store::export(tag, format, path)`).
//!
//! ```text
//! let request = SaveRequest {
//!     base: Some(image digest of the sandbox),        // None for --host sandboxes
//!     layers: vec![NewLayer::file(system.tar, "system changes"),
//!                  NewLayer::file(workspace.tar, "workspace changes")],
//!     policy_digest: Some(policy digest), created: now, events: Some(<dir>/events.jsonl),
//!     tag, ..SaveRequest::default()
//! };
//! let outcome = build::save::save(&store, request)?;
//! ```
//!
//! What it guarantees:
//!
//! - The base image's config is kept as it was written (unknown fields included) and extended:
//!   `rootfs.diff_ids` and `history` get one entry per new layer, `created` and the labels
//!   [`LABEL_BASE_DIGEST`], [`LABEL_POLICY_DIGEST`] and [`LABEL_CREATED`] are set. The base's
//!   layers are reused as stored (Docker media types renamed to their OCI equivalents, same
//!   bytes). Without a base the image has only the new layers over an empty config for the
//!   host's platform, and [`SaveOutcome::base`] is `None`.
//! - New layers are compressed deterministically ([`crate::compress`]) and hashed while they
//!   are stored: the same tars, base and request give the same manifest digest.
//! - Everything is written through one [`oci::ImageWriter`] (the store lock held shared, so `gc`
//!   cannot remove a blob meanwhile); the tag is set only after every layer, the config and the
//!   events blob are stored, and the events are attached as an OCI 1.1 referrer
//!   ([`EVENTS_ARTIFACT_TYPE`]) right after. A failure before the tag leaves at most
//!   unreferenced blobs, which `system gc` removes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use oci::spec::{
    Descriptor, Manifest, Platform, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_OCI_LAYER_ZSTD, MEDIA_TYPE_OCI_MANIFEST,
};
use oci::{ImageWriter, Store, WriteError};
use serde_json::{json, Map, Value};
use types::Digest;

use crate::compress;
use crate::image::rfc3339;
use crate::spec::LayerCompression;

/// The config label (and manifest annotation) naming the base image's manifest digest.
pub const LABEL_BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
/// The config label naming the digest of the policy the sandbox ran under.
pub const LABEL_POLICY_DIGEST: &str = "io.hardbox.policy.digest";
/// The config label (and manifest annotation) with the image's creation time.
pub const LABEL_CREATED: &str = "org.opencontainers.image.created";
/// The `artifactType` of the sandbox's event log attached to a saved image.
pub const EVENTS_ARTIFACT_TYPE: &str = "application/vnd.hardbox.events.v1+jsonl";
/// What the history entries of saved layers say created them.
pub const CREATED_BY: &str = "hardbox save";

/// Where a new layer's uncompressed tar comes from.
pub enum LayerSource {
    Path(PathBuf),
    Reader(Box<dyn Read + Send>),
}

impl std::fmt::Debug for LayerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayerSource::Path(path) => f.debug_tuple("Path").field(path).finish(),
            LayerSource::Reader(_) => f.write_str("Reader(..)"),
        }
    }
}

/// One layer to add: an uncompressed tar (as `layer::capture` writes them) and what it is (the
/// history entry's comment).
#[derive(Debug)]
pub struct NewLayer {
    pub source: LayerSource,
    pub description: String,
}

impl NewLayer {
    pub fn file(path: impl Into<PathBuf>, description: impl Into<String>) -> NewLayer {
        NewLayer {
            source: LayerSource::Path(path.into()),
            description: description.into(),
        }
    }

    pub fn reader(reader: impl Read + Send + 'static, description: impl Into<String>) -> NewLayer {
        NewLayer {
            source: LayerSource::Reader(Box::new(reader)),
            description: description.into(),
        }
    }
}

/// What to save.
#[derive(Debug, Default)]
pub struct SaveRequest {
    /// The base image: a reference or digest the store resolves. `None`: an empty base (a
    /// `--host` sandbox's changes).
    pub base: Option<String>,
    /// Layers to put on the base, bottom first.
    pub layers: Vec<NewLayer>,
    /// Config labels to add (over the base's); the standard ones below are set after these.
    pub labels: BTreeMap<String, String>,
    /// The policy's digest, recorded as [`LABEL_POLICY_DIGEST`].
    pub policy_digest: Option<String>,
    /// Creation time, seconds since the epoch (config `created`, history, [`LABEL_CREATED`]).
    pub created: u64,
    /// The sandbox's `events.jsonl`, attached as a referrer of type [`EVENTS_ARTIFACT_TYPE`].
    pub events: Option<PathBuf>,
    /// The name the image gets in the store (`name[:tag]`).
    pub tag: String,
    pub compression: LayerCompression,
    /// gzip 1-9 or zstd 1-19; default 6 for gzip, 3 for zstd.
    pub level: Option<u32>,
}

/// A layer the save added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedLayer {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
    pub description: String,
}

/// What [`save`] stored.
#[derive(Debug, Clone)]
pub struct SaveOutcome {
    /// The new image's manifest, listed under [`SaveOutcome::tag`].
    pub manifest: Descriptor,
    pub config: Descriptor,
    /// The tag as the store normalised it.
    pub tag: String,
    /// The base image's manifest; `None` when the image was saved over an empty base.
    pub base: Option<Descriptor>,
    /// Layers the image has from its base, then the added ones.
    pub base_layers: usize,
    pub layers_added: Vec<AddedLayer>,
    /// The events referrer's manifest, when events were attached.
    pub events: Option<Descriptor>,
}

/// Why a save failed. The tag is unchanged whenever one is returned before the image was listed.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error(transparent)]
    Store(#[from] oci::StoreError),
    #[error("cannot save as {tag:?}")]
    Tag { tag: String, source: oci::NameError },
    #[error("base image {reference:?}")]
    Base {
        reference: String,
        source: oci::ResolveError,
    },
    #[error("failed to read base image {digest}")]
    ReadBase {
        digest: Digest,
        source: oci::BlobError,
    },
    #[error("config {digest} of the base image is not a JSON object with a rootfs")]
    BaseConfig { digest: Digest },
    #[error("failed to open layer {path}")]
    OpenLayer { path: PathBuf, source: io::Error },
    #[error("failed to store layer {index} ({description})")]
    Layer {
        index: usize,
        description: String,
        source: io::Error,
    },
    #[error("failed to store the events {path}")]
    Events { path: PathBuf, source: WriteError },
    #[error("failed to serialise the image config")]
    Config(#[source] serde_json::Error),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// The OCI media type of a stored layer (Docker names renamed, same bytes).
fn oci_layer_type(media_type: &str) -> String {
    match layer::Compression::from_media_type(media_type) {
        _ if media_type.starts_with("application/vnd.oci.") => media_type.to_owned(),
        Some(layer::Compression::None) => MEDIA_TYPE_OCI_LAYER.to_owned(),
        Some(layer::Compression::Gzip) => MEDIA_TYPE_OCI_LAYER_GZIP.to_owned(),
        Some(layer::Compression::Zstd) => MEDIA_TYPE_OCI_LAYER_ZSTD.to_owned(),
        None => media_type.to_owned(),
    }
}

/// Compresses and stores one tar read from `source`; returns the blob and the diff_id.
fn store_layer(
    writer: &ImageWriter<'_>,
    source: &mut (dyn Read + Send),
    compression: LayerCompression,
    level: Option<u32>,
) -> io::Result<(Descriptor, Digest)> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    std::thread::scope(|scope| {
        let (mut tar_out, mut compressed_in) =
            compress::pipeline(scope, compression, level, workers);
        let producer = scope.spawn(move || -> io::Result<Digest> {
            io::copy(source, &mut tar_out)?;
            tar_out.finish()
        });
        let media_type = match compression {
            LayerCompression::Gzip => MEDIA_TYPE_OCI_LAYER_GZIP,
            LayerCompression::Zstd => MEDIA_TYPE_OCI_LAYER_ZSTD,
        };
        let stored = writer.put_blob_reader(media_type, &mut compressed_in);
        // Unblock the threads if storing stopped early.
        drop(compressed_in);
        let diff_id = producer
            .join()
            .map_err(|_| io::Error::other("the thread reading the layer panicked"))?;
        let descriptor = stored.map_err(io::Error::other)?;
        Ok((descriptor, diff_id?))
    })
}

/// The config of an empty base: the host's platform, no layers.
fn empty_config() -> Map<String, Value> {
    let platform = Platform::host();
    let mut config = Map::new();
    config.insert(
        "architecture".to_owned(),
        Value::String(platform.architecture),
    );
    config.insert("os".to_owned(), Value::String(platform.os));
    if let Some(variant) = platform.variant {
        config.insert("variant".to_owned(), Value::String(variant));
    }
    config
}

/// Takes `object[key]` out as an object (a new one when absent or not an object); the caller
/// puts it back.
fn take_object(object: &mut Map<String, Value>, key: &str) -> Map<String, Value> {
    match object.remove(key) {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Takes `object[key]` out as an array (a new one when absent or not an array).
fn take_array(object: &mut Map<String, Value>, key: &str) -> Vec<Value> {
    match object.remove(key) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

/// Saves the request's layers over its base as a new image tagged `request.tag`.
pub fn save(store: &Store, request: SaveRequest) -> Result<SaveOutcome, SaveError> {
    let tag = oci::normalize_name(&request.tag).map_err(|source| SaveError::Tag {
        tag: request.tag.clone(),
        source,
    })?;
    let writer = store.writer()?;
    let base = match &request.base {
        Some(reference) => {
            let descriptor = store.resolve(reference).map_err(|source| SaveError::Base {
                reference: reference.clone(),
                source,
            })?;
            let image = store
                .load_image(&descriptor)
                .map_err(|source| SaveError::ReadBase {
                    digest: descriptor.digest.clone(),
                    source,
                })?;
            Some(image)
        }
        None => None,
    };
    let mut config = match &base {
        Some(image) => serde_json::from_slice::<Map<String, Value>>(&image.config_bytes)
            .ok()
            .filter(|c| c.get("rootfs").is_some_and(Value::is_object))
            .ok_or_else(|| SaveError::BaseConfig {
                digest: image.manifest.config.digest.clone(),
            })?,
        None => empty_config(),
    };

    let mut added = Vec::new();
    for (index, new) in request.layers.into_iter().enumerate() {
        let layer_error = |source| SaveError::Layer {
            index,
            description: new.description.clone(),
            source,
        };
        let (descriptor, diff_id) = match new.source {
            LayerSource::Path(path) => {
                let mut file = File::open(&path).map_err(|source| SaveError::OpenLayer {
                    path: path.clone(),
                    source,
                })?;
                store_layer(&writer, &mut file, request.compression, request.level)
                    .map_err(layer_error)?
            }
            LayerSource::Reader(mut reader) => {
                store_layer(&writer, &mut reader, request.compression, request.level)
                    .map_err(layer_error)?
            }
        };
        added.push(AddedLayer {
            descriptor,
            diff_id,
            description: new.description,
        });
    }

    let created = rfc3339(request.created);
    let mut labels = request.labels;
    if let Some(image) = &base {
        labels.insert(
            LABEL_BASE_DIGEST.to_owned(),
            image.descriptor.digest.to_string(),
        );
    }
    if let Some(policy) = &request.policy_digest {
        labels.insert(LABEL_POLICY_DIGEST.to_owned(), policy.clone());
    }
    labels.insert(LABEL_CREATED.to_owned(), created.clone());
    config.insert("created".to_owned(), Value::String(created.clone()));
    let mut run = take_object(&mut config, "config");
    let mut existing = take_object(&mut run, "Labels");
    for (key, value) in &labels {
        existing.insert(key.clone(), Value::String(value.clone()));
    }
    run.insert("Labels".to_owned(), Value::Object(existing));
    config.insert("config".to_owned(), Value::Object(run));
    let mut rootfs = take_object(&mut config, "rootfs");
    rootfs.insert("type".to_owned(), Value::String("layers".to_owned()));
    let mut diff_ids = take_array(&mut rootfs, "diff_ids");
    diff_ids.extend(added.iter().map(|l| Value::String(l.diff_id.to_string())));
    rootfs.insert("diff_ids".to_owned(), Value::Array(diff_ids));
    config.insert("rootfs".to_owned(), Value::Object(rootfs));
    let mut history = take_array(&mut config, "history");
    history.extend(added.iter().map(|l| {
        json!({
            "created": created,
            "created_by": CREATED_BY,
            "comment": l.description,
        })
    }));
    config.insert("history".to_owned(), Value::Array(history));
    let config_bytes = serde_json::to_vec(&config).map_err(SaveError::Config)?;
    let config_descriptor = writer.put_blob_bytes(MEDIA_TYPE_OCI_CONFIG, &config_bytes)?;

    let mut layers: Vec<Descriptor> = match &base {
        Some(image) => image
            .manifest
            .layers
            .iter()
            .map(|l| {
                let mut layer = l.clone();
                layer.media_type = oci_layer_type(&l.media_type);
                layer
            })
            .collect(),
        None => Vec::new(),
    };
    let base_layers = layers.len();
    layers.extend(added.iter().map(|l| l.descriptor.clone()));
    let mut annotations = BTreeMap::new();
    annotations.insert(LABEL_CREATED.to_owned(), created.clone());
    if let Some(image) = &base {
        annotations.insert(
            LABEL_BASE_DIGEST.to_owned(),
            image.descriptor.digest.to_string(),
        );
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_owned()),
        artifact_type: None,
        config: config_descriptor.clone(),
        layers,
        subject: None,
        annotations,
    };

    let events_blob = match &request.events {
        Some(path) => Some((
            path,
            writer
                .put_blob_file(EVENTS_ARTIFACT_TYPE, path)
                .map_err(|source| SaveError::Events {
                    path: path.clone(),
                    source,
                })?,
        )),
        None => None,
    };
    let descriptor = writer.put_image(&manifest, std::slice::from_ref(&tag))?;
    let events = match events_blob {
        Some((path, blob)) => {
            let mut annotations = BTreeMap::new();
            annotations.insert(LABEL_CREATED.to_owned(), created);
            Some(
                writer
                    .put_referrer(&descriptor, EVENTS_ARTIFACT_TYPE, &[blob], &annotations)
                    .map_err(|source| SaveError::Events {
                        path: path.clone(),
                        source,
                    })?,
            )
        }
        None => None,
    };
    Ok(SaveOutcome {
        manifest: descriptor,
        config: config_descriptor,
        tag,
        base: base.map(|image| image.descriptor),
        base_layers,
        layers_added: added,
        events,
    })
}
