//! The registry against real SQLite files, several connections and real processes.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;

use state::{
    supervisor_alive, NewSandbox, Registry, SandboxState, StateError, SupervisorLock,
    DATABASE_FILE, SCHEMA_VERSION,
};

/// Set in the child process that plays a supervisor: the directory whose lock it holds.
const CHILD_DIR_ENV: &str = "HARDBOX_STATE_TEST_SUPERVISOR_DIR";
const CHILD_READY: &str = "supervisor-lock-held";

fn named(name: &str) -> NewSandbox {
    NewSandbox {
        name: Some(name.to_owned()),
        image: Some("debian:12".to_owned()),
        image_digest: Some(format!("sha256:{}", "ab".repeat(32))),
        policy_digest: format!("sha256:{}", "cd".repeat(32)),
        command: vec!["sleep".to_owned(), "infinity".to_owned()],
        publishes: vec!["8080:80".to_owned()],
        workspace: Some("/home/me/project".to_owned()),
        ..NewSandbox::default()
    }
}

fn unnamed() -> NewSandbox {
    NewSandbox {
        name: None,
        ..named("x")
    }
}

#[test]
fn open_creates_private_database_and_sandboxes_dir() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().join("nested/root");
    let registry = Registry::open(&root).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root.join(DATABASE_FILE)), 0o600);
    assert_eq!(mode(&root.join("sandboxes")), 0o700);
    registry.insert(&named("one")).unwrap();
    // The WAL file SQLite created takes the database's mode.
    assert_eq!(mode(&root.join("state.db-wal")), 0o600);
    assert_eq!(
        registry.sandbox_dir("0123456789abcdef"),
        root.join("sandboxes/0123456789abcdef")
    );
}

#[test]
fn insert_records_everything_and_get_reads_it_back() {
    let root = tempfile::tempdir().unwrap();
    let registry = Registry::open(root.path()).unwrap();
    let record = registry.insert(&named("web")).unwrap();
    assert_eq!(record.id.len(), 16);
    assert!(record
        .id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(record.state, SandboxState::Created);
    assert_eq!(record.command, ["sleep", "infinity"]);
    assert_eq!(record.publishes, ["8080:80"]);
    assert_eq!(
        (record.supervisor_pid, record.init_pid, record.exit_code),
        (None, None, None)
    );
    // Another connection sees the committed row.
    let other = Registry::open(root.path()).unwrap();
    assert_eq!(other.get("web").unwrap(), record);
    assert_eq!(other.get(&record.id).unwrap(), record);
    assert_eq!(other.list().unwrap(), vec![record]);
}

#[test]
fn list_is_in_creation_order_and_generated_names_are_unique() {
    let root = tempfile::tempdir().unwrap();
    let registry = Registry::open(root.path()).unwrap();
    let ids: Vec<String> = (0..12)
        .map(|_| registry.insert(&unnamed()).unwrap().id)
        .collect();
    let listed = registry.list().unwrap();
    assert_eq!(listed.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), ids);
    let mut names: Vec<&str> = listed.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 12);
    for name in names {
        state::validate_name(name).unwrap();
    }
}

