//! The guest channels under faults, on the real Linux guest (issue #19, item 2): an agent frozen
//! in the middle of a call, an agent restarted during an exec, a console flooded while a wait
//! runs, a kernel panic during a console wait and during an agent call, and QEMU killed while a
//! console wait and an agent call are pending. Each wait must end — at its timeout, or at once
//! with an error that says what happened — and the channel must be usable again where the guest
//! still is, with no stale reply ever taken for a new one.

mod support;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use qm::console::{Pattern, Patterns};
use qm::{AgentChannel, Error, Exec, GuestAgent, Machine};
use support::linux_guest::{linux_guest, qemu_args, AGENT_START, AGENT_STOP, PROMPT, READY};
use support::vm;

/// Bound of a boot under TCG on a loaded 2-core machine: a failure bound, not a timing check.
const BOOT: Duration = Duration::from_secs(180);
/// Bound of one step that should take well under a second.
const T: Duration = Duration::from_secs(60);

/// A booted Linux guest with a console (logged to a file) and the agent on a socketpair.
struct Guest {
    vm: Machine,
    agent: Arc<GuestAgent>,
    _dir: tempfile::TempDir,
}

fn boot(extra: &[&str]) -> Guest {
    let dir = vm::scratch();
    let console_log = dir.path().join("console.log");
    let vm = Machine::new(vm::qemu());
    vm.set_base_temp_dir(dir.path());
    vm.add_args(qemu_args(&linux_guest()));
    vm.add_args(extra.iter().copied());
    vm.set_console(None, 0);
    vm.set_console_log(Some(console_log.clone()));
    vm.set_guest_agent(Some(AgentChannel::SocketPair));
    vm.launch().unwrap();
    let ready = Patterns::new()
        .success(READY)
        .failure(Pattern::regex(r"Kernel panic[^\r\n]*").unwrap());
    if let Err(e) = vm.console_wait(&ready, BOOT) {
        let _ = vm.kill();
        panic!("boot: {e}; log: {:?}", vm.get_log());
    }
    vm.console_wait(&PROMPT.into(), T).unwrap();
    let agent = vm.agent().unwrap();
    agent.sync(BOOT).unwrap();
    Guest {
        vm,
        agent,
        _dir: dir,
    }
}

impl Guest {
    /// Runs `command` at the shell prompt and waits for a marker only the shell computes
    /// (so the echo of the command line does not match), then for the next prompt.
    fn shell(&self, command: &str) {
        let line = format!("{command}; echo qm-fault-$((40+2))");
        self.vm.console_send_line(&line, "\n", T).unwrap();
        self.vm
            .console_wait(&"qm-fault-42\r\n".into(), T)
            .unwrap_or_else(|e| panic!("{command}: {e}"));
        self.vm.console_wait(&PROMPT.into(), T).unwrap();
    }
}

fn sh(script: &str) -> Exec {
    Exec::new("sh").args(["-c", script])
}

/// Frozen mid-call (SIGSTOP): the call ends at its timeout; once the agent runs again its late
/// reply to the abandoned call is in the channel, and the next call still gets its own reply
/// (guest-sync-delimited discards what came before).
#[test]
fn agent_frozen_mid_call_times_out_then_the_next_call_gets_its_own_reply() {
    let g = boot(&[]);
    g.shell("kill -STOP $(cat /run/qemu-ga.pid)");
    let started = Instant::now();
    let err = g.agent.get_osinfo(Duration::from_secs(2)).unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(started.elapsed() >= Duration::from_secs(2), "{err}");
    // Several abandoned calls, each of a different kind, so any stale reply would show.
    let _ = g.agent.ping(Duration::from_millis(300)).unwrap_err();
    let _ = g.agent.get_time(Duration::from_millis(300)).unwrap_err();
    g.shell("kill -CONT $(cat /run/qemu-ga.pid)");
    // The stale replies (osinfo, {}, a time) are now on their way: each call must get its own.
    for _ in 0..5 {
        let ns = g.agent.get_time(T).unwrap();
        assert!(ns > 1_577_836_800_000_000_000, "{ns}");
        let info = g.agent.get_osinfo(T).unwrap();
        assert_eq!(info["id"], "qm-guest", "{info}");
        g.agent.ping(T).unwrap();
    }
    g.vm.shutdown(T).ok();
}

