//! Dependency resolution: from requested package names to the exact, sorted set of packages to
//! install.
//!
//! The input is a list of [`Request`]s (`name`, `name:arch`, `name=version` pins and `!name`
//! exclusions, as a spec's `contents.packages` lists them), the [`Architectures`] of the target
//! and a [`Universe`]. The output is a [`Resolution`]: the packages the requests need (and
//! nothing else: the Essential set is not added implicitly, `Recommends` and `Suggests` are not
//! followed) with warnings, or a [`ResolveError`] that explains the failing chain, such as
//! `python3 -> python3.11 (= 3.11.2-6) -> libssl3 (>= 3.2): no candidate (available: 3.0.15-1)`.
//!
//! # Rules
//!
//! - `Pre-Depends` and `Depends` are both followed (nothing is configured here, so their order
//!   does not matter). Relations whose architecture restriction list or build profiles exclude
//!   the package's architecture (with no profile active) are ignored.
//! - A dependency group already satisfied by a selected package is left alone (as apt prefers an
//!   installed alternative). Otherwise its candidates are tried in this order: the alternatives
//!   in the order written; for each, the real packages of that name (native or `all`
//!   architecture first, then highest version), then the packages providing the name (a
//!   versioned dependency only by a versioned `Provides` that satisfies it), ordered by
//!   `Priority` (required first), then name, then highest version.
//! - The highest version wins unless a `name=version` pin fixes the version; a pin holds for every
//!   dependency on that name, and a pin on a version that does not exist is an error.
//! - Only one version of a name is installed (per architecture for `Multi-Arch: same`, whose
//!   instances must share one version). `Conflicts` and `Breaks` between selected packages,
//!   including those on provided names, are not allowed. When a choice leads to a conflict the
//!   resolver backtracks to the most recent choice with an untried candidate (older versions
//!   included), up to [`MAX_STEPS`] group evaluations. `Replaces` does not affect the choice.
//! - Architectures follow dpkg: `all` counts as the native architecture; a plain dependency is
//!   satisfied by a package of the depending package's architecture or by a `Multi-Arch:
//!   foreign` one of any enabled architecture; `:any` by a `Multi-Arch: allowed` or `foreign`
//!   package of any enabled architecture; `:native` by the native architecture; `:arch` by that
//!   architecture. Packages of architectures that are not enabled are never candidates.
//! - Exclusions (`!name`): a package named `name` is never selected, as a dependency or as a
//!   provider. When a dependency can only be satisfied by excluded packages, it is treated as
//!   satisfied and a [`Warning::ExcludedDependency`] names the chain and the excluded packages:
//!   Docker Hardened Images' Debian definitions use `!name` to keep out what a package declares
//!   but an image does not need (or to steer a choice between providers, as `!gawk` with
//!   `mawk`), so an exclusion must win over a hard dependency rather than fail the build. Such a
//!   satisfaction by exclusion is the last resort, tried after every real candidate. A name both
//!   requested and excluded is installed as requested, with [`Warning::RequestedAndExcluded`].
//!   A request itself is never satisfied by exclusion.
//! - Before searching, packages that can never be installed (a dependency group without any
//!   installable candidate, recursively) are set aside, so a missing package is reported at once
//!   with its chain instead of after trying every combination of unrelated choices.
//!
//! The result depends only on the requests (as a set), the architectures and the universe's
//! contents: never on the order of indexes, paragraphs or requests.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::ops::Range;

use crate::package::{MultiArch, Package, PackageError, PackageId, Priority, RepoId, Universe};
use crate::relation::{self, Alternatives, ArchQualifier, Constraint, Op, Relation};
use crate::version::{Version, VersionError};

/// The most dependency groups the search evaluates, over all its backtracking attempts, before it
/// gives up (a deterministic bound, not a timeout).
pub const MAX_STEPS: usize = 500_000;

/// One entry of a spec's package list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Install `name`, optionally of one architecture, optionally at exactly one version.
    Install {
        /// The package (or virtual package) name.
        name: String,
        /// `name:arch`: only this architecture.
        architecture: Option<String>,
        /// `name=version`: only this version, for the request and every dependency on `name`.
        version: Option<Version>,
    },
    /// `!name`: never install a package of this name.
    Exclude {
        /// The excluded name.
        name: String,
    },
}

/// A request that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid package request {text:?}: {reason}")]
pub struct RequestError {
    /// The request as written.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

impl Request {
    /// Parses `name`, `name:arch`, `name=version`, `name:arch=version` or `!name`.
    pub fn parse(text: &str) -> Result<Request, RequestError> {
        let err = |reason: String| RequestError {
            text: text.to_owned(),
            reason,
        };
        let s = text.trim();
        if let Some(name) = s.strip_prefix('!') {
            let name = name.trim();
            if !relation::is_valid_package_name(name) {
                return Err(err(format!("invalid package name {name:?}")));
            }
            return Ok(Request::Exclude {
                name: name.to_owned(),
            });
        }
        let (spec, version) = match s.split_once('=') {
            Some((spec, v)) => {
                let v = Version::parse(v).map_err(|e: VersionError| err(e.to_string()))?;
                (spec.trim(), Some(v))
            }
            None => (s, None),
        };
        let (name, architecture) = match spec.split_once(':') {
            Some((name, arch)) => {
                if arch.is_empty() || !arch.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Err(err(format!("invalid architecture {arch:?}")));
                }
                (name, Some(arch.to_owned()))
            }
            None => (spec, None),
        };
        if !relation::is_valid_package_name(name) {
            return Err(err(format!("invalid package name {name:?}")));
        }
        Ok(Request::Install {
            name: name.to_owned(),
            architecture,
            version,
        })
    }

