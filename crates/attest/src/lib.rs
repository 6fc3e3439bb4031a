//! Signed attestations about hardbox images.
//!
//! - [`statement`]: in-toto v1 statements — subjects (name + `sha256` digest), a predicate type
//!   and a predicate: SLSA v1 provenance ([`provenance`]) or a whole SBOM (SPDX or CycloneDX).
//! - [`dsse`]: DSSE envelopes (`application/vnd.in-toto+json` payloads, PAE signing), signed and
//!   verified with [`key`]s.
//! - [`key`]: Ed25519 and ECDSA P-256 keys as PKCS#8 / SPKI PEM; a key's id is the SHA-256 of
//!   its SPKI DER.
//!
//! Statements are deterministic for the same input (sorted maps and dependencies, times from
//! `SOURCE_DATE_EPOCH`); Ed25519 and RFC 6979 ECDSA signatures are too. Verification checks the
//! signature before it parses the payload. The crate does no I/O.

#![forbid(unsafe_code)]

pub mod dsse;
pub mod key;
pub mod provenance;
pub mod statement;

pub use dsse::{Envelope, VerifyError, IN_TOTO_PAYLOAD_TYPE};
pub use key::{Algorithm, Key, KeyError, PublicKey};
pub use provenance::{Provenance, ResourceDescriptor};
pub use statement::{SbomFormat, Statement, Subject};

/// Why a statement or envelope could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("the {format:?} document is not JSON")]
    BadDocument {
        format: SbomFormat,
        #[source]
        source: serde_json::Error,
    },
    #[error("SOURCE_DATE_EPOCH {0} is after the year 9999")]
    BadTimestamp(u64),
    #[error("failed to serialise JSON")]
    Json(#[from] serde_json::Error),
}
