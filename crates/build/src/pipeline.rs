//! `hardbox build`, `lock`, `sbom` and `verify` from end to end: the library side of the verbs,
//! with I/O; the binary only resolves flags and prints what comes back.
//!
//! A build runs, in order:
//!
//! 1. the spec, read and checked ([`Spec::parse`]);
//! 2. the repositories: the spec's `contents.repositories`, else the host's apt sources; each
//!    with its keys (its `Signed-By`, else the spec's `contents.keyring`, else the Debian archive
//!    keyring; host sources without `Signed-By` use apt's trusted keyrings, as apt does);
//! 3. verified metadata through the [`Fetcher`] cache below `<cache>/debian`: each `InRelease`
//!    (signature, freshness, suite), then each component's `Packages` (by the digest the signed
//!    `Release` names); all repositories at once;
//! 4. the packages: the spec's `contents.packages` resolved against all indexes, or, `--locked`,
//!    exactly the lock's (refused when the spec's requests or the architecture changed); then the
//!    `.deb` files, each verified against its digest before it enters the cache;
//! 5. the image ([`crate::stage`]), staged: its layers and config are stored, its manifest known;
//! 6. the SBOMs (SPDX 2.3 and CycloneDX 1.6) of the tree that went into the image, and with a
//!    signing key DSSE envelopes of a SLSA v1 provenance statement and of the two SBOM
//!    statements; their blobs are stored;
//! 7. the image listed under its tags, then each document attached to it as an OCI referrer.
//!
//! Anything that fails before step 7 leaves `index.json` as it was: a tampered `.deb` or
//! `InRelease` stops at step 3 or 4, before the store is touched at all.
//!
//! `SOURCE_DATE_EPOCH` is, in order: the spec's `dates`, the caller's (flag or environment), the
//! newest `Date` of the `Release` files the packages were resolved from. Never the clock: the
//! same spec and lock give the same image on any day. A `--locked` build finds those dates by the
//! lock's `InRelease` digests (remembered below `<cache>/release-dates/` whenever a verified
//! `InRelease` is used), so a lock keeps its date after the archive moves on; where neither the
//! cache nor the archive has that `InRelease` any more, the build stops and says so.
//!
//! A resolution is a pure function of the requests, the architecture and the indexes, which the
//! `InRelease` digests pin: it is remembered below `<cache>/resolutions/` under a digest of all
//! of those, so a warm build reads no `Packages` index at all. The debian cache's files are
//! trusted by their names, as the store trusts its blobs: they were verified before they got
//! them.

mod layers;
mod repos;
mod supply;
mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use debian::fetch::{DebRequest, FetchError, Fetcher};
use debian::lock::{Lock, LockError};
use debian::openpgp::KeyringError;
use debian::package::IndexError;
use debian::resolve::{Request, RequestError, ResolveError};
use debian::sources::SourceError;
use oci::spec::{Descriptor, Platform};
use oci::{ReadImageError, ResolveError as ReferenceError, Store, StoreError, WriteError};
use serde::Serialize;
use types::Digest;

use crate::spec::{Spec, SpecError};
use crate::{BuildError, BuildOptions, ImageError, Report};

pub use supply::{
    SbomFormat, ANNOTATION_PREDICATE_TYPE, CYCLONEDX_MEDIA_TYPE, ENVELOPE_MEDIA_TYPE,
    SPDX_MEDIA_TYPE,
};
pub use verify::{Check, VerifyReport};

/// Where the Debian archive keyring lives (package `debian-archive-keyring`).
pub const DEBIAN_ARCHIVE_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Something the pipeline reports as it goes, for a progress line (the library never prints).
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A step starts.
    Step(&'a str),
    /// Bytes of one download arrived (from the downloading threads).
    Download {
        url: &'a str,
        done: u64,
        total: Option<u64>,
    },
}

