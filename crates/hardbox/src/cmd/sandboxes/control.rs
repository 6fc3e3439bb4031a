//! The control protocol between the CLI and a sandbox's supervisor: JSON messages over a
//! `SOCK_SEQPACKET` unix socket (`<dir>/control.sock`), one message per packet, with file
//! descriptors attached (`SCM_RIGHTS`) where a message carries them.
//!
//! Why it exists: `exec` hands the command's stdin, stdout and stderr to the sandbox without
//! copying a byte through the supervisor, and gets the command's status back; `stop` and `ls`
//! ask the supervisor directly. A packet is a whole message or nothing: a truncated packet is an
//! error, never a partial request.
//!
//! The socket is reached as `/proc/self/fd/N/control.sock` through a descriptor of the
//! sandbox's directory, so a long store root never exceeds the 108 bytes of a socket address.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The socket's file name in the sandbox's directory.
pub const SOCKET_FILE: &str = "control.sock";

/// The largest message: an exec's argv and environment fit many times over.
const MAX_MESSAGE: usize = 256 * 1024;

/// At most this many descriptors travel with one message (stdin, stdout, stderr).
const MAX_FDS: usize = 4;

/// What the CLI asks.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Run a command; the message carries stdin, stdout and stderr unless `tty`.
    Exec(ExecCommand),
    /// Forward a signal to the command this connection started.
    Signal { signal: i32 },
    /// Stop the sandbox: SIGTERM, then SIGKILL after `grace_ms`.
    Stop { grace_ms: u64 },
    /// Report the sandbox's state.
    Status,
}

/// The command an [`Request::Exec`] asks for (its fields sit beside `"op"` in the message).
#[derive(Debug, Serialize, Deserialize)]
pub struct ExecCommand {
    pub arguments: Vec<String>,
    /// Set over the sandbox's own environment.
    pub environment: Vec<(String, String)>,
    pub working_directory: Option<PathBuf>,
    pub user: Option<(u32, u32)>,
    pub tty: bool,
    /// The caller's W3C trace context, linking the command's events to its trace.
    pub traceparent: Option<String>,
}

/// What the supervisor answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// The command runs (with `tty`, the message carries the terminal's master).
    Started { pid: u32 },
    /// The command could not be started: `code` is 125, 126 or 127.
    Failed { code: u8, message: String },
    /// The command ended; `code` follows the shell's convention (128+N for signal N).
    Exited { code: i32 },
    /// The sandbox stopped.
    Stopped { code: Option<i32> },
    /// The sandbox's state.
    Status {
        init_pid: u32,
        cpu_ns: Option<u64>,
        memory_bytes: Option<u64>,
    },
    /// The request was refused.
    Error { message: String },
}

