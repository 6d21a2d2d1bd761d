//! Out-of-band QMP execution from C: `qm_set_qmp_oob`, `qm_qmp_oob`.

use std::ffi::c_char;

use super::boundary::{opt_json_object, out, string};
use super::cancel::{self, qm_cancel};
use super::error::{call, qm_error, qm_status};
use super::machine::{machine, qm_machine};

/// Asks for out-of-band execution (the QMP `oob` capability) at later launches (default: off).
/// It is enabled when QEMU's greeting offers it (QEMU 7.2 does): then `qm_qmp_oob` runs the
/// commands that allow it while in-band ones are pending. With OOB on, QEMU queues at most 8
/// in-band commands and drops more: keep at most 8 in flight.
#[no_mangle]
pub unsafe extern "C" fn qm_set_qmp_oob(
    m: *mut qm_machine,
    on: bool,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_qmp_oob", err_out, || {
        // SAFETY: the handle contract.
        unsafe { machine(m) }?.vm.set_qmp_oob(on);
        Ok(())
    })
}

/// True when the machine's current connection negotiated out-of-band execution. False for
/// NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_qmp_oob_enabled(m: *const qm_machine) -> bool {
    super::boundary::guard(false, || {
        // SAFETY: the handle contract.
        unsafe { machine(m) }.is_ok_and(|m| m.vm.qmp_oob_enabled())
    })
}

/// Runs `cmd` out-of-band (`exec-oob`) with `args_json` (as `qm_qmp`; both borrowed) and
/// stores QEMU's raw response in `*response_out` (owned: free with `qm_string_free`). QEMU may
/// answer it while in-band commands sent earlier are still running. Blocks like `qm_qmp`.
/// `QM_ERR_STATE` when OOB was not negotiated (`qm_set_qmp_oob` before launch);
/// `QM_ERR_INVALID`, once the schema is loaded, for a command that does not allow OOB (QEMU
/// 7.2: `migrate-recover`, `migrate-pause`, `yank`, `query-yank` do); otherwise QEMU answers
/// such a command with an error response. Nothing is sent when qm refuses.
#[no_mangle]
pub unsafe extern "C" fn qm_qmp_oob(
    m: *mut qm_machine,
    cmd: *const c_char,
    args_json: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    response_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_qmp_oob", err_out, || {
        let response_out = out(response_out, "response_out")?;
        // SAFETY: the handle, string and token contracts.
        let (m, cmd, args, wait) = unsafe {
            (
                machine(m)?,
                string(cmd, "cmd")?,
                opt_json_object(args_json, "args_json")?,
                cancel::wait(timeout_ms, cancel)?,
            )
        };
        let response = m.vm.qmp_oob(cmd, args.as_ref(), wait)?;
        response_out.write_json(Some(&response));
        Ok(())
    })
}
