//! The Linux test guest (guest/linux/README.md): Debian's cloud kernel and a busybox initramfs
//! with qemu-ga, built from Debian packages by `guest/linux/build`.
//!
//! Include it from a test crate with `#[path = "support/linux_guest.rs"] mod linux_guest;` (or
//! `pub mod linux_guest;` in `tests/support/mod.rs`). The build script is the one source of the
//! files and of the QEMU arguments: this module runs `guest/linux/build --qemu-args` once per
//! test process (the script's cache makes later runs take milliseconds, and its lock makes
//! concurrent test binaries build once). With `QM_LINUX_KERNEL` and `QM_LINUX_INITRD` set, the
//! script builds nothing and those files are used.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What the guest prints on its console (ttyS0) once it is up, qemu-ga started.
pub const READY: &str = "qm-guest: ready";
/// The root shell's prompt on the console. busybox's line editor follows it with `ESC [ 6 n`
/// (a cursor-position query that nothing answers), then the echo of what is typed.
pub const PROMPT: &str = "qm-guest# ";
/// The virtio-serial port name qemu-ga listens on.
pub const AGENT_PORT: &str = "org.qemu.guest_agent.0";
/// Shell commands, typed at the prompt, that stop and (re)start qemu-ga.
pub const AGENT_STOP: &str = "qga-stop";
pub const AGENT_START: &str = "qga-start";

/// How long a cold build may take (downloads ~30 MB from the Debian mirror, then packs).
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

/// The built guest.
#[derive(Clone, Debug)]
pub struct LinuxGuest {
    /// The kernel (bzImage).
    pub kernel: PathBuf,
    /// The initramfs (gzip'd cpio).
    pub initrd: PathBuf,
    /// `guest/linux/build --qemu-args`: machine, memory, kernel, initrd, command line.
    args: Vec<String>,
}

/// The guest, built on first use; panics with the build's error output when it cannot be
/// built (use [`try_linux_guest`] to skip instead).
pub fn linux_guest() -> LinuxGuest {
    try_linux_guest().unwrap_or_else(|e| panic!("{e}"))
}

/// The guest, built on first use, or why it could not be built.
pub fn try_linux_guest() -> Result<LinuxGuest, String> {
    static GUEST: OnceLock<Result<LinuxGuest, String>> = OnceLock::new();
    GUEST.get_or_init(build).clone()
}

/// The QEMU arguments that boot `guest`, without console, monitor or agent channel (qm adds
/// those): `-nodefaults -machine q35 -accel tcg -m 256 -kernel K -initrd I -append ...
/// -no-reboot`. The console must be the first serial port (ttyS0), as qm's default is.
pub fn qemu_args(guest: &LinuxGuest) -> Vec<String> {
    guest.args.clone()
}

/// The arguments of a virtio-serial controller and qemu-ga's port on the chardev `chardev`
/// (defined by the caller, e.g. `-chardev socket,id=qga0,path=...`).
pub fn agent_args(chardev: &str) -> Vec<String> {
    [
        "-device".to_string(),
        "virtio-serial-pci".to_string(),
        "-device".to_string(),
        format!("virtserialport,chardev={chardev},name={AGENT_PORT}"),
    ]
    .to_vec()
}

/// `uname -r` of the guest's kernel, read from the bzImage header (its `kernel_version`
/// string), so a test can check what the guest prints against the file it booted.
pub fn kernel_release(guest: &LinuxGuest) -> String {
    let data = std::fs::read(&guest.kernel)
        .unwrap_or_else(|e| panic!("reading {}: {e}", guest.kernel.display()));
    assert!(
        data.len() > 0x210 && &data[0x202..0x206] == b"HdrS",
        "{} is not a bzImage",
        guest.kernel.display()
    );
    let at = u16::from_le_bytes([data[0x20e], data[0x20f]]) as usize + 0x200;
    let end = data[at..]
        .iter()
        .position(|&b| b == 0)
        .expect("kernel_version is terminated")
        + at;
    let version = String::from_utf8_lossy(&data[at..end]);
    version.split(' ').next().unwrap_or_default().to_string()
}

fn build() -> Result<LinuxGuest, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/linux/build");
    let mut child = Command::new(&script)
        .arg("--qemu-args")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    // Both pipes are drained by threads, so the script never blocks on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + BUILD_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not finish within {BUILD_TIMEOUT:?}; killed",
                    script.display()
                ));
            }
            Err(e) => return Err(format!("waiting for {}: {e}", script.display())),
        }
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    if !status.success() {
        return Err(format!(
            "building the Linux test guest failed ({status}): {}\n{}",
            script.display(),
            err.trim_end()
        ));
    }
    let args: Vec<String> = out.lines().map(str::to_owned).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
            .ok_or_else(|| {
                format!(
                    "{} --qemu-args printed no {flag}: {args:?}",
                    script.display()
                )
            })
    };
    Ok(LinuxGuest {
        kernel: value("-kernel")?,
        initrd: value("-initrd")?,
        args,
    })
}
