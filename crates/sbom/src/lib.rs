//! Software bills of materials for hardbox images.
//!
//! The image builder describes what went into an image as an [`SbomInput`]: the image (name and
//! manifest digest), the Debian binary packages it holds (version, architecture, source package,
//! declared license, files with their hashes) and the build's `SOURCE_DATE_EPOCH`. This crate
//! turns that description into standard documents:
//!
//! - [`spdx::to_json`]: SPDX 2.3 JSON;
//! - [`cyclonedx::to_json`]: CycloneDX 1.6 JSON;
//! - [`license::from_copyright`]: the declared license of a package, read from its Debian
//!   machine-readable copyright file as an SPDX expression.
//!
//! Both documents are pure functions of the input: no clock, host name or random number goes in,
//! packages and files are sorted, and identifiers (SPDX `documentNamespace`, CycloneDX
//! `serialNumber`) are derived from the image digest, so the same input gives the same bytes. The
//! crate does no I/O; callers write the bytes (atomically) where they belong.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::fmt;
use std::io;

use sha1::{Digest as _, Sha1};
use types::{Digest, Sha256Writer};

pub mod cyclonedx;
pub mod license;
mod purl;
pub mod spdx;
mod time;

pub use license::DeclaredLicense;

/// Everything an SBOM says about one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomInput {
    pub subject: ImageSubject,
    /// The Debian binary packages installed in the image, in any order.
    pub packages: Vec<PackageInfo>,
    /// Creation time, in seconds since the epoch: the build's `SOURCE_DATE_EPOCH`.
    pub created: u64,
    /// The tool that made the document.
    pub tool: Tool,
}

/// The image an SBOM describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSubject {
    /// Repository name without tag or digest, e.g. `hardbox.local/python`.
    pub name: String,
    /// Digest of the image manifest.
    pub manifest_digest: Digest,
    /// Tags the image is known by (e.g. `3.11`), in any order.
    pub tags: Vec<String>,
    /// Who supplies the image. SBOM minimum elements (NTIA) ask for a supplier for every
    /// component, the image included; without one the document says `NOASSERTION`.
    pub supplier: Option<Supplier>,
}

/// One Debian binary package in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    /// Binary package name (`Package`).
    pub name: String,
    /// Version as in the archive, with its epoch if any (`1:2.3-4`).
    pub version: String,
    /// Debian architecture (`amd64`, `arm64`, `all`).
    pub architecture: String,
    /// Source package name (the binary's name when its `Source` field is absent).
    pub source_name: String,
    /// Source package version (the binary's version when `Source` gives none).
    pub source_version: String,
    /// Distribution and release, as in purls: `debian-12`.
    pub distro: String,
    /// The declared license, usually from [`license::from_copyright`].
    pub license: DeclaredLicense,
    /// Path of the package's copyright file in the image, e.g.
    /// `/usr/share/doc/zlib1g/copyright`.
    pub copyright_file: Option<String>,
    /// The regular files the package installed, with their hashes.
    pub files: Vec<FileInfo>,
    /// Who supplies the package: its `Maintainer` (see [`Supplier::from_maintainer`]).
    pub supplier: Option<Supplier>,
    /// Digest of the `.deb` file the package was installed from.
    pub deb_sha256: Option<Digest>,
}

/// A file in the image, with the hashes SPDX 2.3 asks for (SHA-1 is mandatory there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Path in the image, e.g. `/usr/lib/x86_64-linux-gnu/libz.so.1.2.13`.
    pub path: String,
    pub sha256: Digest,
    pub sha1: [u8; 20],
    pub size: u64,
}

impl FileInfo {
    /// Describes a file from its contents.
    pub fn of(path: impl Into<String>, contents: &[u8]) -> FileInfo {
        let mut hasher = FileHasher::new();
        hasher.update(contents);
        hasher.finish(path)
    }
}

/// Hashes a file's contents as they stream past (an [`io::Write`] sink), for [`FileInfo`].
#[derive(Default)]
pub struct FileHasher {
    sha256: Sha256Writer,
    sha1: Sha1,
}

impl FileHasher {
    pub fn new() -> FileHasher {
        FileHasher::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        self.sha1.update(bytes);
    }

    /// The [`FileInfo`] of everything hashed, at `path`.
    pub fn finish(self, path: impl Into<String>) -> FileInfo {
        let (sha256, size, _) = self.sha256.finish();
        FileInfo {
            path: path.into(),
            sha256,
            sha1: self.sha1.finalize().into(),
            size,
        }
    }
}

