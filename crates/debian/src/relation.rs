//! Relation fields: `Depends`, `Pre-Depends`, `Provides`, `Conflicts`, `Breaks`, `Replaces` (and
//! the other dependency fields, which share their syntax).
//!
//! A field is a comma-separated list; in dependency fields each element is a group of
//! alternatives separated by `|`. One relation is
//! `name[:archqual] [(op version)] [[arch ...]] [<profile ...> ...]`:
//!
//! - `op` is one of `<<`, `<=`, `=`, `>=`, `>>`; the obsolete `<` and `>` mean `<=` and `>=`, as
//!   dpkg reads them.
//! - `archqual` is `any`, `native` or an architecture name (Multi-Arch qualifiers).
//! - `[amd64 !i386]` restricts the relation to architectures (all terms negated or none); names
//!   may be the wildcards `any`, `OS-any` and `any-CPU`.
//! - `<!nocheck> <stage1 cross>` are build profile formulas: the relation applies when any one
//!   formula holds, and a formula holds when all its terms do.
//!
//! Restrictions and profiles belong in source packages; in a binary package they are parsed and
//! evaluated by [`Relation::is_active`] (the resolver evaluates them for its architecture, with
//! no build profile active).
//!
//! Names borrow from the parsed text; the parser follows dpkg's syntax rules, and every error
//! names the field and the element that failed.

use std::fmt;

use crate::version::Version;

/// A relation field that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason} in {text:?}")]
pub struct RelationError {
    /// The field name as the caller gave it (`Depends`, …).
    pub field: String,
    /// The element that failed (cut at 100 characters).
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

/// A version comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `<<`
    Less,
    /// `<=` (also the obsolete `<`)
    LessOrEqual,
    /// `=`
    Equal,
    /// `>=` (also the obsolete `>`)
    GreaterOrEqual,
    /// `>>`
    Greater,
}

impl Op {
    /// The operator as dpkg writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Less => "<<",
            Op::LessOrEqual => "<=",
            Op::Equal => "=",
            Op::GreaterOrEqual => ">=",
            Op::Greater => ">>",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version constraint: `(op version)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// The operator.
    pub op: Op,
    /// The version compared against.
    pub version: Version,
}

impl Constraint {
    /// Whether `version` satisfies this constraint.
    pub fn matches(&self, version: &Version) -> bool {
        let ord = version.cmp(&self.version);
        match self.op {
            Op::Less => ord.is_lt(),
            Op::LessOrEqual => ord.is_le(),
            Op::Equal => ord.is_eq(),
            Op::GreaterOrEqual => ord.is_ge(),
            Op::Greater => ord.is_gt(),
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op, self.version)
    }
}

/// A Multi-Arch qualifier: `name:any`, `name:native`, `name:amd64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArchQualifier<'a> {
    /// `:any`
    Any,
    /// `:native`
    Native,
    /// `:<arch>`
    Named(&'a str),
}

impl fmt::Display for ArchQualifier<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchQualifier::Any => f.write_str("any"),
            ArchQualifier::Native => f.write_str("native"),
            ArchQualifier::Named(a) => f.write_str(a),
        }
    }
}

/// One term of a restriction list (`amd64`, `!i386`) or of a build profile formula
/// (`nocheck`, `!cross`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Term<'a> {
    /// Written with a leading `!`.
    pub negated: bool,
    /// The architecture (or wildcard) or profile name.
    pub name: &'a str,
}

impl fmt::Display for Term<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negated {
            f.write_str("!")?;
        }
        f.write_str(self.name)
    }
}

/// One relation: a package name with optional qualifier, version constraint and restrictions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation<'a> {
    /// The package (or virtual package) name.
    pub name: &'a str,
    /// The Multi-Arch qualifier, if written.
    pub arch: Option<ArchQualifier<'a>>,
    /// The version constraint, if written.
    pub constraint: Option<Constraint>,
    /// The architecture restriction list (`[...]`); empty when none is written.
    pub arch_restriction: Vec<Term<'a>>,
    /// The build profile formulas (`<...> <...>`); empty when none is written.
    pub profiles: Vec<Vec<Term<'a>>>,
}

