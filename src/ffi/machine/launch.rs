//! Launching a `qm_machine`: `qm_launch`, and the prepared launch (`qm_launch_prepare`,
//! `qm_launch_argv`, `qm_launch_abort`).

use std::ffi::{c_char, c_int};

use serde_json::Value;

use super::{machine, open_fd, qm_machine};
use crate::ffi::boundary::{out, strings, Result};
use crate::ffi::cancel::{self, qm_cancel};
use crate::ffi::error::{call, qm_error, qm_status};
use crate::Error;

/// Starts QEMU and, unless QMP is off, connects and negotiates QMP.
///
/// Blocks until QMP is up, at most `timeout_ms` milliseconds (`QM_WAIT_DEFAULT`: the QMP timer,
/// `qm_set_qmp_timer`; `QM_WAIT_FOREVER`), or until `cancel` (may be NULL) fires; returns at
/// once when QEMU exits early. A token that had fired fails with `QM_ERR_INTERRUPTED`, launching
/// nothing. `QM_ERR_STATE` when already launched. Any other failure is `QM_ERR_LAUNCH`, whose
/// error object has QEMU's exit code (`qm_error_exit_code`), the command line and QEMU's output,
/// and the cause (`qm_error_cause`); by then no process is left and everything the launch
/// created is removed, and the machine can be launched again.
#[no_mangle]
pub unsafe extern "C" fn qm_launch(
    m: *mut qm_machine,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_launch", err_out, || {
        // SAFETY: the handle and token contracts.
        let (m, wait) = unsafe { (machine(m)?, cancel::wait(timeout_ms, cancel)?) };
        m.vm.launch_with(wait)
    })
}

/// Prepares the next launch without starting QEMU: creates what `qm_launch` creates before
/// starting it (the monitor socketpair or listener, the console socketpair, QEMU's log) and
/// stores in `*base_args_out` (owned: free with `qm_string_free`) the arguments qm puts between
/// the binary and the extra arguments, as a JSON array of strings, e.g.
/// `["-display","none","-vga","none","-chardev","socket,id=mon,fd=5",
/// "-mon","chardev=mon,mode=control"]`. The `fd=N` numbers are the descriptors QEMU will
/// inherit, under those numbers. Never blocks on QEMU.
///
/// The run uses the configuration as of this call. Calling it again while prepared returns the
/// same array. `qm_launch_argv` or `qm_launch` start QEMU with what was prepared;
/// `qm_launch_abort`, `qm_shutdown`, `qm_kill`, `qm_wait` and `qm_free` release it. A new
/// prepare forgets the last run's exit code, pid, command line and log. `QM_ERR_STATE` when
/// launched; any other failure is `QM_ERR_LAUNCH` as for `qm_launch`, with nothing left over.
#[no_mangle]
pub unsafe extern "C" fn qm_launch_prepare(
    m: *mut qm_machine,
    base_args_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_launch_prepare", err_out, || {
        let out = out(base_args_out, "base_args_out")?;
        // SAFETY: the handle contract.
        let m = unsafe { machine(m) }?;
        let base = m.vm.prepare_launch()?;
        out.write_string(Value::from(base).to_string());
        Ok(())
    })
}

/// Starts `argv` (`n` borrowed UTF-8 strings, `n` > 0; `argv[0]` looked up in `PATH`; never a
/// shell) exactly as given instead of the command line `qm_launch` builds, then connects and
/// negotiates QMP as `qm_launch` does: same `timeout_ms` and `cancel` (may be NULL), same
/// errors, same cleanup on `QM_ERR_LAUNCH`. Prepares first when `qm_launch_prepare` was not
/// called. `qm_get_command_line` then returns `argv`.
///
/// QEMU inherits the prepared descriptors, those of `qm_add_fd`, and `extra_fds` (`n_fds`
/// borrowed open descriptors, each 3 or above, kept open by the caller until the call returns;
/// NULL when `n_fds` is 0) under their numbers; nothing else. `QM_ERR_INVALID` (a prepared
/// launch stays prepared) for an empty or non-UTF-8 `argv`, or a bad descriptor;
/// `QM_ERR_STATE` when launched.
#[no_mangle]
pub unsafe extern "C" fn qm_launch_argv(
    m: *mut qm_machine,
    argv: *const *const c_char,
    n: usize,
    extra_fds: *const c_int,
    n_fds: usize,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_launch_argv", err_out, || {
        // SAFETY: the handle, array and token contracts.
        let (m, argv, wait) = unsafe {
            (
                machine(m)?,
                strings(argv, n, "argv")?,
                cancel::wait(timeout_ms, cancel)?,
            )
        };
        let raw: &[c_int] = if n_fds == 0 {
            &[]
        } else if extra_fds.is_null() {
            return Err(Error::Invalid(format!(
                "extra_fds is NULL but its length is {n_fds}"
            )));
        } else {
            // SAFETY: not NULL; the caller promises `n_fds` readable ints.
            unsafe { std::slice::from_raw_parts(extra_fds, n_fds) }
        };
        let fds = raw
            .iter()
            .enumerate()
            .map(|(i, &fd)| open_fd(fd, &format!("extra_fds[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        m.vm.launch_argv(argv, &fds, wait)
    })
}

/// Releases what `qm_launch_prepare` created (descriptors, socket files, the log, the temporary
/// directory) when the caller gives up before `qm_launch_argv`. Does nothing when not
/// prepared; `QM_ERR_STATE` when launched. Never blocks.
#[no_mangle]
pub unsafe extern "C" fn qm_launch_abort(
    m: *mut qm_machine,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_launch_abort", err_out, || {
        // SAFETY: the handle contract.
        unsafe { machine(m) }?.vm.abort_launch()
    })
}
