//! `qm::launch_all`: many machines launched from one thread against a real QEMU, each with the
//! result its own `launch` would give it.
#![allow(clippy::needless_range_loop)] // indices name the machines in messages

mod support;
use support::vm;

use std::time::{Duration, Instant};

use qm::{launch_all, Cancel, Error, Machine, MonitorAddress, Wait};
use vm::{processes_with, scratch, script, unique, vm_none, T};

/// A machine whose command line carries `mark` (`-name`), to find its processes.
fn marked(dir: &std::path::Path, mark: &str) -> Machine {
    let m = vm_none(dir);
    m.add_args(["-name", mark]);
    m
}

fn mark(what: &str) -> String {
    format!("qm-batch-{what}-{}-{}", std::process::id(), unique())
}

fn cause(err: &Error) -> &Error {
    match err {
        Error::Launch { cause, .. } => cause,
        other => panic!("expected a launch error, got {other:?}"),
    }
}

fn shut_all(ms: &[Machine]) {
    for m in ms {
        if m.is_running() {
            m.shutdown(T).unwrap();
        }
    }
}

#[test]
fn four_machines_launched_at_once_all_answer() {
    let dir = scratch();
    let ms: Vec<Machine> = (0..4).map(|_| vm_none(dir.path())).collect();
    // Every kind of monitor, and a console: each waits for its own readiness.
    ms[1].set_monitor_address(MonitorAddress::Unix(None));
    ms[2].set_monitor_address(MonitorAddress::Tcp {
        host: "127.0.0.1".into(),
        port: 0,
    });
    ms[3].set_console(None, 0);
    let refs: Vec<&Machine> = ms.iter().collect();
    let results = launch_all(&refs, T);
    assert_eq!(results.len(), 4);
    for (i, (m, r)) in ms.iter().zip(&results).enumerate() {
        assert!(r.is_ok(), "machine {i}: {r:?}");
        let status = m.cmd("query-status", None).unwrap();
        assert_eq!(status["status"], "running", "machine {i}: {status}");
    }
    let pids: Vec<u32> = ms.iter().map(|m| m.pid().unwrap()).collect();
    shut_all(&ms);
    for pid in pids {
        assert!(!vm::pid_exists(pid), "pid {pid} left");
    }
}

#[test]
fn a_bad_argument_fails_only_its_own_machine() {
    let dir = scratch();
    let ms: Vec<Machine> = (0..4).map(|_| vm_none(dir.path())).collect();
    ms[2].add_args(["-no-such-option-for-batch"]);
    let refs: Vec<&Machine> = ms.iter().collect();
    let results = launch_all(&refs, T);
    match &results[2] {
        Err(Error::Launch {
            exitcode, output, ..
        }) => {
            assert_eq!(*exitcode, Some(1), "{output}");
            assert!(output.contains("no-such-option-for-batch"), "{output}");
        }
        other => panic!("machine 2: expected a launch error, got {other:?}"),
    }
    assert!(!ms[2].is_running());
    for i in [0, 1, 3] {
        assert!(results[i].is_ok(), "machine {i}: {:?}", results[i]);
        ms[i].cmd("query-status", None).unwrap();
    }
    shut_all(&ms);
}

#[test]
fn an_already_launched_machine_gets_state_and_the_others_go_on() {
    let dir = scratch();
    let ms: Vec<Machine> = (0..3).map(|_| vm_none(dir.path())).collect();
    ms[1].launch().unwrap();
    let pid = ms[1].pid();
    let refs: Vec<&Machine> = ms.iter().collect();
    let results = launch_all(&refs, T);
    assert!(
        matches!(results[1], Err(Error::State(_))),
        "{:?}",
        results[1]
    );
    // Still the same run, untouched.
    assert_eq!(ms[1].pid(), pid);
    ms[1].cmd("query-status", None).unwrap();
    for i in [0, 2] {
        assert!(results[i].is_ok(), "machine {i}: {:?}", results[i]);
    }
    shut_all(&ms);
}

