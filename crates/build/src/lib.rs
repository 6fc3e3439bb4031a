//! The hardened image builder: a spec plus already downloaded and verified `.deb` files become an
//! OCI image in the store.
//!
//! Pipeline (each step a module, each pure but the last):
//! [`spec`] (parse and check the YAML) → [`assemble`] (unpack the packages into an in-memory
//! [`tree::Tree`], do natively what maintainer scripts would ([`native`]), apply `paths`, then
//! [`harden`]) → [`image`] (deterministic layers, config and manifest written through
//! [`oci::ImageWriter`]). Nothing is unpacked to disk, so a build needs no root, cannot write
//! outside its target, and is a function of (spec, packages, `SOURCE_DATE_EPOCH`): the same
//! inputs give the same manifest digest.
//!
//! Fetching and resolving packages is the `debian` crate's job; [`build`] takes the resolved
//! `.deb` paths in installation order. [`pipeline`] runs the whole thing for `hardbox build`:
//! repositories, verified metadata, resolution or lock, downloads, this build, then SBOMs and
//! signed attestations attached to the image as OCI referrers.

#![forbid(unsafe_code)]

pub mod assemble;
pub mod compress;
pub mod harden;
pub mod image;
pub mod native;
pub mod pipeline;
pub mod save;
pub mod spec;
pub mod tree;

use std::path::{Path, PathBuf};

use oci::spec::{Descriptor, Platform};
use oci::{ImageWriter, Store};

pub use assemble::{assemble, AssembleError, AssembleOptions, InstalledDeb, Report};
pub use image::{
    commit_image, stage_image, write_image, ImageError, ImageMeta, StagedImage, WrittenImage,
};
pub use spec::{Spec, SpecError};

/// What the caller decides for one build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Overrides the spec's dates (`SOURCE_DATE_EPOCH` from a lock or the environment).
    pub source_date_epoch: Option<u64>,
    /// Where `paths[].source` is read from; default the current directory.
    pub context: PathBuf,
    /// The platform to build for; default the spec's first, else the host's.
    pub platform: Option<Platform>,
    /// Names to tag the image with; default the spec's tags (with `image:` as repository).
    pub tags: Option<Vec<String>>,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("invalid platform {0:?}")]
    Platform(String),
    #[error(transparent)]
    Store(#[from] oci::StoreError),
}

/// A finished build.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    pub image: WrittenImage,
    pub report: Report,
    pub tags: Vec<String>,
    pub source_date_epoch: u64,
}

impl BuildOutput {
    pub fn manifest(&self) -> &Descriptor {
        &self.image.manifest
    }
}

/// Debian's name for an OCI architecture.
pub fn debian_architecture(platform: &Platform) -> String {
    match (platform.architecture.as_str(), platform.variant.as_deref()) {
        ("arm", Some("v7")) => "armhf".to_owned(),
        ("arm", _) => "armel".to_owned(),
        ("386", _) => "i386".to_owned(),
        ("ppc64le", _) => "ppc64el".to_owned(),
        (other, _) => other.to_owned(),
    }
}

/// The image config and manifest metadata a spec asks for.
pub fn image_meta(spec: &Spec, platform: Platform, epoch: u64, tags: Vec<String>) -> ImageMeta {
    let (uid, gid) = spec.run_as_ids().unwrap_or((spec::NONROOT, spec::NONROOT));
    let mut env =
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()];
    for (key, value) in &spec.environment {
        env.retain(|e| !e.starts_with(&format!("{key}=")));
        env.push(format!("{key}={value}"));
    }
    let mut labels: std::collections::BTreeMap<String, String> = spec
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    labels.extend(spec.labels.iter().map(|(k, v)| (k.clone(), v.0.clone())));
    let mut annotations: std::collections::BTreeMap<String, String> = spec
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    if let Some(name) = &spec.name {
        annotations
            .entry("org.opencontainers.image.title".to_owned())
            .or_insert_with(|| name.clone());
    }
    ImageMeta {
        platform: Some(platform),
        source_date_epoch: epoch,
        user: Some(format!("{uid}:{gid}")),
        env,
        entrypoint: spec.entrypoint.as_ref().map(|c| c.0.clone()),
        cmd: spec.cmd.as_ref().map(|c| c.0.clone()),
        working_dir: spec.work_dir.clone(),
        labels,
        exposed_ports: spec
            .ports
            .iter()
            .filter_map(|p| spec::parse_port(&p.0).ok())
            .collect(),
        stop_signal: spec.stop_signal.clone(),
        annotations,
        tags,
        layers: spec.layers.clone(),
        created_by: "hardbox build".to_owned(),
    }
}

/// The store names a spec's tags become: `image:tag` when the spec names an image, else the
/// spec's tags as written.
pub fn spec_tags(spec: &Spec) -> Vec<String> {
    spec.tags
        .iter()
        .map(|tag| match &spec.image {
            Some(image) if !tag.0.contains(['/', ':']) => format!("{image}:{}", tag.0),
            _ => tag.0.clone(),
        })
        .collect()
}

/// Builds the image `spec` describes from `debs` (resolved, in installation order) into `store`.
pub fn build(
    store: &Store,
    spec: &Spec,
    debs: &[&Path],
    options: &BuildOptions,
) -> Result<BuildOutput, BuildError> {
    let writer = store.writer()?;
    let staged = stage(&writer, spec, debs, options)?;
    let image = commit_image(&writer, &staged.image)?;
    Ok(BuildOutput {
        image,
        report: staged.report,
        tags: staged.image.tags,
        source_date_epoch: staged.source_date_epoch,
    })
}

/// A build whose layers and config are stored but whose manifest is not listed yet (see
/// [`StagedImage`]), with the tree it was made from.
#[derive(Debug)]
pub struct StagedBuild {
    pub image: StagedImage,
    pub tree: tree::Tree,
    pub report: Report,
    pub platform: Platform,
    pub source_date_epoch: u64,
}

/// The first half of [`build`]: assembles the tree and writes its layers and config through
/// `writer`; [`commit_image`] then lists the image.
pub fn stage(
    writer: &ImageWriter<'_>,
    spec: &Spec,
    debs: &[&Path],
    options: &BuildOptions,
) -> Result<StagedBuild, BuildError> {
    let platform = match &options.platform {
        Some(p) => p.clone(),
        None => match spec.platforms.first() {
            Some(p) => Platform::parse(p).map_err(|_| BuildError::Platform(p.clone()))?,
            None => Platform::host(),
        },
    };
    let epoch = options
        .source_date_epoch
        .or_else(|| spec.source_date_epoch())
        .unwrap_or(0);
    let installed = debs
        .iter()
        .map(|path| InstalledDeb::open(path))
        .collect::<Result<Vec<_>, _>>()?;
    let assemble_options = AssembleOptions {
        source_date_epoch: epoch,
        context: options.context.clone(),
        architecture: debian_architecture(&platform),
    };
    let (tree, report) = assemble(spec, &installed, &assemble_options)?;
    let tags = options.tags.clone().unwrap_or_else(|| spec_tags(spec));
    let meta = image_meta(spec, platform.clone(), epoch, tags);
    let image = stage_image(writer, &tree, &meta)?;
    Ok(StagedBuild {
        image,
        tree,
        report,
        platform,
        source_date_epoch: epoch,
    })
}
