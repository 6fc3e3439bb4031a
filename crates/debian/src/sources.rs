//! APT repository sources: one-line `deb` entries and deb822 `.sources` paragraphs.
//!
//! The same one-line form serves the host's `sources.list` and the image spec's
//! `repositories` (`deb [signed-by=...] URL SUITE COMPONENT...`). Options that would weaken
//! verification (`trusted=yes`, `allow-insecure=yes`, `allow-weak=yes`,
//! `allow-downgrade-to-insecure=yes`, `check-valid-until=no`, `check-date=no`) are refused with an
//! error: hardbox never disables verification. Other unknown options are ignored, as apt does.
//!
//! Every error names the file (when there is one) and the 1-based line.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::control::{self, ControlError, Paragraph};

/// One repository to read binary packages from: a URI and a suite, with the components,
/// architectures and keys to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The repository root, without a trailing slash (`http://deb.debian.org/debian`).
    pub uri: String,
    /// The suite or codename (`bookworm`), or an exact path ending in `/` for a flat repository.
    pub suite: String,
    /// Components (`main`); empty for a flat repository.
    pub components: Vec<String>,
    /// Architectures asked for; empty means the caller's default.
    pub architectures: Vec<String>,
    /// The keys that may sign this repository; empty means the default trusted keyrings.
    pub signed_by: Vec<SignedBy>,
}

/// One entry of a source's `Signed-By`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedBy {
    /// A keyring file (binary `.gpg` or armored `.asc`).
    Keyring(PathBuf),
    /// A key fingerprint (hex, uppercase) looked up in the default keyrings. `exact` (written with
    /// a trailing `!`) accepts only that (sub)key, not the other keys of its certificate.
    Fingerprint { fingerprint: String, exact: bool },
    /// An armored public key block written in a deb822 `Signed-By` field.
    Inline(String),
}

impl Source {
    /// Whether this is a flat repository (`suite` is an exact path ending in `/`).
    pub fn is_flat(&self) -> bool {
        self.suite.ends_with('/')
    }

    /// The URL of the directory holding `InRelease`: `URI/dists/SUITE`, or `URI/SUITE` for a flat
    /// repository (without a trailing slash).
    pub fn dist_url(&self) -> String {
        if self.is_flat() {
            let path = self.suite.trim_end_matches('/');
            let path = path.strip_prefix("./").unwrap_or(path);
            if path.is_empty() || path == "." {
                self.uri.clone()
            } else {
                format!("{}/{}", self.uri, path)
            }
        } else {
            format!("{}/dists/{}", self.uri, self.suite)
        }
    }

    /// The path of a `Packages` index relative to [`Source::dist_url`], without compression
    /// suffix: `COMPONENT/binary-ARCH/Packages` (just `Packages` for a flat repository).
    pub fn packages_path(&self, component: &str, arch: &str) -> String {
        if self.is_flat() {
            "Packages".to_owned()
        } else {
            format!("{component}/binary-{arch}/Packages")
        }
    }
}

impl fmt::Display for Source {
    /// The source as a one-line entry (without its keys).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "deb {} {}", self.uri, self.suite)?;
        for c in &self.components {
            write!(f, " {c}")?;
        }
        Ok(())
    }
}

/// Where a source entry was read: a file (if any) and a 1-based line (0 when the whole file is
/// meant, as for a read error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: Option<PathBuf>,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), 0) => write!(f, "{}", file.display()),
            (Some(file), line) => write!(f, "{}:{line}", file.display()),
            (None, line) => write!(f, "line {line}"),
        }
    }
}

/// A source entry that cannot be used, naming where it was read.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {kind}")]
pub struct SourceError {
    pub location: Location,
    pub kind: SourceErrorKind,
}

