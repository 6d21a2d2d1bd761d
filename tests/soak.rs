//! Soak: a thousand machine lives in one process — graceful and hard shutdowns, failed
//! launches, every monitor kind, consoles, a guest now and then — and afterwards the process
//! holds what it held before: descriptors, threads, no child processes, no temp dirs, and
//! resident memory within a generous bound. Alone in its own binary, so nothing else runs in
//! the process while it counts.
//!
//! `QM_SOAK_CYCLES` overrides the number of cycles (default 1000).

mod support;
use support::vm;

use std::path::Path;
use std::time::{Duration, Instant};

use qm::guest::GuestAction;
use qm::{Error, MonitorAddress};
use vm::{scratch, vm_guest, vm_none, T};

/// Resident memory may grow this much over the run (allocator caches, not leaks: a leak of
/// even a few hundred bytes per cycle would show as more over 1000 cycles of QMP traffic).
const RSS_GROWTH_LIMIT_KIB: u64 = 16 << 10;

const KINDS: [&str; 10] = [
    "graceful",
    "graceful-unix",
    "graceful-tcp",
    "hard-kill",
    "console-kill",
    "bad-args",
    "dropped-running",
    "killed-behind-back",
    "never-greets",
    "guest-poweroff",
];

/// Which kind cycle `i` is: mostly cheap `-machine none` lives, a guest boot and a
/// never-greeting launch (each ~100 ms and more) once in fifty.
fn kind_of(i: usize) -> usize {
    match i % 50 {
        0 => 9,                // guest-poweroff
        25 => 8,               // never-greets
        n if n % 10 == 7 => 7, // killed-behind-back
        n if n % 10 == 3 => 1, // graceful-unix
        n if n % 10 == 5 => 2, // graceful-tcp
        n if n % 10 == 1 => 3, // hard-kill
        n if n % 10 == 9 => 4, // console-kill
        n if n % 5 == 2 => 5,  // bad-args
        n if n % 10 == 4 => 6, // dropped-running
        _ => 0,                // graceful
    }
}

fn cycle(dir: &Path, kind: usize) {
    match kind {
        0 => {
            let m = vm_none(dir);
            m.launch().unwrap();
            assert_eq!(m.cmd("query-status", None).unwrap()["status"], "running");
            m.cmd("stop", None).unwrap();
            m.event_wait("STOP", None, T).unwrap().unwrap();
            m.shutdown(T).unwrap();
            assert_eq!(m.exitcode(), Some(0));
        }
        1 | 2 => {
            let m = vm_none(dir);
            m.set_monitor_address(if kind == 1 {
                MonitorAddress::Unix(None)
            } else {
                MonitorAddress::Tcp {
                    host: "127.0.0.1".into(),
                    port: 0,
                }
            });
            m.launch().unwrap();
            m.cmd("query-status", None).unwrap();
            m.shutdown(T).unwrap();
        }
        3 => {
            let m = vm_none(dir);
            m.launch().unwrap();
            m.kill().unwrap();
            assert_eq!(m.exitcode(), Some(-libc::SIGKILL));
        }
        4 => {
            let m = vm_none(dir);
            m.set_console(None, 0);
            m.set_drain_console(true);
            m.launch().unwrap();
            drop(m.console().unwrap());
            m.kill().unwrap();
        }
        5 => {
            let m = vm_none(dir);
            m.add_args(["-no-such-option"]);
            match m.launch().unwrap_err() {
                Error::Launch { exitcode, .. } => assert_eq!(exitcode, Some(1)),
                other => panic!("{other}"),
            }
        }
        6 => {
            let m = vm_none(dir);
            m.launch().unwrap();
            m.cmd("query-status", None).unwrap();
            drop(m);
        }
        7 => {
            let m = vm_none(dir);
            m.launch().unwrap();
            vm::signal(m.pid().unwrap(), libc::SIGKILL);
            let err = m.cmd_with("query-status", None, T).unwrap_err();
            assert!(matches!(err, Error::Disconnected(_)), "{err}");
            assert!(matches!(m.shutdown(T), Err(Error::AbnormalShutdown(_))));
        }
        8 => {
            let m = vm_none(dir);
            let wrapper = vm::script(dir, "exec sleep 30");
            m.set_wrapper([wrapper.to_str().unwrap()]);
            m.set_qmp_timer(Some(Duration::from_millis(50)));
            m.launch().unwrap_err();
            std::fs::remove_file(wrapper).unwrap();
        }
        _ => {
            let m = vm_guest(dir, "soak", GuestAction::Poweroff);
            m.set_console(None, 0);
            m.set_drain_console(true);
            // Paused until the handshake is done: a guest that powers off at boot would
            // otherwise race it, and on a loaded machine QEMU exits during the launch.
            m.add_args(["-S"]);
            m.launch().unwrap();
            m.cmd("cont", None).unwrap();
            m.event_wait("SHUTDOWN", None, T).unwrap().unwrap();
            m.wait(T).unwrap();
            for image in vm::entries(dir) {
                if image.extension().is_some_and(|e| e == "img") {
                    std::fs::remove_file(image).unwrap();
                }
            }
        }
    }
}

