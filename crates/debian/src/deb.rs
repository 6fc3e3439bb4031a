//! Binary packages (`.deb`) read without `dpkg-deb`.
//!
//! A `.deb` is an `ar` archive holding, in this order, `debian-binary` (`2.0`), `control.tar`
//! and `data.tar`, each tarball optionally compressed (`.gz`, `.xz`, `.zst`; `.bz2` is refused
//! with a clear error). Members whose names start with `_` are ignored, as dpkg does.
//!
//! [`DebFile::open`] reads the `ar` headers and the whole control tarball (small: the control
//! paragraph, maintainer scripts, `md5sums`, `conffiles`) and remembers where `data.tar` lies;
//! [`DebFile::data`] then streams the decompressed `data.tar` from the file, so a package is
//! decompressed once and never unpacked to disk. Every error names the file and, where there is
//! one, the member.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use fs_err as fs;

const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
const AR_HEADER: usize = 60;
/// The largest decompressed control tarball read into memory.
pub const MAX_CONTROL_BYTES: u64 = 64 << 20;
/// The largest `debian-binary` member.
const MAX_VERSION_BYTES: u64 = 64;

/// How a tarball member of a `.deb` is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    /// The compression a member name's suffix announces (`control.tar.xz` → `Xz`).
    fn from_suffix(suffix: &str) -> Option<Compression> {
        match suffix {
            "" => Some(Compression::None),
            ".gz" => Some(Compression::Gzip),
            ".xz" => Some(Compression::Xz),
            ".zst" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Wraps `reader` in the matching decompressor.
    fn decoder<'r, R: Read + Send + 'r>(self, reader: R) -> io::Result<Box<dyn Read + Send + 'r>> {
        Ok(match self {
            Compression::None => Box::new(reader),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(reader)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
        })
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        })
    }
}

/// Why a `.deb` could not be read. Every variant names the file; member errors name the member.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("failed to read {path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a Debian package: {reason}")]
    NotDeb { path: PathBuf, reason: String },
    #[error("{path}: member {member}: {reason}")]
    Member {
        path: PathBuf,
        member: String,
        reason: String,
    },
    #[error("failed to read member {member} of {path}")]
    MemberIo {
        path: PathBuf,
        member: String,
        source: io::Error,
    },
}

/// One `ar` member: its name and where its bytes lie in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

/// The control tarball's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Control {
    /// The `control` file: one deb822 paragraph (parse it with [`crate::control::parse`]).
    pub paragraph: String,
    /// Maintainer scripts by name (`preinst`, `postinst`, `prerm`, `postrm`, `config`), as text
    /// (invalid UTF-8 is replaced, as these are only read for what they would do).
    pub scripts: BTreeMap<String, String>,
    /// The `md5sums` file, if the package has one (`<md5>  <path without leading />` lines).
    pub md5sums: Option<String>,
    /// The conffiles the package declares (absolute paths; `remove-on-upgrade` entries dropped).
    pub conffiles: Vec<String>,
    /// Every other regular file of the control tarball (`triggers`, `shlibs`, `symbols`, ...).
    pub other: BTreeMap<String, Vec<u8>>,
}

const SCRIPTS: [&str; 5] = ["preinst", "postinst", "prerm", "postrm", "config"];

/// An opened `.deb`: its control data in memory and the location of its `data.tar`.
#[derive(Debug, Clone)]
pub struct DebFile {
    path: PathBuf,
    control: Control,
    data: Member,
    data_compression: Compression,
}

