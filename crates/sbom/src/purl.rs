//! Package URLs (<https://github.com/package-url/purl-spec>) for Debian packages and OCI images,
//! in the canonical form `packageurl-python` prints.

/// Percent-encodes everything but unreserved characters and those in `keep`.
fn encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || keep.contains(&b)
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn segment(s: &str) -> String {
    encode(s, b":")
}

fn qualifier(s: &str) -> String {
    encode(s, b":/")
}

/// `pkg:TYPE/NAMESPACE/NAME@VERSION?k=v&…` with qualifiers sorted by key and empty ones left out.
fn purl(
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    version: &str,
    qualifiers: &mut [(&str, String)],
) -> String {
    let mut out = format!("pkg:{kind}/");
    if let Some(ns) = namespace {
        out.push_str(&segment(ns));
        out.push('/');
    }
    out.push_str(&segment(name));
    out.push('@');
    out.push_str(&segment(version));
    qualifiers.sort_by(|a, b| a.0.cmp(b.0));
    let mut first = true;
    for (key, value) in qualifiers.iter().filter(|(_, v)| !v.is_empty()) {
        out.push(if first { '?' } else { '&' });
        first = false;
        out.push_str(key);
        out.push('=');
        out.push_str(&qualifier(value));
    }
    out
}

/// The vendor of a distro string: `debian` for `debian-12`.
pub(crate) fn vendor(distro: &str) -> String {
    distro
        .split('-')
        .next()
        .unwrap_or(distro)
        .to_ascii_lowercase()
}

/// `pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=DISTRO[&upstream=SOURCE[@VERSION]]`.
///
/// `upstream` (as syft and grype write it) names the source package when it differs from the
/// binary: Debian's security tracker is keyed by source package.
pub(crate) fn deb(
    distro: &str,
    name: &str,
    version: &str,
    arch: &str,
    upstream: Option<(&str, &str)>,
) -> String {
    let upstream = match upstream {
        Some((source, source_version)) if source_version != version => {
            format!("{source}@{source_version}")
        }
        Some((source, _)) if source != name => source.to_owned(),
        _ => String::new(),
    };
    purl(
        "deb",
        Some(&vendor(distro)),
        &name.to_ascii_lowercase(),
        version,
        &mut [
            ("arch", arch.to_owned()),
            ("distro", distro.to_owned()),
            ("upstream", upstream),
        ],
    )
}

/// `pkg:oci/NAME@DIGEST?repository_url=REPOSITORY&tag=TAG`; NAME is the last path segment of
/// the repository, lowercased.
pub(crate) fn oci(repository: &str, digest: &str, tag: Option<&str>) -> String {
    let name = repository.rsplit('/').next().unwrap_or(repository);
    purl(
        "oci",
        None,
        &name.to_ascii_lowercase(),
        digest,
        &mut [
            ("repository_url", repository.to_owned()),
            ("tag", tag.unwrap_or_default().to_owned()),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb_purls_are_canonical() {
        assert_eq!(
            deb(
                "debian-12",
                "zlib1g",
                "1:1.2.13.dfsg-1",
                "amd64",
                Some(("zlib", "1:1.2.13.dfsg-1"))
            ),
            "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12&upstream=zlib"
        );
        assert_eq!(
            deb("debian-12", "libstdc++6", "12.2.0-14+deb12u1", "amd64", Some(("gcc-12", "12.2.0-14+deb12u1"))),
            "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14%2Bdeb12u1?arch=amd64&distro=debian-12&upstream=gcc-12"
        );
        assert_eq!(
            deb(
                "debian-12",
                "tzdata",
                "2024a-0+deb12u1",
                "all",
                Some(("tzdata", "2024a-0+deb12u1"))
            ),
            "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all&distro=debian-12"
        );
        assert_eq!(
            deb("debian-12", "libpython3.11", "3.11.2-6+b1", "amd64", Some(("python3.11", "3.11.2-6"))),
            "pkg:deb/debian/libpython3.11@3.11.2-6%2Bb1?arch=amd64&distro=debian-12&upstream=python3.11%403.11.2-6"
        );
    }

    #[test]
    fn oci_purls_name_the_repository() {
        assert_eq!(
            oci("hardbox.local/Python", "sha256:ab", Some("3.11")),
            "pkg:oci/python@sha256:ab?repository_url=hardbox.local/Python&tag=3.11"
        );
        assert_eq!(
            oci("python", "sha256:ab", None),
            "pkg:oci/python@sha256:ab?repository_url=python"
        );
    }
}
