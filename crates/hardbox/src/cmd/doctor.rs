//! `hardbox doctor`: which isolation layers this host can enforce, and why not.
//!
//! Why it exists: hardbox refuses to start a sandbox with less isolation than its policy asks for
//! (DESIGN §3). When a launch is refused, the user needs to know which layer is missing on this
//! host, why, and what to change; this command answers that before any sandbox is started.
//!
//! What it guarantees: every check is a real probe of this host (a namespace is reported as
//! working only after `unshare(1)` created one in a child process; Landlock only after a ruleset
//! was enforced on a throw-away thread; cgroup controllers from the `cgroup` crate's detection,
//! the same code `run` uses). A check that cannot be carried out is reported `unknown`, never
//! `ok`. The exit status is 0 only when every layer the default policy requires is `ok`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Result;
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::DoctorArgs;
use crate::{exit, output};

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    /// The layer can be enforced.
    Ok,
    /// The layer cannot be enforced on this host.
    Missing,
    /// The probe could not be carried out (a tool is missing).
    Unknown,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Unknown => "unknown",
        }
    }
}

/// One line of the report.
#[derive(Debug, Serialize)]
struct Check {
    /// Short stable name: `userns`, `landlock`, `cgroups`, …
    name: &'static str,
    status: Status,
    /// Whether the default policy needs this layer (a sandbox cannot start without it).
    required: bool,
    /// What was found, or why the layer is missing.
    detail: String,
    /// What the user can do about it.
    hint: Option<String>,
    /// Machine-readable facts behind the verdict.
    facts: Value,
}

impl Check {
    fn new(name: &'static str, required: bool, status: Status, detail: String) -> Check {
        Check {
            name,
            status,
            required,
            detail,
            hint: None,
            facts: Value::Null,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Check {
        if self.status != Status::Ok {
            self.hint = Some(hint.into());
        }
        self
    }

    fn facts(mut self, facts: Value) -> Check {
        self.facts = facts;
        self
    }
}

#[derive(Debug, Serialize)]
struct Report {
    /// Every required layer is `ok`.
    ok: bool,
    /// The layers the default policy requires that are not `ok`.
    unenforceable: Vec<&'static str>,
    checks: Vec<Check>,
}

pub fn run(args: &DoctorArgs) -> Result<u8> {
    let policy = policy::Policy::default();
    let required = |layer: policy::Layer| !policy.skips(layer);
    let root_user = rustix::process::geteuid().is_root();
    let unshare = find_program("unshare");

    let mut checks = vec![user_namespaces(
        unshare.as_deref(),
        root_user,
        required(policy::Layer::Userns),
    )];
    if root_user {
        checks.push(unprivileged_user_namespaces(unshare.as_deref()));
    }
    for namespace in NAMESPACES {
        checks.push(namespace_check(namespace, unshare.as_deref(), root_user));
    }
    checks.push(cgroups(required(policy::Layer::Cgroups)));
    checks.push(landlock(required(policy::Layer::Landlock)));
    checks.push(seccomp(required(policy::Layer::Seccomp)));
    checks.push(no_new_privs());
    checks.push(overlayfs());
    checks.push(idmapped_mounts());
    checks.push(exec_feed_ebpf(root_user));
    checks.push(kvm());

    let unenforceable: Vec<&'static str> = checks
        .iter()
        .filter(|c| c.required && c.status != Status::Ok)
        .map(|c| c.name)
        .collect();
    let report = Report {
        ok: unenforceable.is_empty(),
        unenforceable,
        checks,
    };
    if args.json {
        output::json(&report)?;
    } else {
        print_text(&report)?;
    }
    Ok(if report.ok { exit::OK } else { exit::ERROR })
}

fn print_text(report: &Report) -> Result<()> {
    let width = report
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    for check in &report.checks {
        let optional = if check.required { "" } else { " (optional)" };
        let hint = check
            .hint
            .as_deref()
            .map(|h| format!(" (hint: {h})"))
            .unwrap_or_default();
        output::line(&format!(
            "{:<8} {:<width$}  {}{optional}{hint}",
            check.status.name(),
            check.name,
            check.detail,
        ))?;
    }
    if report.ok {
        output::info("every isolation layer of the default policy can be enforced on this host");
    } else {
        output::info(&format!(
            "the default policy cannot be enforced on this host: {} missing; sandboxes will refuse to start unless the policy skips them with dangerously_skip",
            report.unenforceable.join(", ")
        ));
    }
    Ok(())
}

/// Looks `name` up in `$PATH`, then in the usual system directories.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|directory| directory.join(name))
        .find(|candidate| rustix::fs::access(candidate, rustix::fs::Access::EXEC_OK).is_ok())
}

/// Runs a probe command quietly; `Some(true)` if it exited 0, `None` if it could not start.
fn probe(program: &Path, args: &[&str]) -> Option<bool> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()
        .map(|status| status.success())
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The kernel knobs that switch user namespaces off, as found on this host.
#[derive(Debug, Default, PartialEq)]
struct UsernsKnobs {
    /// `/proc/sys/user/max_user_namespaces`.
    max_user_namespaces: Option<u64>,
    /// `/proc/sys/kernel/unprivileged_userns_clone` (Debian and Ubuntu kernels).
    unprivileged_userns_clone: Option<u64>,
    /// `/proc/sys/kernel/apparmor_restrict_unprivileged_userns` (Ubuntu 23.10 and later).
    apparmor_restrict: Option<u64>,
}

impl UsernsKnobs {
    fn read() -> UsernsKnobs {
        let number = |path: &str| read_trimmed(path).and_then(|s| s.parse().ok());
        UsernsKnobs {
            max_user_namespaces: number("/proc/sys/user/max_user_namespaces"),
            unprivileged_userns_clone: number("/proc/sys/kernel/unprivileged_userns_clone"),
            apparmor_restrict: number("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        }
    }

    /// Why user namespaces are off for everyone, if a knob says so.
    fn blocks_everyone(&self) -> Option<&'static str> {
        (self.max_user_namespaces == Some(0))
            .then_some("user.max_user_namespaces is 0, which disables user namespaces")
    }

    /// Why unprivileged users cannot create user namespaces, if a knob says so.
    fn blocks_unprivileged(&self) -> Option<&'static str> {
        self.blocks_everyone()
            .or((self.unprivileged_userns_clone == Some(0)).then_some(
                "kernel.unprivileged_userns_clone is 0, which disables them for unprivileged users",
            ))
            .or((self.apparmor_restrict == Some(1)).then_some(
                "kernel.apparmor_restrict_unprivileged_userns is 1: AppArmor allows them only to profiled programs",
            ))
    }

