//! `qm-bench-fast-start [--quick] [--qemu BIN] [--out results.jsonl]`: what a template saves
//! (figures, no pass/fail): the Linux test guest booted cold vs cloned from a saved state, N
//! clones at once, and save time against the size of the state.
//!
//! - `cold_ready` vs `restore_ready`, alternating (cold, restore, restore, cold, …): a launch
//!   until the guest agent answers `guest-sync`, and `Template::clone_machine` (QEMU start with
//!   `-incoming defer`, the state loaded, `cont`) until the agent answers; medians and the
//!   ratio restore / cold. `restore_ready` is also split into its phases: `restore_running`
//!   (until `cont` answered) and the agent's first answer after it.
//! - `clones_N` for N = 1, 4, 16: `Template::clones(N)` wall time until all N agents answer,
//!   and the VmRSS of each clone's QEMU (mean).
//! - `save_M` for M = 0, 32, 64 MiB of random data written to the guest's tmpfs first: the
//!   state's size and `save_state`'s time.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use qm::{AgentChannel, Exec, Machine, Ready, Template};
use serde_json::json;

const T: Duration = Duration::from_secs(600);

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn guest_args() -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/linux/build");
    let out = Command::new(&script)
        .arg("--qemu-args")
        .output()
        .expect("running guest/linux/build");
    assert!(
        out.status.success(),
        "guest/linux/build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn main() {
    let mut quick = false;
    let mut qemu = std::env::var("QM_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
    let mut out_path = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--qemu" => qemu = args.next().expect("--qemu BIN"),
            "--out" => out_path = Some(args.next().expect("--out FILE")),
            other => panic!("unknown argument {other}"),
        }
    }
    let guest = guest_args();
    let dir = std::env::temp_dir().join(format!("qm-bench-fast-start-{}", std::process::id()));
    let mut template = Template::new(qemu.clone(), &dir);
    template
        .add_args(guest.clone())
        .set_console(None, 0)
        .set_guest_agent(true);
    template.prepare(&Ready::Agent, T).unwrap();
    let info = template.state_info().unwrap();
    let mut results = Vec::new();

    // cold vs restore, alternating.
    let rounds = if quick { 2 } else { 6 };
    let (mut cold, mut restore, mut running) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds * 2 {
        if (i % 4 == 0) || (i % 4 == 3) {
            let vm = Machine::new(qemu.clone());
            vm.add_args(guest.clone());
            vm.set_console(None, 0);
            vm.set_guest_agent(Some(AgentChannel::SocketPair));
            let t = Instant::now();
            vm.launch().unwrap();
            match vm.agent().unwrap().sync(T) {
                Ok(()) => cold.push(ms(t.elapsed())),
                // Counted out, and said why: a boot that failed is no sample.
                Err(e) => {
                    let _ = vm.kill();
                    eprintln!(
                        "fast_start: a cold boot failed ({e}); QEMU's output: {}",
                        vm.get_log().unwrap_or_default()
                    );
                    continue;
                }
            }
            vm.kill().unwrap();
        } else {
            let mut t1 = template.clone();
            t1.set_clone_ready(Ready::Running);
            let t = Instant::now();
            let vm = t1.clone_machine(T).unwrap();
            running.push(ms(t.elapsed()));
            vm.agent().unwrap().sync(T).unwrap();
            restore.push(ms(t.elapsed()));
            vm.kill().unwrap();
        }
    }
    let (cold_ms, restore_ms, running_ms) = (
        median(&mut cold),
        median(&mut restore),
        median(&mut running),
    );
    println!(
        "fast_start: cold_ready {cold_ms:.0} ms, restore_ready {restore_ms:.0} ms \
         (running after {running_ms:.0} ms), ratio {:.3}, state {} MiB",
        restore_ms / cold_ms,
        info.stream_bytes >> 20
    );
    results.push(json!({
        "metric": "fast_start", "cold_ready_ms": cold_ms, "restore_ready_ms": restore_ms,
        "restore_running_ms": running_ms, "ratio": restore_ms / cold_ms,
        "state_bytes": info.stream_bytes, "rounds": rounds,
    }));

    // N clones at once.
    let sizes: &[usize] = if quick { &[1, 4] } else { &[1, 4, 16] };
    for &n in sizes {
        let t = Instant::now();
        let clones = template.clones(n, T).unwrap();
        let wall = ms(t.elapsed());
        let rss: u64 = clones.iter().map(|c| rss_kib(c.pid().unwrap())).sum();
        let per = rss / n as u64;
        println!(
            "fast_start: clones_{n}: {wall:.0} ms wall, {} MiB RSS per clone",
            per >> 10
        );
        results.push(json!({
            "metric": "fast_start_clones", "n": n, "wall_ms": wall, "rss_kib_per_clone": per,
        }));
        for c in clones {
            c.kill().unwrap();
        }
    }

    // Save time against state size.
    let fills: &[u64] = if quick { &[0, 32] } else { &[0, 32, 64] };
    for &mib in fills {
        let vm = template.clone_machine(T).unwrap();
        if mib > 0 {
            let script = format!("dd if=/dev/urandom of=/tmp/fill bs=1M count={mib} 2>/dev/null");
            let out = vm
                .agent()
                .unwrap()
                .exec(&Exec::new("sh").args(["-c", &script]), T)
                .unwrap();
            assert_eq!(out.exit_code, Some(0));
        }
        let path = dir.join(format!("save-{mib}.state"));
        let t = Instant::now();
        let saved = vm.save_state(&path, T).unwrap();
        let took = ms(t.elapsed());
        println!(
            "fast_start: save with {mib} MiB in tmpfs: {} MiB state in {took:.0} ms",
            saved.stream_bytes >> 20
        );
        results.push(json!({
            "metric": "fast_start_save", "fill_mib": mib, "state_bytes": saved.stream_bytes,
            "save_ms": took,
        }));
        vm.kill().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    let _ = std::fs::remove_dir_all(&dir);
    if let Some(path) = out_path {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for r in results {
            writeln!(f, "{r}").unwrap();
        }
    }
}
