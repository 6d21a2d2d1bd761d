//! `qm schema` and `qm replay` (`--features cli`), driven through pipes: feature queries and
//! command descriptions on a real QEMU (launched by qm, or started by hand and attached to),
//! their exit codes and `--json`; a transcript recorded on a real QEMU replayed on the fake
//! QEMU, typed into qm's shell or driven by another program.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cli::{json_lines, run_piped};
use support::vm::{qemu, scratch, T};

const IO_URING: &str = "blockdev-add/arg-type/+file/aio/^io_uring";

#[test]
fn supports_answers_with_its_exit_code() {
    // Present: exit 0, said in words.
    let (code, out, err) = run_piped(&["schema", "--supports", IO_URING], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{IO_URING}: supported\n"));

    // One absent path among present ones: exit 1, each path answered.
    let absent = "blockdev-add/arg-type/+file/aio/^no-such-aio";
    let (code, out, err) = run_piped(
        &[
            "--json",
            "schema",
            "--supports",
            IO_URING,
            "--supports",
            absent,
            "--supports",
            "query-status",
        ],
        "",
    );
    assert_eq!(code, 1, "{err}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0]["path"], IO_URING);
    assert_eq!(lines[0]["supported"], true);
    assert_eq!(lines[1]["path"], absent);
    assert_eq!(lines[1]["supported"], false);
    assert_eq!(lines[2]["supported"], true);

    // A malformed path is a usage error naming the component; nothing on stdout.
    let (code, out, err) = run_piped(&["schema", "--supports", "blockdev-add/argtype/driver"], "");
    assert_eq!(code, 2);
    assert_eq!(out, "");
    assert!(err.contains("component 2 (\"argtype\")"), "{err}");
}

#[test]
fn command_describes_arguments() {
    let (code, out, err) = run_piped(&["--json", "schema", "--command", "blockdev-add"], "");
    assert_eq!(code, 0, "{err}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{out}");
    let cmd = &lines[0];
    assert_eq!(cmd["name"], "blockdev-add");
    let args = cmd["arguments"].as_array().unwrap();
    let driver = args.iter().find(|a| a["name"] == "driver").unwrap();
    assert_eq!(driver["optional"], false);
    assert!(driver["variants"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == "file"));
    let node = args.iter().find(|a| a["name"] == "node-name").unwrap();
    assert_eq!(node["optional"], true);
    assert_eq!(node["type"], "str");

    let (code, out, err) = run_piped(&["schema", "--command", "device_del"], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "device_del\n  id: str\n");

    let (code, out, err) = run_piped(&["schema", "--command", "no-such-command"], "");
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert!(err.contains("no command \"no-such-command\""), "{err}");
}

#[test]
fn names_of_commands_and_events() {
    let (code, out, err) = run_piped(&["--json", "schema"], "");
    assert_eq!(code, 0, "{err}");
    let all = &json_lines(&out)[0];
    let has = |list: &str, name: &str| all[list].as_array().unwrap().iter().any(|n| n == name);
    assert!(has("commands", "query-status") && has("commands", "blockdev-add"));
    assert!(has("events", "STOP") && !has("events", "query-status"));
}

#[test]
fn schema_of_an_attached_qemu_leaves_it_running() {
    let dir = scratch();
    let sock = dir.path().join("qmp.sock");
    let mut qemu_child = KillOnDrop(
        Command::new(qemu())
            .args([
                "-machine",
                "none",
                "-display",
                "none",
                "-nodefaults",
                "-qmp",
            ])
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(start.elapsed() < T);
        std::thread::sleep(Duration::from_millis(20));
    }
    let addr = format!("unix:{}", sock.display());
    let (code, out, err) = run_piped(
        &[
            "--json",
            "schema",
            "--attach",
            &addr,
            "--supports",
            IO_URING,
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_lines(&out)[0]["supported"], true);
    assert!(qemu_child.0.try_wait().unwrap().is_none(), "qm must detach");
}

/// The QEMU a test started by hand, killed however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn usage_errors() {
    for bad in [
        &["schema", "--supports"][..],
        &["schema", "--linux-guest"],
        &["run", "--supports", "query-status"],
        &["replay"],
        &["replay", "t.jsonl", "--binary", "qemu"],
        &["replay", "t.jsonl", "--attach", "unix:/x"],
    ] {
        let (code, _, err) = run_piped(bad, "");
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert!(err.contains("usage: qm"), "{bad:?}: {err}");
    }
}

/// Records a transcript on a real QEMU with `qm shell --transcript`: [`COMMANDS`] (`stop` and
/// its `STOP` event among them), then the shutdown; returns what the commands returned.
fn record(path: &std::path::Path) -> Vec<Value> {
    let (code, out, err) = run_piped(
        &[
            "--json",
            "shell",
            "--transcript",
            path.to_str().unwrap(),
            "--",
            "-machine",
            "none",
        ],
        COMMANDS,
    );
    assert_eq!(code, 0, "{err}");
    let returns: Vec<Value> = json_lines(&out)
        .into_iter()
        .filter_map(|l| l.get("return").cloned())
        .collect();
    assert_eq!(returns.len(), 3, "{out}");
    let recorded = std::fs::read_to_string(path).unwrap();
    assert!(recorded.contains("\"execute\":\"quit\""), "{recorded}");
    returns
}

const COMMANDS: &str = "query-status\nstop\nquery-status\n";

#[test]
fn replay_a_recorded_transcript_in_the_shell() {
    let dir = scratch();
    let transcript = dir.path().join("status.jsonl");
    let recorded = record(&transcript);
    let t = transcript.to_str().unwrap();

    // The same commands: the recorded replies and event, and the fake's verdict is 0.
    let (code, out, err) = run_piped(&["--json", "replay", t], COMMANDS);
    assert_eq!(code, 0, "{err}");
    let lines = json_lines(&out);
    let returns: Vec<&Value> = lines.iter().filter_map(|l| l.get("return")).collect();
    assert_eq!(returns, recorded.iter().collect::<Vec<_>>(), "{out}");
    assert_eq!(returns[2]["status"], "paused");
    assert!(lines.iter().any(|l| l["event"] == "STOP"), "{out}");

    // Departing from the transcript: QEMU's error for the command, exit 1, and the fake's log
    // naming the recorded line.
    let (code, out, err) = run_piped(&["--json", "replay", t], "query-status\nquery-name\n");
    assert_eq!(code, 1);
    let lines = json_lines(&out);
    assert!(lines[1]["error"]["desc"]
        .as_str()
        .unwrap()
        .contains("unexpected qmp message"));
    assert!(err.contains("verdict"), "{err}");
    assert!(err.contains("expected qmp command"), "{err}");
}

#[test]
fn replay_runs_a_program_against_the_fake() {
    let dir = scratch();
    let transcript = dir.path().join("status.jsonl");
    let recorded = record(&transcript);
    let t = transcript.to_str().unwrap();

    // The program is qm's own shell: it launches $QM_QEMU, which replay made the fake.
    let qm = env!("CARGO_BIN_EXE_qm");
    let (code, out, err) = run_piped(&["replay", t, "--", qm, "--json", "shell"], COMMANDS);
    assert_eq!(code, 0, "{err}");
    let returns: Vec<Value> = json_lines(&out)
        .into_iter()
        .filter_map(|l| l.get("return").cloned())
        .collect();
    assert_eq!(returns, recorded, "{out}");

    // The program's exit status is replay's.
    let (code, _, _) = run_piped(&["replay", t, "--", "sh", "-c", "exit 7"], "");
    assert_eq!(code, 7);

    // The program sees QM_QEMU and QM_FAKE_SCRIPT.
    let (code, out, _) = run_piped(
        &[
            "replay",
            t,
            "--",
            "sh",
            "-c",
            "echo \"$QM_QEMU\"; echo \"$QM_FAKE_SCRIPT\"",
        ],
        "",
    );
    assert_eq!(code, 0);
    let mut lines = out.lines();
    assert!(lines.next().unwrap().ends_with("qm-fake-qemu"), "{out}");
    assert_eq!(lines.next().unwrap(), t);
}

#[test]
fn replay_refuses_a_bad_transcript() {
    let dir = scratch();
    let missing = dir.path().join("missing.jsonl");
    let (code, _, err) = run_piped(&["replay", missing.to_str().unwrap()], "");
    assert_eq!(code, 2);
    assert!(err.contains("missing.jsonl"), "{err}");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"dir\": \"sideways\"}\n").unwrap();
    let (code, _, err) = run_piped(&["replay", bad.to_str().unwrap(), "--", "true"], "");
    assert_eq!(code, 2);
    assert!(err.contains("line 1"), "{err}");
}
