//! `run --network proxy`: turns the policy's `[network]` rules and `[secrets]` into the egress
//! proxy's configuration, the sandbox's environment (proxy variables, secret placeholders, the
//! CA bundle it trusts), and the [`sandbox::Hooks`] that serve the sandbox's listeners on a
//! thread of this process for as long as the sandbox runs.
//!
//! Every proxy event goes, from the proxy's thread, to the event feed's [`events::Recorder`]
//! when one is given ([`ProxySetup::record_to`]); denials are also told to the user on stderr.
//! Neither ever holds a secret's value.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use policy::{NetworkPreset, Policy};

use crate::output;

/// Where the CA bundle is mounted in the sandbox (the sandbox's `/run` is its own).
const CA_BUNDLE_IN_SANDBOX: &str = "/run/hardbox/ca-certificates.crt";

/// The proxy of one sandbox, ready to be served.
pub struct ProxySetup {
    config: Option<netproxy::EngineConfig>,
    /// Names the proxy resolves to fixed addresses (`network.hosts`).
    pinned: netproxy::StaticResolver,
    /// Where every proxy event is recorded, when the sandbox has an event feed.
    recorder: Option<events::Recorder>,
    /// Variables the sandbox gets: proxy addresses, secret placeholders, CA bundle paths.
    pub environment: Vec<(String, String)>,
    /// Ports of `allow_tcp` rules, which get listeners too.
    pub tcp_ports: Vec<u16>,
    /// The host file bound at [`CA_BUNDLE_IN_SANDBOX`], when secrets are bound (removed on drop).
    pub ca_bundle: Option<(fsutil::TempPath, PathBuf)>,
    runner: Option<Runner>,
}

struct Runner {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// The rules the proxy applies, in its rule syntax.
fn rules(policy: &Policy) -> Vec<String> {
    let network = &policy.network;
    let preset = match network.preset {
        NetworkPreset::None => "none",
        NetworkPreset::Dev => "dev",
        NetworkPreset::All => "all",
    };
    let mut rules = vec![format!("preset {preset}")];
    rules.extend(
        network
            .allow_hosts
            .iter()
            .map(|h| format!("allow-host {h}")),
    );
    rules.extend(network.deny_hosts.iter().map(|h| format!("deny-host {h}")));
    rules.extend(
        network
            .allow_cidrs
            .iter()
            .map(|c| format!("allow-cidr {c}")),
    );
    rules.extend(network.allow_tcp.iter().map(|t| format!("allow-tcp {t}")));
    rules
}

/// Builds the proxy for `policy` (with `mode = "proxy"`); secrets are read from the store at
/// `store_root`.
pub fn prepare(policy: &Policy, store_root: &Path) -> Result<ProxySetup> {
    let proxy_policy = netproxy::Policy::parse(rules(policy)).context("invalid network rules")?;
    let mut tcp_ports = Vec::new();
    for rule in &policy.network.allow_tcp {
        let port = rule
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .with_context(|| format!("invalid allow_tcp {rule:?}: expected HOST:PORT"))?;
        tcp_ports.push(port);
    }
    let mut bindings = Vec::new();
    for (name, binding) in &policy.secrets {
        let value = super::secret::read(store_root, name)?;
        let value =
            String::from_utf8(value).with_context(|| format!("secret {name} is not UTF-8 text"))?;
        let hosts: Vec<&str> = binding.hosts.iter().map(String::as_str).collect();
        let placement = match &binding.header {
            Some(header) => netproxy::Placement::Header(header.clone()),
            None => netproxy::Placement::AnyHeader,
        };
        bindings.push(
            netproxy::SecretBinding::new(name, value, &hosts, placement)
                .with_context(|| format!("invalid secrets.{name}"))?,
        );
    }
    let secrets = netproxy::Secrets::new(bindings).context("invalid secrets")?;
    let proxy = format!("http://{}", sandbox::EXPLICIT_PROXY);
    let mut environment = Vec::new();
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        environment.push((name.to_owned(), proxy.clone()));
    }
    for name in ["NO_PROXY", "no_proxy"] {
        environment.push((name.to_owned(), "localhost,127.0.0.1,::1".to_owned()));
    }
    for (name, placeholder) in secrets.placeholders() {
        environment.push((name.to_owned(), placeholder.to_owned()));
    }
    let mut config = netproxy::EngineConfig::new(proxy_policy);
    config.strict_hostname = policy.network.strict_hostname;
    if !policy.network.upstream_ca_files.is_empty() {
        config.upstream_trust = netproxy::UpstreamTrust::HostStoreAnd(
            policy
                .network
                .upstream_ca_files
                .iter()
                .map(|file| file.as_path().to_owned())
                .collect(),
        );
    }
    let mut pinned = netproxy::StaticResolver::new();
    for (name, address) in &policy.network.hosts {
        pinned.insert(name.as_str(), [*address]);
    }
    let mut ca_bundle = None;
    if !secrets.is_empty() {
        let ca = netproxy::CertificateAuthority::generate()
            .context("failed to make the sandbox's certificate authority")?;
        // The host's bundle plus the sandbox's CA: clients that take one file (OpenSSL's
        // SSL_CERT_FILE, requests, curl) still trust every public server.
        let mut bundle = std::fs::read(netproxy::HOST_TRUST_STORE)
            .with_context(|| format!("failed to read {}", netproxy::HOST_TRUST_STORE))?;
        if !bundle.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        bundle.extend_from_slice(ca.cert_pem().as_bytes());
        let directory = store_root.join("tmp");
        std::fs::create_dir_all(&directory)
            .with_context(|| format!("failed to create {}", directory.display()))?;
        let path = directory.join(fsutil::unique_name("ca-bundle-"));
        let guard = fsutil::TempPath::new(path.clone());
        std::fs::write(&path, &bundle)
            .with_context(|| format!("failed to write {}", path.display()))?;
        for name in [
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "NODE_EXTRA_CA_CERTS",
            "GIT_SSL_CAINFO",
        ] {
            environment.push((name.to_owned(), CA_BUNDLE_IN_SANDBOX.to_owned()));
        }
        ca_bundle = Some((guard, path));
        config.ca = Some(ca);
    }
    config.secrets = secrets;
    Ok(ProxySetup {
        config: Some(config),
        pinned,
        recorder: None,
        environment,
        tcp_ports,
        ca_bundle,
        runner: None,
    })
}

