//! `hardbox.lock.json`: a resolution written down, so `build --locked` fetches exactly those
//! packages without resolving again.
//!
//! The lock records the format version, the architecture, the requests it was resolved from
//! (so a caller can tell that a spec's package list changed), the repositories (URI, suite,
//! components and the SHA-256 of the `InRelease` the resolution used) and, per package: name,
//! version, architecture, the position of its repository in the list, the `.deb`'s path, SHA-256
//! and size, and the source package's name and version.
//!
//! The JSON is stable: keys in a fixed order, packages sorted by name, architecture and version,
//! two-space indentation and a trailing newline, so the same resolution always gives the same
//! bytes. Reading it is strict: unknown keys, a different format version, malformed hashes,
//! names or versions are errors naming the line (and column); repositories out of range and
//! duplicate packages are errors naming the package. This module does no I/O: callers read the
//! file and write it atomically (`fsutil::write_atomic`).

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::package::RepoId;
use crate::relation;
use crate::resolve::{Request, Resolution, Resolved};
use crate::version::Version;

/// The lockfile's name, next to the spec.
pub const FILE_NAME: &str = "hardbox.lock.json";

/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// A lockfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// Always [`FORMAT_VERSION`].
    #[serde(deserialize_with = "format_version")]
    pub lockfile_version: u32,
    /// The native architecture resolved for.
    pub architecture: String,
    /// Foreign architectures that were enabled (omitted when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_architectures: Vec<String>,
    /// The repositories; a package's `repository` is a position in this list.
    pub repositories: Vec<LockedRepository>,
    /// The requests resolved, as written, sorted.
    pub requests: Vec<String>,
    /// The packages, sorted by name, architecture and version.
    pub packages: Vec<LockedPackage>,
}

/// A repository a lock's packages come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedRepository {
    /// Base URI (`http://…/debian`).
    pub uri: String,
    /// Suite (`bookworm`, `bookworm-security`).
    pub suite: String,
    /// Components (`main`, …).
    pub components: Vec<String>,
    /// SHA-256 of the `InRelease` file the resolution was made from.
    #[serde(deserialize_with = "sha256")]
    pub inrelease_sha256: String,
}

/// One locked package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    /// Package name.
    #[serde(deserialize_with = "package_name")]
    pub name: String,
    /// Exact version.
    pub version: Version,
    /// Architecture (`all` included).
    pub architecture: String,
    /// Position of its repository in [`Lock::repositories`].
    pub repository: RepoId,
    /// Path of the `.deb` below the repository's root.
    pub filename: String,
    /// SHA-256 of the `.deb`.
    #[serde(deserialize_with = "sha256")]
    pub sha256: String,
    /// Size of the `.deb` in bytes.
    pub size: u64,
    /// Source package name.
    #[serde(deserialize_with = "package_name")]
    pub source: String,
    /// Source package version.
    pub source_version: Version,
}

impl From<&Resolved> for LockedPackage {
    fn from(r: &Resolved) -> Self {
        LockedPackage {
            name: r.name.clone(),
            version: r.version.clone(),
            architecture: r.architecture.clone(),
            repository: r.repo,
            filename: r.filename.clone(),
            sha256: r.sha256.clone(),
            size: r.size,
            source: r.source.clone(),
            source_version: r.source_version.clone(),
        }
    }
}

impl From<&LockedPackage> for Resolved {
    fn from(p: &LockedPackage) -> Self {
        Resolved {
            name: p.name.clone(),
            version: p.version.clone(),
            architecture: p.architecture.clone(),
            repo: p.repository,
            filename: p.filename.clone(),
            sha256: p.sha256.clone(),
            size: p.size,
            source: p.source.clone(),
            source_version: p.source_version.clone(),
        }
    }
}

/// A lockfile that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// Not valid JSON, or a key or value the format does not allow.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A package names a repository the lock does not list.
    #[error(
        "package {name} ({architecture}): repository {index} does not exist (the lock lists {count})"
    )]
    UnknownRepository {
        /// The package.
        name: String,
        /// Its architecture.
        architecture: String,
        /// The repository position it names.
        index: RepoId,
        /// How many repositories the lock lists.
        count: usize,
    },
    /// A package (name and architecture) is listed twice.
    #[error("package {name} ({architecture}) is listed twice")]
    Duplicate {
        /// The package.
        name: String,
        /// Its architecture.
        architecture: String,
    },
}