impl<'a> Relation<'a> {
    /// A relation on `name` without qualifier, constraint or restriction.
    pub fn new(name: &'a str) -> Relation<'a> {
        Relation {
            name,
            arch: None,
            constraint: None,
            arch_restriction: Vec::new(),
            profiles: Vec::new(),
        }
    }

    /// Whether `version` satisfies the version constraint (always, when there is none).
    pub fn matches_version(&self, version: &Version) -> bool {
        self.constraint.as_ref().is_none_or(|c| c.matches(version))
    }

    /// Whether the relation applies on `arch` with the build `profiles` active: its restriction
    /// list admits `arch` and, when it has profile formulas, one of them holds.
    pub fn is_active(&self, arch: &str, profiles: &[&str]) -> bool {
        let arch_ok = match self.arch_restriction.first() {
            None => true,
            // Parsing guarantees all terms are negated or none is.
            Some(t) if t.negated => !self
                .arch_restriction
                .iter()
                .any(|t| arch_matches(t.name, arch)),
            Some(_) => self
                .arch_restriction
                .iter()
                .any(|t| arch_matches(t.name, arch)),
        };
        let profiles_ok = self.profiles.is_empty()
            || self.profiles.iter().any(|formula| {
                formula
                    .iter()
                    .all(|t| profiles.contains(&t.name) != t.negated)
            });
        arch_ok && profiles_ok
    }
}

impl fmt::Display for Relation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)?;
        if let Some(a) = &self.arch {
            write!(f, ":{a}")?;
        }
        if let Some(c) = &self.constraint {
            write!(f, " ({c})")?;
        }
        if !self.arch_restriction.is_empty() {
            f.write_str(" [")?;
            write_terms(f, &self.arch_restriction)?;
            f.write_str("]")?;
        }
        for formula in &self.profiles {
            f.write_str(" <")?;
            write_terms(f, formula)?;
            f.write_str(">")?;
        }
        Ok(())
    }
}

fn write_terms(f: &mut fmt::Formatter<'_>, terms: &[Term<'_>]) -> fmt::Result {
    for (i, t) in terms.iter().enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        write!(f, "{t}")?;
    }
    Ok(())
}

/// A group of alternatives (`a | b (>= 2)`): satisfied when any one of them is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternatives<'a>(pub Vec<Relation<'a>>);

impl fmt::Display for Alternatives<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Parses a dependency field (`Depends`, `Pre-Depends`, `Recommends`, …): comma-separated groups
/// of `|` alternatives. An empty field has no groups. `field` names the field in errors.
pub fn parse_dependencies<'a>(
    field: &str,
    text: &'a str,
) -> Result<Vec<Alternatives<'a>>, RelationError> {
    elements(text)
        .map(|element| {
            element
                .split('|')
                .map(|alt| parse_relation(alt).map_err(|reason| error(field, element, reason)))
                .collect::<Result<Vec<_>, _>>()
                .map(Alternatives)
        })
        .collect()
}

/// Parses a field of single relations without alternatives (`Conflicts`, `Breaks`, `Replaces`).
pub fn parse_relations<'a>(field: &str, text: &'a str) -> Result<Vec<Relation<'a>>, RelationError> {
    elements(text)
        .map(|element| {
            if element.contains('|') {
                return Err(error(
                    field,
                    element,
                    format!("alternatives (|) are not allowed in {field}"),
                ));
            }
            parse_relation(element).map_err(|reason| error(field, element, reason))
        })
        .collect()
}

/// Parses a `Provides` field: single relations whose version, if any, is exact (`= v`).
pub fn parse_provides(text: &str) -> Result<Vec<Relation<'_>>, RelationError> {
    let relations = parse_relations("Provides", text)?;
    for r in &relations {
        if r.constraint.as_ref().is_some_and(|c| c.op != Op::Equal) {
            return Err(error(
                "Provides",
                &r.to_string(),
                "only exact versions (=) may be provided".into(),
            ));
        }
    }
    Ok(relations)
}

