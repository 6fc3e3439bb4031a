//! The engine: configuration, the listeners it is handed, and the tasks serving them.
//!
//! The engine does not create listeners. The supervisor binds them inside the sandbox's network
//! namespace (where an AnyIP route sends every connect() to them, so a socket's local address
//! is the destination the sandbox asked for) and hands them over as std sockets; the engine
//! serves them on the caller's tokio runtime and makes its own connections from wherever that
//! runtime runs (the host's namespace).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::dns::{self, DnsMap};
use crate::events::{EventSender, ListenerKind};
use crate::policy::{Policy, Target};
use crate::proxy;
use crate::resolve::Resolver;
use crate::secrets::{CertificateAuthority, Secrets};

/// The accept queue asked for on every TCP listener (the kernel caps it at `somaxconn`).
const LISTEN_BACKLOG: i32 = 4096;

/// The congestion control of connections accepted from the sandbox (see [`Engine::serve`]).
const LOOPBACK_CONGESTION: &str = "reno";

/// The host's CA bundle (Debian and derivatives).
pub const HOST_TRUST_STORE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The certificates upstream servers are verified against when the proxy terminates TLS.
#[derive(Debug, Clone)]
pub enum UpstreamTrust {
    /// [`HOST_TRUST_STORE`].
    HostStore,
    /// [`HOST_TRUST_STORE`] and these PEM bundles (a corporate TLS-inspecting proxy's CA):
    /// added, never replacing it. Each file must hold at least one certificate.
    HostStoreAnd(Vec<PathBuf>),
    /// A PEM bundle.
    PemFile(PathBuf),
    /// These roots (tests use their own CA).
    Certificates(Vec<CertificateDer<'static>>),
}

/// Everything the engine needs besides the resolver and the event channel.
#[derive(Debug)]
pub struct EngineConfig {
    pub policy: Policy,
    /// Secrets and their placeholders; hosts they are bound to get their TLS terminated.
    pub secrets: Secrets,
    /// Signs the leaf certificates for intercepted hosts; required when there are secrets.
    pub ca: Option<CertificateAuthority>,
    pub upstream_trust: UpstreamTrust,
    /// Refuse TLS without SNI and HTTP without `Host` on transparent listeners (default true);
    /// when false they are decided on the destination address and CIDR rules.
    pub strict_hostname: bool,
    /// TTL of DNS answers, seconds.
    pub dns_ttl: u32,
    /// Limit for connecting to an upstream address.
    pub connect_timeout: Duration,
    /// Limit for a client to send its request head or ClientHello.
    pub head_timeout: Duration,
    /// Connections served at once; more are closed on accept and counted.
    pub max_connections: usize,
}

impl EngineConfig {
    /// Defaults: no secrets, strict hostnames, the host's trust store.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            secrets: Secrets::default(),
            ca: None,
            upstream_trust: UpstreamTrust::HostStore,
            strict_hostname: true,
            dns_ttl: 60,
            connect_timeout: Duration::from_secs(10),
            head_timeout: Duration::from_secs(30),
            max_connections: 4096,
        }
    }
}

/// The engine could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("secrets are bound but no certificate authority was given to sign their hosts' certificates")]
    NoCertificateAuthority,
    #[error("cannot read the upstream trust store {path}")]
    TrustStore {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("the upstream trust store {path} holds no usable certificate")]
    EmptyTrustStore { path: PathBuf },
    #[error("cannot configure tls")]
    Tls(#[source] rustls::Error),
    #[error("cannot use the {kind} listener {address}")]
    Listener {
        kind: &'static str,
        address: String,
        #[source]
        source: io::Error,
    },
}

/// Counters shared by every task.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections: AtomicU64,
    pub denied: AtomicU64,
    pub over_limit: AtomicU64,
    pub dns_queries: AtomicU64,
    pub dns_malformed: AtomicU64,
    pub exfiltration: AtomicU64,
}

/// A snapshot of the engine's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// TCP connections accepted.
    pub connections: u64,
    /// Connections and DNS questions denied.
    pub denied: u64,
    /// Connections closed because `max_connections` were already served.
    pub over_limit: u64,
    pub dns_queries: u64,
    /// DNS packets dropped as malformed.
    pub dns_malformed: u64,
    /// Requests blocked for carrying a placeholder to another host.
    pub exfiltration: u64,
    /// Events lost because the channel was full.
    pub events_lost: u64,
}

/// Settings the connection handlers read.
#[derive(Debug)]
pub(crate) struct Tunables {
    pub strict_hostname: bool,
    pub dns_ttl: u32,
    pub connect_timeout: Duration,
    pub head_timeout: Duration,
}

