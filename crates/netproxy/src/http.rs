//! Just enough HTTP/1.x for a proxy that decides on request heads: a buffered reader that
//! reads request heads and forwards bodies by their framing, and a strict head parser.
//!
//! Strict on purpose: the bytes after a head are forwarded as they came, so the proxy must
//! find the same message boundaries as the server behind it or a second request could slip past
//! its checks. Heads with both `Content-Length` and `Transfer-Encoding`, conflicting lengths,
//! codings other than a final `chunked`, folded header lines or bare LF line ends are refused.
//!
//! Responses are not rewritten, only followed: [`ResponseTracker`] finds where each response
//! ends (by its status, the request's method and its framing) so that the response to an
//! `Upgrade` request is known, and the connection stops being HTTP only after a `101`.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::secrets::is_token_byte;

/// The largest request head accepted.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
const MAX_LINE: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("request head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("malformed request line")]
    RequestLine,
    #[error("malformed header line")]
    Header,
    #[error("unsupported http version")]
    Version,
    #[error("ambiguous or unsupported message framing")]
    Framing,
    #[error("connection closed in the middle of a request")]
    Truncated,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// How a request body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestHead {
    pub method: String,
    pub target: String,
    /// 0 or 1 (HTTP/1.0, HTTP/1.1).
    pub minor_version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RequestHead {
    /// Parses a head (request line and headers, with or without the final empty line).
    pub fn parse(bytes: &[u8]) -> Result<Self, HttpError> {
        let mut lines = bytes.split(|b| *b == b'\n');
        let request_line = lines.next().ok_or(HttpError::RequestLine)?;
        let request_line = request_line
            .strip_suffix(b"\r")
            .ok_or(HttpError::RequestLine)?;
        let text = std::str::from_utf8(request_line).map_err(|_| HttpError::RequestLine)?;
        let mut parts = text.split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(HttpError::RequestLine);
        };
        if method.is_empty() || !method.bytes().all(is_token_byte) {
            return Err(HttpError::RequestLine);
        }
        if target.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7F) {
            return Err(HttpError::RequestLine);
        }
        let minor_version = match version {
            "HTTP/1.1" => 1,
            "HTTP/1.0" => 0,
            _ => return Err(HttpError::Version),
        };
        let mut headers = Vec::new();
        for line in lines {
            let line = match line.strip_suffix(b"\r") {
                Some(line) => line,
                None if line.is_empty() => break, // after the final CRLF
                None => return Err(HttpError::Header),
            };
            if line.is_empty() {
                break;
            }
            if line[0] == b' ' || line[0] == b'\t' {
                return Err(HttpError::Header); // obsolete line folding
            }
            let colon = line
                .iter()
                .position(|b| *b == b':')
                .ok_or(HttpError::Header)?;
            let name = &line[..colon];
            if name.is_empty() || !name.iter().copied().all(is_token_byte) {
                return Err(HttpError::Header);
            }
            let value = line[colon + 1..].trim_ascii();
            if value.contains(&0) {
                return Err(HttpError::Header);
            }
            headers.push((String::from_utf8_lossy(name).into_owned(), value.to_vec()));
        }
        Ok(Self {
            method: method.to_owned(),
            target: target.to_owned(),
            minor_version,
            headers,
        })
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The `Host` header, when there is exactly one and it is text.
    pub fn host_header(&self) -> Result<Option<&str>, HttpError> {
        let mut hosts = self.headers_named("host");
        let first = hosts.next();
        if hosts.next().is_some() {
            return Err(HttpError::Header);
        }
        first
            .map(|value| std::str::from_utf8(value).map_err(|_| HttpError::Header))
            .transpose()
    }

    pub fn framing(&self) -> Result<Framing, HttpError> {
        let codings: Vec<&[u8]> = self.headers_named("transfer-encoding").collect();
        let lengths: Vec<&[u8]> = self.headers_named("content-length").collect();
        if !codings.is_empty() {
            if !lengths.is_empty() {
                return Err(HttpError::Framing);
            }
            let joined: Vec<String> = codings
                .iter()
                .flat_map(|value| value.split(|b| *b == b','))
                .map(|coding| String::from_utf8_lossy(coding.trim_ascii()).to_ascii_lowercase())
                .collect();
            return match joined.as_slice() {
                [only] if only == "chunked" => Ok(Framing::Chunked),
                _ => Err(HttpError::Framing),
            };
        }
        let mut length = None;
        for value in lengths.iter().flat_map(|value| value.split(|b| *b == b',')) {
            let value = value.trim_ascii();
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) || value.len() > 18 {
                return Err(HttpError::Framing);
            }
            let parsed: u64 = std::str::from_utf8(value)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or(HttpError::Framing)?;
            if length.is_some_and(|known| known != parsed) {
                return Err(HttpError::Framing);
            }
            length = Some(parsed);
        }
        Ok(match length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        })
    }

    /// Whether this request asks to switch protocols (`Upgrade` named in `Connection`, e.g.
    /// WebSocket).
    pub fn is_upgrade(&self) -> bool {
        self.header("upgrade").is_some()
            && self.headers_named("connection").any(|value| {
                value
                    .split(|b| *b == b',')
                    .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
            })
    }

    pub fn expects_continue(&self) -> bool {
        self.header("expect")
            .is_some_and(|value| value.eq_ignore_ascii_case(b"100-continue"))
    }

    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    pub fn set_header(&mut self, name: &str, value: &[u8]) {
        self.remove_header(name);
        self.headers.push((name.to_owned(), value.to_vec()));
    }

    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(if self.minor_version == 1 {
            b" HTTP/1.1\r\n"
        } else {
            b" HTTP/1.0\r\n"
        });
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// Splits `host[:port]` or `[v6][:port]`.
pub(crate) fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            Some(_) => return None,
            None => (authority, None),
        }
    };
    if host.is_empty() || authority.contains(['@', '/', '?', '#']) {
        return None;
    }
    let port = match port {
        None => None,
        Some(text) => match text.parse::<u16>() {
            Ok(0) | Err(_) => return None,
            Ok(port) => Some(port),
        },
    };
    Some((host, port))
}

