//! The image spec: YAML close to Docker Hardened Images' Debian definitions, so those parse as
//! they are (see `docs/build-spec.md` for every key and what hardbox does with it).
//!
//! Parsing is strict: an unknown key is an error naming the key and its line; values are checked
//! after parsing (package syntax, absolute paths without `..`, octal modes, platforms, the
//! `run-as` account) with errors naming the file, the line where the value is written, and the
//! value. The model does no I/O.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// Why a spec is not valid. Always names the file and, where it can be found, the line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct SpecError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

/// Runtime images are hardened fully; dev images keep a shell and the package manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    #[default]
    Runtime,
    Dev,
}

/// A scalar YAML value kept as text (`VERSION: 1.5` and `VERSION: "1.5"` mean the same).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A command line: a list, or one string meaning a one-element list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Command(pub Vec<String>);

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Command, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(Text),
            Many(Vec<Text>),
        }
        Ok(match Raw::deserialize(deserializer)? {
            Raw::One(t) => Command(vec![t.0]),
            Raw::Many(v) => Command(v.into_iter().map(|t| t.0).collect()),
        })
    }
}

/// The whole spec.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Spec {
    /// Human name (`Python 3.13.x`).
    #[serde(default)]
    pub name: Option<String>,
    /// Repository the tags apply to (`dhi.io/python`); tags without a repository get it.
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub variant: Variant,
    /// DHI's flavour label (`compat`); informational.
    #[serde(default)]
    pub flavor: Option<String>,
    #[serde(default)]
    pub tags: Vec<Text>,
    /// `os/arch[/variant]`; the build is for one platform at a time.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Free variables; informational (DHI uses them in build pipelines).
    #[serde(default)]
    pub vars: BTreeMap<String, Text>,
    #[serde(default)]
    pub contents: Contents,
    #[serde(default)]
    pub accounts: Accounts,
    #[serde(default)]
    pub os_release: Option<OsRelease>,
    #[serde(default)]
    pub environment: BTreeMap<String, Text>,
    #[serde(default)]
    pub entrypoint: Option<Command>,
    #[serde(default)]
    pub cmd: Option<Command>,
    #[serde(default)]
    pub work_dir: Option<String>,
    #[serde(default)]
    pub paths: Vec<PathSpec>,
    /// Manifest annotations (also copied into the config's labels).
    #[serde(default)]
    pub annotations: BTreeMap<String, Text>,
    /// Config labels.
    #[serde(default)]
    pub labels: BTreeMap<String, Text>,
    #[serde(default)]
    pub dates: Dates,
    /// `8080/tcp` (a bare number means tcp): the config's `ExposedPorts`.
    #[serde(default)]
    pub ports: Vec<Text>,
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// DHI's `squashed`: hardbox's default single layer is already squashed.
    #[serde(default)]
    pub output: Option<String>,
    #[serde(default)]
    pub hardening: Hardening,
    #[serde(default)]
    pub layers: Layers,
}

/// `contents`: where packages come from and which to install.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Contents {
    /// One-line `deb [signed-by=...] URL SUITE COMPONENT...` sources; empty means the host's.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Key files or URLs for `signed-by`.
    #[serde(default)]
    pub keyring: Vec<String>,
    /// `name`, `name=version` or `!name`.
    #[serde(default)]
    pub packages: Vec<String>,
    /// DHI build pipelines (shell scripts run in a build container): parsed, not supported.
    #[serde(default)]
    pub builds: Vec<serde_yaml::Value>,
    /// DHI artifacts taken from build outputs: parsed, not supported.
    #[serde(default)]
    pub artifacts: Vec<serde_yaml::Value>,
    /// DHI files downloaded by URL: parsed, not supported.
    #[serde(default)]
    pub files: Vec<serde_yaml::Value>,
    /// DHI package URL mappings for SBOMs; informational.
    #[serde(default)]
    pub mappings: BTreeMap<String, String>,
}