impl io::Write for FileHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The tool named as the documents' creator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

impl Tool {
    /// hardbox, at this crate's version (the workspace's).
    pub fn hardbox() -> Tool {
        Tool {
            name: "hardbox".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// Whether a supplier is a person or an organization (SPDX writes `Person:` or `Organization:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupplierKind {
    Person,
    Organization,
}

/// Who supplies a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supplier {
    pub kind: SupplierKind,
    pub name: String,
    pub email: Option<String>,
}

impl Supplier {
    pub fn organization(name: impl Into<String>) -> Supplier {
        Supplier {
            kind: SupplierKind::Organization,
            name: name.into(),
            email: None,
        }
    }

    /// Reads a Debian `Maintainer` field (`Name <email>`); what is between the angle brackets is
    /// kept only if it is an email address (some third-party packages put a URL there). Teams (a name with `Team`,
    /// `Maintainers`, `Group` or `Project`, or an address at `lists.debian.org` or
    /// `tracker.debian.org`) are organizations, others persons.
    pub fn from_maintainer(field: &str) -> Supplier {
        let field = field.trim();
        let (name, email) = match (field.find('<'), field.rfind('>')) {
            (Some(open), Some(close)) if open < close => (
                field[..open].trim(),
                Some(field[open + 1..close].trim().to_owned()).filter(|e| is_email(e)),
            ),
            _ => (field, None),
        };
        let team = ["team", "maintainers", "group", "project"]
            .iter()
            .any(|w| name.split_whitespace().any(|n| n.eq_ignore_ascii_case(w)))
            || email.as_deref().is_some_and(|e| {
                e.ends_with("@lists.debian.org") || e.ends_with("@tracker.debian.org")
            });
        Supplier {
            kind: if team {
                SupplierKind::Organization
            } else {
                SupplierKind::Person
            },
            name: name.to_owned(),
            email,
        }
    }

    /// SPDX form: `Organization: Name (email)`.
    fn to_spdx(&self) -> String {
        let kind = match self.kind {
            SupplierKind::Person => "Person",
            SupplierKind::Organization => "Organization",
        };
        match &self.email {
            Some(email) => format!("{kind}: {} ({email})", self.name),
            None => format!("{kind}: {}", self.name),
        }
    }
}

/// Whether `s` looks like an email address: `local@domain`, no spaces, no URL.
fn is_email(s: &str) -> bool {
    s.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !domain.contains('@')
    }) && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && !s.contains("://")
}

/// Why an [`SbomInput`] cannot be turned into a document.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("image name is empty")]
    EmptyImageName,
    #[error("package {package:?}: {field} is empty")]
    EmptyField {
        package: String,
        field: &'static str,
    },
    #[error("package {name} ({architecture}) is listed twice")]
    DuplicatePackage { name: String, architecture: String },
    #[error("package {package}: file {path:?} is listed twice")]
    DuplicateFile { package: String, path: String },
    #[error("package {package}: file path {path:?} is not a path in the image")]
    BadFilePath { package: String, path: String },
    #[error("package {package}: license expression {expression:?} is not valid: {reason}")]
    BadLicenseExpression {
        package: String,
        expression: String,
        reason: String,
    },
    #[error("package {package}: license expression uses {id} but gives no text for it")]
    UndefinedLicenseRef { package: String, id: String },
    #[error("creation time {0} (SOURCE_DATE_EPOCH) is after the year 9999")]
    BadTimestamp(u64),
    #[error("failed to serialise the document")]
    Json(#[from] serde_json::Error),
}

/// A package ready for a document: validated, with its files sorted and paths normalised.
struct Checked<'a> {
    info: &'a PackageInfo,
    /// (path relative to the image root, without leading `/`, file)
    files: Vec<(String, &'a FileInfo)>,
    /// `LicenseRef-`s of the expression.
    license_refs: Vec<String>,
}

