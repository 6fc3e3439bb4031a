//! Regression tests: whatever a layer says, nothing is written outside the root.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on unexpected values"
)]

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::*;

#[test]
fn unpack_rejects_dotdot_paths() {
    for name in ["../escaped", "a/../../escaped", "..", "./../outside/secret"] {
        let layer = Tar::new().file(name, "evil").bytes();
        check_error(&[layer], &format!("entry {name:?} escapes the root"));
    }
}

#[test]
fn unpack_rejects_absolute_paths() {
    let sandbox = Sandbox::new();
    let target = sandbox.outside.join("evil");
    let name = target.to_str().expect("utf-8 path");
    let layer = Tar::new().file("ok", "fine").file(name, "evil").bytes();
    check_error(
        std::slice::from_ref(&layer),
        &format!("entry {name:?} has an absolute path"),
    );
    // The same archive against the sandbox whose outside it names.
    assert!(apply(&sandbox.root, &[layer]).is_err());
    sandbox.assert_outside_untouched();
    let layer = Tar::new().file("/etc/x", "evil").bytes();
    check_error(&[layer], "entry \"/etc/x\" has an absolute path");
}

#[test]
fn unpack_rejects_nul_and_overlong_names() {
    let long = "a/".repeat(2100);
    let layer = Tar::new().file(&long, "x").bytes();
    check_error(
        &[layer],
        &format!("entry {long:?} is longer than 4096 bytes"),
    );
    let mut entry = Entry::new("placeholder", b'0');
    entry.pax.push(("path".into(), b"a\0/../../b".to_vec()));
    let layer = Tar::new().entry(entry).bytes();
    check_error(&[layer], "entry \"a\\0/../../b\" contains a NUL byte");
}

#[test]
fn write_through_symlink_in_same_layer_lands_inside_root() {
    for target in ["/", "../../..", "/.."] {
        let sandbox = Sandbox::new();
        let layer = Tar::new()
            .symlink("link", target)
            .file("link/evil", "stays inside")
            .bytes();
        apply(&sandbox.root, &[layer]).expect("apply");
        assert_eq!(
            fs::read(sandbox.path("evil")).expect("evil"),
            b"stays inside"
        );
        sandbox.assert_outside_untouched();
    }
}

#[test]
fn write_through_symlink_from_lower_layer_lands_inside_root() {
    let sandbox = Sandbox::new();
    let lower = Tar::new()
        .dir("inside/")
        .symlink("up", "../../../..")
        .symlink("abs", "/inside")
        .bytes();
    let upper = Tar::new()
        .file("up/evil", "one")
        .file("abs/evil", "two")
        .bytes();
    apply(&sandbox.root, &[lower, upper]).expect("apply");
    assert_eq!(fs::read(sandbox.path("evil")).expect("evil"), b"one");
    assert_eq!(
        fs::read(sandbox.path("inside/evil")).expect("inside/evil"),
        b"two"
    );
    sandbox.assert_outside_untouched();
}

#[test]
fn write_through_symlink_to_real_outside_path_stays_inside() {
    // The link names the real sentinel directory; inside the root that path does not exist.
    let sandbox = Sandbox::new();
    let outside = sandbox.outside.to_str().expect("utf-8").to_owned();
    let layer = Tar::new()
        .symlink("out", &outside)
        .file("out/evil", "x")
        .bytes();
    let err = apply(&sandbox.root, &[layer]).expect_err("dangling in-root link");
    assert!(err.to_string().contains("\"out/evil\""), "{err}");
    sandbox.assert_outside_untouched();
    // When the path exists inside the root, the write lands there.
    let sandbox = Sandbox::new();
    let inner = outside.trim_start_matches('/');
    let layer = Tar::new()
        .dir(format!("{inner}/"))
        .symlink("out", &outside)
        .file("out/evil", "x")
        .bytes();
    apply(&sandbox.root, &[layer]).expect("apply");
    assert_eq!(
        fs::read(sandbox.root.join(inner).join("evil")).expect("evil"),
        b"x"
    );
    sandbox.assert_outside_untouched();
}

#[test]
fn symlink_chains_resolve_inside_root() {
    let sandbox = Sandbox::new();
    let layer = Tar::new()
        .dir("target/")
        .symlink("a", "b")
        .symlink("b", "c/")
        .symlink("c", "/../target")
        .file("a/f", "chained")
        .bytes();
    apply(&sandbox.root, &[layer]).expect("apply");
    assert_eq!(fs::read(sandbox.path("target/f")).expect("f"), b"chained");
    sandbox.assert_outside_untouched();
}

#[test]
fn symlink_loop_is_an_error_naming_the_entry() {
    let layer = Tar::new()
        .symlink("x", "y")
        .symlink("y", "x")
        .file("x/f", "loop")
        .bytes();
    check_error(&[layer], "symlink loop resolving \"x/f\"");
}

