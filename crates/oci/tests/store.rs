//! The store end to end through its library API: import of every source kind, export round
//! trips, platform selection, names, tag/rm/gc, fsck and the rejections that must leave
//! `index.json` untouched.

#![allow(clippy::unwrap_used, reason = "tests unwrap values known to be valid")]

mod common;

use std::path::Path;

use common::*;
use oci::spec::{
    Descriptor, Platform, ANNOTATION_CONTAINERD_NAME, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_LAYER,
};
use oci::{ExportFormat, FsckProblem, ImportError, ImportOptions, SourceKind, Store};
use serde_json::json;
use types::Digest;

fn base_tar() -> Vec<u8> {
    layer_tar(&[("etc/os-release", "ID=test\n")])
}

fn app_tar(version: &str) -> Vec<u8> {
    layer_tar(&[("bin/app", version)])
}

fn simple_image(version: &str) -> Built {
    let (host, _) = host_and_other_arch();
    build_image(&host, &[base_tar(), app_tar(version)], true)
}

fn layout_with(dir: &Path, image: &Built, name: Option<&str>) {
    let entry = match name {
        Some(name) => named(&image.manifest, name),
        None => image.manifest.clone(),
    };
    write_layout(dir, &image.blobs, &[entry]);
}

fn blob_names(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn hexes(digests: &[&Digest]) -> Vec<String> {
    let mut names: Vec<String> = digests.iter().map(|d| d.hex().to_owned()).collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn layout_import_round_trips_and_names_get_latest() {
    let work = tempfile::tempdir().unwrap();
    let image = simple_image("1");
    let layout = work.path().join("layout");
    layout_with(&layout, &image, Some("app"));
    let store = Store::open(&work.path().join("store")).unwrap();

    let imported = store.import(&layout, &ImportOptions::default()).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].digest, image.manifest.digest);
    assert_eq!(imported[0].names, vec!["app:latest"]);
    assert_eq!(imported[0].source_kind, SourceKind::OciDir);

    for reference in [
        "app".to_owned(),
        "app:latest".to_owned(),
        image.manifest.digest.to_string(),
        image.manifest.digest.short().to_owned(),
    ] {
        assert_eq!(
            store.resolve(&reference).unwrap().digest,
            image.manifest.digest,
            "{reference}"
        );
    }
    let details = store.inspect("app").unwrap();
    assert_eq!(details.config.cmd, vec!["/bin/app"]);
    assert_eq!(details.config.working_dir.as_deref(), Some("/srv"));
    assert_eq!(details.layers.len(), 2);
    assert_eq!(details.layers[1].diff_id, Digest::of(&app_tar("1")));
    let total: u64 = image.blobs.iter().map(|b| b.len() as u64).sum();
    assert_eq!(details.size, total);
    let listed = store.images().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, total);
    assert_eq!(listed[0].created.as_deref(), Some("2024-01-02T03:04:05Z"));

    let all: Vec<&Digest> = image.blobs.iter().map(|_| &image.manifest.digest).collect();
    assert_eq!(all.len(), 4);
    let digests: Vec<Digest> = image.blobs.iter().map(|b| Digest::of(b)).collect();
    assert_eq!(
        blob_names(store.root()),
        hexes(&digests.iter().collect::<Vec<_>>())
    );
    assert!(store.fsck().unwrap().is_clean());
}

