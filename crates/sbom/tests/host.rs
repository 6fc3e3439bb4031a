//! SBOMs of this host's Debian packages: licenses from the real copyright files, document
//! structure, determinism, and inputs that are refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::process::Command;

use sbom::license::{self, CopyrightFormat};
use sbom::{cyclonedx, spdx, FileInfo, SbomError};
use serde_json::Value;
use sha1::{Digest as _, Sha1};
use types::Digest;

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn host_copyright_files_give_the_licenses_they_declare() {
    for (package, format, expression) in [
        ("python3.11", CopyrightFormat::FreeForm, None),
        ("libc6", CopyrightFormat::FreeForm, None),
        (
            "libssl3",
            CopyrightFormat::MachineReadable,
            Some("Apache-2.0 AND (Artistic-1.0-Perl OR GPL-1.0-or-later)"),
        ),
        ("zlib1g", CopyrightFormat::MachineReadable, Some("Zlib")),
        (
            "ca-certificates",
            CopyrightFormat::MachineReadable,
            Some("GPL-2.0-or-later AND MPL-2.0"),
        ),
        (
            "tzdata",
            CopyrightFormat::MachineReadable,
            Some("LicenseRef-public-domain"),
        ),
    ] {
        let detection = support::detect(package);
        assert_eq!(detection.format, format, "{package}");
        assert_eq!(
            detection.license.expression.as_deref(),
            expression,
            "{package}"
        );
        assert!(
            detection.warnings.is_empty(),
            "{package}: {:?}",
            detection.warnings
        );
    }
    // tzdata's text for its LicenseRef comes from its own stand-alone License paragraph.
    let tzdata = support::detect("tzdata");
    let text = &tzdata.license.license_refs["LicenseRef-public-domain"];
    assert!(!text.contains("without giving its text"), "{text}");
}

#[test]
fn every_copyright_file_on_this_host_gives_an_expression_the_documents_accept() {
    let mut machine_readable = 0;
    let mut packages = Vec::new();
    for entry in fs::read_dir("/usr/share/doc").unwrap() {
        let dir = entry.unwrap().path();
        let Ok(text) = fs::read(dir.join("copyright")) else {
            continue;
        };
        let detection = license::from_copyright(&String::from_utf8_lossy(&text));
        if detection.format == CopyrightFormat::MachineReadable {
            machine_readable += 1;
        }
        for warning in &detection.warnings {
            assert!(
                warning.to_string().starts_with("line ")
                    || matches!(warning, license::LicenseWarning::NoLicense),
                "{warning}"
            );
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut package = support::package(&name, None, &[]);
        package.license = detection.license;
        packages.push(package);
    }
    assert!(
        machine_readable > 100,
        "only {machine_readable} DEP-5 files"
    );
    let input = support::input(packages);
    spdx::to_json(&input).unwrap();
    cyclonedx::to_json(&input).unwrap();
}

#[test]
fn documents_are_byte_identical_for_the_same_input_in_any_order() {
    let input = support::host_input();
    let spdx_bytes = spdx::to_json(&input).unwrap();
    let cdx_bytes = cyclonedx::to_json(&input).unwrap();

    let mut shuffled = input.clone();
    shuffled.packages.reverse();
    for p in &mut shuffled.packages {
        p.files.reverse();
    }
    shuffled.subject.tags.reverse();
    assert_eq!(spdx::to_json(&shuffled).unwrap(), spdx_bytes);
    assert_eq!(cyclonedx::to_json(&shuffled).unwrap(), cdx_bytes);

    // Another image gets other identifiers.
    let mut other = input.clone();
    other.subject.manifest_digest = Digest::of(b"another manifest");
    let (a, b) = (json(&spdx_bytes), json(&spdx::to_json(&other).unwrap()));
    assert_ne!(a["documentNamespace"], b["documentNamespace"]);
    let (a, b) = (json(&cdx_bytes), json(&cyclonedx::to_json(&other).unwrap()));
    assert_ne!(a["serialNumber"], b["serialNumber"]);
}

/// `sha1sum`/`sha256sum` of `path`, from coreutils.
fn coreutils_hash(tool: &str, path: &str) -> String {
    let out = Command::new(tool).arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..if tool == "sha1sum" { 40 } else { 64 }].to_owned()
}

