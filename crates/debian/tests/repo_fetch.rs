#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

//! The fetcher against real repositories built by dpkg-deb, apt-ftparchive and gpg, served over
//! loopback HTTP (with injected faults) and `file://`.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use debian::control;
use debian::fetch::{FetchError, Fetcher};
use debian::openpgp::{SignatureProblem, VerifyError};
use debian::release::ReleaseError;
use support::{files_below, DebSpec, Fault, Gpg, Repo, RepoBuilder, Server, Signing};

/// Bytes that do not compress, so a package is large enough to be cut in the middle.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn three_packages() -> RepoBuilder {
    RepoBuilder::new()
        .deb(
            "main",
            DebSpec::new("alpha", "1.0-1").field("Depends", "beta (>= 2)"),
        )
        .deb("main", DebSpec::new("beta", "2:2.5-3").arch("all"))
        .deb(
            "main",
            DebSpec::new("gamma", "0.1").file("usr/lib/gamma/blob", &noise(300_000, 7)),
        )
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn package_names(text: &str) -> Vec<String> {
    control::paragraphs(text)
        .map(|p| p.unwrap().require("Package").unwrap().to_owned())
        .collect()
}

/// Runs the whole chain and returns the .deb paths.
fn fetch_all(fetcher: &Fetcher, repo: &Repo, uri: &str, gpg: &Gpg) -> Vec<std::path::PathBuf> {
    let source = repo.source(uri);
    let release = fetcher.release(&source, &repo.keyring(gpg), now()).unwrap();
    let index = fetcher
        .packages_index(&source, &release, "main", "amd64")
        .unwrap();
    assert_eq!(package_names(&index), ["alpha", "beta", "gamma"]);
    let requests: Vec<_> = repo.debs.iter().map(|d| d.request(uri)).collect();
    fetcher.debs(&requests).unwrap()
}

#[test]
fn good_repository_end_to_end_over_http() {
    let gpg = Gpg::new();
    let repo = three_packages().build(&gpg);
    let server = Server::start(&repo.root);
    let cache = tempfile::tempdir().unwrap();
    type Seen = Arc<Mutex<Vec<(String, u64, Option<u64>)>>>;
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let fetcher = Fetcher::new(cache.path())
        .progress(move |p| s.lock().unwrap().push((p.url.to_owned(), p.done, p.total)));

    let source = repo.source(&server.url());
    let release = fetcher
        .release(&source, &repo.keyring(&gpg), now())
        .unwrap();
    assert_eq!(release.origin.as_deref(), Some("hardbox-fixture"));
    assert_eq!(release.suite.as_deref(), Some("stable"));
    assert_eq!(release.codename.as_deref(), Some("fixture"));
    assert_eq!(release.architectures, ["amd64"]);
    assert_eq!(release.components, ["main"]);
    for f in ["Packages", "Packages.xz", "Packages.gz"] {
        assert!(
            release.file(&format!("main/binary-amd64/{f}")).is_some(),
            "{f}"
        );
    }

    let index = fetcher
        .packages_index(&source, &release, "main", "amd64")
        .unwrap();
    assert_eq!(
        index,
        std::fs::read_to_string(repo.dist().join("main/binary-amd64/Packages")).unwrap()
    );
    assert_eq!(package_names(&index), ["alpha", "beta", "gamma"]);
    // The signed Release lists .xz, which is preferred.
    assert_eq!(server.requests_for("Packages.xz").len(), 1);
    assert!(server.requests_for("Packages.gz").is_empty());

    let requests: Vec<_> = repo.debs.iter().map(|d| d.request(&server.url())).collect();
    let paths = fetcher.debs(&requests).unwrap();
    assert_eq!(paths.len(), 3);
    for (deb, path) in repo.debs.iter().zip(&paths) {
        assert_eq!(
            support::read(path),
            support::read(&repo.root.join(&deb.filename))
        );
        assert_eq!(
            path,
            &cache.path().join("debs/sha256").join(deb.sha256.hex())
        );
        let url = deb.request(&server.url()).url();
        let seen = seen.lock().unwrap();
        assert!(
            seen.iter()
                .any(|(u, done, total)| *u == url && *done == deb.size && *total == Some(deb.size)),
            "no final progress for {url}"
        );
    }
    assert!(files_below(&cache.path().join("partial"))
        .iter()
        .all(|f| f.ends_with(".lock")));
}

