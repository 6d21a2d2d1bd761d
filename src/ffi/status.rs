//! `qm_status_str`: a status's name, for messages and logs.

use std::ffi::{c_char, c_int, CStr};

use super::boundary::guard;
use super::error::qm_status;

/// Every status, in value order (the index is the value).
const NAMES: [(qm_status, &CStr); 16] = [
    (qm_status::QM_OK, c"QM_OK"),
    (qm_status::QM_ERR_LAUNCH, c"QM_ERR_LAUNCH"),
    (qm_status::QM_ERR_QMP, c"QM_ERR_QMP"),
    (qm_status::QM_ERR_TIMEOUT, c"QM_ERR_TIMEOUT"),
    (qm_status::QM_ERR_DISCONNECTED, c"QM_ERR_DISCONNECTED"),
    (qm_status::QM_ERR_INTERRUPTED, c"QM_ERR_INTERRUPTED"),
    (
        qm_status::QM_ERR_ABNORMAL_SHUTDOWN,
        c"QM_ERR_ABNORMAL_SHUTDOWN",
    ),
    (qm_status::QM_ERR_STATE, c"QM_ERR_STATE"),
    (qm_status::QM_ERR_INVALID, c"QM_ERR_INVALID"),
    (qm_status::QM_ERR_PROTOCOL, c"QM_ERR_PROTOCOL"),
    (qm_status::QM_ERR_IO, c"QM_ERR_IO"),
    (qm_status::QM_ERR_PANIC, c"QM_ERR_PANIC"),
    (qm_status::QM_ERR_EVENTS_DROPPED, c"QM_ERR_EVENTS_DROPPED"),
    (qm_status::QM_ERR_CONSOLE_CLOSED, c"QM_ERR_CONSOLE_CLOSED"),
    (qm_status::QM_ERR_CONSOLE_FAILURE, c"QM_ERR_CONSOLE_FAILURE"),
    (qm_status::QM_ERR_REFUSED, c"QM_ERR_REFUSED"),
];

/// The name of a `qm_status` value, e.g. `"QM_ERR_TIMEOUT"` for `QM_ERR_TIMEOUT`, and
/// `"QM_ERR_UNKNOWN"` for a value that is not a `qm_status` (`status` is an `int` so that any
/// value is safe to pass). A static string: never freed, never NULL. Pure function,
/// thread-safe. The error's own message is `qm_error_message`.
#[no_mangle]
pub extern "C" fn qm_status_str(status: c_int) -> *const c_char {
    guard(c"QM_ERR_UNKNOWN".as_ptr(), || {
        usize::try_from(status)
            .ok()
            .and_then(|i| NAMES.get(i))
            .map_or(c"QM_ERR_UNKNOWN", |(_, name)| name)
            .as_ptr()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(status: c_int) -> &'static str {
        // SAFETY: qm_status_str returns a static NUL-terminated string.
        unsafe { CStr::from_ptr(qm_status_str(status)) }
            .to_str()
            .unwrap()
    }

    #[test]
    fn every_status_has_its_own_name_at_its_value() {
        for (i, (status, text)) in NAMES.iter().enumerate() {
            assert_eq!(*status as usize, i, "{text:?} is out of order");
            assert_eq!(name(*status as c_int), text.to_str().unwrap());
            // The name is the variant's own (Debug prints it).
            assert_eq!(format!("{status:?}"), text.to_str().unwrap());
        }
        // A new status must be added to NAMES.
        assert_eq!(
            NAMES.len(),
            qm_status::QM_ERR_REFUSED as usize + 1,
            "a qm_status is missing from NAMES"
        );
    }

    #[test]
    fn values_that_are_not_statuses() {
        for v in [-1, 16, 1000, c_int::MIN, c_int::MAX] {
            assert_eq!(name(v), "QM_ERR_UNKNOWN");
        }
    }
}