    fn facts(&self) -> Value {
        json!({
            "max_user_namespaces": self.max_user_namespaces,
            "unprivileged_userns_clone": self.unprivileged_userns_clone,
            "apparmor_restrict_unprivileged_userns": self.apparmor_restrict,
        })
    }

    fn hint(&self) -> &'static str {
        if self.apparmor_restrict == Some(1) {
            "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or add an AppArmor profile for hardbox with 'userns,'"
        } else if self.unprivileged_userns_clone == Some(0) {
            "sysctl -w kernel.unprivileged_userns_clone=1"
        } else {
            "sysctl -w user.max_user_namespaces=15000; in a container, allow unshare/clone in its seccomp profile"
        }
    }
}

/// Verdict from a probe's outcome and the knobs, for one kind of user.
fn judge_userns(
    outcome: Option<bool>,
    knob_reason: Option<&'static str>,
    who: &str,
) -> (Status, String) {
    match outcome {
        Some(true) => (
            Status::Ok,
            format!("unshare --user works for {who}"),
        ),
        Some(false) => (
            Status::Missing,
            match knob_reason {
                Some(reason) => format!("unshare --user fails for {who}: {reason}"),
                None => format!(
                    "unshare --user fails for {who} (no sysctl forbids it: a seccomp profile or LSM of the surrounding container may)"
                ),
            },
        ),
        None => (
            Status::Unknown,
            "cannot probe: the unshare program (util-linux) is not installed".to_owned(),
        ),
    }
}

fn user_namespaces(unshare: Option<&Path>, root_user: bool, required: bool) -> Check {
    let knobs = UsernsKnobs::read();
    let outcome =
        unshare.and_then(|program| probe(program, &["--user", "--map-root-user", "true"]));
    let (who, reason) = if root_user {
        ("root", knobs.blocks_everyone())
    } else {
        ("this user", knobs.blocks_unprivileged())
    };
    let (status, detail) = judge_userns(outcome, reason, who);
    let hint = if outcome.is_none() {
        "install util-linux so doctor can probe".to_owned()
    } else {
        knobs.hint().to_owned()
    };
    Check::new("userns", required, status, detail)
        .hint(hint)
        .facts(knobs.facts())
}

