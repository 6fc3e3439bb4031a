//! OpenPGP verification of repository metadata: keyrings, clearsigned `InRelease` and detached
//! `Release.gpg`.
//!
//! Guarantees:
//! - Verification returns only the signed text. Text outside the signed part (before the
//!   `BEGIN PGP SIGNED MESSAGE` line or after the signature block) is refused, never returned.
//! - A file carrying several signatures is valid if any one of them is good by a key of the
//!   keyring (as apt); the others are ignored.
//! - A signature is good only if it verifies cryptographically with a primary key or a subkey
//!   whose certificate is bound by valid self-signatures, that is not revoked, not expired at
//!   `now`, and allowed to sign (a subkey needs the signing flag and a valid back-signature).
//!   Data signatures using MD5, SHA-1 or RIPEMD-160 are refused. The signature must not be
//!   expired at `now` nor older than its key.
//!
//! Keyrings are binary (`.gpg`, several transferable public keys one after another, as
//! `/usr/share/keyrings/debian-archive-keyring.gpg`) or armored (`.asc`, one or more
//! `PUBLIC KEY BLOCK`s).

use std::fmt;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use pgp::composed::{
    CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey, SignedPublicSubKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{Signature, SignatureType, SubpacketData};
use pgp::types::{Fingerprint, KeyDetails, KeyId, Tag};

use crate::sources::{SignedBy, Source};

/// A set of OpenPGP certificates trusted to sign repository metadata.
#[derive(Clone)]
pub struct Keyring {
    certs: Vec<Cert>,
    /// Where the keys came from, for messages (paths, or a description).
    origin: String,
}

#[derive(Clone)]
struct Cert {
    key: SignedPublicKey,
    /// Only this (sub)key of the certificate may sign (a `Signed-By` fingerprint written with `!`).
    only: Option<Fingerprint>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("origin", &self.origin)
            .field("fingerprints", &self.fingerprints())
            .finish()
    }
}

/// A keyring that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("failed to read keyring {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("keyring {origin} is not a valid OpenPGP public keyring")]
    Parse {
        origin: String,
        #[source]
        source: pgp::errors::Error,
    },
    #[error("keyring {origin} holds no public key")]
    Empty { origin: String },
    #[error("key {fingerprint} named by Signed-By is in none of the keyrings {searched}")]
    FingerprintNotFound {
        fingerprint: String,
        searched: String,
    },
    #[error("no trusted keyring found in {}/trusted.gpg or {}/trusted.gpg.d", dir.display(), dir.display())]
    NoDefaultKeyring { dir: PathBuf },
}

