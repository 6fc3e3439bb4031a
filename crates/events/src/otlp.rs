//! OTLP/HTTP export of events as OpenTelemetry log records.
//!
//! Events are posted in batches to `ENDPOINT/v1/logs` as `application/x-protobuf`
//! `ExportLogsServiceRequest`s, encoded here by hand (the message subset is small, and the
//! opentelemetry SDK is a large build). Each record carries the event's time, severity, name
//! (as the `EventName` field, the body and the `event.name` attribute), attributes, trace
//! context and its sequence number (`hardbox.event.sequence`). Failed posts are retried with
//! exponential backoff on 429, 5xx and connection errors; after the last attempt, or on another
//! status, the batch and the rest of the call are dropped and counted.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::event::{Event, Value, ATTR_SANDBOX_ID, ATTR_SANDBOX_NAME, ATTR_SEQUENCE};

/// The OpenTelemetry resource the events come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    attributes: Vec<(String, Value)>,
}

impl Resource {
    /// `service.name = hardbox` and the sandbox's id and name.
    pub fn new(sandbox_id: &str, sandbox_name: &str) -> Resource {
        Resource {
            attributes: vec![
                ("service.name".to_owned(), Value::from("hardbox")),
                (ATTR_SANDBOX_ID.to_owned(), Value::from(sandbox_id)),
                (ATTR_SANDBOX_NAME.to_owned(), Value::from(sandbox_name)),
            ],
        }
    }

    /// Adds (or replaces) an attribute.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Resource {
        let key = key.into();
        let value = value.into();
        match self.attributes.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.attributes.push((key, value)),
        }
        self
    }

    /// Adds (or replaces) every attribute of `attributes`.
    #[must_use]
    pub fn with_all(self, attributes: BTreeMap<String, Value>) -> Resource {
        attributes
            .into_iter()
            .fold(self, |resource, (k, v)| resource.with(k, v))
    }

    /// The attributes, in order.
    pub fn attributes(&self) -> &[(String, Value)] {
        &self.attributes
    }
}

/// Batching and retry settings.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Most log records per request (at least 1).
    pub batch_size: usize,
    /// Attempts per request before giving up (at least 1).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each next one.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Bound on each request (connect, send, response).
    pub timeout: Duration,
}

