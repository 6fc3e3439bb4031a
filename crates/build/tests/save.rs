//! `build::save` over an imported base image, with layers captured by `layer::capture`: the store
//! stays consistent (fsck), the image is the base's layers plus the new ones with the labels and
//! the events referrer, and peers read it: skopeo loads its docker-archive, umoci unpacks its
//! OCI export to the saved files without the deleted ones.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on unexpected values"
)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use build::save::{
    save, NewLayer, SaveError, SaveRequest, EVENTS_ARTIFACT_TYPE, LABEL_BASE_DIGEST, LABEL_CREATED,
    LABEL_POLICY_DIGEST,
};
use layer::capture::{
    write_upper_layer, write_workspace_layer, CaptureOptions, OverlayXattrs, Owners, Snapshot,
};
use oci::spec::Platform;
use oci::{ExportFormat, ImportOptions, Store};

const CREATED: u64 = 1_700_000_000;
const POLICY: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

fn run(command: &mut Command) -> std::process::Output {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {output:?}");
    output
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn require_root(dir: &Path) {
    let probe = dir.join("root-probe");
    fs::write(&probe, "").unwrap();
    assert_eq!(
        fs::metadata(&probe).unwrap().uid(),
        0,
        "this test needs root (CI runs it as root): it makes overlay whiteouts with mknod"
    );
}

fn options() -> CaptureOptions {
    CaptureOptions {
        mtime_clamp: Some(CREATED),
        owners: Owners::Keep,
        overlay_xattrs: OverlayXattrs::Trusted,
        ..CaptureOptions::for_current_user()
    }
}

/// A store holding `base:1`, made from a rootfs directory by scripts/make-oci-layout; returns
/// the store and the rootfs (the lower of a sandbox of that image).
fn base_store(dir: &Path) -> (Store, PathBuf) {
    let rootfs = dir.join("rootfs");
    write(&rootfs.join("etc/os-release"), "ID=base\n");
    write(&rootfs.join("etc/remove-me"), "old\n");
    write(&rootfs.join("opt/app/config"), "v1\n");
    let layout = dir.join("layout");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-oci-layout");
    run(Command::new(script).arg(&rootfs).arg(&layout).arg("base:1"));
    let store = Store::open(&dir.join("store")).unwrap();
    store
        .import(
            &layout,
            &ImportOptions {
                tag: Some("base:1".to_owned()),
                ..ImportOptions::default()
            },
        )
        .unwrap();
    (store, rootfs)
}

/// The two layers `hardbox save` makes: the system changes (an overlay upper made by hand) and
/// the workspace changes.
fn sandbox_layers(dir: &Path, rootfs: &Path) -> (PathBuf, PathBuf) {
    let upper = dir.join("upper");
    write(&upper.join("srv/hello"), "hello\n");
    write(&upper.join("opt/app/config"), "v2\n");
    fs::create_dir(upper.join("etc")).unwrap();
    run(Command::new("mknod")
        .arg(upper.join("etc/remove-me"))
        .args(["c", "0", "0"]));
    let system = dir.join("system.tar");
    write_upper_layer(
        &upper,
        Some(rootfs),
        fs::File::create(&system).unwrap(),
        &options(),
    )
    .unwrap();

    let workspace = dir.join("workspace");
    write(&workspace.join("a.txt"), "a\n");
    write(&workspace.join("gone.txt"), "gone\n");
    let snapshot = Snapshot::take(&workspace).unwrap();
    write(&workspace.join("b.txt"), "b\n");
    fs::write(workspace.join("a.txt"), "a, edited\n").unwrap();
    fs::remove_file(workspace.join("gone.txt")).unwrap();
    let workspace_tar = dir.join("workspace.tar");
    write_workspace_layer(
        &workspace,
        &snapshot,
        Path::new("/workspace"),
        fs::File::create(&workspace_tar).unwrap(),
        &CaptureOptions {
            owners: Owners::Fixed { uid: 0, gid: 0 },
            ..options()
        },
    )
    .unwrap();
    (system, workspace_tar)
}

fn request(
    base: Option<&str>,
    layers: Vec<NewLayer>,
    events: Option<PathBuf>,
    tag: &str,
) -> SaveRequest {
    SaveRequest {
        base: base.map(str::to_owned),
        layers,
        labels: BTreeMap::from([("org.example.note".to_owned(), "saved".to_owned())]),
        policy_digest: Some(POLICY.to_owned()),
        created: CREATED,
        events,
        tag: tag.to_owned(),
        ..SaveRequest::default()
    }
}

/// `umoci unpack` of the image exported as an OCI layout; returns the rootfs.
fn umoci_rootfs(store: &Store, dir: &Path, tag: &str) -> PathBuf {
    let layout = dir.join(format!("export-{}", tag.replace(':', "-")));
    store.export(tag, ExportFormat::OciDir, &layout).unwrap();
    let bundle = dir.join(format!("bundle-{}", tag.replace(':', "-")));
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle));
    bundle.join("rootfs")
}

