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