impl Default for ExportOptions {
    fn default() -> ExportOptions {
        ExportOptions {
            batch_size: 512,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Errors of OTLP export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The endpoint is not an `http://` or `https://` URL.
    #[error("invalid OTLP endpoint {endpoint:?}: expected an http:// or https:// URL")]
    Endpoint {
        /// The endpoint given.
        endpoint: String,
    },
    /// The collector answered a status that is not retried, or kept failing.
    #[error("OTLP export of events {first}..={last} to {url} failed with HTTP {status} after {attempts} attempt(s); {dropped} event(s) dropped")]
    Status {
        /// The logs URL.
        url: String,
        /// First sequence number of the failed batch.
        first: u64,
        /// Last sequence number of the failed batch.
        last: u64,
        /// The last status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// Events dropped by this call.
        dropped: u64,
    },
    /// The collector could not be reached.
    #[error("OTLP export of events {first}..={last} to {url} failed after {attempts} attempt(s); {dropped} event(s) dropped")]
    Transport {
        /// The logs URL.
        url: String,
        /// First sequence number of the failed batch.
        first: u64,
        /// Last sequence number of the failed batch.
        last: u64,
        /// Attempts made.
        attempts: u32,
        /// Events dropped by this call.
        dropped: u64,
        /// The last error.
        #[source]
        source: Box<ureq::Error>,
    },
}

/// Posts events to an OTLP/HTTP logs endpoint.
pub struct OtlpExporter {
    url: String,
    agent: ureq::Agent,
    resource: Resource,
    options: ExportOptions,
    sent: u64,
    dropped: u64,
}

impl std::fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("url", &self.url)
            .field("resource", &self.resource)
            .field("options", &self.options)
            .field("sent", &self.sent)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl OtlpExporter {
    /// An exporter posting to `endpoint` + `/v1/logs` (the OTLP/HTTP base URL, e.g.
    /// `http://127.0.0.1:4318`).
    pub fn new(endpoint: &str, resource: Resource) -> Result<OtlpExporter, ExportError> {
        OtlpExporter::with_options(endpoint, resource, ExportOptions::default())
    }

    /// Same as [`OtlpExporter::new`] with batching and retry settings.
    pub fn with_options(
        endpoint: &str,
        resource: Resource,
        options: ExportOptions,
    ) -> Result<OtlpExporter, ExportError> {
        let rest = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"))
            .filter(|rest| !rest.is_empty())
            .ok_or_else(|| ExportError::Endpoint {
                endpoint: endpoint.to_owned(),
            })?;
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        let loopback = host.starts_with("127.")
            || host.starts_with("[::1]")
            || host == "localhost"
            || host.starts_with("localhost:");
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("hardbox/", env!("CARGO_PKG_VERSION")))
            .timeout_global(Some(options.timeout));
        if loopback {
            // A collector on this host is never reached through a proxy.
            config = config.proxy(None);
        }
        Ok(OtlpExporter {
            url: format!("{}/v1/logs", endpoint.trim_end_matches('/')),
            agent: ureq::Agent::new_with_config(config.build()),
            resource,
            options,
            sent: 0,
            dropped: 0,
        })
    }

    /// The URL posted to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Events accepted by the collector so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Events given up on so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Posts `events` in batches, in order. Returns how many were sent; on giving up, the
    /// failing batch and the ones after it are dropped, counted, and named in the error.
    pub fn export(&mut self, events: &[Event]) -> Result<u64, ExportError> {
        let mut sent = 0;
        let batches: Vec<&[Event]> = events.chunks(self.options.batch_size.max(1)).collect();
        for (i, batch) in batches.iter().enumerate() {
            let body = encode_logs_request(&self.resource, batch);
            match self.post(&body) {
                Ok(()) => {
                    sent += batch.len() as u64;
                    self.sent += batch.len() as u64;
                }
                Err(failure) => {
                    let dropped: u64 = batches[i..].iter().map(|b| b.len() as u64).sum();
                    self.dropped += dropped;
                    let first = batch.first().map_or(0, |e| e.sequence);
                    let last = batch.last().map_or(0, |e| e.sequence);
                    let url = self.url.clone();
                    return Err(match failure {
                        Failure::Status { status, attempts } => ExportError::Status {
                            url,
                            first,
                            last,
                            status,
                            attempts,
                            dropped,
                        },
                        Failure::Transport { source, attempts } => ExportError::Transport {
                            url,
                            first,
                            last,
                            attempts,
                            dropped,
                            source: Box::new(source),
                        },
                    });
                }
            }
        }
        Ok(sent)
    }

    fn post(&self, body: &[u8]) -> Result<(), Failure> {
        let attempts = self.options.max_attempts.max(1);
        let mut backoff = self.options.initial_backoff;
        let mut attempt = 1;
        loop {
            let result = self
                .agent
                .post(&self.url)
                .header("Content-Type", "application/x-protobuf")
                .send(body);
            let failure = match result {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    // Read the (small) body so the connection can be reused.
                    let _ = response.body_mut().read_to_vec();
                    if (200..300).contains(&status) {
                        return Ok(());
                    }
                    let failure = Failure::Status {
                        status,
                        attempts: attempt,
                    };
                    if !(status == 429 || (500..600).contains(&status)) {
                        return Err(failure);
                    }
                    failure
                }
                Err(source) => Failure::Transport {
                    source,
                    attempts: attempt,
                },
            };
            if attempt >= attempts {
                return Err(failure);
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(self.options.max_backoff);
            attempt += 1;
        }
    }
}

enum Failure {
    Status { status: u16, attempts: u32 },
    Transport { source: ureq::Error, attempts: u32 },
}

/// Encodes an `ExportLogsServiceRequest` holding `events` as log records of one resource and
/// one instrumentation scope (`hardbox`).
pub fn encode_logs_request(resource: &Resource, events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    // ExportLogsServiceRequest.resource_logs = 1
    message(&mut out, 1, |resource_logs| {
        // ResourceLogs.resource = 1
        message(resource_logs, 1, |r| {
            for (key, value) in &resource.attributes {
                key_value(r, 1, key, value);
            }
        });
        // ResourceLogs.scope_logs = 2
        message(resource_logs, 2, |scope_logs| {
            // ScopeLogs.scope = 1: InstrumentationScope { name = 1, version = 2 }
            message(scope_logs, 1, |scope| {
                string(scope, 1, "hardbox");
                string(scope, 2, env!("CARGO_PKG_VERSION"));
            });
            for event in events {
                // ScopeLogs.log_records = 2
                message(scope_logs, 2, |record| log_record(record, event));
            }
        });
    });
    out
}

fn log_record(out: &mut Vec<u8>, event: &Event) {
    fixed64(out, 1, event.time_unix_nano); // time_unix_nano
    varint_field(out, 2, u64::from(event.severity.number().unsigned_abs())); // severity_number
    string(out, 3, event.severity.text()); // severity_text
    message(out, 5, |body| {
        any_value(body, &Value::String(event.name.clone()))
    }); // body
        // attributes = 6
    key_value(out, 6, "event.name", &Value::String(event.name.clone()));
    key_value(out, 6, ATTR_SEQUENCE, &Value::from(event.sequence));
    for (key, value) in &event.attributes {
        if key != "event.name" && key != ATTR_SEQUENCE {
            key_value(out, 6, key, value);
        }
    }
    if let Some(trace) = &event.traceparent {
        // flags = 8 (fixed32; the low byte is the W3C trace flags)
        key(out, 8, 5);
        out.extend_from_slice(&u32::from(trace.flags).to_le_bytes());
        bytes(out, 9, &trace.trace_id); // trace_id
        bytes(out, 10, &trace.span_id); // span_id
    }
    fixed64(out, 11, event.time_unix_nano); // observed_time_unix_nano
    string(out, 12, &event.name); // event_name
}

/// `KeyValue { string key = 1; AnyValue value = 2; }` as field `field`.
fn key_value(out: &mut Vec<u8>, field: u32, k: &str, value: &Value) {
    message(out, field, |kv| {
        string(kv, 1, k);
        message(kv, 2, |v| any_value(v, value));
    });
}

/// The body of an `AnyValue`: one field of its `oneof`, always written (even when zero).
fn any_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(s) => string(out, 1, s),
        Value::Bool(b) => varint_field(out, 2, u64::from(*b)),
        Value::Int(i) => varint_field(out, 3, *i as u64),
        Value::Double(d) => fixed64(out, 4, d.to_bits()),
        Value::StringArray(items) => message(out, 5, |array| {
            for item in items {
                // ArrayValue.values = 1
                message(array, 1, |v| string(v, 1, item));
            }
        }),
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, u64::from(field) << 3 | u64::from(wire_type));
}

fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    key(out, field, 0);
    varint(out, v);
}

fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    key(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn string(out: &mut Vec<u8>, field: u32, s: &str) {
    bytes(out, field, s.as_bytes());
}

/// A length-delimited sub-message written by `write`.
fn message(out: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    write(&mut inner);
    bytes(out, field, &inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_the_protobuf_encoding() {
        let check = |v: u64, expected: &[u8]| {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(out, expected, "{v}");
        };
        check(0, &[0]);
        check(1, &[1]);
        check(150, &[0x96, 0x01]);
        check(300, &[0xac, 0x02]);
        check(
            u64::MAX,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        );
        // Negative int64 values take ten bytes (two's complement).
        let mut out = Vec::new();
        any_value(&mut out, &Value::Int(-1));
        assert_eq!(out.len(), 1 + 10);
    }

    #[test]
    fn zero_values_are_written_in_a_oneof() {
        let mut out = Vec::new();
        any_value(&mut out, &Value::Bool(false));
        assert_eq!(out, [0x10, 0x00]);
        let mut out = Vec::new();
        any_value(&mut out, &Value::String(String::new()));
        assert_eq!(out, [0x0a, 0x00]);
    }

    #[test]
    fn endpoint_must_be_http() {
        let resource = Resource::new("id", "name");
        assert!(OtlpExporter::new("ftp://x", resource.clone()).is_err());
        assert!(OtlpExporter::new("http://", resource.clone()).is_err());
        let e = OtlpExporter::new("http://127.0.0.1:4318/", resource).unwrap();
        assert_eq!(e.url(), "http://127.0.0.1:4318/v1/logs");
    }
}
