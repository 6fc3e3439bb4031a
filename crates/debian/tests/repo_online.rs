#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

//! Online: the host's own apt mirror, verified end to end. CI reaches the host's configured
//! mirror; this test fails (never skips) when the host has no `deb` source.

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use debian::control;
use debian::fetch::Fetcher;
use debian::openpgp::Keyring;
use debian::sources::host_sources;

const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

fn host_arch() -> String {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .expect("dpkg --print-architecture");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn host_mirror_inrelease_and_main_packages_verify() {
    let etc_apt = Path::new("/etc/apt");
    let sources = host_sources(etc_apt).unwrap();
    let Some(source) = sources.first() else {
        panic!(
            "the host has no `deb` source in /etc/apt/sources.list or /etc/apt/sources.list.d; \
             this online test needs the host's apt mirror configured"
        );
    };
    let keyring = if source.signed_by.is_empty() {
        Keyring::load(Path::new(DEBIAN_KEYRING)).unwrap()
    } else {
        Keyring::for_source(source, etc_apt).unwrap()
    };
    let arch = host_arch();
    let arch = if source.architectures.is_empty() || source.architectures.contains(&arch) {
        arch
    } else {
        source.architectures[0].clone()
    };
    let component = if source.components.iter().any(|c| c == "main") {
        "main".to_owned()
    } else {
        source.components.first().cloned().unwrap_or_default()
    };

    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(cache.path());
    let now = SystemTime::now();
    let release = fetcher
        .release(source, &keyring, now)
        .unwrap_or_else(|e| panic!("{source}: {e:#?}"));
    assert!(
        release
            .files
            .keys()
            .any(|p| p.starts_with(&format!("{component}/binary-{arch}/"))),
        "{source}: the Release lists no {component}/binary-{arch} index"
    );
    let text = fetcher
        .packages_index(source, &release, &component, &arch)
        .unwrap_or_else(|e| panic!("{source}: {e:#?}"));
    let mut paragraphs = 0;
    for p in control::paragraphs(&text) {
        p.unwrap_or_else(|e| panic!("{source}: Packages {e}"));
        paragraphs += 1;
    }
    assert!(
        paragraphs > 1000,
        "{source}: only {paragraphs} paragraphs in {component}/binary-{arch}/Packages"
    );

    // The same, offline from the cache just filled: verified again, not downloaded.
    let offline = Fetcher::new(cache.path()).offline(true);
    let release = offline.release(source, &keyring, now).unwrap();
    let again = offline
        .packages_index(source, &release, &component, &arch)
        .unwrap();
    assert_eq!(again, text);
}
