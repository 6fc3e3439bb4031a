//! Network rules and the decisions made from them. Pure: no I/O, no clock.
//!
//! A [`Policy`] is a preset plus rules (`allow-host`, `deny-host`, `allow-cidr`, `deny-cidr`,
//! `allow-tcp`). Deciding a connection takes two steps, because a name is only as good as the
//! address it ends up at:
//!
//! 1. [`Policy::decide`] looks at what the sandbox asked for: a host name (from CONNECT, the TLS
//!    SNI or the HTTP `Host`) or an IP literal. Deny rules win, then allow rules, then the default
//!    deny. IP literals need an `allow-cidr` (or an `allow-tcp` on that address).
//! 2. [`Policy::check_address`] looks at every address the proxy is about to connect to (the
//!    answer of the resolver for a name). Private, loopback, link-local, CGNAT, multicast,
//!    reserved and cloud metadata addresses are refused unless a CIDR rule allows them
//!    explicitly, so an allowed name that resolves to `169.254.169.254` or `10.0.0.1` (DNS
//!    rebinding) still goes nowhere.
//!
//! Every [`Decision`] carries what decided it ([`DecidedBy`]), which the events report.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A malformed rule, named with its text (and line, when it came from a file).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("invalid network rule '{text}': {reason}")]
    Rule { text: String, reason: String },
    #[error("invalid network rule on line {line} '{text}': {reason}")]
    Line {
        line: usize,
        text: String,
        reason: String,
    },
    #[error("unknown network preset '{0}' (expected none, dev or all)")]
    Preset(String),
}

/// A host name, IP literal or pattern that is not acceptable, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid host '{host}': {reason}")]
pub struct HostError {
    pub host: String,
    pub reason: &'static str,
}

/// A starting set of rules; user rules are added to it (and `deny-host` can take any of its
/// hosts away, since deny wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    /// No rules: everything is denied unless a rule allows it.
    None,
    /// Common AI APIs, package registries and git hosts ([`DEV_HOSTS`], [`DEV_TCP`]).
    Dev,
    /// Every public host name and address (`allow-host *`, `allow-cidr 0.0.0.0/0`,
    /// `allow-cidr ::/0`); private and metadata ranges stay refused, since a `/0` is not an
    /// explicit allowance of them.
    All,
}

/// The hosts the `dev` preset allows (HTTP and TLS, any port). Kept in step with
/// docs/network.md.
pub const DEV_HOSTS: &[&str] = &[
    // AI APIs
    "api.anthropic.com",
    "api.openai.com",
    "generativelanguage.googleapis.com",
    "api.mistral.ai",
    "api.groq.com",
    "api.deepseek.com",
    "api.x.ai",
    "api.cohere.com",
    "api.together.xyz",
    "openrouter.ai",
    // package registries
    "registry.npmjs.org",
    "registry.yarnpkg.com",
    "pypi.org",
    "files.pythonhosted.org",
    "crates.io",
    "index.crates.io",
    "static.crates.io",
    "static.rust-lang.org",
    "proxy.golang.org",
    "sum.golang.org",
    "rubygems.org",
    "repo.maven.apache.org",
    "repo1.maven.org",
    "deb.debian.org",
    "security.debian.org",
    // git hosts
    "github.com",
    "api.github.com",
    "codeload.github.com",
    "objects.githubusercontent.com",
    "raw.githubusercontent.com",
    "gitlab.com",
    "bitbucket.org",
];

/// The plain TCP destinations the `dev` preset allows (git over ssh).
pub const DEV_TCP: &[&str] = &["github.com:22", "gitlab.com:22", "bitbucket.org:22"];

impl Preset {
    /// `none`, `dev` or `all`.
    pub fn parse(name: &str) -> Result<Self, PolicyError> {
        match name.trim() {
            "none" => Ok(Self::None),
            "dev" => Ok(Self::Dev),
            "all" => Ok(Self::All),
            other => Err(PolicyError::Preset(other.to_owned())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Dev => "dev",
            Self::All => "all",
        }
    }

    /// The preset's rules, each marked as coming from the preset.
    pub fn rules(self) -> Vec<Rule> {
        let texts: Vec<(RuleKind, &str)> = match self {
            Self::None => Vec::new(),
            Self::Dev => DEV_HOSTS
                .iter()
                .map(|host| (RuleKind::AllowHost, *host))
                .chain(DEV_TCP.iter().map(|dest| (RuleKind::AllowTcp, *dest)))
                .collect(),
            Self::All => vec![
                (RuleKind::AllowHost, "*"),
                (RuleKind::AllowCidr, "0.0.0.0/0"),
                (RuleKind::AllowCidr, "::/0"),
            ],
        };
        texts
            .into_iter()
            .filter_map(|(kind, value)| Rule::new(kind, value).ok())
            .map(|mut rule| {
                rule.origin = Some(self);
                rule
            })
            .collect()
    }
}

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleKind {
    /// `allow-host PATTERN[:PORT]`: HTTP and TLS to matching names (the name is checked on the
    /// `Host` header, the CONNECT host and the SNI).
    AllowHost,
    /// `deny-host PATTERN[:PORT]`: wins over every allow rule.
    DenyHost,
    /// `allow-cidr NET`: IP literals in NET, and explicit permission for special ranges.
    AllowCidr,
    /// `deny-cidr NET`: no connection to an address in NET, whatever the name.
    DenyCidr,
    /// `allow-tcp HOST:PORT`: any TCP to that name (or address) and port, not only HTTP/TLS.
    AllowTcp,
}

impl RuleKind {
    /// The rule's keyword, as written on the command line without `--`.
    pub fn keyword(self) -> &'static str {
        match self {
            Self::AllowHost => "allow-host",
            Self::DenyHost => "deny-host",
            Self::AllowCidr => "allow-cidr",
            Self::DenyCidr => "deny-cidr",
            Self::AllowTcp => "allow-tcp",
        }
    }