/// As root, whether ordinary users could run hardbox rootless (informational).
fn unprivileged_user_namespaces(unshare: Option<&Path>) -> Check {
    let knobs = UsernsKnobs::read();
    let setpriv = find_program("setpriv");
    let outcome = match (unshare, setpriv) {
        (Some(unshare), Some(setpriv)) => {
            let unshare = unshare.to_string_lossy();
            probe(
                &setpriv,
                &[
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "--",
                    &unshare,
                    "--user",
                    "true",
                ],
            )
        }
        _ => None,
    };
    let (status, detail) = judge_userns(outcome, knobs.blocks_unprivileged(), "unprivileged users");
    let hint = if outcome.is_none() {
        "install util-linux (unshare, setpriv) so doctor can probe".to_owned()
    } else {
        knobs.hint().to_owned()
    };
    Check::new("userns.unprivileged", false, status, detail)
        .hint(hint)
        .facts(knobs.facts())
}

/// A namespace kind the sandbox enters, with its `unshare(1)` flag and `/proc/self/ns` name.
struct Namespace {
    check: &'static str,
    flag: &'static str,
    proc_name: &'static str,
    what: &'static str,
}

const NAMESPACES: &[Namespace] = &[
    Namespace {
        check: "mountns",
        flag: "--mount",
        proc_name: "mnt",
        what: "mount",
    },
    Namespace {
        check: "pidns",
        flag: "--pid",
        proc_name: "pid",
        what: "pid",
    },
    Namespace {
        check: "netns",
        flag: "--net",
        proc_name: "net",
        what: "network",
    },
    Namespace {
        check: "ipcns",
        flag: "--ipc",
        proc_name: "ipc",
        what: "ipc",
    },
    Namespace {
        check: "utsns",
        flag: "--uts",
        proc_name: "uts",
        what: "uts",
    },
    Namespace {
        check: "cgroupns",
        flag: "--cgroup",
        proc_name: "cgroup",
        what: "cgroup",
    },
];

fn namespace_check(namespace: &Namespace, unshare: Option<&Path>, root_user: bool) -> Check {
    let proc_path = format!("/proc/self/ns/{}", namespace.proc_name);
    let kernel_has = Path::new(&proc_path).exists();
    // Root can create them directly; other users only inside a user namespace, as the
    // launcher does.
    let mut args = if root_user {
        vec![]
    } else {
        vec!["--user", "--map-root-user"]
    };
    args.push(namespace.flag);
    if namespace.flag == "--pid" {
        args.push("--fork");
    }
    args.push("true");
    let outcome = unshare.and_then(|program| probe(program, &args));
    let (status, detail, hint) = match (kernel_has, outcome) {
        (false, _) => (
            Status::Missing,
            format!("the kernel has no {} namespaces ({proc_path} is missing)", namespace.what),
            format!("use a kernel built with {} namespace support", namespace.what),
        ),
        (true, Some(true)) => (
            Status::Ok,
            format!("unshare {} works", args[..args.len() - 1].join(" ")),
            String::new(),
        ),
        (true, Some(false)) => (
            Status::Missing,
            format!(
                "unshare {} fails{}",
                args[..args.len() - 1].join(" "),
                if root_user { "" } else { " (it needs a user namespace)" }
            ),
            "in a container, allow unshare/clone in its seccomp profile, or run hardbox on the host"
                .to_owned(),
        ),
        (true, None) => (
            Status::Unknown,
            "cannot probe: the unshare program (util-linux) is not installed".to_owned(),
            "install util-linux so doctor can probe".to_owned(),
        ),
    };
    Check::new(namespace.check, true, status, detail).hint(hint)
}

