//! The Linux test guest (`guest/linux/build`: Debian's cloud kernel and a busybox + qemu-ga
//! initramfs) for tests that need a real guest.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// QEMU's arguments to boot the guest (no console, monitor or agent: the test adds those), or
/// why it is not available (the caller skips, printing the reason).
///
/// Found, in order: `QM_LINUX_KERNEL` and `QM_LINUX_INITRD` (then the guest's standard
/// arguments around them), or `guest/linux/build --qemu-args` of this repository (which builds
/// the guest from Debian packages on first use, as root).
pub fn qemu_args() -> Result<Vec<String>, String> {
    if let (Ok(kernel), Ok(initrd)) = (
        std::env::var("QM_LINUX_KERNEL"),
        std::env::var("QM_LINUX_INITRD"),
    ) {
        return Ok([
            "-nodefaults",
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-m",
            "256",
            "-kernel",
            &kernel,
            "-initrd",
            &initrd,
            "-append",
            "console=ttyS0 quiet loglevel=1 panic=-1",
            "-no-reboot",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect());
    }
    let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/linux/build");
    if !build.exists() {
        return Err(format!(
            "no Linux guest: set QM_LINUX_KERNEL and QM_LINUX_INITRD, or provide {}",
            build.display()
        ));
    }
    let out = Command::new(&build)
        .arg("--qemu-args")
        .output()
        .map_err(|e| format!("running {}: {e}", build.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --qemu-args failed ({}): {}",
            build.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The line the guest prints on its console once booted.
pub const READY_LINE: &str = "qm-guest: ready";
