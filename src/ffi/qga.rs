//! The guest agent (`qemu-ga`) of a `qm_machine`, and `qm_exec_result`.
//!
//! Every `qm_agent_*` call takes a launched machine configured with `qm_set_guest_agent` (or
//! `qm_set_guest_agent_unix`); without one it fails with `QM_ERR_STATE`. Agent calls never
//! run concurrently on the channel: calls from several threads queue, in arrival order, and
//! each call's `timeout_ms` includes its time in the queue. `QM_WAIT_DEFAULT` is 30 s.

use std::ffi::{c_char, c_int};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::boundary::{
    self, byte_slice, guard, lend_bytes, opt_json_object, opt_string, out, string, strings, Result,
};
use super::cancel::qm_cancel;
use super::error::{call, qm_error, qm_status};
use super::machine::{machine, qm_machine};
use crate::{AgentChannel, Error, Exec, ExecOutput, GuestAgent, ShutdownMode, Wait};

/// The result of `qm_agent_exec`: how the guest program ended and what it wrote. Owned by the
/// caller, freed with `qm_exec_result_free`; immutable, readable from any thread.
pub struct qm_exec_result {
    out: ExecOutput,
}

/// The agent of a launched machine and the wait of the call.
///
/// # Safety
/// A non-NULL `m` must be a live handle; a non-NULL `cancel` a live token.
unsafe fn agent(
    m: *const qm_machine,
    timeout_ms: i64,
    cancel: *const qm_cancel,
) -> Result<(Arc<GuestAgent>, Wait)> {
    // SAFETY: the caller's contracts.
    let (m, wait) = unsafe { (machine(m)?, super::cancel::wait(timeout_ms, cancel)?) };
    Ok((m.vm.agent()?, wait))
}

/// Gives the guest a channel to its agent, or removes it (`enabled` false; the default is
/// none): a `virtserialport` named `org.qemu.guest_agent.0` on a socketpair qm owns, plus a
/// `virtio-serial` controller unless the machine's arguments (`qm_add_args`) already have a
/// `-device virtio-serial...` (the port then goes on the first virtio-serial bus). qm adds these
/// arguments after the user's. Applies to the next launch.
#[no_mangle]
pub unsafe extern "C" fn qm_set_guest_agent(
    m: *mut qm_machine,
    enabled: bool,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_guest_agent", err_out, || {
        // SAFETY: the handle contract.
        let m = unsafe { machine(m) }?;
        m.vm.set_guest_agent(enabled.then_some(AgentChannel::SocketPair));
        Ok(())
    })
}

/// Like `qm_set_guest_agent(m, true)`, but the channel is a unix socket at `path` (borrowed;
/// NULL: `<sock dir>/<name>-qga.sock`): qm listens on it (mode 0600), QEMU connects at startup,
/// qm accepts during `qm_launch` and removes the file at cleanup.
#[no_mangle]
pub unsafe extern "C" fn qm_set_guest_agent_unix(
    m: *mut qm_machine,
    path: *const c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_guest_agent_unix", err_out, || {
        // SAFETY: the handle and string contracts.
        let (m, path) = unsafe { (machine(m)?, opt_string(path, "path")?) };
        m.vm.set_guest_agent(Some(AgentChannel::Unix(path.map(PathBuf::from))));
        Ok(())
    })
}

/// Waits until the guest agent answers `guest-sync-delimited` (sent again every 500 ms while
/// it is silent; stale data in the channel is dropped). Use it right after `qm_launch` to wait
/// for the guest to boot and start `qemu-ga`; other agent calls sync by themselves when needed.
/// `QM_ERR_TIMEOUT` says whether the agent answered at all.
#[no_mangle]
pub unsafe extern "C" fn qm_agent_sync(
    m: *mut qm_machine,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_agent_sync", err_out, || {
        // SAFETY: forwarded contracts.
        let (ga, wait) = unsafe { agent(m, timeout_ms, cancel) }?;
        ga.sync(wait)
    })
}

