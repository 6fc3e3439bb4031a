//! Helpers shared by the layer tests: tars built in memory from raw headers (so names the `tar`
//! crate's builder refuses can be written), a root with a sentinel sibling, and checks.
#![allow(dead_code, reason = "each test crate uses a different subset")]

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use layer::{Applier, Compression, LayerError, LayerStats, Options, Ownership, Whiteouts};
use types::Digest;

pub const MTIME: u64 = 1_600_000_000;
pub const SENTINEL: &[u8] = b"do not touch";

/// A tar stream built entry by entry.
#[derive(Default, Clone)]
pub struct Tar {
    bytes: Vec<u8>,
}

/// One entry to write; fields default to a root-owned 0644 regular file.
#[derive(Clone)]
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: u8,
    pub data: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub device: (u32, u32),
    /// Extra PAX records (key, value).
    pub pax: Vec<(String, Vec<u8>)>,
}

impl Entry {
    pub fn new(name: impl AsRef<[u8]>, kind: u8) -> Entry {
        Entry {
            name: name.as_ref().to_vec(),
            kind,
            data: Vec::new(),
            link: Vec::new(),
            mode: if kind == b'5' { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: MTIME,
            device: (0, 0),
            pax: Vec::new(),
        }
    }
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "LEN key=value\n", where LEN counts itself.
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

fn pad(bytes: &mut Vec<u8>) {
    let rest = bytes.len() % 512;
    if rest != 0 {
        bytes.resize(bytes.len() + 512 - rest, 0);
    }
}

fn raw_header(name: &[u8], link: &[u8], kind: u8, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    {
        let gnu = header.as_gnu_mut().expect("gnu header");
        let n = name.len().min(100);
        gnu.name[..n].copy_from_slice(&name[..n]);
        let l = link.len().min(100);
        gnu.linkname[..l].copy_from_slice(&link[..l]);
    }
    header.set_entry_type(tar::EntryType::new(kind));
    header.set_size(size);
    header
}

impl Tar {
    pub fn new() -> Tar {
        Tar::default()
    }

    pub fn entry(mut self, entry: Entry) -> Tar {
        let mut pax = entry.pax.clone();
        if entry.name.len() > 100 {
            pax.push(("path".into(), entry.name.clone()));
        }
        if entry.link.len() > 100 {
            pax.push(("linkpath".into(), entry.link.clone()));
        }
        if !pax.is_empty() {
            let body: Vec<u8> = pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
            let mut header = raw_header(b"PaxHeader", b"", b'x', body.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            self.bytes.extend_from_slice(header.as_bytes());
            self.bytes.extend_from_slice(&body);
            pad(&mut self.bytes);
        }
        let mut header = raw_header(
            &entry.name,
            &entry.link,
            entry.kind,
            entry.data.len() as u64,
        );
        header.set_mode(entry.mode);
        header.set_uid(entry.uid);
        header.set_gid(entry.gid);
        header.set_mtime(entry.mtime);
        if matches!(entry.kind, b'3' | b'4') {
            header.set_device_major(entry.device.0).expect("major");
            header.set_device_minor(entry.device.1).expect("minor");
        }
        header.set_cksum();
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(&entry.data);
        pad(&mut self.bytes);
        self
    }

    pub fn file(self, name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> Tar {
        let mut entry = Entry::new(name, b'0');
        entry.data = data.as_ref().to_vec();
        self.entry(entry)
    }

    pub fn dir(self, name: impl AsRef<[u8]>) -> Tar {
        self.entry(Entry::new(name, b'5'))
    }

    pub fn symlink(self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Tar {
        let mut entry = Entry::new(name, b'2');
        entry.link = target.as_ref().to_vec();
        entry.mode = 0o777;
        self.entry(entry)
    }

    pub fn hardlink(self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Tar {
        let mut entry = Entry::new(name, b'1');
        entry.link = target.as_ref().to_vec();
        self.entry(entry)
    }

    /// The finished archive: entries, then two zero blocks.
    pub fn bytes(&self) -> Vec<u8> {
        let mut bytes = self.bytes.clone();
        bytes.resize(bytes.len() + 1024, 0);
        bytes
    }

    pub fn gzip(&self) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&self.bytes()).expect("gzip");
        encoder.finish().expect("gzip")
    }

    pub fn zstd(&self) -> Vec<u8> {
        zstd::encode_all(&self.bytes()[..], 1).expect("zstd")
    }
}

/// A temporary directory holding `root` (layers go here) and `outside` with a sentinel file,
/// which no layer may change.
pub struct Sandbox {
    _dir: tempfile::TempDir,
    pub base: PathBuf,
    pub root: PathBuf,
    pub outside: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().to_path_buf();
        let root = base.join("root");
        let outside = base.join("outside");
        fs::create_dir(&root).expect("root");
        fs::create_dir(&outside).expect("outside");
        fs::write(outside.join("secret"), SENTINEL).expect("sentinel");
        Sandbox {
            _dir: dir,
            base,
            root,
            outside,
        }
    }

    pub fn secret(&self) -> PathBuf {
        self.outside.join("secret")
    }

    /// Asserts nothing was written next to the root or in `outside`.
    pub fn assert_outside_untouched(&self) {
        let mut names: Vec<_> = fs::read_dir(&self.base)
            .expect("base")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["outside", "root"],
            "something was created next to the root"
        );
        let inside: Vec<_> = fs::read_dir(&self.outside)
            .expect("outside")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            inside,
            ["secret"],
            "something was created in the sentinel directory"
        );
        let secret = self.secret();
        assert_eq!(
            fs::read(&secret).expect("secret"),
            SENTINEL,
            "sentinel was changed"
        );
        assert_eq!(
            fs::symlink_metadata(&secret).expect("secret").nlink(),
            1,
            "sentinel gained a link"
        );
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }
}

pub fn options() -> Options {
    Options::for_current_user()
}

pub fn digest_of(bytes: &[u8]) -> Digest {
    Digest::of(bytes)
}

/// Applies the layers (uncompressed) in order with `options`, then finishes.
pub fn apply_with(
    root: &Path,
    options: Options,
    layers: &[Vec<u8>],
) -> Result<Vec<LayerStats>, LayerError> {
    let mut applier = Applier::new(root, options).expect("open root");
    let mut stats = Vec::new();
    for layer in layers {
        stats.push(applier.apply(&mut &layer[..], &digest_of(layer), Compression::None)?);
    }
    applier.finish()?;
    Ok(stats)
}

pub fn apply(root: &Path, layers: &[Vec<u8>]) -> Result<Vec<LayerStats>, LayerError> {
    apply_with(root, options(), layers)
}

/// Applies `layers` to a fresh sandbox expecting the last one to fail with
/// `failed to apply layer <digest of the failing layer>: <expected>`, and nothing written
/// outside the root.
pub fn check_error(layers: &[Vec<u8>], expected: &str) -> Sandbox {
    let sandbox = Sandbox::new();
    let err = apply(&sandbox.root, layers).expect_err("layer should be refused");
    let last = layers.last().expect("a layer");
    assert_eq!(
        err.to_string(),
        format!("failed to apply layer {}: {expected}", digest_of(last))
    );
    sandbox.assert_outside_untouched();
    sandbox
}

pub fn options_overlay() -> Options {
    Options {
        whiteouts: Whiteouts::Overlay,
        ..options()
    }
}

pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (CI runs it as root); run it with sudo"
    );
}

pub fn preserve() -> Options {
    Options {
        ownership: Ownership::Preserve,
        ..options()
    }
}

pub fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}

/// Names in a directory, sorted.
pub fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
