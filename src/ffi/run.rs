//! Guest tests over either channel (`qm::Guest`): run a shell command and get its output and
//! exit status, copy files in and out, wait until the guest is ready — over the console or the
//! guest agent, chosen per call by a `qm_channel`.

use std::ffi::{c_char, c_int};

use serde_json::Value;

use super::boundary::{byte_slice, guard, lend_bytes, out, string};
use super::cancel::qm_cancel;
use super::error::{call, qm_error, qm_status};
use super::machine::{machine, qm_machine};
use crate::{Channel, Error, RunOutput};

/// Which channel a `qm_guest_*` call uses.
pub type qm_channel = c_int;

/// The console (`qm_set_console`): a shell at its prompt on the serial port. qm types one line
/// that frames the command with markers made of a fresh nonce; stdout and stderr come merged;
/// kernel messages are cut out of the output (`qm_run_result_kernel_messages`); the shell keeps
/// its state (`cd`, variables) between runs. A timeout or cancel sends Ctrl-C, and the next run
/// resynchronises by itself.
pub const QM_CHANNEL_CONSOLE: qm_channel = 0;
/// The guest agent (`qm_set_guest_agent`): `/bin/sh -c COMMAND` through `guest-exec`; stderr
/// apart; each run is a fresh shell.
pub const QM_CHANNEL_AGENT: qm_channel = 1;

/// The result of `qm_guest_run`: what the command printed and how it ended. Owned by the
/// caller, freed with `qm_run_result_free`; immutable, readable from any thread.
pub struct qm_run_result {
    out: RunOutput,
}

fn channel(c: qm_channel) -> Result<Channel, Error> {
    match c {
        QM_CHANNEL_CONSOLE => Ok(Channel::Console),
        QM_CHANNEL_AGENT => Ok(Channel::Agent),
        other => Err(Error::Invalid(format!(
            "channel {other} is not QM_CHANNEL_CONSOLE (0) or QM_CHANNEL_AGENT (1)"
        ))),
    }
}

/// Runs the shell command `command` (borrowed UTF-8) in the guest over `chan`, within
/// `timeout_ms` (`QM_WAIT_DEFAULT`: 30 s). On success `*result_out` receives a result the
/// caller frees with `qm_run_result_free` — also when the command failed: its status is in
/// `qm_run_result_status`.
///
/// Over the console the command is one line (no CR or LF) that, framed, fits 1000 bytes
/// (about 870 without `'`), else `QM_ERR_INVALID`; `QM_ERR_STATE` while another console wait
/// runs; `QM_ERR_CONSOLE_CLOSED` at once when QEMU exits (the guest powered off or died) before
/// the status came; `QM_ERR_TIMEOUT` / `QM_ERR_INTERRUPTED` when the wait ends first
/// (Ctrl-C has then been sent). Over the agent, the errors of `qm_agent_exec` (a program still
/// running when the wait ends keeps running: the agent cannot kill it).
#[no_mangle]
pub unsafe extern "C" fn qm_guest_run(
    m: *mut qm_machine,
    chan: qm_channel,
    command: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    result_out: *mut *mut qm_run_result,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_guest_run", err_out, || {
        let out = out(result_out, "result_out")?;
        let chan = channel(chan)?;
        // SAFETY: the caller's contracts (a live handle, a NUL-terminated string, a live token).
        let (m, command, wait) = unsafe {
            (
                machine(m)?,
                string(command, "command")?,
                super::cancel::wait(timeout_ms, cancel)?,
            )
        };
        let result = m.vm.guest(chan).run(command, wait)?;
        out.write(Box::into_raw(Box::new(qm_run_result { out: result })));
        Ok(())
    })
}

/// Waits until the guest answers over `chan`, within `timeout_ms` (`QM_WAIT_DEFAULT`: 30 s):
/// over the console until its shell runs a no-op command (a probe that gets no answer is
/// interrupted with Ctrl-C and sent again); over the agent until `guest-sync` is answered.
#[no_mangle]
pub unsafe extern "C" fn qm_guest_wait_ready(
    m: *mut qm_machine,
    chan: qm_channel,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_guest_wait_ready", err_out, || {
        let chan = channel(chan)?;
        // SAFETY: the caller's contracts.
        let (m, wait) = unsafe { (machine(m)?, super::cancel::wait(timeout_ms, cancel)?) };
        m.vm.guest(chan).wait_ready(wait)
    })
}

/// Writes `len` bytes of `data` (borrowed; NULL when `len` is 0) to the guest file `path`
/// (borrowed), creating or truncating it. Over the agent: `guest-file-write`. Over the console:
/// `printf` lines with octal escapes, a few hundred bytes each — fine for small files.
#[no_mangle]
pub unsafe extern "C" fn qm_guest_write_file(
    m: *mut qm_machine,
    chan: qm_channel,
    path: *const c_char,
    data: *const u8,
    len: usize,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_guest_write_file", err_out, || {
        let chan = channel(chan)?;
        // SAFETY: the caller's contracts.
        let (m, path, data, wait) = unsafe {
            (
                machine(m)?,
                string(path, "path")?,
                byte_slice(data, len, "data")?,
                super::cancel::wait(timeout_ms, cancel)?,
            )
        };
        m.vm.guest(chan).write_file(path, data, wait)
    })
}

