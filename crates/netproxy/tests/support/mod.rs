//! Loopback test servers, a test CA, an engine on loopback listeners, and real clients.
//!
//! Everything listens on 127.0.0.x. Transparent listeners are bound at 127.0.0.1:P and the
//! upstream test servers at 127.0.0.2:P (same port, another loopback address): the engine takes
//! the port from the accepted socket's local address, as it would under the sandbox's AnyIP
//! route, and the test resolver sends the test names to 127.0.0.2.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use netproxy::events::{self, EventReceiver};
use netproxy::{
    CertificateAuthority, Engine, EngineConfig, Event, Listeners, Policy, SecretBinding, Secrets,
    ServeHandle, StaticResolver, UpstreamTrust,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

pub const UPSTREAM: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// A CA made in the test, standing for the public web's CAs.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub der: CertificateDer<'static>,
    pub pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "netproxy test web CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Self {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let params = CertificateParams::new(names).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// A request as a test server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub head: String,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// An HTTP/1.1 server (plain or TLS) that records requests. `GET /echo` answers with the
/// request's headers; everything else with `hello from NAME`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub fn plain(listener: TcpListener, name: &str) -> Self {
        Self::start(listener, name, None)
    }

    pub fn tls(listener: TcpListener, name: &str, config: Arc<rustls::ServerConfig>) -> Self {
        Self::start(listener, name, Some(TlsAcceptor::from(config)))
    }

    fn start(listener: TcpListener, name: &str, tls: Option<TlsAcceptor>) -> Self {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let name = name.to_owned();
        let recorded = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (name, recorded, tls) = (name.clone(), Arc::clone(&recorded), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve_http(stream, &name, &recorded).await;
                            }
                        }
                        None => serve_http(stream, &name, &recorded).await,
                    }
                });
            }
        });
        Self { addr, seen, task }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    name: &str,
    seen: &Mutex<Vec<Seen>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..length).collect();
        let request = Seen {
            head: head.clone(),
            body,
        };
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        seen.lock().unwrap().push(request);
        let path = head.split(' ').nth(1).unwrap_or("");
        let reply = if path == "/echo" {
            head.clone()
        } else {
            format!("hello from {name}\n")
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
        let _ = stream.flush().await;
        if close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// Binds 127.0.0.1:P and `other`:P on one free port P.
pub fn bind_pair(other: IpAddr) -> (TcpListener, TcpListener) {
    loop {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if let Ok(second) = TcpListener::bind(SocketAddr::new(other, port)) {
            return (first, second);
        }
    }
}

/// An engine serving loopback listeners.
pub struct Proxy {
    pub engine: Engine,
    pub handle: Option<ServeHandle>,
    pub events: EventReceiver,
    pub explicit: SocketAddr,
    pub dns: SocketAddr,
    pub dns_tcp: SocketAddr,
    pub ca_file: Option<tempfile::NamedTempFile>,
}

pub struct ProxyBuilder {
    pub rules: Vec<String>,
    pub resolver: StaticResolver,
    pub secrets: Vec<SecretBinding>,
    pub trust: Vec<CertificateDer<'static>>,
    pub http: Vec<TcpListener>,
    pub tls: Vec<TcpListener>,
    pub tcp: Vec<TcpListener>,
    pub strict_hostname: bool,
    pub event_capacity: usize,
}

impl ProxyBuilder {
    pub fn new(rules: &[&str]) -> Self {
        Self {
            rules: rules.iter().map(|r| (*r).to_owned()).collect(),
            resolver: StaticResolver::new(),
            secrets: Vec::new(),
            trust: Vec::new(),
            http: Vec::new(),
            tls: Vec::new(),
            tcp: Vec::new(),
            strict_hostname: true,
            event_capacity: 1024,
        }
    }

    pub fn name(mut self, name: &str, ip: &str) -> Self {
        self.resolver.insert(name, [ip.parse().unwrap()]);
        self
    }

    pub fn start(self) -> Proxy {
        let policy = Policy::parse(&self.rules).unwrap();
        let mut config = EngineConfig::new(policy);
        config.strict_hostname = self.strict_hostname;
        if !self.secrets.is_empty() {
            config.secrets = Secrets::new(self.secrets).unwrap();
            config.ca = Some(CertificateAuthority::generate().unwrap());
            config.upstream_trust = UpstreamTrust::Certificates(self.trust);
        }
        let (sender, events) = events::channel(self.event_capacity);
        let engine = Engine::new(config, Arc::new(self.resolver), sender).unwrap();
        let explicit = TcpListener::bind("127.0.0.1:0").unwrap();
        let dns = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dns_tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let (explicit_addr, dns_addr, dns_tcp_addr) = (
            explicit.local_addr().unwrap(),
            dns.local_addr().unwrap(),
            dns_tcp.local_addr().unwrap(),
        );
        let mut listeners = Listeners::new()
            .explicit(explicit)
            .dns_udp(dns)
            .dns_tcp(dns_tcp);
        for listener in self.http {
            listeners = listeners.http(listener);
        }
        for listener in self.tls {
            listeners = listeners.tls(listener);
        }
        for listener in self.tcp {
            listeners = listeners.tcp(listener);
        }
        let handle = engine.serve(listeners).unwrap();
        let ca_file = engine.ca_cert_pem().map(|pem| {
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), pem).unwrap();
            file
        });
        Proxy {
            engine,
            handle: Some(handle),
            events,
            explicit: explicit_addr,
            dns: dns_addr,
            dns_tcp: dns_tcp_addr,
            ca_file,
        }
    }
}

impl Proxy {
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.explicit)
    }

    /// Every event sent so far.
    pub fn drain(&mut self) -> Vec<Event> {
        let mut all = Vec::new();
        while let Some(event) = self.events.try_recv() {
            all.push(event);
        }
        all
    }

    pub fn placeholder(&self, name: &str) -> String {
        self.engine.secrets().placeholder(name).unwrap().to_owned()
    }

    pub fn ca_path(&self) -> PathBuf {
        self.ca_file.as_ref().unwrap().path().to_owned()
    }
}

/// A file holding `pem`, for curl's `--cacert`.
pub fn pem_file(pem: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), pem).unwrap();
    file
}

#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a real client (off the runtime's threads), without any proxy settings from the
/// environment.
pub async fn run(program: &str, args: Vec<String>) -> Output {
    let program = program.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(&program);
        command.args(&args);
        for var in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "all_proxy",
            "NO_PROXY",
            "no_proxy",
        ] {
            command.env_remove(var);
        }
        let output = command.output().unwrap();
        Output {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

/// curl with `-q -sS`, a safety limit against hangs, and the given arguments.
pub async fn curl(args: &[&str]) -> Output {
    let mut all: Vec<String> = ["-q", "-sS", "--max-time", "60"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    all.extend(args.iter().map(|s| (*s).to_owned()));
    run("curl", all).await
}

pub async fn python(script: &str, args: &[&str]) -> Output {
    let mut all = vec!["-c".to_owned(), script.to_owned()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    run("python3", all).await
}
