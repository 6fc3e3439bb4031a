//! The name index: `<root>/names/<name>`, a symlink to `../sandboxes/<id>`, so the verbs that
//! only need a running sandbox's directory (`exec`) find it without opening the database.
//!
//! The database stays the truth; the index is a hint that may be missing but never points a
//! name at another sandbox's live supervisor:
//! - [`Registry::insert`](crate::Registry::insert) writes the link after the row commits
//!   (a crash in between leaves it missing, and the reader falls back to the database);
//! - [`Registry::remove`](crate::Registry::remove) deletes it before the row, and only if it
//!   still points at that row's id;
//! - a name is unique among rows, so while a link could point at a sandbox being removed (whose
//!   supervisor is dead or dying), it can point at a live supervisor only of the sandbox that
//!   has the name.
//!
//! Readers must treat a link's directory as a candidate: [`indexed_dir`] returns it only when
//! it exists, and the caller still has to reach its supervisor.

use std::io;
use std::path::{Path, PathBuf};

use crate::name::validate_name;
use crate::registry::{create_dir, SANDBOXES_DIR};
use crate::StateError;

/// The index directory inside the root.
pub const NAMES_DIR: &str = "names";

/// The sandbox directory the index gives for `name`, if the index has it and the directory
/// exists. Never opens the database; `None` means "ask the registry".
pub fn indexed_dir(root: &Path, name: &str) -> Option<PathBuf> {
    validate_name(name).ok()?;
    let target = std::fs::read_link(root.join(NAMES_DIR).join(name)).ok()?;
    let id = id_of_target(&target)?;
    let dir = root.join(SANDBOXES_DIR).join(id);
    dir.is_dir().then_some(dir)
}

/// Points `name` at `id`, replacing whatever the link said (atomically, by rename).
pub(crate) fn link(root: &Path, name: &str, id: &str) -> Result<(), StateError> {
    let names = root.join(NAMES_DIR);
    create_dir(&names)?;
    let link = names.join(name);
    let temporary = names.join(format!(".{name}.{id}.tmp"));
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(target_of(id), &temporary).map_err(|source| StateError::Io {
        action: "create the name link",
        path: temporary.clone(),
        source,
    })?;
    std::fs::rename(&temporary, &link).map_err(|source| {
        let _ = std::fs::remove_file(&temporary);
        StateError::Io {
            action: "create the name link",
            path: link.clone(),
            source,
        }
    })
}

/// Deletes `name`'s link if it points at `id` (a link already replaced for a newer sandbox of
/// the same name is left alone).
pub(crate) fn unlink(root: &Path, name: &str, id: &str) -> Result<(), StateError> {
    let link = root.join(NAMES_DIR).join(name);
    match std::fs::read_link(&link) {
        Ok(target) if id_of_target(&target) == Some(id) => {}
        Ok(_) => return Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StateError::Io {
                action: "read the name link",
                path: link,
                source,
            })
        }
    }
    match std::fs::remove_file(&link) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Io {
            action: "remove the name link",
            path: link,
            source,
        }),
    }
}

fn target_of(id: &str) -> PathBuf {
    Path::new("..").join(SANDBOXES_DIR).join(id)
}

/// The id in a link's target, if the target has the shape [`link`] writes.
fn id_of_target(target: &Path) -> Option<&str> {
    let id = target
        .strip_prefix(Path::new("..").join(SANDBOXES_DIR))
        .ok()?;
    let id = id.to_str()?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_resolves_only_to_an_existing_directory() {
        let root = tempfile::tempdir().unwrap();
        link(root.path(), "web", "00ff").unwrap();
        assert_eq!(indexed_dir(root.path(), "web"), None, "no directory yet");
        std::fs::create_dir_all(root.path().join("sandboxes/00ff")).unwrap();
        assert_eq!(
            indexed_dir(root.path(), "web"),
            Some(root.path().join("sandboxes/00ff"))
        );
        assert_eq!(indexed_dir(root.path(), "other"), None);
        assert_eq!(indexed_dir(root.path(), "../sandboxes"), None);
    }

    #[test]
    fn unlink_leaves_a_link_replaced_for_another_id() {
        let root = tempfile::tempdir().unwrap();
        link(root.path(), "web", "aa").unwrap();
        link(root.path(), "web", "bb").unwrap();
        unlink(root.path(), "web", "aa").unwrap();
        assert_eq!(
            std::fs::read_link(root.path().join("names/web")).unwrap(),
            Path::new("../sandboxes/bb")
        );
        unlink(root.path(), "web", "bb").unwrap();
        assert!(!root.path().join("names/web").exists());
        unlink(root.path(), "web", "bb").unwrap();
    }

    #[test]
    fn a_link_of_another_shape_is_ignored() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("names")).unwrap();
        std::fs::create_dir_all(root.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink("../elsewhere", root.path().join("names/web")).unwrap();
        assert_eq!(indexed_dir(root.path(), "web"), None);
    }
}
