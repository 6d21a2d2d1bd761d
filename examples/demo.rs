//! `make demo`: boot the Linux test guest (Debian's cloud kernel and a busybox initramfs, built
//! by guest/linux/build from Debian packages), read its kernel version from the console, run a
//! QMP query, and power the guest off from its shell. When the Linux guest cannot be built (no
//! network, no apt), say why and fall back to the 512-byte guest.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use qm::console::{Pattern, Patterns};
use qm::guest::{qemu_args, write_image, GuestAction};
use qm::Machine;

const READY: &str = "qm-guest: ready";
const PROMPT: &str = "qm-guest# ";
const BOOT: Duration = Duration::from_secs(180);
const T: Duration = Duration::from_secs(30);

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// `guest/linux/build --qemu-args`: the arguments that boot the Linux guest, or why not.
fn linux_guest_args() -> Result<Vec<String>, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/linux/build");
    eprintln!("building the Linux test guest ({}) ...", script.display());
    let out = Command::new(&script)
        .arg("--qemu-args")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        return Err(format!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

fn main() -> Res<()> {
    let binary = std::env::var("QM_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
    match linux_guest_args() {
        Ok(args) => linux(&binary, args),
        Err(why) => {
            println!("the Linux test guest could not be built: {why}");
            println!("falling back to the 512-byte test guest");
            tiny(&binary)
        }
    }
}

fn linux(binary: &str, args: Vec<String>) -> Res<()> {
    let vm = Machine::new(binary);
    vm.add_args(args);
    vm.set_console(None, 0);
    let started = Instant::now();
    vm.launch()?;
    println!(
        "launched QEMU (pid {}) with the Linux test guest",
        vm.pid().unwrap_or(0)
    );

    // Boot: the ready line, or a kernel panic at once.
    let boot = Patterns::new()
        .success(READY)
        .failure(Pattern::regex(r"Kernel panic[^\r\n]*")?);
    vm.console_wait(&boot, BOOT)?;
    vm.console_wait(&PROMPT.into(), T)?;
    println!("guest ready after {:.1?}", started.elapsed());

    let m = vm.console_exec("uname -r", "\n", &PROMPT.into(), T)?;
    let output = String::from_utf8_lossy(m.before()).replace("\x1b[6n", "");
    let release = output.split("\r\n").nth(1).unwrap_or_default().to_owned();
    println!("kernel version (read from the console): {release}");

    let status = vm.cmd("query-status", None)?;
    println!("QMP query-status: {status}");
    let cpus = vm.cmd("query-cpus-fast", None)?;
    println!(
        "QMP query-cpus-fast: {} vCPU(s), target {}",
        cpus.as_array().map_or(0, Vec::len),
        cpus[0]["target"]
    );

    println!("powering the guest off (poweroff -f on its console)");
    vm.console_send_line("poweroff -f", "\n", T)?;
    let event = vm
        .event_wait("SHUTDOWN", None, T)?
        .expect("a wait with a timeout returns an event or an error");
    println!("QMP event: {event}");
    match vm.console_wait(&"never printed".into(), T) {
        Err(qm::Error::ConsoleClosed { .. }) => println!("console: end of file"),
        other => println!("console: unexpected {other:?}"),
    }
    vm.wait(T)?;
    let stats = vm.console_stats()?;
    println!(
        "QEMU exited with status {:?}, {:.1?} after launch; the console said {} bytes",
        vm.exitcode(),
        started.elapsed(),
        stats.received
    );
    Ok(())
}

fn tiny(binary: &str) -> Res<()> {
    let vm = Machine::new(binary);
    let image = vm.temp_dir()?.join("guest.img");
    write_image(&image, "hello from a 512-byte guest", GuestAction::Echo)?;
    vm.add_args(qemu_args(&image));
    vm.set_console(None, 0);
    let started = Instant::now();
    vm.launch()?;
    println!("launched QEMU (pid {})", vm.pid().unwrap_or(0));
    let m = vm.console_wait(&"\r\n".into(), T)?;
    println!("console: {}", m.text_lossy().trim_end());
    println!("QMP query-status: {}", vm.cmd("query-status", None)?);
    println!("asking the guest to power off (writing 'p' to its console)");
    vm.console_send(b"p", T)?;
    let event = vm
        .event_wait("SHUTDOWN", None, T)?
        .expect("a wait with a timeout returns an event or an error");
    println!("QMP event: {event}");
    vm.wait(T)?;
    println!(
        "QEMU exited with status {:?}, {:.1?} after launch",
        vm.exitcode(),
        started.elapsed()
    );
    Ok(())
}
