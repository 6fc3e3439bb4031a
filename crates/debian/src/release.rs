//! The `Release` file of a repository suite: what it is, until when it is valid, and the SHA-256
//! digest and size of every index below it.
//!
//! Only the `SHA256` table is read: a `Release` without one is an error, never a fallback to MD5
//! or SHA-1. Parsing is pure; [`Release::check_fresh`] and [`Release::check_suite`] take the
//! current time and the requested suite so callers (and tests) decide them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use types::Digest;

use crate::control::{self, ControlError};

/// How far in the future a `Date` may be before the file is refused as not yet valid (clock skew
/// between the archive and this host).
pub const MAX_FUTURE: Duration = Duration::from_secs(10 * 60);

/// A parsed `Release` (the signed text of `InRelease`, or `Release` checked by `Release.gpg`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub origin: Option<String>,
    pub label: Option<String>,
    pub suite: Option<String>,
    pub codename: Option<String>,
    pub version: Option<String>,
    pub date: Option<ReleaseDate>,
    pub valid_until: Option<ReleaseDate>,
    pub architectures: Vec<String>,
    pub components: Vec<String>,
    /// Whether indexes may be fetched by digest (`.../by-hash/SHA256/HEX`).
    pub acquire_by_hash: bool,
    /// The `SHA256` table: path relative to the suite directory → digest and size.
    pub files: BTreeMap<String, FileEntry>,
}

/// A date field, as written and as a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseDate {
    pub time: SystemTime,
    pub text: String,
}

/// One line of the `SHA256` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub sha256: Digest,
    pub size: u64,
}

/// Why a `Release` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Syntax(#[from] ControlError),
    #[error("Release has no fields")]
    Empty,
    #[error("line {line}: Release has a second paragraph")]
    SecondParagraph { line: usize },
    #[error("Release has no SHA256 field (MD5Sum and SHA1 are not accepted)")]
    NoSha256,
    #[error("line {line}: invalid SHA256 entry {entry:?}: {reason}")]
    BadEntry {
        line: usize,
        entry: String,
        reason: &'static str,
    },
    #[error("line {line}: invalid {field} date {value:?}")]
    BadDate {
        line: usize,
        field: &'static str,
        value: String,
    },
    #[error("line {line}: invalid Acquire-By-Hash value {value:?}")]
    BadBool { line: usize, value: String },
    #[error("Release expired: Valid-Until is {valid_until}")]
    Expired { valid_until: String },
    #[error("Release is not valid yet: its Date {date} is in the future")]
    NotYetValid { date: String },
    #[error(
        "Release is for suite {suite:?} / codename {codename:?}, not the requested {expected:?}"
    )]
    WrongSuite {
        expected: String,
        suite: Option<String>,
        codename: Option<String>,
    },
}