/// Receives [`Event`]s.
pub type Progress = Arc<dyn Fn(Event<'_>) + Send + Sync>;

/// What every verb that reads repositories needs, resolved by the caller.
#[derive(Clone)]
pub struct Settings {
    /// The spec file.
    pub spec: PathBuf,
    /// Cache directory (`<store>/cache`): the fetcher's cache is `debian/` below it.
    pub cache: PathBuf,
    /// The host's apt configuration, for its sources and trusted keys (`/etc/apt`).
    pub etc_apt: PathBuf,
    /// The keyring of spec repositories that name no keys ([`DEBIAN_ARCHIVE_KEYRING`]).
    pub default_keyring: PathBuf,
    /// Work from the cache alone.
    pub offline: bool,
    /// The platform to build for (default: the spec's first, else the host's).
    pub platform: Option<Platform>,
    /// The caller's `SOURCE_DATE_EPOCH` (flag or environment), used when the spec has no dates.
    pub source_date_epoch: Option<u64>,
    /// The time `Release` files must be valid at (a check; it never reaches the image).
    pub now: SystemTime,
    pub progress: Option<Progress>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("spec", &self.spec)
            .field("cache", &self.cache)
            .field("etc_apt", &self.etc_apt)
            .field("offline", &self.offline)
            .field("platform", &self.platform)
            .field("source_date_epoch", &self.source_date_epoch)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Settings for `spec` with a store's cache, the host's apt configuration and no progress.
    pub fn new(spec: impl Into<PathBuf>, cache: impl Into<PathBuf>) -> Settings {
        Settings {
            spec: spec.into(),
            cache: cache.into(),
            etc_apt: PathBuf::from("/etc/apt"),
            default_keyring: PathBuf::from(DEBIAN_ARCHIVE_KEYRING),
            offline: false,
            platform: None,
            source_date_epoch: None,
            now: SystemTime::now(),
            progress: None,
        }
    }

    fn step(&self, what: &str) {
        if let Some(progress) = &self.progress {
            progress(Event::Step(what));
        }
    }

    fn fetcher(&self) -> Fetcher {
        let mut fetcher = Fetcher::new(self.cache.join("debian")).offline(self.offline);
        if let Some(progress) = &self.progress {
            let progress = Arc::clone(progress);
            fetcher = fetcher.progress(move |p| {
                progress(Event::Download {
                    url: p.url,
                    done: p.done,
                    total: p.total,
                })
            });
        }
        fetcher
    }
}

/// `hardbox build`.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub settings: Settings,
    /// Build exactly this lock's packages.
    pub locked: Option<PathBuf>,
    /// Names for the image (default: the spec's tags).
    pub tags: Option<Vec<String>>,
    /// Sign provenance and SBOM statements with this key.
    pub sign_key: Option<Arc<attest::Key>>,
}

/// Where the `SOURCE_DATE_EPOCH` of a build came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EpochSource {
    /// The spec's `dates`.
    Spec,
    /// The caller (`--source-date-epoch` or `SOURCE_DATE_EPOCH`).
    Caller,
    /// The newest `Date` of the `Release` files.
    Release,
    /// None of those: no `Release` had a date.
    Default,
}

/// A package of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageSummary {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub sha256: String,
}

/// A document attached to the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attached {
    pub artifact_type: String,
    /// The referrer manifest's digest.
    pub digest: Digest,
    /// For DSSE envelopes: the statement's predicate type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicate_type: Option<String>,
}

/// A finished build.
#[derive(Debug, Clone, Serialize)]
pub struct BuildOutcome {
    pub manifest: Descriptor,
    pub tags: Vec<String>,
    pub platform: String,
    pub source_date_epoch: u64,
    pub source_date_epoch_from: EpochSource,
    pub packages: Vec<PackageSummary>,
    /// Bytes of the compressed layers.
    pub compressed_size: u64,
    pub layers: usize,
    pub report: Report,
    pub referrers: Vec<Attached>,
    /// Resolver and lock warnings.
    pub warnings: Vec<String>,
    /// The lockfile the build followed (`--locked`).
    pub locked: Option<PathBuf>,
}

/// `hardbox lock` done.
#[derive(Debug, Clone)]
pub struct LockOutcome {
    pub lock: Lock,
    pub path: PathBuf,
    pub warnings: Vec<String>,
}

