//! Console interaction against real QEMU: the 512-byte guest (fast, every run) and the Linux
//! test guest (one boot shared by the steps of one test). The fake-peer cases (floods, reads
//! split at every byte) are unit tests in src/console/tests.rs.

mod support;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use qm::console::{Pattern, Patterns};
use qm::guest::GuestAction;
use qm::{Cancel, Error, Machine, Wait};
use support::linux_guest::{kernel_release, linux_guest, qemu_args, PROMPT, READY};
use support::vm::{self, vm_guest, T};

// ---- the 512-byte guest ---------------------------------------------------------------------

#[test]
fn echo_guest_wait_exec_interrupt_then_poweroff_is_eof_and_shutdown() {
    // With and without the (now always-on) drain flag: the API behaves the same.
    for drain in [false, true] {
        let dir = vm::scratch();
        let vm = vm_guest(dir.path(), "echo guest up", GuestAction::Echo);
        vm.set_console(None, 0);
        vm.set_drain_console(drain);
        vm.launch().unwrap();

        let m = vm.console_wait(&"up\r\n".into(), T).unwrap();
        assert_eq!(m.text, b"echo guest up\r\n");
        assert_eq!((m.index, m.dropped), (0, 0));

        // exec: the guest echoes the "command"; the line ending is the caller's.
        let p = Patterns::new()
            .success(Pattern::regex(r"hel+o;").unwrap())
            .success("never");
        let m = vm.console_exec("hello", ";", &p, T).unwrap();
        assert_eq!((m.index, m.text_lossy().as_ref()), (0, "hello;"));

        // interrupt_until: press "k" until three of them came back.
        let m = vm
            .console_interrupt_until(b"k", Duration::from_millis(20), &"kkk".into(), T)
            .unwrap();
        assert!(m.text.ends_with(b"kkk"), "{:?}", m.text_lossy());

        // A pending wait, then the guest powers off ("p"): end of file, at once.
        let handle = vm.console_handle().unwrap();
        let waiter = thread::spawn(move || handle.wait_for(&"never".into(), T));
        thread::sleep(Duration::from_millis(50));
        vm.console_send(b"p", T).unwrap();
        let err = waiter.join().unwrap().unwrap_err();
        assert!(matches!(err, Error::ConsoleClosed { .. }), "{err}");
        let ev = vm.event_wait("SHUTDOWN", None, T).unwrap().unwrap();
        assert_eq!(ev["data"]["guest"], true, "{ev}");
        vm.wait(T).unwrap();
        // After the shutdown: waits fail at once, the transcript stays.
        assert!(matches!(
            vm.console_wait(&"x".into(), T),
            Err(Error::ConsoleClosed { .. })
        ));
        let transcript = String::from_utf8(vm.console_transcript(None).unwrap()).unwrap();
        assert!(
            transcript.starts_with("echo guest up\r\nhello;k"),
            "{transcript:?}"
        );
        assert_eq!(vm.console_transcript(Some(3)).unwrap(), b"kkk");
    }
}

#[test]
fn console_log_and_transcript_hold_every_byte_when_nobody_waits() {
    let dir = vm::scratch();
    let log = dir.path().join("console.log");
    let vm = vm_guest(dir.path(), "logged and kept", GuestAction::Poweroff);
    vm.set_console(None, 0);
    vm.set_console_log(Some(log.clone()));
    vm.launch().unwrap();
    vm.wait(T).unwrap();
    assert_eq!(std::fs::read(&log).unwrap(), b"logged and kept\r\n");
    assert_eq!(vm.console_transcript(None).unwrap(), b"logged and kept\r\n");
    let stats = vm.console_stats().unwrap();
    assert_eq!((stats.received, stats.unread, stats.dropped), (17, 17, 0));
    assert!(stats.closed);
    // What no wait consumed before the end of file is still there for one.
    assert_eq!(
        vm.console_wait(&"kept".into(), T).unwrap().text,
        b"logged and kept"
    );
}

#[test]
fn no_console_is_a_state_error_and_no_default_wait() {
    let dir = vm::scratch();
    let vm = vm_guest(dir.path(), "x", GuestAction::Halt);
    assert!(matches!(
        vm.console_wait(&"x".into(), T),
        Err(Error::State(_))
    ));
    vm.set_console(None, 0);
    vm.launch().unwrap();
    assert!(matches!(
        vm.console_wait(&"x\r\n".into(), Wait::call_default()),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        vm.console_wait(&Patterns::new(), T),
        Err(Error::Invalid(_))
    ));
    vm.kill().unwrap();
}

// ---- the Linux guest -------------------------------------------------------------------------

/// Bound for a boot under TCG on a loaded machine (~4-8 s here): a failure, not a timing check.
const BOOT: Duration = Duration::from_secs(180);

fn prompt() -> Patterns {
    Patterns::new().success(PROMPT)
}