impl Release {
    /// Parses the text of a `Release` file.
    pub fn parse(text: &str) -> Result<Release, ReleaseError> {
        let mut paragraphs = control::paragraphs(text);
        let p = paragraphs.next().ok_or(ReleaseError::Empty)??;
        if let Some(next) = paragraphs.next() {
            let line = next.map(|n| n.line).unwrap_or_else(|e| e.line);
            return Err(ReleaseError::SecondParagraph { line });
        }
        let owned = |name: &str| p.get(name).map(str::to_owned);
        let words = |name: &str| -> Vec<String> {
            p.get(name)
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let date = |field: &'static str| -> Result<Option<ReleaseDate>, ReleaseError> {
            let Some(f) = p.field(field) else {
                return Ok(None);
            };
            let time = parse_date(f.value).ok_or_else(|| ReleaseError::BadDate {
                line: f.line,
                field,
                value: f.value.to_owned(),
            })?;
            Ok(Some(ReleaseDate {
                time,
                text: f.value.to_owned(),
            }))
        };
        let (date, valid_until) = (date("Date")?, date("Valid-Until")?);
        let acquire_by_hash = match p.field("Acquire-By-Hash") {
            None => false,
            Some(f) => match f.value.to_ascii_lowercase().as_str() {
                "yes" | "true" => true,
                "no" | "false" => false,
                _ => {
                    return Err(ReleaseError::BadBool {
                        line: f.line,
                        value: f.value.to_owned(),
                    })
                }
            },
        };
        let table = p.field("SHA256").ok_or(ReleaseError::NoSha256)?;
        let mut files = BTreeMap::new();
        for (i, entry) in table.lines().enumerate() {
            if entry.is_empty() {
                continue;
            }
            let line = table.line + i;
            let bad = |reason| ReleaseError::BadEntry {
                line,
                entry: entry.to_owned(),
                reason,
            };
            let mut parts = entry.split_whitespace();
            let (Some(hex), Some(size), Some(path), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("expected `DIGEST SIZE PATH`"));
            };
            let sha256 = Digest::from_hex(hex).map_err(|_| bad("not 64 lowercase hex digits"))?;
            let size = size.parse().map_err(|_| bad("size is not a number"))?;
            if path.starts_with('/') || path.split('/').any(|c| c == ".." || c.is_empty()) {
                return Err(bad("path is not relative to the suite"));
            }
            files.insert(path.to_owned(), FileEntry { sha256, size });
        }
        if files.is_empty() {
            return Err(ReleaseError::NoSha256);
        }
        Ok(Release {
            origin: owned("Origin"),
            label: owned("Label"),
            suite: owned("Suite"),
            codename: owned("Codename"),
            version: owned("Version"),
            date,
            valid_until,
            architectures: words("Architectures"),
            components: words("Components"),
            acquire_by_hash,
            files,
        })
    }

    /// The `SHA256` entry for `path` (relative to the suite directory).
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.get(path)
    }

    /// Refuses a `Release` whose `Valid-Until` is at or before `now`, or whose `Date` is more than
    /// [`MAX_FUTURE`] after `now`.
    pub fn check_fresh(&self, now: SystemTime) -> Result<(), ReleaseError> {
        if let Some(v) = &self.valid_until {
            if v.time <= now {
                return Err(ReleaseError::Expired {
                    valid_until: v.text.clone(),
                });
            }
        }
        if let Some(d) = &self.date {
            if d.time > now + MAX_FUTURE {
                return Err(ReleaseError::NotYetValid {
                    date: d.text.clone(),
                });
            }
        }
        Ok(())
    }

    /// Refuses a `Release` that is not for `suite` (its `Suite` nor its `Codename`), so a signed
    /// `Release` of another suite cannot be replayed in its place.
    pub fn check_suite(&self, suite: &str) -> Result<(), ReleaseError> {
        if self.suite.as_deref() == Some(suite) || self.codename.as_deref() == Some(suite) {
            return Ok(());
        }
        Err(ReleaseError::WrongSuite {
            expected: suite.to_owned(),
            suite: self.suite.clone(),
            codename: self.codename.clone(),
        })
    }
}