/// `accounts`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Accounts {
    /// Whether `/etc/passwd` has `root` (default true).
    #[serde(default = "yes")]
    pub root: bool,
    /// User name or `uid[:gid]` the image runs as; default `nonroot`.
    #[serde(default)]
    pub run_as: Option<Text>,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub groups: Vec<Group>,
}

impl Default for Accounts {
    fn default() -> Accounts {
        Accounts {
            root: true,
            run_as: None,
            users: Vec::new(),
            groups: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Default `/home/NAME` (`/root` for uid 0).
    #[serde(default)]
    pub home: Option<String>,
    /// Default `/usr/sbin/nologin`.
    #[serde(default)]
    pub shell: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Group {
    pub name: String,
    pub gid: u32,
    #[serde(default)]
    pub members: Vec<String>,
}

/// `os-release`: written to `/etc/os-release` (replacing the package's symlink).
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OsRelease {
    #[serde(default)]
    pub name: Option<Text>,
    #[serde(default)]
    pub id: Option<Text>,
    #[serde(default)]
    pub id_like: Option<Text>,
    #[serde(default)]
    pub version_id: Option<Text>,
    #[serde(default)]
    pub version: Option<Text>,
    #[serde(default)]
    pub version_codename: Option<Text>,
    #[serde(default)]
    pub pretty_name: Option<Text>,
    #[serde(default)]
    pub home_url: Option<Text>,
    #[serde(default)]
    pub support_url: Option<Text>,
    #[serde(default)]
    pub bug_report_url: Option<Text>,
}

/// `dates`.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Dates {
    /// `YYYY-MM-DD`; midnight UTC of it is the default `SOURCE_DATE_EPOCH`.
    #[serde(default)]
    pub release: Option<Text>,
    #[serde(default)]
    pub end_of_life: Option<Text>,
    /// Seconds since the epoch: the timestamp of every file and of the image.
    #[serde(default)]
    pub source_date_epoch: Option<u64>,
}

/// `paths`: entries created, changed or deleted after the packages are unpacked.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PathSpec {
    #[serde(rename = "type")]
    pub kind: PathKind,
    pub path: String,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub mode: Option<Mode>,
    /// For `file`/`directory`: a file or directory (relative to the build context) to copy;
    /// for `symlink`: the link target.
    #[serde(default)]
    pub source: Option<String>,
    /// For `file`: the content.
    #[serde(default)]
    pub content: Option<String>,
    /// For `directory` and `permissions`: apply uid/gid/mode to everything below too.
    #[serde(default)]
    pub recursive: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PathKind {
    Directory,
    File,
    Emptyfile,
    Symlink,
    Delete,
    /// Changes owner and mode of an existing entry.
    Permissions,
}

/// A permission mode written in octal: `"0755"`, `"755"`, `"0o755"` or the YAML integer `755`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Mode, D::Error> {
        let text = Text::deserialize(deserializer)?.0;
        let digits = text.strip_prefix("0o").unwrap_or(&text);
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if mode <= 0o7777 && !digits.is_empty() => Ok(Mode(mode)),
            _ => Err(de::Error::custom(format!(
                "mode {text:?} is not an octal permission mode such as \"0755\""
            ))),
        }
    }
}

