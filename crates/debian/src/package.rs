//! Binary packages as a `Packages` index lists them, and the [`Universe`] of all packages the
//! resolver may choose from.
//!
//! A [`Package`] borrows every string from the index text it was parsed from (names, file names,
//! hashes, relation names, the raw paragraph), so the text must outlive it; only versions are
//! owned. The raw paragraph is kept because the image's `/var/lib/dpkg/status` is written from
//! it.
//!
//! `Provides` is parsed with the paragraph (the universe indexes it); `Pre-Depends`, `Depends`,
//! `Conflicts`, `Breaks` and `Replaces` are parsed when asked for ([`Package::depends`], …): a
//! resolution reads the relations of a few hundred packages out of tens of thousands, and parsing
//! (and later freeing) all of them would cost more than reading the whole index. A malformed
//! relation field is therefore reported when its package is considered, naming the package, the
//! field and its line.
//!
//! A [`Universe`] is built from one or more indexes, each tagged with a [`RepoId`] that the caller
//! maps back to the repository it came from. Its lookups are deterministic: the packages of one
//! name are ordered by version (highest first), then architecture, repository, file name and
//! hash, whatever the order of the indexes and of the paragraphs in them. A package listed twice
//! with the same name, architecture and (dpkg-equal) version is kept once: the copy from the
//! lowest [`RepoId`] wins (the caller numbers its repositories in priority order).

use std::collections::HashMap;
use std::fmt;
use std::ops::Index;

use crate::control::{self, ControlError, Paragraph};
use crate::relation::{self, Alternatives, Relation, RelationError};
use crate::version::{Version, VersionError};

/// Identifies the repository an index came from: an opaque number the caller maps back to a URL
/// (in a lockfile, the position of the repository in its list).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct RepoId(pub u32);

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `Multi-Arch`: how a package may be co-installed and satisfy dependencies across architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MultiArch {
    /// No field, or `no`: one architecture, satisfies only its own architecture's dependencies.
    #[default]
    No,
    /// `same`: co-installable for several architectures (at the same version).
    Same,
    /// `foreign`: satisfies dependencies of packages of any architecture.
    Foreign,
    /// `allowed`: satisfies `name:any` dependencies of packages of any architecture.
    Allowed,
}

/// `Priority`, from most to least important.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// `required`
    Required,
    /// `important`
    Important,
    /// `standard`
    Standard,
    /// `optional`
    Optional,
    /// `extra` (deprecated, sorts after `optional`)
    Extra,
    /// Any other value.
    Other,
}

impl Priority {
    fn parse(s: &str) -> Priority {
        const NAMES: [(&str, Priority); 5] = [
            ("required", Priority::Required),
            ("important", Priority::Important),
            ("standard", Priority::Standard),
            ("optional", Priority::Optional),
            ("extra", Priority::Extra),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map_or(Priority::Other, |&(_, p)| p)
    }
}

/// One binary package of a `Packages` index.
#[derive(Debug, Clone)]
pub struct Package<'a> {
    /// `Package`
    pub name: &'a str,
    /// `Version`
    pub version: Version,
    /// `Architecture` (`amd64`, …, or `all`).
    pub architecture: &'a str,
    /// `Multi-Arch`
    pub multi_arch: MultiArch,
    /// `Essential: yes`
    pub essential: bool,
    /// `Priority`, if given.
    pub priority: Option<Priority>,
    /// `Provides` (a version, if any, is exact).
    pub provides: Vec<Relation<'a>>,
    /// The relation fields parsed on demand: (value, line).
    pre_depends: Option<(&'a str, usize)>,
    depends: Option<(&'a str, usize)>,
    conflicts: Option<(&'a str, usize)>,
    breaks: Option<(&'a str, usize)>,
    replaces: Option<(&'a str, usize)>,
    /// `Filename`: the `.deb`'s path below the repository's root.
    pub filename: &'a str,
    /// `Size` of the `.deb` in bytes.
    pub size: u64,
    /// `SHA256` of the `.deb`, as written (hexadecimal).
    pub sha256: &'a str,
    /// The source package name: `Source` without its version, or the package name.
    pub source: &'a str,
    /// The version in `Source: name (version)`, when written; see [`Package::source_version`].
    pub source_version: Option<Version>,
    /// `Installed-Size` in KiB, if given.
    pub installed_size: Option<u64>,
    /// The whole paragraph as written (from its first field to the end of its last value).
    pub paragraph: &'a str,
    /// 1-based line of the paragraph in its index.
    pub line: usize,
    /// The repository the index came from.
    pub repo: RepoId,
}

impl<'a> Package<'a> {
    /// The source package's version: the one in `Source: name (version)`, else the package's.
    pub fn source_version(&self) -> &Version {
        self.source_version.as_ref().unwrap_or(&self.version)
    }

    /// `Pre-Depends`, parsed.
    pub fn pre_depends(&self) -> Result<Vec<Alternatives<'a>>, PackageError> {
        self.parse_dependencies(self.pre_depends, "Pre-Depends")
    }

    /// `Depends`, parsed.
    pub fn depends(&self) -> Result<Vec<Alternatives<'a>>, PackageError> {
        self.parse_dependencies(self.depends, "Depends")
    }

    /// `Conflicts`, parsed.
    pub fn conflicts(&self) -> Result<Vec<Relation<'a>>, PackageError> {
        self.parse_relations(self.conflicts, "Conflicts")
    }

    /// `Breaks`, parsed.
    pub fn breaks(&self) -> Result<Vec<Relation<'a>>, PackageError> {
        self.parse_relations(self.breaks, "Breaks")
    }

    /// `Replaces`, parsed.
    pub fn replaces(&self) -> Result<Vec<Relation<'a>>, PackageError> {
        self.parse_relations(self.replaces, "Replaces")
    }

