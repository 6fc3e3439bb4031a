//! Fetching repository metadata and packages, verified from the signed `InRelease` down to each
//! `.deb`, through a content-addressed cache.
//!
//! The chain of trust: `InRelease` (or `Release` + `Release.gpg`) is verified with the source's
//! keyring and checked for freshness (`Valid-Until`) and suite; a `Packages` index is accepted only
//! if its SHA-256 and size match the signed `Release`; a `.deb` only if they match what the caller
//! took from that `Packages` index. A mismatch stops with an error naming the URL and both digests.
//!
//! Cache layout (below the directory given to [`Fetcher::new`]):
//!
//! - `releases/KEY/InRelease` (or `Release` + `Release.gpg`): the last verified metadata of a
//!   suite, `KEY` being the SHA-256 of its `dists/SUITE` URL; re-verified on every use.
//! - `indexes/sha256/HEX`: the decompressed, verified text of the index file whose SHA-256 (as
//!   named by a signed `Release`) is `HEX`. A warm cache neither downloads nor decompresses it.
//! - `debs/sha256/HEX`: verified `.deb` files, named by their SHA-256.
//! - `partial/HEX.partial`: an interrupted download, continued with an HTTP `Range` request. It is
//!   outside the content-addressed part and is removed when its bytes do not verify.
//! - `tmp/`: staging for atomic writes.
//!
//! Files enter `indexes/`, `debs/` and `releases/` only by an atomic rename after verification,
//! so nothing unverified or half-written is ever found there; a file's name is trusted afterwards
//! (as the OCI store trusts its blob names). An [offline](Fetcher::offline) fetcher works from
//! the cache alone and names what is missing.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fs_err as fs;
use types::{Digest, Sha256Writer};

use crate::openpgp::{self, Keyring, VerifyError};
use crate::release::{FileEntry, Release, ReleaseError};
use crate::sources::Source;

/// Largest `InRelease`/`Release`/`Release.gpg` accepted (Debian's main `InRelease` is ~150 KiB).
const MAX_METADATA: u64 = 64 << 20;
/// Largest decompressed index accepted when `Release` does not name the uncompressed size.
const MAX_INDEX: u64 = 2 << 30;
/// Compressed index variants in order of preference.
const VARIANTS: [&str; 3] = [".xz", ".gz", ""];

/// Progress of one download, reported as bytes arrive (the library never prints).
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// The URL being fetched.
    pub url: &'a str,
    /// Bytes of the item present so far (including a resumed prefix).
    pub done: u64,
    /// Expected total, when known.
    pub total: Option<u64>,
}

type ProgressFn = dyn Fn(&Progress<'_>) + Send + Sync;

/// A `.deb` to download: where it lives and what it must be (from a `Packages` paragraph).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebRequest {
    /// The repository root ([`Source::uri`]).
    pub repository: String,
    /// `Filename` from `Packages`, relative to the repository root.
    pub filename: String,
    /// `SHA256` from `Packages`.
    pub sha256: Digest,
    /// `Size` from `Packages`.
    pub size: u64,
}

impl DebRequest {
    /// The URL the file is fetched from.
    pub fn url(&self) -> String {
        join(&self.repository, &self.filename)
    }
}

