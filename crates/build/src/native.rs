//! Native equivalents of what maintainer scripts do for a container image, computed on the tree.
//!
//! - Accounts: `/etc/passwd`, `/etc/group`, `/etc/shadow` (every password locked), home
//!   directories.
//! - CA certificates: `/etc/ca-certificates.conf`, `/etc/ssl/certs/NAME.pem` links and the bundle
//!   `/etc/ssl/certs/ca-certificates.crt`, as `ca-certificates`' postinst and
//!   `update-ca-certificates` produce them with the default configuration (every certificate
//!   enabled, in byte order, a missing final newline added). OpenSSL's hash links are not made:
//!   the bundle is what OpenSSL, GnuTLS and `SSL_CERT_FILE` users read.
//! - Alternatives: `update-alternatives --install LINK NAME PATH PRIORITY [--slave ...]` lines of
//!   postinst scripts; the highest priority whose path exists wins.
//! - Time zone: `/etc/localtime` → `/usr/share/zoneinfo/Etc/UTC` and `/etc/timezone` when tzdata
//!   is installed.
//! - `/etc/os-release` from the spec.
//! - The dpkg database: `/var/lib/dpkg/status` and `info/PKG[:ARCH].{list,md5sums,conffiles}`,
//!   so scanners (syft, trivy, grype) see every package.
//!
//! `/etc/ld.so.cache` is not written: Debian's glibc searches the multiarch directories
//! (`/usr/lib/<triplet>`, `/lib/<triplet>`) by default, which is where Debian puts shared
//! libraries; only libraries in extra `ld.so.conf.d` directories would need the cache.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use md5::{Digest as _, Md5};

use crate::assemble::{Alternative, InstalledDeb, Report};
use crate::spec::Spec;
use crate::tree::{Entry, Kind, Tree};

const NOLOGIN: &str = "/usr/sbin/nologin";

fn generated(tree: &mut Tree, report: &mut Report, path: &str, entry: Entry) {
    tree.insert(path, entry);
    report.generated.push(format!("/{path}"));
}

fn write_file(
    tree: &mut Tree,
    report: &mut Report,
    path: &str,
    content: String,
    mode: u32,
    epoch: u64,
) {
    let Ok(placed) = tree.place(path) else {
        report
            .warnings
            .push(format!("cannot write /{path}: a parent is not a directory"));
        return;
    };
    generated(
        tree,
        report,
        &placed,
        Entry::file(content.into_bytes(), mode, 0, 0, epoch),
    );
}

/// `/etc/passwd`, `/etc/group`, `/etc/shadow` and home directories.
pub fn accounts(spec: &Spec, tree: &mut Tree, report: &mut Report, epoch: u64) {
    let users = spec.users();
    let groups = spec.groups();
    let mut passwd = String::new();
    let mut shadow = String::new();
    for user in &users {
        let home = user.home.clone().unwrap_or_else(|| {
            if user.uid == 0 {
                "/root".to_owned()
            } else {
                format!("/home/{}", user.name)
            }
        });
        let shell = user.shell.clone().unwrap_or_else(|| NOLOGIN.to_owned());
        let _ = writeln!(
            passwd,
            "{}:x:{}:{}:{}:{home}:{shell}",
            user.name, user.uid, user.gid, user.name
        );
        let _ = writeln!(shadow, "{}:!:{}:0:99999:7:::", user.name, epoch / 86400);
        let home = home.trim_start_matches('/').to_owned();
        if !home.is_empty() && tree.get(&home).is_none() {
            if let Ok(placed) = tree.place(&home) {
                let mode = if user.uid == 0 { 0o700 } else { 0o755 };
                generated(
                    tree,
                    report,
                    &placed,
                    Entry::directory(mode, user.uid, user.gid, epoch),
                );
            }
        }
    }
    let mut group_text = String::new();
    for group in &groups {
        let _ = writeln!(
            group_text,
            "{}:x:{}:{}",
            group.name,
            group.gid,
            group.members.join(",")
        );
    }
    write_file(tree, report, "etc/passwd", passwd, 0o644, epoch);
    write_file(tree, report, "etc/group", group_text, 0o644, epoch);
    write_file(tree, report, "etc/shadow", shadow, 0o640, epoch);
}

/// The file name `update-ca-certificates` gives a certificate's link in `/etc/ssl/certs`.
fn pem_name(crt: &str) -> String {
    let base = crt.rsplit('/').next().unwrap_or(crt);
    let base = base.strip_suffix(".crt").unwrap_or(base);
    let mangled: String = base
        .chars()
        .map(|c| match c {
            ' ' | ',' => '_',
            '(' | ')' => '=',
            c => c,
        })
        .collect();
    format!("{mangled}.pem")
}

