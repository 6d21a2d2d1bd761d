//! `qm_status` and `qm_error`: what a failed call reports.

use std::any::Any;
use std::ffi::{c_char, c_int, CString};

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::boundary::{guard, owned_c_string};
use crate::Error;

/// Runs the body of a status-returning export: catches panics, turns an error into an owned
/// `qm_error` stored in `*err_out` (when `err_out` is not NULL) and returns its status.
/// On success `*err_out` is left untouched.
pub(crate) fn call(
    function: &'static str,
    err_out: *mut *mut qm_error,
    body: impl FnOnce() -> super::boundary::Result,
) -> qm_status {
    let error = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return qm_status::QM_OK,
        Ok(Err(err)) => catch_unwind(AssertUnwindSafe(|| qm_error::from_core(function, &err))),
        Err(payload) => catch_unwind(AssertUnwindSafe(|| qm_error::from_panic(function, payload))),
    };
    // Building the error object itself panicked (it allocates): report the bare status.
    let Ok(error) = error else {
        return qm_status::QM_ERR_PANIC;
    };
    let status = error.status();
    if !err_out.is_null() {
        // SAFETY: err_out is not NULL and the caller promises it points to a writable
        // `qm_error *`. Ownership of the box goes to the caller (`qm_error_free`).
        unsafe { *err_out = super::handle::new(error, &super::handle::ERROR) };
    }
    status
}

/// The result of every fallible call. The values are stable: they never change, and new ones
/// are only ever added at the end.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum qm_status {
    /// Success.
    QM_OK = 0,
    /// The machine could not be launched. The error object has QEMU's exit code (if it exited),
    /// the command line, QEMU's output and the cause (`qm_error_cause`); everything the launch
    /// created is cleaned up.
    QM_ERR_LAUNCH = 1,
    /// QEMU answered a command with an error: see `qm_error_qmp_class` / `qm_error_qmp_desc`.
    QM_ERR_QMP = 2,
    /// A wait ran out of time.
    QM_ERR_TIMEOUT = 3,
    /// The QMP connection, or for a `qm_agent_*` call the guest agent's channel, is gone
    /// (QEMU exited or closed it, or the machine shut down); the message names which.
    QM_ERR_DISCONNECTED = 4,
    /// The call was interrupted through its `qm_cancel` token.
    QM_ERR_INTERRUPTED = 5,
    /// A graceful shutdown (or wait) did not end in time, or was interrupted: QEMU was killed.
    /// Cleanup has run. `qm_error_cause` says why.
    QM_ERR_ABNORMAL_SHUTDOWN = 6,
    /// The call does not fit the machine's state (a command before launch, launch twice ...).
    QM_ERR_STATE = 7,
    /// An invalid argument: a NULL pointer, a string that is not UTF-8, text that is not JSON
    /// (or JSON of the wrong shape), an out-of-range number, an invalid setting.
    QM_ERR_INVALID = 8,
    /// QEMU broke the QMP protocol (bad JSON, a message over the size cap, a bad greeting).
    QM_ERR_PROTOCOL = 9,
    /// An operating-system call failed: see `qm_error_os_code`.
    QM_ERR_IO = 10,
    /// A bug in qm: a Rust panic was caught at the C boundary. The handle stays usable but its
    /// state may be inconsistent; please report the message.
    QM_ERR_PANIC = 11,
    /// QMP events were dropped because more than the cap set with `qm_set_max_queued_events`
    /// were queued (the oldest go first). Reported once, to the next call that reads events;
    /// `qm_dropped_events` counts them all.
    QM_ERR_EVENTS_DROPPED = 12,
    /// The console reached end of file (QEMU exited or closed it) before a console wait found
    /// its pattern, or a send could not be delivered: see `qm_error_console_text`.
    QM_ERR_CONSOLE_CLOSED = 13,
    /// A console wait found one of its failure patterns: see `qm_error_console_text` and
    /// `qm_error_console_pattern`.
    QM_ERR_CONSOLE_FAILURE = 14,
    /// A check before send refused a command (or an event wait) under a strict schema policy
    /// (`qm_set_schema_policy`); nothing was sent. `qm_error_schema_path` says where
    /// (`arguments.file.filename`), `qm_error_schema_rule` which rule.
    QM_ERR_REFUSED = 15,
}