    fn parse_dependencies(
        &self,
        field: Option<(&'a str, usize)>,
        name: &str,
    ) -> Result<Vec<Alternatives<'a>>, PackageError> {
        match field {
            None => Ok(Vec::new()),
            Some((text, line)) => {
                relation::parse_dependencies(name, text).map_err(|e| self.relation_error(line, e))
            }
        }
    }

    fn parse_relations(
        &self,
        field: Option<(&'a str, usize)>,
        name: &str,
    ) -> Result<Vec<Relation<'a>>, PackageError> {
        match field {
            None => Ok(Vec::new()),
            Some((text, line)) => {
                relation::parse_relations(name, text).map_err(|e| self.relation_error(line, e))
            }
        }
    }

    fn relation_error(&self, line: usize, error: RelationError) -> PackageError {
        PackageError {
            line,
            package: Some(self.name.to_owned()),
            kind: PackageErrorKind::Relation(error),
        }
    }

    /// `name version arch`, how messages name a package.
    pub fn display(&self) -> impl fmt::Display + '_ {
        DisplayPackage(self)
    }
}

struct DisplayPackage<'p, 'a>(&'p Package<'a>);

impl fmt::Display for DisplayPackage<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        write!(f, "{} {} ({})", p.name, p.version, p.architecture)
    }
}

/// What is wrong with a paragraph of a `Packages` index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageErrorKind {
    /// The control syntax is broken.
    #[error("{0}")]
    Syntax(String),
    /// A required field is absent.
    #[error("missing {0} field")]
    MissingField(&'static str),
    /// The package name is not valid.
    #[error("invalid package name {0:?}")]
    Name(String),
    /// A version does not parse.
    #[error("{field}: {error}")]
    Version {
        /// `Version` or `Source`.
        field: &'static str,
        /// The parse error.
        error: VersionError,
    },
    /// A relation field does not parse (the error names the field).
    #[error("{0}")]
    Relation(RelationError),
    /// A number field is not a number.
    #[error("{field}: {value:?} is not a number")]
    Number {
        /// `Size` or `Installed-Size`.
        field: &'static str,
        /// The value as written.
        value: String,
    },
    /// `SHA256` is not 64 hexadecimal digits.
    #[error("SHA256: {0:?} is not 64 hexadecimal digits")]
    Sha256(String),
    /// A field with a fixed set of values has another one.
    #[error("{field}: unknown value {value:?} (expected {expected})")]
    Value {
        /// The field name.
        field: &'static str,
        /// The value as written.
        value: String,
        /// The accepted values.
        expected: &'static str,
    },
}

/// An invalid paragraph of a `Packages` index, naming its line and (when known) the package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {}{kind}", package.as_deref().map(|p| format!("package {p}: ")).unwrap_or_default())]
pub struct PackageError {
    /// 1-based line of the offending field (or of the paragraph, for a missing field).
    pub line: usize,
    /// The package's name, if the paragraph has one.
    pub package: Option<String>,
    /// What is wrong.
    pub kind: PackageErrorKind,
}

impl From<ControlError> for PackageError {
    fn from(e: ControlError) -> Self {
        PackageError {
            line: e.line,
            package: None,
            kind: PackageErrorKind::Syntax(e.reason),
        }
    }
}

