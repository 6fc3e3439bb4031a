"""Drives `hardbox run -t` from a real terminal: runs hardbox on the slave side of a fresh pty
(as its controlling terminal, as in a login) and plays one scenario on the master side.

Usage: drive.py HARDBOX SCENARIO. Prints what the sandboxed command wrote, then a line
`EXIT <code>` and, for scenarios that check it, `RESTORED <bool>` (the terminal's modes after
hardbox exited equal those before it started). A scenario that gets stuck fails after 30 s.
"""
import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time

HARDBOX, SCENARIO = sys.argv[1], sys.argv[2]
BASE = [HARDBOX, "run", "--host", "--workspace", "/tmp"]

SCENARIOS = {
    # The command's stdin, stdout and stderr are a terminal of the sandbox, sized as ours.
    "info": BASE + ["-t", "--", "/usr/bin/python3", "-c",
                    "import os; print('TTY', os.isatty(0), os.isatty(1), os.isatty(2), "
                    "os.ttyname(0), os.ttyname(1), os.get_terminal_size(0).columns, "
                    "os.get_terminal_size(0).lines, os.getsid(0) == os.getpid(), "
                    "os.tcgetpgrp(0) == os.getpgrp())"],
    # A window size change reaches the command as SIGWINCH with the new size. Python runs a
    # handler only between bytecodes: a signal caught just before a blocking read would wait
    # for the read to end, so the command waits in select on stdin and a wakeup pipe instead.
    "winch": BASE + ["-it", "--", "/usr/bin/python3", "-c",
                     "import os, select, signal, sys\n"
                     "r, w = os.pipe(); os.set_blocking(w, False); signal.set_wakeup_fd(w)\n"
                     "def on(*_):\n"
                     "    s = os.get_terminal_size(0); os.write(1, f'WINCH {s.columns} {s.lines}\\n'.encode())\n"
                     "signal.signal(signal.SIGWINCH, on)\n"
                     "print('READY', flush=True)\n"
                     "while 0 not in select.select([0, r], [], [])[0]:\n"
                     "    os.read(r, 64)\n"
                     "sys.stdin.readline()\n"],
    # Typed input reaches the command; ^C interrupts it through its terminal. The shell
    # waits for sleep rather than exec'ing it: dash defers a SIGINT that arrives while it
    # prepares an exec and loses it across the exec, so ^C typed in that window would not
    # interrupt anything.
    "input": BASE + ["-it", "--", "/bin/sh", "-c",
                     "read line; echo \"got:$line\"; sleep 30"],
}


def size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def main():
    pid, master = pty.fork()
    if pid == 0:
        # Sized before hardbox starts, so no size change races its start.
        size(0, 33, 101)
        os.execv(HARDBOX, SCENARIOS[SCENARIO])
    before = termios.tcgetattr(master)
    output = b""
    deadline = time.monotonic() + 30

    def read_until(marker):
        nonlocal output
        while marker not in output:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"stuck waiting for {marker!r}; got {output!r}")
            ready, _, _ = select.select([master], [], [], left)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise SystemExit(f"ended waiting for {marker!r}; got {output!r}")
                output += chunk

    if SCENARIO == "winch":
        read_until(b"READY")
        size(master, 40, 120)
        read_until(b"WINCH 120 40")
        os.write(master, b"\r")
    elif SCENARIO == "input":
        os.write(master, b"hello\r")
        read_until(b"got:hello")
        os.write(master, b"\x03")

    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(output.decode(errors="replace"))
    print(f"\nEXIT {os.waitstatus_to_exitcode(status)}")
    # hardbox put our terminal in raw mode for -i; it must have put it back.
    print(f"RESTORED {termios.tcgetattr(master) == before}")


main()