/// What is wrong with a source entry.
#[derive(Debug, thiserror::Error)]
pub enum SourceErrorKind {
    #[error("failed to read the file")]
    Read(#[source] std::io::Error),
    #[error(transparent)]
    Syntax(ControlError),
    #[error("{option} disables signature verification, which hardbox never does")]
    Insecure { option: String },
    #[error("unknown source type {0:?} (expected deb or deb-src)")]
    UnknownType(String),
    #[error("expected a `deb` entry, found {0:?}")]
    NotDeb(String),
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("option {0:?} is not of the form name=value")]
    BadOption(String),
    #[error("unsupported option {0:?}")]
    UnsupportedOption(String),
    #[error("unterminated option list (no closing `]`)")]
    UnterminatedOptions,
    #[error("URI {0:?} has no scheme (expected http://, https:// or file://)")]
    BadUri(String),
    #[error("suite {0:?} is an exact path (ends in /) and cannot have components")]
    ComponentsWithExactPath(String),
    #[error("suite {0:?} needs at least one component")]
    NoComponents(String),
    #[error("invalid value {value:?} for {field}")]
    BadValue { field: &'static str, value: String },
}

/// Options collected from a one-line entry's `[...]` or a deb822 paragraph.
#[derive(Default)]
struct Options {
    architectures: Vec<String>,
    signed_by: Vec<SignedBy>,
}

/// Options and fields that would weaken verification, with the value that does so.
const INSECURE: &[(&str, &str)] = &[
    ("trusted", "yes"),
    ("allow-insecure", "yes"),
    ("allow-weak", "yes"),
    ("allow-downgrade-to-insecure", "yes"),
    ("check-valid-until", "no"),
    ("check-date", "no"),
];

/// Options that change where or how indexes are fetched in ways hardbox does not implement; they
/// are refused rather than ignored so the fetched repository is the one the entry describes.
const UNSUPPORTED: &[&str] = &[
    "inrelease-path",
    "snapshot",
    "architectures-add",
    "architectures-remove",
];

impl Options {
    /// Applies one `name=value` option (`name` lowercase; deb822 field names are mapped first).
    fn apply(&mut self, name: &str, value: &str) -> Result<(), SourceErrorKind> {
        let value = value.trim();
        for (option, bad) in INSECURE {
            if name == *option {
                return match parse_bool(value) {
                    Some(v) if v == (*bad == "yes") => Err(SourceErrorKind::Insecure {
                        option: format!("{name}={value}"),
                    }),
                    Some(_) => Ok(()),
                    None => Err(SourceErrorKind::BadValue {
                        field: option,
                        value: value.to_owned(),
                    }),
                };
            }
        }
        if UNSUPPORTED.contains(&name) {
            return Err(SourceErrorKind::UnsupportedOption(name.to_owned()));
        }
        match name {
            "arch" | "architectures" => {
                self.architectures = split_list(value).map(str::to_owned).collect();
            }
            "signed-by" => self.signed_by = parse_signed_by(value)?,
            _ => {}
        }
        Ok(())
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "with" | "on" | "enable" => Some(true),
        "no" | "false" | "without" | "off" | "disable" => Some(false),
        _ => None,
    }
}

/// Splits a list written with commas and/or whitespace.
fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

fn parse_signed_by(value: &str) -> Result<Vec<SignedBy>, SourceErrorKind> {
    if value.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
        return Ok(vec![SignedBy::Inline(format!("{}\n", value.trim()))]);
    }
    let entries: Vec<SignedBy> = split_list(value)
        .map(|item| {
            let (hex, exact) = match item.strip_suffix('!') {
                Some(h) => (h, true),
                None => (item, false),
            };
            if is_fingerprint(hex) {
                SignedBy::Fingerprint {
                    fingerprint: hex.to_ascii_uppercase(),
                    exact,
                }
            } else {
                SignedBy::Keyring(PathBuf::from(item))
            }
        })
        .collect();
    if entries.is_empty() {
        return Err(SourceErrorKind::BadValue {
            field: "signed-by",
            value: value.to_owned(),
        });
    }
    Ok(entries)
}

/// A v4 (40 hex digits) or v6 (64 hex digits) fingerprint.
fn is_fingerprint(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_uri(uri: &str) -> Result<String, SourceErrorKind> {
    match uri.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty()
                && !rest.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.') =>
        {
            Ok(uri.trim_end_matches('/').to_owned())
        }
        _ => Err(SourceErrorKind::BadUri(uri.to_owned())),
    }
}

