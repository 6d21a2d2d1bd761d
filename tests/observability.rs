//! What a harness sees when something goes wrong: QMP transcripts, QEMU's output while it
//! runs, and errors that lead with what happened. All against a real QEMU. (The log callback
//! and `QM_LOG` change process-wide state: they are tested in child processes, in
//! tests/logging.rs.)

mod support;
use support::vm::{self, scratch, vm_guest, vm_none, T};

use std::error::Error as _;
use std::time::{Duration, Instant, SystemTime};

use qm::guest::GuestAction;
use qm::{Error, Value};

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn read_transcript(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn serde_json_comes_with_qm() {
    // Users build arguments without a serde_json dependency of their own.
    let args: Value = qm::serde_json::json!({"node_name": "disk0"});
    assert_eq!(
        qm::conv_keys(&args),
        qm::serde_json::json!({"node-name": "disk0"})
    );
}

#[test]
fn the_qmp_transcript_has_every_message_in_order() {
    let dir = scratch();
    let path = dir.path().join("qmp.jsonl");
    let machine = vm_none(dir.path());
    machine.set_qmp_transcript(Some(path.clone()));
    let before = now();
    machine.launch().unwrap();
    machine.cmd("stop", None).unwrap();
    machine.event_wait("STOP", None, T).unwrap().unwrap();
    machine.shutdown(T).unwrap();
    let after = now();

    let lines = read_transcript(&path);
    let mut last = before;
    for line in &lines {
        let t = line["t"].as_f64().unwrap();
        assert!(t >= last && t <= after, "time out of order: {line}");
        last = t;
        assert!(line["msg"].is_object(), "{line}");
    }
    let summary: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            let msg = &l["msg"];
            let what = ["QMP", "execute", "event", "return", "error"]
                .into_iter()
                .find(|k| msg.get(k).is_some())
                .unwrap();
            let name = match what {
                "execute" | "event" => msg[what].as_str().unwrap().to_owned(),
                _ => what.to_owned(),
            };
            (l["dir"].as_str().unwrap().to_owned(), name)
        })
        .collect();
    let s = |d: &str, n: &str| (d.to_owned(), n.to_owned());
    // The greeting comes first, and nothing is sent before it.
    assert_eq!(summary[0], s("in", "QMP"), "{summary:?}");
    assert_eq!(summary[1], s("out", "qmp_capabilities"), "{summary:?}");
    assert_eq!(summary[2], s("in", "return"), "{summary:?}");
    for expected in [
        s("out", "stop"),
        s("event", "STOP"),
        s("out", "quit"),
        s("event", "SHUTDOWN"),
    ] {
        assert!(summary.contains(&expected), "{expected:?} in {summary:?}");
    }
    // Each command went out before its reply came in (they carry qm's ids).
    let stop = lines
        .iter()
        .position(|l| l["msg"]["execute"] == "stop")
        .unwrap();
    let id = &lines[stop]["msg"]["id"];
    let reply = lines
        .iter()
        .position(|l| l["dir"] == "in" && &l["msg"]["id"] == id)
        .unwrap();
    assert!(reply > stop, "{summary:?}");

    // A second launch appends: the file is a history of the machine's runs.
    machine.launch().unwrap();
    machine.shutdown(T).unwrap();
    let greetings = read_transcript(&path)
        .iter()
        .filter(|l| l["msg"].get("QMP").is_some())
        .count();
    assert_eq!(greetings, 2);
    assert_eq!(vm::mode(&path) & 0o777, 0o600);
}

