//! The machine against a real QEMU (`qemu-system-x86_64`, TCG).

mod support;
use support::vm;

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use qm::guest::GuestAction;
use qm::{Error, Machine, MonitorAddress, Wait};
use serde_json::json;
use vm::{assert_cleaned_up, scratch, vm_guest, vm_none, T};

#[test]
fn launch_query_shutdown_and_clean_up() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    assert!(!vm.is_running());
    assert_eq!(vm.pid(), None);
    vm.launch().unwrap();
    assert!(vm.is_running());
    let pid = vm.pid().unwrap();
    let temp = vm.temp_dir().unwrap();
    assert_eq!(
        std::fs::metadata(&temp).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let status = vm.cmd("query-status", None).unwrap();
    assert_eq!(status["status"], "running");
    let raw = vm.qmp("query-status", None).unwrap();
    assert_eq!(raw["return"], status);
    assert_eq!(
        raw.get("id"),
        None,
        "qm's pairing id is not part of the response"
    );
    vm.shutdown(T).unwrap();
    assert_eq!(vm.exitcode(), Some(0));
    assert!(!vm.is_running());
    assert_eq!(vm.pid(), None);
    assert_eq!(vm.get_log().as_deref(), Some(""));
    assert_cleaned_up(pid, &temp);
    // Shutting down again, or a machine never launched, does nothing.
    vm.shutdown(T).unwrap();
    vm.kill().unwrap();
    vm.wait(T).unwrap();
    let never = vm_none(dir.path());
    never.shutdown(T).unwrap();
    assert_eq!(never.exitcode(), None);
}

#[test]
fn base_args_are_built_as_qemu_machine_builds_them() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.set_console(Some("isa-serial"), 2);
    vm.add_args(["-S"]);
    vm.set_machine("pc");
    vm.launch().unwrap();
    let args = vm.full_args();
    let mon_fd = args[6]
        .strip_prefix("socket,id=mon,fd=")
        .unwrap()
        .to_owned();
    let con = args
        .iter()
        .position(|a| a.starts_with("socket,id=console,fd="))
        .unwrap();
    let con_fd = args[con]
        .strip_prefix("socket,id=console,fd=")
        .unwrap()
        .to_owned();
    let expected = [
        vm::qemu(),
        "-display".into(),
        "none".into(),
        "-vga".into(),
        "none".into(),
        "-chardev".into(),
        format!("socket,id=mon,fd={mon_fd}"),
        "-mon".into(),
        "chardev=mon,mode=control".into(),
        "-machine".into(),
        "pc".into(),
        "-serial".into(),
        "null".into(),
        "-serial".into(),
        "null".into(),
        "-chardev".into(),
        format!("socket,id=console,fd={con_fd}"),
        "-device".into(),
        "isa-serial,chardev=console".into(),
        "-S".into(),
    ];
    assert_eq!(args, expected);
    assert_eq!(vm.args(), ["-S"]);
    assert_eq!(vm.binary(), vm::qemu());
    vm.kill().unwrap();
}

#[test]
fn default_console_is_serial_chardev_and_qmp_can_be_off() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.set_qmp_monitor(false);
    vm.set_console(None, 0);
    vm.launch().unwrap();
    let args = vm.full_args();
    assert!(!args.iter().any(|a| a.contains("id=mon")), "{args:?}");
    assert!(
        args.windows(2).any(|w| w == ["-serial", "chardev:console"]),
        "{args:?}"
    );
    assert!(matches!(vm.cmd("query-status", None), Err(Error::State(_))));
    // Without QMP a graceful shutdown is SIGTERM (QEMU 7.2 exits by re-raising it).
    vm.shutdown(T).unwrap();
    assert!(
        matches!(vm.exitcode(), Some(0) | Some(-15)),
        "{:?}",
        vm.exitcode()
    );
}

