//! Connection handling: what each listener reads, how it decides, and how bytes move after.
//!
//! - **Explicit proxy**: `CONNECT host:port` is decided on the host; after `200` the first
//!   bytes are inspected (a TLS ClientHello whose SNI must equal the CONNECT host, or an HTTP
//!   head whose `Host` must) unless the deciding rule allows plain TCP (`allow-tcp`,
//!   `allow-cidr`). Absolute-URI requests (`GET http://host/...`) are decided on the URI's host,
//!   which the `Host` header must agree with, and forwarded one per connection.
//! - **Transparent TLS**: decided on the ClientHello's SNI (read, never terminated, unless the
//!   host has secrets); without SNI refused under `strict_hostname`, else decided on the
//!   destination address. Denials get a TLS `access_denied` alert.
//! - **Transparent HTTP**: decided on the `Host` header.
//! - **Transparent TCP**: decided on the destination address and the names the DNS responder
//!   gave for it (`allow-tcp NAME:PORT`).
//!
//! Whatever name was decided, the proxy resolves it itself and checks every address before
//! connecting ([`Policy::check_address`]): the sandbox's idea of where a name points does not
//! matter. Bulk data moves with `splice(2)`; only connections that carry plain HTTP while
//! secrets exist, or that are intercepted for secrets, are parsed request by request. There,
//! an HTTP/1.1 `Upgrade` (WebSocket) is followed: once the server answers the upgrade request
//! with `101`, bytes are relayed both ways as they come (placeholders in the upgrade request's
//! headers are swapped like any request's; nothing after it is parsed). Any other answer keeps
//! the connection HTTP.
//!
//! [`Policy::check_address`]: crate::policy::Policy::check_address

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use zeroize::{Zeroize, Zeroizing};

use crate::dns;
use crate::engine::Shared;
use crate::events::{Event, EventName, ListenerKind, Transport};
use crate::http::{
    simple_response, split_authority, BodyError, Buffered, Framing, RequestHead, ResponseTracker,
    Seen, Sent,
};
use crate::policy::{canonical_ip, DecidedBy, Decision, Policy, Target, Traffic, Verdict};
use crate::secrets::{mask_values, Rewrite};
use crate::tls::{self, StreamStart};

/// Bodies up to this size are read and checked before anything is sent upstream, so a blocked
/// request gets a clean 403; larger ones are checked as they stream.
const BODY_PREFIX: u64 = 64 * 1024;
/// How long the end of a response that could start a secret value is held back.
const HOLD_AT_MOST: Duration = Duration::from_millis(20);
/// A TLS alert record: fatal `access_denied`.
const ALERT_ACCESS_DENIED: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49];

pub(crate) async fn handle(
    shared: Arc<Shared>,
    stream: TcpStream,
    client: SocketAddr,
    kind: ListenerKind,
) {
    let _ = stream.set_nodelay(true);
    let Ok(dst) = stream.local_addr() else {
        return;
    };
    let conn = Conn {
        shared,
        client,
        dst,
        kind,
    };
    match kind {
        ListenerKind::Explicit => conn.explicit(stream).await,
        ListenerKind::Http => conn.transparent_http(stream).await,
        ListenerKind::Tls => conn.transparent_tls(stream).await,
        ListenerKind::Tcp => conn.transparent_tcp(stream).await,
        ListenerKind::Dns => dns::serve_tcp_connection(conn.shared, stream, client).await,
    }
}

/// Why connecting upstream did not happen.
enum Failure {
    /// Every address of the name is refused by the policy.
    Denied(Decision, IpAddr),
    Resolve(String),
    Connect(String),
}

/// The two directions of one relayed HTTP connection meet here: the request side says what it
/// sent, the response side follows the responses and answers an awaited upgrade.
#[derive(Default)]
struct Exchange {
    state: std::sync::Mutex<ExchangeState>,
    answered: tokio::sync::Notify,
}

#[derive(Default)]
struct ExchangeState {
    tracker: ResponseTracker,
    /// The answer to the upgrade request, once known: `true` for `101`.
    upgrade: Option<bool>,
}

impl Exchange {
    fn lock(&self) -> std::sync::MutexGuard<'_, ExchangeState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn sent(&self, request: Sent) {
        let mut state = self.lock();
        if state.tracker.tracking() {
            state.tracker.sent(request);
        } else if request.upgrade {
            // Responses are no longer followed (malformed, or a body running to the end of
            // the stream): the answer cannot be known, so the connection stays HTTP.
            state.upgrade = Some(false);
            drop(state);
            self.answered.notify_one();
        }
    }

    /// Follows response bytes (as they came from the server).
    fn received(&self, data: &[u8]) {
        let mut state = self.lock();
        if !state.tracker.tracking() {
            return;
        }
        if let Some(Seen::UpgradeAnswered(switched)) = state.tracker.feed(data) {
            state.upgrade = Some(switched);
            drop(state);
            self.answered.notify_one();
        }
    }

    /// Waits for the answer to the upgrade request just sent.
    async fn upgrade_answer(&self) -> bool {
        loop {
            if let Some(switched) = self.lock().upgrade.take() {
                return switched;
            }
            // A notification sent before this wait is kept as a permit: none is lost.
            self.answered.notified().await;
        }
    }
}

/// How the request loop ended.
enum RequestsEnd {
    /// The client closed its side.
    ClientClosed,
    /// The one request of an absolute-URI proxy request was sent.
    Single,
}

