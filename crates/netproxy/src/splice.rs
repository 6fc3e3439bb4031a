//! Zero-copy tunnels: bytes move socket → pipe → socket with `splice(2)` and never enter this
//! process's memory. Falls back to `copy_bidirectional` when a pipe cannot be made.
//!
//! Each direction owns a pipe. It fills the pipe from its source only when the pipe is empty,
//! so `EAGAIN` from that splice means the source has nothing to read, and drains the pipe into
//! the destination as it accepts. End of stream on one side half-closes the other, as
//! `copy_bidirectional` does; an error on either direction ends both.
//!
//! A tunnel starts on the runtime. Once one direction has moved [`PROMOTE_AFTER`] bytes, the
//! tunnel leaves the runtime for two threads of its own, one per direction, that splice with
//! blocking calls: the kernel wakes the thread when data or room arrives, with no readiness
//! round trip through the runtime's poller, no `EAGAIN` attempts and no task switches. On the
//! benchmark's bulk stream (`examples/bench.rs`) that raised the proxied rate by about a fifth
//! and cut the CPU time per GiB. At most [`MAX_THREADED`] tunnels have threads at a time; the
//! others, and any tunnel whose threads cannot be started, stay on the runtime.

use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Bytes asked for per splice, and the pipe size asked for (the default `pipe-max-size`, so
/// an unprivileged process gets it too).
const CHUNK: usize = 1 << 20;

/// Bytes one direction moves on the runtime before the tunnel gets threads of its own: short
/// exchanges never pay for a thread.
const PROMOTE_AFTER: u64 = 1 << 20;

/// Tunnels on threads of their own at a time (each has two).
const MAX_THREADED: usize = 64;

/// Stack of a tunnel's thread: it only loops over two system calls.
const THREAD_STACK: usize = 128 * 1024;

/// Tunnels on threads now.
static THREADED: AtomicUsize = AtomicUsize::new(0);

/// Copies both ways until both directions are done; returns the bytes moved each way.
pub(crate) async fn bidirectional(a: TcpStream, b: TcpStream) -> io::Result<(u64, u64)> {
    bidirectional_promoting_after(a, b, PROMOTE_AFTER).await
}

async fn bidirectional_promoting_after(
    a: TcpStream,
    b: TcpStream,
    promote_after: u64,
) -> io::Result<(u64, u64)> {
    let (Ok(mut ab), Ok(mut ba)) = (Way::new(), Way::new()) else {
        let (mut a, mut b) = (a, b);
        return tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, 64 * 1024, 64 * 1024)
            .await;
    };
    if on_runtime(&a, &b, &mut ab, &mut ba, promote_after).await? {
        if let Some(slot) = Slot::take() {
            match Threads::spawn() {
                Ok(threads) => return threads.run(a, b, ab, ba, slot).await,
                Err(_) => drop(slot),
            }
        }
        on_runtime(&a, &b, &mut ab, &mut ba, u64::MAX).await?;
    }
    Ok((ab.total, ba.total))
}

/// One direction's pipe and progress.
struct Way {
    pipe_read: OwnedFd,
    pipe_write: OwnedFd,
    /// Bytes in the pipe: read from the source, not yet written to the destination.
    in_pipe: usize,
    /// Bytes written to the destination.
    total: u64,
    /// The source ended and the destination was half-closed.
    done: bool,
}

impl Way {
    fn new() -> io::Result<Self> {
        // A blocking pipe: the runtime's splices pass SPLICE_F_NONBLOCK, the threads' do not.
        let (pipe_read, pipe_write) = pipe_with(PipeFlags::CLOEXEC)?;
        // A bigger pipe means fewer wake-ups; the default (64 KiB) works too.
        let _ = rustix::pipe::fcntl_setpipe_size(&pipe_write, CHUNK);
        Ok(Way {
            pipe_read,
            pipe_write,
            in_pipe: 0,
            total: 0,
            done: false,
        })
    }
}

/// Moves both directions on the runtime until both are done (`false`), or one has moved
/// `limit` bytes and has an empty pipe (`true`).
async fn on_runtime(
    a: &TcpStream,
    b: &TcpStream,
    ab: &mut Way,
    ba: &mut Way,
    limit: u64,
) -> io::Result<bool> {
    let forward = one_way(a, b, ab, limit);
    let backward = one_way(b, a, ba, limit);
    tokio::pin!(forward, backward);
    let (mut forward_ended, mut backward_ended) = (false, false);
    loop {
        let promote = tokio::select! {
            promote = &mut forward, if !forward_ended => {
                forward_ended = true;
                promote?
            }
            promote = &mut backward, if !backward_ended => {
                backward_ended = true;
                promote?
            }
        };
        if promote || (forward_ended && backward_ended) {
            return Ok(promote);
        }
    }
}