/// TLS configuration for intercepted hosts.
pub(crate) struct Interception {
    pub ca: CertificateAuthority,
    pub upstream: Arc<ClientConfig>,
    server_configs: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

impl Interception {
    /// The server configuration presenting a leaf certificate for `host` (cached).
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, String> {
        if let Some(config) = self
            .server_configs
            .lock()
            .ok()
            .and_then(|c| c.get(host).cloned())
        {
            return Ok(config);
        }
        let (chain, key) = self
            .ca
            .issue(&Target::Name(host.to_owned()))
            .map_err(|err| err.to_string())?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|err| err.to_string())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        if let Ok(mut cache) = self.server_configs.lock() {
            cache.insert(host.to_owned(), Arc::clone(&config));
        }
        Ok(config)
    }
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// State shared by every task of an engine.
pub(crate) struct Shared {
    pub policy: Policy,
    pub secrets: Secrets,
    pub interception: Option<Interception>,
    pub resolver: Arc<dyn Resolver>,
    pub events: EventSender,
    pub dns_map: DnsMap,
    pub stats: Counters,
    pub config: Tunables,
    pub slots: Arc<Semaphore>,
}

/// The egress proxy engine of one sandbox.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("policy", &self.shared.policy)
            .field("secrets", &self.shared.secrets)
            .finish_non_exhaustive()
    }
}

fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, EngineError> {
    let error = |source| EngineError::TrustStore {
        path: path.to_owned(),
        source,
    };
    CertificateDer::pem_file_iter(path)
        .map_err(error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(error)
}

fn load_roots(trust: &UpstreamTrust) -> Result<RootCertStore, EngineError> {
    let mut roots = RootCertStore::empty();
    let (certificates, path, extra) = match trust {
        UpstreamTrust::Certificates(certificates) => (
            certificates.clone(),
            PathBuf::from("<given certificates>"),
            &[][..],
        ),
        UpstreamTrust::PemFile(path) => (pem_certificates(path)?, path.clone(), &[][..]),
        UpstreamTrust::HostStore => {
            let path = PathBuf::from(HOST_TRUST_STORE);
            (pem_certificates(&path)?, path, &[][..])
        }
        UpstreamTrust::HostStoreAnd(files) => {
            let path = PathBuf::from(HOST_TRUST_STORE);
            (pem_certificates(&path)?, path, files.as_slice())
        }
    };
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(EngineError::EmptyTrustStore { path });
    }
    for file in extra {
        let (added, _ignored) = roots.add_parsable_certificates(pem_certificates(file)?);
        if added == 0 {
            return Err(EngineError::EmptyTrustStore { path: file.clone() });
        }
    }
    Ok(roots)
}

impl Engine {
    /// Sets up an engine. With secrets, the CA must be given and the upstream trust store is
    /// loaded now (errors name the file).
    pub fn new(
        config: EngineConfig,
        resolver: Arc<dyn Resolver>,
        events: EventSender,
    ) -> Result<Self, EngineError> {
        let interception = if config.secrets.is_empty() {
            None
        } else {
            let ca = config.ca.ok_or(EngineError::NoCertificateAuthority)?;
            let roots = load_roots(&config.upstream_trust)?;
            let mut upstream = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(EngineError::Tls)?
                .with_root_certificates(roots)
                .with_no_client_auth();
            upstream.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(Interception {
                ca,
                upstream: Arc::new(upstream),
                server_configs: Mutex::new(HashMap::new()),
            })
        };
        Ok(Self {
            shared: Arc::new(Shared {
                policy: config.policy,
                secrets: config.secrets,
                interception,
                resolver,
                events,
                dns_map: DnsMap::default(),
                stats: Counters::default(),
                config: Tunables {
                    strict_hostname: config.strict_hostname,
                    dns_ttl: config.dns_ttl,
                    connect_timeout: config.connect_timeout,
                    head_timeout: config.head_timeout,
                },
                slots: Arc::new(Semaphore::new(config.max_connections.max(1))),
            }),
        })
    }

    /// The CA certificate to install in the sandbox, when secrets are bound.
    pub fn ca_cert_pem(&self) -> Option<&str> {
        self.shared
            .interception
            .as_ref()
            .map(|interception| interception.ca.cert_pem())
    }

