//! Reads whether a process runs under seccomp, for `hardbox doctor` and for tests.

use std::path::Path;

use crate::SeccompError;

/// The seccomp mode of a process, from the `Seccomp:` line of `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeccompMode {
    /// No seccomp (`0`).
    Disabled,
    /// Strict mode: only read, write, exit and sigreturn (`1`).
    Strict,
    /// One or more BPF filters (`2`).
    Filter,
}

/// The `Seccomp:` mode in the text of a `/proc/<pid>/status` file, if present and known.
pub fn parse_status(text: &str) -> Option<SeccompMode> {
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix("Seccomp:"))?
        .trim();
    match value {
        "0" => Some(SeccompMode::Disabled),
        "1" => Some(SeccompMode::Strict),
        "2" => Some(SeccompMode::Filter),
        _ => None,
    }
}

/// The seccomp mode of the calling process.
///
/// # Errors
///
/// [`SeccompError::ReadStatus`] if `/proc/self/status` cannot be read, and
/// [`SeccompError::MissingStatus`] if it has no usable `Seccomp:` line.
pub fn status_of_self() -> Result<SeccompMode, SeccompError> {
    let path = Path::new("/proc/self/status");
    let text = std::fs::read_to_string(path).map_err(|source| SeccompError::ReadStatus {
        path: path.to_owned(),
        source,
    })?;
    parse_status(&text).ok_or_else(|| SeccompError::MissingStatus {
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seccomp_line() {
        let check = |input: &str, expected: Option<SeccompMode>| {
            assert_eq!(parse_status(input), expected, "{input:?}");
        };
        check(
            "Name:\tcat\nNoNewPrivs:\t0\nSeccomp:\t0\nSeccomp_filters:\t0\n",
            Some(SeccompMode::Disabled),
        );
        check("Seccomp:\t1\n", Some(SeccompMode::Strict));
        check(
            "NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n",
            Some(SeccompMode::Filter),
        );
        check("Name:\tcat\n", None);
        check("Seccomp:\t7\n", None);
        check("Seccomp_filters:\t1\n", None);
    }

    #[test]
    fn reads_the_mode_of_this_process() {
        assert!(status_of_self().is_ok());
    }
}
