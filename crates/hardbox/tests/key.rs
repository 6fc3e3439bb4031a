//! `hardbox key generate`: the key pair is written with safe modes, in formats other tools read
//! (OpenSSL as the oracle), and an existing key is never replaced by accident.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn hardbox(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hardbox"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn generated_keys_have_safe_modes_and_openssl_reads_them() {
    for algorithm in ["ed25519", "ecdsa-p256"] {
        let dir = tempfile::tempdir().unwrap();
        let out = hardbox(
            &[
                "key",
                "generate",
                "signer",
                "--algorithm",
                algorithm,
                "--json",
            ],
            dir.path(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["algorithm"], algorithm);
        assert_eq!(report["keyid"].as_str().unwrap().len(), 64);
        let private = dir.path().join("signer.key");
        let public = dir.path().join("signer.pub");
        let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode(&private) & 0o777, 0o600);
        assert_eq!(mode(&public) & 0o777, 0o644);
        let expected = if algorithm == "ed25519" {
            "ED25519"
        } else {
            "prime256v1"
        };
        let text = Command::new("openssl")
            .args(["pkey", "-noout", "-text", "-in"])
            .arg(&private)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&text.stdout).into_owned()
            + &String::from_utf8_lossy(&text.stderr);
        assert!(text.contains(expected), "{algorithm}: {text}");
        // The public key is the private key's.
        let derived = Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&derived.stdout),
            std::fs::read_to_string(&public).unwrap()
        );
        // No temporary files are left.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}

#[test]
fn an_existing_key_is_not_replaced_without_force() {
    let dir = tempfile::tempdir().unwrap();
    assert!(hardbox(&["key", "generate", "k"], dir.path())
        .status
        .success());
    let before = std::fs::read(dir.path().join("k.key")).unwrap();
    let again = hardbox(&["key", "generate", "k"], dir.path());
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("k.key exists"));
    assert_eq!(std::fs::read(dir.path().join("k.key")).unwrap(), before);
    assert!(hardbox(&["key", "generate", "k", "--force"], dir.path())
        .status
        .success());
    assert_ne!(std::fs::read(dir.path().join("k.key")).unwrap(), before);
}
