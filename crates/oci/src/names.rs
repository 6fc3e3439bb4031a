//! Image names as the store keeps them, and how a user's reference picks an image.
//!
//! Names are kept exactly as given (no registry normalisation), except that a name without a tag
//! gets `:latest`. A reference resolves, in order, as an exact name, as a name without tag, as a
//! full `sha256:<hex>` manifest digest, or as a unique hex prefix of at least 12 characters.

use types::Digest;

use crate::error::{NameError, ResolveError};
use crate::spec::Descriptor;

/// The shortest digest prefix accepted as a reference (as `docker` image ids).
pub const MIN_PREFIX: usize = 12;

/// Whether a name carries a tag (a `:` after the last `/`) or a digest (`@`).
fn has_tag(name: &str) -> bool {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.contains(':') || name.contains('@')
}

/// Checks a name and adds `:latest` when it has no tag.
pub fn normalize_name(name: &str) -> Result<String, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(NameError::BadCharacter(name.to_owned()));
    }
    if name.starts_with("sha256:") {
        return Err(NameError::LooksLikeDigest(name.to_owned()));
    }
    if has_tag(name) {
        Ok(name.to_owned())
    } else {
        Ok(format!("{name}:latest"))
    }
}

/// Splits a stored name into repository and tag (`<none>` when it has none).
pub fn split_name(name: &str) -> (&str, &str) {
    if let Some((repository, digest)) = name.split_once('@') {
        return (repository, digest);
    }
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (&name[..i], &name[i + 1..]),
        _ => (name, "<none>"),
    }
}

/// Picks the manifest descriptor `reference` names among the store's index entries.
pub fn resolve<'a>(
    manifests: &'a [Descriptor],
    reference: &str,
) -> Result<&'a Descriptor, ResolveError> {
    let by_name = |name: &str| manifests.iter().find(|d| d.ref_name() == Some(name));
    if let Some(found) = by_name(reference) {
        return Ok(found);
    }
    if let Ok(normalized) = normalize_name(reference) {
        if let Some(found) = by_name(&normalized) {
            return Ok(found);
        }
    }
    let not_found = || ResolveError::NotFound {
        reference: reference.to_owned(),
    };
    if let Ok(digest) = reference.parse::<Digest>() {
        return manifests
            .iter()
            .find(|d| d.digest == digest)
            .ok_or_else(not_found);
    }
    let prefix = reference.strip_prefix("sha256:").unwrap_or(reference);
    if prefix.len() >= MIN_PREFIX
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        let mut digests: Vec<&Descriptor> = Vec::new();
        for d in manifests
            .iter()
            .filter(|d| d.digest.hex().starts_with(prefix))
        {
            if !digests.iter().any(|seen| seen.digest == d.digest) {
                digests.push(d);
            }
        }
        return match digests.as_slice() {
            [] => Err(not_found()),
            [one] => Ok(one),
            many => Err(ResolveError::Ambiguous {
                reference: reference.to_owned(),
                count: many.len(),
            }),
        };
    }
    Err(not_found())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap values known to be valid")]
mod tests {
    use super::*;
    use crate::spec::{ANNOTATION_REF_NAME, MEDIA_TYPE_OCI_MANIFEST};

    fn named(name: Option<&str>, content: &[u8]) -> Descriptor {
        let mut d = Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, Digest::of(content), 1);
        if let Some(name) = name {
            d.annotations
                .insert(ANNOTATION_REF_NAME.to_owned(), name.to_owned());
        }
        d
    }

    #[test]
    fn names_get_latest_only_without_tag() {
        for (input, want) in [
            ("alpine", "alpine:latest"),
            ("alpine:3", "alpine:3"),
            ("localhost:5000/app", "localhost:5000/app:latest"),
            ("localhost:5000/app:v1", "localhost:5000/app:v1"),
            ("app@sha256:abc", "app@sha256:abc"),
        ] {
            assert_eq!(normalize_name(input).unwrap(), want, "{input}");
        }
        assert_eq!(normalize_name(""), Err(NameError::Empty));
        assert!(normalize_name("a b").is_err());
    }

    #[test]
    fn split_name_finds_the_tag() {
        assert_eq!(split_name("a/b:1"), ("a/b", "1"));
        assert_eq!(
            split_name("localhost:5000/b"),
            ("localhost:5000/b", "<none>")
        );
    }

    #[test]
    fn resolves_by_name_digest_and_unique_prefix() {
        let a = named(Some("a:latest"), b"a");
        let b = named(Some("b:1"), b"b");
        let unnamed = named(None, b"c");
        let all = vec![a.clone(), b.clone(), unnamed.clone()];
        assert_eq!(resolve(&all, "a").unwrap(), &a);
        assert_eq!(resolve(&all, "b:1").unwrap(), &b);
        assert_eq!(
            resolve(&all, &unnamed.digest.to_string()).unwrap(),
            &unnamed
        );
        assert_eq!(resolve(&all, unnamed.digest.short()).unwrap(), &unnamed);
        assert!(matches!(
            resolve(&all, &unnamed.digest.hex()[..11]),
            Err(ResolveError::NotFound { .. })
        ));
        assert!(matches!(
            resolve(&all, "b"),
            Err(ResolveError::NotFound { .. })
        ));
    }
}
