//! Paths in a policy and their expansion.
//!
//! A policy path is absolute, or starts with `~`, `$HOME` or `$WORKSPACE`; relative paths are
//! rejected when the policy is parsed, because their meaning would depend on the directory
//! hardbox happens to run in. Expansion is a separate, pure step that takes the values of those
//! variables, so the same policy can be shown unexpanded and applied expanded.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ValueError;

/// A path as written in a policy: absolute, or starting with `~`, `$HOME` or `$WORKSPACE`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PolicyPath(String);

/// The variable a policy path starts with, and the rest after it.
enum Root<'a> {
    Absolute,
    Home(&'a str),
    Workspace(&'a str),
}

/// Splits `path` into its root and the rest, if the root is one a policy may use.
fn root_of(path: &str) -> Option<Root<'_>> {
    // `rest` must be empty or start a new component.
    let variable = |prefix: &str| {
        path.strip_prefix(prefix)
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if path.starts_with('/') {
        Some(Root::Absolute)
    } else if let Some(rest) = variable("~") {
        Some(Root::Home(rest))
    } else if let Some(rest) = variable("$HOME") {
        Some(Root::Home(rest))
    } else {
        variable("$WORKSPACE").map(Root::Workspace)
    }
}

impl PolicyPath {
    /// `path`, if a policy may use it.
    ///
    /// # Errors
    ///
    /// [`ValueError::Path`] for relative paths, other variables and `~user`.
    pub fn new(path: &str) -> Result<PolicyPath, ValueError> {
        if path.contains('\0') || root_of(path).is_none() {
            return Err(ValueError::Path {
                input: path.to_owned(),
            });
        }
        Ok(PolicyPath(path.to_owned()))
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PolicyPath {
    type Error = ValueError;

    fn try_from(path: String) -> Result<PolicyPath, ValueError> {
        PolicyPath::new(&path)
    }
}

impl From<PolicyPath> for String {
    fn from(path: PolicyPath) -> String {
        path.0
    }
}

impl fmt::Display for PolicyPath {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// The values `~`, `$HOME` and `$WORKSPACE` expand to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathVariables<'a> {
    /// The user's home directory; `~` and `$HOME` need it.
    pub home: Option<&'a Path>,
    /// The directory the sandbox works on; `$WORKSPACE` needs it.
    pub workspace: Option<&'a Path>,
}

/// A policy path that cannot be expanded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// The path starts with `~` or `$HOME` but no home directory is known.
    #[error("cannot expand policy path {path}: no home directory is known")]
    NoHome {
        /// The path as written.
        path: String,
    },
    /// The path starts with `$WORKSPACE` but the sandbox has no workspace.
    #[error("cannot expand policy path {path}: this sandbox has no workspace")]
    NoWorkspace {
        /// The path as written.
        path: String,
    },
    /// The value given for a variable is not absolute.
    #[error("cannot expand policy path {path}: {variable} is {value}, which is not absolute")]
    RelativeValue {
        /// The path as written.
        path: String,
        /// `$HOME` or `$WORKSPACE`.
        variable: &'static str,
        /// The value given.
        value: PathBuf,
    },
}

/// Expands `path` with `variables`: `~` and `$HOME` become the home directory, `$WORKSPACE`
/// the workspace. Absolute paths are returned as they are.
///
/// # Errors
///
/// [`ExpandError`] when a variable the path needs is missing or not absolute.
pub fn expand_path(
    path: &PolicyPath,
    variables: PathVariables<'_>,
) -> Result<PathBuf, ExpandError> {
    let text = path.as_str();
    let join = |variable: &'static str, value: &Path, rest: &str| {
        if !value.is_absolute() {
            return Err(ExpandError::RelativeValue {
                path: text.to_owned(),
                variable,
                value: value.to_owned(),
            });
        }
        let rest = rest.trim_start_matches('/');
        Ok(if rest.is_empty() {
            value.to_owned()
        } else {
            value.join(rest)
        })
    };
    match root_of(text) {
        Some(Root::Home(rest)) => {
            let home = variables.home.ok_or_else(|| ExpandError::NoHome {
                path: text.to_owned(),
            })?;
            join("$HOME", home, rest)
        }
        Some(Root::Workspace(rest)) => {
            let workspace = variables
                .workspace
                .ok_or_else(|| ExpandError::NoWorkspace {
                    path: text.to_owned(),
                })?;
            join("$WORKSPACE", workspace, rest)
        }
        // `PolicyPath::new` admits only the roots above.
        Some(Root::Absolute) | None => Ok(PathBuf::from(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_paths() {
        let check = |input: &str, valid: bool| {
            assert_eq!(PolicyPath::new(input).is_ok(), valid, "{input:?}");
        };
        check("/", true);
        check("/etc/shadow", true);
        check("~", true);
        check("~/.ssh", true);
        check("$HOME", true);
        check("$HOME/.aws", true);
        check("$WORKSPACE", true);
        check("$WORKSPACE/build", true);
        check("", false);
        check("relative/path", false);
        check("./here", false);
        check("../up", false);
        check("~root/.ssh", false);
        check("$HOMEDIR/x", false);
        check("$WORKSPACES", false);
        check("$TMPDIR/x", false);
        check("/nul\0byte", false);
    }

    #[test]
    fn expansion() {
        let home = Path::new("/home/ada");
        let workspace = Path::new("/src/project");
        let both = PathVariables {
            home: Some(home),
            workspace: Some(workspace),
        };
        let check = |input: &str, variables: PathVariables<'_>, expected: Result<&str, &str>| {
            let Ok(path) = PolicyPath::new(input) else {
                panic!("{input} is a valid policy path");
            };
            let got = expand_path(&path, variables);
            match expected {
                Ok(expected) => assert_eq!(got, Ok(PathBuf::from(expected)), "{input}"),
                Err(message) => match got {
                    Err(error) => assert_eq!(error.to_string(), message, "{input}"),
                    Ok(path) => panic!("{input} expanded to {path:?}"),
                },
            }
        };
        check("/etc", both, Ok("/etc"));
        check("~", both, Ok("/home/ada"));
        check("~/.ssh", both, Ok("/home/ada/.ssh"));
        check("$HOME/.aws", both, Ok("/home/ada/.aws"));
        check("$WORKSPACE", both, Ok("/src/project"));
        check("$WORKSPACE/out", both, Ok("/src/project/out"));
        let none = PathVariables {
            home: None,
            workspace: None,
        };
        check("/etc", none, Ok("/etc"));
        check(
            "~/.ssh",
            none,
            Err("cannot expand policy path ~/.ssh: no home directory is known"),
        );
        check(
            "$WORKSPACE",
            none,
            Err("cannot expand policy path $WORKSPACE: this sandbox has no workspace"),
        );
        let relative = PathVariables {
            home: Some(Path::new("home")),
            workspace: None,
        };
        check(
            "~",
            relative,
            Err("cannot expand policy path ~: $HOME is home, which is not absolute"),
        );
    }
}