impl qm_status {
    fn of(err: &Error) -> qm_status {
        match err {
            Error::Launch { .. } => qm_status::QM_ERR_LAUNCH,
            Error::Qmp { .. } => qm_status::QM_ERR_QMP,
            Error::Timeout(_) | Error::ConsoleTimeout { .. } => qm_status::QM_ERR_TIMEOUT,
            Error::ConsoleClosed { .. } => qm_status::QM_ERR_CONSOLE_CLOSED,
            Error::ConsoleFailure { .. } => qm_status::QM_ERR_CONSOLE_FAILURE,
            Error::Disconnected(_) | Error::AgentDisconnected(_) => qm_status::QM_ERR_DISCONNECTED,
            Error::Interrupted => qm_status::QM_ERR_INTERRUPTED,
            Error::AbnormalShutdown(_) | Error::GuestPanicked(_) => {
                qm_status::QM_ERR_ABNORMAL_SHUTDOWN
            }
            Error::State(_) => qm_status::QM_ERR_STATE,
            Error::Invalid(_) => qm_status::QM_ERR_INVALID,
            Error::Protocol(_) => qm_status::QM_ERR_PROTOCOL,
            Error::EventsDropped { .. } => qm_status::QM_ERR_EVENTS_DROPPED,
            Error::Io { .. } => qm_status::QM_ERR_IO,
            Error::Refused { .. } => qm_status::QM_ERR_REFUSED,
        }
    }
}

/// An error: status, message and structured details. Created by a failed call and owned by the
/// caller, who frees it with `qm_error_free`. Immutable: any number of threads may read it at
/// once; it is tied to no thread and no handle (it outlives the machine that produced it).
pub struct qm_error {
    status: qm_status,
    message: CString,
    qmp: Option<(CString, CString)>,
    exit_code: Option<i32>,
    command: Option<CString>,
    output: Option<CString>,
    cause: Option<(qm_status, CString)>,
    os_code: Option<i32>,
    /// The text of a console error, with its length (it may hold NUL bytes as U+FFFD).
    console_text: Option<CString>,
    console_pattern: Option<usize>,
    /// The JSON path and rule of a refusal.
    schema: Option<(CString, CString)>,
}

impl qm_error {
    /// The error object for a core error raised in `function`.
    pub(crate) fn from_core(function: &str, err: &Error) -> qm_error {
        let status = qm_status::of(err);
        // Arguments rejected at the boundary say which function they were rejected by.
        let message = match err {
            Error::Invalid(_) => format!("{function}: {err}"),
            _ => err.to_string(),
        };
        let mut e = qm_error::bare(status, message);
        match err {
            Error::Qmp { class, desc } => {
                e.qmp = Some((owned_c_string(class.clone()), owned_c_string(desc.clone())));
            }
            Error::Launch {
                exitcode,
                command,
                output,
                cause,
            } => {
                e.exit_code = *exitcode;
                e.command = Some(owned_c_string(command.clone()));
                e.output = Some(owned_c_string(output.clone()));
                e.set_cause(cause);
            }
            Error::ConsoleFailure { index, .. } => {
                e.console_pattern = Some(*index);
                e.console_text = err.console_text().map(|t| owned_c_string(t.to_owned()));
            }
            Error::ConsoleClosed { .. } | Error::ConsoleTimeout { .. } => {
                e.console_text = err.console_text().map(|t| owned_c_string(t.to_owned()));
            }
            Error::AbnormalShutdown(cause) => e.set_cause(cause),
            Error::Refused { path, rule, .. } => {
                e.schema = Some((
                    owned_c_string(path.clone()),
                    owned_c_string(rule.as_str().to_owned()),
                ));
            }
            other => e.os_code = os_code(other),
        }
        e
    }

