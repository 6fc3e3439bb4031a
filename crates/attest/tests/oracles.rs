//! Peers as oracles: envelopes hardbox signs are verified by securesystemslib (the DSSE
//! implementation the in-toto Python tools use), envelopes securesystemslib signs are verified by
//! hardbox, tampering is caught by both, and statements parse strictly as the in-toto attestation
//! protos (Statement v1, SLSA provenance v1).
//!
//! CI installs the oracles with:
//!
//!     pip install --break-system-packages securesystemslib cryptography in-toto-attestation
//!
//! A missing oracle fails the test (it never passes silently).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;
use std::process::{Command, Output};

use attest::statement::SLSA_PROVENANCE_V1;
use attest::{
    Algorithm, Envelope, Key, Provenance, ResourceDescriptor, SbomFormat, Statement, Subject,
    VerifyError,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use types::Digest;

const PIP_HINT: &str =
    "pip install --break-system-packages securesystemslib cryptography in-toto-attestation";
const SOURCE_DATE_EPOCH: u64 = 1_700_000_000;

/// argv: envelope.json public.pem keyid. Exit 0 and the payload on stdout when a signature by
/// the key verifies, exit 1 when it does not.
const SSLIB_VERIFY: &str = r#"
import json, sys
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import SSlibKey
envelope = Envelope.from_dict(json.load(open(sys.argv[1])))
key = SSlibKey.from_crypto(load_pem_public_key(open(sys.argv[2], "rb").read()), keyid=sys.argv[3])
try:
    envelope.verify([key], 1)
except VerificationError as e:
    print("rejected:", e)
    sys.exit(1)
assert envelope.payload_type == "application/vnd.in-toto+json", envelope.payload_type
sys.stdout.write(envelope.payload.decode())
"#;

/// argv: private.pem keyid payload out.json. Signs with securesystemslib's CryptoSigner.
const SSLIB_SIGN: &str = r#"
import json, sys
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner, SSlibKey
private = load_pem_private_key(open(sys.argv[1], "rb").read(), None)
signer = CryptoSigner(private, SSlibKey.from_crypto(private.public_key(), keyid=sys.argv[2]))
envelope = Envelope(open(sys.argv[3], "rb").read(), "application/vnd.in-toto+json", {})
envelope.sign(signer)
json.dump(envelope.to_dict(), open(sys.argv[4], "w"))
"#;

/// argv: statement.json source_date_epoch. Parses the statement (and a SLSA v1 predicate)
/// strictly into the in-toto attestation protos and validates them.
const PROTO_CHECK: &str = r#"
import json, sys
from google.protobuf import json_format
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
data = json.load(open(sys.argv[1]))
Statement.copy_from_pb(json_format.ParseDict(data, statement_pb2.Statement())).validate()
if data["predicateType"] == "https://slsa.dev/provenance/v1":
    p = json_format.ParseDict(data["predicate"], provenance_pb2.Provenance())
    assert p.build_definition.build_type, "buildType"
    assert p.build_definition.external_parameters["spec"]["digest"]["sha256"], "spec digest"
    assert len(p.build_definition.resolved_dependencies) > 0, "resolvedDependencies"
    for rd in p.build_definition.resolved_dependencies:
        ResourceDescriptor.copy_from_pb(rd).validate()
        assert len(rd.digest) > 0, rd
    assert p.run_details.builder.id, "builder.id"
    assert p.run_details.metadata.started_on.seconds == int(sys.argv[2])
    assert p.run_details.metadata.finished_on.seconds == int(sys.argv[2])
print("ok")
"#;

fn python(script: &str, args: &[&Path], extra: &[&str]) -> Output {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3: {e}; install the oracles: {PIP_HINT}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Fails the test with the install hint when Python cannot import an oracle.
fn assert_oracle_ran(out: &Output) {
    let t = text(out);
    assert!(
        !t.contains("ModuleNotFoundError"),
        "oracle missing ({PIP_HINT}):\n{t}"
    );
}

fn image() -> Digest {
    Digest::of(b"an image manifest")
}

fn provenance_statement() -> Statement {
    let mut p = Provenance::new(
        ResourceDescriptor::named("python.yaml", &Digest::of(b"spec")),
        SOURCE_DATE_EPOCH,
    );
    p.resolved_dependencies = vec![
        ResourceDescriptor::at(
            "https://deb.debian.org/debian/pool/main/z/zlib/zlib1g_1.2.13.dfsg-1_amd64.deb",
            &Digest::of(b"zlib deb"),
        ),
        ResourceDescriptor::at(
            "https://deb.debian.org/debian/dists/bookworm/InRelease",
            &Digest::of(b"InRelease"),
        ),
        ResourceDescriptor::named("python.yaml", &Digest::of(b"spec")),
    ];
    p.invocation_id = Some("build-1".into());
    Statement::provenance(vec![Subject::new("hardbox.local/python", &image())], &p).unwrap()
}

#[test]
fn securesystemslib_verifies_what_hardbox_signs_and_both_reject_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for algorithm in [Algorithm::Ed25519, Algorithm::EcdsaP256] {
        let key = Key::generate(algorithm).unwrap();
        let public = d.join("public.pem");
        std::fs::write(&public, key.public_key().to_pem().unwrap()).unwrap();
        let statement = provenance_statement();
        let envelope = Envelope::sign_statement(&statement, &key).unwrap();
        let path = d.join("envelope.json");
        std::fs::write(&path, envelope.to_json().unwrap()).unwrap();

        let out = python(SSLIB_VERIFY, &[&path, &public], &[key.keyid()]);
        assert_oracle_ran(&out);
        assert!(out.status.success(), "{algorithm}: {}", text(&out));
        assert_eq!(
            out.stdout,
            statement.to_json().unwrap(),
            "{algorithm}: payload"
        );

        // Tampered: the statement now names another image; the old signature stays.
        let mut forged: serde_json::Value =
            serde_json::from_slice(&statement.to_json().unwrap()).unwrap();
        forged["subject"][0]["digest"]["sha256"] = Digest::of(b"evil").hex().into();
        let tampered = Envelope {
            payload: STANDARD.encode(serde_json::to_vec(&forged).unwrap()),
            ..envelope.clone()
        };
        std::fs::write(&path, tampered.to_json().unwrap()).unwrap();
        let out = python(SSLIB_VERIFY, &[&path, &public], &[key.keyid()]);
        assert_oracle_ran(&out);
        assert_eq!(out.status.code(), Some(1), "{algorithm}: {}", text(&out));
        assert!(text(&out).starts_with("rejected:"), "{}", text(&out));
        assert!(matches!(
            tampered.verify_statement(
                &[key.public_key().clone()],
                &Digest::of(b"evil"),
                SLSA_PROVENANCE_V1
            ),
            Err(VerifyError::BadSignature { .. })
        ));
    }
}

#[test]
fn hardbox_verifies_what_securesystemslib_signs_and_rejects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for algorithm in [Algorithm::Ed25519, Algorithm::EcdsaP256] {
        let key = Key::generate(algorithm).unwrap();
        let private = d.join("private.pem");
        std::fs::write(&private, key.to_pem().unwrap().as_bytes()).unwrap();
        let statement = provenance_statement();
        let payload = d.join("payload.json");
        std::fs::write(&payload, statement.to_json().unwrap()).unwrap();
        let out_path = d.join("envelope.json");
        let out = python(
            SSLIB_SIGN,
            &[&private],
            &[
                key.keyid(),
                payload.to_str().unwrap(),
                out_path.to_str().unwrap(),
            ],
        );
        assert_oracle_ran(&out);
        assert!(out.status.success(), "{algorithm}: {}", text(&out));

        let envelope = Envelope::from_json(&std::fs::read(&out_path).unwrap()).unwrap();
        let trusted = [key.public_key().clone()];
        let verified = envelope
            .verify_statement(&trusted, &image(), SLSA_PROVENANCE_V1)
            .unwrap();
        assert_eq!(verified, statement, "{algorithm}");

        let mut tampered = envelope.clone();
        let mut payload_bytes = STANDARD.decode(&tampered.payload).unwrap();
        let at = payload_bytes.len() / 2;
        payload_bytes[at] ^= 0x20;
        tampered.payload = STANDARD.encode(&payload_bytes);
        assert!(matches!(
            tampered.verify(&trusted),
            Err(VerifyError::BadSignature { .. })
        ));
    }
}