/// Moves `way` on the runtime until its source ends (`false`), or it has moved `limit` bytes
/// and its pipe is empty (`true`). Cancel-safe: `way` is brought up to date after each splice.
async fn one_way(src: &TcpStream, dst: &TcpStream, way: &mut Way, limit: u64) -> io::Result<bool> {
    if way.done {
        return Ok(false);
    }
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    loop {
        while way.in_pipe > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(&way.pipe_read, None, dst, None, way.in_pipe, flags).map_err(io::Error::from)
            }) {
                Ok(n) => {
                    way.in_pipe -= n;
                    way.total += n as u64;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err),
            }
        }
        if way.total >= limit {
            return Ok(true);
        }
        let filled = loop {
            src.readable().await?;
            match src.try_io(Interest::READABLE, || {
                splice(src, None, &way.pipe_write, None, CHUNK, flags).map_err(io::Error::from)
            }) {
                Ok(n) => break n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err),
            }
        };
        if filled == 0 {
            // End of stream: pass the half-close on.
            let _ = rustix::net::shutdown(dst, rustix::net::Shutdown::Write);
            way.done = true;
            return Ok(false);
        }
        way.in_pipe = filled;
    }
}

/// A place among the [`MAX_THREADED`] tunnels on threads, given back on drop.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        THREADED
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_THREADED).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        THREADED.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a tunnel's thread gets: its source, its destination and its direction's state.
type Job = (Arc<std::net::TcpStream>, Arc<std::net::TcpStream>, Way);

/// A tunnel's two threads, started before the sockets leave the runtime (so that a failure
/// to start them leaves the tunnel where it was), each waiting for its direction.
struct Threads {
    forward: (
        std::sync::mpsc::SyncSender<Job>,
        oneshot::Receiver<io::Result<u64>>,
    ),
    backward: (
        std::sync::mpsc::SyncSender<Job>,
        oneshot::Receiver<io::Result<u64>>,
    ),
}

impl Threads {
    fn spawn() -> io::Result<Self> {
        Ok(Threads {
            forward: spawn_waiting()?,
            backward: spawn_waiting()?,
        })
    }

    /// Hands the tunnel over to the threads and waits for both directions to end.
    async fn run(
        self,
        a: TcpStream,
        b: TcpStream,
        ab: Way,
        ba: Way,
        slot: Slot,
    ) -> io::Result<(u64, u64)> {
        let _slot = slot;
        let (a, b) = (Arc::new(a.into_std()?), Arc::new(b.into_std()?));
        a.set_nonblocking(false)?;
        b.set_nonblocking(false)?;
        let mut closer = Closer {
            sockets: [Arc::clone(&a), Arc::clone(&b)],
            armed: true,
        };
        let (forward, forward_result) = self.forward;
        let (backward, backward_result) = self.backward;
        let handed = forward.send((Arc::clone(&a), Arc::clone(&b), ab)).is_ok()
            && backward.send((b, a, ba)).is_ok();
        if !handed {
            return Err(io::Error::other("tunnel thread ended"));
        }
        let ended = || io::Error::other("tunnel thread ended");
        let (forward, backward) = tokio::join!(forward_result, backward_result);
        let totals = (
            forward.map_err(|_| ended())??,
            backward.map_err(|_| ended())??,
        );
        closer.armed = false;
        Ok(totals)
    }
}

/// Starts a thread that waits for a [`Job`], moves its direction and sends the result.
fn spawn_waiting() -> io::Result<(
    std::sync::mpsc::SyncSender<Job>,
    oneshot::Receiver<io::Result<u64>>,
)> {
    let (job_sender, job) = std::sync::mpsc::sync_channel::<Job>(1);
    let (result, result_receiver) = oneshot::channel();
    std::thread::Builder::new()
        .name("tunnel".into())
        .stack_size(THREAD_STACK)
        .spawn(move || {
            if let Ok((src, dst, way)) = job.recv() {
                let _ = result.send(blocking_way(&src, &dst, way));
            }
        })?;
    Ok((job_sender, result_receiver))
}

/// Shuts both sockets down unless disarmed: ends the threads when the tunnel's future is
/// dropped before they are done.
struct Closer {
    sockets: [Arc<std::net::TcpStream>; 2],
    armed: bool,
}

