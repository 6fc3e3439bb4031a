//! The supply-chain documents of an image: SBOMs made from its tree, in-toto statements about
//! it signed into DSSE envelopes, and their attachment as OCI referrers.
//!
//! An SBOM describes the packages of the image's dpkg database (`var/lib/dpkg/status`, or the
//! `status.d/` files distroless images carry), each with its declared license (its
//! `usr/share/doc/PACKAGE/copyright` in the image) and its regular files hashed. For a build the
//! files are those the package shipped that are still in the tree after hardening; for an image
//! read from its layers, those its dpkg file list (`info/PACKAGE.list`, else `md5sums`) names.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use attest::provenance::ResourceDescriptor;
use attest::{Envelope, Provenance, Statement, Subject};
use oci::spec::Descriptor;
use oci::{Image, ImageWriter};
use sbom::{FileInfo, ImageSubject, PackageInfo, SbomInput, Supplier, Tool};
use types::Digest;

use super::repos::Plan;
use super::{Attached, LoadedSpec, PipelineError};
use crate::image::rfc3339;
use crate::spec::Spec;
use crate::tree::{Kind, Tree};
use crate::StagedBuild;

/// Media type (and referrer artifact type) of an SPDX 2.3 JSON document.
pub const SPDX_MEDIA_TYPE: &str = "application/spdx+json";
/// Media type (and referrer artifact type) of a CycloneDX JSON document.
pub const CYCLONEDX_MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";
/// Media type (and referrer artifact type) of a DSSE envelope.
pub const ENVELOPE_MEDIA_TYPE: &str = attest::dsse::ENVELOPE_MEDIA_TYPE;
/// Referrer annotation naming the predicate type of the statement an envelope carries (a hint
/// for listings; verification checks the signed statement itself).
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
/// The largest attached document read back.
pub(super) const MAX_DOCUMENT: u64 = 512 << 20;

/// An SBOM format hardbox writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbomFormat {
    Spdx,
    CycloneDx,
}

impl SbomFormat {
    pub const ALL: [SbomFormat; 2] = [SbomFormat::Spdx, SbomFormat::CycloneDx];

    /// The document's media type, which is also its referrer's artifact type.
    pub fn media_type(self) -> &'static str {
        match self {
            SbomFormat::Spdx => SPDX_MEDIA_TYPE,
            SbomFormat::CycloneDx => CYCLONEDX_MEDIA_TYPE,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SbomFormat::Spdx => "SPDX",
            SbomFormat::CycloneDx => "CycloneDX",
        }
    }

    /// The format whose media type is `media_type`.
    pub fn from_media_type(media_type: &str) -> Option<SbomFormat> {
        SbomFormat::ALL
            .into_iter()
            .find(|f| f.media_type() == media_type)
    }

    pub(super) fn attest(self) -> attest::SbomFormat {
        match self {
            SbomFormat::Spdx => attest::SbomFormat::Spdx,
            SbomFormat::CycloneDx => attest::SbomFormat::CycloneDx,
        }
    }

    /// The document for `input`.
    pub fn render(self, input: &SbomInput) -> Result<Vec<u8>, sbom::SbomError> {
        match self {
            SbomFormat::Spdx => sbom::spdx::to_json(input),
            SbomFormat::CycloneDx => sbom::cyclonedx::to_json(input),
        }
    }
}

/// Which files a package owns.
pub(super) enum Owners<'a> {
    /// The tree records the package that shipped each entry (a build); files are hashed here.
    Tree,
    /// The dpkg file lists say; files were hashed as the layers were read (path → info).
    Lists(&'a HashMap<String, FileInfo>),
}

/// One package of the dpkg database.
struct Installed {
    name: String,
    version: String,
    architecture: String,
    source_name: String,
    source_version: String,
    maintainer: Option<String>,
}

