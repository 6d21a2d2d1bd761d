//! Facts and rules every binding needs and must not keep a copy of: the default timeout, the
//! seconds → milliseconds rule, and the harness's keyword convention (`conv_keys`). Each is
//! decided once in the core; these calls only hand it over.

use std::ffi::c_char;

use super::boundary::{json, out, string};
use super::error::{call, qm_error, qm_status};

/// The default bound, in milliseconds, of the calls that have one (30000): what
/// `QM_WAIT_DEFAULT` means for `qm_shutdown`, `qm_wait` and the `qm_agent_*` calls, and the QMP
/// timer's initial value (`qm_set_qmp_timer`). Pure function, thread-safe.
#[no_mangle]
pub extern "C" fn qm_default_timeout_ms() -> i64 {
    crate::DEFAULT_TIMEOUT.as_millis() as i64
}

/// Converts a timeout in seconds (a binding's float) to the `timeout_ms` of the C API, by the
/// one rule every binding uses: rounded *up* to a whole millisecond, so a positive timeout
/// never becomes 0 ("do not block": 0.0004 s is 1 ms, 0 stays 0); `+inf` is
/// `QM_WAIT_FOREVER`; at most 2^62. Stores the result in `*ms_out`. `QM_ERR_INVALID` for NaN
/// and negative values (the message names the value). Pure function, thread-safe.
#[no_mangle]
pub unsafe extern "C" fn qm_timeout_ms_from_seconds(
    seconds: f64,
    ms_out: *mut i64,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_timeout_ms_from_seconds", err_out, || {
        let out = out(ms_out, "ms_out")?;
        let ms = crate::millis_from_secs(seconds)?;
        out.write(ms.map_or(super::QM_WAIT_FOREVER, |ms| ms as i64));
        Ok(())
    })
}

/// The keyword convention of QEMU's Python harness: `_` in the top-level keys of `args_json`
/// (borrowed, any JSON text) becomes `-` (`{"node_name": ...}` → `{"node-name": ...}`); nested
/// keys and values that are not objects are left as they are. Stores the result as JSON in
/// `*json_out` (owned: free with `qm_string_free`). `QM_ERR_INVALID` for text that is not
/// UTF-8 JSON. Pure function, thread-safe.
#[no_mangle]
pub unsafe extern "C" fn qm_conv_keys(
    args_json: *const c_char,
    json_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_conv_keys", err_out, || {
        let out = out(json_out, "json_out")?;
        // SAFETY: a NUL-terminated string (the caller's contract).
        let args = json(unsafe { string(args_json, "args_json") }?, "args_json")?;
        out.write_json(Some(&crate::conv_keys(&args)));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timeout_is_the_cores() {
        assert_eq!(qm_default_timeout_ms(), 30_000);
        assert_eq!(
            qm_default_timeout_ms() as u128,
            crate::DEFAULT_SHUTDOWN_TIMEOUT.as_millis()
        );
        assert_eq!(
            qm_default_timeout_ms() as u128,
            crate::qga::DEFAULT_AGENT_TIMEOUT.as_millis()
        );
    }

    #[test]
    fn seconds_convert_by_the_cores_rule() {
        let mut ms = 0i64;
        // SAFETY: ms is writable; err_out may be NULL.
        let st = unsafe { qm_timeout_ms_from_seconds(0.0004, &mut ms, std::ptr::null_mut()) };
        assert_eq!((st, ms), (qm_status::QM_OK, 1));
        // SAFETY: as above.
        let st =
            unsafe { qm_timeout_ms_from_seconds(f64::INFINITY, &mut ms, std::ptr::null_mut()) };
        assert_eq!((st, ms), (qm_status::QM_OK, super::super::QM_WAIT_FOREVER));
        // SAFETY: as above.
        let st = unsafe { qm_timeout_ms_from_seconds(-1.0, &mut ms, std::ptr::null_mut()) };
        assert_eq!(st, qm_status::QM_ERR_INVALID);
    }
}
