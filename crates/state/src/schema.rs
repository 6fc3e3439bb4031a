//! The database's schema and its migrations, kept in code.
//!
//! `PRAGMA user_version` is the number of migrations applied. [`migrate`] applies the missing
//! ones in order inside one `BEGIN IMMEDIATE` transaction (the version is read again under the
//! write lock, so two processes opening a fresh database at once migrate it once), and refuses a
//! database whose version is newer than [`SCHEMA_VERSION`] rather than guess at its meaning.
//! A migration is never edited once released: a change is a new entry at the end.

use rusqlite::{Connection, TransactionBehavior};

/// The schema version this crate writes (the number of [`MIGRATIONS`]).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: one row per sandbox. `command` and `publishes` are JSON arrays of strings; times are
    // milliseconds since the Unix epoch.
    "CREATE TABLE sandboxes (
        id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 16),
        name TEXT NOT NULL UNIQUE,
        image TEXT,
        image_digest TEXT,
        host_mode INTEGER NOT NULL CHECK (host_mode IN (0, 1)),
        policy_digest TEXT NOT NULL,
        command TEXT NOT NULL,
        publishes TEXT NOT NULL,
        workspace TEXT,
        created_at_unix_ms INTEGER NOT NULL,
        started_at_unix_ms INTEGER,
        state TEXT NOT NULL CHECK (state IN ('created', 'running', 'stopped', 'removing')),
        supervisor_pid INTEGER,
        init_pid INTEGER,
        exit_code INTEGER
    ) STRICT;
    CREATE INDEX sandboxes_by_creation ON sandboxes (created_at_unix_ms);",
];

/// Why a database could not be brought to [`SCHEMA_VERSION`].
#[derive(Debug)]
pub(crate) enum MigrateError {
    Sqlite(rusqlite::Error),
    Newer(i64),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(err: rusqlite::Error) -> MigrateError {
        MigrateError::Sqlite(err)
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Brings the schema to [`SCHEMA_VERSION`].
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    // Read without the write lock first: an up-to-date database (the usual case) is not locked.
    let version = user_version(conn)?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    if version > SCHEMA_VERSION {
        return Err(MigrateError::Newer(version));
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version = user_version(&tx)?;
    if version > SCHEMA_VERSION {
        return Err(MigrateError::Newer(version));
    }
    let start = usize::try_from(version).unwrap_or(0);
    for migration in MIGRATIONS.iter().skip(start) {
        tx.execute_batch(migration)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}
