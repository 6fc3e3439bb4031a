//! Applies one layer file to a directory, for benchmarking against `tar -x`:
//! `cargo run --release -p layer --example apply -- LAYER ROOT [none|gzip|zstd]`.

#![allow(
    clippy::print_stderr,
    reason = "a command-line example reports its error"
)]

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use layer::{Applier, Compression, Options};
use types::Digest;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(blob), Some(root)) = (args.next(), args.next()) else {
        return ExitCode::from(2);
    };
    let compression = match args.next().and_then(|c| c.into_string().ok()).as_deref() {
        None | Some("none") => Compression::None,
        Some("gzip") => Compression::Gzip,
        Some("zstd") => Compression::Zstd,
        Some(_) => return ExitCode::from(2),
    };
    let layer = Digest::of(b"benchmark layer");
    let result = File::open(PathBuf::from(blob))
        .map_err(|e| e.to_string())
        .and_then(|mut file| {
            let mut applier = Applier::new(&PathBuf::from(root), Options::for_current_user())
                .map_err(|e| e.to_string())?;
            applier
                .apply(&mut file, &layer, compression)
                .map_err(|e| e.to_string())?;
            applier.finish().map_err(|e| e.to_string())
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
