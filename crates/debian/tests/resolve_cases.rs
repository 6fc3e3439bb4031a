//! The resolver on small synthetic `Packages` indexes: one case per rule of `debian::resolve`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use debian::package::{RepoId, Universe};
use debian::resolve::{resolve, Architectures, Request, Resolution, ResolveError, Warning};
use sha2::{Digest, Sha256};

/// One paragraph: `spec` is `name version arch`, `fields` further `Name: value` lines.
fn pkg(spec: &str, fields: &[&str]) -> String {
    let mut parts = spec.split_whitespace();
    let (name, version, arch) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap_or("amd64"),
    );
    let hash = hex::encode(Sha256::digest(spec.as_bytes()));
    let mut p = format!("Package: {name}\nVersion: {version}\nArchitecture: {arch}\n");
    for f in fields {
        p.push_str(f);
        p.push('\n');
    }
    p.push_str(&format!(
        "Filename: pool/main/{name}_{version}_{arch}.deb\nSize: 1000\nSHA256: {hash}\n"
    ));
    p
}

fn index(paragraphs: &[String]) -> String {
    paragraphs.join("\n")
}

fn requests(specs: &[&str]) -> Vec<Request> {
    specs.iter().map(|s| Request::parse(s).unwrap()).collect()
}

fn run(index: &str, specs: &[&str], archs: &Architectures) -> Result<Resolution, ResolveError> {
    let universe = Universe::new([(RepoId(0), index)]).unwrap();
    resolve(&universe, &requests(specs), archs)
}

/// `name=version`, with `:arch` for architectures other than amd64 and all.
fn names(r: &Resolution) -> Vec<String> {
    r.packages
        .iter()
        .map(|p| match p.architecture.as_str() {
            "amd64" | "all" => format!("{}={}", p.name, p.version),
            a => format!("{}:{a}={}", p.name, p.version),
        })
        .collect()
}

#[track_caller]
fn check(index: &str, specs: &[&str], expected: &[&str]) -> Resolution {
    let r = run(index, specs, &Architectures::native("amd64"))
        .unwrap_or_else(|e| panic!("{specs:?}: {e}"));
    assert_eq!(names(&r), expected, "{specs:?}");
    r
}

#[track_caller]
fn check_err(index: &str, specs: &[&str], expected: &str) {
    let e = run(index, specs, &Architectures::native("amd64")).unwrap_err();
    assert_eq!(e.to_string(), expected, "{specs:?}");
}

#[test]
fn alternatives_prefer_the_first_satisfiable_then_what_is_selected() {
    let idx = index(&[
        pkg("a 1", &["Depends: b | c"]),
        pkg("b 1", &[]),
        pkg("c 1", &[]),
        pkg("d 1", &["Depends: missing | c"]),
        pkg("e 1", &["Depends: broken | c"]),
        pkg("broken 1", &["Depends: nowhere"]),
    ]);
    check(&idx, &["a"], &["a=1", "b=1"]);
    // Already selected (here: requested) wins over the first alternative.
    check(&idx, &["a", "c"], &["a=1", "c=1"]);
    check(&idx, &["d"], &["c=1", "d=1"]);
    // An alternative that can never be installed is skipped.
    check(&idx, &["e"], &["c=1", "e=1"]);
}

#[test]
fn highest_version_wins_unless_constrained() {
    let idx = index(&[
        pkg("lib 1.0-1", &[]),
        pkg("lib 2.0-1", &[]),
        pkg("lib 2.0~rc1-1", &[]),
        pkg("old 1", &["Depends: lib (<< 2.0)"]),
        pkg("older 1", &["Depends: lib (<< 2.0~)"]),
        pkg("new 1", &["Depends: lib (>= 2.0~)"]),
    ]);
    check(&idx, &["lib"], &["lib=2.0-1"]);
    check(&idx, &["old"], &["lib=2.0~rc1-1", "old=1"]);
    check(&idx, &["older"], &["lib=1.0-1", "older=1"]);
    check(&idx, &["new"], &["lib=2.0-1", "new=1"]);
    // new takes lib 2.0-1 first; old then needs a lower one: backtracking finds the only version
    // both accept.
    check(&idx, &["old", "new"], &["lib=2.0~rc1-1", "new=1", "old=1"]);
    // One version per name: nothing satisfies both; the first failure met is reported.
    check_err(
        &idx,
        &["older", "new"],
        "older -> lib (<< 2.0~): lib 1.0-1 (amd64) is not co-installable with lib 2.0-1 (amd64) \
         (lib was selected for new -> lib (>= 2.0~))",
    );
}