    /// The name requested or excluded.
    pub fn name(&self) -> &str {
        match self {
            Request::Install { name, .. } | Request::Exclude { name } => name,
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Exclude { name } => write!(f, "!{name}"),
            Request::Install {
                name,
                architecture,
                version,
            } => {
                f.write_str(name)?;
                if let Some(a) = architecture {
                    write!(f, ":{a}")?;
                }
                if let Some(v) = version {
                    write!(f, "={v}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::str::FromStr for Request {
    type Err = RequestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Request::parse(s)
    }
}

/// The architectures packages may be installed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Architectures {
    /// The image's architecture (`amd64`, `arm64`, …); `all` packages count as this one.
    pub native: String,
    /// Further architectures whose packages may be installed (dpkg's foreign architectures).
    pub foreign: Vec<String>,
}

impl Architectures {
    /// Only the native architecture (and `all`).
    pub fn native(arch: &str) -> Architectures {
        Architectures {
            native: arch.to_owned(),
            foreign: Vec::new(),
        }
    }
}

/// One package to install, with everything needed to fetch and verify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Package name.
    pub name: String,
    /// Exact version.
    pub version: Version,
    /// Architecture as the index lists it (`all` included).
    pub architecture: String,
    /// The repository it comes from.
    pub repo: RepoId,
    /// Path of the `.deb` below the repository's root.
    pub filename: String,
    /// SHA-256 of the `.deb` (lowercase hexadecimal).
    pub sha256: String,
    /// Size of the `.deb` in bytes.
    pub size: u64,
    /// Source package name.
    pub source: String,
    /// Source package version.
    pub source_version: Version,
}

impl Resolved {
    /// The owned record of a package.
    pub fn from_package(p: &Package<'_>) -> Resolved {
        Resolved {
            name: p.name.to_owned(),
            version: p.version.clone(),
            architecture: p.architecture.to_owned(),
            repo: p.repo,
            filename: p.filename.to_owned(),
            sha256: p.sha256.to_ascii_lowercase(),
            size: p.size,
            source: p.source.to_owned(),
            source_version: p.source_version().clone(),
        }
    }
}

/// Something the caller should report, though resolution succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A dependency could only be satisfied by excluded packages and was left unsatisfied.
    ExcludedDependency {
        /// The chain from a request to the dependency, as in errors.
        chain: Vec<String>,
        /// The excluded packages that would have satisfied it.
        excluded: Vec<String>,
    },
    /// A name is both requested and excluded; it is installed as requested.
    RequestedAndExcluded {
        /// The name.
        name: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::ExcludedDependency { chain, excluded } => write!(
                f,
                "{}: left unsatisfied, only excluded packages satisfy it ({})",
                chain.join(" -> "),
                excluded.join(", ")
            ),
            Warning::RequestedAndExcluded { name } => write!(
                f,
                "{name} is both requested and excluded (!{name}); it is installed as requested"
            ),
        }
    }
}

/// The outcome of a successful resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The packages to install, sorted by name, architecture and version.
    pub packages: Vec<Resolved>,
    /// What the caller should report.
    pub warnings: Vec<Warning>,
}

/// Why a resolution failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// A pinned version does not exist (for an enabled architecture).
    #[error(
        "pin {name}={version}: no such version (available: {})",
        list_or_none(available)
    )]
    PinNotFound {
        /// The pinned name.
        name: String,
        /// The pinned version.
        version: String,
        /// The versions that exist.
        available: Vec<String>,
    },
    /// Two requests pin one name to different versions.
    #[error("{name} is pinned to two versions: {first} and {second}")]
    ConflictingPins {
        /// The name.
        name: String,
        /// One pinned version.
        first: String,
        /// The other.
        second: String,
    },
    /// No set of packages satisfies the requests.
    #[error("{}: {reason}", chain.join(" -> "))]
    Unsatisfiable {
        /// From the request to the failing dependency, each as written.
        chain: Vec<String>,
        /// Why the last one cannot be satisfied.
        reason: String,
    },
    /// The search reached [`MAX_STEPS`] without a solution.
    #[error("no solution found within {steps} steps; the first failure was: {}: {reason}", chain.join(" -> "))]
    GaveUp {
        /// The steps taken.
        steps: usize,
        /// As in [`ResolveError::Unsatisfiable`], for the first failure met.
        chain: Vec<String>,
        /// Why it failed.
        reason: String,
    },
    /// A package the resolution needed has a malformed relation field.
    #[error("repository {repo}: {error}")]
    InvalidPackage {
        /// The repository of the package's index.
        repo: RepoId,
        /// The parse error, naming the line, package and field.
        error: PackageError,
    },
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// Resolves `requests` against `universe` for `architectures`.
pub fn resolve(
    universe: &Universe<'_>,
    requests: &[Request],
    architectures: &Architectures,
) -> Result<Resolution, ResolveError> {
    let mut resolver = Resolver::new(universe, requests, architectures)?;
    resolver.build(requests)?;
    resolver.mark_installable();
    resolver.check_requests()?;
    resolver.search()
}

