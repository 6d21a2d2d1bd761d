//! A command stuck writing into a full monitor socket must not hold up anyone else.
//!
//! The scenario of issue #12.2: QEMU is stopped (SIGSTOP), so it reads nothing; one thread
//! sends a 16 MiB command, which fills the socket and stays stuck; other threads then run
//! commands with timeouts or cancel tokens, and a graceful shutdown with a timeout. Each must
//! return within its own bound. A rescuer SIGKILLs QEMU if a test overruns, so a regression
//! fails with the time it took instead of hanging.
//!
//! The bounds are generous for a loaded 2-core machine (a timeout of 500 ms must return in
//! 1.5 s) but a caller that waits for the stuck writer fails them: before the fix, such a
//! caller returned only when the writer gave up, or never.

mod support;
use support::vm;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use qm::{Cancel, Error, Machine, Wait};
use serde_json::{json, Value};
use vm::{scratch, vm_none};

/// How late a bounded call may return, on a busy machine.
const SLACK: Duration = Duration::from_millis(1000);
/// After this, the rescuer kills QEMU: every call returns, the test fails with its timings.
const RESCUE: Duration = Duration::from_secs(15);

/// A `human-monitor-command` whose arguments are `size` bytes: far more than the socket holds.
fn big_command(size: usize) -> Value {
    json!({ "command-line": "x".repeat(size) })
}