    /// The error object for a panic caught in `function`.
    pub(crate) fn from_panic(function: &str, payload: Box<dyn Any + Send>) -> qm_error {
        let what = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "a panic with a non-string payload".to_owned()
        };
        qm_error::bare(
            qm_status::QM_ERR_PANIC,
            format!("{function}: internal error (Rust panic): {what}"),
        )
    }

    fn bare(status: qm_status, message: String) -> qm_error {
        qm_error {
            status,
            message: owned_c_string(message),
            qmp: None,
            exit_code: None,
            command: None,
            output: None,
            cause: None,
            os_code: None,
            console_text: None,
            console_pattern: None,
            schema: None,
        }
    }

    /// Records what caused a `QM_ERR_LAUNCH` or `QM_ERR_ABNORMAL_SHUTDOWN` (and its errno).
    fn set_cause(&mut self, cause: &Error) {
        self.cause = Some((qm_status::of(cause), owned_c_string(cause.to_string())));
        self.os_code = os_code(cause);
    }

    pub(crate) fn status(&self) -> qm_status {
        self.status
    }

    #[cfg(test)]
    pub(crate) fn message(&self) -> &str {
        self.message.to_str().unwrap_or_default()
    }
}

fn os_code(err: &Error) -> Option<i32> {
    match err {
        // Some errors wrap the OS error with context (e.g. tempfile's path errors): look inside.
        Error::Io { source, .. } => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
            while let Some(e) = cause {
                if let Some(code) = e
                    .downcast_ref::<std::io::Error>()
                    .and_then(|e| e.raw_os_error())
                {
                    return Some(code);
                }
                cause = e.source();
            }
            None
        }
        _ => None,
    }
}

/// Borrows an error for an accessor: None for NULL and (with a warning) for a pointer that is
/// not a live error.
///
/// # Safety
/// A live `err` stays live for `'a` (until `qm_error_free`).
unsafe fn error<'a>(err: *const qm_error, function: &str) -> Option<&'a qm_error> {
    // SAFETY: the caller's contract; a pointer that is not live is refused before any read.
    unsafe { super::handle::get(err, &super::handle::ERROR, function) }
}

fn borrowed(s: Option<&CString>) -> *const c_char {
    s.map_or(std::ptr::null(), |s| s.as_ptr())
}

/// The error's status (never `QM_OK` for an error a call returned). `QM_OK` for NULL.
///
/// `err` is borrowed.
#[no_mangle]
pub unsafe extern "C" fn qm_error_status(err: *const qm_error) -> qm_status {
    guard(qm_status::QM_ERR_PANIC, || {
        // SAFETY: NULL, a live error, or one refused (with a warning) before any read.
        match unsafe { error(err, "qm_error_status") } {
            Some(e) => e.status,
            None => qm_status::QM_OK,
        }
    })
}

/// The error's message: one line or more of UTF-8 for humans (for a launch failure it includes
/// the exit code, the command line and QEMU's output). NULL for NULL.
///
/// The string belongs to `err` and stays valid until `qm_error_free(err)`; do not free it.
#[no_mangle]
pub unsafe extern "C" fn qm_error_message(err: *const qm_error) -> *const c_char {
    guard(std::ptr::null(), || {
        // SAFETY: NULL or a live error.
        borrowed(unsafe { error(err, "qm_error_message") }.map(|e| &e.message))
    })
}

/// The QMP error class (e.g. `"GenericError"`, `"CommandNotFound"`) of a `QM_ERR_QMP` error;
/// NULL for any other error and for NULL.
///
/// The string belongs to `err` and stays valid until `qm_error_free(err)`.
#[no_mangle]
pub unsafe extern "C" fn qm_error_qmp_class(err: *const qm_error) -> *const c_char {
    guard(std::ptr::null(), || {
        // SAFETY: NULL or a live error.
        borrowed(
            unsafe { error(err, "qm_error_qmp_class") }.and_then(|e| e.qmp.as_ref().map(|q| &q.0)),
        )
    })
}

