//! The sandbox event feed (docs: DESIGN §5).
//!
//! Sensors (the proxy, the exec tracker, the supervisor) record [`Event`]s through a
//! [`Recorder`]; the sandbox's [`Spool`] numbers them and appends them to `events.jsonl`, one
//! JSON object per line, without ever blocking a sensor and without silent loss. A [`Reader`]
//! reads a spool (from a sequence number or a time, optionally following it), and an
//! [`OtlpExporter`] posts events to an OpenTelemetry collector as OTLP/HTTP log records.
//!
//! The crate does no printing; it returns values and typed errors naming the spool file, line
//! and sequence number.
#![forbid(unsafe_code)]

mod event;
mod otlp;
mod reader;
mod spool;

pub use event::{
    now_unix_nano, Event, Severity, TraceContext, TraceParentError, Value, ATTR_ERROR_TYPE,
    ATTR_FILE_IS_DIRECTORY, ATTR_FILE_PATH, ATTR_FILE_PREVIOUS_PATH, ATTR_LOST_COUNT,
    ATTR_SANDBOX_ID, ATTR_SANDBOX_NAME, ATTR_SANDBOX_STATE, ATTR_SENSOR_NAME, ATTR_SEQUENCE,
    DNS_QUERY, FILE_CREATE, FILE_DELETE, FILE_RENAME, FILE_WRITE, NETWORK_CONNECT, POLICY_DENIED,
    PROCESS_EXEC, PROCESS_EXIT, SANDBOX_LIFECYCLE, SECRET_USE, SENSOR_LOSS,
};
pub use otlp::{encode_logs_request, ExportError, ExportOptions, OtlpExporter, Resource};
pub use reader::{ReadError, Reader, Since, StopHandle};
pub use spool::{
    BeforeWrite, Recorded, Recorder, Recovery, Spool, SpoolError, SpoolOptions, SpoolStats,
    LOCK_FILE, SPOOL_FILE,
};
