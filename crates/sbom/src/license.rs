//! Licenses declared by Debian packages, read from their machine-readable copyright files.
//!
//! A Debian package ships `/usr/share/doc/PACKAGE/copyright`. When it follows the
//! [machine-readable format](https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/)
//! (DEP-5: a header paragraph with `Format:`, then `Files:` paragraphs each with a `License:`
//! field, and stand-alone `License:` paragraphs holding texts), [`from_copyright`] turns it into an
//! SPDX license expression:
//!
//! - the header's `License:` field, when present, is the package's declared license; otherwise the
//!   distinct `License:` values of the `Files:` paragraphs are joined with `AND`, in the order
//!   written (a package holds all of those files);
//! - inside one value, Debian's `or` (and `and/or`), `and`, `with … exception` and the comma (which makes a
//!   lower-precedence group: `A or B, and C` is `(A OR B) AND C`) become `OR`, `AND` and `WITH`;
//! - Debian short names become SPDX identifiers (`GPL-2+` → `GPL-2.0-or-later`, `Expat` → `MIT`);
//!   a name with no SPDX identifier becomes `LicenseRef-<name>` with its text (from the file's
//!   stand-alone paragraph) in [`DeclaredLicense::license_refs`], so a document that uses it can
//!   define it.
//!
//! Files in any other format give `NOASSERTION` ([`DeclaredLicense::expression`] is `None`): they
//! are prose, and guessing a license from prose is not a declaration. Problems inside a DEP-5
//! file never fail: they come back as [`LicenseWarning`]s with the line they are on.

use std::collections::BTreeMap;
use std::fmt;

use debian::control;

/// The license a package declares: an SPDX expression and the texts of its `LicenseRef-`s.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeclaredLicense {
    /// An SPDX license expression; `None` means `NOASSERTION` (nothing machine-readable).
    pub expression: Option<String>,
    /// The text of every `LicenseRef-` identifier in `expression`, by identifier.
    pub license_refs: BTreeMap<String, String>,
}

impl DeclaredLicense {
    /// No assertion: the license is not known.
    pub fn noassertion() -> DeclaredLicense {
        DeclaredLicense::default()
    }

    /// The expression, or `NOASSERTION`.
    pub fn spdx_expression(&self) -> &str {
        self.expression.as_deref().unwrap_or("NOASSERTION")
    }
}

/// Which format a copyright file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyrightFormat {
    /// Machine-readable (DEP-5): starts with a `Format:` field.
    MachineReadable,
    /// Anything else (free text); its license is `NOASSERTION`.
    FreeForm,
}

/// Something in a machine-readable copyright file that could not be read as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LicenseWarning {
    /// The file is not valid deb822; its license is `NOASSERTION`.
    Syntax { line: usize, reason: String },
    /// A `License:` field without a short name; the paragraph adds nothing to the expression.
    EmptyLicense { line: usize },
    /// A `License:` value that is not an expression of short names; it is kept whole as one
    /// `LicenseRef-`.
    Unparsable { line: usize, value: String },
    /// No paragraph names a license; the license is `NOASSERTION`.
    NoLicense,
}

impl fmt::Display for LicenseWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LicenseWarning::Syntax { line, reason } => {
                write!(f, "line {line}: not a deb822 file ({reason}); license not asserted")
            }
            LicenseWarning::EmptyLicense { line } => {
                write!(f, "line {line}: License field without a short name, ignored")
            }
            LicenseWarning::Unparsable { line, value } => write!(
                f,
                "line {line}: license {value:?} is not an expression of short names; kept as one license reference"
            ),
            LicenseWarning::NoLicense => f.write_str("no License field; license not asserted"),
        }
    }
}

/// What [`from_copyright`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub format: CopyrightFormat,
    pub license: DeclaredLicense,
    pub warnings: Vec<LicenseWarning>,
}