/// Why the request loop stopped early.
enum Stop {
    Blocked {
        decided_by: DecidedBy,
        secret: Option<String>,
        attempted: String,
    },
    Broken,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Plain HTTP: every placeholder is blocked (secrets are only swapped inside TLS).
    Plain,
    /// TLS terminated for a host with secrets: its placeholders are swapped, others blocked.
    Intercept,
}

struct Conn {
    shared: Arc<Shared>,
    client: SocketAddr,
    dst: SocketAddr,
    kind: ListenerKind,
}

fn deny_body(host: &str, port: u16, decided_by: &DecidedBy) -> String {
    format!("{host}:{port} blocked by hardbox network policy ({decided_by})\n")
}

fn same_host(header: &str, target: &Target) -> bool {
    split_authority(header)
        .and_then(|(host, _)| Target::parse(host).ok())
        .is_some_and(|parsed| &parsed == target)
}

impl Conn {
    fn event(&self, name: EventName) -> Event {
        Event::new(name, Transport::Tcp, self.kind).client(self.client)
    }

    fn report_allow(&self, host: &str, port: u16, decision: &Decision, peer: IpAddr) {
        let mut event = self
            .event(EventName::NetworkConnect)
            .server(host, Some(port))
            .decided(decision);
        event.peer_address = Some(peer);
        self.shared.events.send(event);
    }

    fn report_failure(
        &self,
        host: &str,
        port: u16,
        decision: &Decision,
        peer: Option<IpAddr>,
        error: String,
    ) {
        let mut event = self
            .event(EventName::NetworkConnect)
            .server(host, Some(port))
            .decided(decision);
        event.peer_address = peer;
        event.error = Some(error);
        self.shared.events.send(event);
    }

    fn report_deny(
        &self,
        host: &str,
        port: u16,
        decided_by: &DecidedBy,
        peer: Option<IpAddr>,
        attempted: String,
    ) {
        self.shared.stats.denied.fetch_add(1, Ordering::Relaxed);
        let decision = Decision::deny(decided_by.clone());
        let mut event = self
            .event(EventName::NetworkConnect)
            .server(host, Some(port))
            .decided(&decision);
        event.peer_address = peer;
        let mut denied = event.clone();
        denied.name = EventName::PolicyDenied;
        denied.layer = Some("proxy");
        denied.attempted = Some(attempted);
        self.shared.events.send(event);
        self.shared.events.send(denied);
    }

    fn report_blocked_request(
        &self,
        host: &str,
        port: u16,
        decided_by: &DecidedBy,
        secret: Option<String>,
        attempted: String,
    ) {
        self.shared.stats.denied.fetch_add(1, Ordering::Relaxed);
        let mut event = self
            .event(EventName::PolicyDenied)
            .server(host, Some(port))
            .decided(&Decision::deny(decided_by.clone()));
        event.layer = Some("proxy");
        event.attempted = Some(attempted);
        if secret.is_some() {
            self.shared
                .stats
                .exfiltration
                .fetch_add(1, Ordering::Relaxed);
            event.exfiltration = true;
        }
        event.secret = secret;
        self.shared.events.send(event);
    }