impl ProxySetup {
    /// Records every proxy event (connections, DNS questions, denials, secret uses, losses)
    /// with `recorder`. Call before the sandbox starts.
    pub fn record_to(&mut self, recorder: events::Recorder) {
        self.recorder = Some(recorder);
    }

    /// The bind that shows the CA bundle in the sandbox, if there is one.
    pub fn ca_bind(&self) -> Option<sandbox::Bind> {
        self.ca_bundle.as_ref().map(|(_, path)| sandbox::Bind {
            source: path.clone(),
            target: PathBuf::from(CA_BUNDLE_IN_SANDBOX),
            writable: false,
            directory: false,
        })
    }

    /// Stops the proxy (after the sandbox ended) and waits for its thread.
    pub fn stop(&mut self) {
        if let Some(runner) = self.runner.take() {
            let _ = runner.stop.send(());
            let _ = runner.thread.join();
        }
    }
}

impl Drop for ProxySetup {
    fn drop(&mut self) {
        self.stop();
    }
}

impl sandbox::Hooks for ProxySetup {
    fn network(&mut self, listeners: sandbox::ProxyListeners) -> Result<(), String> {
        let config = self
            .config
            .take()
            .ok_or_else(|| "the proxy was started twice".to_owned())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| format!("failed to start the proxy's runtime: {error}"))?;
        let (sender, mut receiver) = netproxy::events::channel(4096);
        let resolver =
            netproxy::PinnedResolver::new(self.pinned.clone(), Arc::new(netproxy::SystemResolver));
        let engine = netproxy::Engine::new(config, Arc::new(resolver), sender)
            .map_err(|error| error_chain(&error))?;
        let mut served = netproxy::Listeners::new()
            .http(listeners.http)
            .tls(listeners.tls)
            .explicit(listeners.explicit)
            .dns_udp(listeners.dns_udp)
            .dns_tcp(listeners.dns_tcp);
        for (_, listener) in listeners.tcp {
            served = served.tcp(listener);
        }
        let handle = {
            let _entered = runtime.enter();
            engine.serve(served).map_err(|error| error_chain(&error))?
        };
        let sink = Sink {
            recorder: self.recorder.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hardbox-proxy".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let report = async {
                        while let Some(event) = receiver.recv().await {
                            sink.take(&event);
                        }
                    };
                    tokio::select! {
                        _ = stopped => {}
                        () = report => {}
                    }
                    handle.shutdown().await;
                    while let Some(event) = receiver.try_recv() {
                        sink.take(&event);
                    }
                });
            })
            .map_err(|error| format!("failed to start the proxy's thread: {error}"))?;
        self.runner = Some(Runner { stop, thread });
        Ok(())
    }
}

