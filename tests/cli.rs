//! The `qm` command line (`--features cli`): `--json` through pipes, the interactive shell's
//! completion and history through a pseudo-terminal, `run` until the guest powers off or
//! SIGINT, attach, exit codes and `--help`.

mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qm::guest::{qemu_args, write_image, GuestAction};
use serde_json::Value;
use support::cli::{json_lines, qm_bin, run_piped};
use support::vm::{qemu, scratch, T};

#[test]
fn help_and_usage_errors() {
    let out = qm_bin().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("usage: qm [--json] run"));
    let out = qm_bin().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument"));
    let out = qm_bin().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn json_shell_through_pipes() {
    let (code, out, err) = run_piped(
        &["--json", "shell", "--", "-machine", "none"],
        "query-status\nstop\nquery-status\nqom-list path=/machine\n",
    );
    assert_eq!(code, 0, "stderr: {err}");
    let lines = json_lines(&out);
    let returns: Vec<&Value> = lines.iter().filter_map(|l| l.get("return")).collect();
    assert_eq!(returns.len(), 4, "{out}");
    assert_eq!(returns[0]["status"], "running");
    assert_eq!(returns[2]["status"], "paused");
    assert!(returns[3].is_array());
    assert!(
        lines.iter().any(|l| l["event"] == "STOP"),
        "the STOP event is printed: {out}"
    );

    // A failing command: its error on stdout, exit status 1, and the next lines still run.
    let (code, out, _) = run_piped(
        &["--json", "shell", "--", "-machine", "none"],
        "no-such-command\nquery-name\nstop bad-word\n",
    );
    assert_eq!(code, 1);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0]["error"]["class"], "CommandNotFound");
    assert!(lines[1].get("return").is_some());
    assert!(lines[2]["error"]["desc"]
        .as_str()
        .unwrap()
        .contains("not key=value"));
}

#[test]
fn run_prints_events_until_the_guest_powers_off() {
    let dir = scratch();
    let image = dir.path().join("guest.img");
    write_image(&image, "bye", GuestAction::Poweroff).unwrap();
    let mut args = vec!["--json".to_string(), "run".into(), "--".into()];
    args.extend(qemu_args(&image));
    let out = qm_bin().args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines = json_lines(&String::from_utf8_lossy(&out.stdout));
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "SHUTDOWN" && l["data"]["guest"] == true),
        "{lines:?}"
    );
}