    fn from_keyword(word: &str) -> Option<Self> {
        [
            Self::AllowHost,
            Self::DenyHost,
            Self::AllowCidr,
            Self::DenyCidr,
            Self::AllowTcp,
        ]
        .into_iter()
        .find(|kind| kind.keyword() == word)
    }
}

/// What a rule matches: names (by pattern) or addresses (by network).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    Host(HostPattern),
    Net(Cidr),
}

/// One parsed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    kind: RuleKind,
    matcher: Matcher,
    port: Option<u16>,
    origin: Option<Preset>,
}

impl Rule {
    /// A rule from its kind and value, e.g. `(AllowHost, "*.example.org:443")`.
    pub fn new(kind: RuleKind, value: &str) -> Result<Self, PolicyError> {
        let error = |reason: String| PolicyError::Rule {
            text: format!("{} {}", kind.keyword(), value),
            reason,
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(error("missing value".into()));
        }
        let (matcher, port) = match kind {
            RuleKind::AllowHost | RuleKind::DenyHost => {
                let (host, port) = split_port(value).map_err(error)?;
                if parse_ip_literal(host).is_some() || host.contains('/') {
                    return Err(error(format!(
                        "'{host}' is an address; use allow-cidr or deny-cidr for addresses"
                    )));
                }
                let pattern = HostPattern::parse(host).map_err(|e| error(e.reason.into()))?;
                (Matcher::Host(pattern), port)
            }
            RuleKind::AllowCidr | RuleKind::DenyCidr => {
                let cidr = Cidr::parse(value).map_err(error)?;
                (Matcher::Net(cidr), None)
            }
            RuleKind::AllowTcp => {
                let (host, port) = split_port(value).map_err(error)?;
                let Some(port) = port else {
                    return Err(error("expected HOST:PORT (the port is required)".into()));
                };
                let matcher = if host.contains('/') || parse_ip_literal(host).is_some() {
                    Matcher::Net(Cidr::parse(host).map_err(error)?)
                } else {
                    Matcher::Host(HostPattern::parse(host).map_err(|e| error(e.reason.into()))?)
                };
                (matcher, Some(port))
            }
        };
        Ok(Self {
            kind,
            matcher,
            port,
            origin: None,
        })
    }

    /// A rule as written: `allow-host api.example.com`, `--allow-host=api.example.com` or
    /// `--allow-host api.example.com`.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let trimmed = text.trim();
        let trimmed = trimmed.strip_prefix("--").unwrap_or(trimmed);
        let (word, value) = trimmed
            .split_once(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or((trimmed, ""));
        let Some(kind) = RuleKind::from_keyword(word) else {
            return Err(PolicyError::Rule {
                text: text.to_owned(),
                reason: format!(
                    "unknown rule '{word}' (expected allow-host, deny-host, allow-cidr, deny-cidr or allow-tcp)"
                ),
            });
        };
        Self::new(kind, value)
    }

    pub fn kind(&self) -> RuleKind {
        self.kind
    }

    /// The preset the rule came from, if any.
    pub fn preset(&self) -> Option<Preset> {
        self.origin
    }

    fn matches_name(&self, name: &str, port: Option<u16>) -> bool {
        let Matcher::Host(pattern) = &self.matcher else {
            return false;
        };
        let port_ok = match (self.port, port) {
            (None, _) => true,
            (Some(want), Some(got)) => want == got,
            // A port-less question (DNS) is answered by rules on any port.
            (Some(_), None) => true,
        };
        port_ok && pattern.matches(name)
    }

    fn matches_ip(&self, ip: IpAddr, port: u16) -> bool {
        let Matcher::Net(cidr) = &self.matcher else {
            return false;
        };
        self.port.is_none_or(|want| want == port) && cidr.contains(ip)
    }