#[test]
fn good_repository_over_file_urls() {
    let gpg = Gpg::new();
    let repo = three_packages().build(&gpg);
    let cache = tempfile::tempdir().unwrap();
    let paths = fetch_all(&Fetcher::new(cache.path()), &repo, &repo.file_uri(), &gpg);
    for (deb, path) in repo.debs.iter().zip(&paths) {
        assert_eq!(
            support::read(path),
            support::read(&repo.root.join(&deb.filename))
        );
    }
}

#[test]
fn keyring_named_by_the_source_signed_by() {
    let gpg = Gpg::new();
    let repo = three_packages().build(&gpg);
    let keyring_file = repo.keyring_file(&gpg);
    let source = repo.source_signed_by(&repo.file_uri(), &keyring_file);
    let keyring =
        debian::openpgp::Keyring::for_source(&source, Path::new("/nonexistent/etc/apt")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    Fetcher::new(cache.path())
        .release(&source, &keyring, now())
        .unwrap();
}

fn verify_problems(e: FetchError) -> Vec<SignatureProblem> {
    match e {
        FetchError::Verify {
            source: VerifyError::NoGoodSignature { problems, .. },
            ..
        } => problems,
        other => panic!("expected a signature failure, got {other:?}"),
    }
}

#[test]
fn inrelease_altered_after_signing_is_refused_and_not_cached() {
    let gpg = Gpg::new();
    let repo = three_packages().build(&gpg);
    let inrelease = repo.dist().join("InRelease");
    let text = std::fs::read_to_string(&inrelease).unwrap();
    // Point the Packages.xz entry at other bytes: the first digit of its digest changed.
    let line = text
        .lines()
        .skip_while(|l| *l != "SHA256:")
        .find(|l| l.ends_with("main/binary-amd64/Packages.xz"))
        .unwrap()
        .to_owned();
    let flipped = if line.as_bytes()[1] == b'0' { "1" } else { "0" };
    let altered_line = format!(" {flipped}{}", &line[2..]);
    assert_ne!(line, altered_line);
    std::fs::write(&inrelease, text.replace(&line, &altered_line)).unwrap();

    let server = Server::start(&repo.root);
    let cache = tempfile::tempdir().unwrap();
    let e = Fetcher::new(cache.path())
        .release(&repo.source(&server.url()), &repo.keyring(&gpg), now())
        .unwrap_err();
    let message = e.to_string();
    assert!(message.contains("/dists/stable/InRelease"), "{message}");
    assert_eq!(
        verify_problems(e),
        [SignatureProblem::Bad {
            key: repo.signers[0].clone()
        }]
    );
    assert!(files_below(&cache.path().join("releases")).is_empty());
}

#[test]
fn inrelease_signed_by_a_key_not_in_the_keyring_is_refused() {
    let gpg = Gpg::new();
    let repo = three_packages().build(&gpg);
    let stranger = gpg.generate("Other <other@example.invalid>", "ed25519", "sign", "never");
    let keyring =
        debian::openpgp::Keyring::from_bytes(&gpg.export(&stranger, false), "other.gpg").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let e = Fetcher::new(cache.path())
        .release(&repo.source(&repo.file_uri()), &keyring, now())
        .unwrap_err();
    assert!(e.to_string().contains("InRelease"), "{e}");
    let p = verify_problems(e);
    assert!(
        matches!(&p[..], [SignatureProblem::UnknownKey { issuer }] if *issuer == repo.signers[0]),
        "{p:?}"
    );
}

#[test]
fn unsigned_repository_is_refused() {
    let gpg = Gpg::new();
    let repo = three_packages().signing(Signing::None).build(&gpg);
    let server = Server::start(&repo.root);
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(cache.path());
    let e = fetcher
        .release(&repo.source(&server.url()), &repo.keyring(&gpg), now())
        .unwrap_err();
    assert!(matches!(e, FetchError::Unsigned { .. }), "{e}");
    assert!(e.to_string().contains("not signed"), "{e}");

    // An "InRelease" that is the bare Release text.
    std::fs::copy(repo.dist().join("Release"), repo.dist().join("InRelease")).unwrap();
    let e = fetcher
        .release(&repo.source(&server.url()), &repo.keyring(&gpg), now())
        .unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::Verify {
                source: VerifyError::NotClearsigned { .. },
                ..
            }
        ),
        "{e}"
    );
    assert!(files_below(&cache.path().join("releases")).is_empty());
}