fn cgroups(required: bool) -> Check {
    let host = match cgroup::Host::detect() {
        Ok(host) => host,
        Err(err) => {
            return Check::new(
                "cgroups",
                required,
                Status::Missing,
                format!("cannot work out the cgroup layout: {err:#}"),
            )
            .hint("mount cgroup2 at /sys/fs/cgroup")
        }
    };
    let mut controllers = serde_json::Map::new();
    let mut parts = Vec::new();
    let mut missing = Vec::new();
    for &controller in cgroup::Controller::ALL {
        match host.placement(controller) {
            Ok(placement) => {
                parts.push(format!(
                    "{controller} {} under {}",
                    placement.version,
                    placement.parent.display()
                ));
                controllers.insert(
                    controller.name().to_owned(),
                    json!({
                        "enforceable": true,
                        "version": placement.version.to_string(),
                        "parent": placement.parent,
                    }),
                );
            }
            Err(reason) => {
                parts.push(format!("{controller} cannot be limited: {reason}"));
                missing.push(controller.name());
                controllers.insert(
                    controller.name().to_owned(),
                    json!({ "enforceable": false, "reason": reason.to_string() }),
                );
            }
        }
    }
    let status = if missing.is_empty() {
        Status::Ok
    } else {
        Status::Missing
    };
    let hint = if host.root_user {
        "mount the missing controllers (cgroup v2: enable them in the parent's cgroup.subtree_control)"
    } else {
        "run hardbox in a delegated cgroup: systemd-run --user --scope -p Delegate=yes hardbox ..."
    };
    Check::new(
        "cgroups",
        required,
        status,
        format!("{} mode: {}", host.mode, parts.join("; ")),
    )
    .hint(hint)
    .facts(json!({
        "mode": host.mode.name(),
        "delegated": host.delegated,
        "unified_mount": host.unified.as_ref().map(|u| &u.mount_point),
        "controllers": controllers,
    }))
}

/// The Landlock ABI, from enforcing a minimal ruleset on a throw-away thread: Landlock and
/// no_new_privs apply to the calling thread only, so the rest of this process is untouched.
fn landlock(required: bool) -> Check {
    use landlock::{Access, AccessFs, LandlockStatus, Ruleset, RulesetAttr};

    let outcome = std::thread::spawn(|| {
        Ruleset::default()
            .handle_access(AccessFs::from_all(landlock::ABI::V1))
            .and_then(|ruleset| ruleset.create())
            .and_then(|ruleset| ruleset.restrict_self())
            .map(|status| status.landlock)
    })
    .join();
    let (status, detail, abi) = match outcome {
        Ok(Ok(LandlockStatus::Available {
            effective_abi,
            kernel_abi,
        })) => {
            let abi = kernel_abi.unwrap_or(effective_abi as i32);
            (
                Status::Ok,
                format!("Landlock ABI {abi} is enabled"),
                Some(abi),
            )
        }
        Ok(Ok(LandlockStatus::NotEnabled)) => (
            Status::Missing,
            "the kernel has Landlock but it is not enabled (not in the lsm= boot list)".to_owned(),
            None,
        ),
        Ok(Ok(LandlockStatus::NotImplemented)) => (
            Status::Missing,
            "the kernel is built without Landlock (needs Linux 5.13 or later with CONFIG_SECURITY_LANDLOCK)".to_owned(),
            None,
        ),
        Ok(Err(err)) => (
            Status::Missing,
            format!("enforcing a test ruleset failed: {err}"),
            None,
        ),
        Err(_) => (
            Status::Unknown,
            "the Landlock probe thread panicked".to_owned(),
            None,
        ),
    };
    Check::new("landlock", required, status, detail)
        .hint("boot with lsm=landlock,... (Linux 5.13 or later), or skip it: dangerously_skip = [\"landlock\"]")
        .facts(json!({ "abi": abi }))
}

fn seccomp(required: bool) -> Check {
    let status_line = seccomp::status_of_self();
    let prctl = rustix::thread::secure_computing_mode();
    let actions = read_trimmed("/proc/sys/kernel/seccomp/actions_avail");
    let filter_mode = actions
        .as_deref()
        .is_some_and(|a| a.split_whitespace().any(|action| action == "errno"));
    let compiled = seccomp::Filter::agent_default().compile();
    let current = match &status_line {
        Ok(mode) => format!("{mode:?}").to_lowercase(),
        Err(_) => "unknown".to_owned(),
    };
    let (status, detail) = match (&status_line, &prctl, filter_mode, &compiled) {
        (Err(err), _, _, _) => (Status::Missing, format!("{err}")),
        (_, Err(errno), _, _) => (
            Status::Missing,
            format!("prctl(PR_GET_SECCOMP) fails: {errno}"),
        ),
        (_, _, false, _) => (
            Status::Missing,
            "the kernel has no seccomp filter mode (no errno action in /proc/sys/kernel/seccomp/actions_avail)"
                .to_owned(),
        ),
        (_, _, _, Err(err)) => (Status::Missing, format!("{err}")),
        (Ok(_), Ok(_), true, Ok(program)) => (
            Status::Ok,
            format!(
                "filter mode available; the agent filter compiles to {} instructions (this process: {current})",
                program.len()
            ),
        ),
    };
    Check::new("seccomp", required, status, detail)
        .hint(
            "use a kernel with CONFIG_SECCOMP_FILTER, or skip it: dangerously_skip = [\"seccomp\"]",
        )
        .facts(json!({ "current_mode": current, "actions_available": actions }))
}

