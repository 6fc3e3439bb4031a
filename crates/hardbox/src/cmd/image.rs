//! `hardbox image ...`: thin wrappers over `oci::Store`; this module only resolves arguments and
//! prints.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use oci::spec::Platform;
use oci::{ExportFormat, ImportError, ImportOptions, Store, UnpackReport};

use crate::cli::{self, ImageCommand, LimitArgs};
use crate::{exit, output, settings};

const LS_HINT: &str = "run 'hardbox image ls' to see the images in the store";
const UNPACK_ONE_HINT: &str = "pick one platform with --platform, or import without --unpack and \
                               then run 'hardbox image unpack' for the image you want";

pub fn run(root: Option<PathBuf>, command: ImageCommand) -> Result<u8> {
    let root = settings::store_root(root)?;
    let store = Store::open(&root)?;
    match command {
        ImageCommand::Import(args) => import(&store, args),
        ImageCommand::Export(args) => {
            let format = match args.format {
                cli::ExportFormat::OciDir => ExportFormat::OciDir,
                cli::ExportFormat::OciArchive => ExportFormat::OciArchive,
                cli::ExportFormat::DockerArchive => ExportFormat::DockerArchive,
            };
            store
                .export(&args.reference, format, &args.output)
                .map_err(with_hint)?;
            output::info(&format!(
                "exported {} to {}",
                args.reference,
                args.output.display()
            ));
            Ok(exit::OK)
        }
        ImageCommand::Ls(flags) => list(&store, flags.json),
        ImageCommand::Inspect(args) => inspect(&store, &args.reference, args.json),
        ImageCommand::Tag(args) => {
            let (digest, name) = store.tag(&args.source, &args.target).map_err(with_hint)?;
            output::info(&format!("tagged {} as {name}", digest.short()));
            Ok(exit::OK)
        }
        ImageCommand::Rm(args) => {
            let report = store.remove(&args.references).map_err(with_hint)?;
            for name in &report.untagged {
                output::line(&format!("untagged: {name}"))?;
            }
            for digest in &report.deleted_images {
                output::line(&format!("deleted: {digest}"))?;
            }
            output::info(&format!(
                "removed {} blobs ({})",
                report.deleted_blobs,
                human_size(report.bytes_freed)
            ));
            Ok(exit::OK)
        }
        ImageCommand::Unpack(args) => unpack(&store, &args.reference, args.dir, &args.limits),
    }
}

/// Adds the `image ls` hint to errors about unknown references.
fn with_hint<E: std::error::Error + Send + Sync + 'static>(err: E) -> anyhow::Error {
    let unknown = oci::is_unknown_reference(&err);
    let err = anyhow::Error::new(err);
    if unknown {
        output::hinted(format!("{err:#}"), LS_HINT)
    } else {
        err
    }
}

fn import(store: &Store, args: cli::ImportArgs) -> Result<u8> {
    let platform = args.platform.as_deref().map(Platform::parse).transpose()?;
    let options = ImportOptions {
        tag: args.tag,
        platform,
    };
    let context = || format!("failed to import {}", args.source.display());
    let (imported, unpacked) = match &args.unpack {
        None => (
            store.import(&args.source, &options).with_context(context)?,
            None,
        ),
        Some(dir) => {
            let (imported, report) = store
                .import_unpack(&args.source, &options, dir, unpack_options(&args.limits))
                .map_err(|err| {
                    let needs_one = matches!(err, ImportError::UnpackNeedsOneImage { .. });
                    let err = anyhow::Error::new(err).context(context());
                    if needs_one {
                        output::hinted(format!("{err:#}"), UNPACK_ONE_HINT)
                    } else {
                        err
                    }
                })?;
            (imported, Some((dir, report)))
        }
    };
    if let Some((dir, report)) = &unpacked {
        print_unpacked(report, dir);
    }
    if args.json {
        output::json(&imported)?;
    } else {
        for image in &imported {
            let names = if image.names.is_empty() {
                "<none>".to_owned()
            } else {
                image.names.join(", ")
            };
            output::line(&format!("{} {names}", image.digest))?;
        }
    }
    Ok(exit::OK)
}

