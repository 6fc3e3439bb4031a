#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! `oci::write`: images added from blobs, and OCI 1.1 referrers through gc, fsck, rm and export,
//! with skopeo and umoci as oracles of the export.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use oci::spec::{
    Descriptor, ImageConfig, Manifest, RootFs, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_MANIFEST,
};
use oci::{ExportFormat, Store, WriteError};
use types::Digest;

fn layer() -> (Vec<u8>, Digest) {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(6);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mtime(0);
    builder
        .append_data(&mut header, "etc/hello", &b"hello\n"[..])
        .unwrap();
    let tar = builder.into_inner().unwrap();
    let diff_id = Digest::of(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// Adds a one-layer image tagged `tag` and returns its manifest descriptor.
fn add_image(store: &Store, tag: &str) -> Descriptor {
    let writer = store.writer().unwrap();
    let (blob, diff_id) = layer();
    let layer = writer
        .put_blob_bytes(MEDIA_TYPE_OCI_LAYER_GZIP, &blob)
        .unwrap();
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![diff_id],
        },
        ..ImageConfig::default()
    };
    let config = writer
        .put_blob_bytes(MEDIA_TYPE_OCI_CONFIG, &serde_json::to_vec(&config).unwrap())
        .unwrap();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_MANIFEST.into()),
        artifact_type: None,
        config,
        layers: vec![layer],
        subject: None,
        annotations: BTreeMap::new(),
    };
    writer.put_image(&manifest, &[tag.to_owned()]).unwrap()
}

fn add_sbom(store: &Store, subject: &Descriptor) -> Descriptor {
    let writer = store.writer().unwrap();
    let sbom = writer
        .put_blob_bytes("application/spdx+json", br#"{"spdxVersion":"SPDX-2.3"}"#)
        .unwrap();
    let annotations = BTreeMap::from([(
        "org.opencontainers.image.created".to_owned(),
        "1970-01-01T00:00:00Z".to_owned(),
    )]);
    writer
        .put_referrer(subject, "application/spdx+json", &[sbom], &annotations)
        .unwrap()
}

fn blob_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .count()
}

#[test]
fn put_image_tags_atomically_and_refuses_missing_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = add_image(&store, "hello");
    assert_eq!(store.resolve("hello:latest").unwrap().digest, image.digest);
    assert!(store.fsck().unwrap().is_clean());

    let writer = store.writer().unwrap();
    let mut manifest: Manifest = serde_json::from_slice(
        &std::fs::read(dir.path().join("blobs/sha256").join(image.digest.hex())).unwrap(),
    )
    .unwrap();
    manifest.layers[0].digest = Digest::of(b"absent");
    let err = writer.put_image(&manifest, &["other".into()]).unwrap_err();
    assert!(
        matches!(err, WriteError::Blob(oci::BlobError::Missing { .. })),
        "{err}"
    );
    drop(writer);
    assert!(store.resolve("other").is_err());
    assert_eq!(store.images().unwrap().len(), 1);
}

#[test]
fn referrers_live_and_die_with_their_subject() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = add_image(&store, "app:1");
    let sbom = add_sbom(&store, &image);
    // A signature of the SBOM: a referrer of a referrer.
    let writer = store.writer().unwrap();
    let signature = writer
        .put_blob_bytes("application/vnd.dsse.envelope.v1+json", b"{}\n")
        .unwrap();
    let signed = writer
        .put_referrer(
            &sbom,
            "application/vnd.dsse.envelope.v1+json",
            &[signature],
            &BTreeMap::new(),
        )
        .unwrap();
    drop(writer);

    let listed = store.referrers(&image.digest).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].descriptor.digest, sbom.digest);
    assert_eq!(listed[0].artifact_type, "application/spdx+json");
    assert_eq!(
        store.referrers(&sbom.digest).unwrap()[0].descriptor.digest,
        signed.digest
    );
    // Referrers are not images.
    assert_eq!(store.images().unwrap().len(), 1);
    assert!(store.resolve(&sbom.digest.to_string()).is_err());

    let report = store.fsck().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.referrers_checked, 2);
    assert!(report.unreferenced_blobs.is_empty(), "{report:?}");

    let before = blob_count(dir.path());
    let gc = store.gc().unwrap();
    assert_eq!((gc.blobs_removed, gc.referrers_removed), (0, 0));
    assert_eq!(blob_count(dir.path()), before);

    // Removing the image removes its referrers and all their blobs.
    let removed = store.remove(&["app:1".to_owned()]).unwrap();
    assert_eq!(removed.deleted_images, vec![image.digest.clone()]);
    assert_eq!(blob_count(dir.path()), 0, "{removed:?}");
    assert!(store.referrers(&image.digest).unwrap().is_empty());
    assert!(store.fsck().unwrap().is_clean());
}

#[test]
fn gc_drops_referrers_whose_subject_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = add_image(&store, "app:1");
    add_sbom(&store, &image);
    // index.json as an older hardbox would leave it: the image gone, its referrer still listed.
    let path = dir.path().join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .retain(|d| d.get("artifactType").is_some());
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
    let report = store.fsck().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.dangling_referrers.len(), 1);

    let gc = store.gc().unwrap();
    assert_eq!(gc.referrers_removed, 1);
    assert_eq!(blob_count(dir.path()), 0);
    assert!(store.fsck().unwrap().is_clean());
}

#[test]
fn export_carries_referrers_and_peers_accept_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let image = add_image(&store, "app:1");
    let sbom = add_sbom(&store, &image);
    let out = dir.path().join("layout");
    store.export("app:1", ExportFormat::OciDir, &out).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    assert_eq!(entries[1]["digest"], sbom.digest.to_string());
    assert_eq!(entries[1]["artifactType"], "application/spdx+json");
    assert!(out.join("blobs/sha256").join(sbom.digest.hex()).is_file());

    let skopeo = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:app:1", out.display()))
        .output()
        .unwrap();
    assert!(skopeo.status.success(), "{skopeo:?}");
    let bundle = dir.path().join("bundle");
    let umoci = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:app:1", out.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(umoci.status.success(), "{umoci:?}");
    assert_eq!(
        std::fs::read(bundle.join("rootfs/etc/hello")).unwrap(),
        b"hello\n"
    );

    // The export imports back, referrers skipped.
    let again = Store::open(&dir.path().join("again")).unwrap();
    again.import(&out, &oci::ImportOptions::default()).unwrap();
    assert_eq!(again.images().unwrap().len(), 1);
}
