//! The guest agent against `qemu-ga` in the real Linux guest (`guest/linux`), under TCG.
//!
//! Booting takes seconds, so the tests that leave the guest as they found it share one guest
//! (launched, and synced while it boots, by the first test that needs it; QEMU dies with the
//! test process). The test that kills the agent and powers the guest off has its own.

mod support;

use std::io::Write;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use qm::{AgentChannel, Error, Exec, GuestAgent, Machine, ShutdownMode};
use serde_json::json;
use support::linux_guest::{linux_guest, qemu_args, AGENT_START, AGENT_STOP};
use support::vm;

/// Bound of a boot (sync right after launch): generous, TCG on a loaded 2-core machine.
const BOOT: Duration = Duration::from_secs(180);
/// Bound of one command: a failure bound, never a timing assertion.
const T: Duration = Duration::from_secs(60);

struct Shared {
    _vm: Machine,
    agent: Arc<GuestAgent>,
}

/// The shared guest, or why there is none.
fn shared() -> Result<&'static Shared, String> {
    static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let args = qemu_args(&linux_guest());
            let vm = Machine::new(vm::qemu());
            vm.add_args(args);
            vm.set_guest_agent(Some(AgentChannel::SocketPair));
            vm.launch().map_err(|e| format!("launch: {e}"))?;
            let agent = vm.agent().map_err(|e| e.to_string())?;
            // Right after launch: the guest is still booting; sync retries until qemu-ga runs.
            agent
                .sync(BOOT)
                .map_err(|e| format!("sync after launch: {e}"))?;
            Ok(Shared { _vm: vm, agent })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The shared agent (`Option` for the tests' `let … else`: there always is one).
fn agent() -> Option<&'static GuestAgent> {
    match shared() {
        Ok(s) => Some(&s.agent),
        Err(why) => panic!("the shared Linux guest failed: {why}"),
    }
}

/// Runs `command` at the guest's shell prompt and waits until it is done (a marker the shell
/// computes, so that the echo of the command line itself does not match).
fn shell(console: &mut std::os::unix::net::UnixStream, command: &str) {
    use std::io::Read;
    console
        .write_all(format!("{command}; echo qm-done-$((6*7))\n").as_bytes())
        .unwrap();
    console.set_read_timeout(Some(T)).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("qm-done-42") {
        let n = console.read(&mut buf).expect("reading the console");
        assert!(n > 0, "the console closed");
        seen.extend_from_slice(&buf[..n]);
    }
}

fn sh(script: &str) -> Exec {
    Exec::new("sh").args(["-c", script])
}

#[test]
fn sync_right_after_launch_then_ping_and_info() {
    let Some(ga) = agent() else { return };
    ga.ping(T).unwrap();
    let info = ga.get_osinfo(T).unwrap();
    assert_eq!(info["id"], "qm-guest", "{info}");
    let ns = ga.get_time(T).unwrap();
    // 2020-01-01 in ns: a clock, not an error or a counter.
    assert!(ns > 1_577_836_800_000_000_000, "{ns}");
}

#[test]
fn exec_uname_matches_the_agents_osinfo() {
    let Some(ga) = agent() else { return };
    let out = ga.exec(&Exec::new("uname").args(["-r"]), T).unwrap();
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.signal, None);
    let release = String::from_utf8(out.stdout).unwrap();
    let info = ga.get_osinfo(T).unwrap();
    assert_eq!(release.trim(), info["kernel-release"].as_str().unwrap());
    assert!(out.stderr.is_empty());
}

#[test]
fn exec_reports_exit_code_signal_and_stderr() {
    let Some(ga) = agent() else { return };
    let out = ga.exec(&sh("echo oops >&2; exit 3"), T).unwrap();
    assert_eq!(out.exit_code, Some(3));
    assert_eq!(out.stderr, b"oops\n");
    let out = ga.exec(&sh("kill -9 $$"), T).unwrap();
    assert_eq!(out.signal, Some(9), "{out:?}");
    assert_eq!(out.exit_code, None);
    // A program that does not exist: the agent's error, as Error::Qmp.
    let err = ga.exec(&Exec::new("/no/such/program"), T).unwrap_err();
    assert!(matches!(err, Error::Qmp { .. }), "{err:?}");
}

#[test]
fn exec_of_a_mebibyte_is_capped_and_reported() {
    let Some(ga) = agent() else { return };
    let mib = "head -c 1048576 /dev/zero | tr '\\0' x";
    let out = ga.exec(&sh(mib).max_output(64 << 10), T).unwrap();
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.stdout.len(), 64 << 10);
    assert!(out.stdout.iter().all(|&b| b == b'x'));
    assert!(out.stdout_truncated);
    assert!(!out.stderr_truncated);
    // Under the default cap the whole mebibyte comes back.
    let out = ga.exec(&sh(mib), T).unwrap();
    assert_eq!(out.stdout.len(), 1 << 20);
    assert!(!out.stdout_truncated);
}