#[test]
fn release_gpg_is_used_when_inrelease_is_absent() {
    let gpg = Gpg::new();
    let repo = three_packages().signing(Signing::Detached).build(&gpg);
    let server = Server::start(&repo.root);
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(cache.path());
    let source = repo.source(&server.url());
    let release = fetcher
        .release(&source, &repo.keyring(&gpg), now())
        .unwrap();
    let paths: Vec<_> = server
        .requests()
        .into_iter()
        .map(|r| (r.path, r.status))
        .collect();
    assert_eq!(
        paths,
        [
            ("/dists/stable/InRelease".to_owned(), 404),
            ("/dists/stable/Release".to_owned(), 200),
            ("/dists/stable/Release.gpg".to_owned(), 200)
        ]
    );
    let index = fetcher
        .packages_index(&source, &release, "main", "amd64")
        .unwrap();
    assert_eq!(package_names(&index).len(), 3);

    // Release altered after signing.
    let text = std::fs::read_to_string(repo.dist().join("Release")).unwrap();
    std::fs::write(
        repo.dist().join("Release"),
        text.replace("Codename: fixture", "Codename: fixturf"),
    )
    .unwrap();
    let e = Fetcher::new(tempfile::tempdir().unwrap().path())
        .release(&source, &repo.keyring(&gpg), now())
        .unwrap_err();
    assert!(e.to_string().contains("/dists/stable/Release"), "{e}");
    assert!(matches!(
        &verify_problems(e)[..],
        [SignatureProblem::Bad { .. }]
    ));
}

#[test]
fn packages_whose_hash_does_not_match_release_is_refused() {
    let gpg = Gpg::new();
    let repo = three_packages().build(&gpg);
    let server = Server::start(&repo.root);
    let source = repo.source(&server.url());
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(cache.path());
    let release = fetcher
        .release(&source, &repo.keyring(&gpg), now())
        .unwrap();
    let expected = release
        .file("main/binary-amd64/Packages.xz")
        .unwrap()
        .sha256
        .clone();

    // Same length, one byte changed in transit.
    server.fault("/dists/stable/main/binary-amd64/Packages.xz", Fault::Tamper);
    let e = fetcher
        .packages_index(&source, &release, "main", "amd64")
        .unwrap_err();
    match &e {
        FetchError::DigestMismatch {
            url,
            expected: want,
            actual,
        } => {
            assert!(
                url.ends_with("/dists/stable/main/binary-amd64/Packages.xz"),
                "{url}"
            );
            assert_eq!(*want, expected);
            assert_ne!(actual, want);
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    let message = e.to_string();
    assert!(message.contains(&expected.to_string()), "{message}");
    // The mismatch stops: no fallback to another variant.
    assert!(server.requests_for("Packages.gz").is_empty());
    assert!(files_below(&cache.path().join("indexes")).is_empty());

    // Replaced on the mirror by another valid index: size and digest differ.
    server.clear_faults();
    let other = repo.dist().join("main/binary-amd64/Packages.xz");
    std::fs::write(
        &other,
        support::read(&repo.dist().join("main/binary-amd64/Packages.gz")),
    )
    .unwrap();
    let e = fetcher
        .packages_index(&source, &release, "main", "amd64")
        .unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::SizeMismatch { .. } | FetchError::DigestMismatch { .. }
        ),
        "{e}"
    );
    assert!(files_below(&cache.path().join("indexes")).is_empty());
}