/// The installed packages of the tree's dpkg database.
fn installed(tree: &Tree) -> Vec<Installed> {
    let mut texts: Vec<(bool, String)> = Vec::new();
    if let Some(bytes) = tree.read("var/lib/dpkg/status") {
        texts.push((true, String::from_utf8_lossy(bytes).into_owned()));
    }
    // Distroless images keep one file per package instead.
    let status_d: Vec<String> = tree
        .children_of("var/lib/dpkg/status.d")
        .filter(|(path, entry)| !path.ends_with(".md5sums") && entry.content().is_some())
        .map(|(path, _)| path.clone())
        .collect();
    for path in status_d {
        if let Some(bytes) = tree.read(&path) {
            texts.push((false, String::from_utf8_lossy(bytes).into_owned()));
        }
    }
    let mut out: Vec<Installed> = Vec::new();
    for (needs_status, text) in &texts {
        for paragraph in debian::control::paragraphs(text).flatten() {
            let status_ok = paragraph
                .get("Status")
                .map_or(!needs_status, |s| s.ends_with(" installed"));
            let (Some(name), Some(version), Some(architecture)) = (
                paragraph.get("Package"),
                paragraph.get("Version"),
                paragraph.get("Architecture"),
            ) else {
                continue;
            };
            if !status_ok
                || out
                    .iter()
                    .any(|p| p.name == name && p.architecture == architecture)
            {
                continue;
            }
            let (source_name, source_version) = match paragraph.get("Source") {
                None => (name.to_owned(), version.to_owned()),
                Some(source) => match source.split_once('(') {
                    Some((n, v)) => (
                        n.trim().to_owned(),
                        v.trim().trim_end_matches(')').trim().to_owned(),
                    ),
                    None => (source.trim().to_owned(), version.to_owned()),
                },
            };
            out.push(Installed {
                name: name.to_owned(),
                version: version.to_owned(),
                architecture: architecture.to_owned(),
                source_name,
                source_version,
                maintainer: paragraph.get("Maintainer").map(str::to_owned),
            });
        }
    }
    out
}

/// `debian-12` from the tree's os-release (`ID`, `VERSION_ID`), as purls name distributions.
fn distro(tree: &Tree) -> String {
    let text = ["usr/lib/os-release", "etc/os-release"]
        .iter()
        .find_map(|p| tree.read(p))
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let field = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_owned())
                .filter(|v| !v.is_empty())
        })
    };
    let id = field("ID").unwrap_or_else(|| "debian".to_owned());
    match field("VERSION_ID").or_else(|| field("VERSION_CODENAME")) {
        Some(version) => format!("{id}-{version}"),
        None => id,
    }
}

/// Hashes `items` (package position, path, content) on every core.
fn hash_files(items: &[(usize, &str, &[u8])]) -> Vec<(usize, FileInfo)> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut mine = Vec::new();
                loop {
                    let start = next.fetch_add(64, Ordering::Relaxed);
                    let Some(batch) = items.get(start..items.len().min(start + 64)) else {
                        break;
                    };
                    if batch.is_empty() {
                        break;
                    }
                    for (package, path, content) in batch {
                        mine.push((*package, FileInfo::of(format!("/{path}"), content)));
                    }
                }
                if let Ok(mut out) = out.lock() {
                    out.extend(mine);
                }
            });
        }
    });
    out.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// The paths a dpkg file list (or md5sums file) names for `package`.
fn listed_paths(tree: &Tree, package: &Installed) -> Vec<String> {
    let info = "var/lib/dpkg/info";
    for name in [
        format!("{info}/{}:{}.list", package.name, package.architecture),
        format!("{info}/{}.list", package.name),
    ] {
        if let Some(bytes) = tree.read(&name) {
            return String::from_utf8_lossy(bytes)
                .lines()
                .filter(|l| !l.is_empty() && *l != "/.")
                .map(str::to_owned)
                .collect();
        }
    }
    for name in [
        format!("var/lib/dpkg/status.d/{}.md5sums", package.name),
        format!("{info}/{}:{}.md5sums", package.name, package.architecture),
        format!("{info}/{}.md5sums", package.name),
    ] {
        if let Some(bytes) = tree.read(&name) {
            return String::from_utf8_lossy(bytes)
                .lines()
                .filter_map(|l| l.split_once("  ").map(|(_, p)| format!("/{p}")))
                .collect();
        }
    }
    Vec::new()
}

