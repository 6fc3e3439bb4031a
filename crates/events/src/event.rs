//! The event model: one [`Event`] per line of a spool, named and attributed after
//! OpenTelemetry semantic conventions (`hardbox.` prefix where none exists), with an optional
//! W3C trace context linking it to the caller's trace.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `event.name` of a sandbox state change (`hardbox.sandbox.state` says which).
pub const SANDBOX_LIFECYCLE: &str = "hardbox.sandbox.lifecycle";
/// `event.name` of a command started in a sandbox.
pub const PROCESS_EXEC: &str = "hardbox.process.exec";
/// `event.name` of a command that ended.
pub const PROCESS_EXIT: &str = "hardbox.process.exit";
/// `event.name` of a connection decided by the proxy.
pub const NETWORK_CONNECT: &str = "hardbox.network.connect";
/// `event.name` of a DNS question answered by the sandbox's responder.
pub const DNS_QUERY: &str = "hardbox.dns.query";
/// `event.name` of an attempt refused by seccomp, Landlock or the proxy.
pub const POLICY_DENIED: &str = "hardbox.policy.denied";
/// `event.name` of a secret swapped in for its host (never the value).
pub const SECRET_USE: &str = "hardbox.secret.use";
/// `event.name` of events a sensor could not record: the spool writes one whenever a queue
/// was full, so loss is never silent.
pub const SENSOR_LOSS: &str = "hardbox.sensor.loss";

// File changes in a sandbox's writable layer and workspace (the `fswatch` sensor), as the
// sandbox sees them: paths are guest paths.
/// `event.name` of a file, directory or other entry that appeared (created, or moved in from
/// outside the watched tree).
pub const FILE_CREATE: &str = "hardbox.file.create";
/// `event.name` of a file closed after being opened for writing (one event per close, not per
/// `write`).
pub const FILE_WRITE: &str = "hardbox.file.write";
/// `event.name` of an entry that disappeared (deleted, moved out of the watched tree, or hidden
/// by an overlay whiteout).
pub const FILE_DELETE: &str = "hardbox.file.delete";
/// `event.name` of an entry renamed within the watched tree; [`ATTR_FILE_PREVIOUS_PATH`] says
/// where from.
pub const FILE_RENAME: &str = "hardbox.file.rename";
/// Attribute of a file event: the entry's full path as the sandbox sees it (OpenTelemetry's
/// `file.path`).
pub const ATTR_FILE_PATH: &str = "file.path";
/// Attribute of a file event: whether the entry is a directory. (OpenTelemetry's
/// `file.directory` is the containing directory's path, a string, so a boolean gets a name of
/// its own.)
pub const ATTR_FILE_IS_DIRECTORY: &str = "hardbox.file.is_directory";
/// Attribute of a [`FILE_RENAME`] event: the path the entry had before, as the sandbox sees it
/// (OpenTelemetry has no attribute for it).
pub const ATTR_FILE_PREVIOUS_PATH: &str = "hardbox.file.previous_path";
/// Attribute of a [`SENSOR_LOSS`] event written by a sensor itself: why events were lost
/// (OpenTelemetry's `error.type`), e.g. `inotify_queue_overflow`.
pub const ATTR_ERROR_TYPE: &str = "error.type";

/// Attribute of a [`SENSOR_LOSS`] event: the sensor whose events were lost.
pub const ATTR_SENSOR_NAME: &str = "hardbox.sensor.name";
/// Attribute of a [`SENSOR_LOSS`] event: how many events were lost since the previous one.
pub const ATTR_LOST_COUNT: &str = "hardbox.sensor.lost_count";
/// Resource (and lifecycle) attribute: the sandbox's id.
pub const ATTR_SANDBOX_ID: &str = "hardbox.sandbox.id";
/// Resource attribute: the sandbox's name.
pub const ATTR_SANDBOX_NAME: &str = "hardbox.sandbox.name";
/// Attribute of a [`SANDBOX_LIFECYCLE`] event: created, started, stopped, removed or saved.
pub const ATTR_SANDBOX_STATE: &str = "hardbox.sandbox.state";
/// Log record attribute carrying the spool's sequence number in OTLP export.
pub const ATTR_SEQUENCE: &str = "hardbox.event.sequence";