/// A package the resolution reached, with its relations parsed.
struct Node<'x> {
    package: &'x Package<'x>,
    /// Its architecture, with `all` read as the native one.
    arch: &'x str,
    /// Its dependency groups in `Resolver::groups` (set once parsed).
    groups: Range<usize>,
    /// `Conflicts` and `Breaks`, tagged with the field name.
    conflicts: Vec<(&'static str, Relation<'x>)>,
    /// 0 if it can be installed; otherwise the round of `mark_installable` that found it cannot.
    broken_in: u32,
}

/// A dependency group of a package, or a request.
struct Group<'x> {
    /// The package whose dependency this is, or `None` for a request.
    owner: Option<usize>,
    /// The relations (for a request: the one relation it stands for).
    alternatives: Alternatives<'x>,
    /// How a request is written (`None` for a dependency).
    request: Option<String>,
    /// Nodes satisfying the group, in order of preference (excluded packages left out).
    candidates: Vec<usize>,
    /// Excluded packages that would satisfy the group.
    excluded: Vec<PackageId>,
}

impl Group<'_> {
    fn label(&self) -> String {
        match &self.request {
            Some(r) => r.clone(),
            None => self.alternatives.to_string(),
        }
    }
}

struct Resolver<'x> {
    universe: &'x Universe<'x>,
    native: &'x str,
    foreign: &'x [String],
    pins: HashMap<&'x str, &'x Version>,
    excluded: HashSet<&'x str>,
    warnings: Vec<Warning>,
    nodes: Vec<Node<'x>>,
    node_of: HashMap<PackageId, usize>,
    groups: Vec<Group<'x>>,
    /// The request groups, ordered by request text.
    request_groups: Vec<usize>,
    /// The search's step budget ([`MAX_STEPS`]; smaller in tests).
    max_steps: usize,
}

/// One option at a dependency group.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Choice {
    Package(usize),
    /// Leave the group unsatisfied: only excluded packages satisfy it.
    Exclusion,
}

/// Why a candidate cannot join the selection: the selected node that blocks it.
#[derive(Clone, Copy)]
enum Blocked<'r, 'x> {
    /// `blocker` has the same name and cannot be installed alongside.
    SameName { blocker: usize },
    /// `declarer` declares `field: rel`, which `target` matches; one of them is the candidate,
    /// the other (`blocker`) is selected.
    Declared {
        declarer: usize,
        field: &'static str,
        rel: &'r Relation<'x>,
        target: usize,
        blocker: usize,
    },
}

impl Blocked<'_, '_> {
    fn blocker(&self) -> usize {
        match *self {
            Blocked::SameName { blocker } | Blocked::Declared { blocker, .. } => blocker,
        }
    }
}

/// The selection being built by one search attempt.
#[derive(Default)]
struct State<'x> {
    selected: Vec<bool>,
    /// The group each selected node was selected for.
    reason: Vec<usize>,
    /// How many choices had been made when each selected node was selected: the node's
    /// selection depends on those choices only.
    level: Vec<usize>,
    /// Selected nodes by package name.
    by_name: HashMap<&'x str, Vec<usize>>,
    /// Selected (node, `Provides` entry) by provided name.
    by_provided: HashMap<&'x str, Vec<(usize, usize)>>,
    /// Selected (node, index into its `conflicts`) by the name they conflict with.
    conflicts_on: HashMap<&'x str, Vec<(usize, usize)>>,
    /// Groups left to exclusions.
    exclusions: Vec<usize>,
}

/// A failed dependency group: the chain leading to it and why.
struct Failure {
    chain: Vec<String>,
    reason: String,
}

enum Attempt<'x> {
    Solved(State<'x>),
    /// The attempt failed; `options[i]` is how many options choice `i` had and `taken[i]` which
    /// one was taken. The failure follows from the first `depends_on` choices alone.
    Failed {
        failure: Failure,
        options: Vec<usize>,
        taken: Vec<usize>,
        depends_on: usize,
    },
    OutOfSteps,
}

