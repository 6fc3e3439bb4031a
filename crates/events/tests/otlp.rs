#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
// The receiver decodes with the official OpenTelemetry protobuf definitions; it needs:
//   pip install --break-system-packages opentelemetry-proto

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use events::{
    Event, ExportError, ExportOptions, OtlpExporter, Reader, Resource, Severity, Spool,
    SpoolOptions, TraceContext, ATTR_SANDBOX_STATE, NETWORK_CONNECT, PROCESS_EXEC,
    SANDBOX_LIFECYCLE,
};
use serde_json::{json, Value as Json};

const PIP: &str = "pip install --break-system-packages opentelemetry-proto";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The Python receiver on 127.0.0.1, running until `finish`.
struct Receiver {
    child: Child,
    stdout: BufReader<ChildStdout>,
    port: u16,
}

impl Receiver {
    fn start(args: &[&str]) -> Receiver {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp_receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("the OTLP receiver did not start (needs `{PIP}`); it said {line:?}")
            });
        Receiver {
            child,
            stdout,
            port,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the receiver and returns what it printed, one JSON value per request.
    fn finish(mut self) -> Vec<Json> {
        drop(self.child.stdin.take());
        let lines: Vec<Json> = (&mut self.stdout)
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect();
        assert!(self.child.wait().unwrap().success());
        lines
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn fast_retries(max_attempts: u32, batch_size: usize) -> ExportOptions {
    ExportOptions {
        batch_size,
        max_attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        timeout: Duration::from_secs(30),
    }
}

/// Events recorded through a real spool and read back, as an exporter would get them.
fn spooled_events() -> Vec<Event> {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
    let supervisor = spool.recorder("supervisor");
    let trace = Some(TraceContext::parse(TRACEPARENT).unwrap());
    supervisor.record(
        Event::new(SANDBOX_LIFECYCLE)
            .at(1_700_000_000_000_000_001)
            .with(ATTR_SANDBOX_STATE, "started"),
    );
    supervisor.record(
        Event::new(PROCESS_EXEC)
            .at(1_700_000_000_000_000_002)
            .traced(trace)
            .with("process.pid", 42)
            .with("process.parent_pid", 1)
            .with("process.executable.path", "/usr/bin/python3")
            .with("process.command_args", &["python3", "-c", "print(1)"][..]),
    );
    spool.recorder("netproxy").record(
        Event::new(NETWORK_CONNECT)
            .at(1_700_000_000_000_000_003)
            .severity(Severity::Warn)
            .traced(trace)
            .with("server.address", "example.com")
            .with("server.port", 443)
            .with("network.transport", "tcp")
            .with("hardbox.network.decision", "deny")
            .with("hardbox.network.default_rule", true)
            .with("hardbox.network.score", 0.5)
            .with("hardbox.network.offset", -7),
    );
    supervisor.record(
        Event::new(SANDBOX_LIFECYCLE)
            .at(1_700_000_000_000_000_004)
            .with(ATTR_SANDBOX_STATE, "stopped"),
    );
    supervisor.record(
        Event::new(SANDBOX_LIFECYCLE)
            .at(1_700_000_000_000_000_005)
            .with(ATTR_SANDBOX_STATE, "removed"),
    );
    spool.close().unwrap();
    Reader::open(dir.path())
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn resource() -> Resource {
    Resource::new("sbx-0123", "agent-1").with("host.name", "ci")
}

#[test]
fn otlp_export_is_decoded_by_the_official_protobuf_definitions() {
    let events = spooled_events();
    assert_eq!(events.len(), 5);
    let receiver = Receiver::start(&[]);
    let mut exporter =
        OtlpExporter::with_options(&receiver.endpoint(), resource(), fast_retries(1, 2)).unwrap();
    assert_eq!(exporter.export(&events).unwrap(), 5);
    assert_eq!((exporter.sent(), exporter.dropped()), (5, 0));
    let requests = receiver.finish();

    // Batches of two: three requests, each one resource with one scope.
    assert_eq!(requests.len(), 3, "{requests:#?}");
    let mut records = Vec::new();
    for request in &requests {
        let resource_logs = request["resource_logs"].as_array().expect("decoded");
        assert_eq!(resource_logs.len(), 1);
        assert_eq!(
            resource_logs[0]["resource"],
            json!({
                "service.name": "hardbox",
                "hardbox.sandbox.id": "sbx-0123",
                "hardbox.sandbox.name": "agent-1",
                "host.name": "ci",
            })
        );
        assert_eq!(resource_logs[0]["scopes"][0]["name"], "hardbox");
        records.extend(
            resource_logs[0]["records"]
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
    }
    assert_eq!(records.len(), 5);

    let names: Vec<&str> = records
        .iter()
        .map(|r| r["event_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            SANDBOX_LIFECYCLE,
            PROCESS_EXEC,
            NETWORK_CONNECT,
            SANDBOX_LIFECYCLE,
            SANDBOX_LIFECYCLE
        ]
    );
    for (i, record) in records.iter().enumerate() {
        let sequence = i as u64 + 1;
        assert_eq!(record["body"], record["event_name"]);
        assert_eq!(record["attributes"]["event.name"], record["event_name"]);
        assert_eq!(record["attributes"]["hardbox.event.sequence"], sequence);
        assert_eq!(
            record["time_unix_nano"],
            1_700_000_000_000_000_000 + sequence
        );
        assert_eq!(record["observed_time_unix_nano"], record["time_unix_nano"]);
    }

    let lifecycle = &records[0];
    assert_eq!(lifecycle["severity_number"], 9);
    assert_eq!(lifecycle["severity_text"], "INFO");
    assert_eq!(lifecycle["attributes"]["hardbox.sandbox.state"], "started");
    assert_eq!(lifecycle["trace_id"], "");
    assert_eq!(lifecycle["span_id"], "");

    let exec = &records[1];
    assert_eq!(exec["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(exec["span_id"], "00f067aa0ba902b7");
    assert_eq!(exec["flags"], 1);
    assert_eq!(
        exec["attributes"],
        json!({
            "event.name": "hardbox.process.exec",
            "hardbox.event.sequence": 2,
            "process.pid": 42,
            "process.parent_pid": 1,
            "process.executable.path": "/usr/bin/python3",
            "process.command_args": ["python3", "-c", "print(1)"],
        })
    );

    let connect = &records[2];
    assert_eq!(connect["severity_number"], 13);
    assert_eq!(connect["severity_text"], "WARN");
    assert_eq!(connect["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        connect["attributes"],
        json!({
            "event.name": "hardbox.network.connect",
            "hardbox.event.sequence": 3,
            "server.address": "example.com",
            "server.port": 443,
            "network.transport": "tcp",
            "hardbox.network.decision": "deny",
            "hardbox.network.default_rule": true,
            "hardbox.network.score": {"double": 0.5},
            "hardbox.network.offset": -7,
        })
    );
}

#[test]
fn otlp_export_retries_server_errors_then_delivers() {
    let events = spooled_events();
    let receiver = Receiver::start(&["--fail-first", "2"]);
    let mut exporter =
        OtlpExporter::with_options(&receiver.endpoint(), resource(), fast_retries(3, 512)).unwrap();
    assert_eq!(exporter.export(&events).unwrap(), 5);
    let requests = receiver.finish();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    assert_eq!(requests[0], json!({"rejected": 503}));
    assert_eq!(requests[1], json!({"rejected": 503}));
    let records = &requests[2]["resource_logs"][0]["records"];
    assert_eq!(records.as_array().unwrap().len(), 5);
}

#[test]
fn otlp_export_gives_up_after_its_attempts_and_counts_what_it_dropped() {
    let events = spooled_events();
    let receiver = Receiver::start(&["--fail-first", "100"]);
    let mut exporter =
        OtlpExporter::with_options(&receiver.endpoint(), resource(), fast_retries(2, 2)).unwrap();
    let err = exporter.export(&events).unwrap_err();
    match &err {
        ExportError::Status {
            status,
            attempts,
            dropped,
            first,
            last,
            ..
        } => {
            assert_eq!((*status, *attempts, *dropped), (503, 2, 5));
            assert_eq!((*first, *last), (1, 2));
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("events 1..=2"), "{err}");
    assert_eq!((exporter.sent(), exporter.dropped()), (0, 5));
    // Two attempts of the first batch; the rest of the call was dropped without posting.
    assert_eq!(receiver.finish().len(), 2);
}

#[test]
fn otlp_export_does_not_retry_a_client_error() {
    let events = spooled_events();
    let receiver = Receiver::start(&["--fail-first", "1", "--fail-status", "400"]);
    let mut exporter =
        OtlpExporter::with_options(&receiver.endpoint(), resource(), fast_retries(5, 512)).unwrap();
    let err = exporter.export(&events).unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::Status {
                status: 400,
                attempts: 1,
                dropped: 5,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(receiver.finish(), [json!({"rejected": 400})]);
}

#[test]
fn otlp_export_retries_connection_errors_then_gives_up() {
    let events = spooled_events();
    // A port nobody listens on any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut exporter = OtlpExporter::with_options(
        &format!("http://127.0.0.1:{port}"),
        resource(),
        fast_retries(3, 512),
    )
    .unwrap();
    let err = exporter.export(&events).unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::Transport {
                attempts: 3,
                dropped: 5,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(exporter.dropped(), 5);
}
