//! `hardbox sbom` and `hardbox verify`: an image's SBOM, and the check of its signed
//! attestations, done by `build::pipeline`; printed here.

use std::path::PathBuf;

use anyhow::{Context, Result};
use build::pipeline::{self, PipelineError, SbomFormat};
use oci::Store;

use crate::cli::{SbomArgs, SbomFormatArg, VerifyArgs};
use crate::{exit, output, settings};

const NO_ATTESTATIONS_HINT: &str =
    "build the image with 'hardbox build SPEC --sign-key KEY' to attach signed attestations";

pub fn sbom(root: Option<PathBuf>, args: SbomArgs) -> Result<u8> {
    let root = settings::store_root(root)?;
    let store = Store::open(&root)?;
    let format = match args.format {
        SbomFormatArg::SpdxJson => SbomFormat::Spdx,
        SbomFormatArg::CyclonedxJson => SbomFormat::CycloneDx,
    };
    let document = pipeline::sbom(&store, &args.image, format)
        .with_context(|| format!("failed to get the SBOM of {}", args.image))?;
    if document.attached.is_none() {
        output::info(&format!(
            "{} has no attached {} document; made one from its dpkg database",
            args.image,
            format.name()
        ));
    }
    match &args.output {
        Some(path) => {
            fsutil::write_atomic(path, &document.bytes)
                .with_context(|| format!("failed to write {}", path.display()))?;
            output::info(&format!("wrote {}", path.display()));
        }
        None => {
            let text = String::from_utf8_lossy(&document.bytes);
            output::line(text.trim_end())?;
        }
    }
    Ok(exit::OK)
}

pub fn verify(root: Option<PathBuf>, args: VerifyArgs) -> Result<u8> {
    let mut keys = Vec::with_capacity(args.key.len());
    for path in &args.key {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read the public key {}", path.display()))?;
        keys.push(
            attest::PublicKey::from_pem(&pem)
                .with_context(|| format!("{} is not a public key", path.display()))?,
        );
    }
    let root = settings::store_root(root)?;
    let store = Store::open(&root)?;
    let report = match pipeline::verify(&store, &args.image, &keys) {
        Ok(report) => report,
        Err(err @ PipelineError::NoAttestations { .. }) => {
            return Err(output::hinted(err.to_string(), NO_ATTESTATIONS_HINT));
        }
        Err(err) => {
            return Err(anyhow::Error::new(err))
                .with_context(|| format!("failed to verify {}", args.image))
        }
    };
    if args.json {
        output::json(&serde_json::json!({
            "image": report.image,
            "verified": report.passed(),
            "provenance": report.provenance,
            "checks": report.checks,
        }))?;
    } else {
        let mut lines = Vec::new();
        for check in &report.checks {
            match &check.problem {
                None => lines.push(format!("ok      {} {}", check.what, check.referrer)),
                Some(problem) => lines.push(format!(
                    "FAILED  {} {}: {problem}",
                    check.what, check.referrer
                )),
            }
        }
        if !report.provenance {
            lines.push(format!(
                "FAILED  no verified provenance names {}",
                report.image
            ));
        }
        lines.push(if report.passed() {
            format!("verified {} with {} key(s)", report.image, keys.len())
        } else {
            format!("{} did NOT verify", report.image)
        });
        output::line(&lines.join("\n"))?;
    }
    if report.passed() {
        Ok(exit::OK)
    } else {
        let failed: Vec<String> = report
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{} {}", c.what, c.referrer.short()))
            .collect();
        output::error(&anyhow::anyhow!(
            "{} did not verify: {}",
            args.image,
            if failed.is_empty() {
                "no provenance".to_owned()
            } else {
                failed.join(", ")
            }
        ));
        Ok(exit::ERROR)
    }
}
