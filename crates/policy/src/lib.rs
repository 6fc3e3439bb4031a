//! The sandbox policy: what a sandboxed command may read, write, see and use.
//!
//! Why it exists: one policy model serves every backend and every verb (`run`, `exec`,
//! `policy show`). This crate turns TOML text into a validated [`Policy`], layers a policy file
//! over the built-in agent default and command-line flags over that, and prints the effective
//! policy back as TOML.
//!
//! What it guarantees:
//!
//! - it does no I/O: callers pass text in and get values out (path expansion takes the values of
//!   `~` and `$WORKSPACE` as arguments);
//! - unknown keys, relative paths, non-positive limits, unknown isolation layers and host
//!   networking without its `dangerously_` confirmation are errors, reported with the line;
//! - [`Policy::to_toml`] prints a policy that parses back to the same [`Policy`].
//!
//! Merge rules (file over default, flags over file): a key present in the file replaces the
//! default, except `filesystem.hide`, which adds to the default hidden paths (`unhide` takes them
//! back). Command-line overrides add to lists and replace scalars. See `docs/policy.md`.

mod paths;
mod values;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use paths::{expand_path, ExpandError, PathVariables, PolicyPath};
pub use values::{
    parse_duration, parse_size, ByteSize, Count, Cpus, EnvName, EnvPattern, HumanDuration,
    SyscallName, ValueError,
};

/// Paths hidden from every sandbox unless a policy takes them back with `unhide`: credentials
/// and secrets an agent must never read.
pub const DEFAULT_HIDE: &[&str] = &[
    "~/.ssh",
    "~/.aws",
    "~/.config/gcloud",
    "~/.azure",
    "~/.kube",
    "~/.docker/config.json",
    "~/.netrc",
    "~/.gnupg",
    "/etc/shadow",
    "/etc/gshadow",
    "/root",
];

/// A complete, validated sandbox policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// `[filesystem]`: what the sandbox may read and write, and what it must not see.
    pub filesystem: Filesystem,
    /// `[environment]`: which host environment variables pass in, and which are set.
    pub environment: Environment,
    /// `[limits]`: resource limits.
    pub limits: Limits,
    /// `[seccomp]`: syscalls taken back from the default denials.
    pub seccomp: Seccomp,
    /// `[network]`: network access.
    pub network: Network,
    /// `[secrets.NAME]`: secrets bound to hosts (values live in hardbox's secret store).
    pub secrets: BTreeMap<String, SecretBinding>,
    /// `[sandbox]`: isolation layers skipped on purpose.
    pub sandbox: Sandbox,
}

/// `[filesystem]`. Paths are absolute or start with `~`, `$HOME` or `$WORKSPACE`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filesystem {
    /// Paths readable and executable, with everything under them. Default `["/"]`.
    pub read: Vec<PolicyPath>,
    /// Paths writable, with everything under them. Default `["$WORKSPACE", "/tmp"]`.
    pub write: Vec<PolicyPath>,
    /// Paths hidden from the sandbox (masked, whatever `read` says). A policy file's list adds
    /// to [`DEFAULT_HIDE`]; a path listed here stays hidden even if `unhide` names it.
    #[serde(default)]
    pub hide: Vec<PolicyPath>,
    /// Paths of [`DEFAULT_HIDE`] taken back. Naming any other path is an error. Default empty.
    pub unhide: Vec<PolicyPath>,
}

/// `[environment]`. Nothing from the host passes in unless `allow` names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Environment {
    /// Host variables passed in, by name or pattern (`LC_*`). Default `PATH`, `TERM`, `LANG`,
    /// `LC_*`, `HOME`, `USER`, `TZ`.
    pub allow: Vec<EnvPattern>,
    /// Variables set in the sandbox, over any passed in. Default empty.
    pub set: BTreeMap<EnvName, String>,
}

/// `[limits]`. Every limit is positive; there is no "unlimited".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Memory limit (cgroup `memory.max`), like `512m` or `2g`. Default `2g`.
    pub memory: ByteSize,
    /// CPU limit in CPUs (cgroup `cpu.max`), fractions allowed. Default `2.0`.
    pub cpus: Cpus,
    /// Maximum number of processes and threads (cgroup `pids.max`). Default `1024`.
    pub pids: Count,
    /// Wall-clock limit for the command, like `30s`, `5m` or `1h30m`. Default `30m`.
    pub timeout: HumanDuration,
    /// Maximum open files per process (`RLIMIT_NOFILE`). Default `4096`.
    pub nofile: Count,
}

