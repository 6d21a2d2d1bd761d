//! Soak on the Linux guest (issue #19, item 4): 8 threads, each cycling whole machine lives —
//! launch, QMP commands, events, console commands, agent calls, and an ending that varies
//! (`quit`, the guest powering itself off, the agent's `guest-shutdown`, a kill) — for
//! `QM_SOAK_SECONDS` (default 3600). Before and after, the process's descriptors, threads,
//! resident memory and child processes are counted; nothing may grow.
//!
//! Opt-in (an hour, 8 TCG guests on the machine): `make soak`, or
//! `QM_SOAK_SECONDS=600 cargo test --release --test soak_guest -- --ignored --nocapture`.
//! The report is printed and written to `target/soak-guest-report.txt`.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use qm::console::{Pattern, Patterns};
use qm::{AgentChannel, Exec, Machine, ShutdownMode};
use serde_json::json;
use support::linux_guest::{linux_guest, qemu_args, PROMPT, READY};
use support::vm;

const THREADS: usize = 8;
/// Failure bounds, never timing checks: 8 guests boot at once on 2 cores.
const BOOT: Duration = Duration::from_secs(600);
const T: Duration = Duration::from_secs(120);
/// Resident memory may grow this much (allocator arenas of 8 threads), no more.
const RSS_GROWTH_LIMIT_KIB: u64 = 32 << 10;

const ENDINGS: [&str; 4] = ["quit", "guest-poweroff", "agent-shutdown", "kill"];

/// One life of a machine; `n` picks the ending.
fn life(args: &[String], n: u64) {
    let dir = vm::scratch();
    let m = Machine::new(vm::qemu());
    m.set_base_temp_dir(dir.path());
    m.add_args(args.iter().cloned());
    m.set_console(None, 0);
    m.set_guest_agent(Some(AgentChannel::SocketPair));
    m.launch().unwrap();
    let ready = Patterns::new()
        .success(READY)
        .failure(Pattern::regex(r"Kernel panic[^\r\n]*").unwrap());
    m.console_wait(&ready, BOOT).unwrap();
    m.console_wait(&PROMPT.into(), T).unwrap();

    assert_eq!(m.cmd("query-status", None).unwrap()["status"], "running");
    m.cmd("stop", None).unwrap();
    m.event_wait("STOP", None, T).unwrap().unwrap();
    m.cmd("cont", None).unwrap();
    m.event_wait("RESUME", None, T).unwrap().unwrap();

    let line = format!("echo soak-$(({n}+1))");
    m.console_send_line(&line, "\n", T).unwrap();
    m.console_wait(&format!("soak-{}\r\n", n + 1).as_str().into(), T)
        .unwrap();
    m.console_wait(&PROMPT.into(), T).unwrap();

    let agent = m.agent().unwrap();
    agent.sync(BOOT).unwrap();
    let out = agent
        .exec(&Exec::new("sh").args(["-c", "echo agent; exit 7"]), T)
        .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_slice()),
        (Some(7), &b"agent\n"[..])
    );

    match ENDINGS[(n % ENDINGS.len() as u64) as usize] {
        "quit" => {
            m.shutdown(T).unwrap();
            assert_eq!(m.exitcode(), Some(0));
        }
        "guest-poweroff" => {
            m.console_send_line("poweroff -f", "\n", T).unwrap();
            m.event_wait("SHUTDOWN", Some(&json!({"data": {"guest": true}})), T)
                .unwrap()
                .unwrap();
            m.wait(T).unwrap();
            assert_eq!(m.exitcode(), Some(0));
        }
        "agent-shutdown" => {
            agent.shutdown(ShutdownMode::Powerdown, T).unwrap();
            m.event_wait("SHUTDOWN", None, T).unwrap().unwrap();
            m.wait(T).unwrap();
            assert_eq!(m.exitcode(), Some(0));
        }
        _ => {
            m.kill().unwrap();
            assert_eq!(m.exitcode(), Some(-libc::SIGKILL));
        }
    }
    drop(agent);
    assert_eq!(
        vm::machine_temp_dirs(dir.path()),
        Vec::<std::path::PathBuf>::new(),
        "temp dirs left"
    );
}

struct Counts {
    fds: usize,
    threads: usize,
    rss_kib: u64,
    children: usize,
}

fn counts() -> Counts {
    Counts {
        fds: vm::open_fds(),
        threads: vm::thread_count(),
        rss_kib: vm::self_status("VmRSS"),
        children: vm::child_pids().len(),
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fds {}, threads {}, rss {:.1} MiB, child processes {}",
            self.fds,
            self.threads,
            self.rss_kib as f64 / 1024.0,
            self.children
        )
    }
}

#[test]
#[ignore = "opt-in soak (an hour, 8 Linux guests at once): make soak"]
fn eight_threads_of_guest_lives_leave_the_process_as_they_found_it() {
    let seconds: u64 = std::env::var("QM_SOAK_SECONDS")
        .ok()
        .map(|v| v.parse().expect("QM_SOAK_SECONDS is a number"))
        .unwrap_or(3600);
    let args = qemu_args(&linux_guest());
    // Warm up: the spawner, the watchdog, allocator arenas, lazily made statics.
    life(&args, 0);
    let start = counts();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let lives = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (args, lives, failed) = (args.clone(), lives.clone(), failed.clone());
            thread::spawn(move || {
                let mut n = t as u64;
                while Instant::now() < deadline && !failed.load(Ordering::Relaxed) {
                    if let Err(panic) = std::panic::catch_unwind(|| life(&args, n)) {
                        failed.store(true, Ordering::Relaxed);
                        std::panic::resume_unwind(panic);
                    }
                    lives.fetch_add(1, Ordering::Relaxed);
                    n += THREADS as u64;
                }
            })
        })
        .collect();
    let mut panics = Vec::new();
    for w in workers {
        if let Err(p) = w.join() {
            panics.push(p);
        }
    }
    let end = counts();
    let report = format!(
        "soak-guest: {} machine lives from {THREADS} threads in {:.0} s (asked {seconds} s)\n\
         soak-guest: start: {start}\n\
         soak-guest: end:   {end}\n\
         soak-guest: peak rss {:.1} MiB\n",
        lives.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        vm::self_status("VmHWM") as f64 / 1024.0,
    );
    print!("{report}");
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/soak-guest-report.txt");
    let _ = std::fs::write(path, &report);
    if let Some(p) = panics.pop() {
        std::panic::resume_unwind(p);
    }
    assert_eq!(end.fds, start.fds, "descriptors leaked");
    assert_eq!(end.threads, start.threads, "threads leaked");
    assert_eq!(end.children, 0, "child processes left");
    assert!(
        end.rss_kib < start.rss_kib + RSS_GROWTH_LIMIT_KIB,
        "resident memory grew from {} to {} KiB",
        start.rss_kib,
        end.rss_kib
    );
}
