#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! The engine against real clients (curl, python3) and loopback test servers.

mod support;

use std::net::TcpListener;

use netproxy::{EventName, Placement, SecretBinding};
use support::{
    bind_pair, curl, pem_file, python, Proxy, ProxyBuilder, TestCa, TestServer, UPSTREAM,
};

/// Test servers behind the proxy: `api.test` over TLS on the transparent TLS listener's port,
/// `plain.test` over HTTP on the transparent HTTP listener's port, both at 127.0.0.2.
struct World {
    proxy: Proxy,
    api: TestServer,
    plain: TestServer,
    web_ca: tempfile::NamedTempFile,
    tls_port: u16,
    http_port: u16,
}

const RULES: &[&str] = &[
    "allow-host api.test",
    "allow-host plain.test",
    "allow-host other.test",
    "allow-host rebind.test",
    "allow-host meta.test",
    "allow-host *.test",
    "deny-host denied.test",
    "deny-host unknown.test",
    "allow-cidr 127.0.0.2/32",
];

fn world_with(rules: &[&str], configure: impl FnOnce(ProxyBuilder) -> ProxyBuilder) -> World {
    let web = TestCa::new();
    let (tls_listener, api_listener) = bind_pair(UPSTREAM);
    let (http_listener, plain_listener) = bind_pair(UPSTREAM);
    let (tls_port, http_port) = (
        tls_listener.local_addr().unwrap().port(),
        http_listener.local_addr().unwrap().port(),
    );
    let api = TestServer::tls(
        api_listener,
        "api",
        web.server_config(&["api.test", "other.test", "git.test"]),
    );
    let plain = TestServer::plain(plain_listener, "plain");
    let mut builder = ProxyBuilder::new(rules)
        .name("api.test", "127.0.0.2")
        .name("plain.test", "127.0.0.2")
        .name("other.test", "127.0.0.2")
        .name("git.test", "127.0.0.2")
        .name("denied.test", "127.0.0.2")
        .name("rebind.test", "127.0.0.3")
        .name("meta.test", "169.254.169.254");
    builder.tls.push(tls_listener);
    builder.http.push(http_listener);
    builder.trust.push(web.der.clone());
    let proxy = configure(builder).start();
    World {
        proxy,
        api,
        plain,
        web_ca: pem_file(&web.pem),
        tls_port,
        http_port,
    }
}

fn world() -> World {
    world_with(RULES, |builder| builder)
}

fn path(file: &tempfile::NamedTempFile) -> String {
    file.path().to_str().unwrap().to_owned()
}

