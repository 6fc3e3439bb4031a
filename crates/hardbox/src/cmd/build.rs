//! `hardbox build` and `hardbox lock`: flags, environment and the store root resolved into
//! `build::pipeline` settings; the pipeline does the work; this module prints what it did.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use build::harden::Reason;
use build::pipeline::{self, BuildOutcome, EpochSource, Event, PipelineError, Settings};
use oci::spec::Platform;
use oci::Store;

use crate::cli::{BuildArgs, LockArgs, PackageSourceArgs};
use crate::cmd::image::human_size;
use crate::{exit, output, settings};

const LOCK_HINT: &str =
    "run 'hardbox lock SPEC' to resolve the spec again and rewrite its lockfile";

/// The pipeline settings for `spec`: the store's cache, the host's apt configuration, the
/// caller's `SOURCE_DATE_EPOCH` (flag, else environment) and a progress line on a terminal
/// (with `HARDBOX_TIMINGS` set: when each step starts, one line each, for benchmarks).
fn resolve_settings(
    root: &Path,
    spec: &Path,
    sources: &PackageSourceArgs,
    epoch_flag: Option<u64>,
) -> Result<Settings> {
    let mut settings = Settings::new(spec, root.join("cache"));
    settings.offline = sources.offline;
    settings.platform = sources
        .platform
        .as_deref()
        .map(Platform::parse)
        .transpose()
        .context("invalid --platform")?;
    settings.source_date_epoch = match epoch_flag {
        Some(epoch) => Some(epoch),
        None => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(text) if !text.trim().is_empty() => {
                Some(text.trim().parse().with_context(|| {
                    format!("SOURCE_DATE_EPOCH={text:?} is not a number of seconds")
                })?)
            }
            _ => None,
        },
    };
    settings.now = SystemTime::now();
    if std::env::var_os("HARDBOX_TIMINGS").is_some() {
        let start = Instant::now();
        settings.progress = Some(Arc::new(move |event| {
            if let Event::Step(step) = event {
                let _ = writeln!(
                    std::io::stderr(),
                    "{:>6} ms {step}",
                    start.elapsed().as_millis()
                );
            }
        }));
    } else if std::io::stderr().is_terminal() {
        let line = Arc::new(ProgressLine::default());
        settings.progress = Some(Arc::new(move |event| line.event(event)));
    }
    Ok(settings)
}

/// Says what failed (unless the error names the spec already), with a hint where relocking
/// fixes it.
fn failed(action: &str, spec: &Path, err: PipelineError) -> anyhow::Error {
    let stale = err.is_stale_lock();
    let mut err = if err.names_spec() {
        anyhow::Error::new(err)
    } else {
        anyhow::Error::new(err).context(format!("failed to {action} {}", spec.display()))
    };
    if stale {
        err = output::hinted(format!("{err:#}"), LOCK_HINT);
    }
    err
}

pub fn build(root: Option<PathBuf>, args: BuildArgs) -> Result<u8> {
    let root = settings::store_root(root)?;
    let store = Store::open(&root)?;
    let settings = resolve_settings(&root, &args.spec, &args.sources, args.source_date_epoch)?;
    // The key is read before anything is fetched or stored.
    let sign_key = args
        .sign_key
        .as_deref()
        .map(|path| -> Result<Arc<attest::Key>> {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read the signing key {}", path.display()))?;
            let key = attest::Key::from_pem(&pem)
                .with_context(|| format!("{} is not a signing key", path.display()))?;
            Ok(Arc::new(key))
        })
        .transpose()?;
    let locked = args
        .locked
        .map(|path| path.unwrap_or_else(|| pipeline::default_lock_path(&args.spec)));
    let request = pipeline::BuildRequest {
        settings: settings.clone(),
        locked,
        tags: (!args.tags.is_empty()).then_some(args.tags),
        sign_key,
    };
    let outcome = pipeline::build(&store, &request);
    clear_progress(&settings);
    let outcome = outcome.map_err(|err| failed("build", &args.spec, err))?;
    for warning in &outcome.warnings {
        output::warn(warning);
    }
    if outcome.source_date_epoch_from == EpochSource::Default {
        output::warn(
            "no Release file has a Date: SOURCE_DATE_EPOCH is 0 (set dates in the spec, or pass \
             --source-date-epoch)",
        );
    }
    if let Some(source) = settings.source_date_epoch {
        if outcome.source_date_epoch_from == EpochSource::Spec
            && source != outcome.source_date_epoch
        {
            output::warn(&format!(
                "SOURCE_DATE_EPOCH {source} not used: the spec's dates set {}",
                outcome.source_date_epoch
            ));
        }
    }
    if args.json {
        output::json(&outcome)?;
    } else {
        print_summary(&outcome)?;
    }
    Ok(exit::OK)
}

