//! Signing keys: Ed25519 and ECDSA P-256 (SHA-256), in the PEM forms other tools read.
//!
//! Private keys are unencrypted PKCS#8 (`-----BEGIN PRIVATE KEY-----`), public keys SPKI
//! (`-----BEGIN PUBLIC KEY-----`), as `openssl`, cosign and securesystemslib write them. A key's
//! id is the SHA-256 of its SPKI DER encoding, in hex: the same id whichever file it is loaded
//! from. ECDSA signatures are ASN.1 DER (as cosign and securesystemslib make them); Ed25519
//! signatures are the 64 raw bytes and are verified strictly (no malleable encodings).

use std::fmt;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use pkcs8::der::pem::LineEnding;
use pkcs8::der::{Document, SecretDocument};
use pkcs8::ObjectIdentifier;
use rand_core::{OsRng, RngCore};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// A signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Ed25519,
    /// ECDSA on NIST P-256 with SHA-256.
    EcdsaP256,
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::EcdsaP256 => "ecdsa-p256",
        })
    }
}

/// Why a key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("failed to read random bytes from the operating system")]
    Random(#[source] rand_core::Error),
    #[error("not a PEM key: {0}")]
    Pem(#[source] pkcs8::der::Error),
    #[error("malformed key: {0}")]
    Malformed(String),
    #[error("PEM label {0:?} is not a key hardbox reads (expected PRIVATE KEY or PUBLIC KEY)")]
    UnsupportedLabel(String),
    #[error("the private key is encrypted; hardbox reads unencrypted PKCS#8 keys")]
    Encrypted,
    #[error("{0} keys are in SEC1 or PKCS#1 form; convert them to PKCS#8 (openssl pkcs8 -topk8 -nocrypt)")]
    NotPkcs8(String),
    #[error("key algorithm {0} is not supported (expected Ed25519 or ECDSA P-256)")]
    UnsupportedAlgorithm(String),
    #[error("malformed {algorithm} private key: {reason}")]
    BadPrivateKey {
        algorithm: Algorithm,
        reason: String,
    },
    #[error("malformed {algorithm} public key: {reason}")]
    BadPublicKey {
        algorithm: Algorithm,
        reason: String,
    },
    #[error("failed to encode the key: {0}")]
    Encode(String),
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature is not a well-formed {0} signature")]
    Malformed(Algorithm),
    #[error("signature does not match the message")]
    Mismatch,
}

const ED25519_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const EC_PUBLIC_KEY_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

#[derive(Clone)]
enum Secret {
    Ed25519(ed25519_dalek::SigningKey),
    EcdsaP256(p256::ecdsa::SigningKey),
}

/// A private signing key with its public half.
#[derive(Clone)]
pub struct Key {
    secret: Secret,
    public: PublicKey,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("algorithm", &self.algorithm())
            .field("keyid", &self.keyid())
            .finish_non_exhaustive()
    }
}