/// A reader with a buffer, so a head can be read and what follows it forwarded.
pub(crate) struct Buffered<R> {
    pub inner: R,
    buf: Vec<u8>,
    pos: usize,
}

impl<R: AsyncRead + Unpin> Buffered<R> {
    pub fn new(inner: R) -> Self {
        Self::with_prefix(inner, Vec::new())
    }

    /// A reader whose first bytes are `prefix` (already read from `inner`).
    pub fn with_prefix(inner: R, prefix: Vec<u8>) -> Self {
        Self {
            inner,
            buf: prefix,
            pos: 0,
        }
    }

    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Reads more bytes into the buffer; 0 at end of stream.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + 16 * 1024, 0);
        let result = self.inner.read(&mut self.buf[old..]).await;
        let n = *result.as_ref().unwrap_or(&0);
        self.buf.truncate(old + n);
        result
    }

    /// The next request head; `None` if the stream ends cleanly before one starts.
    pub async fn read_head(&mut self) -> Result<Option<RequestHead>, HttpError> {
        let mut searched: usize = 0;
        loop {
            let data = self.buffered();
            // Empty lines before a request line are allowed (RFC 9112 §2.2).
            let skip = data
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            if skip > 0 {
                self.consume(skip);
                searched = 0;
                continue;
            }
            let from = searched.saturating_sub(3);
            if let Some(at) = memchr::memmem::find(&data[from..], b"\r\n\r\n") {
                let end = from + at + 4;
                let head = RequestHead::parse(&data[..end]);
                self.consume(end);
                return head.map(Some);
            }
            searched = data.len();
            if data.len() > MAX_HEAD {
                return Err(HttpError::TooLarge);
            }
            if self.fill().await? == 0 {
                return match self.buffered().is_empty() {
                    true => Ok(None),
                    false => Err(HttpError::Truncated),
                };
            }
        }
    }

    async fn read_line(&mut self) -> Result<Vec<u8>, HttpError> {
        loop {
            if let Some(at) = memchr::memchr(b'\n', self.buffered()) {
                let line = self.buffered()[..=at].to_vec();
                self.consume(at + 1);
                if !line.ends_with(b"\r\n") {
                    return Err(HttpError::Framing);
                }
                return Ok(line);
            }
            if self.buffered().len() > MAX_LINE {
                return Err(HttpError::Framing);
            }
            if self.fill().await? == 0 {
                return Err(HttpError::Truncated);
            }
        }
    }

    /// Reads `n` body bytes into memory (for small bodies checked before they are sent).
    pub async fn read_exact_body(&mut self, n: usize) -> Result<Vec<u8>, HttpError> {
        while self.buffered().len() < n {
            if self.fill().await? == 0 {
                return Err(HttpError::Truncated);
            }
        }
        let body = self.buffered()[..n].to_vec();
        self.consume(n);
        Ok(body)
    }

    /// Copies a body with `framing` to `out` as it came, showing the body's data (without
    /// chunk framing) to `inspect` before each piece is written; `inspect` may stop the copy.
    pub async fn forward_body<W, E>(
        &mut self,
        out: &mut W,
        framing: Framing,
        inspect: &mut (dyn FnMut(&[u8]) -> Result<(), E> + Send),
    ) -> Result<(), BodyError<E>>
    where
        W: AsyncWrite + Unpin,
    {
        match framing {
            Framing::None => Ok(()),
            Framing::Length(n) => self.forward_exact(out, n, inspect).await,
            Framing::Chunked => loop {
                let line = self.read_line().await?;
                let size = parse_chunk_size(&line)?;
                out.write_all(&line).await.map_err(HttpError::Io)?;
                if size == 0 {
                    loop {
                        let trailer = self.read_line().await?;
                        inspect(&trailer).map_err(BodyError::Stopped)?;
                        out.write_all(&trailer).await.map_err(HttpError::Io)?;
                        if trailer == b"\r\n" {
                            return Ok(());
                        }
                    }
                }
                self.forward_exact(out, size, inspect).await?;
                let end = self.read_line().await?;
                if end != b"\r\n" {
                    return Err(HttpError::Framing.into());
                }
                out.write_all(&end).await.map_err(HttpError::Io)?;
            },
        }
    }

    async fn forward_exact<W, E>(
        &mut self,
        out: &mut W,
        mut remaining: u64,
        inspect: &mut (dyn FnMut(&[u8]) -> Result<(), E> + Send),
    ) -> Result<(), BodyError<E>>
    where
        W: AsyncWrite + Unpin,
    {
        while remaining > 0 {
            if self.buffered().is_empty() && self.fill().await.map_err(HttpError::Io)? == 0 {
                return Err(HttpError::Truncated.into());
            }
            let take = self
                .buffered()
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            let piece = &self.buf[self.pos..self.pos + take];
            inspect(piece).map_err(BodyError::Stopped)?;
            out.write_all(piece).await.map_err(HttpError::Io)?;
            self.consume(take);
            remaining -= take as u64;
        }
        Ok(())
    }
}