#[test]
fn wrapper_prefixes_argv_and_output_goes_to_the_log() {
    let dir = scratch();
    let wrapper = vm::script(
        dir.path(),
        "echo wrapper-stdout; echo wrapper-stderr >&2; exec \"$@\"",
    );
    let vm = vm_none(dir.path());
    vm.set_wrapper([wrapper.to_str().unwrap()]);
    vm.launch().unwrap();
    assert_eq!(vm.full_args()[0], wrapper.to_str().unwrap());
    assert_eq!(vm.full_args()[1], vm::qemu());
    vm.shutdown(T).unwrap();
    let log = vm.get_log().unwrap();
    assert!(
        log.contains("wrapper-stdout") && log.contains("wrapper-stderr"),
        "{log}"
    );
}

#[test]
fn names_that_escape_the_log_dir_are_rejected() {
    let vm = Machine::new(vm::qemu());
    for bad in ["a/b", "..", ".", "", "nul\0"] {
        assert!(
            matches!(vm.set_name(bad), Err(Error::Invalid(_))),
            "{bad:?}"
        );
    }
    vm.set_name("fine-name.1").unwrap();
    assert_eq!(vm.name(), "fine-name.1");
}

#[test]
fn log_dir_keeps_the_log_after_shutdown() {
    let dir = scratch();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let vm = vm_none(dir.path());
    vm.set_name("kept").unwrap();
    vm.set_log_dir(&logs);
    vm.launch().unwrap();
    assert_eq!(vm.log_dir(), Some(logs.clone()));
    let log = logs.join("kept.log");
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    vm.shutdown(T).unwrap();
    assert!(log.exists());
}

#[test]
fn launch_twice_is_a_state_error() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    assert!(matches!(vm.launch(), Err(Error::State(_))));
    assert!(vm.is_running());
    vm.shutdown(T).unwrap();
    // After a shutdown the machine can be launched again.
    vm.launch().unwrap();
    vm.cmd("query-status", None).unwrap();
    vm.shutdown(T).unwrap();
}

#[test]
fn bad_argument_fails_at_once_with_exit_code_and_output() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.add_args(["-no-such-option"]);
    // QEMU exits before greeting: the launch must not wait out this timer.
    vm.set_qmp_timer(Some(Duration::from_secs(300)));
    let started = Instant::now();
    let err = vm.launch().unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "waited out the QMP timer"
    );
    match &err {
        Error::Launch {
            exitcode,
            command,
            output,
            ..
        } => {
            assert_eq!(*exitcode, Some(1));
            assert!(command.contains("-no-such-option"), "{command}");
            assert!(
                output.contains("-no-such-option: invalid option"),
                "{output}"
            );
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("Exit code: 1"), "{err}");
    assert!(!vm.is_running());
    assert_eq!(vm.exitcode(), Some(1));
    assert_eq!(
        vm::entries(dir.path()),
        Vec::<std::path::PathBuf>::new(),
        "launch left files"
    );
}

#[test]
fn missing_binary_is_a_clear_launch_error() {
    let dir = scratch();
    let vm = Machine::new("/nonexistent/qemu-system-x86_64");
    vm.set_base_temp_dir(dir.path());
    let err = vm.launch().unwrap_err();
    let Error::Launch {
        exitcode, cause, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(*exitcode, None);
    assert!(matches!(**cause, Error::Io { .. }), "{cause}");
    let text = err.to_string();
    assert!(text.contains("/nonexistent/qemu-system-x86_64"), "{text}");
    assert!(text.contains("No such file"), "{text}");
    assert_eq!(vm::entries(dir.path()), Vec::<std::path::PathBuf>::new());
}

#[test]
fn qemu_that_never_greets_fails_after_the_qmp_timer_and_is_killed() {
    let dir = scratch();
    let marker = format!("{}.{}", 4000 + std::process::id() % 1000, vm::unique());
    let wrapper = vm::script(dir.path(), &format!("exec sleep {marker}"));
    let vm = vm_none(dir.path());
    vm.set_wrapper([wrapper.to_str().unwrap()]);
    vm.set_qmp_timer(Some(Duration::from_millis(500)));
    let err = vm.launch().unwrap_err();
    let Error::Launch {
        exitcode, cause, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert!(matches!(**cause, Error::Timeout(_)), "{cause}");
    assert_eq!(*exitcode, None, "we killed it: its exit code is not QEMU's");
    assert!(vm::processes_with(&format!("sleep {marker}")).is_empty());
    assert!(!vm.is_running());
}

#[test]
fn events_between_commands_are_queued_in_order() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    vm.cmd("stop", None).unwrap();
    vm.cmd("cont", None).unwrap();
    vm.cmd("stop", None).unwrap();
    // These replies came after the events: the events wait in the queue.
    vm.cmd("query-status", None).unwrap();
    let names: Vec<String> = vm
        .get_qmp_events(Duration::ZERO)
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["STOP", "RESUME", "STOP"]);
    assert_eq!(vm.get_qmp_event(Duration::ZERO).unwrap(), None);
    vm.shutdown(T).unwrap();
}