/// `[seccomp]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Seccomp {
    /// Syscalls taken back from the default denials, by name (`ptrace` for a debugger). The
    /// sandbox rejects names the seccomp filter does not deny. Default empty.
    pub allow: Vec<SyscallName>,
}

/// `[network]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// How the sandbox reaches the network. Default `none`.
    pub mode: NetworkMode,
    /// Must be `true` for `mode = "host"`, which gives up network isolation.
    pub dangerously_host_network: bool,
    /// With `mode = "proxy"`: a named rule set the rules below add to. Default `none`.
    pub preset: NetworkPreset,
    /// Hosts the proxy lets through: `api.example.com`, `*.example.org`, with an optional
    /// `:PORT`.
    pub allow_hosts: Vec<String>,
    /// Hosts the proxy refuses, whatever else allows them (deny wins).
    pub deny_hosts: Vec<String>,
    /// Address ranges the proxy lets through (also private ones, which are refused otherwise).
    pub allow_cidrs: Vec<String>,
    /// Other TCP the proxy lets through: `HOST:PORT` (e.g. ssh to a git host).
    pub allow_tcp: Vec<String>,
    /// Refuse TLS without a server name and HTTP without a Host header, instead of deciding
    /// them by their destination address.
    pub strict_hostname: bool,
    /// PEM files of certificate authorities trusted for upstream servers when the proxy
    /// terminates TLS (hosts with secrets), in addition to the host's trust store (e.g. a
    /// corporate TLS-inspecting proxy's CA). Absolute paths on the host.
    pub upstream_ca_files: Vec<HostFile>,
    /// Names the proxy resolves to a fixed address instead of asking the host's resolver
    /// (like `curl --resolve`). The address check still applies: a private or loopback address
    /// also needs an `allow_cidrs` entry naming it.
    pub hosts: BTreeMap<HostName, std::net::IpAddr>,
}

/// An absolute path on the host, read by hardbox itself (not by the sandbox).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostFile(String);

impl HostFile {
    /// `path`, if it is absolute.
    ///
    /// # Errors
    ///
    /// [`ValueError::Name`] for relative paths and paths with a NUL byte.
    pub fn new(path: &str) -> Result<HostFile, ValueError> {
        if !path.starts_with('/') || path.contains('\0') {
            return Err(ValueError::Name {
                what: "host file",
                input: path.to_owned(),
                expected: "an absolute path on the host",
            });
        }
        Ok(HostFile(path.to_owned()))
    }

    /// The path.
    pub fn as_path(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }
}

impl TryFrom<String> for HostFile {
    type Error = ValueError;

    fn try_from(path: String) -> Result<HostFile, ValueError> {
        HostFile::new(&path)
    }
}

impl From<HostFile> for String {
    fn from(path: HostFile) -> String {
        path.0
    }
}

/// A host name as a DNS name: lowercase letters, digits and `-` in dot-separated labels, the
/// last one not numeric (resolvers would read `127.1` as an address). No wildcards.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostName(String);

impl HostName {
    /// `name`, lowercased, without a trailing dot, if it is a host name.
    ///
    /// # Errors
    ///
    /// [`ValueError::Name`] naming the input.
    pub fn new(name: &str) -> Result<HostName, ValueError> {
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        let last_numeric = lower
            .rsplit('.')
            .next()
            .is_some_and(|label| label.bytes().all(|b| b.is_ascii_digit()));
        if lower.len() > 253 || !lower.split('.').all(label_ok) || last_numeric {
            return Err(ValueError::Name {
                what: "host name",
                input: name.to_owned(),
                expected: "letters, digits and '-' in dot-separated labels, the last one not a number (no wildcards)",
            });
        }
        Ok(HostName(lower))
    }

    /// The name, lowercase.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HostName {
    type Error = ValueError;

    fn try_from(name: String) -> Result<HostName, ValueError> {
        HostName::new(&name)
    }
}

impl From<HostName> for String {
    fn from(name: HostName) -> String {
        name.0
    }
}

/// `network.preset`: rule sets for `mode = "proxy"` (the proxy's documentation lists them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkPreset {
    /// No host allowed but the rules' own.
    #[default]
    None,
    /// Common AI APIs, package registries and git hosts.
    Dev,
    /// Every public host (private and metadata addresses stay refused).
    All,
}

/// `[secrets.NAME]`: a host-side secret the sandbox sees only as a placeholder; the proxy puts
/// the real value into requests to `hosts`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretBinding {
    /// Hosts the secret may be sent to (`api.example.com`, `*.example.org`).
    pub hosts: Vec<String>,
    /// The request header that carries it (e.g. `x-api-key`); without one, the placeholder is
    /// replaced wherever it appears in the request's headers.
    pub header: Option<String>,
}

