//! What a `qm_machine` reports about itself and its last run: running, pids, exit code, log,
//! directories, name, binary, arguments, command line. Every call here returns at once.

use std::ffi::{c_char, c_int};

use serde_json::Value;

use super::{machine, path_string, qm_machine};
use crate::ffi::boundary::{guard, out, Result};
use crate::ffi::error::{call, qm_error, qm_status};
use crate::Machine;

/// True while QEMU runs (false for NULL). Never blocks.
#[no_mangle]
pub unsafe extern "C" fn qm_is_running(m: *const qm_machine) -> bool {
    guard(false, || {
        // SAFETY: NULL, a live handle, or one refused before any read.
        unsafe { super::machine_or_none(m, "qm_is_running") }.is_some_and(|m| m.vm.is_running())
    })
}

/// QEMU's process id while it runs; -1 when it does not (or for NULL). Never blocks. Under a
/// wrapper: QEMU's own pid when qm found exactly one process of the launch's process group
/// running the QEMU binary once QMP was up; otherwise the wrapper's.
#[no_mangle]
pub unsafe extern "C" fn qm_pid(m: *const qm_machine) -> i64 {
    guard(-1, || {
        // SAFETY: NULL, a live handle, or one refused before any read.
        unsafe { super::machine_or_none(m, "qm_pid") }
            .and_then(|m| m.vm.pid())
            .map_or(-1, i64::from)
    })
}

/// The process id of the last run's QEMU, while it runs and after it exited (unlike `qm_pid`),
/// until the next launch is prepared; -1 before any process was started, when the last launch
/// failed before starting one, and for NULL. Never blocks.
#[no_mangle]
pub unsafe extern "C" fn qm_last_pid(m: *const qm_machine) -> i64 {
    guard(-1, || {
        // SAFETY: NULL, a live handle, or one refused before any read.
        unsafe { super::machine_or_none(m, "qm_last_pid") }
            .and_then(|m| m.vm.last_pid())
            .map_or(-1, i64::from)
    })
}

/// Once QEMU has exited (after a shutdown, a wait, or a failed launch where it ran): stores its
/// exit status in `*code_out` (when not NULL; negative: killed by that signal) and returns
/// true. Returns false while it runs, before a launch, and for a NULL `m`. Never blocks.
#[no_mangle]
pub unsafe extern "C" fn qm_exit_code(m: *const qm_machine, code_out: *mut c_int) -> bool {
    guard(false, || {
        // SAFETY: NULL, a live handle, or one refused before any read.
        let Some(code) =
            unsafe { super::machine_or_none(m, "qm_exit_code") }.and_then(|m| m.vm.exitcode())
        else {
            return false;
        };
        if !code_out.is_null() {
            // SAFETY: not NULL; the caller promises a writable int.
            unsafe { code_out.write(code) };
        }
        true
    })
}