/// skopeo loads the docker-archive export.
fn skopeo_loads_docker_archive(store: &Store, dir: &Path, tag: &str) {
    let archive = dir.join(format!("{}.docker.tar", tag.replace(':', "-")));
    store
        .export(tag, ExportFormat::DockerArchive, &archive)
        .unwrap();
    let target = dir.join(format!("skopeo-{}", tag.replace(':', "-")));
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(format!("oci:{}:loaded", target.display())));
    let inspected = run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:loaded", target.display())));
    let inspected: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(inspected["Labels"][LABEL_POLICY_DIGEST], POLICY);
}

#[test]
fn saved_image_is_the_base_plus_the_changes_with_labels_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    require_root(dir);
    let (store, rootfs) = base_store(dir);
    let base = store.resolve("base:1").unwrap();
    let base_image = store.load_image(&base).unwrap();
    let (system, workspace) = sandbox_layers(dir, &rootfs);
    let events = dir.join("events.jsonl");
    fs::write(
        &events,
        "{\"event.name\":\"hardbox.sandbox.created\",\"sequence\":1}\n\
         {\"event.name\":\"hardbox.exec\",\"sequence\":2}\n",
    )
    .unwrap();
    let layers = || {
        vec![
            NewLayer::file(&system, "system changes"),
            NewLayer::reader(fs::File::open(&workspace).unwrap(), "workspace changes"),
        ]
    };

    let outcome = save(
        &store,
        request(Some("base:1"), layers(), Some(events.clone()), "saved:1"),
    )
    .unwrap();
    assert_eq!(outcome.base.as_ref().map(|b| &b.digest), Some(&base.digest));
    assert_eq!(outcome.base_layers, 1);
    assert_eq!(outcome.layers_added.len(), 2);
    let report = store.fsck().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);

    let image = store.load_image(&outcome.manifest).unwrap();
    assert_eq!(
        store.resolve("saved:1").unwrap().digest,
        outcome.manifest.digest
    );
    let layer_digests: Vec<_> = image
        .manifest
        .layers
        .iter()
        .map(|l| l.digest.clone())
        .collect();
    let mut expected = vec![base_image.manifest.layers[0].digest.clone()];
    expected.extend(
        outcome
            .layers_added
            .iter()
            .map(|l| l.descriptor.digest.clone()),
    );
    assert_eq!(layer_digests, expected);
    let mut diff_ids = base_image.config.rootfs.diff_ids.clone();
    diff_ids.extend(outcome.layers_added.iter().map(|l| l.diff_id.clone()));
    assert_eq!(image.config.rootfs.diff_ids, diff_ids);
    assert_eq!(
        image.config.history.len(),
        base_image.config.history.len() + 2
    );
    let labels = image.config.config.clone().unwrap().labels.unwrap();
    assert_eq!(labels[LABEL_BASE_DIGEST], base.digest.to_string());
    assert_eq!(labels[LABEL_POLICY_DIGEST], POLICY);
    assert_eq!(labels[LABEL_CREATED], "2023-11-14T22:13:20Z");
    assert_eq!(labels["org.example.note"], "saved");
    let run_config = image.config.config.clone().unwrap();
    assert_eq!(
        run_config.cmd,
        base_image.config.config.clone().unwrap().cmd,
        "the base's run settings are kept"
    );

    let referrers = store.referrers(&outcome.manifest.digest).unwrap();
    assert_eq!(referrers.len(), 1);
    assert_eq!(referrers[0].artifact_type, EVENTS_ARTIFACT_TYPE);
    assert_eq!(Some(&referrers[0].descriptor), outcome.events.as_ref());
    let blob = store
        .root()
        .join("blobs/sha256")
        .join(referrers[0].blobs[0].digest.hex());
    assert_eq!(fs::read(blob).unwrap(), fs::read(&events).unwrap());

    // The same sandbox saved again gives the same image.
    let again = save(
        &store,
        request(Some("base:1"), layers(), Some(events.clone()), "saved:2"),
    )
    .unwrap();
    assert_eq!(again.manifest.digest, outcome.manifest.digest);

    skopeo_loads_docker_archive(&store, dir, "saved:1");
    let check = |root: &Path| {
        let read = |path: &str| fs::read_to_string(root.join(path)).unwrap();
        assert_eq!(read("srv/hello"), "hello\n");
        assert_eq!(read("opt/app/config"), "v2\n");
        assert_eq!(read("etc/os-release"), "ID=base\n");
        assert_eq!(read("workspace/a.txt"), "a, edited\n");
        assert_eq!(read("workspace/b.txt"), "b\n");
        for gone in [
            "etc/remove-me",
            "workspace/gone.txt",
            "workspace/.wh.gone.txt",
        ] {
            assert!(fs::symlink_metadata(root.join(gone)).is_err(), "{gone}");
        }
    };
    check(&umoci_rootfs(&store, dir, "saved:1"));
    // What `hardbox run saved:1` starts from: the store's own unpack.
    let unpacked = dir.join("unpacked");
    store
        .unpack("saved:1", &unpacked, layer::Options::for_current_user())
        .unwrap();
    check(&unpacked);
}

