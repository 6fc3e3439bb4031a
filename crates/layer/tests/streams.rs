//! Compressed and damaged layer streams: digests, and clean errors for corrupt input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on unexpected values"
)]

mod common;

use std::fs;

use common::*;
use layer::{Applier, Compression, LayerError, LayerStats};
use types::Digest;

fn sample() -> Tar {
    Tar::new()
        .dir("d/")
        .file("d/big", vec![7u8; 300_000])
        .file("d/small", "small")
}

fn apply_blob(blob: &[u8], compression: Compression) -> (Sandbox, Result<LayerStats, LayerError>) {
    let sandbox = Sandbox::new();
    let mut applier = Applier::new(&sandbox.root, options()).expect("open");
    let result = applier.apply(&mut &blob[..], &digest_of(blob), compression);
    (sandbox, result)
}

#[test]
fn stats_digests_cover_blob_and_uncompressed_stream() {
    let tar = sample();
    let plain = tar.bytes();
    // Trailing padding after the end-of-archive blocks belongs to the blob.
    let mut padded = plain.clone();
    padded.resize(padded.len() + 8192, 0);
    for (blob, compression, diff_id) in [
        (plain.clone(), Compression::None, Digest::of(&plain)),
        (padded.clone(), Compression::None, Digest::of(&padded)),
        (tar.gzip(), Compression::Gzip, Digest::of(&plain)),
        (tar.zstd(), Compression::Zstd, Digest::of(&plain)),
    ] {
        let (sandbox, result) = apply_blob(&blob, compression);
        let stats = result.expect("apply");
        assert_eq!(stats.digest, Digest::of(&blob), "{compression:?}");
        assert_eq!(stats.diff_id, diff_id, "{compression:?}");
        assert_eq!(stats.entries, 3);
        assert_eq!(stats.bytes, 300_005);
        assert_eq!(fs::read(sandbox.path("d/big")).expect("big").len(), 300_000);
    }
}

fn check_corrupt(blob: &[u8], compression: Compression, name: &str) {
    let (sandbox, result) = apply_blob(blob, compression);
    let err = result.expect_err("corrupt stream must fail");
    assert_eq!(
        err.to_string(),
        format!(
            "failed to apply layer {}: corrupt or truncated {name} stream",
            digest_of(blob)
        )
    );
    sandbox.assert_outside_untouched();
}

#[test]
fn truncated_and_corrupt_gzip_streams_fail_cleanly() {
    let gzip = sample().gzip();
    check_corrupt(&gzip[..gzip.len() / 2], Compression::Gzip, "gzip");
    check_corrupt(&gzip[..gzip.len() - 4], Compression::Gzip, "gzip");
    let mut corrupt = gzip.clone();
    let middle = corrupt.len() / 2;
    for byte in &mut corrupt[middle..middle + 16] {
        *byte ^= 0x5a;
    }
    check_corrupt(&corrupt, Compression::Gzip, "gzip");
    check_corrupt(b"not gzip at all", Compression::Gzip, "gzip");
}

#[test]
fn truncated_and_corrupt_zstd_streams_fail_cleanly() {
    let zstd = sample().zstd();
    check_corrupt(&zstd[..zstd.len() / 2], Compression::Zstd, "zstd");
    check_corrupt(&zstd[..zstd.len() - 1], Compression::Zstd, "zstd");
    let mut corrupt = zstd.clone();
    let middle = corrupt.len() / 2;
    for byte in &mut corrupt[middle..middle + 16] {
        *byte ^= 0x5a;
    }
    check_corrupt(&corrupt, Compression::Zstd, "zstd");
    check_corrupt(b"not zstd at all", Compression::Zstd, "zstd");
}

#[test]
fn truncated_tar_fails_naming_the_last_entry() {
    let plain = Tar::new()
        .file("first", "1")
        .file("second", vec![1u8; 4096])
        .bytes();
    let cut = &plain[..512 * 3 + 100];
    let (sandbox, result) = apply_blob(cut, Compression::None);
    assert_eq!(
        result.expect_err("truncated").to_string(),
        format!(
            "failed to apply layer {}: tar stream is truncated after entry \"first\"",
            digest_of(cut)
        )
    );
    sandbox.assert_outside_untouched();
}

