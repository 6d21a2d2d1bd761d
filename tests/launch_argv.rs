//! The two-phase launch against a real QEMU: `prepare_launch` creates qm's descriptors and says
//! which arguments name them, `launch_argv` starts a caller-composed command line around them
//! (as QEMU's Python harnesses do when they override `_base_args`), `abort_launch` gives up.

mod support;
use support::vm;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard};

use qm::{Cancel, Error, Machine, MonitorAddress, Wait};
use vm::{qemu, scratch, vm_none, T};

/// Tests that count this process's descriptors hold it for writing; every other test holds it
/// for reading, so no descriptor opens or closes while counting.
static FDS: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    FDS.read().unwrap_or_else(|e| e.into_inner())
}

fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    fds
}

/// The `fd=N` numbers in the base arguments.
fn fds_named(base: &[String]) -> Vec<i32> {
    base.iter()
        .flat_map(|a| a.split(','))
        .filter_map(|kv| kv.strip_prefix("fd="))
        .map(|n| n.parse().unwrap())
        .collect()
}

fn is_open(fd: i32) -> bool {
    Path::new(&format!("/proc/self/fd/{fd}")).exists()
}

fn cause(err: &Error) -> &Error {
    match err {
        Error::Launch { cause, .. } => cause,
        other => panic!("expected a launch error, got {other:?}"),
    }
}

#[test]
fn a_harness_adds_a_qtest_chardev_on_an_inherited_descriptor() {
    let _g = shared();
    let dir = scratch();
    let m = vm_none(dir.path());
    m.set_console(None, 0);
    let base = m.prepare_launch().unwrap();
    // The monitor and the console, each on a descriptor of ours that QEMU will inherit.
    assert!(base.contains(&"-mon".to_string()), "{base:?}");
    assert!(base.contains(&"-machine".to_string()), "{base:?}");
    let named = fds_named(&base);
    assert_eq!(named.len(), 2, "{base:?}");
    assert!(named.iter().all(|&fd| is_open(fd)), "{named:?}");
    // Preparing again while prepared hands back the same arguments, nothing new.
    assert_eq!(m.prepare_launch().unwrap(), base);

    // What QEMUQtestMachine does: its own socket, and -qtest on it.
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut argv = vec![qemu()];
    argv.extend(base.iter().cloned());
    argv.extend([
        "-chardev".into(),
        format!("socket,id=qtest,fd={}", theirs.as_raw_fd()),
        "-qtest".into(),
        "chardev:qtest".into(),
    ]);
    m.launch_argv(argv.clone(), &[theirs.as_fd()], T).unwrap();
    drop(theirs);
    assert_eq!(m.full_args(), argv);

    // QEMU speaks qtest on the inherited descriptor...
    ours.set_read_timeout(Some(T)).unwrap();
    (&ours).write_all(b"endianness\n").unwrap();
    let mut reply = String::new();
    BufReader::new(&ours).read_line(&mut reply).unwrap();
    assert!(reply.starts_with("OK "), "qtest replied {reply:?}");
    // ... and QMP on the prepared monitor, which lists the extra chardev and the console.
    let chardevs = m.cmd("query-chardev", None).unwrap().to_string();
    assert!(chardevs.contains("\"qtest\""), "{chardevs}");
    assert!(chardevs.contains("\"console\""), "{chardevs}");
    assert!(m.console_fd().is_ok());
    let pid = m.pid().unwrap();
    assert_eq!(m.last_pid(), Some(pid));
    m.shutdown(T).unwrap();
    assert_eq!(m.pid(), None);
    assert_eq!(
        m.last_pid(),
        Some(pid),
        "the pid stays readable after the exit"
    );
    assert!(!vm::pid_exists(pid));
    // A new prepare starts a new run: the old pid and exit code are gone.
    m.prepare_launch().unwrap();
    assert_eq!(m.last_pid(), None);
    assert_eq!(m.exitcode(), None);
    m.abort_launch().unwrap();
}

#[test]
fn a_harness_can_drop_qms_arguments() {
    let _g = shared();
    let dir = scratch();
    let m = vm_none(dir.path());
    let base = m.prepare_launch().unwrap();
    // iotests-style: no "-vga none", and a different machine type.
    let mut argv = vec![qemu()];
    let mut it = base.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-vga" | "-machine" => {
                it.next();
            }
            _ => argv.push(a.clone()),
        }
    }
    argv.extend(["-machine".into(), "none,graphics=off".into()]);
    m.launch_argv(argv.clone(), &[], T).unwrap();
    assert_eq!(m.full_args(), argv);
    m.cmd("query-status", None).unwrap();
    m.shutdown(T).unwrap();
}