#[test]
fn host_sandbox_changes_are_saved_over_an_empty_base() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let store = Store::open(&dir.join("store")).unwrap();
    let changes = dir.join("changes");
    write(&changes.join("home/user/notes"), "notes\n");
    let mut tar = Vec::new();
    write_upper_layer(&changes, None, &mut tar, &options()).unwrap();

    let outcome = save(
        &store,
        request(
            None,
            vec![NewLayer::reader(std::io::Cursor::new(tar), "host changes")],
            None,
            "host-changes",
        ),
    )
    .unwrap();
    assert!(outcome.base.is_none(), "the outcome says the base is empty");
    assert_eq!(outcome.base_layers, 0);
    assert_eq!(outcome.tag, "host-changes:latest");
    assert!(outcome.events.is_none());
    let report = store.fsck().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let image = store.load_image(&outcome.manifest).unwrap();
    assert_eq!(
        image.config.platform().architecture,
        Platform::host().architecture
    );
    assert_eq!(image.manifest.layers.len(), 1);
    let labels = image.config.config.clone().unwrap().labels.unwrap();
    assert!(!labels.contains_key(LABEL_BASE_DIGEST));
    assert!(store
        .referrers(&outcome.manifest.digest)
        .unwrap()
        .is_empty());

    skopeo_loads_docker_archive(&store, dir, "host-changes:latest");
    let rootfs = umoci_rootfs(&store, dir, "host-changes:latest");
    assert_eq!(
        fs::read_to_string(rootfs.join("home/user/notes")).unwrap(),
        "notes\n"
    );
}

#[test]
fn an_unknown_base_or_a_bad_tag_lists_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let index = || fs::read(store.root().join("index.json")).unwrap();
    let before = index();
    let layer = || {
        vec![NewLayer::reader(
            std::io::Cursor::new(vec![0u8; 1024]),
            "empty",
        )]
    };
    assert!(matches!(
        save(&store, request(Some("missing:1"), layer(), None, "saved:1")),
        Err(SaveError::Base { .. })
    ));
    assert!(matches!(
        save(&store, request(None, layer(), None, "Not A Tag")),
        Err(SaveError::Tag { .. })
    ));
    assert!(matches!(
        save(
            &store,
            request(None, layer(), Some(dir.path().join("no-events")), "saved:1")
        ),
        Err(SaveError::Events { .. })
    ));
    assert_eq!(index(), before);
}