/// QEMU's description of a `QM_ERR_QMP` error; NULL for any other error and for NULL.
///
/// The string belongs to `err` and stays valid until `qm_error_free(err)`.
#[no_mangle]
pub unsafe extern "C" fn qm_error_qmp_desc(err: *const qm_error) -> *const c_char {
    guard(std::ptr::null(), || {
        // SAFETY: NULL or a live error.
        borrowed(
            unsafe { error(err, "qm_error_qmp_desc") }.and_then(|e| e.qmp.as_ref().map(|q| &q.1)),
        )
    })
}

/// For a `QM_ERR_LAUNCH` error where QEMU exited by itself: stores QEMU's exit status in
/// `*code_out` (negative: killed by that signal) and returns true. Returns false, and leaves
/// `*code_out` untouched, for other errors, for a launch where QEMU never ran or was still
/// running (and was killed), and when `err` or `code_out` is NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_error_exit_code(err: *const qm_error, code_out: *mut c_int) -> bool {
    // SAFETY: NULL or a live error; NULL or a writable int.
    guard(false, || unsafe {
        write_code(
            error(err, "qm_error_exit_code").and_then(|e| e.exit_code),
            code_out,
        )
    })
}

/// Stores `code` in `*out` when there is one and `out` is not NULL; says whether it did.
///
/// # Safety
/// A non-NULL `out` must point to a writable int.
unsafe fn write_code(code: Option<c_int>, out: *mut c_int) -> bool {
    match code {
        Some(code) if !out.is_null() => {
            // SAFETY: not NULL; the caller's contract.
            unsafe { out.write(code) };
            true
        }
        _ => false,
    }
}

/// The command line of a `QM_ERR_LAUNCH` error (the arguments joined by spaces, for humans;
/// never run by a shell); NULL for other errors and for NULL.
///
/// The string belongs to `err` and stays valid until `qm_error_free(err)`.
#[no_mangle]
pub unsafe extern "C" fn qm_error_command(err: *const qm_error) -> *const c_char {
    guard(std::ptr::null(), || {
        // SAFETY: NULL or a live error.
        borrowed(unsafe { error(err, "qm_error_command") }.and_then(|e| e.command.as_ref()))
    })
}

/// What QEMU wrote to stdout and stderr before a `QM_ERR_LAUNCH` error (possibly empty); NULL
/// for other errors and for NULL.
///
/// The string belongs to `err` and stays valid until `qm_error_free(err)`.
#[no_mangle]
pub unsafe extern "C" fn qm_error_output(err: *const qm_error) -> *const c_char {
    guard(std::ptr::null(), || {
        // SAFETY: NULL or a live error.
        borrowed(unsafe { error(err, "qm_error_output") }.and_then(|e| e.output.as_ref()))
    })
}

/// The status of what caused an error that has a cause: for `QM_ERR_LAUNCH` what made the
/// launch fail (e.g. `QM_ERR_IO` when the binary could not be started, `QM_ERR_DISCONNECTED`
/// when QEMU exited before QMP was up, `QM_ERR_TIMEOUT` when the time ran out), for
/// `QM_ERR_ABNORMAL_SHUTDOWN` why QEMU had to be killed (`QM_ERR_TIMEOUT`,
/// `QM_ERR_INTERRUPTED`, ...). `QM_OK` for other errors and for NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_error_cause(err: *const qm_error) -> qm_status {
    guard(qm_status::QM_ERR_PANIC, || {
        // SAFETY: NULL or a live error.
        let cause = unsafe { error(err, "qm_error_cause") }.and_then(|e| e.cause.as_ref());
        cause.map_or(qm_status::QM_OK, |c| c.0)
    })
}

