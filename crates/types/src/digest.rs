//! Content digests in the OCI form `sha256:<64 lowercase hex>`.
//!
//! A [`Digest`] can only be built from a well-formed string or from hashing bytes, so code that
//! holds one never needs to re-validate it (for example before using its hex part as a file name).

use std::fmt;
use std::io;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A validated `sha256:` content digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    /// 64 lowercase hex characters.
    hex: String,
}

/// Why a string is not a digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest {0:?} has no algorithm prefix (expected sha256:<hex>)")]
    MissingAlgorithm(String),
    #[error("digest {0:?} uses an unsupported algorithm (only sha256 is supported)")]
    UnsupportedAlgorithm(String),
    #[error("digest {0:?} is not 64 lowercase hex characters")]
    BadEncoding(String),
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(bytes).into())
    }

    fn from_sha256(raw: [u8; 32]) -> Digest {
        Digest {
            hex: hex::encode(raw),
        }
    }

    /// The algorithm name, always `sha256`.
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    /// The hex-encoded hash; safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex characters, as shown in listings.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }

    /// Parses a bare 64-character hex string (as used in blob file names).
    pub fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Digest {
                hex: hex.to_owned(),
            })
        } else {
            Err(DigestError::BadEncoding(hex.to_owned()))
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(DigestError::MissingAlgorithm(s.to_owned()));
        };
        if algorithm != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm(s.to_owned()));
        }
        Digest::from_hex(hex).map_err(|_| DigestError::BadEncoding(s.to_owned()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Hashes everything that passes through it, counting bytes.
///
/// Wrap a writer to hash while copying, or use it alone as an [`io::Write`] sink.
#[derive(Default)]
pub struct Sha256Writer<W = io::Sink> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl Sha256Writer<io::Sink> {
    pub fn new() -> Self {
        Sha256Writer::wrap(io::sink())
    }
}

impl<W> Sha256Writer<W> {
    pub fn wrap(inner: W) -> Self {
        Sha256Writer {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Feeds bytes to the hash without writing them to the inner writer.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest, the byte count and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        (
            Digest::from_sha256(self.hasher.finalize().into()),
            self.len,
            self.inner,
        )
    }
}

impl<W: io::Write> io::Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty_input_is_the_well_known_value() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY);
        let mut w = Sha256Writer::new();
        w.write_all(b"").unwrap();
        assert_eq!(w.finish().0.to_string(), EMPTY);
    }

    #[test]
    fn parse_round_trips_and_rejects_malformed_strings() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d.short(), "e3b0c44298fc");
        for (input, want) in [
            ("e3b0", DigestError::MissingAlgorithm("e3b0".into())),
            (
                "md5:abcd",
                DigestError::UnsupportedAlgorithm("md5:abcd".into()),
            ),
            (
                "sha256:ABCD",
                DigestError::BadEncoding("sha256:ABCD".into()),
            ),
            (
                "sha256:../../etc/passwd",
                DigestError::BadEncoding("sha256:../../etc/passwd".into()),
            ),
        ] {
            assert_eq!(input.parse::<Digest>(), Err(want), "{input}");
        }
    }

    #[test]
    fn writer_hashes_what_it_passes_through() {
        let mut w = Sha256Writer::wrap(Vec::new());
        w.write_all(b"hello").unwrap();
        let (d, n, inner) = w.finish();
        assert_eq!(n, 5);
        assert_eq!(inner, b"hello");
        assert_eq!(d, Digest::of(b"hello"));
    }
}