#[test]
fn same_name_from_two_connections_at_once_exactly_one_wins() {
    let root = tempfile::tempdir().unwrap();
    // Open (and migrate) once first, then race separate connections on the insert itself.
    Registry::open(root.path()).unwrap();
    for round in 0..5 {
        let name = format!("race-{round}");
        let barrier = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                let root = root.path().to_path_buf();
                let name = name.clone();
                thread::spawn(move || {
                    let registry = Registry::open(&root).unwrap();
                    barrier.wait();
                    registry.insert(&named(&name))
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        for result in results.iter().filter(|r| r.is_err()) {
            assert!(
                matches!(result, Err(StateError::NameTaken { name: n }) if *n == name),
                "{result:?}"
            );
        }
    }
    let registry = Registry::open(root.path()).unwrap();
    assert_eq!(registry.list().unwrap().len(), 5);
}

#[test]
fn invalid_names_are_refused_before_the_database() {
    let root = tempfile::tempdir().unwrap();
    let registry = Registry::open(root.path()).unwrap();
    assert!(matches!(
        registry.insert(&named("-rm")),
        Err(StateError::InvalidName { .. })
    ));
    assert!(registry.list().unwrap().is_empty());
}

#[test]
fn get_by_unique_prefix_and_ambiguity() {
    let root = tempfile::tempdir().unwrap();
    let registry = Registry::open(root.path()).unwrap();
    // Insert until two ids share a first hex digit (certain after 17).
    let mut records = Vec::new();
    let (a, b) = loop {
        let record = registry.insert(&unnamed()).unwrap();
        if let Some(other) = records
            .iter()
            .find(|r: &&state::SandboxRecord| r.id[..1] == record.id[..1])
        {
            break (other.clone(), record);
        }
        records.push(record);
    };
    // The longest prefix both share; every longer prefix of each is unique.
    let common =
        a.id.bytes()
            .zip(b.id.bytes())
            .take_while(|(x, y)| x == y)
            .count();
    let unique_len = (common + 1).max(state::MIN_ID_PREFIX);
    assert_eq!(registry.get(&a.id[..unique_len]).unwrap().id, a.id);
    assert_eq!(registry.get(&b.id[..unique_len]).unwrap().id, b.id);
    if common >= state::MIN_ID_PREFIX {
        match registry.get(&a.id[..common]) {
            Err(StateError::Ambiguous { candidates, .. }) => {
                assert!(candidates.contains(&a.id) && candidates.contains(&b.id))
            }
            other => panic!("{other:?}"),
        }
    }
    // Ambiguity on a prefix made sure to be shared: two rows whose ids start alike.
    let conn = rusqlite::Connection::open(root.path().join(DATABASE_FILE)).unwrap();
    for id in ["beef000000000001", "beef000000000002"] {
        conn.execute(
            "INSERT INTO sandboxes (id, name, host_mode, policy_digest, command, publishes, \
             created_at_unix_ms, state) VALUES (?1, ?1, 1, 'p', '[]', '[]', 0, 'created')",
            [id],
        )
        .unwrap();
    }
    match registry.get("beef") {
        Err(StateError::Ambiguous { query, candidates }) => {
            assert_eq!(query, "beef");
            assert_eq!(candidates, ["beef000000000001", "beef000000000002"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(registry.get("beef0000000000").ok(), None);
    assert_eq!(
        registry.get("beef000000000002").unwrap().id,
        "beef000000000002"
    );
    // Too short to be a prefix, and unknown.
    assert!(matches!(
        registry.get("bee"),
        Err(StateError::NotFound { .. })
    ));
    assert!(matches!(
        registry.get("nobody"),
        Err(StateError::NotFound { .. })
    ));
    // A name wins over an id prefix.
    let named_beef = registry.insert(&named("beef")).unwrap();
    assert_eq!(registry.get("beef").unwrap().id, named_beef.id);
}

#[test]
fn transitions_follow_the_lifecycle() {
    let root = tempfile::tempdir().unwrap();
    let registry = Registry::open(root.path()).unwrap();
    let id = registry.insert(&named("box")).unwrap().id;

    registry.set_running(&id, 100, 101).unwrap();
    let record = registry.get(&id).unwrap();
    assert_eq!(record.state, SandboxState::Running);
    assert_eq!(
        (record.supervisor_pid, record.init_pid),
        (Some(100), Some(101))
    );
    assert!(record.started_at_unix_ms.is_some());

    registry.set_stopped(&id, Some(3)).unwrap();
    let record = registry.get(&id).unwrap();
    assert_eq!(record.state, SandboxState::Stopped);
    assert_eq!((record.supervisor_pid, record.init_pid), (None, None));
    assert_eq!(record.exit_code, Some(3));

    // start again: the exit code of the previous run goes.
    registry.set_running(&id, 200, 201).unwrap();
    assert_eq!(registry.get(&id).unwrap().exit_code, None);

    // A row is only deleted once marked removing.
    assert!(matches!(
        registry.remove(&id),
        Err(StateError::NotRemoving {
            state: SandboxState::Running,
            ..
        })
    ));
    registry.set_removing(&id).unwrap();
    registry.set_removing(&id).unwrap();
    // Nothing brings a removing sandbox back.
    assert!(matches!(
        registry.set_running(&id, 300, 301),
        Err(StateError::InvalidTransition {
            from: SandboxState::Removing,
            to: SandboxState::Running,
            ..
        })
    ));
    // A supervisor stopping during rm leaves it removing.
    registry.set_stopped(&id, Some(0)).unwrap();
    assert_eq!(registry.get(&id).unwrap().state, SandboxState::Removing);
    registry.remove(&id).unwrap();
    assert!(matches!(
        registry.get(&id),
        Err(StateError::NotFound { .. })
    ));
    assert!(matches!(
        registry.set_stopped(&id, None),
        Err(StateError::NotFound { .. })
    ));
    assert!(matches!(
        registry.remove(&id),
        Err(StateError::NotFound { .. })
    ));
}

#[test]
fn states_display_and_parse_as_lowercase_words() {
    for state in [
        SandboxState::Created,
        SandboxState::Running,
        SandboxState::Stopped,
        SandboxState::Removing,
    ] {
        let word = state.to_string();
        assert_eq!(word, word.to_lowercase());
        assert_eq!(word.parse::<SandboxState>().unwrap(), state);
    }
    assert!("Running".parse::<SandboxState>().is_err());
}

#[test]
fn empty_database_of_schema_version_zero_is_migrated() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join(DATABASE_FILE);
    std::fs::write(&db, b"").unwrap();
    let registry = Registry::open(root.path()).unwrap();
    registry.insert(&named("after-migration")).unwrap();
    drop(registry);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn database_from_a_newer_hardbox_is_refused() {
    let root = tempfile::tempdir().unwrap();
    Registry::open(root.path()).unwrap();
    let conn = rusqlite::Connection::open(root.path().join(DATABASE_FILE)).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    match Registry::open(root.path()) {
        Err(StateError::NewerSchema {
            found, supported, ..
        }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn readers_and_writers_wait_for_a_long_write_instead_of_failing() {
    let root = tempfile::tempdir().unwrap();
    let registry = Arc::new(Registry::open(root.path()).unwrap());
    registry.insert(&named("before")).unwrap();

    // Another process's write transaction, held open while the registry reads and writes.
    let mut conn = rusqlite::Connection::open(root.path().join(DATABASE_FILE)).unwrap();
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    tx.execute(
        "INSERT INTO sandboxes (id, name, host_mode, policy_digest, command, publishes, \
         created_at_unix_ms, state) VALUES ('00000000000000aa', 'held', 1, 'p', '[]', '[]', 1, \
         'created')",
        [],
    )
    .unwrap();
    // Readers are not blocked by the open write and do not see it.
    let names: Vec<String> = registry
        .list()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["before"]);
    let writer = {
        let registry = Arc::clone(&registry);
        thread::spawn(move || registry.insert(&named("waiting")).map(|r| r.name))
    };
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let root = root.path().to_path_buf();
            thread::spawn(move || {
                let registry = Registry::open(&root).unwrap();
                (0..50).try_for_each(|_| registry.list().map(drop))
            })
        })
        .collect();
    for reader in readers {
        reader.join().unwrap().unwrap();
    }
    tx.commit().unwrap();
    assert_eq!(writer.join().unwrap().unwrap(), "waiting");
    assert_eq!(registry.list().unwrap().len(), 3);
}

#[test]
fn many_writers_and_readers_in_parallel_all_succeed() {
    let root = tempfile::tempdir().unwrap();
    Registry::open(root.path()).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|worker| {
            let root = root.path().to_path_buf();
            thread::spawn(move || -> Result<(), StateError> {
                let registry = Registry::open(&root)?;
                for i in 0..25 {
                    let id = registry.insert(&named(&format!("w{worker}-{i}")))?.id;
                    registry.list()?;
                    registry.set_running(&id, 1, 2)?;
                    registry.get(&id)?;
                }
                Ok(())
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap().unwrap();
    }
    assert_eq!(
        Registry::open(root.path()).unwrap().list().unwrap().len(),
        100
    );
}

/// Not a test of its own: run as a child process by `reconcile_after_supervisor_is_killed`, it
/// holds a supervisor lock, says so on stdout and waits to be killed.
#[test]
fn supervisor_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let _lock = SupervisorLock::acquire(Path::new(&dir)).unwrap();
    use std::io::Write;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{CHILD_READY}").unwrap();
    stdout.flush().unwrap();
    loop {
        thread::park();
    }
}

#[test]
fn reconcile_after_supervisor_is_killed() {
    let root = tempfile::tempdir().unwrap();
    let registry = Registry::open(root.path()).unwrap();
    let dead = registry.insert(&named("dead")).unwrap().id;
    let never_started = registry.insert(&named("never")).unwrap().id;
    let dir = registry.sandbox_dir(&dead);
    std::fs::create_dir_all(&dir).unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "supervisor_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    assert!(
        lines.any(|line| line.unwrap().contains(CHILD_READY)),
        "the child never held the lock"
    );
    registry
        .set_running(&dead, child.id(), child.id() + 1)
        .unwrap();

    assert!(supervisor_alive(&dir).unwrap());
    assert!(matches!(
        SupervisorLock::acquire(&dir),
        Err(StateError::AlreadyRunning { .. })
    ));
    let listed = registry.reconcile().unwrap();
    assert_eq!(listed[0].state, SandboxState::Running);

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    assert!(!supervisor_alive(&dir).unwrap());
    let listed = registry.reconcile().unwrap();
    assert_eq!(listed[0].id, dead);
    assert_eq!(listed[0].state, SandboxState::Stopped);
    assert_eq!(
        (
            listed[0].exit_code,
            listed[0].supervisor_pid,
            listed[0].init_pid
        ),
        (None, None, None)
    );
    // A row that never ran is left alone.
    assert_eq!(listed[1].id, never_started);
    assert_eq!(listed[1].state, SandboxState::Created);
    // The correction is stored, not only reported.
    assert_eq!(registry.get(&dead).unwrap().state, SandboxState::Stopped);
}

#[test]
fn reconcile_marks_running_row_without_lock_file_stopped() {
    let root = tempfile::tempdir().unwrap();
    let registry = Registry::open(root.path()).unwrap();
    let id = registry.insert(&named("ghost")).unwrap().id;
    registry.set_running(&id, 4_000_000, 4_000_001).unwrap();
    assert_eq!(
        registry.reconcile().unwrap()[0].state,
        SandboxState::Stopped
    );
    // And a supervisor holding its lock keeps its row running.
    let id = registry.insert(&named("alive")).unwrap().id;
    std::fs::create_dir_all(registry.sandbox_dir(&id)).unwrap();
    let _lock = SupervisorLock::acquire(&registry.sandbox_dir(&id)).unwrap();
    registry.set_running(&id, std::process::id(), 1).unwrap();
    assert_eq!(
        registry.reconcile().unwrap()[1].state,
        SandboxState::Running
    );
}

#[test]
fn the_name_index_follows_insert_and_remove() {
    let root = tempfile::tempdir().unwrap();
    let registry = Registry::open(root.path()).unwrap();
    let record = registry.insert(&named("web")).unwrap();
    let dir = registry.sandbox_dir(&record.id);
    // The link exists from the insert on; it resolves once the directory does.
    assert_eq!(state::indexed_dir(root.path(), "web"), None);
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(state::indexed_dir(root.path(), "web"), Some(dir.clone()));
    // Removal is refused for a row not marked removing, and keeps the link then.
    assert!(matches!(
        registry.remove(&record.id),
        Err(StateError::NotRemoving { .. })
    ));
    assert_eq!(state::indexed_dir(root.path(), "web"), Some(dir.clone()));
    registry.set_removing(&record.id).unwrap();
    registry.remove(&record.id).unwrap();
    assert_eq!(state::indexed_dir(root.path(), "web"), None);
    assert_eq!(
        std::fs::read_dir(root.path().join(state::NAMES_DIR))
            .unwrap()
            .count(),
        0
    );
    // The name can be taken again, and the link follows the new sandbox.
    let again = registry.insert(&named("web")).unwrap();
    std::fs::create_dir_all(registry.sandbox_dir(&again.id)).unwrap();
    assert_eq!(
        state::indexed_dir(root.path(), "web"),
        Some(registry.sandbox_dir(&again.id))
    );
}