/// One event of a sandbox.
///
/// JSON form (one object per line of the spool):
/// `{"sequence":7,"time_unix_nano":…,"event.name":"hardbox.process.exec","severity":"INFO",
/// "traceparent":"00-…-…-01","attributes":{"process.pid":42}}`; `traceparent` is absent when
/// the event belongs to no trace. Fields this version does not know are ignored when reading,
/// so a spool written by a later hardbox stays readable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Per-sandbox sequence number, assigned by the spool (strictly increasing from 1); 0 until
    /// the event is written.
    pub sequence: u64,
    /// When the event happened, in nanoseconds since the Unix epoch.
    pub time_unix_nano: u64,
    /// What happened, e.g. [`PROCESS_EXEC`].
    #[serde(rename = "event.name")]
    pub name: String,
    /// How much it matters.
    pub severity: Severity,
    /// The traced command this event belongs to, from the `TRACEPARENT` given to `run`/`exec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<TraceContext>,
    /// Attributes, ordered by key.
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
}

impl Event {
    /// An `Info` event named `name`, stamped now, without attributes.
    pub fn new(name: impl Into<String>) -> Event {
        Event {
            sequence: 0,
            time_unix_nano: now_unix_nano(),
            name: name.into(),
            severity: Severity::Info,
            traceparent: None,
            attributes: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) attribute `key`.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Event {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// Sets the severity.
    #[must_use]
    pub fn severity(mut self, severity: Severity) -> Event {
        self.severity = severity;
        self
    }

    /// Sets the time (nanoseconds since the Unix epoch).
    #[must_use]
    pub fn at(mut self, time_unix_nano: u64) -> Event {
        self.time_unix_nano = time_unix_nano;
        self
    }

    /// Links the event to a trace.
    #[must_use]
    pub fn traced(mut self, trace: Option<TraceContext>) -> Event {
        self.traceparent = trace;
        self
    }
}

/// Nanoseconds since the Unix epoch now (0 if the clock is before it).
pub fn now_unix_nano() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// An attribute value: the OTLP `AnyValue` kinds hardbox uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// `true` or `false`.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A double; JSON always writes it with a fraction or exponent, so it reads back as a double.
    Double(f64),
    /// A string.
    String(String),
    /// A list of strings, e.g. `process.command_args`.
    StringArray(Vec<String>),
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::String(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::String(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Int(i64::from(v))
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(i64::from(v))
    }
}

impl From<u16> for Value {
    fn from(v: u16) -> Value {
        Value::Int(i64::from(v))
    }
}

impl From<u64> for Value {
    /// Saturates at `i64::MAX` (OTLP integers are signed).
    fn from(v: u64) -> Value {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Double(v)
    }
}

impl From<Vec<String>> for Value {
    fn from(v: Vec<String>) -> Value {
        Value::StringArray(v)
    }
}

impl From<&[&str]> for Value {
    fn from(v: &[&str]) -> Value {
        Value::StringArray(v.iter().map(|s| (*s).to_owned()).collect())
    }
}

/// Severity, after OpenTelemetry's `SeverityNumber` ranges (the first number of each range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    /// SeverityNumber 1.
    Trace,
    /// SeverityNumber 5.
    Debug,
    /// SeverityNumber 9.
    Info,
    /// SeverityNumber 13.
    Warn,
    /// SeverityNumber 17.
    Error,
    /// SeverityNumber 21.
    Fatal,
}

impl Severity {
    /// OpenTelemetry's `SeverityNumber`.
    pub fn number(self) -> i32 {
        match self {
            Severity::Trace => 1,
            Severity::Debug => 5,
            Severity::Info => 9,
            Severity::Warn => 13,
            Severity::Error => 17,
            Severity::Fatal => 21,
        }
    }