impl Keyring {
    /// Loads a keyring file, binary or armored.
    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        let bytes = fs_err::read(path).map_err(|source| KeyringError::Read {
            path: path.to_owned(),
            source,
        })?;
        Keyring::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses a keyring from memory; `origin` names it in messages.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Keyring, KeyringError> {
        let parse_error = |source| KeyringError::Parse {
            origin: origin.to_owned(),
            source,
        };
        let start = bytes
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(bytes.len());
        let mut keys = Vec::new();
        if bytes[start..].starts_with(b"-----BEGIN ") {
            let text = String::from_utf8_lossy(&bytes[start..]);
            const BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
            let blocks: Vec<usize> = text.match_indices(BEGIN).map(|(i, _)| i).collect();
            if blocks.is_empty() {
                // Let the parser say what the block is instead.
                let (iter, _) =
                    SignedPublicKey::from_armor_many(text.as_bytes()).map_err(parse_error)?;
                for key in iter {
                    keys.push(key.map_err(parse_error)?);
                }
            }
            for (n, &begin) in blocks.iter().enumerate() {
                let end = blocks.get(n + 1).copied().unwrap_or(text.len());
                let (iter, _) = SignedPublicKey::from_armor_many(text[begin..end].as_bytes())
                    .map_err(parse_error)?;
                for key in iter {
                    keys.push(key.map_err(parse_error)?);
                }
            }
        } else if start < bytes.len() {
            let iter = SignedPublicKey::from_bytes_many(BufReader::new(&bytes[start..]))
                .map_err(parse_error)?;
            for key in iter {
                keys.push(key.map_err(parse_error)?);
            }
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty {
                origin: origin.to_owned(),
            });
        }
        Ok(Keyring {
            certs: keys
                .into_iter()
                .map(|key| Cert { key, only: None })
                .collect(),
            origin: origin.to_owned(),
        })
    }

    /// Loads the keys a source names in `Signed-By`: keyring files, an inline key, or
    /// fingerprints looked up in the default keyrings below `etc_apt` (`trusted.gpg` and
    /// `trusted.gpg.d/*.{gpg,asc}`). Without `Signed-By`, the default keyrings themselves.
    pub fn for_source(source: &Source, etc_apt: &Path) -> Result<Keyring, KeyringError> {
        let mut parts = Vec::new();
        let mut fingerprints = Vec::new();
        for entry in &source.signed_by {
            match entry {
                SignedBy::Keyring(path) => parts.push(Keyring::load(path)?),
                SignedBy::Inline(text) => parts.push(Keyring::from_bytes(
                    text.as_bytes(),
                    &format!("Signed-By of {source}"),
                )?),
                SignedBy::Fingerprint { fingerprint, exact } => {
                    fingerprints.push((fingerprint.as_str(), *exact))
                }
            }
        }
        if source.signed_by.is_empty() || !fingerprints.is_empty() {
            let default = Keyring::default_keyrings(etc_apt)?;
            if source.signed_by.is_empty() {
                parts.push(default);
            } else {
                parts.push(default.select(&fingerprints)?);
            }
        }
        Ok(Keyring::merge(parts))
    }

    /// apt's default trusted keyrings below `etc_apt`.
    fn default_keyrings(etc_apt: &Path) -> Result<Keyring, KeyringError> {
        let mut paths = Vec::new();
        let legacy = etc_apt.join("trusted.gpg");
        if legacy.is_file() {
            paths.push(legacy);
        }
        let dir = etc_apt.join("trusted.gpg.d");
        if let Ok(entries) = fs_err::read_dir(&dir) {
            let mut found: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "gpg" || e == "asc"))
                .collect();
            found.sort();
            paths.extend(found);
        }
        let mut parts = Vec::new();
        for path in &paths {
            match Keyring::load(path) {
                Ok(k) => parts.push(k),
                // apt skips empty keyring files (an empty trusted.gpg is common).
                Err(KeyringError::Empty { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if parts.is_empty() {
            return Err(KeyringError::NoDefaultKeyring {
                dir: etc_apt.to_owned(),
            });
        }
        Ok(Keyring::merge(parts))
    }

    /// Keeps the certificates holding one of `fingerprints` (primary or subkey); an `exact`
    /// entry keeps only that key of its certificate.
    fn select(&self, fingerprints: &[(&str, bool)]) -> Result<Keyring, KeyringError> {
        let mut certs = Vec::new();
        for (fingerprint, exact) in fingerprints {
            let mut found = false;
            for cert in &self.certs {
                let fps = std::iter::once(cert.key.fingerprint())
                    .chain(cert.key.public_subkeys.iter().map(|s| s.key.fingerprint()));
                for fp in fps {
                    if format!("{fp:X}") == *fingerprint {
                        found = true;
                        certs.push(Cert {
                            key: cert.key.clone(),
                            only: exact.then(|| fp.clone()),
                        });
                    }
                }
            }
            if !found {
                return Err(KeyringError::FingerprintNotFound {
                    fingerprint: (*fingerprint).to_owned(),
                    searched: self.origin.clone(),
                });
            }
        }
        Ok(Keyring {
            certs,
            origin: format!(
                "{} (keys {})",
                self.origin,
                fingerprints
                    .iter()
                    .map(|(f, _)| *f)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// The union of several keyrings.
    pub fn merge(parts: Vec<Keyring>) -> Keyring {
        let origin = parts
            .iter()
            .map(|k| k.origin.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Keyring {
            certs: parts.into_iter().flat_map(|k| k.certs).collect(),
            origin,
        }
    }

    /// The primary key fingerprints (uppercase hex), in keyring order.
    pub fn fingerprints(&self) -> Vec<String> {
        self.certs
            .iter()
            .map(|c| format!("{:X}", c.key.fingerprint()))
            .collect()
    }

    /// Where the keys came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Number of certificates.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether the keyring holds no certificate.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
}

/// Text whose signature verified, and who signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed text only (for a clearsigned message: dash-escaping undone, `\n` line ends).
    pub text: String,
    /// Fingerprint (uppercase hex) of the key that made the good signature (maybe a subkey).
    pub key: String,
    /// Fingerprint of the certificate (primary key) that key belongs to.
    pub certificate: String,
}

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("not an OpenPGP clearsigned message")]
    NotClearsigned(#[source] pgp::errors::Error),
    #[error("malformed OpenPGP signature")]
    MalformedSignature(#[source] pgp::errors::Error),
    #[error("the file carries no signature")]
    NoSignature,
    #[error("the signed text is not UTF-8")]
    NotUtf8,
    #[error("no good signature by a key in {keyring}: {}", list(problems))]
    NoGoodSignature {
        keyring: String,
        problems: Vec<SignatureProblem>,
    },
}

fn list(problems: &[SignatureProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why one signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureProblem {
    #[error("signature by {issuer}, which is not in the keyring")]
    UnknownKey { issuer: String },
    #[error("signature by {key} does not verify (the signed data was altered or the signature is corrupt)")]
    Bad { key: String },
    #[error("signature by {key} uses the weak hash algorithm {hash}")]
    WeakHash { key: String, hash: String },
    #[error("signature by {key} has type {typ}, not a data signature")]
    WrongType { key: String, typ: String },
    #[error("key {key} expired at {expired} (unix time)")]
    KeyExpired { key: String, expired: u64 },
    #[error("key {key} is revoked")]
    KeyRevoked { key: String },
    #[error("key {key} has no valid self-signature binding it to its certificate")]
    KeyNotBound { key: String },
    #[error("key {key} is not allowed to sign")]
    NotSigningKey { key: String },
    #[error("signature by {key} expired at {expired} (unix time)")]
    SignatureExpired { key: String, expired: u64 },
    #[error("signature by {key} is older than the key")]
    OlderThanKey { key: String },
}

/// Verifies a clearsigned message (`InRelease`) and returns its signed text.
pub fn verify_clearsigned(
    keyring: &Keyring,
    data: &[u8],
    now: SystemTime,
) -> Result<Verified, VerifyError> {
    let text = std::str::from_utf8(data).map_err(|_| VerifyError::NotUtf8)?;
    let (message, _headers) =
        CleartextSignedMessage::from_string(text).map_err(VerifyError::NotClearsigned)?;
    if message.signatures().is_empty() {
        return Err(VerifyError::NoSignature);
    }
    let signed = message.signed_text();
    let (key, certificate) = keyring.check(
        message.signatures(),
        signed.as_bytes(),
        &[SignatureType::Text],
        unix(now),
    )?;
    Ok(Verified {
        text: signed.replace("\r\n", "\n"),
        key,
        certificate,
    })
}

/// Verifies a detached signature (`Release.gpg`, armored or binary, one or more signatures) over
/// `data` (`Release`) and returns `data` as text.
pub fn verify_detached(
    keyring: &Keyring,
    data: &[u8],
    signature: &[u8],
    now: SystemTime,
) -> Result<Verified, VerifyError> {
    let (iter, _) =
        DetachedSignature::from_reader_many(signature).map_err(VerifyError::MalformedSignature)?;
    let mut signatures = Vec::new();
    for sig in iter {
        signatures.push(sig.map_err(VerifyError::MalformedSignature)?.signature);
    }
    if signatures.is_empty() {
        return Err(VerifyError::NoSignature);
    }
    let (key, certificate) = keyring.check(
        &signatures,
        data,
        &[SignatureType::Binary, SignatureType::Text],
        unix(now),
    )?;
    let text = String::from_utf8(data.to_vec()).map_err(|_| VerifyError::NotUtf8)?;
    Ok(Verified {
        text,
        key,
        certificate,
    })
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn fpr(fp: &Fingerprint) -> String {
    format!("{fp:X}")
}

/// A key of a certificate that may have made a signature.
enum Component<'a> {
    Primary(&'a SignedPublicKey),
    Subkey(&'a SignedPublicKey, &'a SignedPublicSubKey),
}

impl Component<'_> {
    fn fingerprint(&self) -> Fingerprint {
        match self {
            Component::Primary(k) => k.fingerprint(),
            Component::Subkey(_, s) => s.key.fingerprint(),
        }
    }

    fn key_id(&self) -> KeyId {
        match self {
            Component::Primary(k) => k.legacy_key_id(),
            Component::Subkey(_, s) => s.key.legacy_key_id(),
        }
    }

    fn created(&self) -> u64 {
        u64::from(match self {
            Component::Primary(k) => k.created_at().as_secs(),
            Component::Subkey(_, s) => s.key.created_at().as_secs(),
        })
    }

    fn verify(&self, sig: &Signature, data: &[u8]) -> bool {
        match self {
            Component::Primary(k) => sig.verify(&k.primary_key, data).is_ok(),
            Component::Subkey(_, s) => sig.verify(&s.key, data).is_ok(),
        }
    }
}

const WEAK_HASHES: &[HashAlgorithm] = &[
    HashAlgorithm::Md5,
    HashAlgorithm::Sha1,
    HashAlgorithm::Ripemd160,
];

impl Keyring {
    /// Returns (signing key, certificate) of the first good signature, or why none is good.
    fn check(
        &self,
        signatures: &[Signature],
        data: &[u8],
        types: &[SignatureType],
        now: u64,
    ) -> Result<(String, String), VerifyError> {
        let mut problems = Vec::new();
        for sig in signatures {
            match self.check_one(sig, data, types, now) {
                Ok(found) => return Ok(found),
                Err(problem) => problems.push(problem),
            }
        }
        Err(VerifyError::NoGoodSignature {
            keyring: self.origin.clone(),
            problems,
        })
    }

    fn check_one(
        &self,
        sig: &Signature,
        data: &[u8],
        types: &[SignatureType],
        now: u64,
    ) -> Result<(String, String), SignatureProblem> {
        let fingerprints = sig.issuer_fingerprint();
        let key_ids = sig.issuer_key_id();
        let named = !fingerprints.is_empty() || !key_ids.is_empty();
        let issuer = fingerprints
            .first()
            .map(|f| fpr(f))
            .or_else(|| key_ids.first().map(|k| hex::encode_upper(k.as_ref())))
            .unwrap_or_else(|| "an unnamed key".to_owned());

        let mut last = None;
        for cert in &self.certs {
            let components = std::iter::once(Component::Primary(&cert.key)).chain(
                cert.key
                    .public_subkeys
                    .iter()
                    .map(|s| Component::Subkey(&cert.key, s)),
            );
            for component in components {
                let fp = component.fingerprint();
                if cert.only.as_ref().is_some_and(|only| *only != fp) {
                    continue;
                }
                if named
                    && !fingerprints.iter().any(|f| **f == fp)
                    && !key_ids.iter().any(|k| **k == component.key_id())
                {
                    continue;
                }
                match check_with(&component, sig, data, types, now) {
                    Ok(()) => return Ok((fpr(&fp), fpr(&cert.key.fingerprint()))),
                    Err(p) => last = Some(p),
                }
            }
        }
        Err(last.unwrap_or(SignatureProblem::UnknownKey { issuer }))
    }
}

fn check_with(
    component: &Component<'_>,
    sig: &Signature,
    data: &[u8],
    types: &[SignatureType],
    now: u64,
) -> Result<(), SignatureProblem> {
    let key = fpr(&component.fingerprint());
    match sig.typ() {
        Some(t) if types.contains(&t) => {}
        t => {
            return Err(SignatureProblem::WrongType {
                key,
                typ: t.map_or_else(|| "unknown".to_owned(), |t| format!("{t:?}")),
            })
        }
    }
    if let Some(hash) = sig.hash_alg() {
        if WEAK_HASHES.contains(&hash) {
            return Err(SignatureProblem::WeakHash {
                key,
                hash: hash.to_string(),
            });
        }
    }
    if !component.verify(sig, data) {
        return Err(SignatureProblem::Bad { key });
    }
    // The key must be usable now: bound, not revoked, not expired, allowed to sign.
    match component {
        Component::Primary(cert) => primary_usable(cert, now, true)?,
        Component::Subkey(cert, sub) => {
            primary_usable(cert, now, false)?;
            subkey_usable(cert, sub, now)?;
        }
    }
    let created = sig.created().map_or(0, |t| u64::from(t.as_secs()));
    if created < component.created() {
        return Err(SignatureProblem::OlderThanKey { key });
    }
    if let Some(expires) = sig.signature_expiration_time() {
        let expires = u64::from(expires.as_secs());
        if expires != 0 && created + expires <= now {
            return Err(SignatureProblem::SignatureExpired {
                key,
                expired: created + expires,
            });
        }
    }
    Ok(())
}

fn created(sig: &Signature) -> u32 {
    sig.created().map_or(0, |t| t.as_secs())
}

fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    })
}

/// Checks the primary key: not revoked, bound by a valid self-signature, not expired at `now`,
/// and (when it signed the data itself) allowed to sign.
fn primary_usable(cert: &SignedPublicKey, now: u64, signs: bool) -> Result<(), SignatureProblem> {
    let primary = &cert.primary_key;
    let key = fpr(&primary.fingerprint());
    if cert
        .details
        .revocation_signatures
        .iter()
        .any(|s| s.verify_key(primary).is_ok())
    {
        return Err(SignatureProblem::KeyRevoked { key });
    }
    let user_sigs = cert.details.users.iter().flat_map(|u| {
        u.signatures
            .iter()
            .filter(|s| {
                matches!(
                    s.typ(),
                    Some(
                        SignatureType::CertGeneric
                            | SignatureType::CertPersona
                            | SignatureType::CertCasual
                            | SignatureType::CertPositive
                    )
                )
            })
            .filter(|s| s.verify_certification(primary, Tag::UserId, &u.id).is_ok())
    });
    let direct_sigs = cert
        .details
        .direct_signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::Key) && s.verify_key(primary).is_ok());
    let Some(newest) = user_sigs.chain(direct_sigs).max_by_key(|s| created(s)) else {
        return Err(SignatureProblem::KeyNotBound { key });
    };
    if let Some(expires) = newest.key_expiration_time() {
        let expires = u64::from(expires.as_secs());
        let at = u64::from(primary.created_at().as_secs()) + expires;
        if expires != 0 && at <= now {
            return Err(SignatureProblem::KeyExpired { key, expired: at });
        }
    }
    if signs && has_key_flags(newest) && !newest.key_flags().sign() {
        return Err(SignatureProblem::NotSigningKey { key });
    }
    Ok(())
}

/// Checks a subkey: not revoked, bound by a valid binding signature that allows signing and
/// carries a valid back-signature, not expired at `now`.
fn subkey_usable(
    cert: &SignedPublicKey,
    sub: &SignedPublicSubKey,
    now: u64,
) -> Result<(), SignatureProblem> {
    let primary = &cert.primary_key;
    let key = fpr(&sub.key.fingerprint());
    let valid = |s: &&Signature| s.verify_subkey_binding(primary, &sub.key).is_ok();
    if sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
        .any(|s| valid(&s))
    {
        return Err(SignatureProblem::KeyRevoked { key });
    }
    let Some(newest) = sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
        .filter(valid)
        .max_by_key(|s| created(s))
    else {
        return Err(SignatureProblem::KeyNotBound { key });
    };
    if !newest.key_flags().sign() {
        return Err(SignatureProblem::NotSigningKey { key });
    }
    let back = newest
        .embedded_signature()
        .is_some_and(|b| b.verify_primary_key_binding(&sub.key, primary).is_ok());
    if !back {
        return Err(SignatureProblem::KeyNotBound { key });
    }
    if let Some(expires) = newest.key_expiration_time() {
        let expires = u64::from(expires.as_secs());
        let at = u64::from(sub.key.created_at().as_secs()) + expires;
        if expires != 0 && at <= now {
            return Err(SignatureProblem::KeyExpired { key, expired: at });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_the_debian_archive_keyring() {
        let path = Path::new("/usr/share/keyrings/debian-archive-keyring.gpg");
        let keyring = Keyring::load(path).unwrap();
        assert!(keyring.len() >= 3, "{keyring:?}");
        for fp in keyring.fingerprints() {
            assert_eq!(fp.len(), 40, "{fp}");
        }
    }

    #[test]
    fn keyring_errors_name_the_input() {
        let e = Keyring::from_bytes(b"", "empty.gpg").unwrap_err();
        assert!(matches!(e, KeyringError::Empty { .. }), "{e}");
        assert!(e.to_string().contains("empty.gpg"));
        let e = Keyring::from_bytes(b"\x99\x00\x05garbage", "bad.gpg").unwrap_err();
        assert!(e.to_string().contains("bad.gpg"), "{e}");
        let e = Keyring::load(Path::new("/nonexistent/k.gpg")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/k.gpg"), "{e}");
    }

    #[test]
    fn unsigned_text_is_not_clearsigned() {
        let path = Path::new("/usr/share/keyrings/debian-archive-keyring.gpg");
        let keyring = Keyring::load(path).unwrap();
        let e = verify_clearsigned(&keyring, b"Origin: Debian\n", SystemTime::now()).unwrap_err();
        assert!(matches!(e, VerifyError::NotClearsigned(_)), "{e}");
    }
}
