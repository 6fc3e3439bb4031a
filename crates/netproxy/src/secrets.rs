//! Secrets that never enter the sandbox.
//!
//! A [`SecretBinding`] ties a secret (`NAME`, value) to the hosts allowed to receive it and to
//! where it goes in a request (one named header, or any header). The sandbox only ever sees a
//! placeholder, `hardbox-secret-NAME-<32 random hex digits>` ([`Secrets::placeholders`]).
//!
//! For a host a secret is bound to, the proxy terminates the sandbox's TLS with a leaf
//! certificate issued by the per-sandbox [`CertificateAuthority`] (whose PEM the caller installs
//! in the sandbox), verifies the real server against the host's trust store, and swaps the
//! placeholder for the value in the request head. `Authorization: Basic` credentials are
//! decoded, swapped and re-encoded, since that is how git and package managers send tokens.
//! Hosts without secrets are never intercepted.
//!
//! A placeholder in a request to any other host (in the URL, a header, or the body) is an
//! exfiltration attempt: the request is blocked and reported. The value never appears in
//! events, errors or `Debug` output; responses from a bound host have any copy of the value
//! masked before they reach the sandbox.

use std::fmt;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use crate::policy::{HostPattern, Target};

/// The prefix of every placeholder.
pub const PLACEHOLDER_PREFIX: &str = "hardbox-secret-";

/// A binding that cannot be used, named by the secret's name (never its value).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error(
        "invalid secret name '{0}': use letters, digits and '_', starting with a letter or '_'"
    )]
    Name(String),
    #[error("secret {0} has an empty value")]
    EmptyValue(String),
    #[error(
        "secret {0}: the value contains a line break or NUL byte, which cannot go in a header"
    )]
    ValueBytes(String),
    #[error("secret {0} is bound to no host")]
    NoHosts(String),
    #[error("secret {name} is bound to an invalid host pattern '{host}': {reason}")]
    Host {
        name: String,
        host: String,
        reason: &'static str,
    },
    #[error("secret {name}: invalid header name '{header}'")]
    Header { name: String, header: String },
    #[error("secret {0} is bound twice")]
    Duplicate(String),
    #[error("cannot generate random placeholders")]
    Random,
}

/// Where the placeholder is replaced by the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Only in this header (case-insensitive name), e.g. `Authorization` or `x-api-key`.
    Header(String),
    /// In any request header.
    AnyHeader,
}

/// One secret bound to hosts.
pub struct SecretBinding {
    name: String,
    value: Zeroizing<String>,
    hosts: Vec<HostPattern>,
    placement: Placement,
}

impl fmt::Debug for SecretBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBinding")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .field("hosts", &self.hosts)
            .field("placement", &self.placement)
            .finish()
    }
}

