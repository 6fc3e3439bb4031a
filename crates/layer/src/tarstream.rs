//! A streaming reader of tar headers that never buffers more than one bounded extension header.
//!
//! It exists instead of `tar::Archive` so that applying a layer controls every allocation: GNU
//! long names are capped at [`MAX_LONG_NAME`] bytes and PAX headers at [`MAX_PAX`] bytes before
//! they are read, an entry's size is known before its data is, and file data is handed out in
//! slices of the caller's buffered stream (no copy, no per-file allocation). Field decoding reuses
//! `tar::Header`.

use std::io::{self, BufRead};

use crate::names::MAX_NAME;

const BLOCK: u64 = 512;
/// Largest GNU long name or long link name accepted (a name plus its terminating NUL).
pub const MAX_LONG_NAME: u64 = MAX_NAME as u64 + 1;
/// Largest PAX extended header accepted.
pub const MAX_PAX: u64 = 1 << 20;

/// The kind of a tar entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Directory,
    Symlink,
    Hardlink,
    CharDevice,
    BlockDevice,
    Fifo,
    /// GNU sparse file (not supported).
    Sparse,
    /// Any other type flag.
    Other(u8),
}

/// Seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    pub seconds: i64,
    pub nanoseconds: u32,
}

/// One entry's metadata, with PAX and GNU extensions already folded in.
#[derive(Debug, Clone)]
pub struct EntryHeader {
    pub kind: Kind,
    pub name: Vec<u8>,
    pub link: Vec<u8>,
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: Time,
    pub atime: Option<Time>,
    pub major: u32,
    pub minor: u32,
    /// `SCHILY.xattr.*` records: name without the prefix, raw value.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Why the tar stream could not be read.
#[derive(Debug)]
pub enum TarError {
    /// The underlying (possibly decompressed) stream failed.
    Read(io::Error),
    /// The stream ended inside a header or an entry's data.
    Truncated,
    /// A header's checksum does not match.
    Checksum,
    /// A numeric header field does not parse.
    BadField(&'static str),
    /// An extension header is larger than allowed.
    ExtensionTooLarge { size: u64, limit: u64 },
    /// A PAX record is malformed.
    BadPax,
    /// Extension headers at the end of the archive describe no entry.
    DanglingExtension,
}

/// Reads entries from a tar stream; see the module docs.
pub struct TarReader<R> {
    inner: R,
    /// Data bytes of the current entry not yet consumed.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
}

fn padding_of(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn parse_time(value: &[u8]) -> Option<Time> {
    let text = std::str::from_utf8(value).ok()?;
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    let seconds: i64 = whole.parse().ok()?;
    let mut nanoseconds: u32 = 0;
    for (i, digit) in fraction.bytes().take(9).enumerate() {
        if !digit.is_ascii_digit() {
            return None;
        }
        nanoseconds += u32::from(digit - b'0') * 10u32.pow(8 - i as u32);
    }
    if seconds < 0 && nanoseconds > 0 {
        // "-1.5" means 1.5 s before the epoch.
        return Some(Time {
            seconds: seconds - 1,
            nanoseconds: 1_000_000_000 - nanoseconds,
        });
    }
    Some(Time {
        seconds,
        nanoseconds,
    })
}

fn parse_decimal(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn trim_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    if let Some(end) = bytes.iter().position(|&b| b == 0) {
        bytes.truncate(end);
    }
    bytes
}

/// A numeric header field's value; an empty field (all NUL or spaces) reads as zero, as other
/// tar readers do.
fn numeric_field(
    header: &tar::Header,
    range: std::ops::Range<usize>,
    name: &'static str,
    value: io::Result<u64>,
) -> Result<u64, TarError> {
    if header.as_bytes()[range]
        .iter()
        .all(|&b| b == 0 || b == b' ')
    {
        Ok(0)
    } else {
        value.map_err(|_| TarError::BadField(name))
    }
}

#[derive(Default)]
struct Extensions {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

impl Extensions {
    fn is_empty(&self) -> bool {
        self.long_name.is_none() && self.long_link.is_none() && self.pax.is_none()
    }
}

impl<R: BufRead> TarReader<R> {
    pub fn new(inner: R) -> TarReader<R> {
        TarReader {
            inner,
            remaining: 0,
            padding: 0,
        }
    }

    /// Gives back the stream, positioned after the last byte consumed.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn read_exact_or_eof(&mut self, buf: &mut [u8]) -> Result<bool, TarError> {
        let mut filled = 0;
        while filled < buf.len() {
            let available = self.inner.fill_buf().map_err(TarError::Read)?;
            if available.is_empty() {
                return if filled == 0 {
                    Ok(false)
                } else {
                    Err(TarError::Truncated)
                };
            }
            let n = available.len().min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&available[..n]);
            self.inner.consume(n);
            filled += n;
        }
        Ok(true)
    }

    fn skip(&mut self, mut count: u64) -> Result<(), TarError> {
        while count > 0 {
            let available = self.inner.fill_buf().map_err(TarError::Read)?;
            if available.is_empty() {
                return Err(TarError::Truncated);
            }
            let n = (available.len() as u64).min(count) as usize;
            self.inner.consume(n);
            count -= n as u64;
        }
        Ok(())
    }

    /// Skips what is left of the current entry's data and padding.
    fn finish_entry(&mut self) -> Result<(), TarError> {
        let count = self.remaining + self.padding;
        self.remaining = 0;
        self.padding = 0;
        self.skip(count)
    }

    fn read_extension(&mut self, size: u64, limit: u64) -> Result<Vec<u8>, TarError> {
        if size > limit {
            return Err(TarError::ExtensionTooLarge { size, limit });
        }
        let mut bytes = vec![0; size as usize];
        if !self.read_exact_or_eof(&mut bytes)? && size > 0 {
            return Err(TarError::Truncated);
        }
        self.skip(padding_of(size))?;
        Ok(bytes)
    }

    /// The next entry's header, `None` at the end of the archive (a zero block or the end of
    /// the stream at a block boundary). Skips the rest of the previous entry's data.
    pub fn next_header(&mut self) -> Result<Option<EntryHeader>, TarError> {
        self.finish_entry()?;
        let mut extensions = Extensions::default();
        loop {
            let mut block = [0u8; BLOCK as usize];
            if !self.read_exact_or_eof(&mut block)? || block.iter().all(|&b| b == 0) {
                return if extensions.is_empty() {
                    Ok(None)
                } else {
                    Err(TarError::DanglingExtension)
                };
            }
            let header = tar::Header::from_byte_slice(&block);
            let expected: u32 = block[..148]
                .iter()
                .chain(&block[156..])
                .map(|&b| u32::from(b))
                .sum::<u32>()
                + 8 * u32::from(b' ');
            if header.cksum().ok() != Some(expected) {
                return Err(TarError::Checksum);
            }
            let header_size = numeric_field(header, 124..136, "size", header.entry_size())?;
            match header.entry_type().as_byte() {
                b'L' => {
                    let name = self.read_extension(header_size, MAX_LONG_NAME)?;
                    extensions.long_name = Some(trim_nul(name));
                    continue;
                }
                b'K' => {
                    let link = self.read_extension(header_size, MAX_LONG_NAME)?;
                    extensions.long_link = Some(trim_nul(link));
                    continue;
                }
                b'x' => {
                    extensions.pax = Some(self.read_extension(header_size, MAX_PAX)?);
                    continue;
                }
                b'g' => {
                    // Global PAX headers carry nothing a layer needs (no OCI tool writes
                    // per-archive defaults that matter here); read and drop, bounded.
                    self.read_extension(header_size, MAX_PAX)?;
                    continue;
                }
                _ => {}
            }
            return self.build(header, header_size, extensions).map(Some);
        }
    }

    fn build(
        &mut self,
        header: &tar::Header,
        header_size: u64,
        extensions: Extensions,
    ) -> Result<EntryHeader, TarError> {
        let kind = match header.entry_type().as_byte() {
            b'0' | b'\0' | b'7' => Kind::Regular,
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' => Kind::CharDevice,
            b'4' => Kind::BlockDevice,
            b'5' => Kind::Directory,
            b'6' => Kind::Fifo,
            b'S' => Kind::Sparse,
            other => Kind::Other(other),
        };
        let field = |range, name, value| numeric_field(header, range, name, value);
        let mut entry = EntryHeader {
            kind,
            name: extensions
                .long_name
                .unwrap_or_else(|| header.path_bytes().into_owned()),
            link: extensions.long_link.unwrap_or_else(|| {
                header
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default()
            }),
            size: header_size,
            mode: field(100..108, "mode", header.mode().map(u64::from))? as u32 & 0o7777,
            uid: field(108..116, "uid", header.uid())?,
            gid: field(116..124, "gid", header.gid())?,
            mtime: Time {
                seconds: field(136..148, "mtime", header.mtime())? as i64,
                nanoseconds: 0,
            },
            atime: None,
            major: 0,
            minor: 0,
            xattrs: Vec::new(),
        };
        if matches!(kind, Kind::CharDevice | Kind::BlockDevice) {
            entry.major = header
                .device_major()
                .map_err(|_| TarError::BadField("device major"))?
                .unwrap_or(0);
            entry.minor = header
                .device_minor()
                .map_err(|_| TarError::BadField("device minor"))?
                .unwrap_or(0);
        }
        if let Some(pax) = extensions.pax {
            for record in tar::PaxExtensions::new(&pax) {
                let record = record.map_err(|_| TarError::BadPax)?;
                let value = record.value_bytes();
                match record.key_bytes() {
                    b"path" => entry.name = value.to_vec(),
                    b"linkpath" => entry.link = value.to_vec(),
                    b"size" => entry.size = parse_decimal(value).ok_or(TarError::BadPax)?,
                    b"uid" => entry.uid = parse_decimal(value).ok_or(TarError::BadPax)?,
                    b"gid" => entry.gid = parse_decimal(value).ok_or(TarError::BadPax)?,
                    b"mtime" => entry.mtime = parse_time(value).ok_or(TarError::BadPax)?,
                    b"atime" => entry.atime = Some(parse_time(value).ok_or(TarError::BadPax)?),
                    key => {
                        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                            entry.xattrs.push((name.to_vec(), value.to_vec()));
                        } else if key.starts_with(b"GNU.sparse.") {
                            entry.kind = Kind::Sparse;
                        }
                    }
                }
            }
        }
        // Old tars mark directories by a trailing slash on a regular entry.
        if entry.kind == Kind::Regular && entry.name.last() == Some(&b'/') {
            entry.kind = Kind::Directory;
        }
        // Only regular files carry data; other kinds' size fields are skipped as written.
        self.remaining = entry.size;
        self.padding = padding_of(entry.size);
        Ok(entry)
    }

    /// The next slice of the current entry's data (empty once all was consumed); call
    /// [`TarReader::consume`] with how much of it was used.
    pub fn data(&mut self) -> Result<&[u8], TarError> {
        if self.remaining == 0 {
            return Ok(&[]);
        }
        let remaining = self.remaining;
        let available = self.inner.fill_buf().map_err(TarError::Read)?;
        if available.is_empty() {
            return Err(TarError::Truncated);
        }
        let n = (available.len() as u64).min(remaining) as usize;
        Ok(&available[..n])
    }

    pub fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        self.remaining -= n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_parse_with_fractions() {
        let t = |s: &str| parse_time(s.as_bytes());
        assert_eq!(
            t("12"),
            Some(Time {
                seconds: 12,
                nanoseconds: 0
            })
        );
        assert_eq!(
            t("12.5"),
            Some(Time {
                seconds: 12,
                nanoseconds: 500_000_000
            })
        );
        assert_eq!(
            t("-1.25"),
            Some(Time {
                seconds: -2,
                nanoseconds: 750_000_000
            })
        );
        assert_eq!(t("x"), None);
    }
}
