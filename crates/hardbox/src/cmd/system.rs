//! `hardbox system ...`: store maintenance, printing what `oci::Store::gc` and `fsck` report.

use std::path::PathBuf;

use anyhow::Result;
use oci::Store;

use crate::cli::SystemCommand;
use crate::cmd::image::human_size;
use crate::{exit, output, settings};

pub fn run(root: Option<PathBuf>, command: SystemCommand) -> Result<u8> {
    let root = settings::store_root(root)?;
    let store = Store::open(&root)?;
    match command {
        SystemCommand::Gc(flags) => {
            let report = store.gc()?;
            let rootfs = sandbox::rootfs::sweep(&store)?;
            // Cgroups exist only where this user may create them; elsewhere there is nothing
            // to sweep.
            let cgroups = sandbox::launch::sweep_cgroups().unwrap_or_default();
            if flags.json {
                output::json(&serde_json::json!({
                    "blobs_removed": report.blobs_removed,
                    "blob_bytes_freed": report.blob_bytes_freed,
                    "tmp_removed": report.tmp_removed,
                    "tmp_bytes_freed": report.tmp_bytes_freed,
                    "abandoned_sandbox_directories": rootfs.abandoned,
                    "unused_image_rootfs": rootfs.unused_images,
                    "abandoned_cgroups": cgroups.removed,
                }))?;
            } else {
                output::line(&format!(
                    "removed {} unreferenced blobs ({}) and {} leftovers in tmp/ ({})",
                    report.blobs_removed,
                    human_size(report.blob_bytes_freed),
                    report.tmp_removed,
                    human_size(report.tmp_bytes_freed)
                ))?;
                output::line(&format!(
                    "removed {} directories and {} cgroups of killed sandboxes, and {} unpacked \
                     images no longer in the store",
                    rootfs.abandoned.len(),
                    cgroups.removed.len(),
                    rootfs.unused_images.len()
                ))?;
            }
            for (path, reason) in &cgroups.failed {
                output::warn(&format!(
                    "could not remove cgroup {}: {reason}",
                    path.display()
                ));
            }
            Ok(exit::OK)
        }
        SystemCommand::Fsck(flags) => {
            let report = store.fsck()?;
            if flags.json {
                output::json(&report)?;
            } else {
                for problem in &report.problems {
                    output::line(&format!("damage: {problem}"))?;
                }
                for digest in &report.unreferenced_blobs {
                    output::info(&format!("info: unreferenced blob {digest}"));
                }
                for name in &report.tmp_leftovers {
                    output::info(&format!("info: leftover tmp/{name}"));
                }
                for name in &report.stray_files {
                    output::info(&format!("info: stray file blobs/sha256/{name}"));
                }
                if !report.unreferenced_blobs.is_empty() || !report.tmp_leftovers.is_empty() {
                    output::info(
                        "info: 'hardbox system gc' removes unreferenced blobs and leftovers",
                    );
                }
                output::line(&format!(
                    "checked {} blobs and {} images: {}",
                    report.blobs_checked,
                    report.images_checked,
                    if report.is_clean() {
                        "no damage".to_owned()
                    } else {
                        format!("{} problems", report.problems.len())
                    }
                ))?;
            }
            if report.is_clean() {
                Ok(exit::OK)
            } else {
                output::info(
                    "hint: remove the damaged images with 'hardbox image rm' and import them again",
                );
                Ok(exit::ERROR)
            }
        }
    }
}