#[test]
fn oci_archive_import_and_export_keep_the_manifest_digest() {
    let work = tempfile::tempdir().unwrap();
    let image = simple_image("1");
    let layout = work.path().join("layout");
    layout_with(&layout, &image, Some("app:1"));
    let archive = tar_dir(&layout, &work.path().join("app.tar"));
    let store = Store::open(&work.path().join("store")).unwrap();
    let imported = store.import(&archive, &ImportOptions::default()).unwrap();
    assert_eq!(imported[0].digest, image.manifest.digest);
    assert_eq!(imported[0].source_kind, SourceKind::OciArchive);
    assert_eq!(imported[0].names, vec!["app:1"]);
    // Staged members are adopted or removed: nothing is left in tmp/.
    assert_eq!(
        std::fs::read_dir(store.root().join("tmp")).unwrap().count(),
        0
    );

    for (format, name) in [
        (ExportFormat::OciDir, "out-dir"),
        (ExportFormat::OciArchive, "out.tar"),
    ] {
        let out = work.path().join(name);
        store.export("app:1", format, &out).unwrap();
        let again = Store::open(&work.path().join(format!("store-{name}"))).unwrap();
        let imported = again.import(&out, &ImportOptions::default()).unwrap();
        assert_eq!(imported[0].digest, image.manifest.digest, "{format:?}");
        assert_eq!(imported[0].names, vec!["app:1"], "{format:?}");
        assert!(again.fsck().unwrap().is_clean());
        // The output must not exist.
        let err = store.export("app:1", format, &out).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn docker_archive_import_converts_to_oci_and_keeps_the_config() {
    let work = tempfile::tempdir().unwrap();
    let (host, _) = host_and_other_arch();
    // The third layer repeats the first and is stored as a symlink, as docker save does.
    let image = build_image(&host, &[base_tar(), app_tar("1"), base_tar()], false);
    let archive = work.path().join("docker.tar");
    write_docker_archive(&archive, &image, &["app:1", "app:stable"]);
    let store = Store::open(&work.path().join("store")).unwrap();

    let imported = store.import(&archive, &ImportOptions::default()).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].source_kind, SourceKind::DockerArchive);
    assert_eq!(imported[0].names, vec!["app:1", "app:stable"]);
    let loaded = store
        .load_image(&store.resolve("app:stable").unwrap())
        .unwrap();
    assert_eq!(loaded.manifest.config.media_type, MEDIA_TYPE_OCI_CONFIG);
    assert_eq!(loaded.manifest.config.digest, image.config.digest);
    assert_eq!(loaded.config_bytes, image.config_bytes);
    assert_eq!(loaded.manifest.layers.len(), 3);
    for (layer, (_, tar)) in loaded.manifest.layers.iter().zip(&image.layers) {
        assert_eq!(layer.media_type, MEDIA_TYPE_OCI_LAYER);
        assert_eq!(layer.digest, Digest::of(tar));
    }
    assert!(store.fsck().unwrap().is_clean());

    // docker-archive export, then import again: same config, same layers, same names.
    let out = work.path().join("export.tar");
    store
        .export("app:1", ExportFormat::DockerArchive, &out)
        .unwrap();
    let again = Store::open(&work.path().join("store2")).unwrap();
    let imported = again.import(&out, &ImportOptions::default()).unwrap();
    assert_eq!(imported[0].digest, loaded.descriptor.digest);
    assert_eq!(imported[0].names, vec!["app:1", "app:stable"]);
}

#[test]
fn docker_archive_export_decompresses_gzip_layers() {
    let work = tempfile::tempdir().unwrap();
    let image = simple_image("1");
    let layout = work.path().join("layout");
    layout_with(&layout, &image, Some("app:1"));
    let store = Store::open(&work.path().join("store")).unwrap();
    store.import(&layout, &ImportOptions::default()).unwrap();
    let out = work.path().join("docker.tar");
    store
        .export("app:1", ExportFormat::DockerArchive, &out)
        .unwrap();

    let mut archive = tar::Archive::new(std::fs::File::open(&out).unwrap());
    let mut layers = Vec::new();
    let mut manifest = None;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        if path.ends_with("/layer.tar") {
            assert_eq!(path, format!("{}/layer.tar", Digest::of(&bytes).hex()));
            layers.push(bytes);
        } else if path == "manifest.json" {
            manifest = Some(serde_json::from_slice::<serde_json::Value>(&bytes).unwrap());
        }
    }
    assert_eq!(layers, vec![base_tar(), app_tar("1")]);
    let manifest = manifest.unwrap();
    assert_eq!(manifest[0]["RepoTags"], json!(["app:1"]));
    assert_eq!(
        manifest[0]["Config"],
        json!(format!("{}.json", image.config.digest.hex()))
    );
}

#[test]
fn newer_docker_save_format_uses_the_layout_and_the_containerd_name() {
    let work = tempfile::tempdir().unwrap();
    let image = simple_image("1");
    let dir = work.path().join("save");
    let mut entry = named(&image.manifest, "1");
    entry.annotations.insert(
        ANNOTATION_CONTAINERD_NAME.to_owned(),
        "example/app:1".to_owned(),
    );
    write_layout(&dir, &image.blobs, &[entry]);
    let legacy = json!([{
        "Config": format!("blobs/sha256/{}", image.config.digest.hex()),
        "RepoTags": ["example/app:1"],
        "Layers": image.layers.iter().map(|(d, _)| format!("blobs/sha256/{}", d.digest.hex())).collect::<Vec<_>>(),
    }]);
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&legacy).unwrap(),
    )
    .unwrap();
    let archive = tar_dir(&dir, &work.path().join("save.tar"));
    let store = Store::open(&work.path().join("store")).unwrap();
    let imported = store.import(&archive, &ImportOptions::default()).unwrap();
    assert_eq!(imported[0].digest, image.manifest.digest);
    assert_eq!(imported[0].names, vec!["example/app:1"]);
}

