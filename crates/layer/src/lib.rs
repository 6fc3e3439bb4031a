//! Applies OCI image layers to a directory.