/// The SBOM input for `tree`: its installed packages with licenses and files.
pub(super) fn sbom_input(
    tree: &Tree,
    owners: Owners<'_>,
    subject: ImageSubject,
    created: u64,
    debs: &BTreeMap<(String, String), Digest>,
) -> SbomInput {
    let packages = installed(tree);
    let distro = distro(tree);
    let mut files: Vec<Vec<FileInfo>> = vec![Vec::new(); packages.len()];
    match owners {
        Owners::Tree => {
            let position: HashMap<&str, usize> = packages
                .iter()
                .enumerate()
                .map(|(i, p)| (p.name.as_str(), i))
                .collect();
            let items: Vec<(usize, &str, &[u8])> = tree
                .iter()
                .filter_map(|(path, entry)| {
                    let package = position.get(entry.package.as_deref()?)?;
                    Some((*package, path.as_str(), entry.content()?))
                })
                .collect();
            for (package, info) in hash_files(&items) {
                files[package].push(info);
            }
        }
        Owners::Lists(hashes) => {
            for (i, package) in packages.iter().enumerate() {
                let mut seen = std::collections::BTreeSet::new();
                for listed in listed_paths(tree, package) {
                    let Ok(path) = tree.resolve(listed.trim_start_matches('/'), false) else {
                        continue;
                    };
                    let regular = tree
                        .get(&path)
                        .is_some_and(|e| matches!(e.kind, Kind::File(_) | Kind::Hardlink { .. }));
                    if !regular || !seen.insert(path.clone()) {
                        continue;
                    }
                    if let Some(info) = hashes.get(&path) {
                        let mut info = info.clone();
                        info.path = format!("/{path}");
                        files[i].push(info);
                    }
                }
            }
        }
    }
    let packages = packages
        .into_iter()
        .zip(files)
        .map(|(p, files)| {
            let copyright = format!("usr/share/doc/{}/copyright", p.name);
            let (license, copyright_file) = match tree.read(&copyright) {
                Some(text) => (
                    sbom::license::from_copyright(&String::from_utf8_lossy(text)).license,
                    Some(format!("/{copyright}")),
                ),
                None => (sbom::DeclaredLicense::noassertion(), None),
            };
            PackageInfo {
                deb_sha256: debs.get(&(p.name.clone(), p.architecture.clone())).cloned(),
                supplier: p.maintainer.as_deref().map(Supplier::from_maintainer),
                name: p.name,
                version: p.version,
                architecture: p.architecture,
                source_name: p.source_name,
                source_version: p.source_version,
                distro: distro.clone(),
                license,
                copyright_file,
                files,
            }
        })
        .collect();
    SbomInput {
        subject,
        packages,
        created,
        tool: Tool::hardbox(),
    }
}

/// The image's repository and tags as SBOMs name it: from the spec's names (so rebuilding with
/// other `-t` tags gives the same documents), else the given tags, else `hardbox.local/` and
/// the spec's file name.
fn subject_for_build(spec: &Spec, spec_path: &Path, tags: &[String]) -> ImageSubject {
    let spec_names = crate::spec_tags(spec);
    let names = if spec_names.is_empty() {
        tags.to_vec()
    } else {
        spec_names
    };
    let fallback = spec.image.clone().unwrap_or_else(|| {
        let stem = spec_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".to_owned());
        format!("hardbox.local/{stem}")
    });
    let vendor = spec
        .annotations
        .get("org.opencontainers.image.vendor")
        .map(|v| v.0.clone());
    subject_of(&names, fallback, vendor)
}

fn subject_of(names: &[String], fallback: String, vendor: Option<String>) -> ImageSubject {
    let repository = names
        .first()
        .map(|n| oci::split_name(n).0.to_owned())
        .unwrap_or(fallback);
    let tags = names
        .iter()
        .map(|n| oci::split_name(n))
        .filter(|(r, t)| *r == repository && *t != "<none>")
        .map(|(_, t)| t.to_owned())
        .collect();
    ImageSubject {
        name: repository,
        manifest_digest: Digest::of(b""),
        tags,
        supplier: vendor.map(Supplier::organization),
    }
}