    /// OpenTelemetry's severity text (`INFO`, …).
    pub fn text(self) -> &'static str {
        match self {
            Severity::Trace => "TRACE",
            Severity::Debug => "DEBUG",
            Severity::Info => "INFO",
            Severity::Warn => "WARN",
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// A W3C trace context (`traceparent` header, `TRACEPARENT` environment variable):
/// `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace id (never all zeros).
    pub trace_id: [u8; 16],
    /// The caller's span (never all zeros).
    pub span_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

/// Why a `traceparent` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent {value:?}: {reason}")]
pub struct TraceParentError {
    /// The value given (kept whole; it carries no secret).
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl TraceContext {
    /// Parses a `traceparent` value as the W3C Trace Context spec says: lowercase hex, version
    /// `ff` refused, all-zero ids refused, and for versions above `00` anything after the four
    /// fields is ignored (a `-` must follow them).
    pub fn parse(value: &str) -> Result<TraceContext, TraceParentError> {
        let fail = |reason| TraceParentError {
            value: value.to_owned(),
            reason,
        };
        let bytes = value.as_bytes();
        if bytes.len() < 55 {
            return Err(fail("shorter than 55 characters"));
        }
        let version = hex_bytes::<1>(&value[0..2]).ok_or_else(|| fail("version is not hex"))?[0];
        if version == 0xff {
            return Err(fail("version ff is invalid"));
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(fail("fields are not separated by '-'"));
        }
        if version == 0 && bytes.len() != 55 {
            return Err(fail("version 00 has exactly four fields"));
        }
        if bytes.len() > 55 && bytes[55] != b'-' {
            return Err(fail("fields are not separated by '-'"));
        }
        let trace_id = hex_bytes::<16>(&value[3..35])
            .ok_or_else(|| fail("trace id is not 32 lowercase hex"))?;
        let span_id = hex_bytes::<8>(&value[36..52])
            .ok_or_else(|| fail("parent id is not 16 lowercase hex"))?;
        let flags = hex_bytes::<1>(&value[53..55]).ok_or_else(|| fail("flags are not hex"))?[0];
        if trace_id == [0; 16] {
            return Err(fail("trace id is all zeros"));
        }
        if span_id == [0; 8] {
            return Err(fail("parent id is all zeros"));
        }
        Ok(TraceContext {
            trace_id,
            span_id,
            flags,
        })
    }

    /// Reads `TRACEPARENT` from a value of the environment: `None` when unset or empty.
    pub fn from_env_value(value: Option<&str>) -> Result<Option<TraceContext>, TraceParentError> {
        match value.map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) => TraceContext::parse(v).map(Some),
        }
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        write_hex(f, &self.trace_id)?;
        f.write_str("-")?;
        write_hex(f, &self.span_id)?;
        write!(f, "-{:02x}", self.flags)
    }
}

impl FromStr for TraceContext {
    type Err = TraceParentError;
    fn from_str(s: &str) -> Result<TraceContext, TraceParentError> {
        TraceContext::parse(s)
    }
}

impl Serialize for TraceContext {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TraceContext {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TraceContext, D::Error> {
        let s = String::deserialize(deserializer)?;
        TraceContext::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

/// Lowercase hex only, as the spec requires.
fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = digit(s[2 * i])? << 4 | digit(s[2 * i + 1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_round_trips() {
        let t = TraceContext::parse(PARENT).unwrap();
        assert_eq!(t.trace_id[0], 0x4b);
        assert_eq!(t.span_id[7], 0xb7);
        assert_eq!(t.flags, 1);
        assert_eq!(t.to_string(), PARENT);
    }

    #[test]
    fn traceparent_rejects_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let err = TraceContext::parse(bad).unwrap_err();
            assert_eq!(err.value, bad);
        }
        // A later version may add fields after a '-'.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-whatever";
        assert!(TraceContext::parse(later).is_ok());
        assert_eq!(TraceContext::from_env_value(Some(" ")).unwrap(), None);
    }

    #[test]
    fn event_json_round_trips_every_value_kind() {
        let event = Event::new(PROCESS_EXEC)
            .at(1_700_000_000_123_456_789)
            .traced(Some(TraceContext::parse(PARENT).unwrap()))
            .with("process.pid", 42)
            .with("process.executable.path", "/usr/bin/python3")
            .with("process.command_args", &["python3", "-c", "1"][..])
            .with("hardbox.redacted", false)
            .with("ratio", 1.0);
        let line = serde_json::to_string(&event).unwrap();
        assert!(
            line.contains(r#""event.name":"hardbox.process.exec""#),
            "{line}"
        );
        assert!(
            line.contains(&format!(r#""traceparent":"{PARENT}""#)),
            "{line}"
        );
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.attributes["ratio"], Value::Double(1.0));
        assert_eq!(back.attributes["process.pid"], Value::Int(42));
    }

    #[test]
    fn event_json_ignores_fields_of_later_versions() {
        let line = r#"{"sequence":3,"time_unix_nano":5,"event.name":"hardbox.file.write","severity":"INFO","attributes":{"file.path":"/w/a"},"later":1}"#;
        let event: Event = serde_json::from_str(line).unwrap();
        assert_eq!((event.sequence, event.time_unix_nano), (3, 5));
        assert_eq!(event.attributes["file.path"], Value::from("/w/a"));
        // Required fields stay required.
        assert!(serde_json::from_str::<Event>(r#"{"sequence":3}"#).is_err());
    }
}