#[test]
fn virtual_packages_single_and_multiple_providers() {
    let idx = index(&[
        pkg("app 1", &["Depends: awk"]),
        pkg("mawk 1.3", &["Priority: required", "Provides: awk"]),
        pkg("gawk 5.2", &["Priority: optional", "Provides: awk"]),
        pkg("busybox-awk 1", &["Priority: optional", "Provides: awk"]),
        pkg("mailer 1", &["Depends: mail-transport-agent"]),
        pkg("postfix 3.7", &["Provides: mail-transport-agent"]),
    ]);
    check(&idx, &["mailer"], &["mailer=1", "postfix=3.7"]);
    // Highest priority first.
    check(&idx, &["app"], &["app=1", "mawk=1.3"]);
    // Among equal priorities, by name; an excluded provider is passed over.
    check(&idx, &["app", "!mawk"], &["app=1", "busybox-awk=1"]);
    // A selected provider satisfies the dependency.
    check(&idx, &["app", "gawk"], &["app=1", "gawk=5.2"]);
    // A virtual name can be requested.
    check(&idx, &["awk"], &["mawk=1.3"]);
}

#[test]
fn versioned_dependencies_need_versioned_provides() {
    let idx = index(&[
        pkg("app 1", &["Depends: libfoo-abi (>= 2)"]),
        pkg("foo1 1", &["Provides: libfoo-abi (= 1)"]),
        pkg("foo-any 1", &["Provides: libfoo-abi"]),
        pkg("foo2 1", &["Provides: libfoo-abi (= 2.1)"]),
        pkg("plain 1", &["Depends: libfoo-abi"]),
    ]);
    check(&idx, &["app"], &["app=1", "foo2=1"]);
    // Unversioned: every provider qualifies; by name.
    check(&idx, &["plain"], &["foo-any=1", "plain=1"]);
}

#[test]
fn a_real_package_comes_before_providers_of_its_name() {
    let idx = index(&[
        pkg("app 1", &["Depends: mta"]),
        pkg("mta 1", &[]),
        pkg("alt 1", &["Priority: required", "Provides: mta"]),
    ]);
    check(&idx, &["app"], &["app=1", "mta=1"]);
}

#[test]
fn pins_fix_versions_everywhere_and_must_exist() {
    let idx = index(&[
        pkg("a 1.0", &["Depends: b"]),
        pkg("a 2.0", &["Depends: b (>= 2)"]),
        pkg("b 1", &[]),
        pkg("b 2", &[]),
        pkg("b 3", &[]),
    ]);
    check(&idx, &["a=1.0"], &["a=1.0", "b=3"]);
    check(&idx, &["a=1.0", "b=1"], &["a=1.0", "b=1"]);
    check(&idx, &["a", "b=2"], &["a=2.0", "b=2"]);
    check_err(
        &idx,
        &["a=3.0"],
        "pin a=3.0: no such version (available: 2.0, 1.0)",
    );
    check_err(
        &idx,
        &["zz=1"],
        "pin zz=1: no such version (available: none)",
    );
    // The pin holds for dependencies, and a newer version of the dependant is not a way out
    // when it is pinned too.
    check_err(
        &idx,
        &["a=2.0", "b=1"],
        "a=2.0 -> b (>= 2): no candidate (available: 3, 2, 1), pinned to 1",
    );
    check_err(
        &idx,
        &["a=1.0", "a=2.0"],
        "a is pinned to two versions: 1.0 and 2.0",
    );
}

