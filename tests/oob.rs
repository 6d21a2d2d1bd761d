//! Out-of-band execution against the installed QEMU (7.2 offers the `oob` capability).
//!
//! The in-band command held up is `chardev-add` of a file backend on a FIFO nobody reads: QEMU
//! opens it in its main loop, and the open blocks until a reader comes, so the in-band
//! command cannot finish before the test opens the FIFO itself.

mod support;
use support::vm;

use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use qm::Error;
use serde_json::{json, Value};
use vm::{scratch, vm_none, T};

/// The `execute` / `exec-oob` of every message qm sent, from a transcript file.
fn sent(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["dir"] == "out")
        .map(|l| {
            let m = &l["msg"];
            match (m["execute"].as_str(), m["exec-oob"].as_str()) {
                (Some(c), _) => c.to_owned(),
                (_, Some(c)) => format!("oob:{c}"),
                _ => String::new(),
            }
        })
        .collect()
}

#[test]
fn an_oob_command_is_answered_while_an_in_band_one_is_held_up() {
    let dir = scratch();
    let fifo = dir.path().join("held.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let transcript = dir.path().join("t.jsonl");
    let vm = vm_none(dir.path());
    vm.set_qmp_transcript(Some(transcript.clone()));
    vm.set_qmp_oob(true);
    vm.launch().unwrap();
    assert!(vm.qmp_oob_enabled());

    std::thread::scope(|s| {
        let held = s.spawn(|| {
            let args = json!({"id": "held", "backend": {"type": "file",
                              "data": {"out": fifo.to_str().unwrap()}}});
            vm.cmd_with("chardev-add", Some(&args), T)
        });
        // Wait (bounded) until the in-band command went out.
        let start = std::time::Instant::now();
        while !sent(&transcript).iter().any(|c| c == "chardev-add") {
            assert!(start.elapsed() < T, "chardev-add was never sent");
            std::thread::sleep(Duration::from_millis(10));
        }
        let reply = vm.qmp_oob("query-yank", None, T).unwrap();
        assert!(reply["return"].is_array(), "{reply}");
        assert!(
            !held.is_finished(),
            "the in-band command finished although its FIFO has no reader"
        );
        // A reader lets QEMU's open return: the in-band command completes.
        let _reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        assert_eq!(held.join().unwrap().unwrap(), json!({}));
    });
    let order = sent(&transcript);
    let held_at = order.iter().position(|c| c == "chardev-add").unwrap();
    let oob_at = order.iter().position(|c| c == "oob:query-yank").unwrap();
    assert!(held_at < oob_at, "{order:?}");
    vm.shutdown(T).unwrap();
}

#[test]
fn oob_that_was_not_negotiated_or_not_allowed_is_a_clear_error() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    assert!(!vm.qmp_oob_enabled());
    match vm.qmp_oob("query-yank", None, T) {
        Err(Error::State(why)) => {
            assert!(why.contains("set_qmp_oob(true) before launch"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    vm.shutdown(T).unwrap();

    let vm = vm_none(dir.path());
    vm.set_qmp_oob(true);
    vm.launch().unwrap();
    // Before the schema is loaded QEMU itself refuses.
    let reply = vm.qmp_oob("query-status", None, T).unwrap();
    assert_eq!(reply["error"]["class"], "GenericError", "{reply}");
    // Once it is, qm refuses first, naming the commands that allow OOB.
    vm.schema().unwrap();
    match vm.qmp_oob("query-status", None, T) {
        Err(Error::Invalid(why)) => {
            assert!(
                why.contains("query-yank") && why.contains("migrate-pause"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    // In-band commands are unaffected by OOB being on.
    assert_eq!(vm.cmd("query-status", None).unwrap()["status"], "running");
    vm.shutdown(T).unwrap();
}
