//! SLSA v1 provenance predicates (<https://slsa.dev/spec/v1.0/provenance>).
//!
//! A hardbox build is a pure function of its spec, the resolved Debian artifacts and
//! `SOURCE_DATE_EPOCH`, so the predicate records exactly those: `externalParameters` holds the
//! spec (name and digest) and `sourceDateEpoch`; `resolvedDependencies` holds every input with its
//! digest (the `.deb` files, the `InRelease` files they were verified from, the spec, the lock),
//! sorted so the same inputs give the same bytes. `startedOn` and `finishedOn` are both
//! `SOURCE_DATE_EPOCH`: the wall-clock time of a reproducible build is not part of its output.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use types::Digest;

use crate::AttestError;

/// `buildType` of a hardbox image build from a spec and Debian packages.
pub const BUILD_TYPE: &str = concat!(
    env!("CARGO_PKG_REPOSITORY"),
    "/attestation/build-types/debian-image/v1"
);

/// `builder.id` of hardbox running on the user's machine (a trusted CI builder would use its
/// own identity).
pub const LOCAL_BUILDER_ID: &str = concat!(env!("CARGO_PKG_REPOSITORY"), "/builders/local");

/// An artifact: a name and/or URI with its digests (in-toto ResourceDescriptor).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDescriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

impl ResourceDescriptor {
    /// An artifact known by name (a spec file, a lock file).
    pub fn named(name: impl Into<String>, digest: &Digest) -> ResourceDescriptor {
        ResourceDescriptor {
            uri: None,
            name: Some(name.into()),
            digest: digest_map(digest),
            media_type: None,
        }
    }

    /// An artifact fetched from `uri` (a `.deb`, an `InRelease`).
    pub fn at(uri: impl Into<String>, digest: &Digest) -> ResourceDescriptor {
        ResourceDescriptor {
            uri: Some(uri.into()),
            name: None,
            digest: digest_map(digest),
            media_type: None,
        }
    }
}

fn digest_map(digest: &Digest) -> BTreeMap<String, String> {
    BTreeMap::from([(digest.algorithm().to_owned(), digest.hex().to_owned())])
}

/// What a provenance predicate says about one build.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    /// Defaults to [`BUILD_TYPE`].
    pub build_type: String,
    /// The build spec (`externalParameters.spec`).
    pub spec: ResourceDescriptor,
    /// `SOURCE_DATE_EPOCH`: recorded in `externalParameters` and used for both run times.
    pub source_date_epoch: u64,
    /// More external parameters (for example the target platform), by name.
    pub external_parameters: BTreeMap<String, serde_json::Value>,
    /// Parameters set by the builder rather than the user, by name.
    pub internal_parameters: BTreeMap<String, serde_json::Value>,
    /// Every input artifact with its digest; sorted when written.
    pub resolved_dependencies: Vec<ResourceDescriptor>,
    /// `runDetails.builder.id`; defaults to [`LOCAL_BUILDER_ID`].
    pub builder_id: String,
    /// `runDetails.builder.version`; defaults to `{"hardbox": VERSION}`.
    pub builder_version: BTreeMap<String, String>,
    /// `runDetails.metadata.invocationId`, when the builder has one.
    pub invocation_id: Option<String>,
}

impl Provenance {
    /// Provenance of a build of `spec` at `source_date_epoch`, with the default build type and
    /// builder.
    pub fn new(spec: ResourceDescriptor, source_date_epoch: u64) -> Provenance {
        Provenance {
            build_type: BUILD_TYPE.to_owned(),
            spec,
            source_date_epoch,
            external_parameters: BTreeMap::new(),
            internal_parameters: BTreeMap::new(),
            resolved_dependencies: Vec::new(),
            builder_id: LOCAL_BUILDER_ID.to_owned(),
            builder_version: BTreeMap::from([(
                "hardbox".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            )]),
            invocation_id: None,
        }
    }

    /// The predicate as JSON.
    pub fn to_predicate(&self) -> Result<serde_json::Value, AttestError> {
        let time = types::time::rfc3339(self.source_date_epoch)
            .ok_or(AttestError::BadTimestamp(self.source_date_epoch))?;
        let mut external = serde_json::Map::new();
        for (name, value) in &self.external_parameters {
            external.insert(name.clone(), value.clone());
        }
        external.insert("spec".to_owned(), serde_json::to_value(&self.spec)?);
        external.insert(
            "sourceDateEpoch".to_owned(),
            serde_json::Value::from(self.source_date_epoch),
        );
        let mut dependencies = self.resolved_dependencies.clone();
        dependencies.sort();
        dependencies.dedup();
        let predicate = Predicate {
            build_definition: BuildDefinition {
                build_type: &self.build_type,
                external_parameters: external,
                internal_parameters: &self.internal_parameters,
                resolved_dependencies: dependencies,
            },
            run_details: RunDetails {
                builder: Builder {
                    id: &self.builder_id,
                    version: &self.builder_version,
                },
                metadata: Metadata {
                    invocation_id: self.invocation_id.as_deref(),
                    started_on: time.clone(),
                    finished_on: time,
                },
            },
        };
        Ok(serde_json::to_value(predicate)?)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Predicate<'a> {
    build_definition: BuildDefinition<'a>,
    run_details: RunDetails<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BuildDefinition<'a> {
    build_type: &'a str,
    external_parameters: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    internal_parameters: &'a BTreeMap<String, serde_json::Value>,
    resolved_dependencies: Vec<ResourceDescriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunDetails<'a> {
    builder: Builder<'a>,
    metadata: Metadata<'a>,
}

#[derive(Serialize)]
struct Builder<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    version: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    invocation_id: Option<&'a str>,
    started_on: String,
    finished_on: String,
}