/// The CA bundle from `certificates` (name relative to `/usr/share/ca-certificates`, bytes), in
/// the order given: each certificate, with a final newline added where missing.
pub fn ca_bundle<'a>(certificates: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut bundle = Vec::new();
    for cert in certificates {
        bundle.extend_from_slice(cert);
        if !cert.is_empty() && !cert.ends_with(b"\n") {
            bundle.push(b'\n');
        }
    }
    bundle
}

/// The CA configuration, links and bundle, when `ca-certificates` is installed.
pub fn ca_certificates(tree: &mut Tree, report: &mut Report, epoch: u64) {
    let root = "usr/share/ca-certificates";
    if !tree.get(root).is_some_and(Entry::is_dir) {
        return;
    }
    // Every `*.crt` file below the directory, in byte order (as `find | sort` in the C locale).
    let mut names: Vec<String> = tree
        .children_of(root)
        .filter(|(p, e)| p.ends_with(".crt") && e.content().is_some())
        .map(|(p, _)| p[root.len() + 1..].to_owned())
        .collect();
    names.sort();
    let mut conf = String::from(
        "# This file lists certificates that you wish to use or to ignore to be\n\
         # installed in /etc/ssl/certs.\n\
         # update-ca-certificates(8) will update /etc/ssl/certs by reading this file.\n\
         #\n\
         # This is autogenerated by dpkg-reconfigure ca-certificates.\n\
         # Certificates should be installed under /usr/share/ca-certificates\n\
         # and files with extension '.crt' is recognized as available certs.\n\
         #\n\
         # line begins with # is comment.\n\
         # line begins with ! is certificate filename to be deselected.\n\
         #\n",
    );
    let mut certs: Vec<Vec<u8>> = Vec::new();
    for name in &names {
        conf.push_str(name);
        conf.push('\n');
        let path = format!("{root}/{name}");
        if let Some(bytes) = tree.read(&path) {
            certs.push(bytes.to_vec());
        }
        let link = format!("etc/ssl/certs/{}", pem_name(name));
        if let Ok(placed) = tree.place(&link) {
            tree.insert(&placed, Entry::symlink(&format!("/{path}"), epoch));
        }
    }
    write_file(tree, report, "etc/ca-certificates.conf", conf, 0o644, epoch);
    let bundle = ca_bundle(certs.iter().map(Vec::as_slice));
    if let Ok(placed) = tree.place("etc/ssl/certs/ca-certificates.crt") {
        generated(
            tree,
            report,
            &placed,
            Entry::file(bundle, 0o644, 0, 0, epoch),
        );
    }
    report.generated.push(format!(
        "/etc/ssl/certs/*.pem ({} certificate links)",
        names.len()
    ));
}

/// One `update-alternatives --install` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    pub link: String,
    pub name: String,
    pub path: String,
    pub priority: i64,
    /// (link, name, path)
    pub slaves: Vec<(String, String, String)>,
}

/// Finds `update-alternatives --install` calls in a maintainer script. Calls whose arguments
/// use shell variables or substitutions are returned as errors (their values are unknown).
pub fn parse_alternatives(script: &str) -> (Vec<Install>, Vec<String>) {
    let joined = script.replace("\\\n", " ");
    let mut installs = Vec::new();
    let mut unresolved = Vec::new();
    for line in joined.lines() {
        let Some(at) = line.find("update-alternatives") else {
            continue;
        };
        let words: Vec<String> = line[at..]
            .split_whitespace()
            .take_while(|w| !matches!(*w, ";" | "&&" | "||" | "|" | ">" | "2>" | "&"))
            .map(|w| {
                w.trim_matches(|c| c == '"' || c == '\'' || c == ';')
                    .to_owned()
            })
            .collect();
        let Some(start) = words.iter().position(|w| w == "--install") else {
            continue;
        };
        if words.iter().any(|w| w.contains('$') || w.contains('`')) {
            unresolved.push(line.trim().to_owned());
            continue;
        }
        let args = &words[start + 1..];
        let (Some(link), Some(name), Some(path), Some(priority)) =
            (args.first(), args.get(1), args.get(2), args.get(3))
        else {
            unresolved.push(line.trim().to_owned());
            continue;
        };
        let Ok(priority) = priority.parse::<i64>() else {
            unresolved.push(line.trim().to_owned());
            continue;
        };
        let mut slaves = Vec::new();
        let mut rest = &args[4..];
        while let [flag, l, n, p, tail @ ..] = rest {
            if flag != "--slave" {
                break;
            }
            slaves.push((l.clone(), n.clone(), p.clone()));
            rest = tail;
        }
        installs.push(Install {
            link: link.clone(),
            name: name.clone(),
            path: path.clone(),
            priority,
            slaves,
        });
    }
    (installs, unresolved)
}