/// `hardening`: every switch defaults to on for runtime images; `shells` and
/// `package-manager` default to kept for dev images.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Hardening {
    /// Remove shells (`sh`, `bash`, `dash`, `busybox`, ...).
    #[serde(default)]
    pub remove_shells: Option<bool>,
    /// Remove `apt` and `dpkg` programs (the dpkg database stays for scanners).
    #[serde(default)]
    pub remove_package_manager: Option<bool>,
    /// Clear setuid and setgid bits.
    #[serde(default)]
    pub strip_setuid: Option<bool>,
    /// Remove `/usr/share/{doc,man,info}` except `/usr/share/doc/*/copyright`.
    #[serde(default)]
    pub remove_docs: Option<bool>,
    /// Remove locales and translations other than C / C.UTF-8.
    #[serde(default)]
    pub remove_locales: Option<bool>,
    /// Clear world-write bits everywhere but `/tmp` (1777).
    #[serde(default)]
    pub no_world_writable: Option<bool>,
    /// Remove private keys and SSH host keys.
    #[serde(default)]
    pub remove_private_keys: Option<bool>,
    /// Link `/bin`, `/sbin`, `/lib`, `/lib64` to their `/usr` directories (merged /usr).
    #[serde(default)]
    pub merged_usr: Option<bool>,
}

/// The hardening switches with the variant's defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HardeningPlan {
    pub remove_shells: bool,
    pub remove_package_manager: bool,
    pub strip_setuid: bool,
    pub remove_docs: bool,
    pub remove_locales: bool,
    pub no_world_writable: bool,
    pub remove_private_keys: bool,
    pub merged_usr: bool,
}

/// `layers`: how the filesystem is split and compressed.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Layers {
    /// The most layers to produce: 1 (default) is one squashed layer; more put the largest
    /// packages in layers of their own and everything else in the last one.
    #[serde(default = "one")]
    pub max: usize,
    #[serde(default)]
    pub compression: LayerCompression,
    /// gzip level 1-9 or zstd level 1-19; default 6 for gzip, 3 for zstd.
    #[serde(default)]
    pub level: Option<u32>,
}

impl Default for Layers {
    fn default() -> Layers {
        Layers {
            max: 1,
            compression: LayerCompression::default(),
            level: None,
        }
    }
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LayerCompression {
    #[default]
    Gzip,
    Zstd,
}

/// One entry of `contents.packages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageRequest {
    /// `name` or `name=version`.
    Install {
        name: String,
        version: Option<String>,
    },
    /// `!name`: never install it, even as a dependency.
    Exclude { name: String },
}