/// Validates the input and returns its packages sorted by name, architecture and version.
fn check(input: &SbomInput) -> Result<Vec<Checked<'_>>, SbomError> {
    if input.subject.name.trim().is_empty() {
        return Err(SbomError::EmptyImageName);
    }
    time::rfc3339(input.created)?;
    let mut seen = BTreeSet::new();
    let mut packages = Vec::with_capacity(input.packages.len());
    for info in &input.packages {
        for (field, value) in [
            ("name", &info.name),
            ("version", &info.version),
            ("architecture", &info.architecture),
            ("source name", &info.source_name),
            ("source version", &info.source_version),
            ("distro", &info.distro),
        ] {
            if value.trim().is_empty() {
                return Err(SbomError::EmptyField {
                    package: info.name.clone(),
                    field,
                });
            }
        }
        if !seen.insert((&info.name, &info.architecture)) {
            return Err(SbomError::DuplicatePackage {
                name: info.name.clone(),
                architecture: info.architecture.clone(),
            });
        }
        let mut files = Vec::with_capacity(info.files.len());
        for file in &info.files {
            let path = normalise_path(&file.path).ok_or_else(|| SbomError::BadFilePath {
                package: info.name.clone(),
                path: file.path.clone(),
            })?;
            files.push((path, file));
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(pair) = files.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(SbomError::DuplicateFile {
                package: info.name.clone(),
                path: pair[1].1.path.clone(),
            });
        }
        let license_refs = match &info.license.expression {
            None => Vec::new(),
            Some(expression) => {
                license_refs_of(expression).map_err(|reason| SbomError::BadLicenseExpression {
                    package: info.name.clone(),
                    expression: expression.clone(),
                    reason,
                })?
            }
        };
        if let Some(id) = license_refs
            .iter()
            .find(|id| !info.license.license_refs.contains_key(*id))
        {
            return Err(SbomError::UndefinedLicenseRef {
                package: info.name.clone(),
                id: id.clone(),
            });
        }
        packages.push(Checked {
            info,
            files,
            license_refs,
        });
    }
    packages.sort_by(|a, b| {
        (&a.info.name, &a.info.architecture, &a.info.version).cmp(&(
            &b.info.name,
            &b.info.architecture,
            &b.info.version,
        ))
    });
    Ok(packages)
}

/// `/usr/bin/x`, `./usr/bin/x` and `usr/bin/x` → `usr/bin/x`; `None` for empty paths, `..`,
/// and control characters.
fn normalise_path(path: &str) -> Option<String> {
    let trimmed = path.trim_start_matches("./").trim_start_matches('/');
    let ok = !trimmed.is_empty()
        && !trimmed.chars().any(char::is_control)
        && trimmed
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    ok.then(|| trimmed.to_owned())
}

/// Tokens of an SPDX license expression: identifiers, `(`, `)`.
fn expression_tokens(expression: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut start = None;
    for (i, c) in expression.char_indices() {
        if c.is_whitespace() || c == '(' || c == ')' {
            if let Some(s) = start.take() {
                tokens.push(&expression[s..i]);
            }
            if c == '(' || c == ')' {
                tokens.push(&expression[i..i + 1]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        tokens.push(&expression[s..]);
    }
    tokens
}

/// Checks the grammar of an SPDX license expression and returns its `LicenseRef-`s (whether
/// identifiers are on the SPDX list is left to the document's consumers).
fn license_refs_of(expression: &str) -> Result<Vec<String>, String> {
    struct Parser<'t> {
        tokens: Vec<&'t str>,
        pos: usize,
        refs: Vec<String>,
    }
    fn is_id(t: &str) -> bool {
        !matches!(t, "AND" | "OR" | "WITH" | "(" | ")")
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b':'))
    }
    impl Parser<'_> {
        fn peek(&self) -> Option<&str> {
            self.tokens.get(self.pos).copied()
        }
        fn expr(&mut self) -> Result<(), String> {
            self.term()?;
            while let Some("AND" | "OR") = self.peek() {
                self.pos += 1;
                self.term()?;
            }
            Ok(())
        }
        fn term(&mut self) -> Result<(), String> {
            match self.peek() {
                Some("(") => {
                    self.pos += 1;
                    self.expr()?;
                    if self.peek() != Some(")") {
                        return Err("unbalanced parenthesis".into());
                    }
                    self.pos += 1;
                    Ok(())
                }
                Some(t) if is_id(t) => {
                    if t.starts_with("LicenseRef-") {
                        self.refs.push(t.to_owned());
                    }
                    self.pos += 1;
                    if self.peek() == Some("WITH") {
                        self.pos += 1;
                        match self.peek() {
                            Some(e) if is_id(e) => self.pos += 1,
                            _ => return Err("WITH without an exception".into()),
                        }
                    }
                    Ok(())
                }
                Some(t) => Err(format!("unexpected {t:?}")),
                None => Err("unexpected end".into()),
            }
        }
    }
    let mut parser = Parser {
        tokens: expression_tokens(expression),
        pos: 0,
        refs: Vec::new(),
    };
    parser.expr()?;
    if let Some(t) = parser.peek() {
        return Err(format!("unexpected {t:?}"));
    }
    parser.refs.sort();
    parser.refs.dedup();
    Ok(parser.refs)
}