/// The subject of an image read from the store (`hardbox sbom` without an attached document).
pub(super) fn subject_from_names(names: &[String], image: &Image, digest: &Digest) -> ImageSubject {
    let vendor = image
        .manifest
        .annotations
        .get("org.opencontainers.image.vendor")
        .cloned()
        .or_else(|| {
            image
                .config
                .config
                .as_ref()
                .and_then(|c| c.labels.as_ref())
                .and_then(|l| l.get("org.opencontainers.image.vendor").cloned())
        });
    let mut subject = subject_of(names, format!("hardbox.local/{}", digest.short()), vendor);
    subject.manifest_digest = digest.clone();
    subject
}

/// Seconds since the epoch of an RFC 3339 UTC time (`2023-11-14T22:13:20Z`, fractions ignored).
pub(super) fn parse_rfc3339(text: &str) -> Option<u64> {
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-');
    let year: i64 = date.next()?.parse().ok()?;
    let month: u32 = date.next()?.parse().ok()?;
    let day: u32 = date.next()?.parse().ok()?;
    let time = time.strip_suffix('Z')?;
    let time = time.split_once('.').map_or(time, |(t, _)| t);
    let mut time = time.splitn(3, ':');
    let hour: i64 = time.next()?.parse().ok()?;
    let minute: i64 = time.next()?.parse().ok()?;
    let second: i64 = time.next()?.parse().ok()?;
    let days = types::time::days_from_civil(year, month, day);
    u64::try_from(days * 86_400 + hour * 3_600 + minute * 60 + second).ok()
}

/// What [`documents`] needs from the build.
pub(super) struct Inputs<'a> {
    pub writer: &'a ImageWriter<'a>,
    pub loaded: &'a LoadedSpec,
    pub staged: &'a StagedBuild,
    pub plan: &'a Plan,
    pub platform: &'a oci::spec::Platform,
    pub sign_key: Option<&'a attest::Key>,
}

/// A document stored as a blob, to attach to the image once it is listed.
pub(super) struct Document {
    artifact_type: &'static str,
    blob: Descriptor,
    predicate_type: Option<String>,
}

/// Makes and stores the SBOMs of a staged build and, with a key, the signed statements.
pub(super) fn documents(inputs: &Inputs<'_>) -> Result<Vec<Document>, PipelineError> {
    let staged = inputs.staged;
    let image = staged.image.descriptor.digest.clone();
    let epoch = staged.source_date_epoch;
    let mut subject =
        subject_for_build(&inputs.loaded.spec, &inputs.loaded.path, &staged.image.tags);
    subject.manifest_digest = image.clone();
    let debs: BTreeMap<(String, String), Digest> = inputs
        .plan
        .debs
        .iter()
        .map(|d| {
            (
                (d.name.clone(), d.architecture.clone()),
                d.request.sha256.clone(),
            )
        })
        .collect();
    let statement_subject = Subject::new(subject.name.clone(), &image);
    let input = sbom_input(&staged.tree, Owners::Tree, subject, epoch, &debs);
    let mut out = Vec::new();
    let mut sboms = Vec::new();
    for format in SbomFormat::ALL {
        let bytes = format
            .render(&input)
            .map_err(|source| PipelineError::Sbom {
                image: image.clone(),
                source,
            })?;
        let blob = inputs.writer.put_blob_bytes(format.media_type(), &bytes)?;
        out.push(Document {
            artifact_type: format.media_type(),
            blob,
            predicate_type: None,
        });
        sboms.push((format, bytes));
    }
    let Some(key) = inputs.sign_key else {
        return Ok(out);
    };
    let attest_error = |source| PipelineError::Attest {
        image: image.clone(),
        source,
    };
    let mut statements = vec![provenance(inputs, &statement_subject).map_err(attest_error)?];
    for (format, bytes) in &sboms {
        statements.push(
            Statement::sbom(statement_subject.clone(), format.attest(), bytes)
                .map_err(attest_error)?,
        );
    }
    for statement in statements {
        let envelope = Envelope::sign_statement(&statement, key).map_err(attest_error)?;
        let bytes = envelope.to_json().map_err(attest_error)?;
        let blob = inputs.writer.put_blob_bytes(ENVELOPE_MEDIA_TYPE, &bytes)?;
        out.push(Document {
            artifact_type: ENVELOPE_MEDIA_TYPE,
            blob,
            predicate_type: Some(statement.predicate_type),
        });
    }
    Ok(out)
}