/// Stores a getter's string result.
///
/// # Safety
/// The handle contract for `m`.
unsafe fn get_string(
    (function, out_name): (&'static str, &str),
    m: *const qm_machine,
    out_ptr: *mut *mut c_char,
    get: impl FnOnce(&Machine) -> Result<Option<String>>,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call(function, err_out, || {
        let out = out(out_ptr, out_name)?;
        // SAFETY: the handle contract.
        let m = unsafe { machine(m) }?;
        match get(&m.vm)? {
            Some(s) => out.write_string(s),
            None => out.write(std::ptr::null_mut()),
        }
        Ok(())
    })
}

/// What QEMU wrote to stdout and stderr during the last run, read back after a shutdown or a
/// failed launch, in `*log_out` (owned: free with `qm_string_free`). While QEMU runs, and
/// before any run, there is no log yet: `*log_out` is set to NULL and the call succeeds
/// (`qm_get_log_so_far` reads the output while QEMU runs).
#[no_mangle]
pub unsafe extern "C" fn qm_get_log(
    m: *const qm_machine,
    log_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    // SAFETY: forwarded contract.
    unsafe {
        get_string(
            ("qm_get_log", "log_out"),
            m,
            log_out,
            |vm| Ok(vm.get_log()),
            err_out,
        )
    }
}

/// What QEMU has written to stdout and stderr so far, in `*log_out` (owned: free with
/// `qm_string_free`): while QEMU runs, its output up to now (read afresh on each call); after a
/// shutdown or a failed launch, the same as `qm_get_log`; NULL before any launch.
#[no_mangle]
pub unsafe extern "C" fn qm_get_log_so_far(
    m: *const qm_machine,
    log_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    // SAFETY: forwarded contract.
    unsafe {
        get_string(
            ("qm_get_log_so_far", "log_out"),
            m,
            log_out,
            |vm| Ok(vm.log_so_far()),
            err_out,
        )
    }
}

/// The machine's temporary directory (mode 0700) in `*dir_out` (owned). It is created on first
/// use (so this may fail with `QM_ERR_IO`) and removed at shutdown.
#[no_mangle]
pub unsafe extern "C" fn qm_get_temp_dir(
    m: *const qm_machine,
    dir_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    // SAFETY: forwarded contract.
    unsafe {
        get_string(
            ("qm_get_temp_dir", "dir_out"),
            m,
            dir_out,
            |vm| Ok(Some(path_string(&vm.temp_dir()?))),
            err_out,
        )
    }
}

/// The directory of the log file in `*dir_out` (owned): the one set with `qm_set_log_dir`, or
/// NULL when none was set (QEMU's output is then kept in memory; `qm_get_log` has it).
#[no_mangle]
pub unsafe extern "C" fn qm_get_log_dir(
    m: *const qm_machine,
    dir_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    // SAFETY: forwarded contract.
    unsafe {
        get_string(
            ("qm_get_log_dir", "dir_out"),
            m,
            dir_out,
            |vm| Ok(vm.log_dir().map(|dir| path_string(&dir))),
            err_out,
        )
    }
}

/// The directory of socket files in `*dir_out` (owned): the one set with `qm_set_sock_dir`, or
/// the temporary directory (created on first use).
#[no_mangle]
pub unsafe extern "C" fn qm_get_sock_dir(
    m: *const qm_machine,
    dir_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    // SAFETY: forwarded contract.
    unsafe {
        get_string(
            ("qm_get_sock_dir", "dir_out"),
            m,
            dir_out,
            |vm| Ok(Some(path_string(&vm.sock_dir()?))),
            err_out,
        )
    }
}

/// The machine's name in `*name_out` (owned).
#[no_mangle]
pub unsafe extern "C" fn qm_get_name(
    m: *const qm_machine,
    name_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    // SAFETY: forwarded contract.
    unsafe {
        get_string(
            ("qm_get_name", "name_out"),
            m,
            name_out,
            |vm| Ok(Some(vm.name())),
            err_out,
        )
    }
}

/// The QEMU binary given to `qm_new` in `*binary_out` (owned).
#[no_mangle]
pub unsafe extern "C" fn qm_get_binary(
    m: *const qm_machine,
    binary_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    // SAFETY: forwarded contract.
    unsafe {
        get_string(
            ("qm_get_binary", "binary_out"),
            m,
            binary_out,
            |vm| Ok(Some(vm.binary())),
            err_out,
        )
    }
}

/// The extra arguments added with `qm_add_args` (and `qm_add_fd`, `qm_add_monitor_null`), as a
/// JSON array of strings in `*json_array_out` (owned).
#[no_mangle]
pub unsafe extern "C" fn qm_get_args(
    m: *const qm_machine,
    json_array_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    // SAFETY: forwarded contract.
    unsafe {
        get_string(
            ("qm_get_args", "json_array_out"),
            m,
            json_array_out,
            |vm| Ok(Some(Value::from(vm.args()).to_string())),
            err_out,
        )
    }
}

/// The whole command line of the last launch (wrapper, binary, qm's arguments, extra ones) as a
/// JSON array of strings in `*json_array_out` (owned); `[]` before the first launch.
#[no_mangle]
pub unsafe extern "C" fn qm_get_command_line(
    m: *const qm_machine,
    json_array_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    // SAFETY: forwarded contract.
    unsafe {
        get_string(
            ("qm_get_command_line", "json_array_out"),
            m,
            json_array_out,
            |vm| Ok(Some(Value::from(vm.full_args()).to_string())),
            err_out,
        )
    }
}
