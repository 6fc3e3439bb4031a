//! Lexical checks on the names a layer gives its entries, done before any filesystem access.
//!
//! A name that passes is a list of plain components (no `.`, no `..`, no `/`, no NUL), so joining
//! it to the root can only reach below the root lexically; symlinks met on the way are then
//! resolved inside the root by the kernel (`RESOLVE_IN_ROOT`).

/// The longest entry name accepted, as `PATH_MAX`.
pub const MAX_NAME: usize = 4096;

/// Why an entry name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameProblem {
    Absolute,
    DotDot,
    Nul,
    TooLong,
}

/// A checked, normalised relative path: zero components is the root itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryPath {
    components: Vec<Vec<u8>>,
}

impl EntryPath {
    /// Checks and normalises a raw tar name: strips leading `./`, drops empty and `.`
    /// components, and refuses absolute names, `..`, NUL bytes and names over [`MAX_NAME`].
    pub fn parse(raw: &[u8]) -> Result<EntryPath, NameProblem> {
        if raw.len() > MAX_NAME {
            return Err(NameProblem::TooLong);
        }
        if raw.contains(&0) {
            return Err(NameProblem::Nul);
        }
        if raw.first() == Some(&b'/') {
            return Err(NameProblem::Absolute);
        }
        let mut components = Vec::new();
        for component in raw.split(|&b| b == b'/') {
            match component {
                b"" | b"." => {}
                b".." => return Err(NameProblem::DotDot),
                plain => components.push(plain.to_vec()),
            }
        }
        Ok(EntryPath { components })
    }

    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The last component, `None` for the root.
    pub fn file_name(&self) -> Option<&[u8]> {
        self.components.last().map(Vec::as_slice)
    }

    /// The components of the parent directory.
    pub fn parent_components(&self) -> &[Vec<u8>] {
        match self.components.split_last() {
            Some((_, parent)) => parent,
            None => &[],
        }
    }

    pub fn components(&self) -> &[Vec<u8>] {
        &self.components
    }

    /// The path joined with `/`, as given to `openat2` below the root (`.` for the root).
    pub fn joined(&self) -> Vec<u8> {
        join(&self.components)
    }

    /// This path with the last component replaced by `name`.
    pub fn with_file_name(&self, name: &[u8]) -> EntryPath {
        let mut components = self.parent_components().to_vec();
        components.push(name.to_vec());
        EntryPath { components }
    }

    /// The path of the parent directory (the root for a top-level entry).
    pub fn parent(&self) -> EntryPath {
        EntryPath {
            components: self.parent_components().to_vec(),
        }
    }

    /// This path extended by one component.
    pub fn child(&self, name: &[u8]) -> EntryPath {
        let mut components = self.components.clone();
        components.push(name.to_vec());
        EntryPath { components }
    }
}

/// Joins components with `/`; `.` for none.
pub fn join(components: &[Vec<u8>]) -> Vec<u8> {
    if components.is_empty() {
        return b".".to_vec();
    }
    let mut out = Vec::with_capacity(components.iter().map(|c| c.len() + 1).sum());
    for (i, component) in components.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(component);
    }
    out
}

/// What an entry's last component says about whiteouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhiteoutKind {
    /// Not a whiteout.
    None,
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
    /// `.wh.NAME`: NAME is deleted.
    Delete(Vec<u8>),
    /// Another `.wh..wh.` name: aufs metadata, not a whiteout.
    Metadata,
    /// `.wh.` followed by nothing usable (`.wh.`, `.wh..`).
    Invalid,
}

pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";

pub fn whiteout_kind(name: &[u8]) -> WhiteoutKind {
    if name == OPAQUE_WHITEOUT {
        return WhiteoutKind::Opaque;
    }
    match name.strip_prefix(WHITEOUT_PREFIX) {
        None => WhiteoutKind::None,
        Some(b"" | b"." | b"..") => WhiteoutKind::Invalid,
        Some(rest) if rest.starts_with(WHITEOUT_PREFIX) => WhiteoutKind::Metadata,
        Some(rest) => WhiteoutKind::Delete(rest.to_vec()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap values known to be valid")]
mod tests {
    use super::*;

    fn check(raw: &str, expected: Result<&str, NameProblem>) {
        let got = EntryPath::parse(raw.as_bytes()).map(|p| String::from_utf8(p.joined()).unwrap());
        assert_eq!(got.as_deref().map_err(|e| *e), expected, "{raw:?}");
    }

    #[test]
    fn names_are_normalised_or_refused() {
        check("a/b", Ok("a/b"));
        check("./a/b/", Ok("a/b"));
        check("././a//./b", Ok("a/b"));
        check("", Ok("."));
        check(".", Ok("."));
        check("./", Ok("."));
        check("..", Err(NameProblem::DotDot));
        check("../etc/passwd", Err(NameProblem::DotDot));
        check("a/../../b", Err(NameProblem::DotDot));
        check("a/..", Err(NameProblem::DotDot));
        check("/etc/passwd", Err(NameProblem::Absolute));
        check("a\0b", Err(NameProblem::Nul));
        check(&"a".repeat(MAX_NAME + 1), Err(NameProblem::TooLong));
        check("..a/b..", Ok("..a/b.."));
    }

    #[test]
    fn whiteout_names_are_classified() {
        assert_eq!(whiteout_kind(b"file"), WhiteoutKind::None);
        assert_eq!(whiteout_kind(b".wh..wh..opq"), WhiteoutKind::Opaque);
        assert_eq!(whiteout_kind(b".wh.x"), WhiteoutKind::Delete(b"x".to_vec()));
        assert_eq!(whiteout_kind(b".wh.."), WhiteoutKind::Invalid);
        assert_eq!(whiteout_kind(b".wh."), WhiteoutKind::Invalid);
        assert_eq!(whiteout_kind(b".wh..wh.plnk"), WhiteoutKind::Metadata);
    }
}