/// Reads the whole guest file `path` (borrowed). On success `*data_out` receives the bytes
/// (owned: free with `qm_bytes_free(data, len)`; NULL for an empty file) and `*len_out` their
/// number. `QM_ERR_INVALID` when the file holds more than `max_bytes`, and over the console
/// when `cat` fails (the message has its error). Over the console the bytes come verbatim
/// through `cat` (a line shaped like a kernel record and ending in CR LF would be cut out).
#[no_mangle]
pub unsafe extern "C" fn qm_guest_read_file(
    m: *mut qm_machine,
    chan: qm_channel,
    path: *const c_char,
    max_bytes: usize,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    data_out: *mut *mut u8,
    len_out: *mut usize,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_guest_read_file", err_out, || {
        let (data_slot, len_slot) = (out(data_out, "data_out")?, out(len_out, "len_out")?);
        let chan = channel(chan)?;
        // SAFETY: the caller's contracts.
        let (m, path, wait) = unsafe {
            (
                machine(m)?,
                string(path, "path")?,
                super::cancel::wait(timeout_ms, cancel)?,
            )
        };
        let data = m.vm.guest(chan).read_file(path, max_bytes, wait)?;
        let len = data.len();
        let ptr = if len == 0 {
            std::ptr::null_mut()
        } else {
            // Freed by qm_bytes_free(ptr, len), as qm_agent_file_read's bytes.
            Box::into_raw(data.into_boxed_slice()).cast::<u8>()
        };
        data_slot.write(ptr);
        len_slot.write(len);
        Ok(())
    })
}

/// Borrows a result, or `None` for NULL.
///
/// # Safety
/// A non-NULL `r` must be a live result from `qm_guest_run`.
unsafe fn result<'a>(r: *const qm_run_result) -> Option<&'a qm_run_result> {
    // SAFETY: the caller's contract; as_ref handles NULL.
    unsafe { r.as_ref() }
}

/// The command's exit status as a shell's `$?` has it: 0–255, 128 + N when signal N killed
/// it; -1 for NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_run_result_status(r: *const qm_run_result) -> c_int {
    guard(-1, || {
        // SAFETY: NULL or a live result.
        unsafe { result(r) }.map_or(-1, |r| r.out.status)
    })
}

/// What the command wrote to stdout (over the console: stdout and stderr together, exactly as
/// written): `*len_out` (may be NULL) receives the length; the bytes (not NUL-terminated; NULL
/// when empty) belong to `r` and stay valid until `qm_run_result_free`.
#[no_mangle]
pub unsafe extern "C" fn qm_run_result_stdout(
    r: *const qm_run_result,
    len_out: *mut usize,
) -> *const u8 {
    guard(std::ptr::null(), || {
        // SAFETY: NULL or a live result; NULL or a writable len_out.
        unsafe { lend_bytes(result(r).map(|r| &r.out.stdout[..]), len_out) }
    })
}

/// What the command wrote to stderr, as `qm_run_result_stdout`; `*len_out` is 0 and the result
/// NULL over the console, which has no separate stderr (see `qm_run_result_has_stderr`).
#[no_mangle]
pub unsafe extern "C" fn qm_run_result_stderr(
    r: *const qm_run_result,
    len_out: *mut usize,
) -> *const u8 {
    guard(std::ptr::null(), || {
        // SAFETY: NULL or a live result; NULL or a writable len_out.
        unsafe { lend_bytes(result(r).and_then(|r| r.out.stderr.as_deref()), len_out) }
    })
}

/// True when the channel kept stderr apart (the agent); false over the console, or for NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_run_result_has_stderr(r: *const qm_run_result) -> bool {
    guard(false, || {
        // SAFETY: NULL or a live result.
        unsafe { result(r) }.is_some_and(|r| r.out.stderr.is_some())
    })
}

/// The kernel messages the console printed during the run, cut out of stdout, as a JSON array
/// of strings in `*json_array_out` (owned: free with `qm_string_free`; `[]` over the agent).
#[no_mangle]
pub unsafe extern "C" fn qm_run_result_kernel_messages(
    r: *const qm_run_result,
    json_array_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_run_result_kernel_messages", err_out, || {
        let out = out(json_array_out, "json_array_out")?;
        // SAFETY: NULL or a live result.
        let r = unsafe { result(r) }.ok_or_else(|| super::boundary::null("r"))?;
        out.write_json(Some(&Value::from(r.out.kernel_messages.clone())));
        Ok(())
    })
}

/// Frees a result of `qm_guest_run`; NULL is a no-op. Its stdout/stderr pointers are invalid
/// afterwards.
#[no_mangle]
pub unsafe extern "C" fn qm_run_result_free(r: *mut qm_run_result) {
    guard((), || {
        if !r.is_null() {
            // SAFETY: a non-NULL r came from qm_guest_run and is freed only once.
            drop(unsafe { Box::from_raw(r) });
        }
    })
}
