//! What the exec tracer's tests read from a spool.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use events::{Event, Value};

/// The events of the spool in `dir`.
pub fn spool_events(dir: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(dir.join(events::SPOOL_FILE)).unwrap();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

pub fn int(event: &Event, key: &str) -> Option<i64> {
    match event.attributes.get(key) {
        Some(Value::Int(value)) => Some(*value),
        _ => None,
    }
}

pub fn text<'a>(event: &'a Event, key: &str) -> Option<&'a str> {
    match event.attributes.get(key) {
        Some(Value::String(value)) => Some(value),
        _ => None,
    }
}

pub fn args(event: &Event) -> Vec<&str> {
    match event.attributes.get(exectrace::ATTR_PROCESS_COMMAND_ARGS) {
        Some(Value::StringArray(values)) => values.iter().map(String::as_str).collect(),
        other => panic!("no command args: {other:?}"),
    }
}

pub fn execs(events: &[Event]) -> Vec<&Event> {
    events
        .iter()
        .filter(|e| e.name == events::PROCESS_EXEC)
        .collect()
}

/// The one exit event of `pid`.
pub fn exit_of(events: &[Event], pid: i64) -> &Event {
    let exits: Vec<_> = events
        .iter()
        .filter(|e| e.name == events::PROCESS_EXIT)
        .filter(|e| int(e, exectrace::ATTR_PROCESS_PID) == Some(pid))
        .collect();
    assert_eq!(exits.len(), 1, "exits of {pid}: {exits:#?}");
    exits[0]
}

/// The one exec event whose argv is `argv`.
pub fn exec_with<'a>(events: &'a [Event], argv: &[&str]) -> &'a Event {
    let found: Vec<_> = execs(events)
        .into_iter()
        .filter(|e| args(e) == argv)
        .collect();
    assert_eq!(found.len(), 1, "execs of {argv:?} in {events:#?}");
    found[0]
}