#[test]
fn a_transcript_that_cannot_be_opened_fails_the_launch_before_qemu_starts() {
    let dir = scratch();
    let machine = vm_none(dir.path());
    machine.set_qmp_transcript(Some(dir.path().join("no-such-dir/qmp.jsonl")));
    let err = machine.launch().unwrap_err();
    let Error::Launch {
        exitcode, cause, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert!(matches!(**cause, Error::Io { .. }), "{cause}");
    assert!(err.to_string().contains("QMP transcript"), "{err}");
    assert_eq!(*exitcode, None, "QEMU never ran");
    assert!(machine.full_args().is_empty(), "QEMU never ran");
    // Turned off, the machine launches.
    machine.set_qmp_transcript(None);
    machine.launch().unwrap();
    machine.shutdown(T).unwrap();
}

#[test]
fn qemus_output_is_readable_while_it_runs() {
    let dir = scratch();
    let machine = vm_guest(dir.path(), "hello-while-running", GuestAction::Halt);
    // The guest's serial port on QEMU's stdout: its banner is QEMU output like any other.
    machine.add_args(["-serial", "stdio"]);
    assert_eq!(machine.log_so_far(), None, "before any launch");
    machine.launch().unwrap();
    let started = Instant::now();
    let so_far = loop {
        let so_far = machine.log_so_far().expect("launched");
        if so_far.contains("hello-while-running") || started.elapsed() > T {
            break so_far;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(so_far.contains("hello-while-running"), "{so_far:?}");
    assert!(machine.is_running());
    assert_eq!(machine.get_log(), None, "get_log keeps its meaning");
    // Reading did not disturb QEMU's writing (they share the file's offset): a QMP command
    // still works, and after shutdown the whole log is there, once.
    machine.cmd("query-status", None).unwrap();
    machine.shutdown(T).unwrap();
    let log = machine.get_log().unwrap();
    assert_eq!(log.matches("hello-while-running").count(), 1, "{log:?}");
    assert_eq!(machine.log_so_far(), Some(log));
}

#[test]
fn log_so_far_reads_a_log_dir_file_too() {
    let dir = scratch();
    let machine = vm_none(dir.path());
    machine.set_log_dir(dir.path());
    let wrapper = vm::script(dir.path(), "echo wrapper-says-hi >&2; exec \"$@\"");
    machine.set_wrapper([wrapper.to_str().unwrap()]);
    machine.launch().unwrap();
    assert!(
        machine.log_so_far().unwrap().contains("wrapper-says-hi"),
        "the wrapper wrote before QEMU greeted"
    );
    machine.shutdown(T).unwrap();
}

#[test]
fn a_launch_where_qemu_exited_leads_with_its_exit_code_and_first_line() {
    let dir = scratch();
    let machine = vm_none(dir.path());
    machine.add_args(["-no-such-option-for-qm"]);
    let err = machine.launch().unwrap_err();
    let text = err.to_string();
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("launch failed: QEMU exited with code 1: "),
        "{text}"
    );
    assert!(first.contains("-no-such-option-for-qm"), "{text}");
    assert!(!first.contains("disconnected"), "{text}");
    // The cause, the command line and the whole output follow.
    assert!(text.contains("\n\tCause: "), "{text}");
    assert!(text.contains("\n\tExit code: 1"), "{text}");
    // std's error chain reaches the cause.
    let source = err.source().expect("a launch error has a source");
    let cause = source
        .downcast_ref::<Error>()
        .expect("the source is a qm::Error");
    assert!(matches!(cause, Error::Disconnected(_)), "{cause}");
}

#[test]
fn timeouts_name_what_did_not_happen_and_the_bound() {
    let dir = scratch();
    let machine = vm_none(dir.path());
    machine.launch().unwrap();
    let err = machine
        .event_wait("SHUTDOWN", None, Duration::from_millis(300))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "timed out: no SHUTDOWN event within 300 ms"
    );
    let filter = serde_json::json!({"data": {"guest": true}});
    let err = machine
        .events_wait(
            &[("SHUTDOWN", Some(&filter)), ("RESET", None)],
            Duration::from_millis(200),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "timed out: no SHUTDOWN or RESET event (matching the filter) within 200 ms"
    );
    let err = machine
        .get_qmp_event(Duration::from_millis(100))
        .unwrap_err();
    assert_eq!(err.to_string(), "timed out: no QMP event within 100 ms");
    machine.shutdown(T).unwrap();
}

#[test]
fn a_command_timeout_names_the_command_and_an_abnormal_shutdown_its_cause() {
    let dir = scratch();
    // QEMU stopped (SIGSTOP) once it greeted: commands get no reply, and quit does not end it.
    let machine = vm_none(dir.path());
    machine.launch().unwrap();
    let pid = machine.pid().unwrap();
    vm::signal(pid, libc::SIGSTOP);
    let err = machine
        .cmd_with("query-status", None, Duration::from_millis(500))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "timed out: query-status: no reply within 500 ms"
    );
    let err = machine.shutdown(Duration::from_millis(400)).unwrap_err();
    let Error::AbnormalShutdown(cause) = &err else {
        panic!("{err}")
    };
    assert!(matches!(**cause, Error::Timeout(_)), "{cause}");
    // Whatever step ran out of time (quit's reply, or the exit), it says the whole bound.
    assert!(cause.to_string().ends_with("within 400 ms"), "{cause}");
    let source = err.source().expect("an abnormal shutdown has a source");
    assert_eq!(source.to_string(), cause.to_string());
    assert!(!vm::pid_exists(pid));
}