#[test]
fn packages_variant_missing_on_the_mirror_falls_back_to_the_next_listed() {
    let gpg = Gpg::new();
    let repo = three_packages().build(&gpg);
    let server = Server::start(&repo.root);
    let source = repo.source(&server.url());
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(cache.path());
    let release = fetcher
        .release(&source, &repo.keyring(&gpg), now())
        .unwrap();
    server.fault(
        "/dists/stable/main/binary-amd64/Packages.xz",
        Fault::NotFound,
    );
    let index = fetcher
        .packages_index(&source, &release, "main", "amd64")
        .unwrap();
    assert_eq!(package_names(&index).len(), 3);
    assert_eq!(server.requests_for("Packages.gz").len(), 1);
    // A component or architecture the Release does not list.
    let e = fetcher
        .packages_index(&source, &release, "contrib", "amd64")
        .unwrap_err();
    assert!(matches!(e, FetchError::NotInRelease { .. }), "{e}");
    assert!(
        e.to_string().contains("contrib/binary-amd64/Packages"),
        "{e}"
    );
}

#[test]
fn indexes_are_fetched_by_hash_when_the_release_says_so() {
    let gpg = Gpg::new();
    let repo = three_packages().by_hash(true).build(&gpg);
    let server = Server::start(&repo.root);
    let source = repo.source(&server.url());
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(cache.path());
    let release = fetcher
        .release(&source, &repo.keyring(&gpg), now())
        .unwrap();
    assert!(release.acquire_by_hash);
    let xz = release
        .file("main/binary-amd64/Packages.xz")
        .unwrap()
        .sha256
        .clone();
    let by_hash = format!(
        "/dists/stable/main/binary-amd64/by-hash/SHA256/{}",
        xz.hex()
    );
    let index = fetcher
        .packages_index(&source, &release, "main", "amd64")
        .unwrap();
    assert_eq!(package_names(&index).len(), 3);
    let log: Vec<_> = server
        .requests_for("")
        .into_iter()
        .filter(|r| r.path.contains("binary-amd64"))
        .map(|r| (r.path, r.status))
        .collect();
    assert_eq!(log, [(by_hash.clone(), 200)]);

    // A mirror without the by-hash copy: the file is fetched by name.
    let cache = tempfile::tempdir().unwrap();
    server.fault(&by_hash, Fault::NotFound);
    server.clear_log();
    Fetcher::new(cache.path())
        .packages_index(&source, &release, "main", "amd64")
        .unwrap();
    let log: Vec<_> = server
        .requests()
        .into_iter()
        .map(|r| (r.path, r.status))
        .collect();
    assert_eq!(
        log,
        [
            (by_hash, 404),
            (
                "/dists/stable/main/binary-amd64/Packages.xz".to_owned(),
                200
            )
        ]
    );
}

#[test]
fn gz_only_and_uncompressed_only_repositories() {
    for compressions in [&["gz"][..], &[""][..]] {
        let gpg = Gpg::new();
        let repo = three_packages().compressions(compressions).build(&gpg);
        let cache = tempfile::tempdir().unwrap();
        fetch_all(&Fetcher::new(cache.path()), &repo, &repo.file_uri(), &gpg);
    }
}

