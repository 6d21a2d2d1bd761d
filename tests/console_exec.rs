//! `console_exec` matches only text that came after the line it sent: an earlier unread echo
//! or prompt can no longer end it (issue 21).

mod support;

use std::time::{Duration, Instant};

use qm::console::{Pattern, Patterns};
use qm::guest::GuestAction;
use support::vm::{self, T};

#[test]
fn exec_never_matches_output_from_before_the_call() {
    let dir = vm::scratch();
    let vm = vm::vm_guest(dir.path(), "echo guest up", GuestAction::Echo);
    vm.set_console(None, 0);
    vm.launch().unwrap();
    vm.console_wait(&"up\r\n".into(), T).unwrap();
    // The echo guest sends "old;" back; nobody consumes it.
    vm.console_send(b"old;", T).unwrap();
    let until = Instant::now() + T;
    while vm.console_stats().unwrap().unread < 4 {
        assert!(Instant::now() < until, "the echo guest did not echo");
        std::thread::sleep(Duration::from_millis(5));
    }
    let p = Patterns::new().success(Pattern::regex(r"[a-z]+;").unwrap());
    let m = vm.console_exec("new", ";", &p, T).unwrap();
    // Before the fix this matched the stale "old;".
    assert_eq!(m.text_lossy(), "new;");
    // The transcript still holds both.
    let all = vm.console_transcript(None).unwrap();
    assert!(String::from_utf8_lossy(&all).ends_with("old;new;"));
    vm.kill().unwrap();
}