/// The SLSA v1 provenance statement of a build: the spec and lock by name and digest, every
/// `.deb` and `InRelease` by URL and digest.
fn provenance(inputs: &Inputs<'_>, subject: &Subject) -> Result<Statement, attest::AttestError> {
    let file_name = |path: &Path| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let spec = ResourceDescriptor::named(
        file_name(&inputs.loaded.path),
        &Digest::of(&inputs.loaded.bytes),
    );
    let mut provenance = Provenance::new(spec.clone(), inputs.staged.source_date_epoch);
    provenance.external_parameters.insert(
        "platform".to_owned(),
        serde_json::Value::from(inputs.platform.to_string()),
    );
    if let Some(lock) = &inputs.plan.lock_path {
        provenance.external_parameters.insert(
            "lockfile".to_owned(),
            serde_json::Value::from(file_name(lock)),
        );
    }
    let plan = inputs.plan;
    let lock_name = plan
        .lock_path
        .as_deref()
        .map_or_else(|| debian::lock::FILE_NAME.to_owned(), file_name);
    let mut dependencies = vec![
        spec,
        ResourceDescriptor::named(lock_name, &Digest::of(&plan.lock_bytes)),
    ];
    for release in &plan.releases {
        dependencies.push(ResourceDescriptor::at(release.url.clone(), &release.digest));
    }
    for deb in &plan.debs {
        dependencies.push(ResourceDescriptor::at(
            deb.request.url(),
            &deb.request.sha256,
        ));
    }
    provenance.resolved_dependencies = dependencies;
    Statement::provenance(vec![subject.clone()], &provenance)
}

/// Attaches the stored documents to the listed image.
pub(super) fn attach(
    writer: &ImageWriter<'_>,
    image: &Descriptor,
    documents: &[Document],
    epoch: u64,
) -> Result<Vec<Attached>, PipelineError> {
    let mut out = Vec::with_capacity(documents.len());
    for document in documents {
        let mut annotations = BTreeMap::from([(
            "org.opencontainers.image.created".to_owned(),
            rfc3339(epoch),
        )]);
        if let Some(predicate) = &document.predicate_type {
            annotations.insert(ANNOTATION_PREDICATE_TYPE.to_owned(), predicate.clone());
        }
        let referrer = writer.put_referrer(
            image,
            document.artifact_type,
            std::slice::from_ref(&document.blob),
            &annotations,
        )?;
        out.push(Attached {
            artifact_type: document.artifact_type.to_owned(),
            digest: referrer.digest,
            predicate_type: document.predicate_type.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap values known to be valid")]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.5Z"), Some(1_700_000_000));
        assert_eq!(parse_rfc3339("2023-11-14 22:13:20"), None);
    }

    #[test]
    fn subjects_take_the_first_names_repository() {
        let s = subject_of(
            &[
                "hardbox/python:3".to_owned(),
                "hardbox/python:3.11".to_owned(),
                "x:1".to_owned(),
            ],
            "fallback".to_owned(),
            None,
        );
        assert_eq!(s.name, "hardbox/python");
        assert_eq!(s.tags, ["3", "3.11"]);
        let s = subject_of(&[], "hardbox.local/x".to_owned(), Some("ACME".to_owned()));
        assert_eq!(s.name, "hardbox.local/x");
        assert!(s.tags.is_empty() && s.supplier.is_some());
    }

    #[test]
    fn status_paragraphs_give_packages_with_their_sources() {
        let mut tree = Tree::new();
        tree.insert(
            "var/lib/dpkg/status",
            crate::tree::Entry::file(
                b"Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: all\nSource: s (2)\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\nArchitecture: all\n".to_vec(),
                0o644, 0, 0, 0,
            ),
        );
        tree.insert(
            "var/lib/dpkg/status.d/b",
            crate::tree::Entry::file(
                b"Package: b\nVersion: 3\nArchitecture: amd64\n".to_vec(),
                0o644,
                0,
                0,
                0,
            ),
        );
        let found = installed(&tree);
        let names: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.source_name.as_str(),
                    p.source_version.as_str(),
                )
            })
            .collect();
        assert_eq!(names, [("a", "s", "2"), ("b", "b", "3")]);
        assert_eq!(distro(&tree), "debian");
    }
}