impl<'a> Package<'a> {
    /// Builds a package from one paragraph of `text` (the index the paragraph was parsed from,
    /// needed to borrow the raw paragraph).
    pub fn from_paragraph(
        text: &'a str,
        para: &Paragraph<'a>,
        repo: RepoId,
    ) -> Result<Package<'a>, PackageError> {
        let mut f = Fields::default();
        for field in &para.fields {
            let slot = match field.name.len() {
                4 if field.name.eq_ignore_ascii_case("Size") => &mut f.size,
                6 if field.name.eq_ignore_ascii_case("SHA256") => &mut f.sha256,
                6 if field.name.eq_ignore_ascii_case("Source") => &mut f.source,
                7 if field.name.eq_ignore_ascii_case("Package") => &mut f.package,
                7 if field.name.eq_ignore_ascii_case("Version") => &mut f.version,
                7 if field.name.eq_ignore_ascii_case("Depends") => &mut f.depends,
                6 if field.name.eq_ignore_ascii_case("Breaks") => &mut f.breaks,
                8 if field.name.eq_ignore_ascii_case("Filename") => &mut f.filename,
                8 if field.name.eq_ignore_ascii_case("Priority") => &mut f.priority,
                8 if field.name.eq_ignore_ascii_case("Provides") => &mut f.provides,
                8 if field.name.eq_ignore_ascii_case("Replaces") => &mut f.replaces,
                9 if field.name.eq_ignore_ascii_case("Essential") => &mut f.essential,
                9 if field.name.eq_ignore_ascii_case("Conflicts") => &mut f.conflicts,
                10 if field.name.eq_ignore_ascii_case("Multi-Arch") => &mut f.multi_arch,
                11 if field.name.eq_ignore_ascii_case("Pre-Depends") => &mut f.pre_depends,
                12 if field.name.eq_ignore_ascii_case("Architecture") => &mut f.architecture,
                14 if field.name.eq_ignore_ascii_case("Installed-Size") => &mut f.installed_size,
                _ => continue,
            };
            *slot = Some((field.value, field.line));
        }

        let (name, name_line) = f.package.ok_or(PackageError {
            line: para.line,
            package: None,
            kind: PackageErrorKind::MissingField("Package"),
        })?;
        let err = |line: usize, kind| PackageError {
            line,
            package: Some(name.to_owned()),
            kind,
        };
        let require = |v: Option<(&'a str, usize)>, field| {
            v.ok_or_else(|| err(para.line, PackageErrorKind::MissingField(field)))
        };
        if !relation::is_valid_package_name(name) {
            return Err(err(name_line, PackageErrorKind::Name(name.to_owned())));
        }
        let (version, line) = require(f.version, "Version")?;
        let version = Version::parse(version).map_err(|error| {
            err(
                line,
                PackageErrorKind::Version {
                    field: "Version",
                    error,
                },
            )
        })?;
        let (architecture, line) = require(f.architecture, "Architecture")?;
        if architecture.is_empty()
            || !architecture
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(err(
                line,
                PackageErrorKind::Value {
                    field: "Architecture",
                    value: architecture.to_owned(),
                    expected: "one architecture name",
                },
            ));
        }
        let multi_arch = match f.multi_arch {
            None => MultiArch::No,
            Some((v, line)) => match v {
                "no" => MultiArch::No,
                "same" => MultiArch::Same,
                "foreign" => MultiArch::Foreign,
                "allowed" => MultiArch::Allowed,
                _ => {
                    return Err(err(
                        line,
                        PackageErrorKind::Value {
                            field: "Multi-Arch",
                            value: v.to_owned(),
                            expected: "no, same, foreign or allowed",
                        },
                    ))
                }
            },
        };
        let essential = match f.essential {
            None | Some(("no", _)) => false,
            Some(("yes", _)) => true,
            Some((v, line)) => {
                return Err(err(
                    line,
                    PackageErrorKind::Value {
                        field: "Essential",
                        value: v.to_owned(),
                        expected: "yes or no",
                    },
                ))
            }
        };
        let number = |v: (&str, usize), field| {
            v.0.parse::<u64>().map_err(|_| {
                err(
                    v.1,
                    PackageErrorKind::Number {
                        field,
                        value: v.0.to_owned(),
                    },
                )
            })
        };
        let (source, source_version) = match f.source {
            None => (name, None),
            Some((v, line)) => {
                let (src, ver) = match v.split_once('(') {
                    None => (v.trim(), None),
                    Some((src, rest)) => {
                        let ver = rest.trim_end().strip_suffix(')').ok_or_else(|| {
                            err(
                                line,
                                PackageErrorKind::Value {
                                    field: "Source",
                                    value: v.to_owned(),
                                    expected: "name or name (version)",
                                },
                            )
                        })?;
                        let ver = Version::parse(ver).map_err(|error| {
                            err(
                                line,
                                PackageErrorKind::Version {
                                    field: "Source",
                                    error,
                                },
                            )
                        })?;
                        (src.trim(), Some(ver))
                    }
                };
                if !relation::is_valid_package_name(src) {
                    return Err(err(line, PackageErrorKind::Name(src.to_owned())));
                }
                (src, ver)
            }
        };
        let (sha256, line) = require(f.sha256, "SHA256")?;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err(line, PackageErrorKind::Sha256(sha256.to_owned())));
        }
        let (filename, _) = require(f.filename, "Filename")?;
        Ok(Package {
            name,
            version,
            architecture,
            multi_arch,
            essential,
            priority: f.priority.map(|(v, _)| Priority::parse(v)),
            provides: match f.provides {
                None => Vec::new(),
                Some((text, line)) => relation::parse_provides(text)
                    .map_err(|e| err(line, PackageErrorKind::Relation(e)))?,
            },
            pre_depends: f.pre_depends,
            depends: f.depends,
            conflicts: f.conflicts,
            breaks: f.breaks,
            replaces: f.replaces,
            filename,
            size: number(require(f.size, "Size")?, "Size")?,
            sha256,
            source,
            source_version,
            installed_size: f
                .installed_size
                .map(|v| number(v, "Installed-Size"))
                .transpose()?,
            paragraph: raw_paragraph(text, para),
            line: para.line,
            repo,
        })
    }
}