impl<'x> Resolver<'x> {
    fn new(
        universe: &'x Universe<'x>,
        requests: &'x [Request],
        architectures: &'x Architectures,
    ) -> Result<Resolver<'x>, ResolveError> {
        let mut pins: HashMap<&'x str, &'x Version> = HashMap::new();
        let mut excluded = HashSet::new();
        let mut requested = HashSet::new();
        for r in requests {
            match r {
                Request::Exclude { name } => {
                    excluded.insert(name.as_str());
                }
                Request::Install { name, version, .. } => {
                    requested.insert(name.as_str());
                    if let Some(v) = version {
                        if let Some(other) = pins.insert(name, v) {
                            if other.as_str() != v.as_str() {
                                let (first, second) = if other.as_str() < v.as_str() {
                                    (other, v)
                                } else {
                                    (v, other)
                                };
                                return Err(ResolveError::ConflictingPins {
                                    name: name.clone(),
                                    first: first.to_string(),
                                    second: second.to_string(),
                                });
                            }
                        }
                    }
                }
            }
        }
        let mut warnings = Vec::new();
        let mut both: Vec<&str> = excluded.intersection(&requested).copied().collect();
        both.sort_unstable();
        for name in both {
            excluded.remove(name);
            warnings.push(Warning::RequestedAndExcluded {
                name: name.to_owned(),
            });
        }
        let resolver = Resolver {
            universe,
            native: &architectures.native,
            foreign: &architectures.foreign,
            pins,
            excluded,
            warnings,
            nodes: Vec::new(),
            node_of: HashMap::new(),
            groups: Vec::new(),
            request_groups: Vec::new(),
            max_steps: MAX_STEPS,
        };
        resolver.check_pins()?;
        Ok(resolver)
    }

    /// Every pin names a version that exists for an enabled architecture.
    fn check_pins(&self) -> Result<(), ResolveError> {
        let mut pins: Vec<(&&str, &&Version)> = self.pins.iter().collect();
        pins.sort_unstable_by_key(|(name, _)| **name);
        for (name, version) in pins {
            let usable = self
                .universe
                .named(name)
                .iter()
                .map(|&id| &self.universe[id]);
            let mut usable = usable.filter(|p| self.enabled(p));
            if !usable.any(|p| p.version == **version) {
                let mut available: Vec<String> = self
                    .universe
                    .named(name)
                    .iter()
                    .map(|&id| self.describe_version(&self.universe[id]))
                    .collect();
                available.dedup();
                return Err(ResolveError::PinNotFound {
                    name: (*name).to_owned(),
                    version: version.to_string(),
                    available,
                });
            }
        }
        Ok(())
    }

    /// Whether packages of `p`'s architecture may be installed.
    fn enabled(&self, p: &Package<'_>) -> bool {
        p.architecture == "all"
            || p.architecture == self.native
            || self.foreign.iter().any(|a| a == p.architecture)
    }

    fn normalize_arch<'s>(&self, arch: &'s str) -> &'s str
    where
        'x: 's,
    {
        if arch == "all" {
            self.native
        } else {
            arch
        }
    }

    /// `1.0`, or `1.0 (i386)` for a package of an architecture other than native or `all`.
    fn describe_version(&self, p: &Package<'_>) -> String {
        if p.architecture == "all" || p.architecture == self.native {
            p.version.to_string()
        } else {
            format!("{} ({})", p.version, p.architecture)
        }
    }

    /// Whether `p` matches the architecture part of `rel`, written by a package of (normalized)
    /// architecture `depender`: dpkg's rules (see the module docs). For `Conflicts` and `Breaks`
    /// `:any` matches every architecture.
    fn arch_satisfies(
        &self,
        p: &Package<'_>,
        rel: &Relation<'_>,
        depender: &str,
        conflict: bool,
    ) -> bool {
        let arch = self.normalize_arch(p.architecture);
        match rel.arch {
            None => p.multi_arch == MultiArch::Foreign || arch == depender,
            Some(ArchQualifier::Any) => {
                conflict || matches!(p.multi_arch, MultiArch::Allowed | MultiArch::Foreign)
            }
            Some(ArchQualifier::Native) => arch == self.native,
            Some(ArchQualifier::Named(a)) => arch == self.normalize_arch(a),
        }
    }

    fn pin_allows(&self, p: &Package<'_>) -> bool {
        self.pins.get(p.name).is_none_or(|v| p.version == **v)
    }

    /// The node of `id`, created (and queued for parsing) if new.
    fn node(&mut self, id: PackageId, queue: &mut VecDeque<usize>) -> usize {
        if let Some(&n) = self.node_of.get(&id) {
            return n;
        }
        let universe = self.universe;
        let package: &'x Package<'x> = &universe[id];
        let n = self.nodes.len();
        self.nodes.push(Node {
            package,
            arch: self.normalize_arch(package.architecture),
            groups: 0..0,
            conflicts: Vec::new(),
            broken_in: 0,
        });
        self.node_of.insert(id, n);
        queue.push_back(n);
        n
    }

    /// Adds the group `alternatives` (of `owner`, whose architecture is `depender`) with its
    /// candidates in order of preference.
    fn add_group(
        &mut self,
        owner: Option<usize>,
        alternatives: Alternatives<'x>,
        request: Option<String>,
        depender: &str,
        queue: &mut VecDeque<usize>,
    ) -> usize {
        let universe = self.universe;
        let mut candidates: Vec<PackageId> = Vec::new();
        let mut excluded: Vec<PackageId> = Vec::new();
        for rel in &alternatives.0 {
            let mut real: Vec<PackageId> = universe
                .named(rel.name)
                .iter()
                .copied()
                .filter(|&id| {
                    let p = &universe[id];
                    self.enabled(p)
                        && self.arch_satisfies(p, rel, depender, false)
                        && rel.matches_version(&p.version)
                        && self.pin_allows(p)
                })
                .collect();
            // Native (and `all`) before foreign architectures; the sort is stable, so versions
            // stay highest first.
            real.sort_by_key(|&id| self.normalize_arch(universe[id].architecture) != self.native);
            let mut provided: Vec<PackageId> = universe
                .providers(rel.name)
                .iter()
                .filter(|prov| {
                    let p = &universe[prov.package];
                    let entry = &p.provides[prov.entry];
                    self.enabled(p)
                        && self.arch_satisfies(p, rel, depender, false)
                        && provide_satisfies(rel.constraint.as_ref(), entry)
                        && self.pin_allows(p)
                })
                .map(|prov| prov.package)
                .collect();
            provided.sort_by_key(|&id| {
                let p = &universe[id];
                (
                    p.priority.unwrap_or(Priority::Other),
                    p.name,
                    self.normalize_arch(p.architecture) != self.native,
                )
            });
            for id in real.into_iter().chain(provided) {
                if self.excluded.contains(universe[id].name) {
                    if !excluded.contains(&id) {
                        excluded.push(id);
                    }
                } else if !candidates.contains(&id) {
                    candidates.push(id);
                }
            }
        }
        let candidates = candidates
            .into_iter()
            .map(|id| self.node(id, queue))
            .collect();
        self.groups.push(Group {
            owner,
            alternatives,
            request,
            candidates,
            excluded,
        });
        self.groups.len() - 1
    }

    /// Adds the request groups, then every package reachable from them with its relations.
    fn build(&mut self, requests: &'x [Request]) -> Result<(), ResolveError> {
        let mut queue = VecDeque::new();
        let mut installs: Vec<&'x Request> = requests
            .iter()
            .filter(|r| matches!(r, Request::Install { .. }))
            .collect();
        installs.sort_by_cached_key(|r| r.to_string());
        installs.dedup();
        for r in installs {
            let Request::Install {
                name,
                architecture,
                version,
            } = r
            else {
                continue;
            };
            let mut rel = Relation::new(name);
            rel.arch = architecture.as_deref().map(ArchQualifier::Named);
            rel.constraint = version.as_ref().map(|v| Constraint {
                op: Op::Equal,
                version: v.clone(),
            });
            let native = self.native;
            let g = self.add_group(
                None,
                Alternatives(vec![rel]),
                Some(r.to_string()),
                native,
                &mut queue,
            );
            self.request_groups.push(g);
        }
        while let Some(n) = queue.pop_front() {
            let package = self.nodes[n].package;
            let arch = self.nodes[n].arch;
            let invalid = |error| ResolveError::InvalidPackage {
                repo: package.repo,
                error,
            };
            let mut groups = package.pre_depends().map_err(invalid)?;
            groups.extend(package.depends().map_err(invalid)?);
            let start = self.groups.len();
            for group in groups {
                let active: Vec<Relation<'x>> = group
                    .0
                    .into_iter()
                    .filter(|r| r.is_active(arch, &[]))
                    .collect();
                if !active.is_empty() {
                    self.add_group(Some(n), Alternatives(active), None, arch, &mut queue);
                }
            }
            self.nodes[n].groups = start..self.groups.len();
            let mut conflicts: Vec<(&'static str, Relation<'x>)> = Vec::new();
            for r in package.conflicts().map_err(invalid)? {
                conflicts.push(("Conflicts", r));
            }
            for r in package.breaks().map_err(invalid)? {
                conflicts.push(("Breaks", r));
            }
            conflicts.retain(|(_, r)| r.is_active(arch, &[]));
            self.nodes[n].conflicts = conflicts;
        }
        Ok(())
    }

    /// Marks the nodes that can never be installed: one of their groups has no installable
    /// candidate and cannot be left to exclusions. Computed in rounds, each from the previous
    /// round's marks, until nothing changes (a greatest fixed point: dependency cycles among
    /// installable packages stay installable). A node marked in round `k` has a group whose
    /// candidates were all marked before `k`, which is what lets explanations descend without
    /// going round a cycle.
    fn mark_installable(&mut self) {
        for round in 1.. {
            let newly: Vec<usize> = (0..self.nodes.len())
                .filter(|&n| self.nodes[n].broken_in == 0 && self.witness(n, round).is_some())
                .collect();
            if newly.is_empty() {
                break;
            }
            for n in newly {
                self.nodes[n].broken_in = round;
            }
        }
    }

    fn installable(&self, n: usize) -> bool {
        self.nodes[n].broken_in == 0
    }

    /// The first group of node `n` that no candidate marked installable before `round` (or
    /// installable at all) can satisfy, and that exclusions cannot satisfy either.
    fn witness(&self, n: usize, round: u32) -> Option<usize> {
        self.nodes[n].groups.clone().find(|&g| {
            let group = &self.groups[g];
            group.excluded.is_empty()
                && group.candidates.iter().all(|&c| {
                    let b = self.nodes[c].broken_in;
                    b != 0 && b < round
                })
        })
    }

    /// Every request has an installable candidate; otherwise the error explains the chain.
    fn check_requests(&self) -> Result<(), ResolveError> {
        for &g in &self.request_groups {
            let group = &self.groups[g];
            if group.candidates.iter().any(|&c| self.installable(c)) {
                continue;
            }
            let Failure { chain, reason } = self.explain_uninstallable(g);
            return Err(ResolveError::Unsatisfiable { chain, reason });
        }
        Ok(())
    }

    /// Follows the first candidate of group `g` (none installable) down to a group without any
    /// candidate: `python3 -> python3.11 (= 3.11.2-6) -> libssl3 (>= 3.2)`. Each step goes to a
    /// node marked in an earlier round, so the walk ends.
    fn explain_uninstallable(&self, mut g: usize) -> Failure {
        let mut chain = vec![self.groups[g].label()];
        loop {
            let group = &self.groups[g];
            let next = group.candidates.first().and_then(|&c| {
                let node = &self.nodes[c];
                self.witness(c, node.broken_in)
            });
            match next {
                Some(dg) => {
                    chain.push(self.groups[dg].label());
                    g = dg;
                }
                None => {
                    return Failure {
                        chain,
                        reason: self.describe_missing(group),
                    }
                }
            }
        }
    }

    /// Why a group has no candidate at all, alternative by alternative.
    fn describe_missing(&self, group: &Group<'x>) -> String {
        if !group.excluded.is_empty() {
            let mut names: Vec<&str> = group
                .excluded
                .iter()
                .map(|&id| self.universe[id].name)
                .collect();
            names.sort_unstable();
            names.dedup();
            return format!("only excluded packages satisfy it ({})", names.join(", "));
        }
        let reasons: Vec<String> = group
            .alternatives
            .0
            .iter()
            .map(|rel| {
                let reason = self.describe_missing_relation(rel);
                if group.alternatives.0.len() > 1 {
                    format!("{rel}: {reason}")
                } else {
                    reason
                }
            })
            .collect();
        reasons.join("; ")
    }

    fn describe_missing_relation(&self, rel: &Relation<'_>) -> String {
        let universe = self.universe;
        let real = universe.named(rel.name);
        let providers = universe.providers(rel.name);
        if real.is_empty() && providers.is_empty() {
            return "no package of that name".to_owned();
        }
        let mut available: Vec<String> = real
            .iter()
            .map(|&id| self.describe_version(&universe[id]))
            .collect();
        available.dedup();
        let mut provided: Vec<String> = providers
            .iter()
            .map(|prov| {
                let p = &universe[prov.package];
                match &p.provides[prov.entry].constraint {
                    Some(c) => format!("{} ({c})", p.name),
                    None => p.name.to_owned(),
                }
            })
            .collect();
        provided.sort();
        provided.dedup();
        let mut reason = format!("no candidate (available: {}", list_or_none(&available));
        if !provided.is_empty() {
            reason.push_str(&format!("; provided by: {}", provided.join(", ")));
        }
        reason.push(')');
        if let Some(pin) = self.pins.get(rel.name) {
            reason.push_str(&format!(", pinned to {pin}"));
        }
        reason
    }

    /// Searches depth first, choice by choice. A failure that follows from the first `k` choices
    /// alone (every package involved was selected before choice `k` was made) sends the search
    /// back to choice `k - 1` directly: the choices after it cannot change the outcome, since
    /// the run up to choice `k` is the same whatever they are.
    fn search(&self) -> Result<Resolution, ResolveError> {
        let mut steps = 0;
        let mut decisions: Vec<usize> = Vec::new();
        let mut first_failure: Option<Failure> = None;
        loop {
            match self.attempt(&decisions, &mut steps) {
                Attempt::Solved(state) => return Ok(self.finish(state)),
                Attempt::Failed {
                    failure,
                    options,
                    mut taken,
                    depends_on,
                } => {
                    let first = first_failure.get_or_insert(failure);
                    taken.truncate(depends_on);
                    // The next untried option of the latest choice that has one.
                    loop {
                        let Some(i) = taken.len().checked_sub(1) else {
                            return Err(ResolveError::Unsatisfiable {
                                chain: std::mem::take(&mut first.chain),
                                reason: std::mem::take(&mut first.reason),
                            });
                        };
                        if taken[i] + 1 < options[i] {
                            taken[i] += 1;
                            break;
                        }
                        taken.pop();
                    }
                    decisions = taken;
                }
                Attempt::OutOfSteps => {
                    let first = first_failure.unwrap_or(Failure {
                        chain: Vec::new(),
                        reason: "no failure recorded".to_owned(),
                    });
                    return Err(ResolveError::GaveUp {
                        steps,
                        chain: first.chain,
                        reason: first.reason,
                    });
                }
            }
        }
    }

    /// One pass over the agenda, taking option `decisions[i]` at the `i`th choice (the first
    /// option past the decisions given).
    fn attempt(&self, decisions: &[usize], steps: &mut usize) -> Attempt<'x> {
        let mut state = State {
            selected: vec![false; self.nodes.len()],
            reason: vec![usize::MAX; self.nodes.len()],
            level: vec![0; self.nodes.len()],
            ..State::default()
        };
        let mut agenda: VecDeque<usize> = self.request_groups.iter().copied().collect();
        let mut options = Vec::new();
        let mut taken = Vec::new();
        while let Some(g) = agenda.pop_front() {
            *steps += 1;
            if *steps > self.max_steps {
                return Attempt::OutOfSteps;
            }
            let group = &self.groups[g];
            if group.candidates.iter().any(|&c| state.selected[c]) {
                continue;
            }
            let mut viable: Vec<Choice> = group
                .candidates
                .iter()
                .copied()
                .filter(|&c| self.installable(c) && self.rejection(c, &state).is_none())
                .map(Choice::Package)
                .collect();
            if !group.excluded.is_empty() && group.request.is_none() {
                viable.push(Choice::Exclusion);
            }
            if viable.is_empty() {
                let blockers = group
                    .candidates
                    .iter()
                    .filter(|&&c| self.installable(c))
                    .filter_map(|&c| self.rejection(c, &state))
                    .map(|b| b.blocker());
                let depends_on = group
                    .owner
                    .into_iter()
                    .chain(blockers)
                    .map(|n| state.level[n])
                    .max()
                    .unwrap_or(0);
                return Attempt::Failed {
                    failure: self.explain_conflict(g, &state),
                    options,
                    taken,
                    depends_on,
                };
            }
            let pick = if viable.len() > 1 {
                let i = decisions.get(options.len()).copied().unwrap_or(0);
                let i = i.min(viable.len() - 1);
                options.push(viable.len());
                taken.push(i);
                viable[i]
            } else {
                viable[0]
            };
            match pick {
                Choice::Exclusion => state.exclusions.push(g),
                Choice::Package(c) => {
                    state.level[c] = options.len();
                    self.select(c, g, &mut state);
                    agenda.extend(self.nodes[c].groups.clone());
                }
            }
        }
        Attempt::Solved(state)
    }

    fn select(&self, c: usize, group: usize, state: &mut State<'x>) {
        let node = &self.nodes[c];
        state.selected[c] = true;
        state.reason[c] = group;
        state.by_name.entry(node.package.name).or_default().push(c);
        for (entry, p) in node.package.provides.iter().enumerate() {
            state
                .by_provided
                .entry(p.name)
                .or_default()
                .push((c, entry));
        }
        for (i, (_, r)) in node.conflicts.iter().enumerate() {
            state.conflicts_on.entry(r.name).or_default().push((c, i));
        }
    }

    /// Why node `c` cannot join the selection, if it cannot.
    fn rejection<'s>(&'s self, c: usize, state: &State<'x>) -> Option<Blocked<'s, 'x>> {
        let node = &self.nodes[c];
        let p = node.package;
        // One version per name (per architecture for Multi-Arch: same, at one version).
        for &s in state.by_name.get(p.name).map_or(&[][..], Vec::as_slice) {
            let other = &self.nodes[s];
            let coinstallable = other.arch != node.arch
                && p.multi_arch == MultiArch::Same
                && other.package.multi_arch == MultiArch::Same
                && p.version == other.package.version;
            if !coinstallable {
                return Some(Blocked::SameName { blocker: s });
            }
        }
        // Its conflicts against the selection.
        for (field, rel) in &node.conflicts {
            let declared = |s| Blocked::Declared {
                declarer: c,
                field,
                rel,
                target: s,
                blocker: s,
            };
            for &s in state.by_name.get(rel.name).map_or(&[][..], Vec::as_slice) {
                let other = self.nodes[s].package;
                if other.name != p.name
                    && self.arch_satisfies(other, rel, node.arch, true)
                    && rel.matches_version(&other.version)
                {
                    return Some(declared(s));
                }
            }
            for &(s, entry) in state
                .by_provided
                .get(rel.name)
                .map_or(&[][..], Vec::as_slice)
            {
                let other = self.nodes[s].package;
                if other.name != p.name
                    && self.arch_satisfies(other, rel, node.arch, true)
                    && provide_satisfies(rel.constraint.as_ref(), &other.provides[entry])
                {
                    return Some(declared(s));
                }
            }
        }
        // The selection's conflicts against it, by name and by what it provides.
        let on = |name: &str| state.conflicts_on.get(name).map_or(&[][..], Vec::as_slice);
        let declared_by = |s: usize, i: usize| {
            let (field, rel) = &self.nodes[s].conflicts[i];
            Blocked::Declared {
                declarer: s,
                field,
                rel,
                target: c,
                blocker: s,
            }
        };
        for &(s, i) in on(p.name) {
            let (_, rel) = &self.nodes[s].conflicts[i];
            if self.nodes[s].package.name != p.name
                && self.arch_satisfies(p, rel, self.nodes[s].arch, true)
                && rel.matches_version(&p.version)
            {
                return Some(declared_by(s, i));
            }
        }
        for provide in &p.provides {
            for &(s, i) in on(provide.name) {
                let (_, rel) = &self.nodes[s].conflicts[i];
                if self.nodes[s].package.name != p.name
                    && self.arch_satisfies(p, rel, self.nodes[s].arch, true)
                    && provide_satisfies(rel.constraint.as_ref(), provide)
                {
                    return Some(declared_by(s, i));
                }
            }
        }
        None
    }

    /// The message for candidate `c` being blocked.
    fn describe_blocked(&self, c: usize, blocked: Blocked<'_, 'x>, state: &State<'x>) -> String {
        match blocked {
            Blocked::SameName { blocker } => format!(
                "{} is not co-installable with {} ({})",
                self.nodes[c].package.display(),
                self.nodes[blocker].package.display(),
                self.why_selected(blocker, state)
            ),
            Blocked::Declared {
                declarer,
                field,
                rel,
                target,
                blocker,
            } => format!(
                "{} declares {field}: {rel}, which {} matches ({})",
                self.nodes[declarer].package.display(),
                self.nodes[target].package.display(),
                self.why_selected(blocker, state)
            ),
        }
    }

    /// `requested`, or `selected for a -> b` naming the chain that selected node `n`.
    fn why_selected(&self, n: usize, state: &State<'x>) -> String {
        let chain = self.chain_of(n, state);
        let name = self.nodes[n].package.name;
        match chain.as_slice() {
            [request]
                if self
                    .groups
                    .get(state.reason[n])
                    .is_some_and(|g| g.owner.is_none()) =>
            {
                format!("{name} was requested as {request}")
            }
            _ => format!("{name} was selected for {}", chain.join(" -> ")),
        }
    }

    /// The chain of group labels that led to selecting node `n`.
    fn chain_of(&self, n: usize, state: &State<'x>) -> Vec<String> {
        let mut chain = Vec::new();
        let mut g = state.reason[n];
        // Reasons point to groups whose owners were selected earlier, so this ends at a request;
        // the bound guards against a cycle all the same.
        for _ in 0..=self.nodes.len() {
            let Some(group) = self.groups.get(g) else {
                break;
            };
            chain.push(group.label());
            match group.owner {
                Some(owner) => g = state.reason[owner],
                None => break,
            }
        }
        chain.reverse();
        chain
    }

    /// The chain to group `g`, which has no viable candidate in `state`, and each candidate's
    /// rejection.
    fn explain_conflict(&self, g: usize, state: &State<'x>) -> Failure {
        let group = &self.groups[g];
        let mut chain = match group.owner {
            Some(owner) => self.chain_of(owner, state),
            None => Vec::new(),
        };
        chain.push(group.label());
        let reasons: Vec<String> = group
            .candidates
            .iter()
            .filter(|&&c| self.installable(c))
            .filter_map(|&c| {
                self.rejection(c, state)
                    .map(|b| self.describe_blocked(c, b, state))
            })
            .collect();
        let reason = if reasons.is_empty() {
            self.describe_missing(group)
        } else {
            reasons.join("; ")
        };
        Failure { chain, reason }
    }

    fn finish(&self, state: State<'x>) -> Resolution {
        let mut packages: Vec<Resolved> = (0..self.nodes.len())
            .filter(|&n| state.selected[n])
            .map(|n| Resolved::from_package(self.nodes[n].package))
            .collect();
        packages.sort_by(|a, b| {
            (&a.name, &a.architecture)
                .cmp(&(&b.name, &b.architecture))
                .then_with(|| a.version.cmp(&b.version))
        });
        let mut warnings = self.warnings.clone();
        let mut seen = HashSet::new();
        for &g in &state.exclusions {
            let group = &self.groups[g];
            // A package selected later may have satisfied the group after all.
            if group.candidates.iter().any(|&c| state.selected[c]) {
                continue;
            }
            let mut chain = match group.owner {
                Some(owner) => self.chain_of(owner, &state),
                None => Vec::new(),
            };
            chain.push(group.label());
            let mut excluded: Vec<String> = group
                .excluded
                .iter()
                .map(|&id| self.universe[id].name.to_owned())
                .collect();
            excluded.sort();
            excluded.dedup();
            if seen.insert((chain.clone(), excluded.clone())) {
                warnings.push(Warning::ExcludedDependency { chain, excluded });
            }
        }
        Resolution { packages, warnings }
    }
}

