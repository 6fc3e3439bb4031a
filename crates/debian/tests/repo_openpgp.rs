#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

//! OpenPGP verification against signatures made by real `gpg`.

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use debian::openpgp::{self, Keyring, KeyringError, SignatureProblem, VerifyError};
use support::Gpg;

const TEXT: &str = "Origin: hardbox-fixture\nSuite: stable\n- a line with a dash\n-----five dashes\nTrailing: spaces   \nSHA256:\n 00 1 x\n";

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn problems(e: VerifyError) -> Vec<SignatureProblem> {
    match e {
        VerifyError::NoGoodSignature { problems, .. } => problems,
        other => panic!("expected NoGoodSignature, got {other:?}"),
    }
}

/// Clearsigns TEXT with `signers` and returns the InRelease bytes.
fn clearsigned(gpg: &Gpg, signers: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "Release", TEXT.as_bytes());
    let out = dir.path().join("InRelease");
    gpg.clearsign(signers, &input, &out);
    support::read(&out)
}

fn keyring(gpg: &Gpg, who: &[&str]) -> Keyring {
    let mut bytes = Vec::new();
    for w in who {
        bytes.extend(gpg.export(w, false));
    }
    Keyring::from_bytes(&bytes, "test keyring").unwrap()
}

#[test]
fn clearsigned_ed25519_returns_exactly_the_signed_text() {
    let gpg = Gpg::new();
    let fpr = gpg.generate("A <a@example.invalid>", "ed25519", "sign", "never");
    let signed = clearsigned(&gpg, &[&fpr]);
    // gpg dash-escapes the lines starting with '-'.
    assert!(String::from_utf8_lossy(&signed).contains("\n- - a line with a dash\n"));
    let v =
        openpgp::verify_clearsigned(&keyring(&gpg, &[&fpr]), &signed, SystemTime::now()).unwrap();
    // Dash-escaping undone; trailing whitespace is not part of the signed text (RFC 9580 7.1).
    let expected = TEXT.replace("spaces   \n", "spaces\n");
    assert_eq!(v.text, expected.trim_end_matches('\n'));
    assert_eq!(v.key, fpr);
    assert_eq!(v.certificate, fpr);
}

#[test]
fn text_outside_the_signed_part_is_refused() {
    let gpg = Gpg::new();
    let fpr = gpg.generate("A <a@example.invalid>", "ed25519", "sign", "never");
    let kr = keyring(&gpg, &[&fpr]);
    let signed = clearsigned(&gpg, &[&fpr]);
    let mut before = b"Origin: evil\n".to_vec();
    before.extend(&signed);
    let e = openpgp::verify_clearsigned(&kr, &before, SystemTime::now()).unwrap_err();
    assert!(matches!(e, VerifyError::NotClearsigned { .. }), "{e}");
    let mut after = signed.clone();
    after.extend(b"Origin: evil\n");
    let e = openpgp::verify_clearsigned(&kr, &after, SystemTime::now()).unwrap_err();
    assert!(matches!(e, VerifyError::NotClearsigned { .. }), "{e}");
}

#[test]
fn altered_clearsigned_text_is_refused() {
    let gpg = Gpg::new();
    let fpr = gpg.generate("A <a@example.invalid>", "ed25519", "sign", "never");
    let signed = String::from_utf8(clearsigned(&gpg, &[&fpr])).unwrap();
    let altered = signed.replace("Suite: stable", "Suite: stablE");
    assert_ne!(signed, altered);
    let e = openpgp::verify_clearsigned(
        &keyring(&gpg, &[&fpr]),
        altered.as_bytes(),
        SystemTime::now(),
    )
    .unwrap_err();
    assert_eq!(problems(e), [SignatureProblem::Bad { key: fpr }]);
}

#[test]
fn signature_by_a_key_not_in_the_keyring_is_refused() {
    let gpg = Gpg::new();
    let signer = gpg.generate("A <a@example.invalid>", "ed25519", "sign", "never");
    let other = gpg.generate("B <b@example.invalid>", "ed25519", "sign", "never");
    let signed = clearsigned(&gpg, &[&signer]);
    let e = openpgp::verify_clearsigned(&keyring(&gpg, &[&other]), &signed, SystemTime::now())
        .unwrap_err();
    let p = problems(e);
    assert!(
        matches!(&p[..], [SignatureProblem::UnknownKey { issuer }] if *issuer == signer),
        "{p:?}"
    );
}

#[test]
fn any_good_signature_among_several_is_enough() {
    let gpg = Gpg::new();
    let known = gpg.generate("A <a@example.invalid>", "ed25519", "sign", "never");
    let unknown = gpg.generate("B <b@example.invalid>", "ed25519", "sign", "never");
    let signed = clearsigned(&gpg, &[&unknown, &known]);
    let v =
        openpgp::verify_clearsigned(&keyring(&gpg, &[&known]), &signed, SystemTime::now()).unwrap();
    assert_eq!(v.key, known);
}

