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
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey, SignedPublicSubKey};
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
    /// The primary key's binding, computed on first use.
    primary: OnceLock<Binding>,
    /// Each subkey's binding, computed on first use.
    subkeys: Vec<OnceLock<Binding>>,
}

impl Cert {
    fn new(key: SignedPublicKey, only: Option<Fingerprint>) -> Cert {
        let subkeys = key.public_subkeys.iter().map(|_| OnceLock::new()).collect();
        Cert {
            key,
            only,
            primary: OnceLock::new(),
            subkeys,
        }
    }

    fn primary_binding(&self) -> Binding {
        *self.primary.get_or_init(|| primary_binding(&self.key))
    }

    fn subkey_binding(&self, index: usize) -> Binding {
        match (self.subkeys.get(index), self.key.public_subkeys.get(index)) {
            (Some(cell), Some(sub)) => *cell.get_or_init(|| subkey_binding(&self.key, sub)),
            _ => Binding::Unbound,
        }
    }
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
            certs: keys.into_iter().map(|key| Cert::new(key, None)).collect(),
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
                        certs.push(Cert::new(cert.key.clone(), exact.then(|| fp.clone())));
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
    #[error("not a valid OpenPGP clearsigned message: line {line}: {reason}")]
    NotClearsigned { line: usize, reason: &'static str },
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
///
/// The cleartext signature framework (RFC 9580 §7) is split strictly, as apt does: the message
/// must start with its `BEGIN PGP SIGNED MESSAGE` line, carry only `Hash:` armor headers, dash-escape
/// every text line that starts with `-`, and have nothing but whitespace after the signature
/// block. The text whose signature is checked is the text returned.
pub fn verify_clearsigned(
    keyring: &Keyring,
    data: &[u8],
    now: SystemTime,
) -> Result<Verified, VerifyError> {
    let text = std::str::from_utf8(data).map_err(|_| VerifyError::NotUtf8)?;
    let (signed, armor) = split_clearsigned(text)?;
    let (iter, _) = DetachedSignature::from_armor_many(armor.as_bytes())
        .map_err(VerifyError::MalformedSignature)?;
    let mut signatures = Vec::new();
    for sig in iter {
        signatures.push(sig.map_err(VerifyError::MalformedSignature)?.signature);
    }
    if signatures.is_empty() {
        return Err(VerifyError::NoSignature);
    }
    // Text signatures hash the text with CRLF line ends; `Signature::verify` converts.
    let (key, certificate) = keyring.check(
        &signatures,
        signed.as_bytes(),
        &[SignatureType::Text],
        unix(now),
    )?;
    Ok(Verified {
        text: signed,
        key,
        certificate,
    })
}

const BEGIN_MESSAGE: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
const BEGIN_SIGNATURE: &str = "-----BEGIN PGP SIGNATURE-----";
const END_SIGNATURE: &str = "-----END PGP SIGNATURE-----";

/// Splits a clearsigned message into its signed text (dash-escaping undone, trailing spaces and
/// tabs of each line removed, lines joined by `\n` without a final line end, as RFC 9580 defines
/// the signed data) and its armored signature block.
fn split_clearsigned(text: &str) -> Result<(String, &str), VerifyError> {
    let bad = |line: usize, reason: &'static str| VerifyError::NotClearsigned { line, reason };
    // (1-based number, content without line end, byte offset of its start)
    let mut lines = text
        .split_inclusive('\n')
        .scan(0usize, |offset, raw| {
            let start = *offset;
            *offset += raw.len();
            let content = raw.strip_suffix('\n').unwrap_or(raw);
            Some((content.strip_suffix('\r').unwrap_or(content), start))
        })
        .enumerate()
        .map(|(i, (content, start))| (i + 1, content, start));

    match lines.next() {
        Some((_, first, _)) if first.trim_end() == BEGIN_MESSAGE => {}
        _ => {
            return Err(bad(
                1,
                "it does not start with -----BEGIN PGP SIGNED MESSAGE-----",
            ))
        }
    }
    loop {
        match lines.next() {
            None => return Err(bad(1, "the armor headers never end")),
            Some((_, header, _)) if header.trim().is_empty() => break,
            Some((_, header, _)) if header.starts_with("Hash:") => {}
            Some((n, _, _)) => {
                return Err(bad(n, "unexpected armor header (only Hash: is allowed)"))
            }
        }
    }
    let mut body: Vec<&str> = Vec::new();
    let signature_start = loop {
        let Some((n, line, start)) = lines.next() else {
            return Err(bad(1, "there is no signature block"));
        };
        if line.trim_end() == BEGIN_SIGNATURE {
            break start;
        }
        let line = if line.starts_with('-') {
            line.strip_prefix("- ")
                .ok_or_else(|| bad(n, "a line starting with '-' is not dash-escaped"))?
        } else {
            line
        };
        body.push(line.trim_end_matches([' ', '\t']));
    };
    let signature_end = loop {
        let Some((_, line, start)) = lines.next() else {
            return Err(bad(1, "the signature block never ends"));
        };
        if line.trim_end() == END_SIGNATURE {
            break start + line.len();
        }
    };
    if let Some((n, _, _)) = lines.find(|(_, line, _)| !line.trim().is_empty()) {
        return Err(bad(n, "text follows the signature block"));
    }
    Ok((body.join("\n"), &text[signature_start..signature_end]))
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

/// A key of a certificate that may have made a signature: the primary key or subkey `i`.
enum Component<'a> {
    Primary(&'a Cert),
    Subkey(&'a Cert, usize, &'a SignedPublicSubKey),
}

impl Component<'_> {
    fn fingerprint(&self) -> Fingerprint {
        match self {
            Component::Primary(c) => c.key.fingerprint(),
            Component::Subkey(_, _, s) => s.key.fingerprint(),
        }
    }

    fn key_id(&self) -> KeyId {
        match self {
            Component::Primary(c) => c.key.legacy_key_id(),
            Component::Subkey(_, _, s) => s.key.legacy_key_id(),
        }
    }

    fn created(&self) -> u64 {
        u64::from(match self {
            Component::Primary(c) => c.key.created_at().as_secs(),
            Component::Subkey(_, _, s) => s.key.created_at().as_secs(),
        })
    }

    fn verify(&self, sig: &Signature, data: &[u8]) -> bool {
        match self {
            Component::Primary(c) => sig.verify(&c.key.primary_key, data).is_ok(),
            Component::Subkey(_, _, s) => sig.verify(&s.key, data).is_ok(),
        }
    }

    /// Whether the key may sign at `now`: bound, not revoked, not expired, allowed to sign (for a
    /// subkey, its certificate's primary key must be bound, unrevoked and unexpired too).
    fn usable(&self, now: u64) -> Result<(), SignatureProblem> {
        match self {
            Component::Primary(c) => usable(c.primary_binding(), &c.key.fingerprint(), now),
            Component::Subkey(c, i, s) => {
                match usable(c.primary_binding(), &c.key.fingerprint(), now) {
                    Ok(()) | Err(SignatureProblem::NotSigningKey { .. }) => {}
                    Err(e) => return Err(e),
                }
                usable(c.subkey_binding(*i), &s.key.fingerprint(), now)
            }
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
            let components = std::iter::once(Component::Primary(cert)).chain(
                cert.key
                    .public_subkeys
                    .iter()
                    .enumerate()
                    .map(|(i, s)| Component::Subkey(cert, i, s)),
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
    component.usable(now)?;
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

/// What the self-signatures of one key say, independent of the time of use; computed once per
/// keyring (RSA verification of self-signatures costs more than checking the data signature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binding {
    Revoked,
    /// No valid self-signature (primary) or binding signature with back-signature (subkey).
    Unbound,
    Bound {
        /// Unix time the key expires, if it does.
        expires: Option<u64>,
        can_sign: bool,
    },
}

/// The newest of `sigs` (by creation time) that `valid` accepts; verifies newest first and
/// stops at the first valid one.
fn newest_valid<'a>(
    sigs: impl Iterator<Item = &'a Signature>,
    valid: impl Fn(&Signature) -> bool,
) -> Option<&'a Signature> {
    let mut sigs: Vec<&Signature> = sigs.collect();
    sigs.sort_by_key(|s| std::cmp::Reverse(created(s)));
    sigs.into_iter().find(|s| valid(s))
}

fn expiry(created_at: u32, sig: &Signature) -> Option<u64> {
    sig.key_expiration_time()
        .map(|d| u64::from(d.as_secs()))
        .filter(|&d| d != 0)
        .map(|d| u64::from(created_at) + d)
}

/// The primary key's binding: not revoked, and the newest valid self-signature (on a user ID, or
/// a direct-key signature) for its expiry and key flags (no flags: allowed to sign, as old keys).
fn primary_binding(cert: &SignedPublicKey) -> Binding {
    let primary = &cert.primary_key;
    if cert
        .details
        .revocation_signatures
        .iter()
        .any(|s| s.verify_key(primary).is_ok())
    {
        return Binding::Revoked;
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
            .map(move |s| (s, Some(u)))
    });
    let direct_sigs = cert
        .details
        .direct_signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::Key))
        .map(|s| (s, None));
    let mut candidates: Vec<_> = user_sigs.chain(direct_sigs).collect();
    // Newest first; the first valid one governs (the others are not verified).
    candidates.sort_by_key(|(s, _)| std::cmp::Reverse(created(s)));
    let newest = candidates
        .into_iter()
        .find(|(sig, user)| match user {
            Some(u) => sig
                .verify_certification(primary, Tag::UserId, &u.id)
                .is_ok(),
            None => sig.verify_key(primary).is_ok(),
        })
        .map(|(sig, _)| sig);
    match newest {
        None => Binding::Unbound,
        Some(sig) => Binding::Bound {
            expires: expiry(primary.created_at().as_secs(), sig),
            can_sign: !has_key_flags(sig) || sig.key_flags().sign(),
        },
    }
}