    /// Whether this rule names `range` (or a part of it) on purpose: its network lies inside the
    /// range. `0.0.0.0/0` contains every private address but names none of them.
    fn is_explicit_for(&self, range: &SpecialRange) -> bool {
        match &self.matcher {
            Matcher::Net(cidr) => cidr.prefix >= range.net.prefix && range.net.contains(cidr.addr),
            Matcher::Host(_) => false,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(preset) = self.origin {
            write!(f, "preset {}: ", preset.name())?;
        }
        write!(f, "{} ", self.kind.keyword())?;
        match &self.matcher {
            Matcher::Host(pattern) => write!(f, "{}", pattern.text)?,
            Matcher::Net(cidr) if self.port.is_some() && cidr.is_single() => match cidr.addr {
                IpAddr::V6(addr) => write!(f, "[{addr}]")?,
                IpAddr::V4(addr) => write!(f, "{addr}")?,
            },
            Matcher::Net(cidr) => write!(f, "{cidr}")?,
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// Splits `HOST:PORT` (or `[V6]:PORT`); the port is optional.
fn split_port(value: &str) -> Result<(&str, Option<u16>), String> {
    if let Some(rest) = value.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err("unclosed '['".into());
        };
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(parse_port(port)?))),
                None => Err(format!("unexpected '{after}' after ']'")),
            },
        };
    }
    if value.parse::<Ipv6Addr>().is_ok() || value.matches(':').count() > 1 {
        // A bare IPv6 address or network: no port.
        return Ok((value, None));
    }
    match value.rsplit_once(':') {
        Some((host, port)) => Ok((host, Some(parse_port(port)?))),
        None => Ok((value, None)),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("invalid port '{text}' (expected 1 to 65535)")),
        Ok(port) => Ok(port),
    }
}

/// A host name pattern: labels compared right to left. A leftmost `*` label matches one or more
/// labels (`*.example.org` matches `a.example.org` and `a.b.example.org`, not `example.org`);
/// `*` inside any other label matches characters within that label (`api-*.example.org`); the
/// pattern `*` alone matches every name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    text: String,
    any_prefix: bool,
    labels: Vec<String>,
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, HostError> {
        let error = |reason| HostError {
            host: text.to_owned(),
            reason,
        };
        let lower = text.trim().trim_end_matches('.').to_ascii_lowercase();
        if lower.is_empty() {
            return Err(error("empty host"));
        }
        if lower == "*" {
            return Ok(Self {
                text: lower,
                any_prefix: true,
                labels: Vec::new(),
            });
        }
        let (any_prefix, rest) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let mut labels = Vec::new();
        for label in rest.split('.') {
            if label.contains("**") {
                return Err(error(
                    "'**' is not a pattern; a leftmost '*.' already matches any depth",
                ));
            }
            check_label(&label.replace('*', "a")).map_err(error)?;
            labels.push(label.to_owned());
        }
        if labels.iter().all(|label| label == "*") {
            return Err(error("a pattern needs at least one literal label"));
        }
        Ok(Self {
            text: lower.clone(),
            any_prefix,
            labels,
        })
    }

    /// Whether `name` (already normalised: lowercase, no trailing dot) matches.
    pub fn matches(&self, name: &str) -> bool {
        let mut name_labels = name.rsplit('.');
        for pattern in self.labels.iter().rev() {
            match name_labels.next() {
                Some(label) if glob_label(pattern, label) => {}
                _ => return false,
            }
        }
        let rest = name_labels.count();
        if self.any_prefix {
            rest >= 1
        } else {
            rest == 0
        }
    }
}