/// Why fetching failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("failed to fetch {url}")]
    Http {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("failed to fetch {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("failed to fetch {url}: not found")]
    NotFound { url: String },
    #[error("failed to fetch {url}: the transfer broke after {done} of {total} bytes ({attempts} attempts)")]
    Interrupted {
        url: String,
        done: u64,
        total: u64,
        attempts: u32,
        #[source]
        source: io::Error,
    },
    #[error("failed to read {url}")]
    Read {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("{url} is not signed: it has no InRelease and no Release.gpg")]
    Unsigned { url: String },
    #[error("failed to verify the signature of {url}")]
    Verify {
        url: String,
        #[source]
        source: VerifyError,
    },
    #[error("refusing the Release of {url}")]
    Release {
        url: String,
        #[source]
        source: ReleaseError,
    },
    #[error("{path} is not listed in the signed Release of {url}")]
    NotInRelease { path: String, url: String },
    #[error("sha256 mismatch for {url}: expected {expected}, got {actual}")]
    DigestMismatch {
        url: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("size mismatch for {url}: expected {expected} bytes, got {}", match actual { Some(n) => n.to_string(), None => format!("more than {expected}") })]
    SizeMismatch {
        url: String,
        expected: u64,
        actual: Option<u64>,
    },
    #[error("{url} is larger than the {limit} bytes accepted")]
    TooLarge { url: String, limit: u64 },
    #[error("failed to decompress {url}")]
    Decompress {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("{url} is not UTF-8 text")]
    NotUtf8 { url: String },
    #[error("offline, and the cache has no {what}")]
    NotCached { what: String },
    #[error("unsupported URL {url} (expected http://, https:// or file://)")]
    UnsupportedUrl { url: String },
    #[error(
        "invalid package file name {filename:?}: it must be a relative path inside the repository"
    )]
    BadFilename { filename: String },
    #[error("cache I/O failed")]
    Io(#[from] io::Error),
}

/// Fetches and verifies repository metadata and packages through a cache.
#[derive(Clone)]
pub struct Fetcher {
    cache: PathBuf,
    offline: bool,
    parallel: usize,
    retries: u32,
    progress: Option<Arc<ProgressFn>>,
    /// Agent honouring the proxy environment variables.
    agent: ureq::Agent,
    /// Agent without a proxy, for loopback URLs.
    direct: ureq::Agent,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("cache", &self.cache)
            .field("offline", &self.offline)
            .field("parallel", &self.parallel)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

fn agent(proxy: bool) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .user_agent(concat!("hardbox/", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)));
    if !proxy {
        config = config.proxy(None);
    }
    ureq::Agent::new_with_config(config.build())
}

/// The result of a GET.
enum Got {
    Body(Vec<u8>, Option<String>),
    NotModified,
    Missing,
}

impl Fetcher {
    /// A fetcher using `cache` (created when first written). Online, 4 parallel downloads, 3
    /// retries of an interrupted download.
    pub fn new(cache: impl Into<PathBuf>) -> Fetcher {
        Fetcher {
            cache: cache.into(),
            offline: false,
            parallel: 4,
            retries: 3,
            progress: None,
            agent: agent(true),
            direct: agent(false),
        }
    }

    /// Work from the cache alone: no network; a missing item is an error naming it.
    pub fn offline(mut self, offline: bool) -> Fetcher {
        self.offline = offline;
        self
    }

    /// How many `.deb` files are downloaded at once (at least 1).
    pub fn parallel(mut self, n: usize) -> Fetcher {
        self.parallel = n.max(1);
        self
    }

    /// How many times an interrupted download is resumed before giving up.
    pub fn retries(mut self, n: u32) -> Fetcher {
        self.retries = n;
        self
    }

