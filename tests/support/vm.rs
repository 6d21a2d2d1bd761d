//! Helpers for tests that drive a real QEMU.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use qm::guest::{qemu_args, write_image, GuestAction};
use qm::Machine;

/// Generous bound for waits that should finish in milliseconds: a timeout here is a failure,
/// never a timing assertion.
pub const T: Duration = Duration::from_secs(30);

/// The QEMU binary under test (`QM_QEMU` overrides).
pub fn qemu() -> String {
    std::env::var("QM_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into())
}

/// A private scratch directory, removed on drop.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("qm-test-")
        .tempdir()
        .unwrap()
}

/// A QMP-only machine: `-machine none`, no guest. Temp files go under `dir`.
pub fn vm_none(dir: &Path) -> Machine {
    let vm = Machine::new(qemu());
    vm.set_machine("none");
    vm.set_base_temp_dir(dir);
    vm
}

/// A machine that boots the 512-byte guest with a console.
pub fn vm_guest(dir: &Path, banner: &str, action: GuestAction) -> Machine {
    let image = dir.join(format!("guest-{}.img", unique()));
    write_image(&image, banner, action).unwrap();
    let vm = Machine::new(qemu());
    vm.set_base_temp_dir(dir);
    vm.add_args(qemu_args(&image));
    vm
}

/// The QMP part of the record-then-replay scenarios (`fake_qemu.rs`, `replay_guest.rs`): what
/// the program sees of `query-status`, a `blockdev-add` that QEMU refuses and `stop` with its
/// `STOP` event, pushed to `seen` for comparison with the replay.
pub fn qmp_scenario(vm: &Machine, seen: &mut Vec<qm::Value>) {
    use serde_json::json;
    seen.push(vm.cmd("query-status", None).unwrap());
    let err = vm
        .cmd(
            "blockdev-add",
            Some(&json!({"driver": "qcow2", "node-name": "disk0",
                "file": {"driver": "file", "filename": "/nonexistent/disk.qcow2"}})),
        )
        .unwrap_err();
    let qm::Error::Qmp { class, desc } = err else {
        panic!("expected a QMP error, got {err}");
    };
    seen.push(json!({"class": class, "desc": desc}));
    vm.cmd("stop", None).unwrap();
    seen.push(vm.event_wait("STOP", None, T).unwrap().unwrap());
}

pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// True while a process with this pid exists (a zombie counts: it was not reaped).
pub fn pid_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Asserts everything a run created is gone: the process (reaped), the temp dir.
pub fn assert_cleaned_up(pid: u32, temp_dir: &Path) {
    assert!(
        !pid_exists(pid),
        "QEMU pid {pid} still exists (not killed or not reaped)"
    );
    assert!(
        !temp_dir.exists(),
        "temp dir {} left behind",
        temp_dir.display()
    );
}

/// Entries directly inside `dir`.
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Pids of processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(needle) {
                found.push(pid);
            }
        }
    }
    found
}

/// Writes an executable shell script (used as a wrapper).
pub fn script(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("wrapper-{}.sh", unique()));
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Reads from a console until `needle` has been seen; returns everything read.
pub fn read_until(console: &mut impl std::io::Read, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = console.read(&mut buf).expect("console read");
        assert!(
            n > 0,
            "console EOF before {needle:?}; got {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

// ---- added for tests/hardening.rs and tests/soak.rs ----------------------------------------

/// Sends `sig` to `pid` (a QEMU we launched), behind the machine's back.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory preconditions; the pid is our own child.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// A numeric field of /proc/self/status (`Threads`; `VmRSS` and `VmHWM` are in KiB).
pub fn self_status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Open descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Threads of this process.
pub fn thread_count() -> usize {
    self_status("Threads") as usize
}

/// Child processes of this process (any thread's), zombies included, but qm's watchdog.
pub fn child_pids() -> Vec<String> {
    let mut kids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        kids.extend(text.split_whitespace().map(str::to_owned));
    }
    // qm's watchdog lives as long as this process (like qm's spawner thread).
    kids.retain(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        !cmdline.ends_with(b"\0qm-watchdog\0")
    });
    kids
}

/// `qemu-machine-*` temp dirs directly inside `dir`.
pub fn machine_temp_dirs(dir: &Path) -> Vec<PathBuf> {
    entries(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("qemu-machine-")
        })
        .collect()
}

/// The permission bits of `path`.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Runs the ignored test `name` of this test binary in a child process with `env` set, and
/// returns its output; for tests that change process-wide state (signal dispositions, umask)
/// or measure the whole process (peak RSS).
pub fn run_child_test(name: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}