/// Reads the declared license from the text of a Debian copyright file.
pub fn from_copyright(text: &str) -> Detection {
    let mut detection = Detection {
        format: CopyrightFormat::FreeForm,
        license: DeclaredLicense::noassertion(),
        warnings: Vec::new(),
    };
    let first_line = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'));
    let machine_readable = first_line.is_some_and(|l| {
        l.split_once(':')
            .is_some_and(|(name, _)| name.eq_ignore_ascii_case("Format"))
    });
    if !machine_readable {
        return detection;
    }
    detection.format = CopyrightFormat::MachineReadable;
    let paragraphs = match control::parse(text) {
        Ok(p) => p,
        Err(e) => {
            detection.warnings.push(LicenseWarning::Syntax {
                line: e.line,
                reason: e.reason,
            });
            return detection;
        }
    };

    // Texts by normalised short name: stand-alone paragraphs first, then texts given inline in
    // a Files paragraph for a single name.
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    let mut inline_texts: Vec<(String, String)> = Vec::new();
    // The License fields of the Files paragraphs, and the header's.
    let mut file_licenses: Vec<&control::Field<'_>> = Vec::new();
    let mut header_license = None;
    for (index, paragraph) in paragraphs.iter().enumerate() {
        let Some(field) = paragraph.field("License") else {
            continue;
        };
        let mut lines = field.lines();
        let name = normalise_space(lines.next().unwrap_or_default());
        let body = lines.collect::<Vec<_>>().join("\n");
        let body = body.trim_matches('\n').to_owned();
        if index == 0 && paragraph.field("Format").is_some() {
            header_license = Some(field);
        } else if paragraph.field("Files").is_some() {
            file_licenses.push(field);
            if !body.is_empty() {
                inline_texts.push((name.to_ascii_lowercase(), body));
            }
        } else if !body.is_empty() {
            texts.entry(name.to_ascii_lowercase()).or_insert(body);
        }
    }
    for (name, body) in inline_texts {
        texts.entry(name).or_insert(body);
    }

    let fields: Vec<&control::Field<'_>> = match header_license {
        Some(field) if !field.lines().next().unwrap_or_default().trim().is_empty() => {
            vec![field]
        }
        _ => file_licenses,
    };
    let mut parts: Vec<Expr> = Vec::new();
    let mut refs = BTreeMap::new();
    for field in fields {
        let value = normalise_space(field.lines().next().unwrap_or_default());
        if value.is_empty() {
            detection
                .warnings
                .push(LicenseWarning::EmptyLicense { line: field.line });
            continue;
        }
        let expr = match parse_debian_expression(&value) {
            Some(expr) => expr,
            None => {
                detection.warnings.push(LicenseWarning::Unparsable {
                    line: field.line,
                    value: value.clone(),
                });
                Expr::Unknown(value)
            }
        };
        let expr = expr.to_spdx(&texts, &mut refs);
        if !parts.contains(&expr) {
            parts.push(expr);
        }
    }
    if parts.is_empty() {
        if detection.warnings.is_empty() {
            detection.warnings.push(LicenseWarning::NoLicense);
        }
        return detection;
    }
    let expr = if parts.len() == 1 {
        parts.remove(0)
    } else {
        Expr::And(parts.into_iter().flat_map(Expr::into_and_terms).collect())
    };
    detection.license = DeclaredLicense {
        expression: Some(expr.render()),
        license_refs: refs,
    };
    detection
}

/// The SPDX identifier (or `LicenseRef-`) for one Debian license short name, e.g. `GPL-2+` →
/// `GPL-2.0-or-later`. `Perl` maps to an expression (`Artistic-1.0-Perl OR GPL-1.0-or-later`).
pub fn spdx_id(short_name: &str) -> String {
    Expr::License(short_name.to_owned())
        .to_spdx(&BTreeMap::new(), &mut BTreeMap::new())
        .render()
}