/// Runs the agent command `cmd` (borrowed) with `args_json` (borrowed JSON object, or NULL /
/// `"null"` for none) and stores the agent's raw reply, `{"return": ...}` or
/// `{"error": {"class": ..., "desc": ...}}`, in `*response_out` (owned: `qm_string_free`). An
/// agent error is a success here. A reply that comes after a timeout is dropped, never taken
/// for a later command's.
#[no_mangle]
pub unsafe extern "C" fn qm_agent_execute(
    m: *mut qm_machine,
    cmd: *const c_char,
    args_json: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    response_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_agent_execute", err_out, || {
        let out = out(response_out, "response_out")?;
        // SAFETY: forwarded contracts.
        let (cmd, args) = unsafe {
            (
                string(cmd, "cmd")?,
                opt_json_object(args_json, "args_json")?,
            )
        };
        // SAFETY: forwarded contracts.
        let (ga, wait) = unsafe { agent(m, timeout_ms, cancel) }?;
        out.write_json(Some(&ga.execute(cmd, args.as_ref(), wait)?));
        Ok(())
    })
}

/// Like `qm_agent_execute`, but stores only the `return` value (JSON, owned) in `*return_out`;
/// an agent error is `QM_ERR_QMP`, with the agent's class and description in
/// `qm_error_qmp_class` / `qm_error_qmp_desc`.
#[no_mangle]
pub unsafe extern "C" fn qm_agent_cmd(
    m: *mut qm_machine,
    cmd: *const c_char,
    args_json: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    return_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_agent_cmd", err_out, || {
        let out = out(return_out, "return_out")?;
        // SAFETY: forwarded contracts.
        let (cmd, args) = unsafe {
            (
                string(cmd, "cmd")?,
                opt_json_object(args_json, "args_json")?,
            )
        };
        // SAFETY: forwarded contracts.
        let (ga, wait) = unsafe { agent(m, timeout_ms, cancel) }?;
        out.write_json(Some(&ga.cmd(cmd, args.as_ref(), wait)?));
        Ok(())
    })
}

/// `guest-ping`: `QM_OK` when the agent answers.
#[no_mangle]
pub unsafe extern "C" fn qm_agent_ping(
    m: *mut qm_machine,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_agent_ping", err_out, || {
        // SAFETY: forwarded contracts.
        let (ga, wait) = unsafe { agent(m, timeout_ms, cancel) }?;
        ga.ping(wait)
    })
}

/// Runs `path` (borrowed; absolute, or looked up in the agent's `PATH`) in the guest with the
/// `argc` arguments `argv` (borrowed; `argv[0]` is the first argument, not the program; NULL
/// when `argc` is 0), the `envc` `NAME=VALUE` entries `env` (NULL when 0), and `input_len`
/// bytes of `input` on its stdin (NULL when 0). Polls `guest-exec-status` every
/// `interval_ms` (`QM_WAIT_DEFAULT`: 10 ms) until the program ends, all within `timeout_ms`.
///
/// With `capture`, stdout and stderr are kept, at most `max_output` bytes each (0: 16 MiB, the
/// agent's own cap; more is dropped and reported by `qm_exec_result_*_truncated`). On success `*result_out` receives
/// a result the caller frees with `qm_exec_result_free`. When the wait ends first
/// (`QM_ERR_TIMEOUT`, `QM_ERR_INTERRUPTED`), the program keeps running in the guest: the
/// agent cannot kill it; the error message names its pid.
#[no_mangle]
pub unsafe extern "C" fn qm_agent_exec(
    m: *mut qm_machine,
    path: *const c_char,
    argv: *const *const c_char,
    argc: usize,
    env: *const *const c_char,
    envc: usize,
    input: *const u8,
    input_len: usize,
    capture: bool,
    max_output: usize,
    interval_ms: i64,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    result_out: *mut *mut qm_exec_result,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_agent_exec", err_out, || {
        let out = out(result_out, "result_out")?;
        // SAFETY: the string and array contracts.
        let (path, args, env) = unsafe {
            (
                string(path, "path")?,
                strings(argv, argc, "argv")?,
                strings(env, envc, "env")?,
            )
        };
        // SAFETY: `input` points to `input_len` readable bytes (checked for NULL).
        let input = unsafe { byte_slice(input, input_len, "input") }?;
        let mut req = Exec::new(path).args(args).env(env).capture(capture);
        if max_output > 0 {
            req = req.max_output(max_output);
        }
        if input_len > 0 {
            req = req.input(input);
        }
        if interval_ms != boundary::DEFAULT {
            match boundary::millis(interval_ms, "interval_ms")? {
                Some(d) if d > Duration::ZERO => req = req.interval(d),
                _ => {
                    return Err(Error::Invalid(
                        "interval_ms must be > 0 or QM_WAIT_DEFAULT".into(),
                    ))
                }
            }
        }
        // SAFETY: forwarded contracts.
        let (ga, wait) = unsafe { agent(m, timeout_ms, cancel) }?;
        let result = ga.exec(&req, wait)?;
        out.write(super::handle::new(
            qm_exec_result { out: result },
            &super::handle::EXEC_RESULT,
        ));
        Ok(())
    })
}