#[test]
fn event_wait_searches_the_queue_and_keeps_what_does_not_match() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    vm.cmd("stop", None).unwrap();
    vm.cmd("cont", None).unwrap();
    // RESUME is taken from the middle of the queue; STOP stays.
    let resume = vm.event_wait("RESUME", None, T).unwrap().unwrap();
    assert_eq!(resume["event"], "RESUME");
    let stop = vm.get_qmp_event(Duration::ZERO).unwrap().unwrap();
    assert_eq!(stop["event"], "STOP");
    // Several names: the first match wins.
    vm.cmd("stop", None).unwrap();
    let ev = vm
        .events_wait(
            &[("RESUME", None), ("STOP", Some(&json!({"event": "STOP"})))],
            T,
        )
        .unwrap()
        .unwrap();
    assert_eq!(ev["event"], "STOP");
    // A filter that does not match: a zero wait says None, a timed wait times out.
    vm.cmd("cont", None).unwrap();
    let nomatch = json!({"data": {"no-such-key": 1}});
    assert_eq!(
        vm.event_wait("RESUME", Some(&nomatch), Duration::ZERO)
            .unwrap(),
        None
    );
    let err = vm
        .event_wait("RESUME", Some(&nomatch), Duration::from_millis(100))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    // …and the event is still there for a matching wait.
    assert!(vm
        .event_wait("RESUME", None, Duration::ZERO)
        .unwrap()
        .is_some());
    vm.clear_events();
    vm.shutdown(T).unwrap();
}

#[test]
fn event_wait_for_an_event_that_comes_later() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| vm.event_wait("STOP", None, T));
        std::thread::sleep(Duration::from_millis(100));
        vm.cmd("stop", None).unwrap();
        assert_eq!(waiter.join().unwrap().unwrap().unwrap()["event"], "STOP");
    });
    vm.shutdown(T).unwrap();
}

#[test]
fn sixteen_threads_each_get_their_own_replies() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    std::thread::scope(|s| {
        for t in 0..16 {
            let vm = &vm;
            s.spawn(move || {
                for i in 0..200 {
                    if i % 2 == 0 {
                        assert_eq!(vm.cmd("query-status", None).unwrap()["status"], "running");
                    } else {
                        // QEMU names the unknown command in its error: a per-caller echo.
                        let name = format!("no-such-command-{t}-{i}");
                        match vm.cmd(&name, None).unwrap_err() {
                            Error::Qmp { class, desc } => {
                                assert_eq!(class, "CommandNotFound");
                                assert!(desc.contains(&format!("{name} ")), "{desc}");
                            }
                            other => panic!("{other}"),
                        }
                    }
                }
            });
        }
    });
    vm.shutdown(T).unwrap();
}

#[test]
fn large_replies_work() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    let schema = vm.cmd("query-qmp-schema", None).unwrap();
    let size = schema.to_string().len();
    assert!(size > 100 << 10, "schema is only {size} bytes");
    vm.shutdown(T).unwrap();
}

#[test]
fn oversize_replies_are_refused_by_the_cap() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.set_max_message_size(32 << 10);
    vm.launch().unwrap();
    let err = vm.cmd("query-qmp-schema", None).unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err}");
    // The connection is unusable now; shutdown falls back to killing QEMU.
    assert!(matches!(vm.shutdown(T), Err(Error::AbnormalShutdown(_))));
    assert!(!vm.is_running());
}

