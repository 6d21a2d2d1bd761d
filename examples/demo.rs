//! `make demo`: boot a 512-byte guest under QEMU, read its console, run a QMP command, ask the
//! guest to power off, and wait for its SHUTDOWN event.

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use qm::guest::{qemu_args, write_image, GuestAction};
use qm::Machine;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let binary = std::env::var("QM_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
    let vm = Machine::new(binary);
    let image = vm.temp_dir()?.join("guest.img");
    write_image(&image, "hello from a 512-byte guest", GuestAction::Echo)?;
    vm.add_args(qemu_args(&image));
    vm.set_console(None, 0);

    let started = Instant::now();
    vm.launch()?;
    println!(
        "launched QEMU (pid {}) in {:.1?}",
        vm.pid().unwrap_or(0),
        started.elapsed()
    );
    println!("command line: {}", vm.full_args().join(" "));

    let mut console = BufReader::new(vm.console()?);
    console
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = String::new();
    console.read_line(&mut line)?;
    println!("console: {}", line.trim_end());

    let status = vm.cmd("query-status", None)?;
    println!("query-status: {status}");

    println!("asking the guest to power off (writing 'p' to its console)");
    console.get_mut().write_all(b"p")?;
    let event = vm
        .event_wait("SHUTDOWN", None, Duration::from_secs(30))?
        .expect("event_wait with a timeout returns an event or an error");
    println!("event: {event}");
    drop(console);
    vm.wait(Duration::from_secs(30))?;
    println!(
        "QEMU exited with status {:?}, {:.1?} after launch",
        vm.exitcode(),
        started.elapsed()
    );
    Ok(())
}