/// The `(event name, server.address, decision, rule)` of each event.
fn summary(events: &[netproxy::Event]) -> Vec<(EventName, String, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e.name,
                e.server_address.clone().unwrap_or_default(),
                e.decision.unwrap_or("").to_owned(),
                e.rule.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_connect_reaches_an_allowed_https_host() {
    let mut w = world();
    let url = format!("https://api.test:{}/", w.tls_port);
    let out = curl(&[
        "--proxy",
        &w.proxy.proxy_url(),
        "--cacert",
        &path(&w.web_ca),
        &url,
    ])
    .await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "hello from api\n"),
        "{}",
        out.stderr
    );
    let events = w.proxy.drain();
    let connect = &events[0];
    assert_eq!(
        summary(&events[..1]),
        [(
            EventName::NetworkConnect,
            "api.test".into(),
            "allow".into(),
            "allow-host api.test".into()
        )]
    );
    assert_eq!(connect.server_port, Some(w.tls_port));
    assert_eq!(connect.peer_address, Some(UPSTREAM));
    assert_eq!(connect.listener, netproxy::ListenerKind::Explicit);
    let json = serde_json::to_value(connect).unwrap();
    assert_eq!(json["network.transport"], "tcp");
    assert_eq!(json["client.address"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_http_forwards_absolute_uris_with_the_host_checked() {
    let mut w = world();
    let url = format!("http://plain.test:{}/path?q=1", w.http_port);
    let out = curl(&["--proxy", &w.proxy.proxy_url(), &url]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "hello from plain\n"),
        "{}",
        out.stderr
    );
    let seen = w.plain.requests();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].head.starts_with("GET /path?q=1 HTTP/1.1\r\n"),
        "{}",
        seen[0].head
    );
    assert_eq!(
        seen[0].header("host"),
        Some(format!("plain.test:{}", w.http_port))
    );

    // A Host header naming another host than the URI is refused.
    let out = curl(&[
        "--proxy",
        &w.proxy.proxy_url(),
        "-H",
        "Host: denied.test",
        "-w",
        "%{http_code}",
        &url,
    ])
    .await;
    assert!(out.stdout.ends_with("403"), "{out:?}");
    assert!(out.stdout.contains(
        "blocked by hardbox network policy (connect host and sni or host header differ)"
    ));
    assert_eq!(w.plain.requests().len(), 1);
    assert!(w
        .proxy
        .drain()
        .iter()
        .any(|e| e.name == EventName::PolicyDenied));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_tls_is_decided_on_the_sni() {
    let mut w = world();
    let to = format!("api.test:443:127.0.0.1:{}", w.tls_port);
    let out = curl(&[
        "--connect-to",
        &to,
        "--cacert",
        &path(&w.web_ca),
        "https://api.test/",
    ])
    .await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "hello from api\n"),
        "{}",
        out.stderr
    );
    let events = w.proxy.drain();
    assert_eq!(events[0].listener, netproxy::ListenerKind::Tls);
    assert_eq!(events[0].rule.as_deref(), Some("allow-host api.test"));

    // A denied name gets a TLS alert, and nothing reaches a server.
    let to = format!("denied.test:443:127.0.0.1:{}", w.tls_port);
    let out = curl(&[
        "--connect-to",
        &to,
        "--cacert",
        &path(&w.web_ca),
        "https://denied.test/",
    ])
    .await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("alert access denied"), "{}", out.stderr);
    assert_eq!(
        summary(&w.proxy.drain()),
        [
            (
                EventName::NetworkConnect,
                "denied.test".into(),
                "deny".into(),
                "deny-host denied.test".into()
            ),
            (
                EventName::PolicyDenied,
                "denied.test".into(),
                "deny".into(),
                "deny-host denied.test".into()
            ),
        ]
    );

    // No SNI (curl sends none for an address) is refused under strict_hostname.
    let url = format!("https://127.0.0.1:{}/", w.tls_port);
    let out = curl(&["--cacert", &path(&w.web_ca), &url]).await;
    assert!(out.stderr.contains("alert access denied"), "{}", out.stderr);
    let events = w.proxy.drain();
    assert_eq!(
        events[0].rule.as_deref(),
        Some("strict hostname: no sni or host header")
    );
    assert_eq!(w.api.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_http_is_decided_on_the_host_header() {
    let mut w = world();
    let to = format!("plain.test:80:127.0.0.1:{}", w.http_port);
    let out = curl(&["--connect-to", &to, "http://plain.test/"]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "hello from plain\n"),
        "{}",
        out.stderr
    );

    let to = format!("nowhere.example:80:127.0.0.1:{}", w.http_port);
    let out = curl(&[
        "--connect-to",
        &to,
        "-w",
        "\n%{http_code}",
        "http://nowhere.example/",
    ])
    .await;
    assert_eq!(
        out.stdout,
        format!(
            "nowhere.example:{} blocked by hardbox network policy (default deny)\n\n403",
            w.http_port
        )
    );
    let events = w.proxy.drain();
    assert_eq!(
        events.last().unwrap().attempted.as_deref(),
        Some("GET http://nowhere.example/")
    );
    assert_eq!(w.plain.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_host_gets_a_clear_403() {
    let mut w = world();
    let url = format!("http://denied.test:{}/", w.http_port);
    let out = curl(&["--proxy", &w.proxy.proxy_url(), "-w", "%{http_code}", &url]).await;
    assert_eq!(
        out.stdout,
        format!(
            "denied.test:{} blocked by hardbox network policy (deny-host denied.test)\n403",
            w.http_port
        )
    );

    let url = format!("https://denied.test:{}/", w.tls_port);
    let out = curl(&[
        "--proxy",
        &w.proxy.proxy_url(),
        "--cacert",
        &path(&w.web_ca),
        &url,
    ])
    .await;
    assert_eq!(out.code, 56, "{out:?}");
    assert!(
        out.stderr.contains("CONNECT tunnel failed, response 403"),
        "{}",
        out.stderr
    );
    let events = w.proxy.drain();
    let denied = events
        .iter()
        .rfind(|e| e.name == EventName::PolicyDenied)
        .unwrap();
    assert_eq!(
        denied.attempted.as_deref(),
        Some(format!("CONNECT denied.test:{}", w.tls_port).as_str())
    );
    assert_eq!(denied.layer, Some("proxy"));
    assert!(w.api.requests().is_empty() && w.plain.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_is_denied_by_default() {
    let mut w = world_with(&["allow-cidr 127.0.0.2/32"], |b| b);
    for url in [
        format!("https://api.test:{}/", w.tls_port),
        format!("http://plain.test:{}/", w.http_port),
    ] {
        let out = curl(&[
            "--proxy",
            &w.proxy.proxy_url(),
            "--cacert",
            &path(&w.web_ca),
            "-f",
            &url,
        ])
        .await;
        assert!(out.stderr.contains("403"), "{url}: {out:?}");
    }
    let rules: Vec<_> = w.proxy.drain().into_iter().filter_map(|e| e.rule).collect();
    assert!(rules.iter().all(|r| r == "default deny"), "{rules:?}");
    assert!(w.api.requests().is_empty() && w.plain.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_literals_need_an_allow_cidr() {
    let mut w = world();
    // 127.0.0.2 is named by allow-cidr 127.0.0.2/32.
    let url = format!("http://127.0.0.2:{}/", w.http_port);
    let out = curl(&["--proxy", &w.proxy.proxy_url(), &url]).await;
    assert_eq!(out.stdout, "hello from plain\n", "{out:?}");
    // 127.0.0.9 is not: a literal in a refused range.
    let url = format!("http://127.0.0.9:{}/", w.http_port);
    let out = curl(&["--proxy", &w.proxy.proxy_url(), &url]).await;
    assert_eq!(
        out.stdout,
        format!(
            "127.0.0.9:{} blocked by hardbox network policy (loopback range 127.0.0.0/8 without an explicit allow-cidr)\n",
            w.http_port
        )
    );
    let url = format!("https://127.0.0.9:{}/", w.tls_port);
    let out = curl(&["--proxy", &w.proxy.proxy_url(), &url]).await;
    assert!(out.stderr.contains("response 403"), "{out:?}");
    assert!(w
        .proxy
        .drain()
        .iter()
        .any(|e| e.rule.as_deref()
            == Some("loopback range 127.0.0.0/8 without an explicit allow-cidr")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_address_is_refused_even_with_preset_all() {
    let mut rules = RULES.to_vec();
    rules.push("preset all");
    let mut w = world_with(&rules, |b| b);
    let expected = "blocked by hardbox network policy (metadata range 169.254.169.254/32 without an explicit allow-cidr)\n";
    // As a literal, and as what an allowed name resolves to.
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://meta.test/latest/meta-data/",
    ] {
        let out = curl(&["--proxy", &w.proxy.proxy_url(), url]).await;
        assert!(out.stdout.ends_with(expected), "{url}: {out:?}");
    }
    let denied: Vec<_> = w
        .proxy
        .drain()
        .into_iter()
        .filter(|e| e.is_denied())
        .collect();
    assert!(denied
        .iter()
        .any(|e| e.server_address.as_deref() == Some("meta.test")
            && e.peer_address == Some("169.254.169.254".parse().unwrap())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_name_resolving_to_a_private_address_is_refused() {
    let mut w = world();
    // Something listens where rebind.test points, to show nothing connects to it.
    let trap = TcpListener::bind(("127.0.0.3", w.http_port)).unwrap();
    trap.set_nonblocking(true).unwrap();
    let url = format!("http://rebind.test:{}/", w.http_port);
    let out = curl(&["--proxy", &w.proxy.proxy_url(), &url]).await;
    assert_eq!(
        out.stdout,
        format!(
            "rebind.test:{} blocked by hardbox network policy (loopback range 127.0.0.0/8 without an explicit allow-cidr)\n",
            w.http_port
        )
    );
    let url = format!("https://rebind.test:{}/", w.http_port);
    let out = curl(&["--proxy", &w.proxy.proxy_url(), &url]).await;
    assert!(out.stderr.contains("response 403"), "{out:?}");
    assert_eq!(
        trap.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    let events = w.proxy.drain();
    let connect = events
        .iter()
        .find(|e| e.name == EventName::NetworkConnect)
        .unwrap();
    assert_eq!(
        (connect.decision, connect.peer_address),
        (Some("deny"), Some("127.0.0.3".parse().unwrap()))
    );
}

const CONNECT_THEN_TLS: &str = r#"
import socket, ssl, sys
proxy, authority, sni, cafile = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
host, port = proxy.rsplit(":", 1)
s = socket.create_connection((host, int(port)))
s.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
reply = b""
while b"\r\n\r\n" not in reply:
    reply += s.recv(1)
print(reply.split(b"\r\n")[0].decode())
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
try:
    t = ctx.wrap_socket(s, server_hostname=sni)
    t.sendall(f"GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        chunk = t.recv(4096)
        if not chunk:
            break
        data += chunk
    print(data.split(b"\r\n\r\n", 1)[1].decode(), end="")
except ssl.SSLError as e:
    print("ssl error:", e.reason)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_must_match_the_connect_host() {
    let mut w = world();
    let authority = format!("api.test:{}", w.tls_port);
    let proxy = w.proxy.explicit.to_string();
    let out = python(
        CONNECT_THEN_TLS,
        &[&proxy, &authority, "api.test", &path(&w.web_ca)],
    )
    .await;
    assert_eq!(
        out.stdout, "HTTP/1.1 200 Connection established\nhello from api\n",
        "{out:?}"
    );
    // other.test is allowed too, and the server's certificate covers it: only the mismatch
    // with the CONNECT host refuses it (domain fronting).
    let out = python(
        CONNECT_THEN_TLS,
        &[&proxy, &authority, "other.test", &path(&w.web_ca)],
    )
    .await;
    assert_eq!(
        out.stdout, "HTTP/1.1 200 Connection established\nssl error: TLSV1_ALERT_ACCESS_DENIED\n",
        "{out:?}"
    );
    assert_eq!(w.api.requests().len(), 1);
    let denied = w
        .proxy
        .drain()
        .into_iter()
        .rfind(|e| e.name == EventName::PolicyDenied)
        .unwrap();
    assert_eq!(
        denied.rule.as_deref(),
        Some("connect host and sni or host header differ")
    );
}

const DNS_CLIENT: &str = r#"
import socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
def ask(sock, name, qtype, ident, tcp=False):
    q = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    q += struct.pack(">HH", qtype, 1)
    if tcp:
        sock.sendall(struct.pack(">H", len(q)) + q)
        n = struct.unpack(">H", sock.recv(2))[0]
        data = b""
        while len(data) < n:
            data += sock.recv(n - len(data))
    else:
        sock.sendto(q, (host, port))
        data = sock.recv(4096)
    rid, flags, qd, an = struct.unpack(">HHHH", data[:8])
    assert rid == ident, (rid, ident)
    at = 12
    while data[at]:
        at += data[at] + 1
    at += 5
    ips = []
    for _ in range(an):
        if data[at] & 0xC0 == 0xC0:
            at += 2
        else:
            while data[at]:
                at += data[at] + 1
            at += 1
        rtype, _, ttl, rdlen = struct.unpack(">HHIH", data[at:at + 10])
        at += 10
        rdata = data[at:at + rdlen]
        at += rdlen
        family = socket.AF_INET if rtype == 1 else socket.AF_INET6
        ips.append(socket.inet_ntop(family, rdata) + "/" + str(ttl))
    print(name, qtype, flags & 0xF, ",".join(ips))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.settimeout(60)
udp.sendto(b"\x00\x01garbage", (host, port))
for i, (name, qtype) in enumerate([("api.test", 1), ("API.Test", 1), ("denied.test", 1), ("nowhere.example", 1),
                                   ("api.test", 16), ("api.test", 28), ("rebind.test", 1)]):
    ask(udp, name, qtype, 100 + i)
tcp = socket.create_connection((host, int(sys.argv[3])))
tcp.settimeout(60)
ask(tcp, "api.test", 1, 200, tcp=True)
ask(tcp, "denied.test", 1, 201, tcp=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_answers_allowed_names_and_nxdomains_the_others() {
    let mut w = world();
    let (udp, tcp) = (w.proxy.dns, w.proxy.dns_tcp);
    let out = python(
        DNS_CLIENT,
        &[
            "127.0.0.1",
            &udp.port().to_string(),
            &tcp.port().to_string(),
        ],
    )
    .await;
    assert_eq!(
        out.stdout,
        [
            "api.test 1 0 127.0.0.2/60",
            "API.Test 1 0 127.0.0.2/60",
            "denied.test 1 3 ",
            "nowhere.example 1 3 ",
            "api.test 16 0 ",
            "api.test 28 0 ",
            "rebind.test 1 0 ",
            "api.test 1 0 127.0.0.2/60",
            "denied.test 1 3 ",
            "",
        ]
        .join("\n"),
        "{}",
        out.stderr
    );
    assert_eq!(w.proxy.engine.stats().dns_malformed, 1);
    let queries: Vec<_> = w
        .proxy
        .drain()
        .into_iter()
        .filter(|e| e.name == EventName::DnsQuery)
        .map(|e| {
            format!(
                "{} {} {} {} {}",
                e.server_address.unwrap(),
                e.dns_type.unwrap(),
                e.dns_rcode.unwrap(),
                e.decision.unwrap(),
                e.rule.unwrap()
            )
        })
        .collect();
    assert_eq!(
        queries,
        [
            "api.test A NOERROR allow allow-host api.test",
            "API.Test A NOERROR allow allow-host api.test",
            "denied.test A NXDOMAIN deny deny-host denied.test",
            "nowhere.example A NXDOMAIN deny default deny",
            "api.test TXT NOERROR allow allow-host api.test",
            "api.test AAAA NOERROR allow allow-host api.test",
            "rebind.test A NOERROR deny loopback range 127.0.0.0/8 without an explicit allow-cidr",
            "api.test A NOERROR allow allow-host api.test",
            "denied.test A NXDOMAIN deny deny-host denied.test",
        ]
    );
}

fn secrets(builder: support::ProxyBuilder) -> support::ProxyBuilder {
    let mut builder = builder;
    builder.secrets.push(
        SecretBinding::new(
            "API_KEY",
            "sk-real-value-1234",
            &["api.test"],
            Placement::Header("x-api-key".into()),
        )
        .unwrap(),
    );
    builder.secrets.push(
        SecretBinding::new(
            "GIT_TOKEN",
            "ghp_real_token_5678",
            &["git.test"],
            Placement::AnyHeader,
        )
        .unwrap(),
    );
    builder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_secret_reaches_only_its_host() {
    let mut w = world_with(RULES, secrets);
    let placeholder = w.proxy.placeholder("API_KEY");
    let ca = w.proxy.ca_path();
    let header = format!("x-api-key: {placeholder}");

    // Through CONNECT: the server sees the value, the client's echo shows it masked.
    let url = format!("https://api.test:{}/echo", w.tls_port);
    let out = curl(&[
        "--proxy",
        &w.proxy.proxy_url(),
        "--cacert",
        ca.to_str().unwrap(),
        "-H",
        &header,
        &url,
    ])
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("x-api-key: ******************\r\n"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("sk-real-value-1234"));

    // Transparently (SNI), keep-alive with two requests on one connection.
    let to = format!("api.test:443:127.0.0.1:{}", w.tls_port);
    let out = curl(&[
        "--connect-to",
        &to,
        "--cacert",
        ca.to_str().unwrap(),
        "-H",
        &header,
        "https://api.test/one",
        "https://api.test/two",
    ])
    .await;
    assert_eq!(out.stdout, "hello from api\nhello from api\n", "{out:?}");

    let seen = w.api.requests();
    assert_eq!(seen.len(), 3);
    for request in &seen {
        assert_eq!(
            request.header("x-api-key").as_deref(),
            Some("sk-real-value-1234")
        );
    }
    let events = w.proxy.drain();
    let uses: Vec<_> = events
        .iter()
        .filter(|e| e.name == EventName::SecretUse)
        .map(|e| (e.secret.clone().unwrap(), e.server_address.clone().unwrap()))
        .collect();
    assert_eq!(uses, vec![("API_KEY".to_owned(), "api.test".to_owned()); 3]);
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains("sk-real-value-1234"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placeholder_sent_to_another_host_is_blocked_and_reported() {
    let mut w = world_with(RULES, secrets);
    let key = w.proxy.placeholder("API_KEY");
    let token = w.proxy.placeholder("GIT_TOKEN");
    let proxy = w.proxy.proxy_url();
    let base = format!("http://other.test:{}", w.http_port);
    let blocked = format!(
        "other.test:{} blocked by hardbox network policy (secret placeholder for another host)\n403",
        w.http_port
    );
    let header = format!("Authorization: Bearer {key}");
    let in_url = format!("{base}/?k={key}");
    let in_body = format!("{{\"token\":\"{token}\"}}");
    for args in [
        vec!["-H", header.as_str(), base.as_str()],
        vec![in_url.as_str()],
        vec!["--data", in_body.as_str(), base.as_str()],
    ] {
        let mut all = vec!["--proxy", proxy.as_str(), "-w", "%{http_code}"];
        all.extend(args);
        let out = curl(&all).await;
        assert_eq!(out.stdout, blocked, "{all:?}: {out:?}");
    }
    // Over TLS to a host with secrets, another secret's placeholder is blocked too.
    let url = format!("https://api.test:{}/", w.tls_port);
    let header = format!("Authorization: token {token}");
    let ca = w.proxy.ca_path();
    let out = curl(&[
        "--proxy",
        &proxy,
        "--cacert",
        ca.to_str().unwrap(),
        "-H",
        &header,
        "-w",
        "%{http_code}",
        &url,
    ])
    .await;
    assert!(
        out.stdout
            .ends_with("secret placeholder for another host)\n403"),
        "{out:?}"
    );

    assert!(w.plain.requests().is_empty(), "{:?}", w.plain.requests());
    assert!(w.api.requests().is_empty());
    let reported: Vec<_> = w
        .proxy
        .drain()
        .into_iter()
        .filter(|e| e.exfiltration)
        .map(|e| (e.name, e.secret.unwrap(), e.server_address.unwrap()))
        .collect();
    assert_eq!(
        reported,
        [
            (
                EventName::PolicyDenied,
                "API_KEY".into(),
                "other.test".into()
            ),
            (
                EventName::PolicyDenied,
                "API_KEY".into(),
                "other.test".into()
            ),
            (
                EventName::PolicyDenied,
                "GIT_TOKEN".into(),
                "other.test".into()
            ),
            (
                EventName::PolicyDenied,
                "GIT_TOKEN".into(),
                "api.test".into()
            ),
        ]
    );
    assert_eq!(w.proxy.engine.stats().exfiltration, 4);
}

const CONNECT_RAW: &str = r#"
import socket, sys
proxy, authority, send = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = proxy.rsplit(":", 1)
s = socket.create_connection((host, int(port)))
s.settimeout(60)
s.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
reply = b""
while b"\r\n\r\n" not in reply:
    reply += s.recv(1)
print(reply.split(b"\r\n")[0].decode())
if send:
    s.sendall(send.encode().decode("unicode_escape").encode())
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
    if send == "":
        break
print(repr(data))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_tcp_tunnels_plain_bytes_and_allow_host_does_not() {
    // A server that speaks first, like ssh.
    let banner = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = banner.local_addr().unwrap().port();
    banner.set_nonblocking(true).unwrap();
    let banner = tokio::net::TcpListener::from_std(banner).unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        loop {
            let (mut stream, _) = banner.accept().await.unwrap();
            stream.write_all(b"SSH-2.0-test\r\n").await.unwrap();
        }
    });
    let ssh = format!("allow-tcp git.test:{port}");
    let mut w = world_with(
        &["allow-host web.test", &ssh, "allow-cidr 127.0.0.2/32"],
        |b| b.name("web.test", "127.0.0.2"),
    );
    let proxy = w.proxy.explicit.to_string();
    let out = python(CONNECT_RAW, &[&proxy, &format!("git.test:{port}"), ""]).await;
    assert_eq!(
        out.stdout, "HTTP/1.1 200 Connection established\nb'SSH-2.0-test\\r\\n'\n",
        "{out:?}"
    );
    // allow-host admits HTTP and TLS only: other bytes close the tunnel.
    let out = python(
        CONNECT_RAW,
        &[&proxy, &format!("web.test:{port}"), "hello\\r\\n\\r\\n"],
    )
    .await;
    assert_eq!(
        out.stdout, "HTTP/1.1 200 Connection established\nb''\n",
        "{out:?}"
    );
    let events = w.proxy.drain();
    assert_eq!(events[0].rule.as_deref(), Some(ssh.as_str()));
    assert_eq!(
        events.last().unwrap().rule.as_deref(),
        Some("not tls or http; plain tcp needs allow-tcp")
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_tcp_without_an_allowing_rule_is_closed_and_reported() {
    // Without the sandbox's AnyIP route the destination is the listener itself, 127.0.0.1:
    // no DNS answer names it and no CIDR rule does, so the connection is closed.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let rule = format!("allow-tcp git.test:{port}");
    let mut builder = ProxyBuilder::new(&[&rule]);
    builder.tcp.push(listener);
    let mut proxy = builder.start();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut buf)
        .await
        .unwrap();
    assert!(buf.is_empty());
    let events = proxy.drain();
    assert_eq!(
        summary(&events),
        [
            (
                EventName::NetworkConnect,
                "127.0.0.1".into(),
                "deny".into(),
                "loopback range 127.0.0.0/8 without an explicit allow-cidr".into()
            ),
            (
                EventName::PolicyDenied,
                "127.0.0.1".into(),
                "deny".into(),
                "loopback range 127.0.0.0/8 without an explicit allow-cidr".into()
            ),
        ]
    );
    assert_eq!(
        events[1].attempted.as_deref(),
        Some(format!("tcp 127.0.0.1:{port}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_listeners() {
    let mut w = world();
    let url = format!("http://plain.test:{}/", w.http_port);
    let out = curl(&["--proxy", &w.proxy.proxy_url(), &url]).await;
    assert_eq!(out.stdout, "hello from plain\n", "{out:?}");
    w.proxy.handle.take().unwrap().shutdown().await;
    // Another test's child between its fork and exec holds a copy of every descriptor, the
    // closed listener's too, for a moment: a connection can still be queued then, but not for
    // long.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let refused = loop {
        match tokio::net::TcpStream::connect(w.proxy.explicit).await {
            Err(err) => break err,
            Ok(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Ok(stream) => panic!("the listener still accepts after shutdown: {stream:?}"),
        }
    };
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(w.proxy.engine.stats().connections, 1);
}

/// Reads one HTTP head (up to the empty line) from `stream`, byte by byte so nothing after it
/// is consumed.
async fn read_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_relayed_both_ways_after_101() {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const VALUE: &str = "sk-real-value-1234";
    let web = TestCa::new();
    let (tls_listener, server_listener) = bind_pair(UPSTREAM);
    let tls_port = tls_listener.local_addr().unwrap().port();
    // A server that switches to an echo of raw bytes when the upgrade request carries the
    // value, and answers 401 (staying HTTP) otherwise.
    let acceptor = tokio_rustls::TlsAcceptor::from(web.server_config(&["api.test"]));
    let heads = Arc::new(Mutex::new(Vec::<String>::new()));
    let echoed = Arc::new(Mutex::new(Vec::<u8>::new()));
    server_listener.set_nonblocking(true).unwrap();
    let server_listener = tokio::net::TcpListener::from_std(server_listener).unwrap();
    let (seen_heads, seen_bytes) = (Arc::clone(&heads), Arc::clone(&echoed));
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = server_listener.accept().await.unwrap();
            let (acceptor, heads, echoed) = (
                acceptor.clone(),
                Arc::clone(&seen_heads),
                Arc::clone(&seen_bytes),
            );
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                loop {
                    let head = read_head(&mut tls).await;
                    if head.is_empty() {
                        return;
                    }
                    heads.lock().unwrap().push(head.clone());
                    if header_of(&head, "x-api-key").as_deref() != Some(VALUE) {
                        let reply = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 3\r\n\r\nno\n";
                        tls.write_all(reply.as_bytes()).await.unwrap();
                        continue;
                    }
                    let reply = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
                    tls.write_all(reply.as_bytes()).await.unwrap();
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = tls.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            let _ = tls.shutdown().await;
                            return;
                        }
                        echoed.lock().unwrap().extend_from_slice(&buf[..n]);
                        tls.write_all(&buf[..n]).await.unwrap();
                    }
                }
            });
        }
    });
    let mut builder = secrets(ProxyBuilder::new(RULES).name("api.test", "127.0.0.2"));
    builder.tls.push(tls_listener);
    builder.trust.push(web.der.clone());
    let mut proxy = builder.start();
    let key = proxy.placeholder("API_KEY");
    let token = proxy.placeholder("GIT_TOKEN");
    let client = {
        let mut roots = rustls::RootCertStore::empty();
        let ca = std::fs::read(proxy.ca_path()).unwrap();
        let pem = rustls::pki_types::CertificateDer::from_pem_slice(&ca);
        use rustls::pki_types::pem::PemObject;
        roots.add(pem.unwrap()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        tokio_rustls::TlsConnector::from(Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        ))
    };
    let connect = || async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", tls_port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("api.test").unwrap();
        client.connect(name, stream).await.unwrap()
    };
    let upgrade = |key: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             x-api-key: {key}\r\n\r\n"
        )
    };

    // Refused upgrade: the connection stays HTTP, so the next request is still checked.
    let mut tls = connect().await;
    tls.write_all(upgrade("wrong").as_bytes()).await.unwrap();
    let head = read_head(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let mut body = [0u8; 3];
    tls.read_exact(&mut body).await.unwrap();
    let next = format!("GET /next HTTP/1.1\r\nHost: api.test\r\nx-token: {token}\r\n\r\n");
    tls.write_all(next.as_bytes()).await.unwrap();
    let mut rest = String::new();
    let _ = tls.read_to_string(&mut rest).await;
    assert!(rest.starts_with("HTTP/1.1 403"), "{rest}");
    assert!(
        rest.contains("(secret placeholder for another host)"),
        "{rest}"
    );

    // Accepted upgrade: the placeholder in the upgrade request's header is swapped, then bytes
    // go both ways untouched (placeholders in them are neither swapped nor blocked).
    let mut tls = connect().await;
    tls.write_all(upgrade(&key).as_bytes()).await.unwrap();
    let head = read_head(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let frames = [
        format!("\u{81}first {key}").into_bytes(),
        format!("\u{81}second {token}").into_bytes(),
    ];
    let mut back = Vec::new();
    for frame in &frames {
        tls.write_all(frame).await.unwrap();
        let mut echo = vec![0u8; frame.len()];
        tls.read_exact(&mut echo).await.unwrap();
        back.extend_from_slice(&echo);
    }
    assert_eq!(back, frames.concat());
    tls.shutdown().await.unwrap();
    let mut tail = Vec::new();
    tls.read_to_end(&mut tail).await.unwrap();
    assert!(tail.is_empty());
    assert_eq!(*echoed.lock().unwrap(), frames.concat());

    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert_eq!(header_of(&heads[0], "x-api-key").as_deref(), Some("wrong"));
    assert_eq!(header_of(&heads[1], "x-api-key").as_deref(), Some(VALUE));
    let events = proxy.drain();
    let blocked: Vec<_> = events
        .iter()
        .filter(|e| e.exfiltration)
        .map(|e| e.secret.clone().unwrap())
        .collect();
    assert_eq!(blocked, ["GIT_TOKEN"]);
    let used = events
        .iter()
        .filter(|e| e.name == EventName::SecretUse)
        .count();
    assert_eq!(used, 1);
    server.abort();
}
