//! `hardbox verify`: every signed attestation attached to an image, checked.
//!
//! Each DSSE referrer must carry a statement signed by one of the trusted keys, of the in-toto
//! payload type, whose subject is the image's manifest digest and whose predicate type is the
//! one its referrer announces (and one hardbox writes). An SBOM statement's document must equal
//! an SBOM of that format attached to the image, and every attached SBOM must be covered by such
//! a statement. A provenance statement must be among them. Anything else is a failed check; an
//! image without any DSSE referrer is an error of its own.

use attest::statement::{CYCLONEDX_BOM, SLSA_PROVENANCE_V1, SPDX_DOCUMENT};
use attest::{Envelope, PublicKey};
use oci::Store;
use serde::Serialize;
use types::Digest;

use super::layers::read_blob;
use super::supply::{SbomFormat, ANNOTATION_PREDICATE_TYPE, ENVELOPE_MEDIA_TYPE, MAX_DOCUMENT};
use super::PipelineError;

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The referrer checked.
    pub referrer: Digest,
    /// What it is: `provenance`, `SPDX statement`, `SPDX document`, ...
    pub what: String,
    pub ok: bool,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Every check made on an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub image: Digest,
    pub checks: Vec<Check>,
    /// Whether a signed provenance statement named the image.
    pub provenance: bool,
}

impl VerifyReport {
    /// Whether every check passed and a provenance was found.
    pub fn passed(&self) -> bool {
        self.provenance && self.checks.iter().all(|c| c.ok)
    }
}

fn statement_name(predicate_type: &str) -> Option<&'static str> {
    match predicate_type {
        SLSA_PROVENANCE_V1 => Some("provenance"),
        SPDX_DOCUMENT => Some("SPDX statement"),
        CYCLONEDX_BOM => Some("CycloneDX statement"),
        _ => None,
    }
}

fn sbom_of(predicate_type: &str) -> Option<SbomFormat> {
    match predicate_type {
        SPDX_DOCUMENT => Some(SbomFormat::Spdx),
        CYCLONEDX_BOM => Some(SbomFormat::CycloneDx),
        _ => None,
    }
}

pub(super) fn verify(
    store: &Store,
    reference: &str,
    keys: &[PublicKey],
) -> Result<VerifyReport, PipelineError> {
    let descriptor = store.resolve(reference)?;
    let image = descriptor.digest.clone();
    let referrers = store.referrers(&image)?;

    // The attached SBOMs, parsed, with whether a verified statement covers them.
    let mut documents: Vec<(SbomFormat, Digest, serde_json::Value, bool)> = Vec::new();
    let mut checks = Vec::new();
    for referrer in &referrers {
        let Some(format) = SbomFormat::from_media_type(&referrer.artifact_type) else {
            continue;
        };
        let parsed = referrer
            .blobs
            .first()
            .ok_or_else(|| "the referrer holds no document".to_owned())
            .and_then(|blob| {
                read_blob(store, reference, blob, MAX_DOCUMENT).map_err(|e| format!("{e:#}"))
            })
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()));
        match parsed {
            Ok(value) => documents.push((format, referrer.descriptor.digest.clone(), value, false)),
            Err(problem) => checks.push(Check {
                referrer: referrer.descriptor.digest.clone(),
                what: format!("{} document", format.name()),
                ok: false,
                problem: Some(problem),
            }),
        }
    }

    let envelopes: Vec<_> = referrers
        .iter()
        .filter(|r| r.artifact_type == ENVELOPE_MEDIA_TYPE)
        .collect();
    if envelopes.is_empty() {
        return Err(PipelineError::NoAttestations {
            image: reference.to_owned(),
        });
    }
    let mut provenance = false;
    for referrer in envelopes {
        let announced = referrer.annotations.get(ANNOTATION_PREDICATE_TYPE);
        let what = announced
            .and_then(|p| statement_name(p))
            .unwrap_or("attestation")
            .to_owned();
        let result = (|| -> Result<(), String> {
            let predicate_type = announced
                .filter(|p| statement_name(p).is_some())
                .ok_or_else(|| {
                    format!(
                        "the referrer announces no predicate type hardbox writes \
                         ({ANNOTATION_PREDICATE_TYPE}: {announced:?})"
                    )
                })?;
            let blob = referrer
                .blobs
                .first()
                .ok_or_else(|| "the referrer holds no envelope".to_owned())?;
            let bytes =
                read_blob(store, reference, blob, MAX_DOCUMENT).map_err(|e| format!("{e:#}"))?;
            let envelope = Envelope::from_json(&bytes).map_err(|e| e.to_string())?;
            let statement = envelope
                .verify_statement(keys, &image, predicate_type)
                .map_err(|e| e.to_string())?;
            match sbom_of(predicate_type) {
                None => {
                    provenance = true;
                    Ok(())
                }
                Some(format) => {
                    let mut any = false;
                    let mut matched = false;
                    for (f, _, value, covered) in &mut documents {
                        if *f != format {
                            continue;
                        }
                        any = true;
                        if *value == statement.predicate {
                            *covered = true;
                            matched = true;
                        }
                    }
                    match (any, matched) {
                        (_, true) => Ok(()),
                        (false, false) => Err(format!(
                            "no {} document is attached to the image",
                            format.name()
                        )),
                        (true, false) => Err(format!(
                            "the signed document differs from every attached {} document",
                            format.name()
                        )),
                    }
                }
            }
        })();
        checks.push(Check {
            referrer: referrer.descriptor.digest.clone(),
            what,
            ok: result.is_ok(),
            problem: result.err(),
        });
    }
    for (format, digest, _, covered) in &documents {
        checks.push(Check {
            referrer: digest.clone(),
            what: format!("{} document", format.name()),
            ok: *covered,
            problem: (!covered).then(|| "no verified statement covers it".to_owned()),
        });
    }
    Ok(VerifyReport {
        image,
        checks,
        provenance,
    })
}
