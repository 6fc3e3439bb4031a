//! The `process` sandbox backend: runs a command in new namespaces, on a read-only root with
//! only the paths it is given writable, without capabilities, under Landlock and seccomp.
//!
//! Why it exists: it is the isolation core of `hardbox run`. Settings resolved by the binary
//! become a [`LaunchPlan`] (pure, unit-tested: [`plan`]); [`launch`] runs that plan in one
//! place, in the documented order ([`apply`]), through the `sys` crate's syscall trait.
//! [`start_session`] keeps such a sandbox up and starts more commands in it ([`session`]).
//!
//! What it guarantees: a sandbox never starts with fewer layers than the plan asks for. A step
//! that fails stops the launch, and the error names the step and the errno; Landlock that the
//! kernel does not enforce is such a failure. Only `--dangerously-skip` (in the plan's
//! [`SkippedLayers`]) removes a layer. This crate prints nothing.

#![forbid(unsafe_code)]

pub mod apply;
pub mod launch;
pub mod plan;
pub mod rootfs;
pub mod session;
pub mod terminal;

pub use launch::{
    launch, launch_with, ExitStatus, Hooks, LaunchError, ProxyListeners, EXIT_TIMED_OUT,
    EXPLICIT_PROXY,
};
pub use plan::{
    Bind, HiddenKind, HiddenPath, Identity, LaunchPlan, Network, PlanError, ResourceLimits, Rootfs,
    SandboxSettings, SkippedLayers, Step,
};
pub use rootfs::{CacheOwnership, ImageRootfs, RootfsError, Scratch, SweepReport};
pub use session::{
    start_session, ExecId, ExecRequest, Session, SessionEvent, SessionOptions, Usage, MAIN,
};
pub use terminal::Relay;
