//! Save and restore (qm::snapshot) on the real Linux test guest under TCG: what the guest had in
//! memory before the save is there after the restore; every error path is refused before a QEMU
//! is left behind.

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use qm::{AgentChannel, Error, Exec, Machine, Ready};
use support::linux_guest::{linux_guest, qemu_args};
use support::vm;

/// Bound of a boot (first agent sync): generous, TCG on a loaded 2-core machine.
const BOOT: Duration = Duration::from_secs(180);
/// Bound of a save, a restore or one command: a failure bound, never a timing assertion.
const T: Duration = Duration::from_secs(120);

/// A Linux guest machine, configured (console, agent) but not launched.
fn configured() -> Machine {
    let vm = Machine::new(vm::qemu());
    vm.add_args(qemu_args(&linux_guest()));
    vm.set_console(None, 0);
    vm.set_guest_agent(Some(AgentChannel::SocketPair));
    vm
}

fn sh(vm: &Machine, script: &str) -> String {
    let out = vm
        .agent()
        .unwrap()
        .exec(&Exec::new("sh").args(["-c", script]), T)
        .unwrap();
    assert_eq!(out.exit_code, Some(0), "{script}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Boots a guest, writes a marker to its tmpfs and saves it to `path`.
fn boot_and_save(path: &Path, marker: &str) -> qm::StateInfo {
    let vm = configured();
    vm.launch().unwrap();
    vm.agent().unwrap().sync(BOOT).unwrap();
    sh(&vm, &format!("echo {marker} > /tmp/marker"));
    let info = vm.save_state(path, T).unwrap();
    // Saved and paused: a status QEMU reports after an outgoing migration.
    let status = vm.cmd("query-status", None).unwrap();
    assert_eq!(status["status"], "postmigrate", "{status}");
    vm.shutdown(T).unwrap();
    info
}

/// One saved guest for the tests of this file (a boot takes seconds under TCG).
fn saved() -> &'static Path {
    static SAVED: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &SAVED
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("guest.state");
            let info = boot_and_save(&path, "saved-before");
            assert!(info.stream_bytes > 0);
            assert_eq!(
                info.stream_bytes + info.header_len(),
                std::fs::metadata(&path).unwrap().len()
            );
            (dir, path)
        })
        .1
}

/// A copy of the saved state in `dir`, changed by `edit`.
fn copy_with(dir: &Path, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut data = std::fs::read(saved()).unwrap();
    edit(&mut data);
    let path = dir.join("edited.state");
    std::fs::write(&path, data).unwrap();
    path
}

/// `vm` never started a QEMU.
fn nothing_launched(vm: &Machine) {
    assert_eq!(vm.last_pid(), None);
    assert!(!vm.is_running());
}

#[test]
fn a_file_written_before_the_save_is_there_after_the_restore() {
    let vm = configured();
    vm.restore_state(saved(), &Ready::Agent, T).unwrap();
    assert_eq!(sh(&vm, "cat /tmp/marker"), "saved-before\n");
    // The guest runs on: it can be saved and restored again.
    sh(&vm, "echo second > /tmp/marker");
    let dir = tempfile::tempdir().unwrap();
    let again = dir.path().join("again.state");
    vm.save_state(&again, T).unwrap();
    vm.shutdown(T).unwrap();
    let vm = configured();
    vm.restore_state(&again, &Ready::Agent, T).unwrap();
    assert_eq!(sh(&vm, "cat /tmp/marker"), "second\n");
}

#[test]
fn a_restore_waits_for_the_console_prompt() {
    let vm = configured();
    let ready = Ready::Console {
        send: Some("\n".into()),
        patterns: qm::console::Patterns::new().success(support::linux_guest::PROMPT),
    };
    vm.restore_state(saved(), &ready, T).unwrap();
    let seen = vm.console_exec(
        "cat /tmp/marker",
        "\n",
        &qm::console::Patterns::new().success("saved-before"),
        T,
    );
    assert!(seen.is_ok(), "{seen:?}");
}

#[test]
fn other_arguments_are_refused_before_launching() {
    let vm = configured();
    vm.add_args(["-smp", "2"]);
    let err = vm.restore_state(saved(), &Ready::Running, T).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(err.to_string().contains("-smp 2"), "{err}");
    nothing_launched(&vm);

    let vm = Machine::new(vm::qemu());
    vm.add_args(qemu_args(&linux_guest()));
    vm.set_console(None, 0);
    let err = vm.restore_state(saved(), &Ready::Running, T).unwrap_err();
    assert!(
        err.to_string()
            .contains("guest agent channel: saved on, now off"),
        "{err}"
    );
    nothing_launched(&vm);
}

#[test]
fn a_missing_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let vm = configured();
    let err = vm
        .restore_state(&dir.path().join("nothing.state"), &Ready::Running, T)
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    nothing_launched(&vm);
}

#[test]
fn a_truncated_file_is_refused_before_launching() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_with(dir.path(), |d| d.truncate(d.len() - 1000));
    let vm = configured();
    let err = vm.restore_state(&path, &Ready::Running, T).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    nothing_launched(&vm);
    // Not a state file at all.
    std::fs::write(&path, b"hello\n").unwrap();
    let err = vm.restore_state(&path, &Ready::Running, T).unwrap_err();
    assert!(
        err.to_string().contains("not a complete qm state file"),
        "{err}"
    );
    nothing_launched(&vm);
}

#[test]
fn a_corrupt_stream_fails_with_qemus_words_and_leaves_no_qemu() {
    let dir = tempfile::tempdir().unwrap();
    // 64 KiB of 0xff in the middle of the stream: page headers QEMU cannot parse.
    let path = copy_with(dir.path(), |d| {
        let mid = d.len() / 2;
        d[mid..mid + 65536].fill(0xff);
    });
    let vm = configured();
    let err = vm.restore_state(&path, &Ready::Running, T).unwrap_err();
    let Error::Launch { output, .. } = &err else {
        panic!("not a launch error: {err}")
    };
    assert!(output.contains("load of migration failed"), "{err}");
    assert!(!vm.is_running());
    let pid = vm.last_pid().expect("a QEMU was started");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "QEMU {pid} is still there"
    );
}

#[test]
fn a_save_to_a_path_that_cannot_be_written_leaves_the_guest_running() {
    let dir = tempfile::tempdir().unwrap();
    let vm = configured();
    vm.restore_state(saved(), &Ready::Agent, T).unwrap();
    let err = vm
        .save_state(&dir.path().join("missing/x.state"), T)
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert_eq!(vm.cmd("query-status", None).unwrap()["status"], "running");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}