#[test]
fn qmp_errors_carry_class_and_desc() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    let args = json!({"path": "/machine", "property": "no-such-prop"});
    let raw = vm.qmp("qom-get", Some(&args)).unwrap();
    assert_eq!(raw["error"]["class"], "GenericError");
    match vm.cmd("qom-get", Some(&args)).unwrap_err() {
        Error::Qmp { class, desc } => {
            assert_eq!(class, "GenericError");
            assert!(desc.contains("no-such-prop"), "{desc}");
        }
        other => panic!("{other}"),
    }
    let not_object = json!([1]);
    assert!(matches!(
        vm.cmd("qom-get", Some(&not_object)),
        Err(Error::Invalid(_))
    ));
    vm.shutdown(T).unwrap();
}

#[test]
fn conv_keys_turns_underscores_into_dashes() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    let args = qm::conv_keys(&json!({"option": "machine"}));
    vm.cmd("query-command-line-options", Some(&args)).unwrap();
    let fdset = qm::conv_keys(&json!({"fdset_id": 7}));
    assert_eq!(fdset, json!({"fdset-id": 7}));
    vm.shutdown(T).unwrap();
}

fn file_with(dir: &std::path::Path, bytes: usize) -> std::path::PathBuf {
    let path = dir.join(format!("data-{}.img", vm::unique()));
    std::fs::write(&path, vec![0xa5u8; bytes]).unwrap();
    path
}

#[test]
fn send_fd_scm_passes_a_file_that_qemu_then_uses() {
    let dir = scratch();
    let path = file_with(dir.path(), 64 << 10);
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    // getfd: QEMU takes the descriptor under a name, closefd proves it holds it.
    let file = std::fs::File::open(&path).unwrap();
    vm.send_fd_scm(file.as_fd()).unwrap();
    vm.cmd("getfd", Some(&json!({"fdname": "passed"}))).unwrap();
    vm.cmd("closefd", Some(&json!({"fdname": "passed"})))
        .unwrap();
    assert!(vm
        .cmd("closefd", Some(&json!({"fdname": "passed"})))
        .is_err());
    // add-fd + blockdev-add: QEMU opens the image through the passed descriptor.
    vm.send_file_scm(&path).unwrap();
    let added = vm.cmd("add-fd", Some(&json!({"fdset-id": 3}))).unwrap();
    assert_eq!(added["fdset-id"], 3);
    vm.cmd(
        "blockdev-add",
        Some(&json!({
            "driver": "raw", "node-name": "passed", "read-only": true,
            "file": {"driver": "file", "filename": "/dev/fdset/3"}
        })),
    )
    .unwrap();
    let nodes = vm.cmd("query-named-block-nodes", None).unwrap();
    let node = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node-name"] == "passed")
        .expect("node");
    assert_eq!(node["image"]["virtual-size"], 64 << 10);
    vm.shutdown(T).unwrap();
}

#[test]
fn add_fd_passes_a_descriptor_on_the_command_line() {
    let dir = scratch();
    let path = file_with(dir.path(), 4096);
    let file = std::fs::File::open(&path).unwrap();
    let vm = vm_none(dir.path());
    vm.add_fd(file.as_fd(), 2, "from-cmdline", "");
    vm.launch().unwrap();
    let sets = vm.cmd("query-fdsets", None).unwrap();
    let set = &sets.as_array().unwrap()[0];
    assert_eq!(set["fdset-id"], 2);
    assert_eq!(set["fds"][0]["opaque"], "from-cmdline");
    vm.shutdown(T).unwrap();
}

/// `path` opened read-only without close-on-exec, as a host that leaves descriptors
/// inheritable has them.
fn inheritable(path: &std::path::Path) -> std::os::fd::OwnedFd {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: dup(2) of a valid descriptor gives a new one without close-on-exec, owned here.
    unsafe { OwnedFd::from_raw_fd(libc::dup(file.as_raw_fd())) }
}

