//! in-toto v1 statements (<https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md>).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use types::Digest;

use crate::provenance::Provenance;
use crate::AttestError;

/// `_type` of an in-toto v1 statement.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// Predicate type of SLSA v1 provenance.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// Predicate type of an SPDX document (the predicate is the whole document).
pub const SPDX_DOCUMENT: &str = "https://spdx.dev/Document";
/// Predicate type of a CycloneDX BOM (the predicate is the whole BOM).
pub const CYCLONEDX_BOM: &str = "https://cyclonedx.org/bom";

/// What a statement is about: a name and its digests (`{"sha256": hex}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

impl Subject {
    /// A subject named `name` with the SHA-256 `digest`.
    pub fn new(name: impl Into<String>, digest: &Digest) -> Subject {
        Subject {
            name: name.into(),
            digest: BTreeMap::from([(digest.algorithm().to_owned(), digest.hex().to_owned())]),
        }
    }

    /// Whether the subject's digest of `digest`'s algorithm is `digest`.
    pub fn matches(&self, digest: &Digest) -> bool {
        self.digest
            .get(digest.algorithm())
            .is_some_and(|hex| hex.eq_ignore_ascii_case(digest.hex()))
    }
}

/// An in-toto v1 statement: subjects, a predicate type and the predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: serde_json::Value,
}

/// The SBOM formats an attestation can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbomFormat {
    Spdx,
    CycloneDx,
}

impl SbomFormat {
    pub fn predicate_type(self) -> &'static str {
        match self {
            SbomFormat::Spdx => SPDX_DOCUMENT,
            SbomFormat::CycloneDx => CYCLONEDX_BOM,
        }
    }
}

impl Statement {
    pub fn new(
        subject: Vec<Subject>,
        predicate_type: impl Into<String>,
        predicate: serde_json::Value,
    ) -> Statement {
        Statement {
            statement_type: STATEMENT_TYPE.to_owned(),
            subject,
            predicate_type: predicate_type.into(),
            predicate,
        }
    }

    /// A statement whose predicate is the SBOM `document` (JSON bytes) about `subject`.
    pub fn sbom(
        subject: Subject,
        format: SbomFormat,
        document: &[u8],
    ) -> Result<Statement, AttestError> {
        let predicate = serde_json::from_slice(document)
            .map_err(|source| AttestError::BadDocument { format, source })?;
        Ok(Statement::new(
            vec![subject],
            format.predicate_type(),
            predicate,
        ))
    }

    /// A SLSA v1 provenance statement about `subject`.
    pub fn provenance(
        subject: Vec<Subject>,
        provenance: &Provenance,
    ) -> Result<Statement, AttestError> {
        Ok(Statement::new(
            subject,
            SLSA_PROVENANCE_V1,
            provenance.to_predicate()?,
        ))
    }

    /// Compact JSON, the payload of an envelope.
    pub fn to_json(&self) -> Result<Vec<u8>, AttestError> {
        Ok(serde_json::to_vec(self)?)
    }
}