#[test]
fn the_same_machine_twice_is_launched_once() {
    let dir = scratch();
    let a = vm_none(dir.path());
    let b = vm_none(dir.path());
    let results = launch_all(&[&a, &b, &a], T);
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(results[1].is_ok(), "{:?}", results[1]);
    match &results[2] {
        Err(Error::Invalid(msg)) => assert!(msg.contains("machines[0]"), "{msg}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    a.cmd("query-status", None).unwrap();
    shut_all(&[a, b]);
}

#[test]
fn a_fired_token_launches_nothing() {
    let dir = scratch();
    let tag = mark("fired");
    let ms: Vec<Machine> = (0..3).map(|_| marked(dir.path(), &tag)).collect();
    let refs: Vec<&Machine> = ms.iter().collect();
    let cancel = Cancel::new();
    cancel.cancel();
    let results = launch_all(&refs, Wait::timeout(T).cancel(&cancel));
    for (i, r) in results.iter().enumerate() {
        assert!(matches!(r, Err(Error::Interrupted)), "machine {i}: {r:?}");
        assert!(!ms[i].is_running());
        assert_eq!(ms[i].pid(), None);
    }
    assert_eq!(processes_with(&tag), Vec::<u32>::new());
}

/// A QEMU that never greets (a wrapper that only sleeps) while the others start.
fn silent(dir: &std::path::Path, tag: &str) -> Machine {
    let m = marked(dir, tag);
    m.set_wrapper([script(dir, "sleep 60").to_string_lossy().into_owned()]);
    m
}

#[test]
fn a_token_fired_during_the_batch_interrupts_the_rest_and_leaves_nothing_running() {
    let dir = scratch();
    let tag = mark("cancel");
    let mut ms: Vec<Machine> = (0..3).map(|_| marked(dir.path(), &tag)).collect();
    ms.insert(0, silent(dir.path(), &tag));
    let refs: Vec<&Machine> = ms.iter().collect();
    let cancel = Cancel::new();
    let firing = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            cancel.cancel();
        })
    };
    let started = Instant::now();
    let results = launch_all(&refs, Wait::forever().cancel(&cancel));
    firing.join().unwrap();
    assert!(started.elapsed() < T, "{:?}", started.elapsed());
    assert!(
        matches!(cause(results[0].as_ref().unwrap_err()), Error::Interrupted),
        "{:?}",
        results[0]
    );
    assert!(!ms[0].is_running());
    // The others were ready long before the token fired.
    for i in 1..4 {
        assert!(results[i].is_ok(), "machine {i}: {:?}", results[i]);
    }
    shut_all(&ms);
    assert_eq!(processes_with(&tag), Vec::<u32>::new());
}

#[test]
fn a_qemu_that_never_greets_does_not_hold_up_the_others() {
    let dir = scratch();
    let tag = mark("slow");
    let ms = [
        silent(dir.path(), &tag),
        marked(dir.path(), &tag),
        marked(dir.path(), &tag),
    ];
    let refs: Vec<&Machine> = ms.iter().collect();
    let results = launch_all(&refs, Duration::from_secs(5));
    assert!(
        matches!(cause(results[0].as_ref().unwrap_err()), Error::Timeout(_)),
        "{:?}",
        results[0]
    );
    for i in 1..3 {
        assert!(results[i].is_ok(), "machine {i}: {:?}", results[i]);
        ms[i].cmd("query-status", None).unwrap();
    }
    shut_all(&ms);
    assert_eq!(processes_with(&tag), Vec::<u32>::new());
}

#[test]
fn the_default_wait_is_the_largest_qmp_timer() {
    let dir = scratch();
    let tag = mark("timer");
    let slow = silent(dir.path(), &tag);
    slow.set_qmp_timer(Some(Duration::from_millis(500)));
    let other = marked(dir.path(), &tag);
    other.set_qmp_timer(Some(Duration::from_secs(3)));
    let started = Instant::now();
    let results = launch_all(&[&slow, &other], Wait::call_default());
    let took = started.elapsed();
    match results[0].as_ref().unwrap_err() {
        Error::Launch { cause, .. } => match &**cause {
            Error::Timeout(msg) => assert!(msg.contains("3000 ms"), "{msg}"),
            other => panic!("expected a timeout, got {other:?}"),
        },
        other => panic!("expected a launch error, got {other:?}"),
    }
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert!(results[1].is_ok(), "{:?}", results[1]);
    shut_all(&[slow, other]);
    assert_eq!(processes_with(&tag), Vec::<u32>::new());
}