/// What the descriptors of process `pid` point to.
fn fd_targets(pid: u32) -> Vec<String> {
    vm::entries(std::path::Path::new(&format!("/proc/{pid}/fd")))
        .iter()
        .filter_map(|p| std::fs::read_link(p).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn qemu_inherits_only_the_intended_descriptors() {
    let dir = scratch();
    let passed_path = file_with(dir.path(), 4096);
    let stray_path = file_with(dir.path(), 4096);
    let passed = std::fs::File::open(&passed_path).unwrap();
    // A descriptor the host left inheritable (no O_CLOEXEC) must not reach QEMU.
    let stray = inheritable(&stray_path);
    let vm = vm_none(dir.path());
    vm.set_console(None, 0);
    vm.add_fd(passed.as_fd(), 1, "x", "");
    vm.launch().unwrap();
    let pid = vm.pid().unwrap();
    let targets = fd_targets(pid);
    let count = |needle: &str| targets.iter().filter(|t| t.contains(needle)).count();
    assert_eq!(
        count(&stray_path.to_string_lossy()),
        0,
        "stray fd leaked: {targets:?}"
    );
    assert_eq!(count(&passed_path.to_string_lossy()), 1, "{targets:?}");
    // Monitor and console: one socket each (QEMU opens none of its own with -machine none).
    assert_eq!(count("socket:"), 2, "{targets:?}");
    assert_eq!(count("/dev/null"), 1, "stdin is /dev/null: {targets:?}");
    vm.shutdown(T).unwrap();
    drop(stray);
}

/// With `set_inherit_fds`, QEMU also gets what the host left inheritable (as the Python
/// original's `close_fds=False`), and still not what is close-on-exec.
#[test]
fn inherit_fds_passes_what_the_host_left_inheritable_and_nothing_else() {
    use std::os::fd::AsRawFd;
    let dir = scratch();
    let kept_path = file_with(dir.path(), 4096);
    let closed_path = file_with(dir.path(), 4096);
    let kept = inheritable(&kept_path);
    let closed = std::fs::File::open(&closed_path).unwrap(); // close-on-exec, as Rust opens it
    let vm = vm_none(dir.path());
    vm.set_inherit_fds(true);
    vm.launch().unwrap();
    let pid = vm.pid().unwrap();
    let targets = fd_targets(pid);
    let count = |needle: &str| targets.iter().filter(|t| t.contains(needle)).count();
    assert_eq!(count(&kept_path.to_string_lossy()), 1, "{targets:?}");
    assert_eq!(count(&closed_path.to_string_lossy()), 0, "{targets:?}");
    // Under its own number, as the original's Popen leaves it.
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{}", kept.as_raw_fd())).unwrap();
    assert_eq!(link, kept_path);
    vm.shutdown(T).unwrap();
    drop((kept, closed));
}

#[test]
fn kill_is_immediate_and_reports_no_error() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    let pid = vm.pid().unwrap();
    let temp = vm.temp_dir().unwrap();
    vm.kill().unwrap();
    assert_eq!(vm.exitcode(), Some(-libc::SIGKILL));
    assert_cleaned_up(pid, &temp);
}

#[test]
fn wait_for_a_qemu_that_does_not_exit_kills_it_and_reports_abnormal_shutdown() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    let pid = vm.pid().unwrap();
    let err = vm.wait(Duration::from_millis(200)).unwrap_err();
    assert!(matches!(err, Error::AbnormalShutdown(_)), "{err}");
    assert_eq!(vm.exitcode(), Some(-libc::SIGKILL));
    assert!(!vm::pid_exists(pid));
}

#[test]
fn shutdown_of_a_stopped_qemu_falls_back_to_sigkill() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    let pid = vm.pid().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let err = vm
        .cmd_with("query-status", None, Duration::from_millis(200))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    let err = vm.shutdown(Duration::from_millis(300)).unwrap_err();
    assert!(matches!(err, Error::AbnormalShutdown(_)), "{err}");
    assert!(!vm::pid_exists(pid));
}

#[test]
fn qemu_killed_behind_our_back_disconnects_every_waiter() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    let pid = vm.pid().unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| vm.event_wait("NEVER", None, Wait::forever()));
        let commander = s.spawn(|| loop {
            if let Err(e) = vm.cmd("query-status", None) {
                return e;
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let err = waiter.join().unwrap().unwrap_err();
        assert!(matches!(err, Error::Disconnected(_)), "{err}");
        let err = commander.join().unwrap();
        assert!(matches!(err, Error::Disconnected(_)), "{err}");
    });
    // QEMU died without our quit: the graceful shutdown is abnormal, and cleanup still runs.
    assert!(matches!(vm.shutdown(T), Err(Error::AbnormalShutdown(_))));
    assert_eq!(vm.exitcode(), Some(-libc::SIGKILL));
    assert!(!vm::pid_exists(pid));
}