/// Whether a `Provides` entry satisfies a (possibly versioned) relation: an unversioned relation
/// is satisfied by any provide, a versioned one only by a versioned provide it matches.
fn provide_satisfies(constraint: Option<&Constraint>, provide: &Relation<'_>) -> bool {
    match constraint {
        None => true,
        Some(c) => provide
            .constraint
            .as_ref()
            .is_some_and(|pc| c.matches(&pc.version)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests `a0`..`a{n}`, each with two versions (so a choice each), then `w` and `z`, which
    /// conflict.
    fn many_choices_then_a_conflict(n: usize) -> (String, Vec<Request>) {
        let sha = "0".repeat(64);
        let mut text = String::new();
        let mut requests = Vec::new();
        for i in 0..n {
            for v in ["1", "2"] {
                text.push_str(&format!(
                    "Package: a{i}\nVersion: {v}\nArchitecture: all\nFilename: f\nSize: 1\nSHA256: {sha}\n\n"
                ));
            }
            requests.push(Request::parse(&format!("a{i}")).unwrap());
        }
        text.push_str(&format!(
            "Package: w\nVersion: 1\nArchitecture: all\nFilename: f\nSize: 1\nSHA256: {sha}\n\n\
             Package: z\nVersion: 1\nArchitecture: all\nConflicts: w\nFilename: f\nSize: 1\nSHA256: {sha}\n"
        ));
        requests.push(Request::parse("w").unwrap());
        requests.push(Request::parse("z").unwrap());
        (text, requests)
    }

    #[test]
    fn gives_up_after_the_step_budget_naming_the_first_failure() {
        let (text, requests) = many_choices_then_a_conflict(8);
        let universe = Universe::new([(RepoId(0), text.as_str())]).unwrap();
        let archs = Architectures::native("amd64");
        let run = |max_steps| {
            let mut r = Resolver::new(&universe, &requests, &archs).unwrap();
            r.max_steps = max_steps;
            r.build(&requests).unwrap();
            r.mark_installable();
            r.check_requests().unwrap();
            r.search()
        };
        let e = run(100).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no solution found within 101 steps; the first failure was: z: z 1 (all) declares \
             Conflicts: w, which w 1 (all) matches (w was requested as w)"
        );
        // With the full budget, every combination of the eight choices is tried and the
        // conflict reported as such.
        let e = run(MAX_STEPS).unwrap_err();
        assert!(
            matches!(&e, ResolveError::Unsatisfiable { chain, .. } if chain == &["z"]),
            "{e}"
        );
    }

    #[test]
    fn parses_requests() {
        let r = Request::parse("python3").unwrap();
        assert_eq!(
            r,
            Request::Install {
                name: "python3".into(),
                architecture: None,
                version: None
            }
        );
        let r = Request::parse("libc6:i386=2.36-9+deb12u10").unwrap();
        assert_eq!(r.to_string(), "libc6:i386=2.36-9+deb12u10");
        assert_eq!(r.name(), "libc6");
        assert_eq!(
            Request::parse(" !gawk ").unwrap(),
            Request::Exclude {
                name: "gawk".into()
            }
        );
        for (bad, reason) in [
            ("", "invalid package name \"\""),
            ("!", "invalid package name \"\""),
            ("a=", "invalid version \"\": version string is empty"),
            (
                "a=1.0-",
                "invalid version \"1.0-\": revision number is empty",
            ),
            ("a:", "invalid architecture \"\""),
            ("a b", "invalid package name \"a b\""),
        ] {
            let e = Request::parse(bad).unwrap_err();
            assert_eq!(e.reason, reason, "{bad:?}");
        }
    }
}
