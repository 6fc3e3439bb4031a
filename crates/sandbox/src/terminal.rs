//! The command's terminal (`run -t`): a pseudo-terminal of the sandbox's own devpts instance.
//!
//! ```text
//! CLI stdin ──(-i)──► master ═══ pty ═══ slave ◄──► command (stdin, stdout, stderr, ctty)
//! CLI stdout ◄─────── master
//! CLI SIGWINCH ─────► window size copied to the master (the kernel signals the command)
//! ```
//!
//! Init opens the pair after the sandbox's filesystem is in place, so the slave is a
//! `/dev/pts/N` of the sandbox (`ttyname` works inside, and the host's devpts stays invisible),
//! and hands the master to the parent over the launch socket. The command makes the slave its
//! controlling terminal in a new session before its own steps, so job control, `^C` and
//! window-size changes reach it through the terminal, as in a login.
//!
//! The parent relays without ever blocking on the master: it is non-blocking, and stdin is read
//! only when what was read before has been written, so a command that writes without reading
//! cannot stall the relay.
//!
//! [`Relay`] is public for the CLI side of `exec -t`, which receives the master of an exec'd
//! command's terminal ([`crate::SessionEvent::Started`]) and relays it the same way: poll the
//! descriptors [`Relay::poll_fds`] adds (next to its own), hand the results to [`Relay::pump`],
//! call [`Relay::resize`] on SIGWINCH (the caller owns its signal handling), and once the
//! command ended, [`Relay::finish`]. Dropping the relay restores the CLI's terminal settings.

use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::event::{PollFd, PollFlags};
use rustix::pty::OpenptFlags;
use rustix::termios::{self, OptionalActions, Termios, Winsize};
use sys::Errno;

/// Opens a terminal pair inside the sandbox: (master, slave), both close-on-exec.
pub(crate) fn open_pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags)?;
    rustix::pty::unlockpt(&master)?;
    // The peer is opened through the master, not by a path another process could swap.
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags)?;
    Ok((master, slave))
}

/// In the command's process: a new session with `slave` as its controlling terminal and as
/// stdin, stdout and stderr.
pub(crate) fn attach(slave: &OwnedFd) -> Result<(), Errno> {
    rustix::process::setsid()?;
    rustix::process::ioctl_tiocsctty(slave)?;
    rustix::stdio::dup2_stdin(slave)?;
    rustix::stdio::dup2_stdout(slave)?;
    rustix::stdio::dup2_stderr(slave)
}

/// The size a terminal gets when the CLI has none to copy.
const DEFAULT_SIZE: Winsize = Winsize {
    ws_row: 24,
    ws_col: 80,
    ws_xpixel: 0,
    ws_ypixel: 0,
};

/// End-of-file character sent when the CLI's stdin ends (the terminal's default VEOF, `^D`).
const END_OF_FILE: u8 = 0x04;

/// The parent's side: the master, relayed to the CLI's stdin and stdout.
#[derive(Debug)]
pub struct Relay {
    master: OwnedFd,
    /// Whether the command's side is still open (reads return `EIO` once every slave closed).
    open: bool,
    /// The CLI's stdin while it is forwarded and has not ended.
    stdin: Option<BorrowedFd<'static>>,
    /// Bytes read from stdin that the master has not taken yet.
    pending: Vec<u8>,
    /// Stdin ended: send the end-of-file character once `pending` is written.
    end_pending: bool,
    /// The CLI's terminal settings, restored when the relay ends.
    restore: Option<(BorrowedFd<'static>, Termios)>,
}

/// What [`Relay::poll_fds`] asked about, in order after the caller's own descriptors.
#[derive(Clone, Copy, Debug, Default)]
pub struct Interest {
    master: Option<usize>,
    stdin: Option<usize>,
}

impl Relay {
    /// Takes over the master: copies the CLI's window size to it, and with `interactive`
    /// forwards stdin, putting the CLI's terminal (if stdin is one) in raw mode so keys such
    /// as `^C` reach the command's terminal instead of signalling the CLI.
    pub fn new(master: OwnedFd, interactive: bool) -> Result<Relay, Errno> {
        rustix::io::ioctl_fionbio(&master, true)?;
        let mut relay = Relay {
            master,
            open: true,
            stdin: interactive.then(rustix::stdio::stdin),
            pending: Vec::new(),
            end_pending: false,
            restore: None,
        };
        relay.resize();
        let stdin = rustix::stdio::stdin();
        if interactive && termios::isatty(stdin) {
            let saved = termios::tcgetattr(stdin)?;
            let mut raw = saved.clone();
            raw.make_raw();
            termios::tcsetattr(stdin, OptionalActions::Now, &raw)?;
            relay.restore = Some((stdin, saved));
        }
        Ok(relay)
    }