#[test]
fn unpack_rejects_hardlink_to_outside_root() {
    let sandbox = Sandbox::new();
    let secret = sandbox.secret();
    let absolute = secret.to_str().expect("utf-8").to_owned();
    for target in ["../outside/secret", "../../x", absolute.as_str()] {
        let layer = Tar::new().hardlink("h", target).bytes();
        check_error(
            std::slice::from_ref(&layer),
            &format!("hardlink \"h\" points to {target:?} outside the root"),
        );
        assert!(apply(&sandbox.root, &[layer]).is_err());
        sandbox.assert_outside_untouched();
    }
}

#[test]
fn hardlink_through_symlinked_directory_stays_inside() {
    // "dir" points at the real outside directory; in the root it resolves to nothing.
    let sandbox = Sandbox::new();
    let outside = sandbox.outside.to_str().expect("utf-8").to_owned();
    let layer = Tar::new()
        .symlink("dir", &outside)
        .hardlink("h", "dir/secret")
        .bytes();
    let err =
        apply(&sandbox.root, std::slice::from_ref(&layer)).expect_err("target missing inside");
    assert_eq!(
        err.to_string(),
        format!(
            "failed to apply layer {}: hardlink \"h\" points to \"dir/secret\", which does not exist",
            digest_of(&layer)
        )
    );
    sandbox.assert_outside_untouched();
}

#[test]
fn hardlink_to_symlink_links_the_symlink_not_its_target() {
    let sandbox = Sandbox::new();
    let secret = sandbox.secret();
    let layer = Tar::new()
        .symlink("s", secret.to_str().expect("utf-8"))
        .hardlink("h", "s")
        .bytes();
    apply(&sandbox.root, &[layer]).expect("apply");
    let h = fs::symlink_metadata(sandbox.path("h")).expect("h");
    assert!(h.file_type().is_symlink());
    assert_eq!(h.nlink(), 2, "h and s are one symlink inode");
    assert_eq!(fs::read_link(sandbox.path("h")).expect("readlink"), secret);
    sandbox.assert_outside_untouched();
}

#[test]
fn whiteouts_cannot_delete_outside_root() {
    let layer = Tar::new().file("../.wh.secret", "").bytes();
    check_error(&[layer], "entry \"../.wh.secret\" escapes the root");
    let layer = Tar::new().file(".wh..", "").bytes();
    check_error(&[layer], "whiteout \".wh..\" names no file");

    // Through a symlink to the real outside directory: resolves inside the root, where there is
    // nothing to delete.
    let sandbox = Sandbox::new();
    let outside = sandbox.outside.to_str().expect("utf-8").to_owned();
    let lower = Tar::new().symlink("out", &outside).bytes();
    let upper = Tar::new().file("out/.wh.secret", "").bytes();
    apply(&sandbox.root, &[lower, upper]).expect("apply");
    sandbox.assert_outside_untouched();

    // Through a symlink to "/": deletes inside the root only.
    let sandbox = Sandbox::new();
    let lower = Tar::new()
        .file("secret", "inside")
        .symlink("top", "/")
        .bytes();
    let upper = Tar::new().file("top/.wh.secret", "").bytes();
    apply(&sandbox.root, &[lower, upper]).expect("apply");
    assert!(!sandbox.path("secret").exists());
    assert_eq!(list(&sandbox.root), ["top"]);
    sandbox.assert_outside_untouched();
}

#[test]
fn whiteout_of_symlinked_directory_removes_the_link_only() {
    let sandbox = Sandbox::new();
    let lower = Tar::new()
        .dir("keep/")
        .file("keep/f", "kept")
        .symlink("link", "keep")
        .bytes();
    let upper = Tar::new().file(".wh.link", "").bytes();
    apply(&sandbox.root, &[lower, upper]).expect("apply");
    assert_eq!(list(&sandbox.root), ["keep"]);
    assert_eq!(fs::read(sandbox.path("keep/f")).expect("f"), b"kept");
}

#[test]
fn replacing_a_symlinked_directory_does_not_follow_it() {
    // A directory entry over a symlink to outside replaces the link; a file over it likewise.
    let sandbox = Sandbox::new();
    let outside = sandbox.outside.to_str().expect("utf-8").to_owned();
    let lower = Tar::new()
        .symlink("d", &outside)
        .symlink("f", format!("{outside}/secret"))
        .bytes();
    let upper = Tar::new()
        .dir("d/")
        .file("f", "replaced")
        .file("d/x", "in")
        .bytes();
    apply(&sandbox.root, &[lower, upper]).expect("apply");
    assert!(fs::symlink_metadata(sandbox.path("d")).expect("d").is_dir());
    assert_eq!(fs::read(sandbox.path("f")).expect("f"), b"replaced");
    assert_eq!(fs::read(sandbox.path("d/x")).expect("x"), b"in");
    sandbox.assert_outside_untouched();
}