/// Sends `message` with `fds` attached.
pub fn send(
    socket: BorrowedFd<'_>,
    message: &impl Serialize,
    fds: &[BorrowedFd<'_>],
) -> Result<()> {
    let bytes = serde_json::to_vec(message).context("failed to encode a control message")?;
    if bytes.len() > MAX_MESSAGE {
        bail!("control message too large ({} bytes)", bytes.len());
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        bail!("too many descriptors for one control message");
    }
    let sent = loop {
        match rustix::net::sendmsg(
            socket,
            &[IoSlice::new(&bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Err(rustix::io::Errno::INTR) => {}
            other => break other,
        }
    }
    .context("failed to send a control message")?;
    if sent != bytes.len() {
        bail!("control message sent in part");
    }
    Ok(())
}

/// What [`receive`] got.
#[derive(Debug)]
pub enum Received<T> {
    Message(T),
    /// The peer closed the connection.
    Closed,
    /// Nothing yet (a non-blocking socket).
    Empty,
}

/// Receives one message, appending its descriptors to `fds`.
pub fn receive<T: DeserializeOwned>(
    socket: BorrowedFd<'_>,
    fds: &mut Vec<OwnedFd>,
) -> Result<Received<T>> {
    // One buffer per thread, kept: a fresh one of this size would be mapped and unmapped for
    // every message (the CLI's `exec` receives two, the supervisor one per request).
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with_borrow_mut(|buffer| {
        if buffer.len() < MAX_MESSAGE {
            // Zeroed by the allocator (fresh pages), not written: only what a message fills
            // is ever touched.
            *buffer = vec![0u8; MAX_MESSAGE];
        }
        receive_into(socket, fds, buffer)
    })
}

fn receive_into<T: DeserializeOwned>(
    socket: BorrowedFd<'_>,
    fds: &mut Vec<OwnedFd>,
    buffer: &mut [u8],
) -> Result<Received<T>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        match rustix::net::recvmsg(
            socket,
            &mut [IoSliceMut::new(buffer)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => return Ok(Received::Empty),
            other => break other,
        }
    }
    .context("failed to receive a control message")?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if received.flags.contains(rustix::net::ReturnFlags::TRUNC)
        || received.flags.contains(rustix::net::ReturnFlags::CTRUNC)
    {
        bail!("control message truncated");
    }
    if received.bytes == 0 {
        return Ok(Received::Closed);
    }
    let message =
        serde_json::from_slice(&buffer[..received.bytes]).context("malformed control message")?;
    Ok(Received::Message(message))
}

/// The address of `dir`'s socket through the open directory `dir_fd`.
fn address(dir_fd: BorrowedFd<'_>) -> Result<SocketAddrUnix> {
    let path = format!(
        "/proc/self/fd/{}/{SOCKET_FILE}",
        std::os::fd::AsRawFd::as_raw_fd(&dir_fd)
    );
    SocketAddrUnix::new(path.as_str()).context("invalid control socket address")
}

fn open_dir(dir: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .with_context(|| format!("failed to open {}", dir.display()))
}

/// Connects to the supervisor of the sandbox in `dir`.
///
/// A socket path that fits a socket address is connected to as it is: the kernel walks it
/// through the dentry cache. A longer one is reached through a descriptor of `dir`
/// (`/proc/self/fd/N/control.sock`), whose walk through procfs costs `exec` tens of
/// microseconds more.
pub fn connect(dir: &Path) -> Result<OwnedFd> {
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .context("failed to create a control socket")?;
    let connected = match SocketAddrUnix::new(dir.join(SOCKET_FILE).as_path()) {
        Ok(address) => rustix::net::connect(&socket, &address),
        Err(_) => {
            let dir_fd = open_dir(dir)?;
            rustix::net::connect(&socket, &address(dir_fd.as_fd())?)
        }
    };
    connected.with_context(|| {
        format!(
            "failed to reach the supervisor at {}",
            dir.join(SOCKET_FILE).display()
        )
    })?;
    Ok(socket)
}

/// Binds the control socket of the sandbox in `dir` (replacing a stale one) and listens.
pub fn listen(dir: &Path) -> Result<OwnedFd> {
    let path = dir.join(SOCKET_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(err).with_context(|| format!("failed to remove {}", path.display()))
        }
    }
    let dir_fd = open_dir(dir)?;
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .context("failed to create the control socket")?;
    rustix::net::bind(&socket, &address(dir_fd.as_fd())?)
        .with_context(|| format!("failed to bind {}", path.display()))?;
    rustix::net::listen(&socket, 64)
        .with_context(|| format!("failed to listen on {}", path.display()))?;
    Ok(socket)
}

/// One request and its reply, for requests answered at once (`status`, `stop`).
pub fn call(dir: &Path, request: &Request) -> Result<Reply> {
    let socket = connect(dir)?;
    send(socket.as_fd(), request, &[])?;
    let mut fds = Vec::new();
    match receive::<Reply>(socket.as_fd(), &mut fds)? {
        Received::Message(Reply::Error { message }) => bail!("{message}"),
        Received::Message(reply) => Ok(reply),
        Received::Closed | Received::Empty => {
            bail!("the supervisor closed the connection without a reply")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message goes both ways over a connection made by path (a short directory) and
    /// through the directory's descriptor (a path longer than a socket address holds).
    #[test]
    fn connects_by_path_and_through_the_directory_when_the_path_is_too_long() {
        let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let short = scratch.path().join("s");
        let long = scratch.path().join("l".repeat(120));
        for dir in [short, long] {
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
            let fits = SocketAddrUnix::new(dir.join(SOCKET_FILE).as_path()).is_ok();
            assert_eq!(fits, dir.ends_with("s"), "{}", dir.display());
            let listener = listen(&dir).unwrap_or_else(|e| panic!("{e:#}"));
            let client = connect(&dir).unwrap_or_else(|e| panic!("{e:#}"));
            let server = rustix::net::accept(&listener).unwrap_or_else(|e| panic!("{e}"));
            send(client.as_fd(), &Request::Status, &[]).unwrap_or_else(|e| panic!("{e:#}"));
            let mut fds = Vec::new();
            match receive::<Request>(server.as_fd(), &mut fds) {
                Ok(Received::Message(Request::Status)) => {}
                other => panic!("{other:?}"),
            }
            // The thread's buffer is reused for the next message.
            send(server.as_fd(), &Reply::Exited { code: 3 }, &[])
                .unwrap_or_else(|e| panic!("{e:#}"));
            match receive::<Reply>(client.as_fd(), &mut fds) {
                Ok(Received::Message(Reply::Exited { code: 3 })) => {}
                other => panic!("{other:?}"),
            }
        }
    }
}
