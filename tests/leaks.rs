//! No descriptor, thread, child process or temp file outlives a machine. One test in its own
//! binary, so nothing else runs in the process while it counts.

mod support;
use support::vm;

use std::time::Duration;

use qm::guest::GuestAction;
use qm::MonitorAddress;
use vm::{scratch, vm_guest, vm_none, T};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Our child processes but qm's one watchdog (started by the first launch, like the spawner
/// thread, and alive as long as the host).
fn children() -> Vec<String> {
    let mut kids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        kids.extend(text.split_whitespace().map(str::to_owned));
    }
    kids.retain(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        !cmdline.ends_with(b"\0qm-watchdog\0")
    });
    kids
}

/// One of each way a machine can live and end.
fn cycle(dir: &std::path::Path, i: usize) {
    match i % 7 {
        0 => {
            let m = vm_none(dir);
            m.launch().unwrap();
            m.cmd("query-status", None).unwrap();
            m.shutdown(T).unwrap();
        }
        1 => {
            let m = vm_none(dir);
            m.set_console(None, 0);
            m.launch().unwrap();
            m.kill().unwrap();
        }
        2 => {
            let m = vm_none(dir);
            m.add_args(["-no-such-option"]);
            m.launch().unwrap_err();
        }
        3 => {
            let m = vm_none(dir);
            let wrapper = vm::script(dir, "exec sleep 30");
            m.set_wrapper([wrapper.to_str().unwrap()]);
            m.set_qmp_timer(Some(Duration::from_millis(100)));
            m.launch().unwrap_err();
        }
        4 => {
            let m = vm_guest(dir, "leak check", GuestAction::Poweroff);
            m.set_console(None, 0);
            m.set_drain_console(true);
            // Paused until QMP is up: a guest that powers off at boot could otherwise end
            // QEMU during the handshake on a loaded machine.
            m.add_args(["-S"]);
            m.launch().unwrap();
            m.cmd("cont", None).unwrap();
            m.event_wait("SHUTDOWN", None, T).unwrap();
            m.wait(T).unwrap();
        }
        5 => {
            let m = vm_none(dir);
            m.set_monitor_address(MonitorAddress::Unix(None));
            m.launch().unwrap();
            m.cmd("stop", None).unwrap();
            m.event_wait("STOP", None, T).unwrap();
            m.shutdown(T).unwrap();
        }
        _ => {
            let m = vm_none(dir);
            m.set_monitor_address(MonitorAddress::Tcp {
                host: "127.0.0.1".into(),
                port: 0,
            });
            m.launch().unwrap();
            drop(m); // dropped while running
        }
    }
}

#[test]
fn machines_leave_nothing_behind() {
    let dir = scratch();
    // Warm up: the first launch starts qm's one long-lived spawner thread.
    cycle(dir.path(), 0);
    let (fds, threads_before) = (open_fds(), threads());
    for i in 0..35 {
        cycle(dir.path(), i);
    }
    assert_eq!(open_fds(), fds, "descriptors leaked");
    assert_eq!(threads(), threads_before, "threads leaked");
    assert_eq!(children(), Vec::<String>::new(), "child processes left");
    let left: Vec<_> = vm::entries(dir.path())
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("qemu-machine-")
        })
        .collect();
    assert!(left.is_empty(), "temp dirs left: {left:?}");

    // What a live machine holds, by default: the monitor's socket, the QMP reader's kick
    // eventfd, QEMU's pidfd (shared by the process and the QMP reader) and the in-memory log
    // (shared by the log's reader). Four per machine, so a process at the common limit of
    // 1024 descriptors runs some 250 machines.
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    let held: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        open_fds(),
        fds + 4,
        "descriptors with one live machine: {held:?}"
    );
    vm.shutdown(T).unwrap();
    assert_eq!(open_fds(), fds, "descriptors leaked");
    // A console adds six: its socket, the raw copy's socketpair (`console()`) and three
    // eventfds (its reader thread's stop, data and end signals).
    let vm = vm_none(dir.path());
    vm.set_console(None, 0);
    vm.launch().unwrap();
    assert_eq!(open_fds(), fds + 4 + 6, "with a console");
    vm.shutdown(T).unwrap();
    // The console's history stays readable until the machine goes.
    drop(vm);
    assert_eq!(open_fds(), fds, "descriptors leaked");
}