pub fn lock(root: Option<PathBuf>, args: LockArgs) -> Result<u8> {
    let root = settings::store_root(root)?;
    // The download cache lives in the store root.
    Store::open(&root)?;
    let settings = resolve_settings(&root, &args.spec, &args.sources, None)?;
    let outcome = pipeline::lock(&settings, args.output.as_deref());
    clear_progress(&settings);
    let outcome = outcome.map_err(|err| failed("lock", &args.spec, err))?;
    for warning in &outcome.warnings {
        output::warn(warning);
    }
    output::line(&format!(
        "wrote {} ({} packages from {} repositories)",
        outcome.path.display(),
        outcome.lock.packages.len(),
        outcome.lock.repositories.len()
    ))?;
    Ok(exit::OK)
}

fn print_summary(outcome: &BuildOutcome) -> Result<()> {
    let epoch_from = match outcome.source_date_epoch_from {
        EpochSource::Spec => "the spec's dates",
        EpochSource::Caller => "the caller",
        EpochSource::Release => "the newest Release date",
        EpochSource::Default => "no date found",
    };
    let mut lines = vec![
        format!(
            "built {} {}",
            outcome.manifest.digest,
            if outcome.tags.is_empty() {
                "<none>".to_owned()
            } else {
                outcome.tags.join(", ")
            }
        ),
        format!(
            "  {} packages, {} layer(s), {} compressed, {}, SOURCE_DATE_EPOCH {} ({epoch_from})",
            outcome.packages.len(),
            outcome.layers,
            human_size(outcome.compressed_size),
            outcome.platform,
            outcome.source_date_epoch,
        ),
    ];
    if let Some(lock) = &outcome.locked {
        lines.push(format!("  packages from {}", lock.display()));
    }
    lines.extend(hardening_lines(&outcome.report));
    for referrer in &outcome.referrers {
        lines.push(format!(
            "  attached {} {}{}",
            referrer.artifact_type,
            referrer.digest,
            referrer
                .predicate_type
                .as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        ));
    }
    output::line(&lines.join("\n"))
}

/// What hardening removed and changed, grouped, with a few paths each.
fn hardening_lines(report: &build::Report) -> Vec<String> {
    fn examples(paths: &[&str]) -> String {
        const SHOWN: usize = 4;
        let mut text = paths
            .iter()
            .take(SHOWN)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        if paths.len() > SHOWN {
            text.push_str(&format!(", and {} more", paths.len() - SHOWN));
        }
        text
    }
    let mut lines = Vec::new();
    let mut removed: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for removal in &report.removed {
        let reason = match removal.reason {
            Reason::Shell => "shells",
            Reason::PackageManager => "package manager",
            Reason::Documentation => "documentation",
            Reason::Locale => "locales",
            Reason::PrivateKey => "private keys",
            Reason::DanglingLink => "dangling links",
        };
        removed.entry(reason).or_default().push(&removal.path);
    }
    for (reason, paths) in &removed {
        lines.push(format!("  removed {reason}: {}", examples(paths)));
    }
    let mut changed: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for change in &report.changed {
        let what = change.what.split(':').next().unwrap_or(&change.what);
        changed.entry(what).or_default().push(&change.path);
    }
    for (what, paths) in &changed {
        lines.push(format!("  {what}: {}", examples(paths)));
    }
    if lines.is_empty() {
        lines.push("  hardening removed and changed nothing".to_owned());
    }
    lines
}

/// One line on stderr (a terminal) saying what the pipeline is doing, redrawn in place.
#[derive(Default)]
struct ProgressLine {
    state: Mutex<ProgressState>,
}

#[derive(Default)]
struct ProgressState {
    step: String,
    downloads: HashMap<String, (u64, Option<u64>)>,
    drawn: Option<Instant>,
}

impl ProgressLine {
    fn event(&self, event: Event<'_>) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match event {
            Event::Step(step) => {
                state.step = step.to_owned();
                state.downloads.clear();
                state.drawn = None;
            }
            Event::Download { url, done, total } => {
                state.downloads.insert(url.to_owned(), (done, total));
            }
        }
        // At most ten redraws a second.
        if state
            .drawn
            .is_some_and(|at| at.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        state.drawn = Some(Instant::now());
        let mut text = state.step.clone();
        if !state.downloads.is_empty() {
            let done: u64 = state.downloads.values().map(|(d, _)| d).sum();
            let total: u64 = state.downloads.values().filter_map(|(_, t)| *t).sum();
            let finished = state
                .downloads
                .values()
                .filter(|(d, t)| t.is_some_and(|t| t == *d))
                .count();
            text.push_str(&format!(
                ": {finished}/{} files, {} of {}",
                state.downloads.len(),
                human_size(done),
                human_size(total)
            ));
        }
        let width = 100;
        let shown: String = text.chars().take(width).collect();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{shown}");
        let _ = err.flush();
    }
}

/// Clears the progress line, if one was drawn, before results are printed.
fn clear_progress(settings: &Settings) {
    if settings.progress.is_some()
        && std::env::var_os("HARDBOX_TIMINGS").is_none()
        && std::io::stderr().is_terminal()
    {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
}
