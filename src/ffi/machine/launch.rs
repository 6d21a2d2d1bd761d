//! Launching a `qm_machine`: `qm_launch`, many at once (`qm_launch_all`), and the prepared
//! launch (`qm_launch_prepare`, `qm_launch_argv`, `qm_launch_abort`).

use std::ffi::{c_char, c_int};

use serde_json::Value;

use super::{machine, open_fd, qm_machine};
use crate::ffi::boundary::{guard, out, strings, Result};
use crate::ffi::cancel::{self, qm_cancel};
use crate::ffi::error::{call, qm_error, qm_status};
use crate::ffi::handle;
use crate::{Error, Machine};

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

/// Launches the `n` machines of `machines` at once from the calling thread, so launching many
/// machines needs no thread per machine: every QEMU is started first, then each is connected
/// and negotiated as `qm_launch` does, in the order they become ready, all within one
/// `timeout_ms` (`QM_WAIT_DEFAULT`: the largest QMP timer of the machines, or no limit when one
/// of them has none; `QM_WAIT_FOREVER`) and until `cancel` (may be NULL) fires.
///
/// `machines` holds `n` borrowed handles (NULL only when `n` is 0). `errs_out` (may be NULL:
/// then only the status reports failures) points to an array of `n` `qm_error *`: each
/// `errs_out[i]` is set to NULL when machine i launched, or to an error the caller owns and
/// frees with `qm_error_free`, the one `qm_launch` would give that machine:
/// `QM_ERR_STATE` when already launched, `QM_ERR_LAUNCH` (cleaned up as for `qm_launch`),
/// `QM_ERR_INTERRUPTED` when the token fired before the machine started, `QM_ERR_INVALID`
/// for an entry that is not a live handle or is the same handle as an earlier entry (launched
/// once, for its first place). One machine's failure leaves the others alone. A `timeout_ms`
/// or `cancel` that is invalid fails every machine with `QM_ERR_INVALID`, launching nothing.
///
/// Returns `QM_OK` when every machine launched, otherwise the status of the first failed one
/// (in array order). Each machine's launch blocks shutdowns of it until the whole call returns.
#[no_mangle]
pub unsafe extern "C" fn qm_launch_all(
    machines: *const *mut qm_machine,
    n: usize,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    errs_out: *mut *mut qm_error,
) -> qm_status {
    const NAME: &str = "qm_launch_all";
    let errs: &mut [*mut qm_error] = if errs_out.is_null() || n == 0 {
        &mut []
    } else {
        // SAFETY: not NULL; the caller promises `n` writable `qm_error *`.
        unsafe { std::slice::from_raw_parts_mut(errs_out, n) }
    };
    errs.fill(std::ptr::null_mut());
    let results = guard(None, || {
        // SAFETY: the array, handle and token contracts (see `launch_results`).
        Some(unsafe { launch_results(machines, n, timeout_ms, cancel) })
    });
    let results: Vec<Option<Result>> = match results {
        Some(results) => results.into_iter().map(Some).collect(),
        None => (0..n).map(|_| None).collect(),
    };
    let mut status = qm_status::QM_OK;
    for (i, result) in results.into_iter().enumerate() {
        let err_out = errs
            .get_mut(i)
            .map_or(std::ptr::null_mut(), std::ptr::from_mut);
        // Each error is stored as every export stores one (`call`).
        let one = match result {
            Some(result) => call(NAME, err_out, || result),
            None => call(NAME, err_out, || -> Result {
                panic!("the batch launch panicked; the machines' states are unknown")
            }),
        };
        if status == qm_status::QM_OK {
            status = one;
        }
    }
    status
}

/// The body of `qm_launch_all`: one result per entry of `machines`.
///
/// # Safety
/// A non-NULL `machines` points to `n` pointers, each NULL, or a handle live for the call (a
/// handle that is not live is refused before any read); a live `cancel` stays live.
unsafe fn launch_results(
    machines: *const *mut qm_machine,
    n: usize,
    timeout_ms: i64,
    cancel: *const qm_cancel,
) -> Vec<Result> {
    if n == 0 {
        return Vec::new();
    }
    if machines.is_null() {
        let null = || Error::Invalid(format!("machines is NULL but its length is {n}"));
        return (0..n).map(|_| Err(null())).collect();
    }
    // SAFETY: the token contract.
    let Ok(wait) = (unsafe { cancel::wait(timeout_ms, cancel) }) else {
        // The same error for each.
        // SAFETY: as above.
        return (0..n)
            .map(|_| unsafe { cancel::wait(timeout_ms, cancel) }.map(drop))
            .collect();
    };
    // SAFETY: not NULL; the caller promises `n` readable pointers.
    let handles = unsafe { std::slice::from_raw_parts(machines, n) };
    let mut results: Vec<Option<Result>> = (0..n).map(|_| None).collect();
    let mut valid: Vec<(usize, &Machine)> = Vec::with_capacity(n);
    for (i, &m) in handles.iter().enumerate() {
        // SAFETY: each entry is NULL or a handle: not live ones are refused before any read.
        match unsafe { handle::borrow(m, &handle::MACHINE, &format!("machines[{i}]")) } {
            Ok(m) => valid.push((i, &m.vm)),
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    let refs: Vec<&Machine> = valid.iter().map(|(_, m)| *m).collect();
    let launched = crate::launch_all(&refs, wait);
    for ((i, _), result) in valid.iter().zip(launched) {
        // The core names entries by their place among the valid ones: name them by the
        // caller's.
        results[*i] = Some(result.map_err(|e| match e {
            Error::Invalid(_) => Error::Invalid(format!(
                "machines[{i}] is the same handle as an earlier entry, which this call launches"
            )),
            other => other,
        }));
    }
    results
        .into_iter()
        .map(|r| r.expect("every entry has a result"))
        .collect()
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