/// The error and its sources, `: `-separated (the engine's errors name the file or listener).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Where the proxy thread puts each event.
struct Sink {
    recorder: Option<events::Recorder>,
}

impl Sink {
    fn take(&self, event: &netproxy::Event) {
        if let Some(recorder) = &self.recorder {
            // A full spool queue drops the event; the recorder counts it and the spool writes
            // a loss event.
            let _ = recorder.record(event.to_feed());
        }
        report_denial(event);
    }
}

/// Tells the user, on stderr, what the proxy refused (the event feed records everything).
fn report_denial(event: &netproxy::Event) {
    // Each refusal is one `hardbox.policy.denied` (its connect or DNS event repeats it).
    if event.name != netproxy::EventName::PolicyDenied {
        return;
    }
    let target = match (&event.server_address, event.server_port) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.clone(),
        _ => "a destination".to_owned(),
    };
    let rule = event.rule.as_deref().unwrap_or("default deny");
    let what = if event.exfiltration {
        format!(
            "blocked a request to {target} carrying the placeholder of secret {}",
            event.secret.as_deref().unwrap_or("?")
        )
    } else {
        format!("network: denied {target} ({rule})")
    };
    output::warn(&what);
}

/// `--network host` is refused unless the policy confirms it; other modes are checked here.
pub fn check_mode(policy: &Policy) -> Result<()> {
    if policy.network.mode == policy::NetworkMode::Host {
        bail!("network.mode = \"host\" is not supported yet: use \"proxy\" with allow rules");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The proxy of a sandbox recording into an event spool, on loopback listeners, with curl as
    //! the sandbox's client and an HTTPS server of a test CA behind a pinned name.

    use std::io::{Read, Write};
    use std::net::{TcpListener, UdpSocket};
    use std::process::Command;
    use std::sync::{Arc, Mutex};

    use super::*;

    const SECRET: &str = "real-value-0c6f1e2d9b";

    /// An HTTPS server on 127.0.0.2 for `names`, signed by a CA made here; returns its port,
    /// the CA's PEM and the `x-api-key` values it received.
    fn https_server(names: &[&str]) -> (u16, String, Arc<Mutex<Vec<String>>>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::default();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hardbox test web CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                )
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.2:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let connection = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
                let mut tls = rustls::StreamOwned::new(connection, stream);
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                if let Some(value) = head.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("x-api-key")
                        .then(|| value.trim().to_owned())
                }) {
                    recorded.lock().unwrap().push(value);
                }
                let _ = tls.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
                );
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        (port, ca_cert.pem(), seen)
    }

    fn dns_query(name: &str) -> Vec<u8> {
        let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            packet.push(u8::try_from(label.len()).unwrap());
            packet.extend_from_slice(label.as_bytes());
        }
        packet.extend_from_slice(&[0, 0, 1, 0, 1]);
        packet
    }

    fn curl(args: &[&str]) -> (String, String) {
        let output = Command::new("curl")
            .args(["-q", "-sS", "--max-time", "30", "--noproxy", ""])
            .args(args)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    #[test]
    fn every_proxy_event_is_recorded_in_the_spool_without_the_secrets_value() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir_all(store.join("secrets")).unwrap();
        std::fs::write(store.join("secrets/API_KEY"), SECRET).unwrap();
        let (port, ca_pem, seen) = https_server(&["api.hardbox.test"]);
        let ca_file = dir.path().join("test-ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let policy = Policy::from_toml(&format!(
            r#"
[network]
mode = "proxy"
allow_hosts = ["api.hardbox.test"]
allow_cidrs = ["127.0.0.2/32"]
upstream_ca_files = ["{}"]
hosts = {{ "api.hardbox.test" = "127.0.0.2" }}

[secrets.API_KEY]
hosts = ["api.hardbox.test"]
header = "x-api-key"
"#,
            ca_file.display()
        ))
        .unwrap();
        let spool =
            events::Spool::open(&dir.path().join("events"), events::SpoolOptions::default())
                .unwrap();
        let mut setup = prepare(&policy, &store).unwrap();
        setup.record_to(spool.recorder(netproxy::events::SENSOR));
        let placeholder = setup
            .environment
            .iter()
            .find(|(name, _)| name == "API_KEY")
            .map(|(_, value)| value.clone())
            .unwrap();
        let bundle = setup.ca_bundle.as_ref().unwrap().1.clone();
        let explicit = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = format!("http://{}", explicit.local_addr().unwrap());
        let dns = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dns_address = dns.local_addr().unwrap();
        sandbox::Hooks::network(
            &mut setup,
            sandbox::ProxyListeners {
                http: TcpListener::bind("127.0.0.1:0").unwrap(),
                tls: TcpListener::bind("127.0.0.1:0").unwrap(),
                explicit,
                dns_udp: dns,
                dns_tcp: TcpListener::bind("127.0.0.1:0").unwrap(),
                tcp: Vec::new(),
            },
        )
        .unwrap();

        let header = format!("x-api-key: {placeholder}");
        let url = format!("https://api.hardbox.test:{port}/");
        let bundle = bundle.to_str().unwrap();
        let (stdout, stderr) = curl(&["-x", &proxy, "--cacert", bundle, "-H", &header, &url]);
        assert_eq!(stdout, "ok\n", "{stderr}");
        let (stdout, _) = curl(&[
            "-x",
            &proxy,
            "-w",
            " %{http_connect}",
            "https://denied.hardbox.test/",
        ]);
        assert!(stdout.ends_with(" 403"), "{stdout}");
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        client
            .send_to(&dns_query("api.hardbox.test"), dns_address)
            .unwrap();
        let mut answer = [0u8; 512];
        client.recv_from(&mut answer).unwrap();
        setup.stop();
        let path = spool.path().to_owned();
        spool.close().unwrap();

        assert_eq!(*seen.lock().unwrap(), [SECRET]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(SECRET), "the spool holds the value:\n{text}");
        let lines: Vec<events::Event> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let find = |name: &str, host: &str| {
            lines
                .iter()
                .find(|event| {
                    event.name == name
                        && event.attributes.get("server.address")
                            == Some(&events::Value::from(host))
                })
                .unwrap_or_else(|| panic!("no {name} for {host} in:\n{text}"))
        };
        let string = |value: &str| events::Value::from(value);
        let connect = find(events::NETWORK_CONNECT, "api.hardbox.test");
        assert_eq!(connect.attributes["hardbox.decision"], string("allow"));
        assert_eq!(
            connect.attributes["hardbox.rule"],
            string("allow-host api.hardbox.test")
        );
        assert_eq!(connect.attributes["server.port"], events::Value::from(port));
        assert_eq!(
            connect.attributes["network.peer.address"],
            string("127.0.0.2")
        );
        assert_eq!(
            connect.attributes["hardbox.network.listener"],
            string("explicit")
        );
        let used = find(events::SECRET_USE, "api.hardbox.test");
        assert_eq!(used.attributes["hardbox.secret.name"], string("API_KEY"));
        let denied = find(events::POLICY_DENIED, "denied.hardbox.test");
        assert_eq!(denied.attributes["hardbox.policy.layer"], string("proxy"));
        assert_eq!(denied.attributes["hardbox.rule"], string("default deny"));
        assert_eq!(
            denied.attributes["hardbox.policy.attempted"],
            string("CONNECT denied.hardbox.test:443")
        );
        assert_eq!(denied.severity, events::Severity::Warn);
        let dns = find(events::DNS_QUERY, "api.hardbox.test");
        assert_eq!(dns.attributes["network.transport"], string("udp"));
        assert_eq!(dns.attributes["dns.question.type"], string("A"));
        assert_eq!(
            dns.attributes["dns.answers"],
            events::Value::StringArray(vec!["127.0.0.2".into()])
        );
        assert!(lines.windows(2).all(|w| w[0].sequence < w[1].sequence));
    }
}