fn make_source(
    uri: &str,
    suite: &str,
    components: Vec<String>,
    options: &Options,
) -> Result<Source, SourceErrorKind> {
    let uri = check_uri(uri)?;
    if suite.ends_with('/') {
        if !components.is_empty() {
            return Err(SourceErrorKind::ComponentsWithExactPath(suite.to_owned()));
        }
    } else if components.is_empty() {
        return Err(SourceErrorKind::NoComponents(suite.to_owned()));
    }
    Ok(Source {
        uri,
        suite: suite.to_owned(),
        components,
        architectures: options.architectures.clone(),
        signed_by: options.signed_by.clone(),
    })
}

/// Parses one one-line entry `deb [opt=val ...] URI SUITE [COMPONENT...]`, as written in
/// `sources.list` or in an image spec. Anything after `#` is a comment. `deb-src`, comments and
/// blank lines are errors here (use [`parse_list`] for whole files).
pub fn parse_one_line(line: &str) -> Result<Source, SourceError> {
    let at = |kind| SourceError {
        location: Location {
            file: None,
            line: 1,
        },
        kind,
    };
    match parse_line(line).map_err(at)? {
        Line::Deb(source) => Ok(source),
        Line::DebSrc => Err(at(SourceErrorKind::NotDeb("deb-src".into()))),
        Line::Empty => Err(at(SourceErrorKind::Missing(
            "the entry (the line is empty)",
        ))),
    }
}

enum Line {
    Deb(Source),
    DebSrc,
    Empty,
}

fn parse_line(line: &str) -> Result<Line, SourceErrorKind> {
    let line = match line.find('#') {
        Some(i) => &line[..i],
        None => line,
    };
    let line = line.trim();
    if line.is_empty() {
        return Ok(Line::Empty);
    }
    let (typ, mut rest) = line
        .split_once(|c: char| c.is_whitespace() || c == '[')
        .map(|(t, _)| (t, &line[t.len()..]))
        .unwrap_or((line, ""));
    let deb = match typ {
        "deb" => true,
        "deb-src" => false,
        other => return Err(SourceErrorKind::UnknownType(other.to_owned())),
    };
    let mut options = Options::default();
    rest = rest.trim_start();
    if let Some(after) = rest.strip_prefix('[') {
        let Some(end) = after.find(']') else {
            return Err(SourceErrorKind::UnterminatedOptions);
        };
        for option in after[..end].split_whitespace() {
            let Some((name, value)) = option.split_once('=') else {
                return Err(SourceErrorKind::BadOption(option.to_owned()));
            };
            if name.ends_with('+') || name.ends_with('-') {
                return Err(SourceErrorKind::UnsupportedOption(option.to_owned()));
            }
            if deb {
                options.apply(&name.to_ascii_lowercase(), value)?;
            }
        }
        rest = &after[end + 1..];
    }
    let mut words = rest.split_whitespace();
    let uri = words.next().ok_or(SourceErrorKind::Missing("URI"))?;
    let suite = words.next().ok_or(SourceErrorKind::Missing("suite"))?;
    let components: Vec<String> = words.map(str::to_owned).collect();
    if !deb {
        return Ok(Line::DebSrc);
    }
    make_source(uri, suite, components, &options).map(Line::Deb)
}

/// Parses a one-line `.list` file; `file` names it in errors. Returns its `deb` entries in order
/// (`deb-src` entries, comments and blank lines are skipped).
pub fn parse_list(text: &str, file: Option<&Path>) -> Result<Vec<Source>, SourceError> {
    let mut sources = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Line::Deb(source)) => sources.push(source),
            Ok(Line::DebSrc | Line::Empty) => {}
            Err(kind) => {
                return Err(SourceError {
                    location: Location {
                        file: file.map(Path::to_owned),
                        line: i + 1,
                    },
                    kind,
                })
            }
        }
    }
    Ok(sources)
}

