#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! The supply-chain documents of a built image: `hardbox sbom` (attached, or made from the
//! layers of an image without one) checked by the formats' reference validators, and `hardbox
//! verify` accepting the signing key and nothing else.
//!
//! Oracles (CI installs them, see `scripts/test`): `pyspdxtools` (spdx-tools) and
//! cyclonedx-python-lib's strict JSON validator. A missing oracle fails the test.

mod build_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use build_support::{fails, ok, stdout, Fixture};
use serde_json::{json, Value};
use types::Digest;

const CYCLONEDX_CHECK: &str = r#"
import sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())
if errors:
    print(errors)
    sys.exit(1)
"#;

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs both validators on the two documents of `image` in the store at `root`; returns them.
fn validated_documents(root: &Path, image: &str, dir: &Path) -> (Value, Value, String) {
    let spdx = dir.join("image.spdx.json");
    let cdx = dir.join("image.cdx.json");
    let out = ok(build_support::hardbox(root)
        .args(["sbom", image, "--format", "spdx-json", "-o"])
        .arg(&spdx));
    let messages = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(build_support::hardbox(root)
        .args(["sbom", image, "--format", "cyclonedx-json", "-o"])
        .arg(&cdx));
    let checked = Command::new("pyspdxtools")
        .arg("-i")
        .arg(&spdx)
        .output()
        .expect("pyspdxtools is not installed; run scripts/test, which installs it");
    assert!(
        checked.status.success(),
        "pyspdxtools rejected the SPDX document:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let checked = Command::new("python3")
        .args(["-c", CYCLONEDX_CHECK])
        .arg(&cdx)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "cyclonedx-python-lib rejected the CycloneDX document:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    (read_json(&spdx), read_json(&cdx), messages)
}

/// name → (version, licenseDeclared) of the Debian packages of an SPDX document.
fn spdx_packages(doc: &Value) -> BTreeMap<String, (String, String)> {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["SPDXID"] != "SPDXRef-Image")
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                (
                    p["versionInfo"].as_str().unwrap().to_owned(),
                    p["licenseDeclared"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

/// fileName → SHA256 of an SPDX document's files.
fn spdx_files(doc: &Value) -> BTreeMap<String, String> {
    doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let sha256 = f["checksums"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["algorithm"] == "SHA256")
                .unwrap()["checksumValue"]
                .as_str()
                .unwrap()
                .to_owned();
            (f["fileName"].as_str().unwrap().to_owned(), sha256)
        })
        .collect()
}

#[test]
fn sboms_pass_the_validators_attached_or_made_from_the_layers() {
    let fixture = Fixture::new();
    let out = ok(fixture
        .hardbox()
        .arg("build")
        .arg(fixture.spec())
        .arg("--json"));
    let digest = serde_json::from_slice::<Value>(&out.stdout).unwrap()["manifest"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let (spdx, cdx, messages) = validated_documents(
        &fixture.root(),
        "hardbox.test/fixture:1",
        fixture.dir.path(),
    );
    assert!(!messages.contains("no attached"), "{messages}");

    let packages = spdx_packages(&spdx);
    assert_eq!(
        packages.keys().collect::<Vec<_>>(),
        [
            "fixture-awk",
            "fixture-mail",
            "fixture-shell",
            "fixture-tool",
            "libfixture1"
        ]
    );
    // Licenses from each package's copyright file in the image.
    assert_eq!(
        packages["fixture-tool"],
        ("1.0-1".into(), "Apache-2.0".into())
    );
    assert_eq!(packages["fixture-mail"].1, "GPL-2.0-or-later");
    assert_eq!(packages["libfixture1"].1, "MIT");
    // Files hashed from their contents; removed files are not listed.
    let files = spdx_files(&spdx);
    assert_eq!(
        files["./usr/bin/fixture-tool"],
        Digest::of(b"#!/usr/bin/fixture-tool\ntool\n").hex()
    );
    assert!(!files.keys().any(|f| f.contains("bash")), "{files:?}");
    // The image is the subject, by its manifest digest; created is SOURCE_DATE_EPOCH.
    assert_eq!(spdx["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    let image = &spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["SPDXID"] == "SPDXRef-Image")
        .unwrap()["versionInfo"];
    assert_eq!(image.as_str().unwrap(), digest);
    assert_eq!(cdx["metadata"]["component"]["version"], digest);
    let deb = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "libfixture1")
        .unwrap();
    let deb_sha256 = Digest::of(&std::fs::read(fixture.deb("libfixture1")).unwrap());
    assert_eq!(deb["hashes"][0]["content"], deb_sha256.hex());

    // Printed to stdout, the same document.
    let printed =
        ok(fixture
            .hardbox()
            .args(["sbom", "hardbox.test/fixture:1", "--format", "spdx-json"]));
    assert_eq!(
        serde_json::from_slice::<Value>(&printed.stdout).unwrap(),
        spdx
    );

    // The image without its referrers (a docker-archive carries none) gets documents made from
    // its layers' dpkg database: the same packages, licenses and files.
    let archive = fixture.dir.path().join("image.tar");
    ok(fixture
        .hardbox()
        .args([
            "image",
            "export",
            "hardbox.test/fixture:1",
            "--format",
            "docker-archive",
            "-o",
        ])
        .arg(&archive));
    let other = fixture.dir.path().join("other-store");
    ok(build_support::hardbox(&other)
        .args(["image", "import"])
        .arg(&archive));
    let dir = fixture.dir.path().join("generated");
    std::fs::create_dir(&dir).unwrap();
    let (generated, _, messages) = validated_documents(&other, "hardbox.test/fixture:1", &dir);
    assert!(
        messages.contains("made one from its dpkg database"),
        "{messages}"
    );
    assert_eq!(spdx_packages(&generated), packages);
    let generated_files = spdx_files(&generated);
    assert_eq!(
        generated_files["./usr/bin/fixture-tool"],
        files["./usr/bin/fixture-tool"]
    );
    assert_eq!(
        generated_files["./usr/lib/x86_64-linux-gnu/libfixture.so.1.2"],
        files["./usr/lib/x86_64-linux-gnu/libfixture.so.1.2"]
    );
}

/// The referrers of `image` in the store at `root`, from its `index.json`.
fn referrers(root: &Path) -> Vec<Value> {
    let index = read_json(&root.join("index.json"));
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d.get("artifactType").is_some())
        .cloned()
        .collect()
}

fn blob(root: &Path, digest: &str) -> PathBuf {
    root.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Stores `bytes` as a blob of the store at `root`; returns its digest.
fn put_blob(root: &Path, bytes: &[u8]) -> String {
    let digest = Digest::of(bytes);
    std::fs::write(blob(root, &digest.to_string()), bytes).unwrap();
    digest.to_string()
}

#[test]
fn verify_accepts_the_signing_key_and_refuses_others_and_tampering() {
    let fixture = Fixture::new();
    let keys = fixture.dir.path();
    for name in ["signer", "stranger"] {
        ok(Command::new(env!("CARGO_BIN_EXE_hardbox"))
            .args(["key", "generate"])
            .arg(keys.join(name)));
    }
    let signer_pub = keys.join("signer.pub");
    let out = ok(fixture
        .hardbox()
        .arg("build")
        .arg(fixture.spec())
        .arg("--sign-key")
        .arg(keys.join("signer.key")));
    let summary = stdout(&out);
    for predicate in [
        "https://slsa.dev/provenance/v1",
        "https://spdx.dev/Document",
        "https://cyclonedx.org/bom",
    ] {
        assert!(summary.contains(predicate), "{summary}");
    }

    let verified = ok(fixture
        .hardbox()
        .args(["verify", "hardbox.test/fixture:1", "--key"])
        .arg(&signer_pub));
    let text = stdout(&verified);
    assert!(text.contains("verified sha256:"), "{text}");
    assert_eq!(text.matches("ok ").count(), 5, "{text}");
    let report: Value = serde_json::from_slice(
        &ok(fixture
            .hardbox()
            .args(["verify", "hardbox.test/fixture:1", "--json", "--key"])
            .arg(&signer_pub))
        .stdout,
    )
    .unwrap();
    assert_eq!(report["verified"], true);

    // The provenance names the spec, the lock and every .deb and InRelease by digest.
    let root = fixture.root();
    let provenance = referrers(&root)
        .into_iter()
        .find(|r| r["annotations"]["in-toto.io/predicate-type"] == "https://slsa.dev/provenance/v1")
        .unwrap();
    let manifest = read_json(&blob(&root, provenance["digest"].as_str().unwrap()));
    let envelope_digest = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let envelope = read_json(&blob(&root, &envelope_digest));
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    let statement: Value = serde_json::from_slice(&payload).unwrap();
    let dependencies = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let inrelease = Digest::of(&std::fs::read(fixture.dist().join("InRelease")).unwrap());
    assert!(dependencies.iter().any(|d| {
        d["uri"]
            .as_str()
            .is_some_and(|u| u.ends_with("/dists/stable/InRelease"))
            && d["digest"]["sha256"] == inrelease.hex()
    }));
    for name in [
        "libfixture1",
        "fixture-tool",
        "fixture-mail",
        "fixture-shell",
        "fixture-awk",
    ] {
        let deb = fixture.deb(name);
        let digest = Digest::of(&std::fs::read(&deb).unwrap());
        let file = deb.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            dependencies.iter().any(|d| {
                d["uri"].as_str().is_some_and(|u| u.ends_with(&file))
                    && d["digest"]["sha256"] == digest.hex()
            }),
            "{name} is not in {dependencies:#?}"
        );
    }
    assert!(dependencies.iter().any(|d| d["name"] == "fixture.yaml"));
    assert!(dependencies
        .iter()
        .any(|d| d["name"] == "hardbox.lock.json"));

    // Another key: every attestation fails.
    let stderr = fails(
        fixture
            .hardbox()
            .args(["verify", "hardbox.test/fixture:1", "--key"])
            .arg(keys.join("stranger.pub")),
    );
    assert!(stderr.contains("did not verify"), "{stderr}");

    // A tampered envelope (an attacker edits the payload and keeps the signature) replaces
    // the provenance referrer in the store: verification names it.
    let mut statement = statement;
    statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"]["sha256"] =
        json!("0".repeat(64));
    let mut envelope = envelope;
    envelope["payload"] =
        json!(base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(&statement).unwrap()));
    let new_envelope = serde_json::to_vec(&envelope).unwrap();
    let new_envelope_digest = put_blob(&root, &new_envelope);
    let mut new_manifest = manifest;
    new_manifest["layers"][0]["digest"] = json!(new_envelope_digest);
    new_manifest["layers"][0]["size"] = json!(new_envelope.len());
    let new_manifest = serde_json::to_vec(&new_manifest).unwrap();
    let new_manifest_digest = put_blob(&root, &new_manifest);
    let index_path = root.join("index.json");
    let mut index = read_json(&index_path);
    for entry in index["manifests"].as_array_mut().unwrap() {
        if entry["digest"] == provenance["digest"] {
            entry["digest"] = json!(new_manifest_digest);
            entry["size"] = json!(new_manifest.len());
        }
    }
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hardbox"))
        .arg("--root")
        .arg(&root)
        .args(["verify", "hardbox.test/fixture:1", "--key"])
        .arg(&signer_pub)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("FAILED  provenance {new_manifest_digest}"))
            && text.contains("does not verify"),
        "{text}"
    );
    assert!(text.matches("ok ").count() == 4, "{text}");

    // An image without signed attestations says so.
    fixture.write_spec(&["fixture-awk"]);
    ok(fixture
        .hardbox()
        .arg("build")
        .arg(fixture.spec())
        .args(["-t", "hardbox.test/unsigned:1"]));
    let stderr = fails(
        fixture
            .hardbox()
            .args(["verify", "hardbox.test/unsigned:1", "--key"])
            .arg(&signer_pub),
    );
    assert!(
        stderr.contains("has no signed attestations") && stderr.contains("hint: build the image"),
        "{stderr}"
    );
}