#[test]
fn exclusions_steer_choices_and_leave_dependencies_unsatisfied_with_a_warning() {
    let idx = index(&[
        pkg("tool 1", &["Depends: perl-base, libc6"]),
        pkg("perl-base 5.36", &["Depends: libc6"]),
        pkg("libc6 2.36", &[]),
        pkg("app 1", &["Depends: gawk | mawk"]),
        pkg("gawk 5.2", &[]),
        pkg("mawk 1.3", &[]),
    ]);
    let r = check(&idx, &["tool", "!perl-base"], &["libc6=2.36", "tool=1"]);
    assert_eq!(
        r.warnings,
        [Warning::ExcludedDependency {
            chain: vec!["tool".into(), "perl-base".into()],
            excluded: vec!["perl-base".into()],
        }]
    );
    assert_eq!(
        r.warnings[0].to_string(),
        "tool -> perl-base: left unsatisfied, only excluded packages satisfy it (perl-base)"
    );
    let r = check(&idx, &["app", "!gawk"], &["app=1", "mawk=1.3"]);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    // Requested and excluded: the request wins, with a warning.
    let r = check(&idx, &["gawk", "!gawk"], &["gawk=5.2"]);
    assert_eq!(
        r.warnings,
        [Warning::RequestedAndExcluded {
            name: "gawk".into()
        }]
    );
    // A request is never satisfied by exclusion.
    let idx = index(&[pkg("postfix 3.7", &["Provides: mail-transport-agent"])]);
    check_err(
        &idx,
        &["mail-transport-agent", "!postfix"],
        "mail-transport-agent: only excluded packages satisfy it (postfix)",
    );
}

#[test]
fn conflicts_and_breaks_backtrack_to_another_alternative() {
    let idx = index(&[
        pkg("a 1", &["Depends: b | c, d"]),
        pkg("b 1", &["Conflicts: d"]),
        pkg("c 1", &[]),
        pkg("d 1", &[]),
        // Breaks from the other side, on a provided name.
        pkg("e 1", &["Depends: f | g, h"]),
        pkg("f 1", &["Provides: virt"]),
        pkg("g 1", &[]),
        pkg("h 1", &["Breaks: virt"]),
        // A versioned conflict that only the newer version of a dependency hits.
        pkg("i 1", &["Depends: j, k"]),
        pkg("j 2", &[]),
        pkg("j 1", &[]),
        pkg("k 1", &["Conflicts: j (>= 2)"]),
    ]);
    check(&idx, &["a"], &["a=1", "c=1", "d=1"]);
    check(&idx, &["e"], &["e=1", "g=1", "h=1"]);
    check(&idx, &["i"], &["i=1", "j=1", "k=1"]);
    // Conflicting requests cannot be resolved; the error names the declaration.
    check_err(
        &idx,
        &["b", "d"],
        "d: b 1 (amd64) declares Conflicts: d, which d 1 (amd64) matches (b was requested as b)",
    );
    // A package conflicting with what it provides (the usual pattern) is not in conflict with
    // itself.
    let idx = index(&[pkg(
        "exim 4",
        &["Provides: mta", "Conflicts: mta", "Replaces: mta"],
    )]);
    check(&idx, &["exim"], &["exim=4"]);
}

#[test]
fn unsatisfiable_dependencies_explain_the_chain() {
    let idx = index(&[
        pkg("python3 3.11.2-1", &["Depends: python3.11 (= 3.11.2-6)"]),
        pkg(
            "python3.11 3.11.2-6",
            &["Pre-Depends: libc6", "Depends: libssl3 (>= 3.2)"],
        ),
        pkg("libssl3 3.0.15-1", &[]),
        pkg("libc6 2.36", &[]),
        pkg("app 1", &["Depends: nosuch | libssl3 (>= 4)"]),
    ]);
    check_err(
        &idx,
        &["python3"],
        "python3 -> python3.11 (= 3.11.2-6) -> libssl3 (>= 3.2): \
         no candidate (available: 3.0.15-1)",
    );
    check_err(
        &idx,
        &["app"],
        "app -> nosuch | libssl3 (>= 4): nosuch: no package of that name; \
         libssl3 (>= 4): no candidate (available: 3.0.15-1)",
    );
    check_err(&idx, &["python4"], "python4: no package of that name");
}