#[test]
fn run_ends_cleanly_on_sigint() {
    let mut child = qm_bin()
        .args(["--json", "run", "--", "-machine", "none"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for QEMU (a child of qm) to be up, then interrupt qm.
    let start = Instant::now();
    let qemu_pid = loop {
        if let Some(pid) = support::vm::processes_with("-machine")
            .into_iter()
            .find(|&p| parent_of(p) == Some(child.id()))
        {
            break pid;
        }
        assert!(start.elapsed() < T, "qm never started QEMU");
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: signalling our own child, which has not been reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!support::vm::pid_exists(qemu_pid), "QEMU outlived qm run");
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn shell_attaches_and_leaves_qemu_running() {
    let dir = scratch();
    let sock = dir.path().join("qmp.sock");
    let mut qemu_child = Command::new(qemu())
        .args([
            "-machine",
            "none",
            "-display",
            "none",
            "-nodefaults",
            "-qmp",
        ])
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(start.elapsed() < T);
        std::thread::sleep(Duration::from_millis(20));
    }
    let addr = format!("unix:{}", sock.display());
    let (code, out, err) = run_piped(&["--json", "shell", "--attach", &addr], "query-status\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_lines(&out)[0]["return"]["status"], "running");
    assert!(qemu_child.try_wait().unwrap().is_none(), "qm must detach");
    qemu_child.kill().unwrap();
    qemu_child.wait().unwrap();
}

/// A pseudo-terminal: the controller end, and the terminal end for the child's stdio.
fn openpty() -> (File, OwnedFd) {
    let (mut controller, mut terminal) = (0, 0);
    // SAFETY: openpty writes two descriptors into the locals; the other arguments may be NULL.
    let rc = unsafe {
        libc::openpty(
            &mut controller,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are new and owned here.
    unsafe {
        (
            File::from_raw_fd(controller),
            OwnedFd::from_raw_fd(terminal),
        )
    }
}

/// Reads the terminal into `seen` until `want` shows up in it.
fn read_until(pty: &mut File, seen: &mut String, want: &str) {
    read_until_after(pty, seen, "", want)
}

/// Reads the terminal into `seen` until `want` shows up after the first `marker`.
fn read_until_after(pty: &mut File, seen: &mut String, marker: &str, want: &str) {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    let found = |seen: &String| {
        seen.find(marker)
            .is_some_and(|at| seen[at + marker.len()..].contains(want))
    };
    while !found(seen) {
        assert!(
            start.elapsed() < T,
            "{want:?} never showed on the terminal; got {seen:?}"
        );
        let mut fds = [libc::pollfd {
            fd: pty.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(fds.as_mut_ptr(), 1, 200) } <= 0 {
            continue;
        }
        match pty.read(&mut buf) {
            Ok(0) | Err(_) => panic!("the terminal closed before {want:?}; got {seen:?}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
}

#[test]
fn interactive_shell_completes_and_remembers() {
    let (mut pty, terminal) = openpty();
    // A history of its own: the user's would change what the up arrow brings.
    let state = scratch();
    let child = qm_bin()
        .args(["shell", "--", "-machine", "none"])
        .env("TERM", "xterm")
        .env("XDG_STATE_HOME", state.path())
        .stdin(Stdio::from(terminal.try_clone().unwrap()))
        .stdout(Stdio::from(terminal.try_clone().unwrap()))
        .stderr(Stdio::from(terminal))
        .spawn()
        .unwrap();
    // Type only at a prompt: the line editor is then in raw mode (input typed while it
    // switches modes may be discarded).
    let prompt = "(QEMU) ";
    let mut seen = String::new();
    read_until(&mut pty, &mut seen, prompt);
    // Tab completes the only command starting so.
    pty.write_all(b"query-statu\t").unwrap();
    let mut seen = String::new();
    read_until(&mut pty, &mut seen, "query-status");
    pty.write_all(b"\r").unwrap();
    let mut seen = String::new();
    read_until_after(&mut pty, &mut seen, "\"running\"", prompt);
    pty.write_all(b"stop\r").unwrap();
    // The STOP event shows between commands, then the next prompt.
    let mut seen = String::new();
    read_until_after(&mut pty, &mut seen, "STOP", prompt);
    // Up arrow twice brings query-status back from the history.
    pty.write_all(b"\x1b[A\x1b[A\r").unwrap();
    let mut seen = String::new();
    read_until_after(&mut pty, &mut seen, "\"paused\"", prompt);
    // Ctrl-D ends the shell; QEMU is shut down.
    pty.write_all(b"\x04").unwrap();
    end_on_ctrl_d(child);
}

/// Waits for a shell sent Ctrl-D to end with status 0.
fn end_on_ctrl_d(mut child: std::process::Child) {
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > T {
            child.kill().unwrap();
            panic!("the shell did not end on Ctrl-D");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

/// A shell on a pseudo-terminal with its history under `state`; returns once it prompts.
fn shell_on_pty(state: &std::path::Path) -> (File, std::process::Child) {
    qm_on_pty(state, &["shell", "--", "-machine", "none"])
}

/// `qm ARGS` on a pseudo-terminal with its history under `state`; returns once it prompts.
fn qm_on_pty(state: &std::path::Path, args: &[&str]) -> (File, std::process::Child) {
    let (mut pty, terminal) = openpty();
    let child = qm_bin()
        .args(args)
        .env("TERM", "xterm")
        .env("XDG_STATE_HOME", state)
        .stdin(Stdio::from(terminal.try_clone().unwrap()))
        .stdout(Stdio::from(terminal.try_clone().unwrap()))
        .stderr(Stdio::from(terminal))
        .spawn()
        .unwrap();
    read_until(&mut pty, &mut String::new(), "(QEMU) ");
    (pty, child)
}

#[test]
fn interactive_shell_completes_arguments_and_keeps_its_history() {
    let state = scratch();
    let (mut pty, child) = shell_on_pty(state.path());
    // Argument names come from the schema: `device_del` has one, `id`.
    pty.write_all(b"device_del i\t").unwrap();
    read_until(&mut pty, &mut String::new(), "id=");
    pty.write_all(b"no-such-device\r").unwrap();
    read_until_after(&mut pty, &mut String::new(), "no-such-device", "(QEMU) ");
    pty.write_all(b"\x04").unwrap();
    end_on_ctrl_d(child);
    let file = state.path().join("qm/history");
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(saved.contains("device_del id=no-such-device"), "{saved:?}");

    // The next shell starts with that history: the up arrow brings the line back.
    let (mut pty, child) = shell_on_pty(state.path());
    pty.write_all(b"\x1b[A").unwrap();
    read_until(&mut pty, &mut String::new(), "device_del id=no-such-device");
    pty.write_all(b"\x15\x04").unwrap(); // Ctrl-U empties the line, Ctrl-D ends
    end_on_ctrl_d(child);
}

#[test]
fn an_interactive_recording_replays_interactively() {
    let state = scratch();
    let transcript = state.path().join("typed.jsonl");
    let t = transcript.to_str().unwrap();
    let (mut pty, child) = qm_on_pty(
        state.path(),
        &["shell", "--transcript", t, "--", "-machine", "none"],
    );
    pty.write_all(b"query-status\r").unwrap();
    read_until_after(&mut pty, &mut String::new(), "\"running\"", "(QEMU) ");
    pty.write_all(b"\x04").unwrap();
    end_on_ctrl_d(child);
    // The shell's completion asked QEMU first: that is in the transcript too.
    let recorded = std::fs::read_to_string(&transcript).unwrap();
    assert!(recorded.contains("query-qmp-schema"), "{recorded}");

    // Replayed on a terminal, the shell asks the fake the same, so the transcript is followed.
    let (mut pty, child) = qm_on_pty(state.path(), &["replay", t]);
    pty.write_all(b"query-status\r").unwrap();
    read_until_after(&mut pty, &mut String::new(), "\"running\"", "(QEMU) ");
    pty.write_all(b"\x04").unwrap();
    end_on_ctrl_d(child);
}