/// `*` in `pattern` matches any run of characters of one label.
fn glob_label(pattern: &str, label: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == label;
    };
    let Some(mut remaining) = label.strip_prefix(first) else {
        return false;
    };
    let mut pieces: Vec<&str> = rest.split('*').collect();
    let last = pieces.pop().unwrap_or("");
    for piece in pieces {
        match remaining.find(piece) {
            Some(at) => remaining = &remaining[at + piece.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

fn check_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() {
        return Err("empty label");
    }
    if label.len() > 63 {
        return Err("label longer than 63 characters");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("only letters, digits, '-' and '_' are allowed in a host name (use punycode for other names)");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("a label cannot start or end with '-'");
    }
    Ok(())
}

/// What the sandbox asked to reach: a host name or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Name(String),
    Ip(IpAddr),
}

impl Target {
    /// A host as found in a CONNECT line, `Host` header, SNI or URL (without port). Names are
    /// lowercased and lose a trailing dot; `[v6]` and plain IP literals become [`Target::Ip`].
    /// A name whose last label is numeric (`127.1`, `0x7f.1`) is refused: resolvers read those as
    /// addresses.
    pub fn parse(host: &str) -> Result<Self, HostError> {
        let error = |reason| HostError {
            host: host.to_owned(),
            reason,
        };
        if let Some(ip) = parse_ip_literal(host) {
            return Ok(Self::Ip(ip));
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return Err(error("empty host"));
        }
        if name.len() > 253 {
            return Err(error("host name longer than 253 characters"));
        }
        for label in name.split('.') {
            check_label(label).map_err(error)?;
        }
        let last = name.rsplit('.').next().unwrap_or("");
        if last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x") {
            return Err(error(
                "looks like an IP address in a form resolvers read differently",
            ));
        }
        Ok(Self::Name(name))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// An IP literal as written in URLs and headers: `1.2.3.4`, `::1` or `[::1]`.
pub fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    let inner = host
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(host);
    inner.parse::<IpAddr>().ok().map(canonical_ip)
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are the IPv4 address they carry.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// An IP network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Self {
        Self {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Self {
        let [a, b, c, d, e, f, g, h] = segments;
        Self {
            addr: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix,
        }
    }

    /// `10.1.0.0/16`, `fd00::/8`, or a single address. Host bits must be zero.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr = addr_text
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .map_err(|_| format!("'{addr_text}' is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => {
                    return Err(format!(
                        "invalid prefix length '/{p}' (expected 0 to {max})"
                    ))
                }
            },
        };
        let cidr = Self { addr, prefix };
        let masked = cidr.network();
        if masked != addr {
            return Err(format!(
                "'{text}' has host bits set (the network is {masked}/{prefix})"
            ));
        }
        Ok(Self {
            addr: canonical_ip(addr),
            prefix: match (addr, canonical_ip(addr)) {
                (IpAddr::V6(_), IpAddr::V4(_)) => prefix.saturating_sub(96),
                _ => prefix,
            },
        })
    }

    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        let probe = Self {
            addr: ip,
            prefix: self.prefix,
        };
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                probe.network() == self.addr
            }
            _ => false,
        }
    }

    fn is_single(&self) -> bool {
        self.prefix == if self.addr.is_ipv4() { 32 } else { 128 }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An address range refused unless a CIDR rule names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialRange {
    /// `metadata`, `private`, `loopback`, `link-local`, `cgnat`, `multicast`, ...
    pub kind: &'static str,
    pub net: Cidr,
}

impl fmt::Display for SpecialRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} range {}", self.kind, self.net)
    }
}

const fn range(kind: &'static str, net: Cidr) -> SpecialRange {
    SpecialRange { kind, net }
}

/// Refused ranges, most specific first (metadata addresses before the ranges holding them).
pub const SPECIAL_RANGES: &[SpecialRange] = &[
    range("metadata", Cidr::v4(169, 254, 169, 254, 32)),
    range("metadata", Cidr::v4(169, 254, 170, 2, 32)),
    range("metadata", Cidr::v4(100, 100, 100, 200, 32)),
    range("metadata", Cidr::v4(168, 63, 129, 16, 32)),
    range(
        "metadata",
        Cidr::v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128),
    ),
    range("unspecified", Cidr::v4(0, 0, 0, 0, 8)),
    range("private", Cidr::v4(10, 0, 0, 0, 8)),
    range("cgnat", Cidr::v4(100, 64, 0, 0, 10)),
    range("loopback", Cidr::v4(127, 0, 0, 0, 8)),
    range("link-local", Cidr::v4(169, 254, 0, 0, 16)),
    range("private", Cidr::v4(172, 16, 0, 0, 12)),
    range("reserved", Cidr::v4(192, 0, 0, 0, 24)),
    range("documentation", Cidr::v4(192, 0, 2, 0, 24)),
    range("private", Cidr::v4(192, 168, 0, 0, 16)),
    range("benchmark", Cidr::v4(198, 18, 0, 0, 15)),
    range("documentation", Cidr::v4(198, 51, 100, 0, 24)),
    range("documentation", Cidr::v4(203, 0, 113, 0, 24)),
    range("multicast", Cidr::v4(224, 0, 0, 0, 4)),
    range("reserved", Cidr::v4(240, 0, 0, 0, 4)),
    range("unspecified", Cidr::v6([0; 8], 128)),
    range("loopback", Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128)),
    range("discard", Cidr::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64)),
    range(
        "documentation",
        Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
    ),
    range("unique-local", Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7)),
    range("link-local", Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10)),
    range("site-local", Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10)),
    range("multicast", Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8)),
];

const NAT64: Cidr = Cidr::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
const SIX_TO_FOUR: Cidr = Cidr::v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);

/// The refused range `ip` falls in, if any. IPv4 addresses carried in IPv6 (mapped, NAT64,
/// 6to4) are classified by the IPv4 address.
pub fn special_range(ip: IpAddr) -> Option<&'static SpecialRange> {
    let ip = canonical_ip(ip);
    let embedded = match ip {
        IpAddr::V6(v6) if NAT64.contains(ip) => {
            let [.., a, b, c, d] = v6.octets();
            Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
        }
        IpAddr::V6(v6) if SIX_TO_FOUR.contains(ip) => {
            let o = v6.octets();
            Some(IpAddr::V4(Ipv4Addr::new(o[2], o[3], o[4], o[5])))
        }
        _ => None,
    };
    let probe = embedded.unwrap_or(ip);
    SPECIAL_RANGES
        .iter()
        .find(|range| range.net.contains(probe))
}

