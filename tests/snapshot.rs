//! Save and restore (qm::snapshot) on the real Linux test guest under TCG: what the guest had in
//! memory before the save is there after the restore; every error path is refused before a QEMU
//! is left behind.

mod support;

use std::path::Path;
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
    vm.shutdown(T).unwrap();
    info
}

#[test]
fn a_file_written_before_the_save_is_there_after_the_restore() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guest.state");
    let info = boot_and_save(&path, "saved-before");
    assert!(info.stream_bytes > 0);
    assert_eq!(info.stream_bytes + info.header_len(), std::fs::metadata(&path).unwrap().len());

    let vm = configured();
    vm.restore_state(&path, &Ready::Agent, T).unwrap();
    assert_eq!(sh(&vm, "cat /tmp/marker"), "saved-before\n");
    vm.shutdown(T).unwrap();
}