#[test]
fn statements_parse_strictly_as_in_toto_attestation_protos() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("statement.json");
    let epoch = SOURCE_DATE_EPOCH.to_string();
    let statements = [
        provenance_statement(),
        Statement::sbom(
            Subject::new("hardbox.local/python", &image()),
            SbomFormat::Spdx,
            br#"{"spdxVersion":"SPDX-2.3"}"#,
        )
        .unwrap(),
        Statement::sbom(
            Subject::new("hardbox.local/python", &image()),
            SbomFormat::CycloneDx,
            br#"{"bomFormat":"CycloneDX","specVersion":"1.6"}"#,
        )
        .unwrap(),
    ];
    for statement in &statements {
        std::fs::write(&path, statement.to_json().unwrap()).unwrap();
        let out = python(PROTO_CHECK, &[&path], &[&epoch]);
        assert_oracle_ran(&out);
        assert!(
            out.status.success(),
            "{}: {}",
            statement.predicate_type,
            text(&out)
        );
    }

    // The oracle is strict: a misspelt provenance field is refused.
    let mut v: serde_json::Value =
        serde_json::from_slice(&provenance_statement().to_json().unwrap()).unwrap();
    v["predicate"]["runDetails"]["metadata"]["startedAt"] = "2023-11-14T22:13:20Z".into();
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let out = python(PROTO_CHECK, &[&path], &[&epoch]);
    assert_oracle_ran(&out);
    assert!(!out.status.success());
    assert!(text(&out).contains("startedAt"), "{}", text(&out));
}
