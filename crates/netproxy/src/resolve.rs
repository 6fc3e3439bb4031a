//! Name resolution for upstream connections and DNS answers, behind a trait so the caller
//! chooses: [`SystemResolver`] asks the host's resolver (in the host's namespace, where the
//! engine runs); [`StaticResolver`] answers from a map (tests, pinned hosts).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;

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