/// Whether `name` is a valid package name as dpkg checks it: an ASCII letter or digit, then
/// letters, digits and `-+._`. (Debian policy is stricter; dpkg reads what it accepts.)
pub fn is_valid_package_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"-+._".contains(&b))
}

/// Whether the architecture `arch` (a concrete name such as `amd64` or `kfreebsd-i386`) matches
/// `pattern`: the same name, `any`, `OS-any` (`linux-any`) or `any-CPU` (`any-amd64`).
///
/// A name without a hyphen is a Linux architecture whose CPU is the name itself; otherwise the
/// OS is what comes before the last hyphen (`kfreebsd`, `hurd`, `musl-linux`).
pub fn arch_matches(pattern: &str, arch: &str) -> bool {
    if pattern == arch || pattern == "any" {
        return true;
    }
    let (os, cpu) = match arch.rsplit_once('-') {
        Some((os, cpu)) => (os, cpu),
        None => ("linux", arch),
    };
    if let Some(p_os) = pattern.strip_suffix("-any") {
        return p_os == os;
    }
    if let Some(p_cpu) = pattern.strip_prefix("any-") {
        return p_cpu == cpu;
    }
    false
}

fn error(field: &str, text: &str, reason: String) -> RelationError {
    let text = text.trim();
    RelationError {
        field: field.to_owned(),
        text: match text.char_indices().nth(100) {
            Some((i, _)) => text[..i].to_owned(),
            None => text.to_owned(),
        },
        reason,
    }
}

/// The comma-separated elements of a field; an empty (or blank) field has none.
fn elements(text: &str) -> impl Iterator<Item = &str> {
    let blank = text.trim().is_empty();
    text.split(',').filter(move |_| !blank)
}

/// A cursor over one relation's text.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn skip_space(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    /// Takes bytes while `keep` holds.
    fn take(&mut self, keep: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&keep) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
}

fn parse_relation(text: &str) -> Result<Relation<'_>, String> {
    let mut c = Cursor { s: text, pos: 0 };
    c.skip_space();
    let name = c.take(|b| !b.is_ascii_whitespace() && !b":([<,|".contains(&b));
    if name.is_empty() {
        return Err("missing package name".into());
    }
    if !is_valid_package_name(name) {
        return Err(format!("invalid package name {name:?}"));
    }
    let mut relation = Relation::new(name);
    if c.eat(b':') {
        let arch = c.take(|b| b.is_ascii_alphanumeric() || b == b'-');
        relation.arch = Some(match arch {
            "" => return Err("missing architecture after ':'".into()),
            "any" => ArchQualifier::Any,
            "native" => ArchQualifier::Native,
            a => ArchQualifier::Named(a),
        });
    }
    c.skip_space();
    if c.eat(b'(') {
        c.skip_space();
        let op = match c.take(|b| b"<>=".contains(&b)) {
            "<<" => Op::Less,
            "<=" | "<" => Op::LessOrEqual,
            "=" => Op::Equal,
            ">=" | ">" => Op::GreaterOrEqual,
            ">>" => Op::Greater,
            "" => return Err("missing version operator".into()),
            other => return Err(format!("invalid version operator {other:?}")),
        };
        c.skip_space();
        let version = c.take(|b| !b.is_ascii_whitespace() && b != b')');
        if version.is_empty() {
            return Err("missing version".into());
        }
        let version = Version::parse(version)
            .map_err(|e| format!("invalid version {version:?}: {}", e.reason))?;
        c.skip_space();
        if !c.eat(b')') {
            return Err("missing ')' after the version".into());
        }
        relation.constraint = Some(Constraint { op, version });
    }
    c.skip_space();
    if c.eat(b'[') {
        let terms = parse_terms(&mut c, b']', "architecture")?;
        if terms.iter().any(|t| t.negated) && !terms.iter().all(|t| t.negated) {
            return Err("architecture restriction mixes negated and plain names".into());
        }
        relation.arch_restriction = terms;
    }
    c.skip_space();
    while c.eat(b'<') {
        relation
            .profiles
            .push(parse_terms(&mut c, b'>', "build profile")?);
        c.skip_space();
    }
    match c.peek() {
        None => Ok(relation),
        Some(_) => Err(format!("unexpected text {:?}", &text[c.pos..].trim_end())),
    }
}

