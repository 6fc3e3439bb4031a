//! Debian archives, read without dpkg or apt.
//!
//! - [`control`]: deb822 paragraphs (`Packages`, `Release`, `control`, deb822 `.sources`),
//!   borrowed from the text they were parsed from, with line numbers for errors.
//! - [`version`]: Debian versions, ordered exactly as dpkg orders them.
//! - [`relation`]: `Depends`-style relation fields: alternatives, version constraints,
//!   architecture qualifiers and restrictions, build profiles.

#![forbid(unsafe_code)]

pub mod control;
pub mod relation;
pub mod version;
