//! Direct versus proxied, against loopback servers, in one run:
//!
//! - throughput of one bulk TCP stream (server → client) through a CONNECT tunnel;
//! - time to a first response on a new HTTPS connection (TCP + TLS handshake + one request)
//!   through the transparent TLS listener (SNI read, not intercepted), median and p99;
//! - 200 concurrent HTTPS connections through the explicit proxy: errors and wall time.
//!
//! The engine runs on its own current-thread runtime, as in the supervisor; servers and clients
//! share another. Run: `cargo run --release -p netproxy --example bench [-- MIB ROUNDS]`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netproxy::{events, Engine, EngineConfig, Listeners, Policy, StaticResolver};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const UPSTREAM: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const NAME: &str = "bench.test";

fn tls_configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
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
    let cert = CertificateParams::new(vec![NAME.to_owned()])
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
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
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

/// TLS handshake and one request; the time to the end of the response.
async fn https_request(
    stream: TcpStream,
    client: &Arc<rustls::ClientConfig>,
) -> Result<Duration, String> {
    let start = Instant::now();
    let name = ServerName::try_from(NAME).unwrap();
    let mut tls = TlsConnector::from(Arc::clone(client))
        .connect(name, stream)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n")
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2048);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(500);
    let (server_tls, client_tls) = tls_configs();

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
        "allow-cidr 127.0.0.2/32".into(),
    ])
    .unwrap();
    let (sender, mut receiver) = events::channel(4096);
    let resolver = StaticResolver::new().with(NAME, [UPSTREAM]);
    let engine = Engine::new(EngineConfig::new(policy), Arc::new(resolver), sender).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
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
    });
    ready_rx.recv().unwrap();

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
        for _ in 0..3 {
            let start = Instant::now();
            let got = read_all(TcpStream::connect((UPSTREAM, bulk_port)).await.unwrap()).await;
            assert_eq!(got, bytes);
            direct.push(bytes as f64 / start.elapsed().as_secs_f64());
            let start = Instant::now();
            let tunnel = connect_tunnel(proxy_addr, &format!("127.0.0.2:{bulk_port}")).await;
            let got = read_all(tunnel).await;
            assert_eq!(got, bytes);
            proxied.push(bytes as f64 / start.elapsed().as_secs_f64());
        }
        let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max) / (1024.0 * 1024.0);
        let (direct_mibs, proxied_mibs) = (best(&direct), best(&proxied));
        println!("throughput, one stream of {mib} MiB (best of 3):");
        println!("  direct   {direct_mibs:8.0} MiB/s");
        println!(
            "  proxied  {proxied_mibs:8.0} MiB/s   ratio {:.2}",
            proxied_mibs / direct_mibs
        );

        // 2. New HTTPS connections, one after another, interleaved.
        let mut direct = Vec::with_capacity(rounds);
        let mut proxied = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let start = Instant::now();
            let stream = TcpStream::connect((UPSTREAM, tls_port)).await.unwrap();
            stream.set_nodelay(true).unwrap();
            https_request(stream, &client_tls).await.unwrap();
            direct.push(start.elapsed());
            let start = Instant::now();
            let stream = TcpStream::connect(("127.0.0.1", tls_port)).await.unwrap();
            stream.set_nodelay(true).unwrap();
            https_request(stream, &client_tls).await.unwrap();
            proxied.push(start.elapsed());
        }
        direct.sort();
        proxied.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!("new https connection, connect + handshake + request ({rounds} each):");
        println!(
            "  direct                median {:.3} ms  p99 {:.3} ms",
            ms(percentile(&direct, 0.5)),
            ms(percentile(&direct, 0.99))
        );
        println!(
            "  transparent (by SNI)  median {:.3} ms  p99 {:.3} ms   added median {:.3} ms",
            ms(percentile(&proxied, 0.5)),
            ms(percentile(&proxied, 0.99)),
            ms(percentile(&proxied, 0.5)) - ms(percentile(&direct, 0.5))
        );

        // 3. 200 concurrent connections through CONNECT.
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let client = Arc::clone(&client_tls);
            tasks.push(tokio::spawn(async move {
                let stream = connect_tunnel(proxy_addr, &format!("{NAME}:{tls_port}")).await;
                https_request(stream, &client).await
            }));
        }
        let mut errors = 0;
        for task in tasks {
            if !matches!(task.await, Ok(Ok(_))) {
                errors += 1;
            }
        }
        println!(
            "200 concurrent https connections through CONNECT: {errors} errors, {:.1} ms wall",
            ms(start.elapsed())
        );
    });
}