#[test]
fn spdx_document_links_image_packages_and_files() {
    let input = support::host_input();
    let doc = json(&spdx::to_json(&input).unwrap());
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["SPDXID"], "SPDXRef-DOCUMENT");
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    assert_eq!(
        doc["creationInfo"]["creators"],
        serde_json::json!([format!("Tool: hardbox-{}", env!("CARGO_PKG_VERSION"))])
    );
    let namespace = doc["documentNamespace"].as_str().unwrap();
    assert!(
        namespace.starts_with("https://") && namespace.contains("/spdx/hardbox.local/python-"),
        "{namespace}"
    );

    let relationships: BTreeSet<(String, String, String)> = doc["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["spdxElementId"].as_str().unwrap().to_owned(),
                r["relationshipType"].as_str().unwrap().to_owned(),
                r["relatedSpdxElement"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let has =
        |a: &str, kind: &str, b: &str| relationships.contains(&(a.into(), kind.into(), b.into()));
    assert!(has("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image"));

    let packages = doc["packages"].as_array().unwrap();
    assert_eq!(packages.len(), input.packages.len() + 1);
    let image = &packages[0];
    assert_eq!(image["primaryPackagePurpose"], "CONTAINER");
    assert_eq!(
        image["checksums"][0]["checksumValue"],
        input.subject.manifest_digest.hex()
    );
    for p in &packages[1..] {
        assert!(
            has("SPDXRef-Image", "CONTAINS", p["SPDXID"].as_str().unwrap()),
            "{}",
            p["name"]
        );
    }

    let zlib = packages.iter().find(|p| p["name"] == "zlib1g").unwrap();
    let zlib_info = input.packages.iter().find(|p| p.name == "zlib1g").unwrap();
    assert_eq!(zlib["licenseDeclared"], "Zlib");
    assert_eq!(zlib["licenseConcluded"], "NOASSERTION");
    assert_eq!(zlib["versionInfo"], zlib_info.version.as_str());
    assert_eq!(
        zlib["externalRefs"][0]["referenceLocator"],
        format!(
            "pkg:deb/debian/zlib1g@{}?arch={}&distro=debian-12&upstream=zlib",
            zlib_info.version, zlib_info.architecture
        )
    );
    assert_eq!(zlib["supplier"], "Person: Mark Brown (broonie@debian.org)");
    assert!(zlib["sourceInfo"].as_str().unwrap().contains("zlib"));
    assert_eq!(zlib["filesAnalyzed"], true);

    // Files: every installed regular file of zlib1g, hashed like coreutils does, contained by
    // the package, and the package verification code as SPDX defines it.
    let zlib_id = zlib["SPDXID"].as_str().unwrap();
    let files: Vec<&Value> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| has(zlib_id, "CONTAINS", f["SPDXID"].as_str().unwrap()))
        .collect();
    assert_eq!(files.len(), zlib_info.files.len());
    let mut sha1s = Vec::new();
    for f in &files {
        let name = f["fileName"].as_str().unwrap();
        let path = name.strip_prefix('.').unwrap();
        assert_eq!(f["checksums"][0]["algorithm"], "SHA1");
        assert_eq!(
            f["checksums"][0]["checksumValue"],
            coreutils_hash("sha1sum", path)
        );
        assert_eq!(f["checksums"][1]["algorithm"], "SHA256");
        assert_eq!(
            f["checksums"][1]["checksumValue"],
            coreutils_hash("sha256sum", path)
        );
        sha1s.push(coreutils_hash("sha1sum", path));
    }
    sha1s.sort();
    assert_eq!(
        zlib["packageVerificationCode"]["packageVerificationCodeValue"],
        hex::encode(Sha1::digest(sha1s.concat().as_bytes()))
    );

    // A package without files is not analysed.
    let tzdata = packages.iter().find(|p| p["name"] == "tzdata").unwrap();
    assert_eq!(tzdata["filesAnalyzed"], false);
    assert!(tzdata.get("packageVerificationCode").is_none());
    // Many packages call their own text `public-domain`: tzdata's gets an identifier of its
    // own, defined with tzdata's text.
    let tzdata_id = tzdata["licenseDeclared"].as_str().unwrap();
    assert!(
        tzdata_id.starts_with("LicenseRef-public-domain-"),
        "{tzdata_id}"
    );
    let tzdata_text = &support::detect("tzdata").license.license_refs["LicenseRef-public-domain"];
    let extracted = doc["hasExtractedLicensingInfos"].as_array().unwrap();
    let definition = extracted
        .iter()
        .find(|e| e["licenseId"] == tzdata_id)
        .unwrap();
    assert_eq!(definition["extractedText"], tzdata_text.as_str());
    assert_eq!(definition["name"], "public-domain");
}