fn list(store: &Store, json: bool) -> Result<u8> {
    let images = store.images()?;
    for image in &images {
        if let Some(damage) = &image.damaged {
            output::warn(&format!(
                "image {} is damaged: {damage} (run 'hardbox system fsck')",
                image.digest.short()
            ));
        }
    }
    if json {
        output::json(&images)?;
        return Ok(exit::OK);
    }
    let mut rows = Vec::new();
    for image in &images {
        let names: Vec<(String, String)> = if image.names.is_empty() {
            vec![("<none>".to_owned(), "<none>".to_owned())]
        } else {
            image
                .names
                .iter()
                .map(|n| {
                    let (name, tag) = oci::split_name(n);
                    (name.to_owned(), tag.to_owned())
                })
                .collect()
        };
        for (name, tag) in names {
            rows.push(vec![
                name,
                tag,
                image.digest.short().to_owned(),
                if image.damaged.is_some() {
                    "damaged".to_owned()
                } else {
                    image.created.clone().unwrap_or_else(|| "-".to_owned())
                },
                human_size(image.size),
            ]);
        }
    }
    output::table(&["NAME", "TAG", "DIGEST", "CREATED", "SIZE"], &rows)?;
    Ok(exit::OK)
}

fn inspect(store: &Store, reference: &str, json: bool) -> Result<u8> {
    let details = store.inspect(reference).map_err(with_hint)?;
    if json {
        output::json(&details)?;
        return Ok(exit::OK);
    }
    let list = |items: &[String]| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            serde_json::to_string(items).unwrap_or_default()
        }
    };
    let mut text = vec![
        format!("Digest:      {}", details.digest),
        format!("Media type:  {}", details.media_type),
        format!(
            "Names:       {}",
            if details.names.is_empty() {
                "-".to_owned()
            } else {
                details.names.join(", ")
            }
        ),
        format!("Platform:    {}", details.platform),
        format!("Created:     {}", details.created.as_deref().unwrap_or("-")),
        format!(
            "Size:        {} ({} bytes)",
            human_size(details.size),
            details.size
        ),
        format!("Config:      {}", details.config_digest),
        format!(
            "  User:        {}",
            details.config.user.as_deref().unwrap_or("-")
        ),
        format!(
            "  WorkingDir:  {}",
            details.config.working_dir.as_deref().unwrap_or("-")
        ),
        format!("  Entrypoint:  {}", list(&details.config.entrypoint)),
        format!("  Cmd:         {}", list(&details.config.cmd)),
        "  Env:".to_owned(),
    ];
    text.extend(details.config.env.iter().map(|e| format!("    {e}")));
    text.push(format!("Layers:      {}", details.layers.len()));
    for layer in &details.layers {
        text.push(format!(
            "  {}  {}  {}\n    diff_id {}",
            layer.digest,
            human_size(layer.size),
            layer.media_type,
            layer.diff_id
        ));
    }
    output::line(&text.join("\n"))?;
    Ok(exit::OK)
}

/// How `image unpack` and `image import --unpack` apply layers: owners preserved and devices
/// created as root, owners recorded and devices skipped otherwise; the limits given.
fn unpack_options(limits: &LimitArgs) -> layer::Options {
    let mut options = layer::Options::for_current_user();
    options.limits = layer::Limits {
        max_bytes: limits.max_unpack_bytes,
        max_entries: limits.max_unpack_entries,
    };
    options
}

fn unpack(store: &Store, reference: &str, dir: PathBuf, limits: &LimitArgs) -> Result<u8> {
    let report = store
        .unpack(reference, &dir, unpack_options(limits))
        .map_err(with_hint)?;
    print_unpacked(&report, &dir);
    Ok(exit::OK)
}

fn print_unpacked(report: &UnpackReport, dir: &Path) {
    for warning in &report.warnings {
        output::warn(&warning.to_string());
    }
    output::info(&format!(
        "unpacked {} ({} layers, {} entries, {}) into {}",
        report.digest.short(),
        report.layers,
        report.entries,
        human_size(report.bytes),
        dir.display()
    ));
}

/// Bytes in the units `docker images` uses (powers of 1000).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}
