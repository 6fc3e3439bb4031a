//! `hardbox run -t`: the command gets a terminal of the sandbox's own, sized as the CLI's,
//! following its window-size changes, fed by `-i`, and the CLI's terminal is restored after.
//! Driven from a real pseudo-terminal by `tty/drive.py` (hardbox runs as its controlling
//! terminal's session, as in a login). Needs root, as CI has.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::process::Command;

/// Runs one scenario of `tty/drive.py`; returns its report (the command's output, `EXIT n`,
/// `RESTORED b`).
fn drive(scenario: &str) -> String {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests run the sandbox as root (CI does): run them with sudo"
    );
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tty/drive.py");
    let output = Command::new("python3")
        .args([driver, env!("CARGO_BIN_EXE_hardbox"), scenario])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "driver failed: {report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    report
}

#[test]
fn the_command_gets_a_sandbox_terminal_sized_as_the_clis() {
    let report = drive("info");
    // isatty on 0, 1 and 2; a /dev/pts of the sandbox's own devpts instance (its first
    // terminal); the driver's 101x33 size; session leader and foreground on its terminal.
    assert!(
        report.contains("TTY True True True /dev/pts/0 /dev/pts/0 101 33 True True"),
        "{report}"
    );
    assert!(report.contains("EXIT 0"), "{report}");
}

#[test]
fn a_window_size_change_reaches_the_command_once_with_the_new_size() {
    let report = drive("winch");
    assert!(report.contains("WINCH 120 40"), "{report}");
    assert_eq!(
        report.matches("WINCH").count(),
        1,
        "one change, one signal: {report}"
    );
    assert!(report.contains("EXIT 0"), "{report}");
    assert!(report.contains("RESTORED True"), "{report}");
}

#[test]
fn typed_input_reaches_the_command_and_ctrl_c_interrupts_it() {
    let report = drive("input");
    assert!(report.contains("got:hello"), "{report}");
    // ^C went through the command's terminal as SIGINT: 128 + 2.
    assert!(report.contains("EXIT 130"), "{report}");
    // -i put the CLI's terminal in raw mode; it is back as it was.
    assert!(report.contains("RESTORED True"), "{report}");
}

#[test]
fn without_a_terminal_on_the_cli_side_the_command_still_gets_one() {
    assert!(
        rustix::process::geteuid().is_root(),
        "needs root, as CI has"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_hardbox"))
        .args(["run", "--host", "--workspace", "/tmp", "-t", "--"])
        .args([
            "/bin/sh",
            "-c",
            "test -t 0 && test -t 1 && stty size && echo done",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{out}");
    // No terminal to copy from: 24 rows, 80 columns; the terminal turns \n into \r\n.
    assert_eq!(out, "24 80\r\ndone\r\n");
}
