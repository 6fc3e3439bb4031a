//! DSSE envelopes (<https://github.com/secure-systems-lab/dsse/blob/master/envelope.md>).
//!
//! A signature covers the pre-authentication encoding ([`pae`]) of the payload type and the
//! payload bytes, never the JSON of the envelope, so the payload is verified exactly as signed and
//! only parsed after a trusted key's signature over it checked out.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::{DecodePaddingMode, Engine as _};
use serde::{Deserialize, Serialize};
use types::Digest;

use crate::key::{Key, PublicKey, SignatureError};
use crate::statement::{Statement, STATEMENT_TYPE};
use crate::AttestError;

/// The payload type of in-toto statements.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// Media type of a DSSE envelope stored as a file or an OCI blob.
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";

/// `DSSEv1 SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// One signature: the signing key's id and the base64 signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// A hint naming the key (SHA-256 of its SPKI DER for hardbox keys); may be empty.
    #[serde(default)]
    pub keyid: String,
    pub sig: String,
}

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// The payload, base64 (standard alphabet, padded).
    pub payload: String,
    pub signatures: Vec<Signature>,
}

/// Why an envelope does not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("not a DSSE envelope")]
    Envelope(#[source] serde_json::Error),
    #[error("payload type {found:?} is not {expected:?}")]
    PayloadType { expected: String, found: String },
    #[error("envelope has no signatures")]
    NoSignatures,
    #[error("payload is not base64")]
    PayloadEncoding,
    #[error("signature by key {keyid:?} is not base64")]
    SignatureEncoding { keyid: String },
    #[error("no signature is by a trusted key (signed by {keyids:?}, trusted {trusted:?})")]
    UntrustedKey {
        keyids: Vec<String>,
        trusted: Vec<String>,
    },
    #[error("signature by key {keyid} does not verify")]
    BadSignature {
        keyid: String,
        #[source]
        source: SignatureError,
    },
    #[error("payload is not an in-toto statement")]
    Statement(#[source] serde_json::Error),
    #[error("statement type {0:?} is not {STATEMENT_TYPE:?}")]
    StatementType(String),
    #[error("statement is about {found:?}, not {expected}")]
    SubjectMismatch {
        expected: Digest,
        found: Vec<String>,
    },
    #[error("predicate type {found:?} is not {expected:?}")]
    PredicateType { expected: String, found: String },
}

/// Base64 as DSSE asks verifiers to accept it: standard or URL-safe alphabet, padded or not.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD_ANY: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL_SAFE_ANY: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    STANDARD_ANY
        .decode(s)
        .or_else(|_| URL_SAFE_ANY.decode(s))
        .ok()
}

/// The key ids a trusted key set is shown as in errors.
fn keyids(keys: &[PublicKey]) -> Vec<String> {
    keys.iter().map(|k| k.keyid().to_owned()).collect()
}

impl Envelope {
    /// Signs `payload` of `payload_type` with each of `keys`.
    pub fn sign(payload_type: &str, payload: &[u8], keys: &[&Key]) -> Envelope {
        let message = pae(payload_type, payload);
        Envelope {
            payload_type: payload_type.to_owned(),
            payload: STANDARD.encode(payload),
            signatures: keys
                .iter()
                .map(|key| Signature {
                    keyid: key.keyid().to_owned(),
                    sig: STANDARD.encode(key.sign(&message)),
                })
                .collect(),
        }
    }

    /// Signs an in-toto statement.
    pub fn sign_statement(statement: &Statement, key: &Key) -> Result<Envelope, AttestError> {
        Ok(Envelope::sign(
            IN_TOTO_PAYLOAD_TYPE,
            &statement.to_json()?,
            &[key],
        ))
    }

    /// Reads an envelope from JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Envelope, VerifyError> {
        serde_json::from_slice(bytes).map_err(VerifyError::Envelope)
    }

    /// The envelope as compact JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, AttestError> {
        Ok(serde_json::to_vec(self)?)
    }

    /// Checks that a signature by one of `trusted` covers the payload, and returns the payload
    /// bytes. Signatures whose key id names none of the trusted keys are skipped; one with an
    /// empty key id is tried against all of them.
    pub fn verify(&self, trusted: &[PublicKey]) -> Result<Vec<u8>, VerifyError> {
        if self.signatures.is_empty() {
            return Err(VerifyError::NoSignatures);
        }
        let payload = decode_base64(&self.payload).ok_or(VerifyError::PayloadEncoding)?;
        let message = pae(&self.payload_type, &payload);
        let mut first_failure = None;
        for signature in &self.signatures {
            let candidates = trusted
                .iter()
                .filter(|k| signature.keyid.is_empty() || signature.keyid == k.keyid());
            for key in candidates {
                let Some(sig) = decode_base64(&signature.sig) else {
                    first_failure.get_or_insert(VerifyError::SignatureEncoding {
                        keyid: signature.keyid.clone(),
                    });
                    continue;
                };
                match key.verify(&message, &sig) {
                    Ok(()) => return Ok(payload),
                    Err(source) => {
                        first_failure.get_or_insert(VerifyError::BadSignature {
                            keyid: key.keyid().to_owned(),
                            source,
                        });
                    }
                }
            }
        }
        Err(first_failure.unwrap_or_else(|| VerifyError::UntrustedKey {
            keyids: self.signatures.iter().map(|s| s.keyid.clone()).collect(),
            trusted: keyids(trusted),
        }))
    }

    /// Verifies an attestation: a signature by a trusted key, the in-toto payload type, a v1
    /// statement with `predicate_type`, and a subject whose digest is `subject`. Returns the
    /// statement.
    pub fn verify_statement(
        &self,
        trusted: &[PublicKey],
        subject: &Digest,
        predicate_type: &str,
    ) -> Result<Statement, VerifyError> {
        if self.payload_type != IN_TOTO_PAYLOAD_TYPE {
            return Err(VerifyError::PayloadType {
                expected: IN_TOTO_PAYLOAD_TYPE.to_owned(),
                found: self.payload_type.clone(),
            });
        }
        let payload = self.verify(trusted)?;
        let statement: Statement =
            serde_json::from_slice(&payload).map_err(VerifyError::Statement)?;
        if statement.statement_type != STATEMENT_TYPE {
            return Err(VerifyError::StatementType(statement.statement_type));
        }
        if statement.predicate_type != predicate_type {
            return Err(VerifyError::PredicateType {
                expected: predicate_type.to_owned(),
                found: statement.predicate_type,
            });
        }
        if !statement.subject.iter().any(|s| s.matches(subject)) {
            return Err(VerifyError::SubjectMismatch {
                expected: subject.clone(),
                found: statement
                    .subject
                    .iter()
                    .flat_map(|s| s.digest.iter().map(|(alg, hex)| format!("{alg}:{hex}")))
                    .collect(),
            });
        }
        Ok(statement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_specification_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn base64_is_read_in_both_alphabets_with_or_without_padding() {
        for s in ["+/8=", "+/8", "-_8=", "-_8"] {
            assert_eq!(decode_base64(s), Some(vec![0xfb, 0xff]), "{s}");
        }
        assert_eq!(decode_base64("!!"), None);
    }
}