#[test]
fn platform_is_picked_from_an_index_host_by_default_or_as_asked() {
    let work = tempfile::tempdir().unwrap();
    let (host, other) = host_and_other_arch();
    let host_image = build_image(&host, &[app_tar("host")], true);
    let other_image = build_image(&other, &[app_tar("other")], true);
    let with_platform = |built: &Built, arch: &str| {
        let mut d = built.manifest.clone();
        d.platform = Some(Platform::parse(&format!("linux/{arch}")).unwrap());
        d
    };
    let index_bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_INDEX,
        "manifests": [with_platform(&other_image, &other), with_platform(&host_image, &host)],
    }))
    .unwrap();
    let index = Descriptor::new(
        MEDIA_TYPE_OCI_INDEX,
        Digest::of(&index_bytes),
        index_bytes.len() as u64,
    );
    let mut blobs = host_image.blobs.clone();
    blobs.extend(other_image.blobs.clone());
    blobs.push(index_bytes);
    let layout = work.path().join("multi");
    write_layout(&layout, &blobs, &[named(&index, "multi:1")]);

    let store = Store::open(&work.path().join("store")).unwrap();
    let imported = store.import(&layout, &ImportOptions::default()).unwrap();
    assert_eq!(imported[0].digest, host_image.manifest.digest);
    assert_eq!(imported[0].platform, format!("linux/{host}"));

    let options = ImportOptions {
        tag: Some("multi:other".to_owned()),
        platform: Some(Platform::parse(&format!("linux/{other}")).unwrap()),
    };
    let imported = store.import(&layout, &options).unwrap();
    assert_eq!(imported[0].digest, other_image.manifest.digest);
    assert_eq!(
        store.resolve("multi:other").unwrap().digest,
        other_image.manifest.digest
    );
    assert_eq!(
        store.resolve("multi:1").unwrap().digest,
        host_image.manifest.digest
    );
    // Only the chosen platforms' blobs were stored (the index itself is not).
    assert!(!store
        .root()
        .join("blobs/sha256")
        .join(index.digest.hex())
        .exists());

    let missing = ImportOptions {
        tag: None,
        platform: Some(Platform::parse("linux/mips64").unwrap()),
    };
    let err = store.import(&layout, &missing).unwrap_err();
    assert!(matches!(err, ImportError::NoPlatform { .. }), "{err}");
    assert!(err.to_string().contains("linux/mips64"), "{err}");
}

#[test]
fn unnamed_source_is_listed_by_digest_and_tag_names_it() {
    let work = tempfile::tempdir().unwrap();
    let image = simple_image("1");
    let layout = work.path().join("layout");
    layout_with(&layout, &image, None);
    let store = Store::open(&work.path().join("store")).unwrap();
    let imported = store.import(&layout, &ImportOptions::default()).unwrap();
    assert!(imported[0].names.is_empty());
    let listed = store.images().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].names.is_empty());
    assert_eq!(
        store
            .resolve(&image.manifest.digest.to_string())
            .unwrap()
            .digest,
        image.manifest.digest
    );

    let options = ImportOptions {
        tag: Some("given".to_owned()),
        platform: None,
    };
    let imported = store.import(&layout, &options).unwrap();
    assert_eq!(imported[0].names, vec!["given:latest"]);
    let listed = store.images().unwrap();
    assert_eq!(
        listed.len(),
        1,
        "the unnamed entry is replaced by the named one"
    );
    assert_eq!(listed[0].names, vec!["given:latest"]);
}

