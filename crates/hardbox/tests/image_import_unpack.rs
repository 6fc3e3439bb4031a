//! End-to-end: `image import SOURCE --unpack DIR` gives the store and the tree that `image import`
//! followed by `image unpack` give, from layouts, OCI archives and docker-archives; a layer that
//! does not match its manifest or config leaves neither its blob nor DIR; sources of several
//! images are refused unless `--platform` picks one; a killed run leaves DIR absent or complete
//! and the store consistent; rootless runs skip devices and record owners as `image unpack` does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{assert_same_tree, hardbox, repo_root, require_root, run_ok};
use types::Digest;

const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn chown(path: &Path, id: u32) {
    rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(rustix::fs::Uid::from_raw(id)),
        Some(rustix::fs::Gid::from_raw(id)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// Deterministic bytes that do not compress away.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

/// The first layer: one of most things an image holds, and a few MiB so the blob spans many
/// chunks.
fn populate_base(rootfs: &Path) {
    let p = |rel: &str| rootfs.join(rel);
    for dir in [
        "etc",
        "usr/bin",
        "usr/lib",
        "var/cache/old",
        "tmp",
        "home/user",
    ] {
        std::fs::create_dir_all(p(dir)).unwrap();
    }
    std::fs::set_permissions(p("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(p("home/user"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(p("etc/hostname"), "base\n").unwrap();
    std::fs::write(p("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(p("var/cache/old/entry"), "stale").unwrap();
    for (i, size) in [(0, 3 << 20), (1, 1 << 20), (2, 70_000), (3, 0)] {
        std::fs::write(p(&format!("usr/lib/lib{i}.so")), noise(i, size)).unwrap();
    }
    std::fs::write(p("usr/bin/tool"), noise(7, 200_000)).unwrap();
    std::fs::set_permissions(p("usr/bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(p("usr/bin/su-like"), b"setuid").unwrap();
    std::fs::set_permissions(
        p("usr/bin/su-like"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::hard_link(p("usr/bin/tool"), p("usr/bin/tool-hardlink")).unwrap();
    symlink("tool", p("usr/bin/relative-link")).unwrap();
    symlink("/etc/passwd", p("usr/lib/absolute-link")).unwrap();
    symlink("../../nowhere", p("usr/lib/dangling-link")).unwrap();
    std::fs::write(p("home/user/notes.txt"), "mine").unwrap();
    chown(&p("home/user/notes.txt"), 1000);
    chown(&p("home/user"), 1000);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p("etc/null-like"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p("tmp/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
}

/// The second layer: whiteouts (one file, one opaque directory), a replaced file, new files.
fn populate_change(rootfs: &Path) {
    let p = |rel: &str| rootfs.join(rel);
    for dir in ["etc", "var/cache", "opt/app"] {
        std::fs::create_dir_all(p(dir)).unwrap();
    }
    std::fs::write(p("etc/.wh.hostname"), "").unwrap();
    std::fs::write(p("var/cache/.wh..wh..opq"), "").unwrap();
    std::fs::write(p("var/cache/fresh"), "new").unwrap();
    std::fs::write(p("etc/passwd"), "root:x:0:0::/root:/sbin/nologin\n").unwrap();
    std::fs::write(p("opt/app/run"), "#!/bin/true\n").unwrap();
    std::fs::write(p("opt/app/data"), noise(9, 1_500_000)).unwrap();
}

/// A layer to write into a layout: a directory tarred as it is (owners kept, mtimes 0).
struct LayerSpec {
    dir: PathBuf,
    gzip: bool,
}

/// An image to write into a layout.
struct ImageSpec {
    layers: Vec<LayerSpec>,
    name: &'static str,
    architecture: &'static str,
    /// Put the platform in `index.json`, so that `--platform` can choose.
    indexed_platform: bool,
    /// A diff_id to record for the first layer instead of the right one.
    wrong_diff_id: Option<Digest>,
}

fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no OCI architecture name for {other}"),
    }
}

fn put_blob(layout: &Path, bytes: &[u8]) -> (Digest, u64) {
    let digest = Digest::of(bytes);
    std::fs::write(layout.join("blobs/sha256").join(digest.hex()), bytes).unwrap();
    (digest, bytes.len() as u64)
}

/// Writes an OCI layout holding `images`, layers made with GNU tar as `scripts/make-oci-layout`
/// makes them.
fn write_layout(layout: &Path, images: &[ImageSpec]) {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut manifests = Vec::new();
    for image in images {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for layer in &image.layers {
            let tar = Command::new("tar")
                .args([
                    "--sort=name",
                    "--mtime=@0",
                    "--numeric-owner",
                    "--format=posix",
                    "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
                    "-C",
                ])
                .arg(&layer.dir)
                .args(["-cf", "-", "."])
                .output()
                .unwrap();
            assert!(
                tar.status.success(),
                "{}",
                String::from_utf8_lossy(&tar.stderr)
            );
            diff_ids.push(Digest::of(&tar.stdout).to_string());
            let (bytes, media_type) = if layer.gzip {
                let mut gzip = Command::new("gzip")
                    .args(["-n", "-c"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut stdin = gzip.stdin.take().unwrap();
                let plain = tar.stdout.clone();
                let writer = std::thread::spawn(move || {
                    std::io::Write::write_all(&mut stdin, &plain).unwrap();
                });
                let out = gzip.wait_with_output().unwrap();
                writer.join().unwrap();
                (out.stdout, LAYER_GZIP)
            } else {
                (tar.stdout, LAYER_TAR)
            };
            let (digest, size) = put_blob(layout, &bytes);
            layers.push(serde_json::json!({
                "mediaType": media_type, "digest": digest.to_string(), "size": size
            }));
        }
        if let Some(wrong) = &image.wrong_diff_id {
            diff_ids[0] = wrong.to_string();
        }
        let config = serde_json::json!({
            "architecture": image.architecture,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let (config_digest, config_size) = put_blob(layout, &serde_json::to_vec(&config).unwrap());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest.to_string(),
                "size": config_size,
            },
            "layers": layers,
        });
        let (digest, size) = put_blob(layout, &serde_json::to_vec(&manifest).unwrap());
        let mut entry = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest.to_string(),
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": image.name},
        });
        if image.indexed_platform {
            entry["platform"] =
                serde_json::json!({"architecture": image.architecture, "os": "linux"});
        }
        manifests.push(entry);
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

/// A two-layer image (base, then changes with whiteouts) in a layout under `work`.
fn two_layer_layout(work: &Path, gzip: bool) -> PathBuf {
    let base = work.join(format!("base-{gzip}"));
    let change = work.join(format!("change-{gzip}"));
    populate_base(&base);
    populate_change(&change);
    let layout = work.join(format!("layout-{gzip}"));
    write_layout(
        &layout,
        &[ImageSpec {
            layers: vec![
                LayerSpec { dir: base, gzip },
                LayerSpec { dir: change, gzip },
            ],
            name: "app:1",
            architecture: host_architecture(),
            indexed_platform: false,
            wrong_diff_id: None,
        }],
    );
    layout
}

fn blobs(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a command expected to fail with exit code 1; returns its stderr.
fn run_fails(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{cmd:?}: {}", stderr(&out));
    stderr(&out)
}

#[test]
fn import_unpack_gives_the_store_and_tree_of_import_then_unpack() {
    require_root();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    for gzip in [false, true] {
        let layout = two_layer_layout(w, gzip);

        // The reference: two commands.
        let reference_store = w.join(format!("reference-store-{gzip}"));
        let reference = w.join(format!("reference-{gzip}"));
        run_ok(
            hardbox(&reference_store)
                .args(["image", "import"])
                .arg(&layout),
        );
        run_ok(
            hardbox(&reference_store)
                .args(["image", "unpack", "app:1"])
                .arg(&reference),
        );
        assert!(
            !reference.join("etc/hostname").exists(),
            "whiteout not applied"
        );
        assert_eq!(entries(&reference.join("var/cache")), ["fresh"]);

        // One command, into a fresh store.
        let store = w.join(format!("store-{gzip}"));
        let out = w.join(format!("out-{gzip}"));
        let imported = run_ok(
            hardbox(&store)
                .args(["image", "import", "--unpack"])
                .arg(&out)
                .arg(&layout),
        );
        let stdout = String::from_utf8_lossy(&imported.stdout);
        assert!(stdout.contains("app:1"), "{stdout}");
        assert!(
            stderr(&imported).contains("unpacked"),
            "{}",
            stderr(&imported)
        );
        assert_same_tree(&reference, &out);
        assert_eq!(blobs(&store), blobs(&reference_store), "gzip: {gzip}");
        assert_eq!(entries(&store.join("tmp")), Vec::<String>::new());
        run_ok(hardbox(&store).args(["system", "fsck"]));
        // The store's image unpacks to the same tree.
        let again = w.join(format!("again-{gzip}"));
        run_ok(
            hardbox(&store)
                .args(["image", "unpack", "app:1"])
                .arg(&again),
        );
        assert_same_tree(&reference, &again);

        // Again, with every blob already in the store: applied from the source, nothing stored.
        let out2 = w.join(format!("out2-{gzip}"));
        std::fs::create_dir(&out2).unwrap();
        run_ok(
            hardbox(&store)
                .args(["image", "import"])
                .arg(&layout)
                .arg("--unpack")
                .arg(&out2),
        );
        assert_same_tree(&reference, &out2);
        assert_eq!(blobs(&store), blobs(&reference_store));

        // From archives hardbox exported: the same tree.
        for format in ["oci-archive", "docker-archive"] {
            let archive = w.join(format!("{format}-{gzip}.tar"));
            run_ok(
                hardbox(&reference_store)
                    .args(["image", "export", "app:1", "--format", format, "-o"])
                    .arg(&archive),
            );
            let store = w.join(format!("store-{format}-{gzip}"));
            let out = w.join(format!("out-{format}-{gzip}"));
            run_ok(
                hardbox(&store)
                    .args(["image", "import", "--unpack"])
                    .arg(&out)
                    .arg(&archive),
            );
            assert_same_tree(&reference, &out);
            assert_eq!(
                entries(&store.join("tmp")),
                Vec::<String>::new(),
                "{format}"
            );
            run_ok(hardbox(&store).args(["system", "fsck"]));
        }
    }
}

/// A one-layer image of a few files, one of which says `ORIGINAL`.
fn small_layout(work: &Path, name: &str, gzip: bool, wrong_diff_id: Option<Digest>) -> PathBuf {
    let rootfs = work.join(format!("{name}-rootfs"));
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/motd"), "ORIGINAL message\n").unwrap();
    std::fs::write(rootfs.join("etc/blob"), noise(3, 300_000)).unwrap();
    let layout = work.join(format!("{name}-layout"));
    write_layout(
        &layout,
        &[ImageSpec {
            layers: vec![LayerSpec { dir: rootfs, gzip }],
            name: "small:1",
            architecture: host_architecture(),
            indexed_platform: false,
            wrong_diff_id,
        }],
    );
    layout
}

/// The one layer blob of a layout written by [`small_layout`].
fn layer_blob(layout: &Path) -> (Digest, PathBuf) {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            layout
                .join("blobs/sha256")
                .join(manifest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let digest: Digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let path = layout.join("blobs/sha256").join(digest.hex());
    (digest, path)
}

/// Checks that a failed `import --unpack` into `out` left nothing: no DIR, no staging sibling,
/// no image, no layer blob, an empty `tmp/`, and a store fsck finds clean.
fn assert_left_nothing(store: &Path, out: &Path, layer: &Digest) {
    assert!(!out.exists(), "{} was created", out.display());
    let parent = out.parent().unwrap();
    let name = out.file_name().unwrap().to_string_lossy().into_owned();
    let staging: Vec<String> = entries(parent)
        .into_iter()
        .filter(|e| e.starts_with(&format!(".{name}.unpack-")))
        .collect();
    assert!(staging.is_empty(), "staging left behind: {staging:?}");
    assert!(
        !store.join("blobs/sha256").join(layer.hex()).exists(),
        "the layer blob was stored"
    );
    assert_eq!(entries(&store.join("tmp")), Vec::<String>::new());
    let listed = run_ok(hardbox(store).args(["image", "ls", "--json"]));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed, serde_json::json!([]), "an image was imported");
    run_ok(hardbox(store).args(["system", "fsck"]));
}

#[test]
fn a_layer_altered_after_its_manifest_leaves_neither_blob_nor_dir() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let layout = small_layout(w, "altered", false, None);
    let (digest, path) = layer_blob(&layout);
    // Same size, still a valid tar: only the content of etc/motd changes.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(8)
        .position(|window| window == b"ORIGINAL")
        .unwrap();
    bytes[at..at + 8].copy_from_slice(b"ALTERED!");
    std::fs::write(&path, &bytes).unwrap();

    let store = w.join("store");
    let out = w.join("out");
    let err = run_fails(
        hardbox(&store)
            .args(["image", "import"])
            .arg(&layout)
            .arg("--unpack")
            .arg(&out),
    );
    assert!(
        err.contains(&digest.to_string()),
        "must name the layer: {err}"
    );
    assert!(
        err.contains(&format!("has content with digest {}", Digest::of(&bytes))),
        "{err}"
    );
    assert_left_nothing(&store, &out, &digest);

    // A blob cut short is refused by its size before it is applied.
    std::fs::write(&path, &bytes[..bytes.len() - 1024]).unwrap();
    let err = run_fails(
        hardbox(&store)
            .args(["image", "import", "--unpack"])
            .arg(&out)
            .arg(&layout),
    );
    assert!(err.contains(&digest.to_string()), "{err}");
    assert!(err.contains("but its descriptor says"), "{err}");
    assert_left_nothing(&store, &out, &digest);
}

#[test]
fn a_compressed_layer_whose_diff_id_does_not_match_leaves_neither_blob_nor_dir() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let wrong = Digest::of(b"not the tar stream");
    let layout = small_layout(w, "diff-id", true, Some(wrong.clone()));
    let (digest, _) = layer_blob(&layout);
    let store = w.join("store");
    let out = w.join("out");
    let err = run_fails(
        hardbox(&store)
            .args(["image", "import", "--unpack"])
            .arg(&out)
            .arg(&layout),
    );
    assert!(
        err.contains(&digest.to_string()),
        "must name the layer: {err}"
    );
    assert!(
        err.contains(&format!("but its config says {wrong}")),
        "{err}"
    );
    assert_left_nothing(&store, &out, &digest);
    // Plain import does not decompress layers, so it stores the image; unpack then refuses it.
    run_ok(hardbox(&store).args(["image", "import"]).arg(&layout));
    run_fails(
        hardbox(&store)
            .args(["image", "unpack", "small:1"])
            .arg(&out),
    );
    assert!(!out.exists());
}

#[test]
fn unpack_needs_one_image_and_platform_picks_it() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let one = w.join("one");
    let two = w.join("two");
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&two).unwrap();
    std::fs::write(one.join("which"), "first").unwrap();
    std::fs::write(two.join("which"), "second").unwrap();
    let spec = |dir: &Path, name, architecture, indexed_platform| ImageSpec {
        layers: vec![LayerSpec {
            dir: dir.to_owned(),
            gzip: true,
        }],
        name,
        architecture,
        indexed_platform,
        wrong_diff_id: None,
    };

    // Two images of the same platform: refused before anything is stored.
    let layout = w.join("two-images");
    write_layout(
        &layout,
        &[
            spec(&one, "first:1", host_architecture(), false),
            spec(&two, "second:1", host_architecture(), false),
        ],
    );
    let store = w.join("store");
    let out = w.join("out");
    let err = run_fails(
        hardbox(&store)
            .args(["image", "import", "--unpack"])
            .arg(&out)
            .arg(&layout),
    );
    assert!(
        err.contains(&format!(
            "--unpack needs one image but {} holds 2",
            layout.display()
        )),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    assert!(!out.exists());
    assert_eq!(blobs(&store), Vec::<String>::new(), "nothing may be stored");
    run_ok(hardbox(&store).args(["system", "fsck"]));

    // Two platforms: --platform picks one, and that one is unpacked.
    let layout = w.join("two-platforms");
    write_layout(
        &layout,
        &[
            spec(&one, "multi:1", "amd64", true),
            spec(&two, "multi:1", "arm64", true),
        ],
    );
    for (platform, content) in [("linux/arm64", "second"), ("linux/amd64", "first")] {
        let store = w.join(format!("store-{}", platform.replace('/', "-")));
        let out = w.join(format!("out-{}", platform.replace('/', "-")));
        run_ok(
            hardbox(&store)
                .args(["image", "import", "--platform", platform, "--unpack"])
                .arg(&out)
                .arg(&layout),
        );
        assert_eq!(std::fs::read_to_string(out.join("which")).unwrap(), content);
        let listed = run_ok(hardbox(&store).args(["image", "ls", "--json"]));
        let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    }

    // A target that is not free is refused before anything is stored.
    let store = w.join("store-busy");
    let busy = w.join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("mine"), "keep").unwrap();
    let err = run_fails(
        hardbox(&store)
            .args(["image", "import", "--platform", "linux/arm64", "--unpack"])
            .arg(&busy)
            .arg(&layout),
    );
    assert!(err.contains("is not an empty directory"), "{err}");
    assert_eq!(entries(&busy), ["mine"]);
    assert_eq!(blobs(&store), Vec::<String>::new(), "nothing may be stored");
}

/// A small xorshift generator; the seed is printed so a failure can be replayed.
struct Random(u64);

impl Random {
    fn next_below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

#[test]
fn import_unpack_killed_at_random_points_leaves_dir_absent_or_complete() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let rootfs = w.join("rootfs");
    for d in 0..30 {
        let dir = rootfs.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..50 {
            std::fs::write(dir.join(format!("f{f}")), noise(d * 100 + f, 12_000)).unwrap();
        }
    }
    let layout = w.join("layout");
    run_ok(
        Command::new(repo_root().join("scripts/make-oci-layout"))
            .arg(&rootfs)
            .arg(&layout)
            .arg("crash:1")
            .arg("none"),
    );
    let reference = w.join("reference");
    let started = Instant::now();
    run_ok(
        hardbox(&w.join("probe-store"))
            .args(["image", "import", "--unpack"])
            .arg(&reference)
            .arg(&layout),
    );
    let full = started.elapsed().as_micros().max(1_000) as u64;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed: {seed}");
    let mut random = Random(seed);

    let store = w.join("store");
    let outs = w.join("outs");
    std::fs::create_dir(&outs).unwrap();
    for round in 0..20 {
        let out = outs.join(format!("out-{round}"));
        let mut child = hardbox(&store)
            .args(["image", "import", "--unpack"])
            .arg(&out)
            .arg(&layout)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(random.next_below(full)));
        let _ = child.kill();
        let _ = child.wait();

        let fsck = hardbox(&store).args(["system", "fsck"]).output().unwrap();
        assert!(
            fsck.status.success(),
            "round {round} (seed {seed}): fsck failed after a kill:\n{}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
        if out.exists() {
            assert_same_tree(&reference, &out);
        }
    }
    let out = w.join("final");
    run_ok(
        hardbox(&store)
            .args(["image", "import", "--unpack"])
            .arg(&out)
            .arg(&layout),
    );
    assert_same_tree(&reference, &out);
    run_ok(hardbox(&store).args(["system", "gc"]));
    run_ok(hardbox(&store).args(["system", "fsck"]));
    assert_eq!(entries(&store.join("tmp")), Vec::<String>::new());
}

const NOBODY: u32 = 65534;

/// The hardbox binary run as uid/gid 65534 with its store at `store`.
fn hardbox_as_nobody(store: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--",
    ])
    .arg(env!("CARGO_BIN_EXE_hardbox"))
    .arg("--root")
    .arg(store)
    .env("HOME", "/nonexistent");
    cmd
}

#[test]
fn rootless_import_unpack_skips_devices_and_records_owners_like_unpack() {
    require_root();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::set_permissions(w, std::fs::Permissions::from_mode(0o755)).unwrap();
    let layout = two_layer_layout(w, true);
    for entry in walk(&layout) {
        // The layout must be readable by the unprivileged user.
        let mode = std::fs::symlink_metadata(&entry).unwrap().mode();
        if mode & 0o170000 == 0o040000 {
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let home = w.join("nobody");
    std::fs::create_dir(&home).unwrap();
    chown(&home, NOBODY);

    // The reference: import, then unpack, as the same user.
    let reference_store = home.join("reference-store");
    let reference = home.join("reference");
    run_ok(
        hardbox_as_nobody(&reference_store)
            .args(["image", "import"])
            .arg(&layout),
    );
    run_ok(
        hardbox_as_nobody(&reference_store)
            .args(["image", "unpack", "app:1"])
            .arg(&reference),
    );

    let store = home.join("store");
    let out = home.join("out");
    let imported = run_ok(
        hardbox_as_nobody(&store)
            .args(["image", "import", "--unpack"])
            .arg(&out)
            .arg(&layout),
    );
    let err = stderr(&imported);
    assert!(err.contains("warning:"), "{err}");
    assert!(
        err.contains("etc/null-like"),
        "warning must name the entry: {err}"
    );
    assert!(
        err.contains("sha256:"),
        "warning must name the layer: {err}"
    );
    assert!(std::fs::symlink_metadata(out.join("etc/null-like")).is_err());
    let notes = std::fs::metadata(out.join("home/user/notes.txt")).unwrap();
    assert_eq!(notes.uid(), NOBODY, "files belong to the unpacking user");
    let mut recorded = [0u8; 64];
    let n = rustix::fs::getxattr(
        out.join("home/user/notes.txt"),
        "user.hardbox.owner",
        &mut recorded,
    )
    .expect("the layer's owner is recorded in user.hardbox.owner");
    assert_eq!(&recorded[..n], b"1000:1000");
    assert_same_tree(&reference, &out);
    run_ok(hardbox_as_nobody(&store).args(["system", "fsck"]));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_owned()];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            out.extend(walk(&path));
        }
    }
    out
}
