//! Direct versus proxied, against loopback servers, in one run:
//!
//! - throughput of one bulk TCP stream (server → client) through a CONNECT tunnel, direct and
//!   proxied alternately, `ROUNDS` times each: medians and the ratio of the medians;
//! - time to the end of the response on a new HTTPS connection (TCP + TLS handshake + one
//!   request), direct, through the transparent TLS listener (SNI read, not intercepted) and to a
//!   host with a secret (TLS terminated, placeholder swapped, TLS to the server), interleaved,
//!   `CONNECTIONS` of each: medians, p99 and the added medians;
//! - 200 concurrent HTTPS connections through the explicit proxy: errors and wall time.
//!
//! The engine runs on its own current-thread runtime, as in the supervisor; servers and clients
//! share another. Run:
//! `cargo run --release -p netproxy --example bench [-- MIB ROUNDS CONNECTIONS]`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netproxy::{
    events, CertificateAuthority, Engine, EngineConfig, Listeners, Placement, Policy,
    SecretBinding, Secrets, StaticResolver, UpstreamTrust,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const UPSTREAM: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const NAME: &str = "bench.test";
/// A name with a secret bound: its TLS is intercepted.
const SECRET_NAME: &str = "secret.bench.test";

fn tls_configs() -> (
    Arc<rustls::ServerConfig>,
    rustls::RootCertStore,
    rustls::pki_types::CertificateDer<'static>,
) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "bench CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![NAME.to_owned(), SECRET_NAME.to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    (Arc::new(server), roots, ca_cert.der().clone())
}

fn client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every connection is a new client: no resumption.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// 127.0.0.1:P for the proxy's transparent listener and 127.0.0.2:P for the server.
fn bind_pair() -> (TcpListener, TcpListener) {
    loop {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if let Ok(second) = TcpListener::bind(SocketAddr::new(UPSTREAM, port)) {
            return (first, second);
        }
    }
}

fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    // The same accept queue as the engine's listeners, so the peers compare fairly.
    rustix::net::listen(&listener, 4096).unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            tokio::spawn(handler(stream));
        }
    });
}

async fn connect_tunnel(proxy: SocketAddr, authority: &str) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        reply.push(byte[0]);
    }
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    stream
}

async fn read_all(mut stream: TcpStream) -> u64 {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            return total;
        }
        total += n as u64;
    }
}