#[test]
fn tag_rm_and_gc_remove_exactly_the_unreferenced_blobs() {
    let work = tempfile::tempdir().unwrap();
    let one = simple_image("1");
    let two = simple_image("2");
    let store = Store::open(&work.path().join("store")).unwrap();
    for (image, name) in [(&one, "app:1"), (&two, "app:2")] {
        let layout = work.path().join(name.replace(':', "-"));
        layout_with(&layout, image, Some(name));
        store.import(&layout, &ImportOptions::default()).unwrap();
    }
    store.tag("app:1", "app:stable").unwrap();
    assert_eq!(
        store.resolve("app:stable").unwrap().digest,
        one.manifest.digest
    );

    // Removing one of two names keeps the image and every blob.
    let before = blob_names(store.root());
    let report = store.remove(&["app:1".to_owned()]).unwrap();
    assert_eq!(report.untagged, vec!["app:1"]);
    assert!(report.deleted_images.is_empty());
    assert_eq!(blob_names(store.root()), before);

    // Removing the last name removes the blobs only that image used; the shared base stays.
    let report = store.remove(&["app:stable".to_owned()]).unwrap();
    assert_eq!(report.deleted_images, vec![one.manifest.digest.clone()]);
    let two_digests: Vec<Digest> = two.blobs.iter().map(|b| Digest::of(b)).collect();
    assert_eq!(
        blob_names(store.root()),
        hexes(&two_digests.iter().collect::<Vec<_>>())
    );
    assert_eq!(
        report.deleted_blobs, 3,
        "manifest, config and the app layer of image 1"
    );

    // gc removes an unreferenced blob and tmp/ leftovers, and nothing else.
    let stray = b"stray blob";
    std::fs::write(
        store
            .root()
            .join("blobs/sha256")
            .join(Digest::of(stray).hex()),
        stray,
    )
    .unwrap();
    std::fs::write(store.root().join("tmp/import-leftover"), b"partial").unwrap();
    std::fs::create_dir(store.root().join("tmp/.export-dir")).unwrap();
    let fsck = store.fsck().unwrap();
    assert!(fsck.is_clean(), "{:?}", fsck.problems);
    assert_eq!(fsck.unreferenced_blobs, vec![Digest::of(stray)]);
    assert_eq!(fsck.tmp_leftovers.len(), 2);
    let report = store.gc().unwrap();
    assert_eq!(report.blobs_removed, 1);
    assert_eq!(report.blob_bytes_freed, stray.len() as u64);
    assert_eq!(report.tmp_removed, 2);
    assert_eq!(
        blob_names(store.root()),
        hexes(&two_digests.iter().collect::<Vec<_>>())
    );
    assert_eq!(
        std::fs::read_dir(store.root().join("tmp")).unwrap().count(),
        0
    );
    assert!(store.fsck().unwrap().is_clean());

    // Removing by digest removes every name of the image.
    store.tag("app:2", "other").unwrap();
    let report = store.remove(&[two.manifest.digest.to_string()]).unwrap();
    assert_eq!(report.untagged.len(), 2);
    assert!(blob_names(store.root()).is_empty());
    assert!(store.images().unwrap().is_empty());
}

fn imported_store(work: &Path) -> (Store, Built) {
    let image = simple_image("1");
    let layout = work.join("layout");
    layout_with(&layout, &image, Some("app:1"));
    let store = Store::open(&work.join("store")).unwrap();
    store.import(&layout, &ImportOptions::default()).unwrap();
    (store, image)
}

#[test]
fn fsck_detects_a_flipped_byte_in_a_layer() {
    let work = tempfile::tempdir().unwrap();
    let (store, image) = imported_store(work.path());
    let layer = &image.layers[1].0.digest;
    let path = store.root().join("blobs/sha256").join(layer.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let report = store.fsck().unwrap();
    assert!(
        matches!(report.problems.as_slice(), [FsckProblem::CorruptBlob { digest, .. }] if digest == layer),
        "{:?}",
        report.problems
    );
}

#[test]
fn fsck_detects_a_missing_blob() {
    let work = tempfile::tempdir().unwrap();
    let (store, image) = imported_store(work.path());
    std::fs::remove_file(
        store
            .root()
            .join("blobs/sha256")
            .join(image.config.digest.hex()),
    )
    .unwrap();
    let report = store.fsck().unwrap();
    assert!(
        matches!(report.problems.as_slice(), [FsckProblem::MissingBlob { digest, .. }] if *digest == image.config.digest),
        "{:?}",
        report.problems
    );
    assert!(report.problems[0]
        .to_string()
        .contains(&image.config.digest.to_string()));
}

#[test]
fn fsck_detects_a_truncated_manifest() {
    let work = tempfile::tempdir().unwrap();
    let (store, image) = imported_store(work.path());
    let path = store
        .root()
        .join("blobs/sha256")
        .join(image.manifest.digest.hex());
    std::fs::write(
        &path,
        &image.manifest_bytes[..image.manifest_bytes.len() / 2],
    )
    .unwrap();
    let report = store.fsck().unwrap();
    assert!(!report.is_clean());
    assert!(
        report.problems.iter().any(
            |p| matches!(p, FsckProblem::CorruptBlob { digest, .. } if *digest == image.manifest.digest)
        ),
        "{:?}",
        report.problems
    );
}

#[test]
fn fsck_passes_a_clean_store_with_tmp_leftovers() {
    let work = tempfile::tempdir().unwrap();
    let (store, _) = imported_store(work.path());
    std::fs::write(store.root().join("tmp/import-123"), b"half a layer").unwrap();
    let report = store.fsck().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.tmp_leftovers, vec!["import-123"]);
    assert_eq!(report.images_checked, 1);
    assert_eq!(report.blobs_checked, 4);
}