/// Whether a connection may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// What decided a [`Decision`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecidedBy {
    /// A rule (user or preset).
    Rule(Rule),
    /// No rule allowed it.
    DefaultDeny,
    /// An IP literal with no `allow-cidr` covering it.
    IpLiteral,
    /// An address in a refused range with no CIDR rule naming it.
    Range(SpecialRange),
    /// `strict_hostname`: a TLS ClientHello without SNI, or HTTP without `Host`.
    NoHostname,
    /// The CONNECT host and the TLS SNI (or HTTP `Host`) differ.
    HostMismatch,
    /// The bytes were neither what the rule allows nor readable (e.g. not TLS/HTTP after
    /// CONNECT to a host allowed only for HTTP/TLS).
    Protocol,
    /// A secret placeholder in a request to a host the secret is not bound to.
    SecretExfiltration,
}

impl fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rule(rule) => write!(f, "{rule}"),
            Self::DefaultDeny => f.write_str("default deny"),
            Self::IpLiteral => f.write_str("ip literal without allow-cidr"),
            Self::Range(range) => write!(f, "{range} without an explicit allow-cidr"),
            Self::NoHostname => f.write_str("strict hostname: no sni or host header"),
            Self::HostMismatch => f.write_str("connect host and sni or host header differ"),
            Self::Protocol => f.write_str("not tls or http; plain tcp needs allow-tcp"),
            Self::SecretExfiltration => f.write_str("secret placeholder for another host"),
        }
    }
}

/// A verdict and what decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub decided_by: DecidedBy,
}

impl Decision {
    pub fn deny(decided_by: DecidedBy) -> Self {
        Self {
            verdict: Verdict::Deny,
            decided_by,
        }
    }

    fn allow(rule: &Rule) -> Self {
        Self {
            verdict: Verdict::Allow,
            decided_by: DecidedBy::Rule(rule.clone()),
        }
    }

    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    /// Whether the deciding rule allows any bytes (`allow-tcp`, `allow-cidr`), not only HTTP and
    /// TLS whose name was checked.
    pub fn allows_plain_tcp(&self) -> bool {
        matches!(
            &self.decided_by,
            DecidedBy::Rule(rule) if matches!(rule.kind, RuleKind::AllowTcp | RuleKind::AllowCidr)
        ) && self.is_allowed()
    }
}

/// What kind of traffic a connection carries, as far as the proxy can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// HTTP or TLS whose host name the proxy reads (Host header, CONNECT host, SNI).
    Web,
    /// Bytes the proxy cannot attach a verified name to: only `allow-tcp` and `allow-cidr`.
    Plain,
}

/// A preset plus rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    preset: Preset,
    rules: Vec<Rule>,
}

impl Default for Policy {
    fn default() -> Self {
        Self::new(Preset::None)
    }
}

impl Policy {
    /// A policy with only the preset's rules.
    pub fn new(preset: Preset) -> Self {
        Self {
            preset,
            rules: preset.rules(),
        }
    }

