//! The resolver on the host's real Debian archive: the `main` `Packages` lists `apt-get update`
//! left in /var/lib/apt/lists (read through `apt-helper cat-file`, which decompresses whatever
//! compression apt chose), checked for closure under `Depends`/`Pre-Depends` and against apt's
//! own choice (`apt-get -s install` with an empty dpkg status).
//!
//! Without those lists the test fails with instructions: scripts/test runs `apt-get update`
//! first, so CI always has them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use debian::package::{Package, RepoId, Universe};
use debian::resolve::{resolve, Architectures, Request, Resolution};

const LISTS: &str = "/var/lib/apt/lists";

fn host_arch() -> String {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .expect("dpkg --print-architecture");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The host's `main` package lists for `arch`, sorted (their position is their RepoId), leaving
/// out suites whose `InRelease` says `NotAutomatic: yes` (backports, experimental): apt does not
/// install from those unless asked, and the test compares with apt's choice.
fn main_lists(arch: &str) -> Vec<PathBuf> {
    let suffix = format!("_main_binary-{arch}_Packages");
    let mut lists: Vec<PathBuf> = std::fs::read_dir(LISTS)
        .unwrap_or_else(|e| panic!("cannot read {LISTS}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(&suffix))
        })
        .collect();
    lists.sort();
    lists.retain(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let in_release = name
            .find(&suffix)
            .map(|i| Path::new(LISTS).join(format!("{}_InRelease", &name[..i])));
        !in_release
            .and_then(|r| std::fs::read_to_string(r).ok())
            .is_some_and(|text| text.lines().any(|l| l.trim() == "NotAutomatic: yes"))
    });
    assert!(
        !lists.is_empty(),
        "no apt lists {LISTS}/*{suffix}*: run `apt-get update` as root first \
         (scripts/test does it before running the suite)"
    );
    lists
}

/// A list's text, decompressed by apt itself.
fn read_list(path: &Path) -> String {
    let out = Command::new("/usr/lib/apt/apt-helper")
        .arg("cat-file")
        .arg(path)
        .output()
        .expect("/usr/lib/apt/apt-helper");
    assert!(
        out.status.success(),
        "apt-helper cat-file {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What apt would install for `names` on a system with nothing installed, without
/// recommendations: `name version` lines.
fn apt_choice(names: &[&str]) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("status");
    std::fs::write(&status, "").unwrap();
    let out = Command::new("apt-get")
        .arg("-s")
        .arg(format!("-oDir::State::status={}", status.display()))
        .args([
            "-oAPT::Install-Recommends=false",
            "-oDebug::NoLocking=true",
            "install",
        ])
        .args(names)
        .env("LC_ALL", "C")
        .output()
        .expect("apt-get");
    assert!(
        out.status.success(),
        "apt-get -s install {names:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `Inst name (version suite [arch])`
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next().unwrap();
            let version = words.next().unwrap().trim_start_matches('(');
            format!("{name} {version}")
        })
        .collect()
}

/// Checks, independently of the resolver, that every dependency group of every resolved package
/// is satisfied by a resolved package (by name or by `Provides`), that no name appears twice and
/// that no `Conflicts`/`Breaks` holds between two of them.
fn check_closed(universe: &Universe<'_>, r: &Resolution, arch: &str) -> Vec<String> {
    let packages: Vec<&Package<'_>> = r
        .packages
        .iter()
        .map(|p| {
            let id = universe
                .find(&p.name, &p.architecture, p.version.as_str())
                .unwrap_or_else(|| panic!("{} {} is not in the universe", p.name, p.version));
            &universe[id]
        })
        .collect();
    let mut problems = Vec::new();
    let mut seen = HashMap::new();
    for p in &packages {
        if let Some(other) = seen.insert(p.name, p.version.as_str()) {
            problems.push(format!("{} twice: {other} and {}", p.name, p.version));
        }
    }
    let satisfies = |q: &Package<'_>, name: &str, rel: &debian::relation::Relation<'_>| {
        (q.name == name && rel.matches_version(&q.version))
            || q.provides.iter().any(|pr| {
                pr.name == name
                    && match &rel.constraint {
                        None => true,
                        Some(c) => pr
                            .constraint
                            .as_ref()
                            .is_some_and(|pc| c.matches(&pc.version)),
                    }
            })
    };
    for p in &packages {
        let mut groups = p.pre_depends().unwrap();
        groups.extend(p.depends().unwrap());
        for group in groups {
            let active: Vec<_> = group.0.iter().filter(|r| r.is_active(arch, &[])).collect();
            if active.is_empty() {
                continue;
            }
            let ok = active
                .iter()
                .any(|rel| packages.iter().any(|q| satisfies(q, rel.name, rel)));
            if !ok {
                problems.push(format!(
                    "{} {}: {group} is not satisfied",
                    p.name, p.version
                ));
            }
        }
        let mut conflicts = p.conflicts().unwrap();
        conflicts.extend(p.breaks().unwrap());
        for rel in conflicts {
            for q in &packages {
                if q.name != p.name && satisfies(q, rel.name, &rel) {
                    problems.push(format!("{} conflicts with {} ({rel})", p.name, q.name));
                }
            }
        }
    }
    problems
}

