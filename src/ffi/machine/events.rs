//! QMP events of a `qm_machine`: reading, capping, clearing and waiting for them.

use std::ffi::c_char;

use super::{machine, qm_machine};
use crate::ffi::boundary::{self, guard, opt_json_object, out, string, Result};
use crate::ffi::cancel::{self, qm_cancel};
use crate::ffi::error::{call, qm_error, qm_status};
use crate::Error;

/// Takes the oldest queued QMP event and stores it as a JSON object (`{"event": "STOP",
/// "data": ..., "timestamp": ...}`) in `*event_out` (owned: free with `qm_string_free`).
///
/// `timeout_ms` 0 only looks: when no event is queued, `*event_out` is set to NULL and the call
/// succeeds (also after the connection closed). Otherwise it blocks until an event arrives, at
/// most `timeout_ms` (or `QM_WAIT_FOREVER`), failing with `QM_ERR_TIMEOUT`, or until `cancel`
/// (may be NULL) fires. Events received before a shutdown stay readable after it; before the
/// first launch this is `QM_ERR_STATE`.
#[no_mangle]
pub unsafe extern "C" fn qm_event_get(
    m: *mut qm_machine,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    event_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_event_get", err_out, || {
        let out = out(event_out, "event_out")?;
        // SAFETY: the handle and token contracts.
        let (m, wait) = unsafe { (machine(m)?, cancel::wait(timeout_ms, cancel)?) };
        let event = m.vm.get_qmp_event(wait)?;
        out.write_json(event.as_ref());
        Ok(())
    })
}

/// Takes every queued event and stores them, oldest first, as a JSON array in
/// `*events_json_array_out` (owned: free with `qm_string_free`). With `timeout_ms` 0 the array
/// may be empty (`[]`); otherwise it waits for at least one event as `qm_event_get` does.
#[no_mangle]
pub unsafe extern "C" fn qm_events_get(
    m: *mut qm_machine,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    events_json_array_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_events_get", err_out, || {
        let out = out(events_json_array_out, "events_json_array_out")?;
        // SAFETY: the handle and token contracts.
        let (m, wait) = unsafe { (machine(m)?, cancel::wait(timeout_ms, cancel)?) };
        // Built from the queued texts, never a parsed tree per event (issue #19).
        out.write_string(m.vm.get_qmp_events_json(wait)?);
        Ok(())
    })
}

/// `qm_set_max_queued_events` value: no cap (the default); events are never dropped.
pub const QM_EVENTS_UNLIMITED: i64 = -1;

/// Caps the number of queued, unread QMP events at `max_events` (>= 0), or
/// `QM_EVENTS_UNLIMITED` (the default: events are never dropped, as in QEMU's Python
/// `QEMUMachine`). Applies at once and to later launches; other negative values are
/// `QM_ERR_INVALID`.
///
/// When an event arrives and `max_events` are queued, the oldest is dropped to make room (a
/// caller waiting for an event waits for one yet to come). The next call that reads events
/// (`qm_event_get`, `qm_events_get`, `qm_event_wait`, `qm_events_wait`), or one already
/// waiting, fails once with `QM_ERR_EVENTS_DROPPED`; the calls after it read the events that
/// were kept. `qm_dropped_events` counts the drops.
#[no_mangle]
pub unsafe extern "C" fn qm_set_max_queued_events(
    m: *mut qm_machine,
    max_events: i64,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_max_queued_events", err_out, || {
        // SAFETY: the handle contract.
        let m = unsafe { machine(m) }?;
        let max = match max_events {
            QM_EVENTS_UNLIMITED => None,
            n if n >= 0 => Some(usize::try_from(n).unwrap_or(usize::MAX - 1)),
            n => {
                return Err(Error::Invalid(format!(
                    "max_events is {n}: use a count >= 0 or QM_EVENTS_UNLIMITED (-1)"
                )))
            }
        };
        m.vm.set_max_queued_events(max);
        Ok(())
    })
}

/// How many QMP events the cap of `qm_set_max_queued_events` dropped since the last launch;
/// 0 for a NULL `m`. Never blocks.
#[no_mangle]
pub unsafe extern "C" fn qm_dropped_events(m: *const qm_machine) -> u64 {
    guard(0, || {
        // SAFETY: NULL, a live handle, or one refused before any read.
        unsafe { super::machine_or_none(m, "qm_dropped_events") }
            .map_or(0, |m| m.vm.dropped_events())
    })
}

/// Drops every queued event. Never blocks; does nothing before the first launch.
#[no_mangle]
pub unsafe extern "C" fn qm_events_clear(
    m: *mut qm_machine,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_events_clear", err_out, || {
        // SAFETY: the handle contract.
        unsafe { machine(m) }?.vm.clear_events();
        Ok(())
    })
}

/// Waits for the first event called `name` (borrowed) that matches `match_json` (borrowed: a
/// JSON object, or NULL / `"null"` for any; see `qm_event_match`), takes it out of the queue and
/// stores it as a JSON object in `*event_out` (owned: free with `qm_string_free`). Queued
/// events are searched first; events that do not match stay queued, in order.
///
/// Blocking as for `qm_event_get`: with `timeout_ms` 0, `*event_out` is set to NULL when no
/// queued event matches; a longer wait fails with `QM_ERR_TIMEOUT`. `cancel` (may be NULL)
/// interrupts it from another thread with `QM_ERR_INTERRUPTED`.
#[no_mangle]
pub unsafe extern "C" fn qm_event_wait(
    m: *mut qm_machine,
    name: *const c_char,
    match_json: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    event_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_event_wait", err_out, || {
        let out = out(event_out, "event_out")?;
        // SAFETY: the handle, string and token contracts.
        let (m, name, filter, wait) = unsafe {
            (
                machine(m)?,
                string(name, "name")?,
                opt_json_object(match_json, "match_json")?,
                cancel::wait(timeout_ms, cancel)?,
            )
        };
        let event = m.vm.event_wait(name, filter.as_ref(), wait)?;
        out.write_json(event.as_ref());
        Ok(())
    })
}

/// Like `qm_event_wait`, for the first event that matches any of several filters:
/// `filters_json` (borrowed) is a non-empty JSON array of objects
/// `{"name": "EVENT", "match": {...}}` (`"match"` optional, as `match_json`).
#[no_mangle]
pub unsafe extern "C" fn qm_events_wait(
    m: *mut qm_machine,
    filters_json: *const c_char,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    event_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_events_wait", err_out, || {
        let out = out(event_out, "event_out")?;
        // SAFETY: the handle, string and token contracts.
        let (m, filters, wait) = unsafe {
            (
                machine(m)?,
                filters(string(filters_json, "filters_json")?)?,
                cancel::wait(timeout_ms, cancel)?,
            )
        };
        let event = m.vm.events_wait_for(&filters, wait)?;
        out.write_json(event.as_ref());
        Ok(())
    })
}

/// The filters of `filters_json`, parsed by the core (the one parser of their JSON form); its
/// message is prefixed with the parameter's name.
fn filters(text: &str) -> Result<Vec<crate::EventFilter>> {
    crate::EventFilter::list_from_json(boundary::json(text, "filters_json")?).map_err(|e| match e {
        Error::Invalid(why) => Error::Invalid(format!("filters_json: {why}")),
        other => other,
    })
}
