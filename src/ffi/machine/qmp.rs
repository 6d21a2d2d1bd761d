//! QMP commands on a launched `qm_machine`: `qm_qmp`, `qm_cmd`, and descriptors sent over the
//! monitor socket.

use std::ffi::{c_char, c_int};
use std::path::Path;

use serde_json::Value;

use super::{machine, open_fd, qm_machine};
use crate::ffi::boundary::{opt_json_object, out, string, Result};
use crate::ffi::cancel::{self, qm_cancel};
use crate::ffi::error::{call, qm_error, qm_status};

/// Sends a QMP command and returns its response.
///
/// # Safety
/// The pointer contracts of `qm_qmp`.
unsafe fn execute(
    m: *mut qm_machine,
    cmd: *const c_char,
    args_json: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
) -> Result<Value> {
    // SAFETY: the handle, string and token contracts.
    let (m, cmd, args) = unsafe {
        (
            machine(m)?,
            string(cmd, "cmd")?,
            opt_json_object(args_json, "args_json")?,
        )
    };
    // SAFETY: the token contract.
    let wait = unsafe { cancel::wait(timeout_ms, cancel) }?;
    m.vm.qmp_with(cmd, args.as_ref(), wait)
}

/// Runs the QMP command `cmd` (borrowed) with the arguments `args_json` (borrowed: a JSON
/// object, or NULL / `"null"` for none; sent as it is) and stores QEMU's raw response, a JSON
/// object `{"return": ...}` or `{"error": {"class": ..., "desc": ...}}`, in `*response_out`
/// (owned: free with `qm_string_free`). A QMP error response is a success here.
///
/// Blocks until the reply, at most `timeout_ms` milliseconds (`QM_WAIT_DEFAULT`: the QMP timer;
/// `QM_WAIT_FOREVER`), or until `cancel` (may be NULL) fires. Any number of threads may run
/// commands on one machine at once. Errors: `QM_ERR_STATE` (not launched, or QMP off),
/// `QM_ERR_TIMEOUT`, `QM_ERR_INTERRUPTED`, `QM_ERR_DISCONNECTED`, `QM_ERR_INVALID`,
/// `QM_ERR_PROTOCOL`. A reply that arrives after a timeout is dropped; the connection stays
/// usable. `timeout_ms` 0 is `QM_ERR_INVALID` and nothing is sent: 0 means "never block", and
/// a command always waits for its reply.
///
/// Another thread's command stuck in a full socket (QEMU not reading) never delays this one:
/// its timeout and `cancel` hold. A command that times out (or is cancelled) before any of it
/// was sent is withdrawn and never reaches QEMU (the message says "nothing was sent"); one
/// that was partly or wholly sent may still run, and its reply is dropped.
#[no_mangle]
pub unsafe extern "C" fn qm_qmp(
    m: *mut qm_machine,
    cmd: *const c_char,
    args_json: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    response_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_qmp", err_out, || {
        let out = out(response_out, "response_out")?;
        // SAFETY: forwarded contracts.
        let response = unsafe { execute(m, cmd, args_json, timeout_ms, cancel) }?;
        out.write_json(Some(&response));
        Ok(())
    })
}

/// Like `qm_qmp`, but stores only the value of `return` as JSON in `*return_out` (owned: free
/// with `qm_string_free`; e.g. `{}` or `{"status": "running", ...}`), and turns an error response
/// into `QM_ERR_QMP` with its class and description on the error object
/// (`qm_error_qmp_class`, `qm_error_qmp_desc`).
#[no_mangle]
pub unsafe extern "C" fn qm_cmd(
    m: *mut qm_machine,
    cmd: *const c_char,
    args_json: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    return_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_cmd", err_out, || {
        let out = out(return_out, "return_out")?;
        // SAFETY: forwarded contracts.
        let response = unsafe { execute(m, cmd, args_json, timeout_ms, cancel) }?;
        let value = crate::qmp::into_return(response)?;
        out.write_json(Some(&value));
        Ok(())
    })
}

/// Sends the open descriptor `fd` (borrowed; the caller keeps it) to QEMU over the QMP socket
/// with SCM_RIGHTS, for a following `getfd` or `add-fd` command, which take the descriptor that
/// arrived last. The monitor must be a unix socket or socketpair (the default).
/// `QM_ERR_INVALID` when `fd` is not open; `QM_ERR_STATE` when not launched. Sent in order
/// with the commands of every thread, waiting at most the QMP timer for room in the socket
/// (`QM_ERR_TIMEOUT`: it was not sent).
///
/// Two threads that each send a descriptor and then run `getfd`/`add-fd` must not interleave:
/// serialise such pairs.
#[no_mangle]
pub unsafe extern "C" fn qm_send_fd_scm(
    m: *mut qm_machine,
    fd: c_int,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_send_fd_scm", err_out, || {
        // SAFETY: the handle contract.
        let m = unsafe { machine(m) }?;
        let fd = open_fd(fd, "fd")?;
        m.vm.send_fd_scm(fd)
    })
}

/// Opens the file at `path` (borrowed) read-only and sends it with `qm_send_fd_scm`; qm closes
/// its descriptor afterwards. `QM_ERR_IO` when the file cannot be opened.
#[no_mangle]
pub unsafe extern "C" fn qm_send_file_scm(
    m: *mut qm_machine,
    path: *const c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_send_file_scm", err_out, || {
        // SAFETY: the handle and string contracts.
        let (m, path) = unsafe { (machine(m)?, string(path, "path")?) };
        m.vm.send_file_scm(Path::new(path))
    })
}
