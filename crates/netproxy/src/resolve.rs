//! Name resolution for upstream connections and DNS answers, behind a trait so the caller
//! chooses: [`SystemResolver`] asks the host's resolver (in the host's namespace, where the
//! engine runs); [`StaticResolver`] answers from a map (tests); [`PinnedResolver`] answers
//! pinned names from a map and asks another resolver for the rest (the policy's
//! `network.hosts`, like `curl --resolve`).
//!
//! A resolver only says where a name points: every address it gives is still checked by the
//! policy before the proxy connects or the DNS responder answers.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed resolution future.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Resolves host names to addresses. `Err` with [`io::ErrorKind::NotFound`] means the name does
/// not exist (NXDOMAIN); other errors are failures (SERVFAIL).
pub trait Resolver: Send + Sync + 'static {
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a>;
}

/// The host's resolver, through `getaddrinfo` on tokio's blocking pool.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((name, 0)).await.map_err(|err| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("cannot resolve {name}: {err}"),
                )
            })?;
            let mut ips: Vec<IpAddr> = Vec::new();
            for addr in addrs {
                if !ips.contains(&addr.ip()) {
                    ips.push(addr.ip());
                }
            }
            Ok(ips)
        })
    }
}

/// Answers from a fixed map of lowercase names; other names do not exist.
#[derive(Debug, Default, Clone)]
pub struct StaticResolver {
    names: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the addresses of `name`.
    pub fn insert(&mut self, name: &str, addrs: impl IntoIterator<Item = IpAddr>) -> &mut Self {
        self.names.insert(
            name.trim_end_matches('.').to_ascii_lowercase(),
            addrs.into_iter().collect(),
        );
        self
    }

    /// Builder form of [`StaticResolver::insert`].
    pub fn with(mut self, name: &str, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.insert(name, addrs);
        self
    }
}

impl Resolver for StaticResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a> {
        let answer = match self
            .names
            .get(&name.trim_end_matches('.').to_ascii_lowercase())
        {
            Some(addrs) => Ok(addrs.clone()),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{name} is not in the resolver's map"),
            )),
        };
        Box::pin(std::future::ready(answer))
    }
}

/// Pinned names from a map, every other name from `fallback`.
#[derive(Clone)]
pub struct PinnedResolver {
    pinned: StaticResolver,
    fallback: Arc<dyn Resolver>,
}

impl std::fmt::Debug for PinnedResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedResolver")
            .field("pinned", &self.pinned)
            .finish_non_exhaustive()
    }
}

impl PinnedResolver {
    pub fn new(pinned: StaticResolver, fallback: Arc<dyn Resolver>) -> Self {
        Self { pinned, fallback }
    }
}

impl Resolver for PinnedResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a> {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        match self.pinned.names.get(&key) {
            Some(addrs) => Box::pin(std::future::ready(Ok(addrs.clone()))),
            None => self.fallback.resolve(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pinned_names_win_and_others_go_to_the_fallback() {
        let fallback = StaticResolver::new().with("other.test", ["192.0.2.7".parse().unwrap()]);
        let pinned = StaticResolver::new().with("API.test.", ["127.0.0.1".parse().unwrap()]);
        let resolver = PinnedResolver::new(pinned, Arc::new(fallback));
        let addrs = |v: &[&str]| {
            v.iter()
                .map(|a| a.parse().unwrap())
                .collect::<Vec<IpAddr>>()
        };
        assert_eq!(
            resolver.resolve("api.test").await.unwrap(),
            addrs(&["127.0.0.1"])
        );
        assert_eq!(
            resolver.resolve("other.test").await.unwrap(),
            addrs(&["192.0.2.7"])
        );
        let missing = resolver.resolve("missing.test").await.unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }
}