#[test]
fn a_thousand_lives_leave_the_process_as_they_found_it() {
    let cycles: usize = std::env::var("QM_SOAK_CYCLES")
        .ok()
        .map(|v| v.parse().expect("QM_SOAK_CYCLES is a number"))
        .unwrap_or(1000);
    let dir = scratch();
    // Warm up every kind: the spawner thread, allocator arenas, lazily made statics.
    for round in 0..3 {
        for kind in 0..KINDS.len() {
            cycle(dir.path(), kind);
        }
        let _ = round;
    }
    let (fds, threads) = (vm::open_fds(), vm::thread_count());
    let rss_start = vm::self_status("VmRSS");
    let started = Instant::now();
    let mut per_kind = [(0usize, Duration::ZERO); KINDS.len()];
    for i in 0..cycles {
        let kind = kind_of(i);
        let t = Instant::now();
        cycle(dir.path(), kind);
        per_kind[kind].0 += 1;
        per_kind[kind].1 += t.elapsed();
    }
    let took = started.elapsed();
    let rss_end = vm::self_status("VmRSS");

    println!(
        "soak: {cycles} cycles in {:.1} s ({:.1} ms each); rss start {:.1} MiB, end {:.1} MiB \
         (growth {:+.1} MiB), peak {:.1} MiB",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / cycles.max(1) as f64,
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        (rss_end as f64 - rss_start as f64) / 1024.0,
        vm::self_status("VmHWM") as f64 / 1024.0,
    );
    for (kind, (n, spent)) in per_kind.iter().enumerate() {
        if *n > 0 {
            println!(
                "soak:   {:>20}: {n:>4} cycles, {:.1} ms each",
                KINDS[kind],
                spent.as_secs_f64() * 1000.0 / *n as f64
            );
        }
    }

    assert_eq!(vm::open_fds(), fds, "descriptors leaked");
    assert_eq!(vm::thread_count(), threads, "threads leaked");
    assert_eq!(
        vm::child_pids(),
        Vec::<String>::new(),
        "child processes left"
    );
    assert_eq!(
        vm::machine_temp_dirs(dir.path()),
        Vec::<std::path::PathBuf>::new(),
        "temp dirs left"
    );
    assert_eq!(
        vm::entries(dir.path()),
        Vec::<std::path::PathBuf>::new(),
        "files left in the base temp dir"
    );
    assert!(
        rss_end.saturating_sub(rss_start) < RSS_GROWTH_LIMIT_KIB,
        "resident memory grew by {:.1} MiB over {cycles} cycles",
        (rss_end - rss_start) as f64 / 1024.0
    );
}