    /// Called as bytes arrive, from the downloading threads.
    pub fn progress(mut self, f: impl Fn(&Progress<'_>) + Send + Sync + 'static) -> Fetcher {
        self.progress = Some(Arc::new(f));
        self
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    fn report(&self, url: &str, done: u64, total: Option<u64>) {
        if let Some(p) = &self.progress {
            p(&Progress { url, done, total });
        }
    }

    fn agent_for(&self, url: &str) -> &ureq::Agent {
        if is_loopback(url) {
            &self.direct
        } else {
            &self.agent
        }
    }

    /// Fetches, verifies and parses the `Release` of `source`: `InRelease` if the repository has
    /// one, else `Release` with its detached `Release.gpg`. Refuses a Release that is expired at
    /// `now`, dated in the future, or (unless the source is flat) for another suite. Offline, the
    /// cached copy is verified the same way.
    pub fn release(
        &self,
        source: &Source,
        keyring: &Keyring,
        now: SystemTime,
    ) -> Result<Release, FetchError> {
        let dist = source.dist_url();
        let dir = self.cache.join("releases").join(url_key(&dist));
        let cached_inrelease = dir.join("InRelease");
        let cached_release = dir.join("Release");
        let cached_signature = dir.join("Release.gpg");
        let since_file = dir.join("InRelease.last-modified");

        if self.offline {
            if let Some(bytes) = read_optional(&cached_inrelease)? {
                return check_release(source, keyring, now, &bytes, None, &url(&dist, "InRelease"));
            }
            if let (Some(release), Some(sig)) = (
                read_optional(&cached_release)?,
                read_optional(&cached_signature)?,
            ) {
                return check_release(
                    source,
                    keyring,
                    now,
                    &release,
                    Some(&sig),
                    &url(&dist, "Release"),
                );
            }
            return Err(FetchError::NotCached {
                what: format!("InRelease or Release of {dist}"),
            });
        }

        let inrelease_url = url(&dist, "InRelease");
        let since = if cached_inrelease.is_file() {
            read_optional(&since_file)?.and_then(|b| String::from_utf8(b).ok())
        } else {
            None
        };
        match self.get(&inrelease_url, MAX_METADATA, since.as_deref())? {
            Got::Body(bytes, last_modified) => {
                let release = check_release(source, keyring, now, &bytes, None, &inrelease_url)?;
                fs::create_dir_all(&dir)?;
                fsutil::write_atomic(&cached_inrelease, &bytes)?;
                match last_modified {
                    Some(lm) => fsutil::write_atomic(&since_file, lm.as_bytes())?,
                    None => remove_optional(&since_file)?,
                }
                remove_optional(&cached_release)?;
                remove_optional(&cached_signature)?;
                Ok(release)
            }
            Got::NotModified => {
                let bytes = fs::read(&cached_inrelease)?;
                check_release(source, keyring, now, &bytes, None, &inrelease_url)
            }
            Got::Missing => {
                let release_url = url(&dist, "Release");
                let signature_url = url(&dist, "Release.gpg");
                let Got::Body(release, _) = self.get(&release_url, MAX_METADATA, None)? else {
                    return Err(FetchError::NotFound {
                        url: format!("{inrelease_url} (nor {release_url})"),
                    });
                };
                let Got::Body(signature, _) = self.get(&signature_url, MAX_METADATA, None)? else {
                    return Err(FetchError::Unsigned { url: dist });
                };
                let parsed = check_release(
                    source,
                    keyring,
                    now,
                    &release,
                    Some(&signature),
                    &release_url,
                )?;
                fs::create_dir_all(&dir)?;
                fsutil::write_atomic(&cached_release, &release)?;
                fsutil::write_atomic(&cached_signature, &signature)?;
                remove_optional(&cached_inrelease)?;
                remove_optional(&since_file)?;
                Ok(parsed)
            }
        }
    }

    /// Returns the verified, decompressed `Packages` index of `component` and `arch`, fetching the
    /// variant the signed `release` lists (`.xz`, else `.gz`, else uncompressed) unless the cache
    /// already holds it.
    pub fn packages_index(
        &self,
        source: &Source,
        release: &Release,
        component: &str,
        arch: &str,
    ) -> Result<String, FetchError> {
        let dist = source.dist_url();
        let base = source.packages_path(component, arch);
        let variants: Vec<(String, &FileEntry)> = VARIANTS
            .iter()
            .filter_map(|ext| {
                let path = format!("{base}{ext}");
                release.file(&path).map(|e| (path, e))
            })
            .collect();
        if variants.is_empty() {
            return Err(FetchError::NotInRelease {
                path: base,
                url: dist,
            });
        }
        let index_dir = self.cache.join("indexes").join("sha256");
        for (_, entry) in &variants {
            let path = index_dir.join(entry.sha256.hex());
            if let Some(bytes) = read_optional(&path)? {
                return String::from_utf8(bytes).map_err(|_| FetchError::NotUtf8 {
                    url: path.display().to_string(),
                });
            }
        }
        if self.offline {
            let (path, entry) = &variants[0];
            return Err(FetchError::NotCached {
                what: format!("{} ({})", url(&dist, path), entry.sha256),
            });
        }
        // The uncompressed entry, if Release lists it, also checks what decompression produced.
        let plain = release.file(&base);
        let mut tried = Vec::new();
        for (path, entry) in &variants {
            let mut urls = Vec::new();
            if release.acquire_by_hash {
                let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                let by_hash = format!("by-hash/SHA256/{}", entry.sha256.hex());
                urls.push(url(
                    &dist,
                    &if dir.is_empty() {
                        by_hash
                    } else {
                        format!("{dir}/{by_hash}")
                    },
                ));
            }
            urls.push(url(&dist, path));
            for u in urls {
                let got = match self.get(&u, entry.size, None) {
                    Err(FetchError::TooLarge { url, limit }) => {
                        return Err(FetchError::SizeMismatch {
                            url,
                            expected: limit,
                            actual: None,
                        })
                    }
                    other => other?,
                };
                let Got::Body(bytes, _) = got else {
                    tried.push(u);
                    continue;
                };
                check_bytes(&u, &bytes, entry)?;
                let limit = plain.map_or(MAX_INDEX, |p| p.size);
                let text = decompress(&u, &bytes, path, limit)?;
                if let Some(p) = plain {
                    check_bytes(&u, &text, p)?;
                }
                let text = String::from_utf8(text).map_err(|_| FetchError::NotUtf8 { url: u })?;
                self.staging()?;
                fs::create_dir_all(&index_dir)?;
                fsutil::write_atomic(&index_dir.join(entry.sha256.hex()), text.as_bytes())?;
                return Ok(text);
            }
        }
        Err(FetchError::NotFound {
            url: tried.join(", "),
        })
    }

    /// Downloads `requests` (up to [`Fetcher::parallel`] at once) and returns the cached path of
    /// each, in order. Each file is verified (size and SHA-256) before it enters the cache; files
    /// already cached are not downloaded again. An interrupted download is resumed with a `Range`
    /// request. On the first failure no further download starts and the error is returned.
    pub fn debs(&self, requests: &[DebRequest]) -> Result<Vec<PathBuf>, FetchError> {
        let dir = self.cache.join("debs").join("sha256");
        for r in requests {
            check_filename(&r.filename)?;
        }
        let paths: Vec<PathBuf> = requests.iter().map(|r| dir.join(r.sha256.hex())).collect();
        let mut pending: Vec<usize> = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            let first = paths[..i].iter().all(|p| p != path);
            if first && !path.is_file() {
                pending.push(i);
            }
        }
        if pending.is_empty() {
            return Ok(paths);
        }
        if self.offline {
            let missing: Vec<String> = pending
                .iter()
                .map(|&i| format!("{} ({})", requests[i].url(), requests[i].sha256))
                .collect();
            return Err(FetchError::NotCached {
                what: format!("{} package(s): {}", missing.len(), missing.join(", ")),
            });
        }
        self.staging()?;
        fs::create_dir_all(&dir)?;
        fs::create_dir_all(self.cache.join("partial"))?;

        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let errors: Mutex<Vec<(usize, FetchError)>> = Mutex::new(Vec::new());
        let workers = self.parallel.min(pending.len());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = pending.get(n) else { break };
                    if let Err(e) = self.download_deb(&requests[i], &paths[i]) {
                        failed.store(true, Ordering::Relaxed);
                        if let Ok(mut errors) = errors.lock() {
                            errors.push((i, e));
                        }
                    }
                });
            }
        });
        let mut errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
        errors.sort_by_key(|(i, _)| *i);
        match errors.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(paths),
        }
    }

    fn staging(&self) -> io::Result<PathBuf> {
        let tmp = self.cache.join("tmp");
        fs::create_dir_all(&tmp)?;
        Ok(tmp)
    }

    /// GETs a whole (small) resource into memory; `limit` bounds its size.
    fn get(&self, u: &str, limit: u64, if_modified_since: Option<&str>) -> Result<Got, FetchError> {
        if let Some(path) = file_path(u) {
            let file = match File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Got::Missing),
                Err(source) => {
                    return Err(FetchError::Read {
                        url: u.to_owned(),
                        source,
                    })
                }
            };
            let bytes = read_limited(file, limit, u)?;
            self.report(u, bytes.len() as u64, Some(bytes.len() as u64));
            return Ok(Got::Body(bytes, None));
        }
        check_http(u)?;
        let mut request = self
            .agent_for(u)
            .get(u)
            .header("Accept-Encoding", "identity");
        if let Some(since) = if_modified_since {
            request = request.header("If-Modified-Since", since);
        }
        let response = request.call().map_err(|e| http_error(u, e))?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            304 if if_modified_since.is_some() => return Ok(Got::NotModified),
            404 | 410 => return Ok(Got::Missing),
            _ => {
                return Err(FetchError::Status {
                    url: u.to_owned(),
                    status,
                })
            }
        }
        let last_modified = response
            .headers()
            .get("Last-Modified")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let total = content_length(&response);
        let mut reader = response.into_body().into_reader();
        let mut bytes = Vec::with_capacity(total.unwrap_or(0).min(limit) as usize);
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = reader.read(&mut buf).map_err(|source| FetchError::Read {
                url: u.to_owned(),
                source,
            })?;
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
            if bytes.len() as u64 > limit {
                return Err(FetchError::TooLarge {
                    url: u.to_owned(),
                    limit,
                });
            }
            self.report(u, bytes.len() as u64, total);
        }
        Ok(Got::Body(bytes, last_modified))
    }

    /// Downloads one `.deb` into the cache at `target`.
    fn download_deb(&self, request: &DebRequest, target: &Path) -> Result<(), FetchError> {
        let u = request.url();
        if let Some(path) = file_path(&u) {
            return self.copy_deb(&u, path, request, target);
        }
        check_http(&u)?;
        let partial_dir = self.cache.join("partial");
        let hex = request.sha256.hex();
        // Another process may be downloading the same file into the same partial file.
        let _lock = fsutil::Lock::acquire(
            &partial_dir.join(format!("{hex}.lock")),
            fsutil::LockMode::Exclusive,
        )?;
        if target.is_file() {
            return Ok(());
        }
        let partial = partial_dir.join(format!("{hex}.partial"));
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.transfer(&u, request, &partial) {
                Ok(Transfer::Complete(actual)) => {
                    if actual != request.sha256 {
                        remove_optional(&partial)?;
                        return Err(FetchError::DigestMismatch {
                            url: u,
                            expected: request.sha256.clone(),
                            actual,
                        });
                    }
                    fs::rename(&partial, target)?;
                    fsutil::sync_dir(target.parent().unwrap_or(Path::new(".")))?;
                    return Ok(());
                }
                Ok(Transfer::Restart) if attempts <= self.retries => {}
                Ok(Transfer::Restart) => {
                    return Err(FetchError::Status {
                        url: u,
                        status: 416,
                    });
                }
                Err(TransferError::Broken { done, source }) => {
                    if attempts > self.retries {
                        return Err(FetchError::Interrupted {
                            url: u,
                            done,
                            total: request.size,
                            attempts,
                            source,
                        });
                    }
                }
                Err(TransferError::Fatal(e)) => {
                    // Bytes that can never verify are not kept for a later resume.
                    if matches!(
                        e,
                        FetchError::SizeMismatch { .. } | FetchError::NotFound { .. }
                    ) {
                        remove_optional(&partial)?;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// One HTTP attempt: continues `partial` from its length, returns the digest of the complete
    /// file, or says why it stopped.
    fn transfer(
        &self,
        u: &str,
        request: &DebRequest,
        partial: &Path,
    ) -> Result<Transfer, TransferError> {
        let size = request.size;
        let mut have = match fs::metadata(partial) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(TransferError::Fatal(e.into())),
        };
        if have > size {
            remove_optional(partial).map_err(TransferError::fatal)?;
            have = 0;
        }
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(partial)
            .map_err(TransferError::fatal)?;
        if have == size {
            let digest = hash_prefix(&mut file, size).map_err(TransferError::fatal)?;
            return Ok(Transfer::Complete(digest));
        }
        let mut request_builder = self
            .agent_for(u)
            .get(u)
            .header("Accept-Encoding", "identity");
        if have > 0 {
            request_builder = request_builder.header("Range", format!("bytes={have}-"));
        }
        let response = match request_builder.call() {
            Ok(r) => r,
            Err(ureq::Error::Io(source)) => {
                return Err(TransferError::Broken { done: have, source })
            }
            Err(e) => return Err(TransferError::Fatal(http_error(u, e))),
        };
        let status = response.status().as_u16();
        let start = match status {
            200 => 0,
            206 if have > 0 => {
                let range = response
                    .headers()
                    .get("Content-Range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                match range {
                    Some((first, total)) if first == have => {
                        if total.is_some_and(|t| t != size) {
                            return Err(TransferError::Fatal(FetchError::SizeMismatch {
                                url: u.to_owned(),
                                expected: size,
                                actual: total,
                            }));
                        }
                        have
                    }
                    // A range we did not ask for: start again from the beginning.
                    _ => {
                        remove_optional(partial).map_err(TransferError::fatal)?;
                        return Ok(Transfer::Restart);
                    }
                }
            }
            416 if have > 0 => {
                remove_optional(partial).map_err(TransferError::fatal)?;
                return Ok(Transfer::Restart);
            }
            404 | 410 => {
                return Err(TransferError::Fatal(FetchError::NotFound {
                    url: u.to_owned(),
                }))
            }
            _ => {
                return Err(TransferError::Fatal(FetchError::Status {
                    url: u.to_owned(),
                    status,
                }))
            }
        };
        let mut hasher = if start > 0 {
            hasher_of_prefix(&mut file, start).map_err(TransferError::fatal)?
        } else {
            file.set_len(0).map_err(TransferError::fatal)?;
            Sha256Writer::new()
        };
        file.seek(SeekFrom::Start(start))
            .map_err(TransferError::fatal)?;
        let mut done = start;
        self.report(u, done, Some(size));
        let mut reader = response.into_body().into_reader();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(n) => n,
                Err(source) => {
                    file.sync_data().map_err(TransferError::fatal)?;
                    return Err(TransferError::Broken { done, source });
                }
            };
            if n == 0 {
                break;
            }
            if done + n as u64 > size {
                return Err(TransferError::Fatal(FetchError::SizeMismatch {
                    url: u.to_owned(),
                    expected: size,
                    actual: None,
                }));
            }
            file.write_all(&buf[..n]).map_err(TransferError::fatal)?;
            hasher.update(&buf[..n]);
            done += n as u64;
            self.report(u, done, Some(size));
        }
        if done < size {
            // The server ended the body cleanly: the file is shorter than Packages says.
            return Err(TransferError::Fatal(FetchError::SizeMismatch {
                url: u.to_owned(),
                expected: size,
                actual: Some(done),
            }));
        }
        file.sync_all().map_err(TransferError::fatal)?;
        Ok(Transfer::Complete(digest_of(hasher)))
    }

    /// Copies a `file://` package into the cache, hashing on the way.
    fn copy_deb(
        &self,
        u: &str,
        path: &Path,
        request: &DebRequest,
        target: &Path,
    ) -> Result<(), FetchError> {
        let mut input = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(FetchError::NotFound { url: u.to_owned() })
            }
            Err(source) => {
                return Err(FetchError::Read {
                    url: u.to_owned(),
                    source,
                })
            }
        };
        let mut out = fsutil::AtomicFile::create(&self.staging()?, target)?;
        let mut hasher = Sha256Writer::new();
        let mut done = 0u64;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = input.read(&mut buf).map_err(|source| FetchError::Read {
                url: u.to_owned(),
                source,
            })?;
            if n == 0 {
                break;
            }
            done += n as u64;
            if done > request.size {
                return Err(FetchError::SizeMismatch {
                    url: u.to_owned(),
                    expected: request.size,
                    actual: None,
                });
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            self.report(u, done, Some(request.size));
        }
        if done != request.size {
            return Err(FetchError::SizeMismatch {
                url: u.to_owned(),
                expected: request.size,
                actual: Some(done),
            });
        }
        let actual = digest_of(hasher);
        if actual != request.sha256 {
            return Err(FetchError::DigestMismatch {
                url: u.to_owned(),
                expected: request.sha256.clone(),
                actual,
            });
        }
        out.commit()?;
        Ok(())
    }
}

