//! A guest printing at full speed on the console while a wait runs (issue #19, item 2), in a
//! test binary of its own so that nothing else in the process moves its memory: qm's memory
//! stays near the console's cap, the console log file has every byte, and the wait still finds
//! the pattern printed after the flood.
//!
//! The flood is `QM_FLOOD_MIB` MiB (default 8). An emulated 16550 serial port under TCG moves a
//! few hundred KiB/s, so the 100 MiB of the issue is an opt-in run (`QM_FLOOD_MIB=100`), not part
//! of `make test`.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use qm::console::{Pattern, Patterns};
use qm::Machine;
use support::linux_guest::{linux_guest, qemu_args, PROMPT, READY};
use support::vm;

const BOOT: Duration = Duration::from_secs(180);
const T: Duration = Duration::from_secs(60);

#[test]
fn console_flood_keeps_memory_near_the_cap_the_log_whole_and_the_wait_working() {
    let mib: u64 = std::env::var("QM_FLOOD_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let dir = vm::scratch();
    let console_log = dir.path().join("console.log");
    let vm = Machine::new(vm::qemu());
    vm.set_base_temp_dir(dir.path());
    vm.add_args(qemu_args(&linux_guest()));
    vm.set_console(None, 0);
    vm.set_console_log(Some(console_log.clone()));
    let cap: u64 = 256 << 10;
    vm.set_console_buffer(cap as usize);
    vm.launch().unwrap();
    let ready = Patterns::new()
        .success(READY)
        .failure(Pattern::regex(r"Kernel panic[^\r\n]*").unwrap());
    vm.console_wait(&ready, BOOT).unwrap();
    vm.console_wait(&PROMPT.into(), T).unwrap();

    // Lines of a known shape, so the log can be checked line by line.
    let line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-";
    let lines = (mib << 20) / (line.len() as u64 + 1);
    let cmd = format!("yes {line} | head -n {lines}; echo flood-$((1+1))-done");
    let before = vm.console_stats().unwrap();
    let rss_before = rss_kib();
    let peak = Arc::new(AtomicU64::new(rss_before));
    let held_peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, held_peak, stop) = (peak.clone(), held_peak.clone(), stop.clone());
        let console = vm.console_handle().unwrap();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                held_peak.fetch_max(console.stats().kept as u64, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    vm.console_send_line(&cmd, "\n", T).unwrap();
    // A failure bound only: a loaded machine's serial port may manage 50 KiB/s.
    let bound = Duration::from_secs(120 + 20 * mib);
    let found = vm.console_wait(&"flood-2-done".into(), bound);
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(found.unwrap().matched(), b"flood-2-done");
    vm.console_wait(&PROMPT.into(), T).unwrap();

    let stats = vm.console_stats().unwrap();
    let flood_bytes = lines * (line.len() as u64 + 2);
    assert!(stats.received - before.received >= flood_bytes, "{stats:?}");
    let held = held_peak.load(Ordering::Relaxed);
    assert!(
        held <= cap,
        "the console held {held} bytes, over its cap of {cap}"
    );
    // The process grew by far less than the flood: the cap, the read buffers, the allocator's
    // slack. Holding the flood (or a copy of it per read) would exceed this at 8 MiB and up.
    let grown_kib = peak.load(Ordering::Relaxed).saturating_sub(rss_before);
    let bound_kib = (cap >> 10) * 4 + 3 * 1024;
    assert!(
        grown_kib < bound_kib && grown_kib < (flood_bytes >> 10) / 2,
        "RSS grew {grown_kib} KiB during a {mib} MiB flood (bound {bound_kib} KiB)"
    );
    vm.shutdown(T).unwrap();

    // Every line reached the log file, none cut (the serial line ends them with CR LF).
    let log = std::fs::read(&console_log).unwrap();
    let expect = format!("{line}\r\n");
    let count = log
        .windows(expect.len())
        .filter(|w| *w == expect.as_bytes())
        .count() as u64;
    assert_eq!(count, lines, "lines of the flood in the console log");
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