/// Replaces the identifiers of `expression` found in `renames`, keeping everything else.
fn rename_ids(expression: &str, renames: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(expression.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if !word.is_empty() {
            match renames(word) {
                Some(new) => out.push_str(&new),
                None => out.push_str(word),
            }
            word.clear();
        }
    };
    for c in expression.chars() {
        if c.is_whitespace() || c == '(' || c == ')' {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// A name-based (version 5) UUID for `name`, in the URL namespace of RFC 9562.
fn uuid_v5(name: &str) -> String {
    const NAMESPACE_URL: [u8; 16] = [
        0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30,
        0xc8,
    ];
    let mut hasher = Sha1::new();
    hasher.update(NAMESPACE_URL);
    hasher.update(name.as_bytes());
    let hash: [u8; 20] = hasher.finalize().into();
    let mut b = [0u8; 16];
    b.copy_from_slice(&hash[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The name the document identifiers are derived from: format, image digest and tool.
fn identity(format: &str, input: &SbomInput) -> String {
    format!(
        "urn:hardbox:sbom:{format}:{}:{}:{}-{}",
        input.subject.name, input.subject.manifest_digest, input.tool.name, input.tool.version
    )
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.name, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_v5_matches_python_uuid5() {
        // Python gives this for uuid.uuid5(uuid.NAMESPACE_URL, "https://www.python.org/").
        assert_eq!(
            uuid_v5("https://www.python.org/"),
            "5406f80d-92e9-51cd-a176-77445955e733"
        );
    }

    #[test]
    fn maintainer_fields_become_suppliers() {
        for (field, kind, name, email) in [
            (
                "Debian Python Team <team+python@tracker.debian.org>",
                SupplierKind::Organization,
                "Debian Python Team",
                Some("team+python@tracker.debian.org"),
            ),
            (
                "GNU Libc Maintainers <debian-glibc@lists.debian.org>",
                SupplierKind::Organization,
                "GNU Libc Maintainers",
                Some("debian-glibc@lists.debian.org"),
            ),
            (
                "Mark Brown <broonie@debian.org>",
                SupplierKind::Person,
                "Mark Brown",
                Some("broonie@debian.org"),
            ),
            ("Someone", SupplierKind::Person, "Someone", None),
            (
                "Google Cloud SDK <https://code.google.com/p/google-cloud-sdk/>",
                SupplierKind::Person,
                "Google Cloud SDK",
                None,
            ),
        ] {
            let s = Supplier::from_maintainer(field);
            assert_eq!(
                (s.kind, s.name.as_str(), s.email.as_deref()),
                (kind, name, email)
            );
        }
        assert_eq!(
            Supplier::from_maintainer("Mark Brown <broonie@debian.org>").to_spdx(),
            "Person: Mark Brown (broonie@debian.org)"
        );
    }

    #[test]
    fn expressions_are_checked_and_their_refs_listed() {
        assert_eq!(
            license_refs_of(
                "(MIT OR LicenseRef-b) AND GPL-2.0-only WITH Linux-syscall-note AND LicenseRef-a"
            )
            .unwrap(),
            vec!["LicenseRef-a".to_owned(), "LicenseRef-b".to_owned()]
        );
        for bad in [
            "",
            "MIT OR",
            "(MIT",
            "MIT)",
            "MIT WITH",
            "MIT GPL-2.0-only",
            "MIT, GPL",
        ] {
            assert!(license_refs_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn renaming_keeps_the_rest_of_the_expression() {
        let renamed = rename_ids("(LicenseRef-a OR MIT) AND LicenseRef-ab", &|id| {
            (id == "LicenseRef-a").then(|| "LicenseRef-a-1".to_owned())
        });
        assert_eq!(renamed, "(LicenseRef-a-1 OR MIT) AND LicenseRef-ab");
    }

    #[test]
    fn paths_are_normalised_or_rejected() {
        assert_eq!(normalise_path("/usr/bin/x").as_deref(), Some("usr/bin/x"));
        assert_eq!(normalise_path("./usr/bin/x").as_deref(), Some("usr/bin/x"));
        for bad in ["", "/", "usr/../etc", "usr//x", "a\nb", "usr/./x"] {
            assert_eq!(normalise_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn file_hasher_gives_both_digests() {
        let f = FileInfo::of("/x", b"abc");
        assert_eq!(f.size, 3);
        assert_eq!(f.sha256, Digest::of(b"abc"));
        assert_eq!(
            hex::encode(f.sha1),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