#[test]
fn qms_own_launch_uses_what_was_prepared() {
    let _g = shared();
    let dir = scratch();
    let m = vm_none(dir.path());
    m.add_args(["-name", "prepared"]);
    let base = m.prepare_launch().unwrap();
    // Later changes wait for the next run: this one uses the configuration of the prepare.
    m.add_args(["-no-such-option"]);
    m.launch().unwrap();
    let mut expected = vec![qemu()];
    expected.extend(base);
    expected.extend(["-name".into(), "prepared".into()]);
    assert_eq!(m.full_args(), expected);
    assert_eq!(
        m.cmd("query-name", None).unwrap()["name"].as_str(),
        Some("prepared")
    );
    m.shutdown(T).unwrap();
}

#[test]
fn without_prepare_launch_argv_prepares_first() {
    let _g = shared();
    let dir = scratch();
    // QMP off: the caller's command line needs no descriptor of qm's.
    let m = vm_none(dir.path());
    m.set_qmp_monitor(false);
    let argv = [&qemu(), "-display", "none", "-machine", "none"];
    m.launch_argv(argv, &[], T).unwrap();
    assert_eq!(m.full_args(), argv);
    assert!(m.is_running());
    m.shutdown(T).unwrap();
    assert!(m.exitcode().is_some());

    // A unix monitor at a path the caller chose, named in the caller's own arguments.
    let sock = dir.path().join("mon.sock");
    let m = vm_none(dir.path());
    m.set_monitor_address(MonitorAddress::Unix(Some(sock.clone())));
    let chardev = format!("socket,id=mon,path={}", sock.display());
    let argv = [
        &qemu(),
        "-display",
        "none",
        "-machine",
        "none",
        "-chardev",
        &chardev,
        "-mon",
        "chardev=mon,mode=control",
    ];
    m.launch_argv(argv, &[], T).unwrap();
    m.cmd("query-status", None).unwrap();
    m.shutdown(T).unwrap();
    assert!(!sock.exists(), "the monitor socket is removed at shutdown");
}

#[test]
fn a_missing_binary_is_the_usual_launch_error() {
    let _g = shared();
    let dir = scratch();
    let m = vm_none(dir.path());
    let base = m.prepare_launch().unwrap();
    let mut argv = vec!["/nonexistent/qemu-system-x86_64".to_string()];
    argv.extend(base);
    let err = m.launch_argv(argv.clone(), &[], T).unwrap_err();
    match &err {
        Error::Launch {
            exitcode, command, ..
        } => {
            assert_eq!(*exitcode, None);
            assert_eq!(*command, argv.join(" "));
        }
        other => panic!("{other:?}"),
    }
    match cause(&err) {
        Error::Io { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{err}")
        }
        other => panic!("expected an I/O cause, got {other:?}"),
    }
    assert_eq!(m.last_pid(), None, "no process was started");
    // The failed launch released the prepared run: the next one starts from scratch.
    m.launch().unwrap();
    m.shutdown(T).unwrap();
}

#[test]
fn qemu_rejecting_the_callers_arguments_is_the_usual_launch_error() {
    let _g = shared();
    let dir = scratch();
    let m = vm_none(dir.path());
    let mut argv = vec![qemu()];
    argv.extend(m.prepare_launch().unwrap());
    argv.push("-no-such-option".into());
    let err = m.launch_argv(argv, &[], T).unwrap_err();
    match &err {
        Error::Launch {
            exitcode, output, ..
        } => {
            assert_eq!(*exitcode, Some(1), "{err}");
            assert!(output.contains("no-such-option"), "{output}");
        }
        other => panic!("{other:?}"),
    }
    assert!(m.last_pid().is_some(), "QEMU ran and exited");
    assert_eq!(m.exitcode(), Some(1));
}

#[test]
fn wrong_state_and_bad_arguments() {
    let _g = shared();
    let dir = scratch();
    let m = vm_none(dir.path());
    // Nothing prepared: abort does nothing.
    m.abort_launch().unwrap();

    let base = m.prepare_launch().unwrap();
    let empty: [&str; 0] = [];
    assert!(matches!(
        m.launch_argv(empty, &[], T),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        m.launch_argv([qemu(), "a\0b".into()], &[], T),
        Err(Error::Invalid(_))
    ));
    let stdout = std::io::stdout();
    assert!(matches!(
        m.launch_argv([qemu()], &[stdout.as_fd()], T),
        Err(Error::Invalid(_))
    ));
    // A token that fired launches nothing...
    let cancel = Cancel::new();
    cancel.cancel();
    let mut argv = vec![qemu()];
    argv.extend(base.iter().cloned());
    assert!(matches!(
        m.launch_argv(argv.clone(), &[], Wait::call_default().cancel(&cancel)),
        Err(Error::Interrupted)
    ));
    // ... and none of those touched the prepared run.
    assert_eq!(m.prepare_launch().unwrap(), base);
    assert!(fds_named(&base).iter().all(|&fd| is_open(fd)));

    m.launch_argv(argv, &[], T).unwrap();
    assert!(matches!(m.prepare_launch(), Err(Error::State(_))));
    assert!(matches!(
        m.launch_argv([qemu()], &[], T),
        Err(Error::State(_))
    ));
    assert!(matches!(m.abort_launch(), Err(Error::State(_))));
    assert!(matches!(m.launch(), Err(Error::State(_))));
    // The state errors left the run alone.
    m.cmd("query-status", None).unwrap();
    m.shutdown(T).unwrap();
}

