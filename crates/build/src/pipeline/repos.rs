//! Repositories, their keys and verified metadata, and the packages a build installs: resolved
//! from the indexes, or read from a lock.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use debian::fetch::{DebRequest, FetchError, Fetcher};
use debian::lock::{Lock, LockedRepository};
use debian::openpgp::{self, Keyring};
use debian::package::{self, RepoId, Universe};
use debian::release::Release;
use debian::resolve::{self, Architectures, Resolved};
use debian::sources::{self, SignedBy, Source};
use fs_err as fs;
use types::Digest;

use super::{LoadedSpec, PipelineError, Settings};

/// Where a repository's keys come from.
#[derive(Debug, Clone)]
enum Keys {
    /// The source's `Signed-By`, or apt's trusted keyrings for a host source without one.
    Source,
    /// Keyring files (the spec's `contents.keyring`, or the Debian archive keyring).
    Files(Vec<PathBuf>),
}

/// A repository to read packages from.
#[derive(Debug, Clone)]
pub(super) struct Repository {
    pub source: Source,
    keys: Keys,
}

impl Repository {
    fn keyring(&self, settings: &Settings) -> Result<Keyring, PipelineError> {
        let error = |source| PipelineError::Keyring {
            repository: self.source.to_string(),
            source: Box::new(source),
        };
        match &self.keys {
            Keys::Source => Keyring::for_source(&self.source, &settings.etc_apt).map_err(error),
            Keys::Files(paths) => {
                let mut parts = Vec::with_capacity(paths.len());
                for path in paths {
                    parts.push(Keyring::load(path).map_err(error)?);
                }
                Ok(Keyring::merge(parts))
            }
        }
    }
}

/// The spec's repositories, else the host's; with where their keys come from.
pub(super) fn repositories(
    settings: &Settings,
    loaded: &LoadedSpec,
) -> Result<Vec<Repository>, PipelineError> {
    let contents = &loaded.spec.contents;
    if contents.repositories.is_empty() {
        let sources = sources::host_sources(&settings.etc_apt)
            .map_err(|e| PipelineError::HostSources(Box::new(e)))?;
        if sources.is_empty() {
            return Err(PipelineError::NoRepositories {
                spec: loaded.path.clone(),
                etc_apt: settings.etc_apt.clone(),
            });
        }
        return Ok(sources
            .into_iter()
            .map(|source| Repository {
                source,
                keys: Keys::Source,
            })
            .collect());
    }
    let mut keyring_files = Vec::new();
    for entry in &contents.keyring {
        if entry.contains("://") {
            return Err(PipelineError::RemoteKeyring {
                spec: loaded.path.clone(),
                entry: entry.clone(),
            });
        }
        keyring_files.push(loaded.dir.join(entry));
    }
    if keyring_files.is_empty() {
        keyring_files.push(settings.default_keyring.clone());
    }
    let mut out = Vec::new();
    for entry in &contents.repositories {
        let mut source =
            sources::parse_one_line(entry).map_err(|source| PipelineError::Repository {
                spec: loaded.path.clone(),
                entry: entry.clone(),
                source: Box::new(source),
            })?;
        // Keyring paths in a spec are relative to the spec.
        for signed_by in &mut source.signed_by {
            if let SignedBy::Keyring(path) = signed_by {
                if path.is_relative() {
                    *path = loaded.dir.join(&*path);
                }
            }
        }
        let keys = if source.signed_by.is_empty() {
            Keys::Files(keyring_files.clone())
        } else {
            Keys::Source
        };
        out.push(Repository { source, keys });
    }
    Ok(out)
}

/// A `Release` that was verified and used, and the file it came from.
#[derive(Debug, Clone)]
pub(super) struct UsedRelease {
    /// The `InRelease` (or `Release`) URL.
    pub url: String,
    /// SHA-256 of that file.
    pub digest: Digest,
    /// Its `Date`, in seconds.
    pub date: Option<u64>,
}