/// `network.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Loopback only.
    #[default]
    None,
    /// Only through hardbox's egress proxy, which applies the allow and deny rules.
    Proxy,
    /// The host's network, unfiltered. Requires `dangerously_host_network = true`.
    Host,
}

/// `[sandbox]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sandbox {
    /// Isolation layers to skip, by name. Every layer is required unless named here; use it
    /// on hosts that cannot enforce a layer (`hardbox doctor` says which). Default empty.
    pub dangerously_skip: Vec<Layer>,
}

/// An isolation layer that a policy may skip by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// Landlock filesystem rules.
    Landlock,
    /// The seccomp syscall filter.
    Seccomp,
    /// cgroup resource limits.
    Cgroups,
    /// The user namespace (and with it rootless operation).
    Userns,
}

impl Layer {
    /// Every layer, in the order the launcher applies them.
    pub const ALL: &'static [Layer] = &[
        Layer::Userns,
        Layer::Cgroups,
        Layer::Landlock,
        Layer::Seccomp,
    ];

    /// The name used in policies.
    pub fn name(self) -> &'static str {
        match self {
            Layer::Landlock => "landlock",
            Layer::Seccomp => "seccomp",
            Layer::Cgroups => "cgroups",
            Layer::Userns => "userns",
        }
    }
}

/// Command-line flags layered over a policy by [`Policy::merge`]: lists add, scalars replace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyOverrides {
    /// Added to `filesystem.read`.
    pub read: Vec<PolicyPath>,
    /// Added to `filesystem.write`.
    pub write: Vec<PolicyPath>,
    /// Added to `filesystem.hide`.
    pub hide: Vec<PolicyPath>,
    /// Default hidden paths taken out of `filesystem.hide`.
    pub unhide: Vec<PolicyPath>,
    /// Added to `environment.allow`.
    pub env_allow: Vec<EnvPattern>,
    /// Set in `environment.set`, replacing values of the same name.
    pub env_set: BTreeMap<EnvName, String>,
    /// Replaces `limits.memory`.
    pub memory: Option<ByteSize>,
    /// Replaces `limits.cpus`.
    pub cpus: Option<Cpus>,
    /// Replaces `limits.pids`.
    pub pids: Option<Count>,
    /// Replaces `limits.timeout`.
    pub timeout: Option<HumanDuration>,
    /// Replaces `limits.nofile`.
    pub nofile: Option<Count>,
    /// Added to `seccomp.allow`.
    pub seccomp_allow: Vec<SyscallName>,
    /// Replaces `network.mode`.
    pub network: Option<NetworkMode>,
    /// Sets `network.dangerously_host_network` when true.
    pub dangerously_host_network: bool,
    /// Replaces `network.preset`.
    pub network_preset: Option<NetworkPreset>,
    /// Added to `network.allow_hosts`.
    pub allow_hosts: Vec<String>,
    /// Added to `network.deny_hosts`.
    pub deny_hosts: Vec<String>,
    /// Added to `network.allow_cidrs`.
    pub allow_cidrs: Vec<String>,
    /// Added to `network.allow_tcp`.
    pub allow_tcp: Vec<String>,
    /// Sets `network.strict_hostname` when true.
    pub strict_hostname: bool,
    /// Added to `sandbox.dangerously_skip`.
    pub dangerously_skip: Vec<Layer>,
}

/// A policy that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Bad TOML, an unknown key or a bad value.
    #[error("invalid policy at {location}: {message}")]
    Syntax {
        /// `line N` with the line's text, or `end of input`.
        location: String,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// What is wrong, naming the key or value.
        message: String,
    },
    /// Values that are valid alone but not together.
    #[error("invalid policy")]
    Invalid(#[from] ValidationError),
}

/// A rule across keys that a policy breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A secret name that cannot name a secret in the store.
    #[error("secret name {name:?}: use letters, digits and '_', not starting with a digit (it names an environment variable)")]
    SecretName { name: String },
    /// A secret bound to no host would never be sent anywhere.
    #[error("secrets.{name}.hosts is empty: name the hosts the secret may be sent to")]
    SecretWithoutHosts { name: String },
    /// Host networking without its confirmation.
    #[error("network.mode = \"host\" gives up network isolation and requires network.dangerously_host_network = true")]
    HostNetworkNotConfirmed,
    /// `unhide` names a path that is not hidden by default.
    #[error("filesystem.unhide lists {path}, which is not hidden by default (default hidden paths: {defaults})")]
    UnhideNotDefault {
        /// The path.
        path: PolicyPath,
        /// [`DEFAULT_HIDE`], comma-separated.
        defaults: String,
    },
}