#[test]
fn exec_feeds_stdin() {
    let Some(ga) = agent() else { return };
    let input: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let out = ga.exec(&Exec::new("cat").input(input.clone()), T).unwrap();
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.stdout, input);
    let out = ga
        .exec(&sh("read a; read b; echo \"$b $a\"").input("one\ntwo\n"), T)
        .unwrap();
    assert_eq!(out.stdout, b"two one\n");
}

#[test]
fn a_file_written_reads_back_the_same() {
    let Some(ga) = agent() else { return };
    // Over two chunks, with every byte value.
    let data: Vec<u8> = (0..(2 << 20) + 12345u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    ga.file_write("/tmp/qm-roundtrip", &data, T).unwrap();
    assert_eq!(ga.file_read("/tmp/qm-roundtrip", 4 << 20, T).unwrap(), data);
    let out = ga
        .exec(&Exec::new("wc").args(["-c", "/tmp/qm-roundtrip"]), T)
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&data.len().to_string()));
    // The cap: one byte short fails, and says so.
    let err = ga
        .file_read("/tmp/qm-roundtrip", data.len() - 1, T)
        .unwrap_err();
    assert!(err.to_string().contains("larger than the cap"), "{err}");
    // An empty file, and a missing one.
    ga.file_write("/tmp/qm-empty", b"", T).unwrap();
    assert_eq!(ga.file_read("/tmp/qm-empty", 10, T).unwrap(), b"");
    let err = ga.file_read("/tmp/qm-missing", 10, T).unwrap_err();
    assert!(matches!(err, Error::Qmp { .. }), "{err:?}");
    // Nothing was left open in the agent: it keeps working.
    ga.ping(T).unwrap();
}

#[test]
fn many_threads_share_the_agent() {
    let Some(ga) = agent() else { return };
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                for i in 0..5 {
                    let out = ga.exec(&sh(&format!("echo {t}-{i}")), T).unwrap();
                    assert_eq!(out.stdout, format!("{t}-{i}\n").as_bytes());
                    ga.ping(T).unwrap();
                }
            });
        }
    });
}

#[test]
fn raw_execute_and_agent_errors() {
    let Some(ga) = agent() else { return };
    let reply = ga.execute("guest-no-such-command", None, T).unwrap();
    assert_eq!(reply["error"]["class"], "CommandNotFound", "{reply}");
    match ga.cmd(
        "guest-file-open",
        Some(&json!({"path": "/no/such/dir/f"})),
        T,
    ) {
        Err(Error::Qmp { class, desc }) => {
            assert_eq!(class, "GenericError");
            assert!(desc.contains("/no/such/dir/f"), "{desc}");
        }
        other => panic!("{other:?}"),
    }
    let err = ga.cmd("guest-ping", Some(&json!([1])), T).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
}

/// The agent is killed (from the guest, through the agent itself): the next call fails; once
/// it is restarted from the console, calls work again, without a stale reply shifting
/// anything. Then `guest-shutdown` powers the guest off: QMP reports SHUTDOWN from the guest.
#[test]
fn agent_killed_then_restarted_then_guest_shutdown() {
    let args = qemu_args(&linux_guest());
    let vm = Machine::new(vm::qemu());
    vm.add_args(args);
    vm.set_console(None, 0);
    let dir = vm::scratch();
    let console_log = dir.path().join("console.log");
    vm.set_console_log(Some(console_log.clone()));
    // The unix-path channel here (the shared guest uses the socketpair).
    vm.set_guest_agent(Some(AgentChannel::Unix(None)));
    vm.launch().unwrap();
    let ga = vm.agent().unwrap();
    if let Err(e) = ga.sync(BOOT) {
        let _ = vm.kill();
        panic!(
            "sync after boot: {e}\nQEMU exit code {:?}, log: {:?}\nconsole: {}",
            vm.exitcode(),
            vm.get_log(),
            String::from_utf8_lossy(&std::fs::read(&console_log).unwrap_or_default())
        );
    }
    assert_eq!(ga.exec(&Exec::new("true"), T).unwrap().exit_code, Some(0));

    // qga-stop from a background shell, so the exec itself completes.
    let out = ga.exec(
        &sh(&format!(
            "(sleep 1; {AGENT_STOP}) </dev/null >/dev/null 2>&1 &"
        )),
        T,
    );
    assert_eq!(out.unwrap().exit_code, Some(0));
    // Calls fail once the agent is gone (each a short bound, so this loop ends quickly).
    let gone_by = Instant::now() + T;
    let err = loop {
        match ga.ping(Duration::from_secs(2)) {
            Ok(()) => assert!(Instant::now() < gone_by, "the agent never went away"),
            Err(e) => break e,
        }
    };
    // A timeout, or (a ping in flight when the agent died) its port closing.
    assert!(
        matches!(err, Error::Timeout(_) | Error::AgentDisconnected(_)),
        "{err:?}"
    );

    // Restart it from the console; the next call resyncs and gets its own reply.
    let mut console = vm.console().unwrap();
    // qga-stop removes the pid file once the agent is gone: only then can a new one start.
    shell(
        &mut console,
        &format!("while [ -e /run/qemu-ga.pid ]; do usleep 100000; done; {AGENT_START}"),
    );
    ga.sync(T).unwrap();
    let out = ga.exec(&sh("echo back"), T).unwrap();
    assert_eq!(out.stdout, b"back\n");
    ga.ping(T).unwrap();

    // Killed in the middle of a command (stopped first, so the command is surely in flight):
    // QEMU reports the agent's port closed, and the call fails with that, not a timeout.
    shell(&mut console, "kill -STOP $(cat /run/qemu-ga.pid)");
    let blocked = {
        let ga = ga.clone();
        std::thread::spawn(move || ga.ping(T))
    };
    std::thread::sleep(Duration::from_millis(300));
    shell(&mut console, "kill -9 $(cat /run/qemu-ga.pid)");
    let err = blocked.join().unwrap().unwrap_err();
    assert!(matches!(err, Error::AgentDisconnected(_)), "{err:?}");
    assert!(err.to_string().contains("port closed"), "{err}");
    shell(&mut console, AGENT_START);
    assert_eq!(ga.exec(&sh("echo again"), T).unwrap().stdout, b"again\n");
    drop(console);

    ga.shutdown(ShutdownMode::Powerdown, T).unwrap();
    let ev = vm
        .event_wait("SHUTDOWN", Some(&json!({"data": {"guest": true}})), T)
        .unwrap()
        .unwrap();
    assert_eq!(ev["data"]["reason"], "guest-shutdown", "{ev}");
    vm.wait(T).unwrap();
    assert_eq!(vm.exitcode(), Some(0));
    // The machine is gone: the agent says so at once.
    assert!(matches!(ga.ping(T), Err(Error::AgentDisconnected(_))));
}

