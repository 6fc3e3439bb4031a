//! Debian package versions, parsed and ordered exactly as dpkg does.
//!
//! A version is `[epoch:]upstream[-revision]`: the epoch is everything before the first colon,
//! the revision everything after the last hyphen. Two versions compare by epoch (numerically),
//! then upstream, then revision, each with dpkg's `verrevcmp`: alternating runs of non-digits
//! (compared character by character, where `~` sorts before everything, even the end of the
//! string, and letters sort before other characters) and runs of digits (compared numerically).
//!
//! Equality is dpkg's: `1.0`, `0:1.0` and `1.0-0` are equal versions, although they are written
//! differently ([`Version::as_str`] keeps what was written). For this reason [`Version`] does not
//! implement `Hash`; key maps by [`Version::as_str`] when the spelling matters.
//!
//! Parsing follows dpkg's `parseversion`: the errors it reports are errors here, and so are its
//! "invalid character" warnings (a version from an archive never has them). An upstream part that
//! does not start with a digit is accepted, as dpkg does.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A syntax error in a version string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version {text:?}: {reason}")]
pub struct VersionError {
    /// The text that failed to parse (cut at 80 characters).
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A parsed Debian version.
#[derive(Clone)]
pub struct Version {
    /// The version as written, trimmed.
    text: Box<str>,
    epoch: u32,
    /// Byte range of the upstream part in `text`.
    upstream: (usize, usize),
    /// Byte offset in `text` where the revision starts (after its hyphen), if there is one.
    revision: Option<usize>,
}

impl Version {
    /// Parses `[epoch:]upstream[-revision]`, surrounding whitespace ignored.
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        let s = text.trim();
        let err = |reason| VersionError {
            text: s.chars().take(80).collect(),
            reason,
        };
        if s.is_empty() {
            return Err(err("version string is empty"));
        }
        if s.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(err("version string has embedded spaces"));
        }
        let (epoch, upstream_start) = match s.find(':') {
            Some(colon) => {
                let digits = &s[..colon];
                if digits.is_empty() {
                    return Err(err("epoch in version is empty"));
                }
                if !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err("epoch in version is not a number"));
                }
                // dpkg keeps the epoch in an int.
                let epoch = digits
                    .parse::<u32>()
                    .ok()
                    .filter(|&e| i32::try_from(e).is_ok())
                    .ok_or_else(|| err("epoch in version is too big"))?;
                if colon + 1 == s.len() {
                    return Err(err("nothing after colon in version number"));
                }
                (epoch, colon + 1)
            }
            None => (0, 0),
        };
        let rest = &s[upstream_start..];
        let (upstream_end, revision) = match rest.rfind('-') {
            Some(h) => {
                if h + 1 == rest.len() {
                    return Err(err("revision number is empty"));
                }
                (upstream_start + h, Some(upstream_start + h + 1))
            }
            None => (s.len(), None),
        };
        if upstream_end == upstream_start {
            return Err(err("version number is empty"));
        }
        let upstream = &s[upstream_start..upstream_end];
        if !upstream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-+~:".contains(&b))
        {
            return Err(err("invalid character in version number"));
        }
        if let Some(r) = revision {
            if !s[r..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".+~".contains(&b))
            {
                return Err(err("invalid character in revision number"));
            }
        }
        Ok(Version {
            text: s.into(),
            epoch,
            upstream: (upstream_start, upstream_end),
            revision,
        })
    }

    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The epoch (0 when none is written).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The upstream part.
    pub fn upstream(&self) -> &str {
        &self.text[self.upstream.0..self.upstream.1]
    }

    /// The Debian revision, if one is written.
    pub fn revision(&self) -> Option<&str> {
        self.revision.map(|r| &self.text[r..])
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(self.upstream().as_bytes(), other.upstream().as_bytes()))
            .then_with(|| {
                verrevcmp(
                    self.revision().unwrap_or("").as_bytes(),
                    other.revision().unwrap_or("").as_bytes(),
                )
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({:?})", &*self.text)
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Version;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Debian version string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Version, E> {
                Version::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// dpkg's sort weight of one character of a non-digit run; `None` is the end of the string.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp` on one part (upstream or revision).
fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let is_digit = |s: &[u8], i: usize| s.get(i).is_some_and(u8::is_ascii_digit);
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // Non-digit runs, character by character. When one side has ended or reached a digit,
        // its weight is 0, which differs from any non-digit on the other side, so neither index
        // runs past a digit or the end.
        while (i < a.len() && !is_digit(a, i)) || (j < b.len() && !is_digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        // Digit runs, numerically: skip leading zeros, then the longer run is larger, else the
        // first differing digit decides.
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while is_digit(a, i) && is_digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if is_digit(a, i) {
            return Ordering::Greater;
        }
        if is_digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[track_caller]
    fn check(a: &str, expected: Ordering, b: &str) {
        assert_eq!(v(a).cmp(&v(b)), expected, "{a} vs {b}");
        assert_eq!(v(b).cmp(&v(a)), expected.reverse(), "{b} vs {a}");
    }

    #[test]
    fn splits_epoch_upstream_revision() {
        let x = v("2:1.0-rc1-3ubuntu1");
        assert_eq!(x.epoch(), 2);
        assert_eq!(x.upstream(), "1.0-rc1");
        assert_eq!(x.revision(), Some("3ubuntu1"));
        assert_eq!(x.as_str(), "2:1.0-rc1-3ubuntu1");
        let y = v(" 1.2.3 ");
        assert_eq!((y.epoch(), y.upstream(), y.revision()), (0, "1.2.3", None));
        assert_eq!(y.to_string(), "1.2.3");
        let z = v("1:2:3-4");
        assert_eq!(
            (z.epoch(), z.upstream(), z.revision()),
            (1, "2:3", Some("4"))
        );
    }

    #[test]
    fn orders_like_dpkg() {
        use Ordering::*;
        check("1.0", Equal, "1.0");
        check("1.0", Equal, "0:1.0");
        check("1.0", Equal, "1.0-0");
        check("1.0", Equal, "1.00");
        check("1.0~rc1", Less, "1.0");
        check("1.0~~", Less, "1.0~");
        check("1.0~", Less, "1.0");
        check("1.0", Less, "1.0+b1");
        check("1.0", Less, "1.0a");
        check("1.0a", Less, "1.0+");
        check("1.0.1", Greater, "1.0a");
        check("1:0.1", Greater, "9.9");
        check("1.10", Greater, "1.9");
        check("1.0-1", Less, "1.0-2");
        check("1.0-10", Greater, "1.0-9");
        check("1.0-1~bpo1", Less, "1.0-1");
        check("2.36-9+deb12u10", Greater, "2.36-9+deb12u9");
        check("3.0.15-1~deb12u1", Less, "3.0.15-1");
        check("a", Less, "b");
        check("Z", Less, "a");
        check("1.0-a", Greater, "1.0-A.");
    }

    #[test]
    fn rejects_what_dpkg_rejects() {
        for (text, reason) in [
            ("", "version string is empty"),
            ("  ", "version string is empty"),
            ("1 0", "version string has embedded spaces"),
            (":1.0", "epoch in version is empty"),
            ("a:1.0", "epoch in version is not a number"),
            ("-1:1.0", "epoch in version is not a number"),
            ("99999999999:1.0", "epoch in version is too big"),
            ("1:", "nothing after colon in version number"),
            ("1.0-", "revision number is empty"),
            ("-1", "version number is empty"),
            ("1:-1", "version number is empty"),
            ("1.0_1", "invalid character in version number"),
            ("1:1.0-1:2", "invalid character in revision number"),
            ("1.0-1-", "revision number is empty"),
        ] {
            let e = Version::parse(text).unwrap_err();
            assert_eq!(e.reason, reason, "{text:?}");
        }
        assert!(Version::parse("1.0$")
            .unwrap_err()
            .to_string()
            .contains("\"1.0$\""));
    }

    #[test]
    fn serde_round_trip_and_errors() {
        let x: Version = serde_json::from_str("\"1:2.0-1\"").unwrap();
        assert_eq!(x.as_str(), "1:2.0-1");
        assert_eq!(serde_json::to_string(&x).unwrap(), "\"1:2.0-1\"");
        let e = serde_json::from_str::<Version>("\"1.0-\"").unwrap_err();
        assert!(e.to_string().contains("revision number is empty"), "{e}");
    }
}