/// Parses deb822 `.sources` text; `file` names it in errors. Each paragraph with `Types: deb`
/// and without `Enabled: no` gives one source per (URI, suite) pair, in order.
pub fn parse_deb822(text: &str, file: Option<&Path>) -> Result<Vec<Source>, SourceError> {
    let at = |line: usize, kind| SourceError {
        location: Location {
            file: file.map(Path::to_owned),
            line,
        },
        kind,
    };
    let mut sources = Vec::new();
    for paragraph in control::paragraphs(text) {
        let paragraph = paragraph.map_err(|e| at(e.line, SourceErrorKind::Syntax(e)))?;
        sources.extend(paragraph_sources(&paragraph).map_err(|(line, kind)| at(line, kind))?);
    }
    Ok(sources)
}

fn paragraph_sources(p: &Paragraph<'_>) -> Result<Vec<Source>, (usize, SourceErrorKind)> {
    let words = |name: &str| -> Vec<&str> {
        p.field(name)
            .map(|f| f.lines().flat_map(str::split_whitespace).collect())
            .unwrap_or_default()
    };
    let line_of = |name: &str| p.field(name).map_or(p.line, |f| f.line);

    if let Some(enabled) = p.get("Enabled") {
        match parse_bool(enabled) {
            Some(true) => {}
            Some(false) => return Ok(Vec::new()),
            None => {
                return Err((
                    line_of("Enabled"),
                    SourceErrorKind::BadValue {
                        field: "Enabled",
                        value: enabled.to_owned(),
                    },
                ))
            }
        }
    }
    let types = words("Types");
    if types.is_empty() {
        return Err((p.line, SourceErrorKind::Missing("Types field")));
    }
    let mut deb = false;
    for t in &types {
        match *t {
            "deb" => deb = true,
            "deb-src" => {}
            other => {
                return Err((
                    line_of("Types"),
                    SourceErrorKind::UnknownType(other.to_owned()),
                ))
            }
        }
    }
    let mut options = Options::default();
    for field in &p.fields {
        let name = field.name.to_ascii_lowercase();
        let value = if name == "signed-by" {
            inline_value(field)
        } else {
            field.lines().collect::<Vec<_>>().join(" ")
        };
        options
            .apply(&name, &value)
            .map_err(|kind| (field.line, kind))?;
    }
    let uris = words("URIs");
    let suites = words("Suites");
    if uris.is_empty() {
        return Err((p.line, SourceErrorKind::Missing("URIs field")));
    }
    if suites.is_empty() {
        return Err((p.line, SourceErrorKind::Missing("Suites field")));
    }
    if !deb {
        return Ok(Vec::new());
    }
    let components: Vec<String> = words("Components").into_iter().map(str::to_owned).collect();
    let mut sources = Vec::new();
    for uri in &uris {
        for suite in &suites {
            let source = make_source(uri, suite, components.clone(), &options).map_err(|kind| {
                let line = match kind {
                    SourceErrorKind::BadUri(_) => line_of("URIs"),
                    _ => line_of("Suites"),
                };
                (line, kind)
            })?;
            sources.push(source);
        }
    }
    Ok(sources)
}

/// A `Signed-By` value: an inline key keeps its lines (deb822's `.` lines become empty lines);
/// a list of paths or fingerprints is joined with spaces.
fn inline_value(field: &control::Field<'_>) -> String {
    let lines: Vec<&str> = field.lines().collect();
    let first = lines.iter().position(|l| !l.is_empty()).unwrap_or(0);
    lines[first..].join("\n")
}

