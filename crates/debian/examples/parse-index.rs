//! Times parsing a `Packages` index: `cargo run --release -p debian --example parse-index FILE`
//! (an uncompressed index, e.g. from `/usr/lib/apt/apt-helper cat-file
//! /var/lib/apt/lists/*_main_binary-amd64_Packages.lz4 > /tmp/Packages`).
#![allow(clippy::print_stdout)]

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: parse-index FILE")?;
    let text = std::fs::read_to_string(&path)?;
    for _ in 0..3 {
        let started = Instant::now();
        let mut paragraphs = 0usize;
        let mut fields = 0usize;
        for paragraph in debian::control::paragraphs(&text) {
            fields += paragraph?.fields.len();
            paragraphs += 1;
        }
        let parsed = started.elapsed();
        let started = Instant::now();
        let universe =
            debian::package::Universe::new([(debian::package::RepoId(0), text.as_str())])?;
        println!(
            "{paragraphs} paragraphs, {fields} fields: control {:.1} ms; universe of {} packages {:.1} ms",
            parsed.as_secs_f64() * 1000.0,
            universe.len(),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
