//! [`Registry`]: the sandboxes' rows in `<root>/state.db` and their directories.
//!
//! Guarantees:
//! - Every change is one transaction that takes the write lock first (`BEGIN IMMEDIATE`) and
//!   reads the row again under it, so a state change is checked against the row as it is, not
//!   as it was read earlier, by whichever process.
//! - Names are unique by a `UNIQUE` constraint: two processes inserting the same name cannot
//!   both succeed. Generated names are chosen under the write lock.
//! - Readers never block on a writer (WAL); a writer waits up to [`BUSY_TIMEOUT`] for another.
//! - `state.db` is created with mode 0600 (SQLite gives its `-wal` and `-shm` files the same
//!   mode) and `sandboxes/` with 0700.

use std::collections::HashSet;
use std::fmt;
use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand_core::{OsRng, RngCore};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use crate::index;
use crate::liveness::supervisor_alive;
use crate::name::{generate_name, validate_name};
use crate::schema::{migrate, MigrateError, SCHEMA_VERSION};
use crate::StateError;

/// The database file inside the root.
pub const DATABASE_FILE: &str = "state.db";
/// The directory of per-sandbox directories inside the root.
pub const SANDBOXES_DIR: &str = "sandboxes";
/// The shortest id prefix [`Registry::get`] accepts.
pub const MIN_ID_PREFIX: usize = 4;
/// How long a writer waits for another process's transaction before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many fresh random ids an insert tries (a collision of 64 random bits is only possible
/// in theory; the loop keeps it from ever becoming an error).
const ID_TRIES: usize = 4;

/// Where a sandbox is in its life, as recorded (see [`Registry::reconcile`] for the truth).
///
/// Moves: `created`, `running` or `stopped` → `running` ([`Registry::set_running`], called by a
/// supervisor that holds the lock) and → `stopped` ([`Registry::set_stopped`]); any state →
/// `removing` ([`Registry::set_removing`]); only `removing` → deleted ([`Registry::remove`]).
/// A `removing` row never goes back: a supervisor that stops during `rm` leaves it `removing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SandboxState {
    /// Inserted; no supervisor has reported it running yet.
    Created,
    /// A supervisor reported it running (true while the supervisor holds its lock).
    Running,
    /// Its supervisor ended (or was found dead).
    Stopped,
    /// `rm` is under way: its files are being deleted, the row goes last.
    Removing,
}