#[test]
fn deb_whose_hash_does_not_match_packages_is_refused_and_not_cached() {
    let gpg = Gpg::new();
    let repo = three_packages().build(&gpg);
    let server = Server::start(&repo.root);
    let gamma = repo.deb("gamma");
    server.fault(&format!("/{}", gamma.filename), Fault::Tamper);
    let cache = tempfile::tempdir().unwrap();
    let request = gamma.request(&server.url());
    let e = Fetcher::new(cache.path())
        .debs(std::slice::from_ref(&request))
        .unwrap_err();
    match &e {
        FetchError::DigestMismatch {
            url,
            expected,
            actual,
        } => {
            assert_eq!(*url, request.url());
            assert_eq!(*expected, gamma.sha256);
            assert_ne!(actual, expected);
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(e.to_string().contains(&gamma.sha256.to_string()), "{e}");
    assert!(files_below(&cache.path().join("debs")).is_empty());
    // The bad bytes are not kept for a resume either.
    assert!(files_below(&cache.path().join("partial"))
        .iter()
        .all(|f| f.ends_with(".lock")));

    // Same over file://: a Packages digest that does not match the file.
    let mut wrong = repo.deb("alpha").request(&repo.file_uri());
    wrong.sha256 = gamma.sha256.clone();
    let e = Fetcher::new(cache.path()).debs(&[wrong]).unwrap_err();
    assert!(matches!(e, FetchError::DigestMismatch { .. }), "{e}");
    assert!(files_below(&cache.path().join("debs")).is_empty());
    assert!(files_below(&cache.path().join("tmp")).is_empty());
}

#[test]
fn deb_whose_size_does_not_match_packages_is_refused_and_not_cached() {
    let gpg = Gpg::new();
    let repo = three_packages().build(&gpg);
    let server = Server::start(&repo.root);
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(cache.path());
    for uri in [server.url(), repo.file_uri()] {
        let deb = repo.deb("gamma");
        let mut larger = deb.request(&uri);
        larger.size += 10;
        let e = fetcher.debs(&[larger]).unwrap_err();
        assert!(
            matches!(e, FetchError::SizeMismatch { actual: Some(n), .. } if n == deb.size),
            "{uri}: {e}"
        );
        let mut smaller = deb.request(&uri);
        smaller.size -= 10;
        let e = fetcher.debs(&[smaller]).unwrap_err();
        assert!(
            matches!(e, FetchError::SizeMismatch { actual: None, .. }),
            "{uri}: {e}"
        );
        assert!(e.to_string().contains(&deb.filename), "{e}");
        assert!(files_below(&cache.path().join("debs")).is_empty());
        assert!(files_below(&cache.path().join("partial"))
            .iter()
            .all(|f| f.ends_with(".lock")));
    }
}

#[test]
fn release_past_valid_until_is_refused() {
    let gpg = Gpg::new();
    let past = support::http_date(SystemTime::now() - Duration::from_secs(3600));
    let repo = three_packages()
        .release_field("Valid-Until", &past)
        .build(&gpg);
    let cache = tempfile::tempdir().unwrap();
    let e = Fetcher::new(cache.path())
        .release(&repo.source(&repo.file_uri()), &repo.keyring(&gpg), now())
        .unwrap_err();
    match &e {
        FetchError::Release {
            source: ReleaseError::Expired { valid_until },
            ..
        } => assert_eq!(*valid_until, past),
        other => panic!("expected an expired Release, got {other:?}"),
    }
    assert!(files_below(&cache.path().join("releases")).is_empty());

    // Valid-Until from apt-ftparchive's ValidTime: fine now, expired two days later.
    let repo = three_packages()
        .valid_for(Duration::from_secs(86400))
        .build(&gpg);
    let source = repo.source(&repo.file_uri());
    let fetcher = Fetcher::new(cache.path());
    let release = fetcher
        .release(&source, &repo.keyring(&gpg), now())
        .unwrap();
    assert!(release.valid_until.is_some());
    let later = now() + Duration::from_secs(2 * 86400);
    let e = fetcher
        .release(&source, &repo.keyring(&gpg), later)
        .unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::Release {
                source: ReleaseError::Expired { .. },
                ..
            }
        ),
        "{e}"
    );
    // Offline, the cached copy is held to the same rule.
    let e = fetcher
        .clone()
        .offline(true)
        .release(&source, &repo.keyring(&gpg), later)
        .unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::Release {
                source: ReleaseError::Expired { .. },
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn release_of_another_suite_is_refused() {
    let gpg = Gpg::new();
    let repo = three_packages().build(&gpg);
    // A mirror serving stable's (validly signed) InRelease under dists/testing.
    let testing = repo.root.join("dists/testing");
    std::fs::create_dir_all(&testing).unwrap();
    std::fs::copy(repo.dist().join("InRelease"), testing.join("InRelease")).unwrap();
    let mut source = repo.source(&repo.file_uri());
    source.suite = "testing".into();
    let cache = tempfile::tempdir().unwrap();
    let e = Fetcher::new(cache.path())
        .release(&source, &repo.keyring(&gpg), now())
        .unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::Release {
                source: ReleaseError::WrongSuite { .. },
                ..
            }
        ),
        "{e}"
    );
    // The codename is accepted as well as the suite.
    source.suite = "fixture".into();
    let fixture = repo.root.join("dists/fixture");
    std::fs::create_dir_all(&fixture).unwrap();
    std::fs::copy(repo.dist().join("InRelease"), fixture.join("InRelease")).unwrap();
    Fetcher::new(cache.path())
        .release(&source, &repo.keyring(&gpg), now())
        .unwrap();
}