impl Lock {
    /// The lock of `resolution`, resolved from `requests` for `architecture` (and `foreign`
    /// architectures) out of `repositories` (a package's [`RepoId`] is its repository's
    /// position in that list).
    pub fn new(
        architecture: &str,
        foreign: &[String],
        repositories: Vec<LockedRepository>,
        requests: &[Request],
        resolution: &Resolution,
    ) -> Lock {
        let mut requests: Vec<String> = requests.iter().map(ToString::to_string).collect();
        requests.sort();
        requests.dedup();
        let mut packages: Vec<LockedPackage> = resolution
            .packages
            .iter()
            .map(LockedPackage::from)
            .collect();
        packages.sort_by(|a, b| {
            (&a.name, &a.architecture, a.version.as_str()).cmp(&(
                &b.name,
                &b.architecture,
                b.version.as_str(),
            ))
        });
        Lock {
            lockfile_version: FORMAT_VERSION,
            architecture: architecture.to_owned(),
            foreign_architectures: foreign.to_vec(),
            repositories,
            requests,
            packages,
        }
    }

    /// The lock as JSON: stable key order, two-space indentation, trailing newline.
    pub fn to_json(&self) -> String {
        // Serializing plain strings, numbers and sequences cannot fail.
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Parses and checks a lockfile's text.
    pub fn from_json(text: &str) -> Result<Lock, LockError> {
        let lock: Lock = serde_json::from_str(text).map_err(|e| {
            let (line, column) = (e.line(), e.column());
            let message = e.to_string();
            let suffix = format!(" at line {line} column {column}");
            LockError::Syntax {
                line,
                column,
                message: message.strip_suffix(&suffix).unwrap_or(&message).to_owned(),
            }
        })?;
        let mut seen = HashSet::new();
        for p in &lock.packages {
            if p.repository.0 as usize >= lock.repositories.len() {
                return Err(LockError::UnknownRepository {
                    name: p.name.clone(),
                    architecture: p.architecture.clone(),
                    index: p.repository,
                    count: lock.repositories.len(),
                });
            }
            if !seen.insert((p.name.as_str(), p.architecture.as_str())) {
                return Err(LockError::Duplicate {
                    name: p.name.clone(),
                    architecture: p.architecture.clone(),
                });
            }
        }
        Ok(lock)
    }

    /// The locked packages as a resolved set, to fetch and install without resolving.
    pub fn resolved(&self) -> Vec<Resolved> {
        self.packages.iter().map(Resolved::from).collect()
    }

    /// Whether the lock was resolved from exactly these requests (in any order).
    pub fn matches_requests(&self, requests: &[Request]) -> bool {
        let mut given: Vec<String> = requests.iter().map(ToString::to_string).collect();
        given.sort();
        given.dedup();
        given == self.requests
    }

    /// The repository a package's [`RepoId`] refers to.
    pub fn repository(&self, id: RepoId) -> Option<&LockedRepository> {
        self.repositories.get(id.0 as usize)
    }
}

fn format_version<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v != FORMAT_VERSION {
        return Err(serde::de::Error::custom(format_args!(
            "unsupported lockfile_version {v} (this hardbox reads version {FORMAT_VERSION})"
        )));
    }
    Ok(v)
}

fn sha256<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(serde::de::Error::custom(format_args!(
            "{s:?} is not a SHA-256 (64 lowercase hexadecimal digits)"
        )));
    }
    Ok(s)
}

fn package_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if !relation::is_valid_package_name(&s) {
        return Err(serde::de::Error::custom(InvalidName(&s)));
    }
    Ok(s)
}

struct InvalidName<'s>(&'s str);

impl fmt::Display for InvalidName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid package name {:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::Warning;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn sample() -> Lock {
        let resolved = |name: &str, version: &str, arch: &str, repo: u32| Resolved {
            name: name.into(),
            version: v(version),
            architecture: arch.into(),
            repo: RepoId(repo),
            filename: format!("pool/main/{name}_{version}_{arch}.deb"),
            sha256: "ab".repeat(32),
            size: 1234,
            source: name.into(),
            source_version: v(version),
        };
        let resolution = Resolution {
            packages: vec![
                resolved("libssl3", "3.0.15-1~deb12u1", "amd64", 1),
                resolved("ca-certificates", "20230311", "all", 0),
            ],
            warnings: vec![Warning::RequestedAndExcluded { name: "x".into() }],
        };
        let requests = vec![
            Request::parse("ca-certificates").unwrap(),
            Request::parse("!perl-base").unwrap(),
        ];
        let repositories = vec![
            LockedRepository {
                uri: "http://archive.invalid/debian".into(),
                suite: "bookworm".into(),
                components: vec!["main".into()],
                inrelease_sha256: "01".repeat(32),
            },
            LockedRepository {
                uri: "http://archive.invalid/debian-security".into(),
                suite: "bookworm-security".into(),
                components: vec!["main".into()],
                inrelease_sha256: "02".repeat(32),
            },
        ];
        Lock::new("amd64", &[], repositories, &requests, &resolution)
    }