/// Why a pipeline step failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("failed to read the spec {path}")]
    ReadSpec {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{spec}: contents.packages: {source}")]
    Request {
        spec: PathBuf,
        #[source]
        source: Box<RequestError>,
    },
    #[error("invalid platform {0:?}")]
    Platform(String),
    #[error("{spec}: contents.repositories entry {entry:?}")]
    Repository {
        spec: PathBuf,
        entry: String,
        #[source]
        source: Box<SourceError>,
    },
    #[error("failed to read the host's apt sources")]
    HostSources(#[source] Box<SourceError>),
    #[error("{spec} names no repositories and {etc_apt} has no deb source")]
    NoRepositories { spec: PathBuf, etc_apt: PathBuf },
    #[error(
        "{spec}: contents.keyring entry {entry:?} is a URL; hardbox downloads nothing but \
         packages: name a local keyring file"
    )]
    RemoteKeyring { spec: PathBuf, entry: String },
    #[error("failed to load the keys of repository {repository}")]
    Keyring {
        repository: String,
        #[source]
        source: Box<KeyringError>,
    },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("the verified metadata of {url} changed in the cache while it was read; run again")]
    ReleaseChanged { url: String },
    #[error("{url}: invalid Packages index")]
    Index {
        url: String,
        #[source]
        source: Box<IndexError>,
    },
    #[error("cannot resolve the packages of {spec}")]
    Resolve {
        spec: PathBuf,
        #[source]
        source: Box<ResolveError>,
    },
    #[error("failed to read the lockfile {path}")]
    ReadLock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid lockfile")]
    Lock {
        path: PathBuf,
        #[source]
        source: Box<LockError>,
    },
    #[error("{lock} was made for other packages than {spec} asks for now")]
    StaleLock { lock: PathBuf, spec: PathBuf },
    #[error("{lock} was made for architecture {locked}, not {wanted}")]
    LockArchitecture {
        lock: PathBuf,
        locked: String,
        wanted: String,
    },
    #[error("{lock}: package {package} has an invalid sha256 {sha256:?}")]
    LockDigest {
        lock: PathBuf,
        package: String,
        sha256: String,
    },
    #[error(
        "cannot find the SOURCE_DATE_EPOCH of the locked build: {url} with sha256 {sha256} \
         (which {lock} was resolved from) is neither cached nor served any more"
    )]
    LockDate {
        lock: PathBuf,
        url: String,
        sha256: String,
    },
    #[error("failed to write {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("failed to make the SBOM of {image}")]
    Sbom {
        image: Digest,
        #[source]
        source: sbom::SbomError,
    },
    #[error("failed to make the attestations of {image}")]
    Attest {
        image: Digest,
        #[source]
        source: attest::AttestError,
    },
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    ReadImage(#[from] ReadImageError),
    #[error("image {image}: blob {digest}")]
    Blob {
        image: String,
        digest: Digest,
        #[source]
        source: std::io::Error,
    },
    #[error("image {image}: layer {digest}: {reason}")]
    Layer {
        image: String,
        digest: Digest,
        reason: String,
    },
    #[error("image {image} has no signed attestations")]
    NoAttestations { image: String },
}

impl PipelineError {
    /// Whether the message already names the spec file (so callers need not say it again).
    pub fn names_spec(&self) -> bool {
        matches!(
            self,
            PipelineError::ReadSpec { .. }
                | PipelineError::Spec(_)
                | PipelineError::Request { .. }
                | PipelineError::Repository { .. }
                | PipelineError::NoRepositories { .. }
                | PipelineError::RemoteKeyring { .. }
                | PipelineError::Resolve { .. }
                | PipelineError::StaleLock { .. }
        )
    }

