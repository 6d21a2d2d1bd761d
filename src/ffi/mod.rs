//! The C ABI (see `include/qm.h`, generated from this module by `make header`: cbindgen in
//! `tools/header`).
//! Only this module knows about C; the core never depends on it.
//!
//! One file (or directory) per C type or topic, declared below in the order of the header's
//! sections: [`error`] (`qm_status`, `qm_error`), [`status`] (`qm_status_str`), [`cancel`]
//! (`qm_cancel`), [`shared`] (the default timeout, the seconds → ms rule, `conv_keys`), [`machine`]
//! (`qm_machine`: the handle in `machine/mod.rs`, its calls split by concern into `config`,
//! `launch`, `qmp`, `events`, `shutdown`, `state`), [`attach`] (`qm_attach`: a QEMU someone else
//! started), [`guest`] (the test guest), [`qga`] (the guest agent), [`console`] (console
//! interaction and its descriptor), [`json`] (JSON Pointer accessors), [`log`] (the log callback).
//! `boundary` holds the shared plumbing, `handle` the record of live handles (panic boundary, NULL/UTF-8/JSON checks, timeouts, `*_out`
//! writes). The calls that belong to no type (version, strings, log level, `qm_event_match`) are in
//! this file.
//!
//! Every export is `#[no_mangle] pub unsafe extern "C"` (or safe when it takes no pointer). The
//! pointer contract of each one is in its documentation and in the header's preamble: handles
//! come from their `_new` function and are live, strings are NUL-terminated, `*_out` pointers
//! point to writable variables. Those prose contracts stand in for `# Safety` sections, which
//! would only repeat them in every function of the header.

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

// The order of these declarations is the order of the header's sections.
pub mod error;

pub mod status;

pub mod shared;

pub mod cancel;

pub mod machine;

pub mod attach;

pub mod guest;

/// The Linux test guest's arguments (`qm_linux_guest_qemu_args`).
pub mod linux_guest;

/// Guest tests over the console or the agent: `qm_guest_run` and `qm_run_result`.
pub mod run;

pub mod qga;

pub mod console;

pub mod json;

pub mod log;

pub mod schema;

pub mod qmpf;

pub mod oob;

pub mod fake;

pub mod template;

mod boundary;

mod handle;

use std::ffi::{c_char, c_int, CString};

use boundary::guard;
use error::{call, qm_error, qm_status};

/// `timeout_ms` value: wait as long as it takes (a `qm_cancel` can still interrupt the call).
pub const QM_WAIT_FOREVER: i64 = -1;

/// `timeout_ms` value: the call's own default. For `qm_qmp` and `qm_cmd` that is the machine's
/// QMP timer (`qm_set_qmp_timer`, 30 s unless changed); for `qm_shutdown` and `qm_wait` it is
/// 30 s. Other calls reject it with `QM_ERR_INVALID`.
pub const QM_WAIT_DEFAULT: i64 = -2;

/// How much qm logs (`qm_set_log_level`), to stderr or to a `qm_set_log_callback` callback.
pub type qm_log_level = c_int;

/// Log nothing.
pub const QM_LOG_OFF: qm_log_level = 0;
/// Log warnings only (e.g. QEMU killed by a signal qm did not send). The default, unless the
/// environment variable `QM_LOG` says otherwise: `off`, `warn` or `debug` in any case, or the
/// number of a `QM_LOG_*` constant (`0`, `1`, `2`); any other value gets one warning.
pub const QM_LOG_WARN: qm_log_level = 1;
/// Log every lifecycle step and every QMP message.
pub const QM_LOG_DEBUG: qm_log_level = 2;

/// The version of the qm library, e.g. `"0.2.0"`: a static string, never freed. Thread-safe.
#[no_mangle]
pub extern "C" fn qm_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Frees a string returned by qm (every `char *` a `*_out` parameter receives). NULL is a
/// no-op. Only for strings qm returned, once each, and never with `free()`: qm's allocator is
/// its own. Strings borrowed from a `qm_error` are freed with the error, not here.
#[no_mangle]
pub unsafe extern "C" fn qm_string_free(s: *mut c_char) {
    guard((), || {
        if !s.is_null() {
            // SAFETY: a non-NULL s came from CString::into_raw in qm and is freed only once.
            drop(unsafe { CString::from_raw(s) });
        }
    })
}

/// Sets how much qm logs (to stderr or the `qm_set_log_callback` callback), for the whole process (it overrides `QM_LOG`).
/// Thread-safe. `QM_ERR_INVALID` for a value that is not a `QM_LOG_*` constant (the level is
/// then unchanged).
#[no_mangle]
pub unsafe extern "C" fn qm_set_log_level(
    level: qm_log_level,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_log_level", err_out, || {
        let level = match level {
            QM_LOG_OFF => crate::LogLevel::Off,
            QM_LOG_WARN => crate::LogLevel::Warn,
            QM_LOG_DEBUG => crate::LogLevel::Debug,
            other => {
                return Err(crate::Error::Invalid(format!(
                    "log level {other} is not one of 0 (off), 1 (warn), 2 (debug)"
                )))
            }
        };
        crate::set_log_level(level);
        Ok(())
    })
}

/// Tells whether an event matches a filter, by the rule of QEMU's `QEMUMachine.event_match`:
/// the filter is a sub-dict: every key of the filter must be in the event, recursively, with
/// an equal value wherever the filter's value is not `null` (`null` matches anything). For
/// example the filter `{"data": {"reason": "host-qmp-quit"}}` matches a `SHUTDOWN` event caused
/// by `quit`.
///
/// `event_json` is any JSON text; `match_json` is any JSON text, or NULL (matches everything).
/// On success stores the answer in `*matches_out`. `QM_ERR_INVALID` when a text is not valid
/// UTF-8 JSON or `event_json`/`matches_out` is NULL. Pure function: thread-safe, never blocks.
#[no_mangle]
pub unsafe extern "C" fn qm_event_match(
    event_json: *const c_char,
    match_json: *const c_char,
    matches_out: *mut bool,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_event_match", err_out, || {
        let out = boundary::out(matches_out, "matches_out")?;
        // SAFETY: NUL-terminated strings (the caller's contract).
        let event = boundary::json(
            unsafe { boundary::string(event_json, "event_json") }?,
            "event_json",
        )?;
        // SAFETY: as above.
        let filter = match unsafe { boundary::opt_string(match_json, "match_json") }? {
            Some(text) => Some(boundary::json(text, "match_json")?),
            None => None,
        };
        out.write(crate::event_match(&event, filter.as_ref()));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_the_crate_version() {
        // SAFETY: qm_version returns a static NUL-terminated string.
        let v = unsafe { std::ffi::CStr::from_ptr(qm_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn log_levels_are_the_core_levels() {
        // The log callback passes the core level as it is.
        assert_eq!(crate::LogLevel::Off as qm_log_level, QM_LOG_OFF);
        assert_eq!(crate::LogLevel::Warn as qm_log_level, QM_LOG_WARN);
        assert_eq!(crate::LogLevel::Debug as qm_log_level, QM_LOG_DEBUG);
    }

    #[test]
    fn wait_constants_match_the_boundary() {
        assert_eq!(QM_WAIT_FOREVER, boundary::FOREVER);
        assert_eq!(QM_WAIT_DEFAULT, boundary::DEFAULT);
    }
}