fn no_new_privs() -> Check {
    let (status, detail) = match rustix::thread::no_new_privs() {
        Ok(set) => (
            Status::Ok,
            format!(
                "prctl(PR_GET_NO_NEW_PRIVS) works (this process: {})",
                if set { "set" } else { "not set" }
            ),
        ),
        Err(errno) => (
            Status::Missing,
            format!("prctl(PR_GET_NO_NEW_PRIVS) fails: {errno}"),
        ),
    };
    Check::new("no_new_privs", true, status, detail).hint("use Linux 3.5 or later")
}

fn overlayfs() -> Check {
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let (status, detail) = if lists_filesystem(&filesystems, "overlay") {
        (Status::Ok, "overlay is in /proc/filesystems".to_owned())
    } else {
        (
            Status::Missing,
            "overlay is not in /proc/filesystems: image root file systems are copied instead of layered"
                .to_owned(),
        )
    };
    Check::new("overlayfs", false, status, detail).hint("modprobe overlay")
}

/// Whether `/proc/filesystems` text lists `name` (`nodev\toverlay` or `\text4`).
fn lists_filesystem(filesystems: &str, name: &str) -> bool {
    filesystems
        .lines()
        .any(|line| line.split_whitespace().last() == Some(name))
}

/// `major.minor` from a kernel release string like `6.18.44-fc-v782`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// File systems that support idmapped mounts, by `statfs` magic, with the first kernel that
/// supports them there.
const IDMAP_FILESYSTEMS: &[(i64, &str, (u32, u32))] = &[
    (0xEF53, "ext4", (5, 12)),
    (0x5846_5342, "xfs", (5, 12)),
    (0x4d44, "vfat", (5, 12)),
    (0xF2F5_2010, "f2fs", (5, 18)),
    (0x9123_683E, "btrfs", (5, 15)),
    (0x794c_7630, "overlay", (5, 19)),
    (0x0102_1994, "tmpfs", (6, 3)),
    (0x6165_676C, "erofs", (6, 8)),
];

/// Whether a kernel and the file system of the workspace support idmapped mounts.
fn judge_idmap(kernel: Option<(u32, u32)>, fs_magic: Option<i64>) -> (Status, String) {
    let Some(kernel) = kernel else {
        return (Status::Unknown, "cannot read the kernel version".to_owned());
    };
    if kernel < (5, 12) {
        return (
            Status::Missing,
            format!("kernel {}.{} is older than 5.12", kernel.0, kernel.1),
        );
    }
    let Some(magic) = fs_magic else {
        return (
            Status::Unknown,
            "cannot tell the file system of the current directory".to_owned(),
        );
    };
    match IDMAP_FILESYSTEMS.iter().find(|(m, _, _)| *m == magic) {
        Some((_, name, since)) if kernel >= *since => (
            Status::Ok,
            format!(
                "kernel {}.{} supports them, and so does {name} (the current directory's file system)",
                kernel.0, kernel.1
            ),
        ),
        Some((_, name, since)) => (
            Status::Missing,
            format!(
                "{name} (the current directory's file system) supports them from Linux {}.{}",
                since.0, since.1
            ),
        ),
        None => (
            Status::Missing,
            format!(
                "kernel {}.{} supports them, but not the current directory's file system (magic {magic:#x})",
                kernel.0, kernel.1
            ),
        ),
    }
}

fn idmapped_mounts() -> Check {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let magic = rustix::fs::statfs(".").ok().map(|stat| {
        #[expect(
            clippy::useless_conversion,
            reason = "f_type is i64 on x86_64 and a narrower type on other architectures"
        )]
        let magic = i64::from(stat.f_type);
        magic
    });
    let (status, detail) = judge_idmap(kernel_version(&release), magic);
    Check::new("idmapped_mounts", false, status, detail)
        .hint("put the workspace on ext4, xfs or btrfs; without idmapped mounts the workspace keeps host ownership")
        .facts(json!({ "kernel": release }))
}

