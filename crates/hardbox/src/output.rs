//! Everything the binary prints goes through here: data to stdout, messages to stderr.

use std::io::{self, Write};

use serde::Serialize;

/// Prints `error: <chain>` once, and any `hint:` attached to the error.
pub fn error(err: &anyhow::Error) {
    eprintln!("error: {err:#}");
    if let Some(hinted) = err.chain().find_map(|e| e.downcast_ref::<Hinted>()) {
        eprintln!("hint: {}", hinted.hint);
    }
}

/// A warning the user should see but that does not stop the command.
pub fn warn(message: &str) {
    eprintln!("warning: {message}");
}

/// A progress or status message (stderr, so stdout stays data only).
pub fn info(message: &str) {
    eprintln!("{message}");
}

/// Writes a value as pretty JSON to stdout.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Writes plain lines to stdout.
pub fn line(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(())
}

/// Prints rows as a left-aligned table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = io::stdout().lock();
    let render = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}   "));
            }
        }
        s
    };
    writeln!(out, "{}", render(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", render(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// An error with an actionable hint for the user: `Err(hinted("message", "what to do"))`.
#[derive(Debug)]
pub struct Hinted {
    pub message: String,
    pub hint: String,
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        message: message.into(),
        hint: hint.into(),
    })
}