#[test]
fn rsa_key_and_detached_signature() {
    let gpg = Gpg::new();
    let fpr = gpg.generate("R <r@example.invalid>", "rsa2048", "sign", "never");
    let dir = tempfile::tempdir().unwrap();
    let release = write(dir.path(), "Release", TEXT.as_bytes());
    let sig = dir.path().join("Release.gpg");
    gpg.detach_sign(&[&fpr], &release, &sig);
    let kr = keyring(&gpg, &[&fpr]);
    let v = openpgp::verify_detached(
        &kr,
        TEXT.as_bytes(),
        &support::read(&sig),
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(v.text, TEXT);
    assert_eq!(v.key, fpr);
    // The same signature over other bytes does not verify.
    let e = openpgp::verify_detached(
        &kr,
        TEXT.replace("stable", "stablE").as_bytes(),
        &support::read(&sig),
        SystemTime::now(),
    )
    .unwrap_err();
    assert_eq!(problems(e), [SignatureProblem::Bad { key: fpr.clone() }]);
    // And clearsigned with RSA too.
    let signed = clearsigned(&gpg, &[&fpr]);
    openpgp::verify_clearsigned(&kr, &signed, SystemTime::now()).unwrap();
}

#[test]
fn signing_subkey_is_accepted_and_reported() {
    let gpg = Gpg::new();
    // A certification-only primary with a signing subkey, as archive keys often are.
    let primary = gpg.generate("S <s@example.invalid>", "ed25519", "cert", "never");
    let sub = gpg.add_signing_subkey(&primary, "ed25519");
    assert_ne!(primary, sub);
    let signed = clearsigned(&gpg, &[&sub]);
    let v = openpgp::verify_clearsigned(&keyring(&gpg, &[&primary]), &signed, SystemTime::now())
        .unwrap();
    assert_eq!(v.key, sub);
    assert_eq!(v.certificate, primary);
}

#[test]
fn expired_key_is_refused() {
    let gpg = Gpg::new();
    let fpr = gpg.generate("E <e@example.invalid>", "ed25519", "sign", "1d");
    let signed = clearsigned(&gpg, &[&fpr]);
    let kr = keyring(&gpg, &[&fpr]);
    let now = SystemTime::now();
    openpgp::verify_clearsigned(&kr, &signed, now).unwrap();
    let later = now + Duration::from_secs(2 * 86400);
    let p = problems(openpgp::verify_clearsigned(&kr, &signed, later).unwrap_err());
    assert!(
        matches!(&p[..], [SignatureProblem::KeyExpired { key, .. }] if *key == fpr),
        "{p:?}"
    );
}

#[test]
fn revoked_key_is_refused() {
    let gpg = Gpg::new();
    let fpr = gpg.generate("V <v@example.invalid>", "ed25519", "sign", "never");
    let signed = clearsigned(&gpg, &[&fpr]);
    gpg.revoke(&fpr);
    let p = problems(
        openpgp::verify_clearsigned(&keyring(&gpg, &[&fpr]), &signed, SystemTime::now())
            .unwrap_err(),
    );
    assert_eq!(p, [SignatureProblem::KeyRevoked { key: fpr }]);
}

#[test]
fn keyrings_binary_with_several_keys_and_armored() {
    let gpg = Gpg::new();
    let a = gpg.generate("A <a@example.invalid>", "ed25519", "sign", "never");
    let b = gpg.generate("B <b@example.invalid>", "rsa2048", "sign", "never");
    let dir = tempfile::tempdir().unwrap();
    let mut both = gpg.export(&a, false);
    both.extend(gpg.export(&b, false));
    let bin = write(dir.path(), "k.gpg", &both);
    assert_eq!(
        Keyring::load(&bin).unwrap().fingerprints(),
        [a.clone(), b.clone()]
    );
    // Two armored blocks in one .asc file.
    let mut armored = gpg.export(&a, true);
    armored.extend(gpg.export(&b, true));
    let asc = write(dir.path(), "k.asc", &armored);
    assert_eq!(Keyring::load(&asc).unwrap().fingerprints(), [a, b]);
    // Not a keyring: a clearsigned message.
    let e = Keyring::from_bytes(&clearsigned(&gpg, &[]), "x.asc").unwrap_err();
    assert!(matches!(e, KeyringError::Parse { .. }), "{e}");
}

#[test]
fn unsigned_and_malformed_input_is_refused() {
    let gpg = Gpg::new();
    let fpr = gpg.generate("A <a@example.invalid>", "ed25519", "sign", "never");
    let kr = keyring(&gpg, &[&fpr]);
    let e = openpgp::verify_clearsigned(&kr, TEXT.as_bytes(), SystemTime::now()).unwrap_err();
    assert!(matches!(e, VerifyError::NotClearsigned { .. }), "{e}");
    let e = openpgp::verify_detached(&kr, TEXT.as_bytes(), b"", SystemTime::now()).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::MalformedSignature(_) | VerifyError::NoSignature
        ),
        "{e}"
    );
}

