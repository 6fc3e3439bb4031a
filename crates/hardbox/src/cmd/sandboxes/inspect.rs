//! `logs`, `port` and `events`: what a sandbox did, read from its directory (no supervisor
//! needed, so they work on stopped sandboxes too).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;

use super::{alive, lookup, registry, OUTPUT_LOG};
use crate::cli::{EventsArgs, LogsArgs, SandboxName};
use crate::cmd::publish;
use crate::{exit, output};

/// How often `--follow` looks for more.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

pub fn logs(root: Option<PathBuf>, args: LogsArgs) -> Result<u8> {
    let (_, registry) = registry(root)?;
    let record = lookup(&registry, &args.sandbox)?;
    let dir = registry.sandbox_dir(&record.id);
    let path = dir.join(OUTPUT_LOG);
    let mut file = match std::fs::File::open(&path) {
        Ok(file) => Some(file),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(err).with_context(|| format!("failed to open {}", path.display())),
    };
    let mut out = std::io::stdout().lock();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if let Some(file) = file.as_mut() {
            loop {
                let read = file
                    .read(&mut buffer)
                    .with_context(|| format!("failed to read {}", path.display()))?;
                if read == 0 {
                    break;
                }
                out.write_all(&buffer[..read])?;
            }
            out.flush()?;
        }
        if !args.follow || !alive(&dir)? {
            // One last look: output written just before the sandbox stopped.
            if args.follow {
                if let Some(file) = file.as_mut() {
                    let position = file.stream_position()?;
                    file.seek(SeekFrom::Start(position))?;
                    std::io::copy(file, &mut out)?;
                }
            }
            return Ok(exit::OK);
        }
        std::thread::sleep(FOLLOW_POLL);
        if file.is_none() {
            file = std::fs::File::open(&path).ok();
        }
    }
}

#[derive(Debug, Serialize)]
struct Port {
    port: u16,
    host: String,
}

pub fn port(root: Option<PathBuf>, args: SandboxName) -> Result<u8> {
    let (_, registry) = registry(root)?;
    let record = lookup(&registry, &args.sandbox)?;
    let ports = record
        .publishes
        .iter()
        .map(|text| {
            publish::parse(text).map(|publish| Port {
                port: publish.sandbox_port,
                host: publish.host.to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if args.json {
        output::json(&ports)?;
    } else {
        for port in &ports {
            output::line(&format!("{}/tcp -> {}", port.port, port.host))?;
        }
    }
    Ok(exit::OK)
}

pub fn events(root: Option<PathBuf>, args: EventsArgs) -> Result<u8> {
    let (_, registry) = registry(root)?;
    let record = lookup(&registry, &args.sandbox)?;
    let dir = registry.sandbox_dir(&record.id);
    let mut reader = events::Reader::open(&dir)
        .with_context(|| format!("sandbox {} has no events yet", record.name))?;
    if let Some(since) = &args.since {
        reader = reader.since(parse_since(since)?);
    }
    let stop = reader.stop_handle();
    if args.follow {
        reader = reader.follow(FOLLOW_POLL);
        // The reader stops once the sandbox is removed (its directory gone).
        let watched = dir.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            if !watched.exists() {
                stop.stop();
                return;
            }
        });
    }
    let mut out = std::io::stdout().lock();
    for event in reader {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                output::warn(&format!("{err}"));
                continue;
            }
        };
        if args.json {
            serde_json::to_writer(&mut out, &event)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}", render(&event))?;
        }
        if args.follow {
            out.flush()?;
        }
    }
    Ok(exit::OK)
}

/// `SEQ TIME NAME key=value ...`
fn render(event: &events::Event) -> String {
    let seconds = event.time_unix_nano / 1_000_000_000;
    let millis = (event.time_unix_nano / 1_000_000) % 1000;
    let time = types::time::rfc3339(seconds).unwrap_or_default();
    let time = time.trim_end_matches('Z');
    let mut line = format!("{:>6} {time}.{millis:03}Z {}", event.sequence, event.name);
    for (key, value) in &event.attributes {
        let value = serde_json::to_string(value).unwrap_or_default();
        line.push_str(&format!(" {key}={value}"));
    }
    line
}

/// A sequence number, an RFC 3339 UTC time (`2026-11-23T10:00:00Z`) or a duration ago (`10m`).
fn parse_since(text: &str) -> Result<events::Since> {
    if let Ok(sequence) = text.parse::<u64>() {
        return Ok(events::Since::Sequence(sequence));
    }
    if let Some(seconds) = parse_rfc3339(text) {
        return Ok(events::Since::TimeUnixNano(
            seconds.saturating_mul(1_000_000_000),
        ));
    }
    let ago = policy::parse_duration(text).map_err(|_| {
        anyhow!("invalid --since {text:?}: expected a sequence number, an RFC 3339 time or a duration like 10m")
    })?;
    let now = events::now_unix_nano();
    let ago = u64::try_from(ago.as_nanos()).unwrap_or(u64::MAX);
    Ok(events::Since::TimeUnixNano(now.saturating_sub(ago)))
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SSZ` (fractions ignored).
fn parse_rfc3339(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.split('-');
    let year: i64 = date.next()?.parse().ok()?;
    let month: u32 = date.next()?.parse().ok()?;
    let day: u32 = date.next()?.parse().ok()?;
    let time = time.split('.').next()?;
    let mut time = time.split(':');
    let hour: u64 = time.next()?.parse().ok()?;
    let minute: u64 = time.next()?.parse().ok()?;
    let second: u64 = time.next()?.parse().ok()?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = u64::try_from(types::time::days_from_civil(year, month, day)).ok()?;
    Some(days * 86400 + hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_sequences_times_and_durations() {
        assert!(matches!(
            parse_since("42").unwrap(),
            events::Since::Sequence(42)
        ));
        match parse_since("1970-01-02T00:00:01Z").unwrap() {
            events::Since::TimeUnixNano(ns) => assert_eq!(ns, 86_401 * 1_000_000_000),
            other => panic!("{other:?}"),
        }
        match parse_since("10m").unwrap() {
            events::Since::TimeUnixNano(ns) => {
                let expected = events::now_unix_nano() - 600 * 1_000_000_000;
                assert!(ns.abs_diff(expected) < 60 * 1_000_000_000);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_since("yesterday").is_err());
    }
}