#[test]
fn cancel_interrupts_event_wait_and_process_wait() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    let cancel = qm::Cancel::new();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| vm.event_wait("NEVER", None, Wait::forever().cancel(&cancel)));
        std::thread::sleep(Duration::from_millis(100));
        cancel.cancel();
        assert!(matches!(waiter.join().unwrap(), Err(Error::Interrupted)));
    });
    // A cancelled wait() is a failed graceful shutdown: QEMU is killed, cleanup runs.
    let pid = vm.pid().unwrap();
    let err = vm.wait(Wait::forever().cancel(&cancel)).unwrap_err();
    // It says why: the cancel, not a timeout.
    assert!(
        matches!(&err, Error::AbnormalShutdown(cause) if matches!(**cause, Error::Interrupted)),
        "{err}"
    );
    assert!(!vm::pid_exists(pid));
}

/// The core decides what a fired token does, so Rust callers get what C callers get: the call
/// fails with `Interrupted` before it sends or looks at anything, in any state.
#[test]
fn a_fired_token_refuses_the_call_before_anything_is_sent() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    let fired = qm::Cancel::new();
    fired.cancel();
    let with_fired = || Wait::call_default().cancel(&fired);
    // Before launch: not a state error, the token comes first.
    assert!(matches!(
        vm.cmd_with("query-status", None, with_fired()),
        Err(Error::Interrupted)
    ));
    assert!(matches!(
        vm.launch_with(with_fired()),
        Err(Error::Interrupted)
    ));
    assert!(!vm.is_running(), "a fired token launches nothing");
    vm.launch_with(Wait::call_default()).unwrap();
    // `stop` would pause the guest: it must not reach QEMU.
    assert!(matches!(
        vm.cmd_with("stop", None, with_fired()),
        Err(Error::Interrupted)
    ));
    assert_eq!(vm.cmd("query-status", None).unwrap()["status"], "running");
    assert!(matches!(
        vm.get_qmp_event(Wait::no_wait().cancel(&fired)),
        Err(Error::Interrupted)
    ));
    // Event waits have no default of their own.
    assert!(matches!(
        vm.get_qmp_event(Wait::call_default()),
        Err(Error::Invalid(_))
    ));
    vm.shutdown(T).unwrap();
}

#[test]
fn events_received_before_shutdown_stay_readable() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    assert!(matches!(
        vm.get_qmp_event(Duration::ZERO),
        Err(Error::State(_))
    ));
    vm.launch().unwrap();
    vm.cmd("stop", None).unwrap();
    vm.shutdown(T).unwrap();
    let names: Vec<String> = vm
        .get_qmp_events(Duration::ZERO)
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["STOP", "SHUTDOWN"]);
    // Nothing more will come: a blocking wait says so instead of hanging.
    assert!(matches!(vm.get_qmp_event(T), Err(Error::Disconnected(_))));
}

#[test]
fn unix_socket_monitor_in_sock_dir_is_private_and_removed() {
    let dir = scratch();
    let socks = dir.path().join("socks");
    std::fs::create_dir(&socks).unwrap();
    let vm = vm_none(dir.path());
    vm.set_name("unixmon").unwrap();
    vm.set_sock_dir(&socks);
    vm.set_monitor_address(MonitorAddress::Unix(None));
    vm.launch().unwrap();
    assert_eq!(vm.sock_dir().unwrap(), socks);
    let sock = socks.join("unixmon-monitor.sock");
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(vm
        .full_args()
        .contains(&format!("socket,id=mon,path={}", sock.display())));
    vm.cmd("query-status", None).unwrap();
    vm.shutdown(T).unwrap();
    assert!(!sock.exists());
}