/// The fields a [`Package`] reads: (value, line).
#[derive(Default)]
struct Fields<'a> {
    package: Option<(&'a str, usize)>,
    version: Option<(&'a str, usize)>,
    architecture: Option<(&'a str, usize)>,
    multi_arch: Option<(&'a str, usize)>,
    essential: Option<(&'a str, usize)>,
    priority: Option<(&'a str, usize)>,
    pre_depends: Option<(&'a str, usize)>,
    depends: Option<(&'a str, usize)>,
    provides: Option<(&'a str, usize)>,
    conflicts: Option<(&'a str, usize)>,
    breaks: Option<(&'a str, usize)>,
    replaces: Option<(&'a str, usize)>,
    filename: Option<(&'a str, usize)>,
    size: Option<(&'a str, usize)>,
    sha256: Option<(&'a str, usize)>,
    source: Option<(&'a str, usize)>,
    installed_size: Option<(&'a str, usize)>,
}

/// The text of `para` within `text`: from its first field name to the end of its last value.
fn raw_paragraph<'a>(text: &'a str, para: &Paragraph<'a>) -> &'a str {
    // The paragraph's fields are slices of `text`; their offsets are found by address, which
    // needs no unsafe code. A slice that is not from `text` gives an empty paragraph.
    let base = text.as_ptr() as usize;
    let offset = |s: &str| (s.as_ptr() as usize).checked_sub(base);
    let (Some(first), Some(last)) = (para.fields.first(), para.fields.last()) else {
        return "";
    };
    match (offset(first.name), offset(last.value)) {
        (Some(start), Some(end)) => text.get(start..end + last.value.len()).unwrap_or(""),
        _ => "",
    }
}

/// Index of a package in a [`Universe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackageId(u32);

impl PackageId {
    /// The position in [`Universe::packages`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A package providing a (virtual) name: the package and the position of the `Provides` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provider {
    /// The providing package.
    pub package: PackageId,
    /// Index into its [`Package::provides`].
    pub entry: usize,
}

/// A `Packages` index that failed to parse: the repository it came from and the error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct IndexError {
    /// The repository whose index failed (the caller names it).
    pub repo: RepoId,
    /// What is wrong, with its line.
    pub error: PackageError,
}

/// All packages of one or more `Packages` indexes, indexed by name and by provided name.
#[derive(Debug, Default)]
pub struct Universe<'a> {
    packages: Vec<Package<'a>>,
    /// Name → range of `ids` holding the packages of that name, best first (see the module
    /// docs). One flat vector instead of a vector per name: tens of thousands fewer allocations.
    by_name: HashMap<&'a str, (u32, u32)>,
    ids: Vec<PackageId>,
    /// Provided name → providers, ordered by the providing packages' order.
    providers: HashMap<&'a str, Vec<Provider>>,
}

impl<'a> Universe<'a> {
    /// Parses the given indexes (repository, text) into one universe.
    pub fn new(
        indexes: impl IntoIterator<Item = (RepoId, &'a str)>,
    ) -> Result<Universe<'a>, IndexError> {
        let mut packages = Vec::new();
        for (repo, text) in indexes {
            packages.extend(parse_index(repo, text)?);
        }
        Ok(Universe::from_packages(packages))
    }

    /// Builds a universe from packages already parsed.
    pub fn from_packages(mut packages: Vec<Package<'a>>) -> Universe<'a> {
        let (mut by_name, mut ids) = index_names(&packages);
        // Drop duplicates (same name, architecture and version): the first in the order (lowest
        // repository) stays.
        let mut drop = vec![false; packages.len()];
        let mut any_dropped = false;
        for &(start, len) in by_name.values() {
            let same_name = &ids[start as usize..(start + len) as usize];
            for pair in same_name.windows(2) {
                let (a, b) = (&packages[pair[0].index()], &packages[pair[1].index()]);
                if a.architecture == b.architecture && a.version == b.version {
                    drop[pair[1].index()] = true;
                    any_dropped = true;
                }
            }
        }
        if any_dropped {
            let mut i = 0;
            packages.retain(|_| {
                i += 1;
                !drop[i - 1]
            });
            (by_name, ids) = index_names(&packages);
        }
        let mut providers: HashMap<&'a str, Vec<Provider>> = HashMap::new();
        for (i, p) in packages.iter().enumerate() {
            for (entry, r) in p.provides.iter().enumerate() {
                providers.entry(r.name).or_default().push(Provider {
                    package: package_id(i),
                    entry,
                });
            }
        }
        for list in providers.values_mut() {
            list.sort_by(|a, b| {
                let (pa, pb) = (&packages[a.package.index()], &packages[b.package.index()]);
                pa.name
                    .cmp(pb.name)
                    .then_with(|| compare_candidates(pa, pb))
                    .then(a.entry.cmp(&b.entry))
            });
        }
        Universe {
            packages,
            by_name,
            ids,
            providers,
        }
    }

    /// All packages (duplicates removed), in the order parsed.
    pub fn packages(&self) -> &[Package<'a>] {
        &self.packages
    }

    /// The number of packages.
    pub fn len(&self) -> usize {
        self.packages.len()
    }

    /// Whether there is no package at all.
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    /// The packages named `name`, highest version first (then by architecture, repository, file
    /// name and hash).
    pub fn named(&self, name: &str) -> &[PackageId] {
        self.by_name
            .get(name)
            .and_then(|&(start, len)| self.ids.get(start as usize..(start + len) as usize))
            .unwrap_or(&[])
    }

    /// The packages providing `name`, ordered by provider name, then as [`Universe::named`].
    pub fn providers(&self, name: &str) -> &[Provider] {
        self.providers.get(name).map_or(&[], Vec::as_slice)
    }

    /// The package with this name, architecture and version (as written), if any.
    pub fn find(&self, name: &str, architecture: &str, version: &str) -> Option<PackageId> {
        self.named(name).iter().copied().find(|&id| {
            let p = &self[id];
            p.architecture == architecture && p.version.as_str() == version
        })
    }
}

impl<'a> Index<PackageId> for Universe<'a> {
    type Output = Package<'a>;

    fn index(&self, id: PackageId) -> &Package<'a> {
        &self.packages[id.index()]
    }
}

/// Indexes larger than this are parsed by two threads, one half each.
const PARALLEL_ABOVE: usize = 4 << 20;

/// Parses every paragraph of one `Packages` index.
///
/// A large index (Debian main is ~50 MiB) is cut at a blank line near its middle and the halves
/// are parsed at the same time; the second half's line numbers are shifted, so packages and
/// errors name the same lines as a single pass would (an error in the first half wins).
pub fn parse_index(repo: RepoId, text: &str) -> Result<Vec<Package<'_>>, IndexError> {
    let split = (text.len() > PARALLEL_ABOVE)
        .then(|| text.get(text.len() / 2..))
        .flatten()
        .and_then(|tail| tail.find("\n\n"))
        .map(|i| text.len() / 2 + i + 1);
    let Some(split) = split else {
        return parse_part(repo, text, 0);
    };
    let (first, second) = text.split_at(split);
    let (a, b) = std::thread::scope(|scope| {
        let second = scope.spawn(|| {
            let offset = first.bytes().filter(|&b| b == b'\n').count();
            parse_part(repo, second, offset)
        });
        let a = parse_part(repo, first, 0);
        (a, second.join())
    });
    let b = b.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let mut packages = a?;
    packages.extend(b?);
    Ok(packages)
}

/// Parses `text`, a part of an index that starts after `line_offset` lines.
fn parse_part(
    repo: RepoId,
    text: &str,
    line_offset: usize,
) -> Result<Vec<Package<'_>>, IndexError> {
    let shift = |mut error: PackageError| {
        error.line += line_offset;
        IndexError { repo, error }
    };
    let mut packages = Vec::new();
    for para in control::paragraphs(text) {
        let para = para.map_err(|e| shift(e.into()))?;
        let mut p = Package::from_paragraph(text, &para, repo).map_err(shift)?;
        if line_offset > 0 {
            p.line += line_offset;
            for (_, line) in [
                &mut p.pre_depends,
                &mut p.depends,
                &mut p.conflicts,
                &mut p.breaks,
                &mut p.replaces,
            ]
            .into_iter()
            .flatten()
            {
                *line += line_offset;
            }
        }
        packages.push(p);
    }
    Ok(packages)
}

fn package_id(i: usize) -> PackageId {
    // A universe holds far fewer than 2^32 packages (Debian main has ~65,000).
    PackageId(u32::try_from(i).unwrap_or(u32::MAX))
}

/// Groups packages by name: name → (start, length) in the returned vector, each group ordered by
/// [`compare_candidates`].
fn index_names<'a>(packages: &[Package<'a>]) -> (HashMap<&'a str, (u32, u32)>, Vec<PackageId>) {
    let mut by_name: HashMap<&'a str, (u32, u32)> = HashMap::with_capacity(packages.len());
    for p in packages {
        by_name.entry(p.name).or_insert((0, 0)).1 += 1;
    }
    // Turn counts into start offsets; the second pass fills each range and counts it again.
    let mut next = 0;
    for range in by_name.values_mut() {
        let count = range.1;
        *range = (next, 0);
        next += count;
    }
    let mut ids = vec![PackageId(0); packages.len()];
    for (i, p) in packages.iter().enumerate() {
        if let Some(range) = by_name.get_mut(p.name) {
            ids[(range.0 + range.1) as usize] = package_id(i);
            range.1 += 1;
        }
    }
    for &(start, len) in by_name.values() {
        if len > 1 {
            ids[start as usize..(start + len) as usize]
                .sort_by(|&a, &b| compare_candidates(&packages[a.index()], &packages[b.index()]));
        }
    }
    (by_name, ids)
}

/// The order of packages of one name: highest version first, then architecture, repository,
/// version as written, file name, hash and finally the paragraph itself, so that the order never
/// depends on the order of parsing.
fn compare_candidates(a: &Package<'_>, b: &Package<'_>) -> std::cmp::Ordering {
    b.version
        .cmp(&a.version)
        .then_with(|| a.architecture.cmp(b.architecture))
        .then(a.repo.cmp(&b.repo))
        .then_with(|| a.version.as_str().cmp(b.version.as_str()))
        .then_with(|| a.filename.cmp(b.filename))
        .then_with(|| a.sha256.cmp(b.sha256))
        .then_with(|| a.paragraph.cmp(b.paragraph))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "3a2118df47bf3f04285649f0455c2fc6fe2dc7f0b237073038aa00af41f0d5f2";

    fn para(fields: &str) -> String {
        format!("{fields}Filename: pool/x.deb\nSize: 10\nSHA256: {SHA}\n")
    }

    fn one(text: &str) -> Result<Package<'_>, PackageError> {
        let p = control::parse(text).unwrap().remove(0);
        Package::from_paragraph(text, &p, RepoId(0))
    }

    #[test]
    fn parses_a_packages_paragraph() {
        let text = "Package: libpython3.11-stdlib\n\
                    Source: python3.11 (3.11.2-6+deb12u6)\n\
                    Version: 3.11.2-6+deb12u6\n\
                    Installed-Size: 8412\n\
                    Architecture: amd64\n\
                    Multi-Arch: same\n\
                    Priority: optional\n\
                    Pre-Depends: dpkg (>= 1.15.6~)\n\
                    Depends: libpython3.11-minimal (= 3.11.2-6+deb12u6), media-types | mime-support,\n libc6 (>= 2.34)\n\
                    Provides: libpython3-stdlib-abi (= 3.11)\n\
                    Breaks: python3.11-minimal (<< 3.11.2)\n\
                    Conflicts: python3-xyz\n\
                    Replaces: python3.11-minimal (<< 3.11.2)\n\
                    Description: Interactive high-level object-oriented language\n\
                    Filename: pool/main/p/python3.11/libpython3.11-stdlib_3.11.2-6+deb12u6_amd64.deb\n\
                    Size: 1797000\n\
                    SHA256: 3a2118df47bf3f04285649f0455c2fc6fe2dc7f0b237073038aa00af41f0d5f2\n\
                    \n";
        let p = one(text).unwrap();
        assert_eq!(p.name, "libpython3.11-stdlib");
        assert_eq!(p.version.as_str(), "3.11.2-6+deb12u6");
        assert_eq!(p.architecture, "amd64");
        assert_eq!(p.multi_arch, MultiArch::Same);
        assert_eq!(p.priority, Some(Priority::Optional));
        assert!(!p.essential);
        assert_eq!(p.pre_depends().unwrap().len(), 1);
        let deps: Vec<String> = p
            .depends()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            deps,
            [
                "libpython3.11-minimal (= 3.11.2-6+deb12u6)",
                "media-types | mime-support",
                "libc6 (>= 2.34)"
            ]
        );
        assert_eq!(p.provides[0].to_string(), "libpython3-stdlib-abi (= 3.11)");
        assert_eq!(p.breaks().unwrap()[0].name, "python3.11-minimal");
        assert_eq!(p.conflicts().unwrap()[0].name, "python3-xyz");
        assert_eq!(p.replaces().unwrap().len(), 1);
        assert_eq!(p.size, 1_797_000);
        assert_eq!(p.installed_size, Some(8412));
        assert_eq!(p.sha256, SHA);
        assert_eq!(p.source, "python3.11");
        assert_eq!(p.source_version().as_str(), "3.11.2-6+deb12u6");
        assert!(p.paragraph.starts_with("Package: libpython3.11-stdlib\n"));
        assert!(p.paragraph.ends_with(SHA), "{:?}", p.paragraph);
        assert_eq!(p.line, 1);
    }

    #[test]
    fn source_defaults_to_the_package() {
        let text = para("Package: a\nVersion: 1:2.0-1\nArchitecture: all\nEssential: yes\n");
        let p = one(&text).unwrap();
        assert_eq!((p.source, p.source_version().as_str()), ("a", "1:2.0-1"));
        assert_eq!(p.source_version, None);
        assert!(p.essential);
        assert_eq!(p.multi_arch, MultiArch::No);
        assert_eq!(p.priority, None);
        let text = para("Package: b\nSource: bsrc\nVersion: 1\nArchitecture: all\n");
        let p = one(&text).unwrap();
        assert_eq!((p.source, p.source_version().as_str()), ("bsrc", "1"));
    }

    #[test]
    fn errors_name_line_package_and_field() {
        for (fields, expected) in [
            ("Version: 1\nArchitecture: all\n", "line 1: missing Package field"),
            ("Package: a\nArchitecture: all\n", "line 1: package a: missing Version field"),
            ("Package: a\nVersion: 1.0-\nArchitecture: all\n", "line 2: package a: Version: invalid version \"1.0-\": revision number is empty"),
            ("Package: a\nVersion: 1\n", "line 1: package a: missing Architecture field"),
            ("Package: a\nVersion: 1\nArchitecture: all\nProvides: c (>= 1)\n", "line 4: package a: Provides: only exact versions (=) may be provided in \"c (>= 1)\""),
            ("Package: a\nVersion: 1\nArchitecture: all\nMulti-Arch: maybe\n", "line 4: package a: Multi-Arch: unknown value \"maybe\" (expected no, same, foreign or allowed)"),
            ("Package: a\nVersion: 1\nArchitecture: all\nEssential: true\n", "line 4: package a: Essential: unknown value \"true\" (expected yes or no)"),
            ("Package: a\nVersion: 1\nArchitecture: all\nInstalled-Size: 1k\n", "line 4: package a: Installed-Size: \"1k\" is not a number"),
            ("Package: a\nVersion: 1\nArchitecture: all\nSource: s (1.0\n", "line 4: package a: Source: unknown value \"s (1.0\" (expected name or name (version))"),
            ("Package: a b\nVersion: 1\nArchitecture: all\n", "line 1: package a b: invalid package name \"a b\""),
        ] {
            let text = para(fields);
            assert_eq!(one(&text).unwrap_err().to_string(), expected, "{fields:?}");
        }
        // Relation fields other than Provides are checked when read.
        let text =
            para("Package: a\nVersion: 1\nArchitecture: all\nDepends: b (>= )\nBreaks: c | d\n");
        let p = one(&text).unwrap();
        assert_eq!(
            p.depends().unwrap_err().to_string(),
            "line 4: package a: Depends: missing version in \"b (>= )\""
        );
        assert_eq!(
            p.breaks().unwrap_err().to_string(),
            "line 5: package a: Breaks: alternatives (|) are not allowed in Breaks in \"c | d\""
        );
        let text = format!(
            "Package: a\nVersion: 1\nArchitecture: all\nFilename: f\nSize: x\nSHA256: {SHA}\n"
        );
        assert_eq!(
            one(&text).unwrap_err().to_string(),
            "line 5: package a: Size: \"x\" is not a number"
        );
        let text = "Package: a\nVersion: 1\nArchitecture: all\nFilename: f\nSize: 1\nSHA256: 00\n";
        assert_eq!(
            one(text).unwrap_err().to_string(),
            "line 6: package a: SHA256: \"00\" is not 64 hexadecimal digits"
        );
    }

    #[test]
    fn universe_orders_dedups_and_indexes_provides() {
        let main = format!(
            "{}\n{}\n{}\n{}",
            para("Package: a\nVersion: 1.0\nArchitecture: amd64\n"),
            para("Package: a\nVersion: 2.0\nArchitecture: amd64\nProvides: v (= 2)\n"),
            para("Package: b\nVersion: 1\nArchitecture: all\nProvides: v\n"),
            para("Package: a\nVersion: 2.0\nArchitecture: i386\n"),
        );
        // The same a 2.0 amd64 again, from a later repository and spelled 2.0-0: a duplicate.
        let updates = para("Package: a\nVersion: 2.0-0\nArchitecture: amd64\n");
        let u = Universe::new([(RepoId(1), updates.as_str()), (RepoId(0), main.as_str())]).unwrap();
        assert_eq!(u.len(), 4);
        let named: Vec<String> = u
            .named("a")
            .iter()
            .map(|&id| u[id].display().to_string())
            .collect();
        assert_eq!(named, ["a 2.0 (amd64)", "a 2.0 (i386)", "a 1.0 (amd64)"]);
        assert_eq!(u[u.named("a")[0]].repo, RepoId(0));
        let providers: Vec<&str> = u.providers("v").iter().map(|p| u[p.package].name).collect();
        assert_eq!(providers, ["a", "b"]);
        assert!(u.named("v").is_empty());
        assert!(u.find("a", "i386", "2.0").is_some());
        assert!(u.find("a", "amd64", "2.0-0").is_none());

        let e = Universe::new([(RepoId(3), "Package: x\n")]).unwrap_err();
        assert_eq!(e.repo, RepoId(3));
        assert_eq!(e.to_string(), "line 1: package x: missing Version field");
        let e = Universe::new([(RepoId(0), "Package: x\nbroken\n")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2: expected `Name: value`, found \"broken\""
        );
    }

    /// An index large enough to be parsed in two halves: the same packages, lines and errors as
    /// parsing it in one pass.
    #[test]
    fn large_index_parsed_in_halves_keeps_lines() {
        let mut text = String::new();
        let mut n = 0;
        while text.len() <= PARALLEL_ABOVE + 1000 {
            text.push_str(&para(&format!(
                "Package: p{n}\nVersion: 1\nArchitecture: all\nDepends: q{n}\n"
            )));
            text.push('\n');
            n += 1;
        }
        let halves = parse_index(RepoId(0), &text).unwrap();
        let single = parse_part(RepoId(0), &text, 0).unwrap();
        assert_eq!(halves.len(), n);
        for (a, b) in halves.iter().zip(&single) {
            assert_eq!((a.name, a.line, a.paragraph), (b.name, b.line, b.paragraph));
            assert_eq!(a.depends(), b.depends());
        }
        // An error in the second half names its line in the whole text.
        let lines = text.lines().count();
        let mut broken = text.clone();
        broken.push_str("Package: broken\n");
        let e = parse_index(RepoId(0), &broken).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("line {}: package broken: missing Version field", lines + 1)
        );
        // So does a relation error, found when the field is read.
        let mut late = text.clone();
        late.push_str(&para(
            "Package: late\nVersion: 1\nArchitecture: all\nDepends: (\n",
        ));
        let packages = parse_index(RepoId(0), &late).unwrap();
        let p = packages.last().unwrap();
        assert_eq!(p.line, lines + 1);
        assert_eq!(
            p.depends().unwrap_err().to_string(),
            format!(
                "line {}: package late: Depends: missing package name in \"(\"",
                lines + 4
            )
        );
    }
}