impl Spec {
    /// Parses and checks a spec; `file_name` is used in error messages.
    pub fn parse(text: &str, file_name: &str) -> Result<Spec, SpecError> {
        let spec: Spec = serde_yaml::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line());
            let mut message = e.to_string();
            // serde_yaml appends " at line L column C"; the line is already in the prefix.
            if let Some(i) = message.find(" at line ") {
                message.truncate(i);
            }
            SpecError {
                file: file_name.to_owned(),
                line,
                message,
            }
        })?;
        spec.check(text, file_name)?;
        Ok(spec)
    }

    fn check(&self, text: &str, file: &str) -> Result<(), SpecError> {
        let fail = |needle: &str, message: String| SpecError {
            file: file.to_owned(),
            line: line_of(text, needle),
            message,
        };
        self.package_requests()
            .map_err(|(raw, message)| fail(&raw, message))?;
        for platform in &self.platforms {
            oci::spec::Platform::parse(platform)
                .map_err(|e| fail(platform, format!("platforms: {e}")))?;
        }
        for path in &self.paths {
            check_path(&path.path).map_err(|m| fail(&path.path, format!("paths: {m}")))?;
            let needs = match path.kind {
                PathKind::Symlink => path.source.is_none().then_some("source (the link target)"),
                PathKind::File => {
                    (path.source.is_none() && path.content.is_none()).then_some("content or source")
                }
                _ => None,
            };
            if let Some(needs) = needs {
                return Err(fail(
                    &path.path,
                    format!("paths: {:?} entry {} needs {needs}", path.kind, path.path),
                ));
            }
            if path.source.is_some() && path.content.is_some() {
                return Err(fail(
                    &path.path,
                    format!("paths: {} has both content and source", path.path),
                ));
            }
        }
        if let Some(dir) = &self.work_dir {
            check_path(dir).map_err(|m| fail(dir, format!("work-dir: {m}")))?;
        }
        for port in &self.ports {
            parse_port(&port.0).map_err(|m| fail(&port.0, format!("ports: {m}")))?;
        }
        let mut seen = BTreeMap::new();
        for user in &self.accounts.users {
            if user.name.is_empty() || user.name.contains([':', '\n', '/']) {
                return Err(fail(
                    &user.name,
                    format!("accounts: invalid user name {:?}", user.name),
                ));
            }
            if seen.insert(user.name.clone(), ()).is_some() {
                return Err(fail(
                    &user.name,
                    format!("accounts: user {} is listed twice", user.name),
                ));
            }
        }
        for group in &self.accounts.groups {
            if group.name.is_empty() || group.name.contains([':', '\n', ',']) {
                return Err(fail(
                    &group.name,
                    format!("accounts: invalid group name {:?}", group.name),
                ));
            }
        }
        if let Some(run_as) = &self.accounts.run_as {
            self.run_as_ids().ok_or_else(|| {
                fail(
                    "run-as",
                    format!(
                        "accounts: run-as {:?} is neither a listed user, root, nonroot nor uid[:gid]",
                        run_as.0
                    ),
                )
            })?;
        }
        if self.layers.max == 0 {
            return Err(fail("max:", "layers: max must be at least 1".to_owned()));
        }
        if let Some(level) = self.layers.level {
            let range = match self.layers.compression {
                LayerCompression::Gzip => 0..=9,
                LayerCompression::Zstd => 1..=19,
            };
            if !range.contains(&level) {
                return Err(fail(
                    "level:",
                    format!("layers: level {level} is out of range {range:?}"),
                ));
            }
        }
        Ok(())
    }

    /// The parsed `contents.packages`, or the offending entry and why.
    pub fn package_requests(&self) -> Result<Vec<PackageRequest>, (String, String)> {
        self.contents
            .packages
            .iter()
            .map(|raw| parse_package(raw).map_err(|m| (raw.clone(), m)))
            .collect()
    }

    /// The hardening switches with this spec's variant defaults.
    pub fn hardening_plan(&self) -> HardeningPlan {
        let runtime = self.variant == Variant::Runtime;
        let h = &self.hardening;
        HardeningPlan {
            remove_shells: h.remove_shells.unwrap_or(runtime),
            remove_package_manager: h.remove_package_manager.unwrap_or(runtime),
            strip_setuid: h.strip_setuid.unwrap_or(true),
            remove_docs: h.remove_docs.unwrap_or(true),
            remove_locales: h.remove_locales.unwrap_or(true),
            no_world_writable: h.no_world_writable.unwrap_or(true),
            remove_private_keys: h.remove_private_keys.unwrap_or(true),
            merged_usr: h.merged_usr.unwrap_or(true),
        }
    }

    /// Every account the image has: `root` (unless `root: false`), `nonroot` (65532) unless
    /// the spec lists its own, then the spec's users.
    pub fn users(&self) -> Vec<User> {
        let mut users = Vec::new();
        if self.accounts.root {
            users.push(User {
                name: "root".to_owned(),
                uid: 0,
                gid: 0,
                home: Some("/root".to_owned()),
                shell: None,
            });
        }
        let listed = |name: &str| self.accounts.users.iter().any(|u| u.name == name);
        if !listed("nonroot") && !self.accounts.users.iter().any(|u| u.uid == NONROOT) {
            users.push(User {
                name: "nonroot".to_owned(),
                uid: NONROOT,
                gid: NONROOT,
                home: None,
                shell: None,
            });
        }
        for user in &self.accounts.users {
            users.retain(|u| u.name != user.name);
            users.push(user.clone());
        }
        users
    }

    /// Every group: `root`, `nonroot` (unless listed), then the spec's groups.
    pub fn groups(&self) -> Vec<Group> {
        let mut groups = Vec::new();
        if self.accounts.root {
            groups.push(Group {
                name: "root".to_owned(),
                gid: 0,
                members: Vec::new(),
            });
        }
        let users = self.users();
        if !self
            .accounts
            .groups
            .iter()
            .any(|g| g.gid == NONROOT || g.name == "nonroot")
            && users.iter().any(|u| u.gid == NONROOT)
        {
            groups.push(Group {
                name: "nonroot".to_owned(),
                gid: NONROOT,
                members: Vec::new(),
            });
        }
        for group in &self.accounts.groups {
            groups.retain(|g| g.name != group.name);
            groups.push(group.clone());
        }
        groups
    }

    /// The `User` of the image config: `uid:gid` of `run-as` (default `nonroot`).
    pub fn run_as_ids(&self) -> Option<(u32, u32)> {
        let wanted = self
            .accounts
            .run_as
            .as_ref()
            .map(|t| t.0.as_str())
            .unwrap_or("nonroot");
        if let Some(user) = self.users().into_iter().find(|u| u.name == wanted) {
            return Some((user.uid, user.gid));
        }
        if wanted == "root" {
            return Some((0, 0));
        }
        match wanted.split_once(':') {
            Some((uid, gid)) => Some((uid.parse().ok()?, gid.parse().ok()?)),
            None => {
                let uid: u32 = wanted.parse().ok()?;
                Some((uid, uid))
            }
        }
    }

    /// The `SOURCE_DATE_EPOCH` the spec implies: `dates.source-date-epoch`, else midnight UTC
    /// of `dates.release`.
    pub fn source_date_epoch(&self) -> Option<u64> {
        if let Some(epoch) = self.dates.source_date_epoch {
            return Some(epoch);
        }
        let release = self.dates.release.as_ref()?;
        parse_date(&release.0)
    }
}