    /// Rules as written (see [`Rule::parse`]); `preset NAME` may appear once and sets the
    /// preset (default `none`).
    pub fn parse<I, S>(rules: I) -> Result<Self, PolicyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut preset = Preset::None;
        let mut parsed = Vec::new();
        for text in rules {
            let text = text.as_ref();
            match parse_preset_line(text) {
                Some(name) => preset = Preset::parse(name)?,
                None => parsed.push(Rule::parse(text)?),
            }
        }
        let mut policy = Self::new(preset);
        policy.rules.extend(parsed);
        Ok(policy)
    }

    /// A rules file: one rule per line, `#` starts a comment. Errors name the line.
    pub fn parse_lines(text: &str) -> Result<Self, PolicyError> {
        let mut lines = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let content = line.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let checked = match parse_preset_line(content) {
                Some(name) => Preset::parse(name).map(|_| ()),
                None => Rule::parse(content).map(|_| ()),
            };
            if let Err(err) = checked {
                let reason = match err {
                    PolicyError::Rule { reason, .. } => reason,
                    other => other.to_string(),
                };
                return Err(PolicyError::Line {
                    line: index + 1,
                    text: content.to_owned(),
                    reason,
                });
            }
            lines.push(content);
        }
        Self::parse(lines)
    }

    pub fn preset(&self) -> Preset {
        self.preset
    }

    /// Every rule, preset rules first.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn push(&mut self, rule: Rule) {
        self.rules.push(rule);
    }

    /// Decides a connection to `target:port` carrying `traffic`, before resolution.
    pub fn decide(&self, target: &Target, port: u16, traffic: Traffic) -> Decision {
        match target {
            Target::Name(name) => self.decide_name(name, Some(port), traffic),
            Target::Ip(ip) => self.decide_ip(*ip, port),
        }
    }

    /// Decides a DNS question for `name`: allowed when any allow rule (on any port) matches it
    /// and no port-less deny rule does.
    pub fn decide_dns(&self, name: &str) -> Decision {
        self.decide_name(name, None, Traffic::Web)
    }

    fn decide_name(&self, name: &str, port: Option<u16>, traffic: Traffic) -> Decision {
        let denied = self.rules.iter().find(|rule| {
            rule.kind == RuleKind::DenyHost
                && match port {
                    Some(_) => rule.matches_name(name, port),
                    None => rule.port.is_none() && rule.matches_name(name, None),
                }
        });
        if let Some(rule) = denied {
            return Decision::deny(DecidedBy::Rule(rule.clone()));
        }
        let by_kind = |kind: RuleKind| {
            self.rules
                .iter()
                .find(|rule| rule.kind == kind && rule.matches_name(name, port))
        };
        let allowed = match traffic {
            Traffic::Web => by_kind(RuleKind::AllowHost).or_else(|| by_kind(RuleKind::AllowTcp)),
            Traffic::Plain => by_kind(RuleKind::AllowTcp),
        };
        match allowed {
            Some(rule) => Decision::allow(rule),
            None => Decision::deny(DecidedBy::DefaultDeny),
        }
    }

    fn decide_ip(&self, ip: IpAddr, port: u16) -> Decision {
        let ip = canonical_ip(ip);
        if let Some(rule) = self.denying_cidr(ip) {
            return Decision::deny(DecidedBy::Rule(rule.clone()));
        }
        let special = special_range(ip);
        let allowed = self.rules.iter().find(|rule| {
            matches!(rule.kind, RuleKind::AllowCidr | RuleKind::AllowTcp)
                && rule.matches_ip(ip, port)
                && special.is_none_or(|range| rule.is_explicit_for(range))
        });
        match (allowed, special) {
            (Some(rule), _) => Decision::allow(rule),
            (None, Some(range)) => Decision::deny(DecidedBy::Range(*range)),
            (None, None) => Decision::deny(DecidedBy::IpLiteral),
        }
    }

    fn denying_cidr(&self, ip: IpAddr) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|rule| rule.kind == RuleKind::DenyCidr && rule.matches_ip(ip, 0))
    }

    /// Checks an address the proxy is about to connect to (after resolving an allowed name, or
    /// the original destination of a plain TCP connection). `None` means go ahead.
    pub fn check_address(&self, ip: IpAddr, port: u16) -> Option<Decision> {
        self.address_refusal(ip, Some(port))
    }

    /// [`Policy::check_address`] for a DNS answer, where the port is not known yet: an
    /// `allow-tcp` on the address counts whatever its port.
    pub fn check_dns_address(&self, ip: IpAddr) -> Option<Decision> {
        self.address_refusal(ip, None)
    }

    fn address_refusal(&self, ip: IpAddr, port: Option<u16>) -> Option<Decision> {
        let ip = canonical_ip(ip);
        if let Some(rule) = self.denying_cidr(ip) {
            return Some(Decision::deny(DecidedBy::Rule(rule.clone())));
        }
        let range = special_range(ip)?;
        let explicit = self.rules.iter().any(|rule| {
            matches!(rule.kind, RuleKind::AllowCidr | RuleKind::AllowTcp)
                && rule.matches_ip(ip, port.unwrap_or(rule.port.unwrap_or(0)))
                && rule.is_explicit_for(range)
        });
        (!explicit).then(|| Decision::deny(DecidedBy::Range(*range)))
    }
}

