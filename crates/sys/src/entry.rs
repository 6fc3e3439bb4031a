//! A process entry point without the standard library's start-up work.
//!
//! Why it exists: a short-lived `hardbox exec` or `hardbox run` spends a good part of its life
//! starting. Before `main`, Rust's runtime asks glibc for the main thread's stack bounds (which
//! reads and parses `/proc/self/maps`), maps an alternate signal stack and installs stack-overflow
//! handlers, and at exit tears them down again. Together that is about a third of a small
//! program's start-up. [`entry!`](crate::entry) defines the C `main` symbol itself (the binary
//! says `#![no_main]`), does the two things of that start-up that matter for correctness, calls
//! the program's function and flushes stdout on the way out:
//!
//! - descriptors 0, 1 and 2 are opened on `/dev/null` when closed, so a file the program opens
//!   can never become its stdout by accident;
//! - `SIGPIPE` is ignored, so a write to a closed pipe or socket is an `EPIPE` error, as in every
//!   Rust program (and [`crate::process::reset_sigpipe`] still restores it before an exec).
//!
//! What is lost: a stack overflow of the main thread ends the process with `SIGSEGV` rather than
//! the runtime's message, and the main thread has no name in panic messages.

use std::io::Write;

/// Defines the process's C `main`, running `$run` (a `fn() -> u8`) and exiting with its value.
/// The binary crate must say `#![no_main]`.
#[macro_export]
macro_rules! entry {
    ($run:path) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn main(
            _argc: ::std::ffi::c_int,
            _argv: *const *const u8,
        ) -> ::std::ffi::c_int {
            $crate::entry::run($run)
        }
    };
}

/// What the defined `main` does: the start-up above, `run`, and a flush of stdout.
pub fn run(run: fn() -> u8) -> std::ffi::c_int {
    open_standard_descriptors();
    // SAFETY: SIG_IGN is a valid disposition for SIGPIPE; no handler pointer is involved.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let code = run();
    // `std::process::exit` and returning from C `main` do not flush Rust's stdout buffer.
    let _ = std::io::stdout().flush();
    std::ffi::c_int::from(code)
}

/// Opens `/dev/null` on each of descriptors 0, 1 and 2 that is closed.
fn open_standard_descriptors() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: `fds` is a valid array of three pollfd structures for the call's duration.
    let polled = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) };
    if polled < 0 {
        return;
    }
    for pollfd in fds {
        if pollfd.revents & libc::POLLNVAL != 0 {
            // The lowest free descriptor is the closed one: descriptors below it are open.
            // SAFETY: the path is a NUL-terminated string; the returned descriptor is kept open
            // for the life of the process on purpose.
            let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
            if fd < 0 {
                // Nothing can be printed without a stdout; end as the runtime would.
                // SAFETY: abort has no preconditions.
                unsafe { libc::abort() };
            }
        }
    }
}
