//! The spawner's guarantees and failure paths: a program that cannot be executed is reported
//! with its errno at once (nothing left running, no zombie, no descriptor leaked); QEMU starts
//! with stdin on /dev/null, output in the log, no signal blocked or ignored that the host set
//! up, in a process group of its own; a descriptor limit gives a clear error.

mod support;
use support::vm;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use qm::{Error, Machine};

/// The tests here count this process's descriptors and children: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Our own children that are zombies (exited, never reaped).
fn zombie_children() -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str()) {
            found.push(pid);
        }
    }
    found
}

/// Launches `program` and expects the exec to fail with `errno`.
fn expect_exec_error(program: &str, errno: i32) {
    let dir = vm::scratch();
    let vm = Machine::new(program);
    vm.set_base_temp_dir(dir.path());
    let err = vm.launch().unwrap_err();
    let cause = match &err {
        Error::Launch { cause, .. } => &**cause,
        other => other,
    };
    match cause {
        Error::Io { source, .. } => assert_eq!(
            source.raw_os_error(),
            Some(errno),
            "{program}: wrong error: {err}"
        ),
        other => panic!("{program}: expected an I/O error with errno {errno}, got {other:?}"),
    }
    assert!(
        err.to_string().contains(program),
        "the error does not name the program: {err}"
    );
    assert!(vm.pid().is_none());
    assert!(!vm.is_running());
}

#[test]
fn exec_failures_are_reported_with_errno_and_leave_nothing() {
    let _serial = serial();
    let dir = vm::scratch();
    let fds = open_fds();

    expect_exec_error("/nonexistent/qemu-system-x86_64", libc::ENOENT);
    // Not in PATH: every candidate is missing.
    expect_exec_error("qm-test-no-such-program", libc::ENOENT);
    // A directory.
    expect_exec_error(dir.path().to_str().unwrap(), libc::EACCES);
    // No execute permission (root too needs one x bit).
    let plain = dir.path().join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    expect_exec_error(plain.to_str().unwrap(), libc::EACCES);
    // Executable but no known format: reported, not run through a shell behind our back.
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, [0u8, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).unwrap();
    expect_exec_error(garbage.to_str().unwrap(), libc::ENOEXEC);
    // A missing interpreter.
    let script = dir.path().join("script");
    std::fs::write(&script, "#!/nonexistent/interpreter\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    expect_exec_error(script.to_str().unwrap(), libc::ENOENT);

    assert_eq!(open_fds(), fds, "a failed exec leaked descriptors");
    assert!(
        zombie_children().is_empty(),
        "a failed exec left a zombie: {:?}",
        zombie_children()
    );
}

fn sig_mask(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field}"));
    u64::from_str_radix(line[field.len()..].trim(), 16).unwrap()
}

#[test]
fn qemu_starts_clean() {
    let _serial = serial();
    let dir = vm::scratch();
    let vm = vm::vm_none(dir.path());
    vm.set_log_dir(dir.path());
    vm.launch().unwrap();
    let pid = vm.pid().unwrap();
    let link = |fd: u32| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
    assert_eq!(link(0), std::path::Path::new("/dev/null"));
    let log = dir.path().join(format!("{}.log", vm.name()));
    assert_eq!(link(1), log);
    assert_eq!(link(2), log);
    vm.shutdown(vm::T).unwrap();

    // QEMU blocks signals of its own, and a shell blocks them around its forks: what a
    // program starts with is seen by one that reads its own status at once (exec'd by the
    // shell, no fork). The launch then fails: no QEMU ever runs.
    let status_file = dir.path().join("status");
    vm.set_wrapper([
        "/bin/sh".to_string(),
        "-c".into(),
        format!("exec cat /proc/self/status > '{}'", status_file.display()),
        "sh".into(),
    ]);
    vm.launch().unwrap_err();
    let status = std::fs::read_to_string(&status_file).unwrap();
    // The spawning thread blocks every signal across the clone: none may stay blocked.
    assert_eq!(sig_mask(&status, "SigBlk:"), 0, "{status}");
    // The host (a Rust program) ignores SIGPIPE; the program must not inherit that.
    assert_eq!(
        sig_mask(&status, "SigIgn:") & (1 << (libc::SIGPIPE - 1)),
        0,
        "SIGPIPE is ignored: {status}"
    );
}

#[test]
#[ignore = "run by descriptor_limit_gives_a_clear_error, in a process of its own"]
fn child_with_a_low_descriptor_limit() {
    if std::env::var_os("QM_SPAWN_CHILD").is_none() {
        return;
    }
    let dir = vm::scratch();
    let vm = vm::vm_none(dir.path());
    // Warm up (spawner thread, watchdog) so the limit hits the launch itself.
    vm.launch().unwrap();
    vm.shutdown(vm::T).unwrap();
    let fds = open_fds();
    // SAFETY: rlimit is plain data (zeroes valid) that getrlimit fills.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let saved = lim;
    // From no descriptor to spare up to enough for a launch: each failure must be clear.
    let mut failures = 0;
    for extra in 0..64 {
        lim.rlim_cur = (fds + extra) as libc::rlim_t;
        // SAFETY: as above; this process runs this test only.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
        let Err(err) = vm.launch() else {
            vm.shutdown(vm::T).unwrap();
            break;
        };
        failures += 1;
        println!("limit {}: {err}", lim.rlim_cur);
        assert!(
            err.to_string().contains("Too many open files"),
            "limit {}: {err}",
            lim.rlim_cur
        );
        assert!(!vm.is_running());
        // SAFETY: as above.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &saved) }, 0);
        assert_eq!(open_fds(), fds, "a failed launch leaked descriptors");
    }
    assert!(failures > 0, "no launch failed");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &saved) }, 0);
    assert_eq!(open_fds(), fds, "failed launches leaked descriptors");
    vm.launch().unwrap();
    vm.shutdown(vm::T).unwrap();
    println!("ok");
}

#[test]
fn descriptor_limit_gives_a_clear_error() {
    let _serial = serial();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_with_a_low_descriptor_limit",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("QM_SPAWN_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