#[test]
fn download_cut_in_the_middle_resumes_with_range() {
    let gpg = Gpg::new();
    let repo = three_packages().build(&gpg);
    let server = Server::start(&repo.root);
    let gamma = repo.deb("gamma");
    let path = format!("/{}", gamma.filename);
    let cut = (gamma.size / 2) as usize;
    server.fault(
        &path,
        Fault::Truncate {
            after: cut,
            times: 1,
        },
    );
    let cache = tempfile::tempdir().unwrap();
    let paths = Fetcher::new(cache.path())
        .debs(&[gamma.request(&server.url())])
        .unwrap();
    assert_eq!(
        support::read(&paths[0]),
        support::read(&repo.root.join(&gamma.filename))
    );
    let log = server.requests_for(&gamma.filename);
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!((log[0].range.as_deref(), log[0].status), (None, 200));
    assert_eq!(log[1].status, 206);
    let range = log[1].range.clone().unwrap();
    let start: u64 = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .unwrap()
        .parse()
        .unwrap();
    // Resumed exactly where the connection broke: the bytes received were kept.
    assert_eq!(start, cut as u64, "{range}");
    assert!(files_below(&cache.path().join("partial"))
        .iter()
        .all(|f| f.ends_with(".lock")));
}

#[test]
fn cut_download_restarts_when_the_server_ignores_range() {
    let gpg = Gpg::new();
    let repo = three_packages().build(&gpg);
    let server = Server::start(&repo.root);
    let gamma = repo.deb("gamma");
    let path = format!("/{}", gamma.filename);
    server.fault(
        &path,
        Fault::Truncate {
            after: 1000,
            times: 1,
        },
    );
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(cache.path());
    // First attempt cut; the retry asks for a range and gets the whole file (200).
    let truncated_then_whole = {
        let s = &server;
        let p = path.clone();
        move || s.fault(&p, Fault::IgnoreRange)
    };
    let err = fetcher
        .clone()
        .retries(0)
        .debs(&[gamma.request(&server.url())])
        .unwrap_err();
    assert!(matches!(err, FetchError::Interrupted { .. }), "{err}");
    assert!(err.to_string().contains(&gamma.filename), "{err}");
    truncated_then_whole();
    let paths = fetcher.debs(&[gamma.request(&server.url())]).unwrap();
    assert_eq!(
        support::read(&paths[0]),
        support::read(&repo.root.join(&gamma.filename))
    );
    let log = server.requests_for(&gamma.filename);
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[1].range.is_some(), "{log:?}");
    assert_eq!(log[1].status, 200);
}