    /// Resolves (names) and connects to the first address the policy accepts.
    async fn connect_upstream(
        &self,
        target: &Target,
        port: u16,
    ) -> Result<(TcpStream, IpAddr), Failure> {
        let addrs = match target {
            Target::Ip(ip) => vec![*ip],
            Target::Name(name) => match self.shared.resolver.resolve(name).await {
                Ok(addrs) if !addrs.is_empty() => addrs,
                Ok(_) => return Err(Failure::Resolve(format!("{name} has no address"))),
                Err(err) => return Err(Failure::Resolve(err.to_string())),
            },
        };
        let mut refused = None;
        let mut failed = None;
        for ip in addrs {
            let ip = canonical_ip(ip);
            if let Some(decision) = self.shared.policy.check_address(ip, port) {
                refused.get_or_insert((decision, ip));
                continue;
            }
            let connect = TcpStream::connect(SocketAddr::new(ip, port));
            match tokio::time::timeout(self.shared.config.connect_timeout, connect).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok((stream, ip));
                }
                Ok(Err(err)) => failed = Some(format!("cannot connect to {ip}:{port}: {err}")),
                Err(_) => failed = Some(format!("connecting to {ip}:{port} timed out")),
            }
        }
        match (failed, refused) {
            (Some(error), _) => Err(Failure::Connect(error)),
            (None, Some((decision, ip))) => Err(Failure::Denied(decision, ip)),
            (None, None) => Err(Failure::Connect("no address to connect to".into())),
        }
    }

    /// Connects, reporting denials and failures; `None` means the caller answers the client
    /// with `on_denied` or `on_failed` (already reported).
    async fn connect_reporting(
        &self,
        host: &str,
        target: &Target,
        port: u16,
        decision: &Decision,
        attempted: &str,
    ) -> Result<(TcpStream, IpAddr), Option<DecidedBy>> {
        match self.connect_upstream(target, port).await {
            Ok(connected) => Ok(connected),
            Err(Failure::Denied(refusal, ip)) => {
                self.report_deny(
                    host,
                    port,
                    &refusal.decided_by,
                    Some(ip),
                    attempted.to_owned(),
                );
                Err(Some(refusal.decided_by))
            }
            Err(Failure::Resolve(error) | Failure::Connect(error)) => {
                self.report_failure(host, port, decision, None, error);
                Err(None)
            }
        }
    }

    async fn with_head_timeout<F: std::future::Future>(&self, future: F) -> Option<F::Output> {
        tokio::time::timeout(self.shared.config.head_timeout, future)
            .await
            .ok()
    }

    // ---- explicit proxy -------------------------------------------------------------------

    async fn explicit(self, stream: TcpStream) {
        let (read, mut write) = stream.into_split();
        let mut reader = Buffered::new(read);
        let head = match self.with_head_timeout(reader.read_head()).await {
            Some(Ok(Some(head))) => head,
            Some(Ok(None)) | None => return,
            Some(Err(err)) => {
                let body = format!("hardbox proxy: {err}\n");
                let _ = write
                    .write_all(&simple_response(400, "Bad Request", &body))
                    .await;
                return;
            }
        };
        if head.method.eq_ignore_ascii_case("CONNECT") {
            self.connect_method(head, reader, write).await;
        } else {
            self.absolute_request(head, reader, write).await;
        }
    }

    async fn connect_method(
        self,
        head: RequestHead,
        reader: Buffered<tokio::net::tcp::OwnedReadHalf>,
        mut write: tokio::net::tcp::OwnedWriteHalf,
    ) {
        let attempted = format!("CONNECT {}", head.target);
        let parsed = split_authority(&head.target)
            .and_then(|(host, port)| Some((Target::parse(host).ok()?, port?)));
        let Some((target, port)) = parsed else {
            let body = format!(
                "hardbox proxy: CONNECT needs host:port, got '{}'\n",
                head.target
            );
            let _ = write
                .write_all(&simple_response(400, "Bad Request", &body))
                .await;
            return;
        };
        let host = target.to_string();
        let decision = self.shared.policy.decide(&target, port, Traffic::Web);
        if !decision.is_allowed() {
            self.report_deny(&host, port, &decision.decided_by, None, attempted);
            let body = deny_body(&host, port, &decision.decided_by);
            let _ = write
                .write_all(&simple_response(403, "Forbidden", &body))
                .await;
            return;
        }
        let (upstream, peer) = match self
            .connect_reporting(&host, &target, port, &decision, &attempted)
            .await
        {
            Ok(connected) => connected,
            Err(Some(refusal)) => {
                let body = deny_body(&host, port, &refusal);
                let _ = write
                    .write_all(&simple_response(403, "Forbidden", &body))
                    .await;
                return;
            }
            Err(None) => {
                let body = format!("hardbox proxy: cannot reach {host}:{port}\n");
                let _ = write
                    .write_all(&simple_response(502, "Bad Gateway", &body))
                    .await;
                return;
            }
        };
        if write
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        let prefix = reader.buffered().to_vec();
        let Ok(client) = reader.inner.reunite(write) else {
            return;
        };
        let bound = matches!(&target, Target::Name(name) if self.shared.secrets.bound_to(name));
        if decision.allows_plain_tcp() && !bound {
            self.report_allow(&host, port, &decision, peer);
            tunnel(client, &prefix, upstream).await;
            return;
        }
        self.inspect_tunnel(
            client, prefix, target, port, decision, upstream, peer, attempted,
        )
        .await;
    }

    /// After CONNECT to a host allowed for HTTP/TLS: the tunnel must carry TLS with the same
    /// SNI, or HTTP with the same `Host`.
    #[expect(
        clippy::too_many_arguments,
        reason = "one connection's state, used once"
    )]
    async fn inspect_tunnel(
        self,
        mut client: TcpStream,
        mut prefix: Vec<u8>,
        target: Target,
        port: u16,
        decision: Decision,
        upstream: TcpStream,
        peer: IpAddr,
        attempted: String,
    ) {
        let host = target.to_string();
        if prefix.is_empty() {
            let mut first = vec![0u8; 4096];
            match self.with_head_timeout(client.read(&mut first)).await {
                Some(Ok(n)) if n > 0 => prefix.extend_from_slice(&first[..n]),
                _ => return,
            }
        }
        if prefix.first() == Some(&0x16) {
            let Some(Ok((hello_bytes, hello))) = self
                .with_head_timeout(tls::read_client_hello(&mut client, prefix))
                .await
            else {
                return;
            };
            let refusal = match hello {
                StreamStart::Hello { sni: Some(sni) } => match Target::parse(&sni) {
                    Ok(named) if named == target => None,
                    _ => Some(DecidedBy::HostMismatch),
                },
                StreamStart::Hello { sni: None } if self.shared.config.strict_hostname => {
                    Some(DecidedBy::NoHostname)
                }
                StreamStart::Hello { sni: None } => None,
                StreamStart::NotTls | StreamStart::Incomplete | StreamStart::Malformed => {
                    Some(DecidedBy::Protocol)
                }
            };
            if let Some(refusal) = refusal {
                self.report_deny(&host, port, &refusal, Some(peer), attempted);
                let _ = client.write_all(&ALERT_ACCESS_DENIED).await;
                return;
            }
            self.report_allow(&host, port, &decision, peer);
            if self.shared.secrets.bound_to(&host) {
                self.intercept(client, hello_bytes, &host, port, upstream)
                    .await;
            } else {
                tunnel(client, &hello_bytes, upstream).await;
            }
            return;
        }
        // Plain HTTP through the tunnel.
        let (read, mut write) = client.into_split();
        let mut reader = Buffered::with_prefix(read, prefix);
        let head = match self.with_head_timeout(reader.read_head()).await {
            Some(Ok(Some(head))) => head,
            _ => {
                self.report_deny(&host, port, &DecidedBy::Protocol, Some(peer), attempted);
                return;
            }
        };
        let host_ok = match head.host_header() {
            Ok(Some(header)) => same_host(header, &target),
            Ok(None) => !self.shared.config.strict_hostname,
            Err(_) => false,
        };
        if !host_ok {
            self.report_deny(&host, port, &DecidedBy::HostMismatch, Some(peer), attempted);
            let body = deny_body(&host, port, &DecidedBy::HostMismatch);
            let _ = write
                .write_all(&simple_response(403, "Forbidden", &body))
                .await;
            return;
        }
        self.report_allow(&host, port, &decision, peer);
        self.relay_http(
            reader,
            write,
            Some(head),
            upstream,
            Mode::Plain,
            &target,
            port,
            false,
        )
        .await;
    }

    async fn absolute_request(
        self,
        mut head: RequestHead,
        reader: Buffered<tokio::net::tcp::OwnedReadHalf>,
        mut write: tokio::net::tcp::OwnedWriteHalf,
    ) {
        let bad_request = |message: String| {
            simple_response(400, "Bad Request", &format!("hardbox proxy: {message}\n"))
        };
        let target_text = head.target.clone();
        let rest = match target_text.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &target_text[7..],
            _ => {
                let message = if target_text.to_ascii_lowercase().starts_with("https://") {
                    "use CONNECT for https".to_owned()
                } else {
                    format!("expected CONNECT or an absolute http:// URI, got '{target_text}'")
                };
                let _ = write.write_all(&bad_request(message)).await;
                return;
            }
        };
        let split_at = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split_at);
        let path = path.split('#').next().unwrap_or("");
        let path = match path.chars().next() {
            Some('/') => path.to_owned(),
            _ => format!("/{path}"),
        };
        let parsed = split_authority(authority)
            .and_then(|(host, port)| Some((Target::parse(host).ok()?, port.unwrap_or(80))));
        let Some((target, port)) = parsed else {
            let _ = write
                .write_all(&bad_request(format!("invalid host in '{target_text}'")))
                .await;
            return;
        };
        let host = target.to_string();
        let attempted = format!("{} {target_text}", head.method);
        let decision = match head.host_header() {
            Ok(Some(header)) if !same_host(header, &target) => {
                Decision::deny(DecidedBy::HostMismatch)
            }
            Err(_) => Decision::deny(DecidedBy::HostMismatch),
            _ => self.shared.policy.decide(&target, port, Traffic::Web),
        };
        if !decision.is_allowed() {
            self.report_deny(&host, port, &decision.decided_by, None, attempted);
            let body = deny_body(&host, port, &decision.decided_by);
            let _ = write
                .write_all(&simple_response(403, "Forbidden", &body))
                .await;
            return;
        }
        let (upstream, peer) = match self
            .connect_reporting(&host, &target, port, &decision, &attempted)
            .await
        {
            Ok(connected) => connected,
            Err(Some(refusal)) => {
                let body = deny_body(&host, port, &refusal);
                let _ = write
                    .write_all(&simple_response(403, "Forbidden", &body))
                    .await;
                return;
            }
            Err(None) => {
                let body = format!("hardbox proxy: cannot reach {host}:{port}\n");
                let _ = write
                    .write_all(&simple_response(502, "Bad Gateway", &body))
                    .await;
                return;
            }
        };
        self.report_allow(&host, port, &decision, peer);
        head.target = path;
        for hop in ["proxy-connection", "proxy-authorization", "keep-alive"] {
            head.remove_header(hop);
        }
        head.set_header("Connection", b"close");
        if head.header("host").is_none() {
            head.set_header("Host", authority.as_bytes());
        }
        self.relay_http(
            reader,
            write,
            Some(head),
            upstream,
            Mode::Plain,
            &target,
            port,
            true,
        )
        .await;
    }

    // ---- transparent listeners ----------------------------------------------------------

    async fn transparent_http(self, stream: TcpStream) {
        let (read, mut write) = stream.into_split();
        let mut reader = Buffered::new(read);
        let port = self.dst.port();
        let head = match self.with_head_timeout(reader.read_head()).await {
            Some(Ok(Some(head))) => head,
            Some(Ok(None)) | None => return,
            Some(Err(err)) => {
                let body = format!("hardbox proxy: {err}\n");
                let _ = write
                    .write_all(&simple_response(400, "Bad Request", &body))
                    .await;
                return;
            }
        };
        let attempted = format!(
            "{} http://{}{}",
            head.method,
            String::from_utf8_lossy(head.header("host").unwrap_or(b"")),
            head.target
        );
        let target = match head.host_header() {
            Ok(Some(header)) => {
                split_authority(header).and_then(|(host, _)| Target::parse(host).ok())
            }
            Ok(None) if !self.shared.config.strict_hostname => {
                Some(Target::Ip(canonical_ip(self.dst.ip())))
            }
            Ok(None) => {
                let host = self.dst.ip().to_string();
                self.report_deny(&host, port, &DecidedBy::NoHostname, None, attempted);
                let body = deny_body(&host, port, &DecidedBy::NoHostname);
                let _ = write
                    .write_all(&simple_response(403, "Forbidden", &body))
                    .await;
                return;
            }
            Err(_) => None,
        };
        let Some(target) = target else {
            let _ = write
                .write_all(&simple_response(
                    400,
                    "Bad Request",
                    "hardbox proxy: invalid Host header\n",
                ))
                .await;
            return;
        };
        let host = target.to_string();
        let decision = self.shared.policy.decide(&target, port, Traffic::Web);
        if !decision.is_allowed() {
            self.report_deny(&host, port, &decision.decided_by, None, attempted);
            let body = deny_body(&host, port, &decision.decided_by);
            let _ = write
                .write_all(&simple_response(403, "Forbidden", &body))
                .await;
            return;
        }
        let (mut upstream, peer) = match self
            .connect_reporting(&host, &target, port, &decision, &attempted)
            .await
        {
            Ok(connected) => connected,
            Err(Some(refusal)) => {
                let body = deny_body(&host, port, &refusal);
                let _ = write
                    .write_all(&simple_response(403, "Forbidden", &body))
                    .await;
                return;
            }
            Err(None) => {
                let body = format!("hardbox proxy: cannot reach {host}:{port}\n");
                let _ = write
                    .write_all(&simple_response(502, "Bad Gateway", &body))
                    .await;
                return;
            }
        };
        self.report_allow(&host, port, &decision, peer);
        if !self.shared.secrets.is_empty() {
            self.relay_http(
                reader,
                write,
                Some(head),
                upstream,
                Mode::Plain,
                &target,
                port,
                false,
            )
            .await;
            return;
        }
        let mut first = head.serialize();
        first.extend_from_slice(reader.buffered());
        let Ok(client) = reader.inner.reunite(write) else {
            return;
        };
        if upstream.write_all(&first).await.is_err() {
            return;
        }
        tunnel(client, &[], upstream).await;
    }

    async fn transparent_tls(self, mut client: TcpStream) {
        let port = self.dst.port();
        let dst_host = canonical_ip(self.dst.ip()).to_string();
        let Some(Ok((hello_bytes, hello))) = self
            .with_head_timeout(tls::read_client_hello(&mut client, Vec::new()))
            .await
        else {
            return;
        };
        let sni = match hello {
            StreamStart::Hello { sni } => sni,
            StreamStart::Incomplete if hello_bytes.is_empty() => return,
            StreamStart::NotTls | StreamStart::Incomplete | StreamStart::Malformed => {
                self.report_deny(
                    &dst_host,
                    port,
                    &DecidedBy::Protocol,
                    None,
                    format!("tls to {dst_host}:{port}"),
                );
                let _ = client.write_all(&ALERT_ACCESS_DENIED).await;
                return;
            }
        };
        let attempted = format!("tls {}:{port}", sni.as_deref().unwrap_or(&dst_host));
        let target = match sni {
            Some(sni) => match Target::parse(&sni) {
                Ok(target) => target,
                Err(_) => {
                    self.report_deny(&sni, port, &DecidedBy::DefaultDeny, None, attempted);
                    let _ = client.write_all(&ALERT_ACCESS_DENIED).await;
                    return;
                }
            },
            None if self.shared.config.strict_hostname => {
                self.report_deny(&dst_host, port, &DecidedBy::NoHostname, None, attempted);
                let _ = client.write_all(&ALERT_ACCESS_DENIED).await;
                return;
            }
            None => Target::Ip(canonical_ip(self.dst.ip())),
        };
        let host = target.to_string();
        let decision = self.shared.policy.decide(&target, port, Traffic::Web);
        if !decision.is_allowed() {
            self.report_deny(&host, port, &decision.decided_by, None, attempted);
            let _ = client.write_all(&ALERT_ACCESS_DENIED).await;
            return;
        }
        let (upstream, peer) = match self
            .connect_reporting(&host, &target, port, &decision, &attempted)
            .await
        {
            Ok(connected) => connected,
            Err(Some(_)) => {
                let _ = client.write_all(&ALERT_ACCESS_DENIED).await;
                return;
            }
            Err(None) => return,
        };
        self.report_allow(&host, port, &decision, peer);
        if matches!(&target, Target::Name(name) if self.shared.secrets.bound_to(name)) {
            self.intercept(client, hello_bytes, &host, port, upstream)
                .await;
        } else {
            tunnel(client, &hello_bytes, upstream).await;
        }
    }

    async fn transparent_tcp(self, client: TcpStream) {
        let ip = canonical_ip(self.dst.ip());
        let port = self.dst.port();
        let names = self.shared.dns_map.names(ip);
        let (host, decision) = decide_plain_tcp(&self.shared.policy, &names, ip, port);
        let attempted = format!("tcp {host}:{port}");
        if !decision.is_allowed() {
            self.report_deny(&host, port, &decision.decided_by, Some(ip), attempted);
            return;
        }
        // The address itself is what gets connected to: check it, and do not resolve again.
        let (upstream, peer) = match self
            .connect_reporting(&host, &Target::Ip(ip), port, &decision, &attempted)
            .await
        {
            Ok(connected) => connected,
            Err(_) => return,
        };
        self.report_allow(&host, port, &decision, peer);
        tunnel(client, &[], upstream).await;
    }

    // ---- interception and request relaying ----------------------------------------------

    /// Terminates the sandbox's TLS for `host` (a host with secrets) and relays its requests to
    /// the real server over verified TLS, swapping placeholders.
    async fn intercept(
        &self,
        client: TcpStream,
        hello: Vec<u8>,
        host: &str,
        port: u16,
        upstream: TcpStream,
    ) {
        let Some(interception) = &self.shared.interception else {
            return;
        };
        let failure = |error: String| {
            let mut event = self
                .event(EventName::NetworkConnect)
                .server(host, Some(port));
            event.error = Some(error);
            self.shared.events.send(event);
        };
        let config = match interception.server_config(host) {
            Ok(config) => config,
            Err(error) => return failure(error),
        };
        let (read, write) = client.into_split();
        let replayed = tokio::io::join(std::io::Cursor::new(hello).chain(read), write);
        let accepted = self
            .with_head_timeout(TlsAcceptor::from(config).accept(replayed))
            .await;
        let mut sandbox_side = match accepted {
            Some(Ok(stream)) => stream,
            Some(Err(err)) => return failure(format!("tls with the sandbox failed: {err}")),
            None => return,
        };
        let Ok(server_name) = ServerName::try_from(host.to_owned()) else {
            return;
        };
        let connector = TlsConnector::from(Arc::clone(&interception.upstream));
        let server_side = match connector.connect(server_name, upstream).await {
            Ok(stream) => stream,
            Err(err) => {
                failure(format!("tls with {host} failed: {err}"));
                let body = format!("hardbox proxy: cannot verify {host}:{port}: {err}\n");
                let _ = sandbox_side
                    .write_all(&simple_response(502, "Bad Gateway", &body))
                    .await;
                let _ = sandbox_side.shutdown().await;
                return;
            }
        };
        let Ok(target) = Target::parse(host) else {
            return;
        };
        let (read, write) = tokio::io::split(sandbox_side);
        self.relay_http(
            Buffered::new(read),
            write,
            None,
            server_side,
            Mode::Intercept,
            &target,
            port,
            false,
        )
        .await;
    }

    /// Forwards requests one by one (checked, and rewritten when intercepting) while responses
    /// flow back as they come.
    #[expect(
        clippy::too_many_arguments,
        reason = "one connection's state, used once"
    )]
    async fn relay_http<CR, CW, U>(
        &self,
        mut reader: Buffered<CR>,
        mut client_w: CW,
        first: Option<RequestHead>,
        upstream: U,
        mode: Mode,
        target: &Target,
        port: u16,
        single: bool,
    ) where
        CR: AsyncRead + Unpin,
        CW: AsyncWrite + Unpin,
        U: AsyncRead + AsyncWrite + Unpin,
    {
        let host = target.to_string();
        let (mut up_r, mut up_w) = tokio::io::split(upstream);
        let mask = match mode {
            Mode::Intercept => self.shared.secrets.values_for(&host),
            Mode::Plain => Vec::new(),
        };
        let exchange = Exchange::default();
        let mut responses = Box::pin(copy_responses(
            &mut up_r,
            &mut client_w,
            &mask,
            HOLD_AT_MOST,
            &exchange,
        ));
        let mut requests = Box::pin(self.forward_requests(
            &mut reader,
            &mut up_w,
            first,
            mode,
            target,
            port,
            single,
            &exchange,
        ));
        let finished = tokio::select! {
            end = &mut requests => Some(end),
            _ = &mut responses => None,
        };
        drop(requests);
        match finished {
            Some(Ok(RequestsEnd::ClientClosed)) => {
                let _ = up_w.shutdown().await;
                let _ = responses.await;
            }
            Some(Ok(RequestsEnd::Single)) => {
                // Until the server is done, or the client goes away (a server keeping the
                // connection open must not keep this task alive).
                tokio::select! {
                    _ = responses => {}
                    () = wait_for_end(&mut reader) => {}
                }
            }
            Some(Err(Stop::Blocked {
                decided_by,
                secret,
                attempted,
            })) => {
                drop(responses);
                self.report_blocked_request(&host, port, &decided_by, secret, attempted);
                let body = deny_body(&host, port, &decided_by);
                let _ = client_w
                    .write_all(&simple_response(403, "Forbidden", &body))
                    .await;
            }
            Some(Err(Stop::Broken)) | None => drop(responses),
        }
        let _ = client_w.shutdown().await;
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one connection's state, used once"
    )]
    async fn forward_requests<CR, UW>(
        &self,
        reader: &mut Buffered<CR>,
        up_w: &mut UW,
        mut next: Option<RequestHead>,
        mode: Mode,
        target: &Target,
        port: u16,
        single: bool,
        exchange: &Exchange,
    ) -> Result<RequestsEnd, Stop>
    where
        CR: AsyncRead + Unpin,
        UW: AsyncWrite + Unpin,
    {
        let secrets = &self.shared.secrets;
        let host = target.to_string();
        let scope = match mode {
            Mode::Plain => None,
            Mode::Intercept => Some(host.as_str()),
        };
        let block = |decided_by, secret: Option<&str>, head: &RequestHead| Stop::Blocked {
            decided_by,
            secret: secret.map(str::to_owned),
            attempted: format!("{} {host}:{port} {}", head.method, head.target),
        };
        loop {
            let mut head = match next.take() {
                Some(head) => head,
                None => match reader.read_head().await {
                    Ok(Some(head)) => head,
                    Ok(None) => return Ok(RequestsEnd::ClientClosed),
                    Err(_) => return Err(Stop::Broken),
                },
            };
            // One connection, one host: a later request may not switch it.
            let host_ok = match head.host_header() {
                Ok(Some(header)) => same_host(header, target),
                Ok(None) => true,
                Err(_) => false,
            };
            if !host_ok {
                return Err(block(DecidedBy::HostMismatch, None, &head));
            }
            let mut used = Rewrite::default();
            if !secrets.is_empty() {
                let in_target = secrets.foreign_placeholder(head.target.as_bytes(), scope);
                let in_headers = || {
                    head.headers
                        .iter()
                        .find_map(|(name, value)| secrets.foreign_in_header(name, value, scope))
                };
                if let Some(secret) = in_target.or_else(in_headers) {
                    return Err(block(DecidedBy::SecretExfiltration, Some(secret), &head));
                }
                if mode == Mode::Intercept {
                    for (name, value) in &mut head.headers {
                        secrets.rewrite_header(&host, name, value, &mut used);
                    }
                }
            }
            let framing = head.framing().map_err(|_| Stop::Broken)?;
            let sent = Sent {
                head: head.method.eq_ignore_ascii_case("HEAD"),
                upgrade: head.is_upgrade(),
            };
            exchange.sent(sent);
            let bytes = Zeroizing::new(head.serialize());
            for (_, value) in &mut head.headers {
                value.zeroize();
            }
            match framing {
                Framing::Length(n)
                    if n <= BODY_PREFIX && !head.expects_continue() && !secrets.is_empty() =>
                {
                    let body = reader
                        .read_exact_body(usize::try_from(n).unwrap_or(0))
                        .await
                        .map_err(|_| Stop::Broken)?;
                    if let Some(secret) = secrets.foreign_placeholder(&body, scope) {
                        return Err(block(DecidedBy::SecretExfiltration, Some(secret), &head));
                    }
                    self.report_secret_use(&host, port, &mut used);
                    up_w.write_all(&bytes).await.map_err(|_| Stop::Broken)?;
                    up_w.write_all(&body).await.map_err(|_| Stop::Broken)?;
                }
                framing => {
                    self.report_secret_use(&host, port, &mut used);
                    up_w.write_all(&bytes).await.map_err(|_| Stop::Broken)?;
                    let keep = secrets.longest_placeholder().saturating_sub(1);
                    let mut carry: Vec<u8> = Vec::new();
                    let mut inspect = |data: &[u8]| -> Result<(), String> {
                        if secrets.is_empty() {
                            return Ok(());
                        }
                        let mut seam = carry.clone();
                        seam.extend_from_slice(&data[..data.len().min(keep)]);
                        if let Some(secret) = secrets
                            .foreign_placeholder(data, scope)
                            .or_else(|| secrets.foreign_placeholder(&seam, scope))
                        {
                            return Err(secret.to_owned());
                        }
                        carry.extend_from_slice(data);
                        let excess = carry.len().saturating_sub(keep);
                        carry.drain(..excess);
                        Ok(())
                    };
                    match reader.forward_body(up_w, framing, &mut inspect).await {
                        Ok(()) => {}
                        Err(BodyError::Stopped(secret)) => {
                            return Err(block(DecidedBy::SecretExfiltration, Some(&secret), &head));
                        }
                        Err(BodyError::Http) => return Err(Stop::Broken),
                    }
                }
            }
            up_w.flush().await.map_err(|_| Stop::Broken)?;
            if single {
                return Ok(RequestsEnd::Single);
            }
            if sent.upgrade && exchange.upgrade_answer().await {
                // Another protocol from here on: relay the client's bytes as they come.
                let early = reader.buffered().to_vec();
                reader.consume(early.len());
                up_w.write_all(&early).await.map_err(|_| Stop::Broken)?;
                tokio::io::copy(&mut reader.inner, up_w)
                    .await
                    .map_err(|_| Stop::Broken)?;
                return Ok(RequestsEnd::ClientClosed);
            }
        }
    }

    fn report_secret_use(&self, host: &str, port: u16, used: &mut Rewrite) {
        used.used.sort();
        used.used.dedup();
        for name in used.used.drain(..) {
            let mut event = self.event(EventName::SecretUse).server(host, Some(port));
            event.secret = Some(name);
            self.shared.events.send(event);
        }
    }
}