/// Sets up alternatives from every package's postinst.
pub fn alternatives(debs: &[InstalledDeb], tree: &mut Tree, report: &mut Report, epoch: u64) {
    let mut best: BTreeMap<String, Install> = BTreeMap::new();
    for deb in debs {
        let Some(script) = deb.deb.control().scripts.get("postinst") else {
            continue;
        };
        let (installs, unresolved) = parse_alternatives(script);
        for line in unresolved {
            report.warnings.push(format!(
                "{}: postinst alternative not set up (its arguments are computed at run time): {line}",
                deb.name
            ));
        }
        for install in installs {
            if !tree.exists(install.path.trim_start_matches('/')) {
                continue;
            }
            let better = best
                .get(&install.name)
                .is_none_or(|b| install.priority > b.priority);
            if better {
                best.insert(install.name.clone(), install);
            }
        }
    }
    for install in best.into_values() {
        if set_alternative(
            tree,
            report,
            &install.link,
            &install.name,
            &install.path,
            epoch,
        ) {
            report.alternatives.push(Alternative {
                name: install.name.clone(),
                link: install.link.clone(),
                path: install.path.clone(),
                priority: install.priority,
            });
            for (link, name, path) in &install.slaves {
                if tree.exists(path.trim_start_matches('/')) {
                    set_alternative(tree, report, link, name, path, epoch);
                }
            }
        }
    }
}

/// `LINK` → `/etc/alternatives/NAME` → `PATH`; a real file at `LINK` is left alone, as
/// `update-alternatives` does.
fn set_alternative(
    tree: &mut Tree,
    report: &mut Report,
    link: &str,
    name: &str,
    path: &str,
    epoch: u64,
) -> bool {
    let admin = format!("etc/alternatives/{name}");
    let Ok(placed) = tree.place(link.trim_start_matches('/')) else {
        return false;
    };
    if tree
        .get(&placed)
        .is_some_and(|e| !matches!(e.kind, Kind::Symlink(_)))
    {
        report.warnings.push(format!(
            "alternative {name}: /{placed} is a real file, left as it is"
        ));
        return false;
    }
    tree.insert(&admin, Entry::symlink(path, epoch));
    tree.insert(&placed, Entry::symlink(&format!("/{admin}"), epoch));
    true
}

/// `/etc/localtime` and `/etc/timezone` (UTC) when tzdata is installed.
pub fn timezone(tree: &mut Tree, report: &mut Report, epoch: u64) {
    if !tree.exists("usr/share/zoneinfo/Etc/UTC") {
        return;
    }
    if let Ok(placed) = tree.place("etc/localtime") {
        generated(
            tree,
            report,
            &placed,
            Entry::symlink("/usr/share/zoneinfo/Etc/UTC", epoch),
        );
    }
    write_file(
        tree,
        report,
        "etc/timezone",
        "Etc/UTC\n".to_owned(),
        0o644,
        epoch,
    );
}

/// `/etc/os-release` from the spec (replacing the link base-files ships).
pub fn os_release(spec: &Spec, tree: &mut Tree, report: &mut Report, epoch: u64) {
    let Some(os) = &spec.os_release else {
        return;
    };
    let mut text = String::new();
    for (key, value) in [
        ("PRETTY_NAME", &os.pretty_name),
        ("NAME", &os.name),
        ("VERSION_ID", &os.version_id),
        ("VERSION", &os.version),
        ("VERSION_CODENAME", &os.version_codename),
        ("ID", &os.id),
        ("ID_LIKE", &os.id_like),
        ("HOME_URL", &os.home_url),
        ("SUPPORT_URL", &os.support_url),
        ("BUG_REPORT_URL", &os.bug_report_url),
    ] {
        if let Some(value) = value {
            let escaped = value.0.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(text, "{key}=\"{escaped}\"");
        }
    }
    // Replace the entry itself, not what a symlink there points to.
    tree.remove("etc/os-release");
    write_file(tree, report, "etc/os-release", text, 0o644, epoch);
}