/// Whether long-lived sandboxes can record execs with eBPF programs (as root), which stop
/// nothing, rather than with seccomp notifications, which stop every exec for a round trip.
/// The programs are loaded and attached, then dropped.
fn exec_feed_ebpf(root_user: bool) -> Check {
    let (status, detail) = if !root_user {
        (
            Status::Missing,
            "needs root; sandboxes record execs through seccomp notifications".to_owned(),
        )
    } else {
        match exectrace::prepare_ebpf() {
            Ok(prepared) => {
                drop(prepared);
                (
                    Status::Ok,
                    "the kernel took the exec and exit programs (BTF, tracepoints, ring buffer)"
                        .to_owned(),
                )
            }
            Err(err) => (Status::Missing, err.to_string()),
        }
    };
    Check::new("exec_feed_ebpf", false, status, detail).hint(
        "sandboxes record every exec through the seccomp tracer instead, which costs each exec \
         a round trip to the supervisor; as root, a kernel with BTF (CONFIG_DEBUG_INFO_BTF) and \
         tracefs lets them use eBPF",
    )
}

fn kvm() -> Check {
    let path = Path::new("/dev/kvm");
    let (status, detail) = if !path.exists() {
        (Status::Missing, "/dev/kvm does not exist".to_owned())
    } else if rustix::fs::access(
        path,
        rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
    )
    .is_ok()
    {
        (
            Status::Ok,
            "/dev/kvm is usable (for the microvm backend, not available yet)".to_owned(),
        )
    } else {
        (
            Status::Missing,
            "/dev/kvm exists but this user cannot open it read-write".to_owned(),
        )
    };
    Check::new("kvm", false, status, detail)
        .hint("enable virtualisation and load kvm_intel or kvm_amd; add the user to the kvm group")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap values known to be valid")]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_parse() {
        let check = |release: &str, expected: Option<(u32, u32)>| {
            assert_eq!(kernel_version(release), expected, "{release}");
        };
        check("6.18.44-fc-v782", Some((6, 18)));
        check("5.15.0-91-generic", Some((5, 15)));
        check("4.19.0", Some((4, 19)));
        check("6.1", Some((6, 1)));
        check("garbage", None);
    }

    #[test]
    fn idmap_needs_kernel_and_file_system_support() {
        let check = |kernel, magic, expected: Status| {
            let (status, detail) = judge_idmap(kernel, magic);
            assert_eq!(status, expected, "{kernel:?} {magic:?}: {detail}");
        };
        check(Some((6, 18)), Some(0xEF53), Status::Ok);
        check(Some((5, 4)), Some(0xEF53), Status::Missing);
        check(Some((6, 1)), Some(0x0102_1994), Status::Missing); // tmpfs needs 6.3
        check(Some((6, 3)), Some(0x0102_1994), Status::Ok);
        check(Some((6, 18)), Some(0x1234), Status::Missing);
        check(Some((6, 18)), None, Status::Unknown);
        check(None, Some(0xEF53), Status::Unknown);
    }

    #[test]
    fn userns_knobs_explain_failures() {
        let knobs = |max, clone, apparmor| UsernsKnobs {
            max_user_namespaces: max,
            unprivileged_userns_clone: clone,
            apparmor_restrict: apparmor,
        };
        assert_eq!(knobs(Some(1000), None, None).blocks_unprivileged(), None);
        assert!(knobs(Some(0), None, None)
            .blocks_everyone()
            .unwrap()
            .contains("max_user_namespaces is 0"));
        assert!(knobs(Some(1000), Some(0), None)
            .blocks_unprivileged()
            .unwrap()
            .contains("unprivileged_userns_clone is 0"));
        assert_eq!(knobs(Some(1000), Some(0), None).blocks_everyone(), None);
        assert!(knobs(Some(1000), Some(1), Some(1))
            .blocks_unprivileged()
            .unwrap()
            .contains("AppArmor"));

        let (status, detail) = judge_userns(Some(false), Some("x is 0"), "this user");
        assert_eq!(status, Status::Missing);
        assert_eq!(detail, "unshare --user fails for this user: x is 0");
        assert_eq!(judge_userns(None, None, "root").0, Status::Unknown);
        assert_eq!(
            judge_userns(Some(true), Some("ignored"), "root").0,
            Status::Ok
        );
    }

    #[test]
    fn filesystems_are_matched_by_whole_name() {
        let text = "nodev\tsysfs\nnodev\toverlay\n\text4\nnodev\tcgroup2\n";
        assert!(lists_filesystem(text, "overlay"));
        assert!(lists_filesystem(text, "ext4"));
        assert!(!lists_filesystem(text, "cgroup"));
        assert!(!lists_filesystem(text, "over"));
    }
}