#[test]
fn unix_socket_monitor_at_a_given_path() {
    let dir = scratch();
    let sock = dir.path().join("given.sock");
    let vm = vm_none(dir.path());
    vm.set_monitor_address(MonitorAddress::Unix(Some(sock.clone())));
    vm.launch().unwrap();
    vm.cmd("query-status", None).unwrap();
    vm.shutdown(T).unwrap();
    assert!(!sock.exists());
}

#[test]
fn tcp_monitor() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.set_monitor_address(MonitorAddress::Tcp {
        host: "127.0.0.1".into(),
        port: 0,
    });
    vm.launch().unwrap();
    let mon = vm
        .full_args()
        .into_iter()
        .find(|a| a.starts_with("socket,id=mon"))
        .unwrap();
    assert!(
        mon.starts_with("socket,id=mon,host=127.0.0.1,port=") && !mon.ends_with("port=0"),
        "{mon}"
    );
    vm.cmd("query-status", None).unwrap();
    vm.shutdown(T).unwrap();
}

#[test]
fn a_dropped_running_machine_is_shut_down() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    let pid = vm.pid().unwrap();
    let temp = vm.temp_dir().unwrap();
    drop(vm);
    assert_cleaned_up(pid, &temp);
}

// ---- the boot-sector guest: console and guest-initiated shutdown ----------------------------

#[test]
fn guest_console_echo_and_guest_initiated_shutdown() {
    let dir = scratch();
    let vm = vm_guest(dir.path(), "qm guest up", GuestAction::Echo);
    vm.set_console(None, 0);
    vm.launch().unwrap();
    let mut console = vm.console().unwrap();
    console.set_read_timeout(Some(T)).unwrap();
    let banner = vm::read_until(&mut console, "\r\n");
    assert_eq!(banner, "qm guest up\r\n");
    console.write_all(b"hello").unwrap();
    assert_eq!(vm::read_until(&mut console, "hello"), "hello");
    console.write_all(b"p").unwrap();
    let ev = vm.event_wait("SHUTDOWN", None, T).unwrap().unwrap();
    assert_eq!(
        ev["data"],
        json!({"guest": true, "reason": "guest-shutdown"})
    );
    drop(console);
    vm.wait(T).unwrap();
    assert_eq!(vm.exitcode(), Some(0));
}

#[test]
fn guest_exit_status_through_isa_debug_exit() {
    let dir = scratch();
    let vm = vm_guest(dir.path(), "exiting", GuestAction::Exit(5));
    // Paused until QMP is up: a guest that ends at boot could otherwise end QEMU during the
    // handshake on a loaded machine.
    vm.add_args(["-S"]);
    vm.launch().unwrap();
    vm.cmd("cont", None).unwrap();
    vm.wait(T).unwrap();
    assert_eq!(vm.exitcode(), Some(qm::guest::debug_exit_status(5)));
}

#[test]
fn drained_console_is_logged_completely() {
    let dir = scratch();
    let console_log = dir.path().join("console.log");
    let vm = vm_guest(dir.path(), "to the console log", GuestAction::Poweroff);
    vm.set_console(None, 0);
    vm.set_console_log(Some(console_log.clone()));
    // Paused until QMP is up: a guest that powers off at boot could otherwise end QEMU
    // during the handshake on a loaded machine.
    vm.add_args(["-S"]);
    vm.launch().unwrap();
    vm.cmd("cont", None).unwrap();
    // Nobody reads the console: the drain keeps QEMU going and logs every byte.
    vm.event_wait("SHUTDOWN", None, T).unwrap();
    vm.wait(T).unwrap();
    assert_eq!(
        std::fs::read_to_string(&console_log).unwrap(),
        "to the console log\r\n"
    );
}

#[test]
fn drained_console_is_still_readable_and_writable() {
    let dir = scratch();
    let vm = vm_guest(dir.path(), "drained", GuestAction::Echo);
    vm.set_console(None, 0);
    vm.set_drain_console(true);
    vm.launch().unwrap();
    let mut console = vm.console().unwrap();
    console.set_read_timeout(Some(T)).unwrap();
    assert_eq!(vm::read_until(&mut console, "\r\n"), "drained\r\n");
    console.write_all(b"abc").unwrap();
    assert_eq!(vm::read_until(&mut console, "abc"), "abc");
    console.write_all(b"x").unwrap();
    drop(console);
    vm.wait(T).unwrap();
    assert_eq!(vm.exitcode(), Some(qm::guest::debug_exit_status(1)));
}