struct Stuck {
    m: Arc<Machine>,
    pid: u32,
    writer: Option<thread::JoinHandle<(qm::Result<Value>, Duration)>>,
    writer_cancel: Cancel,
    rescued: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

/// A stopped QEMU with a thread stuck sending a `size`-byte command (waiting forever, until
/// its token fires).
fn stuck_writer(size: usize) -> (tempfile::TempDir, Stuck) {
    let dir = scratch();
    let m = Arc::new(vm_none(dir.path()));
    m.launch().unwrap();
    let pid = m.pid().unwrap();
    vm::signal(pid, libc::SIGSTOP);
    let writer_cancel = Cancel::new();
    let writer = {
        let (m, cancel) = (m.clone(), writer_cancel.clone());
        let args = big_command(size);
        thread::spawn(move || {
            let started = Instant::now();
            let r = m.qmp_with(
                "human-monitor-command",
                Some(&args),
                Wait::forever().cancel(&cancel),
            );
            (r, started.elapsed())
        })
    };
    // Wait until the writer has filled the socket: then a probe cannot be sent at all.
    let filled = Instant::now();
    loop {
        match m.cmd_with("query-status", None, Duration::from_millis(100)) {
            Err(Error::Timeout(why)) if why.contains("nothing was sent") => break,
            Err(Error::Timeout(_)) => {}
            other => panic!("a probe behind the writer: {other:?}"),
        }
        assert!(
            filled.elapsed() < RESCUE,
            "the writer never filled the socket"
        );
    }
    let rescued = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    {
        let (rescued, done) = (rescued.clone(), done.clone());
        thread::spawn(move || {
            let until = Instant::now() + RESCUE;
            while Instant::now() < until {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
            rescued.store(true, Ordering::SeqCst);
            vm::signal(pid, libc::SIGKILL);
        });
    }
    let stuck = Stuck {
        m,
        pid,
        writer: Some(writer),
        writer_cancel,
        rescued,
        done,
    };
    (dir, stuck)
}

impl Stuck {
    /// Ends the scenario: QEMU killed, the writer joined (it fails: disconnected).
    fn finish(mut self) -> qm::Result<Value> {
        self.done.store(true, Ordering::SeqCst);
        let _ = self.m.kill();
        let (r, _) = self.writer.take().unwrap().join().unwrap();
        assert!(
            !self.rescued.load(Ordering::SeqCst),
            "QEMU had to be killed to end the test"
        );
        r
    }
}

/// Runs `f` on `n` threads at once; returns each result with the time it took.
fn on_threads<T: Send + 'static>(
    n: usize,
    f: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<(T, Duration)> {
    let f = Arc::new(f);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let f = f.clone();
            thread::spawn(move || {
                let started = Instant::now();
                let r = f(i);
                (r, started.elapsed())
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn timeouts_fire_on_time_behind_a_blocked_writer() {
    let (_dir, stuck) = stuck_writer(16 << 20);
    let m = stuck.m.clone();
    let timeout = Duration::from_millis(500);
    let results = on_threads(4, move |_| m.cmd_with("query-status", None, timeout));
    for (r, took) in &results {
        eprintln!("query-status with a 500 ms timeout: {took:?}");
        assert!(took < &(timeout + SLACK), "returned after {took:?}");
        match r {
            Err(Error::Timeout(why)) => assert!(why.contains("nothing was sent"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(stuck.finish(), Err(Error::Disconnected(_))));
}

#[test]
fn cancels_fire_on_time_behind_a_blocked_writer() {
    let (_dir, stuck) = stuck_writer(16 << 20);
    let cancel = Cancel::new();
    let fire_at = Duration::from_millis(100);
    {
        let cancel = cancel.clone();
        thread::spawn(move || {
            thread::sleep(fire_at);
            cancel.cancel();
        });
    }
    let m = stuck.m.clone();
    let c = cancel.clone();
    let results = on_threads(4, move |i| {
        let wait = Wait::forever().cancel(&c);
        if i == 0 {
            // An event waiter too: it may be the one doing the I/O for everyone.
            m.event_wait("NEVER", None, wait).map(|_| Value::Null)
        } else {
            m.cmd_with("query-status", None, wait)
        }
    });
    for (r, took) in &results {
        eprintln!("a call cancelled after 100 ms: {took:?}");
        assert!(took < &(fire_at + SLACK), "returned after {took:?}");
        assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
    }
    // The stuck writer's own token works too.
    let started = Instant::now();
    stuck.writer_cancel.cancel();
    let writer = stuck.writer.as_ref().unwrap();
    while !writer.is_finished() && started.elapsed() < SLACK * 2 {
        thread::sleep(Duration::from_millis(5));
    }
    assert!(writer.is_finished(), "the writer ignored its cancel");
    assert!(matches!(stuck.finish(), Err(Error::Interrupted)));
}

#[test]
fn a_bounded_shutdown_is_bounded_behind_a_blocked_writer() {
    let (_dir, stuck) = stuck_writer(16 << 20);
    let timeout = Duration::from_millis(1000);
    let started = Instant::now();
    let r = stuck.m.shutdown(timeout);
    let took = started.elapsed();
    eprintln!("shutdown with a 1 s timeout: {took:?}");
    assert!(took < timeout + SLACK, "returned after {took:?}");
    // The cause: `quit` could not even be sent within the timeout.
    match &r {
        Err(Error::AbnormalShutdown(cause)) => {
            assert!(matches!(**cause, Error::Timeout(_)), "{cause}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(stuck.m.exitcode(), Some(-libc::SIGKILL));
    assert!(!vm::pid_exists(stuck.pid));
    // The writer learnt at once that the connection is gone.
    let writer = stuck.writer.as_ref().unwrap();
    let started = Instant::now();
    while !writer.is_finished() && started.elapsed() < SLACK {
        thread::sleep(Duration::from_millis(5));
    }
    assert!(writer.is_finished(), "the writer is still stuck");
    assert!(matches!(stuck.finish(), Err(Error::Disconnected(_))));
}

/// A command given up before it went out is never sent; one given up half-way is finished
/// before the next, so every later command gets its own reply.
#[test]
fn a_half_written_command_never_desyncs_and_an_unsent_one_never_runs() {
    // 512 KiB: more than the socket holds, and QEMU reads it in a few seconds once resumed.
    let (_dir, mut stuck) = stuck_writer(512 << 10);
    let m = stuck.m.clone();
    // `stop` would pause the VM if QEMU ever saw it.
    match m.cmd_with("stop", None, Duration::from_millis(200)) {
        Err(Error::Timeout(why)) => assert!(why.contains("nothing was sent"), "{why}"),
        other => panic!("{other:?}"),
    }
    stuck.writer_cancel.cancel();
    let (writer, _) = stuck.writer.take().unwrap().join().unwrap();
    // Partly sent: the rest goes out before anything else.
    assert!(matches!(writer, Err(Error::Interrupted)), "{writer:?}");
    // QEMU reads on now, at its own pace: no rescue from here on.
    stuck.done.store(true, Ordering::SeqCst);
    vm::signal(stuck.pid, libc::SIGCONT);
    // QEMU reads the rest of the big command, answers it (the answer is dropped: nobody
    // waits for it), then answers this one.
    let status = m
        .cmd_with("query-status", None, Duration::from_secs(60))
        .unwrap();
    assert_eq!(status["status"], "running", "{status}");
    assert_eq!(
        m.cmd_with("query-name", None, Duration::from_secs(10))
            .unwrap(),
        json!({})
    );
    m.shutdown(Duration::from_secs(10)).unwrap();
}

/// A zero timeout is no command's: refused before anything is sent.
#[test]
fn a_zero_timeout_for_a_command_is_refused_and_nothing_is_sent() {
    let dir = scratch();
    let m = vm_none(dir.path());
    m.launch().unwrap();
    match m.cmd_with("stop", None, Duration::ZERO) {
        Err(Error::Invalid(why)) => assert!(why.contains("nothing was sent"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(m.cmd("query-status", None).unwrap()["status"], "running");
    m.shutdown(Duration::from_secs(10)).unwrap();
}

/// A token that fired before the call: `Interrupted`, and the command never reaches QEMU.
#[test]
fn a_fired_token_sends_nothing() {
    let dir = scratch();
    let m = vm_none(dir.path());
    m.launch().unwrap();
    let cancel = Cancel::new();
    cancel.cancel();
    let r = m.cmd_with("stop", None, Wait::forever().cancel(&cancel));
    assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
    assert_eq!(m.cmd("query-status", None).unwrap()["status"], "running");
    m.shutdown(Duration::from_secs(10)).unwrap();
}

/// A descriptor send waits for room within its bound (the QMP timer) and, when none comes,
/// is not sent at all.
#[test]
fn a_descriptor_send_behind_a_blocked_writer_times_out_unsent() {
    let (_dir, stuck) = stuck_writer(16 << 20);
    let timer = Duration::from_millis(500);
    stuck.m.set_qmp_timer(Some(timer));
    let file = std::fs::File::open("/dev/null").unwrap();
    let started = Instant::now();
    let r = stuck.m.send_fd_scm(std::os::fd::AsFd::as_fd(&file));
    let took = started.elapsed();
    assert!(took < timer + SLACK, "returned after {took:?}");
    match r {
        Err(Error::Timeout(why)) => assert!(why.contains("not sent"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(stuck.finish(), Err(Error::Disconnected(_))));
}

/// A command that times out half-way says so, and the next one still gets its own reply.
#[test]
fn a_command_timed_out_half_way_says_so_and_is_finished_first() {
    let dir = scratch();
    let m = vm_none(dir.path());
    m.launch().unwrap();
    let pid = m.pid().unwrap();
    vm::signal(pid, libc::SIGSTOP);
    let args = big_command(512 << 10);
    match m.qmp_with(
        "human-monitor-command",
        Some(&args),
        Duration::from_millis(300),
    ) {
        Err(Error::Timeout(why)) => assert!(why.contains("partly sent"), "{why}"),
        other => panic!("{other:?}"),
    }
    vm::signal(pid, libc::SIGCONT);
    let status = m
        .cmd_with("query-status", None, Duration::from_secs(60))
        .unwrap();
    assert_eq!(status["status"], "running", "{status}");
    m.shutdown(Duration::from_secs(10)).unwrap();
}