/// Borrows a result, or `None` for NULL and (with a warning) for a pointer that is not a live
/// result.
///
/// # Safety
/// A live `r` stays live for `'a` (until `qm_exec_result_free`).
unsafe fn result<'a>(r: *const qm_exec_result) -> Option<&'a qm_exec_result> {
    // SAFETY: the caller's contract; a pointer that is not live is refused before any read.
    unsafe { super::handle::get(r, &super::handle::EXEC_RESULT, "qm_exec_result_*") }
}

/// Stores `value` in `*out` when both exist; true when it did.
///
/// # Safety
/// A non-NULL `out` must point to a writable `c_int`.
unsafe fn store(value: Option<i32>, out: *mut c_int) -> bool {
    match value {
        Some(v) if !out.is_null() => {
            // SAFETY: not NULL, and writable by the caller's contract.
            unsafe { out.write(v) };
            true
        }
        _ => false,
    }
}

/// The program's exit status in `*code_out`: true when it exited (false when a signal killed
/// it, or for NULL).
#[no_mangle]
pub unsafe extern "C" fn qm_exec_result_exit_code(
    r: *const qm_exec_result,
    code_out: *mut c_int,
) -> bool {
    guard(false, || {
        // SAFETY: NULL or a live result; NULL or a writable code_out.
        unsafe { store(result(r).and_then(|r| r.out.exit_code), code_out) }
    })
}

/// The signal that killed the program in `*signal_out`: true when one did (false otherwise,
/// or for NULL).
#[no_mangle]
pub unsafe extern "C" fn qm_exec_result_signal(
    r: *const qm_exec_result,
    signal_out: *mut c_int,
) -> bool {
    guard(false, || {
        // SAFETY: NULL or a live result; NULL or a writable signal_out.
        unsafe { store(result(r).and_then(|r| r.out.signal), signal_out) }
    })
}

/// The program's pid in the guest; -1 for NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_exec_result_pid(r: *const qm_exec_result) -> i64 {
    guard(-1, || {
        // SAFETY: NULL or a live result.
        unsafe { result(r) }.map_or(-1, |r| r.out.pid)
    })
}

/// The captured stdout: `*len_out` (may be NULL) receives its length; the bytes (not
/// NUL-terminated; NULL when empty) belong to `r` and stay valid until `qm_exec_result_free`.
#[no_mangle]
pub unsafe extern "C" fn qm_exec_result_stdout(
    r: *const qm_exec_result,
    len_out: *mut usize,
) -> *const u8 {
    guard(std::ptr::null(), || {
        // SAFETY: NULL or a live result; NULL or a writable len_out.
        unsafe { lend_bytes(result(r).map(|r| &r.out.stdout[..]), len_out) }
    })
}

/// The captured stderr, as `qm_exec_result_stdout`.
#[no_mangle]
pub unsafe extern "C" fn qm_exec_result_stderr(
    r: *const qm_exec_result,
    len_out: *mut usize,
) -> *const u8 {
    guard(std::ptr::null(), || {
        // SAFETY: NULL or a live result; NULL or a writable len_out.
        unsafe { lend_bytes(result(r).map(|r| &r.out.stderr[..]), len_out) }
    })
}

/// True when stdout was longer than the cap (qm's `max_output`, or the agent's own 16 MiB).
#[no_mangle]
pub unsafe extern "C" fn qm_exec_result_stdout_truncated(r: *const qm_exec_result) -> bool {
    guard(false, || {
        // SAFETY: NULL or a live result.
        unsafe { result(r) }.is_some_and(|r| r.out.stdout_truncated)
    })
}

/// True when stderr was longer than the cap.
#[no_mangle]
pub unsafe extern "C" fn qm_exec_result_stderr_truncated(r: *const qm_exec_result) -> bool {
    guard(false, || {
        // SAFETY: NULL or a live result.
        unsafe { result(r) }.is_some_and(|r| r.out.stderr_truncated)
    })
}

/// Frees a result of `qm_agent_exec`; NULL is a no-op. Its stdout/stderr pointers are invalid
/// afterwards.
#[no_mangle]
pub unsafe extern "C" fn qm_exec_result_free(r: *mut qm_exec_result) {
    guard((), || {
        // SAFETY: NULL, not live (left alone, with a warning), or live and unused elsewhere.
        unsafe { super::handle::free(r, &super::handle::EXEC_RESULT, "qm_exec_result_free") }
    })
}