/// A guest that never starts an agent (here: no guest OS at all): sync times out saying so.
#[test]
fn no_agent_in_the_guest_times_out_with_a_clear_error() {
    let vm = Machine::new(vm::qemu());
    vm.add_args(["-nodefaults", "-machine", "q35", "-accel", "tcg"]);
    vm.set_guest_agent(Some(AgentChannel::SocketPair));
    vm.launch().unwrap();
    let ga = vm.agent().unwrap();
    let err = ga.sync(Duration::from_millis(1500)).unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(err.to_string().contains("is qemu-ga running"), "{err}");
    vm.shutdown(T).unwrap();
    assert!(matches!(ga.ping(T), Err(Error::AgentDisconnected(_))));
    assert!(matches!(vm.agent(), Err(Error::State(_))));
}

/// `guest-shutdown` in reboot mode: QEMU reports the guest's reset, the agent goes away with
/// the old kernel and comes back with the new one, and calls work again without a stale reply
/// from before the reboot shifting anything.
#[test]
fn reboot_then_the_agent_comes_back() {
    let args = qemu_args(&linux_guest());
    let vm = Machine::new(vm::qemu());
    // This guest must reboot, not exit.
    vm.add_args(args.into_iter().filter(|a| a != "-no-reboot"));
    vm.set_guest_agent(Some(AgentChannel::SocketPair));
    vm.launch().unwrap();
    let ga = vm.agent().unwrap();
    ga.sync(BOOT).unwrap();
    ga.file_write("/tmp/before-reboot", b"x", T).unwrap();

    ga.shutdown(ShutdownMode::Reboot, T).unwrap();
    let ev = vm.event_wait("RESET", None, T).unwrap().unwrap();
    assert_eq!(ev["data"]["guest"], true, "{ev}");
    // The first call after the reboot resyncs on its own, within its wait.
    let out = ga
        .exec(&sh("test -e /tmp/before-reboot; echo $?"), BOOT)
        .unwrap();
    assert_eq!(out.stdout, b"1\n", "/tmp survived: no reboot happened");
    assert!(vm.is_running());
    vm.shutdown(T).unwrap();
}

/// The two-phase launch: the agent's arguments end what `prepare_launch` returns, and a
/// caller-composed argv that includes them gets a working channel.
#[test]
fn a_composed_argv_with_the_prepared_arguments_gets_the_agent_channel() {
    let vm = Machine::new(vm::qemu());
    vm.set_guest_agent(Some(AgentChannel::SocketPair));
    let base = vm.prepare_launch().unwrap();
    let port = base
        .iter()
        .position(|a| a.starts_with("virtserialport,"))
        .expect("the agent's port is among the prepared arguments");
    assert_eq!(port, base.len() - 1, "{base:?}");
    let mut argv = vec![vm::qemu()];
    argv.extend(base);
    argv.extend(["-nodefaults", "-machine", "q35", "-accel", "tcg"].map(String::from));
    vm.launch_argv(argv, &[], T).unwrap();
    let ga = vm.agent().unwrap();
    // No guest OS: nobody answers, but the channel is there (QEMU took its end).
    let err = ga.sync(Duration::from_millis(300)).unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    vm.shutdown(T).unwrap();
}
