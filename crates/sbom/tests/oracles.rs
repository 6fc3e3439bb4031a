//! Peers as oracles: the documents hardbox writes for this host's packages are checked by the
//! reference tools of each format, and each oracle is shown to reject a broken document.
//!
//! CI installs the oracles with:
//!
//!     pip install --break-system-packages spdx-tools ntia-conformance-checker 'cyclonedx-python-lib[json-validation]' packageurl-python
//!
//! A missing oracle fails the test (it never passes silently).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sbom::{cyclonedx, spdx};
use serde_json::Value;

const PIP_HINT: &str = "pip install --break-system-packages spdx-tools ntia-conformance-checker 'cyclonedx-python-lib[json-validation]' packageurl-python";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}; install the oracles: {PIP_HINT}"))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Edits a JSON document.
fn tampered(bytes: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut doc: Value = serde_json::from_slice(bytes).unwrap();
    edit(&mut doc);
    serde_json::to_vec(&doc).unwrap()
}

#[test]
fn spdx_document_of_this_host_is_valid_for_pyspdxtools() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = spdx::to_json(&support::host_input()).unwrap();
    let path = write(dir.path(), "host.spdx.json", &bytes);
    let out = run("pyspdxtools", &["-i", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "pyspdxtools rejected the document:\n{}",
        text(&out)
    );

    // The oracle is alive: an unknown license identifier and a malformed element id are caught.
    let broken = tampered(&bytes, |doc| {
        doc["packages"][1]["licenseDeclared"] = "Not-A-License".into();
        doc["packages"][0]["SPDXID"] = "SPDXRef-Im_age".into();
    });
    let path = write(dir.path(), "broken.spdx.json", &broken);
    let out = run("pyspdxtools", &["-i", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let report = text(&out);
    assert!(
        report.contains("Not-A-License") && report.contains("SPDXRef-Im_age"),
        "{report}"
    );
}

#[test]
fn spdx_document_of_this_host_meets_the_ntia_minimum_elements() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = spdx::to_json(&support::host_input()).unwrap();
    let path = write(dir.path(), "host.spdx.json", &bytes);
    let report = |path: &Path| -> Value {
        let out = run("ntia-checker", &["-r", "json", path.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let start = stdout
            .find('{')
            .unwrap_or_else(|| panic!("no JSON report:\n{}", text(&out)));
        serde_json::from_str(&stdout[start..]).unwrap()
    };
    let good = report(&path);
    assert_eq!(good["isNtiaConformant"], true, "{good:#}");
    assert_eq!(
        good["graphValidation"]["floatingComponents"]["floatingComponentCount"], 0,
        "every package hangs off the image: {good:#}"
    );

    // Without a supplier for the image, the document is not conformant.
    let broken = tampered(&bytes, |doc| {
        doc["packages"][0]["supplier"] = "NOASSERTION".into();
    });
    let bad = report(&write(dir.path(), "nosupplier.spdx.json", &broken));
    assert_eq!(bad["isNtiaConformant"], false, "{bad:#}");
}

const CYCLONEDX_CHECK: &str = r#"
import sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())
if errors:
    print(errors)
    sys.exit(1)
"#;

#[test]
fn cyclonedx_document_of_this_host_is_valid_for_cyclonedx_python_lib() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = cyclonedx::to_json(&support::host_input()).unwrap();
    let path = write(dir.path(), "host.cdx.json", &bytes);
    let out = run("python3", &["-c", CYCLONEDX_CHECK, path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "CycloneDX 1.6 schema rejected the document:\n{}",
        text(&out)
    );

    // The strict schema refuses fields it does not know.
    let broken = tampered(&bytes, |doc| {
        doc["components"][0]["licence"] = "MIT".into();
    });
    let path = write(dir.path(), "broken.cdx.json", &broken);
    let out = run("python3", &["-c", CYCLONEDX_CHECK, path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("licence"), "{}", text(&out));
}

const PURL_CHECK: &str = r#"
import json, sys
from packageurl import PackageURL
bad = []
for line in open(sys.argv[1]):
    purl = line.strip()
    canonical = PackageURL.from_string(purl).to_string()
    if canonical != purl:
        bad.append((purl, canonical))
if bad:
    print(bad)
    sys.exit(1)
"#;

#[test]
fn purls_are_canonical_for_packageurl_python() {
    let input = support::host_input();
    let spdx_doc: Value = serde_json::from_slice(&spdx::to_json(&input).unwrap()).unwrap();
    let cdx_doc: Value = serde_json::from_slice(&cyclonedx::to_json(&input).unwrap()).unwrap();
    let mut purls: Vec<String> = spdx_doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["externalRefs"].as_array().unwrap().iter())
        .map(|r| r["referenceLocator"].as_str().unwrap().to_owned())
        .collect();
    purls.extend(
        cdx_doc["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["purl"].as_str().unwrap().to_owned()),
    );
    assert!(
        purls.iter().any(|p| p.contains("%2B")),
        "a version with + is covered"
    );
    assert!(
        purls.iter().any(|p| p.contains("&upstream=")),
        "a source package is covered"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "purls.txt", purls.join("\n").as_bytes());
    let out = run("python3", &["-c", PURL_CHECK, path.to_str().unwrap()]);
    assert!(out.status.success(), "not canonical:\n{}", text(&out));

    let path = write(
        dir.path(),
        "bad.txt",
        b"pkg:deb/debian/libstdc++6@1.0?arch=amd64",
    );
    let out = run("python3", &["-c", PURL_CHECK, path.to_str().unwrap()]);
    assert!(!out.status.success(), "the check catches an unencoded +");
}