/// A package to install.
#[derive(Debug, Clone)]
pub(super) struct PlannedDeb {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub request: DebRequest,
}

/// What a build installs, and what it was decided from.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// In installation order.
    pub debs: Vec<PlannedDeb>,
    pub warnings: Vec<String>,
    pub lock: Lock,
    /// The lock's bytes, for its digest.
    pub lock_bytes: Vec<u8>,
    /// The lockfile followed, if any.
    pub lock_path: Option<PathBuf>,
    pub releases: Vec<UsedRelease>,
}

impl Plan {
    /// The newest `Date` of the releases the packages were resolved from. For a lock, found by
    /// the lock's `InRelease` digests; see [`super`].
    pub fn release_date(
        &self,
        settings: &Settings,
        fetcher: &Fetcher,
        repositories: &[Repository],
    ) -> Result<Option<u64>, PipelineError> {
        let mut newest: Option<u64> = None;
        for (i, used) in self.releases.iter().enumerate() {
            let date = match used.date {
                Some(date) => Some(date),
                None => match remembered_date(settings, &used.digest) {
                    Some(date) => Some(date),
                    None => self.refetch_date(settings, fetcher, repositories, i, used)?,
                },
            };
            newest = newest.max(date);
        }
        Ok(newest)
    }

    /// For a lock whose `InRelease` date is not remembered: the archive's current `InRelease`,
    /// if it is still the one the lock names.
    fn refetch_date(
        &self,
        settings: &Settings,
        fetcher: &Fetcher,
        repositories: &[Repository],
        index: usize,
        used: &UsedRelease,
    ) -> Result<Option<u64>, PipelineError> {
        let lock_path = self.lock_path.clone().unwrap_or_default();
        let failure = || PipelineError::LockDate {
            lock: lock_path.clone(),
            url: used.url.clone(),
            sha256: used.digest.hex().to_owned(),
        };
        let Some(locked) = self.lock.repositories.get(index) else {
            return Err(failure());
        };
        let Some(repository) = matching(repositories, locked) else {
            return Err(failure());
        };
        let fetched = match fetch_release(settings, fetcher, repository) {
            Ok(fetched) => fetched,
            Err(PipelineError::Fetch(FetchError::NotCached { .. })) => return Err(failure()),
            Err(e) => return Err(e),
        };
        if fetched.1.digest != used.digest {
            return Err(failure());
        }
        Ok(fetched.1.date)
    }
}

/// The current repository a locked one corresponds to: the same URI and suite, else the same
/// suite and components (another mirror of the same archive).
fn matching<'r>(
    repositories: &'r [Repository],
    locked: &LockedRepository,
) -> Option<&'r Repository> {
    repositories
        .iter()
        .find(|r| r.source.uri == locked.uri && r.source.suite == locked.suite)
        .or_else(|| {
            repositories.iter().find(|r| {
                r.source.suite == locked.suite
                    && locked
                        .components
                        .iter()
                        .all(|c| r.source.components.contains(c))
            })
        })
}

/// `<cache>/release-dates/HEX`: the `Date` (seconds) of the verified `InRelease` whose SHA-256
/// is `HEX`.
fn dates_dir(settings: &Settings) -> PathBuf {
    settings.cache.join("release-dates")
}

fn remembered_date(settings: &Settings, digest: &Digest) -> Option<u64> {
    let text = fs::read_to_string(dates_dir(settings).join(digest.hex())).ok()?;
    text.trim().parse().ok()
}