/// The output lines of a command run with exec-and-wait (echo, escapes and prompt removed).
fn lines(m: &qm::console::Match, line: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(m.before()).replace("\x1b[6n", "");
    let mut it = text.split("\r\n");
    assert_eq!(
        it.next(),
        Some(line),
        "the command is echoed first: {text:?}"
    );
    it.filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

/// Every step shares one boot: banner and prompt, exec-and-wait, a failure pattern, a timeout's
/// tail, cancel from another thread, then `poweroff -f` → end of file for a pending wait and a
/// SHUTDOWN event, and the console log holds every byte of the session.
#[test]
fn linux_guest_session() {
    let guest = linux_guest();
    let release = kernel_release(&guest);
    let dir = vm::scratch();
    let log = dir.path().join("console.log");
    let vm = Machine::new(vm::qemu());
    vm.set_base_temp_dir(dir.path());
    vm.set_console(None, 0);
    vm.set_console_log(Some(log.clone()));
    vm.add_args(qemu_args(&guest));
    vm.launch().unwrap();

    // Boot: the ready line, failing at once on a kernel panic, then the prompt.
    let boot = Patterns::new()
        .success(READY)
        .failure(Pattern::regex(r"Kernel panic[^\r\n]*").unwrap());
    let m = vm.console_wait(&boot, BOOT).unwrap();
    assert!(m.matched() == READY.as_bytes());
    vm.console_wait(&prompt(), T).unwrap();

    // exec-and-wait.
    let m = vm.console_exec("uname -r", "\n", &prompt(), T).unwrap();
    assert_eq!(lines(&m, "uname -r"), [release.as_str()]);
    let m = vm
        .console_exec("echo $((6*7))", "\n", &prompt(), T)
        .unwrap();
    assert_eq!(lines(&m, "echo $((6*7))"), ["42"]);

    // A failure pattern: the command's error text.
    let p = prompt().failure(Pattern::regex(r"No such file or directory").unwrap());
    match vm.console_exec("ls /nonexistent", "\n", &p, T) {
        Err(Error::ConsoleFailure { index, text, .. }) => {
            assert_eq!(index, 0);
            assert!(text.contains("/nonexistent"), "{text:?}");
        }
        other => panic!("{other:?}"),
    }
    vm.console_wait(&prompt(), T).unwrap();

    // A timeout names the patterns and the time, and carries the tail (which stays unread).
    vm.console_send_line("echo tail-$((1+1))", "\n", T).unwrap();
    vm.console_wait(&"tail-2\r\n".into(), T).unwrap();
    let err = vm
        .console_wait(&"never-printed".into(), Duration::from_millis(300))
        .unwrap_err();
    match &err {
        Error::ConsoleTimeout {
            waiting_for,
            waited,
            tail,
        } => {
            assert_eq!(waiting_for, "\"never-printed\"");
            assert!(*waited >= Duration::from_millis(300));
            assert!(tail.contains(PROMPT), "{tail:?}");
        }
        other => panic!("{other:?}"),
    }
    vm.console_wait(&prompt(), Duration::ZERO).unwrap();

    // Cancel from another thread ends a wait that would last forever.
    let cancel = Cancel::new();
    let handle = vm.console_handle().unwrap();
    let waiter = {
        let cancel = cancel.clone();
        thread::spawn(move || {
            let r = handle.wait_for(&"never".into(), Wait::forever().cancel(&cancel));
            (r, Instant::now())
        })
    };
    thread::sleep(Duration::from_millis(100));
    let fired = Instant::now();
    cancel.cancel();
    let (r, ended) = waiter.join().unwrap();
    assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
    assert!(ended.duration_since(fired) < T / 2);

    // poweroff -f: a pending wait gets end of file, QMP a SHUTDOWN from the guest.
    let handle: Arc<qm::console::Console> = vm.console_handle().unwrap();
    let waiter = thread::spawn(move || handle.wait_for(&"never".into(), T));
    vm.console_send_line("poweroff -f", "\n", T).unwrap();
    let err = waiter.join().unwrap().unwrap_err();
    assert!(matches!(err, Error::ConsoleClosed { .. }), "{err}");
    let ev = vm.event_wait("SHUTDOWN", None, T).unwrap().unwrap();
    assert_eq!(ev["data"]["guest"], true, "{ev}");
    vm.wait(T).unwrap();

    // The log file holds every byte of the session, and so does the transcript (under 1 MiB).
    let logged = std::fs::read(&log).unwrap();
    let stats = vm.console_stats().unwrap();
    assert_eq!(logged.len() as u64, stats.received);
    assert_eq!(logged, vm.console_transcript(None).unwrap());
    assert_eq!(stats.dropped, 0);
    let text = String::from_utf8_lossy(&logged);
    for needle in [READY, "uname -r", release.as_str(), "42", "poweroff -f"] {
        assert!(text.contains(needle), "{needle:?} not in the log");
    }
}