fn paths(paths: &[&str]) -> Vec<PolicyPath> {
    paths
        .iter()
        .filter_map(|path| PolicyPath::new(path).ok())
        .collect()
}

impl Default for Filesystem {
    fn default() -> Filesystem {
        Filesystem {
            read: paths(&["/"]),
            write: paths(&["$WORKSPACE", "/tmp"]),
            hide: paths(DEFAULT_HIDE),
            unhide: Vec::new(),
        }
    }
}

impl Default for Environment {
    fn default() -> Environment {
        Environment {
            allow: ["PATH", "TERM", "LANG", "LC_*", "HOME", "USER", "TZ"]
                .iter()
                .filter_map(|pattern| EnvPattern::new(pattern).ok())
                .collect(),
            set: BTreeMap::new(),
        }
    }
}

impl Default for Limits {
    #[expect(
        clippy::expect_used,
        reason = "the default limits are positive constants, so building them cannot fail"
    )]
    fn default() -> Limits {
        Limits {
            memory: ByteSize::new(2 << 30).expect("2g is positive"),
            cpus: Cpus::new(2.0).expect("2.0 is positive"),
            pids: Count::new(1024).expect("1024 is positive"),
            timeout: HumanDuration::new(std::time::Duration::from_secs(30 * 60))
                .expect("30m is positive"),
            nofile: Count::new(4096).expect("4096 is positive"),
        }
    }
}

impl Default for Policy {
    /// The built-in agent default: read the whole filesystem, write the workspace and `/tmp`,
    /// credentials hidden, a small environment, no network, every isolation layer on.
    fn default() -> Policy {
        Policy {
            filesystem: Filesystem::default(),
            environment: Environment::default(),
            limits: Limits::default(),
            seccomp: Seccomp::default(),
            network: Network::default(),
            secrets: BTreeMap::new(),
            sandbox: Sandbox::default(),
        }
    }
}

/// Appends the items of `extra` that `list` lacks.
fn add_all<T: PartialEq + Clone>(list: &mut Vec<T>, extra: &[T]) {
    for item in extra {
        if !list.contains(item) {
            list.push(item.clone());
        }
    }
}

