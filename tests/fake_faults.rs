//! Faults a real QEMU does not produce, played by the public fake QEMU (`qm-fake-qemu`) under a
//! real `Machine`: the project's own scripted-peer tests that the fake can express, moved here
//! from `tests/qmp_fake.rs` so that the fake is exercised by the faults it exists for. (Tests
//! that need byte-level control of one socket — an 8 MiB line, 20,000-event bursts, writes
//! before the greeting — stay on `tests/support/fake_qmp.rs`.)

mod support;
use support::vm;

use std::path::Path;

use qm::{Error, Machine};
use vm::{scratch, T};

const FAKE: &str = env!("CARGO_BIN_EXE_qm-fake-qemu");

/// A machine running the fake on `script` (written under `dir`).
fn fake_vm(dir: &Path, script: &str) -> Machine {
    let path = dir.join(format!("script-{}.jsonl", vm::unique()));
    std::fs::write(&path, script).unwrap();
    let vm = Machine::new(FAKE);
    vm.set_base_temp_dir(dir);
    vm.add_args(["-qm-fake-script".to_owned(), path.display().to_string()]);
    vm
}

/// Shuts the fake down (it may be hanging: then qm kills it) and returns its log.
fn end(vm: &Machine) -> String {
    let _ = vm.shutdown(std::time::Duration::from_secs(5));
    vm.get_log().unwrap_or_default()
}

#[test]
fn event_before_capabilities_reply_keeps_replies_in_step() {
    let dir = scratch();
    let vm = fake_vm(
        dir.path(),
        r#"{"dir":"out","msg":{"execute":"qmp_capabilities"}}
{"dir":"event","msg":{"event":"BETWEEN"}}
{"dir":"in","msg":{"return":{}}}
{"dir":"out","msg":{"execute":"query-name"}}
{"dir":"in","msg":{"return":{"name":"one"}}}
{"dir":"out","msg":{"execute":"query-name"}}
{"dir":"event","msg":{"event":"SECOND"}}
{"dir":"in","msg":{"return":{"name":"two"}}}
"#,
    );
    vm.launch().unwrap();
    assert_eq!(vm.cmd("query-name", None).unwrap()["name"], "one");
    assert_eq!(vm.cmd("query-name", None).unwrap()["name"], "two");
    let names: Vec<String> = vm
        .get_qmp_events(std::time::Duration::ZERO)
        .unwrap()
        .into_iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["BETWEEN", "SECOND"]);
    let log = end(&vm);
    assert_eq!(vm.exitcode(), Some(0), "{log}");
}

#[test]
fn reply_with_unknown_id_is_dropped() {
    let dir = scratch();
    let vm = fake_vm(
        dir.path(),
        r#"{"dir":"out","msg":{"execute":"query-status"}}
{"do":"garbage","text":"{\"return\":{\"bogus\":true},\"id\":987654}\r\n{\"return\":{\"bogus\":true},\"id\":\"not-a-number\"}\r\n"}
{"dir":"in","msg":{"return":{"real":true}}}
"#,
    );
    vm.launch().unwrap();
    assert_eq!(
        vm.cmd("query-status", None).unwrap(),
        serde_json::json!({"real": true})
    );
    let log = end(&vm);
    assert_eq!(vm.exitcode(), Some(0), "{log}");
}

#[test]
fn reply_without_id_goes_to_the_only_command_in_flight() {
    let dir = scratch();
    let vm = fake_vm(
        dir.path(),
        r#"{"dir":"out","msg":{"execute":"x"}}
{"do":"garbage","text":"{\"error\":{\"class\":\"GenericError\",\"desc\":\"no id\"}}\r\n"}
"#,
    );
    vm.launch().unwrap();
    match vm.cmd("x", None).unwrap_err() {
        Error::Qmp { class, desc } => {
            assert_eq!((class.as_str(), desc.as_str()), ("GenericError", "no id"))
        }
        other => panic!("{other}"),
    }
    end(&vm);
}

/// `garbage` answers `query-status` and the fake then hangs (a live peer): the command fails
/// with a protocol error containing `needle`, and the stream stays condemned.
fn assert_protocol_error(garbage: &str, needle: &str) {
    let dir = scratch();
    let line = serde_json::json!({"do": "garbage", "text": garbage});
    let vm = fake_vm(
        dir.path(),
        &format!("{{\"dir\":\"out\",\"msg\":{{\"execute\":\"query-status\"}}}}\n{line}\n{{\"do\":\"hang\"}}\n"),
    );
    vm.launch().unwrap();
    match vm.cmd("query-status", None).unwrap_err() {
        Error::Protocol(why) => assert!(why.contains(needle), "{why}"),
        other => panic!("expected a protocol error containing {needle:?}, got {other}"),
    }
    assert!(matches!(
        vm.cmd("query-status", None),
        Err(Error::Protocol(_) | Error::Disconnected(_))
    ));
    end(&vm);
}

#[test]
fn invalid_json_is_a_protocol_error() {
    assert_protocol_error("{not json}\r\n", "invalid JSON");
}

#[test]
fn non_object_json_is_a_protocol_error() {
    assert_protocol_error("[1, 2, 3]\r\n", "JSON object");
}

#[test]
fn eof_in_the_middle_of_a_reply_is_reported() {
    let dir = scratch();
    let vm = fake_vm(
        dir.path(),
        r#"{"dir":"out","msg":{"execute":"query-status"}}
{"do":"garbage","text":"{\"return\": {\"status\": \"runn"}
{"do":"disconnect"}
{"do":"hang"}
"#,
    );
    vm.launch().unwrap();
    match vm.cmd("query-status", None).unwrap_err() {
        Error::Protocol(why) => assert!(why.contains("middle of a message"), "{why}"),
        other => panic!("{other}"),
    }
    end(&vm);
}

#[test]
fn greeting_missing_fields_is_rejected() {
    let dir = scratch();
    let vm = fake_vm(dir.path(), "{\"dir\":\"in\",\"msg\":{\"QMP\":{}}}\n");
    let err = vm.launch().unwrap_err();
    assert!(err.to_string().contains("malformed greeting"), "{err}");
}

#[test]
fn eof_fails_every_waiter_at_once() {
    let dir = scratch();
    // The fake exits 300 ms after the handshake, while four threads wait.
    let vm = fake_vm(
        dir.path(),
        r#"{"dir":"out","msg":{"execute":"qmp_capabilities"},"match":"name"}
{"dir":"in","msg":{"return":{}}}
{"do":"exit","status":0,"delay":0.3}
"#,
    );
    vm.launch().unwrap();
    std::thread::scope(|s| {
        let waiters: Vec<_> = (0..4)
            .map(|i| {
                let vm = &vm;
                s.spawn(move || {
                    if i % 2 == 0 {
                        vm.cmd_with("query-status", None, qm::Wait::forever())
                            .unwrap_err()
                    } else {
                        vm.event_wait("NEVER", None, qm::Wait::forever())
                            .unwrap_err()
                    }
                })
            })
            .collect();
        for w in waiters {
            let err = w.join().unwrap();
            assert!(matches!(err, Error::Disconnected(_)), "{err}");
        }
    });
    let _ = vm.shutdown(T);
}