enum Transfer {
    Complete(Digest),
    /// The partial file was discarded; start over.
    Restart,
}

enum TransferError {
    /// The connection broke: the partial file is kept and the transfer can resume.
    Broken {
        done: u64,
        source: io::Error,
    },
    Fatal(FetchError),
}

impl TransferError {
    fn fatal(e: io::Error) -> TransferError {
        TransferError::Fatal(FetchError::Io(e))
    }
}

/// Verifies metadata bytes (clearsigned, or with a detached signature) and checks the Release.
fn check_release(
    source: &Source,
    keyring: &Keyring,
    now: SystemTime,
    bytes: &[u8],
    detached: Option<&[u8]>,
    u: &str,
) -> Result<Release, FetchError> {
    let verified = match detached {
        None => openpgp::verify_clearsigned(keyring, bytes, now),
        Some(sig) => openpgp::verify_detached(keyring, bytes, sig, now),
    }
    .map_err(|source| FetchError::Verify {
        url: u.to_owned(),
        source,
    })?;
    let release_error = |source| FetchError::Release {
        url: u.to_owned(),
        source,
    };
    let release = Release::parse(&verified.text).map_err(release_error)?;
    release.check_fresh(now).map_err(release_error)?;
    if !source.is_flat() {
        release.check_suite(&source.suite).map_err(release_error)?;
    }
    Ok(release)
}