impl Key {
    /// A new random key from the operating system's generator.
    pub fn generate(algorithm: Algorithm) -> Result<Key, KeyError> {
        let secret = match algorithm {
            Algorithm::Ed25519 => {
                let mut seed = Zeroizing::new([0u8; 32]);
                OsRng.try_fill_bytes(&mut *seed).map_err(KeyError::Random)?;
                Secret::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed))
            }
            Algorithm::EcdsaP256 => loop {
                // A scalar outside [1, n) is rejected; retry (probability about 2^-32).
                let mut scalar = Zeroizing::new([0u8; 32]);
                OsRng
                    .try_fill_bytes(&mut *scalar)
                    .map_err(KeyError::Random)?;
                if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&*scalar) {
                    break Secret::EcdsaP256(key);
                }
            },
        };
        Key::from_secret(secret)
    }

    fn from_secret(secret: Secret) -> Result<Key, KeyError> {
        let public = match &secret {
            Secret::Ed25519(k) => PublicInner::Ed25519(k.verifying_key()),
            Secret::EcdsaP256(k) => PublicInner::EcdsaP256(*k.verifying_key()),
        };
        Ok(Key {
            secret,
            public: PublicKey::from_inner(public)?,
        })
    }

    /// Reads an unencrypted PKCS#8 PEM private key.
    pub fn from_pem(pem: &str) -> Result<Key, KeyError> {
        let (label, doc) = SecretDocument::from_pem(pem).map_err(KeyError::Pem)?;
        match label {
            "PRIVATE KEY" => {}
            "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted),
            "EC PRIVATE KEY" => return Err(KeyError::NotPkcs8("EC".into())),
            "RSA PRIVATE KEY" => return Err(KeyError::NotPkcs8("RSA".into())),
            other => return Err(KeyError::UnsupportedLabel(other.to_owned())),
        }
        Key::from_pkcs8_der(doc.as_bytes())
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Key, KeyError> {
        let info =
            pkcs8::PrivateKeyInfo::try_from(der).map_err(|e| KeyError::Malformed(e.to_string()))?;
        let algorithm = algorithm_of(&info.algorithm)?;
        let bad = |e: pkcs8::Error| KeyError::BadPrivateKey {
            algorithm,
            reason: e.to_string(),
        };
        let secret = match algorithm {
            Algorithm::Ed25519 => {
                Secret::Ed25519(ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(bad)?)
            }
            Algorithm::EcdsaP256 => {
                Secret::EcdsaP256(p256::ecdsa::SigningKey::from_pkcs8_der(der).map_err(bad)?)
            }
        };
        Key::from_secret(secret)
    }

    /// The private key as unencrypted PKCS#8 PEM (write it readable by its owner only).
    pub fn to_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        let pem = match &self.secret {
            // PKCS#8 v1 (the seed only): OpenSSL 3.0 refuses the v2 form with the public key
            // that `SigningKey::to_pkcs8_pem` writes; the public key is derived when read.
            Secret::Ed25519(k) => ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: k.to_bytes(),
                public_key: None,
            }
            .to_pkcs8_pem(LineEnding::LF),
            Secret::EcdsaP256(k) => k.to_pkcs8_pem(LineEnding::LF),
        };
        pem.map_err(|e| KeyError::Encode(e.to_string()))
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm()
    }

    /// SHA-256 of the public key's SPKI DER, in hex.
    pub fn keyid(&self) -> &str {
        self.public.keyid()
    }

    /// Signs `message` (Ed25519; or ECDSA over its SHA-256, DER-encoded).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        use ed25519_dalek::Signer as _;
        match &self.secret {
            Secret::Ed25519(k) => k.sign(message).to_bytes().to_vec(),
            Secret::EcdsaP256(k) => {
                let signature: p256::ecdsa::Signature = k.sign(message);
                signature.to_der().as_bytes().to_vec()
            }
        }
    }
}

fn algorithm_of(id: &pkcs8::AlgorithmIdentifierRef<'_>) -> Result<Algorithm, KeyError> {
    if id.oid == ED25519_OID {
        return Ok(Algorithm::Ed25519);
    }
    if id.oid == EC_PUBLIC_KEY_OID {
        let curve = id.parameters_oid().ok();
        if curve == Some(P256_OID) {
            return Ok(Algorithm::EcdsaP256);
        }
        return Err(KeyError::UnsupportedAlgorithm(match curve {
            Some(curve) => format!("EC on curve {curve}"),
            None => "EC without a named curve".to_owned(),
        }));
    }
    Err(KeyError::UnsupportedAlgorithm(id.oid.to_string()))
}

#[derive(Clone, PartialEq, Eq)]
enum PublicInner {
    Ed25519(ed25519_dalek::VerifyingKey),
    EcdsaP256(p256::ecdsa::VerifyingKey),
}

/// A public verification key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    inner: PublicInner,
    spki_der: Vec<u8>,
    keyid: String,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm())
            .field("keyid", &self.keyid)
            .finish()
    }
}

impl PublicKey {
    fn from_inner(inner: PublicInner) -> Result<PublicKey, KeyError> {
        let der = match &inner {
            PublicInner::Ed25519(k) => k.to_public_key_der(),
            PublicInner::EcdsaP256(k) => k.to_public_key_der(),
        }
        .map_err(|e| KeyError::Encode(e.to_string()))?;
        let spki_der = der.as_bytes().to_vec();
        Ok(PublicKey {
            keyid: hex::encode(Sha256::digest(&spki_der)),
            inner,
            spki_der,
        })
    }