/// Imports `source` into a store that already holds one image, expecting a rejection, and
/// checks `index.json` did not change.
fn assert_rejected(work: &Path, source: &Path, expect: &str) -> ImportError {
    let (store, _) = imported_store(work);
    let index_before = std::fs::read(store.root().join("index.json")).unwrap();
    let err = store.import(source, &ImportOptions::default()).unwrap_err();
    let chain = error_chain(&err);
    assert!(chain.contains(expect), "expected {expect:?} in: {chain}");
    assert_eq!(
        std::fs::read(store.root().join("index.json")).unwrap(),
        index_before
    );
    assert!(store.fsck().unwrap().is_clean());
    err
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[test]
fn import_rejects_a_config_whose_digest_does_not_match() {
    let work = tempfile::tempdir().unwrap();
    let image = simple_image("2");
    let mut config = image.config.clone();
    config.digest = Digest::of(b"something else");
    let bad = build_manifest(
        config,
        image.config_bytes.clone(),
        image
            .layers
            .iter()
            .map(|(d, t)| (d.clone(), common::gzip(t), t.clone()))
            .collect(),
    );
    // The config is stored under the name the manifest claims, with the real content.
    let mut blobs = bad.blobs.clone();
    blobs.retain(|b| *b != image.config_bytes);
    let layout = work.path().join("bad");
    write_layout(&layout, &blobs, &[named(&bad.manifest, "bad")]);
    let claimed = layout
        .join("blobs/sha256")
        .join(Digest::of(b"something else").hex());
    std::fs::write(claimed, &image.config_bytes).unwrap();
    assert_rejected(work.path(), &layout, "has content with digest");
}

#[test]
fn import_rejects_a_config_whose_size_does_not_match() {
    let work = tempfile::tempdir().unwrap();
    let image = simple_image("2");
    let mut config = image.config.clone();
    config.size += 1;
    let bad = build_manifest(
        config,
        image.config_bytes.clone(),
        image
            .layers
            .iter()
            .map(|(d, t)| (d.clone(), common::gzip(t), t.clone()))
            .collect(),
    );
    let layout = work.path().join("bad");
    write_layout(&layout, &bad.blobs, &[named(&bad.manifest, "bad")]);
    let err = assert_rejected(work.path(), &layout, "but its descriptor says");
    assert!(error_chain(&err).contains(&image.config.digest.to_string()));
}

#[test]
fn import_rejects_a_layer_with_an_unknown_media_type() {
    let work = tempfile::tempdir().unwrap();
    let image = simple_image("2");
    let mut layers: Vec<(Descriptor, Vec<u8>, Vec<u8>)> = image
        .layers
        .iter()
        .map(|(d, t)| (d.clone(), common::gzip(t), t.clone()))
        .collect();
    layers[1].0.media_type = "application/x-mystery".to_owned();
    let bad = build_manifest(image.config.clone(), image.config_bytes.clone(), layers);
    let layout = work.path().join("bad");
    write_layout(&layout, &bad.blobs, &[named(&bad.manifest, "bad")]);
    let err = assert_rejected(work.path(), &layout, "application/x-mystery");
    assert!(error_chain(&err).contains(&image.layers[1].0.digest.to_string()));
}

#[test]
fn import_rejects_an_archive_blob_whose_content_does_not_match_its_name() {
    let work = tempfile::tempdir().unwrap();
    let image = simple_image("2");
    let layout = work.path().join("bad");
    layout_with(&layout, &image, Some("bad"));
    let layer = &image.layers[1].0.digest;
    let path = layout.join("blobs/sha256").join(layer.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let archive = tar_dir(&layout, &work.path().join("bad.tar"));
    let err = assert_rejected(work.path(), &archive, "does not match its name");
    assert!(matches!(err, ImportError::MemberMismatch { .. }), "{err}");
    // Directory sources are checked while copying.
    assert_rejected(
        &work.path().join("second"),
        &layout,
        "has content with digest",
    );
}

#[test]
fn concurrent_imports_from_two_threads_both_land() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    let mut sources = Vec::new();
    for version in ["1", "2"] {
        let layout = work.path().join(format!("layout-{version}"));
        layout_with(
            &layout,
            &simple_image(version),
            Some(&format!("app:{version}")),
        );
        sources.push(tar_dir(
            &layout,
            &work.path().join(format!("app-{version}.tar")),
        ));
    }
    let threads: Vec<_> = sources
        .into_iter()
        .map(|source| {
            let root = root.clone();
            std::thread::spawn(move || {
                let store = Store::open(&root).unwrap();
                store.import(&source, &ImportOptions::default()).unwrap()
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let store = Store::open(&root).unwrap();
    let mut names: Vec<String> = store
        .images()
        .unwrap()
        .into_iter()
        .flat_map(|i| i.names)
        .collect();
    names.sort();
    assert_eq!(names, vec!["app:1", "app:2"]);
    assert!(store.fsck().unwrap().is_clean());
}

#[test]
fn unknown_reference_is_an_error_naming_it() {
    let work = tempfile::tempdir().unwrap();
    let (store, _) = imported_store(work.path());
    let err = store.inspect("nope:1").unwrap_err();
    assert!(err.to_string().contains("nope:1"), "{err}");
    assert!(oci::is_unknown_reference(&err));
    let out = work.path().join("out");
    let err = store
        .unpack("nope:1", &out, layer::Options::for_current_user())
        .unwrap_err();
    assert!(oci::is_unknown_reference(&err));
    assert!(!out.exists());
}

#[test]
fn unpack_applies_layers_in_order() {
    let work = tempfile::tempdir().unwrap();
    let (store, _) = imported_store(work.path());
    let out = work.path().join("rootfs");
    std::fs::create_dir(&out).unwrap();
    store
        .unpack("app:1", &out, layer::Options::for_current_user())
        .unwrap();
    assert_eq!(std::fs::read_to_string(out.join("bin/app")).unwrap(), "1");
    assert_eq!(
        std::fs::read_to_string(out.join("etc/os-release")).unwrap(),
        "ID=test\n"
    );
}

#[test]
fn unpack_with_a_wrong_diff_id_leaves_the_target_as_it_was() {
    let work = tempfile::tempdir().unwrap();
    let image = simple_image("1");
    // A config whose diff_id for the app layer is wrong.
    let mut config: serde_json::Value = serde_json::from_slice(&image.config_bytes).unwrap();
    config["rootfs"]["diff_ids"][1] = json!(Digest::of(b"not the layer").to_string());
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_descriptor = Descriptor::new(
        MEDIA_TYPE_OCI_CONFIG,
        Digest::of(&config_bytes),
        config_bytes.len() as u64,
    );
    let bad = build_manifest(
        config_descriptor,
        config_bytes,
        image
            .layers
            .iter()
            .map(|(d, t)| (d.clone(), common::gzip(t), t.clone()))
            .collect(),
    );
    let layout = work.path().join("layout");
    write_layout(&layout, &bad.blobs, &[named(&bad.manifest, "bad")]);
    let store = Store::open(&work.path().join("store")).unwrap();
    store.import(&layout, &ImportOptions::default()).unwrap();
    let out = work.path().join("rootfs");
    let err = store
        .unpack("bad", &out, layer::Options::for_current_user())
        .unwrap_err();
    assert!(matches!(err, oci::UnpackError::DiffId { .. }), "{err}");
    assert!(!out.exists());
    let names: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "staging left behind: {names:?}");
}

#[test]
fn unpack_refuses_a_non_empty_target() {
    let work = tempfile::tempdir().unwrap();
    let (store, _) = imported_store(work.path());
    let out = work.path().join("rootfs");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep"), b"mine").unwrap();
    let err = store
        .unpack("app:1", &out, layer::Options::for_current_user())
        .unwrap_err();
    assert!(err.to_string().contains("not an empty directory"), "{err}");
    assert_eq!(std::fs::read(out.join("keep")).unwrap(), b"mine");
}
