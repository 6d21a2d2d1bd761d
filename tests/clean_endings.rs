//! A QEMU that ended by itself with status 0 (the guest powered off, a reset under
//! `-no-reboot`) is a clean ending: `shutdown()` and `wait()` succeed and the exit status is 0.
//! A nonzero status or a death by a signal is still an abnormal shutdown.

mod support;

use std::time::{Duration, Instant};

use qm::guest::GuestAction;
use qm::{Error, Machine};
use support::vm::{self, scratch, vm_guest, vm_none, T};

/// Launches a guest that powers off at once, paused until QMP is up (a guest that ends during
/// the handshake would fail the launch on a loaded machine), then lets it run.
fn launch_running(m: &Machine) {
    m.add_args(["-S"]);
    m.launch().unwrap();
    m.cmd("cont", None).unwrap();
}

/// Waits (polling; a bound, never a timing assertion) until QEMU has exited by itself.
fn until_exited(m: &Machine) {
    let until = Instant::now() + T;
    while m.is_running() {
        assert!(Instant::now() < until, "QEMU did not exit by itself");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn shutdown_after_the_guest_powered_off_succeeds_with_status_0() {
    let dir = scratch();
    let m = vm_guest(dir.path(), "bye", GuestAction::Poweroff);
    launch_running(&m);
    until_exited(&m);
    m.shutdown(T).unwrap();
    assert_eq!(m.exitcode(), Some(0));
    // Twice is still fine (nothing launched).
    m.shutdown(T).unwrap();
}

#[test]
fn shutdown_racing_a_guest_poweroff_succeeds() {
    // No wait first: `quit` meets a QEMU that is already leaving (or gone, or still there).
    for _ in 0..5 {
        let dir = scratch();
        let m = vm_guest(dir.path(), "bye", GuestAction::Poweroff);
        launch_running(&m);
        m.shutdown(T).unwrap();
        assert_eq!(m.exitcode(), Some(0));
    }
}

#[test]
fn reset_under_no_reboot_is_a_clean_ending() {
    let dir = scratch();
    let m = vm_none(dir.path());
    m.add_args(["-no-reboot"]);
    m.launch().unwrap();
    m.cmd("system_reset", None).unwrap();
    until_exited(&m);
    m.shutdown(T).unwrap();
    assert_eq!(m.exitcode(), Some(0));
}

#[test]
fn wait_after_the_guest_powered_off_succeeds() {
    let dir = scratch();
    let m = vm_guest(dir.path(), "bye", GuestAction::Poweroff);
    launch_running(&m);
    m.wait(T).unwrap();
    assert_eq!(m.exitcode(), Some(0));
}

#[test]
fn a_nonzero_exit_by_itself_is_still_abnormal() {
    let dir = scratch();
    let m = vm_guest(dir.path(), "x", GuestAction::Exit(1));
    launch_running(&m);
    until_exited(&m);
    let err = m.shutdown(T).unwrap_err();
    assert!(matches!(err, Error::AbnormalShutdown(_)), "{err}");
    assert_eq!(m.exitcode(), Some(3));
}

#[test]
fn a_qemu_killed_by_a_signal_is_still_abnormal() {
    let dir = scratch();
    let m = vm_none(dir.path());
    m.launch().unwrap();
    vm::signal(m.pid().unwrap(), libc::SIGKILL);
    until_exited(&m);
    let err = m.shutdown(T).unwrap_err();
    assert!(matches!(err, Error::AbnormalShutdown(_)), "{err}");
    assert_eq!(m.exitcode(), Some(-libc::SIGKILL));
}