fn parse_preset_line(text: &str) -> Option<&str> {
    let trimmed = text.trim();
    let trimmed = trimmed.strip_prefix("--").unwrap_or(trimmed);
    let rest = trimmed.strip_prefix("preset")?;
    let rest = rest.strip_prefix(['=', ' ', '\t'])?;
    Some(rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[&str]) -> Policy {
        Policy::parse(rules).unwrap()
    }

    fn name(host: &str) -> Target {
        Target::parse(host).unwrap()
    }

    fn ip(text: &str) -> Target {
        Target::Ip(text.parse().unwrap())
    }

    fn check(policy: &Policy, target: Target, port: u16, expected: &str) {
        let decision = policy.decide(&target, port, Traffic::Web);
        let got = format!("{} by {}", decision.verdict.as_str(), decision.decided_by);
        assert_eq!(got, expected, "{target}:{port}");
    }

    #[test]
    fn deny_wins_then_allow_then_default_deny() {
        let p = policy(&[
            "allow-host *.example.org",
            "deny-host secret.example.org",
            "allow-host api.example.com",
        ]);
        check(
            &p,
            name("a.example.org"),
            443,
            "allow by allow-host *.example.org",
        );
        check(
            &p,
            name("a.b.example.org"),
            80,
            "allow by allow-host *.example.org",
        );
        check(&p, name("example.org"), 443, "deny by default deny");
        check(
            &p,
            name("secret.example.org"),
            443,
            "deny by deny-host secret.example.org",
        );
        check(
            &p,
            name("API.Example.COM."),
            443,
            "allow by allow-host api.example.com",
        );
        check(&p, name("other.example.com"), 443, "deny by default deny");
    }

    #[test]
    fn ports_and_label_globs() {
        let p = policy(&["allow-host *.example.org:443", "--allow-host=api-*.test"]);
        check(
            &p,
            name("x.example.org"),
            443,
            "allow by allow-host *.example.org:443",
        );
        check(&p, name("x.example.org"), 80, "deny by default deny");
        check(
            &p,
            name("api-eu.test"),
            8443,
            "allow by allow-host api-*.test",
        );
        check(&p, name("api.test"), 443, "deny by default deny");
        check(&p, name("x.api-eu.test"), 443, "deny by default deny");
        let any = policy(&["allow-host *"]);
        check(&any, name("anything.at.all"), 1, "allow by allow-host *");
        check(&any, name("localhost"), 1, "allow by allow-host *");
    }

    #[test]
    fn ip_literals_need_allow_cidr() {
        let p = policy(&[
            "allow-host *",
            "allow-cidr 10.1.0.0/16",
            "allow-cidr 203.0.113.0/24",
        ]);
        check(
            &p,
            ip("93.184.216.34"),
            443,
            "deny by ip literal without allow-cidr",
        );
        check(&p, ip("10.1.2.3"), 443, "allow by allow-cidr 10.1.0.0/16");
        check(
            &p,
            ip("::ffff:10.1.2.3"),
            443,
            "allow by allow-cidr 10.1.0.0/16",
        );
        check(
            &p,
            ip("10.2.0.1"),
            443,
            "deny by private range 10.0.0.0/8 without an explicit allow-cidr",
        );
        check(
            &p,
            ip("203.0.113.9"),
            22,
            "allow by allow-cidr 203.0.113.0/24",
        );
    }

    #[test]
    fn special_ranges_need_an_explicit_cidr() {
        let p = policy(&["preset all"]);
        check(
            &p,
            ip("8.8.8.8"),
            53,
            "allow by preset all: allow-cidr 0.0.0.0/0",
        );
        for (addr, kind) in [
            ("169.254.169.254", "metadata"),
            ("fd00:ec2::254", "metadata"),
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("10.0.0.1", "private"),
            ("172.20.0.1", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "cgnat"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("fd12::1", "unique-local"),
            ("0.0.0.0", "unspecified"),
            ("64:ff9b::a00:1", "private"),
            ("2002:a00:1::", "private"),
        ] {
            let decision = p.decide(&ip(addr), 80, Traffic::Web);
            assert!(
                matches!(decision.decided_by, DecidedBy::Range(r) if r.kind == kind),
                "{addr}: {decision:?}"
            );
            let target = addr.parse().unwrap();
            assert!(p.check_address(target, 80).is_some(), "{addr}");
        }
        // A CIDR inside the range names it; a wider one does not; metadata needs its own /32.
        let p = policy(&["allow-cidr 127.0.0.2/32", "allow-cidr 169.254.0.0/16"]);
        assert_eq!(p.check_address("127.0.0.2".parse().unwrap(), 80), None);
        assert!(p.check_address("127.0.0.3".parse().unwrap(), 80).is_some());
        assert_eq!(p.check_address("169.254.1.1".parse().unwrap(), 80), None);
        assert!(p
            .check_address("169.254.169.254".parse().unwrap(), 80)
            .is_some());
        let p = policy(&["allow-cidr 169.254.169.254"]);
        assert_eq!(
            p.check_address("169.254.169.254".parse().unwrap(), 80),
            None
        );
        assert_eq!(p.check_address("93.184.216.34".parse().unwrap(), 80), None);
    }

    #[test]
    fn deny_cidr_applies_to_resolved_addresses() {
        let p = policy(&["preset all", "deny-cidr 93.184.0.0/16"]);
        let denied = p
            .check_address("93.184.216.34".parse().unwrap(), 443)
            .unwrap();
        assert_eq!(denied.decided_by.to_string(), "deny-cidr 93.184.0.0/16");
    }

    #[test]
    fn allow_tcp_by_name_or_address() {
        let p = policy(&["allow-tcp git.example.com:22", "allow-tcp 10.9.8.7:5432"]);
        let plain = |target: Target, port| p.decide(&target, port, Traffic::Plain);
        assert!(plain(name("git.example.com"), 22).allows_plain_tcp());
        assert!(!plain(name("git.example.com"), 23).is_allowed());
        assert!(plain(ip("10.9.8.7"), 5432).allows_plain_tcp());
        assert!(!plain(ip("10.9.8.7"), 5433).is_allowed());
        assert_eq!(p.check_address("10.9.8.7".parse().unwrap(), 5432), None);
        // allow-host never allows plain TCP.
        let web_only = policy(&["allow-host git.example.com"]);
        assert!(!web_only
            .decide(&name("git.example.com"), 22, Traffic::Plain)
            .is_allowed());
        assert!(!web_only
            .decide(&name("git.example.com"), 22, Traffic::Web)
            .allows_plain_tcp());
    }

    #[test]
    fn dns_decisions_ignore_ports() {
        let p = policy(&[
            "allow-host a.test:8443",
            "allow-tcp b.test:22",
            "deny-host c.test:80",
            "allow-host c.test",
            "allow-host *.d.test",
            "deny-host x.d.test",
        ]);
        for (host, allowed) in [
            ("a.test", true),
            ("b.test", true),
            ("c.test", true),
            ("y.d.test", true),
            ("x.d.test", false),
            ("e.test", false),
        ] {
            assert_eq!(p.decide_dns(host).is_allowed(), allowed, "{host}");
        }
    }

    #[test]
    fn presets() {
        let dev = policy(&["preset dev", "deny-host api.openai.com"]);
        check(
            &dev,
            name("pypi.org"),
            443,
            "allow by preset dev: allow-host pypi.org",
        );
        check(
            &dev,
            name("api.openai.com"),
            443,
            "deny by deny-host api.openai.com",
        );
        assert!(dev
            .decide(&name("github.com"), 22, Traffic::Plain)
            .allows_plain_tcp());
        assert_eq!(Preset::Dev.rules().len(), DEV_HOSTS.len() + DEV_TCP.len());
        check(&policy(&[]), name("pypi.org"), 443, "deny by default deny");
        assert_eq!(
            Policy::parse(["preset most"]).unwrap_err().to_string(),
            "unknown network preset 'most' (expected none, dev or all)"
        );
    }

    #[test]
    fn bad_rules_name_their_text() {
        for (text, message) in [
            ("allow-host", "invalid network rule 'allow-host ': missing value"),
            ("allow-host 10.0.0.1", "invalid network rule 'allow-host 10.0.0.1': '10.0.0.1' is an address; use allow-cidr or deny-cidr for addresses"),
            ("allow-host a..b", "invalid network rule 'allow-host a..b': empty label"),
            ("allow-host a.b:99999", "invalid network rule 'allow-host a.b:99999': invalid port '99999' (expected 1 to 65535)"),
            ("allow-host **.b", "invalid network rule 'allow-host **.b': '**' is not a pattern; a leftmost '*.' already matches any depth"),
            ("allow-host *.*", "invalid network rule 'allow-host *.*': a pattern needs at least one literal label"),
            ("allow-cidr 10.1.2.3/16", "invalid network rule 'allow-cidr 10.1.2.3/16': '10.1.2.3/16' has host bits set (the network is 10.1.0.0/16)"),
            ("allow-cidr 10.0.0.0/33", "invalid network rule 'allow-cidr 10.0.0.0/33': invalid prefix length '/33' (expected 0 to 32)"),
            ("allow-tcp git.test", "invalid network rule 'allow-tcp git.test': expected HOST:PORT (the port is required)"),
            ("allow-everything x", "invalid network rule 'allow-everything x': unknown rule 'allow-everything' (expected allow-host, deny-host, allow-cidr, deny-cidr or allow-tcp)"),
        ] {
            assert_eq!(Rule::parse(text).unwrap_err().to_string(), message, "{text}");
        }
        let err =
            Policy::parse_lines("# rules\nallow-host a.test\n\nallow-cidr nope # x\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid network rule on line 4 'allow-cidr nope': 'nope' is not an IP address"
        );
    }

    #[test]
    fn targets_refuse_numeric_names() {
        assert_eq!(Target::parse("[::1]").unwrap(), ip("::1"));
        assert_eq!(Target::parse("::ffff:127.0.0.1").unwrap(), ip("127.0.0.1"));
        for host in ["127.1", "0x7f.1", "a b", "", "a.-b"] {
            assert!(Target::parse(host).is_err(), "{host}");
        }
    }

    #[test]
    fn rules_display_as_written() {
        for text in [
            "allow-host *.example.org:443",
            "allow-tcp [2001:db8::1]:22",
            "allow-tcp 10.0.0.1:22",
            "allow-cidr fd00::/8",
            "deny-cidr 10.0.0.0/8",
        ] {
            assert_eq!(Rule::parse(text).unwrap().to_string(), text);
        }
    }
}
