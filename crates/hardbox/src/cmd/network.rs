//! `run --network proxy`: turns the policy's `[network]` rules and `[secrets]` into the egress
//! proxy's configuration, the sandbox's environment (proxy variables, secret placeholders, the
//! CA bundle it trusts), and the [`sandbox::Hooks`] that serve the sandbox's listeners on a
//! thread of this process for as long as the sandbox runs.

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
        environment,
        tcp_ports,
        ca_bundle,
        runner: None,
    })
}

impl ProxySetup {
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
        let (events, mut receiver) = netproxy::events::channel(4096);
        let engine = netproxy::Engine::new(config, Arc::new(netproxy::SystemResolver), events)
            .map_err(|error| format!("{error:#}"))?;
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
            engine.serve(served).map_err(|error| format!("{error:#}"))?
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hardbox-proxy".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let report = async {
                        while let Some(event) = receiver.recv().await {
                            report_denial(&event);
                        }
                    };
                    tokio::select! {
                        _ = stopped => {}
                        () = report => {}
                    }
                    handle.shutdown().await;
                    while let Some(event) = receiver.try_recv() {
                        report_denial(&event);
                    }
                });
            })
            .map_err(|error| format!("failed to start the proxy's thread: {error}"))?;
        self.runner = Some(Runner { stop, thread });
        Ok(())
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
