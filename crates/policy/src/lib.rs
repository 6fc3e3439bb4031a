//! The TOML sandbox policy model (in progress).
