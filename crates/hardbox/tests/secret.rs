//! `hardbox secret`: values stored with owner-only modes, never printed, names validated.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

fn hardbox(root: &std::path::Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hardbox"))
        .args(args)
        .env("HARDBOX_ROOT", root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Commands that do not read stdin close it early.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn secrets_are_stored_owner_only_and_never_printed() {
    let root = tempfile::tempdir().unwrap();
    let value = b"sk-live-0123456789abcdef";
    let mut line = value.to_vec();
    line.push(b'\n');
    let set = hardbox(root.path(), &["secret", "set", "API_KEY"], &line);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let directory = root.path().join("secrets");
    let file = directory.join("API_KEY");
    // The trailing newline of a piped value is not part of it.
    assert_eq!(std::fs::read(&file).unwrap(), value);
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&directory), 0o700);
    assert_eq!(mode(&file), 0o600);

    let listed = hardbox(root.path(), &["secret", "ls", "--json"], b"");
    let names: Vec<String> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(names, ["API_KEY"]);
    for output in [&set, &listed] {
        for stream in [&output.stdout, &output.stderr] {
            let text = String::from_utf8_lossy(stream);
            assert!(!text.contains("sk-live"), "the value was printed: {text}");
        }
    }

    let removed = hardbox(root.path(), &["secret", "rm", "API_KEY"], b"");
    assert!(removed.status.success());
    assert!(!file.exists());
    let again = hardbox(root.path(), &["secret", "rm", "API_KEY"], b"");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no secret named API_KEY"));
}

#[test]
fn bad_names_and_empty_values_are_refused() {
    let root = tempfile::tempdir().unwrap();
    for name in ["../escape", ".hidden", "a/b", "", "1ST", "with-dash"] {
        let out = hardbox(root.path(), &["secret", "set", name], b"value\n");
        assert_eq!(out.status.code(), Some(1), "{name:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("invalid secret name"),
            "{name:?}"
        );
    }
    let out = hardbox(root.path(), &["secret", "set", "EMPTY"], b"\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
    assert!(!root.path().join("secrets/EMPTY").exists());
}