fn remember_date(settings: &Settings, digest: &Digest, date: u64) -> Result<(), PipelineError> {
    let dir = dates_dir(settings);
    let path = dir.join(digest.hex());
    if path.is_file() {
        return Ok(());
    }
    let write_error = |source| PipelineError::WriteFile {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(&dir).map_err(write_error)?;
    fsutil::write_atomic(&path, format!("{date}\n").as_bytes()).map_err(write_error)
}

/// Fetches and verifies a repository's `Release` and finds the file it came from in the
/// fetcher's cache (`releases/SHA256(dist URL)/InRelease`, or `Release` with `Release.gpg`,
/// as [`debian::fetch`] documents), checking that file verifies to the same `Release`.
fn fetch_release(
    settings: &Settings,
    fetcher: &Fetcher,
    repository: &Repository,
) -> Result<(Release, UsedRelease), PipelineError> {
    let keyring = repository.keyring(settings)?;
    let source = &repository.source;
    let release = fetcher.release(source, &keyring, settings.now)?;
    let dist = source.dist_url();
    let dir = fetcher
        .cache_dir()
        .join("releases")
        .join(Digest::of(dist.as_bytes()).hex());
    let read = |name: &str| -> Result<Option<Vec<u8>>, PipelineError> {
        let path = dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PipelineError::ReadFile { path, source }),
        }
    };
    let join = |name: &str| format!("{}/{name}", dist.trim_end_matches('/'));
    let (url, bytes, verified) = if let Some(bytes) = read("InRelease")? {
        let verified = openpgp::verify_clearsigned(&keyring, &bytes, settings.now);
        (join("InRelease"), bytes, verified)
    } else {
        match (read("Release")?, read("Release.gpg")?) {
            (Some(bytes), Some(signature)) => {
                let verified = openpgp::verify_detached(&keyring, &bytes, &signature, settings.now);
                (join("Release"), bytes, verified)
            }
            _ => {
                return Err(PipelineError::ReleaseChanged {
                    url: join("InRelease"),
                })
            }
        }
    };
    let same = verified
        .ok()
        .and_then(|v| Release::parse(&v.text).ok())
        .is_some_and(|parsed| parsed == release);
    if !same {
        return Err(PipelineError::ReleaseChanged { url });
    }
    let digest = Digest::of(&bytes);
    let date = release
        .date
        .as_ref()
        .and_then(|d| d.time.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    if let Some(date) = date {
        remember_date(settings, &digest, date)?;
    }
    Ok((release, UsedRelease { url, digest, date }))
}