#[test]
fn signed_by_fingerprints_select_keys_from_the_default_keyrings() {
    use debian::sources::{parse_one_line, SignedBy};

    let gpg = Gpg::new();
    let a = gpg.generate("A <a@example.invalid>", "ed25519", "sign", "never");
    let b = gpg.generate("B <b@example.invalid>", "ed25519", "sign", "never");
    let primary = gpg.generate("C <c@example.invalid>", "ed25519", "cert", "never");
    let sub = gpg.add_signing_subkey(&primary, "ed25519");
    let etc_apt = tempfile::tempdir().unwrap();
    let trusted = etc_apt.path().join("trusted.gpg.d");
    std::fs::create_dir_all(&trusted).unwrap();
    std::fs::write(trusted.join("a.gpg"), gpg.export(&a, false)).unwrap();
    std::fs::write(trusted.join("b.asc"), gpg.export(&b, true)).unwrap();
    std::fs::write(trusted.join("c.gpg"), gpg.export(&primary, false)).unwrap();
    std::fs::write(trusted.join("ignored.txt"), b"not a keyring").unwrap();

    // No Signed-By: all default keyrings.
    let source = parse_one_line("deb http://h/d s main").unwrap();
    let all = Keyring::for_source(&source, etc_apt.path()).unwrap();
    assert_eq!(all.fingerprints(), [a.clone(), b.clone(), primary.clone()]);

    // A fingerprint keeps only its certificate.
    let source = parse_one_line(&format!(
        "deb [signed-by={}] http://h/d s main",
        b.to_lowercase()
    ))
    .unwrap();
    let only_b = Keyring::for_source(&source, etc_apt.path()).unwrap();
    assert_eq!(only_b.fingerprints(), [b]);
    let e = openpgp::verify_clearsigned(&only_b, &clearsigned(&gpg, &[&a]), SystemTime::now())
        .unwrap_err();
    assert!(
        matches!(&problems(e)[..], [SignatureProblem::UnknownKey { .. }]),
        "a's signature must not verify with b's key"
    );

    // A subkey fingerprint with `!` accepts that subkey only, not the rest of its certificate.
    let source = parse_one_line(&format!("deb [signed-by={sub}!] http://h/d s main")).unwrap();
    assert_eq!(
        source.signed_by,
        [SignedBy::Fingerprint {
            fingerprint: sub.clone(),
            exact: true
        }]
    );
    let exact = Keyring::for_source(&source, etc_apt.path()).unwrap();
    let v = openpgp::verify_clearsigned(&exact, &clearsigned(&gpg, &[&sub]), SystemTime::now())
        .unwrap();
    assert_eq!((v.key, v.certificate), (sub.clone(), primary.clone()));

    // A fingerprint in none of the keyrings.
    let missing = "0123456789ABCDEF0123456789ABCDEF01234567";
    let source = parse_one_line(&format!("deb [signed-by={missing}] http://h/d s main")).unwrap();
    let e = Keyring::for_source(&source, etc_apt.path()).unwrap_err();
    assert!(matches!(e, KeyringError::FingerprintNotFound { .. }), "{e}");
    assert!(e.to_string().contains(missing), "{e}");

    // No default keyring at all.
    let empty = tempfile::tempdir().unwrap();
    let source = parse_one_line("deb http://h/d s main").unwrap();
    let e = Keyring::for_source(&source, empty.path()).unwrap_err();
    assert!(matches!(e, KeyringError::NoDefaultKeyring { .. }), "{e}");
}

#[test]
fn inline_signed_by_key_from_a_deb822_source() {
    let gpg = Gpg::new();
    let fpr = gpg.generate("I <i@example.invalid>", "ed25519", "sign", "never");
    let armored = String::from_utf8(gpg.export(&fpr, true)).unwrap();
    // deb822 writes the key indented, with `.` for its empty lines.
    let field: String = armored
        .lines()
        .map(|l| {
            if l.is_empty() {
                " .\n".to_owned()
            } else {
                format!(" {l}\n")
            }
        })
        .collect();
    let text =
        format!("Types: deb\nURIs: http://h/d\nSuites: s\nComponents: main\nSigned-By:\n{field}");
    let sources = debian::sources::parse_deb822(&text, None).unwrap();
    let keyring = Keyring::for_source(&sources[0], Path::new("/nonexistent")).unwrap();
    assert_eq!(keyring.fingerprints(), std::slice::from_ref(&fpr));
    let v = openpgp::verify_clearsigned(&keyring, &clearsigned(&gpg, &[&fpr]), SystemTime::now())
        .unwrap();
    assert_eq!(v.key, fpr);
}
