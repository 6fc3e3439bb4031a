//! The OCI image model and hardbox's image store.