/// Reads the host's apt sources below `etc_apt` (normally `/etc/apt`): `sources.list`, then the
/// files of `sources.list.d` in name order, `*.list` as one-line entries and `*.sources` as
/// deb822. As apt, other files and names with characters outside `A-Za-z0-9_.-` are ignored.
/// Only `deb` entries are returned.
pub fn host_sources(etc_apt: &Path) -> Result<Vec<Source>, SourceError> {
    let read_error = |path: &Path, e| SourceError {
        location: Location {
            file: Some(path.to_owned()),
            line: 0,
        },
        kind: SourceErrorKind::Read(e),
    };
    let mut sources = Vec::new();
    let main = etc_apt.join("sources.list");
    match fs_err::read_to_string(&main) {
        Ok(text) => sources.extend(parse_list(&text, Some(&main))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(read_error(&main, e)),
    }
    let dir = etc_apt.join("sources.list.d");
    let entries = match fs_err::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(sources),
        Err(e) => return Err(read_error(&dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| read_error(&dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            continue;
        }
        if name.ends_with(".list") || name.ends_with(".sources") {
            files.push(entry.path());
        }
    }
    files.sort();
    for path in files {
        let text = fs_err::read_to_string(&path).map_err(|e| read_error(&path, e))?;
        if path.extension().is_some_and(|e| e == "sources") {
            sources.extend(parse_deb822(&text, Some(&path))?);
        } else {
            sources.extend(parse_list(&text, Some(&path))?);
        }
    }
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_with_options() {
        let s = parse_one_line(
            "deb [ arch=amd64,arm64 signed-by=/usr/share/keyrings/k.gpg ] http://example.invalid/debian/ bookworm main contrib # c",
        )
        .unwrap();
        assert_eq!(s.uri, "http://example.invalid/debian");
        assert_eq!(s.suite, "bookworm");
        assert_eq!(s.components, ["main", "contrib"]);
        assert_eq!(s.architectures, ["amd64", "arm64"]);
        assert_eq!(
            s.signed_by,
            [SignedBy::Keyring("/usr/share/keyrings/k.gpg".into())]
        );
        assert_eq!(s.dist_url(), "http://example.invalid/debian/dists/bookworm");
        assert_eq!(
            s.packages_path("main", "amd64"),
            "main/binary-amd64/Packages"
        );
        assert_eq!(
            s.to_string(),
            "deb http://example.invalid/debian bookworm main contrib"
        );
    }

    #[test]
    fn one_line_options_attached_and_fingerprints() {
        let fpr = "4D64FEC119C2029067D6E791F8D2585B8783D481";
        let s = parse_one_line(&format!(
            "deb [signed-by={fpr},{}!] file:///srv/repo stable main",
            fpr.to_lowercase()
        ))
        .unwrap();
        assert_eq!(
            s.signed_by,
            [
                SignedBy::Fingerprint {
                    fingerprint: fpr.into(),
                    exact: false
                },
                SignedBy::Fingerprint {
                    fingerprint: fpr.into(),
                    exact: true
                }
            ]
        );
        assert_eq!(s.uri, "file:///srv/repo");
    }

    #[test]
    fn one_line_refuses_what_disables_verification() {
        for opt in [
            "trusted=yes",
            "allow-insecure=yes",
            "allow-weak=yes",
            "allow-downgrade-to-insecure=yes",
            "check-valid-until=no",
            "check-date=false",
        ] {
            let e = parse_one_line(&format!("deb [{opt}] http://h/d s main")).unwrap_err();
            assert!(
                matches!(e.kind, SourceErrorKind::Insecure { .. }),
                "{opt}: {e}"
            );
            assert!(e.to_string().contains("never"), "{e}");
        }
        // The harmless values are accepted.
        parse_one_line("deb [trusted=no check-valid-until=yes] http://h/d s main").unwrap();
    }

    #[test]
    fn one_line_errors() {
        let check = |line: &str, want: &str| {
            let e = parse_one_line(line).unwrap_err();
            assert!(e.to_string().contains(want), "{line:?}: {e}");
        };
        check("deb http://h/d", "missing suite");
        check("deb [arch=amd64 http://h/d s main", "unterminated");
        check("deb [arch] http://h/d s main", "name=value");
        check("deb [arch+=i386] http://h/d s main", "unsupported");
        check("deb h/d s main", "no scheme");
        check("deb http://h/d s", "at least one component");
        check("deb http://h/d ./ main", "exact path");
        check("rpm http://h/d s main", "unknown source type");
        check("deb-src http://h/d s main", "expected a `deb` entry");
        check("", "empty");
    }

    #[test]
    fn flat_repository() {
        let s = parse_one_line("deb http://h/repo ./").unwrap();
        assert!(s.is_flat());
        assert_eq!(s.dist_url(), "http://h/repo");
        assert_eq!(s.packages_path("main", "amd64"), "Packages");
        let s = parse_one_line("deb http://h/repo sub/dir/").unwrap();
        assert_eq!(s.dist_url(), "http://h/repo/sub/dir");
    }

    #[test]
    fn list_file_skips_comments_and_deb_src_and_names_lines() {
        let text = "# comment\n\ndeb-src http://h/d s main\ndeb http://h/d s main\n";
        let v = parse_list(text, Some(Path::new("/etc/apt/sources.list"))).unwrap();
        assert_eq!(v.len(), 1);
        let e = parse_list(
            "deb http://h/d s main\ndeb [trusted=yes] http://h/d s main\n",
            Some(Path::new("x.list")),
        )
        .unwrap_err();
        assert_eq!(e.to_string().split(": ").next(), Some("x.list:2"));
    }

    #[test]
    fn deb822_paragraphs() {
        let text = "\
Types: deb deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Architectures: amd64
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://h/only-src
Suites: s
Components: main

Types: deb
Enabled: no
URIs: http://h/disabled
Suites: s
Components: main
";
        let v = parse_deb822(text, None).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].suite, "bookworm");
        assert_eq!(v[1].suite, "bookworm-updates");
        assert_eq!(v[1].architectures, ["amd64"]);
        assert_eq!(
            v[1].signed_by,
            [SignedBy::Keyring(
                "/usr/share/keyrings/debian-archive-keyring.gpg".into()
            )]
        );
    }

    #[test]
    fn deb822_inline_key() {
        let text = "\
Types: deb
URIs: https://h/d
Suites: s
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mDMEZAAAABYJKwYBBAHaRw8BAQdA
 =abcd
 -----END PGP PUBLIC KEY BLOCK-----
";
        let v = parse_deb822(text, None).unwrap();
        assert_eq!(
            v[0].signed_by,
            [SignedBy::Inline(
                "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZAAAABYJKwYBBAHaRw8BAQdA\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n".into()
            )]
        );
    }

    #[test]
    fn deb822_errors_name_file_and_line() {
        let file = Path::new("/etc/apt/sources.list.d/x.sources");
        let check = |text: &str, want_line: usize, want: &str| {
            let e = parse_deb822(text, Some(file)).unwrap_err();
            assert_eq!(e.location.line, want_line, "{e}");
            assert_eq!(e.location.file.as_deref(), Some(file));
            assert!(e.to_string().contains(want), "{e}");
        };
        check(
            "Types: deb\nURIs: http://h/d\nSuites: s\nComponents: main\nTrusted: yes\n",
            5,
            "never",
        );
        check(
            "Types: deb\nURIs: http://h/d\nSuites: s\n",
            3,
            "at least one component",
        );
        check(
            "Types: rpm\nURIs: http://h/d\nSuites: s\n",
            1,
            "unknown source type",
        );
        check("URIs: http://h/d\nSuites: s\n", 1, "Types");
        check("Types: deb\n\nTypes: deb\nSuites: s\n", 1, "URIs");
        check("Types: deb\nnonsense\n", 2, "expected `Name: value`");
        check(
            "Types: deb\nURIs: http://h/d\nSuites: s\nComponents: main\nEnabled: maybe\n",
            5,
            "Enabled",
        );
    }

    #[test]
    fn host_sources_reads_apt_layout() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs_err::create_dir_all(d.join("sources.list.d")).unwrap();
        fs_err::write(d.join("sources.list"), "deb http://h/a s main\n").unwrap();
        fs_err::write(
            d.join("sources.list.d/b.sources"),
            "Types: deb\nURIs: http://h/b\nSuites: s\nComponents: main\n",
        )
        .unwrap();
        fs_err::write(d.join("sources.list.d/c.list"), "deb http://h/c s main\n").unwrap();
        // Ignored as apt ignores them: other suffixes and names with invalid characters.
        fs_err::write(d.join("sources.list.d/d.list.disabled"), "garbage\n").unwrap();
        fs_err::write(d.join("sources.list.d/e~.list"), "garbage\n").unwrap();
        let v = host_sources(d).unwrap();
        let uris: Vec<_> = v.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(uris, ["http://h/a", "http://h/b", "http://h/c"]);

        fs_err::write(
            d.join("sources.list.d/f.list"),
            "deb [trusted=yes] http://h/f s main\n",
        )
        .unwrap();
        let e = host_sources(d).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "{}:1: ",
                d.join("sources.list.d/f.list").display()
            )),
            "{e}"
        );
    }
}
