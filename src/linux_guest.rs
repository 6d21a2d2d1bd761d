//! The Linux test guest (`guest/linux/`): where its kernel and initramfs are, and the QEMU
//! arguments that boot it — the one list every language uses (C `qm_linux_guest_qemu_args`,
//! Go `LinuxGuestQEMUArgs`, Python `qm.linux_guest.qemu_args`).
//!
//! The guest is Debian's cloud kernel with a busybox initramfs: it loads the virtio console
//! modules, starts `qemu-ga`, prints [`READY`] on its console (ttyS0) and gives a root shell
//! whose prompt is [`PROMPT`]. `guest/linux/build` makes it into
//! `target/linux-guest/<key>/{vmlinuz,initrd.cpio.gz}`.
//!
//! How qm finds the files ([`LinuxGuest::locate`]), first match wins:
//! 1. `QM_LINUX_KERNEL` and `QM_LINUX_INITRD` (both set): those files;
//! 2. `QM_LINUX_GUEST_DIR`: a directory of builds (what `guest/linux/build --out` wrote), the
//!    most recently built complete one in it.
//!
//! A library cannot know where a checkout's `target/` is, so there is no third guess: a test
//! harness sets one of the two (the repository's harnesses run `guest/linux/build
//! --print-paths`), or passes the paths to [`LinuxGuest::new`].

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What the guest prints on its console once it is up and `qemu-ga` has started.
pub const READY: &str = "qm-guest: ready";
/// The root shell's prompt on the console (busybox's line editor follows it with `ESC [ 6 n`,
/// a cursor-position query nothing answers, then the echo of what is typed).
pub const PROMPT: &str = "qm-guest# ";
/// The environment variable naming the kernel (with [`INITRD_ENV`]).
pub const KERNEL_ENV: &str = "QM_LINUX_KERNEL";
/// The environment variable naming the initramfs (with [`KERNEL_ENV`]).
pub const INITRD_ENV: &str = "QM_LINUX_INITRD";
/// The environment variable naming a directory of builds (`guest/linux/build --out`).
pub const DIR_ENV: &str = "QM_LINUX_GUEST_DIR";
/// The kernel command line: the console on ttyS0, boot messages off it (`quiet loglevel=1`),
/// a panic turned into a reboot, which `-no-reboot` turns into QEMU's exit, and no IO-APIC timer
/// check (under TCG on a loaded host it can miss its ticks and panic the kernel at boot).
pub const KERNEL_CMDLINE: &str = "console=ttyS0 quiet loglevel=1 panic=-1 no_timer_check";

/// The kernel and initramfs of a built Linux test guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxGuest {
    /// The kernel (bzImage).
    pub kernel: PathBuf,
    /// The initramfs (gzip'd cpio).
    pub initrd: PathBuf,
}

impl LinuxGuest {
    /// The guest made of these two files (not checked until [`check`](Self::check) or QEMU
    /// reads them).
    pub fn new(kernel: impl Into<PathBuf>, initrd: impl Into<PathBuf>) -> LinuxGuest {
        LinuxGuest {
            kernel: kernel.into(),
            initrd: initrd.into(),
        }
    }

    /// Finds the guest as the [module documentation](self) says (`QM_LINUX_KERNEL` +
    /// `QM_LINUX_INITRD`, else the newest build under `QM_LINUX_GUEST_DIR`); `Error::Invalid`
    /// saying what to set when neither gives two existing files.
    pub fn locate() -> Result<LinuxGuest> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let (Some(kernel), Some(initrd)) = (var(KERNEL_ENV), var(INITRD_ENV)) {
            let guest = LinuxGuest::new(kernel, initrd);
            guest.check()?;
            return Ok(guest);
        }
        if let Some(dir) = var(DIR_ENV) {
            return LinuxGuest::find_in(Path::new(&dir));
        }
        Err(Error::Invalid(format!(
            "no Linux test guest: set {KERNEL_ENV} and {INITRD_ENV}, or {DIR_ENV} (a directory \
             guest/linux/build wrote; in a checkout `guest/linux/build --print-paths` prints \
             the two paths)"
        )))
    }

    /// The most recently built complete guest (`<dir>/<key>/vmlinuz` and `initrd.cpio.gz`) in
    /// a directory of builds.
    pub fn find_in(dir: &Path) -> Result<LinuxGuest> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::Io {
            context: format!("reading the Linux guest builds in {}", dir.display()),
            source: e,
        })?;
        let mut best: Option<(std::time::SystemTime, LinuxGuest)> = None;
        for entry in entries.flatten() {
            let sub = entry.path();
            let guest = LinuxGuest::new(sub.join("vmlinuz"), sub.join("initrd.cpio.gz"));
            let Ok(meta) = std::fs::metadata(&guest.initrd) else {
                continue;
            };
            if guest.check().is_err() {
                continue;
            }
            let built = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            if best.as_ref().map_or(true, |(t, _)| built > *t) {
                best = Some((built, guest));
            }
        }
        best.map(|(_, g)| g).ok_or_else(|| {
            Error::Invalid(format!(
                "no built Linux test guest (vmlinuz + initrd.cpio.gz) under {}",
                dir.display()
            ))
        })
    }

    /// `Error::Invalid` unless both files exist and are not empty.
    pub fn check(&self) -> Result<()> {
        for (what, path) in [("kernel", &self.kernel), ("initrd", &self.initrd)] {
            match std::fs::metadata(path) {
                Ok(m) if m.is_file() && m.len() > 0 => {}
                _ => {
                    return Err(Error::Invalid(format!(
                        "Linux test guest {what} {}: no such file (or empty)",
                        path.display()
                    )))
                }
            }
        }
        Ok(())
    }

    /// The QEMU arguments (after the binary) that boot the guest: `-nodefaults -machine q35
    /// -accel tcg -m 256 -kernel K -initrd I -append KERNEL_CMDLINE -no-reboot`. No console,
    /// monitor or agent channel: qm adds those (its default console is the first serial port,
    /// ttyS0; `set_guest_agent` adds the agent's port). A reboot or a panic ends QEMU (status
    /// 0, a clean ending); so does `poweroff -f`.
    pub fn qemu_args(&self) -> Vec<String> {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        [
            "-nodefaults",
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-m",
            "256",
            "-kernel",
            &path(&self.kernel),
            "-initrd",
            &path(&self.initrd),
            "-append",
            KERNEL_CMDLINE,
            "-no-reboot",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_name_the_files_and_the_console() {
        let args = LinuxGuest::new("/k/vmlinuz", "/i/initrd").qemu_args();
        let at = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
        assert_eq!(at("-kernel"), "/k/vmlinuz");
        assert_eq!(at("-initrd"), "/i/initrd");
        assert!(at("-append").contains("console=ttyS0"));
        assert!(args.contains(&"-no-reboot".to_string()));
    }

    #[test]
    fn find_in_takes_a_complete_build_and_names_the_dir_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let err = LinuxGuest::find_in(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("no built Linux test guest"),
            "{err}"
        );
        let half = dir.path().join("half");
        std::fs::create_dir(&half).unwrap();
        std::fs::write(half.join("vmlinuz"), b"k").unwrap();
        assert!(LinuxGuest::find_in(dir.path()).is_err());
        let full = dir.path().join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("vmlinuz"), b"k").unwrap();
        std::fs::write(full.join("initrd.cpio.gz"), b"i").unwrap();
        let g = LinuxGuest::find_in(dir.path()).unwrap();
        assert_eq!(g.kernel, full.join("vmlinuz"));
    }
}