#[test]
fn bad_header_checksum_is_an_error() {
    let mut plain = Tar::new().file("first", "1").file("second", "2").bytes();
    plain[1024 + 10] ^= 1;
    let (_sandbox, result) = apply_blob(&plain, Compression::None);
    assert_eq!(
        result.expect_err("checksum").to_string(),
        format!(
            "failed to apply layer {}: tar header after entry \"first\" has a bad checksum",
            digest_of(&plain)
        )
    );
}

#[test]
fn oversized_pax_header_is_refused_before_reading_it() {
    // Claims a 1 GiB extended header; only the header block is present.
    let mut header = tar::Header::new_ustar();
    header.set_path("PaxHeader").expect("path");
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_size(1 << 30);
    header.set_cksum();
    let blob = header.as_bytes().to_vec();
    let (_sandbox, result) = apply_blob(&blob, Compression::None);
    assert_eq!(
        result.expect_err("too large").to_string(),
        format!(
            "failed to apply layer {}: extended tar header of 1073741824 bytes after entry \"\" exceeds the limit of 1048576 bytes",
            digest_of(&blob)
        )
    );
}

#[test]
fn decompression_bomb_after_end_of_archive_is_refused() {
    let mut plain = Tar::new().file("f", "x").bytes();
    plain.resize(plain.len() + (17 << 20), 0);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &plain).unwrap();
    let blob = encoder.finish().unwrap();
    let (_sandbox, result) = apply_blob(&blob, Compression::Gzip);
    assert_eq!(
        result.expect_err("bomb").to_string(),
        format!(
            "failed to apply layer {}: more than 16777216 bytes follow the end of the tar archive",
            digest_of(&blob)
        )
    );
}

/// A writer that accepts `room` bytes, then fails.
struct Full {
    room: usize,
}

impl std::io::Write for Full {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.room == 0 {
            return Err(std::io::Error::other("device full"));
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn apply_and_copy_copies_exactly_the_blob_it_applied_and_hashed() {
    let tar = Tar::new()
        .dir("d/")
        .file("d/big", vec![9u8; 3 << 20])
        .file("d/small", "small");
    let plain = tar.bytes();
    let mut padded = plain.clone();
    padded.resize(padded.len() + 8192, 0);
    for (blob, compression, diff_id) in [
        (plain.clone(), Compression::None, Digest::of(&plain)),
        (padded.clone(), Compression::None, Digest::of(&padded)),
        (tar.gzip(), Compression::Gzip, Digest::of(&plain)),
        (tar.zstd(), Compression::Zstd, Digest::of(&plain)),
    ] {
        let sandbox = Sandbox::new();
        let mut applier = Applier::new(&sandbox.root, options()).expect("open");
        let mut copy = Vec::new();
        let stats = applier
            .apply_and_copy(&mut &blob[..], &mut copy, &digest_of(&blob), compression)
            .expect("apply");
        assert!(
            copy == blob,
            "{compression:?}: the copy differs from the blob"
        );
        assert_eq!(stats.digest, Digest::of(&blob), "{compression:?}");
        assert_eq!(stats.blob_size, blob.len() as u64, "{compression:?}");
        assert_eq!(stats.diff_id, diff_id, "{compression:?}");
        assert_eq!(fs::read(sandbox.path("d/big")).expect("big").len(), 3 << 20);
    }
}

#[test]
fn a_failed_copy_is_reported_as_such_naming_the_layer() {
    let tar = Tar::new().file("big", vec![3u8; 5 << 20]);
    for (blob, compression) in [
        (tar.bytes(), Compression::None),
        (tar.gzip(), Compression::Gzip),
    ] {
        let sandbox = Sandbox::new();
        let mut applier = Applier::new(&sandbox.root, options()).expect("open");
        let err = applier
            .apply_and_copy(
                &mut &blob[..],
                &mut Full { room: 4096 },
                &digest_of(&blob),
                compression,
            )
            .expect_err("the copy cannot be written");
        assert!(matches!(err, LayerError::CopyBlob { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "failed to apply layer {}: failed to write a copy of the layer blob",
                digest_of(&blob)
            )
        );
        assert_eq!(
            std::error::Error::source(&err).map(ToString::to_string),
            Some("device full".to_owned())
        );
        sandbox.assert_outside_untouched();
    }
}