impl Policy {
    /// Parses a policy file and layers it over [`Policy::default`].
    ///
    /// # Errors
    ///
    /// [`PolicyError::Syntax`] for bad TOML, unknown keys and bad values (with the line), and
    /// [`PolicyError::Invalid`] for values that do not fit together.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let mut policy: Policy =
            toml::from_str(text).map_err(|error| syntax_error(text, &error))?;
        // A file's `hide` adds to the defaults that `unhide` leaves.
        let unhide = &policy.filesystem.unhide;
        let mut hide = paths(DEFAULT_HIDE);
        hide.retain(|path| !unhide.contains(path));
        add_all(&mut hide, &policy.filesystem.hide);
        policy.filesystem.hide = hide;
        policy.normalize();
        policy.validate()?;
        Ok(policy)
    }

    /// Layers command-line `overrides` over this policy: lists add, scalars replace.
    ///
    /// # Errors
    ///
    /// [`ValidationError`] if the result breaks a rule across keys (host networking without
    /// `dangerously_host_network`).
    pub fn merge(mut self, overrides: &PolicyOverrides) -> Result<Policy, ValidationError> {
        let filesystem = &mut self.filesystem;
        add_all(&mut filesystem.read, &overrides.read);
        add_all(&mut filesystem.write, &overrides.write);
        let defaults = paths(DEFAULT_HIDE);
        filesystem
            .hide
            .retain(|path| !(overrides.unhide.contains(path) && defaults.contains(path)));
        add_all(&mut filesystem.hide, &overrides.hide);
        add_all(&mut filesystem.unhide, &overrides.unhide);
        add_all(&mut self.environment.allow, &overrides.env_allow);
        for (name, value) in &overrides.env_set {
            self.environment.set.insert(name.clone(), value.clone());
        }
        let limits = &mut self.limits;
        limits.memory = overrides.memory.unwrap_or(limits.memory);
        limits.cpus = overrides.cpus.unwrap_or(limits.cpus);
        limits.pids = overrides.pids.unwrap_or(limits.pids);
        limits.timeout = overrides.timeout.unwrap_or(limits.timeout);
        limits.nofile = overrides.nofile.unwrap_or(limits.nofile);
        add_all(&mut self.seccomp.allow, &overrides.seccomp_allow);
        self.network.mode = overrides.network.unwrap_or(self.network.mode);
        self.network.dangerously_host_network |= overrides.dangerously_host_network;
        let network = &mut self.network;
        network.preset = overrides.network_preset.unwrap_or(network.preset);
        add_all(&mut network.allow_hosts, &overrides.allow_hosts);
        add_all(&mut network.deny_hosts, &overrides.deny_hosts);
        add_all(&mut network.allow_cidrs, &overrides.allow_cidrs);
        add_all(&mut network.allow_tcp, &overrides.allow_tcp);
        network.strict_hostname |= overrides.strict_hostname;
        add_all(
            &mut self.sandbox.dangerously_skip,
            &overrides.dangerously_skip,
        );
        self.normalize();
        self.validate()?;
        Ok(self)
    }

    /// The policy as TOML, in the form [`Policy::from_toml`] reads back to the same policy.
    /// `filesystem.hide` lists every hidden path, and `unhide` the defaults taken back.
    #[expect(
        clippy::expect_used,
        reason = "the policy holds only strings, numbers, booleans, lists and string maps, which TOML always represents"
    )]
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a policy always serializes to TOML")
    }

    /// Whether the policy skips isolation layer `layer`.
    pub fn skips(&self, layer: Layer) -> bool {
        self.sandbox.dangerously_skip.contains(&layer)
    }

    /// Removes duplicates.
    fn normalize(&mut self) {
        let filesystem = &mut self.filesystem;
        for list in [
            &mut filesystem.read,
            &mut filesystem.write,
            &mut filesystem.hide,
            &mut filesystem.unhide,
        ] {
            let mut unique = Vec::with_capacity(list.len());
            add_all(&mut unique, list);
            *list = unique;
        }
        let mut allow = Vec::new();
        add_all(&mut allow, &self.environment.allow);
        self.environment.allow = allow;
        let mut syscalls = Vec::new();
        add_all(&mut syscalls, &self.seccomp.allow);
        self.seccomp.allow = syscalls;
        let mut layers = Vec::new();
        add_all(&mut layers, &self.sandbox.dangerously_skip);
        self.sandbox.dangerously_skip = layers;
    }

    /// Checks the rules across keys.
    fn validate(&self) -> Result<(), ValidationError> {
        if self.network.mode == NetworkMode::Host && !self.network.dangerously_host_network {
            return Err(ValidationError::HostNetworkNotConfirmed);
        }
        for (name, binding) in &self.secrets {
            // The sandbox sees the secret as an environment variable of this name.
            let valid_name = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid_name {
                return Err(ValidationError::SecretName { name: name.clone() });
            }
            if binding.hosts.is_empty() {
                return Err(ValidationError::SecretWithoutHosts { name: name.clone() });
            }
        }
        let defaults = paths(DEFAULT_HIDE);
        if let Some(path) = self
            .filesystem
            .unhide
            .iter()
            .find(|path| !defaults.contains(path))
        {
            return Err(ValidationError::UnhideNotDefault {
                path: path.clone(),
                defaults: DEFAULT_HIDE.join(", "),
            });
        }
        Ok(())
    }
}

/// [`Filesystem`] with every path expanded, ready for the launcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpandedFilesystem {
    /// Expanded `read`.
    pub read: Vec<std::path::PathBuf>,
    /// Expanded `write`.
    pub write: Vec<std::path::PathBuf>,
    /// Expanded `hide` (`unhide` is already applied).
    pub hide: Vec<std::path::PathBuf>,
}

impl Filesystem {
    /// Expands every path with `variables` (see [`expand_path`]).
    ///
    /// # Errors
    ///
    /// The first [`ExpandError`], for a path whose variable is missing or relative.
    pub fn expand(&self, variables: PathVariables<'_>) -> Result<ExpandedFilesystem, ExpandError> {
        let expand = |list: &[PolicyPath]| {
            list.iter()
                .map(|path| expand_path(path, variables))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(ExpandedFilesystem {
            read: expand(&self.read)?,
            write: expand(&self.write)?,
            hide: expand(&self.hide)?,
        })
    }
}

impl Environment {
    /// Whether host variable `name` passes into the sandbox.
    pub fn allows(&self, name: &str) -> bool {
        self.allow.iter().any(|pattern| pattern.matches(name))
    }
}

/// A [`PolicyError::Syntax`] locating `error` in `text`.
fn syntax_error(text: &str, error: &toml::de::Error) -> PolicyError {
    let message = error.message().trim_end_matches('\n').to_owned();
    let Some(span) = error.span() else {
        return PolicyError::Syntax {
            location: "end of input".to_owned(),
            line: None,
            message,
        };
    };
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or_default().trim();
    PolicyError::Syntax {
        location: format!("line {line} ({line_text})"),
        line: Some(line),
        message,
    }
}

#[cfg(test)]
mod tests;
