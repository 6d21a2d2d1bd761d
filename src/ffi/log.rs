//! `qm_set_log_callback`: qm's log records to a C function instead of stderr.

use std::ffi::{c_char, c_void};
use std::time::SystemTime;

use super::boundary::{guard, owned_c_string};
use super::qm_log_level;
use crate::log::{LogCallback, LogRecord};

/// A function that receives qm's log records (see `qm_set_log_callback`).
///
/// - `user`: the pointer given to `qm_set_log_callback`, unchanged.
/// - `level`: `QM_LOG_WARN` or `QM_LOG_DEBUG`.
/// - `target`: the part of qm that logged, e.g. `"qm::qmp"`, `"qm::machine::launch"` (Rust
///   module paths: a Python adapter may map `::` to `.` for logger names).
/// - `message`: one line of UTF-8 (a QMP message is included whole).
/// - `timestamp`: when the record was made, in seconds since the Unix epoch (like Python's
///   `time.time()`).
///
/// `target` and `message` are borrowed for the duration of the call only: copy them to keep
/// them.
pub type qm_log_fn = Option<
    unsafe extern "C" fn(
        user: *mut c_void,
        level: qm_log_level,
        target: *const c_char,
        message: *const c_char,
        timestamp: f64,
    ),
>;

/// The user's pointer, which the callback contract lets any thread use.
struct User(*mut c_void);

// SAFETY: qm_set_log_callback's contract: `user` may be used from any thread.
unsafe impl Send for User {}
// SAFETY: as above; qm only passes the pointer on, never dereferences it.
unsafe impl Sync for User {}

impl User {
    /// A method, so closures capture the whole `User` (Send + Sync), not its raw field.
    fn get(&self) -> *mut c_void {
        self.0
    }
}

/// Sends qm's log records to `callback` instead of stderr, for the whole process; NULL
/// restores stderr (the default). Only records that pass the level (`qm_set_log_level`,
/// `QM_LOG`) are sent: with the default level, warnings only. Thread-safe.
///
/// The callback runs on the thread that logs: any thread calling into qm, and qm's own
/// console-drain threads. It may run on several threads at once, so it and `user` must be
/// usable from any thread. It must return quickly and must not call back into the machine
/// that logged (qm may hold that machine's locks while logging; such a call can deadlock); a
/// record qm makes while the callback runs on the same thread goes to stderr instead.
///
/// Returns true. When it returns, no call to the previous callback is in progress or will
/// start: the previous `user` may then be freed (it waits for calls in progress to return).
/// Called from inside a callback, where that wait would never end, it changes nothing and
/// returns false.
#[no_mangle]
pub unsafe extern "C" fn qm_set_log_callback(callback: qm_log_fn, user: *mut c_void) -> bool {
    guard(false, || {
        let callback: Option<LogCallback> = callback.map(|f| {
            let user = User(user);
            Box::new(move |record: &LogRecord<'_>| {
                let target = owned_c_string(record.target);
                let message = owned_c_string(record.message);
                let timestamp = record
                    .time
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                // SAFETY: the caller's function with its own pointer; the strings live until
                // it returns.
                unsafe {
                    f(
                        user.get(),
                        record.level as qm_log_level,
                        target.as_ptr(),
                        message.as_ptr(),
                        timestamp,
                    )
                };
            }) as LogCallback
        });
        crate::set_log_callback(callback).is_ok()
    })
}
