//! `hardbox run --network proxy`: the sandbox reaches the network only through hardbox's egress
//! proxy, which applies the rules. Only loopback servers of this test and addresses that never
//! leave the sandbox's own namespace (documentation ranges) are touched. Needs root, as CI has.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

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