impl DebFile {
    /// Reads the `ar` structure and the control tarball of the package at `path`.
    pub fn open(path: &Path) -> Result<DebFile, DebError> {
        let io_error = |source| DebError::Io {
            path: path.to_owned(),
            source,
        };
        let not_deb = |reason: String| DebError::NotDeb {
            path: path.to_owned(),
            reason,
        };
        let file = fs::File::open(path).map_err(io_error)?;
        let file_size = file.metadata().map_err(io_error)?.len();
        let mut reader = BufReader::new(file);
        let members = read_members(&mut reader, file_size).map_err(|e| match e {
            ArError::Io(source) => io_error(source),
            ArError::Format(reason) => not_deb(reason),
        })?;
        let wanted: Vec<&Member> = members
            .iter()
            .filter(|m| !m.name.starts_with('_'))
            .collect();
        let (version, control, data) = match wanted.as_slice() {
            [version, control, data, ..] => (*version, *control, *data),
            _ => {
                return Err(not_deb(format!(
                    "expected members debian-binary, control.tar, data.tar but found {}",
                    names(&members)
                )))
            }
        };
        if version.name != "debian-binary" {
            return Err(not_deb(format!(
                "first member is {:?}, not debian-binary",
                version.name
            )));
        }
        let version_text = read_member(&mut reader, version, MAX_VERSION_BYTES)
            .map_err(|source| member_io(path, &version.name, source))?;
        let version_text = String::from_utf8_lossy(&version_text);
        if !version_text.starts_with("2.") {
            return Err(DebError::Member {
                path: path.to_owned(),
                member: version.name.clone(),
                reason: format!("unsupported format version {:?}", version_text.trim()),
            });
        }
        let control_compression = tar_compression(path, control, "control.tar")?;
        let data_compression = tar_compression(path, data, "data.tar")?;
        let control = read_control(&mut reader, path, control, control_compression)?;
        Ok(DebFile {
            path: path.to_owned(),
            control,
            data: data.clone(),
            data_compression,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    /// The `data.tar` member (name, offset, compressed size).
    pub fn data_member(&self) -> &Member {
        &self.data
    }

    pub fn data_compression(&self) -> Compression {
        self.data_compression
    }

    /// A streaming reader of the decompressed `data.tar`. The file is opened anew, so several
    /// readers (on several threads) may exist at once. Read errors name the file and member.
    pub fn data(&self) -> Result<DataReader, DebError> {
        let mut file = fs::File::open(&self.path).map_err(|source| DebError::Io {
            path: self.path.clone(),
            source,
        })?;
        file.seek(SeekFrom::Start(self.data.offset))
            .map_err(|source| member_io(&self.path, &self.data.name, source))?;
        let raw = BufReader::with_capacity(256 << 10, file).take(self.data.size);
        let inner = self
            .data_compression
            .decoder(raw)
            .map_err(|source| member_io(&self.path, &self.data.name, source))?;
        Ok(DataReader {
            inner,
            context: format!("{}: member {}", self.path.display(), self.data.name),
        })
    }
}

/// The decompressed `data.tar` of a package; I/O errors carry the file and member name.
pub struct DataReader {
    inner: Box<dyn Read + Send>,
    context: String,
}

impl fmt::Debug for DataReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataReader")
            .field("context", &self.context)
            .finish()
    }
}

impl Read for DataReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.context)))
    }
}

fn member_io(path: &Path, member: &str, source: io::Error) -> DebError {
    DebError::MemberIo {
        path: path.to_owned(),
        member: member.to_owned(),
        source,
    }
}

fn names(members: &[Member]) -> String {
    if members.is_empty() {
        return "no members".to_owned();
    }
    members
        .iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that `member` is `<prefix>[.gz|.xz|.zst]` and returns its compression.
fn tar_compression(path: &Path, member: &Member, prefix: &str) -> Result<Compression, DebError> {
    let Some(suffix) = member.name.strip_prefix(prefix) else {
        return Err(DebError::NotDeb {
            path: path.to_owned(),
            reason: format!("expected a {prefix} member but found {:?}", member.name),
        });
    };
    Compression::from_suffix(suffix).ok_or_else(|| DebError::Member {
        path: path.to_owned(),
        member: member.name.clone(),
        reason: format!(
            "unsupported compression {suffix:?} (hardbox reads none, .gz, .xz and .zst)"
        ),
    })
}

enum ArError {
    Io(io::Error),
    Format(String),
}

/// Reads every `ar` member header, checking that each member lies inside the file.
fn read_members<R: Read + Seek>(reader: &mut R, file_size: u64) -> Result<Vec<Member>, ArError> {
    let mut magic = [0u8; 8];
    read_exact_or(reader, &mut magic, "the file is shorter than the ar magic")?;
    if &magic != AR_MAGIC {
        return Err(ArError::Format("no ar magic \"!<arch>\\n\"".to_owned()));
    }
    let mut members = Vec::new();
    let mut offset = AR_MAGIC.len() as u64;
    while offset < file_size {
        if members.len() >= 64 {
            return Err(ArError::Format("more than 64 ar members".to_owned()));
        }
        let mut header = [0u8; AR_HEADER];
        read_exact_or(
            reader,
            &mut header,
            &format!("truncated ar header at offset {offset}"),
        )?;
        if &header[58..60] != b"`\n" {
            return Err(ArError::Format(format!(
                "bad ar header terminator at offset {offset}"
            )));
        }
        let name = String::from_utf8_lossy(&header[0..16])
            .trim_end()
            .trim_end_matches('/')
            .to_owned();
        let size_text = String::from_utf8_lossy(&header[48..58]);
        let size: u64 = size_text.trim().parse().map_err(|_| {
            ArError::Format(format!(
                "ar member {name:?} has an invalid size {:?}",
                size_text.trim()
            ))
        })?;
        let start = offset + AR_HEADER as u64;
        let end = start.checked_add(size).filter(|end| *end <= file_size);
        let Some(end) = end else {
            return Err(ArError::Format(format!(
                "ar member {name:?} ({size} bytes at offset {start}) runs past the end of the file ({file_size} bytes)"
            )));
        };
        members.push(Member {
            name,
            offset: start,
            size,
        });
        offset = end + (end % 2);
        reader.seek(SeekFrom::Start(offset)).map_err(ArError::Io)?;
    }
    Ok(members)
}

fn read_exact_or<R: Read>(reader: &mut R, buf: &mut [u8], reason: &str) -> Result<(), ArError> {
    reader.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ArError::Format(reason.to_owned())
        } else {
            ArError::Io(e)
        }
    })
}

