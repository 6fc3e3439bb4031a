//! `hardbox run --network proxy`: the sandbox reaches the network only through hardbox's egress
//! proxy, which applies the rules. Only loopback servers of this test and addresses that never
//! leave the sandbox's own namespace (documentation ranges) are touched. Needs root, as CI has.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

/// A one-page HTTP server on 127.0.0.2 (outside the sandbox's NO_PROXY list), answering every
/// request with `hello from the host`.
fn server() -> u16 {
    let listener = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let body = "hello from the host";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn run(options: &[&str], script: &str) -> Output {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests run the sandbox as root (CI does): run them with sudo"
    );
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_hardbox"))
        .args(["run", "--host", "--workspace"])
        .arg(dir.path())
        .args(options)
        .args(["--", "/bin/sh", "-c", script])
        .env("HARDBOX_ROOT", dir.path().join("store"))
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn an_allowed_destination_is_reached_through_the_proxy() {
    let port = server();
    let out = run(
        &["--allow-cidr", "127.0.0.2/32"],
        &format!("echo $HTTP_PROXY; curl -sS http://127.0.0.2:{port}/"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "http://127.0.0.1:3128\nhello from the host"
    );
}

#[test]
fn the_default_is_deny_with_a_clear_error_on_both_sides() {
    let port = server();
    let out = run(
        &["--network", "proxy"],
        &format!("curl -s -w ' %{{http_code}}' http://127.0.0.2:{port}/"),
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("blocked by hardbox network policy"),
        "{stdout}"
    );
    assert!(stdout.ends_with(" 403"), "{stdout}");
    assert!(!stdout.contains("hello from the host"), "{stdout}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("network: denied 127.0.0.2:{port}")),
        "{stderr}"
    );
}

#[test]
fn programs_that_ignore_the_proxy_variables_still_cannot_get_out() {
    let port = server();
    // Even with the destination allowed: a direct connection to a port the proxy does not
    // listen on is refused in the sandbox's own namespace; TLS to 443 goes through the proxy's
    // transparent listener, which refuses an address no rule allows; UDP other than DNS has
    // nowhere to go; a name no rule allows does not resolve.
    let script = format!(
        r#"python3 - <<'PY'
import socket, subprocess
t = socket.socket()
t.settimeout(5)
try:
    t.connect(("127.0.0.2", {port})); print("tcp connected")
except OSError as e:
    print("tcp refused", e.errno)
r = subprocess.run(["curl", "-sS", "--noproxy", "*", "--max-time", "10", "https://198.51.100.1/"],
                   capture_output=True, text=True)
print("tls exit", r.returncode)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect(("198.51.100.1", 9999)); u.send(b"x"); u.settimeout(5)
try:
    u.recv(10); print("udp answered")
except OSError as e:
    print("udp refused", e.errno)
try:
    socket.getaddrinfo("denied.example", 443); print("dns resolved")
except socket.gaierror:
    print("dns nxdomain")
PY"#
    );
    let out = run(&["--allow-cidr", "127.0.0.2/32"], &script);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("tcp refused 111"), "{stdout}");
    assert!(stdout.contains("tls exit 35"), "{stdout}");
    assert!(stdout.contains("udp refused 111"), "{stdout}");
    assert!(stdout.contains("dns nxdomain"), "{stdout}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("network: denied 198.51.100.1:443"),
        "{stderr}"
    );
    assert!(
        stderr.contains("network: denied denied.example"),
        "{stderr}"
    );
}

#[test]
fn without_network_mode_the_sandbox_has_loopback_only() {
    let port = server();
    let out = run(
        &[],
        &format!("curl -sS --max-time 5 http://127.0.0.2:{port}/ 2>&1; echo \" exit $?\""),
    );
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("hello from the host"), "{stdout}");
    assert!(
        stdout.contains("exit 7"),
        "curl could not connect: {stdout}"
    );
}

#[test]
fn host_network_is_refused() {
    let out = run(&["--network", "host"], "true");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("network.mode = \"host\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_published_port_is_reachable_from_the_hosts_loopback_only() {
    let host_port = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    // A server inside the sandbox, on the sandbox's own loopback, answering one request.
    let server = r#"
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 8000)); s.listen()
c, _ = s.accept(); c.recv(100); c.sendall(b"hello from the sandbox"); c.close()
"#;
    let mut child = Command::new(env!("CARGO_BIN_EXE_hardbox"))
        .args(["run", "--host", "--workspace"])
        .arg(dir.path())
        .args([
            "-p",
            &format!("{host_port}:8000"),
            "--",
            "python3",
            "-c",
            server,
        ])
        .env("HARDBOX_ROOT", dir.path().join("store"))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let answer = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the published port never answered"
        );
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", host_port)) {
            let _ = stream.write_all(b"hi");
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            if !answer.is_empty() {
                break answer;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(answer, "hello from the sandbox");
    assert!(child.wait().unwrap().success());
    let refused = run(&["-p", "0:80"], "true");
    assert_eq!(
        refused.status.code(),
        Some(125),
        "a host port of 0 is refused"
    );
    assert!(
        text(&refused.stderr).contains("invalid --publish"),
        "{}",
        text(&refused.stderr)
    );
}