/// The agent restarted while an exec is being polled: the exec fails with an error that names
/// the agent (never hangs, never returns another process's status), and calls work afterwards.
#[test]
fn agent_restarted_during_an_exec() {
    let g = boot(&[]);
    let exec = {
        let agent = g.agent.clone();
        thread::spawn(move || agent.exec(&sh("sleep 4; echo finished"), T))
    };
    // Let the exec start and its status be polled, then restart the agent from the console.
    thread::sleep(Duration::from_millis(800));
    g.shell(&format!(
        "{AGENT_STOP}; while [ -e /run/qemu-ga.pid ]; do usleep 100000; done; {AGENT_START}"
    ));
    match exec.join().unwrap() {
        // The restart may land after the exec finished (a slow, loaded machine): then its output
        // must be the real one.
        Ok(out) => assert_eq!(out.stdout, b"finished\n", "{out:?}"),
        // The agent's port closed under the call (named as the agent's, not QMP's), or the
        // new agent does not know the old pid.
        Err(e) => {
            assert!(
                matches!(e, Error::AgentDisconnected(_) | Error::Qmp { .. }),
                "{e:?}"
            );
            assert!(
                e.to_string().contains("agent") || matches!(e, Error::Qmp { .. }),
                "{e}"
            );
        }
    }
    g.agent.sync(T).unwrap();
    let out = g.agent.exec(&sh("echo after-restart"), T).unwrap();
    assert_eq!(out.stdout, b"after-restart\n");
    g.vm.shutdown(T).ok();
}

/// A kernel panic while a console wait runs (a pvpanic device reports it to QEMU): the wait
/// ends at once with an error that says the guest panicked, long before its timeout.
#[test]
fn kernel_panic_during_a_console_wait_ends_it_at_once() {
    let g = boot(&["-device", "pvpanic"]);
    let waiter = {
        let console = g.vm.console_handle().unwrap();
        thread::spawn(move || {
            let started = Instant::now();
            (
                console.wait_for(&"never-printed".into(), Duration::from_secs(600)),
                started.elapsed(),
            )
        })
    };
    thread::sleep(Duration::from_millis(300));
    g.vm.console_send_line("echo c > /proc/sysrq-trigger", "\n", T)
        .unwrap();
    let (result, waited) = waiter.join().unwrap();
    let err = result.unwrap_err();
    assert!(waited < Duration::from_secs(120), "waited {waited:?}");
    let text = format!("{err}");
    assert!(
        text.contains("panic")
            || err
                .console_text()
                .unwrap_or_default()
                .contains("Kernel panic"),
        "{err:?}"
    );
    // QEMU's default panic action ends it; the event it sent first is still there to read.
    let ev = g.vm.event_wait("GUEST_PANICKED", None, T).unwrap().unwrap();
    assert_eq!(ev["data"]["action"], "poweroff", "{ev}");
    // QEMU ended with status 0, but after a panic: not a clean ending.
    match g.vm.shutdown(T).unwrap_err() {
        Error::AbnormalShutdown(cause) => {
            assert!(matches!(*cause, Error::GuestPanicked(_)), "{cause:?}")
        }
        other => panic!("{other:?}"),
    }
}

/// A kernel panic while an agent call is pending: the call ends at once (the machine's end
/// closes the agent's channel), not at its timeout.
#[test]
fn kernel_panic_during_an_agent_call_ends_it_at_once() {
    let g = boot(&["-device", "pvpanic"]);
    let call = {
        let agent = g.agent.clone();
        thread::spawn(move || {
            let started = Instant::now();
            let r = agent.exec(&sh("sleep 600"), Duration::from_secs(600));
            (r, started.elapsed())
        })
    };
    thread::sleep(Duration::from_millis(800));
    g.vm.console_send_line("echo c > /proc/sysrq-trigger", "\n", T)
        .unwrap();
    let (result, waited) = call.join().unwrap();
    let err = result.unwrap_err();
    assert!(
        waited < Duration::from_secs(120),
        "waited {waited:?}: {err}"
    );
    assert!(matches!(err, Error::AgentDisconnected(_)), "{err:?}");
    // The event is not taken from the queue by the check: shutdown sees the panic, and the
    // event is still there to read.
    let err = g.vm.shutdown(T).unwrap_err();
    assert!(err.to_string().contains("the guest panicked"), "{err}");
    assert!(g
        .vm
        .event_wait("GUEST_PANICKED", None, T)
        .unwrap()
        .is_some());
}

/// QEMU killed (SIGKILL from outside) while a console wait and an agent call are pending: both
/// end at once with errors, and shutdown reports the abnormal end.
#[test]
fn qemu_killed_during_a_console_wait_and_an_agent_call() {
    let g = boot(&[]);
    let console = g.vm.console_handle().unwrap();
    let waiter =
        thread::spawn(move || console.wait_for(&"never-printed".into(), Duration::from_secs(600)));
    let agent = g.agent.clone();
    let call = thread::spawn(move || agent.exec(&sh("sleep 600"), Duration::from_secs(600)));
    thread::sleep(Duration::from_millis(800));
    let pid = g.vm.pid().unwrap();
    let started = Instant::now();
    // kill(1), as an outside actor would.
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let werr = waiter.join().unwrap().unwrap_err();
    let cerr = call.join().unwrap().unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        matches!(werr, Error::ConsoleClosed { .. }),
        "console wait: {werr:?}"
    );
    assert!(
        matches!(cerr, Error::AgentDisconnected(_)),
        "agent call: {cerr:?}"
    );
    let err = g.vm.shutdown(T).unwrap_err();
    assert!(matches!(err, Error::AbnormalShutdown(_)), "{err:?}");
    assert_eq!(g.vm.exitcode(), Some(-9));
}