/// Decides a plain TCP connection to `ip:port` on the address and on the names the DNS
/// responder answered with it: an explicit deny of any name wins, then an allow of the address,
/// then an allow of a name. Returns the host to report and the decision.
fn decide_plain_tcp(
    policy: &Policy,
    names: &[String],
    ip: IpAddr,
    port: u16,
) -> (String, Decision) {
    let by_names: Vec<(&String, Decision)> = names
        .iter()
        .map(|name| {
            (
                name,
                policy.decide(&Target::Name(name.clone()), port, Traffic::Plain),
            )
        })
        .collect();
    let denied = by_names
        .iter()
        .find(|(_, d)| d.verdict == Verdict::Deny && matches!(d.decided_by, DecidedBy::Rule(_)));
    if let Some((name, decision)) = denied {
        return ((*name).clone(), decision.clone());
    }
    let by_address = policy.decide(&Target::Ip(ip), port, Traffic::Plain);
    if by_address.is_allowed() {
        return (ip.to_string(), by_address);
    }
    match by_names.into_iter().find(|(_, d)| d.is_allowed()) {
        Some((name, decision)) => (name.clone(), decision),
        None => (ip.to_string(), by_address),
    }
}

/// Reads (and drops) until the stream ends or fails.
async fn wait_for_end<R: AsyncRead + Unpin>(reader: &mut Buffered<R>) {
    loop {
        let buffered = reader.buffered().len();
        reader.consume(buffered);
        if !matches!(reader.fill().await, Ok(n) if n > 0) {
            return;
        }
    }
}

