//! Debug logging is off by default and switchable: `QM_LOG=debug` shows lifecycle steps and
//! every QMP message on stderr. Checked in a child process so the environment is its own.

mod support;
use support::vm;

use std::process::Command;

/// Runs `child_run_one_machine` in a fresh copy of this test binary with `QM_LOG` set.
fn stderr_of_child(qm_log: Option<&str>) -> String {
    stderr_of_child_setting(qm_log, None)
}

/// As above; the child first calls `set_log_level(level)` when `set` is given.
fn stderr_of_child_setting(qm_log: Option<&str>, set: Option<&str>) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    if let Some(level) = set {
        cmd.env("QM_TEST_SET_LEVEL", level);
    }
    cmd.args([
        "--exact",
        "child_run_one_machine",
        "--ignored",
        "--nocapture",
    ]);
    match qm_log {
        Some(level) => cmd.env("QM_LOG", level),
        None => cmd.env_remove("QM_LOG"),
    };
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "child failed: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
#[ignore = "run by the tests below in a child process"]
fn child_run_one_machine() {
    if std::env::var("QM_TEST_FOREIGN_KILL").is_ok() {
        let dir = vm::scratch();
        let machine = vm::vm_none(dir.path());
        machine.launch().unwrap();
        let pid = machine.pid().unwrap();
        // SAFETY: signalling our own child behind the machine's back.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        // Let the kill land first (every QEMU thread gone, the child waitable but not reaped):
        // a shutdown racing it would SIGKILL too and rightly take the death for its own.
        loop {
            // SAFETY: siginfo_t is plain data; WNOWAIT leaves the child for qm to reap.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let flags = libc::WEXITED | libc::WNOWAIT | libc::WNOHANG;
            // SAFETY: waitid on our own child with a valid siginfo_t.
            let rc = unsafe { libc::waitid(libc::P_PID, pid, &mut info, flags) };
            // SAFETY: si_pid is valid to read after waitid filled the struct (0 if not exited).
            if rc == 0 && unsafe { info.si_pid() } == pid as libc::pid_t {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let _ = machine.shutdown(vm::T);
        let ours = vm::vm_none(dir.path());
        ours.launch().unwrap();
        ours.kill().unwrap();
        return;
    }
    match std::env::var("QM_TEST_SET_LEVEL").as_deref() {
        Ok("debug") => qm::set_log_level(qm::LogLevel::Debug),
        Ok("off") => qm::set_log_level(qm::LogLevel::Off),
        _ => {}
    }
    let dir = vm::scratch();
    let machine = vm::vm_none(dir.path());
    machine.launch().unwrap();
    machine.cmd("query-status", None).unwrap();
    machine.shutdown(vm::T).unwrap();
}

#[test]
fn debug_logging_shows_qmp_traffic_and_lifecycle() {
    let err = stderr_of_child(Some("debug"));
    assert!(err.contains("launch command: "), "{err}");
    assert!(
        err.contains(r#">>> {"execute":"qmp_capabilities","id":1}"#),
        "{err}"
    );
    assert!(
        err.contains(r#">>> {"execute":"query-status","id":2}"#),
        "{err}"
    );
    assert!(err.contains("<<< {\"QMP\""), "{err}");
    assert!(err.contains("cleaned up"), "{err}");
}

#[test]
fn logging_is_quiet_by_default() {
    let err = stderr_of_child(None);
    assert!(!err.contains("qm debug"), "{err}");
}

#[test]
fn log_level_can_be_changed_at_run_time() {
    let err = stderr_of_child_setting(None, Some("debug"));
    assert!(err.contains(">>> {\"execute\":\"query-status\""), "{err}");
    let err = stderr_of_child_setting(Some("debug"), Some("off"));
    assert!(
        !err.contains("qm debug"),
        "set_log_level overrides QM_LOG: {err}"
    );
}

#[test]
fn a_death_by_a_signal_we_did_not_send_is_warned_about() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_run_one_machine",
            "--ignored",
            "--nocapture",
        ])
        .env("QM_TEST_FOREIGN_KILL", "1")
        .env_remove("QM_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    // Exactly one warning: for the foreign SIGKILL, not for our own kill().
    assert_eq!(
        err.matches("qm warning: qemu received signal 9").count(),
        1,
        "{err}"
    );
}

#[test]
fn qm_log_takes_levels_in_any_case_and_numbers() {
    for value in ["debug", "DEBUG", "Debug", "2"] {
        let err = stderr_of_child(Some(value));
        assert!(
            err.contains(">>> {\"execute\":\"query-status\""),
            "{value}: {err}"
        );
    }
    for value in ["warn", "WARN", "1", "off", "OFF", "0"] {
        let err = stderr_of_child(Some(value));
        assert!(!err.contains("qm debug"), "{value}: {err}");
        assert!(!err.contains("not a level"), "{value}: {err}");
    }
}

#[test]
fn an_unknown_qm_log_value_gets_exactly_one_warning() {
    let err = stderr_of_child(Some("verbose"));
    assert_eq!(
        err.matches("qm warning: QM_LOG=\"verbose\" is not a level")
            .count(),
        1,
        "{err}"
    );
    assert!(!err.contains("qm debug"), "warnings only: {err}");
}

/// Records the callback got, in the child of `log_callback_gets_records_and_none_restores_stderr`.
type Records = std::sync::Mutex<Vec<(qm::LogLevel, String, String, std::time::SystemTime)>>;

#[test]
#[ignore = "run by log_callback_gets_records_and_none_restores_stderr in a child process"]
fn child_log_callback() {
    use std::sync::Arc;
    use std::time::SystemTime;
    qm::set_log_level(qm::LogLevel::Debug);
    let records: Arc<Records> = Arc::default();
    let sink = records.clone();
    qm::set_log_callback(Some(Box::new(move |r: &qm::LogRecord<'_>| {
        // From inside, the callback cannot be changed: that would wait for itself. (A failed
        // assertion here loses the record, which the count below notices.)
        assert!(matches!(
            qm::set_log_callback(None),
            Err(qm::Error::State(_))
        ));
        sink.lock()
            .unwrap()
            .push((r.level, r.target.to_owned(), r.message.to_owned(), r.time));
    })))
    .unwrap();
    let before = SystemTime::now();
    let dir = vm::scratch();
    let machine = vm::vm_none(dir.path());
    machine.launch().unwrap();
    // From several threads at once: every record arrives, whole.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..5 {
                    machine.cmd("query-status", None).unwrap();
                }
            });
        }
    });
    machine.shutdown(vm::T).unwrap();
    let after = SystemTime::now();
    qm::set_log_callback(None).unwrap();
    let got = std::mem::take(&mut *records.lock().unwrap());
    let sent = got
        .iter()
        .filter(|(level, target, msg, _)| {
            *level == qm::LogLevel::Debug
                && target == "qm::qmp"
                && msg.contains(r#">>> {"execute":"query-status","id":"#)
        })
        .count();
    assert_eq!(sent, 20, "{got:#?}");
    assert!(
        got.iter()
            .any(|(_, target, msg, _)| target == "qm::machine::launch"
                && msg.contains("launch command: ")),
        "{got:#?}"
    );
    assert!(got.iter().all(|(_, _, _, t)| *t >= before && *t <= after));
    // After set_log_callback(None) the callback gets nothing more: stderr does.
    let machine = vm::vm_none(dir.path());
    machine.launch().unwrap();
    machine.shutdown(vm::T).unwrap();
    assert!(records.lock().unwrap().is_empty());
    eprintln!("CHILD DONE");
}

#[test]
fn log_callback_gets_records_and_none_restores_stderr() {
    let out = support::vm::run_child_test("child_log_callback", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert!(err.contains("CHILD DONE"), "{err}");
    // Only the second machine (after the callback was removed) logged to stderr: one launch.
    assert_eq!(err.matches("launch command: ").count(), 1, "{err}");
}