/// Parses whitespace-separated `[!]name` terms up to `close`, which is consumed.
fn parse_terms<'a>(c: &mut Cursor<'a>, close: u8, what: &str) -> Result<Vec<Term<'a>>, String> {
    let mut terms = Vec::new();
    loop {
        c.skip_space();
        if c.eat(close) {
            break;
        }
        let negated = c.eat(b'!');
        let name = c.take(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b));
        if name.is_empty() {
            return Err(match c.peek() {
                None => format!("missing '{}'", char::from(close)),
                Some(_) => format!("invalid {what} name"),
            });
        }
        terms.push(Term { negated, name });
    }
    if terms.is_empty() {
        return Err(format!("empty {what} list"));
    }
    Ok(terms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(text: &str) -> Vec<Alternatives<'_>> {
        parse_dependencies("Depends", text).unwrap()
    }

    /// Parses `text` and checks the canonical rendering of each group.
    #[track_caller]
    fn check(text: &str, expected: &[&str]) {
        let shown: Vec<String> = deps(text).iter().map(ToString::to_string).collect();
        assert_eq!(shown, expected, "{text:?}");
    }

    #[test]
    fn parses_groups_alternatives_and_constraints() {
        check("", &[]);
        check("  \n ", &[]);
        check("libc6 (>= 2.34)", &["libc6 (>= 2.34)"]);
        check(
            "a, b | c (<< 2:1.0-1) ,d(>=1)",
            &["a", "b | c (<< 2:1.0-1)", "d (>= 1)"],
        );
        check(
            "a (<= 1), b (= 1), c (>> 1)",
            &["a (<= 1)", "b (= 1)", "c (>> 1)"],
        );
        // Obsolete operators, as dpkg reads them.
        check("a (< 1), b (> 2)", &["a (<= 1)", "b (>= 2)"]);
        // Continuation lines as the control parser returns them.
        check("a,\n b (>= 1),\n\tc", &["a", "b (>= 1)", "c"]);
        let g = &deps("python3:any (>= 3.11~), perl:native, libfoo1:i386")[..];
        assert_eq!(g[0].0[0].arch, Some(ArchQualifier::Any));
        assert_eq!(
            g[0].0[0].constraint.as_ref().unwrap().op,
            Op::GreaterOrEqual
        );
        assert_eq!(g[1].0[0].arch, Some(ArchQualifier::Native));
        assert_eq!(g[2].0[0].arch, Some(ArchQualifier::Named("i386")));
        assert_eq!(g[2].to_string(), "libfoo1:i386");
    }

    #[test]
    fn parses_restrictions_and_profiles() {
        check(
            "a [amd64 i386], b [!hurd-any] <!nocheck> <stage1 cross>",
            &["a [amd64 i386]", "b [!hurd-any] <!nocheck> <stage1 cross>"],
        );
        let g =
            deps("a [linux-any], b [!amd64], c <!nocheck>, d <stage1>, e <stage1 !cross> <pkg.x>");
        let active: Vec<bool> = g.iter().map(|g| g.0[0].is_active("amd64", &[])).collect();
        assert_eq!(active, [true, false, true, false, false]);
        assert!(g[3].0[0].is_active("amd64", &["stage1"]));
        assert!(!g[4].0[0].is_active("amd64", &["stage1", "cross"]));
        assert!(g[4].0[0].is_active("amd64", &["pkg.x", "cross"]));
        assert!(!g[0].0[0].is_active("hurd-i386", &[]));
    }

    #[test]
    fn arch_wildcards() {
        for (pattern, arch, expected) in [
            ("amd64", "amd64", true),
            ("any", "arm64", true),
            ("linux-any", "arm64", true),
            ("any-amd64", "amd64", true),
            ("any-amd64", "kfreebsd-amd64", true),
            ("kfreebsd-any", "kfreebsd-amd64", true),
            ("linux-any", "kfreebsd-amd64", false),
            ("any-i386", "amd64", false),
            ("i386", "amd64", false),
        ] {
            assert_eq!(arch_matches(pattern, arch), expected, "{pattern} {arch}");
        }
    }

    #[test]
    fn constraints_match_versions() {
        let v = |s: &str| Version::parse(s).unwrap();
        let g = deps("a (<< 2), a (<= 2), a (= 2), a (>= 2), a (>> 2)");
        let at = |ver: &str| -> Vec<bool> {
            g.iter().map(|g| g.0[0].matches_version(&v(ver))).collect()
        };
        assert_eq!(at("1.9"), [true, true, false, false, false]);
        assert_eq!(at("2"), [false, true, true, true, false]);
        assert_eq!(at("2.0"), [false, false, false, true, true]);
        assert_eq!(at("2~rc1"), [true, true, false, false, false]);
        assert_eq!(at("2.0.1"), [false, false, false, true, true]);
        assert!(Relation::new("a").matches_version(&v("0")));
    }

    #[test]
    fn provides_and_exclusive_fields() {
        let p = parse_provides("mail-transport-agent, libfoo-abi-2 (= 2.1-1)").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].constraint.as_ref().unwrap().version.as_str(), "2.1-1");
        let e = parse_provides("x (>= 1)").unwrap_err();
        assert_eq!(e.field, "Provides");
        assert!(e.reason.contains("exact"), "{e}");
        let c = parse_relations("Conflicts", "a (<< 1), b:any").unwrap();
        assert_eq!(c[1].arch, Some(ArchQualifier::Any));
        let e = parse_relations("Breaks", "a, b | c").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Breaks: alternatives (|) are not allowed in Breaks in \"b | c\""
        );
    }

    #[test]
    fn errors_name_field_and_text() {
        for (text, bad, reason) in [
            ("a, , b", "", "missing package name"),
            ("a,", "", "missing package name"),
            ("a | ", "a |", "missing package name"),
            ("a (>= )", "a (>= )", "missing version"),
            ("a (1.0)", "a (1.0)", "missing version operator"),
            ("a (=> 1)", "a (=> 1)", "invalid version operator \"=>\""),
            ("a (>= 1.0", "a (>= 1.0", "missing ')' after the version"),
            (
                "a (>= 1.0-)",
                "a (>= 1.0-)",
                "invalid version \"1.0-\": revision number is empty",
            ),
            ("a:", "a:", "missing architecture after ':'"),
            ("A_b!", "A_b!", "invalid package name \"A_b!\""),
            ("-a", "-a", "invalid package name \"-a\""),
            ("a b", "a b", "unexpected text \"b\""),
            (
                "a [amd64 !i386]",
                "a [amd64 !i386]",
                "architecture restriction mixes negated and plain names",
            ),
            ("a [amd64", "a [amd64", "missing ']'"),
            ("a []", "a []", "empty architecture list"),
            ("a <>", "a <>", "empty build profile list"),
            ("a <!nocheck", "a <!nocheck", "missing '>'"),
        ] {
            let e = parse_dependencies("Pre-Depends", text).unwrap_err();
            assert_eq!(
                (e.field.as_str(), e.text.as_str(), e.reason.as_str()),
                ("Pre-Depends", bad, reason),
                "{text:?}"
            );
        }
    }

    #[test]
    fn valid_names() {
        for ok in [
            "a",
            "libc6",
            "g++",
            "libstdc++6",
            "python3.11",
            "0ad",
            "x_y",
            "Abc",
        ] {
            assert!(is_valid_package_name(ok), "{ok}");
        }
        for bad in ["", "-a", ".a", "a b", "a:b", "a,b", "ä"] {
            assert!(!is_valid_package_name(bad), "{bad}");
        }
    }
}
