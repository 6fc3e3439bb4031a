//! Pure data shared across hardbox crates.
//!
//! This crate does no I/O. It holds the small vocabulary that several crates of the same layer
//! must agree on, starting with content digests.

mod digest;
pub mod time;

pub use digest::{Digest, DigestError, Sha256Writer};