#[test]
fn license_refs_with_different_texts_get_distinct_ids() {
    let mut a = support::package(
        "a",
        Some("LicenseRef-permissive AND MIT"),
        &[("LicenseRef-permissive", "text one")],
    );
    let b = support::package(
        "b",
        Some("LicenseRef-permissive"),
        &[("LicenseRef-permissive", "text two")],
    );
    let c = support::package(
        "c",
        Some("(LicenseRef-permissive OR GPL-2.0-only)"),
        &[("LicenseRef-permissive", "text one")],
    );
    let d = support::package(
        "d",
        Some("LicenseRef-other"),
        &[("LicenseRef-other", "other")],
    );
    a.files.push(FileInfo::of("/usr/lib/a", b"a"));
    let doc = json(&spdx::to_json(&support::input(vec![a, b, c, d])).unwrap());
    let declared = |name: &str| {
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["licenseDeclared"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let one = format!(
        "LicenseRef-permissive-{}",
        &Digest::of(b"text one").hex()[..8]
    );
    let two = format!(
        "LicenseRef-permissive-{}",
        &Digest::of(b"text two").hex()[..8]
    );
    assert_eq!(declared("a"), format!("{one} AND MIT"));
    assert_eq!(declared("b"), two);
    assert_eq!(declared("c"), format!("({one} OR GPL-2.0-only)"));
    assert_eq!(declared("d"), "LicenseRef-other");
    let extracted: Vec<(String, String)> = doc["hasExtractedLicensingInfos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["licenseId"].as_str().unwrap().to_owned(),
                e["extractedText"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut want = vec![
        (one, "text one".to_owned()),
        (two, "text two".to_owned()),
        ("LicenseRef-other".to_owned(), "other".to_owned()),
    ];
    want.sort();
    assert_eq!(extracted, want);
}

#[test]
fn cyclonedx_document_lists_the_image_and_its_packages() {
    let input = support::host_input();
    let bom = json(&cyclonedx::to_json(&input).unwrap());
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["specVersion"], "1.6");
    assert_eq!(bom["version"], 1);
    let serial = bom["serialNumber"].as_str().unwrap();
    let uuid = serial.strip_prefix("urn:uuid:").unwrap();
    assert_eq!(uuid.len(), 36);
    assert_eq!(&uuid[14..15], "5", "name-based UUID: {uuid}");
    assert_eq!(bom["metadata"]["timestamp"], "2023-11-14T22:13:20Z");
    assert_eq!(bom["metadata"]["tools"]["components"][0]["name"], "hardbox");

    let image = &bom["metadata"]["component"];
    assert_eq!(image["type"], "container");
    assert_eq!(image["name"], "hardbox.local/python");
    assert_eq!(image["version"], input.subject.manifest_digest.to_string());
    assert_eq!(image["hashes"][0]["alg"], "SHA-256");
    let image_ref = image["bom-ref"].as_str().unwrap();
    assert!(
        image_ref.starts_with("pkg:oci/python@sha256:"),
        "{image_ref}"
    );

    let components = bom["components"].as_array().unwrap();
    assert_eq!(components.len(), input.packages.len());
    let refs: Vec<&str> = components
        .iter()
        .map(|c| c["bom-ref"].as_str().unwrap())
        .collect();
    assert_eq!(
        refs.iter().collect::<BTreeSet<_>>().len(),
        refs.len(),
        "bom-refs are unique"
    );
    assert_eq!(bom["dependencies"][0]["ref"], image_ref);
    assert_eq!(
        bom["dependencies"][0]["dependsOn"]
            .as_array()
            .unwrap()
            .len(),
        refs.len()
    );

    let ssl = components.iter().find(|c| c["name"] == "libssl3").unwrap();
    assert_eq!(ssl["type"], "library");
    assert_eq!(ssl["bom-ref"], ssl["purl"]);
    assert_eq!(
        ssl["licenses"],
        serde_json::json!([{
            "expression": "Apache-2.0 AND (Artistic-1.0-Perl OR GPL-1.0-or-later)",
            "acknowledgement": "declared"
        }])
    );
    let property = |name: &str| {
        ssl["properties"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["value"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        property("hardbox:debian:source_name").as_deref(),
        Some("openssl")
    );
    assert!(property("hardbox:debian:source_version").is_some());
    assert_eq!(
        property("hardbox:debian:copyright_file").as_deref(),
        Some("/usr/share/doc/libssl3/copyright")
    );
    assert_eq!(ssl["supplier"]["name"], "Debian OpenSSL Team");
    let files = ssl["components"].as_array().unwrap();
    assert!(!files.is_empty());
    for f in files {
        assert_eq!(f["type"], "file");
        let path = f["name"].as_str().unwrap();
        assert_eq!(f["hashes"][0]["alg"], "SHA-1");
        assert_eq!(f["hashes"][0]["content"], coreutils_hash("sha1sum", path));
        assert_eq!(f["hashes"][1]["content"], coreutils_hash("sha256sum", path));
    }

    // A package whose copyright file is not machine-readable has no license claim at all.
    let libc = components.iter().find(|c| c["name"] == "libc6").unwrap();
    assert!(libc.get("licenses").is_none());
}

#[test]
fn bad_inputs_are_refused_naming_the_package() {
    let check = |packages: Vec<sbom::PackageInfo>, want: &str| {
        let input = support::input(packages);
        let spdx_err = spdx::to_json(&input).unwrap_err().to_string();
        let cdx_err = cyclonedx::to_json(&input).unwrap_err().to_string();
        assert_eq!(spdx_err, cdx_err);
        assert_eq!(spdx_err, want);
    };
    let ok = || support::package("pkg", Some("MIT"), &[]);

    let mut p = ok();
    p.version.clear();
    check(vec![p], "package \"pkg\": version is empty");

    check(vec![ok(), ok()], "package pkg (amd64) is listed twice");

    let mut p = ok();
    p.files = vec![
        FileInfo::of("/usr/bin/x", b"1"),
        FileInfo::of("usr/bin/x", b"2"),
    ];
    check(vec![p], "package pkg: file \"usr/bin/x\" is listed twice");

    let mut p = ok();
    p.files = vec![FileInfo::of("/usr/../etc/passwd", b"1")];
    check(
        vec![p],
        "package pkg: file path \"/usr/../etc/passwd\" is not a path in the image",
    );

    check(
        vec![support::package("pkg", Some("MIT OR"), &[])],
        "package pkg: license expression \"MIT OR\" is not valid: unexpected end",
    );
    check(
        vec![support::package("pkg", Some("MIT AND LicenseRef-x"), &[])],
        "package pkg: license expression uses LicenseRef-x but gives no text for it",
    );

    let mut input = support::input(vec![ok()]);
    input.created = u64::MAX;
    assert!(matches!(
        spdx::to_json(&input),
        Err(SbomError::BadTimestamp(_))
    ));
    let mut input = support::input(vec![ok()]);
    input.subject.name = " ".into();
    assert!(matches!(
        cyclonedx::to_json(&input),
        Err(SbomError::EmptyImageName)
    ));
}