/// `/var/lib/dpkg/status` and the `info/` files, from the packages as shipped.
pub fn dpkg_database(
    debs: &[InstalledDeb],
    lists: &[Vec<String>],
    tree: &mut Tree,
    report: &mut Report,
    epoch: u64,
) {
    for dir in [
        "var/lib/dpkg",
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "var/lib/dpkg/alternatives",
    ] {
        if tree.get(dir).is_none() {
            if let Ok(placed) = tree.place(dir) {
                tree.insert(&placed, Entry::directory(0o755, 0, 0, epoch));
            }
        }
    }
    let mut order: Vec<usize> = (0..debs.len()).collect();
    order.sort_by(|a, b| {
        (&debs[*a].name, &debs[*a].architecture).cmp(&(&debs[*b].name, &debs[*b].architecture))
    });
    let mut status = String::new();
    for i in order {
        let deb = &debs[i];
        let control = deb.deb.control();
        let mut conffiles = String::new();
        for conffile in &control.conffiles {
            let path = conffile.trim_start_matches('/');
            let sum = tree
                .read(path)
                .map(|bytes| hex(&Md5::digest(bytes)))
                .unwrap_or_else(|| "newconffile".to_owned());
            let _ = writeln!(conffiles, " {conffile} {sum}");
        }
        status.push_str(&status_paragraph(&control.paragraph, &conffiles));
        status.push('\n');

        let info = format!("var/lib/dpkg/info/{}", deb.info_name());
        let mut list = String::from("/.\n");
        for path in lists.get(i).into_iter().flatten() {
            list.push_str(path);
            list.push('\n');
        }
        tree.insert(
            &format!("{info}.list"),
            Entry::file(list.into_bytes(), 0o644, 0, 0, epoch),
        );
        // Packages built without dh_md5sums have none; compute them as dpkg's database has them.
        let md5sums = control.md5sums.clone().unwrap_or_else(|| {
            let mut text = String::new();
            for listed in lists.get(i).into_iter().flatten() {
                let path = listed.trim_start_matches('/');
                let Ok(placed) = tree.place(path) else {
                    continue;
                };
                if let Some(entry) = tree.get(&placed) {
                    if let (Kind::File(content), Some(owner)) = (&entry.kind, &entry.package) {
                        if **owner == *deb.name {
                            let _ =
                                writeln!(text, "{}  {path}", hex(&Md5::digest(content.as_slice())));
                        }
                    }
                }
            }
            text
        });
        tree.insert(
            &format!("{info}.md5sums"),
            Entry::file(md5sums.into_bytes(), 0o644, 0, 0, epoch),
        );
        if !control.conffiles.is_empty() {
            let text: String = control.conffiles.iter().map(|c| format!("{c}\n")).collect();
            tree.insert(
                &format!("{info}.conffiles"),
                Entry::file(text.into_bytes(), 0o644, 0, 0, epoch),
            );
        }
    }
    write_file(tree, report, "var/lib/dpkg/status", status, 0o644, epoch);
    report.generated.push(format!(
        "/var/lib/dpkg/info/*.list ({} packages)",
        debs.len()
    ));
}

/// A control paragraph as dpkg's status file has it: `Status: install ok installed` after
/// `Package`, and `Conffiles` when the package has some.
pub fn status_paragraph(control: &str, conffiles: &str) -> String {
    let mut out = String::with_capacity(control.len() + 64);
    let mut inserted = false;
    for line in control.trim_end_matches('\n').lines() {
        if line.trim().is_empty() {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if !inserted && line.starts_with("Package:") {
            out.push_str("Status: install ok installed\n");
            inserted = true;
        }
    }
    if !conffiles.is_empty() {
        out.push_str("Conffiles:\n");
        out.push_str(conffiles);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap values known to be valid")]
mod tests {
    use super::*;

    #[test]
    fn alternatives_lines_parse() {
        let script = "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n  update-alternatives --quiet --install /usr/bin/editor editor /usr/bin/vim.basic 50 \\\n    --slave /usr/share/man/man1/editor.1.gz editor.1.gz /usr/share/man/man1/vim.1.gz\n  update-alternatives --install /usr/bin/x x \"$path\" 10\nfi\n";
        let (installs, unresolved) = parse_alternatives(script);
        assert_eq!(installs.len(), 1);
        assert_eq!(installs[0].link, "/usr/bin/editor");
        assert_eq!(installs[0].priority, 50);
        assert_eq!(installs[0].slaves.len(), 1);
        assert_eq!(unresolved.len(), 1);
    }

    #[test]
    fn status_paragraph_inserts_status_after_package() {
        let text = status_paragraph("Package: a\nVersion: 1\n", " /etc/a 0123\n");
        assert_eq!(
            text,
            "Package: a\nStatus: install ok installed\nVersion: 1\nConffiles:\n /etc/a 0123\n"
        );
    }

    #[test]
    fn pem_names_are_mangled_like_update_ca_certificates() {
        assert_eq!(pem_name("mozilla/A B (C),D.crt"), "A_B_=C=_D.pem");
    }
}