/// Runs `f` on every item on its own thread; results in input order.
fn parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, PipelineError> + Sync,
) -> Result<Vec<R>, PipelineError> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = items.iter().map(|item| scope.spawn(|| f(item))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Resolves the spec's packages against the repositories' verified indexes.
pub(super) fn resolve(
    settings: &Settings,
    fetcher: &Fetcher,
    loaded: &LoadedSpec,
    repositories: &[Repository],
    arch: &str,
) -> Result<Plan, PipelineError> {
    settings.step("fetching repository metadata");
    // Sources limited to other architectures are not read.
    let usable: Vec<(usize, &Repository)> = repositories
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.source.architectures.is_empty() || r.source.architectures.iter().any(|a| a == arch)
        })
        .collect();
    let releases = parallel(&usable, |(_, r)| fetch_release(settings, fetcher, r))?;
    // One index per repository and component (a flat repository has one, without component).
    let mut wanted = Vec::new();
    for (position, (_, repository)) in usable.iter().enumerate() {
        if repository.source.is_flat() {
            wanted.push((position, String::new()));
        }
        for component in &repository.source.components {
            wanted.push((position, component.clone()));
        }
    }
    let locked_repositories: Vec<LockedRepository> = usable
        .iter()
        .zip(&releases)
        .map(|((_, r), (_, used))| LockedRepository {
            uri: r.source.uri.clone(),
            suite: r.source.suite.clone(),
            components: r.source.components.clone(),
            inrelease_sha256: used.digest.hex().to_owned(),
        })
        .collect();
    let uris: Vec<String> = usable.iter().map(|(_, r)| r.source.uri.clone()).collect();
    let used: Vec<UsedRelease> = releases.iter().map(|(_, used)| used.clone()).collect();
    let key = resolution_key(&locked_repositories, &loaded.requests, arch);
    if let Some(cached) = cached_resolution(settings, &key, &locked_repositories, loaded) {
        let debs = planned(&cached.lock.resolved(), &uris, &loaded.path)?;
        return Ok(Plan {
            debs,
            warnings: cached.warnings,
            lock_bytes: cached.lock.to_json().into_bytes(),
            lock: cached.lock,
            lock_path: None,
            releases: used,
        });
    }
    let texts = parallel(&wanted, |(position, component)| {
        let (_, repository) = usable[*position];
        let (release, _) = &releases[*position];
        fetcher
            .packages_index(&repository.source, release, component, arch)
            .map_err(PipelineError::Fetch)
    })?;

    settings.step("resolving packages");
    let mut packages = Vec::new();
    for ((position, component), text) in wanted.iter().zip(&texts) {
        let repo = RepoId(u32::try_from(*position).unwrap_or(u32::MAX));
        let parsed = package::parse_index(repo, text).map_err(|source| {
            let (_, repository) = usable[*position];
            PipelineError::Index {
                url: format!(
                    "{}/{}",
                    repository.source.dist_url(),
                    repository.source.packages_path(component, arch)
                ),
                source: Box::new(source),
            }
        })?;
        packages.extend(parsed);
    }
    let universe = Universe::from_packages(packages);
    let resolution = resolve::resolve(&universe, &loaded.requests, &Architectures::native(arch))
        .map_err(|source| PipelineError::Resolve {
            spec: loaded.path.clone(),
            source: Box::new(source),
        })?;
    let lock = Lock::new(
        arch,
        &[],
        locked_repositories,
        &loaded.requests,
        &resolution,
    );
    let debs = planned(&resolution.packages, &uris, &loaded.path)?;
    let warnings: Vec<String> = resolution
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect();
    remember_resolution(settings, &key, &lock, &warnings)?;
    Ok(Plan {
        debs,
        warnings,
        lock_bytes: lock.to_json().into_bytes(),
        lock,
        lock_path: None,
        releases: used,
    })
}

/// Bumped whenever the resolver may choose differently for the same input.
const RESOLUTION_FORMAT: &str = "hardbox resolution 1";

/// A resolution remembered below `<cache>/resolutions/`: a pure function of the requests, the
/// architecture and the indexes, which the `InRelease` digests pin.
#[derive(serde::Serialize, serde::Deserialize)]
struct CachedResolution {
    warnings: Vec<String>,
    lock: Lock,
}

fn resolution_key(
    repositories: &[LockedRepository],
    requests: &[resolve::Request],
    arch: &str,
) -> String {
    let mut requests: Vec<String> = requests.iter().map(ToString::to_string).collect();
    requests.sort();
    requests.dedup();
    let material = serde_json::json!({
        "format": RESOLUTION_FORMAT,
        "hardbox": env!("CARGO_PKG_VERSION"),
        "architecture": arch,
        "requests": requests,
        "repositories": repositories,
    });
    Digest::of(material.to_string().as_bytes()).hex().to_owned()
}

fn resolutions_dir(settings: &Settings) -> PathBuf {
    settings.cache.join("resolutions")
}

/// A remembered resolution of the same input, if there is one that still fits it.
fn cached_resolution(
    settings: &Settings,
    key: &str,
    repositories: &[LockedRepository],
    loaded: &LoadedSpec,
) -> Option<CachedResolution> {
    let bytes = fs::read(resolutions_dir(settings).join(format!("{key}.json"))).ok()?;
    let cached: CachedResolution = serde_json::from_slice(&bytes).ok()?;
    (cached.lock.repositories == repositories && cached.lock.matches_requests(&loaded.requests))
        .then_some(cached)
}