/// Every way to give up on a prepared run, and a failed `launch_argv`, leave nothing behind:
/// no descriptor, socket file, log or temp dir.
#[test]
fn abandoned_runs_release_everything() {
    let _g = FDS.write().unwrap_or_else(|e| e.into_inner());
    let dir = scratch();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let machine = || {
        let m = vm_none(dir.path());
        m.set_monitor_address(MonitorAddress::Unix(None));
        m.set_console(None, 0);
        m.set_drain_console(true);
        m.set_log_dir(&logs);
        m
    };
    // Warm up: the first launch starts qm's long-lived spawner thread.
    let m = machine();
    m.launch().unwrap();
    m.shutdown(T).unwrap();
    let before = open_fds();

    type GiveUp = fn(&Machine);
    let give_ups: [(&str, GiveUp); 5] = [
        ("abort", |m| m.abort_launch().unwrap()),
        ("shutdown", |m| m.shutdown(T).unwrap()),
        ("kill", |m| m.kill().unwrap()),
        ("missing binary", |m| {
            let mut argv = vec!["/nonexistent/qemu".to_string()];
            argv.extend(m.prepare_launch().unwrap());
            m.launch_argv(argv, &[], T).unwrap_err();
        }),
        ("drop", |_| {}),
    ];
    for (how, give_up) in give_ups {
        let m = machine();
        m.prepare_launch().unwrap();
        let temp = m.temp_dir().unwrap();
        let sock = m
            .sock_dir()
            .unwrap()
            .join(format!("{}-monitor.sock", m.name()));
        assert!(sock.exists(), "{how}: the monitor socket is listening");
        assert_ne!(open_fds(), before, "{how}: prepare opened descriptors");
        give_up(&m);
        // Released by the call itself (except "drop"), not later by the machine's drop.
        if how == "drop" {
            drop(m);
        }
        assert_eq!(open_fds(), before, "{how}: descriptors leaked");
        assert!(!sock.exists(), "{how}: monitor socket left behind");
        assert!(!temp.exists(), "{how}: temp dir left behind");
    }
    // The logs stay, as they do after any run; nothing else is left in the scratch dir.
    let left: Vec<_> = vm::entries(dir.path())
        .into_iter()
        .filter(|p| p != &logs)
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// QEMU gets the prepared descriptors, `add_fd`'s and the extra ones, and nothing else, even a
/// descriptor the host left inheritable.
#[test]
fn qemu_inherits_exactly_the_prepared_added_and_extra_descriptors() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let _g = shared();
    let dir = scratch();
    let file = |name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, name).unwrap();
        (std::fs::File::open(&path).unwrap(), path)
    };
    let (added, added_path) = file("added");
    let (extra, extra_path) = file("extra");
    let (stray_file, stray_path) = file("stray");
    // SAFETY: dup(2) of a valid descriptor gives a new one without close-on-exec, owned here.
    let stray = unsafe { OwnedFd::from_raw_fd(libc::dup(stray_file.as_raw_fd())) };

    let m = vm_none(dir.path());
    m.set_console(None, 0);
    m.add_fd(added.as_fd(), 1, "added", "");
    let mut argv = vec![qemu()];
    argv.extend(m.prepare_launch().unwrap());
    argv.extend(m.args());
    argv.extend([
        "-add-fd".into(),
        format!("fd={},set=2,opaque=extra", extra.as_raw_fd()),
    ]);
    m.launch_argv(argv, &[extra.as_fd()], T).unwrap();
    let fdsets = m.cmd("query-fdsets", None).unwrap().to_string();
    assert!(
        fdsets.contains("\"added\"") && fdsets.contains("\"extra\""),
        "{fdsets}"
    );

    let pid = m.pid().unwrap();
    let targets: Vec<String> = vm::entries(Path::new(&format!("/proc/{pid}/fd")))
        .iter()
        .filter_map(|p| std::fs::read_link(p).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect();
    let count = |path: &Path| {
        let needle = path.to_string_lossy();
        targets.iter().filter(|t| t.contains(&*needle)).count()
    };
    assert_eq!(count(&stray_path), 0, "stray fd leaked: {targets:?}");
    assert_eq!(count(&added_path), 1, "{targets:?}");
    assert_eq!(count(&extra_path), 1, "{targets:?}");
    // The prepared monitor and console: one socket each.
    let sockets = targets.iter().filter(|t| t.starts_with("socket:")).count();
    assert_eq!(sockets, 2, "{targets:?}");
    m.shutdown(T).unwrap();
    drop(stray);
}