/// The uid and gid of the default `nonroot` account.
pub const NONROOT: u32 = 65532;

fn parse_package(raw: &str) -> Result<PackageRequest, String> {
    let valid_name = |name: &str| {
        name.len() >= 2
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
            && name.as_bytes()[0].is_ascii_alphanumeric()
    };
    if let Some(name) = raw.strip_prefix('!') {
        if !valid_name(name) {
            return Err(format!(
                "packages: {raw:?} excludes an invalid package name"
            ));
        }
        return Ok(PackageRequest::Exclude {
            name: name.to_owned(),
        });
    }
    let (name, version) = match raw.split_once('=') {
        Some((name, version)) => (name, Some(version)),
        None => (raw, None),
    };
    if !valid_name(name) {
        return Err(format!(
            "packages: {raw:?} is not a package name (name, name=version or !name)"
        ));
    }
    if let Some(version) = version {
        if version.is_empty() || version.contains(char::is_whitespace) {
            return Err(format!("packages: {raw:?} has an invalid version"));
        }
    }
    Ok(PackageRequest::Install {
        name: name.to_owned(),
        version: version.map(str::to_owned),
    })
}

/// Checks that `path` is absolute, without `..` or empty components.
pub fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not absolute"));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(format!("{path:?} contains \"..\""));
    }
    if path.contains('\0') {
        return Err(format!("{path:?} contains a NUL byte"));
    }
    Ok(())
}

/// `8080`, `8080/tcp`, `53/udp` → `8080/tcp` etc.
pub fn parse_port(text: &str) -> Result<String, String> {
    let (port, proto) = text.split_once('/').unwrap_or((text, "tcp"));
    let valid_proto = matches!(proto, "tcp" | "udp" | "sctp");
    match port.parse::<u16>() {
        Ok(p) if p > 0 && valid_proto => Ok(format!("{p}/{proto}")),
        _ => Err(format!("{text:?} is not PORT[/tcp|udp|sctp]")),
    }
}

/// `YYYY-MM-DD` → seconds since the epoch at midnight UTC.
pub fn parse_date(text: &str) -> Option<u64> {
    let mut parts = text.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.get(..2)?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || year < 1970 {
        return None;
    }
    let days =
        types::time::days_from_civil(year, u32::try_from(month).ok()?, u32::try_from(day).ok()?);
    u64::try_from(days * 86400).ok()
}

