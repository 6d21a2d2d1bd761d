//! `qm_qmpf` / `qm_jsonf`: QMP commands built from a printf-style format, in the spirit of
//! QEMU's `qtest_qmp()`, without C variadics: the header's `QM_QMPF` / `QM_JSONF` macros turn
//! each argument into a typed `qm_arg` (C11 `_Generic`), so every argument arrives with the
//! type the compiler saw, and a format that does not fit its arguments is `QM_ERR_INVALID`
//! naming the conversion, never a misread argument. The rules of the format are the core's
//! (`src/format.rs`).

use std::ffi::{c_char, c_int};

use serde_json::Value;

use super::boundary::{out, string, Result};
use super::cancel::{self, qm_cancel};
use super::error::{call, qm_error, qm_status};
use super::machine::{machine, qm_machine};
use crate::format::Arg;
use crate::Error;

/// The type of a `qm_arg`.
pub type qm_arg_kind = c_int;

/// Ends an argument list (the macros add one; never read as an argument).
pub const QM_ARG_END: qm_arg_kind = 0;
/// `s`: a NUL-terminated UTF-8 string (borrowed for the call), for `%s` or `%j`.
pub const QM_ARG_STR: qm_arg_kind = 1;
/// `i`: a signed integer, for `%d %i %ld %li %lld %lli` (and `%u …` when not negative, `%b`).
pub const QM_ARG_INT: qm_arg_kind = 2;
/// `u`: an unsigned integer, for `%u %lu %llu` (and `%d …` when it fits, `%b`).
pub const QM_ARG_UINT: qm_arg_kind = 3;
/// `d`: a double, for `%f %g %e`.
pub const QM_ARG_DOUBLE: qm_arg_kind = 4;
/// `i` (0 or 1): a bool, for `%b`.
pub const QM_ARG_BOOL: qm_arg_kind = 5;

/// One argument of a format: its kind and its value in the field the kind names. Make them
/// with `QM_ARG(x)` (the kind follows x's C type) or `qm_arg_str`, `qm_arg_int`,
/// `qm_arg_uint`, `qm_arg_double`, `qm_arg_bool`; the other fields are ignored.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct qm_arg {
    /// A `QM_ARG_*` value.
    pub kind: qm_arg_kind,
    /// The string of `QM_ARG_STR`.
    pub s: *const c_char,
    /// The value of `QM_ARG_INT` and `QM_ARG_BOOL`.
    pub i: i64,
    /// The value of `QM_ARG_UINT`.
    pub u: u64,
    /// The value of `QM_ARG_DOUBLE`.
    pub d: f64,
}

/// The core's arguments from a C array.
///
/// # Safety
/// `args` must point to `nargs` readable `qm_arg`s whose strings are NUL-terminated and live
/// for `'a` (or be NULL with `nargs` 0).
unsafe fn arguments<'a>(args: *const qm_arg, nargs: usize) -> Result<Vec<Arg<'a>>> {
    if nargs == 0 {
        return Ok(Vec::new());
    }
    if args.is_null() {
        return Err(Error::Invalid(format!("args is NULL, with nargs {nargs}")));
    }
    // SAFETY: not NULL; the caller promises nargs readable elements.
    let items = unsafe { std::slice::from_raw_parts(args, nargs) };
    items
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let n = i + 1;
            Ok(match a.kind {
                QM_ARG_STR => {
                    let name = format!("argument {n} (a string)");
                    // SAFETY: the string contract.
                    Arg::Str(unsafe { string(a.s, &name) }?)
                }
                QM_ARG_INT => Arg::Int(a.i),
                QM_ARG_UINT => Arg::Uint(a.u),
                QM_ARG_DOUBLE => Arg::Double(a.d),
                QM_ARG_BOOL => Arg::Bool(a.i != 0),
                other => {
                    return Err(Error::Invalid(format!(
                        "argument {n} has kind {other}, which is not a QM_ARG_* value (an \
                         argument list shorter than nargs?)"
                    )))
                }
            })
        })
        .collect()
}

/// Builds JSON from the printf-style `format` and `nargs` arguments `args` (both borrowed),
/// and stores it in `*json_out` (owned: free with `qm_string_free`). Use the `QM_JSONF` macro,
/// which builds the argument array from plain C values.
///
/// The format is JSON text where strings may also be single-quoted (`'a'`). Outside strings,
/// each conversion takes the next argument: `%s` a string, escaped as a JSON string; `%d %i
/// %ld %li %lld %lli` a signed and `%u %lu %llu` an unsigned integer (`PRId64` / `PRIu64`
/// expand to these); `%f %g %e` a finite double; `%b` a bool (or an integer: non-zero is
/// true); `%j` a string holding JSON text, spliced in as one value. Inside a string `%` is
/// an ordinary character. `QM_ERR_INVALID`, naming the byte offset and the conversion, when a
/// conversion is unknown, an argument has the wrong kind, does not fit, is missing or left
/// over, a string is NULL or not UTF-8, or the result is not JSON. Never blocks.
#[no_mangle]
pub unsafe extern "C" fn qm_jsonf(
    format: *const c_char,
    args: *const qm_arg,
    nargs: usize,
    json_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_jsonf", err_out, || {
        let json = out(json_out, "json_out")?;
        // SAFETY: the string and array contracts.
        let (format, args) = unsafe { (string(format, "format")?, arguments(args, nargs)?) };
        json.write_json(Some(&crate::format::json(format, &args)?));
        Ok(())
    })
}

/// Runs the QMP command that the printf-style `format` and its `nargs` arguments `args` build
/// (see `qm_jsonf` for the format), e.g. `"{'execute': 'blockdev-add', 'arguments':
/// {'driver': 'file', 'node-name': %s, 'filename': %s}}"`, and stores QEMU's raw response as
/// `qm_qmp` does in `*response_out` (owned: free with `qm_string_free`). Use the `QM_QMPF`
/// macro. The JSON must be an object with a string `"execute"` and, optionally, an object
/// `"arguments"`, nothing else. The command goes through the machine's schema checks
/// (`qm_set_schema_policy`) like any `qm_qmp`. Blocks like `qm_qmp`; errors: those of
/// `qm_qmp`, and `QM_ERR_INVALID` for a format that does not fit (nothing is sent).
#[no_mangle]
pub unsafe extern "C" fn qm_qmpf(
    m: *mut qm_machine,
    format: *const c_char,
    args: *const qm_arg,
    nargs: usize,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    response_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_qmpf", err_out, || {
        let response_out = out(response_out, "response_out")?;
        // SAFETY: the handle, string, array and token contracts.
        let (m, format, args, wait) = unsafe {
            (
                machine(m)?,
                string(format, "format")?,
                arguments(args, nargs)?,
                cancel::wait(timeout_ms, cancel)?,
            )
        };
        let command = crate::format::json(format, &args)?;
        let Value::Object(mut fields) = command else {
            return Err(Error::Invalid(
                "the format must build a JSON object {\"execute\": …}".into(),
            ));
        };
        let execute = match fields.remove("execute") {
            Some(Value::String(s)) => s,
            _ => {
                return Err(Error::Invalid(
                    "the format must build an object with a string \"execute\"".into(),
                ))
            }
        };
        let arguments = fields.remove("arguments").filter(|a| !a.is_null());
        if let Some(extra) = fields.keys().next() {
            return Err(Error::Invalid(format!(
                "the format built a member {extra:?}; a command has only \"execute\" and \
                 \"arguments\""
            )));
        }
        let response = m.vm.qmp_with(&execute, arguments.as_ref(), wait)?;
        response_out.write_json(Some(&response));
        Ok(())
    })
}