/// TLS handshake and one request to `name` (with `header`); the time to the end of the
/// response.
async fn https_request(
    stream: TcpStream,
    client: &Arc<rustls::ClientConfig>,
    name: &str,
    header: &str,
) -> Result<Duration, String> {
    let start = Instant::now();
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let mut tls = TlsConnector::from(Arc::clone(client))
        .connect(server_name, stream)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET / HTTP/1.1\r\nHost: {name}\r\n{header}Connection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    if !response.starts_with(b"HTTP/1.1 200") {
        return Err("unexpected response".into());
    }
    Ok(start.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A new TCP connection to `address` and one HTTPS request; the time from before connect().
async fn new_connection(
    address: (IpAddr, u16),
    client: &Arc<rustls::ClientConfig>,
    name: &str,
    header: &str,
) -> Duration {
    let start = Instant::now();
    let stream = TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    https_request(stream, client, name, header).await.unwrap();
    start.elapsed()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let connections: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(500);
    let (server_tls, web_roots, web_ca) = tls_configs();

    // The engine, on its own thread and current-thread runtime.
    let (bulk_listener, tls_pair) = (
        TcpListener::bind(SocketAddr::new(UPSTREAM, 0)).unwrap(),
        bind_pair(),
    );
    let bulk_port = bulk_listener.local_addr().unwrap().port();
    let (transparent, https_listener) = tls_pair;
    let tls_port = transparent.local_addr().unwrap().port();
    let explicit = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = explicit.local_addr().unwrap();
    let policy = Policy::parse([
        format!("allow-host {NAME}"),
        format!("allow-host {SECRET_NAME}"),
        "allow-cidr 127.0.0.2/32".into(),
    ])
    .unwrap();
    let mut config = EngineConfig::new(policy);
    let binding = SecretBinding::new(
        "BENCH_KEY",
        "bench-secret-value",
        &[SECRET_NAME],
        Placement::Header("x-api-key".into()),
    )
    .unwrap();
    config.secrets = Secrets::new(vec![binding]).unwrap();
    config.ca = Some(CertificateAuthority::generate().unwrap());
    config.upstream_trust = UpstreamTrust::Certificates(vec![web_ca]);
    let (sender, mut receiver) = events::channel(4096);
    let resolver = StaticResolver::new()
        .with(NAME, [UPSTREAM])
        .with(SECRET_NAME, [UPSTREAM]);
    let engine = Engine::new(config, Arc::new(resolver), sender).unwrap();
    let placeholder = engine
        .secrets()
        .placeholder("BENCH_KEY")
        .unwrap()
        .to_owned();
    let mut sandbox_roots = web_roots.clone();
    sandbox_roots
        .add(engine_ca_der(engine.ca_cert_pem().unwrap()))
        .unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let handle = engine
                    .serve(Listeners::new().explicit(explicit).tls(transparent))
                    .unwrap();
                ready_tx.send(()).unwrap();
                // Drain events as the supervisor would.
                while receiver.recv().await.is_some() {}
                drop(handle);
            });
        })
        .unwrap();
    ready_rx.recv().unwrap();
    let client_tls = client_config(web_roots);
    let sandbox_tls = client_config(sandbox_roots);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let bytes = mib * 1024 * 1024;
        serve(bulk_listener, move |mut stream| async move {
            let chunk = vec![0x5Au8; 256 * 1024];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                if stream.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                left -= n as u64;
            }
        });
        let acceptor = TlsAcceptor::from(server_tls);
        serve(https_listener, move |stream| {
            let acceptor = acceptor.clone();
            async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
                    )
                    .await;
                let _ = tls.shutdown().await;
            }
        });

        // 1. Throughput.
        let mut direct = Vec::new();
        let mut proxied = Vec::new();
        let (mut cpu_direct, mut cpu_proxied) = (0u64, 0u64);
        for _ in 0..rounds {
            let before = cpu_ticks();
            let start = Instant::now();
            let got = read_all(TcpStream::connect((UPSTREAM, bulk_port)).await.unwrap()).await;
            assert_eq!(got, bytes);
            direct.push(bytes as f64 / start.elapsed().as_secs_f64() / (1024.0 * 1024.0));
            let middle = cpu_ticks();
            let start = Instant::now();
            let tunnel = connect_tunnel(proxy_addr, &format!("127.0.0.2:{bulk_port}")).await;
            let got = read_all(tunnel).await;
            assert_eq!(got, bytes);
            proxied.push(bytes as f64 / start.elapsed().as_secs_f64() / (1024.0 * 1024.0));
            let after = cpu_ticks();
            cpu_direct += middle - before;
            cpu_proxied += after - middle;
        }
        let (direct_mibs, proxied_mibs) = (median(&mut direct), median(&mut proxied));
        println!("throughput, one stream of {mib} MiB through CONNECT (median of {rounds}):");
        println!("  direct   {direct_mibs:8.0} MiB/s");
        println!(
            "  proxied  {proxied_mibs:8.0} MiB/s   ratio {:.2}",
            proxied_mibs / direct_mibs
        );
        // CPU time of the whole process (clients, servers and proxy) per GiB moved: unlike the
        // rates, it hardly depends on how much of the machine other work takes.
        let per_gib = |ticks: u64| ticks as f64 / 100.0 / (rounds as f64 * mib as f64 / 1024.0);
        println!(
            "  cpu per GiB, whole process: direct {:.2} s, proxied {:.2} s",
            per_gib(cpu_direct),
            per_gib(cpu_proxied)
        );

        // 2. New HTTPS connections, one after another, interleaved.
        let mut direct = Vec::with_capacity(connections);
        let mut transparent = Vec::with_capacity(connections);
        let mut intercepted = Vec::with_capacity(connections);
        let secret_header = format!("x-api-key: {placeholder}\r\n");
        for _ in 0..connections {
            direct.push(new_connection((UPSTREAM, tls_port), &client_tls, NAME, "").await);
            let local = (IpAddr::V4(Ipv4Addr::LOCALHOST), tls_port);
            transparent.push(new_connection(local, &client_tls, NAME, "").await);
            intercepted
                .push(new_connection(local, &sandbox_tls, SECRET_NAME, &secret_header).await);
        }
        direct.sort();
        transparent.sort();
        intercepted.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let direct_median = ms(percentile(&direct, 0.5));
        println!("new https connection, connect + handshake + request ({connections} each):");
        println!(
            "  direct                     median {direct_median:.3} ms  p99 {:.3} ms",
            ms(percentile(&direct, 0.99))
        );
        for (label, samples) in [
            ("transparent (by SNI)", &transparent),
            ("intercepted (secret)", &intercepted),
        ] {
            println!(
                "  {label:<26} median {:.3} ms  p99 {:.3} ms   added median {:.3} ms",
                ms(percentile(samples, 0.5)),
                ms(percentile(samples, 0.99)),
                ms(percentile(samples, 0.5)) - direct_median
            );
        }

        // 3. 200 concurrent connections, direct and through CONNECT.
        for through_proxy in [false, true] {
            let start = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..200 {
                let client = Arc::clone(&client_tls);
                tasks.push(tokio::spawn(async move {
                    let stream = if through_proxy {
                        connect_tunnel(proxy_addr, &format!("{NAME}:{tls_port}")).await
                    } else {
                        TcpStream::connect((UPSTREAM, tls_port)).await.unwrap()
                    };
                    https_request(stream, &client, NAME, "").await
                }));
            }
            let mut errors = 0;
            for task in tasks {
                if !matches!(task.await, Ok(Ok(_))) {
                    errors += 1;
                }
            }
            let label = if through_proxy {
                "through CONNECT"
            } else {
                "direct"
            };
            println!(
                "200 concurrent https connections, {label:<15}: {errors} errors, {:.1} ms wall",
                ms(start.elapsed())
            );
        }
    });
}

/// User and system CPU time of this process so far, ended threads included, in clock ticks
/// (1/100 s on Linux).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command's closing parenthesis start at field 3 (state); utime and
    // stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn engine_ca_der(pem: &str) -> rustls::pki_types::CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}