    /// Reads a public key from SPKI PEM (`PUBLIC KEY`), or the public half of a PKCS#8 PEM
    /// private key.
    pub fn from_pem(pem: &str) -> Result<PublicKey, KeyError> {
        let label = pem
            .trim_start()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.split_once("-----"))
            .map(|(label, _)| label);
        if label != Some("PUBLIC KEY") {
            return Key::from_pem(pem).map(|k| k.public);
        }
        let (_, doc) = Document::from_pem(pem).map_err(KeyError::Pem)?;
        let der = doc.as_bytes();
        let info = spki::SubjectPublicKeyInfoRef::try_from(der)
            .map_err(|e| KeyError::Malformed(e.to_string()))?;
        let algorithm = algorithm_of(&info.algorithm)?;
        let bad = |e: spki::Error| KeyError::BadPublicKey {
            algorithm,
            reason: e.to_string(),
        };
        let inner = match algorithm {
            Algorithm::Ed25519 => PublicInner::Ed25519(
                ed25519_dalek::VerifyingKey::from_public_key_der(der).map_err(bad)?,
            ),
            Algorithm::EcdsaP256 => PublicInner::EcdsaP256(
                p256::ecdsa::VerifyingKey::from_public_key_der(der).map_err(bad)?,
            ),
        };
        PublicKey::from_inner(inner)
    }

    /// The key as SPKI PEM.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        Document::try_from(self.spki_der.as_slice())
            .and_then(|doc| doc.to_pem("PUBLIC KEY", LineEnding::LF))
            .map_err(|e| KeyError::Encode(e.to_string()))
    }

    /// The SPKI DER encoding.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.inner {
            PublicInner::Ed25519(_) => Algorithm::Ed25519,
            PublicInner::EcdsaP256(_) => Algorithm::EcdsaP256,
        }
    }

    /// SHA-256 of the SPKI DER, in hex.
    pub fn keyid(&self) -> &str {
        &self.keyid
    }

    /// Checks `signature` over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        use ed25519_dalek::Verifier as _;
        let algorithm = self.algorithm();
        match &self.inner {
            PublicInner::Ed25519(k) => {
                let signature = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| SignatureError::Malformed(algorithm))?;
                k.verify_strict(message, &signature)
                    .map_err(|_| SignatureError::Mismatch)
            }
            PublicInner::EcdsaP256(k) => {
                let signature = p256::ecdsa::Signature::from_der(signature)
                    .map_err(|_| SignatureError::Malformed(algorithm))?;
                k.verify(message, &signature)
                    .map_err(|_| SignatureError::Mismatch)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_pem_and_keep_their_id() {
        for algorithm in [Algorithm::Ed25519, Algorithm::EcdsaP256] {
            let key = Key::generate(algorithm).unwrap();
            let private = key.to_pem().unwrap();
            let public = key.public_key().to_pem().unwrap();
            assert!(
                private.starts_with("-----BEGIN PRIVATE KEY-----\n"),
                "{algorithm}"
            );
            assert!(
                public.starts_with("-----BEGIN PUBLIC KEY-----\n"),
                "{algorithm}"
            );

            let loaded = Key::from_pem(&private).unwrap();
            assert_eq!(loaded.algorithm(), algorithm);
            assert_eq!(loaded.keyid(), key.keyid());
            let from_public = PublicKey::from_pem(&public).unwrap();
            let from_private = PublicKey::from_pem(&private).unwrap();
            assert_eq!(from_public, *key.public_key());
            assert_eq!(from_private, *key.public_key());
            assert_eq!(
                key.keyid(),
                hex::encode(Sha256::digest(from_public.spki_der()))
            );

            let signature = loaded.sign(b"message");
            key.public_key().verify(b"message", &signature).unwrap();
            assert_eq!(
                key.public_key().verify(b"messagE", &signature),
                Err(SignatureError::Mismatch)
            );
            assert_eq!(
                key.public_key().verify(b"message", &signature[1..]),
                Err(SignatureError::Malformed(algorithm))
            );
        }
        let a = Key::generate(Algorithm::Ed25519).unwrap();
        let b = Key::generate(Algorithm::Ed25519).unwrap();
        assert_ne!(a.keyid(), b.keyid(), "keys are random");
    }

    #[test]
    fn other_key_forms_are_refused_with_a_reason() {
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(matches!(Key::from_pem(encrypted), Err(KeyError::Encrypted)));
        let sec1 = "-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----\n";
        let err = Key::from_pem(sec1).unwrap_err();
        assert!(err.to_string().contains("openssl pkcs8 -topk8"), "{err}");
        assert!(matches!(Key::from_pem("not pem"), Err(KeyError::Pem(_))));
        let cert = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            PublicKey::from_pem(cert),
            Err(KeyError::UnsupportedLabel(l)) if l == "CERTIFICATE"
        ));
    }
}
