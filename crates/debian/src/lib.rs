//! Debian archives, read without dpkg or apt.
//!
//! - [`control`]: deb822 paragraphs (`Packages`, `Release`, `control`, deb822 `.sources`),
//!   borrowed from the text they were parsed from, with line numbers for errors.
//! - [`deb`]: binary packages: the `ar` container, the control tarball in memory, `data.tar`
//!   streamed and decompressed once.
//! - [`version`]: Debian versions, ordered exactly as dpkg orders them.
//! - [`relation`]: `Depends`-style relation fields: alternatives, version constraints,
//!   architecture qualifiers and restrictions, build profiles.
//! - [`sources`]: APT sources (one-line and deb822), refusing options that disable verification.
//! - [`openpgp`]: keyrings and signature checks of `InRelease` / `Release.gpg`.
//! - [`release`]: the `Release` file: validity dates and the SHA-256 table of indexes.
//! - [`package`]: the [`package::Package`] of a `Packages` paragraph and the
//!   [`package::Universe`] of one or more indexes, indexed by name and by provided name.
//! - [`fetch`]: the [`fetch::Fetcher`]: signed `InRelease` → `Packages` → `.deb`, each verified
//!   before it enters a content-addressed cache.
//! - [`resolve`]: the dependency resolver: requests (with pins and exclusions) → the exact,
//!   sorted set of packages to install, or an error explaining the failing chain.
//! - [`lock`]: `hardbox.lock.json`: the resolved set with its repositories, to rebuild exactly.

#![forbid(unsafe_code)]

pub mod control;
pub mod deb;
pub mod fetch;
pub mod lock;
pub mod openpgp;
pub mod package;
pub mod relation;
pub mod release;
pub mod resolve;
pub mod sources;
pub mod version;