/// An HTTPS server on 127.0.0.2 for `names`, with a certificate of a CA made here (standing for
/// a corporate or private CA the host does not trust). Returns its port, the CA's PEM and the
/// `x-api-key` values it received.
fn https_server(names: &[&str]) -> (u16, String, Arc<Mutex<Vec<String>>>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hardbox e2e test CA");
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
            let config = Arc::clone(&config);
            let recorded = Arc::clone(&recorded);
            std::thread::spawn(move || {
                let connection = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(connection, stream);
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
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
                let body = "hello over https";
                let _ = write!(
                    tls,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (port, ca_cert.pem(), seen)
}

/// `hardbox ARGS` with the store at `root`, `stdin` as its input.
fn hardbox(root: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hardbox"))
        .args(args)
        .env("HARDBOX_ROOT", root)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_secret_reaches_only_its_host_and_the_sandbox_sees_only_a_placeholder() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests run the sandbox as root (CI does): run them with sudo"
    );
    const API_KEY: &str = "sk-real-3f9a1c77e2b54d08";
    const OTHER_KEY: &str = "other-real-5d2e8b01";
    let (port, ca_pem, seen) = https_server(&["api.hardbox.test", "other.hardbox.test"]);
    let http_port = server();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    for (name, value) in [("API_KEY", API_KEY), ("OTHER_KEY", OTHER_KEY)] {
        let set = hardbox(&store, &["secret", "set", name], &format!("{value}\n"));
        assert_eq!(set.status.code(), Some(0), "{}", text(&set.stderr));
    }
    let ca_file = dir.path().join("corporate-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"
[network]
mode = "proxy"
allow_hosts = ["api.hardbox.test", "other.hardbox.test"]
allow_cidrs = ["127.0.0.2/32"]
upstream_ca_files = ["{}"]

[network.hosts]
"api.hardbox.test" = "127.0.0.2"
"other.hardbox.test" = "127.0.0.2"

[secrets.API_KEY]
hosts = ["api.hardbox.test"]
header = "x-api-key"

[secrets.OTHER_KEY]
hosts = ["other.hardbox.test"]
"#,
            ca_file.display()
        ),
    )
    .unwrap();
    let script = format!(
        r#"env | grep -E '^(API_KEY|OTHER_KEY)=' | sort
echo "api: $(curl -sS -H "x-api-key: $API_KEY" https://api.hardbox.test:{port}/)"
echo "other https: $(curl -s -w '%{{http_code}}' -H "x-api-key: $API_KEY" https://other.hardbox.test:{port}/ | tr '\n' ' ')"
echo "other http: $(curl -s -w '%{{http_code}}' -H "x-api-key: $API_KEY" http://other.hardbox.test:{http_port}/ | tr '\n' ' ')"
"#
    );
    let workspace = dir.path().join("workspace");
    std::fs::create_dir(&workspace).unwrap();
    let out = hardbox(
        &store,
        &[
            "run",
            "--host",
            "--workspace",
            workspace.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            &script,
        ],
        "",
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for value in [API_KEY, OTHER_KEY] {
        assert!(
            !stdout.contains(value) && !stderr.contains(value),
            "a secret's value reached the sandbox's output:\n{stdout}\n{stderr}"
        );
    }
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}\n{stderr}");
    assert!(
        lines[0].starts_with("API_KEY=hardbox-secret-API_KEY-"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("OTHER_KEY=hardbox-secret-OTHER_KEY-"),
        "{stdout}"
    );
    assert_eq!(lines[2], "api: hello over https", "{stderr}");
    // The placeholder sent to another allowed host is blocked, over TLS (that host is
    // intercepted for its own secret) and over plain HTTP.
    let blocked = "blocked by hardbox network policy (secret placeholder for another host) 403";
    assert_eq!(
        lines[3],
        format!("other https: other.hardbox.test:{port} {blocked}")
    );
    assert_eq!(
        lines[4],
        format!("other http: other.hardbox.test:{http_port} {blocked}")
    );
    assert!(
        stderr.contains(&format!(
            "blocked a request to other.hardbox.test:{port} carrying the placeholder of secret API_KEY"
        )),
        "{stderr}"
    );
    // The server got the real value, once.
    assert_eq!(*seen.lock().unwrap(), [API_KEY]);
}