#[test]
fn resolves_python3_ca_certificates_and_a_hardened_base_from_the_host_archive() {
    let arch = host_arch();
    let lists = main_lists(&arch);
    let texts: Vec<String> = lists.iter().map(|p| read_list(p)).collect();
    let repo_id = |i: usize| RepoId(u32::try_from(i).unwrap());
    let universe = Universe::new(
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| (repo_id(i), t.as_str())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", lists[e.repo.0 as usize].display()));
    assert!(
        universe.len() > 1000,
        "only {} packages in {lists:?}",
        universe.len()
    );
    let archs = Architectures::native(&arch);

    // Docker Hardened Images' Debian 12 base: its exclusions only steer choices (mawk for awk,
    // libsystemd0 rather than libelogind0), so apt, given the other names, installs the same.
    let dhi_base: &[&str] = &[
        "!gawk",
        "!libelogind0",
        "!original-awk",
        "apt",
        "base-files",
        "bash",
        "ca-certificates",
        "coreutils",
        "diffutils",
        "dpkg",
        "findutils",
        "gnu-which",
        "grep",
        "gzip",
        "libc-bin",
        "mawk",
        "ncurses-bin",
        "ncurses-term",
        "perl-base",
        "sed",
        "tar",
        "tzdata",
        "util-linux",
    ];
    for specs in [&["python3"][..], &["ca-certificates"], dhi_base] {
        let requests: Vec<Request> = specs.iter().map(|s| Request::parse(s).unwrap()).collect();
        let r = resolve(&universe, &requests, &archs).unwrap_or_else(|e| panic!("{specs:?}: {e}"));
        assert!(r.warnings.is_empty(), "{specs:?}: {:?}", r.warnings);
        let names: Vec<&str> = specs
            .iter()
            .copied()
            .filter(|s| !s.starts_with('!'))
            .collect();
        for name in &names {
            assert!(r.packages.iter().any(|p| p.name == *name), "{name} missing");
        }
        for excluded in specs.iter().filter_map(|s| s.strip_prefix('!')) {
            assert!(
                r.packages.iter().all(|p| p.name != excluded),
                "{excluded} installed"
            );
        }
        for p in &r.packages {
            assert!(p.filename.ends_with(".deb"), "{}: {}", p.name, p.filename);
            assert_eq!(p.sha256.len(), 64, "{}", p.name);
            assert!(p.size > 0, "{}", p.name);
            assert!((p.repo.0 as usize) < lists.len());
        }
        let problems = check_closed(&universe, &r, &arch);
        assert!(problems.is_empty(), "{specs:?}: {problems:#?}");

        // apt's own resolver, on the same lists, chooses the same packages and versions.
        let ours: BTreeSet<String> = r
            .packages
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect();
        let apt = apt_choice(&names);
        assert_eq!(
            ours,
            apt,
            "{specs:?}: only ours: {:?}; only apt's: {:?}",
            ours.difference(&apt).collect::<Vec<_>>(),
            apt.difference(&ours).collect::<Vec<_>>()
        );
    }
}