/// A body copy that failed, or was stopped by its inspector.
#[derive(Debug)]
pub(crate) enum BodyError<E> {
    /// The body was malformed, truncated, or could not be written.
    Http,
    Stopped(E),
}

impl<E> From<HttpError> for BodyError<E> {
    fn from(_: HttpError) -> Self {
        Self::Http
    }
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let line = line.strip_suffix(b"\r\n").ok_or(HttpError::Framing)?;
    let size = match memchr::memchr(b';', line) {
        Some(at) => &line[..at],
        None => line,
    };
    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(HttpError::Framing);
    }
    std::str::from_utf8(size)
        .ok()
        .and_then(|text| u64::from_str_radix(text, 16).ok())
        .ok_or(HttpError::Framing)
}

/// A request whose response is awaited, as far as framing its response goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    /// A `HEAD` request: its response has no body whatever its headers say.
    pub head: bool,
    /// It asked to switch protocols.
    pub upgrade: bool,
}

/// What a response stream showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The final response to an upgrade request: `true` for `101 Switching Protocols`.
    UpgradeAnswered(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Track {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data; how many of its bytes are still to come.
    ChunkEnd(u8),
    Trailer,
    /// A body that ends when the server closes, or the bytes of another protocol after `101`:
    /// nothing more to follow.
    Done,
}

/// Follows a stream of HTTP/1.1 responses byte by byte without changing it: finds the end of
/// each response, so the response to each sent request (see [`Sent`]) is known. Malformed or
/// unexpected responses stop the tracking (and an awaited upgrade is then refused).
#[derive(Debug)]
pub(crate) struct ResponseTracker {
    state: Track,
    line: Vec<u8>,
    sent: std::collections::VecDeque<Sent>,
}

impl Default for ResponseTracker {
    fn default() -> Self {
        Self {
            state: Track::Head,
            line: Vec::new(),
            sent: std::collections::VecDeque::new(),
        }
    }
}

impl ResponseTracker {
    /// A request was sent; its response follows those of the requests sent before.
    pub fn sent(&mut self, request: Sent) {
        self.sent.push_back(request);
    }

    /// Whether responses are still being followed.
    pub fn tracking(&self) -> bool {
        self.state != Track::Done
    }

    /// Stops following (the stream is broken or became something else). An awaited upgrade is
    /// answered `false`.
    fn stop(&mut self) -> Option<Seen> {
        self.state = Track::Done;
        self.line.clear();
        let upgrade = self.sent.iter().any(|sent| sent.upgrade);
        self.sent.clear();
        upgrade.then_some(Seen::UpgradeAnswered(false))
    }

    /// Follows `data`, the next bytes of the response stream.
    pub fn feed(&mut self, mut data: &[u8]) -> Option<Seen> {
        let mut seen = None;
        while !data.is_empty() {
            match self.state {
                Track::Done => return seen,
                Track::Body(remaining) => {
                    let take = data
                        .len()
                        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    data = &data[take..];
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        Track::Head
                    } else {
                        Track::Body(left)
                    };
                }
                Track::ChunkData(remaining) => {
                    let take = data
                        .len()
                        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    data = &data[take..];
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        Track::ChunkEnd(2)
                    } else {
                        Track::ChunkData(left)
                    };
                }
                Track::ChunkEnd(left) => {
                    let expected = if left == 2 { b'\r' } else { b'\n' };
                    if data[0] != expected {
                        return self.stop().or(seen);
                    }
                    data = &data[1..];
                    self.state = if left == 2 {
                        Track::ChunkEnd(1)
                    } else {
                        Track::ChunkSize
                    };
                }
                Track::Head | Track::ChunkSize | Track::Trailer => {
                    let (complete, used) = self.take_line_or_head(data);
                    data = &data[used..];
                    if self.line.len() > MAX_HEAD {
                        return self.stop().or(seen);
                    }
                    if !complete {
                        continue;
                    }
                    let text = std::mem::take(&mut self.line);
                    let step = match self.state {
                        Track::Head => self.finish_head(&text),
                        Track::ChunkSize => match parse_chunk_size(&text) {
                            Ok(0) => {
                                self.state = Track::Trailer;
                                Ok(None)
                            }
                            Ok(size) => {
                                self.state = Track::ChunkData(size);
                                Ok(None)
                            }
                            Err(_) => Err(()),
                        },
                        _ => {
                            if text == b"\r\n" {
                                self.state = Track::Head;
                            } else if !text.ends_with(b"\r\n") {
                                return self.stop().or(seen);
                            }
                            Ok(None)
                        }
                    };
                    match step {
                        Ok(Some(found)) => seen = Some(found),
                        Ok(None) => {}
                        Err(()) => return self.stop().or(seen),
                    }
                }
            }
        }
        seen
    }

    /// Appends to `self.line` up to the end of a head (in `Head`) or of a line; returns whether
    /// it is complete and how many bytes of `data` were used.
    fn take_line_or_head(&mut self, data: &[u8]) -> (bool, usize) {
        if self.state == Track::Head {
            // Empty lines before a status line are tolerated, as before a request line.
            if self.line.is_empty() {
                let skip = data
                    .iter()
                    .take_while(|b| **b == b'\r' || **b == b'\n')
                    .count();
                if skip > 0 {
                    return (false, skip);
                }
            }
            let from = self.line.len().saturating_sub(3);
            self.line.extend_from_slice(data);
            match memchr::memmem::find(&self.line[from..], b"\r\n\r\n") {
                Some(at) => {
                    let end = from + at + 4;
                    let used = data.len() - (self.line.len() - end);
                    self.line.truncate(end);
                    (true, used)
                }
                None => (false, data.len()),
            }
        } else {
            match memchr::memchr(b'\n', data) {
                Some(at) => {
                    self.line.extend_from_slice(&data[..=at]);
                    (true, at + 1)
                }
                None => {
                    self.line.extend_from_slice(data);
                    (false, data.len())
                }
            }
        }
    }

    /// A complete response head: decides how its body ends.
    fn finish_head(&mut self, head: &[u8]) -> Result<Option<Seen>, ()> {
        let status = parse_status(head).ok_or(())?;
        let request = self.sent.front().copied().unwrap_or(Sent {
            head: false,
            upgrade: false,
        });
        if status == 101 {
            if !request.upgrade {
                return Err(());
            }
            self.sent.clear();
            self.state = Track::Done;
            return Ok(Some(Seen::UpgradeAnswered(true)));
        }
        if (100..200).contains(&status) {
            // 100 Continue, 103 Early Hints: the final response follows.
            self.state = Track::Head;
            return Ok(None);
        }
        self.sent.pop_front();
        self.state = if request.head || status == 204 || status == 304 {
            Track::Head
        } else if !has_length(head) {
            // No length at all: the body ends when the server closes.
            Track::Done
        } else {
            let fields = RequestHead::parse(&[b"GET / HTTP/1.1\r\n", head_fields(head)].concat())
                .map_err(|_| ())?;
            match fields.framing().map_err(|_| ())? {
                Framing::None => Track::Head,
                Framing::Length(n) => Track::Body(n),
                Framing::Chunked => Track::ChunkSize,
            }
        };
        // Requests after a close-delimited body are never answered.
        let unanswered = self.state == Track::Done && self.sent.iter().any(|sent| sent.upgrade);
        if self.state == Track::Done {
            self.sent.clear();
        }
        Ok((request.upgrade || unanswered).then_some(Seen::UpgradeAnswered(false)))
    }
}

