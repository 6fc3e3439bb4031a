//! SPDX 2.3 JSON (<https://spdx.github.io/spdx-spec/v2.3/>).
//!
//! The document describes one package for the image (`primaryPackagePurpose: CONTAINER`, its
//! manifest digest as checksum and a `pkg:oci` purl) which `CONTAINS` one package per Debian
//! binary package (purl `pkg:deb/…`, supplier, version, declared license, the `.deb`'s SHA-256
//! when known). A binary package `CONTAINS` its files (SHA-1 and SHA-256 each). Its Debian
//! source package is named in `sourceInfo` and, as syft and grype write it, in the purl's
//! `upstream` qualifier; it is not a package of its own, since the image does not contain it and
//! scanners would match vulnerabilities against it a second time. Every
//! `LicenseRef-` used is defined in `hasExtractedLicensingInfos`; two packages that use the same
//! `LicenseRef-` name for different texts get distinct identifiers (suffixed with a hash of the
//! text).
//!
//! `licenseConcluded` is `NOASSERTION`: hardbox reads what the package declares and concludes
//! nothing beyond it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha1::{Digest as _, Sha1};
use sha2::Sha256;

use crate::{check, identity, purl, rename_ids, time, uuid_v5, SbomError, SbomInput};

/// Base of `documentNamespace`: an identifier, never fetched.
const NAMESPACE_BASE: &str = concat!(env!("CARGO_PKG_REPOSITORY"), "/spdx/");