fn check_bytes(u: &str, bytes: &[u8], entry: &FileEntry) -> Result<(), FetchError> {
    if bytes.len() as u64 != entry.size {
        return Err(FetchError::SizeMismatch {
            url: u.to_owned(),
            expected: entry.size,
            actual: Some(bytes.len() as u64),
        });
    }
    let actual = Digest::of(bytes);
    if actual != entry.sha256 {
        return Err(FetchError::DigestMismatch {
            url: u.to_owned(),
            expected: entry.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

/// Decompresses an index by the suffix of its Release path, refusing more than `limit` bytes.
fn decompress(u: &str, bytes: &[u8], path: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
    let reader: Box<dyn Read + '_> = if path.ends_with(".xz") {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(bytes))
    } else if path.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(bytes))
    } else {
        return Ok(bytes.to_vec());
    };
    let mut out = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|source| FetchError::Decompress {
            url: u.to_owned(),
            source,
        })?;
    if out.len() as u64 > limit {
        return Err(FetchError::TooLarge {
            url: u.to_owned(),
            limit,
        });
    }
    Ok(out)
}

fn read_limited(file: File, limit: u64, u: &str) -> Result<Vec<u8>, FetchError> {
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| FetchError::Read {
            url: u.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(FetchError::TooLarge {
            url: u.to_owned(),
            limit,
        });
    }
    Ok(bytes)
}