#[test]
fn offline_with_a_warm_cache_works_and_a_cold_cache_names_what_is_missing() {
    let gpg = Gpg::new();
    let repo = three_packages().build(&gpg);
    let cache = tempfile::tempdir().unwrap();
    let uri;
    {
        let server = Server::start(&repo.root);
        uri = server.url();
        fetch_all(&Fetcher::new(cache.path()), &repo, &uri, &gpg);
    }
    // The server is gone: offline works from the cache alone.
    let offline = Fetcher::new(cache.path()).offline(true);
    let paths = fetch_all(&offline, &repo, &uri, &gpg);
    assert_eq!(paths.len(), 3);

    // Cold cache: each step names what is missing.
    let cold = tempfile::tempdir().unwrap();
    let offline = Fetcher::new(cold.path()).offline(true);
    let source = repo.source(&uri);
    let e = offline
        .release(&source, &repo.keyring(&gpg), now())
        .unwrap_err();
    assert!(matches!(e, FetchError::NotCached { .. }), "{e}");
    assert!(
        e.to_string().contains(&format!("{uri}/dists/stable")),
        "{e}"
    );

    let release = Fetcher::new(cold.path())
        .release(&repo.source(&repo.file_uri()), &repo.keyring(&gpg), now())
        .unwrap();
    let e = offline
        .packages_index(&source, &release, "main", "amd64")
        .unwrap_err();
    assert!(matches!(e, FetchError::NotCached { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("{uri}/dists/stable/main/binary-amd64/Packages.xz")),
        "{e}"
    );

    let requests: Vec<_> = repo.debs.iter().map(|d| d.request(&uri)).collect();
    let e = offline.debs(&requests).unwrap_err();
    let message = e.to_string();
    assert!(message.contains("3 package(s)"), "{message}");
    for d in &repo.debs {
        assert!(message.contains(&d.filename), "{message}");
        assert!(message.contains(&d.sha256.to_string()), "{message}");
    }
}

#[test]
fn warm_cache_downloads_nothing_but_the_inrelease() {
    let gpg = Gpg::new();
    let repo = three_packages().build(&gpg);
    let server = Server::start(&repo.root);
    server.last_modified(true);
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(cache.path());
    fetch_all(&fetcher, &repo, &server.url(), &gpg);
    server.clear_log();

    fetch_all(&fetcher, &repo, &server.url(), &gpg);
    let log = server.requests();
    // Only a conditional GET of InRelease, answered 304 and re-verified from the cache.
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].path, "/dists/stable/InRelease");
    assert!(log[0].if_modified_since.is_some());
    assert_eq!(log[0].status, 304);

    // A cached InRelease that was tampered with is still refused after a 304.
    let cached = support::files_below(&cache.path().join("releases"));
    let inrelease = cached.iter().find(|f| f.ends_with("/InRelease")).unwrap();
    let path = cache.path().join("releases").join(inrelease);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("Suite: stable", "Suite: stablE")).unwrap();
    let e = fetcher
        .release(&repo.source(&server.url()), &repo.keyring(&gpg), now())
        .unwrap_err();
    assert!(matches!(e, FetchError::Verify { .. }), "{e}");
}

#[test]
fn many_debs_in_parallel_with_duplicates() {
    let mut builder = RepoBuilder::new();
    for i in 0..12 {
        builder = builder.deb(
            "main",
            DebSpec::new(&format!("pkg{i:02}"), "1.0").file("usr/share/blob", &noise(20_000, i)),
        );
    }
    let gpg = Gpg::new();
    let repo = builder.build(&gpg);
    let server = Server::start(&repo.root);
    let cache = tempfile::tempdir().unwrap();
    let mut requests: Vec<_> = repo.debs.iter().map(|d| d.request(&server.url())).collect();
    requests.push(requests[0].clone());
    let paths = Fetcher::new(cache.path())
        .parallel(4)
        .debs(&requests)
        .unwrap();
    assert_eq!(paths.len(), 13);
    assert_eq!(paths[0], paths[12]);
    for (d, p) in repo.debs.iter().zip(&paths) {
        assert_eq!(
            support::read(p),
            support::read(&repo.root.join(&d.filename))
        );
    }
    // Each file downloaded once.
    assert_eq!(server.requests_for(".deb").len(), 12);
}

