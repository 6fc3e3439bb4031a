//! Statements, provenance and DSSE envelopes: signing, verification, tampering, determinism, and
//! keys exchanged with OpenSSL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;
use std::process::Command;

use attest::dsse::{pae, Signature};
use attest::provenance::{BUILD_TYPE, LOCAL_BUILDER_ID};
use attest::statement::{CYCLONEDX_BOM, SLSA_PROVENANCE_V1, SPDX_DOCUMENT};
use attest::{
    Algorithm, Envelope, Key, KeyError, Provenance, PublicKey, ResourceDescriptor, SbomFormat,
    Statement, Subject, VerifyError, IN_TOTO_PAYLOAD_TYPE,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use types::Digest;

const SOURCE_DATE_EPOCH: u64 = 1_700_000_000;

fn image() -> Digest {
    Digest::of(b"an image manifest")
}

fn provenance() -> Provenance {
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
        ResourceDescriptor::named("hardbox.lock", &Digest::of(b"lock")),
    ];
    p.external_parameters
        .insert("platform".into(), json!("linux/amd64"));
    p
}

fn statement() -> Statement {
    Statement::provenance(
        vec![Subject::new("hardbox.local/python", &image())],
        &provenance(),
    )
    .unwrap()
}

fn keys() -> [Key; 2] {
    [
        Key::generate(Algorithm::Ed25519).unwrap(),
        Key::generate(Algorithm::EcdsaP256).unwrap(),
    ]
}