    #[test]
    fn writes_stable_json() {
        let text = sample().to_json();
        let expected = format!(
            r#"{{
  "lockfile_version": 1,
  "architecture": "amd64",
  "repositories": [
    {{
      "uri": "http://archive.invalid/debian",
      "suite": "bookworm",
      "components": [
        "main"
      ],
      "inrelease_sha256": "{r0}"
    }},
    {{
      "uri": "http://archive.invalid/debian-security",
      "suite": "bookworm-security",
      "components": [
        "main"
      ],
      "inrelease_sha256": "{r1}"
    }}
  ],
  "requests": [
    "!perl-base",
    "ca-certificates"
  ],
  "packages": [
    {{
      "name": "ca-certificates",
      "version": "20230311",
      "architecture": "all",
      "repository": 0,
      "filename": "pool/main/ca-certificates_20230311_all.deb",
      "sha256": "{h}",
      "size": 1234,
      "source": "ca-certificates",
      "source_version": "20230311"
    }},
    {{
      "name": "libssl3",
      "version": "3.0.15-1~deb12u1",
      "architecture": "amd64",
      "repository": 1,
      "filename": "pool/main/libssl3_3.0.15-1~deb12u1_amd64.deb",
      "sha256": "{h}",
      "size": 1234,
      "source": "libssl3",
      "source_version": "3.0.15-1~deb12u1"
    }}
  ]
}}
"#,
            r0 = "01".repeat(32),
            r1 = "02".repeat(32),
            h = "ab".repeat(32)
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn round_trips_to_the_resolved_set() {
        let lock = sample();
        let text = lock.to_json();
        let back = Lock::from_json(&text).unwrap();
        assert_eq!(back, lock);
        assert_eq!(back.to_json(), text);
        let resolved = back.resolved();
        assert_eq!(resolved.len(), 2);
        assert_eq!(resolved[1].name, "libssl3");
        assert_eq!(resolved[1].repo, RepoId(1));
        assert_eq!(
            back.repository(resolved[1].repo).unwrap().suite,
            "bookworm-security"
        );
        assert!(back.matches_requests(&[
            Request::parse("!perl-base").unwrap(),
            Request::parse("ca-certificates").unwrap(),
            Request::parse("ca-certificates").unwrap(),
        ]));
        assert!(!back.matches_requests(&[Request::parse("ca-certificates").unwrap()]));
    }

    /// Replaces the first `from` in the sample's JSON and returns the parse error.
    fn error_after(from: &str, to: &str) -> String {
        let text = sample().to_json();
        assert!(text.contains(from), "{from}");
        Lock::from_json(&text.replacen(from, to, 1))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            error_after("\"lockfile_version\": 1", "\"lockfile_version\": 2"),
            "line 2, column 23: unsupported lockfile_version 2 (this hardbox reads version 1)"
        );
        assert_eq!(
            error_after("\"size\": 1234,", "\"size\": 1234, \"extra\": 1,"),
            "line 34, column 27: unknown field `extra`, expected one of `name`, `version`, \
             `architecture`, `repository`, `filename`, `sha256`, `size`, `source`, \
             `source_version`"
        );
        let bad_hash = format!("\"sha256\": \"{}\"", "ab".repeat(32));
        assert_eq!(
            error_after(&bad_hash, "\"sha256\": \"AB\""),
            "line 33, column 20: \"AB\" is not a SHA-256 (64 lowercase hexadecimal digits)"
        );
        assert_eq!(
            error_after("\"version\": \"20230311\"", "\"version\": \"1.0-\""),
            "line 29, column 23: invalid version \"1.0-\": revision number is empty"
        );
        assert_eq!(
            error_after("\"name\": \"libssl3\"", "\"name\": \"lib ssl\""),
            "line 39, column 23: invalid package name \"lib ssl\""
        );
        assert_eq!(
            error_after("\"size\": 1234,\n", "\n"),
            "line 37, column 5: missing field `size`"
        );
        assert_eq!(
            error_after("\"packages\": [", "\"packages\": [,"),
            "line 26, column 16: expected value"
        );
    }

    #[test]
    fn errors_name_the_package() {
        assert_eq!(
            error_after("\"repository\": 1", "\"repository\": 2"),
            "package libssl3 (amd64): repository 2 does not exist (the lock lists 2)"
        );
        let mut lock = sample();
        lock.packages[1] = lock.packages[0].clone();
        assert_eq!(
            Lock::from_json(&lock.to_json()).unwrap_err().to_string(),
            "package ca-certificates (all) is listed twice"
        );
    }
}