/// Reads the whole guest file `path` (borrowed) in 1 MiB round trips. On success `*data_out`
/// receives the bytes (owned: free with `qm_bytes_free(data, len)`; NULL for an empty file)
/// and `*len_out` their number. `QM_ERR_INVALID` when the file holds more than `max_bytes`;
/// `QM_ERR_QMP` for the agent's errors (no such file ...).
#[no_mangle]
pub unsafe extern "C" fn qm_agent_file_read(
    m: *mut qm_machine,
    path: *const c_char,
    max_bytes: usize,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    data_out: *mut *mut u8,
    len_out: *mut usize,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_agent_file_read", err_out, || {
        let (data_slot, len_slot) = (out(data_out, "data_out")?, out(len_out, "len_out")?);
        // SAFETY: forwarded contracts.
        let path = unsafe { string(path, "path") }?;
        // SAFETY: forwarded contracts.
        let (ga, wait) = unsafe { agent(m, timeout_ms, cancel) }?;
        let data = ga.file_read(path, max_bytes, wait)?;
        let len = data.len();
        let ptr = if len == 0 {
            std::ptr::null_mut()
        } else {
            Box::into_raw(data.into_boxed_slice()).cast::<u8>()
        };
        data_slot.write(ptr);
        len_slot.write(len);
        Ok(())
    })
}

/// Frees bytes returned by `qm_agent_file_read`, given their length. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn qm_bytes_free(data: *mut u8, len: usize) {
    guard((), || {
        if !data.is_null() {
            // SAFETY: data and len came from qm_agent_file_read (a boxed slice of len bytes).
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(data, len)) });
        }
    })
}

/// Writes `len` bytes of `data` (borrowed; NULL when `len` is 0) to the guest file `path`
/// (borrowed), creating or truncating it, in 1 MiB round trips.
#[no_mangle]
pub unsafe extern "C" fn qm_agent_file_write(
    m: *mut qm_machine,
    path: *const c_char,
    data: *const u8,
    len: usize,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_agent_file_write", err_out, || {
        // SAFETY: forwarded contracts.
        let (path, data) = unsafe { (string(path, "path")?, byte_slice(data, len, "data")?) };
        // SAFETY: forwarded contracts.
        let (ga, wait) = unsafe { agent(m, timeout_ms, cancel) }?;
        ga.file_write(path, data, wait)
    })
}

/// `guest-shutdown` with `mode` (borrowed: `"powerdown"`, `"halt"`, `"reboot"`; NULL:
/// `"powerdown"`). The agent does not answer a shutdown that works: `QM_OK` means it took the
/// command (it answered the sync qm sends after it) or the channel closed (QEMU exited with the
/// guest). `QM_ERR_QMP` when the agent reports a failure. Wait for QEMU's `SHUTDOWN` event or
/// its exit separately.
#[no_mangle]
pub unsafe extern "C" fn qm_agent_shutdown(
    m: *mut qm_machine,
    mode: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_agent_shutdown", err_out, || {
        // SAFETY: forwarded contracts.
        let mode: ShutdownMode = match unsafe { opt_string(mode, "mode") }? {
            Some(text) => text.parse()?,
            None => ShutdownMode::default(),
        };
        // SAFETY: forwarded contracts.
        let (ga, wait) = unsafe { agent(m, timeout_ms, cancel) }?;
        ga.shutdown(mode, wait)
    })
}

/// `guest-get-osinfo`: a JSON object (owned: `qm_string_free`) in `*json_out`.
#[no_mangle]
pub unsafe extern "C" fn qm_agent_get_osinfo(
    m: *mut qm_machine,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    json_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_agent_get_osinfo", err_out, || {
        let out = out(json_out, "json_out")?;
        // SAFETY: forwarded contracts.
        let (ga, wait) = unsafe { agent(m, timeout_ms, cancel) }?;
        out.write_json(Some(&ga.get_osinfo(wait)?));
        Ok(())
    })
}

/// `guest-get-time`: the guest's clock in nanoseconds since the Unix epoch, in `*ns_out`.
#[no_mangle]
pub unsafe extern "C" fn qm_agent_get_time(
    m: *mut qm_machine,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    ns_out: *mut i64,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_agent_get_time", err_out, || {
        let out = out(ns_out, "ns_out")?;
        // SAFETY: forwarded contracts.
        let (ga, wait) = unsafe { agent(m, timeout_ms, cancel) }?;
        out.write(ga.get_time(wait)?);
        Ok(())
    })
}