    /// Copies the CLI's window size (of stdin, else stdout) to the command's terminal; the
    /// kernel sends the command SIGWINCH when it changes.
    pub fn resize(&self) {
        let size = [rustix::stdio::stdin(), rustix::stdio::stdout()]
            .into_iter()
            .find_map(|fd| termios::tcgetwinsize(fd).ok())
            .filter(|size| size.ws_row != 0 && size.ws_col != 0)
            .unwrap_or(DEFAULT_SIZE);
        // A command that closed its terminal has no size to change.
        let _ = termios::tcsetwinsize(&self.master, size);
    }

    /// Appends the relay's descriptors to `fds` and says where they are.
    pub fn poll_fds<'a>(&'a self, fds: &mut Vec<PollFd<'a>>) -> Interest {
        let mut interest = Interest::default();
        if self.open {
            let mut events = PollFlags::IN;
            if !self.pending.is_empty() || self.end_pending {
                events |= PollFlags::OUT;
            }
            interest.master = Some(fds.len());
            fds.push(PollFd::new(&self.master, events));
        }
        if let (Some(stdin), true) = (self.stdin, self.pending.is_empty() && self.open) {
            interest.stdin = Some(fds.len());
            fds.push(PollFd::from_borrowed_fd(stdin, PollFlags::IN));
        }
        interest
    }

    /// Whether the command's side of the terminal is still open (every copy of its slave
    /// closed: the command and whatever it started are gone).
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Moves what is ready, given the events `poll` returned for the relay's descriptors
    /// (the whole list `poll` filled, indexed as [`Relay::poll_fds`] said).
    pub fn pump(&mut self, interest: Interest, events: &[PollFlags]) {
        let ready = |index: Option<usize>| {
            index
                .and_then(|index| events.get(index))
                .is_some_and(|flags| !flags.is_empty())
        };
        if ready(interest.master) {
            self.drain_output();
            self.write_input();
        }
        if ready(interest.stdin) {
            self.read_input();
            self.write_input();
        }
    }

    /// Copies the command's output to stdout until none is buffered. After the command ended,
    /// [`Relay::finish`] waits for the last of it.
    fn drain_output(&mut self) -> bool {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match rustix::io::read(&self.master, &mut buffer) {
                Ok(0) | Err(Errno::IO) => {
                    // Every slave is closed: the command's side is gone.
                    self.open = false;
                    return true;
                }
                Ok(count) => {
                    // A CLI whose stdout is gone has no one to show output to.
                    let _ = sys::process::write_all(rustix::stdio::stdout(), &buffer[..count]);
                }
                Err(Errno::INTR) => {}
                Err(_) => return false,
            }
        }
    }

    fn read_input(&mut self) {
        let Some(stdin) = self.stdin else { return };
        let mut buffer = [0u8; 16 * 1024];
        match rustix::io::read(stdin, &mut buffer) {
            Ok(0) => {
                self.stdin = None;
                self.end_pending = true;
            }
            Ok(count) => self.pending.extend_from_slice(&buffer[..count]),
            Err(Errno::INTR | Errno::AGAIN) => {}
            Err(_) => {
                self.stdin = None;
                self.end_pending = true;
            }
        }
    }

    fn write_input(&mut self) {
        while self.open && !self.pending.is_empty() {
            match rustix::io::write(&self.master, &self.pending) {
                Ok(count) => {
                    self.pending.drain(..count);
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return,
                Err(_) => {
                    self.pending.clear();
                    self.open = false;
                }
            }
        }
        if self.open && self.end_pending {
            match rustix::io::write(&self.master, &[END_OF_FILE]) {
                Ok(1) => self.end_pending = false,
                Err(Errno::INTR | Errno::AGAIN) | Ok(_) => {}
                Err(_) => self.end_pending = false,
            }
        }
    }

    /// After the command ended: copies what it wrote last, waiting until its side of the
    /// terminal is closed (init's exit closes every copy) or `limit` passes.
    pub fn finish(&mut self, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.open && !self.drain_output() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            let timeout = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: i64::try_from(left.as_nanos().min(100_000_000)).unwrap_or(100_000_000),
            };
            let mut fds = [PollFd::new(&self.master, PollFlags::IN)];
            let _ = rustix::event::poll(&mut fds, Some(&timeout));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some((stdin, saved)) = self.restore.take() {
            let _ = termios::tcsetattr(stdin, OptionalActions::Now, &saved);
        }
    }
}