    pub fn secrets(&self) -> &Secrets {
        &self.shared.secrets
    }

    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.stats;
        Stats {
            connections: c.connections.load(Ordering::Relaxed),
            denied: c.denied.load(Ordering::Relaxed),
            over_limit: c.over_limit.load(Ordering::Relaxed),
            dns_queries: c.dns_queries.load(Ordering::Relaxed),
            dns_malformed: c.dns_malformed.load(Ordering::Relaxed),
            exfiltration: c.exfiltration.load(Ordering::Relaxed),
            events_lost: self.shared.events.lost(),
        }
    }

    /// Serves `listeners` on the current tokio runtime until [`ServeHandle::shutdown`] (or the
    /// handle is dropped, which stops the tasks as well). Must be called from inside the
    /// runtime.
    pub fn serve(&self, listeners: Listeners) -> Result<ServeHandle, EngineError> {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        for (kind, listener) in listeners.tcp {
            let address = local_name(listener.local_addr());
            // Listening again only changes the backlog: std binds with 128, and a burst of new
            // connections beyond the accept queue costs the clients a SYN retransmit (1 s).
            let _ = rustix::net::listen(&listener, LISTEN_BACKLOG);
            // The sandbox's side of every connection is its loopback, where pacing (BBR paces,
            // and may be the host's default) only costs a timer interrupt per packet: accepted
            // connections inherit Reno, which never paces and is always permitted. It has to
            // be the listener's: a connection keeps pacing once BBR has started it.
            let _ = rustix::net::sockopt::set_tcp_congestion(&listener, LOOPBACK_CONGESTION);
            let listener = listener
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(listener))
                .map_err(|source| EngineError::Listener {
                    kind: kind_name(kind),
                    address,
                    source,
                })?;
            tasks.push(tokio::spawn(accept_loop(
                Arc::clone(&self.shared),
                listener,
                kind,
                stopped.clone(),
            )));
        }
        for socket in listeners.dns_udp {
            let address = local_name(socket.local_addr());
            let socket = socket
                .set_nonblocking(true)
                .and_then(|()| UdpSocket::from_std(socket))
                .map_err(|source| EngineError::Listener {
                    kind: "dns udp",
                    address,
                    source,
                })?;
            let shared = Arc::clone(&self.shared);
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = stopped.changed() => {}
                    () = dns::serve_udp(shared, socket) => {}
                }
            }));
        }
        Ok(ServeHandle {
            stop,
            tasks,
            engine: self.clone(),
        })
    }
}

fn local_name(address: io::Result<std::net::SocketAddr>) -> String {
    address.map_or_else(|_| "<unbound>".into(), |a| a.to_string())
}

fn kind_name(kind: ListenerKind) -> &'static str {
    match kind {
        ListenerKind::Explicit => "explicit proxy",
        ListenerKind::Http => "http",
        ListenerKind::Tls => "tls",
        ListenerKind::Tcp => "tcp",
        ListenerKind::Dns => "dns tcp",
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    kind: ListenerKind,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, client) = match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => {
                        // Out of descriptors or similar: let other tasks free some.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                let Ok(permit) = Arc::clone(&shared.slots).try_acquire_owned() else {
                    shared.stats.over_limit.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let shared = Arc::clone(&shared);
                connections.spawn(async move {
                    proxy::handle(shared, stream, client, kind).await;
                    drop(permit);
                });
            }
        }
    }
    // Dropping the set aborts the connections still open.
}

/// Listeners handed to [`Engine::serve`], by what they carry.
#[derive(Debug, Default)]
pub struct Listeners {
    tcp: Vec<(ListenerKind, std::net::TcpListener)>,
    dns_udp: Vec<std::net::UdpSocket>,
}

impl Listeners {
    pub fn new() -> Self {
        Self::default()
    }

    /// The explicit HTTP proxy (`HTTP(S)_PROXY`, e.g. 127.0.0.1:3128).
    pub fn explicit(mut self, listener: std::net::TcpListener) -> Self {
        self.tcp.push((ListenerKind::Explicit, listener));
        self
    }

    /// A transparent plain-HTTP listener (e.g. 0.0.0.0:80): decided on the `Host` header.
    pub fn http(mut self, listener: std::net::TcpListener) -> Self {
        self.tcp.push((ListenerKind::Http, listener));
        self
    }

    /// A transparent TLS listener (e.g. 0.0.0.0:443): decided on the SNI.
    pub fn tls(mut self, listener: std::net::TcpListener) -> Self {
        self.tcp.push((ListenerKind::Tls, listener));
        self
    }

    /// A transparent plain-TCP listener (e.g. 0.0.0.0:22 for `allow-tcp github.com:22`):
    /// decided on the destination address and the names the DNS responder gave for it.
    pub fn tcp(mut self, listener: std::net::TcpListener) -> Self {
        self.tcp.push((ListenerKind::Tcp, listener));
        self
    }

    /// The DNS responder over UDP (e.g. 0.0.0.0:53).
    pub fn dns_udp(mut self, socket: std::net::UdpSocket) -> Self {
        self.dns_udp.push(socket);
        self
    }

    /// The DNS responder over TCP (e.g. 0.0.0.0:53).
    pub fn dns_tcp(mut self, listener: std::net::TcpListener) -> Self {
        self.tcp.push((ListenerKind::Dns, listener));
        self
    }
}

/// Running listeners. Dropping the handle stops them too (their tasks are aborted).
#[derive(Debug)]
pub struct ServeHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    engine: Engine,
}

impl ServeHandle {
    /// Stops accepting, closes open connections and waits for the tasks to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }

    pub fn stats(&self) -> Stats {
        self.engine.stats()
    }
}

impl Drop for ServeHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}