fn hasher_of_prefix(file: &mut (impl Read + Seek), len: u64) -> io::Result<Sha256Writer> {
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256Writer::new();
    let copied = io::copy(&mut (&mut *file).take(len), &mut hasher)?;
    if copied != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "partial download shrank while being read",
        ));
    }
    Ok(hasher)
}

fn hash_prefix(file: &mut (impl Read + Seek), len: u64) -> io::Result<Digest> {
    hasher_of_prefix(file, len).map(digest_of)
}

fn digest_of(hasher: Sha256Writer) -> Digest {
    hasher.finish().0
}

/// `bytes START-END/TOTAL` → (START, TOTAL unless `*`).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, _) = range.split_once('-')?;
    let total = match total {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first.parse().ok()?, total))
}

fn content_length(response: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    response
        .headers()
        .get("Content-Length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn http_error(u: &str, e: ureq::Error) -> FetchError {
    FetchError::Http {
        url: u.to_owned(),
        source: Box::new(e),
    }
}

fn check_http(u: &str) -> Result<(), FetchError> {
    if u.starts_with("http://") || u.starts_with("https://") {
        Ok(())
    } else {
        Err(FetchError::UnsupportedUrl { url: u.to_owned() })
    }
}

/// The local path of a `file://` URL.
fn file_path(u: &str) -> Option<&Path> {
    u.strip_prefix("file://").map(Path::new)
}

fn is_loopback(u: &str) -> bool {
    let Some(rest) = u.split_once("://").map(|(_, r)| r) else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host.starts_with('[') {
        host.split(']').next().map_or(host, |h| &h[1..])
    } else {
        host.split(':').next().unwrap_or(host)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn join(base: &str, rel: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        rel.trim_start_matches('/')
    )
}

fn url(dist: &str, rel: &str) -> String {
    join(dist, rel)
}

/// A file name for the cache entries of a URL.
fn url_key(u: &str) -> String {
    Digest::of(u.as_bytes()).hex().to_owned()
}

/// A `Filename` from `Packages` must stay inside the repository.
fn check_filename(filename: &str) -> Result<(), FetchError> {
    let ok = !filename.is_empty()
        && !filename.starts_with('/')
        && filename
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && !filename
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#' || b == b'\\');
    if ok {
        Ok(())
    } else {
        Err(FetchError::BadFilename {
            filename: filename.to_owned(),
        })
    }
}

fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn remove_optional(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_must_stay_inside_the_repository() {
        check_filename("pool/main/h/hello/hello_2.10-3_amd64.deb").unwrap();
        for bad in [
            "",
            "/etc/passwd",
            "pool/../../x.deb",
            "pool//x.deb",
            "./x.deb",
            "pool/x.deb?y",
            "pool/x y.deb",
            "pool/x\n.deb",
        ] {
            assert!(check_filename(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 5-9/10"), None);
        assert_eq!(parse_content_range("bytes x-9/10"), None);
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("http://127.0.0.1:8080/debian"));
        assert!(is_loopback("http://localhost/x"));
        assert!(is_loopback("http://[::1]:80/x"));
        assert!(is_loopback("http://user@127.0.0.2/x"));
        assert!(!is_loopback("http://deb.example.invalid/debian"));
        assert!(!is_loopback("http://127.0.0.1.example.invalid/x"));
    }

    #[test]
    fn shareable_across_threads_and_into_anyhow() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Fetcher>();
        send_sync::<FetchError>();
        send_sync::<Keyring>();
        send_sync::<crate::sources::SourceError>();
        send_sync::<crate::openpgp::KeyringError>();
    }

    #[test]
    fn join_urls() {
        assert_eq!(join("http://h/d/", "/dists/s"), "http://h/d/dists/s");
        assert_eq!(join("http://h/d", "pool/x.deb"), "http://h/d/pool/x.deb");
    }
}