fn normalise_space(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A license expression tree. Debian leaves hold short names as written; SPDX leaves hold
/// identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    /// A Debian short name.
    License(String),
    /// A Debian short name with an exception: (name, exception words).
    With(String, String),
    /// A value kept whole (free text).
    Unknown(String),
    /// An SPDX identifier or `id WITH exception` (already rendered, no operators outside WITH).
    Spdx(String),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

impl Expr {
    fn into_and_terms(self) -> Vec<Expr> {
        match self {
            Expr::And(terms) => terms,
            other => vec![other],
        }
    }

    /// Maps Debian leaves to SPDX leaves, recording the texts of the `LicenseRef-`s it makes.
    fn to_spdx(
        &self,
        texts: &BTreeMap<String, String>,
        refs: &mut BTreeMap<String, String>,
    ) -> Expr {
        match self {
            Expr::License(name) => match map_name(name) {
                Mapped::Spdx(id) => Expr::Spdx(id),
                Mapped::Expr(expr) => expr,
                Mapped::Unknown => license_ref(name, name, texts, refs),
            },
            Expr::With(name, exception) => {
                let written = format!("{name} with {exception} exception");
                match (map_name(name), map_exception(name, exception)) {
                    (Mapped::Spdx(id), Some(exception)) => {
                        Expr::Spdx(format!("{id} WITH {exception}"))
                    }
                    _ => license_ref(&written, &written, texts, refs),
                }
            }
            Expr::Unknown(value) => license_ref(value, value, texts, refs),
            Expr::Spdx(id) => Expr::Spdx(id.clone()),
            Expr::And(terms) => simplify(terms.iter().map(|t| t.to_spdx(texts, refs)), true),
            Expr::Or(terms) => simplify(terms.iter().map(|t| t.to_spdx(texts, refs)), false),
        }
    }

    fn render(&self) -> String {
        match self {
            Expr::License(s) | Expr::Unknown(s) | Expr::Spdx(s) => s.clone(),
            Expr::With(name, exception) => format!("{name} WITH {exception}"),
            Expr::And(terms) => join(terms, " AND "),
            Expr::Or(terms) => join(terms, " OR "),
        }
    }
}

fn join(terms: &[Expr], operator: &str) -> String {
    terms
        .iter()
        .map(|t| match t {
            Expr::And(_) | Expr::Or(_) => format!("({})", t.render()),
            _ => t.render(),
        })
        .collect::<Vec<_>>()
        .join(operator)
}

/// Flattens nested operators of the same kind and drops repeated terms.
fn simplify(terms: impl Iterator<Item = Expr>, and: bool) -> Expr {
    let mut out: Vec<Expr> = Vec::new();
    for term in terms {
        let flat = match (term, and) {
            (Expr::And(inner), true) | (Expr::Or(inner), false) => inner,
            (other, _) => vec![other],
        };
        for t in flat {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    if out.len() == 1 {
        out.remove(0)
    } else if and {
        Expr::And(out)
    } else {
        Expr::Or(out)
    }
}

fn license_ref(
    name: &str,
    text_key: &str,
    texts: &BTreeMap<String, String>,
    refs: &mut BTreeMap<String, String>,
) -> Expr {
    let id = license_ref_id(name);
    let text = texts
        .get(&normalise_space(text_key).to_ascii_lowercase())
        .cloned()
        .unwrap_or_else(|| {
            format!(
                "The Debian copyright file names this license {name:?} without giving its text."
            )
        });
    refs.entry(id.clone()).or_insert(text);
    Expr::Spdx(id)
}

/// `LicenseRef-` followed by `name` reduced to the characters SPDX allows (`A-Za-z0-9.-`).
fn license_ref_id(name: &str) -> String {
    if name.eq_ignore_ascii_case("public-domain")
        || name.eq_ignore_ascii_case("public domain")
        || name.eq_ignore_ascii_case("pd")
    {
        return "LicenseRef-public-domain".to_owned();
    }
    let mut id = String::new();
    for c in name.chars() {
        match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '.' => id.push(c),
            '+' => id.push_str("-plus"),
            _ => {
                if !id.ends_with('-') {
                    id.push('-');
                }
            }
        }
    }
    let mut id = id.trim_matches('-').to_owned();
    // Keep identifiers of free-text values readable.
    if id.len() > 64 {
        id.truncate(64);
        id = id.trim_end_matches('-').to_owned();
    }
    if id.is_empty() {
        id.push_str("unknown");
    }
    format!("LicenseRef-{id}")
}

/// Parses a Debian `License:` first line. `None` when it is not an expression of short names
/// (free text, a dangling operator).
fn parse_debian_expression(value: &str) -> Option<Expr> {
    // Tokens: words, with a trailing comma split off as its own token.
    let mut tokens: Vec<&str> = Vec::new();
    for word in value.split_whitespace() {
        match word.strip_suffix(',') {
            Some(w) => {
                if !w.is_empty() {
                    tokens.push(w);
                }
                tokens.push(",");
            }
            None => tokens.push(word),
        }
    }
    // Comma groups: `A or B, and C` → [(None, "A or B"), (Some(and), "C")].
    let mut groups: Vec<Expr> = Vec::new();
    let mut operators: Vec<bool> = Vec::new(); // true = and
    for (i, group) in tokens.split(|t| *t == ",").enumerate() {
        let mut group = group;
        if i > 0 {
            let (first, rest) = group.split_first()?;
            if first.eq_ignore_ascii_case("and") {
                operators.push(true);
            } else if first.eq_ignore_ascii_case("or") {
                operators.push(false);
            } else {
                return None;
            }
            group = rest;
        }
        groups.push(parse_or(group)?);
    }
    let mut iter = groups.into_iter();
    let mut expr = iter.next()?;
    for (next, and) in iter.zip(operators) {
        expr = if and {
            Expr::And(vec![expr, next])
        } else {
            Expr::Or(vec![expr, next])
        };
    }
    Some(expr)
}

fn parse_or(tokens: &[&str]) -> Option<Expr> {
    let terms = tokens
        .split(|t| t.eq_ignore_ascii_case("or") || t.eq_ignore_ascii_case("and/or"))
        .map(parse_and)
        .collect::<Option<Vec<_>>>()?;
    Some(if terms.len() == 1 {
        terms.into_iter().next()?
    } else {
        Expr::Or(terms)
    })
}

fn parse_and(tokens: &[&str]) -> Option<Expr> {
    let terms = tokens
        .split(|t| t.eq_ignore_ascii_case("and"))
        .map(parse_atom)
        .collect::<Option<Vec<_>>>()?;
    Some(if terms.len() == 1 {
        terms.into_iter().next()?
    } else {
        Expr::And(terms)
    })
}

/// `NAME` or `NAME with WORDS… exception`.
fn parse_atom(tokens: &[&str]) -> Option<Expr> {
    match tokens {
        [name] => Some(Expr::License((*name).to_owned())),
        [name, with, words @ ..] if with.eq_ignore_ascii_case("with") && !words.is_empty() => {
            let words = match words.split_last() {
                Some((last, rest))
                    if last.eq_ignore_ascii_case("exception") && !rest.is_empty() =>
                {
                    rest
                }
                _ => words,
            };
            Some(Expr::With((*name).to_owned(), words.join(" ")))
        }
        _ => None,
    }
}

enum Mapped {
    Spdx(String),
    Expr(Expr),
    Unknown,
}

/// Debian short names (lowercase) whose SPDX identifier differs by more than case.
const ALIASES: &[(&str, &str)] = &[
    ("apache-1", "Apache-1.0"),
    ("apache-2", "Apache-2.0"),
    ("artistic", "Artistic-1.0-Perl"),
    ("artistic-1", "Artistic-1.0"),
    ("artistic-2", "Artistic-2.0"),
    ("boost-1.0", "BSL-1.0"),
    ("bsd-2", "BSD-2-Clause"),
    ("bsd-2-clause-freebsd", "BSD-2-Clause"),
    ("bsd-3", "BSD-3-Clause"),
    ("bsd-4", "BSD-4-Clause"),
    ("cc0", "CC0-1.0"),
    ("cecill", "CECILL-2.1"),
    ("efl-1", "EFL-1.0"),
    ("efl-2", "EFL-2.0"),
    ("expat", "MIT"),
    ("libpng-1.0", "Libpng"),
    ("mit/x11", "X11"),
    ("mpl-1", "MPL-1.0"),
    ("mpl-2", "MPL-2.0"),
    ("ofl-1", "OFL-1.0"),
    ("openldap-2.8", "OLDAP-2.8"),
    ("psf-2", "PSF-2.0"),
    ("python", "PSF-2.0"),
    ("python-cnri", "CNRI-Python"),
    ("zope-1.1", "ZPL-1.1"),
    ("zope-2.0", "ZPL-2.0"),
    ("zope-2.1", "ZPL-2.1"),
];

/// SPDX license identifiers accepted when a Debian name is one of them (compared ignoring case).
/// All are on the SPDX license list; `tests::known_ids_are_canonical` checks their spelling.
const SPDX_IDS: &[&str] = &[
    "0BSD",
    "AFL-1.1",
    "AFL-1.2",
    "AFL-2.0",
    "AFL-2.1",
    "AFL-3.0",
    "AGPL-1.0-only",
    "AGPL-1.0-or-later",
    "AGPL-3.0-only",
    "AGPL-3.0-or-later",
    "Apache-1.0",
    "Apache-1.1",
    "Apache-2.0",
    "APSL-2.0",
    "Artistic-1.0",
    "Artistic-1.0-Perl",
    "Artistic-1.0-cl8",
    "Artistic-2.0",
    "Beerware",
    "BSD-1-Clause",
    "BSD-2-Clause",
    "BSD-2-Clause-Patent",
    "BSD-3-Clause",
    "BSD-3-Clause-Attribution",
    "BSD-3-Clause-Clear",
    "BSD-3-Clause-LBNL",
    "BSD-4-Clause",
    "BSD-4-Clause-UC",
    "BSD-Source-Code",
    "BSL-1.0",
    "bzip2-1.0.6",
    "CC-BY-1.0",
    "CC-BY-2.0",
    "CC-BY-2.5",
    "CC-BY-3.0",
    "CC-BY-4.0",
    "CC-BY-SA-1.0",
    "CC-BY-SA-2.0",
    "CC-BY-SA-2.5",
    "CC-BY-SA-3.0",
    "CC-BY-SA-4.0",
    "CC-BY-NC-4.0",
    "CC-BY-ND-4.0",
    "CC-PDDC",
    "CC0-1.0",
    "CDDL-1.0",
    "CDDL-1.1",
    "CECILL-2.0",
    "CECILL-2.1",
    "CECILL-B",
    "CECILL-C",
    "CNRI-Python",
    "CPL-1.0",
    "curl",
    "ECL-2.0",
    "EFL-1.0",
    "EFL-2.0",
    "EPL-1.0",
    "EPL-2.0",
    "EUPL-1.1",
    "EUPL-1.2",
    "FSFAP",
    "FSFUL",
    "FSFULLR",
    "FTL",
    "GFDL-1.1-only",
    "GFDL-1.1-or-later",
    "GFDL-1.2-only",
    "GFDL-1.2-or-later",
    "GFDL-1.3-only",
    "GFDL-1.3-or-later",
    "GPL-1.0-only",
    "GPL-1.0-or-later",
    "GPL-2.0-only",
    "GPL-2.0-or-later",
    "GPL-3.0-only",
    "GPL-3.0-or-later",
    "HPND",
    "ICU",
    "IJG",
    "Info-ZIP",
    "IPA",
    "ISC",
    "LGPL-2.0-only",
    "LGPL-2.0-or-later",
    "LGPL-2.1-only",
    "LGPL-2.1-or-later",
    "LGPL-3.0-only",
    "LGPL-3.0-or-later",
    "Libpng",
    "libpng-2.0",
    "libtiff",
    "LPPL-1.3c",
    "MirOS",
    "MIT",
    "MIT-0",
    "MIT-CMU",
    "MPL-1.0",
    "MPL-1.1",
    "MPL-2.0",
    "MPL-2.0-no-copyleft-exception",
    "MS-PL",
    "NCSA",
    "NTP",
    "OFL-1.0",
    "OFL-1.1",
    "OLDAP-2.8",
    "OpenSSL",
    "OSL-3.0",
    "PHP-3.01",
    "PostgreSQL",
    "PSF-2.0",
    "Python-2.0",
    "QPL-1.0",
    "Ruby",
    "Sleepycat",
    "SGI-B-2.0",
    "SMLNJ",
    "SSLeay-standalone",
    "TCL",
    "Unicode-3.0",
    "Unicode-DFS-2015",
    "Unicode-DFS-2016",
    "Unlicense",
    "UPL-1.0",
    "Vim",
    "W3C",
    "WTFPL",
    "X11",
    "Xnet",
    "Zlib",
    "zlib-acknowledgement",
    "ZPL-1.1",
    "ZPL-2.0",
    "ZPL-2.1",
];

fn map_name(name: &str) -> Mapped {
    let lower = name.to_ascii_lowercase();
    if lower == "perl" {
        return Mapped::Expr(Expr::Or(vec![
            Expr::Spdx("Artistic-1.0-Perl".into()),
            Expr::Spdx("GPL-1.0-or-later".into()),
        ]));
    }
    if let Some((_, id)) = ALIASES.iter().find(|(alias, _)| *alias == lower) {
        return Mapped::Spdx((*id).to_owned());
    }
    if let Some(id) = gnu_license(&lower) {
        return Mapped::Spdx(id);
    }
    if let Some(id) = SPDX_IDS.iter().find(|id| id.eq_ignore_ascii_case(&lower)) {
        return Mapped::Spdx((*id).to_owned());
    }
    Mapped::Unknown
}

/// GNU licenses as Debian writes them (`GPL-2+`, `LGPL-2.1`, `GPLv3+`, `GFDL-NIV-1.3+`).
fn gnu_license(lower: &str) -> Option<String> {
    let (family, rest) = ["gfdl-niv", "agpl", "lgpl", "gpl", "gfdl"]
        .iter()
        .find_map(|f| lower.strip_prefix(f).map(|rest| (*f, rest)))?;
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let rest = rest.strip_prefix('v').unwrap_or(rest);
    let (version, or_later) = match rest.strip_suffix('+') {
        Some(v) => (v, true),
        None => (rest, false),
    };
    let version = match (family, version) {
        ("gpl" | "agpl", "1" | "1.0") => "1.0",
        ("gpl" | "agpl" | "lgpl", "2" | "2.0") => "2.0",
        ("gpl" | "agpl" | "lgpl", "3" | "3.0") => "3.0",
        ("lgpl", "2.1") => "2.1",
        ("gfdl" | "gfdl-niv", "1.1" | "1.2" | "1.3") => version,
        _ => return None,
    };
    let suffix = if or_later { "or-later" } else { "only" };
    Some(match family {
        "gpl" => format!("GPL-{version}-{suffix}"),
        "lgpl" => format!("LGPL-{version}-{suffix}"),
        "agpl" if version == "2.0" => return None,
        "agpl" => format!("AGPL-{version}-{suffix}"),
        "gfdl" => format!("GFDL-{version}-{suffix}"),
        _ => format!("GFDL-{version}-no-invariants-{suffix}"),
    })
}

/// SPDX exception identifiers for Debian's `with … exception` words, given the license's name.
fn map_exception(name: &str, words: &str) -> Option<&'static str> {
    let key = words.to_ascii_lowercase().replace(' ', "-");
    let gpl3 = {
        let lower = name.to_ascii_lowercase();
        lower.contains("gpl-3") || lower.contains("gplv3")
    };
    Some(match key.as_str() {
        "autoconf" if gpl3 => "Autoconf-exception-3.0",
        "autoconf" => "Autoconf-exception-2.0",
        "bison" | "bison-2.2" => "Bison-exception-2.2",
        "classpath" => "Classpath-exception-2.0",
        "font" => "Font-exception-2.0",
        "gcc-runtime-3.1" | "gcc-runtime-library" | "gcc-3.1" | "gcc" if gpl3 => {
            "GCC-exception-3.1"
        }
        "libtool" => "Libtool-exception",
        "linux-syscall-note" | "syscall" => "Linux-syscall-note",
        "llvm" => "LLVM-exception",
        "texinfo" => "Texinfo-exception",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(copyright: &str, expected: Option<&str>) -> Detection {
        let detection = from_copyright(copyright);
        assert_eq!(
            detection.license.expression.as_deref(),
            expected,
            "{copyright}"
        );
        detection
    }

    #[test]
    fn short_names_map_to_spdx_identifiers() {
        for (debian, spdx) in [
            ("GPL-2+", "GPL-2.0-or-later"),
            ("GPL-2", "GPL-2.0-only"),
            ("GPL-2.0+", "GPL-2.0-or-later"),
            ("GPLv3+", "GPL-3.0-or-later"),
            ("GPL-3", "GPL-3.0-only"),
            ("LGPL-2+", "LGPL-2.0-or-later"),
            ("LGPL-2.1+", "LGPL-2.1-or-later"),
            ("LGPL-2.1", "LGPL-2.1-only"),
            ("LGPL-3+", "LGPL-3.0-or-later"),
            ("AGPL-3+", "AGPL-3.0-or-later"),
            ("GFDL-1.3+", "GFDL-1.3-or-later"),
            ("GFDL-NIV-1.3", "GFDL-1.3-no-invariants-only"),
            ("BSD-3-clause", "BSD-3-Clause"),
            ("BSD-2-clause", "BSD-2-Clause"),
            ("bsd-4-clause-uc", "BSD-4-Clause-UC"),
            ("Expat", "MIT"),
            ("expat", "MIT"),
            ("MIT", "MIT"),
            ("Apache-2.0", "Apache-2.0"),
            ("Apache-2", "Apache-2.0"),
            ("PSF-2", "PSF-2.0"),
            ("Python", "PSF-2.0"),
            ("Zlib", "Zlib"),
            ("zlib", "Zlib"),
            ("ISC", "ISC"),
            ("MPL-2.0", "MPL-2.0"),
            ("CC0-1.0", "CC0-1.0"),
            ("CC0", "CC0-1.0"),
            ("Artistic", "Artistic-1.0-Perl"),
            ("Artistic-2.0", "Artistic-2.0"),
            ("OpenLDAP-2.8", "OLDAP-2.8"),
            ("curl", "curl"),
            ("BSL-1.0", "BSL-1.0"),
            ("Perl", "Artistic-1.0-Perl OR GPL-1.0-or-later"),
            ("public-domain", "LicenseRef-public-domain"),
            ("Public-Domain", "LicenseRef-public-domain"),
            ("GPL", "LicenseRef-GPL"),
            ("GPL-4+", "LicenseRef-GPL-4-plus"),
            ("permissive", "LicenseRef-permissive"),
            ("MIT/X11", "X11"),
            ("BSD_3_Google", "LicenseRef-BSD-3-Google"),
            ("Ünicode thing", "LicenseRef-nicode-thing"),
        ] {
            assert_eq!(spdx_id(debian), spdx, "{debian}");
        }
    }

    #[test]
    fn known_ids_are_canonical() {
        for id in SPDX_IDS {
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
            assert_eq!(spdx_id(id), *id, "{id} maps to itself");
        }
        for (alias, id) in ALIASES {
            assert_eq!(alias.to_ascii_lowercase(), *alias);
            assert!(
                SPDX_IDS.contains(id),
                "alias {alias} points outside SPDX_IDS"
            );
        }
    }

    const HEADER: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: x\n\n";

    #[test]
    fn files_paragraphs_are_joined_with_and_in_order_without_repeats() {
        let text = format!(
            "{HEADER}Files: *\nCopyright: 2020 A\nLicense: GPL-2+\n\nFiles: lib/*\nCopyright: B\nLicense: Expat\n\nFiles: debian/*\nCopyright: C\nLicense: GPL-2+\n\nLicense: GPL-2+\n This program is free software.\n"
        );
        let d = check(&text, Some("GPL-2.0-or-later AND MIT"));
        assert_eq!(d.format, CopyrightFormat::MachineReadable);
        assert!(d.license.license_refs.is_empty());
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    }

    #[test]
    fn or_and_with_and_commas_follow_dep5_precedence() {
        for (value, expected) in [
            (
                "GPL-1+ or Artistic",
                "GPL-1.0-or-later OR Artistic-1.0-Perl",
            ),
            ("LGPL-3+ or GPL-2+", "LGPL-3.0-or-later OR GPL-2.0-or-later"),
            ("BSL-1.0 and MIT", "BSL-1.0 AND MIT"),
            ("Apache-2.0 and/or Expat", "Apache-2.0 OR MIT"),
            (
                "GPL-2+ or Artistic-2.0, and BSD-3-clause",
                "(GPL-2.0-or-later OR Artistic-2.0) AND BSD-3-Clause",
            ),
            (
                "MIT or BSD-3-clause and Zlib",
                "MIT OR (BSD-3-Clause AND Zlib)",
            ),
            (
                "GPL-2+ with Autoconf exception",
                "GPL-2.0-or-later WITH Autoconf-exception-2.0",
            ),
            (
                "GPL-3+ with Bison exception",
                "GPL-3.0-or-later WITH Bison-exception-2.2",
            ),
            (
                "GPL-2 with Linux-syscall-note exception or MIT",
                "GPL-2.0-only WITH Linux-syscall-note OR MIT",
            ),
            (
                "Apache-2.0 with LLVM exception",
                "Apache-2.0 WITH LLVM-exception",
            ),
            (
                "GPL-3+ with GCC-Runtime-3.1 exception",
                "GPL-3.0-or-later WITH GCC-exception-3.1",
            ),
            (
                "GPL-2+ with distribution exception",
                "LicenseRef-GPL-2-plus-with-distribution-exception",
            ),
            (
                "Expat or GPL-1+ or Artistic",
                "MIT OR GPL-1.0-or-later OR Artistic-1.0-Perl",
            ),
            (
                "Perl and MIT",
                "(Artistic-1.0-Perl OR GPL-1.0-or-later) AND MIT",
            ),
        ] {
            let text = format!("{HEADER}Files: *\nCopyright: A\nLicense: {value}\n");
            check(&text, Some(expected));
        }
    }

    #[test]
    fn unknown_names_become_license_refs_with_their_texts() {
        let text = format!(
            "{HEADER}Files: *\nCopyright: A\nLicense: permissive and public-domain\n\nFiles: x.c\nCopyright: B\nLicense: OPL-1+\n\nLicense: permissive\n Do what you like.\n .\n Really.\n\nLicense: public-domain\n Nobody owns this.\n"
        );
        let d = check(
            &text,
            Some("LicenseRef-permissive AND LicenseRef-public-domain AND LicenseRef-OPL-1-plus"),
        );
        let refs = &d.license.license_refs;
        assert_eq!(
            refs["LicenseRef-permissive"],
            "Do what you like.\n\nReally."
        );
        assert_eq!(refs["LicenseRef-public-domain"], "Nobody owns this.");
        assert!(refs["LicenseRef-OPL-1-plus"].contains("\"OPL-1+\""));
        assert_eq!(refs.len(), 3);
    }

    #[test]
    fn header_license_is_the_declared_license_when_present() {
        let text = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nLicense: GPL-3+\n\nFiles: *\nCopyright: A\nLicense: GPL-3+ and BSD-2-clause\n";
        check(text, Some("GPL-3.0-or-later"));
    }

    #[test]
    fn free_form_files_give_noassertion_without_warnings() {
        let d = check(
            "This package was debianized by someone.\n\nLicense: GPL-2\n",
            None,
        );
        assert_eq!(d.format, CopyrightFormat::FreeForm);
        assert!(d.warnings.is_empty());
        assert_eq!(d.license.spdx_expression(), "NOASSERTION");
    }

    #[test]
    fn problems_become_warnings_naming_the_line() {
        let d = check(
            &format!("{HEADER}Files: *\nCopyright: A\nLicense:\n\nFiles: b\nCopyright: B\nLicense: MIT\n"),
            Some("MIT"),
        );
        assert_eq!(d.warnings, vec![LicenseWarning::EmptyLicense { line: 6 }]);

        let d = check(
            &format!(
                "{HEADER}Files: *\nCopyright: A\nLicense: Permission is granted to use this\n"
            ),
            Some("LicenseRef-Permission-is-granted-to-use-this"),
        );
        assert_eq!(
            d.warnings,
            vec![LicenseWarning::Unparsable {
                line: 6,
                value: "Permission is granted to use this".into()
            }]
        );
        assert!(d.warnings[0].to_string().starts_with("line 6: license"));

        let d = check(&format!("{HEADER}Files: *\nthis is not a field\n"), None);
        assert!(matches!(
            d.warnings[..],
            [LicenseWarning::Syntax { line: 5, .. }]
        ));

        let d = check(&format!("{HEADER}Files: *\nCopyright: A\n"), None);
        assert_eq!(d.warnings, vec![LicenseWarning::NoLicense]);

        let d = check(
            &format!("{HEADER}Files: *\nCopyright: A\nLicense: MIT or\n"),
            Some("LicenseRef-MIT-or"),
        );
        assert_eq!(d.warnings.len(), 1);
    }
}