#[test]
fn arch_qualifiers_any_native_and_foreign() {
    let idx = index(&[
        pkg("app 1", &["Depends: python3:any (>= 3.11)"]),
        pkg("python3 3.11", &["Multi-Arch: allowed"]),
        pkg("tool 1", &["Depends: perl:any"]),
        pkg("perl 5.36", &["Multi-Arch: foreign"]),
        pkg("bad 1", &["Depends: libx:any"]),
        pkg("libx 1", &[]),
        pkg("nat 1", &["Depends: libx:native"]),
        pkg("helper 1 i386", &["Multi-Arch: foreign"]),
        pkg("uses-helper 1", &["Depends: helper"]),
        pkg("lib32 1 i386", &[]),
        pkg("wants-lib32 1", &["Depends: lib32:i386"]),
        pkg("wants-lib32-plain 1", &["Depends: lib32"]),
    ]);
    check(&idx, &["app"], &["app=1", "python3=3.11"]);
    check(&idx, &["tool"], &["perl=5.36", "tool=1"]);
    check(&idx, &["nat"], &["libx=1", "nat=1"]);
    // :any needs Multi-Arch: allowed or foreign.
    check_err(
        &idx,
        &["bad"],
        "bad -> libx:any: no candidate (available: 1)",
    );
    // Foreign architectures are off unless enabled.
    check_err(
        &idx,
        &["uses-helper"],
        "uses-helper -> helper: no candidate (available: 1 (i386))",
    );
    let multi = Architectures {
        native: "amd64".into(),
        foreign: vec!["i386".into()],
    };
    let r = run(&idx, &["uses-helper"], &multi).unwrap();
    assert_eq!(names(&r), ["helper:i386=1", "uses-helper=1"]);
    let r = run(&idx, &["wants-lib32"], &multi).unwrap();
    assert_eq!(names(&r), ["lib32:i386=1", "wants-lib32=1"]);
    // A plain dependency wants the depender's architecture (lib32 is not Multi-Arch: foreign).
    let e = run(&idx, &["wants-lib32-plain"], &multi).unwrap_err();
    assert_eq!(
        e.to_string(),
        "wants-lib32-plain -> lib32: no candidate (available: 1 (i386))"
    );
    let r = run(&idx, &["lib32:i386"], &multi).unwrap();
    assert_eq!(names(&r), ["lib32:i386=1"]);
}

#[test]
fn arch_all_counts_as_native() {
    let idx = index(&[
        pkg("data 1 all", &["Depends: libfoo"]),
        pkg("libfoo 1 amd64", &[]),
        pkg("libfoo 1 arm64", &[]),
        pkg("prog 1 amd64", &["Depends: data"]),
    ]);
    check(&idx, &["prog"], &["data=1", "libfoo=1", "prog=1"]);
    let r = run(&idx, &["prog"], &Architectures::native("amd64")).unwrap();
    assert_eq!(r.packages[1].architecture, "amd64");
    // Restriction lists are evaluated for the target architecture.
    let idx = index(&[
        pkg("p 1", &["Depends: only-arm [arm64], everywhere [!arm64]"]),
        pkg("everywhere 1", &[]),
    ]);
    check(&idx, &["p"], &["everywhere=1", "p=1"]);
}

#[test]
fn pre_depends_are_followed() {
    let idx = index(&[
        pkg("a 1", &["Pre-Depends: b (>= 2)"]),
        pkg("b 1", &[]),
        pkg("b 2", &["Pre-Depends: c"]),
        pkg("c 1", &[]),
    ]);
    check(&idx, &["a"], &["a=1", "b=2", "c=1"]);
}

#[test]
fn dependency_cycles_resolve() {
    let idx = index(&[
        pkg("a 1", &["Depends: b"]),
        pkg("b 1", &["Depends: c"]),
        pkg("c 1", &["Depends: a (= 1)"]),
        // A cycle with a broken member is uninstallable as a whole.
        pkg("x 1", &["Depends: y"]),
        pkg("y 1", &["Depends: x, missing"]),
    ]);
    check(&idx, &["a"], &["a=1", "b=1", "c=1"]);
    check(&idx, &["c"], &["a=1", "b=1", "c=1"]);
    check_err(&idx, &["x"], "x -> y -> missing: no package of that name");
}

#[test]
fn duplicates_across_repositories_come_from_the_first() {
    let main = index(&[pkg("a 1", &[])]);
    let mirror = index(&[pkg("a 1", &[])]);
    let universe =
        Universe::new([(RepoId(1), mirror.as_str()), (RepoId(0), main.as_str())]).unwrap();
    let r = resolve(
        &universe,
        &requests(&["a"]),
        &Architectures::native("amd64"),
    )
    .unwrap();
    assert_eq!(r.packages.len(), 1);
    assert_eq!(r.packages[0].repo, RepoId(0));
}