const NOASSERTION: &str = "NOASSERTION";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    name: String,
    document_namespace: String,
    creation_info: CreationInfo,
    packages: Vec<Package>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<File>,
    relationships: Vec<Relationship>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    has_extracted_licensing_infos: Vec<ExtractedLicense>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreationInfo {
    created: String,
    creators: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: String,
    version_info: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_package_purpose: Option<&'static str>,
    supplier: String,
    download_location: &'static str,
    files_analyzed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    package_verification_code: Option<VerificationCode>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checksums: Vec<Checksum>,
    license_concluded: &'static str,
    license_declared: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    license_comments: Option<String>,
    copyright_text: &'static str,
    external_refs: Vec<ExternalRef>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VerificationCode {
    package_verification_code_value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Checksum {
    algorithm: &'static str,
    checksum_value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef {
    reference_category: &'static str,
    reference_type: &'static str,
    reference_locator: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct File {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    file_name: String,
    checksums: Vec<Checksum>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    relationship_type: &'static str,
    related_spdx_element: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExtractedLicense {
    license_id: String,
    name: String,
    extracted_text: String,
}

fn purl_ref(locator: String) -> ExternalRef {
    ExternalRef {
        reference_category: "PACKAGE-MANAGER",
        reference_type: "purl",
        reference_locator: locator,
    }
}

fn relationship(from: &str, kind: &'static str, to: &str) -> Relationship {
    Relationship {
        spdx_element_id: from.to_owned(),
        relationship_type: kind,
        related_spdx_element: to.to_owned(),
    }
}

/// Characters allowed in an SPDX element identifier after `SPDXRef-`: `A-Za-z0-9.-`.
fn id_part(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '-' => c,
            '+' => 'p',
            _ => '-',
        })
        .collect()
}

/// Hands out unique element identifiers, adding `-2`, `-3`… when sanitising made two equal.
#[derive(Default)]
struct Ids(BTreeSet<String>);

impl Ids {
    fn claim(&mut self, base: String) -> String {
        let mut id = base.clone();
        let mut n = 2;
        while !self.0.insert(id.clone()) {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }
}

/// The SPDX 2.3 JSON document for `input`, pretty-printed with a final newline.
pub fn to_json(input: &SbomInput) -> Result<Vec<u8>, SbomError> {
    let packages = check(input)?;
    let subject = &input.subject;
    let digest = subject.manifest_digest.to_string();
    let supplier_of = |s: &Option<crate::Supplier>| {
        s.as_ref()
            .map_or_else(|| NOASSERTION.to_owned(), crate::Supplier::to_spdx)
    };

    // LicenseRef- identifiers: one per (name, text); a name used with several texts gets one
    // identifier per text.
    let mut texts_by_id: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for p in &packages {
        for id in &p.license_refs {
            if let Some(text) = p.info.license.license_refs.get(id) {
                texts_by_id.entry(id).or_default().insert(text);
            }
        }
    }
    let final_id = |id: &str, text: &str| -> String {
        if texts_by_id.get(id).is_some_and(|t| t.len() > 1) {
            let hash = hex::encode(Sha256::digest(text.as_bytes()));
            format!("{id}-{}", &hash[..8])
        } else {
            id.to_owned()
        }
    };

    let mut ids = Ids::default();
    let image_id = ids.claim("SPDXRef-Image".to_owned());
    let mut doc_packages = Vec::new();
    let mut files = Vec::new();
    let mut relationships = vec![relationship("SPDXRef-DOCUMENT", "DESCRIBES", &image_id)];
    let mut extracted: BTreeMap<String, ExtractedLicense> = BTreeMap::new();

    doc_packages.push(Package {
        spdx_id: image_id.clone(),
        name: subject.name.clone(),
        version_info: digest.clone(),
        primary_package_purpose: Some("CONTAINER"),
        supplier: supplier_of(&subject.supplier),
        download_location: NOASSERTION,
        files_analyzed: false,
        package_verification_code: None,
        checksums: vec![Checksum {
            algorithm: "SHA256",
            checksum_value: subject.manifest_digest.hex().to_owned(),
        }],
        license_concluded: NOASSERTION,
        license_declared: NOASSERTION.to_owned(),
        source_info: None,
        license_comments: None,
        copyright_text: NOASSERTION,
        external_refs: image_purls(input),
    });

    for p in &packages {
        let info = p.info;
        let package_id = ids.claim(format!(
            "SPDXRef-Package-deb-{}-{}",
            id_part(&info.name),
            id_part(&info.architecture)
        ));
        relationships.push(relationship(&image_id, "CONTAINS", &package_id));

        let license_declared = match &info.license.expression {
            None => NOASSERTION.to_owned(),
            Some(expression) => rename_ids(expression, &|id| {
                let text = info.license.license_refs.get(id)?;
                Some(final_id(id, text))
            }),
        };
        for id in &p.license_refs {
            if let Some(text) = info.license.license_refs.get(id) {
                let new = final_id(id, text);
                extracted
                    .entry(new.clone())
                    .or_insert_with(|| ExtractedLicense {
                        license_id: new,
                        name: id.trim_start_matches("LicenseRef-").to_owned(),
                        extracted_text: text.clone(),
                    });
            }
        }

        let mut sha1s = Vec::with_capacity(p.files.len());
        for (index, (path, file)) in p.files.iter().enumerate() {
            let file_id = ids.claim(format!("{package_id}-File-{}", index + 1));
            sha1s.push(hex::encode(file.sha1));
            files.push(File {
                spdx_id: file_id.clone(),
                file_name: format!("./{path}"),
                checksums: vec![
                    Checksum {
                        algorithm: "SHA1",
                        checksum_value: hex::encode(file.sha1),
                    },
                    Checksum {
                        algorithm: "SHA256",
                        checksum_value: file.sha256.hex().to_owned(),
                    },
                ],
            });
            relationships.push(relationship(&package_id, "CONTAINS", &file_id));
        }
        let package_verification_code = (!sha1s.is_empty()).then(|| {
            sha1s.sort();
            VerificationCode {
                package_verification_code_value: hex::encode(Sha1::digest(
                    sha1s.concat().as_bytes(),
                )),
            }
        });

        let upstream = Some((info.source_name.as_str(), info.source_version.as_str()));
        doc_packages.push(Package {
            spdx_id: package_id.clone(),
            name: info.name.clone(),
            version_info: info.version.clone(),
            primary_package_purpose: None,
            supplier: supplier_of(&info.supplier),
            download_location: NOASSERTION,
            files_analyzed: package_verification_code.is_some(),
            package_verification_code,
            checksums: info
                .deb_sha256
                .iter()
                .map(|d| Checksum {
                    algorithm: "SHA256",
                    checksum_value: d.hex().to_owned(),
                })
                .collect(),
            license_concluded: NOASSERTION,
            license_declared,
            source_info: Some(format!(
                "built from Debian source package {} {}",
                info.source_name, info.source_version
            )),
            license_comments: info
                .copyright_file
                .as_ref()
                .map(|path| format!("Declared in the Debian copyright file {path}.")),
            copyright_text: NOASSERTION,
            external_refs: vec![purl_ref(purl::deb(
                &info.distro,
                &info.name,
                &info.version,
                &info.architecture,
                upstream,
            ))],
        });
    }

    let document = Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: format!("{}@{digest}", subject.name),
        document_namespace: format!(
            "{NAMESPACE_BASE}{}-{}",
            namespace_name(&subject.name),
            uuid_v5(&identity("spdx", input))
        ),
        creation_info: CreationInfo {
            created: time::rfc3339(input.created)?,
            creators: vec![format!("Tool: {}", input.tool)],
        },
        packages: doc_packages,
        files,
        relationships,
        has_extracted_licensing_infos: extracted.into_values().collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&document)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// One `pkg:oci` purl per tag (sorted), or one without a tag.
fn image_purls(input: &SbomInput) -> Vec<ExternalRef> {
    let digest = input.subject.manifest_digest.to_string();
    let mut tags: Vec<&str> = input.subject.tags.iter().map(String::as_str).collect();
    tags.sort_unstable();
    tags.dedup();
    if tags.is_empty() {
        return vec![purl_ref(purl::oci(&input.subject.name, &digest, None))];
    }
    tags.into_iter()
        .map(|tag| purl_ref(purl::oci(&input.subject.name, &digest, Some(tag))))
        .collect()
}

/// The image name as a URI path: unreserved characters and `/` kept, others as `-`.
fn namespace_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '/') {
                c
            } else {
                '-'
            }
        })
        .collect()
}