fn remember_resolution(
    settings: &Settings,
    key: &str,
    lock: &Lock,
    warnings: &[String],
) -> Result<(), PipelineError> {
    let dir = resolutions_dir(settings);
    let path = dir.join(format!("{key}.json"));
    let write_error = |source| PipelineError::WriteFile {
        path: path.clone(),
        source,
    };
    let bytes = serde_json::to_vec(&serde_json::json!({ "warnings": warnings, "lock": lock }))
        .map_err(std::io::Error::other)
        .map_err(write_error)?;
    fs::create_dir_all(&dir).map_err(write_error)?;
    fsutil::write_atomic(&path, &bytes).map_err(write_error)
}

/// The packages of a lock, fetched from the current mirror of each locked repository.
pub(super) fn locked(
    settings: &Settings,
    loaded: &LoadedSpec,
    repositories: &[Repository],
    arch: &str,
    path: &Path,
) -> Result<Plan, PipelineError> {
    settings.step("reading the lockfile");
    // std::fs: the error names the path already.
    let bytes = std::fs::read(path).map_err(|source| PipelineError::ReadLock {
        path: path.to_owned(),
        source,
    })?;
    let lock = Lock::from_json(&String::from_utf8_lossy(&bytes)).map_err(|source| {
        PipelineError::Lock {
            path: path.to_owned(),
            source: Box::new(source),
        }
    })?;
    if lock.architecture != arch {
        return Err(PipelineError::LockArchitecture {
            lock: path.to_owned(),
            locked: lock.architecture.clone(),
            wanted: arch.to_owned(),
        });
    }
    if !lock.matches_requests(&loaded.requests) {
        return Err(PipelineError::StaleLock {
            lock: path.to_owned(),
            spec: loaded.path.clone(),
        });
    }
    let mut uris = Vec::new();
    let mut releases = Vec::new();
    for locked in &lock.repositories {
        let uri = matching(repositories, locked)
            .map_or_else(|| locked.uri.clone(), |r| r.source.uri.clone());
        let source = Source {
            uri: locked.uri.clone(),
            suite: locked.suite.clone(),
            components: locked.components.clone(),
            architectures: Vec::new(),
            signed_by: Vec::new(),
        };
        let digest =
            Digest::from_hex(&locked.inrelease_sha256).map_err(|_| PipelineError::LockDigest {
                lock: path.to_owned(),
                package: format!("repository {}", locked.uri),
                sha256: locked.inrelease_sha256.clone(),
            })?;
        releases.push(UsedRelease {
            url: format!("{}/InRelease", source.dist_url()),
            digest,
            date: None,
        });
        uris.push(uri);
    }
    let debs = planned(&lock.resolved(), &uris, path)?;
    Ok(Plan {
        debs,
        warnings: Vec::new(),
        lock,
        lock_bytes: bytes,
        lock_path: Some(path.to_owned()),
        releases,
    })
}

/// Download requests for resolved packages, in installation order: by name (the resolver's and
/// the lock's order), so the same set always installs the same way.
fn planned(
    resolved: &[Resolved],
    uris: &[String],
    origin: &Path,
) -> Result<Vec<PlannedDeb>, PipelineError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(resolved.len());
    for r in resolved {
        if !seen.insert((r.name.clone(), r.architecture.clone())) {
            continue;
        }
        let sha256 = Digest::from_hex(&r.sha256).map_err(|_| PipelineError::LockDigest {
            lock: origin.to_owned(),
            package: r.name.clone(),
            sha256: r.sha256.clone(),
        })?;
        let repository = uris.get(r.repo.0 as usize).cloned().unwrap_or_default();
        out.push(PlannedDeb {
            name: r.name.clone(),
            version: r.version.to_string(),
            architecture: r.architecture.clone(),
            request: DebRequest {
                repository,
                filename: r.filename.clone(),
                sha256,
                size: r.size,
            },
        });
    }
    out.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
    Ok(out)
}