/// The message of the cause (see `qm_error_cause`), e.g. `"timed out: QEMU (pid 42) did not
/// exit within 3000 ms"`; NULL when the error has no cause and for NULL.
///
/// The string belongs to `err` and stays valid until `qm_error_free(err)`.
#[no_mangle]
pub unsafe extern "C" fn qm_error_cause_message(err: *const qm_error) -> *const c_char {
    guard(std::ptr::null(), || {
        // SAFETY: NULL or a live error.
        borrowed(
            unsafe { error(err, "qm_error_cause_message") }
                .and_then(|e| e.cause.as_ref().map(|c| &c.1)),
        )
    })
}

/// For an error caused by a failed operating-system call (`QM_ERR_IO`, or an error whose
/// cause is one, see `qm_error_cause`), stores the `errno` value in `*code_out` and returns true (e.g. `ENOENT`
/// for a QEMU binary that does not exist). Returns false, leaving `*code_out` untouched,
/// otherwise and when `err` or `code_out` is NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_error_os_code(err: *const qm_error, code_out: *mut c_int) -> bool {
    // SAFETY: NULL or a live error; NULL or a writable int.
    guard(false, || unsafe {
        write_code(
            error(err, "qm_error_os_code").and_then(|e| e.os_code),
            code_out,
        )
    })
}

/// The console output a console error carries: for `QM_ERR_CONSOLE_FAILURE` the text consumed
/// up to and including the failure pattern's match, for `QM_ERR_CONSOLE_CLOSED` the output nobody
/// consumed, for a console wait's `QM_ERR_TIMEOUT` the last (up to 2 KiB) unread output. NULL for
/// other errors and for NULL. Invalid UTF-8 and NUL bytes are replaced by U+FFFD.
///
/// The string belongs to `err` and stays valid until `qm_error_free(err)`.
#[no_mangle]
pub unsafe extern "C" fn qm_error_console_text(err: *const qm_error) -> *const c_char {
    guard(std::ptr::null(), || {
        // SAFETY: NULL or a live error.
        borrowed(
            unsafe { error(err, "qm_error_console_text") }.and_then(|e| e.console_text.as_ref()),
        )
    })
}

/// For a `QM_ERR_CONSOLE_FAILURE` error: stores the index of the failure pattern that matched
/// (in the order they were added to the `qm_patterns`) in `*index_out` and returns true. Returns
/// false, leaving `*index_out` untouched, for other errors and when `err` or `index_out` is NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_error_console_pattern(
    err: *const qm_error,
    index_out: *mut usize,
) -> bool {
    guard(false, || {
        // SAFETY: NULL or a live error.
        let index =
            unsafe { error(err, "qm_error_console_pattern") }.and_then(|e| e.console_pattern);
        match (index, index_out.is_null()) {
            (Some(i), false) => {
                // SAFETY: not NULL; the caller's contract.
                unsafe { index_out.write(i) };
                true
            }
            _ => false,
        }
    })
}

/// Where a `QM_ERR_REFUSED` error's first problem is, as a JSON path: `"execute"` (the
/// command's name), `"arguments.file.filename"`, `"arguments.children[1]"`, `"event"` (an
/// event wait). NULL for other errors and for NULL.
///
/// The string belongs to `err` and stays valid until `qm_error_free(err)`.
#[no_mangle]
pub unsafe extern "C" fn qm_error_schema_path(err: *const qm_error) -> *const c_char {
    guard(std::ptr::null(), || {
        // SAFETY: NULL or a live error.
        borrowed(unsafe { err.as_ref() }.and_then(|e| e.schema.as_ref().map(|s| &s.0)))
    })
}

/// The rule a `QM_ERR_REFUSED` error's first problem breaks: `"unknown-command"`,
/// `"unknown-event"`, `"unknown-member"`, `"missing-member"`, `"wrong-type"`, `"enum-value"`,
/// `"deprecated"` or `"unstable"`. NULL for other errors and for NULL.
///
/// The string belongs to `err` and stays valid until `qm_error_free(err)`.
#[no_mangle]
pub unsafe extern "C" fn qm_error_schema_rule(err: *const qm_error) -> *const c_char {
    guard(std::ptr::null(), || {
        // SAFETY: NULL or a live error.
        borrowed(unsafe { err.as_ref() }.and_then(|e| e.schema.as_ref().map(|s| &s.1)))
    })
}

