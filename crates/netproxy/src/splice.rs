//! Zero-copy tunnels: bytes move socket → pipe → socket with `splice(2)` and never enter this
//! process's memory. Falls back to `copy_bidirectional` when a pipe cannot be made.
//!
//! Each direction owns a pipe. It fills the pipe from its source only when the pipe is empty,
//! so `EAGAIN` from that splice means the source has nothing to read, and drains the pipe into
//! the destination as it accepts. End of stream on one side half-closes the other, as
//! `copy_bidirectional` does; an error on either direction ends both.

use std::io;
use std::os::fd::OwnedFd;

use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes asked for per splice, and the pipe size asked for.
const CHUNK: usize = 1 << 20;

/// Copies both ways until both directions are done; returns the bytes moved each way.
pub(crate) async fn bidirectional(a: &mut TcpStream, b: &mut TcpStream) -> io::Result<(u64, u64)> {
    let (Ok(pipe_ab), Ok(pipe_ba)) = (new_pipe(), new_pipe()) else {
        return tokio::io::copy_bidirectional_with_sizes(a, b, 64 * 1024, 64 * 1024).await;
    };
    let (a, b) = (&*a, &*b);
    tokio::try_join!(one_way(a, b, pipe_ab), one_way(b, a, pipe_ba))
}

fn new_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    // A bigger pipe means fewer wake-ups; the default (64 KiB) works too.
    let _ = rustix::pipe::fcntl_setpipe_size(&write, CHUNK);
    Ok((read, write))
}

async fn one_way(
    src: &TcpStream,
    dst: &TcpStream,
    (pipe_read, pipe_write): (OwnedFd, OwnedFd),
) -> io::Result<u64> {
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    let mut total = 0u64;
    loop {
        let filled = loop {
            src.readable().await?;
            match src.try_io(Interest::READABLE, || {
                splice(src, None, &pipe_write, None, CHUNK, flags).map_err(io::Error::from)
            }) {
                Ok(n) => break n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err),
            }
        };
        if filled == 0 {
            // End of stream: pass the half-close on.
            let _ = rustix::net::shutdown(dst, rustix::net::Shutdown::Write);
            return Ok(total);
        }
        let mut in_pipe = filled;
        while in_pipe > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(&pipe_read, None, dst, None, in_pipe, flags).map_err(io::Error::from)
            }) {
                Ok(n) => {
                    in_pipe -= n;
                    total += n as u64;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn moves_both_ways_and_passes_half_closes_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (mut left, mut proxy_left) = pair(&listener).await;
        let (mut proxy_right, mut right) = pair(&listener).await;
        let relay = tokio::spawn(async move {
            super::bidirectional(&mut proxy_left, &mut proxy_right)
                .await
                .unwrap()
        });
        let payload: Vec<u8> = (0..3_000_000u32).map(|n| n as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            left.write_all(&sent).await.unwrap();
            left.shutdown().await.unwrap();
            let mut reply = Vec::new();
            left.read_to_end(&mut reply).await.unwrap();
            reply
        });
        let mut received = Vec::new();
        right.read_to_end(&mut received).await.unwrap();
        assert!(received == payload);
        right.write_all(b"done").await.unwrap();
        right.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"done");
        assert_eq!(relay.await.unwrap(), (3_000_000, 4));
    }
}