fn read_member<R: Read + Seek>(reader: &mut R, member: &Member, limit: u64) -> io::Result<Vec<u8>> {
    reader.seek(SeekFrom::Start(member.offset))?;
    let mut bytes = Vec::new();
    reader
        .take(member.size.min(limit))
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reads the control tarball into a [`Control`].
fn read_control<R: Read + Seek + Send>(
    reader: &mut R,
    path: &Path,
    member: &Member,
    compression: Compression,
) -> Result<Control, DebError> {
    let fail = |reason: String| DebError::Member {
        path: path.to_owned(),
        member: member.name.clone(),
        reason,
    };
    let io_fail = |e: io::Error| fail(e.to_string());
    reader
        .seek(SeekFrom::Start(member.offset))
        .map_err(|source| member_io(path, &member.name, source))?;
    let raw = (&mut *reader).take(member.size);
    let decoder = compression.decoder(raw).map_err(io_fail)?;
    let mut archive = tar::Archive::new(decoder.take(MAX_CONTROL_BYTES + 1));
    let mut control = Control::default();
    let mut paragraph = None;
    let mut total = 0u64;
    for entry in archive.entries().map_err(io_fail)? {
        let mut entry = entry.map_err(io_fail)?;
        let name = entry
            .path()
            .map_err(io_fail)?
            .to_string_lossy()
            .into_owned();
        let name = name
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        if name.is_empty() || name == "." || !entry.header().entry_type().is_file() {
            continue;
        }
        if name.contains('/') {
            return Err(fail(format!("unexpected nested entry {name:?}")));
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(io_fail)?;
        total += bytes.len() as u64;
        if total > MAX_CONTROL_BYTES {
            return Err(fail(format!("larger than {MAX_CONTROL_BYTES} bytes")));
        }
        match name.as_str() {
            "control" => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| fail("control is not valid UTF-8".to_owned()))?;
                paragraph = Some(text);
            }
            "md5sums" => control.md5sums = Some(String::from_utf8_lossy(&bytes).into_owned()),
            "conffiles" => {
                control.conffiles = String::from_utf8_lossy(&bytes)
                    .lines()
                    .filter_map(conffile_path)
                    .collect();
            }
            script if SCRIPTS.contains(&script) => {
                control
                    .scripts
                    .insert(name.clone(), String::from_utf8_lossy(&bytes).into_owned());
            }
            _ => {
                control.other.insert(name, bytes);
            }
        }
    }
    control.paragraph = paragraph.ok_or_else(|| fail("has no control file".to_owned()))?;
    Ok(control)
}

/// The path of one `conffiles` line; `remove-on-upgrade` entries are not installed conffiles.
fn conffile_path(line: &str) -> Option<String> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    match line.split_once(char::is_whitespace) {
        // dpkg >= 1.20 writes flags before the path: `remove-on-upgrade /etc/foo`.
        Some(("remove-on-upgrade", _)) => None,
        Some((path, _)) => Some(path.to_owned()),
        None => Some(line.to_owned()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap values known to be valid")]
mod tests {
    use super::*;

    #[test]
    fn conffile_lines() {
        assert_eq!(conffile_path("/etc/a"), Some("/etc/a".to_owned()));
        assert_eq!(conffile_path("remove-on-upgrade /etc/b"), None);
        assert_eq!(conffile_path("   "), None);
    }

    #[test]
    fn compression_suffixes() {
        assert_eq!(Compression::from_suffix(".xz"), Some(Compression::Xz));
        assert_eq!(Compression::from_suffix(""), Some(Compression::None));
        assert_eq!(Compression::from_suffix(".bz2"), None);
    }
}
