//! Reading the server name (SNI) from a TLS ClientHello without terminating TLS.
//!
//! The ClientHello may span several TLS records; the handshake message is reassembled from
//! consecutive handshake records (up to [`MAX_HELLO`] bytes). The bytes read are kept so they
//! can be sent on to the real server unchanged.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The most bytes read while looking for a complete ClientHello.
pub(crate) const MAX_HELLO: usize = 64 * 1024;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXTENSION_SERVER_NAME: u16 = 0;

/// What the first bytes of a stream are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamStart {
    /// Not a TLS handshake record.
    NotTls,
    /// More bytes are needed.
    Incomplete,
    /// A ClientHello, with its SNI host name if it has one.
    Hello { sni: Option<String> },
    /// A TLS record that is not a well-formed ClientHello.
    Malformed,
}

/// Looks at the start of a stream.
pub(crate) fn parse(data: &[u8]) -> StreamStart {
    match data.first() {
        None => return StreamStart::Incomplete,
        Some(&CONTENT_HANDSHAKE) => {}
        Some(_) => return StreamStart::NotTls,
    }
    // Reassemble the handshake payload from consecutive records.
    let mut payload = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = data.get(at..at + 5) else {
            return StreamStart::Incomplete;
        };
        if header[0] != CONTENT_HANDSHAKE || header[1] != 3 {
            return if at == 0 {
                StreamStart::NotTls
            } else {
                StreamStart::Malformed
            };
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return StreamStart::Malformed;
        }
        let Some(fragment) = data.get(at + 5..at + 5 + len) else {
            return StreamStart::Incomplete;
        };
        payload.extend_from_slice(fragment);
        at += 5 + len;
        if payload.len() >= 4 {
            if payload[0] != HANDSHAKE_CLIENT_HELLO {
                return StreamStart::Malformed;
            }
            let body_len = (usize::from(payload[1]) << 16)
                | (usize::from(payload[2]) << 8)
                | usize::from(payload[3]);
            if payload.len() >= 4 + body_len {
                return match client_hello_sni(&payload[4..4 + body_len]) {
                    Some(sni) => StreamStart::Hello { sni },
                    None => StreamStart::Malformed,
                };
            }
        }
    }
}

struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

/// `Some(None)`: a well-formed ClientHello without SNI. `None`: malformed.
fn client_hello_sni(body: &[u8]) -> Option<Option<String>> {
    let mut cursor = Cursor { data: body };
    cursor.take(2 + 32)?; // legacy_version, random
    cursor.vec8()?; // legacy_session_id
    cursor.vec16()?; // cipher_suites
    cursor.vec8()?; // legacy_compression_methods
    if cursor.data.is_empty() {
        return Some(None); // no extensions at all
    }
    let mut extensions = Cursor {
        data: cursor.vec16()?,
    };
    let mut sni = None;
    while !extensions.data.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        if kind != EXTENSION_SERVER_NAME {
            continue;
        }
        if sni.is_some() {
            return None; // duplicate extension
        }
        let mut list = Cursor {
            data: Cursor { data }.vec16()?,
        };
        while !list.data.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == 0 {
                let text = std::str::from_utf8(name).ok()?;
                if text.is_empty() || sni.is_some() {
                    return None;
                }
                sni = Some(text.to_owned());
            }
        }
    }
    Some(sni)
}

/// Reads from `stream` until the start is known to be a ClientHello, not TLS, or malformed.
/// Returns the bytes read (to be forwarded) and what they are. An early end of stream gives
/// [`StreamStart::Incomplete`].
pub(crate) async fn read_client_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
    already_read: Vec<u8>,
) -> std::io::Result<(Vec<u8>, StreamStart)> {
    let mut buf = already_read;
    match parse(&buf) {
        StreamStart::Incomplete => {}
        other => return Ok((buf, other)),
    }
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok((buf, StreamStart::Incomplete));
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse(&buf) {
            StreamStart::Incomplete if buf.len() < MAX_HELLO => continue,
            StreamStart::Incomplete => return Ok((buf, StreamStart::Malformed)),
            other => return Ok((buf, other)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ClientHello with an optional SNI, split into records of at most `record` bytes.
    pub(crate) fn client_hello(sni: Option<&str>, record: usize) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        let mut extensions = Vec::new();
        if let Some(name) = sni {
            let mut entry = vec![0];
            entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
            entry.extend_from_slice(name.as_bytes());
            let mut list = (entry.len() as u16).to_be_bytes().to_vec();
            list.extend_from_slice(&entry);
            extensions.extend_from_slice(&0u16.to_be_bytes());
            extensions.extend_from_slice(&(list.len() as u16).to_be_bytes());
            extensions.extend_from_slice(&list);
        }
        extensions.extend_from_slice(&[0, 43, 0, 3, 2, 3, 4]); // supported_versions
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(&extensions);
        let mut handshake = vec![HANDSHAKE_CLIENT_HELLO, 0];
        handshake.extend_from_slice(&(body.len() as u16).to_be_bytes());
        handshake.extend_from_slice(&body);
        let mut out = Vec::new();
        for piece in handshake.chunks(record) {
            out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
            out.extend_from_slice(&(piece.len() as u16).to_be_bytes());
            out.extend_from_slice(piece);
        }
        out
    }

    #[test]
    fn finds_sni() {
        let hello = client_hello(Some("api.example.com"), 16384);
        assert_eq!(
            parse(&hello),
            StreamStart::Hello {
                sni: Some("api.example.com".into())
            }
        );
        assert_eq!(
            parse(&client_hello(None, 16384)),
            StreamStart::Hello { sni: None }
        );
    }

    #[test]
    fn reassembles_records_and_waits_for_more() {
        let hello = client_hello(Some("api.example.com"), 20);
        assert_eq!(
            parse(&hello),
            StreamStart::Hello {
                sni: Some("api.example.com".into())
            }
        );
        for cut in [1, 5, 30, hello.len() - 1] {
            assert_eq!(parse(&hello[..cut]), StreamStart::Incomplete, "{cut}");
        }
    }

    #[test]
    fn tells_other_bytes_apart() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), StreamStart::NotTls);
        assert_eq!(parse(b"SSH-2.0-OpenSSH_9.6\r\n"), StreamStart::NotTls);
        let mut not_hello = client_hello(Some("a.test"), 16384);
        not_hello[5] = 2; // ServerHello
        assert_eq!(parse(&not_hello), StreamStart::Malformed);
        let mut overlong_extension = client_hello(Some("a.test"), 16384);
        let len = overlong_extension.len();
        overlong_extension[len - 4] = 9; // supported_versions claims 9 bytes, 3 remain
        assert_eq!(parse(&overlong_extension), StreamStart::Malformed);
    }
}
