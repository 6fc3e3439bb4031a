//! Per-sandbox cgroups: memory, pids and CPU limits on cgroup v2, v1 and hybrid hosts.
//!
//! Why it exists: a sandbox's resource limits are an isolation layer like Landlock or seccomp.
//! Hosts differ: a modern distribution has one unified (v2) hierarchy, an older one or a CI
//! container has v1 hierarchies (one per controller), and hybrid hosts have both, with the
//! controllers bound to v1 and an empty v2 hierarchy beside them. This crate finds where each
//! controller lives ([`Host::detect`]), creates `hardbox/<name>` under the current cgroup (or a
//! configured parent) in every hierarchy it needs ([`Cgroup::create`]), and reads usage and OOM
//! kills back.
//!
//! What it guarantees:
//!
//! - it fails closed: a requested limit that cannot be enforced (no hierarchy offers the
//!   controller, the controller is not enabled in a v2 parent, the hierarchy is not writable or
//!   not delegated to this user) makes [`Cgroup::create`] fail with an error naming the
//!   controller and the reason; no limit is ever skipped silently;
//! - a partly created cgroup is removed again when creation fails;
//! - dropping a [`Cgroup`] that was not removed kills its processes and removes its directories
//!   (best effort, never panicking), so a sandbox's processes do not outlive their handle;
//! - the parsing of `/proc/self/mountinfo` and `/proc/self/cgroup` ([`Layout::parse`]) is pure
//!   and tested on samples of v2, v1 and hybrid hosts.
//!
//! Typical use in the sandbox supervisor:
//!
//! ```no_run
//! let host = cgroup::Host::detect()?;
//! let limits = cgroup::Limits {
//!     memory_bytes: Some(512 << 20),
//!     pids: Some(1024),
//!     cpus: Some(1.5),
//!     ..cgroup::Limits::default()
//! };
//! let mut group = cgroup::Cgroup::create(&host, "agent-1", &limits)?;
//! group.add_process(4242)?;
//! // ... the sandbox runs ...
//! group.kill_all()?;
//! group.remove()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod group;
mod host;
mod limits;

pub use error::{
    CgroupError, CreateError, DetectError, ParseError, RemoveError, UnavailableReason,
};
pub use group::{sweep, Cgroup, SweepReport, GROUP_DIRECTORY};
pub use host::{
    Controller, Hierarchy, Host, HostCgroups, Layout, Mode, MountedHierarchy, ParentState,
    Placement, Version,
};
pub use limits::{CpuQuota, Limits, CPU_PERIOD_MICROS};