impl SandboxState {
    /// The lowercase word stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Created => "created",
            SandboxState::Running => "running",
            SandboxState::Stopped => "stopped",
            SandboxState::Removing => "removing",
        }
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not a [`SandboxState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sandbox state {0:?} (expected created, running, stopped or removing)")]
pub struct UnknownState(pub String);

impl FromStr for SandboxState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<SandboxState, UnknownState> {
        match s {
            "created" => Ok(SandboxState::Created),
            "running" => Ok(SandboxState::Running),
            "stopped" => Ok(SandboxState::Stopped),
            "removing" => Ok(SandboxState::Removing),
            other => Err(UnknownState(other.to_owned())),
        }
    }
}

/// What `create` records about a new sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewSandbox {
    /// The name asked for; one is generated when `None`.
    pub name: Option<String>,
    /// The image reference as given (`None` in host mode).
    pub image: Option<String>,
    /// The image's manifest digest.
    pub image_digest: Option<String>,
    /// Whether the sandbox runs on the host's root filesystem instead of an image.
    pub host_mode: bool,
    /// The digest of the resolved policy.
    pub policy_digest: String,
    /// The main command (empty: none, init only reaps).
    pub command: Vec<String>,
    /// Published ports as given (`-p` values).
    pub publishes: Vec<String>,
    /// The host directory mounted as the workspace.
    pub workspace: Option<String>,
}

/// One row of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRecord {
    /// 16 lowercase hex digits, random.
    pub id: String,
    /// Unique among sandboxes.
    pub name: String,
    /// See [`NewSandbox::image`].
    pub image: Option<String>,
    /// See [`NewSandbox::image_digest`].
    pub image_digest: Option<String>,
    /// See [`NewSandbox::host_mode`].
    pub host_mode: bool,
    /// See [`NewSandbox::policy_digest`].
    pub policy_digest: String,
    /// See [`NewSandbox::command`].
    pub command: Vec<String>,
    /// See [`NewSandbox::publishes`].
    pub publishes: Vec<String>,
    /// See [`NewSandbox::workspace`].
    pub workspace: Option<String>,
    /// When the row was inserted (milliseconds since the Unix epoch).
    pub created_at_unix_ms: i64,
    /// When a supervisor last reported it running.
    pub started_at_unix_ms: Option<i64>,
    /// The recorded state.
    pub state: SandboxState,
    /// The running supervisor's pid (`None` unless running).
    pub supervisor_pid: Option<u32>,
    /// The running init's pid, as the host sees it (`None` unless running).
    pub init_pid: Option<u32>,
    /// The main command's exit code once stopped, when known.
    pub exit_code: Option<i32>,
}

/// The registry of sandboxes under one root. Cheap to share between threads (one connection
/// behind a mutex); each process opens its own.
pub struct Registry {
    root: PathBuf,
    db_path: PathBuf,
    conn: Mutex<Connection>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("db_path", &self.db_path)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "id, name, image, image_digest, host_mode, policy_digest, command, \
     publishes, workspace, created_at_unix_ms, started_at_unix_ms, state, supervisor_pid, \
     init_pid, exit_code";

/// A row as stored, before its text columns are parsed.
struct RawRow {
    record: SandboxRecord,
    command: String,
    publishes: String,
    state: String,
}

fn raw_row(row: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        record: SandboxRecord {
            id: row.get(0)?,
            name: row.get(1)?,
            image: row.get(2)?,
            image_digest: row.get(3)?,
            host_mode: row.get(4)?,
            policy_digest: row.get(5)?,
            command: Vec::new(),
            publishes: Vec::new(),
            workspace: row.get(8)?,
            created_at_unix_ms: row.get(9)?,
            started_at_unix_ms: row.get(10)?,
            state: SandboxState::Created,
            supervisor_pid: row.get(12)?,
            init_pid: row.get(13)?,
            exit_code: row.get(14)?,
        },
        command: row.get(6)?,
        publishes: row.get(7)?,
        state: row.get(11)?,
    })
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn random_id() -> Result<String, StateError> {
    let mut bytes = [0u8; 8];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(StateError::Random)?;
    Ok(format!("{:016x}", u64::from_be_bytes(bytes)))
}

fn json_strings(values: &[String]) -> String {
    serde_json::Value::from(values.to_vec()).to_string()
}

fn is_constraint(err: &rusqlite::Error, extended_code: i32) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(e, _) if e.extended_code == extended_code)
}

/// Creates `path` and its missing parents with mode 0700.
pub(crate) fn create_dir(path: &Path) -> Result<(), StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| StateError::Io {
            action: "create",
            path: path.to_path_buf(),
            source,
        })
}

impl Registry {
    /// Opens the registry under `root`, creating `root`, `<root>/sandboxes/` (0700) and
    /// `<root>/state.db` (0600) as needed, and migrating the schema.
    pub fn open(root: &Path) -> Result<Registry, StateError> {
        create_dir(root)?;
        create_dir(&root.join(SANDBOXES_DIR))?;
        let db_path = root.join(DATABASE_FILE);
        // Created here, not by SQLite, so it gets 0600 whatever the umask allows.
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&db_path)
            .map_err(|source| StateError::Io {
                action: "create",
                path: db_path.clone(),
                source,
            })?;
        let db_error = |action| {
            let path = db_path.clone();
            move |source| StateError::Database {
                action,
                path,
                source,
            }
        };
        let mut conn = Connection::open(&db_path).map_err(db_error("open the database"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(db_error("set the busy timeout"))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(db_error("switch to WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StateError::Database {
                action: "switch to WAL",
                path: db_path,
                source: rusqlite::Error::InvalidParameterName(format!("journal_mode is {mode}")),
            });
        }
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(db_error("turn on foreign keys"))?;
        migrate(&mut conn).map_err(|err| match err {
            MigrateError::Sqlite(source) => StateError::Database {
                action: "migrate the schema",
                path: db_path.clone(),
                source,
            },
            MigrateError::Newer(found) => StateError::NewerSchema {
                path: db_path.clone(),
                found,
                supported: SCHEMA_VERSION,
            },
        })?;
        Ok(Registry {
            root: root.to_path_buf(),
            db_path,
            conn: Mutex::new(conn),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The database file.
    pub fn database_path(&self) -> &Path {
        &self.db_path
    }

    /// `<root>/sandboxes/<id>` (`id` is a registry id, as in [`SandboxRecord::id`]).
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.root.join(SANDBOXES_DIR).join(id)
    }

    fn connection(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the guard cannot leave a transaction open: a dropped
        // `Transaction` rolls back.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn db(&self, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StateError + '_ {
        move |source| StateError::Database {
            action,
            path: self.db_path.clone(),
            source,
        }
    }

    fn record(&self, raw: RawRow) -> Result<SandboxRecord, StateError> {
        let corrupt = |field, value: &str| StateError::Corrupt {
            path: self.db_path.clone(),
            id: raw.record.id.clone(),
            field,
            value: value.to_owned(),
        };
        let mut record = raw.record.clone();
        record.command =
            serde_json::from_str(&raw.command).map_err(|_| corrupt("command", &raw.command))?;
        record.publishes = serde_json::from_str(&raw.publishes)
            .map_err(|_| corrupt("publishes", &raw.publishes))?;
        record.state = raw
            .state
            .parse()
            .map_err(|_| corrupt("state", &raw.state))?;
        Ok(record)
    }

    fn query(
        &self,
        conn: &Connection,
        condition: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<SandboxRecord>, StateError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sandboxes {condition} ORDER BY created_at_unix_ms, rowid"
        );
        let mut statement = conn.prepare_cached(&sql).map_err(self.db("read"))?;
        let rows = statement
            .query_map(params, raw_row)
            .map_err(self.db("read"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.db("read"))?;
        rows.into_iter().map(|raw| self.record(raw)).collect()
    }

    /// Records a new sandbox as `created`, with a fresh id and its name (validated, or
    /// generated when [`NewSandbox::name`] is `None`).
    pub fn insert(&self, new: &NewSandbox) -> Result<SandboxRecord, StateError> {
        if let Some(name) = &new.name {
            validate_name(name)?;
        }
        let mut conn = self.connection();
        let mut tries = 0;
        loop {
            tries += 1;
            let id = random_id()?;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(self.db("begin a transaction"))?;
            let name = match &new.name {
                Some(name) => name.clone(),
                None => {
                    let taken = self.names(&tx)?;
                    generate_name(|name| taken.contains(name))
                }
            };
            let record = SandboxRecord {
                id,
                name,
                image: new.image.clone(),
                image_digest: new.image_digest.clone(),
                host_mode: new.host_mode,
                policy_digest: new.policy_digest.clone(),
                command: new.command.clone(),
                publishes: new.publishes.clone(),
                workspace: new.workspace.clone(),
                created_at_unix_ms: now_unix_ms(),
                started_at_unix_ms: None,
                state: SandboxState::Created,
                supervisor_pid: None,
                init_pid: None,
                exit_code: None,
            };
            let inserted = tx.execute(
                "INSERT INTO sandboxes (id, name, image, image_digest, host_mode, policy_digest, \
                 command, publishes, workspace, created_at_unix_ms, state) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    record.id,
                    record.name,
                    record.image,
                    record.image_digest,
                    record.host_mode,
                    record.policy_digest,
                    json_strings(&record.command),
                    json_strings(&record.publishes),
                    record.workspace,
                    record.created_at_unix_ms,
                    record.state.as_str(),
                ],
            );
            match inserted {
                Ok(_) => {}
                Err(e) if is_constraint(&e, rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE) => {
                    return Err(StateError::NameTaken { name: record.name });
                }
                Err(e)
                    if is_constraint(&e, rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
                        && tries < ID_TRIES =>
                {
                    continue;
                }
                Err(e) => return Err(self.db("insert a sandbox")(e)),
            }
            tx.commit().map_err(self.db("commit"))?;
            // The index is a hint (see `index`): without the link, readers ask the database.
            let _ = index::link(&self.root, &record.name, &record.id);
            return Ok(record);
        }
    }

    fn names(&self, tx: &Transaction<'_>) -> Result<HashSet<String>, StateError> {
        let mut statement = tx
            .prepare_cached("SELECT name FROM sandboxes")
            .map_err(self.db("read names"))?;
        let names = statement
            .query_map([], |row| row.get(0))
            .map_err(self.db("read names"))?
            .collect::<Result<HashSet<String>, _>>()
            .map_err(self.db("read names"));
        names
    }

    /// The sandbox named `query`, else the one whose id is `query`, else the only one whose id
    /// starts with `query` (at least [`MIN_ID_PREFIX`] characters).
    pub fn get(&self, query: &str) -> Result<SandboxRecord, StateError> {
        let mut conn = self.connection();
        let tx = conn.transaction().map_err(self.db("begin a transaction"))?;
        let not_found = || StateError::NotFound {
            query: query.to_owned(),
        };
        if let Some(record) = self.query(&tx, "WHERE name = ?1", [query])?.pop() {
            return Ok(record);
        }
        if let Some(record) = self.query(&tx, "WHERE id = ?1", [query])?.pop() {
            return Ok(record);
        }
        let is_prefix = query.len() >= MIN_ID_PREFIX
            && query
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_prefix {
            return Err(not_found());
        }
        let length = i64::try_from(query.len()).unwrap_or(i64::MAX);
        let mut matches =
            self.query(&tx, "WHERE substr(id, 1, ?1) = ?2", params![length, query])?;
        match matches.len() {
            0 => Err(not_found()),
            1 => matches.pop().ok_or_else(not_found),
            _ => Err(StateError::Ambiguous {
                query: query.to_owned(),
                candidates: matches.into_iter().map(|r| r.id).collect(),
            }),
        }
    }

    /// Every sandbox, oldest first, as recorded (see [`Registry::reconcile`]).
    pub fn list(&self) -> Result<Vec<SandboxRecord>, StateError> {
        let conn = self.connection();
        self.query(&conn, "", [])
    }

    /// Moves row `id` from one of the states `from` to `to` by `change`, in one write
    /// transaction that reads the row's state under the write lock.
    fn transition(
        &self,
        id: &str,
        from: &[SandboxState],
        to: SandboxState,
        change: impl FnOnce(&Transaction<'_>, SandboxState) -> rusqlite::Result<()>,
    ) -> Result<(), StateError> {
        self.change(
            id,
            |current| {
                if from.contains(&current) {
                    Ok(())
                } else {
                    Err(StateError::InvalidTransition {
                        id: id.to_owned(),
                        from: current,
                        to,
                    })
                }
            },
            change,
        )
    }

    /// Runs `change` in a write transaction after `check` accepted the row's current state
    /// (read under the write lock); [`StateError::NotFound`] when there is no row `id`.
    fn change(
        &self,
        id: &str,
        check: impl FnOnce(SandboxState) -> Result<(), StateError>,
        change: impl FnOnce(&Transaction<'_>, SandboxState) -> rusqlite::Result<()>,
    ) -> Result<(), StateError> {
        let mut conn = self.connection();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.db("begin a transaction"))?;
        let current: String = tx
            .query_row("SELECT state FROM sandboxes WHERE id = ?1", [id], |row| {
                row.get(0)
            })
            .optional()
            .map_err(self.db("read a sandbox"))?
            .ok_or_else(|| StateError::NotFound {
                query: id.to_owned(),
            })?;
        let current: SandboxState = current.parse().map_err(|_| StateError::Corrupt {
            path: self.db_path.clone(),
            id: id.to_owned(),
            field: "state",
            value: current.clone(),
        })?;
        check(current)?;
        change(&tx, current).map_err(self.db("update a sandbox"))?;
        tx.commit().map_err(self.db("commit"))
    }

    /// Records that a supervisor (which holds the sandbox's lock) runs the sandbox.
    pub fn set_running(
        &self,
        id: &str,
        supervisor_pid: u32,
        init_pid: u32,
    ) -> Result<(), StateError> {
        use SandboxState::*;
        self.transition(id, &[Created, Running, Stopped], Running, |tx, _| {
            tx.execute(
                "UPDATE sandboxes SET state = 'running', supervisor_pid = ?2, init_pid = ?3, \
                 started_at_unix_ms = ?4, exit_code = NULL WHERE id = ?1",
                params![id, supervisor_pid, init_pid, now_unix_ms()],
            )
            .map(drop)
        })
    }

    /// Records that the sandbox stopped, with its main command's exit code when known. A
    /// `removing` row stays `removing` (the pids are cleared and the exit code kept).
    pub fn set_stopped(&self, id: &str, exit_code: Option<i32>) -> Result<(), StateError> {
        use SandboxState::*;
        self.transition(
            id,
            &[Created, Running, Stopped, Removing],
            Stopped,
            |tx, current| {
                let state = if current == Removing {
                    Removing
                } else {
                    Stopped
                };
                tx.execute(
                    "UPDATE sandboxes SET state = ?2, supervisor_pid = NULL, init_pid = NULL, \
                     exit_code = ?3 WHERE id = ?1",
                    params![id, state.as_str(), exit_code],
                )
                .map(drop)
            },
        )
    }

    /// Marks the sandbox `removing`, before `rm` deletes any of its files (from any state, so
    /// an interrupted `rm` can be finished).
    pub fn set_removing(&self, id: &str) -> Result<(), StateError> {
        use SandboxState::*;
        self.transition(
            id,
            &[Created, Running, Stopped, Removing],
            Removing,
            |tx, _| {
                tx.execute(
                    "UPDATE sandboxes SET state = 'removing' WHERE id = ?1",
                    [id],
                )
                .map(drop)
            },
        )
    }

    /// Deletes the row of a `removing` sandbox, the last step of `rm`, and its name link
    /// before it.
    pub fn remove(&self, id: &str) -> Result<(), StateError> {
        let row: Option<(String, String)> = self
            .connection()
            .query_row(
                "SELECT name, state FROM sandboxes WHERE id = ?1",
                [id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(self.db("read a sandbox"))?;
        if let Some((name, state)) = row {
            if state == SandboxState::Removing.as_str() {
                index::unlink(&self.root, &name, id)?;
            }
        }
        self.change(
            id,
            |state| match state {
                SandboxState::Removing => Ok(()),
                state => Err(StateError::NotRemoving {
                    id: id.to_owned(),
                    state,
                }),
            },
            |tx, _| {
                tx.execute("DELETE FROM sandboxes WHERE id = ?1", [id])
                    .map(drop)
            },
        )
    }

    /// [`Registry::list`], after turning every `running` row whose supervisor is not alive
    /// (see [`supervisor_alive`]) into `stopped` with an unknown exit code. A row changed
    /// meanwhile (stopped with its exit code, or restarted by a new supervisor) is left as it
    /// is: the update only applies to the row as it was read.
    pub fn reconcile(&self) -> Result<Vec<SandboxRecord>, StateError> {
        let records = self.list()?;
        let mut changed = false;
        for record in &records {
            if record.state != SandboxState::Running
                || supervisor_alive(&self.sandbox_dir(&record.id))?
            {
                continue;
            }
            let mut conn = self.connection();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(self.db("begin a transaction"))?;
            tx.execute(
                "UPDATE sandboxes SET state = 'stopped', supervisor_pid = NULL, \
                 init_pid = NULL, exit_code = NULL WHERE id = ?1 AND state = 'running' \
                 AND supervisor_pid IS ?2 AND started_at_unix_ms IS ?3",
                params![record.id, record.supervisor_pid, record.started_at_unix_ms],
            )
            .map_err(self.db("mark a sandbox stopped"))?;
            tx.commit().map_err(self.db("commit"))?;
            changed = true;
        }
        if changed {
            self.list()
        } else {
            Ok(records)
        }
    }
}
