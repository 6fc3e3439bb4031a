//! Debian archives, read without dpkg or apt.
//!
//! - [`control`]: deb822 paragraphs (`Packages`, `Release`, `control`, deb822 `.sources`),
//!   borrowed from the text they were parsed from, with line numbers for errors.

#![forbid(unsafe_code)]

pub mod control;