/// A subkey's binding: not revoked, and the newest valid binding signature, which must carry a
/// valid back-signature if it allows signing.
fn subkey_binding(cert: &SignedPublicKey, sub: &SignedPublicSubKey) -> Binding {
    let primary = &cert.primary_key;
    let valid = |s: &Signature| s.verify_subkey_binding(primary, &sub.key).is_ok();
    if sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
        .any(&valid)
    {
        return Binding::Revoked;
    }
    let newest = newest_valid(
        sub.signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding)),
        valid,
    );
    let Some(sig) = newest else {
        return Binding::Unbound;
    };
    let can_sign = sig.key_flags().sign();
    if can_sign {
        let back = sig
            .embedded_signature()
            .is_some_and(|b| b.verify_primary_key_binding(&sub.key, primary).is_ok());
        if !back {
            return Binding::Unbound;
        }
    }
    Binding::Bound {
        expires: expiry(sub.key.created_at().as_secs(), sig),
        can_sign,
    }
}

/// Turns a binding into a verdict at `now`.
fn usable(binding: Binding, key: &Fingerprint, now: u64) -> Result<(), SignatureProblem> {
    let key = fpr(key);
    match binding {
        Binding::Revoked => Err(SignatureProblem::KeyRevoked { key }),
        Binding::Unbound => Err(SignatureProblem::KeyNotBound { key }),
        Binding::Bound {
            expires: Some(at), ..
        } if at <= now => Err(SignatureProblem::KeyExpired { key, expired: at }),
        Binding::Bound {
            can_sign: false, ..
        } => Err(SignatureProblem::NotSigningKey { key }),
        Binding::Bound { .. } => Ok(()),
    }
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
        assert!(
            matches!(e, VerifyError::NotClearsigned { line: 1, .. }),
            "{e}"
        );
    }

    #[test]
    fn splits_the_cleartext_framework() {
        let msg = "-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA512\r\n\r\n\
                   Origin: x\r\n- - dashed\r\n- From here\r\ntrailing \t \r\n\r\n\
                   -----BEGIN PGP SIGNATURE-----\r\n\r\nAAAA\r\n-----END PGP SIGNATURE-----\r\n\n";
        let (text, armor) = split_clearsigned(msg).unwrap();
        assert_eq!(text, "Origin: x\n- dashed\nFrom here\ntrailing\n");
        assert!(armor.starts_with("-----BEGIN PGP SIGNATURE-----"));
        assert!(armor.ends_with("-----END PGP SIGNATURE-----"));

        let (text, _) = split_clearsigned(
            "-----BEGIN PGP SIGNED MESSAGE-----\n\n-----BEGIN PGP SIGNATURE-----\n-----END PGP SIGNATURE-----\n",
        )
        .unwrap();
        assert_eq!(text, "");
    }

    #[test]
    fn refuses_malformed_cleartext() {
        let check = |msg: &str, line: usize, reason: &str| {
            let e = split_clearsigned(msg).unwrap_err();
            assert!(
                matches!(&e, VerifyError::NotClearsigned { line: l, reason: r } if *l == line && r.contains(reason)),
                "{msg:?}: {e}"
            );
        };
        let sig = "-----BEGIN PGP SIGNATURE-----\nAAAA\n-----END PGP SIGNATURE-----\n";
        check(
            &format!("Origin: evil\n-----BEGIN PGP SIGNED MESSAGE-----\n\nA: b\n{sig}"),
            1,
            "start",
        );
        check(
            &format!("-----BEGIN PGP SIGNED MESSAGE-----\nComment: x\n\nA: b\n{sig}"),
            2,
            "Hash",
        );
        check(
            &format!("-----BEGIN PGP SIGNED MESSAGE-----\n\n-not-escaped\n{sig}"),
            3,
            "dash-escaped",
        );
        check(
            &format!("-----BEGIN PGP SIGNED MESSAGE-----\n\nA: b\n{sig}Origin: evil\n"),
            7,
            "follows",
        );
        check(
            "-----BEGIN PGP SIGNED MESSAGE-----\n\nA: b\n",
            1,
            "no signature block",
        );
        check(
            "-----BEGIN PGP SIGNED MESSAGE-----\n\nA: b\n-----BEGIN PGP SIGNATURE-----\nAAAA\n",
            1,
            "never ends",
        );
    }
}
