//! Ending a run: `qm_shutdown`, `qm_kill`, `qm_wait`.

use super::{machine, qm_machine};
use crate::ffi::cancel::{self, qm_cancel};
use crate::ffi::error::{call, qm_error, qm_status};

/// Shuts QEMU down. Gracefully (`hard` false): `quit` over QMP (SIGTERM without QMP), then
/// waits for QEMU to exit, at most `timeout_ms` (`QM_WAIT_DEFAULT`: 30 s; `QM_WAIT_FOREVER`);
/// if it does not exit in time, or `cancel` (may be NULL) fires meanwhile or had fired before
/// the call, QEMU is killed and
/// the call fails with `QM_ERR_ABNORMAL_SHUTDOWN`. Hard (`hard` true): SIGKILL at once
/// (`timeout_ms` is then ignored, but must be valid).
///
/// Cleanup always runs (console closed, temp dir and socket files removed, log read back). A
/// machine that is not launched (never, or already shut down) is left alone and the call
/// succeeds, so a second shutdown is harmless. Calls blocked on the machine in other threads
/// fail with `QM_ERR_DISCONNECTED`.
#[no_mangle]
pub unsafe extern "C" fn qm_shutdown(
    m: *mut qm_machine,
    hard: bool,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_shutdown", err_out, || {
        // SAFETY: the handle and token contracts.
        let (m, wait) = unsafe { (machine(m)?, cancel::wait(timeout_ms, cancel)?) };
        if hard {
            m.vm.kill()
        } else {
            m.vm.shutdown(wait)
        }
    })
}

/// Kills QEMU with SIGKILL, reaps it and cleans up; the same as `qm_shutdown(m, true, ...)`.
/// Blocks until QEMU is gone (normally milliseconds). Succeeds when not launched.
#[no_mangle]
pub unsafe extern "C" fn qm_kill(m: *mut qm_machine, err_out: *mut *mut qm_error) -> qm_status {
    call("qm_kill", err_out, || {
        // SAFETY: the handle contract.
        unsafe { machine(m) }?.vm.kill()
    })
}

/// Waits for QEMU to exit by itself (e.g. the guest powered off), at most `timeout_ms`
/// (`QM_WAIT_DEFAULT`: 30 s; `QM_WAIT_FOREVER`), then cleans up. When it does not exit in time
/// or `cancel` (may be NULL) fires (or had fired), QEMU is killed and the call fails with
/// `QM_ERR_ABNORMAL_SHUTDOWN`. Succeeds at once when not launched.
#[no_mangle]
pub unsafe extern "C" fn qm_wait(
    m: *mut qm_machine,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_wait", err_out, || {
        // SAFETY: the handle and token contracts.
        let (m, wait) = unsafe { (machine(m)?, cancel::wait(timeout_ms, cancel)?) };
        m.vm.wait(wait)
    })
}