/// `NNN` of `HTTP/1.x NNN reason`.
fn parse_status(head: &[u8]) -> Option<u16> {
    let rest = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || !matches!(rest.get(3), Some(b' ' | b'\r')) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// The header lines of a response head (after the status line).
fn head_fields(head: &[u8]) -> &[u8] {
    memchr::memchr(b'\n', head).map_or(&[][..], |at| &head[at + 1..])
}

fn has_length(head: &[u8]) -> bool {
    head_fields(head).split(|b| *b == b'\n').any(|line| {
        line.split(|b| *b == b':').next().is_some_and(|name| {
            name.eq_ignore_ascii_case(b"content-length")
                || name.eq_ignore_ascii_case(b"transfer-encoding")
        })
    })
}

/// A plain-text HTTP response that closes the connection.
pub(crate) fn simple_response(status: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nX-Hardbox-Policy: deny\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<RequestHead, HttpError> {
        RequestHead::parse(text.as_bytes())
    }

    #[test]
    fn parses_heads() {
        let h = head("GET http://a.test/x HTTP/1.1\r\nHost: a.test\r\nX-A:  1 \r\n\r\n").unwrap();
        assert_eq!(
            (h.method.as_str(), h.target.as_str(), h.minor_version),
            ("GET", "http://a.test/x", 1)
        );
        assert_eq!(h.header("x-a"), Some(&b"1"[..]));
        assert_eq!(h.host_header().unwrap(), Some("a.test"));
        assert_eq!(h.framing().unwrap(), Framing::None);
        assert_eq!(RequestHead::parse(&h.serialize()).unwrap(), h);
    }

    #[test]
    fn refuses_ambiguous_heads() {
        for text in [
            "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\n\n",
            "GET /  HTTP/1.1\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        ] {
            assert!(head(text).is_err(), "{text:?}");
        }
        for text in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        ] {
            assert!(head(text).unwrap().framing().is_err(), "{text:?}");
        }
        let two_hosts = head("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").unwrap();
        assert!(two_hosts.host_header().is_err());
    }

    #[test]
    fn authorities() {
        assert_eq!(split_authority("a.test:443"), Some(("a.test", Some(443))));
        assert_eq!(split_authority("a.test"), Some(("a.test", None)));
        assert_eq!(split_authority("[::1]:80"), Some(("::1", Some(80))));
        assert_eq!(split_authority("::1"), None);
        assert_eq!(split_authority("a.test:0"), None);
        assert_eq!(split_authority("user@a.test:80"), None);
    }

    #[tokio::test]
    async fn forwards_chunked_bodies_and_finds_the_next_head() {
        let input = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: v\r\n\r\nGET /next HTTP/1.1\r\n\r\n";
        let mut reader = Buffered::new(&input[..]);
        let mut out = Vec::new();
        let mut seen = Vec::new();
        reader
            .forward_body(&mut out, Framing::Chunked, &mut |data: &[u8]| {
                seen.extend_from_slice(data);
                Ok::<(), ()>(())
            })
            .await
            .unwrap();
        assert_eq!(out, &input[..input.len() - 22]);
        assert_eq!(seen, b"hello worldT: v\r\n\r\n");
        let next = reader.read_head().await.unwrap().unwrap();
        assert_eq!(next.target, "/next");
        assert!(reader.read_head().await.unwrap().is_none());
    }

    #[test]
    fn recognises_upgrade_requests() {
        let upgrade = head(
            "GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        assert!(upgrade.unwrap().is_upgrade());
        let no_token = head("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        assert!(!no_token.unwrap().is_upgrade());
    }

    /// Feeds `stream` in pieces of `step` bytes; returns what was seen and whether tracking
    /// went on to the end.
    fn track(sent: &[Sent], stream: &[u8], step: usize) -> (Vec<Seen>, bool) {
        let mut tracker = ResponseTracker::default();
        for request in sent {
            tracker.sent(*request);
        }
        let seen = stream
            .chunks(step)
            .filter_map(|piece| tracker.feed(piece))
            .collect();
        (seen, tracker.tracking())
    }

    #[test]
    fn follows_responses_to_the_answer_of_an_upgrade() {
        let get = Sent {
            head: false,
            upgrade: false,
        };
        let head_request = Sent {
            head: true,
            upgrade: false,
        };
        let upgrade = Sent {
            head: false,
            upgrade: true,
        };
        let earlier = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x\r\nHTTP\r\n0\r\nT: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n";
        let switched = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05HTTP/";
        let stream = [&earlier[..], &switched[..]].concat();
        for step in [1, 3, 7, stream.len()] {
            assert_eq!(
                track(&[get, get, head_request, upgrade], &stream, step),
                (vec![Seen::UpgradeAnswered(true)], false),
                "{step}"
            );
        }
        let refused = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nnoHTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(
            track(&[upgrade, get], refused, 1),
            (vec![Seen::UpgradeAnswered(false)], true)
        );
        // A 101 nobody asked for, or garbage, stops the tracking.
        let unasked = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
        assert_eq!(track(&[get], unasked, 4), (vec![], false));
        let garbage = b"SSH-2.0-x\r\n\r\n";
        assert_eq!(
            track(&[upgrade], garbage, 4),
            (vec![Seen::UpgradeAnswered(false)], false)
        );
        // Without a length the body runs to the end of the stream.
        let close_delimited = b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 101 x\r\n\r\n";
        assert_eq!(
            track(&[get, upgrade], close_delimited, 5),
            (vec![Seen::UpgradeAnswered(false)], false)
        );
    }

    #[tokio::test]
    async fn inspector_stops_a_body() {
        let input = b"0123456789";
        let mut reader = Buffered::new(&input[..]);
        let mut out = Vec::new();
        let result = reader
            .forward_body(&mut out, Framing::Length(10), &mut |data: &[u8]| {
                if data.contains(&b'5') {
                    Err("found")
                } else {
                    Ok(())
                }
            })
            .await;
        assert!(matches!(result, Err(BodyError::Stopped("found"))));
        assert!(out.is_empty());
    }
}