impl SecretBinding {
    /// Binds `value` to `hosts` (host patterns, as in `allow-host`, without port).
    pub fn new(
        name: &str,
        value: impl Into<String>,
        hosts: &[&str],
        placement: Placement,
    ) -> Result<Self, SecretError> {
        let value = Zeroizing::new(value.into());
        let valid_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(SecretError::Name(name.to_owned()));
        }
        if value.is_empty() {
            return Err(SecretError::EmptyValue(name.to_owned()));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(SecretError::ValueBytes(name.to_owned()));
        }
        if hosts.is_empty() {
            return Err(SecretError::NoHosts(name.to_owned()));
        }
        let hosts = hosts
            .iter()
            .map(|host| {
                HostPattern::parse(host).map_err(|err| SecretError::Host {
                    name: name.to_owned(),
                    host: (*host).to_owned(),
                    reason: err.reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Placement::Header(header) = &placement {
            let token = !header.is_empty() && header.bytes().all(is_token_byte);
            if !token {
                return Err(SecretError::Header {
                    name: name.to_owned(),
                    header: header.clone(),
                });
            }
        }
        Ok(Self {
            name: name.to_owned(),
            value,
            hosts,
            placement,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    fn is_bound_to(&self, host: &str) -> bool {
        self.hosts.iter().any(|pattern| pattern.matches(host))
    }
}

pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

struct Entry {
    binding: SecretBinding,
    placeholder: String,
}

/// The sandbox's secrets with their placeholders.
#[derive(Default)]
pub struct Secrets {
    entries: Vec<Entry>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|entry| &entry.binding))
            .finish()
    }
}

fn random_hex(bytes: usize) -> Result<String, SecretError> {
    let mut raw = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| SecretError::Random)?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// What a request head scan found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Rewrite {
    /// Names of secrets swapped in.
    pub used: Vec<String>,
}

impl Secrets {
    /// Generates a fresh placeholder for each binding.
    pub fn new(bindings: Vec<SecretBinding>) -> Result<Self, SecretError> {
        let mut entries: Vec<Entry> = Vec::with_capacity(bindings.len());
        for binding in bindings {
            if entries.iter().any(|e| e.binding.name == binding.name) {
                return Err(SecretError::Duplicate(binding.name));
            }
            let placeholder = format!("{PLACEHOLDER_PREFIX}{}-{}", binding.name, random_hex(16)?);
            entries.push(Entry {
                binding,
                placeholder,
            });
        }
        Ok(Self { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The placeholder the sandbox sees for `name`.
    pub fn placeholder(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|entry| entry.binding.name == name)
            .map(|entry| entry.placeholder.as_str())
    }

    /// `(NAME, placeholder)` pairs, e.g. for the sandbox's environment.
    pub fn placeholders(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|entry| (entry.binding.name.as_str(), entry.placeholder.as_str()))
    }

    /// Whether any secret is bound to `host` (then its TLS is intercepted).
    pub fn bound_to(&self, host: &str) -> bool {
        self.entries
            .iter()
            .any(|entry| entry.binding.is_bound_to(host))
    }

    /// The name of a secret whose placeholder appears in `data` and is not bound to `host`
    /// (`None` for `host` means every secret counts).
    pub(crate) fn foreign_placeholder(&self, data: &[u8], host: Option<&str>) -> Option<&str> {
        memchr::memmem::find(data, PLACEHOLDER_PREFIX.as_bytes())?;
        self.entries
            .iter()
            .filter(|entry| host.is_none_or(|host| !entry.binding.is_bound_to(host)))
            .find(|entry| memchr::memmem::find(data, entry.placeholder.as_bytes()).is_some())
            .map(|entry| entry.binding.name.as_str())
    }

    /// The longest placeholder, for scanning a stream in pieces.
    pub(crate) fn longest_placeholder(&self) -> usize {
        self.entries
            .iter()
            .map(|entry| entry.placeholder.len())
            .max()
            .unwrap_or(0)
    }

    /// Swaps the placeholders of secrets bound to `host` in one header value, where the
    /// binding's placement allows it. Basic credentials are decoded, swapped and re-encoded.
    pub(crate) fn rewrite_header(
        &self,
        host: &str,
        name: &str,
        value: &mut Vec<u8>,
        rewrite: &mut Rewrite,
    ) {
        let applies = |entry: &&Entry| {
            entry.binding.is_bound_to(host)
                && match &entry.binding.placement {
                    Placement::AnyHeader => true,
                    Placement::Header(header) => header.eq_ignore_ascii_case(name),
                }
        };
        for entry in self.entries.iter().filter(applies) {
            let secret = entry.binding.value.as_bytes();
            if replace_all(value, entry.placeholder.as_bytes(), secret) {
                rewrite.used.push(entry.binding.name.clone());
            }
            if let Some(mut decoded) = basic_credentials(name, value) {
                if replace_all(&mut decoded, entry.placeholder.as_bytes(), secret) {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(&*decoded);
                    value.iter_mut().for_each(|b| *b = 0);
                    *value = format!("Basic {encoded}").into_bytes();
                    rewrite.used.push(entry.binding.name.clone());
                }
            }
        }
    }

    /// Like [`Secrets::foreign_placeholder`], also looking inside Basic credentials.
    pub(crate) fn foreign_in_header(
        &self,
        name: &str,
        value: &[u8],
        host: Option<&str>,
    ) -> Option<&str> {
        self.foreign_placeholder(value, host).or_else(|| {
            let decoded = basic_credentials(name, value)?;
            self.foreign_placeholder(&decoded, host)
        })
    }

    /// The values of the secrets bound to `host`, to mask them in its responses.
    pub(crate) fn values_for(&self, host: &str) -> Vec<Zeroizing<Vec<u8>>> {
        self.entries
            .iter()
            .filter(|entry| entry.binding.is_bound_to(host))
            .map(|entry| Zeroizing::new(entry.binding.value.as_bytes().to_vec()))
            .collect()
    }
}

fn basic_credentials(name: &str, value: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if !name.eq_ignore_ascii_case("authorization")
        && !name.eq_ignore_ascii_case("proxy-authorization")
    {
        return None;
    }
    if !value.get(..6)?.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let encoded = value.get(6..)?.trim_ascii();
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .map(Zeroizing::new)
}

/// Replaces every `from` in `data` by `to`; true if any.
fn replace_all(data: &mut Vec<u8>, from: &[u8], to: &[u8]) -> bool {
    if memchr::memmem::find(data, from).is_none() {
        return false;
    }
    let mut out = Vec::with_capacity(data.len() + to.len());
    let mut rest: &[u8] = data;
    while let Some(at) = memchr::memmem::find(rest, from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    data.iter_mut().for_each(|b| *b = 0);
    *data = out;
    true
}

/// Replaces every occurrence of each value by as many `*`: same length, so HTTP framing
/// (Content-Length, chunk sizes) stays right.
pub(crate) fn mask_values(data: &mut [u8], values: &[Zeroizing<Vec<u8>>]) {
    for value in values {
        if value.is_empty() {
            continue;
        }
        let mut from = 0;
        while let Some(at) = memchr::memmem::find(&data[from..], value) {
            let start = from + at;
            data[start..start + value.len()].fill(b'*');
            from = start + value.len();
        }
    }
}

/// Could not create or use the certificate authority.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot generate the sandbox certificate authority")]
    Generate(#[source] rcgen::Error),
    #[error("cannot issue a certificate for {host}")]
    Issue {
        host: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot generate a certificate serial number")]
    Random,
}

/// A per-sandbox certificate authority: its certificate is installed in the sandbox's trust
/// store; its key stays in the supervisor's memory and signs leaf certificates for the hosts
/// secrets are bound to.
pub struct CertificateAuthority {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// Today's date (UTC) as (year, month, day), shifted by `days`.
fn civil_date(days_from_today: i64) -> (i32, u8, u8) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(now / 86_400).unwrap_or(0) + days_from_today;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Random)?;
    bytes[0] &= 0x7F;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

impl CertificateAuthority {
    /// A new CA (ECDSA P-256), valid from yesterday for ten years.
    pub fn generate() -> Result<Self, CaError> {
        let key = KeyPair::generate().map_err(CaError::Generate)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "hardbox sandbox CA");
        name.push(DnType::OrganizationName, "hardbox");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let (y, m, d) = civil_date(-1);
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = civil_date(3650);
        params.not_after = rcgen::date_time_ymd(y, m, d);
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key).map_err(CaError::Generate)?;
        Ok(Self {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM: install it in the sandbox's trust store.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A leaf certificate for `host` (a name or an address), valid for about 300 days, with its
    /// chain (leaf, CA) and key.
    pub(crate) fn issue(
        &self,
        host: &Target,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let error = |source| CaError::Issue {
            host: host.to_string(),
            source,
        };
        let key = KeyPair::generate().map_err(error)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, host.to_string());
        params.distinguished_name = name;
        params.subject_alt_names = vec![match host {
            Target::Name(name) => SanType::DnsName(name.clone().try_into().map_err(error)?),
            Target::Ip(ip) => SanType::IpAddress(IpAddr::clone(ip)),
        }];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let (y, m, d) = civil_date(-1);
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = civil_date(300);
        params.not_after = rcgen::date_time_ymd(y, m, d);
        params.serial_number = Some(random_serial()?);
        let cert = params.signed_by(&key, &self.issuer).map_err(error)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![cert.der().clone(), self.cert_der.clone()], key_der))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets::new(vec![
            SecretBinding::new(
                "API_KEY",
                "real-key-123",
                &["api.test"],
                Placement::Header("x-api-key".into()),
            )
            .unwrap(),
            SecretBinding::new(
                "GIT_TOKEN",
                "ghp_real",
                &["*.git.test"],
                Placement::AnyHeader,
            )
            .unwrap(),
        ])
        .unwrap()
    }

    #[test]
    fn placeholders_are_random_and_named() {
        let a = secrets();
        let b = secrets();
        let placeholder = a.placeholder("API_KEY").unwrap();
        assert!(placeholder.starts_with("hardbox-secret-API_KEY-"));
        assert_eq!(placeholder.len(), "hardbox-secret-API_KEY-".len() + 32);
        assert_ne!(placeholder, b.placeholder("API_KEY").unwrap());
        assert_eq!(a.placeholders().count(), 2);
    }

    #[test]
    fn rewrites_only_in_the_bound_header_of_the_bound_host() {
        let s = secrets();
        let key = s.placeholder("API_KEY").unwrap().to_owned();
        let mut rewrite = Rewrite::default();
        let mut value = key.clone().into_bytes();
        s.rewrite_header("api.test", "X-Api-Key", &mut value, &mut rewrite);
        assert_eq!(value, b"real-key-123");
        let mut other_header = format!("Bearer {key}").into_bytes();
        s.rewrite_header("api.test", "authorization", &mut other_header, &mut rewrite);
        assert_eq!(other_header, format!("Bearer {key}").into_bytes());
        let mut other_host = key.clone().into_bytes();
        s.rewrite_header("evil.test", "x-api-key", &mut other_host, &mut rewrite);
        assert_eq!(other_host, key.as_bytes());
        assert_eq!(rewrite.used, ["API_KEY"]);
    }

    #[test]
    fn rewrites_basic_credentials() {
        let s = secrets();
        let token = s.placeholder("GIT_TOKEN").unwrap();
        let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let mut value =
            format!("Basic {}", encode(&format!("x-access-token:{token}"))).into_bytes();
        let mut rewrite = Rewrite::default();
        s.rewrite_header("code.git.test", "Authorization", &mut value, &mut rewrite);
        assert_eq!(
            value,
            format!("Basic {}", encode("x-access-token:ghp_real")).into_bytes()
        );
        let hidden = format!("Basic {}", encode(&format!("u:{token}")));
        assert_eq!(
            s.foreign_in_header("Authorization", hidden.as_bytes(), Some("evil.test")),
            Some("GIT_TOKEN")
        );
    }

    #[test]
    fn finds_foreign_placeholders() {
        let s = secrets();
        let key = s.placeholder("API_KEY").unwrap();
        let body = format!("{{\"k\":\"{key}\"}}");
        assert_eq!(
            s.foreign_placeholder(body.as_bytes(), Some("evil.test")),
            Some("API_KEY")
        );
        assert_eq!(
            s.foreign_placeholder(body.as_bytes(), Some("api.test")),
            None
        );
        assert_eq!(
            s.foreign_placeholder(body.as_bytes(), None),
            Some("API_KEY")
        );
        assert_eq!(
            s.foreign_placeholder(b"hardbox-secret-API_KEY-00", None),
            None
        );
    }

    #[test]
    fn masks_values_keeping_length() {
        let mut data = b"echo: real-key-123 and real-key-123!".to_vec();
        mask_values(&mut data, &secrets().values_for("api.test"));
        assert_eq!(data, b"echo: ************ and ************!".to_vec());
    }

    #[test]
    fn bad_bindings_never_show_the_value() {
        let err = SecretBinding::new("K", "line\nbreak-value", &["a.test"], Placement::AnyHeader)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret K: the value contains a line break or NUL byte, which cannot go in a header"
        );
        assert!(SecretBinding::new("1K", "v", &["a.test"], Placement::AnyHeader).is_err());
        assert!(SecretBinding::new("K", "v", &[], Placement::AnyHeader).is_err());
        assert!(SecretBinding::new(
            "K",
            "v",
            &["a.test"],
            Placement::Header("bad header".into())
        )
        .is_err());
        let debug = format!("{:?}", secrets());
        assert!(!debug.contains("real-key-123"), "{debug}");
    }

    #[test]
    fn civil_dates() {
        let (year, month, day) = civil_date(0);
        assert!(year >= 2024 && (1..=12).contains(&month) && (1..=31).contains(&day));
    }

    #[test]
    fn issues_leaf_certificates() {
        let ca = CertificateAuthority::generate().unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let (chain, _key) = ca.issue(&Target::Name("api.test".into())).unwrap();
        assert_eq!(chain.len(), 2);
        let (chain, _key) = ca.issue(&Target::Ip("127.0.0.1".parse().unwrap())).unwrap();
        assert_eq!(chain[1], *ca.cert_der());
    }
}