#[test]
fn console_without_set_console_is_a_state_error() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    assert!(matches!(vm.console(), Err(Error::State(_))));
    assert!(matches!(vm.console_fd(), Err(Error::State(_))));
    vm.shutdown(T).unwrap();
}

#[test]
fn quit_by_hand_makes_the_following_eof_expected() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.set_qmp_timer(None);
    vm.launch().unwrap();
    let pid = vm.pid().unwrap();
    assert_eq!(vm.qmp("quit", None).unwrap()["return"], json!({}));
    // QEMU exits by itself after quit: the shutdown only waits and cleans up, without error.
    vm.shutdown(T).unwrap();
    assert_eq!(vm.exitcode(), Some(0));
    assert!(!vm::pid_exists(pid));
}

#[test]
fn a_launch_waiting_for_qemu_can_be_cancelled() {
    let dir = scratch();
    let marker = format!("{}.{}", 5000 + std::process::id() % 1000, vm::unique());
    let wrapper = vm::script(dir.path(), &format!("exec sleep {marker}"));
    let vm = vm_none(dir.path());
    vm.set_wrapper([wrapper.to_str().unwrap()]);
    vm.set_qmp_timer(None);
    let cancel = qm::Cancel::new();
    std::thread::scope(|s| {
        let launch = s.spawn(|| vm.launch_with_cancel(&cancel));
        std::thread::sleep(Duration::from_millis(200));
        cancel.cancel();
        match launch.join().unwrap().unwrap_err() {
            Error::Launch { cause, .. } => assert!(matches!(*cause, Error::Interrupted)),
            other => panic!("{other}"),
        }
    });
    assert!(vm::processes_with(&format!("sleep {marker}")).is_empty());
    // A fired token launches nothing.
    assert!(matches!(
        vm.launch_with_cancel(&cancel),
        Err(Error::Interrupted)
    ));
    assert_eq!(vm.pid(), None);
}

#[test]
fn commands_after_a_shutdown_are_state_errors() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    vm.shutdown(T).unwrap();
    assert!(matches!(vm.cmd("query-status", None), Err(Error::State(_))));
    let file = std::fs::File::open("/dev/null").unwrap();
    assert!(matches!(vm.send_fd_scm(file.as_fd()), Err(Error::State(_))));
}

#[test]
fn console_calls_never_wait_for_a_shutdown_in_progress() {
    let dir = scratch();
    let vm = vm_guest(dir.path(), "halted", GuestAction::Halt);
    vm.set_console(None, 0);
    vm.launch().unwrap();
    let mut console = vm.console().unwrap();
    console.set_read_timeout(Some(T)).unwrap();
    assert_eq!(vm::read_until(&mut console, "\r\n"), "halted\r\n");
    std::thread::scope(|s| {
        // A halted guest never exits: this wait holds the machine for its whole 5 s.
        let waiter = s.spawn(|| vm.wait(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(200));
        let _ = vm.console();
        let _ = vm.console_fd();
        assert!(
            !waiter.is_finished(),
            "the console calls waited for the wait to end"
        );
        assert!(matches!(
            waiter.join().unwrap(),
            Err(Error::AbnormalShutdown(_))
        ));
    });
    // Our duplicate outlives the machine's console: it now reads end of file.
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut console, &mut rest).unwrap();
}

#[test]
fn a_machine_without_log_dir_writes_no_file() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    // QEMU's output goes to an anonymous memory file: no temp dir, no log file on disk.
    assert_eq!(vm::entries(dir.path()), Vec::<std::path::PathBuf>::new());
    assert_eq!(vm.log_dir(), None);
    vm.shutdown(T).unwrap();
    assert_eq!(vm.get_log().as_deref(), Some(""));
    assert_eq!(vm::entries(dir.path()), Vec::<std::path::PathBuf>::new());
}