/// Parses an RFC 1123 date as written in `Release` files: `[Day,] DD Mon YYYY HH:MM:SS ZONE`,
/// where ZONE is `UTC`, `GMT`, `UT`, `Z` or `+HHMM`/`-HHMM`.
pub fn parse_date(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let text = match text.split_once(',') {
        Some((day, rest)) if day.len() <= 9 && day.bytes().all(|b| b.is_ascii_alphabetic()) => rest,
        _ => text,
    };
    let mut parts = text.split_whitespace();
    let day: u32 = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let year: i64 = parts.next()?.parse().ok()?;
    let time = parts.next()?;
    let zone = parts.next().unwrap_or("UTC");
    if parts.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as u32 + 1;
    let mut hms = time.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let m: i64 = hms.next()?.parse().ok()?;
    let s: i64 = hms.next()?.parse().ok()?;
    if hms.next().is_some() || h > 23 || m > 59 || s > 60 || day == 0 || day > 31 {
        return None;
    }
    let offset: i64 = match zone {
        "UTC" | "GMT" | "UT" | "Z" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let hh: i64 = z[1..3].parse().ok()?;
            let mm: i64 = z[3..5].parse().ok()?;
            let off = hh * 3600 + mm * 60;
            if z.starts_with('-') {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let days = types::time::days_from_civil(year, month, day);
    let secs = days * 86400 + h * 3600 + m * 60 + s - offset;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX_A: &str = "0000000000000000000000000000000000000000000000000000000000000001";
    const HEX_B: &str = "00000000000000000000000000000000000000000000000000000000000000ff";

    fn sample() -> String {
        format!(
            "Origin: Debian\nLabel: Debian\nSuite: stable\nVersion: 12.10\nCodename: bookworm\n\
             Date: Sat, 15 Mar 2025 09:38:11 UTC\nValid-Until: Sat, 22 Mar 2025 09:38:11 UTC\n\
             Acquire-By-Hash: yes\nArchitectures: all amd64 arm64\nComponents: main contrib\n\
             MD5Sum:\n 0123 10 main/binary-amd64/Packages\n\
             SHA256:\n {HEX_A}   1234 main/binary-amd64/Packages\n {HEX_B} 99 main/binary-amd64/Packages.xz\n"
        )
    }

    fn at(text: &str) -> SystemTime {
        parse_date(text).unwrap()
    }

    #[test]
    fn parses_fields_and_sha256_table() {
        let r = Release::parse(&sample()).unwrap();
        assert_eq!(r.origin.as_deref(), Some("Debian"));
        assert_eq!(r.suite.as_deref(), Some("stable"));
        assert_eq!(r.codename.as_deref(), Some("bookworm"));
        assert_eq!(r.architectures, ["all", "amd64", "arm64"]);
        assert_eq!(r.components, ["main", "contrib"]);
        assert!(r.acquire_by_hash);
        assert_eq!(r.files.len(), 2);
        let e = r.file("main/binary-amd64/Packages.xz").unwrap();
        assert_eq!(e.size, 99);
        assert_eq!(e.sha256.hex(), HEX_B);
        assert_eq!(r.file("main/binary-amd64/Packages").unwrap().size, 1234);
        assert_eq!(
            r.date.unwrap().time,
            UNIX_EPOCH + Duration::from_secs(1742031491)
        );
    }

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1742031491);
        assert_eq!(parse_date("Sat, 15 Mar 2025 09:38:11 UTC"), Some(t));
        assert_eq!(parse_date("15 Mar 2025 09:38:11 GMT"), Some(t));
        assert_eq!(parse_date("Sat, 15 Mar 2025 10:38:11 +0100"), Some(t));
        assert_eq!(parse_date("Sat, 15 Mar 2025 08:08:11 -0130"), Some(t));
        assert_eq!(
            parse_date("Thu, 01 Jan 1970 00:00:00 UTC"),
            Some(UNIX_EPOCH)
        );
        assert_eq!(
            parse_date("Tue, 29 Feb 2000 12:00:00 UTC"),
            Some(UNIX_EPOCH + Duration::from_secs(951825600))
        );
        for bad in [
            "",
            "yesterday",
            "Sat, 15 Foo 2025 09:38:11 UTC",
            "Sat, 15 Mar 2025 09:38 UTC",
            "Sat, 15 Mar 2025 25:38:11 UTC",
            "Sat, 15 Mar 2025 09:38:11 CEST",
            "Sat, 15 Mar 2025 09:38:11 UTC extra",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn valid_until_and_date_are_checked_against_now() {
        let r = Release::parse(&sample()).unwrap();
        r.check_fresh(at("Sun, 16 Mar 2025 00:00:00 UTC")).unwrap();
        let e = r
            .check_fresh(at("Sat, 22 Mar 2025 09:38:11 UTC"))
            .unwrap_err();
        assert!(matches!(e, ReleaseError::Expired { .. }), "{e}");
        assert!(e.to_string().contains("22 Mar 2025"), "{e}");
        let e = r
            .check_fresh(at("Sat, 15 Mar 2025 09:00:00 UTC"))
            .unwrap_err();
        assert!(matches!(e, ReleaseError::NotYetValid { .. }), "{e}");
        // Within the allowed clock skew.
        r.check_fresh(at("Sat, 15 Mar 2025 09:30:00 UTC")).unwrap();
    }

    #[test]
    fn suite_must_match_suite_or_codename() {
        let r = Release::parse(&sample()).unwrap();
        r.check_suite("stable").unwrap();
        r.check_suite("bookworm").unwrap();
        let e = r.check_suite("trixie").unwrap_err();
        assert!(e.to_string().contains("trixie"), "{e}");
    }

    #[test]
    fn missing_sha256_is_an_error_without_fallback() {
        let e = Release::parse("Origin: x\nMD5Sum:\n 0123 10 main/binary-amd64/Packages\n")
            .unwrap_err();
        assert!(matches!(e, ReleaseError::NoSha256), "{e}");
        let e = Release::parse("Origin: x\nSHA256:\n").unwrap_err();
        assert!(matches!(e, ReleaseError::NoSha256), "{e}");
    }

    #[test]
    fn bad_entries_name_their_line() {
        let check = |entry: &str, want: &str| {
            let e = Release::parse(&format!("Origin: x\nSHA256:\n {HEX_A} 1 a\n {entry}\n"))
                .unwrap_err();
            assert!(e.to_string().starts_with("line 4:"), "{e}");
            assert!(e.to_string().contains(want), "{e}");
        };
        check("abc 1 main/Packages", "hex");
        check(&format!("{HEX_A} x main/Packages"), "size");
        check(&format!("{HEX_A} 1"), "DIGEST SIZE PATH");
        check(&format!("{HEX_A} 1 ../etc/passwd"), "relative");
        check(&format!("{HEX_A} 1 /etc/passwd"), "relative");
        let e = Release::parse("Date: never\nSHA256:\n x\n").unwrap_err();
        assert!(e.to_string().contains("line 1: invalid Date"), "{e}");
        let e = Release::parse("A: 1\n\nB: 2\n").unwrap_err();
        assert!(e.to_string().contains("second paragraph"), "{e}");
    }
}