    /// Whether the error says the lock is missing or no longer fits the spec (`hardbox lock`
    /// fixes it).
    pub fn is_stale_lock(&self) -> bool {
        match self {
            PipelineError::StaleLock { .. } | PipelineError::LockArchitecture { .. } => true,
            PipelineError::ReadLock { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// The spec, its text (for its digest) and the directory its relative paths start from.
struct LoadedSpec {
    spec: Spec,
    bytes: Vec<u8>,
    path: PathBuf,
    dir: PathBuf,
    requests: Vec<Request>,
}

fn load_spec(path: &Path) -> Result<LoadedSpec, PipelineError> {
    // std::fs: the error names the path already.
    let bytes = std::fs::read(path).map_err(|source| PipelineError::ReadSpec {
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let spec = Spec::parse(&text, &path.display().to_string())?;
    let requests = spec
        .contents
        .packages
        .iter()
        .map(|raw| Request::parse(raw))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PipelineError::Request {
            spec: path.to_owned(),
            source: Box::new(source),
        })?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok(LoadedSpec {
        spec,
        bytes,
        path: path.to_owned(),
        dir,
        requests,
    })
}

fn platform_of(settings: &Settings, spec: &Spec) -> Result<Platform, PipelineError> {
    match &settings.platform {
        Some(p) => Ok(p.clone()),
        None => match spec.platforms.first() {
            Some(p) => Platform::parse(p).map_err(|_| PipelineError::Platform(p.clone())),
            None => Ok(Platform::host()),
        },
    }
}

/// The lockfile of a spec: `hardbox.lock.json` next to it.
pub fn default_lock_path(spec: &Path) -> PathBuf {
    match spec.parent() {
        Some(parent) => parent.join(debian::lock::FILE_NAME),
        None => PathBuf::from(debian::lock::FILE_NAME),
    }
}

/// `hardbox lock`: resolves the spec and writes its lock (atomically) to `output`, default
/// [`default_lock_path`].
pub fn lock(settings: &Settings, output: Option<&Path>) -> Result<LockOutcome, PipelineError> {
    let loaded = load_spec(&settings.spec)?;
    let platform = platform_of(settings, &loaded.spec)?;
    let arch = crate::debian_architecture(&platform);
    let fetcher = settings.fetcher();
    let repositories = repos::repositories(settings, &loaded)?;
    let resolved = repos::resolve(settings, &fetcher, &loaded, &repositories, &arch)?;
    let path = output
        .map(Path::to_owned)
        .unwrap_or_else(|| default_lock_path(&settings.spec));
    fsutil::write_atomic(&path, resolved.lock.to_json().as_bytes()).map_err(|source| {
        PipelineError::WriteFile {
            path: path.clone(),
            source,
        }
    })?;
    Ok(LockOutcome {
        lock: resolved.lock,
        path,
        warnings: resolved.warnings,
    })
}

/// `hardbox build`: see the module docs.
pub fn build(store: &Store, request: &BuildRequest) -> Result<BuildOutcome, PipelineError> {
    let settings = &request.settings;
    let loaded = load_spec(&settings.spec)?;
    let platform = platform_of(settings, &loaded.spec)?;
    let arch = crate::debian_architecture(&platform);
    let fetcher = settings.fetcher();
    let repositories = repos::repositories(settings, &loaded)?;

    let plan = match &request.locked {
        None => repos::resolve(settings, &fetcher, &loaded, &repositories, &arch)?,
        Some(path) => repos::locked(settings, &loaded, &repositories, &arch, path)?,
    };

    settings.step("downloading packages");
    let requests: Vec<DebRequest> = plan.debs.iter().map(|d| d.request.clone()).collect();
    let paths = fetcher.debs(&requests)?;

    let (epoch, epoch_source) = match loaded.spec.source_date_epoch() {
        Some(epoch) => (epoch, EpochSource::Spec),
        None => match settings.source_date_epoch {
            Some(epoch) => (epoch, EpochSource::Caller),
            None => match plan.release_date(settings, &fetcher, &repositories)? {
                Some(epoch) => (epoch, EpochSource::Release),
                None => (0, EpochSource::Default),
            },
        },
    };

    settings.step("assembling the image");
    let writer = store.writer()?;
    let deb_paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let options = BuildOptions {
        source_date_epoch: Some(epoch),
        context: loaded.dir.clone(),
        platform: Some(platform.clone()),
        tags: request.tags.clone(),
    };
    let staged = crate::stage(&writer, &loaded.spec, &deb_paths, &options)?;

    settings.step("writing SBOMs and attestations");
    let documents = supply::documents(&supply::Inputs {
        writer: &writer,
        loaded: &loaded,
        staged: &staged,
        plan: &plan,
        platform: &platform,
        sign_key: request.sign_key.as_deref(),
    })?;
    let image = crate::commit_image(&writer, &staged.image)?;
    let referrers = supply::attach(&writer, &image.manifest, &documents, epoch)?;

    settings.step("done");
    let compressed_size = image.layers.iter().map(|l| l.size).sum();
    Ok(BuildOutcome {
        manifest: image.manifest.clone(),
        tags: staged.image.tags.clone(),
        platform: platform.to_string(),
        source_date_epoch: epoch,
        source_date_epoch_from: epoch_source,
        packages: plan
            .debs
            .iter()
            .map(|d| PackageSummary {
                name: d.name.clone(),
                version: d.version.clone(),
                architecture: d.architecture.clone(),
                sha256: d.request.sha256.hex().to_owned(),
            })
            .collect(),
        compressed_size,
        layers: image.layers.len(),
        report: staged.report,
        referrers,
        warnings: plan.warnings.clone(),
        locked: request.locked.clone(),
    })
}

/// An SBOM as `hardbox sbom` prints it.
#[derive(Debug, Clone)]
pub struct SbomDocument {
    pub bytes: Vec<u8>,
    /// The referrer it was read from; `None` when it was generated from the image's layers.
    pub attached: Option<Digest>,
    pub image: Digest,
}

/// `hardbox sbom`: the image's attached document of `format` (the last attached, if several),
/// else one generated from its layers' dpkg database and copyright files.
pub fn sbom(
    store: &Store,
    reference: &str,
    format: SbomFormat,
) -> Result<SbomDocument, PipelineError> {
    // Held for the whole read: gc waits, so no blob disappears under it.
    let writer = store.writer()?;
    let descriptor = store.resolve(reference)?;
    let image = store.load_image(&descriptor).map_err(|source| {
        PipelineError::ReadImage(ReadImageError::Blob {
            digest: descriptor.digest.clone(),
            source,
        })
    })?;
    let media_type = format.media_type();
    let attached = store
        .referrers(&descriptor.digest)?
        .into_iter()
        .filter(|r| r.artifact_type == media_type)
        .filter_map(|r| r.blobs.first().cloned().map(|b| (r.descriptor.digest, b)))
        .next_back();
    if let Some((referrer, blob)) = attached {
        let bytes = layers::read_blob(writer.store(), reference, &blob, supply::MAX_DOCUMENT)?;
        return Ok(SbomDocument {
            bytes,
            attached: Some(referrer),
            image: descriptor.digest,
        });
    }
    let names = store
        .images()
        .ok()
        .and_then(|images| {
            images
                .into_iter()
                .find(|i| i.digest == descriptor.digest)
                .map(|i| i.names)
        })
        .unwrap_or_default();
    let (tree, hashes) = layers::read_tree(writer.store(), reference, &image)?;
    let subject = supply::subject_from_names(&names, &image, &descriptor.digest);
    let created = image
        .config
        .created
        .as_deref()
        .and_then(supply::parse_rfc3339)
        .unwrap_or(0);
    let input = supply::sbom_input(
        &tree,
        supply::Owners::Lists(&hashes),
        subject,
        created,
        &BTreeMap::new(),
    );
    let bytes = format
        .render(&input)
        .map_err(|source| PipelineError::Sbom {
            image: descriptor.digest.clone(),
            source,
        })?;
    Ok(SbomDocument {
        bytes,
        attached: None,
        image: descriptor.digest,
    })
}

/// `hardbox verify`: checks every DSSE referrer of the image against `keys`, the SBOM
/// statements against the attached SBOMs, and that a provenance names the image.
pub fn verify(
    store: &Store,
    reference: &str,
    keys: &[attest::PublicKey],
) -> Result<VerifyReport, PipelineError> {
    let writer = store.writer()?;
    verify::verify(writer.store(), reference, keys)
}
