//! Issue #12's smaller points, against a real QEMU (or, where a fault real QEMU will not
//! produce on demand is needed, a Python stand-in run as the QEMU process): the event queue's
//! cap, and an end of stream in the middle of a reply.

mod support;
use support::vm;

use std::time::Duration;

use qm::guest::GuestAction;
use qm::{Error, MonitorAddress};
use vm::{scratch, vm_none, T};

/// With a cap, the oldest events go; the next reader is told once, then reads the newest.
#[test]
fn a_capped_queue_drops_the_oldest_and_says_so_once() {
    let dir = scratch();
    let m = vm_none(dir.path());
    m.set_max_queued_events(Some(3));
    m.launch().unwrap();
    for _ in 0..4 {
        m.cmd("stop", None).unwrap();
        m.cmd("cont", None).unwrap();
    }
    // STOP RESUME x 4, each before its command's reply: the first five were dropped.
    assert_eq!(m.dropped_events(), 5);
    match m.event_wait("STOP", None, T) {
        Err(Error::EventsDropped { dropped: 5, max: 3 }) => {}
        other => panic!("{other:?}"),
    }
    let names: Vec<_> = m
        .get_qmp_events(Duration::ZERO)
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["RESUME", "STOP", "RESUME"]);
    // Lowering the cap under what is queued drops at once; lifting it drops nothing more.
    m.cmd("stop", None).unwrap();
    m.cmd("cont", None).unwrap();
    m.set_max_queued_events(Some(1));
    assert_eq!(m.dropped_events(), 6);
    assert!(matches!(
        m.get_qmp_event(Duration::ZERO),
        Err(Error::EventsDropped { dropped: 1, .. })
    ));
    assert_eq!(
        m.get_qmp_event(Duration::ZERO).unwrap().unwrap()["event"],
        "RESUME"
    );
    m.set_max_queued_events(None);
    for _ in 0..3 {
        m.cmd("stop", None).unwrap();
        m.cmd("cont", None).unwrap();
    }
    assert_eq!(m.get_qmp_events(Duration::ZERO).unwrap().len(), 6);
    assert_eq!(m.dropped_events(), 6);
    m.shutdown(T).unwrap();
}

/// A Python stand-in for QEMU on a unix monitor: greets, accepts qmp_capabilities, answers the
/// next command with the first half of a reply, then runs `then`.
fn half_a_reply_then(then: &str) -> Vec<String> {
    let script = format!(
        r#"
import os, re, socket, sys, time
mon = next(a for a in sys.argv[1:] if a.startswith('socket,id=mon,'))
opts = dict(kv.split('=', 1) for kv in mon.split(',')[1:])
s = socket.socket(socket.AF_UNIX)
s.connect(opts['path'])
s.sendall(b'{{"QMP": {{"version": {{"qemu": {{"micro": 0, "minor": 2, "major": 7}}, "package": ""}}, "capabilities": []}}}}\r\n')
def command():
    data = b''
    while not re.search(rb'"id":\d+}}$', data):
        data += s.recv(65536)
    return int(re.search(rb'"id":(\d+)}}$', data).group(1))
s.sendall(b'{{"return": {{}}, "id": %d}}\r\n' % command())
command()
s.sendall(b'{{"return": {{"status": "runn')
{then}
"#
    );
    vec!["python3".into(), "-c".into(), script]
}

/// QEMU exiting in the middle of a reply is a disconnection, not a protocol fault.
#[test]
fn eof_mid_reply_because_qemu_exited_is_disconnected() {
    let dir = scratch();
    let m = vm_none(dir.path());
    m.set_monitor_address(MonitorAddress::Unix(None));
    m.set_wrapper(half_a_reply_then("os._exit(0)"));
    m.launch().unwrap();
    match m.cmd("query-status", None) {
        Err(Error::Disconnected(why)) => assert!(why.contains("QEMU exited"), "{why}"),
        other => panic!("{other:?}"),
    }
    // QEMU's exit was its own: a wait, not a kill.
    m.wait(T).unwrap();
    assert_eq!(m.exitcode(), Some(0));
}

/// A peer that breaks off a message and hangs up while it lives broke the protocol.
#[test]
fn eof_mid_reply_from_a_live_peer_is_a_protocol_error() {
    let dir = scratch();
    let m = vm_none(dir.path());
    m.set_monitor_address(MonitorAddress::Unix(None));
    m.set_wrapper(half_a_reply_then("s.close()\ntime.sleep(600)"));
    m.launch().unwrap();
    match m.cmd("query-status", None) {
        Err(Error::Protocol(why)) => assert!(why.contains("middle of a message"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(m.is_running());
    m.kill().unwrap();
}

/// The console log starts empty at each launch, as the seed's `ConsoleSocket` opens it ("w").
#[test]
fn the_console_log_is_truncated_at_each_launch() {
    let dir = scratch();
    let console_log = dir.path().join("console.log");
    std::fs::write(&console_log, "from an earlier run\n").unwrap();
    let vm = vm::vm_guest(dir.path(), "this run", GuestAction::Poweroff);
    vm.set_console(None, 0);
    vm.set_console_log(Some(console_log.clone()));
    // Paused until QMP is up (a guest that powers off at boot could end QEMU mid-handshake).
    vm.add_args(["-S"]);
    for _ in 0..2 {
        vm.launch().unwrap();
        vm.cmd("cont", None).unwrap();
        vm.event_wait("SHUTDOWN", None, T).unwrap();
        vm.wait(T).unwrap();
        assert_eq!(
            std::fs::read_to_string(&console_log).unwrap(),
            "this run\r\n"
        );
    }
}

/// Only names that could leave the directory are refused.
#[test]
fn set_name_refuses_only_names_that_leave_the_directory() {
    let m = qm::Machine::new(vm::qemu());
    for bad in ["", ".", "..", "a/b", "/x", "nul\0"] {
        assert!(
            matches!(m.set_name(bad), Err(Error::Invalid(_))),
            "{bad:?} accepted"
        );
    }
    for good in ["x..y", "...", "..x", "v1.2..3"] {
        m.set_name(good).unwrap();
        assert_eq!(m.name(), good);
    }
}