#[test]
fn provenance_predicate_has_the_slsa_v1_shape() {
    let s = statement();
    let v: Value = serde_json::from_slice(&s.to_json().unwrap()).unwrap();
    assert_eq!(v["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(v["predicateType"], SLSA_PROVENANCE_V1);
    assert_eq!(
        v["subject"],
        json!([{"name": "hardbox.local/python", "digest": {"sha256": image().hex()}}])
    );
    let p = &v["predicate"];
    let def = &p["buildDefinition"];
    assert_eq!(def["buildType"], BUILD_TYPE);
    assert!(BUILD_TYPE.starts_with("https://"), "{BUILD_TYPE}");
    assert_eq!(
        def["externalParameters"],
        json!({
            "platform": "linux/amd64",
            "sourceDateEpoch": SOURCE_DATE_EPOCH,
            "spec": {"name": "python.yaml", "digest": {"sha256": Digest::of(b"spec").hex()}},
        })
    );
    // Sorted (artifacts known by name only first, then by URI), each with its digest.
    let deps = def["resolvedDependencies"].as_array().unwrap();
    let order: Vec<&str> = deps
        .iter()
        .map(|d| d["uri"].as_str().or(d["name"].as_str()).unwrap())
        .collect();
    assert_eq!(
        order,
        [
            "hardbox.lock",
            "python.yaml",
            "https://deb.debian.org/debian/dists/bookworm/InRelease",
            "https://deb.debian.org/debian/pool/main/z/zlib/zlib1g_1.2.13.dfsg-1_amd64.deb",
        ]
    );
    assert!(deps
        .iter()
        .all(|d| d["digest"]["sha256"].as_str().unwrap().len() == 64));
    let run = &p["runDetails"];
    assert_eq!(run["builder"]["id"], LOCAL_BUILDER_ID);
    assert_eq!(
        run["builder"]["version"]["hardbox"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(run["metadata"]["startedOn"], "2023-11-14T22:13:20Z");
    assert_eq!(run["metadata"]["finishedOn"], "2023-11-14T22:13:20Z");
    assert!(run["metadata"].get("invocationId").is_none());

    // The same build in another order gives the same bytes.
    let mut reordered = provenance();
    reordered.resolved_dependencies.reverse();
    let again = Statement::provenance(
        vec![Subject::new("hardbox.local/python", &image())],
        &reordered,
    )
    .unwrap();
    assert_eq!(again.to_json().unwrap(), s.to_json().unwrap());
}

#[test]
fn sbom_statements_carry_the_whole_document() {
    let document = br#"{"spdxVersion":"SPDX-2.3","SPDXID":"SPDXRef-DOCUMENT"}"#;
    let s = Statement::sbom(Subject::new("img", &image()), SbomFormat::Spdx, document).unwrap();
    assert_eq!(s.predicate_type, SPDX_DOCUMENT);
    assert_eq!(
        s.predicate,
        serde_json::from_slice::<Value>(document).unwrap()
    );
    let s = Statement::sbom(Subject::new("img", &image()), SbomFormat::CycloneDx, b"{}").unwrap();
    assert_eq!(s.predicate_type, CYCLONEDX_BOM);
    let err = Statement::sbom(Subject::new("img", &image()), SbomFormat::Spdx, b"{").unwrap_err();
    assert_eq!(err.to_string(), "the Spdx document is not JSON");
}

#[test]
fn signed_statements_verify_and_come_back_unchanged() {
    for key in keys() {
        let envelope = Envelope::sign_statement(&statement(), &key).unwrap();
        assert_eq!(envelope.payload_type, IN_TOTO_PAYLOAD_TYPE);
        assert_eq!(envelope.signatures.len(), 1);
        assert_eq!(envelope.signatures[0].keyid, key.keyid());
        // What is signed is the PAE of the type and the payload bytes.
        let payload = STANDARD.decode(&envelope.payload).unwrap();
        let sig = STANDARD.decode(&envelope.signatures[0].sig).unwrap();
        key.public_key()
            .verify(&pae(IN_TOTO_PAYLOAD_TYPE, &payload), &sig)
            .unwrap();

        let json = envelope.to_json().unwrap();
        let read = Envelope::from_json(&json).unwrap();
        let public = PublicKey::from_pem(&key.public_key().to_pem().unwrap()).unwrap();
        let verified = read
            .verify_statement(&[public], &image(), SLSA_PROVENANCE_V1)
            .unwrap();
        assert_eq!(verified, statement());
    }
}

#[test]
fn signatures_are_deterministic() {
    for key in keys() {
        let a = Envelope::sign_statement(&statement(), &key).unwrap();
        let b = Envelope::sign_statement(&statement(), &key).unwrap();
        assert_eq!(
            a.to_json().unwrap(),
            b.to_json().unwrap(),
            "{}",
            key.algorithm()
        );
    }
}

/// Re-encodes the payload after `edit`, keeping the old signatures.
fn with_payload(envelope: &Envelope, edit: impl FnOnce(&mut Value)) -> Envelope {
    let mut v: Value =
        serde_json::from_slice(&STANDARD.decode(&envelope.payload).unwrap()).unwrap();
    edit(&mut v);
    Envelope {
        payload: STANDARD.encode(serde_json::to_vec(&v).unwrap()),
        ..envelope.clone()
    }
}

#[test]
fn tampered_envelopes_are_rejected() {
    for key in keys() {
        let trusted = [key.public_key().clone()];
        let good = Envelope::sign_statement(&statement(), &key).unwrap();
        let verify = |e: &Envelope| e.verify_statement(&trusted, &image(), SLSA_PROVENANCE_V1);
        verify(&good).unwrap();

        // The payload changed after signing: another subject digest.
        let forged = with_payload(&good, |v| {
            v["subject"][0]["digest"]["sha256"] = Digest::of(b"evil").hex().into();
        });
        assert!(matches!(
            verify(&forged),
            Err(VerifyError::BadSignature { .. })
        ));

        // One bit of the signature flipped.
        let mut flipped = good.clone();
        let mut sig = STANDARD.decode(&flipped.signatures[0].sig).unwrap();
        let last = sig.len() - 1;
        sig[last] ^= 1;
        flipped.signatures[0].sig = STANDARD.encode(&sig);
        assert!(matches!(
            verify(&flipped),
            Err(VerifyError::BadSignature { .. })
        ));

        // The payload type is part of what is signed.
        let mut retyped = good.clone();
        retyped.payload_type = "application/json".into();
        assert!(matches!(
            verify(&retyped),
            Err(VerifyError::PayloadType { .. })
        ));
        assert!(matches!(
            retyped.verify(&trusted),
            Err(VerifyError::BadSignature { .. })
        ));

        // Another key, under its own id or under ours.
        let other = Key::generate(key.algorithm()).unwrap();
        let by_other = Envelope::sign_statement(&statement(), &other).unwrap();
        assert!(matches!(
            verify(&by_other),
            Err(VerifyError::UntrustedKey { .. })
        ));
        let mut impostor = by_other.clone();
        impostor.signatures[0].keyid = key.keyid().to_owned();
        assert!(matches!(
            verify(&impostor),
            Err(VerifyError::BadSignature { .. })
        ));

        // No signatures, a signature that is not base64.
        let mut unsigned = good.clone();
        unsigned.signatures.clear();
        assert!(matches!(verify(&unsigned), Err(VerifyError::NoSignatures)));
        let mut garbled = good.clone();
        garbled.signatures[0].sig = "***".into();
        assert!(matches!(
            verify(&garbled),
            Err(VerifyError::SignatureEncoding { .. })
        ));

        // Validly signed, but about another image or of another kind.
        let err = good
            .verify_statement(&trusted, &Digest::of(b"other image"), SLSA_PROVENANCE_V1)
            .unwrap_err();
        assert!(matches!(err, VerifyError::SubjectMismatch { .. }));
        assert!(err.to_string().contains(image().hex()), "{err}");
        assert!(matches!(
            good.verify_statement(&trusted, &image(), SPDX_DOCUMENT),
            Err(VerifyError::PredicateType { .. })
        ));

        // A signature with no key id is tried against every trusted key.
        let mut anonymous = good.clone();
        anonymous.signatures[0].keyid.clear();
        verify(&anonymous).unwrap();

        // Among several signatures, one by a trusted key is enough.
        let mut cosigned = good.clone();
        cosigned.signatures.insert(
            0,
            Signature {
                keyid: other.keyid().to_owned(),
                sig: by_other.signatures[0].sig.clone(),
            },
        );
        verify(&cosigned).unwrap();
    }
    assert!(matches!(
        Envelope::from_json(b"{}"),
        Err(VerifyError::Envelope(_))
    ));
}

fn openssl(args: &[&str], dir: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn keys_are_exchanged_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("message"), b"DSSEv1 4 type 7 payload").unwrap();
    for (algorithm, genpkey) in [
        (
            Algorithm::Ed25519,
            &["genpkey", "-algorithm", "ed25519", "-out", "priv.pem"][..],
        ),
        (
            Algorithm::EcdsaP256,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "priv.pem",
            ][..],
        ),
    ] {
        // OpenSSL's key, read and used by hardbox, checked by OpenSSL.
        openssl(genpkey, d);
        openssl(
            &["pkey", "-in", "priv.pem", "-pubout", "-out", "pub.pem"],
            d,
        );
        let spki_der = openssl(
            &["pkey", "-in", "priv.pem", "-pubout", "-outform", "DER"],
            d,
        );
        let key = Key::from_pem(&std::fs::read_to_string(d.join("priv.pem")).unwrap()).unwrap();
        assert_eq!(key.algorithm(), algorithm);
        assert_eq!(
            key.keyid(),
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&spki_der))
        );
        let public =
            PublicKey::from_pem(&std::fs::read_to_string(d.join("pub.pem")).unwrap()).unwrap();
        assert_eq!(public, *key.public_key());
        std::fs::write(d.join("sig"), key.sign(b"DSSEv1 4 type 7 payload")).unwrap();
        let verify: &[&str] = match algorithm {
            Algorithm::Ed25519 => &[
                "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "message",
                "-sigfile", "sig",
            ],
            Algorithm::EcdsaP256 => &[
                "dgst",
                "-sha256",
                "-verify",
                "pub.pem",
                "-signature",
                "sig",
                "message",
            ],
        };
        openssl(verify, d);

        // hardbox's key, read and used by OpenSSL, checked by hardbox.
        let key = Key::generate(algorithm).unwrap();
        std::fs::write(d.join("priv.pem"), key.to_pem().unwrap().as_bytes()).unwrap();
        std::fs::write(d.join("pub.pem"), key.public_key().to_pem().unwrap()).unwrap();
        openssl(&["pkey", "-pubin", "-in", "pub.pem", "-noout"], d);
        let sign: &[&str] = match algorithm {
            Algorithm::Ed25519 => &[
                "pkeyutl", "-sign", "-inkey", "priv.pem", "-rawin", "-in", "message", "-out", "sig",
            ],
            Algorithm::EcdsaP256 => &[
                "dgst", "-sha256", "-sign", "priv.pem", "-out", "sig", "message",
            ],
        };
        openssl(sign, d);
        let sig = std::fs::read(d.join("sig")).unwrap();
        key.public_key()
            .verify(b"DSSEv1 4 type 7 payload", &sig)
            .unwrap();
        assert!(key
            .public_key()
            .verify(b"DSSEv1 4 type 7 payloaD", &sig)
            .is_err());
    }

    // A SEC1 EC key (openssl ecparam -genkey) is refused with the conversion to make.
    let sec1 = openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout"], d);
    let err = Key::from_pem(std::str::from_utf8(&sec1).unwrap()).unwrap_err();
    assert!(matches!(err, KeyError::NotPkcs8(_)), "{err}");
    // Curves other than P-256 are named in the error.
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            "p384.pem",
        ],
        d,
    );
    let err = Key::from_pem(&std::fs::read_to_string(d.join("p384.pem")).unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "key algorithm EC on curve 1.3.132.0.34 is not supported (expected Ed25519 or ECDSA P-256)"
    );
}