/// Frees an error and the strings it lent out. NULL is a no-op. Call it once per error.
#[no_mangle]
pub unsafe extern "C" fn qm_error_free(err: *mut qm_error) {
    guard((), || {
        // SAFETY: NULL, not live (left alone, with a warning), or live and unused elsewhere.
        unsafe { super::handle::free(err, &super::handle::ERROR, "qm_error_free") }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_core_error_has_its_status() {
        let io = || std::io::Error::from_raw_os_error(libc::ENOENT);
        let cases = [
            (
                Error::Qmp {
                    class: "C".into(),
                    desc: "D".into(),
                },
                qm_status::QM_ERR_QMP,
            ),
            (Error::Timeout("t".into()), qm_status::QM_ERR_TIMEOUT),
            (
                Error::Disconnected("d".into()),
                qm_status::QM_ERR_DISCONNECTED,
            ),
            (Error::Interrupted, qm_status::QM_ERR_INTERRUPTED),
            (
                Error::AbnormalShutdown(Box::new(Error::Timeout("t".into()))),
                qm_status::QM_ERR_ABNORMAL_SHUTDOWN,
            ),
            (Error::State("s".into()), qm_status::QM_ERR_STATE),
            (Error::Invalid("i".into()), qm_status::QM_ERR_INVALID),
            (Error::Protocol("p".into()), qm_status::QM_ERR_PROTOCOL),
            (
                Error::Io {
                    context: "c".into(),
                    source: io(),
                },
                qm_status::QM_ERR_IO,
            ),
            (
                Error::Launch {
                    exitcode: Some(1),
                    command: "qemu -x".into(),
                    output: "bad\0arg".into(),
                    cause: Box::new(Error::Io {
                        context: "c".into(),
                        source: io(),
                    }),
                },
                qm_status::QM_ERR_LAUNCH,
            ),
        ];
        for (err, status) in cases {
            let e = qm_error::from_core("qm_test", &err);
            assert_eq!(e.status, status, "{err}");
        }
    }

    #[test]
    fn launch_details() {
        let err = Error::Launch {
            exitcode: Some(1),
            command: "qemu -x".into(),
            output: "bad\0arg".into(),
            cause: Box::new(Error::io(
                "spawn",
                std::io::Error::from_raw_os_error(libc::ENOENT),
            )),
        };
        let e = qm_error::from_core("qm_launch", &err);
        assert_eq!(e.exit_code, Some(1));
        assert_eq!(
            e.output.as_ref().unwrap().to_str().unwrap(),
            "bad\u{fffd}arg"
        );
        assert_eq!(e.cause.as_ref().unwrap().0, qm_status::QM_ERR_IO);
        assert_eq!(e.os_code, Some(libc::ENOENT));
    }

    #[test]
    fn abnormal_shutdown_carries_its_cause() {
        let err = Error::AbnormalShutdown(Box::new(Error::Timeout(
            "QEMU (pid 42) did not exit within 3000 ms".into(),
        )));
        let e = qm_error::from_core("qm_shutdown", &err);
        assert_eq!(e.status, qm_status::QM_ERR_ABNORMAL_SHUTDOWN);
        let (status, message) = e.cause.as_ref().unwrap();
        assert_eq!(*status, qm_status::QM_ERR_TIMEOUT);
        let text = "timed out: QEMU (pid 42) did not exit within 3000 ms";
        assert_eq!(message.to_str().unwrap(), text);
        assert!(e.message().contains(text));
        assert!(qm_error::from_core("qm_x", &Error::Interrupted)
            .cause
            .is_none());
    }
}
