//! CycloneDX 1.6 JSON (<https://cyclonedx.org/docs/1.6/json/>).
//!
//! `metadata.component` is the image (`type: container`, its manifest digest as version and
//! SHA-256 hash, a `pkg:oci` purl); `components` holds one `library` per Debian binary package
//! with its purl as `bom-ref`, supplier, declared license as an SPDX expression
//! (`acknowledgement: declared`), the `.deb`'s SHA-256 when known, its source package and
//! architecture as `hardbox:debian:*` properties, and its files as nested `file` components with
//! SHA-1 and SHA-256. `dependencies` says the image depends on every package. The `serialNumber`
//! is a name-based UUID of the image digest and the tool, so the same input gives the same bytes.

use serde::Serialize;

use crate::{check, identity, purl, time, uuid_v5, SbomError, SbomInput, Supplier};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bom {
    #[serde(rename = "$schema")]
    schema: &'static str,
    bom_format: &'static str,
    spec_version: &'static str,
    serial_number: String,
    version: u32,
    metadata: Metadata,
    components: Vec<Component>,
    dependencies: Vec<Dependency>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    timestamp: String,
    lifecycles: Vec<Lifecycle>,
    tools: Tools,
    component: Component,
}

#[derive(Serialize)]
struct Lifecycle {
    phase: &'static str,
}

#[derive(Serialize)]
struct Tools {
    components: Vec<Component>,
}

#[derive(Serialize, Default)]
struct Component {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "bom-ref", skip_serializing_if = "Option::is_none")]
    bom_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    supplier: Option<Entity>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hashes: Vec<Hash>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    licenses: Vec<License>,
    #[serde(skip_serializing_if = "Option::is_none")]
    purl: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    properties: Vec<Property>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    components: Vec<Component>,
}

#[derive(Serialize)]
struct Entity {
    name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    contact: Vec<Contact>,
}

#[derive(Serialize)]
struct Contact {
    email: String,
}

#[derive(Serialize)]
struct Hash {
    alg: &'static str,
    content: String,
}

#[derive(Serialize)]
struct License {
    expression: String,
    acknowledgement: &'static str,
}

#[derive(Serialize)]
struct Property {
    name: &'static str,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Dependency {
    #[serde(rename = "ref")]
    reference: String,
    depends_on: Vec<String>,
}

fn entity(supplier: &Option<Supplier>) -> Option<Entity> {
    supplier.as_ref().map(|s| Entity {
        name: s.name.clone(),
        contact: s
            .email
            .iter()
            .filter(|email| crate::is_email(email))
            .map(|email| Contact {
                email: email.clone(),
            })
            .collect(),
    })
}

fn property(name: &'static str, value: &str) -> Property {
    Property {
        name,
        value: value.to_owned(),
    }
}

/// The CycloneDX 1.6 JSON document for `input`, pretty-printed with a final newline.
pub fn to_json(input: &SbomInput) -> Result<Vec<u8>, SbomError> {
    let packages = check(input)?;
    let subject = &input.subject;
    let digest = subject.manifest_digest.to_string();

    let mut tags: Vec<&str> = subject.tags.iter().map(String::as_str).collect();
    tags.sort_unstable();
    tags.dedup();
    let image_ref = purl::oci(&subject.name, &digest, None);
    let image = Component {
        kind: "container",
        bom_ref: Some(image_ref.clone()),
        supplier: entity(&subject.supplier),
        name: subject.name.clone(),
        version: Some(digest.clone()),
        hashes: vec![Hash {
            alg: "SHA-256",
            content: subject.manifest_digest.hex().to_owned(),
        }],
        purl: Some(image_ref.clone()),
        properties: tags
            .iter()
            .map(|tag| property("hardbox:image:tag", tag))
            .collect(),
        ..Component::default()
    };

    let mut components = Vec::with_capacity(packages.len());
    let mut package_refs = Vec::with_capacity(packages.len());
    for p in &packages {
        let info = p.info;
        let purl = purl::deb(
            &info.distro,
            &info.name,
            &info.version,
            &info.architecture,
            Some((&info.source_name, &info.source_version)),
        );
        package_refs.push(purl.clone());
        let mut properties = vec![
            property("hardbox:debian:architecture", &info.architecture),
            property("hardbox:debian:source_name", &info.source_name),
            property("hardbox:debian:source_version", &info.source_version),
            property("hardbox:debian:distro", &info.distro),
        ];
        if let Some(path) = &info.copyright_file {
            properties.push(property("hardbox:debian:copyright_file", path));
        }
        components.push(Component {
            kind: "library",
            bom_ref: Some(purl.clone()),
            supplier: entity(&info.supplier),
            name: info.name.clone(),
            version: Some(info.version.clone()),
            hashes: info
                .deb_sha256
                .iter()
                .map(|d| Hash {
                    alg: "SHA-256",
                    content: d.hex().to_owned(),
                })
                .collect(),
            licenses: info
                .license
                .expression
                .iter()
                .map(|expression| License {
                    expression: expression.clone(),
                    acknowledgement: "declared",
                })
                .collect(),
            purl: Some(purl),
            properties,
            components: p
                .files
                .iter()
                .map(|(path, file)| Component {
                    kind: "file",
                    name: format!("/{path}"),
                    hashes: vec![
                        Hash {
                            alg: "SHA-1",
                            content: hex::encode(file.sha1),
                        },
                        Hash {
                            alg: "SHA-256",
                            content: file.sha256.hex().to_owned(),
                        },
                    ],
                    ..Component::default()
                })
                .collect(),
        });
    }

    let bom = Bom {
        schema: "http://cyclonedx.org/schema/bom-1.6.schema.json",
        bom_format: "CycloneDX",
        spec_version: "1.6",
        serial_number: format!("urn:uuid:{}", uuid_v5(&identity("cyclonedx", input))),
        version: 1,
        metadata: Metadata {
            timestamp: time::rfc3339(input.created)?,
            lifecycles: vec![Lifecycle { phase: "build" }],
            tools: Tools {
                components: vec![Component {
                    kind: "application",
                    name: input.tool.name.clone(),
                    version: Some(input.tool.version.clone()),
                    ..Component::default()
                }],
            },
            component: image,
        },
        components,
        dependencies: vec![Dependency {
            reference: image_ref,
            depends_on: package_refs,
        }],
    };
    let mut bytes = serde_json::to_vec_pretty(&bom)?;
    bytes.push(b'\n');
    Ok(bytes)
}