/// The first 1-based line containing `needle`, for error messages.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap values known to be valid")]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = Spec::parse(
            "name: x\ncontents:\n  packages: [a1]\n  pakages: [b]\n",
            "s.yaml",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        assert!(err.message.contains("pakages"), "{err}");
        assert!(err.to_string().starts_with("s.yaml:4: "), "{err}");
    }

    #[test]
    fn packages_parse_and_bad_ones_name_their_line() {
        let spec = Spec::parse(
            "contents:\n  packages:\n    - libc6\n    - python3=3.11.2-1\n    - '!bash'\n",
            "s.yaml",
        )
        .unwrap();
        assert_eq!(
            spec.package_requests().unwrap(),
            vec![
                PackageRequest::Install {
                    name: "libc6".into(),
                    version: None
                },
                PackageRequest::Install {
                    name: "python3".into(),
                    version: Some("3.11.2-1".into())
                },
                PackageRequest::Exclude {
                    name: "bash".into()
                },
            ]
        );
        let err = Spec::parse(
            "contents:\n  packages:\n    - libc6\n    - Bad Name\n",
            "s.yaml",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(4));
        assert!(err.message.contains("Bad Name"), "{err}");
    }

    #[test]
    fn modes_paths_and_ports_are_checked() {
        let spec = Spec::parse(
            "paths:\n  - type: directory\n    path: /app\n    mode: \"0750\"\n    uid: 65532\n    gid: 65532\n  - type: file\n    path: /etc/x\n    content: hi\n    mode: 644\nports: [8080, 53/udp]\n",
            "s.yaml",
        )
        .unwrap();
        assert_eq!(spec.paths[0].mode, Some(Mode(0o750)));
        assert_eq!(spec.paths[1].mode, Some(Mode(0o644)));
        let err = Spec::parse(
            "paths:\n  - type: file\n    path: /etc/../x\n    content: a\n",
            "s.yaml",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        let err = Spec::parse(
            "paths:\n  - type: file\n    path: /x\n    mode: \"0999\"\n    content: a\n",
            "s.yaml",
        )
        .unwrap_err();
        assert!(err.message.contains("0999"), "{err}");
        let err = Spec::parse("ports: [http]\n", "s.yaml").unwrap_err();
        assert!(err.message.contains("http"), "{err}");
    }

    #[test]
    fn accounts_default_to_root_and_nonroot() {
        let spec = Spec::parse("name: x\n", "s.yaml").unwrap();
        let names: Vec<_> = spec.users().into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["root", "nonroot"]);
        assert_eq!(spec.run_as_ids(), Some((NONROOT, NONROOT)));
        let spec = Spec::parse("accounts:\n  run-as: app\n", "s.yaml").unwrap_err();
        assert!(spec.message.contains("app"), "{spec}");
        let spec = Spec::parse("accounts:\n  run-as: \"1000:1001\"\n", "s.yaml").unwrap();
        assert_eq!(spec.run_as_ids(), Some((1000, 1001)));
    }

    #[test]
    fn hardening_defaults_follow_the_variant() {
        let runtime = Spec::parse("variant: runtime\n", "s.yaml")
            .unwrap()
            .hardening_plan();
        assert!(runtime.remove_shells && runtime.remove_package_manager);
        let dev = Spec::parse("variant: dev\nhardening:\n  remove-docs: false\n", "s.yaml")
            .unwrap()
            .hardening_plan();
        assert!(!dev.remove_shells && !dev.remove_package_manager && !dev.remove_docs);
        assert!(dev.strip_setuid);
    }

    #[test]
    fn release_dates_become_epochs() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-10-07"), Some(1_728_259_200));
        assert_eq!(parse_date("2024-13-01"), None);
    }
}
