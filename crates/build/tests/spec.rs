#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! Specs: the examples shipped in `examples/` and the shape of Docker Hardened Images' Debian
//! definitions (every top-level and nested key their catalog uses) parse.

use std::path::Path;

use build::spec::{PackageRequest, PathKind, Spec, Variant};

fn example(name: &str) -> Spec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    Spec::parse(&text, name).unwrap()
}

#[test]
fn examples_parse() {
    let static_spec = example("static.yaml");
    assert!(static_spec.contents.repositories.is_empty());
    assert!(static_spec
        .package_requests()
        .unwrap()
        .contains(&PackageRequest::Exclude {
            name: "openssl".into()
        }));
    let python = example("python.yaml");
    assert_eq!(python.variant, Variant::Runtime);
    assert!(python.hardening_plan().remove_shells);
    let dev = example("python-dev.yaml");
    assert!(!dev.hardening_plan().remove_shells);
    assert_eq!(dev.run_as_ids(), Some((0, 0)));
}

/// Every key the DHI catalog's Debian definitions use, in their shape.
const DHI_SHAPE: &str = r#"# syntax=example/build:2-debian13

name: Example 1.x
image: example.test/app
variant: runtime
flavor: compat
tags:
  - "1"
  - 1.2.3-debian13
platforms:
  - linux/amd64
  - linux/arm64
dates:
  release: "2025-06-24"
  end-of-life: "2030-06-30"
vars:
  VERSION: 1.2.3-1
  MAJOR: 1
contents:
  repositories:
    - deb [signed-by=/usr/share/keyrings/example.gpg] http://example.test/debian trixie main
  keyring:
    - https://example.test/keyring.key
  packages:
    - '!mawk'
    - base-files
    - app=1.2.3-1
  builds:
    - name: app
      contents:
        packages: [bash]
      pipeline:
        - name: install
          runs: |
            set -eux
      outputs:
        - source: /
          target: /
          uid: 0
          gid: 0
          diff: true
  artifacts:
    - name: app
      uid: 0
      gid: 0
      includes: [/usr/bin/app]
  files:
    - url: https://example.test/file
      path: /opt/file
      uid: 0
      gid: 0
      mode: "0644"
      checksum: sha256:00
  mappings:
    app: pkg:deb/example/app@1.2.3-1
accounts:
  root: true
  run-as: app
  users:
    - name: app
      uid: 65532
      gid: 65532
  groups:
    - name: app
      gid: 65532
      members:
        - app
    - name: www-data
      gid: 82
os-release:
  name: Example (Debian)
  id: debian
  version-id: "13"
  version-codename: trixie
  pretty-name: Example/Debian GNU/Linux 13 (trixie)
  home-url: https://example.test/
  bug-report-url: https://example.test/support/
environment:
  APP_VERSION: 1.2.3
annotations:
  org.opencontainers.image.description: An example
  org.opencontainers.image.licenses: MIT
labels:
  com.example.kit: "true"
paths:
  - type: directory
    path: /app
    uid: 65532
    gid: 65532
    mode: "0755"
  - type: directory
    path: /app/data
    uid: 65532
    gid: 65532
    recursive: true
  - type: symlink
    path: /usr/local/bin/app
    uid: 0
    gid: 0
    source: /usr/bin/app
  - type: file
    path: /etc/app.conf
    uid: 0
    gid: 0
    content: |
      key=value
  - type: emptyfile
    path: /etc/machine-id
    uid: 0
    gid: 0
  - type: delete
    path: /etc/unwanted
    uid: 0
    gid: 0
entrypoint:
  - app
cmd:
  - --serve
work-dir: /app
ports:
  - 8080/tcp
stop-signal: SIGINT
output: squashed
"#;

#[test]
fn docker_hardened_images_shape_parses() {
    let spec = Spec::parse(DHI_SHAPE, "dhi.yaml").unwrap();
    assert_eq!(spec.image.as_deref(), Some("example.test/app"));
    assert_eq!(spec.run_as_ids(), Some((65532, 65532)));
    assert_eq!(spec.paths.len(), 6);
    assert_eq!(spec.paths[4].kind, PathKind::Emptyfile);
    assert_eq!(spec.vars["MAJOR"].0, "1");
    assert_eq!(spec.source_date_epoch(), Some(1_750_723_200));
    assert_eq!(build::spec_tags(&spec)[0], "example.test/app:1");
    // Build pipelines are parsed but not run: assembly says so by key.
    let options = build::AssembleOptions {
        source_date_epoch: 0,
        context: ".".into(),
        architecture: "amd64".into(),
    };
    let err = build::assemble(&spec, &[], &options).unwrap_err();
    assert!(err.to_string().contains("contents.builds"), "{err}");
}

#[test]
fn unknown_nested_key_is_refused_with_its_line() {
    let text = DHI_SHAPE.replace("    recursive: true\n", "    recursiv: true\n");
    let err = Spec::parse(&text, "dhi.yaml").unwrap_err();
    assert!(err.message.contains("recursiv"), "{err}");
    let line = text.lines().position(|l| l.contains("recursiv")).unwrap() + 1;
    assert_eq!(err.line, Some(line), "{err}");
}