impl Drop for Closer {
    fn drop(&mut self) {
        if self.armed {
            for socket in &self.sockets {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Moves `way` with blocking splices until its source ends; on an error, shuts both sockets
/// down, which ends the other direction too.
fn blocking_way(
    src: &std::net::TcpStream,
    dst: &std::net::TcpStream,
    mut way: Way,
) -> io::Result<u64> {
    let result = blocking_loop(src, dst, &mut way);
    if result.is_err() {
        let _ = src.shutdown(Shutdown::Both);
        let _ = dst.shutdown(Shutdown::Both);
    }
    result.map(|()| way.total)
}

fn blocking_loop(
    src: &std::net::TcpStream,
    dst: &std::net::TcpStream,
    way: &mut Way,
) -> io::Result<()> {
    if way.done {
        return Ok(());
    }
    let flags = SpliceFlags::MOVE;
    loop {
        while way.in_pipe > 0 {
            let n = retrying(|| splice(&way.pipe_read, None, dst, None, way.in_pipe, flags))?;
            way.in_pipe -= n;
            way.total += n as u64;
        }
        let filled = retrying(|| splice(src, None, &way.pipe_write, None, CHUNK, flags))?;
        if filled == 0 {
            let _ = dst.shutdown(Shutdown::Write);
            way.done = true;
            return Ok(());
        }
        way.in_pipe = filled;
    }
}

/// `call`, again while a signal interrupts it.
fn retrying(mut call: impl FnMut() -> rustix::io::Result<usize>) -> io::Result<usize> {
    loop {
        match call() {
            Err(rustix::io::Errno::INTR) => continue,
            result => return result.map_err(io::Error::from),
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

    /// `left` ⇄ relay ⇄ `right`, the relay promoting after `promote_after` bytes.
    async fn relayed(
        promote_after: u64,
    ) -> (
        TcpStream,
        TcpStream,
        tokio::task::JoinHandle<std::io::Result<(u64, u64)>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (left, proxy_left) = pair(&listener).await;
        let (proxy_right, right) = pair(&listener).await;
        let relay = tokio::spawn(super::bidirectional_promoting_after(
            proxy_left,
            proxy_right,
            promote_after,
        ));
        (left, right, relay)
    }

    async fn moves_both_ways_and_passes_half_closes_on(promote_after: u64) {
        let (mut left, mut right, relay) = relayed(promote_after).await;
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
        assert_eq!(relay.await.unwrap().unwrap(), (3_000_000, 4));
    }

    #[tokio::test]
    async fn on_the_runtime() {
        moves_both_ways_and_passes_half_closes_on(u64::MAX).await;
    }

    #[tokio::test]
    async fn on_threads_after_the_first_mebibyte() {
        moves_both_ways_and_passes_half_closes_on(super::PROMOTE_AFTER).await;
    }

    #[tokio::test]
    async fn on_threads_from_the_start() {
        moves_both_ways_and_passes_half_closes_on(0).await;
    }

    #[tokio::test]
    async fn an_error_ends_both_directions() {
        for promote_after in [u64::MAX, 0] {
            let (mut left, right, relay) = relayed(promote_after).await;
            left.write_all(b"hello").await.unwrap();
            // A reset from the right: the relay's write to it, or its read, fails.
            rustix::net::sockopt::set_socket_linger(&right, Some(std::time::Duration::ZERO))
                .unwrap();
            drop(right);
            let writer = tokio::spawn(async move {
                let chunk = vec![0u8; 64 * 1024];
                // Ends when the relay closes the left side.
                while left.write_all(&chunk).await.is_ok() {}
            });
            assert!(relay.await.unwrap().is_err());
            writer.await.unwrap();
        }
    }

    #[tokio::test]
    async fn dropping_the_tunnel_closes_both_sides() {
        let (mut left, mut right, relay) = relayed(0).await;
        left.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        right.read_exact(&mut buf).await.unwrap();
        // On threads now; dropping the task's future must end them and close both sides.
        relay.abort();
        let _ = relay.await;
        // Without the shutdown, the threads would hold both sides open: a bound turns that
        // hang into a failure.
        let bound = std::time::Duration::from_secs(30);
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(bound, right.read_to_end(&mut rest)).await;
        assert!(matches!(ended, Ok(Ok(0) | Err(_))));
        let ended = tokio::time::timeout(bound, left.read_to_end(&mut rest)).await;
        assert!(matches!(ended, Ok(Ok(0) | Err(_))));
    }
}
