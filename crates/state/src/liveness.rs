//! Whether a sandbox's supervisor is alive: the truth behind a `running` row.
//!
//! The supervisor holds an exclusive `flock` on `<dir>/supervisor.lock` for its whole life
//! ([`SupervisorLock`]); the kernel drops it when the process dies, by `SIGKILL` too, so a lock
//! is never stale. [`supervisor_alive`] asks for the lock without blocking and gives it back at
//! once: refused means a supervisor holds it.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use rustix::fs::FlockOperation;

use crate::StateError;

/// The lock file a supervisor holds inside its sandbox directory.
pub const SUPERVISOR_LOCK_FILE: &str = "supervisor.lock";

/// How often [`SupervisorLock::acquire`] asks again when the lock is held, and how long it
/// waits between asks: [`supervisor_alive`] holds the lock for an instant while it tests it, and
/// a supervisor starting right then must not take the test for a running supervisor.
const ACQUIRE_TRIES: u32 = 20;
const ACQUIRE_PAUSE: Duration = Duration::from_millis(5);

/// The lock a supervisor holds while it lives; dropping it (or dying) releases it.
#[derive(Debug)]
pub struct SupervisorLock {
    path: PathBuf,
    _lock: fsutil::Lock,
}

impl SupervisorLock {
    /// Takes `<dir>/supervisor.lock` (created if missing) exclusively, without waiting for
    /// another supervisor: [`StateError::AlreadyRunning`] when one holds it.
    pub fn acquire(dir: &Path) -> Result<SupervisorLock, StateError> {
        let path = dir.join(SUPERVISOR_LOCK_FILE);
        for attempt in 0..ACQUIRE_TRIES {
            if attempt > 0 {
                thread::sleep(ACQUIRE_PAUSE);
            }
            let lock = fsutil::Lock::try_acquire(&path, fsutil::LockMode::Exclusive).map_err(
                |source| StateError::Io {
                    action: "lock",
                    path: path.clone(),
                    source,
                },
            )?;
            if let Some(lock) = lock {
                return Ok(SupervisorLock { path, _lock: lock });
            }
        }
        Err(StateError::AlreadyRunning {
            dir: dir.to_path_buf(),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether a supervisor holds `<dir>/supervisor.lock` right now. A missing file (or directory)
/// means no supervisor; the test never creates the file.
pub fn supervisor_alive(dir: &Path) -> Result<bool, StateError> {
    let path = dir.join(SUPERVISOR_LOCK_FILE);
    let file = match OpenOptions::new().read(true).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(StateError::Io {
                action: "open",
                path,
                source,
            })
        }
    };
    loop {
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockShared) {
            // Closing the file (at return) releases the lock at once.
            Ok(()) => return Ok(false),
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                return Err(StateError::Io {
                    action: "test the lock",
                    path,
                    source: e.into(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_seen_alive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!supervisor_alive(dir.path()).unwrap());
        assert!(!dir.path().join(SUPERVISOR_LOCK_FILE).exists());
        let lock = SupervisorLock::acquire(dir.path()).unwrap();
        assert!(supervisor_alive(dir.path()).unwrap());
        assert!(matches!(
            SupervisorLock::acquire(dir.path()),
            Err(StateError::AlreadyRunning { .. })
        ));
        drop(lock);
        assert!(!supervisor_alive(dir.path()).unwrap());
        let _again = SupervisorLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn missing_directory_is_not_alive() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!supervisor_alive(&dir.path().join("gone")).unwrap());
    }
}
