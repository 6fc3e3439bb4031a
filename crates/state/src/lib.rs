//! The registry of long-lived sandboxes (docs/lifecycle.md, "State").
//!
//! `<root>/state.db` is a SQLite database (WAL, busy timeout, foreign keys on, schema versioned
//! by `PRAGMA user_version` and migrated in code) with one row per sandbox; `<root>/sandboxes/<id>/`
//! is the sandbox's directory. A [`Registry`] opens both and changes rows only inside
//! transactions:
//!
//! - [`Registry::insert`] adds a [`NewSandbox`] as [`SandboxState::Created`] with a random
//!   16-hex-digit id and its name (given, checked by [`validate_name`], or made up by
//!   [`generate_name`]); two processes inserting the same name race on the `UNIQUE` constraint
//!   and exactly one wins, the other gets [`StateError::NameTaken`].
//! - [`Registry::get`] finds a sandbox by exact name, exact id, or a unique id prefix of at least
//!   [`MIN_ID_PREFIX`] characters; [`Registry::list`] lists them by creation time.
//! - [`Registry::set_running`], [`Registry::set_stopped`], [`Registry::set_removing`] and
//!   [`Registry::remove`] move a row through its states (see [`SandboxState`] for which moves
//!   are allowed).
//!
//! `<root>/names/<name>` links each name to its sandbox's directory so `exec` can reach a
//! running sandbox without opening the database; the database stays the truth (see
//! [`indexed_dir`]).
//!
//! A row is a record, not the truth about liveness: a sandbox runs exactly while its
//! supervisor holds `<dir>/supervisor.lock` ([`SupervisorLock`], an exclusive `flock` the kernel
//! releases when the supervisor dies, however it dies). [`supervisor_alive`] tests that lock
//! without blocking, and [`Registry::reconcile`] turns every `running` row whose supervisor is
//! gone into `stopped` (exit code unknown), so a listing is truthful after a crash.
//!
//! The crate never prints; every error names the database, directory, name or id it is about.
#![forbid(unsafe_code)]

mod index;
mod liveness;
mod name;
mod registry;
mod schema;

use std::io;
use std::path::PathBuf;

pub use index::{indexed_dir, NAMES_DIR};
pub use liveness::{supervisor_alive, SupervisorLock, SUPERVISOR_LOCK_FILE};
pub use name::{generate_name, validate_name, MAX_NAME_LEN};
pub use registry::{
    NewSandbox, Registry, SandboxRecord, SandboxState, UnknownState, DATABASE_FILE, MIN_ID_PREFIX,
    SANDBOXES_DIR,
};
pub use schema::SCHEMA_VERSION;

/// Errors of the registry and of supervisor liveness.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file or directory operation failed.
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// SQLite refused or failed an operation on the database.
    #[error("failed to {action} in {path}")]
    Database {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a later hardbox with a schema this one does not know.
    #[error("{path} has schema version {found}, newer than the {supported} this hardbox knows")]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// A row holds a value this version cannot read.
    #[error("sandbox {id} in {path} has an unreadable {field}: {value}")]
    Corrupt {
        path: PathBuf,
        id: String,
        field: &'static str,
        value: String,
    },
    /// The name does not follow the naming rule.
    #[error("invalid sandbox name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// Another sandbox already has this name.
    #[error("the sandbox name {name:?} is already in use")]
    NameTaken { name: String },
    /// No sandbox has this name, id or id prefix.
    #[error("no sandbox named {query:?} (by name, id or id prefix)")]
    NotFound { query: String },
    /// The id prefix matches more than one sandbox.
    #[error("{query:?} matches more than one sandbox: {}", .candidates.join(", "))]
    Ambiguous {
        query: String,
        candidates: Vec<String>,
    },
    /// Only a `removing` sandbox's row is deleted.
    #[error(
        "sandbox {id} is {state}, not removing: it is marked removing before its row is deleted"
    )]
    NotRemoving { id: String, state: SandboxState },
    /// The state change is not allowed from the row's current state.
    #[error("sandbox {id} is {from}; it cannot become {to}")]
    InvalidTransition {
        id: String,
        from: SandboxState,
        to: SandboxState,
    },
    /// Another supervisor holds the lock of this sandbox directory.
    #[error("a supervisor is already running for {dir}")]
    AlreadyRunning { dir: PathBuf },
    /// The system's random source failed (ids and names are random).
    #[error("failed to read random bytes for a sandbox id")]
    Random(#[source] rand_core::Error),
}
