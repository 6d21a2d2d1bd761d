//! The fake QEMU (`qm-fake-qemu`, see the README's "Testing without QEMU"): where it is.

use std::ffi::c_char;

use super::boundary::out;
use super::error::{call, qm_error, qm_status};

/// Where the fake QEMU binary is, to give `qm_new` in place of `qemu-system-*`: the
/// environment variable `QM_FAKE_QEMU` when set; else `qm-fake-qemu` beside the qm library
/// (or the program it is linked into), in its parent directory or in `../bin` from it (where
/// `make install` puts it), the first that exists; else the bare name `qm-fake-qemu` (looked
/// up in `PATH` at launch). Stored in `*path_out` (owned: free with `qm_string_free`).
///
/// `QM_ERR_INVALID` when `path_out` is NULL. Thread-safe, never blocks.
#[no_mangle]
pub unsafe extern "C" fn qm_fake_qemu_path(
    path_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_fake_qemu_path", err_out, || {
        let out = out(path_out, "path_out")?;
        out.write_string(crate::fake::binary_path().to_string_lossy().into_owned());
        Ok(())
    })
}
