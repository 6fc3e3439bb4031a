//! SBOM inputs built from this host's dpkg database: real Debian packages, their real copyright
//! files and (for a few packages) their installed files, hashed.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use sbom::license::{self, Detection};
use sbom::{FileInfo, ImageSubject, PackageInfo, SbomInput, Supplier, Tool};
use types::Digest;

/// Packages every test host has (CI installs them): their copyright files are checked exactly.
pub const WELL_KNOWN: &[&str] = &[
    "python3.11",
    "libssl3",
    "zlib1g",
    "ca-certificates",
    "tzdata",
    "libc6",
];

/// Packages whose installed files are hashed into the input.
pub const WITH_FILES: &[&str] = &["zlib1g", "libssl3", "ca-certificates"];

pub const SOURCE_DATE_EPOCH: u64 = 1_700_000_000;

pub fn subject() -> ImageSubject {
    ImageSubject {
        name: "hardbox.local/python".to_owned(),
        manifest_digest: Digest::of(b"an image manifest"),
        tags: vec!["3.11".to_owned(), "latest".to_owned()],
        supplier: Some(Supplier::organization("hardbox tests")),
    }
}

/// The copyright file of `package` on this host, read and detected.
pub fn detect(package: &str) -> Detection {
    let path = format!("/usr/share/doc/{package}/copyright");
    let text = fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (is {package} installed?)"));
    license::from_copyright(&String::from_utf8_lossy(&text))
}

/// Every installed package on this host (from /var/lib/dpkg/status), with its declared license.
/// Files are hashed for the packages in `with_files`.
pub fn host_packages(with_files: &[&str]) -> Vec<PackageInfo> {
    let status = fs::read_to_string("/var/lib/dpkg/status").unwrap();
    let paragraphs = debian::control::parse(&status).unwrap();
    let mut packages = Vec::new();
    for p in paragraphs {
        if !p.get("Status").is_some_and(|s| s.ends_with(" installed")) {
            continue;
        }
        let name = p.get("Package").unwrap().to_owned();
        let version = p.get("Version").unwrap().to_owned();
        let architecture = p.get("Architecture").unwrap().to_owned();
        let (source_name, source_version) = match p.get("Source") {
            None => (name.clone(), version.clone()),
            Some(source) => match source.split_once(" (") {
                Some((n, v)) => (n.to_owned(), v.trim_end_matches(')').to_owned()),
                None => (source.to_owned(), version.clone()),
            },
        };
        let copyright = format!("/usr/share/doc/{name}/copyright");
        let (license, copyright_file) = match fs::read(&copyright) {
            Ok(text) => (
                license::from_copyright(&String::from_utf8_lossy(&text)).license,
                Some(copyright),
            ),
            Err(_) => (sbom::DeclaredLicense::noassertion(), None),
        };
        let files = if with_files.contains(&name.as_str()) {
            installed_files(&name, &architecture)
        } else {
            Vec::new()
        };
        packages.push(PackageInfo {
            name,
            version,
            architecture,
            source_name,
            source_version,
            distro: "debian-12".to_owned(),
            license,
            copyright_file,
            files,
            supplier: p.get("Maintainer").map(Supplier::from_maintainer),
            deb_sha256: None,
        });
    }
    assert!(packages.len() > 100, "dpkg database looks empty");
    packages
}

/// The regular files dpkg lists for `name`, hashed.
pub fn installed_files(name: &str, architecture: &str) -> Vec<FileInfo> {
    let list = [
        format!("/var/lib/dpkg/info/{name}:{architecture}.list"),
        format!("/var/lib/dpkg/info/{name}.list"),
    ]
    .into_iter()
    .find_map(|p| fs::read_to_string(p).ok())
    .unwrap_or_else(|| panic!("no dpkg file list for {name}"));
    let mut files = Vec::new();
    for path in list.lines() {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(_) => continue,
        };
        if meta.is_file() {
            files.push(FileInfo::of(path, &fs::read(Path::new(path)).unwrap()));
        }
    }
    assert!(!files.is_empty(), "{name} has no regular files");
    files
}

pub fn input(packages: Vec<PackageInfo>) -> SbomInput {
    SbomInput {
        subject: subject(),
        packages,
        created: SOURCE_DATE_EPOCH,
        tool: Tool::hardbox(),
    }
}

/// The whole host as one image.
pub fn host_input() -> SbomInput {
    input(host_packages(WITH_FILES))
}

/// A small package with the given license, for error and structure tests.
pub fn package(name: &str, expression: Option<&str>, refs: &[(&str, &str)]) -> PackageInfo {
    PackageInfo {
        name: name.to_owned(),
        version: "1.0-1".to_owned(),
        architecture: "amd64".to_owned(),
        source_name: name.to_owned(),
        source_version: "1.0-1".to_owned(),
        distro: "debian-12".to_owned(),
        license: sbom::DeclaredLicense {
            expression: expression.map(str::to_owned),
            license_refs: refs
                .iter()
                .map(|(id, text)| ((*id).to_owned(), (*text).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        },
        copyright_file: Some(format!("/usr/share/doc/{name}/copyright")),
        files: Vec::new(),
        supplier: Some(Supplier::from_maintainer("A Maintainer <a@example.org>")),
        deb_sha256: Some(Digest::of(name.as_bytes())),
    }
}