#[test]
fn fixture_repo_script_builds_a_repository_the_fetcher_accepts() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fixture-repo");
    let out = tempfile::tempdir().unwrap();
    let stdout = support::run(
        std::process::Command::new(&script)
            .arg(out.path())
            .arg("alpha=1.0-1;Depends: beta (>= 2)")
            .arg("beta=2:2.0;Architecture: all"),
    );
    // The script prints the source entry to use.
    let line = String::from_utf8(stdout).unwrap();
    let source = debian::sources::parse_one_line(line.trim()).unwrap();
    let keyring =
        debian::openpgp::Keyring::for_source(&source, Path::new("/nonexistent/etc/apt")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(cache.path());
    let release = fetcher.release(&source, &keyring, now()).unwrap();
    let index = fetcher
        .packages_index(&source, &release, "main", "amd64")
        .unwrap();
    let mut requests = Vec::new();
    for p in control::paragraphs(&index) {
        let p = p.unwrap();
        requests.push(debian::fetch::DebRequest {
            repository: source.uri.clone(),
            filename: p.require("Filename").unwrap().to_owned(),
            sha256: types::Digest::from_hex(p.require("SHA256").unwrap()).unwrap(),
            size: p.require("Size").unwrap().parse().unwrap(),
        });
    }
    assert_eq!(package_names(&index), ["alpha", "beta"]);
    assert_eq!(fetcher.debs(&requests).unwrap().len(), 2);
}

#[test]
fn leftover_partial_is_resumed_and_a_corrupt_one_is_discarded() {
    let gpg = Gpg::new();
    let repo = three_packages().build(&gpg);
    let server = Server::start(&repo.root);
    let gamma = repo.deb("gamma");
    let bytes = support::read(&repo.root.join(&gamma.filename));
    let cache = tempfile::tempdir().unwrap();
    let partial_dir = cache.path().join("partial");
    std::fs::create_dir_all(&partial_dir).unwrap();
    let partial = partial_dir.join(format!("{}.partial", gamma.sha256.hex()));

    // What an interrupted earlier run left: the first 1000 bytes.
    std::fs::write(&partial, &bytes[..1000]).unwrap();
    let fetcher = Fetcher::new(cache.path());
    let paths = fetcher.debs(&[gamma.request(&server.url())]).unwrap();
    assert_eq!(support::read(&paths[0]), bytes);
    let log = server.requests_for(&gamma.filename);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].range.as_deref(), Some("bytes=1000-"));
    assert!(!partial.exists());

    // A leftover whose bytes are wrong: the completed file does not verify, is reported and
    // removed, and the next run downloads it whole.
    let cache = tempfile::tempdir().unwrap();
    let partial_dir = cache.path().join("partial");
    std::fs::create_dir_all(&partial_dir).unwrap();
    let partial = partial_dir.join(format!("{}.partial", gamma.sha256.hex()));
    let mut corrupt = bytes[..1000].to_vec();
    corrupt[10] ^= 0xff;
    std::fs::write(&partial, &corrupt).unwrap();
    server.clear_log();
    let fetcher = Fetcher::new(cache.path());
    let e = fetcher.debs(&[gamma.request(&server.url())]).unwrap_err();
    assert!(matches!(e, FetchError::DigestMismatch { .. }), "{e}");
    assert!(!partial.exists());
    assert!(files_below(&cache.path().join("debs")).is_empty());
    let paths = fetcher.debs(&[gamma.request(&server.url())]).unwrap();
    assert_eq!(support::read(&paths[0]), bytes);
    let ranges: Vec<_> = server
        .requests_for(&gamma.filename)
        .into_iter()
        .map(|r| r.range)
        .collect();
    assert_eq!(ranges, [Some("bytes=1000-".to_owned()), None]);
}
