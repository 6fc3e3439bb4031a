//! Symbolic names for errnos, so messages say `EPERM` rather than `os error 1`.

use crate::Errno;

/// The symbolic name of `errno` (`"EPERM"`), or `None` for one this table does not know.
pub fn name(errno: Errno) -> Option<&'static str> {
    let name = match errno {
        Errno::PERM => "EPERM",
        Errno::NOENT => "ENOENT",
        Errno::SRCH => "ESRCH",
        Errno::INTR => "EINTR",
        Errno::IO => "EIO",
        Errno::NOEXEC => "ENOEXEC",
        Errno::BADF => "EBADF",
        Errno::CHILD => "ECHILD",
        Errno::AGAIN => "EAGAIN",
        Errno::NOMEM => "ENOMEM",
        Errno::ACCESS => "EACCES",
        Errno::FAULT => "EFAULT",
        Errno::BUSY => "EBUSY",
        Errno::EXIST => "EEXIST",
        Errno::XDEV => "EXDEV",
        Errno::NODEV => "ENODEV",
        Errno::NOTDIR => "ENOTDIR",
        Errno::ISDIR => "EISDIR",
        Errno::INVAL => "EINVAL",
        Errno::MFILE => "EMFILE",
        Errno::TXTBSY => "ETXTBSY",
        Errno::NOSPC => "ENOSPC",
        Errno::ROFS => "EROFS",
        Errno::MLINK => "EMLINK",
        Errno::NAMETOOLONG => "ENAMETOOLONG",
        Errno::NOSYS => "ENOSYS",
        Errno::LOOP => "ELOOP",
        Errno::OVERFLOW => "EOVERFLOW",
        Errno::USERS => "EUSERS",
        Errno::OPNOTSUPP => "EOPNOTSUPP",
        Errno::TOOBIG => "E2BIG",
        _ => return None,
    };
    Some(name)
}

/// `EPERM (Operation not permitted)`, or `errno 123 (...)` for an errno without a known name.
pub fn describe(errno: Errno) -> String {
    let text = std::io::Error::from_raw_os_error(errno.raw_os_error()).to_string();
    // std renders "Operation not permitted (os error 1)"; keep the words only.
    let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
    match name(errno) {
        Some(name) => format!("{name} ({text})"),
        None => format!("errno {} ({text})", errno.raw_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_known_and_unknown_errnos() {
        assert_eq!(describe(Errno::PERM), "EPERM (Operation not permitted)");
        assert!(describe(Errno::from_raw_os_error(133)).starts_with("errno 133 ("));
    }
}
