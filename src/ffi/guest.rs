//! The test guest (a 512-byte boot sector), so C and Go tests need no disk images.

use std::ffi::{c_char, c_int};
use std::path::Path;

use serde_json::Value;

use super::boundary::{guard, out, string, Result};
use super::error::{call, qm_error, qm_status};
use crate::guest::{self, GuestAction};
use crate::Error;

/// What the test guest does after writing its banner line to the serial port.
pub type qm_guest_action = c_int;

/// Power off through ACPI: QEMU emits a `SHUTDOWN` event with `"guest": true` and exits with 0.
pub const QM_GUEST_POWEROFF: qm_guest_action = 0;
/// Echo every byte read from the serial port, except two commands (not echoed): `'p'` powers
/// off (as `QM_GUEST_POWEROFF`), `'x'` exits QEMU with status 3 (isa-debug-exit value 1).
pub const QM_GUEST_ECHO: qm_guest_action = 1;
/// Exit QEMU at once through isa-debug-exit with `exit_value`: QEMU's exit status is then
/// `qm_guest_exit_status(exit_value)`.
pub const QM_GUEST_EXIT: qm_guest_action = 2;
/// Halt forever: a guest that never stops by itself.
pub const QM_GUEST_HALT: qm_guest_action = 3;

/// The longest banner `qm_guest_write_image` accepts, in bytes.
pub const QM_GUEST_MAX_BANNER: usize = 380;

/// Writes the test guest's boot image (512 bytes, raw) to `path`, replacing any file there.
/// The guest prints `banner` and `"\r\n"` on its first serial port, then does `action`
/// (`exit_value` is used only by `QM_GUEST_EXIT`). Boot it with the arguments of
/// `qm_guest_qemu_args` plus a console (`qm_set_console`).
///
/// `path` and `banner` are borrowed UTF-8 strings. `QM_ERR_INVALID` for NULL, bad UTF-8, a
/// banner over `QM_GUEST_MAX_BANNER` bytes or an unknown action; `QM_ERR_IO` when the file
/// cannot be written. Thread-safe; does file I/O only.
#[no_mangle]
pub unsafe extern "C" fn qm_guest_write_image(
    path: *const c_char,
    banner: *const c_char,
    action: qm_guest_action,
    exit_value: u8,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_guest_write_image", err_out, || {
        // SAFETY: NUL-terminated strings (the caller's contract).
        let path = unsafe { string(path, "path") }?;
        // SAFETY: as above.
        let banner = unsafe { string(banner, "banner") }?;
        let action = match action {
            QM_GUEST_POWEROFF => GuestAction::Poweroff,
            QM_GUEST_ECHO => GuestAction::Echo,
            QM_GUEST_EXIT => GuestAction::Exit(exit_value),
            QM_GUEST_HALT => GuestAction::Halt,
            other => {
                return Err(Error::Invalid(format!(
                    "action {other} is not a QM_GUEST_* value"
                )))
            }
        };
        write_image(Path::new(path), banner, action)
    })
}

fn write_image(path: &Path, banner: &str, action: GuestAction) -> Result {
    guest::write_image(path, banner, action).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidInput {
            Error::Invalid(e.to_string())
        } else {
            Error::Io {
                context: format!("writing the guest image {}", path.display()),
                source: e,
            }
        }
    })
}

/// The QEMU arguments (after the binary) that boot an image written by
/// `qm_guest_write_image`, as a JSON array of strings in `*json_array_out` (owned: free with
/// `qm_string_free`). They select `-machine pc` with TCG; add them with `qm_add_args` and add
/// a console with `qm_set_console(m, NULL, 0, ...)`.
///
/// `QM_ERR_INVALID` for NULL or bad UTF-8. Thread-safe, never blocks.
#[no_mangle]
pub unsafe extern "C" fn qm_guest_qemu_args(
    image_path: *const c_char,
    json_array_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_guest_qemu_args", err_out, || {
        let out = out(json_array_out, "json_array_out")?;
        // SAFETY: a NUL-terminated string (the caller's contract).
        let path = unsafe { string(image_path, "image_path") }?;
        let args = guest::qemu_args(Path::new(path));
        out.write_json(Some(&Value::from(args)));
        Ok(())
    })
}

/// The exit status QEMU reports when the guest exits through isa-debug-exit with `value`
/// (`QM_GUEST_EXIT`): `((value << 1) | 1) & 0xff`. Pure function.
#[no_mangle]
pub extern "C" fn qm_guest_exit_status(value: u8) -> c_int {
    guard(-1, || guest::debug_exit_status(value))
}

#[cfg(test)]
mod tests {
    #[test]
    fn max_banner_matches_the_core() {
        assert_eq!(super::QM_GUEST_MAX_BANNER, crate::guest::MAX_BANNER_LEN);
    }
}