/// Sends `prefix` (bytes already read from the client) upstream, then copies both ways.
async fn tunnel(client: TcpStream, prefix: &[u8], mut upstream: TcpStream) {
    if !prefix.is_empty() && upstream.write_all(prefix).await.is_err() {
        return;
    }
    let _ = crate::splice::bidirectional(client, upstream).await;
}

/// The length of the longest end of `data` that starts one of `values` (without being all of
/// it): bytes to hold back until the next read shows whether the value follows.
fn partial_suffix(data: &[u8], values: &[Zeroizing<Vec<u8>>]) -> usize {
    values
        .iter()
        .filter_map(|value| {
            (1..value.len().min(data.len() + 1))
                .rev()
                .find(|&k| data.ends_with(&value[..k]))
        })
        .max()
        .unwrap_or(0)
}

/// Copies responses to the sandbox, showing them to `exchange` as they came. With `mask`,
/// copies of secret values are replaced by `*` (same length, so framing holds); a read ending
/// in the start of a value is held back until the next read, or briefly if none comes.
async fn copy_responses<R, W>(
    reader: &mut R,
    writer: &mut W,
    mask: &[Zeroizing<Vec<u8>>],
    hold_at_most: Duration,
    exchange: &Exchange,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    if mask.is_empty() {
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                return writer.flush().await;
            }
            exchange.received(&buf[..n]);
            writer.write_all(&buf[..n]).await?;
            writer.flush().await?;
        }
    }
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let read = if pending.is_empty() {
            reader.read(&mut buf).await
        } else {
            match tokio::time::timeout(hold_at_most, reader.read(&mut buf)).await {
                Ok(read) => read,
                Err(_) => {
                    writer.write_all(&pending).await?;
                    writer.flush().await?;
                    pending.clear();
                    continue;
                }
            }
        };
        let n = read?;
        if n == 0 {
            writer.write_all(&pending).await?;
            return writer.flush().await;
        }
        exchange.received(&buf[..n]);
        pending.extend_from_slice(&buf[..n]);
        mask_values(&mut pending, mask);
        let emit = pending.len() - partial_suffix(&pending, mask);
        writer.write_all(&pending[..emit]).await?;
        writer.flush().await?;
        pending.drain(..emit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tcp_is_decided_on_the_address_and_its_dns_names() {
        let policy = Policy::parse([
            "allow-tcp git.example.com:22",
            "deny-host evil.example.com",
            "allow-cidr 192.0.2.0/24",
        ])
        .unwrap();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let names = |list: &[&str]| list.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let check = |list: &[&str], ip: IpAddr, port: u16| {
            let (host, decision) = decide_plain_tcp(&policy, &names(list), ip, port);
            format!(
                "{host} {} {}",
                decision.verdict.as_str(),
                decision.decided_by
            )
        };
        assert_eq!(
            check(&["git.example.com"], ip, 22),
            "git.example.com allow allow-tcp git.example.com:22"
        );
        assert_eq!(
            check(&["git.example.com"], ip, 23),
            "198.51.100.7 deny documentation range 198.51.100.0/24 without an explicit allow-cidr"
        );
        assert_eq!(
            check(&["git.example.com", "evil.example.com"], ip, 22),
            "evil.example.com deny deny-host evil.example.com"
        );
        let listed: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(
            check(&[], listed, 5432),
            "192.0.2.9 allow allow-cidr 192.0.2.0/24"
        );
    }

    #[test]
    fn partial_suffixes() {
        let values = vec![Zeroizing::new(b"secret".to_vec())];
        assert_eq!(partial_suffix(b"xx sec", &values), 3);
        assert_eq!(partial_suffix(b"xx secret", &values), 0);
        assert_eq!(partial_suffix(b"s", &values), 1);
        assert_eq!(partial_suffix(b"", &values), 0);
        assert_eq!(partial_suffix(b"abc", &values), 0);
    }

    #[tokio::test]
    async fn an_upgrade_whose_answer_cannot_be_followed_is_refused() {
        let upgrade = Sent {
            head: false,
            upgrade: true,
        };
        let exchange = Exchange::default();
        exchange.sent(upgrade);
        exchange.received(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        assert!(exchange.upgrade_answer().await);
        // After a response without a length, nothing more can be followed.
        let exchange = Exchange::default();
        exchange.sent(Sent {
            head: false,
            upgrade: false,
        });
        exchange.received(b"HTTP/1.1 200 OK\r\n\r\nbody until the end");
        exchange.sent(upgrade);
        assert!(!exchange.upgrade_answer().await);
    }

    #[tokio::test]
    async fn masks_values_split_across_reads() {
        // The pipe holds 11 bytes, so the value arrives in two reads.
        let (mut upstream, mut proxy_side) = tokio::io::duplex(11);
        let values = vec![Zeroizing::new(b"real-secret".to_vec())];
        let copier = tokio::spawn(async move {
            let mut out = Vec::new();
            let hold = Duration::from_secs(3600);
            copy_responses(
                &mut proxy_side,
                &mut out,
                &values,
                hold,
                &Exchange::default(),
            )
            .await
            .unwrap();
            out
        });
        upstream.write_all(b"echo: real-").await.unwrap();
        upstream.write_all(b"secret done").await.unwrap();
        drop(upstream);
        assert_eq!(copier.await.unwrap(), b"echo: *********** done");
    }
}
