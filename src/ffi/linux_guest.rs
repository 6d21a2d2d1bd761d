//! The Linux test guest (`qm::linux_guest`): the arguments that boot it, for C and the bindings.

use std::ffi::c_char;

use serde_json::Value;

use super::boundary::{opt_string, out};
use super::error::{call, qm_error, qm_status};
use super::machine::{machine, qm_machine};
use crate::linux_guest::LinuxGuest;
use crate::Error;

/// The QEMU arguments (after the binary) that boot the Linux test guest (`guest/linux/`), as a
/// JSON array of strings in `*json_array_out` (owned: free with `qm_string_free`): `-nodefaults
/// -machine q35 -accel tcg -m 256 -kernel K -initrd I -append "console=ttyS0 quiet loglevel=1
/// panic=-1 no_timer_check" -no-reboot`. Add them with `qm_add_args`; qm adds the console (ttyS0, its
/// default) and, with `qm_set_guest_agent`, the agent's port. The guest prints
/// `qm-guest: ready` on its console once up and its shell prompt is `qm-guest# `.
///
/// `kernel` and `initrd` are borrowed UTF-8 paths; both NULL means "find it": the files named
/// by `QM_LINUX_KERNEL` and `QM_LINUX_INITRD`, else the newest build under
/// `QM_LINUX_GUEST_DIR` (what `guest/linux/build --out DIR` wrote). `QM_ERR_INVALID` when only
/// one is NULL, for bad UTF-8, or when the files are missing (the message says what to set).
/// Thread-safe; looks at the file system only.
#[no_mangle]
pub unsafe extern "C" fn qm_linux_guest_qemu_args(
    kernel: *const c_char,
    initrd: *const c_char,
    json_array_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_linux_guest_qemu_args", err_out, || {
        let out = out(json_array_out, "json_array_out")?;
        // SAFETY: forwarded contracts.
        let guest = unsafe { guest(kernel, initrd) }?;
        out.write_json(Some(&Value::from(guest.qemu_args())));
        Ok(())
    })
}

/// Adds the arguments of `qm_linux_guest_qemu_args(kernel, initrd, ...)` to `m`, as
/// `qm_add_args` would (applies to the next launch). The same errors; `QM_ERR_INVALID` for a
/// NULL `m`.
#[no_mangle]
pub unsafe extern "C" fn qm_linux_guest_add_args(
    m: *mut qm_machine,
    kernel: *const c_char,
    initrd: *const c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_linux_guest_add_args", err_out, || {
        // SAFETY: forwarded contracts (a live handle, NULL or NUL-terminated strings).
        let (m, guest) = unsafe { (machine(m)?, guest(kernel, initrd)?) };
        m.vm.add_args(guest.qemu_args());
        Ok(())
    })
}

/// The guest of two paths, or found (both NULL).
///
/// # Safety
/// NULL or NUL-terminated strings.
unsafe fn guest(kernel: *const c_char, initrd: *const c_char) -> Result<LinuxGuest, Error> {
    // SAFETY: NULL or NUL-terminated strings (the caller's contract).
    let kernel = unsafe { opt_string(kernel, "kernel") }?;
    // SAFETY: as above.
    let initrd = unsafe { opt_string(initrd, "initrd") }?;
    match (kernel, initrd) {
        (None, None) => LinuxGuest::locate(),
        (Some(k), Some(i)) => {
            let guest = LinuxGuest::new(k, i);
            guest.check()?;
            Ok(guest)
        }
        _ => Err(Error::Invalid(
            "kernel and initrd are both given or both NULL".into(),
        )),
    }
}