#[test]
fn resolved_records_carry_what_fetching_needs() {
    let idx = index(&[pkg(
        "libpython3.11 3.11.2-6+b1",
        &["Source: python3.11 (3.11.2-6)"],
    )]);
    let r = check(&idx, &["libpython3.11"], &["libpython3.11=3.11.2-6+b1"]);
    let p = &r.packages[0];
    assert_eq!(p.filename, "pool/main/libpython3.11_3.11.2-6+b1_amd64.deb");
    assert_eq!(p.size, 1000);
    assert_eq!(p.sha256.len(), 64);
    assert_eq!(
        (p.source.as_str(), p.source_version.as_str()),
        ("python3.11", "3.11.2-6")
    );
}

/// A small deterministic generator for shuffling.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

#[test]
fn the_same_inputs_resolve_the_same_whatever_their_order() {
    let paragraphs = vec![
        pkg(
            "app 1",
            &["Depends: awk, libc6 (>= 2), mta | mail-transport-agent, web"],
        ),
        pkg(
            "gawk 5",
            &["Priority: optional", "Provides: awk", "Depends: libc6"],
        ),
        pkg(
            "mawk 1",
            &["Priority: optional", "Provides: awk", "Depends: libc6"],
        ),
        pkg("libc6 2.36-9", &["Priority: required"]),
        pkg("libc6 2.36-9+deb12u1", &["Priority: required"]),
        pkg("libc6 2.31-1", &["Priority: required"]),
        pkg(
            "exim 4",
            &[
                "Provides: mail-transport-agent",
                "Conflicts: mail-transport-agent",
            ],
        ),
        pkg(
            "postfix 3",
            &[
                "Provides: mail-transport-agent",
                "Conflicts: mail-transport-agent",
            ],
        ),
        pkg("web 1", &["Depends: server-a | server-b"]),
        pkg("server-a 1", &["Breaks: gawk"]),
        pkg("server-b 1", &[]),
        pkg("server-b 2", &["Depends: missing"]),
        pkg("extra 1", &["Provides: awk", "Priority: important"]),
    ];
    let specs = ["app", "!extra", "gawk"];
    let expected = [
        "app=1",
        "exim=4",
        "gawk=5",
        "libc6=2.36-9+deb12u1",
        "server-b=1",
        "web=1",
    ];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..20 {
        let mut paras = paragraphs.clone();
        rng.shuffle(&mut paras);
        let split = rng.below(paras.len());
        let first = index(&paras[..split]);
        let second = index(&paras[split..]);
        let mut indexes = vec![(RepoId(0), first.as_str()), (RepoId(1), second.as_str())];
        if round % 2 == 1 {
            indexes.reverse();
        }
        let mut reqs = requests(&specs);
        rng.shuffle(&mut reqs);
        let universe = Universe::new(indexes).unwrap();
        let r = resolve(&universe, &reqs, &Architectures::native("amd64")).unwrap();
        assert_eq!(names(&r), expected, "round {round}");
        assert!(r.warnings.is_empty());
    }
}

#[test]
fn a_lock_gives_back_exactly_the_resolved_set() {
    use debian::lock::{Lock, LockedRepository};

    let idx = index(&[
        pkg("app 1", &["Depends: lib (>= 1), awk"]),
        pkg("lib 2", &["Source: libsrc (2-1)"]),
        pkg("mawk 1", &["Provides: awk"]),
    ]);
    let universe = Universe::new([(RepoId(0), idx.as_str())]).unwrap();
    let reqs = requests(&["app", "!gawk"]);
    let r = resolve(&universe, &reqs, &Architectures::native("amd64")).unwrap();
    let repo = LockedRepository {
        uri: "http://archive.invalid/debian".into(),
        suite: "bookworm".into(),
        components: vec!["main".into()],
        inrelease_sha256: "0".repeat(64),
    };
    let lock = Lock::new("amd64", &[], vec![repo], &reqs, &r);
    let text = lock.to_json();
    assert!(text.ends_with("}\n"));
    let back = Lock::from_json(&text).unwrap();
    assert_eq!(back.resolved(), r.packages);
    assert!(back.matches_requests(&requests(&["!gawk", "app"])));
    assert_eq!(back.packages[1].source, "libsrc");
    assert_eq!(back.packages[1].source_version.as_str(), "2-1");
}
